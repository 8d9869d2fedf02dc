"""A whole simulated cluster through kubectl: `nodeless up --provider simulated`
with two zones, its virtual nodes and their leases, pods from apply to Ready,
what `get -o wide`, `describe` and `get instances` show, exit codes, deletion,
and the serverless admission rules and annotations as a kubectl user meets them.

Waits are bounded "eventually" loops (liveness), never timing assertions.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import VENV_BIN, Cluster, eventually, start_cluster, stop_cluster

pytestmark = pytest.mark.integration

ZONES = ("zone-a", "zone-b")
NODES = tuple(f"nodeless-{z}" for z in ZONES)


# --- the cluster ----------------------------------------------------------------------


def start_simulated(data_dir: Path, zones: tuple[str, ...] = ZONES) -> Cluster:
    """`nodeless up --provider simulated` on `data_dir`, on a fresh port."""
    return start_cluster(data_dir, provider="simulated", zones=zones)


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    data_dir = tmp_path_factory.mktemp("simulated") / "data"
    data_dir.mkdir()
    cluster = start_simulated(data_dir)
    yield cluster
    stop_cluster(cluster)


@pytest.fixture
def ns(sim: Cluster, request: pytest.FixtureRequest) -> str:
    """A fresh namespace per test, named after it."""
    name = "s-" + request.node.name.lower().replace("_", "-")[:50]
    name = "".join(c if c.isalnum() or c == "-" else "-" for c in name).strip("-")
    sim.kubectl("apply", "-f", "-", input=dump(namespace(name)))
    return name


# --- helpers --------------------------------------------------------------------------


def dump(obj: Any) -> str:
    return json.dumps(obj, indent=1) + "\n"


def namespace(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def pod(
    name: str,
    command: list[str] | None = None,
    *,
    annotations: dict[str, str] | None = None,
    restart_policy: str | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "containers": [
            {"name": "app", "image": "busybox", "command": command or ["sleep", "infinity"]}
        ]
    }
    if restart_policy:
        spec["restartPolicy"] = restart_policy
    meta: dict[str, Any] = {"name": name}
    if annotations:
        meta["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}


def apply(sim: Cluster, ns: str, *objects: dict[str, Any]) -> None:
    manifest = "".join(f"---\n{dump(o)}" for o in objects)
    sim.kubectl("apply", "-n", ns, "-f", "-", input=manifest)


def get_json(sim: Cluster, ns: str, *args: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(sim.kubectl("get", "-n", ns, *args, "-o", "json").stdout)
    return data


def rows(output: str) -> list[dict[str, str]]:
    """kubectl's table output as dicts keyed by the column headers.

    Columns are cut at the headers' positions (kubectl aligns them), so two-word
    headers ("NOMINATED NODE") and values with spaces ("0 (5s ago)") stay whole.
    """
    lines = [line for line in output.splitlines() if line.strip()]
    spans = [(m.start(), m.group()) for m in re.finditer(r"\S+(?: \S+)*", lines[0])]
    table = []
    for line in lines[1:]:
        row = {}
        for i, (start, name) in enumerate(spans):
            end = spans[i + 1][0] if i + 1 < len(spans) else None
            row[name] = line[start:end].strip()
        table.append(row)
    return table


def wait_ready(sim: Cluster, ns: str, *names: str) -> None:
    sim.kubectl(
        "wait",
        "-n",
        ns,
        "--for=condition=Ready",
        *(f"pod/{n}" for n in names),
        "--timeout=30s",
        timeout=45,
    )


def annotations_of(sim: Cluster, ns: str, name: str) -> dict[str, str]:
    notes: dict[str, str] = get_json(sim, ns, "pod", name)["metadata"].get("annotations") or {}
    return notes


def refused(
    sim: Cluster, ns: str, obj: dict[str, Any], *flags: str
) -> subprocess.CompletedProcess[str]:
    result = sim.kubectl("apply", "-n", ns, "-f", "-", *flags, input=dump(obj), check=False)
    assert result.returncode != 0, f"expected a refusal, kubectl said:\n{result.stdout}"
    return result


def absent(sim: Cluster, ns: str, resource: str, name: str) -> bool:
    result = sim.kubectl("get", "-n", ns, resource, name, check=False)
    return result.returncode != 0 and "NotFound" in result.stderr


# --- nodes and leases -----------------------------------------------------------------


def test_virtual_nodes_are_ready_with_zone_labels(sim: Cluster) -> None:
    out = sim.kubectl("get", "nodes", "-L", "topology.kubernetes.io/zone").stdout
    table = rows(out)
    assert out.splitlines()[0].split()[-1] == "ZONE", out
    seen = {(r["NAME"], r["STATUS"], r["ZONE"]) for r in table}
    assert seen == {(f"nodeless-{z}", "Ready", z) for z in ZONES}, out

    nodes = json.loads(
        sim.kubectl("get", "nodes", "-l", "type=virtual-kubelet", "-o", "json").stdout
    )
    assert sorted(n["metadata"]["name"] for n in nodes["items"]) == sorted(NODES)
    for node in nodes["items"]:
        labels = node["metadata"]["labels"]
        assert labels["type"] == "virtual-kubelet"
        assert labels["topology.kubernetes.io/zone"] == node["metadata"]["name"].removeprefix(
            "nodeless-"
        )
        ready = [c for c in node["status"]["conditions"] if c["type"] == "Ready"]
        assert [c["status"] for c in ready] == ["True"], node["status"]["conditions"]


def test_one_node_lease_per_zone(sim: Cluster) -> None:
    out = sim.kubectl("get", "leases", "-n", "kube-node-lease").stdout
    table = rows(out)
    assert sorted(r["NAME"] for r in table) == sorted(NODES), out
    assert all(r["HOLDER"] == r["NAME"] for r in table), out


# --- a pod's life ---------------------------------------------------------------------


def test_pod_runs_and_kubectl_shows_ip_node_annotations_events_instance(
    sim: Cluster, ns: str
) -> None:
    apply(sim, ns, pod("web"))
    wait_ready(sim, ns, "web")

    obj = get_json(sim, ns, "pod", "web")
    assert obj["status"]["phase"] == "Running"
    ip = obj["status"].get("podIP")
    assert ip, obj["status"]
    wide = rows(sim.kubectl("get", "pods", "-n", ns, "-o", "wide").stdout)
    assert len(wide) == 1, wide
    row = wide[0]
    assert (row["NAME"], row["READY"], row["STATUS"]) == ("web", "1/1", "Running"), row
    assert row["IP"] == ip, row
    assert row["NODE"] in NODES, row
    assert row["NODE"] == obj["spec"]["nodeName"]

    notes = obj["metadata"]["annotations"]
    zone = row["NODE"].removeprefix("nodeless-")
    instance_id = notes.get("nodeless.dev/instance-id", "")
    assert instance_id.startswith("eci-"), notes
    expected = {
        "nodeless.dev/instance-spec": "2.0-4.0Gi",  # nothing requested: 2 vCPU / 4 GiB
        "nodeless.dev/instance-id": instance_id,
        "nodeless.dev/zone": zone,
        "nodeless.dev/capacity-type": "on-demand",
        "k8s.aliyun.com/eci-instance-spec": "2.0-4.0Gi",
        "k8s.aliyun.com/eci-instance-id": instance_id,
        "k8s.aliyun.com/eci-instance-zone": zone,
    }
    assert {k: notes.get(k) for k in expected} == expected, notes
    assert float(notes["nodeless.dev/price"]) > 0, notes

    def described() -> str | None:
        text = sim.kubectl("describe", "pod", "web", "-n", ns).stdout
        events = text.split("\nEvents:", 1)[-1]
        return text if "Scheduled" in events and "InstanceRunning" in events else None

    text = eventually(described, "describe to show the Scheduled and InstanceRunning events")
    for key, value in expected.items():
        assert f"{key}: {value}" in text, (key, text)
    assert re.search(rf"^Node:\s+{row['NODE']}/", text, re.M), text
    assert re.search(rf"^IP:\s+{re.escape(ip)}$", text, re.M), text
    events = text.split("\nEvents:", 1)[1]
    scheduled = [line for line in events.splitlines() if "Scheduled" in line]
    assert len(scheduled) == 1 and f"{ns}/web to {row['NODE']}" in scheduled[0], events
    running = [line for line in events.splitlines() if "InstanceRunning" in line]
    assert len(running) == 1 and instance_id in running[0], events

    listed = rows(sim.kubectl("get", "instances", "-n", ns).stdout)
    assert [r["NAME"] for r in listed] == ["web"], listed
    record = get_json(sim, ns, "instance", "web")
    assert record["spec"]["instanceID"] == instance_id
    assert record["spec"]["podUID"] == obj["metadata"]["uid"]
    assert record["spec"]["zone"] == zone


@pytest.mark.parametrize(
    ("code", "status", "phase"), [(3, "Error", "Failed"), (0, "Completed", "Succeeded")]
)
def test_exit_code_ends_the_pod(sim: Cluster, ns: str, code: int, status: str, phase: str) -> None:
    apply(sim, ns, pod("job", ["sh", "-c", f"exit {code}"], restart_policy="Never"))

    def ended() -> str | None:
        got = sim.kubectl(
            "get", "pod", "job", "-n", ns, "-o", "jsonpath={.status.phase}"
        ).stdout.strip()
        return got if got in ("Succeeded", "Failed") else None

    assert eventually(ended, f"pod with `exit {code}` to end") == phase
    row = rows(sim.kubectl("get", "pod", "job", "-n", ns).stdout)[0]
    assert (row["READY"], row["STATUS"], row["RESTARTS"]) == ("0/1", status, "0"), row
    terminated = get_json(sim, ns, "pod", "job")["status"]["containerStatuses"][0]["state"]
    assert terminated["terminated"]["exitCode"] == code, terminated


def test_delete_pod_removes_it_and_its_instance(sim: Cluster, ns: str) -> None:
    apply(sim, ns, pod("gone"))
    wait_ready(sim, ns, "gone")
    assert [r["NAME"] for r in rows(sim.kubectl("get", "instances", "-n", ns).stdout)] == ["gone"]

    sim.kubectl("delete", "pod", "gone", "-n", ns, "--wait=false")
    sim.kubectl("wait", "-n", ns, "--for=delete", "pod/gone", "--timeout=30s", timeout=45)
    assert absent(sim, ns, "pod", "gone")
    eventually(lambda: absent(sim, ns, "instance", "gone"), "the Instance record to go")
    assert get_json(sim, ns, "instances")["items"] == []


def test_nodeless_cost_reports_running_and_ended_instances_by_workload(
    sim: Cluster, ns: str
) -> None:
    sim.kubectl(
        "create", "deployment", "web", "-n", ns, "--replicas=2",
        "--image=registry.local/nodeless/busybox:1.36", "--", "sleep", "infinity",
    )  # fmt: skip
    sim.kubectl("rollout", "status", "-n", ns, "deployment/web", "--timeout=60s", timeout=90)
    apply(sim, ns, pod("lone"))
    wait_ready(sim, ns, "lone")
    sim.kubectl("delete", "pod", "lone", "-n", ns, "--wait=true", timeout=60)

    def report(*args: str) -> dict[str, Any]:
        out = subprocess.run(
            [str(VENV_BIN / "nodeless"), "cost", "--kubeconfig", str(sim.kubeconfig),
             "-n", ns, "-o", "json", *args],
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        return dict(json.loads(out.stdout))

    def both() -> dict[str, Any] | None:
        found = report("--by", "workload")
        return found if len(found["items"]) == 2 else None

    found = eventually(both, "a bill for the Deployment and for the ended pod")
    by_workload = {item["workload"]: item for item in found["items"]}
    assert set(by_workload) == {"Deployment/web", "Pod/lone"}
    assert by_workload["Deployment/web"]["pods"] == 2
    assert by_workload["Deployment/web"]["capacityTypes"] == ["on-demand"]
    assert found["currency"] == "USD"
    # The ended pod's bill is a BillingRecord anyone can list.
    records = json.loads(
        sim.kubectl(
            "get", "billingrecords", "-l", f"nodeless.dev/namespace={ns}", "-o", "json"
        ).stdout
    )["items"]
    assert [r["spec"]["podName"] for r in records] == ["lone"]
    assert int(records[0]["status"]["seconds"]) >= 1
    table = subprocess.run(
        [str(VENV_BIN / "nodeless"), "cost", "--kubeconfig", str(sim.kubeconfig), "-n", ns],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout.splitlines()  # fmt: skip
    assert table[0].split() == ["NAMESPACE", "PODS", "INSTANCE-SECONDS", "COST", "(USD)"]
    assert table[1].split()[:2] == [ns, "3"]
    assert table[-1].startswith("TOTAL")


# --- serverless admission through kubectl ---------------------------------------------


def test_privileged_deployment_is_refused_naming_the_field(sim: Cluster, ns: str) -> None:
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "priv"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "priv"}},
            "template": {
                "metadata": {"labels": {"app": "priv"}},
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": "busybox",
                            "securityContext": {"privileged": True},
                        }
                    ]
                },
            },
        },
    }
    result = refused(sim, ns, deployment)
    assert 'The Deployment "priv" is invalid' in result.stderr, result.stderr
    assert "spec.template.spec.containers[0].securityContext.privileged" in result.stderr
    assert "Forbidden" in result.stderr
    assert absent(sim, ns, "deployment", "priv")


def test_daemonset_is_forbidden(sim: Cluster, ns: str) -> None:
    daemonset = {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": "agent"},
        "spec": {
            "selector": {"matchLabels": {"app": "agent"}},
            "template": {
                "metadata": {"labels": {"app": "agent"}},
                "spec": {"containers": [{"name": "app", "image": "busybox"}]},
            },
        },
    }
    result = refused(sim, ns, daemonset)
    assert "Error from server (Forbidden)" in result.stderr, result.stderr
    assert 'daemonsets.apps "agent" is forbidden' in result.stderr, result.stderr
    assert absent(sim, ns, "daemonset", "agent")


def test_nodeport_service_is_refused_and_clusterip_served(sim: Cluster, ns: str) -> None:
    def service(name: str, kind: str) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name},
            "spec": {"type": kind, "selector": {"app": "x"}, "ports": [{"port": 80}]},
        }

    result = refused(sim, ns, service("np", "NodePort"))
    assert 'The Service "np" is invalid' in result.stderr, result.stderr
    assert "spec.type" in result.stderr and "NodePort" in result.stderr, result.stderr
    assert absent(sim, ns, "service", "np")
    apply(sim, ns, service("cip", "ClusterIP"))
    assert get_json(sim, ns, "service", "cip")["spec"]["type"] == "ClusterIP"


def test_spot_price_limit_without_strategy_is_422_naming_the_annotation(
    sim: Cluster, ns: str
) -> None:
    obj = pod("spot", annotations={"nodeless.dev/spot-price-limit": "0.5"})
    result = refused(sim, ns, obj, "-v=6")
    assert 'status="422 Unprocessable Entity"' in result.stderr, result.stderr[-2000:]
    assert 'The Pod "spot" is invalid' in result.stderr, result.stderr[-2000:]
    assert "metadata.annotations[nodeless.dev/spot-price-limit]" in result.stderr
    assert absent(sim, ns, "pod", "spot")


# --- annotations that steer placement --------------------------------------------------


def test_eci_use_specs_annotation_picks_the_spec(sim: Cluster, ns: str) -> None:
    apply(sim, ns, pod("sized", annotations={"k8s.aliyun.com/eci-use-specs": "4-8Gi"}))
    wait_ready(sim, ns, "sized")
    notes = annotations_of(sim, ns, "sized")
    assert notes.get("nodeless.dev/instance-spec") == "4.0-8.0Gi", notes
    assert notes.get("k8s.aliyun.com/eci-instance-spec") == "4.0-8.0Gi", notes
    record = get_json(sim, ns, "instance", "sized")["spec"]
    assert (float(record["vcpu"]), float(record["memoryGiB"])) == (4.0, 8.0), record


def test_zones_annotation_places_pods_in_that_zone(sim: Cluster, ns: str) -> None:
    names = [f"zb-{i}" for i in range(4)]  # one could land in zone-b by chance; four cannot
    apply(sim, ns, *(pod(n, annotations={"nodeless.dev/zones": "zone-b"}) for n in names))
    wait_ready(sim, ns, *names)
    wide = rows(sim.kubectl("get", "pods", "-n", ns, "-o", "wide").stdout)
    assert {r["NAME"]: r["NODE"] for r in wide} == dict.fromkeys(names, "nodeless-zone-b"), wide
    for name in names:
        assert annotations_of(sim, ns, name).get("nodeless.dev/zone") == "zone-b"


# --- kubectl top and the HorizontalPodAutoscaler ---------------------------------------


def test_kubectl_autoscale_scales_a_busy_deployment_up_to_its_maximum(
    sim: Cluster, ns: str
) -> None:
    """Pods declaring a CPU burn (the simulated provider's override) run at
    100 % of their request; an HPA targeting 50 % doubles the Deployment
    each 15 s sync until its maximum, and `kubectl top` shows the burn."""
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "burner", "namespace": ns},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "burner"}},
            "template": {
                "metadata": {
                    "labels": {"app": "burner"},
                    "annotations": {"nodeless.dev/simulated-cpu": "500m"},
                },
                "spec": {
                    "containers": [
                        {
                            "name": "main",
                            "image": "busybox:1.36",
                            "command": ["sleep", "3600"],
                            "resources": {"requests": {"cpu": "500m", "memory": "512Mi"}},
                        }
                    ]
                },
            },
        },
    }
    apply(sim, ns, deployment)
    sim.kubectl("-n", ns, "rollout", "status", "deployment/burner", "--timeout=60s", timeout=90)

    sim.kubectl(
        "-n", ns, "autoscale", "deployment", "burner", "--cpu-percent=50", "--min=1", "--max=3"
    )

    def scaled() -> dict[str, Any] | None:
        hpa = get_json(sim, ns, "hpa", "burner")
        status = hpa.get("status") or {}
        return hpa if status.get("desiredReplicas") == 3 else None

    hpa = eventually(
        scaled,
        "the HPA to want 3 replicas (1 -> 2, then 2 -> 4 held at 3)",
        timeout=120,
        interval=1.0,
    )
    sim.kubectl("-n", ns, "rollout", "status", "deployment/burner", "--timeout=60s", timeout=90)
    top = sim.kubectl("-n", ns, "top", "pod", "-l", "app=burner").stdout
    events = sim.kubectl(
        "-n", ns, "get", "events", "--field-selector", "reason=SuccessfulRescale"
    ).stdout

    conditions = {c["type"]: c for c in hpa["status"]["conditions"]}
    assert conditions["ScalingLimited"]["status"] == "True"
    assert conditions["ScalingLimited"]["reason"] == "TooManyReplicas"
    assert get_json(sim, ns, "deployment", "burner")["status"]["readyReplicas"] == 3
    assert "New size: 2; reason: cpu resource utilization (percentage of request) above target" in (
        events
    )
    burning = [r for r in rows(top) if r["NAME"].startswith("burner-")]
    assert len(burning) == 3 and all(r["CPU(cores)"] == "500m" for r in burning), top
