"""The official `kubernetes` Python client against a real `nodeless up`."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

pytestmark = pytest.mark.integration

CRD_GROUP = "pyclient.example.com"
CRD_PLURAL = "gadgets"


@pytest.fixture(scope="module")
def api(cluster: Any) -> client.ApiClient:
    config.load_kube_config(config_file=str(cluster.kubeconfig))
    return client.ApiClient()


@pytest.fixture(scope="module")
def v1(api: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api)


@pytest.fixture(scope="module")
def apps(api: client.ApiClient) -> client.AppsV1Api:
    return client.AppsV1Api(api)


@pytest.fixture(scope="module")
def custom(api: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api)


# Every namespace holds the cluster CA's ConfigMap from the start, as upstream's.
PUBLISHED = "kube-root-ca.crt"


def own(items: list[Any]) -> list[str]:
    """The names of the listed objects a test made (not the published CA)."""
    return [item.metadata.name for item in items if item.metadata.name != PUBLISHED]


def store_revision(v1: client.CoreV1Api) -> str:
    rv: str = v1.list_namespace(limit=1).metadata.resource_version
    return rv


def api_error(call: Callable[[], Any]) -> ApiException:
    with pytest.raises(ApiException) as info:
        call()
    return info.value


def status_body(err: ApiException) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(err.body)
    assert body["kind"] == "Status"
    return body


def wait_until(predicate: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def is_gone(read: Callable[[], Any]) -> bool:
    try:
        read()
    except ApiException as err:
        if err.status == 404:
            return True
        raise
    return False


def configmap(name: str, labels: dict[str, str] | None = None, **data: str) -> client.V1ConfigMap:
    return client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name=name, labels=labels), data=data or None
    )


def deployment(name: str, replicas: int = 2) -> client.V1Deployment:
    labels = {"app": name}
    return client.V1Deployment(
        metadata=client.V1ObjectMeta(name=name, labels=labels),
        spec=client.V1DeploymentSpec(
            replicas=replicas,
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(
                    containers=[client.V1Container(name="web", image="nginx:1.25")]
                ),
            ),
        ),
    )


# --- ConfigMaps -----------------------------------------------------------------------


def test_configmap_crud(v1: client.CoreV1Api, namespace: str) -> None:
    created = v1.create_namespaced_config_map(namespace, configmap("cfg", a="1"))
    assert created.metadata.name == "cfg"
    assert created.metadata.namespace == namespace
    assert created.metadata.uid
    assert created.metadata.resource_version
    assert created.metadata.creation_timestamp is not None

    read = v1.read_namespaced_config_map("cfg", namespace)
    assert read.data == {"a": "1"}
    assert read.metadata.uid == created.metadata.uid

    listed = v1.list_namespaced_config_map(namespace)
    assert own(listed.items) == ["cfg"]
    assert listed.metadata.resource_version

    patched = v1.patch_namespaced_config_map("cfg", namespace, {"data": {"b": "2"}})
    assert patched.data == {"a": "1", "b": "2"}
    assert int(patched.metadata.resource_version) > int(created.metadata.resource_version)

    json_patched = v1.patch_namespaced_config_map(
        "cfg", namespace, [{"op": "remove", "path": "/data/a"}]
    )
    assert json_patched.data == {"b": "2"}

    read = v1.read_namespaced_config_map("cfg", namespace)
    read.data = {"c": "3"}
    replaced = v1.replace_namespaced_config_map("cfg", namespace, read)
    assert replaced.data == {"c": "3"}
    assert replaced.metadata.uid == created.metadata.uid

    deleted = v1.delete_namespaced_config_map("cfg", namespace)
    assert deleted["kind"] == "Status"
    assert deleted["status"] == "Success"
    assert deleted["details"]["name"] == "cfg"
    assert is_gone(lambda: v1.read_namespaced_config_map("cfg", namespace))
    assert own(v1.list_namespaced_config_map(namespace).items) == []


def test_configmap_generate_name(v1: client.CoreV1Api, namespace: str) -> None:
    body = client.V1ConfigMap(metadata=client.V1ObjectMeta(generate_name="gen-"))
    first = v1.create_namespaced_config_map(namespace, body)
    second = v1.create_namespaced_config_map(namespace, body)
    assert first.metadata.name.startswith("gen-")
    assert len(first.metadata.name) == len("gen-") + 5
    assert first.metadata.name != second.metadata.name


# --- Pods -----------------------------------------------------------------------------


def test_pod_defaults(v1: client.CoreV1Api, namespace: str) -> None:
    pod = client.V1Pod(
        metadata=client.V1ObjectMeta(name="plain"),
        spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="nginx:1.25")]),
    )
    created = v1.create_namespaced_pod(namespace, pod)
    spec = created.spec
    assert spec.restart_policy == "Always"
    assert spec.dns_policy == "ClusterFirst"
    assert spec.termination_grace_period_seconds == 30
    assert spec.scheduler_name == "default-scheduler"
    assert spec.service_account_name == "default"
    assert spec.enable_service_links is True
    assert spec.containers[0].image_pull_policy == "IfNotPresent"
    assert spec.containers[0].termination_message_path == "/dev/termination-log"
    assert spec.containers[0].termination_message_policy == "File"
    assert created.status.phase == "Pending"
    assert created.status.qos_class == "BestEffort"
    assert spec.node_name is None

    read = v1.read_namespaced_pod("plain", namespace)
    assert read.status.phase == "Pending"
    assert read.status.qos_class == "BestEffort"


def test_pod_qos_classes_and_pull_policy(v1: client.CoreV1Api, namespace: str) -> None:
    def make(
        name: str, image: str, resources: client.V1ResourceRequirements | None
    ) -> client.V1Pod:
        container = client.V1Container(name="c", image=image, resources=resources)
        pod = client.V1Pod(
            metadata=client.V1ObjectMeta(name=name), spec=client.V1PodSpec(containers=[container])
        )
        return v1.create_namespaced_pod(namespace, pod)

    guaranteed = make(
        "guaranteed",
        "nginx",
        client.V1ResourceRequirements(limits={"cpu": "100m", "memory": "64Mi"}),
    )
    assert guaranteed.status.qos_class == "Guaranteed"
    # Limits alone default the requests to the same values.
    assert guaranteed.spec.containers[0].resources.requests == {"cpu": "100m", "memory": "64Mi"}
    assert guaranteed.spec.containers[0].image_pull_policy == "Always"

    burstable = make(
        "burstable", "nginx:latest", client.V1ResourceRequirements(requests={"cpu": "100m"})
    )
    assert burstable.status.qos_class == "Burstable"
    assert burstable.spec.containers[0].image_pull_policy == "Always"


def test_pod_patch_replace_delete(v1: client.CoreV1Api, namespace: str) -> None:
    pod = client.V1Pod(
        metadata=client.V1ObjectMeta(name="p", labels={"a": "1"}),
        spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="nginx:1.25")]),
    )
    v1.create_namespaced_pod(namespace, pod)
    patched = v1.patch_namespaced_pod("p", namespace, {"metadata": {"labels": {"b": "2"}}})
    assert patched.metadata.labels == {"a": "1", "b": "2"}

    current = v1.read_namespaced_pod("p", namespace)
    current.spec.containers[0].image = "nginx:1.27"
    replaced = v1.replace_namespaced_pod("p", namespace, current)
    assert replaced.spec.containers[0].image == "nginx:1.27"

    labelled = v1.list_namespaced_pod(namespace, label_selector="b=2")
    assert [p.metadata.name for p in labelled.items] == ["p"]
    by_phase = v1.list_namespaced_pod(namespace, field_selector="status.phase=Pending")
    assert [p.metadata.name for p in by_phase.items] == ["p"]

    # An unscheduled pod is deleted at once (no kubelet to wait for).
    v1.delete_namespaced_pod("p", namespace)
    assert is_gone(lambda: v1.read_namespaced_pod("p", namespace))


# --- Deployments ---------------------------------------------------------------------


def test_deployment_and_scale(apps: client.AppsV1Api, namespace: str) -> None:
    created = apps.create_namespaced_deployment(namespace, deployment("web"))
    assert created.metadata.generation == 1
    assert created.spec.strategy.type == "RollingUpdate"
    assert created.spec.revision_history_limit == 10
    assert created.spec.progress_deadline_seconds == 600

    scale = apps.read_namespaced_deployment_scale("web", namespace)
    assert scale.kind == "Scale"
    assert scale.api_version == "autoscaling/v1"
    assert scale.metadata.name == "web"
    assert scale.spec.replicas == 2
    assert scale.status.selector == "app=web"

    patched = apps.patch_namespaced_deployment_scale("web", namespace, {"spec": {"replicas": 4}})
    assert patched.spec.replicas == 4
    live = apps.read_namespaced_deployment("web", namespace)
    assert live.spec.replicas == 4
    assert live.metadata.generation == 2

    scale = apps.read_namespaced_deployment_scale("web", namespace)
    scale.spec.replicas = 1
    replaced = apps.replace_namespaced_deployment_scale("web", namespace, scale)
    assert replaced.spec.replicas == 1
    assert apps.read_namespaced_deployment("web", namespace).spec.replicas == 1

    live = apps.read_namespaced_deployment("web", namespace)
    live.spec.template.spec.containers[0].image = "nginx:1.27"
    replaced_deploy = apps.replace_namespaced_deployment("web", namespace, live)
    assert replaced_deploy.metadata.generation == live.metadata.generation + 1

    negative = api_error(
        lambda: apps.patch_namespaced_deployment_scale("web", namespace, {"spec": {"replicas": -1}})
    )
    assert negative.status == 422


def test_deployment_status_is_ignored_on_main_resource(
    apps: client.AppsV1Api, namespace: str
) -> None:
    apps.create_namespaced_deployment(namespace, deployment("web"))
    patched = apps.patch_namespaced_deployment(
        "web", namespace, {"status": {"replicas": 9}, "metadata": {"labels": {"x": "y"}}}
    )
    assert patched.metadata.labels["x"] == "y"
    assert (patched.status.replicas or 0) == 0
    assert patched.metadata.generation == 1


# --- lists -------------------------------------------------------------------------------


def test_list_label_selector_and_paging(v1: client.CoreV1Api, namespace: str) -> None:
    for i in range(5):
        v1.create_namespaced_config_map(namespace, configmap(f"page-{i}", {"kind": "paged"}))
    for i in range(2):
        v1.create_namespaced_config_map(namespace, configmap(f"other-{i}", {"kind": "other"}))

    selected = v1.list_namespaced_config_map(namespace, label_selector="kind=paged")
    assert sorted(cm.metadata.name for cm in selected.items) == [f"page-{i}" for i in range(5)]
    assert own(v1.list_namespaced_config_map(namespace, label_selector="kind!=paged").items) == [
        "other-0",
        "other-1",
    ]
    assert v1.list_namespaced_config_map(namespace, label_selector="kind in (nope)").items == []

    seen: list[str] = []
    token = None
    pages = 0
    revisions = set()
    while True:
        page = v1.list_namespaced_config_map(
            namespace, label_selector="kind=paged", limit=2, _continue=token
        )
        pages += 1
        assert len(page.items) <= 2
        seen += [cm.metadata.name for cm in page.items]
        revisions.add(page.metadata.resource_version)
        token = page.metadata._continue
        if not token:
            break
    assert pages == 3
    assert seen == [f"page-{i}" for i in range(5)]
    assert len(revisions) == 1, "every page is read at the first page's revision"

    first = v1.list_namespaced_config_map(namespace, limit=3)
    assert len(first.items) == 3
    assert first.metadata._continue
    assert first.metadata.remaining_item_count == 5  # 7 made + the published CA - 3


def test_list_continue_sees_a_snapshot(v1: client.CoreV1Api, namespace: str) -> None:
    for i in range(4):
        v1.create_namespaced_config_map(namespace, configmap(f"snap-{i}"))
    first = v1.list_namespaced_config_map(namespace, limit=2)
    v1.create_namespaced_config_map(namespace, configmap("snap-9"))
    rest = v1.list_namespaced_config_map(namespace, limit=10, _continue=first.metadata._continue)
    # Names sort "kube-root-ca.crt" (published in every namespace) first.
    assert [cm.metadata.name for cm in first.items] == [PUBLISHED, "snap-0"]
    assert [cm.metadata.name for cm in rest.items] == ["snap-1", "snap-2", "snap-3"]
    assert rest.metadata.resource_version == first.metadata.resource_version


# --- watch ---------------------------------------------------------------------------------


def test_watch_added_modified_deleted_in_order(v1: client.CoreV1Api, namespace: str) -> None:
    start = v1.list_namespaced_config_map(namespace).metadata.resource_version
    v1.create_namespaced_config_map(namespace, configmap("watched", a="1"))
    v1.patch_namespaced_config_map("watched", namespace, {"data": {"a": "2"}})
    v1.delete_namespaced_config_map("watched", namespace)

    w = watch.Watch()
    events = []
    for event in w.stream(
        v1.list_namespaced_config_map, namespace, resource_version=start, timeout_seconds=5
    ):
        events.append(event)
        if len(events) == 3:
            w.stop()
    assert [e["type"] for e in events] == ["ADDED", "MODIFIED", "DELETED"]
    assert all(e["object"].metadata.name == "watched" for e in events)
    assert [e["object"].data for e in events[:2]] == [{"a": "1"}, {"a": "2"}]
    revisions = [int(e["object"].metadata.resource_version) for e in events]
    assert revisions == sorted(revisions)
    assert revisions[0] > int(start)


def test_watch_live_events(v1: client.CoreV1Api, namespace: str) -> None:
    start = v1.list_namespaced_config_map(namespace).metadata.resource_version
    received: list[tuple[str, str]] = []
    w = watch.Watch()

    def consume() -> None:
        for event in w.stream(
            v1.list_namespaced_config_map,
            namespace,
            resource_version=start,
            label_selector="live=yes",
            timeout_seconds=10,
        ):
            received.append((event["type"], event["object"].metadata.name))
            if len(received) == 2:
                w.stop()

    thread = threading.Thread(target=consume)
    thread.start()
    time.sleep(0.5)
    v1.create_namespaced_config_map(namespace, configmap("ignored", {"live": "no"}))
    v1.create_namespaced_config_map(namespace, configmap("live-1", {"live": "yes"}))
    # Relabelling out of the selector is a DELETED for this watcher.
    v1.patch_namespaced_config_map("live-1", namespace, {"metadata": {"labels": {"live": "no"}}})
    thread.join(timeout=15)
    assert not thread.is_alive()
    assert received == [("ADDED", "live-1"), ("DELETED", "live-1")]


def test_watch_too_old_resource_version(v1: client.CoreV1Api, namespace: str) -> None:
    def consume() -> None:
        for _ in watch.Watch().stream(
            v1.list_namespaced_config_map, namespace, resource_version="1", timeout_seconds=5
        ):
            pass

    err = api_error(consume)
    assert err.status == 410


# --- delete options, dry run, concurrency ---------------------------------------------------


def test_delete_foreground(apps: client.AppsV1Api, namespace: str) -> None:
    apps.create_namespaced_deployment(namespace, deployment("web"))
    apps.delete_namespaced_deployment(
        "web", namespace, body=client.V1DeleteOptions(propagation_policy="Foreground")
    )
    wait_until(lambda: is_gone(lambda: apps.read_namespaced_deployment("web", namespace)))


def test_delete_foreground_waits_for_blocking_dependents(
    v1: client.CoreV1Api, namespace: str
) -> None:
    owner = v1.create_namespaced_config_map(namespace, configmap("owner"))
    dependent = configmap("dependent")
    dependent.metadata.owner_references = [
        client.V1OwnerReference(
            api_version="v1",
            kind="ConfigMap",
            name="owner",
            uid=owner.metadata.uid,
            block_owner_deletion=True,
        )
    ]
    v1.create_namespaced_config_map(namespace, dependent)

    v1.delete_namespaced_config_map(
        "owner", namespace, body=client.V1DeleteOptions(propagation_policy="Foreground")
    )
    pending = v1.read_namespaced_config_map("owner", namespace)
    assert pending.metadata.deletion_timestamp is not None
    assert "foregroundDeletion" in (pending.metadata.finalizers or [])

    # Writes other than removing finalizers are still allowed; clearing them
    # completes the deletion.
    v1.patch_namespaced_config_map("owner", namespace, {"metadata": {"finalizers": None}})
    assert is_gone(lambda: v1.read_namespaced_config_map("owner", namespace))


def test_delete_orphan_with_dependents(v1: client.CoreV1Api, namespace: str) -> None:
    owner = v1.create_namespaced_config_map(namespace, configmap("owner"))
    dependent = configmap("dependent")
    dependent.metadata.owner_references = [
        client.V1OwnerReference(
            api_version="v1", kind="ConfigMap", name="owner", uid=owner.metadata.uid
        )
    ]
    v1.create_namespaced_config_map(namespace, dependent)
    v1.delete_namespaced_config_map(
        "owner", namespace, body=client.V1DeleteOptions(propagation_policy="Orphan")
    )
    pending = v1.read_namespaced_config_map("owner", namespace)
    assert "orphan" in (pending.metadata.finalizers or [])
    v1.patch_namespaced_config_map("owner", namespace, {"metadata": {"finalizers": None}})
    assert is_gone(lambda: v1.read_namespaced_config_map("owner", namespace))
    assert v1.read_namespaced_config_map("dependent", namespace).metadata.name == "dependent"


def test_delete_preconditions(v1: client.CoreV1Api, namespace: str) -> None:
    created = v1.create_namespaced_config_map(namespace, configmap("pre"))
    err = api_error(
        lambda: v1.delete_namespaced_config_map(
            "pre",
            namespace,
            body=client.V1DeleteOptions(preconditions=client.V1Preconditions(uid="not-the-uid")),
        )
    )
    assert err.status == 409
    v1.delete_namespaced_config_map(
        "pre",
        namespace,
        body=client.V1DeleteOptions(preconditions=client.V1Preconditions(uid=created.metadata.uid)),
    )
    assert is_gone(lambda: v1.read_namespaced_config_map("pre", namespace))


def test_dry_run_leaves_nothing_behind(v1: client.CoreV1Api, namespace: str) -> None:
    before = store_revision(v1)
    answer = v1.create_namespaced_config_map(namespace, configmap("dry", a="1"), dry_run="All")
    assert answer.metadata.name == "dry"
    assert answer.data == {"a": "1"}
    assert is_gone(lambda: v1.read_namespaced_config_map("dry", namespace))
    assert own(v1.list_namespaced_config_map(namespace).items) == []
    assert store_revision(v1) == before

    v1.create_namespaced_config_map(namespace, configmap("real", a="1"))
    before = store_revision(v1)
    patched = v1.patch_namespaced_config_map("real", namespace, {"data": {"a": "2"}}, dry_run="All")
    assert patched.data == {"a": "2"}
    v1.delete_namespaced_config_map("real", namespace, dry_run="All")
    assert v1.read_namespaced_config_map("real", namespace).data == {"a": "1"}
    assert store_revision(v1) == before


def test_replace_with_stale_resource_version(v1: client.CoreV1Api, namespace: str) -> None:
    v1.create_namespaced_config_map(namespace, configmap("occ", a="1"))
    stale = v1.read_namespaced_config_map("occ", namespace)
    fresh = v1.read_namespaced_config_map("occ", namespace)
    fresh.data = {"a": "2"}
    v1.replace_namespaced_config_map("occ", namespace, fresh)

    stale.data = {"a": "3"}
    err = api_error(lambda: v1.replace_namespaced_config_map("occ", namespace, stale))
    assert err.status == 409
    body = status_body(err)
    assert body["reason"] == "Conflict"
    assert body["details"]["name"] == "occ"
    assert v1.read_namespaced_config_map("occ", namespace).data == {"a": "2"}


def test_create_twice(v1: client.CoreV1Api, namespace: str) -> None:
    v1.create_namespaced_config_map(namespace, configmap("dup"))
    err = api_error(lambda: v1.create_namespaced_config_map(namespace, configmap("dup")))
    assert err.status == 409
    body = status_body(err)
    assert body["reason"] == "AlreadyExists"
    assert body["details"] == {"name": "dup", "kind": "configmaps"}
    assert body["message"] == 'configmaps "dup" already exists'


def test_read_missing(v1: client.CoreV1Api, apps: client.AppsV1Api, namespace: str) -> None:
    err = api_error(lambda: v1.read_namespaced_config_map("missing", namespace))
    assert err.status == 404
    assert err.headers["Content-Type"] == "application/json"
    body = status_body(err)
    assert body["apiVersion"] == "v1"
    assert body["status"] == "Failure"
    assert body["reason"] == "NotFound"
    assert body["code"] == 404
    assert body["details"]["name"] == "missing"
    assert body["details"]["kind"] == "configmaps"
    assert body["message"] == 'configmaps "missing" not found'

    err = api_error(lambda: apps.read_namespaced_deployment("missing", namespace))
    body = status_body(err)
    assert body["details"] == {"name": "missing", "group": "apps", "kind": "deployments"}
    assert body["message"] == 'deployments.apps "missing" not found'


# --- custom resources -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def gadget_crd(api: client.ApiClient) -> str:
    ext = client.ApiextensionsV1Api(api)
    name = f"{CRD_PLURAL}.{CRD_GROUP}"
    schema = {
        "type": "object",
        "properties": {
            "spec": {
                "type": "object",
                "properties": {
                    "size": {"type": "integer"},
                    "replicas": {"type": "integer"},
                    "tags": {"type": "array", "items": {"type": "string"}},
                },
            },
            "status": {"type": "object", "properties": {"ready": {"type": "boolean"}}},
        },
    }
    body = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": name},
        "spec": {
            "group": CRD_GROUP,
            "scope": "Namespaced",
            "names": {"plural": CRD_PLURAL, "singular": "gadget", "kind": "Gadget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": schema},
                    "subresources": {
                        "status": {},
                        "scale": {
                            "specReplicasPath": ".spec.replicas",
                            "statusReplicasPath": ".status.replicas",
                        },
                    },
                }
            ],
        },
    }
    ext.create_custom_resource_definition(body)

    def established() -> bool:
        crd = ext.read_custom_resource_definition(name)
        conditions = (crd.status and crd.status.conditions) or []
        return any(c.type == "Established" and c.status == "True" for c in conditions)

    wait_until(established, timeout=30)

    # Serving may trail the condition by a moment.
    def served() -> bool:
        try:
            client.CustomObjectsApi(api).list_cluster_custom_object(CRD_GROUP, "v1", CRD_PLURAL)
        except ApiException as err:
            if err.status == 404:
                return False
            raise
        return True

    wait_until(served, timeout=30)
    return name


def test_custom_objects(custom: client.CustomObjectsApi, namespace: str, gadget_crd: str) -> None:
    args = (CRD_GROUP, "v1", namespace, CRD_PLURAL)
    body = {
        "apiVersion": f"{CRD_GROUP}/v1",
        "kind": "Gadget",
        "metadata": {"name": "g1", "labels": {"team": "a"}},
        "spec": {"size": 1, "replicas": 1, "tags": ["x"]},
    }
    created = custom.create_namespaced_custom_object(*args, body)
    assert created["metadata"]["uid"]
    assert created["metadata"]["generation"] == 1

    got = custom.get_namespaced_custom_object(*args, "g1")
    assert got["spec"] == {"size": 1, "replicas": 1, "tags": ["x"]}

    listed = custom.list_namespaced_custom_object(*args, label_selector="team=a")
    assert listed["kind"] == "GadgetList"
    assert [item["metadata"]["name"] for item in listed["items"]] == ["g1"]

    patched = custom.patch_namespaced_custom_object(*args, "g1", {"spec": {"size": 2}})
    assert patched["spec"]["size"] == 2
    assert patched["spec"]["tags"] == ["x"]
    assert patched["metadata"]["generation"] == 2

    got = custom.get_namespaced_custom_object(*args, "g1")
    got["spec"]["tags"] = ["y", "z"]
    replaced = custom.replace_namespaced_custom_object(*args, "g1", got)
    assert replaced["spec"]["tags"] == ["y", "z"]

    status = custom.patch_namespaced_custom_object_status(*args, "g1", {"status": {"ready": True}})
    assert status["status"] == {"ready": True}
    assert status["metadata"]["generation"] == 3

    scale = custom.get_namespaced_custom_object_scale(*args, "g1")
    assert scale["kind"] == "Scale"
    assert scale["spec"]["replicas"] == 1
    custom.patch_namespaced_custom_object_scale(*args, "g1", {"spec": {"replicas": 3}})
    assert custom.get_namespaced_custom_object(*args, "g1")["spec"]["replicas"] == 3

    err = api_error(lambda: custom.create_namespaced_custom_object(*args, body))
    assert err.status == 409

    custom.delete_namespaced_custom_object(*args, "g1")
    assert is_gone(lambda: custom.get_namespaced_custom_object(*args, "g1"))
    err = api_error(lambda: custom.get_namespaced_custom_object(*args, "g1"))
    body_404 = status_body(err)
    assert body_404["reason"] == "NotFound"
    assert body_404["details"]["name"] == "g1"


def test_custom_objects_watch(
    custom: client.CustomObjectsApi, namespace: str, gadget_crd: str
) -> None:
    args = (CRD_GROUP, "v1", namespace, CRD_PLURAL)
    start = custom.list_namespaced_custom_object(*args)["metadata"]["resourceVersion"]
    body = {"apiVersion": f"{CRD_GROUP}/v1", "kind": "Gadget", "metadata": {"name": "gw"}}
    custom.create_namespaced_custom_object(*args, body)
    custom.delete_namespaced_custom_object(*args, "gw")
    w = watch.Watch()
    events = []
    for event in w.stream(
        custom.list_namespaced_custom_object, *args, resource_version=start, timeout_seconds=5
    ):
        events.append((event["type"], event["object"]["metadata"]["name"]))
        if len(events) == 2:
            w.stop()
    assert events == [("ADDED", "gw"), ("DELETED", "gw")]
