"""`nodeless up --provider cri` end to end with kubectl: a Deployment's pods
run as real containers with IPs from the pod network, and a restarted
`nodeless up` adopts them (same instances, same IPs, nothing started twice).
Readiness comes from an exec probe, so `kubectl rollout status` waits on it,
and the kubelet's Events (Created, Started) are on the pods."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Cluster, start_cluster, stop_cluster

from nodeless.instances.providers.cri import containerd

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

POD_CIDR = "10.90.0.0/24"
BRIDGE = "nltest9"  # its own: a bridge keeps the address of the first CIDR it served
DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: sleeper, namespace: default}
spec:
  replicas: 2
  selector: {matchLabels: {app: sleeper}}
  template:
    metadata: {labels: {app: sleeper}}
    spec:
      terminationGracePeriodSeconds: 5
      containers:
      - name: main
        image: registry.local/nodeless/busybox:1.36
        command: ["sh", "-c", "trap 'exit 0' TERM; touch /tmp/ready; sleep 3600 & wait"]
        readinessProbe:
          exec: {command: ["cat", "/tmp/ready"]}
          periodSeconds: 1
"""


def shims(data_dir: Path) -> set[str]:
    """containerd-shim processes serving this cluster's containerd."""
    # -ww: unlimited width (ps cuts lines at 80 columns when not on a terminal).
    out = subprocess.run(["ps", "-eww", "-o", "pid,args"], capture_output=True, text=True).stdout
    return {
        line.split()[0]
        for line in out.splitlines()
        if "containerd-shim" in line and str(data_dir) in line
    }


def running_pods(cluster: Cluster) -> dict[str, tuple[str, str]]:
    """name -> (podIP, instance id) of the Running pods of the Deployment."""
    pods = json.loads(cluster.kubectl("get", "pods", "-l", "app=sleeper", "-o", "json").stdout)
    return {
        p["metadata"]["name"]: (
            p["status"].get("podIP", ""),
            p["metadata"]["annotations"]["nodeless.dev/instance-id"],
        )
        for p in pods["items"]
        if p["status"].get("phase") == "Running"
    }


def remove_pods(data_dir: Path) -> None:
    """Whatever a failed test left running: its containerd, once more, removing every pod."""
    settings = containerd.ContainerdSettings(
        data_dir / "containerd", pod_cidr=POD_CIDR, bridge=BRIDGE
    )

    async def run() -> None:
        runtime = containerd.Containerd(settings)
        await runtime.start()
        await runtime.stop(remove_pods=True)

    asyncio.run(run())


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    if why := containerd.unavailable_reason():
        pytest.skip(why)
    data = tmp_path / "data"
    data.mkdir()
    yield data
    if shims(data):
        remove_pods(data)
    subprocess.run(["ip", "link", "del", BRIDGE], capture_output=True)


def test_a_deployment_runs_real_pods_that_survive_a_restart(data_dir: Path) -> None:
    options = ("--pod-cidr", POD_CIDR, "--pod-bridge", BRIDGE)
    cluster = start_cluster(data_dir, provider="cri", options=options)
    try:
        cluster.kubectl("apply", "-f", "-", input=DEPLOYMENT)
        cluster.kubectl("rollout", "status", "deployment/sleeper", "--timeout=120s", timeout=150)
        before = running_pods(cluster)
        assert len(before) == 2
        network = ipaddress.ip_network(POD_CIDR)
        assert all(ipaddress.ip_address(ip) in network for ip, _ in before.values())
        assert len({ip for ip, _ in before.values()}) == 2
        containers = shims(data_dir)
        assert containers, "each pod is a real sandbox with its shim"
        name = sorted(before)[0]
        events = json.loads(
            cluster.kubectl(
                "get", "events", "--field-selector", f"involvedObject.name={name}", "-o", "json"
            ).stdout
        )
        reasons = {e["reason"] for e in events["items"]}
        assert {"Scheduled", "Created", "Started"} <= reasons, reasons
    except BaseException:
        stop_cluster(cluster)
        raise
    stop_cluster(cluster)

    cluster = start_cluster(data_dir, provider="cri", options=options)
    try:
        cluster.kubectl("rollout", "status", "deployment/sleeper", "--timeout=60s", timeout=90)
        assert running_pods(cluster) == before
        assert shims(data_dir) == containers, "adopted, not started again"
        cluster.kubectl("delete", "deployment", "sleeper", "--cascade=foreground", timeout=120)
        cluster.kubectl(
            "wait", "--for=delete", "pod", "-l", "app=sleeper", "--timeout=60s", timeout=90
        )
    finally:
        stop_cluster(cluster)
    assert shims(data_dir) == set(), "deleted pods leave no sandbox behind"
