"""Periodic compaction, so the log (and watch replay) keeps bounded history.

Like the apiserver's etcd compactor: keep the newest ``keep_revisions`` revisions,
forget older superseded versions. Watchers further behind than that get
``CompactedError`` and re-list.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from nodeless.storage import backends

_log = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[None]]


class Compactor:
    """An asyncio task compacting ``backend`` to ``current - keep_revisions`` every ``interval`` s.

    ``sleep`` is injectable so tests can drive the loop without waiting.
    """

    def __init__(
        self,
        backend: backends.Backend,
        *,
        interval: float = 300.0,
        keep_revisions: int = 10_000,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if interval <= 0 or keep_revisions < 0:
            raise ValueError("interval must be positive and keep_revisions not negative")
        self._backend = backend
        self._interval = interval
        self._keep = keep_revisions
        self._sleep = sleep
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the background task (idempotent)."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self.run(), name="storage-compactor")

    async def stop(self) -> None:
        """Cancel the background task and wait for it to end."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        await asyncio.wait([task])

    async def compact_once(self) -> int | None:
        """Compact now if there is enough history; returns the new compacted revision."""
        target = await self._backend.current_revision() - self._keep
        if target <= await self._backend.compacted_revision():
            return None
        await self._backend.compact(target)
        return target

    async def run(self) -> None:
        """Sleep, compact, repeat until cancelled; a failed round is logged and retried."""
        while True:
            await self._sleep(self._interval)
            try:
                compacted = await self.compact_once()
            except backends.BackendClosedError:
                return
            except Exception:
                _log.exception("storage compaction failed")
                continue
            if compacted is not None:
                _log.debug("storage compacted to revision %d", compacted)
