"""The watch cache: every stored object decoded once, in memory, per resource.

LIST and WATCH are served from here, never from the store per request (that
is what makes a 1,000-watcher fan-out cheap). One backend watch over the whole
``/registry/`` prefix feeds every resource's cache in revision order; each
event is decoded and serialized once, then shared by all watchers.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from nodeless.api import memos
from nodeless.storage import backends

log = logging.getLogger(__name__)

REGISTRY_PREFIX = "/registry/"
HISTORY_PER_RESOURCE = 10_000
WATCHER_QUEUE_LIMIT = 20_000


class Entry:
    """One object as the cache holds it: decoded, with its revision, and its JSON.

    Once a newer revision replaces it, an entry lives on only in the watch
    history, for watches that resume from an older resourceVersion; it then
    drops its decoded form (``release``) and decodes again if one asks. At
    10,000 pods that halves the memory of the cache.
    """

    __slots__ = ("_obj", "key", "raw", "rev")

    def __init__(self, key: str, obj: dict[str, Any] | None, raw: bytes, rev: int) -> None:
        self.key = key
        self._obj = obj
        self.raw = raw
        self.rev = rev

    @property
    def obj(self) -> dict[str, Any]:
        if self._obj is None:
            self._obj = orjson.loads(self.raw)
        return self._obj

    def release(self) -> None:
        self._obj = None

    @property
    def namespace(self) -> str:
        ns: str = self.obj.get("metadata", {}).get("namespace", "")
        return ns

    @property
    def name(self) -> str:
        name: str = self.obj.get("metadata", {}).get("name", "")
        return name


@dataclass(slots=True)
class CacheEvent:
    """A change to one key; ``type`` is ADDED, MODIFIED or DELETED."""

    type: str
    entry: Entry
    prev: Entry | None
    _lines: dict[str, bytes] = field(default_factory=dict)

    @property
    def rev(self) -> int:
        return self.entry.rev

    def line(self, event_type: str) -> bytes:
        """The JSON watch line for this event, memoized: one encoding for all watchers."""
        cached = self._lines.get(event_type)
        if cached is None:
            cached = b'{"type":"' + event_type.encode() + b'","object":' + self.entry.raw + b"}\n"
            self._lines[event_type] = cached
        return cached


Predicate = Callable[[dict[str, Any]], bool]


class WatchGone(Exception):
    """The requested revision is older than the cache's history (HTTP 410)."""


class Watcher:
    """One open watch: a bounded queue the cache pushes matching events into."""

    def __init__(self, cache: ResourceCache, key_prefix: str, predicate: Predicate | None) -> None:
        self.cache = cache
        self.key_prefix = key_prefix
        self.predicate = predicate
        self.queue: asyncio.Queue[tuple[str, CacheEvent] | None] = asyncio.Queue()
        self.overflowed = False

    def _matches(self, entry: Entry | None) -> bool:
        if entry is None or not entry.key.startswith(self.key_prefix):
            return False
        return self.predicate is None or self.predicate(entry.obj)

    def offer(self, event: CacheEvent) -> None:
        """Translate the event for this watcher's filter (a selector can turn an
        update into ADDED or DELETED, as upstream does) and enqueue it."""
        if self.overflowed:
            return
        now = self._matches(event.entry) if event.type != "DELETED" else False
        before = self._matches(event.prev) if event.prev is not None else False
        if event.type == "DELETED":
            before = self._matches(event.prev or event.entry)
            kind = "DELETED" if before else ""
        elif now and before:
            kind = "MODIFIED"
        elif now:
            kind = "ADDED"
        elif before:
            kind = "DELETED"
        else:
            kind = ""
        if not kind:
            return
        if self.queue.qsize() >= WATCHER_QUEUE_LIMIT:
            # A watcher that cannot keep up is closed rather than allowed to
            # grow memory without bound; the client re-lists, as with etcd.
            self.overflowed = True
            self.queue.put_nowait(None)
            return
        self.queue.put_nowait((kind, event))

    def close(self) -> None:
        self.cache.watchers.discard(self)
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(None)


class ResourceCache:
    """All objects of one stored resource, plus a bounded history of events."""

    def __init__(self, key_prefix: str) -> None:
        self.key_prefix = key_prefix
        self.objects: dict[str, Entry] = {}
        self.history: collections.deque[CacheEvent] = collections.deque(maxlen=HISTORY_PER_RESOURCE)
        self.watchers: set[Watcher] = set()
        self._sorted: list[str] | None = None
        # Revision below which history is incomplete for this resource.
        self.history_floor = 0
        # Owner uid -> {key: blockOwnerDeletion} of the objects whose
        # ownerReferences name it: deleting an owner asks whether it has
        # dependents, which must not cost a scan of every object.
        self.dependents: dict[str, dict[str, bool]] = {}
        self._owners: dict[str, tuple[tuple[str, bool], ...]] = {}

    def apply(self, event: CacheEvent) -> None:
        key = event.entry.key
        if event.type == "DELETED":
            self.objects.pop(key, None)
            self._sorted = None
            self._index_owners(key, None)
        else:
            if key not in self.objects:
                self._sorted = None
            self.objects[key] = event.entry
            self._index_owners(key, event.entry.obj)
        if len(self.history) == self.history.maxlen:
            self.history_floor = self.history[0].rev
        self.history.append(event)
        for watcher in list(self.watchers):
            watcher.offer(event)

    def _index_owners(self, key: str, obj: dict[str, Any] | None) -> None:
        for uid, _ in self._owners.pop(key, ()):
            held = self.dependents.get(uid)
            if held is not None:
                held.pop(key, None)
                if not held:
                    del self.dependents[uid]
        refs = (obj.get("metadata") or {}).get("ownerReferences") if obj is not None else None
        if not refs or not isinstance(refs, list):
            return
        owners = tuple(
            (str(ref["uid"]), bool(ref.get("blockOwnerDeletion")))
            for ref in refs
            if isinstance(ref, dict) and ref.get("uid")
        )
        if owners:
            self._owners[key] = owners
            for uid, blocking in owners:
                held = self.dependents.setdefault(uid, {})
                held[key] = held.get(key, False) or blocking

    def sorted_keys(self) -> list[str]:
        if self._sorted is None:
            self._sorted = sorted(self.objects)
        return self._sorted

    def iter_prefix(self, prefix: str, start_after: str = "") -> Iterator[Entry]:
        import bisect

        keys = self.sorted_keys()
        start = max(prefix, start_after)
        i = bisect.bisect_left(keys, start)
        if start_after and i < len(keys) and keys[i] == start_after:
            i += 1
        for key in keys[i:]:
            if not key.startswith(prefix):
                break
            entry = self.objects.get(key)
            if entry is not None:
                yield entry

    def watch(self, key_prefix: str, predicate: Predicate | None, since: int | None) -> Watcher:
        """Open a watch. ``since`` None: no replay; else replay history after it.

        Registration and replay happen without an await in between, so no event
        can fall between them.
        """
        watcher = Watcher(self, key_prefix, predicate)
        if since is not None:
            if since < self.history_floor:
                raise WatchGone(f"too old resource version: {since} ({self.history_floor + 1})")
            for event in self.history:
                if event.rev > since:
                    watcher.offer(event)
        self.watchers.add(watcher)
        return watcher


def decode(kv: backends.KeyValue, revision: int | None = None) -> Entry:
    return adopt(kv, orjson.loads(kv.value), revision)


def adopt(
    kv: backends.KeyValue,
    obj: dict[str, Any],
    revision: int | None = None,
    *,
    remember: bool = False,
) -> Entry:
    """The entry of ``kv`` whose decoded form is ``obj``, which the cache now owns.

    ``obj`` is what ``kv.value`` encodes (the store writes objects without
    their resourceVersion), so its JSON is those bytes with the
    resourceVersion put in, not a second encoding of the whole object.

    ``remember``: its field sets are the store's own, written again and again,
    so they are remembered by identity (a decoded one is never seen again)."""
    rev = revision if revision is not None else kv.mod_revision
    metadata = obj.setdefault("metadata", {})
    metadata["resourceVersion"] = str(rev)
    raw = with_resource_version(kv.value, obj, str(rev)) or encode(obj)
    managed = metadata.get("managedFields")
    if isinstance(managed, list):
        for item in managed:
            if isinstance(item, dict) and isinstance(item.get("fieldsV1"), dict):
                item["fieldsV1"] = _shared_fields(item["fieldsV1"], remember)
    return Entry(kv.key, obj, raw, rev)


def encode(obj: dict[str, Any]) -> bytes:
    """The JSON the cache keeps for ``obj``, in bytes of its exact size:
    orjson's own answer keeps its growth buffer (measured: 21,000 pods'
    JSON kept took 163 MiB as orjson gave it, 61 MiB copied)."""
    return memoryview(orjson.dumps(obj)).tobytes()


def with_resource_version(data: bytes, obj: dict[str, Any], version: str) -> bytes | None:
    """``data`` (the JSON of ``obj`` without ``metadata.resourceVersion``)
    with it put first in ``metadata``; None when ``data`` does not have the
    shape ``obj`` says it has (then the caller encodes ``obj``)."""
    head: dict[str, Any] = {}
    for key, value in obj.items():
        if key == "metadata":
            break
        head[key] = value
    else:
        return None
    try:
        # The keys before metadata are short (apiVersion, kind).
        prefix = orjson.dumps(head)[:-1] + b"," if head else b"{"
    except TypeError:
        return None
    opening = prefix + b'"metadata":{'
    if not data.startswith(opening) or b'"resourceVersion"' in data:
        return None  # (a field of that name elsewhere, an Event's say, costs an encode)
    field = b'"resourceVersion":' + orjson.dumps(version)
    rest = memoryview(data)[len(opening) :]
    # One copy, of the exact size (see ``encode``).
    closing = data[len(opening) : len(opening) + 1] == b"}"  # metadata is empty
    return b"".join((opening, field, b"" if closing else b",", rest))


# Field sets of managedFields, one object per distinct content. The pods of one
# workload carry the same few, and as dicts they are a third of a pod's memory.
_FIELDS: memos.BoundedMemo[bytes, dict[str, Any]] = memos.BoundedMemo(20_000)


def _shared_fields(fields: dict[str, Any], remember: bool = False) -> dict[str, Any]:
    # The store's writes hand over the same few encoded field sets again and
    # again: known by identity, they need no digest.
    known = _KNOWN.get(fields)
    if known is not None:
        return known
    # A 128-bit digest as the key: the JSON itself would cost as much as it saves.
    key = hashlib.blake2b(orjson.dumps(fields), digest_size=16).digest()
    found = _FIELDS.get(key)
    if found is None:
        if _FIELDS.full():
            _KNOWN.clear()
        found = _FIELDS.put(key, fields)
    if remember:
        _KNOWN.put(fields, found)
    return found


# Field sets seen, by identity: the shared one equal to each.
_KNOWN: memos.IdentityMemo[dict[str, Any], dict[str, Any]] = memos.IdentityMemo(20_000)


def split_key(key: str) -> tuple[str, str]:
    """``/registry/<group>/<plural>/...`` → (group, plural)."""
    parts = key.split("/", 4)
    return parts[2], parts[3]


class Cacher:
    """Feeds every resource cache from one backend watch."""

    def __init__(self, backend: backends.Backend) -> None:
        self.backend = backend
        self.caches: dict[tuple[str, str], ResourceCache] = {}
        self.revision = 0
        self._changed = asyncio.Condition()
        self._task: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()
        self.on_event: list[Callable[[str, str, CacheEvent], None]] = []
        # Objects the store is writing, by key, with the bytes it writes: the
        # event of that write takes the object instead of decoding the bytes
        # again (a decode was a tenth of the process's CPU at 10,000 pods).
        self._handed: dict[str, tuple[bytes, dict[str, Any]]] = {}

    def hand_over(self, key: str, data: bytes, obj: dict[str, Any]) -> None:
        """``obj`` is what ``data``, about to be written at ``key``, encodes.

        From now on it is read-only: the cache may hold it as the key's
        object (with the write's resourceVersion set in it). A backend whose
        events carry other bytes objects (etcd) only costs a decode."""
        self._handed[key] = (data, obj)

    def take_back(self, key: str, data: bytes) -> None:
        """The write of ``data`` failed: forget what was handed over for it."""
        handed = self._handed.get(key)
        if handed is not None and handed[0] is data:
            del self._handed[key]

    @contextlib.contextmanager
    def handing_over(self, key: str, data: bytes, obj: dict[str, Any]) -> Iterator[None]:
        """``hand_over`` for the write inside; taken back if the write fails."""
        self.hand_over(key, data, obj)
        try:
            yield
        except BaseException:
            self.take_back(key, data)
            raise

    def cache(self, group: str, plural: str) -> ResourceCache:
        found = self.caches.get((group, plural))
        if found is None:
            found = ResourceCache(f"{REGISTRY_PREFIX}{group}/{plural}/")
            found.history_floor = self.revision
            self.caches[(group, plural)] = found
        return found

    async def start(self) -> None:
        listing = await self.backend.list(REGISTRY_PREFIX)
        for kv in listing.items:
            group, plural = split_key(kv.key)
            entry = decode(kv)
            cache = self.cache(group, plural)
            cache.objects[kv.key] = entry
            cache._sorted = None
        self.revision = listing.revision
        for cache in self.caches.values():
            cache.history_floor = self.revision
        self._task = asyncio.create_task(self._run(listing.revision), name="watch-cache")
        self.ready.set()

    def verify(self) -> list[str]:
        """Keys whose cached object no longer matches its stored JSON.

        In-process clients are handed the cache's own objects, read-only; a
        component that writes to one corrupts what everyone reads, so tests
        (and ``NODELESS_CHECK_CACHE=1 nodeless up`` at exit) look for it."""
        return [
            key
            for cache in self.caches.values()
            for key, entry in cache.objects.items()
            if orjson.loads(entry.raw) != entry.obj
        ]

    def close_watchers(self) -> None:
        for cache in self.caches.values():
            for watcher in list(cache.watchers):
                watcher.close()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for cache in self.caches.values():
            for watcher in list(cache.watchers):
                watcher.close()

    async def _run(self, since: int) -> None:
        while True:
            try:
                async for batch in self.backend.watch(REGISTRY_PREFIX, since):
                    for ev in batch:
                        self._apply(ev)
                        since = ev.kv.mod_revision
                    async with self._changed:
                        self._changed.notify_all()
                return
            except asyncio.CancelledError:
                raise
            except backends.CompactedError:
                # History we needed is gone: re-list and turn the difference into
                # events; watchers older than now will get 410 and re-list too.
                log.warning("watch cache fell behind compaction at %d; re-listing", since)
                since = await self._relist()
            except Exception:
                log.exception("watch cache lost its store watch; resuming from %d", since)
                await asyncio.sleep(0.5)

    async def _relist(self) -> int:
        listing = await self.backend.list(REGISTRY_PREFIX)
        seen: set[str] = set()
        rev = listing.revision
        for kv in listing.items:
            seen.add(kv.key)
            group, plural = split_key(kv.key)
            cache = self.cache(group, plural)
            prev = cache.objects.get(kv.key)
            if prev is None or prev.rev != kv.mod_revision:
                cache.apply(CacheEvent("MODIFIED" if prev else "ADDED", decode(kv), prev))
        for cache in self.caches.values():
            for key in [k for k in cache.objects if k not in seen]:
                prev = cache.objects[key]
                obj = dict(
                    prev.obj, metadata=dict(prev.obj.get("metadata", {}), resourceVersion=str(rev))
                )
                cache.apply(CacheEvent("DELETED", Entry(key, obj, encode(obj), rev), prev))
            cache.history.clear()
            cache.history_floor = rev
        self.revision = rev
        async with self._changed:
            self._changed.notify_all()
        return rev

    def _apply(self, ev: backends.Event) -> None:
        group, plural = split_key(ev.kv.key)
        cache = self.cache(group, plural)
        rev = ev.kv.mod_revision
        prev = cache.objects.get(ev.kv.key)
        # Any event of the key ends what was handed over for it: a write
        # still in flight then costs one decode, and nothing is kept.
        handed = self._handed.pop(ev.kv.key, None)
        if ev.type is backends.EventType.DELETE:
            if prev is not None:
                obj = dict(prev.obj)
                obj["metadata"] = dict(obj.get("metadata", {}), resourceVersion=str(rev))
                entry = Entry(ev.kv.key, obj, encode(obj), rev)
            else:
                entry = decode(ev.kv, rev)
            event = CacheEvent("DELETED", entry, prev)
        else:
            if handed is not None and handed[0] is ev.kv.value:
                entry = adopt(ev.kv, handed[1], remember=True)
            else:
                entry = decode(ev.kv)
            event = CacheEvent("MODIFIED" if prev is not None else "ADDED", entry, prev)
        self.revision = rev
        cache.apply(event)
        for callback in self.on_event:
            try:
                callback(group, plural, event)
            except Exception:
                log.exception("watch cache callback failed")
        if prev is not None:
            # Watches have seen it (offer reads it at once); only history keeps it now.
            prev.release()

    async def wait_for(self, revision: int, timeout: float = 10.0) -> None:
        """Block until the cache has applied ``revision`` (read-your-writes)."""
        if self.revision >= revision:
            return
        # asyncio.timeout, not wait_for: no task per wait (every write may wait here)
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: self.revision >= revision)
