"""Controller workers: sync each key, forget on success, back off on failure,
always release the key; handlers only enqueue."""

from __future__ import annotations

import asyncio
import logging

import pytest

from nodeless import clocks
from nodeless.client import clients, controllers, informers
from tests.unit.client import fake_apiclient

CONFIGMAPS = clients.resolve("v1", "ConfigMap")


@pytest.fixture
def clock() -> clocks.FakeClock:
    return clocks.FakeClock()


class Recorder:
    """A sync that records keys and fails a given number of times per key."""

    def __init__(self, failures: dict[str, int] | None = None) -> None:
        self.synced: list[str] = []
        self.failures = dict(failures or {})

    async def __call__(self, key: str) -> None:
        self.synced.append(key)
        if self.failures.get(key, 0) > 0:
            self.failures[key] -= 1
            raise RuntimeError(f"cannot sync {key} yet")


async def test_a_successful_sync_forgets_the_key_backoff(clock: clocks.FakeClock) -> None:
    sync = Recorder()
    controller = controllers.Controller("test", sync, clock=clock)
    controller.queue.add_rate_limited("a")
    await clock.advance(1.0)

    assert await controller.process_next()
    assert sync.synced == ["a"]
    assert controller.queue.num_requeues("a") == 0
    assert controller.queue.processing == frozenset()


async def test_a_failing_sync_is_retried_with_growing_backoff(
    clock: clocks.FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    sync = Recorder({"a": 2})
    controller = controllers.Controller("test", sync, clock=clock)
    controller.queue.add("a")

    with caplog.at_level(logging.WARNING):
        await controller.process_next()
    assert "sync a failed" in caplog.text
    for backoff in (0.005, 0.01):
        await clock.advance(backoff * 0.9)
        assert len(controller.queue) == 0, "not before the backoff has passed"
        await clock.advance(backoff * 0.2)
        await controller.process_next()

    assert sync.synced == ["a", "a", "a"]
    assert controller.queue.num_requeues("a") == 0, "success forgets the failures"
    assert clock.sleepers == 0


async def test_a_key_is_dropped_after_max_retries(clock: clocks.FakeClock) -> None:
    sync = Recorder({"a": 100})
    controller = controllers.Controller("test", sync, clock=clock, max_retries=2)
    controller.queue.add("a")

    for _ in range(3):
        await controller.process_next()
        await clock.advance(1.0)

    assert sync.synced == ["a", "a", "a"]
    assert len(controller.queue) == 0
    assert clock.sleepers == 0


async def test_a_key_changed_during_its_sync_is_synced_again(clock: clocks.FakeClock) -> None:
    controller: controllers.Controller

    async def sync(key: str) -> None:
        synced.append(key)
        if len(synced) == 1:
            controller.queue.add(key)

    synced: list[str] = []
    controller = controllers.Controller("test", sync, clock=clock)
    controller.queue.add("a")

    await controller.process_next()
    assert len(controller.queue) == 1
    await controller.process_next()
    assert synced == ["a", "a"]


async def test_workers_run_until_stopped(clock: clocks.FakeClock) -> None:
    seen: list[str] = []
    all_seen = asyncio.Event()

    async def sync(key: str) -> None:
        seen.append(key)
        if len(seen) == 3:
            all_seen.set()

    controller = controllers.Controller("test", sync, workers=2, clock=clock)
    task = controller.start()
    for key in ("a", "b", "c"):
        controller.queue.add(key)
    await all_seen.wait()
    await controller.stop()

    assert sorted(seen) == ["a", "b", "c"]
    assert task.done()
    assert controller.queue.shutting_down


async def test_a_subclass_can_override_sync(clock: clocks.FakeClock) -> None:
    class Upper(controllers.Controller):
        def __init__(self) -> None:
            super().__init__("upper", clock=clock)
            self.seen: list[str] = []

        async def sync(self, key: str) -> None:
            self.seen.append(key.upper())

    controller = Upper()
    controller.queue.add("a")
    await controller.process_next()
    assert controller.seen == ["A"]


async def test_informer_changes_enqueue_keys_the_controller_chooses(
    clock: clocks.FakeClock,
) -> None:
    api = fake_apiclient.FakeApiClient()
    api.put(CONFIGMAPS, fake_apiclient.configmap("child", owner="parent-1"))
    informer = informers.Informer(api, CONFIGMAPS, clock=clock)
    controller = controllers.Controller("owners", Recorder(), clock=clock)

    def owner_key(obj: clients.Object) -> str | None:
        owner = (obj.get("data") or {}).get("owner")
        return f"default/{owner}" if owner else None

    controller.enqueue_changes(informer, owner_key)
    async with informer:
        await informer.wait_synced()
        api.put(CONFIGMAPS, fake_apiclient.configmap("child", owner="parent-2"))
        api.put(CONFIGMAPS, fake_apiclient.configmap("orphan"))
        await fake_apiclient.until(lambda: informer.resource_version == str(api.revision))

    keys = []
    while len(controller.queue):
        keys.append(await controller.queue.get())
    assert keys == ["default/parent-1", "default/parent-2"]


async def test_run_waits_for_informer_caches_before_syncing(clock: clocks.FakeClock) -> None:
    api = fake_apiclient.FakeApiClient()
    api.list_failures.append(clients.Unreachable("not yet"))
    informer = informers.Informer(api, CONFIGMAPS, clock=clock)
    sync = Recorder()
    controller = controllers.Controller("test", sync, clock=clock)
    controller.queue.add("a")

    async with informer:
        controller.start([informer])
        for _ in range(20):
            await asyncio.sleep(0)
        assert sync.synced == [], "no sync before the cache is filled"
        await clock.advance(60.0)
        await informer.wait_synced()
        await fake_apiclient.until(lambda: bool(sync.synced))
        await controller.stop()

    assert sync.synced == ["a"]
