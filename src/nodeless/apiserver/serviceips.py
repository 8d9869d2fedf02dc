"""Service ClusterIP allocation, as upstream's IPAddress-based allocator
(``pkg/registry/core/service/ipallocator``, GA in 1.33).

Every allocated ClusterIP is one ``networking.k8s.io/v1`` IPAddress object
named by the address, whose ``parentRef`` names the Service. Creating that
object is the allocation: the store's create-if-absent makes two Services
racing for one address impossible, even across several API servers on one
etcd, and the objects are how anyone can see what is taken.

- A Service asking for an address (``clusterIP``/``clusterIPs``) gets it if it
  is in the range and free, else 422 naming ``spec.clusterIPs``.
- Otherwise an address is picked at random from the upper part of the range
  first; the lowest addresses (upstream's static band) are left for Services
  that ask for one by number, such as the DNS Service's ``.10``.
- Headless (``None``) and ExternalName Services hold no address.
- A ClusterIP never changes once set; an update that leaves it out keeps it
  (upstream's ``patchAllocatedValues``), as PUTs of edited manifests expect.
- Addresses are released when their Service is deleted or becomes
  ExternalName, and given back when the write that took them fails.
- ``repair()`` at start-up removes IPAddresses whose Service is gone (a crash
  between the two writes) and recreates missing ones.
"""

from __future__ import annotations

import ipaddress
import itertools
import logging
import random
from typing import Any

from nodeless.api import errors, kinds
from nodeless.apiserver import storing

log = logging.getLogger(__name__)

Obj = dict[str, Any]

DEFAULT_SERVICE_CIDR = "10.96.0.0/12"
MANAGED_BY_LABEL = "ipaddress.kubernetes.io/managed-by"
MANAGED_BY = "ipallocator.k8s.io"
FAMILY_LABEL = "ipaddress.kubernetes.io/ip-family"
SERVICE_CIDR_NAME = "kubernetes"
_MANAGER = "kube-apiserver"


def static_band(size: int) -> int:
    """How many of the lowest addresses dynamic allocation leaves for last
    (upstream's calculateRangeOffset: size/16, between 16 and 256)."""
    return min(max(16, size // 16), 256)


class ServiceIPs:
    """The ClusterIP allocator for one IPv4 service range."""

    def __init__(self, store: storing.Store, cidr: str = DEFAULT_SERVICE_CIDR) -> None:
        network = ipaddress.ip_network(cidr, strict=False)
        if not isinstance(network, ipaddress.IPv4Network):
            raise ValueError(f"service CIDR {cidr}: only IPv4 ranges are supported")
        if network.num_addresses < 8:
            raise ValueError(f"service CIDR {cidr} is too small")
        self.store = store
        self.network = network
        self._rng = random.Random()
        found = store.registry.by_kind("networking.k8s.io", "v1", "IPAddress")
        assert found is not None
        self.ip_addresses: kinds.Resource = found

    @property
    def cidr(self) -> str:
        return str(self.network)

    def address(self, offset: int) -> str:
        """The range's ``offset``-th address (1: the ``kubernetes`` Service's)."""
        return str(self.network.network_address + offset)

    # --- the Store's allocator protocol ------------------------------------------------

    def held(self, service: Obj) -> list[str]:
        """The addresses a stored Service holds."""
        spec = service.get("spec") or {}
        if spec.get("type") == "ExternalName":
            return []
        ips = [str(ip) for ip in spec.get("clusterIPs") or [] if ip and ip != "None"]
        if not ips and spec.get("clusterIP") not in (None, "", "None"):
            ips = [str(spec["clusterIP"])]
        return ips

    def prepare_update(self, new: Obj, old: Obj) -> None:
        """Keep an allocated address the update left out; refuse changing it."""
        spec = new.get("spec")
        if not isinstance(spec, dict):
            return
        held = self.held(old)
        if not held and _headless(old) and spec.get("type") != "ExternalName":
            # "None" is held too: a headless Service stays headless.
            held = ["None"]
        if not held:
            return
        if spec.get("type") == "ExternalName":
            # Upstream's dropTypeDependentFields: becoming ExternalName with the
            # old address still in the manifest gives the address up.
            if (spec.get("clusterIPs") or [spec.get("clusterIP")]) == held or (
                spec.get("clusterIP") == held[0] and not spec.get("clusterIPs")
            ):
                for key in ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"):
                    spec.pop(key, None)
            return
        if not spec.get("clusterIP") and not spec.get("clusterIPs"):
            spec["clusterIP"] = held[0]
            spec["clusterIPs"] = list(held)
            return
        if not spec.get("clusterIPs") and spec.get("clusterIP") == held[0]:
            spec["clusterIPs"] = list(held)
        wanted = spec.get("clusterIPs") or [spec.get("clusterIP")]
        if list(wanted) != held:
            raise _invalid(
                new,
                "spec.clusterIPs[0]",
                f"Invalid value: {_go_strings(wanted)}: may not change once set",
            )

    async def allocate(self, new: Obj, old: Obj | None, dry_run: bool) -> list[str]:
        """Give ``new`` the addresses it needs and ``old`` did not hold; the
        addresses taken (to give back if the write fails)."""
        spec = new.get("spec")
        if not isinstance(spec, dict):
            return []
        if spec.get("type") == "ExternalName":
            if spec.get("clusterIP") or spec.get("clusterIPs"):
                raise _invalid(
                    new,
                    "spec.clusterIP",
                    f'Invalid value: "{spec.get("clusterIP") or spec["clusterIPs"][0]}": '
                    "may not be set for ExternalName services",
                )
            return []
        if old is not None and (self.held(old) or _headless(old)):
            return []
        ip = str(spec.get("clusterIP") or "")
        ips = [str(i) for i in spec.get("clusterIPs") or []]
        if ips and ip and ips[0] != ip:
            raise _invalid(
                new,
                "spec.clusterIPs[0]",
                f'Invalid value: "{ips[0]}": must match `clusterIP` when both are specified',
            )
        wanted = ips[0] if ips else ip
        if wanted == "None":
            spec["clusterIP"], spec["clusterIPs"] = "None", ["None"]
            return []
        if len(ips) > 1:
            raise _invalid(
                new,
                "spec.clusterIPs",
                f"Invalid value: {_go_strings(ips)}: this cluster serves one IP family (IPv4)",
            )
        parent = self._parent(new)
        if wanted:
            try:
                address = ipaddress.ip_address(wanted)
            except ValueError:
                raise _invalid(
                    new,
                    "spec.clusterIPs[0]",
                    f'Invalid value: "{wanted}": must be a valid IP address, '
                    "(e.g. 10.9.8.7 or 2001:db8::ffff)",
                ) from None
            if address not in self.network or address in (
                self.network.network_address,
                self.network.broadcast_address,
            ):
                raise _invalid(
                    new,
                    "spec.clusterIPs",
                    f"Invalid value: {_go_strings([wanted])}: failed to allocate IP {wanted}: "
                    f"the provided IP ({wanted}) is not in the valid range. "
                    f"The range of valid IPs is {self.cidr}",
                )
            if not await self._take(str(address), parent, dry_run):
                raise _invalid(
                    new,
                    "spec.clusterIPs",
                    f"Invalid value: {_go_strings([wanted])}: failed to allocate IP {wanted}: "
                    "provided IP is already allocated",
                )
            chosen = str(address)
        else:
            chosen = await self._take_any(parent, dry_run)
        spec["clusterIP"], spec["clusterIPs"] = chosen, [chosen]
        return [] if dry_run else [chosen]

    async def release(self, ips: list[str]) -> None:
        for ip in ips:
            try:
                await self.store.delete(self.ip_addresses, "", ip, storing.DeleteOptions())
            except errors.StatusError as err:
                if err.code != 404:
                    log.warning("releasing ClusterIP %s failed: %s", ip, err)

    # --- allocating ----------------------------------------------------------------

    def _taken(self) -> set[str]:
        # The names are the keys' last segment: no need to decode the objects.
        return {key.rsplit("/", 1)[-1] for key in self.store.cache(self.ip_addresses).objects}

    async def _take(self, ip: str, parent: Obj, dry_run: bool) -> bool:
        if dry_run:
            return ip not in self._taken()
        body = {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "IPAddress",
            "metadata": {
                "name": ip,
                "labels": {FAMILY_LABEL: "IPv4", MANAGED_BY_LABEL: MANAGED_BY},
            },
            "spec": {"parentRef": parent},
        }
        try:
            await self.store.create(
                self.ip_addresses, "", body, storing.WriteOptions(manager=_MANAGER)
            )
        except errors.StatusError as err:
            if err.reason == "AlreadyExists":
                return False
            raise
        return True

    async def _take_any(self, parent: Obj, dry_run: bool) -> str:
        size = self.network.num_addresses - 2  # no network or broadcast address
        band = min(static_band(size), size)
        taken = self._taken()
        # Dynamic addresses come from above the static band first, from a
        # random start, so that two API servers rarely race for one.
        for low, high in ((band, size), (0, band)):
            if high <= low:
                continue
            start = self._rng.randrange(low, high)
            for offset in itertools.chain(range(start, high), range(low, start)):
                ip = self.address(offset + 1)
                if ip in taken:
                    continue
                if await self._take(ip, parent, dry_run):
                    return ip
                taken.add(ip)
        raise errors.internal("failed to allocate a serviceIP: range is full")

    def _parent(self, service: Obj) -> Obj:
        meta = service.get("metadata") or {}
        return {
            "group": "",
            "resource": "services",
            "namespace": str(meta.get("namespace") or ""),
            "name": str(meta.get("name") or ""),
        }

    # --- start-up ---------------------------------------------------------------------

    async def ensure_service_cidr(self) -> None:
        """The default ServiceCIDR object, so clients can read the range."""
        resource = self.store.registry.by_kind("networking.k8s.io", "v1", "ServiceCIDR")
        assert resource is not None
        if await self.store.get_stored(resource, "", SERVICE_CIDR_NAME) is not None:
            return
        body = {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "ServiceCIDR",
            "metadata": {"name": SERVICE_CIDR_NAME},
            "spec": {"cidrs": [self.cidr]},
        }
        try:
            created = await self.store.create(
                resource, "", body, storing.WriteOptions(manager=_MANAGER)
            )
        except errors.StatusError as err:
            if err.reason != "AlreadyExists":
                raise
            return
        ready = {
            "type": "Ready",
            "status": "True",
            "reason": "",
            "message": "Kubernetes Service CIDR is ready",
            "lastTransitionTime": created["metadata"]["creationTimestamp"],
        }

        def set_ready(obj: Obj | None) -> Obj:
            assert obj is not None
            obj["status"] = {"conditions": [ready]}
            return obj

        await self.store.update(
            resource,
            "",
            SERVICE_CIDR_NAME,
            set_ready,
            storing.WriteOptions(manager=_MANAGER, subresource="status"),
        )

    async def repair(self) -> None:
        """Match IPAddresses with Services after a crash between their writes."""
        services = self.store.registry.by_kind("", "v1", "Service")
        assert services is not None
        await self.store.consistent()
        holders: dict[str, Obj] = {}
        for entry in list(self.store.cache(services).objects.values()):
            for ip in self.held(entry.obj):
                holders[ip] = entry.obj
        existing = {
            entry.name: entry.obj
            for entry in list(self.store.cache(self.ip_addresses).objects.values())
        }
        for ip, obj in existing.items():
            ref = (obj.get("spec") or {}).get("parentRef") or {}
            holder = holders.get(ip)
            if ref.get("resource") != "services":
                continue
            if holder is None or self._parent(holder) != {
                "group": ref.get("group", ""),
                "resource": "services",
                "namespace": ref.get("namespace", ""),
                "name": ref.get("name", ""),
            }:
                log.info("releasing ClusterIP %s: its Service is gone", ip)
                await self.release([ip])
        for ip, holder in holders.items():
            if ip not in existing and ipaddress.ip_address(ip) in self.network:
                log.info("recording ClusterIP %s of an existing Service", ip)
                await self._take(ip, self._parent(holder), False)


def _headless(service: Obj) -> bool:
    spec = service.get("spec") or {}
    return spec.get("clusterIP") == "None" or (spec.get("clusterIPs") or [None])[0] == "None"


def _go_strings(values: Any) -> str:
    """A list as Go's %#v prints a []string, as upstream's messages do."""
    return "[]string{" + ", ".join(f'"{v}"' for v in values or []) + "}"


def _invalid(service: Obj, field: str, message: str) -> errors.StatusError:
    name = str((service.get("metadata") or {}).get("name") or "")
    return errors.invalid("Service", "", name, [errors.Cause("FieldValueInvalid", message, field)])
