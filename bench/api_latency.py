"""API latency: p50/p99 of single-object create/get/patch/delete through a real
`nodeless up` (TLS, client certificate) at a fixed rate of mutating requests
with watchers open, beside the raw SQLite store's write latency in the same run.

    .venv/bin/python bench/api_latency.py [--rate 100] [--seconds 20] [--watchers 10]

Prints a short summary, then one JSON line (see ../shared/reference/performance.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from nodeless.client import kubeconfigs
from nodeless.storage import sqlite

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
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


async def store_baseline(workdir: Path, count: int, rate: float) -> list[float]:
    """Raw store write latency: the same number of writes, at the same rate, straight to SQLite."""
    backend = sqlite.SqliteBackend(workdir / "baseline.db")
    await backend.start()
    latencies: list[float] = []
    value = json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "data": {"k": "v" * 64}}).encode()
    interval = 1.0 / rate
    start = time.perf_counter()
    try:
        for i in range(count):
            target = start + i * interval
            delay = target - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            t0 = time.perf_counter()
            await backend.create(f"/registry/core/configmaps/bench/cm-{i}", value)
            latencies.append((time.perf_counter() - t0) * 1000)
    finally:
        await backend.close()
    return latencies


async def watcher(
    session: aiohttp.ClientSession, url: str, counts: list[int], ready: asyncio.Event
) -> None:
    async with session.get(
        url,
        params={"watch": "1", "allowWatchBookmarks": "true"},
        timeout=aiohttp.ClientTimeout(total=None),
    ) as resp:
        ready.set()
        async for _line in resp.content:
            counts[0] += 1


async def run_api(
    server: str, ctx: ssl.SSLContext, rate: float, seconds: float, watchers: int
) -> dict[str, list[float]]:
    connector = aiohttp.TCPConnector(ssl=ctx, limit=0)
    latencies: dict[str, list[float]] = {"create": [], "get": [], "patch": [], "delete": []}
    ns = "bench"
    async with aiohttp.ClientSession(connector=connector) as session:
        async with session.post(
            f"{server}/api/v1/namespaces",
            json={"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
        ) as resp:
            assert resp.status in (201, 409), await resp.text()
        base = f"{server}/api/v1/namespaces/{ns}/configmaps"
        counts = [0]
        tasks = []
        for _ in range(watchers):
            ready = asyncio.Event()
            tasks.append(asyncio.create_task(watcher(session, base, counts, ready)))
            await ready.wait()

        async def timed(kind: str, method: str, url: str, **kwargs: Any) -> None:
            t0 = time.perf_counter()
            async with session.request(method, url, **kwargs) as resp:
                await resp.read()
                if resp.status >= 300:
                    raise RuntimeError(f"{method} {url}: {resp.status} {await resp.text()}")
            latencies[kind].append((time.perf_counter() - t0) * 1000)

        async def lifecycle(i: int, slot: float) -> None:
            # Three mutating requests per object, one slot apart; a read in between.
            name = f"cm-{i}"
            step = 1.0 / rate
            await asyncio.sleep(max(0.0, slot - time.perf_counter()))
            await timed(
                "create",
                "POST",
                base,
                json={
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": name},
                    "data": {"k": "v" * 64},
                },
            )
            await timed("get", "GET", f"{base}/{name}")
            await asyncio.sleep(max(0.0, slot + step * 1 - time.perf_counter()))
            await timed(
                "patch",
                "PATCH",
                f"{base}/{name}",
                data=json.dumps({"data": {"k": "w"}}),
                headers={"Content-Type": "application/strategic-merge-patch+json"},
            )
            await asyncio.sleep(max(0.0, slot + step * 2 - time.perf_counter()))
            await timed("delete", "DELETE", f"{base}/{name}")

        objects = int(rate * seconds / 3)
        start = time.perf_counter() + 0.2
        # Each object takes three mutating slots; objects start every 3 slots so
        # the whole run keeps `rate` mutating requests per second.
        jobs = [asyncio.create_task(lifecycle(i, start + i * 3.0 / rate)) for i in range(objects)]
        await asyncio.gather(*jobs)
        await asyncio.sleep(0.5)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        expected = objects * 3 * watchers
        print(f"watch events delivered: {counts[0]} (>= {expected} expected)")
    return latencies


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=100.0, help="mutating requests per second")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--watchers", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        data = workdir / "data"
        port = free_port()
        proc = subprocess.Popen(  # noqa: ASYNC220 - a benchmark driver, blocking is fine
            [
                str(BIN / "nodeless"),
                "up",
                "--data-dir",
                str(data),
                "--listen",
                f"127.0.0.1:{port}",
                "--provider",
                "none",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        try:
            assert proc.stdout is not None
            while "ready" not in (line := proc.stdout.readline()):
                if not line:
                    raise SystemExit("nodeless up did not start")
            ctx, server = tls_from_kubeconfig(data / "kubeconfig")
            api = await run_api(server, ctx, args.rate, args.seconds, args.watchers)
            mutating = int(args.rate * args.seconds)
            baseline = await store_baseline(workdir, mutating, args.rate)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
    rows = {}
    for kind, values in api.items():
        rows[kind] = {
            "n": len(values),
            "p50_ms": round(percentile(values, 50), 2),
            "p99_ms": round(percentile(values, 99), 2),
        }
        print(
            f"{kind:>7}: n={len(values):5d}  p50={rows[kind]['p50_ms']:7.2f} ms  p99={rows[kind]['p99_ms']:7.2f} ms"
        )
    all_mutating = api["create"] + api["patch"] + api["delete"]
    p99 = percentile(all_mutating, 99)
    base_p99 = percentile(baseline, 99)
    print(f"mutating overall: p50={percentile(all_mutating, 50):.2f} ms  p99={p99:.2f} ms")
    print(f"raw store write : p50={statistics.median(baseline):.2f} ms  p99={base_p99:.2f} ms")
    result = {
        "bench": "api_latency",
        "params": {"rate": args.rate, "seconds": args.seconds, "watchers": args.watchers},
        "nodeless": round(p99, 2),
        "baseline": round(base_p99, 2),
        "unit": "ms",
        "ratio": round(p99 / base_p99, 2) if base_p99 else None,
        "target": "p99 <= 25 ms",
        "met": p99 <= 25.0,
        "ops": rows,
        "store_p50_ms": round(statistics.median(baseline), 2),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(asyncio.run(main()))
