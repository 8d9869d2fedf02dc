"""The scheduler in a running cluster: unbound pods are sized, placed in a
zone and bound to the zone's virtual node with the chosen spec written back
under both annotation names; pods that fit nowhere get a FailedScheduling
event and an Unschedulable condition, and are bound once capacity frees."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from nodeless.instances import nodes
from nodeless.serverless import catalogue
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

SPECS = catalogue.Catalogue.load()
ZONE_KEY = "topology.kubernetes.io/zone"

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


def bound(pod: dict[str, Any]) -> bool:
    return bool((pod.get("spec") or {}).get("nodeName"))


def spec_named(name: str) -> catalogue.Spec:
    found = SPECS.find(name)
    assert found is not None
    return found


# --- binding and written-back annotations ------------------------------------------------


async def test_a_bare_pod_is_bound_to_a_zone_node_with_the_default_spec_written_back(
    cluster: Cluster,
) -> None:
    await cluster.create_pod(pod_manifest("bare"))
    pod = await cluster.wait_pod("bare", bound, "pod bare bound")

    node = pod["spec"]["nodeName"]
    zone = nodes.zone_of_node(node)
    assert node.startswith("nodeless-zone-") and zone in ("zone-a", "zone-b")
    default = spec_named("2-4Gi")
    expected = {
        "nodeless.dev/instance-spec": "2.0-4.0Gi",
        "k8s.aliyun.com/eci-instance-spec": "2.0-4.0Gi",
        "nodeless.dev/zone": zone,
        "k8s.aliyun.com/eci-instance-zone": zone,
        "nodeless.dev/capacity-type": "on-demand",
        "nodeless.dev/price": str(default.hourly_price),
    }
    notes = pod["metadata"]["annotations"]
    assert {k: notes.get(k) for k in expected} == expected
    instance_id = notes["nodeless.dev/instance-id"]
    assert instance_id.startswith("eci-")
    assert notes["k8s.aliyun.com/eci-instance-id"] == instance_id
    scheduled = condition(pod, "PodScheduled")
    assert scheduled is not None and scheduled["status"] == "True"

    async def scheduled_event() -> list[dict[str, Any]]:
        return await cluster.events_for("bare", "Scheduled")

    [event] = await wait_for(scheduled_event, what="Scheduled event")
    assert event["type"] == "Normal"
    assert node in event["message"] and instance_id in event["message"]


@pytest.mark.parametrize(
    ("requests", "written"),
    [
        ({"cpu": "250m", "memory": "512Mi"}, "0.25-0.5Gi"),
        ({"cpu": "1", "memory": "3Gi"}, "1.0-4.0Gi"),
        ({"cpu": "7", "memory": "13Gi"}, "8.0-16.0Gi"),
    ],
)
async def test_a_pod_is_sized_to_the_cheapest_covering_spec(
    cluster: Cluster, requests: dict[str, str], written: str
) -> None:
    await cluster.create_pod(pod_manifest("sized", requests=requests))
    pod = await cluster.wait_pod("sized", bound)
    assert annotation(pod, "nodeless.dev/instance-spec") == written
    assert annotation(pod, "k8s.aliyun.com/eci-instance-spec") == written
    spec = SPECS.find(written)
    assert spec is not None and spec.annotation_value == written
    assert annotation(pod, "nodeless.dev/price") == str(spec.hourly_price)


async def test_the_instance_specs_annotation_chooses_the_spec(cluster: Cluster) -> None:
    manifest = pod_manifest("listed", annotations={"k8s.aliyun.com/eci-use-specs": "4-8Gi,2-4Gi"})
    await cluster.create_pod(manifest)
    pod = await cluster.wait_pod("listed", bound)
    assert annotation(pod, "nodeless.dev/instance-spec") == "4.0-8.0Gi"


async def test_a_pod_selecting_zone_b_lands_in_zone_b(cluster: Cluster) -> None:
    names = [f"in-b-{i}" for i in range(3)]
    for name in names:
        await cluster.create_pod(pod_manifest(name, node_selector={ZONE_KEY: "zone-b"}))
    for name in names:
        pod = await cluster.wait_pod(name, bound)
        assert pod["spec"]["nodeName"] == "nodeless-zone-b"
        assert annotation(pod, "nodeless.dev/zone") == "zone-b"


async def test_the_zones_annotation_lands_the_pod_in_the_listed_zone(cluster: Cluster) -> None:
    await cluster.create_pod(pod_manifest("vswitch", annotations={"nodeless.dev/zones": "zone-b"}))
    pod = await cluster.wait_pod("vswitch", bound)
    assert pod["spec"]["nodeName"] == "nodeless-zone-b"


# --- no capacity: pending, told why, bound when capacity frees ----------------------------


async def test_a_pod_over_the_zone_quota_stays_pending_and_is_bound_when_capacity_frees(
    make_cluster: MakeCluster,
) -> None:
    cluster = await make_cluster(zones=[nodes.Zone("zone-a", max_instances=2)])
    for name in ("q-1", "q-2"):
        await cluster.create_pod(pod_manifest(name))
        await cluster.wait_phase(name, "Running")
    await cluster.create_pod(pod_manifest("q-3"))

    def unschedulable(pod: dict[str, Any]) -> bool:
        c = condition(pod, "PodScheduled")
        return c is not None and c["status"] == "False"

    pod = await cluster.wait_pod("q-3", unschedulable, "q-3 marked unschedulable")
    assert not bound(pod)
    assert phase_of(pod) == "Pending"
    scheduled = condition(pod, "PodScheduled")
    assert scheduled is not None
    assert scheduled["reason"] == "Unschedulable"
    assert "capacity" in scheduled["message"]

    async def failed_scheduling() -> list[dict[str, Any]]:
        return await cluster.events_for("q-3", "FailedScheduling")

    [event] = await wait_for(failed_scheduling, what="FailedScheduling event")
    assert event["type"] == "Warning"
    assert event["involvedObject"]["kind"] == "Pod"
    assert event["message"] == scheduled["message"]
    assert "0/1 zones are available" in event["message"]

    await cluster.client.delete(PODS, NAMESPACE, "q-1")
    # q-1 is given its grace period; the zone is full until its instance is gone.
    await cluster.clock.advance(30)
    pod = await cluster.wait_pod("q-3", bound, "q-3 bound after q-1 was deleted")
    assert pod["spec"]["nodeName"] == "nodeless-zone-a"
    scheduled = condition(pod, "PodScheduled")
    assert scheduled is not None and scheduled["status"] == "True"
    # ... and its instance really starts: the quota was not overcommitted.
    pod = await cluster.wait_pod("q-3", lambda p: phase_of(p) in ("Running", "Failed"))
    assert phase_of(pod) == "Running", pod.get("status")


async def test_capacity_is_not_handed_out_while_a_deleted_pod_still_holds_its_instance(
    make_cluster: MakeCluster,
) -> None:
    """A pod in its grace period still has its instance (billed, Terminating):
    the zone's quota is in use until the instance is released."""
    cluster = await make_cluster(zones=[nodes.Zone("zone-a", max_instances=1)])
    # A container that ignores SIGTERM keeps its instance for the whole grace period.
    stubborn = pod_manifest("holder", env={"NODELESS_SIM_IGNORE_SIGTERM": "true"})
    await cluster.create_pod(stubborn)
    await cluster.wait_phase("holder", "Running")
    await cluster.client.delete(PODS, NAMESPACE, "holder")
    await cluster.create_pod(pod_manifest("waiter"))
    await cluster.settle()

    waiter = await cluster.must_pod("waiter")
    holder = await cluster.pod("holder")
    assert holder is not None, "the holder outlived its grace period"
    assert phase_of(waiter) != "Failed", waiter.get("status")
    # Grace over: the instance is released and the waiter gets the zone.
    await cluster.clock.advance(30)
    await cluster.wait_gone("holder")
    waiter = await cluster.wait_phase("waiter", "Running")
    assert waiter["spec"]["nodeName"] == "nodeless-zone-a"


# --- throughput and who is scheduled ---------------------------------------------------


async def test_two_hundred_pods_are_all_bound(make_cluster: MakeCluster) -> None:
    cluster = await make_cluster(manager=False)
    count = 200
    limit = asyncio.Semaphore(32)

    async def create(i: int) -> None:
        async with limit:
            await cluster.create_pod(pod_manifest(f"many-{i:03d}"))

    started = time.perf_counter()
    await asyncio.gather(*(create(i) for i in range(count)))
    created = time.perf_counter()

    async def all_bound() -> int:
        pods = await cluster.pods()
        n = sum(1 for p in pods if bound(p))
        return n if n == count else 0

    assert await wait_for(all_bound, what="200 pods bound") == count
    finished = time.perf_counter()
    print(
        f"\n{count} pods: created in {created - started:.2f}s, "
        f"all bound {finished - started:.2f}s after the first create"
    )
    pods = await cluster.pods()
    ids = {annotation(p, "nodeless.dev/instance-id") for p in pods}
    assert len(ids) == count  # one instance id per pod
    per_zone = {
        z: sum(1 for p in pods if p["spec"]["nodeName"] == f"nodeless-{z}")
        for z in ("zone-a", "zone-b")
    }
    assert sum(per_zone.values()) == count


@pytest.mark.parametrize("scheduler_name", ["default-scheduler", "nodeless-scheduler"])
async def test_pods_for_our_scheduler_names_are_bound(
    cluster: Cluster, scheduler_name: str
) -> None:
    await cluster.create_pod(pod_manifest("ours", scheduler_name=scheduler_name))
    await cluster.wait_pod("ours", bound)


async def test_pods_for_another_scheduler_are_left_alone(cluster: Cluster) -> None:
    await cluster.create_pod(pod_manifest("theirs", scheduler_name="other-scheduler"))
    await cluster.create_pod(pod_manifest("after"))
    # The later pod is bound, so the scheduler has seen both.
    await cluster.wait_pod("after", bound)
    await cluster.settle()

    theirs = await cluster.must_pod("theirs")
    assert not bound(theirs)
    assert condition(theirs, "PodScheduled") is None
    notes = theirs["metadata"].get("annotations") or {}
    assert not any(k.startswith("nodeless.dev/") or k.startswith("k8s.aliyun.com/") for k in notes)
    assert await cluster.events_for("theirs") == []
    assert phase_of(theirs) == "Pending"
