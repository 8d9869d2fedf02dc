"""CustomResourceDefinitions: serving custom resources as they are defined.

The CRD cache feeds the kind registry, the OpenAPI documents, printer columns
and scale paths; a CRD is marked Established once it is served, and its
objects are removed when it is deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
from typing import TYPE_CHECKING, Any

from nodeless.api import errors, kinds, times
from nodeless.apiserver import storing, watchcache

if TYPE_CHECKING:
    from nodeless.apiserver import endpoints

log = logging.getLogger(__name__)

CRD_GROUP = "apiextensions.k8s.io"
CRD_PLURAL = "customresourcedefinitions"


def resources_of(crd: dict[str, Any]) -> list[tuple[kinds.Resource, dict[str, Any]]]:
    """The served (resource, version entry) pairs a CRD defines."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    group = spec.get("group", "")
    kind = names.get("kind", "")
    plural = names.get("plural", "")
    if not (group and kind and plural):
        return []
    storage = next((v["name"] for v in spec.get("versions") or [] if v.get("storage")), "")
    out = []
    for version in spec.get("versions") or []:
        if not version.get("served", True):
            continue
        subs = version.get("subresources") or {}
        subresources = []
        if "status" in subs:
            subresources.append(kinds.Subresource("status", kind, ("get", "patch", "update")))
        if "scale" in subs:
            subresources.append(
                kinds.Subresource("scale", "Scale", ("get", "patch", "update"), "autoscaling", "v1")
            )
        resource = kinds.Resource(
            group=group,
            version=version["name"],
            kind=kind,
            plural=plural,
            singular=names.get("singular") or kind.lower(),
            namespaced=spec.get("scope", "Namespaced") == "Namespaced",
            short_names=tuple(names.get("shortNames") or ()),
            categories=tuple(names.get("categories") or ()),
            subresources=tuple(subresources),
            storage_version=storage,
            custom=True,
            list_kind=names.get("listKind") or f"{kind}List",
        )
        out.append((resource, version))
    return out


_OBJECT_META_REF = {"$ref": "#/$defs/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}


def with_object_fields(schema: dict[str, Any]) -> dict[str, Any]:
    """A CRD's schema plus the fields every object has (CRDs may leave them out)."""
    props = dict(schema.get("properties") or {})
    props.setdefault("apiVersion", {"type": "string"})
    props.setdefault("kind", {"type": "string"})
    props["metadata"] = _OBJECT_META_REF
    return dict(schema, properties=props)


class CrdManager:
    def __init__(self, store: storing.Store, api: endpoints.Api) -> None:
        self.store = store
        self.api = api
        self._tasks: set[asyncio.Task[None]] = set()

    def attach(self) -> None:
        self.store.cacher.on_event.append(self._on_event)

    async def load_existing(self) -> None:
        self.rebuild()
        for entry in list(self._cache().objects.values()):
            self._spawn(self._establish(entry.obj["metadata"]["name"]))

    def _cache(self) -> watchcache.ResourceCache:
        return self.store.cacher.cache(CRD_GROUP, CRD_PLURAL)

    def rebuild(self) -> None:
        custom: list[kinds.Resource] = []
        schemas_by_gvk: dict[tuple[str, str, str], dict[str, Any]] = {}
        printers: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
        scales: dict[tuple[str, str, str], dict[str, str]] = {}
        for entry in self._cache().objects.values():
            for resource, version in resources_of(entry.obj):
                if self.store.registry.lookup(
                    resource.group, resource.version, resource.plural
                ) and not any(
                    r.custom
                    for r in self.store.registry
                    if (r.group, r.version, r.plural)
                    == (resource.group, resource.version, resource.plural)
                ):
                    continue  # never shadow a built-in
                custom.append(resource)
                gvk = (resource.group, resource.version, resource.kind)
                schema = (version.get("schema") or {}).get("openAPIV3Schema")
                if schema:
                    schemas_by_gvk[gvk] = with_object_fields(schema)
                printers[gvk] = version.get("additionalPrinterColumns") or []
                scale = (version.get("subresources") or {}).get("scale")
                if scale:
                    scales[gvk] = scale
        self.store.registry.replace_custom(custom)
        self.store.custom_schemas.clear()
        self.store.custom_schemas.update(schemas_by_gvk)
        self.api.printer_columns = printers
        self.api.scale_paths = scales
        self.api.openapi_cache.invalidate()

    def _on_event(self, group: str, plural: str, event: watchcache.CacheEvent) -> None:
        if (group, plural) != (CRD_GROUP, CRD_PLURAL):
            return
        self.rebuild()
        name = event.entry.name
        if event.type == "DELETED":
            self._spawn(self._remove_objects(event.entry.obj))
        else:
            self._spawn(self._establish(name))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _establish(self, name: str) -> None:
        resource = self.store.registry.by_kind(CRD_GROUP, "v1", "CustomResourceDefinition")
        assert resource is not None

        def mutate(current: dict[str, Any] | None) -> dict[str, Any]:
            assert current is not None
            new = copy.deepcopy(current)
            spec = new.get("spec") or {}
            now = times.rfc3339(self.store.clock())
            status = new.setdefault("status", {})
            conditions = {c.get("type"): c for c in status.get("conditions") or []}
            for ctype, reason, message in (
                ("NamesAccepted", "NoConflicts", "no conflicts found"),
                ("Established", "InitialNamesAccepted", "the initial names have been accepted"),
            ):
                if (conditions.get(ctype) or {}).get("status") != "True":
                    conditions[ctype] = {
                        "type": ctype,
                        "status": "True",
                        "reason": reason,
                        "message": message,
                        "lastTransitionTime": now,
                    }
            status["conditions"] = list(conditions.values())
            status["acceptedNames"] = spec.get("names") or {}
            stored = [v["name"] for v in spec.get("versions") or [] if v.get("storage")]
            status["storedVersions"] = sorted(set(status.get("storedVersions") or []) | set(stored))
            new["metadata"].pop("resourceVersion", None)
            return new

        with contextlib.suppress(errors.StatusError):
            await self.store.update(
                resource,
                "",
                name,
                mutate,
                storing.WriteOptions(manager="nodeless-apiextensions", subresource="status"),
            )

    async def _remove_objects(self, crd: dict[str, Any]) -> None:
        spec = crd.get("spec") or {}
        group = spec.get("group", "")
        plural = (spec.get("names") or {}).get("plural", "")
        if not group or not plural:
            return
        cache = self.store.cacher.cache(group, plural)
        for key in list(cache.objects):
            with contextlib.suppress(Exception):
                await self.store.backend.delete(key)
