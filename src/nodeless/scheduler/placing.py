"""Where a pod may go: zone filters and the choice among them. Pure.

Filters, in upstream's spirit: the zones annotation, nodeSelector and required
node affinity against the zone node's labels, topologySpreadConstraints on the
zone key (DoNotSchedule filters, ScheduleAnyway prefers), then capacity. The
choice honours the annotation's schedule strategy (ordered or random).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from nodeless.api import selectors
from nodeless.serverless import annotations as pod_annotations
from nodeless.serverless import catalogue

ZONE_KEY = "topology.kubernetes.io/zone"


@dataclass
class ZoneState:
    """A zone as the scheduler accounts for it: its node's labels, quota and use."""

    name: str
    labels: dict[str, str]
    max_instances: int
    max_vcpu: Decimal
    max_memory_gib: Decimal
    instances: int = 0
    vcpu: Decimal = Decimal(0)
    memory_gib: Decimal = Decimal(0)
    max_gpus: int = 0
    gpus: int = 0
    # Pods per namespace in this zone, for spread constraints: (ns, labels).
    pods: list[tuple[str, Mapping[str, str]]] = field(default_factory=list)

    def fits(self, spec: catalogue.Spec) -> bool:
        return (
            self.instances + 1 <= self.max_instances
            and self.vcpu + spec.vcpu <= self.max_vcpu
            and self.memory_gib + spec.memory_gib <= self.max_memory_gib
            and self.gpus + spec.gpu_count <= self.max_gpus
        )

    def take(self, spec: catalogue.Spec, namespace: str, labels: Mapping[str, str]) -> None:
        self.instances += 1
        self.vcpu += spec.vcpu
        self.memory_gib += spec.memory_gib
        self.gpus += spec.gpu_count
        self.pods.append((namespace, labels))

    def release(
        self, spec: catalogue.Spec | None, namespace: str, labels: Mapping[str, str]
    ) -> None:
        self.instances = max(0, self.instances - 1)
        if spec is not None:
            self.vcpu = max(Decimal(0), self.vcpu - spec.vcpu)
            self.memory_gib = max(Decimal(0), self.memory_gib - spec.memory_gib)
            self.gpus = max(0, self.gpus - spec.gpu_count)
        for i, (ns, lbls) in enumerate(self.pods):
            if ns == namespace and lbls == labels:
                del self.pods[i]
                break


@dataclass(frozen=True)
class Placement:
    zone: str
    spec: catalogue.Spec
    capacity_type: str = "on-demand"
    # The hourly price bought at (the spec's on-demand price unless spot).
    price: Decimal | None = None
    # Why a spot pod runs on demand (spot-fallback), for its Scheduled event.
    fallback: str = ""
    # The ImageCache holding the pod's images, when it asked for one.
    image_cache: str = ""

    @property
    def hourly_price(self) -> Decimal:
        return self.price if self.price is not None else self.spec.hourly_price


@dataclass(frozen=True)
class Unschedulable:
    reasons: list[str]

    @property
    def message(self) -> str:
        return "; ".join(self.reasons)


def _match_expression(expr: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    key = expr.get("key", "")
    op = expr.get("operator", "")
    values = expr.get("values") or []
    if op == "In":
        return labels.get(key) in values
    if op == "NotIn":
        return labels.get(key) not in values
    if op == "Exists":
        return key in labels
    if op == "DoesNotExist":
        return key not in labels
    if op in ("Gt", "Lt"):
        try:
            have, want = int(labels.get(key, "")), int(values[0])
        except (ValueError, IndexError):
            return False
        return have > want if op == "Gt" else have < want
    return False


def node_affinity_allows(spec: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """nodeSelector and requiredDuringScheduling node affinity against node labels."""
    for key, value in (spec.get("nodeSelector") or {}).items():
        if labels.get(key) != value:
            return False
    required = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    ) or {}
    terms = required.get("nodeSelectorTerms") or []
    if not terms:
        return True
    # Terms are ORed; expressions within a term ANDed.
    return any(
        all(_match_expression(e, labels) for e in (t.get("matchExpressions") or [])) for t in terms
    )


def _preferred_score(spec: Mapping[str, Any], labels: Mapping[str, str]) -> int:
    preferred = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "preferredDuringSchedulingIgnoredDuringExecution"
    ) or []
    score = 0
    for term in preferred:
        pref = term.get("preference") or {}
        if all(_match_expression(e, labels) for e in (pref.get("matchExpressions") or [])):
            score += int(term.get("weight", 1))
    return score


def _spread_counts(
    constraint: Mapping[str, Any], namespace: str, zones: Sequence[ZoneState]
) -> dict[str, int]:
    selector = selectors.label_selector_from_object(constraint.get("labelSelector"))
    return {
        z.name: sum(1 for ns, lbls in z.pods if ns == namespace and selector.matches(lbls))
        for z in zones
    }


def place(
    pod: Mapping[str, Any],
    candidates: Sequence[catalogue.Spec],
    options: pod_annotations.PodOptions,
    zones: Sequence[ZoneState],
    rng: random.Random,
) -> Placement | Unschedulable:
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    namespace = meta.get("namespace", "")
    reasons: list[str] = []
    order = list(zones)
    if options.zones:
        by_name = {z.name: z for z in zones}
        order = [by_name[name] for name in options.zones if name in by_name]
        excluded = len(zones) - len(order)
        if excluded:
            reasons.append(f"{excluded} zone(s) not in the pod's zones annotation")
    eligible = [z for z in order if node_affinity_allows(spec, z.labels)]
    if len(eligible) < len(order):
        reasons.append(
            f"{len(order) - len(eligible)} zone(s) didn't match the pod's node affinity/selector"
        )
    preference: dict[str, int] = {z.name: 0 for z in eligible}
    for constraint in spec.get("topologySpreadConstraints") or []:
        if constraint.get("topologyKey") != ZONE_KEY:
            continue
        counts = _spread_counts(constraint, namespace, eligible)
        if not counts:
            continue
        lowest = min(counts.values())
        skew = int(constraint.get("maxSkew", 1))
        if constraint.get("whenUnsatisfiable", "DoNotSchedule") == "DoNotSchedule":
            allowed = [z for z in eligible if counts[z.name] + 1 - lowest <= skew]
            if len(allowed) < len(eligible):
                reasons.append(
                    f"{len(eligible) - len(allowed)} zone(s) didn't match pod topology spread constraints"
                )
            eligible = allowed
        for z in eligible:
            preference[z.name] = preference.get(z.name, 0) - counts[z.name] * 100
    for z in eligible:
        preference[z.name] = preference.get(z.name, 0) + _preferred_score(spec, z.labels)
    for candidate in candidates:
        fitting = [z for z in eligible if z.fits(candidate)]
        if not fitting:
            continue
        if options.schedule_strategy is pod_annotations.ScheduleStrategy.RANDOM:
            best = max(preference[z.name] for z in fitting)
            top = [z for z in fitting if preference[z.name] == best]
            return Placement(rng.choice(top).name, candidate)
        # Ordered: the stable sort keeps configuration (or annotation) order among equals.
        chosen = sorted(fitting, key=lambda z: -preference[z.name])[0]
        return Placement(chosen.name, candidate)
    if (
        eligible
        and candidates
        and all(c.gpu_count for c in candidates)
        and not any(z.max_gpus for z in eligible)
    ):
        # Said plainly: a GPU pod here would never start, not wait for capacity.
        reasons.append(
            f"{len(eligible)} zone(s) have no nvidia.com/gpu capacity: this cluster has no "
            "GPUs (on real pods, the host has no NVIDIA device /dev/nvidia0)"
        )
    elif eligible:
        names = ", ".join(c.name for c in candidates)
        reasons.append(f"{len(eligible)} zone(s) have no capacity left for {names}")
    return Unschedulable(reasons or ["no zone is configured"])
