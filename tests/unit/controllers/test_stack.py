"""The controller test stack itself runs pods end to end."""

from __future__ import annotations

from nodeless.client import clients
from tests.unit.controllers.conftest import Stack

PODS = clients.ResourceRef("", "v1", "pods", True, "Pod")


async def test_a_bare_pod_runs_on_a_zone_node(stack: Stack) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "default"},
        "spec": {
            "containers": [{"name": "c", "image": "busybox", "command": ["sleep", "infinity"]}]
        },
    }
    await stack.client.create(PODS, pod)

    async def running() -> bool:
        got = await stack.client.get(PODS, "default", "p")
        return (got.get("status") or {}).get("phase") == "Running"

    await stack.wait_for(running)
    got = await stack.client.get(PODS, "default", "p")
    assert got["spec"]["nodeName"].startswith("nodeless-zone-")
