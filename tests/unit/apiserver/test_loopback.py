"""LoopbackApiClient is the HTTP client without the sockets: the same scenario
run through ``HttpApiClient`` and ``LoopbackApiClient`` (each against its own
fresh server on the same fake clock) gives the same objects and the same
errors; watches, informers and object ownership work in process."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import re
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import pytest

from nodeless.api import errors
from nodeless.apiserver import app, loopback, metrics, storing
from nodeless.client import clients, httpclients, informers
from nodeless.storage import memory

CONFIGMAPS = clients.resolve("v1", "ConfigMap")
DEPLOYMENTS = clients.resolve("apps/v1", "deployments")
PODS = clients.resolve("v1", "Pod")
NAMESPACES = clients.resolve("v1", "ns")
BUDGETS = clients.resolve("policy/v1", "PodDisruptionBudget")
WAIT = 10.0  # a safety net for real I/O, not a timing assertion
NS = "default"


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime.datetime(2026, 11, 26, 12, 0, 0, tzinfo=datetime.UTC)

    def __call__(self) -> datetime.datetime:
        return self.now


@contextlib.asynccontextmanager
async def running_server() -> AsyncIterator[app.ApiServer]:
    server = app.ApiServer(memory.MemoryBackend(), port=0, tls=False, clock=FakeClock())
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def server() -> AsyncIterator[app.ApiServer]:
    async with running_server() as server:
        yield server


@pytest.fixture
async def api(server: app.ApiServer) -> AsyncIterator[loopback.LoopbackApiClient]:
    async with loopback.LoopbackApiClient(server.api) as client:
        yield client


def configmap(name: str, labels: dict[str, str] | None = None, **data: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": NS}
    if labels:
        meta["labels"] = labels
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": dict(data)}


def deployment(name: str, replicas: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "main", "image": "busybox:1"}]},
            },
        },
    }


def pod(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "labels": labels or {}},
        "spec": {"containers": [{"name": "main", "image": "busybox:1"}]},
    }


UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def normalized(value: Any) -> Any:
    """uids are random; everything else a deterministic scenario produces is equal."""
    if isinstance(value, dict):
        return {k: normalized(v) for k, v in value.items()}
    if isinstance(value, list):
        return [normalized(v) for v in value]
    if isinstance(value, str):
        return UUID.sub("<uid>", value)
    return value


def outcome(err: BaseException) -> tuple[Any, ...]:
    assert isinstance(err, errors.StatusError), f"not a StatusError: {err!r}"
    return (
        "error",
        type(err).__name__,
        err.code,
        err.reason,
        normalized(err.message),
        err.name,
        err.group,
        err.kind,
        [(c.reason, c.message, c.field) for c in err.causes],
        err.retry_after_seconds,
    )


class Recorder:
    """Runs the steps of a scenario and records what each returned or raised."""

    def __init__(self) -> None:
        self.results: list[tuple[str, Any]] = []

    async def step(self, label: str, call: Awaitable[Any]) -> Any:
        try:
            result = await call
        except errors.StatusError as err:
            self.results.append((label, outcome(err)))
            return err
        if isinstance(result, clients.ListResult):
            recorded: Any = (
                [normalized(o) for o in result.items],
                result.resource_version,
                result.continue_token,
                result.remaining_item_count,
            )
        else:
            recorded = normalized(result)
        self.results.append((label, recorded))
        return result


async def scenario(api: clients.ApiClient, server: app.ApiServer) -> list[tuple[str, Any]]:
    r = Recorder()
    # create, get, list with selectors and paging
    for i, tier in enumerate(["web", "web", "db"]):
        await r.step(f"create cm{i}", api.create(CONFIGMAPS, configmap(f"cm{i}", {"tier": tier})))
    await r.step("get", api.get(CONFIGMAPS, NS, "cm0"))
    await r.step("list labels", api.list(CONFIGMAPS, NS, label_selector="tier=web"))
    await r.step("list fields", api.list(CONFIGMAPS, "", field_selector="metadata.name=cm2"))
    await r.step("list bad selector", api.list(CONFIGMAPS, NS, label_selector="a in (("))
    first = await r.step("page 1", api.list(CONFIGMAPS, NS, limit=2))
    await r.step("page 2", api.list(CONFIGMAPS, NS, limit=2, continue_token=first.continue_token))
    await r.step("list all namespaces", api.list(NAMESPACES))
    # errors: 404, 409 AlreadyExists, 422 Invalid, 409 Conflict, 400
    await r.step("get missing", api.get(CONFIGMAPS, NS, "nope"))
    await r.step("create again", api.create(CONFIGMAPS, configmap("cm0")))
    await r.step("create invalid", api.create(CONFIGMAPS, configmap("Bad_Name")))
    stale = configmap("cm1", k="x")
    stale["metadata"]["resourceVersion"] = "1"
    await r.step("update stale", api.update(CONFIGMAPS, stale))
    await r.step("update no status", api.update_status(CONFIGMAPS, configmap("cm1")))
    await r.step("unknown resource", api.get(clients.ResourceRef("x.io", "v1", "things"), NS, "a"))
    # field validation: Warn (the default) prunes, Strict refuses
    unknown = configmap("cm3", extra="1")
    unknown["bogus"] = True
    await r.step("create unknown warn", api.create(CONFIGMAPS, unknown))
    strict = clients.WriteOptions(field_validation="Strict")
    unknown["metadata"]["name"] = "cm4"
    await r.step("create unknown strict", api.create(CONFIGMAPS, unknown, strict))
    await r.step(
        "dry run", api.create(CONFIGMAPS, configmap("dry"), clients.WriteOptions(dry_run=True))
    )
    # every patch type, apply ownership and conflicts
    await r.step("create deploy", api.create(DEPLOYMENTS, deployment("web")))
    await r.step("merge", api.patch(DEPLOYMENTS, NS, "web", {"metadata": {"labels": {"a": "1"}}}))
    sidecar = {"spec": {"template": {"spec": {"containers": [{"name": "s", "image": "b:2"}]}}}}
    await r.step("strategic", api.patch(DEPLOYMENTS, NS, "web", sidecar, patch_type="strategic"))
    replicas = [{"op": "replace", "path": "/spec/replicas", "value": 2}]
    await r.step("json", api.patch(DEPLOYMENTS, NS, "web", replicas, patch_type="json"))
    bad_json = [{"op": "test", "path": "/spec/replicas", "value": 9}]
    await r.step("json test fails", api.patch(DEPLOYMENTS, NS, "web", bad_json, patch_type="json"))
    config: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": NS},
        "spec": {"replicas": 3},
    }
    as_tester = clients.WriteOptions(field_manager="tester")
    as_other = clients.WriteOptions(field_manager="other")
    await r.step(
        "apply", api.patch(DEPLOYMENTS, NS, "web", config, patch_type="apply", options=as_tester)
    )
    config["spec"]["replicas"] = 4
    await r.step(
        "apply conflict",
        api.patch(DEPLOYMENTS, NS, "web", config, patch_type="apply", options=as_other),
    )
    await r.step(
        "apply force",
        api.patch(DEPLOYMENTS, NS, "web", config, patch_type="apply", force=True, options=as_other),
    )
    await r.step("apply no manager", api.patch(DEPLOYMENTS, NS, "web", config, patch_type="apply"))
    await r.step("merge force", api.patch(DEPLOYMENTS, NS, "web", {}, force=True))
    # status and scale subresources
    current = await api.get(DEPLOYMENTS, NS, "web")
    current["status"] = {"replicas": 4, "readyReplicas": 4}
    current["spec"]["replicas"] = 9
    await r.step("update status", api.update_status(DEPLOYMENTS, current))
    scale = await r.step("get scale", api.get_subresource(DEPLOYMENTS, NS, "web", "scale"))
    scale["spec"]["replicas"] = 5
    await r.step("put scale", api.update_subresource(DEPLOYMENTS, NS, "web", "scale", scale))
    await r.step(
        "patch scale",
        api.patch(DEPLOYMENTS, NS, "web", {"spec": {"replicas": 6}}, subresource="scale"),
    )
    await r.step(
        "negative scale",
        api.patch(DEPLOYMENTS, NS, "web", {"spec": {"replicas": -1}}, subresource="scale"),
    )
    await r.step("post scale", api.create_subresource(DEPLOYMENTS, NS, "web", "scale", scale))
    await r.step("no such subresource", api.get_subresource(DEPLOYMENTS, NS, "web", "nope"))
    await r.step("log", api.get_subresource(PODS, NS, "nope", "log"))
    # delete: a Status, finalizers that hold the object, preconditions
    await r.step("delete", api.delete(CONFIGMAPS, NS, "cm2"))
    held = configmap("held")
    held["metadata"]["finalizers"] = ["example.com/hold"]
    await r.step("create held", api.create(CONFIGMAPS, held))
    await r.step("delete held", api.delete(CONFIGMAPS, NS, "held"))
    await r.step("still there", api.get(CONFIGMAPS, NS, "held"))
    await r.step("release", api.patch(CONFIGMAPS, NS, "held", {"metadata": {"finalizers": None}}))
    await r.step("gone now", api.get(CONFIGMAPS, NS, "held"))
    wrong = clients.DeleteOptions(preconditions=clients.Preconditions(uid="not-the-uid"))
    await r.step("delete precondition", api.delete(CONFIGMAPS, NS, "cm1", wrong))
    # bind, once
    await r.step("create pod", api.create(PODS, pod("p")))
    await r.step("bind", api.bind(NS, "p", "virtual-zone-a", annotations={"x.io/spec": "small"}))
    await r.step("bound", api.get(PODS, NS, "p"))
    await r.step("bind again", api.bind(NS, "p", "virtual-zone-b"))
    # eviction against a budget that allows no disruption: 429
    await r.step("create guarded pod", api.create(PODS, pod("guarded", {"app": "db"})))
    running = await api.get(PODS, NS, "guarded")
    running["status"] = {
        "phase": "Running",
        "conditions": [{"type": "Ready", "status": "True"}],
    }
    await r.step("pod running", api.update_status(PODS, running))
    budget = {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": "db", "namespace": NS},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "db"}}},
    }
    created_budget = await r.step("create budget", api.create(BUDGETS, budget))
    created_budget["status"] = {
        "observedGeneration": created_budget["metadata"]["generation"],
        "disruptionsAllowed": 0,
        "currentHealthy": 1,
        "desiredHealthy": 1,
        "expectedPods": 1,
    }
    await r.step("budget status", api.update_status(BUDGETS, created_budget))
    eviction = {
        "apiVersion": "policy/v1",
        "kind": "Eviction",
        "metadata": {"name": "guarded", "namespace": NS},
    }
    await r.step("evict", api.create_subresource(PODS, NS, "guarded", "eviction", eviction))
    await r.step("evict unguarded", api.create_subresource(PODS, NS, "p", "eviction", eviction))
    await r.step("evicted", api.get(PODS, NS, "p"))
    return r.results


async def test_the_loopback_client_answers_exactly_as_the_http_client() -> None:
    async with running_server() as over_http, running_server() as in_process:
        async with httpclients.HttpApiClient(over_http.url) as http:
            expected = await scenario(http, over_http)
        async with loopback.LoopbackApiClient(in_process.api) as client:
            actual = await scenario(client, in_process)

    assert [label for label, _ in actual] == [label for label, _ in expected]
    for (label, want), (_, got) in zip(expected, actual, strict=True):
        assert got == want, label
    # The scenario exercised what it claims to.
    results = dict(expected)
    assert results["apply conflict"][2:4] == (409, "Conflict")
    assert results["get missing"][2:4] == (404, "NotFound")
    assert results["create again"][2:4] == (409, "AlreadyExists")
    assert results["create invalid"][2:4] == (422, "Invalid")
    assert results["update stale"][2:4] == (409, "Conflict")
    assert results["create unknown strict"][2:4] == (400, "BadRequest")
    assert "bogus" not in results["create unknown warn"]
    assert results["evict"][2:4] == (429, "TooManyRequests")
    assert results["evict unguarded"]["status"] == "Success"
    assert results["evicted"]["metadata"]["deletionTimestamp"], "a bound pod terminates gracefully"
    assert results["bind again"][2:4] == (409, "Conflict")
    assert results["still there"]["metadata"]["deletionTimestamp"]
    assert results["gone now"][2:4] == (404, "NotFound")
    assert results["patch scale"]["spec"]["replicas"] == 6
    assert [o["metadata"]["name"] for o in results["list labels"][0]] == ["cm0", "cm1"]
    assert results["page 1"][2] and results["page 1"][3] == 1
    assert {m["manager"] for m in results["apply force"]["metadata"]["managedFields"]} >= {
        "other",
        "nodeless-client",
    }


async def watch_scenario(api: clients.ApiClient, server: app.ApiServer) -> list[tuple[str, Any]]:
    r = Recorder()
    start = (await api.list(CONFIGMAPS, NS)).resource_version
    events = api.watch(CONFIGMAPS, NS, resource_version=start, allow_bookmarks=False)
    await api.create(CONFIGMAPS, configmap("a", {"tier": "web"}))
    await api.patch(CONFIGMAPS, NS, "a", {"data": {"k": "v"}})
    await api.create(CONFIGMAPS, configmap("b"))
    await api.delete(CONFIGMAPS, NS, "a")
    seen: list[clients.WatchEvent] = []
    async with asyncio.timeout(WAIT):
        async for event in events:
            seen.append(event)
            if event.type == "DELETED":
                break
    await events.aclose()
    r.results.append(("from rv", [(e.type, normalized(e.object)) for e in seen]))
    # From now: the current objects as ADDED, then changes.
    current = api.watch(CONFIGMAPS, NS, allow_bookmarks=False)
    async with asyncio.timeout(WAIT):
        added = await anext(current)
        await api.patch(CONFIGMAPS, NS, "b", {"data": {"k": "2"}})
        changed = await anext(current)
    await current.aclose()
    r.results.append(("from now", [(e.type, normalized(e.object)) for e in (added, changed)]))
    # A selector turns a relabel into DELETED for the watch that no longer matches.
    selected = api.watch(CONFIGMAPS, NS, label_selector="tier=db", allow_bookmarks=False)
    async with asyncio.timeout(WAIT):
        await api.patch(CONFIGMAPS, NS, "b", {"metadata": {"labels": {"tier": "db"}}})
        joined = await anext(selected)
        await api.patch(CONFIGMAPS, NS, "b", {"metadata": {"labels": {"tier": "web"}}})
        left = await anext(selected)
    await selected.aclose()
    r.results.append(("selected", [(e.type, normalized(e.object)) for e in (joined, left)]))
    await r.step("expired", anext(api.watch(CONFIGMAPS, NS, resource_version="1")))
    await r.step("bad rv", anext(api.watch(CONFIGMAPS, NS, resource_version="x")))
    await r.step("missing kind", anext(api.watch(clients.ResourceRef("x.io", "v1", "things"))))
    return r.results


async def test_watches_match_the_http_client() -> None:
    async with running_server() as over_http, running_server() as in_process:
        async with httpclients.HttpApiClient(over_http.url) as http:
            expected = await watch_scenario(http, over_http)
        async with loopback.LoopbackApiClient(in_process.api) as client:
            actual = await watch_scenario(client, in_process)

    assert actual == expected
    results = dict(expected)
    assert [t for t, _ in results["from rv"]] == ["ADDED", "MODIFIED", "ADDED", "DELETED"]
    assert [t for t, _ in results["from now"]] == ["ADDED", "MODIFIED"]
    assert [t for t, _ in results["selected"]] == ["ADDED", "DELETED"]
    assert results["expired"][1:4] == ("Gone", 410, "Expired")
    assert results["bad rv"][2:4] == (400, "BadRequest")
    assert results["missing kind"][2:4] == (404, "NotFound")


async def test_an_expired_watch_raises_gone(api: loopback.LoopbackApiClient) -> None:
    with pytest.raises(clients.Gone) as gone:
        await anext(api.watch(CONFIGMAPS, NS, resource_version="1"))
    assert clients.is_gone(gone.value)


async def test_watch_sends_bookmarks_and_ends_at_its_timeout(
    server: app.ApiServer, api: loopback.LoopbackApiClient
) -> None:
    server.api.bookmark_interval = 0.01
    start = (await api.list(CONFIGMAPS, NS)).resource_version
    events = api.watch(CONFIGMAPS, NS, resource_version=start, timeout_seconds=1)

    async with asyncio.timeout(WAIT):
        first = await anext(events)
        rest = [e async for e in events]

    assert first.type == "BOOKMARK" and first.object["kind"] == "ConfigMap"
    assert int(first.resource_version) >= int(start)
    assert all(e.type == "BOOKMARK" for e in rest), "the stream ended at its timeout"


async def test_closing_a_watch_unregisters_it(
    server: app.ApiServer, api: loopback.LoopbackApiClient
) -> None:
    cache = server.store.cache(server.registry.by_kind("", "v1", "ConfigMap"))  # type: ignore[arg-type]
    before = len(cache.watchers)
    events = api.watch(CONFIGMAPS, NS)
    await api.create(CONFIGMAPS, configmap("a"))
    async with asyncio.timeout(WAIT):
        await anext(events)
    assert len(cache.watchers) == before + 1
    await events.aclose()
    assert len(cache.watchers) == before


async def test_stopping_the_server_ends_watches(
    server: app.ApiServer, api: loopback.LoopbackApiClient
) -> None:
    events = api.watch(CONFIGMAPS, NS, allow_bookmarks=False)
    await api.create(CONFIGMAPS, configmap("a"))
    async with asyncio.timeout(WAIT):
        await anext(events)
        server.cacher.close_watchers()
        assert [e async for e in events] == []


# python/cpython#86296: on 3.11 ``asyncio.wait_for`` swallows a cancel that
# lands in the turn of the loop its inner wait completes in. A task stopped
# then (an informer, the event recorder mid-write at shutdown) ran on and
# `nodeless up` hung on its stop until killed. Each test cancels at every turn
# of the loop around the moment the awaited write arrives.
TURNS = 12


async def _turns(count: int) -> None:
    for _ in range(count):
        await asyncio.sleep(0)


async def test_a_wait_for_the_cache_cancelled_as_the_write_lands_ends_cancelled(
    server: app.ApiServer, api: loopback.LoopbackApiClient
) -> None:
    cacher = server.store.cacher
    for turn in range(TURNS):
        waiting = asyncio.create_task(cacher.wait_for(cacher.revision + 1))
        await _turns(2)  # waiting on the cache now
        writing = asyncio.create_task(api.create(CONFIGMAPS, configmap(f"w{turn}")))
        await _turns(turn)
        pending = waiting.cancel()  # False: it had ended already
        await asyncio.wait([waiting, writing], timeout=WAIT)
        assert waiting.cancelled() or not pending, f"the cancel at turn {turn} was swallowed"


async def test_a_watch_cancelled_as_an_event_arrives_ends(
    api: loopback.LoopbackApiClient,
) -> None:
    for turn in range(TURNS):
        start = (await api.list(CONFIGMAPS, NS)).resource_version

        async def read(start: str = start) -> None:
            async for _ in api.watch(CONFIGMAPS, NS, resource_version=start):
                pass

        reading = asyncio.create_task(read())
        await _turns(4)  # waiting for an event now
        writing = asyncio.create_task(api.create(CONFIGMAPS, configmap(f"e{turn}")))
        await _turns(turn)
        reading.cancel()
        await asyncio.wait([reading, writing], timeout=WAIT)
        assert reading.done(), f"the watch cancelled at turn {turn} ran on"


async def test_results_belong_to_the_caller(api: loopback.LoopbackApiClient) -> None:
    mine = configmap("a", k="1")
    created = await api.create(CONFIGMAPS, mine)
    assert "uid" not in mine["metadata"], "the caller's object is not written to"

    created["data"]["k"] = "changed"
    fetched = await api.get(CONFIGMAPS, NS, "a")
    fetched["data"]["k"] = "changed too"
    listed = await api.list(CONFIGMAPS, NS)
    listed.items[0]["data"]["k"] = "and again"
    noop = await api.patch(CONFIGMAPS, NS, "a", {"data": {"k": "1"}})
    noop["metadata"]["labels"] = {"mutated": "yes"}

    assert (await api.get(CONFIGMAPS, NS, "a"))["data"] == {"k": "1"}
    assert "labels" not in (await api.get(CONFIGMAPS, NS, "a"))["metadata"]


async def test_watches_share_one_decoded_object_per_change(
    server: app.ApiServer,
) -> None:
    client = loopback.LoopbackApiClient(server.api)
    private = loopback.LoopbackApiClient(server.api, share_watch_objects=False)
    rv = (await client.list(CONFIGMAPS, NS)).resource_version
    one = client.watch(CONFIGMAPS, NS, resource_version=rv, allow_bookmarks=False)
    two = client.watch(CONFIGMAPS, "", resource_version=rv, allow_bookmarks=False)
    three = private.watch(CONFIGMAPS, NS, resource_version=rv, allow_bookmarks=False)
    await client.create(CONFIGMAPS, configmap("a"))
    async with asyncio.timeout(WAIT):
        a, b, c = await anext(one), await anext(two), await anext(three)
    for events in (one, two, three):
        await events.aclose()

    assert a.type == b.type == c.type == "ADDED"
    assert a.object is b.object, "decoded once, shared by the client's watches"
    assert c.object == a.object and c.object is not a.object
    # What is shared is the watch cache's own object (read-only for everyone).
    cached = server.store.cacher.cache("core", "configmaps").objects
    assert any(entry.obj is a.object for entry in cached.values())
    assert server.store.cacher.verify() == []


async def test_an_informer_follows_the_loopback_client(api: loopback.LoopbackApiClient) -> None:
    await api.create(CONFIGMAPS, configmap("before"))
    changes: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
    informer = informers.Informer(api, CONFIGMAPS, namespace=NS, page_size=1)
    informer.add_handlers(
        on_add=lambda o: changes.put_nowait(("add", clients.key_of(o))),
        on_update=lambda old, new: changes.put_nowait(("update", new["data"]["k"])),
        on_delete=lambda o: changes.put_nowait(("delete", clients.key_of(o))),
    )

    async with informer, asyncio.timeout(WAIT):
        await informer.wait_synced()
        await api.create(CONFIGMAPS, configmap("after", k="1"))
        await api.patch(CONFIGMAPS, NS, "after", {"data": {"k": "2"}})
        await api.delete(CONFIGMAPS, NS, "before")
        seen = [await changes.get() for _ in range(4)]

    assert seen == [
        ("add", "default/before"),
        ("add", "default/after"),
        ("update", "2"),
        ("delete", "default/before"),
    ]
    assert list(informer.store) == ["default/after"]
    assert informer.store["default/after"]["kind"] == "ConfigMap"


async def test_an_informer_relists_after_gone(
    server: app.ApiServer, api: loopback.LoopbackApiClient
) -> None:
    informer = informers.Informer(api, CONFIGMAPS, namespace=NS)
    adds: asyncio.Queue[str] = asyncio.Queue()
    informer.add_handlers(on_add=lambda o: adds.put_nowait(clients.key_of(o)))
    await api.create(CONFIGMAPS, configmap("a"))
    async with informer, asyncio.timeout(WAIT):
        await informer.wait_synced()
        assert await adds.get() == "default/a"
        await informer.stop()
        informer.resource_version = "1"  # long expired: the next watch gets 410
        await api.create(CONFIGMAPS, configmap("b"))
        informer.start()
        assert await adds.get() == "default/b"


async def test_namespaced_writes_need_a_namespace(api: loopback.LoopbackApiClient) -> None:
    with pytest.raises(ValueError):
        await api.create(
            CONFIGMAPS, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}}
        )
    with pytest.raises(ValueError):
        await api.update(
            CONFIGMAPS, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"namespace": NS}}
        )


async def test_in_process_clients_read_metrics_from_the_registered_source(
    server: app.ApiServer, api: loopback.LoopbackApiClient
) -> None:
    sampled = datetime.datetime(2026, 11, 26, tzinfo=datetime.UTC)
    usage = metrics.PodUsage(
        {"metadata": {"name": "web", "namespace": NS, "labels": {"app": "web"}}, "spec": {}},
        sampled,
        10,
        (metrics.ContainerUsage("app", 5_000_000, 2**20),),
    )

    async def source() -> list[metrics.PodUsage]:
        return [usage]

    server.api.metrics_source = source
    pod_metrics = clients.resolve("metrics.k8s.io/v1beta1", "PodMetrics")

    listed = await api.list(pod_metrics, NS, label_selector="app=web")
    one = await api.get(pod_metrics, NS, "web")
    other = await api.list(pod_metrics, NS, label_selector="app=db")

    assert [i["containers"][0]["usage"]["cpu"] for i in listed.items] == ["5000000n"]
    assert one["metadata"]["name"] == "web"
    assert other.items == []


async def test_written_objects_go_to_the_watch_cache_without_a_decode_and_callers_own_copies(
    server: app.ApiServer, api: loopback.LoopbackApiClient
) -> None:
    created = await api.create(CONFIGMAPS, configmap("a"))
    patched = await api.patch(CONFIGMAPS, NS, "a", {"data": {"k": "2"}})
    # the store's answer is what the cache holds: the write was not decoded again
    stored, _ = await server.store.update(
        server.registry.by_kind("", "v1", "ConfigMap"),  # type: ignore[arg-type]
        NS,
        "a",
        lambda current: dict(current or {}, data={"k": "3"}),
        storing.WriteOptions(manager="test"),
    )
    await server.store.consistent()
    key = f"/registry/core/configmaps/{NS}/a"
    entry = server.store.cacher.cache("core", "configmaps").objects[key]
    assert entry.obj is stored
    assert stored["metadata"]["resourceVersion"] == str(entry.rev)
    # what the loopback client answered was its own copy: changing it changes nothing stored
    created["data"] = {"scribbled": "yes"}
    patched["data"] = {"scribbled": "yes"}
    assert server.store.cacher.verify() == []
    assert entry.obj["data"] == {"k": "3"}


async def test_a_write_whose_answer_is_dropped_answers_with_the_stored_object_uncopied(
    server: app.ApiServer, api: loopback.LoopbackApiClient
) -> None:
    dropped = clients.WriteOptions(keep_result=False)
    key = f"/registry/core/configmaps/{NS}/d"
    cache = server.store.cacher.cache("core", "configmaps")
    created = await api.create(CONFIGMAPS, configmap("d"), dropped)
    await server.store.consistent()
    created_is_stored = cache.objects[key].obj is created
    patched = await api.patch(CONFIGMAPS, NS, "d", {"data": {"k": "2"}}, options=dropped)
    await server.store.consistent()
    patched_is_stored = cache.objects[key].obj is patched
    kept = await api.patch(CONFIGMAPS, NS, "d", {"data": {"k": "3"}})
    await server.store.consistent()

    assert created_is_stored and patched_is_stored
    assert cache.objects[key].obj is not kept  # a kept answer is the caller's own copy
    assert cache.objects[key].obj == kept
    assert server.store.cacher.verify() == []


async def test_binding_leaves_the_cached_pod_it_replaces_untouched(
    server: app.ApiServer, api: loopback.LoopbackApiClient
) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": NS, "annotations": {"a": "1"}},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }
    await api.create(PODS, pod)
    await server.store.consistent()
    key = f"/registry/core/pods/{NS}/p"
    before = server.store.cacher.cache("core", "pods").objects[key].obj
    await api.bind(NS, "p", "zone-a", annotations={"b": "2"})
    await server.store.consistent()
    after = server.store.cacher.cache("core", "pods").objects[key].obj
    assert after["spec"]["nodeName"] == "zone-a"
    assert after["metadata"]["annotations"] == {"a": "1", "b": "2"}
    assert [c["type"] for c in after["status"]["conditions"]] == ["PodScheduled"]
    assert "nodeName" not in before["spec"]
    assert before["metadata"]["annotations"] == {"a": "1"}
    assert not before.get("status", {}).get("conditions")
    assert server.store.cacher.verify() == []


async def test_every_create_from_one_template_has_its_unknown_fields_refused_or_pruned(
    api: loopback.LoopbackApiClient,
) -> None:
    # A controller's creates send the same body again and again.
    template = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"generateName": "cm-", "namespace": NS},
        "data": {"k": "v"},
        "bogus": True,
    }
    strict = clients.WriteOptions(field_validation="Strict")
    for _ in range(2):
        with pytest.raises(errors.StatusError) as refused:
            await api.create(CONFIGMAPS, template, strict)
        assert refused.value.code == 400
        assert 'unknown field "bogus"' in refused.value.message
    created = [await api.create(CONFIGMAPS, template) for _ in range(2)]
    assert [("bogus" in c, c["data"]) for c in created] == [(False, {"k": "v"})] * 2
    assert created[0]["metadata"]["name"] != created[1]["metadata"]["name"]
