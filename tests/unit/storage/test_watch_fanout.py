"""The watch fan-out of ``LogStructuredBackend``: bounded buffers, paging, clean shutdown."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Callable

import pytest

from nodeless.storage import backends, logstructured

PODS = "/registry/pods/"

BackendFactory = Callable[..., logstructured.LogStructuredBackend]


async def take(watch: AsyncIterator[backends.EventBatch], count: int) -> list[backends.Event]:
    events: list[backends.Event] = []
    async with asyncio.timeout(5):
        while len(events) < count:
            events.extend(await anext(watch))
    return events


async def started(
    make_backend: BackendFactory, **options: int
) -> logstructured.LogStructuredBackend:
    backend = make_backend(**options)
    await backend.start()
    return backend


async def test_slow_watcher_overflowing_its_buffer_catches_up_from_the_log(
    make_backend: BackendFactory,
) -> None:
    backend = await started(make_backend, watch_buffer=5)
    watch = backend.watch(PODS, 0)
    await backend.create(PODS + "first", b"")
    await take(watch, 1)

    for i in range(50):
        await backend.create(f"{PODS}{i:02d}", b"")
    events = await take(watch, 50)
    await backend.create(PODS + "after", b"")
    events += await take(watch, 1)

    assert [e.revision for e in events] == list(range(2, 53))


async def test_slow_watcher_behind_compacted_history_is_gone(
    make_backend: BackendFactory,
) -> None:
    backend = await started(make_backend, watch_buffer=5)
    watch = backend.watch(PODS, 0)
    await backend.create(PODS + "first", b"")
    await take(watch, 1)

    for i in range(20):
        await backend.create(f"{PODS}{i:02d}", b"")
    await backend.compact(10)

    with pytest.raises(backends.CompactedError):
        await take(watch, 20)
    assert backend.watcher_count == 0


async def test_replay_longer_than_a_page_is_delivered_in_order(
    make_backend: BackendFactory,
) -> None:
    backend = await started(make_backend, replay_page=3)
    for i in range(20):
        await backend.create(f"{PODS}{i:02d}", b"")
        await backend.create(f"/registry/other/{i:02d}", b"")

    watch = backend.watch(PODS, 0)
    batches = [await anext(watch) for _ in range(7)]

    assert [len(batch) for batch in batches] == [3, 3, 3, 3, 3, 3, 2]
    assert [e.kv.key for batch in batches for e in batch] == [f"{PODS}{i:02d}" for i in range(20)]


async def test_live_events_arrive_in_batches_of_what_piled_up(
    make_backend: BackendFactory,
) -> None:
    backend = await started(make_backend)
    watch = backend.watch(PODS, 0)
    await backend.create(PODS + "a", b"")
    assert len(await anext(watch)) == 1

    for i in range(5):
        await backend.create(f"{PODS}{i}", b"")

    assert [e.revision for e in await anext(watch)] == [2, 3, 4, 5, 6]


async def test_watch_closed_early_unregisters_its_watcher(make_backend: BackendFactory) -> None:
    backend = await started(make_backend)
    await backend.create(PODS + "a", b"")
    watch = backend.watch(PODS, 0)
    await take(watch, 1)
    assert backend.watcher_count == 1

    await watch.aclose()  # type: ignore[attr-defined]

    assert backend.watcher_count == 0


async def test_abandoned_watch_holds_at_most_its_buffer(make_backend: BackendFactory) -> None:
    backend = await started(make_backend, watch_buffer=10)
    watch = backend.watch(PODS, 0)
    await backend.create(PODS + "a", b"")
    await take(watch, 1)

    for i in range(100):
        await backend.create(f"{PODS}{i:02d}", b"")

    (watcher,) = backend._watchers
    assert len(watcher.buffer) <= 10
    del watch
    gc.collect()
    await asyncio.sleep(0.01)
    assert backend.watcher_count == 0


async def test_many_watchers_each_get_every_event(make_backend: BackendFactory) -> None:
    backend = await started(make_backend)
    watches = [backend.watch(PODS, 0) for _ in range(10)]

    for i in range(30):
        await backend.create(f"{PODS}{i:02d}", b"")

    for watch in watches:
        assert [e.revision for e in await take(watch, 30)] == list(range(1, 31))


async def test_close_finishes_queued_writes_first(make_backend: BackendFactory) -> None:
    backend = await started(make_backend)
    writes = [asyncio.ensure_future(backend.create(f"{PODS}{i}", b"")) for i in range(10)]
    await asyncio.sleep(0)

    await backend.close()

    assert [w.result().mod_revision for w in writes] == list(range(1, 11))


async def test_writes_to_a_closed_backend_are_refused(make_backend: BackendFactory) -> None:
    backend = make_backend()

    with pytest.raises(backends.BackendClosedError):
        await backend.create(PODS + "a", b"")
    await backend.start()
    await backend.close()
    with pytest.raises(backends.BackendClosedError):
        await backend.create(PODS + "a", b"")


def test_write_preconditions_are_decided_by_apply_write() -> None:
    current = backends.KeyValue("k", b"v", 1, 4)
    update = logstructured.Write(backends.EventType.UPDATE, "k", b"w", expected_revision=4)

    event = logstructured.apply_write(update, current, 5)

    assert event == backends.Event(
        backends.EventType.UPDATE, backends.KeyValue("k", b"w", 1, 5), current
    )
    with pytest.raises(backends.RevisionMismatchError):
        logstructured.apply_write(
            logstructured.Write(backends.EventType.DELETE, "k", expected_revision=3), current, 5
        )


@pytest.mark.parametrize(
    ("prefix", "end"),
    [("/registry/pods/", "/registry/pods0"), ("a", "b"), ("", None), ("a\U0010ffff", "b")],
)
def test_prefix_end_bounds_every_key_with_the_prefix(prefix: str, end: str | None) -> None:
    assert logstructured.prefix_end(prefix) == end
