"""pods/exec and pods/attach on the in-process API: options and pod state
checked as upstream, then the client's WebSocket relayed to a runtime
session (a stand-in for the SPDY client, whose own tests run it against
containerd)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from multidict import MultiDict

from nodeless.api import errors
from nodeless.apiserver import remotecommands
from nodeless.streaming import spdy
from tests.unit.apiserver.conftest import Client

PODS = "/api/v1/namespaces/default/pods"
STATUS_3 = (
    b'\x03{"metadata": {}, "status": "Failure", "reason": "NonZeroExitCode", '
    b'"details": {"causes": [{"reason": "ExitCode", "message": "3"}]}}'
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


class FakeRemote:
    """A runtime session standing in for ``spdy.RemoteCommand``: echoes
    stdin lines on stdout (uppercased on stderr without a TTY), records
    resizes, and ends with exit code 3 once stdin is closed."""

    def __init__(self, url: str, **streams: bool) -> None:
        self.url = url
        self.options = streams
        self.streams = {name: True for name in ("stdin", "stdout") if streams.get(name)}
        if streams.get("tty"):
            self.streams["resize"] = True
        self.stdin: list[bytes] = []
        self.resizes: list[tuple[int, int]] = []
        self.stdin_closed = asyncio.Event()
        self.closed = False
        self._chunks: asyncio.Queue[tuple[str, bytes] | None] = asyncio.Queue()

    async def write_stdin(self, data: bytes) -> None:
        self.stdin.append(data)
        await self._chunks.put(("stdout", data))
        if not self.options.get("tty"):
            await self._chunks.put(("stderr", data.upper()))

    async def close_stdin(self) -> None:
        self.stdin_closed.set()
        await self._chunks.put(None)

    async def resize(self, width: int, height: int) -> None:
        self.resizes.append((width, height))

    async def output(self) -> AsyncIterator[tuple[str, bytes]]:
        while (chunk := await self._chunks.get()) is not None:
            yield chunk

    async def status(self) -> dict[str, Any]:
        return {
            "metadata": {},
            "status": "Failure",
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": "3"}]},
        }

    async def close(self) -> None:
        self.closed = True


class Runtime:
    """Stands in for ``spdy.connect_remotecommand``: records each session."""

    def __init__(self) -> None:
        self.sessions: list[FakeRemote] = []

    async def connect(self, url: str, **options: Any) -> FakeRemote:
        if url.endswith("/gone"):
            raise OSError("connection refused")
        options.pop("timeout", None)
        remote = FakeRemote(url, **options)
        self.sessions.append(remote)
        return remote


@pytest.fixture
def runtime(monkeypatch: pytest.MonkeyPatch) -> tuple[Runtime, str]:
    served = Runtime()
    monkeypatch.setattr(spdy, "connect_remotecommand", served.connect)
    return served, "http://127.0.0.1:10010/exec/token"


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
        await ws.send_str("\x00text\n")  # the Python client's text frames
        await ws.send_bytes(b"\xff\x00")  # v5: stdin closed
        frames = [bytes(m.data) async for m in ws if m.type == aiohttp.WSMsgType.BINARY]

    [remote] = served.sessions
    assert frames[:2] == [b"\x01hello\n", b"\x01text\n"]
    assert frames[-1] == STATUS_3
    assert remote.stdin == [b"hello\n", b"text\n"] and remote.stdin_closed.is_set()
    assert remote.resizes == [(80, 24)]
    assert remote.options == {"stdin": True, "stdout": True, "stderr": False, "tty": True}
    assert remote.closed
    assert source.calls == [("default", "p", "main", ["sh"], True, True, False, True)]


async def test_without_a_tty_stderr_has_its_own_channel(
    client: Client, runtime: tuple[Runtime, str]
) -> None:
    _, url = runtime
    client.server.api.stream_source = Source(url)
    await client.request("POST", PODS, pod("p", "main"))
    params = [("command", "cat"), ("stdin", "1"), ("stdout", "1"), ("stderr", "1")]

    async with client.session.ws_connect(
        f"{client.base}{PODS}/p/exec", params=params, protocols=(remotecommands.V5,)
    ) as ws:
        await ws.send_bytes(b"\x00abc")
        await ws.send_bytes(b"\xff\x00")
        frames = [bytes(m.data) async for m in ws if m.type == aiohttp.WSMsgType.BINARY]

    assert frames == [b"\x01abc", b"\x02ABC", STATUS_3]


async def test_attach_asks_the_source_without_a_command(
    client: Client, runtime: tuple[Runtime, str]
) -> None:
    served, url = runtime
    source = Source(url)
    client.server.api.stream_source = source
    await client.request("POST", PODS, pod("p", "a", "b"))

    async with client.session.ws_connect(
        f"{client.base}{PODS}/p/attach",
        params={"container": "b", "stdin": "true", "stdout": "true"},
        protocols=(remotecommands.V4,),
    ) as ws:
        assert ws.protocol == remotecommands.V4
        await ws.send_bytes(b"\x00line\n")
        assert bytes((await ws.receive()).data) == b"\x01line\n"
        await ws.send_bytes(b"\xff\x00")  # not a close signal in v4: stdin stays open
        await ws.close()

    assert not served.sessions[0].stdin_closed.is_set()
    assert source.calls == [("default", "p", "b", None, True, True, False, False)]


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
