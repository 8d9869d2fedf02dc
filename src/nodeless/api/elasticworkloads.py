"""ElasticWorkload: the CRDs, the checks, and how replicas are shared out.

Replicas up to ``sourceTarget.max`` stay on the source workload; the rest
spill, in the listed order, into clones of it named ``<source>-unit-<name>``
(each carrying its unit's labels, annotations, nodeSelector and
tolerations) up to each unit's ``max``; a unit without one takes all that
is left. Fewer replicas shrink the units first, last unit first,
so scale-in removes elastic capacity before the source's. The source keeps
at least ``sourceTarget.min`` whenever that many are asked for.

The same kind is served as ``autoscaling.nodeless.dev/v1`` and as Alibaba's
``autoscaling.alibabacloud.com/v1beta1``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Final

import yaml

from nodeless.api import errors

GROUPS: Final = {"autoscaling.nodeless.dev": "v1", "autoscaling.alibabacloud.com": "v1beta1"}
KIND: Final = "ElasticWorkload"
# What a source may be: scalable workloads whose pod template can be cloned.
SOURCE_KINDS: Final = {
    ("apps/v1", "Deployment"): "deployments",
    ("apps/v1", "StatefulSet"): "statefulsets",
    ("apps/v1", "ReplicaSet"): "replicasets",
}
UNIT_LABEL: Final = "elasticworkload.nodeless.dev/unit"
OWNER_LABEL: Final = "elasticworkload.nodeless.dev/name"
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

Obj = dict[str, Any]


@cache
def _crd_documents() -> tuple[str, ...]:
    text = Path(__file__).with_name("elastic-workloads.yaml").read_text()
    return tuple(json.dumps(doc) for doc in yaml.safe_load_all(text) if doc)


def crds() -> list[Obj]:
    return [json.loads(doc) for doc in _crd_documents()]


def clone_name(source: str, unit: str) -> str:
    return f"{source}-unit-{unit}"


@dataclass(frozen=True)
class Share:
    """How many replicas the source and each unit (in order) should run."""

    source: int
    units: tuple[tuple[str, int], ...]
    unplaced: int = 0


def _int(value: Any, default: int | None = None) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def share(spec: Mapping[str, Any]) -> Share:
    """Share ``spec.replicas`` out between the source and the units."""
    total = max(0, _int(spec.get("replicas"), 0) or 0)
    source = spec.get("sourceTarget") or {}
    low = max(0, _int(source.get("min"), 0) or 0)
    high = _int(source.get("max"))
    on_source = total if high is None else min(total, max(high, low))
    left = total - on_source
    units: list[tuple[str, int]] = []
    listed = [u for u in spec.get("elasticUnit") or () if isinstance(u, Mapping)]
    for unit in listed:
        cap = _int(unit.get("max"))  # none: this unit takes all that is left
        take = left if cap is None else min(left, max(0, cap))
        units.append((str(unit.get("name") or ""), take))
        left -= take
    return Share(on_source, tuple(units), left)


def problems(obj: Mapping[str, Any]) -> list[errors.Cause]:
    """The checks an ElasticWorkload gets at creation and update (422 causes)."""
    causes: list[errors.Cause] = []
    spec = obj.get("spec")
    if not isinstance(spec, Mapping):
        return [errors.Cause("FieldValueRequired", "Required value", "spec")]
    source = spec.get("sourceTarget")
    if not isinstance(source, Mapping):
        causes.append(errors.Cause("FieldValueRequired", "Required value", "spec.sourceTarget"))
    else:
        api_version = str(source.get("apiVersion") or "apps/v1")
        kind = str(source.get("kind") or "")
        if (api_version, kind) not in SOURCE_KINDS:
            supported = ", ".join(f'"{k}"' for _, k in SOURCE_KINDS)
            causes.append(
                errors.Cause(
                    "FieldValueNotSupported",
                    f'Unsupported value: "{kind}" ({api_version}): a source must be a scalable '
                    f"workload: {supported} (apps/v1)",
                    "spec.sourceTarget.kind",
                )
            )
        if not source.get("name"):
            causes.append(
                errors.Cause("FieldValueRequired", "Required value", "spec.sourceTarget.name")
            )
        for key in ("min", "max"):
            value = source.get(key)
            if value is not None and (_int(value) is None or value < 0):
                causes.append(
                    errors.Cause(
                        "FieldValueInvalid",
                        f"Invalid value: {value!r}: must be a non-negative integer",
                        f"spec.sourceTarget.{key}",
                    )
                )
        low, high = _int(source.get("min")), _int(source.get("max"))
        if low is not None and high is not None and low > high:
            causes.append(
                errors.Cause(
                    "FieldValueInvalid",
                    f"Invalid value: {low}: min must not exceed max ({high})",
                    "spec.sourceTarget.min",
                )
            )
    replicas = spec.get("replicas")
    if replicas is not None and (_int(replicas) is None or replicas < 0):
        causes.append(
            errors.Cause(
                "FieldValueInvalid",
                f"Invalid value: {replicas!r}: must be a non-negative integer",
                "spec.replicas",
            )
        )
    seen: set[str] = set()
    units = spec.get("elasticUnit") or []
    if not isinstance(units, Sequence) or isinstance(units, str):
        return [*causes, errors.Cause("FieldValueInvalid", "must be a list", "spec.elasticUnit")]
    for i, unit in enumerate(units):
        at = f"spec.elasticUnit[{i}]"
        if not isinstance(unit, Mapping):
            causes.append(errors.Cause("FieldValueInvalid", "must be an object", at))
            continue
        name = unit.get("name")
        if not isinstance(name, str) or not _DNS_LABEL.match(name):
            causes.append(
                errors.Cause(
                    "FieldValueInvalid",
                    f"Invalid value: {name!r}: must be a DNS label",
                    f"{at}.name",
                )
            )
        elif name in seen:
            causes.append(
                errors.Cause("FieldValueDuplicate", f'Duplicate value: "{name}"', f"{at}.name")
            )
        else:
            seen.add(name)
        cap = unit.get("max")
        if cap is not None and (_int(cap) is None or cap < 0):
            causes.append(
                errors.Cause(
                    "FieldValueInvalid",
                    f"Invalid value: {cap!r}: must be a non-negative integer",
                    f"{at}.max",
                )
            )
    return causes


def source_ref(spec: Mapping[str, Any]) -> tuple[str, str, str] | None:
    """(apiVersion, kind, name) of the source, when it is a supported kind."""
    source = spec.get("sourceTarget") or {}
    api_version = str(source.get("apiVersion") or "apps/v1")
    kind = str(source.get("kind") or "")
    if (api_version, kind) not in SOURCE_KINDS or not source.get("name"):
        return None
    return api_version, kind, str(source["name"])
