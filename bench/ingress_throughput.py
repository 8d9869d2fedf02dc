"""Requests per second and latency through the ingress gateway versus straight
to the pod IP, in the same run, on `nodeless up --provider cri`.

    .venv/bin/python bench/ingress_throughput.py            # 10 s per path
    .venv/bin/python bench/ingress_throughput.py --quick    # 3 s per path

One pod of busybox's httpd (from the locally built image) behind a Service
and an Ingress; a bounded closed-loop load (--concurrency clients, each
sending its next GET when the last one answered) for --seconds on each path,
the direct path first. Both the load and the gateway run on this machine's 2
cores, so the numbers compare the paths, not the machine. performance.md
sets no target; the README reports the rows.

Everything started is removed at the end, failed or not. Needs root and
containerd; without them it says why and prints a JSON line with "met": null.
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
import time
from typing import Any

import aiohttp
from pods_real import (
    session_for,
)
from pods_simulated import percentile
from scale_from_zero import HOST, NAMESPACE, manifests, preflight, report, with_gateway_cluster

CIDR = "10.95.1.0/24"
BRIDGE = "nlbench6"


async def load(url: str, host: str, seconds: float, concurrency: int) -> dict[str, Any]:
    latencies: list[float] = []
    failures = 0
    stop_at = time.perf_counter() + seconds
    timeout = aiohttp.ClientTimeout(total=30)

    async def client() -> None:
        nonlocal failures
        connector = aiohttp.TCPConnector(limit=1)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            while time.perf_counter() < stop_at:
                t0 = time.perf_counter()
                try:
                    async with session.get(url, headers={"Host": host}) as resp:
                        await resp.read()
                        ok = resp.status == 200
                except aiohttp.ClientError:
                    ok = False
                if ok:
                    latencies.append(time.perf_counter() - t0)
                else:
                    failures += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    elapsed = time.perf_counter() - t0
    return {
        "rps": round(len(latencies) / elapsed, 1),
        "p50_ms": round((percentile(latencies, 50) or 0) * 1000, 2),
        "p99_ms": round((percentile(latencies, 99) or 0) * 1000, 2),
        "requests": len(latencies),
        "failures": failures,
    }


async def run(
    server: str, ctx: ssl.SSLContext, gateway: str, seconds: float, concurrency: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    async with session_for(ctx) as api:
        for path, body in manifests():
            # Always one replica: this bench measures the warm path.
            if body["kind"] == "Deployment":
                body["metadata"]["annotations"] = {}
                body["spec"]["replicas"] = 1
            async with api.post(f"{server}{path}", json=body) as resp:
                if resp.status not in (201, 409):
                    raise RuntimeError(f"creating {path}: {resp.status} {await resp.text()}")
        pod_ip = ""
        deadline = time.monotonic() + 120
        while not pod_ip:
            if time.monotonic() > deadline:
                raise RuntimeError("the pod never became Ready")
            async with api.get(
                f"{server}/api/v1/namespaces/{NAMESPACE}/pods",
                params={"labelSelector": "app=hello"},
            ) as r:
                for pod in (await r.json())["items"]:
                    conditions = (pod.get("status") or {}).get("conditions") or []
                    if any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
                        pod_ip = pod["status"]["podIP"]
            await asyncio.sleep(0.2)
    # The gateway learns of the endpoint through its informers: wait for it to serve.
    async with aiohttp.ClientSession() as session:
        while True:
            async with session.get(gateway, headers={"Host": HOST}) as resp:
                if resp.status == 200:
                    break
            await asyncio.sleep(0.2)
    direct = await load(f"http://{pod_ip}:8080/index.html", HOST, seconds, concurrency)
    through = await load(gateway, HOST, seconds, concurrency)
    return direct, through


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=None, help="per path (default 10)")
    parser.add_argument("--quick", action="store_true", help="3 s per path")
    parser.add_argument("--concurrency", type=int, default=8, help="clients in the closed loop")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir and logs")
    args = parser.parse_args()
    seconds = args.seconds or (3.0 if args.quick else 10.0)
    result: dict[str, Any] = {
        "bench": "ingress_throughput",
        "params": {"seconds": seconds, "concurrency": args.concurrency},
        "nodeless": None,
        "baseline": None,
        "unit": "requests/s",
        "metric": "closed-loop GETs through the ingress gateway vs straight to the pod IP",
        "target": None,
        "met": None,
    }
    if (status := preflight("ingress_throughput", BRIDGE, result)) is not None:
        return status
    print(
        f"ingress_throughput: {args.concurrency} clients, {seconds:g} s per path "
        "(pod IP first, then the gateway)"
    )

    async def body(
        server: str, ctx: ssl.SSLContext, gateway: str
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        return await run(server, ctx, gateway, seconds, args.concurrency)

    outcome, notes, errors = with_gateway_cluster(CIDR, BRIDGE, args.keep, body)
    if outcome is not None:
        direct, through = outcome
        result.update(
            nodeless=through,
            baseline=direct,
            ratio=round(through["rps"] / direct["rps"], 2) if direct["rps"] else None,
        )
        for name, row in (("pod IP", direct), ("gateway", through)):
            print(
                f"  {name:8} {row['rps']:8.1f} req/s  p50 {row['p50_ms']:.2f} ms  "
                f"p99 {row['p99_ms']:.2f} ms  failures {row['failures']}"
            )
    return report(result, notes, errors)


if __name__ == "__main__":
    raise SystemExit(main())
