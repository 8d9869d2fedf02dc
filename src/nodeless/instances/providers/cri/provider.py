"""The CRI provider: every instance a real pod sandbox on containerd, as a kubelet runs it.

``create`` answers at once with a Pending instance; one asyncio task per
instance then does a kubelet's work through the CRI: prepare the pod's
directories, volumes and cgroup (the instance's size as pod-level limits),
run the sandbox (its IP comes from CNI), run init containers one by one,
then all containers, each under its own supervisor that pulls its image
(pull policy, pull secrets, ``ErrImagePull``/``ImagePullBackOff`` with
back-off), creates and starts it, waits for it to exit and restarts it as
the restart policy says, with ``CrashLoopBackOff``.

Volumes are set up before the sandbox runs: emptyDirs (on tmpfs for
``medium: Memory``), and through ``volumefiles`` the configMap, secret,
downwardAPI and projected volumes (service account tokens from the
``tokens`` callback; secrets and projections on tmpfs) written the kubelet's
atomic way, and persistentVolumeClaim volumes linked to their bound
PersistentVolume's directory. While one cannot be set up (its object
missing, its claim unbound) the pod waits in ``ContainerCreating`` and it is
tried again with back-off, as the kubelet does. A refresh loop rewrites the
file volumes of running pods where their objects changed, every
``volume_refresh_interval`` seconds of the injected clock.

Status is pushed (``Notifier``) on every change the provider makes, and
exits are noticed by one relist loop, like the kubelet's PLEG: while any
container runs it lists the provider's containers every ``relist_interval``
seconds (0.5 by default; containerd 1.6 has no CRI event stream) and wakes
the supervisors whose containers have exited. So a push follows every
container state change within about half a second, at one CRI call per
interval however many pods there are.

Back-off waits (crash loops, image pulls, create errors) go through the
injected clock, so tests can run them on a ``FakeClock``; the durations are
constructor policies, so tests and demos can make them short.

Deletion is Terminating at once; then every running container gets
``StopContainer`` with the grace period (SIGTERM, SIGKILL when it ends),
their final states are recorded (143, 137, or whatever the process chose),
the sandbox is stopped and removed, and the pod's cgroup, volumes and logs
are removed before the final status goes out and the instance is forgotten
(tmpfs volumes are unmounted first; a claim's data stays: the pod only held
a link to it). Every pod's containers get their stop signal at once (their
grace periods run side by side, as the kubelet's), then a few sandboxes are
torn down at a time (``PARALLEL_TEARDOWNS``), so that a large delete lets
pods go one after another rather than all together at the end.

Restart adoption: everything the provider needs is in the runtime. Each
sandbox carries the instance's request as an annotation and labels for the
instance ID, owner and pod; each container its name, attempt and type. A
new provider (``nodeless up`` restarted) lists them on start and carries on
supervising what it finds; nothing is created twice, and containerd itself
refuses a second sandbox of the same pod attempt. ``adopt`` is for records
whose sandbox is gone from the runtime.

Pods outlive their runtime: while containerd restarts, supervisors wait for
it to answer again instead of failing pods. containerd 1.6 sometimes reports
an OOM kill as a plain ``Error`` (it can lose the OOM event), so a 137 exit
is checked against the pod cgroup's OOM kill counter (cgroup v2) or the
kernel's log (v1; see ``oomkills``).

Usage (``stats``, the data behind ``kubectl top``) is one
``ListContainerStats`` call for all of this provider's containers, kept to
the running containers of live instances. containerd 1.6 fills
``usage_nano_cores`` from its own previous sample (0 on the first call), so
the rate is worked out here as cAdvisor does: from two readings of the
cumulative CPU time kept per container, over the time between them (the
reported window). Without an earlier reading it is containerd's rate if it
has one, else the average since the container started.

Kubelet deviations, on purpose: as in the simulated provider, the first
restart of a crashed container also waits the initial back-off. Probes come
later: a container without a readinessProbe is ready while it runs, one with
a readinessProbe is not ready yet. Pull progress Events are not reported
(the provider protocol carries no Events).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import dataclasses
import datetime
import functools
import logging
import math
import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import grpc

from nodeless import clocks
from nodeless.api import times
from nodeless.instances.providers import base
from nodeless.instances.providers.cri import (
    backoffs,
    cgroups,
    clients,
    containerd,
    gpudevices,
    hooks,
    imagerefs,
    logfiles,
    mounts,
    oomkills,
    podconfigs,
    probing,
    registryauth,
    sandboximages,
    volumefiles,
)
from nodeless.instances.providers.cri import runtime_pb2 as pb

log = logging.getLogger(__name__)

State = base.InstanceState
_T = TypeVar("_T")

# (kind "ConfigMap" | "Secret" | "PersistentVolumeClaim" | "PersistentVolume",
# namespace ("" for PersistentVolumes), name) -> the object, None if it does not exist
ObjectLookup = volumefiles.ObjectLookup
# The Services of a namespace (for the containers' Service variables).
ServicesLookup = Callable[[str], Awaitable[list[dict[str, Any]]]]

DEFAULT_OWNER = "nodeless"
DEFAULT_CGROUP_ROOT = "/nodeless"
RELIST_INTERVAL = 0.5
# Sandboxes set up at once: each is a network namespace, veth, IPAM lease
# and NAT rules, which serialise on host locks; more at once only makes each
# slower (a burst of 20 took 1.9 s to its first Running pod, 1.2 s gated at
# 4). Containers are not gated: a pod whose sandbox is up goes on at once.
PARALLEL_SANDBOXES = 4
# Pods set up at once, from their directories, cgroup and volumes to their
# sandbox: a pod prepares just ahead of its turn for a sandbox instead of
# every pod of a burst at once. Preparing 100 at once (threads holding the
# GIL, volume files on the loop) delayed the first sandboxes' next steps
# behind the whole burst (py-spy: a quarter of the loop's first 2 s).
SET_UPS_PER_SANDBOX = 2
# Pods whose sandboxes are torn down at once, once their containers have
# stopped: stopping and removing a sandbox and its files is the runtime's
# work (CNI's teardown, the pause, runc, the snapshots), which all at once
# only keeps every pod until nearly the last is done. Bare containerd, 200
# pods, each call for all at once: StopPodSandbox ended first after 4.2 s,
# all 7.7 s; 4 at a time 0.15 s, 7.5 s. `pods_real.py --no-baseline`
# (2026-11-29, alternated with all at once): 300 pods, the first gone 17.2 s
# after the DELETE, half 29.4, all 38.2 s (all at once 22.8 / 32.8 / 33.8);
# 500 pods 33.4 / 61.2 / 77.6 s (42.2 / 65.8 / 85.4). The stop signals are
# not gated, though gating whole teardowns let the first of 300 pods go
# after 1.4 s: every pod's grace period must run from its delete, as the
# kubelet's do, and the exits the signals cause are most of the work.
PARALLEL_TEARDOWNS = 4
LOG_CHECK_INTERVAL = 10.0  # the kubelet's containerLogMonitorInterval
PORT_FORWARD_TIMEOUT = 10.0  # seconds to connect to a forwarded port
MIN_GRACE_AFTER_PRE_STOP = 2  # the kubelet's minimumGracePeriodInSeconds
# How long a failed pull shows ErrImagePull before ImagePullBackOff (the
# kubelet shows the error until its next pod sync).
PULL_ERROR_HOLD = 1.0
MAX_TERMINATION_MESSAGE = 4096
FALLBACK_LOG_LINES = 80
FALLBACK_LOG_BYTES = 2048
# How often file volumes of running pods are rewritten where their objects
# changed (the kubelet's pod resync is a minute).
VOLUME_REFRESH_INTERVAL = 60.0
TEARDOWN_ON_CLOSE = 10.0  # seconds a deletion under way may take to finish at close
# The usage window reported when there is no earlier reading to measure one
# (the kubelet's housekeeping interval), and the shortest window measured:
# readings closer together than that reuse the last rate, as the kubelet
# answers from its cache between housekeeping runs.
STATS_WINDOW = 10.0
MIN_STATS_WINDOW = 1.0

CONTAINER_CREATING = "ContainerCreating"
POD_INITIALIZING = "PodInitializing"
ERR_IMAGE_PULL = "ErrImagePull"
IMAGE_PULL_BACK_OFF = "ImagePullBackOff"
ERR_IMAGE_NEVER_PULL = "ErrImageNeverPull"
INVALID_IMAGE_NAME = "InvalidImageName"
CRASH_LOOP_BACK_OFF = "CrashLoopBackOff"
CREATE_CONTAINER_ERROR = "CreateContainerError"
FAILED_CREATE_SANDBOX = "FailedCreatePodSandBox"
VOLUME_NOT_SUPPORTED = "VolumeNotSupported"
SANDBOX_LOST = "SandboxLost"
STATUS_UNKNOWN = "ContainerStatusUnknown"
OOM_KILLED = "OOMKilled"
EXIT_SIGKILL = 137
EXIT_STATUS_UNKNOWN = 137
_QUIET_REASONS = ("", CONTAINER_CREATING, POD_INITIALIZING)


@dataclasses.dataclass(frozen=True)
class _CpuSample:
    """A reading of a container's cumulative CPU time (CRI nanoseconds) and
    the rate worked out when it was taken."""

    timestamp_ns: int
    total_ns: int
    nano_cores: int
    window: float


@dataclasses.dataclass(eq=False)
class _Container:
    spec: dict[str, Any]
    init: bool
    status: base.ContainerStatus
    crash: backoffs.BackOff
    retry: backoffs.BackOff  # image pulls and create errors
    attempt: int = -1  # the latest CRI container's attempt (its restart count)
    next_attempt: int = 0  # the attempt the next container is created as
    cri_id: str = ""
    cri_ids: dict[int, str] = dataclasses.field(default_factory=dict)  # attempt -> id
    ever_started: bool = False  # has had a container that ran (or failed to start)
    done: bool = False  # ended for good: the restart policy does not restart it
    resume: pb.ContainerStatus | None = None  # adopted: its latest CRI container
    killed: bool = False  # this attempt was killed for a failed probe or postStart hook
    # the runtime's answer whether the image is present, asked while the
    # sandbox starts (``_check_images``); taken by the first attempt only
    image_check: asyncio.Task[pb.Image | None] | None = None

    @property
    def name(self) -> str:
        return self.status.name

    @property
    def probes(self) -> dict[str, probing.Probe]:
        return {} if self.init else probing.probes(self.spec)


@dataclasses.dataclass(eq=False)
class _Instance:
    request: base.InstanceRequest
    status: base.InstanceStatus
    paths: podconfigs.PodPaths
    cgroup: cgroups.PodCgroup
    init_containers: list[_Container]
    containers: list[_Container]
    restart_policy: str
    sandbox_id: str = ""
    sandbox_config: pb.PodSandboxConfig | None = None
    context: podconfigs.PodContext | None = None
    task: asyncio.Task[None] | None = None
    teardown: asyncio.Task[None] | None = None
    grace: int | None = None  # the grace period of the delete in progress
    holds_capacity: bool = False
    last_pushed: base.InstanceStatus | None = None
    oom_kills: int = 0  # the pod cgroup's OOM kill count when last read (cgroup v2)
    pre_stopped: set[str] = dataclasses.field(default_factory=set)  # CRI IDs whose preStop ran
    # termination files made with the pod's directories, ahead of their attempts
    made_files: set[Path] = dataclasses.field(default_factory=set)
    gpus: tuple[int, ...] = ()  # the host GPUs this instance holds
    setting_up: bool = False  # holds one of the provider's set-up slots

    def all_containers(self) -> list[_Container]:
        return self.init_containers + self.containers


class CriProvider:
    """A ``Provider``, ``Notifier``, ``UpdateCapable``, ``LogsCapable`` and
    ``StatsCapable`` on a CRI runtime.

    ``client`` is a ``CriClient`` on a running runtime (``containerd``
    starts one); ``data_dir`` holds pod directories and logs. ``owner`` tells
    this provider's sandboxes from others' on a shared runtime;
    ``credentials`` resolves ``imagePullSecrets``, ``objects`` the
    ConfigMaps and Secrets containers' environments and volumes name and the
    claims and PersistentVolumes of their persistentVolumeClaim volumes, and
    ``tokens`` issues the service account tokens of projected volumes (all
    optional: without them, pods naming such objects wait with
    ``CreateContainerConfigError`` or, for volumes, in ``ContainerCreating``;
    pulls go without credentials). File volumes of running pods are
    refreshed every ``volume_refresh_interval`` seconds of ``clock``.
    ``on_close`` runs last in ``close`` (``start_cri_provider`` stops its
    containerd there).
    """

    name = "cri"

    def __init__(
        self,
        client: clients.CriClient,
        data_dir: Path,
        clock: clocks.Clock,
        *,
        owner: str = DEFAULT_OWNER,
        cgroup_root: str = DEFAULT_CGROUP_ROOT,
        zone_capacity: Mapping[str, int] | None = None,
        credentials: registryauth.CredentialsLookup | None = None,
        objects: ObjectLookup | None = None,
        services: ServicesLookup | None = None,
        tokens: volumefiles.TokenLookup | None = None,
        volume_refresh_interval: float = VOLUME_REFRESH_INTERVAL,
        crash_backoff: backoffs.BackOffPolicy = backoffs.CRASH_LOOP,
        pull_backoff: backoffs.BackOffPolicy = backoffs.IMAGE_PULL,
        relist_interval: float = RELIST_INTERVAL,
        dns: podconfigs.DnsSettings = podconfigs.DnsSettings(),
        runtime_handler: str = "",
        log_max_size: int = logfiles.MAX_SIZE,
        log_max_files: int = logfiles.MAX_FILES,
        log_check_interval: float = LOG_CHECK_INTERVAL,
        on_close: Callable[[], Awaitable[None]] | None = None,
        host_gpus: gpudevices.HostGpus | None = None,
        parallel_sandboxes: int = PARALLEL_SANDBOXES,
        parallel_teardowns: int = PARALLEL_TEARDOWNS,
    ) -> None:
        self.client = client
        self.data_dir = data_dir
        self.clock = clock
        self.owner = owner
        self.cgroup_root = cgroup_root
        self.zone_capacity = dict(zone_capacity) if zone_capacity is not None else None
        self.credentials = credentials
        self.objects = objects
        self.services = services
        self.tokens = tokens
        self.volume_refresh_interval = volume_refresh_interval
        self.crash_backoff = crash_backoff
        self.pull_backoff = pull_backoff
        self.relist_interval = relist_interval
        self.dns = dns
        self.runtime_handler = runtime_handler
        self._on_close = on_close
        self.log_max_size = log_max_size
        self.log_max_files = log_max_files
        self.log_check_interval = log_check_interval
        self._rotation_task: asyncio.Task[None] | None = None
        self._runtime_name = "containerd"
        self.host_gpus = gpudevices.discover() if host_gpus is None else host_gpus
        self._gpus = gpudevices.GpuAllocator(self.host_gpus.indices)
        self._use_cdi = False  # set from the runtime's version at start
        self._sandbox_starts = asyncio.Semaphore(parallel_sandboxes)
        self._set_ups = asyncio.BoundedSemaphore(parallel_sandboxes * SET_UPS_PER_SANDBOX)
        self._teardown_slots = asyncio.Semaphore(parallel_teardowns)
        self._instances: dict[str, _Instance] = {}
        self._zone_usage: dict[str, int] = {}
        self._callbacks: list[base.StatusCallback] = []
        self._event_callbacks: list[base.EventCallback] = []
        self._exit_waiters: dict[str, asyncio.Future[None]] = {}
        self._wake = asyncio.Event()
        self._relist_task: asyncio.Task[None] | None = None
        self._volume_refresh_task: asyncio.Task[None] | None = None
        self._volume_locks: dict[str, asyncio.Lock] = {}  # instance ID -> held while writing
        self._cpu_samples: dict[str, _CpuSample] = {}  # CRI container ID -> last reading
        self._start_lock = asyncio.Lock()
        self._memory_lock = asyncio.Lock()  # held while mounting the volumes' tmpfs
        self._started = False
        self._closed = False

    # --- lifecycle ---

    async def start(self) -> None:
        """Finds this provider's instances in the runtime and resumes
        supervising them (it also happens on first use)."""
        await self._ensure_started()

    async def close(self) -> None:
        """Stops supervising. Pods keep running: a provider started later on
        the same runtime adopts them. Deletions under way are given up to
        ``TEARDOWN_ON_CLOSE`` seconds to finish: one cut between removing
        the sandbox and unmounting its volumes would leave the volumes behind
        with nothing left to adopt them."""
        self._closed = True
        teardowns = [i.teardown for i in self._instances.values() if i.teardown]
        if teardowns:
            await asyncio.wait(teardowns, timeout=TEARDOWN_ON_CLOSE)
        tasks = [t for i in self._instances.values() for t in (i.task, i.teardown) if t]
        if self._relist_task is not None:
            tasks.append(self._relist_task)
        if self._volume_refresh_task is not None:
            tasks.append(self._volume_refresh_task)
        if self._rotation_task is not None:
            tasks.append(self._rotation_task)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._relist_task = None
        self._volume_refresh_task = None
        self._rotation_task = None
        await asyncio.to_thread(
            _unmount_memory_root_if_unused, self.data_dir / podconfigs.MEMORY_DIR
        )
        if self._on_close is not None:
            on_close, self._on_close = self._on_close, None
            await on_close()

    @property
    def closed(self) -> bool:
        return self._closed

    def subscribe(self, callback: base.StatusCallback) -> None:
        self._callbacks.append(callback)

    def subscribe_events(self, callback: base.EventCallback) -> None:
        self._event_callbacks.append(callback)

    async def _ensure_started(self) -> None:
        if self._started:
            return
        async with self._start_lock:
            if self._started:
                return
            if self._closed:
                raise base.ProviderError("the CRI provider is closed")
            self.data_dir.mkdir(parents=True, exist_ok=True)
            try:
                await self._recover()
            except clients.CriError as e:
                raise base.ProviderError(f"container runtime at {self.client.address}: {e}") from e
            self._relist_task = asyncio.create_task(self._relist_loop(), name="cri-relist")
            self._rotation_task = asyncio.create_task(
                self._log_rotation_loop(), name="cri-log-rotation"
            )
            self._started = True

    # --- the Provider protocol ---

    async def create(self, request: base.InstanceRequest) -> base.InstanceStatus:
        """Pending at once; the pod is set up in the background. Idempotent
        per instance_id (returns the current status); a newer pod given for
        an instance that exists is shown to it as ``update`` shows it (the
        manager creates again after a crash, and then takes the pod's labels
        and annotations as shown)."""
        await self._ensure_started()
        existing = self._instances.get(request.instance_id)
        if existing is not None:
            if base.shown_metadata(existing.request.pod) != base.shown_metadata(request.pod):
                await self.update(request.instance_id, request.pod)
            return _copy_status(existing.status)
        limit = None if self.zone_capacity is None else self.zone_capacity.get(request.zone)
        in_zone = self._zone_usage.get(request.zone, 0)
        if limit is not None and in_zone >= limit:
            raise base.CapacityError(
                f"zone {request.zone} has no capacity left ({in_zone} of {limit} instances in use)"
            )
        instance = self._build(request)
        instance.gpus = self._allocate_gpus(request)
        self._admit(instance)
        self._push(instance)
        instance.task = asyncio.create_task(
            self._lifecycle(instance), name=f"cri-{request.instance_id}"
        )
        return _copy_status(instance.status)

    async def delete(self, instance_id: str, grace_period_seconds: int) -> None:
        """Terminating at once, then stopped with the grace period and
        removed in the background; an instance already terminal is removed
        before this returns. Idempotent; a shorter grace period wins."""
        await self._ensure_started()
        instance = self._instances.get(instance_id)
        if instance is None:
            return
        grace = max(0, int(grace_period_seconds))
        if instance.teardown is not None and instance.teardown.done():
            instance.teardown = None  # an earlier removal failed: try again
        if instance.teardown is not None:
            if instance.grace is not None and grace < instance.grace:
                instance.grace = grace
                await self._stop_running(instance, grace)
            if instance.status.state.terminal:
                await asyncio.shield(instance.teardown)
            return
        if instance.status.state.terminal:
            instance.teardown = asyncio.create_task(self._teardown(instance, 0, report=False))
            await asyncio.shield(instance.teardown)
            return
        instance.grace = grace
        if instance.status.state is not State.TERMINATING:
            self._set_state(instance, State.TERMINATING, "", "deleting")
            self._push(instance)
            for container in instance.all_containers():
                if container.status.state == "running":
                    message = f"Stopping container {container.name}"
                    self._event(instance, "Normal", "Killing", message)
        instance.teardown = asyncio.create_task(
            self._teardown(instance, grace, report=True), name=f"cri-delete-{instance_id}"
        )

    async def get(self, instance_id: str) -> base.InstanceStatus | None:
        await self._ensure_started()
        instance = self._instances.get(instance_id)
        return None if instance is None else _copy_status(instance.status)

    async def list(self) -> list[base.InstanceStatus]:
        await self._ensure_started()
        return [_copy_status(i.status) for i in self._instances.values()]

    async def update(self, instance_id: str, pod: dict[str, Any]) -> None:
        """The pod changed: its downward API files show its labels and
        annotations as they are now (the kubelet rewrites them on a pod's
        update). Environment variables keep what the containers started with."""
        instance = self._instances.get(instance_id)
        if instance is None or instance.teardown is not None:
            return
        instance.request = dataclasses.replace(instance.request, pod=pod)
        if instance.context is not None:
            instance.context = dataclasses.replace(instance.context, request=instance.request)
        await self._refresh_volumes(instance)

    async def adopt(
        self, request: base.InstanceRequest, status: base.InstanceStatus
    ) -> base.InstanceStatus:
        """For a record whose instance this provider did not find in the
        runtime. Found after all (it is the same instance): its status. Gone
        from the runtime (the host lost its containers): terminal ones stay
        as they were; a pod whose containers had run under restartPolicy
        Never fails with ``SandboxLost`` rather than run twice; any other is
        started again, as a kubelet recreates a vanished sandbox."""
        await self._ensure_started()
        existing = self._instances.get(request.instance_id)
        if existing is not None:
            return _copy_status(existing.status)
        instance = self._build(request)
        self._carry_over(instance, status)
        policy = instance.restart_policy
        ran = status.state in (State.RUNNING, State.RESTARTING, State.TERMINATING)
        if status.state.terminal or (policy == "Never" and ran):
            self._instances[request.instance_id] = instance
            if status.state.terminal:
                instance.status = _copy_status(status)
            else:
                instance.status.created_at = status.created_at or instance.status.created_at
                self._conclude(instance, State.FAILED, SANDBOX_LOST, _SANDBOX_LOST_MESSAGE)
            return _copy_status(instance.status)
        instance.gpus = self._allocate_gpus(request)
        self._admit(instance)
        instance.status.created_at = status.created_at or instance.status.created_at
        self._push(instance)
        instance.task = asyncio.create_task(
            self._lifecycle(instance), name=f"cri-{request.instance_id}"
        )
        return _copy_status(instance.status)

    # --- logs ---

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
        """The container's log as ``kubectl logs`` prints it; ``follow``
        streams until the container stops. Raises ``ProviderError`` (with
        the kubelet's wording) for unknown or not yet started containers."""
        await self._ensure_started()
        instance = self._instances.get(instance_id)
        if instance is None:
            raise base.ProviderError(f"instance {instance_id} not found")
        pod = instance.status.pod_name
        found = [c for c in instance.all_containers() if c.name == container]
        if not found:
            raise base.ProviderError(f"container {container} is not valid for pod {pod}")
        entry = found[0]
        options = logfiles.LogOptions(tail_lines, since, limit_bytes, timestamps)
        if previous:
            path = instance.paths.log_file(entry.name, entry.attempt - 1)
            if entry.attempt < 1 or not path.exists():
                raise base.ProviderError(
                    f'previous terminated container "{container}" in pod "{pod}" not found'
                )
            return logfiles.read(path, options)
        if entry.attempt < 0:
            reason = entry.status.reason or CONTAINER_CREATING
            raise base.ProviderError(
                f'container "{container}" in pod "{pod}" is waiting to start: {reason}'
            )
        attempt = entry.attempt
        path = instance.paths.log_file(entry.name, attempt)

        def running() -> bool:
            return (
                self._instances.get(instance_id) is instance
                and entry.attempt == attempt
                and entry.status.state == "running"
            )

        return logfiles.read(path, options, running=running if follow else None)

    # --- exec and attach ---

    async def exec(
        self,
        instance_id: str,
        container: str,
        command: Sequence[str],
        *,
        stdin: bool,
        stdout: bool,
        stderr: bool,
        tty: bool,
    ) -> str:
        """``ExecCapable``: the runtime's streaming URL for ``command`` in
        the running ``container``."""
        container_id = await self._running_container(instance_id, container)
        request = pb.ExecRequest(
            container_id=container_id,
            cmd=list(command),
            tty=tty,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr and not tty,  # a terminal merges stderr into stdout
        )
        try:
            return await self.client.exec(request)
        except clients.CriError as e:
            raise base.ProviderError(f"unable to upgrade connection: {e.details or e}") from None

    async def attach(
        self,
        instance_id: str,
        container: str,
        *,
        stdin: bool,
        stdout: bool,
        stderr: bool,
        tty: bool,
    ) -> str:
        """``ExecCapable``: the runtime's streaming URL attached to the
        running ``container``'s own process."""
        container_id = await self._running_container(instance_id, container)
        request = pb.AttachRequest(
            container_id=container_id,
            stdin=stdin,
            tty=tty,
            stdout=stdout,
            stderr=stderr and not tty,
        )
        try:
            return await self.client.attach(request)
        except clients.CriError as e:
            raise base.ProviderError(f"unable to upgrade connection: {e.details or e}") from None

    async def port_forward(
        self, instance_id: str, port: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """``PortForwardCapable``: a connection to ``port`` on the pod's IP
        (the pod network is a bridge on this host). Deviation: the kubelet
        connects to localhost inside the pod's network namespace, so it also
        reaches servers bound to 127.0.0.1 there; this does not."""
        await self._ensure_started()
        instance = self._instances.get(instance_id)
        if instance is None or instance.status.state.terminal or not instance.status.ip:
            raise base.ProviderError(f"instance {instance_id} has no running pod to forward to")
        ip = instance.status.ip
        try:
            async with asyncio.timeout(PORT_FORWARD_TIMEOUT):
                return await asyncio.open_connection(ip, port)
        except (OSError, TimeoutError) as e:
            reason = "i/o timeout" if isinstance(e, TimeoutError) else probing.connect_error(e)
            raise base.ProviderError(
                f"error forwarding port {port} to pod {instance.status.pod_name}: "
                f"dial tcp {ip}:{port}: {reason}"
            ) from None

    async def _running_container(self, instance_id: str, container: str) -> str:
        await self._ensure_started()
        instance = self._instances.get(instance_id)
        if instance is None:
            raise base.ProviderError(f"instance {instance_id} not found")
        pod = instance.status.pod_name
        found = [c for c in instance.all_containers() if c.name == container]
        if not found:
            raise base.ProviderError(f"container {container} is not valid for pod {pod}")
        entry = found[0]
        if entry.status.state != "running" or not entry.cri_id:
            raise base.ProviderError(
                f'unable to upgrade connection: container not found ("{container}")'
            )
        return entry.cri_id

    # --- usage ---

    async def stats(self) -> builtins.list[base.InstanceUsage]:
        """``StatsCapable``: what the running containers of live instances
        use, from one ``ListContainerStats`` call (see the module docstring
        for how the CPU rate is measured); ``ProviderError`` when the runtime
        does not answer."""
        await self._ensure_started()
        try:
            listed = await self.client.list_container_stats(
                labels={podconfigs.LABEL_OWNER: self.owner}
            )
        except clients.CriError as e:
            raise base.ProviderError(f"reading container stats failed: {e}") from None
        running: dict[str, _Container] = {}
        for instance in self._instances.values():
            if instance.status.state.terminal:
                continue
            for container in instance.all_containers():
                if container.cri_id and container.status.state == "running":
                    running[container.cri_id] = container
        # CRI container ID -> (usage, window, timestamp in nanoseconds)
        readings: dict[str, tuple[base.ContainerUsage, float, int]] = {}
        for stats in listed:
            container_id = stats.attributes.id
            found = running.get(container_id)
            if found is None:
                continue
            cores, window = self._cpu_rate(container_id, stats.cpu, found.status.started_at)
            memory = stats.memory.working_set_bytes.value
            usage = base.ContainerUsage(found.name, cores, memory)
            readings[container_id] = (usage, window, stats.cpu.timestamp)
        for container_id in self._cpu_samples.keys() - running.keys():
            del self._cpu_samples[container_id]
        result: builtins.list[base.InstanceUsage] = []
        for instance in self._instances.values():
            measured = [
                readings[c.cri_id] for c in instance.all_containers() if c.cri_id in readings
            ]
            if not measured:
                continue
            stamp = max(timestamp for _, _, timestamp in measured)
            result.append(
                base.InstanceUsage(
                    instance_id=instance.request.instance_id,
                    timestamp=_from_ns(stamp) or self.clock.now(),
                    window_seconds=max(window for _, window, _ in measured),
                    containers=[usage for usage, _, _ in measured],
                )
            )
        return result

    def _cpu_rate(
        self, container_id: str, cpu: pb.CpuUsage, started_at: datetime.datetime | None
    ) -> tuple[int, float]:
        """The container's CPU use in nanocores and the window it was
        measured over, from this reading and the one kept from last time."""
        timestamp = cpu.timestamp
        has_total = cpu.HasField("usage_core_nano_seconds") and timestamp > 0
        total = cpu.usage_core_nano_seconds.value
        previous = self._cpu_samples.get(container_id)
        if previous is not None and has_total and total >= previous.total_ns:
            elapsed = timestamp - previous.timestamp_ns
            if elapsed < MIN_STATS_WINDOW * 1e9:
                return previous.nano_cores, previous.window
            cores = round((total - previous.total_ns) * 1e9 / elapsed)
            window = elapsed / 1e9
        elif cpu.usage_nano_cores.value > 0:
            cores, window = cpu.usage_nano_cores.value, STATS_WINDOW
        else:
            lifetime = 0.0
            if started_at is not None and has_total:
                lifetime = timestamp / 1e9 - started_at.timestamp()
            if lifetime >= MIN_STATS_WINDOW:
                cores, window = round(total / lifetime), lifetime
            else:
                cores, window = 0, STATS_WINDOW
        if has_total:
            self._cpu_samples[container_id] = _CpuSample(timestamp, total, cores, window)
        return cores, window

    # --- building and admitting ---

    def _build(self, request: base.InstanceRequest) -> _Instance:
        pod = request.pod
        metadata = pod.get("metadata") or {}
        spec = pod.get("spec") or {}
        init_specs, app_specs = podconfigs.container_specs(pod)
        if not app_specs:
            raise base.ProviderError(f"pod {request.pod_name} has no containers")
        names = podconfigs.names(init_specs + app_specs)
        if len(set(names)) != len(names) or not all(names):
            raise base.ProviderError(f"pod {request.pod_name}: container names must be unique")
        try:
            paths = podconfigs.PodPaths.for_request(self.data_dir, request)
        except ValueError as e:
            raise base.ProviderError(f"pod {request.pod_name}: {e}") from None
        init = [self._container(c, init=True) for c in init_specs]
        app = [self._container(c, init=False) for c in app_specs]
        status = base.InstanceStatus(
            instance_id=request.instance_id,
            namespace=request.namespace,
            pod_name=request.pod_name,
            pod_uid=str(metadata.get("uid", "")),
            zone=request.zone,
            state=State.PENDING,
            reason=CONTAINER_CREATING,
            created_at=self.clock.now(),
            init_containers=[c.status for c in init],
            containers=[c.status for c in app],
            initialized=not init,
        )
        return _Instance(
            request=request,
            status=status,
            paths=paths,
            cgroup=cgroups.PodCgroup.for_pod(self.cgroup_root, paths.uid),
            init_containers=init,
            containers=app,
            restart_policy=str(spec.get("restartPolicy") or "Always"),
        )

    def _container(self, spec: dict[str, Any], *, init: bool) -> _Container:
        status = base.ContainerStatus(
            name=str(spec.get("name") or ""),
            image=str(spec.get("image") or ""),
            state="waiting",
            reason=CONTAINER_CREATING,
        )
        return _Container(
            spec=spec,
            init=init,
            status=status,
            crash=backoffs.BackOff(self.crash_backoff),
            retry=backoffs.BackOff(self.pull_backoff),
        )

    def _admit(self, instance: _Instance) -> None:
        self._instances[instance.request.instance_id] = instance
        zone = instance.request.zone
        self._zone_usage[zone] = self._zone_usage.get(zone, 0) + 1
        instance.holds_capacity = True

    def _release(self, instance: _Instance) -> None:
        if instance.holds_capacity:
            instance.holds_capacity = False
            self._zone_usage[instance.request.zone] -= 1
            self._gpus.release(instance.request.instance_id)

    def _allocate_gpus(self, request: base.InstanceRequest) -> tuple[int, ...]:
        """Whole host GPUs for a GPU instance, refused before anything runs:
        a pod sized for GPUs must never start as a container without them."""
        try:
            return self._gpus.allocate(request.instance_id, request.gpu_count)
        except gpudevices.GpuUnavailable as e:
            if not self._gpus.indices:
                raise base.ProviderError(str(e)) from e
            raise base.CapacityError(str(e)) from e

    def _gpu_exposures(self, instance: _Instance) -> dict[str, gpudevices.Exposure]:
        return gpudevices.container_exposures(
            self.host_gpus, instance.request.pod, instance.gpus, use_cdi=self._use_cdi
        )

    @staticmethod
    def _carry_over(instance: _Instance, status: base.InstanceStatus) -> None:
        """Restart counts survive a lost sandbox, as the kubelet's do."""
        known = {c.name: c for c in status.init_containers + status.containers}
        for container in instance.all_containers():
            previous = known.get(container.name)
            if previous is not None:
                container.status.restart_count = previous.restart_count
                ran = previous.state != "waiting" or previous.last_terminated is not None
                container.next_attempt = previous.restart_count + (1 if ran else 0)

    # --- the instance's life ---

    async def _lifecycle(self, instance: _Instance) -> None:
        try:
            if not instance.sandbox_id:
                prepared_for = instance.request
                async with self._setting_up(instance):
                    try:
                        volumes = podconfigs.volumes(instance.request.pod)
                        await self._prepare(instance, volumes)
                    except podconfigs.UnsupportedVolume as e:
                        self._conclude(instance, State.FAILED, VOLUME_NOT_SUPPORTED, str(e))
                        return
                    self._check_images(instance)
                    await self._run_sandbox(instance)
                # Written again once the sandbox runs: for the pod's IP, and
                # for a label change shown (``update``) while the files were
                # being set up, which could not rewrite them then.
                if volumefiles.needs_pod_ip(volumes) or instance.request is not prepared_for:
                    await self._refresh_volumes(instance)
            for container in instance.init_containers:
                if container.done:
                    continue
                code = await self._supervise(instance, container)
                if code != 0:
                    message = f"init container {container.name} exited with code {code}"
                    self._conclude(instance, State.FAILED, "Error", message)
                    await self._stop_sandbox(instance)
                    return
                container.status.ready = True
            if not instance.status.initialized:
                instance.status.initialized = True
                for container in instance.containers:
                    if container.status.reason == POD_INITIALIZING:
                        container.status.reason = CONTAINER_CREATING
                self._settle(instance)
                self._push(instance)
            async with asyncio.TaskGroup() as group:
                for container in instance.containers:
                    if not container.done:
                        group.create_task(self._supervise(instance, container))
            if not instance.status.state.terminal:
                self._conclude_from_containers(instance)
            await self._stop_sandbox(instance)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.exception("instance %s failed in the provider", instance.request.instance_id)
            self._conclude(instance, State.FAILED, "ProviderError", str(e))
            with contextlib.suppress(Exception):
                await self._stop_sandbox(instance)

    @contextlib.asynccontextmanager
    async def _setting_up(self, instance: _Instance) -> AsyncIterator[None]:
        """Holds one of the set-up slots (``SET_UPS_PER_SANDBOX``) from the
        pod's directories to its running sandbox; waits for one, in order."""
        await self._set_ups.acquire()
        instance.setting_up = True
        try:
            yield
        finally:
            self._leave_set_up(instance)

    def _leave_set_up(self, instance: _Instance) -> None:
        if instance.setting_up:
            instance.setting_up = False
            self._set_ups.release()

    async def _back_off(self, instance: _Instance, seconds: float) -> None:
        """Sleeps out a retry's back-off without a set-up slot: a pod waiting
        for a missing ConfigMap or a failing sandbox must not hold up the
        pods behind it. A cancel while waiting for the slot again leaves it
        unheld, so nothing is released twice."""
        held = instance.setting_up
        self._leave_set_up(instance)
        await self.clock.sleep(seconds)
        if held:
            await self._set_ups.acquire()
            instance.setting_up = True

    async def _prepare(self, instance: _Instance, volumes: Sequence[podconfigs.Volume]) -> None:
        """The pod's directories, volumes and cgroup; waits while a volume
        cannot be set up yet (``_set_up_volumes``)."""
        paths = instance.paths
        security = (instance.request.pod.get("spec") or {}).get("securityContext") or {}
        fs_group = security.get("fsGroup")
        dirs: dict[str, Path] = {}
        empty_dirs = [v for v in volumes if isinstance(v, podconfigs.EmptyDir)]
        request = instance.request

        # Each container's next termination file too: made on the loop when
        # its container is configured, its mkdirs blocked the loop for ~3 ms
        # a pod while the runtime was busy (py-spy, 100 pods starting).
        termination_files = [
            paths.termination_file(c.name, c.next_attempt) for c in instance.all_containers()
        ]

        def make_dirs() -> None:
            paths.log_dir.mkdir(parents=True, exist_ok=True)
            paths.pod_dir.mkdir(parents=True, exist_ok=True)
            for path in termination_files:
                _create_termination_file(path)
            for volume in empty_dirs:
                directory = paths.empty_dir(volume.name)
                directory.mkdir(parents=True, exist_ok=True)
                dirs[volume.name] = directory
            try:
                instance.cgroup.create(
                    cpus=request.vcpu, memory_bytes=int(request.memory_gib * 2**30)
                )
            except OSError as e:
                log.warning(
                    "pod cgroup %s: %s (containers keep their own limits)", instance.cgroup, e
                )

        # One hop to a thread: a mkdir waits on the kernel for milliseconds
        # when the runtime is busy creating cgroups, too long for the loop.
        await asyncio.to_thread(make_dirs)
        instance.made_files.update(termination_files)
        for volume in empty_dirs:
            directory = dirs[volume.name]
            if volume.medium == "Memory" and not _is_mount(directory):
                options = "mode=0777" + (f",size={volume.size_limit}" if volume.size_limit else "")
                await asyncio.to_thread(mounts.mount_tmpfs, directory, options)
            # as the kubelet: world-writable, and owned by the fsGroup when there is one
            os.chmod(directory, 0o777 | (0o2000 if fs_group is not None else 0))
            if fs_group is not None:
                os.chown(directory, -1, int(fs_group))
        dirs.update(await self._set_up_volumes(instance, volumes))
        instance.context = podconfigs.PodContext(
            request=instance.request,
            paths=paths,
            owner=self.owner,
            volume_dirs=dirs,
            read_only_volumes=podconfigs.read_only_volumes(volumes),
            gpus=self._gpu_exposures(instance),
        )

    async def _set_up_volumes(
        self, instance: _Instance, volumes: Sequence[podconfigs.Volume]
    ) -> dict[str, Path]:
        """The configMap, secret, downwardAPI, projected and claim volumes,
        tried again with back-off while one cannot be set up (a missing
        object, an unbound claim): the pod waits in ``ContainerCreating``,
        the reason in its containers' messages, as the kubelet's does."""
        if all(isinstance(v, podconfigs.EmptyDir) for v in volumes):
            return {}
        context = podconfigs.PodContext(
            request=instance.request, paths=instance.paths, owner=self.owner
        )
        files = self._volume_files(context)
        retry = backoffs.BackOff(self.pull_backoff)
        waited = False
        while True:
            try:
                dirs = await files.set_up(volumes)
                break
            except volumefiles.VolumeNotReady as e:
                waited = True
                self._volumes_waiting(instance, str(e))
                self._event(instance, "Warning", "FailedMount", str(e))
                await self._back_off(instance, retry.next())
        if waited:
            self._volumes_waiting(instance, "")
        if any(isinstance(v, podconfigs.FileVolume) for v in volumes):
            self._watch_volumes()
        return dirs

    def _volume_files(self, context: podconfigs.PodContext) -> volumefiles.PodVolumes:
        return volumefiles.PodVolumes(
            context,
            self.clock,
            objects=self.objects,
            tokens=self.tokens,
            memory_ready=self._memory_ready,
        )

    async def _memory_ready(self) -> None:
        """Mounts the tmpfs every pod's secret and projected volumes live on,
        unless it is mounted (it outlives ``nodeless up``, as the pods do).
        A stat each time: another provider on this data directory may have
        unmounted it when it held no pod."""
        root = self.data_dir / podconfigs.MEMORY_DIR
        async with self._memory_lock:
            if not _is_mount(root):
                await asyncio.to_thread(_mount_memory_root, root)

    def _volumes_waiting(self, instance: _Instance, message: str) -> None:
        for container in instance.all_containers():
            if container.status.state == "waiting":
                container.status.message = message
        self._set_state(instance, State.PENDING, CONTAINER_CREATING, message)
        self._push(instance)

    def _watch_volumes(self) -> None:
        if self._volume_refresh_task is None and not self._closed:
            self._volume_refresh_task = asyncio.create_task(
                self._refresh_volumes_loop(), name="cri-volume-refresh"
            )

    async def _refresh_volumes_loop(self) -> None:
        """The kubelet's resync of file volumes: every
        ``volume_refresh_interval`` seconds, each running pod's configMap,
        secret, downwardAPI and projected volumes are rewritten where their
        content changed (``..data`` swapped; subPath mounts keep what they
        mounted)."""
        while True:
            await self.clock.sleep(self.volume_refresh_interval)
            for instance in list(self._instances.values()):
                await self._refresh_volumes(instance)
                await asyncio.sleep(0)  # the files are written on the loop: let others in

    async def _refresh_volumes(self, instance: _Instance) -> None:
        context = instance.context
        if (
            context is None
            or not instance.sandbox_id
            or instance.teardown is not None
            or instance.status.state.terminal
        ):
            return
        try:
            found = [
                v
                for v in podconfigs.volumes(instance.request.pod)
                if isinstance(v, podconfigs.FileVolume)
            ]
        except podconfigs.UnsupportedVolume:
            return
        if not found:
            return
        instance_id = instance.request.instance_id
        async with self._volume_locks.setdefault(instance_id, asyncio.Lock()):
            if instance.teardown is not None:
                return
            try:
                changed = await self._volume_files(context).refresh(found)
            except Exception:
                log.exception("refreshing the volumes of %s failed", instance_id)
                return
        if changed:
            log.info("volumes %s of %s updated", ", ".join(changed), instance_id)

    async def _run_sandbox(self, instance: _Instance) -> None:
        request = instance.request
        attempt = 0
        retry = backoffs.BackOff(self.pull_backoff)
        while True:
            config = podconfigs.sandbox_config(
                request,
                instance.paths,
                owner=self.owner,
                cgroup_parent=instance.cgroup.path,
                dns=self.dns,
                created_at=instance.status.created_at,
                attempt=attempt,
                gpus=instance.gpus,
            )
            instance.sandbox_config = config
            try:
                await self._shielded(self._run_sandbox_rpc(instance, config))
                break
            except clients.CriError as e:
                log.warning("sandbox of %s: %s", request.instance_id, e)
                for container in instance.all_containers():
                    container.image_check = None  # asked too long ago by the time it is used
                self._set_state(instance, State.PENDING, FAILED_CREATE_SANDBOX, e.details or str(e))
                self._push(instance)
                attempt += 1
                await self._back_off(instance, retry.next())
        sandbox_id = instance.sandbox_id
        reply = await self._available(functools.partial(self.client.pod_sandbox_status, sandbox_id))
        ip = reply.status.network.ip
        instance.status.ip = ip
        instance.status.started_at = self.clock.now()
        hosts = podconfigs.etc_hosts(request.pod, ip, domain=self.dns.domain)
        # a few hundred bytes: cheaper written here than by a hop to a thread
        instance.paths.etc_hosts.write_text(hosts)
        assert instance.context is not None
        instance.context = dataclasses.replace(
            instance.context, pod_ip=ip, etc_hosts=instance.paths.etc_hosts
        )
        if instance.init_containers:
            for container in instance.containers:
                container.status.reason = POD_INITIALIZING
        # Not pushed yet: with the images present the first container starts
        # at once and its push carries the IP too (one pod status write, not
        # two, as the kubelet's). Whatever may wait (a pull, a back-off) pushes.
        self._settle(instance)

    async def _run_sandbox_rpc(self, instance: _Instance, config: pb.PodSandboxConfig) -> None:
        instance.sandbox_id = await self._gated(
            self.client.run_pod_sandbox(config, runtime_handler=self.runtime_handler)
        )

    async def _gated(self, call: Awaitable[_T]) -> _T:
        """A sandbox set-up, a few at a time."""
        async with self._sandbox_starts:
            return await call

    async def _supervise(self, instance: _Instance, container: _Container) -> int:
        """Runs one container until it ends for good, restarting it as the
        restart policy says; returns its last exit code."""
        while True:
            exited = await self._run_attempt(instance, container)
            code = await self._record_exit(instance, container, exited)
            if not self._restarts(instance, container, code):
                container.done = True
                if not container.init and all(c.done for c in instance.containers):
                    self._conclude_from_containers(instance)
                else:
                    self._settle(instance)
                    self._push(instance)
                return code
            ran = _seconds_between(exited.started_at, exited.finished_at)
            delay = container.crash.next(ran)
            self._enter_crash_loop(instance, container, delay)
            await self.clock.sleep(delay)

    def _restarts(self, instance: _Instance, container: _Container, code: int) -> bool:
        policy = instance.restart_policy
        if container.init:
            return policy != "Never" and code != 0
        if container.killed:  # the kubelet restarts it whatever it exited with
            return policy != "Never"
        return policy == "Always" or (policy == "OnFailure" and code != 0)

    async def _run_attempt(self, instance: _Instance, container: _Container) -> pb.ContainerStatus:
        """One container of the pod from image to exit; returns its final CRI status."""
        resumed, container.resume = container.resume, None
        if resumed is not None:
            if resumed.state == pb.CONTAINER_EXITED:
                return resumed
            if resumed.state == pb.CONTAINER_CREATED:
                await self._start(instance, container)
            return await self._running(instance, container)
        container.killed = False
        image_ref, image = await self._ensure_image(instance, container)
        config = await self._configure(instance, container, image_ref, image)
        await self._create(instance, container, config)
        await self._start(instance, container)
        return await self._running(instance, container)

    async def _running(self, instance: _Instance, container: _Container) -> pb.ContainerStatus:
        """Waits for the container's exit while its probes run."""
        probes = container.probes
        if not probes:
            return await self._wait_exit(container)
        prober = asyncio.create_task(
            self._probe(instance, container, probes), name=f"probe-{container.cri_id}"
        )
        try:
            return await self._wait_exit(container)
        finally:
            prober.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await prober

    # --- probes ---

    async def _probe(
        self, instance: _Instance, container: _Container, probes: Mapping[str, probing.Probe]
    ) -> None:
        """The kubelet's probe workers for one container attempt: startup
        first (liveness and readiness wait for it), then liveness and
        readiness side by side. A failed liveness or startup probe kills the
        container, which then restarts as its restart policy says."""
        try:
            startup = probes.get(probing.STARTUP)
            if startup is not None:
                if not await self._probe_loop(instance, container, startup):
                    return
                container.status.started = True
                container.status.ready = probing.READINESS not in probes
                self._push(instance)
            async with asyncio.TaskGroup() as group:
                for kind in (probing.LIVENESS, probing.READINESS):
                    if kind in probes:
                        group.create_task(self._probe_loop(instance, container, probes[kind]))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("probing %s of %s failed", container.name, instance)

    async def _probe_loop(
        self, instance: _Instance, container: _Container, probe: probing.Probe
    ) -> bool:
        """Probes every period; returns True once a startup probe succeeds,
        False once a liveness or startup probe has failed and the container
        was killed (readiness probes run until cancelled)."""
        outcome = probing.Outcome(probe)
        container_id = container.cri_id
        started = container.status.started_at
        if probe.initial_delay and started is not None:
            elapsed = (self.clock.now() - started).total_seconds()
            await self.clock.sleep(max(0.0, probe.initial_delay - elapsed))

        run_exec = self._exec_runner(container_id)
        while True:
            result = await probing.check(
                probe, pod_ip=instance.status.ip, container=container.spec, exec_runner=run_exec
            )
            if container.cri_id != container_id or container.status.state != "running":
                return False
            if not result.success:
                self._event(
                    instance,
                    "Warning",
                    "Unhealthy",
                    f"{probe.kind} probe failed: {result.message}".rstrip(),
                )
            changed = outcome.add(result)
            if probe.kind == probing.READINESS:
                if changed and container.status.ready != outcome.healthy:
                    container.status.ready = bool(outcome.healthy)
                    self._push(instance)
            elif outcome.healthy is True and probe.kind == probing.STARTUP:
                return True
            elif outcome.healthy is False:
                await self._kill_unhealthy(instance, container, probe)
                return False
            await self.clock.sleep(probe.period)

    async def _kill_unhealthy(
        self, instance: _Instance, container: _Container, probe: probing.Probe
    ) -> None:
        """Stops a container its liveness or startup probe gave up on, with
        the probe's grace period or the pod's."""
        grace = probe.termination_grace
        if grace is None:
            grace = self._grace(instance)
        container.killed = True
        restart = instance.restart_policy != "Never"
        will = "will be restarted" if restart else "will not be restarted"
        self._event(
            instance,
            "Normal",
            "Killing",
            f"Container {container.name} failed {probe.kind.lower()} probe, {will}",
        )
        await self._shielded(self._stop_gracefully(instance, container.cri_id, grace))

    # --- images ---

    async def _ensure_image(
        self, instance: _Instance, container: _Container
    ) -> tuple[str, pb.Image | None]:
        """The image per pull policy, retried with back-off; returns the
        image ID to create the container from and its status."""
        image = container.status.image
        try:
            imagerefs.parse(image)
        except imagerefs.InvalidImageName as e:
            message = f'Failed to apply default image tag "{image}": {e}'
            self._waiting(instance, container, INVALID_IMAGE_NAME, message)
            await asyncio.Future()  # never pullable: waits until the pod is deleted
        policy = imagerefs.pull_policy(container.spec)
        while True:
            present = None
            if policy != imagerefs.PULL_ALWAYS:  # Always pulls whatever is present, as the kubelet
                present = await self._image_status(container, image)
            if present is not None and policy in (
                imagerefs.PULL_NEVER,
                imagerefs.PULL_IF_NOT_PRESENT,
            ):
                container.retry.reset()
                self._event(
                    instance,
                    "Normal",
                    "Pulled",
                    f'Container image "{image}" already present on machine',
                )
                return present.id, present
            if policy == imagerefs.PULL_NEVER:
                message = f'Container image "{image}" is not present with pull policy of Never'
                self._waiting(instance, container, ERR_IMAGE_NEVER_PULL, message)
                self._event(instance, "Warning", "ErrImageNeverPull", message)
                await self.clock.sleep(container.retry.next())
                continue
            self._push(instance)  # the pod's IP is known while the pull runs
            self._event(instance, "Normal", "Pulling", f'Pulling image "{image}"')
            began = self.clock.monotonic()
            try:
                image_id = await self._pull(instance, image)
            except clients.CriError as e:
                delay = container.retry.next()
                detail = e.details or str(e)
                self._waiting(instance, container, ERR_IMAGE_PULL, detail)
                self._event(
                    instance, "Warning", "Failed", f'Failed to pull image "{image}": {detail}'
                )
                self._event(instance, "Warning", "Failed", f"Error: {ERR_IMAGE_PULL}")
                hold = min(PULL_ERROR_HOLD, delay)
                await self.clock.sleep(hold)
                message = f'Back-off pulling image "{image}"'
                self._waiting(instance, container, IMAGE_PULL_BACK_OFF, message)
                self._event(instance, "Normal", "BackOff", message)
                self._event(instance, "Warning", "Failed", f"Error: {IMAGE_PULL_BACK_OFF}")
                await self.clock.sleep(delay - hold)
                continue
            took = _go_seconds(self.clock.monotonic() - began)
            self._event(
                instance,
                "Normal",
                "Pulled",
                f'Successfully pulled image "{image}" in {took} ({took} including waiting)',
            )
            container.retry.reset()
            if container.status.reason in (ERR_IMAGE_PULL, IMAGE_PULL_BACK_OFF):
                self._waiting(instance, container, CONTAINER_CREATING, "")
            return image_id, await self._available(
                functools.partial(self.client.image_status, image_id)
            )

    def _check_images(self, instance: _Instance) -> None:
        """Asks whether the images of the containers that start first are
        present while the sandbox is set up, so the answer is there when
        they are created: a round trip off the path to Running. Later
        containers (after init containers, or restarts) ask when they start,
        as the kubelet does, so that no answer is stale."""
        first = instance.init_containers[:1] or instance.containers
        for container in first:
            if container.done or container.image_check is not None:
                continue
            if imagerefs.pull_policy(container.spec) == imagerefs.PULL_ALWAYS:
                continue
            check = asyncio.create_task(self.client.image_status(container.status.image))
            # read here too: an answer nobody takes (the pod went) is no error
            check.add_done_callback(lambda done: done.cancelled() or done.exception())
            container.image_check = check

    async def _image_status(self, container: _Container, image: str) -> pb.Image | None:
        """The image's status: the answer asked for ahead when there is one."""
        check, container.image_check = container.image_check, None
        if check is not None:
            try:
                return await check
            except clients.CriError:
                pass  # asked again below, waiting while the runtime is away
        return await self._available(functools.partial(self.client.image_status, image))

    async def _pull(self, instance: _Instance, image: str) -> str:
        """Pulls with each matching pull-secret credential in turn (the
        kubelet's order), or anonymously when there is none."""
        auths = await self._credentials(instance, image)
        if not auths:
            return await self.client.pull_image(image, sandbox_config=instance.sandbox_config)
        error: clients.CriError | None = None
        for auth in auths:
            try:
                return await self.client.pull_image(
                    image, auth=auth, sandbox_config=instance.sandbox_config
                )
            except clients.CriError as e:
                error = e
        assert error is not None
        raise error

    async def pull_image(self, image: str, credentials: Sequence[Mapping[str, Any]]) -> str:
        """An ImageCache's pull into containerd's content store, with each
        matching credential in turn (then anonymously when none matches)."""
        await self._ensure_started()
        try:
            reference = imagerefs.normalize(image)
        except imagerefs.InvalidImageName as e:
            raise base.ProviderError(str(e)) from None
        auths: list[pb.AuthConfig | None] = list(
            registryauth.credentials_for(reference, [dict(c) for c in credentials])
        )
        error: clients.CriError | None = None
        for auth in auths or [None]:
            try:
                return await self.client.pull_image(reference, auth=auth)
            except clients.CriError as e:
                error = e
        assert error is not None
        raise base.ProviderError(f"pulling {image}: {error.details or error}")

    async def remove_image(self, image: str) -> bool:
        """Removes the image from containerd unless a container of a live
        instance of this provider names it."""
        await self._ensure_started()
        try:
            reference = imagerefs.normalize(image)
        except imagerefs.InvalidImageName:
            return False
        for instance in self._instances.values():
            if instance.status.state.terminal:
                continue
            for container in instance.all_containers():
                with contextlib.suppress(imagerefs.InvalidImageName):
                    if imagerefs.normalize(str(container.spec.get("image") or "")) == reference:
                        return False
        try:
            if await self.client.image_status(reference) is None:
                return False
            await self.client.remove_image(reference)
        except clients.CriError as e:
            raise base.ProviderError(f"removing {image}: {e.details or e}") from e
        return True

    async def _credentials(self, instance: _Instance, image: str) -> Sequence[pb.AuthConfig]:
        secrets = (instance.request.pod.get("spec") or {}).get("imagePullSecrets") or []
        names = [str(s.get("name")) for s in secrets if isinstance(s, Mapping) and s.get("name")]
        if not names or self.credentials is None:
            return []
        try:
            configs = await self.credentials(instance.request.namespace, names)
        except Exception:
            log.exception("pull secrets of %s could not be read", instance.request.pod_name)
            return []
        return registryauth.credentials_for(image, configs)

    # --- containers ---

    async def _configure(
        self,
        instance: _Instance,
        container: _Container,
        image_ref: str,
        image: pb.Image | None,
    ) -> pb.ContainerConfig:
        assert instance.context is not None
        attempt = container.next_attempt
        termination = instance.paths.termination_file(container.name, attempt)
        while True:
            try:
                objects = await self._fetch_objects(instance, container)
                context = dataclasses.replace(
                    instance.context,
                    objects=objects,
                    service_env=await self._service_env(instance),
                )
                config = podconfigs.container_config(
                    context,
                    container.spec,
                    init=container.init,
                    attempt=attempt,
                    image_ref=image_ref,
                    image=image,
                    termination_file=termination,
                )
                break
            except podconfigs.ConfigError as e:
                self._waiting(instance, container, e.reason, str(e))
                self._event(instance, "Warning", "Failed", f"Error: {e}")
                await self.clock.sleep(container.retry.next())
        container.retry.reset()
        if termination in instance.made_files:
            instance.made_files.discard(termination)
        else:
            _create_termination_file(termination)  # an empty file: no hop to a thread
        return config

    async def _service_env(self, instance: _Instance) -> dict[str, str]:
        """The Service variables as of this container's start, as the kubelet
        gives them (later Services do not appear in running containers)."""
        if self.services is None:
            return {}
        namespace = instance.request.namespace
        links = (instance.request.pod.get("spec") or {}).get(
            "enableServiceLinks", True
        ) is not False
        found: list[dict[str, Any]] = []
        for wanted in {"default", namespace} if links else {"default"}:
            try:
                found += await self.services(wanted)
            except Exception:
                log.exception("listing the Services of %s failed", wanted)
        return podconfigs.service_env(found, namespace, links)

    async def _fetch_objects(
        self, instance: _Instance, container: _Container
    ) -> dict[tuple[str, str], dict[str, Any] | None]:
        wanted = podconfigs.referenced_objects(container.spec)
        found: dict[tuple[str, str], dict[str, Any] | None] = {}
        for kind, name in wanted:
            obj = None
            if self.objects is not None:
                try:
                    obj = await self.objects(kind, instance.request.namespace, name)
                except Exception:
                    log.exception("reading %s %s failed", kind, name)
            found[(kind, name)] = obj
        return found

    async def _create(
        self, instance: _Instance, container: _Container, config: pb.ContainerConfig
    ) -> None:
        assert instance.sandbox_config is not None
        while True:
            try:
                await self._shielded(self._create_rpc(instance, container, config))
                break
            except clients.CriError as e:
                self._waiting(instance, container, CREATE_CONTAINER_ERROR, e.details or str(e))
                self._event(instance, "Warning", "Failed", f"Error: {e.details or e}")
                await self.clock.sleep(container.retry.next())
        container.retry.reset()
        self._event(instance, "Normal", "Created", f"Created container: {container.name}")
        await self._prune(instance, container)

    async def _create_rpc(
        self, instance: _Instance, container: _Container, config: pb.ContainerConfig
    ) -> None:
        assert instance.sandbox_config is not None
        container_id = await self.client.create_container(
            instance.sandbox_id, config, instance.sandbox_config
        )
        # the restart count is the attempt: it moves when the container is
        # created, as the kubelet's (read from the runtime) does
        container.attempt = config.metadata.attempt
        container.next_attempt = container.attempt + 1
        container.status.restart_count = container.attempt
        if container.status.state == "waiting":
            container.status.reason, container.status.message = CONTAINER_CREATING, ""
        container.cri_id = container_id
        container.cri_ids[container.attempt] = container_id

    async def _prune(self, instance: _Instance, container: _Container) -> None:
        """Keeps the latest container and the one before it (for ``logs
        --previous``), as the kubelet's garbage collection does."""
        for attempt in sorted(a for a in container.cri_ids if a < container.attempt - 1):
            old = container.cri_ids.pop(attempt)
            with contextlib.suppress(clients.CriError):
                await self.client.remove_container(old)
            log_file = instance.paths.log_file(container.name, attempt)
            for path in (
                log_file,
                *logfiles.rotated(log_file),
                instance.paths.termination_file(container.name, attempt),
            ):
                with contextlib.suppress(OSError):
                    path.unlink()

    async def _start(self, instance: _Instance, container: _Container) -> None:
        try:
            await self._shielded(self.client.start_container(container.cri_id))
        except clients.CriError as e:
            # the container is there and exited (StartError, 128): the exit
            # is read like any other
            log.info("container %s of %s did not start: %s", container.name, instance, e)
            self._event(instance, "Warning", "Failed", f"Error: {e.details or e}")
            return
        try:
            status = (await self.client.container_status(container.cri_id)).status
        except clients.CriError:
            return  # running or not, waiting for its exit finds out
        if status.state == pb.CONTAINER_RUNNING:
            self._event(instance, "Normal", "Started", f"Started container {container.name}")
            self._mark_running(container, status)
            self._settle(instance)
            self._push(instance)
            await self._post_start(instance, container)

    async def _post_start(self, instance: _Instance, container: _Container) -> None:
        """Runs the postStart hook; the container's probes wait for it, and
        when it fails the container is killed and restarts as its policy says."""
        hook = None if container.init else hooks.hook(container.spec, hooks.POST_START)
        if hook is None:
            return
        result = await hooks.run(
            hook,
            pod_ip=instance.status.ip,
            container=container.spec,
            exec_runner=self._exec_runner(container.cri_id),
            clock=self.clock,
            describe=self._describe(instance, container),
        )
        if result.success:
            return
        self._event(instance, "Warning", "FailedPostStartHook", result.message)
        self._event(instance, "Normal", "Killing", "FailedPostStartHook")
        container.killed = True
        await self._shielded(
            self._stop_gracefully(instance, container.cri_id, self._grace(instance))
        )

    def _exec_runner(self, container_id: str) -> probing.ExecRunner:
        """Runs commands in the container through CRI ``ExecSync`` (for
        exec probes and hooks)."""

        async def run_exec(command: Sequence[str], timeout: int) -> tuple[int, bytes]:
            try:
                reply = await self.client.exec_sync(
                    container_id,
                    command,
                    exec_timeout=timeout,
                    timeout=timeout + 5 if timeout else math.inf,
                )
            except clients.CriError as e:
                if e.code == grpc.StatusCode.DEADLINE_EXCEEDED:
                    raise TimeoutError from None
                return -1, e.details.encode()
            return int(reply.exit_code), bytes(reply.stdout) + bytes(reply.stderr)

        return run_exec

    @staticmethod
    def _describe(instance: _Instance, container: _Container) -> str:
        status = instance.status
        return (
            f'Container "{container.name}" in Pod '
            f'"{status.pod_name}_{status.namespace}({status.pod_uid})"'
        )

    @staticmethod
    def _grace(instance: _Instance) -> int:
        spec = instance.request.pod.get("spec") or {}
        return int(spec.get("terminationGracePeriodSeconds", 30))

    def _mark_running(self, container: _Container, cri: pb.ContainerStatus) -> None:
        status = container.status
        status.state, status.reason, status.message = "running", "", ""
        status.exit_code, status.finished_at = None, None
        status.started_at = _from_ns(cri.started_at) or self.clock.now()
        # with probes, started and ready wait for the startup and readiness probes
        probes = container.probes
        status.started = probing.STARTUP not in probes
        gated = probing.STARTUP in probes or probing.READINESS in probes
        status.ready = not container.init and not gated
        status.container_id = f"{self._runtime_name}://{cri.id}"
        status.image_id = cri.image_ref or status.image_id
        container.ever_started = True

    async def _wait_exit(self, container: _Container) -> pb.ContainerStatus:
        """Until the relist loop sees the container exited (or gone)."""
        container_id = container.cri_id
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._exit_waiters[container_id] = future
        self._wake.set()
        try:
            await future
        finally:
            if self._exit_waiters.get(container_id) is future:
                del self._exit_waiters[container_id]
        try:
            return await self._available(functools.partial(self._container_status, container_id))
        except clients.CriError as e:
            if not e.not_found:
                raise
            return pb.ContainerStatus(
                id=container_id,
                state=pb.CONTAINER_EXITED,
                exit_code=EXIT_STATUS_UNKNOWN,
                reason=STATUS_UNKNOWN,
                message="The container could not be located in the runtime",
            )

    async def _record_exit(
        self, instance: _Instance, container: _Container, cri: pb.ContainerStatus
    ) -> int:
        code = int(cri.exit_code)
        status = container.status
        message = await self._termination_message(container, cri, code) or cri.message
        reason = cri.reason or ("Completed" if code == 0 else "Error")
        if code == EXIT_SIGKILL:
            # containerd 1.6 can lose the OOM event and say "Error": the pod
            # cgroup's kill counter tells on cgroup v2 (read even when the
            # runtime told, so that a later exit is not taken for this kill;
            # compared here, not in the thread, as containers exit together),
            # the kernel's log on v1 (the counter there is the container's
            # own, removed with it)
            kills = await asyncio.to_thread(instance.cgroup.oom_kills)
            if kills is not None:
                if kills > instance.oom_kills:
                    reason = OOM_KILLED
                instance.oom_kills = max(instance.oom_kills, kills)
            elif reason != OOM_KILLED and await asyncio.to_thread(oomkills.logged_for, cri.id):
                reason = OOM_KILLED
        status.state = "terminated"
        status.exit_code = code
        status.reason = reason
        status.message = message
        status.started_at = _from_ns(cri.started_at) or status.started_at
        status.finished_at = _from_ns(cri.finished_at) or self.clock.now()
        status.started = False
        status.ready = container.init and code == 0
        if cri.id:
            status.container_id = f"{self._runtime_name}://{cri.id}"
        status.image_id = cri.image_ref or status.image_id
        container.ever_started = True
        return code

    async def _termination_message(
        self, container: _Container, cri: pb.ContainerStatus, code: int
    ) -> str:
        """The file at terminationMessagePath, or with
        ``FallbackToLogsOnError`` the log's tail after a failure."""
        path = cri.annotations.get(podconfigs.ANNOTATION_TERMINATION_FILE)
        text = ""
        if path:
            # at most 4 KiB: no hop to a thread
            text = _read_head(Path(path), MAX_TERMINATION_MESSAGE)
        policy = container.spec.get("terminationMessagePolicy") or "File"
        if not text and policy == "FallbackToLogsOnError" and code != 0 and cri.log_path:
            data = await asyncio.to_thread(_read_head, Path(cri.log_path), 1 << 24)
            records = logfiles.parse(data.encode())[-FALLBACK_LOG_LINES:]
            text = logfiles.render(records).decode(errors="replace")[-FALLBACK_LOG_BYTES:]
        return text

    def _enter_crash_loop(self, instance: _Instance, container: _Container, delay: float) -> None:
        status = container.status
        status.last_terminated = {
            "exitCode": status.exit_code,
            "reason": status.reason,
            "message": status.message or None,
            "startedAt": _rfc3339(status.started_at),
            "finishedAt": _rfc3339(status.finished_at),
            "containerID": status.container_id,
        }
        if status.last_terminated["message"] is None:
            del status.last_terminated["message"]
        self._event(
            instance,
            "Warning",
            "BackOff",
            f"Back-off restarting failed container {status.name} in pod "
            f"{instance.status.pod_name}_{instance.status.namespace}({instance.status.pod_uid})",
        )
        status.state, status.reason = "waiting", CRASH_LOOP_BACK_OFF
        status.message = (
            f"back-off {backoffs.go_duration(delay)} restarting failed "
            f"container={status.name} pod={instance.status.pod_name}_"
            f"{instance.status.namespace}({instance.status.pod_uid})"
        )
        status.exit_code = None
        status.started_at = status.finished_at = None
        status.ready = status.started = False
        self._settle(instance)
        self._push(instance)

    def _waiting(
        self, instance: _Instance, container: _Container, reason: str, message: str
    ) -> None:
        status = container.status
        status.state, status.reason, status.message = "waiting", reason, message
        status.ready = status.started = False
        status.exit_code = None
        status.started_at = status.finished_at = None
        self._settle(instance)
        self._push(instance)

    # --- instance state ---

    def _settle(self, instance: _Instance) -> None:
        """The instance's state from its containers, unless it is ending."""
        state = instance.status.state
        if state.terminal or state is State.TERMINATING:
            return
        if not instance.status.initialized:
            trouble = next(
                (c for c in instance.init_containers if c.status.reason not in _QUIET_REASONS),
                None,
            )
            if trouble is not None:
                self._set_state(
                    instance, State.PENDING, trouble.status.reason, trouble.status.message
                )
            elif instance.sandbox_id:
                self._set_state(instance, State.PENDING, POD_INITIALIZING, "")
            else:  # keeps a sandbox failure's reason until the sandbox is up
                status = instance.status
                self._set_state(instance, State.PENDING, status.reason, status.message)
            return
        fresh = [c for c in instance.containers if not c.ever_started]
        if fresh:
            trouble = next((c for c in fresh if c.status.reason not in _QUIET_REASONS), None)
            if trouble is not None:
                self._set_state(
                    instance, State.PENDING, trouble.status.reason, trouble.status.message
                )
            else:
                self._set_state(instance, State.PENDING, CONTAINER_CREATING, "")
            return
        backing_off = [c for c in instance.containers if c.status.reason == CRASH_LOOP_BACK_OFF]
        if backing_off:
            message = backing_off[0].status.message
            self._set_state(instance, State.RESTARTING, CRASH_LOOP_BACK_OFF, message)
        else:
            self._set_state(instance, State.RUNNING, "", "")

    def _conclude_from_containers(self, instance: _Instance) -> None:
        """Every container has ended for good: the instance ended when the
        last one did (the same moment a provider adopting it later reads)."""
        failed = [c.status for c in instance.containers if c.status.exit_code != 0]
        ended = [c.status.finished_at for c in instance.containers if c.status.finished_at]
        at = max(ended) if ended else None
        if failed:
            message = f"container {failed[0].name} exited with code {failed[0].exit_code}"
            self._conclude(instance, State.FAILED, "Error", message, at)
        else:
            self._conclude(instance, State.SUCCEEDED, "Completed", "", at)

    def _conclude(
        self,
        instance: _Instance,
        state: State,
        reason: str,
        message: str,
        at: datetime.datetime | None = None,
    ) -> None:
        """A terminal state: capacity is freed and the status pushed."""
        if instance.status.state.terminal:
            return
        self._release(instance)
        self._set_state(instance, state, reason, message)
        instance.status.finished_at = at or self.clock.now()
        for container in instance.containers:
            container.status.ready = False
        self._push(instance)

    @staticmethod
    def _set_state(instance: _Instance, state: State, reason: str, message: str) -> None:
        instance.status.state = state
        instance.status.reason = reason
        instance.status.message = message

    def _push(self, instance: _Instance) -> None:
        if self._closed:
            return
        snapshot = _copy_status(instance.status)
        if snapshot == instance.last_pushed:
            return
        instance.last_pushed = snapshot
        for callback in self._callbacks:
            try:
                callback(_copy_status(snapshot))
            except Exception:
                log.exception("status callback failed for %s", instance.request.instance_id)

    def _event(self, instance: _Instance, event_type: str, reason: str, message: str) -> None:
        if self._closed or not self._event_callbacks:
            return
        status = instance.status
        event = base.InstanceEvent(
            instance.request.instance_id,
            status.namespace,
            status.pod_name,
            status.pod_uid,
            event_type,
            reason,
            message,
        )
        for callback in self._event_callbacks:
            try:
                callback(event)
            except Exception:
                log.exception("event callback failed for %s", instance.request.instance_id)

    # --- stopping and removing ---

    async def _stop_sandbox(self, instance: _Instance) -> None:
        """A finished pod's sandbox stops (its IP and pause process are
        released); containers and logs stay until it is deleted."""
        if not instance.sandbox_id:
            return
        try:
            await self.client.stop_pod_sandbox(instance.sandbox_id)
        except clients.CriError as e:
            if not e.not_found:
                log.warning("stopping the sandbox of %s: %s", instance.request.instance_id, e)

    async def _sandboxes_of(self, instance: _Instance) -> Sequence[str]:
        """The instance's sandbox and any other the runtime has for it (one
        whose creation was interrupted)."""
        found: list[str] = [instance.sandbox_id] if instance.sandbox_id else []
        labels = {
            podconfigs.LABEL_INSTANCE: instance.request.instance_id,
            podconfigs.LABEL_OWNER: self.owner,
        }
        for sandbox in await self.client.list_pod_sandbox(labels=labels):
            if sandbox.id not in found:
                found.append(sandbox.id)
        return found

    async def _stop_running(self, instance: _Instance, grace: int) -> None:
        sandboxes = await self._sandboxes_of(instance)
        stops = []
        for sandbox_id in sandboxes:
            for listed in await self.client.list_containers(pod_sandbox_id=sandbox_id):
                if listed.state != pb.CONTAINER_EXITED:
                    stops.append(self._stop_gracefully(instance, listed.id, grace))
        await asyncio.gather(*stops)

    async def _stop_gracefully(self, instance: _Instance, container_id: str, grace: int) -> None:
        """The kubelet's kill: the container's preStop hook first (once, cut
        short by the grace period), then SIGTERM with what is left of the
        grace period (at least 2 seconds after a hook), then SIGKILL."""
        container = next((c for c in instance.all_containers() if c.cri_id == container_id), None)
        hook = None
        if container is not None and not container.init:
            hook = hooks.hook(container.spec, hooks.PRE_STOP)
        if hook is not None and grace > 0 and container_id not in instance.pre_stopped:
            assert container is not None
            instance.pre_stopped.add(container_id)
            began = self.clock.monotonic()
            try:
                async with asyncio.timeout(grace):
                    result = await hooks.run(
                        hook,
                        pod_ip=instance.status.ip,
                        container=container.spec,
                        exec_runner=self._exec_runner(container_id),
                        clock=self.clock,
                        describe=self._describe(instance, container),
                    )
                if not result.success:
                    self._event(instance, "Warning", "FailedPreStopHook", result.message)
            except TimeoutError:
                log.info("preStop hook of %s outlived the grace period", container_id)
            spent = self.clock.monotonic() - began
            grace = max(MIN_GRACE_AFTER_PRE_STOP, grace - math.ceil(spent))
        await self._stop_container(container_id, grace)

    async def _stop_container(self, container_id: str, grace: int) -> None:
        try:
            await self.client.stop_container(container_id, grace)
        except clients.CriError as e:
            if not e.not_found:
                log.warning("stopping container %s: %s", container_id, e)

    async def _teardown(self, instance: _Instance, grace: int, *, report: bool) -> None:
        """Stops what runs (SIGTERM, SIGKILL after ``grace``), records the
        final container states, removes the sandbox, cgroup and files, then
        (``report``) pushes the final status and forgets the instance."""
        task = instance.task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait([task])
        instance_id = instance.request.instance_id
        while True:
            try:
                # every pod's stop signal at once, as the kubelet's pod workers
                # send them: a grace period runs from the delete, not from a turn
                await self._stop_running(instance, grace)
                async with self._teardown_slots:
                    if report:
                        await self._record_stopped(instance)
                    for sandbox_id in await self._sandboxes_of(instance):
                        await self.client.stop_and_remove_pod_sandbox(sandbox_id)
                    await self._remove_files(instance)
                break
            except clients.CriError as e:
                # the runtime is down or failing: keep trying, the pod must go
                log.warning("removing instance %s: %s; retrying", instance_id, e)
                await asyncio.sleep(1.0)
        if report:
            app = [c.status for c in instance.containers]
            if app and all(s.state == "terminated" and s.exit_code == 0 for s in app):
                self._conclude(instance, State.SUCCEEDED, "Completed", "deleted")
            else:
                self._conclude(instance, State.FAILED, "Error", "deleted")
        self._release(instance)
        if self._instances.get(instance_id) is instance:
            del self._instances[instance_id]

    async def _record_stopped(self, instance: _Instance) -> None:
        for container in instance.all_containers():
            if container.status.state != "running" or not container.cri_id:
                continue
            try:
                cri = (await self.client.container_status(container.cri_id)).status
            except clients.CriError as e:
                if not e.not_found:
                    raise
                continue
            if cri.state == pb.CONTAINER_EXITED:
                await self._record_exit(instance, container, cri)

    async def _remove_files(self, instance: _Instance) -> None:
        # a volume refresh in progress ends first; none starts once the teardown has
        lock = self._volume_locks.pop(instance.request.instance_id, None)
        try:
            if lock is not None:
                async with lock:
                    pass
            await self._remove_files_of(instance)
        except OSError as e:
            # the pod itself is gone; what is left on disk is only logged
            log.warning("removing files of %s: %s", instance.request.instance_id, e)

    async def _remove_files_of(self, instance: _Instance) -> None:
        paths = instance.paths

        def remove() -> list[Path]:
            # one hop to a thread for all: rmdir of a cgroup can wait on the kernel
            _remove_pod_dir(paths.pod_dir, paths.memory_dir)
            shutil.rmtree(paths.log_dir, True)
            return instance.cgroup.remove()

        busy = await asyncio.to_thread(remove)
        if busy:
            log.warning("pod cgroup directories still busy: %s", busy)

    # --- the relist loop ---

    async def _relist_loop(self) -> None:
        """Wakes supervisors whose containers have exited: one list of this
        provider's containers per interval, while any is awaited."""
        while True:
            if not self._exit_waiters:
                self._wake.clear()
                await self._wake.wait()
            try:
                listed = await self.client.list_containers(
                    labels={podconfigs.LABEL_OWNER: self.owner}
                )
            except clients.CriError as e:
                log.warning("listing containers failed: %s", e)
                await asyncio.sleep(max(self.relist_interval, 1.0))
                continue
            except Exception:
                # whatever it was, the supervisors depend on this loop: keep going
                log.exception("listing containers failed")
                await asyncio.sleep(max(self.relist_interval, 1.0))
                continue
            states = {c.id: c.state for c in listed}
            for container_id, future in list(self._exit_waiters.items()):
                state = states.get(container_id)
                if (state is None or state == pb.CONTAINER_EXITED) and not future.done():
                    future.set_result(None)
            await asyncio.sleep(self.relist_interval)

    # --- log rotation ---

    async def _log_rotation_loop(self) -> None:
        """Every interval, rotates the logs of running containers that have
        grown past ``log_max_size`` (the kubelet's log manager)."""
        while True:
            await asyncio.sleep(self.log_check_interval)
            try:
                await self.rotate_logs()
            except Exception:
                log.exception("rotating container logs failed")

    async def rotate_logs(self) -> int:
        """One round of rotation; returns how many logs were rotated."""
        running = [
            (container.cri_id, instance.paths.log_file(container.name, container.attempt))
            for instance in list(self._instances.values())
            for container in instance.all_containers()
            if container.status.state == "running" and container.cri_id
        ]
        # Every log's size in one thread hop: a hop per container cost the
        # loop more than the stats did (hundreds of pods, every interval).
        grown = await asyncio.to_thread(logfiles.over_limit_of, running, self.log_max_size)
        count = 0
        for cri_id, path in grown:
            renamed = await asyncio.to_thread(
                logfiles.rotate, path, self.clock.now(), self.log_max_files
            )
            try:
                await self.client.reopen_container_log(cri_id)
            except clients.CriError as e:
                log.warning("reopening the log of %s: %s", cri_id, e)
                await asyncio.to_thread(logfiles.unrotate, path, renamed)
                continue
            count += 1
        return count

    # --- adoption after a restart ---

    async def _recover(self) -> None:
        """Rebuilds every instance of this provider from the runtime."""
        version = await self.client.version()
        self._runtime_name = version.runtime_name or self._runtime_name
        self._use_cdi = gpudevices.cdi_supported(self._runtime_name, version.runtime_version)
        labels = {podconfigs.LABEL_OWNER: self.owner}
        sandboxes = sorted(
            await self.client.list_pod_sandbox(labels=labels), key=lambda s: s.created_at
        )
        containers: dict[str, list[pb.Container]] = {}
        for listed in await self.client.list_containers(labels=labels):
            containers.setdefault(listed.pod_sandbox_id, []).append(listed)
        for sandbox in sandboxes:
            instance_id = sandbox.labels.get(podconfigs.LABEL_INSTANCE, "")
            if not instance_id or instance_id in self._instances:
                continue
            try:
                request = podconfigs.decode_request(
                    sandbox.annotations.get(podconfigs.ANNOTATION_REQUEST, "")
                )
                instance = self._build(request)
            except (ValueError, TypeError, base.ProviderError) as e:
                log.warning(
                    "sandbox %s is not an instance this provider can adopt: %s", sandbox.id, e
                )
                continue
            await self._restore(instance, sandbox, containers.get(sandbox.id, []))
            log.info(
                "adopted instance %s (%s/%s): %s",
                instance_id,
                request.namespace,
                request.pod_name,
                instance.status.state.value,
            )
        # a sandbox that could not be adopted still runs: its files stay
        await self._sweep_orphans({s.metadata.uid for s in sandboxes})

    async def _sweep_orphans(self, sandbox_uids: set[str]) -> None:
        """Removes what pods no instance owns left under the data directory:
        their volumes (unmounted first), hosts files, logs and pod cgroups.
        A provider killed between setting a pod up and creating its sandbox,
        or between removing the sandbox and its files, leaves these, and no
        adoption claims them (the kubelet's ``cleanupOrphanedPodDirs``). Runs
        before any instance is created, so nothing in progress is swept."""
        known = {instance.paths.uid for instance in self._instances.values()} | sandbox_uids

        def orphans(parent: Path, uid_of: Callable[[str], str]) -> list[Path]:
            try:
                entries = list(parent.iterdir())
            except FileNotFoundError:
                return []
            return [e for e in entries if e.is_dir() and uid_of(e.name) not in known]

        for pod_dir in await asyncio.to_thread(orphans, self.data_dir / "pods", str):
            uid = pod_dir.name
            log.info("removing the files of pod %s: no instance owns them", uid)
            memory_dir = self.data_dir / podconfigs.MEMORY_DIR / uid
            if not await asyncio.to_thread(_remove_pod_dir, pod_dir, memory_dir):
                continue
            cgroup = cgroups.PodCgroup.for_pod(self.cgroup_root, uid)
            if busy := await asyncio.to_thread(cgroup.remove, attempts=1):
                log.warning("cgroup of orphaned pod %s still busy: %s", uid, busy)
        # logs/<namespace>_<name>_<uid>
        for log_dir in await asyncio.to_thread(
            orphans, self.data_dir / "logs", lambda name: name.rpartition("_")[2]
        ):
            log.info("removing the logs %s: no instance owns them", log_dir.name)
            await asyncio.to_thread(shutil.rmtree, log_dir, True)
        # memory/<uid>: a pod's secrets, when it went between the two removals
        for memory_dir in await asyncio.to_thread(
            orphans, self.data_dir / podconfigs.MEMORY_DIR, str
        ):
            log.info("removing the secrets of pod %s: no instance owns them", memory_dir.name)
            await asyncio.to_thread(shutil.rmtree, memory_dir, True)

    async def _restore(
        self, instance: _Instance, sandbox: pb.PodSandbox, listed: Sequence[pb.Container]
    ) -> None:
        request = instance.request
        instance.sandbox_id = sandbox.id
        kills: int | None = await asyncio.to_thread(instance.cgroup.oom_kills)
        instance.oom_kills = kills or 0
        created = sandbox.annotations.get(podconfigs.ANNOTATION_CREATED_AT, "")
        with contextlib.suppress(ValueError):
            instance.status.created_at = datetime.datetime.fromisoformat(created)
        instance.status.started_at = _from_ns(sandbox.created_at)
        sandbox_status = (await self.client.pod_sandbox_status(sandbox.id)).status
        instance.status.ip = sandbox_status.network.ip
        instance.gpus = gpudevices.decode_indices(
            sandbox.annotations.get(gpudevices.ANNOTATION_GPUS, "")
        )
        instance.sandbox_config = podconfigs.sandbox_config(
            request,
            instance.paths,
            owner=self.owner,
            cgroup_parent=instance.cgroup.path,
            dns=self.dns,
            created_at=instance.status.created_at,
            attempt=sandbox.metadata.attempt,
            gpus=instance.gpus,
        )
        try:
            volumes = podconfigs.volumes(request.pod)
        except podconfigs.UnsupportedVolume:
            volumes = []
        hosts = instance.paths.etc_hosts
        instance.context = podconfigs.PodContext(
            request=request,
            paths=instance.paths,
            owner=self.owner,
            pod_ip=instance.status.ip,
            volume_dirs={v.name: _adopted_volume_dir(instance.paths, v) for v in volumes},
            read_only_volumes=podconfigs.read_only_volumes(volumes),
            etc_hosts=hosts if hosts.exists() else None,
            gpus=self._gpu_exposures(instance),
        )
        if any(isinstance(v, podconfigs.FileVolume) for v in volumes):
            self._watch_volumes()
        for container in instance.all_containers():
            mine = sorted(
                (
                    c
                    for c in listed
                    if c.labels.get(podconfigs.LABEL_CONTAINER_NAME) == container.name
                ),
                key=lambda c: c.metadata.attempt,
            )
            if mine:
                await self._restore_container(instance, container, mine)
        init_done = all(
            c.resume is not None
            and c.resume.state == pb.CONTAINER_EXITED
            and c.resume.exit_code == 0
            for c in instance.init_containers
        )
        if init_done or any(c.cri_ids for c in instance.containers):
            instance.status.initialized = True
            for container in instance.init_containers:
                container.done, container.resume = True, None
                container.status.ready = True
        ready = sandbox.state == pb.SANDBOX_READY
        self._instances[request.instance_id] = instance
        app = instance.containers
        finished = instance.status.initialized and all(
            c.resume is not None
            and c.resume.state == pb.CONTAINER_EXITED
            and not self._restarts(instance, c, int(c.resume.exit_code))
            for c in app
        )
        if not ready and finished:
            for container in app:
                assert container.resume is not None
                await self._record_exit(instance, container, container.resume)
                container.resume, container.done = None, True
            self._conclude_quietly(instance)
            return
        failed_init = next(
            (
                c
                for c in instance.init_containers
                if c.resume is not None
                and c.resume.state == pb.CONTAINER_EXITED
                and not self._restarts(instance, c, int(c.resume.exit_code))
                and c.resume.exit_code != 0
            ),
            None,
        )
        if not ready and failed_init is not None:
            assert failed_init.resume is not None
            code = await self._record_exit(instance, failed_init, failed_init.resume)
            message = f"init container {failed_init.name} exited with code {code}"
            self._set_state(instance, State.FAILED, "Error", message)
            instance.status.finished_at = failed_init.status.finished_at or self.clock.now()
            instance.last_pushed = _copy_status(instance.status)
            return
        if not ready:
            self._set_state(instance, State.FAILED, SANDBOX_LOST, _SANDBOX_LOST_MESSAGE)
            instance.status.finished_at = self.clock.now()
            instance.last_pushed = _copy_status(instance.status)
            return
        self._gpus.restore(request.instance_id, instance.gpus)
        self._admit(instance)
        self._settle(instance)
        instance.last_pushed = _copy_status(instance.status)
        instance.task = asyncio.create_task(
            self._lifecycle(instance), name=f"cri-{request.instance_id}"
        )

    def _conclude_quietly(self, instance: _Instance) -> None:
        """A terminal state found on adoption: nothing changed, nothing to push."""
        failed = [c.status for c in instance.containers if c.status.exit_code != 0]
        if failed:
            message = f"container {failed[0].name} exited with code {failed[0].exit_code}"
            self._set_state(instance, State.FAILED, "Error", message)
        else:
            self._set_state(instance, State.SUCCEEDED, "Completed", "")
        finished = [c.status.finished_at for c in instance.containers if c.status.finished_at]
        instance.status.finished_at = max(finished) if finished else self.clock.now()
        instance.last_pushed = _copy_status(instance.status)

    async def _restore_container(
        self, instance: _Instance, container: _Container, mine: Sequence[pb.Container]
    ) -> None:
        latest = mine[-1]
        container.cri_ids = {c.metadata.attempt: c.id for c in mine}
        container.attempt = latest.metadata.attempt
        container.next_attempt = container.attempt + 1
        container.cri_id = latest.id
        container.status.restart_count = latest.metadata.attempt
        container.crash.resume(latest.metadata.attempt)
        cri = (await self.client.container_status(latest.id)).status
        container.resume = cri
        # a container created but not started yet (its provider stopped in
        # between) has still run before if this is not its first attempt
        container.ever_started = latest.metadata.attempt > 0
        container.status.container_id = f"{self._runtime_name}://{cri.id}"
        container.status.image_id = cri.image_ref
        if cri.state == pb.CONTAINER_RUNNING:
            self._mark_running(container, cri)
        elif cri.state == pb.CONTAINER_EXITED:
            container.ever_started = True
            status = container.status
            status.state = "terminated"
            status.exit_code = int(cri.exit_code)
            status.reason = cri.reason or ("Completed" if cri.exit_code == 0 else "Error")
            status.started_at = _from_ns(cri.started_at)
            status.finished_at = _from_ns(cri.finished_at)
        if len(mine) > 1:
            try:
                before = (await self.client.container_status(mine[-2].id)).status
            except clients.CriError:
                return
            container.status.last_terminated = {
                "exitCode": int(before.exit_code),
                "reason": before.reason or ("Completed" if before.exit_code == 0 else "Error"),
                "startedAt": _rfc3339(_from_ns(before.started_at)),
                "finishedAt": _rfc3339(_from_ns(before.finished_at)),
                "containerID": f"{self._runtime_name}://{before.id}",
            }

    # --- helpers ---

    async def _container_status(self, container_id: str) -> pb.ContainerStatus:
        return (await self.client.container_status(container_id)).status

    @staticmethod
    async def _available(call: Callable[[], Awaitable[_T]], interval: float = 1.0) -> _T:
        """``call``, retried while the runtime does not answer (containerd
        restarting): pods outlive their runtime, so their supervisors wait
        for it rather than fail the pods."""
        while True:
            try:
                return await call()
            except clients.CriError as e:
                if not e.unavailable:
                    raise
                log.warning("container runtime unavailable (%s); retrying", e)
            await asyncio.sleep(interval)

    @staticmethod
    async def _shielded(coro: Coroutine[Any, Any, _T]) -> _T:
        """Runs an RPC that creates something to its end even when the
        caller is cancelled (the pod is being deleted), so that whatever it
        created is known to the teardown."""
        task = asyncio.ensure_future(coro)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            await asyncio.wait([task])
            raise


_SANDBOX_LOST_MESSAGE = "the pod's sandbox is gone from the container runtime"


async def start_cri_provider(
    data_dir: Path,
    clock: clocks.Clock,
    *,
    pod_cidr: str = containerd.DEFAULT_POD_CIDR,
    external_socket: str | None = None,
    bridge: str = containerd.DEFAULT_BRIDGE,
    preload_images: tuple[str, ...] = (),
    **options: Any,
) -> CriProvider:
    """A started provider on the containerd Nodeless manages under
    ``data_dir/containerd`` (or on the runtime at ``external_socket``), with
    pod files under ``data_dir/cri``. Its ``close`` stops a managed
    containerd without removing pods, so the next start adopts them.

    ``preload_images`` are built from the host's busybox and imported under
    those names (demo images where no registry is reachable). Other keyword
    arguments go to ``CriProvider``. Raises ``containerd.ContainerdError``
    saying why when containerd cannot run here (not root, missing binaries).
    """
    if external_socket:
        runtime = containerd.Containerd.external(external_socket)
    else:
        settings = containerd.ContainerdSettings(
            data_dir / "containerd", pod_cidr=pod_cidr, bridge=bridge
        )
        runtime = containerd.Containerd(settings)
    await runtime.start()
    try:
        if preload_images:
            applets = await asyncio.to_thread(sandboximages.all_applets)
            for ref in preload_images:
                await runtime.ensure_image(sandboximages.BusyboxImage(ref, applets=applets))

        async def stop_runtime() -> None:
            await runtime.stop(remove_pods=False)

        provider = CriProvider(
            runtime.client, data_dir / "cri", clock, on_close=stop_runtime, **options
        )
        await provider.start()
    except BaseException:
        await runtime.stop()
        raise
    return provider


# --- module helpers ---


def _copy_status(status: base.InstanceStatus) -> base.InstanceStatus:
    return dataclasses.replace(
        status,
        init_containers=[_copy_container(c) for c in status.init_containers],
        containers=[_copy_container(c) for c in status.containers],
    )


def _copy_container(status: base.ContainerStatus) -> base.ContainerStatus:
    return dataclasses.replace(
        status,
        last_terminated=dict(status.last_terminated) if status.last_terminated else None,
    )


def _go_seconds(seconds: float) -> str:
    """A duration as Go prints one to the millisecond (``1.234s``, ``523ms``)."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    return f"{seconds:.3f}".rstrip("0").rstrip(".") + "s"


def _from_ns(nanoseconds: int) -> datetime.datetime | None:
    if nanoseconds <= 0:
        return None
    return datetime.datetime.fromtimestamp(nanoseconds / 1e9, datetime.UTC)


def _seconds_between(start_ns: int, end_ns: int) -> float | None:
    if start_ns <= 0 or end_ns <= 0:
        return None
    return max(0.0, (end_ns - start_ns) / 1e9)


def _rfc3339(moment: datetime.datetime | None) -> str | None:
    if moment is None:
        return None
    return times.rfc3339(moment)


def _mount_memory_root(root: Path) -> None:
    """Secret and projected volumes live in memory, as the kubelet keeps
    them: one tmpfs, readable by root alone, a directory per pod."""
    root.mkdir(parents=True, exist_ok=True)
    mounts.mount_tmpfs(root, "mode=0700")


def _unmount_memory_root_if_unused(root: Path) -> None:
    """Unmounts the volumes' tmpfs when no pod has files on it, so a
    stopped ``nodeless up`` with no pods leaves nothing mounted."""
    try:
        if not _is_mount(root) or any(root.iterdir()):
            return
        mounts.unmount(root)
    except OSError as e:
        log.warning("unmounting %s: %s", root, e)


def _create_termination_file(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    path.chmod(0o666)  # writable by a container running as any user


def _read_head(path: Path, limit: int) -> str:
    try:
        with path.open("rb") as f:
            return f.read(limit).decode(errors="replace")
    except OSError:
        return ""


def _remove_pod_dir(pod_dir: Path, memory_dir: Path) -> bool:
    """Unmounts the volumes mounted under a pod's directory, then removes it
    and the pod's directory on the volumes' tmpfs; False, leaving the pod's
    directory, when a volume is still mounted there (rmtree would descend
    into it). Blocks: run it in a thread."""
    for mount in _volume_mounts(pod_dir):
        try:
            mounts.unmount(mount)
        except OSError as e:
            log.warning("unmounting %s: %s", mount, e)
    shutil.rmtree(memory_dir, True)
    if left := _volume_mounts(pod_dir):
        log.warning("not removing %s: still mounted %s", pod_dir, left)
        return False
    shutil.rmtree(pod_dir, True)
    return True


def _adopted_volume_dir(paths: podconfigs.PodPaths, volume: podconfigs.Volume) -> Path:
    """Where an adopted pod's volume is: a pod set up before secrets moved to
    the shared tmpfs keeps its own tmpfs under its directory."""
    if isinstance(volume, podconfigs.FileVolume) and volume.memory:
        own = podconfigs.pod_volume_dir(paths, volume)
        if _is_mount(own):
            return own
    return podconfigs.volume_dir(paths, volume)


def _volume_mounts(pod_dir: Path) -> list[Path]:
    """The volume directories of a pod that are mount points: emptyDirs of
    medium Memory, and the secrets and projections of pods set up before
    those moved to the shared tmpfs. Nothing else is mounted under a pod's
    directory. A stat each, not a read of the mount table, which grows with
    every pod."""
    found: list[Path] = []
    try:
        plugins = [p for p in (pod_dir / "volumes").iterdir() if p.is_dir()]
    except OSError:
        return []
    for plugin in plugins:
        with contextlib.suppress(OSError):
            found.extend(v for v in plugin.iterdir() if not v.is_symlink() and _is_mount(v))
    return found


def _is_mount(path: Path) -> bool:
    # a stat, not a read of the mount table (which grows with every pod)
    return os.path.ismount(path)
