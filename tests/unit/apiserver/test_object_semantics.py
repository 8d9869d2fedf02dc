"""The generic write rules: generation, status split, concurrency, deletion."""

from __future__ import annotations

from typing import Any

from tests.unit.apiserver.conftest import Client, FakeClock, configmap, deployment

DEPLOYMENTS = "/apis/apps/v1/namespaces/default/deployments"
CONFIGMAPS = "/api/v1/namespaces/default/configmaps"
PODS = "/api/v1/namespaces/default/pods"


async def test_create_sets_uid_creation_time_generation_and_defaults(client: Client) -> None:
    code, obj, _ = await client.request("POST", DEPLOYMENTS, deployment("web"))
    assert code == 201
    meta = obj["metadata"]
    assert meta["uid"] and meta["creationTimestamp"] == "2026-11-26T12:00:00Z"
    assert meta["generation"] == 1
    assert obj["spec"]["strategy"]["type"] == "RollingUpdate"
    assert obj["spec"]["template"]["spec"]["restartPolicy"] == "Always"


async def test_generation_moves_only_when_spec_changes(client: Client) -> None:
    await client.request("POST", DEPLOYMENTS, deployment("web"))
    _, obj, _ = await client.request(
        "PATCH",
        f"{DEPLOYMENTS}/web",
        {"metadata": {"labels": {"a": "b"}}},
        content_type="application/merge-patch+json",
    )
    assert obj["metadata"]["generation"] == 1
    _, obj, _ = await client.request(
        "PATCH",
        f"{DEPLOYMENTS}/web",
        {"spec": {"replicas": 3}},
        content_type="application/merge-patch+json",
    )
    assert obj["metadata"]["generation"] == 2


async def test_main_resource_write_ignores_status_and_status_write_ignores_spec(
    client: Client,
) -> None:
    await client.request("POST", DEPLOYMENTS, deployment("web"))
    _, obj, _ = await client.request(
        "PATCH",
        f"{DEPLOYMENTS}/web",
        {"status": {"replicas": 7}},
        content_type="application/merge-patch+json",
    )
    assert obj.get("status", {}).get("replicas") is None
    _, obj, _ = await client.request(
        "PATCH",
        f"{DEPLOYMENTS}/web/status",
        {"status": {"replicas": 7}, "spec": {"replicas": 9}},
        content_type="application/merge-patch+json",
    )
    assert obj["status"]["replicas"] == 7
    assert obj["spec"]["replicas"] == 1


async def test_noop_update_keeps_resource_version_and_writes_nothing(client: Client) -> None:
    _, created, _ = await client.request("POST", CONFIGMAPS, configmap("c", a="1"))
    before = await client.revision()
    code, obj, _ = await client.request("PUT", f"{CONFIGMAPS}/c", created)
    assert code == 200
    assert obj["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]
    assert await client.revision() == before


async def test_stale_resource_version_is_a_conflict(client: Client) -> None:
    _, created, _ = await client.request("POST", CONFIGMAPS, configmap("c", a="1"))
    await client.request(
        "PATCH",
        f"{CONFIGMAPS}/c",
        {"data": {"a": "2"}},
        content_type="application/merge-patch+json",
    )
    stale = dict(created, data={"a": "3"})
    code, status, _ = await client.request("PUT", f"{CONFIGMAPS}/c", stale)
    assert code == 409
    assert status["reason"] == "Conflict"


async def test_generate_name_gets_a_random_suffix(client: Client) -> None:
    body = configmap("")
    body["metadata"] = {"generateName": "cfg-"}
    code, obj, _ = await client.request("POST", CONFIGMAPS, body)
    assert code == 201
    name = obj["metadata"]["name"]
    assert name.startswith("cfg-") and len(name) == len("cfg-") + 5


async def test_finalizers_hold_deletion_until_removed(client: Client) -> None:
    body = configmap("held")
    body["metadata"]["finalizers"] = ["example.com/hold"]
    await client.request("POST", CONFIGMAPS, body)
    code, obj, _ = await client.request("DELETE", f"{CONFIGMAPS}/held")
    assert code == 200
    assert obj["metadata"]["deletionTimestamp"]
    code, _, _ = await client.request("GET", f"{CONFIGMAPS}/held")
    assert code == 200
    await client.request(
        "PATCH",
        f"{CONFIGMAPS}/held",
        {"metadata": {"finalizers": None}},
        content_type="application/merge-patch+json",
    )
    code, _, _ = await client.request("GET", f"{CONFIGMAPS}/held")
    assert code == 404


async def test_no_new_finalizers_on_an_object_being_deleted(client: Client) -> None:
    body = configmap("held")
    body["metadata"]["finalizers"] = ["example.com/hold"]
    await client.request("POST", CONFIGMAPS, body)
    await client.request("DELETE", f"{CONFIGMAPS}/held")
    code, status, _ = await client.request(
        "PATCH",
        f"{CONFIGMAPS}/held",
        {"metadata": {"finalizers": ["example.com/hold", "example.com/more"]}},
        content_type="application/merge-patch+json",
    )
    assert code == 403, status


async def test_foreground_deletion_waits_for_blocking_dependents(client: Client) -> None:
    _, owner, _ = await client.request("POST", CONFIGMAPS, configmap("owner"))
    dependent = configmap("dependent")
    dependent["metadata"]["ownerReferences"] = [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "name": "owner",
            "uid": owner["metadata"]["uid"],
            "blockOwnerDeletion": True,
        }
    ]
    await client.request("POST", CONFIGMAPS, dependent)
    code, obj, _ = await client.request(
        "DELETE", f"{CONFIGMAPS}/owner", {"propagationPolicy": "Foreground"}
    )
    assert code == 200
    assert "foregroundDeletion" in obj["metadata"]["finalizers"]


async def test_delete_without_dependents_removes_at_once_whatever_the_policy(
    client: Client,
) -> None:
    for policy in ("Foreground", "Orphan", "Background"):
        await client.request("POST", CONFIGMAPS, configmap("lonely"))
        await client.request("DELETE", f"{CONFIGMAPS}/lonely", {"propagationPolicy": policy})
        code, _, _ = await client.request("GET", f"{CONFIGMAPS}/lonely")
        assert code == 404, policy


async def test_scheduled_pod_deletion_is_graceful(client: Client, clock: FakeClock) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }
    code, created, _ = await client.request("POST", PODS, pod)
    assert code == 201
    assert created["status"] == {"phase": "Pending", "qosClass": "BestEffort"}
    code, _, _ = await client.request(
        "POST",
        f"{PODS}/p/binding",
        {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": "p"},
            "target": {"kind": "Node", "name": "zone-a"},
        },
    )
    assert code == 201
    code, obj, _ = await client.request("DELETE", f"{PODS}/p")
    assert code == 200
    assert obj["metadata"]["deletionGracePeriodSeconds"] == 30
    assert obj["metadata"]["deletionTimestamp"] == "2026-11-26T12:00:30Z"
    code, _, _ = await client.request("DELETE", f"{PODS}/p", {"gracePeriodSeconds": 0})
    code, _, _ = await client.request("GET", f"{PODS}/p")
    assert code == 404


async def test_unscheduled_pod_is_deleted_at_once(client: Client) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }
    await client.request("POST", PODS, pod)
    await client.request("DELETE", f"{PODS}/p")
    code, _, _ = await client.request("GET", f"{PODS}/p")
    assert code == 404


async def test_binding_sets_node_and_scheduled_condition(client: Client) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }
    await client.request("POST", PODS, pod)
    await client.request(
        "POST",
        f"{PODS}/p/binding",
        {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": "p"},
            "target": {"kind": "Node", "name": "zone-a"},
        },
    )
    _, obj, _ = await client.request("GET", f"{PODS}/p")
    assert obj["spec"]["nodeName"] == "zone-a"
    assert [c["type"] for c in obj["status"]["conditions"]] == ["PodScheduled"]
    code, _, _ = await client.request(
        "POST",
        f"{PODS}/p/binding",
        {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": "p"},
            "target": {"kind": "Node", "name": "zone-b"},
        },
    )
    assert code == 409


async def test_scale_subresource_reads_and_writes_replicas(client: Client) -> None:
    await client.request("POST", DEPLOYMENTS, deployment("web", replicas=2))
    code, scale, _ = await client.request("GET", f"{DEPLOYMENTS}/web/scale")
    assert code == 200
    assert scale["kind"] == "Scale" and scale["spec"]["replicas"] == 2
    assert scale["status"]["selector"] == "app=web"
    _, scale, _ = await client.request(
        "PATCH",
        f"{DEPLOYMENTS}/web/scale",
        {"spec": {"replicas": 5}},
        content_type="application/merge-patch+json",
    )
    assert scale["spec"]["replicas"] == 5
    _, obj, _ = await client.request("GET", f"{DEPLOYMENTS}/web")
    assert obj["spec"]["replicas"] == 5


async def test_dry_run_writes_nothing(client: Client) -> None:
    before = await client.revision()
    code, obj, _ = await client.request(
        "POST", CONFIGMAPS, configmap("dry"), params={"dryRun": "All"}
    )
    assert code == 201 and obj["metadata"]["name"] == "dry"
    assert await client.revision() == before
    code, _, _ = await client.request("GET", f"{CONFIGMAPS}/dry")
    assert code == 404


async def test_new_namespace_gets_default_service_account(client: Client) -> None:
    await client.request(
        "POST",
        "/api/v1/namespaces",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}},
    )
    code, sa, _ = await client.request("GET", "/api/v1/namespaces/team/serviceaccounts/default")
    assert code == 200 and sa["metadata"]["name"] == "default"


async def test_terminating_namespace_refuses_new_objects(client: Client) -> None:
    await client.request(
        "POST",
        "/api/v1/namespaces",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "going"}},
    )
    code, ns, _ = await client.request("DELETE", "/api/v1/namespaces/going")
    assert ns["status"]["phase"] == "Terminating"
    before = await client.revision()
    code, status, _ = await client.request(
        "POST", "/api/v1/namespaces/going/configmaps", configmap("x", namespace="going")
    )
    assert code == 403 and status["reason"] == "Forbidden"
    assert "being terminated" in status["message"]
    assert await client.revision() == before


async def test_server_side_apply_creates_then_conflicts_with_another_manager(
    client: Client,
) -> None:
    body = deployment("web", replicas=2)
    body["metadata"]["namespace"] = "default"
    code, obj, _ = await client.request(
        "PATCH",
        f"{DEPLOYMENTS}/web",
        body,
        content_type="application/apply-patch+yaml",
        params={"fieldManager": "alice"},
    )
    assert code == 201
    assert obj["metadata"]["managedFields"][0]["manager"] == "alice"
    body["spec"]["replicas"] = 4
    code, status, _ = await client.request(
        "PATCH",
        f"{DEPLOYMENTS}/web",
        body,
        content_type="application/apply-patch+yaml",
        params={"fieldManager": "bob"},
    )
    assert code == 409
    assert any(c["field"] == ".spec.replicas" for c in status["details"]["causes"])
    code, obj, _ = await client.request(
        "PATCH",
        f"{DEPLOYMENTS}/web",
        body,
        content_type="application/apply-patch+yaml",
        params={"fieldManager": "bob", "force": "true"},
    )
    assert code == 200 and obj["spec"]["replicas"] == 4


async def test_deployment_with_privileged_container_is_refused_at_creation(client: Client) -> None:
    body = deployment("bad")
    container = body["spec"]["template"]["spec"]["containers"][0]
    container["securityContext"] = {"privileged": True}
    body["spec"]["template"]["spec"]["hostNetwork"] = True
    before = await client.revision()
    code, status, _ = await client.request("POST", DEPLOYMENTS, body)
    assert code == 422 and status["reason"] == "Invalid"
    fields = {c["field"] for c in status["details"]["causes"]}
    assert "spec.template.spec.containers[0].securityContext.privileged" in fields
    assert "spec.template.spec.hostNetwork" in fields
    assert await client.revision() == before


async def test_daemonsets_are_forbidden(client: Client) -> None:
    body = deployment("agent")
    body["kind"] = "DaemonSet"
    del body["spec"]["replicas"]
    code, status, _ = await client.request(
        "POST", "/apis/apps/v1/namespaces/default/daemonsets", body
    )
    assert code == 403 and status["reason"] == "Forbidden"


async def test_unknown_instance_spec_annotation_is_refused(client: Client) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "annotations": {"k8s.aliyun.com/eci-use-specs": "3-7Gi"}},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }
    code, status, _ = await client.request("POST", PODS, pod)
    assert code == 422
    assert any("eci-use-specs" in c["field"] for c in status["details"]["causes"])


async def test_a_yaml_body_with_a_number_json_cannot_hold_is_refused_and_changes_nothing(
    client: Client,
) -> None:
    before = await client.revision()
    body = b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: nan\n  labels: {}\nx: .nan\n"
    code, status, _ = await client.request(
        "POST", CONFIGMAPS, raw=body, content_type="application/yaml"
    )
    assert code == 400
    assert status["kind"] == "Status" and status["reason"] == "BadRequest"
    assert "unsupported value" in status["message"]
    assert await client.revision() == before
    assert client.server.store.cacher.verify() == []


async def test_the_same_bytes_sent_as_yaml_then_as_json_are_each_read_as_sent(
    client: Client,
) -> None:
    # PyYAML reads 1e3 as a string, JSON as a number: a ConfigMap's data
    # must be strings. A controller-style body (generateName) has its field
    # problems remembered by its bytes, which must not cross media types.
    body = b'{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"generateName": "same-"}, "data": {"k": 1e3}}'
    as_yaml, created, _ = await client.request(
        "POST", CONFIGMAPS, raw=body, content_type="application/yaml"
    )
    before = await client.revision()
    as_json, status, _ = await client.request(
        "POST", CONFIGMAPS, raw=body, content_type="application/json"
    )

    assert as_yaml == 201 and created["data"] == {"k": "1e3"}
    assert as_json == 400 and status["reason"] == "BadRequest"
    assert await client.revision() == before


async def test_named_objects_alike_but_for_a_value_type_or_a_field_are_each_checked(
    client: Client,
) -> None:
    # Small list-free bodies have their field problems remembered by shape
    # (keys and value types): a wrong type or an unknown field is its own shape.
    def config_map(name: str, **fields: Any) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, **fields}

    good, _, _ = await client.request("POST", CONFIGMAPS, config_map("a", data={"k": "1"}))
    again, _, _ = await client.request("POST", CONFIGMAPS, config_map("b", data={"k": "2"}))
    wrong, status, _ = await client.request("POST", CONFIGMAPS, config_map("c", data={"k": 3}))
    strict = {"fieldValidation": "Strict"}
    unknown = [
        (await client.request("POST", CONFIGMAPS, config_map(n, extra="x"), params=strict))[0]
        for n in ("d", "e")
    ]
    _, _, warned = await client.request("POST", CONFIGMAPS, config_map("f", extra="x"))

    assert (good, again, wrong, status["reason"]) == (201, 201, 400, "BadRequest")
    assert unknown == [400, 400]
    assert 'unknown field \\"extra' in warned.headers.get("Warning", "")
