"""``/openapi/v3``: one OpenAPI 3.0 document per group-version.

Generated from kubernetes-validate's upstream schemas (JSON-Schema form,
converted back to OpenAPI 3.0 here) and, for custom resources, from their
CRD's openAPIV3Schema. kubectl reads these for ``--validate=strict`` (it
looks for the ``fieldValidation`` parameter on each kind's PATCH operation),
for ``explain``, and for strategic-merge metadata on client-side apply.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from nodeless.api import kinds, schemas

_COMPONENT = "#/components/schemas/"
_STATUS = "io.k8s.apimachinery.pkg.apis.meta.v1.Status"
_DELETE_OPTIONS = "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions"
_WATCH_EVENT = "io.k8s.apimachinery.pkg.apis.meta.v1.WatchEvent"
_EXTRA_ROOTS = (
    _STATUS,
    _DELETE_OPTIONS,
    _WATCH_EVENT,
    "io.k8s.apimachinery.pkg.apis.meta.v1.APIResourceList",
)


def convert(node: Any) -> Any:
    """A JSON-Schema 2020-12 node (as kubernetes-validate ships it) → OpenAPI 3.0."""
    if isinstance(node, list):
        return [convert(n) for n in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    ref = schemas.ref_name(node)
    for key, value in node.items():
        if key == "$ref":
            continue
        if key == "type" and isinstance(value, list):
            real = [t for t in value if t != "null"]
            if len(real) == 1:
                out["type"] = real[0]
            continue
        if key in ("properties", "patternProperties", "$defs"):
            out[key] = {k: convert(v) for k, v in value.items()}
        elif key in ("items", "additionalProperties", "not", "allOf", "anyOf", "oneOf"):
            out[key] = convert(value)
        elif key == "enum" and isinstance(value, list):
            out[key] = [v for v in value if v is not None]
        else:
            out[key] = value
    if ref:
        target = {"$ref": _COMPONENT + ref}
        if out:
            out["allOf"] = [target]
            return out
        return target
    return out


def _refs(node: Any, found: set[str]) -> None:
    if isinstance(node, dict):
        name = schemas.ref_name(node)
        if name and name not in found:
            found.add(name)
            _refs(schemas.definitions().get(name), found)
        for value in node.values():
            _refs(value, found)
    elif isinstance(node, list):
        for value in node:
            _refs(value, found)


def _gvk(r: kinds.Resource) -> dict[str, str]:
    return {"group": r.group, "version": r.version, "kind": r.kind}


_FIELD_VALIDATION = {
    "name": "fieldValidation",
    "in": "query",
    "description": "fieldValidation instructs the server on how to handle objects in the request containing unknown or duplicate fields. Valid values are: Ignore, Warn (default), Strict.",
    "schema": {"type": "string", "uniqueItems": True},
}
_DRY_RUN = {"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": True}}
_FIELD_MANAGER = {
    "name": "fieldManager",
    "in": "query",
    "schema": {"type": "string", "uniqueItems": True},
}
_FORCE = {"name": "force", "in": "query", "schema": {"type": "boolean", "uniqueItems": True}}
_NAME = {
    "name": "name",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "uniqueItems": True},
}
_NAMESPACE = {
    "name": "namespace",
    "in": "path",
    "required": True,
    "schema": {"type": "string", "uniqueItems": True},
}


def _op(
    r: kinds.Resource,
    action: str,
    op_id: str,
    schema_ref: str,
    params: list[dict[str, Any]],
    body: list[str] | None = None,
    gvk: dict[str, str] | None = None,
) -> dict[str, Any]:
    content = {
        "application/json": {"schema": {"$ref": _COMPONENT + schema_ref}},
        "application/yaml": {"schema": {"$ref": _COMPONENT + schema_ref}},
    }
    op: dict[str, Any] = {
        "tags": [r.group_version.replace("/", "_").replace(".", "")],
        "operationId": op_id,
        "parameters": params,
        "responses": {
            "200": {"description": "OK", "content": content},
            "401": {"description": "Unauthorized"},
        },
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": gvk or _gvk(r),
    }
    if body:
        op["requestBody"] = {
            "content": {ct: {"schema": {"$ref": _COMPONENT + schema_ref}} for ct in body},
            "required": True,
        }
    return op


def document(
    registry: kinds.Registry,
    group: str,
    version: str,
    custom_schemas: dict[tuple[str, str, str], schemas.Schema],
) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    components: dict[str, Any] = {}
    roots: set[str] = set(_EXTRA_ROOTS)
    prefix = f"/apis/{group}/{version}" if group else f"/api/{version}"
    for r in registry.in_group_version(group, version):
        upstream = "" if r.custom else schemas.definition_name_for(r.group, r.version, r.kind) or ""
        if not upstream:
            # Custom resources, and our own kinds upstream has no schema for
            # (nodeless.dev): their schema, or any object, so that kubectl's
            # client-side validation finds the kind.
            name = f"{_reverse_domain(r.group)}.{r.version}.{r.kind}"
            custom = custom_schemas.get((r.group, r.version, r.kind)) or {
                "type": "object",
                "x-kubernetes-preserve-unknown-fields": True,
            }
            custom = dict(custom)
            custom["x-kubernetes-group-version-kind"] = [_gvk(r)]
            props = dict(custom.get("properties") or {})
            props.setdefault("apiVersion", {"type": "string"})
            props.setdefault("kind", {"type": "string"})
            props["metadata"] = {
                "$ref": _COMPONENT + "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
            }
            custom["properties"] = props
            components[name] = custom
            roots.add("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta")
            roots.add("io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta")
            patch_types = [
                "application/json-patch+json",
                "application/merge-patch+json",
                "application/apply-patch+yaml",
            ]
        else:
            name = upstream
            roots.add(name)
            list_name = schemas.definition_name_for(r.group, r.version, r.effective_list_kind)
            if list_name:
                roots.add(list_name)
            patch_types = [
                "application/json-patch+json",
                "application/merge-patch+json",
                "application/strategic-merge-patch+json",
                "application/apply-patch+yaml",
            ]
        base = (
            f"{prefix}/namespaces/{{namespace}}/{r.plural}"
            if r.namespaced
            else f"{prefix}/{r.plural}"
        )
        ns_params = [_NAMESPACE] if r.namespaced else []
        op_kind = r.kind
        collection: dict[str, Any] = {"parameters": list(ns_params)}
        if "list" in r.verbs:
            collection["get"] = _op(r, "list", f"list{op_kind}", name, [])
        if "create" in r.verbs:
            collection["post"] = _op(
                r,
                "post",
                f"create{op_kind}",
                name,
                [_DRY_RUN, _FIELD_MANAGER, _FIELD_VALIDATION],
                ["*/*"],
            )
        if "deletecollection" in r.verbs:
            collection["delete"] = _op(
                r, "deletecollection", f"deletecollection{op_kind}", _STATUS, []
            )
        paths[base] = collection
        if r.virtual:
            continue
        item: dict[str, Any] = {"parameters": [_NAME, *ns_params]}
        if "get" in r.verbs:
            item["get"] = _op(r, "get", f"read{op_kind}", name, [])
        if "update" in r.verbs:
            item["put"] = _op(
                r,
                "put",
                f"replace{op_kind}",
                name,
                [_DRY_RUN, _FIELD_MANAGER, _FIELD_VALIDATION],
                ["*/*"],
            )
        if "patch" in r.verbs:
            item["patch"] = _op(
                r,
                "patch",
                f"patch{op_kind}",
                name,
                [_DRY_RUN, _FIELD_MANAGER, _FIELD_VALIDATION, _FORCE],
                patch_types,
            )
        if "delete" in r.verbs:
            item["delete"] = _op(r, "delete", f"delete{op_kind}", _STATUS, [_DRY_RUN], ["*/*"])
        paths[f"{base}/{{name}}"] = item
        for sub in r.subresources:
            if sub.name not in ("status", "scale"):
                continue
            sub_schema = name if sub.name == "status" else "io.k8s.api.autoscaling.v1.Scale"
            roots.add(sub_schema) if not r.custom or sub.name == "scale" else None
            sub_gvk = (
                _gvk(r)
                if sub.name == "status"
                else {"group": "autoscaling", "version": "v1", "kind": "Scale"}
            )
            paths[f"{base}/{{name}}/{sub.name}"] = {
                "parameters": [_NAME, *ns_params],
                "get": _op(
                    r, "get", f"read{op_kind}{sub.name.title()}", sub_schema, [], gvk=sub_gvk
                ),
                "put": _op(
                    r,
                    "put",
                    f"replace{op_kind}{sub.name.title()}",
                    sub_schema,
                    [_DRY_RUN, _FIELD_MANAGER, _FIELD_VALIDATION],
                    ["*/*"],
                    gvk=sub_gvk,
                ),
                "patch": _op(
                    r,
                    "patch",
                    f"patch{op_kind}{sub.name.title()}",
                    sub_schema,
                    [_DRY_RUN, _FIELD_MANAGER, _FIELD_VALIDATION, _FORCE],
                    patch_types,
                    gvk=sub_gvk,
                ),
            }
    closure: set[str] = set()
    for root in roots:
        if root in schemas.definitions():
            closure.add(root)
            _refs(schemas.definitions()[root], closure)
    for def_name in sorted(closure):
        components[def_name] = convert(schemas.definitions()[def_name])
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": schemas.KUBERNETES_SCHEMA_VERSION},
        "paths": paths,
        "components": {"schemas": components},
    }


def _reverse_domain(group: str) -> str:
    return ".".join(reversed(group.split(".")))


class OpenAPICache:
    """Documents rendered once per group-version until the registry changes."""

    def __init__(self) -> None:
        self._docs: dict[str, tuple[bytes, str]] = {}

    def invalidate(self) -> None:
        self._docs.clear()

    def get(
        self,
        registry: kinds.Registry,
        gv_path: str,
        custom_schemas: dict[tuple[str, str, str], schemas.Schema],
    ) -> tuple[bytes, str] | None:
        cached = self._docs.get(gv_path)
        if cached is not None:
            return cached
        group, version = _split_gv_path(gv_path)
        if group is None or not registry.in_group_version(group, version):
            return None
        body = orjson.dumps(document(registry, group, version, custom_schemas))
        digest = hashlib.sha512(body).hexdigest()[:64].upper()
        self._docs[gv_path] = (body, digest)
        return body, digest

    def root(
        self, registry: kinds.Registry, custom_schemas: dict[tuple[str, str, str], schemas.Schema]
    ) -> dict[str, Any]:
        paths: dict[str, Any] = {}
        for group, versions in registry.groups():
            for version in versions:
                gv_path = f"apis/{group}/{version}" if group else f"api/{version}"
                found = self.get(registry, gv_path, custom_schemas)
                if found is not None:
                    paths[gv_path] = {"serverRelativeURL": f"/openapi/v3/{gv_path}?hash={found[1]}"}
        return {"paths": paths}


def _split_gv_path(gv_path: str) -> tuple[str | None, str]:
    parts = gv_path.strip("/").split("/")
    if len(parts) == 2 and parts[0] == "api":
        return "", parts[1]
    if len(parts) == 3 and parts[0] == "apis":
        return parts[1], parts[2]
    return None, ""
