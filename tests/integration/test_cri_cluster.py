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
import urllib.request
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
        command:
        - sh
        - -c
        - >-
          mkdir -p /www && echo "hello from $(hostname)" > /www/index.html
          && httpd -p 8080 -h /www && trap 'exit 0' TERM; sleep 3600 & wait
        ports: [{name: http, containerPort: 8080}]
        readinessProbe:
          httpGet: {path: /index.html, port: http}
          periodSeconds: 1
"""
FILES = """
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: default}
data: {greeting: hello}
---
apiVersion: v1
kind: Secret
metadata: {name: password, namespace: default}
stringData: {password: s3cret}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: keep, namespace: default}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 10Mi}}
"""
READER = """
apiVersion: v1
kind: Pod
metadata: {name: reader-%(n)s, namespace: default, labels: {team: blue}}
spec:
  restartPolicy: Never
  containers:
  - name: main
    image: registry.local/nodeless/busybox:1.36
    command:
    - sh
    - -c
    - >-
      cat /etc/settings/greeting /etc/password/password /etc/pod/labels; echo;
      cat /data/count 2>/dev/null || echo none; echo %(n)s > /data/count
    volumeMounts:
    - {name: settings, mountPath: /etc/settings}
    - {name: password, mountPath: /etc/password}
    - {name: pod, mountPath: /etc/pod}
    - {name: data, mountPath: /data}
  volumes:
  - {name: settings, configMap: {name: settings}}
  - {name: password, secret: {secretName: password}}
  - name: pod
    downwardAPI: {items: [{path: labels, fieldRef: {fieldPath: metadata.labels}}]}
  - {name: data, persistentVolumeClaim: {claimName: keep}}
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
        for ip, _ in before.values():
            with urllib.request.urlopen(f"http://{ip}:8080/index.html", timeout=10) as reply:
                assert reply.read().decode().startswith("hello from sleeper-")
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


def test_configmap_secret_downward_api_and_claim_files_read_back_through_kubectl_logs(
    data_dir: Path,
) -> None:
    options = ("--pod-cidr", POD_CIDR, "--pod-bridge", BRIDGE)
    cluster = start_cluster(data_dir, provider="cri", options=options)
    try:
        cluster.kubectl("apply", "-f", "-", input=FILES)
        outputs = []
        for n in ("1", "2"):
            cluster.kubectl("apply", "-f", "-", input=READER % {"n": n})
            cluster.kubectl(
                "wait",
                f"pod/reader-{n}",
                "--for=jsonpath={.status.phase}=Succeeded",
                "--timeout=60s",
                timeout=90,
            )
            outputs.append(cluster.kubectl("logs", f"reader-{n}").stdout)
            cluster.kubectl("delete", "pod", f"reader-{n}", "--wait=true", timeout=60)
        pvc = json.loads(cluster.kubectl("get", "pvc", "keep", "-o", "json").stdout)
    finally:
        stop_cluster(cluster)

    assert outputs[0] == 'hellos3cretteam="blue"\nnone\n'
    assert outputs[1] == 'hellos3cretteam="blue"\n1\n', "the claim kept what pod 1 wrote"
    assert pvc["status"]["phase"] == "Bound"
