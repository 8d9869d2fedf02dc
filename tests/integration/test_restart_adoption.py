"""A restarted `nodeless up` adopts the instances it had, neither leaking nor
duplicating them (DESIGN.md, rules of the house).

Ten long-running pods on the simulated provider; the process is stopped,
once with SIGKILL (a crash) and once with SIGTERM (a clean stop), and started
again on the same data dir. Afterwards the same pods (same uids) are still
Running on the same instances (same instance ids, pod IPs, start times), the
Instance records are the very same objects (same uids, not rewritten), and no
pod was scheduled a second time. Deleting the pods then releases every record.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from conftest import Cluster, start_cluster

pytestmark = pytest.mark.integration

NS = "adopt"
PODS = [f"keep-{i}" for i in range(10)]
SETTLE_SECONDS = 3.0

T = TypeVar("T")


def start_simulated(data_dir: Path) -> Cluster:
    """`nodeless up --provider simulated` on `data_dir`, on a fresh port each time
    (the kubeconfig in the data dir is rewritten with it)."""
    return start_cluster(data_dir, provider="simulated", zones=("zone-a", "zone-b"))


def stop(cluster: Cluster, sig: signal.Signals) -> None:
    cluster.process.send_signal(sig)
    try:
        cluster.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        cluster.process.kill()
        cluster.process.wait()
        raise AssertionError(f"nodeless up did not stop within 30 s of {sig.name}") from None


def dump(obj: Any) -> str:
    return json.dumps(obj, indent=1) + "\n"


def pod(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "keep"}},
        "spec": {
            "containers": [{"name": "app", "image": "busybox", "command": ["sleep", "infinity"]}]
        },
    }


def get_items(cluster: Cluster, ns: str, resource: str) -> list[dict[str, Any]]:
    out = cluster.kubectl("get", resource, "-n", ns, "-o", "json").stdout
    items: list[dict[str, Any]] = json.loads(out)["items"]
    return items


def eventually(probe: Callable[[], T | None], what: str, timeout: float = 30.0) -> T:
    """Poll until `probe` returns something truthy (a liveness bound, not a timing check)."""
    deadline = time.monotonic() + timeout
    while True:
        last = probe()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}; last: {last!r}")
        time.sleep(0.2)


def event_counts(cluster: Cluster, ns: str) -> Counter[tuple[str, str]]:
    """(pod name, reason) -> how many times it was reported (aggregated events count)."""
    counts: Counter[tuple[str, str]] = Counter()
    for event in get_items(cluster, ns, "events"):
        involved = event.get("involvedObject") or {}
        if involved.get("kind") != "Pod":
            continue
        times = max(
            int(event.get("count") or 1), int((event.get("series") or {}).get("count") or 1)
        )
        counts[involved.get("name", ""), event.get("reason", "")] += times
    return counts


@dataclass
class Snapshot:
    pods: dict[str, dict[str, Any]] = field(default_factory=dict)
    records: dict[str, dict[str, Any]] = field(default_factory=dict)


def snapshot(cluster: Cluster) -> Snapshot:
    shot = Snapshot()
    for item in get_items(cluster, NS, "pods"):
        meta, status = item["metadata"], item.get("status") or {}
        containers = status.get("containerStatuses") or [{}]
        shot.pods[meta["name"]] = {
            "uid": meta["uid"],
            "phase": status.get("phase"),
            "instance-id": (meta.get("annotations") or {}).get("nodeless.dev/instance-id"),
            "podIP": status.get("podIP"),
            "nodeName": item["spec"].get("nodeName"),
            "startTime": status.get("startTime"),
            "startedAt": ((containers[0].get("state") or {}).get("running") or {}).get("startedAt"),
            "restartCount": containers[0].get("restartCount"),
            "ready": containers[0].get("ready"),
        }
    for item in get_items(cluster, NS, "instances"):
        meta, spec = item["metadata"], item.get("spec") or {}
        shot.records[meta["name"]] = {
            "uid": meta["uid"],
            "resourceVersion": meta["resourceVersion"],
            "instanceID": spec.get("instanceID"),
            "podUID": spec.get("podUID"),
            "state": (item.get("status") or {}).get("state"),
        }
    return shot


@dataclass
class Adoption:
    data_dir: Path
    cluster: Cluster
    before: Snapshot
    events: Counter[tuple[str, str]]
    restarts: int = 0


@pytest.fixture(scope="module")
def adoption(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Adoption]:
    data_dir = tmp_path_factory.mktemp("adoption") / "data"
    data_dir.mkdir()
    holder = Adoption(data_dir, start_simulated(data_dir), Snapshot(), Counter())
    cluster = holder.cluster
    try:
        cluster.kubectl(
            "apply",
            "-f",
            "-",
            input=dump({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}),
        )
        cluster.kubectl(
            "apply", "-n", NS, "-f", "-", input="".join(f"---\n{dump(pod(n))}" for n in PODS)
        )
        cluster.kubectl(
            "wait",
            "-n",
            NS,
            "--for=jsonpath={.status.phase}=Running",
            *(f"pod/{n}" for n in PODS),
            "--timeout=30s",
            timeout=45,
        )

        # Quiescent before the stop: every record has caught up with its Running
        # instance and every pod's Scheduled and InstanceRunning events are stored
        # (events are written asynchronously, and a SIGKILL may lose unsent ones).
        def settled() -> Snapshot | None:
            shot = snapshot(cluster)
            counts = event_counts(cluster, NS)
            done = (
                sorted(shot.records) == sorted(PODS)
                and all(r["state"] == "Running" for r in shot.records.values())
                and all(counts[n, "Scheduled"] and counts[n, "InstanceRunning"] for n in PODS)
            )
            return shot if done else None

        holder.before = eventually(settled, "records Running and events stored")
        holder.events = event_counts(cluster, NS)
        yield holder
    finally:
        if holder.cluster.process.poll() is None:
            stop(holder.cluster, signal.SIGTERM)


def check_before(shot: Snapshot) -> None:
    assert sorted(shot.pods) == sorted(PODS)
    assert all(p["phase"] == "Running" for p in shot.pods.values()), shot.pods
    ips = [p["podIP"] for p in shot.pods.values()]
    assert all(ips) and len(set(ips)) == len(ips), f"pod IPs not unique: {ips}"
    ids = [p["instance-id"] for p in shot.pods.values()]
    assert all(ids) and len(set(ids)) == len(ids), ids
    for name, record in shot.records.items():
        assert record["podUID"] == shot.pods[name]["uid"]
        assert record["instanceID"] == shot.pods[name]["instance-id"]


def restart_and_check(adoption: Adoption, sig: signal.Signals) -> None:
    before = adoption.before
    check_before(before)
    stop(adoption.cluster, sig)
    adoption.cluster = cluster = start_simulated(adoption.data_dir)
    adoption.restarts += 1

    # The restarted components work: a new pod (elsewhere) is scheduled and runs.
    probe_ns = f"probe-{adoption.restarts}"
    cluster.kubectl(
        "apply",
        "-f",
        "-",
        input=dump({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": probe_ns}}),
    )
    cluster.kubectl("apply", "-n", probe_ns, "-f", "-", input=dump(pod("probe")))
    cluster.kubectl(
        "wait", "-n", probe_ns, "--for=condition=Ready", "pod/probe", "--timeout=30s", timeout=45
    )
    # ... and has had time to act wrongly on the adopted ones, if it would.
    time.sleep(SETTLE_SECONDS)

    after = snapshot(cluster)
    assert sorted(after.pods) == sorted(PODS), f"pods after {sig.name}: {sorted(after.pods)}"
    for name in PODS:
        was, now = before.pods[name], after.pods[name]
        assert now == was, f"pod {name} changed across a {sig.name} restart:\n{was}\n{now}"

    assert sorted(after.records) == sorted(PODS), (
        f"Instance records after {sig.name}: {sorted(after.records)}"
    )
    for name in PODS:
        was, now = before.records[name], after.records[name]
        assert now["uid"] == was["uid"], f"Instance {name} was recreated across {sig.name}"
        assert now == was, f"Instance {name} changed across a {sig.name} restart:\n{was}\n{now}"

    probe = cluster.kubectl(
        "get", "pod", "probe", "-n", probe_ns, "-o", "jsonpath={.status.podIP}"
    ).stdout
    adopted_ips = {p["podIP"] for p in before.pods.values()}
    assert probe and probe not in adopted_ips, (
        f"a new pod got IP {probe}, already held by an adopted pod ({sorted(adopted_ips)})"
    )

    counts = event_counts(cluster, NS)
    for name in PODS:
        for reason in ("Scheduled", "InstanceRunning"):
            assert counts[name, reason] == 1, (
                f"pod {name}: {counts[name, reason]} {reason} events after a {sig.name} restart"
            )
    unexpected = {k: v for k, v in counts.items() if k not in adoption.events}
    assert not unexpected, f"new events about adopted pods after {sig.name}: {unexpected}"


def test_sigkill_restart_adopts_instances(adoption: Adoption) -> None:
    restart_and_check(adoption, signal.SIGKILL)


def test_sigterm_restart_adopts_instances(adoption: Adoption) -> None:
    restart_and_check(adoption, signal.SIGTERM)


def test_deleting_adopted_pods_releases_their_records(adoption: Adoption) -> None:
    cluster = adoption.cluster
    cluster.kubectl("delete", "pods", "--all", "-n", NS, "--wait=false")
    cluster.kubectl(
        "wait",
        "-n",
        NS,
        "--for=delete",
        *(f"pod/{n}" for n in PODS),
        "--timeout=30s",
        timeout=45,
    )
    assert get_items(cluster, NS, "pods") == []
    eventually(
        lambda: get_items(cluster, NS, "instances") == [], "every Instance record to be released"
    )
