"""The generic object store: the write rules every resource shares.

Upstream calls this the generic registry (``k8s.io/apiserver/pkg/registry/
generic/registry.Store``): it owns names and generateName, uid, generation,
resourceVersion and optimistic concurrency, status/main split, finalizers and
deletionTimestamp, propagation policy, and dry-run. Reads come from the watch
cache after it has caught up with the store (read-your-writes).
"""

from __future__ import annotations

import base64
import datetime
import random
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from nodeless.api import applying, conversions, errors, kinds, schemas, times, values
from nodeless.apiserver import defaulting, validating, watchcache
from nodeless.storage import backends

Obj = dict[str, Any]
Clock = Callable[[], datetime.datetime]
Mutation = Callable[[Obj | None], Awaitable[Obj] | Obj]

MAX_OBJECT_BYTES = 1536 * 1024
_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"
_MAX_RETRIES = 20

# Kinds whose DELETE answers with the object rather than a Status (upstream's
# ReturnDeletedObject).
_RETURNS_DELETED = {
    ("", "Pod"),
    ("", "Service"),
    ("", "Namespace"),
    ("apiextensions.k8s.io", "CustomResourceDefinition"),
}


def utc_now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


@dataclass
class WriteOptions:
    """Per-request options shared by the write verbs."""

    dry_run: bool = False
    manager: str = ""
    subresource: str = ""
    # Server-side apply records its own managedFields entry.
    applied: bool = False


@dataclass
class DeleteOptions:
    propagation: str = ""
    grace_period: int | None = None
    precondition_uid: str = ""
    precondition_rv: str = ""
    dry_run: bool = False


@dataclass
class ListPage:
    items: list[Obj]
    revision: int
    continue_token: str = ""
    remaining: int | None = None


@dataclass
class ListQuery:
    namespace: str = ""
    predicate: Callable[[Obj], bool] | None = None
    limit: int = 0
    continue_token: str = ""
    resource_version: str = ""
    resource_version_match: str = ""


class Allocator(Protocol):
    """Something a kind's objects hold outside themselves (a Service's
    ClusterIP): taken before the object is written, given back when the write
    fails or the object goes."""

    def held(self, obj: Obj) -> list[str]: ...

    def prepare_update(self, new: Obj, old: Obj) -> None: ...

    async def allocate(self, new: Obj, old: Obj | None, dry_run: bool) -> list[str]: ...

    async def release(self, allocated: list[str]) -> None: ...


@dataclass
class Store:
    backend: backends.Backend
    cacher: watchcache.Cacher
    registry: kinds.Registry
    clock: Clock = utc_now
    # Schemas of custom resources by (group, version, kind), set by the CRD layer.
    custom_schemas: dict[tuple[str, str, str], schemas.Schema] = field(default_factory=dict)
    after_create: list[Callable[[kinds.Resource, Obj], Awaitable[None]]] = field(
        default_factory=list
    )
    # Admission plug-ins: (resource, new object, old object or None); raise to refuse.
    admitters: list[Callable[[kinds.Resource, Obj, Obj | None], None]] = field(default_factory=list)
    # Allocators by (group, kind) of the objects that hold what they allocate.
    allocators: dict[tuple[str, str], Allocator] = field(default_factory=dict)

    # --- keys and encoding -------------------------------------------------

    @staticmethod
    def key(resource: kinds.Resource, namespace: str, name: str) -> str:
        base = f"{watchcache.REGISTRY_PREFIX}{resource.key_group}/{resource.key_plural}/"
        return f"{base}{namespace}/{name}" if resource.namespaced else f"{base}{name}"

    @staticmethod
    def prefix(resource: kinds.Resource, namespace: str) -> str:
        base = f"{watchcache.REGISTRY_PREFIX}{resource.key_group}/{resource.key_plural}/"
        return f"{base}{namespace}/" if resource.namespaced and namespace else base

    def schema(self, resource: kinds.Resource) -> schemas.Schema | None:
        if resource.custom:
            return self.custom_schemas.get((resource.group, resource.version, resource.kind))
        return schemas.schema_for(resource.group, resource.effective_storage_version, resource.kind)

    def served_schema(self, resource: kinds.Resource) -> schemas.Schema | None:
        """The schema of the version the client speaks (before conversion)."""
        if resource.custom:
            return self.custom_schemas.get((resource.group, resource.version, resource.kind))
        return schemas.schema_for(resource.group, resource.version, resource.kind)

    def storage_resource(self, resource: kinds.Resource) -> kinds.Resource:
        if resource.key_group == "core" and resource.group == "events.k8s.io":
            return self.registry.by_kind("", "v1", "Event") or resource
        return self.registry.storage_resource(resource)

    def present(self, resource: kinds.Resource, obj: Obj) -> Obj:
        """A stored object as ``resource`` serves it."""
        if conversions.needs_conversion(resource):
            return conversions.from_storage(resource, obj)
        if resource.custom and obj.get("apiVersion") != resource.api_version:
            obj = dict(obj, apiVersion=resource.api_version)
        return obj

    def cache(self, resource: kinds.Resource) -> watchcache.ResourceCache:
        return self.cacher.cache(resource.key_group, resource.key_plural)

    # --- reads -------------------------------------------------------------

    async def consistent(self) -> int:
        """Wait until the cache holds every acknowledged write; return that revision."""
        revision = await self.backend.current_revision()
        await self.cacher.wait_for(revision)
        return revision

    async def get_stored(
        self, resource: kinds.Resource, namespace: str, name: str
    ) -> watchcache.Entry | None:
        await self.consistent()
        return self.cache(resource).objects.get(self.key(resource, namespace, name))

    async def get(self, resource: kinds.Resource, namespace: str, name: str) -> Obj:
        entry = await self.get_stored(resource, namespace, name)
        if entry is None:
            raise errors.not_found(resource.plural, resource.group, name)
        return self.present(resource, entry.obj)

    async def list(self, resource: kinds.Resource, query: ListQuery) -> ListPage:
        prefix = self.prefix(resource, query.namespace)
        if query.continue_token:
            return await self._list_continue(resource, query, prefix)
        if query.resource_version_match == "Exact":
            if not query.resource_version:
                raise errors.bad_request("resourceVersionMatch: Exact requires resourceVersion")
            return await self._list_from_store(
                resource, query, prefix, int(query.resource_version), ""
            )
        if query.resource_version not in ("", "0"):
            try:
                wanted = int(query.resource_version)
            except ValueError:
                raise errors.bad_request(
                    f"invalid resource version: {query.resource_version}"
                ) from None
            await self.cacher.wait_for(wanted)
        elif query.resource_version == "":
            await self.consistent()
        revision = self.cacher.revision
        items: list[Obj] = []
        last_key = ""
        remaining = 0
        cache = self.cache(resource)
        more = False
        for entry in cache.iter_prefix(prefix):
            if query.predicate is not None and not query.predicate(entry.obj):
                continue
            if query.limit and len(items) >= query.limit:
                more = True
                remaining += 1
                continue
            items.append(entry.obj)
            last_key = entry.key
        if not more:
            return ListPage(items, revision)
        token = _encode_continue(revision, last_key)
        return ListPage(items, revision, token, remaining if query.predicate is None else None)

    async def _list_continue(
        self, resource: kinds.Resource, query: ListQuery, prefix: str
    ) -> ListPage:
        revision, start = _decode_continue(query.continue_token)
        if not start.startswith(prefix):
            raise errors.bad_request("continue key is not valid for this request")
        return await self._list_from_store(resource, query, prefix, revision, start)

    async def _list_from_store(
        self,
        resource: kinds.Resource,
        query: ListQuery,
        prefix: str,
        revision: int,
        start_after: str,
    ) -> ListPage:
        items: list[Obj] = []
        cursor = start_after + "\x00" if start_after else ""
        last_key = start_after
        while True:
            try:
                page = await self.backend.list(
                    prefix, start_key=cursor, limit=max(query.limit, 500), revision=revision
                )
            except backends.CompactedError:
                raise errors.gone(
                    "The provided continue parameter is too old to display a consistent list result. "
                    "You can start a new list without the continue parameter, or use the continue token "
                    "in this response to retrieve the remainder of the results. Continuing with the "
                    "provided token results in an inconsistent list - objects that were created, "
                    "modified, or deleted between the time the first chunk was returned and now may "
                    "show up in the list."
                ) from None
            except backends.FutureRevisionError:
                raise errors.timeout(f"Too large resource version: {revision}") from None
            for kv in page.items:
                obj = watchcache.decode(kv).obj
                if query.predicate is not None and not query.predicate(obj):
                    continue
                if query.limit and len(items) >= query.limit:
                    return ListPage(items, revision, _encode_continue(revision, last_key))
                items.append(obj)
                last_key = kv.key
            if not page.more:
                return ListPage(items, revision)
            cursor = page.items[-1].key + "\x00"

    # --- writes ------------------------------------------------------------

    def _now(self) -> str:
        return times.rfc3339(self.clock())

    def _encode(self, obj: Obj) -> bytes:
        meta = obj.get("metadata", {})
        rv = meta.pop("resourceVersion", None)
        try:
            data = orjson.dumps(obj)
        finally:
            if rv is not None:
                meta["resourceVersion"] = rv
        if len(data) > MAX_OBJECT_BYTES:
            raise errors.too_large(
                f"Request entity too large: object is {len(data)} bytes, limit is {MAX_OBJECT_BYTES}"
            )
        return data

    def _admit(self, resource: kinds.Resource, obj: Obj, old: Obj | None) -> None:
        for admitter in self.admitters:
            admitter(resource, obj, old)

    def _validate(self, resource: kinds.Resource, obj: Obj) -> None:
        causes = validating.validate_metadata(resource, obj) + validating.kind_problems(
            resource, obj
        )
        name = obj.get("metadata", {}).get("name", "")
        if causes:
            raise errors.invalid(resource.kind, resource.group, name, causes)

    async def _check_namespace(self, resource: kinds.Resource, namespace: str) -> None:
        if not resource.namespaced:
            return
        ns_resource = self.registry.by_kind("", "v1", "Namespace")
        assert ns_resource is not None
        entry = self.cache(ns_resource).objects.get(self.key(ns_resource, "", namespace))
        if entry is None:
            raise errors.not_found("namespaces", "", namespace)
        if (
            entry.obj["metadata"].get("deletionTimestamp")
            or (entry.obj.get("status") or {}).get("phase") == "Terminating"
        ):
            message = f"unable to create new content in namespace {namespace} because it is being terminated"
            err = errors.forbidden(resource.plural, resource.group, "", message)
            # Controllers recognise this cause and stop retrying (upstream's NamespaceTerminating).
            err.causes.append(errors.Cause("NamespaceTerminating", message, "metadata.namespace"))
            raise err

    def _record(
        self, resource: kinds.Resource, old: Obj | None, new: Obj, options: WriteOptions
    ) -> Obj:
        if options.applied:
            # Server-side apply has already written its own managedFields entry.
            return new
        return applying.record_update(
            old,
            new,
            manager=options.manager or "unknown",
            schema=self.schema(resource),
            now=self._now(),
            subresource=options.subresource,
            has_status_subresource=resource.has_status,
        )

    def _has_generation(self, resource: kinds.Resource, obj: Obj) -> bool:
        return resource.custom or ("spec" in obj and resource.kind != "Namespace")

    async def create(
        self,
        resource: kinds.Resource,
        namespace: str,
        obj: Obj,
        options: WriteOptions,
        *,
        owned: bool = False,
    ) -> Obj:
        """Create ``obj``; the answer is the stored object, read-only (the
        watch cache holds it). ``obj`` is copied first unless the caller hands
        it over (``owned``: a request body it decoded and no longer uses)."""
        served = resource
        resource = self.storage_resource(resource)
        obj = conversions.to_storage(served, obj if owned else values.clone(obj))
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise errors.bad_request("metadata must be an object")
        if resource.namespaced:
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        generated = not meta.get("name") and bool(meta.get("generateName"))
        for key in (
            "uid",
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
        ):
            meta.pop(key, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = self._now()
        if self._has_generation(resource, obj):
            meta["generation"] = 1
        else:
            meta.pop("generation", None)
        defaulting.apply_defaults(resource, obj)
        defaulting.initial_status(resource, obj)
        self._prepare_create(resource, obj)
        if "managedFields" not in meta or not meta["managedFields"]:
            meta.pop("managedFields", None)
            obj = self._record(resource, None, obj, options)
        await self.consistent()
        await self._check_namespace(resource, namespace)
        self._admit(resource, obj, None)
        allocator = self.allocators.get((resource.group, resource.kind))
        if allocator is None:
            return await self._create(served, resource, namespace, obj, options, generated)
        self._validate(resource, obj)
        allocated = await allocator.allocate(obj, None, options.dry_run)
        try:
            return await self._create(served, resource, namespace, obj, options, generated)
        except BaseException:
            await allocator.release(allocated)
            raise

    async def _create(
        self,
        served: kinds.Resource,
        resource: kinds.Resource,
        namespace: str,
        obj: Obj,
        options: WriteOptions,
        generated: bool,
    ) -> Obj:
        for attempt in range(8):
            if generated:
                meta = obj["metadata"]
                meta["name"] = meta["generateName"] + "".join(random.choices(_NAME_CHARS, k=5))
            self._validate(resource, obj)
            key = self.key(resource, namespace, obj["metadata"]["name"])
            data = self._encode(obj)
            if options.dry_run:
                if key in self.cache(resource).objects:
                    if generated and attempt < 7:
                        continue
                    raise errors.already_exists(
                        resource.plural, resource.group, obj["metadata"]["name"]
                    )
                return self.present(served, obj)
            try:
                with self.cacher.handing_over(key, data, obj):
                    kv = await self.backend.create(key, data)
            except backends.KeyExistsError:
                if generated and attempt < 7:
                    continue
                raise errors.already_exists(
                    resource.plural, resource.group, obj["metadata"]["name"]
                ) from None
            obj["metadata"]["resourceVersion"] = str(kv.mod_revision)
            for hook in self.after_create:
                await hook(resource, obj)
            return self.present(served, obj)
        raise errors.internal("could not generate a unique name")

    def _prepare_create(self, resource: kinds.Resource, obj: Obj) -> None:
        if resource.group == "batch" and resource.kind == "Job":
            spec = obj.setdefault("spec", {})
            if not spec.get("manualSelector"):
                uid = obj["metadata"]["uid"]
                labels = {"batch.kubernetes.io/controller-uid": uid, "controller-uid": uid}
                spec["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
                template = spec.setdefault("template", {}).setdefault("metadata", {})
                tlabels = template.setdefault("labels", {})
                tlabels.update(labels)
                tlabels.setdefault("batch.kubernetes.io/job-name", obj["metadata"]["name"])
                tlabels.setdefault("job-name", obj["metadata"]["name"])

    async def update(
        self,
        resource: kinds.Resource,
        namespace: str,
        name: str,
        mutate: Mutation,
        options: WriteOptions,
        *,
        create_missing: bool = False,
        copy_current: bool = True,
    ) -> tuple[Obj, bool]:
        """Read, mutate, compare-and-swap; retry on a concurrent write.

        ``mutate`` gets the current object in served form (None if missing) and
        returns the desired one; a ``metadata.resourceVersion`` it keeps is a
        precondition (409 on mismatch), as with PUT. Returns (object, created).
        It gets a copy it may change, or with ``copy_current=False`` (for
        mutations that build a new object) the cached object, read-only. The
        object returned is read-only too: the watch cache holds it.
        """
        served = resource
        resource = self.storage_resource(resource)
        key = self.key(resource, namespace, name)
        for _ in range(_MAX_RETRIES):
            await self.consistent()
            entry = self.cache(resource).objects.get(key)
            if entry is None:
                if not create_missing:
                    raise errors.not_found(served.plural, served.group, name)
                desired = mutate(None)
                if not isinstance(desired, dict):
                    desired = await desired
                desired.setdefault("metadata", {})["name"] = name
                try:
                    return await self.create(served, namespace, desired, options), True
                except errors.StatusError as e:
                    if e.reason == "AlreadyExists":
                        continue
                    raise
            current = self.present(served, values.clone(entry.obj) if copy_current else entry.obj)
            desired = mutate(current)
            if not isinstance(desired, dict):
                desired = await desired
            desired = conversions.to_storage(served, desired)
            wanted_rv = (desired.get("metadata") or {}).get("resourceVersion")
            if wanted_rv and wanted_rv != str(entry.rev):
                raise errors.conflict(
                    resource.plural,
                    resource.group,
                    name,
                    "the object has been modified; please apply your changes to the latest version and try again",
                )
            new = self._prepare_update(resource, entry.obj, desired, options)
            if new is None:
                return self.present(served, entry.obj), False
            allocator = self.allocators.get((resource.group, resource.kind))
            if allocator is None or options.subresource == "status":
                written = await self._write_update(served, resource, key, entry, new, options)
            else:
                allocated = await allocator.allocate(new, entry.obj, options.dry_run)
                try:
                    written = await self._write_update(served, resource, key, entry, new, options)
                except BaseException:
                    await allocator.release(allocated)
                    raise
                if written is None:
                    await allocator.release(allocated)
                elif not options.dry_run:
                    kept = set() if written[1] else set(allocator.held(new))
                    await allocator.release([a for a in allocator.held(entry.obj) if a not in kept])
            if written is None:
                if wanted_rv:
                    raise errors.conflict(
                        resource.plural,
                        resource.group,
                        name,
                        "the object has been modified; please apply your changes to the latest version and try again",
                    )
                continue
            return written[0], False
        raise errors.conflict(
            resource.plural, resource.group, name, "too many concurrent writes; try again"
        )

    async def _write_update(
        self,
        served: kinds.Resource,
        resource: kinds.Resource,
        key: str,
        entry: watchcache.Entry,
        new: Obj,
        options: WriteOptions,
    ) -> tuple[Obj, bool] | None:
        """Write one update attempt: (answer, whether the object is gone), or
        None when another write came first."""
        name = entry.name
        if options.dry_run:
            new["metadata"]["resourceVersion"] = str(entry.rev)
            return self.present(served, new), False
        meta = new["metadata"]
        if (
            meta.get("deletionTimestamp")
            and not meta.get("finalizers")
            and not meta.get("deletionGracePeriodSeconds")
            and not _finalizing_namespace(resource, new)
        ):
            # The last finalizer is gone: the deletion completes now.
            try:
                kv = await self.backend.delete(key, entry.rev)
            except backends.RevisionMismatchError:
                return None
            except backends.KeyNotFoundError:
                raise errors.not_found(served.plural, served.group, name) from None
            meta["resourceVersion"] = str(kv.mod_revision)
            return self.present(served, new), True
        data = self._encode(new)
        try:
            with self.cacher.handing_over(key, data, new):
                kv = await self.backend.update(key, data, entry.rev)
        except backends.RevisionMismatchError:
            return None
        except backends.KeyNotFoundError:
            raise errors.not_found(served.plural, served.group, name) from None
        new["metadata"]["resourceVersion"] = str(kv.mod_revision)
        return self.present(served, new), False

    def _prepare_update(
        self, resource: kinds.Resource, old: Obj, desired: Obj, options: WriteOptions
    ) -> Obj | None:
        """Merge the desired object with the immutable and foreign parts of the
        current one; None when nothing would change (a no-op write).

        ``desired`` is the mutation's own object (a fresh one per attempt) and
        is changed in place; ``old`` is the cache's and is never changed."""
        new = desired
        sent_managed_fields = "managedFields" in (desired.get("metadata") or {})
        meta = new.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise errors.bad_request("metadata must be an object")
        old_meta = old.get("metadata", {})
        if meta.get("name") and meta["name"] != old_meta.get("name"):
            raise errors.bad_request(
                f"the name of the object ({meta['name']}) does not match the name on the URL ({old_meta.get('name')})"
            )
        if (
            resource.namespaced
            and meta.get("namespace")
            and meta["namespace"] != old_meta.get("namespace")
        ):
            raise errors.bad_request(
                "the namespace of the provided object does not match the namespace sent on the request"
            )
        if meta.get("uid") and meta["uid"] != old_meta.get("uid"):
            raise errors.conflict(
                resource.plural,
                resource.group,
                old_meta.get("name", ""),
                "Precondition failed: UID in precondition does not match the UID in the object",
            )
        if options.subresource == "status":
            # Status writes change status only (and the bookkeeping below).
            status = new.get("status")
            # Shallow: only status and metadata's bookkeeping change below, and
            # the parts shared with the cached object are only read from here on.
            base = dict(old)
            base["metadata"] = dict(old.get("metadata") or {})
            if status is None:
                base.pop("status", None)
            else:
                base["status"] = status
            base_meta = base["metadata"]
            if "managedFields" in meta:
                base_meta["managedFields"] = meta["managedFields"]
            new, meta = base, base_meta
        else:
            for key in (
                "name",
                "namespace",
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
            ):
                if key in old_meta:
                    meta[key] = old_meta[key]
                else:
                    meta.pop(key, None)
            meta.pop("generation", None)
            if "generation" in old_meta:
                meta["generation"] = old_meta["generation"]
            # Binding is the one main-resource write that also sets status.
            if resource.has_status and options.subresource != "binding":
                if "status" in old:
                    new["status"] = values.clone(old["status"])
                else:
                    new.pop("status", None)
            if options.subresource != "binding":
                # A binding sets nodeName on a pod defaulted when it was
                # created (upstream's binding storage defaults nothing either);
                # the rest of its spec is the cached pod's, shared.
                defaulting.apply_defaults(resource, new)
            allocator = self.allocators.get((resource.group, resource.kind))
            if allocator is not None:
                allocator.prepare_update(new, old)
            if old_meta.get("deletionTimestamp"):
                added = set(meta.get("finalizers") or []) - set(old_meta.get("finalizers") or [])
                if added:
                    raise errors.forbidden(
                        resource.plural,
                        resource.group,
                        old_meta.get("name", ""),
                        "no new finalizers can be added if the object is being deleted",
                    )
            if "generation" in meta and _spec_changed(old, new):
                meta["generation"] = int(old_meta.get("generation", 1)) + 1
        meta["resourceVersion"] = old_meta.get("resourceVersion", "")
        if not sent_managed_fields and "managedFields" in old_meta:
            meta["managedFields"] = old_meta["managedFields"]
        new = self._record(resource, old, new, options)
        self._validate(resource, new)
        if options.subresource != "status":
            self._admit(resource, new, old)
        if _same(old, new):
            return None
        return new

    async def delete(
        self, resource: kinds.Resource, namespace: str, name: str, options: DeleteOptions
    ) -> tuple[Obj, bool]:
        """Delete or start deleting. Returns (object or Status, finished)."""
        served = resource
        resource = self.storage_resource(resource)
        key = self.key(resource, namespace, name)
        for _ in range(_MAX_RETRIES):
            await self.consistent()
            entry = self.cache(resource).objects.get(key)
            if entry is None:
                raise errors.not_found(served.plural, served.group, name)
            obj = values.clone(entry.obj)
            meta = obj["metadata"]
            if options.precondition_uid and options.precondition_uid != meta.get("uid"):
                raise errors.conflict(
                    resource.plural,
                    resource.group,
                    name,
                    f"Precondition failed: UID in precondition: {options.precondition_uid}, UID in object meta: {meta.get('uid')}",
                )
            if options.precondition_rv and options.precondition_rv != meta.get("resourceVersion"):
                raise errors.conflict(
                    resource.plural,
                    resource.group,
                    name,
                    f"Precondition failed: ResourceVersion in precondition: {options.precondition_rv}, ResourceVersion in object meta: {meta.get('resourceVersion')}",
                )
            pending = self._pending_deletion(resource, obj, options)
            if pending is None:
                if options.dry_run:
                    return self._deleted_answer(served, resource, obj), True
                try:
                    kv = await self.backend.delete(key, entry.rev)
                except backends.RevisionMismatchError:
                    continue
                except backends.KeyNotFoundError:
                    raise errors.not_found(served.plural, served.group, name) from None
                obj["metadata"]["resourceVersion"] = str(kv.mod_revision)
                allocator = self.allocators.get((resource.group, resource.kind))
                if allocator is not None:
                    await allocator.release(allocator.held(obj))
                return self._deleted_answer(served, resource, obj), True
            if _same(entry.obj, pending) or options.dry_run:
                return self.present(served, pending), False
            try:
                kv = await self.backend.update(key, self._encode(pending), entry.rev)
            except backends.RevisionMismatchError:
                continue
            except backends.KeyNotFoundError:
                raise errors.not_found(served.plural, served.group, name) from None
            pending["metadata"]["resourceVersion"] = str(kv.mod_revision)
            return self.present(served, pending), False
        raise errors.conflict(
            resource.plural, resource.group, name, "too many concurrent writes; try again"
        )

    def _deleted_answer(self, served: kinds.Resource, resource: kinds.Resource, obj: Obj) -> Obj:
        if (resource.group, resource.kind) in _RETURNS_DELETED or resource.custom:
            return self.present(served, obj)
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "details": {
                "name": obj["metadata"]["name"],
                "group": served.group,
                "kind": served.plural,
                "uid": obj["metadata"].get("uid"),
            },
        }

    def _dependents(self, resource: kinds.Resource, obj: Obj, blocking_only: bool) -> bool:
        uid = str(obj["metadata"].get("uid") or "")
        namespace = obj["metadata"].get("namespace", "")
        for cache in self.cacher.caches.values():
            for key, blocking in (cache.dependents.get(uid) or {}).items():
                if blocking_only and not blocking:
                    continue
                if resource.namespaced:
                    entry = cache.objects.get(key)
                    if entry is None or entry.namespace != namespace:
                        continue
                return True
        return False

    def _pending_deletion(
        self, resource: kinds.Resource, obj: Obj, options: DeleteOptions
    ) -> Obj | None:
        """The object as it should stand while deletion is pending, or None to
        remove it now."""
        meta = obj["metadata"]
        finalizers = list(meta.get("finalizers") or [])
        now = self.clock()
        policy = options.propagation or "Background"
        if policy not in ("Background", "Foreground", "Orphan"):
            raise errors.invalid(
                "DeleteOptions",
                "",
                "",
                [
                    errors.Cause(
                        "FieldValueNotSupported",
                        f'Unsupported value: "{policy}": supported values: "Foreground", "Background", "Orphan"',
                        "propagationPolicy",
                    )
                ],
            )
        if resource.group == "" and resource.kind == "Namespace":
            if (
                meta.get("deletionTimestamp")
                and not (obj.get("spec") or {}).get("finalizers")
                and not finalizers
            ):
                return None
            if not meta.get("deletionTimestamp"):
                meta["deletionTimestamp"] = times.rfc3339(now)
                meta["deletionGracePeriodSeconds"] = 0
            obj.setdefault("status", {})["phase"] = "Terminating"
            if not (obj.get("spec") or {}).get("finalizers") and not finalizers:
                return None
            return obj
        if (
            policy == "Orphan"
            and "orphan" not in finalizers
            and self._dependents(resource, obj, False)
        ):
            finalizers.append("orphan")
        if (
            policy == "Foreground"
            and "foregroundDeletion" not in finalizers
            and self._dependents(resource, obj, True)
        ):
            finalizers.append("foregroundDeletion")
        grace = 0
        if resource.group == "" and resource.kind == "Pod":
            grace = self._pod_grace(obj, options)
        if not finalizers and grace == 0:
            return None
        if meta.get("deletionTimestamp"):
            # Already deleting: only a shorter grace period changes anything.
            current = meta.get("deletionGracePeriodSeconds") or 0
            if grace < current:
                meta["deletionGracePeriodSeconds"] = grace
                meta["deletionTimestamp"] = times.rfc3339(now + datetime.timedelta(seconds=grace))
                if grace == 0 and not finalizers:
                    return None
            meta["finalizers"] = finalizers
            return obj
        meta["deletionTimestamp"] = times.rfc3339(now + datetime.timedelta(seconds=grace))
        meta["deletionGracePeriodSeconds"] = grace
        if finalizers:
            meta["finalizers"] = finalizers
        return obj

    @staticmethod
    def _pod_grace(pod: Obj, options: DeleteOptions) -> int:
        """Graceful pod deletion: only a pod on a node that has not finished waits."""
        spec = pod.get("spec") or {}
        phase = (pod.get("status") or {}).get("phase")
        if not spec.get("nodeName") or phase in ("Succeeded", "Failed"):
            return 0
        if options.grace_period is not None:
            return max(0, options.grace_period)
        grace = spec.get("terminationGracePeriodSeconds")
        return int(grace) if isinstance(grace, int) else 30


def _finalizing_namespace(resource: kinds.Resource, obj: Obj) -> bool:
    """A Namespace stays while ``spec.finalizers`` is not empty (upstream's
    namespace storage overrides ShouldDeleteDuringUpdate the same way)."""
    is_namespace = resource.group == "" and resource.kind == "Namespace"
    return is_namespace and bool((obj.get("spec") or {}).get("finalizers"))


def _spec_changed(old: Obj, new: Obj) -> bool:
    ignored = ("metadata", "status", "apiVersion", "kind")
    a = {k: v for k, v in old.items() if k not in ignored}
    b = {k: v for k, v in new.items() if k not in ignored}
    return a != b


def _same(old: Obj, new: Obj) -> bool:
    """Equal apart from resourceVersion and managedFields timestamps."""

    def strip(o: Obj) -> Obj:
        meta = dict(o.get("metadata") or {})
        meta.pop("resourceVersion", None)
        meta["managedFields"] = [
            {k: v for k, v in mf.items() if k != "time"} for mf in meta.get("managedFields") or []
        ]
        return dict(o, metadata=meta)

    return strip(old) == strip(new)


def _encode_continue(revision: int, key: str) -> str:
    token = orjson.dumps({"v": "meta.k8s.io/v1", "rv": revision, "start": key})
    return base64.urlsafe_b64encode(token).decode().rstrip("=")


def _decode_continue(token: str) -> tuple[int, str]:
    try:
        padded = token + "=" * (-len(token) % 4)
        data = orjson.loads(base64.urlsafe_b64decode(padded))
        return int(data["rv"]), str(data["start"])
    except (ValueError, KeyError, TypeError):
        raise errors.bad_request(f"continue key is not valid: {token}") from None
