"""HttpApiClient against a real `nodeless up`: the kubeconfig it writes, CRUD and
patch on a ConfigMap, Status errors, and an informer following changes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from nodeless.api import errors
from nodeless.client import clients, httpclients, informers

pytestmark = pytest.mark.integration

CONFIGMAPS = clients.resolve("v1", "ConfigMap")
WAIT = 30.0  # a safety net for a real process, not a timing assertion


def configmap(name: str, namespace: str, **data: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
        "data": dict(data),
    }


@pytest.fixture
async def api(cluster: Any) -> AsyncIterator[httpclients.HttpApiClient]:
    async with httpclients.HttpApiClient.from_kubeconfig(cluster.kubeconfig) as client:
        yield client


async def test_configmap_create_get_list_patch_delete(
    api: httpclients.HttpApiClient, namespace: str
) -> None:
    created = await api.create(CONFIGMAPS, configmap("settings", namespace, mode="a"))
    assert created["metadata"]["namespace"] == namespace

    fetched = await api.get(CONFIGMAPS, namespace, "settings")
    assert fetched["metadata"]["uid"] == created["metadata"]["uid"]
    listed = await api.list(CONFIGMAPS, namespace)
    assert "settings" in [o["metadata"]["name"] for o in listed.items]

    patched = await api.patch(CONFIGMAPS, namespace, "settings", {"data": {"mode": "b"}})
    assert patched["data"] == {"mode": "b"}
    applied = await api.patch(
        CONFIGMAPS,
        namespace,
        "settings",
        configmap("settings", namespace, mode="b", extra="x"),
        patch_type="apply",
        force=True,
        options=clients.WriteOptions(field_manager="client-test"),
    )
    assert applied["data"] == {"mode": "b", "extra": "x"}

    await api.delete(CONFIGMAPS, namespace, "settings")
    remaining = await api.list(CONFIGMAPS, namespace, field_selector="metadata.name=settings")
    assert remaining.items == []


async def test_status_errors_name_the_reason(
    api: httpclients.HttpApiClient, namespace: str
) -> None:
    with pytest.raises(errors.StatusError) as missing:
        await api.get(CONFIGMAPS, namespace, "absent")
    assert (missing.value.code, missing.value.reason) == (404, "NotFound")
    assert missing.value.message == 'configmaps "absent" not found'

    await api.create(CONFIGMAPS, configmap("twice", namespace))
    with pytest.raises(errors.StatusError) as exists:
        await api.create(CONFIGMAPS, configmap("twice", namespace))
    assert (exists.value.code, exists.value.reason) == (409, "AlreadyExists")

    stale = await api.get(CONFIGMAPS, namespace, "twice")
    await api.patch(CONFIGMAPS, namespace, "twice", {"data": {"k": "1"}})
    with pytest.raises(errors.StatusError) as conflict:
        await api.update(CONFIGMAPS, {**stale, "data": {"k": "2"}})
    assert (conflict.value.code, conflict.value.reason) == (409, "Conflict")


async def test_an_informer_sees_add_update_and_delete(
    api: httpclients.HttpApiClient, namespace: str
) -> None:
    changes: asyncio.Queue[tuple[str, str, str]] = asyncio.Queue()

    def record(verb: str, obj: clients.Object) -> None:
        if obj["metadata"]["name"] == "kube-root-ca.crt":
            return  # every namespace has it, as upstream's root CA publisher keeps it
        changes.put_nowait((verb, obj["metadata"]["name"], (obj.get("data") or {}).get("v", "")))

    informer = informers.Informer(api, CONFIGMAPS, namespace=namespace)
    informer.add_handlers(
        on_add=lambda o: record("add", o),
        on_update=lambda old, new: record("update", new),
        on_delete=lambda o: record("delete", o),
    )

    async with informer, asyncio.timeout(WAIT):
        await informer.wait_synced()
        await api.create(CONFIGMAPS, configmap("watched", namespace, v="1"))
        await api.patch(CONFIGMAPS, namespace, "watched", {"data": {"v": "2"}})
        await api.delete(CONFIGMAPS, namespace, "watched")
        seen = [await changes.get() for _ in range(3)]

    assert seen == [("add", "watched", "1"), ("update", "watched", "2"), ("delete", "watched", "2")]
    assert informer.get(f"{namespace}/watched") is None
