"""pods/portforward: connections to a pod's ports carried over the client's WebSocket.

Two framings reach this endpoint. The official Python client (and
client-go's older WebSocket mode) asks for ``v4.channel.k8s.io`` with the
ports in the query: each port ``i`` gets a data channel ``2i`` and an error
channel ``2i+1``, both opened with a frame holding the port number (two
bytes, little-endian); payload frames start with their channel byte.
kubectl tunnels SPDY/3.1 inside the WebSocket (``SPDY/3.1+portforward.k8s.io``)
and opens a pair of SPDY streams (``error``, ``data``) per connection,
naming the port in their headers; that framing lives in ``spdyforwards``.

Each forwarded connection is one the instance provider opens to the pod.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp import web
from multidict import MultiMapping

from nodeless.api import errors

log = logging.getLogger(__name__)

V4 = "v4.channel.k8s.io"
V5 = "v5.channel.k8s.io"
CHANNEL_PROTOCOLS = (V5, V4)
READ_CHUNK = 32 * 1024

# (namespace, pod, port) -> a connection to that port of the pod; raises
# ``errors.StatusError`` when there is none. Registered by whatever runs the instances.
PortForwardSource = Callable[
    [str, str, int], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]
]
# (port) -> a connection, for one pod
Connect = Callable[[int], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


def parse_port(text: str) -> int:
    """A port as upstream validates one (1-65535)."""
    try:
        port = int(text)
    except ValueError:
        raise errors.bad_request(f"unable to parse {text!r} as a port: invalid syntax") from None
    if not 0 < port < 65536:
        raise errors.bad_request(f"port {port} must be > 0 and < 65536")
    return port


def query_ports(query: MultiMapping[str]) -> list[int]:
    """The ``ports`` of a channel-protocol request (each may list several, comma-separated)."""
    ports = [
        parse_port(part.strip())
        for value in query.getall("ports", [])
        for part in value.split(",")
        if part.strip()
    ]
    if not ports:
        raise errors.bad_request('query parameter "ports" is required')
    return ports


async def serve_channels(
    request: web.Request, ports: list[int], connect: Connect, shutting_down: asyncio.Event
) -> web.WebSocketResponse:
    """The channel protocol: one connection per requested port for the
    life of the WebSocket; a port that cannot be reached gets its error on
    its error channel, the others keep working."""
    ws = web.WebSocketResponse(protocols=CHANNEL_PROTOCOLS, max_msg_size=0)
    await ws.prepare(request)
    writers: dict[int, asyncio.StreamWriter] = {}
    pumps: list[asyncio.Task[None]] = []
    try:
        for index, port in enumerate(ports):
            prefix = port.to_bytes(2, "little")
            await ws.send_bytes(bytes([2 * index]) + prefix)
            await ws.send_bytes(bytes([2 * index + 1]) + prefix)
            try:
                reader, writer = await connect(port)
            except errors.StatusError as e:
                await ws.send_bytes(bytes([2 * index + 1]) + e.message.encode())
                continue
            writers[index] = writer
            pumps.append(asyncio.create_task(_to_client(reader, ws, 2 * index)))
        # The session ends when the client goes, the server stops, or every
        # pod connection has ended (the client then sees its sockets close).
        ended = asyncio.create_task(_all_done(pumps))
        closing = asyncio.create_task(shutting_down.wait())
        receiving = asyncio.create_task(_from_client(ws, writers))
        waiting = {ended, closing, receiving}
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        for task in waiting:
            task.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
    finally:
        for task in pumps:
            task.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)
        for writer in writers.values():
            writer.close()
        with contextlib.suppress(Exception):
            await ws.close()
    return ws


async def _all_done(tasks: list[asyncio.Task[None]]) -> None:
    await asyncio.gather(*tasks, return_exceptions=True)


async def _to_client(reader: asyncio.StreamReader, ws: web.WebSocketResponse, channel: int) -> None:
    prefix = bytes([channel])
    while data := await reader.read(READ_CHUNK):
        await ws.send_bytes(prefix + data)


async def _from_client(ws: web.WebSocketResponse, writers: dict[int, asyncio.StreamWriter]) -> None:
    async for message in ws:
        if message.type == aiohttp.WSMsgType.BINARY:
            data = bytes(message.data)
        elif message.type == aiohttp.WSMsgType.TEXT:
            data = str(message.data).encode()
        else:
            return
        if len(data) < 2 or data[0] % 2:
            continue  # clients write data channels only
        writer = writers.get(data[0] // 2)
        if writer is None:
            continue
        writer.write(data[1:])
        await writer.drain()
