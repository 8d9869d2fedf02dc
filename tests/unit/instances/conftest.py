"""Every provider test that takes ``provider_factory`` runs once per provider.

Only the simulated provider exists so far; the containerd provider joins by
adding a parameter whose factory returns it with a clock whose ``advance``
really waits.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol

import pytest

from nodeless import clocks
from nodeless.instances.providers import base, simulated


class AdvancingClock(clocks.Clock, Protocol):
    """A clock a test can move forward (``FakeClock``; a real-time clock for
    real providers, whose ``advance`` sleeps)."""

    async def advance(self, seconds: float) -> None: ...


class ProviderFactory(Protocol):
    def __call__(
        self, *, zone_capacity: Mapping[str, int] | None = None
    ) -> tuple[base.Provider, AdvancingClock]: ...


@pytest.fixture(params=["simulated"])
async def provider_factory(request: pytest.FixtureRequest) -> AsyncIterator[ProviderFactory]:
    """Builds started providers of one kind and closes them after the test."""
    made: list[base.Provider] = []

    def make(
        *, zone_capacity: Mapping[str, int] | None = None
    ) -> tuple[base.Provider, AdvancingClock]:
        clock = clocks.FakeClock()
        provider = simulated.SimulatedProvider(clock, zone_capacity=zone_capacity)
        made.append(provider)
        return provider, clock

    yield make
    for provider in made:
        await provider.close()


def pod(
    name: str = "web",
    *,
    command: list[str] | None = None,
    restart_policy: str | None = None,
    image: str = "busybox:1.36",
    **container: Any,
) -> dict[str, Any]:
    """A pod with one container ``app``."""
    app: dict[str, Any] = {"name": "app", "image": image, **container}
    if command is not None:
        app["command"] = command
    spec: dict[str, Any] = {"containers": [app]}
    if restart_policy is not None:
        spec["restartPolicy"] = restart_policy
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}"},
        "spec": spec,
    }


def instance_request(
    instance_id: str, pod_manifest: dict[str, Any] | None = None, *, zone: str = "zone-a"
) -> base.InstanceRequest:
    return base.InstanceRequest(
        instance_id=instance_id,
        pod=pod_manifest if pod_manifest is not None else pod(instance_id),
        zone=zone,
        spec_name="0.25-0.5Gi",
        vcpu=0.25,
        memory_gib=0.5,
    )


class Recorder:
    """Collects every pushed status, in order."""

    def __init__(self) -> None:
        self.statuses: list[base.InstanceStatus] = []

    def __call__(self, status: base.InstanceStatus) -> None:
        self.statuses.append(status)

    def states(self, instance_id: str) -> list[base.InstanceState]:
        """The states ``instance_id`` went through, repeats folded."""
        states: list[base.InstanceState] = []
        for status in self.statuses:
            if status.instance_id == instance_id and (not states or states[-1] != status.state):
                states.append(status.state)
        return states

    def last(self, instance_id: str) -> base.InstanceStatus:
        return [s for s in self.statuses if s.instance_id == instance_id][-1]
