"""PodDisruptionBudget status against a whole in-process cluster, and the
eviction decision table."""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator
from typing import Any

import pytest

from nodeless.api import disruptionbudgets, errors
from nodeless.client import informers
from nodeless.controllers import disruption
from tests.unit.controllers.conftest import Stack

PDBS = disruption.PDBS
PODS = disruption.PODS
REPLICA_SETS = disruption.REPLICA_SETS
NOW = datetime.datetime(2026, 1, 1, 12, 0, tzinfo=datetime.UTC)


@pytest.fixture
async def controller(stack: Stack) -> AsyncIterator[disruption.DisruptionController]:
    factory = informers.InformerFactory(stack.client)
    pdb_controller = disruption.DisruptionController(stack.client, factory, recorder=stack.recorder)
    await pdb_controller.start()
    try:
        yield pdb_controller
    finally:
        await pdb_controller.stop()
        await factory.stop()


def app_pod(
    name: str, *, ready: bool = True, owner: dict[str, Any] | None = None
) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "c", "image": "busybox", "command": ["sleep", "3600"]}
    if not ready:
        container["readinessProbe"] = {"exec": {"command": ["true"]}, "initialDelaySeconds": 3600}
    meta: dict[str, Any] = {"name": name, "namespace": "default", "labels": {"app": "db"}}
    if owner is not None:
        meta["ownerReferences"] = [
            {
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "name": owner["metadata"]["name"],
                "uid": owner["metadata"]["uid"],
                "controller": True,
            }
        ]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {"containers": [container]},
    }


def budget(name: str = "db", **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"selector": {"matchLabels": {"app": "db"}}, **spec},
    }


async def wait_running(stack: Stack, count: int) -> None:
    async def running() -> bool:
        pods = await stack.pods("default", "app=db")
        return len(pods) == count and all(p["status"].get("phase") == "Running" for p in pods)

    await stack.wait_for(running)


async def wait_status(stack: Stack, **wanted: int) -> dict[str, Any]:
    async def settled() -> dict[str, Any] | None:
        status = (await stack.client.get(PDBS, "default", "db")).get("status") or {}
        return status if all(status.get(k) == v for k, v in wanted.items()) else None

    found: dict[str, Any] = await stack.wait_for(settled)
    return found


async def test_min_available_counts_matching_pods(
    stack: Stack, controller: disruption.DisruptionController
) -> None:
    for name in ("db-0", "db-1", "db-2"):
        await stack.client.create(PODS, app_pod(name))
    await wait_running(stack, 3)
    await stack.client.create(PDBS, budget(minAvailable=2))

    status = await wait_status(
        stack, currentHealthy=3, desiredHealthy=2, expectedPods=3, disruptionsAllowed=1
    )

    assert status["observedGeneration"] == 1
    (condition,) = status["conditions"]
    assert {k: condition[k] for k in ("type", "status", "reason", "observedGeneration")} == {
        "type": "DisruptionAllowed",
        "status": "True",
        "reason": "SufficientPods",
        "observedGeneration": 1,
    }


async def test_max_unavailable_percentage_uses_the_controllers_scale_and_unready_pods_count_against_it(
    stack: Stack, controller: disruption.DisruptionController
) -> None:
    replica_set = await stack.client.create(
        REPLICA_SETS,
        {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {"name": "db", "namespace": "default"},
            "spec": {
                "replicas": 4,
                "selector": {"matchLabels": {"app": "db"}},
                "template": {
                    "metadata": {"labels": {"app": "db"}},
                    "spec": {"containers": [{"name": "c", "image": "busybox"}]},
                },
            },
        },
    )
    await stack.client.create(PODS, app_pod("db-0", owner=replica_set))
    await stack.client.create(PODS, app_pod("db-1", owner=replica_set))
    await stack.client.create(PODS, app_pod("db-2", owner=replica_set, ready=False))
    await wait_running(stack, 3)
    await stack.client.create(PDBS, budget(maxUnavailable="50%"))

    # 4 expected (the ReplicaSet's scale, not the 3 pods), 50% of 4 may be
    # unavailable, 2 are ready: nothing more may go.
    status = await wait_status(
        stack, currentHealthy=2, desiredHealthy=2, expectedPods=4, disruptionsAllowed=0
    )

    (condition,) = status["conditions"]
    assert (condition["status"], condition["reason"]) == ("False", "InsufficientPods")


async def test_a_budget_selecting_nothing_allows_no_disruption(
    stack: Stack, controller: disruption.DisruptionController
) -> None:
    await stack.client.create(PDBS, budget(minAvailable=0))

    await wait_status(
        stack, currentHealthy=0, desiredHealthy=0, expectedPods=0, disruptionsAllowed=0
    )


# --- pure pieces ---------------------------------------------------------------------------


def ready_pod(name: str = "p", *, ready: bool = True, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "namespace": "default",
            "labels": {"app": "db"},
            "resourceVersion": "42",
        },
        "status": {
            "phase": "Running",
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            **status,
        },
    }


def pdb_with(
    allowed: int = 1, healthy: int = 3, desired: int = 2, *, generation: int = 1, **extra: Any
) -> dict[str, Any]:
    pdb = budget()
    pdb["metadata"].update(generation=generation, resourceVersion="7")
    pdb["spec"].update(extra.pop("spec", {}))
    pdb["status"] = {
        "observedGeneration": extra.pop("observed", 1),
        "disruptionsAllowed": allowed,
        "currentHealthy": healthy,
        "desiredHealthy": desired,
        "expectedPods": healthy,
        "conditions": [],
        **extra,
    }
    return pdb


def deleting(pod: dict[str, Any]) -> dict[str, Any]:
    pod["metadata"]["deletionTimestamp"] = "2026-01-01T11:59:00Z"
    return pod


@pytest.mark.parametrize(
    ("pdbs", "pod", "allowed", "code", "writes_budget", "pod_rv"),
    [
        pytest.param([], ready_pod(), True, None, False, "", id="no-budget"),
        pytest.param([pdb_with(allowed=1)], ready_pod(), True, None, True, "", id="budget-allows"),
        pytest.param(
            [pdb_with(allowed=0)], ready_pod(), False, 429, False, "", id="budget-exhausted"
        ),
        pytest.param(
            [pdb_with(generation=2)], ready_pod(), False, 429, False, "", id="status-behind-spec"
        ),
        pytest.param([pdb_with(allowed=-1)], ready_pod(), False, 403, False, "", id="negative"),
        pytest.param(
            [pdb_with(), dict(pdb_with(), metadata={"name": "other", "namespace": "default"})],
            ready_pod(),
            False,
            500,
            False,
            "",
            id="two-budgets",
        ),
        pytest.param(
            [dict(pdb_with(allowed=0), metadata={"name": "db", "namespace": "elsewhere"})],
            ready_pod(),
            True,
            None,
            False,
            "",
            id="budget-in-another-namespace",
        ),
        pytest.param(
            [pdb_with(allowed=0, spec={"selector": {"matchLabels": {"app": "web"}}})],
            ready_pod(),
            True,
            None,
            False,
            "",
            id="budget-selects-other-pods",
        ),
        pytest.param(
            [pdb_with(allowed=0)], ready_pod(phase="Pending"), True, None, False, "42", id="pending"
        ),
        pytest.param(
            [pdb_with(allowed=0)],
            ready_pod(phase="Succeeded"),
            True,
            None,
            False,
            "",
            id="finished",
        ),
        pytest.param(
            [pdb_with(allowed=0)],
            deleting(ready_pod()),
            True,
            None,
            False,
            "",
            id="already-deleting",
        ),
        pytest.param(
            [pdb_with(allowed=0, healthy=2, desired=2)],
            ready_pod(ready=False),
            True,
            None,
            False,
            "42",
            id="unready-pod-with-healthy-budget",
        ),
        pytest.param(
            [pdb_with(allowed=0, healthy=1, desired=2)],
            ready_pod(ready=False),
            False,
            429,
            False,
            "",
            id="unready-pod-with-unhealthy-budget",
        ),
        pytest.param(
            [
                pdb_with(
                    allowed=0,
                    healthy=1,
                    desired=2,
                    spec={"unhealthyPodEvictionPolicy": "AlwaysAllow"},
                )
            ],
            ready_pod(ready=False),
            True,
            None,
            False,
            "42",
            id="unready-pod-always-allowed",
        ),
        pytest.param(
            [
                pdb_with(
                    allowed=1, disruptedPods={f"x{i}": "2026-01-01T11:59:00Z" for i in range(2001)}
                )
            ],
            ready_pod(),
            False,
            403,
            False,
            "",
            id="too-many-unconfirmed-evictions",
        ),
    ],
)
def test_eviction_decision(
    pdbs: list[dict[str, Any]],
    pod: dict[str, Any],
    allowed: bool,
    code: int | None,
    writes_budget: bool,
    pod_rv: str,
) -> None:
    decision = disruptionbudgets.eviction_allowed(pdbs, pod, now=NOW)

    assert decision.allowed is allowed
    assert (decision.error.code if decision.error else None) == code
    assert (decision.budget is not None) is writes_budget
    assert decision.pod_resource_version == pod_rv


def test_an_allowed_eviction_decrements_the_budget_and_records_the_pod() -> None:
    decision = disruptionbudgets.eviction_allowed([pdb_with(allowed=1)], ready_pod("db-1"), now=NOW)

    assert decision.budget is not None
    status = decision.budget["status"]
    assert status["disruptionsAllowed"] == 0
    assert status["disruptedPods"] == {"db-1": "2026-01-01T12:00:00Z"}
    assert decision.budget["metadata"]["resourceVersion"] == "7"  # the write's precondition
    (condition,) = status["conditions"]
    assert (condition["type"], condition["status"], condition["reason"]) == (
        "DisruptionAllowed",
        "False",
        "InsufficientPods",
    )


def test_a_refused_eviction_says_why_as_upstream() -> None:
    decision = disruptionbudgets.eviction_allowed(
        [pdb_with(allowed=0, healthy=2)], ready_pod(), now=NOW
    )

    assert decision.error is not None
    status = decision.error.to_status()
    assert status["code"] == 429
    assert status["reason"] == "TooManyRequests"
    assert status["message"] == "Cannot evict pod as it would violate the pod's disruption budget."
    assert status["details"]["causes"] == [
        {
            "reason": "DisruptionBudget",
            "message": "The disruption budget db needs 2 healthy pods and has 2 currently",
        }
    ]


def test_a_dry_run_eviction_writes_nothing() -> None:
    decision = disruptionbudgets.eviction_allowed(
        [pdb_with(allowed=1)], ready_pod(), now=NOW, dry_run=True
    )

    assert decision.allowed and decision.budget is None


@pytest.mark.parametrize(
    ("spec", "pods", "scale", "expected", "desired"),
    [
        ({"minAvailable": 2}, 3, 0, 3, 2),
        ({"minAvailable": "50%"}, 3, 5, 5, 3),
        ({"maxUnavailable": 1}, 3, 4, 4, 3),
        ({"maxUnavailable": "25%"}, 3, 5, 5, 3),
        ({"maxUnavailable": "100%"}, 3, 3, 3, 0),
        ({}, 3, 0, 0, 0),
    ],
)
def test_expected_and_desired_follow_upstream_rounding(
    spec: dict[str, Any], pods: int, scale: int, expected: int, desired: int
) -> None:
    assert disruptionbudgets.expected_and_desired(spec, pods, scale) == (expected, desired)


def test_evicted_pods_do_not_count_as_healthy_until_the_deletion_timeout() -> None:
    pods = [ready_pod("a"), ready_pod("b"), deleting(ready_pod("c"))]
    pdb = pdb_with(
        disruptedPods={
            "a": "2026-01-01T11:59:00Z",  # evicted a minute ago: still pending
            "b": "2026-01-01T11:50:00Z",  # ten minutes ago and not deleted: healthy again
            "c": "2026-01-01T11:59:30Z",  # deleting now: dropped from the map
            "gone": "2026-01-01T11:59:30Z",
        }
    )

    disrupted, recheck = disruptionbudgets.disrupted_pods(pdb, pods, NOW)

    assert disrupted == {"a": "2026-01-01T11:59:00Z"}
    assert recheck == datetime.datetime(2026, 1, 1, 12, 1, tzinfo=datetime.UTC)
    assert disruptionbudgets.current_healthy(pods, disrupted, NOW) == 1


def test_budget_status_allows_nothing_while_no_pods_are_expected() -> None:
    status = disruptionbudgets.budget_status(
        pdb_with(), healthy=2, desired=0, expected=0, disrupted={}, now=NOW
    )
    assert status["disruptionsAllowed"] == 0
    assert status["conditions"][0]["reason"] == "InsufficientPods"


async def test_expected_scale_counts_pods_without_a_controller_once_each() -> None:
    class Bare(disruption.DisruptionController):
        def __init__(self) -> None:  # no informers needed: no pod has a controller
            pass

    assert await Bare().expected_scale([ready_pod("a"), ready_pod("b")]) == 2


async def test_eviction_through_the_api_spends_the_budget_then_is_refused(
    stack: Stack, controller: disruption.DisruptionController
) -> None:
    for name in ("db-0", "db-1", "db-2"):
        await stack.client.create(PODS, app_pod(name))
    await wait_running(stack, 3)
    await stack.client.create(PDBS, budget(minAvailable=2))
    await wait_status(stack, disruptionsAllowed=1)

    def eviction(name: str) -> dict[str, Any]:
        return {
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": name, "namespace": "default"},
        }

    await stack.client.create_subresource(PODS, "default", "db-0", "eviction", eviction("db-0"))
    spent = (await stack.client.get(PDBS, "default", "db"))["status"]
    assert spent["disruptionsAllowed"] == 0
    assert set(spent["disruptedPods"]) == {"db-0"}

    with pytest.raises(errors.StatusError) as refused:
        await stack.client.create_subresource(PODS, "default", "db-1", "eviction", eviction("db-1"))
    assert refused.value.code == 429
    assert refused.value.message == disruptionbudgets.VIOLATION_MESSAGE
