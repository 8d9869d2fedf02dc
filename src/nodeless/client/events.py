"""Recording core/v1 Events about objects, as client-go's recorder does.

Events are written from a bounded background queue so that recording never
slows the caller's work; a repeat of the same (object, reason, message)
within ten minutes bumps ``count`` and ``lastTimestamp`` instead of adding a
new Event. Under overload events are dropped, as upstream drops them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from dataclasses import dataclass
from typing import Any

from nodeless import clocks
from nodeless.api import errors
from nodeless.client import clients

log = logging.getLogger(__name__)

EVENTS = clients.ResourceRef("", "v1", "events", True, "Event")
QUEUE_LIMIT = 10_000
AGGREGATE_SECONDS = 600.0


@dataclass
class _Recorded:
    name: str
    namespace: str
    count: int
    first: str
    at: float


class EventRecorder:
    def __init__(
        self,
        client: clients.ApiClient,
        component: str,
        clock: clocks.Clock | None = None,
        host: str = "",
    ) -> None:
        self.client = client
        self.component = component
        self.host = host
        self.clock = clock or clocks.SystemClock()
        self._queue: asyncio.Queue[tuple[dict[str, Any], str, str, str]] = asyncio.Queue()
        self._recent: dict[tuple[str, str, str], _Recorded] = {}
        self._task: asyncio.Task[None] | None = None
        self.dropped = 0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"events-{self.component}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def flush(self) -> None:
        """Wait until everything queued so far is written (for tests)."""
        await self._queue.join()

    def record(self, obj: dict[str, Any], event_type: str, reason: str, message: str) -> None:
        if self._queue.qsize() >= QUEUE_LIMIT:
            self.dropped += 1
            return
        self._queue.put_nowait((obj, event_type, reason, message))

    async def _run(self) -> None:
        while True:
            obj, event_type, reason, message = await self._queue.get()
            try:
                await self._write(obj, event_type, reason, message)
            except errors.StatusError as err:
                if err.code not in (403, 404, 409):
                    log.warning("could not record event %s: %s", reason, err.message)
            except Exception:
                log.exception("could not record event %s", reason)
            finally:
                self._queue.task_done()

    async def _write(self, obj: dict[str, Any], event_type: str, reason: str, message: str) -> None:
        meta = obj.get("metadata") or {}
        namespace = meta.get("namespace") or "default"
        key = (str(meta.get("uid", "")), reason, message)
        now = self.clock.now().strftime("%Y-%m-%dT%H:%M:%SZ")
        mono = self.clock.monotonic()
        seen = self._recent.get(key)
        if seen is not None and mono - seen.at < AGGREGATE_SECONDS:
            seen.count += 1
            seen.at = mono
            try:
                await self.client.patch(
                    EVENTS, seen.namespace, seen.name, {"count": seen.count, "lastTimestamp": now}
                )
                return
            except errors.StatusError as err:
                if err.code != 404:
                    raise
        if len(self._recent) > 50_000:
            self._recent.clear()
        name = f"{meta.get('name', 'unknown')}.{secrets.token_hex(8)}"
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": namespace},
            "involvedObject": {
                "apiVersion": obj.get("apiVersion", ""),
                "kind": obj.get("kind", ""),
                "name": meta.get("name", ""),
                "namespace": meta.get("namespace", ""),
                "uid": meta.get("uid", ""),
                "resourceVersion": meta.get("resourceVersion", ""),
            },
            "reason": reason,
            "message": message,
            "type": event_type,
            "count": 1,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "source": {"component": self.component, **({"host": self.host} if self.host else {})},
            "reportingComponent": self.component,
            "reportingInstance": self.host or self.component,
        }
        await self.client.create(EVENTS, event)
        self._recent[key] = _Recorded(name, namespace, 1, now, mono)
