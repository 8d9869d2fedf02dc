"""The instance spec catalogue: the sizes an elastic container instance comes in.

A serverless pod is not packed onto a node; it is rounded up to one instance
spec and billed for that spec. Which specs exist and what they cost is data
(``specs.yaml`` next to this module), not code, so that an operator can price
their own cloud by pointing :meth:`Catalogue.load` at another file.

Quantities are :class:`~decimal.Decimal` so that "0.25 vCPU" and "0.5 GiB"
compare and price exactly.
"""

from __future__ import annotations

import importlib.resources
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Final

import yaml

PACKAGED_FILE: Final = "specs.yaml"

# "2-4Gi", "2.0-4.0Gi", "0.25-0.5Gi": the vCPU-memory names ECI users write.
_GENERAL_NAME_RE: Final = re.compile(
    r"(?P<vcpu>[0-9]+(?:\.[0-9]+)?)-(?P<memory>[0-9]+(?:\.[0-9]+)?)Gi", re.ASCII
)


class CatalogueError(ValueError):
    """A catalogue file that cannot be used; the message says where and why."""


def format_number(value: Decimal) -> str:
    """``2`` for 2, ``0.25`` for 0.25: no exponent, no trailing zeros."""
    return format(value.normalize(), "f")


def _format_with_point(value: Decimal) -> str:
    """``2.0`` for 2, ``0.25`` for 0.25: the form ECI writes back."""
    text = format_number(value)
    return text if "." in text else f"{text}.0"


def general_name(vcpu: Decimal, memory_gib: Decimal) -> str:
    """The canonical name of a general-purpose spec, e.g. ``2-4Gi``."""
    return f"{format_number(vcpu)}-{format_number(memory_gib)}Gi"


@dataclass(frozen=True)
class Spec:
    """One instance size: what a pod rounded to it gets, and its on-demand price."""

    name: str
    vcpu: Decimal
    memory_gib: Decimal
    gpu_count: int
    gpu_type: str | None
    hourly_price: Decimal

    @property
    def annotation_value(self) -> str:
        """How the chosen spec is written back on the pod (``2.0-4.0Gi``).

        General specs use ECI's written-back form with a decimal point; GPU
        instance types are written by name, as ECI writes ECS instance types.
        """
        if self.gpu_count:
            return self.name
        return f"{_format_with_point(self.vcpu)}-{_format_with_point(self.memory_gib)}Gi"

    def covers(self, vcpu: Decimal, memory_gib: Decimal, gpus: int, gpu_type: str | None) -> bool:
        """Whether a pod asking for this much fits in this spec.

        A pod without GPUs never lands on a GPU type: it would pay for
        devices it cannot use.
        """
        if self.vcpu < vcpu or self.memory_gib < memory_gib:
            return False
        if gpus == 0:
            return self.gpu_count == 0
        return self.gpu_count >= gpus and (gpu_type is None or self.gpu_type == gpu_type)


@dataclass(frozen=True)
class Prices:
    """On-demand hourly rates the spec prices are computed from."""

    vcpu_hour: Decimal
    gib_hour: Decimal
    gpu_hour: Mapping[str, Decimal] = field(default_factory=dict)

    def hourly(
        self, vcpu: Decimal, memory_gib: Decimal, gpus: int = 0, gpu_type: str | None = None
    ) -> Decimal:
        """vCPU x rate + GiB x rate (+ GPUs x the GPU type's rate)."""
        price = vcpu * self.vcpu_hour + memory_gib * self.gib_hour
        if gpus:
            if gpu_type is None or gpu_type not in self.gpu_hour:
                raise CatalogueError(f"no price for GPU type {gpu_type!r}")
            price += gpus * self.gpu_hour[gpu_type]
        return price


class Catalogue:
    """Every instance spec, looked up by name or by what a pod needs."""

    def __init__(self, specs: Iterable[Spec], prices: Prices, currency: str = "USD") -> None:
        self._specs = tuple(specs)
        self.prices = prices
        self.currency = currency
        self._by_name: dict[str, Spec] = {}
        self._by_shape: dict[tuple[Decimal, Decimal], Spec] = {}
        for spec in self._specs:
            if spec.name in self._by_name:
                raise CatalogueError(f"spec {spec.name!r} is listed twice")
            self._by_name[spec.name] = spec
            if not spec.gpu_count:
                self._by_shape[(spec.vcpu, spec.memory_gib)] = spec

    @classmethod
    def load(cls, path: Path | None = None) -> Catalogue:
        """The catalogue in ``path``, or the one shipped with Nodeless."""
        if path is None:
            text = (
                importlib.resources.files("nodeless.serverless").joinpath(PACKAGED_FILE).read_text()
            )
            origin = PACKAGED_FILE
        else:
            text = path.read_text()
            origin = str(path)
        try:
            document = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise CatalogueError(f"{origin}: not valid YAML: {exc}") from exc
        try:
            return cls.from_document(document)
        except CatalogueError as exc:
            raise CatalogueError(f"{origin}: {exc}") from exc

    @classmethod
    def from_document(cls, document: object) -> Catalogue:
        """A catalogue from the parsed YAML document (the shape of ``specs.yaml``)."""
        doc = _mapping(document, "the document")
        price_doc = _mapping(doc.get("prices"), "prices")
        gpu_prices = _mapping(price_doc.get("gpu_hour", {}), "prices.gpu_hour")
        prices = Prices(
            vcpu_hour=_decimal(price_doc.get("vcpu_hour"), "prices.vcpu_hour"),
            gib_hour=_decimal(price_doc.get("gib_hour"), "prices.gib_hour"),
            gpu_hour={
                str(kind): _decimal(rate, f"prices.gpu_hour.{kind}")
                for kind, rate in gpu_prices.items()
            },
        )
        specs: list[Spec] = []
        for i, row in enumerate(_list(doc.get("general", []), "general")):
            where = f"general[{i}]"
            entry = _mapping(row, where)
            vcpu = _decimal(entry.get("vcpu"), f"{where}.vcpu")
            for j, raw in enumerate(_list(entry.get("memory_gib"), f"{where}.memory_gib")):
                memory = _decimal(raw, f"{where}.memory_gib[{j}]")
                specs.append(
                    Spec(
                        name=general_name(vcpu, memory),
                        vcpu=vcpu,
                        memory_gib=memory,
                        gpu_count=0,
                        gpu_type=None,
                        hourly_price=prices.hourly(vcpu, memory),
                    )
                )
        for i, row in enumerate(_list(doc.get("gpu", []), "gpu")):
            where = f"gpu[{i}]"
            entry = _mapping(row, where)
            name = entry.get("name")
            gpus = entry.get("gpus")
            gpu_type = entry.get("gpu_type")
            if not isinstance(name, str) or not name:
                raise CatalogueError(f"{where}.name: must be a non-empty string")
            if _GENERAL_NAME_RE.fullmatch(name):
                raise CatalogueError(f"{where}.name: {name!r} looks like a general spec name")
            if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 1:
                raise CatalogueError(f"{where}.gpus: must be a positive integer")
            if not isinstance(gpu_type, str) or gpu_type not in prices.gpu_hour:
                raise CatalogueError(f"{where}.gpu_type: {gpu_type!r} has no price in gpu_hour")
            vcpu = _decimal(entry.get("vcpu"), f"{where}.vcpu")
            memory = _decimal(entry.get("memory_gib"), f"{where}.memory_gib")
            specs.append(
                Spec(
                    name=name,
                    vcpu=vcpu,
                    memory_gib=memory,
                    gpu_count=gpus,
                    gpu_type=gpu_type,
                    hourly_price=prices.hourly(vcpu, memory, gpus, gpu_type),
                )
            )
        if not specs:
            raise CatalogueError("lists no specs")
        currency = doc.get("currency", "USD")
        if not isinstance(currency, str):
            raise CatalogueError("currency: must be a string")
        return cls(specs, prices, currency)

    @property
    def specs(self) -> tuple[Spec, ...]:
        """Every spec, in the order of the file."""
        return self._specs

    @property
    def gpu_types(self) -> frozenset[str]:
        """The GPU types some spec offers (``T4``, ``A10``, ...)."""
        return frozenset(s.gpu_type for s in self._specs if s.gpu_type is not None)

    @property
    def max_vcpu(self) -> Decimal:
        return max(s.vcpu for s in self._specs)

    @property
    def max_memory_gib(self) -> Decimal:
        return max(s.memory_gib for s in self._specs)

    @property
    def max_gpus(self) -> int:
        return max(s.gpu_count for s in self._specs)

    def find(self, name: str) -> Spec | None:
        """The spec a user named: ``2-4Gi``, ``2.0-4.0Gi`` or ``gpu-1xT4``."""
        name = name.strip()
        spec = self._by_name.get(name)
        if spec is not None:
            return spec
        match = _GENERAL_NAME_RE.fullmatch(name)
        if match is None:
            return None
        return self._by_shape.get((Decimal(match["vcpu"]), Decimal(match["memory"])))

    def cheapest_covering(
        self,
        vcpu: Decimal | int | float,
        memory_gib: Decimal | int | float,
        gpus: int = 0,
        gpu_type: str | None = None,
    ) -> Spec | None:
        """The cheapest spec a pod asking for this much fits in, if any.

        Ties go to the smaller vCPU, then the smaller memory, so the choice
        is stable whatever the order of the file.
        """
        need_vcpu = _as_decimal(vcpu)
        need_memory = _as_decimal(memory_gib)
        fitting = [s for s in self._specs if s.covers(need_vcpu, need_memory, gpus, gpu_type)]
        if not fitting:
            return None
        return min(fitting, key=lambda s: (s.hourly_price, s.vcpu, s.memory_gib, s.name))


def _as_decimal(value: Decimal | int | float) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(str(value))


def _mapping(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise CatalogueError(f"{where}: must be a mapping")
    return value


def _list(value: object, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise CatalogueError(f"{where}: must be a list")
    return value


def _decimal(value: object, where: str) -> Decimal:
    """A positive number written as YAML number or string ("0.0455")."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise CatalogueError(f"{where}: must be a number")
    try:
        number = Decimal(str(value))
    except InvalidOperation as exc:
        raise CatalogueError(f"{where}: {value!r} is not a number") from exc
    if not number.is_finite() or number < 0:
        raise CatalogueError(f"{where}: must be a finite number >= 0")
    return number
