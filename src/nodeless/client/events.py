"""Recording core/v1 Events about objects, as client-go's recorder does.

Events are written from a bounded background queue so that recording never
slows the caller's work; a repeat of the same (object, reason, message)
within ten minutes bumps ``count`` and ``lastTimestamp`` instead of adding a
new Event. Under overload events are dropped, as upstream drops them.

client-go's event correlator is kept too, so a busy object does not flood
the store: per source and object a token bucket (25 events, then one per
five minutes) drops the rest, and after ten events with one reason but
different messages within ten minutes, the others become one Event whose
message starts "(combined from similar events): " and whose count grows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from dataclasses import dataclass
from typing import Any

from nodeless import clocks
from nodeless.api import errors, times
from nodeless.client import clients

log = logging.getLogger(__name__)

EVENTS = clients.ResourceRef("", "v1", "events", True, "Event")
QUEUE_LIMIT = 10_000
AGGREGATE_SECONDS = 600.0
# client-go's defaults (tools/record/events_cache.go).
SPAM_BURST = 25
SPAM_REFILL_SECONDS = 300.0
AGGREGATE_MAX_EVENTS = 10
COMBINED = "(combined from similar events): "
_MAX_TRACKED = 4096
# Events are written and forgotten: no copy of what the server answers.
_DROPPED = clients.WriteOptions(keep_result=False)


@dataclass
class _Bucket:
    tokens: float
    at: float


@dataclass
class _Similar:
    messages: set[str]
    since: float


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
        self._queue: asyncio.Queue[tuple[dict[str, Any], str, str, str, str]] = asyncio.Queue()
        self._recent: dict[tuple[str, str, str], _Recorded] = {}
        self._buckets: dict[tuple[str, ...], _Bucket] = {}
        self._similar: dict[tuple[str, ...], _Similar] = {}
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
        meta = obj.get("metadata") or {}
        involved = (
            str(obj.get("apiVersion", "")),
            str(obj.get("kind", "")),
            str(meta.get("namespace", "")),
            str(meta.get("name", "")),
            str(meta.get("uid", "")),
        )
        if self._queue.qsize() >= QUEUE_LIMIT or not self._allowed(involved):
            self.dropped += 1
            return
        message, same_as = self._aggregated(involved, event_type, reason, message)
        self._queue.put_nowait((obj, event_type, reason, message, same_as))

    def _allowed(self, involved: tuple[str, ...]) -> bool:
        """client-go's EventSourceObjectSpamFilter: a token bucket per object."""
        now = self.clock.monotonic()
        bucket = self._buckets.get(involved)
        if bucket is None:
            if len(self._buckets) >= _MAX_TRACKED:
                self._buckets.clear()
            bucket = self._buckets[involved] = _Bucket(float(SPAM_BURST), now)
        else:
            refill = (now - bucket.at) / SPAM_REFILL_SECONDS
            bucket.tokens = min(float(SPAM_BURST), bucket.tokens + refill)
            bucket.at = now
        if bucket.tokens < 1.0:
            return False
        bucket.tokens -= 1.0
        return True

    def _aggregated(
        self, involved: tuple[str, ...], event_type: str, reason: str, message: str
    ) -> tuple[str, str]:
        """client-go's EventAggregator: the message to write, and the message
        an Event to bump instead of creating one is keyed by."""
        key = (*involved, event_type, reason)
        now = self.clock.monotonic()
        similar = self._similar.get(key)
        if similar is None or now - similar.since > AGGREGATE_SECONDS:
            if len(self._similar) >= _MAX_TRACKED:
                self._similar.clear()
            similar = self._similar[key] = _Similar(set(), now)
        if message in similar.messages or len(similar.messages) < AGGREGATE_MAX_EVENTS:
            similar.messages.add(message)
            return message, message
        return COMBINED + message, COMBINED

    async def _run(self) -> None:
        while True:
            obj, event_type, reason, message, same_as = await self._queue.get()
            try:
                await self._write(obj, event_type, reason, message, same_as)
            except errors.StatusError as err:
                if err.code not in (403, 404, 409):
                    log.warning("could not record event %s: %s", reason, err.message)
            except Exception:
                log.exception("could not record event %s", reason)
            finally:
                self._queue.task_done()

    async def _write(
        self, obj: dict[str, Any], event_type: str, reason: str, message: str, same_as: str
    ) -> None:
        meta = obj.get("metadata") or {}
        namespace = meta.get("namespace") or "default"
        key = (str(meta.get("uid", "")), reason, same_as)
        now = times.rfc3339(self.clock.now())
        mono = self.clock.monotonic()
        seen = self._recent.get(key)
        if seen is not None and mono - seen.at < AGGREGATE_SECONDS:
            seen.count += 1
            seen.at = mono
            try:
                await self.client.patch(
                    EVENTS,
                    seen.namespace,
                    seen.name,
                    {"count": seen.count, "lastTimestamp": now, "message": message},
                    options=_DROPPED,
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
        await self.client.create(EVENTS, event, _DROPPED)
        self._recent[key] = _Recorded(name, namespace, 1, now, mono)
