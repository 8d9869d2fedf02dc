"""Knative Serving on the in-process cluster stack (simulated pods): a
Service makes Revisions, each Revision a Deployment and a ClusterIP Service,
and the Service's status routes traffic to Ready Revisions only."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from nodeless.api import errors, knativeserving
from nodeless.client import clients, informers
from nodeless.controllers import (
    deployments,
    garbagecollection,
    knativerevisions,
    knativeservices,
    replicasets,
)
from tests.unit.controllers.conftest import Stack

KSVC = knativeservices.SERVICES
REVISIONS = knativerevisions.REVISIONS
DEPLOYMENTS = knativerevisions.DEPLOYMENTS
SERVICES = knativerevisions.SERVICES
PODS = knativerevisions.PODS
EVENTS = clients.ResourceRef("", "v1", "events", True, "Event")
NS = "default"


def ksvc(
    name: str = "hello",
    message: str = "one",
    traffic: list[dict[str, Any]] | None = None,
    annotations: dict[str, str] | None = None,
    **container: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "serving.knative.dev/v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "template": {
                "metadata": {"annotations": annotations or {}},
                "spec": {
                    "containers": [
                        {
                            "image": "registry.local/hello:1",
                            "env": [{"name": "MESSAGE", "value": message}],
                            **container,
                        }
                    ]
                },
            }
        },
    }
    if traffic is not None:
        body["spec"]["traffic"] = traffic
    return body


@contextlib.asynccontextmanager
async def serving(stack: Stack) -> AsyncIterator[None]:
    factory = informers.InformerFactory(stack.client)
    running = [
        garbagecollection.GarbageCollectorController(stack.client, factory),
        replicasets.ReplicaSetController(stack.client, factory, recorder=stack.recorder),
        deployments.DeploymentController(stack.client, factory, recorder=stack.recorder),
        knativerevisions.RevisionController(stack.client, factory, recorder=stack.recorder),
        knativeservices.KnativeServiceController(
            stack.client, factory, recorder=stack.recorder, domain="nodeless.test"
        ),
    ]
    for controller in running:
        await controller.start()
    factory.start()
    await factory.wait_synced()
    try:
        yield
    finally:
        for controller in reversed(running):
            await controller.stop()
        await factory.stop()


async def get(stack: Stack, ref: clients.ResourceRef, name: str) -> dict[str, Any] | None:
    try:
        return await stack.client.get(ref, NS, name)
    except errors.StatusError as err:
        if err.code == 404:
            return None
        raise


def ready(obj: dict[str, Any] | None) -> str:
    return str(knativeserving.condition(obj or {}, "Ready").get("status", ""))


async def wait_ready(stack: Stack, name: str, revision: str) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        obj = await get(stack, KSVC, name)
        status = (obj or {}).get("status") or {}
        if ready(obj) == "True" and status.get("latestReadyRevisionName") == revision:
            return obj
        return None

    result: dict[str, Any] = await stack.wait_for(check)
    return result


async def test_a_service_runs_its_first_revision_as_a_deployment_and_a_service_and_routes_to_it(
    stack: Stack,
) -> None:
    async with serving(stack):
        await stack.client.create(KSVC, ksvc())
        service = await wait_ready(stack, "hello", "hello-00001")
        status = service["status"]
        assert status["url"] == "http://hello.default.nodeless.test"
        assert status["latestCreatedRevisionName"] == "hello-00001"
        assert status["traffic"] == [
            {"revisionName": "hello-00001", "latestRevision": True, "percent": 100}
        ]
        assert {c["type"]: c["status"] for c in status["conditions"]} == {
            "ConfigurationsReady": "True",
            "Ready": "True",
            "RoutesReady": "True",
        }

        revision = await get(stack, REVISIONS, "hello-00001")
        assert revision is not None and ready(revision) == "True"
        labels = revision["metadata"]["labels"]
        assert labels[knativeserving.SERVICE_LABEL] == "hello"
        assert labels[knativeserving.GENERATION_LABEL] == "1"
        assert labels[knativerevisions.ROUTING_STATE_LABEL] == "active"
        assert revision["status"]["actualReplicas"] == 1

        deployment = await get(stack, DEPLOYMENTS, "hello-00001-deployment")
        assert deployment is not None
        assert deployment["spec"]["replicas"] == 1  # Knative's initial scale
        annotations = deployment["metadata"]["annotations"]
        assert annotations[knativeserving.SCALE_TO_ZERO] == "true"
        assert annotations[knativeserving.TARGET_CONCURRENCY] == "70"  # 100 x 70 % utilization
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert container["name"] == "user-container"
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env == {
            "MESSAGE": "one",
            "PORT": "8080",
            "K_REVISION": "hello-00001",
            "K_CONFIGURATION": "hello",
            "K_SERVICE": "hello",
        }
        assert container["readinessProbe"]["tcpSocket"] == {"port": 8080}

        backend = await get(stack, SERVICES, "hello-00001")
        assert backend is not None
        assert backend["spec"]["ports"] == [
            {"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}
        ]
        pods = await stack.pods(NS, f"{knativeserving.REVISION_LABEL}=hello-00001")
        assert len(pods) == 1


async def test_a_new_template_makes_a_new_revision_and_traffic_follows_it_once_ready(
    stack: Stack,
) -> None:
    async with serving(stack):
        await stack.client.create(KSVC, ksvc())
        await wait_ready(stack, "hello", "hello-00001")
        current = await stack.client.get(KSVC, NS, "hello")
        current["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"] = "two"
        await stack.client.update(KSVC, current)
        service = await wait_ready(stack, "hello", "hello-00002")
        assert service["status"]["traffic"] == [
            {"revisionName": "hello-00002", "latestRevision": True, "percent": 100}
        ]

        async def old_in_reserve() -> bool:
            old = await get(stack, REVISIONS, "hello-00001")
            labels = (old or {}).get("metadata", {}).get("labels", {})
            return labels.get(knativerevisions.ROUTING_STATE_LABEL) == "reserve"

        await stack.wait_for(old_in_reserve)
        # A change of traffic alone makes no Revision.
        current = await stack.client.get(KSVC, NS, "hello")
        current["spec"]["traffic"] = [
            {"revisionName": "hello-00001", "percent": 90},
            {"revisionName": "hello-00002", "percent": 10, "tag": "canary"},
        ]
        await stack.client.update(KSVC, current)

        async def split() -> list[Any] | None:
            obj = await get(stack, KSVC, "hello")
            traffic = ((obj or {}).get("status") or {}).get("traffic")
            return traffic if traffic and len(traffic) == 2 else None

        traffic = await stack.wait_for(split)
        assert traffic == [
            {"revisionName": "hello-00001", "latestRevision": False, "percent": 90},
            {
                "revisionName": "hello-00002",
                "latestRevision": False,
                "percent": 10,
                "tag": "canary",
                "url": "http://canary-hello.default.nodeless.test",
            },
        ]
        revisions = (await stack.client.list(REVISIONS, NS)).items
        assert sorted(r["metadata"]["name"] for r in revisions) == ["hello-00001", "hello-00002"]


async def test_a_revision_that_cannot_start_takes_no_traffic_and_says_why(stack: Stack) -> None:
    async with serving(stack):
        await stack.client.create(KSVC, ksvc())
        await wait_ready(stack, "hello", "hello-00001")
        current = await stack.client.get(KSVC, NS, "hello")
        container = current["spec"]["template"]["spec"]["containers"][0]
        container["command"] = ["sh", "-c", "exit 3"]
        await stack.client.update(KSVC, current)

        async def failed() -> dict[str, Any] | None:
            obj = await get(stack, KSVC, "hello")
            configuration = knativeserving.condition(obj or {}, "ConfigurationsReady")
            return obj if configuration.get("status") == "False" else None

        service = await stack.wait_for(failed, timeout=30)
        status = service["status"]
        assert status["latestCreatedRevisionName"] == "hello-00002"
        assert status["latestReadyRevisionName"] == "hello-00001"
        # The good Revision keeps serving everything.
        assert status["traffic"] == [
            {"revisionName": "hello-00001", "latestRevision": True, "percent": 100}
        ]
        ready_condition = knativeserving.condition(service, "Ready")
        assert ready_condition["status"] == "False"
        assert ready_condition["reason"] == "RevisionFailed"
        bad = await get(stack, REVISIONS, "hello-00002")
        assert knativeserving.condition(bad or {}, "ContainerHealthy")["reason"] == "ExitCode3"


async def test_traffic_to_a_missing_revision_keeps_the_previous_routes(stack: Stack) -> None:
    async with serving(stack):
        await stack.client.create(KSVC, ksvc())
        await wait_ready(stack, "hello", "hello-00001")
        current = await stack.client.get(KSVC, NS, "hello")
        current["spec"]["traffic"] = [{"revisionName": "hello-00009", "percent": 100}]
        await stack.client.update(KSVC, current)

        async def routes_failed() -> dict[str, Any] | None:
            obj = await get(stack, KSVC, "hello")
            routes = knativeserving.condition(obj or {}, "RoutesReady")
            return obj if routes.get("status") == "False" else None

        service = await stack.wait_for(routes_failed)
        routes = knativeserving.condition(service, "RoutesReady")
        assert routes["reason"] == "RevisionMissing"
        assert "hello-00009" in routes["message"]
        assert service["status"]["traffic"][0]["revisionName"] == "hello-00001"


async def test_min_scale_keeps_pods_and_only_routed_revisions_hold_it(stack: Stack) -> None:
    async with serving(stack):
        await stack.client.create(
            KSVC, ksvc(annotations={"autoscaling.knative.dev/min-scale": "2"})
        )
        await wait_ready(stack, "hello", "hello-00001")
        deployment = await get(stack, DEPLOYMENTS, "hello-00001-deployment")
        assert deployment is not None
        assert deployment["spec"]["replicas"] == 2
        assert deployment["metadata"]["annotations"][knativeserving.SCALE_TO_ZERO] == "false"
        current = await stack.client.get(KSVC, NS, "hello")
        current["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"] = "two"
        await stack.client.update(KSVC, current)
        await wait_ready(stack, "hello", "hello-00002")

        async def old_may_sleep() -> bool:
            old = await get(stack, DEPLOYMENTS, "hello-00001-deployment")
            annotations = (old or {}).get("metadata", {}).get("annotations", {})
            return annotations.get(knativeserving.SCALE_TO_ZERO) == "true"

        await stack.wait_for(old_may_sleep)


async def test_deleting_the_service_deletes_its_revisions_and_what_they_run(stack: Stack) -> None:
    async with serving(stack):
        await stack.client.create(KSVC, ksvc())
        await wait_ready(stack, "hello", "hello-00001")
        await stack.client.delete(KSVC, NS, "hello")

        async def all_gone() -> bool:
            return (
                await get(stack, REVISIONS, "hello-00001") is None
                and await get(stack, DEPLOYMENTS, "hello-00001-deployment") is None
                and await get(stack, SERVICES, "hello-00001") is None
            )

        await stack.wait_for(all_gone, timeout=20)


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        (
            {"traffic": [{"latestRevision": True, "percent": 90}]},
            "spec.traffic",
            "Traffic targets sum to 90, want 100",
        ),
        (
            {"traffic": [{"latestRevision": True, "revisionName": "hello-00001", "percent": 100}]},
            "spec.traffic[0].revisionName",
            "when latestRevision is true",
        ),
        (
            {
                "traffic": [
                    {"revisionName": "hello-00001", "percent": 50, "tag": "a"},
                    {"latestRevision": True, "percent": 50, "tag": "a"},
                ]
            },
            "spec.traffic[1].tag",
            "Duplicate value",
        ),
        (
            {"traffic": [{"latestRevision": True, "percent": 101}]},
            "spec.traffic[0].percent",
            "from 0 to 100",
        ),
    ],
)
async def test_bad_traffic_is_refused_with_the_field_named(
    stack: Stack, change: dict[str, Any], field: str, words: str
) -> None:
    body = ksvc()
    body["spec"].update(change)
    with pytest.raises(errors.StatusError) as caught:
        await stack.client.create(KSVC, body)
    assert caught.value.code == 422
    causes = caught.value.to_status()["details"]["causes"]
    assert any(c["field"] == field and words in c["message"] for c in causes), causes
    assert await get(stack, KSVC, "hello") is None


async def test_bad_templates_are_refused(stack: Stack) -> None:
    body = ksvc()
    body["spec"]["template"]["metadata"]["name"] = "other-00001"
    body["spec"]["template"]["metadata"]["annotations"] = {
        "autoscaling.knative.dev/min-scale": "3",
        "autoscaling.knative.dev/max-scale": "2",
        "autoscaling.knative.dev/window": "2s",
    }
    body["spec"]["template"]["spec"]["containerConcurrency"] = -1
    with pytest.raises(errors.StatusError) as caught:
        await stack.client.create(KSVC, body)
    fields = {c["field"] for c in caught.value.to_status()["details"]["causes"]}
    assert fields == {
        "spec.template.metadata.name",
        "spec.template.metadata.annotations[autoscaling.knative.dev/min-scale]",
        "spec.template.metadata.annotations[autoscaling.knative.dev/window]",
        "spec.template.spec.containerConcurrency",
    }
    privileged = ksvc(securityContext={"privileged": True})
    with pytest.raises(errors.StatusError) as caught:
        await stack.client.create(KSVC, privileged)
    assert caught.value.code == 422
    assert "privileged" in caught.value.to_status()["message"]


async def test_a_revision_spec_cannot_change(stack: Stack) -> None:
    async with serving(stack):
        await stack.client.create(KSVC, ksvc())
        await wait_ready(stack, "hello", "hello-00001")
        revision = await stack.client.get(REVISIONS, NS, "hello-00001")
        revision["spec"]["containers"][0]["image"] = "registry.local/hello:2"
        with pytest.raises(errors.StatusError) as caught:
            await stack.client.update(REVISIONS, revision)
        assert caught.value.code == 422
        assert "immutable" in caught.value.to_status()["message"]
