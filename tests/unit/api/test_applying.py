"""Server-side apply and managedFields bookkeeping, checked against upstream's observable output."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from nodeless.api import applying, errors, schemas

DEPLOYMENT = schemas.schema_for("apps", "v1", "Deployment")
CONFIGMAP = schemas.schema_for("", "v1", "ConfigMap")
T0, T1, T2, T3 = (f"2026-11-26T1{h}:00:00Z" for h in range(4))


def deployment(replicas: int = 2, image: str = "nginx:1.25", **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web", **labels}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [
                        {"name": "nginx", "image": image, "ports": [{"containerPort": 80}]}
                    ]
                },
            },
        },
    }


def partial(spec: dict[str, Any] | None = None, **metadata: Any) -> dict[str, Any]:
    """A minimal apply configuration, as a second field manager would send it."""
    obj: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", **metadata},
    }
    if spec is not None:
        obj["spec"] = spec
    return obj


def containers(*specs: dict[str, Any]) -> dict[str, Any]:
    return {"template": {"spec": {"containers": list(specs)}}}


def apply(live: Any, config: Any, manager: str, now: str = T1, **kwargs: Any) -> dict[str, Any]:
    kwargs.setdefault("force", False)
    kwargs.setdefault("schema", DEPLOYMENT)
    return applying.apply(live, config, manager=manager, now=now, **kwargs)


def entries(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """managedFields by "manager/operation" for readable assertions."""
    return {f"{e['manager']}/{e['operation']}": e for e in obj["metadata"]["managedFields"]}


def owned(obj: dict[str, Any], key: str) -> list[str]:
    return [
        applying.format_path(p)
        for p in applying.decode_fields_v1(entries(obj)[key]["fieldsV1"]).paths()
    ]


def conflict_of(call: Any) -> errors.StatusError:
    with pytest.raises(errors.StatusError) as info:
        call()
    return info.value


# ---------------------------------------------------------------------------
# Creating and re-applying


def test_apply_create_records_upstreams_exact_managed_fields_entry() -> None:
    created = apply(None, deployment(), "kubectl", now=T0)

    assert created["metadata"]["managedFields"] == [
        {
            "manager": "kubectl",
            "operation": "Apply",
            "apiVersion": "apps/v1",
            "time": T0,
            "fieldsType": "FieldsV1",
            "fieldsV1": {
                "f:metadata": {"f:labels": {"f:app": {}}},
                "f:spec": {
                    "f:replicas": {},
                    "f:selector": {},
                    "f:template": {
                        "f:metadata": {"f:labels": {"f:app": {}}},
                        "f:spec": {
                            "f:containers": {
                                'k:{"name":"nginx"}': {
                                    ".": {},
                                    "f:image": {},
                                    "f:name": {},
                                    "f:ports": {
                                        'k:{"containerPort":80,"protocol":"TCP"}': {
                                            ".": {},
                                            "f:containerPort": {},
                                        }
                                    },
                                }
                            }
                        },
                    },
                },
            },
        }
    ]
    # fieldsV1 keys come out in upstream's order, so the JSON text matches too.
    text = json.dumps(created["metadata"]["managedFields"][0]["fieldsV1"], separators=(",", ":"))
    assert text.startswith('{"f:metadata":{"f:labels":{"f:app":{}}},"f:spec":{"f:replicas":{},')
    assert created["spec"] == deployment()["spec"]


def test_reapplying_the_same_config_changes_nothing_not_even_the_time() -> None:
    created = apply(None, deployment(), "kubectl", now=T0)

    again = apply(created, deployment(), "kubectl", now=T1)

    assert again == created


def test_reapplying_a_changed_value_updates_object_and_time() -> None:
    created = apply(None, deployment(), "kubectl", now=T0)

    changed = apply(created, deployment(replicas=5), "kubectl", now=T1)

    assert changed["spec"]["replicas"] == 5
    assert entries(changed)["kubectl/Apply"]["time"] == T1


def test_inputs_are_never_mutated() -> None:
    created = apply(None, deployment(), "kubectl", now=T0)
    live, config = copy.deepcopy(created), deployment(replicas=7, tier="web")

    apply(live, config, "other", force=True)
    applying.record_update(live, config, manager="edit", schema=DEPLOYMENT, now=T1)

    assert live == created
    assert config == deployment(replicas=7, tier="web")


# ---------------------------------------------------------------------------
# Conflicts and force


@pytest.mark.parametrize(
    ("owner_operation", "expected_manager"),
    [
        ("apply", '"first"'),
        ("update", '"first" using apps/v1'),
    ],
)
def test_applying_a_different_value_of_anothers_field_is_a_409(
    owner_operation: str, expected_manager: str
) -> None:
    if owner_operation == "apply":
        live = apply(None, deployment(), "first", now=T0)
    else:
        live = applying.record_update(
            None, deployment(), manager="first", schema=DEPLOYMENT, now=T0
        )

    err = conflict_of(lambda: apply(live, partial({"replicas": 3}), "second"))

    assert err.code == 409
    assert err.reason == "Conflict"
    assert err.message == (
        f"Apply failed with 1 conflict: conflict with {expected_manager}: .spec.replicas"
    )
    assert [c.to_dict() for c in err.causes] == [
        {
            "reason": "FieldManagerConflict",
            "message": f"conflict with {expected_manager}",
            "field": ".spec.replicas",
        }
    ]


def test_conflict_message_lists_every_field_per_manager() -> None:
    live = apply(None, deployment(), "first", now=T0)
    config = partial(
        {"replicas": 3, **containers({"name": "nginx", "image": "nginx:2"})}, labels={"app": "x"}
    )

    err = conflict_of(lambda: apply(live, config, "second"))

    assert err.message == (
        'Apply failed with 3 conflicts: conflicts with "first":\n'
        "- .metadata.labels.app\n"
        "- .spec.replicas\n"
        '- .spec.template.spec.containers[name="nginx"].image'
    )
    assert [c.field for c in err.causes] == [
        ".metadata.labels.app",
        ".spec.replicas",
        '.spec.template.spec.containers[name="nginx"].image',
    ]


def test_forced_apply_takes_the_field_away_from_its_previous_owner() -> None:
    live = apply(None, deployment(), "first", now=T0)

    forced = apply(live, partial({"replicas": 3}), "second", force=True)

    assert forced["spec"]["replicas"] == 3
    assert owned(forced, "second/Apply") == [".spec.replicas"]
    assert ".spec.replicas" not in owned(forced, "first/Apply")


def test_applying_the_same_value_shares_ownership_without_conflict() -> None:
    live = apply(None, deployment(), "first", now=T0)

    shared = apply(live, partial({"replicas": 2}), "second")

    assert ".spec.replicas" in owned(shared, "first/Apply")
    assert owned(shared, "second/Apply") == [".spec.replicas"]
    assert shared["spec"] == live["spec"]


def test_apply_over_an_object_without_managed_fields_conflicts_with_before_first_apply() -> None:
    unmanaged = deployment()

    err = conflict_of(lambda: apply(unmanaged, partial({"replicas": 3}), "second"))

    assert err.causes[0].message == 'conflict with "before-first-apply" using apps/v1'


# ---------------------------------------------------------------------------
# Merging and removing


@pytest.mark.parametrize(
    ("other_owns_tier", "tier_after"),
    [(False, None), (True, "web")],
)
def test_label_dropped_from_config_is_removed_unless_another_manager_owns_it(
    other_owns_tier: bool, tier_after: str | None
) -> None:
    live = apply(None, deployment(tier="web"), "kubectl", now=T0)
    if other_owns_tier:
        live = apply(live, partial(labels={"tier": "web"}), "labeller", now=T1)

    reapplied = apply(live, deployment(), "kubectl", now=T2)

    assert reapplied["metadata"]["labels"].get("tier") == tier_after
    assert ".metadata.labels.tier" not in owned(reapplied, "kubectl/Apply")


def test_label_owned_by_an_update_manager_survives_the_applier_dropping_it() -> None:
    live = apply(None, deployment(tier="web"), "kubectl", now=T0)
    edited = copy.deepcopy(live)
    edited["metadata"]["labels"]["tier"] = "frontend"
    live = applying.record_update(live, edited, manager="kubectl-edit", schema=DEPLOYMENT, now=T1)

    reapplied = apply(live, deployment(), "kubectl", now=T2)

    assert reapplied["metadata"]["labels"] == {"app": "web", "tier": "frontend"}


def test_containers_of_different_managers_merge_by_name() -> None:
    live = apply(None, deployment(), "app", now=T0)
    sidecar = {"name": "proxy", "image": "envoy:1"}

    both = apply(live, partial(containers(sidecar)), "mesh", now=T1)
    reapplied = apply(both, deployment(), "app", now=T2)
    dropped = apply(reapplied, partial(containers()), "mesh", now=T3)

    names = [c["name"] for c in both["spec"]["template"]["spec"]["containers"]]
    assert names == ["nginx", "proxy"]
    assert reapplied == both
    assert owned(both, "mesh/Apply") == [
        '.spec.template.spec.containers[name="proxy"]',
        '.spec.template.spec.containers[name="proxy"].image',
        '.spec.template.spec.containers[name="proxy"].name',
    ]
    assert [c["name"] for c in dropped["spec"]["template"]["spec"]["containers"]] == ["nginx"]


def test_configmap_data_keys_are_owned_one_by_one() -> None:
    def config(**data: str) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": data}

    live = apply(None, config(x="1"), "a", schema=CONFIGMAP, now=T0)
    both = apply(live, config(y="2"), "b", schema=CONFIGMAP, now=T1)
    without_x = apply(both, config(), "a", schema=CONFIGMAP, now=T2)

    assert both["data"] == {"x": "1", "y": "2"}
    assert entries(both)["a/Apply"]["fieldsV1"] == {"f:data": {"f:x": {}}}
    assert entries(both)["b/Apply"]["fieldsV1"] == {"f:data": {"f:y": {}}}
    assert without_x["data"] == {"y": "2"}
    assert "a/Apply" not in entries(without_x)


def test_without_a_schema_maps_merge_and_lists_are_replaced_whole() -> None:
    def widget(spec: dict[str, Any]) -> dict[str, Any]:
        return {"apiVersion": "x.io/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": spec}

    live = apply(None, widget({"a": 1, "items": [1, 2]}), "one", schema=None, now=T0)
    merged = apply(live, widget({"b": 2, "items": [3]}), "two", schema=None, force=True)

    assert merged["spec"] == {"a": 1, "items": [3], "b": 2}
    assert entries(merged)["two/Apply"]["fieldsV1"] == {
        "f:spec": {".": {}, "f:b": {}, "f:items": {}}
    }


# ---------------------------------------------------------------------------
# Updates (create/update/patch)


def test_update_after_apply_moves_ownership_to_the_update_manager() -> None:
    live = apply(None, deployment(), "kubectl", now=T0)
    edited = copy.deepcopy(live)
    edited["spec"]["replicas"] = 5

    updated = applying.record_update(
        live, edited, manager="kubectl-edit", schema=DEPLOYMENT, now=T1
    )
    err = conflict_of(lambda: apply(updated, deployment(), "kubectl", now=T2))

    assert entries(updated)["kubectl-edit/Update"] == {
        "manager": "kubectl-edit",
        "operation": "Update",
        "apiVersion": "apps/v1",
        "time": T1,
        "fieldsType": "FieldsV1",
        "fieldsV1": {"f:spec": {"f:replicas": {}}},
    }
    assert ".spec.replicas" not in owned(updated, "kubectl/Apply")
    assert err.message == (
        'Apply failed with 1 conflict: conflict with "kubectl-edit" using apps/v1: .spec.replicas'
    )


def test_create_by_update_owns_what_upstreams_zero_value_comparison_owns() -> None:
    created = applying.record_update(
        None, deployment(), manager="kubectl-create", schema=DEPLOYMENT, now=T0
    )

    assert created["metadata"]["managedFields"][0]["fieldsV1"] == {
        "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
        "f:spec": {
            "f:replicas": {},
            "f:selector": {},
            "f:template": {
                "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
                "f:spec": {
                    "f:containers": {
                        'k:{"name":"nginx"}': {
                            ".": {},
                            "f:image": {},
                            "f:name": {},
                            "f:ports": {
                                ".": {},
                                'k:{"containerPort":80,"protocol":"TCP"}': {
                                    ".": {},
                                    "f:containerPort": {},
                                },
                            },
                        }
                    }
                },
            },
        },
    }


def templated(name: str, image: str = "nginx:1.25") -> dict[str, Any]:
    """A pod of a ReplicaSet: named from ``generateName`` (the server added ``name``)."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "generateName": "web-",
            "uid": f"uid-{name}",
            "creationTimestamp": T0,
            "labels": {"app": "web"},
        },
        "spec": {"containers": [{"name": "nginx", "image": image}]},
    }


def test_objects_created_from_one_template_own_the_same_fields_each_at_its_own_time() -> None:
    schema = schemas.schema_for("", "v1", "Pod")
    first = applying.record_update(None, templated("web-a"), manager="rs", schema=schema, now=T0)
    second = applying.record_update(None, templated("web-b"), manager="rs", schema=schema, now=T1)
    # Another container name is another field set, though the object has the same shape.
    other = templated("web-c")
    other["spec"]["containers"][0]["name"] = "sidecar"
    third = applying.record_update(None, other, manager="rs", schema=schema, now=T1)
    # So is another manager's create of the same content.
    fourth = applying.record_update(None, templated("web-d"), manager="job", schema=schema, now=T1)

    [a], [b], [c], [d] = (o["metadata"]["managedFields"] for o in (first, second, third, fourth))
    assert (a["time"], b["time"]) == (T0, T1)
    assert a["fieldsV1"] == b["fieldsV1"]
    containers_of = [
        list(e["fieldsV1"]["f:spec"]["f:containers"]) for e in (a, c)
    ]  # fmt: skip
    assert containers_of == [['k:{"name":"nginx"}'], ['k:{"name":"sidecar"}']]
    assert d["manager"] == "job" and d["fieldsV1"] == a["fieldsV1"]
    assert (
        second["metadata"]["name"] == "web-b" and "managedFields" not in templated("x")["metadata"]
    )


def test_update_that_changes_nothing_keeps_entries_and_times() -> None:
    created = applying.record_update(None, deployment(), manager="m", schema=DEPLOYMENT, now=T0)

    again = applying.record_update(created, created, manager="m", schema=DEPLOYMENT, now=T1)

    assert again == created


@pytest.mark.parametrize(
    ("sent", "subresource", "expected_managers"),
    [
        pytest.param(None, "", ["kubectl/Apply", "editor/Update"], id="absent-keeps-stored"),
        pytest.param([], "", ["editor/Update"], id="empty-list-resets"),
        pytest.param([{}], "", ["editor/Update"], id="one-empty-entry-resets"),
        pytest.param("client", "", ["client/Update", "editor/Update"], id="client-list-wins"),
        pytest.param("client", "status", ["kubectl/Apply"], id="subresource-keeps-stored"),
        pytest.param([{"bogus": 1}], "", ["kubectl/Apply", "editor/Update"], id="invalid-ignored"),
    ],
)
def test_managed_fields_sent_by_the_client(
    sent: Any, subresource: str, expected_managers: list[str]
) -> None:
    live = apply(None, deployment(), "kubectl", now=T0)
    edited = copy.deepcopy(live)
    edited["metadata"]["labels"]["edited"] = "yes"
    edited["status"] = {"observedGeneration": 1}
    if sent == "client":
        sent = [
            {
                "manager": "client",
                "operation": "Update",
                "apiVersion": "apps/v1",
                "time": T0,
                "fieldsType": "FieldsV1",
                "fieldsV1": {"f:spec": {"f:paused": {}}},
            }
        ]
    if sent is None:
        edited["metadata"].pop("managedFields")
    else:
        edited["metadata"]["managedFields"] = sent

    updated = applying.record_update(
        live, edited, manager="editor", schema=DEPLOYMENT, now=T1, subresource=subresource
    )

    if subresource:
        expected_managers = [*expected_managers, "editor/Update"]
    assert list(entries(updated)) == expected_managers


def test_status_is_owned_only_through_the_status_subresource() -> None:
    live = apply(None, deployment(), "kubectl", now=T0)
    with_status = {**partial(), "status": {"observedGeneration": 1}, "spec": {"replicas": 9}}

    via_main = apply(live, with_status, "ctrl", now=T1, force=True)
    via_status = apply(live, with_status, "ctrl", now=T1, subresource="status")

    assert owned(via_main, "ctrl/Apply") == [".spec.replicas"]
    assert owned(via_status, "ctrl/Apply") == [".status.observedGeneration"]
    assert entries(via_status)["ctrl/Apply"]["subresource"] == "status"


def test_update_managers_beyond_ten_are_merged_into_ancient_changes() -> None:
    obj = applying.record_update(None, deployment(), manager="m00", schema=DEPLOYMENT, now=T0)
    for i in range(1, 11):
        edited = copy.deepcopy(obj)
        edited["metadata"]["labels"][f"l{i}"] = "x"
        obj = applying.record_update(
            obj, edited, manager=f"m{i:02}", schema=DEPLOYMENT, now=f"2026-11-26T12:00:{i:02}Z"
        )

    managers = entries(obj)
    assert len(managers) == 10
    assert "m00/Update" not in managers and "m01/Update" not in managers
    ancient = managers["ancient-changes/Update"]
    assert ancient["time"] == "2026-11-26T12:00:01Z"
    assert ".metadata.labels.l1" in owned(obj, "ancient-changes/Update")
    assert ".spec.replicas" in owned(obj, "ancient-changes/Update")


def test_entries_are_ordered_apply_first_then_by_time() -> None:
    obj = applying.record_update(None, deployment(), manager="zeta", schema=DEPLOYMENT, now=T2)
    edited = copy.deepcopy(obj)
    edited["metadata"]["labels"]["x"] = "y"
    obj = applying.record_update(obj, edited, manager="alpha", schema=DEPLOYMENT, now=T3)
    obj = apply(obj, partial(labels={"z": "1"}), "applier", now=T3)

    assert list(entries(obj)) == ["applier/Apply", "zeta/Update", "alpha/Update"]


# ---------------------------------------------------------------------------
# kubectl's client-side to server-side apply upgrade


def client_side_applied(replicas_now: int) -> dict[str, Any]:
    """An object created by ``kubectl apply`` (client side) with replicas 2, maybe since drifted."""
    config = deployment()
    annotated = copy.deepcopy(config)
    annotated["metadata"]["annotations"] = {
        applying.LAST_APPLIED_ANNOTATION: json.dumps(config),
    }
    obj = applying.record_update(
        None, annotated, manager="kubectl-client-side-apply", schema=DEPLOYMENT, now=T0
    )
    if replicas_now != 2:
        drifted = copy.deepcopy(obj)
        drifted["spec"]["replicas"] = replicas_now
        obj = applying.record_update(
            obj, drifted, manager="kubectl-client-side-apply", schema=DEPLOYMENT, now=T0
        )
    return obj


def test_kubectl_server_side_apply_takes_over_unchanged_client_side_fields() -> None:
    live = client_side_applied(replicas_now=2)

    upgraded = apply(live, deployment(replicas=3), "kubectl")

    assert upgraded["spec"]["replicas"] == 3
    annotation = upgraded["metadata"]["annotations"][applying.LAST_APPLIED_ANNOTATION]
    assert json.loads(annotation) == deployment(replicas=3)
    assert annotation.endswith("\n") and '"apiVersion":"apps/v1"' in annotation


@pytest.mark.parametrize(
    ("manager", "replicas_now"),
    [("other", 2), ("kubectl", 5)],
    ids=["not-kubectl", "drifted-since-last-applied"],
)
def test_client_side_fields_still_conflict_otherwise(manager: str, replicas_now: int) -> None:
    live = client_side_applied(replicas_now)

    err = conflict_of(lambda: apply(live, deployment(replicas=3), manager))

    assert [c.field for c in err.causes] == [".spec.replicas"]


# ---------------------------------------------------------------------------
# Bad apply configurations


@pytest.mark.parametrize(
    ("config", "message"),
    [
        pytest.param(
            partial(managedFields=[]),
            "metadata.managedFields must be nil",
            id="managed-fields",
        ),
        pytest.param(
            partial(containers({"image": "x"})),
            "failed to create typed patch object (apps/v1, Kind=Deployment): "
            ".spec.template.spec.containers: element 0: associative list with keys has an "
            'element that omits key field "name" (and doesn\'t have default value)',
            id="missing-key",
        ),
        pytest.param(
            partial(containers({"name": "a"}, {"name": "a"})),
            "failed to create typed patch object (apps/v1, Kind=Deployment): "
            '.spec.template.spec.containers: duplicate entries for key [name="a"]',
            id="duplicate-key",
        ),
    ],
)
def test_invalid_apply_configurations_are_bad_requests(config: Any, message: str) -> None:
    err = conflict_of(lambda: apply(None, config, "m"))

    assert (err.code, err.message) == (400, message)


# ---------------------------------------------------------------------------
# Field sets and FieldsV1


PORT_80_TCP = ("k", (("containerPort", ("#", 80)), ("protocol", ("s", "TCP"))))
NGINX = ("k", (("name", ("s", "nginx")),))


@pytest.mark.parametrize(
    ("paths", "encoded"),
    [
        pytest.param(
            [
                (("f", "spec"), ("f", "containers"), NGINX),
                (("f", "spec"), ("f", "containers"), NGINX, ("f", "ports"), PORT_80_TCP),
                (
                    ("f", "spec"),
                    ("f", "containers"),
                    NGINX,
                    ("f", "ports"),
                    PORT_80_TCP,
                    ("f", "containerPort"),
                ),
            ],
            {
                "f:spec": {
                    "f:containers": {
                        'k:{"name":"nginx"}': {
                            ".": {},
                            "f:ports": {
                                'k:{"containerPort":80,"protocol":"TCP"}': {
                                    ".": {},
                                    "f:containerPort": {},
                                }
                            },
                        }
                    }
                }
            },
            id="multi-key-list-items",
        ),
        pytest.param(
            [
                (("f", "metadata"), ("f", "finalizers"), ("v", ("s", "b.io/x"))),
                (("f", "metadata"), ("f", "finalizers"), ("v", ("s", "a.io/<y>"))),
            ],
            {"f:metadata": {"f:finalizers": {'v:"a.io/\\u003cy\\u003e"': {}, 'v:"b.io/x"': {}}}},
            id="set-items-html-escaped-like-go",
        ),
        pytest.param(
            [(("f", "b"),), (("f", "a"), ("i", 1)), (("f", "a"),), (("f", "a"), ("i", 0))],
            {"f:a": {".": {}, "i:0": {}, "i:1": {}}, "f:b": {}},
            id="member-and-parent-indexes",
        ),
    ],
)
def test_fields_v1_encoding_round_trips(paths: list[Any], encoded: dict[str, Any]) -> None:
    fs = applying.FieldSet(paths)

    out = applying.encode_fields_v1(fs)

    assert json.dumps(out) == json.dumps(encoded)
    assert applying.decode_fields_v1(out) == fs


def test_fieldset_of_keys_ports_with_defaulted_protocol_and_sets_by_value() -> None:
    obj = deployment()
    obj["metadata"]["finalizers"] = ["example.com/f"]

    paths = [applying.format_path(p) for p in applying.fieldset_of(obj, DEPLOYMENT).paths()]

    assert '.metadata.finalizers[="example.com/f"]' in paths
    assert (
        '.spec.template.spec.containers[name="nginx"].ports[containerPort=80,protocol="TCP"]'
        in paths
    )
    assert not any(p in paths for p in (".apiVersion", ".kind", ".metadata.name"))


def test_decoding_ignores_unknown_element_kinds_and_rejects_malformed_keys() -> None:
    assert applying.decode_fields_v1({"x:future": {}, "f:a": {}}) == applying.FieldSet(
        [(("f", "a"),)]
    )
    with pytest.raises(ValueError):
        applying.decode_fields_v1({"k:{not json": {}})


# --- field sets are shared, never changed once built --------------------------------


def _set(*paths: tuple[str, ...]) -> applying.FieldSet:
    return applying.FieldSet(tuple(("f", p) for p in path) for path in paths)


def test_a_difference_that_removes_nothing_is_the_set_itself() -> None:
    fs = _set(("spec", "replicas"), ("metadata", "labels", "app"))
    assert fs.difference(_set(("status", "phase"))) is fs
    smaller = fs.difference(_set(("spec", "replicas")))
    assert smaller is not fs
    assert list(smaller.paths()) == [(("f", "metadata"), ("f", "labels"), ("f", "app"))]
    # The operand is untouched.
    assert fs.has((("f", "spec"), ("f", "replicas")))


def test_a_union_with_an_empty_set_is_the_other_set() -> None:
    fs = _set(("spec", "replicas"))
    assert fs.union(applying.FieldSet()) is fs
    assert applying.FieldSet().union(fs) is fs


def test_top_level_filters_keep_what_the_per_path_filter_keeps() -> None:
    fs = _set(
        ("status", "phase"),
        ("status", "conditions"),
        ("spec", "replicas"),
        ("metadata", "labels", "app"),
    ).union(_set(("status",)))
    status = ("f", "status")
    for inside in (True, False):
        fast = fs.filtered(applying._TopLevel(status, inside=inside))
        slow = fs.filtered(lambda path, inside=inside: (path[0] == status) is inside)
        assert fast == slow
        assert applying.encode_fields_v1(fast) == applying.encode_fields_v1(slow)


def test_field_sets_decoded_from_equal_json_are_one_object() -> None:
    raw = {"f:spec": {"f:replicas": {}}, "f:metadata": {"f:labels": {".": {}, "f:app": {}}}}
    first = applying.decode_fields_v1(raw)
    again = applying.decode_fields_v1(json.loads(json.dumps(raw)))
    assert first is again
    assert applying.encode_fields_v1(first) == applying.encode_fields_v1(
        applying.FieldSet(first.paths())
    )


def event(name: str, message: str, **extra: Any) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": name, "namespace": "default"},
        "involvedObject": {"kind": "Pod", "name": name.split(".")[0], "uid": f"uid-{name}"},
        "reason": "Started",
        "message": message,
        "count": 1,
        **extra,
    }


def test_named_objects_of_one_shape_own_the_same_fields_whatever_their_values() -> None:
    schema = schemas.schema_for("", "v1", "Event")

    def fields_of(obj: dict[str, Any], manager: str = "kubelet", now: str = T0) -> Any:
        [entry] = applying.record_update(None, obj, manager=manager, schema=schema, now=now)[
            "metadata"
        ]["managedFields"]
        return entry

    first = fields_of(event("a.1", "Started container a"))
    second = fields_of(event("b.2", "Started container b"), now=T1)
    # another key is another field set; so is an empty map where there was content
    more = fields_of(event("c.3", "x", source={"component": "kubelet"}))
    labelled, unlabelled = (
        event("d.4", "x"),
        event("e.5", "x"),
    )
    labelled["metadata"]["labels"] = {"app": "web"}
    unlabelled["metadata"]["labels"] = {}
    other_manager = fields_of(event("f.6", "x"), manager="scheduler")

    assert first["fieldsV1"] == second["fieldsV1"] and second["time"] == T1
    assert "f:source" in more["fieldsV1"] and "f:source" not in first["fieldsV1"]
    assert fields_of(labelled)["fieldsV1"]["f:metadata"]["f:labels"] == {".": {}, "f:app": {}}
    assert fields_of(unlabelled)["fieldsV1"]["f:metadata"]["f:labels"] == {}
    assert other_manager["manager"] == "scheduler"
    assert other_manager["fieldsV1"] == first["fieldsV1"]


def test_a_remembered_field_set_is_the_one_the_comparison_finds() -> None:
    schema = schemas.schema_for("", "v1", "Event")
    shapes = [
        event("a.1", "m"),
        event("b.2", "m", count=None),
        event("c.3", "m", source={}),
        event("d.4", "m", source={"component": "kubelet", "host": "h"}),
        event("e.5", "m", series={"count": 2, "lastObservedTime": T0}),
    ]
    remembered = [
        applying.record_update(None, o, manager="k", schema=schema, now=T0) for o in shapes * 2
    ]
    for obj, first, again in zip(shapes, remembered[:5], remembered[5:], strict=True):
        applying._TEMPLATED._entries.clear()
        fresh = applying.record_update(None, obj, manager="k", schema=schema, now=T0)
        assert first == again == fresh
