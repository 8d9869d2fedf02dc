"""The log in one SQLite file, kine's schema: writes on the event loop, the rest on a thread.

Writes run inline on the event loop, on their own connection. A commit in WAL mode
with ``synchronous=NORMAL`` appends a few pages to the WAL file and syncs nothing
(but for the first commit after a complete checkpoint, which starts the WAL over
and syncs its header: about once per ``CHECKPOINT_EVERY`` commits): about 0.1 ms here, less than handing the write to a thread and back (on a 2-core VM
a hop costs ~0.3 ms of CPU, and the GIL hand-overs it forces cost the whole process
more: a 200-pod start used a quarter of a core less with the writes inline). Every
write still goes through the backend's single writer task, so a write's
precondition check and its insert (one ``BEGIN IMMEDIATE`` transaction) never
interleave with another write.

What may take long runs on the log's own thread: reads (a list can be large), on a
second connection, which in WAL mode sees every committed write and never blocks the
writer; compaction, on the writer connection while ``_write_lock`` keeps appends
waiting; and checkpoints (copying the WAL into the database, with the syncs
``synchronous=NORMAL`` defers to them), which the writer connection therefore never
runs itself (``wal_autocheckpoint=0``): every ``CHECKPOINT_EVERY`` commits one is
started on the thread, passive, so it never blocks a write either (it does delay
the reads queued behind it on the thread).

Durability: a committed write survives the process being killed (it is in the WAL
file); a power loss may lose the last transactions. One process owns the file; other
processes may only read it (e.g. for debugging).

Table ``log`` is append-only apart from compaction; its row id is the revision.
``value`` is the key's value after the write (for a delete: its last value);
``old_value``/``prev_revision`` are the version the write replaced. Table ``meta``
holds the compacted revision.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import os
import sqlite3
from collections.abc import Callable, Sequence
from typing import TypeVar

from nodeless.storage import backends, logstructured

log = logging.getLogger(__name__)

_T = TypeVar("_T")

# Commits between two checkpoints. A commit here writes 3-4 pages, so this stays
# near SQLite's own default of a checkpoint per 1,000 WAL pages.
CHECKPOINT_EVERY = 256

_SCHEMA = """
CREATE TABLE IF NOT EXISTS log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    created INTEGER,
    deleted INTEGER,
    create_revision INTEGER,
    prev_revision INTEGER,
    value BLOB,
    old_value BLOB
);
CREATE INDEX IF NOT EXISTS log_name_id ON log (name, id);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""

_COLUMNS = "id, name, created, deleted, create_revision, prev_revision, value, old_value"

_INSERT = f"INSERT INTO log ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"

_LATEST_OF_KEY = f"SELECT {_COLUMNS} FROM log WHERE name = ? AND id <= ? ORDER BY id DESC LIMIT 1"

# The newest row of every name in a name range up to a revision, deletions dropped.
# Relies on SQLite's documented bare-column rule: with a single max() aggregate, the
# other columns come from the row holding the maximum. This walks the (name, id)
# index in name order with no sort, so a LIMIT stops early; kine's form
# "WHERE id IN (SELECT MAX(id) ... GROUP BY name)" sorts the whole range first
# (measured 5x slower for 10,000 keys, 15x for a page of 500).
_RANGE = (
    "SELECT MAX(id), name, created, deleted, create_revision, prev_revision, value, old_value"
    " FROM log WHERE name >= ? {upper} AND id <= ? GROUP BY name HAVING deleted = 0"
    " ORDER BY name {limit}"
)

# Counting needs no row data: kine's form is the fastest here (covering index only).
_COUNT = (
    "SELECT COUNT(*) FROM log WHERE id IN"
    " (SELECT MAX(id) FROM log WHERE name >= ? {upper} AND id <= ? GROUP BY name)"
    " AND deleted = 0"
)

_AFTER = f"SELECT {_COLUMNS} FROM log WHERE id > ? AND name >= ? {{upper}} ORDER BY id LIMIT ?"

# Rows superseded at or below the new compacted revision. Rows superseded at or
# below the previous one are gone already, so only names written since then matter.
_COMPACT_SUPERSEDED = """
DELETE FROM log WHERE id IN (
    SELECT old.id
    FROM (SELECT name, MAX(id) AS top FROM log WHERE id > ? AND id <= ? GROUP BY name) AS newer
    JOIN log AS old ON old.name = newer.name AND old.id < newer.top
)
"""

_COMPACT_TOMBSTONES = "DELETE FROM log WHERE deleted = 1 AND id > ? AND id <= ?"

_SET_COMPACTED = (
    "INSERT INTO meta (key, value) VALUES ('compacted_revision', ?) "
    "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)


def _connect(path: str) -> sqlite3.Connection:
    # Opened on the log's thread; the writer connection is then used on the loop.
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA busy_timeout=5000")
    return db


_Row = tuple[int, str, int, int, int, int, bytes, bytes | None]


def _event(row: _Row) -> backends.Event:
    revision, name, created, deleted, create_revision, prev_revision, value, old_value = row
    kv = backends.KeyValue(name, value, create_revision, revision)
    if created:
        return backends.Event(backends.EventType.CREATE, kv, None)
    prev = backends.KeyValue(name, old_value or b"", create_revision, prev_revision)
    kind = backends.EventType.DELETE if deleted else backends.EventType.UPDATE
    return backends.Event(kind, kv, prev)


def _live(row: _Row | None) -> backends.KeyValue | None:
    if row is None or row[3]:
        return None
    return backends.KeyValue(row[1], row[6], row[4], row[0])


def _name_range(prefix: str, start_key: str = "") -> tuple[str, str | None]:
    return max(prefix, start_key), logstructured.prefix_end(prefix)


class SqliteLog:
    """``Log`` over one SQLite database: appends on the event loop, the rest on the
    log's own thread (see the module's docstring)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        compact_step: int = 1000,
        checkpoint_every: int = CHECKPOINT_EVERY,
    ) -> None:
        if compact_step < 1 or checkpoint_every < 1:
            raise ValueError("compact_step and checkpoint_every must be positive")
        self._path = os.fspath(path)
        self._compact_step = compact_step
        self._checkpoint_every = checkpoint_every
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        # Appends wait on it while compaction uses the writer connection on the thread.
        self._write_lock = asyncio.Lock()
        self._commits = 0  # since the last checkpoint started
        self._checkpoint: asyncio.Future[None] | None = None
        # Used on the event loop, or on the thread under ``_write_lock``.
        self._db: sqlite3.Connection | None = None
        # Used only on the thread.
        self._reader: sqlite3.Connection | None = None
        # Written by appends on the loop, read on the thread too.
        self._revision = 0
        # Written by compaction on the thread, under the lock.
        self._compacted = 0

    async def open(self) -> None:
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="nodeless-sqlite"
        )
        try:
            await self._run(self._open)
        except BaseException:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise

    async def close(self) -> None:
        if self._executor is None:
            return
        try:
            async with self._write_lock:
                if self._checkpoint is not None:
                    await asyncio.wait([self._checkpoint])
                await self._run_to_end(self._close)
        finally:
            self._executor.shutdown(wait=True)
            self._executor = None
            self._close()  # when cancelled before: nothing runs on the thread now

    async def current_revision(self) -> int:
        self._require_open()
        return self._revision

    async def compacted_revision(self) -> int:
        self._require_open()
        return self._compacted

    async def append(
        self, writes: Sequence[logstructured.Write]
    ) -> list[backends.Event | backends.StorageError]:
        self._require_open()
        async with self._write_lock:
            results = self._append(writes)
        self._commits += 1
        self._maybe_checkpoint()
        return results

    async def after(self, prefix: str, revision: int, limit: int) -> list[backends.Event]:
        return await self._run(functools.partial(self._after, prefix, revision, limit))

    async def get(self, key: str, revision: int) -> backends.KeyValue | None:
        return await self._run(functools.partial(self._get, key, revision))

    async def range(
        self, prefix: str, start_key: str, limit: int, revision: int
    ) -> backends.ListResult:
        return await self._run(functools.partial(self._range, prefix, start_key, limit, revision))

    async def count(self, prefix: str) -> int:
        return await self._run(functools.partial(self._count, prefix))

    async def compact(self, revision: int) -> None:
        # In steps of ``compact_step`` revisions, each its own transaction, so queued
        # writes run in between instead of waiting for one long delete.
        while True:
            async with self._write_lock:
                if await self._run_to_end(functools.partial(self._compact, revision)):
                    return

    def _require_open(self) -> None:
        if self._executor is None or self._db is None:
            raise backends.BackendClosedError("sqlite log is not open")

    async def _run(self, call: Callable[[], _T]) -> _T:
        if self._executor is None:
            raise backends.BackendClosedError("sqlite log is not open")
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    async def _run_to_end(self, call: Callable[[], _T]) -> _T:
        """``_run``, but a cancelled caller still waits for the thread to be
        done with ``call``: the lock a compaction step holds must not be let
        go while the writer connection is in use on the thread."""
        if self._executor is None:
            raise backends.BackendClosedError("sqlite log is not open")
        future = asyncio.get_running_loop().run_in_executor(self._executor, call)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            await asyncio.wait([future])
            raise

    def _maybe_checkpoint(self) -> None:
        if self._commits < self._checkpoint_every or self._checkpoint is not None:
            return
        if self._executor is None or self._reader is None:
            return
        self._commits = 0
        self._checkpoint = asyncio.ensure_future(self._run(self._wal_checkpoint))
        self._checkpoint.add_done_callback(self._checkpoint_done)

    def _checkpoint_done(self, future: asyncio.Future[None]) -> None:
        self._checkpoint = None
        if not future.cancelled() and future.exception() is not None:
            # the next one retries; the WAL only grows meanwhile
            log.warning("checkpointing %s failed: %s", self._path, future.exception())
        # commits made while it ran may have reached the next one already
        self._maybe_checkpoint()

    # --- on the thread, or (``_append``) on the loop ---

    @property
    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise backends.BackendClosedError("sqlite log is not open")
        return self._db

    @property
    def _read_conn(self) -> sqlite3.Connection:
        if self._reader is None:
            raise backends.BackendClosedError("sqlite log is not open")
        return self._reader

    def _open(self) -> None:
        db = _connect(self._path)
        try:
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise RuntimeError(f"{self._path}: cannot use WAL journal (got {mode!r})")
            db.execute("PRAGMA wal_autocheckpoint=0")
            db.executescript(_SCHEMA)
            (max_id,) = db.execute("SELECT COALESCE(MAX(id), 0) FROM log").fetchone()
            sequence = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'log'").fetchone()
            compacted = db.execute(
                "SELECT value FROM meta WHERE key = 'compacted_revision'"
            ).fetchone()
            reader = _connect(self._path)
        except BaseException:
            db.close()
            raise
        self._db = db
        self._reader = reader
        self._compacted = int(compacted[0]) if compacted else 0
        # The newest rows may be compacted tombstones: the sequence remembers them.
        self._revision = max(int(max_id), int(sequence[0]) if sequence else 0, self._compacted)

    def _close(self) -> None:
        # The reader first: the last connection to close checkpoints the WAL
        # into the database and removes it.
        for db in (self._reader, self._db):
            if db is not None:
                db.close()
        self._reader = self._db = None

    def _wal_checkpoint(self) -> None:
        self._read_conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def _append(
        self, writes: Sequence[logstructured.Write]
    ) -> list[backends.Event | backends.StorageError]:
        conn = self._conn
        revision = self._revision
        results: list[backends.Event | backends.StorageError] = []
        # outside the try: a BEGIN that fails must not roll back anything
        conn.execute("BEGIN IMMEDIATE")
        try:
            for write in writes:
                row = conn.execute(_LATEST_OF_KEY, (write.key, revision)).fetchone()
                try:
                    event = logstructured.apply_write(write, _live(row), revision + 1)
                except backends.StorageError as exc:
                    results.append(exc)
                    continue
                prev = event.prev
                conn.execute(
                    _INSERT,
                    (
                        event.kv.mod_revision,
                        event.kv.key,
                        event.type is backends.EventType.CREATE,
                        event.type is backends.EventType.DELETE,
                        event.kv.create_revision,
                        prev.mod_revision if prev is not None else 0,
                        event.kv.value,
                        prev.value if prev is not None else None,
                    ),
                )
                revision = event.kv.mod_revision
                results.append(event)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self._revision = revision
        return results

    def _after(self, prefix: str, revision: int, limit: int) -> list[backends.Event]:
        logstructured.check_watch_revision(revision, self._compacted)
        low, high = _name_range(prefix)
        if high is None:
            rows = self._read_conn.execute(_AFTER.format(upper=""), (revision, low, limit))
        else:
            rows = self._read_conn.execute(
                _AFTER.format(upper="AND name < ?"), (revision, low, high, limit)
            )
        return [_event(row) for row in rows]

    def _get(self, key: str, revision: int) -> backends.KeyValue | None:
        at = logstructured.read_revision(revision, self._revision, self._compacted)
        return _live(self._read_conn.execute(_LATEST_OF_KEY, (key, at)).fetchone())

    def _range(self, prefix: str, start_key: str, limit: int, revision: int) -> backends.ListResult:
        at = logstructured.read_revision(revision, self._revision, self._compacted)
        low, high = _name_range(prefix, start_key)
        if high is not None and low >= high:
            return backends.ListResult([], at, False, 0)
        upper, bounds = ("", (low, at)) if high is None else ("AND name < ?", (low, high, at))
        if limit:
            sql = _RANGE.format(upper=upper, limit="LIMIT ?")
            rows = self._read_conn.execute(sql, (*bounds, limit + 1)).fetchall()
        else:
            rows = self._read_conn.execute(_RANGE.format(upper=upper, limit=""), bounds).fetchall()
        items = [backends.KeyValue(r[1], r[6], r[4], r[0]) for r in rows]
        if not limit or len(items) <= limit:
            return backends.ListResult(items, at, False, 0)
        (total,) = self._read_conn.execute(_COUNT.format(upper=upper), bounds).fetchone()
        return backends.ListResult(items[:limit], at, True, int(total) - limit)

    def _count(self, prefix: str) -> int:
        low, high = _name_range(prefix)
        upper, bounds = (
            ("", (low, self._revision))
            if high is None
            else ("AND name < ?", (low, high, self._revision))
        )
        (total,) = self._read_conn.execute(_COUNT.format(upper=upper), bounds).fetchone()
        return int(total)

    def _compact(self, revision: int) -> bool:
        """Compact one step towards ``revision``; True once there."""
        if revision > self._revision:
            raise backends.FutureRevisionError(revision, self._revision)
        if revision <= self._compacted:
            return True
        target = min(revision, self._compacted + self._compact_step)
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(_COMPACT_SUPERSEDED, (self._compacted, target))
            conn.execute(_COMPACT_TOMBSTONES, (self._compacted, target))
            conn.execute(_SET_COMPACTED, (target,))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self._compacted = target
        return target == revision


class SqliteBackend(logstructured.LogStructuredBackend):
    """A ``Backend`` persisted in the SQLite file at ``path`` (created if missing)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        watch_buffer: int = 1000,
        replay_page: int = 1000,
        max_batch: int = 256,
        compact_step: int = 1000,
        checkpoint_every: int = CHECKPOINT_EVERY,
    ) -> None:
        super().__init__(
            SqliteLog(path, compact_step=compact_step, checkpoint_every=checkpoint_every),
            watch_buffer=watch_buffer,
            replay_page=replay_page,
            max_batch=max_batch,
        )
