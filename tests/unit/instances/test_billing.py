"""Per-second billing: the interval arithmetic on its own, and the ledger the
instance manager keeps on a fake clock — totals equal to the billed state
durations times the price, to the second, across a restart."""

from __future__ import annotations

import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp

from nodeless import clocks
from nodeless.client import clients
from nodeless.instances import managing
from nodeless.serverless import billing
from nodeless.storage import sqlite
from tests.unit.scheduler import NAMESPACE, PODS, Cluster, pod_manifest, wait_for

T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
BILLS = managing.BILLING_RECORDS
DEPLOYMENTS = clients.ResourceRef("apps", "v1", "deployments", True, "Deployment")


def at(seconds: float) -> str:
    return billing.format_time(T0 + datetime.timedelta(seconds=seconds))


def bill(
    namespace: str, pod: str, workload: str, *intervals: tuple[str, float, float | None, str]
) -> dict[str, Any]:
    return {
        "metadata": {"name": f"eci-{pod}", "labels": {"app": pod.split("-")[0]}},
        "spec": {
            "namespace": namespace,
            "podName": pod,
            "podUID": pod,
            "workload": workload,
            "capacityType": "on-demand",
            "currency": "USD",
        },
        "status": {
            "intervals": [
                {
                    "state": state,
                    "start": at(start),
                    **({"end": at(end)} if end is not None else {}),
                    "hourlyPrice": price,
                }
                for state, start, end, price in intervals
            ]
        },
    }


# --- the arithmetic ------------------------------------------------------------------------


def test_every_started_second_is_charged_and_clipping_happens_before_rounding() -> None:
    interval = billing.Interval(
        "Running", T0, T0 + datetime.timedelta(seconds=61.2), Decimal("0.36")
    )
    assert interval.seconds(T0) == 62
    assert interval.cost(T0) == Decimal(62) * Decimal("0.36") / 3600
    exact = billing.Interval("Running", T0, T0 + datetime.timedelta(seconds=60), Decimal("0.36"))
    assert exact.seconds(T0) == 60
    half = T0 + datetime.timedelta(seconds=30)
    assert exact.seconds(T0, since=half) == 30
    assert exact.seconds(T0, until=half) == 30
    assert exact.seconds(T0, since=T0 + datetime.timedelta(hours=1)) == 0
    # An open interval runs until now.
    running = billing.Interval("Running", T0, None, Decimal(1))
    assert running.seconds(T0 + datetime.timedelta(seconds=10)) == 10


def test_intervals_follow_the_states_an_instance_goes_through() -> None:
    intervals = billing.advance([], "Scheduling", False, at(0), "0.36")
    assert intervals == []
    intervals = billing.advance(intervals, "Pending", True, at(1), "0.36")
    intervals = billing.advance(intervals, "Pending", True, at(2), "0.36")  # no change
    intervals = billing.advance(intervals, "Running", True, at(5), "0.36")
    intervals = billing.advance(intervals, "Terminating", True, at(100), "0.36")
    intervals = billing.advance(intervals, "Succeeded", False, at(103), "0.36")
    assert [(i["state"], i["start"], i.get("end")) for i in intervals] == [
        ("Pending", at(1), at(5)),
        ("Running", at(5), at(100)),
        ("Terminating", at(100), at(103)),
    ]
    assert billing.totals(intervals, T0) == (102, Decimal(102) * Decimal("0.36") / 3600)
    still_open = billing.advance([], "Running", True, at(0), "1")
    assert billing.close(still_open, at(7))[0]["end"] == at(7)


def test_reports_group_by_namespace_workload_or_pod_most_expensive_first() -> None:
    bills = [
        bill("shop", "web-1", "Deployment/web", ("Running", 0, 3600, "0.36")),
        bill("shop", "web-2", "Deployment/web", ("Running", 0, 1800, "0.36")),
        bill("shop", "db-0", "StatefulSet/db", ("Running", 0, None, "0.72")),
        bill(
            "ops",
            "cron-1",
            "CronJob/backup",
            ("Pending", 0, 10, "0.18"),
            ("Running", 10, 70, "0.18"),
        ),
    ]
    now = T0 + datetime.timedelta(hours=1)
    by_namespace = billing.report(bills, "namespace", now)
    assert [(line.key, line.seconds, billing.money(line.cost)) for line in by_namespace] == [
        (("shop",), 3600 + 1800 + 3600, "1.260000"),
        (("ops",), 70, "0.003500"),
    ]
    by_workload = billing.report(bills, "workload", now)
    assert [line.key for line in by_workload] == [
        ("shop", "StatefulSet/db"),
        ("shop", "Deployment/web"),
        ("ops", "CronJob/backup"),
    ]
    assert len(by_workload[1].pods) == 2
    # The second half hour only.
    since = T0 + datetime.timedelta(minutes=30)
    web = billing.report(bills[:2], "workload", now, since=since)
    assert web[0].seconds == 1800


def test_prometheus_counters_per_namespace_workload_and_capacity() -> None:
    text = billing.prometheus(
        [
            bill("shop", "web-1", "Deployment/web", ("Running", 0, 3600, "0.36")),
            bill("shop", "db-0", "StatefulSet/db", ("Running", 0, None, "0.72")),
        ],
        T0 + datetime.timedelta(seconds=1000),
    )
    assert "# TYPE nodeless_cost_total counter" in text
    assert (
        'nodeless_cost_total{namespace="shop",workload="Deployment/web",'
        'capacity_type="on-demand",currency="USD"} 0.360000000' in text
    )
    assert (
        'nodeless_instance_seconds_total{namespace="shop",workload="StatefulSet/db",'
        'capacity_type="on-demand"} 1000' in text
    )
    assert 'nodeless_instances_billed{namespace="shop",capacity_type="on-demand"} 1' in text


def owned_by(api_version: str, kind: str, name: str) -> dict[str, Any]:
    return {
        "metadata": {
            "ownerReferences": [
                {"apiVersion": api_version, "kind": kind, "name": name, "controller": True}
            ]
        }
    }


async def test_a_pods_workload_is_the_top_of_its_owner_chain() -> None:
    objects = {
        ("replicasets", "hello-00001-deployment-5f4"): owned_by(
            "apps/v1", "Deployment", "hello-00001-deployment"
        ),
        ("deployments", "hello-00001-deployment"): owned_by(
            "serving.knative.dev/v1", "Revision", "hello-00001"
        ),
        ("revisions", "hello-00001"): owned_by("serving.knative.dev/v1", "Service", "hello"),
        ("services", "hello"): {"metadata": {}},
        ("replicasets", "orphan"): {"metadata": {}},
    }
    fetched: list[str] = []

    async def fetch(lookup: tuple[str, str, str, str], name: str) -> dict[str, Any] | None:
        fetched.append(f"{lookup[2]}/{name}")
        return objects.get((lookup[2], name))

    pod_owner = {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "name": "hello-00001-deployment-5f4",
    }
    top = await billing.top_owner(pod_owner, fetch)
    assert billing.workload_name(top) == "Service.serving.knative.dev/hello"
    assert fetched[-1] == "services/hello"
    orphan = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "orphan"}
    assert billing.workload_name(await billing.top_owner(orphan, fetch)) == "ReplicaSet/orphan"
    gone = {"apiVersion": "batch/v1", "kind": "Job", "name": "gone"}
    assert billing.workload_name(await billing.top_owner(gone, fetch)) == "Job/gone"
    # Kinds outside the chain are the top without being read.
    fetched.clear()
    sts = {"apiVersion": "example.com/v1", "kind": "Database", "name": "db"}
    assert billing.workload_name(await billing.top_owner(sts, fetch)) == "Database.example.com/db"
    assert fetched == []
    assert billing.workload_name(await billing.top_owner(None, fetch)) == ""


# --- the ledger ----------------------------------------------------------------------------


async def bills_of(cluster: Cluster) -> list[dict[str, Any]]:
    return (await cluster.client.list(BILLS)).items


async def test_a_pods_bill_is_its_billed_time_times_its_price_to_the_second(tmp_path: Path) -> None:
    cluster = await Cluster(clock=clocks.FakeClock(T0)).start()
    try:
        await cluster.create_pod(pod_manifest("web", command=["sleep", "infinity"]))
        pod = await cluster.wait_phase("web", "Running")
        record = await cluster.record("web")
        assert record is not None
        price = Decimal(record["spec"]["hourlyPrice"])
        started = record["status"]["billing"]["intervals"][0]["start"]
        assert started == at(0)
        await cluster.clock.advance(100)
        await cluster.client.delete(PODS, NAMESPACE, "web")
        await cluster.wait_gone("web")

        async def billed() -> list[dict[str, Any]]:
            return await bills_of(cluster)

        [kept] = await wait_for(billed, what="a BillingRecord")
        seconds = sum(
            billing.Interval.from_object(i).seconds(T0)  # type: ignore[union-attr]
            for i in kept["status"]["intervals"]
        )
        assert seconds == 100
        assert kept["status"]["seconds"] == 100
        assert Decimal(kept["status"]["cost"]) == (Decimal(100) * price / 3600).quantize(
            Decimal("0.000001")
        )
        assert (
            kept["metadata"]["name"] == pod["metadata"]["annotations"]["nodeless.dev/instance-id"]
        )
        assert kept["spec"]["namespace"] == NAMESPACE
        assert kept["metadata"]["labels"][billing.POD_LABEL] == "web"

        async def billed_event() -> list[dict[str, Any]]:
            return await cluster.events_for("web", "InstanceBilled")

        # the Event is written after the record, by the recorder's own task
        events = await wait_for(billed_event, what="an InstanceBilled Event")
        assert "billed 100 s" in events[0]["message"]
    finally:
        await cluster.stop()


async def test_billing_continues_across_a_restart_without_losing_or_doubling_a_second(
    tmp_path: Path,
) -> None:
    db = tmp_path / "state.db"
    clock = clocks.FakeClock(T0)
    first = await Cluster(backend=sqlite.SqliteBackend(db), clock=clock).start()
    try:
        await first.create_pod(pod_manifest("web", command=["sleep", "infinity"]))
        await first.wait_phase("web", "Running")
        await first.settle()
        await clock.advance(50)
    finally:
        await first.stop()
    await clock.advance(10)  # down for ten seconds: the instance kept running
    second = await Cluster(backend=sqlite.SqliteBackend(db), clock=clock).start()
    try:
        await second.wait_phase("web", "Running")
        await second.settle()
        await clock.advance(40)
        await second.client.delete(PODS, NAMESPACE, "web")
        await second.wait_gone("web")

        async def billed() -> list[dict[str, Any]]:
            return await bills_of(second)

        [kept] = await wait_for(billed, what="a BillingRecord")
        assert kept["status"]["seconds"] == 100
        running = [i for i in kept["status"]["intervals"] if i["state"] == "Running"]
        assert running[0]["start"] == at(0)
    finally:
        await second.stop()


async def test_metrics_count_running_and_ended_instances(tmp_path: Path) -> None:
    cluster = await Cluster(clock=clocks.FakeClock(T0)).start()
    try:
        for name in ("a", "b"):
            await cluster.create_pod(pod_manifest(name, command=["sleep", "infinity"]))
            await cluster.wait_phase(name, "Running")
        await cluster.clock.advance(30)
        await cluster.client.delete(PODS, NAMESPACE, "a")
        await cluster.wait_gone("a")
        await wait_for(lambda: bills_of(cluster), what="a's bill")
        await cluster.clock.advance(30)
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{cluster.server.url}/metrics") as response,
        ):
            assert response.status == 200
            assert response.content_type == "text/plain"
            metrics = await response.text()
        seconds = [
            line
            for line in metrics.splitlines()
            if line.startswith("nodeless_instance_seconds_total")
        ]
        # a: 30 s, ended; b: 60 s and counting, both bare pods of the namespace.
        assert [line.rsplit(" ", 1)[1] for line in seconds] == ["30", "60"]
        assert (
            f'nodeless_instances_billed{{namespace="{NAMESPACE}",capacity_type="on-demand"}} 1'
            in metrics
        )
    finally:
        await cluster.stop()
