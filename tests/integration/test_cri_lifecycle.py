"""Probes, lifecycle hooks, log rotation and the kubelet's Events of the CRI
provider, on real containerd.

Uses the containerd, bridge and registry fixtures of ``test_cri_provider``
(one containerd per test). Probe periods are one second, so each test lasts
a few seconds of real time.
"""

# ruff: noqa: F811 - the fixtures imported below are parameters of the tests

from __future__ import annotations

import asyncio
from typing import Any

from test_cri_provider import (  # noqa: F401 - fixtures
    Cri,
    Recorder,
    applets,
    container,
    crienv,
    current,
    pod,
    pytestmark,
    read_logs,
    registries,
    request,
    status_is,
    until,
)

from nodeless.instances.providers import base

State = base.InstanceState


class Events:
    """Every event the provider told, in order."""

    def __init__(self) -> None:
        self.seen: list[base.InstanceEvent] = []

    def __call__(self, event: base.InstanceEvent) -> None:
        self.seen.append(event)

    def reasons(self, instance_id: str) -> list[str]:
        return [e.reason for e in self.seen if e.instance_id == instance_id]

    def messages(self, instance_id: str, reason: str) -> list[str]:
        return [e.message for e in self.seen if e.instance_id == instance_id and e.reason == reason]


def _probe(handler: dict[str, Any], **timing: Any) -> dict[str, Any]:
    return {**handler, "periodSeconds": 1, **timing}


def _readiness(recorder: Recorder, instance_id: str) -> list[bool]:
    """The app container's readiness in the pushed statuses, repeats folded."""
    seen: list[bool] = []
    for status in recorder.statuses:
        if status.instance_id != instance_id or status.state is not State.RUNNING:
            continue
        ready = status.containers[0].ready
        if not seen or seen[-1] != ready:
            seen.append(ready)
    return seen


async def test_exec_readiness_probe_makes_the_container_ready_and_unready(
    crienv: Cri,
) -> None:
    made = crienv.provider()
    recorder, events = Recorder(), Events()
    made.subscribe(recorder)
    made.subscribe_events(events)
    app = container(
        "app",
        crienv.registry.image("busybox:1"),
        "sleep 1; touch /tmp/ready; sleep 3; rm /tmp/ready; sleep 1000",
        readinessProbe=_probe({"exec": {"command": ["cat", "/tmp/ready"]}}, failureThreshold=1),
    )

    await made.create(request("i-ready", pod("ready", [app])))
    await until(lambda: _went(recorder, "i-ready", [False, True, False]), timeout=30)

    status = await current(made, "i-ready")
    assert status.state is State.RUNNING
    assert (status.containers[0].started, status.containers[0].restart_count) == (True, 0)
    unhealthy = events.messages("i-ready", "Unhealthy")
    assert unhealthy and all(m.startswith("Readiness probe failed: cat:") for m in unhealthy)
    told = [r for r in events.reasons("i-ready") if r in ("Pulled", "Created", "Started")]
    assert told == ["Pulled", "Created", "Started"]
    assert isinstance(made, base.EventsCapable)


async def _went(recorder: Recorder, instance_id: str, sequence: list[bool]) -> bool:
    return _readiness(recorder, instance_id)[: len(sequence)] == sequence


async def test_failing_http_liveness_probe_kills_and_restarts_the_container(
    crienv: Cri,
) -> None:
    made = crienv.provider()
    events = Events()
    made.subscribe_events(events)
    app = container(
        "app",
        crienv.registry.image("busybox:1"),
        "mkdir -p /www; echo ok > /www/healthz; httpd -f -p 8080 -h /www & "
        "sleep 2; rm /www/healthz; sleep 1000",
        livenessProbe=_probe({"httpGet": {"path": "/healthz", "port": "http"}}, failureThreshold=2),
        ports=[{"name": "http", "containerPort": 8080}],
    )
    manifest = pod("alive", [app], terminationGracePeriodSeconds=1)

    await made.create(request("i-alive", manifest))
    await until(
        status_is(made, "i-alive", lambda s: s.containers[0].restart_count >= 1), timeout=40
    )

    status = await current(made, "i-alive")
    assert status.containers[0].last_terminated is not None
    assert status.containers[0].last_terminated["exitCode"] in (137, 143)
    assert events.messages("i-alive", "Killing")[0] == (
        "Container app failed liveness probe, will be restarted"
    )
    assert "Liveness probe failed: HTTP probe failed with statuscode: 404" in events.messages(
        "i-alive", "Unhealthy"
    )


async def test_startup_probe_holds_started_and_ready_until_the_port_listens(
    crienv: Cri,
) -> None:
    made = crienv.provider()
    recorder = Recorder()
    made.subscribe(recorder)
    app = container(
        "app",
        crienv.registry.image("busybox:1"),
        "sleep 2; mkdir -p /www; httpd -f -p 9000 -h /www",
        startupProbe=_probe({"tcpSocket": {"port": 9000}}, failureThreshold=20),
    )

    await made.create(request("i-start", pod("start", [app])))
    await until(status_is(made, "i-start", lambda s: s.containers[0].ready), timeout=30)

    running = [s.containers[0] for s in recorder.statuses if s.containers[0].state == "running"]
    assert (running[0].started, running[0].ready) == (False, False)
    assert (running[-1].started, running[-1].ready) == (True, True)
    assert running[-1].restart_count == 0


async def test_a_failed_pull_is_told_as_pulling_failed_and_back_off_events(crienv: Cri) -> None:
    made = crienv.provider()
    events = Events()
    made.subscribe_events(events)
    image = crienv.registry.image("missing:1")
    app = container("app", image, "true")

    await made.create(request("i-missing", pod("missing", [app])))
    await until(lambda: _told(events, "i-missing", "BackOff"), timeout=30)

    reasons = events.reasons("i-missing")
    assert reasons[:3] == ["Pulling", "Failed", "Failed"]
    assert events.messages("i-missing", "Pulling")[0] == f'Pulling image "{image}"'
    assert events.messages("i-missing", "Failed")[0].startswith(f'Failed to pull image "{image}"')
    assert "Error: ErrImagePull" in events.messages("i-missing", "Failed")
    assert events.messages("i-missing", "BackOff")[0] == f'Back-off pulling image "{image}"'


async def _told(events: Events, instance_id: str, reason: str) -> bool:
    return reason in events.reasons(instance_id)


async def test_deleting_a_running_pod_tells_which_containers_are_stopped(crienv: Cri) -> None:
    made = crienv.provider()
    events = Events()
    made.subscribe_events(events)
    app = container("app", crienv.registry.image("busybox:1"), "sleep 1000")

    await made.create(request("i-stop", pod("stop", [app])))
    await until(status_is(made, "i-stop", lambda s: s.state is State.RUNNING))
    await made.delete("i-stop", 0)

    assert events.messages("i-stop", "Killing") == ["Stopping container app"]


async def test_post_start_runs_before_probes_and_a_failing_one_restarts_the_container(
    crienv: Cri,
) -> None:
    made = crienv.provider()
    events = Events()
    made.subscribe_events(events)
    image = crienv.registry.image("busybox:1")
    good = container(
        "good",
        image,
        "while [ ! -f /tmp/hooked ]; do sleep 0.1; done; cat /tmp/hooked; sleep 1000",
        lifecycle={"postStart": {"exec": {"command": ["sh", "-c", "echo hooked > /tmp/hooked"]}}},
    )
    bad = container(
        "bad",
        image,
        "sleep 1000",
        lifecycle={"postStart": {"exec": {"command": ["sh", "-c", "echo no >&2; exit 3"]}}},
    )
    manifest = pod("hooks", [good, bad], terminationGracePeriodSeconds=1)

    await made.create(request("i-hooks", manifest))
    await until(
        status_is(made, "i-hooks", lambda s: s.containers[1].restart_count >= 1), timeout=40
    )

    status = await current(made, "i-hooks")
    assert (status.containers[0].restart_count, status.containers[0].state) == (0, "running")
    assert await read_logs(made, "i-hooks", "good") == b"hooked\n"
    [failed, *_] = events.messages("i-hooks", "FailedPostStartHook")
    assert failed.startswith(
        'Exec lifecycle hook ([sh -c echo no >&2; exit 3]) for Container "bad" in Pod '
        f'"hooks_default({manifest["metadata"]["uid"]})" failed - error: '
        "command 'sh -c echo no >&2; exit 3' exited with 3"
    )
    assert "FailedPostStartHook" in events.messages("i-hooks", "Killing")


async def test_pre_stop_runs_before_the_container_gets_sigterm(crienv: Cri) -> None:
    made = crienv.provider()
    app = container(
        "app",
        crienv.registry.image("busybox:1"),
        "trap 'cat /tmp/stopping; exit 0' TERM; echo up; sleep 1000 & wait",
        lifecycle={
            "preStop": {"exec": {"command": ["sh", "-c", "echo pre-stop ran > /tmp/stopping"]}}
        },
    )

    await made.create(request("i-pre", pod("pre", [app], terminationGracePeriodSeconds=10)))
    await until(status_is(made, "i-pre", lambda s: s.state is State.RUNNING))
    await until(lambda: _logged(made, "i-pre", b"up\n"))
    stream = await made.logs("i-pre", "app", follow=True)
    collected = asyncio.create_task(_collect(stream))
    await made.delete("i-pre", 10)

    assert await asyncio.wait_for(collected, 30) == b"up\npre-stop ran\n"


async def _logged(made: Any, instance_id: str, expected: bytes) -> bool:
    return await read_logs(made, instance_id, "app") == expected


async def _collect(stream: Any) -> bytes:
    return b"".join([chunk async for chunk in stream])


async def test_a_noisy_containers_log_is_rotated_and_kept_within_its_file_count(
    crienv: Cri,
) -> None:
    made = crienv.provider(log_max_size=4096, log_max_files=3, log_check_interval=0.2)
    app = container(
        "app",
        crienv.registry.image("busybox:1"),
        "i=0; while true; do i=$((i+1)); echo line-$i-0123456789abcdefghijklmnopqrstuvwxyz; "
        "sleep 0.002; done",
    )

    await made.create(request("i-noisy", pod("noisy", [app])))
    await until(status_is(made, "i-noisy", lambda s: s.state is State.RUNNING))
    status = await current(made, "i-noisy")
    log_dir = made.data_dir / "logs" / f"default_noisy_{status.pod_uid}" / "app"
    await until(lambda: _rotated_at_least(log_dir, 3), timeout=30)

    files = sorted(p.name for p in log_dir.iterdir())
    assert len(files) <= 3, files
    assert "0.log" in files
    assert any(name.endswith(".gz") for name in files), files
    # the current file only, as the kubelet reads it: its lines continue the rotated ones
    await until(lambda: _logged_something(made, "i-noisy"))
    lines = (await read_logs(made, "i-noisy", "app")).splitlines()
    assert all(line.startswith(b"line-") for line in lines)
    assert int(lines[0].split(b"-")[1]) > 1


async def _logged_something(made: Any, instance_id: str) -> bool:
    return bool(await read_logs(made, instance_id, "app"))


async def _rotated_at_least(log_dir: Any, times: int) -> bool:
    """True once ``times`` rotations happened (the oldest rotated file is gone)."""
    names = [p.name for p in log_dir.iterdir()] if log_dir.exists() else []
    return len(names) >= 3 and any(n.endswith(".gz") for n in names)


async def test_hostname_subdomain_host_aliases_and_dns_config_are_what_the_pod_sees(
    crienv: Cri,
) -> None:
    made = crienv.provider()
    app = container(
        "app",
        crienv.registry.image("busybox:1"),
        "hostname; cat /etc/hosts; cat /etc/resolv.conf",
    )
    manifest = pod(
        "ident",
        [app],
        restart_policy="Never",
        hostname="web-0",
        subdomain="web",
        hostAliases=[{"ip": "10.1.2.3", "hostnames": ["db.local", "cache.local"]}],
        dnsPolicy="None",
        dnsConfig={
            "nameservers": ["10.96.0.10"],
            "searches": ["default.svc.cluster.local"],
            "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}],
        },
    )

    await made.create(request("i-ident", manifest))
    await until(status_is(made, "i-ident", lambda s: s.state is State.SUCCEEDED))

    status = await current(made, "i-ident")
    lines = (await read_logs(made, "i-ident", "app")).decode().splitlines()
    assert lines[0] == "web-0"
    assert f"{status.ip}\tweb-0.web.default.svc.cluster.local\tweb-0" in lines
    assert "10.1.2.3\tdb.local\tcache.local" in lines
    assert "nameserver 10.96.0.10" in lines
    assert "search default.svc.cluster.local" in lines
    assert any(
        line.startswith("options") and "ndots:2" in line and "edns0" in line for line in lines
    )
