"""ElasticWorkload: replicas beyond the source's maximum spill into unit
clones in order; scale-in shrinks the units first; the scale subresource
lets an HPA drive it; bad manifests get 422 naming the field."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from nodeless.api import elasticworkloads, errors
from nodeless.client import clients, informers
from nodeless.controllers import deployments, garbagecollection, replicasets
from nodeless.controllers import elasticworkloads as ew_controller
from tests.unit.controllers.conftest import Stack

NS = "default"
EW = clients.ResourceRef(
    "autoscaling.nodeless.dev", "v1", "elasticworkloads", True, "ElasticWorkload"
)
EW_ALIBABA = clients.ResourceRef(
    "autoscaling.alibabacloud.com", "v1beta1", "elasticworkloads", True, "ElasticWorkload"
)
DEPLOYMENTS = deployments.DEPLOYMENTS
SPOT = {"k8s.aliyun.com/eci-spot-strategy": "SpotAsPriceGo"}


def spec(replicas: int, *units: dict[str, Any], low: int = 2, high: int = 2) -> dict[str, Any]:
    return {
        "sourceTarget": {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": "web",
            "min": low,
            "max": high,
        },
        "replicas": replicas,
        "elasticUnit": list(units),
    }


@pytest.mark.parametrize(
    ("replicas", "units", "source", "shares", "unplaced"),
    [
        (6, [{"name": "a", "max": 3}, {"name": "b"}], 2, [("a", 3), ("b", 1)], 0),
        (4, [{"name": "a", "max": 3}, {"name": "b"}], 2, [("a", 2), ("b", 0)], 0),
        (1, [{"name": "a", "max": 3}], 1, [("a", 0)], 0),
        (9, [{"name": "a", "max": 3}, {"name": "b", "max": 1}], 2, [("a", 3), ("b", 1)], 3),
        (0, [{"name": "a"}], 0, [("a", 0)], 0),
    ],
)
def test_replicas_fill_the_source_then_each_unit_in_order(
    replicas: int,
    units: list[dict[str, Any]],
    source: int,
    shares: list[tuple[str, int]],
    unplaced: int,
) -> None:
    shared = elasticworkloads.share(spec(replicas, *units))
    assert (shared.source, list(shared.units), shared.unplaced) == (source, shares, unplaced)


def manifest(
    ref: clients.ResourceRef, body: dict[str, Any], name: str = "web-elastic"
) -> dict[str, Any]:
    return {
        "apiVersion": f"{ref.group}/{ref.version}",
        "kind": "ElasticWorkload",
        "metadata": {"name": name, "namespace": NS},
        "spec": body,
    }


def deployment(replicas: int = 2) -> dict[str, Any]:
    labels = {"app": "web"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": NS},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {"name": "c", "image": "busybox:1.36", "command": ["sleep", "infinity"]}
                    ]
                },
            },
        },
    }


@contextlib.asynccontextmanager
async def running(stack: Stack) -> AsyncIterator[None]:
    factory = informers.InformerFactory(stack.client)
    started = [
        garbagecollection.GarbageCollectorController(stack.client, factory),
        replicasets.ReplicaSetController(stack.client, factory),
        deployments.DeploymentController(stack.client, factory),
        ew_controller.ElasticWorkloadController(stack.client, factory, recorder=stack.recorder),
    ]
    for controller in started:
        await controller.start()
    factory.start()
    await factory.wait_synced()
    try:
        yield
    finally:
        for controller in reversed(started):
            await controller.stop()
        await factory.stop()


async def replicas_of(stack: Stack, name: str) -> int | None:
    try:
        return int((await stack.client.get(DEPLOYMENTS, NS, name))["spec"]["replicas"])
    except errors.StatusError:
        return None


async def shares(stack: Stack) -> tuple[int | None, ...]:
    return tuple(
        [await replicas_of(stack, n) for n in ("web", "web-unit-on-demand", "web-unit-spot")]
    )


@pytest.mark.parametrize("ref", [EW, EW_ALIBABA])
async def test_replicas_spill_into_unit_clones_and_scale_in_shrinks_units_first(
    stack: Stack, ref: clients.ResourceRef
) -> None:
    async with running(stack):
        await stack.client.create(DEPLOYMENTS, deployment())
        body = spec(
            6,
            {"name": "on-demand", "max": 3},
            {"name": "spot", "annotations": SPOT, "labels": {"tier": "spot"}},
        )
        await stack.client.create(ref, manifest(ref, body))

        async def spread(want: tuple[int | None, ...]) -> bool:
            return await shares(stack) == want

        await stack.wait_for(lambda: spread((2, 3, 1)))
        clone = await stack.client.get(DEPLOYMENTS, NS, "web-unit-spot")
        template = clone["spec"]["template"]
        assert template["metadata"]["annotations"] == SPOT
        assert template["metadata"]["labels"] == {
            "app": "web",
            "elasticworkload.nodeless.dev/unit": "spot",
            "tier": "spot",
        }
        assert clone["spec"]["selector"]["matchLabels"] == {
            "app": "web",
            "elasticworkload.nodeless.dev/unit": "spot",
        }
        assert clone["metadata"]["ownerReferences"][0]["kind"] == "ElasticWorkload"

        async def pods_running() -> bool:
            pods = await stack.pods(NS, "app=web")
            return len([p for p in pods if p["status"].get("phase") == "Running"]) == 6

        await stack.wait_for(pods_running)

        async def status_settled() -> dict[str, Any] | None:
            obj = await stack.client.get(ref, NS, "web-elastic")
            status = obj.get("status") or {}
            return status if status.get("replicas") == 6 else None

        status = await stack.wait_for(status_settled)
        assert status["selector"] == "app=web"
        assert status["sourceTarget"] == {"name": "web", "desiredReplicas": 2, "replicas": 2}
        assert [(u["name"], u["desiredReplicas"]) for u in status["elasticUnitsStatus"]] == [
            ("on-demand", 3),
            ("spot", 1),
        ]
        # The scale subresource, as an HPA uses it: scale in, units first.
        scale = await stack.client.get_subresource(ref, NS, "web-elastic", "scale")
        assert scale["spec"]["replicas"] == 6
        assert scale["status"]["selector"] == "app=web"
        await stack.client.patch(
            ref, NS, "web-elastic", {"spec": {"replicas": 3}}, subresource="scale"
        )
        await stack.wait_for(lambda: spread((2, 1, 0)))
        # A unit dropped from the list loses its clone; deleting the workload, the rest.
        current = await stack.client.get(ref, NS, "web-elastic")
        # A merge patch replaces the list (no conflict with the status writes).
        await stack.client.patch(
            ref, NS, "web-elastic", {"spec": {"elasticUnit": current["spec"]["elasticUnit"][:1]}}
        )
        await stack.wait_for(lambda: spread((2, 1, None)))
        await stack.client.delete(ref, NS, "web-elastic")
        await stack.wait_for(lambda: spread((2, None, None)), timeout=20)


async def test_bad_elastic_workloads_are_refused_naming_the_field(stack: Stack) -> None:
    cases = [
        (spec(4, {"name": "a"}), "spec.sourceTarget.name", "Not found"),
        (
            {**spec(4), "sourceTarget": {"apiVersion": "batch/v1", "kind": "Job", "name": "web"}},
            "spec.sourceTarget.kind",
            "scalable",
        ),
        (spec(4, low=3, high=2), "spec.sourceTarget.min", "must not exceed"),
        (spec(4, {"name": "a"}, {"name": "a"}), "spec.elasticUnit[1].name", "Duplicate"),
        (spec(-1), "spec.replicas", "non-negative"),
    ]
    for body, field, words in cases:
        with pytest.raises(errors.StatusError) as caught:
            await stack.client.create(EW, manifest(EW, body))
        assert caught.value.code == 422
        causes = caught.value.to_status()["details"]["causes"]
        assert any(c["field"] == field and words in c["message"] for c in causes), (field, causes)
    assert (await stack.client.list(EW, NS)).items == []
