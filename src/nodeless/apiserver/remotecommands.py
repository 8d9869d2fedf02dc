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

The runtime is spoken to as the kubelet speaks to it: SPDY/3.1 with one
stream per channel (``nodeless.streaming.spdy``), so a v5 client's stdin
close reaches the command as end of input (``kubectl cp`` into a pod,
``echo x | kubectl exec -i``). A v4 client cannot close stdin alone, as
upstream. The Python client sends stdin as text frames; they are passed
on as bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from aiohttp import web
from multidict import MultiMapping

from nodeless.api import errors
from nodeless.apiserver import requests
from nodeless.streaming import spdy

log = logging.getLogger(__name__)

V5 = "v5.channel.k8s.io"
V4 = "v4.channel.k8s.io"
# What the client may choose, preferred first.
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
    request: web.Request,
    upstream_url: str,
    options: StreamOptions,
    shutting_down: asyncio.Event,
) -> web.StreamResponse:
    """Connects to the runtime's streaming server first (so a refusal is
    still an HTTP error the client can print), then upgrades the client and
    copies both ways: stdin, resizes and stdin's close to the runtime;
    stdout, stderr and finally the command's Status to the client."""
    try:
        remote = await spdy.connect_remotecommand(
            upstream_url,
            stdin=options.stdin,
            stdout=options.stdout,
            stderr=options.stderr,
            tty=options.tty,
            timeout=UPSTREAM_TIMEOUT,
        )
    except (spdy.SpdyError, OSError, TimeoutError) as e:
        raise errors.StatusError(500, "InternalError", f"error dialing backend: {e}") from None
    client = web.WebSocketResponse(protocols=PROTOCOLS, max_msg_size=0)
    try:
        await client.prepare(request)
        await _pump(client, remote, v5=client.ws_protocol == V5, shutting_down=shutting_down)
    finally:
        with contextlib.suppress(Exception):
            await remote.close()
        with contextlib.suppress(Exception):
            await client.close()
    return client


async def _pump(
    client: web.WebSocketResponse,
    remote: spdy.RemoteCommand,
    *,
    v5: bool,
    shutting_down: asyncio.Event,
) -> None:
    async def to_remote() -> None:
        async for message in client:
            if message.type == aiohttp.WSMsgType.BINARY:
                data = bytes(message.data)
            elif message.type == aiohttp.WSMsgType.TEXT:
                data = str(message.data).encode()  # the Python client writes text frames
            else:
                break
            if not data:
                continue
            channel, payload = data[0], data[1:]
            if channel == STDIN and payload and "stdin" in remote.streams:
                await remote.write_stdin(payload)
            elif channel == RESIZE and "resize" in remote.streams:
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    size = json.loads(payload)
                    await remote.resize(int(size["Width"]), int(size["Height"]))
            elif v5 and channel == CLOSE and payload[:1] == bytes([STDIN]):
                if "stdin" in remote.streams:
                    await remote.close_stdin()

    async def to_client() -> None:
        async for name, chunk in remote.output():
            await client.send_bytes(bytes([STDOUT if name == "stdout" else STDERR]) + chunk)
        status = await remote.status()
        await client.send_bytes(bytes([ERROR]) + json.dumps(status).encode())

    tasks = {
        asyncio.create_task(to_remote()),
        asyncio.create_task(to_client()),
        asyncio.create_task(shutting_down.wait()),
    }
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if not task.cancelled() and (error := task.exception()) is not None:
                if not isinstance(error, (ConnectionResetError, spdy.SpdyError)):
                    log.warning("exec stream ended: %r", error)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
