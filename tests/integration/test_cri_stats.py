"""Usage of real containers (``CriProvider.stats``, the data behind ``kubectl
top``) on real containerd: a container spinning in a shell loop uses a large
part of a core, a sleeping one next to nothing, and only running containers
of live instances are reported.

Uses the containerd, bridge and registry fixtures of ``test_cri_provider``
(one containerd per test).
"""

# ruff: noqa: F811 - the fixtures imported below are parameters of the tests

from __future__ import annotations

import asyncio

from test_cri_provider import (  # noqa: F401 - fixtures
    Cri,
    applets,
    container,
    crienv,
    pod,
    pytestmark,
    registries,
    request,
    status_is,
    until,
)

from nodeless.instances.providers import base
from nodeless.instances.providers.cri import provider as cri

State = base.InstanceState


async def _usage(made: cri.CriProvider) -> dict[str, base.InstanceUsage]:
    return {u.instance_id: u for u in await made.stats()}


async def test_a_busy_container_uses_a_large_part_of_a_core_and_an_idle_one_little(
    crienv: Cri,
) -> None:
    made = crienv.provider()
    assert isinstance(made, base.StatsCapable)
    image = crienv.registry.image("busybox:1")
    # a whole vCPU for the burner, so its pod cgroup does not cap it below a core
    await made.create(
        request("burner", pod("burner", [container("spin", image, "while :; do :; done")]), vcpu=1)
    )
    await made.create(request("idle", pod("idle", [container("rest", image, "sleep 1000")])))
    for instance_id in ("burner", "idle"):
        await until(status_is(made, instance_id, lambda s: s.state is State.RUNNING))

    await made.stats()  # the first reading: the next is measured from it
    await asyncio.sleep(2)
    used = await _usage(made)

    assert set(used) == {"burner", "idle"}
    [spin] = used["burner"].containers
    [rest] = used["idle"].containers
    assert (spin.name, rest.name) == ("spin", "rest")
    assert spin.cpu_nano_cores > 200_000_000
    assert rest.cpu_nano_cores < 50_000_000
    assert spin.memory_working_set_bytes > 0 and rest.memory_working_set_bytes > 0
    assert used["burner"].window_seconds >= cri.MIN_STATS_WINDOW
    assert used["burner"].timestamp.tzinfo is not None

    await made.delete("burner", 0)
    await until(lambda: _gone(made, "burner"))
    assert set(await _usage(made)) == {"idle"}
    await made.delete("idle", 0)


async def test_containers_that_are_not_running_are_not_reported(crienv: Cri) -> None:
    made = crienv.provider()
    image = crienv.registry.image("busybox:1")
    await made.create(
        request(
            "done",
            pod("done", [container("once", image, "exit 0")], restart_policy="Never"),
        )
    )
    await until(status_is(made, "done", lambda s: s.state is State.SUCCEEDED))

    assert "done" not in await _usage(made)
    await made.delete("done", 0)


async def _gone(made: cri.CriProvider, instance_id: str) -> bool:
    return await made.get(instance_id) is None
