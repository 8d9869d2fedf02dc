"""``ApiClient`` in process: the API server's own verb code, without sockets.

``nodeless up`` runs the virtual nodes, instance manager, scheduler and
controllers in the API server's process; over HTTP each of their informers
would hold its own TLS watch and decode every event again. The loopback client
calls the same ``endpoints.Api`` methods the aiohttp handlers call (body
checks, field validation and pruning, defaulting, admission, managedFields,
Status errors), so only the transport differs:

- Requests are built as ``HttpApiClient`` builds them: the same query
  parameters (``endpoints.Call``), bodies round-tripped through JSON (the
  caller's dict is never touched), the same default field manager
  (``nodeless-client``, from the User-Agent the HTTP client sends).
- Failures are the ``StatusError`` (``clients.Gone`` for 410) the HTTP client
  would rebuild from the server's ``Status``; an unexpected exception is a 500
  InternalError, as the server's middleware makes it.
- Results of ``get``, ``list`` and writes are fresh objects the caller owns.
- ``watch`` registers directly on the watch cache. Each change is decoded once
  from the cache's JSON and the same dict is handed to every watch of this
  client that sees it (informers of several components share it): watch event
  objects are read-only, as ``informers.Informer`` documents for its cache.
  Pass ``share_watch_objects=False`` for a private copy per watch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator, Iterator, Mapping
from types import TracebackType
from typing import Any, Self, cast

import orjson
from multidict import MultiDict

from nodeless.api import errors, kinds
from nodeless.apiserver import endpoints, metrics, requests, watchcache
from nodeless.client import clients

log = logging.getLogger(__name__)

SYSTEM_USER = endpoints.User("system:nodeless", "", ("system:masters", "system:authenticated"))
# What HttpApiClient sends, so managedFields name the same default manager.
DEFAULT_USER_AGENT = "nodeless-client"
# Decoded watch objects kept for sharing between watches; watches consume an
# event within moments of each other, so a short memory finds nearly all.
SHARED_OBJECTS = 4096
# Events handed out before a watch lets other tasks run.
EVENTS_PER_TURN = 500
_NOT_ALLOWED = "the server does not allow this method on the requested resource"
_UNAVAILABLE = ("log", "exec", "attach", "portforward", "proxy")

PODS = clients.resolve("v1", "pods")


class LoopbackApiClient:
    """The Kubernetes API of an in-process ``endpoints.Api``, as an ``ApiClient``."""

    def __init__(
        self,
        api: endpoints.Api,
        *,
        user: endpoints.User = SYSTEM_USER,
        user_agent: str = DEFAULT_USER_AGENT,
        share_watch_objects: bool = True,
    ) -> None:
        self.api = api
        self._user = user
        self._user_agent = user_agent
        self._share = share_watch_objects
        self._shared: dict[tuple[int, clients.ResourceRef], tuple[watchcache.Entry, Any]] = {}

    async def close(self) -> None:
        self._shared.clear()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # --- requests -------------------------------------------------------------------

    def _target(
        self,
        ref: clients.ResourceRef,
        namespace: str = "",
        name: str = "",
        subresource: str = "",
    ) -> tuple[kinds.Resource, requests.Target]:
        """What the URL ``HttpApiClient`` would build for this request resolves to."""
        scoped = bool(ref.namespaced and namespace)
        target = requests.Target(
            ref.group,
            ref.version,
            ref.plural,
            namespace if scoped else "",
            name,
            subresource,
            scoped=scoped,
        )
        return self.api.resource_for(target), target

    def _call(self, method: str, params: Mapping[str, str] | None = None) -> endpoints.Call:
        return endpoints.Call(method, MultiDict(params or {}), self._user, self._user_agent)

    @staticmethod
    def _write_params(options: clients.WriteOptions | None) -> dict[str, str]:
        params: dict[str, str] = {}
        if options is None:
            return params
        if options.field_manager:
            params["fieldManager"] = options.field_manager
        if options.dry_run:
            params["dryRun"] = "All"
        if options.field_validation:
            params["fieldValidation"] = options.field_validation
        return params

    # --- reads -----------------------------------------------------------------------

    async def get(self, resource: clients.ResourceRef, namespace: str, name: str) -> clients.Object:
        with _served("GET", resource):
            served, target = self._target(resource, namespace, name)
            self.api.verb(served, "get")
            if served.group == metrics.GROUP:
                return await self.api.read_metrics(served, target.namespace, target.name, None)
            obj = await self.api.store.get(served, target.namespace, target.name)
        return _fresh(obj)

    async def list(
        self,
        resource: clients.ResourceRef,
        namespace: str = "",
        *,
        label_selector: str = "",
        field_selector: str = "",
        limit: int = 0,
        continue_token: str = "",
        resource_version: str = "",
    ) -> clients.ListResult:
        params = clients.list_params(
            label_selector, field_selector, limit, continue_token, resource_version
        )
        with _served("LIST", resource):
            served, target = self._target(resource, namespace)
            self.api.verb(served, "list")
            if served.group == metrics.GROUP:
                listed = await self.api.read_metrics(
                    served, target.namespace, "", label_selector or None
                )
                return clients.list_result(resource, listed["metadata"], listed["items"])
            page, meta = await self.api.list_page(self._call("GET", params).query, served, target)
            present = self.api.store.present
            items: list[clients.Object] = orjson.loads(
                orjson.dumps([present(served, item) for item in page.items])
            )
        return clients.list_result(resource, meta, items)

    async def watch(
        self,
        resource: clients.ResourceRef,
        namespace: str = "",
        *,
        name: str = "",
        label_selector: str = "",
        field_selector: str = "",
        resource_version: str = "",
        allow_bookmarks: bool = True,
        timeout_seconds: int | None = None,
    ) -> AsyncGenerator[clients.WatchEvent, None]:
        params = clients.watch_params(
            name=name,
            label_selector=label_selector,
            field_selector=field_selector,
            resource_version=resource_version,
            allow_bookmarks=allow_bookmarks,
            timeout_seconds=timeout_seconds,
        )
        api = self.api
        with _served("WATCH", resource):
            served, target = self._target(resource, namespace)
            self.api.verb(served, "watch")
            try:
                opened = await api.open_watch(self._call("GET", params).query, served, target)
            except watchcache.WatchGone as gone:
                raise errors.gone(str(gone)) from None
        watcher = opened.watcher
        try:
            converts = api.watch_converts(served)
            turn = 0
            for entry in opened.initial_entries:
                yield clients.WatchEvent("ADDED", self._decoded(resource, served, entry, converts))
                turn += 1
                if turn >= EVENTS_PER_TURN:
                    turn = 0
                    await asyncio.sleep(0)
            if opened.initial:
                yield self._bookmark(resource, served, opened.snapshot_rev, initial_end=True)
            timeout = opened.timeout
            deadline = time.monotonic() + timeout if timeout else None
            last_rev = opened.snapshot_rev
            queue = watcher.queue
            while not api.shutting_down.is_set():
                if deadline is not None and deadline - time.monotonic() <= 0:
                    break
                item: tuple[str, watchcache.CacheEvent] | None
                if queue.empty():
                    turn = 0
                    wait = api.bookmark_interval
                    if deadline is not None:
                        wait = min(wait, deadline - time.monotonic())
                    try:
                        # asyncio.timeout, not wait_for: no task per wait
                        async with asyncio.timeout(wait):
                            item = await queue.get()
                    except TimeoutError:
                        if opened.bookmarks and (deadline is None or time.monotonic() < deadline):
                            rev = max(last_rev, api.store.cacher.revision)
                            yield self._bookmark(resource, served, rev)
                        continue
                else:
                    turn += 1
                    if turn >= EVENTS_PER_TURN:
                        # A long backlog must not starve the rest of the process.
                        turn = 0
                        await asyncio.sleep(0)
                    item = queue.get_nowait()
                if item is None:
                    break
                kind, event = item
                last_rev = event.rev
                obj = self._decoded(resource, served, event.entry, converts)
                yield clients.WatchEvent(cast(clients.EventType, kind), obj)
        finally:
            watcher.close()

    def _decoded(
        self,
        ref: clients.ResourceRef,
        served: kinds.Resource,
        entry: watchcache.Entry,
        converts: bool,
    ) -> clients.Object:
        """The object of a cache entry as a watch serves it, decoded once and
        shared by this client's watches (see the module docstring)."""
        if (
            self._share
            and not converts
            and entry.obj.get("apiVersion") == ref.api_version
            and entry.obj.get("kind") == ref.kind
        ):
            # The cache's own object: every watch and the cache share it,
            # read-only (``Cacher.verify`` checks that nobody wrote to it).
            return entry.obj
        key = (id(entry), ref)
        if self._share:
            hit = self._shared.get(key)
            if hit is not None and hit[0] is entry:
                shared: clients.Object = hit[1]
                return shared
        if converts:
            obj: clients.Object = _fresh(self.api.store.present(served, entry.obj))
        else:
            obj = orjson.loads(entry.raw)
        if ref.kind:
            obj.setdefault("apiVersion", ref.api_version)
            obj.setdefault("kind", ref.kind)
        if self._share:
            shared_objects = self._shared
            if len(shared_objects) >= SHARED_OBJECTS:
                # Oldest first: dicts keep insertion order.
                del shared_objects[next(iter(shared_objects))]
            # The entry is held with its object, so its id cannot be reused meanwhile.
            shared_objects[key] = (entry, obj)
        return obj

    def _bookmark(
        self,
        ref: clients.ResourceRef,
        served: kinds.Resource,
        rev: int,
        initial_end: bool = False,
    ) -> clients.WatchEvent:
        obj = self.api.bookmark_object(served, rev, initial_end)
        return clients.WatchEvent("BOOKMARK", clients.copy_with_type(ref, obj))

    # --- writes ------------------------------------------------------------------------

    async def create(
        self,
        resource: clients.ResourceRef,
        obj: clients.Object,
        options: clients.WriteOptions | None = None,
    ) -> clients.Object:
        namespace = clients.namespace_of(resource, obj)
        body, raw = _wire(obj)
        call = self._call("POST", self._write_params(options))
        with _served("POST", resource):
            served, target = self._target(resource, namespace)
            self.api.verb(served, "create")
            created, _warnings = await self.api.create(
                call, served, target, body, raw, requests.JSON
            )
        return _fresh(created) if _kept(options) else created

    async def update(
        self,
        resource: clients.ResourceRef,
        obj: clients.Object,
        options: clients.WriteOptions | None = None,
    ) -> clients.Object:
        return await self._put(resource, obj, "", options)

    async def update_status(
        self,
        resource: clients.ResourceRef,
        obj: clients.Object,
        options: clients.WriteOptions | None = None,
    ) -> clients.Object:
        return await self._put(resource, obj, "status", options)

    async def _put(
        self,
        resource: clients.ResourceRef,
        obj: clients.Object,
        subresource: str,
        options: clients.WriteOptions | None,
    ) -> clients.Object:
        namespace = clients.namespace_of(resource, obj)
        name = clients.name_of(obj)
        return await self._request(
            "PUT",
            resource,
            namespace,
            name,
            subresource,
            obj,
            self._write_params(options),
            fresh=_kept(options),
        )

    async def patch(
        self,
        resource: clients.ResourceRef,
        namespace: str,
        name: str,
        patch: clients.Patch,
        *,
        patch_type: clients.PatchType = "merge",
        subresource: str = "",
        force: bool = False,
        options: clients.WriteOptions | None = None,
    ) -> clients.Object:
        params = self._write_params(options)
        if force:
            params["force"] = "true"
        return await self._request(
            "PATCH",
            resource,
            namespace,
            name,
            subresource,
            patch,
            params,
            content_type=PATCH_CONTENT_TYPES[patch_type],
            fresh=_kept(options),
        )

    async def delete(
        self,
        resource: clients.ResourceRef,
        namespace: str,
        name: str,
        options: clients.DeleteOptions | None = None,
    ) -> clients.Object:
        body = (options or clients.DeleteOptions()).to_body()
        params = {"dryRun": "All"} if options is not None and options.dry_run else None
        return await self._request("DELETE", resource, namespace, name, "", body, params)

    async def bind(
        self,
        namespace: str,
        pod_name: str,
        node_name: str,
        *,
        annotations: Mapping[str, str] | None = None,
        pod_uid: str = "",
    ) -> None:
        metadata: dict[str, Any] = {"name": pod_name, "namespace": namespace}
        if annotations:
            metadata["annotations"] = dict(annotations)
        if pod_uid:
            metadata["uid"] = pod_uid
        binding = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": metadata,
            "target": {"apiVersion": "v1", "kind": "Node", "name": node_name},
        }
        # The answer (a Status) is not returned: no copy of it is made.
        await self._request(
            "POST", PODS, namespace, pod_name, "binding", binding, None, fresh=False
        )

    async def get_subresource(
        self, resource: clients.ResourceRef, namespace: str, name: str, subresource: str
    ) -> clients.Object:
        return await self._request("GET", resource, namespace, name, subresource, None, None)

    async def update_subresource(
        self,
        resource: clients.ResourceRef,
        namespace: str,
        name: str,
        subresource: str,
        obj: clients.Object,
        options: clients.WriteOptions | None = None,
    ) -> clients.Object:
        params = self._write_params(options)
        return await self._request(
            "PUT", resource, namespace, name, subresource, obj, params, fresh=_kept(options)
        )

    async def create_subresource(
        self,
        resource: clients.ResourceRef,
        namespace: str,
        name: str,
        subresource: str,
        obj: clients.Object,
        options: clients.WriteOptions | None = None,
    ) -> clients.Object:
        params = self._write_params(options)
        return await self._request(
            "POST", resource, namespace, name, subresource, obj, params, fresh=_kept(options)
        )

    async def _request(
        self,
        method: str,
        resource: clients.ResourceRef,
        namespace: str,
        name: str,
        subresource: str,
        obj: Any,
        params: Mapping[str, str] | None,
        *,
        content_type: str = requests.JSON,
        fresh: bool = True,
    ) -> clients.Object:
        """One request on a named object, routed as ``Api._dispatch`` and
        ``Api._subresource`` route it; the answer is the caller's own copy
        unless ``fresh`` is false (the caller drops it)."""
        body, raw = _wire(obj) if obj is not None else (None, b"")
        call = self._call(method, params)
        with _served(method, resource):
            served, target = self._target(resource, namespace, name, subresource)
            result = await self._route(call, served, target, body, raw, content_type)
        return _fresh(result) if fresh else result

    async def _route(
        self,
        call: endpoints.Call,
        resource: kinds.Resource,
        target: requests.Target,
        body: Any,
        raw: bytes,
        content_type: str,
    ) -> dict[str, Any]:
        api = self.api
        method = call.method
        sub = target.subresource
        if not sub:
            if method == "GET":
                api.verb(resource, "get")
                return await api.store.get(resource, target.namespace, target.name)
            if method == "PUT":
                api.verb(resource, "update")
                result, _, _ = await api.update(call, resource, target, "", body, raw, content_type)
                return result
            if method == "PATCH":
                api.verb(resource, "patch")
                result, _, _ = await api.patch(call, resource, target, "", content_type, body, raw)
                return result
            if method == "DELETE":
                api.verb(resource, "delete")
                return await api.delete(call.query, resource, target, body)
            raise errors.method_not_allowed(_NOT_ALLOWED)
        if resource.subresource(sub) is None:
            raise errors.path_not_found()
        if sub == "status":
            if method == "GET":
                return await api.store.get(resource, target.namespace, target.name)
            if method == "PUT":
                result, _, _ = await api.update(
                    call, resource, target, "status", body, raw, content_type
                )
                return result
            if method == "PATCH":
                result, _, _ = await api.patch(
                    call, resource, target, "status", content_type, body, raw
                )
                return result
        elif sub == "scale":
            if method == "GET":
                return await api.get_scale(resource, target)
            if method not in ("PUT", "PATCH"):
                raise errors.method_not_allowed(_NOT_ALLOWED)
            return await api.write_scale(call, resource, target, body, content_type)
        elif sub == "binding" and method == "POST":
            return await api.bind(call, resource, target, body)
        elif sub == "eviction" and method == "POST":
            return await api.evict(call.query, resource, target, body)
        elif sub == "token" and method == "POST":
            return await api.token(resource, target, body)
        elif sub == "finalize" and method == "PUT":
            return await api.finalize(call, resource, target, body)
        elif sub in _UNAVAILABLE:
            await api.store.get(resource, target.namespace, target.name)
            raise errors.StatusError(
                400,
                "BadRequest",
                f"{sub} is not available: this Nodeless server runs without an instance provider",
            )
        raise errors.method_not_allowed(_NOT_ALLOWED)


PATCH_CONTENT_TYPES: dict[str, str] = {
    "merge": requests.MERGE_PATCH,
    "strategic": requests.STRATEGIC_PATCH,
    "json": requests.JSON_PATCH,
    "apply": requests.APPLY_PATCH,
}


@contextlib.contextmanager
def _served(what: str, resource: clients.ResourceRef) -> Iterator[None]:
    """Failures as the HTTP client reports them: the server's Status rebuilt
    (``Gone`` for 410), anything unexpected a 500 as the middleware makes it."""
    try:
        yield
    except errors.StatusError as err:
        raise clients.status_error(err.to_status(), err.code) from err
    except Exception as exc:
        log.exception("internal error serving loopback %s %s", what, resource)
        internal = errors.internal(str(exc))
        raise clients.status_error(internal.to_status(), internal.code) from exc


def _wire(obj: Any) -> tuple[Any, bytes]:
    """A request body as the server decodes it from the wire (the caller's
    object stays untouched), and the raw body the server checks for duplicate
    fields: none here, since the JSON of a dict cannot repeat a key, so the
    check (a pure-Python parse of every body) is skipped."""
    return orjson.loads(orjson.dumps(obj)), b""


def _kept(options: clients.WriteOptions | None) -> bool:
    """Whether the caller keeps a write's answer (and so needs its own copy)."""
    return options is None or options.keep_result


def _fresh(obj: clients.Object) -> clients.Object:
    """A deep copy the caller owns, in exactly the JSON forms a response has."""
    copied: clients.Object = orjson.loads(orjson.dumps(obj))
    return copied
