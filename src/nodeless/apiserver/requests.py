"""Parsing what a request asks for: the resource path, bodies, query options."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import orjson
import yaml

from nodeless.api import errors, kinds, protobuf, times

MAX_BODY_BYTES = 3 * 1024 * 1024

JSON = "application/json"
YAML = "application/yaml"
JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"


@dataclass(frozen=True)
class Target:
    """Where a resource request points: /api[s]/<g>/<v>/[namespaces/<ns>/]<plural>[/<name>[/<sub>]]."""

    group: str
    version: str
    plural: str
    namespace: str = ""
    name: str = ""
    subresource: str = ""
    # True when the URL had a namespaces/<ns>/ segment (namespaced access).
    scoped: bool = False


@dataclass(frozen=True)
class GroupVersionPath:
    group: str
    version: str


def parse_path(path: str) -> Target | GroupVersionPath | None:
    """Split a resource URL; None for paths that are not under /api or /apis."""
    parts = [p for p in path.split("/") if p]
    if not parts:
        return None
    if parts[0] == "api":
        if len(parts) < 2:
            return None
        group, version, rest = "", parts[1], parts[2:]
    elif parts[0] == "apis":
        if len(parts) < 3:
            return None
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    if not rest:
        return GroupVersionPath(group, version)
    if (
        rest[0] == "namespaces"
        and len(rest) >= 3
        and not (len(rest) == 3 and rest[2] in ("status", "finalize"))
    ):
        namespace = rest[1]
        rest = rest[2:]
        return Target(group, version, rest[0], namespace, _at(rest, 1), _at(rest, 2), scoped=True)
    if len(rest) > 3:
        return None
    return Target(group, version, rest[0], "", _at(rest, 1), _at(rest, 2))


def _at(items: list[str], i: int) -> str:
    return items[i] if len(items) > i else ""


def media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def decode_body(body: bytes, content_type: str) -> Any:
    """JSON or YAML body → Python value; 400 for malformed input, 415 for other types."""
    if len(body) > MAX_BODY_BYTES:
        raise errors.too_large()
    kind = media_type(content_type) or JSON
    if kind in (JSON, JSON_PATCH, MERGE_PATCH, STRATEGIC_PATCH, "*/*"):
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as e:
            # kubectl sends YAML-looking JSON never; still accept YAML that is JSON-compatible.
            raise errors.bad_request(f"error decoding request body: invalid JSON: {e}") from None
    if kind in (YAML, APPLY_PATCH, "application/x-yaml", "text/yaml"):
        try:
            docs = list(yaml.safe_load_all(body))
        except yaml.YAMLError as e:
            raise errors.bad_request(f"error decoding YAML: {e}") from None
        if len(docs) != 1:
            raise errors.bad_request("the request body must contain exactly one YAML document")
        return _yaml_clean(docs[0])
    if kind == protobuf.CONTENT_TYPE:
        # client-go's typed clients (kubectl create, auth, drain) send protobuf.
        return protobuf.decode(body)
    raise errors.unsupported_media_type(content_type)


def _yaml_clean(value: Any) -> Any:
    """YAML timestamps and non-string keys → the JSON forms Kubernetes uses."""
    import datetime

    if isinstance(value, dict):
        return {str(k) if not isinstance(k, str) else k: _yaml_clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_yaml_clean(v) for v in value]
    if isinstance(value, datetime.datetime):
        return times.rfc3339(value)
    if isinstance(value, datetime.date):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        # YAML's .nan and .inf have no JSON form (upstream's YAML-to-JSON step fails too).
        raise errors.bad_request(f"error converting YAML to JSON: unsupported value: {value}")
    return value


def check_object(resource: kinds.Resource, obj: Any, target: Target) -> dict[str, Any]:
    """The body must be an object of the URL's kind, group-version and namespace."""
    if not isinstance(obj, dict):
        raise errors.bad_request("the body of the request was not a valid object")
    api_version = obj.get("apiVersion")
    kind = obj.get("kind")
    if target.subresource != "scale":
        # Like upstream's decoder, a body without kind/apiVersion takes them from
        # the URL (the official Python client sends models without them).
        if not kind:
            obj["kind"] = kind = resource.kind
        if not api_version:
            obj["apiVersion"] = api_version = resource.group_version
    if (
        kind is not None
        and kind != resource.kind
        and not (target.subresource in ("scale",) and kind == "Scale")
    ):
        raise errors.bad_request(
            f"the API version in the data ({api_version}) does not match the expected API version ({resource.group_version})"
            if api_version and api_version != resource.group_version
            else f"Object kind {kind!r} does not match the URL's kind {resource.kind!r}"
        )
    if (
        api_version is not None
        and api_version != resource.group_version
        and target.subresource != "scale"
    ):
        raise errors.bad_request(
            f"the API version in the data ({api_version}) does not match the expected API version ({resource.group_version})"
        )
    meta = obj.get("metadata")
    if meta is not None and not isinstance(meta, dict):
        raise errors.bad_request("metadata must be an object")
    if (
        resource.namespaced
        and meta
        and meta.get("namespace")
        and target.namespace
        and meta["namespace"] != target.namespace
    ):
        raise errors.bad_request(
            "the namespace of the provided object does not match the namespace sent on the request"
        )
    return obj


def bool_param(value: str | None) -> bool:
    return value is not None and value.lower() in ("1", "true", "yes")


def int_param(name: str, value: str | None) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise errors.bad_request(f"invalid value for {name}: {value!r}") from None
