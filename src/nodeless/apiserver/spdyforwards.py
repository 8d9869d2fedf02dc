"""kubectl's port-forward: SPDY/3.1 tunnelled in a WebSocket (``SPDY/3.1+portforward.k8s.io``).

kubectl (client-go's SPDY-over-WebSocket dialer) runs a SPDY client over
the WebSocket's binary messages. For every local connection it opens two
streams carrying the headers ``streamType`` (``error`` then ``data``),
``port`` and ``requestID``; the server replies to both, connects the pair
to the pod's port, copies the data stream both ways (a FIN from kubectl
ends the write side) and, if the port cannot be reached, writes the reason
on the error stream, as the kubelet's port-forward server does. The session
lasts until kubectl closes the WebSocket.

This is the server side of a SPDY session, written on the framing of
``nodeless.streaming.spdy``: streams are opened by the client only, the
server never enforces flow control (spdystream, kubectl's side, neither
sends nor honours windows), and PINGs are echoed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging

import aiohttp
from aiohttp import web

from nodeless.api import errors
from nodeless.apiserver import portforwards
from nodeless.streaming import spdy

log = logging.getLogger(__name__)

PROTOCOL = "SPDY/3.1+portforward.k8s.io"
READ_CHUNK = 32 * 1024


@dataclasses.dataclass
class _Pair:
    """The error and data streams of one forwarded connection."""

    port: int
    request_id: str = ""
    error_stream: int = 0
    data_stream: int = 0
    writer: asyncio.StreamWriter | None = None
    pump: asyncio.Task[None] | None = None


class _Session:
    def __init__(self, ws: web.WebSocketResponse, connect: portforwards.Connect) -> None:
        self.ws = ws
        self.connect = connect
        self.encoder = spdy.FrameEncoder()
        self.decoder = spdy.FrameDecoder()
        self.pairs: dict[str, _Pair] = {}
        self.by_stream: dict[int, _Pair] = {}
        self.send_lock = asyncio.Lock()

    async def send(self, frame: spdy.Frame) -> None:
        # The encoder's compression context must see header frames in order.
        async with self.send_lock:
            await self.ws.send_bytes(self.encoder.encode(frame))

    async def run(self) -> None:
        async for message in self.ws:
            if message.type != aiohttp.WSMsgType.BINARY:
                if message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.ERROR):
                    return
                continue
            for frame in self.decoder.feed(bytes(message.data)):
                await self.handle(frame)

    async def handle(self, frame: spdy.Frame) -> None:
        if isinstance(frame, spdy.SynStream):
            await self.opened(frame)
        elif isinstance(frame, spdy.DataFrame):
            pair = self.by_stream.get(frame.stream_id)
            if pair is None or pair.writer is None or frame.stream_id != pair.data_stream:
                return
            if frame.data:
                pair.writer.write(frame.data)
                await pair.writer.drain()
            if frame.fin and pair.writer.can_write_eof():
                pair.writer.write_eof()
        elif isinstance(frame, spdy.RstStream):
            pair = self.by_stream.get(frame.stream_id)
            if pair is not None:
                self.end(pair)
        elif isinstance(frame, spdy.Ping):
            await self.send(frame)
        elif isinstance(frame, spdy.GoAway):
            await self.ws.close()

    async def opened(self, frame: spdy.SynStream) -> None:
        headers = {name: values[0] if values else "" for name, values in frame.headers.items()}
        kind = headers.get("streamtype", "")
        request_id = headers.get("requestid", "")
        await self.send(spdy.SynReply(frame.stream_id))
        try:
            port = portforwards.parse_port(headers.get("port", ""))
        except errors.StatusError as e:
            await self.send(spdy.DataFrame(frame.stream_id, e.message.encode(), spdy.FLAG_FIN))
            return
        pair = self.pairs.setdefault(request_id, _Pair(port, request_id))
        self.by_stream[frame.stream_id] = pair
        if kind == "error":
            pair.error_stream = frame.stream_id
        elif kind == "data":
            pair.data_stream = frame.stream_id
        if pair.error_stream and pair.data_stream and pair.writer is None:
            await self.forward(pair)

    async def forward(self, pair: _Pair) -> None:
        try:
            reader, writer = await self.connect(pair.port)
        except errors.StatusError as e:
            await self.send(spdy.DataFrame(pair.error_stream, e.message.encode(), spdy.FLAG_FIN))
            await self.send(spdy.DataFrame(pair.data_stream, b"", spdy.FLAG_FIN))
            self.forget(pair)
            return
        pair.writer = writer
        pair.pump = asyncio.create_task(self.copy_out(pair, reader))

    async def copy_out(self, pair: _Pair, reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(READ_CHUNK):
                await self.send(spdy.DataFrame(pair.data_stream, data))
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.send(spdy.DataFrame(pair.data_stream, b"", spdy.FLAG_FIN))
            await self.send(spdy.DataFrame(pair.error_stream, b"", spdy.FLAG_FIN))
        if pair.writer is not None:
            pair.writer.close()
        self.forget(pair)

    def forget(self, pair: _Pair) -> None:
        """A finished connection's bookkeeping goes, so a long session
        serving many connections holds only the live ones."""
        if self.pairs.get(pair.request_id) is pair:
            del self.pairs[pair.request_id]
        for stream_id in (pair.error_stream, pair.data_stream):
            if self.by_stream.get(stream_id) is pair:
                del self.by_stream[stream_id]

    def end(self, pair: _Pair) -> None:
        if pair.writer is not None:
            pair.writer.close()
        if pair.pump is not None:
            pair.pump.cancel()
        self.forget(pair)

    async def close(self) -> None:
        pairs = list(self.pairs.values())
        pumps = [p.pump for p in pairs if p.pump is not None]
        for pair in pairs:
            self.end(pair)
        await asyncio.gather(*pumps, return_exceptions=True)


async def serve(
    request: web.Request, connect: portforwards.Connect, shutting_down: asyncio.Event
) -> web.WebSocketResponse:
    """Upgrades to the tunnelling protocol and serves kubectl's SPDY session."""
    ws = web.WebSocketResponse(protocols=(PROTOCOL,), max_msg_size=0)
    await ws.prepare(request)
    session = _Session(ws, connect)
    running = asyncio.create_task(session.run())
    stopping = asyncio.create_task(shutting_down.wait())
    try:
        await asyncio.wait({running, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if running.done() and not running.cancelled() and running.exception() is not None:
            log.info("port-forward session ended: %r", running.exception())
    finally:
        for task in (running, stopping):
            task.cancel()
        await asyncio.gather(running, stopping, return_exceptions=True)
        await session.close()
        with contextlib.suppress(Exception):
            await ws.close()
    return ws
