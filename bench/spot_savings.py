"""Spot savings: one fixed batch of Jobs run on demand, then on spot with the
market reclaiming instances, in the same process, on the same seed, on a fake
clock (simulated hours pass in seconds): what each costs, how long it takes,
and whether every completion still happens.

    .venv/bin/python bench/spot_savings.py            # 12 Jobs x 4 completions, 3 runs
    .venv/bin/python bench/spot_savings.py --quick    # 4 Jobs x 2

Both runs use the real components (API server on the memory store,
scheduler, instance manager, spot reclaimer, Job controller, garbage
collector) with the simulated provider; each pod works 90 minutes
(``sleep 5400``). The spot runs' pods ask SpotWithPriceLimit at 40 % of the
on-demand price, once with the default one-hour protection and once with
none, on a volatile market (seed ``--seed``; mean 30 % of on-demand,
twice the packaged swing, moving every 5 minutes), so the market reclaims
pods whose price passes the limit; their Jobs count a reclaim as a
disruption and start the work again. Target (issue 6): spot at least 60 %
cheaper, no lost completions.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import time
from decimal import Decimal
from typing import Any

from nodeless import clocks
from nodeless.apiserver import app
from nodeless.client import clients, events, httpclients, informers
from nodeless.controllers import garbagecollection, jobs
from nodeless.instances import managing, nodes, reclaiming
from nodeless.instances.providers import simulated
from nodeless.scheduler import scheduling
from nodeless.serverless import billing, spotmarket
from nodeless.storage import memory

T0 = datetime.datetime(2026, 3, 2, tzinfo=datetime.UTC)
NAMESPACE = "default"
JOBS = jobs.JOBS
STEP = 300.0  # simulated seconds per step: one market tick
MAX_HOURS = 72
TARGET_SAVING = Decimal("0.60")
WORK_SECONDS = 5400
VOLATILITY = "0.40"
PRICE_LIMIT = "0.045"  # 40 % of 2-4Gi's on-demand 0.1114/h


def job(name: str, completions: int, protection_hours: int | None) -> dict[str, Any]:
    """A Job of ``completions`` pods; on spot (with that protection) unless None."""
    annotations = (
        {
            "k8s.aliyun.com/eci-spot-strategy": "SpotWithPriceLimit",
            "k8s.aliyun.com/eci-spot-price-limit": PRICE_LIMIT,
            "k8s.aliyun.com/eci-spot-duration": str(protection_hours),
        }
        if protection_hours is not None
        else {}
    )
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "completions": completions,
            "parallelism": 2,
            "backoffLimit": 2,
            "template": {
                "metadata": {"annotations": annotations},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {
                            "name": "work",
                            "image": "busybox:1.36",
                            "command": ["sh", "-c", f"sleep {WORK_SECONDS}"],
                        }
                    ],
                },
            },
        },
    }


async def run(
    protection_hours: int | None, count: int, completions: int, seed: int
) -> dict[str, Any]:
    spot = protection_hours is not None
    clock = clocks.FakeClock(T0)
    zones = [nodes.Zone("zone-a"), nodes.Zone("zone-b")]
    # A volatile market (the packaged one's band, twice its swing), so that
    # prices cross the pods' limit within hours.
    market = spotmarket.SpotMarket(
        spotmarket.MarketSettings(seed=seed, volatility=Decimal(VOLATILITY))
    )
    server = app.ApiServer(
        memory.MemoryBackend(), port=0, tls=False, clock=clock.now, zones=[z.name for z in zones]
    )
    await server.start()
    client = httpclients.HttpApiClient(server.url)
    recorder = events.EventRecorder(client, "nodeless", clock)
    recorder.start()
    provider = simulated.SimulatedProvider(clock)
    virtual_nodes = nodes.VirtualNodes(client, zones, provider.name, clock)
    await virtual_nodes.register()
    manager = managing.InstanceManager(
        client, provider, zones, server.catalogue, clock=clock, recorder=recorder
    )
    await manager.start()
    scheduler = scheduling.Scheduler(
        client, zones, server.catalogue, clock=clock, recorder=recorder, seed=seed, market=market
    )
    scheduler.start()
    reclaimer = reclaiming.SpotReclaimer(manager, market, clock=clock)
    await reclaimer.start()
    factory = informers.InformerFactory(client, clock=clock)
    controllers = [
        garbagecollection.GarbageCollectorController(client, factory, clock=clock),
        jobs.JobController(client, factory, clock=clock, recorder=recorder),
    ]
    for controller in controllers:
        await controller.start()
    factory.start()
    await factory.wait_synced()
    started = time.perf_counter()
    try:
        for i in range(count):
            await client.create(JOBS, job(f"batch-{i:02d}", completions, protection_hours))
        finished_at: datetime.datetime | None = None
        outcome: dict[str, int] = {}
        while (clock.now() - T0).total_seconds() < MAX_HOURS * 3600:
            await clock.advance(STEP)
            await managing.wait_idle(manager)
            listed = (await client.list(JOBS, NAMESPACE)).items
            outcome = {
                "succeeded": sum(int(j["status"].get("succeeded") or 0) for j in listed),
                "failedJobs": sum(
                    1
                    for j in listed
                    for c in j["status"].get("conditions") or []
                    if c.get("type") == "Failed" and c.get("status") == "True"
                ),
            }
            done = sum(
                1
                for j in listed
                for c in j["status"].get("conditions") or []
                if c.get("type") in ("Complete", "Failed") and c.get("status") == "True"
            )
            if done == count:
                finished_at = clock.now()
                break
        pods = (await client.list(clients.ResourceRef("", "v1", "pods", True, "Pod"))).items
        reclaimed = sum(1 for p in pods if (p.get("status") or {}).get("reason") == "BidFailed")
        records = (await client.list(managing.BILLING_RECORDS)).items
        live = [billing.open_bill(i) for i in (await client.list(managing.INSTANCES)).items]
        lines = billing.report([*records, *live], "namespace", clock.now())
        cost = sum((line.cost for line in lines), Decimal(0))
        seconds = sum(line.seconds for line in lines)
        return {
            "capacity": f"spot, {protection_hours} h protection" if spot else "on-demand",
            "jobs": count,
            "completionsWanted": count * completions,
            **outcome,
            "reclaimed": reclaimed,
            "hours": round((finished_at - T0).total_seconds() / 3600, 2) if finished_at else None,
            "instanceSeconds": seconds,
            "cost": billing.money(cost),
            "wallSeconds": round(time.perf_counter() - started, 1),
        }
    finally:
        for controller in reversed(controllers):
            await controller.stop()
        await factory.stop()
        await reclaimer.stop()
        await scheduler.stop()
        await manager.stop()
        await virtual_nodes.stop()
        await recorder.stop()
        await client.close()
        await server.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    count, completions = (4, 2) if args.quick else (12, 4)
    on_demand = await run(None, count, completions, args.seed)
    runs = [await run(hours, count, completions, args.seed) for hours in (1, 0)]
    summary = []
    for result in (on_demand, *runs):
        print(
            f"{result['capacity']:>22}: {result['succeeded']}/{result['completionsWanted']} "
            f"completions in {result['hours']} h (simulated), {result['instanceSeconds']} "
            f"instance-s, cost {result['cost']} USD, {result['reclaimed']} reclaimed, "
            f"{result['failedJobs']} Jobs failed ({result['wallSeconds']} s wall)"
        )
    for result in runs:
        saving = 1 - Decimal(result["cost"]) / Decimal(on_demand["cost"])
        ratio = (
            result["hours"] / on_demand["hours"] if result["hours"] and on_demand["hours"] else None
        )
        lost = result["completionsWanted"] - result["succeeded"]
        met = saving >= TARGET_SAVING and lost == 0 and result["failedJobs"] == 0
        summary.append(
            {
                "run": result["capacity"],
                "saving": float(round(saving, 4)),
                "completionTimeRatio": round(ratio, 3) if ratio else None,
                "lostCompletions": lost,
                "reclaimed": result["reclaimed"],
                "met": met,
            }
        )
        print(
            f"{result['capacity']}: {saving * 100:.1f}% cheaper, completion time "
            f"x{ratio:.2f}, {result['reclaimed']} reclaims, lost completions {lost}; "
            f"target >= 60% cheaper, none lost: {'met' if met else 'NOT met'}"
        )
    print(
        json.dumps(
            {
                "bench": "spot_savings",
                "seed": args.seed,
                "onDemand": on_demand,
                "spot": runs,
                "summary": summary,
            }
        )
    )


if __name__ == "__main__":
    asyncio.run(main())
