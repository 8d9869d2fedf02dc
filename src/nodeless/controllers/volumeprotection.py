"""Storage object in-use protection: a claim a pod still mounts, and a volume
still bound to a claim, stay Terminating instead of vanishing under the pod
(upstream's PVC and PV protection controllers).

Upstream's admission plugin adds the finalizers when the objects are
created; here these controllers add them to every claim and volume that is
not being deleted, so objects created before they ran are protected too.
The finalizer comes off once nothing uses the object any more:

- ``kubernetes.io/pvc-protection``: no pod that has not terminated names the
  claim (a persistentVolumeClaim volume, or the claim of a generic ephemeral
  volume). Unlike upstream, unscheduled pods count too: Nodeless starts a pod
  wherever it is scheduled, so a pending pod is about to use its claim. Before
  removing the finalizer, pods are listed from the API, not only the cache,
  so a pod the informer has not seen yet still protects the claim.
- ``kubernetes.io/pv-protection``: the volume is not Bound.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from nodeless import clocks
from nodeless.api import errors, values
from nodeless.client import clients, controllers, events, informers
from nodeless.controllers import persistentvolumes

log = logging.getLogger(__name__)

Obj = dict[str, Any]

CLAIMS = persistentvolumes.CLAIMS
VOLUMES = persistentvolumes.VOLUMES
PODS = persistentvolumes.PODS

PVC_PROTECTION = "kubernetes.io/pvc-protection"
PV_PROTECTION = "kubernetes.io/pv-protection"


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


def _finalizers(obj: Mapping[str, Any]) -> list[str]:
    return [str(f) for f in _meta(obj).get("finalizers") or []]


def _deleting(obj: Mapping[str, Any]) -> bool:
    return bool(_meta(obj).get("deletionTimestamp"))


def needs_work(obj: Mapping[str, Any], finalizer: str) -> bool:
    """Whether the finalizer must be added (a live object lacks it) or may have
    to come off (a deleted object still has it)."""
    return (finalizer in _finalizers(obj)) == _deleting(obj)


def uses_claim(pod: Mapping[str, Any], claim_name: str) -> bool:
    return not persistentvolumes.pod_terminated(pod) and claim_name in (
        persistentvolumes.pod_claim_names(pod)
    )


class _FinalizerController:
    """Adds ``finalizer`` to live objects of one resource and removes it from
    deleted ones once ``in_use`` says nothing needs them; keyed like the cache."""

    name = ""
    finalizer = ""
    resource = VOLUMES

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
        self.objects = factory.informer(self.resource)
        self.controller = controllers.Controller(
            self.name, self.sync, workers=workers, clock=self.clock
        )
        self._subscriptions: list[tuple[informers.Informer, informers.EventHandlers]] = []

    def _informers(self) -> list[informers.Informer]:
        return [self.objects]

    def _subscribe(self) -> list[tuple[informers.Informer, informers.EventHandlers]]:
        return [
            (
                self.objects,
                self.objects.add_handlers(self._changed, lambda _old, new: self._changed(new)),
            )
        ]

    async def start(self) -> None:
        self._subscriptions = self._subscribe()
        self.controller.start(self._informers())

    async def stop(self) -> None:
        await self.controller.stop()
        for informer, handlers in self._subscriptions:
            informer.remove_handlers(handlers)
        self._subscriptions = []

    def _changed(self, obj: Obj) -> None:
        if needs_work(obj, self.finalizer):
            self.controller.enqueue(obj)

    async def in_use(self, obj: Obj) -> bool:
        raise NotImplementedError

    async def sync(self, key: str) -> None:
        obj = self.objects.get(key)
        if obj is None or not needs_work(obj, self.finalizer):
            return
        if not _deleting(obj):
            await self._add_finalizer(obj)
        elif not await self.in_use(obj):
            await self._remove_finalizer(obj)
            log.info("%s: removed %s from %s", self.name, self.finalizer, key)

    async def _add_finalizer(self, obj: Obj) -> None:
        """A strategic merge patch adds to the list whatever else changed, so
        protecting an object never conflicts with the writers busy binding it."""
        meta = _meta(obj)
        try:
            await self.client.patch(
                self.resource,
                str(meta.get("namespace") or ""),
                str(meta.get("name") or ""),
                {"metadata": {"uid": meta.get("uid"), "finalizers": [self.finalizer]}},
                patch_type="strategic",
                options=clients.WriteOptions(field_manager=self.name),
            )
        except errors.StatusError as err:
            # Gone, replaced (uid), or deleted meanwhile: nothing to protect.
            if err.code not in (403, 404, 409):
                raise

    async def _remove_finalizer(self, obj: Obj) -> None:
        """An update at the resourceVersion the decision was made on: a change
        since (a pod, a binding) makes it conflict and decide again."""
        changed = values.clone(obj)
        changed["metadata"]["finalizers"] = [f for f in _finalizers(obj) if f != self.finalizer]
        try:
            await self.client.update(
                self.resource, changed, clients.WriteOptions(field_manager=self.name)
            )
        except errors.StatusError as err:
            if err.code != 404:
                raise


class PVCProtectionController(_FinalizerController):
    """``kubernetes.io/pvc-protection`` on claims; also watches pods, whose end
    may free a claim being deleted."""

    name = "pvc-protection-controller"
    finalizer = PVC_PROTECTION
    resource = CLAIMS

    def __init__(
        self,
        client: clients.ApiClient,
        factory: informers.InformerFactory,
        *,
        clock: clocks.Clock | None = None,
        recorder: events.EventRecorder | None = None,
        workers: int = 2,
    ) -> None:
        super().__init__(client, factory, clock=clock, recorder=recorder, workers=workers)
        self.pods = factory.informer(PODS)

    def _informers(self) -> list[informers.Informer]:
        return [self.objects, self.pods]

    def _subscribe(self) -> list[tuple[informers.Informer, informers.EventHandlers]]:
        return [
            *super()._subscribe(),
            (
                self.pods,
                self.pods.add_handlers(
                    None, lambda _old, new: self._pod_changed(new), self._pod_changed
                ),
            ),
        ]

    def _pod_changed(self, pod: Obj) -> None:
        """A pod ended or went: the claims it named that are being deleted may go."""
        namespace = str(_meta(pod).get("namespace") or "")
        for name in persistentvolumes.pod_claim_names(pod):
            claim = self.objects.get(f"{namespace}/{name}")
            if claim is not None and _deleting(claim) and PVC_PROTECTION in _finalizers(claim):
                self.controller.enqueue(claim)

    async def in_use(self, obj: Obj) -> bool:
        namespace = str(_meta(obj).get("namespace") or "")
        name = str(_meta(obj).get("name") or "")
        if any(uses_claim(pod, name) for pod in self.pods.objects(namespace)):
            return True
        # The cache may lag a pod just created: ask the API before letting go.
        listed = await self.client.list(PODS, namespace)
        return any(uses_claim(pod, name) for pod in listed.items)


class PVProtectionController(_FinalizerController):
    """``kubernetes.io/pv-protection`` on volumes: a Bound volume stays."""

    name = "pv-protection-controller"
    finalizer = PV_PROTECTION
    resource = VOLUMES

    async def in_use(self, obj: Obj) -> bool:
        return str((obj.get("status") or {}).get("phase") or "") == persistentvolumes.BOUND
