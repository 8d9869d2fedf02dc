"""Pod status from an instance's status, as a kubelet would write it: phase
per instance state, conditions whose transition times only move when their
value changes, init containers, and the pod-level reason only for the
platform's own endings."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from nodeless.instances import podstatuses
from nodeless.instances.providers import base

State = base.InstanceState
T0 = datetime.datetime(2026, 3, 1, 12, 0, 0, tzinfo=datetime.UTC)


def at(seconds: float) -> datetime.datetime:
    return T0 + datetime.timedelta(seconds=seconds)


def stamp(seconds: float) -> str:
    return at(seconds).strftime("%Y-%m-%dT%H:%M:%SZ")


POD: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "web", "namespace": "default", "uid": "u1"},
    "spec": {
        "initContainers": [{"name": "setup", "image": "busybox:init"}],
        "containers": [{"name": "app", "image": "busybox:1.36"}],
    },
}
PLAIN_POD: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "web", "namespace": "default", "uid": "u1"},
    "spec": {"containers": [{"name": "app", "image": "busybox:1.36"}]},
}


def running_container(started: float = 1, *, ready: bool = True) -> base.ContainerStatus:
    return base.ContainerStatus(
        name="app",
        image="busybox:1.36",
        state="running",
        started_at=at(started),
        ready=ready,
        started=True,
    )


def waiting_container(reason: str = "ContainerCreating") -> base.ContainerStatus:
    return base.ContainerStatus(name="app", image="busybox:1.36", state="waiting", reason=reason)


def terminated_container(code: int, reason: str = "") -> base.ContainerStatus:
    return base.ContainerStatus(
        name="app",
        image="busybox:1.36",
        state="terminated",
        exit_code=code,
        reason=reason,
        started_at=at(1),
        finished_at=at(5),
    )


def instance(
    state: State,
    *,
    containers: list[base.ContainerStatus] | None = None,
    init: list[base.ContainerStatus] | None = None,
    initialized: bool = True,
    reason: str = "",
    message: str = "",
    ip: str = "10.88.0.7",
    started: float | None = 1,
) -> base.InstanceStatus:
    return base.InstanceStatus(
        instance_id="eci-1",
        namespace="default",
        pod_name="web",
        pod_uid="u1",
        zone="zone-a",
        state=state,
        reason=reason,
        message=message,
        ip=ip,
        created_at=T0,
        started_at=at(started) if started is not None else None,
        containers=containers if containers is not None else [running_container()],
        init_containers=init or [],
        initialized=initialized,
    )


def conditions(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status["conditions"]}


# --- phases ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "phase"),
    [
        (
            instance(State.SCHEDULING, containers=[waiting_container()], ip="", started=None),
            "Pending",
        ),
        (instance(State.PENDING, containers=[waiting_container()], ip="", started=None), "Pending"),
        (instance(State.RUNNING), "Running"),
        (
            instance(State.RESTARTING, containers=[waiting_container("CrashLoopBackOff")]),
            "Running",
        ),
        (instance(State.TERMINATING), "Running"),
        # Deleted before anything started: it never ran.
        (
            instance(State.TERMINATING, containers=[waiting_container()], ip="", started=None),
            "Pending",
        ),
        (instance(State.SUCCEEDED, containers=[terminated_container(0)]), "Succeeded"),
        (instance(State.FAILED, containers=[terminated_container(1)], reason="Error"), "Failed"),
        (
            instance(State.EXPIRED, containers=[terminated_container(143)], reason="BidFailed"),
            "Failed",
        ),
    ],
)
def test_phase_follows_the_instance_state(status: base.InstanceStatus, phase: str) -> None:
    assert podstatuses.pod_status(PLAIN_POD, status)["phase"] == phase


def test_a_reclaimed_spot_instance_fails_the_pod_with_bid_failed() -> None:
    status = instance(
        State.EXPIRED,
        containers=[terminated_container(143)],
        reason="BidFailed",
        message="spot instance reclaimed",
    )
    out = podstatuses.pod_status(PLAIN_POD, status)
    assert (out["phase"], out["reason"], out["message"]) == (
        "Failed",
        "BidFailed",
        "spot instance reclaimed",
    )
    ready = conditions(out)["Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "PodCompleted")


# --- the pod-level reason ------------------------------------------------------------


@pytest.mark.parametrize("reason", ["NotFound", "ProviderFailed", "BidFailed"])
def test_the_platforms_own_endings_are_the_pod_reason(reason: str) -> None:
    status = instance(
        State.FAILED if reason != "BidFailed" else State.EXPIRED,
        containers=[terminated_container(137)],
        reason=reason,
        message=f"because {reason}",
    )
    out = podstatuses.pod_status(PLAIN_POD, status)
    assert out["phase"] == "Failed"
    assert out["reason"] == reason
    assert out["message"] == f"because {reason}"


@pytest.mark.parametrize(
    ("state", "code", "reason"), [(State.FAILED, 3, "Error"), (State.SUCCEEDED, 0, "Completed")]
)
def test_a_plain_container_ending_leaves_the_pod_reason_empty(
    state: State, code: int, reason: str
) -> None:
    status = instance(
        state, containers=[terminated_container(code)], reason=reason, message="container app"
    )
    out = podstatuses.pod_status(PLAIN_POD, status)
    assert "reason" not in out and "message" not in out
    terminated = out["containerStatuses"][0]["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (code, reason)


def test_running_pods_have_no_pod_reason() -> None:
    out = podstatuses.pod_status(PLAIN_POD, instance(State.RUNNING, reason="NotFound"))
    assert "reason" not in out


# --- containers --------------------------------------------------------------------------


def test_container_statuses_report_state_readiness_and_restarts() -> None:
    crashed = base.ContainerStatus(
        name="app",
        image="",
        state="waiting",
        reason="CrashLoopBackOff",
        message="back-off 10s restarting failed container",
        restart_count=2,
        last_terminated={"exitCode": 1, "reason": "Error"},
    )
    out = podstatuses.pod_status(PLAIN_POD, instance(State.RESTARTING, containers=[crashed]))
    [c] = out["containerStatuses"]
    assert c["image"] == "busybox:1.36"  # the spec's image when the provider gives none
    assert c["state"] == {
        "waiting": {
            "reason": "CrashLoopBackOff",
            "message": "back-off 10s restarting failed container",
        }
    }
    assert c["lastState"] == {"terminated": {"exitCode": 1, "reason": "Error"}}
    assert (c["ready"], c["started"], c["restartCount"]) == (False, False, 2)
    assert out["phase"] == "Running"
    assert conditions(out)["ContainersReady"]["status"] == "False"


def test_a_running_pod_has_ip_start_time_and_true_conditions() -> None:
    out = podstatuses.pod_status(PLAIN_POD, instance(State.RUNNING))
    assert out["podIP"] == "10.88.0.7"
    assert out["podIPs"] == [{"ip": "10.88.0.7"}]
    assert out["hostIP"]
    assert out["startTime"] == stamp(0)
    conds = conditions(out)
    for kind in ("Initialized", "Ready", "ContainersReady", "PodScheduled"):
        assert conds[kind]["status"] == "True", kind
    [c] = out["containerStatuses"]
    assert c["state"] == {"running": {"startedAt": stamp(1)}}
    assert (c["ready"], c["started"], c["restartCount"]) == (True, True, 0)


def test_a_pending_pod_has_no_ip_and_waits_creating() -> None:
    status = instance(State.PENDING, containers=[waiting_container()], ip="", started=None)
    out = podstatuses.pod_status(PLAIN_POD, status)
    assert "podIP" not in out
    assert out["containerStatuses"][0]["state"] == {"waiting": {"reason": "ContainerCreating"}}
    assert conditions(out)["Ready"]["status"] == "False"
    assert conditions(out)["Ready"]["reason"] == "ContainersNotReady"


def test_init_containers_are_reported_and_gate_initialized() -> None:
    init_running = base.ContainerStatus(
        name="setup", image="busybox:init", state="running", started_at=at(1), started=True
    )
    app_waiting = waiting_container("PodInitializing")
    status = instance(
        State.PENDING, containers=[app_waiting], init=[init_running], initialized=False
    )
    out = podstatuses.pod_status(POD, status)
    assert out["phase"] == "Pending"
    [init] = out["initContainerStatuses"]
    assert init["name"] == "setup" and init["image"] == "busybox:init"
    assert init["state"] == {"running": {"startedAt": stamp(1)}}
    initialized = conditions(out)["Initialized"]
    assert (initialized["status"], initialized["reason"]) == ("False", "ContainersNotInitialized")
    assert out["containerStatuses"][0]["state"] == {"waiting": {"reason": "PodInitializing"}}

    init_done = base.ContainerStatus(
        name="setup",
        image="busybox:init",
        state="terminated",
        exit_code=0,
        started_at=at(1),
        finished_at=at(2),
        ready=True,
    )
    later = instance(State.RUNNING, containers=[running_container(3)], init=[init_done])
    out = podstatuses.pod_status(POD, later, out)
    [init] = out["initContainerStatuses"]
    assert init["state"]["terminated"]["reason"] == "Completed"
    assert init["state"]["terminated"]["exitCode"] == 0
    assert conditions(out)["Initialized"]["status"] == "True"
    assert out["phase"] == "Running"


def test_a_pod_without_init_containers_reports_none() -> None:
    out = podstatuses.pod_status(PLAIN_POD, instance(State.RUNNING))
    assert "initContainerStatuses" not in out
    assert conditions(out)["Initialized"]["status"] == "True"


# --- condition transition times -----------------------------------------------------------


def test_condition_transition_time_is_kept_while_its_value_is_unchanged() -> None:
    first = podstatuses.pod_status(PLAIN_POD, instance(State.RUNNING, started=1))
    ready_since = conditions(first)["Ready"]["lastTransitionTime"]
    assert ready_since == stamp(1)
    # Later the provider reports again (a restart bumped started_at): Ready is still True.
    again = podstatuses.pod_status(PLAIN_POD, instance(State.RUNNING, started=50), first)
    assert conditions(again)["Ready"]["lastTransitionTime"] == ready_since
    assert (
        conditions(again)["PodScheduled"]["lastTransitionTime"]
        == (conditions(first)["PodScheduled"]["lastTransitionTime"])
    )


def test_condition_transition_time_moves_when_its_value_changes() -> None:
    previous = {
        "phase": "Running",
        "conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": stamp(1)},
            {"type": "ContainersReady", "status": "True", "lastTransitionTime": stamp(1)},
            {"type": "PodScheduled", "status": "True", "lastTransitionTime": stamp(0)},
        ],
    }
    crashed = instance(
        State.RESTARTING, containers=[waiting_container("CrashLoopBackOff")], started=60
    )
    out = podstatuses.pod_status(PLAIN_POD, crashed, previous)
    ready = conditions(out)["Ready"]
    assert ready["status"] == "False"
    assert ready["lastTransitionTime"] != stamp(1)
    assert ready["lastTransitionTime"] == stamp(60)
    assert conditions(out)["PodScheduled"]["lastTransitionTime"] == stamp(0)


def test_pod_status_is_stable_for_an_unchanged_instance() -> None:
    """The manager writes only when something changed: the same input must give
    the same output."""
    status = instance(State.RUNNING)
    first = podstatuses.pod_status(PLAIN_POD, status)
    assert podstatuses.pod_status(PLAIN_POD, status, first) == first
