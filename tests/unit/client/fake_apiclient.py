"""An in-memory ``ApiClient`` whose watch streams a test controls.

Enough of the API for informers and controllers: objects per resource with
revisions, paged lists, watches from a revision (410 below the compacted
floor), and knobs to end or break open watches and to send bookmarks.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncGenerator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from nodeless.api import errors
from nodeless.client import clients

Object = clients.Object


@dataclass
class _Stream:
    resource: clients.ResourceRef
    namespace: str
    queue: asyncio.Queue[clients.WatchEvent | BaseException | None] = field(
        default_factory=asyncio.Queue
    )


@dataclass
class _Change:
    rev: int
    type: clients.EventType
    obj: Object


class FakeApiClient:
    """The API in a dict; ``watch_calls`` and ``list_calls`` record what was asked."""

    def __init__(self) -> None:
        self.revision = 0
        self.objects: dict[tuple[str, str], Object] = {}
        self.history: list[tuple[str, _Change]] = []
        # Watches from a revision below this get 410, as after compaction.
        self.floor = 0
        self.streams: list[_Stream] = []
        self.watch_calls: list[str] = []
        self.list_calls: list[tuple[str, str]] = []
        self.list_failures: list[BaseException] = []

    # --- test controls ---------------------------------------------------------------

    def put(self, resource: clients.ResourceRef, obj: Object) -> Object:
        """Create or replace an object, bumping the revision and notifying watches."""
        self.revision += 1
        stored = copy.deepcopy(obj)
        stored.setdefault("metadata", {})["resourceVersion"] = str(self.revision)
        key = (str(resource), clients.key_of(stored))
        kind: clients.EventType = "MODIFIED" if key in self.objects else "ADDED"
        self.objects[key] = stored
        self._record(resource, kind, stored)
        return stored

    def remove(self, resource: clients.ResourceRef, key: str) -> None:
        self.revision += 1
        gone = self.objects.pop((str(resource), key))
        final = copy.deepcopy(gone)
        final["metadata"]["resourceVersion"] = str(self.revision)
        self._record(resource, "DELETED", final)

    def compact(self) -> None:
        """Forget history: any watch from an older revision now gets 410."""
        self.floor = self.revision
        self.history.clear()

    def bookmark(self) -> None:
        for stream in self.streams:
            mark = {
                "kind": stream.resource.kind,
                "metadata": {"resourceVersion": str(self.revision)},
            }
            stream.queue.put_nowait(clients.WatchEvent("BOOKMARK", mark))

    def end_watches(self) -> None:
        """Open watches end cleanly, as when the server's timeout passes."""
        for stream in self.streams:
            stream.queue.put_nowait(None)

    def break_watches(self, error: BaseException | None = None) -> None:
        """Open watches fail, as when the connection drops."""
        for stream in self.streams:
            stream.queue.put_nowait(error or clients.Unreachable("connection reset"))

    def _record(self, resource: clients.ResourceRef, kind: clients.EventType, obj: Object) -> None:
        self.history.append((str(resource), _Change(self.revision, kind, obj)))
        for stream in self.streams:
            if str(stream.resource) == str(resource) and _in(stream.namespace, obj):
                stream.queue.put_nowait(clients.WatchEvent(kind, obj))

    # --- the protocol --------------------------------------------------------------------

    async def get(self, resource: clients.ResourceRef, namespace: str, name: str) -> Object:
        key = f"{namespace}/{name}" if namespace else name
        found = self.objects.get((str(resource), key))
        if found is None:
            raise errors.not_found(resource.plural, resource.group, name)
        return copy.deepcopy(found)

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
        self.list_calls.append((namespace, continue_token))
        if self.list_failures:
            raise self.list_failures.pop(0)
        matching = sorted(
            (k for (r, k), o in self.objects.items() if r == str(resource) and _in(namespace, o)),
        )
        start = int(continue_token) if continue_token else 0
        end = start + limit if limit else len(matching)
        page = [copy.deepcopy(self.objects[(str(resource), k)]) for k in matching[start:end]]
        more = str(end) if end < len(matching) else ""
        return clients.ListResult(page, str(self.revision), more)

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
        self.watch_calls.append(resource_version)
        since = int(resource_version or 0)
        if since < self.floor:
            raise clients.Gone(410, "Expired", f"too old resource version: {since} ({self.floor})")
        # Register and replay with no await in between: nothing lost or doubled.
        stream = _Stream(resource, namespace)
        self.streams.append(stream)
        backlog = [
            clients.WatchEvent(change.type, change.obj)
            for r, change in self.history
            if r == str(resource) and change.rev > since and _in(namespace, change.obj)
        ]
        try:
            for event in backlog:
                yield event
            while True:
                item = await stream.queue.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self.streams.remove(stream)

    async def create(
        self,
        resource: clients.ResourceRef,
        obj: Object,
        options: clients.WriteOptions | None = None,
    ) -> Object:
        key = (str(resource), clients.key_of(obj))
        if key in self.objects:
            raise errors.already_exists(resource.plural, resource.group, clients.name_of(obj))
        return copy.deepcopy(self.put(resource, obj))

    async def update(
        self,
        resource: clients.ResourceRef,
        obj: Object,
        options: clients.WriteOptions | None = None,
    ) -> Object:
        return copy.deepcopy(self.put(resource, obj))

    async def update_status(
        self,
        resource: clients.ResourceRef,
        obj: Object,
        options: clients.WriteOptions | None = None,
    ) -> Object:
        return copy.deepcopy(self.put(resource, obj))

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
    ) -> Object:
        current = await self.get(resource, namespace, name)
        assert isinstance(patch, dict)
        return copy.deepcopy(self.put(resource, _merge(current, patch)))

    async def delete(
        self,
        resource: clients.ResourceRef,
        namespace: str,
        name: str,
        options: clients.DeleteOptions | None = None,
    ) -> Object:
        current = await self.get(resource, namespace, name)
        self.remove(resource, clients.key_of(current))
        return current

    async def bind(
        self,
        namespace: str,
        pod_name: str,
        node_name: str,
        *,
        annotations: Mapping[str, str] | None = None,
        pod_uid: str = "",
    ) -> None:
        pods = clients.resolve("v1", "pods")
        await self.patch(pods, namespace, pod_name, {"spec": {"nodeName": node_name}})

    async def get_subresource(
        self, resource: clients.ResourceRef, namespace: str, name: str, subresource: str
    ) -> Object:
        return await self.get(resource, namespace, name)

    async def update_subresource(
        self,
        resource: clients.ResourceRef,
        namespace: str,
        name: str,
        subresource: str,
        obj: Object,
        options: clients.WriteOptions | None = None,
    ) -> Object:
        return await self.update(resource, obj, options)

    async def create_subresource(
        self,
        resource: clients.ResourceRef,
        namespace: str,
        name: str,
        subresource: str,
        obj: Object,
        options: clients.WriteOptions | None = None,
    ) -> Object:
        return obj

    async def close(self) -> None:
        return None


def _in(namespace: str, obj: Object) -> bool:
    return not namespace or (obj.get("metadata") or {}).get("namespace") == namespace


def _merge(current: Any, patch: Any) -> Any:
    if not isinstance(patch, dict) or not isinstance(current, dict):
        return patch
    out = dict(current)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _merge(current.get(key), value)
    return out


def configmap(name: str, namespace: str = "default", **data: str) -> Object:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
        "data": dict(data),
    }


def as_client(fake: FakeApiClient) -> clients.ApiClient:
    """Statically check that the fake satisfies the protocol."""
    return fake


async def until(condition: Callable[[], bool], steps: int = 1000) -> None:
    """Let other tasks run until ``condition`` holds: no wall-clock waiting, and a
    bounded number of loop turns so a broken expectation fails instead of hanging."""
    for _ in range(steps):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"condition not reached after {steps} event-loop turns")
