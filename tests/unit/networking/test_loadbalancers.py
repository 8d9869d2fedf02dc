"""LoadBalancer Services on 127.0.0.1: listeners, relaying, status and the
port-in-use Event, against an in-process API server and TCP echo servers
standing in for pods."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from nodeless.apiserver import app, loopback
from nodeless.client import clients, events, informers
from nodeless.networking import loadbalancers, servicemaps
from nodeless.storage import memory

from .test_gateway import eventually, refused_address

NS = "default"
SERVICES = servicemaps.SERVICES
SLICES = servicemaps.ENDPOINT_SLICES
EVENTS = clients.ResourceRef("", "v1", "events", True, "Event")


@dataclass
class Cluster:
    client: loopback.LoopbackApiClient
    services: servicemaps.ServiceMap
    recorder: events.EventRecorder
    balancers: loadbalancers.LoadBalancers
    stack: contextlib.AsyncExitStack

    async def echo(self, name: str, ip: str) -> int:
        """A pod answering every line with ``<name>: <line>``."""

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while line := await reader.readline():
                writer.write(f"{name}: ".encode() + line)
                await writer.drain()
            writer.close()

        server = await asyncio.start_server(serve, ip, 0)
        self.stack.push_async_callback(_closed, server)
        return int(server.sockets[0].getsockname()[1])

    async def service(self, name: str, port: int, kind: str = "LoadBalancer") -> None:
        await self.client.create(
            SERVICES,
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": name, "namespace": NS},
                "spec": {"type": kind, "ports": [{"name": "tcp", "port": port}]},
            },
        )

    async def endpoints(self, service: str, *addresses: tuple[str, int]) -> None:
        for i, (ip, port) in enumerate(addresses):
            await self.client.create(
                SLICES,
                {
                    "apiVersion": "discovery.k8s.io/v1",
                    "kind": "EndpointSlice",
                    "metadata": {
                        "name": f"{service}-{i}",
                        "namespace": NS,
                        "labels": {servicemaps.SERVICE_NAME_LABEL: service},
                    },
                    "addressType": "IPv4",
                    "ports": [{"name": "tcp", "port": port, "protocol": "TCP"}],
                    "endpoints": [{"addresses": [ip], "conditions": {"ready": True}}],
                },
            )

    async def status(self, name: str) -> Any:
        obj = await self.client.get(SERVICES, NS, name)
        return ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress")


async def _closed(server: asyncio.Server) -> None:
    server.close()
    await server.wait_closed()


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    server = app.ApiServer(memory.MemoryBackend(), port=0, tls=False)
    await server.start()
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(server.stop)
        client = loopback.LoopbackApiClient(server.api)
        stack.push_async_callback(client.close)
        factory = informers.InformerFactory(client)
        stack.push_async_callback(factory.stop)
        services = servicemaps.ServiceMap(factory)
        services.start()
        stack.callback(services.stop)
        recorder = events.EventRecorder(client, loadbalancers.COMPONENT)
        recorder.start()
        stack.push_async_callback(recorder.stop)
        balancers = loadbalancers.LoadBalancers(client, services, recorder)
        await balancers.start()
        stack.push_async_callback(balancers.stop)
        yield Cluster(client, services, recorder, balancers, stack)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def talk(port: int, line: str) -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(line.encode() + b"\n")
        writer.write_eof()  # the half-close reaches the pod, and its answer still comes back
        return (await reader.read()).decode()
    finally:
        writer.close()


async def test_a_load_balancer_service_listens_relays_and_has_a_status(cluster: Cluster) -> None:
    refusing, refused_port = refused_address("127.0.0.2")
    with refusing:
        a = await cluster.echo("a", "127.0.0.3")
        b = await cluster.echo("b", "127.0.0.4")
        port = free_port()
        await cluster.service("web", port)
        await cluster.endpoints(
            "web", ("127.0.0.2", refused_port), ("127.0.0.3", a), ("127.0.0.4", b)
        )
        assert await eventually(lambda: cluster.status("web")) == [
            {"ip": "127.0.0.1", "ipMode": "Proxy", "ports": [{"port": port, "protocol": "TCP"}]}
        ]
        await eventually(lambda: asyncio.sleep(0, len(cluster.services.slices_of(NS, "web")) == 3))
        answers = [await talk(port, f"hello {i}") for i in range(6)]
    # Round-robin over the ready endpoints; the refusing one's turns go to the next.
    assert sorted(answers) == sorted(
        [f"a: hello {i}\n" for i in (0, 1, 3, 4)] + [f"b: hello {i}\n" for i in (2, 5)]
    )


async def test_a_port_in_use_is_a_warning_event_and_no_status(cluster: Cluster) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        await cluster.service("web", port)

        async def warned() -> list[dict[str, Any]]:
            await cluster.recorder.flush()
            return [
                e
                for e in (await cluster.client.list(EVENTS, NS)).items
                if e["involvedObject"]["name"] == "web" and e["reason"] == "PortInUse"
            ]

        found = await eventually(warned)
        assert found[0]["type"] == "Warning"
        assert found[0]["involvedObject"]["kind"] == "Service"
        assert await cluster.status("web") is None
        assert cluster.balancers.ports(NS, "web") == []


async def test_the_listener_closes_when_the_service_changes_type_or_goes(cluster: Cluster) -> None:
    pod = await cluster.echo("a", "127.0.0.3")
    port, other = free_port(), free_port()
    await cluster.service("web", port)
    await cluster.service("db", other)
    await cluster.endpoints("web", ("127.0.0.3", pod))
    await eventually(lambda: cluster.status("web"))
    await eventually(lambda: cluster.status("db"))
    assert await talk(port, "x") == "a: x\n"

    obj = await cluster.client.get(SERVICES, NS, "web")
    obj["spec"]["type"] = "ClusterIP"
    await cluster.client.update(SERVICES, obj)
    assert await eventually(lambda: asyncio.sleep(0, not cluster.balancers.ports(NS, "web")))
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)
    assert await eventually(lambda: _cleared(cluster, "web"))

    await cluster.client.delete(SERVICES, NS, "db")
    assert await eventually(lambda: asyncio.sleep(0, not cluster.balancers.ports(NS, "db")))
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", other)


async def _cleared(cluster: Cluster, name: str) -> bool:
    return await cluster.status(name) is None


async def test_cluster_ip_services_and_other_classes_get_no_listener(cluster: Cluster) -> None:
    port = free_port()
    await cluster.service("internal", port, kind="ClusterIP")
    await cluster.client.create(
        SERVICES,
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "theirs", "namespace": NS},
            "spec": {
                "type": "LoadBalancer",
                "loadBalancerClass": "example.com/other",
                "ports": [{"port": port}],
            },
        },
    )
    await eventually(lambda: asyncio.sleep(0, len(cluster.services.keys()) >= 3))
    await cluster.balancers.sync()
    assert cluster.balancers.ports(NS, "internal") == []
    assert cluster.balancers.ports(NS, "theirs") == []
    assert await cluster.status("theirs") is None
