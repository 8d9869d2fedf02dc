"""Pod status as a kubelet would write it, from a provider's instance status.

Pure: the instance manager compares the result with the pod's current status
and writes only when something a client can see changed.
"""

from __future__ import annotations

import datetime
from typing import Any

from nodeless.api import times
from nodeless.instances.providers import base

Obj = dict[str, Any]


def _time(t: datetime.datetime | None) -> str | None:
    return times.rfc3339(t) if t else None


def _container_state(c: base.ContainerStatus) -> Obj:
    if c.state == "running":
        return {"running": {"startedAt": _time(c.started_at)}}
    if c.state == "terminated":
        terminated: Obj = {
            "exitCode": c.exit_code if c.exit_code is not None else 0,
            "reason": c.reason or ("Completed" if not c.exit_code else "Error"),
            "startedAt": _time(c.started_at),
            "finishedAt": _time(c.finished_at),
        }
        if c.message:
            terminated["message"] = c.message
        if c.container_id:
            terminated["containerID"] = c.container_id
        return {"terminated": terminated}
    waiting: Obj = {"reason": c.reason or "ContainerCreating"}
    if c.message:
        waiting["message"] = c.message
    return {"waiting": waiting}


def container_status(c: base.ContainerStatus, image: str) -> Obj:
    out: Obj = {
        "name": c.name,
        "image": c.image or image,
        "imageID": c.image_id,
        "ready": c.ready,
        "restartCount": c.restart_count,
        "started": c.started,
        "state": _container_state(c),
        "lastState": {"terminated": c.last_terminated} if c.last_terminated else {},
    }
    if c.container_id:
        out["containerID"] = c.container_id
    return out


def _condition(kind: str, ok: bool, since: str | None, reason: str = "") -> Obj:
    cond: Obj = {
        "type": kind,
        "status": "True" if ok else "False",
        "lastProbeTime": None,
        "lastTransitionTime": since,
    }
    if reason and not ok:
        cond["reason"] = reason
    return cond


def with_condition(
    status: Obj, kind: str, reason: str, message: str, now: datetime.datetime
) -> Obj:
    """``status`` with one True condition of another owner's (the spot
    reclaim's) set; its transition time stands if it was True already."""
    old = next((c for c in status.get("conditions") or [] if c.get("type") == kind), None)
    since = old.get("lastTransitionTime") if old and old.get("status") == "True" else _time(now)
    condition: Obj = {
        "type": kind,
        "status": "True",
        "reason": reason,
        "message": message,
        "lastTransitionTime": since,
    }
    if old == condition:
        return status
    others = [c for c in status.get("conditions") or [] if c.get("type") != kind]
    return {**status, "conditions": [*others, condition]}


def _phase(status: base.InstanceStatus) -> str:
    state = status.state
    if state is base.InstanceState.SUCCEEDED:
        return "Succeeded"
    if state in (base.InstanceState.FAILED, base.InstanceState.EXPIRED):
        return "Failed"
    if state in (base.InstanceState.RUNNING, base.InstanceState.RESTARTING):
        return "Running"
    if state is base.InstanceState.TERMINATING:
        running = any(c.state == "running" for c in status.containers)
        return "Running" if running or status.started_at else "Pending"
    return "Pending"


def pod_status(
    pod: Obj,
    status: base.InstanceStatus,
    previous: Obj | None = None,
    now: datetime.datetime | None = None,
) -> Obj:
    """The whole ``status`` of ``pod`` given its instance's ``status``.

    ``previous`` (the pod's current status) keeps condition transition times
    stable when a condition's value does not change, as the kubelet does.
    """
    spec = pod.get("spec") or {}
    images = {
        c.get("name"): c.get("image", "")
        for c in (spec.get("initContainers") or []) + (spec.get("containers") or [])
    }
    phase = _phase(status)
    containers = [container_status(c, images.get(c.name, "")) for c in status.containers]
    init = [container_status(c, images.get(c.name, "")) for c in status.init_containers]
    all_ready = bool(status.containers) and all(c.ready for c in status.containers)
    terminal = phase in ("Succeeded", "Failed")
    initialized = status.initialized or not status.init_containers
    # A condition that changes value changes now (minReadySeconds counts from
    # the moment a pod became Ready, not from when its instance started).
    changed_at = _time(now or status.started_at or status.created_at)
    old_conditions = {c.get("type"): c for c in (previous or {}).get("conditions") or []}

    def cond(kind: str, ok: bool, reason: str = "") -> Obj:
        old = old_conditions.get(kind)
        since = (
            old.get("lastTransitionTime")
            if old and old.get("status") == ("True" if ok else "False")
            else changed_at
        )
        return _condition(kind, ok, since, reason)

    ready = all_ready and not terminal
    not_ready_reason = "PodCompleted" if terminal else "ContainersNotReady"
    conditions = [
        cond(
            "PodReadyToStartContainers",
            status.state not in (base.InstanceState.SCHEDULING, base.InstanceState.PENDING)
            or bool(status.ip),
        ),
        cond("Initialized", initialized, "" if initialized else "ContainersNotInitialized"),
        cond("Ready", ready, not_ready_reason),
        cond("ContainersReady", ready, not_ready_reason),
        cond("PodScheduled", True),
    ]
    # Conditions someone else owns (DisruptionTarget, readiness gates, the
    # spot reclaim notice) stay as they are, as the kubelet leaves them.
    owned = {c["type"] for c in conditions}
    conditions += [c for kind, c in old_conditions.items() if kind not in owned]
    # An elastic container instance is its own host (as on ECI): without a
    # separate host address, the host IP is the instance's.
    host_ip = status.host_ip or status.ip
    out: Obj = {
        "phase": phase,
        "conditions": conditions,
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}] if host_ip else [],
        "startTime": _time(status.created_at),
        "containerStatuses": containers,
        "qosClass": (previous or {}).get("qosClass")
        or (pod.get("status") or {}).get("qosClass", "BestEffort"),
    }
    if status.ip:
        out["podIP"] = status.ip
        out["podIPs"] = [{"ip": status.ip}]
    if init:
        out["initContainerStatuses"] = init
    # Like a kubelet, a pod whose containers simply failed has no pod-level
    # reason; the platform's own endings (reclaimed, vanished, provider
    # failure) say why.
    if phase == "Failed" and status.reason and status.reason not in ("Error", "Completed"):
        out["reason"] = status.reason
        if status.message:
            out["message"] = status.message
    return out
