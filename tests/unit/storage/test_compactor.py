"""The periodic compactor, driven by a fake sleep so no test waits for real."""

from __future__ import annotations

import asyncio

import pytest

from nodeless.storage import compacting, memory

PODS = "/registry/pods/"


class Ticks:
    """A fake ``sleep``: each call blocks until the test lets one interval pass."""

    def __init__(self) -> None:
        self.requested: list[float] = []
        self._waiting = asyncio.Queue[asyncio.Future[None]]()

    async def sleep(self, seconds: float) -> None:
        self.requested.append(seconds)
        wake = asyncio.get_running_loop().create_future()
        await self._waiting.put(wake)
        await wake

    async def release(self) -> None:
        """Let the pending sleep return."""
        (await self._next_sleep()).set_result(None)

    async def tick(self) -> None:
        """Let one sleep return and wait until the compactor is asleep again."""
        await self.release()
        self._waiting.put_nowait(await self._next_sleep())

    async def _next_sleep(self) -> asyncio.Future[None]:
        async with asyncio.timeout(5):
            return await self._waiting.get()


async def writes(backend: memory.MemoryBackend, count: int) -> None:
    for i in range(count):
        await backend.create(f"{PODS}{await backend.current_revision()}-{i}", b"")


@pytest.fixture
async def backend() -> memory.MemoryBackend:
    started = memory.MemoryBackend()
    await started.start()
    return started


async def test_compactor_keeps_the_newest_revisions_each_interval(
    backend: memory.MemoryBackend,
) -> None:
    ticks = Ticks()
    compactor = compacting.Compactor(backend, interval=60, keep_revisions=10, sleep=ticks.sleep)
    compactor.start()
    try:
        await writes(backend, 25)
        await ticks.tick()
        assert await backend.compacted_revision() == 15

        await writes(backend, 3)
        await ticks.tick()
        assert await backend.compacted_revision() == 18
    finally:
        await compactor.stop()
        await backend.close()
    assert set(ticks.requested) == {60}


async def test_compactor_does_nothing_while_history_is_short(
    backend: memory.MemoryBackend,
) -> None:
    await writes(backend, 5)
    compactor = compacting.Compactor(backend, keep_revisions=10)

    assert await compactor.compact_once() is None
    assert await backend.compacted_revision() == 0


async def test_compactor_survives_a_failed_round(backend: memory.MemoryBackend) -> None:
    ticks = Ticks()
    compactor = compacting.Compactor(backend, keep_revisions=2, sleep=ticks.sleep)
    await writes(backend, 5)
    real_compact = backend.compact
    calls = 0

    async def flaky_compact(revision: int) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError("disk hiccup")
        await real_compact(revision)

    backend.compact = flaky_compact  # type: ignore[method-assign]
    compactor.start()
    try:
        await ticks.tick()
        assert await backend.compacted_revision() == 0
        await ticks.tick()
        assert await backend.compacted_revision() == 3
    finally:
        await compactor.stop()
        await backend.close()


async def test_compactor_stops_when_backend_closes(backend: memory.MemoryBackend) -> None:
    ticks = Ticks()
    compactor = compacting.Compactor(backend, sleep=ticks.sleep)
    running = asyncio.ensure_future(compactor.run())
    await ticks.tick()
    await backend.close()

    await ticks.release()

    async with asyncio.timeout(5):
        await running


def test_compactor_rejects_nonsense_settings() -> None:
    backend = memory.MemoryBackend()
    with pytest.raises(ValueError):
        compacting.Compactor(backend, interval=0)
    with pytest.raises(ValueError):
        compacting.Compactor(backend, keep_revisions=-1)
