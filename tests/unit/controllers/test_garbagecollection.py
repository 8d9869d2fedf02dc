"""The garbage collector against a whole in-process cluster: Background,
Foreground and Orphan deletion, dangling and cross-namespace references,
cluster-scoped owners and custom-resource owners."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from nodeless.api import errors
from nodeless.client import clients, informers
from nodeless.controllers import garbagecollection
from tests.unit.controllers.conftest import Stack

CONFIGMAPS = clients.ResourceRef("", "v1", "configmaps", True, "ConfigMap")
CLUSTERROLES = clients.ResourceRef(
    "rbac.authorization.k8s.io", "v1", "clusterroles", False, "ClusterRole"
)
CRDS = garbagecollection.CRDS
WIDGETS = clients.ResourceRef("example.com", "v1", "widgets", True, "Widget")
HOLD = "example.com/hold"


@pytest.fixture
async def gc(stack: Stack) -> AsyncIterator[garbagecollection.GarbageCollectorController]:
    factory = informers.InformerFactory(stack.client)
    controller = garbagecollection.GarbageCollectorController(
        stack.client, factory, recorder=stack.recorder
    )
    await controller.start()
    try:
        yield controller
    finally:
        await controller.stop()
        await factory.stop()


def ref_to(owner: dict[str, Any], *, block: bool = False) -> dict[str, Any]:
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "blockOwnerDeletion": block,
    }


async def configmap(
    stack: Stack,
    name: str,
    *,
    owners: list[dict[str, Any]] | None = None,
    namespace: str = "default",
    finalizers: list[str] | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if owners:
        meta["ownerReferences"] = owners
    if finalizers:
        meta["finalizers"] = finalizers
    return await stack.client.create(
        CONFIGMAPS, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {}}
    )


async def get_or_none(
    stack: Stack, resource: clients.ResourceRef, namespace: str, name: str
) -> dict[str, Any] | None:
    try:
        return await stack.client.get(resource, namespace, name)
    except errors.StatusError as err:
        if err.code == 404:
            return None
        raise


async def wait_gone(
    stack: Stack, resource: clients.ResourceRef, namespace: str, *names: str
) -> None:
    async def gone() -> bool:
        for name in names:
            if await get_or_none(stack, resource, namespace, name) is not None:
                return False
        return True

    await stack.wait_for(gone)


async def test_background_deletion_of_an_owner_deletes_its_dependents(
    stack: Stack, gc: garbagecollection.GarbageCollectorController
) -> None:
    owner = await configmap(stack, "owner")
    await configmap(stack, "dep-1", owners=[ref_to(owner)])
    await configmap(stack, "dep-2", owners=[ref_to(owner, block=True)])

    await stack.client.delete(
        CONFIGMAPS, "default", "owner", clients.DeleteOptions(propagation_policy="Background")
    )

    await wait_gone(stack, CONFIGMAPS, "default", "owner", "dep-1", "dep-2")


async def test_foreground_deletion_keeps_the_owner_until_blocking_dependents_are_gone(
    stack: Stack, gc: garbagecollection.GarbageCollectorController
) -> None:
    owner = await configmap(stack, "owner")
    # The finalizer keeps the dependent (and so the owner) around for inspection.
    await configmap(stack, "blocker", owners=[ref_to(owner, block=True)], finalizers=[HOLD])

    await stack.client.delete(
        CONFIGMAPS, "default", "owner", clients.DeleteOptions(propagation_policy="Foreground")
    )

    async def dependent_deleting() -> dict[str, Any] | None:
        dep = await get_or_none(stack, CONFIGMAPS, "default", "blocker")
        return dep if dep and dep["metadata"].get("deletionTimestamp") else None

    await stack.wait_for(dependent_deleting)
    waiting = await stack.client.get(CONFIGMAPS, "default", "owner")
    assert waiting["metadata"]["deletionTimestamp"]
    assert waiting["metadata"]["finalizers"] == ["foregroundDeletion"]

    await stack.client.patch(CONFIGMAPS, "default", "blocker", {"metadata": {"finalizers": None}})

    await wait_gone(stack, CONFIGMAPS, "default", "blocker", "owner")


async def test_foreground_deletion_removes_non_blocking_dependents_too(
    stack: Stack, gc: garbagecollection.GarbageCollectorController
) -> None:
    owner = await configmap(stack, "owner")
    await configmap(stack, "blocker", owners=[ref_to(owner, block=True)])
    await configmap(stack, "bystander", owners=[ref_to(owner, block=False)])

    await stack.client.delete(
        CONFIGMAPS, "default", "owner", clients.DeleteOptions(propagation_policy="Foreground")
    )

    await wait_gone(stack, CONFIGMAPS, "default", "owner", "blocker", "bystander")


async def test_a_dependent_with_another_live_owner_survives_foreground_deletion_without_the_reference(
    stack: Stack, gc: garbagecollection.GarbageCollectorController
) -> None:
    doomed = await configmap(stack, "doomed")
    keeper = await configmap(stack, "keeper")
    await configmap(stack, "shared", owners=[ref_to(doomed, block=True), ref_to(keeper)])

    await stack.client.delete(
        CONFIGMAPS, "default", "doomed", clients.DeleteOptions(propagation_policy="Foreground")
    )

    await wait_gone(stack, CONFIGMAPS, "default", "doomed")
    shared = await stack.client.get(CONFIGMAPS, "default", "shared")
    assert [r["name"] for r in shared["metadata"]["ownerReferences"]] == ["keeper"]
    assert not shared["metadata"].get("deletionTimestamp")


async def test_orphan_deletion_keeps_dependents_and_removes_the_reference(
    stack: Stack, gc: garbagecollection.GarbageCollectorController
) -> None:
    owner = await configmap(stack, "owner")
    other = await configmap(stack, "other")
    await configmap(stack, "orphan-1", owners=[ref_to(owner, block=True)])
    await configmap(stack, "orphan-2", owners=[ref_to(owner), ref_to(other)])

    await stack.client.delete(
        CONFIGMAPS, "default", "owner", clients.DeleteOptions(propagation_policy="Orphan")
    )

    await wait_gone(stack, CONFIGMAPS, "default", "owner")
    first = await stack.client.get(CONFIGMAPS, "default", "orphan-1")
    second = await stack.client.get(CONFIGMAPS, "default", "orphan-2")
    assert "ownerReferences" not in first["metadata"]
    assert [r["name"] for r in second["metadata"]["ownerReferences"]] == ["other"]
    assert not first["metadata"].get("deletionTimestamp")
    assert not second["metadata"].get("deletionTimestamp")


async def test_dangling_references_get_the_dependent_deleted_and_live_ones_do_not(
    stack: Stack, gc: garbagecollection.GarbageCollectorController
) -> None:
    owner = await configmap(stack, "owner")
    never = {"apiVersion": "v1", "kind": "ConfigMap", "name": "ghost", "uid": str(uuid.uuid4())}
    wrong_uid = dict(ref_to(owner), uid=str(uuid.uuid4()))
    await configmap(stack, "haunted", owners=[never])
    await configmap(stack, "mistaken", owners=[wrong_uid])
    await configmap(stack, "kept", owners=[ref_to(owner)])

    await wait_gone(stack, CONFIGMAPS, "default", "haunted", "mistaken")
    assert await get_or_none(stack, CONFIGMAPS, "default", "kept") is not None
    assert await get_or_none(stack, CONFIGMAPS, "default", "owner") is not None


async def test_a_cluster_scoped_owner_collects_namespaced_dependents(
    stack: Stack, gc: garbagecollection.GarbageCollectorController
) -> None:
    role = await stack.client.create(
        CLUSTERROLES,
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "gc-owner"},
            "rules": [],
        },
    )
    await configmap(stack, "in-default", owners=[ref_to(role)])
    await configmap(stack, "in-public", owners=[ref_to(role)], namespace="kube-public")
    assert await get_or_none(stack, CONFIGMAPS, "kube-public", "in-public") is not None

    await stack.client.delete(CLUSTERROLES, "", "gc-owner")

    await wait_gone(stack, CONFIGMAPS, "default", "in-default")
    await wait_gone(stack, CONFIGMAPS, "kube-public", "in-public")


async def test_a_reference_to_an_owner_in_another_namespace_counts_as_absent(
    stack: Stack, gc: garbagecollection.GarbageCollectorController
) -> None:
    owner = await configmap(stack, "owner")
    await configmap(stack, "stray", owners=[ref_to(owner)], namespace="kube-public")

    await wait_gone(stack, CONFIGMAPS, "kube-public", "stray")
    assert await get_or_none(stack, CONFIGMAPS, "default", "owner") is not None


async def test_a_custom_resource_owner_is_discovered_and_collects_its_dependents(
    stack: Stack, gc: garbagecollection.GarbageCollectorController
) -> None:
    await stack.client.create(CRDS, widget_crd())

    async def served() -> dict[str, Any] | None:
        try:
            return await stack.client.create(
                WIDGETS,
                {
                    "apiVersion": "example.com/v1",
                    "kind": "Widget",
                    "metadata": {"name": "w", "namespace": "default"},
                    "spec": {"size": 1},
                },
            )
        except errors.StatusError as err:
            if err.code == 404:
                return None
            raise

    widget = await stack.wait_for(served)
    await configmap(stack, "part", owners=[ref_to(widget, block=True)])

    await stack.client.delete(
        WIDGETS, "default", "w", clients.DeleteOptions(propagation_policy="Foreground")
    )

    await wait_gone(stack, CONFIGMAPS, "default", "part")
    await wait_gone(stack, WIDGETS, "default", "w")


def widget_crd() -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": True,
                        }
                    },
                }
            ],
        },
    }


def test_builtin_resources_list_each_stored_collection_once_and_skip_events() -> None:
    resources = garbagecollection.builtin_resources()
    plurals = [(r.group, r.plural) for r in resources]
    assert len(plurals) == len(set(plurals))
    assert ("", "events") not in plurals
    assert ("events.k8s.io", "events") not in plurals
    assert ("", "pods") in plurals
    assert ("autoscaling", "horizontalpodautoscalers") in plurals
    hpa = next(r for r in resources if r.plural == "horizontalpodautoscalers")
    assert hpa.version == "v2"
    assert all(r.plural not in ("bindings", "tokenreviews") for r in resources)


def test_custom_resources_use_the_storage_version_and_skip_shadowing_crds() -> None:
    crd = widget_crd()
    crd["spec"]["versions"] = [
        {"name": "v1beta1", "served": True, "storage": False},
        {"name": "v1", "served": True, "storage": True},
    ]
    shadow = widget_crd()
    shadow["spec"]["group"] = "apps"
    shadow["spec"]["names"]["plural"] = "deployments"

    found = garbagecollection.custom_resources([crd, shadow])

    assert found == [clients.ResourceRef("example.com", "v1", "widgets", True, "Widget")]
