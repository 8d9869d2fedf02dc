"""The work queue keeps client-go's promises: one entry per key, one worker per
key, delays on the injected clock, per-key exponential backoff."""

from __future__ import annotations

import asyncio

import pytest

from nodeless import clocks
from nodeless.client import workqueues


def queue_on(clock: clocks.FakeClock) -> workqueues.WorkQueue[str]:
    return workqueues.WorkQueue(clock=clock)


@pytest.fixture
def clock() -> clocks.FakeClock:
    return clocks.FakeClock()


async def test_a_key_added_while_queued_is_queued_once(clock: clocks.FakeClock) -> None:
    queue = queue_on(clock)
    queue.add("default/a")
    queue.add("default/b")
    queue.add("default/a")

    assert len(queue) == 2
    assert await queue.get() == "default/a"
    assert await queue.get() == "default/b"


async def test_a_key_added_while_processing_is_requeued_only_after_done(
    clock: clocks.FakeClock,
) -> None:
    queue = queue_on(clock)
    queue.add("a")
    key = await queue.get()
    queue.add("a")
    queue.add("a")

    assert len(queue) == 0, "a key being processed must not be handed to a second worker"
    queue.done(key)
    assert len(queue) == 1
    assert await queue.get() == "a"
    queue.done("a")
    assert len(queue) == 0


async def test_done_without_a_new_add_does_not_requeue(clock: clocks.FakeClock) -> None:
    queue = queue_on(clock)
    queue.add("a")
    queue.done(await queue.get())

    assert len(queue) == 0
    assert queue.processing == frozenset()


async def test_get_waits_for_an_add(clock: clocks.FakeClock) -> None:
    queue = queue_on(clock)
    getter = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    assert not getter.done()

    queue.add("a")
    assert await getter == "a"


async def test_a_cancelled_getter_does_not_swallow_an_item(clock: clocks.FakeClock) -> None:
    queue = queue_on(clock)
    first = asyncio.create_task(queue.get())
    second = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    queue.add("a")
    first.cancel()

    assert await second == "a"


async def test_add_after_waits_for_the_clock(clock: clocks.FakeClock) -> None:
    queue = queue_on(clock)
    queue.add_after("a", 10.0)

    await clock.advance(9)
    assert len(queue) == 0
    assert queue.waiting == 1
    await clock.advance(1)
    assert len(queue) == 1
    assert queue.waiting == 0


async def test_add_after_keeps_the_earliest_time_for_a_key(clock: clocks.FakeClock) -> None:
    queue = queue_on(clock)
    queue.add_after("a", 10.0)
    queue.add_after("a", 3.0)
    queue.add_after("a", 20.0)

    await clock.advance(3.0)
    assert len(queue) == 1
    assert await queue.get() == "a"
    queue.done("a")
    await clock.advance(100.0)
    assert len(queue) == 0, "the superseded timers must not fire again"


async def test_add_after_with_no_delay_adds_now(clock: clocks.FakeClock) -> None:
    queue = queue_on(clock)
    queue.add_after("a", 0)

    assert len(queue) == 1


async def test_rate_limited_requeues_back_off_exponentially_from_5ms_to_1000s(
    clock: clocks.FakeClock,
) -> None:
    limiter: workqueues.ItemExponentialRateLimiter[str] = workqueues.ItemExponentialRateLimiter()

    delays = [limiter.when("a") for _ in range(20)]

    assert delays[:5] == [0.005, 0.01, 0.02, 0.04, 0.08]
    assert delays[17] == pytest.approx(655.36)
    assert delays[18:] == [1000.0, 1000.0]
    assert limiter.num_requeues("a") == 20
    assert limiter.when("b") == 0.005, "backoff is per key"


async def test_add_rate_limited_schedules_by_the_key_backoff(clock: clocks.FakeClock) -> None:
    queue = queue_on(clock)

    for expected_delay in (0.005, 0.01, 0.02):
        queue.add_rate_limited("a")
        await clock.advance(expected_delay * 0.9)
        assert len(queue) == 0
        await clock.advance(expected_delay * 0.2)
        assert len(queue) == 1
        queue.done(await queue.get())
    assert queue.num_requeues("a") == 3


async def test_forget_resets_the_backoff(clock: clocks.FakeClock) -> None:
    queue = queue_on(clock)
    for _ in range(5):
        queue.add_rate_limited("a")
    queue.forget("a")

    assert queue.num_requeues("a") == 0
    await clock.advance(1.0)
    queue.done(await queue.get())
    queue.add_rate_limited("a")
    await clock.advance(0.004)
    assert len(queue) == 0
    await clock.advance(0.002)
    assert len(queue) == 1


async def test_the_overall_bucket_limits_a_burst_of_failures(clock: clocks.FakeClock) -> None:
    limiter: workqueues.BucketRateLimiter[str] = workqueues.BucketRateLimiter(
        qps=10, burst=100, clock=clock
    )

    burst = [limiter.when(f"k{i}") for i in range(100)]
    assert burst == [0.0] * 100
    assert limiter.when("k100") == pytest.approx(0.1)
    assert limiter.when("k101") == pytest.approx(0.2)
    await clock.advance(10.0)
    assert limiter.when("k102") == 0.0


async def test_the_default_limiter_takes_the_longer_of_backoff_and_bucket(
    clock: clocks.FakeClock,
) -> None:
    limiter: workqueues.MaxOfRateLimiter[str] = workqueues.default_controller_rate_limiter(clock)
    for i in range(100):
        limiter.when(f"spent{i}")

    assert limiter.when("a") == pytest.approx(0.1), "the bucket is empty: 1/qps wins"
    await clock.advance(100.0)
    for _ in range(10):
        limiter.when("a")
    assert limiter.when("a") == pytest.approx(0.005 * 2**11), "backoff wins"


async def test_shutdown_hands_out_what_is_left_then_stops_getters(
    clock: clocks.FakeClock,
) -> None:
    queue = queue_on(clock)
    queue.add("a")
    queue.add_after("later", 5.0)
    queue.shutdown()
    queue.add("b")

    assert await queue.get() == "a"
    with pytest.raises(workqueues.ShutDown):
        await queue.get()
    await clock.advance(10.0)
    assert len(queue) == 0, "delayed adds are dropped at shutdown"


async def test_shutdown_wakes_a_waiting_getter(clock: clocks.FakeClock) -> None:
    queue = queue_on(clock)
    getter = asyncio.create_task(queue.get())
    await asyncio.sleep(0)

    queue.shutdown()
    with pytest.raises(workqueues.ShutDown):
        await getter
