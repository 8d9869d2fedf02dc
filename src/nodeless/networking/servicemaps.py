"""Services and where their endpoints are, read from the Services and
EndpointSlices informers: what the service proxy, cluster DNS and the ingress
gateway all need, in one place.

Endpoints are resolved per Service port the way kube-proxy does it: a slice
port matches a Service port by name (both empty for a single unnamed port),
an address appearing in several slices counts once, and readiness comes from
the slice's ``conditions`` (a missing ``ready`` counts as ready, as upstream).
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from nodeless.client import clients, informers

log = logging.getLogger(__name__)

SERVICES = clients.ResourceRef("", "v1", "services", True, "Service")
ENDPOINT_SLICES = clients.ResourceRef(
    "discovery.k8s.io", "v1", "endpointslices", True, "EndpointSlice"
)
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
# Default ClientIP affinity timeout (upstream's DefaultClientIPServiceAffinitySeconds).
DEFAULT_AFFINITY_SECONDS = 10800

Key = tuple[str, str]  # (namespace, service name)


@dataclass(frozen=True)
class ServicePort:
    name: str
    protocol: str
    port: int
    target_port: int | str


@dataclass(frozen=True)
class Service:
    """The parts of a Service object the data paths use."""

    namespace: str
    name: str
    type: str
    cluster_ips: tuple[str, ...]
    ports: tuple[ServicePort, ...]
    external_name: str = ""
    affinity_seconds: int = 0  # 0: no ClientIP session affinity
    publish_not_ready: bool = False

    @property
    def headless(self) -> bool:
        return self.type != "ExternalName" and (
            not self.cluster_ips or self.cluster_ips[0] == "None"
        )


@dataclass(frozen=True)
class Endpoint:
    ip: str
    port: int
    ready: bool = True
    serving: bool = True
    terminating: bool = False
    hostname: str = ""


def parse_service(obj: Mapping[str, Any]) -> Service:
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    ips = [str(ip) for ip in spec.get("clusterIPs") or [] if ip]
    if not ips and spec.get("clusterIP"):
        ips = [str(spec["clusterIP"])]
    ports = tuple(
        ServicePort(
            name=str(p.get("name") or ""),
            protocol=str(p.get("protocol") or "TCP"),
            port=int(p.get("port") or 0),
            target_port=p.get("targetPort")
            if p.get("targetPort") is not None
            else int(p.get("port") or 0),
        )
        for p in spec.get("ports") or []
    )
    affinity = 0
    if spec.get("sessionAffinity") == "ClientIP":
        config = (spec.get("sessionAffinityConfig") or {}).get("clientIP") or {}
        affinity = int(config.get("timeoutSeconds") or DEFAULT_AFFINITY_SECONDS)
    return Service(
        namespace=str(meta.get("namespace") or "default"),
        name=str(meta.get("name") or ""),
        type=str(spec.get("type") or "ClusterIP"),
        cluster_ips=tuple(ips),
        ports=ports,
        external_name=str(spec.get("externalName") or ""),
        affinity_seconds=affinity,
        publish_not_ready=bool(spec.get("publishNotReadyAddresses")),
    )


def slice_endpoints(
    slices: Iterable[Mapping[str, Any]], port_name: str, protocol: str
) -> list[Endpoint]:
    """Every address serving ``port_name``/``protocol``, once each, in a stable order."""
    found: dict[str, Endpoint] = {}
    for eps in slices:
        if eps.get("addressType", "IPv4") != "IPv4":
            continue
        number = None
        for port in eps.get("ports") or []:
            if (
                str(port.get("name") or "") == port_name
                and str(port.get("protocol") or "TCP") == protocol
            ):
                number = port.get("port")
                break
        if not isinstance(number, int) or not 1 <= number <= 65535:
            continue
        for endpoint in _endpoints(eps, number):
            previous = found.get(endpoint.ip)
            if previous is None or not previous.ready:
                found[endpoint.ip] = endpoint
    return [found[ip] for ip in sorted(found, key=_ip_order)]


def _ip_order(ip: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in ip.split("."))
    except ValueError:
        return (1 << 16,)


class ServiceMap:
    """Services and their EndpointSlices from shared informers, indexed by
    Service; ``on_change`` subscribers hear which Service changed (they should
    only note it, as informer handlers do)."""

    def __init__(self, factory: informers.InformerFactory) -> None:
        self.services = factory.informer(SERVICES)
        self.slices = factory.informer(ENDPOINT_SLICES)
        self._slices_by_service: dict[Key, dict[str, Mapping[str, Any]]] = {}
        self._listeners: list[Callable[[Key], None]] = []
        self._subscriptions: list[tuple[informers.Informer, informers.EventHandlers]] = []

    def start(self) -> None:
        self._subscriptions = [
            (
                self.services,
                self.services.add_handlers(
                    on_add=self._service_event,
                    on_update=lambda _old, new: self._service_event(new),
                    on_delete=self._service_event,
                ),
            ),
            (
                self.slices,
                self.slices.add_handlers(
                    on_add=self._slice_added,
                    on_update=self._slice_updated,
                    on_delete=self._slice_deleted,
                ),
            ),
        ]
        self.services.start()
        self.slices.start()

    def stop(self) -> None:
        for informer, handlers in self._subscriptions:
            informer.remove_handlers(handlers)
        self._subscriptions = []

    async def wait_synced(self) -> None:
        await self.services.wait_synced()
        await self.slices.wait_synced()

    def on_change(self, listener: Callable[[Key], None]) -> None:
        self._listeners.append(listener)

    # --- reading ---------------------------------------------------------------------

    def keys(self) -> list[Key]:
        out = []
        for obj in self.services.objects():
            meta = obj.get("metadata") or {}
            out.append((str(meta.get("namespace") or ""), str(meta.get("name") or "")))
        return out

    def service(self, namespace: str, name: str) -> Service | None:
        obj = self.services.get(f"{namespace}/{name}")
        return None if obj is None else parse_service(obj)

    def service_object(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        return self.services.get(f"{namespace}/{name}")

    def slices_of(self, namespace: str, name: str) -> list[Mapping[str, Any]]:
        by_name = self._slices_by_service.get((namespace, name)) or {}
        return [by_name[k] for k in sorted(by_name)]

    def endpoints(self, namespace: str, name: str, port: ServicePort) -> list[Endpoint]:
        return slice_endpoints(self.slices_of(namespace, name), port.name, port.protocol)

    def addresses(self, namespace: str, name: str) -> list[Endpoint]:
        """Every endpoint address of the Service whatever its ports (headless
        DNS), once each; a ready sighting wins over a not-ready one."""
        found: dict[str, Endpoint] = {}
        for eps in self.slices_of(namespace, name):
            if eps.get("addressType", "IPv4") != "IPv4":
                continue
            for endpoint in _endpoints(eps, 0):
                if endpoint.ip not in found or (endpoint.ready and not found[endpoint.ip].ready):
                    found[endpoint.ip] = endpoint
        return [found[ip] for ip in sorted(found, key=_ip_order)]

    # --- informer events -------------------------------------------------------------

    def _notify(self, key: Key) -> None:
        for listener in self._listeners:
            try:
                listener(key)
            except Exception:  # a listener's bug must not stop the informer
                log.exception("service change listener failed for %s/%s", *key)

    def _service_event(self, obj: clients.Object) -> None:
        meta = obj.get("metadata") or {}
        self._notify((str(meta.get("namespace") or ""), str(meta.get("name") or "")))

    @staticmethod
    def _slice_key(obj: Mapping[str, Any]) -> tuple[Key, str] | None:
        meta = obj.get("metadata") or {}
        service = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
        if not service:
            return None
        return (str(meta.get("namespace") or ""), str(service)), str(meta.get("name") or "")

    def _slice_added(self, obj: clients.Object) -> None:
        found = self._slice_key(obj)
        if found is None:
            return
        key, name = found
        self._slices_by_service.setdefault(key, {})[name] = obj
        self._notify(key)

    def _slice_updated(self, old: clients.Object, new: clients.Object) -> None:
        before = self._slice_key(old)
        if before is not None and before != self._slice_key(new):
            self._slice_deleted(old)
        self._slice_added(new)

    def _slice_deleted(self, obj: clients.Object) -> None:
        found = self._slice_key(obj)
        if found is None:
            return
        key, name = found
        by_name = self._slices_by_service.get(key)
        if by_name is not None:
            by_name.pop(name, None)
            if not by_name:
                del self._slices_by_service[key]
        self._notify(key)


def _endpoints(eps: Mapping[str, Any], port: int) -> list[Endpoint]:
    """A slice's endpoints, one per IPv4 address, with ``port`` (0: none resolved)."""
    out = []
    for endpoint in eps.get("endpoints") or []:
        conditions = endpoint.get("conditions") or {}
        ready = conditions.get("ready") is not False
        for ip in _ipv4_addresses(endpoint):
            out.append(
                Endpoint(
                    ip=ip,
                    port=port,
                    ready=ready,
                    serving=conditions.get("serving", ready) is not False,
                    terminating=bool(conditions.get("terminating")),
                    hostname=str(endpoint.get("hostname") or ""),
                )
            )
    return out


def _ipv4_addresses(endpoint: Mapping[str, Any]) -> list[str]:
    """The endpoint's addresses that are IPv4 addresses, canonical: they end
    up in nftables rules and DNS records, so nothing else may pass."""
    out = []
    for address in endpoint.get("addresses") or []:
        try:
            out.append(str(ipaddress.IPv4Address(str(address))))
        except ValueError:
            log.warning("ignoring endpoint address %r: not an IPv4 address", address)
    return out
