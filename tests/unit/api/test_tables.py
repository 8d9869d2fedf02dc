"""Server-side Tables: upstream's printer columns and cells, kind by kind."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from nodeless.api import tables

NOW = datetime.datetime(2024, 6, 1, 12, 0, 0, tzinfo=datetime.UTC)


def ago(seconds: float) -> str:
    """An RFC 3339 timestamp ``seconds`` before NOW."""
    when = NOW - datetime.timedelta(seconds=seconds)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def meta(name: str, age: float = 600, **extra: Any) -> dict[str, Any]:
    return {"name": name, "namespace": "default", "creationTimestamp": ago(age), **extra}


def names(columns: list[tables.Column]) -> list[str]:
    return [c.name for c in columns]


def wide(columns: list[tables.Column]) -> list[str]:
    return [c.name for c in columns if c.priority == 1]


# --------------------------------------------------------------------------
# Durations
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("delta", "expected"),
    [
        (datetime.timedelta(seconds=-5), "<invalid>"),
        (datetime.timedelta(seconds=-1.5), "0s"),
        (datetime.timedelta(seconds=0), "0s"),
        (datetime.timedelta(seconds=59), "59s"),
        (datetime.timedelta(seconds=119), "119s"),
        (datetime.timedelta(seconds=120), "2m"),
        (datetime.timedelta(seconds=150), "2m30s"),
        (datetime.timedelta(seconds=599), "9m59s"),
        (datetime.timedelta(minutes=10, seconds=30), "10m"),
        (datetime.timedelta(minutes=179), "179m"),
        (datetime.timedelta(hours=3), "3h"),
        (datetime.timedelta(hours=3, minutes=20), "3h20m"),
        (datetime.timedelta(hours=8, minutes=59), "8h"),
        (datetime.timedelta(hours=47), "47h"),
        (datetime.timedelta(hours=48), "2d"),
        (datetime.timedelta(hours=53), "2d5h"),
        (datetime.timedelta(days=8), "8d"),
        (datetime.timedelta(days=729), "729d"),
        (datetime.timedelta(days=730), "2y0d"),
        (datetime.timedelta(days=365 * 3 + 20), "3y20d"),
        (datetime.timedelta(days=365 * 9), "9y"),
    ],
)
def test_human_duration_matches_apimachinery(delta: datetime.timedelta, expected: str) -> None:
    assert tables.human_duration(delta) == expected


def test_age_of_an_object_without_creation_timestamp_is_unknown() -> None:
    cells = tables.cells_for("", "Namespace", {"metadata": {"name": "x"}}, NOW)
    assert cells == ["x", "", "<unknown>"]


def test_naive_now_is_taken_as_utc() -> None:
    naive = NOW.replace(tzinfo=None)
    cells = tables.cells_for("", "ConfigMap", {"metadata": meta("c", age=90)}, naive)
    assert cells[-1] == "90s"


# --------------------------------------------------------------------------
# Columns
# --------------------------------------------------------------------------


def test_column_serialises_every_field() -> None:
    column = tables.Column("IP", "string", description="d", priority=1)
    assert column.to_dict() == {
        "name": "IP",
        "type": "string",
        "format": "",
        "description": "d",
        "priority": 1,
    }


@pytest.mark.parametrize(
    ("group", "kind"),
    [
        ("example.com", "Widget"),
        ("rbac.authorization.k8s.io", "Role"),
        ("rbac.authorization.k8s.io", "ClusterRole"),
        ("", "LimitRange"),
        ("apiextensions.k8s.io", "CustomResourceDefinition"),
    ],
)
def test_kinds_without_a_printer_get_the_default_convertor(group: str, kind: str) -> None:
    columns = tables.columns_for(group, kind)
    assert [c.to_dict() | {"description": ""} for c in columns] == [
        {"name": "Name", "type": "string", "format": "name", "description": "", "priority": 0},
        {"name": "Created At", "type": "date", "format": "", "description": "", "priority": 0},
    ]
    obj = {"metadata": {"name": "admin", "creationTimestamp": "2024-05-01T10:00:00+02:00"}}
    assert tables.cells_for(group, kind, obj, NOW) == ["admin", "2024-05-01T08:00:00Z"]


def test_default_convertor_prints_go_zero_time_when_creation_is_unset() -> None:
    assert tables.cells_for("", "LimitRange", {"metadata": {"name": "l"}}, NOW) == [
        "l",
        "0001-01-01T00:00:00Z",
    ]


def test_pod_columns_match_upstream_including_wide_ones() -> None:
    columns = tables.columns_for("", "Pod")
    assert names(columns) == [
        "Name",
        "Ready",
        "Status",
        "Restarts",
        "Age",
        "IP",
        "Node",
        "Nominated Node",
        "Readiness Gates",
    ]
    assert wide(columns) == ["IP", "Node", "Nominated Node", "Readiness Gates"]
    assert columns[0].format == "name"
    assert {c.type for c in columns} == {"string"}


@pytest.mark.parametrize(
    ("group", "kind", "expected", "expected_wide"),
    [
        (
            "apps",
            "Deployment",
            ["Name", "Ready", "Up-to-date", "Available", "Age", "Containers", "Images", "Selector"],
            ["Containers", "Images", "Selector"],
        ),
        (
            "apps",
            "ReplicaSet",
            ["Name", "Desired", "Current", "Ready", "Age", "Containers", "Images", "Selector"],
            ["Containers", "Images", "Selector"],
        ),
        (
            "apps",
            "StatefulSet",
            ["Name", "Ready", "Age", "Containers", "Images"],
            ["Containers", "Images"],
        ),
        (
            "batch",
            "Job",
            [
                "Name",
                "Status",
                "Completions",
                "Duration",
                "Age",
                "Containers",
                "Images",
                "Selector",
            ],
            ["Containers", "Images", "Selector"],
        ),
        (
            "batch",
            "CronJob",
            [
                "Name",
                "Schedule",
                "Timezone",
                "Suspend",
                "Active",
                "Last Schedule",
                "Age",
                "Containers",
                "Images",
                "Selector",
            ],
            ["Containers", "Images", "Selector"],
        ),
        (
            "",
            "Service",
            ["Name", "Type", "Cluster-IP", "External-IP", "Port(s)", "Age", "Selector"],
            ["Selector"],
        ),
        (
            "",
            "Node",
            [
                "Name",
                "Status",
                "Roles",
                "Age",
                "Version",
                "Internal-IP",
                "External-IP",
                "OS-Image",
                "Kernel-Version",
                "Container-Runtime",
            ],
            ["Internal-IP", "External-IP", "OS-Image", "Kernel-Version", "Container-Runtime"],
        ),
        (
            "",
            "Event",
            [
                "Last Seen",
                "Type",
                "Reason",
                "Object",
                "Subobject",
                "Source",
                "Message",
                "First Seen",
                "Count",
                "Name",
            ],
            ["Subobject", "Source", "First Seen", "Count", "Name"],
        ),
        (
            "rbac.authorization.k8s.io",
            "ClusterRoleBinding",
            ["Name", "Role", "Age", "Users", "Groups", "ServiceAccounts"],
            ["Users", "Groups", "ServiceAccounts"],
        ),
        (
            "networking.k8s.io",
            "Ingress",
            ["Name", "Class", "Hosts", "Address", "Ports", "Age"],
            [],
        ),
        (
            "autoscaling",
            "HorizontalPodAutoscaler",
            ["Name", "Reference", "Targets", "MinPods", "MaxPods", "Replicas", "Age"],
            [],
        ),
        (
            "",
            "PersistentVolume",
            [
                "Name",
                "Capacity",
                "Access Modes",
                "Reclaim Policy",
                "Status",
                "Claim",
                "StorageClass",
                "VolumeAttributesClass",
                "Reason",
                "Age",
                "VolumeMode",
            ],
            ["VolumeMode"],
        ),
    ],
)
def test_columns_follow_upstream_order_and_priority(
    group: str, kind: str, expected: list[str], expected_wide: list[str]
) -> None:
    columns = tables.columns_for(group, kind)
    assert names(columns) == expected
    assert wide(columns) == expected_wide


def test_events_api_group_shares_core_event_columns() -> None:
    assert tables.columns_for("events.k8s.io", "Event") == tables.columns_for("", "Event")


def test_columns_for_returns_a_fresh_list() -> None:
    tables.columns_for("", "Pod").clear()
    assert len(tables.columns_for("", "Pod")) == 9


ALL_KINDS = [
    ("", "Pod"),
    ("", "PodTemplate"),
    ("", "ReplicationController"),
    ("", "Service"),
    ("", "Endpoints"),
    ("", "Node"),
    ("", "Namespace"),
    ("", "Event"),
    ("", "Secret"),
    ("", "ConfigMap"),
    ("", "ServiceAccount"),
    ("", "PersistentVolume"),
    ("", "PersistentVolumeClaim"),
    ("", "ResourceQuota"),
    ("", "LimitRange"),
    ("apps", "Deployment"),
    ("apps", "ReplicaSet"),
    ("apps", "StatefulSet"),
    ("apps", "DaemonSet"),
    ("apps", "ControllerRevision"),
    ("batch", "Job"),
    ("batch", "CronJob"),
    ("autoscaling", "HorizontalPodAutoscaler"),
    ("networking.k8s.io", "Ingress"),
    ("networking.k8s.io", "IngressClass"),
    ("networking.k8s.io", "IPAddress"),
    ("networking.k8s.io", "ServiceCIDR"),
    ("networking.k8s.io", "NetworkPolicy"),
    ("policy", "PodDisruptionBudget"),
    ("coordination.k8s.io", "Lease"),
    ("events.k8s.io", "Event"),
    ("discovery.k8s.io", "EndpointSlice"),
    ("rbac.authorization.k8s.io", "Role"),
    ("rbac.authorization.k8s.io", "ClusterRole"),
    ("rbac.authorization.k8s.io", "RoleBinding"),
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
    ("apiextensions.k8s.io", "CustomResourceDefinition"),
    ("storage.k8s.io", "StorageClass"),
    ("storage.k8s.io", "VolumeAttachment"),
    ("storage.k8s.io", "CSINode"),
    ("storage.k8s.io", "CSIDriver"),
    ("scheduling.k8s.io", "PriorityClass"),
    ("node.k8s.io", "RuntimeClass"),
    ("certificates.k8s.io", "CertificateSigningRequest"),
    ("admissionregistration.k8s.io", "MutatingWebhookConfiguration"),
    ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration"),
    ("admissionregistration.k8s.io", "ValidatingAdmissionPolicy"),
    ("admissionregistration.k8s.io", "ValidatingAdmissionPolicyBinding"),
    ("flowcontrol.apiserver.k8s.io", "FlowSchema"),
    ("flowcontrol.apiserver.k8s.io", "PriorityLevelConfiguration"),
]


@pytest.mark.parametrize(("group", "kind"), ALL_KINDS)
def test_every_kind_gives_one_cell_per_column_even_for_a_bare_object(group: str, kind: str) -> None:
    cells = tables.cells_for(group, kind, {"metadata": meta("bare")}, NOW)
    columns = tables.columns_for(group, kind)
    assert len(cells) == len(columns)
    name_index = names(columns).index("Name")
    assert cells[name_index] == "bare"


@pytest.mark.parametrize(("group", "kind"), ALL_KINDS)
def test_every_kind_tolerates_null_fields(group: str, kind: str) -> None:
    obj = {"metadata": {"name": "n"}, "spec": None, "status": None, "data": None}
    assert len(tables.cells_for(group, kind, obj, NOW)) == len(tables.columns_for(group, kind))


# --------------------------------------------------------------------------
# Pods
# --------------------------------------------------------------------------


def pod(
    *,
    phase: str = "Running",
    containers: list[str] | None = None,
    statuses: list[dict[str, Any]] | None = None,
    init: list[dict[str, Any]] | None = None,
    init_statuses: list[dict[str, Any]] | None = None,
    conditions: list[dict[str, Any]] | None = None,
    **metadata: Any,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "containers": [{"name": n, "image": "img"} for n in (containers or ["app"])],
        "nodeName": "node-1",
    }
    status: dict[str, Any] = {"phase": phase, "podIP": "10.0.0.5"}
    if init is not None:
        spec["initContainers"] = init
    if statuses is not None:
        status["containerStatuses"] = statuses
    if init_statuses is not None:
        status["initContainerStatuses"] = init_statuses
    if conditions is not None:
        status["conditions"] = conditions
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta("web", **metadata),
        "spec": spec,
        "status": status,
    }


def running(name: str = "app", ready: bool = True, restarts: int = 0) -> dict[str, Any]:
    return {
        "name": name,
        "ready": ready,
        "restartCount": restarts,
        "state": {"running": {"startedAt": ago(300)}},
    }


def terminated(name: str = "app", **state: Any) -> dict[str, Any]:
    return {"name": name, "ready": False, "restartCount": 0, "state": {"terminated": state}}


def waiting(name: str = "app", reason: str = "ContainerCreating") -> dict[str, Any]:
    return {
        "name": name,
        "ready": False,
        "restartCount": 0,
        "state": {"waiting": {"reason": reason}},
    }


def pod_cells(obj: dict[str, Any]) -> list[Any]:
    return tables.cells_for("", "Pod", obj, NOW)


def test_running_pod_row() -> None:
    assert pod_cells(pod(statuses=[running()])) == [
        "web",
        "1/1",
        "Running",
        "0",
        "10m",
        "10.0.0.5",
        "node-1",
        "<none>",
        "<none>",
    ]


def test_crash_looping_pod_shows_waiting_reason_and_last_restart() -> None:
    crashing = {
        "name": "app",
        "ready": False,
        "restartCount": 5,
        "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}},
        "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": ago(120)}},
    }
    cells = pod_cells(pod(statuses=[crashing]))
    assert cells[1:4] == ["0/1", "CrashLoopBackOff", "5 (2m ago)"]


def test_restarts_sum_over_containers_and_take_the_latest_termination() -> None:
    a = running("a", restarts=2) | {"lastState": {"terminated": {"finishedAt": ago(3600)}}}
    b = running("b", restarts=1) | {"lastState": {"terminated": {"finishedAt": ago(45)}}}
    cells = pod_cells(pod(containers=["a", "b"], statuses=[a, b]))
    assert cells[1:4] == ["2/2", "Running", "3 (45s ago)"]


def test_restarts_without_a_termination_time_are_a_bare_count() -> None:
    assert pod_cells(pod(statuses=[running(restarts=4)]))[3] == "4"


def test_init_container_progress_is_counted() -> None:
    obj = pod(
        phase="Pending",
        init=[{"name": "init-a", "image": "i"}, {"name": "init-b", "image": "i"}],
        init_statuses=[
            terminated("init-a", exitCode=0, reason="Completed"),
            running("init-b", ready=False),
        ],
        statuses=[waiting("app", "PodInitializing")],
    )
    assert pod_cells(obj)[1:4] == ["0/1", "Init:1/2", "0"]


@pytest.mark.parametrize(
    ("init_status", "expected"),
    [
        (waiting("init", "ImagePullBackOff"), "Init:ImagePullBackOff"),
        (waiting("init", "PodInitializing"), "Init:0/1"),
        (terminated("init", exitCode=1, reason="Error"), "Init:Error"),
        (terminated("init", exitCode=2), "Init:ExitCode:2"),
        (terminated("init", exitCode=137, signal=9), "Init:Signal:9"),
    ],
)
def test_failing_init_container_reason(init_status: dict[str, Any], expected: str) -> None:
    obj = pod(
        phase="Pending",
        init=[{"name": "init", "image": "i"}],
        init_statuses=[init_status],
        statuses=[waiting("app", "PodInitializing")],
    )
    assert pod_cells(obj)[2] == expected


def test_init_restarts_count_while_initializing() -> None:
    init_status = waiting("init", "CrashLoopBackOff") | {
        "restartCount": 3,
        "lastState": {"terminated": {"exitCode": 1, "finishedAt": ago(10)}},
    }
    obj = pod(
        phase="Pending",
        init=[{"name": "init", "image": "i"}],
        init_statuses=[init_status],
        statuses=[waiting("app", "PodInitializing")],
    )
    assert pod_cells(obj)[2:4] == ["Init:CrashLoopBackOff", "3 (10s ago)"]


def test_pod_initializing_once_init_containers_are_done() -> None:
    obj = pod(
        phase="Pending",
        init=[{"name": "init", "image": "i"}],
        init_statuses=[terminated("init", exitCode=0, reason="Completed")],
        statuses=[waiting("app", "PodInitializing")],
    )
    assert pod_cells(obj)[2] == "PodInitializing"


def test_running_sidecar_counts_as_ready_and_its_restarts_show() -> None:
    sidecar = running("proxy", restarts=2) | {
        "started": True,
        "lastState": {"terminated": {"finishedAt": ago(60)}},
    }
    obj = pod(
        init=[{"name": "proxy", "image": "envoy", "restartPolicy": "Always"}],
        init_statuses=[sidecar],
        statuses=[running("app")],
        conditions=[{"type": "Initialized", "status": "True"}, {"type": "Ready", "status": "True"}],
    )
    assert pod_cells(obj)[1:4] == ["2/2", "Running", "2 (60s ago)"]


@pytest.mark.parametrize(("ready", "expected"), [("True", "Running"), ("False", "NotReady")])
def test_completed_container_beside_a_running_one_is_not_completed(
    ready: str, expected: str
) -> None:
    obj = pod(
        containers=["a", "b"],
        statuses=[terminated("a", exitCode=0, reason="Completed"), running("b")],
        conditions=[{"type": "Ready", "status": ready}],
    )
    assert pod_cells(obj)[1:3] == ["1/2", expected]


def test_succeeded_pod_is_completed() -> None:
    obj = pod(phase="Succeeded", statuses=[terminated(exitCode=0, reason="Completed")])
    assert pod_cells(obj)[1:3] == ["0/1", "Completed"]


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ({"exitCode": 1, "reason": "Error"}, "Error"),
        ({"exitCode": 137, "reason": "OOMKilled"}, "OOMKilled"),
        ({"exitCode": 143}, "ExitCode:143"),
        ({"exitCode": 0, "signal": 15}, "Signal:15"),
    ],
)
def test_terminated_container_reason(state: dict[str, Any], expected: str) -> None:
    assert pod_cells(pod(phase="Failed", statuses=[terminated(**state)]))[2] == expected


def test_deleted_running_pod_is_terminating() -> None:
    obj = pod(statuses=[running()], deletionTimestamp=ago(5))
    assert pod_cells(obj)[2] == "Terminating"


def test_deleted_pod_on_a_lost_node_is_unknown() -> None:
    obj = pod(statuses=[running()], deletionTimestamp=ago(5))
    obj["status"]["reason"] = "NodeLost"
    assert pod_cells(obj)[2] == "Unknown"


def test_deleted_finished_pod_keeps_its_reason() -> None:
    obj = pod(
        phase="Succeeded",
        statuses=[terminated(exitCode=0, reason="Completed")],
        deletionTimestamp=ago(5),
    )
    assert pod_cells(obj)[2] == "Completed"


def test_pod_status_reason_overrides_phase() -> None:
    obj = pod(phase="Failed", statuses=[])
    obj["status"]["reason"] = "Evicted"
    assert pod_cells(obj)[2] == "Evicted"


def test_scheduling_gated_pod() -> None:
    obj = pod(
        phase="Pending",
        conditions=[{"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}],
    )
    assert pod_cells(obj)[1:3] == ["0/1", "SchedulingGated"]


def test_pod_wide_cells_prefer_pod_ips_and_count_readiness_gates() -> None:
    obj = pod(
        statuses=[running()],
        conditions=[
            {"type": "example.com/lb", "status": "True"},
            {"type": "example.com/dns", "status": "False"},
        ],
    )
    obj["spec"]["readinessGates"] = [
        {"conditionType": "example.com/lb"},
        {"conditionType": "example.com/dns"},
    ]
    obj["status"]["podIPs"] = [{"ip": "fd00::5"}, {"ip": "10.0.0.9"}]
    obj["status"]["nominatedNodeName"] = "node-2"
    assert pod_cells(obj)[5:] == ["fd00::5", "node-1", "node-2", "1/2"]


def test_unscheduled_pod_wide_cells_are_none() -> None:
    obj = {
        "metadata": meta("p"),
        "spec": {"containers": [{"name": "a"}]},
        "status": {"phase": "Pending"},
    }
    assert pod_cells(obj) == [
        "p",
        "0/1",
        "Pending",
        "0",
        "10m",
        "<none>",
        "<none>",
        "<none>",
        "<none>",
    ]


# --------------------------------------------------------------------------
# Workloads
# --------------------------------------------------------------------------

TEMPLATE: dict[str, Any] = {
    "metadata": {"labels": {"app": "web"}},
    "spec": {
        "containers": [
            {"name": "nginx", "image": "nginx:1.25"},
            {"name": "sidecar", "image": "busybox"},
        ]
    },
}
SELECTOR: dict[str, Any] = {
    "matchLabels": {"app": "web"},
    "matchExpressions": [{"key": "tier", "operator": "In", "values": ["b", "a"]}],
}


def test_deployment_row() -> None:
    obj = {
        "metadata": meta("web", age=3600),
        "spec": {"replicas": 3, "selector": SELECTOR, "template": TEMPLATE},
        "status": {"replicas": 3, "readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2},
    }
    assert tables.cells_for("apps", "Deployment", obj, NOW) == [
        "web",
        "2/3",
        3,
        2,
        "60m",
        "nginx,sidecar",
        "nginx:1.25,busybox",
        "app=web,tier in (a,b)",
    ]


def test_fresh_deployment_counts_zero_ready() -> None:
    obj = {"metadata": meta("web"), "spec": {"replicas": 2, "template": TEMPLATE}}
    assert tables.cells_for("apps", "Deployment", obj, NOW)[1:4] == ["0/2", 0, 0]


def test_replica_set_row() -> None:
    obj = {
        "metadata": meta("web-5d8f", age=86400 * 3),
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"pod-template-hash": "5d8f", "app": "web"}},
            "template": TEMPLATE,
        },
        "status": {"replicas": 3, "readyReplicas": 1},
    }
    assert tables.cells_for("apps", "ReplicaSet", obj, NOW) == [
        "web-5d8f",
        3,
        3,
        1,
        "3d",
        "nginx,sidecar",
        "nginx:1.25,busybox",
        "app=web,pod-template-hash=5d8f",
    ]


def test_stateful_set_row() -> None:
    obj = {
        "metadata": meta("db"),
        "spec": {"replicas": 3, "template": TEMPLATE},
        "status": {"readyReplicas": 1},
    }
    assert tables.cells_for("apps", "StatefulSet", obj, NOW) == [
        "db",
        "1/3",
        "10m",
        "nginx,sidecar",
        "nginx:1.25,busybox",
    ]


def test_daemon_set_row() -> None:
    template = {"spec": TEMPLATE["spec"] | {"nodeSelector": {"kubernetes.io/os": "linux"}}}
    obj = {
        "metadata": meta("agent"),
        "spec": {
            "selector": {"matchExpressions": [{"key": "gpu", "operator": "DoesNotExist"}]},
            "template": template,
        },
        "status": {
            "desiredNumberScheduled": 3,
            "currentNumberScheduled": 3,
            "numberReady": 2,
            "updatedNumberScheduled": 3,
            "numberAvailable": 2,
        },
    }
    assert tables.cells_for("apps", "DaemonSet", obj, NOW) == [
        "agent",
        3,
        3,
        2,
        3,
        2,
        "kubernetes.io/os=linux",
        "10m",
        "nginx,sidecar",
        "nginx:1.25,busybox",
        "!gpu",
    ]


def test_replication_controller_row() -> None:
    obj = {
        "metadata": meta("rc"),
        "spec": {"replicas": 2, "selector": {"app": "web"}, "template": TEMPLATE},
        "status": {"replicas": 2, "readyReplicas": 2},
    }
    assert tables.cells_for("", "ReplicationController", obj, NOW) == [
        "rc",
        2,
        2,
        2,
        "10m",
        "nginx,sidecar",
        "nginx:1.25,busybox",
        "app=web",
    ]


def test_pod_template_row() -> None:
    obj = {"metadata": meta("tpl"), "template": TEMPLATE}
    assert tables.cells_for("", "PodTemplate", obj, NOW) == [
        "tpl",
        "nginx,sidecar",
        "nginx:1.25,busybox",
        "app=web",
    ]


def test_controller_revision_names_its_controller_with_group() -> None:
    obj = {
        "metadata": meta(
            "db-7c9",
            ownerReferences=[
                {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db", "controller": True}
            ],
        ),
        "revision": 2,
    }
    assert tables.cells_for("apps", "ControllerRevision", obj, NOW) == [
        "db-7c9",
        "statefulset.apps/db",
        2,
        "10m",
    ]


def job(**status: Any) -> dict[str, Any]:
    return {
        "metadata": meta("pi", age=600),
        "spec": {
            "completions": 1,
            "parallelism": 1,
            "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "u1"}},
            "template": TEMPLATE,
        },
        "status": status,
    }


def test_completed_job_row() -> None:
    obj = job(
        succeeded=1,
        startTime=ago(300),
        completionTime=ago(150),
        conditions=[{"type": "Complete", "status": "True"}],
    )
    assert tables.cells_for("batch", "Job", obj, NOW) == [
        "pi",
        "Complete",
        "1/1",
        "2m30s",
        "10m",
        "nginx,sidecar",
        "nginx:1.25,busybox",
        "batch.kubernetes.io/controller-uid=u1",
    ]


def test_running_job_duration_runs_until_now() -> None:
    cells = tables.cells_for("batch", "Job", job(active=1, startTime=ago(42)), NOW)
    assert cells[1:4] == ["Running", "0/1", "42s"]


def test_unstarted_job_has_empty_duration() -> None:
    assert tables.cells_for("batch", "Job", job(), NOW)[3] == ""


@pytest.mark.parametrize(
    ("conditions", "deleting", "expected"),
    [
        ([{"type": "Failed", "status": "True"}], False, "Failed"),
        ([{"type": "Suspended", "status": "True"}], False, "Suspended"),
        ([{"type": "Suspended", "status": "True"}], True, "Terminating"),
        ([{"type": "FailureTarget", "status": "True"}], False, "FailureTarget"),
        ([{"type": "Complete", "status": "False"}], False, "Running"),
    ],
)
def test_job_status(conditions: list[dict[str, Any]], deleting: bool, expected: str) -> None:
    obj = job(conditions=conditions)
    if deleting:
        obj["metadata"]["deletionTimestamp"] = ago(1)
    assert tables.cells_for("batch", "Job", obj, NOW)[1] == expected


def test_job_without_completions_reports_parallelism() -> None:
    obj = job(succeeded=2)
    del obj["spec"]["completions"]
    obj["spec"]["parallelism"] = 3
    assert tables.cells_for("batch", "Job", obj, NOW)[2] == "2/1 of 3"
    obj["spec"]["parallelism"] = 1
    assert tables.cells_for("batch", "Job", obj, NOW)[2] == "2/1"


def test_cron_job_row() -> None:
    obj = {
        "metadata": meta("backup", age=7200),
        "spec": {
            "schedule": "*/5 * * * *",
            "suspend": False,
            "jobTemplate": {"spec": {"template": TEMPLATE}},
        },
        "status": {"active": [{"name": "backup-1"}], "lastScheduleTime": ago(180)},
    }
    assert tables.cells_for("batch", "CronJob", obj, NOW) == [
        "backup",
        "*/5 * * * *",
        "<none>",
        "False",
        1,
        "3m",
        "120m",
        "nginx,sidecar",
        "nginx:1.25,busybox",
        "<none>",
    ]


def test_never_scheduled_cron_job_with_time_zone() -> None:
    obj = {"metadata": meta("c"), "spec": {"schedule": "@daily", "timeZone": "Europe/Paris"}}
    assert tables.cells_for("batch", "CronJob", obj, NOW)[1:6] == [
        "@daily",
        "Europe/Paris",
        "<unset>",
        0,
        "<none>",
    ]


def hpa(metrics: list[dict[str, Any]], current: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "metadata": meta("web"),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
            "minReplicas": 1,
            "maxReplicas": 10,
            "metrics": metrics,
        },
        "status": {"currentReplicas": 2, "currentMetrics": current},
    }


CPU_80: dict[str, Any] = {
    "type": "Resource",
    "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}},
}
MEM_500: dict[str, Any] = {
    "type": "Resource",
    "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "500Mi"}},
}
PODS_QPS: dict[str, Any] = {
    "type": "Pods",
    "pods": {"metric": {"name": "qps"}, "target": {"type": "AverageValue", "averageValue": "1k"}},
}


def test_hpa_row_with_cpu_utilization() -> None:
    current = [
        {"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 50}}}
    ]
    assert tables.cells_for(
        "autoscaling", "HorizontalPodAutoscaler", hpa([CPU_80], current), NOW
    ) == [
        "web",
        "Deployment/web",
        "cpu: 50%/80%",
        "1",
        10,
        2,
        "10m",
    ]


def test_hpa_targets_unknown_until_measured_and_capped_at_two() -> None:
    cells = tables.cells_for(
        "autoscaling", "HorizontalPodAutoscaler", hpa([CPU_80, MEM_500, PODS_QPS], []), NOW
    )
    assert cells[2] == "cpu: <unknown>/80%, memory: <unknown>/500Mi + 1 more..."


def test_hpa_targets_average_value_and_pods_metrics() -> None:
    current = [
        {"type": "Resource", "resource": {"name": "memory", "current": {"averageValue": "300Mi"}}},
        {"type": "Pods", "pods": {"current": {"averageValue": "750"}}},
    ]
    cells = tables.cells_for(
        "autoscaling", "HorizontalPodAutoscaler", hpa([MEM_500, PODS_QPS], current), NOW
    )
    assert cells[2] == "memory: 300Mi/500Mi, 750/1k"


def test_hpa_without_metrics_or_min_replicas() -> None:
    obj = hpa([], [])
    del obj["spec"]["minReplicas"]
    cells = tables.cells_for("autoscaling", "HorizontalPodAutoscaler", obj, NOW)
    assert cells[2:4] == ["<none>", "<unset>"]


def test_hpa_in_autoscaling_v1_shape() -> None:
    obj = {
        "metadata": meta("web"),
        "spec": {
            "scaleTargetRef": {"kind": "Deployment", "name": "web"},
            "maxReplicas": 5,
            "targetCPUUtilizationPercentage": 70,
        },
        "status": {"currentReplicas": 1, "currentCPUUtilizationPercentage": 12},
    }
    assert tables.cells_for("autoscaling", "HorizontalPodAutoscaler", obj, NOW)[2] == "cpu: 12%/70%"


def test_pod_disruption_budget_row() -> None:
    obj = {
        "metadata": meta("pdb"),
        "spec": {"minAvailable": "50%"},
        "status": {"disruptionsAllowed": 1},
    }
    assert tables.cells_for("policy", "PodDisruptionBudget", obj, NOW) == [
        "pdb",
        "50%",
        "N/A",
        1,
        "10m",
    ]


# --------------------------------------------------------------------------
# Services and networking
# --------------------------------------------------------------------------


def service(kind: str, **spec: Any) -> dict[str, Any]:
    return {
        "metadata": meta("web"),
        "spec": {
            "type": kind,
            "clusterIP": "10.96.0.10",
            "clusterIPs": ["10.96.0.10"],
            "selector": {"app": "web", "tier": "fe"},
            "ports": [
                {"port": 80, "protocol": "TCP"},
                {"port": 443, "nodePort": 30443, "protocol": "TCP"},
            ],
            **spec,
        },
    }


def test_service_row_with_node_port() -> None:
    assert tables.cells_for("", "Service", service("NodePort"), NOW) == [
        "web",
        "NodePort",
        "10.96.0.10",
        "<none>",
        "80/TCP,443:30443/TCP",
        "10m",
        "app=web,tier=fe",
    ]


def test_load_balancer_without_ingress_is_pending() -> None:
    assert tables.cells_for("", "Service", service("LoadBalancer"), NOW)[3] == "<pending>"


def test_load_balancer_ingress_and_external_ips_are_listed() -> None:
    obj = service("LoadBalancer", externalIPs=["192.0.2.1"])
    obj["status"] = {
        "loadBalancer": {"ingress": [{"ip": "203.0.113.9"}, {"hostname": "lb.example.com"}]}
    }
    assert tables.cells_for("", "Service", obj, NOW)[3] == "203.0.113.9,lb.example.com,192.0.2.1"


def test_external_name_service() -> None:
    obj = {
        "metadata": meta("db"),
        "spec": {"type": "ExternalName", "externalName": "db.example.com"},
    }
    assert tables.cells_for("", "Service", obj, NOW) == [
        "db",
        "ExternalName",
        "<none>",
        "db.example.com",
        "<none>",
        "10m",
        "<none>",
    ]


def test_headless_service_shows_none_cluster_ip_and_udp_port() -> None:
    obj = {
        "metadata": meta("dns"),
        "spec": {"clusterIP": "None", "ports": [{"port": 53, "protocol": "UDP"}]},
    }
    assert tables.cells_for("", "Service", obj, NOW)[1:5] == [
        "ClusterIP",
        "None",
        "<none>",
        "53/UDP",
    ]


def test_endpoints_list_three_then_count_the_rest() -> None:
    obj = {
        "metadata": meta("web"),
        "subsets": [
            {
                "addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}, {"ip": "fd00::3"}],
                "ports": [{"port": 8080}, {"port": 9090}],
            }
        ],
    }
    assert tables.cells_for("", "Endpoints", obj, NOW) == [
        "web",
        "10.0.0.1:8080,10.0.0.2:8080,[fd00::3]:8080 + 3 more...",
        "10m",
    ]


def test_endpoints_without_subsets_are_none() -> None:
    assert tables.cells_for("", "Endpoints", {"metadata": meta("e")}, NOW)[1] == "<none>"


def test_endpoint_slice_row() -> None:
    obj = {
        "metadata": meta("web-abc"),
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 80}, {"name": "metrics"}],
        "endpoints": [{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2"]}],
    }
    assert tables.cells_for("discovery.k8s.io", "EndpointSlice", obj, NOW) == [
        "web-abc",
        "IPv4",
        "80,metrics",
        "10.0.0.1,10.0.0.2",
        "10m",
    ]


def test_empty_endpoint_slice_is_unset() -> None:
    obj = {"metadata": meta("e"), "addressType": "IPv4"}
    assert tables.cells_for("discovery.k8s.io", "EndpointSlice", obj, NOW)[2:4] == [
        "<unset>",
        "<unset>",
    ]


def test_ingress_row() -> None:
    obj = {
        "metadata": meta("web"),
        "spec": {
            "ingressClassName": "nginx",
            "rules": [{"host": "a.example.com"}, {"host": "b.example.com"}, {}],
            "tls": [{"hosts": ["a.example.com"]}],
        },
        "status": {"loadBalancer": {"ingress": [{"ip": "203.0.113.5"}]}},
    }
    assert tables.cells_for("networking.k8s.io", "Ingress", obj, NOW) == [
        "web",
        "nginx",
        "a.example.com,b.example.com",
        "203.0.113.5",
        "80, 443",
        "10m",
    ]


def test_ingress_without_hosts_or_class() -> None:
    obj = {"metadata": meta("i"), "spec": {"defaultBackend": {}}}
    assert tables.cells_for("networking.k8s.io", "Ingress", obj, NOW)[1:5] == [
        "<none>",
        "*",
        "",
        "80",
    ]


def test_ingress_with_many_hosts_counts_the_rest() -> None:
    rules = [{"host": f"h{i}.example.com"} for i in range(5)]
    obj = {"metadata": meta("i"), "spec": {"rules": rules}}
    hosts = tables.cells_for("networking.k8s.io", "Ingress", obj, NOW)[2]
    assert hosts == "h0.example.com,h1.example.com,h2.example.com + 2 more..."


def test_ingress_class_row() -> None:
    obj = {
        "metadata": meta("nginx"),
        "spec": {
            "controller": "k8s.io/ingress-nginx",
            "parameters": {"apiGroup": "k8s.example.com", "kind": "Params", "name": "p"},
        },
    }
    assert tables.cells_for("networking.k8s.io", "IngressClass", obj, NOW) == [
        "nginx",
        "k8s.io/ingress-nginx",
        "Params.k8s.example.com/p",
        "10m",
    ]


def test_ip_address_and_service_cidr_rows() -> None:
    address = {
        "metadata": meta("10.96.0.1"),
        "spec": {
            "parentRef": {
                "group": "",
                "resource": "services",
                "namespace": "default",
                "name": "kubernetes",
            }
        },
    }
    assert tables.cells_for("networking.k8s.io", "IPAddress", address, NOW) == [
        "10.96.0.1",
        "services/default/kubernetes",
    ]
    cidr = {"metadata": meta("kubernetes"), "spec": {"cidrs": ["10.96.0.0/12"]}}
    assert tables.cells_for("networking.k8s.io", "ServiceCIDR", cidr, NOW) == [
        "kubernetes",
        "10.96.0.0/12",
        "10m",
    ]


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ({}, "<none>"),
        ({"matchLabels": {"role": "db"}}, "role=db"),
        (
            {"matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["dev"]}]},
            "env notin (dev)",
        ),
        ({"matchExpressions": [{"key": "env", "operator": "Bogus"}]}, "<error>"),
    ],
)
def test_network_policy_pod_selector(selector: dict[str, Any], expected: str) -> None:
    obj = {"metadata": meta("np"), "spec": {"podSelector": selector}}
    assert tables.cells_for("networking.k8s.io", "NetworkPolicy", obj, NOW) == [
        "np",
        expected,
        "10m",
    ]


# --------------------------------------------------------------------------
# Cluster and config objects
# --------------------------------------------------------------------------


def test_ready_control_plane_node_row() -> None:
    obj = {
        "metadata": meta(
            "cp-1",
            age=86400 * 10,
            labels={"node-role.kubernetes.io/control-plane": "", "kubernetes.io/role": "master"},
        ),
        "spec": {"unschedulable": True},
        "status": {
            "conditions": [
                {"type": "MemoryPressure", "status": "False"},
                {"type": "Ready", "status": "True"},
            ],
            "addresses": [
                {"type": "Hostname", "address": "cp-1"},
                {"type": "InternalIP", "address": "192.168.1.10"},
            ],
            "nodeInfo": {
                "kubeletVersion": "v1.30.0",
                "osImage": "Ubuntu 22.04",
                "kernelVersion": "6.5.0",
                "containerRuntimeVersion": "containerd://1.7.0",
            },
        },
    }
    assert tables.cells_for("", "Node", obj, NOW) == [
        "cp-1",
        "Ready,SchedulingDisabled",
        "control-plane,master",
        "10d",
        "v1.30.0",
        "192.168.1.10",
        "<none>",
        "Ubuntu 22.04",
        "6.5.0",
        "containerd://1.7.0",
    ]


def test_node_without_conditions_is_unknown_and_roleless() -> None:
    cells = tables.cells_for("", "Node", {"metadata": meta("n")}, NOW)
    assert cells[1:3] == ["Unknown", "<none>"]
    assert cells[7:] == ["<unknown>", "<unknown>", "<unknown>"]


def test_not_ready_node() -> None:
    obj = {
        "metadata": meta("n"),
        "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]},
    }
    assert tables.cells_for("", "Node", obj, NOW)[1] == "NotReady"


def test_namespace_row() -> None:
    obj = {"metadata": meta("dev", age=86400 * 400), "status": {"phase": "Active"}}
    assert tables.cells_for("", "Namespace", obj, NOW) == ["dev", "Active", "400d"]


def test_secret_config_map_and_service_account_count_entries() -> None:
    secret = {"metadata": meta("s"), "type": "Opaque", "data": {"a": "eA==", "b": "eQ=="}}
    config = {"metadata": meta("c"), "data": {"a": "1"}, "binaryData": {"b": "AA=="}}
    account = {"metadata": meta("sa"), "secrets": [{"name": "t"}]}
    assert tables.cells_for("", "Secret", secret, NOW) == ["s", "Opaque", 2, "10m"]
    assert tables.cells_for("", "ConfigMap", config, NOW) == ["c", 2, "10m"]
    assert tables.cells_for("", "ServiceAccount", account, NOW) == ["sa", 1, "10m"]


def test_persistent_volume_row() -> None:
    obj = {
        "metadata": meta("pv-1"),
        "spec": {
            "capacity": {"storage": "10Gi"},
            "accessModes": ["ReadWriteMany", "ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "claimRef": {"namespace": "default", "name": "data"},
            "storageClassName": "standard",
            "volumeMode": "Filesystem",
        },
        "status": {"phase": "Bound"},
    }
    assert tables.cells_for("", "PersistentVolume", obj, NOW) == [
        "pv-1",
        "10Gi",
        "RWO,RWX",
        "Retain",
        "Bound",
        "default/data",
        "standard",
        "<unset>",
        "",
        "10m",
        "Filesystem",
    ]


def test_bound_claim_row_and_pending_claim_row() -> None:
    bound = {
        "metadata": meta("data"),
        "spec": {
            "volumeName": "pv-1",
            "storageClassName": "standard",
            "resources": {"requests": {"storage": "5Gi"}},
        },
        "status": {
            "phase": "Bound",
            "capacity": {"storage": "10Gi"},
            "accessModes": ["ReadWriteOnce"],
        },
    }
    assert tables.cells_for("", "PersistentVolumeClaim", bound, NOW) == [
        "data",
        "Bound",
        "pv-1",
        "10Gi",
        "RWO",
        "standard",
        "<unset>",
        "10m",
        "<unset>",
    ]
    pending = {
        "metadata": meta("p", annotations={"volume.beta.kubernetes.io/storage-class": "fast"}),
        "spec": {"storageClassName": "standard"},
        "status": {"phase": "Pending"},
    }
    assert tables.cells_for("", "PersistentVolumeClaim", pending, NOW)[1:6] == [
        "Pending",
        "",
        "",
        "",
        "fast",
    ]


def test_resource_quota_splits_requests_and_limits() -> None:
    obj = {
        "metadata": meta("quota"),
        "status": {
            "hard": {"requests.cpu": "2", "pods": "10", "limits.memory": "4Gi", "limits.cpu": "4"},
            "used": {"requests.cpu": "500m", "pods": "3", "limits.cpu": "1"},
        },
    }
    assert tables.cells_for("", "ResourceQuota", obj, NOW) == [
        "quota",
        "pods: 3/10, requests.cpu: 500m/2",
        "limits.cpu: 1/4, limits.memory: 0/4Gi",
        "10m",
    ]


def test_core_event_row() -> None:
    obj = {
        "metadata": meta("web.17a", age=700),
        "involvedObject": {"kind": "Pod", "name": "web", "fieldPath": "spec.containers{app}"},
        "reason": "BackOff",
        "message": "Back-off restarting failed container\n",
        "source": {"component": "kubelet", "host": "node-1"},
        "firstTimestamp": ago(600),
        "lastTimestamp": ago(30),
        "count": 7,
        "type": "Warning",
    }
    assert tables.cells_for("", "Event", obj, NOW) == [
        "30s",
        "Warning",
        "BackOff",
        "pod/web",
        "spec.containers{app}",
        "kubelet, node-1",
        "Back-off restarting failed container",
        "10m",
        7,
        "web.17a",
    ]


def test_new_style_core_event_uses_event_time_and_series() -> None:
    obj = {
        "metadata": meta("e"),
        "involvedObject": {"kind": "Node"},
        "reason": "Starting",
        "eventTime": "2024-06-01T11:55:00.123456Z",
        "reportingComponent": "kube-proxy",
        "series": {"count": 4, "lastObservedTime": "2024-06-01T11:59:00.000000Z"},
        "type": "Normal",
    }
    cells = tables.cells_for("", "Event", obj, NOW)
    assert cells[:4] == ["60s", "Normal", "Starting", "node"]
    assert cells[5] == "kube-proxy"
    assert cells[7:9] == ["4m59s", 4]


def test_singleton_event_counts_one() -> None:
    obj = {"metadata": meta("e"), "eventTime": ago(5)}
    cells = tables.cells_for("", "Event", obj, NOW)
    assert (cells[0], cells[7], cells[8]) == ("5s", "5s", 1)


def test_events_api_event_maps_to_core_cells() -> None:
    obj = {
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": meta("web.18b"),
        "regarding": {"kind": "Deployment", "name": "web"},
        "reason": "ScalingReplicaSet",
        "note": "Scaled up replica set web-5d8f to 3",
        "reportingController": "deployment-controller",
        "reportingInstance": "cp-1",
        "eventTime": ago(90),
        "type": "Normal",
    }
    assert tables.cells_for("events.k8s.io", "Event", obj, NOW) == [
        "90s",
        "Normal",
        "ScalingReplicaSet",
        "deployment/web",
        "",
        "deployment-controller, cp-1",
        "Scaled up replica set web-5d8f to 3",
        "90s",
        1,
        "web.18b",
    ]


def test_lease_row() -> None:
    obj = {"metadata": meta("kube-scheduler"), "spec": {"holderIdentity": "cp-1_abc"}}
    assert tables.cells_for("coordination.k8s.io", "Lease", obj, NOW) == [
        "kube-scheduler",
        "cp-1_abc",
        "10m",
    ]


def test_role_binding_row_lists_subjects_by_kind() -> None:
    obj = {
        "metadata": meta("edit"),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
        "subjects": [
            {"kind": "User", "name": "alice"},
            {"kind": "User", "name": "bob"},
            {"kind": "Group", "name": "devs"},
            {"kind": "ServiceAccount", "namespace": "ci", "name": "deployer"},
        ],
    }
    assert tables.cells_for("rbac.authorization.k8s.io", "RoleBinding", obj, NOW) == [
        "edit",
        "ClusterRole/edit",
        "10m",
        "alice, bob",
        "devs",
        "ci/deployer",
    ]


def test_default_storage_class_is_marked() -> None:
    obj = {
        "metadata": meta(
            "standard", annotations={"storageclass.kubernetes.io/is-default-class": "true"}
        ),
        "provisioner": "rancher.io/local-path",
        "volumeBindingMode": "WaitForFirstConsumer",
    }
    assert tables.cells_for("storage.k8s.io", "StorageClass", obj, NOW) == [
        "standard (default)",
        "rancher.io/local-path",
        "Delete",
        "WaitForFirstConsumer",
        False,
        "10m",
    ]


def test_certificate_signing_request_row() -> None:
    obj = {
        "metadata": meta("csr-1"),
        "spec": {
            "signerName": "kubernetes.io/kube-apiserver-client",
            "username": "alice",
            "expirationSeconds": 86400,
        },
        "status": {"conditions": [{"type": "Approved", "status": "True"}], "certificate": "LS0t"},
    }
    assert tables.cells_for("certificates.k8s.io", "CertificateSigningRequest", obj, NOW) == [
        "csr-1",
        "10m",
        "kubernetes.io/kube-apiserver-client",
        "alice",
        "24h",
        "Approved,Issued",
    ]


def test_priority_class_row() -> None:
    obj = {
        "metadata": meta("high"),
        "value": 1000,
        "globalDefault": False,
        "preemptionPolicy": "Never",
    }
    assert tables.cells_for("scheduling.k8s.io", "PriorityClass", obj, NOW) == [
        "high",
        1000,
        False,
        "10m",
        "Never",
    ]


# --------------------------------------------------------------------------
# Custom resources
# --------------------------------------------------------------------------

PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"},
    {"name": "Image", "type": "string", "jsonPath": ".spec.containers[0].image", "priority": 1},
    {"name": "Names", "type": "string", "jsonPath": ".spec.containers[*].name"},
    {
        "name": "Ready",
        "type": "string",
        "description": "Ready condition",
        "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
    },
    {"name": "Ratio", "type": "number", "jsonPath": ".status.ratio"},
    {"name": "Paused", "type": "boolean", "jsonPath": ".spec.paused"},
    {"name": "Missing", "type": "string", "jsonPath": ".status.nothing.here"},
    {"name": "Started", "type": "date", "format": "date-time", "jsonPath": ".status.startedAt"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]

WIDGET: dict[str, Any] = {
    "apiVersion": "example.com/v1",
    "kind": "Widget",
    "metadata": meta("w1", age=3600 * 5),
    "spec": {
        "replicas": 3,
        "paused": False,
        "containers": [{"name": "main", "image": "busybox:1"}, {"name": "aux", "image": "alpine"}],
    },
    "status": {
        "ratio": 1,
        "startedAt": ago(150),
        "conditions": [
            {"type": "Synced", "status": "True"},
            {"type": "Ready", "status": "False"},
        ],
    },
}


def test_custom_columns_start_with_name_and_keep_crd_metadata() -> None:
    columns = tables.custom_columns(PRINTER_COLUMNS)
    assert names(columns) == [
        "Name",
        "Replicas",
        "Image",
        "Names",
        "Ready",
        "Ratio",
        "Paused",
        "Missing",
        "Started",
        "Age",
    ]
    assert columns[0].format == "name"
    assert columns[2].priority == 1
    assert columns[4].description == "Ready condition"
    assert columns[1].description == (
        "Custom resource definition column (in JSONPath format): .spec.replicas"
    )
    assert (columns[8].type, columns[8].format) == ("date", "date-time")


def test_custom_cells_evaluate_json_paths() -> None:
    assert tables.custom_cells(PRINTER_COLUMNS, WIDGET, NOW) == [
        "w1",
        3,
        "busybox:1",
        "main",
        "False",
        1.0,
        False,
        None,
        "2m30s",
        "5h",
    ]


def test_crd_without_printer_columns_gets_age() -> None:
    columns = tables.custom_columns([])
    assert [(c.name, c.type) for c in columns] == [("Name", "string"), ("Age", "date")]
    assert tables.custom_cells([], WIDGET, NOW) == ["w1", "5h"]


@pytest.mark.parametrize(
    ("column", "expected"),
    [
        ({"type": "integer", "jsonPath": ".spec.paused"}, None),
        ({"type": "integer", "jsonPath": ".status.ratio"}, 1),
        ({"type": "boolean", "jsonPath": ".spec.replicas"}, None),
        ({"type": "string", "jsonPath": ".spec.replicas"}, "3"),
        ({"type": "string", "jsonPath": ".spec.paused"}, "false"),
        ({"type": "string", "jsonPath": ".spec.containers[1]"}, '{"image":"alpine","name":"aux"}'),
        ({"type": "string", "jsonPath": ".spec.containers[-1].name"}, "aux"),
        ({"type": "string", "jsonPath": ".spec.containers[5].name"}, None),
        ({"type": "string", "jsonPath": ".spec['replicas']"}, "3"),
        ({"type": "string", "jsonPath": ".metadata.labels.app\\.kubernetes\\.io/name"}, "widget"),
        ({"type": "date", "jsonPath": ".spec.containers[0].name"}, "<invalid>"),
        ({"type": "string", "jsonPath": ".spec.(broken"}, None),
        ({"type": "string", "jsonPath": ".status.conditions[?(@.type!='Synced')].type"}, "Ready"),
    ],
)
def test_custom_cell_typing_follows_the_crd_convertor(
    column: dict[str, Any], expected: Any
) -> None:
    obj = WIDGET | {
        "metadata": WIDGET["metadata"] | {"labels": {"app.kubernetes.io/name": "widget"}}
    }
    cells = tables.custom_cells([{"name": "X", **column}], obj, NOW)
    assert cells == ["w1", expected]


def test_string_cells_print_floats_like_go() -> None:
    obj = {"metadata": {"name": "f"}, "spec": {"a": 1.5, "b": 1e6, "c": 0.00001}}
    columns = [{"name": k, "type": "string", "jsonPath": f".spec.{k}"} for k in "abc"]
    assert tables.custom_cells(columns, obj, NOW) == ["f", "1.5", "1e+06", "1e-05"]


# --------------------------------------------------------------------------
# The Table
# --------------------------------------------------------------------------


def test_table_embeds_partial_object_metadata_by_default() -> None:
    obj = pod(statuses=[running()])
    columns = tables.columns_for("", "Pod")
    result = tables.table(columns, [(pod_cells(obj), obj)], "42")
    assert result["kind"] == "Table"
    assert result["apiVersion"] == "meta.k8s.io/v1"
    assert result["metadata"] == {"resourceVersion": "42"}
    assert result["columnDefinitions"] == [c.to_dict() for c in columns]
    assert result["rows"] == [
        {
            "cells": pod_cells(obj),
            "object": {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": obj["metadata"],
            },
        }
    ]


def test_table_can_embed_whole_objects_or_none() -> None:
    obj = {"metadata": meta("c")}
    rows = [(["c", "10m"], obj)]
    columns = tables.columns_for("", "ConfigMap")
    assert tables.table(columns, rows, "1", include_object="Object")["rows"][0]["object"] is obj
    assert "object" not in tables.table(columns, rows, "1", include_object="None")["rows"][0]


def test_table_carries_paging_metadata() -> None:
    result = tables.table([], [], "7", continue_token="abc", remaining=12)
    assert result["metadata"] == {
        "resourceVersion": "7",
        "continue": "abc",
        "remainingItemCount": 12,
    }
    assert result["rows"] == []


def test_finished_pod_rows_carry_completed_condition() -> None:
    done = pod(phase="Succeeded", statuses=[terminated(exitCode=0, reason="Completed")])
    failed = pod(phase="Failed", statuses=[terminated(exitCode=1, reason="Error")])
    result = tables.table([], [(pod_cells(done), done), (pod_cells(failed), failed)], "1")
    assert [row["conditions"] for row in result["rows"]] == [
        [
            {
                "type": "Completed",
                "status": "True",
                "reason": "Succeeded",
                "message": "The pod has completed successfully.",
            }
        ],
        [{"type": "Completed", "status": "True", "reason": "Failed", "message": "The pod failed."}],
    ]
