"""GPU pods: sized to a GPU instance type, placed only where a zone has
nvidia.com/gpu to give, and told plainly when the cluster has none."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nodeless import clocks
from nodeless.client import clients
from nodeless.instances import nodes
from nodeless.instances.providers.cri import gpudevices
from tests.unit.scheduler import Cluster, annotation, pod_manifest, wait_for

NODES = clients.ResourceRef("", "v1", "nodes", False, "Node")


def gpu_pod(name: str, gpus: str = "1") -> dict[str, Any]:
    manifest = pod_manifest(name)
    manifest["spec"]["containers"][0]["resources"] = {"limits": {"nvidia.com/gpu": gpus}}
    return manifest


async def test_without_gpus_a_gpu_pod_waits_with_a_plain_reason() -> None:
    cluster = await Cluster(clock=clocks.FakeClock()).start()
    try:
        await cluster.create_pod(gpu_pod("train"))

        async def failed() -> list[dict[str, Any]]:
            return await cluster.events_for("train", "FailedScheduling")

        [event] = await wait_for(failed, what="FailedScheduling")
        assert "no nvidia.com/gpu capacity: this cluster has no GPUs" in event["message"]
        assert (await cluster.must_pod("train"))["spec"].get("nodeName") is None
    finally:
        await cluster.stop()


async def test_gpu_pods_take_the_zones_gpus_and_the_rest_wait() -> None:
    zones = [nodes.Zone("zone-a", max_gpus=1)]
    cluster = await Cluster(clock=clocks.FakeClock(), zones=zones).start()
    try:
        node = await cluster.client.get(NODES, "", "nodeless-zone-a")
        assert node["status"]["capacity"]["nvidia.com/gpu"] == "1"
        await cluster.create_pod(gpu_pod("first"))
        pod = await cluster.wait_phase("first", "Running")
        assert annotation(pod, "nodeless.dev/instance-spec") == "gpu-1xT4"
        await cluster.create_pod(gpu_pod("second"))

        async def failed() -> list[dict[str, Any]]:
            return await cluster.events_for("second", "FailedScheduling")

        [event] = await wait_for(failed, what="FailedScheduling for the second")
        assert "no capacity left for gpu-1xT4" in event["message"]
        # A pod without GPUs is not held back by them.
        await cluster.create_pod(pod_manifest("cpu"))
        await cluster.wait_phase("cpu", "Running")
    finally:
        await cluster.stop()


def test_the_hosts_gpus_are_its_nvidia_device_nodes(tmp_path: Path) -> None:
    for name in ("nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm", "null"):
        (tmp_path / name).touch()
    assert gpudevices.discover(tmp_path).indices == (0, 1)
    assert gpudevices.discover(tmp_path / "missing").indices == ()
