"""Watch semantics from the cache, and the discovery and OpenAPI documents."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from tests.unit.apiserver.conftest import Client, configmap

CONFIGMAPS = "/api/v1/namespaces/default/configmaps"


async def _watch(
    client: Client, params: dict[str, str], events: list[dict[str, Any]], until: int
) -> None:
    async with client.session.get(
        client.base + CONFIGMAPS, params={"watch": "1", **params}
    ) as resp:
        async for line in resp.content:
            events.append(orjson.loads(line))
            if len(events) >= until:
                return


async def test_watch_without_resource_version_starts_with_added_for_every_object(
    client: Client,
) -> None:
    await client.request("POST", CONFIGMAPS, configmap("a"))
    await client.request("POST", CONFIGMAPS, configmap("b"))
    events: list[dict[str, Any]] = []
    await asyncio.wait_for(_watch(client, {}, events, 2), 5)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "a"),
        ("ADDED", "b"),
    ]


async def test_watch_from_resource_version_sends_only_later_events_in_order(client: Client) -> None:
    await client.request("POST", CONFIGMAPS, configmap("old"))
    _, listing, _ = await client.request("GET", CONFIGMAPS)
    rv = listing["metadata"]["resourceVersion"]
    events: list[dict[str, Any]] = []
    task = asyncio.create_task(_watch(client, {"resourceVersion": rv}, events, 3))
    await asyncio.sleep(0.05)
    await client.request("POST", CONFIGMAPS, configmap("new"))
    await client.request(
        "PATCH",
        f"{CONFIGMAPS}/new",
        {"data": {"k": "v"}},
        content_type="application/merge-patch+json",
    )
    await client.request("DELETE", f"{CONFIGMAPS}/new")
    await asyncio.wait_for(task, 5)
    assert [e["type"] for e in events] == ["ADDED", "MODIFIED", "DELETED"]
    revisions = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert revisions == sorted(revisions) and revisions[0] > int(rv)


async def test_label_selector_watch_turns_relabels_into_added_and_deleted(client: Client) -> None:
    await client.request("POST", CONFIGMAPS, configmap("c"))
    _, listing, _ = await client.request("GET", CONFIGMAPS)
    events: list[dict[str, Any]] = []
    params = {
        "resourceVersion": listing["metadata"]["resourceVersion"],
        "labelSelector": "team=blue",
    }
    task = asyncio.create_task(_watch(client, params, events, 2))
    await asyncio.sleep(0.05)
    await client.request(
        "PATCH",
        f"{CONFIGMAPS}/c",
        {"metadata": {"labels": {"team": "blue"}}},
        content_type="application/merge-patch+json",
    )
    await client.request(
        "PATCH",
        f"{CONFIGMAPS}/c",
        {"metadata": {"labels": {"team": "red"}}},
        content_type="application/merge-patch+json",
    )
    await asyncio.wait_for(task, 5)
    assert [e["type"] for e in events] == ["ADDED", "DELETED"]


async def test_watch_from_too_old_revision_gets_one_expired_error(client: Client) -> None:
    events: list[dict[str, Any]] = []
    await asyncio.wait_for(_watch(client, {"resourceVersion": "1"}, events, 1), 5)
    assert events[0]["type"] == "ERROR"
    assert events[0]["object"]["code"] == 410 and events[0]["object"]["reason"] == "Expired"


async def test_send_initial_events_ends_with_annotated_bookmark(client: Client) -> None:
    await client.request("POST", CONFIGMAPS, configmap("a"))
    events: list[dict[str, Any]] = []
    params = {
        "sendInitialEvents": "true",
        "resourceVersionMatch": "NotOlderThan",
        "allowWatchBookmarks": "true",
    }
    await asyncio.wait_for(_watch(client, params, events, 2), 5)
    assert events[0]["type"] == "ADDED"
    assert events[1]["type"] == "BOOKMARK"
    assert events[1]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}


async def test_list_pages_with_limit_and_continue(client: Client) -> None:
    for i in range(5):
        await client.request("POST", CONFIGMAPS, configmap(f"cm-{i}"))
    names: list[str] = []
    token = ""
    pages = 0
    while True:
        params = {"limit": "2", **({"continue": token} if token else {})}
        _, page, _ = await client.request("GET", CONFIGMAPS, params=params)
        names += [i["metadata"]["name"] for i in page["items"]]
        pages += 1
        token = page["metadata"].get("continue", "")
        if not token:
            break
    assert names == [f"cm-{i}" for i in range(5)]
    assert pages == 3


async def test_empty_list_has_items_array(client: Client) -> None:
    _, page, _ = await client.request("GET", "/api/v1/namespaces/default/secrets")
    assert page["items"] == []
    assert page["kind"] == "SecretList"


async def test_table_list_has_upstream_pod_columns(client: Client) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }
    await client.request("POST", "/api/v1/namespaces/default/pods", pod)
    accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
    _, table, _ = await client.request(
        "GET", "/api/v1/namespaces/default/pods", headers={"Accept": accept}
    )
    assert table["kind"] == "Table"
    names = [c["name"] for c in table["columnDefinitions"]]
    assert names[:5] == ["Name", "Ready", "Status", "Restarts", "Age"]
    assert table["rows"][0]["cells"][:3] == ["p", "0/1", "Pending"]
    assert table["rows"][0]["object"]["kind"] == "PartialObjectMetadata"


async def test_aggregated_discovery_lists_eviction_and_scale(client: Client) -> None:
    accept = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"
    _, doc, resp = await client.request("GET", "/api", headers={"Accept": accept})
    assert (
        resp.headers["Content-Type"]
        == "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
    )
    pods = next(r for r in doc["items"][0]["versions"][0]["resources"] if r["resource"] == "pods")
    eviction = next(s for s in pods["subresources"] if s["subresource"] == "eviction")
    assert eviction["responseKind"] == {"group": "policy", "version": "v1", "kind": "Eviction"}
    _, doc, _ = await client.request("GET", "/apis", headers={"Accept": accept})
    apps = next(g for g in doc["items"] if g["metadata"]["name"] == "apps")
    deployments = next(
        r for r in apps["versions"][0]["resources"] if r["resource"] == "deployments"
    )
    scale = next(s for s in deployments["subresources"] if s["subresource"] == "scale")
    assert scale["responseKind"] == {"group": "autoscaling", "version": "v1", "kind": "Scale"}


async def test_legacy_discovery_when_not_asked_for_aggregated(client: Client) -> None:
    _, doc, _ = await client.request("GET", "/api")
    assert doc["kind"] == "APIVersions" and doc["versions"] == ["v1"]
    _, doc, _ = await client.request("GET", "/apis")
    autoscaling = next(g for g in doc["groups"] if g["name"] == "autoscaling")
    assert autoscaling["preferredVersion"]["version"] == "v2"


async def test_openapi_patch_operation_carries_gvk_and_field_validation(client: Client) -> None:
    _, root, _ = await client.request("GET", "/openapi/v3")
    url = root["paths"]["apis/apps/v1"]["serverRelativeURL"]
    _, doc, _ = await client.request("GET", url)
    patch = doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"]
    assert patch["x-kubernetes-group-version-kind"] == {
        "group": "apps",
        "version": "v1",
        "kind": "Deployment",
    }
    assert any(p["name"] == "fieldValidation" for p in patch["parameters"])
    assert "application/strategic-merge-patch+json" in patch["requestBody"]["content"]
    containers = doc["components"]["schemas"]["io.k8s.api.core.v1.PodSpec"]["properties"][
        "containers"
    ]
    assert containers["x-kubernetes-patch-merge-key"] == "name"
    assert containers["type"] == "array"


async def test_hpa_served_in_v1_and_v2_from_one_store(client: Client) -> None:
    hpa = {
        "apiVersion": "autoscaling/v1",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "web"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
            "minReplicas": 1,
            "maxReplicas": 5,
            "targetCPUUtilizationPercentage": 70,
        },
    }
    code, _, _ = await client.request(
        "POST", "/apis/autoscaling/v1/namespaces/default/horizontalpodautoscalers", hpa
    )
    assert code == 201
    _, v2, _ = await client.request(
        "GET", "/apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers/web"
    )
    assert v2["apiVersion"] == "autoscaling/v2"
    assert v2["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 70
    _, v1, _ = await client.request(
        "GET", "/apis/autoscaling/v1/namespaces/default/horizontalpodautoscalers/web"
    )
    assert v1["spec"]["targetCPUUtilizationPercentage"] == 70


async def test_core_events_are_served_as_events_k8s_io(client: Client) -> None:
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": "e1"},
        "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"},
        "reason": "Started",
        "message": "started it",
        "type": "Normal",
    }
    await client.request("POST", "/api/v1/namespaces/default/events", event)
    _, listing, _ = await client.request("GET", "/apis/events.k8s.io/v1/namespaces/default/events")
    assert listing["items"][0]["regarding"]["name"] == "p"
    assert listing["items"][0]["note"] == "started it"
    _, listing, _ = await client.request(
        "GET",
        "/api/v1/namespaces/default/events",
        params={"fieldSelector": "involvedObject.name=p,reason=Started"},
    )
    assert [e["metadata"]["name"] for e in listing["items"]] == ["e1"]
