"""Revisioned key-value stores with watch: the Backend protocol and its implementations."""

from nodeless.storage.backends import (
    Backend,
    BackendClosedError,
    CompactedError,
    Event,
    EventBatch,
    EventType,
    FutureRevisionError,
    KeyExistsError,
    KeyNotFoundError,
    KeyValue,
    ListResult,
    RevisionMismatchError,
    StorageError,
)
from nodeless.storage.compacting import Compactor
from nodeless.storage.memory import MemoryBackend
from nodeless.storage.sqlite import SqliteBackend

__all__ = [
    "Backend",
    "BackendClosedError",
    "CompactedError",
    "Compactor",
    "Event",
    "EventBatch",
    "EventType",
    "FutureRevisionError",
    "KeyExistsError",
    "KeyNotFoundError",
    "KeyValue",
    "ListResult",
    "MemoryBackend",
    "RevisionMismatchError",
    "SqliteBackend",
    "StorageError",
]
