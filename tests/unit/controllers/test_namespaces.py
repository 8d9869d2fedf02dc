"""Namespace deletion and the default ServiceAccount, against a whole
in-process cluster."""

from __future__ import annotations

import asyncio
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from nodeless.api import errors
from nodeless.client import clients, informers
from nodeless.controllers import namespaces, serviceaccounts
from tests.unit.controllers.conftest import Stack
from tests.unit.controllers.test_garbagecollection import WIDGETS, get_or_none, widget_crd

NAMESPACES = namespaces.NAMESPACES
PODS = clients.ResourceRef("", "v1", "pods", True, "Pod")
CONFIGMAPS = clients.ResourceRef("", "v1", "configmaps", True, "ConfigMap")
SERVICE_ACCOUNTS = serviceaccounts.SERVICE_ACCOUNTS
CRDS = clients.ResourceRef(
    "apiextensions.k8s.io", "v1", "customresourcedefinitions", False, "CustomResourceDefinition"
)
HOLD = "example.com/hold"


@pytest.fixture
async def factory(stack: Stack) -> AsyncIterator[informers.InformerFactory]:
    shared = informers.InformerFactory(stack.client)
    try:
        yield shared
    finally:
        await shared.stop()


@pytest.fixture
async def namespace_controller(
    stack: Stack, factory: informers.InformerFactory
) -> AsyncIterator[namespaces.NamespaceController]:
    controller = namespaces.NamespaceController(stack.client, factory, recorder=stack.recorder)
    await controller.start()
    try:
        yield controller
    finally:
        await controller.stop()


@pytest.fixture
async def account_controller(
    stack: Stack, factory: informers.InformerFactory
) -> AsyncIterator[serviceaccounts.ServiceAccountsController]:
    controller = serviceaccounts.ServiceAccountsController(
        stack.client, factory, recorder=stack.recorder
    )
    await controller.start()
    try:
        yield controller
    finally:
        await controller.stop()


async def create_namespace(stack: Stack, name: str) -> dict[str, Any]:
    return await stack.client.create(
        NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    )


def pod(name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["sleep", "3600"]}]},
    }


async def serve_widgets(stack: Stack) -> None:
    await stack.client.create(CRDS, widget_crd())

    async def served() -> bool:
        try:
            await stack.client.list(WIDGETS, "default")
        except errors.StatusError as err:
            if err.code == 404:
                return False
            raise
        return True

    await stack.wait_for(served)


async def test_deleting_a_namespace_removes_its_pods_configmaps_and_custom_resources_then_itself(
    stack: Stack, namespace_controller: namespaces.NamespaceController
) -> None:
    await serve_widgets(stack)
    await create_namespace(stack, "doomed")
    for name in ("a", "b"):
        await stack.client.create(PODS, pod(name, "doomed"))
    await stack.client.create(
        CONFIGMAPS,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "cm", "namespace": "doomed"},
        },
    )
    await stack.client.create(
        WIDGETS,
        {
            "apiVersion": "example.com/v1",
            "kind": "Widget",
            "metadata": {"name": "w", "namespace": "doomed"},
        },
    )

    async def running() -> bool:
        pods = await stack.pods("doomed")
        return len(pods) == 2 and all(p["status"].get("phase") == "Running" for p in pods)

    await stack.wait_for(running)

    deleting = await stack.client.delete(NAMESPACES, "", "doomed")
    assert deleting["status"]["phase"] == "Terminating"

    async def namespace_gone() -> bool:
        return await get_or_none(stack, NAMESPACES, "", "doomed") is None

    await stack.wait_for(namespace_gone)
    assert await stack.pods("doomed") == []
    assert (await stack.client.list(CONFIGMAPS, "doomed")).items == []
    assert (await stack.client.list(WIDGETS, "doomed")).items == []


async def test_content_held_by_a_finalizer_keeps_the_namespace_terminating_with_conditions(
    stack: Stack, namespace_controller: namespaces.NamespaceController
) -> None:
    await create_namespace(stack, "held")
    await stack.client.create(
        CONFIGMAPS,
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "cm", "namespace": "held", "finalizers": [HOLD]},
        },
    )

    await stack.client.delete(NAMESPACES, "", "held")

    async def reported() -> dict[str, Any] | None:
        ns = await get_or_none(stack, NAMESPACES, "", "held")
        assert ns is not None, "the namespace went away while content remained"
        conditions = {c["type"]: c for c in (ns.get("status") or {}).get("conditions", [])}
        return conditions if "NamespaceFinalizersRemaining" in conditions else None

    conditions = await stack.wait_for(reported)
    assert conditions["NamespaceContentRemaining"]["status"] == "True"
    assert conditions["NamespaceContentRemaining"]["reason"] == "SomeResourcesRemain"
    assert conditions["NamespaceContentRemaining"]["message"] == (
        "Some resources are remaining: configmaps. has 1 resource instances"
    )
    assert conditions["NamespaceFinalizersRemaining"]["status"] == "True"
    assert conditions["NamespaceFinalizersRemaining"]["message"] == (
        f"Some content in the namespace has finalizers remaining: {HOLD} in 1 resource instances"
    )
    assert conditions["NamespaceDeletionDiscoveryFailure"]["status"] == "False"
    assert conditions["NamespaceDeletionContentFailure"]["status"] == "False"
    held = await stack.client.get(CONFIGMAPS, "held", "cm")
    assert held["metadata"]["deletionTimestamp"]

    await stack.client.patch(CONFIGMAPS, "held", "cm", {"metadata": {"finalizers": None}})

    async def namespace_gone() -> bool:
        return await get_or_none(stack, NAMESPACES, "", "held") is None

    await stack.wait_for(namespace_gone)


async def test_a_namespace_that_is_not_being_deleted_is_left_alone(
    stack: Stack, namespace_controller: namespaces.NamespaceController
) -> None:
    await create_namespace(stack, "calm")
    await stack.client.create(
        CONFIGMAPS,
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm", "namespace": "calm"}},
    )
    await namespace_controller.sync("calm")

    assert await get_or_none(stack, CONFIGMAPS, "calm", "cm") is not None
    ns = await stack.client.get(NAMESPACES, "", "calm")
    assert ns["spec"]["finalizers"] == ["kubernetes"]


def test_conditions_keep_their_transition_time_while_unchanged() -> None:
    report = namespaces.ContentReport(remaining={"pods.": 2})
    first = namespaces.updated_conditions([], report, "2026-01-01T00:00:00Z")
    assert first is not None
    assert [c["type"] for c in first] == list(namespaces.CONDITION_TYPES)

    assert namespaces.updated_conditions(first, report, "2026-01-01T00:01:00Z") is None

    done = namespaces.updated_conditions(first, namespaces.ContentReport(), "2026-01-01T00:02:00Z")
    assert done is not None
    remaining = next(c for c in done if c["type"] == "NamespaceContentRemaining")
    assert remaining == {
        "type": "NamespaceContentRemaining",
        "status": "False",
        "lastTransitionTime": "2026-01-01T00:02:00Z",
        "reason": "ContentRemoved",
        "message": "All content successfully removed",
    }
    discovery = next(c for c in done if c["type"] == "NamespaceDeletionDiscoveryFailure")
    assert discovery["lastTransitionTime"] == "2026-01-01T00:00:00Z"


async def test_the_default_service_account_is_recreated_after_deletion(
    stack: Stack, account_controller: serviceaccounts.ServiceAccountsController
) -> None:
    await create_namespace(stack, "team")
    original = await stack.client.get(SERVICE_ACCOUNTS, "team", "default")

    await stack.client.delete(SERVICE_ACCOUNTS, "team", "default")

    async def recreated() -> dict[str, Any] | None:
        found = await get_or_none(stack, SERVICE_ACCOUNTS, "team", "default")
        if found and found["metadata"]["uid"] != original["metadata"]["uid"]:
            return found
        return None

    await stack.wait_for(recreated)


async def test_no_default_service_account_is_created_in_a_terminating_namespace(
    stack: Stack, account_controller: serviceaccounts.ServiceAccountsController
) -> None:
    await create_namespace(stack, "leaving")
    await stack.client.delete(NAMESPACES, "", "leaving")

    async def terminating_seen() -> bool:
        ns = account_controller.namespaces.get("leaving")
        return ns is not None and serviceaccounts.terminating(ns)

    await stack.wait_for(terminating_seen)
    await stack.client.delete(SERVICE_ACCOUNTS, "leaving", "default")
    await account_controller.sync("leaving")

    assert await get_or_none(stack, SERVICE_ACCOUNTS, "leaving", "default") is None


def kubectl_path() -> str | None:
    beside = Path(sys.executable).parent / "kubectl"
    return str(beside) if beside.exists() else shutil.which("kubectl")


@pytest.mark.skipif(kubectl_path() is None, reason="kubectl is not installed")
async def test_kubectl_delete_namespace_returns_once_the_namespace_is_gone(
    stack: Stack, namespace_controller: namespaces.NamespaceController, tmp_path: Path
) -> None:
    await create_namespace(stack, "bye")
    await stack.client.create(
        CONFIGMAPS,
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm", "namespace": "bye"}},
    )
    config = tmp_path / "kubeconfig"
    config.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: t\n"
        f"clusters: [{{name: t, cluster: {{server: '{stack.server.url}'}}}}]\n"
        "users: [{name: t, user: {}}]\n"
        "contexts: [{name: t, context: {cluster: t, user: t}}]\n"
    )
    kubectl = kubectl_path()
    assert kubectl is not None
    process = await asyncio.create_subprocess_exec(
        kubectl,
        "--kubeconfig",
        str(config),
        "delete",
        "namespace",
        "bye",
        "--timeout=20s",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)

    assert process.returncode == 0, err.decode()
    assert out.decode().strip() == 'namespace "bye" deleted'
    assert await get_or_none(stack, NAMESPACES, "", "bye") is None
    assert await get_or_none(stack, CONFIGMAPS, "bye", "cm") is None
