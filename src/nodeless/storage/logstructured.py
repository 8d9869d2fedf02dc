"""A ``Backend`` built on an append-only log of writes, as kine does it.

The log is the only state: every write appends one row whose id is the write's
revision. A ``Log`` implementation stores rows and answers range queries over them;
``LogStructuredBackend`` adds everything else that must be the same for every store:
write preconditions, a single writer (so revisions, commits and watch notifications
all happen in one order), and the watch fan-out.

Watchers and slow consumers: each watcher has a bounded in-memory buffer of live
events. A watcher whose buffer would exceed ``watch_buffer`` events drops the buffer
and goes back to reading the log from the last revision it delivered, then rejoins
the live stream; so memory stays bounded and nothing is skipped. If the history it
needs has been compacted meanwhile it ends with ``CompactedError``, which clients
treat like a "410 Gone" and answer by re-listing.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from nodeless.storage import backends


@dataclass(frozen=True, slots=True)
class Write:
    """One requested write; ``value`` is ignored for DELETE, ``expected_revision`` for CREATE."""

    type: backends.EventType
    key: str
    value: bytes = b""
    expected_revision: int = 0


def apply_write(write: Write, current: backends.KeyValue | None, revision: int) -> backends.Event:
    """What ``write`` does to a key whose live version is ``current``, as the row to append.

    Raises when the write's precondition fails; the log then appends nothing for it.
    Every ``Log`` calls this inside its write transaction, so all stores agree.
    """
    if write.type is backends.EventType.CREATE:
        if current is not None:
            raise backends.KeyExistsError(write.key)
        kv = backends.KeyValue(write.key, write.value, revision, revision)
        return backends.Event(backends.EventType.CREATE, kv, None)
    if current is None:
        raise backends.KeyNotFoundError(write.key)
    if write.expected_revision and write.expected_revision != current.mod_revision:
        raise backends.RevisionMismatchError(write.key, write.expected_revision, current)
    if write.type is backends.EventType.UPDATE:
        kv = backends.KeyValue(write.key, write.value, current.create_revision, revision)
        return backends.Event(backends.EventType.UPDATE, kv, current)
    kv = backends.KeyValue(write.key, current.value, current.create_revision, revision)
    return backends.Event(backends.EventType.DELETE, kv, current)


def read_revision(revision: int, current: int, compacted: int) -> int:
    """The revision a read asking for ``revision`` (0 = latest) is answered at.

    The compacted revision itself is still readable: compaction keeps the latest
    version of every key at or below it.
    """
    if revision < 0:
        raise ValueError(f"revision must not be negative, got {revision}")
    if revision == 0:
        return current
    if revision > current:
        raise backends.FutureRevisionError(revision, current)
    if revision < compacted:
        raise backends.CompactedError(revision, compacted)
    return revision


def check_watch_revision(revision: int, compacted: int) -> None:
    """Replay after ``revision`` needs every row above it, and compaction keeps only those above ``compacted``."""
    if revision < compacted:
        raise backends.CompactedError(revision, compacted)


def prefix_end(prefix: str) -> str | None:
    """The smallest string greater than every string with ``prefix`` (None: no bound).

    SQLite compares TEXT as UTF-8 bytes, which orders like Python code points.
    """
    while prefix:
        last = ord(prefix[-1])
        if last < 0x10FFFF:
            return prefix[:-1] + chr(last + 1)
        prefix = prefix[:-1]
    return None


class Log(Protocol):
    """Storage of the append-only log; each call is atomic with respect to the others."""

    async def open(self) -> None:
        """Open (creating if needed) and recover the current and compacted revisions."""

    async def close(self) -> None:
        """Release the storage; no call follows."""

    async def current_revision(self) -> int:
        """The id of the last appended row (0 when empty)."""

    async def compacted_revision(self) -> int:
        """The revision of the last compaction (0 when never compacted)."""

    async def append(self, writes: Sequence[Write]) -> list[backends.Event | backends.StorageError]:
        """Apply ``writes`` in order, in one transaction, via ``apply_write``.

        Each write whose precondition holds appends one row at the next revision; the
        result holds its event, or the precondition's error (and nothing appended).
        Any other exception means nothing at all was appended.
        """

    async def after(self, prefix: str, revision: int, limit: int) -> list[backends.Event]:
        """Up to ``limit`` rows with id > ``revision`` for keys with ``prefix``, by id.

        Raises ``CompactedError`` when ``revision`` is older than the compacted revision.
        """

    async def get(self, key: str, revision: int) -> backends.KeyValue | None:
        """The live version of ``key`` as of ``revision`` (checked by ``read_revision``)."""

    async def range(
        self, prefix: str, start_key: str, limit: int, revision: int
    ) -> backends.ListResult:
        """The latest row per key up to ``revision``, deletions dropped (see ``Backend.list``)."""

    async def count(self, prefix: str) -> int:
        """Live keys with ``prefix`` at the current revision."""

    async def compact(self, revision: int) -> None:
        """Drop rows superseded at or below ``revision`` and tombstones at or below it."""


@dataclass(eq=False, slots=True)
class _Watcher:
    """One watch's position in the stream and its bounded buffer of live events."""

    prefix: str
    delivered: int
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    buffer: collections.deque[backends.Event] = field(default_factory=collections.deque)
    overflowed: bool = False

    def rewind(self) -> None:
        """Forget buffered events; the next read of the log (which follows) covers them."""
        self.buffer.clear()
        self.overflowed = False


@dataclass(eq=False, slots=True)
class _PendingWrite:
    write: Write
    future: asyncio.Future[backends.Event]


class LogStructuredBackend:
    """``Backend`` over a ``Log``: one writer task orders commits and watch notifications.

    Writes are queued to the writer, which hands everything queued (up to
    ``max_batch``) to the log as one transaction, then notifies watchers, then answers
    the callers, so a caller that sees its write acknowledged can rely on every
    watcher having it queued. A write whose caller is cancelled before the writer
    takes it is dropped; after that it may still commit, as with any remote store.
    """

    def __init__(
        self,
        log: Log,
        *,
        watch_buffer: int = 1000,
        replay_page: int = 1000,
        max_batch: int = 256,
    ) -> None:
        if watch_buffer < 1 or replay_page < 1 or max_batch < 1:
            raise ValueError("watch_buffer, replay_page and max_batch must be positive")
        self._log = log
        self._watch_buffer = watch_buffer
        self._replay_page = replay_page
        self._max_batch = max_batch
        self._revision = 0
        self._running = False
        self._closed = False
        self._queue: asyncio.Queue[_PendingWrite | None] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self._watchers: set[_Watcher] = set()

    async def start(self) -> None:
        if self._running or self._closed:
            raise backends.BackendClosedError("backend already started")
        await self._log.open()
        self._revision = await self._log.current_revision()
        self._writer = asyncio.create_task(self._run_writer(), name="storage-writer")
        self._running = True

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if not self._running:
            return
        self._running = False
        assert self._writer is not None
        self._queue.put_nowait(None)
        await self._writer
        for watcher in self._watchers:
            watcher.wake.set()
        await self._log.close()

    async def current_revision(self) -> int:
        self._require_running()
        return self._revision

    async def compacted_revision(self) -> int:
        self._require_running()
        return await self._log.compacted_revision()

    async def get(self, key: str, revision: int = 0) -> backends.KeyValue | None:
        self._require_running()
        return await self._log.get(key, revision)

    async def list(
        self, prefix: str, *, start_key: str = "", limit: int = 0, revision: int = 0
    ) -> backends.ListResult:
        self._require_running()
        if limit < 0:
            raise ValueError(f"limit must not be negative, got {limit}")
        return await self._log.range(prefix, start_key, limit, revision)

    async def count(self, prefix: str) -> int:
        self._require_running()
        return await self._log.count(prefix)

    async def create(self, key: str, value: bytes) -> backends.KeyValue:
        return await self._write(Write(backends.EventType.CREATE, key, value))

    async def update(self, key: str, value: bytes, expected_revision: int) -> backends.KeyValue:
        return await self._write(Write(backends.EventType.UPDATE, key, value, expected_revision))

    async def delete(self, key: str, expected_revision: int = 0) -> backends.KeyValue:
        return await self._write(
            Write(backends.EventType.DELETE, key, expected_revision=expected_revision)
        )

    async def compact(self, revision: int) -> None:
        self._require_running()
        await self._log.compact(revision)

    def watch(self, prefix: str, revision: int) -> AsyncIterator[backends.EventBatch]:
        return self._watch(prefix, revision)

    @property
    def watcher_count(self) -> int:
        """Watches currently registered (for metrics, and to check none leak)."""
        return len(self._watchers)

    async def _watch(self, prefix: str, revision: int) -> AsyncIterator[backends.EventBatch]:
        self._require_running()
        if revision < 0:
            raise ValueError(f"revision must not be negative, got {revision}")
        # Registered before the first read of the log: every event committed after
        # that read lands in the buffer; events in both are dropped by revision.
        watcher = _Watcher(prefix, revision)
        self._watchers.add(watcher)
        try:
            from_log = True
            while not self._closed:
                if from_log or watcher.overflowed:
                    watcher.rewind()
                    replayed = await self._log.after(prefix, watcher.delivered, self._replay_page)
                    if self._closed:
                        return
                    from_log = len(replayed) >= self._replay_page
                    if replayed:
                        watcher.delivered = replayed[-1].revision
                        yield replayed
                    continue
                if not watcher.buffer:
                    watcher.wake.clear()
                    await watcher.wake.wait()
                    continue
                batch = [event for event in watcher.buffer if event.revision > watcher.delivered]
                watcher.buffer.clear()
                if batch:
                    watcher.delivered = batch[-1].revision
                    yield batch
        finally:
            self._watchers.discard(watcher)

    def _require_running(self) -> None:
        if not self._running:
            raise backends.BackendClosedError(
                "backend is closed" if self._closed else "backend not started"
            )

    async def _write(self, write: Write) -> backends.KeyValue:
        self._require_running()
        future: asyncio.Future[backends.Event] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_PendingWrite(write, future))
        event = await future
        return event.kv

    async def _run_writer(self) -> None:
        """Commit queued writes in batches, then notify watchers, then answer callers."""
        stopping = False
        while not stopping:
            taken = [await self._queue.get()]
            if self._queue.empty():
                # Group commit: writers woken in this turn of the loop queue
                # theirs first, and share the transaction (its BEGIN and COMMIT
                # were over half of a lone write's cost in the log).
                await asyncio.sleep(0)
            while len(taken) < self._max_batch and not self._queue.empty():
                taken.append(self._queue.get_nowait())
            stopping = None in taken
            pending = [p for p in taken if p is not None and not p.future.cancelled()]
            if not pending:
                continue
            try:
                results = await self._log.append([p.write for p in pending])
            except Exception as exc:  # nothing was committed: every caller gets the failure
                for p in pending:
                    if not p.future.done():
                        p.future.set_exception(exc)
                continue
            events = [r for r in results if isinstance(r, backends.Event)]
            if events:
                self._revision = events[-1].revision
                self._publish(events)
            for p, result in zip(pending, results, strict=True):
                if p.future.done():
                    continue
                if isinstance(result, backends.Event):
                    p.future.set_result(result)
                else:
                    p.future.set_exception(result)

    def _publish(self, events: Sequence[backends.Event]) -> None:
        for watcher in self._watchers:
            if watcher.overflowed:
                continue
            matching = [e for e in events if e.kv.key.startswith(watcher.prefix)]
            if not matching:
                continue
            if len(watcher.buffer) + len(matching) > self._watch_buffer:
                watcher.buffer.clear()
                watcher.overflowed = True
            else:
                watcher.buffer.extend(matching)
            watcher.wake.set()
