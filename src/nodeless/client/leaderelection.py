"""Leader election through a coordination.k8s.io Lease, as client-go's
``tools/leaderelection`` does it: acquire when the lease is free or expired,
renew well inside its duration, and give up (stop leading) when a renewal
cannot be made before the renew deadline. Writes are compare-and-swap on the
Lease's resourceVersion, so two candidates can never both believe they lead.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
from collections.abc import Awaitable, Callable

from nodeless import clocks
from nodeless.api import errors, times
from nodeless.client import clients

log = logging.getLogger(__name__)

LEASES = clients.ResourceRef("coordination.k8s.io", "v1", "leases", True, "Lease")


def _parse(text: str | None) -> datetime.datetime | None:
    if not text:
        return None
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


class LeaderElector:
    def __init__(
        self,
        client: clients.ApiClient,
        name: str,
        identity: str,
        *,
        namespace: str = "kube-system",
        lease_seconds: float = 15.0,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
        clock: clocks.Clock | None = None,
    ) -> None:
        self.client = client
        self.name = name
        self.identity = identity
        self.namespace = namespace
        self.lease_seconds = lease_seconds
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.clock = clock or clocks.SystemClock()
        self.leading = False

    async def try_acquire_or_renew(self) -> bool:
        """One attempt; True when we hold the lease afterwards."""
        now = self.clock.now()
        try:
            lease = await self.client.get(LEASES, self.namespace, self.name)
        except errors.StatusError as err:
            if err.code != 404:
                raise
            body = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": {
                    "holderIdentity": self.identity,
                    "leaseDurationSeconds": int(self.lease_seconds),
                    "acquireTime": times.rfc3339_micro(now),
                    "renewTime": times.rfc3339_micro(now),
                    "leaseTransitions": 0,
                },
            }
            try:
                await self.client.create(LEASES, body)
            except errors.StatusError as create_err:
                if create_err.code == 409:
                    return False
                raise
            return True
        spec = dict(lease.get("spec") or {})
        holder = spec.get("holderIdentity") or ""
        renewed = _parse(spec.get("renewTime"))
        duration = float(spec.get("leaseDurationSeconds") or self.lease_seconds)
        expired = renewed is None or (now - renewed).total_seconds() > duration
        if holder and holder != self.identity and not expired:
            return False
        if holder != self.identity:
            spec["acquireTime"] = times.rfc3339_micro(now)
            spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + (1 if holder else 0)
        spec["holderIdentity"] = self.identity
        spec["leaseDurationSeconds"] = int(self.lease_seconds)
        spec["renewTime"] = times.rfc3339_micro(now)
        lease["spec"] = spec
        try:
            await self.client.update(LEASES, lease)
        except errors.StatusError as err:
            if err.code in (404, 409):
                return False  # someone else wrote first
            raise
        return True

    async def run(
        self, on_started: Callable[[], Awaitable[None]], on_stopped: Callable[[], Awaitable[None]]
    ) -> None:
        """Wait to lead, call ``on_started``, renew until that fails, then call
        ``on_stopped`` and return (callers usually exit, as upstream does)."""
        while not self.leading:
            try:
                self.leading = await self.try_acquire_or_renew()
            except Exception as exc:
                log.warning("leader election %s: %s", self.name, exc)
            if not self.leading:
                await self.clock.sleep(self.retry_period)
        log.info("%s became leader of %s", self.identity, self.name)
        await on_started()
        last_renew = self.clock.monotonic()
        while True:
            await self.clock.sleep(self.retry_period)
            ok = False
            with contextlib.suppress(Exception):
                ok = await self.try_acquire_or_renew()
            if ok:
                last_renew = self.clock.monotonic()
            elif self.clock.monotonic() - last_renew > self.renew_deadline:
                break
        self.leading = False
        log.warning("%s lost the lease %s", self.identity, self.name)
        await on_stopped()

    async def release(self) -> None:
        """Give the lease up on a clean shutdown so a standby takes over at once."""
        if not self.leading:
            return
        with contextlib.suppress(errors.StatusError):
            lease = await self.client.get(LEASES, self.namespace, self.name)
            spec = dict(lease.get("spec") or {})
            if spec.get("holderIdentity") == self.identity:
                spec["holderIdentity"] = ""
                spec["renewTime"] = times.rfc3339_micro(
                    self.clock.now() - datetime.timedelta(seconds=self.lease_seconds + 1)
                )
                lease["spec"] = spec
                await self.client.update(LEASES, lease)
        self.leading = False
