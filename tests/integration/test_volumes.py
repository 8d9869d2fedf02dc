"""PersistentVolumeClaims end to end through the pinned kubectl, on a
`nodeless up --provider simulated` cluster: the default ``local-path``
StorageClass, a claim provisioned and bound to a directory, protection of a
claim a pod mounts, and the volume and its directory deleted with the claim.

The volume's directory is read from the PV's ``hostPath``, so the test holds
whichever volumes root `nodeless up` gives the provisioner. Every wait is a
kubectl ``--timeout`` or a bounded "eventually", never a timing assertion.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Cluster, stop_cluster
from test_simulated_cluster import dump, eventually, rows, start_simulated

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    data_dir = tmp_path_factory.mktemp("volumes") / "data"
    data_dir.mkdir()
    cluster = start_simulated(data_dir, ("zone-a",))
    yield cluster
    stop_cluster(cluster)


@pytest.fixture
def ns(sim: Cluster, request: pytest.FixtureRequest) -> str:
    name = "v-" + request.node.name.lower().replace("_", "-")[:50]
    name = "".join(c if c.isalnum() or c == "-" else "-" for c in name).strip("-")
    sim.kubectl(
        "apply",
        "-f",
        "-",
        input=dump({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
    )
    return name


def claim(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }


def pod_using(name: str, claim_name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "app", "image": "busybox", "command": ["sleep", "infinity"]}],
            "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": claim_name}}],
        },
    }


def get_json(sim: Cluster, *args: str) -> Any:
    return json.loads(sim.kubectl("get", *args, "-o", "json").stdout)


def test_the_default_storage_class_is_local_path(sim: Cluster) -> None:
    [row] = [
        r for r in rows(sim.kubectl("get", "storageclass").stdout) if "local-path" in r["NAME"]
    ]
    assert row["NAME"] == "local-path (default)"
    assert row["PROVISIONER"] == "nodeless.dev/local-path"
    assert row["RECLAIMPOLICY"] == "Delete"
    assert row["VOLUMEBINDINGMODE"] == "Immediate"


def test_a_claim_is_provisioned_bound_protected_and_deleted_with_its_volume(
    sim: Cluster, ns: str
) -> None:
    sim.kubectl("apply", "-n", ns, "-f", "-", input=dump(claim("data")))
    sim.kubectl(
        "wait",
        "-n",
        ns,
        "--for=jsonpath={.status.phase}=Bound",
        "pvc/data",
        "--timeout=60s",
    )

    bound = get_json(sim, "-n", ns, "pvc/data")
    volume_name = bound["spec"]["volumeName"]
    assert bound["spec"]["storageClassName"] == "local-path"
    [row] = [r for r in rows(sim.kubectl("get", "pv").stdout) if r["NAME"] == volume_name]
    assert row["STATUS"] == "Bound"
    assert row["CLAIM"] == f"{ns}/data"
    assert row["STORAGECLASS"] == "local-path"
    assert row["CAPACITY"] == "1Gi"
    assert row["RECLAIM POLICY"] == "Delete"
    directory = Path(get_json(sim, f"pv/{volume_name}")["spec"]["hostPath"]["path"])
    assert directory.is_dir()

    # A claim a running pod mounts stays Terminating until the pod is gone.
    sim.kubectl("apply", "-n", ns, "-f", "-", input=dump(pod_using("user", "data")))
    sim.kubectl("wait", "-n", ns, "--for=condition=Ready", "pod/user", "--timeout=60s")
    sim.kubectl("delete", "-n", ns, "pvc/data", "--wait=false")
    terminating = get_json(sim, "-n", ns, "pvc/data")
    assert terminating["metadata"]["deletionTimestamp"]
    assert "kubernetes.io/pvc-protection" in terminating["metadata"]["finalizers"]
    [claim_row] = rows(sim.kubectl("get", "-n", ns, "pvc").stdout)
    assert claim_row["STATUS"] == "Terminating"

    sim.kubectl("delete", "-n", ns, "pod/user", "--timeout=60s")
    sim.kubectl("wait", "-n", ns, "--for=delete", "pvc/data", "--timeout=60s")
    sim.kubectl("wait", "--for=delete", f"pv/{volume_name}", "--timeout=60s")
    eventually(lambda: not directory.exists(), f"{directory} to be removed")
