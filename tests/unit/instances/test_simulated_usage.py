"""The simulated provider's usage (``stats``): synthetic figures shaped like a
real pod's, reproducible from the seed and the clock, and overridable so an
autoscaler can be tested against a pod that says what it burns."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from nodeless import clocks
from nodeless.instances.providers import base, simulated

CORE = 1_000_000_000  # nanocores
MIB = 2**20

Make = Callable[..., simulated.SimulatedProvider]


@pytest.fixture
def clock() -> clocks.FakeClock:
    return clocks.FakeClock()


@pytest.fixture
async def make(clock: clocks.FakeClock) -> AsyncIterator[Make]:
    """Builds simulated providers (on ``clock`` unless given one) and closes them."""
    made: list[simulated.SimulatedProvider] = []

    def build(*, on: clocks.FakeClock | None = None, **options: Any) -> simulated.SimulatedProvider:
        provider = simulated.SimulatedProvider(on or clock, **options)
        made.append(provider)
        return provider

    yield build
    for provider in made:
        await provider.close()


def app(
    name: str = "app",
    *,
    command: list[str] | None = None,
    requests: dict[str, str] | None = None,
    limits: dict[str, str] | None = None,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    container: dict[str, Any] = {"name": name, "image": "busybox:1.36"}
    if command is not None:
        container["command"] = command
    if requests or limits:
        container["resources"] = {"requests": requests or {}, "limits": limits or {}}
    if env:
        container["env"] = [{"name": k, "value": v} for k, v in env.items()]
    return container


def request(
    instance_id: str,
    *containers: dict[str, Any],
    annotations: dict[str, str] | None = None,
    restart_policy: str | None = None,
    vcpu: float = 2.0,
    memory_gib: float = 4.0,
) -> base.InstanceRequest:
    """An instance of a pod with ``containers`` (one ``app`` when none), on a
    spec of ``vcpu`` and ``memory_gib``."""
    metadata: dict[str, Any] = {"name": instance_id, "namespace": "default", "uid": instance_id}
    if annotations:
        metadata["annotations"] = annotations
    spec: dict[str, Any] = {"containers": list(containers) or [app()]}
    if restart_policy:
        spec["restartPolicy"] = restart_policy
    return base.InstanceRequest(
        instance_id=instance_id,
        pod={"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec},
        zone="zone-a",
        spec_name=f"{vcpu}-{memory_gib}Gi",
        vcpu=vcpu,
        memory_gib=memory_gib,
    )


async def usage_of(
    provider: simulated.SimulatedProvider, instance_id: str
) -> dict[str, base.ContainerUsage]:
    """The instance's usage by container name; {} when it is not reported."""
    for usage in await provider.stats():
        if usage.instance_id == instance_id:
            return {c.name: c for c in usage.containers}
    return {}


async def cpu_over_time(
    provider: simulated.SimulatedProvider,
    clock: clocks.FakeClock,
    instance_id: str,
    samples: int,
    container: str = "app",
) -> list[int]:
    """The container's CPU at ``samples`` successive 10-second windows."""
    seen = []
    for _ in range(samples):
        seen.append((await usage_of(provider, instance_id))[container].cpu_nano_cores)
        await clock.advance(simulated.USAGE_WINDOW)
    return seen


async def test_a_running_container_uses_a_fraction_of_its_requests(
    make: Make, clock: clocks.FakeClock
) -> None:
    provider = make()
    await provider.create(request("web", app(requests={"cpu": "500m", "memory": "256Mi"})))
    await clock.advance(1)

    [usage] = await provider.stats()
    assert usage.instance_id == "web"
    assert usage.timestamp == clock.now()
    assert usage.window_seconds == simulated.USAGE_WINDOW
    [container] = usage.containers
    assert container.name == "app"
    assert 0.1 * 0.5 * CORE <= container.cpu_nano_cores <= 0.5 * 0.5 * CORE
    assert 0.6 * 256 * MIB <= container.memory_working_set_bytes <= 0.7 * 256 * MIB


async def test_without_requests_a_container_uses_a_fraction_of_its_share_of_the_spec(
    make: Make, clock: clocks.FakeClock
) -> None:
    provider = make()
    await provider.create(request("pair", app("a"), app("b"), vcpu=2.0, memory_gib=1.0))
    await clock.advance(1)

    used = await usage_of(provider, "pair")
    assert set(used) == {"a", "b"}
    for container in used.values():  # each has half the spec: 1 core, 512 MiB
        assert 0.1 * CORE <= container.cpu_nano_cores <= 0.5 * CORE
        assert 0.6 * 512 * MIB <= container.memory_working_set_bytes <= 0.7 * 512 * MIB


async def test_cpu_moves_with_the_clock_while_memory_stays(
    make: Make, clock: clocks.FakeClock
) -> None:
    provider = make()
    await provider.create(request("web"))
    await clock.advance(1)
    memory = (await usage_of(provider, "web"))["app"].memory_working_set_bytes

    cpu = await cpu_over_time(provider, clock, "web", samples=12)

    assert len(set(cpu)) > 1
    assert (await usage_of(provider, "web"))["app"].memory_working_set_bytes == memory


async def test_the_same_seed_and_clock_give_the_same_usage(make: Make) -> None:
    runs: dict[str, list[list[base.InstanceUsage]]] = {}
    for run, seed in (("first", 7), ("again", 7), ("other seed", 8)):
        clock = clocks.FakeClock()
        provider = make(on=clock, seed=seed)
        await provider.create(request("web"))
        runs[run] = []
        for _ in range(6):
            await clock.advance(simulated.USAGE_WINDOW)
            runs[run].append(await provider.stats())

    assert runs["first"] == runs["again"]
    assert runs["first"] != runs["other seed"]


async def test_the_simulated_cpu_annotation_sets_what_every_container_burns(
    make: Make, clock: clocks.FakeClock
) -> None:
    provider = make()
    annotations = {simulated.CPU_ANNOTATION: "900m", simulated.MEMORY_ANNOTATION: "300Mi"}
    await provider.create(request("hot", app("a"), app("b"), annotations=annotations))
    await clock.advance(1)

    for name in ("a", "b"):
        assert set(await cpu_over_time(provider, clock, "hot", 6, name)) == {900_000_000}
        used = (await usage_of(provider, "hot"))[name]
        assert used.memory_working_set_bytes == 300 * MIB


async def test_the_container_env_wins_over_the_pod_annotation(
    make: Make, clock: clocks.FakeClock
) -> None:
    provider = make()
    await provider.create(
        request(
            "mixed",
            app("hot", env={simulated.CPU_ENV: "1500m"}),
            app("cold", env={simulated.CPU_ENV: "0"}),
            annotations={simulated.CPU_ANNOTATION: "200m"},
        )
    )
    await clock.advance(1)

    used = await usage_of(provider, "mixed")
    assert used["hot"].cpu_nano_cores == 1_500_000_000
    assert used["cold"].cpu_nano_cores == 0


async def test_a_busy_loop_burns_a_full_core(make: Make, clock: clocks.FakeClock) -> None:
    provider = make()
    burner = app("burn", command=["sh", "-c", "while :; do :; done"])
    idle = app("idle", command=["sh", "-c", "while true; do sleep 10; done"])
    await provider.create(request("loops", burner, idle))
    await clock.advance(1)

    used = await usage_of(provider, "loops")
    assert used["burn"].cpu_nano_cores == CORE
    assert used["idle"].cpu_nano_cores < 0.5 * CORE


async def test_a_cpu_limit_or_the_spec_caps_what_a_container_burns(
    make: Make, clock: clocks.FakeClock
) -> None:
    provider = make()
    burn = {simulated.CPU_ANNOTATION: "3"}
    await provider.create(request("limited", app(limits={"cpu": "750m"}), annotations=burn))
    await provider.create(request("small", annotations=burn, vcpu=0.5))
    await clock.advance(1)

    assert (await usage_of(provider, "limited"))["app"].cpu_nano_cores == 750_000_000
    assert (await usage_of(provider, "small"))["app"].cpu_nano_cores == 500_000_000


async def test_only_running_containers_are_reported(make: Make, clock: clocks.FakeClock) -> None:
    provider = make(pull_latency=5)
    await provider.create(request("pulling"))
    await provider.create(
        request(
            "half",
            app("server"),
            app("oneshot", command=["sh", "-c", "sleep 2; exit 0"]),
            restart_policy="Never",
        )
    )
    assert await provider.stats() == []

    await clock.advance(5)
    assert set(await usage_of(provider, "half")) == {"server", "oneshot"}
    await clock.advance(2)
    assert set(await usage_of(provider, "half")) == {"server"}

    await provider.delete("half", 0)
    await clock.advance(0)
    assert [u.instance_id for u in await provider.stats()] == ["pulling"]


async def test_an_unparsable_override_falls_back_to_synthetic_usage(
    make: Make, clock: clocks.FakeClock
) -> None:
    provider = make()
    await provider.create(
        request(
            "typo",
            app(requests={"cpu": "1"}),
            annotations={simulated.CPU_ANNOTATION: "lots"},
        )
    )
    await clock.advance(1)

    cpu = (await usage_of(provider, "typo"))["app"].cpu_nano_cores
    assert 0.1 * CORE <= cpu <= 0.5 * CORE


def test_the_simulated_provider_is_stats_capable(clock: clocks.FakeClock) -> None:
    assert isinstance(simulated.SimulatedProvider(clock), base.StatsCapable)
