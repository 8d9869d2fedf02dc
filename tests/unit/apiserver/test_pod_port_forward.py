"""pods/portforward on the in-process API with the channel protocol (the
Python client's): each port a data and an error channel opened with its
number, payloads relayed to connections the registered source opens (here
to a local TCP echo server)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from multidict import MultiDict

from nodeless.api import errors
from nodeless.apiserver import portforwards, spdyforwards
from nodeless.streaming import spdy
from tests.unit.apiserver.conftest import Client

PODS = "/api/v1/namespaces/default/pods"


def pod(name: str) -> Any:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"nodeName": "zone-a", "containers": [{"name": "main", "image": "busybox:1"}]},
    }


def test_ports_are_read_from_the_query_and_checked() -> None:
    assert portforwards.query_ports(MultiDict([("ports", "80,8080"), ("ports", "9")])) == [
        80,
        8080,
        9,
    ]
    with pytest.raises(errors.StatusError, match='query parameter "ports" is required'):
        portforwards.query_ports(MultiDict())
    with pytest.raises(errors.StatusError, match="must be > 0 and < 65536"):
        portforwards.query_ports(MultiDict([("ports", "70000")]))
    with pytest.raises(errors.StatusError, match="unable to parse 'http' as a port"):
        portforwards.query_ports(MultiDict([("ports", "http")]))


@pytest.fixture
async def echo_port() -> AsyncIterator[int]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(1024):
            writer.write(data.upper())
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


async def test_each_port_gets_its_channels_and_a_refused_one_its_error(
    client: Client, echo_port: int
) -> None:
    calls: list[tuple[str, str, int]] = []

    async def source(
        namespace: str, name: str, port: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        calls.append((namespace, name, port))
        if port != 80:
            raise errors.bad_request(f"error forwarding port {port} to pod {name}: refused")
        return await asyncio.open_connection("127.0.0.1", echo_port)

    client.server.api.port_forward_source = source
    await client.request("POST", PODS, pod("p"))

    async with client.session.ws_connect(
        f"{client.base}{PODS}/p/portforward",
        params={"ports": "80,81"},
        protocols=(portforwards.V4,),
    ) as ws:
        opening = [bytes((await ws.receive()).data) for _ in range(5)]
        await ws.send_bytes(b"\x00hello")
        echoed = bytes((await ws.receive()).data)

    assert opening == [
        b"\x00\x50\x00",
        b"\x01\x50\x00",
        b"\x02\x51\x00",
        b"\x03\x51\x00",
        b"\x03error forwarding port 81 to pod p: refused",
    ]
    assert echoed == b"\x00HELLO"
    assert calls == [("default", "p", 80), ("default", "p", 81)]


async def test_the_session_ends_when_the_pods_side_closes(client: Client) -> None:
    async def answer_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"bye")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer_once, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]

    async def source(
        namespace: str, name: str, port: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", port)

    client.server.api.port_forward_source = source
    await client.request("POST", PODS, pod("p"))
    try:
        async with client.session.ws_connect(
            f"{client.base}{PODS}/p/portforward",
            params={"ports": str(port)},
            protocols=(portforwards.V4,),
        ) as ws:
            frames = [bytes(m.data) async for m in ws if m.type == aiohttp.WSMsgType.BINARY]
    finally:
        server.close()
        await server.wait_closed()

    assert frames[-1] == b"\x00bye"


async def test_a_request_without_a_websocket_is_a_status(client: Client) -> None:
    async def source(*args: Any) -> Any:
        raise AssertionError("not called")

    client.server.api.port_forward_source = source
    await client.request("POST", PODS, pod("p"))

    status, body, _ = await client.request(
        "POST", f"{PODS}/p/portforward", headers={"Upgrade": "SPDY/3.1"}
    )

    assert status == 400
    assert "forwards ports over WebSocket" in body["message"]


# --- kubectl's SPDY tunnelled in the WebSocket ---


class SpdyClient:
    """kubectl's side: SPDY frames over the WebSocket's binary messages."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.encoder = spdy.FrameEncoder()
        self.decoder = spdy.FrameDecoder()
        self.frames: list[spdy.Frame] = []

    async def send(self, frame: spdy.Frame) -> None:
        await self.ws.send_bytes(self.encoder.encode(frame))

    async def open(self, stream_id: int, kind: str, port: int, request_id: int) -> None:
        headers = spdy.make_headers(
            {"streamType": kind, "port": str(port), "requestID": str(request_id)}
        )
        await self.send(spdy.SynStream(stream_id, headers))

    async def until(self, done: Any) -> list[spdy.Frame]:
        while not done(self.frames):
            message = await asyncio.wait_for(self.ws.receive(), 5)
            assert message.type == aiohttp.WSMsgType.BINARY, message
            self.frames += self.decoder.feed(bytes(message.data))
        return self.frames


def _data(frames: list[spdy.Frame], stream_id: int) -> tuple[bytes, bool]:
    chunks = [f for f in frames if isinstance(f, spdy.DataFrame) and f.stream_id == stream_id]
    return b"".join(f.data for f in chunks), any(f.fin for f in chunks)


async def test_kubectls_spdy_streams_are_paired_and_forwarded(
    client: Client, echo_port: int
) -> None:
    async def source(
        namespace: str, name: str, port: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if port != 8080:
            raise errors.bad_request(f"error forwarding port {port} to pod {name}: refused")
        return await asyncio.open_connection("127.0.0.1", echo_port)

    client.server.api.port_forward_source = source
    await client.request("POST", PODS, pod("p"))

    async with client.session.ws_connect(
        f"{client.base}{PODS}/p/portforward", protocols=(spdyforwards.PROTOCOL,)
    ) as ws:
        assert ws.protocol == spdyforwards.PROTOCOL
        kubectl = SpdyClient(ws)
        await kubectl.open(1, "error", 8080, 0)
        await kubectl.open(3, "data", 8080, 0)
        await kubectl.open(5, "error", 9, 1)
        await kubectl.open(7, "data", 9, 1)
        await kubectl.send(spdy.Ping(1))
        await kubectl.send(spdy.DataFrame(3, b"hello"))
        await kubectl.send(spdy.DataFrame(3, b"", spdy.FLAG_FIN))
        frames = await kubectl.until(lambda fs: _data(fs, 3)[1] and _data(fs, 5)[1])

    replies = sorted(f.stream_id for f in frames if isinstance(f, spdy.SynReply))
    assert replies == [1, 3, 5, 7]
    assert spdy.Ping(1) in frames
    assert _data(frames, 3) == (b"HELLO", True)
    assert _data(frames, 5) == (b"error forwarding port 9 to pod p: refused", True)
