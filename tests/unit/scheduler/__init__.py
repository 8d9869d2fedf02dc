"""Scheduler tests, and the in-process cluster they share with the instance
manager's tests.

``Cluster`` wires what ``nodeless up`` wires (``cli.main.start_components``):
an API server (plain HTTP, port 0) on a given storage backend with the
cluster's zones, an ``HttpApiClient``, an ``EventRecorder``, the zones'
``VirtualNodes``, the ``InstanceManager`` over a ``SimulatedProvider`` with
zero latency, and the ``Scheduler`` — all on one ``FakeClock``, so timers
(back-off, grace periods) move only when a test calls ``advance``.

Waiting is polling the API with a generous deadline: a safety net for real
I/O on loopback, never a timing assertion.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from nodeless import clocks
from nodeless.api import errors
from nodeless.apiserver import app
from nodeless.client import clients, events, httpclients, informers
from nodeless.instances import managing, nodes
from nodeless.instances.providers import base, simulated
from nodeless.scheduler import scheduling
from nodeless.serverless import spotmarket
from nodeless.storage import backends, memory

PODS = clients.ResourceRef("", "v1", "pods", True, "Pod")
EVENTS = clients.ResourceRef("", "v1", "events", True, "Event")
NODES = clients.ResourceRef("", "v1", "nodes", False, "Node")
INSTANCES = managing.INSTANCES
NAMESPACE = "default"
WAIT = 10.0  # seconds; a safety net, not a timing assertion

T = TypeVar("T")


def pod_manifest(
    name: str,
    *,
    command: list[str] | None = None,
    restart_policy: str | None = None,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    node_selector: dict[str, str] | None = None,
    requests: dict[str, str] | None = None,
    scheduler_name: str | None = None,
    env: dict[str, str] | None = None,
    grace: int | None = None,
) -> dict[str, Any]:
    """A pod with one container ``app`` (runs forever unless ``command`` ends)."""
    container: dict[str, Any] = {"name": "app", "image": "busybox:1.36"}
    if command is not None:
        container["command"] = command
    if requests:
        container["resources"] = {"requests": requests}
    if env:
        container["env"] = [{"name": k, "value": v} for k, v in env.items()]
    spec: dict[str, Any] = {"containers": [container]}
    if restart_policy:
        spec["restartPolicy"] = restart_policy
    if node_selector:
        spec["nodeSelector"] = node_selector
    if scheduler_name:
        spec["schedulerName"] = scheduler_name
    if grace is not None:
        spec["terminationGracePeriodSeconds"] = grace
    metadata: dict[str, Any] = {"name": name, "namespace": NAMESPACE}
    if labels:
        metadata["labels"] = labels
    if annotations:
        metadata["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


class Cluster:
    """The stack of ``nodeless up`` in this process; ``stop`` is abrupt (it
    deletes nothing, like a killed process)."""

    def __init__(
        self,
        *,
        zones: list[nodes.Zone] | None = None,
        backend: backends.Backend | None = None,
        clock: clocks.FakeClock | None = None,
        failure_rate: float = 0.0,
        provider: base.Provider | None = None,
        manager: bool = True,
        market: spotmarket.PriceFeed | None = None,
        shared_informers: bool = False,
    ) -> None:
        """``shared_informers``: the manager and the scheduler get one
        informer factory, as in ``nodeless up``, stopped after both."""
        self.shared_informers = shared_informers
        self.factory: informers.InformerFactory | None = None
        self.market = market if market is not None else spotmarket.SpotMarket.load()
        self.zones = zones or [nodes.Zone("zone-a"), nodes.Zone("zone-b")]
        self.backend = backend if backend is not None else memory.MemoryBackend()
        self.clock = clock or clocks.FakeClock()
        self.provider: base.Provider = provider or simulated.SimulatedProvider(
            self.clock,
            failure_rate=failure_rate,
            zone_capacity={z.name: z.max_instances for z in self.zones},
        )
        self.with_manager = manager
        self.server = app.ApiServer(
            self.backend,
            port=0,
            tls=False,
            clock=self.clock.now,
            zones=[z.name for z in self.zones],
        )
        self.client = httpclients.HttpApiClient("http://unstarted")
        self.recorder = events.EventRecorder(self.client, "nodeless", self.clock)
        self.virtual_nodes: nodes.VirtualNodes | None = None
        self.manager: managing.InstanceManager | None = None
        self.scheduler: scheduling.Scheduler | None = None

    async def start(self) -> Cluster:
        await self.server.start()
        self.client = httpclients.HttpApiClient(self.server.url)
        self.recorder = events.EventRecorder(self.client, "nodeless", self.clock)
        self.recorder.start()
        self.virtual_nodes = nodes.VirtualNodes(
            self.client, self.zones, self.provider.name, self.clock
        )
        await self.virtual_nodes.register()
        self.virtual_nodes.start()
        if self.shared_informers:
            self.factory = informers.InformerFactory(self.client, clock=self.clock)
        if self.with_manager:
            self.manager = managing.InstanceManager(
                self.client,
                self.provider,
                self.zones,
                self.server.catalogue,
                clock=self.clock,
                recorder=self.recorder,
                factory=self.factory,
            )
            await self.manager.start()
        self.scheduler = scheduling.Scheduler(
            self.client,
            self.zones,
            self.server.catalogue,
            clock=self.clock,
            recorder=self.recorder,
            seed=0,
            market=self.market,
            factory=self.factory,
        )
        self.scheduler.start()
        return self

    async def stop(self) -> None:
        if self.scheduler is not None:
            await self.scheduler.stop()
        if self.manager is not None:
            await self.manager.stop()
        else:
            await self.provider.close()
        if self.factory is not None:
            await self.factory.stop()
        if self.virtual_nodes is not None:
            await self.virtual_nodes.stop()
        await self.recorder.stop()
        await self.client.close()
        await self.server.stop()

    # --- reading the cluster ------------------------------------------------------

    async def create_pod(self, manifest: dict[str, Any]) -> dict[str, Any]:
        return await self.client.create(PODS, manifest)

    async def pod(self, name: str) -> dict[str, Any] | None:
        try:
            return await self.client.get(PODS, NAMESPACE, name)
        except errors.StatusError as err:
            if err.code == 404:
                return None
            raise

    async def must_pod(self, name: str) -> dict[str, Any]:
        found = await self.pod(name)
        assert found is not None, f"pod {name} is gone"
        return found

    async def pods(self) -> list[dict[str, Any]]:
        return (await self.client.list(PODS, NAMESPACE)).items

    async def record(self, name: str) -> dict[str, Any] | None:
        try:
            return await self.client.get(INSTANCES, NAMESPACE, name)
        except errors.StatusError as err:
            if err.code == 404:
                return None
            raise

    async def wait_record(self, name: str, state: str) -> dict[str, Any]:
        """The Instance record of pod ``name`` once it is in ``state``."""

        async def check() -> dict[str, Any] | None:
            record = await self.record(name)
            if record is not None and (record.get("status") or {}).get("state") == state:
                return record
            return None

        return await wait_for(check, WAIT, f"record {name} {state}")

    async def records(self) -> list[dict[str, Any]]:
        return (await self.client.list(INSTANCES, NAMESPACE)).items

    async def events_for(self, name: str, reason: str | None = None) -> list[dict[str, Any]]:
        items = (
            await self.client.list(EVENTS, NAMESPACE, field_selector=f"involvedObject.name={name}")
        ).items
        return [e for e in items if reason is None or e.get("reason") == reason]

    async def wait_for(
        self, check: Callable[[], Awaitable[T | None]], timeout: float = WAIT, what: str = ""
    ) -> T:
        """Poll ``check`` until it returns something truthy, and return that."""
        return await wait_for(check, timeout, what)

    async def wait_pod(
        self, name: str, predicate: Callable[[dict[str, Any]], Any], what: str = ""
    ) -> dict[str, Any]:
        """The pod once ``predicate`` holds for it."""

        async def check() -> dict[str, Any] | None:
            found = await self.pod(name)
            return found if found is not None and predicate(found) else None

        return await wait_for(check, WAIT, what or f"pod {name}")

    async def wait_phase(self, name: str, phase: str) -> dict[str, Any]:
        return await self.wait_pod(name, lambda p: phase_of(p) == phase, f"pod {name} {phase}")

    async def wait_gone(self, name: str) -> None:
        async def gone() -> bool:
            return await self.pod(name) is None

        await wait_for(gone, WAIT, f"pod {name} removed")

    async def settle(self) -> None:
        """Let queued work finish: events written, the manager's queue empty."""
        if self.manager is not None:
            await managing.wait_idle(self.manager)
        await self.recorder.flush()


async def wait_for(
    check: Callable[[], Awaitable[T | None]], timeout: float = WAIT, what: str = ""
) -> T:
    """Poll ``check`` until it returns something truthy, and return that."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last = await check()
    while not last:
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what or check!r}; last: {last!r}")
        await asyncio.sleep(0.02)
        last = await check()
    return last


def phase_of(pod: dict[str, Any]) -> str:
    return str((pod.get("status") or {}).get("phase", ""))


def condition(pod: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for c in (pod.get("status") or {}).get("conditions") or []:
        if c.get("type") == kind:
            return dict(c)
    return None


def annotation(pod: dict[str, Any], key: str) -> str | None:
    value = ((pod.get("metadata") or {}).get("annotations") or {}).get(key)
    return None if value is None else str(value)
