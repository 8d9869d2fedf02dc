"""Per-second billing: the arithmetic of the ledger, pure.

Every instance has one BillingRecord (``nodeless.dev/v1``, cluster-scoped so
that a bill outlives its namespace). Its status holds the instance's billed
intervals, one per billed state it went through (Pending, Running,
Restarting, Terminating; Scheduling, failures to schedule and Expired are
free), each with the hourly price in force during it. An interval still
open (``end`` unset) runs until now.

Charging is per started second, as the clouds bill containers: an interval
of 61.2 s is 62 s; its cost is seconds x hourly price / 3600, kept as an
exact Decimal and rounded only for display. A time range clips intervals
before they are rounded, so the cost of a day plus the cost of the next day
never exceeds the cost of both by more than a second per interval.

Who a record belongs to is in its spec (``namespace``, ``podName``,
``workload``: ``Kind/name`` of the top of the pod's owner chain) and its
labels: the pod's own labels, plus ``nodeless.dev/namespace``,
``nodeless.dev/pod`` and ``nodeless.dev/workload`` (``Kind.name``), so
``kubectl get billingrecords -l app=web`` finds them too. Instances still
running are billed from the ``status.billing`` of their Instance record, in
the same shape; ``open_bill`` makes them look like BillingRecords.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final

from nodeless.api import times

NAMESPACE_LABEL: Final = "nodeless.dev/namespace"
POD_LABEL: Final = "nodeless.dev/pod"
WORKLOAD_LABEL: Final = "nodeless.dev/workload"
HOUR: Final = Decimal(3600)

GROUPINGS: Final = ("namespace", "workload", "pod")


def parse_time(text: Any) -> datetime.datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.UTC)


def format_time(moment: datetime.datetime) -> str:
    """RFC 3339 with microseconds, UTC (intervals are charged per second,
    but where a second starts must not drift)."""
    return times.rfc3339_micro(moment)


@dataclass(frozen=True)
class Interval:
    state: str
    start: datetime.datetime
    end: datetime.datetime | None
    hourly_price: Decimal

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> Interval | None:
        start = parse_time(obj.get("start"))
        if start is None:
            return None
        try:
            price = Decimal(str(obj.get("hourlyPrice") or "0"))
        except ArithmeticError:
            price = Decimal(0)
        return cls(str(obj.get("state") or ""), start, parse_time(obj.get("end")), price)

    def seconds(
        self,
        now: datetime.datetime,
        since: datetime.datetime | None = None,
        until: datetime.datetime | None = None,
    ) -> int:
        """Whole seconds charged within [since, until) (each started second counts)."""
        start = self.start if since is None else max(self.start, since)
        end = self.end or now
        if until is not None:
            end = min(end, until)
        if end <= start:
            return 0
        return math.ceil((end - start).total_seconds() - 1e-9)

    def cost(
        self,
        now: datetime.datetime,
        since: datetime.datetime | None = None,
        until: datetime.datetime | None = None,
    ) -> Decimal:
        return Decimal(self.seconds(now, since, until)) * self.hourly_price / HOUR


def intervals_of(record: Mapping[str, Any]) -> list[Interval]:
    items = (record.get("status") or {}).get("intervals") or []
    return [i for i in (Interval.from_object(x) for x in items if isinstance(x, Mapping)) if i]


@dataclass
class Line:
    """One row of a cost report."""

    key: tuple[str, ...]
    pods: set[str] = field(default_factory=set)
    seconds: int = 0
    cost: Decimal = Decimal(0)
    capacity: set[str] = field(default_factory=set)


def group_key(record: Mapping[str, Any], by: str) -> tuple[str, ...]:
    spec = record.get("spec") or {}
    namespace = str(spec.get("namespace") or "")
    if by == "namespace":
        return (namespace,)
    if by == "workload":
        return (namespace, str(spec.get("workload") or f"Pod/{spec.get('podName', '')}"))
    return (namespace, str(spec.get("podName") or ""))


def report(
    records: Iterable[Mapping[str, Any]],
    by: str,
    now: datetime.datetime,
    since: datetime.datetime | None = None,
    until: datetime.datetime | None = None,
) -> list[Line]:
    """Instance-seconds and cost per namespace, workload or pod within the
    range, most expensive first (then by name)."""
    if by not in GROUPINGS:
        raise ValueError(f"cannot group by {by!r}: one of {', '.join(GROUPINGS)}")
    lines: dict[tuple[str, ...], Line] = {}
    for record in records:
        intervals = intervals_of(record)
        seconds = sum(i.seconds(now, since, until) for i in intervals)
        if not seconds:
            continue
        key = group_key(record, by)
        line = lines.setdefault(key, Line(key))
        spec = record.get("spec") or {}
        line.pods.add(
            f"{spec.get('namespace', '')}/{spec.get('podUID') or spec.get('podName', '')}"
        )
        line.seconds += seconds
        line.cost += sum((i.cost(now, since, until) for i in intervals), Decimal(0))
        line.capacity.add(str((record.get("spec") or {}).get("capacityType") or "on-demand"))
    return sorted(lines.values(), key=lambda line: (-line.cost, line.key))


def money(value: Decimal, places: int = 6) -> str:
    return f"{value.quantize(Decimal(1).scaleb(-places)):f}"


def advance(
    intervals: list[dict[str, Any]], state: str, billed: bool, now: str, hourly_price: str
) -> list[dict[str, Any]]:
    """The intervals after the instance entered ``state`` at ``now``: the open
    one closes if the state changed or is not billed; a billed state opens
    one (none opens twice for the same state)."""
    out = [dict(i) for i in intervals]
    last = out[-1] if out else None
    if last is not None and not last.get("end"):
        if billed and last.get("state") == state:
            return out
        last["end"] = now
    if billed:
        out.append({"state": state, "start": now, "hourlyPrice": hourly_price})
    return out


def reprice(intervals: list[dict[str, Any]], hourly_price: str, now: str) -> list[dict[str, Any]]:
    """The open interval ends at ``now`` and a new one at the new price goes
    on in the same state (a spot price change after the protection period)."""
    out = [dict(i) for i in intervals]
    if not out or out[-1].get("end") or out[-1].get("hourlyPrice") == hourly_price:
        return out
    state = out[-1].get("state")
    out[-1]["end"] = now
    out.append({"state": state, "start": now, "hourlyPrice": hourly_price})
    return out


def close(intervals: list[dict[str, Any]], now: str) -> list[dict[str, Any]]:
    """Every interval ended (the instance is gone)."""
    return [i if i.get("end") else {**i, "end": now} for i in intervals]


def totals(intervals: list[dict[str, Any]], now: datetime.datetime) -> tuple[int, Decimal]:
    parsed = [i for i in (Interval.from_object(x) for x in intervals) if i]
    return sum(i.seconds(now) for i in parsed), sum((i.cost(now) for i in parsed), Decimal(0))


# Owners a workload sits above (followed up the chain); anything else is the
# top: (apiVersion, kind) -> plural.
OWNER_KINDS: Final = {
    ("apps/v1", "ReplicaSet"): "replicasets",
    ("apps/v1", "Deployment"): "deployments",
    ("apps/v1", "StatefulSet"): "statefulsets",
    ("batch/v1", "Job"): "jobs",
    ("batch/v1", "CronJob"): "cronjobs",
    ("serving.knative.dev/v1", "Revision"): "revisions",
    ("serving.knative.dev/v1", "Service"): "services",
}
MAX_OWNER_DEPTH: Final = 6
_CORE_GROUPS: Final = ("", "v1", "apps", "batch")


def controller_ref(obj: Mapping[str, Any] | None) -> dict[str, str] | None:
    """The object's controller (apiVersion, kind, name), or None."""
    for ref in ((obj or {}).get("metadata") or {}).get("ownerReferences") or ():
        if ref.get("controller"):
            return {
                "apiVersion": str(ref.get("apiVersion") or ""),
                "kind": str(ref.get("kind") or ""),
                "name": str(ref.get("name") or ""),
            }
    return None


def owner_lookup(ref: Mapping[str, Any]) -> tuple[str, str, str, str] | None:
    """(group, version, plural, kind) to read an owner by, when its own owner counts."""
    api_version, kind = str(ref.get("apiVersion") or ""), str(ref.get("kind") or "")
    plural = OWNER_KINDS.get((api_version, kind))
    if plural is None:
        return None
    group, _, version = api_version.rpartition("/")
    return group, version, plural, kind


Fetch = Callable[[tuple[str, str, str, str], str], Awaitable[Mapping[str, Any] | None]]


async def top_owner(ref: Mapping[str, Any] | None, fetch: Fetch) -> Mapping[str, Any] | None:
    """Follow controller references up from a pod's owner while they lead to
    a kind in ``OWNER_KINDS``; ``fetch(lookup, name)`` reads one (None: gone)."""
    for _ in range(MAX_OWNER_DEPTH):
        lookup = owner_lookup(ref) if ref else None
        if ref is None or lookup is None:
            break
        parent = controller_ref(await fetch(lookup, str(ref.get("name") or "")))
        if parent is None:
            break
        ref = parent
    return ref


def workload_name(ref: Mapping[str, Any] | None) -> str:
    """``Deployment/web``; kinds of other groups carry theirs
    (``Service.serving.knative.dev/hello``), as kubectl names them."""
    if not ref:
        return ""
    group = str(ref.get("apiVersion") or "").rpartition("/")[0]
    kind = str(ref.get("kind") or "")
    if group not in _CORE_GROUPS:
        kind = f"{kind}.{group}"
    return f"{kind}/{ref.get('name')}"


def _label_value(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def prometheus(bills: Iterable[Mapping[str, Any]], now: datetime.datetime) -> str:
    """Counters of cost and instance-seconds so far, per namespace, workload
    and capacity type, in Prometheus' text format (bills in BillingRecord
    shape, ended and running)."""
    seconds: dict[tuple[str, str, str, str], int] = {}
    costs: dict[tuple[str, str, str, str], Decimal] = {}
    running: dict[tuple[str, str], int] = {}
    for bill in bills:
        spec = bill.get("spec") or {}
        key = (
            str(spec.get("namespace") or ""),
            str(spec.get("workload") or f"Pod/{spec.get('podName', '')}"),
            str(spec.get("capacityType") or "on-demand"),
            str(spec.get("currency") or "USD"),
        )
        intervals = intervals_of(bill)
        seconds[key] = seconds.get(key, 0) + sum(i.seconds(now) for i in intervals)
        costs[key] = costs.get(key, Decimal(0)) + sum((i.cost(now) for i in intervals), Decimal(0))
        if intervals and intervals[-1].end is None:
            gauge = (key[0], key[2])
            running[gauge] = running.get(gauge, 0) + 1
    lines = [
        "# HELP nodeless_cost_total What instances have cost so far, in the catalogue's currency.",
        "# TYPE nodeless_cost_total counter",
    ]
    for (namespace, workload, capacity, currency), value in sorted(costs.items()):
        lines.append(
            f'nodeless_cost_total{{namespace="{_label_value(namespace)}",'
            f'workload="{_label_value(workload)}",capacity_type="{capacity}",'
            f'currency="{_label_value(currency)}"}} {money(value, 9)}'
        )
    lines += [
        "# HELP nodeless_instance_seconds_total Instance-seconds billed so far.",
        "# TYPE nodeless_instance_seconds_total counter",
    ]
    for (namespace, workload, capacity, _), billed in sorted(seconds.items()):
        lines.append(
            f'nodeless_instance_seconds_total{{namespace="{_label_value(namespace)}",'
            f'workload="{_label_value(workload)}",capacity_type="{capacity}"}} {billed}'
        )
    lines += [
        "# HELP nodeless_instances_billed Instances being billed now.",
        "# TYPE nodeless_instances_billed gauge",
    ]
    for (namespace, capacity), count in sorted(running.items()):
        lines.append(
            f'nodeless_instances_billed{{namespace="{_label_value(namespace)}",'
            f'capacity_type="{capacity}"}} {count}'
        )
    return "\n".join(lines) + "\n"


def open_bill(instance: Mapping[str, Any]) -> dict[str, Any]:
    """An Instance record (a live instance) in a BillingRecord's shape."""
    meta = instance.get("metadata") or {}
    spec = instance.get("spec") or {}
    return {
        "metadata": {"name": spec.get("instanceID"), "labels": dict(spec.get("podLabels") or {})},
        "spec": {
            **spec,
            "namespace": meta.get("namespace"),
            # The pod's own controller; readers follow it up (``top_owner``).
            "workload": workload_name(spec.get("owner")),
        },
        "status": {
            "intervals": ((instance.get("status") or {}).get("billing") or {}).get("intervals")
            or []
        },
    }
