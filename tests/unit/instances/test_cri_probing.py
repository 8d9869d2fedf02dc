"""Probes as the kubelet runs them: parsing, thresholds and each handler
against real local servers (HTTP, TCP, gRPC health) on 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
import grpc.aio
import pytest
from aiohttp import web

from nodeless.instances.providers.cri import probing


def probe(kind: str = probing.READINESS, handler: str = "exec", **action: Any) -> probing.Probe:
    return probing.Probe(kind=kind, handler=handler, action=action)


async def no_exec(command: Sequence[str], timeout: int) -> tuple[int, bytes]:
    raise AssertionError("no exec expected")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- parsing ---


def test_probes_are_parsed_with_upstream_defaults() -> None:
    container = {
        "name": "app",
        "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}, "successThreshold": 2},
        "livenessProbe": {"exec": {"command": ["true"]}, "successThreshold": 5, "periodSeconds": 3},
        "startupProbe": {"tcpSocket": {"port": 80}, "failureThreshold": 30},
    }

    found = probing.probes(container)

    readiness = found[probing.READINESS]
    assert (readiness.handler, readiness.period, readiness.timeout) == ("httpGet", 10, 1)
    assert (readiness.success_threshold, readiness.failure_threshold) == (2, 3)
    liveness = found[probing.LIVENESS]
    assert (liveness.handler, liveness.period, liveness.success_threshold) == ("exec", 3, 1)
    assert found[probing.STARTUP].failure_threshold == 30


def test_a_container_without_probes_or_with_an_unknown_handler_has_none() -> None:
    assert probing.probes({"name": "app"}) == {}
    assert probing.probes({"readinessProbe": {"periodSeconds": 1}}) == {}


def test_named_ports_resolve_through_the_container_ports() -> None:
    container = {"name": "app", "ports": [{"name": "http", "containerPort": 8080}]}

    assert probing.resolve_port("http", container) == 8080
    assert probing.resolve_port(81, container) == 81
    assert probing.resolve_port("82", container) == 82
    with pytest.raises(probing.ProbeError, match="couldn't find port: grpc in app"):
        probing.resolve_port("grpc", container)
    with pytest.raises(probing.ProbeError, match="invalid port number"):
        probing.resolve_port(70000, container)


# --- thresholds ---


def test_readiness_turns_true_after_success_threshold_and_false_after_failure_threshold() -> None:
    outcome = probing.Outcome(
        probing.Probe(probing.READINESS, "exec", {}, success_threshold=2, failure_threshold=3)
    )
    ok, bad = probing.Result(True), probing.Result(False, "no")

    changes = [outcome.add(r) for r in (ok, bad, ok, ok, bad, bad, ok, bad, bad, bad)]

    assert changes == [False, False, False, True, False, False, False, False, False, True]
    assert outcome.healthy is False


def test_liveness_fails_only_after_consecutive_failures() -> None:
    outcome = probing.Outcome(probing.Probe(probing.LIVENESS, "exec", {}, failure_threshold=2))
    ok, bad = probing.Result(True), probing.Result(False)

    assert outcome.add(ok) is True and outcome.healthy is True
    assert outcome.add(bad) is False
    assert outcome.add(ok) is False
    assert outcome.add(bad) is False
    assert outcome.add(bad) is True and outcome.healthy is False


# --- exec ---


async def test_exec_succeeds_on_exit_zero_and_fails_with_the_output() -> None:
    calls: list[tuple[list[str], int]] = []

    async def runner(command: Sequence[str], timeout: int) -> tuple[int, bytes]:
        calls.append((list(command), timeout))
        return (0, b"") if command[-1] == "ok" else (1, b"not ready yet\n")

    container: dict[str, Any] = {"name": "app"}
    good = await probing.check(
        probe(command=["check", "ok"]), pod_ip="", container=container, exec_runner=runner
    )
    bad = await probing.check(
        probe(command=["check", "no"]), pod_ip="", container=container, exec_runner=runner
    )

    assert good == probing.Result(True, "")
    assert bad == probing.Result(False, "not ready yet\n")
    assert calls == [(["check", "ok"], 1), (["check", "no"], 1)]


async def test_exec_timeout_is_a_failure_naming_the_command() -> None:
    async def runner(command: Sequence[str], timeout: int) -> tuple[int, bytes]:
        raise TimeoutError

    result = await probing.check(
        probe(command=["sleep", "9"]), pod_ip="", container={}, exec_runner=runner
    )

    assert result == probing.Result(False, "command 'sleep 9' timed out")


# --- httpGet ---


@pytest.fixture
async def http_server() -> AsyncIterator[tuple[int, list[web.Request]]]:
    seen: list[web.Request] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append(request)
        if request.path == "/healthz":
            return web.Response(text="ok")
        if request.path == "/moved":
            raise web.HTTPFound("/elsewhere")
        if request.path == "/slow":
            await asyncio.sleep(3)
        return web.Response(status=503, text="down")

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = _free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        yield port, seen
    finally:
        await runner.cleanup()


async def test_http_probe_counts_2xx_and_3xx_as_success_and_sends_its_headers(
    http_server: tuple[int, list[web.Request]],
) -> None:
    port, seen = http_server
    container = {"name": "app", "ports": [{"name": "web", "containerPort": port}]}

    good = await probing.check(
        probe(
            handler="httpGet",
            path="/healthz",
            port="web",
            httpHeaders=[{"name": "X-Probe", "value": "yes"}],
        ),
        pod_ip="127.0.0.1",
        container=container,
        exec_runner=no_exec,
    )
    moved = await probing.check(
        probe(handler="httpGet", path="/moved", port=port),
        pod_ip="127.0.0.1",
        container=container,
        exec_runner=no_exec,
    )

    assert good.success and moved.success
    assert seen[0].headers["User-Agent"] == probing.USER_AGENT
    assert seen[0].headers["X-Probe"] == "yes"
    assert [r.path for r in seen] == ["/healthz", "/moved"]


async def test_http_probe_fails_on_an_error_status_a_refused_port_and_a_timeout(
    http_server: tuple[int, list[web.Request]],
) -> None:
    port, _ = http_server
    closed = _free_port()

    status = await probing.check(
        probe(handler="httpGet", path="/broken", port=port),
        pod_ip="127.0.0.1",
        container={},
        exec_runner=no_exec,
    )
    refused = await probing.check(
        probe(handler="httpGet", path="/healthz", port=closed),
        pod_ip="127.0.0.1",
        container={},
        exec_runner=no_exec,
    )
    slow = await probing.check(
        probe(handler="httpGet", path="/slow", port=port),
        pod_ip="127.0.0.1",
        container={},
        exec_runner=no_exec,
    )

    assert status == probing.Result(False, "HTTP probe failed with statuscode: 503")
    assert refused == probing.Result(
        False,
        f'Get "http://127.0.0.1:{closed}/healthz": dial tcp 127.0.0.1:{closed}: '
        "connect: connection refused",
    )
    assert not slow.success and "context deadline exceeded" in slow.message


# --- tcpSocket ---


async def test_tcp_probe_succeeds_when_something_listens_and_fails_when_refused() -> None:
    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    closed = _free_port()
    try:
        good = await probing.check(
            probe(handler="tcpSocket", port=port),
            pod_ip="127.0.0.1",
            container={},
            exec_runner=no_exec,
        )
        bad = await probing.check(
            probe(handler="tcpSocket", port=closed),
            pod_ip="127.0.0.1",
            container={},
            exec_runner=no_exec,
        )
    finally:
        server.close()
        await server.wait_closed()

    assert good.success
    assert bad == probing.Result(False, f"dial tcp 127.0.0.1:{closed}: connect: connection refused")


# --- grpc ---


def _health_response(status: int) -> bytes:
    return bytes([0x08, status])


def _service_of(request: bytes) -> str:
    return request[2:].decode() if request else ""


@pytest.fixture
async def grpc_server() -> AsyncIterator[tuple[int, list[str]]]:
    asked: list[str] = []

    async def check(request: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
        service = _service_of(request)
        asked.append(service)
        return _health_response(1 if service in ("", "ok") else 2)

    handler = grpc.method_handlers_generic_handler(
        "grpc.health.v1.Health",
        {"Check": grpc.unary_unary_rpc_method_handler(check)},
    )
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield port, asked
    finally:
        await server.stop(None)


async def test_grpc_probe_reads_the_health_status_of_the_named_service(
    grpc_server: tuple[int, list[str]],
) -> None:
    port, asked = grpc_server

    serving = await probing.check(
        probe(handler="grpc", port=port), pod_ip="127.0.0.1", container={}, exec_runner=no_exec
    )
    named = await probing.check(
        probe(handler="grpc", port=port, service="ok"),
        pod_ip="127.0.0.1",
        container={},
        exec_runner=no_exec,
    )
    not_serving = await probing.check(
        probe(handler="grpc", port=port, service="db"),
        pod_ip="127.0.0.1",
        container={},
        exec_runner=no_exec,
    )

    assert serving.success and named.success
    assert not_serving == probing.Result(False, 'service unhealthy (responded with "NOT_SERVING")')
    assert asked == ["", "ok", "db"]


async def test_grpc_probe_to_a_closed_port_fails() -> None:
    closed = _free_port()

    result = await probing.check(
        probe(handler="grpc", port=closed), pod_ip="127.0.0.1", container={}, exec_runner=no_exec
    )

    assert not result.success
    assert f"127.0.0.1:{closed}" in result.message
