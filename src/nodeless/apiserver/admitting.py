"""The admission chain: checks that run on every create and update after
defaulting and before the object is stored.

Today one plug-in: serverless admission, which refuses what an elastic
container instance cannot do (privileged, host namespaces, DaemonSets, ...)
when the object is written, not later when its pods fail.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

from nodeless.api import kinds
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
