"""The ReplicaSet controller keeps a set's pods at its replica count, on the
in-process cluster stack; pod ranking, batching and status arithmetic are
checked as pure functions."""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator
from typing import Any

import pytest

from nodeless import clocks
from nodeless.client import clients, informers
from nodeless.controllers import podcontrol, replicasets
from tests.unit.controllers.conftest import Stack

PODS = podcontrol.PODS
RS = replicasets.REPLICASETS
RC = replicasets.REPLICATIONCONTROLLERS
EVENTS = clients.ResourceRef("", "v1", "events", True, "Event")
NS = "default"


def container(**extra: Any) -> dict[str, Any]:
    return {"name": "c", "image": "busybox", "command": ["sleep", "infinity"], **extra}


def replica_set(
    name: str = "web", replicas: int = 3, labels: dict[str, str] | None = None, **spec: Any
) -> dict[str, Any]:
    labels = labels or {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [container()]}},
            **spec,
        },
    }


def bare_pod(name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "labels": labels},
        "spec": {"containers": [container()]},
    }


def owner_uid(pod: dict[str, Any]) -> str | None:
    for ref in pod["metadata"].get("ownerReferences") or []:
        if ref.get("controller"):
            return str(ref["uid"])
    return None


def running(pod: dict[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") == "Running"


@pytest.fixture
async def controller(stack: Stack) -> AsyncIterator[replicasets.ReplicaSetController]:
    factory = informers.InformerFactory(stack.client)
    rsc = replicasets.ReplicaSetController(stack.client, factory, recorder=stack.recorder)
    rcm = replicasets.ReplicationManager(stack.client, factory, recorder=stack.recorder)
    await rsc.start()
    await rcm.start()
    factory.start()
    await factory.wait_synced()
    try:
        yield rsc
    finally:
        await rsc.stop()
        await rcm.stop()
        await factory.stop()


async def patch(stack: Stack, ref: clients.ResourceRef, name: str, body: dict[str, Any]) -> None:
    await stack.client.patch(ref, NS, name, body)


async def owned_pods(stack: Stack, owner: dict[str, Any]) -> list[dict[str, Any]]:
    uid = owner["metadata"]["uid"]
    return [
        p
        for p in await stack.pods(NS)
        if owner_uid(p) == uid and not p["metadata"].get("deletionTimestamp")
    ]


async def events_for(stack: Stack, name: str) -> list[dict[str, Any]]:
    await stack.recorder.flush()
    items = (await stack.client.list(EVENTS, NS)).items
    return [e for e in items if e["involvedObject"]["name"] == name]


# --- on the stack --------------------------------------------------------------------


async def test_replica_set_creates_its_pods_and_reports_them_ready(
    stack: Stack, controller: replicasets.ReplicaSetController
) -> None:
    rs = await stack.client.create(RS, replica_set("web", 3))

    async def all_ready() -> dict[str, Any] | None:
        got = await stack.client.get(RS, NS, "web")
        status = got.get("status") or {}
        return got if status.get("readyReplicas") == 3 else None

    got = await stack.wait_for(all_ready)
    assert got["status"] == {
        "replicas": 3,
        "fullyLabeledReplicas": 3,
        "readyReplicas": 3,
        "availableReplicas": 3,
        "observedGeneration": 1,
    }
    pods = await owned_pods(stack, rs)
    assert len(pods) == 3
    for pod in pods:
        assert running(pod)
        assert pod["metadata"]["name"].startswith("web-")
        assert pod["metadata"]["labels"] == {"app": "web"}
        [ref] = pod["metadata"]["ownerReferences"]
        assert ref == {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "name": "web",
            "uid": rs["metadata"]["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }
    messages = {e["message"] for e in await events_for(stack, "web")}
    assert {f"Created pod: {p['metadata']['name']}" for p in pods} <= messages


async def test_scaling_down_deletes_unscheduled_pending_pods_before_running_ones(
    stack: Stack, controller: replicasets.ReplicaSetController
) -> None:
    rs = await stack.client.create(RS, replica_set("web", 2))

    async def two_running() -> list[dict[str, Any]] | None:
        pods = await owned_pods(stack, rs)
        return pods if len(pods) == 2 and all(running(p) for p in pods) else None

    first = {p["metadata"]["name"] for p in await stack.wait_for(two_running)}
    # The third pod comes from a template no scheduler serves: it stays Pending
    # and unscheduled, the first in line when the set shrinks again.
    await patch(
        stack,
        RS,
        "web",
        {"spec": {"replicas": 3, "template": {"spec": {"schedulerName": "nobody"}}}},
    )

    async def three() -> list[dict[str, Any]] | None:
        pods = await owned_pods(stack, rs)
        return pods if len(pods) == 3 else None

    stuck = [p for p in await stack.wait_for(three) if p["metadata"]["name"] not in first]
    assert [(p.get("status") or {}).get("phase") for p in stuck] == ["Pending"]
    await patch(stack, RS, "web", {"spec": {"replicas": 2}})

    async def back_to_two() -> list[dict[str, Any]] | None:
        pods = await owned_pods(stack, rs)
        return pods if len(pods) == 2 else None

    assert {p["metadata"]["name"] for p in await stack.wait_for(back_to_two)} == first
    deleted = stuck[0]["metadata"]["name"]
    assert f"Deleted pod: {deleted}" in {e["message"] for e in await events_for(stack, "web")}


async def test_orphan_pod_with_matching_labels_is_adopted_instead_of_creating_one(
    stack: Stack, controller: replicasets.ReplicaSetController
) -> None:
    await stack.client.create(PODS, bare_pod("stray", {"app": "web"}))
    pods_seen = controller.factory.informer(PODS)

    async def seen() -> bool:
        return pods_seen.get(f"{NS}/stray") is not None

    # Pods and sets come through separate watches: make sure the controller
    # knows the orphan before the set appears, or it would (rightly) create a
    # pod first and delete the surplus after adopting.
    await stack.wait_for(seen)
    rs = await stack.client.create(RS, replica_set("web", 1))

    async def adopted() -> bool:
        pod = await stack.client.get(PODS, NS, "stray")
        got = await stack.client.get(RS, NS, "web")
        return (
            owner_uid(pod) == rs["metadata"]["uid"]
            and (got.get("status") or {}).get("observedGeneration") == 1
        )

    await stack.wait_for(adopted)
    assert [p["metadata"]["name"] for p in await stack.pods(NS)] == ["stray"]


async def test_pod_whose_labels_stop_matching_is_released_and_replaced(
    stack: Stack, controller: replicasets.ReplicaSetController
) -> None:
    rs = await stack.client.create(RS, replica_set("web", 2))

    async def two() -> list[dict[str, Any]] | None:
        pods = await owned_pods(stack, rs)
        return pods if len(pods) == 2 else None

    leaving = (await stack.wait_for(two))[0]["metadata"]["name"]
    await patch(stack, PODS, leaving, {"metadata": {"labels": {"app": "debug"}}})

    async def released_and_replaced() -> bool:
        pod = await stack.client.get(PODS, NS, leaving)
        pods = await owned_pods(stack, rs)
        return (
            owner_uid(pod) is None
            and len(pods) == 2
            and leaving not in {p["metadata"]["name"] for p in pods}
        )

    await stack.wait_for(released_and_replaced)
    assert not (await stack.client.get(PODS, NS, leaving))["metadata"].get("ownerReferences")


async def test_failed_pod_is_replaced(
    stack: Stack, controller: replicasets.ReplicaSetController
) -> None:
    rs = await stack.client.create(RS, replica_set("web", 1))

    async def one_running() -> dict[str, Any] | None:
        pods = await owned_pods(stack, rs)
        return pods[0] if len(pods) == 1 and running(pods[0]) else None

    victim = (await stack.wait_for(one_running))["metadata"]["name"]
    [instance] = [i for i in await stack.provider.list() if i.pod_name == victim]
    await stack.provider.reclaim(instance.instance_id)

    async def replaced() -> bool:
        failed = await stack.client.get(PODS, NS, victim)
        pods = [p for p in await owned_pods(stack, rs) if podcontrol.is_active(p)]
        return (
            failed["status"].get("phase") == "Failed"
            and len(pods) == 1
            and pods[0]["metadata"]["name"] != victim
            and running(pods[0])
        )

    await stack.wait_for(replaced)

    async def counted() -> bool:
        # The status write follows the replacement's own sync.
        got = await stack.client.get(RS, NS, "web")
        return bool(got["status"].get("replicas") == 1)

    await stack.wait_for(counted)


async def test_create_failure_sets_replica_failure_condition_and_event(
    stack: Stack, controller: replicasets.ReplicaSetController
) -> None:
    # A selector that matches pods without labels passes validation, but a pod
    # without labels could never be found again: the controller refuses it.
    rs = replica_set("nolabels", 1)
    rs["spec"]["selector"] = {"matchExpressions": [{"key": "app", "operator": "DoesNotExist"}]}
    rs["spec"]["template"]["metadata"] = {}
    await stack.client.create(RS, rs)

    async def failing() -> dict[str, Any] | None:
        got = await stack.client.get(RS, NS, "nolabels")
        conditions = (got.get("status") or {}).get("conditions") or []
        return conditions[0] if conditions else None

    condition = await stack.wait_for(failing)
    assert condition["type"] == "ReplicaFailure"
    assert condition["status"] == "True"
    assert condition["reason"] == "FailedCreate"
    assert condition["message"] == "unable to create pods, no labels"
    found = await events_for(stack, "nolabels")
    assert any(
        e["reason"] == "FailedCreate"
        and e["type"] == "Warning"
        and e["message"] == "Error creating: unable to create pods, no labels"
        for e in found
    )


async def test_replication_controller_runs_pods_with_a_map_selector(
    stack: Stack, controller: replicasets.ReplicaSetController
) -> None:
    rc = await stack.client.create(
        RC,
        {
            "apiVersion": "v1",
            "kind": "ReplicationController",
            "metadata": {"name": "legacy", "namespace": NS},
            "spec": {
                "replicas": 2,
                "selector": {"app": "legacy"},
                "template": {
                    "metadata": {"labels": {"app": "legacy"}},
                    "spec": {"containers": [container()]},
                },
            },
        },
    )

    async def ready() -> bool:
        got = await stack.client.get(RC, NS, "legacy")
        return (got.get("status") or {}).get("readyReplicas") == 2

    await stack.wait_for(ready)
    pods = await owned_pods(stack, rc)
    assert len(pods) == 2
    assert {p["metadata"]["ownerReferences"][0]["kind"] for p in pods} == {"ReplicationController"}


# --- pure functions ------------------------------------------------------------------

T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def at(seconds: int) -> str:
    return podcontrol.format_time(T0 + datetime.timedelta(seconds=seconds))


def ranked_pod(
    name: str,
    *,
    node: str = "zone-a",
    phase: str = "Running",
    ready_at: int | None = 0,
    restarts: int = 0,
    created: int = 0,
    cost: int | None = None,
) -> dict[str, Any]:
    conditions = []
    if ready_at is not None:
        conditions.append({"type": "Ready", "status": "True", "lastTransitionTime": at(ready_at)})
    else:
        conditions.append({"type": "Ready", "status": "False", "lastTransitionTime": at(0)})
    meta: dict[str, Any] = {"name": name, "uid": name, "creationTimestamp": at(created)}
    if cost is not None:
        meta["annotations"] = {podcontrol.DELETION_COST_ANNOTATION: str(cost)}
    return {
        "metadata": meta,
        "spec": {"nodeName": node},
        "status": {
            "phase": phase,
            "conditions": conditions,
            "containerStatuses": [{"restartCount": restarts}],
        },
    }


@pytest.mark.parametrize(
    ("first", "second"),
    [
        pytest.param(ranked_pod("a", node=""), ranked_pod("b"), id="unscheduled-first"),
        pytest.param(
            ranked_pod("a", phase="Pending", ready_at=None), ranked_pod("b"), id="pending-first"
        ),
        pytest.param(
            ranked_pod("a", phase="Unknown"), ranked_pod("b", phase="Running"), id="unknown-first"
        ),
        pytest.param(ranked_pod("a", ready_at=None), ranked_pod("b"), id="not-ready-first"),
        pytest.param(ranked_pod("a", cost=-5), ranked_pod("b", cost=10), id="cheaper-first"),
        pytest.param(ranked_pod("a", ready_at=50), ranked_pod("b", ready_at=10), id="ready-later"),
        pytest.param(ranked_pod("a", restarts=3), ranked_pod("b", restarts=1), id="more-restarts"),
        pytest.param(ranked_pod("a", created=20), ranked_pod("b", created=5), id="newer-first"),
    ],
)
def test_deletion_order_puts_the_least_valuable_pod_first(
    first: dict[str, Any], second: dict[str, Any]
) -> None:
    assert [p["metadata"]["name"] for p in podcontrol.deletion_order([second, first])] == [
        "a",
        "b",
    ]
    assert [p["metadata"]["name"] for p in podcontrol.deletion_order([first, second])] == [
        "a",
        "b",
    ]


def test_deletion_order_prefers_pods_doubled_up_with_related_pods() -> None:
    crowded = ranked_pod("crowded", node="zone-a")
    alone = ranked_pod("alone", node="zone-b")
    sibling = ranked_pod("sibling", node="zone-a")
    order = podcontrol.deletion_order([alone, crowded], related=[sibling])
    assert [p["metadata"]["name"] for p in order] == ["crowded", "alone"]


async def test_slow_start_batches_double_and_stop_at_the_first_failing_batch() -> None:
    calls: list[int] = []

    async def succeed() -> None:
        calls.append(1)

    assert await podcontrol.slow_start_batch(10, 1, succeed) == (10, None)
    assert len(calls) == 10

    attempts = 0

    async def fail_from_fourth() -> None:
        nonlocal attempts
        attempts += 1
        if attempts >= 4:
            raise RuntimeError("quota")

    successes, error = await podcontrol.slow_start_batch(20, 1, fail_from_fourth)
    # Batches of 1 and 2 succeed; the whole batch of 4 runs, fails, and ends it.
    assert attempts == 7
    assert successes == 3
    assert isinstance(error, RuntimeError)


@pytest.mark.parametrize(
    ("min_ready", "ready_for", "available"),
    [(0, 0, True), (10, 5, False), (10, 10, False), (10, 11, True)],
)
def test_a_pod_is_available_only_after_min_ready_seconds(
    min_ready: int, ready_for: int, available: bool
) -> None:
    pod = ranked_pod("p", ready_at=0)
    now = T0 + datetime.timedelta(seconds=ready_for)
    assert podcontrol.is_available(pod, min_ready, now) is available


def test_status_counts_ready_available_and_fully_labeled_pods() -> None:
    rs = replica_set("web", 3, minReadySeconds=30)
    rs["metadata"]["generation"] = 2
    rs["spec"]["template"]["metadata"]["labels"] = {"app": "web", "tier": "front"}
    old_ready = ranked_pod("old", ready_at=0)
    old_ready["metadata"]["labels"] = {"app": "web", "tier": "front"}
    new_ready = ranked_pod("new", ready_at=50)
    new_ready["metadata"]["labels"] = {"app": "web"}
    starting = ranked_pod("starting", ready_at=None)
    starting["metadata"]["labels"] = {"app": "web", "tier": "front"}
    status = replicasets.calculate_status(
        rs, [old_ready, new_ready, starting], None, T0 + datetime.timedelta(seconds=60)
    )
    assert status == {
        "replicas": 3,
        "fullyLabeledReplicas": 2,
        "readyReplicas": 2,
        "availableReplicas": 1,
    }


def test_status_reports_and_clears_replica_failure() -> None:
    rs = replica_set("web", 2)
    failing = replicasets.calculate_status(rs, [], RuntimeError("quota exceeded"), T0)
    assert failing["conditions"] == [
        {
            "type": "ReplicaFailure",
            "status": "True",
            "lastTransitionTime": at(0),
            "reason": "FailedCreate",
            "message": "quota exceeded",
        }
    ]
    rs["status"] = failing
    assert "conditions" not in replicasets.calculate_status(rs, [], None, T0)


class _Sets:
    """The one set the handlers resolve pods to."""

    def __init__(self, rs: dict[str, Any]) -> None:
        self.rs = rs

    def get(self, key: str) -> dict[str, Any] | None:
        return self.rs if key == f"{NS}/{self.rs['metadata']['name']}" else None


async def test_pod_events_within_the_batch_period_wake_the_set_once() -> None:
    clock = clocks.FakeClock()
    rsc = replicasets.ReplicaSetController(None, None, clock=clock)  # type: ignore[arg-type]
    rs = replica_set()
    rs["metadata"]["uid"] = "rs-uid"
    rsc._sets = _Sets(rs)  # type: ignore[assignment]
    ref = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web", "uid": "rs-uid"}
    pods = []
    for i in range(3):
        pod = bare_pod(f"web-{i}", {"app": "web"})
        pod["metadata"].update(ownerReferences=[{**ref, "controller": True}], resourceVersion="1")
        pods.append(pod)

    for pod in pods:  # created, then each one's status written
        rsc._pod_added(pod)
        later = {**pod, "metadata": {**pod["metadata"], "resourceVersion": "2"}}
        rsc._pod_updated(pod, {**later, "status": {"phase": "Running"}})

    assert len(rsc.controller.queue) == 0 and rsc.controller.queue.waiting == 1
    await clock.advance(replicasets.POD_BATCH_PERIOD)
    assert len(rsc.controller.queue) == 1 and rsc.controller.queue.waiting == 0

    # a deletion may need a replacement: it wakes the set at once
    await rsc.controller.queue.get()
    rsc.controller.queue.done(f"{NS}/web")
    rsc._pod_deleted(pods[0])
    assert len(rsc.controller.queue) == 1


async def test_its_own_status_write_coming_back_does_not_sync_the_set_again(
    stack: Stack,
) -> None:
    # Not started: its handlers are fed by hand, its writes go to the real API.
    rsc = replicasets.ReplicaSetController(
        stack.client, informers.InformerFactory(stack.client), recorder=stack.recorder
    )
    rs = await stack.client.create(RS, replica_set("web", 3))

    written = await rsc._update_status(rs, {"replicas": 3})
    rsc._set_updated(rs, written)
    assert len(rsc.controller.queue) == 0

    # Anything else does: a change after it, and our next write seen across a
    # gap (an informer that relisted may have missed a change in between).
    labelled = await stack.client.patch(RS, NS, "web", {"metadata": {"labels": {"tier": "a"}}})
    rsc._set_updated(written, labelled)
    assert len(rsc.controller.queue) == 1
    await rsc.controller.queue.get()
    rsc.controller.queue.done(f"{NS}/web")
    again = await rsc._update_status(labelled, {"replicas": 2})
    rsc._set_updated(written, again)
    assert len(rsc.controller.queue) == 1
