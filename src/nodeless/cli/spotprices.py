"""``nodeless spot prices``: the spot market as the scheduler sees it.

The market is deterministic from its configuration (``spotmarket``), so this
computes the same prices as the running cluster given the same file.
"""

from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path
from typing import Any

from nodeless.serverless import billing, catalogue, spotmarket


def add_parser(sub: Any) -> None:
    spot = sub.add_parser("spot", help="the spot market")
    actions = spot.add_subparsers(dest="spot_command", required=True)
    p = actions.add_parser("prices", help="spot prices per zone and spec, against on-demand")
    p.add_argument("--market", type=Path, default=None, help="market file (default: packaged)")
    p.add_argument("--zones", default="zone-a", help="comma-separated zones (default zone-a)")
    p.add_argument("--specs", default="", help="comma-separated specs (default: the general ones)")
    p.add_argument("--at", default="", help="an RFC 3339 time (default now)")
    p.add_argument("-o", "--output", choices=("table", "json"), default="table")


def run(args: argparse.Namespace) -> int:
    market = spotmarket.SpotMarket.load(args.market)
    specs = catalogue.Catalogue.load()
    at = billing.parse_time(args.at) if args.at else datetime.datetime.now(datetime.UTC)
    if at is None:
        print(f"nodeless spot prices: {args.at!r} is not an RFC 3339 time")
        return 2
    names = [n.strip() for n in args.specs.split(",") if n.strip()]
    chosen = (
        [specs.find(n) for n in names] if names else [s for s in specs.specs if not s.gpu_count]
    )
    if any(s is None for s in chosen):
        print(f"nodeless spot prices: unknown spec in {args.specs!r}")
        return 2
    rows = []
    for zone in [z.strip() for z in args.zones.split(",") if z.strip()]:
        for spec in chosen:
            assert spec is not None
            price = market.hourly_price(zone, spec, at)
            rows.append(
                {
                    "zone": zone,
                    "spec": spec.name,
                    "onDemand": str(spec.hourly_price),
                    "spot": str(price),
                    "saving": f"{(1 - price / spec.hourly_price) * 100:.0f}%",
                    "stock": market.stock(zone),
                }
            )
    if args.output == "json":
        print(json.dumps({"at": billing.format_time(at), "items": rows}, indent=2))
        return 0
    headers = ["ZONE", "SPEC", "ON-DEMAND/H", "SPOT/H", "SAVING", "STOCK"]
    table = [headers] + [
        [r["zone"], r["spec"], r["onDemand"], r["spot"], r["saving"], str(r["stock"])] for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(headers))]
    print(
        f"spot market at {billing.format_time(at)[:19]}Z (prices change every "
        f"{market.tick_seconds():g} s)"
    )
    for row in table:
        print("   ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
    return 0
