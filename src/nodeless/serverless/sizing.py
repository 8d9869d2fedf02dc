"""Sizing a pod: from its containers' resources to the instance specs to try.

A serverless pod is billed for a whole instance, so the pod's size is decided
once, before it is placed, by the rules of serverless.md ("Sizing a pod"):

- Nothing requested (no container sets cpu or memory): 2 vCPU / 4 GiB.
- Otherwise, per resource, each container counts with its *limit* if it has
  one and else with its *request*. So "only limits" is the sum of limits,
  "only requests" the sum of requests, and "both" the sum of limits; a pod
  that mixes (one container with a limit, another with only a request) adds
  the limit of the first to the request of the second, because the second
  container is guaranteed its request and would otherwise be left out.
  A resource no container mentions counts as 0: the smallest spec covers it.
- Init containers run before the app containers, so a resource needs the
  larger of the biggest single init container and the sum of the app
  containers. Native sidecars (init containers with ``restartPolicy:
  Always``) keep running, so they add to the app containers and to every
  init container started after them, exactly as the kubelet counts them.
- A container with env ``__ECI_RESOURCE_IGNORE__=TRUE`` is left out.
- ``nvidia.com/gpu`` (limit, else request) selects a GPU instance type; the
  node selector ``nodeless.dev/gpu-type: T4`` narrows the GPU type.
- The size rounds up to the cheapest covering catalogue entry, unless the
  ``instance-specs`` annotation (alias ``eci-use-specs``) lists the specs to
  try, in order.
- More than 64 vCPU, or a size no spec covers, is a 422 naming the field.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final, Literal

import orjson

from nodeless.api import errors
from nodeless.serverless import annotations as annotations_
from nodeless.serverless import catalogue as catalogue_
from nodeless.serverless import quantities

MAX_VCPU: Final = Decimal(64)
DEFAULT_VCPU: Final = Decimal(2)
DEFAULT_MEMORY_GIB: Final = Decimal(4)
GPU_RESOURCE: Final = "nvidia.com/gpu"
GPU_TYPE_SELECTOR: Final = "nodeless.dev/gpu-type"
IGNORE_ENV: Final = "__ECI_RESOURCE_IGNORE__"

Source = Literal["requests", "limits", "default", "annotation"]

_RESOURCES: Final = ("cpu", "memory", GPU_RESOURCE)


@dataclass(frozen=True)
class Amount:
    """How much of one resource a pod needs, and the field that asks for most of it.

    ``field`` and ``raw`` (the quantity as written there) let an error point
    at the container a user has to change; both are empty when no container
    mentions the resource.
    """

    value: Decimal
    field: str = ""
    raw: str = ""


@dataclass(frozen=True)
class PodResources:
    """What a pod spec asks for, before any catalogue is consulted."""

    cpu: Amount
    memory_gib: Amount
    gpus: Amount
    any_limit: bool
    any_request: bool
    causes: tuple[errors.Cause, ...] = ()

    @property
    def defaulted(self) -> bool:
        """No container sets cpu or memory: the pod gets the default size."""
        return not self.cpu.field and not self.memory_gib.field


@dataclass(frozen=True)
class Sizing:
    """The size a pod needs and the specs to try for it, preferred first."""

    vcpu: Decimal
    memory_gib: Decimal
    gpus: int
    gpu_type: str | None
    candidates: tuple[catalogue_.Spec, ...]  # shared between pods sized alike
    source: Source

    @property
    def spec(self) -> catalogue_.Spec:
        """The preferred spec."""
        return self.candidates[0]


@dataclass(frozen=True)
class _Share:
    """One container's share of one resource."""

    value: Decimal
    field: str
    raw: str


def _ignored(container: Mapping[str, Any]) -> bool:
    for env in container.get("env") or ():
        if (
            isinstance(env, Mapping)
            and env.get("name") == IGNORE_ENV
            and str(env.get("value", "")).strip().upper() == "TRUE"
        ):
            return True
    return False


class _Reader:
    """Reads containers' quantities, collecting a cause for each bad one."""

    def __init__(self) -> None:
        self.causes: list[errors.Cause] = []
        self.any_limit = False
        self.any_request = False

    def share(self, container: Mapping[str, Any], at: str, resource: str) -> _Share | None:
        """The container's effective amount of ``resource``: its limit, else its request."""
        resources = container.get("resources") or {}
        for kind in ("limits", "requests"):
            values = resources.get(kind) or {}
            if not isinstance(values, Mapping) or resource not in values:
                continue
            raw = values[resource]
            field = f"{at}.resources.{kind}.{resource}"
            value = self.quantity(raw, field, resource)
            if value is None:
                return None
            if resource != GPU_RESOURCE:
                if kind == "limits":
                    self.any_limit = True
                else:
                    self.any_request = True
            return _Share(value, field, str(raw))
        return None

    def quantity(self, raw: object, field: str, resource: str) -> Decimal | None:
        try:
            value = quantities.parse(raw)
        except quantities.QuantityError as exc:
            self.causes.append(
                errors.Cause("FieldValueInvalid", f'Invalid value: "{raw}": {exc}', field)
            )
            return None
        if value < 0:
            self.causes.append(
                errors.Cause(
                    "FieldValueInvalid",
                    f'Invalid value: "{raw}": must be greater than or equal to 0',
                    field,
                )
            )
            return None
        if resource == "memory":
            return value / quantities.GIB
        if resource == GPU_RESOURCE and value != value.to_integral_value():
            self.causes.append(
                errors.Cause(
                    "FieldValueInvalid",
                    f'Invalid value: "{raw}": must be a whole number of GPUs',
                    field,
                )
            )
            return None
        return value


def _containers(pod_spec: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    items = pod_spec.get(key) or []
    return [c for c in items if isinstance(c, Mapping)] if isinstance(items, list) else []


def _largest(shares: Sequence[_Share]) -> _Share | None:
    return max(shares, key=lambda s: s.value, default=None)


def _amount(
    app: Sequence[_Share],
    inits: Sequence[tuple[_Share | None, bool]],
) -> Amount:
    """max(sum of app containers and sidecars, the peak of any init container)."""
    sidecars: list[_Share] = []
    peak: Amount | None = None
    for share, is_sidecar in inits:
        if is_sidecar:
            if share is not None:
                sidecars.append(share)
            continue
        if share is None:
            continue
        need = share.value + sum((s.value for s in sidecars), Decimal(0))
        if peak is None or need > peak.value:
            peak = Amount(need, share.field, share.raw)
    steady = [*app, *sidecars]
    total = sum((s.value for s in steady), Decimal(0))
    if peak is not None and peak.value > total:
        return peak
    largest = _largest(steady)
    if largest is None:
        return Amount(total)
    return Amount(total, largest.field, largest.raw)


def pod_resources(pod_spec: Mapping[str, Any], path: str = "spec") -> PodResources:
    """What the pod spec at ``path`` asks for, by the rules in this module's docstring."""
    reader = _Reader()
    app: dict[str, list[_Share]] = {r: [] for r in _RESOURCES}
    inits: dict[str, list[tuple[_Share | None, bool]]] = {r: [] for r in _RESOURCES}
    for i, container in enumerate(_containers(pod_spec, "containers")):
        if _ignored(container):
            continue
        for resource in _RESOURCES:
            share = reader.share(container, f"{path}.containers[{i}]", resource)
            if share is not None:
                app[resource].append(share)
    for i, container in enumerate(_containers(pod_spec, "initContainers")):
        if _ignored(container):
            continue
        is_sidecar = container.get("restartPolicy") == "Always"
        for resource in _RESOURCES:
            share = reader.share(container, f"{path}.initContainers[{i}]", resource)
            inits[resource].append((share, is_sidecar))
    return PodResources(
        cpu=_amount(app["cpu"], inits["cpu"]),
        memory_gib=_amount(app["memory"], inits["memory"]),
        gpus=_amount(app[GPU_RESOURCE], inits[GPU_RESOURCE]),
        any_limit=reader.any_limit,
        any_request=reader.any_request,
        causes=tuple(reader.causes),
    )


def vcpu_limit_cause(resources: PodResources, path: str = "spec") -> errors.Cause | None:
    """The cause to report when a pod needs more vCPU than a serverless pod may have."""
    cpu = resources.cpu
    if cpu.value <= MAX_VCPU:
        return None
    return errors.Cause(
        "FieldValueInvalid",
        f'Invalid value: "{cpu.raw}": the pod needs {catalogue_.format_number(cpu.value)} vCPU '
        f"in total, more than the {MAX_VCPU} vCPU a serverless pod may have; lower the "
        "containers' cpu limits and requests, or split the work across several pods",
        cpu.field or f"{path}.containers",
    )


# Sizes already worked out, by what they depend on: the pods of one workload
# are sized alike, at admission and again by the scheduler.
_SIZED: dict[tuple[int, str, str, bytes], tuple[catalogue_.Catalogue, Sizing]] = {}
_MAX_SIZED = 4096


def size_pod(
    pod: Mapping[str, Any],
    catalogue: catalogue_.Catalogue,
    *,
    path: str = "spec",
    annotations_path: str = "metadata.annotations",
) -> Sizing:
    """The size of a Pod (or pod template: ``metadata`` + ``spec``) and its candidate specs.

    ``path`` and ``annotations_path`` say where the pod spec and its
    annotations sit in the object being admitted, so that errors name the
    field the user wrote. Raises a 422 Invalid listing every reason the pod
    cannot be sized.
    """
    metadata = pod.get("metadata") or {}
    try:
        content = orjson.dumps([pod.get("spec"), metadata.get("annotations")])
    except TypeError:
        return _size_pod(pod, catalogue, path, annotations_path)
    key = (id(catalogue), path, annotations_path, content)
    hit = _SIZED.get(key)
    if hit is not None and hit[0] is catalogue:
        return hit[1]
    sized = _size_pod(pod, catalogue, path, annotations_path)  # failures are not kept
    if len(_SIZED) >= _MAX_SIZED:
        _SIZED.clear()
    _SIZED[key] = (catalogue, sized)
    return sized


def _size_pod(
    pod: Mapping[str, Any], catalogue: catalogue_.Catalogue, path: str, annotations_path: str
) -> Sizing:
    metadata = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    name = str(metadata.get("name") or metadata.get("generateName") or "")
    resources = pod_resources(spec, path)
    causes = list(resources.causes)

    try:
        listed = annotations_.parse_instance_specs(
            metadata.get("annotations"), catalogue, path=annotations_path, name=name
        )
    except errors.StatusError as exc:
        causes.extend(exc.causes)
        listed = ()

    gpu_type = _gpu_type(spec, catalogue, path, causes)
    gpus = int(resources.gpus.value)
    source: Source
    if resources.defaulted:
        vcpu, memory, source = DEFAULT_VCPU, DEFAULT_MEMORY_GIB, "default"
    else:
        vcpu, memory = resources.cpu.value, resources.memory_gib.value
        source = "limits" if resources.any_limit else "requests"

    too_many = vcpu_limit_cause(resources, path)
    if too_many is not None:
        causes.append(too_many)

    candidates: list[catalogue_.Spec] = []
    if listed:
        candidates, source = list(listed), "annotation"
    elif not causes:
        chosen = catalogue.cheapest_covering(vcpu, memory, gpus, gpu_type)
        if chosen is None:
            causes.append(_impossible(resources, vcpu, memory, gpus, gpu_type, catalogue, path))
        else:
            candidates = [chosen]
    if causes:
        raise errors.invalid("Pod", "", name, causes)
    return Sizing(
        vcpu=vcpu,
        memory_gib=memory,
        gpus=gpus,
        gpu_type=gpu_type,
        candidates=tuple(candidates),
        source=source,
    )


def _gpu_type(
    spec: Mapping[str, Any],
    catalogue: catalogue_.Catalogue,
    path: str,
    causes: list[errors.Cause],
) -> str | None:
    selector = spec.get("nodeSelector") or {}
    if not isinstance(selector, Mapping) or GPU_TYPE_SELECTOR not in selector:
        return None
    value = str(selector[GPU_TYPE_SELECTOR])
    if value not in catalogue.gpu_types:
        supported = ", ".join(f'"{t}"' for t in sorted(catalogue.gpu_types))
        causes.append(
            errors.Cause(
                "FieldValueNotSupported",
                f'Unsupported value: "{value}": supported values: {supported}',
                f"{path}.nodeSelector[{GPU_TYPE_SELECTOR}]",
            )
        )
        return None
    return value


def _impossible(
    resources: PodResources,
    vcpu: Decimal,
    memory: Decimal,
    gpus: int,
    gpu_type: str | None,
    catalogue: catalogue_.Catalogue,
    path: str,
) -> errors.Cause:
    """Why no spec covers the pod, pinned on the resource that rules every spec out."""
    fmt = catalogue_.format_number
    if gpus:
        pool = [
            s
            for s in catalogue.specs
            if s.gpu_count >= gpus and (gpu_type is None or s.gpu_type == gpu_type)
        ]
    else:
        pool = [s for s in catalogue.specs if not s.gpu_count]
    typed = f" {gpu_type}" if gpu_type else ""
    if not pool:
        largest = max(
            (s.gpu_count for s in catalogue.specs if gpu_type is None or s.gpu_type == gpu_type),
            default=0,
        )
        amount = resources.gpus
        return errors.Cause(
            "FieldValueInvalid",
            f'Invalid value: "{amount.raw}": the pod needs {gpus}{typed} GPUs, but the largest '
            f"instance type offers {largest}; lower the containers' {GPU_RESOURCE} limits",
            amount.field or f"{path}.containers",
        )
    kind = f"{typed} GPU instance type with {gpus} GPUs" if gpus else " instance spec"
    if vcpu > max(s.vcpu for s in pool):
        amount, what, unit = resources.cpu, "cpu", "vCPU"
        most = max(s.vcpu for s in pool)
        need = vcpu
    elif memory > max(s.memory_gib for s in pool):
        amount, what, unit = resources.memory_gib, "memory", "GiB"
        most = max(s.memory_gib for s in pool)
        need = memory
    else:
        amount = resources.gpus if gpus else resources.memory_gib
        if not amount.field:
            amount = resources.cpu
        return errors.Cause(
            "FieldValueInvalid",
            f'Invalid value: "{amount.raw}": no{kind} offers {fmt(vcpu)} vCPU and '
            f"{fmt(memory)} GiB together; change the containers' resources to fit a spec "
            "of the instance spec catalogue",
            amount.field or f"{path}.containers",
        )
    return errors.Cause(
        "FieldValueInvalid",
        f'Invalid value: "{amount.raw}": the pod needs {fmt(need)} {unit}, but the largest'
        f"{kind} offers {fmt(most)} {unit}; lower the containers' {what} limits and requests",
        amount.field or f"{path}.containers",
    )
