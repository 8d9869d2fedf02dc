"""A real `nodeless up` process per test session, and kubectl pointed at it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

from nodeless.cli import main as cli
from nodeless.instances.providers.cri import cgroups, containerd, mounts
from nodeless.instances.providers.cri import provider as cri_provider
from nodeless.networking import serviceproxy

VENV_BIN = Path(sys.executable).parent
T = TypeVar("T")


def free_port() -> int:
    """A port free now, below the kernel's ephemeral range: a port picked by
    binding port 0 can be handed out again to any socket another process
    (containerd's stream server, a client) binds to port 0 before the
    cluster under test binds it, which made a gateway fail to listen."""
    low = _ephemeral_low()
    for _ in range(200):
        port = random.randrange(max(1024, low - 12000), low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def shims(data_dir: Path) -> set[str]:
    """containerd-shim processes serving the containerd of ``data_dir``."""
    # -ww: unlimited width (ps cuts lines at 80 columns when not on a terminal).
    out = subprocess.run(["ps", "-eww", "-o", "pid,args"], capture_output=True, text=True).stdout
    return {
        line.split()[0]
        for line in out.splitlines()
        if "containerd-shim" in line and str(data_dir) in line
    }


def remove_pods(data_dir: Path, pod_cidr: str, bridge: str) -> None:
    """What a stopped `nodeless up --provider cri` leaves (it keeps pods for
    the next start to adopt): its containerd once more, removing every pod,
    then the volume mounts and the pod cgroups Nodeless made for them (the
    cgroups live outside the data dir, under the host's cgroup root: left,
    they piled up run after run)."""
    if shims(data_dir):
        settings = containerd.ContainerdSettings(
            data_dir / "containerd", pod_cidr=pod_cidr, bridge=bridge
        )

        async def run() -> None:
            runtime = containerd.Containerd(settings)
            await runtime.start()
            await runtime.stop(remove_pods=True)

        asyncio.run(run())
    for target in reversed(mounts.under(data_dir)):
        with contextlib.suppress(OSError):
            mounts.unmount(target, detach=True)
    pods = data_dir / "cri" / "pods"
    for uid in sorted(p.name for p in pods.iterdir()) if pods.is_dir() else []:
        cgroups.PodCgroup.for_pod(cri_provider.DEFAULT_CGROUP_ROOT, uid).remove(attempts=10)


def remove_pod_network(bridge: str) -> None:
    """A test cluster's pod bridge and its Service rules (both outlive
    `nodeless up`, as a node's network outlives its kubelet)."""
    containerd.remove_network(bridge)
    table = serviceproxy.table_name(bridge)
    subprocess.run(["nft", "delete", "table", "ip", table], capture_output=True)


@dataclass
class Cluster:
    data_dir: Path
    url: str
    process: subprocess.Popen[str]

    @property
    def kubeconfig(self) -> Path:
        return self.data_dir / "kubeconfig"

    def kubectl_command(self, *args: str) -> tuple[list[str], dict[str, str]]:
        """The pinned kubectl's argv and environment for this cluster (for
        callers that run it themselves: in the background, on a terminal)."""
        kubectl = shutil.which("kubectl", path=str(VENV_BIN)) or "kubectl"
        env = dict(os.environ, KUBECONFIG=str(self.kubeconfig), HOME=str(self.data_dir))
        return [kubectl, *args], env

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        argv, env = self.kubectl_command(*args)
        result = subprocess.run(
            argv, input=input, capture_output=True, text=True, env=env, timeout=timeout
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
            )
        return result


def start_cluster(
    data_dir: Path,
    port: int | None = None,
    provider: str = "none",
    zones: tuple[str, ...] = (),
    options: tuple[str, ...] = (),
) -> Cluster:
    """`nodeless up` on `data_dir` (a fresh port unless given); waits for its `ready` line."""
    port = port or free_port()
    extra = ["--zones", ",".join(zones)] if zones else []
    extra += options
    log = open(data_dir.parent / f"{data_dir.name}.log", "a")
    # Every test cluster checks at exit that no component wrote to the watch
    # cache's shared objects (exit status 70 if one did).
    env = {**os.environ, "NODELESS_CHECK_CACHE": "1"}
    proc = subprocess.Popen(
        [
            str(VENV_BIN / "nodeless"),
            "up",
            "--data-dir",
            str(data_dir),
            "--listen",
            f"127.0.0.1:{port}",
            "--provider",
            provider,
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if "ready" in line:
            return Cluster(data_dir, f"https://127.0.0.1:{port}", proc)
    proc.kill()
    raise RuntimeError(f"nodeless up did not become ready; see {log.name}")


def stop_cluster(cluster: Cluster) -> None:
    cluster.process.send_signal(signal.SIGTERM)
    try:
        cluster.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        cluster.process.kill()
        cluster.process.wait()
    assert cluster.process.returncode != cli.CACHE_CORRUPTED, (
        f"a component changed cached objects in place; see {cluster.data_dir}.log"
    )


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    data_dir = tmp_path_factory.mktemp("cluster") / "data"
    data_dir.mkdir()
    c = start_cluster(data_dir)
    yield c
    stop_cluster(c)


@pytest.fixture
def namespace(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace per test, named after it."""
    name = "t-" + request.node.name.lower().replace("_", "-")[:50].strip("-")
    name = "".join(c for c in name if c.isalnum() or c == "-").strip("-")
    # `kubectl apply` (JSON bodies) rather than `kubectl create namespace`, whose
    # typed client sends protobuf: the fixture must not depend on that path.
    manifest = f"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n"
    cluster.kubectl("apply", "-f", "-", input=manifest)
    yield name


def eventually(
    probe: Callable[[], T | None], what: str, timeout: float = 30.0, interval: float = 0.2
) -> T:
    """Poll until `probe` returns something truthy (a liveness bound, not a timing check)."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        last = probe()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}; last: {last!r}")
        time.sleep(interval)
