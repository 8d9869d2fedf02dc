"""Container logs as the CRI writes them, read back as ``kubectl logs`` shows them.

containerd writes each container's output to a file under the pod's log
directory, one record per line: ``<RFC 3339 time> <stdout|stderr> <P|F>
<content>``, where ``P`` marks a fragment of a longer line and ``F`` its end.
Reading means undoing that: content only (or with its time, for
``--timestamps``), newlines where lines were full, and the kubelet's
options: the last N records, records since a time, at most N bytes, and
following the file while the container runs.
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

STDOUT = "stdout"
STDERR = "stderr"
TAG_PARTIAL = b"P"
TAG_FULL = b"F"
FOLLOW_INTERVAL = 0.2  # seconds between looks at a followed file
READ_CHUNK = 1 << 16


@dataclass(frozen=True)
class LogRecord:
    time: bytes  # as written: RFC 3339 with nanoseconds
    stream: str
    partial: bool
    content: bytes

    @property
    def timestamp(self) -> datetime.datetime | None:
        return parse_time(self.time)


@dataclass(frozen=True)
class LogOptions:
    """The kubelet's log options (``kubectl logs --tail --since-time
    --limit-bytes --timestamps``)."""

    tail_lines: int | None = None
    since: datetime.datetime | None = None
    limit_bytes: int | None = None
    timestamps: bool = False


def parse_time(text: bytes) -> datetime.datetime | None:
    try:
        moment = datetime.datetime.fromisoformat(text.decode())
    except (ValueError, UnicodeDecodeError):
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.UTC)


def parse_record(line: bytes) -> LogRecord | None:
    """One line of a CRI log file (without its newline), or None if it is not one."""
    parts = line.split(b" ", 3)
    if len(parts) < 3:
        return None
    time, stream, tag = parts[0], parts[1], parts[2]
    content = parts[3] if len(parts) == 4 else b""
    if stream not in (STDOUT.encode(), STDERR.encode()):
        return None
    # a tag may carry more, colon-separated, after P/F
    kind = tag.split(b":", 1)[0]
    if kind not in (TAG_PARTIAL, TAG_FULL):
        return None
    return LogRecord(time, stream.decode(), kind == TAG_PARTIAL, content)


def parse(data: bytes) -> list[LogRecord]:
    """Every complete record in ``data`` (a trailing line without newline is
    still being written, and left out)."""
    lines = data.split(b"\n")
    records = []
    for line in lines[:-1]:
        record = parse_record(line)
        if record is not None:
            records.append(record)
    return records


def render(records: Iterable[LogRecord], *, timestamps: bool = False) -> bytes:
    out = bytearray()
    for record in records:
        if timestamps:
            out += record.time + b" "
        out += record.content
        if not record.partial:
            out += b"\n"
    return bytes(out)


def select(records: list[LogRecord], options: LogOptions) -> list[LogRecord]:
    """The records ``options`` asks for, before any byte limit."""
    if options.since is not None:
        since = options.since
        records = [r for r in records if (t := r.timestamp) is None or t >= since]
    if options.tail_lines is not None:
        records = records[-options.tail_lines :] if options.tail_lines > 0 else []
    return records


def _read_from(path: Path, offset: int) -> bytes:
    try:
        with path.open("rb") as f:
            f.seek(offset)
            return f.read()
    except FileNotFoundError:
        return b""


async def read(
    path: Path,
    options: LogOptions = LogOptions(),
    *,
    running: Callable[[], bool] | None = None,
    interval: float = FOLLOW_INTERVAL,
) -> AsyncIterator[bytes]:
    """The log at ``path`` as ``kubectl logs`` prints it. With ``running``
    (follow), new records keep coming until ``running()`` turns false; the
    file is then read to its end once more."""
    data = await asyncio.to_thread(_read_from, path, 0)
    complete = data.rfind(b"\n") + 1
    offset = complete
    budget = options.limit_bytes
    chunk = render(select(parse(data[:complete]), options), timestamps=options.timestamps)
    for piece in _limited(chunk, budget):
        yield piece
    if budget is not None:
        budget -= len(chunk)
        if budget <= 0:
            return
    if running is None:
        return
    while True:
        alive = running()
        new = await asyncio.to_thread(_read_from, path, offset)
        complete = new.rfind(b"\n") + 1
        if complete:
            offset += complete
            records = parse(new[:complete])
            if options.since is not None:
                records = select(records, LogOptions(since=options.since))
            chunk = render(records, timestamps=options.timestamps)
            for piece in _limited(chunk, budget):
                yield piece
            if budget is not None:
                budget -= len(chunk)
                if budget <= 0:
                    return
        if not alive:
            return
        await asyncio.sleep(interval)


def _limited(chunk: bytes, budget: int | None) -> list[bytes]:
    if not chunk:
        return []
    if budget is None:
        return [chunk]
    return [chunk[:budget]] if budget > 0 else []
