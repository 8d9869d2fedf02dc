"""The resource metrics API (``metrics.k8s.io/v1beta1``) that ``kubectl top`` and the HPA read.

On a cluster this is metrics-server, aggregated into the API; here the API
server answers it itself from a source registered by whatever runs the
instances: the current usage of every running pod, per container. Each
virtual node's usage is the sum of its pods'. Objects are built as
metrics-server builds them: CPU in nanocores (``12345n``), memory in
kibibytes (``1024Ki``), the sample's ``timestamp`` and ``window``, pod
labels on the PodMetrics (so label selectors work).
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from nodeless.api import errors, protobuf, selectors, times

GROUP = "metrics.k8s.io"
VERSION = "v1beta1"
API_VERSION = f"{GROUP}/{VERSION}"


@dataclasses.dataclass(frozen=True)
class ContainerUsage:
    name: str
    cpu_nano_cores: int
    memory_bytes: int


@dataclasses.dataclass(frozen=True)
class PodUsage:
    """One running pod's sample."""

    pod: dict[str, Any]
    timestamp: datetime.datetime
    window_seconds: float
    containers: Sequence[ContainerUsage]


# () -> the usage of every running pod; registered by whatever runs the instances.
MetricsSource = Callable[[], Awaitable[list[PodUsage]]]


def cpu_quantity(nano_cores: int) -> str:
    return f"{max(0, nano_cores)}n"


def memory_quantity(size: int) -> str:
    return f"{max(0, size) // 1024}Ki"


def _window(seconds: float) -> str:
    """As Go prints a duration (``10.5s``, ``1m30s``), to the millisecond."""
    return protobuf.go_duration(round(seconds * 1000) * 1_000_000)


def pod_metrics(usage: PodUsage, now: datetime.datetime) -> dict[str, Any]:
    meta = usage.pod.get("metadata") or {}
    return {
        "kind": "PodMetrics",
        "apiVersion": API_VERSION,
        "metadata": {
            "name": meta.get("name", ""),
            "namespace": meta.get("namespace", ""),
            "creationTimestamp": times.rfc3339(now),
            "labels": dict(meta.get("labels") or {}),
        },
        "timestamp": times.rfc3339(usage.timestamp),
        "window": _window(usage.window_seconds),
        "containers": [
            {
                "name": c.name,
                "usage": {
                    "cpu": cpu_quantity(c.cpu_nano_cores),
                    "memory": memory_quantity(c.memory_bytes),
                },
            }
            for c in usage.containers
        ],
    }


def node_metrics(
    node: dict[str, Any], usages: Sequence[PodUsage], now: datetime.datetime
) -> dict[str, Any]:
    """A virtual node's usage: the sum of its pods' (a node without pods uses nothing)."""
    meta = node.get("metadata") or {}
    name = meta.get("name", "")
    mine = [u for u in usages if (u.pod.get("spec") or {}).get("nodeName") == name]
    cpu = sum(c.cpu_nano_cores for u in mine for c in u.containers)
    memory = sum(c.memory_bytes for u in mine for c in u.containers)
    stamp = max((u.timestamp for u in mine), default=now)
    window = max((u.window_seconds for u in mine), default=10.0)
    return {
        "kind": "NodeMetrics",
        "apiVersion": API_VERSION,
        "metadata": {
            "name": name,
            "creationTimestamp": times.rfc3339(now),
            "labels": dict(meta.get("labels") or {}),
        },
        "timestamp": times.rfc3339(stamp),
        "window": _window(window),
        "usage": {"cpu": cpu_quantity(cpu), "memory": memory_quantity(memory)},
    }


def listing(kind: str, items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"kind": f"{kind}List", "apiVersion": API_VERSION, "metadata": {}, "items": items}


def select(
    items: list[dict[str, Any]], label_selector: str | None, name: str = ""
) -> list[dict[str, Any]]:
    """Items matching a label selector (and a name, for a get)."""
    selector = selectors.parse_label_selector(label_selector or "")
    return [
        item
        for item in items
        if selector.matches((item.get("metadata") or {}).get("labels") or {})
        and (not name or (item.get("metadata") or {}).get("name") == name)
    ]


def not_found(kind: str, name: str) -> errors.StatusError:
    return errors.not_found("pods" if kind == "PodMetrics" else "nodes", GROUP, name)
