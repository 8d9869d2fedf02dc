"""An in-memory log, so unit tests get the exact semantics of the real stores without disk.

``MemoryBackend`` is ``LogStructuredBackend`` over ``MemoryLog``: the same writer,
preconditions and watch fan-out as the SQLite backend; only the row storage differs.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Sequence

from nodeless.storage import backends, logstructured


def _revision_of(event: backends.Event) -> int:
    return event.kv.mod_revision


class MemoryLog:
    """The log as Python lists: every event in revision order plus each key's history."""

    def __init__(self) -> None:
        self._events: list[backends.Event] = []
        self._history: dict[str, list[backends.Event]] = {}
        self._names: list[str] = []  # sorted keys of _history, for prefix ranges
        self._revision = 0
        self._compacted = 0

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def current_revision(self) -> int:
        return self._revision

    async def compacted_revision(self) -> int:
        return self._compacted

    async def append(
        self, writes: Sequence[logstructured.Write]
    ) -> list[backends.Event | backends.StorageError]:
        results: list[backends.Event | backends.StorageError] = []
        for write in writes:
            current = self._live(write.key, self._revision)
            try:
                event = logstructured.apply_write(write, current, self._revision + 1)
            except backends.StorageError as exc:
                results.append(exc)
                continue
            self._revision = event.revision
            self._events.append(event)
            history = self._history.get(write.key)
            if history is None:
                history = self._history[write.key] = []
                bisect.insort(self._names, write.key)
            history.append(event)
            results.append(event)
        return results

    async def after(self, prefix: str, revision: int, limit: int) -> list[backends.Event]:
        logstructured.check_watch_revision(revision, self._compacted)
        start = bisect.bisect_right(self._events, revision, key=_revision_of)
        found: list[backends.Event] = []
        for event in self._events[start:]:
            if event.kv.key.startswith(prefix):
                found.append(event)
                if len(found) >= limit:
                    break
        return found

    async def get(self, key: str, revision: int) -> backends.KeyValue | None:
        at = logstructured.read_revision(revision, self._revision, self._compacted)
        return self._live(key, at)

    async def range(
        self, prefix: str, start_key: str, limit: int, revision: int
    ) -> backends.ListResult:
        at = logstructured.read_revision(revision, self._revision, self._compacted)
        items: list[backends.KeyValue] = []
        remaining = 0
        for name in self._names_from(max(prefix, start_key), prefix):
            kv = self._live(name, at)
            if kv is None:
                continue
            if limit and len(items) >= limit:
                remaining += 1
            else:
                items.append(kv)
        return backends.ListResult(items, at, remaining > 0, remaining)

    async def count(self, prefix: str) -> int:
        return sum(
            1 for name in self._names_from(prefix, prefix) if self._live(name, self._revision)
        )

    async def compact(self, revision: int) -> None:
        if revision > self._revision:
            raise backends.FutureRevisionError(revision, self._revision)
        if revision <= self._compacted:
            return
        kept_at_or_below: set[int] = set()
        for name in self._names:
            history = self._history[name]
            cut = bisect.bisect_right(history, revision, key=_revision_of)
            if cut and history[cut - 1].type is not backends.EventType.DELETE:
                cut -= 1
                kept_at_or_below.add(history[cut].revision)
            if cut:
                del history[:cut]
            if not history:
                del self._history[name]
        self._names = [name for name in self._names if name in self._history]
        self._events = [
            e for e in self._events if e.revision > revision or e.revision in kept_at_or_below
        ]
        self._compacted = revision

    def _live(self, key: str, revision: int) -> backends.KeyValue | None:
        history = self._history.get(key)
        if not history:
            return None
        index = bisect.bisect_right(history, revision, key=_revision_of)
        if index == 0 or history[index - 1].type is backends.EventType.DELETE:
            return None
        return history[index - 1].kv

    def _names_from(self, start: str, prefix: str) -> Iterator[str]:
        for index in range(bisect.bisect_left(self._names, start), len(self._names)):
            name = self._names[index]
            if not name.startswith(prefix):
                return
            yield name


class MemoryBackend(logstructured.LogStructuredBackend):
    """A ``Backend`` that keeps everything in memory; state is lost on close."""

    def __init__(
        self, *, watch_buffer: int = 1000, replay_page: int = 1000, max_batch: int = 256
    ) -> None:
        super().__init__(
            MemoryLog(), watch_buffer=watch_buffer, replay_page=replay_page, max_batch=max_batch
        )
