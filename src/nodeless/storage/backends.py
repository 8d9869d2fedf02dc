"""The storage contract: revisioned key-value data types, errors and the ``Backend`` protocol.

Semantics follow etcd v3 as kine presents it to the apiserver: one global revision
that every write (create, update, delete) advances by exactly one, reads at a past
revision, compare-and-swap on ``mod_revision``, and watches that replay history and
then continue live without gap or duplicate.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol, TypeAlias


@dataclass(frozen=True, slots=True)
class KeyValue:
    """One version of a key: the value as of ``mod_revision``, born at ``create_revision``."""

    key: str
    value: bytes
    create_revision: int
    mod_revision: int


class EventType(enum.Enum):
    """What a write did to its key."""

    CREATE = "CREATE"
    UPDATE = "UPDATE"
    DELETE = "DELETE"


@dataclass(frozen=True, slots=True)
class Event:
    """One write as a watcher sees it.

    ``kv.mod_revision`` is the write's revision. For DELETE, ``kv`` carries the last
    value so watchers can tell what disappeared. ``prev`` is the version the write
    replaced (None for CREATE).
    """

    type: EventType
    kv: KeyValue
    prev: KeyValue | None

    @property
    def revision(self) -> int:
        """The revision this event was written at."""
        return self.kv.mod_revision


EventBatch: TypeAlias = list[Event]
"""Watch delivers events in batches; one batch never spans a gap."""


@dataclass(frozen=True, slots=True)
class ListResult:
    """A page of live keys under a prefix, read at one consistent revision."""

    items: list[KeyValue]
    revision: int
    more: bool
    remaining: int


class StorageError(Exception):
    """Base of every error a backend raises on purpose."""


class KeyExistsError(StorageError):
    """Create of a key that is live."""

    def __init__(self, key: str) -> None:
        super().__init__(f"key {key!r} already exists")
        self.key = key


class KeyNotFoundError(StorageError):
    """Update, delete or read-for-update of a key that is not live."""

    def __init__(self, key: str) -> None:
        super().__init__(f"key {key!r} not found")
        self.key = key


class RevisionMismatchError(StorageError):
    """Compare-and-swap failed: the key moved on since the caller read it."""

    def __init__(self, key: str, expected_revision: int, current: KeyValue | None) -> None:
        actual = current.mod_revision if current is not None else 0
        super().__init__(
            f"key {key!r}: expected mod_revision {expected_revision}, current is {actual}"
        )
        self.key = key
        self.expected_revision = expected_revision
        self.current = current


class CompactedError(StorageError):
    """The requested revision is older than the history the backend still holds."""

    def __init__(self, revision: int, compacted_revision: int) -> None:
        super().__init__(
            f"revision {revision} has been compacted (compacted revision {compacted_revision})"
        )
        self.revision = revision
        self.compacted_revision = compacted_revision


class FutureRevisionError(StorageError):
    """The requested revision has not been written yet."""

    def __init__(self, revision: int, current_revision: int) -> None:
        super().__init__(
            f"revision {revision} is newer than the current revision {current_revision}"
        )
        self.revision = revision
        self.current_revision = current_revision


class BackendClosedError(StorageError):
    """The backend is not running (never started, or closed)."""


class Backend(Protocol):
    """A revisioned key-value store with watch.

    Keys are strings, values opaque bytes. Revisions start at 1 for the first write;
    ``current_revision()`` is 0 on an empty store.
    """

    async def start(self) -> None:
        """Open the store and recover its revision; must precede every other call."""

    async def close(self) -> None:
        """Finish queued writes, end all watches and release the store."""

    async def current_revision(self) -> int:
        """The revision of the last write (0 when nothing was ever written)."""

    async def compacted_revision(self) -> int:
        """Reads and watches from revisions older than this raise ``CompactedError``."""

    async def get(self, key: str, revision: int = 0) -> KeyValue | None:
        """The live version of ``key`` as of ``revision`` (0 = latest), None if absent."""

    async def list(
        self, prefix: str, *, start_key: str = "", limit: int = 0, revision: int = 0
    ) -> ListResult:
        """Live keys with ``prefix`` and ``key >= start_key``, sorted, at most ``limit``.

        ``limit`` 0 means all, ``revision`` 0 means latest. Raises ``CompactedError``
        below the compacted revision and ``FutureRevisionError`` above the current one.
        """

    async def count(self, prefix: str) -> int:
        """Number of live keys with ``prefix`` at the latest revision."""

    async def create(self, key: str, value: bytes) -> KeyValue:
        """Create ``key``; raises ``KeyExistsError`` if it is live."""

    async def update(self, key: str, value: bytes, expected_revision: int) -> KeyValue:
        """Replace ``key`` if its mod_revision is ``expected_revision`` (0 = any).

        Raises ``KeyNotFoundError`` or ``RevisionMismatchError``.
        """

    async def delete(self, key: str, expected_revision: int = 0) -> KeyValue:
        """Delete ``key``; returns its last value with mod_revision = the delete's revision."""

    def watch(self, prefix: str, revision: int) -> AsyncIterator[EventBatch]:
        """Events for keys with ``prefix`` and revision > ``revision``, in batches.

        Replays the log first, then continues live: strict revision order, no gap, no
        duplicate. Raises ``CompactedError`` on iteration if ``revision`` is older than
        the compacted revision (also later, if the watcher fell behind into history that
        was compacted meanwhile). Ends when the backend closes; stop early with
        ``aclose()``.
        """

    async def compact(self, revision: int) -> None:
        """Forget history at or below ``revision`` that latest reads do not need."""
