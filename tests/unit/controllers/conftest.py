"""A whole in-process cluster for controller tests: API server on the memory
backend, the zones' virtual nodes, the scheduler, the instance manager and a
simulated provider with zero latency, all speaking HTTP on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from nodeless import clocks
from nodeless.apiserver import app
from nodeless.client import clients, events, httpclients
from nodeless.instances import managing, nodes
from nodeless.instances.providers import simulated
from nodeless.scheduler import scheduling
from nodeless.storage import memory

ZONES = [nodes.Zone("zone-a"), nodes.Zone("zone-b")]


@dataclass
class Stack:
    server: app.ApiServer
    client: httpclients.HttpApiClient
    provider: simulated.SimulatedProvider
    manager: managing.InstanceManager
    scheduler: scheduling.Scheduler
    recorder: events.EventRecorder

    async def wait_for(
        self, check: Callable[[], Awaitable[Any]], timeout: float = 10.0, interval: float = 0.02
    ) -> Any:
        """Poll ``check`` until it returns something truthy; fail after ``timeout``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        last: Any = None
        while loop.time() < deadline:
            last = await check()
            if last:
                return last
            await asyncio.sleep(interval)
        raise AssertionError(f"condition not met within {timeout}s; last value: {last!r}")

    async def pods(self, namespace: str, selector: str = "") -> list[dict[str, Any]]:
        ref = clients.ResourceRef("", "v1", "pods", True, "Pod")
        return (await self.client.list(ref, namespace, label_selector=selector)).items


@pytest.fixture
async def stack() -> AsyncIterator[Stack]:
    clock = clocks.SystemClock()
    server = app.ApiServer(memory.MemoryBackend(), port=0, tls=False, zones=[z.name for z in ZONES])
    await server.start()
    client = httpclients.HttpApiClient(server.url)
    recorder = events.EventRecorder(client, "nodeless", clock)
    recorder.start()
    provider = simulated.SimulatedProvider(clock)
    virtual_nodes = nodes.VirtualNodes(client, ZONES, provider.name, clock)
    await virtual_nodes.register()
    manager = managing.InstanceManager(
        client, provider, ZONES, server.catalogue, clock=clock, recorder=recorder
    )
    await manager.start()
    scheduler = scheduling.Scheduler(
        client, ZONES, server.catalogue, clock=clock, recorder=recorder
    )
    scheduler.start()
    try:
        yield Stack(server, client, provider, manager, scheduler, recorder)
    finally:
        await scheduler.stop()
        await manager.stop()
        await recorder.stop()
        await client.close()
        await server.stop()
