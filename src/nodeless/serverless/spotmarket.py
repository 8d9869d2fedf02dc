"""The spot market: what spare capacity costs, per zone and spec, over time,
and how much of it each zone has.

A cloud's spot price moves in steps, well below on-demand (typically 10-70 %
of it). Here the ratio to the on-demand price is a deterministic function of
(seed, zone, spec, time): value noise over 5-minute ticks, four octaves
(each twice as slow as the one before) around a mean, clipped to a band. So
the same seed gives the same market in every run and every process (the
scheduler, the instance manager and ``nodeless spot prices`` agree without
talking), any moment's price costs O(1) to compute, and tests can find the
tick where a price crosses a limit.

Everything is configuration (``spot.yaml`` beside this module, or another
file of the same shape); a real price feed replaces the process through the
small ``PriceFeed`` protocol.
"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any, Final, Protocol

import yaml

from nodeless.serverless import catalogue

PACKAGED_FILE: Final = Path(__file__).with_name("spot.yaml")
EPOCH: Final = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
OCTAVE_WEIGHTS: Final = (Decimal("0.4"), Decimal("0.3"), Decimal("0.2"), Decimal("0.1"))
PRICE_PLACES: Final = Decimal("0.0001")


class PriceFeed(Protocol):
    """Where spot prices come from: the simulated market, or a real feed."""

    def hourly_price(self, zone: str, spec: catalogue.Spec, at: datetime.datetime) -> Decimal: ...

    def stock(self, zone: str) -> int:
        """How many spot instances the zone can hold at once."""
        ...

    def tick_seconds(self) -> float:
        """How often prices may change (reclaim checks follow it)."""
        ...


@dataclass(frozen=True)
class MarketSettings:
    seed: int = 1
    tick: float = 300.0
    mean_ratio: Decimal = Decimal("0.30")
    volatility: Decimal = Decimal("0.20")
    min_ratio: Decimal = Decimal("0.10")
    max_ratio: Decimal = Decimal("0.70")
    default_stock: int = 1000
    zone_stock: Mapping[str, int] = field(default_factory=dict)
    # Per-zone mean ratios, for zones whose spare capacity is scarcer.
    zone_mean: Mapping[str, Decimal] = field(default_factory=dict)
    # How long before a reclaim the pod is told (ECI: 3 minutes).
    notice_seconds: float = 180.0

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> MarketSettings:
        ratio = doc.get("ratio") or {}
        stock = doc.get("stock") or {}
        zones = doc.get("zones") or {}
        return cls(
            seed=int(doc.get("seed", 1)),
            tick=float(doc.get("tick_seconds", 300)),
            mean_ratio=Decimal(str(ratio.get("mean", "0.30"))),
            volatility=Decimal(str(ratio.get("volatility", "0.20"))),
            min_ratio=Decimal(str(ratio.get("min", "0.10"))),
            max_ratio=Decimal(str(ratio.get("max", "0.70"))),
            default_stock=int(stock.get("default", 1000)),
            zone_stock={str(z): int(v["stock"]) for z, v in zones.items() if "stock" in v},
            zone_mean={
                str(z): Decimal(str(v["mean_ratio"])) for z, v in zones.items() if "mean_ratio" in v
            },
            notice_seconds=float(doc.get("reclaim_notice_seconds", 180)),
        )


class SpotMarket:
    """The simulated market (a ``PriceFeed``)."""

    def __init__(self, settings: MarketSettings | None = None) -> None:
        self.settings = settings or MarketSettings()

    @classmethod
    def load(cls, path: Path | None = None, *, seed: int | None = None) -> SpotMarket:
        doc = yaml.safe_load((path or PACKAGED_FILE).read_text()) or {}
        if seed is not None:
            doc["seed"] = seed
        return cls(MarketSettings.from_document(doc))

    def tick_seconds(self) -> float:
        return self.settings.tick

    def tick_of(self, at: datetime.datetime) -> int:
        return int((at - EPOCH).total_seconds() // self.settings.tick)

    def _noise(self, zone: str, spec: str, octave: int, step: int) -> Decimal:
        """A uniform value in [-1, 1] for one lattice point, the same everywhere."""
        digest = hashlib.sha256(
            f"{self.settings.seed}/{zone}/{spec}/{octave}/{step}".encode()
        ).digest()
        return Decimal(int.from_bytes(digest[:8], "big")) / Decimal(2**63) - 1

    def ratio(self, zone: str, spec: catalogue.Spec, at: datetime.datetime) -> Decimal:
        """The spot price as a share of the on-demand price at ``at``."""
        tick = self.tick_of(at)
        wave = sum(
            (
                weight * self._noise(zone, spec.name, octave, tick >> octave)
                for octave, weight in enumerate(OCTAVE_WEIGHTS)
            ),
            Decimal(0),
        )
        mean = self.settings.zone_mean.get(zone, self.settings.mean_ratio)
        value = mean + self.settings.volatility * wave
        return min(self.settings.max_ratio, max(self.settings.min_ratio, value))

    def hourly_price(self, zone: str, spec: catalogue.Spec, at: datetime.datetime) -> Decimal:
        price = spec.hourly_price * self.ratio(zone, spec, at)
        return price.quantize(PRICE_PLACES, rounding=ROUND_HALF_UP)

    def stock(self, zone: str) -> int:
        return self.settings.zone_stock.get(zone, self.settings.default_stock)
