"""Probes and kubelet Events of the CRI provider, on real containerd.

Uses the containerd, bridge and registry fixtures of ``test_cri_provider``
(one containerd per test). Probe periods are one second, so each test lasts
a few seconds of real time.
"""

# ruff: noqa: F811 - the fixtures imported below are parameters of the tests

from __future__ import annotations

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
