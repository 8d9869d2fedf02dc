"""Scale-from-zero through the ingress gateway, on `nodeless up --provider cri`:
the first HTTP response when the workload has 0 replicas (the gateway holds
the request, wakes the Deployment and forwards it once a pod is Ready),
beside, in the same run, the same request to a warm replica.

    .venv/bin/python bench/scale_from_zero.py            # 5 cold starts
    .venv/bin/python bench/scale_from_zero.py --quick    # 2 cold starts

The workload is busybox's httpd from the locally built image (cached: no
pull is timed), behind a readiness probe checked every second (the kubelet's
minimum period; the first check runs as soon as the container started), with
`nodeless.dev/scale-to-zero` and a 2 s grace period. Each round waits until
the Deployment is back at zero with no pod left, then times one cold request
and 10 warm ones. Target (performance.md): cold <= 1 s with a cached image.

Everything started is removed at the end, failed or not. Needs root and
containerd; without them it says why and prints a JSON line with "met": null.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
from pods_real import (
    IMAGE,
    bridge_exists,
    clean_up,
    cluster_settings,
    fmt,
    session_for,
    start_cluster,
    stop_cluster,
    unavailable,
)
from pods_simulated import free_port, tls_from_kubeconfig

T = TypeVar("T")
NAMESPACE = "default"
HOST = "hello.bench.test"
CIDR = "10.95.0.0/24"
BRIDGE = "nlbench5"
TARGET_S = 1.0
SCRIPT = (
    'echo "hello from $(hostname)" > /tmp/index.html; '
    "httpd -f -p 8080 -h /tmp & trap 'exit 0' TERM; wait"
)


def manifests() -> list[tuple[str, dict[str, Any]]]:
    labels = {"app": "hello"}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "hello",
            "annotations": {
                "nodeless.dev/scale-to-zero": "true",
                "nodeless.dev/scale-to-zero-grace": "2s",
            },
        },
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "terminationGracePeriodSeconds": 2,
                    "containers": [
                        {
                            "name": "main",
                            "image": IMAGE,
                            "command": ["sh", "-c", SCRIPT],
                            "ports": [{"name": "http", "containerPort": 8080}],
                            "readinessProbe": {
                                "httpGet": {"path": "/index.html", "port": "http"},
                                "periodSeconds": 1,
                            },
                        }
                    ],
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "hello"},
        "spec": {"selector": labels, "ports": [{"port": 80, "targetPort": "http"}]},
    }
    ingress = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": "hello"},
        "spec": {
            "ingressClassName": "nodeless",
            "rules": [
                {
                    "host": HOST,
                    "http": {
                        "paths": [
                            {
                                "path": "/",
                                "pathType": "Prefix",
                                "backend": {"service": {"name": "hello", "port": {"number": 80}}},
                            }
                        ]
                    },
                }
            ],
        },
    }
    return [
        (f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments", deployment),
        (f"/api/v1/namespaces/{NAMESPACE}/services", service),
        (f"/apis/networking.k8s.io/v1/namespaces/{NAMESPACE}/ingresses", ingress),
    ]


async def timed_get(session: aiohttp.ClientSession, url: str) -> float:
    t0 = time.perf_counter()
    async with session.get(url, headers={"Host": HOST}) as resp:
        body = await resp.text()
        if resp.status != 200 or not body.startswith("hello from"):
            raise RuntimeError(f"gateway answered {resp.status}: {body[:200]}")
    return time.perf_counter() - t0


async def asleep(api: aiohttp.ClientSession, server: str) -> bool:
    """The Deployment is at zero and its last pod is gone."""
    async with api.get(f"{server}/apis/apps/v1/namespaces/{NAMESPACE}/deployments/hello") as r:
        replicas = (await r.json())["spec"]["replicas"]
    async with api.get(
        f"{server}/api/v1/namespaces/{NAMESPACE}/pods", params={"labelSelector": "app=hello"}
    ) as r:
        pods = (await r.json())["items"]
    return replicas == 0 and not pods


async def run(
    server: str, ctx: ssl.SSLContext, gateway: str, rounds: int
) -> tuple[list[float], list[float]]:
    cold: list[float] = []
    warm: list[float] = []
    async with session_for(ctx) as api:
        for path, body in manifests():
            async with api.post(f"{server}{path}", json=body) as resp:
                if resp.status not in (201, 409):
                    raise RuntimeError(f"creating {path}: {resp.status} {await resp.text()}")
        # A fresh connection per request: no keep-alive to the gateway helps the cold one.
        timeout = aiohttp.ClientTimeout(total=60)
        for n in range(rounds):
            deadline = time.monotonic() + 120
            while not await asleep(api, server):
                if time.monotonic() > deadline:
                    raise RuntimeError("the Deployment never went back to zero")
                await asyncio.sleep(0.2)
            async with aiohttp.ClientSession(timeout=timeout) as client:
                cold.append(await timed_get(client, gateway))
            async with aiohttp.ClientSession(timeout=timeout) as client:
                for _ in range(10):
                    warm.append(await timed_get(client, gateway))
            print(f"  round {n + 1}: cold {cold[-1] * 1000:.0f} ms, warm p50 "
                  f"{statistics.median(warm[-10:]) * 1000:.1f} ms")  # fmt: skip
    return cold, warm


def preflight(bench: str, bridge: str, result: dict[str, Any]) -> int | None:
    """The exit status when the bench cannot run here (said, with the JSON
    line), or None to go on."""
    if why := unavailable():
        print(f"{bench}: skipped: {why}")
        print(json.dumps({**result, "skipped": why}))
        return 0
    if bridge_exists(bridge):
        print(f"{bench}: bridge {bridge} exists already (another run?)")
        print(json.dumps({**result, "skipped": f"bridge {bridge} exists"}))
        return 1
    return None


def with_gateway_cluster(
    cidr: str,
    bridge: str,
    keep: bool,
    body: Callable[[str, ssl.SSLContext, str], Awaitable[T]],
) -> tuple[T | None, list[str], list[str]]:
    """Run ``body(api server, its TLS context, the gateway's URL)`` against a
    fresh `nodeless up --provider cri` with the ingress gateway on a free
    port; everything started is removed after. (result or None, notes, errors)."""
    workdir = Path(tempfile.mkdtemp(prefix="nlb-"))
    data = workdir / "data"
    http_port = free_port()
    options = ("--ingress-listen", f"127.0.0.1:{http_port}", "--ingress-tls-listen", "off")
    errors: list[str] = []
    notes: list[str] = []
    outcome: T | None = None
    # clean_up's arguments: these benches have one bridge, given twice.
    cleanup_args = argparse.Namespace(pod_bridge=bridge, baseline_bridge=bridge, keep=keep)
    try:
        cluster = start_cluster(data, workdir / "nodeless.log", cidr, bridge, options=options)
        try:
            ctx, server = tls_from_kubeconfig(data / "kubeconfig")
            gateway = f"http://127.0.0.1:{http_port}/index.html"
            outcome = asyncio.run(body(server, ctx, gateway))
        except Exception as e:
            errors.append(f"nodeless: {e!r}")
        finally:
            stop_cluster(cluster)
    except Exception as e:
        errors.append(f"starting nodeless up: {e!r}")
    finally:
        clean_up(cleanup_args, workdir, (cluster_settings(data, cidr, bridge),), notes, errors)
    return outcome, notes, errors


def report(result: dict[str, Any], notes: list[str], errors: list[str]) -> int:
    """Print the notes, errors and the JSON line; the exit status."""
    for note in notes:
        print(f"  note: {note}")
    for error in errors:
        print(f"  error: {error}")
    if errors:
        result["errors"] = errors
    print(json.dumps(result))
    return 1 if errors else 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=None, help="cold starts (default 5)")
    parser.add_argument("--quick", action="store_true", help="2 cold starts")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir and logs")
    args = parser.parse_args()
    rounds = args.rounds or (2 if args.quick else 5)
    result: dict[str, Any] = {
        "bench": "scale_from_zero",
        "params": {"rounds": rounds, "image": IMAGE, "grace_s": 2},
        "nodeless": None,
        "baseline": None,
        "unit": "ms",
        "metric": "first response through the ingress at 0 replicas (cold) vs a warm replica",
        "target": "cold <= 1000 ms",
        "met": None,
    }
    if (status := preflight("scale_from_zero", BRIDGE, result)) is not None:
        return status
    print(f"scale_from_zero: {rounds} cold starts of {IMAGE} through the ingress gateway")

    async def body(
        server: str, ctx: ssl.SSLContext, gateway: str
    ) -> tuple[list[float], list[float]]:
        return await run(server, ctx, gateway, rounds)

    outcome, notes, errors = with_gateway_cluster(CIDR, BRIDGE, args.keep, body)
    cold, warm = outcome or ([], [])
    if cold:
        c50 = statistics.median(cold) * 1000
        w50 = statistics.median(warm) * 1000
        result.update(
            nodeless={"p50": round(c50, 1), "max": round(max(cold) * 1000, 1), "n": len(cold)},
            baseline={"p50": round(w50, 2), "n": len(warm)},
            ratio=round(c50 / w50, 1) if w50 else None,
            met=max(cold) <= TARGET_S and not errors,
        )
        print(
            f"  cold p50 {fmt(c50, '.0f')} ms (max {max(cold) * 1000:.0f}); warm p50 {w50:.1f} ms"
        )
    return report(result, notes, errors)


if __name__ == "__main__":
    raise SystemExit(main())
