"""Virtual nodes: one Ready, schedulable Node per zone, kept alive by a Lease.

A zone's node is how Kubernetes clients see the zone: its labels carry the
topology (``topology.kubernetes.io/zone``), its capacity is the zone's
instance quota, and its Lease in ``kube-node-lease`` is renewed like a
kubelet's heartbeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

from nodeless import clocks
from nodeless.api import errors, times
from nodeless.client import clients

log = logging.getLogger(__name__)

NODES = clients.ResourceRef("", "v1", "nodes", False, "Node")
LEASES = clients.ResourceRef("coordination.k8s.io", "v1", "leases", True, "Lease")
LEASE_NAMESPACE = "kube-node-lease"
LEASE_SECONDS = 40
RENEW_SECONDS = 10.0
STATUS_SECONDS = 60.0
KUBE_VERSION = "v1.37.0-nodeless"


@dataclass(frozen=True)
class Zone:
    """A zone and its quota: how many instances, vCPU and GiB may run there at once."""

    name: str
    region: str = "local"
    max_instances: int = 10_000
    max_vcpu: int = 40_000
    max_memory_gib: int = 160_000
    # nvidia.com/gpu devices the zone's instances can be given (0: none).
    max_gpus: int = 0

    @property
    def node_name(self) -> str:
        return f"nodeless-{self.name}"


def node_name(zone: str) -> str:
    return f"nodeless-{zone}"


def zone_of_node(name: str) -> str | None:
    return name[len("nodeless-") :] if name.startswith("nodeless-") else None


def node_object(zone: Zone, provider: str, now: str) -> dict[str, Any]:
    capacity = {
        "cpu": str(zone.max_vcpu),
        "memory": f"{zone.max_memory_gib}Gi",
        "pods": str(zone.max_instances),
        "ephemeral-storage": "100Ti",
    }
    if zone.max_gpus:
        capacity["nvidia.com/gpu"] = str(zone.max_gpus)
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": zone.node_name,
            "labels": {
                "kubernetes.io/hostname": zone.node_name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "kubernetes.io/role": "agent",
                "type": "virtual-kubelet",
                "node.kubernetes.io/instance-type": "nodeless-virtual-node",
                "topology.kubernetes.io/zone": zone.name,
                "topology.kubernetes.io/region": zone.region,
                "nodeless.dev/zone": zone.name,
                "nodeless.dev/provider": provider,
            },
        },
        "spec": {"providerID": f"nodeless://{provider}/{zone.name}"},
        "status": {
            "capacity": capacity,
            "allocatable": dict(capacity),
            "conditions": _conditions(now),
            "addresses": [
                {"type": "InternalIP", "address": "127.0.0.1"},
                {"type": "Hostname", "address": zone.node_name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
            "nodeInfo": {
                "machineID": zone.node_name,
                "systemUUID": zone.node_name,
                "bootID": zone.node_name,
                "kernelVersion": "",
                "osImage": f"Nodeless elastic container instances ({provider})",
                "containerRuntimeVersion": f"{provider}://nodeless",
                "kubeletVersion": KUBE_VERSION,
                "kubeProxyVersion": KUBE_VERSION,
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
        },
    }


def _conditions(now: str) -> list[dict[str, Any]]:
    healthy = [
        (
            "MemoryPressure",
            "False",
            "KubeletHasSufficientMemory",
            "no memory pressure: instances are sized individually",
        ),
        ("DiskPressure", "False", "KubeletHasNoDiskPressure", "no disk pressure"),
        ("PIDPressure", "False", "KubeletHasSufficientPID", "no PID pressure"),
        (
            "Ready",
            "True",
            "KubeletReady",
            "virtual node is ready to run elastic container instances",
        ),
    ]
    return [
        {
            "type": t,
            "status": s,
            "reason": r,
            "message": m,
            "lastHeartbeatTime": now,
            "lastTransitionTime": now,
        }
        for t, s, r, m in healthy
    ]


class VirtualNodes:
    """Registers the zones' nodes and keeps their heartbeats going."""

    def __init__(
        self,
        client: clients.ApiClient,
        zones: list[Zone],
        provider: str,
        clock: clocks.Clock | None = None,
    ) -> None:
        self.client = client
        self.zones = zones
        self.provider = provider
        self.clock = clock or clocks.SystemClock()
        self._task: asyncio.Task[None] | None = None

    def _now(self) -> str:
        return times.rfc3339(self.clock.now())

    def _micro_now(self) -> str:
        return times.rfc3339_micro(self.clock.now())

    async def register(self) -> None:
        for zone in self.zones:
            desired = node_object(zone, self.provider, self._now())
            try:
                current = await self.client.get(NODES, "", zone.node_name)
            except errors.StatusError as err:
                if err.code != 404:
                    raise
                await self.client.create(NODES, desired)
                continue
            # Keep what others set (labels, taints added by a user), refresh ours.
            updated = dict(current)
            labels = dict(current.get("metadata", {}).get("labels") or {})
            labels.update(desired["metadata"]["labels"])
            updated["metadata"] = dict(current["metadata"], labels=labels)
            updated["spec"] = dict(
                current.get("spec") or {}, providerID=desired["spec"]["providerID"]
            )
            updated = await self.client.update(NODES, updated)
            updated["status"] = desired["status"]
            await self.client.update_status(NODES, updated)
        await self.heartbeat()

    async def heartbeat(self) -> None:
        for zone in self.zones:
            lease = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": zone.node_name, "namespace": LEASE_NAMESPACE},
                "spec": {
                    "holderIdentity": zone.node_name,
                    "leaseDurationSeconds": LEASE_SECONDS,
                    "renewTime": self._micro_now(),
                },
            }
            try:
                await self.client.patch(
                    LEASES,
                    LEASE_NAMESPACE,
                    zone.node_name,
                    lease,
                    patch_type="apply",
                    force=True,
                    options=clients.WriteOptions(field_manager="nodeless-virtual-node"),
                )
            except errors.StatusError as err:
                log.warning("lease renewal for %s failed: %s", zone.node_name, err.message)

    async def refresh_status(self) -> None:
        now = self._now()
        for zone in self.zones:
            patch = {"status": {"conditions": _conditions(now)}}
            with contextlib.suppress(errors.StatusError):
                await self.client.patch(
                    NODES, "", zone.node_name, patch, patch_type="strategic", subresource="status"
                )

    async def run(self) -> None:
        since_status = 0.0
        while True:
            await self.clock.sleep(RENEW_SECONDS)
            await self.heartbeat()
            since_status += RENEW_SECONDS
            if since_status >= STATUS_SECONDS:
                since_status = 0.0
                await self.refresh_status()

    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="virtual-nodes")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
