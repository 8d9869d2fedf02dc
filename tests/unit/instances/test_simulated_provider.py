"""What the simulated provider does beyond the provider contract: reading exit
behaviour from commands, kubelet-like timing on the fake clock, and scale."""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import math
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from nodeless import clocks
from nodeless.instances.providers import base, commands, simulated
from tests.unit.instances.conftest import Recorder, instance_request, pod

State = base.InstanceState
FOREVER = commands.RUNS_FOREVER


def after(seconds: float, code: int = 0) -> commands.ExitBehaviour:
    return commands.ExitBehaviour(code, seconds)


# --- reading commands ---


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        # the forms manifests use
        (["sh", "-c", "sleep 5; exit 3"], after(5, 3)),
        (["sleep", "10"], after(10)),
        (["false"], after(0, 1)),
        (["true"], after(0)),
        (["exit", "4"], after(0, 4)),
        (["sh", "-c", "exit 4"], after(0, 4)),
        (["sleep", "infinity"], FOREVER),
        ([], FOREVER),
        (["/bin/sh", "-c", "sleep 2 && exit 7"], after(2, 7)),
        (["/bin/sleep", "1m"], after(60)),
        (["sleep", "1m30s"], after(90)),
        (["sleep", "0.5"], after(0.5)),
        (["sleep", "1", "2"], after(3)),
        (["sh", "-c", "sleep infinity"], FOREVER),
        (["sh", "-c", "exec sleep 3"], after(3)),
        (["sh", "-c", "exit 256"], after(0, 0)),
        (["sh", "-c", "exit nope"], after(0, 2)),
        # exit without a code returns the last status
        (["sh", "-c", "sleep 1; false; exit"], after(1, 1)),
        (["sh", "-c", "false"], after(0, 1)),
        (["sh", "-c", "echo done"], after(0)),
        # && and ||
        (["sh", "-c", "false && sleep 9; exit 5"], after(0, 5)),
        (["sh", "-c", "false || exit 6"], after(0, 6)),
        (["sh", "-c", "true || exit 6"], after(0)),
        # what a program we cannot see does: run until stopped
        (["nginx", "-g", "daemon off;"], FOREVER),
        (["sh", "-c", "echo starting; exec /app/server --port 80"], FOREVER),
        (["sh", "/entrypoint.sh"], FOREVER),
        (["sh"], after(0)),
        (["tail", "-f", "/dev/null"], FOREVER),
        # loops, conditionals, groups
        (["sh", "-c", "while true; do echo hi; sleep 10; done"], FOREVER),
        (["sh", "-c", "until nslookup db; do echo waiting; sleep 2; done"], after(0)),
        (["sh", "-c", "while true; do sleep 1; exit 9; done"], after(1, 9)),
        (["sh", "-c", "while :; do sleep 1; break; done; exit 4"], after(1, 4)),
        (["sh", "-c", "for i in 1 2 3; do sleep 2; done"], after(6)),
        (["sh", "-c", "if false; then exit 1; elif true; then sleep 3; else exit 2; fi"], after(3)),
        (["sh", "-c", "if true; then exit 8; fi; sleep 100"], after(0, 8)),
        (["sh", "-c", "(exit 3); sleep 1"], after(1)),
        (["sh", "-c", "{ sleep 1; exit 3; }; sleep 100"], after(1, 3)),
        # shell syntax that must not confuse it
        (["sh", "-c", "echo 'a; exit 9' >/dev/null 2>&1; sleep 2"], after(2)),
        (["sh", "-c", 'echo "x && exit 9" $(date; exit 9); exit 1'], after(0, 1)),
        (["sh", "-ec", "# setup\nsleep 2 # wait\n\nexit 7"], after(2, 7)),
        (["bash", "-o", "pipefail", "-c", "sleep 1 | cat; exit 2"], after(1, 2)),
        (["sh", "-c", "sleep 1 \\\n && exit 3"], after(1, 3)),
        (["sh", "-c", "FOO=bar sleep 4"], after(4)),
        # wrappers
        (["env", "A=b", "sleep", "2"], after(2)),
        (["busybox", "sleep", "2"], after(2)),
        (["tini", "--", "sleep", "2"], after(2)),
        (["sh", "-c", "sh -c 'sleep 2; exit 3'; exit 4"], after(2, 4)),
        (["timeout", "5", "sleep", "100"], after(5, 124)),
        (["timeout", "5s", "sleep", "1"], after(1)),
        # what it cannot parse runs forever
        (["sh", "-c", "echo 'unterminated"], FOREVER),
        (["sh", "-c", "while true; do sleep 1"], FOREVER),
    ],
)
def test_parse_command_reads_exit_behaviour_from_the_command_line(
    argv: list[str], expected: commands.ExitBehaviour
) -> None:
    assert commands.parse_command(argv) == expected


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("5", 5.0),
        ("0.25", 0.25),
        ("5s", 5.0),
        ("1m", 60.0),
        ("1m30s", 90.0),
        ("1.5h", 5400.0),
        ("250ms", 0.25),
        ("2d", 172800.0),
        ("infinity", math.inf),
    ],
)
def test_parse_duration_accepts_seconds_and_go_style(text: str, seconds: float) -> None:
    assert commands.parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "-1", "5x", "s", "1m-1s", "nan"])
def test_parse_duration_rejects_nonsense(text: str) -> None:
    with pytest.raises(ValueError):
        commands.parse_duration(text)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("code=3,after=5s", after(5, 3)),
        ("code=1", after(0, 1)),
        ("after=1m", after(60)),
        (" code = 2 , after = 10 ", after(10, 2)),
        ("after=never", FOREVER),
        ("", after(0)),
    ],
)
def test_parse_exit_spec_reads_the_explicit_form(
    spec: str, expected: commands.ExitBehaviour
) -> None:
    assert commands.parse_exit_spec(spec) == expected


@pytest.mark.parametrize("spec", ["code=x", "code=300", "after=soon", "colour=red", "3"])
def test_parse_exit_spec_rejects_nonsense(spec: str) -> None:
    with pytest.raises(ValueError):
        commands.parse_exit_spec(spec)


def test_env_override_wins_over_the_command() -> None:
    container = {
        "command": ["sleep", "infinity"],
        "env": [{"name": "NODELESS_SIM_EXIT", "value": "code=3,after=5s"}],
    }

    assert commands.container_behaviour(container) == after(5, 3)


def test_args_alone_are_the_command_line() -> None:
    assert commands.container_behaviour({"args": ["sleep", "7"]}) == after(7)
    assert commands.container_behaviour({"command": ["sh", "-c"], "args": ["exit 2"]}) == after(
        0, 2
    )


def test_ignore_sigterm_env_is_read() -> None:
    container = {
        "command": ["sleep", "infinity"],
        "env": [
            {"name": "NODELESS_SIM_IGNORE_SIGTERM", "value": "true"},
            {"name": "FROM_SECRET", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}},
        ],
    }

    assert commands.container_behaviour(container).ignores_sigterm


# --- the provider on a fake clock ---


@pytest.fixture
def clock() -> clocks.FakeClock:
    return clocks.FakeClock()


@pytest.fixture
async def make(clock: clocks.FakeClock) -> AsyncIterator[Any]:
    """Builds simulated providers on ``clock`` and closes them after the test."""
    made: list[simulated.SimulatedProvider] = []

    def build(**options: Any) -> simulated.SimulatedProvider:
        provider = simulated.SimulatedProvider(clock, **options)
        made.append(provider)
        return provider

    yield build
    for provider in made:
        await provider.close()


def watched(provider: simulated.SimulatedProvider) -> Recorder:
    recorder = Recorder()
    provider.subscribe(recorder)
    return recorder


def pod_with(name: str = "web", **spec: Any) -> dict[str, Any]:
    """A pod whose spec is exactly ``spec``."""
    return {"metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}"}, "spec": spec}


def container(name: str, command: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"name": name, "image": "busybox", **extra}
    if command is not None:
        spec["command"] = command
    return spec


async def status_of(provider: simulated.SimulatedProvider, instance_id: str) -> base.InstanceStatus:
    status = await provider.get(instance_id)
    assert status is not None
    return status


async def test_pull_and_start_latency_delay_running_except_for_cached_images(
    make: Any, clock: clocks.FakeClock
) -> None:
    provider = make(
        pull_latency=30, start_latency=2, cached_images=["docker.io/library/nginx:latest"]
    )
    await provider.create(instance_request("cold", pod("cold", image="busybox")))
    await provider.create(instance_request("warm", pod("warm", image="nginx")))

    await clock.advance(1.9)
    assert (await status_of(provider, "warm")).state is State.PENDING
    await clock.advance(0.1)
    assert (await status_of(provider, "warm")).state is State.RUNNING
    cold = await status_of(provider, "cold")
    assert cold.state is State.PENDING
    assert cold.containers[0].reason == "ContainerCreating"
    assert not cold.ip
    await clock.advance(30)
    assert (await status_of(provider, "cold")).state is State.RUNNING


async def test_crash_loop_back_off_doubles_from_ten_seconds_to_a_five_minute_cap(
    make: Any, clock: clocks.FakeClock
) -> None:
    provider = make()
    timeline: list[tuple[float, base.InstanceStatus]] = []
    provider.subscribe(lambda status: timeline.append((clock.monotonic(), status)))
    await provider.create(instance_request("i-1", pod("crash", command=["sh", "-c", "exit 1"])))

    await clock.advance(2000)

    starts = [(t, s.containers[0].restart_count) for t, s in timeline if s.containers[0].started]
    gaps = [round(b[0] - a[0], 6) for a, b in itertools.pairwise(starts)]
    assert [count for _, count in starts][:8] == list(range(8))
    assert gaps[:8] == [10, 20, 40, 80, 160, 300, 300, 300]


async def test_back_off_waits_in_crash_loop_back_off_with_the_last_termination(
    make: Any, clock: clocks.FakeClock
) -> None:
    provider = make()
    manifest = pod("crash", command=["sh", "-c", "sleep 5; exit 3"], restart_policy="Always")
    await provider.create(instance_request("i-1", manifest))
    await clock.advance(0)
    assert (await status_of(provider, "i-1")).state is State.RUNNING

    await clock.advance(5)
    waiting = await status_of(provider, "i-1")
    [app] = waiting.containers
    assert waiting.state is State.RESTARTING
    assert waiting.reason == "CrashLoopBackOff"
    assert (app.state, app.reason, app.restart_count, app.ready) == (
        "waiting",
        "CrashLoopBackOff",
        0,
        False,
    )
    assert (
        app.message == "back-off 10s restarting failed container=app pod=crash_default(uid-crash)"
    )
    assert app.last_terminated is not None
    assert {k: v for k, v in app.last_terminated.items() if k != "containerID"} == {
        "exitCode": 3,
        "reason": "Error",
        "startedAt": "2026-01-01T00:00:00Z",
        "finishedAt": "2026-01-01T00:00:05Z",
    }

    await clock.advance(10)
    restarted = await status_of(provider, "i-1")
    assert restarted.state is State.RUNNING
    assert restarted.containers[0].restart_count == 1
    assert restarted.containers[0].state == "running"
    assert restarted.containers[0].last_terminated is not None


async def test_always_restarts_a_container_that_exited_zero(
    make: Any, clock: clocks.FakeClock
) -> None:
    provider = make()
    await provider.create(instance_request("i-1", pod("web", command=["true"])))

    await clock.advance(10)

    status = await status_of(provider, "i-1")
    assert status.containers[0].restart_count == 1
    assert status.containers[0].last_terminated is not None
    assert status.containers[0].last_terminated["reason"] == "Completed"
    assert not status.state.terminal


async def test_on_failure_lets_a_container_that_exited_zero_succeed(
    make: Any, clock: clocks.FakeClock
) -> None:
    provider = make()
    manifest = pod("job", command=["sleep", "3"], restart_policy="OnFailure")
    await provider.create(instance_request("i-1", manifest))

    await clock.advance(3)

    status = await status_of(provider, "i-1")
    assert status.state is State.SUCCEEDED
    assert status.reason == "Completed"
    assert status.finished_at == clock.now()


async def test_back_off_resets_after_ten_minutes_of_running(
    make: Any, clock: clocks.FakeClock
) -> None:
    provider = make()
    await provider.create(
        instance_request("long", pod("long", command=["sh", "-c", "sleep 600; exit 1"]))
    )
    await provider.create(
        instance_request("short", pod("short", command=["sh", "-c", "sleep 599; exit 1"]))
    )

    # long: exits at 600, back-off 10 s, exits at 1210, back-off 10 s again
    # short: exits at 599, back-off 10 s, exits at 1208, back-off 20 s
    await clock.advance(1210)
    long_status = await status_of(provider, "long")
    short_status = await status_of(provider, "short")

    assert long_status.containers[0].message.startswith("back-off 10s ")
    assert short_status.containers[0].message.startswith("back-off 20s ")


async def test_init_containers_run_in_order_before_the_app_containers(
    make: Any, clock: clocks.FakeClock
) -> None:
    provider = make()
    recorder = watched(provider)
    manifest = pod_with(
        "web",
        initContainers=[
            container("migrate", ["sh", "-c", "sleep 3"]),
            container("warm", ["sleep", "2"]),
        ],
        containers=[container("app", ["sleep", "infinity"]), container("sidecar")],
    )

    created = await provider.create(instance_request("i-1", manifest))
    assert [c.reason for c in created.init_containers + created.containers] == [
        "ContainerCreating"
    ] * 4
    assert not created.initialized

    await clock.advance(0)
    first = await status_of(provider, "i-1")
    assert first.state is State.PENDING
    assert first.ip
    assert [c.state for c in first.init_containers] == ["running", "waiting"]
    assert [(c.state, c.reason) for c in first.containers] == [("waiting", "PodInitializing")] * 2

    await clock.advance(3)
    second = await status_of(provider, "i-1")
    assert [(c.state, c.reason) for c in second.init_containers] == [
        ("terminated", "Completed"),
        ("running", ""),
    ]
    assert second.init_containers[0].ready

    await clock.advance(2)
    running = await status_of(provider, "i-1")
    assert running.state is State.RUNNING
    assert running.initialized
    assert [c.state for c in running.init_containers] == ["terminated", "terminated"]
    assert [c.state for c in running.containers] == ["running", "running"]
    assert running.ip == first.ip
    assert recorder.states("i-1") == [State.PENDING, State.RUNNING]


async def test_a_failed_init_container_fails_the_pod_under_never(
    make: Any, clock: clocks.FakeClock
) -> None:
    provider = make()
    manifest = pod_with(
        "job",
        restartPolicy="Never",
        initContainers=[container("check", ["false"])],
        containers=[container("app", ["sleep", "infinity"])],
    )
    await provider.create(instance_request("i-1", manifest))

    await clock.advance(1)

    status = await status_of(provider, "i-1")
    assert status.state is State.FAILED
    assert status.message == "init container check exited with code 1"
    assert status.containers[0].state == "waiting"


async def test_a_failed_init_container_backs_off_and_the_pod_stays_pending(
    make: Any, clock: clocks.FakeClock
) -> None:
    provider = make()
    manifest = pod_with(
        "web",
        initContainers=[container("check", ["false"])],
        containers=[container("app", ["sleep", "infinity"])],
    )
    await provider.create(instance_request("i-1", manifest))

    await clock.advance(15)

    status = await status_of(provider, "i-1")
    assert status.state is State.PENDING
    assert not status.initialized
    assert status.init_containers[0].restart_count == 1
    assert status.init_containers[0].reason == "CrashLoopBackOff"


async def test_readiness_probe_makes_a_container_ready_after_its_initial_delay(
    make: Any, clock: clocks.FakeClock
) -> None:
    provider = make()
    recorder = watched(provider)
    probe = {"httpGet": {"path": "/", "port": 80}, "initialDelaySeconds": 5}
    manifest = pod("web", command=["sleep", "infinity"], readinessProbe=probe)
    await provider.create(instance_request("i-1", manifest))

    await clock.advance(4.9)
    early = await status_of(provider, "i-1")
    assert early.state is State.RUNNING
    assert (early.containers[0].started, early.containers[0].ready) == (True, False)

    await clock.advance(0.1)
    assert (await status_of(provider, "i-1")).containers[0].ready
    assert [s.containers[0].ready for s in recorder.statuses] == [False, False, True]


async def test_failure_rate_is_deterministic_for_a_seed(make: Any) -> None:
    async def outcomes(seed: int) -> list[bool]:
        provider = make(failure_rate=0.5, seed=seed)
        results = []
        for n in range(40):
            try:
                await provider.create(instance_request(f"i-{n}"))
            except base.ProviderError as e:
                assert "simulated provider failure" in str(e)
                assert await provider.get(f"i-{n}") is None
                results.append(False)
            else:
                results.append(True)
        return results

    first = await outcomes(7)

    assert first == await outcomes(7)
    assert first != await outcomes(8)
    assert 0 < first.count(False) < 40


async def test_delete_ends_sleeping_containers_with_sigterm(
    make: Any, clock: clocks.FakeClock
) -> None:
    provider = make()
    recorder = watched(provider)
    await provider.create(instance_request("i-1", pod("web", command=["sleep", "3600"])))
    await clock.advance(1)

    await provider.delete("i-1", 30)
    assert (await status_of(provider, "i-1")).state is State.TERMINATING
    await clock.advance(0)

    assert await provider.get("i-1") is None
    final = recorder.last("i-1")
    assert final.state is State.FAILED
    assert (final.containers[0].exit_code, final.containers[0].reason) == (143, "Error")
    assert final.finished_at == clock.now()


async def test_delete_kills_a_container_ignoring_sigterm_at_the_end_of_the_grace_period(
    make: Any, clock: clocks.FakeClock
) -> None:
    provider = make()
    recorder = watched(provider)
    stubborn = pod(
        "web",
        command=["sleep", "infinity"],
        env=[{"name": "NODELESS_SIM_IGNORE_SIGTERM", "value": "true"}],
    )
    await provider.create(instance_request("i-1", stubborn))
    await clock.advance(1)

    await provider.delete("i-1", 30)
    await clock.advance(29)
    assert (await status_of(provider, "i-1")).state is State.TERMINATING
    await provider.delete("i-1", 30)  # a longer grace period changes nothing
    await clock.advance(1)

    assert await provider.get("i-1") is None
    assert recorder.last("i-1").containers[0].exit_code == 137


async def test_a_shorter_grace_period_on_a_second_delete_kills_sooner(
    make: Any, clock: clocks.FakeClock
) -> None:
    provider = make()
    stubborn = pod(
        "web",
        command=["sleep", "infinity"],
        env=[{"name": "NODELESS_SIM_IGNORE_SIGTERM", "value": "true"}],
    )
    await provider.create(instance_request("i-1", stubborn))
    await clock.advance(1)

    await provider.delete("i-1", 300)
    await clock.advance(5)
    await provider.delete("i-1", 0)
    await clock.advance(0)

    assert await provider.get("i-1") is None


async def test_delete_of_a_pending_instance_finishes_at_once_and_frees_capacity(
    make: Any, clock: clocks.FakeClock
) -> None:
    provider = make(pull_latency=60, zone_capacity={"zone-a": 1})
    recorder = watched(provider)
    await provider.create(instance_request("i-1"))

    await provider.delete("i-1", 30)
    await clock.advance(0)

    assert await provider.get("i-1") is None
    assert recorder.states("i-1") == [State.PENDING, State.TERMINATING, State.FAILED]
    await provider.create(instance_request("i-2"))
    await clock.advance(120)
    assert (await status_of(provider, "i-2")).state is State.RUNNING


async def test_completed_instances_stay_listed_without_holding_capacity(
    make: Any, clock: clocks.FakeClock
) -> None:
    provider = make(zone_capacity={"zone-a": 1})
    recorder = watched(provider)
    job = pod("job", command=["sleep", "5"], restart_policy="Never")
    await provider.create(instance_request("i-1", job))
    await clock.advance(5)

    await provider.create(instance_request("i-2"))
    assert [s.state for s in await provider.list()] == [State.SUCCEEDED, State.PENDING]

    pushed = len(recorder.statuses)
    await provider.delete("i-1", 30)
    assert await provider.get("i-1") is None
    assert len(recorder.statuses) == pushed  # terminal states are final


async def test_zones_without_a_listed_capacity_are_unlimited(make: Any) -> None:
    provider = make(zone_capacity={"zone-a": 0})

    with pytest.raises(base.CapacityError, match="zone-a"):
        await provider.create(instance_request("i-1", zone="zone-a"))
    for n in range(5):
        await provider.create(instance_request(f"i-b{n}", zone="zone-b"))

    assert len(await provider.list()) == 5


async def test_reclaim_expires_the_instance_and_frees_its_capacity(
    make: Any, clock: clocks.FakeClock
) -> None:
    provider = make(zone_capacity={"zone-a": 1})
    recorder = watched(provider)
    await provider.create(instance_request("i-1", pod("spot", command=["sleep", "infinity"])))
    await clock.advance(1)

    await provider.reclaim("i-1")
    await provider.reclaim("i-1")
    await provider.reclaim("i-missing")

    expired = await status_of(provider, "i-1")
    assert expired.state is State.EXPIRED
    assert expired.reason == "BidFailed"
    assert expired.containers[0].exit_code == 143
    assert recorder.states("i-1") == [State.PENDING, State.RUNNING, State.EXPIRED]
    await provider.create(instance_request("i-2"))
    await provider.delete("i-1", 0)
    assert await provider.get("i-1") is None


async def test_every_container_must_end_before_the_pod_does(
    make: Any, clock: clocks.FakeClock
) -> None:
    provider = make()
    manifest = pod_with(
        "job",
        restartPolicy="Never",
        containers=[
            container("a", ["sleep", "5"]),
            container("b", ["sh", "-c", "sleep 10; exit 2"]),
        ],
    )
    await provider.create(instance_request("i-1", manifest))

    await clock.advance(5)
    half = await status_of(provider, "i-1")
    assert half.state is State.RUNNING
    assert [c.state for c in half.containers] == ["terminated", "running"]
    await clock.advance(5)

    done = await status_of(provider, "i-1")
    assert done.state is State.FAILED
    assert done.message == "container b exited with code 2"


async def test_an_invalid_exit_override_fails_create_and_creates_nothing(make: Any) -> None:
    provider = make()
    bad = pod("web", env=[{"name": "NODELESS_SIM_EXIT", "value": "code=later"}])

    with pytest.raises(base.ProviderError, match="container app"):
        await provider.create(instance_request("i-1", bad))

    assert await provider.list() == []


async def test_callbacks_get_copies(make: Any, clock: clocks.FakeClock) -> None:
    provider = make()
    seen: list[base.InstanceStatus] = []

    def meddle(status: base.InstanceStatus) -> None:
        status.containers[0].state = "meddled"
        status.state = State.FAILED
        seen.append(status)

    provider.subscribe(meddle)
    await provider.create(instance_request("i-1", pod("web", command=["sleep", "infinity"])))
    await clock.advance(0)

    status = await status_of(provider, "i-1")
    assert status.state is State.RUNNING
    assert status.containers[0].state == "running"
    assert len(seen) == 2


async def test_pod_ips_are_unique_and_inside_ip_base(make: Any, clock: clocks.FakeClock) -> None:
    provider = make(ip_base="10.99.0.0/24")
    for n in range(100):
        await provider.create(instance_request(f"i-{n}"))
    await clock.advance(0)

    ips = [s.ip for s in await provider.list()]

    assert len(set(ips)) == 100
    network = ipaddress.ip_network("10.99.0.0/24")
    assert all(ipaddress.ip_address(ip) in network for ip in ips)
    assert "10.99.0.0" not in ips and "10.99.0.1" not in ips


async def test_adopt_carries_a_running_instance_on_from_its_last_status(
    make: Any, clock: clocks.FakeClock
) -> None:
    job = pod("job", command=["sh", "-c", "sleep 100; exit 0"], restart_policy="Never")
    request = instance_request("i-1", job)
    before = make()
    await before.create(request)
    await clock.advance(40)
    last = await status_of(before, "i-1")
    await before.close()

    after_restart = make()
    assert await after_restart.list() == []
    adopted = await after_restart.adopt(request, last)
    assert adopted == last
    assert await after_restart.adopt(request, last) == last
    await after_restart.create(instance_request("i-2"))
    await clock.advance(59)
    assert (await status_of(after_restart, "i-1")).state is State.RUNNING
    await clock.advance(1)

    done = await status_of(after_restart, "i-1")
    assert done.state is State.SUCCEEDED
    assert done.ip == last.ip
    assert (await status_of(after_restart, "i-2")).ip != last.ip


async def test_adopt_counts_against_zone_capacity(make: Any, clock: clocks.FakeClock) -> None:
    provider = make(zone_capacity={"zone-a": 1})
    request = instance_request("i-1", pod("web", command=["sleep", "infinity"]))
    await provider.create(request)
    await clock.advance(0)
    last = await status_of(provider, "i-1")

    restarted = make(zone_capacity={"zone-a": 1})
    await restarted.adopt(request, last)

    with pytest.raises(base.CapacityError):
        await restarted.create(instance_request("i-2"))


async def test_two_thousand_instances_run_on_one_scheduler_task(
    make: Any, clock: clocks.FakeClock
) -> None:
    provider = make()
    tasks_before = len(asyncio.all_tasks())
    started = time.perf_counter()

    for n in range(2000):
        await provider.create(
            instance_request(f"i-{n}", pod(f"web-{n}", command=["sleep", "infinity"]))
        )
    await clock.advance(0)
    statuses = await provider.list()

    elapsed = time.perf_counter() - started
    print(f"\n2,000 simulated instances created and running in {elapsed:.3f}s")
    assert sum(s.state is State.RUNNING for s in statuses) == 2000
    assert len({s.ip for s in statuses}) == 2000
    assert len(asyncio.all_tasks()) - tasks_before <= 2  # the loop and its timer
