"""The simulated provider: instances that live only in memory, on a clock.

``nodeless up --provider simulated`` runs on it where there is no containerd,
and the 10,000-pod scale benchmark drives it, so it must be cheap per instance
and still behave like a kubelet where the layers above can tell: image pull
and start latency, init containers in order, readiness delays, exits read
from each container's command (see ``commands``), restart policies with
CrashLoopBackOff, SIGTERM/SIGKILL on delete, zone capacity, pod IPs, and spot
reclaim.

Cheap means one asyncio task for all instances: every future transition
(image pulled, container exits, back-off over, grace period over) is an entry
in one heap ordered by clock time, and a single scheduler loop sleeps on the
injected clock until the earliest entry is due. Entries are never removed;
each carries the *epoch* of the instance or container it was made for, and an
entry whose epoch has moved on (the container was restarted, the instance
deleted) is simply ignored when it comes due. With ``FakeClock``, tests move
time with ``await clock.advance(s)``.

Restart adoption: the provider keeps nothing on disk, so a fresh
``SimulatedProvider`` has no instances. A restarted instance manager calls
``adopt(request, last_status)`` for every instance its durable records say
exists; the instance continues from that status (same IP, same start times,
containers' remaining run time computed from their ``started_at``) instead of
being reported as vanished or created twice.

The pod IP and ``started_at`` come when the sandbox is up, before init
containers run (they share the pod's network, as on a kubelet); for a pod
without init containers that is the moment it turns Running. Deleting pushes
Terminating, then the final Succeeded/Failed status, then forgets the
instance; instances that finish on their own (or are reclaimed: Expired) stay
listed, holding no capacity, until deleted.

Kubelet deviations, on purpose: the first restart of a crashed container
also waits the initial 10 s back-off (the kubelet restarts the very first
time at once), so back-off is always 10 s, 20 s, 40 s ... 300 s; the back-off
resets when a container had run for 10 minutes before exiting. While init
containers run the state stays Pending even when one is backing off (the pod
is ``Init:CrashLoopBackOff``, phase Pending); ``initialized`` tells the two
apart. Native sidecars (init containers with ``restartPolicy: Always``) run
as ordinary init containers. Simulated containers print nothing: their logs
are empty, with the kubelet's errors for containers that have no log yet.

Usage (``stats``, what ``kubectl top`` and an HPA read) is synthetic but
shaped like a real pod's: every running container gets a CPU figure around
30% of its base (its CPU request, else its limit, else its share of the
instance spec's vCPUs) that follows a slow sine (10-minute period, a phase
of its own) plus noise that changes once per 10-second window, and a memory
working set that stays at 60-70% of its memory request (else limit, else
share of the spec's memory). All of it is computed from the provider's seed,
the instance ID, the container's name and the injected clock, so the same
seed and clock give the same numbers. A container says what it burns, for
tests of autoscaling: the env ``NODELESS_SIM_CPU`` / ``NODELESS_SIM_MEMORY``
("900m", "256Mi") on the container, else the pod annotations
``nodeless.dev/simulated-cpu`` / ``nodeless.dev/simulated-memory`` (every
container of the pod), else a shell busy loop (``while :; do :; done``)
burns one full core. A CPU limit (or the spec's vCPUs) caps the CPU as a
cgroup would, a memory limit caps the memory.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import dataclasses
import datetime
import enum
import functools
import hashlib
import heapq
import ipaddress
import itertools
import logging
import math
import random
import re
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from decimal import Decimal
from typing import Any, TypeVar

from nodeless import clocks
from nodeless.api import times
from nodeless.instances.providers import base, commands
from nodeless.serverless import annotations as pod_annotations
from nodeless.serverless import quantities

log = logging.getLogger(__name__)

INITIAL_BACKOFF = 10.0
MAX_BACKOFF = 300.0
BACKOFF_RESET_AFTER = 600.0  # seconds of running that forgive earlier crashes

EXIT_SIGTERM = 143
EXIT_SIGKILL = 137

_EPSILON = 1e-6  # clock arithmetic in floats; a due time this close is due

# Simulated usage (see the module docstring).
CPU_ANNOTATION = "nodeless.dev/simulated-cpu"
MEMORY_ANNOTATION = "nodeless.dev/simulated-memory"
CPU_ENV = "NODELESS_SIM_CPU"
MEMORY_ENV = "NODELESS_SIM_MEMORY"
USAGE_WINDOW = 10.0  # seconds: the sample window reported, and how long noise holds
CPU_MEAN = 0.3  # of the container's base CPU
CPU_SWING = 0.1  # the sine's amplitude, of the base
CPU_NOISE = 0.05  # the noise's amplitude, of the base
CPU_PERIOD = 600.0  # seconds
CPU_FLOOR = 0.02  # of the base: a running process never uses nothing at all
MEMORY_FRACTION = 0.6  # of the base memory, plus up to MEMORY_SPREAD
MEMORY_SPREAD = 0.1
_KEPT_METADATA = ("name", "namespace", "uid", "annotations")
DEFAULT_CPU = 0.1  # cores, for a container with no request, limit or spec
DEFAULT_MEMORY = 128 * 2**20  # bytes, likewise
# A shell loop that never sleeps: it keeps one core busy.
_BUSY_LOOP = re.compile(r"while\s+(?:true|:)\s*[;\n]\s*do\s+(?:(?:true|:)\s*[;\n]\s*)?done")


class _Stage(enum.Enum):
    PULLING = enum.auto()  # image pull and sandbox start
    INIT = enum.auto()  # init containers, one at a time
    RUNNING = enum.auto()  # app containers
    TERMINATING = enum.auto()
    DONE = enum.auto()  # terminal: Succeeded, Failed or Expired


@dataclasses.dataclass(frozen=True, slots=True)
class _UsageProfile:
    """What a simulated container's usage is made from (worked out once)."""

    cpu_base: float  # cores the synthetic figure is a fraction of
    cpu_burn: float | None  # cores it uses instead, when it says so
    cpu_cap: float | None  # cores: its limit, or the instance's vCPUs
    memory: int  # bytes of working set
    phase: float  # of the CPU sine, radians


@dataclasses.dataclass(slots=True, eq=False)
class _Container:
    status: base.ContainerStatus  # the live object, also in the instance's status lists
    behaviour: commands.ExitBehaviour
    init: bool
    readiness_delay: float | None  # None: no readinessProbe
    spec: Mapping[str, Any]
    epoch: int = 0
    backoff: float = 0.0
    ran_since: float = 0.0  # monotonic time of the latest start
    usage: _UsageProfile | None = None  # made on the first ``stats``

    @property
    def running(self) -> bool:
        return self.status.state == "running"


@dataclasses.dataclass(slots=True, eq=False)
class _Instance:
    request: base.InstanceRequest
    status: base.InstanceStatus
    init_containers: list[_Container]
    containers: list[_Container]
    restart_policy: str
    pull_seconds: float
    stage: _Stage = _Stage.PULLING
    epoch: int = 0
    ip_offset: int | None = None  # held in the provider's pool while not DONE
    next_init: int = 0

    def all_containers(self) -> list[_Container]:
        return self.init_containers + self.containers


# (due, tie-break, action, instance, container or None, epoch when scheduled)
_Entry = tuple[float, int, Callable[..., None], _Instance, _Container | None, int]
_COMPACT_MIN = 4096
_T = TypeVar("_T")


def _stale(entry: _Entry) -> bool:
    _, _, _, instance, container, epoch = entry
    if container is None:
        return instance.epoch != epoch
    return container.epoch != epoch or instance.stage is _Stage.DONE


class SimulatedProvider:
    """An in-memory ``Provider`` and ``Notifier`` on an injectable clock.

    Subscribers get a copy of every status change, synchronously and in
    order. ``get``/``list`` return copies. Instances that reach a terminal
    state (Succeeded, Failed, Expired) stay listed, holding no capacity,
    until ``delete`` removes them.
    """

    name = "simulated"

    def __init__(
        self,
        clock: clocks.Clock,
        *,
        start_latency: float = 0.0,
        pull_latency: float = 0.0,
        failure_rate: float = 0.0,
        seed: int = 0,
        zone_capacity: Mapping[str, int] | None = None,
        cached_images: Collection[str] = (),
        ip_base: str = "10.88.0.0/16",
    ) -> None:
        if not 0.0 <= failure_rate <= 1.0:
            raise ValueError(f"failure_rate must be within [0, 1], got {failure_rate}")
        self.clock = clock
        self.seed = seed
        self.start_latency = start_latency
        self.pull_latency = pull_latency
        self.failure_rate = failure_rate
        self.zone_capacity = dict(zone_capacity) if zone_capacity is not None else None
        self._random = random.Random(seed)
        self._cached = {_normalize_image(i) for i in cached_images}
        network = ipaddress.ip_network(ip_base)
        self._network = str(network)
        self._ip_first = int(network.network_address)
        # .0 is the network, .1 the gateway, the last address the broadcast
        self._ip_pool = range(2, max(2, network.num_addresses - 1))
        self._ip_next = 0
        self._ips_in_use: set[int] = set()
        self._instances: dict[str, _Instance] = {}
        self._zone_usage: dict[str, int] = {}
        self._callbacks: list[base.StatusCallback] = []
        self._container_ids = itertools.count(1)
        # the scheduler
        self._heap: list[_Entry] = []
        self._seq = itertools.count()
        self._task: asyncio.Task[None] | None = None
        self._timer: asyncio.Future[None] | None = None
        self._timer_due = math.inf
        self._compact_at = _COMPACT_MIN
        self._closed = False

    # --- lifecycle ---

    async def start(self) -> None:
        """Starts the scheduler loop (it also starts on first use)."""
        self._ensure_loop()

    async def close(self) -> None:
        """Stops the scheduler. Instances are not stopped: like real ones they
        outlive the process that manages them (see ``adopt``)."""
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def subscribe(self, callback: base.StatusCallback) -> None:
        self._callbacks.append(callback)

    def cache_image(self, image: str) -> None:
        """From now on ``image`` starts without pull latency (an image cache)."""
        self._cached.add(_normalize_image(image))

    # --- the Provider protocol ---

    async def create(self, request: base.InstanceRequest) -> base.InstanceStatus:
        """Starts an instance: Pending at once, Running after pull and start
        latency. Idempotent per instance_id (returns the current status)."""
        existing = self._instances.get(request.instance_id)
        if existing is not None:
            return _copy_status(existing.status)
        self._check_open()
        instance = self._build(request)
        limit = None if self.zone_capacity is None else self.zone_capacity.get(request.zone)
        in_zone = self._zone_usage.get(request.zone, 0)
        if limit is not None and in_zone >= limit:
            raise base.CapacityError(
                f"zone {request.zone} has no capacity left ({in_zone} of {limit} instances in use)"
            )
        if self._live_count() >= len(self._ip_pool):
            raise base.CapacityError(f"no pod IP left in {self._network}")
        if self.failure_rate and self._random.random() < self.failure_rate:
            raise base.ProviderError(
                f"simulated provider failure creating instance {request.instance_id} "
                f"(failure_rate={self.failure_rate})"
            )
        self._admit(instance)
        self._push(instance)
        self._after(instance.pull_seconds + self.start_latency, self._sandbox_ready, instance)
        return _copy_status(instance.status)

    async def delete(self, instance_id: str, grace_period_seconds: int) -> None:
        """Terminating at once; running containers get SIGTERM and exit 143,
        those ignoring it are killed (137) when the grace period ends; then a
        final Succeeded/Failed status is pushed and the instance is removed.
        An instance already terminal is just removed. Idempotent."""
        instance = self._instances.get(instance_id)
        if instance is None:
            return
        if instance.stage is _Stage.DONE:
            del self._instances[instance_id]
            return
        grace = max(0.0, float(grace_period_seconds))
        if instance.stage is _Stage.TERMINATING:
            # a shorter grace period wins, as with the kubelet; a longer one
            # leaves the earlier kill in place
            self._after(grace, self._sigkill, instance)
            return
        self._invalidate(instance)
        instance.stage = _Stage.TERMINATING
        self._set_state(instance, base.InstanceState.TERMINATING, "", "deleting")
        self._push(instance)
        self._after(0.0, self._sigterm, instance)
        self._after(grace, self._sigkill, instance)

    async def get(self, instance_id: str) -> base.InstanceStatus | None:
        instance = self._instances.get(instance_id)
        return None if instance is None else _copy_status(instance.status)

    async def list(self) -> list[base.InstanceStatus]:
        return [_copy_status(i.status) for i in self._instances.values()]

    async def logs(
        self,
        instance_id: str,
        container: str,
        *,
        follow: bool = False,
        previous: bool = False,
        tail_lines: int | None = None,
        timestamps: bool = False,
        since: datetime.datetime | None = None,
        limit_bytes: int | None = None,
    ) -> AsyncIterator[bytes]:
        """``LogsCapable``: an empty log (nothing runs, so nothing printed);
        ``follow`` lasts while the container runs. Raises ``ProviderError``
        with the kubelet's wording where a kubelet has no log to give."""
        instance = self._instances.get(instance_id)
        if instance is None:
            raise base.ProviderError(f"instance {instance_id} not found")
        pod = instance.status.pod_name
        found = [c for c in instance.all_containers() if c.status.name == container]
        if not found:
            raise base.ProviderError(f"container {container} is not valid for pod {pod}")
        entry = found[0]
        status = entry.status
        if previous:
            if not status.last_terminated:
                raise base.ProviderError(
                    f'previous terminated container "{container}" in pod "{pod}" not found'
                )
            return _silent_log(None)
        if status.state == "waiting" and not status.last_terminated:
            reason = status.reason or "ContainerCreating"
            raise base.ProviderError(
                f'container "{container}" in pod "{pod}" is waiting to start: {reason}'
            )
        restarts = status.restart_count

        def running() -> bool:
            return (
                self._instances.get(instance_id) is instance
                and status.restart_count == restarts
                and entry.running
            )

        return _silent_log(running if follow else None)

    async def stats(self) -> builtins.list[base.InstanceUsage]:
        """``StatsCapable``: synthetic usage of every running container (see
        the module docstring), as of the clock's now."""
        now = self.clock.now()
        result: builtins.list[base.InstanceUsage] = []
        for instance in self._instances.values():
            if instance.stage is _Stage.DONE:
                continue
            containers = [
                self._usage(instance, c, now) for c in instance.all_containers() if c.running
            ]
            if containers:
                result.append(
                    base.InstanceUsage(
                        instance_id=instance.request.instance_id,
                        timestamp=now,
                        window_seconds=USAGE_WINDOW,
                        containers=containers,
                    )
                )
        return result

    # --- beyond the protocol ---

    async def pull_image(self, image: str, credentials: Sequence[Mapping[str, Any]]) -> str:
        """An ImageCache's pull: takes the pull latency once; afterwards pods
        using the image start without it (``cached_images``)."""
        normalized = _normalize_image(image)
        if normalized not in self._cached:
            await self.clock.sleep(self.pull_latency)
            self._cached.add(normalized)
        return _image_id(image)

    async def remove_image(self, image: str) -> bool:
        """Pods using the image pay the pull latency again (unless an
        instance holds it)."""
        normalized = _normalize_image(image)
        in_use = any(
            _normalize_image(c.status.image) == normalized
            for i in self._instances.values()
            if i.stage is not _Stage.DONE
            for c in i.all_containers()
        )
        if in_use or normalized not in self._cached:
            return False
        self._cached.discard(normalized)
        return True

    async def reclaim(self, instance_id: str, reason: str = "BidFailed") -> None:
        """The spot market takes the capacity back: running containers end with
        143, the instance is Expired (listed until deleted) and its capacity
        is free. A no-op for unknown or already terminal instances."""
        instance = self._instances.get(instance_id)
        if instance is None or instance.stage is _Stage.DONE:
            return
        deleting = instance.stage is _Stage.TERMINATING
        self._invalidate(instance)
        for container in instance.all_containers():
            if container.running:
                self._end_container(container, EXIT_SIGTERM)
        self._finish(instance, base.InstanceState.EXPIRED, reason, "spot instance reclaimed")
        if deleting:  # the delete asked for removal; Expired is its final status
            del self._instances[instance_id]

    async def adopt(
        self, request: base.InstanceRequest, status: base.InstanceStatus
    ) -> base.InstanceStatus:
        """Takes back an instance a previous process created, from its last
        known status (see the module docstring). Pending instances start over
        (keeping their IP), running ones carry on where ``status`` left them,
        terminating ones are stopped at once, terminal ones are kept as they
        are. Never fails on capacity: the instance already exists. Idempotent."""
        existing = self._instances.get(request.instance_id)
        if existing is not None:
            return _copy_status(existing.status)
        self._check_open()
        instance = self._build(request)
        known = _copy_status(status)
        instance.status = dataclasses.replace(
            known,
            init_containers=[c.status for c in instance.init_containers],
            containers=[c.status for c in instance.containers],
        )
        _carry_over(instance.init_containers, known.init_containers)
        _carry_over(instance.containers, known.containers)
        if known.state.terminal:
            instance.stage = _Stage.DONE
            self._instances[request.instance_id] = instance
            return _copy_status(instance.status)
        self._admit(instance, ip=known.ip)
        if known.state in (base.InstanceState.SCHEDULING, base.InstanceState.PENDING):
            for container in instance.all_containers():
                _reset_waiting(container, "ContainerCreating")
            self._set_state(instance, base.InstanceState.PENDING, "ContainerCreating", "")
            self._after(instance.pull_seconds + self.start_latency, self._sandbox_ready, instance)
            return _copy_status(instance.status)
        instance.stage = _Stage.RUNNING
        instance.status.initialized = True
        now = self.clock.now()
        for container in instance.containers:
            self._resume(instance, container, now)
        if known.state is base.InstanceState.TERMINATING:
            instance.stage = _Stage.TERMINATING
            self._invalidate(instance)
            self._after(0.0, self._sigterm, instance)
            self._after(0.0, self._sigkill, instance)
        else:
            self._settle_app_state(instance)
        return _copy_status(instance.status)

    # --- building and admitting ---

    def _build(self, request: base.InstanceRequest) -> _Instance:
        spec = request.pod.get("spec") or {}
        metadata = request.pod.get("metadata") or {}
        has_init = bool(spec.get("initContainers"))
        try:
            init = [self._container(c, init=True) for c in spec.get("initContainers") or ()]
            app = [self._container(c, init=False) for c in spec.get("containers") or ()]
        except ValueError as e:
            raise base.ProviderError(str(e)) from None
        images = [c.status.image for c in init + app]
        # A pod matched to an ImageCache finds its images in the cache.
        matched = pod_annotations.read(
            metadata.get("annotations") or {}, pod_annotations.MATCHED_IMAGE_CACHE
        )
        pull = (
            0.0
            if matched or all(_normalize_image(i) in self._cached for i in images)
            else self.pull_latency
        )
        status = base.InstanceStatus(
            instance_id=request.instance_id,
            namespace=request.namespace,
            pod_name=request.pod_name,
            pod_uid=str(metadata.get("uid", "")),
            zone=request.zone,
            state=base.InstanceState.PENDING,
            reason="ContainerCreating",
            created_at=self.clock.now(),
            init_containers=[c.status for c in init],
            containers=[c.status for c in app],
            initialized=not has_init,
        )
        # Only what usage reads later: holding the whole pod would keep an
        # old version of every pod alive beside the API's (a fifth of the
        # memory of 10,000 simulated pods).
        slim = {"metadata": {k: metadata[k] for k in _KEPT_METADATA if k in metadata}}
        return _Instance(
            request=dataclasses.replace(request, pod=slim),
            status=status,
            init_containers=init,
            containers=app,
            restart_policy=str(spec.get("restartPolicy") or "Always"),
            pull_seconds=pull,
        )

    @staticmethod
    def _container(spec: Mapping[str, Any], *, init: bool) -> _Container:
        name = str(spec.get("name", ""))
        image = str(spec.get("image", ""))
        try:
            behaviour = commands.container_behaviour(spec)
        except ValueError as e:
            raise ValueError(f"container {name}: {e}") from None
        probe = spec.get("readinessProbe")
        delay = None
        if isinstance(probe, Mapping) and not init:
            delay = float(probe.get("initialDelaySeconds") or 0)
        status = base.ContainerStatus(
            name=name,
            image=image,
            state="waiting",
            reason="ContainerCreating",
            image_id=_image_id(image),
        )
        return _Container(
            status=status, behaviour=behaviour, init=init, readiness_delay=delay, spec=spec
        )

    def _admit(self, instance: _Instance, ip: str = "") -> None:
        """Counts the instance against its zone and, when adopting, takes back
        its IP."""
        zone = instance.request.zone
        self._zone_usage[zone] = self._zone_usage.get(zone, 0) + 1
        self._instances[instance.request.instance_id] = instance
        if ip:
            with contextlib.suppress(ValueError):
                offset = int(ipaddress.ip_address(ip)) - self._ip_first
                if offset in self._ip_pool and offset not in self._ips_in_use:
                    self._ips_in_use.add(offset)
                    instance.ip_offset = offset

    def _release(self, instance: _Instance) -> None:
        zone = instance.request.zone
        self._zone_usage[zone] -= 1
        if instance.ip_offset is not None:
            self._ips_in_use.discard(instance.ip_offset)
            instance.ip_offset = None

    def _allocate_ip(self, instance: _Instance) -> None:
        for _ in range(len(self._ip_pool)):
            offset = self._ip_pool[self._ip_next]
            self._ip_next = (self._ip_next + 1) % len(self._ip_pool)
            if offset not in self._ips_in_use:
                self._ips_in_use.add(offset)
                instance.ip_offset = offset
                instance.status.ip = str(ipaddress.ip_address(self._ip_first + offset))
                return
        raise AssertionError("create admits no more live instances than there are IPs")

    def _live_count(self) -> int:
        return sum(self._zone_usage.values())

    def _check_open(self) -> None:
        if self._closed:
            raise base.ProviderError("simulated provider is closed")

    # --- transitions (run by the scheduler loop) ---

    def _sandbox_ready(self, instance: _Instance) -> None:
        """Image pulled, sandbox up: the pod gets its IP and start time, then
        init containers run one by one, then the app containers."""
        if not instance.status.ip:  # adopted instances keep theirs
            self._allocate_ip(instance)
        instance.status.started_at = self.clock.now()
        if instance.init_containers:
            instance.stage = _Stage.INIT
            for container in instance.containers:
                container.status.reason = "PodInitializing"
            self._start_next_init(instance)
        else:
            self._start_app(instance)
        self._push(instance)

    def _start_next_init(self, instance: _Instance) -> None:
        container = instance.init_containers[instance.next_init]
        self._run_container(instance, container)
        self._set_state(instance, base.InstanceState.PENDING, "PodInitializing", "")

    def _start_app(self, instance: _Instance) -> None:
        instance.stage = _Stage.RUNNING
        instance.status.initialized = True
        for container in instance.containers:
            self._run_container(instance, container)
        self._set_state(instance, base.InstanceState.RUNNING, "", "")

    def _run_container(self, instance: _Instance, container: _Container) -> None:
        status = container.status
        now = self.clock.now()
        container.epoch += 1
        container.ran_since = self.clock.monotonic()
        status.state, status.reason, status.message = "running", "", ""
        status.exit_code, status.finished_at = None, None
        status.started_at = now
        status.started = True
        status.container_id = f"simulated://{next(self._container_ids):016x}"
        status.ready = container.readiness_delay is None and not container.init
        behaviour = container.behaviour
        if not behaviour.forever:
            self._after_container(behaviour.after, self._exited, instance, container)
        if container.readiness_delay is not None:
            if container.readiness_delay <= 0:
                status.ready = True
            else:
                self._after_container(
                    container.readiness_delay, self._became_ready, instance, container
                )

    def _became_ready(self, instance: _Instance, container: _Container) -> None:
        container.status.ready = True
        self._push(instance)

    def _exited(self, instance: _Instance, container: _Container) -> None:
        """A container ended by itself: restart it after back-off if the
        policy says so, else move the pod along (next init container, or done)."""
        code = container.behaviour.code
        ran = self.clock.monotonic() - container.ran_since
        self._end_container(container, code)
        if self._restarts(instance, container, code):
            self._back_off(instance, container, ran)
        elif container.init and code != 0:
            message = f"init container {container.status.name} exited with code {code}"
            self._finish(instance, base.InstanceState.FAILED, "Error", message)
            return
        elif container.init:
            container.status.ready = True
            instance.next_init += 1
            if instance.next_init < len(instance.init_containers):
                self._start_next_init(instance)
            else:
                self._start_app(instance)
        if not container.init and self._settle_app_state(instance):
            return
        self._push(instance)

    def _restarts(self, instance: _Instance, container: _Container, code: int) -> bool:
        policy = instance.restart_policy
        if container.init:
            return policy != "Never" and code != 0
        return policy == "Always" or (policy == "OnFailure" and code != 0)

    def _back_off(self, instance: _Instance, container: _Container, ran: float) -> None:
        if ran >= BACKOFF_RESET_AFTER:
            container.backoff = 0.0
        container.backoff = (
            INITIAL_BACKOFF if not container.backoff else min(container.backoff * 2, MAX_BACKOFF)
        )
        status = container.status
        status.last_terminated = {
            "exitCode": status.exit_code,
            "reason": status.reason,
            "startedAt": _rfc3339(status.started_at),
            "finishedAt": _rfc3339(status.finished_at),
            "containerID": status.container_id,
        }
        status.state, status.reason = "waiting", "CrashLoopBackOff"
        status.message = (
            f"back-off {_go_duration(container.backoff)} restarting failed "
            f"container={status.name} pod={instance.status.pod_name}_"
            f"{instance.status.namespace}({instance.status.pod_uid})"
        )
        status.exit_code = None
        status.started_at = status.finished_at = None
        self._after_container(container.backoff, self._restart, instance, container)

    def _restart(self, instance: _Instance, container: _Container) -> None:
        container.status.restart_count += 1
        self._run_container(instance, container)
        if not container.init:
            self._settle_app_state(instance)
        self._push(instance)

    def _settle_app_state(self, instance: _Instance) -> bool:
        """Sets Running/Restarting from the app containers, or finishes the
        instance when every one has ended for good. True when finished (the
        final status is then already pushed)."""
        containers = instance.containers
        backing_off = [c.status for c in containers if c.status.reason == "CrashLoopBackOff"]
        if backing_off:
            message = backing_off[0].message
            self._set_state(instance, base.InstanceState.RESTARTING, "CrashLoopBackOff", message)
            return False
        if all(c.status.state == "terminated" for c in containers):
            failed = [c.status for c in containers if c.status.exit_code != 0]
            if failed:
                message = f"container {failed[0].name} exited with code {failed[0].exit_code}"
                self._finish(instance, base.InstanceState.FAILED, "Error", message)
            else:
                self._finish(instance, base.InstanceState.SUCCEEDED, "Completed", "")
            return True
        self._set_state(instance, base.InstanceState.RUNNING, "", "")
        return False

    def _sigterm(self, instance: _Instance) -> None:
        for container in instance.all_containers():
            if container.running and not container.behaviour.ignores_sigterm:
                self._end_container(container, EXIT_SIGTERM)
        if any(c.running for c in instance.all_containers()):
            self._push(instance)
        else:
            self._remove(instance)

    def _sigkill(self, instance: _Instance) -> None:
        for container in instance.all_containers():
            if container.running:
                self._end_container(container, EXIT_SIGKILL)
        self._remove(instance)

    def _remove(self, instance: _Instance) -> None:
        """The end of a delete: the final status goes out, then the instance."""
        app = [c.status for c in instance.containers]
        succeeded = bool(app) and all(s.state == "terminated" and s.exit_code == 0 for s in app)
        if succeeded:
            self._finish(instance, base.InstanceState.SUCCEEDED, "Completed", "deleted")
        else:
            self._finish(instance, base.InstanceState.FAILED, "Error", "deleted")
        self._instances.pop(instance.request.instance_id, None)

    # --- small helpers ---

    def _end_container(self, container: _Container, code: int) -> None:
        container.epoch += 1
        status = container.status
        status.state = "terminated"
        status.exit_code = code
        status.reason = "Completed" if code == 0 else "Error"
        status.message = ""
        status.finished_at = self.clock.now()
        status.started = False
        if not container.init:
            status.ready = False

    def _finish(
        self, instance: _Instance, state: base.InstanceState, reason: str, message: str
    ) -> None:
        """A terminal state: capacity and IP are freed, the status pushed."""
        self._invalidate(instance)
        instance.stage = _Stage.DONE
        self._release(instance)
        self._set_state(instance, state, reason, message)
        instance.status.finished_at = self.clock.now()
        self._push(instance)

    def _invalidate(self, instance: _Instance) -> None:
        """Every pending timer of the instance and its containers goes stale."""
        instance.epoch += 1
        for container in instance.all_containers():
            container.epoch += 1

    @staticmethod
    def _set_state(
        instance: _Instance, state: base.InstanceState, reason: str, message: str
    ) -> None:
        instance.status.state = state
        instance.status.reason = reason
        instance.status.message = message

    def _resume(self, instance: _Instance, container: _Container, now: datetime.datetime) -> None:
        """An adopted app container carries on from its carried-over status."""
        status = container.status
        if status.state == "running" and status.started_at is not None:
            ran = max(0.0, (now - status.started_at).total_seconds())
            container.epoch += 1
            container.ran_since = self.clock.monotonic() - ran
            if not container.behaviour.forever:
                remaining = max(0.0, container.behaviour.after - ran)
                self._after_container(remaining, self._exited, instance, container)
            if not status.ready and container.readiness_delay is not None:
                remaining = max(0.0, container.readiness_delay - ran)
                self._after_container(remaining, self._became_ready, instance, container)
        elif status.state == "waiting":
            status.reason = "CrashLoopBackOff"
            count = status.restart_count
            container.backoff = min(INITIAL_BACKOFF * 2 ** max(0, count - 1), MAX_BACKOFF)
            self._after_container(container.backoff, self._restart, instance, container)

    def _push(self, instance: _Instance) -> None:
        for callback in self._callbacks:
            try:
                callback(_copy_status(instance.status))
            except Exception:
                log.exception("status callback failed for %s", instance.status.instance_id)

    # --- usage ---

    def _usage(
        self, instance: _Instance, container: _Container, now: datetime.datetime
    ) -> base.ContainerUsage:
        profile = container.usage
        if profile is None:
            profile = container.usage = self._profile(instance, container)
        name = container.status.name
        if profile.cpu_burn is not None:
            cores = profile.cpu_burn
        else:
            started = container.status.started_at or now
            ran = max(0.0, (now - started).total_seconds())
            sample = math.floor(ran / USAGE_WINDOW)
            noise = 2 * self._unit(instance.request.instance_id, name, "noise", sample) - 1
            wave = math.sin(2 * math.pi * ran / CPU_PERIOD + profile.phase)
            fraction = CPU_MEAN + CPU_SWING * wave + CPU_NOISE * noise
            cores = profile.cpu_base * max(CPU_FLOOR, fraction)
        if profile.cpu_cap is not None:
            cores = min(cores, profile.cpu_cap)
        return base.ContainerUsage(name, round(cores * 1e9), profile.memory)

    def _profile(self, instance: _Instance, container: _Container) -> _UsageProfile:
        request = instance.request
        spec = container.spec
        resources = spec.get("resources") or {}
        requests = resources.get("requests") or {}
        limits = resources.get("limits") or {}
        annotations = (request.pod.get("metadata") or {}).get("annotations") or {}
        env = {
            str(e.get("name")): e.get("value")
            for e in spec.get("env") or ()
            if isinstance(e, Mapping) and "value" in e
        }
        share = max(1, len(instance.containers))
        cpu_limit = _quantity(limits.get("cpu"))
        cpu_base = _quantity(requests.get("cpu")) or cpu_limit or request.vcpu / share
        caps = [c for c in (cpu_limit, request.vcpu) if c]
        burn = _first(_quantity(env.get(CPU_ENV)), _quantity(annotations.get(CPU_ANNOTATION)))
        if burn is None and _busy_loop(spec):
            burn = 1.0
        memory_limit = _quantity(limits.get("memory"))
        memory_base = (
            _quantity(requests.get("memory"))
            or memory_limit
            or request.memory_gib * 2**30 / share
            or DEFAULT_MEMORY
        )
        name = container.status.name
        memory = _first(
            _quantity(env.get(MEMORY_ENV)), _quantity(annotations.get(MEMORY_ANNOTATION))
        )
        if memory is None:
            spread = MEMORY_SPREAD * self._unit(request.instance_id, name, "memory")
            memory = memory_base * (MEMORY_FRACTION + spread)
        if memory_limit:
            memory = min(memory, memory_limit)
        return _UsageProfile(
            cpu_base=cpu_base or DEFAULT_CPU,
            cpu_burn=burn,
            cpu_cap=min(caps) if caps else None,
            memory=round(memory),
            phase=2 * math.pi * self._unit(request.instance_id, name, "phase"),
        )

    def _unit(self, *parts: object) -> float:
        """A number in [0, 1) fixed by the seed and ``parts``."""
        text = "\x1f".join(str(p) for p in (self.seed, *parts))
        digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
        return int.from_bytes(digest) / 2**64

    # --- the scheduler ---

    def _after(
        self, delay: float, action: Callable[[_Instance], None], instance: _Instance
    ) -> None:
        """Runs ``action`` ``delay`` seconds from now unless the instance has
        moved on (was deleted, reclaimed or finished) by then."""
        self._schedule(delay, action, instance, None, instance.epoch)

    def _after_container(
        self,
        delay: float,
        action: Callable[[_Instance, _Container], None],
        instance: _Instance,
        container: _Container,
    ) -> None:
        """Runs ``action`` ``delay`` seconds from now unless the container has
        moved on (exited, restarted, was stopped) by then."""
        self._schedule(delay, action, instance, container, container.epoch)

    def _schedule(
        self,
        delay: float,
        action: Callable[..., None],
        instance: _Instance,
        container: _Container | None,
        epoch: int,
    ) -> None:
        due = self.clock.monotonic() + max(0.0, delay)
        heapq.heappush(self._heap, (due, next(self._seq), action, instance, container, epoch))
        if len(self._heap) > self._compact_at:
            self._compact()
        self._ensure_loop()
        if due < self._timer_due and self._timer is not None and not self._timer.done():
            self._timer.cancel()  # the loop sleeps too long: wake it to re-arm

    def _compact(self) -> None:
        """Drops stale entries, which otherwise pin deleted instances in
        memory until their (possibly distant) due time."""
        self._heap = [e for e in self._heap if not _stale(e)]
        heapq.heapify(self._heap)
        self._compact_at = max(_COMPACT_MIN, 2 * len(self._heap))

    def _ensure_loop(self) -> None:
        if self._task is None and not self._closed:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="simulated-provider"
            )

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                self._fire_due()
                if self._heap:
                    self._timer_due = self._heap[0][0]
                    delay = self._timer_due - self.clock.monotonic()
                    self._timer = asyncio.ensure_future(self.clock.sleep(delay))
                else:
                    self._timer_due = math.inf
                    self._timer = loop.create_future()
                await asyncio.wait((self._timer,))
        finally:
            if self._timer is not None:
                self._timer.cancel()
            self._timer, self._timer_due = None, math.inf

    def _fire_due(self) -> None:
        """Runs every entry that is due, including ones that become due while
        running (zero delays), all at this instant of the clock."""
        self._timer_due = -math.inf  # no wake-ups while we are awake
        now = self.clock.monotonic() + _EPSILON
        while self._heap and self._heap[0][0] <= now:
            entry = heapq.heappop(self._heap)
            if _stale(entry):
                continue
            _, _, action, instance, container, _ = entry
            try:
                if container is None:
                    action(instance)
                else:
                    action(instance, container)
            except Exception:
                log.exception("simulated provider transition failed")


# --- module helpers ---


async def _silent_log(
    running: Callable[[], bool] | None, interval: float = 0.5
) -> AsyncIterator[bytes]:
    """A simulated container's log: nothing, until it stops (when followed)."""
    while running is not None:
        if not running():
            break
        await asyncio.sleep(interval)
    if False:  # an async generator that yields nothing
        yield b""


def _copy_status(status: base.InstanceStatus) -> base.InstanceStatus:
    """A copy sharing nothing mutable with ``status``."""
    duplicate = _shallow(status)
    duplicate.init_containers = [_copy_container(c) for c in status.init_containers]
    duplicate.containers = [_copy_container(c) for c in status.containers]
    return duplicate


def _copy_container(status: base.ContainerStatus) -> base.ContainerStatus:
    duplicate = _shallow(status)
    if status.last_terminated is not None:
        duplicate.last_terminated = dict(status.last_terminated)
    return duplicate


def _shallow(obj: _T) -> _T:
    """``copy.copy`` of a plain dataclass without its generic machinery, several
    times faster; every status push and every ``list`` copies, at 10,000
    instances that is most of the provider's time."""
    duplicate: _T = object.__new__(type(obj))
    duplicate.__dict__.update(obj.__dict__)
    return duplicate


def _carry_over(containers: list[_Container], known: list[base.ContainerStatus]) -> None:
    by_name = {c.name: c for c in known}
    for container in containers:
        previous = by_name.get(container.status.name)
        if previous is None:
            continue
        carried = _copy_container(previous)
        for f in dataclasses.fields(base.ContainerStatus):
            if f.name not in ("name", "image", "image_id"):
                setattr(container.status, f.name, getattr(carried, f.name))


def _reset_waiting(container: _Container, reason: str) -> None:
    status = container.status
    status.state, status.reason, status.message = "waiting", reason, ""
    status.exit_code = None
    status.started_at = status.finished_at = None
    status.ready = status.started = False


@functools.lru_cache(maxsize=1024)
def _image_id(image: str) -> str:
    """A stable digest-style image ID, as a runtime reports after the pull."""
    digest = hashlib.sha256(_normalize_image(image).encode()).hexdigest()
    return f"{image.split('@')[0]}@sha256:{digest}"


@functools.lru_cache(maxsize=1024)
def _normalize_image(image: str) -> str:
    """``busybox`` and ``docker.io/library/busybox:latest`` are one image."""
    name, at, digest = image.partition("@")
    if not at and ":" not in name.rsplit("/", 1)[-1]:
        name += ":latest"
    for prefix in ("docker.io/library/", "docker.io/", "index.docker.io/library/"):
        if name.startswith(prefix):
            name = name[len(prefix) :]
            break
    if "/" not in name:
        name = "library/" + name
    return name + at + digest


def _quantity(value: object) -> float | None:
    """A quantity ("900m", "256Mi", 2) as a float; None when absent or not one."""
    if value is None:
        return None
    try:
        number = quantities.parse(value)
    except quantities.QuantityError:
        log.debug("ignoring %r: not a quantity", value)
        return None
    return float(number) if number >= Decimal(0) else None


def _first(*values: float | None) -> float | None:
    """The first value given (an explicit 0 counts), None when there is none."""
    return next((v for v in values if v is not None), None)


def _busy_loop(spec: Mapping[str, Any]) -> bool:
    """Whether the container's command is a shell loop that never sleeps."""
    words = [*(spec.get("command") or ()), *(spec.get("args") or ())]
    return bool(_BUSY_LOOP.search(" ".join(str(w) for w in words)))


def _rfc3339(moment: datetime.datetime | None) -> str | None:
    if moment is None:
        return None
    return times.rfc3339(moment)


def _go_duration(seconds: float) -> str:
    """How the kubelet prints back-off times: 10s, 1m20s, 5m0s."""
    whole = int(seconds)
    minutes, rest = divmod(whole, 60)
    return f"{minutes}m{rest}s" if minutes else f"{rest}s"
