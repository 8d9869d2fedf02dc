"""PodDisruptionBudgets: their status, and the eviction decision that reads it
(upstream's pkg/controller/disruption and the pods/eviction REST handler).

The controller keeps each budget's status current — how many selected pods
are healthy, how many must stay healthy, how many disruptions that allows —
because ``pods/eviction`` decides from that status alone, inside one request,
without counting pods itself. The expected number of pods comes from the
scale of the pods' controllers (a Deployment through its ReplicaSet, a
ReplicaSet, ReplicationController or StatefulSet, or anything with a
``scale`` subresource), which matters for percentages and ``maxUnavailable``:
a budget must not relax because pods are missing. A pod without a controller
counts as one expected pod.

``eviction_allowed`` is the eviction handler's decision as a pure function,
so the apiserver can call it (see the module's report for the wiring): it
either refuses with upstream's 429 "Cannot evict pod as it would violate the
pod's disruption budget.", or allows the eviction together with the budget to
write back first — disruptionsAllowed decremented and the pod recorded in
``status.disruptedPods``, so that concurrent evictions and this controller do
not count it as healthy while it is being deleted.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from nodeless import clocks
from nodeless.api import disruptionbudgets, errors, values
from nodeless.client import clients, controllers, events, informers
from nodeless.controllers import ownership

log = logging.getLogger(__name__)

Obj = dict[str, Any]

PDBS = clients.ResourceRef("policy", "v1", "poddisruptionbudgets", True, "PodDisruptionBudget")
PODS = clients.ResourceRef("", "v1", "pods", True, "Pod")
REPLICA_SETS = clients.ResourceRef("apps", "v1", "replicasets", True, "ReplicaSet")
DEPLOYMENTS = clients.ResourceRef("apps", "v1", "deployments", True, "Deployment")
STATEFUL_SETS = clients.ResourceRef("apps", "v1", "statefulsets", True, "StatefulSet")
REPLICATION_CONTROLLERS = clients.ResourceRef(
    "", "v1", "replicationcontrollers", True, "ReplicationController"
)
CRDS = clients.ResourceRef(
    "apiextensions.k8s.io", "v1", "customresourcedefinitions", False, "CustomResourceDefinition"
)

CONFLICT_RECHECK = 1.0


def _pod_relevant(pod: Mapping[str, Any]) -> tuple[Any, ...]:
    meta = pod.get("metadata") or {}
    return (
        meta.get("labels"),
        bool(meta.get("deletionTimestamp")),
        disruptionbudgets.pod_ready(pod),
        str((ownership.controller_ref(dict(pod)) or {}).get("uid") or ""),
    )


def _cached(informer: informers.Informer, namespace: str, ref: Mapping[str, Any]) -> Obj | None:
    """The cached object a reference names, if it is still that object."""
    found = informer.get(f"{namespace}/{ref.get('name', '')}")
    if found is None or (found.get("metadata") or {}).get("uid") != ref.get("uid"):
        return None
    return found


class DisruptionController:
    """Keeps every PodDisruptionBudget's status current."""

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
        self.factory = factory
        self.clock = clock or factory.clock or clocks.SystemClock()
        self.recorder = recorder
        self.budgets = factory.informer(PDBS)
        self.pods = factory.informer(PODS)
        self.replica_sets = factory.informer(REPLICA_SETS)
        self.deployments = factory.informer(DEPLOYMENTS)
        self.stateful_sets = factory.informer(STATEFUL_SETS)
        self.replication_controllers = factory.informer(REPLICATION_CONTROLLERS)
        self.controller = controllers.Controller(
            "disruption", self.sync, workers=workers, clock=self.clock
        )
        self._subscriptions: list[tuple[informers.Informer, informers.EventHandlers]] = []

    async def start(self) -> None:
        self._subscriptions = [
            (
                self.budgets,
                self.budgets.add_handlers(
                    self.controller.enqueue,
                    lambda _old, new: self.controller.enqueue(new),
                ),
            ),
            (
                self.pods,
                self.pods.add_handlers(self._pod_changed, self._pod_updated, self._pod_changed),
            ),
        ]
        self.factory.start()
        self.controller.start(
            [
                self.budgets,
                self.pods,
                self.replica_sets,
                self.deployments,
                self.stateful_sets,
                self.replication_controllers,
            ]
        )

    async def stop(self) -> None:
        await self.controller.stop()
        for informer, handlers in self._subscriptions:
            informer.remove_handlers(handlers)
        self._subscriptions = []

    def budgets_for(self, pod: Mapping[str, Any]) -> list[str]:
        namespace = str((pod.get("metadata") or {}).get("namespace") or "")
        return [
            clients.key_of(p)
            for p in self.budgets.objects(namespace)
            if disruptionbudgets.selects(p, pod)
        ]

    def _pod_changed(self, pod: clients.Object) -> None:
        for key in self.budgets_for(pod):
            self.controller.queue.add(key)

    def _pod_updated(self, old: clients.Object, new: clients.Object) -> None:
        if _pod_relevant(old) == _pod_relevant(new):
            return
        for key in set(self.budgets_for(old)) | set(self.budgets_for(new)):
            self.controller.queue.add(key)

    async def sync(self, key: str) -> None:
        pdb = self.budgets.get(key)
        if pdb is None:
            return
        now = self.clock.now()
        namespace = str(pdb["metadata"].get("namespace") or "")
        selector = disruptionbudgets.budget_selector(pdb)
        pods = [
            p
            for p in self.pods.objects(namespace)
            if selector.matches((p.get("metadata") or {}).get("labels") or {})
        ]
        spec = pdb.get("spec") or {}
        recheck: datetime.datetime | None = None
        try:
            scale = await self.expected_scale(pods) if disruptionbudgets.needs_scale(spec) else 0
            expected, desired = disruptionbudgets.expected_and_desired(spec, len(pods), scale)
            disrupted, recheck = disruptionbudgets.disrupted_pods(pdb, pods, now)
            status = disruptionbudgets.budget_status(
                pdb,
                healthy=disruptionbudgets.current_healthy(pods, disrupted, now),
                desired=desired,
                expected=expected,
                disrupted=disrupted,
                now=now,
            )
        except (ValueError, errors.StatusError) as err:
            message = err.message if isinstance(err, errors.StatusError) else str(err)
            log.warning("disruption budget %s: %s", key, message)
            status = disruptionbudgets.failed_status(pdb, message, now)
        if status != (pdb.get("status") or {}):
            updated = values.clone(pdb)
            updated["status"] = status
            try:
                await self.client.update_status(PDBS, updated)
            except errors.StatusError as err:
                if err.code not in (404, 409):
                    raise
                # Behind the store: the budget's next event queues it again.
                self.controller.queue.add_after(key, CONFLICT_RECHECK)
                return
        if recheck is not None:
            self.controller.queue.add_after(key, max(0.0, (recheck - now).total_seconds()))

    async def expected_scale(self, pods: Iterable[Mapping[str, Any]]) -> int:
        """The sum of the scales of the pods' controllers, each counted once; a
        pod whose controller has no scale (or none at all) counts as one."""
        scales: dict[str, int] = {}
        unmanaged = 0
        for pod in pods:
            ref = ownership.controller_ref(dict(pod))
            namespace = str((pod.get("metadata") or {}).get("namespace") or "")
            found = await self._controller_scale(ref, namespace) if ref else None
            if found is None:
                unmanaged += 1
                continue
            uid, replicas = found
            scales[uid] = replicas
        return sum(scales.values()) + unmanaged

    async def _controller_scale(self, ref: Obj, namespace: str) -> tuple[str, int] | None:
        """(uid, replicas) of the controller behind ``ref``, from the caches for
        the built-in workload kinds; a ReplicaSet of a Deployment stands for the
        Deployment, as upstream's finders."""
        group = str(ref.get("apiVersion") or "").rpartition("/")[0]
        kind = str(ref.get("kind") or "")
        informer = {
            ("apps", "ReplicaSet"): self.replica_sets,
            ("apps", "StatefulSet"): self.stateful_sets,
            ("", "ReplicationController"): self.replication_controllers,
        }.get((group, kind))
        if informer is None:
            return await self._scale_subresource(ref, namespace)
        found = _cached(informer, namespace, ref)
        if found is None:
            return None
        if kind == "ReplicaSet":
            owner = ownership.controller_ref(found)
            if owner is not None and owner.get("kind") == "Deployment":
                found = _cached(self.deployments, namespace, owner)
                if found is None:
                    return None
        replicas = (found.get("spec") or {}).get("replicas")
        return str(found["metadata"]["uid"]), int(replicas if replicas is not None else 1)

    async def _scale_subresource(self, ref: Obj, namespace: str) -> tuple[str, int] | None:
        """Any other controller, through its ``scale`` subresource (custom
        resources resolved from their CRD)."""
        api_version = str(ref.get("apiVersion") or "")
        kind = str(ref.get("kind") or "")
        try:
            resource = clients.resolve(api_version, kind)
        except LookupError:
            found = await self._custom_resource(api_version, kind)
            if found is None:
                return None
            resource = found
        try:
            scale = await self.client.get_subresource(
                resource, namespace, str(ref.get("name") or ""), "scale"
            )
        except errors.StatusError as err:
            if err.code in (404, 405):
                return None  # gone, or nothing to scale (a Job, a bare owner)
            raise
        if (scale.get("metadata") or {}).get("uid") != ref.get("uid"):
            return None
        return str(ref.get("uid")), int((scale.get("spec") or {}).get("replicas") or 0)

    async def _custom_resource(self, api_version: str, kind: str) -> clients.ResourceRef | None:
        group, _, version = api_version.rpartition("/")
        for crd in (await self.client.list(CRDS)).items:
            spec = crd.get("spec") or {}
            names = spec.get("names") or {}
            if spec.get("group") == group and names.get("kind") == kind:
                return clients.ResourceRef(
                    group,
                    version,
                    str(names.get("plural") or ""),
                    spec.get("scope", "Namespaced") == "Namespaced",
                    kind,
                )
        return None
