"""The Deployment controller: rolls a pod template out through ReplicaSets.

Upstream's ``pkg/controller/deployment``, level-triggered. Every template a
Deployment has had lives in a ReplicaSet named ``<deployment>-<hash>`` (the
hash of the template, stamped as the ``pod-template-hash`` label on the set's
selector, template and pods, so sets never fight over pods). A sync finds the
*new* set (the one whose template equals the Deployment's, ignoring the
hash label) and the *old* ones, then, by strategy:

- RollingUpdate: scale the new set up while all sets together stay within
  ``replicas + maxSurge`` (surge rounds up), and old sets down while at least
  ``replicas - maxUnavailable`` pods stay available (unavailable rounds
  down), unhealthy old pods first;
- Recreate: scale every old set to 0, wait until none of their pods is left,
  then create and scale up the new one.

Replica count changes mid-rollout are spread over the active sets in
proportion to their size; a paused Deployment scales but does not roll.
Revisions (``deployment.kubernetes.io/revision``) number the sets; going back
to an earlier template re-uses its set with a new revision (what ``kubectl
rollout undo`` relies on), and sets beyond ``revisionHistoryLimit`` with no
pods are deleted. The status carries what ``kubectl rollout status`` reads:
counts, ``observedGeneration`` and the Available and Progressing conditions,
the latter turning ``ProgressDeadlineExceeded`` when no progress was seen for
``progressDeadlineSeconds`` on the injected clock.

Two deliberate deviations make the guarantees hold on what the cache shows,
not only on what was asked: the surge budget counts an old set's pods that
are still active (its ``status.replicas``) even after its ``spec.replicas``
was lowered, and an old set counts at most ``spec.replicas`` available pods
once it was told to shrink. Upstream counts specs only, so for a moment after
each scale-down it may run one surge pod too many or delete one pod early.
"""

from __future__ import annotations

import datetime
import functools
import logging
import math
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from nodeless import clocks
from nodeless.api import errors, selectors, values
from nodeless.client import clients, controllers, events, informers
from nodeless.controllers import ownership, podcontrol, replicasets

log = logging.getLogger(__name__)

Obj = dict[str, Any]

DEPLOYMENTS = clients.ResourceRef("apps", "v1", "deployments", True, "Deployment")
REPLICASETS = replicasets.REPLICASETS
NAME = "deployment-controller"

HASH_LABEL = "pod-template-hash"
REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
DESIRED_REPLICAS = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
DEPRECATED_ROLLBACK_TO = "deprecated.deployment.rollback.to"
# Deployment annotations that describe the Deployment itself, not its template.
ANNOTATIONS_NOT_COPIED = frozenset(
    {
        LAST_APPLIED,
        REVISION,
        REVISION_HISTORY,
        DESIRED_REPLICAS,
        MAX_REPLICAS,
        DEPRECATED_ROLLBACK_TO,
    }
)
MAX_REVISION_HISTORY_CHARS = 2000
MAX_INT32 = 2**31 - 1

AVAILABLE = "Available"
PROGRESSING = "Progressing"
REPLICA_FAILURE = "ReplicaFailure"
# Condition reasons, as upstream's deploymentutil spells them.
NEW_RS_REASON = "NewReplicaSetCreated"
FOUND_NEW_RS_REASON = "FoundNewReplicaSet"
RS_UPDATED_REASON = "ReplicaSetUpdated"
NEW_RS_AVAILABLE_REASON = "NewReplicaSetAvailable"
TIMED_OUT_REASON = "ProgressDeadlineExceeded"
PAUSED_REASON = "DeploymentPaused"
RESUMED_REASON = "DeploymentResumed"
FAILED_RS_CREATE_REASON = "ReplicaSetCreateError"
MINIMUM_REPLICAS_AVAILABLE = "MinimumReplicasAvailable"
MINIMUM_REPLICAS_UNAVAILABLE = "MinimumReplicasUnavailable"

_FNV32_OFFSET = 0x811C9DC5
_FNV32_PRIME = 0x01000193
_SAFE_ALPHANUMS = "bcdfghjklmnpqrstvwxz2456789"


# --- small accessors ----------------------------------------------------------------


def _meta(obj: Obj | None) -> Obj:
    return (obj or {}).get("metadata") or {}


def _spec(obj: Obj | None) -> Obj:
    return (obj or {}).get("spec") or {}


def _status(obj: Obj | None) -> Obj:
    return (obj or {}).get("status") or {}


def _annotations(obj: Obj | None) -> dict[str, str]:
    return _meta(obj).get("annotations") or {}


def _int(value: object, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def replicas_of(obj: Obj | None) -> int:
    return replicasets.replicas_of(obj) if obj is not None else 0


def _status_count(obj: Obj | None, field: str) -> int:
    return _int(_status(obj).get(field))


def _uid(obj: Obj | None) -> str:
    return str(_meta(obj).get("uid") or "")


def _name(obj: Obj | None) -> str:
    return str(_meta(obj).get("name") or "")


def is_rolling(d: Obj) -> bool:
    return ((_spec(d).get("strategy") or {}).get("type") or "RollingUpdate") == "RollingUpdate"


# --- surge and unavailability -------------------------------------------------------


def scaled_value(value: int | str | None, total: int, round_up: bool) -> int:
    """An IntOrString as a count of ``total`` (upstream
    ``GetScaledValueFromIntOrPercent``): ints as they are, ``"25%"`` rounded
    up or down as asked."""
    if value is None:
        return 0
    if isinstance(value, bool):
        raise ValueError(f"invalid value for IntOrString: {value!r}")
    if isinstance(value, int):
        return value
    text = str(value)
    if not text.endswith("%"):
        raise ValueError(
            f"invalid value for IntOrString: invalid type: string is not a percentage: {text!r}"
        )
    try:
        percent = int(text[:-1])
    except ValueError:
        raise ValueError(f"invalid value {text!r}: not a percentage") from None
    product = percent * total
    return -(-product // 100) if round_up else product // 100


def resolve_fenceposts(
    max_surge: int | str | None, max_unavailable: int | str | None, desired: int
) -> tuple[int, int]:
    """``(surge, unavailable)`` for ``desired`` replicas; when both resolve to 0
    (a small percentage rounded down) one pod may be unavailable, or the
    rollout could never move."""
    surge = scaled_value(max_surge if max_surge is not None else 0, desired, True)
    unavailable = scaled_value(
        max_unavailable if max_unavailable is not None else 0, desired, False
    )
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, unavailable


def _rolling_params(d: Obj) -> tuple[int | str | None, int | str | None]:
    rolling = (_spec(d).get("strategy") or {}).get("rollingUpdate") or {}
    return rolling.get("maxSurge"), rolling.get("maxUnavailable")


def max_surge(d: Obj) -> int:
    if not is_rolling(d):
        return 0
    surge, unavailable = _rolling_params(d)
    return resolve_fenceposts(surge, unavailable, replicas_of(d))[0]


def max_unavailable(d: Obj) -> int:
    replicas = replicas_of(d)
    if not is_rolling(d) or replicas == 0:
        return 0
    surge, unavailable = _rolling_params(d)
    return min(resolve_fenceposts(surge, unavailable, replicas)[1], replicas)


# --- templates, hashes, revisions -----------------------------------------------------


def _pruned(value: Any) -> Any:
    """``value`` without nulls, empty strings, maps and lists in maps: Go's
    semantic equality and zero values make those the same as absent."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            item = _pruned(item)
            if item is None or item == "" or item == {} or item == []:
                continue
            out[key] = item
        return out
    if isinstance(value, list):
        return [_pruned(item) for item in value]
    return value


def _without_hash(template: Obj) -> Any:
    out = values.clone(template or {})
    labels = (out.get("metadata") or {}).get("labels")
    if isinstance(labels, dict):
        labels.pop(HASH_LABEL, None)
    return _pruned(out)


def equal_ignore_hash(a: Obj, b: Obj) -> bool:
    """Whether two pod templates are the same apart from the hash label
    (upstream ``EqualIgnoreHash``)."""
    return bool(_without_hash(a) == _without_hash(b))


def _fnv32a(data: bytes, h: int = _FNV32_OFFSET) -> int:
    for byte in data:
        h ^= byte
        h = (h * _FNV32_PRIME) & 0xFFFFFFFF
    return h


def pod_template_hash(template: Obj, collision_count: int | None = None) -> str:
    """The ``pod-template-hash`` of a template (upstream ``ComputeHash``):
    FNV-32a, then the collision count as 8 little-endian bytes, rendered with
    ``SafeEncodeString``. Upstream hashes the Go struct as ``spew`` prints it,
    which cannot be reproduced here; this hashes the canonical JSON (keys
    sorted, empty values dropped), equally stable and deterministic."""
    h = _fnv32a(orjson.dumps(_pruned(values.clone(template)), option=orjson.OPT_SORT_KEYS))
    if collision_count is not None:
        h = _fnv32a((collision_count & 0xFFFFFFFF).to_bytes(4, "little") + bytes(4), h)
    return "".join(_SAFE_ALPHANUMS[ord(c) % len(_SAFE_ALPHANUMS)] for c in str(h))


def revision_of(rs: Obj | None) -> int:
    try:
        return int(_annotations(rs).get(REVISION, "0"))
    except ValueError:
        return 0


def max_revision(rss: Iterable[Obj]) -> int:
    return max((revision_of(rs) for rs in rss), default=0)


def _created(obj: Obj) -> datetime.datetime:
    return podcontrol.parse_time(
        _meta(obj).get("creationTimestamp")
    ) or datetime.datetime.min.replace(tzinfo=datetime.UTC)


def _by_creation(obj: Obj) -> tuple[datetime.datetime, str]:
    return _created(obj), _name(obj)


def by_creation(rss: Iterable[Obj]) -> list[Obj]:
    """Oldest first, then by name (``ReplicaSetsByCreationTimestamp``)."""
    return sorted(rss, key=_by_creation)


def find_new_replica_set(d: Obj, rss: Iterable[Obj]) -> Obj | None:
    """The oldest set whose template is the Deployment's: with several equal
    ones (a hash collision long ago) the oldest is the one with the pods."""
    template = _spec(d).get("template") or {}
    for rs in by_creation(rss):
        if equal_ignore_hash(_spec(rs).get("template") or {}, template):
            return rs
    return None


def set_replicas_annotations(rs: Obj, desired: int, maximum: int) -> bool:
    annotations = rs.setdefault("metadata", {}).setdefault("annotations", {})
    changed = False
    for key, value in ((DESIRED_REPLICAS, str(desired)), (MAX_REPLICAS, str(maximum))):
        if annotations.get(key) != value:
            annotations[key] = value
            changed = True
    return changed


def replicas_annotations_need_update(rs: Obj, desired: int, maximum: int) -> bool:
    annotations = _annotations(rs)
    return annotations.get(DESIRED_REPLICAS) != str(desired) or annotations.get(
        MAX_REPLICAS
    ) != str(maximum)


def set_new_replica_set_annotations(d: Obj, rs: Obj, new_revision: str, exists: bool) -> bool:
    """Copy the Deployment's own annotations to its new set and raise the set's
    revision to ``new_revision``, remembering the revision it had before in
    ``revision-history`` (a roll back re-uses the set); a set about to be
    created also gets the replica annotations. True when anything changed."""
    annotations = rs.setdefault("metadata", {}).setdefault("annotations", {})
    changed = False
    for key, value in _annotations(d).items():
        if key in ANNOTATIONS_NOT_COPIED or annotations.get(key) == value:
            continue
        annotations[key] = value
        changed = True
    had = REVISION in annotations
    old_text = annotations.get(REVISION, "")
    try:
        old = int(old_text) if old_text else 0
        new = int(new_revision)
    except ValueError:
        return False
    if old < new:
        annotations[REVISION] = new_revision
        changed = True
        if had:
            history = annotations.get(REVISION_HISTORY, "")
            previous = history.split(",") if history else []
            total = len(history) + len(old_text) + 1
            start = 0
            while total > MAX_REVISION_HISTORY_CHARS and start < len(previous):
                total -= len(previous[start]) + 1
                start += 1
            if not previous:
                annotations[REVISION_HISTORY] = old_text
            elif total <= MAX_REVISION_HISTORY_CHARS:
                annotations[REVISION_HISTORY] = ",".join([*previous[start:], old_text])
    if not exists and set_replicas_annotations(rs, replicas_of(d), replicas_of(d) + max_surge(d)):
        changed = True
    return changed


# --- replica arithmetic ---------------------------------------------------------------


def replica_count(rss: Iterable[Obj | None]) -> int:
    """Pods the sets are asked for (their ``spec.replicas``)."""
    return sum(replicas_of(rs) for rs in rss if rs is not None)


def actual_count(rss: Iterable[Obj | None]) -> int:
    return sum(_status_count(rs, "replicas") for rs in rss if rs is not None)


def ready_count(rss: Iterable[Obj | None]) -> int:
    return sum(_status_count(rs, "readyReplicas") for rs in rss if rs is not None)


def available_count(rss: Iterable[Obj | None]) -> int:
    return sum(_status_count(rs, "availableReplicas") for rs in rss if rs is not None)


def _occupied(rs: Obj) -> int:
    """Pods a set holds or is about to: a set told to shrink still holds its
    active pods until its controller has deleted them."""
    return max(replicas_of(rs), _status_count(rs, "replicas"))


def _counted_available(rs: Obj) -> int:
    """Available pods a set will keep: not more than it is asked for."""
    return min(_status_count(rs, "availableReplicas"), replicas_of(rs))


def active(rss: Iterable[Obj | None]) -> list[Obj]:
    return [rs for rs in rss if rs is not None and replicas_of(rs) > 0]


def new_rs_new_replicas(d: Obj, all_rss: list[Obj], new_rs: Obj) -> int:
    """How far the new set may grow now (upstream ``NewRSNewReplicas``)."""
    if not is_rolling(d):
        return replicas_of(d)
    replicas = replicas_of(d)
    surge = scaled_value(_rolling_params(d)[0], replicas, True)
    current = sum(_occupied(rs) for rs in all_rss)
    most = replicas + surge
    if current >= most:
        return replicas_of(new_rs)
    return replicas_of(new_rs) + min(most - current, replicas - replicas_of(new_rs))


def is_saturated(d: Obj, rs: Obj | None) -> bool:
    """The new set runs everything the Deployment asks for, all available."""
    if rs is None:
        return False
    try:
        desired = int(_annotations(rs).get(DESIRED_REPLICAS, ""))
    except ValueError:
        return False
    replicas = replicas_of(d)
    return (
        replicas_of(rs) == replicas
        and desired == replicas
        and _status_count(rs, "availableReplicas") == replicas
    )


def _round(value: float) -> int:
    """Go's ``math.Round``: halves away from zero."""
    return math.floor(value + 0.5) if value >= 0 else -math.floor(-value + 0.5)


def replica_set_proportion(rs: Obj, d: Obj, to_add: int, added: int) -> int:
    """This set's share of ``to_add`` replicas (``GetReplicaSetProportion``),
    never beyond what is left to add or remove."""
    if replicas_of(rs) == 0 or to_add == 0 or to_add == added:
        return 0
    fraction = _replica_set_fraction(rs, d)
    allowed = to_add - added
    return min(fraction, allowed) if to_add > 0 else max(fraction, allowed)


def _replica_set_fraction(rs: Obj, d: Obj) -> int:
    if replicas_of(d) == 0:
        return -replicas_of(rs)
    deployment_max = replicas_of(d) + max_surge(d)
    try:
        annotated = int(_annotations(rs).get(MAX_REPLICAS, ""))
    except ValueError:
        annotated = _status_count(d, "replicas")
    if annotated == 0:
        return 0
    return _round(replicas_of(rs) * deployment_max / annotated) - replicas_of(rs)


def _size_order(rss: list[Obj], newer_first: bool) -> list[Obj]:
    """Largest first; equal sizes newer first when scaling up, older first when
    scaling down (``ReplicaSetsBySizeNewer`` / ``BySizeOlder``)."""

    def compare(a: Obj, b: Obj) -> int:
        if replicas_of(a) != replicas_of(b):
            return -1 if replicas_of(a) > replicas_of(b) else 1
        ka, kb = _by_creation(a), _by_creation(b)
        if ka == kb:
            return 0
        older = -1 if ka < kb else 1
        return -older if newer_first else older

    return sorted(rss, key=functools.cmp_to_key(compare))


def proportional_sizes(d: Obj, rss: list[Obj]) -> list[tuple[Obj, int]]:
    """Each active set's new size when the Deployment's replicas change
    mid-rollout (upstream ``scale``): the difference from ``replicas +
    maxSurge`` is spread in proportion to the sets' sizes, leftovers to the
    first (largest) set."""
    sets = active(rss)
    allowed = replicas_of(d) + max_surge(d) if replicas_of(d) > 0 else 0
    to_add = allowed - replica_count(sets)
    if to_add > 0:
        sets = _size_order(sets, newer_first=True)
    elif to_add < 0:
        sets = _size_order(sets, newer_first=False)
    added = 0
    sizes: list[int] = []
    for rs in sets:
        if to_add != 0:
            proportion = replica_set_proportion(rs, d, to_add, added)
            sizes.append(replicas_of(rs) + proportion)
            added += proportion
        else:
            sizes.append(replicas_of(rs))
    if sets and to_add != 0:
        sizes[0] = max(0, sizes[0] + to_add - added)
    return list(zip(sets, sizes, strict=True))


# --- conditions and status ------------------------------------------------------------


def new_condition(kind: str, status: str, reason: str, message: str, now: datetime.datetime) -> Obj:
    stamp = podcontrol.format_time(now)
    return {
        "type": kind,
        "status": status,
        "lastUpdateTime": stamp,
        "lastTransitionTime": stamp,
        "reason": reason,
        "message": message,
    }


def get_condition(status: Mapping[str, Any], kind: str) -> Obj | None:
    for condition in status.get("conditions") or []:
        if condition.get("type") == kind:
            return dict(condition)
    return None


def set_condition(status: Obj, condition: Obj) -> None:
    """Add or replace a condition; same status and reason change nothing, same
    status keeps the transition time (``SetDeploymentCondition``)."""
    current = get_condition(status, condition["type"])
    if (
        current is not None
        and current.get("status") == condition["status"]
        and current.get("reason") == condition["reason"]
    ):
        return
    condition = dict(condition)
    if current is not None and current.get("status") == condition["status"]:
        condition["lastTransitionTime"] = current.get("lastTransitionTime")
    rest = [c for c in status.get("conditions") or [] if c.get("type") != condition["type"]]
    status["conditions"] = [*rest, condition]


def remove_condition(status: Obj, kind: str) -> None:
    rest = [c for c in status.get("conditions") or [] if c.get("type") != kind]
    if rest:
        status["conditions"] = rest
    else:
        status.pop("conditions", None)


def has_progress_deadline(d: Obj) -> bool:
    value = _spec(d).get("progressDeadlineSeconds")
    return isinstance(value, int) and value != MAX_INT32


def has_revision_history_limit(d: Obj) -> bool:
    value = _spec(d).get("revisionHistoryLimit")
    return isinstance(value, int) and value != MAX_INT32


def calculate_status(all_rss: list[Obj], new_rs: Obj | None, d: Obj, now: datetime.datetime) -> Obj:
    """The Deployment's status from its sets' (upstream ``calculateStatus``;
    zero counts omitted as the API omits them)."""
    available = available_count(all_rss)
    unavailable = max(0, replica_count(all_rss) - available)
    old = _status(d)
    status: Obj = {}
    for field, value in (
        ("observedGeneration", _int(_meta(d).get("generation"))),
        ("replicas", actual_count(all_rss)),
        ("updatedReplicas", actual_count([new_rs])),
        ("readyReplicas", ready_count(all_rss)),
        ("availableReplicas", available),
        ("unavailableReplicas", unavailable),
    ):
        if value:
            status[field] = value
    if old.get("collisionCount") is not None:
        status["collisionCount"] = old["collisionCount"]
    if old.get("conditions"):
        status["conditions"] = [dict(c) for c in old["conditions"]]
    if available >= replicas_of(d) - max_unavailable(d):
        set_condition(
            status,
            new_condition(
                AVAILABLE,
                "True",
                MINIMUM_REPLICAS_AVAILABLE,
                "Deployment has minimum availability.",
                now,
            ),
        )
    else:
        set_condition(
            status,
            new_condition(
                AVAILABLE,
                "False",
                MINIMUM_REPLICAS_UNAVAILABLE,
                "Deployment does not have minimum availability.",
                now,
            ),
        )
    return status


def deployment_complete(d: Obj, status: Mapping[str, Any]) -> bool:
    replicas = replicas_of(d)
    return (
        _int(status.get("updatedReplicas")) == replicas
        and _int(status.get("replicas")) == replicas
        and _int(status.get("availableReplicas")) == replicas
        and _int(status.get("observedGeneration")) >= _int(_meta(d).get("generation"))
    )


def deployment_progressing(d: Obj, status: Mapping[str, Any]) -> bool:
    """Whether ``status`` shows progress over the Deployment's current status:
    more updated, ready or available pods, or fewer old ones."""
    old = _status(d)

    def count(s: Mapping[str, Any], field: str) -> int:
        return _int(s.get(field))

    old_old = count(old, "replicas") - count(old, "updatedReplicas")
    new_old = count(status, "replicas") - count(status, "updatedReplicas")
    return (
        count(status, "updatedReplicas") > count(old, "updatedReplicas")
        or new_old < old_old
        or count(status, "readyReplicas") > count(old, "readyReplicas")
        or count(status, "availableReplicas") > count(old, "availableReplicas")
    )


def deployment_timed_out(d: Obj, status: Mapping[str, Any], now: datetime.datetime) -> bool:
    """No progress for ``progressDeadlineSeconds`` since the Progressing
    condition was last updated."""
    if not has_progress_deadline(d):
        return False
    condition = get_condition(status, PROGRESSING)
    if condition is None:
        return False
    if condition.get("reason") == NEW_RS_AVAILABLE_REASON:
        return False
    if condition.get("reason") == TIMED_OUT_REASON:
        return True
    since = podcontrol.parse_time(condition.get("lastUpdateTime"))
    if since is None:
        return False
    deadline = datetime.timedelta(seconds=_int(_spec(d).get("progressDeadlineSeconds")))
    return since + deadline < now


def _replace(rss: list[Obj], updated: Obj) -> None:
    """Put a set we just wrote back into this sync's list, so later steps of
    the same sync do not act on (and conflict with) the cached copy."""
    for i, rs in enumerate(rss):
        if _uid(rs) == _uid(updated):
            rss[i] = updated
            return
    rss.append(updated)


# --- the controller -----------------------------------------------------------------------


class DeploymentController:
    """Rolls Deployments out through ReplicaSets; see the module docstring.

    ``start`` subscribes to the factory's shared Deployment, ReplicaSet and
    Pod informers and runs the workers once they are synced (the caller starts
    the factory); ``stop`` ends the workers and unsubscribes. Pods themselves
    are the ReplicaSet controller's business: run both.
    """

    def __init__(
        self,
        client: clients.ApiClient,
        factory: informers.InformerFactory,
        *,
        clock: clocks.Clock | None = None,
        recorder: events.EventRecorder | None = None,
        workers: int = 4,
    ) -> None:
        self.client = client
        self.factory = factory
        self.clock = clock or clocks.SystemClock()
        self._own_recorder = recorder is None
        self.recorder = recorder or events.EventRecorder(client, NAME, self.clock)
        self.controller = controllers.Controller(NAME, self.sync, workers=workers, clock=self.clock)
        self._deployments: informers.Informer | None = None
        self._sets: informers.Informer | None = None
        self._pods: informers.Informer | None = None
        self._set_index: podcontrol.OwnerIndex | None = None
        self._pod_index: podcontrol.OwnerIndex | None = None
        self._subscriptions: list[tuple[informers.Informer, informers.EventHandlers]] = []

    async def start(self) -> None:
        self._deployments = self.factory.informer(DEPLOYMENTS)
        self._sets = self.factory.informer(REPLICASETS)
        self._pods = self.factory.informer(podcontrol.PODS)
        self._set_index = podcontrol.OwnerIndex.of(self._sets)
        self._pod_index = podcontrol.OwnerIndex.of(self._pods)
        self._subscriptions = [
            (
                self._deployments,
                self._deployments.add_handlers(
                    self.controller.enqueue, self._deployment_updated, self.controller.enqueue
                ),
            ),
            (
                self._sets,
                self._sets.add_handlers(self._set_added, self._set_updated, self._set_deleted),
            ),
            (self._pods, self._pods.add_handlers(on_delete=self._pod_deleted)),
        ]
        if self._own_recorder:
            self.recorder.start()
        self.controller.start([self._deployments, self._sets, self._pods])

    async def stop(self) -> None:
        await self.controller.stop()
        for informer, handlers in self._subscriptions:
            informer.remove_handlers(handlers)
        self._subscriptions = []
        if self._own_recorder:
            await self.recorder.stop()

    # --- event handlers: they only enqueue -------------------------------------------

    def _deployment_updated(self, old: Obj, new: Obj) -> None:
        if clients.resource_version(old) != clients.resource_version(new):
            self.controller.enqueue(new)

    def _resolve(self, namespace: str, ref: Obj) -> Obj | None:
        if ref.get("kind") != DEPLOYMENTS.kind or self._deployments is None:
            return None
        found = self._deployments.get(f"{namespace}/{ref.get('name', '')}")
        if found is None or _uid(found) != ref.get("uid"):
            return None
        return found

    def _deployments_for(self, rs: Obj) -> list[Obj]:
        """Deployments whose selector matches an orphan set: they may adopt it."""
        if self._deployments is None:
            return []
        labels = _meta(rs).get("labels") or {}
        found = []
        for d in self._deployments.objects(_meta(rs).get("namespace", "")):
            try:
                selector = selectors.label_selector_from_object(_spec(d).get("selector"))
            except errors.StatusError:
                continue
            if not selector.empty and selector.matches(labels):
                found.append(d)
        return found

    def _set_added(self, rs: Obj) -> None:
        if podcontrol.is_deleting(rs):
            self._set_deleted(rs)
            return
        ref = ownership.controller_ref(rs)
        if ref is not None:
            d = self._resolve(_meta(rs).get("namespace", ""), ref)
            if d is not None:
                self.controller.enqueue(d)
            return
        for d in self._deployments_for(rs):
            self.controller.enqueue(d)

    def _set_updated(self, old: Obj, new: Obj) -> None:
        if clients.resource_version(old) == clients.resource_version(new):
            return
        namespace = _meta(new).get("namespace", "")
        new_ref, old_ref = ownership.controller_ref(new), ownership.controller_ref(old)
        ref_changed = (new_ref or {}).get("uid") != (old_ref or {}).get("uid")
        if ref_changed and old_ref is not None:
            previous = self._resolve(namespace, old_ref)
            if previous is not None:
                self.controller.enqueue(previous)
        if new_ref is not None:
            d = self._resolve(namespace, new_ref)
            if d is not None:
                self.controller.enqueue(d)
            return
        if ref_changed or _meta(old).get("labels") != _meta(new).get("labels"):
            for d in self._deployments_for(new):
                self.controller.enqueue(d)

    def _set_deleted(self, rs: Obj) -> None:
        ref = ownership.controller_ref(rs)
        if ref is None:
            return
        d = self._resolve(_meta(rs).get("namespace", ""), ref)
        if d is not None:
            self.controller.enqueue(d)

    def _pod_deleted(self, pod: Obj) -> None:
        """Recreate waits for the old pods to be gone: the last one going is the
        signal to continue."""
        ref = ownership.controller_ref(pod)
        if ref is None or ref.get("kind") != REPLICASETS.kind or self._sets is None:
            return
        namespace = _meta(pod).get("namespace", "")
        rs = self._sets.get(f"{namespace}/{ref.get('name', '')}")
        if rs is None or _uid(rs) != ref.get("uid"):
            return
        owner = ownership.controller_ref(rs)
        d = self._resolve(namespace, owner) if owner is not None else None
        if d is not None and not is_rolling(d):
            self.controller.enqueue(d)

    # --- sync ------------------------------------------------------------------------

    async def sync(self, key: str) -> None:
        cached = self._deployments.get(key) if self._deployments is not None else None
        if cached is None:
            return
        d = clients.copy_with_type(DEPLOYMENTS, values.clone(cached))
        raw_selector = _spec(d).get("selector")
        if isinstance(raw_selector, dict) and not (
            raw_selector.get("matchLabels") or raw_selector.get("matchExpressions")
        ):
            self.recorder.record(
                d,
                "Warning",
                "SelectingAll",
                "This deployment is selecting all pods. A non-empty selector is required.",
            )
            generation = _int(_meta(d).get("generation"))
            if _status_count(d, "observedGeneration") < generation:
                d.setdefault("status", {})["observedGeneration"] = generation
                await self._write_status(d)
            return
        try:
            selector = selectors.label_selector_from_object(raw_selector)
        except errors.StatusError as err:
            log.warning("%s: %s has an invalid selector: %s", NAME, key, err.message)
            return
        rss = await self._replica_sets_for(d, selector)
        if podcontrol.is_deleting(d):
            new_rs, old_rss = await self._all_replica_sets(d, rss, create=False)
            await self._sync_deployment_status([*old_rss, new_rs], new_rs, d)
            return
        await self._check_paused_conditions(d)
        if _spec(d).get("paused"):
            await self._sync_scale(d, rss)
            return
        if await self._is_scaling_event(d, rss):
            await self._sync_scale(d, rss)
            return
        if is_rolling(d):
            await self._rollout_rolling(d, rss)
        else:
            await self._rollout_recreate(d, rss)

    async def _replica_sets_for(self, d: Obj, selector: selectors.LabelSelector) -> list[Obj]:
        assert self._set_index is not None
        meta = _meta(d)
        candidates = [
            clients.copy_with_type(REPLICASETS, rs)
            for rs in self._set_index.candidates(meta.get("namespace", ""), _uid(d))
        ]
        claimed = await replicasets.claim_dependents(
            self.client, DEPLOYMENTS, REPLICASETS, d, candidates, selector
        )
        return [values.clone(rs) for rs in claimed]

    def _pods_by_set(self, rss: Iterable[Obj]) -> dict[str, list[Obj]]:
        assert self._pod_index is not None
        return {_uid(rs): self._pod_index.owned_by(_uid(rs)) for rs in rss}

    # --- writes ----------------------------------------------------------------------

    async def _write_status(self, d: Obj) -> None:
        """Write ``d``'s status and take the API's answer as the working copy.

        The status is computed from the ReplicaSets, not from the Deployment's
        metadata: a conflict only because our cached copy predates our own
        previous write (or a label change) is retried once on a fresh copy,
        as long as the spec it was computed for is still the one there.
        """
        try:
            written = await self.client.update_status(DEPLOYMENTS, d)
        except errors.StatusError as err:
            if err.code != 409:
                raise
            meta = _meta(d)
            fresh = await self.client.get(DEPLOYMENTS, meta.get("namespace", ""), _name(d))
            if _meta(fresh).get("generation") != meta.get("generation") or _uid(fresh) != _uid(d):
                raise
            written = await self.client.update_status(DEPLOYMENTS, dict(fresh, status=d["status"]))
        d.clear()
        d.update(clients.copy_with_type(DEPLOYMENTS, written))

    async def _set_deployment_revision(self, d: Obj, revision: str) -> None:
        """The Deployment carries its new set's revision (``kubectl rollout
        history`` and ``undo`` read it). Upstream writes it along with the
        status; here the status subresource keeps metadata, so it is a patch."""
        if _annotations(d).get(REVISION) == revision:
            return
        meta = _meta(d)
        written = await self.client.patch(
            DEPLOYMENTS,
            meta.get("namespace", ""),
            meta.get("name", ""),
            {"metadata": {"annotations": {REVISION: revision}}},
        )
        d.clear()
        d.update(clients.copy_with_type(DEPLOYMENTS, written))

    async def _scale(self, rs: Obj, new_scale: int, d: Obj, rss: list[Obj]) -> tuple[bool, Obj]:
        """``scaleReplicaSetAndRecordEvent``: scale if the size differs."""
        if replicas_of(rs) == new_scale:
            return False, rs
        operation = "up" if replicas_of(rs) < new_scale else "down"
        return await self._scale_replica_set(rs, new_scale, d, operation, rss)

    async def _scale_replica_set(
        self, rs: Obj, new_scale: int, d: Obj, operation: str, rss: list[Obj]
    ) -> tuple[bool, Obj]:
        """Write the size and the replica annotations (optimistic concurrency:
        a set changed meanwhile is a conflict, and the sync is retried)."""
        desired, maximum = replicas_of(d), replicas_of(d) + max_surge(d)
        size_changes = replicas_of(rs) != new_scale
        if not size_changes and not replicas_annotations_need_update(rs, desired, maximum):
            return False, rs
        old_scale = replicas_of(rs)
        updated = values.clone(rs)
        updated.setdefault("spec", {})["replicas"] = new_scale
        set_replicas_annotations(updated, desired, maximum)
        written = clients.copy_with_type(
            REPLICASETS, await self.client.update(REPLICASETS, updated)
        )
        _replace(rss, written)
        if size_changes:
            self.recorder.record(
                d,
                "Normal",
                "ScalingReplicaSet",
                f"Scaled {operation} replica set {_name(written)} to {new_scale} from {old_scale}",
            )
        return size_changes, written

    # --- finding and creating the new set ---------------------------------------------

    async def _all_replica_sets(
        self, d: Obj, rss: list[Obj], *, create: bool
    ) -> tuple[Obj | None, list[Obj]]:
        """``getAllReplicaSetsAndSyncRevision``: the new set (created if asked and
        missing) with its revision brought up to date, and all the old ones."""
        existing = find_new_replica_set(d, rss)
        old_rss = [rs for rs in rss if existing is None or _uid(rs) != _uid(existing)]
        new_rs = await self._new_replica_set(d, rss, old_rss, create)
        return new_rs, old_rss

    async def _new_replica_set(
        self, d: Obj, rss: list[Obj], old_rss: list[Obj], create: bool
    ) -> Obj | None:
        existing = find_new_replica_set(d, rss)
        new_revision = str(max_revision(old_rss) + 1)
        now = self.clock.now()
        if existing is not None:
            rs = values.clone(existing)
            annotations_changed = set_new_replica_set_annotations(d, rs, new_revision, exists=True)
            min_ready = _int(_spec(d).get("minReadySeconds"))
            if annotations_changed or _int(_spec(rs).get("minReadySeconds")) != min_ready:
                rs.setdefault("spec", {})["minReadySeconds"] = min_ready
                written = clients.copy_with_type(
                    REPLICASETS, await self.client.update(REPLICASETS, rs)
                )
                _replace(rss, written)
                return written
            await self._set_deployment_revision(d, _annotations(rs).get(REVISION, ""))
            if has_progress_deadline(d) and get_condition(_status(d), PROGRESSING) is None:
                status = d.setdefault("status", {})
                set_condition(
                    status,
                    new_condition(
                        PROGRESSING,
                        "True",
                        FOUND_NEW_RS_REASON,
                        f'Found new replica set "{_name(rs)}"',
                        now,
                    ),
                )
                await self._write_status(d)
            return rs
        if not create:
            return None
        return await self._create_new_replica_set(d, rss, old_rss, new_revision)

    async def _create_new_replica_set(
        self, d: Obj, rss: list[Obj], old_rss: list[Obj], new_revision: str
    ) -> Obj:
        meta, spec = _meta(d), _spec(d)
        template = values.clone(spec.get("template") or {})
        collision_count = _status(d).get("collisionCount")
        hash_ = pod_template_hash(
            template, collision_count if isinstance(collision_count, int) else None
        )
        template_meta = template.setdefault("metadata", {})
        template_meta["labels"] = {**(template_meta.get("labels") or {}), HASH_LABEL: hash_}
        selector = values.clone(spec.get("selector") or {})
        selector["matchLabels"] = {**(selector.get("matchLabels") or {}), HASH_LABEL: hash_}
        name = f"{meta.get('name', '')}-{hash_}"
        new_rs: Obj = {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": name,
                "namespace": meta.get("namespace", ""),
                "ownerReferences": [ownership.owner_reference(d)],
                "labels": dict(template_meta["labels"]),
            },
            "spec": {
                "replicas": 0,
                "minReadySeconds": _int(spec.get("minReadySeconds")),
                "selector": selector,
                "template": template,
            },
        }
        replicas = new_rs_new_replicas(d, [*old_rss, new_rs], new_rs)
        new_rs["spec"]["replicas"] = replicas
        set_new_replica_set_annotations(d, new_rs, new_revision, exists=False)
        already_existed = False
        try:
            created = await self.client.create(REPLICASETS, new_rs)
        except errors.StatusError as err:
            if err.code == 409 and err.reason == "AlreadyExists":
                # A sync whose cache had not seen our own earlier create, or a
                # hash collision with a set that is not this template's.
                found = await self.client.get(REPLICASETS, meta.get("namespace", ""), name)
                ref = ownership.controller_ref(found)
                if (
                    ref is not None
                    and ref.get("uid") == _uid(d)
                    and equal_ignore_hash(
                        spec.get("template") or {}, _spec(found).get("template") or {}
                    )
                ):
                    created = found
                    already_existed = True
                else:
                    status = d.setdefault("status", {})
                    status["collisionCount"] = _int(status.get("collisionCount")) + 1
                    await self._write_status(d)
                    raise
            elif podcontrol.namespace_terminating(err):
                raise
            else:
                message = f'Failed to create new replica set "{name}": {err.message}'
                if has_progress_deadline(d):
                    set_condition(
                        d.setdefault("status", {}),
                        new_condition(
                            PROGRESSING, "False", FAILED_RS_CREATE_REASON, message, self.clock.now()
                        ),
                    )
                    try:
                        await self._write_status(d)
                    except errors.StatusError:
                        pass  # the creation error is the one worth retrying on
                self.recorder.record(d, "Warning", FAILED_RS_CREATE_REASON, message)
                raise
        created = clients.copy_with_type(REPLICASETS, created)
        _replace(rss, created)
        if not already_existed and replicas > 0:
            self.recorder.record(
                d,
                "Normal",
                "ScalingReplicaSet",
                f"Scaled up replica set {name} to {replicas} from 0",
            )
        await self._set_deployment_revision(d, new_revision)
        if not already_existed and has_progress_deadline(d):
            set_condition(
                d.setdefault("status", {}),
                new_condition(
                    PROGRESSING,
                    "True",
                    NEW_RS_REASON,
                    f'Created new replica set "{name}"',
                    self.clock.now(),
                ),
            )
            await self._write_status(d)
        return created

    # --- paused, scaling, status ---------------------------------------------------------

    async def _check_paused_conditions(self, d: Obj) -> None:
        """A paused or resumed Deployment says so in an Unknown Progressing
        condition, so the time spent paused never counts against the progress
        deadline."""
        if not has_progress_deadline(d):
            return
        condition = get_condition(_status(d), PROGRESSING)
        if condition is not None and condition.get("reason") == TIMED_OUT_REASON:
            return
        paused_shown = condition is not None and condition.get("reason") == PAUSED_REASON
        paused = bool(_spec(d).get("paused"))
        if paused and not paused_shown:
            reason, message = PAUSED_REASON, "Deployment is paused"
        elif not paused and paused_shown:
            reason, message = RESUMED_REASON, "Deployment is resumed"
        else:
            return
        set_condition(
            d.setdefault("status", {}),
            new_condition(PROGRESSING, "Unknown", reason, message, self.clock.now()),
        )
        await self._write_status(d)

    async def _is_scaling_event(self, d: Obj, rss: list[Obj]) -> bool:
        """The Deployment's replicas changed since its active sets were sized."""
        new_rs, old_rss = await self._all_replica_sets(d, rss, create=False)
        for rs in active([*old_rss, new_rs]):
            desired = _annotations(rs).get(DESIRED_REPLICAS)
            if desired is None:
                continue
            try:
                if int(desired) != replicas_of(d):
                    return True
            except ValueError:
                continue
        return False

    async def _sync_scale(self, d: Obj, rss: list[Obj]) -> None:
        """Scaling events and paused Deployments: resize, no rollout."""
        new_rs, old_rss = await self._all_replica_sets(d, rss, create=False)
        await self._scale_sets(d, new_rs, old_rss, rss)
        new_rs = find_new_replica_set(d, rss)
        old_rss = [rs for rs in rss if new_rs is None or _uid(rs) != _uid(new_rs)]
        if _spec(d).get("paused"):
            await self._cleanup(old_rss, d)
        await self._sync_deployment_status([*old_rss, new_rs], new_rs, d)

    async def _scale_sets(
        self, d: Obj, new_rs: Obj | None, old_rss: list[Obj], rss: list[Obj]
    ) -> None:
        latest = _active_or_latest(new_rs, old_rss)
        if latest is not None:
            # Unlike upstream, also when only the replica annotations are off:
            # a stale desired-replicas would make every sync a scaling event
            # and block rollouts.
            operation = "up" if replicas_of(latest) < replicas_of(d) else "down"
            await self._scale_replica_set(latest, replicas_of(d), d, operation, rss)
            return
        if is_saturated(d, new_rs):
            for old in active(old_rss):
                await self._scale(old, 0, d, rss)
            return
        if not is_rolling(d):
            return
        sets = active([*old_rss, new_rs])
        allowed = replicas_of(d) + max_surge(d) if replicas_of(d) > 0 else 0
        to_add = allowed - replica_count(sets)
        operation = "up" if to_add > 0 else "down" if to_add < 0 else ""
        for rs, size in proportional_sizes(d, sets):
            await self._scale_replica_set(rs, size, d, operation, rss)

    async def _sync_deployment_status(
        self, all_rss: list[Obj | None], new_rs: Obj | None, d: Obj
    ) -> None:
        status = calculate_status(
            [rs for rs in all_rss if rs is not None], new_rs, d, self.clock.now()
        )
        if status == _status(d):
            return
        d["status"] = status
        await self._write_status(d)

    async def _sync_rollout_status(self, all_rss: list[Obj], new_rs: Obj | None, d: Obj) -> None:
        """The status with the Progressing condition judged: complete, still
        progressing (its update time refreshed), or timed out. ``all_rss`` are
        all the Deployment's sets, the new one included."""
        if new_rs is not None:
            new_rs = _current(all_rss, new_rs)
        now = self.clock.now()
        status = calculate_status(all_rss, new_rs, d, now)
        if not has_progress_deadline(d):
            remove_condition(status, PROGRESSING)
        current = get_condition(_status(d), PROGRESSING)
        complete_before = (
            _int(status.get("replicas")) == _int(status.get("updatedReplicas"))
            and current is not None
            and current.get("reason") == NEW_RS_AVAILABLE_REASON
        )
        if has_progress_deadline(d) and not complete_before:
            what = (
                f'ReplicaSet "{_name(new_rs)}"'
                if new_rs is not None
                else f'Deployment "{_name(d)}"'
            )
            if deployment_complete(d, status):
                set_condition(
                    status,
                    new_condition(
                        PROGRESSING,
                        "True",
                        NEW_RS_AVAILABLE_REASON,
                        f"{what} has successfully progressed.",
                        now,
                    ),
                )
            elif deployment_progressing(d, status):
                condition = new_condition(
                    PROGRESSING, "True", RS_UPDATED_REASON, f"{what} is progressing.", now
                )
                if current is not None:
                    if current.get("status") == "True":
                        condition["lastTransitionTime"] = current.get("lastTransitionTime")
                    remove_condition(status, PROGRESSING)
                set_condition(status, condition)
            elif deployment_timed_out(d, status, now):
                set_condition(
                    status,
                    new_condition(
                        PROGRESSING,
                        "False",
                        TIMED_OUT_REASON,
                        f"{what} has timed out progressing.",
                        now,
                    ),
                )
        failure = _replica_failure(all_rss, new_rs)
        if failure is not None:
            set_condition(status, failure)
        else:
            remove_condition(status, REPLICA_FAILURE)
        if status == _status(d):
            self._requeue_stuck(d, status)
            return
        d["status"] = status
        await self._write_status(d)

    def _requeue_stuck(self, d: Obj, status: Obj) -> None:
        """Without progress, nothing would wake this Deployment when its deadline
        passes: look again then (a second late, past the deadline)."""
        current = get_condition(_status(d), PROGRESSING)
        if not has_progress_deadline(d) or current is None:
            return
        if deployment_complete(d, status) or current.get("reason") == TIMED_OUT_REASON:
            return
        since = podcontrol.parse_time(current.get("lastUpdateTime"))
        if since is None:
            return
        deadline = since + datetime.timedelta(seconds=_int(_spec(d).get("progressDeadlineSeconds")))
        after = (deadline - self.clock.now()).total_seconds()
        key = clients.key_of(d)
        if after < 1:
            self.controller.queue.add_rate_limited(key)
        else:
            self.controller.queue.add_after(key, after + 1)

    async def _cleanup(self, old_rss: list[Obj], d: Obj) -> None:
        """Delete the oldest sets beyond ``revisionHistoryLimit`` that have no pods
        and whose controller has caught up with them."""
        if not has_revision_history_limit(d):
            return
        alive = [rs for rs in old_rss if not podcontrol.is_deleting(rs)]
        excess = len(alive) - _int(_spec(d).get("revisionHistoryLimit"))
        if excess <= 0:
            return
        for rs in sorted(alive, key=lambda r: (revision_of(r), *_by_creation(r)))[:excess]:
            if (
                _status_count(rs, "replicas") != 0
                or replicas_of(rs) != 0
                or _int(_meta(rs).get("generation")) > _status_count(rs, "observedGeneration")
            ):
                continue
            meta = _meta(rs)
            options = clients.DeleteOptions(preconditions=clients.Preconditions(uid=_uid(rs)))
            try:
                await self.client.delete(REPLICASETS, meta.get("namespace", ""), _name(rs), options)
            except errors.StatusError as err:
                if err.code != 404:
                    raise

    # --- strategies ---------------------------------------------------------------------

    async def _rollout_rolling(self, d: Obj, rss: list[Obj]) -> None:
        new_rs, _ = await self._all_replica_sets(d, rss, create=True)
        assert new_rs is not None
        scaled_up, new_rs = await self._reconcile_new(rss, new_rs, d)
        if scaled_up:
            await self._sync_rollout_status(rss, new_rs, d)
            return
        old_rss = _others(rss, new_rs)
        if await self._reconcile_old(rss, active(old_rss), new_rs, d):
            await self._sync_rollout_status(rss, new_rs, d)
            return
        if deployment_complete(d, _status(d)):
            await self._cleanup(old_rss, d)
        await self._sync_rollout_status(rss, new_rs, d)

    async def _reconcile_new(self, rss: list[Obj], new_rs: Obj, d: Obj) -> tuple[bool, Obj]:
        """Grow the new set as far as the surge allows (or shrink it to the
        Deployment's size after a scale-down)."""
        if replicas_of(new_rs) == replicas_of(d):
            return False, new_rs
        if replicas_of(new_rs) > replicas_of(d):
            return await self._scale(new_rs, replicas_of(d), d, rss)
        return await self._scale(new_rs, new_rs_new_replicas(d, rss, new_rs), d, rss)

    async def _reconcile_old(
        self, rss: list[Obj], old_active: list[Obj], new_rs: Obj, d: Obj
    ) -> bool:
        """Shrink old sets as far as availability allows, unhealthy pods first
        (upstream ``reconcileOldReplicaSets``)."""
        if replica_count(old_active) == 0:
            return False
        min_available = replicas_of(d) - max_unavailable(d)
        new_unavailable = replicas_of(new_rs) - _status_count(new_rs, "availableReplicas")
        # Unavailable pods of the new set count against the budget too, or
        # old pods would go while new ones are still starting.
        max_scaled_down = replica_count(rss) - min_available - new_unavailable
        if max_scaled_down <= 0:
            return False
        cleaned = await self._cleanup_unhealthy(rss, old_active, d, max_scaled_down)
        old_active = [_current(rss, rs) for rs in old_active]
        scaled = await self._scale_down_old(rss, old_active, _current(rss, new_rs), d)
        return cleaned + scaled > 0

    async def _cleanup_unhealthy(
        self, rss: list[Obj], old_active: list[Obj], d: Obj, max_cleanup: int
    ) -> int:
        """Scale old sets down by their unavailable pods: removing those costs no
        availability, and left alone they could block the rollout for good."""
        total = 0
        for rs in by_creation(old_active):
            if total >= max_cleanup:
                break
            available = _status_count(rs, "availableReplicas")
            if replicas_of(rs) == 0 or available >= replicas_of(rs):
                continue
            count = min(max_cleanup - total, replicas_of(rs) - available)
            await self._scale(rs, replicas_of(rs) - count, d, rss)
            total += count
        return total

    async def _scale_down_old(
        self, rss: list[Obj], old_active: list[Obj], new_rs: Obj, d: Obj
    ) -> int:
        """Scale old sets down, oldest first, by what is available beyond
        ``replicas - maxUnavailable``."""
        min_available = replicas_of(d) - max_unavailable(d)
        available = sum(_counted_available(rs) for rs in [*old_active, new_rs])
        if available <= min_available:
            return 0
        budget = available - min_available
        total = 0
        for rs in by_creation(old_active):
            if total >= budget:
                break
            if replicas_of(rs) == 0:
                continue
            count = min(replicas_of(rs), budget - total)
            await self._scale(rs, replicas_of(rs) - count, d, rss)
            total += count
        return total

    async def _rollout_recreate(self, d: Obj, rss: list[Obj]) -> None:
        """Every old pod goes before the first new one is created."""
        new_rs, old_rss = await self._all_replica_sets(d, rss, create=False)
        scaled_down = False
        for rs in active(old_rss):
            scaled, _ = await self._scale(rs, 0, d, rss)
            scaled_down = scaled_down or scaled
        if scaled_down or self._old_pods_running(new_rs, _others(rss, new_rs)):
            await self._sync_rollout_status(rss, new_rs, d)
            return
        if new_rs is None:
            new_rs, _ = await self._all_replica_sets(d, rss, create=True)
            assert new_rs is not None
        _, new_rs = await self._scale(new_rs, replicas_of(d), d, rss)
        if deployment_complete(d, _status(d)):
            await self._cleanup(_others(rss, new_rs), d)
        await self._sync_rollout_status(rss, new_rs, d)

    def _old_pods_running(self, new_rs: Obj | None, old_rss: list[Obj]) -> bool:
        """Any pod of an old set not yet finished, including pods being deleted
        (their containers may still run)."""
        if actual_count(old_rss) > 0:
            return True
        for uid, pods in self._pods_by_set(old_rss).items():
            if new_rs is not None and uid == _uid(new_rs):
                continue
            for pod in pods:
                if (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed"):
                    return True
        return False


def _others(rss: list[Obj], new_rs: Obj | None) -> list[Obj]:
    return [rs for rs in rss if new_rs is None or _uid(rs) != _uid(new_rs)]


def _current(rss: list[Obj], rs: Obj) -> Obj:
    """The latest copy of ``rs`` this sync holds."""
    for candidate in rss:
        if _uid(candidate) == _uid(rs):
            return candidate
    return rs


def _active_or_latest(new_rs: Obj | None, old_rss: list[Obj]) -> Obj | None:
    """The one set to resize when only one has replicas, or the newest when none
    does; None when several are active (``FindActiveOrLatest``)."""
    if new_rs is None and not old_rss:
        return None
    newest_first = list(reversed(by_creation(old_rss)))
    sets = active([*newest_first, new_rs])
    if not sets:
        return new_rs if new_rs is not None else newest_first[0]
    if len(sets) == 1:
        return sets[0]
    return None


def _replica_failure(all_rss: list[Obj], new_rs: Obj | None) -> Obj | None:
    """A ReplicaFailure of the new set (else of any set) as a Deployment condition."""
    for rs in [new_rs] if new_rs is not None else []:
        for condition in _status(rs).get("conditions") or []:
            if condition.get("type") == REPLICA_FAILURE:
                return _as_deployment_condition(condition)
    for rs in all_rss:
        for condition in _status(rs).get("conditions") or []:
            if condition.get("type") == REPLICA_FAILURE:
                return _as_deployment_condition(condition)
    return None


def _as_deployment_condition(condition: Obj) -> Obj:
    return {
        "type": condition.get("type"),
        "status": condition.get("status"),
        "lastUpdateTime": condition.get("lastTransitionTime"),
        "lastTransitionTime": condition.get("lastTransitionTime"),
        "reason": condition.get("reason"),
        "message": condition.get("message"),
    }
