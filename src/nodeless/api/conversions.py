"""Conversions between a served version and the version an object is stored in.

Two cases are served today: ``events.k8s.io/v1`` Events, stored as core/v1
Events (one store, two views, as upstream), and ``autoscaling/v1``
HorizontalPodAutoscalers, stored as ``autoscaling/v2``.
"""

from __future__ import annotations

from typing import Any

import orjson

from nodeless.api import kinds, values

Obj = dict[str, Any]

_EVENT_FIELDS = (
    # (events.k8s.io/v1 name, core/v1 name)
    ("regarding", "involvedObject"),
    ("related", "related"),
    ("note", "message"),
    ("reason", "reason"),
    ("type", "type"),
    ("action", "action"),
    ("eventTime", "eventTime"),
    ("series", "series"),
    ("reportingController", "reportingComponent"),
    ("reportingInstance", "reportingInstance"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
)

_HPA_CPU_ANNOTATIONS = "autoscaling.alpha.kubernetes.io/"


def needs_conversion(resource: kinds.Resource) -> bool:
    return resource.group == "events.k8s.io" or (
        resource.group == "autoscaling" and resource.version == "v1"
    )


def to_storage(resource: kinds.Resource, obj: Obj) -> Obj:
    """The served form of ``obj`` converted to the stored form."""
    if resource.group == "events.k8s.io":
        return _event_to_core(obj)
    if resource.group == "autoscaling" and resource.version == "v1":
        return _hpa_v1_to_v2(obj)
    return obj


def from_storage(resource: kinds.Resource, obj: Obj) -> Obj:
    """The stored form of ``obj`` converted to the form ``resource`` serves."""
    if resource.group == "events.k8s.io":
        return _event_from_core(obj)
    if resource.group == "autoscaling" and resource.version == "v1":
        return _hpa_v2_to_v1(obj)
    return obj


def _event_to_core(obj: Obj) -> Obj:
    out: Obj = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": values.clone(obj.get("metadata", {})),
    }
    for new, old in _EVENT_FIELDS:
        if new in obj:
            out[old] = values.clone(obj[new])
    source = obj.get("deprecatedSource")
    if source:
        out["source"] = values.clone(source)
    out.setdefault("involvedObject", {})
    return out


def _event_from_core(obj: Obj) -> Obj:
    out: Obj = {
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": obj.get("metadata", {}),
    }
    for new, old in _EVENT_FIELDS:
        if old in obj and obj[old] is not None:
            out[new] = obj[old]
    if obj.get("source"):
        out["deprecatedSource"] = obj["source"]
    if "reportingController" not in out and (obj.get("source") or {}).get("component"):
        out["reportingController"] = obj["source"]["component"]
    return out


def _hpa_annotations_out(out: Obj) -> dict[str, Any]:
    """Pop upstream's ``autoscaling.alpha.kubernetes.io/*`` annotations (what a
    v1 read carried of the v2-only fields) from a v1 object."""
    meta = out.setdefault("metadata", {})
    annotations = meta.get("annotations") or {}
    found: dict[str, Any] = {}
    for name in ("metrics", "current-metrics", "conditions", "behavior"):
        raw = annotations.pop(_HPA_CPU_ANNOTATIONS + name, None)
        if isinstance(raw, str):
            try:
                found[name] = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue
    if "annotations" in meta and not annotations:
        del meta["annotations"]
    return found


def _is_cpu_utilization(metric: Obj, key: str) -> bool:
    resource = metric.get("resource") or {}
    return (
        metric.get("type") == "Resource"
        and resource.get("name") == "cpu"
        and (resource.get(key) or {}).get("averageUtilization") is not None
    )


def _hpa_v1_to_v2(obj: Obj) -> Obj:
    """v1 to the stored v2; the v2-only fields a v1 read put in annotations
    come back, so a v1 client's update loses nothing (upstream's conversion)."""
    out = values.clone(obj)
    out["apiVersion"] = "autoscaling/v2"
    kept = _hpa_annotations_out(out)
    spec = out.get("spec") or {}
    target = spec.pop("targetCPUUtilizationPercentage", None)
    metrics = [m for m in kept.get("metrics") or [] if isinstance(m, dict)]
    if target is not None:
        metrics.insert(
            0,
            {
                "type": "Resource",
                "resource": {
                    "name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": target},
                },
            },
        )
    if metrics:
        spec["metrics"] = metrics
    if isinstance(kept.get("behavior"), dict):
        spec["behavior"] = kept["behavior"]
    status = out.get("status")
    if isinstance(status, dict):
        current = status.pop("currentCPUUtilizationPercentage", None)
        current_metrics = [m for m in kept.get("current-metrics") or [] if isinstance(m, dict)]
        if current is not None:
            current_metrics.insert(
                0,
                {
                    "type": "Resource",
                    "resource": {"name": "cpu", "current": {"averageUtilization": current}},
                },
            )
        if current_metrics:
            status["currentMetrics"] = current_metrics
        if isinstance(kept.get("conditions"), list):
            status["conditions"] = kept["conditions"]
    return out


def _hpa_v2_to_v1(obj: Obj) -> Obj:
    """The stored v2 as v1: the cpu utilisation target and current value in
    v1's fields, every other metric, the behaviour and the conditions in
    upstream's annotations."""
    out = values.clone(obj)
    out["apiVersion"] = "autoscaling/v1"
    spec = out.get("spec") or {}
    annotations: dict[str, str] = {}
    others = []
    for metric in spec.pop("metrics", None) or []:
        if _is_cpu_utilization(metric, "target") and "targetCPUUtilizationPercentage" not in spec:
            spec["targetCPUUtilizationPercentage"] = metric["resource"]["target"][
                "averageUtilization"
            ]
        else:
            others.append(metric)
    if others:
        annotations["metrics"] = orjson.dumps(others).decode()
    behavior = spec.pop("behavior", None)
    if behavior:
        annotations["behavior"] = orjson.dumps(behavior).decode()
    status = out.get("status")
    if isinstance(status, dict):
        conditions = status.pop("conditions", None)
        if conditions:
            annotations["conditions"] = orjson.dumps(conditions).decode()
        current_others = []
        for metric in status.pop("currentMetrics", None) or []:
            if (
                _is_cpu_utilization(metric, "current")
                and "currentCPUUtilizationPercentage" not in status
            ):
                status["currentCPUUtilizationPercentage"] = metric["resource"]["current"][
                    "averageUtilization"
                ]
            else:
                current_others.append(metric)
        if current_others:
            annotations["current-metrics"] = orjson.dumps(current_others).decode()
    if annotations:
        meta = out.setdefault("metadata", {})
        existing = dict(meta.get("annotations") or {})
        existing.update({_HPA_CPU_ANNOTATIONS + k: v for k, v in annotations.items()})
        meta["annotations"] = existing
    return out
