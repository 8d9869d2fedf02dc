"""Pods at scale on the simulated provider, timed from the first create to ALL
of them Running as seen through one watch on pods, beside the peak RSS of the
`nodeless up` process that serves them (API server, controllers, scheduler,
instance manager, provider).

Two workloads:

- deployments (the default, the target workload: 100 Deployments x 100
  replicas = 10,000 pods): D Deployments of R replicas each (`sleep
  infinity`), so the Deployment and ReplicaSet controllers create the pods;
- bare pods (`--pods N`): N Pods created straight through the API.

    .venv/bin/python bench/pods_simulated.py                        # 100 x 100
    .venv/bin/python bench/pods_simulated.py --quick                # 10 x 100, fits a minute
    .venv/bin/python bench/pods_simulated.py --deployments 10 --replicas 100
    .venv/bin/python bench/pods_simulated.py --pods 10000 [--concurrency 64]
    NODELESS_UP_PREFIX="python -m cProfile -o /tmp/up.prof" \
        .venv/bin/python bench/pods_simulated.py        # profile nodeless up

There is no baseline run in the same process: the rate is printed next to
kwok's published 20 pods/s (through an API server) and 333 pods/s (straight
to etcd). Per-pod latency is from the create of its Deployment (or of the pod
itself) to the pod Running on the watch.

Prints a short summary, then one JSON line (see ../shared/reference/performance.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from nodeless.client import kubeconfigs

BIN = Path(sys.executable).parent
KWOK_API_PODS_PER_S = 20.0
KWOK_ETCD_PODS_PER_S = 333.0
TARGET_SECONDS = 30.0
TARGET_RSS_MIB = 1024.0
TARGET_PODS = 10_000  # the targets are set for 100 Deployments x 100 replicas
NAMESPACE = "bench"


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def tls_from_kubeconfig(path: Path) -> tuple[ssl.SSLContext, str]:
    """The server URL and TLS (CA + client certificate) of the kubeconfig nodeless up wrote."""
    credentials = kubeconfigs.load(path)
    ctx = credentials.ssl_context()
    assert ctx is not None
    return ctx, credentials.server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS / VmHWM of a process in KiB (empty once it is gone)."""
    values: dict[str, int] = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0])
    return values


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process so far."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


POD_SPEC: dict[str, Any] = {
    "containers": [{"name": "app", "image": "busybox", "command": ["sleep", "infinity"]}],
    "terminationGracePeriodSeconds": 0,
}


def machine_probe_ms(rounds: int = 5) -> float:
    """Milliseconds one core takes for a fixed slice of the work Nodeless does
    per pod (JSON in and out, copies, dict walks): the fastest of `rounds`.

    This machine's speed drifts by up to 1.5x between hours (the same code ran
    26 s and 39 s), so a run's seconds mean little without it: compare runs by
    seconds divided by this number, or side by side in one hour."""
    pod = {
        "metadata": {"name": "probe", "labels": {f"k{i}": f"v{i}" for i in range(8)}},
        "spec": {**POD_SPEC, "nodeName": "zone-a"},
        "status": {"conditions": [{"type": t, "status": "True"} for t in "ABCD"]},
    }
    best = float("inf")
    for _ in range(rounds):
        started = time.perf_counter()
        for i in range(20000):
            copy = orjson.loads(orjson.dumps(pod))
            copy["metadata"]["resourceVersion"] = str(i)
            sorted(copy["metadata"]["labels"].items())
            {k: v for k, v in copy["status"].items() if k != "phase"}
        best = min(best, time.perf_counter() - started)
    return best * 1000


def pod_manifest(name: str) -> bytes:
    return orjson.dumps(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "labels": {"app": name, "bench": "pods"}},
            "spec": POD_SPEC,
        }
    )


def deployment_manifest(name: str, replicas: int) -> bytes:
    labels = {"app": name, "bench": "pods"}
    return orjson.dumps(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "labels": labels},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": labels}, "spec": POD_SPEC},
            },
        }
    )


@dataclass
class Progress:
    total: int  # pods that must be Running
    created: int = 0  # objects created (pods or Deployments)
    create_errors: int = 0
    first_create: float | None = None
    last_created: float | None = None
    running_at: dict[str, float] = field(default_factory=dict)  # pod -> first Running
    bound_at: dict[str, float] = field(default_factory=dict)  # pod -> first bound
    added_at: dict[str, float] = field(default_factory=dict)  # pod -> first seen on the watch
    sent_at: dict[str, float] = field(default_factory=dict)  # created object -> sent
    origin: dict[str, str] = field(default_factory=dict)  # pod -> the object it came from
    running: set[str] = field(default_factory=set)  # pods Running now
    deleted: int = 0
    all_running: float | None = None
    failed: set[str] = field(default_factory=set)
    ready_at: float | None = None  # deployments mode: every Deployment reports R ready
    events: int = 0
    watch_restarts: int = 0
    watch_errors: list[str] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)
    last_error: str = ""
    leftover: dict[str, Any] = field(default_factory=dict)
    # store revisions between the first list and all Running: every write
    # (pods, bindings, instances, events, controllers' status) moves it by one
    writes: int | None = None


async def ensure_namespace(session: aiohttp.ClientSession, server: str) -> None:
    body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
    async with session.post(f"{server}/api/v1/namespaces", json=body) as resp:
        if resp.status not in (201, 409):
            raise SystemExit(f"creating namespace: {resp.status} {await resp.text()}")


async def list_revision(session: aiohttp.ClientSession, url: str) -> str:
    async with session.get(url, params={"limit": "1"}) as resp:
        if resp.status != 200:
            raise SystemExit(f"listing pods: {resp.status} {await resp.text()}")
        body = await resp.json()
    return str(body["metadata"]["resourceVersion"])


async def watch_pods(
    session: aiohttp.ClientSession, url: str, revision: str, progress: Progress
) -> None:
    """One watch from `revision` (reopened from the last seen revision only if
    the server ends the stream), counting pods as they reach Running."""
    params = {"watch": "1", "resourceVersion": revision, "allowWatchBookmarks": "true"}
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
                    progress.events += 1
                    kind = event.get("type")
                    obj = event.get("object") or {}
                    meta = obj.get("metadata") or {}
                    if meta.get("resourceVersion"):
                        params["resourceVersion"] = meta["resourceVersion"]
                    if kind == "ERROR":
                        progress.watch_errors.append(str(obj.get("message")))
                        if obj.get("code") == 410:
                            raise RuntimeError(f"watch expired: {obj.get('message')}")
                        continue
                    name = meta.get("name", "")
                    if kind == "DELETED":
                        progress.deleted += 1
                        progress.running.discard(name)
                        continue
                    if kind not in ("ADDED", "MODIFIED"):
                        continue
                    if name not in progress.origin:
                        progress.origin[name] = (meta.get("labels") or {}).get("app", name)
                        progress.added_at[name] = now
                    phase = (obj.get("status") or {}).get("phase")
                    if name not in progress.bound_at and (obj.get("spec") or {}).get("nodeName"):
                        progress.bound_at[name] = now
                    if phase == "Running" and name not in progress.running:
                        progress.running.add(name)
                        progress.running_at.setdefault(name, now)
                        if len(progress.running) >= progress.total:
                            progress.all_running = now
                            progress.done.set()
                            return
                    elif phase != "Running":
                        progress.running.discard(name)
                        if phase == "Failed":
                            progress.failed.add(name)
        progress.watch_restarts += 1


async def create_objects(
    session: aiohttp.ClientSession,
    url: str,
    bodies: list[tuple[str, bytes]],
    concurrency: int,
    progress: Progress,
) -> None:
    """POST every (name, body) to `url`, `concurrency` in flight, retrying
    what the server sheds (429, 5xx) or drops."""
    queue = iter(bodies)

    async def worker() -> None:
        for name, body in queue:
            for attempt in range(10):
                progress.sent_at.setdefault(name, time.perf_counter())
                if progress.first_create is None:
                    progress.first_create = progress.sent_at[name]
                try:
                    async with session.post(
                        url, data=body, headers={"Content-Type": "application/json"}
                    ) as resp:
                        text = await resp.read()
                        status = resp.status
                except (aiohttp.ClientError, TimeoutError) as err:
                    status, text = 0, (str(err) or type(err).__name__).encode()
                if status in (201, 409):
                    progress.created += 1
                    progress.last_created = time.perf_counter()
                    break
                progress.create_errors += 1
                progress.last_error = f"{status} {text[:300].decode(errors='replace')}"
                if status not in (0, 429, 500, 503, 504) and attempt >= 2:
                    break
                await asyncio.sleep(min(2.0, 0.05 * 2**attempt))

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def deployments_ready(
    session: aiohttp.ClientSession, server: str, args: argparse.Namespace, progress: Progress
) -> None:
    """After all pods are Running: poll until every Deployment's status says
    so too (readyReplicas == availableReplicas == R), the controllers' lag."""
    url = f"{server}/apis/apps/v1/namespaces/{NAMESPACE}/deployments"
    while True:
        async with session.get(url) as resp:
            items = (await resp.json()).get("items") or []
        ready = sum(
            1
            for d in items
            if (d.get("status") or {}).get("readyReplicas") == args.replicas
            and (d.get("status") or {}).get("availableReplicas") == args.replicas
        )
        if ready >= args.deployments:
            progress.ready_at = time.perf_counter()
            return
        await asyncio.sleep(0.25)


async def run(server: str, ctx: ssl.SSLContext, args: argparse.Namespace) -> Progress:
    if args.mode == "deployments":
        progress = Progress(total=args.deployments * args.replicas)
        names = [f"deploy-{i:03d}" for i in range(args.deployments)]
        bodies = [(n, deployment_manifest(n, args.replicas)) for n in names]
        create_url = f"{server}/apis/apps/v1/namespaces/{NAMESPACE}/deployments"
    else:
        progress = Progress(total=args.pods)
        names = [f"pod-{i:05d}" for i in range(args.pods)]
        bodies = [(n, pod_manifest(n)) for n in names]
        create_url = f"{server}/api/v1/namespaces/{NAMESPACE}/pods"
    connector = aiohttp.TCPConnector(ssl=ctx, limit=0)
    deadline = time.monotonic() + args.timeout
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=60)
    ) as session:
        await ensure_namespace(session, server)
        url = f"{server}/api/v1/namespaces/{NAMESPACE}/pods"
        revision = await list_revision(session, url)
        watcher = asyncio.create_task(watch_pods(session, url, revision, progress))
        creator = asyncio.create_task(
            create_objects(session, create_url, bodies, args.concurrency, progress)
        )
        try:
            await asyncio.wait_for(asyncio.shield(watcher), timeout=args.timeout)
            with contextlib.suppress(Exception, SystemExit):
                progress.writes = int(await list_revision(session, url)) - int(revision)
        except TimeoutError:
            pass
        except Exception as err:
            progress.watch_errors.append(repr(err))
        finally:
            for task in (creator, watcher):
                task.cancel()
            outcome = await asyncio.gather(creator, watcher, return_exceptions=True)
            if isinstance(outcome[0], Exception):
                progress.last_error = f"creating stopped: {outcome[0]!r}"
        if progress.all_running is not None and args.mode == "deployments":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    deployments_ready(session, server, args, progress),
                    timeout=max(1.0, deadline - time.monotonic()),
                )
        if progress.all_running is None:
            with contextlib.suppress(Exception):
                progress.leftover = await leftover(session, server, args)
    return progress


async def leftover(
    session: aiohttp.ClientSession, server: str, args: argparse.Namespace
) -> dict[str, Any]:
    """After a timeout: where the pods that are not Running are stuck, from a
    fresh list of pods and of Instance records (and, for Deployments, of the
    Deployments and ReplicaSets): how partial progress is told."""
    pods: dict[str, int] = {}
    async with session.get(f"{server}/api/v1/namespaces/{NAMESPACE}/pods") as resp:
        for pod in (await resp.json()).get("items") or []:
            phase = (pod.get("status") or {}).get("phase") or "-"
            bound = "bound" if (pod.get("spec") or {}).get("nodeName") else "unbound"
            key = f"{bound}/{phase}"
            pods[key] = pods.get(key, 0) + 1
    instances: dict[str, int] = {}
    async with session.get(
        f"{server}/apis/nodeless.dev/v1/namespaces/{NAMESPACE}/instances"
    ) as resp:
        for record in (await resp.json()).get("items") or []:
            state = (record.get("status") or {}).get("state") or "-"
            instances[state] = instances.get(state, 0) + 1
    found: dict[str, Any] = {"pods": pods, "instances": instances}
    if args.mode == "deployments":
        for plural in ("deployments", "replicasets"):
            async with session.get(f"{server}/apis/apps/v1/namespaces/{NAMESPACE}/{plural}") as r:
                items = (await r.json()).get("items") or []
            status = [i.get("status") or {} for i in items]
            found[plural] = {
                "count": len(items),
                "replicas": sum(s.get("replicas") or 0 for s in status),
                "ready": sum(s.get("readyReplicas") or 0 for s in status),
            }
    return found


def start_cluster(
    args: argparse.Namespace, data: Path, log: Path
) -> tuple[subprocess.Popen[str], int]:
    port = free_port()
    command = [
        # a profiler to run it under, e.g. "python -m cProfile -o /tmp/up.prof"
        *shlex.split(os.environ.get("NODELESS_UP_PREFIX", "")),
        str(BIN / "nodeless"),
        "up",
        "--data-dir",
        str(data),
        "--listen",
        f"127.0.0.1:{port}",
        "--provider",
        "simulated",
        "--zones",
        args.zones,
        "--zone-max-instances",
        str(args.zone_max_instances or args.total + 100),
        "--sim-start-latency",
        str(args.sim_start_latency),
    ]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=log.open("w"), text=True)
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if "ready" in line:
            return proc, port
    proc.kill()
    raise SystemExit(f"nodeless up did not become ready; its log:\n{log.read_text()[-3000:]}")


def stop_cluster(proc: subprocess.Popen[str]) -> float:
    t0 = time.perf_counter()
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--deployments",
        type=int,
        default=None,
        help="Deployments to create (the default mode: 100 of 100 replicas)",
    )
    parser.add_argument(
        "--replicas", type=int, default=None, help="replicas per Deployment (default 100)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="10 Deployments x 100 replicas (fits a minute)"
    )
    parser.add_argument(
        "--pods", type=int, default=None, help="bare-pods mode: create N Pods directly"
    )
    parser.add_argument("--concurrency", type=int, default=None, help="creates in flight")
    parser.add_argument("--timeout", type=float, default=300.0, help="give up after this many s")
    parser.add_argument("--zones", default="zone-a", help="zones of the simulated cluster")
    parser.add_argument(
        "--zone-max-instances",
        type=int,
        default=0,
        help="instance quota per zone (default: all the pods + 100)",
    )
    parser.add_argument(
        "--sim-start-latency", type=float, default=0.0, help="simulated start latency (s)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the data dir and log")
    args = parser.parse_args()
    if args.pods is not None:
        if args.deployments is not None or args.replicas is not None or args.quick:
            parser.error("--pods (bare pods) excludes --deployments/--replicas/--quick")
        args.mode = "pods"
        args.total = args.pods
        args.concurrency = args.concurrency or 64
    else:
        args.mode = "deployments"
        default = 10 if args.quick else 100
        args.deployments = default if args.deployments is None else args.deployments
        args.replicas = 100 if args.replicas is None else args.replicas
        args.total = args.deployments * args.replicas
        args.concurrency = args.concurrency or 16
    if args.total <= 0 or args.concurrency <= 0:
        parser.error("the pod count and --concurrency must be positive")

    probe_ms = machine_probe_ms()
    tmp = tempfile.mkdtemp(prefix="pods_simulated.")
    workdir = Path(tmp)
    data = workdir / "data"
    log = workdir / "nodeless.log"
    proc, _port = start_cluster(args, data, log)
    cpu_before = cpu_seconds(proc.pid) or 0.0
    try:
        ctx, server = tls_from_kubeconfig(data / "kubeconfig")
        progress = asyncio.run(run(server, ctx, args))
        mem = proc_status(proc.pid)
        cpu_after = cpu_seconds(proc.pid)
        alive = proc.poll() is None
    finally:
        stop_seconds = stop_cluster(proc)
    peak_rss_mib = mem.get("VmHWM", 0) / 1024 if mem else None
    end_rss_mib = mem.get("VmRSS", 0) / 1024 if mem else None

    start = progress.first_create
    timed_out = progress.all_running is None
    seconds = (
        progress.all_running - start
        if (start is not None and progress.all_running is not None)
        else None
    )
    create_seconds = (
        progress.last_created - start
        if (start is not None and progress.last_created is not None)
        else None
    )
    create_rate = progress.created / create_seconds if create_seconds else None
    pods_per_s = args.total / seconds if seconds else None
    ready_seconds = progress.ready_at - start if (start is not None and progress.ready_at) else None
    # per pod, from the create of what it came from (its Deployment, or itself)
    latencies = [
        at - progress.sent_at[progress.origin.get(n, n)]
        for n, at in progress.running_at.items()
        if progress.origin.get(n, n) in progress.sent_at
    ]
    p50 = percentile(latencies, 50)
    p99 = percentile(latencies, 99)
    to_bind = [
        at - progress.sent_at[progress.origin.get(n, n)]
        for n, at in progress.bound_at.items()
        if progress.origin.get(n, n) in progress.sent_at
    ]
    bind_p50 = percentile(to_bind, 50)
    bind_p99 = percentile(to_bind, 99)

    def stage(seen: dict[str, float]) -> tuple[float | None, float | None]:
        # when half, and all, of the pods had reached a stage (from the first create)
        if start is None or len(seen) < args.total:
            return None, None
        ordered = sorted(seen.values())
        return ordered[len(ordered) // 2] - start, ordered[-1] - start

    stages = {
        "created": stage(progress.added_at),
        "bound": stage(progress.bound_at),
        "running": stage(progress.running_at),
    }
    cpu_used = (cpu_after - cpu_before) if cpu_after is not None else None
    within = bool(
        seconds is not None
        and seconds <= TARGET_SECONDS
        and peak_rss_mib is not None
        and peak_rss_mib <= TARGET_RSS_MIB
    )
    # The targets are judged only at their size; a smaller (quick) run says n/a.
    met: bool | None = within if args.total >= TARGET_PODS else None

    def fmt(value: float | None, spec: str = ".2f") -> str:
        return "n/a" if value is None else format(value, spec)

    workload = (
        f"{args.deployments} Deployments x {args.replicas} replicas = {args.total} pods"
        if args.mode == "deployments"
        else f"{args.pods} bare pods"
    )
    created_kind = "Deployments" if args.mode == "deployments" else "pods"
    expected_creates = args.deployments if args.mode == "deployments" else args.pods
    print(f"pods_simulated: {workload}, concurrency {args.concurrency}, zones {args.zones}")
    if timed_out:
        print(
            f"  TIMED OUT after {args.timeout:.0f} s: created {progress.created}/"
            f"{expected_creates} {created_kind}, Running {len(progress.running)}/{args.total}, "
            f"Failed {len(progress.failed)}"
        )
        if progress.leftover:
            print(
                f"  at the timeout: pods {progress.leftover.get('pods')}, "
                f"instances {progress.leftover.get('instances')}"
                + (
                    f", deployments {progress.leftover['deployments']}, "
                    f"replicasets {progress.leftover['replicasets']}"
                    if "deployments" in progress.leftover
                    else ""
                )
            )
            listed = progress.leftover["pods"].get("bound/Running", 0)
            if listed > len(progress.running):
                print(
                    f"  WATCH MISSED EVENTS: a list shows {listed} pods Running, "
                    f"the watch saw {len(progress.running)}"
                )
    print(
        f"  created   : {progress.created} {created_kind} in {fmt(create_seconds)} s "
        f"({fmt(create_rate, '.0f')} creates/s, {progress.create_errors} errors"
        + (f", last: {progress.last_error}" if progress.last_error else "")
        + ")"
    )
    print(
        f"  all Running (watch): {fmt(seconds)} s  ->  {fmt(pods_per_s, '.0f')} pods/s"
        f"   [kwok: {KWOK_API_PODS_PER_S:.0f} pods/s via API server"
        + (f" = {pods_per_s / KWOK_API_PODS_PER_S:.1f}x" if pods_per_s else "")
        + f", {KWOK_ETCD_PODS_PER_S:.0f} pods/s straight to etcd"
        + (f" = {pods_per_s / KWOK_ETCD_PODS_PER_S:.2f}x" if pods_per_s else "")
        + "]"
    )
    if args.mode == "deployments":
        print(
            f"  every Deployment reports {args.replicas}/{args.replicas} ready: "
            f"{fmt(ready_seconds)} s after the first create"
        )
    print(
        f"  create->Running latency: p50 {fmt(p50 and p50 * 1000, '.0f')} ms, "
        f"p99 {fmt(p99 and p99 * 1000, '.0f')} ms (create->bound p50 "
        f"{fmt(bind_p50 and bind_p50 * 1000, '.0f')} ms, p99 {fmt(bind_p99 and bind_p99 * 1000, '.0f')} ms); "
        f"watch events {progress.events}"
        + (f", watch reopened {progress.watch_restarts}x" if progress.watch_restarts else "")
        + (f", watch errors {progress.watch_errors[:3]}" if progress.watch_errors else "")
    )
    print(
        "  stages (half / all pods, s after the first create): "
        + ", ".join(f"{k} {fmt(h, '.1f')} / {fmt(a, '.1f')}" for k, (h, a) in stages.items())
    )
    print(
        f"  nodeless up: peak RSS {fmt(peak_rss_mib, '.0f')} MiB (end {fmt(end_rss_mib, '.0f')} MiB), "
        f"CPU {fmt(cpu_used, '.1f')} s, {'alive' if alive else 'DIED'}; stopped in {stop_seconds:.1f} s"
        + (
            f"; {progress.writes} store writes until all Running "
            f"({progress.writes / progress.total:.2f} per pod)"
            if progress.writes is not None
            else ""
        )
    )
    print(
        f"  target ({TARGET_PODS} pods): all Running <= {TARGET_SECONDS:.0f} s and RSS <= "
        f"{TARGET_RSS_MIB:.0f} MiB: "
        + (
            ("met" if met else "NOT met")
            if met is not None
            else f"n/a at {args.total} pods (within those bounds: {'yes' if within else 'no'})"
        )
    )
    print(
        f"  machine probe: {probe_ms:.1f} ms (a fixed per-pod-like workload on one core; see machine_probe_ms)"
    )
    if args.keep:
        print(f"  data and log kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    result: dict[str, Any] = {
        "bench": "pods_simulated",
        "params": {
            "mode": args.mode,
            **(
                {"deployments": args.deployments, "replicas": args.replicas}
                if args.mode == "deployments"
                else {}
            ),
            "pods": args.total,
            "concurrency": args.concurrency,
            "zones": args.zones,
            "sim_start_latency": args.sim_start_latency,
        },
        "nodeless": round(seconds, 3) if seconds is not None else None,
        "baseline": None,
        "unit": "s",
        "ratio": None,
        "target": "10,000 pods all Running <= 30 s and RSS <= 1 GiB",
        "met": met,
        "pods_per_s": round(pods_per_s, 1) if pods_per_s else None,
        **(
            {"deployments_ready_s": round(ready_seconds, 3) if ready_seconds else None}
            if args.mode == "deployments"
            else {}
        ),
        "peak_rss_mib": round(peak_rss_mib, 1) if peak_rss_mib is not None else None,
        "create_s": round(create_seconds, 3) if create_seconds is not None else None,
        "creates_per_s": round(create_rate, 1) if create_rate else None,
        "create_errors": progress.create_errors,
        "latency_p50_s": round(p50, 3) if p50 is not None else None,
        "latency_p99_s": round(p99, 3) if p99 is not None else None,
        "bind_p50_s": round(bind_p50, 3) if bind_p50 is not None else None,
        "bind_p99_s": round(bind_p99, 3) if bind_p99 is not None else None,
        "stages_s": {k: [None if x is None else round(x, 3) for x in v] for k, v in stages.items()},
        "nodeless_cpu_s": round(cpu_used, 1) if cpu_used is not None else None,
        "machine_probe_ms": round(probe_ms, 1),
        "watch_events": progress.events,
        "store_writes": progress.writes,
        "kwok_api_pods_per_s": KWOK_API_PODS_PER_S,
        "kwok_etcd_pods_per_s": KWOK_ETCD_PODS_PER_S,
        "timed_out": timed_out,
        "created": progress.created,
        "running": len(progress.running),
        "pods_deleted": progress.deleted,
        "failed": len(progress.failed),
        **({"at_timeout": progress.leftover} if progress.leftover else {}),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
