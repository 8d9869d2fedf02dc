"""An async, typed client of a CRI v1 runtime (containerd), over gRPC.

This is the kubelet's side of the Container Runtime Interface, as much of it
as Nodeless needs: pod sandboxes, containers and their usage, exec and
images. Requests and replies are the protobuf messages of ``runtime_pb2``
(generated from ``runtime.proto``); the client adds defaults a kubelet would
use (a 2-minute request timeout, no timeout for image pulls, 16 MiB messages)
and turns gRPC failures into ``CriError``, which keeps the status code so
callers can treat "not found" as "already gone".

The RPCs are declared here, typed, rather than through generated gRPC stubs:
``METHODS`` lists them and a unit test checks each against the services in
``runtime.proto``.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import grpc
import grpc.aio
from google.protobuf import message

from nodeless.instances.providers.cri import runtime_pb2 as pb

# The CRI API version a kubelet announces in VersionRequest.
KUBELET_API_VERSION = "0.1.0"
# kubelet's --runtime-request-timeout default.
DEFAULT_TIMEOUT = 120.0
# kubelet's maximum gRPC message size towards the runtime.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024

RUNTIME_READY = "RuntimeReady"
NETWORK_READY = "NetworkReady"

Req = TypeVar("Req", bound=message.Message)
Resp = TypeVar("Resp", bound=message.Message)


class CriError(Exception):
    """A CRI call failed; ``code`` is the gRPC status the runtime answered."""

    def __init__(self, method: str, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{method}: {code.name}: {details}")
        self.method = method
        self.code = code
        self.details = details

    @property
    def not_found(self) -> bool:
        return self.code == grpc.StatusCode.NOT_FOUND

    @property
    def unavailable(self) -> bool:
        """The runtime is not answering (not started yet, or gone)."""
        return self.code == grpc.StatusCode.UNAVAILABLE


@dataclass(frozen=True)
class Method(Generic[Req, Resp]):
    """One unary RPC of the CRI v1 API."""

    service: str
    name: str
    request: type[Req]
    response: type[Resp]

    @property
    def path(self) -> str:
        return f"/runtime.v1.{self.service}/{self.name}"


_RT = "RuntimeService"
_IMG = "ImageService"

VERSION = Method(_RT, "Version", pb.VersionRequest, pb.VersionResponse)
STATUS = Method(_RT, "Status", pb.StatusRequest, pb.StatusResponse)
RUN_POD_SANDBOX = Method(_RT, "RunPodSandbox", pb.RunPodSandboxRequest, pb.RunPodSandboxResponse)
STOP_POD_SANDBOX = Method(
    _RT, "StopPodSandbox", pb.StopPodSandboxRequest, pb.StopPodSandboxResponse
)
REMOVE_POD_SANDBOX = Method(
    _RT, "RemovePodSandbox", pb.RemovePodSandboxRequest, pb.RemovePodSandboxResponse
)
POD_SANDBOX_STATUS = Method(
    _RT, "PodSandboxStatus", pb.PodSandboxStatusRequest, pb.PodSandboxStatusResponse
)
LIST_POD_SANDBOX = Method(
    _RT, "ListPodSandbox", pb.ListPodSandboxRequest, pb.ListPodSandboxResponse
)
CREATE_CONTAINER = Method(
    _RT, "CreateContainer", pb.CreateContainerRequest, pb.CreateContainerResponse
)
START_CONTAINER = Method(_RT, "StartContainer", pb.StartContainerRequest, pb.StartContainerResponse)
STOP_CONTAINER = Method(_RT, "StopContainer", pb.StopContainerRequest, pb.StopContainerResponse)
REMOVE_CONTAINER = Method(
    _RT, "RemoveContainer", pb.RemoveContainerRequest, pb.RemoveContainerResponse
)
LIST_CONTAINERS = Method(_RT, "ListContainers", pb.ListContainersRequest, pb.ListContainersResponse)
CONTAINER_STATUS = Method(
    _RT, "ContainerStatus", pb.ContainerStatusRequest, pb.ContainerStatusResponse
)
EXEC_SYNC = Method(_RT, "ExecSync", pb.ExecSyncRequest, pb.ExecSyncResponse)
EXEC = Method(_RT, "Exec", pb.ExecRequest, pb.ExecResponse)
ATTACH = Method(_RT, "Attach", pb.AttachRequest, pb.AttachResponse)
PORT_FORWARD = Method(_RT, "PortForward", pb.PortForwardRequest, pb.PortForwardResponse)
REOPEN_CONTAINER_LOG = Method(
    _RT, "ReopenContainerLog", pb.ReopenContainerLogRequest, pb.ReopenContainerLogResponse
)
LIST_CONTAINER_STATS = Method(
    _RT, "ListContainerStats", pb.ListContainerStatsRequest, pb.ListContainerStatsResponse
)
LIST_IMAGES = Method(_IMG, "ListImages", pb.ListImagesRequest, pb.ListImagesResponse)
IMAGE_STATUS = Method(_IMG, "ImageStatus", pb.ImageStatusRequest, pb.ImageStatusResponse)
PULL_IMAGE = Method(_IMG, "PullImage", pb.PullImageRequest, pb.PullImageResponse)
REMOVE_IMAGE = Method(_IMG, "RemoveImage", pb.RemoveImageRequest, pb.RemoveImageResponse)

METHODS: tuple[Method[Any, Any], ...] = (
    VERSION,
    STATUS,
    RUN_POD_SANDBOX,
    STOP_POD_SANDBOX,
    REMOVE_POD_SANDBOX,
    POD_SANDBOX_STATUS,
    LIST_POD_SANDBOX,
    CREATE_CONTAINER,
    START_CONTAINER,
    STOP_CONTAINER,
    REMOVE_CONTAINER,
    LIST_CONTAINERS,
    CONTAINER_STATUS,
    EXEC_SYNC,
    EXEC,
    ATTACH,
    PORT_FORWARD,
    REOPEN_CONTAINER_LOG,
    LIST_CONTAINER_STATS,
    LIST_IMAGES,
    IMAGE_STATUS,
    PULL_IMAGE,
    REMOVE_IMAGE,
)


def grpc_target(address: str) -> str:
    """A gRPC target for a runtime endpoint: a socket path, ``unix://PATH``
    (the kubelet's --container-runtime-endpoint spelling) or any gRPC target."""
    if address.startswith("/"):
        return "unix://" + address
    return address


def _serialize(request: message.Message) -> bytes:
    return request.SerializeToString()


class CriClient:
    """One connection to a CRI runtime. Use ``async with`` or call ``close``.

    The gRPC channel is opened on the first call, in the running event loop.
    Every method takes ``timeout``: seconds, ``None`` for the client's default
    (``DEFAULT_TIMEOUT`` unless given), ``math.inf`` for none.
    """

    def __init__(self, address: str, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.address = address
        self.timeout = timeout
        self._channel: grpc.aio.Channel | None = None
        # One callable per method and channel, not one per call (py-spy, 100
        # pods starting: making them was a tenth of the loop's time in calls).
        self._callables: dict[str, grpc.aio.UnaryUnaryMultiCallable[Any, Any]] = {}

    async def __aenter__(self) -> CriClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._channel is not None:
            channel, self._channel = self._channel, None
            self._callables.clear()
            await channel.close()

    def _get_channel(self) -> grpc.aio.Channel:
        if self._channel is None:
            self._channel = grpc.aio.insecure_channel(
                grpc_target(self.address),
                options=[
                    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                    ("grpc.enable_http_proxy", 0),
                    # A local socket: reconnect quickly when the runtime
                    # (re)starts, not after gRPC's default backoff of 1-120 s.
                    ("grpc.initial_reconnect_backoff_ms", 50),
                    ("grpc.min_reconnect_backoff_ms", 50),
                    ("grpc.max_reconnect_backoff_ms", 1000),
                ],
            )
        return self._channel

    async def call(
        self, method: Method[Req, Resp], request: Req, *, timeout: float | None = None
    ) -> Resp:
        """Calls one RPC and returns its reply, or raises ``CriError``."""
        rpc = self._callables.get(method.path)
        if rpc is None:
            rpc = self._callables[method.path] = self._get_channel().unary_unary(
                method.path,
                request_serializer=_serialize,
                response_deserializer=method.response.FromString,
            )
        seconds = self.timeout if timeout is None else timeout
        try:
            reply: Resp = await rpc(request, timeout=None if math.isinf(seconds) else seconds)
            return reply
        except grpc.aio.AioRpcError as e:
            raise CriError(method.name, e.code(), e.details() or "") from None

    # --- runtime ---

    async def version(self, *, timeout: float | None = None) -> pb.VersionResponse:
        return await self.call(
            VERSION, pb.VersionRequest(version=KUBELET_API_VERSION), timeout=timeout
        )

    async def status(
        self, *, verbose: bool = False, timeout: float | None = None
    ) -> pb.StatusResponse:
        return await self.call(STATUS, pb.StatusRequest(verbose=verbose), timeout=timeout)

    async def conditions(self, *, timeout: float | None = None) -> dict[str, bool]:
        """The runtime's conditions by type (``RuntimeReady``, ``NetworkReady``)."""
        status = await self.status(timeout=timeout)
        return {c.type: c.status for c in status.status.conditions}

    async def wait_ready(self, timeout: float = 60.0, *, interval: float = 0.1) -> None:
        """Waits until the runtime answers and reports both runtime and network
        ready; raises ``TimeoutError`` (with the last reason) otherwise, and
        ``CriError`` at once if the endpoint serves gRPC but not the CRI."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        while True:
            try:
                conditions = await self.conditions(timeout=max(interval, 1.0))
                if conditions.get(RUNTIME_READY) and conditions.get(NETWORK_READY):
                    return
                last = f"conditions {conditions}"
            except CriError as e:
                if e.code == grpc.StatusCode.UNIMPLEMENTED:
                    raise
                last = str(e)
            if time.monotonic() >= deadline:
                raise TimeoutError(f"CRI runtime at {self.address} not ready: {last}")
            await asyncio.sleep(interval)

    # --- pod sandboxes ---

    async def run_pod_sandbox(
        self,
        config: pb.PodSandboxConfig,
        *,
        runtime_handler: str = "",
        timeout: float | None = None,
    ) -> str:
        """Creates and starts a sandbox (with its network); returns its ID."""
        reply = await self.call(
            RUN_POD_SANDBOX,
            pb.RunPodSandboxRequest(config=config, runtime_handler=runtime_handler),
            timeout=timeout,
        )
        return reply.pod_sandbox_id

    async def stop_pod_sandbox(self, pod_sandbox_id: str, *, timeout: float | None = None) -> None:
        """Kills every container of the sandbox and releases its network."""
        await self.call(
            STOP_POD_SANDBOX,
            pb.StopPodSandboxRequest(pod_sandbox_id=pod_sandbox_id),
            timeout=timeout,
        )

    async def remove_pod_sandbox(
        self, pod_sandbox_id: str, *, timeout: float | None = None
    ) -> None:
        await self.call(
            REMOVE_POD_SANDBOX,
            pb.RemovePodSandboxRequest(pod_sandbox_id=pod_sandbox_id),
            timeout=timeout,
        )

    async def stop_and_remove_pod_sandbox(self, pod_sandbox_id: str) -> None:
        """StopPodSandbox, then RemovePodSandbox, as a pod's teardown ends; a
        sandbox already gone is no error (the teardown may be a retry)."""
        for call in (self.stop_pod_sandbox, self.remove_pod_sandbox):
            try:
                await call(pod_sandbox_id)
            except CriError as e:
                if not e.not_found:
                    raise

    async def pod_sandbox_status(
        self, pod_sandbox_id: str, *, verbose: bool = False, timeout: float | None = None
    ) -> pb.PodSandboxStatusResponse:
        return await self.call(
            POD_SANDBOX_STATUS,
            pb.PodSandboxStatusRequest(pod_sandbox_id=pod_sandbox_id, verbose=verbose),
            timeout=timeout,
        )

    async def list_pod_sandbox(
        self,
        *,
        id: str = "",
        state: pb.PodSandboxState | None = None,
        labels: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> list[pb.PodSandbox]:
        """Sandboxes matching every given filter (``labels``: all must match)."""
        flt = pb.PodSandboxFilter(id=id, label_selector=dict(labels or {}))
        if state is not None:
            flt.state.state = state
        reply = await self.call(
            LIST_POD_SANDBOX, pb.ListPodSandboxRequest(filter=flt), timeout=timeout
        )
        return list(reply.items)

    # --- containers ---

    async def create_container(
        self,
        pod_sandbox_id: str,
        config: pb.ContainerConfig,
        sandbox_config: pb.PodSandboxConfig,
        *,
        timeout: float | None = None,
    ) -> str:
        """Creates a container in a sandbox; returns its ID. The image must be
        present (``pull_image`` first)."""
        reply = await self.call(
            CREATE_CONTAINER,
            pb.CreateContainerRequest(
                pod_sandbox_id=pod_sandbox_id, config=config, sandbox_config=sandbox_config
            ),
            timeout=timeout,
        )
        return reply.container_id

    async def start_container(self, container_id: str, *, timeout: float | None = None) -> None:
        await self.call(
            START_CONTAINER, pb.StartContainerRequest(container_id=container_id), timeout=timeout
        )

    async def stop_container(
        self, container_id: str, grace_period: int = 0, *, timeout: float | None = None
    ) -> None:
        """SIGTERM (the image's stop signal), then SIGKILL after
        ``grace_period`` seconds; 0 kills at once."""
        call_timeout = timeout if timeout is not None else self.timeout + grace_period
        await self.call(
            STOP_CONTAINER,
            pb.StopContainerRequest(container_id=container_id, timeout=grace_period),
            timeout=call_timeout,
        )

    async def remove_container(self, container_id: str, *, timeout: float | None = None) -> None:
        await self.call(
            REMOVE_CONTAINER,
            pb.RemoveContainerRequest(container_id=container_id),
            timeout=timeout,
        )

    async def reopen_container_log(
        self, container_id: str, *, timeout: float | None = None
    ) -> None:
        """Has the runtime reopen the container's log file (after it was
        renamed for rotation); fails for a container that is not running."""
        await self.call(
            REOPEN_CONTAINER_LOG,
            pb.ReopenContainerLogRequest(container_id=container_id),
            timeout=timeout,
        )

    async def container_status(
        self, container_id: str, *, verbose: bool = False, timeout: float | None = None
    ) -> pb.ContainerStatusResponse:
        return await self.call(
            CONTAINER_STATUS,
            pb.ContainerStatusRequest(container_id=container_id, verbose=verbose),
            timeout=timeout,
        )

    async def list_containers(
        self,
        *,
        id: str = "",
        pod_sandbox_id: str = "",
        state: pb.ContainerState | None = None,
        labels: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> list[pb.Container]:
        flt = pb.ContainerFilter(
            id=id, pod_sandbox_id=pod_sandbox_id, label_selector=dict(labels or {})
        )
        if state is not None:
            flt.state.state = state
        reply = await self.call(
            LIST_CONTAINERS, pb.ListContainersRequest(filter=flt), timeout=timeout
        )
        return list(reply.containers)

    async def list_container_stats(
        self,
        *,
        id: str = "",
        pod_sandbox_id: str = "",
        labels: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> list[pb.ContainerStats]:
        """CPU and memory usage of the running containers matching every
        given filter, in one call (the kubelet's summary API reads it so)."""
        flt = pb.ContainerStatsFilter(
            id=id, pod_sandbox_id=pod_sandbox_id, label_selector=dict(labels or {})
        )
        reply = await self.call(
            LIST_CONTAINER_STATS, pb.ListContainerStatsRequest(filter=flt), timeout=timeout
        )
        return list(reply.stats)

    # --- exec, attach, port-forward ---

    async def exec_sync(
        self,
        container_id: str,
        cmd: Sequence[str],
        *,
        exec_timeout: int = 0,
        timeout: float | None = None,
    ) -> pb.ExecSyncResponse:
        """Runs ``cmd`` in the container and returns its output and exit code;
        ``exec_timeout`` (seconds, 0 for none) is enforced by the runtime."""
        call_timeout = timeout if timeout is not None else self.timeout + exec_timeout
        return await self.call(
            EXEC_SYNC,
            pb.ExecSyncRequest(container_id=container_id, cmd=list(cmd), timeout=exec_timeout),
            timeout=call_timeout,
        )

    async def exec(self, request: pb.ExecRequest, *, timeout: float | None = None) -> str:
        """The URL of the runtime's streaming server for this exec session."""
        return (await self.call(EXEC, request, timeout=timeout)).url

    async def attach(self, request: pb.AttachRequest, *, timeout: float | None = None) -> str:
        return (await self.call(ATTACH, request, timeout=timeout)).url

    async def port_forward(
        self, pod_sandbox_id: str, ports: Sequence[int] = (), *, timeout: float | None = None
    ) -> str:
        request = pb.PortForwardRequest(pod_sandbox_id=pod_sandbox_id, port=list(ports))
        return (await self.call(PORT_FORWARD, request, timeout=timeout)).url

    # --- images ---

    async def pull_image(
        self,
        image: str,
        *,
        auth: pb.AuthConfig | None = None,
        sandbox_config: pb.PodSandboxConfig | None = None,
        timeout: float | None = None,
    ) -> str:
        """Pulls ``image`` (no call timeout unless given); returns the image
        reference the runtime knows it by (its ID)."""
        request = pb.PullImageRequest(
            image=pb.ImageSpec(image=image), auth=auth, sandbox_config=sandbox_config
        )
        reply = await self.call(
            PULL_IMAGE, request, timeout=math.inf if timeout is None else timeout
        )
        return reply.image_ref

    async def image_status(
        self, image: str, *, verbose: bool = False, timeout: float | None = None
    ) -> pb.Image | None:
        """The image, or ``None`` when the runtime does not have it."""
        reply = await self.call(
            IMAGE_STATUS,
            pb.ImageStatusRequest(image=pb.ImageSpec(image=image), verbose=verbose),
            timeout=timeout,
        )
        return reply.image if reply.HasField("image") else None

    async def list_images(self, image: str = "", *, timeout: float | None = None) -> list[pb.Image]:
        flt = pb.ImageFilter(image=pb.ImageSpec(image=image)) if image else None
        reply = await self.call(LIST_IMAGES, pb.ListImagesRequest(filter=flt), timeout=timeout)
        return list(reply.images)

    async def remove_image(self, image: str, *, timeout: float | None = None) -> None:
        await self.call(
            REMOVE_IMAGE, pb.RemoveImageRequest(image=pb.ImageSpec(image=image)), timeout=timeout
        )
