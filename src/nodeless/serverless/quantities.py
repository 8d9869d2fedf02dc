"""Kubernetes resource quantities ("250m", "1.5Gi", "1e9") as exact decimals.

Sizing a pod adds up what its containers ask for and compares the sum with a
catalogue; a float would turn ``0.1 + 0.2`` CPUs into a wrong instance spec
at a boundary, so quantities are parsed into :class:`decimal.Decimal` with
the grammar of ``k8s.io/apimachinery/pkg/api/resource.Quantity``::

    <quantity>        ::= <signedNumber><suffix>
    <signedNumber>    ::= <number> | +<number> | -<number>
    <number>          ::= <digits> | <digits>.<digits> | <digits>. | .<digits>
    <suffix>          ::= <binarySI> | <decimalExponent> | <decimalSI>
    <binarySI>        ::= Ki | Mi | Gi | Ti | Pi | Ei
    <decimalSI>       ::= n | u | m | "" | k | M | G | T | P | E
    <decimalExponent> ::= "e" <signedNumber> | "E" <signedNumber>
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Final

GIB: Final = Decimal(2**30)

#: Upstream's own wording, so that a bad quantity reads as kubectl users know it.
FORMAT_MESSAGE: Final = (
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
)

_MULTIPLIERS: Final[dict[str, Decimal]] = {
    "": Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
    "Pi": Decimal(2**50),
    "Ei": Decimal(2**60),
}

# The exponent alternative comes before the bare "E" (exa) suffix so that
# "1E3" is a thousand while "1E" is 10^18, as upstream reads them.
_QUANTITY_RE: Final = re.compile(
    r"(?P<number>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))"
    r"(?:(?P<exponent>[eE][+-]?[0-9]+)|(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]))?",
    re.ASCII,
)


class QuantityError(ValueError):
    """A value that is not a Kubernetes quantity; the message is upstream's."""


def parse(value: object) -> Decimal:
    """The exact value of a quantity given as YAML/JSON text or number.

    Manifests carry quantities as strings ("500m") but also as bare numbers
    (``cpu: 2`` arrives as the integer 2), which upstream accepts too.
    """
    if isinstance(value, bool):
        raise QuantityError(FORMAT_MESSAGE)
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(str(value))
    if not isinstance(value, str):
        raise QuantityError(FORMAT_MESSAGE)
    match = _QUANTITY_RE.fullmatch(value)
    if match is None:
        raise QuantityError(FORMAT_MESSAGE)
    try:
        number = Decimal(match["number"])
    except InvalidOperation as exc:  # pragma: no cover - the pattern admits only numbers
        raise QuantityError(FORMAT_MESSAGE) from exc
    if match["exponent"] is not None:
        return number.scaleb(int(match["exponent"][1:]))
    return number * _MULTIPLIERS[match["suffix"] or ""]


def to_gib(value: object) -> Decimal:
    """A memory quantity in GiB, the unit of the instance spec catalogue."""
    return parse(value) / GIB
