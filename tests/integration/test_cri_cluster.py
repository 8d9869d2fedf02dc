"""`nodeless up --provider cri` end to end with kubectl: a Deployment's pods
run as real containers with IPs from the pod network, and a restarted
`nodeless up` adopts them (same instances, same IPs, nothing started twice).
Readiness comes from an exec probe, so `kubectl rollout status` waits on it,
and the kubelet's Events (Created, Started) are on the pods."""

from __future__ import annotations

import concurrent.futures
import fcntl
import ipaddress
import json
import os
import pty
import select
import struct
import subprocess
import termios
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    Cluster,
    eventually,
    free_port,
    remove_pod_network,
    remove_pods,
    shims,
    start_cluster,
    stop_cluster,
)
from kubernetes import client as kube_client
from kubernetes import config as kube_config
from kubernetes import stream as kube_stream

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


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    if why := containerd.unavailable_reason():
        pytest.skip(why)
    data = tmp_path / "data"
    data.mkdir()
    yield data
    remove_pods(data, POD_CIDR, BRIDGE)
    remove_pod_network(BRIDGE)


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


SHELL_POD = """
apiVersion: v1
kind: Pod
metadata: {name: shell, namespace: default}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: registry.local/nodeless/busybox:1.36
    command:
    - sh
    - -c
    - >-
      mkdir -p /www && echo forwarded > /www/index.html && httpd -p 8080 -h /www
      && trap 'exit 0' TERM; sleep 3600 & wait
    volumeMounts: [{name: info, mountPath: /etc/info}]
  volumes:
  - name: info
    downwardAPI: {items: [{path: labels, fieldRef: {fieldPath: metadata.labels}}]}
---
apiVersion: v1
kind: Pod
metadata: {name: echo, namespace: default}
spec:
  restartPolicy: Never
  containers:
  - name: main
    image: registry.local/nodeless/busybox:1.36
    stdin: true
    stdinOnce: true
    command:
    - sh
    - -c
    - while read l; do echo "[$l]"; done; echo bye
---
apiVersion: v1
kind: Pod
metadata: {name: done, namespace: default}
spec:
  restartPolicy: Never
  containers:
  - name: main
    image: registry.local/nodeless/busybox:1.36
    command: ["true"]
"""


def test_kubectl_exec_runs_commands_in_a_real_pod_with_their_output_and_exit_code(
    data_dir: Path,
) -> None:
    options = ("--pod-cidr", POD_CIDR, "--pod-bridge", BRIDGE)
    cluster = start_cluster(data_dir, provider="cri", options=options)
    try:
        cluster.kubectl("apply", "-f", "-", input=SHELL_POD)
        cluster.kubectl("wait", "pod/shell", "--for=condition=Ready", "--timeout=60s", timeout=90)
        cluster.kubectl(
            "wait",
            "pod/done",
            "--for=jsonpath={.status.phase}=Succeeded",
            "--timeout=60s",
            timeout=90,
        )

        failing = cluster.kubectl(
            "exec", "shell", "--", "sh", "-c", "echo out; echo err >&2; exit 3", check=False
        )
        name = cluster.kubectl("exec", "shell", "-c", "main", "--", "hostname")
        piped = cluster.kubectl(
            "exec", "-i", "shell", "--", "sh", "-c", "read x; echo got $x", input="hello\n"
        )
        finished = cluster.kubectl("exec", "done", "--", "true", check=False)
        missing = cluster.kubectl("exec", "shell", "-c", "nope", "--", "true", check=False)
        terminal_output, terminal_code = exec_in_a_terminal(
            cluster, b"stty size; echo $((6*7)); exit 5\r"
        )
        python_output = python_client_exec(cluster)
        copy_dir = data_dir.parent / "copied"
        cluster.kubectl("cp", "shell:/www", str(copy_dir))
        catted = cluster.kubectl("exec", "-i", "shell", "--", "cat", input="to the end\n")
        upload = data_dir.parent / "upload"
        (upload / "sub").mkdir(parents=True)
        (upload / "sub" / "file.txt").write_text("uploaded\n")
        cluster.kubectl("cp", str(upload), "shell:/tmp/upload")
        uploaded = cluster.kubectl("exec", "shell", "--", "cat", "/tmp/upload/sub/file.txt")
        labels_before = cluster.kubectl("exec", "shell", "--", "cat", "/etc/info/labels")
        cluster.kubectl("label", "pod", "shell", "tier=front")
        # the kubelet rewrites downward API files on a pod's update: well before a resync
        labels_after = eventually(
            lambda: (
                out
                if 'tier="front"'
                in (out := cluster.kubectl("exec", "shell", "--", "cat", "/etc/info/labels").stdout)
                else None
            ),
            "the new label in the downward API file",
            timeout=20,
        )
        cluster.kubectl("wait", "pod/echo", "--for=condition=Ready", "--timeout=60s", timeout=90)
        attached = cluster.kubectl("attach", "-i", "echo", input="a\nb\n", timeout=60)
        through_kubectl = kubectl_port_forward(cluster, 8080, requests=3)
        top_pods = cluster.kubectl("top", "pod", "--containers")
        top_nodes = cluster.kubectl("top", "node")
        forwarded = python_client_port_forward(cluster, 8080)
        refused = python_client_port_forward(cluster, 9)
    finally:
        stop_cluster(cluster)

    assert (failing.returncode, failing.stdout) == (3, "out\n")
    assert "err" in failing.stderr
    assert name.stdout == "shell\n"
    assert piped.stdout == "got hello\n"
    assert finished.returncode != 0
    assert "cannot exec into a container in a completed pod; current phase is Succeeded" in (
        finished.stderr
    )
    assert missing.returncode != 0
    assert "container nope is not valid for pod shell" in missing.stderr
    assert terminal_code == 5
    assert b"42\r\n" in terminal_output
    assert b"30 100" in terminal_output, "the terminal's size reached the pod"
    assert python_output == "from python\n"
    assert (copy_dir / "index.html").read_text() == "forwarded\n", "kubectl cp from the pod"
    assert catted.stdout == "to the end\n", "stdin's end reached the command"
    assert uploaded.stdout == "uploaded\n", "kubectl cp into the pod"
    assert labels_before.stdout == ""  # the pod has no labels yet
    assert labels_after == 'tier="front"'
    assert "[a]\n[b]\nbye\n" in attached.stdout, "kubectl attach with stdin to its end"
    [pod_line] = [line for line in top_pods.stdout.splitlines() if line.startswith("shell ")]
    assert pod_line.split()[1] == "main" and pod_line.split()[3].endswith("Mi"), top_pods.stdout
    assert "nodeless-" in top_nodes.stdout and "CPU(cores)" in top_nodes.stdout, top_nodes.stdout
    assert through_kubectl == ["forwarded\n"] * 3, "kubectl port-forward, concurrent requests"
    assert forwarded.startswith(b"HTTP/1.") and forwarded.endswith(b"forwarded\n")
    assert refused == b"error forwarding port 9"


def kubectl_port_forward(cluster: Cluster, port: int, requests: int) -> list[str]:
    """``kubectl port-forward`` (SPDY tunnelled in a WebSocket) to the pod's
    ``port``, then ``requests`` HTTP requests at once through it."""
    local = free_port()
    argv, env = cluster.kubectl_command("port-forward", "pod/shell", f"{local}:{port}")
    process = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert f"Forwarding from 127.0.0.1:{local}" in line, line

        def get(_: int) -> str:
            url = f"http://127.0.0.1:{local}/index.html"
            with urllib.request.urlopen(url, timeout=20) as reply:
                return str(reply.read().decode())

        with concurrent.futures.ThreadPoolExecutor(requests) as pool:
            return list(pool.map(get, range(requests)))
    finally:
        process.terminate()
        process.wait(timeout=20)


def python_client_port_forward(cluster: Cluster, port: int) -> bytes:
    """An HTTP request through ``kubernetes.stream.portforward`` (WebSocket
    channel pairs): the response, or the start of the port's error."""
    api_client = kube_config.new_client_from_config(config_file=str(cluster.kubeconfig))
    core = kube_client.CoreV1Api(api_client)
    try:
        forward = kube_stream.portforward(
            core.connect_get_namespaced_pod_portforward, "shell", "default", ports=str(port)
        )
        sock = forward.socket(port)
        sock.setblocking(True)
        sock.settimeout(20)
        response = b""
        try:
            sock.sendall(b"GET /index.html HTTP/1.0\r\nHost: shell\r\n\r\n")
            while chunk := sock.recv(4096):
                response += chunk
        except OSError:  # a refused port: the client closed its socket on the error
            pass
        deadline = time.monotonic() + 10
        while not response and forward.error(port) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        error = forward.error(port)
        sock.close()
        forward.close()
        if error:
            return error.encode()[: len("error forwarding port ") + len(str(port))]
        return response
    finally:
        api_client.close()


def exec_in_a_terminal(cluster: Cluster, keys: bytes) -> tuple[bytes, int]:
    """``kubectl exec -it`` on a pseudo-terminal of 30 rows by 100 columns,
    typing ``keys``; returns what the terminal showed and kubectl's exit code."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    argv, env = cluster.kubectl_command("exec", "-it", "shell", "--", "sh")
    process = subprocess.Popen(
        argv,
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        start_new_session=True,
    )
    os.close(slave)
    output = b""
    typed = False
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # the terminal closed: kubectl ended
                break
            if not chunk:
                break
            output += chunk
            if not typed and b"#" in output:  # the shell's prompt
                os.write(master, keys)
                typed = True
        elif process.poll() is not None:
            break
    os.close(master)
    return output, process.wait(timeout=30)


def python_client_exec(cluster: Cluster) -> str:
    """``kubernetes.stream.stream`` (WebSocket v4, text stdin frames)."""
    api_client = kube_config.new_client_from_config(config_file=str(cluster.kubeconfig))
    core = kube_client.CoreV1Api(api_client)
    try:
        return str(
            kube_stream.stream(
                core.connect_get_namespaced_pod_exec,
                "shell",
                "default",
                command=["sh", "-c", "echo from python"],
                stderr=True,
                stdin=False,
                stdout=True,
                tty=False,
            )
        )
    finally:
        api_client.close()


BURNER = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: burner, namespace: default}
spec:
  replicas: 1
  selector: {matchLabels: {app: burner}}
  template:
    metadata: {labels: {app: burner}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: main
        image: registry.local/nodeless/busybox:1.36
        command:
        - sh
        - -c
        - timeout 40 sh -c 'while :; do :; done'; trap 'exit 0' TERM; sleep 3600 & wait
        resources:
          requests: {cpu: 250m, memory: 256Mi}
          limits: {cpu: 250m, memory: 256Mi}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: burner, namespace: default}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: burner}
  minReplicas: 1
  maxReplicas: 2
  metrics:
  - type: Resource
    resource: {name: cpu, target: {type: Utilization, averageUtilization: 50}}
  behavior:
    scaleDown: {stabilizationWindowSeconds: 0}
"""


def test_an_hpa_scales_cpu_burning_real_pods_up_and_back_down(data_dir: Path) -> None:
    """Each pod burns its CPU limit for 40 s, then idles: the HPA (target
    50 %, no scale-down window) goes to its maximum while they burn and back
    to its minimum once they stop, reading CRI container stats."""
    options = ("--pod-cidr", POD_CIDR, "--pod-bridge", BRIDGE)
    cluster = start_cluster(data_dir, provider="cri", options=options)
    try:
        cluster.kubectl("apply", "-f", "-", input=BURNER)

        def replicas() -> int:
            deployment = json.loads(
                cluster.kubectl("get", "deployment", "burner", "-o", "json").stdout
            )
            return int(deployment["spec"]["replicas"])

        peak = eventually(lambda: replicas() == 2, "scale up to 2", timeout=150, interval=1.0)
        settled = eventually(
            lambda: replicas() == 1, "scale back down to 1", timeout=240, interval=1.0
        )
        events = cluster.kubectl(
            "get", "events", "--field-selector", "reason=SuccessfulRescale", "-o", "json"
        ).stdout
    finally:
        stop_cluster(cluster)

    assert peak and settled
    messages = [e["message"] for e in json.loads(events)["items"]]
    assert any(m.startswith("New size: 2; reason: cpu resource utilization") for m in messages)
    assert any(m == "New size: 1; reason: All metrics below target" for m in messages), messages


# A market that moves every 2 seconds, often above the pods' limit, with 2
# seconds' notice: reclaims within seconds instead of hours.
RESTLESS_MARKET = """
seed: 3
tick_seconds: 2
reclaim_notice_seconds: 2
ratio: {mean: "0.35", volatility: "0.9", min: "0.05", max: "0.95"}
stock: {default: 100}
zones: {}
"""
SPOT_DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: bidder, namespace: default}
spec:
  replicas: 1
  selector: {matchLabels: {app: bidder}}
  template:
    metadata:
      labels: {app: bidder}
      annotations:
        k8s.aliyun.com/eci-spot-strategy: SpotWithPriceLimit
        k8s.aliyun.com/eci-spot-price-limit: "0.045"
        k8s.aliyun.com/eci-spot-duration: "0"
    spec:
      terminationGracePeriodSeconds: 5
      containers:
      - name: main
        image: registry.local/nodeless/busybox:1.36
        command: ["sh", "-c", "trap 'echo got TERM; exit 0' TERM; while :; do sleep 1; done"]
"""


def test_spot_pods_on_real_containers_are_reclaimed_with_notice_and_replaced(
    data_dir: Path,
) -> None:
    market = data_dir.parent / "market.yaml"
    market.write_text(RESTLESS_MARKET)
    options = ("--pod-cidr", POD_CIDR, "--pod-bridge", BRIDGE, "--spot-market", str(market))
    cluster = start_cluster(data_dir, provider="cri", options=options)
    try:
        cluster.kubectl("apply", "-f", "-", input=SPOT_DEPLOYMENT)

        def reclaimed() -> list[dict[str, Any]]:
            pods = json.loads(
                cluster.kubectl("get", "pods", "-l", "app=bidder", "-o", "json").stdout
            )
            return [p for p in pods["items"] if p["status"].get("reason") == "BidFailed"]

        [first, *_] = eventually(reclaimed, "a spot pod reclaimed", timeout=120)
        assert first["status"]["phase"] == "Failed"
        conditions = {c["type"]: c for c in first["status"]["conditions"]}
        assert conditions["ContainerInstanceCreated"]["reason"] == "SpotToBeReleased"
        assert conditions["DisruptionTarget"]["reason"] == "BidFailed"
        # The container was stopped as a deletion stops it: SIGTERM first.
        [container] = first["status"]["containerStatuses"]
        assert container["state"]["terminated"]["exitCode"] == 0, container
        name = first["metadata"]["name"]
        reasons = cluster.kubectl(
            "get", "events", "--field-selector", f"involvedObject.name={name}",
            "-o", "jsonpath={.items[*].reason}",
        ).stdout.split()  # fmt: skip
        assert {"SpotToBeReleased", "InstanceExpired"} <= set(reasons), reasons
        # The Deployment keeps its replica: a new spot pod runs.
        cluster.kubectl("rollout", "status", "deployment/bidder", "--timeout=120s", timeout=150)
        cluster.kubectl("delete", "deployment", "bidder", "--cascade=foreground", timeout=120)
        cluster.kubectl("delete", "pods", "-l", "app=bidder", "--wait=true", timeout=120)
    finally:
        stop_cluster(cluster)
    assert shims(data_dir) == set(), "reclaimed and deleted pods leave no sandbox behind"
