"""The controller work queue, with client-go's semantics.

Informer handlers only enqueue object keys; workers take keys and converge.
The rules that make this safe are client-go's:

- a key added while already queued is queued once (changes coalesce);
- a key added while a worker processes it is queued again only after the
  worker calls ``done``, so one key is never processed by two workers at once;
- ``add_after`` delays an add on the injected clock (the earliest pending
  delay for a key wins);
- ``add_rate_limited`` requeues with per-key exponential backoff (5 ms doubling
  to 1000 s) combined with an overall token bucket (10/s, burst 100), like
  ``workqueue.DefaultControllerRateLimiter``; ``forget`` resets a key's backoff.
"""

from __future__ import annotations

import asyncio
import collections
import math
from collections.abc import Hashable
from typing import Generic, Protocol, TypeVar

from nodeless import clocks

T = TypeVar("T", bound=Hashable)
K = TypeVar("K", bound=Hashable, contravariant=True)

DEFAULT_BASE_DELAY = 0.005
DEFAULT_MAX_DELAY = 1000.0
DEFAULT_QPS = 10.0
DEFAULT_BURST = 100


class ShutDown(Exception):
    """The queue was shut down and has nothing left to hand out."""


class RateLimiter(Protocol[K]):
    """How long an item should wait before its next retry."""

    def when(self, item: K) -> float:
        """Record one more failure of ``item`` and return the delay before retrying it."""
        ...

    def forget(self, item: K) -> None:
        """Stop tracking ``item``: its next failure starts from the base delay."""
        ...

    def num_requeues(self, item: K) -> int: ...


class ItemExponentialRateLimiter(Generic[T]):
    """Per-item backoff: ``base * 2**failures``, capped (client-go's
    ItemExponentialFailureRateLimiter)."""

    def __init__(
        self, base_delay: float = DEFAULT_BASE_DELAY, max_delay: float = DEFAULT_MAX_DELAY
    ) -> None:
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._failures: dict[T, int] = {}

    def when(self, item: T) -> float:
        failures = self._failures.get(item, 0)
        self._failures[item] = failures + 1
        # ldexp(base, n) is base * 2**n without building huge integers.
        return min(math.ldexp(self.base_delay, min(failures, 1000)), self.max_delay)

    def forget(self, item: T) -> None:
        self._failures.pop(item, None)

    def num_requeues(self, item: T) -> int:
        return self._failures.get(item, 0)


class BucketRateLimiter(Generic[T]):
    """An overall token bucket: bounds the retry rate of all items together, so a
    burst of failures cannot hammer the API (client-go's BucketRateLimiter)."""

    def __init__(
        self,
        qps: float = DEFAULT_QPS,
        burst: int = DEFAULT_BURST,
        clock: clocks.Clock | None = None,
    ) -> None:
        self.qps = qps
        self.burst = burst
        self._clock = clock or clocks.SystemClock()
        self._tokens = float(burst)
        self._last = self._clock.monotonic()

    def when(self, item: T) -> float:
        now = self._clock.monotonic()
        self._tokens = min(float(self.burst), self._tokens + (now - self._last) * self.qps)
        self._last = now
        # Each call reserves one token, possibly one not yet refilled: the
        # delay is the time until that token exists.
        self._tokens -= 1.0
        return 0.0 if self._tokens >= 0 else -self._tokens / self.qps

    def forget(self, item: T) -> None:
        return None

    def num_requeues(self, item: T) -> int:
        return 0


class MaxOfRateLimiter(Generic[T]):
    """The longest delay any of several limiters asks for."""

    def __init__(self, *limiters: RateLimiter[T]) -> None:
        self.limiters = limiters

    def when(self, item: T) -> float:
        return max((limiter.when(item) for limiter in self.limiters), default=0.0)

    def forget(self, item: T) -> None:
        for limiter in self.limiters:
            limiter.forget(item)

    def num_requeues(self, item: T) -> int:
        return max((limiter.num_requeues(item) for limiter in self.limiters), default=0)


def default_controller_rate_limiter(clock: clocks.Clock | None = None) -> MaxOfRateLimiter[T]:
    """5 ms doubling to 1000 s per item, and at most 10 retries/s (burst 100) overall."""
    return MaxOfRateLimiter(
        ItemExponentialRateLimiter(DEFAULT_BASE_DELAY, DEFAULT_MAX_DELAY),
        BucketRateLimiter(DEFAULT_QPS, DEFAULT_BURST, clock),
    )


class WorkQueue(Generic[T]):
    """A deduplicating, delaying, rate-limited queue of keys for controller workers."""

    def __init__(
        self,
        *,
        clock: clocks.Clock | None = None,
        rate_limiter: RateLimiter[T] | None = None,
        name: str = "",
    ) -> None:
        self.name = name
        self._clock = clock or clocks.SystemClock()
        self._rate_limiter: RateLimiter[T] = rate_limiter or default_controller_rate_limiter(
            self._clock
        )
        self._queue: collections.deque[T] = collections.deque()
        # Items that need processing: queued, or re-added while being processed.
        self._dirty: set[T] = set()
        self._processing: set[T] = set()
        # Delayed adds: when each falls due, and the task sleeping until then.
        self._waiting: dict[T, tuple[float, asyncio.Task[None]]] = {}
        self._getters: list[asyncio.Future[None]] = []
        self._shutting_down = False

    # --- adding ---------------------------------------------------------------

    def add(self, item: T) -> None:
        """Queue ``item`` unless it is already queued; if a worker holds it, queue
        it again when the worker calls ``done``."""
        if self._shutting_down or item in self._dirty:
            return
        self._dirty.add(item)
        if item in self._processing:
            return
        self._queue.append(item)
        self._wake_getters()

    def add_after(self, item: T, delay: float) -> None:
        """Add ``item`` once ``delay`` seconds have passed on the clock; if it is
        already waiting, the earlier of the two times wins."""
        if self._shutting_down:
            return
        if delay <= 0:
            self.add(item)
            return
        ready_at = self._clock.monotonic() + delay
        waiting = self._waiting.get(item)
        if waiting is not None:
            if waiting[0] <= ready_at:
                return
            waiting[1].cancel()
        timer = asyncio.get_running_loop().create_task(self._add_when_due(item, delay))
        self._waiting[item] = (ready_at, timer)

    async def _add_when_due(self, item: T, delay: float) -> None:
        await self._clock.sleep(delay)
        current = self._waiting.get(item)
        if current is not None and current[1] is asyncio.current_task():
            del self._waiting[item]
            self.add(item)

    def add_rate_limited(self, item: T) -> None:
        """Requeue ``item`` after the rate limiter's delay (its backoff grows with
        each call until ``forget``)."""
        self.add_after(item, self._rate_limiter.when(item))

    def forget(self, item: T) -> None:
        """The item succeeded: reset its backoff (it is not removed from the queue)."""
        self._rate_limiter.forget(item)

    def num_requeues(self, item: T) -> int:
        return self._rate_limiter.num_requeues(item)

    # --- taking -----------------------------------------------------------------

    async def get(self) -> T:
        """Wait for an item and mark it as being processed; the caller must call
        ``done(item)`` afterwards. After ``shutdown`` the remaining items are
        still handed out, then ``ShutDown`` is raised."""
        while not self._queue:
            if self._shutting_down:
                raise ShutDown(self.name)
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._getters.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._getters:
                    self._getters.remove(waiter)
        item = self._queue.popleft()
        self._processing.add(item)
        self._dirty.discard(item)
        return item

    def done(self, item: T) -> None:
        """The worker finished ``item``; queue it again if it was re-added meanwhile."""
        self._processing.discard(item)
        if item in self._dirty:
            self._queue.append(item)
            self._wake_getters()

    # --- lifecycle and introspection ----------------------------------------------

    def shutdown(self) -> None:
        """Refuse new items, drop delayed ones, and let waiting getters finish."""
        self._shutting_down = True
        for _, timer in self._waiting.values():
            timer.cancel()
        self._waiting.clear()
        self._wake_getters()

    @property
    def shutting_down(self) -> bool:
        return self._shutting_down

    def __len__(self) -> int:
        """Items ready to be handed out (not those being processed or delayed)."""
        return len(self._queue)

    @property
    def processing(self) -> frozenset[T]:
        return frozenset(self._processing)

    @property
    def waiting(self) -> int:
        """Items scheduled by ``add_after`` that have not fallen due yet."""
        return len(self._waiting)

    def _wake_getters(self) -> None:
        # Every waiting getter re-checks the queue; a getter cancelled after being
        # woken therefore cannot swallow the wake-up another getter needed.
        for waiter in self._getters:
            if not waiter.done():
                waiter.set_result(None)
        self._getters.clear()
