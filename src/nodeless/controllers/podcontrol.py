"""Pods as workload controllers handle them: made from a template, counted,
ranked for deletion and found by owner.

These are upstream's ``pkg/controller`` helpers (``PodControl``,
``FilterActivePods``, ``ActivePodsWithRanks``, ``slowStartBatch``), shared by
every controller that owns pods so that they agree on what "ready",
"available" and "delete this one first" mean. ``OwnerIndex`` stands in for
client-go's indexers: a controller's sync must not scan every pod in the
cluster to find its own.
"""

from __future__ import annotations

import asyncio
import datetime
import functools
import logging
import weakref
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from nodeless.api import errors, times, values
from nodeless.client import clients, events, informers
from nodeless.controllers import ownership

log = logging.getLogger(__name__)

Obj = dict[str, Any]

PODS = clients.ResourceRef("", "v1", "pods", True, "Pod")
DELETION_COST_ANNOTATION = "controller.kubernetes.io/pod-deletion-cost"
# Upstream's SlowStartInitialBatchSize: one pod first, so a template that can
# never be created fails once instead of a burst of identical errors.
SLOW_START_INITIAL_BATCH = 1
NAMESPACE_TERMINATING_CAUSE = "NamespaceTerminating"

_PHASE_ORDER = {"Pending": 0, "Unknown": 1, "Running": 2}
# A created pod is only read (its name for the event): no copy of it is made.
_READ_ONLY = clients.WriteOptions(keep_result=False)


# --- reading pods ---------------------------------------------------------------------


def parse_time(value: object) -> datetime.datetime | None:
    """An RFC 3339 timestamp as the API writes it, or None when absent or unreadable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.UTC)


def format_time(value: datetime.datetime) -> str:
    return times.rfc3339(value)


def is_deleting(obj: Obj) -> bool:
    return bool((obj.get("metadata") or {}).get("deletionTimestamp"))


def is_active(pod: Obj) -> bool:
    """Neither finished nor being deleted: the pods a controller counts towards
    its replicas (upstream ``IsPodActive``), so failed pods get replaced."""
    phase = (pod.get("status") or {}).get("phase")
    return phase not in ("Succeeded", "Failed") and not is_deleting(pod)


def _ready_condition(pod: Obj) -> Obj | None:
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if isinstance(condition, dict) and condition.get("type") == "Ready":
            return condition
    return None


def is_ready(pod: Obj) -> bool:
    condition = _ready_condition(pod)
    return condition is not None and condition.get("status") == "True"


def ready_since(pod: Obj) -> datetime.datetime | None:
    """When the pod last became ready (its Ready condition's transition), if it is."""
    condition = _ready_condition(pod)
    if condition is None or condition.get("status") != "True":
        return None
    return parse_time(condition.get("lastTransitionTime"))


def is_available(pod: Obj, min_ready_seconds: int, now: datetime.datetime) -> bool:
    """Ready for at least ``min_ready_seconds`` (upstream ``IsPodAvailable``): a
    pod that flaps ready and unready right after start is not yet counted."""
    if not is_ready(pod):
        return False
    if min_ready_seconds <= 0:
        return True
    since = ready_since(pod)
    return since is not None and since + datetime.timedelta(seconds=min_ready_seconds) < now


def restarts(pod: Obj) -> int:
    """The most restarts of any one container."""
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return max(
        (int(s.get("restartCount") or 0) for s in statuses if isinstance(s, dict)), default=0
    )


def _deletion_cost(pod: Obj) -> int:
    raw = ((pod.get("metadata") or {}).get("annotations") or {}).get(DELETION_COST_ANNOTATION)
    try:
        cost = int(str(raw))
    except ValueError:
        return 0
    return cost if -(2**31) <= cost < 2**31 else 0


# --- ranking for deletion -------------------------------------------------------------


def _after_or_zero(a: datetime.datetime | None, b: datetime.datetime | None) -> bool:
    """Upstream ``afterOrZero``: a missing time sorts first, else the later one."""
    if a is None or b is None:
        return a is None
    return a > b


def _less(a: Obj, rank_a: int, b: Obj, rank_b: int) -> bool:
    """``ActivePodsWithRanks.Less``: True when ``a`` should be deleted before ``b``."""
    node_a = (a.get("spec") or {}).get("nodeName") or ""
    node_b = (b.get("spec") or {}).get("nodeName") or ""
    # 1. Unscheduled before scheduled.
    if node_a != node_b and (not node_a or not node_b):
        return not node_a
    # 2. Pending < Unknown < Running.
    phase_a = _PHASE_ORDER.get((a.get("status") or {}).get("phase") or "", 0)
    phase_b = _PHASE_ORDER.get((b.get("status") or {}).get("phase") or "", 0)
    if phase_a != phase_b:
        return phase_a < phase_b
    # 3. Not ready before ready.
    ready_a, ready_b = is_ready(a), is_ready(b)
    if ready_a != ready_b:
        return not ready_a
    # 4. Lower pod-deletion-cost first.
    cost_a, cost_b = _deletion_cost(a), _deletion_cost(b)
    if cost_a != cost_b:
        return cost_a < cost_b
    # 5. Doubled up (more related pods on the same node; here: in the same
    #    zone) first, which keeps a workload spread across zones.
    if rank_a != rank_b:
        return rank_a > rank_b
    # 6. Ready for a shorter time first.
    if ready_a and ready_b:
        since_a, since_b = ready_since(a), ready_since(b)
        if since_a != since_b:
            return _after_or_zero(since_a, since_b)
    # 7. More restarts first.
    restarts_a, restarts_b = restarts(a), restarts(b)
    if restarts_a != restarts_b:
        return restarts_a > restarts_b
    # 8. Newer first.
    created_a = parse_time((a.get("metadata") or {}).get("creationTimestamp"))
    created_b = parse_time((b.get("metadata") or {}).get("creationTimestamp"))
    if created_a != created_b:
        return _after_or_zero(created_a, created_b)
    return False


def deletion_order(pods: Sequence[Obj], related: Iterable[Obj] = ()) -> list[Obj]:
    """``pods`` sorted so that the ones to delete first come first.

    ``related`` are the active pods of the same workload (the pods of every
    ReplicaSet of one Deployment); a pod sharing its node with more of them
    ranks earlier (upstream ``getPodsRankedByRelatedPodsOnSameNode``). Pods
    not in ``related`` are counted there too.
    """
    on_node: dict[str, int] = {}
    seen: set[str] = set()
    for pod in [*related, *pods]:
        uid = str((pod.get("metadata") or {}).get("uid") or id(pod))
        if uid in seen or not is_active(pod):
            continue
        seen.add(uid)
        node = (pod.get("spec") or {}).get("nodeName") or ""
        on_node[node] = on_node.get(node, 0) + 1
    ranked = [(pod, on_node.get((pod.get("spec") or {}).get("nodeName") or "", 0)) for pod in pods]

    def compare(x: tuple[Obj, int], y: tuple[Obj, int]) -> int:
        if _less(x[0], x[1], y[0], y[1]):
            return -1
        if _less(y[0], y[1], x[0], x[1]):
            return 1
        return 0

    return [pod for pod, _ in sorted(ranked, key=functools.cmp_to_key(compare))]


# --- creating and deleting ------------------------------------------------------------


def pod_from_template(template: Obj, owner: Obj) -> Obj:
    """The pod a controller creates from ``template`` (upstream
    ``GetPodFromTemplate``): the template's labels, annotations and finalizers,
    a copy of its spec, ``generateName`` ``<owner>-`` and a controller
    reference that blocks the owner's foreground deletion."""
    meta = template.get("metadata") or {}
    owner_name = str((owner.get("metadata") or {}).get("name") or "")
    pod_meta: Obj = {
        "generateName": f"{owner_name}-",
        "namespace": (owner.get("metadata") or {}).get("namespace", ""),
        "ownerReferences": [ownership.owner_reference(owner)],
    }
    for key in ("labels", "annotations"):
        if meta.get(key):
            pod_meta[key] = dict(meta[key])
    if meta.get("finalizers"):
        pod_meta["finalizers"] = list(meta["finalizers"])
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": pod_meta,
        "spec": values.clone(template.get("spec") or {}),
    }


def namespace_terminating(err: BaseException) -> bool:
    """The namespace is being deleted: creating in it fails and will keep failing,
    which is nobody's error to report."""
    return isinstance(err, errors.StatusError) and any(
        c.reason == NAMESPACE_TERMINATING_CAUSE for c in err.causes
    )


def _error_text(err: BaseException) -> str:
    return err.message if isinstance(err, errors.StatusError) else str(err)


async def create_pod(
    client: clients.ApiClient,
    template: Obj,
    owner: Obj,
    recorder: events.EventRecorder | None = None,
) -> Obj:
    """Create one pod of ``owner`` from ``template``, recording upstream's
    ``SuccessfulCreate`` / ``FailedCreate`` events on the owner. The answer
    may be the stored pod itself: read it, do not change it."""
    pod = pod_from_template(template, owner)
    if not (pod["metadata"].get("labels") or {}):
        # Upstream refuses: a pod without labels could never be found again.
        err = ValueError("unable to create pods, no labels")
        if recorder is not None:
            recorder.record(owner, "Warning", "FailedCreate", f"Error creating: {err}")
        raise err
    try:
        created = await client.create(PODS, pod, _READ_ONLY)
    except Exception as err:
        if recorder is not None and not namespace_terminating(err):
            recorder.record(owner, "Warning", "FailedCreate", f"Error creating: {_error_text(err)}")
        raise
    if recorder is not None:
        name = (created.get("metadata") or {}).get("name", "")
        recorder.record(owner, "Normal", "SuccessfulCreate", f"Created pod: {name}")
    return created


async def delete_pod(
    client: clients.ApiClient,
    pod: Obj,
    owner: Obj,
    recorder: events.EventRecorder | None = None,
) -> None:
    """Delete one of ``owner``'s pods (only that incarnation: the uid is a
    precondition), recording ``SuccessfulDelete`` / ``FailedDelete``. A pod
    already gone raises the 404 without an event."""
    meta = pod.get("metadata") or {}
    name = str(meta.get("name") or "")
    options = clients.DeleteOptions(
        preconditions=clients.Preconditions(uid=str(meta.get("uid") or ""))
    )
    try:
        await client.delete(PODS, str(meta.get("namespace") or ""), name, options)
    except errors.StatusError as err:
        if err.code != 404 and recorder is not None:
            recorder.record(owner, "Warning", "FailedDelete", f"Error deleting: {err.message}")
        raise
    if recorder is not None:
        recorder.record(owner, "Normal", "SuccessfulDelete", f"Deleted pod: {name}")


async def slow_start_batch(
    count: int, initial_batch: int, fn: Callable[[], Awaitable[object]]
) -> tuple[int, BaseException | None]:
    """Call ``fn`` ``count`` times in batches of 1, 2, 4, ... run concurrently,
    stopping after the first batch with a failure (upstream ``slowStartBatch``):
    a quota or admission error costs one request, not hundreds. Returns the
    number of successes and the first error."""
    remaining = count
    successes = 0
    batch = min(remaining, initial_batch)
    while batch > 0:
        results = await asyncio.gather(*(fn() for _ in range(batch)), return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        for failure in failures:
            if isinstance(failure, asyncio.CancelledError):
                raise failure
        successes += batch - len(failures)
        if failures:
            return successes, failures[0]
        remaining -= batch
        batch = min(2 * batch, remaining)
    return successes, None


# --- finding a controller's objects -----------------------------------------------------


class OwnerIndex:
    """An informer's objects by controller: those a uid controls, and the
    orphans of each namespace (the only others a controller may adopt).

    One index per informer, shared by every controller that asks (``of``).
    It follows the informer through handlers, which run before any worker can
    read, so it is always as current as the informer's own cache.
    """

    _shared: weakref.WeakKeyDictionary[informers.Informer, OwnerIndex] = weakref.WeakKeyDictionary()

    def __init__(self, informer: informers.Informer) -> None:
        self._owned: dict[str, dict[str, Obj]] = {}
        self._orphans: dict[str, dict[str, Obj]] = {}
        # Where each key is filed, so that a delete finds it whatever the final
        # state the informer reports.
        self._where: dict[str, tuple[bool, str]] = {}
        informer.add_handlers(self._put, self._update, self._remove)

    @classmethod
    def of(cls, informer: informers.Informer) -> OwnerIndex:
        found = cls._shared.get(informer)
        if found is None:
            found = cls._shared[informer] = cls(informer)
        return found

    def owned_by(self, uid: str) -> list[Obj]:
        return list(self._owned.get(uid, {}).values())

    def orphans(self, namespace: str) -> list[Obj]:
        return list(self._orphans.get(namespace, {}).values())

    def candidates(self, namespace: str, uid: str) -> list[Obj]:
        """What a controller with ``uid`` in ``namespace`` must look at to claim:
        what it owns and what nobody owns."""
        return self.owned_by(uid) + self.orphans(namespace)

    def _put(self, obj: Obj) -> None:
        key = clients.key_of(obj)
        self._drop(key)
        ref = ownership.controller_ref(obj)
        if ref is not None and ref.get("uid"):
            place = (True, str(ref["uid"]))
            self._owned.setdefault(place[1], {})[key] = obj
        else:
            place = (False, str((obj.get("metadata") or {}).get("namespace") or ""))
            self._orphans.setdefault(place[1], {})[key] = obj
        self._where[key] = place

    def _update(self, old: Obj, new: Obj) -> None:
        self._put(new)

    def _remove(self, obj: Obj) -> None:
        self._drop(clients.key_of(obj))

    def _drop(self, key: str) -> None:
        place = self._where.pop(key, None)
        if place is None:
            return
        buckets = self._owned if place[0] else self._orphans
        bucket = buckets.get(place[1])
        if bucket is not None:
            bucket.pop(key, None)
            if not bucket:
                del buckets[place[1]]
