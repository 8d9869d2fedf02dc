"""The ``Backend`` contract, run against every implementation (see conftest)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from nodeless.storage import backends

PODS = "/registry/pods/"


async def take(watch: AsyncIterator[backends.EventBatch], count: int) -> list[backends.Event]:
    """The next ``count`` events of ``watch``, failing instead of hanging."""
    events: list[backends.Event] = []
    async with asyncio.timeout(5):
        while len(events) < count:
            events.extend(await anext(watch))
    return events


async def nothing_more(watch: AsyncIterator[backends.EventBatch]) -> bool:
    """True when ``watch`` has no further event ready."""
    try:
        async with asyncio.timeout(0.05):
            await anext(watch)
    except TimeoutError:
        return True
    return False


# --- single-key writes ---


async def test_empty_store_is_at_revision_zero(backend: backends.Backend) -> None:
    assert await backend.current_revision() == 0
    assert await backend.compacted_revision() == 0
    assert await backend.get(PODS + "a") is None


async def test_create_returns_kv_at_next_revision(backend: backends.Backend) -> None:
    first = await backend.create(PODS + "a", b"1")
    second = await backend.create(PODS + "b", b"2")

    assert first == backends.KeyValue(PODS + "a", b"1", 1, 1)
    assert second == backends.KeyValue(PODS + "b", b"2", 2, 2)
    assert await backend.current_revision() == 2
    assert await backend.get(PODS + "a") == first


async def test_create_of_live_key_raises_key_exists(backend: backends.Backend) -> None:
    await backend.create(PODS + "a", b"1")

    with pytest.raises(backends.KeyExistsError):
        await backend.create(PODS + "a", b"2")
    assert await backend.current_revision() == 1


async def test_update_moves_mod_revision_and_keeps_create_revision(
    backend: backends.Backend,
) -> None:
    created = await backend.create(PODS + "a", b"1")
    await backend.create(PODS + "other", b"x")

    updated = await backend.update(PODS + "a", b"2", created.mod_revision)

    assert updated == backends.KeyValue(PODS + "a", b"2", 1, 3)
    assert await backend.get(PODS + "a") == updated


async def test_update_with_stale_revision_raises_mismatch_carrying_current(
    backend: backends.Backend,
) -> None:
    created = await backend.create(PODS + "a", b"1")
    current = await backend.update(PODS + "a", b"2", created.mod_revision)

    with pytest.raises(backends.RevisionMismatchError) as caught:
        await backend.update(PODS + "a", b"3", created.mod_revision)

    assert caught.value.current == current
    assert await backend.get(PODS + "a") == current
    assert await backend.current_revision() == 2


async def test_update_with_zero_expected_revision_is_unconditional(
    backend: backends.Backend,
) -> None:
    await backend.create(PODS + "a", b"1")
    await backend.update(PODS + "a", b"2", 0)

    updated = await backend.update(PODS + "a", b"3", 0)

    assert updated.value == b"3"
    assert updated.mod_revision == 3


async def test_update_of_missing_key_raises_not_found(backend: backends.Backend) -> None:
    with pytest.raises(backends.KeyNotFoundError):
        await backend.update(PODS + "a", b"1", 0)
    with pytest.raises(backends.KeyNotFoundError):
        await backend.update(PODS + "a", b"1", 7)


async def test_delete_returns_last_value_at_the_delete_revision(
    backend: backends.Backend,
) -> None:
    await backend.create(PODS + "a", b"1")
    await backend.update(PODS + "a", b"2", 0)

    deleted = await backend.delete(PODS + "a")

    assert deleted == backends.KeyValue(PODS + "a", b"2", 1, 3)
    assert await backend.get(PODS + "a") is None
    assert await backend.current_revision() == 3


async def test_delete_of_missing_key_raises_not_found(backend: backends.Backend) -> None:
    with pytest.raises(backends.KeyNotFoundError):
        await backend.delete(PODS + "a")
    await backend.create(PODS + "a", b"1")
    await backend.delete(PODS + "a")
    with pytest.raises(backends.KeyNotFoundError):
        await backend.delete(PODS + "a")


async def test_delete_with_stale_revision_raises_mismatch(backend: backends.Backend) -> None:
    created = await backend.create(PODS + "a", b"1")
    current = await backend.update(PODS + "a", b"2", 0)

    with pytest.raises(backends.RevisionMismatchError) as caught:
        await backend.delete(PODS + "a", created.mod_revision)

    assert caught.value.current == current
    assert await backend.delete(PODS + "a", current.mod_revision) == backends.KeyValue(
        PODS + "a", b"2", 1, 3
    )


async def test_create_after_delete_starts_a_new_lifetime(backend: backends.Backend) -> None:
    await backend.create(PODS + "a", b"1")
    await backend.delete(PODS + "a")

    recreated = await backend.create(PODS + "a", b"again")

    assert recreated == backends.KeyValue(PODS + "a", b"again", 3, 3)


async def test_empty_value_round_trips(backend: backends.Backend) -> None:
    await backend.create(PODS + "a", b"")

    kv = await backend.get(PODS + "a")

    assert kv is not None and kv.value == b""


async def test_get_at_older_revision_returns_that_version(backend: backends.Backend) -> None:
    await backend.create(PODS + "a", b"1")
    await backend.update(PODS + "a", b"2", 0)
    await backend.delete(PODS + "a")

    assert await backend.get(PODS + "a", revision=1) == backends.KeyValue(PODS + "a", b"1", 1, 1)
    assert await backend.get(PODS + "a", revision=2) == backends.KeyValue(PODS + "a", b"2", 1, 2)
    assert await backend.get(PODS + "a", revision=3) is None
    with pytest.raises(backends.FutureRevisionError):
        await backend.get(PODS + "a", revision=4)


async def test_concurrent_creates_of_one_key_let_exactly_one_win(
    backend: backends.Backend,
) -> None:
    results = await asyncio.gather(
        *(backend.create(PODS + "a", str(i).encode()) for i in range(20)),
        return_exceptions=True,
    )

    winners = [r for r in results if isinstance(r, backends.KeyValue)]
    assert len(winners) == 1
    assert all(isinstance(r, backends.KeyExistsError) for r in results if r not in winners)
    assert await backend.get(PODS + "a") == winners[0]


async def test_concurrent_compare_and_swap_lets_exactly_one_win(
    backend: backends.Backend,
) -> None:
    base = await backend.create(PODS + "a", b"0")

    results = await asyncio.gather(
        *(backend.update(PODS + "a", str(i).encode(), base.mod_revision) for i in range(20)),
        return_exceptions=True,
    )

    winners = [r for r in results if isinstance(r, backends.KeyValue)]
    assert len(winners) == 1
    assert all(isinstance(r, backends.RevisionMismatchError) for r in results if r not in winners)
    assert await backend.current_revision() == 2


# --- list and count ---


async def test_list_returns_sorted_live_keys_under_prefix_only(
    backend: backends.Backend,
) -> None:
    for name in ["c", "a", "b"]:
        await backend.create(PODS + name, name.encode())
    await backend.create("/registry/podsx/a", b"x")
    await backend.create("/registry/pod", b"x")
    await backend.create(PODS + "gone", b"x")
    await backend.delete(PODS + "gone")

    result = await backend.list(PODS)

    assert [kv.key for kv in result.items] == [PODS + "a", PODS + "b", PODS + "c"]
    assert [kv.value for kv in result.items] == [b"a", b"b", b"c"]
    assert result.revision == await backend.current_revision()
    assert (result.more, result.remaining) == (False, 0)


async def test_list_pages_through_25_keys_in_pages_of_10_each_exactly_once(
    backend: backends.Backend,
) -> None:
    keys = [f"{PODS}default/web-{i:02d}" for i in range(25)]
    for key in reversed(keys):
        await backend.create(key, key.encode())
    await backend.create("/registry/pods0", b"neighbour")

    seen: list[str] = []
    pages: list[tuple[int, bool, int]] = []
    start_key = ""
    while True:
        page = await backend.list(PODS, start_key=start_key, limit=10, revision=25)
        seen.extend(kv.key for kv in page.items)
        pages.append((len(page.items), page.more, page.remaining))
        if not page.more:
            break
        start_key = page.items[-1].key + "\x00"

    assert seen == keys
    assert pages == [(10, True, 15), (10, True, 5), (5, False, 0)]


async def test_list_at_older_revision_sees_the_state_then(backend: backends.Backend) -> None:
    await backend.create(PODS + "a", b"a1")
    await backend.create(PODS + "b", b"b1")
    await backend.update(PODS + "a", b"a2", 0)
    await backend.delete(PODS + "b")
    await backend.create(PODS + "c", b"c1")

    old = await backend.list(PODS, revision=2)
    middle = await backend.list(PODS, revision=3)
    now = await backend.list(PODS)

    assert old.revision == 2
    assert [(kv.key, kv.value, kv.mod_revision) for kv in old.items] == [
        (PODS + "a", b"a1", 1),
        (PODS + "b", b"b1", 2),
    ]
    assert [kv.value for kv in middle.items] == [b"a2", b"b1"]
    assert [kv.value for kv in now.items] == [b"a2", b"c1"]
    assert now.revision == 5


async def test_list_shows_a_recreated_key_and_hides_a_deleted_one(
    backend: backends.Backend,
) -> None:
    await backend.create(PODS + "a", b"a1")
    await backend.create(PODS + "b", b"b1")
    await backend.delete(PODS + "a")
    await backend.update(PODS + "b", b"b2", 0)
    await backend.delete(PODS + "b")
    await backend.create(PODS + "a", b"a2")

    result = await backend.list(PODS)
    paged = await backend.list(PODS, limit=1)

    assert result.items == [backends.KeyValue(PODS + "a", b"a2", 6, 6)]
    assert (paged.items, paged.more, paged.remaining) == (result.items, False, 0)
    assert await backend.count(PODS) == 1


async def test_list_at_future_revision_raises(backend: backends.Backend) -> None:
    await backend.create(PODS + "a", b"1")

    with pytest.raises(backends.FutureRevisionError):
        await backend.list(PODS, revision=2)


async def test_list_with_start_key_past_the_prefix_is_empty(backend: backends.Backend) -> None:
    await backend.create(PODS + "a", b"1")

    result = await backend.list(PODS, start_key="/registry/pods0")

    assert result.items == []
    assert not result.more


async def test_count_counts_live_keys_under_prefix(backend: backends.Backend) -> None:
    for name in ["a", "b", "c"]:
        await backend.create(PODS + name, b"")
    await backend.delete(PODS + "b")
    await backend.create("/registry/podsx/a", b"")

    assert await backend.count(PODS) == 2
    assert await backend.count("/registry/pods") == 3
    assert await backend.count("") == 3
    assert await backend.count("/registry/services/") == 0


# --- watch ---


async def test_watch_from_zero_replays_everything(backend: backends.Backend) -> None:
    await backend.create(PODS + "a", b"1")
    await backend.update(PODS + "a", b"2", 0)
    await backend.create(PODS + "b", b"3")
    await backend.delete(PODS + "a")

    watch = backend.watch(PODS, 0)
    events = await take(watch, 4)

    assert [(e.type, e.kv.key, e.kv.mod_revision) for e in events] == [
        (backends.EventType.CREATE, PODS + "a", 1),
        (backends.EventType.UPDATE, PODS + "a", 2),
        (backends.EventType.CREATE, PODS + "b", 3),
        (backends.EventType.DELETE, PODS + "a", 4),
    ]
    assert await nothing_more(watch)


async def test_watch_events_carry_previous_versions(backend: backends.Backend) -> None:
    watch = backend.watch(PODS, 0)
    created = await backend.create(PODS + "a", b"1")
    updated = await backend.update(PODS + "a", b"2", 0)
    deleted = await backend.delete(PODS + "a")
    live = await take(watch, 3)

    replayed = await take(backend.watch(PODS, 0), 3)

    for events in (live, replayed):
        assert events == [
            backends.Event(backends.EventType.CREATE, created, None),
            backends.Event(backends.EventType.UPDATE, updated, created),
            backends.Event(backends.EventType.DELETE, deleted, updated),
        ]
        assert events[2].kv.value == b"2"


async def test_watch_from_revision_yields_only_later_events(backend: backends.Backend) -> None:
    for i in range(6):
        await backend.create(f"{PODS}{i}", b"")

    watch = backend.watch(PODS, 4)
    replayed = await take(watch, 2)
    await backend.create(PODS + "live", b"")
    live = await take(watch, 1)

    assert [e.revision for e in replayed + live] == [5, 6, 7]


async def test_watch_from_current_revision_sees_only_new_writes(
    backend: backends.Backend,
) -> None:
    await backend.create(PODS + "old", b"")
    watch = backend.watch(PODS, await backend.current_revision())

    await backend.create(PODS + "new", b"")

    assert [e.kv.key for e in await take(watch, 1)] == [PODS + "new"]


async def test_watch_isolates_prefixes(backend: backends.Backend) -> None:
    watch = backend.watch(PODS, 0)

    await backend.create("/registry/podsx/a", b"")
    await backend.create("/registry/pods", b"")
    await backend.create(PODS + "a", b"")

    assert [e.kv.key for e in await take(watch, 1)] == [PODS + "a"]
    assert await nothing_more(watch)


async def test_watch_sees_concurrent_writes_in_revision_order_with_none_missing(
    backend: backends.Backend,
) -> None:
    await backend.create("/registry/other", b"")
    start = await backend.current_revision()
    watch = backend.watch(PODS, start)

    async def writer(task: int) -> None:
        for i in range(50):
            key = f"{PODS}t{task}-{i % 5}"
            if i < 5:
                await backend.create(key, b"0")
            else:
                await backend.update(key, str(i).encode(), 0)

    await asyncio.gather(*(writer(task) for task in range(4)))
    events = await take(watch, 200)

    assert [e.revision for e in events] == list(range(start + 1, start + 201))
    assert await nothing_more(watch)


async def test_watch_started_while_writes_run_gets_each_event_exactly_once(
    backend: backends.Backend,
) -> None:
    halfway = asyncio.Event()

    async def writer(task: int) -> None:
        for i in range(40):
            await backend.create(f"{PODS}t{task}-{i}", b"")
            if i == 10:
                halfway.set()

    writers = asyncio.gather(*(writer(task) for task in range(4)))
    await halfway.wait()
    watch = backend.watch(PODS, 0)
    first = await anext(watch)
    await writers
    events = first + await take(watch, 160 - len(first))

    assert [e.revision for e in events] == list(range(1, 161))
    assert await nothing_more(watch)


async def test_watch_from_compacted_revision_is_gone(backend: backends.Backend) -> None:
    for i in range(5):
        await backend.create(f"{PODS}{i}", b"")
    await backend.compact(3)

    with pytest.raises(backends.CompactedError) as caught:
        await anext(backend.watch(PODS, 2))

    assert caught.value.compacted_revision == 3


async def test_watch_from_the_compacted_revision_itself_replays_what_follows(
    backend: backends.Backend,
) -> None:
    for i in range(5):
        await backend.create(f"{PODS}{i}", b"")
    await backend.delete(f"{PODS}3")
    await backend.compact(4)

    events = await take(backend.watch(PODS, 4), 2)

    assert [(e.type, e.revision) for e in events] == [
        (backends.EventType.CREATE, 5),
        (backends.EventType.DELETE, 6),
    ]


async def test_watch_ends_when_backend_closes(backend: backends.Backend) -> None:
    watch = backend.watch(PODS, 0)
    await backend.create(PODS + "a", b"")
    await take(watch, 1)
    waiting = asyncio.ensure_future(anext(watch))
    await asyncio.sleep(0.01)

    await backend.close()

    with pytest.raises(StopAsyncIteration):
        async with asyncio.timeout(5):
            await waiting


# --- compaction ---


async def test_compaction_keeps_latest_values_readable(backend: backends.Backend) -> None:
    await backend.create(PODS + "a", b"a1")
    await backend.create(PODS + "b", b"b1")
    await backend.update(PODS + "a", b"a2", 0)
    await backend.delete(PODS + "b")
    await backend.create(PODS + "c", b"c1")
    await backend.update(PODS + "a", b"a3", 0)

    await backend.compact(5)

    assert await backend.compacted_revision() == 5
    assert [(kv.key, kv.value) for kv in (await backend.list(PODS)).items] == [
        (PODS + "a", b"a3"),
        (PODS + "c", b"c1"),
    ]
    at_compaction = await backend.list(PODS, revision=5)
    assert [(kv.key, kv.value) for kv in at_compaction.items] == [
        (PODS + "a", b"a2"),
        (PODS + "c", b"c1"),
    ]
    assert await backend.get(PODS + "a", revision=5) == backends.KeyValue(PODS + "a", b"a2", 1, 3)
    assert await backend.get(PODS + "b") is None
    assert await backend.count(PODS) == 2
    assert await backend.current_revision() == 6
    assert (await backend.create(PODS + "b", b"b2")).create_revision == 7


async def test_read_below_compacted_revision_is_gone(backend: backends.Backend) -> None:
    for i in range(4):
        await backend.create(f"{PODS}{i}", b"")
    await backend.compact(3)

    with pytest.raises(backends.CompactedError):
        await backend.list(PODS, revision=2)
    with pytest.raises(backends.CompactedError):
        await backend.get(PODS + "0", revision=2)


async def test_compact_to_future_revision_raises(backend: backends.Backend) -> None:
    await backend.create(PODS + "a", b"")

    with pytest.raises(backends.FutureRevisionError):
        await backend.compact(2)


async def test_compact_is_idempotent_and_never_goes_back(backend: backends.Backend) -> None:
    for i in range(4):
        await backend.create(f"{PODS}{i}", b"")
    await backend.compact(3)

    await backend.compact(3)
    await backend.compact(1)

    assert await backend.compacted_revision() == 3


async def test_compacting_everything_away_keeps_the_revision(backend: backends.Backend) -> None:
    await backend.create(PODS + "a", b"")
    await backend.delete(PODS + "a")

    await backend.compact(2)

    assert await backend.current_revision() == 2
    assert (await backend.list(PODS)).items == []
    assert (await backend.create(PODS + "a", b"")).mod_revision == 3


# --- lifecycle ---


async def test_closed_backend_rejects_calls(backend: backends.Backend) -> None:
    await backend.close()

    with pytest.raises(backends.BackendClosedError):
        await backend.create(PODS + "a", b"")
    with pytest.raises(backends.BackendClosedError):
        await backend.get(PODS + "a")
    with pytest.raises(backends.BackendClosedError):
        await anext(backend.watch(PODS, 0))
