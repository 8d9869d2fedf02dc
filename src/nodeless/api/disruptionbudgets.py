"""PodDisruptionBudgets: the pure arithmetic of budgets and the eviction decision.

Shared by the disruption controller (which writes budget status) and the API
server (whose ``pods/eviction`` must refuse an eviction that would violate a
budget, 429, and spend one allowed disruption in the same request).
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import math
from collections.abc import Iterable, Mapping
from typing import Any

from nodeless.api import errors, selectors, times

Obj = dict[str, Any]

DISRUPTION_ALLOWED = "DisruptionAllowed"
SUFFICIENT_PODS = "SufficientPods"
INSUFFICIENT_PODS = "InsufficientPods"
SYNC_FAILED = "SyncFailed"
# An evicted pod not deleted within this time counts as healthy again.
DELETION_TIMEOUT = datetime.timedelta(minutes=2)
# Evictions approved but not yet seen by this controller, per budget.
MAX_DISRUPTED_PODS = 2000
VIOLATION_MESSAGE = "Cannot evict pod as it would violate the pod's disruption budget."
DISRUPTION_BUDGET_CAUSE = "DisruptionBudget"


# --- pure pieces ------------------------------------------------------------------------


def _parse_time(text: Any) -> datetime.datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        parsed = datetime.datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.UTC)


def pod_ready(pod: Mapping[str, Any]) -> bool:
    for condition in (pod.get("status") or {}).get("conditions") or ():
        if condition.get("type") == "Ready":
            return bool(condition.get("status") == "True")
    return False


def budget_selector(pdb: Mapping[str, Any]) -> selectors.LabelSelector:
    """policy/v1: a null selector selects nothing, an empty one every pod of
    the namespace; an invalid one selects nothing."""
    try:
        return selectors.label_selector_from_object((pdb.get("spec") or {}).get("selector"))
    except errors.StatusError:
        return selectors.LabelSelector.nothing()


def selects(pdb: Mapping[str, Any], pod: Mapping[str, Any]) -> bool:
    pdb_meta = pdb.get("metadata") or {}
    pod_meta = pod.get("metadata") or {}
    if pdb_meta.get("namespace") != pod_meta.get("namespace"):
        return False
    return budget_selector(pdb).matches(pod_meta.get("labels") or {})


def scaled_value(value: int | str, total: int, *, round_up: bool) -> int:
    """An IntOrString against ``total`` (intstr.GetScaledValueFromIntOrPercent)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.endswith("%"):
        try:
            percent = int(value[:-1])
        except ValueError:
            raise ValueError(f"invalid value for IntOrString: {value!r}") from None
        exact = percent * total / 100
        return math.ceil(exact) if round_up else math.floor(exact)
    raise ValueError("invalid value for IntOrString: invalid type: string is not a percentage")


def needs_scale(spec: Mapping[str, Any]) -> bool:
    """Whether the expected pod count must come from the controllers' scale
    (maxUnavailable, or a percentage minAvailable)."""
    if spec.get("maxUnavailable") is not None:
        return True
    return isinstance(spec.get("minAvailable"), str)


def expected_and_desired(
    spec: Mapping[str, Any], matching_pods: int, expected_scale: int
) -> tuple[int, int]:
    """(expectedPods, desiredHealthy) as upstream's getExpectedPodCount; both
    percentages round up."""
    max_unavailable = spec.get("maxUnavailable")
    min_available = spec.get("minAvailable")
    if max_unavailable is not None:
        unavailable = scaled_value(max_unavailable, expected_scale, round_up=True)
        return expected_scale, max(0, expected_scale - unavailable)
    if min_available is not None:
        if isinstance(min_available, str):
            return expected_scale, scaled_value(min_available, expected_scale, round_up=True)
        return matching_pods, scaled_value(min_available, matching_pods, round_up=True)
    return 0, 0


def disrupted_pods(
    pdb: Mapping[str, Any], pods: Iterable[Mapping[str, Any]], now: datetime.datetime
) -> tuple[dict[str, str], datetime.datetime | None]:
    """The still-pending evictions of ``status.disruptedPods`` (pods that exist,
    are not yet deleting, and were evicted less than DELETION_TIMEOUT ago), and
    when the earliest of them expires."""
    recorded = (pdb.get("status") or {}).get("disruptedPods") or {}
    kept: dict[str, str] = {}
    recheck: datetime.datetime | None = None
    for pod in pods:
        meta = pod.get("metadata") or {}
        if meta.get("deletionTimestamp"):
            continue
        name = str(meta.get("name") or "")
        when = _parse_time(recorded.get(name))
        if when is None:
            continue
        expires = when + DELETION_TIMEOUT
        if expires < now:
            continue  # expected to be deleted but was not: healthy again
        kept[name] = str(recorded[name])
        recheck = expires if recheck is None or expires < recheck else recheck
    return kept, recheck


def current_healthy(
    pods: Iterable[Mapping[str, Any]], disrupted: Mapping[str, str], now: datetime.datetime
) -> int:
    healthy = 0
    for pod in pods:
        meta = pod.get("metadata") or {}
        if meta.get("deletionTimestamp"):
            continue
        when = _parse_time(disrupted.get(str(meta.get("name") or "")))
        if when is not None and when + DELETION_TIMEOUT > now:
            continue
        if pod_ready(pod):
            healthy += 1
    return healthy


def set_condition(
    conditions: list[Obj],
    ctype: str,
    status: str,
    reason: str,
    message: str,
    observed_generation: int,
    now: str,
) -> list[Obj]:
    """meta.SetStatusCondition: the transition time moves only with the status."""
    out = [dict(c) for c in conditions]
    for condition in out:
        if condition.get("type") == ctype:
            if condition.get("status") != status:
                condition["lastTransitionTime"] = now
            condition.update(
                status=status,
                reason=reason,
                message=message,
                observedGeneration=observed_generation,
            )
            return out
    out.append(
        {
            "type": ctype,
            "status": status,
            "reason": reason,
            "message": message,
            "observedGeneration": observed_generation,
            "lastTransitionTime": now,
        }
    )
    return out


def _allowed_condition(status: Obj, now: str) -> None:
    allowed = int(status.get("disruptionsAllowed") or 0) > 0
    status["conditions"] = set_condition(
        list(status.get("conditions") or ()),
        DISRUPTION_ALLOWED,
        "True" if allowed else "False",
        SUFFICIENT_PODS if allowed else INSUFFICIENT_PODS,
        "",
        int(status.get("observedGeneration") or 0),
        now,
    )


def budget_status(
    pdb: Mapping[str, Any],
    *,
    healthy: int,
    desired: int,
    expected: int,
    disrupted: Mapping[str, str],
    now: datetime.datetime,
) -> Obj:
    """The status the controller writes (upstream's updatePdbStatus)."""
    allowed = healthy - desired
    # No pods expected yet: stay safe until the first ones are counted.
    if expected <= 0 or allowed <= 0:
        allowed = 0
    old = pdb.get("status") or {}
    status: Obj = {
        "observedGeneration": int((pdb.get("metadata") or {}).get("generation") or 0),
        "disruptionsAllowed": allowed,
        "currentHealthy": healthy,
        "desiredHealthy": desired,
        "expectedPods": expected,
        "conditions": [dict(c) for c in old.get("conditions") or ()],
    }
    if disrupted:
        status["disruptedPods"] = dict(disrupted)
    _allowed_condition(status, times.rfc3339(now))
    return status


def failed_status(pdb: Mapping[str, Any], message: str, now: datetime.datetime) -> Obj:
    """failSafe: nothing may be evicted while the budget cannot be computed."""
    status = copy.deepcopy(dict(pdb.get("status") or {}))
    status["disruptionsAllowed"] = 0
    status["conditions"] = set_condition(
        list(status.get("conditions") or ()),
        DISRUPTION_ALLOWED,
        "False",
        SYNC_FAILED,
        message,
        int(status.get("observedGeneration") or 0),
        times.rfc3339(now),
    )
    return status


# --- the eviction decision ---------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class EvictionDecision:
    """What ``pods/eviction`` does with one pod.

    ``allowed``: delete the pod (else answer ``error``). ``budget``: when set,
    first write this PodDisruptionBudget through its status subresource — it
    keeps the resourceVersion it was read at, so a concurrent eviction makes
    the write fail with 409, and the handler reads again and decides anew.
    ``pod_resource_version``: when set, delete the pod only at this
    resourceVersion (the pod was unready and must not have become ready); a
    409 from that delete is answered with ``budget_being_processed``.
    """

    allowed: bool
    budget: Obj | None = None
    error: errors.StatusError | None = None
    pod_resource_version: str = ""


def budget_being_processed(name: str) -> errors.StatusError:
    """429 while a budget's status is behind its spec (or a race was lost)."""
    return errors.StatusError(
        429,
        "TooManyRequests",
        VIOLATION_MESSAGE,
        causes=[
            errors.Cause(
                DISRUPTION_BUDGET_CAUSE,
                f"The disruption budget {name} is still being processed by the server.",
            )
        ],
        retry_after_seconds=10,
    )


def can_ignore_budgets(pod: Mapping[str, Any]) -> bool:
    """Finished, pending or already deleting pods disrupt nothing more."""
    phase = (pod.get("status") or {}).get("phase")
    return phase in ("Succeeded", "Failed", "Pending") or bool(
        (pod.get("metadata") or {}).get("deletionTimestamp")
    )


def eviction_allowed(
    pdbs: Iterable[Mapping[str, Any]],
    pod: Mapping[str, Any],
    *,
    now: datetime.datetime,
    dry_run: bool = False,
) -> EvictionDecision:
    """Upstream's EvictionREST.Create decision for ``pod`` given the budgets of
    its namespace (any others are ignored)."""
    pod_meta = pod.get("metadata") or {}
    pod_rv = str(pod_meta.get("resourceVersion") or "")
    if can_ignore_budgets(pod):
        terminal = (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")
        enforce = not terminal and not pod_meta.get("deletionTimestamp")
        return EvictionDecision(True, pod_resource_version=pod_rv if enforce else "")
    matching = [p for p in pdbs if selects(p, pod)]
    if len(matching) > 1:
        return EvictionDecision(
            False,
            error=errors.StatusError(
                500,
                "InternalError",
                "This pod has more than one PodDisruptionBudget, which the eviction "
                "subresource does not support.",
            ),
        )
    if not matching:
        return EvictionDecision(True)
    pdb = matching[0]
    meta = pdb.get("metadata") or {}
    spec = pdb.get("spec") or {}
    status = pdb.get("status") or {}
    name = str(meta.get("name") or "")
    healthy = int(status.get("currentHealthy") or 0)
    desired = int(status.get("desiredHealthy") or 0)
    if not pod_ready(pod):
        # An unhealthy pod does not count towards the budget: evicting it takes
        # nothing away, as long as the pod is still unready when deleted.
        if spec.get("unhealthyPodEvictionPolicy") == "AlwaysAllow" or (
            healthy >= desired and desired > 0
        ):
            return EvictionDecision(True, pod_resource_version=pod_rv)
    if int(status.get("observedGeneration") or 0) < int(meta.get("generation") or 0):
        return EvictionDecision(False, error=budget_being_processed(name))
    allowed = int(status.get("disruptionsAllowed") or 0)
    if allowed < 0:
        return EvictionDecision(
            False,
            error=errors.forbidden(
                "poddisruptionbudget", "policy", name, "pdb disruptions allowed is negative"
            ),
        )
    if len(status.get("disruptedPods") or {}) > MAX_DISRUPTED_PODS:
        return EvictionDecision(
            False,
            error=errors.forbidden(
                "poddisruptionbudget",
                "policy",
                name,
                "DisruptedPods map too big - too many evictions not confirmed by PDB controller",
            ),
        )
    if allowed == 0:
        return EvictionDecision(
            False,
            error=errors.StatusError(
                429,
                "TooManyRequests",
                VIOLATION_MESSAGE,
                causes=[
                    errors.Cause(
                        DISRUPTION_BUDGET_CAUSE,
                        f"The disruption budget {name} needs {desired} healthy pods "
                        f"and has {healthy} currently",
                    )
                ],
            ),
        )
    if dry_run:
        return EvictionDecision(True)
    updated = copy.deepcopy(dict(pdb))
    new_status = updated.setdefault("status", {})
    new_status["disruptionsAllowed"] = allowed - 1
    if allowed - 1 == 0:
        _allowed_condition(new_status, times.rfc3339(now))
    new_status["disruptedPods"] = {
        **(new_status.get("disruptedPods") or {}),
        str(pod_meta.get("name") or ""): times.rfc3339(now),
    }
    return EvictionDecision(True, budget=updated)


# --- the controller ---------------------------------------------------------------------
