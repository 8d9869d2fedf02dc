"""SPDY/3.1 framing, the SPDY connection and the remotecommand client.

The framing is checked against bytes other implementations produced: a
compressed SYN_REPLY from Chromium's SpdyFramer tests, and a whole exec
session as containerd (Go, moby/spdystream) sent it, captured from
tests/integration/test_spdy_exec.py. The connection and the client run
against small fake peers on loopback built from the same framing.
"""

from __future__ import annotations

import asyncio
import json
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from nodeless.streaming import spdy

# Chromium's SpdyFramerTest.CreateSynReplyCompressed (SPDY/3): stream 1,
# headers bar: foo and foo: bar, compressed with the SPDY/3 dictionary.
CHROMIUM_SYN_REPLY = bytes.fromhex(
    "80 03 00 02 00 00 00 31 00 00 00 01 38 ea e3 c6 a7 c2 02 e5 0e 50 c2 4b 4a 04 e5 0b 66 80"
    " 00 4a cb cf 07 08 20 10 95 96 9f 0f a2 00 02 28 29 b1 08 20 80 00 00 00 00 ff ff"
)

# What containerd 1.6's streaming server sent for `sh -c 'echo out; echo err
# >&2; exit 3'` with stdout and stderr: three SYN_REPLYs sharing one zlib
# context (only the first has the zlib header), the output with FINs, the v4
# Status on the error stream, then RST_STREAM(CANCEL) and GOAWAY.
GO_SESSION = bytes.fromhex(
    "80030002000000140000000178f9e3c6a7c26260606000000000ffff800300020000000c000000030261"
    "00000000ffff800300020000000c00000005026100000000ffff00000003000000046f75740a00000003"
    "0100000000000005000000046572720a000000050100000000000001000001067b226d65746164617461"
    "223a7b7d2c22737461747573223a224661696c757265222c226d657373616765223a22636f6d6d616e64"
    "207465726d696e617465642077697468206e6f6e2d7a65726f206578697420636f64653a206572726f72"
    "20657865637574696e6720636f6d6d616e64205b7368202d63206563686f206f75743b206563686f2065"
    "7272205c75303033655c7530303236323b206578697420335d2c206578697420636f64652033222c2272"
    "6561736f6e223a224e6f6e5a65726f45786974436f6465222c2264657461696c73223a7b226361757365"
    "73223a5b7b22726561736f6e223a2245786974436f6465222c226d657373616765223a2233227d5d7d7d"
    "8003000300000008000000010000000580030007000000080000000500000000"
)


def test_the_dictionary_is_spdy3s() -> None:
    assert len(spdy.HEADER_DICTIONARY) == 1423
    assert zlib.adler32(spdy.HEADER_DICTIONARY) == 0xE3C6A7C2
    assert spdy.HEADER_DICTIONARY.startswith(b"\x00\x00\x00\x07options")
    assert spdy.HEADER_DICTIONARY.endswith(b",*,enq=0.")


def test_a_compressed_block_names_the_dictionary() -> None:
    frame = spdy.FrameEncoder().encode(spdy.SynReply(1, {"a": ["b"]}))
    # zlib header (2 bytes, FDICT set) then the DICTID: the Adler-32 above.
    assert frame[12 + 1] & 0x20
    assert frame[14:18] == bytes.fromhex("e3c6a7c2")


def test_chromiums_compressed_syn_reply_decodes() -> None:
    assert len(CHROMIUM_SYN_REPLY) == 8 + 0x31
    frames = spdy.FrameDecoder().feed(CHROMIUM_SYN_REPLY)
    assert frames == [spdy.SynReply(1, {"bar": ["foo"], "foo": ["bar"]})]


def go_session_frames() -> list[spdy.Frame]:
    return spdy.FrameDecoder().feed(GO_SESSION)


def test_a_session_containerd_sent_decodes() -> None:
    frames = go_session_frames()
    assert frames[:3] == [spdy.SynReply(1), spdy.SynReply(3), spdy.SynReply(5)]
    assert frames[3:7] == [
        spdy.DataFrame(3, b"out\n"),
        spdy.DataFrame(3, b"", spdy.FLAG_FIN),
        spdy.DataFrame(5, b"err\n"),
        spdy.DataFrame(5, b"", spdy.FLAG_FIN),
    ]
    status = frames[7]
    assert isinstance(status, spdy.DataFrame) and status.stream_id == 1
    assert json.loads(status.data)["details"]["causes"] == [{"reason": "ExitCode", "message": "3"}]
    assert frames[8:] == [spdy.RstStream(1, spdy.CANCEL), spdy.GoAway(5, spdy.GOAWAY_OK)]


def test_byte_by_byte_gives_the_same_frames() -> None:
    decoder = spdy.FrameDecoder()
    frames: list[spdy.Frame] = []
    for i in range(len(GO_SESSION)):
        frames += decoder.feed(GO_SESSION[i : i + 1])
    assert frames == go_session_frames()
    assert decoder.pending == 0


def test_a_partial_frame_waits_in_the_buffer() -> None:
    decoder = spdy.FrameDecoder()
    assert decoder.feed(GO_SESSION[:30]) == [spdy.SynReply(1)]
    assert decoder.pending == 2
    assert decoder.feed(GO_SESSION[30:48]) == [spdy.SynReply(3)]


def test_the_zlib_context_spans_frames() -> None:
    # The second SYN_REPLY refers back into the first's compressed stream:
    # on its own (a fresh context) it does not decode.
    with pytest.raises(spdy.SpdyProtocolError):
        spdy.FrameDecoder().feed(GO_SESSION[28:48])


ALL_FRAMES: list[spdy.Frame] = [
    spdy.DataFrame(1, b"hello"),
    spdy.DataFrame(3, b"", spdy.FLAG_FIN),
    spdy.DataFrame(spdy.STREAM_ID_MASK, b"\x00" * 70000),
    spdy.SynStream(1, {"streamtype": ["error"]}),
    spdy.SynStream(
        3,
        {"streamtype": ["stdin"], "multi": ["a", "b", ""]},
        associated_to=1,
        priority=7,
        slot=2,
        flags=spdy.FLAG_FIN | spdy.FLAG_UNIDIRECTIONAL,
    ),
    spdy.SynReply(3, {}),
    spdy.SynReply(5, {"x": ["y"]}, spdy.FLAG_FIN),
    spdy.HeadersFrame(5, {"trailer": ["1"]}, spdy.FLAG_FIN),
    spdy.RstStream(7, spdy.REFUSED_STREAM),
    spdy.Settings(),
    spdy.Settings(
        (spdy.Setting(spdy.SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20, 1), spdy.Setting(4, 100)),
        spdy.FLAG_SETTINGS_CLEAR_SETTINGS,
    ),
    spdy.Ping(1),
    spdy.Ping(0xFFFFFFFF),
    spdy.GoAway(9, spdy.GOAWAY_PROTOCOL_ERROR),
    spdy.WindowUpdate(1, 65536),
    spdy.WindowUpdate(0, spdy.STREAM_ID_MASK),
    spdy.UnknownControlFrame(10, 3, b"credential"),
]


def test_every_frame_round_trips_through_one_context() -> None:
    encoder, decoder = spdy.FrameEncoder(), spdy.FrameDecoder()
    wire = b"".join(encoder.encode(frame) for frame in ALL_FRAMES)
    assert decoder.feed(wire) == ALL_FRAMES
    assert decoder.pending == 0


@pytest.mark.parametrize("frame", ALL_FRAMES, ids=lambda f: type(f).__name__)
def test_each_frame_round_trips_alone(frame: spdy.Frame) -> None:
    assert spdy.FrameDecoder().feed(spdy.FrameEncoder().encode(frame)) == [frame]


def test_frame_layouts() -> None:
    encoder = spdy.FrameEncoder()
    assert encoder.encode(spdy.DataFrame(3, b"ab", spdy.FLAG_FIN)) == bytes.fromhex(
        "00000003 01000002 6162".replace(" ", "")
    )
    assert encoder.encode(spdy.Ping(7)) == bytes.fromhex(
        "80030006 00000004 00000007".replace(" ", "")
    )
    assert encoder.encode(spdy.RstStream(1, spdy.CANCEL)) == bytes.fromhex(
        "80030003 00000008 00000001 00000005".replace(" ", "")
    )
    assert encoder.encode(spdy.WindowUpdate(5, 32768)) == bytes.fromhex(
        "80030009 00000008 00000005 00008000".replace(" ", "")
    )
    assert encoder.encode(spdy.GoAway(5)) == GO_SESSION[-16:]
    syn = encoder.encode(spdy.SynStream(1, {}, priority=3, flags=spdy.FLAG_FIN))
    assert syn[:4] == bytes.fromhex("80030001")
    assert syn[4] == spdy.FLAG_FIN
    assert int.from_bytes(syn[5:8], "big") == len(syn) - 8
    assert syn[8:18] == bytes.fromhex("00000001 00000000 6000".replace(" ", ""))


def test_header_blocks() -> None:
    headers = spdy.make_headers({"StreamType": "stdin", "X-Many": ["a", "b"]})
    assert headers == {"streamtype": ["stdin"], "x-many": ["a", "b"]}
    block = spdy.encode_header_block(headers)
    assert block == (
        b"\x00\x00\x00\x02"
        b"\x00\x00\x00\x0astreamtype\x00\x00\x00\x05stdin"
        b"\x00\x00\x00\x06x-many\x00\x00\x00\x03a\x00b"
    )
    assert spdy.decode_header_block(block) == headers
    with pytest.raises(ValueError):
        spdy.encode_header_block({"Upper": ["x"]})
    with pytest.raises(spdy.SpdyProtocolError):
        spdy.decode_header_block(block[:-1])
    with pytest.raises(spdy.SpdyProtocolError):
        spdy.decode_header_block(block + b"\x00")
    repeated = b"\x00\x00\x00\x02" + b"\x00\x00\x00\x01a\x00\x00\x00\x00" * 2
    with pytest.raises(spdy.SpdyProtocolError):
        spdy.decode_header_block(repeated)


@pytest.mark.parametrize(
    ("wire", "why"),
    [
        (bytes.fromhex("80020006 00000004 00000001".replace(" ", "")), "SPDY/2"),
        (bytes.fromhex("00000000 00000000".replace(" ", "")), "data on stream 0"),
        (bytes.fromhex("80030006 00000003 000000".replace(" ", "")), "short PING"),
        (bytes.fromhex("80030007 00000004 00000001".replace(" ", "")), "SPDY/2 GOAWAY"),
        (bytes.fromhex("80030003 00000008 00000000 00000001".replace(" ", "")), "RST on 0"),
        (bytes.fromhex("80030004 00000008 00000002 00000000".replace(" ", "")), "bad SETTINGS"),
        (bytes.fromhex("80030002 00000008 00000001 01020304".replace(" ", "")), "bad zlib"),
    ],
)
def test_malformed_frames_are_protocol_errors(wire: bytes, why: str) -> None:
    with pytest.raises(spdy.SpdyProtocolError):
        spdy.FrameDecoder().feed(wire)


def test_a_header_block_that_inflates_too_far_is_refused() -> None:
    frame = spdy.FrameEncoder().encode(spdy.SynReply(1, {"big": ["x" * 5000]}))
    with pytest.raises(spdy.SpdyProtocolError, match="too large"):
        spdy.FrameDecoder(max_header_block=1000).feed(frame)


def test_statuses() -> None:
    failure = json.loads(go_session_frames()[7].data)  # type: ignore[union-attr]
    assert spdy.parse_status(json.dumps(failure).encode(), spdy.STREAM_PROTOCOL_V4) == failure
    assert spdy.exit_code(failure) == 3
    assert spdy.parse_status(b"", spdy.STREAM_PROTOCOL_V4) == spdy.SUCCESS
    assert spdy.exit_code(spdy.SUCCESS) == 0
    v2 = spdy.parse_status(b"error executing command", spdy.STREAM_PROTOCOL_V2)
    assert v2["status"] == "Failure" and v2["message"] == "error executing command"
    assert spdy.exit_code(v2) is None


def test_the_upgrade_request() -> None:
    host, port, request = spdy.upgrade_request(
        "http://127.0.0.1:4321/exec/Tok3n?x=1", spdy.DEFAULT_PROTOCOLS
    )
    assert (host, port) == ("127.0.0.1", 4321)
    lines = request.decode().split("\r\n")
    assert lines[0] == "POST /exec/Tok3n?x=1 HTTP/1.1"
    assert "Host: 127.0.0.1:4321" in lines
    assert "Connection: Upgrade" in lines and "Upgrade: SPDY/3.1" in lines
    versions = [line.split(": ")[1] for line in lines if line.startswith("X-Stream-Protocol")]
    assert versions == list(spdy.DEFAULT_PROTOCOLS)
    assert request.endswith(b"\r\n\r\n")
    with pytest.raises(ValueError):
        spdy.upgrade_request("https://127.0.0.1/exec/x", spdy.DEFAULT_PROTOCOLS)


# --- the connection, against a fake peer on loopback ---


@dataclass
class Peer:
    """The server end: frames in through a decoder, out through an encoder."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    encoder: spdy.FrameEncoder = field(default_factory=spdy.FrameEncoder)
    decoder: spdy.FrameDecoder = field(default_factory=spdy.FrameDecoder)
    frames: list[spdy.Frame] = field(default_factory=list)

    async def send(self, *frames: spdy.Frame) -> None:
        for frame in frames:
            self.writer.write(self.encoder.encode(frame))
        await self.writer.drain()

    async def receive(self, timeout: float = 5.0) -> spdy.Frame:
        async with asyncio.timeout(timeout):
            while not self.frames:
                data = await self.reader.read(65536)
                if not data:
                    raise EOFError
                self.frames += self.decoder.feed(data)
        return self.frames.pop(0)

    async def receive_until(self, wanted: type) -> list[spdy.Frame]:
        seen = []
        while not isinstance(seen[-1] if seen else None, wanted):
            seen.append(await self.receive())
        return seen


Serve = Callable[[Peer], Awaitable[None]]


@pytest.fixture
async def pair() -> AsyncIterator[Callable[[], Awaitable[tuple[spdy.SpdyConnection, Peer]]]]:
    servers: list[asyncio.Server] = []
    connections: list[spdy.SpdyConnection] = []
    peers: list[Peer] = []

    async def make() -> tuple[spdy.SpdyConnection, Peer]:
        accepted: asyncio.Future[Peer] = asyncio.get_running_loop().create_future()

        async def on_client(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            accepted.set_result(Peer(r, w))

        server = await asyncio.start_server(on_client, "127.0.0.1", 0)
        servers.append(server)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        connection = spdy.SpdyConnection(reader, writer)
        connection.start()
        connections.append(connection)
        peer = await accepted
        peers.append(peer)
        return connection, peer

    yield make
    for connection in connections:
        await connection.close()
    for peer in peers:
        peer.writer.close()
    for server in servers:
        server.close()
        await server.wait_closed()


PairFactory = Callable[[], Awaitable[tuple[spdy.SpdyConnection, Peer]]]


async def open_replied(
    connection: spdy.SpdyConnection, peer: Peer, headers: dict[str, str]
) -> spdy.SpdyStream:
    opening = asyncio.create_task(connection.open_stream(headers))
    syn = await peer.receive()
    assert isinstance(syn, spdy.SynStream)
    await peer.send(spdy.SynReply(syn.stream_id))
    return await opening


async def test_streams_open_with_odd_ids_and_wait_for_the_reply(pair: PairFactory) -> None:
    connection, peer = await pair()
    opening = asyncio.create_task(connection.open_stream({"streamType": "error"}))
    syn = await peer.receive()
    assert syn == spdy.SynStream(1, {"streamtype": ["error"]})
    await asyncio.sleep(0.01)
    assert not opening.done()
    await peer.send(spdy.SynReply(1, {"a": ["b"]}))
    stream = await opening
    assert stream.reply_headers == {"a": ["b"]}
    second = await open_replied(connection, peer, {"streamtype": "stdin"})
    assert second.id == 3


async def test_data_both_ways_and_half_close(pair: PairFactory) -> None:
    connection, peer = await pair()
    stream = await open_replied(connection, peer, {"streamtype": "stdin"})
    await stream.write(b"hello")
    await stream.close()
    assert await peer.receive() == spdy.DataFrame(1, b"hello")
    assert await peer.receive() == spdy.DataFrame(1, b"", spdy.FLAG_FIN)
    with pytest.raises(spdy.SpdyError):
        await stream.write(b"more")
    # Half-closed: the peer's side is still open.
    await peer.send(spdy.DataFrame(1, b"back"), spdy.DataFrame(1, b"!", spdy.FLAG_FIN))
    assert await stream.read_all() == b"back!"
    assert await stream.read() == b""


async def test_large_writes_are_split_and_never_wait_for_window(pair: PairFactory) -> None:
    # spdystream never sends WINDOW_UPDATE: waiting for window would hang.
    connection, peer = await pair()
    stream = await open_replied(connection, peer, {"streamtype": "stdin"})
    payload = bytes(range(256)) * 1000  # 256000 bytes, four initial windows
    await asyncio.wait_for(stream.write(payload), timeout=5)
    received = b""
    while len(received) < len(payload):
        frame = await peer.receive()
        assert isinstance(frame, spdy.DataFrame)
        assert len(frame.data) <= spdy.MAX_DATA_FRAME
        received += frame.data
    assert received == payload


async def test_window_updates_follow_consumption(pair: PairFactory) -> None:
    connection, peer = await pair()
    stream = await open_replied(connection, peer, {"streamtype": "stdout"})
    chunk = b"x" * 16384
    await peer.send(*(spdy.DataFrame(1, chunk) for _ in range(8)))
    total = 0
    while total < 8 * len(chunk):
        total += len(await stream.read())
    updates = []
    while sum(u.delta for u in updates) < total:
        frame = await peer.receive()
        assert isinstance(frame, spdy.WindowUpdate)
        updates.append(frame)
    assert all(u.stream_id == 1 and u.delta >= spdy.DEFAULT_WINDOW // 2 for u in updates)


async def test_reading_stops_while_a_stream_holds_too_much(
    pair: PairFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spdy, "MAX_BUFFERED", 1000)
    connection, peer = await pair()
    stdout = await open_replied(connection, peer, {"streamtype": "stdout"})
    error = await open_replied(connection, peer, {"streamtype": "error"})
    await peer.send(spdy.DataFrame(1, b"x" * 2000), spdy.DataFrame(3, b"status"))
    await asyncio.sleep(0.05)
    assert error._chunks.empty()  # held back behind the unread stdout
    assert await stdout.read() == b"x" * 2000
    assert await asyncio.wait_for(error.read(), timeout=5) == b"status"


async def test_pings(pair: PairFactory) -> None:
    connection, peer = await pair()
    await peer.send(spdy.Ping(2))
    assert await peer.receive() == spdy.Ping(2)  # echoed
    pinging = asyncio.create_task(connection.ping())
    frame = await peer.receive()
    assert frame == spdy.Ping(1)
    await peer.send(frame)
    await asyncio.wait_for(pinging, timeout=5)


async def test_a_reset_ends_the_stream(pair: PairFactory) -> None:
    connection, peer = await pair()
    stream = await open_replied(connection, peer, {"streamtype": "error"})
    await peer.send(spdy.DataFrame(1, b"last words"), spdy.RstStream(1, spdy.CANCEL))
    assert await stream.read_all() == b"last words"
    assert stream.reset_status == spdy.CANCEL
    with pytest.raises(spdy.SpdyStreamReset):
        await stream.write(b"x")


async def test_a_reset_before_the_reply_fails_the_open(pair: PairFactory) -> None:
    connection, peer = await pair()
    opening = asyncio.create_task(connection.open_stream({"streamtype": "stdin"}))
    await peer.receive()
    await peer.send(spdy.RstStream(1, spdy.REFUSED_STREAM))
    with pytest.raises(spdy.SpdyStreamReset) as caught:
        await opening
    assert caught.value.status == spdy.REFUSED_STREAM


async def test_streams_the_peer_opens_are_refused(pair: PairFactory) -> None:
    _, peer = await pair()
    await peer.send(spdy.SynStream(2, {"x": ["y"]}))
    assert await peer.receive() == spdy.RstStream(2, spdy.REFUSED_STREAM)


async def test_goaway_stops_new_streams_but_not_old_ones(pair: PairFactory) -> None:
    connection, peer = await pair()
    stream = await open_replied(connection, peer, {"streamtype": "stdout"})
    await peer.send(spdy.GoAway(1), spdy.DataFrame(1, b"still", spdy.FLAG_FIN))
    assert await stream.read_all() == b"still"
    with pytest.raises(spdy.SpdyError, match="GOAWAY"):
        await connection.open_stream({"streamtype": "stdin"})


async def test_the_peer_hanging_up_ends_every_stream(pair: PairFactory) -> None:
    connection, peer = await pair()
    stream = await open_replied(connection, peer, {"streamtype": "stdout"})
    await peer.send(spdy.DataFrame(1, b"partial"))
    peer.writer.close()
    assert await asyncio.wait_for(stream.read_all(), timeout=5) == b"partial"
    await asyncio.wait_for(connection.done.wait(), timeout=5)
    assert connection.closed and connection.error is None


async def test_garbage_closes_the_connection_with_a_protocol_error(pair: PairFactory) -> None:
    connection, peer = await pair()
    peer.writer.write(bytes.fromhex("800200060000000400000001"))  # a SPDY/2 PING
    await asyncio.wait_for(connection.done.wait(), timeout=5)
    assert isinstance(connection.error, spdy.SpdyProtocolError)
    assert await peer.receive() == spdy.GoAway(0, spdy.GOAWAY_PROTOCOL_ERROR)


async def test_close_sends_goaway(pair: PairFactory) -> None:
    connection, peer = await pair()
    await connection.close()
    assert await peer.receive() == spdy.GoAway(0)
    with pytest.raises(spdy.SpdyError):
        await connection.open_stream({"streamtype": "x"})


# --- remotecommand, against a fake streaming server ---


@dataclass
class Server:
    """An HTTP endpoint that upgrades to SPDY and plays a remotecommand
    server: records the request and the streams, then runs ``script``."""

    script: Callable[[Server, Peer, dict[str, int]], Awaitable[None]]
    status: str = "101 Switching Protocols"
    protocol: str = spdy.STREAM_PROTOCOL_V4
    expected: int = 4
    request: bytes = b""
    done: asyncio.Event = field(default_factory=asyncio.Event)
    errors: list[BaseException] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            self.request = await reader.readuntil(b"\r\n\r\n")
            if not self.status.startswith("101"):
                body = b"no such session"
                writer.write(
                    f"HTTP/1.1 {self.status}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
                )
                await writer.drain()
                return
            writer.write(
                f"HTTP/1.1 {self.status}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
                f"X-Stream-Protocol-Version: {self.protocol}\r\n\r\n".encode()
            )
            peer = Peer(reader, writer)
            streams: dict[str, int] = {}
            while len(streams) < self.expected:
                syn = await peer.receive()
                assert isinstance(syn, spdy.SynStream), syn
                streams[syn.headers["streamtype"][0]] = syn.stream_id
                await peer.send(spdy.SynReply(syn.stream_id))
            await self.script(self, peer, streams)
        except BaseException as e:
            self.errors.append(e)
            raise
        finally:
            writer.close()
            self.done.set()


@pytest.fixture
async def serve() -> AsyncIterator[Callable[[Server], Awaitable[str]]]:
    servers: list[asyncio.Server] = []

    async def start(server: Server) -> str:
        listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
        servers.append(listener)
        return f"http://127.0.0.1:{listener.sockets[0].getsockname()[1]}/exec/abc"

    yield start
    for listener in servers:
        listener.close()


async def test_an_exec_session_as_client_go_runs_it(
    serve: Callable[[Server], Awaitable[str]],
) -> None:
    stdin_seen: list[bytes] = []

    async def script(server: Server, peer: Peer, streams: dict[str, int]) -> None:
        assert list(streams) == ["error", "stdin", "stdout", "stderr"]
        while True:
            frame = await peer.receive()
            assert isinstance(frame, spdy.DataFrame) and frame.stream_id == streams["stdin"]
            stdin_seen.append(frame.data)
            if frame.fin:
                break
        status = {
            "metadata": {},
            "status": "Failure",
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": "3"}]},
        }
        await peer.send(
            spdy.DataFrame(streams["stdout"], b"".join(stdin_seen)),
            spdy.DataFrame(streams["stdout"], b"", spdy.FLAG_FIN),
            spdy.DataFrame(streams["stderr"], b"err\n", spdy.FLAG_FIN),
            spdy.DataFrame(streams["error"], json.dumps(status).encode()),
            *(spdy.RstStream(i, spdy.CANCEL) for i in streams.values()),
            spdy.GoAway(0),
        )

    server = Server(script)
    url = await serve(server)
    command = await spdy.connect_remotecommand(url, stdin=True, stdout=True, stderr=True, tty=False)
    async with command:
        assert command.protocol == spdy.STREAM_PROTOCOL_V4
        await command.write_stdin(b"hel")
        await command.write_stdin(b"lo")
        await command.close_stdin()
        out, err = await asyncio.wait_for(command.read_output(), timeout=5)
        status = await asyncio.wait_for(command.status(), timeout=5)
    assert (out, err) == (b"hello", b"err\n")
    assert spdy.exit_code(status) == 3
    assert b"".join(stdin_seen) == b"hello"
    await asyncio.wait_for(server.done.wait(), timeout=5)
    assert not server.errors
    head = server.request.decode()
    assert head.startswith("POST /exec/abc HTTP/1.1\r\n")
    assert head.count("X-Stream-Protocol-Version:") == len(spdy.DEFAULT_PROTOCOLS)


async def test_a_tty_session_has_resize_and_no_stderr(
    serve: Callable[[Server], Awaitable[str]],
) -> None:
    resizes: list[bytes] = []

    async def script(server: Server, peer: Peer, streams: dict[str, int]) -> None:
        assert list(streams) == ["error", "stdin", "stdout", "resize"]
        while len(resizes) < 2:
            frame = await peer.receive()
            assert isinstance(frame, spdy.DataFrame) and frame.stream_id == streams["resize"]
            resizes.append(frame.data)
        await peer.send(
            spdy.DataFrame(streams["stdout"], b"37 100\r\n", spdy.FLAG_FIN),
            spdy.DataFrame(streams["error"], b'{"metadata":{},"status":"Success"}'),
            spdy.DataFrame(streams["error"], b"", spdy.FLAG_FIN),
        )

    server = Server(script)
    url = await serve(server)
    async with await spdy.connect_remotecommand(
        url, stdin=True, stdout=True, stderr=True, tty=True
    ) as command:
        assert "stderr" not in command.streams
        await command.resize(100, 37)
        await command.resize(80, 24)
        chunks = [chunk async for chunk in command.output()]
        assert chunks == [("stdout", b"37 100\r\n")]
        assert await asyncio.wait_for(command.status(), timeout=5) == spdy.SUCCESS
    assert resizes == [b'{"Width":100,"Height":37}\n', b'{"Width":80,"Height":24}\n']


async def test_an_older_protocol_has_no_resize_and_a_text_error(
    serve: Callable[[Server], Awaitable[str]],
) -> None:
    async def script(server: Server, peer: Peer, streams: dict[str, int]) -> None:
        assert list(streams) == ["error", "stdout"]
        await peer.send(spdy.DataFrame(streams["error"], b"it broke", spdy.FLAG_FIN))

    server = Server(script, protocol=spdy.STREAM_PROTOCOL_V2, expected=2)
    url = await serve(server)
    async with await spdy.connect_remotecommand(
        url, stdin=False, stdout=True, stderr=False, tty=True
    ) as command:
        assert command.protocol == spdy.STREAM_PROTOCOL_V2
        status = await asyncio.wait_for(command.status(), timeout=5)
    assert status["status"] == "Failure" and status["message"] == "it broke"


async def test_a_refused_upgrade_says_why(serve: Callable[[Server], Awaitable[str]]) -> None:
    async def script(server: Server, peer: Peer, streams: dict[str, int]) -> None:
        raise AssertionError("not reached")

    url = await serve(Server(script, status="404 Not Found"))
    with pytest.raises(spdy.UpgradeError) as caught:
        await spdy.connect_remotecommand(url, stdin=False, stdout=True, stderr=False, tty=False)
    assert caught.value.status == 404
    assert caught.value.body == "no such session"


async def test_a_protocol_not_offered_is_refused(
    serve: Callable[[Server], Awaitable[str]],
) -> None:
    async def script(server: Server, peer: Peer, streams: dict[str, int]) -> None:
        pass

    url = await serve(Server(script, protocol="v9.channel.k8s.io", expected=0))
    with pytest.raises(spdy.SpdyError, match="v9"):
        await spdy.connect_remotecommand(url, stdin=False, stdout=True, stderr=False, tty=False)
