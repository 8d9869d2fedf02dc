"""Container logs as the CRI writes them, read back as ``kubectl logs`` shows them.

containerd writes each container's output to a file under the pod's log
directory, one record per line: ``<RFC 3339 time> <stdout|stderr> <P|F>
<content>``, where ``P`` marks a fragment of a longer line and ``F`` its end.
Reading means undoing that: content only (or with its time, for
``--timestamps``), newlines where lines were full, and the kubelet's
options: the last N records, records since a time, at most N bytes, and
following the file while the container runs.

Rotation is the kubelet's (``container_log_manager``): a log over its size
limit is renamed ``<n>.log.<YYYYmmdd-HHMMSS>`` and the runtime told to
reopen it; at most ``max_files`` files per container are kept (the current
one and its rotated predecessors, all but the newest of them gzipped), so a
noisy container cannot fill the disk. As the kubelet's, ``kubectl logs``
reads the current file only; a followed log carries on into the new file.
"""

from __future__ import annotations

import asyncio
import datetime
import gzip
import os
import shutil
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STDOUT = "stdout"
STDERR = "stderr"
TAG_PARTIAL = b"P"
TAG_FULL = b"F"
FOLLOW_INTERVAL = 0.2  # seconds between looks at a followed file
READ_CHUNK = 1 << 16
MAX_SIZE = 10 * 2**20  # the kubelet's containerLogMaxSize
MAX_FILES = 5  # the kubelet's containerLogMaxFiles
ROTATED_TIME_FORMAT = "%Y%m%d-%H%M%S"
GZ = ".gz"


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


class _Follower:
    """Reads a growing log through an open handle, moving on to the file
    now at ``path`` once the one it holds was rotated away and read to its end."""

    def __init__(self, path: Path, offset: int) -> None:
        self.path = path
        self.file = self._open()
        if self.file is not None:
            self.file.seek(offset)

    def _open(self) -> Any:
        try:
            return self.path.open("rb")
        except FileNotFoundError:
            return None

    def read(self) -> bytes:
        if self.file is None:
            self.file = self._open()
            if self.file is None:
                return b""
        data: bytes = self.file.read()
        if data:
            return data
        try:
            rotated = os.stat(self.path).st_ino != os.fstat(self.file.fileno()).st_ino
        except FileNotFoundError:
            return b""
        if rotated:
            self.file.close()
            self.file = self._open()
            return self.file.read() if self.file is not None else b""
        return b""

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


# --- rotation ---


def rotated(path: Path) -> list[Path]:
    """The rotated files of the log at ``path``, oldest first."""
    prefix = path.name + "."
    found = [p for p in path.parent.glob(prefix + "*") if not p.name.endswith(".tmp")]
    return sorted(found, key=lambda p: p.name.removesuffix(GZ))


def over_limit(path: Path, max_size: int) -> bool:
    try:
        return path.stat().st_size > max_size
    except FileNotFoundError:
        return False


def over_limit_of(logs: Iterable[tuple[str, Path]], max_size: int) -> list[tuple[str, Path]]:
    """The (container ID, log) pairs whose log has grown past ``max_size``.
    Blocks: one thread hop checks them all."""
    return [(key, path) for key, path in logs if over_limit(path, max_size)]


def rotate(path: Path, now: datetime.datetime, max_files: int = MAX_FILES) -> Path:
    """Makes room for one more rotated file (the oldest beyond ``max_files``
    go, all but the newest are gzipped) and renames the log; returns its new
    name. The caller has the runtime reopen the log, or calls ``unrotate``."""
    older = rotated(path)
    keep = max(0, max_files - 2)  # the rotated ones kept besides the one made now
    for extra in older[: max(0, len(older) - keep)]:
        extra.unlink(missing_ok=True)
    for kept in older[max(0, len(older) - keep) :]:
        if not kept.name.endswith(GZ):
            _gzip(kept)
    target = path.with_name(f"{path.name}.{now.strftime(ROTATED_TIME_FORMAT)}")
    if target.exists() or target.with_name(target.name + GZ).exists():
        target = path.with_name(f"{target.name}-{now.microsecond:06d}")
    path.rename(target)
    return target


def unrotate(path: Path, renamed: Path) -> None:
    """Undoes ``rotate``'s rename when the runtime could not reopen the log."""
    if not path.exists():
        renamed.rename(path)


def _gzip(path: Path) -> None:
    temporary = path.with_name(path.name + GZ + ".tmp")
    with path.open("rb") as source, gzip.open(temporary, "wb") as target:
        shutil.copyfileobj(source, target)
    temporary.rename(path.with_name(path.name + GZ))
    path.unlink()


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
    follower = await asyncio.to_thread(_Follower, path, offset)
    pending = b""
    try:
        while True:
            alive = running()
            new = pending + await asyncio.to_thread(follower.read)
            complete = new.rfind(b"\n") + 1
            pending = new[complete:]
            if complete:
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
    finally:
        follower.close()


def _limited(chunk: bytes, budget: int | None) -> list[bytes]:
    if not chunk:
        return []
    if budget is None:
        return [chunk]
    return [chunk[:budget]] if budget > 0 else []
