"""Controller references: who owns an object, and claiming, adopting and
releasing dependents as upstream's ``ControllerRefManager`` does.

A controller owns the objects whose ``ownerReferences`` name it with
``controller: true``. Orphans matching its selector are adopted (a patch
adding the reference, with the owner's uid as precondition); owned objects
that stop matching are released (the reference removed). Objects being
deleted are neither adopted nor released.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from nodeless.api import errors, selectors
from nodeless.client import clients

Obj = dict[str, Any]


def controller_ref(obj: Obj) -> Obj | None:
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return dict(ref)
    return None


def owner_reference(owner: Obj, *, block: bool = True) -> Obj:
    meta = owner.get("metadata") or {}
    return {
        "apiVersion": owner.get("apiVersion", ""),
        "kind": owner.get("kind", ""),
        "name": meta.get("name", ""),
        "uid": meta.get("uid", ""),
        "controller": True,
        "blockOwnerDeletion": block,
    }


def is_owned_by(obj: Obj, owner: Obj) -> bool:
    ref = controller_ref(obj)
    return ref is not None and ref.get("uid") == (owner.get("metadata") or {}).get("uid")


def _deleting(obj: Obj) -> bool:
    return bool((obj.get("metadata") or {}).get("deletionTimestamp"))


async def claim(
    client: clients.ApiClient,
    resource: clients.ResourceRef,
    owner: Obj,
    candidates: Iterable[Obj],
    selector: selectors.LabelSelector,
    *,
    can_adopt: Callable[[], bool] = lambda: True,
) -> list[Obj]:
    """The candidates ``owner`` controls after adopting matching orphans and
    releasing owned objects that no longer match."""
    owner_meta = owner.get("metadata") or {}
    uid = owner_meta.get("uid", "")
    claimed: list[Obj] = []
    for obj in candidates:
        meta = obj.get("metadata") or {}
        labels = meta.get("labels") or {}
        ref = controller_ref(obj)
        matches = selector.matches(labels)
        if ref is not None:
            if ref.get("uid") != uid:
                continue  # someone else's
            if matches or _deleting(obj):
                claimed.append(obj)
                continue
            if _deleting(owner):
                claimed.append(obj)
                continue
            await _release(client, resource, obj, uid)
            continue
        if not matches or _deleting(obj) or _deleting(owner) or not can_adopt():
            continue
        adopted = await _adopt(client, resource, owner, obj)
        if adopted is not None:
            claimed.append(adopted)
    return claimed


async def _adopt(
    client: clients.ApiClient, resource: clients.ResourceRef, owner: Obj, obj: Obj
) -> Obj | None:
    """Add the owner's reference, guarded by the dependent's uid only (as
    upstream): a 404 means it is gone; any other error fails the sync so it
    is retried rather than creating a replacement."""
    meta = obj.get("metadata") or {}
    refs = [*(meta.get("ownerReferences") or []), owner_reference(owner)]
    patch = {"metadata": {"ownerReferences": refs, "uid": meta.get("uid")}}
    try:
        return await client.patch(
            resource, meta.get("namespace", ""), meta.get("name", ""), patch, patch_type="merge"
        )
    except errors.StatusError as err:
        if err.code == 404:
            return None
        raise


async def _release(
    client: clients.ApiClient, resource: clients.ResourceRef, obj: Obj, owner_uid: str
) -> None:
    meta = obj.get("metadata") or {}
    refs = [r for r in meta.get("ownerReferences") or [] if r.get("uid") != owner_uid]
    patch = {"metadata": {"ownerReferences": refs or None, "uid": meta.get("uid")}}
    try:
        await client.patch(
            resource, meta.get("namespace", ""), meta.get("name", ""), patch, patch_type="merge"
        )
    except errors.StatusError as err:
        if err.code not in (404, 422):
            raise
