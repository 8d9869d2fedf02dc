"""`kubectl logs` against `nodeless up --provider cri`: real containers' output
through GET pods/{name}/log, with the options and errors kubectl users know."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator

import pytest
from conftest import VENV_BIN, Cluster, remove_pod_network, remove_pods, start_cluster, stop_cluster

from nodeless.instances.providers.cri import containerd

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

POD_CIDR = "10.94.0.0/24"
BRIDGE = "nltest8"  # its own: a bridge keeps the address of the first CIDR it served
IMAGE = "registry.local/nodeless/busybox:1.36"
PODS = f"""
apiVersion: v1
kind: Pod
metadata: {{name: printer, namespace: default}}
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - name: main
    image: {IMAGE}
    command: ["sh", "-c", "echo one; echo two; echo three; sleep 3600"]
---
apiVersion: v1
kind: Pod
metadata: {{name: pair, namespace: default}}
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - {{name: a, image: {IMAGE}, command: ["sh", "-c", "echo from-a; sleep 3600"]}}
  - {{name: b, image: {IMAGE}, command: ["sh", "-c", "echo from-b; sleep 3600"]}}
---
apiVersion: v1
kind: Pod
metadata:
  name: annotated
  namespace: default
  annotations: {{kubectl.kubernetes.io/default-container: b}}
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - {{name: a, image: {IMAGE}, command: ["sh", "-c", "echo from-a; sleep 3600"]}}
  - {{name: b, image: {IMAGE}, command: ["sh", "-c", "echo from-b; sleep 3600"]}}
---
apiVersion: v1
kind: Pod
metadata: {{name: ticker, namespace: default}}
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - name: main
    image: {IMAGE}
    command: ["sh", "-c", "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.5; done"]
---
apiVersion: v1
kind: Pod
metadata: {{name: crasher, namespace: default}}
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - name: main
    image: {IMAGE}
    command: ["sh", "-c", "echo attempt $(date +%s%N); sleep 1; exit 3"]
"""
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d) ")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if why := containerd.unavailable_reason():
        pytest.skip(why)
    data = tmp_path_factory.mktemp("logs") / "data"
    data.mkdir()
    c = start_cluster(
        data, provider="cri", options=("--pod-cidr", POD_CIDR, "--pod-bridge", BRIDGE)
    )
    try:
        c.kubectl("apply", "-f", "-", input=PODS)
        c.kubectl(
            "wait",
            "--for=condition=Ready",
            "pod/printer",
            "pod/pair",
            "pod/annotated",
            "pod/ticker",
            "--timeout=90s",
            timeout=120,
        )
        yield c
    finally:
        stop_cluster(c)
        remove_pods(data, POD_CIDR, BRIDGE)
        remove_pod_network(BRIDGE)


def lines(cluster: Cluster, *args: str) -> list[str]:
    return cluster.kubectl("logs", *args).stdout.splitlines()


def test_logs_tail_and_timestamps(cluster: Cluster) -> None:
    assert lines(cluster, "printer") == ["one", "two", "three"]
    assert lines(cluster, "printer", "--tail=1") == ["three"]
    assert lines(cluster, "printer", "--limit-bytes=4") == ["one"]
    assert lines(cluster, "printer", "--since=1h") == ["one", "two", "three"]
    stamped = lines(cluster, "printer", "--timestamps")
    assert len(stamped) == 3
    assert all(TIMESTAMP.match(line) for line in stamped), stamped
    assert [line.split(" ", 1)[1] for line in stamped] == ["one", "two", "three"]


def test_containers_are_chosen_as_upstream(cluster: Cluster) -> None:
    wrong = cluster.kubectl("logs", "printer", "-c", "wrong", check=False)
    assert wrong.returncode != 0
    assert "container wrong is not valid for pod printer" in wrong.stderr
    # kubectl itself picks the first container (saying so); the server, asked
    # directly, wants one named.
    first = cluster.kubectl("logs", "pair")
    assert first.stdout.splitlines() == ["from-a"]
    assert 'Defaulted container "a" out of: a, b' in first.stderr
    both = cluster.kubectl("get", "--raw", "/api/v1/namespaces/default/pods/pair/log", check=False)
    assert both.returncode != 0
    assert "a container name must be specified for pod pair, choose one of: [a b]" in both.stderr
    assert lines(cluster, "pair", "-c", "b") == ["from-b"]
    assert lines(cluster, "annotated") == ["from-b"]
    missing = cluster.kubectl("logs", "nosuchpod", check=False)
    assert missing.returncode != 0
    assert 'pods "nosuchpod" not found' in missing.stderr


def test_follow_streams_new_lines(cluster: Cluster) -> None:
    kubectl = shutil.which("kubectl", path=str(VENV_BIN)) or "kubectl"
    env = dict(os.environ, KUBECONFIG=str(cluster.kubeconfig), HOME=str(cluster.data_dir))
    proc = subprocess.Popen(
        [kubectl, "logs", "-f", "--tail=1", "ticker"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    got: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            got.append(line.strip())
            if len(got) == 2:
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout=15)
    proc.kill()
    proc.wait()
    assert len(got) == 2, got
    first, second = (int(line.split()[1]) for line in got)
    assert second == first + 1, "the second line was printed after the request"


def test_previous_of_a_restarted_container(cluster: Cluster) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        pod = json.loads(cluster.kubectl("get", "pod", "crasher", "-o", "json").stdout)
        statuses = pod["status"].get("containerStatuses") or []
        if statuses and statuses[0].get("restartCount", 0) >= 1:
            break
        time.sleep(0.5)
    else:
        pytest.fail("crasher was not restarted in time")
    previous = lines(cluster, "crasher", "--previous")
    assert len(previous) == 1 and previous[0].startswith("attempt "), previous
    never = cluster.kubectl("logs", "printer", "--previous", check=False)
    assert never.returncode != 0
    assert 'previous terminated container "main" in pod "printer" not found' in never.stderr
