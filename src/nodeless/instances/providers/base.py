"""The provider protocol: what the instance layer asks of a place instances run.

Small on purpose, like virtual-kubelet's: create, delete, get, list, and a push
channel of status changes. Providers that cannot push are wrapped in
``PollingAdapter``. Optional capabilities (logs, exec, attach, port-forward,
stats) are separate protocols a provider may also implement, checked with
``isinstance``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import enum
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

log = logging.getLogger(__name__)

Clock = Callable[[], datetime.datetime]


class InstanceState(enum.StrEnum):
    """The instance state machine of DESIGN.md."""

    SCHEDULING = "Scheduling"
    PENDING = "Pending"  # pulling images, creating the sandbox
    RUNNING = "Running"
    RESTARTING = "Restarting"
    TERMINATING = "Terminating"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    EXPIRED = "Expired"  # spot capacity reclaimed

    @property
    def terminal(self) -> bool:
        return self in (InstanceState.SUCCEEDED, InstanceState.FAILED, InstanceState.EXPIRED)

    @property
    def billed(self) -> bool:
        return self in (
            InstanceState.PENDING,
            InstanceState.RUNNING,
            InstanceState.RESTARTING,
            InstanceState.TERMINATING,
        )


@dataclass(frozen=True)
class InstanceRequest:
    """Everything a provider needs to create one instance for one pod."""

    instance_id: str
    pod: dict[str, Any]
    zone: str
    spec_name: str
    vcpu: float
    memory_gib: float
    gpu_count: int = 0
    capacity_type: str = "on-demand"

    @property
    def namespace(self) -> str:
        return str(self.pod.get("metadata", {}).get("namespace", ""))

    @property
    def pod_name(self) -> str:
        return str(self.pod.get("metadata", {}).get("name", ""))


@dataclass
class ContainerStatus:
    """One container as the provider sees it, in the shape of a pod's containerStatuses."""

    name: str
    image: str
    state: str = "waiting"  # waiting | running | terminated
    reason: str = ""
    message: str = ""
    exit_code: int | None = None
    started_at: datetime.datetime | None = None
    finished_at: datetime.datetime | None = None
    restart_count: int = 0
    ready: bool = False
    started: bool = False
    last_terminated: dict[str, Any] | None = None
    container_id: str = ""
    image_id: str = ""


@dataclass
class InstanceStatus:
    """A snapshot of one instance; the instance manager turns it into pod status."""

    instance_id: str
    namespace: str
    pod_name: str
    pod_uid: str
    zone: str
    state: InstanceState
    reason: str = ""
    message: str = ""
    ip: str = ""
    host_ip: str = ""
    created_at: datetime.datetime | None = None
    started_at: datetime.datetime | None = None
    finished_at: datetime.datetime | None = None
    init_containers: list[ContainerStatus] = field(default_factory=list)
    containers: list[ContainerStatus] = field(default_factory=list)
    initialized: bool = False


class ProviderError(Exception):
    """A provider could not do what was asked; the message is shown to the user."""


class CapacityError(ProviderError):
    """The zone has no capacity left for this instance."""


StatusCallback = Callable[[InstanceStatus], None]


@dataclass(frozen=True)
class InstanceEvent:
    """Something a kubelet reports as an Event of the pod (an image pulled,
    a container started, a probe failed); ``type`` is Normal or Warning."""

    instance_id: str
    namespace: str
    pod_name: str
    pod_uid: str
    type: str
    reason: str
    message: str


EventCallback = Callable[[InstanceEvent], None]


@runtime_checkable
class Provider(Protocol):
    name: str

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def create(self, request: InstanceRequest) -> InstanceStatus:
        """Start creating; idempotent for an instance_id that already exists."""
        ...

    async def delete(self, instance_id: str, grace_period_seconds: int) -> None:
        """Stop (SIGTERM, then SIGKILL after the grace period) and release; idempotent."""
        ...

    async def get(self, instance_id: str) -> InstanceStatus | None: ...

    async def list(self) -> list[InstanceStatus]: ...


@runtime_checkable
class Notifier(Protocol):
    """Providers that push: every status change is passed to the callback."""

    def subscribe(self, callback: StatusCallback) -> None: ...


@runtime_checkable
class EventsCapable(Protocol):
    """Providers that tell what happens inside an instance as a kubelet's
    Events tell it; the instance manager records them on the pod."""

    def subscribe_events(self, callback: EventCallback) -> None: ...


def shown_metadata(pod: Mapping[str, Any]) -> tuple[Any, Any]:
    """What an ``UpdateCapable`` instance shows of its pod: its labels and
    annotations (a change in either is passed on)."""
    meta = pod.get("metadata") or {}
    return meta.get("labels") or {}, meta.get("annotations") or {}


@runtime_checkable
class UpdateCapable(Protocol):
    """Providers that show a running instance what changed in its pod: its
    labels and annotations, which downward API volumes hold. The instance
    manager passes the pod on when they change (virtual-kubelet's
    ``UpdatePod``; the kubelet rewrites those volumes on a pod's update)."""

    async def update(self, instance_id: str, pod: dict[str, Any]) -> None: ...


@runtime_checkable
class LogsCapable(Protocol):
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
    ) -> AsyncIterator[bytes]: ...


@runtime_checkable
class ExecCapable(Protocol):
    """Providers that run commands in, and attach to, their containers.
    Each call answers with the URL of a streaming endpoint that speaks
    Kubernetes' remotecommand protocols (WebSocket ``v4.channel.k8s.io`` or
    SPDY), as a CRI runtime's streaming server does; the API server relays
    the client's stream to it."""

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
    ) -> str: ...

    async def attach(
        self,
        instance_id: str,
        container: str,
        *,
        stdin: bool,
        stdout: bool,
        stderr: bool,
        tty: bool,
    ) -> str: ...


@runtime_checkable
class PortForwardCapable(Protocol):
    """Providers that connect to a port of an instance's network, as the
    kubelet's port-forward does."""

    async def port_forward(
        self, instance_id: str, port: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]: ...


@dataclass(frozen=True)
class ContainerUsage:
    """What one running container uses, as the kubelet's summary API reports
    it and ``metrics.k8s.io`` serves it: CPU in nanocores (billionths of a
    core, averaged over the sample window) and the memory working set (what
    the OOM killer and eviction look at, page cache that can be dropped left
    out)."""

    name: str
    cpu_nano_cores: int
    memory_working_set_bytes: int


@dataclass(frozen=True)
class InstanceUsage:
    """The usage of one instance's running containers, sampled at
    ``timestamp``; CPU is averaged over the ``window_seconds`` before it (the
    ``window`` of a PodMetrics)."""

    instance_id: str
    timestamp: datetime.datetime
    window_seconds: float
    containers: list[ContainerUsage]


@runtime_checkable
class StatsCapable(Protocol):
    """Providers that measure what their containers use (the data behind
    ``kubectl top`` and the HPA's resource metrics).

    One call answers for every instance with a running container, as the
    kubelet's summary API does (and as a CRI runtime's ``ListContainerStats``
    does in one call): the metrics API lists all pods at once, so asking per
    instance would be one runtime call per pod. Containers that do not run
    (waiting, terminated) are left out, instances without one too."""

    async def stats(self) -> list[InstanceUsage]: ...


@runtime_checkable
class ImagePuller(Protocol):
    """Providers that can pull an image ahead of any pod (ImageCache):
    ``credentials`` are docker-config documents (``{"auths": {...}}``) from
    the cache's pull secrets. Returns the reference the runtime resolved the
    image to; raises ``ProviderError`` saying why a pull failed."""

    async def pull_image(self, image: str, credentials: Sequence[Mapping[str, Any]]) -> str: ...

    async def remove_image(self, image: str) -> bool:
        """Removes an image a cache pulled once no cache holds it any more;
        kept (False) while an instance of this provider uses it, as a
        kubelet's image garbage collection keeps images in use, and when it
        is not there. Raises ``ProviderError`` when the runtime refuses."""
        ...


class PollingAdapter:
    """Makes a provider without a push channel look like one that pushes, by
    listing every ``interval`` seconds and reporting what changed."""

    def __init__(self, provider: Provider, interval: float = 2.0) -> None:
        self.provider = provider
        self.interval = interval
        self._callbacks: list[StatusCallback] = []
        self._last: dict[str, InstanceStatus] = {}
        self._task: asyncio.Task[None] | None = None

    def subscribe(self, callback: StatusCallback) -> None:
        self._callbacks.append(callback)

    async def poll_once(self) -> None:
        current = {s.instance_id: s for s in await self.provider.list()}
        for instance_id, status in current.items():
            if self._last.get(instance_id) != status:
                for cb in self._callbacks:
                    cb(status)
        self._last = current

    async def run(self) -> None:
        while True:
            try:
                await self.poll_once()
            except Exception:
                log.exception("polling %s failed", self.provider.name)
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name=f"poll-{self.provider.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
