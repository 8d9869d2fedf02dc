"""Knative Serving's ``serving.knative.dev/v1`` Service and Revision: the
CRDs, the labels that tie the objects together, the defaults, the naming
rules and the checks Knative's webhook makes, so manifests written for
Knative (or for Alibaba's Knative on ASK) work unchanged.

Pure data and functions: the API server validates with them, the
controllers create Revisions, Deployments and Services with them, and the
gateway reads the routes they publish in a Service's status.

What a Service is made of here, as in Knative: every change of
``spec.template`` makes a new immutable Revision ``<service>-0000N`` (or the
template's own ``metadata.name``); a Revision runs as one Deployment and is
reached through one ClusterIP Service of its own name; ``spec.traffic``
splits requests between Revisions by percent, ``latestRevision: true``
following the latest Revision that became Ready. Knative's Configuration and
Route objects are not separate kinds here: the Service carries both roles,
and its status says what they would.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any, Final

import yaml

from nodeless.api import durations, errors

GROUP: Final = "serving.knative.dev"
VERSION: Final = "v1"
API_VERSION: Final = f"{GROUP}/{VERSION}"

SERVICE_LABEL: Final = "serving.knative.dev/service"
CONFIGURATION_LABEL: Final = "serving.knative.dev/configuration"
GENERATION_LABEL: Final = "serving.knative.dev/configurationGeneration"
REVISION_LABEL: Final = "serving.knative.dev/revision"
REVISION_UID_LABEL: Final = "serving.knative.dev/revisionUID"
# The template a Revision was made from, to tell whether the Service's
# template changed since (Knative compares Configuration generations).
TEMPLATE_HASH_ANNOTATION: Final = "nodeless.dev/template-hash"

DEFAULT_DOMAIN: Final = "example.com"  # Knative's config-domain default
DEFAULT_PORT: Final = 8080  # Knative gives the user container $PORT=8080 unless it names one
SERVICE_PORT: Final = 80  # the port of each Revision's ClusterIP Service
SERVICE_PORT_NAME: Final = "http"
DEFAULT_TARGET: Final = 100.0  # container-concurrency-target-default
DEFAULT_UTILIZATION: Final = 70.0  # container-concurrency-target-percentage
MAX_CONTAINER_CONCURRENCY: Final = 1000
MAX_TIMEOUT_SECONDS: Final = 600  # max-revision-timeout-seconds
INITIAL_SCALE: Final = 1  # initial-scale: a new Revision starts one pod to prove it works
MIN_WINDOW: Final = 6.0
MAX_WINDOW: Final = 3600.0

# The scaling annotations of a Deployment that networking.activation reads
# (scale to zero, concurrency autoscaling); a Revision's Deployment gets them.
SCALE_TO_ZERO: Final = "nodeless.dev/scale-to-zero"
SCALE_TO_ZERO_GRACE: Final = "nodeless.dev/scale-to-zero-grace"
TARGET_CONCURRENCY: Final = "nodeless.dev/target-concurrency"
SCALING_WINDOW: Final = "nodeless.dev/window"
MIN_SCALE: Final = "nodeless.dev/min-scale"
MAX_SCALE: Final = "nodeless.dev/max-scale"

MIN_SCALE_ANNOTATION: Final = "autoscaling.knative.dev/min-scale"
MAX_SCALE_ANNOTATION: Final = "autoscaling.knative.dev/max-scale"
INITIAL_SCALE_ANNOTATION: Final = "autoscaling.knative.dev/initial-scale"
TARGET_ANNOTATION: Final = "autoscaling.knative.dev/target"
UTILIZATION_ANNOTATION: Final = "autoscaling.knative.dev/target-utilization-percentage"
WINDOW_ANNOTATION: Final = "autoscaling.knative.dev/window"
METRIC_ANNOTATION: Final = "autoscaling.knative.dev/metric"

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")

Obj = dict[str, Any]


@cache
def _crd_documents() -> tuple[str, ...]:
    text = (Path(__file__).with_name("knative-serving.yaml")).read_text()
    return tuple(json.dumps(doc) for doc in yaml.safe_load_all(text) if doc)


def crds() -> list[Obj]:
    """Fresh copies of the two CustomResourceDefinitions."""
    return [json.loads(doc) for doc in _crd_documents()]


# --- names -------------------------------------------------------------------------------


def revision_name(service: str, generation: int) -> str:
    return f"{service}-{generation:05d}"


def deployment_name(revision: str) -> str:
    return f"{revision}-deployment"


def host(service: str, namespace: str, domain: str, tag: str = "") -> str:
    """Knative's default domain template ``{{.Name}}.{{.Namespace}}.{{.Domain}}``
    and tag template ``{{.Tag}}-{{.Name}}``."""
    name = f"{tag}-{service}" if tag else service
    return f"{name}.{namespace}.{domain}"


def url_host(url: str) -> str:
    """The host of an ``http://host[:port]/`` URL in a status, lower case."""
    rest = url.partition("://")[2] or url
    return rest.split("/", 1)[0].split(":", 1)[0].lower()


def template_hash(template: Mapping[str, Any]) -> str:
    canonical = json.dumps(template, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def serving_container(pod_spec: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The container requests go to: the one naming a port, or the only one."""
    containers = [c for c in pod_spec.get("containers") or () if isinstance(c, Mapping)]
    for container in containers:
        if container.get("ports"):
            return container
    return containers[0] if len(containers) == 1 else None


def user_port(pod_spec: Mapping[str, Any]) -> int:
    container = serving_container(pod_spec) or {}
    for port in container.get("ports") or ():
        number = port.get("containerPort")
        if isinstance(number, int) and not isinstance(number, bool) and number > 0:
            return number
    return DEFAULT_PORT


# --- traffic -----------------------------------------------------------------------------


def traffic(spec: Mapping[str, Any]) -> list[Obj]:
    """``spec.traffic``, or Knative's default: all of it to the latest Ready Revision."""
    given = spec.get("traffic")
    if not given:
        return [{"latestRevision": True, "percent": 100}]
    return [dict(t) for t in given if isinstance(t, Mapping)]


def follows_latest(target: Mapping[str, Any]) -> bool:
    """``latestRevision`` defaults to true only when no revisionName is given."""
    latest = target.get("latestRevision")
    if latest is None:
        return not target.get("revisionName")
    return bool(latest)


# --- validation (Knative's webhook) ------------------------------------------------------


def _cause(field: str, message: str, reason: str = "FieldValueInvalid") -> errors.Cause:
    return errors.Cause(reason, message, field)


def traffic_problems(
    targets: Any, path: str, *, service: str = "", allow_latest: bool = True
) -> list[errors.Cause]:
    if targets is None:
        return []
    if not isinstance(targets, list):
        return [_cause(path, "Invalid value: must be a list of traffic targets")]
    causes: list[errors.Cause] = []
    total = 0
    tags: dict[str, int] = {}
    for i, target in enumerate(targets):
        at = f"{path}[{i}]"
        if not isinstance(target, Mapping):
            causes.append(_cause(at, "Invalid value: must be an object"))
            continue
        name = target.get("revisionName")
        latest = target.get("latestRevision")
        if name is not None and (not isinstance(name, str) or not _DNS_LABEL.match(name)):
            causes.append(
                _cause(f"{at}.revisionName", f"Invalid value: {name!r}: not a Revision name")
            )
        if latest is not None and not isinstance(latest, bool):
            causes.append(_cause(f"{at}.latestRevision", "Invalid value: must be true or false"))
        elif latest is True and name:
            causes.append(
                _cause(
                    f"{at}.revisionName",
                    f"may not set revisionName {name!r} when latestRevision is true",
                )
            )
        elif latest is False and not name:
            causes.append(
                _cause(
                    f"{at}.latestRevision",
                    "may not set latestRevision to false without a revisionName",
                    "FieldValueRequired",
                )
            )
        if not allow_latest and follows_latest(target):
            causes.append(_cause(at, "latestRevision targets are not allowed here"))
        percent = target.get("percent")
        if percent is not None:
            if not isinstance(percent, int) or isinstance(percent, bool) or not 0 <= percent <= 100:
                causes.append(
                    _cause(
                        f"{at}.percent",
                        f"Invalid value: {percent!r}: must be an integer from 0 to 100",
                    )
                )
            else:
                total += percent
        tag = target.get("tag")
        if tag is not None:
            if not isinstance(tag, str) or not _DNS_LABEL.match(tag):
                causes.append(_cause(f"{at}.tag", f"Invalid value: {tag!r}: must be a DNS label"))
            elif tag in tags:
                causes.append(
                    _cause(
                        f"{at}.tag",
                        f"Duplicate value: {tag!r}: also the tag of {path}[{tags[tag]}]",
                        "FieldValueDuplicate",
                    )
                )
            else:
                tags[tag] = i
                if service and len(host(service, "x", "y", tag).split(".", 1)[0]) > 63:
                    causes.append(
                        _cause(f"{at}.tag", f"Invalid value: {tag!r}: {tag}-{service} is too long")
                    )
    if targets and total != 100 and not causes:
        causes.append(_cause(path, f"Traffic targets sum to {total}, want 100"))
    return causes


def _annotation_problems(annotations: Mapping[str, Any], path: str) -> list[errors.Cause]:
    causes: list[errors.Cause] = []
    scales: dict[str, int] = {}
    for name in (MIN_SCALE_ANNOTATION, MAX_SCALE_ANNOTATION, INITIAL_SCALE_ANNOTATION):
        if name not in annotations:
            continue
        text = str(annotations[name])
        if not text.isdigit():
            causes.append(
                _cause(
                    f"{path}[{name}]", f"Invalid value: {text!r}: must be a non-negative integer"
                )
            )
        else:
            scales[name] = int(text)
    low, high = scales.get(MIN_SCALE_ANNOTATION, 0), scales.get(MAX_SCALE_ANNOTATION, 0)
    if high and low > high:
        causes.append(
            _cause(
                f"{path}[{MIN_SCALE_ANNOTATION}]",
                f"Invalid value: {low}: min-scale={low} is more than max-scale={high}",
            )
        )
    # (annotation, what its text must read as, and whether it does)
    bounded: tuple[tuple[str, str, Callable[[str], bool]], ...] = (
        (TARGET_ANNOTATION, "must be at least 0.01", lambda t: float(t) >= 0.01),
        (UTILIZATION_ANNOTATION, "must be between 1 and 100", lambda t: 1 <= float(t) <= 100),
        (
            WINDOW_ANNOTATION,
            "must be a duration between 6s and 1h",
            lambda t: MIN_WINDOW <= durations.seconds(t) <= MAX_WINDOW,
        ),
    )
    for name, rule, holds in bounded:
        if name not in annotations:
            continue
        text = str(annotations[name])
        try:
            ok = holds(text)
        except ValueError:
            ok = False
        if not ok:
            causes.append(_cause(f"{path}[{name}]", f"Invalid value: {text!r}: {rule}"))
    metric = annotations.get(METRIC_ANNOTATION)
    if metric is not None and metric not in ("concurrency",):
        causes.append(
            _cause(
                f"{path}[{METRIC_ANNOTATION}]",
                f'Unsupported value: {metric!r}: supported values: "concurrency"',
                "FieldValueNotSupported",
            )
        )
    return causes


def revision_spec_problems(spec: Any, path: str) -> list[errors.Cause]:
    """What Knative requires of a Revision's spec (a pod spec plus two fields)."""
    if not isinstance(spec, Mapping):
        return [_cause(path, "Required value", "FieldValueRequired")]
    causes: list[errors.Cause] = []
    containers = spec.get("containers")
    if not isinstance(containers, list) or not containers:
        causes.append(_cause(f"{path}.containers", "Required value", "FieldValueRequired"))
    else:
        with_ports = [
            i for i, c in enumerate(containers) if isinstance(c, Mapping) and c.get("ports")
        ]
        if len(containers) > 1 and len(with_ports) != 1:
            causes.append(
                _cause(
                    f"{path}.containers",
                    "exactly one container must specify a port (the one requests go to); "
                    f"{len(with_ports)} do",
                )
            )
        for i in with_ports:
            ports = containers[i]["ports"]
            if isinstance(ports, list) and len(ports) > 1:
                causes.append(
                    _cause(
                        f"{path}.containers[{i}].ports",
                        "More than one container port is set; only one port is served",
                    )
                )
    concurrency = spec.get("containerConcurrency")
    if concurrency is not None and (
        not isinstance(concurrency, int)
        or isinstance(concurrency, bool)
        or not 0 <= concurrency <= MAX_CONTAINER_CONCURRENCY
    ):
        causes.append(
            _cause(
                f"{path}.containerConcurrency",
                f"Invalid value: {concurrency!r}: must be an integer from 0 to "
                f"{MAX_CONTAINER_CONCURRENCY}",
            )
        )
    timeout = spec.get("timeoutSeconds")
    if timeout is not None and (
        not isinstance(timeout, int)
        or isinstance(timeout, bool)
        or not 0 <= timeout <= MAX_TIMEOUT_SECONDS
    ):
        causes.append(
            _cause(
                f"{path}.timeoutSeconds",
                f"Invalid value: {timeout!r}: must be an integer from 0 to {MAX_TIMEOUT_SECONDS}",
            )
        )
    return causes


def service_problems(obj: Mapping[str, Any]) -> list[errors.Cause]:
    """Knative's validation of a Service, as 422 causes."""
    meta = obj.get("metadata") or {}
    name = str(meta.get("name") or "")
    causes: list[errors.Cause] = []
    if name and len(revision_name(name, 1)) > 63:
        causes.append(
            _cause(
                "metadata.name",
                f"Invalid value: {name!r}: must be no more than 57 characters, so that its "
                "Revisions' names fit in 63",
            )
        )
    spec = obj.get("spec")
    if not isinstance(spec, Mapping):
        return [*causes, _cause("spec", "Required value", "FieldValueRequired")]
    template = spec.get("template")
    if not isinstance(template, Mapping):
        return [*causes, _cause("spec.template", "Required value", "FieldValueRequired")]
    template_meta = template.get("metadata") or {}
    given = template_meta.get("name")
    if given:
        if not isinstance(given, str) or not _DNS_LABEL.match(given) or len(given) > 63:
            causes.append(
                _cause("spec.template.metadata.name", f"Invalid value: {given!r}: not a DNS label")
            )
        elif name and not given.startswith(f"{name}-"):
            causes.append(
                _cause(
                    "spec.template.metadata.name",
                    f"Invalid value: {given!r}: must have prefix {name}-",
                )
            )
    annotations = template_meta.get("annotations") or {}
    if isinstance(annotations, Mapping):
        causes += _annotation_problems(annotations, "spec.template.metadata.annotations")
    causes += revision_spec_problems(template.get("spec"), "spec.template.spec")
    causes += traffic_problems(spec.get("traffic"), "spec.traffic", service=name)
    return causes


def revision_problems(obj: Mapping[str, Any]) -> list[errors.Cause]:
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    causes = revision_spec_problems(obj.get("spec"), "spec")
    if isinstance(annotations, Mapping):
        causes += _annotation_problems(annotations, "metadata.annotations")
    return causes


def immutable_revision_problems(
    old: Mapping[str, Any], new: Mapping[str, Any]
) -> list[errors.Cause]:
    """A Revision is a snapshot: its spec never changes once created."""
    if old.get("spec") != new.get("spec"):
        return [_cause("spec", "Invalid value: a Revision's spec is immutable")]
    return []


# --- what a Revision runs as -------------------------------------------------------------


def condition(obj: Mapping[str, Any], kind: str) -> Mapping[str, Any]:
    for item in (obj.get("status") or {}).get("conditions") or ():
        if isinstance(item, Mapping) and item.get("type") == kind:
            return item
    return {}


def condition_entry(kind: str, status: str, reason: str = "", message: str = "") -> Obj:
    """A Knative condition without its time (``stamp`` adds it when written)."""
    out: Obj = {"type": kind, "status": status}
    if reason:
        out["reason"] = reason
    if message:
        out["message"] = message
    return out


def stamp(conditions: list[Obj], previous: Sequence[Any], now: str) -> None:
    """lastTransitionTime: kept while a condition's status stays, else ``now``."""
    before = {c.get("type"): c for c in previous if isinstance(c, Mapping)}
    for item in conditions:
        old = before.get(item["type"])
        if (
            old is not None
            and old.get("status") == item["status"]
            and old.get("lastTransitionTime")
        ):
            item["lastTransitionTime"] = old["lastTransitionTime"]
        else:
            item["lastTransitionTime"] = now


def without_times(status: Mapping[str, Any]) -> Obj:
    """A status to compare with another: condition times left out."""
    out = dict(status)
    out["conditions"] = [
        {k: v for k, v in c.items() if k != "lastTransitionTime"}
        for c in status.get("conditions") or ()
        if isinstance(c, Mapping)
    ]
    return out


def is_ready(obj: Mapping[str, Any]) -> bool:
    return condition(obj, "Ready").get("status") == "True"


def target_concurrency(annotations: Mapping[str, Any], container_concurrency: int) -> float:
    """Requests in flight per pod the autoscaler aims for: the target
    (annotation, else containerConcurrency when set, else 100) times the
    target utilization (70 %), as Knative's KPA computes it."""
    target = DEFAULT_TARGET
    if TARGET_ANNOTATION in annotations:
        try:
            target = float(annotations[TARGET_ANNOTATION])
        except ValueError:
            pass
    elif container_concurrency > 0:
        target = float(container_concurrency)
    if container_concurrency > 0:
        target = min(target, float(container_concurrency))
    utilization = DEFAULT_UTILIZATION
    try:
        utilization = float(annotations.get(UTILIZATION_ANNOTATION, DEFAULT_UTILIZATION))
    except ValueError:
        pass
    return max(0.01, target * utilization / 100.0)


def scale_bounds(annotations: Mapping[str, Any]) -> tuple[int, int, int]:
    """(min-scale, max-scale (0: none), initial scale)."""

    def number(name: str, default: int) -> int:
        text = str(annotations.get(name, default))
        return int(text) if text.isdigit() else default

    low = number(MIN_SCALE_ANNOTATION, 0)
    high = number(MAX_SCALE_ANNOTATION, 0)
    # Knative refuses an initial scale of 0 unless allow-zero-initial-scale is on;
    # it is off by default, and here.
    initial = max(number(INITIAL_SCALE_ANNOTATION, INITIAL_SCALE), low, 1)
    if high:
        initial = min(initial, high)
    return low, high, initial
