"""The instance manager in a running cluster: a bound pod gets an Instance
record and a provider instance, provider status becomes pod status with an
Event per instance state, deletion releases everything, provider failures and
vanished instances end the pod with the platform's reason, and a restarted
cluster adopts its instances instead of leaking or duplicating them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from nodeless import clocks
from nodeless.client import clients
from nodeless.instances import managing
from nodeless.instances.providers import base, simulated
from nodeless.storage import sqlite
from tests.unit.scheduler import (
    NAMESPACE,
    PODS,
    Cluster,
    annotation,
    condition,
    phase_of,
    pod_manifest,
    wait_for,
)

State = base.InstanceState
MakeCluster = Callable[..., Awaitable[Cluster]]


@pytest.fixture
async def make_cluster() -> AsyncIterator[MakeCluster]:
    started: list[Cluster] = []

    async def make(**kwargs: Any) -> Cluster:
        cluster = Cluster(**kwargs)
        started.append(cluster)
        return await cluster.start()

    yield make
    for cluster in reversed(started):
        await cluster.stop()


@pytest.fixture
async def cluster(make_cluster: MakeCluster) -> Cluster:
    return await make_cluster()


def container(pod: dict[str, Any]) -> dict[str, Any]:
    [status] = (pod.get("status") or {}).get("containerStatuses") or [{}]
    return dict(status)


def terminated(pod: dict[str, Any]) -> dict[str, Any]:
    return dict((container(pod).get("state") or {}).get("terminated") or {})


async def total_events(cluster: Cluster, name: str, reason: str) -> int:
    """How many times ``reason`` was recorded for ``name`` (repeats are counted
    in one Event's ``count``)."""
    return sum(int(e.get("count") or 1) for e in await cluster.events_for(name, reason))


async def wait_events(cluster: Cluster, name: str, reason: str) -> list[dict[str, Any]]:
    async def found() -> list[dict[str, Any]]:
        return await cluster.events_for(name, reason)

    return await wait_for(found, what=f"{reason} event for {name}")


# --- a pod runs ------------------------------------------------------------------------


async def test_a_bound_pod_becomes_running_with_a_kubelet_like_status(cluster: Cluster) -> None:
    await cluster.create_pod(pod_manifest("web", command=["sleep", "infinity"]))
    pod = await cluster.wait_pod(
        "web", lambda p: phase_of(p) == "Running" and container(p).get("ready"), "web ready"
    )
    status = pod["status"]
    assert status["podIP"] and status["podIPs"] == [{"ip": status["podIP"]}]
    assert status["hostIP"]
    assert status["startTime"]
    for kind in ("Initialized", "Ready", "ContainersReady", "PodScheduled"):
        c = condition(pod, kind)
        assert c is not None and c["status"] == "True", (kind, c)
    c = container(pod)
    assert c["name"] == "app"
    assert c["image"] == "busybox:1.36"
    assert (c["ready"], c["started"], c["restartCount"]) == (True, True, 0)
    assert c["state"]["running"]["startedAt"]
    assert "reason" not in status


async def test_a_running_pod_has_an_instance_record_matching_its_annotations(
    cluster: Cluster,
) -> None:
    await cluster.create_pod(pod_manifest("rec"))
    pod = await cluster.wait_phase("rec", "Running")

    record = await cluster.wait_record("rec", "Running")
    assert record["kind"] == "Instance" and record["apiVersion"] == "nodeless.dev/v1"
    instance_id = annotation(pod, "nodeless.dev/instance-id")
    assert instance_id and record["spec"]["instanceID"] == instance_id
    assert record["spec"]["podUID"] == pod["metadata"]["uid"]
    assert record["spec"]["zone"] == annotation(pod, "nodeless.dev/zone")
    assert record["spec"]["instanceSpec"] == "2-4Gi"
    assert record["status"]["ip"] == pod["status"]["podIP"]
    [owner] = record["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("Pod", "rec", pod["metadata"]["uid"])
    # The provider runs exactly that instance.
    listed = {s.instance_id: s for s in await cluster.provider.list()}
    assert listed[instance_id].state is State.RUNNING


async def test_a_sync_that_finds_nothing_new_writes_no_record(cluster: Cluster) -> None:
    await cluster.create_pod(pod_manifest("steady"))
    record = await cluster.wait_record("steady", "Running")
    # As when the record is first written already Running: its creation
    # time is the manager's (billing's start), not the provider's.
    record = await cluster.client.patch(
        managing.INSTANCES,
        NAMESPACE,
        "steady",
        {"status": {"createdAt": "2025-12-31T23:59:59.999999Z"}},
        patch_type="merge",
        subresource="status",
    )
    await cluster.settle()
    assert cluster.manager is not None

    cluster.manager.controller.queue.add(f"{NAMESPACE}/steady")
    await cluster.settle()
    writes = [
        event.type
        async for event in cluster.client.watch(
            managing.INSTANCES,
            NAMESPACE,
            resource_version=record["metadata"]["resourceVersion"],
            timeout_seconds=1,
        )
        if event.type != "BOOKMARK"
    ]

    # Not even the provider's own creation time, microseconds off the
    # record's, is a reason to write (it was one write more per pod).
    assert writes == []


async def test_each_instance_state_is_one_event_on_the_pod(cluster: Cluster) -> None:
    await cluster.create_pod(pod_manifest("evt"))
    await cluster.wait_phase("evt", "Running")
    await wait_events(cluster, "evt", "InstanceRunning")
    await cluster.settle()
    assert await total_events(cluster, "evt", "InstancePending") == 1
    assert await total_events(cluster, "evt", "InstanceRunning") == 1
    [running] = await cluster.events_for("evt", "InstanceRunning")
    assert running["type"] == "Normal"
    assert running["involvedObject"]["kind"] == "Pod"


# --- pods that end ---------------------------------------------------------------------


async def test_a_never_restarted_container_exiting_3_fails_the_pod(cluster: Cluster) -> None:
    manifest = pod_manifest("fails", command=["sh", "-c", "exit 3"], restart_policy="Never")
    await cluster.create_pod(manifest)
    pod = await cluster.wait_phase("fails", "Failed")
    done = terminated(pod)
    assert (done.get("exitCode"), done.get("reason")) == (3, "Error")
    assert container(pod)["ready"] is False
    # A plain container failure: no platform reason on the pod.
    assert "reason" not in pod["status"]
    ready = condition(pod, "Ready")
    assert ready is not None and ready["status"] == "False"


async def test_a_container_exiting_0_succeeds_the_pod(cluster: Cluster) -> None:
    manifest = pod_manifest("works", command=["sh", "-c", "exit 0"], restart_policy="Never")
    await cluster.create_pod(manifest)
    pod = await cluster.wait_phase("works", "Succeeded")
    done = terminated(pod)
    assert (done.get("exitCode"), done.get("reason")) == (0, "Completed")

    await cluster.wait_record("works", "Succeeded")


async def test_a_crash_looping_container_backs_off_10_then_20_seconds(cluster: Cluster) -> None:
    manifest = pod_manifest("crash", command=["sh", "-c", "exit 1"], restart_policy="Always")
    await cluster.create_pod(manifest)

    def backing_off(restarts: int) -> Callable[[dict[str, Any]], bool]:
        def check(pod: dict[str, Any]) -> bool:
            c = container(pod)
            waiting = (c.get("state") or {}).get("waiting") or {}
            return c.get("restartCount") == restarts and waiting.get("reason") == "CrashLoopBackOff"

        return check

    pod = await cluster.wait_pod("crash", backing_off(0), "first back-off")
    assert phase_of(pod) == "Running"
    assert container(pod)["lastState"]["terminated"]["exitCode"] == 1
    ready = condition(pod, "Ready")
    assert ready is not None and ready["status"] == "False"

    await cluster.clock.advance(10)
    await cluster.wait_pod("crash", backing_off(1), "restart after 10 s")

    await cluster.clock.advance(19)
    await cluster.settle()
    assert container(await cluster.must_pod("crash"))["restartCount"] == 1  # 20 s not over
    await cluster.clock.advance(1)
    pod = await cluster.wait_pod("crash", backing_off(2), "restart after 20 s more")
    assert phase_of(pod) == "Running"


# --- deletion ---------------------------------------------------------------------------


async def test_deleting_a_running_pod_removes_it_its_record_and_its_instance(
    cluster: Cluster,
) -> None:
    await cluster.create_pod(pod_manifest("bye"))
    pod = await cluster.wait_phase("bye", "Running")
    instance_id = annotation(pod, "nodeless.dev/instance-id")
    assert await cluster.record("bye") is not None

    await cluster.client.delete(PODS, NAMESPACE, "bye")  # default grace period
    await cluster.wait_gone("bye")

    async def record_gone() -> bool:
        return await cluster.record("bye") is None

    await wait_for(record_gone, what="record deleted")
    assert instance_id not in {s.instance_id for s in await cluster.provider.list()}


async def test_deleting_waits_out_the_grace_period_of_a_container_ignoring_sigterm(
    cluster: Cluster,
) -> None:
    manifest = pod_manifest("slow", env={"NODELESS_SIM_IGNORE_SIGTERM": "true"}, grace=20)
    await cluster.create_pod(manifest)
    pod = await cluster.wait_phase("slow", "Running")
    instance_id = annotation(pod, "nodeless.dev/instance-id")
    await cluster.client.delete(PODS, NAMESPACE, "slow")
    await cluster.settle()
    assert await cluster.pod("slow") is not None
    listed = {s.instance_id: s for s in await cluster.provider.list()}
    assert instance_id is not None and listed[instance_id].state is State.TERMINATING

    await cluster.clock.advance(20)
    await cluster.wait_gone("slow")
    assert instance_id not in {s.instance_id for s in await cluster.provider.list()}


# --- the platform's failures ------------------------------------------------------------


async def test_a_provider_create_failure_fails_the_pod_with_provider_failed(
    make_cluster: MakeCluster,
) -> None:
    cluster = await make_cluster(failure_rate=1.0)
    await cluster.create_pod(pod_manifest("unlucky"))
    pod = await cluster.wait_phase("unlucky", "Failed")
    assert pod["status"]["reason"] == "ProviderFailed"
    assert "simulated provider failure" in pod["status"]["message"]
    [event] = await wait_events(cluster, "unlucky", "ProviderCreateFailed")
    assert event["type"] == "Warning"
    assert event["message"] == pod["status"]["message"]
    assert await cluster.provider.list() == []


async def test_an_instance_deleted_at_the_provider_fails_the_pod_not_found(
    cluster: Cluster,
) -> None:
    await cluster.create_pod(pod_manifest("lost"))
    pod = await cluster.wait_phase("lost", "Running")
    instance_id = annotation(pod, "nodeless.dev/instance-id")
    assert instance_id is not None

    # Behind the manager's back: the instance is removed at the provider ...
    await cluster.provider.delete(instance_id, 0)

    async def gone_at_provider() -> bool:
        return await cluster.provider.get(instance_id) is None

    await wait_for(gone_at_provider, what="instance gone at the provider")
    # ... and the manager syncs the pod (any change to it triggers a sync).
    await cluster.client.patch(
        PODS, NAMESPACE, "lost", {"metadata": {"labels": {"poke": "1"}}}, patch_type="merge"
    )
    pod = await cluster.wait_phase("lost", "Failed")
    assert pod["status"].get("reason") == "NotFound", pod["status"]
    assert container(pod)["ready"] is False

    await cluster.wait_record("lost", "Failed")


async def test_components_sharing_informers_leave_them_running_for_each_other(
    make_cluster: MakeCluster,
) -> None:
    cluster = await make_cluster(shared_informers=True)
    await cluster.create_pod(pod_manifest("kept", command=["sleep", "infinity"]))
    await cluster.wait_record("kept", "Running")
    assert cluster.manager is not None and cluster.scheduler is not None
    one_watch = cluster.manager.pods is cluster.scheduler.pods

    await cluster.scheduler.stop()
    cluster.scheduler = None
    await cluster.client.delete(PODS, NAMESPACE, "kept")

    async def record_gone() -> bool:
        return await cluster.record("kept") is None

    # the manager still sees the pod go, through the informer the scheduler left running
    await wait_for(record_gone, what="the record of the deleted pod gone")
    assert one_watch


class ShowingProvider(simulated.SimulatedProvider):
    """A simulated provider that can be shown pod changes (``UpdateCapable``)
    and remembers each pod it was shown."""

    def __init__(self, clock: clocks.Clock) -> None:
        super().__init__(clock)
        self.shown: list[tuple[str, dict[str, Any]]] = []

    async def update(self, instance_id: str, pod: dict[str, Any]) -> None:
        self.shown.append((instance_id, pod))


async def test_a_label_or_annotation_change_is_shown_to_the_instance_once(
    make_cluster: MakeCluster,
) -> None:
    provider = ShowingProvider(clocks.SystemClock())
    cluster = await make_cluster(provider=provider)
    await cluster.create_pod(pod_manifest("shown", command=["sleep", "infinity"]))
    pod = await cluster.wait_phase("shown", "Running")
    shown_while_starting = list(provider.shown)

    for patch in ({"labels": {"tier": "front"}}, {"annotations": {"owner": "team-a"}}):
        await cluster.client.patch(
            PODS, NAMESPACE, "shown", {"metadata": patch}, patch_type="merge"
        )
    await wait_for(lambda: _shown_with(provider, "owner"), what="the pod shown with its annotation")

    assert isinstance(provider, base.UpdateCapable)
    # created with the pod as it was, and its status writes change neither
    assert shown_while_starting == []
    instance_id = annotation(pod, "nodeless.dev/instance-id")
    assert {i for i, _ in provider.shown} == {instance_id}
    last = provider.shown[-1][1]["metadata"]
    assert last["labels"]["tier"] == "front" and last["annotations"]["owner"] == "team-a"
    assert 1 <= len(provider.shown) <= 2  # each change at most once


async def _shown_with(provider: ShowingProvider, note: str) -> bool:
    return any(note in (p["metadata"].get("annotations") or {}) for _, p in provider.shown)


class LosingProvider:
    """A simulated provider whose host can lose instances without a word, as a
    crashed machine would: a lost instance is neither listed nor found, and
    nothing more is pushed about it. It cannot ``adopt`` (a fresh one after a
    restart has lost everything)."""

    def __init__(self, clock: clocks.Clock) -> None:
        self.inner = simulated.SimulatedProvider(clock)
        self.name = self.inner.name
        self.lost: set[str] = set()
        self._callbacks: list[base.StatusCallback] = []
        self.inner.subscribe(self._forward)

    def lose(self, instance_id: str) -> None:
        self.lost.add(instance_id)

    def _forward(self, status: base.InstanceStatus) -> None:
        if status.instance_id not in self.lost:
            for callback in self._callbacks:
                callback(status)

    async def start(self) -> None:
        await self.inner.start()

    async def close(self) -> None:
        await self.inner.close()

    def subscribe(self, callback: base.StatusCallback) -> None:
        self._callbacks.append(callback)

    async def create(self, request: base.InstanceRequest) -> base.InstanceStatus:
        return await self.inner.create(request)

    async def delete(self, instance_id: str, grace_period_seconds: int) -> None:
        if instance_id not in self.lost:
            await self.inner.delete(instance_id, grace_period_seconds)

    async def get(self, instance_id: str) -> base.InstanceStatus | None:
        return None if instance_id in self.lost else await self.inner.get(instance_id)

    async def list(self) -> list[base.InstanceStatus]:
        return [s for s in await self.inner.list() if s.instance_id not in self.lost]


async def test_an_instance_that_vanished_silently_fails_the_pod_not_found(
    make_cluster: MakeCluster,
) -> None:
    clock = clocks.FakeClock()
    provider = LosingProvider(clock)
    cluster = await make_cluster(clock=clock, provider=provider)
    await cluster.create_pod(pod_manifest("ghost"))
    pod = await cluster.wait_phase("ghost", "Running")
    instance_id = annotation(pod, "nodeless.dev/instance-id")
    assert instance_id is not None

    provider.lose(instance_id)
    await cluster.client.patch(
        PODS, NAMESPACE, "ghost", {"metadata": {"labels": {"poke": "1"}}}, patch_type="merge"
    )
    pod = await cluster.wait_phase("ghost", "Failed")
    assert pod["status"]["reason"] == "NotFound"
    assert container(pod)["ready"] is False
    [event] = await wait_events(cluster, "ghost", "InstanceNotFound")
    assert event["type"] == "Warning"


async def test_an_instance_the_provider_lost_across_a_restart_fails_the_pod_not_found(
    tmp_path: Path,
) -> None:
    clock = clocks.FakeClock()
    first = await Cluster(backend=sqlite.SqliteBackend(tmp_path / "state.db"), clock=clock).start()
    try:
        await first.create_pod(pod_manifest("orphan"))
        await first.wait_phase("orphan", "Running")
    finally:
        await first.stop()

    second = Cluster(
        backend=sqlite.SqliteBackend(tmp_path / "state.db"),
        clock=clock,
        provider=LosingProvider(clock),
    )
    await second.start()
    try:
        pod = await second.wait_phase("orphan", "Failed")
        assert pod["status"]["reason"] == "NotFound"
        [event] = await wait_events(second, "orphan", "InstanceNotFound")
        assert event["type"] == "Warning"
        assert await second.provider.list() == []  # nothing created behind the user's back
    finally:
        await second.stop()


# --- informers behind the manager's own writes ----------------------------------------


class Writes:
    """The manager's writes as they leave it: (verb, resource, subresource)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, client: clients.ApiClient) -> None:
        self.seen: list[tuple[str, str, str]] = []
        create, patch = client.create, client.patch

        async def counted_create(
            resource: clients.ResourceRef, obj: Any, *a: Any, **kw: Any
        ) -> Any:
            self.seen.append(("create", resource.plural, ""))
            return await create(resource, obj, *a, **kw)

        async def counted_patch(resource: clients.ResourceRef, *a: Any, **kw: Any) -> Any:
            self.seen.append(("patch", resource.plural, str(kw.get("subresource", ""))))
            return await patch(resource, *a, **kw)

        monkeypatch.setattr(client, "create", counted_create)
        monkeypatch.setattr(client, "patch", counted_patch)

    def of(self, plural: str) -> list[tuple[str, str, str]]:
        return [w for w in self.seen if w[1] == plural]


def lag_behind(
    monkeypatch: pytest.MonkeyPatch,
    informer: Any,
    key: str,
    keep: Callable[[dict[str, Any] | None], bool],
) -> Callable[[], None]:
    """``informer`` shows ``key`` as it was when first read in a state
    ``keep`` accepts, whatever happens to it after, and has seen no later
    version of anything: a watch far behind. Returns what makes it catch up."""
    get, has_seen = informer.get, informer.has_seen
    frozen: dict[str, dict[str, Any] | None] = {}
    lagging_since = [""]

    def lagging(wanted: str) -> dict[str, Any] | None:
        if wanted != key or not lagging_since[0]:
            return get(wanted)  # type: ignore[no-any-return]
        if key not in frozen:
            seen = get(key)
            if not keep(seen):
                return seen  # type: ignore[no-any-return]
            frozen[key] = seen
        return frozen[key]

    def seen_then(version: str) -> bool:
        if not lagging_since[0]:
            return has_seen(version)  # type: ignore[no-any-return]
        return int(version) <= int(lagging_since[0])

    lagging_since[0] = informer.resource_version
    monkeypatch.setattr(informer, "get", lagging)
    monkeypatch.setattr(informer, "has_seen", seen_then)

    def catch_up() -> None:
        lagging_since[0] = ""

    return catch_up


async def test_syncs_while_the_informers_lag_behind_its_writes_write_nothing_twice(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    manager = cluster.manager
    assert manager is not None
    key = f"{NAMESPACE}/late"
    # From its binding on, the manager's informers show the pod bound and no
    # status, and no record, whatever the manager writes.
    lag_behind(monkeypatch, manager.pods, key, lambda p: bool(p and p["spec"].get("nodeName")))
    lag_behind(monkeypatch, manager.records, key, lambda r: True)
    writes = Writes(monkeypatch, manager.client)

    await cluster.create_pod(pod_manifest("late", command=["sleep", "infinity"]))
    await cluster.wait_pod("late", lambda p: container(p).get("ready"), "late ready")
    await cluster.wait_record("late", "Running")
    await cluster.settle()
    so_far = list(writes.seen)
    for _ in range(3):
        manager.controller.queue.add(key)
        await cluster.settle()

    # Each sync read what the last write made, not the informers' stale view:
    # the record was created once, and nothing already written was written again.
    assert so_far.count(("create", "instances", "")) == 1
    assert writes.seen == so_far
    assert phase_of(await cluster.must_pod("late")) == "Running"


async def test_a_deleted_pods_instance_is_billed_once_while_the_informer_still_shows_its_record(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    manager, key = await _running(cluster, "billed")
    # The record stays in the informer after the manager deletes it.
    lag_behind(monkeypatch, manager.records, key, lambda r: r is not None)
    writes = Writes(monkeypatch, manager.client)

    await cluster.client.delete(PODS, NAMESPACE, "billed")
    await cluster.wait_gone("billed")
    await wait_for(lambda: _gone(cluster, "billed"), what="the record of the deleted pod gone")
    for _ in range(2):
        manager.controller.queue.add(key)
        await cluster.settle()

    assert writes.of("billingrecords") == [("create", "billingrecords", "")]


async def test_a_record_deleted_unseen_while_the_informer_lagged_is_written_again(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert cluster.manager is not None
    key = f"{NAMESPACE}/unseen"
    catch_up = lag_behind(monkeypatch, cluster.manager.records, key, lambda r: True)
    manager, _ = await _running(cluster, "unseen")
    # Someone deletes the record while the manager's informer is away (a
    # broken watch, then a list that never had it): no delete is told.
    handlers, manager.records._handlers = manager.records._handlers, []
    await cluster.client.delete(managing.INSTANCES, NAMESPACE, "unseen")
    await wait_for(
        lambda: _not_cached(manager.records, key), what="the record gone from the informer"
    )
    manager.records._handlers = handlers
    catch_up()

    manager.controller.queue.add(key)
    # The informer has seen past the record's creation and shows nothing:
    # the record is gone, and the running pod's record is written again.
    record = await cluster.wait_record("unseen", "Running")
    assert record["spec"]["podName"] == "unseen"


async def _running(cluster: Cluster, name: str) -> tuple[managing.InstanceManager, str]:
    """A pod that runs until deleted, its record Running and the manager idle."""
    assert cluster.manager is not None
    await cluster.create_pod(pod_manifest(name, command=["sleep", "infinity"]))
    await cluster.wait_record(name, "Running")
    await cluster.settle()
    return cluster.manager, f"{NAMESPACE}/{name}"


async def _not_cached(informer: Any, key: str) -> bool:
    return key not in informer.store


async def _gone(cluster: Cluster, name: str) -> bool:
    return await cluster.record(name) is None


# --- restart adoption -------------------------------------------------------------------


async def test_a_restarted_cluster_adopts_its_running_instances(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    clock = clocks.FakeClock()
    count = 20
    names = [f"keep-{i:02d}" for i in range(count)]

    first = await Cluster(backend=sqlite.SqliteBackend(db), clock=clock).start()
    try:
        for name in names:
            await first.create_pod(pod_manifest(name))

        async def all_running() -> list[dict[str, Any]]:
            pods = [p for p in await first.pods() if phase_of(p) == "Running"]
            return pods if len(pods) == count else []

        before = {p["metadata"]["name"]: p for p in await wait_for(all_running, what="20 running")}
        await first.settle()
    finally:
        await first.stop()  # abrupt: nothing deleted
    before_ids = {n: annotation(p, "nodeless.dev/instance-id") for n, p in before.items()}
    before_ips = {n: p["status"]["podIP"] for n, p in before.items()}
    before_nodes = {n: p["spec"]["nodeName"] for n, p in before.items()}
    assert len(set(before_ids.values())) == count

    await clock.advance(5)  # the restart takes a moment
    second = await Cluster(backend=sqlite.SqliteBackend(db), clock=clock).start()
    try:
        assert second.manager is not None

        async def adopted() -> list[dict[str, Any]]:
            listed = await second.provider.list()
            pods = [p for p in await second.pods() if phase_of(p) == "Running"]
            return pods if len(listed) == count and len(pods) == count else []

        await wait_for(adopted, what="20 instances adopted")
        await second.settle()

        after = {p["metadata"]["name"]: p for p in await second.pods()}
        assert sorted(after) == sorted(names)
        for name, pod in after.items():
            assert phase_of(pod) == "Running", (name, pod.get("status"))
            assert annotation(pod, "nodeless.dev/instance-id") == before_ids[name], name
            assert pod["status"].get("podIP") == before_ips[name], name
            assert pod["spec"]["nodeName"] == before_nodes[name], name
            assert container(pod)["ready"] is True, name
            # No second binding: one Scheduled event, from before the restart.
            assert await total_events(second, name, "Scheduled") == 1, name

        records = await second.records()
        assert len(records) == count
        assert {r["spec"]["instanceID"] for r in records} == set(before_ids.values())
        listed = await second.provider.list()
        assert len(listed) == count
        assert {s.instance_id for s in listed} == set(before_ids.values())
        assert {s.state for s in listed} == {State.RUNNING}
        assert {s.ip for s in listed} == set(before_ips.values())
    finally:
        await second.stop()


async def test_adopted_instances_keep_being_managed(tmp_path: Path) -> None:
    """After adoption the instances are the manager's again: deleting a pod
    releases its adopted instance."""
    db = tmp_path / "state.db"
    clock = clocks.FakeClock()
    first = await Cluster(backend=sqlite.SqliteBackend(db), clock=clock).start()
    try:
        await first.create_pod(pod_manifest("kept"))
        pod = await first.wait_phase("kept", "Running")
    finally:
        await first.stop()
    instance_id = annotation(pod, "nodeless.dev/instance-id")

    second = await Cluster(backend=sqlite.SqliteBackend(db), clock=clock).start()
    try:

        async def adopted() -> bool:
            return await second.provider.get(str(instance_id)) is not None

        await wait_for(adopted, what="instance adopted")
        await second.client.delete(PODS, NAMESPACE, "kept")
        await second.wait_gone("kept")
        assert await second.provider.list() == []

        async def record_gone() -> bool:
            return await second.record("kept") is None

        await wait_for(record_gone, what="record deleted")
    finally:
        await second.stop()


class KeepingProvider(simulated.SimulatedProvider):
    """A provider whose instances outlive the manager, as containerd's do."""

    async def close(self) -> None:
        pass


async def test_an_instance_whose_pod_went_while_down_is_deleted_on_restart(
    tmp_path: Path,
) -> None:
    db = tmp_path / "state.db"
    clock = clocks.FakeClock()
    provider = KeepingProvider(clock)
    first = await Cluster(backend=sqlite.SqliteBackend(db), clock=clock, provider=provider).start()
    try:
        await first.create_pod(pod_manifest("gone"))
        pod = await first.wait_phase("gone", "Running")
        instance_id = annotation(pod, "nodeless.dev/instance-id")
    finally:
        await first.stop()
    # While no manager runs, the pod and its record are removed.
    offline = Cluster(
        backend=sqlite.SqliteBackend(db), clock=clock, provider=provider, manager=False
    )
    await offline.start()
    try:
        await offline.client.delete(
            PODS, NAMESPACE, "gone", clients.DeleteOptions(grace_period_seconds=0)
        )
        await offline.client.delete(managing.INSTANCES, NAMESPACE, "gone")
    finally:
        await offline.stop()
    assert instance_id in {s.instance_id for s in await provider.list()}

    again = await Cluster(backend=sqlite.SqliteBackend(db), clock=clock, provider=provider).start()
    try:

        async def released() -> bool:
            await clock.advance(1)
            return instance_id not in {s.instance_id for s in await provider.list()}

        await wait_for(released, what="the orphaned instance deleted")
    finally:
        await again.stop()


async def test_an_instance_started_just_before_a_crash_is_recorded_not_replaced(
    tmp_path: Path,
) -> None:
    """Records are written after the instance starts: one lost in a crash is
    written on restart for the instance that runs, which keeps running."""
    db = tmp_path / "state.db"
    clock = clocks.FakeClock()
    provider = KeepingProvider(clock)
    first = await Cluster(backend=sqlite.SqliteBackend(db), clock=clock, provider=provider).start()
    try:
        await first.create_pod(pod_manifest("kept"))
        pod = await first.wait_phase("kept", "Running")
        instance_id = annotation(pod, "nodeless.dev/instance-id")
    finally:
        await first.stop()
    [before] = [s for s in await provider.list() if s.instance_id == instance_id]
    offline = Cluster(
        backend=sqlite.SqliteBackend(db), clock=clock, provider=provider, manager=False
    )
    await offline.start()
    try:
        await offline.client.delete(managing.INSTANCES, NAMESPACE, "kept")  # as if never written
    finally:
        await offline.stop()

    again = await Cluster(backend=sqlite.SqliteBackend(db), clock=clock, provider=provider).start()
    try:

        async def recorded() -> list[dict[str, Any]]:
            return [r for r in await again.records() if r["spec"]["instanceID"] == instance_id]

        [record] = await wait_for(recorded, what="the record written again")
        assert record["status"]["state"] == "Running"
        [after] = [s for s in await provider.list() if s.instance_id == instance_id]
        assert after.started_at == before.started_at  # the same instance, not a new one
        assert phase_of(await again.pod("kept")) == "Running"
    finally:
        await again.stop()


# --- usage (the data behind metrics.k8s.io) ---------------------------------------------


async def test_usage_pairs_each_running_pod_with_its_instance_usage(cluster: Cluster) -> None:
    await cluster.create_pod(pod_manifest("web"))
    await cluster.create_pod(
        pod_manifest("hot", annotations={simulated.CPU_ANNOTATION: "900m"}, requests={"cpu": "1"})
    )
    pods = {name: await cluster.wait_phase(name, "Running") for name in ("web", "hot")}
    assert cluster.manager is not None

    used = {pod["metadata"]["name"]: (pod, usage) for pod, usage in await cluster.manager.usage()}

    assert set(used) == {"web", "hot"}
    for name, (pod, usage) in used.items():
        assert pod["metadata"]["uid"] == pods[name]["metadata"]["uid"]
        assert usage.instance_id == annotation(pods[name], "nodeless.dev/instance-id")
        [container] = usage.containers
        assert container.name == "app" and container.memory_working_set_bytes > 0
    assert used["hot"][1].containers[0].cpu_nano_cores == 900_000_000
    assert used["web"][1].containers[0].cpu_nano_cores > 0


async def test_usage_leaves_out_instances_no_pod_claims(cluster: Cluster) -> None:
    await cluster.create_pod(pod_manifest("web"))
    await cluster.wait_phase("web", "Running")
    stray = pod_manifest("stray")
    stray["metadata"]["uid"] = "not-a-pod-of-this-cluster"
    await cluster.provider.create(
        base.InstanceRequest(
            instance_id="stray-instance",
            pod=stray,
            zone="zone-a",
            spec_name="2-4Gi",
            vcpu=2,
            memory_gib=4,
        )
    )
    await cluster.clock.advance(0)
    assert cluster.manager is not None
    assert isinstance(cluster.provider, base.StatsCapable)
    assert "stray-instance" in {u.instance_id for u in await cluster.provider.stats()}

    used = await cluster.manager.usage()

    assert [pod["metadata"]["name"] for pod, _ in used] == ["web"]


async def test_usage_is_empty_when_the_provider_cannot_measure(
    make_cluster: MakeCluster,
) -> None:
    clock = clocks.FakeClock()
    cluster = await make_cluster(clock=clock, provider=LosingProvider(clock))
    await cluster.create_pod(pod_manifest("web"))
    await cluster.wait_phase("web", "Running")
    assert cluster.manager is not None

    assert await cluster.manager.usage() == []
