"""Bounded memos: what the write path remembers by content or by identity.

A workload repeats itself (the pods of one template carry the same field sets,
the same bodies, the same schemas), so the hot path keeps answers it will be
asked for again. Each memo forgets everything at once when full rather than
evicting the least recently used: a hit then costs one dict lookup and
nothing else, and what is still in use comes back on its next miss.
"""

from __future__ import annotations

from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")
T = TypeVar("T")


class BoundedMemo(Generic[K, V]):
    """Values by key, at most ``limit`` of them."""

    __slots__ = ("_entries", "limit")

    def __init__(self, limit: int) -> None:
        self._entries: dict[K, V] = {}
        self.limit = limit

    def get(self, key: K) -> V | None:
        return self._entries.get(key)

    def put(self, key: K, value: V) -> V:
        """Remember ``value`` (forgetting everything first if full) and return it."""
        if len(self._entries) >= self.limit:
            self._entries.clear()
        self._entries[key] = value
        return value

    def full(self) -> bool:
        return len(self._entries) >= self.limit

    def __len__(self) -> int:
        return len(self._entries)


class IdentityMemo(Generic[T, V]):
    """Values by the identity of an object that cannot be hashed (a dict).

    The object is held beside its value, so its id cannot be reused by another
    object while it is remembered, and a lookup checks it is the same one."""

    __slots__ = ("_entries", "limit")

    def __init__(self, limit: int) -> None:
        self._entries: dict[int, tuple[T, V]] = {}
        self.limit = limit

    def get(self, obj: T) -> V | None:
        found = self._entries.get(id(obj))
        if found is not None and found[0] is obj:
            return found[1]
        return None

    def put(self, obj: T, value: V) -> V:
        if len(self._entries) >= self.limit:
            self._entries.clear()
        self._entries[id(obj)] = (obj, value)
        return value

    def clear(self) -> None:
        self._entries.clear()
