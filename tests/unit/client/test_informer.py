"""An informer delivers every change once and in order, across watch restarts,
410s and re-lists, and keeps its cache equal to the server's state."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from nodeless import clocks
from nodeless.client import clients, informers
from tests.unit.client import fake_apiclient
from tests.unit.client.fake_apiclient import configmap, until

CONFIGMAPS = clients.resolve("v1", "ConfigMap")


class Events:
    """Handler calls as ``(verb, key, resourceVersion)`` tuples."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str]] = []

    def subscribe(self, informer: informers.Informer) -> None:
        informer.add_handlers(self.on_add, self.on_update, self.on_delete)

    def on_add(self, obj: clients.Object) -> None:
        self.seen.append(("add", clients.key_of(obj), clients.resource_version(obj)))

    def on_update(self, old: clients.Object, new: clients.Object) -> None:
        assert clients.key_of(old) == clients.key_of(new)
        self.seen.append(("update", clients.key_of(new), clients.resource_version(new)))

    def on_delete(self, obj: clients.Object) -> None:
        self.seen.append(("delete", clients.key_of(obj), clients.resource_version(obj)))


@pytest.fixture
def clock() -> clocks.FakeClock:
    return clocks.FakeClock()


@pytest.fixture
def api() -> fake_apiclient.FakeApiClient:
    return fake_apiclient.FakeApiClient()


@pytest.fixture
def events() -> Events:
    return Events()


@pytest.fixture
async def informer(
    api: fake_apiclient.FakeApiClient, clock: clocks.FakeClock, events: Events
) -> AsyncIterator[informers.Informer]:
    informer = informers.Informer(api, CONFIGMAPS, clock=clock)
    events.subscribe(informer)
    yield informer
    await informer.stop()


async def caught_up(informer: informers.Informer, api: fake_apiclient.FakeApiClient) -> None:
    await until(lambda: informer.resource_version == str(api.revision) and bool(api.streams))


async def test_lists_then_watches_from_the_list_revision(
    api: fake_apiclient.FakeApiClient, informer: informers.Informer, events: Events
) -> None:
    api.put(CONFIGMAPS, configmap("a"))
    api.put(CONFIGMAPS, configmap("b", namespace="other"))
    assert not informer.has_synced

    informer.start()
    await informer.wait_synced()
    await caught_up(informer, api)

    assert informer.has_synced
    assert sorted(informer.store) == ["default/a", "other/b"]
    assert sorted(events.seen) == [("add", "default/a", "1"), ("add", "other/b", "2")]
    assert api.watch_calls == ["2"]


async def test_watch_events_reach_handlers_in_order(
    api: fake_apiclient.FakeApiClient, informer: informers.Informer, events: Events
) -> None:
    informer.start()
    await caught_up(informer, api)

    api.put(CONFIGMAPS, configmap("a", v="1"))
    api.put(CONFIGMAPS, configmap("a", v="2"))
    api.remove(CONFIGMAPS, "default/a")
    await caught_up(informer, api)

    assert events.seen == [
        ("add", "default/a", "1"),
        ("update", "default/a", "2"),
        ("delete", "default/a", "3"),
    ]
    assert informer.store == {}


async def test_has_seen_says_whether_the_cache_reached_a_version(
    api: fake_apiclient.FakeApiClient, informer: informers.Informer
) -> None:
    assert not informer.has_seen("1")  # nothing listed yet
    api.put(CONFIGMAPS, configmap("a"))
    api.put(CONFIGMAPS, configmap("b"))
    informer.start()
    await caught_up(informer, api)

    assert informer.has_seen("1") and informer.has_seen("2")
    assert not informer.has_seen("3")
    assert not informer.has_seen("")  # an opaque version cannot be compared
    api.put(CONFIGMAPS, configmap("c"))
    await caught_up(informer, api)
    assert informer.has_seen("3")


async def test_subscribers_are_called_in_subscription_order(
    api: fake_apiclient.FakeApiClient, informer: informers.Informer
) -> None:
    calls: list[str] = []
    informer.add_handlers(on_add=lambda obj: calls.append("second"))
    informer.add_handlers(on_add=lambda obj: calls.append("third"))
    informer.start()
    await caught_up(informer, api)

    api.put(CONFIGMAPS, configmap("a"))
    await caught_up(informer, api)
    assert calls == ["second", "third"]


async def test_a_failing_handler_does_not_stop_the_others(
    api: fake_apiclient.FakeApiClient, informer: informers.Informer, events: Events
) -> None:
    def broken(obj: clients.Object) -> None:
        raise RuntimeError("handler bug")

    informer.add_handlers(on_add=broken)
    informer.add_handlers(on_add=events.on_add)
    informer.start()
    await caught_up(informer, api)

    api.put(CONFIGMAPS, configmap("a"))
    api.put(CONFIGMAPS, configmap("b"))
    await caught_up(informer, api)
    assert [e for e in events.seen if e[0] == "add"] == [
        ("add", "default/a", "1"),
        ("add", "default/a", "1"),
        ("add", "default/b", "2"),
        ("add", "default/b", "2"),
    ]


async def test_a_late_subscriber_gets_an_add_for_every_cached_object(
    api: fake_apiclient.FakeApiClient, informer: informers.Informer
) -> None:
    api.put(CONFIGMAPS, configmap("a"))
    informer.start()
    await caught_up(informer, api)

    late = Events()
    late.subscribe(informer)
    assert late.seen == [("add", "default/a", "1")]


async def test_bookmarks_move_the_resume_point(
    api: fake_apiclient.FakeApiClient, informer: informers.Informer, events: Events
) -> None:
    informer.start()
    await caught_up(informer, api)
    # Changes to another resource move the revision without events here.
    other = clients.resolve("v1", "Secret")
    api.put(other, {"metadata": {"name": "s", "namespace": "default"}})
    api.put(other, {"metadata": {"name": "t", "namespace": "default"}})

    api.bookmark()
    await until(lambda: informer.resource_version == "2")
    api.end_watches()
    await until(lambda: len(api.watch_calls) == 2)

    assert api.watch_calls == ["0", "2"]
    assert events.seen == []


async def test_a_clean_end_of_the_watch_resumes_without_listing_again(
    api: fake_apiclient.FakeApiClient, informer: informers.Informer, events: Events
) -> None:
    informer.start()
    await caught_up(informer, api)
    api.put(CONFIGMAPS, configmap("a"))
    await caught_up(informer, api)

    api.end_watches()
    await until(lambda: len(api.watch_calls) == 2)
    api.put(CONFIGMAPS, configmap("b"))
    await caught_up(informer, api)

    assert api.watch_calls == ["0", "1"]
    assert len(api.list_calls) == 1
    assert events.seen == [("add", "default/a", "1"), ("add", "default/b", "2")]


async def test_a_broken_watch_resumes_from_the_last_revision_after_backoff(
    api: fake_apiclient.FakeApiClient,
    informer: informers.Informer,
    events: Events,
    clock: clocks.FakeClock,
) -> None:
    informer.start()
    await caught_up(informer, api)
    api.put(CONFIGMAPS, configmap("a", v="1"))
    await caught_up(informer, api)

    api.break_watches()
    await until(lambda: clock.sleepers == 1)
    assert len(api.watch_calls) == 1, "no reconnect before the backoff passes"
    # Written while disconnected: must arrive exactly once after the resume.
    api.put(CONFIGMAPS, configmap("a", v="2"))
    api.put(CONFIGMAPS, configmap("b"))
    await clock.advance(informers.MAX_BACKOFF * 2)
    await caught_up(informer, api)

    assert api.watch_calls == ["0", "1"]
    assert len(api.list_calls) == 1
    assert events.seen == [
        ("add", "default/a", "1"),
        ("update", "default/a", "2"),
        ("add", "default/b", "3"),
    ]


async def test_gone_relists_and_reports_a_delete_that_happened_meanwhile(
    api: fake_apiclient.FakeApiClient,
    informer: informers.Informer,
    events: Events,
    clock: clocks.FakeClock,
) -> None:
    api.put(CONFIGMAPS, configmap("kept"))
    api.put(CONFIGMAPS, configmap("changed", v="1"))
    api.put(CONFIGMAPS, configmap("deleted", v="last-known"))
    informer.start()
    await caught_up(informer, api)
    events.seen.clear()

    api.break_watches()
    await until(lambda: clock.sleepers == 1)
    api.remove(CONFIGMAPS, "default/deleted")
    api.put(CONFIGMAPS, configmap("changed", v="2"))
    api.put(CONFIGMAPS, configmap("new"))
    api.compact()
    await clock.advance(informers.MAX_BACKOFF * 2)
    await caught_up(informer, api)

    assert api.watch_calls == ["3", "3", "6"], "resume, 410, then watch from the new list"
    assert len(api.list_calls) == 2
    assert sorted(events.seen) == [
        ("add", "default/new", "6"),
        ("delete", "default/deleted", "3"),
        ("update", "default/changed", "5"),
    ]
    assert sorted(informer.store) == ["default/changed", "default/kept", "default/new"]
    assert informer.store["default/changed"]["data"] == {"v": "2"}


async def test_repeated_gone_backs_off_instead_of_spinning(
    api: fake_apiclient.FakeApiClient, informer: informers.Informer, clock: clocks.FakeClock
) -> None:
    api.floor = 10**9  # every watch is too old

    informer.start()
    await until(lambda: clock.sleepers == 1)
    assert len(api.list_calls) == 2, "the first 410 re-lists at once, the second waits"
    # A minute of fake time allows only a handful of doubling backoffs.
    await clock.advance(60.0)
    assert 3 <= len(api.list_calls) <= 8


async def test_a_failed_list_is_retried_after_backoff(
    api: fake_apiclient.FakeApiClient, informer: informers.Informer, clock: clocks.FakeClock
) -> None:
    api.put(CONFIGMAPS, configmap("a"))
    api.list_failures.append(clients.Unreachable("apiserver restarting"))

    informer.start()
    await until(lambda: clock.sleepers == 1)
    assert not informer.has_synced
    await clock.advance(informers.MAX_BACKOFF * 2)
    await informer.wait_synced()

    assert list(informer.store) == ["default/a"]


async def test_a_list_is_read_page_by_page(
    api: fake_apiclient.FakeApiClient, clock: clocks.FakeClock, events: Events
) -> None:
    for i in range(5):
        api.put(CONFIGMAPS, configmap(f"cm{i}"))
    informer = informers.Informer(api, CONFIGMAPS, clock=clock, page_size=2)
    events.subscribe(informer)

    async with informer:
        await informer.wait_synced()

    assert api.list_calls == [("", ""), ("", "2"), ("", "4")]
    assert len(events.seen) == 5


async def test_a_namespaced_informer_sees_only_its_namespace(
    api: fake_apiclient.FakeApiClient, clock: clocks.FakeClock, events: Events
) -> None:
    api.put(CONFIGMAPS, configmap("a", namespace="mine"))
    api.put(CONFIGMAPS, configmap("b", namespace="theirs"))
    informer = informers.Informer(api, CONFIGMAPS, namespace="mine", clock=clock)
    events.subscribe(informer)

    async with informer:
        await informer.wait_synced()
        api.put(CONFIGMAPS, configmap("c", namespace="theirs"))
        api.put(CONFIGMAPS, configmap("d", namespace="mine"))
        await until(lambda: informer.resource_version == "4")

    assert [e[1] for e in events.seen] == ["mine/a", "mine/d"]
    assert informer.objects("mine") == [informer.store["mine/a"], informer.store["mine/d"]]
    assert informer.get("theirs/b") is None


async def test_stale_and_unknown_events_are_ignored(
    api: fake_apiclient.FakeApiClient, informer: informers.Informer, events: Events
) -> None:
    informer.start()
    await caught_up(informer, api)
    fresh = api.put(CONFIGMAPS, configmap("a", v="new"))
    await caught_up(informer, api)

    stale = configmap("a", v="old")
    stale["metadata"]["resourceVersion"] = "0"
    informer._apply(clients.WatchEvent("MODIFIED", stale))
    informer._apply(clients.WatchEvent("DELETED", stale))
    informer._apply(clients.WatchEvent("DELETED", configmap("never-seen")))

    assert informer.store["default/a"] == fresh
    assert events.seen == [("add", "default/a", "1")]


async def test_stop_ends_the_watch(
    api: fake_apiclient.FakeApiClient, informer: informers.Informer
) -> None:
    informer.start()
    await caught_up(informer, api)

    await informer.stop()
    assert api.streams == []
