"""The ``ApiClient`` protocol: how every component below the API speaks to it.

Controllers, the scheduler and the instance manager depend only on this
protocol, never on a transport, so the same code runs over HTTP (separate
processes, HA) and in process (the loopback client the CLI injects). The
protocol therefore speaks in plain dict objects, ``ResourceRef`` addresses and
``StatusError`` failures; anything HTTP stays inside ``httpclients``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from nodeless.api import errors, kinds

Object = dict[str, Any]
# A merge/strategic/apply patch is an object; a JSON patch is a list of operations.
Patch = Object | list[Object]
PatchType = Literal["merge", "strategic", "json", "apply"]
PropagationPolicy = Literal["", "Orphan", "Background", "Foreground"]
EventType = Literal["ADDED", "MODIFIED", "DELETED", "BOOKMARK"]

_REGISTRY = kinds.Registry()


@dataclass(frozen=True)
class ResourceRef:
    """Which collection a request addresses: group, version, plural and scope.

    Built-in kinds are looked up with ``resolve``; custom resources (or anything
    the registry does not know) are spelled out directly.
    """

    group: str
    version: str
    plural: str
    namespaced: bool = True
    kind: str = ""

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @classmethod
    def of(cls, resource: kinds.Resource) -> ResourceRef:
        return cls(
            resource.group, resource.version, resource.plural, resource.namespaced, resource.kind
        )

    def __str__(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural


def resolve(
    api_version: str, kind_or_plural: str, registry: kinds.Registry | None = None
) -> ResourceRef:
    """The resource for ``("apps/v1", "Deployment")`` or ``("v1", "pods")``.

    Kind, plural, singular and short names are accepted; ``LookupError`` when the
    registry (the built-ins by default) does not serve it.
    """
    group, _, version = api_version.rpartition("/")
    reg = registry or _REGISTRY
    found = reg.by_kind(group, version, kind_or_plural) or reg.lookup(
        group, version, kind_or_plural
    )
    if found is None:
        wanted = kind_or_plural.lower()
        for candidate in reg.in_group_version(group, version):
            if wanted in (candidate.singular, candidate.kind.lower(), *candidate.short_names):
                found = candidate
                break
    if found is None:
        raise LookupError(
            f"the server doesn't have a resource type {kind_or_plural!r} in {api_version}"
        )
    return ResourceRef.of(found)


def for_object(obj: Mapping[str, Any], registry: kinds.Registry | None = None) -> ResourceRef:
    """The resource an object belongs to, from its ``apiVersion`` and ``kind``."""
    api_version = obj.get("apiVersion")
    kind = obj.get("kind")
    if not isinstance(api_version, str) or not isinstance(kind, str) or not kind:
        raise LookupError("object has no apiVersion and kind")
    return resolve(api_version, kind, registry)


def key_of(obj: Mapping[str, Any]) -> str:
    """The cache and work-queue key: ``namespace/name``, or ``name`` when cluster
    scoped (client-go's MetaNamespaceKeyFunc)."""
    meta = obj.get("metadata") or {}
    namespace = meta.get("namespace") or ""
    name = meta.get("name") or ""
    return f"{namespace}/{name}" if namespace else str(name)


def split_key(key: str) -> tuple[str, str]:
    """``"ns/name"`` → ``("ns", "name")``; ``"name"`` → ``("", "name")``."""
    namespace, _, name = key.rpartition("/")
    return namespace, name


def resource_version(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


@dataclass(frozen=True)
class ListResult:
    """One page of a list: the items and the revision they were read at."""

    items: list[Object]
    resource_version: str
    continue_token: str = ""
    remaining_item_count: int | None = None


@dataclass(frozen=True)
class WatchEvent:
    """One change on a watch; a ``BOOKMARK`` carries only a newer resourceVersion."""

    type: EventType
    object: Object

    @property
    def resource_version(self) -> str:
        return resource_version(self.object)


@dataclass(frozen=True)
class Preconditions:
    """Delete only if the object still has this uid and/or resourceVersion."""

    uid: str = ""
    resource_version: str = ""


@dataclass(frozen=True)
class DeleteOptions:
    propagation_policy: PropagationPolicy = ""
    grace_period_seconds: int | None = None
    preconditions: Preconditions | None = None
    dry_run: bool = False

    def to_body(self) -> Object:
        body: Object = {"kind": "DeleteOptions", "apiVersion": "v1"}
        if self.propagation_policy:
            body["propagationPolicy"] = self.propagation_policy
        if self.grace_period_seconds is not None:
            body["gracePeriodSeconds"] = self.grace_period_seconds
        if self.preconditions is not None:
            pre: dict[str, str] = {}
            if self.preconditions.uid:
                pre["uid"] = self.preconditions.uid
            if self.preconditions.resource_version:
                pre["resourceVersion"] = self.preconditions.resource_version
            body["preconditions"] = pre
        if self.dry_run:
            body["dryRun"] = ["All"]
        return body


@dataclass(frozen=True)
class WriteOptions:
    """Options every write takes: who manages the fields, and whether to persist."""

    field_manager: str = ""
    dry_run: bool = False
    field_validation: Literal["", "Strict", "Warn", "Ignore"] = ""
    # False: the caller drops what the write returns. The in-process client
    # then answers with the stored object itself (shared: not to be changed
    # or kept) instead of a copy; over HTTP the answer is decoded either way.
    keep_result: bool = True


class Gone(errors.StatusError):
    """410: the resourceVersion asked for is older than the server keeps (or a
    continue token expired); the caller must list again."""


class Unreachable(Exception):
    """The API could not be reached, or the connection broke mid-request; a
    write may or may not have taken effect."""


def status_error(status: Mapping[str, Any], code: int = 0) -> errors.StatusError:
    """Rebuild the ``StatusError`` a server's ``Status`` body describes (``Gone``
    for 410), so callers branch on code and reason whatever the transport."""
    details = status.get("details") or {}
    raw_causes = details.get("causes") or []
    causes = [
        errors.Cause(
            reason=str(c.get("reason") or ""),
            message=str(c.get("message") or ""),
            field=str(c.get("field") or ""),
        )
        for c in raw_causes
        if isinstance(c, dict)
    ]
    status_code = status.get("code")
    final_code = status_code if isinstance(status_code, int) and status_code else code
    retry = details.get("retryAfterSeconds")
    cls = Gone if final_code == 410 else errors.StatusError
    return cls(
        code=final_code,
        reason=str(status.get("reason") or ""),
        message=str(status.get("message") or ""),
        name=str(details.get("name") or ""),
        group=str(details.get("group") or ""),
        kind=str(details.get("kind") or ""),
        causes=causes,
        retry_after_seconds=retry if isinstance(retry, int) else 0,
    )


def is_gone(err: BaseException) -> bool:
    """True for 410 from any ``ApiClient`` implementation (loopback raises plain
    ``StatusError``s built with ``errors.gone``)."""
    return isinstance(err, errors.StatusError) and err.code == 410


class ApiClient(Protocol):
    """The Kubernetes API, as components below it use it.

    Objects are plain dicts as the API serves them. Namespaced resources take
    the namespace explicitly (``""`` means all namespaces for ``list`` and
    ``watch``); writes of whole objects take it from ``metadata.namespace``.
    Failures raise ``nodeless.api.errors.StatusError`` with the server's code,
    reason, message and causes.
    """

    async def get(self, resource: ResourceRef, namespace: str, name: str) -> Object: ...

    async def list(
        self,
        resource: ResourceRef,
        namespace: str = "",
        *,
        label_selector: str = "",
        field_selector: str = "",
        limit: int = 0,
        continue_token: str = "",
        resource_version: str = "",
    ) -> ListResult: ...

    def watch(
        self,
        resource: ResourceRef,
        namespace: str = "",
        *,
        name: str = "",
        label_selector: str = "",
        field_selector: str = "",
        resource_version: str = "",
        allow_bookmarks: bool = True,
        timeout_seconds: int | None = None,
    ) -> AsyncGenerator[WatchEvent, None]:
        """Changes after ``resource_version`` (or the current state as ADDED events
        first when it is empty). The generator ends when the server closes the
        stream; an expired resourceVersion raises ``Gone``. Close it with
        ``aclose()`` (or ``contextlib.aclosing``) to release the stream."""
        ...

    async def create(
        self, resource: ResourceRef, obj: Object, options: WriteOptions | None = None
    ) -> Object: ...

    async def update(
        self, resource: ResourceRef, obj: Object, options: WriteOptions | None = None
    ) -> Object:
        """Replace the object (optimistic concurrency on its resourceVersion)."""
        ...

    async def update_status(
        self, resource: ResourceRef, obj: Object, options: WriteOptions | None = None
    ) -> Object:
        """Replace only the status, through the ``status`` subresource."""
        ...

    async def patch(
        self,
        resource: ResourceRef,
        namespace: str,
        name: str,
        patch: Patch,
        *,
        patch_type: PatchType = "merge",
        subresource: str = "",
        force: bool = False,
        options: WriteOptions | None = None,
    ) -> Object:
        """Merge, strategic-merge, JSON or server-side-apply patch; ``apply``
        needs ``options.field_manager`` and may ``force`` conflicts."""
        ...

    async def delete(
        self,
        resource: ResourceRef,
        namespace: str,
        name: str,
        options: DeleteOptions | None = None,
    ) -> Object:
        """The deleted object, the object now terminating (finalizers, grace), or
        a ``Status`` of success."""
        ...

    async def bind(
        self,
        namespace: str,
        pod_name: str,
        node_name: str,
        *,
        annotations: Mapping[str, str] | None = None,
        pod_uid: str = "",
    ) -> None:
        """Assign a pod to a node through ``pods/binding`` (what the scheduler does)."""
        ...

    async def get_subresource(
        self, resource: ResourceRef, namespace: str, name: str, subresource: str
    ) -> Object:
        """Read a subresource such as ``scale`` or ``status``."""
        ...

    async def update_subresource(
        self,
        resource: ResourceRef,
        namespace: str,
        name: str,
        subresource: str,
        obj: Object,
        options: WriteOptions | None = None,
    ) -> Object:
        """Replace a subresource such as ``scale``."""
        ...

    async def create_subresource(
        self,
        resource: ResourceRef,
        namespace: str,
        name: str,
        subresource: str,
        obj: Object,
        options: WriteOptions | None = None,
    ) -> Object:
        """POST to a subresource such as ``eviction`` or ``binding``."""
        ...

    async def close(self) -> None: ...


def namespace_of(resource: ResourceRef, obj: Mapping[str, Any]) -> str:
    """The namespace a whole-object write goes to; namespaced kinds require one."""
    namespace = str((obj.get("metadata") or {}).get("namespace") or "")
    if resource.namespaced and not namespace:
        raise ValueError(f"{resource} are namespaced: set metadata.namespace")
    return namespace if resource.namespaced else ""


def name_of(obj: Mapping[str, Any]) -> str:
    name = (obj.get("metadata") or {}).get("name")
    if not isinstance(name, str) or not name:
        raise ValueError("metadata.name is required")
    return name


def copy_with_type(resource: ResourceRef, obj: Mapping[str, Any]) -> Object:
    """A shallow copy carrying ``apiVersion`` and ``kind`` (list items and some
    transports omit them), so caches hold uniform objects."""
    out = dict(obj)
    if resource.kind:
        out.setdefault("apiVersion", resource.api_version)
        out.setdefault("kind", resource.kind)
    return out


# --- query parameters and list results, shared by every ApiClient implementation ---


def list_params(
    label_selector: str = "",
    field_selector: str = "",
    limit: int = 0,
    continue_token: str = "",
    resource_version: str = "",
) -> dict[str, str]:
    """The query of a LIST as the API takes it (only what is set)."""
    params: dict[str, str] = {}
    if label_selector:
        params["labelSelector"] = label_selector
    if field_selector:
        params["fieldSelector"] = field_selector
    if limit:
        params["limit"] = str(limit)
    if continue_token:
        params["continue"] = continue_token
    if resource_version:
        params["resourceVersion"] = resource_version
    return params


def watch_params(
    *,
    name: str = "",
    label_selector: str = "",
    field_selector: str = "",
    resource_version: str = "",
    allow_bookmarks: bool = True,
    timeout_seconds: int | None = None,
) -> dict[str, str]:
    """The query of a WATCH; watching one name is a ``metadata.name`` field selector."""
    if name:
        field_selector = ",".join(s for s in (f"metadata.name={name}", field_selector) if s)
    params = list_params(label_selector, field_selector, resource_version=resource_version)
    params["watch"] = "1"
    if allow_bookmarks:
        params["allowWatchBookmarks"] = "true"
    if timeout_seconds is not None:
        params["timeoutSeconds"] = str(timeout_seconds)
    return params


def list_result(
    resource: ResourceRef, meta: Mapping[str, Any], items: Iterable[Object]
) -> ListResult:
    """A ListResult from a list's metadata and items, each stamped with its kind."""
    remaining = meta.get("remainingItemCount")
    return ListResult(
        items=[copy_with_type(resource, item) for item in items],
        resource_version=str(meta.get("resourceVersion") or ""),
        continue_token=str(meta.get("continue") or ""),
        remaining_item_count=remaining if isinstance(remaining, int) else None,
    )
