"""ControllerRevisions (apps/v1): the recorded history of a workload's pod template.

StatefulSets (and DaemonSets, should Nodeless grow them) do not keep old
templates in a ReplicaSet the way Deployments do; each distinct template is
snapshotted in a ``ControllerRevision`` owned by the workload, and pods carry
the revision they were made from in the ``controller-revision-hash`` label.
This module is upstream's ``pkg/controller/history`` plus the template patch
both workload controllers store, written against the ``ApiClient`` protocol
so any controller can reuse it:

- ``template_patch`` / ``apply_revision``: a revision's ``data`` is a strategic
  merge patch that replaces ``spec.template``; applying it to the workload
  gives the workload as it was at that revision.
- ``hash_revision`` / ``new_revision``: the name is ``<parent>-<hash>``; the
  hash is 32-bit FNV-1 over the data encoded as Go's ``encoding/json`` would
  (sorted keys, HTML escaped) followed by the collision count, then
  ``rand.SafeEncodeString``, so a template hashes to the same name here as on
  a real cluster (checked against upstream's compatibility test data).
- ``create_revision``: creates one, stepping the collision count when an
  unrelated revision already holds the name.
- ``owned_or_orphaned`` / ``adopt_orphans`` / ``renumber`` / ``prune``: the
  listing, adoption, roll-back renumbering and history limit upstream applies.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import orjson

from nodeless.api import errors, patching, schemas, selectors, values
from nodeless.client import clients
from nodeless.controllers import ownership

Obj = dict[str, Any]

CONTROLLER_REVISIONS = clients.ResourceRef(
    "apps", "v1", "controllerrevisions", True, "ControllerRevision"
)
# The label on a revision holding its hash (``history.ControllerRevisionHashLabel``).
HASH_LABEL = "controller.kubernetes.io/hash"
# The label on a workload's pods naming the revision they were made from
# (``apps/v1`` ControllerRevisionHashLabelKey; StatefulSets put the revision's
# name there, DaemonSets its hash).
POD_REVISION_LABEL = "controller-revision-hash"

# k8s.io/apimachinery/pkg/util/rand: letters and digits that cannot spell words.
_SAFE_ALPHANUMS = "bcdfghjklmnpqrstvwxz2456789"
# Names are at most 253 characters; the hash and dash take the rest.
_MAX_PREFIX = 223
_FNV32_OFFSET = 0x811C9DC5
_FNV32_PRIME = 0x01000193


# --- hashing and naming ------------------------------------------------------------


def go_json(value: Any) -> bytes:
    """``value`` encoded byte for byte as Go's ``json.Marshal`` encodes the same
    ``map[string]interface{}``: compact, keys sorted, ``<``, ``>``, ``&``,
    U+2028 and U+2029 escaped. Revision hashes are computed over these bytes,
    so the encoding must not drift from upstream's."""
    raw = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    # These characters can only occur inside JSON strings, so a plain byte
    # replacement is exact.
    return (
        raw.replace(b"&", b"\\u0026")
        .replace(b"<", b"\\u003c")
        .replace(b">", b"\\u003e")
        .replace("\u2028".encode(), b"\\u2028")
        .replace("\u2029".encode(), b"\\u2029")
    )


def fnv32(data: bytes) -> int:
    """32-bit FNV-1 (multiply, then xor), Go's ``hash/fnv.New32`` that
    ``HashControllerRevision`` uses; not FNV-1a."""
    h = _FNV32_OFFSET
    for byte in data:
        h = (h * _FNV32_PRIME) & 0xFFFFFFFF
        h ^= byte
    return h


def safe_encode(text: str) -> str:
    """``rand.SafeEncodeString``: every character mapped into an alphabet without
    vowels or look-alikes, so generated names never spell words."""
    return "".join(_SAFE_ALPHANUMS[ord(c) % len(_SAFE_ALPHANUMS)] for c in text)


def hash_revision(data: Mapping[str, Any], collision_count: int | None = None) -> str:
    """``history.HashControllerRevision``: the hash of a revision's data, salted
    with the collision count when there is one (StatefulSets always pass one,
    so a count of 0 still adds ``"0"``)."""
    payload = go_json(data)
    if collision_count is not None:
        payload += str(collision_count).encode()
    return safe_encode(str(fnv32(payload)))


def revision_name(prefix: str, hash_: str) -> str:
    return f"{prefix[:_MAX_PREFIX]}-{hash_}"


def template_patch(workload: Mapping[str, Any]) -> Obj:
    """The data a StatefulSet or DaemonSet revision stores: a strategic merge
    patch that puts back ``spec.template`` wholesale (``$patch: replace``), so
    that applying it restores the template whatever the workload holds now."""
    template = values.clone(dict((workload.get("spec") or {}).get("template") or {}))
    template["$patch"] = "replace"
    return {"spec": {"template": template}}


def apply_revision(workload: Mapping[str, Any], revision: Mapping[str, Any]) -> Obj:
    """The workload as it was at ``revision`` (upstream ``ApplyRevision``): its
    data strategically merged into a copy, with the kind's schema."""
    api_version = str(workload.get("apiVersion") or "")
    group, _, version = api_version.rpartition("/")
    schema = schemas.schema_for(group, version, str(workload.get("kind") or ""))
    data = revision.get("data") or {}
    return patching.strategic_merge_patch(workload, data, schema)


def new_revision(
    parent: Mapping[str, Any],
    data: Mapping[str, Any],
    number: int,
    *,
    template_labels: Mapping[str, str] | None = None,
    collision_count: int | None = None,
    annotations: Mapping[str, str] | None = None,
) -> Obj:
    """An unsaved revision of ``parent`` (``history.NewControllerRevision``):
    labelled like the pods so the parent's selector finds it, owned by the
    parent as its controller, named ``<parent>-<hash>``."""
    meta = parent.get("metadata") or {}
    hash_ = hash_revision(data, collision_count)
    labels = dict(template_labels or {})
    labels[HASH_LABEL] = hash_
    revision_meta: Obj = {
        "name": revision_name(str(meta.get("name", "")), hash_),
        "namespace": meta.get("namespace", ""),
        "labels": labels,
        "ownerReferences": [ownership.owner_reference(dict(parent))],
    }
    if annotations:
        revision_meta["annotations"] = dict(annotations)
    return {
        "apiVersion": "apps/v1",
        "kind": "ControllerRevision",
        "metadata": revision_meta,
        "data": values.clone(dict(data)),
        "revision": number,
    }


# --- ordering and comparing -----------------------------------------------------------


def number_of(revision: Mapping[str, Any]) -> int:
    value = revision.get("revision")
    return value if isinstance(value, int) else 0


def name_of(revision: Mapping[str, Any]) -> str:
    return str((revision.get("metadata") or {}).get("name", ""))


def sorted_revisions(revisions: Iterable[Obj]) -> list[Obj]:
    """Oldest first: by revision number, then creation time, then name
    (``history.SortControllerRevisions``)."""

    def key(revision: Obj) -> tuple[int, str, str]:
        meta = revision.get("metadata") or {}
        return (number_of(revision), str(meta.get("creationTimestamp") or ""), name_of(revision))

    return sorted(revisions, key=key)


def next_number(revisions: list[Obj]) -> int:
    """One past the highest revision number (1 for an empty history); expects
    ``revisions`` sorted."""
    return number_of(revisions[-1]) + 1 if revisions else 1


def equal_revision(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether two revisions record the same state. Upstream compares the hash
    labels only when both parse as integers, which safe-encoded hashes almost
    never do, so in effect it compares the data; so does this."""
    return (a.get("data") or {}) == (b.get("data") or {})


def find_equal(revisions: Iterable[Obj], needle: Mapping[str, Any]) -> list[Obj]:
    return [r for r in revisions if equal_revision(r, needle)]


def owned_or_orphaned(
    candidates: Iterable[Obj], parent: Mapping[str, Any], selector: selectors.LabelSelector
) -> list[Obj]:
    """The revisions in the parent's namespace its selector matches that it
    controls or that nobody controls (``ListControllerRevisions``); orphans
    are the parent's to adopt."""
    meta = parent.get("metadata") or {}
    namespace, uid = meta.get("namespace", ""), meta.get("uid", "")
    found: list[Obj] = []
    for revision in candidates:
        rmeta = revision.get("metadata") or {}
        if rmeta.get("namespace", "") != namespace or not selector.matches(rmeta.get("labels")):
            continue
        ref = ownership.controller_ref(revision)
        if ref is None or ref.get("uid") == uid:
            found.append(revision)
    return found


# --- writes ---------------------------------------------------------------------------


async def adopt_orphans(
    client: clients.ApiClient,
    parent: Obj,
    revisions: Iterable[Obj],
    selector: selectors.LabelSelector,
    *,
    can_adopt: Callable[[], bool] = lambda: True,
) -> list[Obj]:
    """Take controller ownership of the orphans among ``revisions``; returns the
    adopted revisions as the API now has them."""
    orphans = [r for r in revisions if ownership.controller_ref(r) is None]
    if not orphans:
        return []
    return await ownership.claim(
        client, CONTROLLER_REVISIONS, parent, orphans, selector, can_adopt=can_adopt
    )


async def create_revision(
    client: clients.ApiClient, parent: Mapping[str, Any], revision: Obj, collision_count: int
) -> tuple[Obj, int]:
    """Save ``revision`` and return it with the collision count used.

    A name already taken by a revision with the same data (ours, created by a
    sync whose cache had not caught up) is that revision. A name held by
    different data, or by another owner, is a hash collision: the count goes
    up and the name with it (``history.CreateControllerRevision``; upstream
    accepts equal data whatever its owner, which would let two workloads of
    the same name share, and later prune, one revision).
    """
    parent_meta = parent.get("metadata") or {}
    parent_name = str(parent_meta.get("name", ""))
    namespace = str(parent_meta.get("namespace", ""))
    count = collision_count
    while True:
        hash_ = hash_revision(revision.get("data") or {}, count)
        candidate = values.clone(revision)
        meta = candidate.setdefault("metadata", {})
        meta["name"] = revision_name(parent_name, hash_)
        meta["namespace"] = namespace
        meta.setdefault("labels", {})[HASH_LABEL] = hash_
        try:
            return await client.create(CONTROLLER_REVISIONS, candidate), count
        except errors.StatusError as err:
            if err.code != 409 or err.reason != "AlreadyExists":
                raise
        existing = await client.get(CONTROLLER_REVISIONS, namespace, meta["name"])
        ref = ownership.controller_ref(existing)
        ours = ref is None or ref.get("uid") == parent_meta.get("uid")
        if ours and equal_revision(existing, candidate):
            return existing, count
        count += 1


async def renumber(client: clients.ApiClient, revision: Obj, number: int) -> Obj:
    """Give an old revision a new number: rolling back to a template recorded
    before re-uses its revision instead of creating a duplicate."""
    if number_of(revision) == number:
        return revision
    meta = revision.get("metadata") or {}
    return await client.patch(
        CONTROLLER_REVISIONS,
        str(meta.get("namespace", "")),
        name_of(revision),
        {"revision": number},
        patch_type="merge",
    )


async def delete_revision(client: clients.ApiClient, revision: Obj) -> None:
    """Delete this revision (and not a newer one reusing its name); gone already
    is fine."""
    meta = revision.get("metadata") or {}
    options = clients.DeleteOptions(
        preconditions=clients.Preconditions(uid=str(meta.get("uid") or ""))
    )
    try:
        await client.delete(
            CONTROLLER_REVISIONS, str(meta.get("namespace", "")), name_of(revision), options
        )
    except errors.StatusError as err:
        if err.code not in (404, 409):
            raise


def history_to_prune(revisions: list[Obj], live: Iterable[str], limit: int) -> list[Obj]:
    """The revisions ``prune`` deletes: the oldest of those no live revision
    name mentions, beyond ``limit``; expects ``revisions`` sorted."""
    keep = set(live)
    history = [r for r in revisions if name_of(r) not in keep]
    excess = len(history) - max(0, limit)
    return history[:excess] if excess > 0 else []


async def prune(
    client: clients.ApiClient, revisions: list[Obj], live: Iterable[str], limit: int
) -> list[Obj]:
    """Keep at most ``limit`` revisions besides the live ones (the current and
    update revisions and any a pod still runs), deleting the oldest first;
    returns what was deleted."""
    doomed = history_to_prune(revisions, live, limit)
    for revision in doomed:
        await delete_revision(client, revision)
    return doomed
