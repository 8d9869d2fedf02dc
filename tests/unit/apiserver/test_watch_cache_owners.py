"""The watch cache knows which objects name an owner, so deleting an owner
finds its dependents without scanning every object."""

from __future__ import annotations

from typing import Any

import orjson

from nodeless.apiserver import watchcache


def pod(name: str, *owners: tuple[str, bool]) -> dict[str, Any]:
    refs = [
        {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "name": uid,
            "uid": uid,
            "blockOwnerDeletion": b,
        }
        for uid, b in owners
    ]
    meta: dict[str, Any] = {"name": name, "namespace": "default"}
    if refs:
        meta["ownerReferences"] = refs
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta}


def event(kind: str, name: str, obj: dict[str, Any], rev: int) -> watchcache.CacheEvent:
    key = f"/registry/core/pods/default/{name}"
    return watchcache.CacheEvent(kind, watchcache.Entry(key, obj, orjson.dumps(obj), rev), None)


def test_dependents_follow_adds_updates_and_deletes() -> None:
    cache = watchcache.ResourceCache("/registry/core/pods/")
    a, b = "/registry/core/pods/default/a", "/registry/core/pods/default/b"

    cache.apply(event("ADDED", "a", pod("a", ("rs-1", True)), 1))
    cache.apply(event("ADDED", "b", pod("b", ("rs-1", False), ("rs-2", True)), 2))
    assert cache.dependents == {"rs-1": {a: True, b: False}, "rs-2": {b: True}}

    # an update that drops a reference (a release) drops it from the index
    cache.apply(event("MODIFIED", "b", pod("b", ("rs-2", False)), 3))
    assert cache.dependents == {"rs-1": {a: True}, "rs-2": {b: False}}

    cache.apply(event("DELETED", "a", pod("a", ("rs-1", True)), 4))
    cache.apply(event("MODIFIED", "b", pod("b"), 5))
    assert cache.dependents == {}
