"""The words every ApiClient shares: resource addresses, object keys, Status
errors rebuilt from the wire, delete options."""

from __future__ import annotations

import pytest

from nodeless.api import errors, kinds
from nodeless.client import clients


@pytest.mark.parametrize("name", ["Deployment", "deployments", "deployment", "deploy"])
def test_a_builtin_resolves_by_kind_plural_singular_or_short_name(name: str) -> None:
    ref = clients.resolve("apps/v1", name)

    assert ref == clients.ResourceRef("apps", "v1", "deployments", True, "Deployment")
    assert ref.api_version == "apps/v1"


def test_core_and_cluster_scoped_resources_resolve() -> None:
    ref = clients.resolve("v1", "Namespace")

    assert (ref.group, ref.version, ref.plural, ref.namespaced) == ("", "v1", "namespaces", False)
    assert str(ref) == "namespaces"


def test_an_unknown_resource_is_a_lookup_error() -> None:
    with pytest.raises(LookupError):
        clients.resolve("example.com/v1", "Widget")


def test_a_custom_registry_resolves_custom_resources() -> None:
    registry = kinds.Registry()
    widget = kinds.Resource("example.com", "v1", "Widget", "widgets", "widget", True)
    registry.replace_custom([widget])

    ref = clients.for_object({"apiVersion": "example.com/v1", "kind": "Widget"}, registry)

    assert ref == clients.ResourceRef("example.com", "v1", "widgets", True, "Widget")
    assert str(ref) == "widgets.example.com"


def test_keys_are_namespace_slash_name_or_just_name() -> None:
    assert clients.key_of({"metadata": {"namespace": "ns", "name": "a"}}) == "ns/a"
    assert clients.key_of({"metadata": {"name": "node-1"}}) == "node-1"
    assert clients.split_key("ns/a") == ("ns", "a")
    assert clients.split_key("node-1") == ("", "node-1")


def test_a_status_body_becomes_the_same_status_error() -> None:
    original = errors.invalid(
        "ConfigMap",
        "",
        "Bad_Name",
        [errors.Cause("FieldValueInvalid", "Invalid value", "metadata.name")],
    )

    rebuilt = clients.status_error(original.to_status())

    assert rebuilt == original
    assert type(rebuilt) is errors.StatusError


def test_a_410_status_becomes_gone() -> None:
    rebuilt = clients.status_error(errors.gone("too old resource version: 1 (5)").to_status())

    assert isinstance(rebuilt, clients.Gone)
    assert (rebuilt.code, rebuilt.reason) == (410, "Expired")
    assert clients.is_gone(errors.gone("plain StatusError from a loopback client"))
    assert not clients.is_gone(errors.not_found("pods", "", "p"))


def test_the_http_code_stands_in_when_the_status_has_none() -> None:
    rebuilt = clients.status_error({"message": "nope"}, 403)

    assert rebuilt.code == 403


def test_delete_options_become_a_delete_options_body() -> None:
    options = clients.DeleteOptions(
        propagation_policy="Foreground",
        grace_period_seconds=0,
        preconditions=clients.Preconditions(uid="u-1", resource_version="7"),
    )

    assert options.to_body() == {
        "kind": "DeleteOptions",
        "apiVersion": "v1",
        "propagationPolicy": "Foreground",
        "gracePeriodSeconds": 0,
        "preconditions": {"uid": "u-1", "resourceVersion": "7"},
    }


def test_whole_object_writes_need_a_namespace_for_namespaced_kinds() -> None:
    configmaps = clients.resolve("v1", "ConfigMap")

    with pytest.raises(ValueError, match="namespace"):
        clients.namespace_of(configmaps, {"metadata": {"name": "a"}})
    assert clients.namespace_of(clients.resolve("v1", "Node"), {"metadata": {"name": "n"}}) == ""
