"""Quantities parse exactly as Kubernetes' resource.Quantity reads them."""

from __future__ import annotations

from decimal import Decimal

import pytest

from nodeless.serverless import quantities


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("250m", Decimal("0.25")),
        ("1", Decimal(1)),
        ("0.5", Decimal("0.5")),
        ("2", Decimal(2)),
        (".5", Decimal("0.5")),
        ("5.", Decimal(5)),
        ("+3", Decimal(3)),
        ("-1", Decimal(-1)),
        ("100n", Decimal("1e-7")),
        ("20u", Decimal("0.00002")),
        ("512Mi", Decimal(512 * 2**20)),
        ("1Gi", Decimal(2**30)),
        ("1.5Gi", Decimal(3 * 2**29)),
        ("1Ki", Decimal(1024)),
        ("1Ti", Decimal(2**40)),
        ("1Pi", Decimal(2**50)),
        ("1Ei", Decimal(2**60)),
        ("1k", Decimal(1000)),
        ("1M", Decimal(10**6)),
        ("1G", Decimal(10**9)),
        ("1T", Decimal(10**12)),
        ("1P", Decimal(10**15)),
        ("1E", Decimal(10**18)),  # a bare E is exa ...
        ("1E3", Decimal(1000)),  # ... but E followed by digits is an exponent
        ("1e9", Decimal(10**9)),
        ("1e-3", Decimal("0.001")),
        ("1.5e+2", Decimal(150)),
        ("1073741824", Decimal(2**30)),
        (2, Decimal(2)),
        (0.5, Decimal("0.5")),
    ],
)
def test_quantity_parses_to_its_exact_value(text: object, value: Decimal) -> None:
    assert quantities.parse(text) == value


@pytest.mark.parametrize(
    "text",
    [
        "",
        "abc",
        "1 Gi",
        " 1",
        "1gi",
        "1KI",
        "1ki",
        "1e",
        "1.2.3",
        "Gi",
        "1Gib",
        "--1",
        ".",
        True,
        None,
        [1],
    ],
)
def test_malformed_quantity_is_rejected_with_upstreams_message(text: object) -> None:
    with pytest.raises(
        quantities.QuantityError, match="quantities must match the regular expression"
    ):
        quantities.parse(text)


@pytest.mark.parametrize(
    ("text", "gib"),
    [("1Gi", Decimal(1)), ("512Mi", Decimal("0.5")), ("1e9", Decimal("0.931322574615478515625"))],
)
def test_memory_converts_to_gib(text: str, gib: Decimal) -> None:
    assert quantities.to_gib(text) == gib
