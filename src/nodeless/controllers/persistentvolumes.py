"""Binding PersistentVolumeClaims to PersistentVolumes, and a local-path
provisioner that makes the volumes (upstream's PV controller plus rancher's
local-path-provisioner, in one level-triggered loop).

A Nodeless pod has no node of its own to keep data on, so a claim is backed
by a directory under the volumes root on the host that runs the pods; the
provider mounts the PV's ``hostPath`` into the pod, and the data outlives
every pod that mounts it until the claim is deleted.

What upstream's controller does, this one does:

- a claim without ``storageClassName`` gets the default class written into
  it (upstream does this in the DefaultStorageClass admission plugin at
  create time, and retroactively in the PV controller; here the controller
  does both, with an update of the claim);
- an unbound claim binds to the smallest Available PV of its class whose
  access modes and capacity fit (and whose labels match its selector), or to
  the PV it names in ``spec.volumeName``;
- failing that, a claim whose class names this provisioner gets a PV named
  ``pvc-<claim uid>``, so that a crash between creating the PV and binding
  the claim, or a restart, finds that PV instead of provisioning twice;
- binding writes the PV's ``claimRef`` first (optimistic concurrency on the
  PV decides which of two claims racing for one PV wins), then its phase,
  then the claim's ``volumeName`` and annotations, then the claim's status;
- a PV whose claim is gone is Released, then reclaimed by its policy:
  ``Delete`` removes the directory (only for PVs this provisioner made, and
  only under its root) and the PV, ``Retain`` keeps both.

Keys are ``pvc:<namespace>/<name>`` and ``pv:<name>`` in one work queue.
Handlers only enqueue. Because the informers lag this controller's own
writes, objects it wrote are remembered until the informer has caught up
with them (upstream's assume cache), which spares it conflicts on the next
sync.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

from nodeless import clocks
from nodeless.api import errors, selectors, times, values
from nodeless.client import clients, controllers, events, informers
from nodeless.serverless import quantities

log = logging.getLogger(__name__)

Obj = dict[str, Any]

CLAIMS = clients.ResourceRef("", "v1", "persistentvolumeclaims", True, "PersistentVolumeClaim")
VOLUMES = clients.ResourceRef("", "v1", "persistentvolumes", False, "PersistentVolume")
CLASSES = clients.ResourceRef("storage.k8s.io", "v1", "storageclasses", False, "StorageClass")
PODS = clients.ResourceRef("", "v1", "pods", True, "Pod")

COMPONENT = "persistentvolume-controller"
PROVISIONER = "nodeless.dev/local-path"
DEFAULT_CLASS_NAME = "local-path"
# Where volumes go when nobody says: good for tests and a first `nodeless up`;
# `nodeless up` is to pass `<data-dir>/volumes`, so that data lives with the cluster.
DEFAULT_VOLUMES_ROOT = Path(tempfile.gettempdir()) / f"nodeless-volumes-{os.getuid()}"

# Annotations, as upstream spells them.
BIND_COMPLETED = "pv.kubernetes.io/bind-completed"
BOUND_BY_CONTROLLER = "pv.kubernetes.io/bound-by-controller"
PROVISIONED_BY = "pv.kubernetes.io/provisioned-by"
STORAGE_PROVISIONER = "volume.kubernetes.io/storage-provisioner"
BETA_STORAGE_PROVISIONER = "volume.beta.kubernetes.io/storage-provisioner"
SELECTED_NODE = "volume.kubernetes.io/selected-node"
BETA_STORAGE_CLASS = "volume.beta.kubernetes.io/storage-class"
IS_DEFAULT_CLASS = "storageclass.kubernetes.io/is-default-class"
BETA_IS_DEFAULT_CLASS = "storageclass.beta.kubernetes.io/is-default-class"

# Phases.
AVAILABLE, BOUND, RELEASED, FAILED, PENDING, LOST = (
    "Available",
    "Bound",
    "Released",
    "Failed",
    "Pending",
    "Lost",
)

_CLAIM_PREFIX = "pvc:"
_VOLUME_PREFIX = "pv:"


# --- reading claims, volumes and classes ------------------------------------------------


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


def _spec(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("spec") or {}


def _annotations(obj: Mapping[str, Any]) -> Mapping[str, str]:
    return _meta(obj).get("annotations") or {}


def _name(obj: Mapping[str, Any]) -> str:
    return str(_meta(obj).get("name") or "")


def _uid(obj: Mapping[str, Any]) -> str:
    return str(_meta(obj).get("uid") or "")


def _phase(obj: Mapping[str, Any]) -> str:
    return str((obj.get("status") or {}).get("phase") or "")


def _deleting(obj: Mapping[str, Any]) -> bool:
    return bool(_meta(obj).get("deletionTimestamp"))


def claim_key(namespace: str, name: str) -> str:
    return f"{_CLAIM_PREFIX}{namespace}/{name}"


def volume_key(name: str) -> str:
    return f"{_VOLUME_PREFIX}{name}"


def claim_class(claim: Mapping[str, Any]) -> str | None:
    """The claim's class: None when it names none at all (a default may be
    assigned), ``""`` when it explicitly asks for no class. The beta
    annotation still wins, as in upstream's helper."""
    beta = _annotations(claim).get(BETA_STORAGE_CLASS)
    if beta is not None:
        return str(beta)
    value = _spec(claim).get("storageClassName")
    return value if isinstance(value, str) else None


def volume_class(volume: Mapping[str, Any]) -> str:
    beta = _annotations(volume).get(BETA_STORAGE_CLASS)
    if beta is not None:
        return str(beta)
    return str(_spec(volume).get("storageClassName") or "")


def _quantity(raw: object) -> Decimal | None:
    try:
        return quantities.parse(raw)
    except quantities.QuantityError:
        return None


def requested_storage(claim: Mapping[str, Any]) -> Decimal | None:
    requests = (_spec(claim).get("resources") or {}).get("requests") or {}
    if "storage" not in requests:
        return None
    return _quantity(requests["storage"])


def volume_capacity(volume: Mapping[str, Any]) -> Decimal | None:
    capacity = _spec(volume).get("capacity") or {}
    if "storage" not in capacity:
        return None
    return _quantity(capacity["storage"])


def _volume_mode(obj: Mapping[str, Any]) -> str:
    return str(_spec(obj).get("volumeMode") or "Filesystem")


def _access_modes(obj: Mapping[str, Any]) -> list[str]:
    return [str(m) for m in _spec(obj).get("accessModes") or []]


def is_volume_bound_to_claim(volume: Mapping[str, Any], claim: Mapping[str, Any]) -> bool:
    """Whether the PV's claimRef names this claim (a ref without uid, as a user
    pre-binding a PV writes it, names any claim of that name)."""
    ref = _spec(volume).get("claimRef") or {}
    if ref.get("name") != _name(claim) or ref.get("namespace") != _meta(claim).get("namespace"):
        return False
    return not ref.get("uid") or ref.get("uid") == _uid(claim)


def mismatch(volume: Mapping[str, Any], claim: Mapping[str, Any]) -> str | None:
    """Why the PV cannot serve the claim, or None if it can
    (upstream's ``checkVolumeSatisfyClaim``)."""
    wanted = requested_storage(claim) or Decimal(0)
    capacity = volume_capacity(volume)
    if capacity is None or capacity < wanted:
        return "requested PV is too small"
    if volume_class(volume) != (claim_class(claim) or ""):
        return "storageClassName does not match"
    if _volume_mode(volume) != _volume_mode(claim):
        return "incompatible volumeMode"
    if not set(_access_modes(claim)) <= set(_access_modes(volume)):
        return "incompatible accessMode"
    return None


def _selects(claim: Mapping[str, Any], volume: Mapping[str, Any]) -> bool:
    raw = _spec(claim).get("selector")
    if raw is None:
        return True
    try:
        selector = selectors.label_selector_from_object(raw)
    except errors.StatusError:
        return False
    return selector.matches(_meta(volume).get("labels") or {})


def find_best_match(
    volumes: Iterable[Mapping[str, Any]], claim: Mapping[str, Any], *, prebound_only: bool = False
) -> Obj | None:
    """The PV to bind the claim to: one already pre-bound to it if big enough,
    else the smallest Available, unclaimed PV that fits (``findBestMatchForClaim``).
    ``prebound_only`` is for claims whose binding waits for a consumer."""
    wanted = requested_storage(claim) or Decimal(0)
    best: Obj | None = None
    best_capacity = Decimal(0)
    for volume in volumes:
        capacity = volume_capacity(volume)
        if capacity is None or _volume_mode(volume) != _volume_mode(claim):
            continue
        if _spec(volume).get("claimRef"):
            if is_volume_bound_to_claim(volume, claim) and capacity >= wanted:
                return dict(volume)
            continue
        if prebound_only or _deleting(volume) or _phase(volume) != AVAILABLE:
            continue
        if mismatch(volume, claim) is not None or not _selects(claim, volume):
            continue
        if best is None or capacity < best_capacity:
            best, best_capacity = dict(volume), capacity
    return best


def default_class(classes: Iterable[Mapping[str, Any]]) -> Obj | None:
    """The default StorageClass; with several, the newest (as upstream picks)."""
    defaults = [
        c
        for c in classes
        if "true"
        in (_annotations(c).get(IS_DEFAULT_CLASS), _annotations(c).get(BETA_IS_DEFAULT_CLASS))
    ]
    if not defaults:
        return None
    newest = max(defaults, key=lambda c: (str(_meta(c).get("creationTimestamp") or ""), _name(c)))
    return dict(newest)


def pod_claim_names(pod: Mapping[str, Any]) -> list[str]:
    """The claims a pod mounts: persistentVolumeClaim volumes and the claims of
    generic ephemeral volumes (named ``<pod>-<volume>``)."""
    names: list[str] = []
    for volume in _spec(pod).get("volumes") or []:
        if not isinstance(volume, Mapping):
            continue
        source = volume.get("persistentVolumeClaim")
        if isinstance(source, Mapping) and source.get("claimName"):
            names.append(str(source["claimName"]))
        elif isinstance(volume.get("ephemeral"), Mapping):
            names.append(f"{_name(pod)}-{volume.get('name', '')}")
    return names


def pod_terminated(pod: Mapping[str, Any]) -> bool:
    """A pod whose containers have all ended no longer uses its volumes."""
    return _phase(pod) in ("Succeeded", "Failed")


def _rfc3339(clock: clocks.Clock) -> str:
    return times.rfc3339(clock.now())


def _revision(obj: Mapping[str, Any]) -> int | None:
    try:
        return int(clients.resource_version(obj))
    except ValueError:
        return None


class _Assumed:
    """One informer's cache, overlaid with the objects this controller wrote
    that the informer has not yet caught up with (upstream's assume cache).

    A written object is dropped once the informer's revision reaches the
    write's: from then on the cache is at least as new, including a deletion.
    """

    def __init__(self, informer: informers.Informer) -> None:
        self.informer = informer
        self._written: dict[str, Obj] = {}

    def _caught_up(self, written: Obj) -> bool:
        mine = _revision(written)
        try:
            seen = int(self.informer.resource_version)
        except ValueError:
            return True
        return mine is None or seen >= mine

    def get(self, key: str) -> Obj | None:
        written = self._written.get(key)
        if written is not None:
            if not self._caught_up(written):
                return written
            del self._written[key]
        return self.informer.get(key)

    def objects(self) -> list[Obj]:
        merged = {clients.key_of(o): o for o in self.informer.objects()}
        for key in list(self._written):
            found = self.get(key)
            if found is not None:
                merged[key] = found
        return list(merged.values())

    def wrote(self, obj: Obj) -> Obj:
        self._written[clients.key_of(obj)] = obj
        return obj

    def forget(self, key: str) -> None:
        self._written.pop(key, None)


class ProvisioningError(Exception):
    """Provisioning a claim failed; the message is the event's. ``transient``
    failures (the disk, the API) are retried with backoff; the others wait for
    the claim or its class to change."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class PersistentVolumeController:
    """Binds claims to volumes, provisions local-path volumes under
    ``volumes_root`` (None: provision nothing, only bind PVs that exist) and
    reclaims released volumes."""

    def __init__(
        self,
        client: clients.ApiClient,
        factory: informers.InformerFactory,
        *,
        clock: clocks.Clock | None = None,
        recorder: events.EventRecorder | None = None,
        volumes_root: Path | None = DEFAULT_VOLUMES_ROOT,
        workers: int = 2,
    ) -> None:
        self.client = client
        self.clock: clocks.Clock = clock or factory.clock or clocks.SystemClock()
        self._own_recorder = recorder is None
        self.recorder = recorder or events.EventRecorder(client, COMPONENT, self.clock)
        self.volumes_root = volumes_root
        self.claims_informer = factory.informer(CLAIMS)
        self.volumes_informer = factory.informer(VOLUMES)
        self.classes = factory.informer(CLASSES)
        self.pods = factory.informer(PODS)
        self.claims = _Assumed(self.claims_informer)
        self.volumes = _Assumed(self.volumes_informer)
        self.controller = controllers.Controller(
            COMPONENT, self.sync, workers=workers, clock=self.clock
        )
        self._subscriptions: list[tuple[informers.Informer, informers.EventHandlers]] = []

    # --- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        if self._own_recorder:
            self.recorder.start()
        self._subscriptions = [
            (
                self.claims_informer,
                self.claims_informer.add_handlers(
                    self._claim_changed,
                    lambda _old, new: self._claim_changed(new),
                    self._claim_gone,
                ),
            ),
            (
                self.volumes_informer,
                self.volumes_informer.add_handlers(
                    self._volume_changed,
                    lambda _old, new: self._volume_changed(new),
                    self._volume_gone,
                ),
            ),
            (
                self.classes,
                self.classes.add_handlers(
                    lambda _c: self._enqueue_unbound_claims(),
                    lambda _old, _new: self._enqueue_unbound_claims(),
                ),
            ),
            (
                self.pods,
                self.pods.add_handlers(self._pod_changed, lambda _old, new: self._pod_changed(new)),
            ),
        ]
        self.controller.start(
            [self.claims_informer, self.volumes_informer, self.classes, self.pods]
        )

    async def stop(self) -> None:
        await self.controller.stop()
        for informer, handlers in self._subscriptions:
            informer.remove_handlers(handlers)
        self._subscriptions = []
        if self._own_recorder:
            await self.recorder.stop()

    # --- event handlers (they only enqueue) ---------------------------------------------

    def _claim_changed(self, claim: Obj) -> None:
        self.controller.queue.add(claim_key(str(_meta(claim).get("namespace") or ""), _name(claim)))

    def _claim_gone(self, claim: Obj) -> None:
        namespace = str(_meta(claim).get("namespace") or "")
        self.claims.forget(f"{namespace}/{_name(claim)}")
        # The volume it was bound to (or was being provisioned for it) is released.
        for name in {str(_spec(claim).get("volumeName") or ""), f"pvc-{_uid(claim)}"}:
            if name and self.volumes.get(name) is not None:
                self.controller.queue.add(volume_key(name))

    def _volume_changed(self, volume: Obj) -> None:
        self.controller.queue.add(volume_key(_name(volume)))
        ref = _spec(volume).get("claimRef") or {}
        if ref.get("name"):
            self.controller.queue.add(claim_key(str(ref.get("namespace") or ""), ref["name"]))
        elif _phase(volume) == AVAILABLE and not _deleting(volume):
            # A volume became available: claims waiting for one may fit now.
            self._enqueue_unbound_claims()

    def _volume_gone(self, volume: Obj) -> None:
        self.volumes.forget(_name(volume))
        ref = _spec(volume).get("claimRef") or {}
        if ref.get("name"):
            self.controller.queue.add(claim_key(str(ref.get("namespace") or ""), ref["name"]))

    def _enqueue_unbound_claims(self) -> None:
        for claim in self.claims_informer.objects():
            if BIND_COMPLETED not in _annotations(claim):
                self._claim_changed(claim)

    def _pod_changed(self, pod: Obj) -> None:
        # Only claims waiting for their first consumer care about pods.
        namespace = str(_meta(pod).get("namespace") or "")
        for name in pod_claim_names(pod):
            claim = self.claims_informer.get(f"{namespace}/{name}")
            if claim is not None and BIND_COMPLETED not in _annotations(claim):
                self.controller.queue.add(claim_key(namespace, name))

    # --- sync ------------------------------------------------------------------------

    async def sync(self, key: str) -> None:
        try:
            if key.startswith(_CLAIM_PREFIX):
                await self.sync_claim(key.removeprefix(_CLAIM_PREFIX))
            elif key.startswith(_VOLUME_PREFIX):
                await self.sync_volume(key.removeprefix(_VOLUME_PREFIX))
        except errors.StatusError as err:
            if err.code != 409 or err.reason != "Conflict":
                raise
            # Someone wrote the object since the cache saw it (binding races
            # are settled this way): decide again from what is current.
            log.debug("%s: %s; retrying", key, err.message)
            self.controller.queue.add_rate_limited(key)

    async def sync_claim(self, key: str) -> None:
        claim = self.claims.get(key)
        if claim is None:
            return
        if BIND_COMPLETED in _annotations(claim):
            await self._sync_bound_claim(claim)
        else:
            await self._sync_unbound_claim(claim)

    async def _sync_unbound_claim(self, claim: Obj) -> None:
        if _deleting(claim):
            return  # nothing to bind a claim to that is going away
        volume_name = str(_spec(claim).get("volumeName") or "")
        if volume_name:
            await self._sync_prebound_claim(claim, volume_name)
            return
        claim = await self._assign_default_class(claim)
        class_name = claim_class(claim) or ""
        storage_class = self.classes.get(class_name) if class_name else None
        waiting = not self._may_bind_now(claim, storage_class)
        volume = find_best_match(self.volumes.objects(), claim, prebound_only=waiting)
        if volume is not None:
            await self._bind(volume, claim)
            return
        if waiting:
            self._event(
                claim,
                "Normal",
                "WaitForFirstConsumer",
                "waiting for first consumer to be created before binding",
            )
        elif class_name:
            await self._provision(claim, class_name, storage_class)
            return
        else:
            self._event(
                claim,
                "Normal",
                "FailedBinding",
                "no persistent volumes available for this claim and no storage class is set",
            )
        await self._set_claim_status(claim, PENDING, None)

    async def _sync_prebound_claim(self, claim: Obj, volume_name: str) -> None:
        """The user named the volume: bind to it if it is free and fits."""
        volume = self.volumes.get(volume_name)
        if volume is None:
            # It may be created later; its add event requeues the claim.
            await self._set_claim_status(claim, PENDING, None)
            return
        if not _spec(volume).get("claimRef"):
            reason = mismatch(volume, claim)
            if reason is not None:
                self._event(
                    claim,
                    "Warning",
                    "VolumeMismatch",
                    f'Cannot bind to requested volume "{volume_name}": {reason}',
                )
                await self._set_claim_status(claim, PENDING, None)
                return
            await self._bind(volume, claim)
        elif is_volume_bound_to_claim(volume, claim):
            await self._bind(volume, claim)
        elif BOUND_BY_CONTROLLER not in _annotations(claim):
            self._event(
                claim,
                "Warning",
                "FailedBinding",
                f'volume "{volume_name}" already bound to a different claim.',
            )
            await self._set_claim_status(claim, PENDING, None)
        else:
            raise RuntimeError(
                f"invalid binding of claim {clients.key_of(claim)} to volume {volume_name}: "
                "the volume is claimed by another claim"
            )

    async def _sync_bound_claim(self, claim: Obj) -> None:
        volume_name = str(_spec(claim).get("volumeName") or "")
        if not volume_name:
            await self._claim_lost(
                claim,
                "Bound claim has lost reference to PersistentVolume. Data on the volume is lost!",
            )
            return
        volume = self.volumes.get(volume_name) or await self._live(VOLUMES, "", volume_name)
        if volume is None:
            await self._claim_lost(
                claim, "Bound claim has lost its PersistentVolume. Data on the volume is lost!"
            )
            return
        ref = _spec(volume).get("claimRef") or {}
        if not ref or ref.get("uid") == _uid(claim):
            await self._bind(volume, claim)  # finishes whatever is left undone
            return
        await self._claim_lost(
            claim,
            "Two claims are bound to the same volume, this one is bound incorrectly",
            reason="ClaimMisbound",
        )

    async def _claim_lost(self, claim: Obj, message: str, reason: str = "ClaimLost") -> None:
        if _phase(claim) != LOST:
            self._event(claim, "Warning", reason, message)
        await self._set_claim_status(claim, LOST, None)

    def _may_bind_now(
        self, claim: Mapping[str, Any], storage_class: Mapping[str, Any] | None
    ) -> bool:
        """Claims of a WaitForFirstConsumer class bind once a pod uses them
        (Nodeless has no node to choose, so the first consumer is enough)."""
        if (
            storage_class is None
            or storage_class.get("volumeBindingMode") != "WaitForFirstConsumer"
        ):
            return True
        if _annotations(claim).get(SELECTED_NODE):
            return True
        namespace = str(_meta(claim).get("namespace") or "")
        return any(
            _name(claim) in pod_claim_names(pod) and not pod_terminated(pod)
            for pod in self.pods.objects(namespace)
        )

    async def _assign_default_class(self, claim: Obj) -> Obj:
        """Write the default class into a claim that names none (upstream's
        DefaultStorageClass admission and retroactive assignment)."""
        if claim_class(claim) is not None:
            return claim
        found = default_class(self.classes.objects())
        if found is None:
            return claim
        changed = values.clone(claim)
        changed.setdefault("spec", {})["storageClassName"] = _name(found)
        return self.claims.wrote(await self.client.update(CLAIMS, changed, self._options()))

    # --- provisioning ------------------------------------------------------------------

    async def _provision(
        self, claim: Obj, class_name: str, storage_class: Mapping[str, Any] | None
    ) -> None:
        name = f"pvc-{_uid(claim)}"
        existing = self.volumes.get(name)
        if existing is not None and is_volume_bound_to_claim(existing, claim):
            await self._bind(existing, claim)  # made before a crash or restart
            return
        if storage_class is None:
            self._event(
                claim,
                "Warning",
                "ProvisioningFailed",
                f'storageclass.storage.k8s.io "{class_name}" not found',
            )
            await self._set_claim_status(claim, PENDING, None)
            return
        provisioner = str(storage_class.get("provisioner") or "")
        if provisioner.startswith("kubernetes.io/"):
            # An in-tree plugin name (kubernetes.io/no-provisioner for static
            # local volumes): nothing here can provision it.
            self._event(
                claim,
                "Warning",
                "ProvisioningFailed",
                f"no volume plugin matched name: {provisioner}",
            )
            await self._set_claim_status(claim, PENDING, None)
            return
        claim = await self._set_provisioner(claim, provisioner)
        if provisioner != PROVISIONER:
            self._event(
                claim,
                "Normal",
                "ExternalProvisioning",
                f"Waiting for a volume to be created either by the external provisioner "
                f"'{provisioner}' or manually by the system administrator. If volume creation "
                "is delayed, please verify that the provisioner is running and correctly "
                "registered.",
            )
            await self._set_claim_status(claim, PENDING, None)
            return
        try:
            volume = await self._create_volume(claim, name, class_name, storage_class)
        except ProvisioningError as err:
            self._event(claim, "Warning", "ProvisioningFailed", str(err))
            await self._set_claim_status(claim, PENDING, None)
            if err.transient:
                raise
            return
        self._event(
            claim,
            "Normal",
            "ProvisioningSucceeded",
            f"Successfully provisioned volume {name} using {PROVISIONER}",
        )
        await self._bind(volume, claim)

    async def _set_provisioner(self, claim: Obj, provisioner: str) -> Obj:
        """Name the provisioner on the claim, as upstream does before provisioning
        (external provisioners act on this annotation)."""
        annotations = _annotations(claim)
        if annotations.get(STORAGE_PROVISIONER) == provisioner and (
            annotations.get(BETA_STORAGE_PROVISIONER) == provisioner
        ):
            return claim
        changed = values.clone(claim)
        meta = changed.setdefault("metadata", {})
        meta.setdefault("annotations", {}).update(
            {STORAGE_PROVISIONER: provisioner, BETA_STORAGE_PROVISIONER: provisioner}
        )
        return self.claims.wrote(await self.client.update(CLAIMS, changed, self._options()))

    async def _create_volume(
        self, claim: Obj, name: str, class_name: str, storage_class: Mapping[str, Any]
    ) -> Obj:
        if self.volumes_root is None:
            raise ProvisioningError(
                "local-path provisioning is disabled: no volumes directory is configured"
            )
        if _spec(claim).get("selector") is not None:
            raise ProvisioningError("claim.Spec.Selector is not supported for dynamic provisioning")
        if _volume_mode(claim) != "Filesystem":
            raise ProvisioningError(f"{PROVISIONER} supports only the Filesystem volumeMode")
        requests = (_spec(claim).get("resources") or {}).get("requests") or {}
        if requested_storage(claim) is None:
            raise ProvisioningError(
                "the claim requests no storage (spec.resources.requests.storage)"
            )
        path = self.volumes_root / name
        try:
            await asyncio.to_thread(_make_directory, path)
        except OSError as err:
            raise ProvisioningError(
                f"cannot create {path}: {err.strerror or err}", transient=True
            ) from None
        body: Obj = {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {
                "name": name,
                "annotations": {PROVISIONED_BY: PROVISIONER, BOUND_BY_CONTROLLER: "yes"},
            },
            "spec": {
                "capacity": {"storage": requests["storage"]},
                "accessModes": _access_modes(claim) or ["ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": storage_class.get("reclaimPolicy") or "Delete",
                "storageClassName": class_name,
                "volumeMode": "Filesystem",
                "hostPath": {"path": str(path), "type": "DirectoryOrCreate"},
                "claimRef": _claim_ref(claim),
            },
        }
        try:
            created = await self.client.create(VOLUMES, body, self._options())
        except errors.StatusError as err:
            if err.code != 409:
                await asyncio.to_thread(_remove_if_empty, path)
                raise ProvisioningError(
                    f"cannot create PersistentVolume {name}: {err.message}", transient=True
                ) from err
            # Made by an earlier attempt whose answer was lost.
            created = await self.client.get(VOLUMES, "", name)
            if not is_volume_bound_to_claim(created, claim):
                raise
        return self.volumes.wrote(created)

    # --- binding -----------------------------------------------------------------------

    async def _bind(self, volume: Obj, claim: Obj) -> None:
        """Bind both ways, each step skipped when already done, in upstream's
        order: the PV's claimRef (the write that settles races), the PV's phase,
        the claim's volumeName and annotations, the claim's status."""
        if not _claim_ref_matches(volume, claim):
            first_bind = not _spec(volume).get("claimRef")
            changed = values.clone(volume)
            changed.setdefault("spec", {})["claimRef"] = _claim_ref(claim)
            if first_bind:
                changed["metadata"].setdefault("annotations", {})[BOUND_BY_CONTROLLER] = "yes"
            volume = self.volumes.wrote(await self.client.update(VOLUMES, changed, self._options()))
        volume = await self._set_volume_phase(volume, BOUND)
        spec = _spec(claim)
        annotations = _annotations(claim)
        if spec.get("volumeName") != _name(volume) or annotations.get(BIND_COMPLETED) != "yes":
            changed = values.clone(claim)
            if not spec.get("volumeName"):
                changed["metadata"].setdefault("annotations", {})[BOUND_BY_CONTROLLER] = "yes"
            changed["metadata"].setdefault("annotations", {})[BIND_COMPLETED] = "yes"
            changed.setdefault("spec", {})["volumeName"] = _name(volume)
            claim = self.claims.wrote(await self.client.update(CLAIMS, changed, self._options()))
        await self._set_claim_status(claim, BOUND, volume)

    async def _set_claim_status(self, claim: Obj, phase: str, volume: Obj | None) -> Obj:
        status = dict(claim.get("status") or {})
        wanted = dict(status, phase=phase)
        if volume is not None:
            wanted["accessModes"] = _access_modes(volume)
            storage = (_spec(volume).get("capacity") or {}).get("storage")
            wanted["capacity"] = {"storage": storage} if storage is not None else {}
        else:
            wanted.pop("accessModes", None)
            wanted.pop("capacity", None)
        if values.equal(status, wanted):
            return claim
        changed = values.clone(claim)
        changed["status"] = values.clone(wanted)
        return self.claims.wrote(await self.client.update_status(CLAIMS, changed, self._options()))

    async def _set_volume_phase(self, volume: Obj, phase: str, message: str = "") -> Obj:
        status = volume.get("status") or {}
        if status.get("phase") == phase and str(status.get("message") or "") == message:
            return volume
        changed = values.clone(volume)
        new_status = changed.setdefault("status", {})
        if new_status.get("phase") != phase:
            new_status["lastPhaseTransitionTime"] = _rfc3339(self.clock)
        new_status["phase"] = phase
        if message:
            new_status["message"] = message
        else:
            new_status.pop("message", None)
        return self.volumes.wrote(
            await self.client.update_status(VOLUMES, changed, self._options())
        )

    # --- volumes -----------------------------------------------------------------------

    async def sync_volume(self, name: str) -> None:
        volume = self.volumes.get(name)
        if volume is None:
            return
        ref = _spec(volume).get("claimRef") or {}
        if not ref:
            await self._set_volume_phase(volume, AVAILABLE)
            return
        namespace, claim_name = str(ref.get("namespace") or ""), str(ref.get("name") or "")
        if not ref.get("uid"):
            # Pre-bound by a user to a claim by name: the claim's sync binds it.
            await self._set_volume_phase(volume, AVAILABLE)
            self.controller.queue.add(claim_key(namespace, claim_name))
            return
        claim = await self._claim_of(ref)
        if claim is None:
            if _phase(volume) not in (RELEASED, FAILED):
                volume = await self._set_volume_phase(volume, RELEASED)
            await self._reclaim(volume)
            return
        bound_to = _spec(claim).get("volumeName")
        if not bound_to:
            # The claim's side of the binding is not written yet; its sync does that.
            self.controller.queue.add(claim_key(namespace, claim_name))
        elif bound_to == name:
            await self._set_volume_phase(volume, BOUND)
        elif (
            PROVISIONED_BY in _annotations(volume)
            and _spec(volume).get("persistentVolumeReclaimPolicy") == "Delete"
        ):
            # Provisioned for a claim that got bound elsewhere: not needed.
            if _phase(volume) not in (RELEASED, FAILED):
                volume = await self._set_volume_phase(volume, RELEASED)
            await self._reclaim(volume)
        elif BOUND_BY_CONTROLLER in _annotations(volume):
            await self._unbind(volume)
        else:
            # Pre-bound by a user to a claim bound elsewhere: wait for it.
            await self._set_volume_phase(volume, AVAILABLE)

    async def _claim_of(self, ref: Mapping[str, Any]) -> Obj | None:
        """The claim a claimRef names, if it still exists with that uid. A
        cache miss is confirmed with the API before a volume is released."""
        key = f"{ref.get('namespace') or ''}/{ref.get('name') or ''}"
        claim = self.claims.get(key)
        if claim is None or _uid(claim) != ref.get("uid"):
            claim = await self._live(CLAIMS, str(ref.get("namespace") or ""), str(ref.get("name")))
        if claim is None or _uid(claim) != ref.get("uid"):
            return None
        return claim

    async def _live(self, resource: clients.ResourceRef, namespace: str, name: str) -> Obj | None:
        try:
            return await self.client.get(resource, namespace, name)
        except errors.StatusError as err:
            if err.code == 404:
                return None
            raise

    async def _unbind(self, volume: Obj) -> None:
        changed = values.clone(volume)
        changed["spec"].pop("claimRef", None)
        (changed["metadata"].get("annotations") or {}).pop(BOUND_BY_CONTROLLER, None)
        updated = self.volumes.wrote(await self.client.update(VOLUMES, changed, self._options()))
        await self._set_volume_phase(updated, AVAILABLE)

    async def _reclaim(self, volume: Obj) -> None:
        policy = _spec(volume).get("persistentVolumeReclaimPolicy") or "Retain"
        if policy == "Retain":
            return  # the volume and its data stay until an administrator acts
        if policy != "Delete":
            message = f"{policy} is not supported for volume {_name(volume)}: use Delete or Retain"
            if _phase(volume) != FAILED:
                self._event(volume, "Warning", "VolumeFailedRecycle", message)
            await self._set_volume_phase(volume, FAILED, message)
            return
        provisioned_by = _annotations(volume).get(PROVISIONED_BY)
        if provisioned_by and provisioned_by != PROVISIONER:
            return  # its external provisioner deletes it
        if provisioned_by is None:
            message = (
                f'error getting deleter volume plugin for volume "{_name(volume)}": '
                "no deletable volume plugin matched"
            )
            if _phase(volume) != FAILED:
                self._event(volume, "Warning", "VolumeFailedDelete", message)
            await self._set_volume_phase(volume, FAILED, message)
            return
        path = self._own_directory(volume)
        if path is None:
            message = (
                f"volume {_name(volume)} is not a directory this provisioner made under "
                f"{self.volumes_root}; not deleting it"
            )
            if _phase(volume) != FAILED:
                self._event(volume, "Warning", "VolumeFailedDelete", message)
            await self._set_volume_phase(volume, FAILED, message)
            return
        try:
            await asyncio.to_thread(_remove_directory, path)
        except OSError as err:
            self._event(
                volume,
                "Warning",
                "VolumeFailedDelete",
                f"cannot remove {path}: {err.strerror or err}",
            )
            raise
        try:
            await self.client.delete(
                VOLUMES,
                "",
                _name(volume),
                clients.DeleteOptions(preconditions=clients.Preconditions(uid=_uid(volume))),
            )
        except errors.StatusError as err:
            if err.code not in (404, 409):
                self._event(volume, "Warning", "VolumeFailedDelete", err.message)
                raise
        log.info("deleted volume %s and %s", _name(volume), path)

    def _own_directory(self, volume: Mapping[str, Any]) -> Path | None:
        """The volume's directory if it is exactly ``<root>/<pv name>``: nothing
        else is ever deleted, whatever a PV says."""
        if self.volumes_root is None:
            return None
        raw = (_spec(volume).get("hostPath") or {}).get("path")
        if not isinstance(raw, str) or not raw:
            return None
        expected = self.volumes_root / _name(volume)
        path = Path(raw)
        if os.path.normpath(path) != os.path.normpath(expected) or not _name(volume):
            return None
        return path

    # --- helpers -----------------------------------------------------------------------

    def _options(self) -> clients.WriteOptions:
        return clients.WriteOptions(field_manager=COMPONENT)

    def _event(self, obj: Mapping[str, Any], event_type: str, reason: str, message: str) -> None:
        self.recorder.record(dict(obj), event_type, reason, message)


def _claim_ref(claim: Mapping[str, Any]) -> Obj:
    meta = _meta(claim)
    return {
        "kind": "PersistentVolumeClaim",
        "apiVersion": "v1",
        "namespace": meta.get("namespace", ""),
        "name": meta.get("name", ""),
        "uid": meta.get("uid", ""),
        "resourceVersion": meta.get("resourceVersion", ""),
    }


def _claim_ref_matches(volume: Mapping[str, Any], claim: Mapping[str, Any]) -> bool:
    ref = _spec(volume).get("claimRef") or {}
    return (
        ref.get("name") == _name(claim)
        and ref.get("namespace") == _meta(claim).get("namespace")
        and ref.get("uid") == _uid(claim)
    )


def _make_directory(path: Path) -> None:
    # World-writable like rancher's provisioner: the pod's user is unknown here.
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o777)


def _remove_directory(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


def _remove_if_empty(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass
