"""Spot reclaim: the market takes capacity back, with notice.

Once per market tick (5 minutes), on the injected clock, every spot instance
is looked at, as ECI checks its spot instances:

- inside its protection period (``spot-duration`` hours from purchase,
  default 1, ``0`` none) nothing happens, and it is billed at the price it
  was bought at;
- after it, it is billed at the live market price (a price change splits
  its billing interval), and it is reclaimed when the price has risen above
  the pod's ``spot-price-limit`` (SpotWithPriceLimit), or when its zone has
  fewer spot instances to give than are running (the newest go first);
- a reclaim starts with notice: the pod gets the condition
  ``ContainerInstanceCreated`` with reason ``SpotToBeReleased`` and message
  ``Spot instance will be released in N minutes`` (N = 3) and a Warning
  event; when the notice runs out the instance is stopped as a deletion
  would be (SIGTERM, the pod's grace period), ends ``Expired``, the pod
  ``Failed`` with reason ``BidFailed`` (and a ``DisruptionTarget``
  condition), and its controller replaces it.

The notice and the reclaim are kept in the Instance record, so a restart in
between neither forgets nor repeats them.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
from decimal import Decimal, InvalidOperation
from typing import Any

from nodeless import clocks
from nodeless.instances import managing
from nodeless.instances.providers import base
from nodeless.serverless import billing, spotmarket

log = logging.getLogger(__name__)

NOTICE_SECONDS = 180.0

Obj = dict[str, Any]


class SpotReclaimer:
    def __init__(
        self,
        manager: managing.InstanceManager,
        market: spotmarket.PriceFeed,
        *,
        clock: clocks.Clock | None = None,
        notice_seconds: float = NOTICE_SECONDS,
    ) -> None:
        self.manager = manager
        self.market = market
        self.clock = clock or manager.clock
        self.notice_seconds = notice_seconds
        self._task: asyncio.Task[None] | None = None
        # Notices given (instance ID -> when it goes, and why), known before
        # the record informer shows them.
        self._notices: dict[str, tuple[datetime.datetime, str]] = {}

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="spot-reclaimer")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await self.clock.sleep(self._until_next_wake())
            try:
                await self.check()
            except asyncio.CancelledError:
                raise
            except Exception:  # one bad pass must not end reclaiming
                log.exception("spot reclaim check failed")

    def _until_next_wake(self) -> float:
        """Seconds to the next market tick, or to a notice running out first
        (a reclaim happens when its notice says, not at the next tick)."""
        tick = self.market.tick_seconds()
        now = self.clock.now()
        elapsed = (now - spotmarket.EPOCH).total_seconds()
        wait = tick - (elapsed % tick) or tick
        for at, _why in self._notices.values():
            wait = min(wait, max(0.0, (at - now).total_seconds()))
        return wait

    async def check(self) -> None:
        """One pass over every spot instance (what each tick runs)."""
        now = self.clock.now()
        live: list[tuple[datetime.datetime, Obj]] = []
        for record in self.manager.records.objects():
            spec = record.get("spec") or {}
            status = record.get("status") or {}
            if spec.get("capacityType") != "spot":
                continue
            try:
                state = base.InstanceState(str(status.get("state") or ""))
            except ValueError:
                continue
            if state.terminal:
                continue
            instance_id = str(spec.get("instanceID") or "")
            reclaim = status.get("reclaim") or {}
            given = self._notices.get(instance_id)
            at = billing.parse_time(reclaim.get("at")) or (given[0] if given else None)
            if at is not None:
                if reclaim.get("started"):
                    self._notices.pop(instance_id, None)
                elif now >= at:
                    if not reclaim and given:  # the informer lags our notice: the record has it
                        noticed = {"at": billing.format_time(at), "message": given[1]}
                        record = {**record, "status": {**status, "reclaim": noticed}}
                    await self.manager.reclaim(record)
                    self._notices.pop(instance_id, None)
                else:
                    why = str(reclaim.get("message") or (given[1] if given else ""))
                    self._notices[instance_id] = (at, why)
                continue
            bought = billing.parse_time(status.get("createdAt")) or now
            live.append((bought, record))
        crowded = self._over_stock(live)
        for _bought, record in live:
            await self._check_one(record, now, crowded)

    def _over_stock(self, live: list[tuple[datetime.datetime, Obj]]) -> set[str]:
        """Instance IDs beyond their zone's spot stock, newest first."""
        by_zone: dict[str, list[tuple[datetime.datetime, Obj]]] = {}
        for bought, record in live:
            by_zone.setdefault(str((record.get("spec") or {}).get("zone") or ""), []).append(
                (bought, record)
            )
        out: set[str] = set()
        for zone, records in by_zone.items():
            extra = len(records) - self.market.stock(zone)
            if extra > 0:
                records.sort(key=lambda item: item[0], reverse=True)
                out |= {str(r["spec"].get("instanceID")) for _, r in records[:extra]}
        return out

    async def _check_one(self, record: Obj, now: datetime.datetime, crowded: set[str]) -> None:
        spec = record.get("spec") or {}
        protected_until = billing.parse_time(spec.get("protectedUntil"))
        if protected_until is not None and now < protected_until:
            return  # inside protection: the purchase price, no reclaim
        instance_spec = self.manager.specs.find(str(spec.get("instanceSpec") or ""))
        if instance_spec is None:
            return
        zone = str(spec.get("zone") or "")
        price = self.market.hourly_price(zone, instance_spec, now)
        await self.manager.reprice(record, str(price))
        why = ""
        limit = _decimal(spec.get("spotPriceLimit"))
        if spec.get("spotStrategy") == "SpotWithPriceLimit" and limit is not None and price > limit:
            why = f"the spot price of {instance_spec.name} in zone {zone} rose to {price}/h, above the limit of {limit}/h"
        elif str(spec.get("instanceID")) in crowded:
            why = f"zone {zone} has no spot capacity left for it"
        if why:
            at = now + datetime.timedelta(seconds=self.notice_seconds)
            self._notices[str(spec.get("instanceID") or "")] = (at, why)
            await self.manager.give_notice(record, why, at)


def _decimal(value: Any) -> Decimal | None:
    try:
        return Decimal(str(value)) if value not in (None, "") else None
    except InvalidOperation:
        return None
