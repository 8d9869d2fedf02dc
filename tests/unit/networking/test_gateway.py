"""The ingress gateway end to end: an in-process API server (loopback client),
real aiohttp servers on 127.0.0.x standing in for pods, EndpointSlices made by
hand pointing at them, and requests through the gateway's listeners."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import logging
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from multidict import CIMultiDict
from yarl import URL

from nodeless import clocks
from nodeless.apiserver import app, loopback
from nodeless.client import clients, events, informers
from nodeless.networking import gateway, ingresses, servicemaps
from nodeless.storage import memory

NS = "default"
SERVICES = clients.ResourceRef("", "v1", "services", True, "Service")
SLICES = servicemaps.ENDPOINT_SLICES
SECRETS = gateway.SECRETS
INGRESSES = gateway.INGRESSES
EVENTS = clients.ResourceRef("", "v1", "events", True, "Event")


# --- pods: small aiohttp servers -------------------------------------------------------------


@dataclass
class Pod:
    """A backend that answers with what it received."""

    name: str
    ip: str = "127.0.0.1"
    port: int = 0
    hits: int = 0
    runner: web.AppRunner | None = None

    async def start(self) -> Pod:
        application = web.Application(client_max_size=64 * 1024 * 1024)
        application.router.add_route("GET", "/ws", self._websocket)
        application.router.add_route("GET", "/stream", self._stream)
        application.router.add_route("GET", "/broken", self._broken)
        application.router.add_route("*", "/{tail:.*}", self._echo)
        self.runner = web.AppRunner(application, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.ip, 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = getattr(server, "sockets", [])[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def _echo(self, request: web.Request) -> web.Response:
        self.hits += 1
        body = await request.read()
        if request.path == "/echo":
            return web.Response(body=body, headers={"X-Pod": self.name})
        return web.json_response(
            {
                "pod": self.name,
                "method": request.method,
                "path": request.raw_path,
                "headers": dict(request.headers),
                "body": len(body),
            },
            headers={"X-Pod": self.name, "Connection": "keep-alive, X-Private", "X-Private": "1"},
        )

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        self.hits += 1
        response = web.StreamResponse()
        await response.prepare(request)
        for i in range(5):
            await response.write(f"chunk {i}\n".encode())
        await response.write_eof()
        return response

    async def _broken(self, request: web.Request) -> web.StreamResponse:
        """Half a body, then the connection drops (a pod dying mid-answer)."""
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b"partial")
        await asyncio.sleep(0.01)
        assert request.transport is not None
        request.transport.close()
        return response

    async def _websocket(self, request: web.Request) -> web.WebSocketResponse:
        self.hits += 1
        ws = web.WebSocketResponse(protocols=["echo.v1"])
        await ws.prepare(request)
        async for message in ws:
            if message.type == aiohttp.WSMsgType.TEXT:
                await ws.send_str(f"{self.name}: {message.data}")
        return ws


# --- the cluster -------------------------------------------------------------------------------


@dataclass
class Cluster:
    server: app.ApiServer
    client: loopback.LoopbackApiClient
    factory: informers.InformerFactory
    services: servicemaps.ServiceMap
    recorder: events.EventRecorder
    stack: contextlib.AsyncExitStack
    http: aiohttp.ClientSession

    async def pod(self, name: str, ip: str = "127.0.0.1") -> Pod:
        pod = await Pod(name, ip).start()
        self.stack.push_async_callback(pod.stop)
        return pod

    async def gateway(self, **kwargs: Any) -> gateway.IngressGateway:
        kwargs.setdefault("listen", ("127.0.0.1", 0))
        gw = gateway.IngressGateway(
            self.client, self.factory, self.services, self.recorder, **kwargs
        )
        await gw.start()
        self.stack.push_async_callback(gw.stop)
        return gw

    async def service(self, name: str, port: int = 80, port_name: str = "http") -> None:
        await self.client.create(
            SERVICES,
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": name, "namespace": NS},
                "spec": {"ports": [{"name": port_name, "port": port, "targetPort": 8080}]},
            },
        )

    async def endpoints(
        self, service: str, *pods: Pod | tuple[str, int], ready: bool = True, suffix: str = ""
    ) -> None:
        """One EndpointSlice per pod (their ports differ), as a controller would
        write them for pods listening on different ports."""
        for i, pod in enumerate(pods):
            ip, port = (pod.ip, pod.port) if isinstance(pod, Pod) else pod
            await self.client.create(
                SLICES,
                {
                    "apiVersion": "discovery.k8s.io/v1",
                    "kind": "EndpointSlice",
                    "metadata": {
                        "name": f"{service}-{i}{suffix}",
                        "namespace": NS,
                        "labels": {servicemaps.SERVICE_NAME_LABEL: service},
                    },
                    "addressType": "IPv4",
                    "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
                    "endpoints": [{"addresses": [ip], "conditions": {"ready": ready}}],
                },
            )

    async def ingress(self, name: str, spec: dict[str, Any]) -> None:
        await self.client.create(
            INGRESSES,
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "Ingress",
                "metadata": {"name": name, "namespace": NS},
                "spec": {"ingressClassName": "nodeless", **spec},
            },
        )

    async def get(
        self, gw: gateway.IngressGateway, path: str, host: str = "", **kwargs: Any
    ) -> tuple[int, Any]:
        headers = dict(kwargs.pop("headers", {}))
        if host:
            headers["Host"] = host
        method = kwargs.pop("method", "GET")
        url = URL(f"http://127.0.0.1:{gw.http_port}{path}", encoded=True)
        async with self.http.request(method, url, headers=headers, **kwargs) as response:
            if response.content_type == "application/json":
                return response.status, await response.json()
            return response.status, await response.text()

    async def until(
        self, gw: gateway.IngressGateway, path: str, host: str, status: int
    ) -> tuple[int, Any]:
        """Request until the gateway's caches caught up and answer ``status``."""
        found: tuple[int, Any] = (0, None)

        async def check() -> bool:
            nonlocal found
            found = await self.get(gw, path, host)
            return found[0] == status

        await eventually(check)
        return found


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 10.0) -> Any:
    """Poll until ``check`` is truthy; the timeout only guards against a hang."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = await check()
        if result:
            return result
        if loop.time() > deadline:
            raise AssertionError(f"condition not met; last value {result!r}")
        await asyncio.sleep(0.02)


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
        recorder = events.EventRecorder(client, gateway.COMPONENT)
        recorder.start()
        stack.push_async_callback(recorder.stop)
        http = aiohttp.ClientSession(auto_decompress=False)
        stack.push_async_callback(http.close)
        yield Cluster(server, client, factory, services, recorder, stack, http)


async def routed(cluster: Cluster, gw: gateway.IngressGateway, service: str, slices: int) -> bool:
    """Whether the gateway's caches hold the Ingress and the Service's slices."""
    await asyncio.sleep(0)
    return len(cluster.services.slices_of(NS, service)) == slices and bool(
        gw.route_table().routes()
    )


def refused_address(ip: str) -> tuple[socket.socket, int]:
    """A port on ``ip`` that refuses connections: bound, never listening."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((ip, 0))
    return sock, sock.getsockname()[1]


def path(path: str, service: str, path_type: str = "Prefix", port: int | str = 80) -> Any:
    key = "number" if isinstance(port, int) else "name"
    return {
        "path": path,
        "pathType": path_type,
        "backend": {"service": {"name": service, "port": {key: port}}},
    }


# --- routing ---------------------------------------------------------------------------------


async def test_routes_by_host_and_forwards_path_query_and_headers(cluster: Cluster) -> None:
    a, b = await cluster.pod("a"), await cluster.pod("b")
    for name, pod in (("svc-a", a), ("svc-b", b)):
        await cluster.service(name)
        await cluster.endpoints(name, pod)
    await cluster.ingress(
        "web",
        {
            "rules": [
                {"host": "a.example.com", "http": {"paths": [path("/", "svc-a")]}},
                {"host": "b.example.com", "http": {"paths": [path("/", "svc-b")]}},
            ]
        },
    )
    gw = await cluster.gateway()
    _, seen = await cluster.until(gw, "/x/y%20z?q=1&r=%2F", "a.example.com", 200)
    assert seen["pod"] == "a"
    assert seen["path"] == "/x/y%20z?q=1&r=%2F"
    headers = CIMultiDict(seen["headers"])
    assert headers["Host"] == "a.example.com"
    assert headers["X-Forwarded-For"] == "127.0.0.1"
    assert headers["X-Forwarded-Proto"] == "http"
    assert headers["X-Forwarded-Host"] == "a.example.com"
    assert len(headers["X-Request-Id"]) == 32

    status, seen = await cluster.get(
        gw,
        "/",
        "B.example.com:8080",
        headers={"X-Request-Id": "req-1", "X-Forwarded-For": "203.0.113.9", "Cookie": "c=1"},
    )
    assert (status, seen["pod"]) == (200, "b")
    assert CIMultiDict(seen["headers"])["X-Request-Id"] == "req-1"
    assert seen["headers"]["X-Forwarded-For"] == "203.0.113.9, 127.0.0.1"
    assert seen["headers"]["Cookie"] == "c=1"
    assert (await cluster.get(gw, "/", "c.example.com"))[0] == 404


async def test_hop_by_hop_headers_stay_on_their_hop(cluster: Cluster) -> None:
    pod = await cluster.pod("a")
    await cluster.service("svc")
    await cluster.endpoints("svc", pod)
    await cluster.ingress("web", {"rules": [{"http": {"paths": [path("/", "svc")]}}]})
    gw = await cluster.gateway()
    await cluster.until(gw, "/", "h", 200)
    url = f"http://127.0.0.1:{gw.http_port}/"
    headers = {"Connection": "keep-alive, X-Secret", "X-Secret": "s", "Keep-Alive": "timeout=5"}
    async with cluster.http.get(url, headers=headers) as response:
        seen = await response.json()
        assert "X-Private" not in response.headers  # listed in the pod's Connection header
        assert response.headers["X-Pod"] == "a"
    assert "X-Secret" not in seen["headers"]
    assert "Keep-Alive" not in seen["headers"]


async def test_paths_split_exact_before_prefix_and_the_default_backend(cluster: Cluster) -> None:
    pods = {name: await cluster.pod(name) for name in ("api", "exact", "web", "fallback")}
    for name, pod in pods.items():
        await cluster.service(name)
        await cluster.endpoints(name, pod)
    await cluster.ingress(
        "web",
        {
            "defaultBackend": {"service": {"name": "fallback", "port": {"name": "http"}}},
            "rules": [
                {
                    "host": "shop.example.com",
                    "http": {
                        "paths": [
                            path("/", "web"),
                            path("/api", "api"),
                            path("/api/health", "exact", "Exact"),
                        ]
                    },
                }
            ],
        },
    )
    gw = await cluster.gateway()
    await cluster.until(gw, "/", "shop.example.com", 200)
    cases = {
        ("shop.example.com", "/"): "web",
        ("shop.example.com", "/apiary"): "web",
        ("shop.example.com", "/api"): "api",
        ("shop.example.com", "/api/v1/items"): "api",
        ("shop.example.com", "/api/health"): "exact",
        ("shop.example.com", "/api/health/deep"): "api",
        ("elsewhere.org", "/api"): "fallback",
    }
    for (host, where), expected in cases.items():
        status, seen = await cluster.get(gw, where, host)
        assert (status, seen["pod"]) == (200, expected), (host, where)


async def test_route_changes_take_effect_without_a_restart(cluster: Cluster) -> None:
    pod = await cluster.pod("a")
    await cluster.service("svc")
    await cluster.endpoints("svc", pod)
    gw = await cluster.gateway()
    assert (await cluster.get(gw, "/", "a.com"))[0] == 404
    await cluster.ingress(
        "web", {"rules": [{"host": "a.com", "http": {"paths": [path("/", "svc")]}}]}
    )
    await cluster.until(gw, "/", "a.com", 200)
    await cluster.client.delete(INGRESSES, NS, "web")
    await cluster.until(gw, "/", "a.com", 404)


async def test_streams_bodies_both_ways(cluster: Cluster) -> None:
    pod = await cluster.pod("a")
    await cluster.service("svc")
    await cluster.endpoints("svc", pod)
    await cluster.ingress("web", {"rules": [{"http": {"paths": [path("/", "svc")]}}]})
    gw = await cluster.gateway()
    await cluster.until(gw, "/", "h", 200)
    url = f"http://127.0.0.1:{gw.http_port}"
    payload = bytes(range(256)) * 8192  # 2 MiB

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(0, len(payload), 65536):
            yield payload[i : i + 65536]

    async with cluster.http.post(f"{url}/echo", data=chunks()) as response:
        assert response.status == 200
        assert await response.read() == payload
    small = payload[:500_000]  # with a Content-Length this time
    async with cluster.http.put(f"{url}/echo", data=small) as response:
        assert await response.read() == small
    async with cluster.http.get(f"{url}/stream") as response:
        assert response.headers.get("Transfer-Encoding") == "chunked"
        assert await response.text() == "".join(f"chunk {i}\n" for i in range(5))
    async with cluster.http.head(f"{url}/anything") as response:
        assert response.status == 200
        assert await response.read() == b""


async def test_an_upstream_breaking_mid_body_breaks_the_client_connection(
    cluster: Cluster,
) -> None:
    pod = await cluster.pod("a")
    await cluster.service("svc")
    await cluster.endpoints("svc", pod)
    await cluster.ingress("web", {"rules": [{"http": {"paths": [path("/", "svc")]}}]})
    gw = await cluster.gateway()
    await cluster.until(gw, "/", "h", 200)
    async with cluster.http.get(f"http://127.0.0.1:{gw.http_port}/broken") as response:
        assert response.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()  # never a clean end of a truncated body


async def test_websockets_pass_through(cluster: Cluster) -> None:
    pod = await cluster.pod("a")
    await cluster.service("svc")
    await cluster.endpoints("svc", pod)
    await cluster.ingress("web", {"rules": [{"http": {"paths": [path("/", "svc")]}}]})
    gw = await cluster.gateway()
    await cluster.until(gw, "/", "h", 200)
    url = f"http://127.0.0.1:{gw.http_port}/ws"
    async with cluster.http.ws_connect(url, protocols=["echo.v1"]) as ws:
        assert ws.protocol == "echo.v1"
        await ws.send_str("hello")
        assert await ws.receive_str() == "a: hello"
        await ws.send_str("again")
        assert await ws.receive_str() == "a: again"


# --- endpoints -------------------------------------------------------------------------------


async def test_503_when_the_service_has_no_ready_endpoints(cluster: Cluster) -> None:
    pod = await cluster.pod("a")
    await cluster.service("svc")
    await cluster.endpoints("svc", pod, ready=False)
    await cluster.ingress(
        "web",
        {
            "rules": [
                {
                    "http": {
                        "paths": [
                            path("/", "svc"),
                            path("/missing", "missing"),
                            path("/wrong-port", "svc", port=81),
                        ]
                    }
                }
            ]
        },
    )
    gw = await cluster.gateway()
    status, text = await cluster.until(gw, "/", "h", 503)
    assert "no ready endpoints" in text
    assert pod.hits == 0
    status, text = await cluster.get(gw, "/missing", "h")
    assert (status, text) == (503, "Service default/missing not found\n")
    assert (await cluster.get(gw, "/wrong-port", "h"))[0] == 503


async def test_round_robin_and_a_refused_endpoint_is_retried_on_the_next(
    cluster: Cluster,
) -> None:
    first, second = (
        await cluster.pod("first", "127.0.0.3"),
        await cluster.pod("second", "127.0.0.4"),
    )
    refusing, refused_port = refused_address("127.0.0.2")
    with refusing:
        await cluster.service("svc")
        await cluster.endpoints("svc", ("127.0.0.2", refused_port), first, second)
        await cluster.ingress("web", {"rules": [{"http": {"paths": [path("/", "svc")]}}]})
        gw = await cluster.gateway()
        await eventually(lambda: routed(cluster, gw, "svc", 3))
        first.hits = second.hits = 0
        answers = [await cluster.get(gw, "/", "h") for _ in range(6)]
        answers += [await cluster.get(gw, "/", "h", method="POST", data=b"x" * 1000)]
    assert [status for status, _ in answers] == [200] * 7
    assert {seen["body"] for _, seen in answers} == {0, 1000}
    # Every endpoint takes its turn; the refused one's turns go to the next.
    assert first.hits + second.hits == 7
    assert first.hits >= 2 and second.hits >= 2


async def test_a_dropped_connection_is_retried_only_for_idempotent_requests(
    cluster: Cluster,
) -> None:
    dropped = 0

    async def drop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal dropped
        await reader.readuntil(b"\r\n\r\n")
        dropped += 1
        writer.transport.abort()

    dropper = await asyncio.start_server(drop, "127.0.0.2", 0)
    good = await cluster.pod("good", "127.0.0.3")
    async with dropper:
        await cluster.service("svc")
        await cluster.endpoints("svc", ("127.0.0.2", dropper.sockets[0].getsockname()[1]), good)
        await cluster.ingress("web", {"rules": [{"http": {"paths": [path("/", "svc")]}}]})
        gw = await cluster.gateway()
        await eventually(lambda: routed(cluster, gw, "svc", 2))
        # Turns: dropper first, then the good pod first, then the dropper again.
        # (aiohttp itself tries an idempotent request once more on a fresh
        # connection to the same endpoint, as RFC 9112 9.3.1 allows.)
        status, seen = await cluster.get(gw, "/", "h")
        assert (status, seen["pod"]) == (200, "good")
        assert dropped >= 1
        assert (await cluster.get(gw, "/", "h"))[0] == 200
        before = dropped
        status, _ = await cluster.get(gw, "/", "h", method="POST", data=b"order=1")
        assert (status, dropped - before, good.hits) == (502, 1, 2)


async def test_502_when_every_endpoint_refuses(cluster: Cluster) -> None:
    refusing, port = refused_address("127.0.0.2")
    with refusing:
        await cluster.service("svc")
        await cluster.endpoints("svc", ("127.0.0.2", port))
        await cluster.ingress("web", {"rules": [{"http": {"paths": [path("/", "svc")]}}]})
        gw = await cluster.gateway()
        _, text = await cluster.until(gw, "/", "h", 502)
    assert "127.0.0.2" in text


async def test_the_activator_wakes_a_service_and_the_held_request_completes(
    cluster: Cluster,
) -> None:
    pod = await cluster.pod("a")
    await cluster.service("svc")
    await cluster.ingress("web", {"rules": [{"http": {"paths": [path("/", "svc")]}}]})
    called: list[tuple[str, str]] = []
    activated = asyncio.Event()

    async def activator(namespace: str, name: str) -> None:
        called.append((namespace, name))
        activated.set()

    gw = await cluster.gateway(activator=activator)
    await eventually(lambda: routed(cluster, gw, "svc", 0))
    held = [asyncio.create_task(cluster.get(gw, "/", "h")) for _ in range(3)]
    await activated.wait()
    await asyncio.sleep(0.05)
    assert not any(task.done() for task in held)
    await cluster.endpoints("svc", pod)
    answers = await asyncio.gather(*held)
    assert [(status, seen["pod"]) for status, seen in answers] == [(200, "a")] * 3
    assert called == [(NS, "svc")]  # one activation for all waiting requests


async def test_a_request_served_by_draining_pods_still_wakes_the_service(
    cluster: Cluster,
) -> None:
    pod = await cluster.pod("a")
    await cluster.service("svc")
    await cluster.client.create(
        SLICES,
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": "svc-draining",
                "namespace": NS,
                "labels": {servicemaps.SERVICE_NAME_LABEL: "svc"},
            },
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": pod.port, "protocol": "TCP"}],
            "endpoints": [
                {
                    "addresses": [pod.ip],
                    "conditions": {"ready": False, "serving": True, "terminating": True},
                }
            ],
        },
    )
    await cluster.ingress("web", {"rules": [{"http": {"paths": [path("/", "svc")]}}]})
    activated = asyncio.Event()

    async def activator(namespace: str, name: str) -> None:
        activated.set()

    gw = await cluster.gateway(activator=activator)
    _, seen = await cluster.until(gw, "/", "h", 200)
    assert seen["pod"] == "a", "served by the draining pod, not held"
    await asyncio.wait_for(activated.wait(), timeout=10)


async def test_a_held_request_gives_up_after_the_hold_timeout(cluster: Cluster) -> None:
    await cluster.service("svc")
    await cluster.ingress("web", {"rules": [{"http": {"paths": [path("/", "svc")]}}]})
    clock = clocks.FakeClock()
    activated = asyncio.Event()

    async def activator(namespace: str, name: str) -> None:
        activated.set()

    gw = await cluster.gateway(activator=activator, hold_timeout=30.0, clock=clock)
    await eventually(lambda: routed(cluster, gw, "svc", 0))
    held = asyncio.create_task(cluster.get(gw, "/", "h"))
    await activated.wait()
    await clock.advance(29.0)
    assert not held.done()
    await clock.advance(2.0)
    status, text = await held
    assert status == 503 and "no ready endpoints" in text


# --- status, events, class -------------------------------------------------------------------


async def test_ingress_class_and_status_are_written(cluster: Cluster) -> None:
    await cluster.ingress("web", {"rules": [{"http": {"paths": [path("/", "svc")]}}]})
    await cluster.client.create(
        INGRESSES,
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "Ingress",
            "metadata": {"name": "theirs", "namespace": NS},
            "spec": {"ingressClassName": "nginx", "defaultBackend": path("/", "x")["backend"]},
        },
    )
    gw = await cluster.gateway(listen=("0.0.0.0", 0))
    ingress_class = await cluster.client.get(gateway.INGRESS_CLASSES, "", "nodeless")
    assert ingress_class["spec"]["controller"] == "nodeless.dev/ingress-gateway"
    annotations = ingress_class["metadata"]["annotations"]
    assert annotations["ingressclass.kubernetes.io/is-default-class"] == "true"

    async def status() -> Any:
        obj = await cluster.client.get(INGRESSES, NS, "web")
        return (obj.get("status") or {}).get("loadBalancer", {}).get("ingress")

    assert await eventually(status) == [{"ip": "127.0.0.1"}]
    await gw.reconcile()
    theirs = await cluster.client.get(INGRESSES, NS, "theirs")
    assert not (theirs.get("status") or {}).get("loadBalancer")


async def test_an_existing_ingress_class_is_not_overwritten(cluster: Cluster) -> None:
    await cluster.client.create(
        gateway.INGRESS_CLASSES,
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "IngressClass",
            "metadata": {"name": "nodeless", "labels": {"mine": "yes"}},
            "spec": {"controller": ingresses.CONTROLLER},
        },
    )
    await cluster.gateway()
    found = await cluster.client.get(gateway.INGRESS_CLASSES, "", "nodeless")
    assert found["metadata"]["labels"] == {"mine": "yes"}
    assert not found["metadata"].get("annotations")


async def test_a_missing_service_is_a_warning_event_and_other_routes_keep_working(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="nodeless.gateway.access")
    pod = await cluster.pod("a")
    await cluster.service("svc")
    await cluster.endpoints("svc", pod)
    await cluster.ingress(
        "web", {"rules": [{"http": {"paths": [path("/", "svc"), path("/gone", "nowhere")]}}]}
    )
    gw = await cluster.gateway()
    await cluster.until(gw, "/", "h", 200)
    assert (await cluster.get(gw, "/gone", "h"))[0] == 503

    async def warnings() -> list[dict[str, Any]]:
        await cluster.recorder.flush()
        items = (await cluster.client.list(EVENTS, NS)).items
        return [
            e
            for e in items
            if e["involvedObject"]["name"] == "web" and e["reason"] == "BackendNotFound"
        ]

    found = await eventually(warnings)
    assert found[0]["type"] == "Warning"
    assert found[0]["message"] == "Service default/nowhere not found"
    assert found[0]["involvedObject"]["kind"] == "Ingress"
    # Reported once while it lasts, however often the table is rebuilt.
    await cluster.service("unrelated")
    await gw.reconcile()
    await gw.reconcile()
    again = await warnings()
    assert [(e["count"], e["metadata"]["name"]) for e in again] == [
        (1, found[0]["metadata"]["name"])
    ]
    lines = [r.getMessage() for r in caplog.records if r.name == "nodeless.gateway.access"]
    assert any('"GET /gone" 503' in line for line in lines)
    assert any('"GET /" 200' in line and f"127.0.0.1:{pod.port}" in line for line in lines)


# --- TLS ---------------------------------------------------------------------------------------


def _issue(
    common_name: str, issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer[0].subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if issuer is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(common_name)]), critical=False
        )
    return builder.sign(issuer[1] if issuer else key, hashes.SHA256()), key


def _pem(cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> dict[str, str]:
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return {
        "tls.crt": base64.b64encode(cert.public_bytes(serialization.Encoding.PEM)).decode(),
        "tls.key": base64.b64encode(key_pem).decode(),
    }


async def _handshake(
    port: int, server_name: str, context: ssl.SSLContext
) -> tuple[x509.Certificate, str]:
    """The certificate the gateway presents for ``server_name``, and its answer
    to a GET for that host over the same connection."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=context, server_hostname=server_name
    )
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        writer.write(f"GET / HTTP/1.1\r\nHost: {server_name}\r\nConnection: close\r\n\r\n".encode())
        answer = (await reader.read()).decode(errors="replace")
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
    return x509.load_der_x509_certificate(der), answer


def _common_name(cert: x509.Certificate) -> str:
    return str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)


async def test_tls_chooses_the_certificate_by_sni(cluster: Cluster) -> None:
    ca = _issue("test-ca", None)
    for host in ("a.example.com", "b.example.com"):
        cert, key = _issue(host, ca)
        await cluster.client.create(
            SECRETS,
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": host, "namespace": NS},
                "type": "kubernetes.io/tls",
                "data": _pem(cert, key),
            },
        )
    a, b = await cluster.pod("a"), await cluster.pod("b")
    for name, pod in (("svc-a", a), ("svc-b", b)):
        await cluster.service(name)
        await cluster.endpoints(name, pod)
    await cluster.ingress(
        "web",
        {
            "tls": [
                {"hosts": ["a.example.com"], "secretName": "a.example.com"},
                {"hosts": ["b.example.com"], "secretName": "b.example.com"},
            ],
            "rules": [
                {"host": "a.example.com", "http": {"paths": [path("/", "svc-a")]}},
                {"host": "b.example.com", "http": {"paths": [path("/", "svc-b")]}},
            ],
        },
    )
    gw = await cluster.gateway(tls_listen=("127.0.0.1", 0))
    await cluster.until(gw, "/", "a.example.com", 200)
    trusting = ssl.create_default_context(
        cadata=ca[0].public_bytes(serialization.Encoding.PEM).decode()
    )
    for host, pod in (("a.example.com", "a"), ("b.example.com", "b")):
        cert, answer = await _handshake(gw.https_port, host, trusting)  # verifies the name
        assert _common_name(cert) == host
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.DNSName) == [host]
        assert answer.startswith("HTTP/1.1 200")
        assert f'"pod": "{pod}"' in answer
        assert '"X-Forwarded-Proto": "https"' in answer
    anything = ssl.create_default_context()
    anything.check_hostname = False
    anything.verify_mode = ssl.CERT_NONE
    cert, answer = await _handshake(gw.https_port, "unknown.example.org", anything)
    assert _common_name(cert) == gateway.FALLBACK_COMMON_NAME
    assert answer.startswith("HTTP/1.1 404")


async def test_unusable_tls_secrets_are_warning_events(cluster: Cluster) -> None:
    for name, secret_type in (("plain", "Opaque"), ("garbage", "kubernetes.io/tls")):
        await cluster.client.create(
            SECRETS,
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": name, "namespace": NS},
                "type": secret_type,
                "data": {"tls.crt": "eA==", "tls.key": "eA=="},
            },
        )
    await cluster.ingress(
        "web",
        {
            "tls": [
                {"hosts": ["a.com"], "secretName": "plain"},
                {"hosts": ["b.com"], "secretName": "garbage"},
            ],
            "defaultBackend": path("/", "svc")["backend"],
        },
    )
    gw = await cluster.gateway(tls_listen=("127.0.0.1", 0))
    assert gw.urls() == [
        f"http://127.0.0.1:{gw.http_port}",
        f"https://127.0.0.1:{gw.https_port}",
    ]

    async def warnings() -> dict[str, str] | None:
        await cluster.recorder.flush()
        items = (await cluster.client.list(EVENTS, NS)).items
        found = {
            e["message"].split(":")[0]: e["reason"]
            for e in items
            if e["involvedObject"]["name"] == "web" and e["type"] == "Warning"
        }
        return found if len(found) == 3 else None

    assert await eventually(warnings) == {
        "TLS Secret default/plain is of type Opaque, not kubernetes.io/tls": "InvalidTLSSecret",
        "TLS Secret default/garbage": "InvalidTLSSecret",  # does not load
        "Service default/svc not found": "BackendNotFound",
    }
    # The handshake goes on with the fallback certificate.
    anything = ssl.create_default_context()
    anything.check_hostname = False
    anything.verify_mode = ssl.CERT_NONE
    cert, answer = await _handshake(gw.https_port, "b.com", anything)
    assert _common_name(cert) == gateway.FALLBACK_COMMON_NAME
    assert answer.startswith("HTTP/1.1 503")


async def test_stop_is_clean_and_a_stopped_gateway_refuses(cluster: Cluster) -> None:
    gw = await cluster.gateway()
    port = gw.http_port
    await gw.stop()
    with pytest.raises(aiohttp.ClientConnectionError):
        await cluster.http.get(f"http://127.0.0.1:{port}/")


# --- Knative Services ---------------------------------------------------------------------------

KSVC = clients.ResourceRef("serving.knative.dev", "v1", "services", True, "Service")


async def test_a_knative_service_splits_its_traffic_exactly_and_tags_reach_one_revision(
    cluster: Cluster,
) -> None:
    old, new = await cluster.pod("old"), await cluster.pod("new")
    for name, pod in (("hello-00001", old), ("hello-00002", new)):
        await cluster.service(name)
        await cluster.endpoints(name, pod)
    await cluster.client.create(
        KSVC,
        {
            "apiVersion": "serving.knative.dev/v1",
            "kind": "Service",
            "metadata": {"name": "hello", "namespace": NS},
            "spec": {"template": {"spec": {"containers": [{"image": "hello"}]}}},
        },
    )
    # What the Knative Service controller publishes once both Revisions are Ready.
    await cluster.client.patch(
        KSVC,
        NS,
        "hello",
        {
            "status": {
                "url": "http://hello.default.example.com",
                "traffic": [
                    {"revisionName": "hello-00001", "percent": 90},
                    {
                        "revisionName": "hello-00002",
                        "percent": 10,
                        "tag": "canary",
                        "url": "http://canary-hello.default.example.com",
                    },
                ],
            }
        },
        subresource="status",
    )
    seen_services: list[str] = []

    def on_request(namespace: str, service: str) -> Callable[[], None]:
        seen_services.append(service)
        return lambda: None

    gw = await cluster.gateway(on_request=on_request)
    await eventually(lambda: routed(cluster, gw, "hello-00002", 1))
    await cluster.until(gw, "/", "hello.default.example.com", 200)
    old.hits = new.hits = 0
    seen_services.clear()
    answers = [await cluster.get(gw, "/x", "hello.default.example.com") for _ in range(100)]
    assert {status for status, _ in answers} == {200}
    assert (old.hits, new.hits) == (90, 10)
    # Requests are counted against the Revision's Service (the autoscaler's key).
    assert sorted(set(seen_services)) == ["hello-00001", "hello-00002"]
    for _ in range(5):
        status, seen = await cluster.get(gw, "/", "canary-hello.default.example.com")
        assert (status, seen["pod"]) == (200, "new")
    status, _ = await cluster.get(gw, "/", "other.default.example.com")
    assert status == 404


async def test_draining_pods_that_refuse_make_the_request_wait_for_a_ready_one(
    cluster: Cluster,
) -> None:
    refusing, refused_port = refused_address("127.0.0.2")
    with refusing:
        await cluster.service("svc")
        await cluster.client.create(
            SLICES,
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": "svc-draining",
                    "namespace": NS,
                    "labels": {servicemaps.SERVICE_NAME_LABEL: "svc"},
                },
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": refused_port, "protocol": "TCP"}],
                "endpoints": [
                    {
                        "addresses": ["127.0.0.2"],
                        "conditions": {"ready": False, "serving": True, "terminating": True},
                    }
                ],
            },
        )
        await cluster.ingress("web", {"rules": [{"http": {"paths": [path("/", "svc")]}}]})
        woken = await cluster.pod("woken", "127.0.0.5")

        async def activator(namespace: str, name: str) -> None:
            # The Deployment scales up: a ready pod appears.
            await cluster.endpoints("svc", woken, suffix="-new")

        gw = await cluster.gateway(activator=activator)
        await eventually(lambda: routed(cluster, gw, "svc", 1))
        status, seen = await cluster.get(gw, "/", "h")
    assert (status, seen["pod"]) == (200, "woken")
