"""What is particular to the SQLite log: the file outlives the process, and its shape."""

from __future__ import annotations

import asyncio
import pathlib
import sqlite3
import threading

import pytest

from nodeless.storage import backends, logstructured, sqlite

PODS = "/registry/pods/"


def rows(path: pathlib.Path) -> list[tuple[int, str, int, int]]:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT id, name, created, deleted FROM log ORDER BY id").fetchall()


async def test_reopened_database_keeps_data_and_revision(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "db.sqlite"
    first = sqlite.SqliteBackend(path)
    await first.start()
    await first.create(PODS + "a", b"1")
    await first.update(PODS + "a", b"2", 1)
    await first.create(PODS + "b", b"3")
    await first.close()

    second = sqlite.SqliteBackend(path)
    await second.start()
    try:
        assert await second.current_revision() == 3
        assert await second.get(PODS + "a") == backends.KeyValue(PODS + "a", b"2", 1, 2)
        assert (await second.create(PODS + "c", b"")).mod_revision == 4
        watch = second.watch(PODS, 0)
        replayed = await anext(watch)
        await watch.aclose()  # type: ignore[attr-defined]
        assert [e.revision for e in replayed] == [1, 2, 3, 4]
    finally:
        await second.close()


async def test_reopened_database_keeps_compaction_and_revision_past_compacted_tombstones(
    tmp_path: pathlib.Path,
) -> None:
    path = tmp_path / "db.sqlite"
    first = sqlite.SqliteBackend(path)
    await first.start()
    await first.create(PODS + "a", b"")
    await first.create(PODS + "b", b"")
    await first.delete(PODS + "b")
    await first.compact(3)
    await first.close()

    second = sqlite.SqliteBackend(path)
    await second.start()
    try:
        assert await second.compacted_revision() == 3
        assert await second.current_revision() == 3
        assert (await second.create(PODS + "b", b"")).mod_revision == 4
        with pytest.raises(backends.CompactedError):
            await anext(second.watch(PODS, 2))
    finally:
        await second.close()


async def test_compaction_deletes_superseded_rows_and_old_tombstones(
    tmp_path: pathlib.Path,
) -> None:
    path = tmp_path / "db.sqlite"
    backend = sqlite.SqliteBackend(path)
    await backend.start()
    try:
        await backend.create(PODS + "a", b"")  # 1: superseded by 2
        await backend.update(PODS + "a", b"", 0)  # 2: kept, latest of a at 4
        await backend.create(PODS + "b", b"")  # 3: superseded by 4
        await backend.delete(PODS + "b")  # 4: tombstone at or below 4
        await backend.create(PODS + "c", b"")  # 5: kept, later than 4
        await backend.update(PODS + "a", b"", 0)  # 6
        await backend.compact(4)
        after_first = [row[0] for row in rows(path)]
        await backend.compact(6)
        after_second = [row[0] for row in rows(path)]
    finally:
        await backend.close()

    assert after_first == [2, 5, 6]
    assert after_second == [5, 6]


async def test_compaction_in_small_steps_ends_where_one_big_step_does(
    tmp_path: pathlib.Path,
) -> None:
    results = []
    for step in (1000, 2):
        path = tmp_path / f"step{step}.sqlite"
        backend = sqlite.SqliteBackend(path, compact_step=step)
        await backend.start()
        try:
            for i in range(9):
                await backend.create(f"{PODS}{i % 3}-{i // 3}", b"")
                await backend.update(f"{PODS}{i % 3}-{i // 3}", b"x", 0)
                if i % 2:
                    await backend.delete(f"{PODS}{i % 3}-{i // 3}")
            await backend.compact(20)
            assert await backend.compacted_revision() == 20
            listed = await backend.list(PODS)
        finally:
            await backend.close()
        results.append((rows(path), listed))

    assert results[0] == results[1]


async def test_database_uses_wal_and_the_kine_schema(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "db.sqlite"
    backend = sqlite.SqliteBackend(path)
    await backend.start()
    await backend.create(PODS + "a", b"v")
    await backend.delete(PODS + "a")
    await backend.close()

    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        columns = [row[1] for row in db.execute("PRAGMA table_info(log)")]
        plan = " ".join(
            str(row[-1])
            for row in db.execute(
                "EXPLAIN QUERY PLAN SELECT * FROM log WHERE name = ? AND id <= ? "
                "ORDER BY id DESC LIMIT 1",
                (PODS + "a", 2),
            )
        )
        stored = db.execute(
            "SELECT id, name, created, deleted, create_revision, prev_revision, value, old_value "
            "FROM log ORDER BY id"
        ).fetchall()
    assert columns == [
        "id",
        "name",
        "created",
        "deleted",
        "create_revision",
        "prev_revision",
        "value",
        "old_value",
    ]
    assert "log_name_id" in plan
    assert stored == [
        (1, PODS + "a", 1, 0, 1, 0, b"v", None),
        (2, PODS + "a", 0, 1, 1, 1, b"v", b"v"),
    ]


async def test_concurrent_writes_are_grouped_without_losing_any(tmp_path: pathlib.Path) -> None:
    backend = sqlite.SqliteBackend(tmp_path / "db.sqlite", max_batch=16)
    await backend.start()
    try:
        created = await asyncio.gather(
            *(backend.create(f"{PODS}{i:03d}", str(i).encode()) for i in range(300))
        )
        listed = await backend.list(PODS)
    finally:
        await backend.close()

    assert sorted(kv.mod_revision for kv in created) == list(range(1, 301))
    assert [kv.value for kv in listed.items] == [str(i).encode() for i in range(300)]


async def test_opening_an_unusable_path_fails_cleanly(tmp_path: pathlib.Path) -> None:
    backend = sqlite.SqliteBackend(tmp_path / "missing-dir" / "db.sqlite")

    with pytest.raises(sqlite3.OperationalError):
        await backend.start()
    with pytest.raises(backends.BackendClosedError):
        await backend.get(PODS + "a")


async def test_commits_are_checkpointed_into_the_database_file_off_the_writer(
    tmp_path: pathlib.Path,
) -> None:
    # The writer connection never checkpoints (wal_autocheckpoint=0): without
    # the log's own checkpoints every page would stay in the WAL file.
    async def database_size(backend: sqlite.SqliteBackend, path: pathlib.Path) -> int:
        for i in range(60):
            await backend.create(f"{PODS}{i:03d}", b"x" * 2000)
        assert (await backend.list(PODS)).items[-1].key == PODS + "059"
        # the last checkpoint runs on the thread, with its syncs: give it time
        for _ in range(200 if path.name.startswith("every-10.") else 0):
            if path.stat().st_size > 100_000:
                break
            await asyncio.sleep(0.05)
        return path.stat().st_size

    sizes = {}
    for every in (10, 1_000_000):
        path = tmp_path / f"every-{every}.sqlite"
        backend = sqlite.SqliteBackend(path, checkpoint_every=every)
        await backend.start()
        try:
            sizes[every] = await database_size(backend, path)
        finally:
            await backend.close()

    assert sizes[10] > 100_000  # the rows (60 x 2 kB) are in the database file
    assert sizes[1_000_000] < 10_000  # still only in the WAL


async def test_writes_during_a_stepped_compaction_all_land(tmp_path: pathlib.Path) -> None:
    backend = sqlite.SqliteBackend(tmp_path / "db.sqlite", compact_step=5)
    await backend.start()
    try:
        for i in range(100):
            await backend.create(PODS + "a" if i == 0 else f"{PODS}b{i:03d}", b"0")
        for i in range(100):
            await backend.update(PODS + "a", str(i).encode(), 0)
        target = await backend.current_revision()

        writes = [backend.create(f"{PODS}c{i:03d}", b"1") for i in range(50)]
        await asyncio.gather(backend.compact(target), *writes)

        assert await backend.compacted_revision() == target
        assert await backend.current_revision() == target + 50
        assert (await backend.count(PODS)) == 1 + 99 + 50
        assert (await backend.get(PODS + "a")) is not None
    finally:
        await backend.close()
    stored = rows(tmp_path / "db.sqlite")
    # the 100 superseded versions of "a" are gone, the 50 new keys are there
    assert sum(1 for _, name, _, _ in stored if name == PODS + "a") == 1
    assert sum(1 for _, name, _, _ in stored if name.startswith(PODS + "c")) == 50


async def test_a_cancelled_compaction_keeps_appends_waiting_until_its_step_ends(
    tmp_path: pathlib.Path,
) -> None:
    # The step runs on the log's thread on the writer connection, which
    # appends use on the loop: cancelling the caller must not let them in.
    log = sqlite.SqliteLog(tmp_path / "db.sqlite")
    await log.open()
    try:
        for i in range(10):
            await log.append([logstructured.Write(backends.EventType.CREATE, f"{PODS}{i}", b"v")])
        in_step, release = threading.Event(), threading.Event()
        step = log._compact

        def held_step(revision: int) -> bool:
            in_step.set()
            release.wait(10)
            return step(revision)

        log._compact = held_step  # type: ignore[method-assign]
        compaction = asyncio.create_task(log.compact(5))
        assert await asyncio.to_thread(in_step.wait, 10)
        compaction.cancel()
        write = logstructured.Write(backends.EventType.CREATE, PODS + "late", b"v")
        append = asyncio.create_task(log.append([write]))
        await asyncio.sleep(0.1)
        waited = not append.done()
        release.set()

        with pytest.raises(asyncio.CancelledError):
            await compaction
        [event] = await append
        compacted = await log.compacted_revision()  # the step ran to its end
    finally:
        await log.close()

    assert waited
    assert isinstance(event, backends.Event) and event.revision == 11
    assert compacted == 5
    assert len(rows(tmp_path / "db.sqlite")) == 11
