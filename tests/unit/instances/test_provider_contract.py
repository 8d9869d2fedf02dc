"""The ``Provider`` contract, run against every provider (see conftest).

Tests move time only through the factory's clock and wait with ``eventually``,
so a real provider with a real-time clock passes them the same way.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path

import pytest

from nodeless import clocks
from nodeless.instances.providers import base, simulated
from nodeless.instances.providers.cri import backoffs, cgroups, containerd, sandboximages
from nodeless.instances.providers.cri import provider as cri
from tests.unit.instances.conftest import (
    AdvancingClock,
    ProviderFactory,
    Recorder,
    instance_request,
    pod,
)

State = base.InstanceState
FOREVER = ["sleep", "infinity"]
TERMINAL = (State.SUCCEEDED, State.FAILED, State.EXPIRED)


# --- the providers under contract: simulated, and CRI where containerd can run ---

CRI_POD_CIDR = "10.252.0.0/24"
CRI_BRIDGE = "nltest2"
CRI_BUSYBOX = "docker.io/library/busybox:1.36"  # what ``pod()`` names, imported locally


def _cri_unavailable() -> str:
    if os.geteuid() != 0:
        return "containerd needs root"
    if missing := containerd.missing_binaries():
        return "missing " + ", ".join(missing) + " (scripts/install-system-packages.sh)"
    if not sandboximages.BUSYBOX_PATH.is_file():
        return "busybox-static is not installed"
    return ""


class _RealTimeClock(clocks.SystemClock):
    """Real providers run on real time: moving the clock means waiting."""

    async def advance(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


@pytest.fixture(
    params=[
        "simulated",
        pytest.param("cri", marks=[pytest.mark.integration, pytest.mark.timeout(180)]),
    ]
)
async def provider_factory(request: pytest.FixtureRequest) -> AsyncIterator[ProviderFactory]:
    """Builds started providers of one kind and closes them after the test.
    The CRI ones share one containerd per test (its own bridge and pod CIDR)
    with the pods' image imported under the name the pods use; back-offs
    are short so that restarts happen within the test's patience."""
    if request.param == "simulated":
        made_simulated: list[base.Provider] = []

        def make_simulated(
            *, zone_capacity: Mapping[str, int] | None = None
        ) -> tuple[base.Provider, AdvancingClock]:
            clock = clocks.FakeClock()
            provider = simulated.SimulatedProvider(clock, zone_capacity=zone_capacity)
            made_simulated.append(provider)
            return provider, clock

        yield make_simulated
        for provider in made_simulated:
            await provider.close()
        return
    if reason := _cri_unavailable():
        pytest.skip(reason)
    data_dir = Path(tempfile.mkdtemp(prefix="nl-contract-"))
    settings = containerd.ContainerdSettings(
        data_dir / "containerd", pod_cidr=CRI_POD_CIDR, bridge=CRI_BRIDGE
    )
    runtime = containerd.Containerd(settings)
    cgroup_root = f"/nodeless-contract-{uuid.uuid4().hex[:8]}"
    made: list[cri.CriProvider] = []
    short = backoffs.BackOffPolicy(0.2, 1.0, reset_after=600.0)

    def make(
        *, zone_capacity: Mapping[str, int] | None = None
    ) -> tuple[base.Provider, AdvancingClock]:
        provider = cri.CriProvider(
            runtime.client,
            data_dir / "cri",
            clocks.SystemClock(),
            cgroup_root=cgroup_root,
            zone_capacity=zone_capacity,
            crash_backoff=short,
            pull_backoff=short,
            relist_interval=0.1,
        )
        made.append(provider)
        return provider, _RealTimeClock()

    try:
        await runtime.start()
        applets = await asyncio.to_thread(sandboximages.all_applets)
        await runtime.ensure_image(sandboximages.BusyboxImage(CRI_BUSYBOX, applets=applets))
        yield make
    finally:
        try:
            for provider in made:
                for status in await provider.list():
                    await provider.delete(status.instance_id, 0)
                for _ in range(600):
                    if not await provider.list():
                        break
                    await asyncio.sleep(0.05)
                await provider.close()
        finally:
            await runtime.stop(remove_pods=True)
            for tree in cgroups.hierarchies():
                root = tree.mount / cgroup_root.strip("/")
                for directory in sorted(
                    (p for p in root.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)
                ):
                    directory.rmdir()
                if root.exists():
                    root.rmdir()
            shutil.rmtree(data_dir, ignore_errors=True)
            await asyncio.to_thread(containerd.remove_network, CRI_BRIDGE)


async def eventually(
    clock: AdvancingClock,
    condition: Callable[[], Awaitable[bool]],
    *,
    within: float = 300.0,
    step: float = 0.5,
) -> None:
    """Advances ``clock`` until ``condition`` holds, failing after ``within`` seconds."""
    waited = 0.0
    while not await condition():
        if waited >= within:
            pytest.fail(f"condition not met within {within}s")
        await clock.advance(step)
        waited += step


def has_state(
    provider: base.Provider, instance_id: str, *states: State
) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        status = await provider.get(instance_id)
        return status is not None and status.state in states

    return check


def gone(provider: base.Provider, instance_id: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return await provider.get(instance_id) is None

    return check


def subscribed(provider: base.Provider) -> Recorder:
    assert isinstance(provider, base.Notifier)
    recorder = Recorder()
    provider.subscribe(recorder)
    return recorder


async def test_provider_implements_provider_and_notifier(provider_factory: ProviderFactory) -> None:
    provider, _ = provider_factory()

    assert isinstance(provider, base.Provider)
    assert isinstance(provider, base.Notifier)


async def test_create_goes_pending_then_running_and_pushes_in_order(
    provider_factory: ProviderFactory,
) -> None:
    provider, clock = provider_factory()
    recorder = subscribed(provider)

    created = await provider.create(instance_request("i-1", pod("web", command=FOREVER)))
    assert created.instance_id == "i-1"
    assert created.state is State.PENDING
    assert (created.namespace, created.pod_name, created.pod_uid) == ("default", "web", "uid-web")
    assert created.created_at is not None
    await eventually(clock, has_state(provider, "i-1", State.RUNNING))

    assert recorder.states("i-1") == [State.PENDING, State.RUNNING]
    running = await provider.get("i-1")
    assert running is not None
    assert running.ip
    assert running.started_at is not None
    assert running.zone == "zone-a"
    [app] = running.containers
    assert (app.name, app.state, app.started, app.ready) == ("app", "running", True, True)
    assert app.started_at is not None
    assert app.container_id


async def test_create_is_idempotent_per_instance_id(provider_factory: ProviderFactory) -> None:
    provider, clock = provider_factory()
    request = instance_request("i-1", pod("web", command=FOREVER))

    await provider.create(request)
    await eventually(clock, has_state(provider, "i-1", State.RUNNING))
    again = await provider.create(request)

    assert again.instance_id == "i-1"
    assert again.state is State.RUNNING
    assert [s.instance_id for s in await provider.list()] == ["i-1"]


async def test_get_and_list_agree(provider_factory: ProviderFactory) -> None:
    provider, clock = provider_factory()
    for n in range(3):
        await provider.create(instance_request(f"i-{n}", pod(f"web-{n}", command=FOREVER)))
    for n in range(3):
        await eventually(clock, has_state(provider, f"i-{n}", State.RUNNING))

    listed = {s.instance_id: s for s in await provider.list()}

    assert sorted(listed) == ["i-0", "i-1", "i-2"]
    for instance_id, status in listed.items():
        assert await provider.get(instance_id) == status
    assert len({s.ip for s in listed.values()}) == 3
    assert await provider.get("i-missing") is None


async def test_get_and_list_return_copies(provider_factory: ProviderFactory) -> None:
    provider, clock = provider_factory()
    await provider.create(instance_request("i-1", pod("web", command=FOREVER)))
    await eventually(clock, has_state(provider, "i-1", State.RUNNING))

    got = await provider.get("i-1")
    assert got is not None
    got.state = State.FAILED
    got.containers[0].state = "terminated"
    got.containers.clear()
    [listed] = await provider.list()
    listed.ip = "192.0.2.1"

    again = await provider.get("i-1")
    assert again is not None
    assert again.state is State.RUNNING
    assert again.containers[0].state == "running"
    assert again.ip != "192.0.2.1"


async def test_delete_goes_terminating_then_gone_after_pushing_a_terminal_status(
    provider_factory: ProviderFactory,
) -> None:
    provider, clock = provider_factory()
    recorder = subscribed(provider)
    await provider.create(instance_request("i-1", pod("web", command=FOREVER)))
    await eventually(clock, has_state(provider, "i-1", State.RUNNING))

    await provider.delete("i-1", 30)
    await eventually(clock, gone(provider, "i-1"))

    states = recorder.states("i-1")
    assert states[:3] == [State.PENDING, State.RUNNING, State.TERMINATING]
    assert states[-1] in (State.SUCCEEDED, State.FAILED)
    final = recorder.last("i-1")
    assert final.finished_at is not None
    assert [s.instance_id for s in await provider.list()] == []


async def test_delete_is_idempotent_and_a_no_op_for_unknown_ids(
    provider_factory: ProviderFactory,
) -> None:
    provider, clock = provider_factory()
    recorder = subscribed(provider)

    await provider.delete("i-missing", 0)
    assert recorder.statuses == []

    await provider.create(instance_request("i-1", pod("web", command=FOREVER)))
    await eventually(clock, has_state(provider, "i-1", State.RUNNING))
    await provider.delete("i-1", 0)
    await provider.delete("i-1", 0)
    await eventually(clock, gone(provider, "i-1"))
    await provider.delete("i-1", 0)

    assert [s.state for s in recorder.statuses].count(State.TERMINATING) == 1
    assert recorder.states("i-1")[-1] in (State.SUCCEEDED, State.FAILED)


async def test_container_exiting_zero_under_never_succeeds_with_reason_completed(
    provider_factory: ProviderFactory,
) -> None:
    provider, clock = provider_factory()
    manifest = pod("job", command=["sh", "-c", "exit 0"], restart_policy="Never")

    await provider.create(instance_request("i-1", manifest))
    await eventually(clock, has_state(provider, "i-1", *TERMINAL))

    status = await provider.get("i-1")
    assert status is not None
    assert status.state is State.SUCCEEDED
    assert status.finished_at is not None
    [app] = status.containers
    assert (app.state, app.exit_code, app.reason) == ("terminated", 0, "Completed")
    assert app.finished_at is not None
    assert app.restart_count == 0


async def test_container_exiting_one_under_never_fails(provider_factory: ProviderFactory) -> None:
    provider, clock = provider_factory()
    manifest = pod("job", command=["sh", "-c", "exit 1"], restart_policy="Never")

    await provider.create(instance_request("i-1", manifest))
    await eventually(clock, has_state(provider, "i-1", *TERMINAL))

    status = await provider.get("i-1")
    assert status is not None
    assert status.state is State.FAILED
    [app] = status.containers
    assert (app.state, app.exit_code, app.reason) == ("terminated", 1, "Error")
    assert app.restart_count == 0


async def test_on_failure_restarts_with_back_off_and_counts_restarts(
    provider_factory: ProviderFactory,
) -> None:
    provider, clock = provider_factory()
    recorder = subscribed(provider)
    manifest = pod("job", command=["sh", "-c", "exit 1"], restart_policy="OnFailure")
    await provider.create(instance_request("i-1", manifest))

    async def restarted_twice() -> bool:
        status = await provider.get("i-1")
        return status is not None and status.containers[0].restart_count >= 2

    await eventually(clock, restarted_twice)

    backing_off = [s for s in recorder.statuses if s.containers[0].reason == "CrashLoopBackOff"]
    assert backing_off, "the container never waited in CrashLoopBackOff"
    assert all(s.state is State.RESTARTING for s in backing_off)
    waiting = backing_off[0].containers[0]
    assert waiting.state == "waiting"
    assert waiting.last_terminated is not None
    assert waiting.last_terminated["exitCode"] == 1
    assert waiting.last_terminated["reason"] == "Error"
    counts = [s.containers[0].restart_count for s in recorder.statuses]
    assert counts == sorted(counts)
    assert not any(s.state.terminal for s in recorder.statuses)


async def test_a_full_zone_raises_capacity_error_and_delete_frees_it(
    provider_factory: ProviderFactory,
) -> None:
    provider, clock = provider_factory(zone_capacity={"zone-a": 1})
    await provider.create(instance_request("i-1", pod("a", command=FOREVER)))

    with pytest.raises(base.CapacityError):
        await provider.create(instance_request("i-2", pod("b", command=FOREVER)))
    assert [s.instance_id for s in await provider.list()] == ["i-1"]
    assert issubclass(base.CapacityError, base.ProviderError)

    await provider.delete("i-1", 0)
    await eventually(clock, gone(provider, "i-1"))
    await provider.create(instance_request("i-2", pod("b", command=FOREVER)))

    assert [s.instance_id for s in await provider.list()] == ["i-2"]


async def test_polling_adapter_reports_the_same_transitions(
    provider_factory: ProviderFactory,
) -> None:
    provider, clock = provider_factory()
    pushed = subscribed(provider)
    polling = base.PollingAdapter(provider)
    polled = Recorder()
    polling.subscribe(polled)
    manifest = pod("job", command=["sh", "-c", "sleep 5; exit 0"], restart_policy="Never")

    await provider.create(instance_request("i-1", manifest))
    await polling.poll_once()
    for _ in range(20):
        await clock.advance(1)
        await polling.poll_once()

    assert pushed.states("i-1") == [State.PENDING, State.RUNNING, State.SUCCEEDED]
    assert polled.states("i-1") == pushed.states("i-1")
    assert polled.last("i-1") == pushed.last("i-1")
