"""Pod startup on real containers with the image pre-cached by an ImageCache,
against the same startup with a cold pull from a local registry, in one run
of `nodeless up --provider cri`.

    .venv/bin/python bench/image_cache_startup.py            # 10 pods each way
    .venv/bin/python bench/image_cache_startup.py --pods 20

A `docker-registry` on 127.0.0.1 is filled with 2 x N images built from the
host's busybox, each with a layer of its own (about 1 MB compressed: one more
applet link makes the layer's bytes, so its digest, unique), so no pull is
helped by another's blobs. Half are put in one ImageCache first, which pulls
them into containerd; then pods are created one at a time, alternating a
cold image and a cached one (so that any drift in the machine's load falls
on both), each timed from its create (the POST sent) to Running seen through
one watch. Cached pods ask for the cache with `nodeless.dev/image-cache:
auto`; the run counts those that got `matched-image-cache` written back.

Reports p50 and p99 of both, the ratio cold / cached, and how long the
ImageCache took to pull its images. Everything started is removed at the end
(pods, `nodeless up`, its containerd and bridge, the registry, the temporary
directory). Needs root, containerd and docker-registry; without them it says
why and prints a JSON line with "met": null.

Prints a short summary, then one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pods_real import (
    BASELINE_BRIDGE,
    COMMAND,
    NAMESPACE,
    NODELESS_BRIDGE,
    NODELESS_CIDR,
    Cluster,
    bridge_exists,
    clean_up,
    cluster_settings,
    ensure_namespace,
    fmt,
    list_pods,
    rounded,
    session_for,
    start_cluster,
    stop_cluster,
    tls_from_kubeconfig,
    unavailable,
    wait_pods_gone,
    watch_pods,
)
from pods_simulated import percentile

from nodeless.instances.providers.cri import (
    containerd,
    localregistries,
    registrypush,
    sandboximages,
)

LABEL = "bench=imagecache"
CACHE = "bench-images"
CACHES_URL = "/apis/nodeless.dev/v1/imagecaches"


@dataclass
class Side:
    """One way of starting pods: cold or cached."""

    images: list[str]
    sent_at: dict[str, float] = field(default_factory=dict)
    running_at: dict[str, float] = field(default_factory=dict)
    matched: int = 0

    @property
    def latencies_ms(self) -> list[float]:
        return [
            (self.running_at[n] - t) * 1000 for n, t in self.sent_at.items() if n in self.running_at
        ]

    def p(self, q: float) -> float | None:
        return percentile(self.latencies_ms, q)


@dataclass
class Run:
    cold: Side
    cached: Side
    cache_ready_s: float | None = None
    errors: list[str] = field(default_factory=list)
    watch_errors: list[str] = field(default_factory=list)
    pods_left_after_delete: int | None = None


def build_images(count: int) -> list[tuple[str, sandboximages.OciImage]]:
    """``count`` cold and ``count`` cached images, each layer its own."""
    busybox = sandboximages.read_busybox()
    applets = sandboximages.all_applets()
    built = []
    for kind in ("cold", "cached"):
        for i in range(count):
            spec = sandboximages.BusyboxImage(
                f"bench/{kind}-{i}", cmd=("sh",), applets=(*applets, f"nlbench-{kind}-{i}")
            )
            built.append((f"bench/{kind}-{i}", sandboximages.build_image(spec, busybox)))
    return built


async def push_all(registry: localregistries.LocalRegistry, images: list[tuple[str, Any]]) -> None:
    for repository, image in images:
        await registrypush.push(image, registry.host, repository, "1")


async def run(server: str, ctx: ssl.SSLContext, run_: Run, timeout: float) -> None:
    sides = {"cold": run_.cold, "cached": run_.cached}
    waiting: dict[str, asyncio.Event] = {}

    def on_event(kind: str, pod: dict[str, Any], now: float) -> bool:
        meta = pod.get("metadata") or {}
        name = str(meta.get("name", ""))
        side = sides[str((meta.get("labels") or {}).get("side", "cold"))]
        if kind != "DELETED" and name not in side.running_at:
            if (pod.get("status") or {}).get("phase") == "Running":
                side.running_at[name] = now
                if (meta.get("annotations") or {}).get("nodeless.dev/matched-image-cache"):
                    side.matched += 1
                if name in waiting:
                    waiting[name].set()
        return False

    async with session_for(ctx) as session:
        await ensure_namespace(session, server)
        t0 = time.perf_counter()
        cache = {
            "apiVersion": "nodeless.dev/v1",
            "kind": "ImageCache",
            "metadata": {"name": CACHE},
            "spec": {"images": run_.cached.images},
        }
        async with session.post(f"{server}{CACHES_URL}", json=cache) as resp:
            if resp.status != 201:
                raise RuntimeError(f"ImageCache: {resp.status} {await resp.text()}")
        deadline = time.monotonic() + timeout
        while True:
            async with session.get(f"{server}{CACHES_URL}/{CACHE}") as resp:
                status = (await resp.json()).get("status") or {}
            if status.get("phase") == "Ready":
                run_.cache_ready_s = time.perf_counter() - t0
                break
            if status.get("phase") == "Failed" or time.monotonic() > deadline:
                raise RuntimeError(f"ImageCache did not get Ready: {status}")
            await asyncio.sleep(0.1)

        revision = str((await list_pods(session, server, LABEL, 1))["metadata"]["resourceVersion"])
        watcher = asyncio.create_task(
            watch_pods(session, server, LABEL, revision, on_event, run_.watch_errors)
        )
        url = f"{server}/api/v1/namespaces/{NAMESPACE}/pods"
        try:
            for i in range(len(run_.cold.images)):
                for kind, side in sides.items():
                    name = f"{kind}-{i:03d}"
                    annotations = {"nodeless.dev/image-cache": "auto"} if kind == "cached" else {}
                    body = {
                        "apiVersion": "v1",
                        "kind": "Pod",
                        "metadata": {
                            "name": name,
                            "labels": {"bench": "imagecache", "side": kind},
                            "annotations": annotations,
                        },
                        "spec": {
                            "terminationGracePeriodSeconds": 5,
                            "containers": [
                                {
                                    "name": "main",
                                    "image": side.images[i],
                                    "imagePullPolicy": "IfNotPresent",
                                    "command": COMMAND,
                                }
                            ],
                        },
                    }
                    waiting[name] = asyncio.Event()
                    side.sent_at[name] = time.perf_counter()
                    async with session.post(url, json=body) as resp:
                        if resp.status != 201:
                            run_.errors.append(f"{name}: {resp.status} {await resp.text()}")
                            continue
                    try:
                        await asyncio.wait_for(waiting[name].wait(), timeout=timeout)
                    except TimeoutError:
                        run_.errors.append(f"{name} not Running after {timeout:.0f} s")
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
            async with session.delete(
                url, params={"labelSelector": LABEL}, json={"gracePeriodSeconds": 5}
            ) as resp:
                await resp.read()
            deletion = await wait_pods_gone(session, server, LABEL, time.monotonic(), 120.0)
            run_.pods_left_after_delete = deletion.left
            async with session.delete(f"{server}{CACHES_URL}/{CACHE}") as resp:
                await resp.read()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--pods", type=int, default=10, help="pods each way (default 10)")
    parser.add_argument("--timeout", type=float, default=120.0, help="wait for one pod, in s")
    parser.add_argument("--pod-cidr", default=NODELESS_CIDR, help="nodeless up's pod CIDR")
    parser.add_argument("--pod-bridge", default=NODELESS_BRIDGE, help="nodeless up's bridge")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir and logs")
    args = parser.parse_args()
    args.baseline_bridge = BASELINE_BRIDGE  # clean_up removes both bench bridges
    if args.pods <= 0:
        parser.error("--pods must be positive")
    result: dict[str, Any] = {
        "bench": "image_cache_startup",
        "params": {"pods": args.pods},
        "unit": "ms",
        "metric": "p50 of created -> Running seen via watch, one pod at a time",
        "cold": None,
        "cached": None,
        "ratio": None,
        "target": "cached pods start without a pull (every cached pod matched; cached faster)",
        "met": None,
    }
    why = unavailable() or ("" if localregistries.available() else "docker-registry is missing")
    if why:
        print(f"image_cache_startup: skipped: {why}")
        print(json.dumps({**result, "skipped": why}))
        return 0
    if bridge_exists(args.pod_bridge):
        print(f"image_cache_startup: bridge {args.pod_bridge} exists already (another run?)")
        print(json.dumps({**result, "skipped": f"bridge {args.pod_bridge} exists"}))
        return 1

    workdir = Path(tempfile.mkdtemp(prefix="nlb-"))
    data = workdir / "data"
    settings = cluster_settings(data, args.pod_cidr, args.pod_bridge)
    notes: list[str] = []
    errors: list[str] = []
    outcome = Run(Side([]), Side([]))
    registry = localregistries.start(workdir / "registry")
    print(f"image_cache_startup: {args.pods} cold and {args.pods} cached pods, one at a time")
    try:
        images = build_images(args.pods)
        asyncio.run(push_all(registry, images))
        names = [registry.image(f"{repository}:1") for repository, _ in images]
        outcome = Run(Side(names[: args.pods]), Side(names[args.pods :]))
        containerd.write_registry_host(
            settings, registry.host, f"http://{registry.host}", skip_verify=True
        )
        cluster: Cluster | None = None
        try:
            cluster = start_cluster(data, workdir / "nodeless.log", args.pod_cidr, args.pod_bridge)
            ctx, server = tls_from_kubeconfig(data / "kubeconfig")
            asyncio.run(run(server, ctx, outcome, args.timeout))
        except Exception as e:
            errors.append(f"nodeless: {e!r}")
        finally:
            if cluster is not None:
                stop_cluster(cluster)
    finally:
        registry.stop()
        clean_up(args, workdir, (settings,), notes, errors)

    cold, cached = outcome.cold, outcome.cached
    c50, c99, w50, w99 = cold.p(50), cold.p(99), cached.p(50), cached.p(99)
    complete = len(cold.running_at) == len(cached.running_at) == args.pods
    ratio = c50 / w50 if c50 is not None and w50 else None
    met: bool | None = None
    if complete and ratio is not None:
        met = cached.matched == args.pods and ratio > 1
    elif cold.sent_at:
        met = False
    print(f"  ImageCache of {args.pods} images Ready in {fmt(outcome.cache_ready_s, '.2f')} s")
    print(
        f"  cold pull from the local registry: {len(cold.running_at)}/{args.pods} pods, "
        f"p50 {fmt(c50, '.0f')} ms, p99 {fmt(c99, '.0f')} ms"
    )
    print(
        f"  pre-cached by the ImageCache: {len(cached.running_at)}/{args.pods} pods, "
        f"p50 {fmt(w50, '.0f')} ms, p99 {fmt(w99, '.0f')} ms, "
        f"{cached.matched}/{args.pods} matched-image-cache"
    )
    print(f"  ratio cold/cached p50: {fmt(ratio)}")
    for line in errors + outcome.errors + outcome.watch_errors[:3] + notes:
        print(f"  {line}")
    result.update(
        cold={"p50": rounded(c50, 1), "p99": rounded(c99, 1), "running": len(cold.running_at)},
        cached={
            "p50": rounded(w50, 1),
            "p99": rounded(w99, 1),
            "running": len(cached.running_at),
            "matched": cached.matched,
        },
        cache_ready_s=rounded(outcome.cache_ready_s),
        ratio=rounded(ratio),
        met=met,
        errors=errors + outcome.errors,
        pods_left_after_delete=outcome.pods_left_after_delete,
    )
    print(json.dumps(result))
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
