"""The cycle collector of a ``nodeless up`` process, tuned for a server that
keeps every object of the cluster in memory.

CPython runs a full collection, which walks every live object, each time
the heap has grown by a quarter. While ten thousand pods arrive that is a
pause of a fifth of a second and growing, again and again: measured, a
fifth of the process's CPU. Here young collections stay automatic (sparser),
full ones run on a timer, and what exists once start-up is done (modules,
the upstream schemas) is frozen out of every collection.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc

# Allocations between young collections (CPython's default is 700).
YOUNG_THRESHOLD = 20_000
# A full collection at this interval frees cycles among long-lived objects.
FULL_EVERY_SECONDS = 300.0
# Never reached: full collections only come from the timer.
_NEVER = 1 << 30


class CycleCollector:
    def __init__(self, full_every: float = FULL_EVERY_SECONDS) -> None:
        self.full_every = full_every
        self._saved = gc.get_threshold()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        gc.collect()
        gc.freeze()
        gc.set_threshold(YOUNG_THRESHOLD, 10, _NEVER)
        self._task = asyncio.create_task(self._run(), name="cycle-collector")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        gc.set_threshold(*self._saved)
        gc.unfreeze()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.full_every)
            gc.collect()
