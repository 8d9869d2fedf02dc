"""JSON patch (RFC 6902), merge patch (RFC 7386) and PATCH content types."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from nodeless.api import errors, patching

# --- content types ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "patch_type"),
    [
        ("application/json-patch+json", "json"),
        ("application/merge-patch+json", "merge"),
        ("application/strategic-merge-patch+json", "strategic"),
        ("application/apply-patch+yaml", "apply"),
        ("application/merge-patch+json; charset=utf-8", "merge"),
        (" Application/JSON-Patch+JSON ", "json"),
    ],
)
def test_patch_content_types_are_recognised(content_type: str, patch_type: str) -> None:
    assert patching.apply_patch_type(content_type) == patch_type


@pytest.mark.parametrize("content_type", ["application/json", "text/plain", "", "application/yaml"])
def test_other_content_types_are_unsupported_media_types(content_type: str) -> None:
    with pytest.raises(errors.StatusError) as caught:
        patching.apply_patch_type(content_type)
    assert caught.value.code == 415
    assert caught.value.reason == "UnsupportedMediaType"


# --- RFC 6902 appendix A ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("doc", "ops", "expected"),
    [
        pytest.param(
            {"foo": "bar"},
            [{"op": "add", "path": "/baz", "value": "qux"}],
            {"baz": "qux", "foo": "bar"},
            id="A.1 adding an object member",
        ),
        pytest.param(
            {"foo": ["bar", "baz"]},
            [{"op": "add", "path": "/foo/1", "value": "qux"}],
            {"foo": ["bar", "qux", "baz"]},
            id="A.2 adding an array element",
        ),
        pytest.param(
            {"baz": "qux", "foo": "bar"},
            [{"op": "remove", "path": "/baz"}],
            {"foo": "bar"},
            id="A.3 removing an object member",
        ),
        pytest.param(
            {"foo": ["bar", "qux", "baz"]},
            [{"op": "remove", "path": "/foo/1"}],
            {"foo": ["bar", "baz"]},
            id="A.4 removing an array element",
        ),
        pytest.param(
            {"baz": "qux", "foo": "bar"},
            [{"op": "replace", "path": "/baz", "value": "boo"}],
            {"baz": "boo", "foo": "bar"},
            id="A.5 replacing a value",
        ),
        pytest.param(
            {"foo": {"bar": "baz", "waldo": "fred"}, "qux": {"corge": "grault"}},
            [{"op": "move", "from": "/foo/waldo", "path": "/qux/thud"}],
            {"foo": {"bar": "baz"}, "qux": {"corge": "grault", "thud": "fred"}},
            id="A.6 moving a value",
        ),
        pytest.param(
            {"foo": ["all", "grass", "cows", "eat"]},
            [{"op": "move", "from": "/foo/1", "path": "/foo/3"}],
            {"foo": ["all", "cows", "eat", "grass"]},
            id="A.7 moving an array element",
        ),
        pytest.param(
            {"baz": "qux", "foo": ["a", 2, "c"]},
            [
                {"op": "test", "path": "/baz", "value": "qux"},
                {"op": "test", "path": "/foo/1", "value": 2},
            ],
            {"baz": "qux", "foo": ["a", 2, "c"]},
            id="A.8 testing a value: success",
        ),
        pytest.param(
            {"foo": "bar"},
            [{"op": "add", "path": "/child", "value": {"grandchild": {}}}],
            {"foo": "bar", "child": {"grandchild": {}}},
            id="A.10 adding a nested member object",
        ),
        pytest.param(
            {"foo": "bar"},
            [{"op": "add", "path": "/baz", "value": "qux", "xyz": 123}],
            {"foo": "bar", "baz": "qux"},
            id="A.11 ignoring unrecognized elements",
        ),
        pytest.param(
            {"/": 9, "~1": 10},
            [{"op": "test", "path": "/~01", "value": 10}],
            {"/": 9, "~1": 10},
            id="A.14 ~ escape ordering",
        ),
        pytest.param(
            {"foo": ["bar"]},
            [{"op": "add", "path": "/foo/-", "value": ["abc", "def"]}],
            {"foo": ["bar", ["abc", "def"]]},
            id="A.16 adding an array value",
        ),
        pytest.param(
            {"a": {"b": 1}},
            [{"op": "copy", "from": "/a", "path": "/c"}],
            {"a": {"b": 1}, "c": {"b": 1}},
            id="copy",
        ),
        pytest.param(
            {"a/b": 1, "m~n": 2},
            [
                {"op": "replace", "path": "/a~1b", "value": 3},
                {"op": "remove", "path": "/m~0n"},
            ],
            {"a/b": 3},
            id="pointer escapes",
        ),
        pytest.param(
            {"a": [1, 2]},
            [{"op": "add", "path": "/a/2", "value": 3}],
            {"a": [1, 2, 3]},
            id="add at index equal to length appends",
        ),
        pytest.param(
            {"a": 1},
            [{"op": "replace", "path": "", "value": {"b": 2}}],
            {"b": 2},
            id="replace the whole document",
        ),
        pytest.param(
            {"metadata": {"labels": {"a": "1"}}},
            [
                {"op": "test", "path": "/metadata/labels/a", "value": "1"},
                {"op": "add", "path": "/metadata/labels/b", "value": "2"},
                {"op": "remove", "path": "/metadata/labels/a"},
            ],
            {"metadata": {"labels": {"b": "2"}}},
            id="guarded label edit",
        ),
        pytest.param(
            {"a": 1.0},
            [{"op": "test", "path": "/a", "value": 1}],
            {"a": 1.0},
            id="numbers compare by value",
        ),
    ],
)
def test_json_patch_applies_rfc6902_operations(
    doc: dict[str, Any], ops: list[Any], expected: dict[str, Any]
) -> None:
    before = copy.deepcopy(doc)
    assert patching.json_patch(doc, ops) == expected
    assert doc == before


@pytest.mark.parametrize(
    ("doc", "ops", "detail"),
    [
        pytest.param(
            {"baz": "qux"},
            [{"op": "test", "path": "/baz", "value": "bar"}],
            "testing value /baz failed: test failed",
            id="A.9 testing a value: error",
        ),
        pytest.param(
            {"foo": "bar"},
            [{"op": "add", "path": "/baz/bat", "value": "qux"}],
            'add operation does not apply: doc is missing path: "/baz/bat": missing value',
            id="A.12 adding to a nonexistent target",
        ),
        pytest.param(
            {"/": 9, "~1": 10},
            [{"op": "test", "path": "/~01", "value": "10"}],
            "testing value /~01 failed: test failed",
            id="A.15 comparing strings and numbers",
        ),
        pytest.param(
            {"a": 1},
            [{"op": "test", "path": "/a", "value": True}],
            "testing value /a failed: test failed",
            id="booleans are not numbers",
        ),
        pytest.param(
            {"metadata": {}},
            [{"op": "remove", "path": "/metadata/labels/foo"}],
            'remove operation does not apply: doc is missing path: "/metadata/labels/foo": '
            "missing value",
            id="remove under a missing path",
        ),
        pytest.param(
            {"a": {}},
            [{"op": "remove", "path": "/a/b"}],
            "error in remove for path: '/a/b': Unable to remove nonexistent key: b: missing value",
            id="remove a missing key",
        ),
        pytest.param(
            {"a": {}},
            [{"op": "replace", "path": "/a/b", "value": 1}],
            "replace operation does not apply: doc is missing key: /a/b: missing value",
            id="replace a missing key",
        ),
        pytest.param(
            {"a": [1]},
            [{"op": "add", "path": "/a/5", "value": 1}],
            "error in add for path: '/a/5': Unable to access invalid index: 5: "
            "invalid index referenced",
            id="add beyond the end",
        ),
        pytest.param(
            {"a": [1]},
            [{"op": "remove", "path": "/a/1"}],
            "error in remove for path: '/a/1': Unable to access invalid index: 1: "
            "invalid index referenced",
            id="remove beyond the end",
        ),
        pytest.param(
            {"a": [1]},
            [{"op": "remove", "path": "/a/-"}],
            "error in remove for path: '/a/-': value was not a proper array index: '-'",
            id="dash is only for add",
        ),
        pytest.param(
            {"a": [1, 2]},
            [{"op": "replace", "path": "/a/01", "value": 1}],
            "error in replace for path: '/a/01': value was not a proper array index: '01'",
            id="no leading zeros",
        ),
        pytest.param(
            {"a": [1, 2]},
            [{"op": "remove", "path": "/a/-1"}],
            "error in remove for path: '/a/-1': value was not a proper array index: '-1'",
            id="no negative indices",
        ),
        pytest.param(
            {"a": 1},
            [{"op": "frobnicate", "path": "/a"}],
            "Unexpected kind: frobnicate",
            id="unknown operation",
        ),
        pytest.param(
            {"a": 1},
            [{"op": "add", "value": 1}],
            "add operation failed to decode path: missing value",
            id="missing path",
        ),
        pytest.param(
            {"a": 1},
            [{"op": "add", "path": "/b"}],
            "add operation, missing value field: missing value",
            id="missing value",
        ),
        pytest.param(
            {"a": 1},
            [{"op": "move", "path": "/b"}],
            "move operation failed to decode from: missing value",
            id="missing from",
        ),
        pytest.param(
            {"a": {"b": 1}},
            [{"op": "move", "from": "/a", "path": "/a/b/c"}],
            "move operation does not apply: cannot move /a into its own child /a/b/c",
            id="move into own child",
        ),
        pytest.param(
            {"a": 1},
            [{"op": "replace", "path": "", "value": [1]}],
            "the patched document is not a JSON object",
            id="result must stay an object",
        ),
    ],
)
def test_json_patch_application_failures_are_422(
    doc: dict[str, Any], ops: list[Any], detail: str
) -> None:
    with pytest.raises(errors.StatusError) as caught:
        patching.json_patch(doc, ops)
    assert caught.value.code == 422
    assert caught.value.reason == "Invalid"
    assert caught.value.message == "the server rejected our request due to an error in our request"
    assert [c.to_dict() for c in caught.value.causes] == [
        {"reason": "UnexpectedServerResponse", "message": detail}
    ]


@pytest.mark.parametrize("ops", [{"op": "add"}, "x", [1], [["op"]], None])
def test_json_patch_that_is_not_a_list_of_objects_is_a_bad_request(ops: Any) -> None:
    with pytest.raises(errors.StatusError) as caught:
        patching.json_patch({}, ops)
    assert caught.value.code == 400


def test_json_patch_failure_leaves_the_input_untouched() -> None:
    doc = {"a": [1, 2], "b": {"c": 1}}
    with pytest.raises(errors.StatusError):
        patching.json_patch(
            doc,
            [
                {"op": "add", "path": "/a/-", "value": 3},
                {"op": "remove", "path": "/b/c"},
                {"op": "test", "path": "/a/0", "value": 9},
            ],
        )
    assert doc == {"a": [1, 2], "b": {"c": 1}}


def test_json_patch_result_does_not_alias_operation_values() -> None:
    value = {"x": [1]}
    result = patching.json_patch({}, [{"op": "add", "path": "/v", "value": value}])
    result["v"]["x"].append(2)
    assert value == {"x": [1]}


def test_json_patch_limits_the_number_of_operations() -> None:
    ops = [{"op": "test", "path": "", "value": {}}] * (patching.MAX_JSON_PATCH_OPERATIONS + 1)
    with pytest.raises(errors.StatusError) as caught:
        patching.json_patch({}, ops)
    assert caught.value.code == 413


# --- RFC 7386 appendix A -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "patch", "expected"),
    [
        ({"a": "b"}, {"a": "c"}, {"a": "c"}),
        ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
        ({"a": "b"}, {"a": None}, {}),
        ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
        ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
        ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
        ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
        ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
        ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
        ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
        # Kubernetes usage: labels set and unset, lists replaced wholesale.
        (
            {"metadata": {"labels": {"a": "1", "b": "2"}}},
            {"metadata": {"labels": {"a": None, "c": "3"}}},
            {"metadata": {"labels": {"b": "2", "c": "3"}}},
        ),
        (
            {"spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b"}]}},
            {"spec": {"containers": [{"name": "a", "image": "y"}]}},
            {"spec": {"containers": [{"name": "a", "image": "y"}]}},
        ),
    ],
)
def test_merge_patch_follows_rfc7386(
    target: dict[str, Any], patch: dict[str, Any], expected: dict[str, Any]
) -> None:
    before, patch_before = copy.deepcopy(target), copy.deepcopy(patch)
    assert patching.merge_patch(target, patch) == expected
    assert target == before
    assert patch == patch_before


@pytest.mark.parametrize("patch", [["c"], "bar", None, 1])
def test_merge_patch_must_be_an_object(patch: Any) -> None:
    with pytest.raises(errors.StatusError) as caught:
        patching.merge_patch({"a": "b"}, patch)
    assert caught.value.code == 400


def test_merge_patch_result_shares_nothing_with_its_inputs() -> None:
    target = {"keep": {"deep": [1]}}
    patch = {"new": {"deep": [2]}}
    result = patching.merge_patch(target, patch)
    result["keep"]["deep"].append(9)
    result["new"]["deep"].append(9)
    assert target == {"keep": {"deep": [1]}}
    assert patch == {"new": {"deep": [2]}}
