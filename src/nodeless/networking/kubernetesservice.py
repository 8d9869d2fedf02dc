"""The ``kubernetes`` Service reachable from pods, as in-cluster clients
(client-go's ``rest.InClusterConfig``, kubectl in a pod, operators) expect:
``https://kubernetes.default.svc`` or ``$KUBERNETES_SERVICE_HOST:443``.

The API server usually listens on the host's loopback, which a pod cannot
reach. So this relays TCP from the pod bridge's address (the host as pods
see it, bound with IP_FREEBIND since the bridge may not exist yet) to the
API server, on the same port, and points the Service's EndpointSlice and
Endpoints there; the service proxy then carries the ClusterIP to it. TLS
passes through untouched: the API server's certificate names the ClusterIP
and ``kubernetes.default.svc``, and pods get the CA in their service-account
volume. An API server listening on every address needs no relay, only the
endpoints.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import sys
from typing import Any

from nodeless.client import clients
from nodeless.networking import loadbalancers, servicemaps

log = logging.getLogger(__name__)

ENDPOINTS = clients.ResourceRef("", "v1", "endpoints", True, "Endpoints")
NAMESPACE = "default"
NAME = "kubernetes"
MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
MANAGED_BY = "networking.nodeless.dev"
IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)
CONNECT_TIMEOUT = 5.0


def needs_relay(api_host: str) -> bool:
    """Whether pods cannot reach the API server's listen address themselves."""
    if api_host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(api_host).is_loopback
    except ValueError:
        return False


def endpoint_objects(ip: str, port: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The EndpointSlice (what the proxy reads) and the Endpoints (what
    kubectl shows) of the ``kubernetes`` Service, as upstream names them."""
    ports = [{"name": "https", "port": port, "protocol": "TCP"}]
    endpoint_slice = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": NAME,
            "namespace": NAMESPACE,
            "labels": {servicemaps.SERVICE_NAME_LABEL: NAME, MANAGED_BY_LABEL: MANAGED_BY},
        },
        "addressType": "IPv4",
        "endpoints": [{"addresses": [ip], "conditions": {"ready": True}}],
        "ports": ports,
    }
    legacy = {
        "apiVersion": "v1",
        "kind": "Endpoints",
        "metadata": {"name": NAME, "namespace": NAMESPACE},
        "subsets": [{"addresses": [{"ip": ip}], "ports": ports}],
    }
    return endpoint_slice, legacy


class KubernetesService:
    """Relays pods' connections at ``host`` (the bridge's address) to the API
    server at ``api``; its owner writes ``endpoint_objects(endpoint_ip, port)``."""

    def __init__(self, client: clients.ApiClient, host: str, api: tuple[str, int]) -> None:
        self.client = client
        self.host = host
        self.api = api
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    @property
    def endpoint_ip(self) -> str:
        """Where pods reach the API server: the relay, or the API server's own
        address (a wildcard listen address covers the bridge's)."""
        api_host = self.api[0]
        if needs_relay(api_host) or api_host in ("0.0.0.0", "::"):
            return self.host
        return api_host

    async def start(self) -> None:
        if needs_relay(self.api[0]):
            self._server = await asyncio.start_server(self._accepted, sock=self._bind(self.api[1]))

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for task in list(self._connections):
            task.cancel()
        for task in list(self._connections):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def _bind(self, port: int) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if sys.platform.startswith("linux"):
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
            sock.bind((self.host, port))
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        relay = asyncio.create_task(self._relay(reader, writer))
        self._connections.add(relay)
        relay.add_done_callback(self._connections.discard)
        try:
            await asyncio.wait({relay})
        finally:
            relay.cancel()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        api_host = "127.0.0.1" if self.api[0] in ("localhost", "") else self.api[0]
        try:
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT):
                    upstream = await asyncio.open_connection(api_host, self.api[1])
            except (OSError, TimeoutError) as err:
                log.info("kubernetes Service relay: API server unreachable: %s", err)
                return
            await loadbalancers.splice((reader, writer), upstream)
        finally:
            streams = [writer] if upstream is None else [writer, upstream[1]]
            for stream in streams:
                stream.close()
            for stream in streams:
                with contextlib.suppress(Exception):
                    await stream.wait_closed()
