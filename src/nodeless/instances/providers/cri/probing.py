"""Container probes as the kubelet runs them: exec, httpGet, tcpSocket and grpc.

A probe is parsed from the container spec (``Probe``), one attempt is made
by ``check`` (a ``Result``: success and the kubelet's words for a failure)
and consecutive results are thresholded by ``Outcome`` (successThreshold,
failureThreshold). The provider owns the loop, so its clock paces it and its
container state decides what an outcome does (readiness flips ``ready``,
liveness and startup failures kill the container).

Network probes go from the host to the pod's IP, as the kubelet's do (the
pod network is a bridge on this host); exec probes run through CRI
``ExecSync`` in the container. Deviation: an HTTP redirect is not followed;
any status from 200 to 399 is a success, as the kubelet counts the final one.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ssl
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import aiohttp
import grpc
import grpc.aio

LIVENESS = "Liveness"
READINESS = "Readiness"
STARTUP = "Startup"
KINDS = {"livenessProbe": LIVENESS, "readinessProbe": READINESS, "startupProbe": STARTUP}

USER_AGENT = "kube-probe/1.37"
MAX_BODY = 10 * 1024
GRPC_HEALTH_CHECK = "/grpc.health.v1.Health/Check"
_GRPC_STATUSES = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}

# (command, timeout seconds) -> (exit code, combined output); raises
# ``TimeoutError`` when the command outlives the timeout.
ExecRunner = Callable[[Sequence[str], int], Awaitable[tuple[int, bytes]]]


class ProbeError(Exception):
    """A probe the kubelet could not run (a named port the container lacks)."""


@dataclasses.dataclass(frozen=True)
class Probe:
    """One probe of a container, with upstream's defaults filled in."""

    kind: str  # LIVENESS | READINESS | STARTUP
    handler: str  # "exec" | "httpGet" | "tcpSocket" | "grpc"
    action: Mapping[str, Any]
    initial_delay: int = 0
    period: int = 10
    timeout: int = 1
    success_threshold: int = 1
    failure_threshold: int = 3
    termination_grace: int | None = None  # probe-level terminationGracePeriodSeconds


@dataclasses.dataclass(frozen=True)
class Result:
    success: bool
    message: str = ""  # why it failed, as the kubelet's Unhealthy event says it


def probes(container: Mapping[str, Any]) -> dict[str, Probe]:
    """The container's probes by kind (``LIVENESS``…); handlers this module
    does not know are left out, as a kubelet that cannot run them would."""
    found = {}
    for field, kind in KINDS.items():
        spec = container.get(field)
        if not isinstance(spec, Mapping):
            continue
        handler = next((h for h in ("exec", "httpGet", "tcpSocket", "grpc") if h in spec), None)
        if handler is None or not isinstance(spec[handler], Mapping):
            continue
        grace = spec.get("terminationGracePeriodSeconds")
        found[kind] = Probe(
            kind=kind,
            handler=handler,
            action=spec[handler],
            initial_delay=max(0, int(spec.get("initialDelaySeconds") or 0)),
            period=max(1, int(spec.get("periodSeconds") or 10)),
            timeout=max(1, int(spec.get("timeoutSeconds") or 1)),
            # upstream requires 1 for liveness and startup
            success_threshold=1
            if kind != READINESS
            else max(1, int(spec.get("successThreshold") or 1)),
            failure_threshold=max(1, int(spec.get("failureThreshold") or 3)),
            termination_grace=int(grace) if grace is not None else None,
        )
    return found


def resolve_port(port: Any, container: Mapping[str, Any]) -> int:
    """A probe's port: a number, or the name of one of the container's ports."""
    if isinstance(port, int) or (isinstance(port, str) and port.isdigit()):
        number = int(port)
    else:
        named = [
            int(p["containerPort"])
            for p in container.get("ports") or []
            if isinstance(p, Mapping) and p.get("name") == port and p.get("containerPort")
        ]
        if not named:
            raise ProbeError(f"couldn't find port: {port} in {container.get('name')}")
        number = named[0]
    if not 0 < number < 65536:
        raise ProbeError(f"invalid port number: {number}")
    return number


@dataclasses.dataclass
class Outcome:
    """Consecutive results against the probe's thresholds; ``healthy`` is
    None until a threshold is first reached."""

    probe: Probe
    successes: int = 0
    failures: int = 0
    healthy: bool | None = None

    def add(self, result: Result) -> bool:
        """Counts ``result``; True when ``healthy`` changed."""
        if result.success:
            self.successes, self.failures = self.successes + 1, 0
            reached = self.successes >= self.probe.success_threshold
        else:
            self.successes, self.failures = 0, self.failures + 1
            reached = self.failures >= self.probe.failure_threshold
        if reached and self.healthy is not result.success:
            self.healthy = result.success
            return True
        return False

    def reset(self) -> None:
        self.successes = self.failures = 0


async def check(
    probe: Probe, *, pod_ip: str, container: Mapping[str, Any], exec_runner: ExecRunner
) -> Result:
    """One attempt of ``probe``; never raises for what the probed thing did."""
    try:
        if probe.handler == "exec":
            return await _exec(probe, exec_runner)
        if probe.handler == "httpGet":
            return await _http(probe, pod_ip, container)
        if probe.handler == "tcpSocket":
            return await _tcp(probe, pod_ip, container)
        return await _grpc(probe, pod_ip, container)
    except ProbeError as e:
        return Result(False, str(e))


async def _exec(probe: Probe, runner: ExecRunner) -> Result:
    command = [str(c) for c in probe.action.get("command") or []]
    try:
        code, output = await runner(command, probe.timeout)
    except TimeoutError:
        return Result(False, f"command {' '.join(command)!r} timed out")
    text = output.decode(errors="replace")
    return Result(code == 0, text)


async def _http(probe: Probe, pod_ip: str, container: Mapping[str, Any]) -> Result:
    action = probe.action
    port = resolve_port(action.get("port"), container)
    host = str(action.get("host") or pod_ip)
    scheme = str(action.get("scheme") or "HTTP").lower()
    path = str(action.get("path") or "/")
    if not path.startswith("/"):
        path = "/" + path
    netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    url = f"{scheme}://{netloc}{path}"
    headers = {"User-Agent": USER_AGENT, "Accept": "*/*"}
    for header in action.get("httpHeaders") or []:
        if isinstance(header, Mapping) and header.get("name"):
            headers[str(header["name"])] = str(header.get("value") or "")
    context: ssl.SSLContext | bool = False if scheme == "https" else True
    timeout = aiohttp.ClientTimeout(total=probe.timeout)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout, auto_decompress=False) as session,
            session.get(url, headers=headers, allow_redirects=False, ssl=context) as response,
        ):
            await response.content.read(MAX_BODY)  # as the kubelet, which reads a little
            code = response.status
    except TimeoutError:
        return Result(
            False,
            f'Get "{url}": context deadline exceeded (Client.Timeout exceeded while awaiting headers)',
        )
    except aiohttp.ClientConnectorError as e:
        return Result(False, f'Get "{url}": dial tcp {netloc}: {connect_error(e.os_error)}')
    except (aiohttp.ClientError, OSError) as e:
        return Result(False, f'Get "{url}": {e}')
    if 200 <= code < 400:
        return Result(True)
    return Result(False, f"HTTP probe failed with statuscode: {code}")


async def _tcp(probe: Probe, pod_ip: str, container: Mapping[str, Any]) -> Result:
    port = resolve_port(probe.action.get("port"), container)
    host = str(probe.action.get("host") or pod_ip)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        async with asyncio.timeout(probe.timeout):
            _, writer = await asyncio.open_connection(host, port)
    except TimeoutError:
        return Result(False, f"dial tcp {address}: i/o timeout")
    except OSError as e:
        return Result(False, f"dial tcp {address}: {connect_error(e)}")
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return Result(True)


async def _grpc(probe: Probe, pod_ip: str, container: Mapping[str, Any]) -> Result:
    port = resolve_port(probe.action.get("port"), container)
    service = str(probe.action.get("service") or "")
    address = f"[{pod_ip}]:{port}" if ":" in pod_ip else f"{pod_ip}:{port}"
    async with grpc.aio.insecure_channel(address) as channel:
        call = channel.unary_unary(
            GRPC_HEALTH_CHECK,
            request_serializer=_health_request,
            response_deserializer=_health_status,
        )
        try:
            status = await call(service, timeout=probe.timeout)
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                return Result(
                    False,
                    f'timeout: failed to connect service "{address}" within {probe.timeout}s',
                )
            if e.code() == grpc.StatusCode.UNAVAILABLE:
                return Result(False, f'failed to connect service "{address}": {e.details()}')
            return Result(False, f"rpc error: code = {e.code().name} desc = {e.details()}")
    if status == 1:
        return Result(True)
    return Result(
        False, f'service unhealthy (responded with "{_GRPC_STATUSES.get(status, status)}")'
    )


def _health_request(service: str) -> bytes:
    """``grpc.health.v1.HealthCheckRequest{service}`` in protobuf's wire form."""
    data = service.encode()
    return (b"\x0a" + _varint(len(data)) + data) if data else b""


def _health_status(data: bytes) -> int:
    """The ``status`` of a ``grpc.health.v1.HealthCheckResponse`` (0: unknown)."""
    index = 0
    while index < len(data):
        key, index = _read_varint(data, index)
        if key & 7 == 0:
            value, index = _read_varint(data, index)
            if key >> 3 == 1:
                return value
        elif key & 7 == 2:
            length, index = _read_varint(data, index)
            index += length
        else:
            return 0
    return 0


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _read_varint(data: bytes, index: int) -> tuple[int, int]:
    value = shift = 0
    while index < len(data):
        byte = data[index]
        index += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            break
        shift += 7
    return value, index


def connect_error(error: OSError | None) -> str:
    """A connect failure in Go's words (``connect: connection refused``)."""
    if error is None:
        return "connect: unknown error"
    if isinstance(error, ConnectionRefusedError):
        return "connect: connection refused"
    reason = error.strerror or str(error)
    return f"connect: {reason[0].lower() + reason[1:] if reason else reason}"
