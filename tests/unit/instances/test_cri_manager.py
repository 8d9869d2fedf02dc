"""The instance manager driving the CRI provider: pods through the API become
real pods on containerd, their status written back as a kubelet would, and a
restarted manager (with a new provider) adopts them.

Needs root and containerd (skipped otherwise, like every test that runs real
pods): one containerd per test on its own bridge and pod CIDR.
"""

from __future__ import annotations

import asyncio
import ipaddress
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from nodeless import clocks
from nodeless.client import clients
from nodeless.instances.providers.cri import backoffs, cgroups, containerd, sandboximages
from nodeless.instances.providers.cri import provider as cri
from nodeless.storage import sqlite
from tests.unit.scheduler import NAMESPACE, PODS, Cluster, phase_of, pod_manifest

POD_CIDR = "10.254.0.0/24"
BRIDGE = "nltest4"
BUSYBOX = "docker.io/library/busybox:1.36"  # what ``pod_manifest`` names, imported locally

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(120),
    pytest.mark.skipif(
        bool(containerd.unavailable_reason()), reason=containerd.unavailable_reason() or "-"
    ),
]


class Runtime:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        settings = containerd.ContainerdSettings(
            data_dir / "containerd", pod_cidr=POD_CIDR, bridge=BRIDGE
        )
        self.containerd = containerd.Containerd(settings)
        self.cgroup_root = f"/nodeless-test-{uuid.uuid4().hex[:8]}"

    def provider(self) -> cri.CriProvider:
        return cri.CriProvider(
            self.containerd.client,
            self.data_dir / "cri",
            clocks.SystemClock(),
            cgroup_root=self.cgroup_root,
            crash_backoff=backoffs.BackOffPolicy(0.2, 1.0),
            relist_interval=0.1,
        )


@pytest.fixture
async def runtime() -> AsyncIterator[Runtime]:
    made = Runtime(Path(tempfile.mkdtemp(prefix="nl-mgr-")))
    try:
        await made.containerd.start()
        applets = await asyncio.to_thread(sandboximages.all_applets)
        await made.containerd.ensure_image(sandboximages.BusyboxImage(BUSYBOX, applets=applets))
        yield made
    finally:
        await made.containerd.stop(remove_pods=True)
        for tree in cgroups.hierarchies():
            root = tree.mount / made.cgroup_root.strip("/")
            for sub in sorted(root.rglob("*"), key=lambda p: len(p.parts), reverse=True):
                if sub.is_dir():
                    sub.rmdir()
            if root.exists():
                root.rmdir()
        shutil.rmtree(made.data_dir, ignore_errors=True)
        await asyncio.to_thread(containerd.remove_network, BRIDGE)


def container(pod: dict[str, Any]) -> dict[str, Any]:
    [status] = (pod.get("status") or {}).get("containerStatuses") or [{}]
    return dict(status)


async def test_pods_through_the_api_run_on_containerd_and_are_removed_on_delete(
    runtime: Runtime, tmp_path: Path
) -> None:
    cluster = Cluster(
        backend=sqlite.SqliteBackend(tmp_path / "state.db"),
        clock=clocks.SystemClock(),  # type: ignore[arg-type]
        provider=runtime.provider(),
    )
    await cluster.start()
    try:
        await cluster.create_pod(pod_manifest("web", command=["sleep", "1000"], grace=1))
        await cluster.create_pod(
            pod_manifest("job", command=["sh", "-c", "echo hi; exit 0"], restart_policy="Never")
        )
        web = await cluster.wait_pod(
            "web", lambda p: phase_of(p) == "Running" and container(p).get("ready"), "web ready"
        )
        job = await cluster.wait_phase("job", "Succeeded")
        await cluster.client.delete(
            PODS, NAMESPACE, "web", clients.DeleteOptions(grace_period_seconds=1)
        )
        await cluster.wait_gone("web")
        sandboxes = await runtime.containerd.client.list_pod_sandbox()
    finally:
        await cluster.stop()

    assert ipaddress.ip_address(web["status"]["podIP"]) in ipaddress.ip_network(POD_CIDR)
    assert container(web)["containerID"].startswith("containerd://")
    assert container(web)["state"]["running"]["startedAt"]
    terminated = container(job)["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (0, "Completed")
    assert [s.metadata.name for s in sandboxes] == ["job"]


async def test_a_restarted_manager_adopts_the_pods_containerd_kept_running(
    runtime: Runtime, tmp_path: Path
) -> None:
    db = tmp_path / "state.db"
    first = Cluster(
        backend=sqlite.SqliteBackend(db),
        clock=clocks.SystemClock(),  # type: ignore[arg-type]
        provider=runtime.provider(),
    )
    await first.start()
    try:
        await first.create_pod(pod_manifest("durable", command=["sleep", "1000"]))
        before = await first.wait_pod(
            "durable", lambda p: container(p).get("ready"), "durable ready"
        )
    finally:
        await first.stop()

    second = Cluster(
        backend=sqlite.SqliteBackend(db),
        clock=clocks.SystemClock(),  # type: ignore[arg-type]
        provider=runtime.provider(),
    )
    await second.start()
    try:
        await second.settle()
        after = await second.must_pod("durable")
        sandboxes = await runtime.containerd.client.list_pod_sandbox()
        records = await second.records()
    finally:
        await second.stop()

    assert phase_of(after) == "Running"
    assert after["status"]["podIP"] == before["status"]["podIP"]
    assert container(after)["containerID"] == container(before)["containerID"]
    assert container(after)["restartCount"] == 0
    assert len(sandboxes) == 1
    assert [r["status"]["state"] for r in records] == ["Running"]
