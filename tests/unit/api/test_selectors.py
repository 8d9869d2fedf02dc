"""Label and field selectors behave as k8s.io/apimachinery's labels and fields packages."""

from __future__ import annotations

from typing import Any

import pytest

from nodeless.api import errors, selectors

# --- label selector grammar ----------------------------------------------------

LABELS = {"app": "web", "tier": "frontend", "version": "3", "example.com/team": "a"}


@pytest.mark.parametrize(
    ("text", "canonical", "matches"),
    [
        ("", "", True),
        ("   ", "", True),
        ("app=web", "app=web", True),
        ("app==web", "app==web", True),
        ("app=db", "app=db", False),
        ("app!=db", "app!=db", True),
        ("app!=web", "app!=web", False),
        ("missing!=x", "missing!=x", True),  # != matches objects without the label
        ("app in (web,db)", "app in (db,web)", True),
        ("app in (db)", "app in (db)", False),
        ("app notin (db)", "app notin (db)", True),
        ("app notin (web)", "app notin (web)", False),
        ("missing notin (x)", "missing notin (x)", True),  # so does notin
        ("missing in (x)", "missing in (x)", False),
        ("app", "app", True),
        ("missing", "missing", False),
        ("!missing", "!missing", True),
        ("!app", "!app", False),
        ("app=web,tier=frontend", "app=web,tier=frontend", True),
        ("tier=frontend,app=web", "app=web,tier=frontend", True),  # sorted by key
        ("app=web,tier=backend", "app=web,tier=backend", False),
        ("  app  =  web ,  tier in ( frontend , x )  ", "app=web,tier in (frontend,x)", True),
        ("app=web,\t!missing,tier", "app=web,!missing,tier", True),
        ("example.com/team=a", "example.com/team=a", True),
        ("missing=", "missing=", False),
        ("app in (web,,db)", "app in (,db,web)", True),
        ("missing notin ()", "missing notin ()", True),
        ("in in (in)", "in in (in)", False),  # keywords are fine as key and value
        ("version>2", "version>2", True),
        ("version<3", "version<3", False),
    ],
)
def test_label_selector_grammar(text: str, canonical: str, matches: bool) -> None:
    selector = selectors.parse_label_selector(text)
    assert str(selector) == canonical
    assert selector.matches(LABELS) is matches
    # The canonical text parses back to the same selector.
    assert selectors.parse_label_selector(canonical) == selector


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a b", "unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt"),
        ("a=b,", "found '', expected: identifier after ','"),
        ("a,,b", "found ',', expected: identifier after ','"),
        (",a", "found ',', expected: !, identifier, or 'end of string'"),
        ("(", "found '(', expected: !, identifier, or 'end of string'"),
        ("a in x", "unable to parse requirement: found 'x' expected: '('"),
        ("a in (b", "unable to parse requirement: found '', expected: ',' or ')'"),
        ("a in (b c)", "unable to parse requirement: found 'c', expected: ',' or ')'"),
        ("a=(b)", "unable to parse requirement: found '(', expected: identifier"),
        ("a=b c", "found 'c', expected: ',' or 'end of string'"),
        ("!a=b", "found '=', expected: ',' or 'end of string'"),
        ("!", "unable to parse requirement: found '', expected: identifier"),
        (
            "a<x",
            'unable to parse requirement: values[0]: Invalid value: "x": '
            "for 'Gt', 'Lt' operators, the value must be an integer",
        ),
        (
            "foo_",
            'unable to parse requirement: <nil>: Invalid value: "foo_": name part must consist '
            "of alphanumeric characters, '-', '_' or '.', and must start and end with an "
            "alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for "
            "validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')",
        ),
        (
            "app=web_",
            'unable to parse requirement: values[0][app]: Invalid value: "web_": a valid label '
            "must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and "
            "must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  "
            "or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?"
            "[A-Za-z0-9])?')",
        ),
    ],
)
def test_label_selector_syntax_errors_are_bad_requests(text: str, message: str) -> None:
    with pytest.raises(errors.StatusError) as caught:
        selectors.parse_label_selector(text)
    assert caught.value.code == 400
    assert caught.value.reason == "BadRequest"
    assert caught.value.message == message


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("Example.com/a=b", "prefix part a lowercase RFC 1123 subdomain"),
        ("/a", "prefix part must be non-empty"),
        ("a/", "name part must be non-empty"),
        ("a/b/c", "a qualified name must consist of"),
        ("a" * 64, "name part must be no more than 63 characters"),
        ("a=" + "b" * 64, "must be no more than 63 characters"),
        ("a in (ok,-bad)", 'values[0][a]: Invalid value: "-bad"'),
    ],
)
def test_label_keys_and_values_are_validated(text: str, fragment: str) -> None:
    with pytest.raises(errors.StatusError) as caught:
        selectors.parse_label_selector(text)
    assert caught.value.code == 400
    assert fragment in caught.value.message


def test_empty_label_selector_matches_everything_including_unlabelled_objects() -> None:
    selector = selectors.parse_label_selector("")
    assert selector.empty
    assert selector.matches({})
    assert selector.matches(None)


def test_label_selector_pins_exact_values_for_index_lookups() -> None:
    selector = selectors.parse_label_selector("app=web,tier in (a),x in (b,c),y!=z")
    assert selector.exact_value("app") == "web"
    assert selector.exact_value("tier") == "a"
    assert selector.exact_value("x") is None
    assert selector.exact_value("y") is None
    assert selector.exact_value("absent") is None


# --- metav1.LabelSelector ---------------------------------------------------------


@pytest.mark.parametrize(
    ("selector", "canonical", "labels", "matches"),
    [
        ({}, "", {}, True),
        ({"matchLabels": {"app": "web"}}, "app=web", {"app": "web", "x": "y"}, True),
        ({"matchLabels": {"app": "web"}}, "app=web", {"app": "db"}, False),
        (
            {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["b", "a"]}]},
            "tier in (a,b)",
            {"tier": "a"},
            True,
        ),
        (
            {"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["a"]}]},
            "tier notin (a)",
            {},
            True,
        ),
        (
            {"matchExpressions": [{"key": "tier", "operator": "Exists"}]},
            "tier",
            {"tier": ""},
            True,
        ),
        (
            {"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]},
            "!tier",
            {"tier": ""},
            False,
        ),
        (
            {
                "matchLabels": {"b": "1"},
                "matchExpressions": [{"key": "a", "operator": "Exists"}],
            },
            "a,b=1",
            {"a": "x", "b": "1"},
            True,
        ),
    ],
)
def test_label_selector_from_object(
    selector: dict[str, Any], canonical: str, labels: dict[str, str], matches: bool
) -> None:
    parsed = selectors.label_selector_from_object(selector)
    assert str(parsed) == canonical
    assert parsed.matches(labels) is matches


def test_nil_label_selector_object_matches_nothing() -> None:
    parsed = selectors.label_selector_from_object(None)
    assert not parsed.empty
    assert not parsed.matches({})
    assert not parsed.matches({"app": "web"})


@pytest.mark.parametrize(
    ("selector", "fragment"),
    [
        (
            {"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]},
            '"Gt" is not a valid label selector operator',
        ),
        (
            {"matchExpressions": [{"key": "a", "operator": "In", "values": []}]},
            "for 'in', 'notin' operators, values set can't be empty",
        ),
        (
            {"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]},
            "values set must be empty for exists and does not exist",
        ),
        ({"matchLabels": {"bad key": "x"}}, 'key: Invalid value: "bad key"'),
    ],
)
def test_invalid_label_selector_objects_are_rejected(
    selector: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(errors.StatusError) as caught:
        selectors.label_selector_from_object(selector)
    assert caught.value.code == 400
    assert fragment in caught.value.message


# --- field selectors ------------------------------------------------------------------

POD_FIELDS = selectors.selectable_fields("", "Pod")


@pytest.mark.parametrize(
    ("text", "fields", "canonical", "matches"),
    [
        ("", {}, "", True),
        ("metadata.name=a", {"metadata.name": "a"}, "metadata.name=a", True),
        ("metadata.name==a", {"metadata.name": "a"}, "metadata.name=a", True),
        ("metadata.name!=a", {"metadata.name": "a"}, "metadata.name!=a", False),
        ("metadata.name!=a", {}, "metadata.name!=a", True),
        ("spec.nodeName=", {"spec.nodeName": ""}, "spec.nodeName=", True),
        ("spec.nodeName=", {}, "spec.nodeName=", True),  # missing is ""
        ("spec.nodeName=", {"spec.nodeName": "n1"}, "spec.nodeName=", False),
        (
            "status.phase!=Failed,status.phase!=Succeeded",
            {"status.phase": "Running"},
            "status.phase!=Failed,status.phase!=Succeeded",
            True,
        ),
        (
            "status.phase=Running,metadata.name=a",
            {"status.phase": "Running", "metadata.name": "b"},
            "metadata.name=a,status.phase=Running",  # terms are sorted
            False,
        ),
        ("metadata.name=a\\,b", {"metadata.name": "a,b"}, "metadata.name=a\\,b", True),
        ("metadata.name=a\\=b", {"metadata.name": "a=b"}, "metadata.name=a\\=b", True),
        ("metadata.name=a\\\\b", {"metadata.name": "a\\b"}, "metadata.name=a\\\\b", True),
        ("metadata.name=a,,", {"metadata.name": "a"}, "metadata.name=a", True),
    ],
)
def test_field_selector_grammar(
    text: str, fields: dict[str, str], canonical: str, matches: bool
) -> None:
    selector = selectors.parse_field_selector(text, POD_FIELDS)
    assert str(selector) == canonical
    assert selector.matches(fields) is matches
    assert selectors.parse_field_selector(canonical, POD_FIELDS) == selector


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("foo=bar", "field label not supported: foo"),
        ("metadata.name=a,spec.bogus!=b", "field label not supported: spec.bogus"),
        ("metadata.name", "invalid selector: 'metadata.name'; can't understand 'metadata.name'"),
        ("metadata.name=a\\b", "invalid field selector: invalid escape sequence: \\b"),
        ("metadata.name=a\\", "invalid field selector: invalid escape sequence: \\"),
        ("metadata.name=a=b", "invalid field selector: unescaped character in value: 61"),
    ],
)
def test_field_selector_errors_are_bad_requests(text: str, message: str) -> None:
    with pytest.raises(errors.StatusError) as caught:
        selectors.parse_field_selector(text, POD_FIELDS)
    assert caught.value.code == 400
    assert caught.value.message == message


def test_field_selector_exposes_exact_values_to_narrow_lookups() -> None:
    selector = selectors.parse_field_selector("metadata.namespace=ns,metadata.name!=x", POD_FIELDS)
    assert selector.exact_value("metadata.namespace") == "ns"
    assert selector.exact_value("metadata.name") is None
    assert selectors.parse_field_selector("", POD_FIELDS).empty


def test_escaped_values_round_trip() -> None:
    assert selectors.escape_field_value("a,b=c\\d") == "a\\,b\\=c\\\\d"


# --- selectable field values ------------------------------------------------------------


def test_pod_field_values_default_missing_fields_to_empty_and_false() -> None:
    pod = {"metadata": {"name": "p", "namespace": "ns"}, "spec": {}, "status": {}}
    assert selectors.field_values("", "Pod", pod) == {
        "metadata.name": "p",
        "metadata.namespace": "ns",
        "spec.nodeName": "",
        "spec.restartPolicy": "",
        "spec.schedulerName": "",
        "spec.serviceAccountName": "",
        "spec.hostNetwork": "false",
        "status.phase": "",
        "status.podIP": "",
        "status.nominatedNodeName": "",
    }


def test_pod_field_values_read_spec_and_status() -> None:
    pod = {
        "metadata": {"name": "p", "namespace": "ns"},
        "spec": {
            "nodeName": "n1",
            "restartPolicy": "Always",
            "schedulerName": "default-scheduler",
            "serviceAccountName": "sa",
            "hostNetwork": True,
        },
        "status": {"phase": "Running", "podIP": "10.0.0.1", "podIPs": [{"ip": "10.0.0.2"}]},
    }
    values = selectors.field_values("", "Pod", pod)
    assert values["spec.nodeName"] == "n1"
    assert values["spec.hostNetwork"] == "true"
    assert values["status.phase"] == "Running"
    assert values["status.podIP"] == "10.0.0.2"  # upstream reads podIPs[0]
    assert set(values) == POD_FIELDS


def test_unscheduled_pods_are_selected_by_empty_node_name() -> None:
    selector = selectors.parse_field_selector("spec.nodeName=", POD_FIELDS)
    unscheduled = {"metadata": {"name": "a"}, "spec": {}}
    scheduled = {"metadata": {"name": "b"}, "spec": {"nodeName": "n"}}
    assert selector.matches(selectors.field_values("", "Pod", unscheduled))
    assert not selector.matches(selectors.field_values("", "Pod", scheduled))


@pytest.mark.parametrize(
    ("group", "kind", "obj", "expected"),
    [
        (
            "",
            "Event",
            {
                "metadata": {"name": "e", "namespace": "ns"},
                "involvedObject": {"kind": "Pod", "name": "p", "uid": "u", "apiVersion": "v1"},
                "reason": "Scheduled",
                "reportingComponent": "sched",
                "source": {"component": "default-scheduler"},
                "type": "Normal",
            },
            {
                "involvedObject.kind": "Pod",
                "involvedObject.name": "p",
                "involvedObject.namespace": "",
                "involvedObject.uid": "u",
                "involvedObject.apiVersion": "v1",
                "involvedObject.resourceVersion": "",
                "involvedObject.fieldPath": "",
                "reason": "Scheduled",
                "reportingComponent": "sched",
                "source": "default-scheduler",
                "type": "Normal",
            },
        ),
        (
            "events.k8s.io",
            "Event",
            {
                "metadata": {"name": "e", "namespace": "ns"},
                "regarding": {"kind": "Pod", "name": "p", "namespace": "ns"},
                "reason": "Pulled",
                "reportingController": "kubelet",
                "type": "Normal",
            },
            {
                "regarding.kind": "Pod",
                "regarding.name": "p",
                "regarding.namespace": "ns",
                "regarding.uid": "",
                "reason": "Pulled",
                "reportingController": "kubelet",
                "type": "Normal",
            },
        ),
        ("", "Secret", {"metadata": {"name": "s"}, "type": "Opaque"}, {"type": "Opaque"}),
        (
            "",
            "Namespace",
            {"metadata": {"name": "n"}, "status": {"phase": "Active"}},
            {"status.phase": "Active", "metadata.namespace": ""},
        ),
        ("", "Node", {"metadata": {"name": "n"}}, {"spec.unschedulable": "false"}),
        (
            "",
            "Node",
            {"metadata": {"name": "n"}, "spec": {"unschedulable": True}},
            {"spec.unschedulable": "true"},
        ),
        (
            "apps",
            "ReplicaSet",
            {"metadata": {}, "status": {"replicas": 3}},
            {"status.replicas": "3"},
        ),
        ("", "ReplicationController", {"metadata": {}}, {"status.replicas": "0"}),
        ("batch", "Job", {"metadata": {}, "status": {"succeeded": 2}}, {"status.successful": "2"}),
        (
            "apps",
            "Deployment",
            {"metadata": {"name": "d", "namespace": "x"}},
            {"metadata.name": "d"},
        ),
    ],
)
def test_kind_specific_field_values(
    group: str, kind: str, obj: dict[str, Any], expected: dict[str, str]
) -> None:
    values = selectors.field_values(group, kind, obj)
    assert set(values) == selectors.selectable_fields(group, kind)
    for field, value in expected.items():
        assert values[field] == value


def test_kinds_without_extra_fields_select_only_on_metadata() -> None:
    assert selectors.selectable_fields("apps", "Deployment") == {
        "metadata.name",
        "metadata.namespace",
    }
    with pytest.raises(errors.StatusError, match=r"field label not supported: spec\.replicas"):
        selectors.parse_field_selector(
            "spec.replicas=1", selectors.selectable_fields("apps", "Deployment")
        )
