"""pods/exec and pods/attach: the client's WebSocket relayed to the runtime's streaming server.

Kubernetes clients stream exec and attach over a WebSocket whose frames
start with a channel byte (0 stdin, 1 stdout, 2 stderr, 3 the error channel
carrying the final ``Status``, 4 terminal resize); ``v5.channel.k8s.io``
adds channel 255, a client's "I closed this stream" signal (kubectl sends it
when stdin ends). The kube-apiserver hands such streams to the kubelet,
which hands them to the CRI runtime's streaming server; Nodeless asks the
instance provider for that server's URL and relays frames both ways
itself, so the runtime's own messages (the exit code's ``NonZeroExitCode``
Status) reach the client unchanged.

The upstream is a WebSocket ``v4.channel.k8s.io`` connection, which has no
way to close stdin alone: a v5 client's stdin close is not passed on (the
command sees no end of input). The Python client sends stdin as text
frames; they are passed on as bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web
from multidict import MultiMapping

from nodeless.api import errors
from nodeless.apiserver import requests

log = logging.getLogger(__name__)

V5 = "v5.channel.k8s.io"
V4 = "v4.channel.k8s.io"
# What the client may choose, preferred first; the runtime is always spoken to in v4.
PROTOCOLS = (V5, V4)
STDIN, STDOUT, STDERR, ERROR, RESIZE = 0, 1, 2, 3, 4
CLOSE = 255  # v5: the client closed the stream whose number follows
UPSTREAM_TIMEOUT = 10.0  # seconds to reach the runtime's streaming server


@dataclasses.dataclass(frozen=True)
class StreamOptions:
    """``PodExecOptions`` / ``PodAttachOptions``; ``command`` is None for attach."""

    container: str
    command: list[str] | None
    stdin: bool
    stdout: bool
    stderr: bool
    tty: bool


# (namespace, pod, container, command or None for attach, stdin, stdout,
# stderr, tty) -> the runtime's streaming URL. Raises ``errors.StatusError``
# for what cannot be streamed to. Registered by whatever runs the instances.
StreamSource = Callable[[str, str, str, "list[str] | None", bool, bool, bool, bool], Awaitable[str]]


def parse_options(query: MultiMapping[str], subresource: str) -> StreamOptions:
    """The options of ``pods/{name}/exec`` or ``/attach`` as upstream's
    validation reads them (400 for a missing command or no stream at all)."""
    command: list[str] | None = None
    if subresource == "exec":
        command = [str(c) for c in query.getall("command", [])]
        if not command:
            raise errors.bad_request("you must specify at least 1 command")
    options = StreamOptions(
        container=query.get("container", ""),
        command=command,
        stdin=requests.bool_param(query.get("stdin")),
        stdout=requests.bool_param(query.get("stdout")),
        stderr=requests.bool_param(query.get("stderr")),
        tty=requests.bool_param(query.get("tty")),
    )
    if not (options.stdin or options.stdout or options.stderr):
        raise errors.bad_request("you must specify at least 1 of stdin, stdout, stderr")
    return options


def check_phase(pod: dict[str, Any], subresource: str) -> None:
    """A finished pod has nothing to exec in or attach to (upstream's words)."""
    phase = (pod.get("status") or {}).get("phase")
    if phase in ("Succeeded", "Failed"):
        verb = "exec into" if subresource == "exec" else "attach to"
        raise errors.bad_request(
            f"cannot {verb} a container in a completed pod; current phase is {phase}"
        )


def is_websocket(request: web.Request) -> bool:
    return (
        request.headers.get("Upgrade", "").lower() == "websocket"
        and "upgrade" in request.headers.get("Connection", "").lower()
    )


async def relay(
    request: web.Request, upstream_url: str, shutting_down: asyncio.Event
) -> web.StreamResponse:
    """Connects to the runtime's streaming server first (so a refusal is
    still an HTTP error the client can print), then upgrades the client and
    copies frames both ways until either side ends."""
    session = aiohttp.ClientSession()
    try:
        upstream = await session.ws_connect(
            upstream_url,
            protocols=(V4,),
            timeout=aiohttp.ClientWSTimeout(ws_close=UPSTREAM_TIMEOUT),
            max_msg_size=0,
        )
    except (aiohttp.ClientError, OSError) as e:
        await session.close()
        raise errors.StatusError(500, "InternalError", f"error dialing backend: {e}") from None
    client = web.WebSocketResponse(protocols=PROTOCOLS, max_msg_size=0, autoping=True)
    try:
        await client.prepare(request)
        v5 = client.ws_protocol == V5
        await _pump(client, upstream, v5=v5, shutting_down=shutting_down)
    finally:
        with contextlib.suppress(Exception):
            await upstream.close()
        await session.close()
        with contextlib.suppress(Exception):
            await client.close()
    return client


async def _pump(
    client: web.WebSocketResponse,
    upstream: aiohttp.ClientWebSocketResponse,
    *,
    v5: bool,
    shutting_down: asyncio.Event,
) -> None:
    async def to_upstream() -> None:
        async for message in client:
            if message.type == aiohttp.WSMsgType.BINARY:
                data = bytes(message.data)
            elif message.type == aiohttp.WSMsgType.TEXT:
                data = str(message.data).encode()  # the Python client writes text frames
            else:
                break
            if not data:
                continue
            if v5 and data[0] == CLOSE:
                # v4 upstream cannot half-close: the stream stays open
                log.debug("client closed stream %s", data[1:2].hex())
                continue
            await upstream.send_bytes(data)

    async def to_client() -> None:
        async for message in upstream:
            if message.type == aiohttp.WSMsgType.BINARY:
                await client.send_bytes(bytes(message.data))
            elif message.type == aiohttp.WSMsgType.TEXT:
                await client.send_bytes(str(message.data).encode())
            else:
                break

    tasks = {
        asyncio.create_task(to_upstream()),
        asyncio.create_task(to_client()),
        asyncio.create_task(shutting_down.wait()),
    }
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if not task.cancelled() and (error := task.exception()) is not None:
                if not isinstance(error, (ConnectionResetError, aiohttp.ClientError)):
                    log.warning("exec stream ended: %r", error)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
