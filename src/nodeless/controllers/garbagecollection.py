"""The garbage collector: deletes dependents whose owners are gone, and carries
out Foreground and Orphan deletion (upstream's pkg/controller/garbagecollector).

The apiserver only *marks* a Foreground or Orphan deletion (the
``foregroundDeletion`` / ``orphan`` finalizer) and removes a Background-deleted
owner at once; everything after that is this controller's job, as upstream.

It keeps a graph of ``ownerReferences`` over every resource that can be
listed, watched and deleted: the built-ins of ``kinds.Registry`` and the
custom resources CRDs define (re-discovered whenever a CRD changes). The graph
comes from informers and may lag behind the store, so it is only trusted to
*spare* an object: before deleting a dependent the collector reads the
dependent and each of its owners live, by name, and compares uids (upstream's
"virtual node" check). A dependent is deleted with Background propagation when
none of its owners exists; an owner that is itself being deleted in the
foreground makes its dependents go in the foreground too. A namespaced
dependent can only be owned by a cluster-scoped object or by one in its own
namespace: a reference across namespaces is looked up in the dependent's
namespace, finds nothing there and so counts as absent, as upstream.

Two queues, as upstream: ``attemptToDelete`` (dependents to check, and
owners waiting for their dependents) and ``attemptToOrphan`` (owners whose
dependents must drop the reference to them).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from nodeless import clocks
from nodeless.api import errors, kinds
from nodeless.client import clients, controllers, events, informers

log = logging.getLogger(__name__)

Obj = dict[str, Any]

FOREGROUND = "foregroundDeletion"
ORPHAN = "orphan"
COMPONENT = "garbage-collector-controller"

CRDS = clients.ResourceRef(
    "apiextensions.k8s.io", "v1", "customresourcedefinitions", False, "CustomResourceDefinition"
)
# Events are many and never own anything; upstream's collector ignores them too.
IGNORED = frozenset({("", "events"), ("events.k8s.io", "events")})
# Verbs a resource needs for the collector to track it.
TRACKED_VERBS = frozenset({"list", "watch", "delete"})

_CONFLICT_RETRIES = 5
_ABSENT_CACHE_SIZE = 1000


# --- discovery ------------------------------------------------------------------------


def builtin_resources(
    registry: kinds.Registry | None = None,
    *,
    verbs: Iterable[str] = TRACKED_VERBS,
    ignored: Iterable[tuple[str, str]] = IGNORED,
) -> list[clients.ResourceRef]:
    """The built-in resources that support ``verbs``, each stored collection once.

    A collection served at several versions (HorizontalPodAutoscaler at v1 and
    v2, Events at core/v1 and events.k8s.io/v1) is listed at the version it is
    stored in, so that no object is seen twice under two names.
    """
    wanted = frozenset(verbs)
    skip = frozenset(ignored)
    out: list[clients.ResourceRef] = []
    seen: set[tuple[str, str]] = set()
    for resource in registry or kinds.Registry():
        if resource.virtual or resource.custom or not wanted <= set(resource.verbs):
            continue
        if (resource.group, resource.plural) in skip:
            continue
        if resource.storage_version and resource.storage_version != resource.version:
            continue
        if resource.storage_group and resource.storage_group != (resource.group or "core"):
            continue  # another group's objects under a second name
        identity = (resource.key_group, resource.key_plural)
        if identity in seen:
            continue
        seen.add(identity)
        out.append(clients.ResourceRef.of(resource))
    return out


def custom_resources(crds: Iterable[Mapping[str, Any]]) -> list[clients.ResourceRef]:
    """The resource each CRD serves, at its storage version when that is served
    (else its first served version); CRDs that would shadow a built-in are not
    served by the apiserver and are skipped here too."""
    builtin = {(r.group, r.plural) for r in kinds.BUILTIN}
    out: list[clients.ResourceRef] = []
    for crd in crds:
        spec = crd.get("spec") or {}
        names = spec.get("names") or {}
        group, plural, kind = spec.get("group", ""), names.get("plural", ""), names.get("kind", "")
        if not (group and plural and kind) or (group, plural) in builtin:
            continue
        served = [v for v in spec.get("versions") or [] if v.get("served", True) and v.get("name")]
        if not served:
            continue
        chosen = next((v for v in served if v.get("storage")), served[0])
        namespaced = spec.get("scope", "Namespaced") == "Namespaced"
        out.append(clients.ResourceRef(group, chosen["name"], plural, namespaced, kind))
    return out


# --- the graph --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Node:
    """What the collector knows of one object: where it is and whom it names."""

    resource: clients.ResourceRef
    namespace: str
    name: str
    uid: str
    owners: tuple[Obj, ...]
    deleting: bool
    finalizers: frozenset[str]

    @classmethod
    def of(cls, resource: clients.ResourceRef, obj: Mapping[str, Any]) -> _Node:
        meta = obj.get("metadata") or {}
        return cls(
            resource=resource,
            namespace=str(meta.get("namespace") or ""),
            name=str(meta.get("name") or ""),
            uid=str(meta.get("uid") or ""),
            owners=tuple(
                dict(r) for r in meta.get("ownerReferences") or () if isinstance(r, Mapping)
            ),
            deleting=bool(meta.get("deletionTimestamp")),
            finalizers=frozenset(meta.get("finalizers") or ()),
        )

    @property
    def deleting_dependents(self) -> bool:
        return self.deleting and FOREGROUND in self.finalizers

    @property
    def orphaning(self) -> bool:
        return self.deleting and ORPHAN in self.finalizers

    def owner_uids(self) -> set[str]:
        return {str(r.get("uid") or "") for r in self.owners}

    def blocks(self, owner_uid: str) -> bool:
        """Whether this dependent holds up a foreground deletion of that owner."""
        return any(r.get("uid") == owner_uid and r.get("blockOwnerDeletion") for r in self.owners)

    def __str__(self) -> str:
        where = f"{self.namespace}/" if self.namespace else ""
        return f"{self.resource.kind or self.resource.plural} {where}{self.name} ({self.uid})"


class UnknownOwnerKind(Exception):
    """An owner reference names a kind nothing serves (yet): retried with backoff,
    since a CRD may be about to define it."""


class _InvalidReference(Exception):
    """A cluster-scoped dependent names a namespaced owner: never resolvable."""


def _ref_text(ref: Mapping[str, Any], namespace: str) -> str:
    return (
        f"[{ref.get('apiVersion', '')}/{ref.get('kind', '')}, namespace: {namespace}, "
        f"name: {ref.get('name', '')}, uid: {ref.get('uid', '')}]"
    )


class GarbageCollectorController:
    """Watches every deletable resource and collects what its owners left behind."""

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
        self._own_recorder = recorder is None
        self.recorder = recorder or events.EventRecorder(client, COMPONENT, self.clock)
        self._builtin = builtin_resources(registry)
        self._registry = registry or kinds.Registry()
        self.attempt_to_delete = controllers.Controller(
            "garbage-collector-delete", self._attempt_to_delete, workers=workers, clock=self.clock
        )
        self.attempt_to_orphan = controllers.Controller(
            "garbage-collector-orphan", self._attempt_to_orphan, workers=workers, clock=self.clock
        )
        self._nodes: dict[str, _Node] = {}
        # owner uid → uids of the objects that name it (whether or not it exists).
        self._dependents: dict[str, set[str]] = {}
        # (owner uid, namespace looked in) of owners found absent: uids never return.
        self._absent: collections.OrderedDict[tuple[str, str], None] = collections.OrderedDict()
        self._subscriptions: list[tuple[informers.Informer, informers.EventHandlers]] = []
        # Custom resources: private informers, stopped when their CRD goes away.
        self._custom: dict[clients.ResourceRef, informers.Informer] = {}
        self._custom_subscriptions: dict[clients.ResourceRef, informers.EventHandlers] = {}
        self._custom_by_kind: dict[tuple[str, str], clients.ResourceRef] = {}
        self._crds: informers.Informer | None = None
        self._rediscover = asyncio.Event()
        self._discovery: asyncio.Task[None] | None = None

    # --- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        """Subscribe to every built-in resource and the CRDs, then run the workers
        once the built-in caches are full."""
        waited: list[informers.Informer] = []
        for resource in self._builtin:
            informer = self.factory.informer(resource)
            self._subscriptions.append((informer, self._handlers(informer, resource)))
            waited.append(informer)
        self._crds = self.factory.informer(CRDS)
        handlers = self._crds.add_handlers(
            lambda _o: self._rediscover.set(),
            lambda _o, _n: self._rediscover.set(),
            lambda _o: self._rediscover.set(),
        )
        self._subscriptions.append((self._crds, handlers))
        self.factory.start()
        if self._own_recorder:
            self.recorder.start()
        self._discovery = asyncio.create_task(self._discover_loop(), name="gc-discovery")
        self.attempt_to_delete.start(waited)
        self.attempt_to_orphan.start(waited)

    async def stop(self) -> None:
        await self.attempt_to_delete.stop()
        await self.attempt_to_orphan.stop()
        if self._discovery is not None:
            self._discovery.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._discovery
            self._discovery = None
        for informer, handlers in self._subscriptions:
            with contextlib.suppress(ValueError):
                informer.remove_handlers(handlers)
        self._subscriptions.clear()
        for informer in self._custom.values():
            await informer.stop()
        self._custom.clear()
        self._custom_subscriptions.clear()
        if self._own_recorder:
            await self.recorder.stop()

    def _handlers(
        self, informer: informers.Informer, resource: clients.ResourceRef
    ) -> informers.EventHandlers:
        return informer.add_handlers(
            lambda obj: self._observe(resource, obj),
            lambda _old, new: self._observe(resource, new),
            self._forget,
        )

    # --- custom resources -------------------------------------------------------------

    async def _discover_loop(self) -> None:
        assert self._crds is not None
        await self._crds.wait_synced()
        while True:
            self._rediscover.clear()
            try:
                await self.sync_custom_resources(self._crds.objects())
            except Exception:
                log.exception("garbage collector: custom resource discovery failed")
            await self._rediscover.wait()

    async def sync_custom_resources(self, crds: Iterable[Mapping[str, Any]]) -> None:
        """Track exactly the custom resources these CRDs serve: start informers
        for new ones, stop those whose CRD is gone (their objects went with it,
        so their dependents are queued as orphans of vanished owners)."""
        wanted = custom_resources(crds)
        self._custom_by_kind = {(r.group, r.kind): r for r in wanted}
        for resource in wanted:
            if resource in self._custom:
                continue
            informer = informers.Informer(self.client, resource, clock=self.factory.clock)
            self._custom[resource] = informer
            self._custom_subscriptions[resource] = self._handlers(informer, resource)
            informer.start()
        for resource in [r for r in self._custom if r not in wanted]:
            informer = self._custom.pop(resource)
            handlers = self._custom_subscriptions.pop(resource)
            informer.remove_handlers(handlers)
            await informer.stop()
            for obj in informer.objects():
                self._forget(obj)

    # --- graph maintenance (informer handlers: only bookkeeping and enqueueing) -------

    def _observe(self, resource: clients.ResourceRef, obj: Mapping[str, Any]) -> None:
        node = _Node.of(resource, obj)
        if not node.uid:
            return
        old = self._nodes.get(node.uid)
        self._nodes[node.uid] = node
        old_owners = old.owner_uids() if old is not None else set()
        new_owners = node.owner_uids()
        for uid in old_owners - new_owners:
            self._unlink(uid, node.uid)
        for uid in new_owners - old_owners:
            self._dependents.setdefault(uid, set()).add(node.uid)
        if old is None or old.owners != node.owners or old.deleting != node.deleting:
            # An owner waiting for its dependents may be free now.
            for uid in old_owners | new_owners:
                owner = self._nodes.get(uid)
                if owner is not None and owner.deleting_dependents:
                    self.attempt_to_delete.queue.add(uid)
        if node.orphaning and (old is None or not old.orphaning):
            self.attempt_to_orphan.queue.add(node.uid)
        if node.deleting_dependents and (old is None or not old.deleting_dependents):
            for uid in self._dependents.get(node.uid, ()):
                self.attempt_to_delete.queue.add(uid)
            self.attempt_to_delete.queue.add(node.uid)
        if node.owners and not node.deleting and not self._all_owners_solid(node):
            self.attempt_to_delete.queue.add(node.uid)

    def _forget(self, obj: Mapping[str, Any]) -> None:
        uid = str((obj.get("metadata") or {}).get("uid") or "")
        node = self._nodes.pop(uid, None)
        if node is None:
            return
        for owner_uid in node.owner_uids():
            self._unlink(owner_uid, uid)
            owner = self._nodes.get(owner_uid)
            if owner is not None and owner.deleting_dependents:
                self.attempt_to_delete.queue.add(owner_uid)
        for dependent in self._dependents.get(uid, ()):
            self.attempt_to_delete.queue.add(dependent)

    def _unlink(self, owner_uid: str, dependent_uid: str) -> None:
        dependents = self._dependents.get(owner_uid)
        if dependents is not None:
            dependents.discard(dependent_uid)
            if not dependents:
                del self._dependents[owner_uid]

    def _solid_in_graph(self, node: _Node, ref: Mapping[str, Any]) -> bool:
        """The cache shows this owner alive, where the reference says, and not
        waiting for its dependents: reason enough to spare the dependent."""
        owner = self._nodes.get(str(ref.get("uid") or ""))
        if owner is None or owner.name != ref.get("name") or owner.deleting_dependents:
            return False
        if owner.resource.kind != ref.get("kind"):
            return False
        group = str(ref.get("apiVersion") or "").rpartition("/")[0]
        if owner.resource.group != group:
            return False
        return not owner.namespace or owner.namespace == node.namespace

    def _all_owners_solid(self, node: _Node) -> bool:
        return all(self._solid_in_graph(node, ref) for ref in node.owners)

    def dependents_of(self, uid: str) -> list[str]:
        """Uids of the objects that name ``uid`` as an owner (as cached)."""
        return sorted(self._dependents.get(uid, ()))

    # --- attemptToDelete ----------------------------------------------------------------

    async def _attempt_to_delete(self, uid: str) -> None:
        node = self._nodes.get(uid)
        if node is None:
            return
        if node.deleting_dependents:
            await self._process_deleting_dependents(node)
            return
        if node.deleting or not node.owners or self._all_owners_solid(node):
            return
        latest = await self._get_live(node.resource, node.namespace, node.name, node.uid)
        if latest is None:
            return
        latest_meta = latest.get("metadata") or {}
        if latest_meta.get("deletionTimestamp"):
            if FOREGROUND in (latest_meta.get("finalizers") or ()):
                await self._process_deleting_dependents(node)
            return
        refs = [dict(r) for r in latest_meta.get("ownerReferences") or ()]
        if not refs:
            return
        try:
            solid, dangling, waiting = await self._classify(node, refs)
        except _InvalidReference:
            return
        if solid:
            if not dangling and not waiting:
                return
            # Other owners keep it alive: drop the references that would keep a
            # foreground deletion waiting forever, and the dangling ones.
            gone = {str(r.get("uid")) for r in dangling + waiting}
            log.info("garbage collector: removing references to %s from %s", sorted(gone), node)
            await self._remove_owner_references(node, gone)
            return
        if waiting:
            for dependent_uid in self._dependents.get(uid, ()):
                dependent = self._nodes.get(dependent_uid)
                if dependent is not None and dependent.deleting_dependents:
                    # A cycle of foreground deletions would wait on itself forever.
                    await self._unblock_owner_references(dependent)
                    break
            policy: clients.PropagationPolicy = "Foreground"
        else:
            finalizers = latest_meta.get("finalizers") or ()
            policy = (
                "Orphan"
                if ORPHAN in finalizers
                else "Foreground"
                if FOREGROUND in finalizers
                else "Background"
            )
        log.info("garbage collector: deleting %s (propagation %s)", node, policy)
        await self._delete(node, policy)

    async def _classify(
        self, node: _Node, refs: list[Obj]
    ) -> tuple[list[Obj], list[Obj], list[Obj]]:
        """Split references into solid (owner alive), dangling (owner absent or a
        different object) and waiting (owner deleting its dependents first),
        reading every owner live."""
        solid: list[Obj] = []
        dangling: list[Obj] = []
        waiting: list[Obj] = []
        for ref in refs:
            owner_uid = str(ref.get("uid") or "")
            resource = self._owner_resource(ref)
            if resource.namespaced and not node.namespace:
                self.recorder.record(
                    self._event_target(node),
                    "Warning",
                    "OwnerRefInvalidNamespace",
                    f'ownerRef {_ref_text(ref, "")} does not exist in namespace ""',
                )
                raise _InvalidReference(owner_uid)
            namespace = node.namespace if resource.namespaced else ""
            if (owner_uid, namespace) in self._absent:
                dangling.append(ref)
                continue
            owner = await self._get_live(resource, namespace, str(ref.get("name") or ""), None)
            if owner is None or (owner.get("metadata") or {}).get("uid") != owner_uid:
                self._remember_absent(owner_uid, namespace)
                known = self._nodes.get(owner_uid)
                if known is not None and known.namespace and known.namespace != namespace:
                    self.recorder.record(
                        self._event_target(node),
                        "Warning",
                        "OwnerRefInvalidNamespace",
                        f"ownerRef {_ref_text(ref, namespace)} does not exist in namespace "
                        f'"{namespace}"',
                    )
                dangling.append(ref)
                continue
            owner_meta = owner.get("metadata") or {}
            if owner_meta.get("deletionTimestamp") and FOREGROUND in (
                owner_meta.get("finalizers") or ()
            ):
                waiting.append(ref)
            else:
                solid.append(ref)
        return solid, dangling, waiting

    def _owner_resource(self, ref: Mapping[str, Any]) -> clients.ResourceRef:
        api_version = str(ref.get("apiVersion") or "")
        kind = str(ref.get("kind") or "")
        group = api_version.rpartition("/")[0]
        try:
            return clients.resolve(api_version, kind, self._registry)
        except LookupError:
            pass
        custom = self._custom_by_kind.get((group, kind))
        if custom is not None:
            return custom
        # Another version of a known kind (an owner written at an older version).
        for resource in self._registry:
            if resource.group == group and resource.kind == kind and not resource.virtual:
                return clients.ResourceRef.of(resource)
        raise UnknownOwnerKind(f"no resource serves kind {kind!r} in {api_version!r}")

    def _remember_absent(self, uid: str, namespace: str) -> None:
        self._absent[(uid, namespace)] = None
        self._absent.move_to_end((uid, namespace))
        while len(self._absent) > _ABSENT_CACHE_SIZE:
            self._absent.popitem(last=False)

    async def _process_deleting_dependents(self, node: _Node) -> None:
        """An owner deleted in the foreground: once no dependent blocks it, drop
        its ``foregroundDeletion`` finalizer; until then, delete the blockers."""
        blocking = [
            dependent
            for uid in self._dependents.get(node.uid, ())
            if (dependent := self._nodes.get(uid)) is not None and dependent.blocks(node.uid)
        ]
        if not blocking:
            log.info("garbage collector: %s has no blocking dependents left", node)
            await self._remove_finalizer(node, FOREGROUND)
            return
        for dependent in blocking:
            if not dependent.deleting_dependents:
                self.attempt_to_delete.queue.add(dependent.uid)

    # --- attemptToOrphan --------------------------------------------------------------

    async def _attempt_to_orphan(self, uid: str) -> None:
        node = self._nodes.get(uid)
        if node is None or not node.orphaning:
            return
        for dependent_uid in sorted(self._dependents.get(uid, ())):
            dependent = self._nodes.get(dependent_uid)
            if dependent is not None:
                await self._remove_owner_references(dependent, {uid})
        log.info("garbage collector: orphaned the dependents of %s", node)
        await self._remove_finalizer(node, ORPHAN)

    # --- writes -----------------------------------------------------------------------

    async def _get_live(
        self, resource: clients.ResourceRef, namespace: str, name: str, uid: str | None
    ) -> Obj | None:
        """The object as the store has it now; None when absent or (with ``uid``)
        when another object has taken the name."""
        try:
            obj = await self.client.get(resource, namespace, name)
        except errors.StatusError as err:
            if err.code == 404:
                return None
            raise
        if uid is not None and (obj.get("metadata") or {}).get("uid") != uid:
            return None
        return obj

    async def _change_metadata(
        self, node: _Node, change: Callable[[Mapping[str, Any]], Obj | None]
    ) -> None:
        """Read the object, let ``change`` compute new metadata fields (None: none
        needed) and merge-patch them with uid and resourceVersion preconditions,
        re-reading on a conflict."""
        for attempt in range(_CONFLICT_RETRIES):
            current = await self._get_live(node.resource, node.namespace, node.name, node.uid)
            if current is None:
                return
            meta = current.get("metadata") or {}
            fields = change(meta)
            if fields is None:
                return
            patch = {
                "metadata": {
                    **fields,
                    "uid": node.uid,
                    "resourceVersion": meta.get("resourceVersion"),
                }
            }
            try:
                await self.client.patch(
                    node.resource, node.namespace, node.name, patch, patch_type="merge"
                )
                return
            except errors.StatusError as err:
                if err.code == 404:
                    return
                if err.code != 409 or attempt == _CONFLICT_RETRIES - 1:
                    raise

    async def _remove_owner_references(self, node: _Node, owner_uids: set[str]) -> None:
        def change(meta: Mapping[str, Any]) -> Obj | None:
            refs = list(meta.get("ownerReferences") or ())
            kept = [r for r in refs if r.get("uid") not in owner_uids]
            if len(kept) == len(refs):
                return None
            return {"ownerReferences": kept or None}

        await self._change_metadata(node, change)

    async def _unblock_owner_references(self, node: _Node) -> None:
        def change(meta: Mapping[str, Any]) -> Obj | None:
            refs = [dict(r) for r in meta.get("ownerReferences") or ()]
            if not any(r.get("blockOwnerDeletion") for r in refs):
                return None
            for ref in refs:
                if ref.get("blockOwnerDeletion"):
                    ref["blockOwnerDeletion"] = False
            return {"ownerReferences": refs}

        await self._change_metadata(node, change)

    async def _remove_finalizer(self, node: _Node, finalizer: str) -> None:
        def change(meta: Mapping[str, Any]) -> Obj | None:
            finalizers = list(meta.get("finalizers") or ())
            if finalizer not in finalizers:
                return None
            kept = [f for f in finalizers if f != finalizer]
            return {"finalizers": kept or None}

        await self._change_metadata(node, change)

    async def _delete(self, node: _Node, policy: clients.PropagationPolicy) -> None:
        options = clients.DeleteOptions(
            propagation_policy=policy, preconditions=clients.Preconditions(uid=node.uid)
        )
        try:
            await self.client.delete(node.resource, node.namespace, node.name, options)
        except errors.StatusError as err:
            # Gone already, or the name now belongs to another object.
            if err.code not in (404, 409):
                raise

    @staticmethod
    def _event_target(node: _Node) -> Obj:
        return {
            "apiVersion": node.resource.api_version,
            "kind": node.resource.kind,
            "metadata": {"name": node.name, "namespace": node.namespace, "uid": node.uid},
        }
