"""Go durations, one parser for Knative's annotations and the simulated
provider's commands."""

from __future__ import annotations

import pytest

from nodeless.api import durations


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("60s", 60.0),
        ("1m30s", 90.0),
        ("250ms", 0.25),
        (".5h", 1800.0),
        ("1h0m0.5s", 3600.5),
        ("1500us", 0.0015),
        ("2µs", 2e-6),
        (" 3s ", 3.0),
    ],
)
def test_go_durations_are_read_as_go_reads_them(text: str, seconds: float) -> None:
    assert durations.seconds(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "60", "1d", "s", "1.5", "-1s", "1 s", "1sm"])
def test_what_go_would_refuse_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        durations.seconds(text)


def test_more_units_can_be_allowed() -> None:
    assert durations.seconds("2d", {**durations.GO_UNITS, "d": 86400.0}) == 172800.0
