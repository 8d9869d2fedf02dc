"""Spot reclaim on a fake clock: a SpotWithPriceLimit pod is reclaimed when
the market crosses its limit after (not during) its protection period, with
three minutes' notice first; it is billed at the locked price inside the
protection period and at the market after; workloads get their pods back."""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from typing import Any

import pytest

from nodeless import clocks
from nodeless.client import clients, informers
from nodeless.controllers import jobs, replicasets
from nodeless.instances import reclaiming
from nodeless.serverless import catalogue
from tests.unit.scheduler import (
    NAMESPACE,
    Cluster,
    annotation,
    condition,
    phase_of,
    pod_manifest,
    wait_for,
)

T0 = datetime.datetime(2026, 3, 1, tzinfo=datetime.UTC)  # on a market tick
MINUTE = 60.0
JOBS = jobs.JOBS
REPLICASETS = replicasets.REPLICASETS
PODS = clients.ResourceRef("", "v1", "pods", True, "Pod")


class ScriptedMarket:
    """Prices a test writes: ``ratio(minutes since T0)`` of on-demand."""

    def __init__(self, ratio: Callable[[float], str], stock: int = 1000) -> None:
        self.ratio = ratio
        self.stock_left = stock

    def hourly_price(self, zone: str, spec: catalogue.Spec, at: datetime.datetime) -> Decimal:
        minutes = (at - T0).total_seconds() / 60
        return (spec.hourly_price * Decimal(self.ratio(minutes))).quantize(Decimal("0.0001"))

    def stock(self, zone: str) -> int:
        return self.stock_left

    def tick_seconds(self) -> float:
        return 300.0


@pytest.fixture
async def market_cluster() -> AsyncIterator[Callable[..., Any]]:
    started: list[tuple[Cluster, reclaiming.SpotReclaimer]] = []

    async def start(market: ScriptedMarket) -> tuple[Cluster, reclaiming.SpotReclaimer]:
        cluster = await Cluster(clock=clocks.FakeClock(T0), market=market).start()
        assert cluster.manager is not None
        reclaimer = reclaiming.SpotReclaimer(cluster.manager, market, clock=cluster.clock)
        await reclaimer.start()
        started.append((cluster, reclaimer))
        return cluster, reclaimer

    yield start
    for cluster, reclaimer in started:
        await reclaimer.stop()
        await cluster.stop()


async def advance_to(cluster: Cluster, minutes: float) -> None:
    """Move the clock to ``minutes`` after T0 a tick at a time, letting each
    tick's work finish."""
    target = T0 + datetime.timedelta(minutes=minutes)
    while cluster.clock.now() < target:
        step = min(MINUTE, (target - cluster.clock.now()).total_seconds())
        await cluster.clock.advance(step)
        await cluster.settle()


LIMITED = {
    "k8s.aliyun.com/eci-spot-strategy": "SpotWithPriceLimit",
    "k8s.aliyun.com/eci-spot-price-limit": "0.05",  # 2-4Gi on demand: 0.1114/h
}


async def test_reclaimed_after_protection_when_the_price_crosses_the_limit_with_notice_first(
    market_cluster: Any,
) -> None:
    # 0.0334/h until minute 30, then 0.0891/h: above the limit, inside protection.
    market = ScriptedMarket(lambda m: "0.3" if m < 30 else "0.8")
    cluster, _ = await market_cluster(market)
    await cluster.create_pod(pod_manifest("bid", annotations=LIMITED))
    pod = await cluster.wait_phase("bid", "Running")
    assert annotation(pod, "nodeless.dev/capacity-type") == "spot"
    assert annotation(pod, "nodeless.dev/price") == "0.0334"

    await advance_to(cluster, 59)
    pod = await cluster.must_pod("bid")
    assert phase_of(pod) == "Running"
    assert condition(pod, "ContainerInstanceCreated") is None  # protected: no notice
    assert await cluster.events_for("bid", "SpotToBeReleased") == []

    await advance_to(cluster, 60)  # protection ends on this tick: notice
    pod = await cluster.must_pod("bid")
    notice = condition(pod, "ContainerInstanceCreated")
    assert notice is not None and notice["reason"] == "SpotToBeReleased"
    assert notice["message"].startswith("Spot instance will be released in 3 minutes")
    assert "0.0891/h, above the limit of 0.05/h" in notice["message"]
    [warning] = await cluster.events_for("bid", "SpotToBeReleased")
    assert warning["type"] == "Warning"
    assert phase_of(pod) == "Running"

    await advance_to(cluster, 62)
    assert phase_of(await cluster.must_pod("bid")) == "Running"  # notice not over yet
    await advance_to(cluster, 63)

    async def reclaimed() -> dict[str, Any] | None:
        found = await cluster.must_pod("bid")
        return found if phase_of(found) == "Failed" else None

    pod = await wait_for(reclaimed, what="the pod Failed")
    assert pod["status"]["reason"] == "BidFailed"
    disruption = condition(pod, "DisruptionTarget")
    assert disruption is not None and disruption["reason"] == "BidFailed"
    record = await cluster.record("bid")
    assert record is not None and record["status"]["state"] == "Expired"
    # Billed at the locked price for the protected hour, then at the market's.
    intervals = record["status"]["billing"]["intervals"]
    assert [
        (i["state"], i["hourlyPrice"], i["start"][11:16], (i.get("end") or "")[11:16])
        for i in intervals
    ] == [
        ("Pending", "0.0334", "00:00", "00:00"),
        ("Running", "0.0334", "00:00", "01:00"),
        ("Running", "0.0891", "01:00", "01:03"),
        ("Terminating", "0.0891", "01:03", "01:03"),
    ]


async def test_a_reclaim_notice_dropped_by_a_staler_status_write_is_written_again(
    market_cluster: Any,
) -> None:
    # Above the limit from minute 5, no protection: notice then.
    market = ScriptedMarket(lambda m: "0.3" if m < 5 else "0.8")
    cluster, _ = await market_cluster(market)
    await cluster.create_pod(
        pod_manifest("bid", annotations={**LIMITED, "k8s.aliyun.com/eci-spot-duration": "0"})
    )
    await cluster.wait_phase("bid", "Running")
    await advance_to(cluster, 5)
    pod = await cluster.must_pod("bid")
    notice = condition(pod, "ContainerInstanceCreated")
    assert notice is not None and notice["reason"] == "SpotToBeReleased"
    # A writer that had not seen the notice writes the condition list whole
    # (as a merge patch does): the notice goes from the pod ...
    others = [c for c in pod["status"]["conditions"] if c["type"] != "ContainerInstanceCreated"]
    await cluster.client.patch(
        PODS,
        NAMESPACE,
        "bid",
        {"status": {"conditions": others}},
        patch_type="merge",
        subresource="status",
    )

    # ... and comes back: the reclaim's conditions follow the instance record.
    async def noticed() -> dict[str, Any] | None:
        return condition(await cluster.must_pod("bid"), "ContainerInstanceCreated")

    again = await wait_for(noticed, what="the notice written again")
    assert again["reason"] == "SpotToBeReleased"
    assert again["message"] == notice["message"]
    assert phase_of(await cluster.must_pod("bid")) == "Running"


async def test_a_price_under_the_limit_and_as_price_go_pods_are_never_reclaimed_for_price(
    market_cluster: Any,
) -> None:
    market = ScriptedMarket(lambda m: "0.3" if m < 70 else "0.4")  # 0.0446 < 0.05
    cluster, _ = await market_cluster(market)
    await cluster.create_pod(pod_manifest("under", annotations=LIMITED))
    go = {
        "k8s.aliyun.com/eci-spot-strategy": "SpotAsPriceGo",
        "k8s.aliyun.com/eci-spot-duration": "0",
    }
    await cluster.create_pod(pod_manifest("go", annotations=go))
    await cluster.wait_phase("under", "Running")
    await cluster.wait_phase("go", "Running")
    await advance_to(cluster, 90)
    for name in ("under", "go"):
        pod = await cluster.must_pod(name)
        assert phase_of(pod) == "Running", name
        assert condition(pod, "ContainerInstanceCreated") is None, name
    # No protection: the market price from the first tick (0.0334 to 0.0446 at 70).
    record = await cluster.record("go")
    assert record is not None
    intervals = record["status"]["billing"]["intervals"]
    assert [
        (i["hourlyPrice"], i["start"][11:16]) for i in intervals if i["state"] == "Running"
    ] == [
        ("0.0334", "00:00"),
        ("0.0446", "01:10"),
    ]


async def test_a_zone_out_of_spot_stock_reclaims_its_newest_instances(market_cluster: Any) -> None:
    market = ScriptedMarket(lambda m: "0.3", stock=3)
    cluster, _ = await market_cluster(market)
    go = {
        "k8s.aliyun.com/eci-spot-strategy": "SpotAsPriceGo",
        "k8s.aliyun.com/eci-spot-duration": "0",
        "k8s.aliyun.com/eci-vswitch": "zone-a",
    }
    for i in range(3):
        await cluster.create_pod(pod_manifest(f"s{i}", annotations=go))
        await cluster.wait_phase(f"s{i}", "Running")
        await cluster.clock.advance(1)
    market.stock_left = 1  # the zone's spare capacity shrinks
    await advance_to(cluster, 10)

    async def two_failed() -> list[str]:
        failed = [n for n in ("s0", "s1", "s2") if phase_of(await cluster.must_pod(n)) == "Failed"]
        return failed if len(failed) == 2 else []

    assert await wait_for(two_failed, what="two reclaimed") == ["s1", "s2"]
    assert phase_of(await cluster.must_pod("s0")) == "Running"


# --- workloads through reclaims ------------------------------------------------------------


@pytest.fixture
async def with_controllers(market_cluster: Any) -> AsyncIterator[Callable[..., Any]]:
    stops: list[Any] = []

    async def start(market: ScriptedMarket) -> Cluster:
        cluster, _ = await market_cluster(market)
        factory = informers.InformerFactory(cluster.client, clock=cluster.clock)
        running = [
            replicasets.ReplicaSetController(cluster.client, factory, clock=cluster.clock),
            jobs.JobController(cluster.client, factory, clock=cluster.clock),
        ]
        for controller in running:
            await controller.start()
        factory.start()
        await factory.wait_synced()
        stops.append((running, factory))
        return cluster

    yield start
    for running, factory in stops:
        for controller in running:
            await controller.stop()
        await factory.stop()


def template(name: str, command: list[str] | None = None) -> dict[str, Any]:
    manifest = pod_manifest(
        name, annotations={**LIMITED, "k8s.aliyun.com/eci-spot-duration": "0"}, command=command
    )
    return {
        "metadata": {"labels": {"app": name}, "annotations": manifest["metadata"]["annotations"]},
        "spec": manifest["spec"],
    }


async def test_a_replica_set_keeps_its_count_through_reclaims(with_controllers: Any) -> None:
    # Above the limit from minute 5 to 15, under it before and after.
    market = ScriptedMarket(lambda m: "0.8" if 5 <= m < 15 else "0.3")
    cluster = await with_controllers(market)
    await cluster.client.create(
        REPLICASETS,
        {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {"name": "web", "namespace": NAMESPACE},
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": {"app": "web"}},
                "template": template("web"),
            },
        },
    )

    async def running(count: int) -> list[dict[str, Any]]:
        pods = [
            p
            for p in await cluster.pods()
            if phase_of(p) == "Running" and p["metadata"]["labels"].get("app") == "web"
        ]
        return pods if len(pods) == count else []

    first = {p["metadata"]["name"] for p in await wait_for(lambda: running(3), what="3 running")}
    await advance_to(cluster, 9)  # reclaimed at 8 (notice at 5); replacements wait: price too high
    await advance_to(cluster, 20)
    now = {
        p["metadata"]["name"] for p in await wait_for(lambda: running(3), what="3 running again")
    }
    assert not first & now  # every one was reclaimed and replaced
    failed = [p for p in await cluster.pods() if phase_of(p) == "Failed"]
    assert {p["status"]["reason"] for p in failed} == {"BidFailed"}


async def test_a_job_finishes_all_completions_through_reclaims_without_counting_failures(
    with_controllers: Any,
) -> None:
    # Above the limit from minute 5 to 10: both first pods (8 minutes of work
    # each) are reclaimed at 8, and their replacements start at 10.
    market = ScriptedMarket(lambda m: "0.8" if 5 <= m < 10 else "0.3")
    cluster = await with_controllers(market)
    await cluster.client.create(
        JOBS,
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "batch", "namespace": NAMESPACE},
            "spec": {
                "completions": 2,
                "parallelism": 2,
                "backoffLimit": 1,
                "template": {
                    **template("batch", command=["sh", "-c", "sleep 480"]),
                    "spec": {
                        **template("batch", command=["sh", "-c", "sleep 480"])["spec"],
                        "restartPolicy": "Never",
                    },
                },
            },
        },
    )
    await advance_to(cluster, 30)

    async def done() -> dict[str, Any] | None:
        job = await cluster.client.get(JOBS, NAMESPACE, "batch")
        return job if job.get("status", {}).get("succeeded") == 2 else None

    job = await wait_for(done, what="2 completions")
    assert not job["status"].get("failed")
    reclaimed = [
        p for p in await cluster.pods() if (p.get("status") or {}).get("reason") == "BidFailed"
    ]
    assert len(reclaimed) == 2  # more than backoffLimit, yet the Job did not fail
