"""Conversions between a served version and the version an object is stored in.

Two cases are served today: ``events.k8s.io/v1`` Events, stored as core/v1
Events (one store, two views, as upstream), and ``autoscaling/v1``
HorizontalPodAutoscalers, stored as ``autoscaling/v2``.
"""

from __future__ import annotations

from typing import Any

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


def _hpa_v1_to_v2(obj: Obj) -> Obj:
    out = values.clone(obj)
    out["apiVersion"] = "autoscaling/v2"
    spec = out.get("spec") or {}
    target = spec.pop("targetCPUUtilizationPercentage", None)
    if target is not None:
        spec["metrics"] = [
            {
                "type": "Resource",
                "resource": {
                    "name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": target},
                },
            }
        ]
    status = out.get("status")
    if isinstance(status, dict):
        current = status.pop("currentCPUUtilizationPercentage", None)
        if current is not None:
            status["currentMetrics"] = [
                {
                    "type": "Resource",
                    "resource": {"name": "cpu", "current": {"averageUtilization": current}},
                }
            ]
    return out


def _hpa_v2_to_v1(obj: Obj) -> Obj:
    out = values.clone(obj)
    out["apiVersion"] = "autoscaling/v1"
    spec = out.get("spec") or {}
    metrics = spec.pop("metrics", None) or []
    spec.pop("behavior", None)
    for metric in metrics:
        resource = metric.get("resource") or {}
        if metric.get("type") == "Resource" and resource.get("name") == "cpu":
            utilization = (resource.get("target") or {}).get("averageUtilization")
            if utilization is not None:
                spec["targetCPUUtilizationPercentage"] = utilization
    status = out.get("status")
    if isinstance(status, dict):
        status.pop("conditions", None)
        for metric in status.pop("currentMetrics", None) or []:
            resource = metric.get("resource") or {}
            if metric.get("type") == "Resource" and resource.get("name") == "cpu":
                value = (resource.get("current") or {}).get("averageUtilization")
                if value is not None:
                    status["currentCPUUtilizationPercentage"] = value
    return out
