"""Strategic merge patch behaves as k8s.io/apimachinery/pkg/util/strategicpatch (server side).

The first half replays upstream's own test data (patch_test.go, against its
``MergeItem`` test type, rebuilt here as a schema); the second half patches real
Kubernetes kinds with the upstream schemas.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from nodeless.api import errors, patching, schemas


def _merge_item_schema() -> dict[str, Any]:
    """Upstream's MergeItem test type, with the same patch strategies and merge keys."""
    item: dict[str, Any] = {"type": "object", "properties": {}}
    retain_item: dict[str, Any] = {"type": "object", "properties": {}}
    merging_list = {
        "type": "array",
        "items": item,
        "x-kubernetes-patch-strategy": "merge",
        "x-kubernetes-patch-merge-key": "name",
    }
    merging_int_list = {
        "type": "array",
        "items": {"type": "integer"},
        "x-kubernetes-patch-strategy": "merge",
    }
    scalars = {"name": {"type": "string"}, "value": {"type": "string"}, "other": {"type": "string"}}
    simple_map = {"type": "object", "additionalProperties": {"type": "string"}}
    retain_item["properties"].update(
        scalars,
        simpleMap=simple_map,
        mergingIntList=merging_int_list,
        mergingList=merging_list,
        nonMergingList={"type": "array", "items": item},
    )
    item["properties"].update(
        scalars,
        mergingList=merging_list,
        nonMergingList={"type": "array", "items": item},
        mergingIntList=merging_int_list,
        nonMergingIntList={"type": "array", "items": {"type": "integer"}},
        simpleMap=simple_map,
        replacingItem={"x-kubernetes-patch-strategy": "replace"},
        retainKeysMap={**retain_item, "x-kubernetes-patch-strategy": "retainKeys"},
        retainKeysMergingList={
            **merging_list,
            "x-kubernetes-patch-strategy": "merge,retainKeys",
        },
    )
    return item


MERGE_ITEM = _merge_item_schema()


def _load(text: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(text) or {}
    return loaded


# (description, original, patch, expected), from upstream's patch_test.go test data.
UPSTREAM_CASES = [
    (
        "unique scalars when merging lists",
        "mergingIntList: [1, 2]",
        "mergingIntList: [2, 3]",
        "mergingIntList: [1, 2, 3]",
    ),
    (
        "delete map from nested map",
        "simpleMap: {key1: 1, key2: 1}",
        "simpleMap: {$patch: delete}",
        "simpleMap: {}",
    ),
    (
        "delete all items from merging list",
        "mergingList: [{name: 1}, {name: 2}]",
        "mergingList: [{$patch: replace}]",
        "mergingList: []",
    ),
    ("merge empty merging lists", "mergingList: []", "mergingList: []", "mergingList: []"),
    ("delete all keys from map", "{name: 1, value: 1}", "$patch: replace", "{}"),
    (
        "add key and delete all keys from map",
        "{name: 1, value: 1}",
        "{other: a, $patch: replace}",
        "other: a",
    ),
    (
        "delete all duplicate entries in a merging list",
        "mergingList: [{name: 1}, {name: 1}, {name: 2, value: a}, {name: 3}, {name: 3}]",
        "mergingList: [{name: 1, $patch: delete}, {name: 3, $patch: delete}]",
        "mergingList: [{name: 2, value: a}]",
    ),
    (
        "retainKeys map can add a field when no retainKeys directive present",
        "retainKeysMap: {name: foo}",
        "retainKeysMap: {value: bar}",
        "retainKeysMap: {name: foo, value: bar}",
    ),
    (
        "retainKeys map can delete a field when no retainKeys directive present",
        "retainKeysMap: {name: foo, value: a}",
        "retainKeysMap: {value: null}",
        "retainKeysMap: {name: foo}",
    ),
    (
        "retainKeys map merge an empty map",
        "retainKeysMap: {name: foo, value: a}",
        "retainKeysMap: {}",
        "retainKeysMap: {name: foo, value: a}",
    ),
    (
        "retainKeys list can change a field when no retainKeys directive present",
        "retainKeysMergingList: [{name: bar}, {name: foo, value: a}]",
        "retainKeysMergingList: [{name: foo, value: b}]",
        "retainKeysMergingList: [{name: bar}, {name: foo, value: b}]",
    ),
    (
        "preserve the order from the patch in a merging list",
        "mergingList: [{name: 1}, {name: 2, value: b}, {name: 3}]",
        "mergingList: [{name: 3, value: c}, {name: 1, value: a}, {name: 2, other: x}]",
        "mergingList: [{name: 3, value: c}, {name: 1, value: a}, {name: 2, value: b, other: x}]",
    ),
    (
        "preserve the order from the patch in a merging list 2",
        "mergingList: [{name: 1}, {name: 2, value: b}, {name: 3}]",
        "mergingList: [{name: 3, value: c}, {name: 1, value: a}]",
        "mergingList: [{name: 2, value: b}, {name: 3, value: c}, {name: 1, value: a}]",
    ),
    (
        "preserve the order from the patch in a merging int list",
        "mergingIntList: [1, 2, 3]",
        "mergingIntList: [3, 1, 2]",
        "mergingIntList: [3, 1, 2]",
    ),
    (
        "preserve the order from the patch in a merging int list 2",
        "mergingIntList: [1, 2, 3]",
        "mergingIntList: [3, 1]",
        "mergingIntList: [2, 3, 1]",
    ),
    (
        "$setElementOrder contains item that is not present in the list to be merged",
        "mergingList: [{name: 1}, {name: 3}]",
        """
        $setElementOrder/mergingList: [{name: 3}, {name: 2}, {name: 1}]
        mergingList: [{name: 3, value: 3}, {name: 1, value: 1}]
        """,
        "mergingList: [{name: 3, value: 3}, {name: 1, value: 1}]",
    ),
    (
        "$setElementOrder contains item that is not present in the int list to be merged",
        "mergingIntList: [1, 3]",
        "$setElementOrder/mergingIntList: [3, 2, 1]",
        "mergingIntList: [3, 1]",
    ),
    (
        "delete items in lists of scalars",
        "mergingIntList: [1, 2, 3, 4]",
        """
        $setElementOrder/mergingIntList: [1, 2]
        $deleteFromPrimitiveList/mergingIntList: [3]
        """,
        "mergingIntList: [1, 2, 4]",
    ),
    (
        "delete all duplicate items in lists of scalars",
        "mergingIntList: [1, 2, 3, 3, 4]",
        """
        $setElementOrder/mergingIntList: [1, 2]
        $deleteFromPrimitiveList/mergingIntList: [3]
        """,
        "mergingIntList: [1, 2, 4]",
    ),
    (
        "add and delete items in lists of scalars",
        "mergingIntList: [1, 2, 3]",
        """
        $setElementOrder/mergingIntList: [1, 2, 4]
        $deleteFromPrimitiveList/mergingIntList: [3]
        mergingIntList: [4]
        """,
        "mergingIntList: [1, 2, 4]",
    ),
    (
        "merge lists of maps",
        "mergingList: [{name: 1, other: a}, {name: 2, value: 2, other: b}]",
        """
        $setElementOrder/mergingList: [{name: 4}, {name: 1}, {name: 2}, {name: 3}]
        mergingList: [{name: 4, value: 4}, {name: 3, value: 3}]
        """,
        """
        mergingList:
        - {name: 4, value: 4}
        - {name: 1, other: a}
        - {name: 2, value: 2, other: b}
        - {name: 3, value: 3}
        """,
    ),
    (
        "add field to map in merging list with conflict",
        "mergingList: [{name: 1, other: a}, {name: 3, value: 2, other: b}]",
        """
        $setElementOrder/mergingList: [{name: 1}, {name: 2}]
        mergingList: [{name: 1, value: 1}, {name: 2, value: 2}]
        """,
        """
        mergingList:
        - {name: 1, value: 1, other: a}
        - {name: 2, value: 2}
        - {name: 3, value: 2, other: b}
        """,
    ),
    (
        "defined null values should propagate removing original fields",
        "{name: original-name, value: original-value, other: current-other}",
        "{name: modified-name, value: null}",
        "{name: modified-name, other: current-other}",
    ),
    (
        "null for a missing field is ignored",
        "name: 2",
        "{name: 1, value: 1, other: null}",
        "{name: 1, value: 1}",
    ),
    (
        "replace list of scalars",
        "nonMergingIntList: [1, 2]",
        "nonMergingIntList: [2, 3]",
        "nonMergingIntList: [2, 3]",
    ),
    (
        "retainKeys clears keys that are not retained",
        "retainKeysMap: {name: foo, value: a, other: b}",
        "retainKeysMap: {$retainKeys: [name, other], other: c}",
        "retainKeysMap: {name: foo, other: c}",
    ),
    (
        "retainKeys on an element of a merge,retainKeys list",
        "retainKeysMergingList: [{name: bar, value: a}, {name: foo, value: a}]",
        "retainKeysMergingList: [{name: foo, other: b, $retainKeys: [name, other]}]",
        "retainKeysMergingList: [{name: bar, value: a}, {name: foo, other: b}]",
    ),
    (
        "replace strategy replaces a map wholesale",
        "replacingItem: {a: 1, b: 2}",
        "replacingItem: {c: 3}",
        "replacingItem: {c: 3}",
    ),
]


@pytest.mark.parametrize(
    ("original", "patch", "expected"),
    [pytest.param(o, p, e, id=d) for d, o, p, e in UPSTREAM_CASES],
)
def test_upstream_strategic_merge_patch_cases(original: str, patch: str, expected: str) -> None:
    original_obj, patch_obj = _load(original), _load(patch)
    before, patch_before = copy.deepcopy(original_obj), copy.deepcopy(patch_obj)
    assert patching.strategic_merge_patch(original_obj, patch_obj, MERGE_ITEM) == _load(expected)
    assert original_obj == before
    assert patch_obj == patch_before


@pytest.mark.parametrize(
    ("original", "patch", "fragment"),
    [
        pytest.param(
            "mergingList: [{name: 1}, {name: 3}, {name: 2}]",
            """
            $setElementOrder/mergingList: [{name: 1}, {name: 2}, {name: 3}]
            mergingList: [{name: 3, value: 3}, {name: 1, value: 1}]
            """,
            "doesn't match $setElementOrder list",
            id="order in $setElementOrder and patch list must match",
        ),
        pytest.param(
            "mergingIntList: [1, 3, 2]",
            """
            $setElementOrder/mergingIntList: [1, 2, 3]
            mergingIntList: [3, 1]
            """,
            "doesn't match $setElementOrder list",
            id="order in $setElementOrder and int patch list must match",
        ),
        pytest.param(
            "mergingList: [{name: 1, value: a}]",
            "mergingList: [{value: b}]",
            "map: map[value:b] does not contain declared merge key: name",
            id="missing merge key",
        ),
        pytest.param(
            "retainKeysMap: {name: foo}",
            "retainKeysMap: {$retainKeys: [name], value: x}",
            "invalid patch format of retainKeys",
            id="patch sets a key that is not retained",
        ),
        pytest.param(
            "retainKeysMap: {name: foo}",
            "retainKeysMap: {$retainKeys: name}",
            "invalid patch format of retainKeys",
            id="retainKeys must be a list",
        ),
        pytest.param(
            "simpleMap: {a: b}",
            "simpleMap: {$patch: frobnicate}",
            "unknown patch type: frobnicate in map: map[$patch:frobnicate]",
            id="unknown map directive",
        ),
        pytest.param(
            "mergingList: [{name: 1}]",
            "mergingList: [{name: 1, $patch: frobnicate}]",
            "unknown patch type: frobnicate",
            id="unknown list element directive",
        ),
        pytest.param(
            "mergingList: [{name: 1}]",
            "mergingList: [{name: 1, $patch: merge}]",
            "merging lists cannot yet be specified in the patch",
            id="merge directive in a list",
        ),
        pytest.param(
            "mergingList: [{name: 1}]",
            "mergingList: [{$patch: delete}]",
            "does not contain declared merge key: name",
            id="delete directive without merge key",
        ),
        pytest.param(
            "mergingIntList: [1]",
            "mergingIntList: [a]",
            "list element types are not identical",
            id="mixed element types",
        ),
        pytest.param(
            "mergingIntList: [1]",
            "$deleteFromPrimitiveList/mergingIntList: 1",
            "expected a []interface {}, but received a int64",
            id="deletion list must be a list",
        ),
        pytest.param(
            "mergingIntList: [1]",
            "$setElementOrder: [1]",
            "invalid patch format of setElementOrder list",
            id="setElementOrder needs a list name",
        ),
    ],
)
def test_malformed_strategic_patches_are_bad_requests(
    original: str, patch: str, fragment: str
) -> None:
    with pytest.raises(errors.StatusError) as caught:
        patching.strategic_merge_patch(_load(original), _load(patch), MERGE_ITEM)
    assert caught.value.code == 400
    assert fragment in caught.value.message


def test_lists_of_lists_cannot_be_merged() -> None:
    with pytest.raises(errors.StatusError) as caught:
        patching.strategic_merge_patch(
            {"mergingIntList": [[1]]}, {"mergingIntList": [[2]]}, MERGE_ITEM
        )
    assert caught.value.code == 422
    assert caught.value.causes[0].message == "lists of lists are not supported"


@pytest.mark.parametrize("patch", [["a"], "x", None])
def test_strategic_patch_must_be_an_object(patch: Any) -> None:
    with pytest.raises(errors.StatusError) as caught:
        patching.strategic_merge_patch({}, patch, MERGE_ITEM)
    assert caught.value.code == 400


# --- real Kubernetes kinds -----------------------------------------------------------------

POD = schemas.schema_for("", "v1", "Pod")
DEPLOYMENT = schemas.schema_for("apps", "v1", "Deployment")
SERVICE = schemas.schema_for("", "v1", "Service")
PDB = schemas.schema_for("policy", "v1", "PodDisruptionBudget")


def _pod() -> dict[str, Any]:
    return _load(
        """
        apiVersion: v1
        kind: Pod
        metadata:
          name: web
          labels: {app: web, tier: frontend}
          finalizers: [a.example.com/x, b.example.com/y]
          ownerReferences:
          - {apiVersion: apps/v1, kind: ReplicaSet, name: rs, uid: u1, controller: true}
        spec:
          containers:
          - name: app
            image: app:1
            env:
            - {name: A, value: "1"}
            - {name: B, value: "2"}
            ports:
            - {containerPort: 80, protocol: TCP}
            - {containerPort: 443, protocol: TCP}
            volumeMounts:
            - {name: data, mountPath: /data}
          - name: sidecar
            image: sidecar:1
          volumes:
          - name: data
            emptyDir: {}
          tolerations:
          - {key: a, operator: Exists}
          - {key: b, operator: Exists}
        status:
          conditions:
          - {type: Ready, status: "False"}
          - {type: PodScheduled, status: "True"}
        """
    )


def _smp(obj: dict[str, Any], patch: str, schema: dict[str, Any] | None = POD) -> dict[str, Any]:
    return patching.strategic_merge_patch(obj, _load(patch), schema)


def test_containers_merge_by_name_keeping_the_others() -> None:
    result = _smp(_pod(), "spec: {containers: [{name: app, image: 'app:2'}]}")
    app, sidecar = result["spec"]["containers"]
    assert app["image"] == "app:2"
    assert app["env"] == _pod()["spec"]["containers"][0]["env"]
    assert sidecar == {"name": "sidecar", "image": "sidecar:1"}


def test_changing_one_env_var_keeps_the_rest_in_place() -> None:
    result = _smp(_pod(), "spec: {containers: [{name: app, env: [{name: A, value: '9'}]}]}")
    assert result["spec"]["containers"][0]["env"] == [
        {"name": "A", "value": "9"},
        {"name": "B", "value": "2"},
    ]


def test_an_added_container_goes_first_as_upstream_orders_it() -> None:
    # Upstream (mergeSortedSlice) places patch items that are new to the list
    # before the remaining live items; kubectl's docs show the same output.
    result = _smp(_pod(), "spec: {containers: [{name: extra, image: 'extra:1'}]}")
    assert [c["name"] for c in result["spec"]["containers"]] == ["extra", "app", "sidecar"]


def test_set_element_order_places_an_added_container() -> None:
    result = _smp(
        _pod(),
        """
        spec:
          $setElementOrder/containers: [{name: app}, {name: sidecar}, {name: extra}]
          containers: [{name: extra, image: 'extra:1'}]
        """,
    )
    assert [c["name"] for c in result["spec"]["containers"]] == ["app", "sidecar", "extra"]


def test_set_element_order_reorders_without_changing_contents() -> None:
    result = _smp(_pod(), "spec: {$setElementOrder/containers: [{name: sidecar}, {name: app}]}")
    assert [c["name"] for c in result["spec"]["containers"]] == ["sidecar", "app"]
    assert result["spec"]["containers"][1] == _pod()["spec"]["containers"][0]


def test_delete_directive_removes_a_container() -> None:
    result = _smp(_pod(), "spec: {containers: [{name: sidecar, $patch: delete}]}")
    assert [c["name"] for c in result["spec"]["containers"]] == ["app"]


def test_replace_directive_replaces_the_whole_list() -> None:
    result = _smp(_pod(), "spec: {containers: [{name: only, image: 'only:1'}, {$patch: replace}]}")
    assert result["spec"]["containers"] == [{"name": "only", "image": "only:1"}]


def test_replace_directive_replaces_a_map() -> None:
    result = _smp(_pod(), "metadata: {labels: {$patch: replace, new: label}}")
    assert result["metadata"]["labels"] == {"new": "label"}


def test_ports_merge_by_container_port_and_mounts_by_mount_path() -> None:
    result = _smp(
        _pod(),
        """
        spec:
          containers:
          - name: app
            ports: [{containerPort: 443, name: https}]
            volumeMounts: [{mountPath: /data, readOnly: true}]
        """,
    )
    app = result["spec"]["containers"][0]
    assert app["ports"] == [
        {"containerPort": 80, "protocol": "TCP"},
        {"containerPort": 443, "protocol": "TCP", "name": "https"},
    ]
    assert app["volumeMounts"] == [{"name": "data", "mountPath": "/data", "readOnly": True}]


def test_conditions_merge_by_type_and_owner_references_by_uid() -> None:
    result = _smp(
        _pod(),
        """
        metadata: {ownerReferences: [{uid: u1, blockOwnerDeletion: true}]}
        status: {conditions: [{type: Ready, status: "True"}]}
        """,
    )
    assert result["status"]["conditions"] == [
        {"type": "Ready", "status": "True"},
        {"type": "PodScheduled", "status": "True"},
    ]
    assert result["metadata"]["ownerReferences"][0]["blockOwnerDeletion"] is True
    assert result["metadata"]["ownerReferences"][0]["name"] == "rs"


def test_finalizers_union_merge() -> None:
    result = _smp(_pod(), "metadata: {finalizers: [b.example.com/y, c.example.com/z]}")
    assert result["metadata"]["finalizers"] == [
        "a.example.com/x",
        "b.example.com/y",
        "c.example.com/z",
    ]


def test_delete_from_primitive_list_removes_a_finalizer() -> None:
    result = _smp(_pod(), "metadata: {$deleteFromPrimitiveList/finalizers: [a.example.com/x]}")
    assert result["metadata"]["finalizers"] == ["b.example.com/y"]


def test_deleting_from_an_absent_list_is_a_no_op() -> None:
    pod = _pod()
    del pod["metadata"]["finalizers"]
    result = _smp(pod, "metadata: {$deleteFromPrimitiveList/finalizers: [x]}")
    assert "finalizers" not in result["metadata"]


def test_labels_are_set_and_unset_with_null() -> None:
    result = _smp(_pod(), "metadata: {labels: {tier: null, version: v2}}")
    assert result["metadata"]["labels"] == {"app": "web", "version": "v2"}


def test_atomic_lists_are_replaced() -> None:
    result = _smp(_pod(), "spec: {tolerations: [{key: c, operator: Exists}]}")
    assert result["spec"]["tolerations"] == [{"key": "c", "operator": "Exists"}]


def test_null_deletes_a_list_field() -> None:
    result = _smp(_pod(), "spec: {tolerations: null}")
    assert "tolerations" not in result["spec"]


def test_retain_keys_switches_a_deployment_to_recreate() -> None:
    deployment = _load(
        """
        spec:
          replicas: 2
          strategy:
            type: RollingUpdate
            rollingUpdate: {maxSurge: 1, maxUnavailable: 0}
        """
    )
    result = _smp(
        deployment,
        "spec: {strategy: {$retainKeys: [type], type: Recreate, rollingUpdate: null}}",
        DEPLOYMENT,
    )
    assert result == {"spec": {"replicas": 2, "strategy": {"type": "Recreate"}}}
    # Without $retainKeys the old rollingUpdate stays (and validation would reject it).
    merged = _smp(deployment, "spec: {strategy: {type: Recreate}}", DEPLOYMENT)
    assert merged["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}


def test_retain_keys_switches_a_volume_source() -> None:
    result = _smp(
        _pod(),
        """
        spec:
          volumes:
          - name: data
            $retainKeys: [name, configMap]
            configMap: {name: settings}
        """,
    )
    assert result["spec"]["volumes"] == [{"name": "data", "configMap": {"name": "settings"}}]


def test_service_ports_merge_by_port() -> None:
    service = _load(
        """
        spec:
          selector: {app: web}
          ports:
          - {name: http, port: 80, targetPort: 8080}
          - {name: https, port: 443, targetPort: 8443}
        """
    )
    result = _smp(service, "spec: {ports: [{port: 80, targetPort: 9090}]}", SERVICE)
    assert result["spec"]["ports"] == [
        {"name": "http", "port": 80, "targetPort": 9090},
        {"name": "https", "port": 443, "targetPort": 8443},
    ]
    assert result["spec"]["selector"] == {"app": "web"}


def test_replace_strategy_on_a_referenced_map() -> None:
    pdb = _load("spec: {minAvailable: 1, selector: {matchLabels: {app: web}}}")
    result = _smp(pdb, "spec: {selector: {matchExpressions: [{key: a, operator: Exists}]}}", PDB)
    assert result["spec"]["selector"] == {"matchExpressions": [{"key": "a", "operator": "Exists"}]}


def test_unknown_fields_merge_like_a_merge_patch() -> None:
    pod = _pod()
    pod["spec"]["extra"] = {"a": 1, "list": [1, 2]}
    result = _smp(pod, "spec: {extra: {b: 2, list: [3]}}")
    assert result["spec"]["extra"] == {"a": 1, "b": 2, "list": [3]}


def test_without_a_schema_maps_merge_lists_replace_and_directives_apply() -> None:
    obj = _load(
        """
        spec:
          map: {a: 1, b: 2}
          list: [{name: x}, {name: y}]
          union: {one: 1, two: 2}
          gone: {a: 1}
        """
    )
    result = _smp(
        obj,
        """
        spec:
          map: {b: null, c: 3}
          list: [{name: z}]
          union: {$retainKeys: [two], two: 3}
          gone: {$patch: replace, b: 2}
        """,
        None,
    )
    assert result == {
        "spec": {
            "map": {"a": 1, "c": 3},
            "list": [{"name": "z"}],
            "union": {"two": 3},
            "gone": {"b": 2},
        }
    }


def test_new_values_are_stored_without_nulls_or_directives() -> None:
    pod = _pod()
    del pod["spec"]["volumes"]
    result = _smp(
        pod,
        """
        metadata: {annotations: {a: "1", b: null}}
        spec:
          volumes: [{name: v, emptyDir: {}}, {name: w, $patch: delete}]
          securityContext: {runAsUser: 1, $retainKeys: [runAsUser]}
        """,
    )
    assert result["metadata"]["annotations"] == {"a": "1"}
    assert result["spec"]["volumes"] == [{"name": "v", "emptyDir": {}}]
    assert result["spec"]["securityContext"] == {"runAsUser": 1}


def test_strategic_patch_never_mutates_or_aliases_its_inputs() -> None:
    pod, patch = _pod(), _load("spec: {containers: [{name: app, env: [{name: C, value: '3'}]}]}")
    pod_before, patch_before = copy.deepcopy(pod), copy.deepcopy(patch)
    result = patching.strategic_merge_patch(pod, patch, POD)
    assert pod == pod_before
    assert patch == patch_before
    result["spec"]["containers"][0]["env"].append({"name": "D"})
    result["spec"]["containers"][1]["image"] = "changed"
    assert pod == pod_before
    assert patch == patch_before
