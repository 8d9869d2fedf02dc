"""The event recorder keeps client-go's correlator: spam filter and aggregation."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from nodeless import clocks
from nodeless.client import events


class Sink:
    """Just the two calls the recorder makes, kept for inspection."""

    def __init__(self) -> None:
        self.created: list[dict[str, Any]] = []
        self.patched: list[dict[str, Any]] = []

    async def create(self, resource: Any, obj: dict[str, Any], options: Any = None) -> Any:
        self.created.append(obj)
        return obj

    async def patch(self, resource: Any, namespace: str, name: str, patch: Any, **_: Any) -> Any:
        self.patched.append(patch)
        return patch


RS = {
    "apiVersion": "apps/v1",
    "kind": "ReplicaSet",
    "metadata": {"name": "web", "namespace": "ns", "uid": "u1"},
}


@pytest.fixture
async def recorder() -> AsyncIterator[tuple[events.EventRecorder, Sink, clocks.FakeClock]]:
    sink = Sink()
    clock = clocks.FakeClock()
    rec = events.EventRecorder(sink, "test", clock)  # type: ignore[arg-type]
    rec.start()
    yield rec, sink, clock
    await rec.stop()


async def test_similar_events_past_ten_are_combined_into_one_growing_event(
    recorder: tuple[events.EventRecorder, Sink, clocks.FakeClock],
) -> None:
    rec, sink, _ = recorder
    for i in range(15):
        rec.record(RS, "Normal", "SuccessfulCreate", f"Created pod: web-{i}")
    await rec.flush()
    messages = [e["message"] for e in sink.created]
    assert messages[:10] == [f"Created pod: web-{i}" for i in range(10)]
    assert messages[10:] == ["(combined from similar events): Created pod: web-10"]
    assert [p["count"] for p in sink.patched] == [2, 3, 4, 5]
    assert sink.patched[-1]["message"] == "(combined from similar events): Created pod: web-14"


async def test_an_object_gets_25_events_then_one_per_five_minutes(
    recorder: tuple[events.EventRecorder, Sink, clocks.FakeClock],
) -> None:
    rec, sink, clock = recorder
    for i in range(40):
        rec.record(RS, "Normal", f"Reason{i}", "same message")
    await rec.flush()
    assert len(sink.created) == events.SPAM_BURST
    assert rec.dropped == 40 - events.SPAM_BURST
    await clock.advance(events.SPAM_REFILL_SECONDS)
    rec.record(RS, "Normal", "Later", "same message")
    rec.record(RS, "Normal", "TooSoon", "same message")
    await rec.flush()
    assert [e["reason"] for e in sink.created[events.SPAM_BURST :]] == ["Later"]


async def test_other_objects_have_their_own_budget(
    recorder: tuple[events.EventRecorder, Sink, clocks.FakeClock],
) -> None:
    rec, sink, _ = recorder
    for i in range(30):
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"p{i}", "uid": f"u{i}"}}
        rec.record(pod, "Normal", "Scheduled", "assigned")
    await rec.flush()
    assert len(sink.created) == 30
