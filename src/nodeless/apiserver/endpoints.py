"""The HTTP endpoints: one aiohttp handler that routes every resource request.

Routing is by parsing the path rather than by registering routes, because
custom resources appear and disappear at run time.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from multidict import MultiMapping

from nodeless import __version__
from nodeless.api import (
    applying,
    disruptionbudgets,
    errors,
    kinds,
    memos,
    patching,
    schemas,
    selectors,
    tables,
    times,
    values,
)
from nodeless.apiserver import (
    discovery,
    metrics,
    openapi,
    portforwards,
    remotecommands,
    requests,
    serviceaccounts,
    spdyforwards,
    storing,
    validating,
    watchcache,
)
from nodeless.serverless import billing

log = logging.getLogger(__name__)

TABLE_MARKER = "as=Table"
JSON_CT = "application/json"
KUBE_VERSION = "v1.37.0"
BOOKMARK_INTERVAL = 30.0


@dataclass(frozen=True)
class User:
    name: str
    uid: str = ""
    groups: tuple[str, ...] = ()


USER_KEY = web.RequestKey("user", User)


@dataclass(frozen=True)
class Call:
    """What the verb logic reads from a request besides its path and body, as
    plain values: the aiohttp handlers and the in-process loopback client
    (``loopback.LoopbackApiClient``) run the same code with it."""

    method: str
    query: MultiMapping[str]
    user: User
    user_agent: str = ""

    @classmethod
    def of(cls, request: web.Request) -> Call:
        return cls(
            request.method,
            request.query,
            request[USER_KEY],
            request.headers.get("User-Agent", ""),
        )


# Field problems of bodies made from a template (named by generateName: a
# controller's pods), by their bytes and media type: each of its creates sends
# the same body (keys are digests of the bodies: small whatever a body's
# size); of small list-free bodies, by their shape.
_TEMPLATED_PROBLEMS: memos.BoundedMemo[tuple[Any, ...], tuple[Any, list[tuple[str, str]]]] = (
    memos.BoundedMemo(512)
)


def _field_problems(
    obj: Any, schema: schemas.Schema | None, raw: bytes, content_type: str
) -> list[tuple[str, str]]:
    metadata = obj.get("metadata") if isinstance(obj, dict) else None
    if not isinstance(metadata, dict) or not metadata.get("generateName"):
        # Unknown fields and wrong types are a matter of keys and types: a
        # list-free object (an Event) is answered by its shape.
        form = values.shape(obj) if isinstance(metadata, dict) else None
        if form is None:
            return list(validating.walk_fields(obj, schema, ""))
        shaped = _TEMPLATED_PROBLEMS.get((id(schema), form))
        if shaped is not None and shaped[0] is schema:
            return list(shaped[1])
        problems = list(validating.walk_fields(obj, schema, ""))
        _TEMPLATED_PROBLEMS.put((id(schema), form), (schema, problems))
        return list(problems)
    # In-process clients send no bytes: the object's own JSON is the key. The
    # same bytes read as YAML need not be the same object as read as JSON.
    digest = hashlib.blake2b(raw or orjson.dumps(obj), digest_size=16).digest()
    key = (id(schema), requests.media_type(content_type) if raw else "", digest)
    known = _TEMPLATED_PROBLEMS.get(key)
    if known is not None and known[0] is schema:
        return list(known[1])
    problems = list(validating.walk_fields(obj, schema, ""))
    # The schema is held so that its id is not reused while it is a key.
    _TEMPLATED_PROBLEMS.put(key, (schema, problems))
    return list(problems)


@dataclass
class OpenWatch:
    """A registered watch: the watcher, the objects to announce first as ADDED,
    the revision they were read at, and the request's options."""

    watcher: watchcache.Watcher
    initial_entries: list[watchcache.Entry]
    snapshot_rev: int
    initial: bool
    bookmarks: bool
    timeout: int | None


def json_response(
    data: Any, status: int = 200, headers: dict[str, str] | None = None, content_type: str = JSON_CT
) -> web.Response:
    return web.Response(
        body=orjson.dumps(data),
        status=status,
        headers={"Content-Type": content_type, **(headers or {})},
    )


def raw_response(body: bytes, status: int = 200) -> web.Response:
    return web.Response(body=body, status=status, headers={"Content-Type": JSON_CT})


def status_response(err: errors.StatusError) -> web.Response:
    headers = {}
    if err.retry_after_seconds:
        headers["Retry-After"] = str(err.retry_after_seconds)
    return json_response(err.to_status(), err.code, headers)


@dataclass(frozen=True)
class PodLogOptions:
    """A pods/log request's options (upstream ``PodLogOptions``), validated;
    ``since`` is absolute, from ``sinceTime`` or ``sinceSeconds``."""

    container: str = ""
    follow: bool = False
    previous: bool = False
    timestamps: bool = False
    tail_lines: int | None = None
    since: datetime.datetime | None = None
    limit_bytes: int | None = None


# Serves pods/log: (namespace, pod name, options with the container resolved)
# -> the log's bytes. Raises ``errors.StatusError`` (before the first chunk)
# for what has no log, in the kubelet's words. Registered by whatever runs
# the instances; the apiserver itself knows no provider.
LogsSource = Callable[[str, str, PodLogOptions], Awaitable[AsyncIterator[bytes]]]

LOG_CONTENT_TYPE = "text/plain"
_LOG_DISCONNECT_POLL = 1.0


def parse_log_options(query: MultiMapping[str], name: str, now: datetime.datetime) -> PodLogOptions:
    """The options of ``GET pods/{name}/log``, checked as upstream's
    ``ValidatePodLogOptions`` checks them (422 ``PodLogOptions "name" is
    invalid``); malformed numbers and times are 400s."""
    tail_lines = requests.int_param("tailLines", query.get("tailLines"))
    limit_bytes = requests.int_param("limitBytes", query.get("limitBytes"))
    since_seconds = requests.int_param("sinceSeconds", query.get("sinceSeconds"))
    since_time: datetime.datetime | None = None
    raw_time = query.get("sinceTime")
    if raw_time:
        try:
            since_time = datetime.datetime.fromisoformat(raw_time.replace("Z", "+00:00"))
        except ValueError:
            raise errors.bad_request(f"invalid value for sinceTime: {raw_time!r}") from None
        if since_time.tzinfo is None:
            raise errors.bad_request(f"invalid value for sinceTime: {raw_time!r}")
    causes: list[errors.Cause] = []
    if tail_lines is not None and tail_lines < 0:
        causes.append(
            errors.Cause(
                "FieldValueInvalid",
                f"Invalid value: {tail_lines}: must be greater than or equal to 0",
                "tailLines",
            )
        )
    if limit_bytes is not None and limit_bytes < 1:
        causes.append(
            errors.Cause(
                "FieldValueInvalid",
                f"Invalid value: {limit_bytes}: must be greater than 0",
                "limitBytes",
            )
        )
    if since_seconds is not None and since_time is not None:
        causes.append(
            errors.Cause(
                "FieldValueForbidden",
                "Forbidden: at most one of `sinceTime` or `sinceSeconds` may be specified",
                "",
            )
        )
    elif since_seconds is not None and since_seconds < 1:
        causes.append(
            errors.Cause(
                "FieldValueInvalid",
                f"Invalid value: {since_seconds}: must be greater than 0",
                "sinceSeconds",
            )
        )
    if causes:
        raise errors.invalid("PodLogOptions", "", name, causes)
    since = since_time
    if since_seconds is not None:
        since = now - datetime.timedelta(seconds=since_seconds)
    return PodLogOptions(
        container=query.get("container", ""),
        follow=requests.bool_param(query.get("follow")),
        previous=requests.bool_param(query.get("previous")),
        timestamps=requests.bool_param(query.get("timestamps")),
        tail_lines=tail_lines,
        since=since,
        limit_bytes=limit_bytes,
    )


def log_container(pod: dict[str, Any], container: str) -> str:
    """The container a log request reads, as upstream's ``validateContainer``
    picks it: the only one when none is named; a 400 otherwise."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    name = meta.get("name", "")
    apps = [str(c.get("name", "")) for c in spec.get("containers") or []]
    every = [
        str(c.get("name", ""))
        for key in ("initContainers", "containers", "ephemeralContainers")
        for c in spec.get(key) or []
    ]
    if not container:
        if len(apps) == 1:
            return apps[0]
        if not apps:
            raise errors.bad_request(f"a container name must be specified for pod {name}")
        raise errors.bad_request(
            f"a container name must be specified for pod {name}, choose one of: [{' '.join(every)}]"
        )
    if container not in every:
        raise errors.bad_request(f"container {container} is not valid for pod {name}")
    return container


def _wants_table(accept: str) -> bool:
    return TABLE_MARKER in accept and "g=meta.k8s.io" in accept


@dataclass
class Api:
    """Everything a request handler needs: the store, the registry, the clock."""

    store: storing.Store
    registry: kinds.Registry
    address: str = ""
    openapi_cache: openapi.OpenAPICache = field(default_factory=openapi.OpenAPICache)
    bookmark_interval: float = BOOKMARK_INTERVAL
    printer_columns: dict[tuple[str, str, str], list[dict[str, Any]]] = field(default_factory=dict)
    scale_paths: dict[tuple[str, str, str], dict[str, str]] = field(default_factory=dict)
    shutting_down: asyncio.Event = field(default_factory=asyncio.Event)
    token_reviewer: Callable[[str], User | None] | None = None
    tokens: serviceaccounts.TokenIssuer = field(
        default_factory=serviceaccounts.TokenIssuer.ephemeral
    )
    # Set once something runs the pods (``cli.main``); None: no pod has a log.
    logs_source: LogsSource | None = None
    # Set likewise; None: nothing to exec in or attach to.
    stream_source: remotecommands.StreamSource | None = None
    port_forward_source: portforwards.PortForwardSource | None = None
    metrics_source: metrics.MetricsSource | None = None

    @property
    def clock(self) -> Callable[[], datetime.datetime]:
        return self.store.clock

    def _bills(self) -> list[dict[str, Any]]:
        """Every bill from the watch cache: ended instances' BillingRecords and
        running ones' Instance records, with their owners followed to the
        workload (a ReplicaSet's Deployment, a Job's CronJob)."""
        out: list[dict[str, Any]] = []
        records = self.registry.by_kind("nodeless.dev", "v1", "BillingRecord")
        instances = self.registry.by_kind("nodeless.dev", "v1", "Instance")
        if records is not None:
            out += [e.obj for e in self.store.cache(records).objects.values()]
        if instances is None:
            return out
        for entry in list(self.store.cache(instances).objects.values()):
            bill = billing.open_bill(entry.obj)
            namespace = str(bill["spec"].get("namespace") or "")
            ref = bill["spec"].get("owner")
            # The owner chain, read from the watch cache (the sync twin of billing.top_owner).
            for _ in range(billing.MAX_OWNER_DEPTH):
                lookup = billing.owner_lookup(ref) if ref else None
                resource = (
                    self.registry.by_kind(lookup[0], lookup[1], lookup[3]) if lookup else None
                )
                if ref is None or resource is None:
                    break
                parent = self.store.cache(resource).objects.get(
                    self.store.key(resource, namespace, str(ref.get("name") or ""))
                )
                up = billing.controller_ref(parent.obj if parent is not None else None)
                if up is None:
                    break
                ref = up
            bill["spec"]["workload"] = billing.workload_name(ref)
            out.append(bill)
        return out

    # --- entry -------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if path in ("/version", "/version/"):
            return json_response(_version())
        if path in ("/api", "/api/"):
            if discovery.wants_aggregated(request.headers.get("Accept", "")):
                return json_response(
                    discovery.aggregated(self.registry, True),
                    content_type=discovery.AGGREGATED_CONTENT_TYPE,
                )
            return json_response(discovery.api_versions(self.address))
        if path in ("/apis", "/apis/"):
            if discovery.wants_aggregated(request.headers.get("Accept", "")):
                return json_response(
                    discovery.aggregated(self.registry, False),
                    content_type=discovery.AGGREGATED_CONTENT_TYPE,
                )
            return json_response(discovery.api_group_list(self.registry))
        if path.startswith("/openapi/v3"):
            return self._openapi(request)
        if path == "/metrics":
            return web.Response(
                text=billing.prometheus(self._bills(), self.clock()),
                content_type="text/plain",
                charset="utf-8",
                headers={"X-Content-Type-Options": "nosniff"},
            )
        parts = [p for p in path.split("/") if p]
        if len(parts) == 2 and parts[0] == "apis":
            group_doc = discovery.api_group(self.registry, parts[1])
            if group_doc is None:
                raise errors.path_not_found()
            return json_response(group_doc)
        target = requests.parse_path(path)
        if target is None:
            raise errors.path_not_found()
        if isinstance(target, requests.GroupVersionPath):
            doc = discovery.api_resource_list(self.registry, target.group, target.version)
            if doc is None:
                raise errors.path_not_found()
            return json_response(doc)
        resource = self.resource_for(target)
        return await self._dispatch(request, resource, target)

    def resource_for(self, target: requests.Target) -> kinds.Resource:
        """The served resource a request path names; 404 when there is none."""
        resource = self.registry.lookup(target.group, target.version, target.plural)
        if resource is None:
            raise errors.path_not_found()
        if target.scoped and not resource.namespaced:
            raise errors.path_not_found()
        if resource.namespaced and target.name and not target.scoped:
            raise errors.path_not_found()
        return resource

    def _openapi(self, request: web.Request) -> web.Response:
        rest = request.path[len("/openapi/v3") :].strip("/")
        custom = self.store.custom_schemas
        if not rest:
            return json_response(self.openapi_cache.root(self.registry, custom))
        found = self.openapi_cache.get(self.registry, rest, custom)
        if found is None:
            raise errors.path_not_found()
        body, digest = found
        headers = {
            "Content-Type": JSON_CT,
            "Cache-Control": "public, immutable",
            "Etag": f'"{digest}"',
        }
        return web.Response(body=body, headers=headers)

    async def _dispatch(
        self, request: web.Request, resource: kinds.Resource, target: requests.Target
    ) -> web.StreamResponse:
        method = request.method
        sub = target.subresource
        if resource.group == metrics.GROUP and not sub:
            return await self._metrics(request, resource, target)
        if sub:
            subresource = resource.subresource(sub)
            if subresource is None:
                raise errors.path_not_found()
            return await self._subresource(request, resource, target, subresource)
        if not target.name:
            if method == "GET":
                if requests.bool_param(request.query.get("watch")):
                    self.verb(resource, "watch")
                    return await self._watch(request, resource, target)
                self.verb(resource, "list")
                return await self._list(request, resource, target)
            if method == "POST":
                self.verb(resource, "create")
                return await self._create(request, resource, target)
            if method == "DELETE":
                self.verb(resource, "deletecollection")
                return await self._delete_collection(request, resource, target)
            raise errors.method_not_allowed(
                "the server does not allow this method on the requested resource"
            )
        if method == "GET":
            self.verb(resource, "get")
            if requests.bool_param(request.query.get("watch")):
                return await self._watch(request, resource, target)
            obj = await self.store.get(resource, target.namespace, target.name)
            return self._object_response(request, resource, obj)
        if method == "PUT":
            self.verb(resource, "update")
            return await self._update(request, resource, target, "")
        if method == "PATCH":
            self.verb(resource, "patch")
            return await self._patch(request, resource, target, "")
        if method == "DELETE":
            self.verb(resource, "delete")
            return await self._delete(request, resource, target)
        raise errors.method_not_allowed(
            "the server does not allow this method on the requested resource"
        )

    async def _metrics(
        self, request: web.Request, resource: kinds.Resource, target: requests.Target
    ) -> web.Response:
        """``metrics.k8s.io`` over HTTP: get and list only (no watch, as metrics-server)."""
        if request.method != "GET" or requests.bool_param(request.query.get("watch")):
            raise errors.method_not_allowed(
                "the server does not allow this method on the requested resource"
            )
        return json_response(
            await self.read_metrics(
                resource, target.namespace, target.name, request.query.get("labelSelector")
            )
        )

    async def read_metrics(
        self, resource: kinds.Resource, namespace: str, name: str, label_selector: str | None
    ) -> dict[str, Any]:
        """PodMetrics or NodeMetrics (one, or a list) from the registered
        source; shared by HTTP clients and the in-process controllers."""
        now = self.clock()
        usages = await self.metrics_source() if self.metrics_source is not None else []
        if resource.kind == "PodMetrics":
            items = [
                metrics.pod_metrics(u, now)
                for u in usages
                if not namespace or (u.pod.get("metadata") or {}).get("namespace") == namespace
            ]
        else:
            node_resource = self.registry.lookup("", "v1", "nodes")
            assert node_resource is not None
            page = await self.store.list(node_resource, storing.ListQuery())
            items = [metrics.node_metrics(n, usages, now) for n in page.items]
        chosen = metrics.select(items, label_selector, name)
        if name:
            if not chosen:
                raise metrics.not_found(resource.kind, name)
            return chosen[0]
        return metrics.listing(resource.kind, chosen)

    @staticmethod
    def verb(resource: kinds.Resource, verb: str) -> None:
        if verb not in resource.verbs:
            raise errors.method_not_allowed(
                "the server does not allow this method on the requested resource"
            )

    # --- responses -----------------------------------------------------------

    def _columns(
        self, resource: kinds.Resource
    ) -> tuple[list[tables.Column], Callable[[dict[str, Any]], list[Any]]]:
        now = self.clock()
        if resource.custom:
            printer = (
                self.printer_columns.get((resource.group, resource.version, resource.kind)) or []
            )
            return tables.custom_columns(printer), lambda o: tables.custom_cells(printer, o, now)
        return tables.columns_for(resource.group, resource.kind), lambda o: tables.cells_for(
            resource.group, resource.kind, o, now
        )

    def _object_response(
        self, request: web.Request, resource: kinds.Resource, obj: dict[str, Any], status: int = 200
    ) -> web.Response:
        if _wants_table(request.headers.get("Accept", "")):
            columns, cells = self._columns(resource)
            include = request.query.get("includeObject", "Metadata")
            rv = (obj.get("metadata") or {}).get("resourceVersion", "")
            return json_response(
                tables.table(columns, [(cells(obj), obj)], rv, include_object=include), status
            )
        return json_response(obj, status)

    # --- list and watch -----------------------------------------------------

    def _predicate(
        self, query: MultiMapping[str], resource: kinds.Resource
    ) -> Callable[[dict[str, Any]], bool] | None:
        label_text = query.get("labelSelector", "")
        field_text = query.get("fieldSelector", "")
        label_sel = selectors.parse_label_selector(label_text) if label_text else None
        group = "" if resource.key_group == "core" else resource.group
        kind = resource.kind
        field_sel = (
            selectors.parse_field_selector(
                field_text, selectors.selectable_fields(group, kind) | self._crd_fields(resource)
            )
            if field_text
            else None
        )
        if label_sel is None and field_sel is None:
            return None

        def predicate(obj: dict[str, Any]) -> bool:
            if label_sel is not None and not label_sel.matches(
                (obj.get("metadata") or {}).get("labels") or {}
            ):
                return False
            return field_sel is None or field_sel.matches(selectors.field_values(group, kind, obj))

        return predicate

    def _crd_fields(self, resource: kinds.Resource) -> frozenset[str]:
        return frozenset()

    def _query(
        self, query: MultiMapping[str], resource: kinds.Resource, target: requests.Target
    ) -> storing.ListQuery:
        limit = requests.int_param("limit", query.get("limit")) or 0
        return storing.ListQuery(
            namespace=target.namespace,
            predicate=self._predicate(query, resource),
            limit=max(0, limit),
            continue_token=query.get("continue", ""),
            resource_version=query.get("resourceVersion", ""),
            resource_version_match=query.get("resourceVersionMatch", ""),
        )

    async def _list(
        self, request: web.Request, resource: kinds.Resource, target: requests.Target
    ) -> web.Response:
        page, meta = await self.list_page(request.query, resource, target)
        convert = self.store.present
        if _wants_table(request.headers.get("Accept", "")):
            columns, cells = self._columns(resource)
            rows = []
            for item in page.items:
                shown = convert(resource, item)
                rows.append((cells(shown), shown))
            include = request.query.get("includeObject", "Metadata")
            return json_response(
                tables.table(
                    columns,
                    rows,
                    meta["resourceVersion"],
                    page.continue_token,
                    page.remaining,
                    include,
                )
            )
        items = [convert(resource, item) for item in page.items]
        body = {
            "kind": resource.effective_list_kind,
            "apiVersion": resource.group_version,
            "metadata": meta,
            "items": items,
        }
        return json_response(body)

    async def list_page(
        self, query: MultiMapping[str], resource: kinds.Resource, target: requests.Target
    ) -> tuple[storing.ListPage, dict[str, Any]]:
        """One page of a list (stored form) and the list's metadata."""
        if requests.bool_param(query.get("sendInitialEvents")):
            raise errors.invalid(
                "ListOptions",
                "meta.k8s.io",
                "",
                [
                    errors.Cause(
                        "FieldValueForbidden",
                        "Forbidden: sendInitialEvents is forbidden for list",
                        "sendInitialEvents",
                    )
                ],
            )
        list_query = self._query(query, resource, target)
        page = await self.store.list(resource, list_query)
        meta: dict[str, Any] = {"resourceVersion": str(page.revision)}
        if page.continue_token:
            meta["continue"] = page.continue_token
            if page.remaining is not None:
                meta["remainingItemCount"] = page.remaining
        return page, meta

    async def _watch(
        self, request: web.Request, resource: kinds.Resource, target: requests.Target
    ) -> web.StreamResponse:
        table = _wants_table(request.headers.get("Accept", ""))
        try:
            opened = await self.open_watch(request.query, resource, target)
        except watchcache.WatchGone as gone:
            response = web.StreamResponse(headers={"Content-Type": JSON_CT})
            await response.prepare(request)
            err = errors.gone(str(gone))
            await response.write(orjson.dumps({"type": "ERROR", "object": err.to_status()}) + b"\n")
            await response.write_eof()
            return response
        watcher = opened.watcher
        initial_entries = opened.initial_entries
        snapshot_rev = opened.snapshot_rev
        initial = opened.initial
        bookmarks = opened.bookmarks
        timeout = opened.timeout
        response = web.StreamResponse(
            headers={"Content-Type": JSON_CT, "Cache-Control": "no-cache, private"}
        )
        response.enable_chunked_encoding()
        try:
            await response.prepare(request)
            columns_cells = self._columns(resource) if table else None
            convert_needed = self.watch_converts(resource)

            def encode(
                kind: str, entry: watchcache.Entry, event: watchcache.CacheEvent | None
            ) -> bytes:
                if columns_cells is not None:
                    obj = self.store.present(resource, entry.obj)
                    cols, cells = columns_cells
                    include = request.query.get("includeObject", "Metadata")
                    body = tables.table(
                        cols, [(cells(obj), obj)], str(entry.rev), include_object=include
                    )
                    return orjson.dumps({"type": kind, "object": body}) + b"\n"
                if convert_needed:
                    return (
                        orjson.dumps(
                            {"type": kind, "object": self.store.present(resource, entry.obj)}
                        )
                        + b"\n"
                    )
                if event is not None:
                    return event.line(kind)
                return b'{"type":"' + kind.encode() + b'","object":' + entry.raw + b"}\n"

            chunk: list[bytes] = []
            for entry in initial_entries:
                chunk.append(encode("ADDED", entry, None))
                if len(chunk) >= 200:
                    await response.write(b"".join(chunk))
                    chunk = []
            if chunk:
                await response.write(b"".join(chunk))
            if (initial and bookmarks) or initial:
                await response.write(self._bookmark(resource, snapshot_rev, initial_end=True))
            deadline = time.monotonic() + timeout if timeout else None
            last_rev = snapshot_rev
            while not self.shutting_down.is_set():
                wait = self.bookmark_interval
                if deadline is not None:
                    wait = min(wait, deadline - time.monotonic())
                    if wait <= 0:
                        break
                try:
                    if watcher.queue.empty():
                        # asyncio.timeout, not wait_for: no task per event
                        async with asyncio.timeout(wait):
                            item = await watcher.queue.get()
                    else:
                        # a turn for everyone else per batch, as a wait gives
                        await asyncio.sleep(0)
                        item = watcher.queue.get_nowait()
                except TimeoutError:
                    if bookmarks and (deadline is None or time.monotonic() < deadline):
                        await response.write(
                            self._bookmark(resource, max(last_rev, self.store.cacher.revision))
                        )
                    continue
                if item is None:
                    break
                out = [encode(item[0], item[1].entry, item[1])]
                last_rev = item[1].rev
                while not watcher.queue.empty() and len(out) < 500:
                    nxt = watcher.queue.get_nowait()
                    if nxt is None:
                        watcher.queue.put_nowait(None)
                        break
                    out.append(encode(nxt[0], nxt[1].entry, nxt[1]))
                    last_rev = nxt[1].rev
                await response.write(b"".join(out))
            with contextlib.suppress(ConnectionError, RuntimeError):
                await response.write_eof()
        except (ConnectionResetError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            watcher.close()
        return response

    async def open_watch(
        self, query: MultiMapping[str], resource: kinds.Resource, target: requests.Target
    ) -> OpenWatch:
        """Check a watch request, catch up and register on the watch cache, with
        the current objects when it starts from now (resourceVersion "" or "0").
        Raises ``watchcache.WatchGone`` when the resourceVersion is too old; the
        caller must ``close()`` the watcher."""
        predicate = self._predicate(query, resource)
        if target.name:
            name = target.name

            def by_name(obj: dict[str, Any]) -> bool:
                return bool((obj.get("metadata") or {}).get("name") == name)

            inner = predicate
            predicate = by_name if inner is None else (lambda o: by_name(o) and inner(o))
        rv_text = query.get("resourceVersion", "")
        send_initial = query.get("sendInitialEvents")
        initial = requests.bool_param(send_initial)
        if send_initial is not None and query.get("resourceVersionMatch") != "NotOlderThan":
            raise errors.invalid(
                "ListOptions",
                "meta.k8s.io",
                "",
                [
                    errors.Cause(
                        "FieldValueInvalid",
                        "Invalid value: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
                        "resourceVersionMatch",
                    )
                ],
            )
        bookmarks = requests.bool_param(query.get("allowWatchBookmarks"))
        timeout = requests.int_param("timeoutSeconds", query.get("timeoutSeconds"))
        cache = self.store.cache(resource)
        prefix = self.store.prefix(self.store.storage_resource(resource), target.namespace)
        since: int | None
        if rv_text in ("", "0") or initial:
            if rv_text == "" or initial:
                await self.store.consistent()
            if rv_text not in ("", "0"):
                await self.store.cacher.wait_for(int(rv_text))
            since = None
            snapshot = True
        else:
            try:
                since = int(rv_text)
            except ValueError:
                raise errors.bad_request(f"invalid resource version: {rv_text}") from None
            await self.store.cacher.wait_for(since)
            snapshot = False
        # Registration and the initial snapshot happen with no await between
        # them, so nothing written meanwhile is lost or doubled.
        watcher = cache.watch(prefix, predicate, since)
        initial_entries: list[watchcache.Entry] = []
        if snapshot:
            initial_entries = [
                e for e in cache.iter_prefix(prefix) if predicate is None or predicate(e.obj)
            ]
        snapshot_rev = self.store.cacher.revision
        return OpenWatch(watcher, initial_entries, snapshot_rev, initial, bookmarks, timeout)

    @staticmethod
    def watch_converts(resource: kinds.Resource) -> bool:
        """Whether watch events must be converted from the stored form (else the
        cache's encoding is served as it is)."""
        return (
            resource.custom
            or (resource.key_group == "core" and resource.group == "events.k8s.io")
            or (resource.group == "autoscaling" and resource.version == "v1")
        )

    def _bookmark(self, resource: kinds.Resource, rev: int, initial_end: bool = False) -> bytes:
        obj = self.bookmark_object(resource, rev, initial_end)
        return orjson.dumps({"type": "BOOKMARK", "object": obj}) + b"\n"

    @staticmethod
    def bookmark_object(
        resource: kinds.Resource, rev: int, initial_end: bool = False
    ) -> dict[str, Any]:
        meta: dict[str, Any] = {"resourceVersion": str(rev)}
        if initial_end:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        return {"kind": resource.kind, "apiVersion": resource.group_version, "metadata": meta}

    # --- writes -------------------------------------------------------------

    async def _body(self, request: web.Request) -> tuple[Any, bytes, str]:
        if request.content_length is not None and request.content_length > requests.MAX_BODY_BYTES:
            raise errors.too_large()
        raw = await _read_all(request)
        content_type = request.headers.get("Content-Type", JSON_CT)
        return requests.decode_body(raw, content_type), raw, content_type

    def _write_options(self, call: Call, subresource: str = "") -> storing.WriteOptions:
        dry = call.query.getall("dryRun", [])
        for value in dry:
            if value != "All":
                raise errors.bad_request(f'Invalid value: "{value}": supported values: "All"')
        manager = call.query.get("fieldManager") or _manager_from_agent(call.user_agent)
        if len(manager) > 128:
            raise errors.bad_request("fieldManager: Too long: may not be more than 128 bytes")
        return storing.WriteOptions(dry_run=bool(dry), manager=manager, subresource=subresource)

    def _field_validation(
        self,
        call: Call,
        resource: kinds.Resource,
        obj: Any,
        raw: bytes,
        content_type: str,
        schema_node: schemas.Schema | None = None,
    ) -> tuple[list[str], bool]:
        """Unknown/duplicate fields and wrong types: 400 under Strict, warnings
        under Warn; and whether there are unknown fields to prune."""
        mode = call.query.get("fieldValidation", "Warn") or "Warn"
        if mode not in ("Strict", "Warn", "Ignore"):
            options_kind = {"POST": "CreateOptions", "PUT": "UpdateOptions"}.get(
                call.method, "PatchOptions"
            )
            raise errors.invalid(
                options_kind,
                "",
                "",
                [
                    errors.Cause(
                        "FieldValueNotSupported",
                        f'Unsupported value: "{mode}": supported values: "Ignore", "Strict", "Warn"',
                        "fieldValidation",
                    )
                ],
            )
        schema = schema_node if schema_node is not None else self.store.served_schema(resource)
        problems = _field_problems(obj, schema, raw, content_type)
        type_errors = [msg for kind, msg in problems if kind == "type"]
        if type_errors:
            raise errors.bad_request(type_errors[0])
        unknown = [msg for kind, msg in problems if kind == "unknown"]
        prune = bool(unknown)
        if mode == "Ignore":
            return [], prune
        if requests.media_type(content_type) in (
            requests.JSON,
            requests.MERGE_PATCH,
            requests.STRATEGIC_PATCH,
            "",
        ):
            unknown += [f'duplicate field "{name}"' for name in validating.duplicate_fields(raw)]
        if not unknown:
            return [], prune
        if mode == "Strict":
            raise errors.bad_request("strict decoding error: " + ", ".join(unknown))
        return unknown, prune

    @staticmethod
    def _with_warnings(response: web.Response, warnings: list[str]) -> web.Response:
        for w in warnings:
            response.headers.add("Warning", f'299 - "{w.replace(chr(34), chr(92) + chr(34))}"')
        return response

    async def _create(
        self, request: web.Request, resource: kinds.Resource, target: requests.Target
    ) -> web.Response:
        obj, raw, content_type = await self._body(request)
        created, warnings = await self.create(
            Call.of(request), resource, target, obj, raw, content_type
        )
        if resource.virtual:
            return json_response(created, 201)
        return self._with_warnings(self._object_response(request, resource, created, 201), warnings)

    async def create(
        self,
        call: Call,
        resource: kinds.Resource,
        target: requests.Target,
        obj: Any,
        raw: bytes,
        content_type: str,
    ) -> tuple[dict[str, Any], list[str]]:
        """POST of a decoded body: the created object (or a review's answer for
        virtual kinds) and the field-validation warnings."""
        obj = requests.check_object(resource, obj, target)
        if resource.virtual:
            return self._review(call, resource, obj), []
        if resource.namespaced and not target.namespace:
            raise errors.path_not_found()
        warnings, prune = self._field_validation(call, resource, obj, raw, content_type)
        if prune:
            obj = validating.prune_unknown(obj, self.store.served_schema(resource))
        created = await self.store.create(
            resource, target.namespace, obj, self._write_options(call), owned=True
        )
        return created, warnings

    async def _update(
        self,
        request: web.Request,
        resource: kinds.Resource,
        target: requests.Target,
        subresource: str,
    ) -> web.Response:
        obj, raw, content_type = await self._body(request)
        result, created, warnings = await self.update(
            Call.of(request), resource, target, subresource, obj, raw, content_type
        )
        return self._with_warnings(
            self._object_response(request, resource, result, 201 if created else 200), warnings
        )

    async def update(
        self,
        call: Call,
        resource: kinds.Resource,
        target: requests.Target,
        subresource: str,
        obj: Any,
        raw: bytes,
        content_type: str,
    ) -> tuple[dict[str, Any], bool, list[str]]:
        """PUT of a decoded body (``subresource`` "" or "status"): the object,
        whether it was created, and the field-validation warnings."""
        obj = requests.check_object(resource, obj, target)
        meta = obj.get("metadata") or {}
        if meta.get("name") and meta["name"] != target.name:
            raise errors.bad_request(
                f"the name of the object ({meta['name']}) does not match the name on the URL ({target.name})"
            )
        warnings, prune = self._field_validation(call, resource, obj, raw, content_type)
        if prune:
            obj = validating.prune_unknown(obj, self.store.served_schema(resource))
        options = self._write_options(call, subresource)
        # Leases and custom resources, like upstream, may be created by PUT.
        create_missing = resource.kind == "Lease" or resource.custom
        desired = obj

        def mutate(current: dict[str, Any] | None) -> dict[str, Any]:
            return values.clone(desired)

        result, created = await self.store.update(
            resource,
            target.namespace,
            target.name,
            mutate,
            options,
            create_missing=create_missing,
            copy_current=False,
        )
        return result, created, warnings

    @staticmethod
    def _patch_kind(resource: kinds.Resource, content_type: str) -> str:
        kind = patching.apply_patch_type(content_type)
        if kind == "strategic" and resource.custom:
            raise errors.unsupported_media_type(content_type)
        return kind

    async def _patch(
        self,
        request: web.Request,
        resource: kinds.Resource,
        target: requests.Target,
        subresource: str,
    ) -> web.Response:
        content_type = request.headers.get("Content-Type", "")
        self._patch_kind(resource, content_type)
        patch, raw, _ = await self._body(request)
        result, created, warnings = await self.patch(
            Call.of(request), resource, target, subresource, content_type, patch, raw
        )
        return self._with_warnings(
            self._object_response(request, resource, result, 201 if created else 200), warnings
        )

    async def patch(
        self,
        call: Call,
        resource: kinds.Resource,
        target: requests.Target,
        subresource: str,
        content_type: str,
        patch: Any,
        raw: bytes,
    ) -> tuple[dict[str, Any], bool, list[str]]:
        """PATCH of a decoded body, the patch type given by ``content_type``: the
        object, whether apply created it, and the field-validation warnings."""
        kind = self._patch_kind(resource, content_type)
        options = self._write_options(call, subresource)
        options.applied = kind == "apply"
        schema = self.store.served_schema(resource)
        force = requests.bool_param(call.query.get("force"))
        warnings: list[str] = []
        if kind == "apply":
            if not call.query.get("fieldManager"):
                raise errors.bad_request(
                    "PATCH, application/apply-patch+yaml requires fieldManager to be set"
                )
            patch = requests.check_object(resource, patch, target)
            warnings, prune = self._field_validation(call, resource, patch, raw, content_type)
            if prune:
                patch = validating.prune_unknown(patch, schema)
            if not patch.get("apiVersion") or not patch.get("kind"):
                raise errors.bad_request("apply patches must specify apiVersion and kind")
        elif kind == "json":
            if not isinstance(patch, list):
                raise errors.bad_request("json patch must be a list of operations")
        elif not isinstance(patch, dict):
            raise errors.bad_request("patch body must be a JSON object")
        elif force:
            raise errors.bad_request("force may only be set for apply patches")
        # A merge patch brings every field of the result the stored object (known
        # fields only) does not have: checking the patch checks the result.
        patch_checked = kind == "merge"
        prune_result = True
        if patch_checked:
            warnings, prune_result = self._field_validation(
                call, resource, patch, raw, content_type
            )
        now = times.rfc3339(self.clock())
        applied_config = patch

        def mutate(current: dict[str, Any] | None) -> dict[str, Any]:
            if kind == "apply":
                config = values.clone(applied_config)
                applied = applying.apply(
                    current,
                    config,
                    manager=options.manager,
                    force=force,
                    schema=schema,
                    now=now,
                    subresource=subresource,
                    has_status_subresource=resource.has_status,
                )
                if not _patch_names_resource_version(kind, applied_config):
                    applied.setdefault("metadata", {}).pop("resourceVersion", None)
                return applied
            assert current is not None
            if kind == "json":
                new = patching.json_patch(current, patch)
            elif kind == "merge":
                # A status write keeps only status from it: copy just what changes.
                new = patching.merge_patch(current, patch, share=subresource == "status")
            else:
                new = patching.strategic_merge_patch(current, patch, schema)
            # Only a resourceVersion the patch itself names is a precondition;
            # otherwise a concurrent write is retried on the new object.
            if not _patch_names_resource_version(kind, patch):
                new.setdefault("metadata", {}).pop("resourceVersion", None)
            if not patch_checked:
                found, prune = self._field_validation(call, resource, new, b"", requests.YAML)
                for w in found:
                    if w not in warnings:
                        warnings.append(w)
                if not prune:
                    return new
            elif not prune_result:
                return new
            pruned: dict[str, Any] = validating.prune_unknown(new, schema)
            return pruned

        if kind == "apply" and resource.namespaced:
            meta = patch.get("metadata") or {}
            if not meta.get("name"):
                raise errors.bad_request("metadata.name is required for apply")
        result, created = await self.store.update(
            resource,
            target.namespace,
            target.name,
            mutate,
            options,
            create_missing=(kind == "apply" and not subresource),
            # The patch functions build a new object; apply may reuse parts of current.
            copy_current=(kind == "apply"),
        )
        return result, created, warnings

    def _delete_options(self, query: MultiMapping[str], body: Any) -> storing.DeleteOptions:
        options = storing.DeleteOptions()
        if isinstance(body, dict):
            options.propagation = body.get("propagationPolicy") or ""
            if body.get("orphanDependents") is True and not options.propagation:
                options.propagation = "Orphan"
            grace = body.get("gracePeriodSeconds")
            options.grace_period = grace if isinstance(grace, int) else None
            pre = body.get("preconditions") or {}
            options.precondition_uid = pre.get("uid") or ""
            options.precondition_rv = pre.get("resourceVersion") or ""
            options.dry_run = bool(body.get("dryRun"))
        q = query
        if q.get("propagationPolicy"):
            options.propagation = q["propagationPolicy"]
        if q.get("gracePeriodSeconds"):
            options.grace_period = requests.int_param("gracePeriodSeconds", q["gracePeriodSeconds"])
        if q.getall("dryRun", []):
            options.dry_run = True
        return options

    async def _delete_body(self, request: web.Request) -> Any:
        if not request.can_read_body:
            return None
        raw = await _read_all(request)
        if not raw.strip():
            return None
        return requests.decode_body(raw, request.headers.get("Content-Type", JSON_CT))

    async def _delete(
        self, request: web.Request, resource: kinds.Resource, target: requests.Target
    ) -> web.Response:
        result = await self.delete(
            request.query, resource, target, await self._delete_body(request)
        )
        if result.get("kind") == "Status":
            return json_response(result)
        return self._object_response(request, resource, result)

    async def delete(
        self,
        query: MultiMapping[str],
        resource: kinds.Resource,
        target: requests.Target,
        body: Any,
    ) -> dict[str, Any]:
        """DELETE with a decoded DeleteOptions body (or None): the deleted or
        terminating object, or a Status."""
        options = self._delete_options(query, body)
        result, _finished = await self.store.delete(
            resource, target.namespace, target.name, options
        )
        return result

    async def _delete_collection(
        self, request: web.Request, resource: kinds.Resource, target: requests.Target
    ) -> web.Response:
        options = self._delete_options(request.query, await self._delete_body(request))
        query = self._query(request.query, resource, target)
        query.limit = 0
        page = await self.store.list(resource, query)
        items = []
        for item in page.items:
            meta = item.get("metadata") or {}
            with contextlib.suppress(errors.StatusError):
                _result, _ = await self.store.delete(
                    resource, meta.get("namespace", ""), meta["name"], options
                )
                items.append(item)
        return json_response(
            {
                "kind": resource.effective_list_kind,
                "apiVersion": resource.group_version,
                "metadata": {"resourceVersion": str(self.store.cacher.revision)},
                "items": items,
            }
        )

    # --- subresources ---------------------------------------------------------

    async def _subresource(
        self,
        request: web.Request,
        resource: kinds.Resource,
        target: requests.Target,
        sub: kinds.Subresource,
    ) -> web.StreamResponse:
        method = request.method
        if sub.name == "status":
            if method == "GET":
                return self._object_response(
                    request, resource, await self.store.get(resource, target.namespace, target.name)
                )
            if method == "PUT":
                return await self._update(request, resource, target, "status")
            if method == "PATCH":
                return await self._patch(request, resource, target, "status")
        elif sub.name == "scale":
            return await self._scale(request, resource, target)
        elif sub.name == "binding" and method == "POST":
            return await self._bind(request, resource, target)
        elif sub.name == "eviction" and method == "POST":
            return await self._evict(request, resource, target)
        elif sub.name == "token" and method == "POST":
            return await self._token(request, resource, target)
        elif sub.name == "finalize" and method == "PUT":
            return await self._finalize(request, resource, target)
        elif sub.name == "log":
            if method != "GET":
                raise errors.method_not_allowed(
                    "the server does not allow this method on the requested resource"
                )
            return await self._pod_log(request, resource, target)
        elif sub.name in ("exec", "attach"):
            if method not in ("GET", "POST"):
                raise errors.method_not_allowed(
                    "the server does not allow this method on the requested resource"
                )
            return await self._pod_stream(request, resource, target, sub.name)
        elif sub.name == "portforward":
            if method not in ("GET", "POST"):
                raise errors.method_not_allowed(
                    "the server does not allow this method on the requested resource"
                )
            return await self._pod_port_forward(request, resource, target)
        elif sub.name == "proxy":
            await self.store.get(resource, target.namespace, target.name)
            raise errors.StatusError(
                400,
                "BadRequest",
                f"{sub.name} is not available: this Nodeless server runs without an instance provider",
            )
        raise errors.method_not_allowed(
            "the server does not allow this method on the requested resource"
        )

    async def _pod_stream(
        self,
        request: web.Request,
        resource: kinds.Resource,
        target: requests.Target,
        subresource: str,
    ) -> web.StreamResponse:
        """``pods/{name}/exec`` and ``/attach``: checked as upstream checks
        them, then the client's WebSocket relayed to the runtime."""
        options = remotecommands.parse_options(request.query, subresource)
        pod = await self.store.get(resource, target.namespace, target.name)
        container = log_container(pod, options.container)
        remotecommands.check_phase(pod, subresource)
        source = self.stream_source
        if source is None or not (pod.get("spec") or {}).get("nodeName"):
            raise errors.bad_request(
                f"unable to upgrade connection: pod {target.name} has no running instance"
                if source is not None
                else f"{subresource} is not available: this Nodeless server runs without an "
                "instance provider"
            )
        if not remotecommands.is_websocket(request):
            raise errors.bad_request(
                "unable to upgrade connection: this server streams exec and attach over "
                f"WebSocket ({', '.join(remotecommands.PROTOCOLS)}), not SPDY"
            )
        url = await source(
            target.namespace,
            target.name,
            container,
            options.command,
            options.stdin,
            options.stdout,
            options.stderr,
            options.tty,
        )
        return await remotecommands.relay(request, url, options, self.shutting_down)

    async def _pod_port_forward(
        self, request: web.Request, resource: kinds.Resource, target: requests.Target
    ) -> web.StreamResponse:
        """``pods/{name}/portforward`` over the client's WebSocket: the
        channel protocol (ports in the query) or SPDY tunnelled in it (kubectl)."""
        pod = await self.store.get(resource, target.namespace, target.name)
        source = self.port_forward_source
        if source is None:
            raise errors.bad_request(
                "portforward is not available: this Nodeless server runs without an "
                "instance provider"
            )
        phase = (pod.get("status") or {}).get("phase")
        if phase in ("Succeeded", "Failed") or not (pod.get("spec") or {}).get("nodeName"):
            raise errors.bad_request(
                f"unable to upgrade connection: pod {target.name} is not running (phase {phase})"
            )
        offered = {
            p.strip()
            for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")
            if p.strip()
        }
        protocols = (spdyforwards.PROTOCOL, *portforwards.CHANNEL_PROTOCOLS)
        if not remotecommands.is_websocket(request) or not offered & set(protocols):
            raise errors.bad_request(
                "unable to upgrade connection: this server forwards ports over WebSocket "
                f"({', '.join(protocols)})"
            )
        namespace, name = target.namespace, target.name

        async def connect(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
            return await source(namespace, name, port)

        if spdyforwards.PROTOCOL in offered:
            return await spdyforwards.serve(request, connect, self.shutting_down)
        ports = portforwards.query_ports(request.query)
        return await portforwards.serve_channels(request, ports, connect, self.shutting_down)

    async def _pod_log(
        self, request: web.Request, resource: kinds.Resource, target: requests.Target
    ) -> web.StreamResponse:
        """``GET pods/{name}/log``: the container's log as text; with
        ``follow`` streamed until the container ends or the client goes."""
        options = parse_log_options(request.query, target.name, self.clock())
        pod = await self.store.get(resource, target.namespace, target.name)
        options = dataclasses.replace(options, container=log_container(pod, options.container))
        response = web.StreamResponse(
            headers={"Content-Type": LOG_CONTENT_TYPE, "Cache-Control": "no-cache, private"}
        )
        if not (pod.get("spec") or {}).get("nodeName"):
            # Upstream: a pod not yet on a node has no log location, an empty log.
            await response.prepare(request)
            await response.write_eof()
            return response
        source = self.logs_source
        if source is None:
            raise errors.bad_request(
                "log is not available: this Nodeless server runs without an instance provider"
            )
        stream = await source(target.namespace, target.name, options)
        if options.follow:
            response.enable_chunked_encoding()
        try:
            await response.prepare(request)
            await self._pump_log(request, response, stream)
            await response.write_eof()
        except ConnectionResetError:
            log.debug("log client for %s/%s went away", target.namespace, target.name)
        except Exception:
            # The status line is sent: a failure now can only end the stream.
            log.exception("reading the log of pod %s/%s failed", target.namespace, target.name)
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()
        return response

    async def _pump_log(
        self, request: web.Request, response: web.StreamResponse, stream: AsyncIterator[bytes]
    ) -> None:
        """Copies ``stream`` to the client, ending early when the client has
        gone (noticed within a second even while the log is silent) or the
        server shuts down."""

        async def copy() -> None:
            async for chunk in stream:
                if chunk:
                    await response.write(chunk)

        task = asyncio.create_task(copy())
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=_LOG_DISCONNECT_POLL)
                if done:
                    task.result()
                    return
                transport = request.transport
                if transport is None or transport.is_closing() or self.shutting_down.is_set():
                    return
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    def _scale_paths(self, resource: kinds.Resource) -> dict[str, str]:
        if resource.custom:
            return self.scale_paths.get((resource.group, resource.version, resource.kind)) or {}
        return {
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": "",
        }

    def _to_scale(self, resource: kinds.Resource, obj: dict[str, Any]) -> dict[str, Any]:
        paths = self._scale_paths(resource)
        meta = obj.get("metadata") or {}
        spec_replicas = _get_path(obj, paths.get("specReplicasPath", ".spec.replicas"))
        status_replicas = _get_path(obj, paths.get("statusReplicasPath", ".status.replicas"))
        selector: str | None = None
        if resource.custom:
            if paths.get("labelSelectorPath"):
                value = _get_path(obj, paths["labelSelectorPath"])
                selector = value if isinstance(value, str) else None
        else:
            sel = (obj.get("spec") or {}).get("selector")
            if isinstance(sel, dict) and ("matchLabels" in sel or "matchExpressions" in sel):
                selector = str(selectors.label_selector_from_object(sel))
            elif isinstance(sel, dict):
                selector = ",".join(f"{k}={v}" for k, v in sorted(sel.items()))
        status: dict[str, Any] = {"replicas": status_replicas or 0}
        if selector:
            status["selector"] = selector
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                k: meta[k]
                for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                if k in meta
            },
            "spec": {"replicas": spec_replicas or 0},
            "status": status,
        }

    async def _scale(
        self, request: web.Request, resource: kinds.Resource, target: requests.Target
    ) -> web.Response:
        if request.method == "GET":
            return json_response(await self.get_scale(resource, target))
        if request.method not in ("PUT", "PATCH"):
            raise errors.method_not_allowed(
                "the server does not allow this method on the requested resource"
            )
        body, _, content_type = await self._body(request)
        return json_response(
            await self.write_scale(Call.of(request), resource, target, body, content_type)
        )

    async def get_scale(self, resource: kinds.Resource, target: requests.Target) -> dict[str, Any]:
        obj = await self.store.get(resource, target.namespace, target.name)
        return self._to_scale(resource, obj)

    async def write_scale(
        self,
        call: Call,
        resource: kinds.Resource,
        target: requests.Target,
        body: Any,
        content_type: str,
    ) -> dict[str, Any]:
        """PUT (or PATCH, by ``call.method``) of the scale subresource."""
        kind = patching.apply_patch_type(content_type) if call.method == "PATCH" else "put"
        options = self._write_options(call, "scale")
        spec_path = self._scale_paths(resource).get("specReplicasPath", ".spec.replicas")
        scale_schema = schemas.schema_for("autoscaling", "v1", "Scale")

        def mutate(current: dict[str, Any] | None) -> dict[str, Any]:
            assert current is not None
            scale = self._to_scale(resource, current)
            if kind == "put":
                new_scale = body
                rv = (
                    (body.get("metadata") or {}).get("resourceVersion")
                    if isinstance(body, dict)
                    else None
                )
                if rv and rv != scale["metadata"].get("resourceVersion"):
                    raise errors.conflict(
                        resource.plural,
                        resource.group,
                        target.name,
                        "the object has been modified; please apply your changes to the latest version and try again",
                    )
            elif kind == "json":
                new_scale = patching.json_patch(scale, body)
            elif kind == "merge":
                new_scale = patching.merge_patch(scale, body)
            elif kind == "strategic":
                new_scale = patching.strategic_merge_patch(scale, body, scale_schema)
            else:
                new_scale = patching.merge_patch(scale, {"spec": (body or {}).get("spec", {})})
            replicas = (new_scale.get("spec") or {}).get("replicas")
            if not isinstance(replicas, int) or isinstance(replicas, bool):
                raise errors.bad_request("spec.replicas must be an integer")
            if replicas < 0:
                raise errors.invalid(
                    "Scale",
                    "autoscaling",
                    target.name,
                    [
                        errors.Cause(
                            "FieldValueInvalid",
                            f"Invalid value: {replicas}: must be greater than or equal to 0",
                            "spec.replicas",
                        )
                    ],
                )
            updated = current  # the store hands each attempt its own copy
            _set_path(updated, spec_path, replicas)
            updated["metadata"].pop("resourceVersion", None)
            return updated

        result, _ = await self.store.update(
            resource,
            target.namespace,
            target.name,
            mutate,
            storing.WriteOptions(options.dry_run, options.manager),
        )
        return self._to_scale(resource, result)

    async def _bind(
        self, request: web.Request, resource: kinds.Resource, target: requests.Target
    ) -> web.Response:
        body, _, _ = await self._body(request)
        return json_response(await self.bind(Call.of(request), resource, target, body), 201)

    async def bind(
        self, call: Call, resource: kinds.Resource, target: requests.Target, body: Any
    ) -> dict[str, Any]:
        """POST pods/binding: set spec.nodeName and PodScheduled; a Status (201)."""
        if not isinstance(body, dict) or not (body.get("target") or {}).get("name"):
            raise errors.invalid(
                "Binding",
                "",
                target.name,
                [errors.Cause("FieldValueRequired", "Required value", "target.name")],
            )
        node = body["target"]["name"]
        options = self._write_options(call)

        def mutate(current: dict[str, Any] | None) -> dict[str, Any]:
            assert current is not None
            if current["metadata"].get("deletionTimestamp"):
                raise errors.conflict(
                    "pods", "", target.name, "pod is being deleted, cannot be assigned to a host"
                )
            if (current.get("spec") or {}).get("nodeName"):
                raise errors.conflict(
                    "pods",
                    "",
                    target.name,
                    f"pod {target.name} is already assigned to node {current['spec']['nodeName']!r}",
                )
            # A new object over the cached one (read-only): only what changes
            # is copied (a binding is not defaulted again: the store skips it).
            new = dict(current)
            new["spec"] = {**(current.get("spec") or {}), "nodeName": node}
            new["metadata"] = dict(current["metadata"])
            status = new["status"] = dict(current.get("status") or {})
            conditions = [
                c for c in status.get("conditions") or [] if c.get("type") != "PodScheduled"
            ]
            conditions.append(
                {
                    "type": "PodScheduled",
                    "status": "True",
                    "lastProbeTime": None,
                    "lastTransitionTime": times.rfc3339(self.clock()),
                }
            )
            status["conditions"] = conditions
            new["metadata"].pop("resourceVersion", None)
            annotations = (body.get("metadata") or {}).get("annotations")
            if annotations:
                new["metadata"]["annotations"] = {
                    **(new["metadata"].get("annotations") or {}),
                    **annotations,
                }
            return new

        # Binding writes spec.nodeName and the PodScheduled condition together.
        await self.store.update(
            resource,
            target.namespace,
            target.name,
            mutate,
            storing.WriteOptions(options.dry_run, options.manager, "binding"),
            copy_current=False,
        )
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "code": 201,
        }

    async def _evict(
        self, request: web.Request, resource: kinds.Resource, target: requests.Target
    ) -> web.Response:
        body, _, _ = await self._body(request)
        return json_response(await self.evict(request.query, resource, target, body), 201)

    async def evict(
        self, query: MultiMapping[str], resource: kinds.Resource, target: requests.Target, body: Any
    ) -> dict[str, Any]:
        """policy/v1 Eviction: delete the pod unless a PodDisruptionBudget forbids
        it (429); an allowed eviction first spends one disruption in the budget's
        status, compare-and-swap on its resourceVersion, so two concurrent
        evictions cannot both spend the last allowed disruption."""
        delete_options = (body or {}).get("deleteOptions") if isinstance(body, dict) else None
        options = self._delete_options(query, delete_options)
        budgets = self.registry.by_kind("policy", "v1", "PodDisruptionBudget")
        assert budgets is not None
        for _ in range(20):
            pod = await self.store.get(resource, target.namespace, target.name)
            page = await self.store.list(budgets, storing.ListQuery(namespace=target.namespace))
            decision = disruptionbudgets.eviction_allowed(
                page.items, pod, now=self.clock(), dry_run=options.dry_run
            )
            if not decision.allowed:
                assert decision.error is not None
                raise decision.error
            if decision.budget is not None and not await self._spend_budget(
                budgets, target.namespace, decision.budget
            ):
                continue  # another eviction changed the budget first: decide again
            expected_rv = decision.pod_resource_version
            if not options.dry_run:
                marked = await self._mark_disruption_target(resource, target, expected_rv)
                if marked and expected_rv:
                    expected_rv = marked
            guarded = options
            if expected_rv and not options.precondition_rv:
                guarded = dataclasses.replace(options, precondition_rv=expected_rv)
            try:
                await self.store.delete(resource, target.namespace, target.name, guarded)
            except errors.StatusError as err:
                if err.code == 409 and guarded is not options:
                    # The pod changed (it may have become ready) since the decision.
                    selecting = (b for b in page.items if disruptionbudgets.selects(b, pod))
                    name = next((b["metadata"]["name"] for b in selecting), "")
                    raise disruptionbudgets.budget_being_processed(name) from None
                raise
            success = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}
            return dict(success, code=201)
        raise errors.timeout("couldn't update PodDisruptionBudget due to conflicts")

    async def _mark_disruption_target(
        self, resource: kinds.Resource, target: requests.Target, expected_rv: str
    ) -> str:
        """Before an evicted pod is deleted it gets the DisruptionTarget condition
        (upstream 1.31+), which Job failure policies and users read; returns the
        pod's new resourceVersion ("" when the pod has already finished)."""
        now = times.rfc3339(self.clock())

        def mark(current: dict[str, Any] | None) -> dict[str, Any]:
            assert current is not None
            pod = current  # the store hands each attempt its own copy
            if expected_rv:
                pod["metadata"]["resourceVersion"] = expected_rv
            else:
                pod["metadata"].pop("resourceVersion", None)
            status = pod.setdefault("status", {})
            conditions = [
                c for c in status.get("conditions") or [] if c.get("type") != "DisruptionTarget"
            ]
            conditions.append(
                {
                    "type": "DisruptionTarget",
                    "status": "True",
                    "reason": "EvictionByEvictionAPI",
                    "message": "Eviction API: evicting",
                    "lastProbeTime": None,
                    "lastTransitionTime": now,
                }
            )
            status["conditions"] = conditions
            return pod

        current = await self.store.get(resource, target.namespace, target.name)
        if (current.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            return ""
        options = storing.WriteOptions(manager="nodeless-eviction", subresource="status")
        updated, _ = await self.store.update(resource, target.namespace, target.name, mark, options)
        return str((updated.get("metadata") or {}).get("resourceVersion", ""))

    async def _spend_budget(
        self, budgets: kinds.Resource, namespace: str, decided: dict[str, Any]
    ) -> bool:
        """Write an eviction's budget status, conditional on the resourceVersion
        it was decided on; False when another write got there first."""

        def spend(_current: dict[str, Any] | None) -> dict[str, Any]:
            return values.clone(decided)

        options = storing.WriteOptions(manager="nodeless-eviction", subresource="status")
        try:
            await self.store.update(budgets, namespace, decided["metadata"]["name"], spend, options)
        except errors.StatusError as err:
            if err.code == 409:
                return False
            raise
        return True

    async def _finalize(
        self, request: web.Request, resource: kinds.Resource, target: requests.Target
    ) -> web.Response:
        body, _, _ = await self._body(request)
        return json_response(await self.finalize(Call.of(request), resource, target, body))

    async def finalize(
        self, call: Call, resource: kinds.Resource, target: requests.Target, body: Any
    ) -> dict[str, Any]:
        """PUT namespaces/finalize: replace spec.finalizers."""
        finalizers = ((body or {}).get("spec") or {}).get("finalizers") or []

        def mutate(current: dict[str, Any] | None) -> dict[str, Any]:
            assert current is not None
            new = current  # the store hands each attempt its own copy
            new.setdefault("spec", {})["finalizers"] = finalizers
            new["metadata"].pop("resourceVersion", None)
            return new

        result, _ = await self.store.update(
            resource, "", target.name, mutate, self._write_options(call, "finalize")
        )
        return result

    async def _token(
        self, request: web.Request, resource: kinds.Resource, target: requests.Target
    ) -> web.Response:
        body, _, _ = await self._body(request)
        return json_response(await self.token(resource, target, body), 201)

    async def token(
        self, resource: kinds.Resource, target: requests.Target, body: Any
    ) -> dict[str, Any]:
        """TokenRequest: a signed token for the service account, bound to its uid."""
        account = await self.store.get(resource, target.namespace, target.name)
        spec = (body or {}).get("spec") or {} if isinstance(body, dict) else {}
        expiration = spec.get("expirationSeconds") or serviceaccounts.DEFAULT_EXPIRATION
        if not isinstance(expiration, int) or expiration < 600:
            raise errors.invalid(
                "TokenRequest",
                "authentication.k8s.io",
                target.name,
                [
                    errors.Cause(
                        "FieldValueInvalid",
                        f"Invalid value: {expiration}: may not specify a duration less than 10 minutes",
                        "spec.expirationSeconds",
                    )
                ],
            )
        audiences = list(spec.get("audiences") or [])
        token, expires = self.tokens.issue(
            target.namespace,
            target.name,
            account["metadata"].get("uid", ""),
            self.clock(),
            expiration,
            audiences,
        )
        answer = {
            "kind": "TokenRequest",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {
                "name": target.name,
                "namespace": target.namespace,
                "creationTimestamp": None,
            },
            "spec": {
                "audiences": audiences or [serviceaccounts.ISSUER],
                "expirationSeconds": expiration,
                "boundObjectRef": spec.get("boundObjectRef"),
            },
            "status": {"token": token, "expirationTimestamp": times.rfc3339(expires)},
        }
        return answer

    # --- reviews ---------------------------------------------------------------

    def _review(self, call: Call, resource: kinds.Resource, obj: dict[str, Any]) -> dict[str, Any]:
        user = call.user
        user_info = {"username": user.name, "uid": user.uid, "groups": list(user.groups)}
        out = values.clone(obj)
        out.setdefault("metadata", {})["creationTimestamp"] = None
        if resource.kind == "SelfSubjectReview":
            out["status"] = {"userInfo": user_info}
        elif resource.kind in (
            "SelfSubjectAccessReview",
            "SubjectAccessReview",
            "LocalSubjectAccessReview",
        ):
            # The answer matches what the server enforces: every authenticated
            # user may do everything (RBAC objects are stored, not yet enforced).
            out["status"] = {
                "allowed": True,
                "reason": "nodeless authorizes every authenticated user",
            }
        elif resource.kind == "SelfSubjectRulesReview":
            out["status"] = {
                "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
                "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
                "incomplete": False,
            }
        elif resource.kind == "TokenReview":
            token = (obj.get("spec") or {}).get("token") or ""
            reviewed = self.token_reviewer(token) if self.token_reviewer else None
            if reviewed is None:
                out["status"] = {"authenticated": False, "error": "invalid bearer token"}
            else:
                audiences = (obj.get("spec") or {}).get("audiences") or [serviceaccounts.ISSUER]
                reviewed_info = {
                    "username": reviewed.name,
                    "uid": reviewed.uid,
                    "groups": list(reviewed.groups),
                }
                out["status"] = {
                    "authenticated": True,
                    "user": reviewed_info,
                    "audiences": audiences,
                }
        return out


def _patch_names_resource_version(kind: str, patch: Any) -> bool:
    if kind == "json":
        return any(
            isinstance(op, dict) and op.get("path") == "/metadata/resourceVersion" for op in patch
        )
    return isinstance(patch, dict) and bool((patch.get("metadata") or {}).get("resourceVersion"))


async def _read_all(request: web.Request) -> bytes:
    """The whole body (``content.read(n)`` returns only what is buffered), bounded."""
    raw = bytearray()
    while True:
        chunk = await request.content.read(1 << 16)
        if not chunk:
            return bytes(raw)
        raw += chunk
        if len(raw) > requests.MAX_BODY_BYTES:
            raise errors.too_large()


def _manager_from_agent(agent: str) -> str:
    """Upstream derives the default field manager from the User-Agent's program name."""
    name = agent.split("/", 1)[0].strip()
    return name or "unknown"


def _version() -> dict[str, Any]:
    return {
        "major": "1",
        "minor": KUBE_VERSION.split(".")[1],
        "emulationMajor": "1",
        "emulationMinor": KUBE_VERSION.split(".")[1],
        "minCompatibilityMajor": "1",
        "minCompatibilityMinor": str(int(KUBE_VERSION.split(".")[1]) - 1),
        "gitVersion": f"{KUBE_VERSION}+nodeless-{__version__}",
        "gitCommit": "nodeless",
        "gitTreeState": "clean",
        "buildDate": "2026-11-26T00:00:00Z",
        "goVersion": "python",
        "compiler": "cpython",
        "platform": "linux/amd64",
    }


def _split_path(path: str) -> list[str]:
    return [p for p in path.strip(".").split(".") if p]


def _get_path(obj: Any, path: str) -> Any:
    for part in _split_path(path):
        if not isinstance(obj, dict):
            return None
        obj = obj.get(part)
    return obj


def _set_path(obj: dict[str, Any], path: str, value: Any) -> None:
    parts = _split_path(path)
    for part in parts[:-1]:
        obj = obj.setdefault(part, {})
    obj[parts[-1]] = value
