"""Admission refuses what a serverless pod may not do, naming every offending field."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from nodeless.api import errors
from nodeless.serverless import admission, catalogue

CATALOGUE = catalogue.Catalogue.load()
ZONES = ("zone-a", "zone-b")


def container(name: str = "app", **fields: Any) -> dict[str, Any]:
    return {"name": name, "image": "busybox", **fields}


def pod_spec(**fields: Any) -> dict[str, Any]:
    return {"containers": [container()], **fields}


def pod(spec: dict[str, Any], annotations: dict[str, str] | None = None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": "web"}
    if annotations:
        metadata["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


def privileged(**more: Any) -> dict[str, Any]:
    return container(securityContext={"privileged": True}, **more)


def adding(*capabilities: str) -> dict[str, Any]:
    return container(securityContext={"capabilities": {"add": list(capabilities)}})


def fields(causes: list[errors.Cause]) -> list[str]:
    return [cause.field for cause in causes]


FORBIDDEN_ROWS = [
    # (id, pod spec, offending fields)
    ("clean pod", pod_spec(), []),
    (
        "privileged container",
        pod_spec(containers=[container(), privileged()]),
        ["spec.containers[1].securityContext.privileged"],
    ),
    (
        "privileged false is fine",
        pod_spec(containers=[container(securityContext={"privileged": False})]),
        [],
    ),
    ("hostNetwork", pod_spec(hostNetwork=True), ["spec.hostNetwork"]),
    ("hostPID", pod_spec(hostPID=True), ["spec.hostPID"]),
    ("hostIPC", pod_spec(hostIPC=True), ["spec.hostIPC"]),
    ("host namespaces off are fine", pod_spec(hostNetwork=False, hostPID=False, hostIPC=False), []),
    (
        "hostPort",
        pod_spec(
            containers=[
                container(ports=[{"containerPort": 80}, {"containerPort": 443, "hostPort": 443}])
            ]
        ),
        ["spec.containers[0].ports[1].hostPort"],
    ),
    (
        "hostPath volume",
        pod_spec(volumes=[{"name": "a", "emptyDir": {}}, {"name": "b", "hostPath": {"path": "/"}}]),
        ["spec.volumes[1].hostPath"],
    ),
    (
        "default capabilities may be added, with or without CAP_, in any case",
        pod_spec(containers=[adding("NET_BIND_SERVICE", "CAP_CHOWN", "kill", "cap_net_raw")]),
        [],
    ),
    (
        "capabilities beyond the default set",
        pod_spec(containers=[adding("CHOWN", "SYS_ADMIN", "CAP_NET_ADMIN")]),
        [
            "spec.containers[0].securityContext.capabilities.add[1]",
            "spec.containers[0].securityContext.capabilities.add[2]",
        ],
    ),
    (
        "ALL capabilities",
        pod_spec(containers=[adding("ALL")]),
        ["spec.containers[0].securityContext.capabilities.add[0]"],
    ),
    (
        "dropping capabilities is fine",
        pod_spec(containers=[container(securityContext={"capabilities": {"drop": ["ALL"]}})]),
        [],
    ),
    (
        "init containers are checked",
        pod_spec(initContainers=[privileged(name="setup")]),
        ["spec.initContainers[0].securityContext.privileged"],
    ),
    (
        "ephemeral containers are checked",
        pod_spec(ephemeralContainers=[adding("SYS_PTRACE")]),
        ["spec.ephemeralContainers[0].securityContext.capabilities.add[0]"],
    ),
    (
        "20 containers counting init containers is fine",
        pod_spec(
            containers=[container(f"c{i}") for i in range(15)],
            initContainers=[container(f"i{i}") for i in range(5)],
        ),
        [],
    ),
    (
        "21 containers counting init containers",
        pod_spec(
            containers=[container(f"c{i}") for i in range(15)],
            initContainers=[container(f"i{i}") for i in range(6)],
        ),
        ["spec.containers"],
    ),
    (
        "20 volumes is fine",
        pod_spec(volumes=[{"name": f"v{i}", "emptyDir": {}} for i in range(20)]),
        [],
    ),
    (
        "21 volumes",
        pod_spec(volumes=[{"name": f"v{i}", "emptyDir": {}} for i in range(21)]),
        ["spec.volumes"],
    ),
    (
        "over 64 vCPU",
        pod_spec(
            containers=[
                container(resources={"limits": {"cpu": "64"}}),
                container("b", resources={"requests": {"cpu": "1"}}),
            ]
        ),
        ["spec.containers[0].resources.limits.cpu"],
    ),
]


@pytest.mark.parametrize(
    ("spec", "offending"),
    [row[1:] for row in FORBIDDEN_ROWS],
    ids=[row[0] for row in FORBIDDEN_ROWS],
)
def test_forbidden_feature_is_named_by_its_field(
    spec: dict[str, Any], offending: list[str]
) -> None:
    assert fields(admission.forbidden_pod_features(spec)) == offending


@pytest.mark.parametrize(
    ("spec", "offending"),
    [row[1:] for row in FORBIDDEN_ROWS],
    ids=[row[0] for row in FORBIDDEN_ROWS],
)
def test_pod_with_a_forbidden_feature_is_invalid(
    spec: dict[str, Any], offending: list[str]
) -> None:
    if not offending:
        admission.admit("", "Pod", pod(spec), CATALOGUE, ZONES)
        return
    with pytest.raises(errors.StatusError) as caught:
        admission.admit("", "Pod", pod(spec), CATALOGUE, ZONES)
    status = caught.value
    assert (status.code, status.reason, status.kind, status.name) == (422, "Invalid", "Pod", "web")
    assert fields(status.causes) == offending


def test_messages_name_the_container_and_say_what_to_do() -> None:
    spec = pod_spec(
        containers=[
            privileged(name="web", ports=[{"containerPort": 80, "hostPort": 8080}]),
            adding("SYS_ADMIN"),
        ],
        volumes=[{"name": "logs", "hostPath": {"path": "/var/log"}}],
    )
    messages = [cause.message for cause in admission.forbidden_pod_features(spec)]
    assert messages[0].startswith('Forbidden: container "web" is privileged')
    assert "remove securityContext.privileged" in messages[0]
    assert 'container "app" adds capability "SYS_ADMIN"' in messages[2]
    assert "uses hostPort 8080" in messages[1] and "Service" in messages[1]
    assert 'volume "logs" is a hostPath volume' in messages[3] and "emptyDir" in messages[3]


def test_every_offending_field_appears_in_one_status() -> None:
    spec = pod_spec(
        hostNetwork=True,
        hostPID=True,
        hostIPC=True,
        containers=[
            privileged(
                ports=[{"containerPort": 80, "hostPort": 80}],
                resources={"limits": {"cpu": "65"}},
            ),
            adding("SYS_ADMIN"),
        ],
        initContainers=[privileged(name="init")],
        volumes=[{"name": "h", "hostPath": {"path": "/"}}],
    )
    bad_annotations = {
        "k8s.aliyun.com/eci-use-specs": "3-5Gi",
        "nodeless.dev/spot-price-limit": "0.5",
        "nodeless.dev/zones": "mars-1",
    }
    with pytest.raises(errors.StatusError) as caught:
        admission.admit("", "Pod", pod(spec, bad_annotations), CATALOGUE, ZONES)
    status = caught.value
    assert status.code == 422
    expected = [
        "spec.hostNetwork",
        "spec.hostPID",
        "spec.hostIPC",
        "spec.initContainers[0].securityContext.privileged",
        "spec.containers[0].securityContext.privileged",
        "spec.containers[0].ports[0].hostPort",
        "spec.containers[1].securityContext.capabilities.add[0]",
        "spec.volumes[0].hostPath",
        "spec.containers[0].resources.limits.cpu",
        "metadata.annotations[k8s.aliyun.com/eci-use-specs]",
        "metadata.annotations[nodeless.dev/spot-price-limit]",
        "metadata.annotations[nodeless.dev/zones]",
    ]
    # Each field once, even where sizing and the feature check both see it.
    assert fields(status.causes) == expected
    body = status.to_status()
    assert [c["field"] for c in body["details"]["causes"]] == expected
    for field in expected:
        assert field in status.message


def test_pod_that_merely_rounds_up_is_admitted() -> None:
    spec = pod_spec(containers=[container(resources={"requests": {"cpu": "7", "memory": "13Gi"}})])
    admission.admit("", "Pod", pod(spec), CATALOGUE, ZONES)


def test_impossible_size_is_invalid_at_admission() -> None:
    spec = pod_spec(containers=[container(resources={"limits": {"memory": "1Ti"}})])
    with pytest.raises(errors.StatusError) as caught:
        admission.admit("", "Pod", pod(spec), CATALOGUE, ZONES)
    assert fields(caught.value.causes) == ["spec.containers[0].resources.limits.memory"]


BAD_TEMPLATE = {
    "metadata": {"labels": {"app": "web"}, "annotations": {"nodeless.dev/spot-strategy": "Cheap"}},
    "spec": {"containers": [privileged()], "volumes": [{"name": "h", "hostPath": {"path": "/"}}]},
}


def workload(kind: str, api_version: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": api_version, "kind": kind, "metadata": {"name": "web"}, "spec": spec}


WORKLOAD_ROWS = [
    # (group, kind, object, template path)
    (
        "apps",
        "Deployment",
        workload("Deployment", "apps/v1", {"template": BAD_TEMPLATE}),
        "spec.template",
    ),
    (
        "apps",
        "ReplicaSet",
        workload("ReplicaSet", "apps/v1", {"template": BAD_TEMPLATE}),
        "spec.template",
    ),
    (
        "apps",
        "StatefulSet",
        workload("StatefulSet", "apps/v1", {"template": BAD_TEMPLATE}),
        "spec.template",
    ),
    ("batch", "Job", workload("Job", "batch/v1", {"template": BAD_TEMPLATE}), "spec.template"),
    (
        "batch",
        "CronJob",
        workload(
            "CronJob",
            "batch/v1",
            {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": BAD_TEMPLATE}}},
        ),
        "spec.jobTemplate.spec.template",
    ),
    (
        "",
        "ReplicationController",
        workload("ReplicationController", "v1", {"template": BAD_TEMPLATE}),
        "spec.template",
    ),
    (
        "",
        "PodTemplate",
        {
            "apiVersion": "v1",
            "kind": "PodTemplate",
            "metadata": {"name": "web"},
            "template": BAD_TEMPLATE,
        },
        "template",
    ),
]


@pytest.mark.parametrize(
    ("group", "kind", "obj", "template"),
    WORKLOAD_ROWS,
    ids=[row[1] for row in WORKLOAD_ROWS],
)
def test_workload_is_checked_through_its_pod_template(
    group: str, kind: str, obj: dict[str, Any], template: str
) -> None:
    with pytest.raises(errors.StatusError) as caught:
        admission.admit(group, kind, obj, CATALOGUE, ZONES)
    status = caught.value
    assert (status.code, status.reason, status.kind, status.group, status.name) == (
        422,
        "Invalid",
        kind,
        group,
        "web",
    )
    assert fields(status.causes) == [
        f"{template}.spec.containers[0].securityContext.privileged",
        f"{template}.spec.volumes[0].hostPath",
        f"{template}.metadata.annotations[nodeless.dev/spot-strategy]",
    ]
    qualified = f"{kind}.{group}" if group else kind
    assert status.message.startswith(f'{qualified} "web" is invalid: ')


@pytest.mark.parametrize(
    ("group", "kind", "obj", "template"), WORKLOAD_ROWS, ids=[row[1] for row in WORKLOAD_ROWS]
)
def test_workload_with_a_clean_template_is_admitted(
    group: str, kind: str, obj: dict[str, Any], template: str
) -> None:
    clean = copy.deepcopy(obj)
    keys = template.split(".")
    parent = clean
    for key in keys[:-1]:
        parent = parent[key]
    parent[keys[-1]] = {"metadata": {"labels": {"app": "web"}}, "spec": pod_spec()}
    admission.admit(group, kind, clean, CATALOGUE, ZONES)


def test_daemonset_is_forbidden() -> None:
    daemonset = workload("DaemonSet", "apps/v1", {"template": {"spec": pod_spec()}})
    with pytest.raises(errors.StatusError) as caught:
        admission.admit("apps", "DaemonSet", daemonset, CATALOGUE, ZONES)
    status = caught.value
    assert (status.code, status.reason, status.kind, status.group, status.name) == (
        403,
        "Forbidden",
        "daemonsets",
        "apps",
        "web",
    )
    assert status.message.startswith(
        'daemonsets.apps "web" is forbidden: DaemonSets are not supported: '
        "Nodeless has no nodes to run them on"
    )


def test_nodeport_service_is_invalid_naming_spec_type() -> None:
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"type": "NodePort"},
    }
    with pytest.raises(errors.StatusError) as caught:
        admission.admit("", "Service", service, CATALOGUE, ZONES)
    status = caught.value
    assert (status.code, status.reason, status.kind, status.name) == (
        422,
        "Invalid",
        "Service",
        "web",
    )
    assert fields(status.causes) == ["spec.type"]
    assert status.causes[0].reason == "FieldValueNotSupported"
    assert "LoadBalancer" in status.causes[0].message


@pytest.mark.parametrize(
    ("group", "kind", "obj"),
    [
        ("", "Service", {"metadata": {"name": "s"}, "spec": {"type": "LoadBalancer"}}),
        ("", "Service", {"metadata": {"name": "s"}, "spec": {"type": "ClusterIP"}}),
        ("", "Service", {"metadata": {"name": "s"}, "spec": {}}),
        ("", "ConfigMap", {"metadata": {"name": "c"}, "data": {"hostNetwork": "true"}}),
        ("apps", "Deployment", {"metadata": {"name": "d"}, "spec": {}}),
        ("core", "Pod", pod(pod_spec())),
    ],
)
def test_objects_a_serverless_cluster_can_serve_are_admitted(
    group: str, kind: str, obj: dict[str, Any]
) -> None:
    admission.admit(group, kind, obj, CATALOGUE, ZONES)
