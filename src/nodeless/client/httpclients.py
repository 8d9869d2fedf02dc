"""``ApiClient`` over HTTPS: aiohttp with one keep-alive session, orjson bodies.

This is the client for components running in their own processes (and for
several apiservers in HA). Everything HTTP — URL layout, query parameters,
content types, the chunked watch stream — stays in this module, so the
protocol in ``clients`` is all a second implementation has to match.
"""

from __future__ import annotations

import contextlib
import os
import ssl
from collections.abc import AsyncGenerator, Mapping
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import aiohttp
import orjson
import yarl

from nodeless.api import errors
from nodeless.client import clients, kubeconfigs

JSON = "application/json"
PATCH_CONTENT_TYPES: dict[str, str] = {
    "merge": "application/merge-patch+json",
    "strategic": "application/strategic-merge-patch+json",
    "json": "application/json-patch+json",
    # JSON is YAML, so the apply body can stay JSON.
    "apply": "application/apply-patch+yaml",
}
DEFAULT_REQUEST_TIMEOUT = 60.0
CONNECT_TIMEOUT = 10.0
WATCH_EVENT_TYPES = frozenset({"ADDED", "MODIFIED", "DELETED", "BOOKMARK"})

_HTTP_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    409: "Conflict",
    410: "Expired",
    413: "RequestEntityTooLarge",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


class HttpApiClient:
    """The Kubernetes API over HTTP(S), speaking the ``ApiClient`` protocol."""

    def __init__(
        self,
        base_url: str,
        ssl_context: ssl.SSLContext | None = None,
        token: str | None = None,
        *,
        namespace: str = "default",
        user_agent: str = "nodeless-client",
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        tls_server_name: str = "",
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.namespace = namespace
        self._ssl_context = ssl_context
        self._headers = {"Accept": JSON, "User-Agent": user_agent}
        if token:
            self._headers["Authorization"] = f"Bearer {token}"
        self._request_timeout = aiohttp.ClientTimeout(
            total=request_timeout, connect=CONNECT_TIMEOUT
        )
        self._server_hostname = tls_server_name or None
        self._session: aiohttp.ClientSession | None = None

    @classmethod
    def from_kubeconfig(
        cls, path: str | os.PathLike[str], context: str = "", **kwargs: Any
    ) -> HttpApiClient:
        """A client for the kubeconfig's (current) context: server, CA, client
        certificate or bearer token, default namespace."""
        creds = kubeconfigs.load(path, context)
        return cls(
            creds.server,
            creds.ssl_context(),
            creds.token or None,
            namespace=creds.namespace,
            tls_server_name=creds.tls_server_name,
            **kwargs,
        )

    # --- session ---------------------------------------------------------------

    def _session_now(self) -> aiohttp.ClientSession:
        # Created lazily: an aiohttp session belongs to the loop that makes it.
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                ssl=self._ssl_context if self._ssl_context is not None else True,
                # Every informer holds one watch connection open.
                limit=0,
                keepalive_timeout=60,
            )
            self._session = aiohttp.ClientSession(
                connector=connector, headers=self._headers, json_serialize=_dumps
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # --- URLs and requests --------------------------------------------------------

    def _url(
        self,
        resource: clients.ResourceRef,
        namespace: str = "",
        name: str = "",
        subresource: str = "",
    ) -> yarl.URL:
        parts = (
            ["api", resource.version]
            if not resource.group
            else ["apis", resource.group, resource.version]
        )
        if resource.namespaced and namespace:
            parts += ["namespaces", namespace]
        parts.append(resource.plural)
        if name:
            parts.append(name)
        if subresource:
            parts.append(subresource)
        path = "/".join(quote(p, safe="") for p in parts)
        return yarl.URL(f"{self.base_url}/{path}", encoded=True)

    async def _request(
        self,
        method: str,
        url: yarl.URL,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = JSON,
    ) -> Any:
        session = self._session_now()
        data = orjson.dumps(body) if body is not None else None
        headers = {"Content-Type": content_type} if data is not None else None
        try:
            async with session.request(
                method,
                url,
                params=params,
                data=data,
                headers=headers,
                timeout=self._request_timeout,
                server_hostname=self._server_hostname,
            ) as response:
                raw = await response.read()
                if response.status >= 400:
                    raise _error(response.status, raw)
        except (aiohttp.ClientError, OSError, TimeoutError) as e:
            raise clients.Unreachable(f"{method} {url}: {e!r}") from e
        if not raw:
            return {}
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            raise errors.internal(f"undecodable response to {method} {url}: {e}") from e

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
        obj: clients.Object = await self._request("GET", self._url(resource, namespace, name))
        return obj

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
        body = await self._request("GET", self._url(resource, namespace), params=params)
        return clients.list_result(resource, body.get("metadata") or {}, body.get("items") or [])

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
        # A watch lasts as long as the server keeps it; only connecting is bounded.
        timeout = aiohttp.ClientTimeout(
            total=None if timeout_seconds is None else timeout_seconds + CONNECT_TIMEOUT * 3,
            connect=CONNECT_TIMEOUT,
        )
        url = self._url(resource, namespace)
        session = self._session_now()
        try:
            async with session.get(
                url, params=params, timeout=timeout, server_hostname=self._server_hostname
            ) as response:
                if response.status >= 400:
                    raise _error(response.status, await response.read())
                try:
                    async with contextlib.aclosing(_lines(response.content)) as lines:
                        async for line in lines:
                            yield _watch_event(resource, line)
                finally:
                    # Abandoning a stream mid-way must drop the connection, not
                    # try to drain an endless body back into the pool.
                    if not response.content.at_eof():
                        response.close()
        except (aiohttp.ClientError, OSError, TimeoutError) as e:
            raise clients.Unreachable(f"watch {url}: {e!r}") from e

    # --- writes ------------------------------------------------------------------------

    async def create(
        self,
        resource: clients.ResourceRef,
        obj: clients.Object,
        options: clients.WriteOptions | None = None,
    ) -> clients.Object:
        namespace = clients.namespace_of(resource, obj)
        created: clients.Object = await self._request(
            "POST",
            self._url(resource, namespace),
            params=self._write_params(options),
            body=obj,
        )
        return created

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
        url = self._url(
            resource, clients.namespace_of(resource, obj), clients.name_of(obj), subresource
        )
        updated: clients.Object = await self._request(
            "PUT", url, params=self._write_params(options), body=obj
        )
        return updated

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
        patched: clients.Object = await self._request(
            "PATCH",
            self._url(resource, namespace, name, subresource),
            params=params,
            body=patch,
            content_type=PATCH_CONTENT_TYPES[patch_type],
        )
        return patched

    async def delete(
        self,
        resource: clients.ResourceRef,
        namespace: str,
        name: str,
        options: clients.DeleteOptions | None = None,
    ) -> clients.Object:
        body = (options or clients.DeleteOptions()).to_body()
        params = {"dryRun": "All"} if options is not None and options.dry_run else None
        deleted: clients.Object = await self._request(
            "DELETE", self._url(resource, namespace, name), params=params, body=body
        )
        return deleted

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
        await self.create_subresource(PODS, namespace, pod_name, "binding", binding)

    async def get_subresource(
        self, resource: clients.ResourceRef, namespace: str, name: str, subresource: str
    ) -> clients.Object:
        obj: clients.Object = await self._request(
            "GET", self._url(resource, namespace, name, subresource)
        )
        return obj

    async def update_subresource(
        self,
        resource: clients.ResourceRef,
        namespace: str,
        name: str,
        subresource: str,
        obj: clients.Object,
        options: clients.WriteOptions | None = None,
    ) -> clients.Object:
        updated: clients.Object = await self._request(
            "PUT",
            self._url(resource, namespace, name, subresource),
            params=self._write_params(options),
            body=obj,
        )
        return updated

    async def create_subresource(
        self,
        resource: clients.ResourceRef,
        namespace: str,
        name: str,
        subresource: str,
        obj: clients.Object,
        options: clients.WriteOptions | None = None,
    ) -> clients.Object:
        created: clients.Object = await self._request(
            "POST",
            self._url(resource, namespace, name, subresource),
            params=self._write_params(options),
            body=obj,
        )
        return created


PODS = clients.resolve("v1", "pods")


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _error(code: int, raw: bytes) -> errors.StatusError:
    """The server's Status as a ``StatusError``; a body that is not a Status
    (a proxy's HTML page, say) still yields the HTTP code and a reason."""
    try:
        body = orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        body = None
    if isinstance(body, dict) and body.get("kind") == "Status":
        return clients.status_error(body, code)
    text = raw.decode(errors="replace").strip()[:500]
    return clients.status_error(
        {
            "code": code,
            "reason": _HTTP_REASONS.get(code, "Unknown"),
            "message": text or f"the server responded with HTTP {code}",
        },
        code,
    )


async def _lines(stream: aiohttp.StreamReader) -> AsyncGenerator[bytes, None]:
    """Newline-delimited watch lines, however the chunks split them (objects can
    be megabytes, beyond ``readline``'s limit)."""
    buffer = bytearray()
    async for chunk in stream.iter_any():
        buffer.extend(chunk)
        start = 0
        while (end := buffer.find(b"\n", start)) >= 0:
            line = bytes(buffer[start:end]).strip()
            if line:
                yield line
            start = end + 1
        del buffer[:start]
    tail = bytes(buffer).strip()
    if tail:
        yield tail


def _watch_event(resource: clients.ResourceRef, line: bytes) -> clients.WatchEvent:
    try:
        event = orjson.loads(line)
    except orjson.JSONDecodeError as e:
        raise errors.internal(f"undecodable watch event: {e}") from e
    kind = event.get("type") if isinstance(event, dict) else None
    obj = event.get("object") if isinstance(event, dict) else None
    if kind == "ERROR":
        raise clients.status_error(obj if isinstance(obj, dict) else {}, 500)
    if kind not in WATCH_EVENT_TYPES or not isinstance(obj, dict):
        raise errors.internal(f"unexpected watch event {str(event)[:200]}")
    return clients.WatchEvent(kind, clients.copy_with_type(resource, obj))
