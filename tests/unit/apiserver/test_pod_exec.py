"""pods/exec and pods/attach on the in-process API: options and pod state
checked as upstream, then the client's WebSocket relayed to a streaming
server standing in for the runtime's (a local aiohttp WebSocket server
speaking v4.channel.k8s.io)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from multidict import MultiDict

from nodeless.api import errors
from nodeless.apiserver import remotecommands
from tests.unit.apiserver.conftest import Client

PODS = "/api/v1/namespaces/default/pods"
STATUS_3 = (
    b'\x03{"metadata":{},"status":"Failure","reason":"NonZeroExitCode",'
    b'"details":{"causes":[{"reason":"ExitCode","message":"3"}]}}'
)


def pod(name: str, *containers: str, phase: str = "Running") -> Any:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "nodeName": "zone-a",
            "containers": [{"name": c, "image": "busybox:1"} for c in containers],
        },
        "status": {"phase": phase},
    }


# --- options ---


def test_exec_options_need_a_command_and_a_stream() -> None:
    query = MultiDict([("command", "sh"), ("command", "-c"), ("command", "id"), ("stdout", "1")])

    options = remotecommands.parse_options(query, "exec")

    assert options.command == ["sh", "-c", "id"]
    assert (options.stdin, options.stdout, options.stderr, options.tty) == (
        False,
        True,
        False,
        False,
    )
    with pytest.raises(errors.StatusError, match="you must specify at least 1 command"):
        remotecommands.parse_options(MultiDict([("stdout", "true")]), "exec")
    with pytest.raises(errors.StatusError, match="at least 1 of stdin, stdout, stderr"):
        remotecommands.parse_options(MultiDict([("command", "id")]), "exec")
    assert remotecommands.parse_options(MultiDict([("stdin", "true")]), "attach").command is None


def test_a_finished_pod_cannot_be_exec_into_or_attached_to() -> None:
    with pytest.raises(errors.StatusError) as caught:
        remotecommands.check_phase(pod("p", "main", phase="Succeeded"), "exec")
    assert caught.value.code == 400
    assert caught.value.message == (
        "cannot exec into a container in a completed pod; current phase is Succeeded"
    )
    with pytest.raises(errors.StatusError, match="cannot attach to a container"):
        remotecommands.check_phase(pod("p", "main", phase="Failed"), "attach")
    remotecommands.check_phase(pod("p", "main"), "exec")


# --- the relay ---


class Runtime:
    """A runtime streaming server: echoes stdin frames on stdout, tells
    resizes on stderr, and ends with a NonZeroExitCode status on "exit"."""

    def __init__(self) -> None:
        self.protocols: list[str] = []
        self.received: list[bytes] = []

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(protocols=(remotecommands.V4,))
        await ws.prepare(request)
        self.protocols.append(ws.ws_protocol or "")
        await ws.send_bytes(b"\x01")  # the runtime opens stdout first, as containerd does
        async for message in ws:
            data = bytes(message.data)
            self.received.append(data)
            if data[:1] == b"\x00" and data[1:] == b"exit\n":
                await ws.send_bytes(STATUS_3)
                await ws.close()
            elif data[:1] == b"\x00":
                await ws.send_bytes(b"\x01" + data[1:])
            elif data[:1] == b"\x04":
                await ws.send_bytes(b"\x02" + data[1:])
        return ws


@pytest.fixture
async def runtime() -> AsyncIterator[tuple[Runtime, str]]:
    served = Runtime()
    app = web.Application()
    app.router.add_get("/exec/{token}", served.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield served, f"http://127.0.0.1:{port}/exec/token"
    finally:
        await runner.cleanup()


class Source:
    def __init__(self, url: str) -> None:
        self.url = url
        self.calls: list[tuple[Any, ...]] = []

    async def __call__(self, *args: Any) -> str:
        self.calls.append(args)
        return self.url


async def test_exec_frames_are_relayed_both_ways_and_the_status_ends_the_stream(
    client: Client, runtime: tuple[Runtime, str]
) -> None:
    served, url = runtime
    source = Source(url)
    client.server.api.stream_source = source
    await client.request("POST", PODS, pod("p", "main"))
    params = [("command", "sh"), ("stdin", "true"), ("stdout", "true"), ("tty", "true")]

    async with client.session.ws_connect(
        f"{client.base}{PODS}/p/exec", params=params, protocols=(remotecommands.V5,)
    ) as ws:
        assert ws.protocol == remotecommands.V5
        await ws.send_bytes(b"\x00hello\n")
        await ws.send_bytes(b'\x04{"Width":80,"Height":24}')
        await ws.send_bytes(b"\xff\x00")  # v5: stdin closed (not passed on to a v4 runtime)
        await ws.send_str("\x00exit\n")  # the Python client's text frames
        frames = [bytes(m.data) async for m in ws if m.type == aiohttp.WSMsgType.BINARY]

    assert frames == [b"\x01", b"\x01hello\n", b'\x02{"Width":80,"Height":24}', STATUS_3]
    assert served.protocols == [remotecommands.V4]
    assert b"\xff\x00" not in served.received
    assert source.calls == [("default", "p", "main", ["sh"], True, True, False, True)]


async def test_attach_asks_the_source_without_a_command(
    client: Client, runtime: tuple[Runtime, str]
) -> None:
    _, url = runtime
    source = Source(url)
    client.server.api.stream_source = source
    await client.request("POST", PODS, pod("p", "a", "b"))

    async with client.session.ws_connect(
        f"{client.base}{PODS}/p/attach",
        params={"container": "b", "stdout": "true"},
        protocols=(remotecommands.V4,),
    ) as ws:
        assert ws.protocol == remotecommands.V4
        await ws.send_bytes(b"\x00exit\n")
        frames = [bytes(m.data) async for m in ws if m.type == aiohttp.WSMsgType.BINARY]

    assert frames[-1] == STATUS_3
    assert source.calls == [("default", "p", "b", None, False, True, False, False)]


@pytest.mark.parametrize(
    ("name", "params", "code", "message"),
    [
        ("p", {"command": "id"}, 400, "you must specify at least 1 of stdin, stdout, stderr"),
        ("p", {"stdout": "1", "command": "id", "container": "x"}, 400, "container x is not valid"),
        ("done", {"stdout": "1", "command": "id"}, 400, "in a completed pod"),
        ("missing", {"stdout": "1", "command": "id"}, 404, 'pods "missing" not found'),
        ("p", {"stdout": "1", "command": "id"}, 400, "not SPDY"),
    ],
)
async def test_what_cannot_be_streamed_is_a_status(
    client: Client,
    runtime: tuple[Runtime, str],
    name: str,
    params: dict[str, str],
    code: int,
    message: str,
) -> None:
    client.server.api.stream_source = Source(runtime[1])
    await client.request("POST", PODS, pod("p", "main"))
    await client.request("POST", PODS, pod("done", "main"))
    await client.request(
        "PATCH",
        f"{PODS}/done/status",
        {"status": {"phase": "Succeeded"}},
        content_type="application/merge-patch+json",
    )

    status, body, _ = await client.request(
        "POST", f"{PODS}/{name}/exec", params=params, headers={"Upgrade": "SPDY/3.1"}
    )

    assert status == code
    assert body["kind"] == "Status" and message in body["message"]


async def test_a_runtime_that_cannot_be_reached_is_an_error_before_the_upgrade(
    client: Client,
) -> None:
    client.server.api.stream_source = Source("http://127.0.0.1:1/exec/gone")
    await client.request("POST", PODS, pod("p", "main"))

    with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
        await client.session.ws_connect(
            f"{client.base}{PODS}/p/exec",
            params={"command": "id", "stdout": "1"},
            protocols=(remotecommands.V5,),
        )

    assert caught.value.status == 500
