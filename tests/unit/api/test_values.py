"""JSON values: fast copies that stay exact, and equality that knows booleans."""

from __future__ import annotations

import datetime
from typing import Any

from nodeless.api import values

POD: dict[str, Any] = {
    "metadata": {"name": "p", "labels": {"a": "b"}, "annotations": {}},
    "spec": {"containers": [{"name": "c", "ports": [{"containerPort": 80}]}], "x": 1.5},
    "status": {"ready": True, "restartCount": 0, "message": None},
}


def test_a_clone_is_equal_and_shares_nothing() -> None:
    copied = values.clone(POD)
    assert copied == POD
    copied["spec"]["containers"][0]["ports"].append({"containerPort": 81})
    copied["metadata"]["labels"]["a"] = "changed"
    assert POD["spec"]["containers"][0]["ports"] == [{"containerPort": 80}]
    assert POD["metadata"]["labels"] == {"a": "b"}


def test_values_json_cannot_hold_are_copied_without_changing_type() -> None:
    when = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    odd: dict[str, Any] = {"when": when, "big": 2**70, "pair": (1, 2)}
    copied = values.clone(odd)
    assert copied == odd
    assert copied["when"] is not None and isinstance(copied["when"], datetime.datetime)
    assert copied["big"] == 2**70
    assert copied["pair"] == (1, 2)


def test_booleans_are_not_numbers() -> None:
    assert not values.equal({"a": True}, {"a": 1})
    assert not values.equal([0], [False])
    assert values.equal({"a": 1}, {"a": 1.0})
    assert values.equal({"a": 1, "b": 2}, {"b": 2, "a": 1})


def test_identical_is_a_safe_shortcut_never_a_false_yes() -> None:
    assert values.identical(POD, values.clone(POD))
    assert not values.identical({"a": True}, {"a": 1})
    assert not values.identical({"a": 1}, {"a": 2})
    # Equal but spelled differently: "no", and the caller compares fully.
    assert not values.identical({"a": 1, "b": 2}, {"b": 2, "a": 1})
    assert values.equal({"a": 1, "b": 2}, {"b": 2, "a": 1})


def test_values_of_one_shape_differ_only_in_their_scalars_values() -> None:
    a = {"metadata": {"name": "a"}, "count": 1, "source": {}}
    b = {"metadata": {"name": "b"}, "count": 7, "source": {}}

    assert values.shape(a) == values.shape(b)
    assert values.shape(a) != values.shape({**a, "count": "1"})  # another type
    assert values.shape(a) != values.shape({**a, "count": True})  # bool is not int here
    assert values.shape(a) != values.shape({**a, "source": {"host": "h"}})  # another key
    assert values.shape(a) != values.shape({**a, "count": None})


def test_values_with_lists_or_many_fields_have_no_shape() -> None:
    assert values.shape({"items": []}) is None
    assert values.shape({"a": {"b": [1]}}) is None
    assert values.shape({str(i): i for i in range(10)}, limit=10) is not None
    assert values.shape({"m": {str(i): i for i in range(10)}}, limit=10) is None
