"""SPDY/3.1 framing, an asyncio SPDY connection, and a remotecommand client.

Why SPDY at all: a CRI runtime's streaming server (containerd's serves
``http://127.0.0.1:<port>/exec/<token>``, the URL ``Exec``/``Attach`` return)
speaks the Kubernetes ``remotecommand`` protocol over either WebSocket or
SPDY/3.1. Over WebSocket (``v4.channel.k8s.io``) stdin cannot be half-closed,
so ``echo hi | kubectl exec -i pod -- cat`` never sees EOF; over SPDY each of
stdin, stdout, stderr, the error stream and the resize stream is a stream of
its own and stdin ends with a FIN. That is what the kubelet and the API server
use, and what ``connect_remotecommand`` here does.

Three layers, each usable alone:

* Framing (``FrameEncoder``, ``FrameDecoder`` and the frame dataclasses):
  pure, no I/O. SPDY/3 compresses every name/value header block with zlib
  primed with a fixed dictionary (``HEADER_DICTIONARY``), one compression
  context per direction for the whole connection, each block ending with a
  ``Z_SYNC_FLUSH``; so an encoder and a decoder belong to one connection and
  must see every header-carrying frame of their direction, in order.
* ``SpdyConnection``: the client side of a SPDY session over asyncio streams.
  It behaves as Go's ``moby/spdystream`` (containerd's and the kubelet's
  implementation) expects, which is laxer than the spec on flow control:
  spdystream never sends WINDOW_UPDATE and ignores those it receives, so
  honouring the peer's 64 KiB send window would stall stdin forever after
  64 KiB. This side therefore never waits for send window, but does send
  WINDOW_UPDATE as its reader consumes data, so a peer that does enforce
  windows never stalls either. Backpressure comes, as in spdystream, from
  not reading the socket while a stream's unread data is over a limit.
* ``connect_remotecommand`` / ``RemoteCommand``: the HTTP/1.1 upgrade and the
  streams of client-go's ``streamProtocolV4`` (``v4.channel.k8s.io``, with
  v3/v2/v1 accepted as fallbacks).

Only plain ``http://`` URLs are supported: the CRI streaming server listens on
loopback without TLS.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
import urllib.parse
import zlib
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

VERSION = 3

# Control frame types (SPDY/3 section 2.6).
TYPE_SYN_STREAM = 1
TYPE_SYN_REPLY = 2
TYPE_RST_STREAM = 3
TYPE_SETTINGS = 4
TYPE_PING = 6
TYPE_GOAWAY = 7
TYPE_HEADERS = 8
TYPE_WINDOW_UPDATE = 9

FLAG_FIN = 0x01
FLAG_UNIDIRECTIONAL = 0x02
FLAG_SETTINGS_CLEAR_SETTINGS = 0x01

# RST_STREAM status codes.
PROTOCOL_ERROR = 1
INVALID_STREAM = 2
REFUSED_STREAM = 3
UNSUPPORTED_VERSION = 4
CANCEL = 5
INTERNAL_ERROR = 6
FLOW_CONTROL_ERROR = 7
STREAM_IN_USE = 8
STREAM_ALREADY_CLOSED = 9
FRAME_TOO_LARGE = 11

# GOAWAY status codes.
GOAWAY_OK = 0
GOAWAY_PROTOCOL_ERROR = 1
GOAWAY_INTERNAL_ERROR = 2

# SETTINGS ids.
SETTINGS_INITIAL_WINDOW_SIZE = 7

MAX_LENGTH = (1 << 24) - 1
"""The largest payload a frame's 24-bit length can describe."""

MAX_HEADER_BLOCK = 1 << 20
"""The largest decompressed header block accepted: a guard against a block
that inflates without bound, far above anything remotecommand sends."""

DEFAULT_WINDOW = 64 * 1024
"""SPDY/3's initial stream window; WINDOW_UPDATEs are sent well before a
peer that enforces it would run out."""

STREAM_ID_MASK = 0x7FFFFFFF

# The SPDY/3 header compression dictionary (spec section 2.6.10.1): length
# prefixed common header names and values, then a run of common strings.
# 1423 bytes; its Adler-32 (the DICTID every compressed block names) is
# 0xE3C6A7C2.
HEADER_DICTIONARY = (
    b"\x00\x00\x00\x07options\x00\x00\x00\x04head\x00\x00\x00\x04post\x00\x00\x00\x03"
    b"put\x00\x00\x00\x06delete\x00\x00\x00\x05trace\x00\x00\x00\x06accept\x00\x00\x00"
    b"\x0eaccept-charset\x00\x00\x00\x0faccept-encoding\x00\x00\x00\x0faccept-langua"
    b"ge\x00\x00\x00\raccept-ranges\x00\x00\x00\x03age\x00\x00\x00\x05allow\x00\x00\x00"
    b"\rauthorization\x00\x00\x00\rcache-control\x00\x00\x00\nconnection\x00\x00\x00"
    b"\x0ccontent-base\x00\x00\x00\x10content-encoding\x00\x00\x00\x10content-langua"
    b"ge\x00\x00\x00\x0econtent-length\x00\x00\x00\x10content-location\x00\x00\x00\x0b"
    b"content-md5\x00\x00\x00\rcontent-range\x00\x00\x00\x0ccontent-type\x00\x00\x00"
    b"\x04date\x00\x00\x00\x04etag\x00\x00\x00\x06expect\x00\x00\x00\x07expires\x00\x00"
    b"\x00\x04from\x00\x00\x00\x04host\x00\x00\x00\x08if-match\x00\x00\x00\x11if-mod"
    b"ified-since\x00\x00\x00\rif-none-match\x00\x00\x00\x08if-range\x00\x00\x00\x13"
    b"if-unmodified-since\x00\x00\x00\rlast-modified\x00\x00\x00\x08location\x00\x00"
    b"\x00\x0cmax-forwards\x00\x00\x00\x06pragma\x00\x00\x00\x12proxy-authenticate\x00"
    b"\x00\x00\x13proxy-authorization\x00\x00\x00\x05range\x00\x00\x00\x07referer\x00"
    b"\x00\x00\x0bretry-after\x00\x00\x00\x06server\x00\x00\x00\x02te\x00\x00\x00\x07"
    b"trailer\x00\x00\x00\x11transfer-encoding\x00\x00\x00\x07upgrade\x00\x00\x00\nu"
    b"ser-agent\x00\x00\x00\x04vary\x00\x00\x00\x03via\x00\x00\x00\x07warning\x00\x00"
    b"\x00\x10www-authenticate\x00\x00\x00\x06method\x00\x00\x00\x03get\x00\x00\x00\x06"
    b"status\x00\x00\x00\x06200 OK\x00\x00\x00\x07version\x00\x00\x00\x08HTTP/1.1\x00"
    b"\x00\x00\x03url\x00\x00\x00\x06public\x00\x00\x00\nset-cookie\x00\x00\x00\nkee"
    b"p-alive\x00\x00\x00\x06origin1001012012022052063003023033043053063074024054064"
    b"07408409410411412413414415416417502504505203 Non-Authoritative Information204 "
    b"No Content301 Moved Permanently400 Bad Request401 Unauthorized403 Forbidden404"
    b" Not Found500 Internal Server Error501 Not Implemented503 Service UnavailableJ"
    b"an Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, F"
    b"ri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,image/gif,application/x"
    b"ml,application/xhtml+xml,text/plain,text/javascript,publicprivatemax-age=gzip,"
    b"deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."
)

Headers = dict[str, list[str]]
"""A name/value header block: lowercase names, each with one or more values
(joined by NUL on the wire), as Go's ``http.Header`` holds them."""


class SpdyError(Exception):
    """The session cannot go on: a malformed frame, or the connection is gone."""


class SpdyProtocolError(SpdyError):
    """The peer sent bytes that are not valid SPDY/3."""


class SpdyStreamReset(SpdyError):
    """The stream was reset (RST_STREAM) by the peer or by this side."""

    def __init__(self, stream_id: int, status: int) -> None:
        super().__init__(f"stream {stream_id} reset (status {status})")
        self.stream_id = stream_id
        self.status = status


class UpgradeError(SpdyError):
    """The server did not switch to SPDY: its HTTP status and body say why."""

    def __init__(self, status: int, reason: str, body: str) -> None:
        super().__init__(f"upgrade to SPDY/3.1 refused: {status} {reason}: {body.strip()}"[:1000])
        self.status = status
        self.reason = reason
        self.body = body


# --- frames ---


@dataclass(frozen=True)
class DataFrame:
    stream_id: int
    data: bytes = b""
    flags: int = 0

    @property
    def fin(self) -> bool:
        return bool(self.flags & FLAG_FIN)


@dataclass(frozen=True)
class SynStream:
    stream_id: int
    headers: Headers = field(default_factory=dict)
    associated_to: int = 0
    priority: int = 0
    slot: int = 0
    flags: int = 0

    @property
    def fin(self) -> bool:
        return bool(self.flags & FLAG_FIN)


@dataclass(frozen=True)
class SynReply:
    stream_id: int
    headers: Headers = field(default_factory=dict)
    flags: int = 0

    @property
    def fin(self) -> bool:
        return bool(self.flags & FLAG_FIN)


@dataclass(frozen=True)
class RstStream:
    stream_id: int
    status: int


@dataclass(frozen=True)
class Setting:
    id: int
    value: int
    flags: int = 0


@dataclass(frozen=True)
class Settings:
    entries: tuple[Setting, ...] = ()
    flags: int = 0


@dataclass(frozen=True)
class Ping:
    ping_id: int


@dataclass(frozen=True)
class GoAway:
    last_good_stream_id: int
    status: int = GOAWAY_OK


@dataclass(frozen=True)
class HeadersFrame:
    stream_id: int
    headers: Headers = field(default_factory=dict)
    flags: int = 0

    @property
    def fin(self) -> bool:
        return bool(self.flags & FLAG_FIN)


@dataclass(frozen=True)
class WindowUpdate:
    stream_id: int
    delta: int


@dataclass(frozen=True)
class UnknownControlFrame:
    """A control frame of a type this module does not know (CREDENTIAL, or a
    future one): the spec says to ignore it, so it is decoded, not refused."""

    frame_type: int
    flags: int
    payload: bytes


Frame = (
    DataFrame
    | SynStream
    | SynReply
    | RstStream
    | Settings
    | Ping
    | GoAway
    | HeadersFrame
    | WindowUpdate
    | UnknownControlFrame
)


def make_headers(headers: Mapping[str, str | Sequence[str]]) -> Headers:
    """``headers`` as a header block: names lowercased (SPDY/3 requires it;
    Go's framer does the same), single values wrapped in a list."""
    block: Headers = {}
    for name, value in headers.items():
        values = [value] if isinstance(value, str) else list(value)
        block.setdefault(name.lower(), []).extend(values)
    return block


def encode_header_block(headers: Headers) -> bytes:
    """The uncompressed name/value block: 32-bit count, then 32-bit length
    prefixed names and values, several values of a name joined by NUL."""
    parts = [struct.pack(">I", len(headers))]
    for name, values in headers.items():
        if not name or name != name.lower():
            raise ValueError(f"header name {name!r} must be non-empty and lowercase")
        raw_name = name.encode()
        raw_value = b"\x00".join(v.encode() for v in values)
        parts += [struct.pack(">I", len(raw_name)), raw_name]
        parts += [struct.pack(">I", len(raw_value)), raw_value]
    return b"".join(parts)


def decode_header_block(block: bytes) -> Headers:
    """Parses an uncompressed name/value block; a truncated or overlong one,
    an empty or repeated name is a protocol error."""
    view = memoryview(block)

    def take(n: int, pos: int) -> tuple[bytes, int]:
        if pos + n > len(view):
            raise SpdyProtocolError("truncated header block")
        return bytes(view[pos : pos + n]), pos + n

    raw, pos = take(4, 0)
    (count,) = struct.unpack(">I", raw)
    headers: Headers = {}
    for _ in range(count):
        raw, pos = take(4, pos)
        name_bytes, pos = take(struct.unpack(">I", raw)[0], pos)
        raw, pos = take(4, pos)
        value_bytes, pos = take(struct.unpack(">I", raw)[0], pos)
        name = name_bytes.decode("utf-8", "replace")
        if not name:
            raise SpdyProtocolError("empty header name")
        if name in headers:
            raise SpdyProtocolError(f"header {name!r} repeated")
        headers[name.lower()] = value_bytes.decode("utf-8", "replace").split("\x00")
    if pos != len(view):
        raise SpdyProtocolError("trailing bytes after the header block")
    return headers


def _control(frame_type: int, flags: int, payload: bytes) -> bytes:
    if len(payload) > MAX_LENGTH:
        raise ValueError("control frame payload too long")
    return struct.pack(">HHI", 0x8000 | VERSION, frame_type, (flags << 24) | len(payload)) + payload


def _stream_id(value: int) -> int:
    if not 0 < value <= STREAM_ID_MASK:
        raise ValueError(f"stream id {value} out of range")
    return value


class FrameEncoder:
    """Frames to bytes, for one direction of one connection: it owns the
    header compression context, so every header block sent on the connection
    must go through the same encoder, in the order the bytes are written."""

    def __init__(self) -> None:
        self._compressor = zlib.compressobj(zlib.Z_BEST_COMPRESSION, zdict=HEADER_DICTIONARY)

    def _compress(self, headers: Headers) -> bytes:
        block = encode_header_block(headers)
        return self._compressor.compress(block) + self._compressor.flush(zlib.Z_SYNC_FLUSH)

    def encode(self, frame: Frame) -> bytes:
        match frame:
            case DataFrame(stream_id, data, flags):
                if len(data) > MAX_LENGTH:
                    raise ValueError("data frame too long: split it")
                return struct.pack(">II", _stream_id(stream_id), (flags << 24) | len(data)) + data
            case SynStream(stream_id, headers, associated_to, priority, slot, flags):
                head = struct.pack(
                    ">IIBB",
                    _stream_id(stream_id),
                    associated_to & STREAM_ID_MASK,
                    (priority & 0x7) << 5,
                    slot,
                )
                return _control(TYPE_SYN_STREAM, flags, head + self._compress(headers))
            case SynReply(stream_id, headers, flags):
                payload = struct.pack(">I", _stream_id(stream_id)) + self._compress(headers)
                return _control(TYPE_SYN_REPLY, flags, payload)
            case HeadersFrame(stream_id, headers, flags):
                payload = struct.pack(">I", _stream_id(stream_id)) + self._compress(headers)
                return _control(TYPE_HEADERS, flags, payload)
            case RstStream(stream_id, status):
                return _control(
                    TYPE_RST_STREAM, 0, struct.pack(">II", _stream_id(stream_id), status)
                )
            case Settings(entries, flags):
                payload = struct.pack(">I", len(entries)) + b"".join(
                    struct.pack(">II", (e.flags << 24) | (e.id & 0xFFFFFF), e.value)
                    for e in entries
                )
                return _control(TYPE_SETTINGS, flags, payload)
            case Ping(ping_id):
                return _control(TYPE_PING, 0, struct.pack(">I", ping_id))
            case GoAway(last_good_stream_id, status):
                payload = struct.pack(">II", last_good_stream_id & STREAM_ID_MASK, status)
                return _control(TYPE_GOAWAY, 0, payload)
            case WindowUpdate(stream_id, delta):
                if not 0 < delta <= STREAM_ID_MASK:
                    raise ValueError(f"window delta {delta} out of range")
                return _control(TYPE_WINDOW_UPDATE, 0, struct.pack(">II", stream_id, delta))
            case UnknownControlFrame(frame_type, flags, payload):
                return _control(frame_type, flags, payload)
        raise TypeError(f"not a SPDY frame: {frame!r}")


class FrameDecoder:
    """Bytes to frames, incrementally: ``feed`` whatever the socket gave and
    get back the frames it completed; a partial frame waits in the buffer.
    Owns the receiving header decompression context, so it must see every
    frame of its direction."""

    def __init__(self, *, max_header_block: int = MAX_HEADER_BLOCK) -> None:
        self._buffer = bytearray()
        self._decompressor = zlib.decompressobj(zdict=HEADER_DICTIONARY)
        self._max_header_block = max_header_block

    @property
    def pending(self) -> int:
        """Bytes buffered towards a frame not yet complete."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[Frame]:
        self._buffer += data
        frames: list[Frame] = []
        while len(self._buffer) >= 8:
            first, second = struct.unpack_from(">II", self._buffer)
            length = second & 0xFFFFFF
            if len(self._buffer) < 8 + length:
                break
            payload = bytes(self._buffer[8 : 8 + length])
            del self._buffer[: 8 + length]
            flags = second >> 24
            if first & 0x80000000:
                version = (first >> 16) & 0x7FFF
                if version != VERSION:
                    raise SpdyProtocolError(f"SPDY version {version}, not {VERSION}")
                frames.append(self._control(first & 0xFFFF, flags, payload))
            else:
                stream_id = first & STREAM_ID_MASK
                if stream_id == 0:
                    raise SpdyProtocolError("data frame on stream 0")
                frames.append(DataFrame(stream_id, payload, flags))
        return frames

    def _headers(self, compressed: bytes) -> Headers:
        try:
            block = self._decompressor.decompress(compressed, self._max_header_block + 1)
        except zlib.error as e:
            raise SpdyProtocolError(f"header block does not decompress: {e}") from e
        if len(block) > self._max_header_block or self._decompressor.unconsumed_tail:
            raise SpdyProtocolError("header block too large")
        return decode_header_block(block)

    def _control(self, frame_type: int, flags: int, payload: bytes) -> Frame:
        def need(n: int) -> None:
            if len(payload) < n:
                raise SpdyProtocolError(f"control frame type {frame_type} too short")

        def exactly(n: int) -> None:
            if len(payload) != n:
                raise SpdyProtocolError(f"control frame type {frame_type}: length {len(payload)}")

        def stream_id() -> int:
            value = int.from_bytes(payload[:4], "big") & STREAM_ID_MASK
            if value == 0:
                raise SpdyProtocolError(f"control frame type {frame_type} on stream 0")
            return value

        if frame_type == TYPE_SYN_STREAM:
            need(10)
            associated, priority, slot = struct.unpack_from(">IBB", payload, 4)
            return SynStream(
                stream_id(),
                self._headers(payload[10:]),
                associated & STREAM_ID_MASK,
                priority >> 5,
                slot,
                flags,
            )
        if frame_type == TYPE_SYN_REPLY:
            need(4)
            return SynReply(stream_id(), self._headers(payload[4:]), flags)
        if frame_type == TYPE_HEADERS:
            need(4)
            return HeadersFrame(stream_id(), self._headers(payload[4:]), flags)
        if frame_type == TYPE_RST_STREAM:
            exactly(8)
            return RstStream(stream_id(), int.from_bytes(payload[4:8], "big"))
        if frame_type == TYPE_SETTINGS:
            need(4)
            count = int.from_bytes(payload[:4], "big")
            exactly(4 + 8 * count)
            entries = []
            for i in range(count):
                flag_id, value = struct.unpack_from(">II", payload, 4 + 8 * i)
                entries.append(Setting(flag_id & 0xFFFFFF, value, flag_id >> 24))
            return Settings(tuple(entries), flags)
        if frame_type == TYPE_PING:
            exactly(4)
            return Ping(int.from_bytes(payload, "big"))
        if frame_type == TYPE_GOAWAY:
            # SPDY/3 has a status after the last good stream id; SPDY/2 had not.
            exactly(8)
            last, status = struct.unpack(">II", payload)
            return GoAway(last & STREAM_ID_MASK, status)
        if frame_type == TYPE_WINDOW_UPDATE:
            exactly(8)
            _, delta = struct.unpack(">II", payload)
            return WindowUpdate(
                int.from_bytes(payload[:4], "big") & STREAM_ID_MASK, delta & STREAM_ID_MASK
            )
        return UnknownControlFrame(frame_type, flags, payload)


# --- the connection ---

MAX_DATA_FRAME = 32 * 1024
"""Writes are split into data frames of at most this: small enough that one
stream's bulk does not hold the others up for long."""

MAX_BUFFERED = 1 << 20
"""Unread bytes a stream may hold before the connection stops reading the
socket (TCP backpressure, as spdystream's unbuffered channels give)."""


class SpdyStream:
    """One stream of a ``SpdyConnection``: write and FIN this side, read the
    peer's side until its FIN (``read`` returns ``b""``)."""

    def __init__(self, connection: SpdyConnection, stream_id: int, headers: Headers) -> None:
        self.connection = connection
        self.id = stream_id
        self.headers = headers
        self.reply_headers: Headers = {}
        self.reset_status: int | None = None
        self.local_closed = False
        self.remote_closed = False
        self._replied = asyncio.Event()
        self._replied_ok = False
        self._chunks: asyncio.Queue[bytes] = asyncio.Queue()
        self._buffered = 0
        self._drained = asyncio.Event()
        self._drained.set()
        self._unacknowledged = 0

    def __repr__(self) -> str:
        return f"<SpdyStream {self.id} {self.headers}>"

    async def wait_reply(self) -> Headers:
        """The SYN_REPLY's headers, once it came; raises if the stream was
        reset or the connection lost before."""
        await self._replied.wait()
        if self._replied_ok:
            return self.reply_headers
        if self.reset_status is not None:
            raise SpdyStreamReset(self.id, self.reset_status)
        raise SpdyError(f"stream {self.id}: connection closed before SYN_REPLY")

    async def write(self, data: bytes) -> None:
        if self.reset_status is not None:
            raise SpdyStreamReset(self.id, self.reset_status)
        if self.local_closed:
            raise SpdyError(f"stream {self.id}: write after close")
        view = memoryview(data)
        for start in range(0, len(view), MAX_DATA_FRAME):
            await self.connection.send(
                DataFrame(self.id, bytes(view[start : start + MAX_DATA_FRAME]))
            )

    async def close(self) -> None:
        """Half-closes: an empty DATA frame with FIN, as spdystream's Close
        sends; the peer's side stays readable."""
        if self.local_closed or self.reset_status is not None or self.connection.closed:
            self.local_closed = True
            return
        self.local_closed = True
        await self.connection.send(DataFrame(self.id, b"", FLAG_FIN))
        self.connection._forget_if_done(self)

    async def reset(self, status: int = CANCEL) -> None:
        """Tears both sides down with RST_STREAM."""
        if self.reset_status is not None:
            return
        self._on_reset(status)
        if not self.connection.closed:
            with contextlib.suppress(SpdyError, ConnectionError):
                await self.connection.send(RstStream(self.id, status))

    async def read(self) -> bytes:
        """The next chunk the peer sent, ``b""`` once it finished (FIN), the
        stream was reset or the connection ended."""
        if self._chunks.empty() and self._ended:
            return b""
        chunk = await self._chunks.get()
        if chunk:
            self._buffered -= len(chunk)
            if self._buffered <= MAX_BUFFERED:
                self._drained.set()
            await self._acknowledge(len(chunk))
        else:
            self._chunks.put_nowait(b"")  # later reads see the end too
        return chunk

    async def read_all(self) -> bytes:
        parts = []
        while chunk := await self.read():
            parts.append(chunk)
        return b"".join(parts)

    @property
    def _ended(self) -> bool:
        return self.remote_closed or self.reset_status is not None or self.connection.closed

    async def _acknowledge(self, consumed: int) -> None:
        # WINDOW_UPDATE once half the initial window was consumed: a peer
        # that enforces the window never reaches zero, one that does not
        # (spdystream) ignores these.
        self._unacknowledged += consumed
        if self._unacknowledged >= DEFAULT_WINDOW // 2 and not self._ended:
            delta, self._unacknowledged = self._unacknowledged, 0
            with contextlib.suppress(SpdyError, ConnectionError):
                await self.connection.send(WindowUpdate(self.id, delta))

    def _on_data(self, data: bytes) -> None:
        if self._ended:
            return
        if data:
            self._buffered += len(data)
            self._chunks.put_nowait(data)
            if self._buffered > MAX_BUFFERED:
                self._drained.clear()

    def _on_remote_fin(self) -> None:
        if not self._ended:
            self.remote_closed = True
            self._chunks.put_nowait(b"")
        self.connection._forget_if_done(self)

    def _on_reply(self, headers: Headers) -> None:
        if not self._replied.is_set():
            self.reply_headers = headers
            self._replied_ok = True
            self._replied.set()

    def _on_reset(self, status: int) -> None:
        ended = self._ended
        self.reset_status = status
        if not ended:
            self._chunks.put_nowait(b"")
        self._replied.set()
        self._drained.set()
        self.connection._streams.pop(self.id, None)

    def _on_connection_lost(self) -> None:
        # Called once the connection is marked closed: wake every waiter.
        self._chunks.put_nowait(b"")
        self._replied.set()
        self._drained.set()


class SpdyConnection:
    """The client side of a SPDY/3.1 session over an asyncio stream pair.

    ``start`` launches the reader task; ``open_stream`` sends SYN_STREAM and
    by default waits for the SYN_REPLY (as the kubelet's client does, stream
    after stream). PINGs from the peer are answered, a GOAWAY stops new
    streams, streams the peer opens are refused (a remotecommand server never
    opens any). ``close`` sends GOAWAY and closes the socket."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, client: bool = True
    ) -> None:
        self.reader = reader
        self.writer = writer
        self._encoder = FrameEncoder()
        self._decoder = FrameDecoder()
        self._streams: dict[int, SpdyStream] = {}
        self._next_stream_id = 1 if client else 2
        self._next_ping_id = 1 if client else 2
        self._pings: dict[int, asyncio.Future[None]] = {}
        self._drain_lock = asyncio.Lock()
        self._reader_task: asyncio.Task[None] | None = None
        self.closed = False
        self.go_away: GoAway | None = None
        self.error: BaseException | None = None
        self.done = asyncio.Event()
        self.last_received_stream_id = 0

    def start(self) -> None:
        if self._reader_task is None:
            self._reader_task = asyncio.create_task(self._read_loop(), name="spdy-reader")

    async def send(self, frame: Frame) -> None:
        """Encodes and writes ``frame``. Encoding and writing happen without
        an ``await`` in between, so header blocks reach the socket in the
        order they were compressed whatever tasks send concurrently."""
        if self.closed:
            raise SpdyError("connection closed")
        self.writer.write(self._encoder.encode(frame))
        async with self._drain_lock:
            await self.writer.drain()

    async def open_stream(
        self,
        headers: Mapping[str, str | Sequence[str]],
        *,
        fin: bool = False,
        wait_reply: bool = True,
        timeout: float | None = 30.0,
    ) -> SpdyStream:
        if self.closed:
            raise SpdyError("connection closed")
        if self.go_away is not None:
            raise SpdyError("the peer sent GOAWAY: no new streams")
        stream_id = self._next_stream_id
        self._next_stream_id += 2
        if stream_id > STREAM_ID_MASK:
            raise SpdyError("stream ids exhausted")
        stream = SpdyStream(self, stream_id, make_headers(headers))
        self._streams[stream_id] = stream
        await self.send(SynStream(stream_id, stream.headers, flags=FLAG_FIN if fin else 0))
        stream.local_closed = fin
        if wait_reply:
            async with asyncio.timeout(timeout):
                await stream.wait_reply()
        return stream

    async def ping(self, timeout: float | None = 10.0) -> None:
        """Sends PING and waits for its echo."""
        ping_id = self._next_ping_id
        self._next_ping_id = (self._next_ping_id + 2) & STREAM_ID_MASK or 1
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pings[ping_id] = waiter
        try:
            await self.send(Ping(ping_id))
            async with asyncio.timeout(timeout):
                await waiter
        finally:
            self._pings.pop(ping_id, None)

    async def close(self) -> None:
        """GOAWAY, then the socket closed, the reader stopped; idempotent."""
        if not self.closed:
            with contextlib.suppress(SpdyError, ConnectionError, OSError):
                self.writer.write(self._encoder.encode(GoAway(self.last_received_stream_id)))
                async with asyncio.timeout(1.0):
                    await self.writer.drain()
        self._mark_closed(None)
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError, TimeoutError):
            async with asyncio.timeout(1.0):
                await self.writer.wait_closed()
        if self._reader_task is not None and self._reader_task is not asyncio.current_task():
            self._reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader_task

    def _mark_closed(self, error: BaseException | None) -> None:
        if self.closed:
            return
        self.closed = True
        self.error = error
        for stream in list(self._streams.values()):
            stream._on_connection_lost()
        self._streams.clear()
        for waiter in self._pings.values():
            if not waiter.done():
                waiter.set_exception(SpdyError("connection closed"))
        self.done.set()

    def _forget_if_done(self, stream: SpdyStream) -> None:
        if stream.local_closed and stream.remote_closed:
            self._streams.pop(stream.id, None)

    async def _read_loop(self) -> None:
        error: BaseException | None = None
        try:
            while True:
                data = await self.reader.read(64 * 1024)
                if not data:
                    if self._decoder.pending:
                        error = SpdyProtocolError("connection ended inside a frame")
                    break
                for frame in self._decoder.feed(data):
                    await self._dispatch(frame)
        except SpdyProtocolError as e:
            error = e
            with contextlib.suppress(Exception):
                self.writer.write(
                    self._encoder.encode(
                        GoAway(self.last_received_stream_id, GOAWAY_PROTOCOL_ERROR)
                    )
                )
        except (SpdyError, ConnectionError, OSError) as e:
            error = e
        finally:
            self._mark_closed(error)
            self.writer.close()

    async def _dispatch(self, frame: Frame) -> None:
        match frame:
            case DataFrame(stream_id, data, flags):
                stream = self._streams.get(stream_id)
                if stream is None:
                    return  # after a reset or our close: spdystream drops these too
                stream._on_data(data)
                if flags & FLAG_FIN:
                    stream._on_remote_fin()
                if not stream._drained.is_set():
                    await stream._drained.wait()
            case SynReply(stream_id, headers, flags):
                stream = self._streams.get(stream_id)
                if stream is not None:
                    stream._on_reply(headers)
                    if flags & FLAG_FIN:
                        stream._on_remote_fin()
            case HeadersFrame(stream_id, headers, flags):
                stream = self._streams.get(stream_id)
                if stream is not None:
                    for name, values in headers.items():
                        stream.reply_headers.setdefault(name, []).extend(values)
                    if flags & FLAG_FIN:
                        stream._on_remote_fin()
            case RstStream(stream_id, status):
                stream = self._streams.get(stream_id)
                if stream is not None:
                    stream._on_reset(status)
            case SynStream(stream_id):
                self.last_received_stream_id = max(self.last_received_stream_id, stream_id)
                await self.send(RstStream(stream_id, REFUSED_STREAM))
            case Ping(ping_id):
                if (ping_id & 1) != (self._next_ping_id & 1):
                    await self.send(frame)  # the peer's: echo it
                elif (waiter := self._pings.get(ping_id)) is not None and not waiter.done():
                    waiter.set_result(None)
            case GoAway():
                self.go_away = frame
            case Settings() | WindowUpdate() | UnknownControlFrame():
                # No send window is kept (see the module docstring), and no
                # setting changes anything this side does.
                pass


# --- remotecommand ---

STREAM_PROTOCOL_V4 = "v4.channel.k8s.io"
STREAM_PROTOCOL_V3 = "v3.channel.k8s.io"
STREAM_PROTOCOL_V2 = "v2.channel.k8s.io"
STREAM_PROTOCOL_V1 = "channel.k8s.io"
DEFAULT_PROTOCOLS = (STREAM_PROTOCOL_V4, STREAM_PROTOCOL_V3, STREAM_PROTOCOL_V2, STREAM_PROTOCOL_V1)

STREAM_TYPE_HEADER = "streamtype"
"""client-go's ``v1.StreamType`` ("streamType"): Go's http.Header makes it
"Streamtype" and the SPDY/3 framer lowercases names on the wire."""

SUCCESS: dict[str, Any] = {"metadata": {}, "status": "Success"}


class RemoteCommand:
    """An exec or attach session on a CRI streaming server, over SPDY.

    Write stdin with ``write_stdin`` and end it with ``close_stdin`` (a FIN:
    the process sees EOF); resize a TTY with ``resize``; iterate ``output()``
    for ``("stdout" | "stderr", bytes)`` until both end; ``status()`` is the
    metav1.Status the error stream carries when the command ends.

    Output must be consumed while waiting for the status: a stream holding
    more than ``MAX_BUFFERED`` unread bytes stops the whole connection's
    reading, the error stream's included (spdystream's behaviour too)."""

    def __init__(
        self, connection: SpdyConnection, protocol: str, streams: dict[str, SpdyStream]
    ) -> None:
        self.connection = connection
        self.protocol = protocol
        self.streams = streams
        self._status: dict[str, Any] | None = None

    async def __aenter__(self) -> RemoteCommand:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _stream(self, name: str) -> SpdyStream:
        stream = self.streams.get(name)
        if stream is None:
            raise SpdyError(f"no {name} stream in this session")
        return stream

    async def write_stdin(self, data: bytes) -> None:
        await self._stream("stdin").write(data)

    async def close_stdin(self) -> None:
        await self._stream("stdin").close()

    async def resize(self, width: int, height: int) -> None:
        """Sends a terminal size as client-go does: Go's json.Encoder output
        of ``TerminalSize``, a newline after each object."""
        payload = json.dumps({"Width": width, "Height": height}, separators=(",", ":"))
        await self._stream("resize").write(payload.encode() + b"\n")

    async def output(self) -> AsyncIterator[tuple[str, bytes]]:
        """``(name, chunk)`` from stdout and stderr as they come, until both
        streams ended."""
        reads: dict[asyncio.Task[bytes], str] = {}
        try:
            for name in ("stdout", "stderr"):
                if name in self.streams:
                    reads[asyncio.ensure_future(self.streams[name].read())] = name
            while reads:
                done, _ = await asyncio.wait(reads, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    name = reads.pop(task)
                    chunk = task.result()
                    if chunk:
                        reads[asyncio.ensure_future(self.streams[name].read())] = name
                        yield name, chunk
        finally:
            # asyncio.Queue.get gives nothing away when cancelled: no chunk
            # a pending read was waiting for is lost.
            for task in reads:
                task.cancel()

    async def read_output(self) -> tuple[bytes, bytes]:
        """All of stdout and all of stderr, once both ended."""
        out: dict[str, list[bytes]] = {"stdout": [], "stderr": []}
        async for name, chunk in self.output():
            out[name].append(chunk)
        return b"".join(out["stdout"]), b"".join(out["stderr"])

    async def status(self) -> dict[str, Any]:
        """The command's end as a metav1.Status dict. v4 writes a JSON Status
        (Success, or Failure with reason NonZeroExitCode and the exit code in
        ``details.causes``); older protocols write a bare error message. An
        empty error stream is success, as client-go reads it."""
        if self._status is None:
            message = await self._stream("error").read_all()
            self._status = parse_status(message, self.protocol)
        return self._status

    async def close(self) -> None:
        await self.connection.close()


def parse_status(message: bytes, protocol: str) -> dict[str, Any]:
    """What the error stream said, as a metav1.Status dict."""
    if not message.strip():
        return dict(SUCCESS)
    if protocol == STREAM_PROTOCOL_V4:
        try:
            status = json.loads(message)
        except ValueError:
            status = None
        if isinstance(status, dict):
            return status
    text = message.decode("utf-8", "replace")
    return {"metadata": {}, "status": "Failure", "message": text}


def exit_code(status: Mapping[str, Any]) -> int | None:
    """The exit code a Status carries: 0 for Success, the ``ExitCode``
    cause of a NonZeroExitCode failure, None for other failures."""
    if status.get("status") == "Success":
        return 0
    if status.get("reason") == "NonZeroExitCode":
        for cause in (status.get("details") or {}).get("causes") or []:
            if cause.get("reason") == "ExitCode":
                with contextlib.suppress(TypeError, ValueError):
                    return int(cause.get("message"))
    return None


def upgrade_request(
    url: str, protocols: Iterable[str], extra_headers: Mapping[str, str] | None = None
) -> tuple[str, int, bytes]:
    """Host, port and the HTTP/1.1 request that asks ``url`` to switch to
    SPDY/3.1: a POST (as client-go sends for exec and attach) with one
    ``X-Stream-Protocol-Version`` line per protocol, preferred first."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http":
        raise ValueError(f"only http:// streaming URLs are supported, not {url!r}")
    if parts.hostname is None:
        raise ValueError(f"no host in {url!r}")
    port = parts.port or 80
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    host = parts.netloc.rsplit("@", 1)[-1]
    lines = [
        f"POST {target} HTTP/1.1",
        f"Host: {host}",
        "Connection: Upgrade",
        "Upgrade: SPDY/3.1",
        *(f"X-Stream-Protocol-Version: {p}" for p in protocols),
        "Content-Length: 0",
        "User-Agent: nodeless",
        *(f"{k}: {v}" for k, v in (extra_headers or {}).items()),
    ]
    return parts.hostname, port, ("\r\n".join(lines) + "\r\n\r\n").encode()


@dataclass
class HttpResponseHead:
    status: int
    reason: str
    headers: list[tuple[str, str]]

    def get(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None


def parse_response_head(head: bytes) -> HttpResponseHead:
    lines = head.decode("latin-1").split("\r\n")
    status_line = lines[0].split(" ", 2)
    if len(status_line) < 2 or not status_line[0].startswith("HTTP/"):
        raise SpdyError(f"not an HTTP response: {lines[0]!r}")
    try:
        status = int(status_line[1])
    except ValueError:
        raise SpdyError(f"not an HTTP response: {lines[0]!r}") from None
    headers = []
    for line in lines[1:]:
        if not line:
            continue
        name, _, value = line.partition(":")
        headers.append((name.strip(), value.strip()))
    return HttpResponseHead(status, status_line[2] if len(status_line) > 2 else "", headers)


async def connect_remotecommand(
    url: str,
    *,
    stdin: bool,
    stdout: bool,
    stderr: bool,
    tty: bool,
    protocols: Sequence[str] = DEFAULT_PROTOCOLS,
    timeout: float = 30.0,
    headers: Mapping[str, str] | None = None,
) -> RemoteCommand:
    """Upgrades ``url`` (a CRI streaming URL) to SPDY/3.1 and opens the
    streams of client-go's protocol: ``error`` first, then ``stdin``,
    ``stdout``, ``stderr`` as asked, and ``resize`` with a TTY (v3 and
    later). With a TTY there is no stderr stream (the terminal merges it),
    as in client-go; the streams must match what the Exec/Attach request
    declared, or the server waits for the missing ones and gives up."""
    host, port, request = upgrade_request(url, protocols, headers)
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(host, port)
    connection: SpdyConnection | None = None
    try:
        async with asyncio.timeout(timeout):
            writer.write(request)
            await writer.drain()
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError as e:
                raise SpdyError(f"{url}: connection closed during the upgrade") from e
        response = parse_response_head(head)
        if response.status != 101:
            raise UpgradeError(
                response.status, response.reason, await _error_body(reader, response)
            )
        # A server that names no protocol speaks the first one, channel.k8s.io.
        protocol = response.get("X-Stream-Protocol-Version") or STREAM_PROTOCOL_V1
        if protocol not in protocols:
            raise SpdyError(f"server chose protocol {protocol!r}, not one of {list(protocols)}")
        connection = SpdyConnection(reader, writer)
        connection.start()
        wanted = ["error"]
        wanted += ["stdin"] if stdin else []
        wanted += ["stdout"] if stdout else []
        wanted += ["stderr"] if stderr and not tty else []
        if tty and protocol in (STREAM_PROTOCOL_V4, STREAM_PROTOCOL_V3):
            wanted.append("resize")
        streams: dict[str, SpdyStream] = {}
        async with asyncio.timeout(timeout):
            for name in wanted:
                streams[name] = await connection.open_stream(
                    {STREAM_TYPE_HEADER: name}, timeout=None
                )
    except BaseException:
        if connection is not None:
            await connection.close()
        else:
            writer.close()
        raise
    return RemoteCommand(connection, protocol, streams)


async def _error_body(reader: asyncio.StreamReader, response: HttpResponseHead) -> str:
    """The body of a refused upgrade, as far as it comes quickly: it is only
    there to say why."""
    body = b""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(2.0):
            length = int(response.get("Content-Length") or -1)
            body = await (
                reader.readexactly(min(length, 65536)) if length >= 0 else reader.read(65536)
            )
    return body.decode("utf-8", "replace")
