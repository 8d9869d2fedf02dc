"""The cycle collector of nodeless up: collections on timers, an allocation count only as a backstop."""

from __future__ import annotations

import asyncio
import gc
import weakref

from nodeless.cli import memory


async def test_full_collections_run_on_the_timer_and_settings_come_back() -> None:
    before = gc.get_threshold()
    collector = memory.CycleCollector(full_every=0.01)
    collector.start()
    try:
        threshold = gc.get_threshold()
        assert threshold[0] == memory.YOUNG_THRESHOLD
        assert threshold[2] > 1_000_000  # no automatic full collection
        full_before = gc.get_stats()[2]["collections"]
        await asyncio.sleep(0.1)
        assert gc.get_stats()[2]["collections"] > full_before
    finally:
        await collector.stop()
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


class Cycle:
    def __init__(self) -> None:
        self.me = self


async def test_new_objects_are_frozen_on_their_timer_and_cycles_freed_by_the_full_one() -> None:
    collector = memory.CycleCollector(full_every=0.2, young_every=0.01)
    collector.start()
    try:
        assert gc.get_threshold()[0] > 100_000  # not CPython's 700 allocations
        middle_before = gc.get_stats()[1]["collections"]
        frozen_before = gc.get_freeze_count()
        garbage = weakref.ref(Cycle())  # unreachable, but alive through its cycle
        await asyncio.sleep(0.05)
        assert gc.get_freeze_count() > frozen_before  # frozen, not walked
        assert gc.get_stats()[1]["collections"] == middle_before
        assert garbage() is not None
        await asyncio.sleep(0.3)
        assert garbage() is None  # the full collection walked the frozen objects
    finally:
        await collector.stop()
