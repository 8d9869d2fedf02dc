"""Times as the Kubernetes API writes them: RFC 3339 in UTC, to the second
(``metav1.Time``) or to the microsecond (``metav1.MicroTime``). One place
for every layer; a naive datetime is taken as UTC."""

from __future__ import annotations

import datetime

_SECONDS: dict[int, str] = {}


def _utc(moment: datetime.datetime) -> datetime.datetime:
    if moment.tzinfo is None:
        return moment.replace(tzinfo=datetime.UTC)
    return moment.astimezone(datetime.UTC)


def rfc3339(moment: datetime.datetime) -> str:
    """``2026-11-27T10:30:00Z``."""
    utc = _utc(moment)
    # Every write stamps a time; strftime once per second is enough.
    second = int(utc.timestamp())
    text = _SECONDS.get(second)
    if text is None:
        if len(_SECONDS) > 64:
            _SECONDS.clear()
        text = _SECONDS[second] = utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    return text


def rfc3339_micro(moment: datetime.datetime) -> str:
    """``2026-11-27T10:30:00.123456Z``."""
    return _utc(moment).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
