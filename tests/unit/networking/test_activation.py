"""Scale-to-zero: an opted-in Deployment goes to zero replicas after its
grace period without requests and is woken by the next one, on a fake clock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from nodeless import clocks
from nodeless.client import clients, informers
from nodeless.networking import activation, servicemaps

DEPLOYMENTS = activation.DEPLOYMENTS
SERVICES = servicemaps.SERVICES


def deployment(name: str, replicas: int, **annotations: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default", "annotations": annotations},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name, "tier": "web"}},
                "spec": {"containers": [{"name": "main", "image": "busybox"}]},
            },
        },
    }


def service(name: str, app_label: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"selector": {"app": app_label}, "ports": [{"port": 80}]},
    }


async def replicas(client: clients.ApiClient, name: str) -> int:
    return int((await client.get(DEPLOYMENTS, "default", name))["spec"]["replicas"])


@pytest.fixture
async def scaler(
    client: clients.ApiClient,
) -> AsyncIterator[tuple[activation.ServingAutoscaler, clocks.FakeClock]]:
    clock = clocks.FakeClock()
    factory = informers.InformerFactory(client)
    services = servicemaps.ServiceMap(factory)
    services.start()
    await services.wait_synced()
    scaler = activation.ServingAutoscaler(client, factory, services, clock=clock, interval=3600)
    await scaler.start()
    try:
        yield scaler, clock
    finally:
        await scaler.stop()
        services.stop()
        await factory.stop()


async def settle(scaler: activation.ServingAutoscaler, name: str, want: int) -> None:
    for _ in range(200):
        obj = scaler.deployments.get(f"default/{name}")
        if obj is not None and obj["spec"].get("replicas") == want:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{name} never showed {want} replicas in the informer")


async def known_service(scaler: activation.ServingAutoscaler, name: str) -> None:
    for _ in range(200):
        if scaler.services.service_object("default", name) is not None:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"Service {name} never reached the ServiceMap")


async def test_an_idle_opted_in_deployment_scales_to_zero_after_its_grace_period(
    client: clients.ApiClient, scaler: tuple[activation.ServingAutoscaler, clocks.FakeClock]
) -> None:
    tool, clock = scaler
    await client.create(
        DEPLOYMENTS,
        deployment("web", 2, **{activation.SCALE_TO_ZERO: "true", activation.GRACE: "30s"}),
    )
    await client.create(DEPLOYMENTS, deployment("plain", 2))
    await client.create(SERVICES, service("web", "web"))
    await settle(tool, "web", 2)
    await settle(tool, "plain", 2)
    await clock.advance(20)
    tool.note_request("default", "web")
    await clock.advance(20)
    await tool.scale_idle()
    assert await replicas(client, "web") == 2, "a request 20s ago keeps it up"
    await clock.advance(15)
    await tool.scale_idle()
    assert await replicas(client, "web") == 0
    assert await replicas(client, "plain") == 2, "only opted-in Deployments scale to zero"


async def test_a_request_in_flight_keeps_its_deployment_up(
    client: clients.ApiClient, scaler: tuple[activation.ServingAutoscaler, clocks.FakeClock]
) -> None:
    tool, clock = scaler
    await client.create(
        DEPLOYMENTS,
        deployment("web", 1, **{activation.SCALE_TO_ZERO: "true", activation.GRACE: "10s"}),
    )
    await client.create(SERVICES, service("web", "web"))
    await settle(tool, "web", 1)
    await known_service(tool, "web")
    finished = tool.request_started("default", "web")
    await clock.advance(60)
    await tool.scale_idle()
    assert await replicas(client, "web") == 1, "a long request is activity"
    finished()
    await clock.advance(11)
    await tool.scale_idle()
    assert await replicas(client, "web") == 0


async def test_the_first_request_wakes_a_sleeping_deployment(
    client: clients.ApiClient, scaler: tuple[activation.ServingAutoscaler, clocks.FakeClock]
) -> None:
    tool, _ = scaler
    await client.create(DEPLOYMENTS, deployment("web", 0, **{activation.SCALE_TO_ZERO: "true"}))
    await client.create(DEPLOYMENTS, deployment("other", 0, **{activation.SCALE_TO_ZERO: "true"}))
    await client.create(SERVICES, service("web", "web"))
    await settle(tool, "web", 0)
    await settle(tool, "other", 0)
    await known_service(tool, "web")
    await tool.activate("default", "web")
    assert await replicas(client, "web") == 1
    assert await replicas(client, "other") == 0, "only the Service's own pods wake"


def test_grace_defaults_and_reads_go_durations() -> None:
    assert activation.grace_seconds(deployment("a", 1)) == activation.DEFAULT_GRACE
    assert activation.grace_seconds(deployment("a", 1, **{activation.GRACE: "1m30s"})) == 90
    assert activation.grace_seconds(deployment("a", 1, **{activation.GRACE: "soon"})) == 60


async def ticks(tool: activation.ServingAutoscaler, clock: clocks.FakeClock, seconds: int) -> None:
    """One autoscaling tick a second, as the running loop does."""
    for _ in range(seconds):
        await clock.advance(1)
        await tool.autoscale()


async def test_a_burst_scales_up_at_once_in_panic_and_down_only_after_a_stable_window(
    client: clients.ApiClient, scaler: tuple[activation.ServingAutoscaler, clocks.FakeClock]
) -> None:
    tool, clock = scaler
    annotations = {"nodeless.dev/target-concurrency": "2", "nodeless.dev/max-scale": "5"}
    await client.create(DEPLOYMENTS, deployment("web", 1, **annotations))
    await client.create(SERVICES, service("web", "web"))
    await settle(tool, "web", 1)
    await known_service(tool, "web")
    burst = [tool.request_started("default", "web") for _ in range(8)]
    await ticks(tool, clock, 1)
    # 8 in flight at 2 per pod is 4 pods: at least twice the 1 ready, so panic.
    assert await replicas(client, "web") == 4
    await settle(tool, "web", 4)
    for finished in burst:
        finished()
    await ticks(tool, clock, 30)
    assert await replicas(client, "web") == 4, "no scale-down inside the panic's window"
    await ticks(tool, clock, 40)
    assert await replicas(client, "web") < 4
    for _ in range(10):
        await settle(tool, "web", await replicas(client, "web"))
        await ticks(tool, clock, 1)
    assert await replicas(client, "web") == 1, "back to the minimum, halving at most per step"


async def test_steady_load_is_sized_from_the_stable_window_within_bounds(
    client: clients.ApiClient, scaler: tuple[activation.ServingAutoscaler, clocks.FakeClock]
) -> None:
    tool, clock = scaler
    annotations = {"autoscaling.knative.dev/target": "1", "autoscaling.knative.dev/max-scale": "3"}
    await client.create(DEPLOYMENTS, deployment("web", 2, **annotations))
    await client.create(SERVICES, service("web", "web"))
    await settle(tool, "web", 2)
    await known_service(tool, "web")
    load = [tool.request_started("default", "web") for _ in range(3)]
    # 3 in flight at 1 per pod wants 3, not twice the 2 ready: no panic.
    await ticks(tool, clock, 5)
    assert await replicas(client, "web") == 3
    more = [tool.request_started("default", "web") for _ in range(6)]
    await settle(tool, "web", 3)
    await ticks(tool, clock, 5)
    assert await replicas(client, "web") == 3, "max-scale caps it"
    for finished in load + more:
        finished()


def test_the_target_reads_both_annotation_names_and_ignores_nonsense() -> None:
    assert activation.target_concurrency(deployment("a", 1)) is None
    assert (
        activation.target_concurrency(
            deployment("a", 1, **{"autoscaling.knative.dev/target": "10"})
        )
        == 10
    )
    assert (
        activation.target_concurrency(
            deployment("a", 1, **{"nodeless.dev/target-concurrency": "many"})
        )
        is None
    )


async def test_a_deployment_scaled_up_by_hand_gets_its_grace_period(
    client: clients.ApiClient, scaler: tuple[activation.ServingAutoscaler, clocks.FakeClock]
) -> None:
    tool, clock = scaler
    await clock.advance(600)  # nodeless has been up for a while
    await client.create(
        DEPLOYMENTS,
        deployment("web", 2, **{activation.SCALE_TO_ZERO: "true", activation.GRACE: "30s"}),
    )
    await client.create(SERVICES, service("web", "web"))
    await settle(tool, "web", 2)
    await tool.scale_idle()
    assert await replicas(client, "web") == 2, "new: not idle yet"
    await clock.advance(31)
    await tool.scale_idle()
    assert await replicas(client, "web") == 0
