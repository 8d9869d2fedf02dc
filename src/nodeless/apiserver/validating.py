"""Validation of incoming objects: names, metadata, field types, unknown fields.

Decoding errors (wrong JSON type, unknown or duplicate field under Strict) are
400 BadRequest, as upstream's decoder reports them; semantic errors (invalid
name, missing required field) are 422 Invalid with one cause per field.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from nodeless.api import errors, kinds, schemas

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")

# Kinds whose names must be DNS-1123 labels rather than subdomains.
_LABEL_NAMED = {("", "Namespace"), ("", "Service"), ("", "ReplicationController")}
# Kinds whose names are path segments (RBAC allows ':' in names).
_PATH_SEGMENT_NAMED = {
    ("rbac.authorization.k8s.io", "Role"),
    ("rbac.authorization.k8s.io", "ClusterRole"),
    ("rbac.authorization.k8s.io", "RoleBinding"),
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
}

MAX_ANNOTATIONS_BYTES = 256 * 1024
MAX_CONFIG_BYTES = 1024 * 1024

_DNS1123_SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
    "and must start and end with an alphanumeric character (e.g. 'example.com', regex used for "
    "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
_DNS1123_LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and "
    "must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used "
    "for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)


def name_problems(group: str, kind: str, name: str) -> list[str]:
    """Why ``name`` is not a valid name for this kind (empty list: it is)."""
    if (group, kind) in _PATH_SEGMENT_NAMED:
        if name in (".", ".."):
            return [f"may not be '{name}'"]
        return [f"may not contain '{c}'" for c in "/%" if c in name]
    if (group, kind) in _LABEL_NAMED:
        out = []
        if len(name) > 63:
            out.append("must be no more than 63 characters")
        if not _DNS1123_LABEL.match(name):
            out.append(_DNS1123_LABEL_MSG)
        return out
    out = []
    if len(name) > 253:
        out.append("must be no more than 253 characters")
    if not _DNS1123_SUBDOMAIN.match(name):
        out.append(_DNS1123_SUBDOMAIN_MSG)
    return out


def qualified_name_problems(key: str) -> list[str]:
    """Label and annotation keys: optional DNS prefix, '/', name of ≤ 63 chars."""
    return list(_qualified_name_problems(key))


# Every write checks every label and annotation key; a cluster uses few keys.
@functools.lru_cache(maxsize=4096)
def _qualified_name_problems(key: str) -> tuple[str, ...]:
    prefix, _, name = key.rpartition("/")
    out = []
    if prefix:
        if len(prefix) > 253 or not _DNS1123_SUBDOMAIN.match(prefix):
            out.append("prefix part " + _DNS1123_SUBDOMAIN_MSG)
    if not name:
        out.append("name part must be non-empty")
    elif len(name) > 63:
        out.append("name part must be no more than 63 characters")
    elif not _QUALIFIED_NAME.match(name):
        out.append(
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must start "
            "and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or "
            "'123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
        )
    return tuple(out)


def validate_metadata(resource: kinds.Resource, obj: dict[str, Any]) -> list[errors.Cause]:
    meta = obj.get("metadata") or {}
    causes: list[errors.Cause] = []
    name = meta.get("name", "")
    if not name:
        causes.append(
            errors.Cause(
                "FieldValueRequired",
                "Required value: name or generateName is required",
                "metadata.name",
            )
        )
    else:
        for problem in name_problems(resource.group, resource.kind, name):
            causes.append(
                errors.Cause(
                    "FieldValueInvalid", f'Invalid value: "{name}": {problem}', "metadata.name"
                )
            )
    labels = meta.get("labels") or {}
    for key, value in labels.items():
        for problem in _qualified_name_problems(key):
            causes.append(
                errors.Cause(
                    "FieldValueInvalid", f'Invalid value: "{key}": {problem}', "metadata.labels"
                )
            )
        if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.match(value):
            causes.append(
                errors.Cause(
                    "FieldValueInvalid",
                    f"Invalid value: \"{value}\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
                    "metadata.labels",
                )
            )
    annotations = meta.get("annotations") or {}
    total = 0
    for key, value in annotations.items():
        for problem in _qualified_name_problems(key):
            causes.append(
                errors.Cause(
                    "FieldValueInvalid",
                    f'Invalid value: "{key}": {problem}',
                    "metadata.annotations",
                )
            )
        total += len(key) + len(value or "")
    if total > MAX_ANNOTATIONS_BYTES:
        causes.append(
            errors.Cause(
                "FieldValueTooLong",
                "Too long: must have at most 262144 bytes",
                "metadata.annotations",
            )
        )
    for i, finalizer in enumerate(meta.get("finalizers") or []):
        if not isinstance(finalizer, str) or (
            ("/" not in finalizer) and finalizer not in _STANDARD_FINALIZERS
        ):
            if isinstance(finalizer, str) and qualified_name_problems(finalizer) == []:
                continue
            causes.append(
                errors.Cause(
                    "FieldValueInvalid",
                    f'Invalid value: "{finalizer}": name is neither a standard finalizer name nor is it fully qualified',
                    f"metadata.finalizers[{i}]",
                )
            )
    return causes


_STANDARD_FINALIZERS = {"kubernetes", "orphan", "foregroundDeletion"}


def kind_problems(resource: kinds.Resource, obj: dict[str, Any]) -> list[errors.Cause]:
    """The few semantic checks users hit first, per kind (upstream's ValidateX)."""
    causes: list[errors.Cause] = []
    group, kind = resource.group, resource.kind
    if group == "" and kind == "Pod":
        causes += _pod_spec_problems(obj.get("spec") or {}, "spec")
    elif kind in ("Deployment", "ReplicaSet", "StatefulSet", "DaemonSet") and group == "apps":
        spec = obj.get("spec") or {}
        selector = spec.get("selector")
        template = spec.get("template") or {}
        if not selector:
            causes.append(errors.Cause("FieldValueRequired", "Required value", "spec.selector"))
        else:
            labels = (template.get("metadata") or {}).get("labels") or {}
            wanted = selector.get("matchLabels") or {}
            if any(labels.get(k) != v for k, v in wanted.items()):
                causes.append(
                    errors.Cause(
                        "FieldValueInvalid",
                        "Invalid value: map[string]string(nil): `selector` does not match template `labels`",
                        "spec.template.metadata.labels",
                    )
                )
        causes += _pod_spec_problems(template.get("spec") or {}, "spec.template.spec")
        replicas = spec.get("replicas")
        if isinstance(replicas, int) and replicas < 0:
            causes.append(
                errors.Cause(
                    "FieldValueInvalid",
                    f"Invalid value: {replicas}: must be greater than or equal to 0",
                    "spec.replicas",
                )
            )
    elif group == "batch" and kind in ("Job", "CronJob"):
        spec = obj.get("spec") or {}
        prefix = "spec"
        if kind == "CronJob":
            spec = (spec.get("jobTemplate") or {}).get("spec") or {}
            prefix = "spec.jobTemplate.spec"
        pod_spec = (spec.get("template") or {}).get("spec") or {}
        causes += _pod_spec_problems(pod_spec, f"{prefix}.template.spec")
        policy = pod_spec.get("restartPolicy")
        if policy not in ("OnFailure", "Never"):
            message = f'Unsupported value: "{policy}": supported values: "OnFailure", "Never"'
            where = f"{prefix}.template.spec.restartPolicy"
            causes.append(errors.Cause("FieldValueNotSupported", message, where))
    elif group == "" and kind in ("ConfigMap", "Secret"):
        total = sum(
            len(k) + len(str(v))
            for f in ("data", "binaryData")
            for k, v in (obj.get(f) or {}).items()
        )
        if total > MAX_CONFIG_BYTES:
            causes.append(
                errors.Cause(
                    "FieldValueTooLong",
                    f"Too long: may not be more than {MAX_CONFIG_BYTES} bytes",
                    "data",
                )
            )
        for field_name in ("data", "binaryData", "stringData"):
            for key in obj.get(field_name) or {}:
                if not _CONFIG_KEY.match(key):
                    causes.append(
                        errors.Cause(
                            "FieldValueInvalid",
                            f"Invalid value: \"{key}\": a valid config key must consist of alphanumeric characters, '-', '_' or '.'",
                            f"{field_name}[{key}]",
                        )
                    )
    elif group == "discovery.k8s.io" and kind == "EndpointSlice":
        causes += _endpoint_slice_problems(obj)
    elif group == "" and kind == "Service":
        affinity = ((obj.get("spec") or {}).get("sessionAffinityConfig") or {}).get("clientIP")
        timeout = (affinity or {}).get("timeoutSeconds")
        if timeout is not None and not (isinstance(timeout, int) and 0 < timeout <= 86400):
            causes.append(
                errors.Cause(
                    "FieldValueInvalid",
                    f"Invalid value: {timeout}: must be greater than 0 and less than 86400",
                    "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                )
            )
        for i, port in enumerate((obj.get("spec") or {}).get("ports") or []):
            number = port.get("port")
            if not isinstance(number, int) or not 1 <= number <= 65535:
                causes.append(
                    errors.Cause(
                        "FieldValueInvalid",
                        f"Invalid value: {number}: must be between 1 and 65535, inclusive",
                        f"spec.ports[{i}].port",
                    )
                )
    return causes


def _endpoint_slice_problems(obj: dict[str, Any]) -> list[errors.Cause]:
    """Upstream's address and port checks: what the service proxy and DNS
    turn into rules and records must be an address of the slice's type."""
    causes: list[errors.Cause] = []
    address_type = obj.get("addressType")
    versions = {"IPv4": 4, "IPv6": 6}
    for i, endpoint in enumerate(obj.get("endpoints") or []):
        for j, address in enumerate(endpoint.get("addresses") or []):
            where = f"endpoints[{i}].addresses[{j}]"
            if address_type == "FQDN":
                if not isinstance(address, str) or not _DNS1123_SUBDOMAIN.match(address):
                    causes.append(
                        errors.Cause(
                            "FieldValueInvalid",
                            f'Invalid value: "{address}": must be a valid FQDN',
                            where,
                        )
                    )
                continue
            try:
                parsed = ipaddress.ip_address(str(address))
            except ValueError:
                parsed = None
            if parsed is None or parsed.version != versions.get(str(address_type)):
                causes.append(
                    errors.Cause(
                        "FieldValueInvalid",
                        f'Invalid value: "{address}": must be a valid {address_type} address',
                        where,
                    )
                )
    for i, port in enumerate(obj.get("ports") or []):
        number = port.get("port")
        if number is not None and not (isinstance(number, int) and 1 <= number <= 65535):
            causes.append(
                errors.Cause(
                    "FieldValueInvalid",
                    f"Invalid value: {number}: must be between 1 and 65535, inclusive",
                    f"ports[{i}].port",
                )
            )
    return causes


def _pod_spec_problems(spec: dict[str, Any], path: str) -> list[errors.Cause]:
    causes: list[errors.Cause] = []
    containers = spec.get("containers") or []
    if not containers:
        causes.append(errors.Cause("FieldValueRequired", "Required value", f"{path}.containers"))
    seen: set[str] = set()
    for list_name in ("initContainers", "containers"):
        for i, container in enumerate(spec.get(list_name) or []):
            where = f"{path}.{list_name}[{i}]"
            name = container.get("name") or ""
            if not name:
                causes.append(errors.Cause("FieldValueRequired", "Required value", f"{where}.name"))
            elif not _DNS1123_LABEL.match(name) or len(name) > 63:
                causes.append(
                    errors.Cause(
                        "FieldValueInvalid",
                        f'Invalid value: "{name}": {_DNS1123_LABEL_MSG}',
                        f"{where}.name",
                    )
                )
            elif name in seen:
                causes.append(
                    errors.Cause(
                        "FieldValueDuplicate", f'Duplicate value: "{name}"', f"{where}.name"
                    )
                )
            seen.add(name)
            if not container.get("image"):
                causes.append(
                    errors.Cause("FieldValueRequired", "Required value", f"{where}.image")
                )
    return causes


# --- decoding-level checks: JSON types and unknown fields -------------------

_JSON_TYPES = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "array": (list,),
    "object": (dict,),
}


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"


def walk_fields(value: Any, schema: schemas.Schema | None, path: str) -> Iterator[tuple[str, str]]:
    """Yield (kind, message) for every unknown field and type mismatch.

    kind is "unknown" or "type". Where the schema allows anything (no
    properties, preserve-unknown-fields, IntOrString), the walk stops.
    """
    found: list[tuple[str, str]] = []
    _walk(value, schema, path, found)
    return iter(found)


@dataclass(frozen=True, slots=True)
class _Node:
    """What the walk needs of one schema node, worked out once per node."""

    int_or_string: bool
    allowed: frozenset[str]
    # Python types a value may have (None: any); booleans only where "boolean" is allowed.
    types: tuple[type, ...] | None
    bool_ok: bool
    props: dict[str, Any] | None
    extra: dict[str, Any] | None
    preserve: bool
    items: dict[str, Any] | None


_NODES: dict[int, tuple[Any, _Node | None]] = {}
_MAX_NODES = 50_000


def _node(schema: schemas.Schema | None) -> _Node | None:
    # Schema nodes are long-lived, unhashable dicts: remembered by identity.
    cached = _NODES.get(id(schema))
    if cached is not None and cached[0] is schema:
        return cached[1]
    node = schemas.resolve(schema)
    info: _Node | None = None
    if node is not None:
        allowed = frozenset(schemas.types_of(node))
        known = [t for t in allowed if t in _JSON_TYPES]
        props = node.get("properties")
        extra = node.get("additionalProperties")
        items = node.get("items")
        info = _Node(
            int_or_string=bool(node.get("x-kubernetes-int-or-string")),
            allowed=allowed,
            types=tuple({c for t in known for c in _JSON_TYPES[t]}) if known else None,
            bool_ok="boolean" in allowed,
            props=props if isinstance(props, dict) else None,
            extra=extra if isinstance(extra, dict) else None,
            preserve=bool(node.get("x-kubernetes-preserve-unknown-fields")),
            items=items if isinstance(items, dict) else None,
        )
    if len(_NODES) >= _MAX_NODES:
        _NODES.clear()
    _NODES[id(schema)] = (schema, info)
    return info


def _walk(
    value: Any, schema: schemas.Schema | None, path: str, found: list[tuple[str, str]]
) -> None:
    # Every written object is walked: plain recursion into one list, no generators.
    node = _node(schema)
    if node is None or value is None:
        return
    if node.int_or_string:
        if not isinstance(value, int | str) or isinstance(value, bool):
            found.append(("type", f"{path}: expected int or string, got {_type_name(value)}"))
        return
    if node.types is not None and (
        not isinstance(value, node.types) or (isinstance(value, bool) and not node.bool_ok)
    ):
        want = "/".join(sorted(node.allowed))
        found.append(
            (
                "type",
                f"json: cannot unmarshal {_type_name(value)} into Go struct field {path} of type {want}",
            )
        )
        return
    if isinstance(value, dict):
        props = node.props
        extra = node.extra
        if props is not None:
            for key, child in value.items():
                sub = props.get(key)
                if sub is not None:
                    if child is not None:
                        _walk(child, sub, f"{path}.{key}" if path else key, found)
                elif extra is not None:
                    _walk(child, extra, f"{path}.{key}" if path else key, found)
                elif not node.preserve:
                    found.append(
                        (
                            "unknown",
                            f'unknown field "{path}.{key}"' if path else f'unknown field "{key}"',
                        )
                    )
        elif extra is not None:
            for key, child in value.items():
                _walk(child, extra, f"{path}.{key}" if path else key, found)
    elif isinstance(value, list):
        items = node.items
        if items is not None:
            for i, child in enumerate(value):
                _walk(child, items, f"{path}[{i}]", found)


def duplicate_fields(body: bytes) -> list[str]:
    """Paths of duplicated JSON object keys (orjson keeps the last silently)."""
    if not body:
        return []
    duplicates: list[tuple[int, str]] = []

    def hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in pairs:
            if key in out:
                duplicates.append((id(out), key))
            out[key] = value
        return out

    try:
        root = json.loads(body, object_pairs_hook=hook)
    except ValueError:
        return []
    if not duplicates:
        return []
    paths: dict[int, str] = {}

    def walk(value: Any, path: str) -> None:
        if isinstance(value, dict):
            paths[id(value)] = path
            for k, v in value.items():
                walk(v, f"{path}.{k}" if path else k)
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(v, f"{path}[{i}]")

    walk(root, "")
    found = []
    for owner, key in duplicates:
        prefix = paths.get(owner, "")
        found.append(f"{prefix}.{key}" if prefix else key)
    return found


def prune_unknown(obj: Any, schema: schemas.Schema | None) -> Any:
    """Drop fields the schema does not know, as upstream's decoder does for
    built-in kinds and structural pruning does for custom resources."""
    node = schemas.resolve(schema) if schema else None
    if (
        node is None
        or node.get("x-kubernetes-preserve-unknown-fields")
        or node.get("x-kubernetes-int-or-string")
    ):
        return obj
    if isinstance(obj, dict):
        props = node.get("properties")
        extra = node.get("additionalProperties")
        if not isinstance(props, dict):
            if isinstance(extra, dict):
                return {k: prune_unknown(v, extra) for k, v in obj.items()}
            return obj
        out = {}
        for key, value in obj.items():
            if key in props:
                out[key] = prune_unknown(value, props[key]) if key != "metadata" else value
            elif key in ("apiVersion", "kind", "metadata"):
                out[key] = value
            elif isinstance(extra, dict):
                out[key] = prune_unknown(value, extra)
        return out
    if isinstance(obj, list):
        items = node.get("items")
        return [prune_unknown(v, items) for v in obj] if isinstance(items, dict) else obj
    return obj
