"""The ReplicaSet controller (and the ReplicationController manager, the same
logic over core/v1): keep ``spec.replicas`` active pods matching the selector.

Upstream's ``pkg/controller/replicaset``, level-triggered:

- a sync claims pods (adopts matching orphans, releases owned pods whose
  labels stopped matching), then creates or deletes the difference and
  writes the status;
- expectations make the controller wait until it has *seen* its own
  creations and deletions before acting on the same set again, so a cache
  that lags behind the API never makes it create or delete twice;
- creations go in slow-start batches (1, 2, 4, ...) of at most 500 per sync;
  deletions take the pods upstream's ranking puts first (unscheduled,
  pending, not ready, ... newest);
- the status counts active pods, fully labelled, ready and available ones
  (ready for ``minReadySeconds`` on the injected clock) and carries a
  ``ReplicaFailure`` condition while creating or deleting fails.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from typing import Any, ClassVar

from nodeless import clocks
from nodeless.api import errors, selectors, values
from nodeless.client import clients, controllers, events, informers
from nodeless.controllers import ownership, podcontrol

log = logging.getLogger(__name__)

Obj = dict[str, Any]

REPLICASETS = clients.ResourceRef("apps", "v1", "replicasets", True, "ReplicaSet")
REPLICATIONCONTROLLERS = clients.ResourceRef(
    "", "v1", "replicationcontrollers", True, "ReplicationController"
)
# Upstream's BurstReplicas: the most pods one sync creates or deletes.
BURST_REPLICAS = 500
# Pod creations and updates seen within this many seconds wake a set once:
# each sync reads every pod of the set, so a sync per pod event made a
# 500-pod rollout cost O(N^2) (5.8 syncs per pod measured). Upstream's Job
# controller batches its pod events the same way (syncJobBatchPeriod, 1 s).
# Deletions still wake it at once: they may need replacements.
POD_BATCH_PERIOD = 0.2
STATUS_UPDATE_RETRIES = 1
REPLICA_FAILURE = "ReplicaFailure"


def replicas_of(obj: Obj) -> int:
    """``spec.replicas``; the API defaults it to 1."""
    value = (obj.get("spec") or {}).get("replicas")
    return value if isinstance(value, int) else 1


def min_ready_seconds_of(obj: Obj) -> int:
    value = (obj.get("spec") or {}).get("minReadySeconds")
    return value if isinstance(value, int) else 0


def replica_set_selector(rs: Obj) -> selectors.LabelSelector:
    """An apps/v1 ReplicaSet's ``metav1.LabelSelector``."""
    return selectors.label_selector_from_object((rs.get("spec") or {}).get("selector"))


def replication_controller_selector(rc: Obj) -> selectors.LabelSelector:
    """A ReplicationController's plain label map; empty means the template's
    labels, as upstream's defaulting fills it in."""
    spec = rc.get("spec") or {}
    labels = spec.get("selector") or ((spec.get("template") or {}).get("metadata") or {}).get(
        "labels"
    )
    if not labels:
        return selectors.LabelSelector.nothing()
    return selectors.label_selector_from_object({"matchLabels": labels})


def _condition(kind: str, status: str, reason: str, message: str, now: str) -> Obj:
    return {
        "type": kind,
        "status": status,
        "lastTransitionTime": now,
        "reason": reason,
        "message": message,
    }


def calculate_status(
    rs: Obj,
    pods: list[Obj],
    manage_error: BaseException | None,
    now: datetime.datetime,
) -> Obj:
    """The status ``rs`` should have with these claimed active ``pods`` at
    ``now`` (upstream ``calculateStatus``; zero counts omitted as the API omits
    them). ``observedGeneration`` is left as it was: only a successful write
    sets it."""
    moment = now
    old = rs.get("status") or {}
    template_labels = ((rs.get("spec") or {}).get("template") or {}).get("metadata") or {}
    wanted = template_labels.get("labels") or {}
    min_ready = min_ready_seconds_of(rs)
    fully_labeled = ready = available = 0
    # One pass, each pod's Ready condition looked up once: this runs over
    # every pod of the set at each sync (3 us a pod before, 500 pods a sync).
    wanted_items = wanted.items()
    for pod in pods:
        labels = (pod.get("metadata") or {}).get("labels") or {}
        if wanted_items <= labels.items():
            fully_labeled += 1
        if podcontrol.is_ready(pod):
            ready += 1
            if min_ready <= 0 or podcontrol.is_available(pod, min_ready, moment):
                available += 1
    conditions = [dict(c) for c in old.get("conditions") or []]
    failure = next((c for c in conditions if c.get("type") == REPLICA_FAILURE), None)
    if manage_error is not None and failure is None:
        diff = len(pods) - replicas_of(rs)
        reason = "FailedCreate" if diff < 0 else "FailedDelete" if diff > 0 else ""
        message = (
            manage_error.message
            if isinstance(manage_error, errors.StatusError)
            else str(manage_error)
        )
        conditions.append(
            _condition(REPLICA_FAILURE, "True", reason, message, podcontrol.format_time(moment))
        )
    elif manage_error is None and failure is not None:
        conditions = [c for c in conditions if c.get("type") != REPLICA_FAILURE]
    status: Obj = {"replicas": len(pods)}
    for field, value in (
        ("fullyLabeledReplicas", fully_labeled),
        ("readyReplicas", ready),
        ("availableReplicas", available),
        ("observedGeneration", old.get("observedGeneration")),
    ):
        if value:
            status[field] = value
    if conditions:
        status["conditions"] = conditions
    return status


def _status_settled(rs: Obj, status: Obj) -> bool:
    """Nothing to write: same counts and conditions, generation already observed."""
    old = rs.get("status") or {}
    generation = (rs.get("metadata") or {}).get("generation") or 0
    fields = ("replicas", "fullyLabeledReplicas", "readyReplicas", "availableReplicas")
    return (
        all((old.get(f) or 0) == (status.get(f) or 0) for f in fields)
        and (old.get("observedGeneration") or 0) == generation
        and (old.get("conditions") or []) == (status.get("conditions") or [])
    )


class ClaimIncomplete(Exception):
    """An orphan that should have been adopted was not (it changed or went
    meanwhile): the sync stops and is retried instead of acting on a partial
    view, as upstream's ``ClaimPods`` errors do."""


async def claim_dependents(
    client: clients.ApiClient,
    owner_resource: clients.ResourceRef,
    resource: clients.ResourceRef,
    owner: Obj,
    candidates: list[Obj],
    selector: selectors.LabelSelector,
) -> list[Obj]:
    """``ownership.claim`` with upstream's safeguards around it.

    Before adopting anything, the owner is read from the API (not the cache):
    an owner already deleted or being deleted must not adopt
    (``RecheckDeletionTimestamp``). And if an adoptable orphan ends up not
    adopted, ``ClaimIncomplete`` is raised: acting on the rest would create a
    replacement for a pod the owner is about to own.
    """
    meta = owner.get("metadata") or {}
    adoptable = [
        c
        for c in candidates
        if ownership.controller_ref(c) is None
        and not podcontrol.is_deleting(c)
        and selector.matches((c.get("metadata") or {}).get("labels") or {})
    ]
    can_adopt = False
    if adoptable and not podcontrol.is_deleting(owner):
        try:
            fresh = await client.get(
                owner_resource, meta.get("namespace", ""), meta.get("name", "")
            )
        except errors.StatusError as err:
            if err.code != 404:
                raise
        else:
            fresh_meta = fresh.get("metadata") or {}
            can_adopt = fresh_meta.get("uid") == meta.get("uid") and not fresh_meta.get(
                "deletionTimestamp"
            )
    claimed = await ownership.claim(
        client, resource, owner, candidates, selector, can_adopt=lambda: can_adopt
    )
    if can_adopt:
        claimed_uids = {(c.get("metadata") or {}).get("uid") for c in claimed}
        missed = [c for c in adoptable if (c.get("metadata") or {}).get("uid") not in claimed_uids]
        if missed:
            names = ", ".join(str((c.get("metadata") or {}).get("name")) for c in missed)
            raise ClaimIncomplete(f"could not adopt {resource} {names}; will retry")
    return claimed


class ReplicaSetController:
    """Keeps each ReplicaSet's pods at ``spec.replicas``; see the module docstring.

    ``start`` subscribes to the factory's shared ReplicaSet and Pod informers
    and runs the workers once their caches are synced (the caller starts the
    factory); ``stop`` ends the workers and unsubscribes.
    """

    RESOURCE: ClassVar[clients.ResourceRef] = REPLICASETS
    NAME: ClassVar[str] = "replicaset-controller"

    def __init__(
        self,
        client: clients.ApiClient,
        factory: informers.InformerFactory,
        *,
        clock: clocks.Clock | None = None,
        recorder: events.EventRecorder | None = None,
        workers: int = 4,
        pod_batch_period: float = POD_BATCH_PERIOD,
    ) -> None:
        self.client = client
        self.factory = factory
        self.clock = clock or clocks.SystemClock()
        self._own_recorder = recorder is None
        self.recorder = recorder or events.EventRecorder(client, self.NAME, self.clock)
        self.burst_replicas = BURST_REPLICAS
        self.pod_batch_period = pod_batch_period
        self.expectations = controllers.Expectations(self.clock)
        self.controller = controllers.Controller(
            self.NAME, self.sync, workers=workers, clock=self.clock
        )
        self._sets: informers.Informer | None = None
        # key -> (resourceVersion before, after) our last status write: that
        # very update needs no sync (the sync that wrote it saw all it shows).
        self._own_writes: dict[str, tuple[str, str]] = {}
        self._pods: informers.Informer | None = None
        self._set_index: podcontrol.OwnerIndex | None = None
        self._pod_index: podcontrol.OwnerIndex | None = None
        self._subscriptions: list[tuple[informers.Informer, informers.EventHandlers]] = []

    # --- kind-specific bits (ReplicationManager overrides) --------------------------

    def selector(self, obj: Obj) -> selectors.LabelSelector:
        return replica_set_selector(obj)

    # --- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        self._sets = self.factory.informer(self.RESOURCE)
        self._pods = self.factory.informer(podcontrol.PODS)
        self._set_index = podcontrol.OwnerIndex.of(self._sets)
        self._pod_index = podcontrol.OwnerIndex.of(self._pods)
        self._subscriptions = [
            (
                self._sets,
                self._sets.add_handlers(self._set_added, self._set_updated, self._set_deleted),
            ),
            (
                self._pods,
                self._pods.add_handlers(self._pod_added, self._pod_updated, self._pod_deleted),
            ),
        ]
        if self._own_recorder:
            self.recorder.start()
        self.controller.start([self._sets, self._pods])

    async def stop(self) -> None:
        await self.controller.stop()
        for informer, handlers in self._subscriptions:
            informer.remove_handlers(handlers)
        self._subscriptions = []
        if self._own_recorder:
            await self.recorder.stop()

    # --- event handlers: they only enqueue -------------------------------------------

    def _typed(self, obj: Obj) -> Obj:
        return clients.copy_with_type(self.RESOURCE, obj)

    def _set_added(self, rs: Obj) -> None:
        self.controller.enqueue(rs)

    def _set_updated(self, old: Obj, new: Obj) -> None:
        versions = (clients.resource_version(old), clients.resource_version(new))
        if versions[0] == versions[1]:
            return
        key = clients.key_of(new)
        if self._own_writes.get(key) == versions:
            # Our own status write coming back: syncing again for it was half
            # of a ramp's syncs, each reading every pod of the set.
            del self._own_writes[key]
            return
        self.controller.enqueue(new)

    def _set_deleted(self, rs: Obj) -> None:
        key = clients.key_of(rs)
        self.expectations.forget(key)
        self._own_writes.pop(key, None)
        self.controller.enqueue(rs)

    def _resolve(self, namespace: str, ref: Obj) -> Obj | None:
        """The owner a controller reference names, if it is one of ours and the
        very object (same uid), not a namesake created since."""
        if ref.get("kind") != self.RESOURCE.kind or self._sets is None:
            return None
        found = self._sets.get(f"{namespace}/{ref.get('name', '')}")
        if found is None or (found.get("metadata") or {}).get("uid") != ref.get("uid"):
            return None
        return found

    def _matching_sets(self, pod: Obj) -> list[Obj]:
        """The sets whose selector matches an orphan pod: they may adopt it."""
        if self._sets is None:
            return []
        meta = pod.get("metadata") or {}
        labels = meta.get("labels") or {}
        found = []
        for rs in self._sets.objects(meta.get("namespace", "")):
            try:
                selector = self.selector(rs)
            except errors.StatusError:
                continue
            if not selector.empty and selector.matches(labels):
                found.append(rs)
        return found

    def _pod_added(self, pod: Obj) -> None:
        if podcontrol.is_deleting(pod):
            # A restarted controller may see a pod already being deleted: that
            # is an observed deletion, not a creation.
            self._pod_deleted(pod)
            return
        namespace = (pod.get("metadata") or {}).get("namespace", "")
        ref = ownership.controller_ref(pod)
        if ref is not None:
            rs = self._resolve(namespace, ref)
            if rs is not None:
                key = clients.key_of(rs)
                self.expectations.creation_observed(key)
                self.controller.queue.add_after(key, self.pod_batch_period)
            return
        for rs in self._matching_sets(pod):
            self.controller.enqueue(rs)

    def _pod_updated(self, old: Obj, new: Obj) -> None:
        if clients.resource_version(old) == clients.resource_version(new):
            return
        namespace = (new.get("metadata") or {}).get("namespace", "")
        labels_changed = (old.get("metadata") or {}).get("labels") != (
            new.get("metadata") or {}
        ).get("labels")
        if podcontrol.is_deleting(new):
            # Deletion is observed when it starts (the pod stops counting), not
            # only when the object finally goes.
            self._pod_deleted(new)
            if labels_changed:
                self._pod_deleted(old)
            return
        new_ref, old_ref = ownership.controller_ref(new), ownership.controller_ref(old)
        ref_changed = (new_ref or {}).get("uid") != (old_ref or {}).get("uid")
        if ref_changed and old_ref is not None:
            previous = self._resolve(namespace, old_ref)
            if previous is not None:
                self.controller.enqueue(previous)
        if new_ref is not None:
            rs = self._resolve(namespace, new_ref)
            if rs is None:
                return
            self.controller.enqueue_after(rs, self.pod_batch_period)
            min_ready = min_ready_seconds_of(rs)
            if min_ready > 0 and not podcontrol.is_ready(old) and podcontrol.is_ready(new):
                # Look again once the pod has been ready long enough to count as
                # available: nothing else will happen to wake us then.
                self.controller.enqueue_after(rs, min_ready + 1)
            return
        if labels_changed or ref_changed:
            for rs in self._matching_sets(new):
                self.controller.enqueue(rs)

    def _pod_deleted(self, pod: Obj) -> None:
        ref = ownership.controller_ref(pod)
        if ref is None:
            return
        meta = pod.get("metadata") or {}
        rs = self._resolve(meta.get("namespace", ""), ref)
        if rs is None:
            return
        key = clients.key_of(rs)
        self.expectations.deletion_observed(key, str(meta.get("uid") or ""))
        self.controller.queue.add(key)

    # --- sync --------------------------------------------------------------------------

    async def sync(self, key: str) -> None:
        """Converge one set: claim, create or delete the difference, write status."""
        cached = self._sets.get(key) if self._sets is not None else None
        if cached is None:
            self.expectations.forget(key)
            return
        rs = self._typed(values.clone(cached))
        needs_sync = self.expectations.satisfied(key)
        if not needs_sync:
            # Upstream's periodic resync looks again once expectations expire;
            # without one, an event that never came would leave the set short.
            self.controller.queue.add_after(key, self.expectations.timeout + 1)
        try:
            selector = self.selector(rs)
        except errors.StatusError as err:
            # A selector the API should have refused: retrying cannot help.
            log.warning("%s: %s has an invalid selector: %s", self.NAME, key, err.message)
            return
        meta = rs.get("metadata") or {}
        assert self._pod_index is not None
        candidates = [
            p
            for p in self._pod_index.candidates(meta.get("namespace", ""), meta.get("uid", ""))
            if podcontrol.is_active(p)
        ]
        pods = await self._claim(rs, selector, candidates)
        manage_error: BaseException | None = None
        if needs_sync and not podcontrol.is_deleting(rs):
            try:
                await self._manage(key, rs, pods)
            except asyncio.CancelledError:
                raise
            except Exception as err:
                manage_error = err
        status = calculate_status(rs, pods, manage_error, self.clock.now())
        updated = await self._update_status(rs, status)
        updated_status = updated.get("status") or {}
        replicas = replicas_of(updated)
        if (
            manage_error is None
            and min_ready_seconds_of(updated) > 0
            and (updated_status.get("readyReplicas") or 0) == replicas
            and (updated_status.get("availableReplicas") or 0) != replicas
        ):
            # A last line of defence, as upstream: look again when the ready
            # pods should have become available.
            self.controller.queue.add_after(key, min_ready_seconds_of(updated))
        if manage_error is not None:
            raise manage_error

    async def _claim(
        self, rs: Obj, selector: selectors.LabelSelector, pods: list[Obj]
    ) -> list[Obj]:
        return await claim_dependents(
            self.client, self.RESOURCE, podcontrol.PODS, rs, pods, selector
        )

    async def _manage(self, key: str, rs: Obj, pods: list[Obj]) -> None:
        diff = len(pods) - replicas_of(rs)
        if diff < 0:
            count = min(-diff, self.burst_replicas)
            # Expect before creating: the informer may report a pod before the
            # create call returns.
            self.expectations.expect_creations(key, count)
            template = (rs.get("spec") or {}).get("template") or {}

            async def create_one() -> None:
                try:
                    await podcontrol.create_pod(self.client, template, rs, self.recorder)
                except errors.StatusError as err:
                    if not podcontrol.namespace_terminating(err):
                        raise

            successes, error = await podcontrol.slow_start_batch(
                count, podcontrol.SLOW_START_INITIAL_BATCH, create_one
            )
            if successes < count:
                # Pods never created will never be observed.
                self.expectations.lower_expectations(key, adds=count - successes)
            if error is not None:
                raise error
        elif diff > 0:
            count = min(diff, self.burst_replicas)
            victims = podcontrol.deletion_order(pods, self._related_pods(rs))[:count]
            uids = [str((p.get("metadata") or {}).get("uid") or "") for p in victims]
            self.expectations.expect_deletions_of(key, uids)
            results = await asyncio.gather(
                *(podcontrol.delete_pod(self.client, p, rs, self.recorder) for p in victims),
                return_exceptions=True,
            )
            first: BaseException | None = None
            for uid, result in zip(uids, results, strict=True):
                if isinstance(result, BaseException):
                    # A deletion that did not happen will not be observed.
                    self.expectations.deletion_observed(key, uid)
                    if isinstance(result, asyncio.CancelledError):
                        raise result
                    not_found = isinstance(result, errors.StatusError) and result.code == 404
                    if not not_found and first is None:
                        first = result
            if first is not None:
                raise first

    def _related_pods(self, rs: Obj) -> list[Obj]:
        """The active pods of every set sharing this set's controller (the other
        ReplicaSets of its Deployment), for spreading deletions across zones."""
        assert self._set_index is not None and self._pod_index is not None
        ref = ownership.controller_ref(rs)
        siblings = self._set_index.owned_by(str(ref.get("uid"))) if ref else [rs]
        related: list[Obj] = []
        for sibling in siblings:
            uid = str((sibling.get("metadata") or {}).get("uid") or "")
            related.extend(p for p in self._pod_index.owned_by(uid) if podcontrol.is_active(p))
        return related

    async def _update_status(self, rs: Obj, status: Obj) -> Obj:
        """Write the status if it changed, saving the generation it was computed
        for (upstream ``updateReplicaSetStatus``: one retry on a fresh copy)."""
        if _status_settled(rs, status):
            return rs
        status = dict(status)
        generation = (rs.get("metadata") or {}).get("generation")
        if generation:
            status["observedGeneration"] = generation
        current = rs
        for attempt in range(STATUS_UPDATE_RETRIES + 1):
            try:
                written = await self.client.update_status(
                    self.RESOURCE, dict(current, status=status)
                )
                self._own_writes[clients.key_of(written)] = (
                    clients.resource_version(current),
                    clients.resource_version(written),
                )
                return written
            except errors.StatusError as err:
                if err.code == 404:
                    return rs  # deleted meanwhile: the delete event requeues it
                if err.code != 409 or attempt >= STATUS_UPDATE_RETRIES:
                    raise
            meta = rs.get("metadata") or {}
            current = await self.client.get(
                self.RESOURCE, meta.get("namespace", ""), meta.get("name", "")
            )
        raise AssertionError("unreachable")


class ReplicationManager(ReplicaSetController):
    """ReplicationControllers (core/v1): ReplicaSets with a plain-map selector,
    run by the same logic, as upstream's ReplicationManager is."""

    RESOURCE: ClassVar[clients.ResourceRef] = REPLICATIONCONTROLLERS
    NAME: ClassVar[str] = "replication-controller"

    def selector(self, obj: Obj) -> selectors.LabelSelector:
        return replication_controller_selector(obj)
