"""``nodeless cost``: what instances cost, from the billing ledger, through
the API like any client (a kubeconfig names the cluster).

Ended instances are read from their BillingRecords, running ones from their
Instance records' open intervals, so the report includes the second it was
asked in. Pods' owners are followed up to the workload a user names (a
ReplicaSet's Deployment, a Job's CronJob).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

from nodeless.api import errors, selectors
from nodeless.client import clients, httpclients, kubeconfigs
from nodeless.serverless import billing

BILLING_RECORDS = clients.ResourceRef(
    "nodeless.dev", "v1", "billingrecords", False, "BillingRecord"
)
INSTANCES = clients.ResourceRef("nodeless.dev", "v1", "instances", True, "Instance")
_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "cost",
        help="what instances cost: per-second billing by namespace, workload or pod",
    )
    p.add_argument(
        "--kubeconfig",
        default=os.environ.get("KUBECONFIG") or str(Path("data") / "kubeconfig"),
        help="the cluster (default $KUBECONFIG, else ./data/kubeconfig)",
    )
    p.add_argument("--by", choices=billing.GROUPINGS, default="namespace")
    p.add_argument("--since", help="start of the range: a duration ago (90m, 24h, 7d) or a time")
    p.add_argument("--until", help="end of the range: a duration ago or a time (default now)")
    p.add_argument("-n", "--namespace", help="only this namespace")
    p.add_argument("-l", "--selector", default="", help="only pods with these labels")
    p.add_argument("-o", "--output", choices=("table", "json"), default="table")


def parse_moment(text: str | None, now: datetime.datetime) -> datetime.datetime | None:
    """``90m`` (that long ago) or an RFC 3339 time; ValueError otherwise."""
    if not text:
        return None
    match = _DURATION.match(text.strip())
    if match:
        return now - datetime.timedelta(seconds=int(match[1]) * _UNITS[match[2]])
    moment = billing.parse_time(text.strip())
    if moment is None:
        raise ValueError(f"{text!r} is neither a duration (90m, 24h, 7d) nor an RFC 3339 time")
    return moment


async def collect(
    client: clients.ApiClient, namespace: str | None = None, selector: str = ""
) -> list[dict[str, Any]]:
    """Every bill, ended and running, in BillingRecord shape, filtered."""
    bills = list((await client.list(BILLING_RECORDS)).items)
    running = [billing.open_bill(i) for i in (await client.list(INSTANCES)).items]
    cache: dict[tuple[str, str, str, str, str], Mapping[str, Any] | None] = {}
    for bill in running:
        spec = bill["spec"]
        bill_namespace = str(spec.get("namespace") or "")

        async def fetch(
            lookup: tuple[str, str, str, str], name: str, namespace: str = bill_namespace
        ) -> Mapping[str, Any] | None:
            key = (namespace, *lookup[:3], name)
            if key not in cache:
                group, version, plural, kind = lookup
                ref = clients.ResourceRef(group, version, plural, True, kind)
                try:
                    cache[key] = await client.get(ref, namespace, name)
                except errors.StatusError:
                    cache[key] = None
            return cache[key]

        spec["workload"] = billing.workload_name(await billing.top_owner(spec.get("owner"), fetch))
    wanted = selectors.parse_label_selector(selector) if selector else None
    out = []
    for bill in [*bills, *running]:
        spec = bill.get("spec") or {}
        if namespace and spec.get("namespace") != namespace:
            continue
        labels = (bill.get("metadata") or {}).get("labels") or {}
        if wanted is not None and not wanted.matches(labels):
            continue
        out.append(bill)
    return out


def render(
    lines: list[billing.Line], by: str, currency: str, output: str, window: Mapping[str, Any]
) -> str:
    if output == "json":
        return json.dumps(
            {
                **window,
                "by": by,
                "currency": currency,
                "items": [
                    {
                        **dict(zip(_key_names(by), line.key, strict=True)),
                        "pods": len(line.pods),
                        "instanceSeconds": line.seconds,
                        "cost": billing.money(line.cost),
                        "capacityTypes": sorted(line.capacity),
                    }
                    for line in lines
                ],
                "total": {
                    "instanceSeconds": sum(line.seconds for line in lines),
                    "cost": billing.money(sum((line.cost for line in lines), Decimal(0))),
                },
            },
            indent=2,
        )
    headers = [
        *(n.upper() for n in _key_names(by)),
        "PODS",
        "INSTANCE-SECONDS",
        f"COST ({currency})",
    ]
    rows = [
        [*line.key, str(len(line.pods)), str(line.seconds), billing.money(line.cost)]
        for line in lines
    ]
    total_cost = sum((line.cost for line in lines), Decimal(0))
    rows.append(
        ["TOTAL", *([""] * (len(headers) - 4)), str(sum(len(line.pods) for line in lines)),
         str(sum(line.seconds for line in lines)), billing.money(total_cost)]
    )  # fmt: skip
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
    return "\n".join(
        "   ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip()
        for row in [headers, *rows]
    )


def _key_names(by: str) -> tuple[str, ...]:
    return ("namespace",) if by == "namespace" else ("namespace", by)


async def run(args: argparse.Namespace) -> int:
    now = datetime.datetime.now(datetime.UTC)
    try:
        since = parse_moment(args.since, now)
        until = parse_moment(args.until, now)
        credentials = kubeconfigs.load(args.kubeconfig)
    except (ValueError, OSError) as err:
        print(f"nodeless cost: {err}")
        return 2
    client = httpclients.HttpApiClient(
        credentials.server,
        credentials.ssl_context(),
        credentials.token or None,
        tls_server_name=credentials.tls_server_name,
    )
    try:
        bills = await collect(client, args.namespace, args.selector)
    except (errors.StatusError, OSError) as err:
        print(f"nodeless cost: cannot read the ledger: {err}")
        return 1
    finally:
        await client.close()
    lines = billing.report(bills, args.by, now, since, until)
    currency = next(
        (str(b["spec"].get("currency")) for b in bills if (b.get("spec") or {}).get("currency")),
        "USD",
    )
    window = {
        "since": billing.format_time(since) if since else None,
        "until": billing.format_time(until or now),
    }
    print(render(lines, args.by, currency, args.output, window))
    return 0
