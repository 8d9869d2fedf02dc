"""Memory and SQLite backends give identical answers to the same random workload.

The contract suite pins chosen cases; this catches the unchosen ones (compaction
interleaved with recreated keys, reads at arbitrary revisions, paging) by using the
memory backend as the reference for the SQL queries.
"""

from __future__ import annotations

import asyncio
import pathlib
import random
from dataclasses import dataclass

import pytest

from nodeless.storage import backends, memory, sqlite

KEYS = [f"/registry/{kind}/ns/{name}" for kind in ("pods", "podsx") for name in "abcde"]


@dataclass(frozen=True)
class Op:
    """One random call, applied alike to every backend."""

    name: str
    key: str
    value: bytes
    expected_revision: int
    revision: int
    prefix: str
    start_key: str
    limit: int


async def perform(backend: backends.Backend, op: Op) -> object:
    """The result of ``op`` on ``backend``, or the type of the storage error it raised."""
    try:
        match op.name:
            case "create":
                return await backend.create(op.key, op.value)
            case "update":
                return await backend.update(op.key, op.value, op.expected_revision)
            case "delete":
                return await backend.delete(op.key, op.expected_revision)
            case "get":
                return await backend.get(op.key, op.revision)
            case "list":
                return await backend.list(
                    op.prefix, start_key=op.start_key, limit=op.limit, revision=op.revision
                )
            case "watch":
                return await replay(backend, op.prefix, op.revision)
            case _:
                await backend.compact(op.revision)
                return await backend.compacted_revision()
    except backends.StorageError as exc:
        return type(exc)


async def replay(backend: backends.Backend, prefix: str, revision: int) -> object:
    """Every event a watch from ``revision`` replays, up to a marker written under ``prefix``."""
    marker = prefix + "~marker"
    try:
        end = (await backend.create(marker, b"")).mod_revision
    except backends.KeyExistsError:
        end = (await backend.update(marker, b"", 0)).mod_revision
    if revision >= end:
        return []
    watch = backend.watch(prefix, revision)
    events: list[backends.Event] = []
    try:
        async with asyncio.timeout(5):
            while not events or events[-1].revision < end:
                events.extend(await anext(watch))
    except backends.CompactedError:
        return backends.CompactedError
    finally:
        await watch.aclose()  # type: ignore[attr-defined]
    return events


@pytest.mark.parametrize("seed", range(5))
async def test_memory_and_sqlite_agree_on_a_random_workload(
    seed: int, tmp_path: pathlib.Path
) -> None:
    rng = random.Random(seed)
    pair: list[backends.Backend] = [
        memory.MemoryBackend(),
        sqlite.SqliteBackend(tmp_path / "db.sqlite", compact_step=7),
    ]
    for backend in pair:
        await backend.start()
    try:
        for step in range(400):
            reference = pair[0]
            key = rng.choice(KEYS)
            current = await reference.get(key)
            op = Op(
                name=rng.choices(
                    ["create", "update", "delete", "get", "list", "watch", "compact"],
                    weights=[6, 8, 4, 3, 3, 1, 1],
                )[0],
                key=key,
                value=f"{step}".encode(),
                expected_revision=rng.choice(
                    [0, current.mod_revision if current else 1, rng.randint(1, step + 1)]
                ),
                revision=rng.randint(0, await reference.current_revision() + 1),
                prefix=rng.choice(["/registry/pods/", "/registry/pods", "/registry/podsx/", ""]),
                start_key=rng.choice(["", *KEYS]),
                limit=rng.choice([0, 1, 3]),
            )
            outcomes = [await perform(backend, op) for backend in pair]
            assert outcomes[0] == outcomes[1], f"step {step}: {op}"
        assert await pair[0].current_revision() == await pair[1].current_revision()
    finally:
        for backend in pair:
            await backend.close()
