"""EndpointSlices and Endpoints for Services with a selector (upstream's
pkg/controller/endpointslice and pkg/controller/endpoint).

kube-proxy-like consumers, DNS and clients that read ``kubectl get endpoints``
all learn where a Service's pods are from these objects, so both the
discovery.k8s.io/v1 EndpointSlices and the legacy core/v1 Endpoints are kept,
with upstream's contents:

- a pod counts when it matches the selector, has an IP and has not finished;
  every port of the Service is resolved per pod (a named ``targetPort`` is
  looked up among that pod's container ports, so pods may differ), and pods
  resolving to different port sets land in different slices;
- slice endpoints carry ``ready`` / ``serving`` / ``terminating`` conditions
  (``publishNotReadyAddresses`` makes every endpoint ready), the pod as
  ``targetRef``, its node and zone; at most 100 endpoints per slice, and an
  empty placeholder slice when nothing is selected;
- the Endpoints object lists ready and not-ready addresses in subsets grouped
  by port set; terminating pods are left out of it (unless not-ready
  addresses are published), as upstream.

A Service whose selector matches no pod and no pod template of any workload
in its namespace (a typo in a label, the commonest reason a Service "does not
work") gets a ``SelectorMatchesNothing`` Warning Event once it has been so
for ``SELECTOR_GRACE`` (so creating the Service just before its Deployment
says nothing); a workload scaled to zero still matches by its template.

Services without a selector (and ExternalName services) are left alone: their
endpoints are someone else's. Slices are owned by their Service, so the
garbage collector removes them with it; the Endpoints object is deleted here.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from nodeless import clocks
from nodeless.api import errors, selectors, values
from nodeless.client import clients, controllers, events, informers
from nodeless.controllers import podcontrol
from nodeless.serverless import annotations as pod_annotations

log = logging.getLogger(__name__)

Obj = dict[str, Any]

SERVICES = clients.ResourceRef("", "v1", "services", True, "Service")
PODS = clients.ResourceRef("", "v1", "pods", True, "Pod")
NODES = clients.ResourceRef("", "v1", "nodes", False, "Node")
ENDPOINTS = clients.ResourceRef("", "v1", "endpoints", True, "Endpoints")
ENDPOINT_SLICES = clients.ResourceRef(
    "discovery.k8s.io", "v1", "endpointslices", True, "EndpointSlice"
)

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
MANAGED_BY = "endpointslice-controller.k8s.io"
ENDPOINTS_MANAGED_BY_LABEL = "endpoints.kubernetes.io/managed-by"
ENDPOINTS_MANAGED_BY = "endpoint-controller"
HEADLESS_LABEL = "service.kubernetes.io/headless"
ZONE_LABEL = "topology.kubernetes.io/zone"
OVER_CAPACITY = "endpoints.kubernetes.io/over-capacity"

MAX_ENDPOINTS_PER_SLICE = 100
MAX_ENDPOINT_ADDRESSES = 1000
# How long a write of ours may take to show up in the slice cache before the
# cache is trusted again anyway (someone may have deleted what we wrote).
STALE_CACHE_TIMEOUT = 5.0
# Backstop re-sync after a write conflict (the cache's catching up normally
# queues the Service first).
CONFLICT_RECHECK = 1.0
_NAME_LIMIT = 63


# --- reading pods and services -------------------------------------------------------


def service_selector(service: Mapping[str, Any]) -> selectors.LabelSelector | None:
    """The Service's pod selector; None when this controller must leave it alone."""
    spec = service.get("spec") or {}
    if spec.get("type") == "ExternalName":
        return None
    selector = spec.get("selector")
    if not isinstance(selector, Mapping) or not selector:
        return None
    return selectors.label_selector_from_object({"matchLabels": dict(selector)})


def pod_ready(pod: Mapping[str, Any]) -> bool:
    for condition in (pod.get("status") or {}).get("conditions") or ():
        if condition.get("type") == "Ready":
            return bool(condition.get("status") == "True")
    return False


def pod_terminal(pod: Mapping[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def pod_ips(pod: Mapping[str, Any]) -> list[str]:
    status = pod.get("status") or {}
    ips = [str(p.get("ip")) for p in status.get("podIPs") or () if p.get("ip")]
    if not ips and status.get("podIP"):
        ips = [str(status["podIP"])]
    return ips


def address_type(ip: str) -> str | None:
    try:
        return "IPv6" if ipaddress.ip_address(ip).version == 6 else "IPv4"
    except ValueError:
        return None


def service_address_types(service: Mapping[str, Any]) -> list[str]:
    families = [f for f in (service.get("spec") or {}).get("ipFamilies") or () if f]
    return [str(f) for f in families if f in ("IPv4", "IPv6")] or ["IPv4"]


def find_port(pod: Mapping[str, Any], service_port: Mapping[str, Any]) -> int | None:
    """The pod port a Service port reaches (upstream's podutil.FindPort): a
    numeric targetPort as is, a named one from the pod's container ports with the
    same protocol; None when the pod has no such port."""
    target = service_port.get("targetPort", service_port.get("port"))
    if isinstance(target, int) and not isinstance(target, bool):
        return target
    if not isinstance(target, str) or not target:
        return None
    protocol = service_port.get("protocol") or "TCP"
    spec = pod.get("spec") or {}
    containers = list(spec.get("containers") or ()) + [
        c for c in spec.get("initContainers") or () if c.get("restartPolicy") == "Always"
    ]
    for container in containers:
        for port in container.get("ports") or ():
            if port.get("name") == target and (port.get("protocol") or "TCP") == protocol:
                number = port.get("containerPort")
                return int(number) if isinstance(number, int) else None
    return None


def endpoint_ports(service: Mapping[str, Any], pod: Mapping[str, Any]) -> list[Obj]:
    """The slice ports of ``service`` for this pod, in the Service's port order."""
    out: list[Obj] = []
    for service_port in (service.get("spec") or {}).get("ports") or ():
        number = find_port(pod, service_port)
        if number is None:
            continue
        port: Obj = {
            "name": service_port.get("name") or "",
            "port": number,
            "protocol": service_port.get("protocol") or "TCP",
        }
        if service_port.get("appProtocol"):
            port["appProtocol"] = service_port["appProtocol"]
        out.append(port)
    return out


def _ports_key(ports: Iterable[Mapping[str, Any]]) -> tuple[tuple[str, int, str, str], ...]:
    return tuple(
        sorted(
            (
                str(p.get("name") or ""),
                int(p.get("port") or 0),
                str(p.get("protocol") or "TCP"),
                str(p.get("appProtocol") or ""),
            )
            for p in ports
        )
    )


def should_set_hostname(pod: Mapping[str, Any], service: Mapping[str, Any]) -> bool:
    spec = pod.get("spec") or {}
    meta = service.get("metadata") or {}
    return bool(spec.get("hostname")) and spec.get("subdomain") == meta.get("name")


def pod_zone(pod: Mapping[str, Any], nodes: informers.Informer | None) -> str:
    """The pod's zone: its node's topology label, else the zone Nodeless placed
    it in (written on the pod as an annotation)."""
    node_name = (pod.get("spec") or {}).get("nodeName") or ""
    if nodes is not None and node_name:
        node = nodes.get(node_name)
        zone = ((node or {}).get("metadata") or {}).get("labels", {}).get(ZONE_LABEL)
        if zone:
            return str(zone)
    notes = (pod.get("metadata") or {}).get("annotations") or {}
    return str(notes.get(pod_annotations.ZONE.name) or "")


def target_ref(pod: Mapping[str, Any]) -> Obj:
    meta = pod.get("metadata") or {}
    return {
        "kind": "Pod",
        "namespace": meta.get("namespace", ""),
        "name": meta.get("name", ""),
        "uid": meta.get("uid", ""),
    }


def _endpoint_relevant(pod: Mapping[str, Any]) -> tuple[Any, ...]:
    """What of a pod the endpoints depend on: other changes (most status
    updates) need no sync."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    return (
        meta.get("labels"),
        bool(meta.get("deletionTimestamp")),
        (meta.get("annotations") or {}).get(pod_annotations.ZONE.name),
        pod_ips(pod),
        pod_ready(pod),
        pod_terminal(pod),
        spec.get("nodeName"),
        spec.get("hostname"),
        spec.get("subdomain"),
        [c.get("ports") for c in spec.get("containers") or ()],
    )


# --- EndpointSlices -------------------------------------------------------------------


def slice_endpoint(
    pod: Mapping[str, Any],
    service: Mapping[str, Any],
    addresses: list[str],
    nodes: informers.Informer | None,
) -> Obj:
    """One slice endpoint for a pod (upstream's podToEndpoint)."""
    serving = pod_ready(pod)
    terminating = bool((pod.get("metadata") or {}).get("deletionTimestamp"))
    publish = bool((service.get("spec") or {}).get("publishNotReadyAddresses"))
    # Never ready while terminating, unless not-ready addresses are published.
    ready = publish or (serving and not terminating)
    endpoint: Obj = {
        "addresses": addresses,
        "conditions": {"ready": ready, "serving": serving, "terminating": terminating},
    }
    if should_set_hostname(pod, service):
        endpoint["hostname"] = (pod.get("spec") or {})["hostname"]
    endpoint["targetRef"] = target_ref(pod)
    node_name = (pod.get("spec") or {}).get("nodeName")
    if node_name:
        endpoint["nodeName"] = node_name
    zone = pod_zone(pod, nodes)
    if zone:
        endpoint["zone"] = zone
    return endpoint


@dataclass
class _Group:
    """The endpoints of one (address type, port set)."""

    address_type: str
    ports: list[Obj]
    endpoints: list[Obj] = field(default_factory=list)


def desired_slice_groups(
    service: Mapping[str, Any],
    pods: Iterable[Mapping[str, Any]],
    nodes: informers.Informer | None = None,
) -> dict[tuple[str, tuple[tuple[str, int, str, str], ...]], _Group]:
    """The endpoints the Service's slices should hold, grouped by address type
    and resolved port set (upstream's endpointMeta)."""
    groups: dict[tuple[str, tuple[tuple[str, int, str, str], ...]], _Group] = {}
    families = service_address_types(service)
    for pod in sorted(pods, key=lambda p: str((p.get("metadata") or {}).get("name"))):
        if pod_terminal(pod):
            continue
        ips = pod_ips(pod)
        if not ips:
            continue
        ports = endpoint_ports(service, pod)
        for family in families:
            addresses = [ip for ip in ips if address_type(ip) == family][:1]
            if not addresses:
                continue
            key = (family, _ports_key(ports))
            group = groups.setdefault(key, _Group(family, ports))
            group.endpoints.append(slice_endpoint(pod, service, addresses, nodes))
    return groups


def _endpoint_key(endpoint: Mapping[str, Any]) -> str:
    ref = endpoint.get("targetRef") or {}
    return str(ref.get("uid") or "") or ",".join(endpoint.get("addresses") or ())


def slice_labels(service: Mapping[str, Any]) -> dict[str, str]:
    meta = service.get("metadata") or {}
    labels = {
        k: v
        for k, v in (meta.get("labels") or {}).items()
        if k not in (SERVICE_NAME_LABEL, MANAGED_BY_LABEL, HEADLESS_LABEL)
    }
    labels[SERVICE_NAME_LABEL] = str(meta.get("name", ""))
    labels[MANAGED_BY_LABEL] = MANAGED_BY
    if (service.get("spec") or {}).get("clusterIP") == "None":
        labels[HEADLESS_LABEL] = ""
    return labels


def service_owner_reference(service: Mapping[str, Any]) -> Obj:
    meta = service.get("metadata") or {}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "name": meta.get("name", ""),
        "uid": meta.get("uid", ""),
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _slice_prefix(service_name: str) -> str:
    prefix = f"{service_name}-"
    # generateName adds five characters; names are DNS labels here.
    return prefix if len(prefix) <= _NAME_LIMIT - 5 else prefix[: _NAME_LIMIT - 5]


def owned_by(obj: Mapping[str, Any], service: Mapping[str, Any]) -> bool:
    uid = (service.get("metadata") or {}).get("uid")
    return any(
        r.get("uid") == uid and r.get("controller")
        for r in (obj.get("metadata") or {}).get("ownerReferences") or ()
    )


@dataclass
class SlicePlan:
    """Writes that turn the existing slices into the desired ones."""

    create: list[Obj] = field(default_factory=list)
    update: list[Obj] = field(default_factory=list)
    delete: list[Obj] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.create or self.update or self.delete)


def plan_slices(
    service: Mapping[str, Any],
    groups: Mapping[tuple[str, tuple[tuple[str, int, str, str], ...]], _Group],
    existing: Iterable[Mapping[str, Any]],
    *,
    max_endpoints: int = MAX_ENDPOINTS_PER_SLICE,
) -> SlicePlan:
    """Reconcile as upstream does, moving as few endpoints as possible: an
    endpoint stays in the slice that has it, new endpoints fill slices with
    room first, slices left empty go, and a Service selecting nothing keeps
    one empty placeholder slice per address type."""
    meta = service.get("metadata") or {}
    labels = slice_labels(service)
    owner = service_owner_reference(service)
    plan = SlicePlan()
    by_group: dict[tuple[str, tuple[tuple[str, int, str, str], ...]], list[Obj]] = {}
    for current in existing:
        key = (str(current.get("addressType")), _ports_key(current.get("ports") or ()))
        if not owned_by(current, service) or key not in groups:
            plan.delete.append(dict(current))
            continue
        by_group.setdefault(key, []).append(dict(current))

    def build(group: _Group, endpoints: list[Obj], base: Mapping[str, Any] | None) -> Obj:
        out: Obj = values.clone(dict(base)) if base is not None else {}
        out["apiVersion"] = "discovery.k8s.io/v1"
        out["kind"] = "EndpointSlice"
        slice_meta = out.setdefault("metadata", {})
        if base is None:
            slice_meta["generateName"] = _slice_prefix(str(meta.get("name", "")))
            slice_meta["namespace"] = meta.get("namespace", "")
        slice_meta["labels"] = {**(slice_meta.get("labels") or {}), **labels}
        slice_meta["ownerReferences"] = [owner]
        out["addressType"] = group.address_type
        out["endpoints"] = endpoints
        out["ports"] = group.ports
        return out

    for key, group in groups.items():
        wanted = {_endpoint_key(e): e for e in group.endpoints}
        slices = by_group.get(key, [])
        kept: list[tuple[Obj, list[Obj]]] = []
        for current in slices:
            endpoints = []
            for endpoint in current.get("endpoints") or ():
                found = wanted.pop(_endpoint_key(endpoint), None)
                if found is not None:
                    endpoints.append(found)
            kept.append((current, endpoints))
        fresh = list(wanted.values())
        # Fill the fullest slices first, so that churn concentrates.
        for _current, endpoints in sorted(kept, key=lambda k: -len(k[1])):
            while fresh and endpoints and len(endpoints) < max_endpoints:
                endpoints.append(fresh.pop(0))
        for current, endpoints in kept:
            if not endpoints and fresh:
                endpoints.extend(fresh[:max_endpoints])
                del fresh[:max_endpoints]
            if not endpoints:
                plan.delete.append(current)
                continue
            desired = build(group, endpoints, current)
            if _slice_differs(current, desired):
                plan.update.append(desired)
        while fresh:
            plan.create.append(build(group, fresh[:max_endpoints], None))
            del fresh[:max_endpoints]

    for family in service_address_types(service):
        has_family = any(k[0] == family for k in groups)
        if has_family:
            continue
        placeholder = _Group(family, [])
        doomed = [s for s in plan.delete if s.get("addressType") == family and owned_by(s, service)]
        reusable = next((s for s in doomed if not s.get("endpoints") and not s.get("ports")), None)
        if reusable is not None:
            plan.delete.remove(reusable)
            desired = build(placeholder, [], reusable)
            if _slice_differs(reusable, desired):
                plan.update.append(desired)
        else:
            plan.create.append(build(placeholder, [], None))
    return plan


def _slice_differs(current: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    cur_meta = current.get("metadata") or {}
    new_meta = desired.get("metadata") or {}
    return (
        (current.get("endpoints") or []) != desired.get("endpoints")
        or (current.get("ports") or []) != desired.get("ports")
        or current.get("addressType") != desired.get("addressType")
        or (cur_meta.get("labels") or {}) != new_meta.get("labels")
        or (cur_meta.get("ownerReferences") or []) != new_meta.get("ownerReferences")
    )


# --- legacy Endpoints -------------------------------------------------------------------


def _address(pod: Mapping[str, Any], service: Mapping[str, Any], ip: str) -> Obj:
    address: Obj = {"ip": ip}
    if should_set_hostname(pod, service):
        address["hostname"] = (pod.get("spec") or {})["hostname"]
    node_name = (pod.get("spec") or {}).get("nodeName")
    if node_name:
        address["nodeName"] = node_name
    address["targetRef"] = target_ref(pod)
    return address


def _legacy_port(service_port: Mapping[str, Any], number: int) -> Obj:
    port: Obj = {"port": number, "protocol": service_port.get("protocol") or "TCP"}
    if service_port.get("name"):
        port["name"] = service_port["name"]
    if service_port.get("appProtocol"):
        port["appProtocol"] = service_port["appProtocol"]
    return port


def endpoints_subsets(
    service: Mapping[str, Any], pods: Iterable[Mapping[str, Any]]
) -> tuple[list[Obj], bool]:
    """The Endpoints subsets (upstream's RepackSubsets result) and whether the
    addresses were truncated to the Endpoints capacity."""
    spec = service.get("spec") or {}
    publish = bool(spec.get("publishNotReadyAddresses"))
    service_ports = list(spec.get("ports") or ())
    families = service_address_types(service)
    addresses: dict[str, Obj] = {}
    # port (as a hashable key) → {address key: ready}
    by_port: dict[tuple[Any, ...], dict[str, bool]] = {}
    port_objects: dict[tuple[Any, ...], Obj | None] = {}
    for pod in pods:
        if pod_terminal(pod):
            continue
        if (pod.get("metadata") or {}).get("deletionTimestamp") and not publish:
            continue
        ips = [ip for ip in pod_ips(pod) if address_type(ip) == families[0]][:1]
        if not ips:
            continue
        ready = publish or pod_ready(pod)
        address = _address(pod, service, ips[0])
        key = f"{ips[0]}/{address['targetRef']['uid']}"
        entries: list[tuple[tuple[Any, ...], Obj | None]] = []
        if not service_ports:
            if spec.get("clusterIP") == "None":
                entries.append((("",), None))  # headless without ports: addresses only
        else:
            for service_port in service_ports:
                number = find_port(pod, service_port)
                if number is None:
                    continue
                port = _legacy_port(service_port, number)
                entries.append((tuple(sorted(port.items())), port))
        for port_key, port_obj in entries:
            addresses[key] = address
            by_port.setdefault(port_key, {})[key] = ready
            port_objects[port_key] = port_obj
    # Ports offered by exactly the same addresses share a subset.
    grouped: dict[frozenset[tuple[str, bool]], list[Obj]] = {}
    for port_key, offered_by in by_port.items():
        group = grouped.setdefault(frozenset(offered_by.items()), [])
        port_obj = port_objects[port_key]
        if port_obj is not None:
            group.append(port_obj)
    subsets: list[Obj] = []
    total = 0
    truncated = False
    for members, ports in grouped.items():
        ready_addresses = sorted(
            (addresses[k] for k, ready in members if ready), key=_address_order
        )
        not_ready = sorted((addresses[k] for k, ready in members if not ready), key=_address_order)
        room = MAX_ENDPOINT_ADDRESSES - total
        if len(ready_addresses) + len(not_ready) > room:
            truncated = True
            ready_addresses = ready_addresses[:room]
            not_ready = not_ready[: max(0, room - len(ready_addresses))]
        total += len(ready_addresses) + len(not_ready)
        subset: Obj = {}
        if ready_addresses:
            subset["addresses"] = ready_addresses
        if not_ready:
            subset["notReadyAddresses"] = not_ready
        if ports:
            subset["ports"] = sorted(
                ports, key=lambda p: (p.get("name", ""), p["port"], p["protocol"])
            )
        if ready_addresses or not_ready:
            subsets.append(subset)
    subsets.sort(key=_subset_order)
    return subsets, truncated


def _address_order(address: Mapping[str, Any]) -> tuple[str, str]:
    return (str(address.get("ip")), str((address.get("targetRef") or {}).get("uid", "")))


def _subset_order(subset: Mapping[str, Any]) -> tuple[Any, ...]:
    first = (subset.get("addresses") or subset.get("notReadyAddresses") or [{}])[0]
    ports = [(p.get("name", ""), p.get("port", 0)) for p in subset.get("ports") or ()]
    return (ports, str(first.get("ip", "")))


def endpoints_labels(service: Mapping[str, Any]) -> dict[str, str]:
    labels = {
        k: v
        for k, v in ((service.get("metadata") or {}).get("labels") or {}).items()
        if k != HEADLESS_LABEL
    }
    labels[ENDPOINTS_MANAGED_BY_LABEL] = ENDPOINTS_MANAGED_BY
    if (service.get("spec") or {}).get("clusterIP") == "None":
        labels[HEADLESS_LABEL] = ""
    return labels


# --- controllers ------------------------------------------------------------------------


class _ServicePodsController:
    """Shared plumbing: services and pods informers, and pod changes mapped to
    the Services that select the pod."""

    name = ""

    def __init__(
        self,
        client: clients.ApiClient,
        factory: informers.InformerFactory,
        *,
        clock: clocks.Clock | None = None,
        recorder: events.EventRecorder | None = None,
        workers: int = 2,
    ) -> None:
        self.client = client
        self.factory = factory
        self.clock = clock or factory.clock or clocks.SystemClock()
        self.recorder = recorder
        self.services = factory.informer(SERVICES)
        self.pods = factory.informer(PODS)
        self.nodes = factory.informer(NODES)
        self.controller = controllers.Controller(
            self.name, self.sync, workers=workers, clock=self.clock
        )
        self._subscriptions: list[tuple[informers.Informer, informers.EventHandlers]] = []

    def _extra_informers(self) -> list[informers.Informer]:
        return []

    def _subscribe_extra(self) -> None:
        """Subscribe to the controller's own objects (to repair changes to them)."""

    async def start(self) -> None:
        self._subscriptions.append((self.services, self._enqueue_all(self.services)))
        self._subscriptions.append(
            (
                self.pods,
                self.pods.add_handlers(self._pod_added, self._pod_updated, self._pod_added),
            )
        )
        self._subscribe_extra()
        self.factory.start()
        self.controller.start([self.services, self.pods, self.nodes, *self._extra_informers()])

    async def stop(self) -> None:
        await self.controller.stop()
        for informer, handlers in self._subscriptions:
            informer.remove_handlers(handlers)
        self._subscriptions = []

    def _enqueue_all(self, informer: informers.Informer) -> informers.EventHandlers:
        return informer.add_handlers(
            self.controller.enqueue,
            lambda _old, new: self.controller.enqueue(new),
            self.controller.enqueue,
        )

    def services_selecting(self, pod: Mapping[str, Any]) -> list[str]:
        meta = pod.get("metadata") or {}
        labels = meta.get("labels") or {}
        keys = []
        for service in self.services.objects(str(meta.get("namespace") or "")):
            selector = service_selector(service)
            if selector is not None and selector.matches(labels):
                keys.append(clients.key_of(service))
        return keys

    def _pod_added(self, pod: clients.Object) -> None:
        for key in self.services_selecting(pod):
            self.controller.queue.add(key)

    def _pod_updated(self, old: clients.Object, new: clients.Object) -> None:
        if _endpoint_relevant(old) == _endpoint_relevant(new):
            return
        for key in set(self.services_selecting(old)) | set(self.services_selecting(new)):
            self.controller.queue.add(key)

    def selected_pods(
        self, service: Mapping[str, Any], selector: selectors.LabelSelector
    ) -> list[Obj]:
        namespace = str((service.get("metadata") or {}).get("namespace") or "")
        return [
            p
            for p in self.pods.objects(namespace)
            if selector.matches((p.get("metadata") or {}).get("labels") or {})
        ]

    async def sync(self, key: str) -> None:
        raise NotImplementedError


class EndpointSliceController(_ServicePodsController):
    """Keeps each selecting Service's EndpointSlices equal to its pods."""

    name = "endpointslice"

    def __init__(
        self,
        client: clients.ApiClient,
        factory: informers.InformerFactory,
        *,
        clock: clocks.Clock | None = None,
        recorder: events.EventRecorder | None = None,
        workers: int = 2,
        max_endpoints_per_slice: int = MAX_ENDPOINTS_PER_SLICE,
    ) -> None:
        super().__init__(client, factory, clock=clock, recorder=recorder, workers=workers)
        self.slices = factory.informer(ENDPOINT_SLICES)
        self.max_endpoints_per_slice = max_endpoints_per_slice
        # Service key → {slice uid: resourceVersion we wrote, or None: we deleted
        # it}, and when; the slice cache is not trusted until it shows them
        # (upstream's endpointSliceTracker), lest a stale cache make duplicates.
        self._written: dict[str, tuple[float, dict[str, str | None]]] = {}
        self.workloads = [(factory.informer(ref), path) for ref, path in WORKLOAD_TEMPLATES]
        # Services warned about, until something matches again.
        self._selecting_nothing: set[str] = set()

    def _extra_informers(self) -> list[informers.Informer]:
        return [self.slices, *(informer for informer, _ in self.workloads)]

    def _check_selector(
        self, key: str, service: Mapping[str, Any], selector: selectors.LabelSelector, pods: int
    ) -> None:
        """The Warning Event for a selector nothing in the namespace matches."""
        if pods:
            self._selecting_nothing.discard(key)
            return
        if key in self._selecting_nothing:
            return
        namespace = str((service.get("metadata") or {}).get("namespace") or "")
        for informer, path in self.workloads:
            for workload in informer.objects(namespace):
                if selector.matches(template_labels(workload, path)):
                    return
        created = podcontrol.parse_time((service.get("metadata") or {}).get("creationTimestamp"))
        if created is not None:
            age = (self.clock.now() - created).total_seconds()
            if age < SELECTOR_GRACE:
                self.controller.queue.add_after(key, SELECTOR_GRACE - age)
                return
        self._selecting_nothing.add(key)
        if self.recorder is not None:
            wanted = ",".join(
                f"{k}={v}"
                for k, v in sorted(((service.get("spec") or {}).get("selector") or {}).items())
            )
            self.recorder.record(
                clients.copy_with_type(SERVICES, dict(service)),
                "Warning",
                SELECTOR_MATCHES_NOTHING,
                f"selector {wanted} matches no pod and no pod template in namespace {namespace}; "
                "the Service has no endpoints",
            )

    def _subscribe_extra(self) -> None:
        def enqueue(obj: clients.Object) -> None:
            labels = (obj.get("metadata") or {}).get("labels") or {}
            service = labels.get(SERVICE_NAME_LABEL)
            if labels.get(MANAGED_BY_LABEL) == MANAGED_BY and service:
                namespace = (obj.get("metadata") or {}).get("namespace", "")
                self.controller.queue.add(f"{namespace}/{service}")

        handlers = self.slices.add_handlers(enqueue, lambda _old, new: enqueue(new), enqueue)
        self._subscriptions.append((self.slices, handlers))

    def managed_slices(self, namespace: str, service_name: str) -> list[Obj]:
        return [
            s
            for s in self.slices.objects(namespace)
            if ((s.get("metadata") or {}).get("labels") or {}).get(SERVICE_NAME_LABEL)
            == service_name
            and ((s.get("metadata") or {}).get("labels") or {}).get(MANAGED_BY_LABEL) == MANAGED_BY
        ]

    def _cache_stale(self, key: str, existing: list[Obj]) -> bool:
        record = self._written.get(key)
        if record is None:
            return False
        since, written = record
        if self.clock.monotonic() - since > STALE_CACHE_TIMEOUT:
            del self._written[key]
            return False
        cached = {
            str((s.get("metadata") or {}).get("uid")): clients.resource_version(s) for s in existing
        }
        for uid, rv in written.items():
            if rv is None:
                if uid in cached:
                    return True
            elif uid not in cached or _rv_older(cached[uid], rv):
                return True
        del self._written[key]
        return False

    async def sync(self, key: str) -> None:
        namespace, name = clients.split_key(key)
        service = self.services.get(key)
        if service is None:
            self._written.pop(key, None)
            self._selecting_nothing.discard(key)
            return  # the slices are owned by the Service: the garbage collector removes them
        selector = service_selector(service)
        if selector is None:
            return
        existing = self.managed_slices(namespace, name)
        if self._cache_stale(key, existing):
            # Our last writes are not in the cache yet; their events requeue us.
            self.controller.queue.add_after(key, STALE_CACHE_TIMEOUT)
            return
        selected = self.selected_pods(service, selector)
        self._check_selector(key, service, selector, len(selected))
        groups = desired_slice_groups(service, selected, self.nodes)
        plan = plan_slices(service, groups, existing, max_endpoints=self.max_endpoints_per_slice)
        if plan.empty:
            return
        written: dict[str, str | None] = {}
        try:
            for obj in plan.create:
                try:
                    created = await self.client.create(ENDPOINT_SLICES, obj)
                except errors.StatusError as err:
                    if err.code == 403:
                        return  # the namespace is terminating
                    raise
                written[str(created["metadata"]["uid"])] = clients.resource_version(created)
            for obj in plan.update:
                try:
                    updated = await self.client.update(ENDPOINT_SLICES, obj)
                except errors.StatusError as err:
                    if err.code not in (404, 409):
                        raise
                    # Changed or gone under us: its event queues the Service again.
                    self.controller.queue.add_after(key, CONFLICT_RECHECK)
                    continue
                written[str(updated["metadata"]["uid"])] = clients.resource_version(updated)
            for obj in plan.delete:
                meta = obj.get("metadata") or {}
                try:
                    await self.client.delete(
                        ENDPOINT_SLICES,
                        namespace,
                        str(meta.get("name")),
                        clients.DeleteOptions(
                            preconditions=clients.Preconditions(uid=str(meta.get("uid") or ""))
                        ),
                    )
                except errors.StatusError as err:
                    if err.code not in (404, 409):
                        raise
                written[str(meta.get("uid"))] = None
        finally:
            if written:
                self._written[key] = (self.clock.monotonic(), written)
        log.debug(
            "endpointslices for %s: %d created, %d updated, %d deleted",
            key,
            len(plan.create),
            len(plan.update),
            len(plan.delete),
        )


# Workloads whose pod templates count as "the selector matches something".
WORKLOAD_TEMPLATES: tuple[tuple[clients.ResourceRef, tuple[str, ...]], ...] = (
    (clients.ResourceRef("apps", "v1", "deployments", True, "Deployment"), ("spec", "template")),
    (clients.ResourceRef("apps", "v1", "replicasets", True, "ReplicaSet"), ("spec", "template")),
    (clients.ResourceRef("apps", "v1", "statefulsets", True, "StatefulSet"), ("spec", "template")),
    (clients.ResourceRef("batch", "v1", "jobs", True, "Job"), ("spec", "template")),
    (
        clients.ResourceRef("batch", "v1", "cronjobs", True, "CronJob"),
        ("spec", "jobTemplate", "spec", "template"),
    ),
    (
        clients.ResourceRef("", "v1", "replicationcontrollers", True, "ReplicationController"),
        ("spec", "template"),
    ),
)
SELECTOR_GRACE = 10.0
SELECTOR_MATCHES_NOTHING = "SelectorMatchesNothing"


def template_labels(obj: Mapping[str, Any], path: tuple[str, ...]) -> Mapping[str, Any]:
    current: Any = obj
    for key in path:
        current = current.get(key) if isinstance(current, Mapping) else None
    meta = current.get("metadata") if isinstance(current, Mapping) else None
    labels = meta.get("labels") if isinstance(meta, Mapping) else None
    return labels if isinstance(labels, Mapping) else {}


def _rv_older(candidate: str, reference: str) -> bool:
    try:
        return int(candidate) < int(reference)
    except ValueError:
        return candidate != reference


class EndpointsController(_ServicePodsController):
    """Keeps each selecting Service's legacy core/v1 Endpoints object current."""

    name = "endpoint"

    def __init__(
        self,
        client: clients.ApiClient,
        factory: informers.InformerFactory,
        *,
        clock: clocks.Clock | None = None,
        recorder: events.EventRecorder | None = None,
        workers: int = 2,
    ) -> None:
        super().__init__(client, factory, clock=clock, recorder=recorder, workers=workers)
        self.endpoints = factory.informer(ENDPOINTS)

    def _extra_informers(self) -> list[informers.Informer]:
        return [self.endpoints]

    def _subscribe_extra(self) -> None:
        self._subscriptions.append((self.endpoints, self._enqueue_all(self.endpoints)))

    async def sync(self, key: str) -> None:
        namespace, name = clients.split_key(key)
        service = self.services.get(key)
        current = self.endpoints.get(key)
        if service is None:
            if current is not None and (
                ((current.get("metadata") or {}).get("labels") or {}).get(
                    ENDPOINTS_MANAGED_BY_LABEL
                )
                == ENDPOINTS_MANAGED_BY
            ):
                await self._delete(namespace, name)
            return
        selector = service_selector(service)
        if selector is None:
            return
        subsets, truncated = endpoints_subsets(service, self.selected_pods(service, selector))
        labels = endpoints_labels(service)
        if current is None:
            desired: Obj = {
                "apiVersion": "v1",
                "kind": "Endpoints",
                "metadata": {"name": name, "namespace": namespace, "labels": labels},
            }
        else:
            desired = values.clone(current)
            desired["metadata"]["labels"] = labels
        annotations = dict(desired["metadata"].get("annotations") or {})
        if truncated:
            annotations[OVER_CAPACITY] = "truncated"
        else:
            annotations.pop(OVER_CAPACITY, None)
        if annotations:
            desired["metadata"]["annotations"] = annotations
        else:
            desired["metadata"].pop("annotations", None)
        if subsets:
            desired["subsets"] = subsets
        else:
            desired.pop("subsets", None)
        if current is not None and _endpoints_same(current, desired):
            return
        try:
            if current is None:
                await self.client.create(ENDPOINTS, desired)
            else:
                await self.client.update(ENDPOINTS, desired)
        except errors.StatusError as err:
            if err.code == 403:
                return  # the namespace is terminating
            if err.code != 409:
                raise
            # Our cache is behind the store; the event that brings it up to
            # date queues the Service again (and this is the backstop).
            self.controller.queue.add_after(key, CONFLICT_RECHECK)

    async def _delete(self, namespace: str, name: str) -> None:
        try:
            await self.client.delete(ENDPOINTS, namespace, name)
        except errors.StatusError as err:
            if err.code != 404:
                raise


def _endpoints_same(current: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    cur_meta = current.get("metadata") or {}
    new_meta = desired.get("metadata") or {}
    return (
        (current.get("subsets") or []) == (desired.get("subsets") or [])
        and (cur_meta.get("labels") or {}) == (new_meta.get("labels") or {})
        and (cur_meta.get("annotations") or {}) == (new_meta.get("annotations") or {})
    )
