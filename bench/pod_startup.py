"""Pod startup latency through `nodeless up --provider cri`: M bare Pods
created at a fixed rate, each timed from its create (the POST sent) to its
Running seen through one watch on pods; beside, in the same run, the latency
of the same work done directly over the CRI at the same rate (RunPodSandbox +
CreateContainer + StartContainer, same image and command, the same pod
cgroup, limits and mounts as Nodeless' pods: see pods_real.py) against a
containerd this script starts itself.

    .venv/bin/python bench/pod_startup.py                  # 200 pods at 5 pods/s
    .venv/bin/python bench/pod_startup.py --quick          # 30 pods at 5 pods/s
    .venv/bin/python bench/pod_startup.py --pods 200 --rate 5
    .venv/bin/python bench/pod_startup.py --no-baseline    # Nodeless only (to profile it)

The image is the locally built `registry.local/nodeless/busybox:1.36`, so no
pull is timed (as the Kubernetes pod-startup SLO excludes image pulls). The
baseline runs first, on its own containerd, bridge and pod CIDR, and is torn
down before `nodeless up` starts on another bridge and CIDR in a temporary
data directory. Target (performance.md): p50 <= 300 ms and p99 <= 1 s, judged
on Nodeless's numbers (the SLO upstream is p99 <= 5 s).

Everything started is removed at the end, failed or not (the pods, waited
for; `nodeless up` by SIGTERM; the baseline's pods and containerd; both
bridges; the temporary directory). Needs root and containerd; without them it
says why and prints a JSON line with "met": null.

Prints a short summary, then one JSON line (see ../shared/reference/performance.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from pods_real import (
    BASELINE_BRIDGE,
    BASELINE_CIDR,
    IMAGE,
    NAMESPACE,
    NODELESS_BRIDGE,
    NODELESS_CIDR,
    CpuTimes,
    bridge_exists,
    clean_up,
    cluster_settings,
    cri_pod,
    ensure_namespace,
    fmt,
    list_pods,
    on_cluster,
    pod_spec,
    rounded,
    session_for,
    unavailable,
    wait_pods_gone,
    watch_pods,
    with_runtime,
)
from pods_simulated import cpu_seconds, percentile

from nodeless.instances.providers.cri import clients, containerd

TARGET_P50_MS = 300.0
TARGET_P99_MS = 1000.0
LABEL = "bench=startup"


@dataclass
class Latencies:
    latencies_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    late_ms: float = 0.0  # how far behind its schedule the slowest create was sent
    busy_start: CpuTimes | None = None
    finished: int = 0
    # nodeless only
    post_ms: list[float] = field(default_factory=list)
    events: int = 0
    watch_errors: list[str] = field(default_factory=list)
    leftover: dict[str, int] = field(default_factory=dict)
    pods_left_after_delete: int | None = None
    delete_s: float | None = None
    # nodeless only: per pod, ms from its POST to the first watch event of
    # each stage, so the overhead shows where it is spent
    stages_ms: dict[str, list[float]] = field(default_factory=dict)
    # store revisions from the first list to all Running: every write
    # (pods, bindings, instances, events) moves it by one
    writes: int | None = None
    # From the first create to the last pod up: how many of the machine's
    # cores were busy (everything: runtime, shims, runc, CNI, Nodeless), and
    # (nodeless only) the CPU `nodeless up` itself used, per pod.
    busy_cores: float | None = None
    steal_cores: float | None = None  # the hypervisor's share given to others
    server_cpu_ms_per_pod: float | None = None

    def p(self, q: float) -> float | None:
        return percentile(self.latencies_ms, q)

    def cpu_cores(self) -> tuple[float | None, float | None]:
        """Cores busy, and cores stolen, since ``busy_start``."""
        if self.busy_start is None:
            return None, None
        use = self.busy_start.until(CpuTimes.now())
        return use.busy_cores, use.steal_cores


async def paced(count: int, rate: float, one: Any, result: Latencies) -> None:
    """Starts ``one(i)`` for i in 0..count-1 at ``rate`` per second, each in
    its own task (a slow one never delays the next), and waits for them all."""
    start = time.perf_counter() + 0.1
    tasks = []
    for i in range(count):
        slot = start + i / rate
        delay = slot - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if i == 0:
            result.busy_start = CpuTimes.now()
        result.late_ms = max(result.late_ms, (time.perf_counter() - slot) * 1000)
        tasks.append(asyncio.create_task(one(i)))
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def run_baseline(
    settings: containerd.ContainerdSettings, args: argparse.Namespace
) -> Latencies:
    result = Latencies()
    pods_root = settings.data_dir.parent / "baseline-pods"

    async def work(runtime: containerd.Containerd) -> None:
        async def one(i: int) -> None:
            t0 = time.perf_counter()
            try:
                await cri_pod(runtime.client, f"base-{i:04d}", pods_root)
            except clients.CriError as e:
                result.errors.append(str(e))
                return
            result.latencies_ms.append((time.perf_counter() - t0) * 1000)
            result.finished += 1

        await asyncio.wait_for(
            paced(args.pods, args.rate, one, result), timeout=args.pods / args.rate + args.timeout
        )
        result.busy_cores, result.steal_cores = result.cpu_cores()

    await with_runtime(settings, work)
    return result


async def run_nodeless(
    server: str, ctx: ssl.SSLContext, args: argparse.Namespace, server_pid: int
) -> Latencies:
    result = Latencies()
    sent_at: dict[str, float] = {}
    running_at: dict[str, float] = {}
    seen_at: dict[str, dict[str, float]] = {"created": {}, "bound": {}, "waiting": {}}
    url = f"{server}/api/v1/namespaces/{NAMESPACE}/pods"

    def on_event(kind: str, pod: dict[str, Any], now: float) -> bool:
        result.events += 1
        name = (pod.get("metadata") or {}).get("name", "")
        if kind == "DELETED" or name in running_at:
            return False
        seen_at["created"].setdefault(name, now)
        if (pod.get("spec") or {}).get("nodeName"):
            seen_at["bound"].setdefault(name, now)
        if (pod.get("status") or {}).get("containerStatuses"):
            seen_at["waiting"].setdefault(name, now)  # the instance manager's first status
        if (pod.get("status") or {}).get("phase") == "Running":
            running_at[name] = now
            if len(running_at) >= args.pods:
                return True
        return False

    async with session_for(ctx) as session:

        async def one(i: int) -> None:
            name = f"start-{i:04d}"
            body = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "labels": {"bench": "startup"}},
                "spec": pod_spec(),
            }
            sent_at[name] = t0 = time.perf_counter()
            try:
                async with session.post(url, json=body) as resp:
                    text = await resp.text()
                    if resp.status != 201:
                        result.errors.append(f"{name}: {resp.status} {text[:200]}")
                        return
            except (aiohttp.ClientError, TimeoutError) as e:
                result.errors.append(f"{name}: {e!r}")
                return
            result.post_ms.append((time.perf_counter() - t0) * 1000)

        await ensure_namespace(session, server)
        revision = str((await list_pods(session, server, LABEL, 1))["metadata"]["resourceVersion"])
        watcher = asyncio.create_task(
            watch_pods(session, server, LABEL, revision, on_event, result.watch_errors)
        )
        cpu_before = cpu_seconds(server_pid)
        try:
            await paced(args.pods, args.rate, one, result)
            try:
                await asyncio.wait_for(asyncio.shield(watcher), timeout=args.timeout)
                result.busy_cores, result.steal_cores = result.cpu_cores()
                cpu_after = cpu_seconds(server_pid)
                if cpu_before is not None and cpu_after is not None:
                    result.server_cpu_ms_per_pod = (cpu_after - cpu_before) * 1000 / args.pods
                now = (await list_pods(session, server, LABEL, 1))["metadata"]["resourceVersion"]
                result.writes = int(now) - int(revision)
            except TimeoutError:
                for pod in (await list_pods(session, server, LABEL)).get("items") or []:
                    phase = (pod.get("status") or {}).get("phase") or "-"
                    result.leftover[phase] = result.leftover.get(phase, 0) + 1
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
            result.latencies_ms = [
                (at - sent_at[name]) * 1000 for name, at in running_at.items() if name in sent_at
            ]
            result.finished = len(result.latencies_ms)
            result.stages_ms = {
                stage: [(at - sent_at[name]) * 1000 for name, at in seen.items() if name in sent_at]
                for stage, seen in seen_at.items()
            }
            # Clean up: every pod of the run, waited for.
            t0 = time.perf_counter()
            try:
                async with session.delete(
                    url, params={"labelSelector": LABEL}, json={"gracePeriodSeconds": 5}
                ) as resp:
                    await resp.read()
                    collection_deleted = resp.status == 200
                if not collection_deleted:
                    for name in sent_at:
                        async with session.delete(f"{url}/{name}") as resp:
                            await resp.read()
                deletion = await wait_pods_gone(
                    session, server, LABEL, time.monotonic(), timeout=max(60.0, args.pods * 0.5)
                )
                result.pods_left_after_delete = deletion.left
                result.delete_s = time.perf_counter() - t0
            except Exception as e:
                result.errors.append(f"deleting the pods: {e!r}")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pods", type=int, default=None, help="pods (default 200)")
    parser.add_argument("--rate", type=float, default=5.0, help="pods created per second")
    parser.add_argument("--quick", action="store_true", help="30 pods at 5/s (fits a minute)")
    parser.add_argument(
        "--timeout", type=float, default=120.0, help="wait this many s after the last create"
    )
    parser.add_argument("--no-baseline", action="store_true", help="Nodeless only (to profile it)")
    parser.add_argument("--pod-cidr", default=NODELESS_CIDR, help="nodeless up's pod CIDR")
    parser.add_argument("--pod-bridge", default=NODELESS_BRIDGE, help="nodeless up's bridge")
    parser.add_argument("--baseline-cidr", default=BASELINE_CIDR, help="the baseline's pod CIDR")
    parser.add_argument("--baseline-bridge", default=BASELINE_BRIDGE, help="the baseline's bridge")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir and logs")
    args = parser.parse_args()
    if args.pods is not None and args.quick:
        parser.error("--quick sets --pods 30: give one or the other")
    args.pods = args.pods if args.pods is not None else (30 if args.quick else 200)
    if args.pods <= 0 or args.rate <= 0:
        parser.error("--pods and --rate must be positive")
    if args.pod_bridge == args.baseline_bridge or args.pod_cidr == args.baseline_cidr:
        parser.error("nodeless and the baseline need different bridges and CIDRs")
    result: dict[str, Any] = {
        "bench": "pod_startup",
        "params": {"pods": args.pods, "rate": args.rate, "image": IMAGE},
        "nodeless": None,
        "baseline": None,
        "unit": "ms",
        "metric": "p50 of created -> Running (nodeless: seen via watch; baseline: CRI calls done)",
        "ratio": None,
        "target": "p50 <= 300 ms and p99 <= 1 s",
        "met": None,
    }
    if why := unavailable():
        print(f"pod_startup: skipped: {why}")
        print(json.dumps({**result, "skipped": why}))
        return 0
    for bridge in (args.pod_bridge, args.baseline_bridge):
        if bridge_exists(bridge):
            print(f"pod_startup: bridge {bridge} exists already (another run?): choose another")
            print(json.dumps({**result, "skipped": f"bridge {bridge} exists"}))
            return 1

    load_before = os.getloadavg()[0]  # a shared machine: how busy it was
    workdir = Path(tempfile.mkdtemp(prefix="nlb-"))
    base_settings = containerd.ContainerdSettings(
        workdir / "containerd", pod_cidr=args.baseline_cidr, bridge=args.baseline_bridge
    )
    data = workdir / "data"
    log = workdir / "nodeless.log"
    node_settings = cluster_settings(data, args.pod_cidr, args.pod_bridge)
    baseline = Latencies()
    nodeless = Latencies()
    errors: list[str] = []
    notes: list[str] = []
    stop_s: float | None = None
    print(f"pod_startup: {args.pods} pods of {IMAGE} at {args.rate:g} pods/s")
    try:
        try:
            if not args.no_baseline:
                baseline = asyncio.run(run_baseline(base_settings, args))
        except Exception as e:
            errors.append(f"baseline: {e!r}")
        measured, stop_s = on_cluster(
            args,
            data,
            log,
            errors,
            lambda server, ctx, cluster: run_nodeless(server, ctx, args, cluster.proc.pid),
        )
        nodeless = measured or nodeless
    finally:
        clean_up(args, workdir, (node_settings, base_settings), notes, errors)

    n50, n99 = nodeless.p(50), nodeless.p(99)
    b50, b99 = baseline.p(50), baseline.p(99)
    complete = nodeless.finished == args.pods
    met: bool | None = None
    if complete and n50 is not None and n99 is not None:
        met = n50 <= TARGET_P50_MS and n99 <= TARGET_P99_MS
    elif nodeless.post_ms:
        met = False  # pods were created, and some never reached Running
    ratio = n50 / b50 if n50 is not None and b50 else None
    ratio99 = n99 / b99 if n99 is not None and b99 else None
    post50, post99 = percentile(nodeless.post_ms, 50), percentile(nodeless.post_ms, 99)
    print(
        f"  baseline (direct CRI): {baseline.finished}/{args.pods} pods, "
        f"p50 {fmt(b50, '.0f')} ms, p99 {fmt(b99, '.0f')} ms, max "
        f"{fmt(max(baseline.latencies_ms, default=None), '.0f')} ms"
        + (f", {len(baseline.errors)} errors" if baseline.errors else "")
        + f"; {fmt(baseline.busy_cores)} cores busy, {fmt(baseline.steal_cores)} stolen"
    )
    print(
        f"  nodeless (created -> Running on the watch): {nodeless.finished}/{args.pods} pods, "
        f"p50 {fmt(n50, '.0f')} ms, p99 {fmt(n99, '.0f')} ms, max "
        f"{fmt(max(nodeless.latencies_ms, default=None), '.0f')} ms "
        f"(POST p50 {fmt(post50, '.0f')} ms, p99 {fmt(post99, '.0f')} ms; "
        f"{nodeless.events} watch events"
        + (
            f"; {nodeless.writes / args.pods:.1f} store writes per pod"
            if nodeless.writes is not None
            else ""
        )
        + ")"
        + f"; {fmt(nodeless.busy_cores)} cores busy ({fmt(nodeless.steal_cores)} stolen), of"
        f" them `nodeless up` {fmt(nodeless.server_cpu_ms_per_pod, '.1f')} ms CPU per pod"
        + (f"; not Running at the timeout: {nodeless.leftover}" if nodeless.leftover else "")
        + (f"; watch: {nodeless.watch_errors[:3]}" if nodeless.watch_errors else "")
    )
    stages = {
        stage: (percentile(values, 50), percentile(values, 99))
        for stage, values in nodeless.stages_ms.items()
    }
    print(
        "  nodeless stages, first seen on the watch after the POST (p50 / p99 ms): "
        + ", ".join(f"{k} {fmt(a, '.0f')} / {fmt(b, '.0f')}" for k, (a, b) in stages.items())
    )
    print(f"  ratio nodeless/baseline: p50 {fmt(ratio)}, p99 {fmt(ratio99)}")
    print(
        f"  target p50 <= {TARGET_P50_MS:.0f} ms and p99 <= {TARGET_P99_MS / 1000:.0f} s: "
        + ("met" if met else ("NOT met" if met is False else "n/a"))
        + ("" if args.pods >= 200 else f" (set for 200 pods; this run: {args.pods})")
    )
    print(
        f"  clean-up: pods deleted and gone in {fmt(nodeless.delete_s, '.1f')} s "
        f"(left: {nodeless.pods_left_after_delete}); nodeless up stopped in {fmt(stop_s, '.1f')} s"
    )
    late = max(baseline.late_ms, nodeless.late_ms)
    if late > 1000 / args.rate:
        notes.append(f"creates fell behind their schedule by up to {late:.0f} ms")
    for line in notes:
        print(f"  {line}")
    for line in errors + [f"baseline: {e}" for e in baseline.errors[:5]] + nodeless.errors[:5]:
        print(f"  ERROR {line}")
    result.update(
        {
            "nodeless": rounded(n50, 1),
            "baseline": rounded(b50, 1),
            "ratio": rounded(ratio),
            "met": met,
            "nodeless_p50_ms": rounded(n50, 1),
            "nodeless_p99_ms": rounded(n99, 1),
            "nodeless_max_ms": rounded(max(nodeless.latencies_ms, default=None), 1),
            "baseline_p50_ms": rounded(b50, 1),
            "baseline_p99_ms": rounded(b99, 1),
            "baseline_max_ms": rounded(max(baseline.latencies_ms, default=None), 1),
            "ratio_p99": rounded(ratio99),
            "post_p50_ms": rounded(post50, 1),
            "stages_p50_p99_ms": {
                k: [rounded(a, 1), rounded(b, 1)] for k, (a, b) in stages.items()
            },
            "post_p99_ms": rounded(post99, 1),
            "nodeless_running": nodeless.finished,
            "baseline_started": baseline.finished,
            "create_errors": len(nodeless.errors),
            "baseline_errors": len(baseline.errors),
            "watch_events": nodeless.events,
            "store_writes": nodeless.writes,
            "delete_s": rounded(nodeless.delete_s, 1),
            "pods_left_after_delete": nodeless.pods_left_after_delete,
            "stop_s": rounded(stop_s, 1),
            "loadavg_1m_before": rounded(load_before, 2),
            "cores": os.cpu_count(),
            "baseline_busy_cores": rounded(baseline.busy_cores, 2),
            "nodeless_busy_cores": rounded(nodeless.busy_cores, 2),
            "baseline_steal_cores": rounded(baseline.steal_cores, 2),
            "nodeless_steal_cores": rounded(nodeless.steal_cores, 2),
            "server_cpu_ms_per_pod": rounded(nodeless.server_cpu_ms_per_pod, 1),
            **({"at_timeout": nodeless.leftover} if nodeless.leftover else {}),
            **({"errors": errors} if errors else {}),
        }
    )
    print(json.dumps(result))
    return 1 if errors else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
