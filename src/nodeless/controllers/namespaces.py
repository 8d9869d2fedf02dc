"""Namespace lifecycle: emptying a namespace that is being deleted, then
releasing it (upstream's pkg/controller/namespace).

Deleting a Namespace only marks it: the apiserver sets deletionTimestamp and
phase Terminating and keeps the object while ``spec.finalizers`` holds
``kubernetes``. This controller then deletes every namespaced object in it —
all built-in namespaced resources and every namespaced custom resource the
CRDs define at that moment — waits until nothing is left (objects with
finalizers, or pods in graceful termination, take their time), reporting why
in the upstream status conditions, and finally calls
``PUT /api/v1/namespaces/<name>/finalize`` without ``kubernetes`` so the
apiserver removes the namespace (which is what ``kubectl delete namespace``
waits for).

Like upstream it speaks to the API directly (list and delete per resource)
instead of caching every resource: namespaces are deleted rarely, and a
fresh list is the only reliable way to know nothing remains.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from nodeless import clocks
from nodeless.api import errors, kinds, times, values
from nodeless.client import clients, controllers, events, informers
from nodeless.controllers import garbagecollection

log = logging.getLogger(__name__)

Obj = dict[str, Any]

NAMESPACES = clients.ResourceRef("", "v1", "namespaces", False, "Namespace")
FINALIZER = "kubernetes"
COMPONENT = "namespace-controller"
CONTENT_VERBS = frozenset({"list", "delete"})
# Instance records belong to the instance manager, which needs each one until
# its pod is gone (and removes it then); they are deleted after the pods.
AFTER_PODS = frozenset({("nodeless.dev", "instances")})
# How pods are named in ContentReport.remaining.
PODS_REMAINING = "pods."

# Re-checking a namespace whose content is still going away.
RECHECK_INITIAL = 0.25
RECHECK_MAX = 5.0

DISCOVERY_FAILURE = "NamespaceDeletionDiscoveryFailure"
GROUP_VERSION_PARSING_FAILURE = "NamespaceDeletionGroupVersionParsingFailure"
CONTENT_FAILURE = "NamespaceDeletionContentFailure"
CONTENT_REMAINING = "NamespaceContentRemaining"
FINALIZERS_REMAINING = "NamespaceFinalizersRemaining"
CONDITION_TYPES = (
    DISCOVERY_FAILURE,
    GROUP_VERSION_PARSING_FAILURE,
    CONTENT_FAILURE,
    CONTENT_REMAINING,
    FINALIZERS_REMAINING,
)
# The "all is well" variant of each condition, as upstream reports them.
_OK = {
    DISCOVERY_FAILURE: ("ResourcesDiscovered", "All resources successfully discovered"),
    GROUP_VERSION_PARSING_FAILURE: (
        "ParsedGroupVersions",
        "All legacy kube types successfully parsed",
    ),
    CONTENT_FAILURE: (
        "ContentDeleted",
        "All content successfully deleted, may be waiting on finalization",
    ),
    CONTENT_REMAINING: ("ContentRemoved", "All content successfully removed"),
    FINALIZERS_REMAINING: ("ContentHasNoFinalizers", "All content-preserving finalizers finished"),
}


@dataclass
class ContentReport:
    """What one pass over a namespace found: failures and what is left."""

    discovery_errors: list[str] = field(default_factory=list)
    content_errors: list[str] = field(default_factory=list)
    # "<plural>.<group>" → objects still present.
    remaining: dict[str, int] = field(default_factory=dict)
    # finalizer → objects still carrying it.
    finalizers: dict[str, int] = field(default_factory=dict)

    @property
    def done(self) -> bool:
        return not self.remaining and not self.content_errors and not self.discovery_errors

    def conditions(self) -> dict[str, tuple[str, str, str]]:
        """Condition type → (status, reason, message) for the problems found."""
        out: dict[str, tuple[str, str, str]] = {}
        if self.discovery_errors:
            out[DISCOVERY_FAILURE] = (
                "True",
                "DiscoveryFailed",
                f"Discovery failed for some groups, {len(self.discovery_errors)} failing: "
                + "; ".join(sorted(self.discovery_errors)),
            )
        if self.content_errors:
            out[CONTENT_FAILURE] = (
                "True",
                "ContentDeletionFailed",
                "Failed to delete all resource types, "
                f"{len(self.content_errors)} remaining: " + ", ".join(sorted(self.content_errors)),
            )
        if self.remaining:
            parts = sorted(f"{r} has {n} resource instances" for r, n in self.remaining.items())
            out[CONTENT_REMAINING] = (
                "True",
                "SomeResourcesRemain",
                "Some resources are remaining: " + ", ".join(parts),
            )
        if self.finalizers:
            parts = sorted(f"{f} in {n} resource instances" for f, n in self.finalizers.items())
            out[FINALIZERS_REMAINING] = (
                "True",
                "SomeFinalizersRemain",
                "Some content in the namespace has finalizers remaining: " + ", ".join(parts),
            )
        return out


def updated_conditions(
    current: Iterable[Mapping[str, Any]], report: ContentReport, now: str
) -> list[Obj] | None:
    """The namespace's conditions after ``report``, or None when unchanged.

    Every upstream deletion condition is present, in its failing or its
    "all is well" form; a condition's lastTransitionTime moves only when its
    status, reason or message does, as upstream's condition updater.
    """
    conditions = [dict(c) for c in current]
    by_type = {c.get("type"): c for c in conditions}
    problems = report.conditions()
    changed = False
    for ctype in CONDITION_TYPES:
        status, reason, message = problems.get(ctype) or ("False", *_OK[ctype])
        old = by_type.get(ctype)
        if old is None:
            conditions.append(
                {
                    "type": ctype,
                    "status": status,
                    "lastTransitionTime": now,
                    "reason": reason,
                    "message": message,
                }
            )
            changed = True
        elif (old.get("status"), old.get("reason"), old.get("message")) != (
            status,
            reason,
            message,
        ):
            old.update(status=status, reason=reason, message=message, lastTransitionTime=now)
            changed = True
    return conditions if changed else None


def _qualified(resource: clients.ResourceRef) -> str:
    # Upstream writes "<resource>.<group>", so core kinds read "pods." — kept as is.
    return f"{resource.plural}.{resource.group}"


class NamespaceController:
    """Deletes the content of terminating namespaces, then finalizes them."""

    def __init__(
        self,
        client: clients.ApiClient,
        factory: informers.InformerFactory,
        *,
        clock: clocks.Clock | None = None,
        recorder: events.EventRecorder | None = None,
        workers: int = 2,
        registry: kinds.Registry | None = None,
    ) -> None:
        self.client = client
        self.factory = factory
        self.clock = clock or factory.clock or clocks.SystemClock()
        self.recorder = recorder
        self._builtin = [
            r
            for r in garbagecollection.builtin_resources(registry, verbs=CONTENT_VERBS, ignored=())
            if r.namespaced
        ]
        self.namespaces = factory.informer(NAMESPACES)
        self.controller = controllers.Controller(
            "namespace", self.sync, workers=workers, clock=self.clock
        )
        self._rechecks: dict[str, float] = {}
        self._handlers: informers.EventHandlers | None = None

    async def start(self) -> None:
        self._handlers = self.namespaces.add_handlers(
            self._enqueue_if_deleting,
            lambda _old, new: self._enqueue_if_deleting(new),
            self._forget,
        )
        self.factory.start()
        self.controller.start([self.namespaces])

    async def stop(self) -> None:
        await self.controller.stop()
        if self._handlers is not None:
            self.namespaces.remove_handlers(self._handlers)
            self._handlers = None

    def _forget(self, ns: Mapping[str, Any]) -> None:
        self._rechecks.pop(clients.key_of(ns), None)

    def _enqueue_if_deleting(self, ns: Mapping[str, Any]) -> None:
        if (ns.get("metadata") or {}).get("deletionTimestamp"):
            self.controller.queue.add(clients.key_of(ns))

    # --- sync -------------------------------------------------------------------------

    async def sync(self, name: str) -> None:
        cached = self.namespaces.get(name)
        if cached is None or not (cached.get("metadata") or {}).get("deletionTimestamp"):
            self._rechecks.pop(name, None)
            return
        try:
            ns = await self.client.get(NAMESPACES, "", name)
        except errors.StatusError as err:
            if err.code == 404:
                self._rechecks.pop(name, None)
                return
            raise
        if not ns["metadata"].get("deletionTimestamp"):
            return
        if FINALIZER not in ((ns.get("spec") or {}).get("finalizers") or ()):
            self._rechecks.pop(name, None)
            return  # already finalized by us; other finalizers are not ours
        report = await self.delete_content(name)
        await self._write_conditions(ns, report)
        if not report.done:
            delay = self._rechecks.get(name, RECHECK_INITIAL / 2) * 2
            delay = min(delay, RECHECK_MAX)
            self._rechecks[name] = delay
            log.info("namespace %s: content remains (%s); rechecking", name, report.remaining)
            self.controller.queue.add_after(name, delay)
            return
        self._rechecks.pop(name, None)
        await self._finalize(ns)

    async def _resources(self, report: ContentReport) -> list[clients.ResourceRef]:
        """Every namespaced resource that can be listed and deleted, custom ones
        read from the CRDs now (a CRD created a moment ago counts)."""
        resources = list(self._builtin)
        try:
            crds = await self.client.list(garbagecollection.CRDS)
        except errors.StatusError as err:
            report.discovery_errors.append(f"{garbagecollection.CRDS}: {err.message}")
        else:
            resources += [r for r in garbagecollection.custom_resources(crds.items) if r.namespaced]
        return resources

    async def delete_content(self, namespace: str) -> ContentReport:
        """One pass: delete everything in the namespace (Background propagation),
        then count what is still there and which finalizers hold it."""
        report = ContentReport()
        resources = await self._resources(report)
        ordered = [r for r in resources if (r.group, r.plural) not in AFTER_PODS]
        deferred = [r for r in resources if (r.group, r.plural) in AFTER_PODS]
        for resource in ordered:
            await self._delete_resource(namespace, resource, report)
        pods_left = PODS_REMAINING in report.remaining
        for resource in deferred:
            await self._delete_resource(namespace, resource, report, delete=not pods_left)
        return report

    async def _delete_resource(
        self,
        namespace: str,
        resource: clients.ResourceRef,
        report: ContentReport,
        *,
        delete: bool = True,
    ) -> None:
        try:
            items = await self._list(resource, namespace)
            if not items:
                return
            if delete:
                for item in items:
                    await self._delete(resource, item)
                items = await self._list(resource, namespace)
        except errors.StatusError as err:
            report.content_errors.append(f"{_qualified(resource)}: {err.message}")
            return
        if not items:
            return
        report.remaining[_qualified(resource)] = len(items)
        for item in items:
            for finalizer in (item.get("metadata") or {}).get("finalizers") or ():
                report.finalizers[finalizer] = report.finalizers.get(finalizer, 0) + 1

    async def _list(self, resource: clients.ResourceRef, namespace: str) -> list[Obj]:
        try:
            return (await self.client.list(resource, namespace)).items
        except errors.StatusError as err:
            if err.code in (404, 405):
                return []  # not served (any more): nothing of it can remain
            raise

    async def _delete(self, resource: clients.ResourceRef, item: Mapping[str, Any]) -> None:
        meta = item.get("metadata") or {}
        if meta.get("deletionTimestamp"):
            return  # already going; its finalizers or grace period decide when
        options = clients.DeleteOptions(
            propagation_policy="Background",
            preconditions=clients.Preconditions(uid=str(meta.get("uid") or "")),
        )
        try:
            await self.client.delete(
                resource, str(meta.get("namespace") or ""), str(meta.get("name") or ""), options
            )
        except errors.StatusError as err:
            if err.code not in (404, 409):
                raise

    async def _write_conditions(self, ns: Obj, report: ContentReport) -> None:
        now = times.rfc3339(self.clock.now())
        status = ns.get("status") or {}
        conditions = updated_conditions(status.get("conditions") or (), report, now)
        if conditions is None:
            return
        updated = values.clone(ns)
        updated.setdefault("status", {})["conditions"] = conditions
        try:
            await self.client.update_status(NAMESPACES, updated)
        except errors.StatusError as err:
            # A conflict or a namespace already gone: the next pass writes again.
            log.info("namespace %s: could not update conditions: %s", ns["metadata"]["name"], err)

    async def _finalize(self, ns: Obj) -> None:
        finalized = values.clone(ns)
        spec = finalized.setdefault("spec", {})
        spec["finalizers"] = [f for f in spec.get("finalizers") or () if f != FINALIZER]
        try:
            await self.client.update_subresource(
                NAMESPACES, "", ns["metadata"]["name"], "finalize", finalized
            )
        except errors.StatusError as err:
            if err.code != 404:
                raise
        log.info("namespace %s: content removed, finalized", ns["metadata"]["name"])
