"""Go durations ("60s", "1m30s", "250ms", ".5h"), as Kubernetes and Knative
write them in fields and annotations: one parser for every layer."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

GO_UNITS: Final[Mapping[str, float]] = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_NUMBER = r"(\d+(?:\.\d*)?|\.\d+)"


def seconds(text: str, units: Mapping[str, float] = GO_UNITS) -> float:
    """The seconds in ``text``, a sequence of numbers with ``units`` (Go's by
    default; ``time.ParseDuration`` without the sign); ValueError if it is
    not one."""
    text = text.strip()
    names = "|".join(sorted(map(re.escape, units), key=len, reverse=True))
    if not re.fullmatch(rf"(?:{_NUMBER}(?:{names}))+", text):
        raise ValueError(f"invalid duration {text!r}")
    return sum(float(n) * units[u] for n, u in re.findall(rf"{_NUMBER}({names})", text))
