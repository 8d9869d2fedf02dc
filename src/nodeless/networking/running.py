"""The networking of one host, started together: Service virtual IPs (the
service proxy), cluster DNS behind the ``kube-dns`` Service, and the ingress
gateway. It runs where the pods' bridge is, beside the CRI provider."""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nodeless.api import errors
from nodeless.client import clients, events, informers
from nodeless.networking import (
    activation,
    clusterdns,
    gateway,
    kubernetesservice,
    loadbalancers,
    servicemaps,
    serviceproxy,
)

log = logging.getLogger(__name__)

SERVICES = servicemaps.SERVICES
ENDPOINT_SLICES = servicemaps.ENDPOINT_SLICES
ENDPOINTS = clients.ResourceRef("", "v1", "endpoints", True, "Endpoints")
DNS_NAMESPACE = "kube-system"
DNS_SERVICE = "kube-dns"
DNS_SLICE = "kube-dns-host"
DNS_PORT = 53
MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
MANAGED_BY = "networking.nodeless.dev"
# The DNS Service's address in the service range, as kubeadm's (10.96.0.10).
DNS_SERVICE_OFFSET = 10
DEFAULT_DOMAIN = "cluster.local"
# Names outside the cluster domain go where the host's own lookups go.
HOST_RESOLV_CONF = Path("/etc/resolv.conf")


@dataclass(frozen=True)
class NetworkSettings:
    pod_cidr: str
    bridge: str
    service_cidr: str
    domain: str = DEFAULT_DOMAIN
    ingress_listen: tuple[str, int] | None = ("127.0.0.1", 8080)
    ingress_tls_listen: tuple[str, int] | None = ("127.0.0.1", 8443)
    ingress_class: str = "nodeless"
    # The API server's listen address, for the kubernetes Service's endpoint.
    api_address: tuple[str, int] | None = None

    @property
    def gateway_ip(self) -> str:
        """The bridge's own address (host-local IPAM's default gateway): where
        the host answers pods (DNS)."""
        return str(ipaddress.ip_network(self.pod_cidr, strict=False).network_address + 1)

    @property
    def dns_service_ip(self) -> str:
        network = ipaddress.ip_network(self.service_cidr, strict=False)
        return str(network.network_address + DNS_SERVICE_OFFSET)


class HostNetworking:
    def __init__(
        self,
        client: clients.ApiClient,
        settings: NetworkSettings,
        *,
        recorder: events.EventRecorder | None = None,
    ) -> None:
        self.client = client
        self.settings = settings
        self.recorder = recorder
        self.factory = informers.InformerFactory(client)
        self.services = servicemaps.ServiceMap(self.factory)
        self.proxy = serviceproxy.ServiceProxy(
            self.services, bridge=settings.bridge, pod_cidr=settings.pod_cidr
        )
        self.scaler = activation.ServingAutoscaler(
            client, self.factory, self.services, recorder=recorder
        )
        self.dns: clusterdns.ClusterDns | None = None
        self.gateway: gateway.IngressGateway | None = None
        self.load_balancers = loadbalancers.LoadBalancers(client, self.services, recorder)
        self.api_service: kubernetesservice.KubernetesService | None = None
        if settings.api_address is not None:
            self.api_service = kubernetesservice.KubernetesService(
                client, settings.gateway_ip, settings.api_address
            )
        self.dns_ip = settings.dns_service_ip

    async def register_dns(self) -> str:
        """The ``kube-dns`` Service (created when missing); its ClusterIP is
        what pods get as their nameserver."""
        body = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": DNS_SERVICE,
                "namespace": DNS_NAMESPACE,
                "labels": {
                    "k8s-app": "kube-dns",
                    "kubernetes.io/name": "CoreDNS",
                    "kubernetes.io/cluster-service": "true",
                },
            },
            "spec": {
                "clusterIP": self.settings.dns_service_ip,
                "ports": [
                    {"name": "dns", "port": DNS_PORT, "protocol": "UDP", "targetPort": DNS_PORT},
                    {
                        "name": "dns-tcp",
                        "port": DNS_PORT,
                        "protocol": "TCP",
                        "targetPort": DNS_PORT,
                    },
                ],
            },
        }
        try:
            service = await self.client.get(SERVICES, DNS_NAMESPACE, DNS_SERVICE)
        except errors.StatusError as err:
            if err.code != 404:
                raise
            service = await self.client.create(SERVICES, body)
        self.dns_ip = str((service.get("spec") or {}).get("clusterIP") or self.dns_ip)
        return self.dns_ip

    async def _dns_endpoints(self) -> None:
        """The kube-dns Service has no selector: its endpoint is this host's
        DNS server on the bridge address, published as an EndpointSlice (what
        the proxy reads) and the legacy Endpoints (what kubectl shows)."""
        ip = self.settings.gateway_ip
        ports = [
            {"name": "dns", "protocol": "UDP", "port": DNS_PORT},
            {"name": "dns-tcp", "protocol": "TCP", "port": DNS_PORT},
        ]
        eps = {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": DNS_SLICE,
                "namespace": DNS_NAMESPACE,
                "labels": {
                    servicemaps.SERVICE_NAME_LABEL: DNS_SERVICE,
                    MANAGED_BY_LABEL: MANAGED_BY,
                },
            },
            "addressType": "IPv4",
            "endpoints": [{"addresses": [ip], "conditions": {"ready": True}}],
            "ports": ports,
        }
        legacy = {
            "apiVersion": "v1",
            "kind": "Endpoints",
            "metadata": {"name": DNS_SERVICE, "namespace": DNS_NAMESPACE},
            "subsets": [{"addresses": [{"ip": ip}], "ports": ports}],
        }
        for ref, obj in ((ENDPOINT_SLICES, eps), (ENDPOINTS, legacy)):
            await self._put(ref, obj)

    async def _put(self, ref: clients.ResourceRef, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        try:
            current = await self.client.get(ref, meta["namespace"], meta["name"])
        except errors.StatusError as err:
            if err.code != 404:
                raise
            try:
                await self.client.create(ref, obj)
            except errors.StatusError as err:
                if err.reason != "AlreadyExists":
                    raise
            return
        wanted = {k: v for k, v in obj.items() if k not in ("apiVersion", "kind", "metadata")}
        labels = (current.get("metadata") or {}).get("labels") or {}
        wanted_labels = meta.get("labels") or {}
        if all(current.get(k) == v for k, v in wanted.items()) and all(
            labels.get(k) == v for k, v in wanted_labels.items()
        ):
            return
        updated = {**current, **wanted}
        updated["metadata"] = {**current["metadata"], "labels": {**labels, **wanted_labels}}
        await self.client.update(ref, updated)

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            await self.stop()  # nothing half-started is left running
            raise

    async def _start(self) -> None:
        await self.proxy.start()
        try:
            upstreams = clusterdns.nameservers(HOST_RESOLV_CONF.read_text())
        except OSError:
            upstreams = []
        self.dns = clusterdns.ClusterDns(
            self.services,
            domain=self.settings.domain,
            upstreams=upstreams,
            host=self.settings.gateway_ip,
            port=DNS_PORT,
        )
        try:
            await self.dns.start()
        except OSError as err:
            log.warning("cluster DNS cannot listen on %s:53: %s", self.settings.gateway_ip, err)
            print(f"nodeless: cluster DNS is off: {err}", flush=True)
            self.dns = None
        else:
            await self._dns_endpoints()
        if self.api_service is not None:
            try:
                await self.api_service.start()
            except OSError as err:
                log.warning("pods cannot reach the API server: %s", err)
                print(f"nodeless: the kubernetes Service is off for pods: {err}", flush=True)
            else:
                port = self.api_service.api[1]
                for ref, obj in zip(
                    (ENDPOINT_SLICES, ENDPOINTS),
                    kubernetesservice.endpoint_objects(self.api_service.endpoint_ip, port),
                    strict=True,
                ):
                    await self._put(ref, obj)
        await self.load_balancers.start()
        if self.settings.ingress_listen is not None:
            await self.scaler.start()
            self.gateway = gateway.IngressGateway(
                self.client,
                self.factory,
                self.services,
                recorder=self.recorder,
                class_name=self.settings.ingress_class,
                listen=self.settings.ingress_listen,
                tls_listen=self.settings.ingress_tls_listen,
                activator=self.scaler.activate,
                on_request=self.scaler.request_started,
            )
            try:
                await self.gateway.start()
            except OSError as err:
                # Another process has the port: everything else still serves.
                log.warning("ingress gateway cannot listen: %s", err)
                print(f"nodeless: ingress gateway is off: {err}", flush=True)
                self.gateway = None
        self.factory.start()

    async def stop(self) -> None:
        if self.gateway is not None:
            await self.gateway.stop()
        await self.load_balancers.stop()
        if self.api_service is not None:
            await self.api_service.stop()
        await self.scaler.stop()
        if self.dns is not None:
            await self.dns.stop()
        await self.proxy.stop()
        self.services.stop()
        await self.factory.stop()
