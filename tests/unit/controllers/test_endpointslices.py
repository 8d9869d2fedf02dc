"""EndpointSlices and Endpoints for Services, against a whole in-process
cluster, plus the slice packing rules on their own."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import AsyncIterator
from typing import Any

import pytest

from nodeless import clocks
from nodeless.client import informers
from nodeless.controllers import endpointslices, garbagecollection
from tests.unit.controllers.conftest import Stack

SERVICES = endpointslices.SERVICES
PODS = endpointslices.PODS
SLICES = endpointslices.ENDPOINT_SLICES
ENDPOINTS = endpointslices.ENDPOINTS


Controllers = tuple[endpointslices.EndpointSliceController, endpointslices.EndpointsController]


@pytest.fixture
async def controllers(stack: Stack) -> AsyncIterator[Controllers]:
    """Both endpoint controllers, and the garbage collector that removes the
    slices of deleted Services."""
    factory = informers.InformerFactory(stack.client)
    slices = endpointslices.EndpointSliceController(stack.client, factory, recorder=stack.recorder)
    legacy = endpointslices.EndpointsController(stack.client, factory, recorder=stack.recorder)
    gc = garbagecollection.GarbageCollectorController(
        stack.client, factory, recorder=stack.recorder
    )
    for controller in (slices, legacy, gc):
        await controller.start()
    try:
        yield slices, legacy
    finally:
        for controller in (slices, legacy, gc):
            await controller.stop()
        await factory.stop()


def web_pod(
    name: str, *, ready: bool = True, http_port: int = 8080, app: str = "web"
) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "c",
        "image": "busybox",
        "command": ["sleep", "3600"],
        "ports": [{"name": "http", "containerPort": http_port}],
    }
    if not ready:
        # The simulated provider keeps the container unready until the delay passes.
        container["readinessProbe"] = {
            "exec": {"command": ["true"]},
            "initialDelaySeconds": 3600,
        }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": app}},
        "spec": {"containers": [container]},
    }


def service(name: str = "web", **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "selector": {"app": "web"},
        "ports": [
            {"name": "http", "port": 80, "targetPort": "http"},
            {"name": "metrics", "port": 9090, "targetPort": 9091},
        ],
    }
    body.update(spec)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "default", "labels": {"tier": "front"}},
        "spec": body,
    }


async def running(stack: Stack, *names: str) -> dict[str, dict[str, Any]]:
    async def check() -> dict[str, dict[str, Any]] | None:
        pods = {p["metadata"]["name"]: p for p in await stack.pods("default")}
        wanted = {n: pods.get(n) for n in names}
        if all(
            p and p["status"].get("phase") == "Running" and p["status"].get("podIP")
            for p in wanted.values()
        ):
            return {n: p for n, p in wanted.items() if p}
        return None

    found: dict[str, dict[str, Any]] = await stack.wait_for(check)
    return found


async def slices_of(stack: Stack, name: str) -> list[dict[str, Any]]:
    return (
        await stack.client.list(
            SLICES, "default", label_selector=f"kubernetes.io/service-name={name}"
        )
    ).items


def endpoints_by_pod(slices: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {e["targetRef"]["name"]: e for s in slices for e in s["endpoints"]}


async def test_a_slice_lists_ready_pods_with_named_target_ports_resolved(
    stack: Stack, controllers: Controllers
) -> None:
    svc = await stack.client.create(SERVICES, service())
    for name in ("web-1", "web-2", "web-3"):
        await stack.client.create(PODS, web_pod(name))
    await stack.client.create(PODS, web_pod("other", app="other"))
    pods = await running(stack, "web-1", "web-2", "web-3")

    async def three_ready() -> list[dict[str, Any]] | None:
        slices = await slices_of(stack, "web")
        eps = endpoints_by_pod(slices)
        return (
            slices
            if len(eps) == 3 and all(e["conditions"]["ready"] for e in eps.values())
            else None
        )

    slices = await stack.wait_for(three_ready)
    assert len(slices) == 1
    (slice_,) = slices
    meta = slice_["metadata"]
    assert meta["name"].startswith("web-")
    assert meta["labels"] == {
        "tier": "front",
        "kubernetes.io/service-name": "web",
        "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
    }
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "name": "web",
            "uid": svc["metadata"]["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert slice_["addressType"] == "IPv4"
    assert sorted(slice_["ports"], key=lambda p: p["name"]) == [
        {"name": "http", "port": 8080, "protocol": "TCP"},
        {"name": "metrics", "port": 9091, "protocol": "TCP"},
    ]
    for name, endpoint in endpoints_by_pod(slices).items():
        pod = pods[name]
        assert endpoint["addresses"] == [pod["status"]["podIP"]]
        assert endpoint["conditions"] == {"ready": True, "serving": True, "terminating": False}
        assert endpoint["targetRef"] == {
            "kind": "Pod",
            "namespace": "default",
            "name": name,
            "uid": pod["metadata"]["uid"],
        }
        assert endpoint["nodeName"] == pod["spec"]["nodeName"]
        assert endpoint["zone"] == pod["spec"]["nodeName"].removeprefix("nodeless-")


async def test_pods_whose_named_port_differs_land_in_separate_slices(
    stack: Stack, controllers: Controllers
) -> None:
    await stack.client.create(
        SERVICES, service(ports=[{"name": "http", "port": 80, "targetPort": "http"}])
    )
    await stack.client.create(PODS, web_pod("web-1", http_port=8080))
    await stack.client.create(PODS, web_pod("web-2", http_port=8081))
    await running(stack, "web-1", "web-2")

    async def two_slices() -> list[dict[str, Any]] | None:
        slices = await slices_of(stack, "web")
        return slices if len(endpoints_by_pod(slices)) == 2 else None

    slices = await stack.wait_for(two_slices)
    ports = {s["endpoints"][0]["targetRef"]["name"]: s["ports"] for s in slices}
    assert ports == {
        "web-1": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "web-2": [{"name": "http", "port": 8081, "protocol": "TCP"}],
    }


async def test_a_pod_that_is_not_ready_is_listed_not_ready_in_slices_and_endpoints(
    stack: Stack, controllers: Controllers
) -> None:
    await stack.client.create(SERVICES, service())
    await stack.client.create(PODS, web_pod("web-1"))
    await stack.client.create(PODS, web_pod("slow", ready=False))
    pods = await running(stack, "web-1", "slow")

    async def both_listed() -> dict[str, dict[str, Any]] | None:
        eps = endpoints_by_pod(await slices_of(stack, "web"))
        return (
            eps if set(eps) == {"web-1", "slow"} and eps["web-1"]["conditions"]["ready"] else None
        )

    eps = await stack.wait_for(both_listed)
    assert eps["slow"]["conditions"] == {"ready": False, "serving": False, "terminating": False}

    async def legacy() -> dict[str, Any] | None:
        found = (
            await stack.client.list(ENDPOINTS, "default", field_selector="metadata.name=web")
        ).items
        return found[0] if found and found[0].get("subsets") else None

    endpoints = await stack.wait_for(legacy)
    assert endpoints["metadata"]["labels"] == {
        "tier": "front",
        "endpoints.kubernetes.io/managed-by": "endpoint-controller",
    }
    (subset,) = endpoints["subsets"]
    assert [a["targetRef"]["name"] for a in subset["addresses"]] == ["web-1"]
    assert subset["addresses"][0]["ip"] == pods["web-1"]["status"]["podIP"]
    assert subset["addresses"][0]["nodeName"] == pods["web-1"]["spec"]["nodeName"]
    assert [a["targetRef"]["name"] for a in subset["notReadyAddresses"]] == ["slow"]
    assert subset["ports"] == [
        {"name": "http", "port": 8080, "protocol": "TCP"},
        {"name": "metrics", "port": 9091, "protocol": "TCP"},
    ]


async def test_publishing_not_ready_addresses_makes_unready_pods_ready(
    stack: Stack, controllers: Controllers
) -> None:
    await stack.client.create(SERVICES, service(publishNotReadyAddresses=True, clusterIP="None"))
    await stack.client.create(PODS, web_pod("slow", ready=False))
    await running(stack, "slow")

    async def listed() -> list[dict[str, Any]] | None:
        slices = await slices_of(stack, "web")
        return slices if "slow" in endpoints_by_pod(slices) else None

    slices = await stack.wait_for(listed)
    assert endpoints_by_pod(slices)["slow"]["conditions"] == {
        "ready": True,
        "serving": False,
        "terminating": False,
    }
    assert slices[0]["metadata"]["labels"]["service.kubernetes.io/headless"] == ""

    async def legacy() -> dict[str, Any] | None:
        found = await stack.client.list(ENDPOINTS, "default", field_selector="metadata.name=web")
        return found.items[0] if found.items and found.items[0].get("subsets") else None

    (subset,) = (await stack.wait_for(legacy))["subsets"]
    assert [a["targetRef"]["name"] for a in subset["addresses"]] == ["slow"]
    assert "notReadyAddresses" not in subset


async def test_a_service_selecting_nothing_gets_an_empty_placeholder_slice(
    stack: Stack, controllers: Controllers
) -> None:
    await stack.client.create(SERVICES, service(selector={"app": "nobody"}))

    async def placeholder() -> list[dict[str, Any]] | None:
        return await slices_of(stack, "web") or None

    (slice_,) = await stack.wait_for(placeholder)
    assert slice_["endpoints"] == []
    assert not slice_.get("ports")


async def test_a_service_without_selector_is_left_alone(
    stack: Stack,
    controllers: tuple[endpointslices.EndpointSliceController, endpointslices.EndpointsController],
) -> None:
    slices, legacy = controllers
    await stack.client.create(SERVICES, service(selector=None))

    async def cached() -> bool:
        return (
            slices.services.get("default/web") is not None
            and legacy.services.get("default/web") is not None
        )

    await stack.wait_for(cached)
    await slices.sync("default/web")
    await legacy.sync("default/web")

    assert await slices_of(stack, "web") == []
    found = await stack.client.list(ENDPOINTS, "default", field_selector="metadata.name=web")
    assert found.items == []


async def test_deleting_a_service_removes_its_slices_and_endpoints(
    stack: Stack, controllers: Controllers
) -> None:
    await stack.client.create(SERVICES, service())
    await stack.client.create(PODS, web_pod("web-1"))
    await running(stack, "web-1")

    async def published() -> bool:
        legacy = await stack.client.list(ENDPOINTS, "default", field_selector="metadata.name=web")
        return bool(await slices_of(stack, "web")) and bool(legacy.items)

    await stack.wait_for(published)

    await stack.client.delete(SERVICES, "default", "web")

    async def withdrawn() -> bool:
        legacy = await stack.client.list(ENDPOINTS, "default", field_selector="metadata.name=web")
        return not await slices_of(stack, "web") and not legacy.items

    await stack.wait_for(withdrawn)


# --- packing, without a cluster ---------------------------------------------------------


def fake_pod(index: int, *, ready: bool = True) -> dict[str, Any]:
    return {
        "metadata": {
            "name": f"p-{index:03d}",
            "namespace": "default",
            "uid": f"uid-{index}",
            "labels": {"app": "web"},
        },
        "spec": {"containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 8080}]}]},
        "status": {
            "phase": "Running",
            "podIP": f"10.0.{index // 250}.{index % 250 + 1}",
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def fake_service() -> dict[str, Any]:
    svc = service()
    svc["metadata"]["uid"] = "svc-uid"
    return svc


def test_slices_hold_at_most_a_hundred_endpoints_and_keep_endpoints_in_place() -> None:
    svc = fake_service()
    pods = [fake_pod(i) for i in range(250)]
    plan = endpointslices.plan_slices(svc, endpointslices.desired_slice_groups(svc, pods), [])
    assert [len(s["endpoints"]) for s in plan.create] == [100, 100, 50]

    existing = []
    for i, created in enumerate(plan.create):
        created["metadata"].update(name=f"web-{i}", uid=f"slice-{i}")
        existing.append(created)
    # One pod goes and a new one comes: only the slice with room changes.
    fewer = [p for p in pods if p["metadata"]["name"] != "p-010"] + [fake_pod(300)]
    again = endpointslices.plan_slices(
        svc, endpointslices.desired_slice_groups(svc, fewer), existing
    )
    assert again.create == [] and again.delete == []
    assert [s["metadata"]["name"] for s in again.update] == ["web-0"]
    names = [e["targetRef"]["name"] for e in again.update[0]["endpoints"]]
    assert "p-010" not in names and names[-1] == "p-300" and len(names) == 100


def test_pods_without_an_ip_and_finished_pods_are_skipped() -> None:
    svc = fake_service()
    no_ip = fake_pod(1)
    del no_ip["status"]["podIP"]
    done = fake_pod(2)
    done["status"]["phase"] = "Succeeded"
    groups = endpointslices.desired_slice_groups(svc, [no_ip, done, fake_pod(3)])
    names = [e["targetRef"]["name"] for g in groups.values() for e in g.endpoints]
    assert names == ["p-003"]
    subsets, truncated = endpointslices.endpoints_subsets(svc, [no_ip, done])
    assert subsets == [] and not truncated


def test_terminating_pods_stay_in_slices_but_leave_endpoints() -> None:
    svc = fake_service()
    leaving = fake_pod(1)
    leaving["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    (group,) = endpointslices.desired_slice_groups(svc, [leaving]).values()
    assert group.endpoints[0]["conditions"] == {
        "ready": False,
        "serving": True,
        "terminating": True,
    }
    subsets, _ = endpointslices.endpoints_subsets(svc, [leaving])
    assert subsets == []


def test_a_named_port_missing_from_a_pod_is_left_out_of_its_ports() -> None:
    svc = fake_service()
    bare = fake_pod(1)
    bare["spec"]["containers"][0]["ports"] = []
    (group,) = endpointslices.desired_slice_groups(svc, [bare]).values()
    assert group.ports == [{"name": "metrics", "port": 9091, "protocol": "TCP"}]


# --- a selector that matches nothing -----------------------------------------------------

EVENTS = endpointslices.clients.ResourceRef("", "v1", "events", True, "Event")
DEPLOYMENTS = endpointslices.WORKLOAD_TEMPLATES[0][0]


async def test_a_selector_matching_no_pod_and_no_template_is_a_warning_once_past_its_grace(
    stack: Stack,
) -> None:
    # A clock a minute ahead: every Service is already past its grace period.
    clock = clocks.FakeClock(datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=1))
    factory = informers.InformerFactory(stack.client)
    controller = endpointslices.EndpointSliceController(
        stack.client, factory, clock=clock, recorder=stack.recorder
    )
    await controller.start()
    try:
        # A Deployment at zero replicas still matches by its template.
        await stack.client.create(
            DEPLOYMENTS,
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "sleepy", "namespace": "default"},
                "spec": {
                    "replicas": 0,
                    "selector": {"matchLabels": {"app": "sleepy"}},
                    "template": {
                        "metadata": {"labels": {"app": "sleepy"}},
                        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
                    },
                },
            },
        )

        async def seen() -> bool:
            return controller.workloads[0][0].get("default/sleepy") is not None

        await stack.wait_for(seen)
        for name, app in (("typo", "wbe"), ("asleep", "sleepy")):
            await stack.client.create(
                SERVICES,
                {
                    "apiVersion": "v1",
                    "kind": "Service",
                    "metadata": {"name": name, "namespace": "default"},
                    "spec": {"selector": {"app": app}, "ports": [{"port": 80}]},
                },
            )

        async def warned() -> list[dict[str, Any]]:
            items = (await stack.client.list(EVENTS, "default")).items
            return [e for e in items if e["reason"] == endpointslices.SELECTOR_MATCHES_NOTHING]

        [event] = await stack.wait_for(warned)
        assert event["involvedObject"]["name"] == "typo"
        assert event["type"] == "Warning"
        assert "selector app=wbe matches no pod" in event["message"]
        # Changes to the Service do not repeat it.
        await stack.client.patch(SERVICES, "default", "typo", {"metadata": {"labels": {"x": "1"}}})
        await asyncio.sleep(0.2)
        assert len(await warned()) == 1
    finally:
        await controller.stop()
        await factory.stop()
