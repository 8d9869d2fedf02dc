"""Informers: a local cache of one resource, kept current by list + watch.

Controllers read the cache instead of the API and learn of changes through
handlers that only enqueue keys (DESIGN.md: level-triggered controllers). The
informer's promise is client-go's: every change reaches the handlers once and
in order, across watch restarts. That holds because

- a watch resumes from the last resourceVersion seen (events and bookmarks);
- a watch that fails for any other reason than 410 resumes from there after
  backoff, and a 410 (history expired) makes the informer list again;
- a re-list is diffed against the cache: new keys are adds, changed
  resourceVersions are updates, keys that vanished are deletes delivered with
  the last state the cache held (client-go's DeletedFinalStateUnknown);
- an event not newer than the cached object is dropped, never replayed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Self

from nodeless import clocks
from nodeless.client import clients

log = logging.getLogger(__name__)

OnAdd = Callable[[clients.Object], None]
OnUpdate = Callable[[clients.Object, clients.Object], None]
OnDelete = Callable[[clients.Object], None]

DEFAULT_PAGE_SIZE = 500
INITIAL_BACKOFF = 0.8
MAX_BACKOFF = 30.0
# Watches are re-opened now and then, like client-go's 5-10 minute timeouts, so
# that a silently dead connection cannot hide changes forever.
WATCH_TIMEOUT_RANGE = (300, 600)


@dataclass(frozen=True)
class EventHandlers:
    """One subscriber's callbacks; any may be left out."""

    on_add: OnAdd | None = None
    on_update: OnUpdate | None = None
    on_delete: OnDelete | None = None


class Informer:
    """List then watch one resource, caching objects by ``namespace/name``.

    Objects in ``store`` and passed to handlers are shared: treat them as
    read-only and deep-copy before changing one to write it back.
    """

    def __init__(
        self,
        client: clients.ApiClient,
        resource: clients.ResourceRef,
        namespace: str = "",
        label_selector: str = "",
        field_selector: str = "",
        *,
        clock: clocks.Clock | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
        initial_backoff: float = INITIAL_BACKOFF,
        max_backoff: float = MAX_BACKOFF,
        rng: random.Random | None = None,
    ) -> None:
        self.client = client
        self.resource = resource
        self.namespace = namespace
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.store: dict[str, clients.Object] = {}
        # The revision the cache reflects; watches resume from here.
        self.resource_version = ""
        self._clock = clock or clocks.SystemClock()
        self._page_size = page_size
        self._initial_backoff = initial_backoff
        self._max_backoff = max_backoff
        self._rng = rng or random.Random()
        self._handlers: list[EventHandlers] = []
        self._synced = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        where = f" in {self.namespace}" if self.namespace else ""
        return f"<Informer {self.resource}{where}>"

    # --- subscribers and cache access ---------------------------------------------

    def add_handlers(
        self,
        on_add: OnAdd | None = None,
        on_update: OnUpdate | None = None,
        on_delete: OnDelete | None = None,
    ) -> EventHandlers:
        """Subscribe; handlers run synchronously, in subscription order, and should
        only enqueue. A late subscriber first gets an add for every cached object."""
        handlers = EventHandlers(on_add, on_update, on_delete)
        self._handlers.append(handlers)
        if on_add is not None:
            for obj in list(self.store.values()):
                _call(on_add, obj)
        return handlers

    def remove_handlers(self, handlers: EventHandlers) -> None:
        self._handlers.remove(handlers)

    def get(self, key: str) -> clients.Object | None:
        """The cached object for ``namespace/name`` (or ``name`` if cluster scoped)."""
        return self.store.get(key)

    def has_seen(self, resource_version: str) -> bool:
        """Whether this cache is at ``resource_version`` or past it: False when
        it is behind or the versions cannot be compared (they are opaque in
        general; this API server's are numbers)."""
        mine, theirs = _revision(self.resource_version), _revision(resource_version)
        return mine is not None and theirs is not None and mine >= theirs

    def objects(self, namespace: str | None = None) -> list[clients.Object]:
        """Cached objects, all or those of one namespace."""
        if namespace is None:
            return list(self.store.values())
        return [
            o
            for o in self.store.values()
            if (o.get("metadata") or {}).get("namespace", "") == namespace
        ]

    @property
    def has_synced(self) -> bool:
        """True once the first full list is in the cache."""
        return self._synced.is_set()

    async def wait_synced(self) -> None:
        await self._synced.wait()

    # --- lifecycle --------------------------------------------------------------------

    def start(self) -> asyncio.Task[None]:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self.run(), name=repr(self))
        return self._task

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def __aenter__(self) -> Self:
        self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def run(self) -> None:
        """List, then watch forever; re-list on 410, back off on failures."""
        need_list = True
        # Failures since the watch last delivered something; a successful list
        # alone does not reset it, so list-then-410 loops still back off.
        failures = 0
        gone_in_a_row = 0
        while True:
            try:
                if need_list:
                    await self._list_and_replace()
                    need_list = False
                if await self._watch():
                    failures = gone_in_a_row = 0
                    continue
                # The stream ended without a single event: count it as a failure
                # so that a server closing watches at once is not hammered.
                failures += 1
            except asyncio.CancelledError:
                raise
            except Exception as e:
                failures += 1
                if clients.is_gone(e):
                    log.info(
                        "%r: resourceVersion %s expired; listing again", self, self.resource_version
                    )
                    need_list = True
                    gone_in_a_row += 1
                    # A first 410 is routine (history moved on): re-list at once.
                    if gone_in_a_row == 1:
                        continue
                else:
                    log.warning("%r: %s failed: %s", self, "list" if need_list else "watch", e)
            await self._clock.sleep(self._backoff(failures))

    def _backoff(self, failures: int) -> float:
        delay = min(
            math.ldexp(self._initial_backoff, min(max(0, failures - 1), 64)), self._max_backoff
        )
        # Jitter spreads the reconnects of many informers after an apiserver restart.
        return delay * (1.0 + self._rng.random() * 0.5)

    # --- list and watch ---------------------------------------------------------------

    async def _list_and_replace(self) -> None:
        items: list[clients.Object] = []
        continue_token = ""
        resource_version = ""
        while True:
            page = await self.client.list(
                self.resource,
                self.namespace,
                label_selector=self.label_selector,
                field_selector=self.field_selector,
                limit=self._page_size,
                continue_token=continue_token,
            )
            items.extend(page.items)
            resource_version = resource_version or page.resource_version
            continue_token = page.continue_token
            if not continue_token:
                break
        self._replace(items, resource_version)

    def _replace(self, items: Iterable[clients.Object], resource_version: str) -> None:
        """Make the cache equal to a fresh list, telling handlers what changed."""
        fresh: dict[str, clients.Object] = {clients.key_of(o): o for o in items}
        for key, obj in fresh.items():
            old = self.store.get(key)
            if old is None:
                self.store[key] = obj
                self._notify_add(obj)
            elif clients.resource_version(old) != clients.resource_version(obj):
                self.store[key] = obj
                self._notify_update(old, obj)
        for key in [k for k in self.store if k not in fresh]:
            # Deleted while we were not watching: the final state is unknown, so
            # handlers get the last state we saw.
            gone = self.store.pop(key)
            self._notify_delete(gone)
        self.resource_version = resource_version
        self._synced.set()

    async def _watch(self) -> bool:
        """Follow one watch stream until it ends; True if it delivered anything."""
        progressed = False
        events = self.client.watch(
            self.resource,
            self.namespace,
            label_selector=self.label_selector,
            field_selector=self.field_selector,
            resource_version=self.resource_version,
            allow_bookmarks=True,
            timeout_seconds=self._rng.randint(*WATCH_TIMEOUT_RANGE),
        )
        async with contextlib.aclosing(events):
            async for event in events:
                self._apply(event)
                progressed = True
        return progressed

    def _apply(self, event: clients.WatchEvent) -> None:
        obj = event.object
        rv = event.resource_version
        if event.type != "BOOKMARK":
            key = clients.key_of(obj)
            old = self.store.get(key)
            if event.type == "DELETED":
                if old is not None and not _older(rv, clients.resource_version(old)):
                    del self.store[key]
                    self._notify_delete(obj)
            elif old is None:
                self.store[key] = obj
                self._notify_add(obj)
            elif _newer(rv, clients.resource_version(old)):
                self.store[key] = obj
                self._notify_update(old, obj)
        if rv and not _older(rv, self.resource_version):
            self.resource_version = rv

    # --- notification -------------------------------------------------------------------

    def _notify_add(self, obj: clients.Object) -> None:
        for handlers in list(self._handlers):
            if handlers.on_add is not None:
                _call(handlers.on_add, obj)

    def _notify_update(self, old: clients.Object, new: clients.Object) -> None:
        for handlers in list(self._handlers):
            if handlers.on_update is not None:
                _call(handlers.on_update, old, new)

    def _notify_delete(self, obj: clients.Object) -> None:
        for handlers in list(self._handlers):
            if handlers.on_delete is not None:
                _call(handlers.on_delete, obj)


def _call(handler: Callable[..., None], *args: clients.Object) -> None:
    # A failing handler must not stop the informer or starve other subscribers.
    try:
        handler(*args)
    except Exception:
        log.exception("informer handler %r failed", handler)


def _revision(rv: str) -> int | None:
    try:
        return int(rv)
    except ValueError:
        return None


def _newer(candidate: str, current: str) -> bool:
    """Whether ``candidate`` is a later revision; resourceVersions are opaque in
    general, so anything not comparable as a number counts as newer when it differs."""
    a, b = _revision(candidate), _revision(current)
    if a is None or b is None:
        return candidate != current
    return a > b


def _older(candidate: str, current: str) -> bool:
    a, b = _revision(candidate), _revision(current)
    return a is not None and b is not None and a < b


class InformerFactory:
    """One shared informer per resource, so that controllers watching the same
    kind (every workload controller watches pods) share one cache and one watch."""

    def __init__(self, client: clients.ApiClient, *, clock: clocks.Clock | None = None) -> None:
        self.client = client
        self.clock = clock
        self._informers: dict[clients.ResourceRef, Informer] = {}

    def informer(self, resource: clients.ResourceRef) -> Informer:
        found = self._informers.get(resource)
        if found is None:
            found = Informer(self.client, resource, clock=self.clock)
            self._informers[resource] = found
        return found

    def start(self) -> None:
        """Start every informer not yet running (informers may be added later)."""
        for informer in self._informers.values():
            informer.start()  # idempotent

    async def wait_synced(self) -> None:
        for informer in list(self._informers.values()):
            await informer.wait_synced()

    async def stop(self) -> None:
        for informer in self._informers.values():
            await informer.stop()
