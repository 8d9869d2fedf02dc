"""The PATCH bodies of the Kubernetes API, applied to plain dict objects.

JSON patch (RFC 6902), JSON merge patch (RFC 7386) and strategic merge patch
(``k8s.io/apimachinery/pkg/util/strategicpatch``, server side). Server-side
apply is handled elsewhere; this module only recognises its content type.

All functions are pure: inputs are never mutated and results share no mutable
structure with them, so callers may store the result directly. Strategic merge
patch reads patch strategies and merge keys from the upstream schemas, so list
merging (containers by name, ports by containerPort, ...) matches upstream,
including upstream's element ordering.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import Any, Final

from nodeless.api import errors, schemas, values

JSON_PATCH: Final = "json"
MERGE_PATCH: Final = "merge"
STRATEGIC_MERGE_PATCH: Final = "strategic"
APPLY_PATCH: Final = "apply"

_CONTENT_TYPES: Final = {
    "application/json-patch+json": JSON_PATCH,
    "application/merge-patch+json": MERGE_PATCH,
    "application/strategic-merge-patch+json": STRATEGIC_MERGE_PATCH,
    "application/apply-patch+yaml": APPLY_PATCH,
}

# Upstream's limit on the number of operations in one JSON patch.
MAX_JSON_PATCH_OPERATIONS: Final = 10000


def apply_patch_type(content_type: str) -> str:
    """Normalise a PATCH Content-Type to "json", "merge", "strategic" or "apply"."""
    media_type = content_type.split(";", 1)[0].strip().lower()
    patch_type = _CONTENT_TYPES.get(media_type)
    if patch_type is None:
        raise errors.unsupported_media_type(content_type)
    return patch_type


def _invalid(detail: str) -> errors.StatusError:
    """How the apiserver reports a patch that cannot be applied (422, detail in causes)."""
    return errors.StatusError(
        422,
        "Invalid",
        "the server rejected our request due to an error in our request",
        causes=[errors.Cause("UnexpectedServerResponse", detail)],
    )


# --- RFC 6902 JSON patch ---------------------------------------------------------


class _PatchFailure(Exception):
    pass


def _pointer(path: Any, name: str) -> list[str]:
    """Split a JSON pointer into unescaped reference tokens."""
    if not isinstance(path, str):
        raise _PatchFailure(f"operation, missing {name} field: missing value")
    if path == "":
        return []
    if not path.startswith("/"):
        raise _PatchFailure(f'doc is missing path: "{path}": missing value')
    return [t.replace("~1", "/").replace("~0", "~") for t in path[1:].split("/")]


def _array_index(token: str, size: int, op: str, path: str, *, allow_end: bool) -> int:
    """RFC 6901 array index: decimal without leading zeros; "-" (one past the end) for add."""
    if token == "-" and allow_end:
        return size
    if not token.isascii() or not token.isdigit() or (len(token) > 1 and token[0] == "0"):
        raise _PatchFailure(
            f"error in {op} for path: '{path}': value was not a proper array index: '{token}'"
        )
    index = int(token)
    if index > (size if allow_end else size - 1):
        raise _PatchFailure(
            f"error in {op} for path: '{path}': Unable to access invalid index: {index}: "
            "invalid index referenced"
        )
    return index


def _parent(doc: Any, tokens: list[str], op: str, path: str) -> Any:
    """The container holding the last token of ``tokens``."""
    node = doc
    for token in tokens[:-1]:
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list):
            try:
                node = node[_array_index(token, len(node), op, path, allow_end=False)]
            except _PatchFailure:
                raise _PatchFailure(
                    f'{op} operation does not apply: doc is missing path: "{path}": missing value'
                ) from None
        else:
            raise _PatchFailure(
                f'{op} operation does not apply: doc is missing path: "{path}": missing value'
            )
    if not isinstance(node, (dict, list)):
        raise _PatchFailure(
            f'{op} operation does not apply: doc is missing path: "{path}": missing value'
        )
    return node


def _get(doc: Any, tokens: list[str], op: str, path: str) -> Any:
    if not tokens:
        return doc
    parent = _parent(doc, tokens, op, path)
    key = tokens[-1]
    if isinstance(parent, dict):
        if key not in parent:
            raise _PatchFailure(
                f'{op} operation does not apply: doc is missing path: "{path}": missing value'
            )
        return parent[key]
    return parent[_array_index(key, len(parent), op, path, allow_end=False)]


def _add(doc: Any, tokens: list[str], value: Any, op: str, path: str) -> Any:
    if not tokens:
        return value
    parent = _parent(doc, tokens, op, path)
    key = tokens[-1]
    if isinstance(parent, dict):
        parent[key] = value
    else:
        parent.insert(_array_index(key, len(parent), op, path, allow_end=True), value)
    return doc


def _remove(doc: Any, tokens: list[str], op: str, path: str) -> Any:
    if not tokens:
        raise _PatchFailure(f"{op} operation does not apply: cannot remove the whole document")
    parent = _parent(doc, tokens, op, path)
    key = tokens[-1]
    if isinstance(parent, dict):
        if key not in parent:
            raise _PatchFailure(
                f"error in {op} for path: '{path}': Unable to remove nonexistent key: {key}: "
                "missing value"
            )
        return parent.pop(key)
    return parent.pop(_array_index(key, len(parent), op, path, allow_end=False))


def _operation_value(operation: Mapping[str, Any], op: str) -> Any:
    if "value" not in operation:
        raise _PatchFailure(f"{op} operation, missing value field: missing value")
    return values.clone(operation["value"])


def _apply_operation(doc: Any, operation: Mapping[str, Any]) -> Any:
    op = operation.get("op")
    if not isinstance(op, str):
        raise _PatchFailure("Unexpected kind: unknown")
    path = operation.get("path")
    if op not in ("add", "remove", "replace", "move", "copy", "test"):
        raise _PatchFailure(f"Unexpected kind: {op}")
    if not isinstance(path, str):
        raise _PatchFailure(f"{op} operation failed to decode path: missing value")
    tokens = _pointer(path, "path")
    if op == "add":
        return _add(doc, tokens, _operation_value(operation, op), op, path)
    if op == "remove":
        _remove(doc, tokens, op, path)
        return doc
    if op == "replace":
        value = _operation_value(operation, op)
        if not tokens:
            return value
        parent = _parent(doc, tokens, op, path)
        key = tokens[-1]
        if isinstance(parent, dict):
            if key not in parent:
                raise _PatchFailure(
                    f"replace operation does not apply: doc is missing key: {path}: missing value"
                )
            parent[key] = value
        else:
            parent[_array_index(key, len(parent), op, path, allow_end=False)] = value
        return doc
    if op == "test":
        value = operation.get("value")
        if "value" not in operation or not values.equal(_get(doc, tokens, op, path), value):
            raise _PatchFailure(f"testing value {path} failed: test failed")
        return doc
    source = operation.get("from")
    if not isinstance(source, str):
        raise _PatchFailure(f"{op} operation failed to decode from: missing value")
    from_tokens = _pointer(source, "from")
    if op == "move":
        if source == path:
            return doc
        if tokens[: len(from_tokens)] == from_tokens:
            raise _PatchFailure(
                f"move operation does not apply: cannot move {source} into its own child {path}"
            )
        return _add(doc, tokens, _remove(doc, from_tokens, op, source), op, path)
    value = values.clone(_get(doc, from_tokens, op, source))
    return _add(doc, tokens, value, op, path)


def json_patch(obj: Mapping[str, Any], ops: Any) -> dict[str, Any]:
    """Apply an RFC 6902 JSON patch.

    A body that is not a list of operation objects is a 400; an operation that
    cannot be applied (failed ``test``, missing path, bad index) is a 422, as
    the apiserver reports jsonpatch application errors.
    """
    if not isinstance(ops, list) or not all(isinstance(o, Mapping) for o in ops):
        raise errors.bad_request(
            "json: cannot unmarshal into Go value of type jsonpatch.Patch: "
            "a JSON patch must be a list of operation objects"
        )
    if len(ops) > MAX_JSON_PATCH_OPERATIONS:
        raise errors.too_large(
            f"The allowed maximum operations in a JSON patch is {MAX_JSON_PATCH_OPERATIONS}, "
            f"got {len(ops)}"
        )
    doc: Any = values.clone(dict(obj))
    try:
        for operation in ops:
            doc = _apply_operation(doc, operation)
    except _PatchFailure as exc:
        raise _invalid(str(exc)) from None
    if not isinstance(doc, dict):
        raise _invalid("the patched document is not a JSON object")
    return doc


# --- RFC 7386 JSON merge patch ------------------------------------------------------


def _merge_into(target: dict[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """RFC 7386 MergePatch into ``target``, a private copy that is updated in place."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, Mapping):
            current = target.get(key)
            target[key] = _merge_into(current if isinstance(current, dict) else {}, value)
        else:
            target[key] = values.clone(value)
    return target


def merge_patch(obj: Mapping[str, Any], patch: Any, *, share: bool = False) -> dict[str, Any]:
    """Apply an RFC 7386 merge patch: null deletes, objects merge, anything else replaces.

    The result is the caller's to change. With ``share``, only the top level,
    ``metadata`` and the maps on the patch's paths are new; everything else
    is ``obj``'s own (for a caller that changes nothing deeper, like a status
    write, which then copies a few maps instead of the whole object).
    """
    if not isinstance(patch, Mapping):
        raise errors.bad_request("Invalid JSON Patch")
    if not share:
        return _merge_into(values.clone(dict(obj)), patch)
    merged = _merge_shared(obj, patch)
    if isinstance(merged.get("metadata"), dict) and "metadata" not in patch:
        merged["metadata"] = dict(merged["metadata"])
    return merged


def _merge_shared(target: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(target)
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, Mapping):
            current = out.get(key)
            out[key] = _merge_shared(current if isinstance(current, dict) else {}, value)
        else:
            out[key] = values.clone(value)
    return out


# --- strategic merge patch ------------------------------------------------------------

_DIRECTIVE: Final = "$patch"
_DELETE: Final = "delete"
_REPLACE: Final = "replace"
_MERGE: Final = "merge"
_RETAIN_KEYS_STRATEGY: Final = "retainKeys"
_RETAIN_KEYS: Final = "$retainKeys"
_DELETE_FROM_PRIMITIVE_LIST: Final = "$deleteFromPrimitiveList"
_SET_ELEMENT_ORDER: Final = "$setElementOrder"

_BAD_PRIMITIVE_LIST: Final = "invalid patch format of primitive list"
_BAD_RETAIN_KEYS: Final = "invalid patch format of retainKeys"
_BAD_SET_ELEMENT_ORDER: Final = "invalid patch format of setElementOrder list"

Schema = schemas.Schema


def _go(value: Any) -> str:
    """A JSON value as Go's %v prints the decoded interface{} (for upstream messages)."""
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{_go(value[k])}" for k in sorted(value)) + "]"
    if isinstance(value, list):
        return "[" + " ".join(_go(v) for v in value) + "]"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _go_type(value: Any) -> str:
    if value is None:
        return "<nil>"
    if isinstance(value, dict):
        return "map[string]interface {}"
    if isinstance(value, list):
        return "[]interface {}"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int64"
    if isinstance(value, float):
        return "float64"
    return "string"


def _bad_arg_type(expected: str, actual: Any) -> errors.StatusError:
    return errors.bad_request(f"expected a {expected}, but received a {_go_type(actual)}")


def _no_merge_key(item: dict[str, Any], merge_key: str) -> errors.StatusError:
    return errors.bad_request(f"map: {_go(item)} does not contain declared merge key: {merge_key}")


def _scalar_key(value: Any) -> Hashable:
    """A hashable identity for list elements and merge key values that keeps 1 and true apart."""
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, (int, float)):
        return ("number", value)
    if isinstance(value, (dict, list)):
        return ("json", repr(value))
    return (type(value).__name__, value)


class _FieldMeta:
    """What the schema says about one field: its schema, patch strategy and merge key."""

    __slots__ = ("item_schema", "merge_key", "schema", "strategy")

    def __init__(self, schema: Schema | None, strategy: str, merge_key: str) -> None:
        self.schema = schema
        self.item_schema = schemas.items_of(schema) if schema is not None else None
        self.strategy = strategy
        self.merge_key = merge_key


_UNKNOWN: Final = _FieldMeta(None, "", "")


def _field_meta(schema: Schema | None, key: str) -> _FieldMeta:
    """Read the unresolved property node: patch strategies sit beside a ``$ref``."""
    node = schemas.resolve(schema)
    if node is None:
        return _UNKNOWN
    props = node.get("properties")
    raw: Any = None
    if isinstance(props, dict) and key in props:
        raw = props[key]
    else:
        extra = node.get("additionalProperties")
        if isinstance(extra, dict):
            raw = extra
    if not isinstance(raw, dict):
        return _UNKNOWN
    strategies = raw.get("x-kubernetes-patch-strategy", "")
    strategy = ""
    if isinstance(strategies, str) and strategies:
        others = [s for s in strategies.split(",") if s != _RETAIN_KEYS_STRATEGY]
        strategy = others[0] if others else ""
    merge_key = raw.get("x-kubernetes-patch-merge-key", "")
    return _FieldMeta(
        schemas.resolve(raw), strategy, merge_key if isinstance(merge_key, str) else ""
    )


def _extract_key(key: str, prefix: str) -> str:
    head, sep, rest = key.partition("/")
    if not sep or head != prefix:
        raise errors.bad_request(
            _BAD_PRIMITIVE_LIST if prefix == _DELETE_FROM_PRIMITIVE_LIST else _BAD_SET_ELEMENT_ORDER
        )
    return rest


def _element_kind(*lists: list[Any]) -> str:
    """``sliceElementType``: "map" or "scalar"; mixed kinds and nested lists are errors."""
    kind: str | None = None
    for items in lists:
        for item in items:
            if isinstance(item, list):
                raise _invalid("lists of lists are not supported")
            if isinstance(item, dict):
                current = "map"
            elif isinstance(item, bool):
                current = "bool"
            elif isinstance(item, (int, float)):
                current = "number"
            elif item is None:
                current = "nil"
            else:
                current = "string"
            if kind is None:
                kind = current
            elif kind != current:
                raise errors.bad_request(
                    "list element types are not identical: " + " ".join(_go(list(x)) for x in lists)
                )
    if kind is None:
        raise errors.bad_request("no elements in any of the given slices")
    return "map" if kind == "map" else "scalar"


def _identity(merge_key: str, kind: str) -> Callable[[Any], Hashable]:
    """How ordering code recognises an element: by merge key value, or by itself."""
    if kind == "map" and merge_key:

        def by_key(item: Any) -> Hashable:
            return _scalar_key(item.get(merge_key)) if isinstance(item, dict) else ("none",)

        return by_key
    return _scalar_key


def _positions(order: list[Any], ident: Callable[[Any], Hashable]) -> dict[Hashable, int]:
    positions: dict[Hashable, int] = {}
    for i, item in enumerate(order):
        positions.setdefault(ident(item), i)
    return positions


def _validate_merge_key(merge_key: str, *lists: list[Any]) -> None:
    for items in lists:
        for item in items:
            if not isinstance(item, dict):
                raise _bad_arg_type("map[string]interface {}", item)
            if merge_key not in item:
                raise _no_merge_key(item, merge_key)


def _normalize_slice_order(
    items: list[Any], order: list[Any], merge_key: str, kind: str
) -> list[Any]:
    """Sort ``items`` by their position in ``order``; unknown items go first, stably."""
    if kind == "map" and merge_key:
        _validate_merge_key(merge_key, items, order)
    ident = _identity(merge_key, kind)
    positions = _positions(order, ident)
    return sorted(items, key=lambda item: positions.get(ident(item), -1))


def _merge_sorted(
    left: list[Any], right: list[Any], server_order: list[Any], merge_key: str, kind: str
) -> list[Any]:
    """Interleave server-only items (left) with patch items (right), as upstream does.

    A left item goes first only when both items are in the live list and the
    left one comes earlier there; so items new to the list land before the
    remaining server-only items (upstream puts an added container first).
    """
    ident = _identity(merge_key, kind)
    positions = _positions(server_order, ident)
    out: list[Any] = []
    i = j = 0
    while i < len(left) and j < len(right):
        li = positions.get(ident(left[i]), -1)
        ri = positions.get(ident(right[j]), -1)
        if li >= 0 and ri >= 0 and li < ri:
            out.append(left[i])
            i += 1
        else:
            out.append(right[j])
            j += 1
    out.extend(left[i:])
    out.extend(right[j:])
    return out


def _normalize_element_order(
    patch_items: list[Any],
    server_only: list[Any],
    patch_order: list[Any],
    server_order: list[Any],
    merge_key: str,
    kind: str,
) -> list[Any]:
    patch_items = _normalize_slice_order(patch_items, patch_order, merge_key, kind)
    server_only = _normalize_slice_order(server_only, server_order, merge_key, kind)
    return _merge_sorted(server_only, patch_items, server_order, merge_key, kind)


def _partition(
    merged: list[Any], present_in: list[Any], merge_key: str
) -> tuple[list[Any], list[Any]]:
    """Split ``merged`` into items named in ``present_in`` and server-only items."""
    ident: Callable[[Any], Hashable] = _scalar_key
    if merge_key:
        _validate_merge_key(merge_key, merged)
        wanted = {_scalar_key(p.get(merge_key)) for p in present_in if isinstance(p, dict)}

        def ident(item: Any) -> Hashable:
            return _scalar_key(item[merge_key])
    else:
        wanted = {_scalar_key(p) for p in present_in}
    in_patch: list[Any] = []
    server_only: list[Any] = []
    for item in merged:
        (in_patch if ident(item) in wanted else server_only).append(item)
    return in_patch, server_only


def _clean_list_items(items: list[Any], item_schema: Schema | None) -> list[Any]:
    """A list that replaces wholesale: drop directive elements, clean nested maps."""
    out: list[Any] = []
    for item in items:
        if isinstance(item, dict):
            if item.get(_DIRECTIVE) in (_DELETE, _REPLACE):
                continue
            out.append(_merge_map({}, item, item_schema))
        else:
            out.append(item)
    return out


def _fresh(value: Any, meta: _FieldMeta) -> Any:
    """A patch value with nothing to merge into, stripped of nulls and directives."""
    if isinstance(value, dict):
        return _merge_map({}, value, meta.schema)
    if isinstance(value, list):
        if meta.strategy == _MERGE and value:
            return _merge_slice([], value, meta, delete_list=False)
        return _clean_list_items(value, meta.item_schema)
    return value


def _delete_from_list(current: list[Any], to_delete: list[Any]) -> list[Any]:
    doomed = {_scalar_key(v) for v in to_delete}
    return [v for v in current if _scalar_key(v) not in doomed]


def _merge_slice(
    original: list[Any], patch: list[Any], meta: _FieldMeta, *, delete_list: bool
) -> list[Any]:
    """Merge a list with patch strategy "merge" (``mergeSlice``)."""
    if not original and not patch:
        return original
    kind = _element_kind(original, patch)
    merge_key = meta.merge_key
    if kind != "map":
        if delete_list:
            return _delete_from_list(original, patch)
        merged = list({_scalar_key(v): v for v in [*original, *patch]}.values())
        patch_items, server_only = _partition(merged, patch, "")
        return _normalize_element_order(patch_items, server_only, patch, original, "", kind)
    if not merge_key:
        raise errors.bad_request("cannot merge lists without merge key for type struct")

    # Special elements: `$patch: delete` removes by merge key, `$patch: replace` replaces.
    plain: list[dict[str, Any]] = []
    replace = False
    for item in patch:
        directive = item.get(_DIRECTIVE)
        if _DIRECTIVE not in item:
            plain.append(item)
        elif directive == _DELETE:
            if merge_key not in item:
                raise _no_merge_key(item, merge_key)
            doomed = _scalar_key(item[merge_key])
            original = [
                o for o in original if not (merge_key in o and _scalar_key(o[merge_key]) == doomed)
            ]
        elif directive == _REPLACE:
            replace = True
        elif directive == _MERGE:
            raise errors.bad_request("merging lists cannot yet be specified in the patch")
        else:
            raise errors.bad_request(f"unknown patch type: {_go(directive)} in map: {_go(item)}")
    if replace:
        original = [_merge_map({}, item, meta.item_schema) for item in plain]
        plain = []

    merged = list(original)
    for item in plain:
        if merge_key not in item:
            raise _no_merge_key(item, merge_key)
        wanted = _scalar_key(item[merge_key])
        for index, existing in enumerate(merged):
            if merge_key in existing and _scalar_key(existing[merge_key]) == wanted:
                merged[index] = _merge_map(existing, item, meta.item_schema)
                break
        else:
            merged.append(_merge_map({}, item, meta.item_schema))

    patch_items, server_only = _partition(merged, plain, merge_key)
    return _normalize_element_order(patch_items, server_only, plain, original, merge_key, kind)


def _merge_list_field(
    original: list[Any], patch: list[Any], meta: _FieldMeta, *, delete_list: bool
) -> list[Any]:
    """``mergeSliceHandler``: merge-strategy lists merge, all others are replaced."""
    if delete_list:
        # Upstream would replace a non-merge list with the deletion list; deleting is meant.
        if any(isinstance(v, (dict, list)) for v in patch):
            raise errors.bad_request(_BAD_PRIMITIVE_LIST)
        return _merge_slice(original, patch, meta, delete_list=True)
    if meta.strategy == _MERGE:
        return _merge_slice(original, patch, meta, delete_list=False)
    return _clean_list_items(patch, meta.item_schema)


def _apply_retain_keys(original: dict[str, Any], patch: dict[str, Any]) -> None:
    """``$retainKeys``: drop every original key not listed; the patch may set only listed keys."""
    if _RETAIN_KEYS not in patch:
        return
    keys = patch.pop(_RETAIN_KEYS)
    if not isinstance(keys, list) or any(isinstance(k, (dict, list)) for k in keys):
        raise errors.bad_request(_BAD_RETAIN_KEYS)
    retained = {k for k in keys if isinstance(k, str)}
    for key, value in patch.items():
        if value is None or key.startswith((_DELETE_FROM_PRIMITIVE_LIST, _SET_ELEMENT_ORDER)):
            continue
        if key not in retained:
            raise errors.bad_request(_BAD_RETAIN_KEYS)
    for key in [k for k in original if k not in retained]:
        del original[key]


def _validate_set_order(patch_list: list[Any], order: list[Any], merge_key: str) -> None:
    """The patch list must follow the relative order of ``$setElementOrder``."""
    if not order or not patch_list:
        return
    if merge_key:
        for item in patch_list:
            if not isinstance(item, dict):
                raise _bad_arg_type("map[string]interface {}", item)
        candidates = [p for p in patch_list if p.get(_DIRECTIVE) != _DELETE]
    else:
        candidates = list(patch_list)

    def key_of(item: Any) -> Hashable:
        if not merge_key:
            return _scalar_key(item)
        if not isinstance(item, dict):
            raise _bad_arg_type("map[string]interface {}", item)
        if merge_key not in item:
            raise _no_merge_key(item, merge_key)
        return _scalar_key(item[merge_key])

    p = s = 0
    while p < len(candidates) and s < len(order):
        if isinstance(candidates[p], dict) and _DIRECTIVE in candidates[p]:
            p += 1
            continue
        if key_of(candidates[p]) == key_of(order[s]):
            p += 1
        s += 1
    if p < len(candidates) and s >= len(order):
        raise errors.bad_request(
            f"The order in patch list:\n{_go(patch_list)}\n doesn't match "
            f"{_SET_ELEMENT_ORDER} list:\n{_go(order)}\n"
        )


def _apply_set_element_order(
    original: dict[str, Any], patch: dict[str, Any], schema: Schema | None
) -> None:
    """``$setElementOrder/<list>``: merge that list now and impose the given order."""
    for key in [k for k in patch if k.startswith(_SET_ELEMENT_ORDER)]:
        order = patch.pop(key)
        if not isinstance(order, list):
            raise _bad_arg_type("[]interface {}", order)
        list_key = _extract_key(key, _SET_ELEMENT_ORDER)
        found_original = list_key in original
        found_patch = list_key in patch
        original_list: list[Any] = []
        patch_list: list[Any] = []
        if found_original:
            if not isinstance(original[list_key], list):
                raise _bad_arg_type("[]interface {}", original[list_key])
            original_list = original[list_key]
        if found_patch:
            if not isinstance(patch[list_key], list):
                raise _bad_arg_type("[]interface {}", patch[list_key])
            patch_list = patch[list_key]
        meta = _field_meta(schema, list_key)
        _validate_set_order(patch_list, order, meta.merge_key)
        if found_original and found_patch:
            merged = _merge_list_field(original_list, patch_list, meta, delete_list=False)
        elif found_original:
            merged = original_list
        elif found_patch:
            merged = _fresh(patch_list, meta)
        else:
            continue
        if not original_list and not patch_list:
            original[list_key] = merged
            patch.pop(list_key, None)
            continue
        kind = _element_kind(original_list, patch_list)
        merge_key = meta.merge_key if kind == "map" else ""
        patch_items, server_only = _partition(merged, order, merge_key)
        original[list_key] = _normalize_element_order(
            patch_items, server_only, order, original_list, merge_key, kind
        )
        patch.pop(list_key, None)


def _merge_map(
    original: dict[str, Any], patch: dict[str, Any], schema: Schema | None
) -> dict[str, Any]:
    """``mergeMap``; mutates its private copies ``original`` and ``patch``."""
    if _DIRECTIVE in patch:
        directive = patch[_DIRECTIVE]
        if directive not in (_DELETE, _REPLACE, _MERGE):
            raise errors.bad_request(f"unknown patch type: {_go(directive)} in map: {_go(patch)}")
        del patch[_DIRECTIVE]
        if directive == _DELETE:
            return {}
        if directive == _REPLACE:
            return _merge_map({}, patch, schema)
    _apply_retain_keys(original, patch)
    _apply_set_element_order(original, patch, schema)

    deletions: list[tuple[str, Any]] = []
    for key, value in patch.items():
        if key.startswith(_DELETE_FROM_PRIMITIVE_LIST):
            deletions.append((_extract_key(key, _DELETE_FROM_PRIMITIVE_LIST), value))
            continue
        if value is None:
            original.pop(key, None)
            continue
        meta = _field_meta(schema, key)
        current = original.get(key)
        if isinstance(current, dict) and isinstance(value, dict):
            if meta.strategy == _REPLACE:
                original[key] = _fresh(value, meta)
            else:
                original[key] = _merge_map(current, value, meta.schema)
        elif isinstance(current, list) and isinstance(value, list):
            original[key] = _merge_list_field(current, value, meta, delete_list=False)
        else:
            original[key] = _fresh(value, meta)
    for key, value in deletions:
        if not isinstance(value, list):
            raise _bad_arg_type("[]interface {}", value)
        current = original.get(key)
        if current is None:
            continue  # Upstream would store the deletion list itself here.
        if not isinstance(current, list):
            raise _bad_arg_type("[]interface {}", current)
        original[key] = _merge_list_field(
            current, value, _field_meta(schema, key), delete_list=True
        )
    return original


def strategic_merge_patch(
    obj: Mapping[str, Any], patch: Any, schema: Schema | None
) -> dict[str, Any]:
    """Apply a strategic merge patch using the kind's schema (``schemas.schema_for``).

    Without a schema, maps merge as in a merge patch and lists are replaced,
    while the ``$patch``, ``$retainKeys``, ``$setElementOrder`` and
    ``$deleteFromPrimitiveList`` directives are still honoured.
    """
    if not isinstance(patch, Mapping):
        raise errors.bad_request("invalid JSON document")
    return _merge_map(values.clone(dict(obj)), values.clone(dict(patch)), schema)
