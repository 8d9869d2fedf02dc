"""N real pods through `nodeless up --provider cri`, timed from the apply of a
Deployment of N replicas to ALL of them Running as seen through one watch on
pods, beside the same N sandboxes + containers created directly over the CRI
(RunPodSandbox + CreateContainer + StartContainer, same image, same command,
/proc masked as a kubelet masks it) against a containerd this script starts
itself, in the same run. The baseline's pods are Nodeless' pods without
Nodeless: each in a pod cgroup with the instance's limits, with the
container's limits, its own PID namespace, the kubelet's mounts (/etc/hosts,
the termination log, a service account token directory) and the Service
variables, its files written before its sandbox; what Nodeless adds (the API,
controllers, scheduling, the instance manager, status and Events, the
runtime's status calls) is what the ratio measures.

    .venv/bin/python bench/pods_real.py                  # 100 pods
    .venv/bin/python bench/pods_real.py --quick          # 20 pods, fits a minute
    .venv/bin/python bench/pods_real.py --pods 500 [--concurrency 4]
    .venv/bin/python bench/pods_real.py --rounds 3       # baseline, Nodeless, x3: medians
    NODELESS_UP_PREFIX="python -m cProfile -o /tmp/up.prof" \
        .venv/bin/python bench/pods_real.py --no-baseline   # profile nodeless up

The image is the locally built `registry.local/nodeless/busybox:1.36` (`nodeless
up` builds and imports it at start; the baseline imports the same build), so
no pull is timed. The baseline runs first, on its own containerd, bridge and
pod CIDR; its pods are removed and its containerd stopped before `nodeless up`
starts, on another bridge and CIDR, in a temporary data directory. On a
shared machine one pair of runs says little (the baseline alone varied
99-138 s at 500 pods in one morning): --rounds N runs N such pairs, each
on fresh directories, Nodeless first in every other one, and reports the
median of the per-round ratios (and of each side's times) with every round's
figures. Each side's figures include the machine's CPU over its timed span
(/proc/stat, steal apart) and the cores the hypervisor stole: this VM shares
its host, and steal of half a core or more came and went for minutes,
slowing whichever side ran then; the ratio of the machine's work for each
side is printed beside the ratio of times. The
baseline's concurrency (--concurrency, default 4 as in performance.md) is the
number of pods created over the CRI at once; Nodeless creates the Deployment's
pods as its controllers and instance manager do.

Everything started is removed at the end, failed or not: the Deployment (and
its pods, waited for), `nodeless up` (SIGTERM), the baseline's pods and
containerd, any pod or containerd left behind on either data directory, both
pod networks (bridge and NAT table) and the temporary directory.

Needs root and containerd (scripts/install-system-packages.sh); without them
it says why and prints a JSON line with "met": null.

Prints a short summary, then one JSON line (see ../shared/reference/performance.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import queue
import shlex
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import orjson
from pods_simulated import cpu_seconds, free_port, tls_from_kubeconfig

from nodeless.instances.providers.cri import (
    cgroups,
    clients,
    containerd,
    mounts,
    podconfigs,
    sandboximages,
)
from nodeless.instances.providers.cri import runtime_pb2 as pb
from nodeless.networking import serviceproxy
from nodeless.serverless import catalogue, sizing

_T = TypeVar("_T")

BIN = Path(sys.executable).parent
IMAGE = "registry.local/nodeless/busybox:1.36"
SCRIPT = "trap 'exit 0' TERM; sleep 3600 & wait"
COMMAND = ["sh", "-c", SCRIPT]
NAMESPACE = "bench"
TARGET_RATIO = 1.10
TARGET_SIZES = (100, 500)  # performance.md sets the ratio target at these N

NODELESS_CIDR = "10.93.0.0/16"
NODELESS_BRIDGE = "nlbench0"
BASELINE_CIDR = "10.94.0.0/16"
BASELINE_BRIDGE = "nlbench1"


# --- small helpers (pod_startup.py imports these too) ---


def fmt(value: float | None, spec: str = ".2f") -> str:
    return "n/a" if value is None else format(value, spec)


def rounded(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line names ``text`` (a containerd names its
    config file, its shims name its socket)."""
    found = []
    needle = os.fsencode(text)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[-1].split()[0]
        except OSError:
            continue
        if needle in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


@dataclass(frozen=True)
class RuntimeCpu:
    """CPU seconds of a containerd and of its shims, each with the children
    it reaped (CNI plugins; runc): the runtime's work."""

    daemon: float = 0.0
    shims: float = 0.0

    @classmethod
    def now(cls, data_dir: Path) -> RuntimeCpu:
        """So far, for the containerd on ``data_dir``."""
        ticks = os.sysconf("SC_CLK_TCK")
        daemon = shims = 0
        for pid in processes_mentioning(str(data_dir)):
            try:
                text = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                continue
            used = sum(int(x) for x in text.rsplit(")", 1)[-1].split()[11:15])
            if "shim" in text[text.index("(") + 1 : text.rindex(")")]:
                shims += used
            else:
                daemon += used
        return cls(daemon / ticks, shims / ticks)

    def until(self, end: RuntimeCpu) -> RuntimeCpu:
        return RuntimeCpu(end.daemon - self.daemon, end.shims - self.shims)


@dataclass(frozen=True)
class CpuTimes:
    """The whole machine's CPU seconds since boot, from /proc/stat's first
    line. This VM shares its host: steal (time the hypervisor gave other
    guests) has taken up to a core for minutes, slowing whichever side ran
    then; the work a side made the machine do is ``busy``, steal apart."""

    busy: float  # user, nice, system, irq, softirq: this machine's own work
    steal: float
    elapsed: float  # every field summed: wall time times the cores

    @classmethod
    def now(cls) -> CpuTimes:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
        ticks = os.sysconf("SC_CLK_TCK")
        user, nice, system, _idle, _iowait, irq, softirq, steal = fields
        return cls(
            (user + nice + system + irq + softirq) / ticks, steal / ticks, sum(fields) / ticks
        )

    def until(self, end: CpuTimes) -> CpuUse:
        return CpuUse(end.busy - self.busy, end.steal - self.steal, end.elapsed - self.elapsed)


@dataclass(frozen=True)
class CpuUse:
    """CPU seconds between two CpuTimes."""

    busy: float
    steal: float
    elapsed: float

    @property
    def busy_cores(self) -> float | None:
        # /proc/stat sums every core: busy share of the non-stolen time times the cores
        own = self.elapsed - self.steal
        return self.busy / own * (os.cpu_count() or 1) if own > 0 else None

    @property
    def steal_cores(self) -> float | None:
        return self.steal / self.elapsed * (os.cpu_count() or 1) if self.elapsed > 0 else None


IDLE_CORES = 0.15  # busy cores under which the machine counts as settled
SETTLE_LIMIT = 60.0  # seconds


def settle(limit: float = SETTLE_LIMIT) -> float:
    """Waits until the machine has been idle for two seconds in a row, up to
    ``limit`` seconds, and returns the seconds waited: a side's teardown goes
    on after its last call returns (the kernel frees network namespaces and
    cgroups, shims exit), and the side after it should not pay for that.
    Steal-free rounds of 100 pods, 2026-11-29: 1.03 and 1.04 with Nodeless
    first, 1.22 with Nodeless second; settled (2 s each time), 1.13 with
    Nodeless second still: the machine also drifts within a run."""
    start = time.monotonic()
    before, quiet = CpuTimes.now(), 0
    while quiet < 2 and time.monotonic() - start < limit:
        time.sleep(1.0)
        now = CpuTimes.now()
        cores = before.until(now).busy_cores
        before = now
        quiet = quiet + 1 if cores is not None and cores < IDLE_CORES else 0
    return time.monotonic() - start


def remove_tree(path: Path) -> str:
    """Deletes ``path`` unless something is still mounted under it (never
    delete through a mount); returns why it was kept, or ""."""
    if mounted := mounts.under(path):
        return f"kept {path}: {len(mounted)} mounts still under it"
    shutil.rmtree(path, ignore_errors=True)
    return ""


def delete_bridge(name: str) -> None:
    """The bridge, its NAT table and the Service rules of its cluster."""
    containerd.remove_network(name)
    table = serviceproxy.table_name(name)
    subprocess.run(["nft", "delete", "table", "ip", table], capture_output=True, check=False)


def bridge_exists(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


async def remove_leftovers(settings: containerd.ContainerdSettings) -> bool:
    """If a containerd or a shim of ``settings`` is still alive (a run that
    failed half-way, a `nodeless up` that had to be killed): adopt that
    containerd, or start it once more, and stop it removing every pod.
    Returns whether there was anything to remove."""
    if not processes_mentioning(str(settings.data_dir)):
        return False
    runtime = containerd.Containerd(settings)
    try:
        await runtime.start()
    finally:
        await runtime.stop(remove_pods=True)
    return True


def unavailable() -> str:
    return containerd.unavailable_reason()


# --- nodeless up ---


@dataclass
class Cluster:
    proc: subprocess.Popen[str]
    data_dir: Path
    log: Path
    output: list[str] = field(default_factory=list)


def start_cluster(
    data_dir: Path,
    log: Path,
    pod_cidr: str,
    bridge: str,
    timeout: float = 180.0,
    options: tuple[str, ...] = ("--ingress-listen", "off", "--ingress-tls-listen", "off"),
) -> Cluster:
    """`nodeless up --provider cri` on its own data dir, port, pod CIDR and
    bridge; returns once it prints `ready`, and fails if it fell back to the
    simulated provider."""
    data_dir.mkdir(parents=True, exist_ok=True)
    command = [
        # a profiler to run it under, e.g. "python -m cProfile -o /tmp/up.prof"
        *shlex.split(os.environ.get("NODELESS_UP_PREFIX", "")),
        str(BIN / "nodeless"),
        "up",
        "--data-dir",
        str(data_dir),
        "--listen",
        f"127.0.0.1:{free_port()}",
        "--provider",
        "cri",
        "--pod-cidr",
        pod_cidr,
        "--pod-bridge",
        bridge,
        *options,
    ]
    with log.open("w") as err:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err, text=True)
    cluster = Cluster(proc, data_dir, log)
    lines: queue.Queue[str | None] = queue.Queue()

    def drain() -> None:
        # Reads stdout to its end so that nodeless up never blocks on a full pipe.
        assert proc.stdout is not None
        for line in proc.stdout:
            cluster.output.append(line.rstrip("\n"))
            lines.put(line)
        lines.put(None)

    threading.Thread(target=drain, daemon=True).start()
    deadline = time.monotonic() + timeout
    fell_back = ""
    while True:
        try:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            line = None
        if line is None:
            break
        if "simulated provider" in line:
            fell_back = line.strip()
        if " ready:" in line:
            if fell_back:
                break
            return cluster
        if time.monotonic() >= deadline:
            break
    stop_cluster(cluster)
    why = fell_back or "no `ready` line"
    raise RuntimeError(
        f"nodeless up --provider cri did not start ({why}); its log:\n"
        + log.read_text(errors="replace")[-3000:]
    )


def stop_cluster(cluster: Cluster, grace: float = 60.0) -> float:
    t0 = time.perf_counter()
    if cluster.proc.poll() is None:
        cluster.proc.send_signal(signal.SIGTERM)
        try:
            cluster.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            cluster.proc.kill()
            cluster.proc.wait()
    return time.perf_counter() - t0


def on_cluster(
    args: argparse.Namespace,
    data_dir: Path,
    log: Path,
    errors: list[str],
    work: Callable[[str, ssl.SSLContext, Cluster], Coroutine[Any, Any, _T]],
) -> tuple[_T | None, float | None]:
    """Starts `nodeless up` on ``data_dir``, runs ``work(server, ssl
    context, cluster)`` against it and stops it, whatever happened: its result
    (None when it failed, the failure in ``errors``) and the seconds the stop
    took."""
    cluster: Cluster | None = None
    result: _T | None = None
    stop_s: float | None = None
    try:
        cluster = start_cluster(data_dir, log, args.pod_cidr, args.pod_bridge)
        ctx, server = tls_from_kubeconfig(data_dir / "kubeconfig")
        result = asyncio.run(work(server, ctx, cluster))
        if cluster.proc.poll() is not None:
            errors.append(f"nodeless up exited with {cluster.proc.returncode}")
    except Exception as e:
        errors.append(f"nodeless: {e!r}")
    finally:
        if cluster is not None:
            stop_s = stop_cluster(cluster)
    return result, stop_s


def cluster_settings(data_dir: Path, pod_cidr: str, bridge: str) -> containerd.ContainerdSettings:
    """The containerd settings `nodeless up` uses on ``data_dir`` (as
    start_cri_provider makes them), to remove what it may leave behind."""
    return containerd.ContainerdSettings(data_dir / "containerd", pod_cidr=pod_cidr, bridge=bridge)


# --- the API ---


def pod_spec() -> dict[str, Any]:
    return {
        "terminationGracePeriodSeconds": 5,
        "containers": [{"name": "main", "image": IMAGE, "command": COMMAND}],
    }


def session_for(ctx: ssl.SSLContext) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=ctx, limit=0),
        timeout=aiohttp.ClientTimeout(total=60),
    )


async def ensure_namespace(session: aiohttp.ClientSession, server: str) -> None:
    body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
    async with session.post(f"{server}/api/v1/namespaces", json=body) as resp:
        if resp.status not in (201, 409):
            raise RuntimeError(f"creating namespace: {resp.status} {await resp.text()}")


async def list_pods(
    session: aiohttp.ClientSession, server: str, selector: str, limit: int = 0
) -> dict[str, Any]:
    params = {"labelSelector": selector}
    if limit:
        params["limit"] = str(limit)
    async with session.get(f"{server}/api/v1/namespaces/{NAMESPACE}/pods", params=params) as r:
        if r.status != 200:
            raise RuntimeError(f"listing pods: {r.status} {await r.text()}")
        body: dict[str, Any] = await r.json()
    return body


async def watch_pods(
    session: aiohttp.ClientSession,
    server: str,
    selector: str,
    revision: str,
    on_event: Callable[[str, dict[str, Any], float], bool],
    errors: list[str],
) -> None:
    """One watch on the pods matching ``selector`` from ``revision`` (reopened
    from the last revision seen only if the server ends the stream); calls
    ``on_event(type, pod, seen_at)`` for each event until it returns True."""
    url = f"{server}/api/v1/namespaces/{NAMESPACE}/pods"
    params = {
        "watch": "1",
        "resourceVersion": revision,
        "allowWatchBookmarks": "true",
        "labelSelector": selector,
    }
    while True:
        async with session.get(
            url, params=params, timeout=aiohttp.ClientTimeout(total=None, sock_read=None)
        ) as resp:
            if resp.status != 200:
                raise RuntimeError(f"watch: {resp.status} {await resp.text()}")
            buffer = b""
            async for chunk in resp.content.iter_any():
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                now = time.perf_counter()
                for line in lines:
                    if not line.strip():
                        continue
                    event = orjson.loads(line)
                    kind = str(event.get("type"))
                    obj = event.get("object") or {}
                    meta = obj.get("metadata") or {}
                    if meta.get("resourceVersion"):
                        params["resourceVersion"] = meta["resourceVersion"]
                    if kind == "ERROR":
                        errors.append(str(obj.get("message")))
                        if obj.get("code") == 410:
                            raise RuntimeError(f"watch expired: {obj.get('message')}")
                        continue
                    if kind == "BOOKMARK":
                        continue
                    if on_event(kind, obj, now):
                        return
        errors.append("watch ended by the server: reopened")


@dataclass
class Deletion:
    left: int  # pods still listed at the timeout (0: all gone)
    # seconds from the DELETE until the first pod and half the pods were gone
    first_gone_s: float | None = None
    half_gone_s: float | None = None


async def wait_pods_gone(
    session: aiohttp.ClientSession, server: str, selector: str, began: float, timeout: float
) -> Deletion:
    """Polls until no pod matches ``selector``, noting when (since
    ``began``, a ``time.monotonic()``) the first pod and half of them went:
    a teardown that ends all pods together keeps every pod till nearly the end."""
    deadline = began + timeout
    initial: int | None = None
    deletion = Deletion(left=0)
    while True:
        left = len((await list_pods(session, server, selector)).get("items") or [])
        elapsed = time.monotonic() - began
        if initial is None:
            initial = left
        if left < initial and deletion.first_gone_s is None:
            deletion.first_gone_s = elapsed
        if left <= initial / 2 and deletion.half_gone_s is None:
            deletion.half_gone_s = elapsed
        if left == 0 or time.monotonic() >= deadline:
            deletion.left = left
            return deletion
        await asyncio.sleep(0.5)


# --- the baseline: the CRI directly ---


# The baseline's pods carry what Nodeless' pods carry, so that the two sides
# differ only by Nodeless: the pod cgroup with the instance's limits around
# them (as a kubelet's pod cgroup), the container's limits, its own PID
# namespace, the kubelet's mounts (/etc/hosts, the termination log, the
# service account token directory) and the Service variables. Measured on
# one containerd, interleaved (2026-11-29): +7.6 ms of the runtime's CPU a
# pod all together (twice, the status calls included); the two mounts alone
# +11 to +18 ms, the token directory most (runc creates its mount point in
# the container's writable layer); ±5 ms of noise each.
BASELINE_CGROUP_ROOT = "/nodeless-baseline"
# the variables of the `kubernetes` Service every container gets
SERVICE_ENV = podconfigs.service_env(
    [
        {
            "metadata": {"name": "kubernetes", "namespace": "default"},
            "spec": {"clusterIP": "10.96.0.1", "ports": [{"name": "https", "port": 443}]},
        }
    ],
    NAMESPACE,
)


@functools.cache
def instance_size() -> tuple[float, float]:
    """The vCPUs and GiB of memory Nodeless gives the bench's pod: its
    catalogue's preferred spec for it."""
    spec = sizing.size_pod({"spec": pod_spec()}, catalogue.Catalogue.load()).spec
    return float(spec.vcpu), float(spec.memory_gib)


@dataclass(frozen=True)
class BaselinePod:
    """One baseline pod's names and the files a kubelet would give it."""

    name: str
    uid: str
    root: Path  # the run's directory for pods

    @property
    def log_directory(self) -> Path:
        return self.root / "logs" / f"{NAMESPACE}_{self.name}_{self.uid}"

    @property
    def pod_dir(self) -> Path:
        return self.root / "pods" / self.uid

    @property
    def cgroup(self) -> cgroups.PodCgroup:
        return cgroups.PodCgroup.for_pod(BASELINE_CGROUP_ROOT, self.uid)

    def set_up(self) -> None:
        """The pod's files and cgroup, as Nodeless' provider makes them
        before the sandbox (blocking: run it in a thread)."""
        token = self.pod_dir / "volumes" / "kube-api-access"
        token.mkdir(parents=True)
        (self.pod_dir / "etc-hosts").write_text(f"127.0.0.1\tlocalhost\n10.0.0.1\t{self.name}\n")
        (self.pod_dir / "termination-log").touch()
        for file, text in (("token", "t" * 900), ("ca.crt", "c" * 1100), ("namespace", NAMESPACE)):
            (token / file).write_text(text)
        vcpu, memory_gib = instance_size()
        self.cgroup.create(cpus=vcpu, memory_bytes=int(memory_gib * 2**30))


def sandbox_config(pod: BaselinePod) -> pb.PodSandboxConfig:
    return pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name=pod.name, uid=pod.uid, namespace=NAMESPACE),
        hostname=pod.name,
        log_directory=str(pod.log_directory),
        labels={
            "io.kubernetes.pod.name": pod.name,
            "io.kubernetes.pod.namespace": NAMESPACE,
            "io.kubernetes.pod.uid": pod.uid,
        },
        linux=pb.LinuxPodSandboxConfig(
            cgroup_parent=pod.cgroup.path,
            security_context=pb.LinuxSandboxSecurityContext(
                namespace_options=pb.NamespaceOption(pid=pb.CONTAINER)
            ),
        ),
    )


def container_config(pod: BaselinePod) -> pb.ContainerConfig:
    vcpu, memory_gib = instance_size()
    return pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name="main"),
        image=pb.ImageSpec(image=IMAGE),
        command=COMMAND,
        envs=[pb.KeyValue(key=k, value=v) for k, v in SERVICE_ENV.items()],
        mounts=[
            pb.Mount(container_path="/etc/hosts", host_path=str(pod.pod_dir / "etc-hosts")),
            pb.Mount(
                container_path="/dev/termination-log",
                host_path=str(pod.pod_dir / "termination-log"),
            ),
            pb.Mount(
                container_path="/var/run/secrets/kubernetes.io/serviceaccount",
                host_path=str(pod.pod_dir / "volumes" / "kube-api-access"),
                readonly=True,
            ),
        ],
        log_path="main/0.log",
        linux=pb.LinuxContainerConfig(
            resources=podconfigs.linux_resources({}, vcpu, memory_gib),
            # /proc and /sys masked as a kubelet asks for every container (the
            # runtime masks nothing it is not given)
            security_context=pb.LinuxContainerSecurityContext(
                namespace_options=pb.NamespaceOption(pid=pb.CONTAINER),
                masked_paths=podconfigs.DEFAULT_MASKED_PATHS,
                readonly_paths=podconfigs.DEFAULT_READONLY_PATHS,
            ),
        ),
    )


async def cri_pod(client: clients.CriClient, name: str, root: Path) -> None:
    """One pod the way a kubelet starts it once the image is there: its
    files and cgroup, RunPodSandbox, CreateContainer, StartContainer."""
    pod = BaselinePod(name, str(uuid.uuid4()), root)
    await asyncio.to_thread(pod.set_up)
    config = sandbox_config(pod)
    sandbox_id = await client.run_pod_sandbox(config)
    container_id = await client.create_container(sandbox_id, container_config(pod), config)
    await client.start_container(container_id)


async def with_runtime(
    settings: containerd.ContainerdSettings,
    work: Callable[[containerd.Containerd], Awaitable[Any]],
) -> Any:
    """Starts containerd on ``settings`` with the bench image imported, runs
    ``work(runtime)``, then removes every pod and stops containerd, whatever
    happened."""
    runtime = containerd.Containerd(settings)
    try:
        await runtime.start()
        applets = await asyncio.to_thread(sandboximages.all_applets)
        await runtime.ensure_image(sandboximages.BusyboxImage(IMAGE, applets=applets))
        return await work(runtime)
    finally:
        await runtime.stop(remove_pods=True)
        # removing the pods removes their pod cgroups; this takes the root
        # and any pod's whose sandbox never came (set up, then refused)
        if busy := await asyncio.to_thread(cgroups.PodCgroup(BASELINE_CGROUP_ROOT).remove):
            print(f"  baseline pod cgroups still busy: {len(busy)}", file=sys.stderr)


# --- this benchmark ---


@dataclass
class NodelessRun:
    seconds: float | None = None
    apply_s: float | None = None  # the POST of the Deployment
    first_running_s: float | None = None
    running: int = 0
    failed: int = 0
    events: int = 0
    watch_errors: list[str] = field(default_factory=list)
    leftover: dict[str, int] = field(default_factory=dict)
    pods_left_after_delete: int | None = None
    delete_s: float | None = None
    first_gone_s: float | None = None  # after the DELETE
    half_gone_s: float | None = None
    cpu: CpuUse | None = None  # the machine's, over ``seconds``
    server_cpu_s: float | None = None  # `nodeless up`'s own, over ``seconds``
    runtime_cpu: RuntimeCpu | None = None  # over ``seconds``


async def run_nodeless(
    server: str, ctx: ssl.SSLContext, args: argparse.Namespace, cluster: Cluster
) -> NodelessRun:
    server_pid = cluster.proc.pid
    runtime_dir = cluster_settings(cluster.data_dir, args.pod_cidr, args.pod_bridge).data_dir
    result = NodelessRun()
    name = "bench-real"
    selector = f"app={name}"
    labels = {"app": name}
    body = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": args.pods,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": pod_spec()},
        },
    }
    deployments = f"{server}/apis/apps/v1/namespaces/{NAMESPACE}/deployments"
    running: set[str] = set()
    failed: set[str] = set()
    started = 0.0
    cpu0 = CpuTimes.now()
    server_cpu0: float | None = None
    runtime0 = RuntimeCpu()

    def on_event(kind: str, pod: dict[str, Any], now: float) -> bool:
        result.events += 1
        pod_name = (pod.get("metadata") or {}).get("name", "")
        phase = (pod.get("status") or {}).get("phase")
        if kind == "DELETED":
            running.discard(pod_name)
            return False
        if phase == "Running":
            if not running and result.first_running_s is None:
                result.first_running_s = now - started
            running.add(pod_name)
            if len(running) >= args.pods:
                result.seconds = now - started
                result.cpu = cpu0.until(CpuTimes.now())
                result.runtime_cpu = runtime0.until(RuntimeCpu.now(runtime_dir))
                server_cpu = cpu_seconds(server_pid)
                if server_cpu is not None and server_cpu0 is not None:
                    result.server_cpu_s = server_cpu - server_cpu0
                return True
        else:
            running.discard(pod_name)
            if phase == "Failed":
                failed.add(pod_name)
        return False

    async with session_for(ctx) as session:
        await ensure_namespace(session, server)
        revision = str(
            (await list_pods(session, server, selector, 1))["metadata"]["resourceVersion"]
        )
        watcher = asyncio.create_task(
            watch_pods(session, server, selector, revision, on_event, result.watch_errors)
        )
        try:
            cpu0, server_cpu0 = CpuTimes.now(), cpu_seconds(server_pid)
            runtime0 = RuntimeCpu.now(runtime_dir)
            started = time.perf_counter()
            async with session.post(deployments, json=body) as resp:
                if resp.status != 201:
                    raise RuntimeError(
                        f"creating the Deployment: {resp.status} {await resp.text()}"
                    )
            result.apply_s = time.perf_counter() - started
            try:
                await asyncio.wait_for(asyncio.shield(watcher), timeout=args.timeout)
            except TimeoutError:
                pods = (await list_pods(session, server, selector)).get("items") or []
                for pod in pods:
                    phase = (pod.get("status") or {}).get("phase") or "-"
                    result.leftover[phase] = result.leftover.get(phase, 0) + 1
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
            result.running, result.failed = len(running), len(failed)
            # Clean up: the Deployment, its ReplicaSet and pods, waited for.
            sent = time.monotonic()
            with contextlib.suppress(Exception):
                async with session.delete(
                    f"{deployments}/{name}", json={"propagationPolicy": "Foreground"}
                ) as resp:
                    await resp.read()
                deletion = await wait_pods_gone(
                    session, server, selector, sent, timeout=max(60.0, args.pods * 1.0)
                )
                result.delete_s = time.monotonic() - sent
                result.pods_left_after_delete = deletion.left
                result.first_gone_s = deletion.first_gone_s
                result.half_gone_s = deletion.half_gone_s
    return result


@dataclass
class BaselineRun:
    seconds: float | None = None
    cpu: CpuUse | None = None  # the machine's, over ``seconds``
    runtime_cpu: RuntimeCpu | None = None  # over ``seconds``
    started: int = 0
    errors: list[str] = field(default_factory=list)


async def run_baseline(
    settings: containerd.ContainerdSettings, args: argparse.Namespace
) -> BaselineRun:
    result = BaselineRun()
    pods_root = settings.data_dir.parent / "baseline-pods"

    async def work(runtime: containerd.Containerd) -> BaselineRun:
        names = iter(f"base-{i:04d}" for i in range(args.pods))

        async def worker() -> None:
            for name in names:
                try:
                    await cri_pod(runtime.client, name, pods_root)
                    result.started += 1
                except clients.CriError as e:
                    result.errors.append(f"{name}: {e}")

        t0, cpu0 = time.perf_counter(), CpuTimes.now()
        runtime0 = RuntimeCpu.now(settings.data_dir)
        await asyncio.wait_for(
            asyncio.gather(*(worker() for _ in range(args.concurrency))), timeout=args.timeout
        )
        if result.started == args.pods:
            result.seconds = time.perf_counter() - t0
            result.cpu = cpu0.until(CpuTimes.now())
            result.runtime_cpu = runtime0.until(RuntimeCpu.now(settings.data_dir))
        return result

    await with_runtime(settings, work)
    return result


def clean_up(
    args: argparse.Namespace,
    workdir: Path,
    runtimes: tuple[containerd.ContainerdSettings, ...],
    notes: list[str],
    errors: list[str],
    *,
    remove: bool = True,
) -> None:
    """Whatever a run left, failed or not: pods on either containerd, both
    bridges, the temporary directory (unless --keep, or not ``remove``)."""
    for settings in runtimes:
        try:
            if asyncio.run(remove_leftovers(settings)):
                notes.append(f"removed pods left on {settings.data_dir}")
        except Exception as e:
            errors.append(f"cleaning up {settings.data_dir}: {e!r}")
    for bridge in (args.pod_bridge, args.baseline_bridge):
        delete_bridge(bridge)
    if not remove:
        return
    if args.keep:
        notes.append(f"data and logs kept in {workdir}")
    elif kept := remove_tree(workdir):
        notes.append(kept)


@dataclass
class Round:
    """One baseline run and one Nodeless run right after it."""

    baseline: BaselineRun
    nodeless: NodelessRun
    stop_s: float | None = None

    @property
    def ratio(self) -> float | None:
        if self.nodeless.seconds is None or not self.baseline.seconds:
            return None
        return self.nodeless.seconds / self.baseline.seconds

    @property
    def cpu_ratio(self) -> float | None:
        """The machine's work for Nodeless' pods over the baseline's: what
        steal (another guest's load) leaves alone."""
        if self.nodeless.cpu is None or self.baseline.cpu is None or not self.baseline.cpu.busy:
            return None
        return self.nodeless.cpu.busy / self.baseline.cpu.busy


def cpu_text(cpu: CpuUse | None, pods: int, runtime_cpu: RuntimeCpu | None) -> str:
    if cpu is None:
        return "machine CPU n/a"
    runtime = (
        f", containerd {runtime_cpu.daemon * 1000 / pods:.0f}"
        f" + shims {runtime_cpu.shims * 1000 / pods:.0f}"
        if runtime_cpu is not None
        else ""
    )
    return (
        f"machine CPU {cpu.busy:.1f} s ({cpu.busy * 1000 / pods:.0f} ms/pod{runtime}), "
        f"{fmt(cpu.steal_cores)} cores stolen"
    )


def runtime_per_pod(runtime_cpu: RuntimeCpu | None, pods: int) -> dict[str, float | None] | None:
    if runtime_cpu is None:
        return None
    return {
        "containerd": rounded(runtime_cpu.daemon * 1000 / pods, 1),
        "shims": rounded(runtime_cpu.shims * 1000 / pods, 1),
    }


def median_of(values: list[float | None]) -> float | None:
    """The median, or None when any is missing (a side that failed once)."""
    known = [v for v in values if v is not None]
    return statistics.median(known) if known and len(known) == len(values) else None


def run_round(
    args: argparse.Namespace,
    workdir: Path,
    notes: list[str],
    errors: list[str],
    *,
    nodeless_first: bool = False,
) -> Round:
    """The baseline and Nodeless (in that order, or the other way round),
    each on fresh data directories under ``workdir``; everything either left
    is removed before the next round."""
    workdir.mkdir(parents=True)
    base_settings = containerd.ContainerdSettings(
        workdir / "containerd", pod_cidr=args.baseline_cidr, bridge=args.baseline_bridge
    )
    data = workdir / "data"
    log = workdir / "nodeless.log"
    node_settings = cluster_settings(data, args.pod_cidr, args.pod_bridge)
    result = Round(BaselineRun(), NodelessRun())

    def baseline_side() -> None:
        try:
            if not args.no_baseline:
                result.baseline = asyncio.run(run_baseline(base_settings, args))
        except Exception as e:
            errors.append(f"baseline: {e!r}")
        baseline = result.baseline
        print(
            f"  baseline (direct CRI): {baseline.started}/{args.pods} pods in "
            f"{fmt(baseline.seconds)} s; {cpu_text(baseline.cpu, args.pods, baseline.runtime_cpu)}"
        )

    def nodeless_side() -> None:
        nodeless, result.stop_s = on_cluster(
            args,
            data,
            log,
            errors,
            lambda server, ctx, cluster: run_nodeless(server, ctx, args, cluster),
        )
        nodeless = result.nodeless = nodeless or result.nodeless
        per_pod = nodeless.server_cpu_s and nodeless.server_cpu_s * 1000 / args.pods
        print(
            f"  nodeless (apply -> all Running on the watch): {nodeless.running}/{args.pods} "
            f"pods in {fmt(nodeless.seconds)} s (first Running at "
            f"{fmt(nodeless.first_running_s)} s; Deployment POST "
            f"{fmt(nodeless.apply_s and nodeless.apply_s * 1000, '.0f')} ms; "
            f"{nodeless.events} watch events); {cpu_text(nodeless.cpu, args.pods, nodeless.runtime_cpu)}, of it"
            f" `nodeless up` {fmt(per_pod, '.1f')} ms/pod"
            + (f"; not Running at the timeout: {nodeless.leftover}" if nodeless.leftover else "")
            + (f"; watch: {nodeless.watch_errors[:3]}" if nodeless.watch_errors else "")
        )
        print(
            f"  clean-up: Deployment deleted, pods gone in {fmt(nodeless.delete_s, '.1f')} s "
            f"(first {fmt(nodeless.first_gone_s, '.1f')} s, half {fmt(nodeless.half_gone_s, '.1f')} s; "
            f"left: {nodeless.pods_left_after_delete}); nodeless up stopped in "
            f"{fmt(result.stop_s, '.1f')} s"
        )

    try:
        for side in (
            (nodeless_side, baseline_side) if nodeless_first else (baseline_side, nodeless_side)
        ):
            print(f"  machine settled in {settle():.0f} s")
            side()
    finally:
        # the round's directory goes now (its pods' files are many); the
        # whole temporary directory at the end, unless --keep
        clean_up(args, workdir, (node_settings, base_settings), notes, errors, remove=False)
        if not args.keep and (kept := remove_tree(workdir)):
            notes.append(kept)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pods", type=int, default=None, help="pods (default 100)")
    parser.add_argument("--quick", action="store_true", help="20 pods (fits a minute)")
    parser.add_argument(
        "--concurrency", type=int, default=4, help="baseline: pods created over CRI at once"
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="give up after this many s")
    parser.add_argument("--pod-cidr", default=NODELESS_CIDR, help="nodeless up's pod CIDR")
    parser.add_argument("--pod-bridge", default=NODELESS_BRIDGE, help="nodeless up's bridge")
    parser.add_argument("--baseline-cidr", default=BASELINE_CIDR, help="the baseline's pod CIDR")
    parser.add_argument("--baseline-bridge", default=BASELINE_BRIDGE, help="the baseline's bridge")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir and logs")
    parser.add_argument(
        "--no-baseline", action="store_true", help="Nodeless only (to profile it): met is null"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run the baseline then Nodeless this many times; medians are reported",
    )
    args = parser.parse_args()
    if args.pods is not None and args.quick:
        parser.error("--quick sets --pods 20: give one or the other")
    args.pods = args.pods if args.pods is not None else (20 if args.quick else 100)
    if args.pods <= 0 or args.concurrency <= 0 or args.rounds <= 0:
        parser.error("--pods, --concurrency and --rounds must be positive")
    if args.pod_bridge == args.baseline_bridge or args.pod_cidr == args.baseline_cidr:
        parser.error("nodeless and the baseline need different bridges and CIDRs")
    params = {
        "pods": args.pods,
        "concurrency": args.concurrency,
        "image": IMAGE,
        **({"rounds": args.rounds} if args.rounds > 1 else {}),
    }
    result: dict[str, Any] = {
        "bench": "pods_real",
        "params": params,
        "nodeless": None,
        "baseline": None,
        "unit": "s",
        "ratio": None,
        "target": f"ratio <= {TARGET_RATIO:.2f}",
        "met": None,
    }

    if why := unavailable():
        print(f"pods_real: skipped: {why}")
        print(json.dumps({**result, "skipped": why}))
        return 0
    for bridge in (args.pod_bridge, args.baseline_bridge):
        if bridge_exists(bridge):
            print(f"pods_real: bridge {bridge} exists already (another run?): choose another")
            print(json.dumps({**result, "skipped": f"bridge {bridge} exists"}))
            return 1

    load_before = os.getloadavg()[0]  # a shared machine: how busy it was
    workdir = Path(tempfile.mkdtemp(prefix="nlb-"))
    errors: list[str] = []
    notes: list[str] = []
    rounds: list[Round] = []
    print(
        f"pods_real: {args.pods} pods of {IMAGE}; baseline CRI concurrency {args.concurrency}"
        + (
            f"; {args.rounds} rounds, the baseline first in odd ones, Nodeless in even ones"
            if args.rounds > 1
            else ""
        )
    )
    try:
        for index in range(args.rounds):
            if args.rounds > 1:
                print(f"  round {index + 1}:")
            # every other round Nodeless goes first: whichever side follows a
            # teardown (hundreds of pods and snapshots going) finds the machine
            # still settling, and neither side should always be the one
            rounds.append(
                run_round(
                    args,
                    workdir / f"round-{index + 1}",
                    notes,
                    errors,
                    nodeless_first=index % 2 == 1,
                )
            )
    finally:
        if args.keep:
            notes.append(f"data and logs kept in {workdir}")
        elif kept := remove_tree(workdir):
            notes.append(kept)

    ratios = [r.ratio for r in rounds if r.ratio is not None]
    ratio = statistics.median(ratios) if len(ratios) == len(rounds) and ratios else None
    # the round whose ratio is the median (the lower middle one of an even
    # count) gives the other figures
    middle = (
        min(rounds, key=lambda r: (abs((r.ratio or 0) - ratio), r.ratio or 0))
        if ratio is not None
        else rounds[-1]
    )
    nodeless, baseline = middle.nodeless, middle.baseline
    met: bool | None = None  # n/a: the baseline could not be measured
    if ratio is not None:
        met = ratio <= TARGET_RATIO
    elif any(r.baseline.seconds is not None for r in rounds):
        met = False  # nodeless did not get every pod Running
    seconds = {
        "nodeless": median_of([r.nodeless.seconds for r in rounds]),
        "baseline": median_of([r.baseline.seconds for r in rounds]),
    }
    per_s = {k: args.pods / v if v else None for k, v in seconds.items()}
    cpu_ratio = median_of([r.cpu_ratio for r in rounds])
    if len(rounds) > 1:
        print(
            f"  median of {len(rounds)} rounds: nodeless {fmt(seconds['nodeless'])} s, "
            f"baseline {fmt(seconds['baseline'])} s; ratios "
            + ", ".join(fmt(r.ratio) for r in rounds)
            + "; machine CPU ratios "
            + ", ".join(fmt(r.cpu_ratio) for r in rounds)
        )
    print(
        f"  pods/s: nodeless {fmt(per_s['nodeless'], '.1f')}, baseline {fmt(per_s['baseline'], '.1f')}"
        f"  [performance.md: direct CRI about 13 pods/s on 2 cores]"
    )
    print(
        f"  ratio nodeless/baseline{' (median)' if len(rounds) > 1 else ''}: {fmt(ratio)}"
        f"  target <= {TARGET_RATIO:.2f}"
        + (
            f" (set at N={' and '.join(map(str, TARGET_SIZES))})"
            if args.pods not in TARGET_SIZES
            else ""
        )
        + f": {'met' if met else ('NOT met' if met is False else 'n/a')}"
        + f"; machine CPU ratio {fmt(cpu_ratio)}"
    )
    for line in notes:
        print(f"  {line}")
    for line in errors:
        print(f"  ERROR {line}")
    for line in baseline.errors[:5]:
        print(f"  baseline error: {line}")
    result.update(
        {
            "nodeless": rounded(seconds["nodeless"]),
            "baseline": rounded(seconds["baseline"]),
            "ratio": rounded(ratio),
            "met": met,
            "target_sizes": list(TARGET_SIZES),
            "nodeless_pods_per_s": rounded(per_s["nodeless"], 1),
            "baseline_pods_per_s": rounded(per_s["baseline"], 1),
            "nodeless_first_running_s": rounded(nodeless.first_running_s),
            # the machine's work (steal apart) per pod, and its ratio
            "cpu_ratio": rounded(cpu_ratio),
            "nodeless_cpu_ms_per_pod": rounded(
                nodeless.cpu.busy * 1000 / args.pods if nodeless.cpu else None, 1
            ),
            "baseline_cpu_ms_per_pod": rounded(
                baseline.cpu.busy * 1000 / args.pods if baseline.cpu else None, 1
            ),
            # containerd and its shims (with runc, CNI), per pod
            "nodeless_runtime_cpu_ms_per_pod": runtime_per_pod(nodeless.runtime_cpu, args.pods),
            "baseline_runtime_cpu_ms_per_pod": runtime_per_pod(baseline.runtime_cpu, args.pods),
            "server_cpu_ms_per_pod": rounded(
                nodeless.server_cpu_s and nodeless.server_cpu_s * 1000 / args.pods, 1
            ),
            "nodeless_steal_cores": rounded(nodeless.cpu.steal_cores if nodeless.cpu else None, 2),
            "baseline_steal_cores": rounded(baseline.cpu.steal_cores if baseline.cpu else None, 2),
            "nodeless_running": nodeless.running,
            "nodeless_failed": nodeless.failed,
            "baseline_started": baseline.started,
            "baseline_errors": len(baseline.errors),
            "watch_events": nodeless.events,
            "delete_s": rounded(nodeless.delete_s, 1),
            "first_gone_s": rounded(nodeless.first_gone_s, 1),
            "half_gone_s": rounded(nodeless.half_gone_s, 1),
            "pods_left_after_delete": nodeless.pods_left_after_delete,
            "stop_s": rounded(middle.stop_s, 1),
            "loadavg_1m_before": rounded(load_before, 2),
            **(
                {
                    "rounds": [
                        {
                            "nodeless": rounded(r.nodeless.seconds),
                            "baseline": rounded(r.baseline.seconds),
                            "ratio": rounded(r.ratio),
                            "cpu_ratio": rounded(r.cpu_ratio),
                        }
                        for r in rounds
                    ]
                }
                if len(rounds) > 1
                else {}
            ),
            **({"at_timeout": nodeless.leftover} if nodeless.leftover else {}),
            **({"errors": errors} if errors else {}),
        }
    )
    print(json.dumps(result))
    return 1 if errors else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
