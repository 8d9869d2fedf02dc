"""Two candidates for one Lease: one leads, the other takes over only after
the leader stops renewing or releases the lease."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from nodeless import clocks
from nodeless.apiserver import app
from nodeless.client import httpclients, leaderelection
from nodeless.storage import memory


@pytest.fixture
async def client() -> AsyncIterator[httpclients.HttpApiClient]:
    server = app.ApiServer(memory.MemoryBackend(), port=0, tls=False)
    await server.start()
    c = httpclients.HttpApiClient(server.url)
    yield c
    await c.close()
    await server.stop()


async def test_only_one_candidate_leads_while_the_lease_is_renewed(
    client: httpclients.HttpApiClient,
) -> None:
    clock = clocks.FakeClock()
    a = leaderelection.LeaderElector(client, "cm", "a", clock=clock)
    b = leaderelection.LeaderElector(client, "cm", "b", clock=clock)
    assert await a.try_acquire_or_renew()
    assert not await b.try_acquire_or_renew()
    await clock.advance(10)
    assert await a.try_acquire_or_renew()
    assert not await b.try_acquire_or_renew()


async def test_a_standby_takes_over_an_expired_lease(client: httpclients.HttpApiClient) -> None:
    clock = clocks.FakeClock()
    a = leaderelection.LeaderElector(client, "cm", "a", clock=clock)
    b = leaderelection.LeaderElector(client, "cm", "b", clock=clock)
    assert await a.try_acquire_or_renew()
    await clock.advance(16)
    assert await b.try_acquire_or_renew()
    lease = await client.get(leaderelection.LEASES, "kube-system", "cm")
    assert lease["spec"]["holderIdentity"] == "b"
    assert lease["spec"]["leaseTransitions"] == 1
    assert not await a.try_acquire_or_renew()


async def test_released_lease_is_taken_at_once(client: httpclients.HttpApiClient) -> None:
    clock = clocks.FakeClock()
    a = leaderelection.LeaderElector(client, "cm", "a", clock=clock)
    b = leaderelection.LeaderElector(client, "cm", "b", clock=clock)
    assert await a.try_acquire_or_renew()
    a.leading = True
    await a.release()
    assert await b.try_acquire_or_renew()
