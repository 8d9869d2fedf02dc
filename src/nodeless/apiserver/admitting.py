"""The admission chain: checks that run on every create and update after
defaulting and before the object is stored.

Two plug-ins: serverless admission, which refuses what an elastic container
instance cannot do (privileged, host namespaces, DaemonSets, ...) when the
object is written, not later when its pods fail; and the checks Knative
Serving's validating webhook makes on its Services and Revisions.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

from nodeless.api import errors, kinds, knativeserving
from nodeless.serverless import admission, catalogue

Admitter = Callable[[kinds.Resource, dict[str, Any], dict[str, Any] | None], None]


def serverless(specs: catalogue.Catalogue, zones: Collection[str]) -> Admitter:
    """An admitter for the serverless rules. On update, only a changed spec is
    checked again, so objects admitted under older rules stay writable."""

    def admit(resource: kinds.Resource, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        if (
            old is not None
            and old.get("spec") == obj.get("spec")
            and _annotations(old) == _annotations(obj)
        ):
            return
        admission.admit(resource.group, resource.kind, obj, specs, zones)

    return admit


def _annotations(obj: dict[str, Any]) -> Any:
    return (obj.get("metadata") or {}).get("annotations")


def knative_serving(
    resource: kinds.Resource, obj: dict[str, Any], old: dict[str, Any] | None
) -> None:
    """Knative's webhook: a Service's template and traffic, a Revision's spec
    (immutable once created). Status writes leave the spec alone and pass."""
    if resource.group != knativeserving.GROUP:
        return
    if (
        old is not None
        and old.get("spec") == obj.get("spec")
        and _annotations(old) == _annotations(obj)
    ):
        return
    if resource.kind == "Service":
        causes = knativeserving.service_problems(obj)
    elif resource.kind == "Revision":
        causes = knativeserving.revision_problems(obj)
        if old is not None:
            causes += knativeserving.immutable_revision_problems(old, obj)
    else:
        return
    if causes:
        name = str((obj.get("metadata") or {}).get("name") or "")
        raise errors.invalid(resource.kind, resource.group, name, causes)
