"""metrics.k8s.io/v1beta1 on the in-process API: discovered as metrics-server's
is, PodMetrics and NodeMetrics built from the registered source's samples
(nanocores, kibibytes), label selectors, get and list, no writes or watch."""

from __future__ import annotations

import datetime
from typing import Any

from nodeless.apiserver import metrics
from tests.unit.apiserver.conftest import Client

SAMPLED = datetime.datetime(2026, 11, 26, 12, 0, 0, tzinfo=datetime.UTC)
BASE = "/apis/metrics.k8s.io/v1beta1"


def pod(name: str, namespace: str, node: str, **labels: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"nodeName": node},
    }


def source(*usages: metrics.PodUsage) -> metrics.MetricsSource:
    async def read() -> list[metrics.PodUsage]:
        return list(usages)

    return read


WEB = metrics.PodUsage(
    pod("web", "default", "nodeless-zone-a", app="web"),
    SAMPLED,
    10.5,
    (
        metrics.ContainerUsage("app", 250_000_000, 64 * 2**20),
        metrics.ContainerUsage("sidecar", 1_000_000, 8 * 2**20),
    ),
)
DB = metrics.PodUsage(
    pod("db", "data", "nodeless-zone-a", app="db"),
    SAMPLED,
    10,
    (metrics.ContainerUsage("main", 500_000_000, 512 * 2**20),),
)


async def test_the_group_is_discovered_with_pods_and_nodes(client: Client) -> None:
    status, groups, _ = await client.request("GET", "/apis")
    assert status == 200
    assert "metrics.k8s.io" in [g["name"] for g in groups["groups"]]

    status, resources, _ = await client.request("GET", BASE)

    assert status == 200
    found = {(r["name"], r["kind"], r["namespaced"]) for r in resources["resources"]}
    assert found == {("pods", "PodMetrics", True), ("nodes", "NodeMetrics", False)}


async def test_pod_metrics_are_listed_per_namespace_with_label_selectors(client: Client) -> None:
    client.server.api.metrics_source = source(WEB, DB)

    _, everywhere, _ = await client.request("GET", f"{BASE}/pods")
    _, selected, _ = await client.request(
        "GET", f"{BASE}/namespaces/default/pods", params={"labelSelector": "app=web"}
    )
    _, none, _ = await client.request(
        "GET", f"{BASE}/namespaces/default/pods", params={"labelSelector": "app=db"}
    )
    status, one, _ = await client.request("GET", f"{BASE}/namespaces/data/pods/db")

    assert everywhere["kind"] == "PodMetricsList"
    assert [i["metadata"]["name"] for i in everywhere["items"]] == ["web", "db"]
    [web] = selected["items"]
    assert web["apiVersion"] == "metrics.k8s.io/v1beta1"
    assert web["timestamp"] == "2026-11-26T12:00:00Z" and web["window"] == "10.5s"
    assert web["containers"] == [
        {"name": "app", "usage": {"cpu": "250000000n", "memory": "65536Ki"}},
        {"name": "sidecar", "usage": {"cpu": "1000000n", "memory": "8192Ki"}},
    ]
    assert web["metadata"]["labels"] == {"app": "web"}
    assert none["items"] == []
    assert status == 200 and one["kind"] == "PodMetrics"


async def test_a_pod_without_a_sample_is_not_found(client: Client) -> None:
    client.server.api.metrics_source = source(WEB)

    status, body, _ = await client.request("GET", f"{BASE}/namespaces/default/pods/gone")

    assert status == 404
    assert body["message"] == 'pods.metrics.k8s.io "gone" not found'


async def test_node_metrics_sum_the_usage_of_the_nodes_pods(client: Client) -> None:
    client.server.api.metrics_source = source(WEB, DB)
    for name in ("nodeless-zone-a", "nodeless-zone-b"):
        await client.request(
            "POST",
            "/api/v1/nodes",
            {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}},
        )

    _, listed, _ = await client.request("GET", f"{BASE}/nodes")
    status, idle, _ = await client.request("GET", f"{BASE}/nodes/nodeless-zone-b")

    usage = {i["metadata"]["name"]: i["usage"] for i in listed["items"]}
    assert usage == {
        "nodeless-zone-a": {"cpu": "751000000n", "memory": f"{(64 + 8 + 512) * 1024}Ki"},
        "nodeless-zone-b": {"cpu": "0n", "memory": "0Ki"},
    }
    assert status == 200 and idle["kind"] == "NodeMetrics"


async def test_metrics_cannot_be_written_or_watched(client: Client) -> None:
    client.server.api.metrics_source = source(WEB)

    posted, _, _ = await client.request("POST", f"{BASE}/namespaces/default/pods", {})
    watched, _, _ = await client.request("GET", f"{BASE}/pods", params={"watch": "true"})

    assert (posted, watched) == (405, 405)


async def test_without_a_source_there_are_no_samples(client: Client) -> None:
    status, body, _ = await client.request("GET", f"{BASE}/pods")

    assert (status, body["items"]) == (200, [])


def test_windows_print_as_go_durations_as_metrics_server_does() -> None:
    long = metrics.PodUsage(pod("web", "default", "n"), SAMPLED, 90.25, ())

    assert metrics.pod_metrics(long, SAMPLED)["window"] == "1m30.25s"
    assert metrics.pod_metrics(WEB, SAMPLED)["window"] == "10.5s"
