"""Server-side apply and ``metadata.managedFields`` bookkeeping.

A port of what upstream does in ``sigs.k8s.io/structured-merge-diff`` (field
sets, typed merge/compare/remove, the ``merge.Updater``) and in
``k8s.io/apimachinery/pkg/util/managedfields`` (the manager chain: strip
metadata, timestamps, manager identities, the cap on update managers, the
client-side-apply upgrade path, ``before-first-apply``). Clients such as
kubectl, controller-runtime and the Python client read ``managedFields`` and
the 409 conflict causes back, so both follow upstream to the byte where that is
observable: the ``fieldsV1`` encoding and key order, entry order, conflict
messages and cause fields.

Structure comes from the upstream schemas (``schemas``): ``x-kubernetes-list-type``
and ``-list-map-keys`` (or a ``merge`` patch strategy with a merge key, as
upstream's schema converter does) make lists associative, everything else is
atomic; ``x-kubernetes-map-type: atomic`` makes a map a leaf. Without a schema
maps are granular and lists atomic (upstream's "deduced" type), but
``metadata`` is always ``ObjectMeta``.

Everything here is pure: inputs are never mutated and results share no mutable
structure with them.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Final

import orjson

from nodeless.api import errors, memos, schemas, values

__all__ = [
    "LAST_APPLIED_ANNOTATION",
    "FieldSet",
    "Path",
    "PathElement",
    "apply",
    "decode_fields_v1",
    "encode_fields_v1",
    "fieldset_of",
    "format_path",
    "record_update",
]

# A path element is ("f", field name), ("k", ((key, frozen value), ...)) for an
# item of a map-list, ("v", frozen value) for an item of a set, or ("i", index).
PathElement = tuple[str, Any]
Path = tuple[PathElement, ...]

LAST_APPLIED_ANNOTATION: Final = "kubectl.kubernetes.io/last-applied-configuration"
MAX_UPDATE_MANAGERS: Final = 10  # upstream DefaultMaxUpdateManagers
ANCIENT_CHANGES_MANAGER: Final = "ancient-changes"
BEFORE_FIRST_APPLY_MANAGER: Final = "before-first-apply"
_CURRENT_OPERATION: Final = "current-operation"
_TOTAL_ANNOTATION_SIZE_LIMIT: Final = 256 * 1024
_OBJECT_META: Final = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"

# Default values of map-list keys. Upstream's OpenAPI carries them as
# ``default`` (a port without protocol is keyed ``"protocol":"TCP"``); the
# schemas shipped by kubernetes-validate lost them, so the known ones are here.
_KEY_DEFAULTS: Final[Mapping[str, Mapping[str, Any]]] = {
    "io.k8s.api.core.v1.ContainerPort": {"protocol": "TCP"},
    "io.k8s.api.core.v1.ServicePort": {"protocol": "TCP"},
    "io.k8s.api.core.v1.LocalObjectReference": {"name": ""},
}


class _Missing:
    """Absent, as opposed to an explicit JSON null (upstream: Go nil vs null value)."""

    def __repr__(self) -> str:
        return "<missing>"


_MISSING: Final = _Missing()


class _ShapeError(Exception):
    """An object that cannot be walked with its schema (missing list keys, ...)."""


# --------------------------------------------------------------------------
# Values: freezing for path elements, equality and ordering as upstream.


def _freeze(value: Any) -> Any:
    """A hashable form of a JSON value in which ``true`` never equals ``1``."""
    if value is None:
        return ("z",)
    if isinstance(value, bool):
        return ("b", value)
    if isinstance(value, int | float):
        return ("#", value)
    if isinstance(value, str):
        return ("s", value)
    if isinstance(value, list):
        return ("l", tuple(_freeze(v) for v in value))
    if isinstance(value, dict):
        return ("m", tuple(sorted((str(k), _freeze(v)) for k, v in value.items())))
    return ("s", str(value))


def _thaw(frozen: Any) -> Any:
    tag = frozen[0]
    if tag == "z":
        return None
    if tag in ("b", "#", "s"):
        return frozen[1]
    if tag == "l":
        return [_thaw(v) for v in frozen[1]]
    return {k: _thaw(v) for k, v in frozen[1]}


_RANK: Final = {"#": 0, "s": 1, "b": 2, "l": 3, "m": 4, "z": 5}


def _value_key(frozen: Any) -> tuple[Any, ...]:
    """Sort key matching upstream ``value.Compare``: numbers < strings < bools < lists < maps < null."""
    tag = frozen[0]
    if tag in ("#", "s", "b"):
        return (_RANK[tag], frozen[1])
    if tag == "l":
        return (3, tuple(_value_key(v) for v in frozen[1]))
    if tag == "m":
        return (4, tuple((k, _value_key(v)) for k, v in frozen[1]))
    return (5,)


# Path elements recur across every object of a kind: their sort key and text
# are worked out once (each write encodes the sets it changed).
@functools.lru_cache(maxsize=50_000)
def _pe_key(pe: PathElement) -> tuple[Any, ...]:
    """Sort key matching upstream ``PathElement.Compare`` (fields < keys < values < indexes)."""
    kind, payload = pe
    if kind == "f":
        return (0, payload)
    if kind == "k":
        return (1, tuple((name, _value_key(v)) for name, v in payload))
    if kind == "v":
        return (2, _value_key(payload))
    return (3, payload)


# --------------------------------------------------------------------------
# Go-compatible text: fieldsV1 keys and the last-applied annotation are JSON
# written by Go's encoder; conflict paths use Go's %v and %q.

_PLAIN_JSON_STRING: Final = re.compile(r"[ !#-%'-;=?-\[\]-~]*")
_GO_JSON_ESCAPES: Final = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
_GO_QUOTE_ESCAPES: Final = {
    '"': '\\"',
    "\\": "\\\\",
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
}


def _go_json_string(text: str) -> str:
    if _PLAIN_JSON_STRING.fullmatch(text):
        return '"' + text + '"'
    out = ['"']
    for ch in text:
        escaped = _GO_JSON_ESCAPES.get(ch)
        if escaped is not None:
            out.append(escaped)
        elif ord(ch) < 0x20 or ch in "<>&\u2028\u2029":
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _decimal_parts(number: float) -> tuple[str, int]:
    """Shortest round-trip digits and decimal exponent of a finite float."""
    _, digits, exponent = Decimal(repr(number)).normalize().as_tuple()
    text = "".join(str(d) for d in digits)
    assert isinstance(exponent, int)
    return text, exponent + len(text) - 1


def _format_float(number: float, exp_form: bool) -> str:
    sign = "-" if number < 0 else ""
    digits, exponent = _decimal_parts(abs(number))
    if exp_form:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{sign}{mantissa}e{'-' if exponent < 0 else '+'}{abs(exponent):02d}"
    if exponent < 0:
        return f"{sign}0.{'0' * (-exponent - 1)}{digits}"
    if len(digits) <= exponent + 1:
        return sign + digits + "0" * (exponent + 1 - len(digits))
    return f"{sign}{digits[: exponent + 1]}.{digits[exponent + 1 :]}"


def _go_json_float(number: float) -> str:
    if number != number or number in (float("inf"), float("-inf")):
        return "null"
    if number == 0:
        return "0"
    magnitude = abs(number)
    if 1e-6 <= magnitude < 1e21:
        return _format_float(number, exp_form=False)
    text = _format_float(number, exp_form=True)
    # encoding/json trims "e-07" to "e-7".
    mantissa, _, exponent = text.partition("e")
    return f"{mantissa}e{exponent[0]}{int(exponent[1:])}"


def _go_json(value: Any) -> str:
    """Compact JSON exactly as Go's ``encoding/json`` writes it (sorted keys, HTML escaped)."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _go_json_float(value)
    if isinstance(value, str):
        return _go_json_string(value)
    if isinstance(value, list):
        return "[" + ",".join(_go_json(v) for v in value) + "]"
    if isinstance(value, dict):
        items = sorted(value.items())
        return "{" + ",".join(f"{_go_json_string(k)}:{_go_json(v)}" for k, v in items) + "}"
    return _go_json_string(str(value))


def _go_quote(text: str) -> str:
    """Go's ``%q`` (strconv.Quote)."""
    out = ['"']
    for ch in text:
        escaped = _GO_QUOTE_ESCAPES.get(ch)
        if escaped is not None:
            out.append(escaped)
        elif ch.isprintable():
            out.append(ch)
        elif ord(ch) < 0x80:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) < 0x10000:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    out.append('"')
    return "".join(out)


def _go_value_string(frozen: Any) -> str:
    """Upstream ``value.ToString``, used in human-readable paths."""
    tag = frozen[0]
    if tag == "z":
        return "null"
    if tag == "b":
        return "true" if frozen[1] else "false"
    if tag == "#":
        number = frozen[1]
        if isinstance(number, float):
            if number != number or number in (float("inf"), float("-inf")):
                return str(number)
            _, exponent = _decimal_parts(abs(number)) if number else ("0", 0)
            return _format_float(number, exp_form=exponent < -4 or exponent >= 21)
        return str(number)
    if tag == "s":
        return _go_quote(frozen[1])
    if tag == "l":
        return "[" + ",".join(_go_value_string(v) for v in frozen[1]) + "]"
    return "{" + ";".join(f"{k}={_go_value_string(v)}" for k, v in frozen[1]) + "}"


def _pe_string(pe: PathElement) -> str:
    kind, payload = pe
    if kind == "f":
        return "." + str(payload)
    if kind == "k":
        return "[" + ",".join(f"{name}={_go_value_string(v)}" for name, v in payload) + "]"
    if kind == "v":
        return f"[={_go_value_string(payload)}]"
    return f"[{payload}]"


def format_path(path: Path) -> str:
    """A path as upstream prints it in conflicts: ``.spec.containers[name="nginx"].image``."""
    return "".join(_pe_string(pe) for pe in path)


@functools.lru_cache(maxsize=50_000)
def _pe_serialize(pe: PathElement) -> str:
    kind, payload = pe
    if kind == "f":
        return "f:" + str(payload)
    if kind == "k":
        inner = ",".join(f"{_go_json_string(n)}:{_go_json(_thaw(v))}" for n, v in payload)
        return "k:{" + inner + "}"
    if kind == "v":
        return "v:" + _go_json(_thaw(payload))
    return f"i:{payload}"


def _pe_deserialize(text: str) -> PathElement | None:
    """Parse a fieldsV1 key; None for element types a future version may add."""
    if len(text) < 2 or text[1] != ":":
        raise ValueError(f"invalid path element {text!r}")
    kind, rest = text[0], text[2:]
    if kind == "f":
        return ("f", rest)
    if kind == "v":
        return ("v", _freeze(json.loads(rest)))
    if kind == "k":
        keys = json.loads(rest)
        if not isinstance(keys, dict):
            raise ValueError(f"invalid key path element {text!r}")
        return ("k", tuple(sorted((k, _freeze(v)) for k, v in keys.items())))
    if kind == "i":
        return ("i", int(rest))
    return None


# --------------------------------------------------------------------------
# Field sets.


class _Node:
    """A field set as a trie, upstream's shape: members at this level, and
    children that group deeper members. ``fieldsV1`` serialises exactly this
    shape, with "." marking a node that is both a member and a parent."""

    __slots__ = ("children", "members")

    def __init__(self) -> None:
        self.members: set[PathElement] = set()
        self.children: dict[PathElement, _Node] = {}

    def child(self, pe: PathElement) -> _Node:
        found = self.children.get(pe)
        if found is None:
            found = self.children[pe] = _Node()
        return found


class FieldSet:
    """A set of field paths (each a tuple of path elements), as upstream's.

    Held flat, as a frozenset of whole paths: every write combines the
    field sets of all an object's managers (union, intersection,
    difference), and on a frozenset those run in C. The trie upstream
    serialises (``_Node``) is built only when it is needed: to encode, to
    iterate in upstream's order, to prune an applied object.

    A set is never changed once made; the operations return an operand
    itself when nothing changes.
    """

    __slots__ = ("_paths", "_trie")

    def __init__(self, paths: Iterable[Path] = ()) -> None:
        # The empty path (the whole object) is never a member, as upstream.
        self._paths: frozenset[Path] = frozenset(p for p in paths if p)
        self._trie: _Node | None = None

    @classmethod
    def _of(cls, paths: frozenset[Path]) -> FieldSet:
        fs = cls.__new__(cls)
        fs._paths = paths
        fs._trie = None
        return fs

    def trie(self) -> _Node:
        """The set as a trie (built once; read-only)."""
        if self._trie is None:
            root = _Node()
            for path in self._paths:
                node = root
                for pe in path[:-1]:
                    node = node.child(pe)
                node.members.add(path[-1])
            self._trie = root
        return self._trie

    def has(self, path: Path) -> bool:
        return path in self._paths

    def is_empty(self) -> bool:
        return not self._paths

    def __bool__(self) -> bool:
        return bool(self._paths)

    def union(self, other: FieldSet) -> FieldSet:
        if other._paths <= self._paths:
            return self
        if self._paths <= other._paths:
            return other
        return FieldSet._of(self._paths | other._paths)

    def intersection(self, other: FieldSet) -> FieldSet:
        if not self._paths:
            return self
        if not other._paths:
            return other
        common = self._paths & other._paths
        return self if len(common) == len(self._paths) else FieldSet._of(common)

    def difference(self, other: FieldSet) -> FieldSet:
        """Members not in ``other``; a removed member's own members stay (upstream ``Difference``)."""
        if not other._paths or not self._paths:
            return self
        rest = self._paths - other._paths
        return self if len(rest) == len(self._paths) else FieldSet._of(rest)

    def filtered(self, keep: Callable[[Path], bool]) -> FieldSet:
        """The paths for which ``keep`` holds, and holds for each path above them."""
        if isinstance(keep, _TopLevel):
            return keep.apply(self)
        rest = frozenset(
            path for path in self._paths if all(keep(path[:i]) for i in range(1, len(path) + 1))
        )
        return self if len(rest) == len(self._paths) else FieldSet._of(rest)

    def paths(self) -> Iterator[Path]:
        """Every member, in upstream's iteration order (members, then children, each sorted)."""
        yield from _iterate(self.trie(), ())

    def __len__(self) -> int:
        return len(self._paths)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FieldSet):
            return NotImplemented
        return self._paths == other._paths

    def __hash__(self) -> int:
        return hash(self._paths)

    def __repr__(self) -> str:
        return "FieldSet([" + ", ".join(repr(format_path(p)) for p in self.paths()) + "])"


def _iterate(node: _Node, prefix: Path) -> Iterator[Path]:
    for pe in sorted(node.members, key=_pe_key):
        yield (*prefix, pe)
    for pe in sorted(node.children, key=_pe_key):
        yield from _iterate(node.children[pe], (*prefix, pe))


# Encoded field sets by content: the objects of one workload have the same
# few, and every write encodes those of all its managers.
_ENCODED: memos.BoundedMemo[frozenset[Path], dict[str, Any]] = memos.BoundedMemo(8192)


def encode_fields_v1(fs: FieldSet) -> dict[str, Any]:
    """Upstream's FieldsV1 form of a field set, with upstream's key order.

    Shared between equal sets: treat the result as read-only."""
    found = _ENCODED.get(fs._paths)
    if found is None:
        found = _ENCODED.put(fs._paths, _encode_node(fs.trie(), include_self=False))
    return found


def _encode_node(node: _Node, include_self: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if include_self and (node.members or node.children):
        out["."] = {}
    children = node.children
    members = node.members
    for pe in sorted(members | children.keys() if children else members, key=_pe_key):
        child = children.get(pe)
        if child is None:
            out[_pe_serialize(pe)] = {}
        else:
            out[_pe_serialize(pe)] = _encode_node(child, include_self=pe in members)
    return out


_DECODED: memos.BoundedMemo[bytes, FieldSet] = memos.BoundedMemo(8192)


def decode_fields_v1(data: Mapping[str, Any]) -> FieldSet:
    """Parse FieldsV1; unknown element kinds are dropped, malformed ones raise ValueError.

    Remembered by content: the objects of one workload carry the same few
    field sets, and every write to one of them decodes all its entries."""
    if not isinstance(data, Mapping):
        raise ValueError("fieldsV1 must be an object")
    try:
        key = orjson.dumps(data)
    except TypeError:
        key = b""
    found = _DECODED.get(key) if key else None
    if found is not None:
        return found
    paths: list[Path] = []
    _decode_node(data, (), paths)
    found = FieldSet(paths)
    if key:
        _DECODED.put(key, found)
    return found


def _decode_node(data: Mapping[str, Any], prefix: Path, out: list[Path]) -> bool:
    """Add the members below ``prefix``; whether ``prefix`` is a member itself
    (marked ".", or a leaf)."""
    is_member = False
    has_children = False
    for key, sub in data.items():
        if key == ".":
            is_member = True
            continue
        pe = _pe_deserialize(key)
        if pe is None:
            continue
        if not isinstance(sub, Mapping):
            raise ValueError(f"fieldsV1 entry {key!r} must be an object")
        has_children = True
        path = (*prefix, pe)
        if _decode_node(sub, path, out):
            out.append(path)
    return is_member or not has_children


# --------------------------------------------------------------------------
# Types: what upstream's schema converter makes of an OpenAPI schema node.

_SCALARS: Final = frozenset({"string", "integer", "number", "boolean"})


@dataclass(frozen=True, eq=False)
class _Type:
    kind: str  # "scalar" | "list" | "map" | "untyped"
    atomic: bool = False
    fields: Mapping[str, Any] = field(default_factory=dict)
    elem: Any = None  # schema of items/additionalProperties; None means untyped
    keys: tuple[str, ...] = ()
    key_defaults: Mapping[str, Any] = field(default_factory=dict)
    optional_keys: frozenset[str] = frozenset()
    is_set: bool = False
    required: frozenset[str] = frozenset()


_SCALAR: Final = _Type("scalar")
_UNTYPED: Final = _Type("untyped")
_UNTYPED_MAP: Final = _Type("map")
_ATOMIC_LIST: Final = _Type("list", atomic=True)


def _effective(t: _Type, value: Any) -> _Type:
    """The type a value is walked with: untyped picks by value, mismatches are leaves."""
    if t.kind == "untyped":
        if value is None or isinstance(value, dict):
            return _UNTYPED_MAP
        return _ATOMIC_LIST if isinstance(value, list) else _SCALAR
    if t.kind == "map":
        return t if value is None or isinstance(value, dict) else _SCALAR
    if t.kind == "list":
        return t if value is None or isinstance(value, list) else _SCALAR
    return _SCALAR


_MAX_FIELD_TYPES = 100_000
_TYPERS: memos.IdentityMemo[Mapping[str, Any] | None, _Typer] = memos.IdentityMemo(512)


def _typer_for(schema: Mapping[str, Any] | None) -> _Typer:
    """One typer per schema for the life of the process, so its cache of
    converted nodes is built once (schemas are never changed in place; a CRD
    update brings a new schema object)."""
    return _TYPERS.get(schema) or _TYPERS.put(schema, _Typer(schema))


class _Typer:
    """Schema nodes to types, cached (nodes are unhashable dicts, so by identity)."""

    def __init__(self, schema: Mapping[str, Any] | None) -> None:
        self._cache: dict[int, tuple[Any, _Type]] = {}
        self._fields: dict[tuple[_Type, str], _Type] = {}
        object_meta = schemas.definitions().get(_OBJECT_META)
        if schema is None:
            fields = {"apiVersion": {"type": "string"}, "kind": {"type": "string"}}
            base = _Type("map", fields=fields)
        else:
            base = self.type_of(schema)
            if base.kind != "map":
                base = _Type("map")
        # metadata is ObjectMeta whatever the schema says (CRD schemas omit it).
        self.root = _Type(
            "map",
            atomic=False,
            fields={**base.fields, "metadata": object_meta},
            elem=base.elem,
        )

    def type_of(self, node: Any) -> _Type:
        if node is None:
            return _UNTYPED
        cached = self._cache.get(id(node))
        if cached is not None and cached[0] is node:
            return cached[1]
        result = self._convert(node)
        self._cache[id(node)] = (node, result)
        return result

    def field(self, t: _Type, name: str) -> _Type:
        # Types hash by identity, and there are few (t, name) pairs but many lookups.
        found = self._fields.get((t, name))
        if found is None:
            if len(self._fields) >= _MAX_FIELD_TYPES:
                self._fields.clear()
            found = self.type_of(t.fields[name] if name in t.fields else t.elem)
            self._fields[(t, name)] = found
        return found

    def item(self, t: _Type) -> _Type:
        return self.type_of(t.elem)

    def child(self, t: _Type, pe: PathElement) -> _Type:
        if t.kind == "untyped":
            return _UNTYPED
        if pe[0] == "f":
            return self.field(t, pe[1]) if t.kind == "map" else _UNTYPED
        return self.item(t) if t.kind == "list" else _UNTYPED

    def _convert(self, raw: Any) -> _Type:
        node = schemas.resolve(raw) if isinstance(raw, dict) else None
        if node is None:
            return _UNTYPED
        if node.get("x-kubernetes-int-or-string"):
            return _SCALAR
        types = schemas.types_of(node)
        props = node.get("properties")
        extra = node.get("additionalProperties")
        if types == {"object"} or (not types and (props or isinstance(extra, dict))):
            atomic = node.get("x-kubernetes-map-type") == "atomic"
            if not props and not isinstance(extra, dict) and not atomic:
                return _UNTYPED  # free-form object (RawExtension, preserve-unknown-fields)
            required = node.get("required")
            return _Type(
                "map",
                atomic=atomic,
                fields=props if isinstance(props, dict) else {},
                elem=extra if isinstance(extra, dict) else None,
                required=frozenset(required if isinstance(required, list) else ()),
            )
        if types == {"array"} or (not types and "items" in node):
            return self._list(node)
        if types and types <= _SCALARS:
            return _SCALAR
        alternatives = node.get("oneOf") or node.get("anyOf")
        if not types and isinstance(alternatives, list) and alternatives:
            kinds = [schemas.types_of(schemas.resolve(a)) for a in alternatives]
            if all(k and k <= _SCALARS for k in kinds):
                return _SCALAR
        return _UNTYPED

    def _list(self, node: Mapping[str, Any]) -> _Type:
        items = node.get("items")
        list_type = node.get("x-kubernetes-list-type")
        keys: list[str] = []
        if list_type == "set":
            return _Type("list", elem=items, is_set=True)
        if list_type == "map":
            keys = [k for k in node.get("x-kubernetes-list-map-keys") or [] if isinstance(k, str)]
        elif list_type is None:
            strategy = str(node.get("x-kubernetes-patch-strategy") or "").split(",")
            if "merge" in strategy:
                merge_key = node.get("x-kubernetes-patch-merge-key")
                if not isinstance(merge_key, str) or not merge_key:
                    return _Type("list", elem=items, is_set=True)
                keys = [merge_key]
        if not keys:
            return _Type("list", atomic=True, elem=items)
        item = schemas.resolve(items) if isinstance(items, dict) else None
        props = (item or {}).get("properties") or {}
        required = set((item or {}).get("required") or [])
        ref = schemas.ref_name(items) if isinstance(items, dict) else None
        fallback = _KEY_DEFAULTS.get(ref or "", {})
        defaults: dict[str, Any] = {}
        for key in keys:
            prop = schemas.resolve(props.get(key)) if isinstance(props.get(key), dict) else None
            if prop is not None and "default" in prop:
                defaults[key] = prop["default"]
            elif key in fallback:
                defaults[key] = fallback[key]
        optional = frozenset(k for k in keys if k not in required and k not in defaults)
        return _Type(
            "list",
            elem=items,
            keys=tuple(keys),
            key_defaults=defaults,
            optional_keys=optional if item is not None and required else frozenset(),
        )


# --------------------------------------------------------------------------
# Typed walks: field sets, merge, compare, removal.


@dataclass
class _Comparison:
    added: FieldSet = field(default_factory=FieldSet)
    modified: FieldSet = field(default_factory=FieldSet)
    removed: FieldSet = field(default_factory=FieldSet)

    @classmethod
    def of(cls, found: _Found) -> _Comparison:
        return cls(
            FieldSet._of(frozenset(found.added)),
            FieldSet._of(frozenset(found.modified)),
            FieldSet._of(frozenset(found.removed)),
        )

    def filtered(self, keep: Callable[[Path], bool] | None) -> _Comparison:
        if keep is None:
            return self
        return _Comparison(
            self.added.filtered(keep), self.modified.filtered(keep), self.removed.filtered(keep)
        )


def _unchanged(lhs: Any, rhs: Any) -> bool:
    """A surely unchanged value, decided before a call and a path per field
    (most of an object is unchanged by most writes): scalars of one type
    compare exactly with ``==``; containers as ``values.identical`` does."""
    if lhs is rhs:
        return True
    kind = type(lhs)
    if kind is not type(rhs):
        return False
    if kind is dict or kind is list:
        return values.identical(lhs, rhs)
    return bool(lhs == rhs)


class _Found:
    """The paths a comparison finds, while it walks."""

    __slots__ = ("added", "modified", "removed")

    def __init__(self) -> None:
        self.added: set[Path] = set()
        self.modified: set[Path] = set()
        self.removed: set[Path] = set()


class _Walker:
    """The typed operations of structured-merge-diff over plain dicts."""

    def __init__(self, typer: _Typer) -> None:
        self.typer = typer

    # -- list items ------------------------------------------------------

    def item_pe(self, t: _Type, item: Any, path: Path, index: int) -> PathElement:
        if t.keys:
            if not isinstance(item, dict):
                what = "a null element" if item is None else "non-map elements"
                raise _ShapeError(
                    f"{format_path(path)}: element {index}: "
                    f"associative list with keys may not have {what}"
                )
            key: list[tuple[str, Any]] = []
            for name in t.keys:
                if name in item:
                    key.append((name, _freeze(item[name])))
                elif name in t.key_defaults:
                    key.append((name, _freeze(t.key_defaults[name])))
                elif name not in t.optional_keys:
                    raise _ShapeError(
                        f"{format_path(path)}: element {index}: associative list with keys has "
                        f'an element that omits key field "{name}" (and doesn\'t have default value)'
                    )
            return ("k", tuple(sorted(key)))
        if t.is_set:
            if isinstance(item, dict):
                problem = "associative list without keys has an element that's a map type"
            elif isinstance(item, list):
                problem = "not supported: associative list with lists as elements"
            elif item is None:
                problem = "associative list without keys has an element that's an explicit null"
            else:
                return ("v", _freeze(item))
            raise _ShapeError(f"{format_path(path)}: element {index}: {problem}")
        return ("i", index)

    def index_items(
        self, t: _Type, items: list[Any], path: Path, strict: bool
    ) -> tuple[list[PathElement], dict[PathElement, Any], set[PathElement]]:
        """Path elements in order, the first item of each, and those seen more than once."""
        pes: list[PathElement] = []
        first: dict[PathElement, Any] = {}
        duplicated: set[PathElement] = set()
        for index, item in enumerate(items):
            pe = self.item_pe(t, item, path, index)
            if pe in first:
                if strict:
                    raise _ShapeError(
                        f"{format_path(path)}: duplicate entries for key {_pe_string(pe)}"
                    )
                duplicated.add(pe)
            else:
                first[pe] = item
            pes.append(pe)
        return pes, first, duplicated

    # -- field sets ------------------------------------------------------

    def fieldset(self, value: Any, t: _Type, strict: bool = False) -> FieldSet:
        out: set[Path] = set()
        self._collect_children(value, _effective(t, value), (), out, strict)
        return FieldSet._of(frozenset(out))

    def _collect(
        self, value: Any, t: _Type, path: Path, out: set[Path], strict: bool, member: bool
    ) -> None:
        """Add ``path`` (if a member) and what is below it."""
        et = _effective(t, value)
        if et.kind == "scalar" or et.atomic:
            out.add(path)
            return
        if member:
            out.add(path)
        self._collect_children(value, et, path, out, strict)

    def _collect_children(
        self, value: Any, et: _Type, path: Path, node: set[Path], strict: bool
    ) -> None:
        if not value or et.kind == "scalar" or et.atomic:
            return
        if et.kind == "list":
            if strict:
                self.index_items(et, value, path, strict=True)
            item_t = self.typer.item(et)
            for index, item in enumerate(value):
                item_path = (*path, self.item_pe(et, item, path, index))
                self._collect(item, item_t, item_path, node, strict, member=True)
            return
        for key, child in value.items():
            declared = key in et.fields
            child_t = self.typer.field(et, key)
            self._collect(child, child_t, (*path, ("f", key)), node, strict, member=not declared)

    def ensure_named_fields(self, fs: FieldSet, t: _Type) -> FieldSet:
        """Upstream ``EnsureNamedFieldsAreMembers``: struct fields with owned children count as owned."""
        out = set(fs._paths)
        self._name_fields(fs.trie(), t, (), out)
        return FieldSet._of(frozenset(out))

    def _name_fields(self, node: _Node, t: _Type, prefix: Path, out: set[Path]) -> None:
        for pe, child in node.children.items():
            path = (*prefix, pe)
            if pe[0] == "f" and t.kind == "map" and pe[1] in t.fields:
                out.add(path)
            self._name_fields(child, self.typer.child(t, pe), path, out)

    # -- merge -----------------------------------------------------------

    def merge(self, lhs: Any, rhs: Any, t: _Type, path: Path) -> Any:
        """Merge ``rhs`` (the applied configuration) into ``lhs`` (the live object)."""
        if rhs is _MISSING:
            return lhs
        if lhs is _MISSING:
            return rhs
        et = _effective(t, rhs)
        if _effective(t, lhs).kind != et.kind or et.kind == "scalar" or et.atomic:
            return rhs
        if et.kind == "list":
            left, right = lhs or [], rhs or []
            if not left and not right:
                return rhs
            return self._merge_list(left, right, et, path)
        left_map, right_map = lhs or {}, rhs or {}
        if not left_map and not right_map:
            return rhs
        out: dict[str, Any] = {}
        for key, value in left_map.items():
            child_t = self.typer.field(et, key)
            out[key] = self.merge(value, right_map.get(key, _MISSING), child_t, (*path, ("f", key)))
        for key, value in right_map.items():
            if key not in left_map:
                out[key] = value
        return out

    def _merge_list(self, lhs: list[Any], rhs: list[Any], t: _Type, path: Path) -> list[Any]:
        """Upstream's associative list merge, including its ordering of shared items."""
        item_t = self.typer.item(t)
        rhs_pes, rhs_items, _ = self.index_items(t, rhs, path, strict=True)
        lhs_pes, lhs_items, lhs_dups = self.index_items(t, lhs, path, strict=False)
        shared = iter([pe for pe in rhs_pes if pe in lhs_items])
        next_shared = next(shared, None)
        merged_rhs: set[PathElement] = set()
        out: list[Any] = []

        def merged(pe: PathElement) -> Any:
            left = _MISSING if pe in lhs_dups else lhs_items.get(pe, _MISSING)
            return self.merge(left, rhs_items[pe], item_t, (*path, pe))

        li = ri = 0
        while li < len(lhs_pes) or ri < len(rhs_pes):
            if li < len(lhs_pes) and ri < len(rhs_pes):
                pe = lhs_pes[li]
                if pe == rhs_pes[ri]:
                    merged_rhs.add(pe)
                    out.append(merged(pe))
                    li += 1
                    ri += 1
                    next_shared = next(shared, None)
                    continue
                if pe in rhs_items and next_shared is not None and next_shared != pe:
                    li += 1
                    continue
            if li < len(lhs_pes):
                pe = lhs_pes[li]
                if pe not in rhs_items:
                    out.append(lhs[li])
                    li += 1
                    continue
                if pe in merged_rhs:
                    li += 1
                    continue
            if ri < len(rhs_pes):
                pe = rhs_pes[ri]
                merged_rhs.add(pe)
                out.append(merged(pe))
                ri += 1
                if next_shared is not None and next_shared == pe:
                    next_shared = next(shared, None)
        return out

    # -- compare ---------------------------------------------------------

    def compare(self, lhs: Any, rhs: Any, t: _Type) -> _Comparison:
        out = _Found()
        self._compare(lhs, rhs, t, (), out)
        return _Comparison.of(out)

    def compare_top_level(self, lhs: Any, rhs: Any, keep: _TopLevel) -> _Comparison:
        """``compare(...).filtered(keep)`` without walking what ``keep`` drops
        (a status write compares only status)."""
        out = _Found()
        left = lhs if isinstance(lhs, dict) else {}
        right = rhs if isinstance(rhs, dict) else {}
        root = self.typer.root
        for key in left.keys() | right.keys():
            pe = ("f", key)
            if keep((pe,)):
                before = left.get(key, _MISSING)
                after = right.get(key, _MISSING)
                if not _unchanged(before, after):
                    self._compare(before, after, self.typer.field(root, key), (pe,), out)
        return _Comparison.of(out)

    def _compare(self, lhs: Any, rhs: Any, t: _Type, path: Path, out: _Found) -> None:
        """Below the root, callers have found the two sides not surely
        unchanged (``_unchanged``): most of an object is skipped there."""
        if path and (lhs is _MISSING or rhs is _MISSING):
            # All of it added (or removed): no comparing, and the trie is
            # walked down once instead of once per path below.
            if lhs is _MISSING:
                self._mark_all(rhs, t, path, out.added)
            else:
                self._mark_all(lhs, t, path, out.removed)
            return
        et = _effective(t, lhs if rhs is _MISSING else rhs)
        leaf = et.kind == "scalar" or et.atomic
        if lhs is not _MISSING and rhs is not _MISSING:
            leaf = leaf or _effective(t, lhs).kind != et.kind
        if not leaf and et.kind == "list":
            left = lhs if isinstance(lhs, list) else []
            right = rhs if isinstance(rhs, list) else []
            if not left and not right:
                leaf = True
            else:
                item_t = self.typer.item(et)
                _, left_items, _ = self.index_items(et, left, path, strict=False)
                _, right_items, _ = self.index_items(et, right, path, strict=False)
                for pe, item in right_items.items():
                    before = left_items.get(pe, _MISSING)
                    if not _unchanged(before, item):
                        self._compare(before, item, item_t, (*path, pe), out)
                for pe, item in left_items.items():
                    if pe not in right_items:
                        self._compare(item, _MISSING, item_t, (*path, pe), out)
        elif not leaf:
            left_map = lhs if isinstance(lhs, dict) else {}
            right_map = rhs if isinstance(rhs, dict) else {}
            if not left_map and not right_map:
                leaf = True
            else:
                field_t = self.typer.field
                for key in left_map.keys() | right_map.keys():
                    before = left_map.get(key, _MISSING)
                    after = right_map.get(key, _MISSING)
                    if not _unchanged(before, after):
                        self._compare(before, after, field_t(et, key), (*path, ("f", key)), out)
        if not path:
            return  # the whole object is never a member
        if lhs is _MISSING:
            out.added.add(path)
        elif rhs is _MISSING:
            out.removed.add(path)
        elif leaf and not values.equal(lhs, rhs):
            out.modified.add(path)

    def _mark_all(self, value: Any, t: _Type, path: Path, out: set[Path]) -> None:
        """``path`` and everything below it into ``out``, as ``_compare``
        marks a value present on one side only."""
        out.add(path)
        et = _effective(t, value)
        if et.kind == "scalar" or et.atomic:
            return
        if et.kind == "list":
            if not isinstance(value, list) or not value:
                return
            item_t = self.typer.item(et)
            _, items, _ = self.index_items(et, value, path, strict=False)
            for item_pe, item in items.items():
                self._mark_all(item, item_t, (*path, item_pe), out)
            return
        if not isinstance(value, dict) or not value:
            return
        field_t = self.typer.field
        for key, child in value.items():
            self._mark_all(child, field_t(et, key), (*path, ("f", key)), out)

    # -- removal ---------------------------------------------------------

    def remove(self, value: Any, t: _Type, to_remove: FieldSet) -> Any:
        """The value without the paths in ``to_remove`` (and what is below them).

        A map emptied this way disappears from its parent, where upstream
        leaves a null that Go's typed decoding then drops.
        """
        result = self._remove(value, t, to_remove.trie(), ())
        return {} if result is _MISSING else result

    def _remove(self, value: Any, t: _Type, to_remove: _Node, path: Path) -> Any:
        et = _effective(t, value)
        if et.atomic or not value or et.kind == "scalar":
            return value
        if et.kind == "list":
            item_t = self.typer.item(et)
            items: list[Any] = []
            for index, item in enumerate(value):
                pe = self.item_pe(et, item, path, index)
                if pe in to_remove.members:
                    continue
                below = to_remove.children.get(pe)
                if below is not None:
                    item = self._remove(item, item_t, below, (*path, pe))
                    if item is _MISSING:
                        item = {}
                items.append(item)
            return items or _MISSING
        out: dict[str, Any] = {}
        for key, child in value.items():
            pe = ("f", key)
            if pe in to_remove.members:
                continue
            below = to_remove.children.get(pe)
            if below is not None:
                child = self._remove(child, self.typer.field(et, key), below, (*path, pe))
                if child is _MISSING:
                    continue
            out[key] = child
        return out or _MISSING

    # -- create ----------------------------------------------------------

    def skeleton(self, value: Any, t: _Type) -> dict[str, Any]:
        """The empty object a create is compared with.

        Upstream compares a created object with its Go zero value, in which
        non-pointer structs exist as ``{}`` and required lists and maps as
        null; so on create ``.spec``, ``.spec.template`` or
        ``.spec.template.spec.containers`` are not owned themselves, while
        optional maps, list items and struct fields left empty are. The schema
        does not tell pointers from values: declared struct fields with content
        and required fields stand in for them.
        """
        out: dict[str, Any] = {}
        if not isinstance(value, dict):
            return out
        for key, child in value.items():
            if key not in t.fields:
                continue
            child_t = self.typer.field(t, key)
            if child_t.kind == "map" and child_t.fields and not child_t.atomic:
                if isinstance(child, dict) and child:
                    out[key] = self.skeleton(child, child_t)
                    continue
            if key in t.required and child_t.kind in ("list", "map"):
                out[key] = None
        return out


# --------------------------------------------------------------------------
# Managers: managedFields entries and their identities.


@dataclass
class _Entry:
    manager: str
    operation: str
    api_version: str
    subresource: str
    time: str | None
    fields: FieldSet

    @property
    def applied(self) -> bool:
        return self.operation == "Apply"

    @functools.cached_property
    def ident(self) -> str:
        # Entries never change who they are (only their fields and time).
        return _identifier(self.manager, self.operation, self.api_version, self.subresource)


@functools.lru_cache(maxsize=4096)
def _identifier(manager: str, operation: str, api_version: str, subresource: str) -> str:
    """Upstream ``BuildManagerIdentifier``: appliers are one manager whatever version they used."""
    parts: dict[str, str] = {}
    if manager:
        parts["manager"] = manager
    if operation:
        parts["operation"] = operation
    if api_version and operation != "Apply":
        parts["apiVersion"] = api_version
    if subresource:
        parts["subresource"] = subresource
    return (
        "{" + ",".join(f"{_go_json_string(k)}:{_go_json_string(v)}" for k, v in parts.items()) + "}"
    )


def _print_manager(entry: _Entry) -> str:
    text = _go_quote(entry.manager)
    if entry.subresource:
        text += f" with subresource {_go_quote(entry.subresource)}"
    if entry.operation == "Update":
        text += f" using {entry.api_version}"
    return text


@functools.lru_cache(maxsize=1024)
def _unix(time: str | None) -> int:
    if not time:
        return 0
    try:
        parsed = datetime.datetime.fromisoformat(time.replace("Z", "+00:00"))
    except ValueError:
        return 0
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.UTC)
    return int(parsed.timestamp())


def _decode_managed(entries: Any) -> dict[str, _Entry]:
    """Upstream ``DecodeManagedFields``; any malformed entry invalidates the whole list."""
    if entries is None:
        return {}
    if not isinstance(entries, list):
        raise ValueError("managedFields must be a list")
    managers: dict[str, _Entry] = {}
    for index, raw in enumerate(entries):
        if not isinstance(raw, dict):
            raise ValueError(f"managed fields entry {index} must be an object")
        operation = raw.get("operation")
        if operation not in ("Apply", "Update"):
            raise ValueError("operation must be `Apply` or `Update`")
        api_version = raw.get("apiVersion")
        if not isinstance(api_version, str) or not api_version:
            raise ValueError("apiVersion must not be empty")
        fields_type = raw.get("fieldsType")
        if fields_type != "FieldsV1":
            raise ValueError(f"invalid fieldsType {fields_type!r} in managed fields entry {index}")
        fields_v1 = raw.get("fieldsV1")
        fs = decode_fields_v1(fields_v1) if fields_v1 is not None else FieldSet()
        time = raw.get("time")
        entry = _Entry(
            manager=str(raw.get("manager") or ""),
            operation=operation,
            api_version=api_version,
            subresource=str(raw.get("subresource") or ""),
            time=time if isinstance(time, str) and time else None,
            fields=fs,
        )
        managers[entry.ident] = entry
    return managers


def _encode_managed(managers: Mapping[str, _Entry]) -> list[dict[str, Any]]:
    """Upstream ``EncodeManagedFields``: Apply entries first, then by time, manager, version."""
    ordered = sorted(
        (e for e in managers.values() if not e.fields.is_empty()),
        key=lambda e: (e.operation, _unix(e.time), e.manager, e.api_version, e.subresource),
    )
    out: list[dict[str, Any]] = []
    for entry in ordered:
        encoded: dict[str, Any] = {}
        if entry.manager:
            encoded["manager"] = entry.manager
        encoded["operation"] = entry.operation
        encoded["apiVersion"] = entry.api_version
        if entry.time:
            encoded["time"] = entry.time
        encoded["fieldsType"] = "FieldsV1"
        encoded["fieldsV1"] = encode_fields_v1(entry.fields)
        if entry.subresource:
            encoded["subresource"] = entry.subresource
        out.append(encoded)
    return out


def _is_reset(entries: Any) -> bool:
    """Upstream ``isResetManagedFields``: ``[]`` or ``[{}]`` clears ownership on a write."""
    if not isinstance(entries, list):
        return False
    return not entries or (len(entries) == 1 and entries[0] == {})


def _cap_update_managers(managers: dict[str, _Entry]) -> None:
    """Merge the oldest Update entries into per-version "ancient-changes" buckets."""
    updaters = [ident for ident, e in managers.items() if not e.applied]
    if len(updaters) <= MAX_UPDATE_MANAGERS:
        return
    updaters.sort(key=lambda ident: (_unix(managers[ident].time), ident))
    first_by_version: dict[str, str] = {}
    length = len(updaters)
    for ident in updaters:
        if length <= MAX_UPDATE_MANAGERS:
            break
        entry = managers[ident]
        version = entry.api_version
        bucket = _identifier(ANCIENT_CHANGES_MANAGER, "Update", version, "")
        first = first_by_version.get(version)
        if first is None:
            first_by_version[version] = ident
            continue
        if bucket not in managers:
            seed = managers.pop(first)
            managers[bucket] = _Entry(
                ANCIENT_CHANGES_MANAGER, "Update", version, "", seed.time, seed.fields
            )
        target = managers[bucket]
        managers[bucket] = _Entry(
            ANCIENT_CHANGES_MANAGER,
            "Update",
            version,
            "",
            entry.time,
            entry.fields.union(target.fields),
        )
        del managers[ident]
        length -= 1


# Paths no manager owns (upstream stripMetaManager); exact paths, not subtrees.
_STRIPPED: Final = FieldSet(
    [
        (("f", "apiVersion"),),
        (("f", "kind"),),
        (("f", "metadata"),),
        *(
            (("f", "metadata"), ("f", name))
            for name in (
                "name",
                "namespace",
                "creationTimestamp",
                "selfLink",
                "uid",
                "clusterName",
                "generation",
                "managedFields",
                "resourceVersion",
            )
        ),
    ]
)


class _TopLevel:
    """A path filter that looks only at the top-level field: as a callable it
    answers per path; ``apply`` filters a whole set at its top level, which is
    what every write does to every field set it touches."""

    def __init__(self, element: PathElement, inside: bool) -> None:
        self.element = element
        self.inside = inside  # keep only paths under element, or all but those

    def __call__(self, path: Path) -> bool:
        return (path[0] == self.element) is self.inside

    def apply(self, fs: FieldSet) -> FieldSet:
        pe = self.element
        if self.inside:
            kept = frozenset(p for p in fs._paths if p[0] == pe)
        else:
            kept = frozenset(p for p in fs._paths if p[0] != pe)
        return fs if len(kept) == len(fs._paths) else FieldSet._of(kept)


def _ignore_filter(subresource: str, has_status_subresource: bool) -> Callable[[Path], bool] | None:
    """Upstream's reset fields: who may own what through which endpoint.

    Writes to the main resource cannot change status (the strategy resets it),
    so nobody gains or loses status there; the status subresource is the
    mirror image.
    """
    status = ("f", "status")
    if subresource == "status":
        return _TopLevel(status, inside=True)
    if not subresource and has_status_subresource:
        return _TopLevel(status, inside=False)
    return None


def _filter(fs: FieldSet, keep: Callable[[Path], bool] | None) -> FieldSet:
    return fs if keep is None else fs.filtered(keep)


class _Conflicts(Exception):
    def __init__(self, conflicts: dict[str, FieldSet], managers: Mapping[str, _Entry]) -> None:
        super().__init__("conflicts")
        self.conflicts = conflicts
        self.managers = dict(managers)

    def without(self, allowed: FieldSet) -> dict[str, FieldSet]:
        rest: dict[str, FieldSet] = {}
        for ident, fs in self.conflicts.items():
            left = FieldSet(p for p in fs.paths() if not allowed.has(p))
            if not left.is_empty():
                rest[ident] = left
        return rest


def _conflict_error(
    conflicts: Mapping[str, FieldSet], managers: Mapping[str, _Entry]
) -> errors.StatusError:
    """Upstream ``NewConflictError``, managers in identifier order for a stable message."""
    found: list[tuple[str, Path]] = []
    for ident in sorted(conflicts):
        found.extend((ident, path) for path in conflicts[ident].paths())
    causes = [
        errors.Cause(
            reason="FieldManagerConflict",
            message=f"conflict with {_print_manager(managers[ident])}",
            field=format_path(path),
        )
        for ident, path in found
    ]
    if len(found) == 1:
        ident, path = found[0]
        message = (
            f"Apply failed with 1 conflict: conflict with "
            f"{_print_manager(managers[ident])}: {format_path(path)}"
        )
    else:
        lines: list[str] = []
        for ident in sorted(conflicts):
            lines.append(f"conflicts with {_print_manager(managers[ident])}:")
            lines.extend(f"- {format_path(p)}" for p in conflicts[ident].paths())
        message = f"Apply failed with {len(found)} conflicts: " + "\n".join(lines)
    return errors.apply_conflict(causes, message)


# --------------------------------------------------------------------------
# The updater (upstream merge.Updater).


def _update(
    walker: _Walker,
    old: Any,
    new: Any,
    managers: dict[str, _Entry],
    workflow: str,
    force: bool,
    keep: Callable[[Path], bool] | None,
) -> _Comparison:
    """Take changed fields away from every other manager; conflicts unless forced."""
    if isinstance(keep, _TopLevel):
        comparison = walker.compare_top_level(old, new, keep)
    else:
        comparison = walker.compare(old, new, walker.typer.root).filtered(keep)
    changed = comparison.modified.union(comparison.added)
    conflicts: dict[str, FieldSet] = {}
    for ident, entry in managers.items():
        if ident == workflow:
            continue
        taken = entry.fields.intersection(changed)
        if not taken.is_empty():
            conflicts[ident] = taken
    if conflicts and not force:
        raise _Conflicts(conflicts, managers)
    for ident, entry in list(managers.items()):
        if ident == workflow:
            continue
        fields = entry.fields
        if ident in conflicts:
            fields = fields.difference(conflicts[ident])
        if not comparison.removed.is_empty():
            fields = fields.difference(comparison.removed)
        entry.fields = fields
    for ident in [i for i, e in managers.items() if e.fields.is_empty()]:
        del managers[ident]
    return comparison


def _prune(
    walker: _Walker,
    merged: Any,
    managers: Mapping[str, _Entry],
    last: FieldSet | None,
) -> Any:
    """Remove what the applier applied last time, no longer applies, and nobody else owns."""
    if last is None or last.is_empty():
        return merged
    root = walker.typer.root
    ensure = walker.ensure_named_fields
    last_e = ensure(last, root)
    pruned = walker.remove(merged, root, last_e)
    # Add back whatever any manager (the applier's new set included) owns.
    owned = FieldSet()
    for entry in managers.values():
        owned = owned.union(entry.fields)
    merged_e = ensure(walker.fieldset(merged, root), root)
    keep = ensure(walker.fieldset(pruned, root), root).union(ensure(owned, root))
    pruned = walker.remove(merged, root, merged_e.difference(keep))
    # Add back what was removed but was never the applier's.
    pruned_e = ensure(walker.fieldset(pruned, root), root)
    return walker.remove(merged, root, merged_e.difference(pruned_e).intersection(last_e))


def _strip_object(obj: Mapping[str, Any] | None) -> dict[str, Any]:
    """The object without ``metadata.managedFields`` (never part of the comparison).

    A shallow copy: the walker only reads the objects it compares, and this
    runs on every write (a deep copy here was a tenth of a pod's write cost)."""
    if obj is None:
        return {}
    out = dict(obj)
    metadata = out.get("metadata")
    if isinstance(metadata, dict) and "managedFields" in metadata:
        metadata = dict(metadata)
        del metadata["managedFields"]
        out["metadata"] = metadata
    return out


def _with_managed_fields(obj: dict[str, Any], managers: Mapping[str, _Entry]) -> dict[str, Any]:
    out = dict(obj)
    metadata = out.get("metadata")
    metadata = dict(metadata) if isinstance(metadata, dict) else {}
    metadata.pop("managedFields", None)
    encoded = _encode_managed(managers)
    if encoded:
        metadata["managedFields"] = encoded
    if metadata or "metadata" in out:
        out["metadata"] = metadata
    return out


def _record_changes(
    walker: _Walker,
    old: Any,
    new: Any,
    managers: dict[str, _Entry],
    entry: _Entry,
    now: str,
    keep: Callable[[Path], bool] | None,
) -> None:
    """The non-apply write path: ``managedFieldsUpdater`` around ``Updater.Update``."""
    comparison = _update(walker, old, new, managers, _CURRENT_OPERATION, True, keep)
    current = comparison.modified.union(comparison.added).difference(comparison.removed)
    current = _filter(current, keep).difference(_STRIPPED)
    if current.is_empty():
        return
    previous = managers.get(entry.ident)
    if previous is not None:
        current = current.union(previous.fields)
    entry.fields = current
    entry.time = now
    managers[entry.ident] = entry


def _last_applied_allowance(walker: _Walker, live: Mapping[str, Any], api_version: str) -> FieldSet:
    """Fields kubectl's client-side apply annotation shows as unchanged since it applied.

    ``kubectl apply --server-side`` may take those over from
    ``kubectl-client-side-apply`` without conflicts (upstream lastAppliedManager).
    """
    annotations = (live.get("metadata") or {}).get("annotations") or {}
    raw = annotations.get(LAST_APPLIED_ANNOTATION) if isinstance(annotations, dict) else None
    if not isinstance(raw, str) or not raw:
        return FieldSet()
    try:
        last_applied = json.loads(raw)
    except ValueError:
        return FieldSet()
    if not isinstance(last_applied, dict) or last_applied.get("apiVersion") != api_version:
        return FieldSet()
    root = walker.typer.root
    try:
        fields = walker.fieldset(last_applied, root)
        comparison = walker.compare(last_applied, dict(live), root)
    except _ShapeError:
        return FieldSet()
    return (
        fields.difference(comparison.modified)
        .difference(comparison.added)
        .difference(comparison.removed)
    )


def _sync_last_applied(result: dict[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    """Keep an existing client-side apply annotation in step with ``kubectl --server-side``."""
    metadata = result.get("metadata")
    annotations = metadata.get("annotations") if isinstance(metadata, dict) else None
    if not isinstance(annotations, dict) or not annotations.get(LAST_APPLIED_ANNOTATION):
        return result
    applied = values.clone(dict(config))
    applied_meta = applied.get("metadata")
    if isinstance(applied_meta, dict) and isinstance(applied_meta.get("annotations"), dict):
        applied_annotations = dict(applied_meta["annotations"])
        applied_annotations.pop(LAST_APPLIED_ANNOTATION, None)
        applied_meta["annotations"] = applied_annotations
    assert isinstance(metadata, dict)
    new_annotations = dict(annotations)
    new_annotations[LAST_APPLIED_ANNOTATION] = _go_json(applied) + "\n"
    size = sum(len(k.encode()) + len(str(v).encode()) for k, v in new_annotations.items())
    if size > _TOTAL_ANNOTATION_SIZE_LIMIT:
        del new_annotations[LAST_APPLIED_ANNOTATION]
    return {**result, "metadata": {**metadata, "annotations": new_annotations}}


# --------------------------------------------------------------------------
# Public API.


def fieldset_of(obj: Mapping[str, Any], schema: Mapping[str, Any] | None) -> FieldSet:
    """The fields an object sets, as an applier of it would own them.

    Upstream's ``ToFieldSet`` minus what no manager ever owns (apiVersion,
    kind, metadata.name/namespace/uid/resourceVersion/generation/
    creationTimestamp/selfLink/managedFields). Status is kept: which endpoint
    may own it is decided per write (see ``apply``).
    """
    walker = _Walker(_typer_for(schema))
    try:
        fs = walker.fieldset(_strip_object(obj), walker.typer.root)
    except _ShapeError as err:
        raise ValueError(str(err)) from err
    return fs.difference(_STRIPPED)


def apply(
    live: Mapping[str, Any] | None,
    config: Mapping[str, Any],
    *,
    manager: str,
    force: bool,
    schema: Mapping[str, Any] | None,
    now: str,
    subresource: str = "",
    has_status_subresource: bool = True,
) -> dict[str, Any]:
    """Server-side apply of ``config`` onto ``live`` (None: create); returns the new object.

    Merges by schema, removes what this manager applied before and no longer
    applies (unless someone else owns it), takes over fields from other
    managers only with ``force`` (409 Conflict otherwise) and records the
    manager's Apply entry. A no-op apply returns the live object unchanged,
    timestamps included, as upstream (so the caller can skip the write).

    Status is merged like any field but owned only through the status
    subresource (when ``has_status_subresource``); the caller's strategy is
    expected to reset what an endpoint may not change, as upstream's does.
    """
    if not isinstance(config, Mapping):
        raise errors.bad_request("the apply configuration must be an object")
    config_meta = config.get("metadata")
    if isinstance(config_meta, Mapping) and config_meta.get("managedFields") is not None:
        raise errors.bad_request("metadata.managedFields must be nil")
    typer = _typer_for(schema)
    walker = _Walker(typer)
    root = typer.root
    api_version = str(config.get("apiVersion") or "")
    keep = _ignore_filter(subresource, has_status_subresource)
    live_obj = _strip_object(live)
    config_obj = _strip_object(config)
    try:
        config_set = walker.fieldset(config_obj, root, strict=True)
    except _ShapeError as err:
        kind = config.get("kind", "")
        raise errors.bad_request(
            f"failed to create typed patch object ({api_version}, Kind={kind}): {err}"
        ) from err
    managers = _decode_or_empty(live)
    try:
        if live is not None and not managers:
            # Upstream skipNonAppliedManager: fields set before anyone applied
            # belong to "before-first-apply", so applying over them conflicts.
            before = _Entry(BEFORE_FIRST_APPLY_MANAGER, "Update", api_version, "", None, FieldSet())
            skeleton = walker.skeleton(live_obj, root)
            _record_changes(walker, skeleton, live_obj, managers, before, now, keep)
        applier = _Entry(manager, "Apply", api_version, subresource, None, FieldSet())
        try:
            merged, managers = _apply_core(
                walker, live_obj, config_obj, config_set, managers, applier, force, keep
            )
        except _Conflicts as conflicts:
            if manager != "kubectl":
                raise _conflict_error(conflicts.conflicts, conflicts.managers) from None
            rest = conflicts.without(_last_applied_allowance(walker, live_obj, api_version))
            if rest:
                raise _conflict_error(rest, conflicts.managers) from None
            merged, managers = _apply_core(
                walker, live_obj, config_obj, config_set, managers, applier, True, keep
            )
    except _ShapeError as err:
        raise errors.internal(f"failed to apply to the live object: {err}") from err
    changed = live is None or not values.equal(live_obj, merged)
    entry = managers.get(applier.ident)
    if entry is not None and (changed or entry.time is None):
        entry.time = now
    result = merged if changed else live_obj
    if manager == "kubectl":
        result = _sync_last_applied(result, config_obj)
    return _with_managed_fields(result, managers)


def _apply_core(
    walker: _Walker,
    live: dict[str, Any],
    config: dict[str, Any],
    config_set: FieldSet,
    managers: Mapping[str, _Entry],
    applier: _Entry,
    force: bool,
    keep: Callable[[Path], bool] | None,
) -> tuple[Any, dict[str, _Entry]]:
    """Upstream ``Updater.Apply`` plus the metadata strip: merge, prune, then take ownership."""
    work = {
        ident: _Entry(e.manager, e.operation, e.api_version, e.subresource, e.time, e.fields)
        for ident, e in managers.items()
    }
    root = walker.typer.root
    merged = walker.merge(live, config, root, ())
    previous = work.get(applier.ident)
    last = previous.fields if previous is not None else None
    work[applier.ident] = _Entry(
        applier.manager,
        "Apply",
        applier.api_version,
        applier.subresource,
        previous.time if previous is not None else None,
        _filter(config_set, keep),
    )
    merged = _prune(walker, merged, work, last)
    _update(walker, live, merged, work, applier.ident, force, keep)
    own = work.get(applier.ident)
    if own is not None:
        own.fields = own.fields.difference(_STRIPPED)
        if own.fields.is_empty():
            del work[applier.ident]
    return merged, work


def record_update(
    old: Mapping[str, Any] | None,
    new: Mapping[str, Any],
    *,
    manager: str,
    schema: Mapping[str, Any] | None,
    now: str,
    subresource: str = "",
    has_status_subresource: bool = True,
) -> dict[str, Any]:
    """Track ownership for a create/update/patch (anything but apply); returns ``new`` with managedFields.

    The fields this write changed go to ``manager``'s Update entry and are
    taken from everyone else. Managed fields sent by the client replace the
    stored ones (that is how clients edit or, with ``[]`` or ``[{}]``, clear
    them); absent or malformed ones keep the stored ones, and writes to a
    subresource can never change them. Like upstream's ``UpdateNoErrors``, an
    object that cannot be walked with its schema loses its managedFields
    instead of failing the write.
    """
    typer = _typer_for(schema)
    sent = (new.get("metadata") or {}).get("managedFields")
    template_key = (
        _template_key(new, typer, manager, subresource, has_status_subresource)
        if old is None and sent is None
        else None
    )
    if template_key is not None:
        fields = _TEMPLATED.get(template_key)
        if fields is not None:
            new_obj = _strip_object(new)
            created = _Entry(
                manager, "Update", str(new_obj.get("apiVersion") or ""), subresource, now, fields
            )
            return _with_managed_fields(new_obj, {created.ident: created})
    walker = _Walker(typer)
    keep = _ignore_filter(subresource, has_status_subresource)
    managers: dict[str, _Entry]
    if subresource:
        managers = _decode_or_empty(old)
    elif _is_reset(sent):
        managers = {}
    else:
        try:
            managers = _decode_managed(sent)
        except ValueError:
            managers = {}
        if not managers:
            managers = _decode_or_empty(old)
    old_obj = _strip_object(old) if old is not None else None
    new_obj = _strip_object(new)
    api_version = str(new_obj.get("apiVersion") or (old or {}).get("apiVersion") or "")
    entry = _Entry(manager, "Update", api_version, subresource, None, FieldSet())
    try:
        base = old_obj if old_obj is not None else walker.skeleton(new_obj, typer.root)
        _record_changes(walker, base, new_obj, managers, entry, now, keep)
    except _ShapeError:
        return _with_managed_fields(new_obj, {})
    _cap_update_managers(managers)
    if template_key is not None and list(managers) == [entry.ident]:
        _TEMPLATED.put(template_key, entry.fields)
    return _with_managed_fields(new_obj, managers)


# Field sets of created objects, by content for those made from a template
# (a controller's objects differ only in what no manager owns), by shape for
# those without lists (each Event has its own values, not its own fields).
_TEMPLATED: memos.BoundedMemo[tuple[Any, ...], FieldSet] = memos.BoundedMemo(1024)
# Set per object by the server; never owned (``_STRIPPED``), so not part of the key.
_PER_OBJECT: Final = ("name", "uid", "creationTimestamp", "resourceVersion", "generation")


def _template_key(
    new: Mapping[str, Any],
    typer: _Typer,
    manager: str,
    subresource: str,
    has_status_subresource: bool,
) -> tuple[Any, ...] | None:
    """The key a create's field set is remembered by: for objects named by
    ``generateName`` (made from a template), their content; for others
    without lists (Events, Leases: many alike, each with its own values),
    their shape; None for the rest (unique content would only fill the memo)."""
    metadata = new.get("metadata")
    if not isinstance(metadata, dict):
        return None
    if not metadata.get("generateName"):
        # the comparison with the skeleton looks at maps' keys and emptiness
        # and at scalars' presence and type, never at their values
        form = values.shape(new)
        if form is None:
            return None
        return (typer, manager, subresource, has_status_subresource, form)
    content = dict(new)
    content["metadata"] = {k: v for k, v in metadata.items() if k not in _PER_OBJECT}
    try:
        # A digest: the key stays small whatever the object's size.
        digest = hashlib.blake2b(orjson.dumps(content), digest_size=16).digest()
    except TypeError:
        return None
    return (typer, manager, subresource, has_status_subresource, digest)


def _decode_or_empty(obj: Mapping[str, Any] | None) -> dict[str, _Entry]:
    try:
        return _decode_managed(((obj or {}).get("metadata") or {}).get("managedFields"))
    except (ValueError, AttributeError):
        return {}
