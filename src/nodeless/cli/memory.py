"""The cycle collector of a ``nodeless up`` process, tuned for a server that
keeps every object of the cluster in memory.

CPython runs a full collection, which walks every live object, each time
the heap has grown by a quarter. While ten thousand pods arrive that is a
pause of a fifth of a second and growing, again and again: measured, a
fifth of the process's CPU. Young collections cost too: counted by
allocations, they walk each new object of the cluster's state (twice:
young, then middle-aged) while it is being written, and find next to no
garbage there: for 10,000 simulated pods, 3.5 s in ~400 collections, 2.4 s
in 38 on a 2 s timer, freeing 517 objects in all.

So new objects are not walked young: every few seconds they are frozen
(moved out of the collected generations, which costs nothing per object),
and a full collection on a timer, every few minutes, unfreezes and walks
everything, freeing whatever cycles formed since. An allocation count far
above the default stays as a backstop for a loop that allocates without
yielding.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc

# Net new tracked objects that force a young collection between timer ticks
# (CPython's default is 700).
YOUNG_THRESHOLD = 1_000_000
# New objects are frozen at this interval.
YOUNG_EVERY_SECONDS = 2.0
# A full collection at this interval frees cycles among all objects.
FULL_EVERY_SECONDS = 300.0
# Never reached: full collections only come from the timer.
_NEVER = 1 << 30


class CycleCollector:
    def __init__(
        self, full_every: float = FULL_EVERY_SECONDS, young_every: float = YOUNG_EVERY_SECONDS
    ) -> None:
        self.full_every = full_every
        self.young_every = young_every
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
        loop = asyncio.get_running_loop()
        next_full = loop.time() + self.full_every
        while True:
            await asyncio.sleep(min(self.young_every, max(0.0, next_full - loop.time())))
            if loop.time() >= next_full:
                gc.unfreeze()
                gc.collect()
                next_full = loop.time() + self.full_every
            gc.freeze()
