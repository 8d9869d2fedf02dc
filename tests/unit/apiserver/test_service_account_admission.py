"""Upstream's ServiceAccount admission and root CA publisher: pods get their
account and the kube-api-access volume in-cluster clients read, unless they
or their account opt out; every namespace gets the CA ConfigMap."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from nodeless.apiserver import admitting, app, loopback
from nodeless.client import clients
from nodeless.storage import memory

PODS = clients.ResourceRef("", "v1", "pods", True, "Pod")
NAMESPACES = clients.ResourceRef("", "v1", "namespaces", False, "Namespace")
CONFIG_MAPS = clients.ResourceRef("", "v1", "configmaps", True, "ConfigMap")
ACCOUNTS = clients.ResourceRef("", "v1", "serviceaccounts", True, "ServiceAccount")
MOUNT = admitting.SERVICE_ACCOUNT_MOUNT


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[app.ApiServer, clients.ApiClient]]:
    server = app.ApiServer(memory.MemoryBackend(), port=0, pki_dir=tmp_path / "pki")
    await server.start()
    try:
        yield server, loopback.LoopbackApiClient(server.api)
    finally:
        await server.stop()


def pod(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "initContainers": [{"name": "init", "image": "busybox"}],
            "containers": [{"name": "main", "image": "busybox"}],
            **spec,
        },
    }


def api_access_volume(obj: dict[str, Any]) -> dict[str, Any] | None:
    found = [
        v for v in obj["spec"].get("volumes") or () if v["name"].startswith("kube-api-access-")
    ]
    return found[0] if found else None


async def test_every_namespace_gets_the_root_ca_config_map(
    served: tuple[app.ApiServer, clients.ApiClient],
) -> None:
    server, client = served
    assert server.pki is not None
    ca = server.pki.ca_cert.read_text()
    for namespace in ("default", "kube-system"):
        config_map = await client.get(CONFIG_MAPS, namespace, "kube-root-ca.crt")
        assert config_map["data"] == {"ca.crt": ca}
    await client.create(
        NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}}
    )
    config_map = await client.get(CONFIG_MAPS, "team", "kube-root-ca.crt")
    assert config_map["data"] == {"ca.crt": ca}


async def test_a_pod_gets_its_account_and_the_api_access_volume_in_every_container(
    served: tuple[app.ApiServer, clients.ApiClient],
) -> None:
    _, client = served
    created = await client.create(PODS, pod("web"))
    assert created["spec"]["serviceAccountName"] == "default"
    volume = api_access_volume(created)
    assert volume is not None
    sources = volume["projected"]["sources"]
    assert sources[0] == {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}}
    assert sources[1]["configMap"]["name"] == "kube-root-ca.crt"
    assert sources[2]["downwardAPI"]["items"][0]["path"] == "namespace"
    for key in ("initContainers", "containers"):
        [mount] = created["spec"][key][0]["volumeMounts"]
        assert mount == {"name": volume["name"], "mountPath": MOUNT, "readOnly": True}


async def test_opting_out_on_the_pod_or_the_account_or_mounting_ones_own_mounts_nothing(
    served: tuple[app.ApiServer, clients.ApiClient],
) -> None:
    _, client = served
    quiet = await client.create(PODS, pod("quiet", automountServiceAccountToken=False))
    assert api_access_volume(quiet) is None
    await client.create(
        ACCOUNTS,
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": "robot", "namespace": "default"},
            "automountServiceAccountToken": False,
        },
    )
    robot = await client.create(PODS, pod("robot", serviceAccountName="robot"))
    assert robot["spec"]["serviceAccountName"] == "robot"
    assert api_access_volume(robot) is None
    # The pod's own say wins over its account's.
    eager = await client.create(
        PODS, pod("eager", serviceAccountName="robot", automountServiceAccountToken=True)
    )
    assert api_access_volume(eager) is not None
    own = pod("own", volumes=[{"name": "mine", "emptyDir": {}}])
    own["spec"]["containers"][0]["volumeMounts"] = [{"name": "mine", "mountPath": MOUNT}]
    own = await client.create(PODS, own)
    assert api_access_volume(own) is None
