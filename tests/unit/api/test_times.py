"""API times: RFC 3339 in UTC whatever the zone given, naive taken as UTC."""

from __future__ import annotations

import datetime

from nodeless.api import times

MOMENT = datetime.datetime(2026, 11, 27, 10, 30, 5, 123456, tzinfo=datetime.UTC)


def test_times_are_utc_to_the_second_or_the_microsecond() -> None:
    east = MOMENT.astimezone(datetime.timezone(datetime.timedelta(hours=8)))

    assert times.rfc3339(east) == "2026-11-27T10:30:05Z"
    assert times.rfc3339_micro(east) == "2026-11-27T10:30:05.123456Z"


def test_a_naive_time_is_taken_as_utc() -> None:
    naive = MOMENT.replace(tzinfo=None)

    assert times.rfc3339(naive) == "2026-11-27T10:30:05Z"
    assert times.rfc3339_micro(naive) == "2026-11-27T10:30:05.123456Z"


def test_each_second_is_its_own_text() -> None:
    later = MOMENT + datetime.timedelta(seconds=1)

    assert [times.rfc3339(MOMENT), times.rfc3339(later)] == [
        "2026-11-27T10:30:05Z",
        "2026-11-27T10:30:06Z",
    ]
