"""JSON values (what API objects are made of): copying and comparing them.

Every write copies and compares whole objects several times; these are the
hot loops of the API server, so they go through orjson where it is exact.
"""

from __future__ import annotations

import copy
from typing import Any, TypeVar

import orjson

# Types orjson would otherwise turn into strings or plain containers raise
# instead, so they take the exact path.
_EXACT = (
    orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_SUBCLASS
    | orjson.OPT_PASSTHROUGH_DATACLASS
)


T = TypeVar("T")


def clone(value: T) -> T:
    """A deep copy of a JSON value, about 8x faster than ``copy.deepcopy``.

    The orjson round trip is exact for what JSON can hold; anything else
    (integers beyond 64 bits, non-string keys, tuples a caller built) takes
    the slow path so nothing changes type on the way.
    """
    try:
        copied: Any = orjson.loads(orjson.dumps(value, option=_EXACT))
    except (TypeError, orjson.JSONEncodeError):
        return copy.deepcopy(value)
    if type(copied) is not type(value):
        return copy.deepcopy(value)
    same: T = copied  # the same type, checked above
    return same


def equal(a: Any, b: Any) -> bool:
    """JSON equality: booleans are not numbers (Python says ``True == 1``),
    1 equals 1.0, key order is irrelevant."""
    if a is b:
        return True
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, dict):
        if not isinstance(b, dict) or a.keys() != b.keys():
            return False
        return all(equal(v, b[k]) for k, v in a.items())
    if isinstance(a, list):
        if not isinstance(b, list) or len(a) != len(b):
            return False
        return all(equal(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and bool(a == b)


def identical(a: Any, b: Any) -> bool:
    """Whether two JSON values are surely equal, cheaply: a fast yes, or no.

    ``==`` runs in C but says ``True == 1``; the serialised forms then tell
    booleans from numbers. Equal values whose keys come in another order (or
    that write 1 and 1.0) answer no, so callers use this to skip work and
    fall back to a full comparison on no.
    """
    if a is b:
        return True
    try:
        return bool(a == b) and orjson.dumps(a, option=_EXACT) == orjson.dumps(b, option=_EXACT)
    except (TypeError, orjson.JSONEncodeError):
        return False


class _Unshaped(Exception):
    """The value holds a list, or more than the limit of fields."""


def shape(value: Any, limit: int = 256) -> Any | None:
    """A small list-free value's shape: its maps' keys, recursively, and its
    scalars' types; None for a value holding a list or more than ``limit``
    fields (a shape as big as the value would only fill a memo). Checks that
    look only at keys and types (unknown fields, type errors, the fields a
    create owns) give every value of one shape the same answer: it keys
    their memos."""
    budget = [limit]
    try:
        return _shape(value, budget)
    except _Unshaped:
        return None


def _shape(value: Any, budget: list[int]) -> Any:
    kind = type(value)
    if kind is dict:
        budget[0] -= len(value)
        if budget[0] < 0:
            raise _Unshaped
        return tuple([(key, _shape(child, budget)) for key, child in value.items()])
    if kind is list:
        raise _Unshaped
    return kind
