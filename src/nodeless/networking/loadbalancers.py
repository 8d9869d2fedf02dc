"""Services of type LoadBalancer on this machine: one TCP listener per
Service port on ``127.0.0.1:<port>``, relaying bytes to the Service's ready
endpoints round-robin, like k3s's ServiceLB (klipper-lb) or kind's
cloud-provider-kind give a cluster without a cloud its load balancers.

The Service's ``status.loadBalancer.ingress`` is what ``kubectl get svc``
shows as EXTERNAL-IP and what clients wait for, so it is written only for
ports actually listening, with ``ipMode: Proxy`` (traffic reaches the pods
through this relay, not addressed to the IP directly). A port that cannot be
bound (another process has it, or it is privileged) is a Warning Event
(``PortInUse``, ``PortUnavailable``) and is tried again now and then. A
listener is closed when its Service goes away, changes type or drops the
port. Services naming another ``spec.loadBalancerClass`` belong to another
controller and are left alone, as upstream's service controller does.

Only TCP ports are served; UDP and SCTP ports of a LoadBalancer Service get
no listener.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from nodeless import clocks
from nodeless.api import errors
from nodeless.client import clients, events
from nodeless.networking import servicemaps

log = logging.getLogger(__name__)

SERVICES = servicemaps.SERVICES
FIELD_MANAGER = "nodeless-load-balancer"
COMPONENT = "nodeless-load-balancer"
# Service.spec.loadBalancerClass values we serve; unset means the default (us).
LOAD_BALANCER_CLASS = "nodeless.dev/load-balancer"

CONNECT_TIMEOUT = 5.0
MAX_ATTEMPTS = 3
# How often ports that could not be bound are tried again.
RETRY_INTERVAL = 10.0
BUFFER = 65536

Key = tuple[str, str]


@dataclass
class _Balancer:
    """What is open for one Service."""

    listeners: dict[int, asyncio.Server] = field(default_factory=dict)
    # Ports that could not be bound, with the reason already reported.
    failed: dict[int, str] = field(default_factory=dict)


class LoadBalancers:
    """Listeners for every LoadBalancer Service in ``services`` (the shared
    ServiceMap, started by its owner before ``start`` is awaited)."""

    def __init__(
        self,
        client: clients.ApiClient,
        services: servicemaps.ServiceMap,
        recorder: events.EventRecorder | None = None,
        *,
        host: str = "127.0.0.1",
        connect_timeout: float = CONNECT_TIMEOUT,
        max_attempts: int = MAX_ATTEMPTS,
        retry_interval: float = RETRY_INTERVAL,
        clock: clocks.Clock | None = None,
    ) -> None:
        self.client = client
        self.services = services
        self.recorder = recorder
        self.host = host
        self.connect_timeout = connect_timeout
        self.max_attempts = max(1, max_attempts)
        self.retry_interval = retry_interval
        self._clock = clock or clocks.SystemClock()
        self._balancers: dict[Key, _Balancer] = {}
        self._dirty: set[Key] = set()
        self._wake = asyncio.Event()
        self._next: dict[tuple[Key, int], int] = {}
        self._connections: set[asyncio.Task[None]] = set()
        self._running = False
        self._subscribed = False
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self._running = True
        if not self._subscribed:
            # ServiceMap has no way to unsubscribe; _running mutes us after stop.
            self.services.on_change(self._changed)
            self._subscribed = True
        await self.services.wait_synced()
        self._dirty.update(self.services.keys())
        await self.sync()
        self._tasks = [
            asyncio.create_task(self._run(), name="load-balancers"),
            asyncio.create_task(self._retry_failed(), name="load-balancers-retry"),
        ]

    async def stop(self) -> None:
        self._running = False
        tasks, self._tasks = self._tasks, []
        for task in [*tasks, *self._connections]:
            task.cancel()
        for task in [*tasks, *self._connections]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for balancer in self._balancers.values():
            for server in balancer.listeners.values():
                server.close()
        self._balancers.clear()

    def ports(self, namespace: str, name: str) -> list[int]:
        """The ports listening for a Service."""
        balancer = self._balancers.get((namespace, name))
        return sorted(balancer.listeners) if balancer else []

    # --- converging ----------------------------------------------------------------------

    def _changed(self, key: Key) -> None:
        if self._running:
            self._dirty.add(key)
            self._wake.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.sync()
            except asyncio.CancelledError:
                raise
            except Exception as err:
                log.warning("load balancers: could not write Service status: %s", err)
                await self._clock.sleep(1.0)
                self._wake.set()

    async def _retry_failed(self) -> None:
        while True:
            await self._clock.sleep(self.retry_interval)
            failed = [key for key, b in self._balancers.items() if b.failed]
            if failed:
                self._dirty.update(failed)
                self._wake.set()

    async def sync(self) -> None:
        """Converge every Service marked changed (one at a time, so a failing
        write leaves the rest marked for the next pass)."""
        while self._dirty:
            key = self._dirty.pop()
            try:
                await self._sync(key)
            except BaseException:
                self._dirty.add(key)
                raise

    async def _sync(self, key: Key) -> None:
        obj = self.services.service_object(*key)
        wanted = _wanted_ports(obj) if obj is not None else set()
        balancer = self._balancers.setdefault(key, _Balancer())
        for port in [p for p in balancer.listeners if p not in wanted]:
            balancer.listeners.pop(port).close()
            log.info("load balancer for %s/%s stopped listening on port %d", *key, port)
        for port in [p for p in balancer.failed if p not in wanted]:
            del balancer.failed[port]
        for port in sorted(wanted - set(balancer.listeners)):
            await self._listen(key, port, balancer, obj or {})
        if not balancer.listeners and not balancer.failed:
            del self._balancers[key]
        if obj is not None:
            await self._write_status(key, obj, sorted(balancer.listeners))

    async def _listen(
        self, key: Key, port: int, balancer: _Balancer, obj: Mapping[str, Any]
    ) -> None:
        async def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            # The relay is a task of ours so that stop() can cancel it; asyncio's
            # own connection task must end normally (3.11 logs a cancelled one).
            relay = asyncio.create_task(self._relay(key, port, reader, writer))
            self._connections.add(relay)
            relay.add_done_callback(self._connections.discard)
            try:
                await asyncio.wait({relay})
            finally:
                relay.cancel()

        try:
            server = await asyncio.start_server(accepted, self.host, port, reuse_address=True)
        except OSError as err:
            reason = "PortInUse" if err.errno == errno.EADDRINUSE else "PortUnavailable"
            if balancer.failed.get(port) != reason:
                balancer.failed[port] = reason
                log.warning("load balancer for %s/%s: port %d: %s", *key, port, err)
                if self.recorder is not None:
                    self.recorder.record(
                        clients.copy_with_type(SERVICES, dict(obj)),
                        "Warning",
                        reason,
                        f"cannot listen on {self.host}:{port}: {err.strerror or err}",
                    )
            return
        balancer.failed.pop(port, None)
        balancer.listeners[port] = server
        log.info("load balancer for %s/%s listening on %s:%d", *key, self.host, port)

    async def _write_status(self, key: Key, obj: Mapping[str, Any], ports: list[int]) -> None:
        current = ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        desired: list[dict[str, Any]] = []
        if ports:
            desired = [
                {
                    "ip": self.host,
                    "ipMode": "Proxy",
                    "ports": [{"port": p, "protocol": "TCP"} for p in ports],
                }
            ]
        elif not any(entry.get("ip") == self.host for entry in current):
            return  # nothing of ours to take back
        if current == desired:
            return
        try:
            await self.client.patch(
                SERVICES,
                key[0],
                key[1],
                {"status": {"loadBalancer": {"ingress": desired or None}}},
                subresource="status",
                options=clients.WriteOptions(field_manager=FIELD_MANAGER),
            )
        except errors.StatusError as err:
            if err.code != 404:
                raise

    # --- relaying ------------------------------------------------------------------------

    def _endpoints(self, key: Key, port: int) -> list[servicemaps.Endpoint]:
        service = self.services.service(*key)
        if service is None:
            return []
        service_port = next(
            (p for p in service.ports if p.port == port and p.protocol == "TCP"), None
        )
        if service_port is None:
            return []
        every = self.services.endpoints(*key, service_port)
        ready = [e for e in every if e.ready] or [e for e in every if e.serving and e.terminating]
        if not ready:
            return []
        turn = self._next.get((key, port), 0) % len(ready)
        self._next[(key, port)] = turn + 1
        return ready[turn:] + ready[:turn]

    async def _relay(
        self, key: Key, port: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        try:
            for endpoint in self._endpoints(key, port)[: self.max_attempts]:
                try:
                    async with asyncio.timeout(self.connect_timeout):
                        upstream = await asyncio.open_connection(endpoint.ip, endpoint.port)
                    break
                except (OSError, TimeoutError) as err:
                    log.info(
                        "load balancer for %s/%s: %s:%d: %s", *key, endpoint.ip, endpoint.port, err
                    )
            if upstream is None:
                return  # closing the connection is all a TCP balancer can say
            await splice((reader, writer), upstream)
        finally:
            # Both are closed before waiting on either, so a cancelled wait
            # leaves nothing open.
            streams = [writer] if upstream is None else [writer, upstream[1]]
            for stream in streams:
                stream.close()
            for stream in streams:
                with contextlib.suppress(Exception):
                    await stream.wait_closed()


async def splice(
    client: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter],
) -> None:
    """Copy bytes both ways until both directions end or one fails; the caller
    closes the streams."""
    pumps = [
        asyncio.create_task(_pump(client[0], upstream[1])),
        asyncio.create_task(_pump(upstream[0], client[1])),
    ]
    try:
        await asyncio.wait(pumps, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        for pump in pumps:
            pump.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)


async def _pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    """Copy until EOF, then pass the half-close on (the other way may go on)."""
    while data := await source.read(BUFFER):
        sink.write(data)
        await sink.drain()
    if sink.can_write_eof() and not sink.is_closing():
        sink.write_eof()


def _wanted_ports(obj: Mapping[str, Any]) -> set[int]:
    spec = obj.get("spec") or {}
    if spec.get("type") != "LoadBalancer":
        return set()
    lb_class = spec.get("loadBalancerClass")
    if lb_class and lb_class != LOAD_BALANCER_CLASS:
        return set()
    return {
        int(p["port"])
        for p in spec.get("ports") or ()
        if (p.get("protocol") or "TCP") == "TCP" and isinstance(p.get("port"), int)
    }
