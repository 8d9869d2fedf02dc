"""The small runtime every controller (and the scheduler) is built on.

A ``Controller`` owns a work queue of object keys and runs workers that take a
key, call ``sync(key)`` and decide what happens next: success forgets the
key's backoff, an exception requeues it rate-limited, and ``done`` is always
called so the queue's one-worker-per-key rule holds. ``sync`` reads current
state and converges it; handlers only enqueue (DESIGN.md).

``Expectations`` is client-go's ControllerExpectations: after a controller
creates or deletes N objects it waits to *observe* those changes through its
informer before acting on the same key again, so a stale cache cannot make it
create or delete twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from nodeless import clocks
from nodeless.client import clients, workqueues

log = logging.getLogger(__name__)

Sync = Callable[[str], Awaitable[None]]
KeyFor = Callable[[clients.Object], str | None]

EXPECTATIONS_TIMEOUT = 300.0


class Informed(Protocol):
    """What a controller needs of an informer: subscribing and waiting for sync."""

    def add_handlers(
        self,
        on_add: Callable[[clients.Object], None] | None = None,
        on_update: Callable[[clients.Object, clients.Object], None] | None = None,
        on_delete: Callable[[clients.Object], None] | None = None,
    ) -> object: ...

    async def wait_synced(self) -> None: ...


class Controller:
    """N workers draining a ``WorkQueue[str]`` into an async ``sync(key)``.

    Use it directly with a ``sync`` callable, or subclass and override ``sync``.
    ``max_retries`` (None: forever) drops a key after that many failed syncs in
    a row, for controllers that prefer to wait for the next change.
    """

    def __init__(
        self,
        name: str,
        sync: Sync | None = None,
        *,
        workers: int = 1,
        clock: clocks.Clock | None = None,
        queue: workqueues.WorkQueue[str] | None = None,
        max_retries: int | None = None,
    ) -> None:
        self.name = name
        self.workers = workers
        self.max_retries = max_retries
        self.queue: workqueues.WorkQueue[str] = queue or workqueues.WorkQueue(
            clock=clock, name=name
        )
        self._sync = sync
        self._tasks: list[asyncio.Task[None]] = []
        self._runner: asyncio.Task[None] | None = None

    async def sync(self, key: str) -> None:
        """Converge the object behind ``key``; raise to be retried with backoff."""
        if self._sync is None:
            raise NotImplementedError(f"{self.name}: pass sync= or override sync()")
        await self._sync(key)

    # --- feeding the queue ---------------------------------------------------------

    def enqueue(self, obj: clients.Object) -> None:
        self.queue.add(clients.key_of(obj))

    def enqueue_after(self, obj: clients.Object, delay: float) -> None:
        self.queue.add_after(clients.key_of(obj), delay)

    def enqueue_changes(self, informer: Informed, key_for: KeyFor = clients.key_of) -> None:
        """Subscribe to ``informer`` so that every add, update and delete queues
        ``key_for(obj)`` (skipped when it returns None; both keys on an update
        that changes it), e.g. an owner's key for a dependent's changes."""

        def add(obj: clients.Object) -> None:
            key = key_for(obj)
            if key is not None:
                self.queue.add(key)

        def update(old: clients.Object, new: clients.Object) -> None:
            old_key, new_key = key_for(old), key_for(new)
            for key in (new_key, old_key) if old_key != new_key else (new_key,):
                if key is not None:
                    self.queue.add(key)

        informer.add_handlers(add, update, add)

    # --- workers ---------------------------------------------------------------------

    async def process_next(self) -> bool:
        """Take one key and sync it; False once the queue is shut down and empty."""
        try:
            key = await self.queue.get()
        except workqueues.ShutDown:
            return False
        try:
            await self.sync(key)
        except asyncio.CancelledError:
            raise
        except Exception:
            retries = self.queue.num_requeues(key)
            if self.max_retries is not None and retries >= self.max_retries:
                log.warning(
                    "%s: dropping %s after %d retries", self.name, key, retries, exc_info=True
                )
                self.queue.forget(key)
            else:
                log.warning(
                    "%s: sync %s failed (retry %d)", self.name, key, retries + 1, exc_info=True
                )
                self.queue.add_rate_limited(key)
        else:
            self.queue.forget(key)
        finally:
            self.queue.done(key)
        return True

    async def _worker(self) -> None:
        while await self.process_next():
            pass

    async def run(self, informers: Iterable[Informed] = ()) -> None:
        """Wait for the informers' caches, then run the workers until ``stop``."""
        for informer in informers:
            await informer.wait_synced()
        self._tasks = [
            asyncio.create_task(self._worker(), name=f"{self.name}-worker-{i}")
            for i in range(self.workers)
        ]
        try:
            await asyncio.gather(*self._tasks)
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self._tasks = []

    def start(self, informers: Iterable[Informed] = ()) -> asyncio.Task[None]:
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self.run(list(informers)), name=self.name)
        return self._runner

    async def stop(self) -> None:
        """Shut the queue and cancel the workers (a sync in flight is abandoned:
        the next run converges from current state anyway)."""
        self.queue.shutdown()
        runner, self._runner = self._runner, None
        if runner is not None and not runner.done():
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner


@dataclass
class _Expectation:
    adds: int
    dels: int
    timestamp: float
    # Deletions tracked by uid: observing the same uid twice (an update with a
    # deletionTimestamp, then the delete itself) must count once.
    uids: set[str] = field(default_factory=set)

    @property
    def fulfilled(self) -> bool:
        return self.adds <= 0 and self.dels <= 0


class Expectations:
    """Creations and deletions a controller is waiting to observe, per key.

    ``satisfied(key)`` is True when nothing is expected, everything expected was
    observed, or the expectations are older than ``timeout`` (five minutes,
    on the injected clock): a watch event that never comes must not wedge
    the controller forever.
    """

    def __init__(
        self, clock: clocks.Clock | None = None, timeout: float = EXPECTATIONS_TIMEOUT
    ) -> None:
        self._clock = clock or clocks.SystemClock()
        self.timeout = timeout
        self._by_key: dict[str, _Expectation] = {}

    def expect(self, key: str, adds: int = 0, dels: int = 0) -> None:
        """Replace the expectations for ``key`` (client-go SetExpectations)."""
        self._by_key[key] = _Expectation(adds, dels, self._clock.monotonic())

    def expect_creations(self, key: str, count: int) -> None:
        self.expect(key, adds=count)

    def expect_deletions(self, key: str, count: int) -> None:
        self.expect(key, dels=count)

    def expect_deletions_of(self, key: str, uids: Collection[str]) -> None:
        """Expect these objects to go; each uid counts once however often its
        deletion is observed."""
        self._by_key[key] = _Expectation(0, len(uids), self._clock.monotonic(), set(uids))

    def raise_expectations(self, key: str, adds: int = 0, dels: int = 0) -> None:
        found = self._by_key.get(key)
        if found is None:
            self.expect(key, adds, dels)
        else:
            found.adds += adds
            found.dels += dels

    def lower_expectations(self, key: str, adds: int = 0, dels: int = 0) -> None:
        found = self._by_key.get(key)
        if found is not None:
            found.adds -= adds
            found.dels -= dels

    def creation_observed(self, key: str) -> None:
        self.lower_expectations(key, adds=1)

    def deletion_observed(self, key: str, uid: str = "") -> None:
        """One expected deletion seen; with ``uid``, only if that uid was expected
        and not seen before."""
        found = self._by_key.get(key)
        if found is None:
            return
        if found.uids:
            if uid not in found.uids:
                return
            found.uids.discard(uid)
        found.dels -= 1

    def satisfied(self, key: str) -> bool:
        found = self._by_key.get(key)
        if found is None:
            return True
        if found.fulfilled:
            return True
        return self._clock.monotonic() - found.timestamp > self.timeout

    def pending(self, key: str) -> tuple[int, int] | None:
        """``(adds, dels)`` still expected, or None when none are recorded."""
        found = self._by_key.get(key)
        return None if found is None else (found.adds, found.dels)

    def forget(self, key: str) -> None:
        """Drop the record (the controller's object was deleted)."""
        self._by_key.pop(key, None)
