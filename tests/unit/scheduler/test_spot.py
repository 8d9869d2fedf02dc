"""Spot capacity: the market's prices, and the scheduler buying spot at the
market price or within a pod's limit, falling back to on-demand or waiting
(Pending, saying why) when it cannot — on a fake clock."""

from __future__ import annotations

import datetime
from decimal import Decimal
from typing import Any

import pytest

from nodeless import clocks
from nodeless.serverless import catalogue, spotmarket
from tests.unit.scheduler import NAMESPACE, PODS, Cluster, annotation, pod_manifest, wait_for

T0 = datetime.datetime(2026, 3, 1, tzinfo=datetime.UTC)
SPECS = catalogue.Catalogue.load()
SPEC = SPECS.find("2-4Gi")
assert SPEC is not None


def spot(strategy: str = "SpotAsPriceGo", **more: str) -> dict[str, str]:
    return {"k8s.aliyun.com/eci-spot-strategy": strategy, **more}


# --- the market ------------------------------------------------------------------------------


def test_the_market_is_the_same_for_the_same_seed_and_moves_within_its_band() -> None:
    one, same, other = (
        spotmarket.SpotMarket.load(),
        spotmarket.SpotMarket.load(),
        spotmarket.SpotMarket.load(seed=99),
    )
    moments = [T0 + datetime.timedelta(minutes=5 * i) for i in range(2000)]
    prices = [one.hourly_price("zone-a", SPEC, t) for t in moments]
    assert prices == [same.hourly_price("zone-a", SPEC, t) for t in moments]
    assert prices != [other.hourly_price("zone-a", SPEC, t) for t in moments]
    ratios = [p / SPEC.hourly_price for p in prices]
    assert Decimal("0.099") <= min(ratios) and max(ratios) <= Decimal("0.701")
    assert len(set(prices)) > 100  # it moves
    # Within a tick the price holds; zones differ.
    assert one.hourly_price("zone-a", SPEC, T0) == one.hourly_price(
        "zone-a", SPEC, T0 + datetime.timedelta(seconds=299)
    )
    assert prices != [one.hourly_price("zone-b", SPEC, t) for t in moments]


def test_stock_and_means_are_configured_per_zone() -> None:
    market = spotmarket.SpotMarket(
        spotmarket.MarketSettings(
            zone_stock={"zone-b": 2}, zone_mean={"zone-b": Decimal("0.6")}, volatility=Decimal(0)
        )
    )
    assert market.stock("zone-a") == 1000
    assert market.stock("zone-b") == 2
    assert market.ratio("zone-b", SPEC, T0) == Decimal("0.6")
    assert market.ratio("zone-a", SPEC, T0) == Decimal("0.30")


# --- buying it -------------------------------------------------------------------------------


class FixedMarket:
    """A feed whose price and stock a test sets."""

    def __init__(self, ratio: str, stock: int = 1000) -> None:
        self.ratio = Decimal(ratio)
        self.stock_left = stock

    def hourly_price(self, zone: str, spec: catalogue.Spec, at: datetime.datetime) -> Decimal:
        return (spec.hourly_price * self.ratio).quantize(Decimal("0.0001"))

    def stock(self, zone: str) -> int:
        return self.stock_left

    def tick_seconds(self) -> float:
        return 300.0


@pytest.fixture
async def started() -> Any:
    clusters: list[Cluster] = []

    async def start(market: Any) -> Cluster:
        cluster = await Cluster(clock=clocks.FakeClock(T0), market=market).start()
        clusters.append(cluster)
        return cluster

    yield start
    for cluster in clusters:
        await cluster.stop()


async def test_a_spot_pod_runs_on_spot_at_the_market_price_and_is_billed_at_it(
    started: Any,
) -> None:
    market = spotmarket.SpotMarket.load()
    cluster: Cluster = await started(market)
    await cluster.create_pod(pod_manifest("cheap", annotations=spot()))
    pod = await cluster.wait_phase("cheap", "Running")
    zone = annotation(pod, "nodeless.dev/zone")
    assert zone is not None
    expected = market.hourly_price(zone, SPEC, T0)
    assert annotation(pod, "nodeless.dev/capacity-type") == "spot"
    assert annotation(pod, "nodeless.dev/price") == str(expected)
    assert expected < SPEC.hourly_price
    record = await cluster.record("cheap")
    assert record is not None
    assert record["spec"]["capacityType"] == "spot"
    assert record["status"]["billing"]["intervals"][0]["hourlyPrice"] == str(expected)
    [scheduled] = await cluster.events_for("cheap", "Scheduled")
    assert f"spot, {expected}/h" in scheduled["message"]


async def test_a_price_above_the_limit_waits_unless_the_pod_falls_back(started: Any) -> None:
    cluster: Cluster = await started(FixedMarket("0.5"))  # 2-4Gi at 0.0557/h
    limited = spot("SpotWithPriceLimit", **{"k8s.aliyun.com/eci-spot-price-limit": "0.05"})
    await cluster.create_pod(pod_manifest("capped", annotations=limited))

    async def failed() -> list[dict[str, Any]]:
        return await cluster.events_for("capped", "FailedScheduling")

    [event] = await wait_for(failed, what="FailedScheduling")
    assert "0.0557/h, above the pod's limit of 0.05/h" in event["message"]
    assert "no spot-fallback" in event["message"]
    assert (await cluster.must_pod("capped"))["spec"].get("nodeName") is None

    falling_back = {**limited, "k8s.aliyun.com/eci-spot-fallback": "true"}
    await cluster.create_pod(pod_manifest("fallback", annotations=falling_back))
    pod = await cluster.wait_phase("fallback", "Running")
    assert annotation(pod, "nodeless.dev/capacity-type") == "on-demand"
    assert annotation(pod, "nodeless.dev/price") == str(SPEC.hourly_price)
    [scheduled] = await cluster.events_for("fallback", "Scheduled")
    assert "on demand because the spot price" in scheduled["message"]

    within = spot("SpotWithPriceLimit", **{"k8s.aliyun.com/eci-spot-price-limit": "0.06"})
    await cluster.create_pod(pod_manifest("within", annotations=within))
    pod = await cluster.wait_phase("within", "Running")
    assert annotation(pod, "nodeless.dev/capacity-type") == "spot"
    assert annotation(pod, "nodeless.dev/price") == "0.0557"


async def test_spot_stock_runs_out_and_frees_again(started: Any) -> None:
    cluster: Cluster = await started(FixedMarket("0.3", stock=2))
    zone_a = {"k8s.aliyun.com/eci-vswitch": "zone-a"}
    for name in ("s1", "s2", "s3"):
        await cluster.create_pod(pod_manifest(name, annotations={**spot(), **zone_a}))
    await cluster.wait_phase("s1", "Running")
    await cluster.wait_phase("s2", "Running")

    async def failed() -> list[dict[str, Any]]:
        return await cluster.events_for("s3", "FailedScheduling")

    [event] = await wait_for(failed, what="FailedScheduling for s3")
    assert "zone zone-a has no spot capacity left" in event["message"]
    # On-demand pods are not held back by spot stock.
    await cluster.create_pod(pod_manifest("regular", annotations=zone_a))
    await cluster.wait_phase("regular", "Running")
    await cluster.client.delete(PODS, NAMESPACE, "s1")
    await cluster.wait_gone("s1")
    pod = await cluster.wait_phase("s3", "Running")
    assert annotation(pod, "nodeless.dev/capacity-type") == "spot"
