"""Access to the upstream object schemas shipped by kubernetes-validate.

We never hand-write schemas: the JSON-Schema definitions that
kubernetes-validate ships (converted by it from upstream's OpenAPI) carry every
property, the patch strategies and merge keys, and the list types that the
patch engines, field validation and ``/openapi/v3`` need.

Schema nodes are plain dicts in JSON-Schema 2020-12 form: ``$ref`` points into
``#/$defs/<name>`` and nullable types are written ``["string", "null"]``.
"""

from __future__ import annotations

import functools
import importlib.resources
from typing import Any

import orjson

KUBERNETES_SCHEMA_VERSION = "v1.37.0"
_REF_PREFIX = "#/$defs/"

Schema = dict[str, Any]


@functools.cache
def definitions() -> dict[str, Schema]:
    """All definitions by name, e.g. ``io.k8s.api.core.v1.Pod``."""
    root = importlib.resources.files("kubernetes_validate").joinpath(
        "kubernetes-json-schema", f"{KUBERNETES_SCHEMA_VERSION}-local", "_definitions.json"
    )
    data: dict[str, Any] = orjson.loads(root.read_bytes())
    defs: dict[str, Schema] = data["$defs"]
    return defs


@functools.cache
def _gvk_index() -> dict[tuple[str, str, str], str]:
    index: dict[tuple[str, str, str], str] = {}
    for name, schema in definitions().items():
        for gvk in schema.get("x-kubernetes-group-version-kind", []):
            index[(gvk.get("group", ""), gvk["version"], gvk["kind"])] = name
    return index


def definition_name_for(group: str, version: str, kind: str) -> str | None:
    """The definition name of a top-level kind, or None for unknown kinds.

    Some definitions (DeleteOptions, WatchEvent) are listed under many GVKs;
    the index keeps whichever the shipped file lists last, which is harmless
    because those are identical.
    """
    return _gvk_index().get((group, version, kind))


def schema_for(group: str, version: str, kind: str) -> Schema | None:
    name = definition_name_for(group, version, kind)
    return definitions()[name] if name else None


def ref_name(node: Schema) -> str | None:
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith(_REF_PREFIX):
        return ref[len(_REF_PREFIX) :]
    return None


def resolve(node: Schema | None) -> Schema | None:
    """Follow ``$ref`` (also inside a single-element ``allOf``) to the definition."""
    seen = 0
    while node is not None and seen < 32:
        name = ref_name(node)
        if name is None:
            all_of = node.get("allOf")
            if isinstance(all_of, list) and len(all_of) == 1:
                node = all_of[0]
                seen += 1
                continue
            return node
        node = definitions().get(name)
        seen += 1
    return node


def types_of(node: Schema | None) -> set[str]:
    """The non-null JSON types a node allows (empty set: anything)."""
    if node is None:
        return set()
    kind = node.get("type")
    if isinstance(kind, str):
        return {kind} - {"null"}
    if isinstance(kind, list):
        return {k for k in kind if k != "null"}
    return set()


def property_of(node: Schema | None, key: str) -> Schema | None:
    """The resolved schema of ``node.properties[key]`` or of its additionalProperties."""
    node = resolve(node)
    if node is None:
        return None
    props = node.get("properties")
    if isinstance(props, dict) and key in props:
        return resolve(props[key])
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):
        return resolve(extra)
    return None


def items_of(node: Schema | None) -> Schema | None:
    node = resolve(node)
    if node is None:
        return None
    items = node.get("items")
    return resolve(items) if isinstance(items, dict) else None


def is_preserve_unknown(node: Schema | None) -> bool:
    """True where arbitrary content is allowed (RawExtension, IntOrString, free maps)."""
    node = resolve(node)
    if node is None:
        return True
    if node.get("x-kubernetes-preserve-unknown-fields"):
        return True
    if "properties" not in node and types_of(node) in (set(), {"object"}):
        return "additionalProperties" not in node or node.get("additionalProperties") is True
    return False
