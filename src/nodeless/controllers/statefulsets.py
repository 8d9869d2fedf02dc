"""The StatefulSet controller (apps/v1), with upstream's semantics.

A StatefulSet gives each replica a stable identity: pod ``<set>-<ordinal>``
(ordinals from ``spec.ordinals.start``), hostname = pod name, subdomain =
``spec.serviceName``, and its own PersistentVolumeClaims
``<template>-<set>-<ordinal>`` that outlive the pod. Everything here follows
``pkg/controller/statefulset`` so that users, kubectl (``rollout status``,
``rollout undo``) and operators see the behaviour they know:

- OrderedReady (the default) is *monotonic*: ordinals are created in order,
  each only once every lower one is Running, Ready and Available; scale-down
  deletes from the highest ordinal, one at a time, each only when the pods
  below are healthy; any unhealthy pod halts progress. Parallel creates and
  deletes all at once.
- Each distinct pod template is a ControllerRevision (``revisions``);
  pods carry ``controller-revision-hash: <revision name>``. RollingUpdate
  deletes pods not at the update revision from the highest ordinal down,
  at most ``maxUnavailable`` (default 1) unavailable at a time, never below
  ``partition``; missing pods are recreated at the current revision below
  the partition and at the update revision from it. OnDelete only recreates
  the pods a user deletes, at the update revision. ``revisionHistoryLimit``
  bounds the revisions no pod uses.
- Failed (or Succeeded) pods are deleted and, once gone, recreated with the
  same name.
- ``persistentVolumeClaimRetentionPolicy`` Delete makes the set (whenDeleted)
  or the scaled-down pod (whenScaled) the claim's controller, so the garbage
  collector removes it with its owner; a claim still owned by a previous pod
  of the same name blocks that ordinal until it is gone.

Writes wait to be observed: a sync that created or deleted pods does not act
on the same set again until the pod informer has shown those changes
(upstream relies on AlreadyExists errors and periodic resyncs instead; a
loopback informer lags little, but acting on a cache that has not seen our
own writes would delete pods twice and log spurious conflicts).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
import math
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

from nodeless import clocks
from nodeless.api import errors, selectors, values
from nodeless.client import clients, controllers, events, informers
from nodeless.controllers import ownership, revisions

log = logging.getLogger(__name__)

Obj = dict[str, Any]

STATEFULSETS = clients.ResourceRef("apps", "v1", "statefulsets", True, "StatefulSet")
PODS = clients.ResourceRef("", "v1", "pods", True, "Pod")
CLAIMS = clients.ResourceRef("", "v1", "persistentvolumeclaims", True, "PersistentVolumeClaim")

POD_NAME_LABEL = "statefulset.kubernetes.io/pod-name"
POD_INDEX_LABEL = "apps.kubernetes.io/pod-index"
REVISION_LABEL = revisions.POD_REVISION_LABEL

COMPONENT = "statefulset-controller"
# Upstream's cap on concurrent writes in one slow-start batch (Parallel mode).
MAX_BATCH = 500
RETAIN = "Retain"
DELETE = "Delete"

_SET_API_VERSION, _SET_KIND = "apps/v1", "StatefulSet"
_POD_API_VERSION, _POD_KIND = "v1", "Pod"
# A pod's parent and ordinal come from its name alone, as upstream reads them.
_POD_NAME = re.compile(r"(.*)-([0-9]+)")
_INT32_MAX = 2**31 - 1
# Margin past a pod's availability instant before re-checking, so the check
# does not land a hair early on a clock that ticks in whole seconds.
_AVAILABILITY_MARGIN = 0.05


class StatefulSetError(Exception):
    """A sync could not finish for a reason other than an API error (a claim
    being deleted, ...); the set is retried with backoff."""


# --- identity ---------------------------------------------------------------------


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def _spec(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    spec = obj.get("spec")
    return spec if isinstance(spec, Mapping) else {}


def _name(obj: Mapping[str, Any]) -> str:
    return str(_meta(obj).get("name") or "")


def _namespace(obj: Mapping[str, Any]) -> str:
    return str(_meta(obj).get("namespace") or "")


def _uid(obj: Mapping[str, Any]) -> str:
    return str(_meta(obj).get("uid") or "")


def parent_and_ordinal(name: str) -> tuple[str, int]:
    """``("web", 3)`` for ``web-3``; the ordinal is -1 when the name has none
    (or one beyond int32, as upstream's ParseInt refuses it)."""
    match = _POD_NAME.fullmatch(name)
    if match is None:
        return "", -1
    ordinal = int(match.group(2))
    return match.group(1), ordinal if ordinal <= _INT32_MAX else -1


def ordinal_of(pod: Mapping[str, Any]) -> int:
    return parent_and_ordinal(_name(pod))[1]


def is_member(set_: Mapping[str, Any], pod: Mapping[str, Any]) -> bool:
    return parent_and_ordinal(_name(pod))[0] == _name(set_)


def start_ordinal(set_: Mapping[str, Any]) -> int:
    ordinals = _spec(set_).get("ordinals")
    start = ordinals.get("start") if isinstance(ordinals, Mapping) else 0
    return start if isinstance(start, int) else 0


def desired_replicas(set_: Mapping[str, Any]) -> int:
    replicas = _spec(set_).get("replicas")
    return replicas if isinstance(replicas, int) else 1


def in_ordinal_range(pod: Mapping[str, Any], set_: Mapping[str, Any]) -> bool:
    ordinal, start = ordinal_of(pod), start_ordinal(set_)
    return start <= ordinal < start + desired_replicas(set_)


def pod_name(set_: Mapping[str, Any], ordinal: int) -> str:
    return f"{_name(set_)}-{ordinal}"


def claim_name(template: Mapping[str, Any], set_: Mapping[str, Any], ordinal: int) -> str:
    return f"{_name(template)}-{_name(set_)}-{ordinal}"


def _claim_templates(set_: Mapping[str, Any]) -> list[Obj]:
    return [t for t in _spec(set_).get("volumeClaimTemplates") or [] if isinstance(t, dict)]


def claims_for(set_: Mapping[str, Any], ordinal: int) -> dict[str, Obj]:
    """The claims the pod at ``ordinal`` uses, by template name: each template
    renamed for the ordinal, labelled with the template's labels plus the
    set's ``matchLabels`` (``getPersistentVolumeClaims``)."""
    match_labels = (_spec(set_).get("selector") or {}).get("matchLabels") or {}
    claims: dict[str, Obj] = {}
    for template in _claim_templates(set_):
        claim = values.clone(template)
        claim.pop("status", None)
        meta = claim.setdefault("metadata", {})
        for transient in ("uid", "resourceVersion", "creationTimestamp", "generation"):
            meta.pop(transient, None)
        meta["name"] = claim_name(template, set_, ordinal)
        meta["namespace"] = _namespace(set_)
        meta["labels"] = {**(meta.get("labels") or {}), **match_labels}
        claim["apiVersion"], claim["kind"] = "v1", "PersistentVolumeClaim"
        claims[_name(template)] = claim
    return claims


def _owner_ref(owner: Mapping[str, Any], api_version: str, kind: str) -> Obj:
    return {
        "apiVersion": owner.get("apiVersion") or api_version,
        "kind": owner.get("kind") or kind,
        "name": _name(owner),
        "uid": _uid(owner),
        "controller": True,
        "blockOwnerDeletion": True,
    }


def new_pod(set_: Mapping[str, Any], ordinal: int) -> Obj:
    """The pod for ``ordinal`` from the set's template (``newStatefulSetPod``):
    template labels, annotations and finalizers, the set as controller, the
    stable identity, and a volume per claim template."""
    template = _spec(set_).get("template") or {}
    template_meta = template.get("metadata") or {}
    name = pod_name(set_, ordinal)
    meta: Obj = {
        "name": name,
        "generateName": f"{_name(set_)}-",
        "namespace": _namespace(set_),
        "labels": {
            **(template_meta.get("labels") or {}),
            POD_NAME_LABEL: name,
            POD_INDEX_LABEL: str(ordinal),
        },
        "ownerReferences": [_owner_ref(set_, _SET_API_VERSION, _SET_KIND)],
    }
    if template_meta.get("annotations"):
        meta["annotations"] = dict(template_meta["annotations"])
    if template_meta.get("finalizers"):
        meta["finalizers"] = list(template_meta["finalizers"])
    spec = values.clone(dict(template.get("spec") or {}))
    spec["hostname"] = name
    service = _spec(set_).get("serviceName")
    if service:
        spec["subdomain"] = service
    claims = claims_for(set_, ordinal)
    volumes: list[Obj] = [
        {"name": template_name, "persistentVolumeClaim": {"claimName": _name(claim)}}
        for template_name, claim in claims.items()
    ]
    volumes.extend(v for v in spec.get("volumes") or [] if v.get("name") not in claims)
    if volumes:
        spec["volumes"] = volumes
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}


def _rolling_update(set_: Mapping[str, Any]) -> Mapping[str, Any] | None:
    strategy = _spec(set_).get("updateStrategy") or {}
    rolling = strategy.get("rollingUpdate")
    return rolling if isinstance(rolling, Mapping) else None


def _strategy(set_: Mapping[str, Any]) -> str:
    return str((_spec(set_).get("updateStrategy") or {}).get("type") or "RollingUpdate")


def _partition(set_: Mapping[str, Any]) -> int:
    rolling = _rolling_update(set_)
    partition = rolling.get("partition") if rolling is not None else 0
    return partition if isinstance(partition, int) else 0


def versioned_pod(
    current_set: Mapping[str, Any],
    update_set: Mapping[str, Any],
    current_revision: str,
    update_revision: str,
    ordinal: int,
    current_replicas: int,
) -> Obj:
    """A missing pod, at the revision its ordinal should run
    (``newVersionedStatefulSetPod``): below the partition of a rolling update
    the current revision, otherwise the update revision."""
    start = start_ordinal(current_set)
    rolling = _rolling_update(current_set)
    if (
        _strategy(current_set) == "RollingUpdate"
        and rolling is None
        and ordinal < start + current_replicas
    ) or (rolling is not None and ordinal < start + _partition(current_set)):
        pod = new_pod(current_set, ordinal)
        pod["metadata"]["labels"][REVISION_LABEL] = current_revision
        return pod
    pod = new_pod(update_set, ordinal)
    pod["metadata"]["labels"][REVISION_LABEL] = update_revision
    return pod


def identity_matches(set_: Mapping[str, Any], pod: Mapping[str, Any]) -> bool:
    parent, ordinal = parent_and_ordinal(_name(pod))
    labels = _meta(pod).get("labels") or {}
    return (
        ordinal >= 0
        and parent == _name(set_)
        and _name(pod) == pod_name(set_, ordinal)
        and _namespace(pod) == _namespace(set_)
        and labels.get(POD_NAME_LABEL) == _name(pod)
    )


def storage_matches(set_: Mapping[str, Any], pod: Mapping[str, Any]) -> bool:
    ordinal = ordinal_of(pod)
    if ordinal < 0:
        return False
    volumes = {v.get("name"): v for v in _spec(pod).get("volumes") or []}
    for template in _claim_templates(set_):
        source = (volumes.get(_name(template)) or {}).get("persistentVolumeClaim") or {}
        if source.get("claimName") != claim_name(template, set_, ordinal):
            return False
    return True


# --- pod states -------------------------------------------------------------------


def _phase(pod: Mapping[str, Any]) -> str:
    return str((pod.get("status") or {}).get("phase") or "")


def is_created(pod: Mapping[str, Any]) -> bool:
    """Whether the pod exists in the API (pods made here have no phase yet)."""
    return _phase(pod) != ""


def is_terminating(pod: Mapping[str, Any]) -> bool:
    return bool(_meta(pod).get("deletionTimestamp"))


def _ready_condition(pod: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return condition  # type: ignore[no-any-return]
    return None


def is_ready(pod: Mapping[str, Any]) -> bool:
    condition = _ready_condition(pod)
    return condition is not None and condition.get("status") == "True"


def is_running_and_ready(pod: Mapping[str, Any]) -> bool:
    return _phase(pod) == "Running" and is_ready(pod)


def _parse_time(text: Any) -> datetime.datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        parsed = datetime.datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.UTC)


def available_at(pod: Mapping[str, Any], min_ready_seconds: int) -> datetime.datetime | None:
    """When a ready pod has been ready for ``minReadySeconds`` (None: not ready)."""
    if not is_ready(pod):
        return None
    condition = _ready_condition(pod) or {}
    since = _parse_time(condition.get("lastTransitionTime"))
    if since is None:
        return None if min_ready_seconds > 0 else datetime.datetime.min.replace(tzinfo=datetime.UTC)
    return since + datetime.timedelta(seconds=min_ready_seconds)


def is_available(pod: Mapping[str, Any], min_ready_seconds: int, now: datetime.datetime) -> bool:
    """``podutil.IsPodAvailable``: ready, and for longer than minReadySeconds."""
    if not is_ready(pod):
        return False
    if min_ready_seconds <= 0:
        return True
    due = available_at(pod, min_ready_seconds)
    return due is not None and due < now


def is_healthy(pod: Mapping[str, Any]) -> bool:
    return is_running_and_ready(pod) and not is_terminating(pod)


def revision_of(pod: Mapping[str, Any]) -> str:
    return str((_meta(pod).get("labels") or {}).get(REVISION_LABEL) or "")


def _min_ready_seconds(set_: Mapping[str, Any]) -> int:
    value = _spec(set_).get("minReadySeconds")
    return value if isinstance(value, int) else 0


def replica_counts(
    pods: Iterable[Mapping[str, Any]],
    min_ready_seconds: int,
    now: datetime.datetime,
    current_revision: str,
    update_revision: str,
) -> dict[str, int]:
    """The replica counts of a StatefulSet's status (``computeReplicaStatus``)."""
    counts = dict.fromkeys(
        (
            "replicas",
            "readyReplicas",
            "availableReplicas",
            "currentReplicas",
            "updatedReplicas",
        ),
        0,
    )
    for pod in pods:
        created = is_created(pod)
        if created:
            counts["replicas"] += 1
        if is_running_and_ready(pod):
            counts["readyReplicas"] += 1
            if is_available(pod, min_ready_seconds, now):
                counts["availableReplicas"] += 1
        if created and not is_terminating(pod):
            revision = revision_of(pod)
            if revision == current_revision:
                counts["currentReplicas"] += 1
            if revision == update_revision:
                counts["updatedReplicas"] += 1
    return counts


def complete_rolling_update(set_: Mapping[str, Any], status: Obj) -> None:
    """Once every replica runs the update revision and is ready, it becomes the
    current revision (RollingUpdate only: OnDelete never completes, as upstream)."""
    replicas = desired_replicas(set_)
    if (
        _strategy(set_) == "RollingUpdate"
        and status.get("updatedReplicas") == replicas
        and status.get("readyReplicas") == replicas
        and status.get("replicas") == replicas
    ):
        status["currentReplicas"] = status.get("updatedReplicas", 0)
        status["currentRevision"] = status.get("updateRevision", "")


def max_unavailable(set_: Mapping[str, Any]) -> int:
    """``rollingUpdate.maxUnavailable`` as a pod count: a number, or a
    percentage of the replicas rounded down; at least 1 (the default)."""
    rolling = _rolling_update(set_) or {}
    value = rolling.get("maxUnavailable")
    replicas = desired_replicas(set_)
    count = 1
    if isinstance(value, int):
        count = value
    elif isinstance(value, str) and value.endswith("%"):
        try:
            count = math.floor(int(value[:-1]) * replicas / 100)
        except ValueError:
            count = 1
    elif isinstance(value, str):
        try:
            count = int(value)
        except ValueError:
            count = 1
    return max(1, count)


# --- claim retention ----------------------------------------------------------------


def retention_policy(set_: Mapping[str, Any]) -> tuple[str, str]:
    """``(whenDeleted, whenScaled)``; both Retain when unset."""
    policy = _spec(set_).get("persistentVolumeClaimRetentionPolicy") or {}
    return (
        str(policy.get("whenDeleted") or RETAIN),
        str(policy.get("whenScaled") or RETAIN),
    )


def _refs(obj: Mapping[str, Any]) -> list[Obj]:
    return [r for r in _meta(obj).get("ownerReferences") or [] if isinstance(r, dict)]


def _matches_ref(
    ref: Mapping[str, Any], obj: Mapping[str, Any], api_version: str, kind: str
) -> bool:
    return (
        ref.get("apiVersion") == api_version
        and ref.get("kind") == kind
        and ref.get("name") == _name(obj)
    )


def _has_owner_ref(target: Mapping[str, Any], owner: Mapping[str, Any]) -> bool:
    uid = _uid(owner)
    return bool(uid) and any(r.get("uid") == uid for r in _refs(target))


def _has_stale_owner_ref(
    target: Mapping[str, Any], obj: Mapping[str, Any], api_version: str, kind: str
) -> bool:
    """A reference naming ``obj`` by kind and name but with another uid: an
    earlier incarnation (a scaled-down pod, a deleted set) still owns it."""
    for ref in _refs(target):
        if _matches_ref(ref, obj, api_version, kind):
            return ref.get("uid") != _uid(obj)
    return False


def _has_unexpected_controller(
    claim: Mapping[str, Any], set_: Mapping[str, Any], pod: Mapping[str, Any]
) -> bool:
    if retention_policy(set_) == (RETAIN, RETAIN):
        return False
    for ref in _refs(claim):
        if _matches_ref(ref, set_, _SET_API_VERSION, _SET_KIND):
            if ref.get("uid") != _uid(set_):
                return True
            continue
        if _matches_ref(ref, pod, _POD_API_VERSION, _POD_KIND):
            if ref.get("uid") != _uid(pod):
                return True
            continue
        if ref.get("controller"):
            return True
    return False


def _has_non_controller_owner(
    claim: Mapping[str, Any], set_: Mapping[str, Any], pod: Mapping[str, Any]
) -> bool:
    ours = {u for u in (_uid(set_), _uid(pod)) if u}
    return any(r.get("uid") in ours and not r.get("controller") for r in _refs(claim))


def claim_owner_up_to_date(
    claim: Mapping[str, Any], set_: Mapping[str, Any], pod: Mapping[str, Any]
) -> bool:
    """Whether the claim's owners follow the retention policy
    (``isClaimOwnerUpToDate``): Retain/Retain no reference, whenDeleted Delete
    the set, whenScaled Delete the pod once it is scaled away. Claims held by
    a stale or foreign controller are left alone."""
    if _has_stale_owner_ref(claim, set_, _SET_API_VERSION, _SET_KIND) or _has_stale_owner_ref(
        claim, pod, _POD_API_VERSION, _POD_KIND
    ):
        return True
    if _has_unexpected_controller(claim, set_, pod):
        return not (_has_owner_ref(claim, set_) or _has_owner_ref(claim, pod))
    if _has_non_controller_owner(claim, set_, pod):
        return False
    when_deleted, when_scaled = retention_policy(set_)
    set_ref, pod_ref = _has_owner_ref(claim, set_), _has_owner_ref(claim, pod)
    scaled_down = not in_ordinal_range(pod, set_)
    if when_scaled == DELETE and when_deleted == DELETE:
        return scaled_down != set_ref and scaled_down == pod_ref
    if when_scaled == DELETE:
        return not set_ref and scaled_down == pod_ref
    if when_deleted == DELETE:
        return set_ref and not pod_ref
    return not set_ref and not pod_ref


def claim_owner_refs(
    claim: Mapping[str, Any], set_: Mapping[str, Any], pod: Mapping[str, Any]
) -> list[Obj]:
    """The claim's ownerReferences as the retention policy wants them
    (``updateClaimOwnerRefForSetAndPod``): references to the set and pod are
    rebuilt as controller references, others kept."""
    unexpected = _has_unexpected_controller(claim, set_, pod)
    refs = [
        r
        for r in _refs(claim)
        if not _matches_ref(r, set_, _SET_API_VERSION, _SET_KIND)
        and not _matches_ref(r, pod, _POD_API_VERSION, _POD_KIND)
    ]
    if unexpected:
        return refs

    def add(owner: Mapping[str, Any], api_version: str, kind: str) -> None:
        if _uid(owner) and not any(r.get("uid") == _uid(owner) for r in refs):
            refs.append(_owner_ref(owner, api_version, kind))

    when_deleted, when_scaled = retention_policy(set_)
    scaled_down = not in_ordinal_range(pod, set_)
    if when_scaled == DELETE and scaled_down:
        add(pod, _POD_API_VERSION, _POD_KIND)
    elif when_deleted == DELETE and (when_scaled != DELETE or not scaled_down):
        add(set_, _SET_API_VERSION, _SET_KIND)
    return refs


# --- writes not yet seen --------------------------------------------------------------


@dataclasses.dataclass
class _Writes:
    names: set[str]
    uids: set[str]
    since: float


class _Unobserved:
    """Pods a set's sync created (by name) or deleted (by uid) that the pod
    informer has not shown yet; the set waits for them, or for ``timeout``
    should an event never come."""

    def __init__(self, clock: clocks.Clock, timeout: float) -> None:
        self._clock = clock
        self.timeout = timeout
        self._by_key: dict[str, _Writes] = {}

    def _entry(self, key: str) -> _Writes:
        found = self._by_key.get(key)
        if found is None:
            found = self._by_key[key] = _Writes(set(), set(), 0.0)
        found.since = self._clock.monotonic()
        return found

    def expect_creation(self, key: str, name: str) -> None:
        self._entry(key).names.add(name)

    def expect_deletion(self, key: str, uid: str) -> None:
        if uid:
            self._entry(key).uids.add(uid)

    def created(self, key: str, name: str) -> None:
        found = self._by_key.get(key)
        if found is not None:
            found.names.discard(name)
            self._tidy(key, found)

    def deleted(self, key: str, uid: str) -> None:
        found = self._by_key.get(key)
        if found is not None:
            found.uids.discard(uid)
            self._tidy(key, found)

    def _tidy(self, key: str, found: _Writes) -> None:
        if not found.names and not found.uids:
            del self._by_key[key]

    def remaining(self, key: str) -> float:
        """Seconds left to wait for ``key`` (0: nothing pending, or waited enough)."""
        found = self._by_key.get(key)
        if found is None:
            return 0.0
        left = found.since + self.timeout - self._clock.monotonic()
        if left <= 0:
            del self._by_key[key]
            return 0.0
        return left

    def forget(self, key: str) -> None:
        self._by_key.pop(key, None)


# --- one sync's working state ------------------------------------------------------------


@dataclasses.dataclass
class _Round:
    set_: Obj
    current_set: Obj
    update_set: Obj
    current: Obj
    update: Obj
    monotonic: bool
    now: datetime.datetime
    replicas: list[Obj]
    condemned: list[Obj]
    first_unhealthy: Obj | None
    status: Obj

    def recount(self) -> None:
        self.status.update(
            replica_counts(
                [*self.replicas, *self.condemned],
                _min_ready_seconds(self.set_),
                self.now,
                revisions.name_of(self.current),
                revisions.name_of(self.update),
            )
        )


class StatefulSetController:
    """Converges StatefulSets: their pods, claims, revisions and status.

    Informers come from the shared ``factory`` (pods are watched by every
    workload controller); ``start`` subscribes and runs the workers once the
    caches have synced, and the caller starts the factory. Events go to
    ``recorder``, or to one of this controller's own when none is given.
    """

    def __init__(
        self,
        client: clients.ApiClient,
        factory: informers.InformerFactory,
        *,
        clock: clocks.Clock | None = None,
        recorder: events.EventRecorder | None = None,
        workers: int = 2,
    ) -> None:
        self.client = client
        self.clock: clocks.Clock = clock or clocks.SystemClock()
        self._own_recorder = recorder is None
        self.recorder = recorder or events.EventRecorder(client, COMPONENT, self.clock)
        self.sets = factory.informer(STATEFULSETS)
        self.pods = factory.informer(PODS)
        self.claims = factory.informer(CLAIMS)
        self.revisions = factory.informer(revisions.CONTROLLER_REVISIONS)
        self.controller = controllers.Controller(
            COMPONENT, self.sync, workers=workers, clock=self.clock
        )
        self._unobserved = _Unobserved(self.clock, controllers.EXPECTATIONS_TIMEOUT)
        self._subscriptions: list[tuple[informers.Informer, informers.EventHandlers]] = []

    # --- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        if self._own_recorder:
            self.recorder.start()
        self._subscriptions = [
            (
                self.sets,
                self.sets.add_handlers(self._set_changed, self._set_updated, self._set_deleted),
            ),
            (
                self.pods,
                self.pods.add_handlers(self._pod_added, self._pod_updated, self._pod_deleted),
            ),
            (
                self.claims,
                self.claims.add_handlers(None, self._claim_updated, self._claim_changed),
            ),
        ]
        self.controller.start([self.sets, self.pods, self.claims, self.revisions])

    async def stop(self) -> None:
        await self.controller.stop()
        for informer, handlers in self._subscriptions:
            informer.remove_handlers(handlers)
        self._subscriptions = []
        if self._own_recorder:
            await self.recorder.stop()

    # --- event handlers (they only enqueue) ---------------------------------------------

    def _enqueue(self, key: str) -> None:
        self.controller.queue.add(key)

    def _set_changed(self, set_: Obj) -> None:
        self._enqueue(clients.key_of(set_))

    def _set_updated(self, old: Obj, new: Obj) -> None:
        self._enqueue(clients.key_of(new))

    def _set_deleted(self, set_: Obj) -> None:
        key = clients.key_of(set_)
        self._unobserved.forget(key)
        self._enqueue(key)

    def _owner_key(self, obj: Mapping[str, Any]) -> str | None:
        """The key of the StatefulSet controlling ``obj``, if it still exists."""
        ref = ownership.controller_ref(dict(obj))
        if ref is None or ref.get("kind") != _SET_KIND:
            return None
        if str(ref.get("apiVersion") or "").partition("/")[0] != "apps":
            return None
        key = f"{_namespace(obj)}/{ref.get('name', '')}"
        found = self.sets.get(key)
        if found is None or _uid(found) != ref.get("uid"):
            return None
        return key

    def _sets_selecting(self, pod: Mapping[str, Any]) -> list[str]:
        """Sets that might adopt an orphan: same namespace, selector matches."""
        labels = _meta(pod).get("labels") or {}
        keys = []
        for set_ in self.sets.objects(_namespace(pod)):
            try:
                selector = selectors.label_selector_from_object(_spec(set_).get("selector"))
            except errors.StatusError:
                continue
            if not selector.empty and selector.matches(labels):
                keys.append(clients.key_of(set_))
        return keys

    def _pod_added(self, pod: Obj) -> None:
        key = self._owner_key(pod)
        if key is None:
            for orphan_key in self._sets_selecting(pod):
                self._enqueue(orphan_key)
            return
        self._unobserved.created(key, _name(pod))
        if is_terminating(pod):
            self._unobserved.deleted(key, _uid(pod))
        self._enqueue(key)

    def _pod_updated(self, old: Obj, new: Obj) -> None:
        if clients.resource_version(old) == clients.resource_version(new):
            return
        old_key, new_key = self._owner_key(old), self._owner_key(new)
        if is_terminating(new) and not is_terminating(old):
            for key in {k for k in (old_key, new_key) if k is not None}:
                self._unobserved.deleted(key, _uid(new))
        if old_key is not None and old_key != new_key:
            self._enqueue(old_key)
        if new_key is not None:
            self._enqueue(new_key)
            found = self.sets.get(new_key)
            min_ready = _min_ready_seconds(found) if found is not None else 0
            if min_ready > 0 and is_ready(new) and not is_ready(old):
                self.controller.queue.add_after(new_key, min_ready + _AVAILABILITY_MARGIN)
            return
        labels_changed = (_meta(old).get("labels") or {}) != (_meta(new).get("labels") or {})
        if labels_changed or old_key != new_key:
            for key in self._sets_selecting(new):
                self._enqueue(key)

    def _pod_deleted(self, pod: Obj) -> None:
        key = self._owner_key(pod)
        if key is None:
            return
        self._unobserved.deleted(key, _uid(pod))
        self._unobserved.created(key, _name(pod))
        self._enqueue(key)

    def _claim_updated(self, old: Obj, new: Obj) -> None:
        self._claim_changed(new)

    def _claim_changed(self, claim: Obj) -> None:
        """A claim a set waits on (one still owned by a scaled-down pod) changed or
        went: wake the set that owns it or whose pod owns it."""
        for ref in _refs(claim):
            if ref.get("kind") == _SET_KIND:
                self._enqueue(f"{_namespace(claim)}/{ref.get('name', '')}")
            elif ref.get("kind") == _POD_KIND:
                parent, ordinal = parent_and_ordinal(str(ref.get("name") or ""))
                if ordinal >= 0 and self.sets.get(f"{_namespace(claim)}/{parent}") is not None:
                    self._enqueue(f"{_namespace(claim)}/{parent}")

    # --- sync ------------------------------------------------------------------------

    async def sync(self, key: str) -> None:
        set_ = self.sets.get(key)
        if set_ is None:
            self._unobserved.forget(key)
            return
        wait = self._unobserved.remaining(key)
        if wait > 0:
            # The informer events that satisfy the wait requeue the set; this
            # only guards against one that never comes.
            self.controller.queue.add_after(key, wait)
            return
        try:
            selector = selectors.label_selector_from_object(_spec(set_).get("selector"))
        except errors.StatusError as err:
            log.warning("%s: invalid selector: %s", key, err.message)
            return  # not transient: wait for the set to change
        await self._adopt_orphan_revisions(set_, selector)
        pods = await self._claim_pods(set_, selector)
        status = await self._update_set(set_, selector, pods)
        self._requeue_for_availability(key, set_, status, pods)

    def _requeue_for_availability(
        self, key: str, set_: Obj, status: Obj | None, pods: list[Obj]
    ) -> None:
        """With minReadySeconds, availability changes with no event: look again
        when the first ready pod becomes available."""
        min_ready = _min_ready_seconds(set_)
        if min_ready <= 0 or status is None:
            return
        if status.get("availableReplicas") == desired_replicas(set_):
            return
        now = self.clock.now()
        dues = [
            due for pod in pods if (due := available_at(pod, min_ready)) is not None and due >= now
        ]
        delay = (min(dues) - now).total_seconds() if dues else float(min_ready)
        self.controller.queue.add_after(key, delay + _AVAILABILITY_MARGIN)

    async def _can_adopt(self, set_: Obj) -> bool:
        """Adopting needs a fresh read: a set being deleted (or replaced by one of
        the same name) must not pick up orphans (``RecheckDeletionTimestamp``)."""
        if is_terminating(set_):
            return False
        try:
            fresh = await self.client.get(STATEFULSETS, _namespace(set_), _name(set_))
        except errors.StatusError as err:
            if err.code == 404:
                return False
            raise
        return _uid(fresh) == _uid(set_) and not is_terminating(fresh)

    async def _adopt_orphan_revisions(self, set_: Obj, selector: selectors.LabelSelector) -> None:
        candidates = revisions.owned_or_orphaned(
            self.revisions.objects(_namespace(set_)), set_, selector
        )
        if not any(ownership.controller_ref(r) is None for r in candidates):
            return
        allowed = await self._can_adopt(set_)
        await revisions.adopt_orphans(
            self.client, set_, candidates, selector, can_adopt=lambda: allowed
        )

    async def _claim_pods(self, set_: Obj, selector: selectors.LabelSelector) -> list[Obj]:
        """The set's pods: owned members, plus orphan members its selector matches
        (adopted); owned pods that stopped matching are released."""
        pods = self.pods.objects(_namespace(set_))
        members = [p for p in pods if is_member(set_, p)]
        orphans = [
            p
            for p in members
            if ownership.controller_ref(p) is None
            and selector.matches(_meta(p).get("labels"))
            and not is_terminating(p)
        ]
        allowed = await self._can_adopt(set_) if orphans else False
        claimed = await ownership.claim(
            self.client, PODS, set_, members, selector, can_adopt=lambda: allowed
        )
        strays = [p for p in pods if not is_member(set_, p) and ownership.is_owned_by(p, set_)]
        if strays:
            # Not named like the set's pods, so never its replicas: let them go.
            await ownership.claim(
                self.client, PODS, set_, strays, selectors.LabelSelector.nothing()
            )
        return claimed

    async def _update_set(
        self, set_: Obj, selector: selectors.LabelSelector, pods: list[Obj]
    ) -> Obj | None:
        """``UpdateStatefulSet``: resolve revisions, converge pods, write status,
        then prune history (even after a failure, as upstream does)."""
        history = revisions.sorted_revisions(
            revisions.owned_or_orphaned(self.revisions.objects(_namespace(set_)), set_, selector)
        )
        # Until this sync resolves them, the revisions the status names stay live.
        old_status = set_.get("status") or {}
        live = {str(old_status.get(f) or "") for f in ("currentRevision", "updateRevision")}
        live.update(revision_of(p) for p in pods)
        failures: list[Exception] = []
        status: Obj | None = None
        try:
            current, update, collisions = await self._resolve_revisions(set_, history)
            live = {revision_of(p) for p in pods} | {
                revisions.name_of(current),
                revisions.name_of(update),
            }
            round_ = self._new_round(set_, current, update, collisions, pods)
            try:
                await self._converge(round_)
            except Exception as err:
                failures.append(err)
            status = round_.status
            await self._write_status(set_, status)
        except Exception as err:
            failures.append(err)
        limit = _spec(set_).get("revisionHistoryLimit")
        try:
            await revisions.prune(
                self.client, history, live, limit if isinstance(limit, int) else 10
            )
        except Exception as err:
            failures.append(err)
        for extra in failures[1:]:
            log.warning("%s: %s", clients.key_of(set_), _message(extra))
        if failures:
            raise failures[0]
        return status

    async def _resolve_revisions(self, set_: Obj, history: list[Obj]) -> tuple[Obj, Obj, int]:
        """The current and update revisions (``getStatefulSetRevisions``): the
        update revision is the latest if the template is unchanged, an older
        one renumbered if the template went back to it, or a new one."""
        status = set_.get("status") or {}
        collisions = status.get("collisionCount")
        count = collisions if isinstance(collisions, int) else 0
        template_meta = (_spec(set_).get("template") or {}).get("metadata") or {}
        candidate = revisions.new_revision(
            set_,
            revisions.template_patch(set_),
            revisions.next_number(history),
            template_labels=template_meta.get("labels") or {},
            collision_count=count,
            annotations=_meta(set_).get("annotations") or {},
        )
        equal = revisions.find_equal(history, candidate)
        if equal and revisions.equal_revision(history[-1], equal[-1]):
            update = history[-1]
        elif equal:
            update = await revisions.renumber(
                self.client, equal[-1], revisions.number_of(candidate)
            )
        else:
            update, count = await revisions.create_revision(self.client, set_, candidate, count)
        wanted = status.get("currentRevision")
        current = next((r for r in history if revisions.name_of(r) == wanted), update)
        return current, update, count

    def _new_round(
        self, set_: Obj, current: Obj, update: Obj, collisions: int, pods: list[Obj]
    ) -> _Round:
        current_set = revisions.apply_revision(set_, current)
        update_set = revisions.apply_revision(set_, update)
        now = self.clock.now()
        min_ready = _min_ready_seconds(set_)
        current_name, update_name = revisions.name_of(current), revisions.name_of(update)
        status: Obj = {
            "observedGeneration": _meta(set_).get("generation", 0),
            "currentRevision": current_name,
            "updateRevision": update_name,
            "collisionCount": collisions,
            **replica_counts(pods, min_ready, now, current_name, update_name),
        }
        start, count = start_ordinal(set_), desired_replicas(set_)
        slots: list[Obj | None] = [None] * max(0, count)
        condemned: list[Obj] = []
        for pod in pods:
            ordinal = ordinal_of(pod)
            if start <= ordinal < start + count:
                slots[ordinal - start] = pod
            elif ordinal >= 0:
                condemned.append(pod)
        current_replicas = int((set_.get("status") or {}).get("currentReplicas") or 0)
        replicas = [
            pod
            if pod is not None
            else versioned_pod(
                current_set, update_set, current_name, update_name, start + i, current_replicas
            )
            for i, pod in enumerate(slots)
        ]
        condemned.sort(key=ordinal_of, reverse=True)
        first_unhealthy = next((p for p in replicas if not is_healthy(p)), None)
        if first_unhealthy is None:
            first_unhealthy = next((p for p in reversed(condemned) if not is_healthy(p)), None)
        return _Round(
            set_=set_,
            current_set=current_set,
            update_set=update_set,
            current=current,
            update=update,
            monotonic=_spec(set_).get("podManagementPolicy") != "Parallel",
            now=now,
            replicas=replicas,
            condemned=condemned,
            first_unhealthy=first_unhealthy,
            status=status,
        )

    async def _run_for_all(
        self, count: int, action: Callable[[int], Awaitable[bool]], monotonic: bool
    ) -> bool:
        """Run ``action`` over indexes; True when the round must stop here.
        Monotonic: in order, stopping at the first that blocks. Parallel: in
        slow-start batches (1, 2, 4, ... up to ``MAX_BATCH``), stopping after
        a batch with a failure, whose first error is raised."""
        if monotonic:
            for i in range(count):
                if await action(i):
                    return True
            return False
        done, batch = 0, min(count, 1)
        while batch > 0:
            results = await asyncio.gather(
                *(action(i) for i in range(done, done + batch)), return_exceptions=True
            )
            done += batch
            failures = [r for r in results if isinstance(r, BaseException)]
            for failure in failures:
                if isinstance(failure, asyncio.CancelledError):
                    raise failure
            if failures:
                for extra in failures[1:]:
                    log.warning("statefulset: parallel write failed: %s", extra)
                raise failures[0]
            batch = min(2 * batch, count - done, MAX_BATCH)
        return False

    async def _converge(self, r: _Round) -> None:
        """``updateStatefulSet``: replicas, then claims of condemned pods, then
        scale-down, then the rolling update; status counts are refreshed after
        the first three whatever happens."""
        if is_terminating(r.set_):
            return
        try:
            if await self._run_for_all(
                len(r.replicas), lambda i: self._process_replica(r, i), r.monotonic
            ):
                return
            if await self._run_for_all(
                len(r.condemned), lambda i: self._fix_condemned_claims(r, i), r.monotonic
            ):
                return
            if await self._run_for_all(
                len(r.condemned), lambda i: self._process_condemned(r, i), r.monotonic
            ):
                return
        finally:
            r.recount()
        if _strategy(r.set_) == "OnDelete":
            return
        await self._roll(r)

    async def _process_replica(self, r: _Round, i: int) -> bool:
        set_, pod = r.set_, r.replicas[i]
        if _phase(pod) in ("Failed", "Succeeded"):
            # Delete it; its replacement is made once it is gone from the API.
            if not is_terminating(pod):
                await self._delete_pod(set_, pod)
            return True
        if not is_created(pod):
            if self._claim_is_stale(set_, pod):
                return True  # wait for the garbage collector to remove it
            if not await self._create_pod(set_, pod):
                return True
            # Nothing more to do for it this round; a monotonic set waits for it.
            return r.monotonic
        if _phase(pod) == "Pending":
            await self._create_missing_claims(set_, pod)
        min_ready = _min_ready_seconds(set_)
        if r.monotonic and (
            is_terminating(pod)
            or not is_running_and_ready(pod)
            or not is_available(pod, min_ready, r.now)
        ):
            return True
        retention_ok = self._claims_match_retention(r.update_set, pod)
        if identity_matches(set_, pod) and storage_matches(set_, pod) and retention_ok:
            return False
        await self._update_pod(r.update_set, pod)
        return False

    async def _fix_condemned_claims(self, r: _Round, i: int) -> bool:
        pod = r.condemned[i]
        if not self._claims_match_retention(r.update_set, pod):
            await self._update_claims_for_retention(r.update_set, pod)
        return False

    async def _process_condemned(self, r: _Round, i: int) -> bool:
        pod = r.condemned[i]
        if is_terminating(pod):
            return r.monotonic  # monotonic: wait for it to be gone
        min_ready = _min_ready_seconds(r.set_)
        if (
            r.monotonic
            and pod is not r.first_unhealthy
            and (not is_running_and_ready(pod) or not is_available(pod, min_ready, r.now))
        ):
            return True
        await self._delete_pod(r.set_, pod)
        return True

    async def _roll(self, r: _Round) -> None:
        """Replace pods not at the update revision, highest ordinal first, from
        the partition up, keeping at most maxUnavailable replicas unavailable
        (``updateStatefulSetAfterInvariantEstablished``)."""
        budget = max_unavailable(r.set_)
        min_ready = _min_ready_seconds(r.set_)
        unavailable = sum(
            1
            for pod in r.replicas
            if not is_healthy(pod) or not is_available(pod, min_ready, r.now)
        )
        if unavailable >= budget:
            return
        to_delete = budget - unavailable
        update_name = revisions.name_of(r.update)
        floor = max(0, _partition(r.set_)) if _rolling_update(r.set_) is not None else 0
        for target in range(len(r.replicas) - 1, floor - 1, -1):
            if to_delete <= 0:
                break
            pod = r.replicas[target]
            if revision_of(pod) != update_name and not is_terminating(pod) and is_created(pod):
                await self._delete_pod(r.set_, pod)
                to_delete -= 1
                r.status["currentReplicas"] = r.status.get("currentReplicas", 0) - 1

    # --- pod and claim writes -----------------------------------------------------------

    def _event(self, set_: Obj, kind: str, reason: str, message: str) -> None:
        self.recorder.record(set_, kind, reason, message)

    def _pod_event(self, verb: str, set_: Obj, pod: Obj, err: Exception | None) -> None:
        """Upstream's ``recordPodEvent`` wording: ``create Pod web-0 in
        StatefulSet web successful``."""
        if err is None:
            self._event(
                set_,
                "Normal",
                f"Successful{verb.title()}",
                f"{verb} Pod {_name(pod)} in StatefulSet {_name(set_)} successful",
            )
        else:
            self._event(
                set_,
                "Warning",
                f"Failed{verb.title()}",
                f"{verb} Pod {_name(pod)} in StatefulSet {_name(set_)} failed error: {_message(err)}",
            )

    def _claim_event(
        self, verb: str, set_: Obj, pod: Obj, claim: Obj, err: Exception | None
    ) -> None:
        if err is None:
            self._event(
                set_,
                "Normal",
                f"Successful{verb.title()}",
                f"{verb} Claim {_name(claim)} Pod {_name(pod)} in StatefulSet {_name(set_)} success",
            )
        else:
            self._event(
                set_,
                "Warning",
                f"Failed{verb.title()}",
                f"{verb} Claim {_name(claim)} for Pod {_name(pod)} in StatefulSet "
                f"{_name(set_)} failed error: {_message(err)}",
            )

    async def _create_pod(self, set_: Obj, pod: Obj) -> bool:
        """Claims first, then the pod (``CreateStatefulPod``); False when the pod
        already exists and the cache has yet to show it."""
        key = clients.key_of(set_)
        try:
            await self._create_claims(set_, pod)
        except Exception as err:
            self._pod_event("create", set_, pod, err)
            raise
        self._unobserved.expect_creation(key, _name(pod))
        try:
            created = await self.client.create(PODS, pod)
        except errors.StatusError as err:
            self._unobserved.created(key, _name(pod))
            if err.code == 409 and err.reason == "AlreadyExists":
                if self.pods.get(f"{_namespace(pod)}/{_name(pod)}") is None:
                    # Most likely ours, not yet in the cache: its event requeues
                    # the set. Should it be someone else's instead, look again.
                    self.controller.queue.add_after(key, 1.0)
                    return False
                raise  # someone else's pod holds the name
            self._pod_event("create", set_, pod, err)
            raise
        try:
            await self._update_claims_for_retention(set_, created)
        except Exception as err:
            self._pod_event("update", set_, created, err)
            raise
        self._pod_event("create", set_, created, None)
        return True

    async def _delete_pod(self, set_: Obj, pod: Obj) -> None:
        """Delete this very pod (uid precondition); one already gone is fine."""
        key, uid = clients.key_of(set_), _uid(pod)
        self._unobserved.expect_deletion(key, uid)
        options = clients.DeleteOptions(preconditions=clients.Preconditions(uid=uid))
        try:
            await self.client.delete(PODS, _namespace(pod), _name(pod), options)
        except errors.StatusError as err:
            self._unobserved.deleted(key, uid)
            if err.code in (404, 409):
                return  # gone, or replaced by a pod we have not seen yet
            self._pod_event("delete", set_, pod, err)
            raise
        self._pod_event("delete", set_, pod, None)

    async def _update_pod(self, set_: Obj, pod: Obj) -> None:
        """Restore identity labels, missing claims and claim owners
        (``UpdateStatefulPod``). A pod's volumes cannot change once it exists,
        so unlike upstream (whose update the apiserver then refuses) volumes
        are not rewritten."""
        if not storage_matches(set_, pod):
            try:
                await self._create_claims(set_, pod)
            except Exception as err:
                self._pod_event("update", set_, pod, err)
                raise
        if not self._claims_match_retention(set_, pod):
            try:
                await self._update_claims_for_retention(set_, pod)
            except Exception as err:
                self._pod_event("update", set_, pod, err)
                raise
        if identity_matches(set_, pod):
            return
        ordinal = ordinal_of(pod)
        patch = {
            "metadata": {
                "labels": {POD_NAME_LABEL: _name(pod), POD_INDEX_LABEL: str(ordinal)},
                "resourceVersion": clients.resource_version(pod),
            }
        }
        try:
            await self.client.patch(PODS, _namespace(pod), _name(pod), patch, patch_type="merge")
        except errors.StatusError as err:
            if err.code == 404:
                return
            self._pod_event("update", set_, pod, err)
            raise
        self._pod_event("update", set_, pod, None)

    async def _create_claims(self, set_: Obj, pod: Obj) -> None:
        """Create the pod's missing claims (``createPersistentVolumeClaims``),
        with the owners the retention policy wants from the start."""
        failures: list[Exception] = []
        for claim in claims_for(set_, ordinal_of(pod)).values():
            existing = self.claims.get(f"{_namespace(claim)}/{_name(claim)}")
            if existing is not None:
                if is_terminating(existing):
                    failures.append(StatefulSetError(f"pvc {_name(claim)} is being deleted"))
                continue
            refs = claim_owner_refs(claim, set_, pod)
            if refs:
                claim["metadata"]["ownerReferences"] = refs
            try:
                await self.client.create(CLAIMS, claim)
            except errors.StatusError as err:
                if err.code == 409 and err.reason == "AlreadyExists":
                    continue  # created by an earlier sync the cache has not shown yet
                failures.append(err)
                self._claim_event("create", set_, pod, claim, err)
                continue
            self._claim_event("create", set_, pod, claim, None)
        if failures:
            raise failures[0]

    async def _create_missing_claims(self, set_: Obj, pod: Obj) -> None:
        await self._create_claims(set_, pod)
        try:
            await self._update_claims_for_retention(set_, pod)
        except Exception as err:
            self._pod_event("update", set_, pod, err)
            raise

    def _pod_claims(self, set_: Obj, pod: Obj) -> list[Obj]:
        """The pod's claims that exist (in the cache)."""
        found = []
        for claim in claims_for(set_, ordinal_of(pod)).values():
            existing = self.claims.get(f"{_namespace(claim)}/{_name(claim)}")
            if existing is not None:
                found.append(existing)
        return found

    def _claims_match_retention(self, set_: Obj, pod: Obj) -> bool:
        return all(claim_owner_up_to_date(c, set_, pod) for c in self._pod_claims(set_, pod))

    async def _update_claims_for_retention(self, set_: Obj, pod: Obj) -> None:
        """``UpdatePodClaimForRetentionPolicy``: missing claims are left for a
        later round."""
        for claim in self._pod_claims(set_, pod):
            if _has_unexpected_controller(claim, set_, pod):
                self._event(
                    set_,
                    "Warning",
                    "ConflictingController",
                    f"PersistentVolumeClaim {_name(claim)} has a conflicting OwnerReference "
                    "that acts as a manging controller, the retention policy is ignored for "
                    "this claim",
                )
            if claim_owner_up_to_date(claim, set_, pod):
                continue
            patch = {
                "metadata": {
                    "ownerReferences": claim_owner_refs(claim, set_, pod),
                    "resourceVersion": clients.resource_version(claim),
                }
            }
            await self.client.patch(
                CLAIMS, _namespace(claim), _name(claim), patch, patch_type="merge"
            )

    def _claim_is_stale(self, set_: Obj, pod: Obj) -> bool:
        """``PodClaimIsStale``: with whenScaled Delete, a claim still owned by an
        earlier pod of this name is about to be collected; do not reuse it."""
        if retention_policy(set_)[1] == RETAIN:
            return False
        return any(
            _has_stale_owner_ref(claim, pod, _POD_API_VERSION, _POD_KIND)
            for claim in self._pod_claims(set_, pod)
        )

    async def _write_status(self, set_: Obj, status: Obj) -> None:
        """Complete a finished rolling update, then write the status if it
        changed (through the status subresource; conditions are left alone)."""
        complete_rolling_update(set_, status)
        old = set_.get("status") or {}
        if all(old.get(field, 0 if isinstance(v, int) else "") == v for field, v in status.items()):
            return
        try:
            await self.client.patch(
                STATEFULSETS,
                _namespace(set_),
                _name(set_),
                {"status": status},
                patch_type="merge",
                subresource="status",
            )
        except errors.StatusError as err:
            if err.code != 404:
                raise


def _message(err: Exception) -> str:
    return err.message if isinstance(err, errors.StatusError) else str(err)
