"""The teardown slots of the CRI provider: a few pods torn down at a time,
a pod only waiting out its grace period holding none."""

from __future__ import annotations

import asyncio

import pytest

from nodeless.instances.providers.cri import provider


async def test_a_slot_is_left_while_its_work_is_slow_and_taken_again_after(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(provider, "STOP_SLOT_SECONDS", 0.01)
    slots = asyncio.Semaphore(1)
    slow = provider._Slot(slots)
    await slow.take()
    stopped = asyncio.Event()

    async def grace_period() -> str:
        await stopped.wait()
        return "stopped"

    work = asyncio.create_task(slow.give_up_while_slow(grace_period()))
    other = provider._Slot(slots)
    await asyncio.wait_for(other.take(), timeout=10)  # left by the slow one
    stopped.set()
    await asyncio.sleep(0.05)
    assert not work.done()  # its work is over, but the slot is taken

    other.leave()
    assert await work == "stopped"
    assert slots.locked()  # held again, for the rest of the teardown
    slow.leave()
    slow.leave()  # leaving twice gives back one slot
    assert not slots.locked()
    assert slots._value == 1


async def test_quick_work_keeps_its_slot_throughout() -> None:
    slots = asyncio.Semaphore(1)
    slot = provider._Slot(slots)
    await slot.take()

    async def quick() -> int:
        return 143

    assert await slot.give_up_while_slow(quick()) == 143
    other = asyncio.create_task(provider._Slot(slots).take())
    await asyncio.sleep(0.05)
    assert not other.done()
    slot.leave()
    await asyncio.wait_for(other, timeout=10)
