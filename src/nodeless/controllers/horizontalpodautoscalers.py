"""The HorizontalPodAutoscaler controller (``autoscaling/v2``), as upstream's
``pkg/controller/podautoscaler``.

Every HPA is synced when it is created or its spec changes, and every
``SYNC_PERIOD`` (15 s, upstream's ``--horizontal-pod-autoscaler-sync-period``)
on the injected clock, because the metrics it follows change without any
object changing. A sync:

1. reads the target's ``scale`` subresource (any kind that has one: the
   workloads, or a custom resource whose CRD declares it); without one the
   HPA says ``AbleToScale=False FailedGetScale``;
2. computes a replica count per metric with upstream's replica calculator
   (Resource and ContainerResource metrics from ``metrics.k8s.io`` PodMetrics;
   Pods, Object and External metrics fail with upstream's reasons because no
   custom or external metrics API is served) and takes the largest;
3. normalises it as upstream does: without ``spec.behavior``, the
   five-minute downscale stabilisation and the ``max(2 * current, 4)`` scale-up
   limit; with it, the stabilisation windows and rate policies of
   ``scaleUp``/``scaleDown`` (filled with upstream's defaults), then the
   ``minReplicas``/``maxReplicas`` bounds;
4. writes the new scale, with a ``SuccessfulRescale`` event in upstream's
   words, and the status (only when it changed).

The recommendation and scale-event histories that the windows and policies
read live in memory, per HPA, as upstream keeps them: a restarted controller
starts them afresh (a restart can therefore scale down early, exactly as
kube-controller-manager can).
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from decimal import ROUND_CEILING
from typing import Any

from nodeless import clocks
from nodeless.api import autoscalingbehaviors, errors, selectors, times, values
from nodeless.client import clients, controllers, events, informers
from nodeless.controllers import jobs
from nodeless.serverless import quantities

log = logging.getLogger(__name__)

Obj = dict[str, Any]

HPAS = clients.ResourceRef(
    "autoscaling", "v2", "horizontalpodautoscalers", True, "HorizontalPodAutoscaler"
)
PODS = clients.ResourceRef("", "v1", "pods", True, "Pod")
POD_METRICS = clients.ResourceRef("metrics.k8s.io", "v1beta1", "pods", True, "PodMetrics")
CRDS = clients.ResourceRef(
    "apiextensions.k8s.io", "v1", "customresourcedefinitions", False, "CustomResourceDefinition"
)

# kube-controller-manager's defaults.
SYNC_PERIOD = 15.0
TOLERANCE = 0.1
CPU_INITIALIZATION_PERIOD = 300.0
INITIAL_READINESS_DELAY = 30.0
DOWNSCALE_STABILIZATION = 300.0
# Without spec.behavior, a scale-up goes no further than max(2 * current, 4).
SCALE_UP_LIMIT_FACTOR = 2.0
SCALE_UP_LIMIT_MINIMUM = 4.0
DEFAULT_CPU_UTILIZATION = 80
CONFLICT_RETRIES = 5
MAX_INT32 = 2**31 - 1

ABLE_TO_SCALE = "AbleToScale"
SCALING_ACTIVE = "ScalingActive"
SCALING_LIMITED = "ScalingLimited"

NO_CUSTOM_METRICS = "no custom metrics API (custom.metrics.k8s.io) is served by this cluster"
NO_EXTERNAL_METRICS = "no external metrics API (external.metrics.k8s.io) is served by this cluster"


class MetricError(Exception):
    """A metric could not be turned into a replica count; the text is upstream's."""


@dataclasses.dataclass
class _MetricFailure(Exception):
    """One metric failed: the ScalingActive reason, the error the condition and
    the Warning event carry, and the error wrapped once more for the summary."""

    reason: str
    error: str
    wrapped: str


# --- quantities ------------------------------------------------------------------------


def milli_value(raw: object) -> int:
    """A quantity in thousandths, rounded up (``resource.Quantity.MilliValue``)."""
    value = quantities.parse(raw) * 1000
    return int(value.to_integral_value(rounding=ROUND_CEILING))


_DECIMAL_SUFFIXES = ("m", "", "k", "M", "G", "T", "P", "E")
_BINARY_SUFFIXES = ("", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei")


def format_milli(milli: int, *, binary: bool = False) -> str:
    """A milli-value as the canonical quantity upstream's status shows
    (``resource.NewMilliQuantity``): ``DecimalSI`` for cpu (``250m``, ``2``),
    ``BinarySI`` for memory (``64Mi``), falling back to decimal when the
    value is not a whole number of bytes, as Go does."""
    if binary and milli % 1000 == 0:
        amount = milli // 1000
        index = 0
        while amount and amount % 1024 == 0 and index < len(_BINARY_SUFFIXES) - 1:
            amount //= 1024
            index += 1
        return f"{amount}{_BINARY_SUFFIXES[index]}"
    amount, index = milli, 0
    while amount and amount % 1000 == 0 and index < len(_DECIMAL_SUFFIXES) - 1:
        amount //= 1000
        index += 1
    return f"{amount}{_DECIMAL_SUFFIXES[index]}"


def _go_duration(text: object) -> float:
    """A metrics ``window`` such as ``15s`` or ``1m0s``, in seconds (0 if unreadable)."""
    if not isinstance(text, str):
        return 0.0
    total, number = 0.0, ""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    i = 0
    while i < len(text):
        char = text[i]
        if char.isdigit() or char == ".":
            number += char
            i += 1
            continue
        unit = "ms" if text.startswith("ms", i) else char
        try:
            total += float(number) * units[unit]
        except (KeyError, ValueError):
            return 0.0
        number = ""
        i += len(unit)
    return total


# --- pods and their metrics (upstream's replica_calculator.go) -------------------------


@dataclasses.dataclass(frozen=True)
class PodMetric:
    """One pod's usage of one resource, in milli-units, with its sample time."""

    value: int
    timestamp: datetime.datetime | None = None
    window: float = 0.0


def pod_metrics(
    items: Iterable[Mapping[str, Any]], resource: str, container: str = ""
) -> dict[str, PodMetric]:
    """PodMetrics by pod name: the sum over the pod's containers, or one
    container's usage. A pod missing the resource in any container has no
    metric (it counts as missing); a pod without the named container is an
    error, as upstream's resource metrics client says."""
    found: dict[str, PodMetric] = {}
    for item in items:
        meta = item.get("metadata") or {}
        name = str(meta.get("name") or "")
        stamp = jobs.parse_time(item.get("timestamp"))
        window = _go_duration(item.get("window"))
        containers = [c for c in item.get("containers") or [] if isinstance(c, Mapping)]
        if container:
            match = next((c for c in containers if c.get("name") == container), None)
            if match is None:
                raise MetricError(
                    f"failed to get container metrics: container {container} not present "
                    f"in metrics for pod {meta.get('namespace', '')}/{name}"
                )
            usage = (match.get("usage") or {}).get(resource)
            if usage is not None:
                found[name] = PodMetric(milli_value(usage), stamp, window)
            continue
        if not containers:
            continue
        total = 0
        for c in containers:
            usage = (c.get("usage") or {}).get(resource)
            if usage is None:
                break
            total += milli_value(usage)
        else:
            found[name] = PodMetric(total, stamp, window)
    return found


def _condition(pod: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if isinstance(condition, Mapping) and condition.get("type") == kind:
            return condition
    return None


def _pod_name(pod: Mapping[str, Any]) -> str:
    return str((pod.get("metadata") or {}).get("name") or "")


@dataclasses.dataclass
class PodGroups:
    """How upstream's ``groupPods`` sorts the target's pods for one resource."""

    ready: int = 0
    unready: set[str] = dataclasses.field(default_factory=set)
    missing: set[str] = dataclasses.field(default_factory=set)
    ignored: set[str] = dataclasses.field(default_factory=set)


def group_pods(
    pods: Iterable[Mapping[str, Any]],
    metrics: Mapping[str, PodMetric],
    resource: str,
    now: datetime.datetime,
    *,
    cpu_initialization_period: float = CPU_INITIALIZATION_PERIOD,
    initial_readiness_delay: float = INITIAL_READINESS_DELAY,
) -> PodGroups:
    """Deleted and finished pods are ignored; pending pods are unready; pods
    without a sample are missing. For cpu only, a pod is also unready when it
    has no Ready condition or start time, when within the cpu initialisation
    period after its start it is not ready or its sample predates one window
    after the last readiness change, and, later on, when it is not ready and
    has never been (its readiness last changed within the initial-readiness
    delay of its start): a starting pod's cpu burst must not drive scaling."""
    groups = PodGroups()
    for pod in pods:
        name = _pod_name(pod)
        meta = pod.get("metadata") or {}
        status = pod.get("status") or {}
        phase = status.get("phase")
        if meta.get("deletionTimestamp") or phase in ("Failed", "Succeeded"):
            groups.ignored.add(name)
            continue
        if phase == "Pending":
            groups.unready.add(name)
            continue
        metric = metrics.get(name)
        if metric is None:
            groups.missing.add(name)
            continue
        if resource == "cpu":
            ready = _condition(pod, "Ready")
            started = jobs.parse_time(status.get("startTime"))
            changed = jobs.parse_time((ready or {}).get("lastTransitionTime"))
            if ready is None or started is None:
                unready = True
            elif started + datetime.timedelta(seconds=cpu_initialization_period) > now:
                unready = ready.get("status") == "False" or (
                    metric.timestamp is not None
                    and changed is not None
                    and metric.timestamp < changed + datetime.timedelta(seconds=metric.window)
                )
            else:
                unready = (
                    ready.get("status") == "False"
                    and changed is not None
                    and started + datetime.timedelta(seconds=initial_readiness_delay) > changed
                )
            if unready:
                groups.unready.add(name)
                continue
        groups.ready += 1
    return groups


def pod_requests(
    pods: Iterable[Mapping[str, Any]], container: str, resource: str
) -> dict[str, int]:
    """Each pod's request of ``resource`` in milli-units: the sum over its
    containers (and sidecar init containers), or one container's; a missing
    request is an error in upstream's words."""
    requests: dict[str, int] = {}
    for pod in pods:
        name = _pod_name(pod)
        spec = pod.get("spec") or {}
        candidates = list(spec.get("containers") or []) + [
            c for c in spec.get("initContainers") or [] if c.get("restartPolicy") == "Always"
        ]
        total = 0
        for c in candidates:
            if not container or container == c.get("name"):
                request = ((c.get("resources") or {}).get("requests") or {}).get(resource)
                if request is None:
                    raise MetricError(
                        f"missing request for {resource} in container {c.get('name')} of Pod {name}"
                    )
                total += milli_value(request)
            if container and container == c.get("name"):
                break
        else:
            if container:
                raise MetricError(f"container {container} not found in Pod {name}")
        requests[name] = total
    return requests


def utilization_ratio(
    metrics: Mapping[str, PodMetric], requests: Mapping[str, int], target: int
) -> tuple[float, int, int]:
    """(usage / target, current utilisation %, average raw usage) over the
    pods that have both a sample and a request."""
    metrics_total = requests_total = entries = 0
    for name, metric in metrics.items():
        if name not in requests:
            continue
        metrics_total += metric.value
        requests_total += requests[name]
        entries += 1
    if requests_total == 0:
        raise MetricError("no metrics returned matched known pods")
    utilization = (metrics_total * 100) // requests_total
    return utilization / target, utilization, metrics_total // entries


def usage_ratio(metrics: Mapping[str, PodMetric], target: int) -> tuple[float, int]:
    """(average usage / target, average usage) for raw values."""
    current = sum(m.value for m in metrics.values()) // len(metrics)
    return current / target, current


def _within_tolerance(ratio: float, tolerance: float) -> bool:
    return 1.0 - tolerance <= ratio <= 1.0 + tolerance


def _usable_samples(
    pods: Sequence[Mapping[str, Any]],
    metrics: Mapping[str, PodMetric],
    resource: str,
    now: datetime.datetime,
    cpu_initialization_period: float,
    initial_readiness_delay: float,
) -> tuple[dict[str, PodMetric], PodGroups]:
    """The samples both calculations start from: ignored and unready pods'
    dropped; an error when no pod or no sample is left."""
    if not pods:
        raise MetricError("no pods returned by selector while calculating replica count")
    samples = dict(metrics)
    groups = group_pods(
        pods,
        samples,
        resource,
        now,
        cpu_initialization_period=cpu_initialization_period,
        initial_readiness_delay=initial_readiness_delay,
    )
    for name in groups.ignored | groups.unready:
        samples.pop(name, None)
    if not samples:
        raise MetricError("did not receive metrics for targeted pods (pods might be unready)")
    return samples, groups


def resource_utilization_replicas(
    current_replicas: int,
    target_utilization: int,
    resource: str,
    pods: Sequence[Mapping[str, Any]],
    metrics: Mapping[str, PodMetric],
    now: datetime.datetime,
    *,
    container: str = "",
    tolerance: float = TOLERANCE,
    cpu_initialization_period: float = CPU_INITIALIZATION_PERIOD,
    initial_readiness_delay: float = INITIAL_READINESS_DELAY,
) -> tuple[int, int, int]:
    """Upstream's ``GetResourceReplicas``: (replicas, utilisation %, average
    raw usage). Missing samples count as 100 % of the request (or the target,
    if higher) on a scale-down and 0 % on a scale-up, unready pods as 0 % on
    a scale-up; if that flips the direction or lands within tolerance, the
    current count stays."""
    samples, groups = _usable_samples(
        pods, metrics, resource, now, cpu_initialization_period, initial_readiness_delay
    )
    requests = pod_requests(pods, container, resource)
    ratio, utilization, raw = utilization_ratio(samples, requests, target_utilization)
    scale_up_with_unready = bool(groups.unready) and ratio > 1.0
    if not scale_up_with_unready and not groups.missing:
        if _within_tolerance(ratio, tolerance):
            return current_replicas, utilization, raw
        return math.ceil(ratio * groups.ready), utilization, raw
    if groups.missing:
        if ratio < 1.0:
            fallback = max(100, target_utilization)
            for name in groups.missing:
                samples[name] = PodMetric(requests[name] * fallback // 100)
        elif ratio > 1.0:
            for name in groups.missing:
                samples[name] = PodMetric(0)
    if scale_up_with_unready:
        for name in groups.unready:
            samples[name] = PodMetric(0)
    new_ratio, _, _ = utilization_ratio(samples, requests, target_utilization)
    return _settle(current_replicas, ratio, new_ratio, len(samples), tolerance), utilization, raw


def raw_usage_replicas(
    current_replicas: int,
    target_usage: int,
    resource: str,
    pods: Sequence[Mapping[str, Any]],
    metrics: Mapping[str, PodMetric],
    now: datetime.datetime,
    *,
    tolerance: float = TOLERANCE,
    cpu_initialization_period: float = CPU_INITIALIZATION_PERIOD,
    initial_readiness_delay: float = INITIAL_READINESS_DELAY,
) -> tuple[int, int]:
    """Upstream's ``calcPlainMetricReplicas`` (an AverageValue target):
    (replicas, average usage); missing samples count as the target on a
    scale-down and as 0 on a scale-up."""
    samples, groups = _usable_samples(
        pods, metrics, resource, now, cpu_initialization_period, initial_readiness_delay
    )
    ratio, usage = usage_ratio(samples, target_usage)
    scale_up_with_unready = bool(groups.unready) and ratio > 1.0
    if not scale_up_with_unready and not groups.missing:
        if _within_tolerance(ratio, tolerance):
            return current_replicas, usage
        return math.ceil(ratio * groups.ready), usage
    if groups.missing:
        if ratio < 1.0:
            for name in groups.missing:
                samples[name] = PodMetric(target_usage)
        elif ratio > 1.0:
            for name in groups.missing:
                samples[name] = PodMetric(0)
    if scale_up_with_unready:
        for name in groups.unready:
            samples[name] = PodMetric(0)
    new_ratio, _ = usage_ratio(samples, target_usage)
    return _settle(current_replicas, ratio, new_ratio, len(samples), tolerance), usage


def _settle(current: int, ratio: float, new_ratio: float, counted: int, tolerance: float) -> int:
    """The count after the missing/unready assumptions: unchanged when the
    change is within tolerance or the assumptions flipped its direction."""
    if (
        _within_tolerance(new_ratio, tolerance)
        or (ratio < 1.0 < new_ratio)
        or (ratio > 1.0 > new_ratio)
    ):
        return current
    replicas = math.ceil(new_ratio * counted)
    if (new_ratio < 1.0 and replicas > current) or (new_ratio > 1.0 and replicas < current):
        return current
    return replicas


# --- behaviour (upstream's defaults.go and horizontal.go normalisation) ----------------


def normalized_behavior(behavior: Mapping[str, Any]) -> Obj:
    """``spec.behavior`` with upstream's defaults and the 300 s scale-down window."""
    up = autoscalingbehaviors.completed(
        behavior.get("scaleUp"), autoscalingbehaviors.scale_up_defaults()
    )
    down = autoscalingbehaviors.completed(
        behavior.get("scaleDown"), autoscalingbehaviors.scale_down_defaults()
    )
    down.setdefault("stabilizationWindowSeconds", int(DOWNSCALE_STABILIZATION))
    return {"scaleUp": up, "scaleDown": down}


@dataclasses.dataclass
class _Recommendation:
    replicas: int
    at: float


@dataclasses.dataclass
class _ScaleEvent:
    change: int
    at: float
    outdated: bool = False


def _changed_within(period: float, scale_events: Sequence[_ScaleEvent], now: float) -> int:
    cutoff = now - period
    return sum(e.change for e in scale_events if e.at > cutoff)


def scale_up_limit(
    current: int,
    ups: Sequence[_ScaleEvent],
    downs: Sequence[_ScaleEvent],
    rules: Mapping[str, Any],
    now: float,
) -> int:
    """The most replicas the scale-up policies allow now, counted from the
    replicas there were at the start of each policy's period."""
    select = rules.get("selectPolicy") or "Max"
    if select == "Disabled":
        return current
    pick = min if select == "Min" else max
    result: int | None = None
    for policy in rules.get("policies") or []:
        period = float(policy.get("periodSeconds") or 0)
        start = current - _changed_within(period, ups, now) + _changed_within(period, downs, now)
        value = int(policy.get("value") or 0)
        if policy.get("type") == "Pods":
            proposed = start + value
        else:
            proposed = math.ceil(start * (1 + value / 100))
        result = proposed if result is None else pick(result, proposed)
    return result if result is not None else current


def scale_down_limit(
    current: int,
    ups: Sequence[_ScaleEvent],
    downs: Sequence[_ScaleEvent],
    rules: Mapping[str, Any],
    now: float,
) -> int:
    """The fewest replicas the scale-down policies allow now."""
    select = rules.get("selectPolicy") or "Max"
    if select == "Disabled":
        return current
    pick = max if select == "Min" else min
    result: int | None = None
    for policy in rules.get("policies") or []:
        period = float(policy.get("periodSeconds") or 0)
        start = current - _changed_within(period, ups, now) + _changed_within(period, downs, now)
        value = int(policy.get("value") or 0)
        if policy.get("type") == "Pods":
            proposed = start - value
        else:
            proposed = int(start * (1 - value / 100))
        result = proposed if result is None else pick(result, proposed)
    return result if result is not None else current


def limits_without_behavior(
    current: int, desired: int, min_replicas: int, max_replicas: int
) -> tuple[int, str, str]:
    """Upstream's ``convertDesiredReplicasWithRules``: the bounds, and at most
    ``max(2 * current, 4)`` on the way up."""
    up_limit = int(max(SCALE_UP_LIMIT_FACTOR * current, SCALE_UP_LIMIT_MINIMUM))
    if max_replicas > up_limit:
        maximum = up_limit
        reason, message = (
            "ScaleUpLimit",
            "the desired replica count is increasing faster than the maximum scale rate",
        )
    else:
        maximum = max_replicas
        reason, message = (
            "TooManyReplicas",
            "the desired replica count is more than the maximum replica count",
        )
    if desired < min_replicas:
        return (
            min_replicas,
            "TooFewReplicas",
            "the desired replica count is less than the minimum replica count",
        )
    if desired > maximum:
        return maximum, reason, message
    return desired, "DesiredWithinRange", "the desired count is within the acceptable range"


# --- conditions and status ----------------------------------------------------------------


def set_condition(
    conditions: list[Obj], kind: str, status: str, reason: str, message: str, now: str
) -> None:
    """Upstream's ``setConditionInList``: in place, keeping the order; the
    transition time moves only when the status does."""
    for condition in conditions:
        if condition.get("type") == kind:
            break
    else:
        condition = {"type": kind}
        conditions.append(condition)
    if condition.get("status") != status:
        condition["lastTransitionTime"] = now
    condition["status"] = status
    condition["reason"] = reason
    condition["message"] = message


def _target_reference(hpa: Mapping[str, Any]) -> tuple[str, str, str]:
    ref = (hpa.get("spec") or {}).get("scaleTargetRef") or {}
    return str(ref.get("apiVersion") or ""), str(ref.get("kind") or ""), str(ref.get("name") or "")


@dataclasses.dataclass
class _Sync:
    """One reconciliation's working state: the HPA copy whose status is rebuilt."""

    key: str
    hpa: Obj
    conditions: list[Obj]
    now: datetime.datetime

    @property
    def stamp(self) -> str:
        return times.rfc3339(self.now)

    @property
    def namespace(self) -> str:
        return str(self.hpa["metadata"].get("namespace") or "")

    def set(self, kind: str, status: str, reason: str, message: str) -> None:
        set_condition(self.conditions, kind, status, reason, message, self.stamp)


class HorizontalPodAutoscalerController:
    """Scales the targets of every HorizontalPodAutoscaler by their metrics."""

    def __init__(
        self,
        client: clients.ApiClient,
        factory: informers.InformerFactory,
        *,
        clock: clocks.Clock | None = None,
        recorder: events.EventRecorder | None = None,
        workers: int = 2,
        sync_period: float = SYNC_PERIOD,
        tolerance: float = TOLERANCE,
        downscale_stabilization: float = DOWNSCALE_STABILIZATION,
        cpu_initialization_period: float = CPU_INITIALIZATION_PERIOD,
        initial_readiness_delay: float = INITIAL_READINESS_DELAY,
    ) -> None:
        self.client = client
        self.factory = factory
        self.clock = clock or factory.clock or clocks.SystemClock()
        self.recorder = recorder
        self.sync_period = sync_period
        self.tolerance = tolerance
        self.downscale_stabilization = downscale_stabilization
        self.cpu_initialization_period = cpu_initialization_period
        self.initial_readiness_delay = initial_readiness_delay
        self.hpas = factory.informer(HPAS)
        self.pods = factory.informer(PODS)
        self.crds = factory.informer(CRDS)
        self.controller = controllers.Controller(
            "horizontal-pod-autoscaler", self.sync, workers=workers, clock=self.clock
        )
        # Per HPA key: unstabilised recommendations, scale events per
        # direction, and the selector last seen (for the ambiguity check).
        self.recommendations: dict[str, list[_Recommendation]] = {}
        self.scale_up_events: dict[str, list[_ScaleEvent]] = {}
        self.scale_down_events: dict[str, list[_ScaleEvent]] = {}
        self.selectors: dict[str, selectors.LabelSelector] = {}
        self._subscriptions: list[tuple[informers.Informer, informers.EventHandlers]] = []

    async def start(self) -> None:
        self._subscriptions = [
            (
                self.hpas,
                self.hpas.add_handlers(self._added, self._updated, self._deleted),
            )
        ]
        self.factory.start()
        self.controller.start([self.hpas, self.pods, self.crds])

    async def stop(self) -> None:
        await self.controller.stop()
        for informer, handlers in self._subscriptions:
            informer.remove_handlers(handlers)
        self._subscriptions = []

    # --- handlers ----------------------------------------------------------------------

    def _added(self, hpa: clients.Object) -> None:
        self.controller.enqueue(hpa)

    def _updated(self, old: clients.Object, new: clients.Object) -> None:
        """A spec change syncs now; anything else (our own status writes
        included) waits for the period, as upstream, so that a status write
        cannot make the HPA re-decide, and re-scale, at once."""
        old_generation = (old.get("metadata") or {}).get("generation")
        if old_generation != (new.get("metadata") or {}).get("generation"):
            self.controller.enqueue(new)
        else:
            self.controller.enqueue_after(new, self.sync_period)

    def _deleted(self, hpa: clients.Object) -> None:
        self.controller.enqueue(hpa)

    # --- the sync ------------------------------------------------------------------------

    async def sync(self, key: str) -> None:
        cached = self.hpas.get(key)
        if cached is None:
            self.recommendations.pop(key, None)
            self.scale_up_events.pop(key, None)
            self.scale_down_events.pop(key, None)
            self.selectors.pop(key, None)
            return
        try:
            await self.reconcile(key, cached)
        finally:
            # Metrics move without any object changing: look again every period.
            self.controller.queue.add_after(key, self.sync_period)

    async def reconcile(self, key: str, cached: Obj) -> None:
        hpa = values.clone(cached)
        original = values.clone(cached.get("status") or {})
        status = hpa.get("status") or {}
        conditions: list[Obj] = [values.clone(c) for c in status.get("conditions") or []]
        run = _Sync(key, hpa, conditions, self.clock.now())
        spec = hpa.get("spec") or {}
        api_version, kind, name = _target_reference(hpa)
        reference = f"{kind}/{run.namespace}/{name}"

        try:
            resource = self._target_resource(api_version, kind)
            scale = await self.client.get_subresource(resource, run.namespace, name, "scale")
        except (LookupError, errors.StatusError) as err:
            message = err.message if isinstance(err, errors.StatusError) else str(err)
            self._event(hpa, "Warning", "FailedGetScale", message)
            run.set(
                ABLE_TO_SCALE,
                "False",
                "FailedGetScale",
                f"the HPA controller was unable to get the target's current scale: {message}",
            )
            kept = list(status.get("currentMetrics") or [])
            await self._write_status(run, original, self._status(run, status, None, None, kept))
            log.info(
                "hpa %s: failed to query scale subresource for %s: %s", key, reference, message
            )
            return
        run.set(
            ABLE_TO_SCALE,
            "True",
            "SucceededGetScale",
            "the HPA controller was able to get the target's current scale",
        )
        current = int((scale.get("spec") or {}).get("replicas") or 0)
        now = self.clock.monotonic()
        self.recommendations.setdefault(key, [_Recommendation(current, now)])

        min_replicas = spec.get("minReplicas")
        min_replicas = 1 if min_replicas is None else int(min_replicas)
        max_replicas = int(spec.get("maxReplicas") or 0)
        desired = 0
        reason = ""
        rescale = True
        metric_statuses: list[Obj] = []

        if current == 0:
            rescale = False
            run.set(
                SCALING_ACTIVE,
                "False",
                "ScalingDisabled",
                "scaling is disabled since the replica count of the target is zero",
            )
        elif current > max_replicas:
            reason = "Current number of replicas above Spec.MaxReplicas"
            desired = max_replicas
        elif current < min_replicas:
            reason = "Current number of replicas below Spec.MinReplicas"
            desired = min_replicas
        else:
            outcome = await self._replicas_for_metrics(run, scale, current)
            if outcome is None:
                return
            proposed, metric_name, metric_statuses = outcome
            rescale_metric = ""
            if proposed > desired:
                desired = proposed
                rescale_metric = metric_name
            if desired > current:
                reason = f"{rescale_metric} above target"
            if desired < current:
                reason = "All metrics below target"
            behavior = spec.get("behavior")
            if behavior is None:
                desired = self._normalize(run, current, desired, min_replicas, max_replicas)
            else:
                desired = self._normalize_with_behavior(
                    run, normalized_behavior(behavior), current, desired, min_replicas, max_replicas
                )
            rescale = desired != current

        if rescale:
            failure = await self._rescale(resource, run, scale, desired)
            if failure is not None:
                self._event(
                    hpa,
                    "Warning",
                    "FailedRescale",
                    f"New size: {desired}; reason: {reason}; error: {failure}",
                )
                run.set(
                    ABLE_TO_SCALE,
                    "False",
                    "FailedUpdateScale",
                    f"the HPA controller was unable to update the target scale: {failure}",
                )
                await self._write_status(
                    run, original, self._status(run, status, current, None, metric_statuses)
                )
                return
            run.set(
                ABLE_TO_SCALE,
                "True",
                "SucceededRescale",
                f"the HPA controller was able to update the target scale to {desired}",
            )
            self._event(
                hpa, "Normal", "SuccessfulRescale", f"New size: {desired}; reason: {reason}"
            )
            if spec.get("behavior") is not None:
                self._store_scale_event(
                    key, normalized_behavior(spec["behavior"]), current, desired
                )
            log.info(
                "hpa %s: rescaled %s from %d to %d: %s", key, reference, current, desired, reason
            )
        else:
            desired = current
        new_status = self._status(run, status, current, desired, metric_statuses)
        if rescale:
            new_status["lastScaleTime"] = run.stamp
        await self._write_status(run, original, new_status)

    # --- the target ------------------------------------------------------------------------

    def _target_resource(self, api_version: str, kind: str) -> clients.ResourceRef:
        """The target's resource from the built-in kinds, or from the CRDs
        (any served version of the kind's group, as upstream's REST mapper)."""
        group, _, version = api_version.rpartition("/")
        if not version or not kind:
            raise LookupError(f'no matches for kind "{kind}" in version "{api_version}"')
        try:
            return clients.resolve(api_version, kind)
        except LookupError:
            pass
        for crd in self.crds.objects():
            crd_spec = crd.get("spec") or {}
            names = crd_spec.get("names") or {}
            if crd_spec.get("group") != group or names.get("kind") != kind:
                continue
            served = [
                str(v.get("name")) for v in crd_spec.get("versions") or [] if v.get("served", True)
            ]
            chosen = version if version in served else (served[0] if served else version)
            return clients.ResourceRef(
                group,
                chosen,
                str(names.get("plural") or ""),
                crd_spec.get("scope", "Namespaced") == "Namespaced",
                kind,
            )
        raise LookupError(f'no matches for kind "{kind}" in group "{group}"')

    async def _rescale(
        self, resource: clients.ResourceRef, run: _Sync, scale: Obj, desired: int
    ) -> str | None:
        """Write ``desired`` through the scale subresource, re-reading it on a
        conflict (upstream's RetryOnConflict); the error text on failure."""
        _, _, name = _target_reference(run.hpa)
        last = ""
        for _ in range(CONFLICT_RETRIES):
            body = values.clone(scale)
            body.setdefault("spec", {})["replicas"] = desired
            try:
                await self.client.update_subresource(resource, run.namespace, name, "scale", body)
                return None
            except errors.StatusError as err:
                last = err.message
                if err.code != 409:
                    return last
            try:
                scale = await self.client.get_subresource(resource, run.namespace, name, "scale")
            except errors.StatusError as err:
                log.warning("hpa %s: re-reading the scale after a conflict: %s", run.key, err)
        return last

    # --- metrics ---------------------------------------------------------------------------

    async def _replicas_for_metrics(
        self, run: _Sync, scale: Mapping[str, Any], current: int
    ) -> tuple[int, str, list[Obj]] | None:
        """Upstream's ``computeReplicasForMetrics``: the largest proposal; None
        (after writing the status) when no metric, or a failing one on the way
        down, leaves a decision to make."""
        selector = self._selector(run, str((scale.get("status") or {}).get("selector") or ""))
        specs = list((run.hpa.get("spec") or {}).get("metrics") or []) or [
            {
                "type": "Resource",
                "resource": {
                    "name": "cpu",
                    "target": {
                        "type": "Utilization",
                        "averageUtilization": DEFAULT_CPU_UTILIZATION,
                    },
                },
            }
        ]
        statuses: list[Obj] = []
        replicas = 0
        metric = ""
        failures: list[_MetricFailure] = []
        if selector is not None:
            pods = [
                p
                for p in self.pods.objects(run.namespace)
                if selector.matches((p.get("metadata") or {}).get("labels") or {})
            ]
            for spec in specs:
                try:
                    proposal, name, metric_status = await self._replicas_for_metric(
                        run, spec, current, selector, pods
                    )
                except _MetricFailure as failure:
                    self._event(run.hpa, "Warning", failure.reason, failure.error)
                    failures.append(failure)
                    continue
                statuses.append(metric_status)
                if replicas == 0 or proposal > replicas:
                    replicas, metric = proposal, name
        if selector is not None and (
            len(failures) < len(specs) and not (failures and replicas < current)
        ):
            run.set(
                SCALING_ACTIVE,
                "True",
                "ValidMetricFound",
                f"the HPA was able to successfully calculate a replica count from {metric}",
            )
            if failures:
                log.warning(
                    "hpa %s: invalid metrics (%d invalid out of %d), first error is: %s",
                    run.key,
                    len(failures),
                    len(specs),
                    failures[0].wrapped,
                )
            return replicas, metric, statuses
        status = run.hpa.get("status") or {}
        if failures:
            first = failures[0]
            run.set(
                SCALING_ACTIVE,
                "False",
                first.reason,
                f"the HPA was unable to compute the replica count: {first.error}",
            )
            summary = (
                f"invalid metrics ({len(failures)} invalid out of {len(specs)}), "
                f"first error is: {first.wrapped}"
            )
            self._event(run.hpa, "Warning", "FailedComputeMetricsReplicas", summary)
        previous = status.get("desiredReplicas")
        await self._write_status(
            run,
            status,
            self._status(run, status, current, previous, statuses),
        )
        return None

    def _selector(self, run: _Sync, text: str) -> selectors.LabelSelector | None:
        """The scale's selector, checked as upstream's ``validateAndParseSelector``:
        present, parseable, and not also selecting the pods of another HPA."""
        if not text:
            message = "selector is required"
            self._event(run.hpa, "Warning", "SelectorRequired", message)
            run.set(
                SCALING_ACTIVE,
                "False",
                "InvalidSelector",
                "the HPA target's scale is missing a selector",
            )
            return None
        try:
            selector = selectors.parse_label_selector(text)
        except errors.StatusError as err:
            message = (
                "couldn't convert selector into a corresponding internal selector object: "
                f"{err.message}"
            )
            self._event(run.hpa, "Warning", "InvalidSelector", message)
            run.set(SCALING_ACTIVE, "False", "InvalidSelector", message)
            return None
        self.selectors[run.key] = selector
        pods = [
            p
            for p in self.pods.objects(run.namespace)
            if selector.matches((p.get("metadata") or {}).get("labels") or {})
        ]
        others = sorted(
            other
            for other, theirs in self.selectors.items()
            if other != run.key
            and clients.split_key(other)[0] == run.namespace
            and self.hpas.get(other) is not None
            and any(theirs.matches((p.get("metadata") or {}).get("labels") or {}) for p in pods)
        )
        if others:
            message = (
                f"pods by selector {text} are controlled by more than one HPA "
                f"(e.g. [{' '.join(sorted([run.key, *others])[:2])}])"
            )
            self._event(run.hpa, "Warning", "AmbiguousSelector", message)
            run.set(SCALING_ACTIVE, "False", "AmbiguousSelector", message)
            return None
        return selector

    async def _replicas_for_metric(
        self,
        run: _Sync,
        spec: Mapping[str, Any],
        current: int,
        selector: selectors.LabelSelector,
        pods: Sequence[Mapping[str, Any]],
    ) -> tuple[int, str, Obj]:
        kind = spec.get("type")
        if kind == "Resource":
            source = spec.get("resource") or {}
            return await self._resource_metric(
                run, source, "", current, selector, pods, "Resource", "FailedGetResourceMetric"
            )
        if kind == "ContainerResource":
            source = spec.get("containerResource") or {}
            return await self._resource_metric(
                run,
                source,
                str(source.get("container") or ""),
                current,
                selector,
                pods,
                "ContainerResource",
                "FailedGetContainerResourceMetric",
            )
        if kind == "Pods":
            name = str(((spec.get("pods") or {}).get("metric") or {}).get("name") or "")
            error = (
                f"unable to get metric {name}: unable to fetch metrics from custom metrics API: "
                f"{NO_CUSTOM_METRICS}"
            )
            raise _MetricFailure(
                "FailedGetPodsMetric", error, f"failed to get pods metric value: {error}"
            )
        if kind == "Object":
            source = spec.get("object") or {}
            name = str((source.get("metric") or {}).get("name") or "")
            described = source.get("describedObject") or {}
            error = (
                f"unable to get metric {name} on {described.get('kind', '')} "
                f"{run.namespace}/{described.get('name', '')}: unable to fetch metrics from "
                f"custom metrics API: {NO_CUSTOM_METRICS}"
            )
            if (source.get("target") or {}).get("type") == "AverageValue":
                error = f"failed to get {name} object metric: {error}"
            raise _MetricFailure(
                "FailedGetObjectMetric", error, f"failed to get object metric value: {error}"
            )
        if kind == "External":
            source = spec.get("external") or {}
            metric = source.get("metric") or {}
            name = str(metric.get("name") or "")
            chosen = selectors.label_selector_from_object(metric.get("selector") or {})
            inner = (
                f"unable to get external metric {run.namespace}/{name}/{chosen}: unable to fetch "
                f"metrics from external metrics API: {NO_EXTERNAL_METRICS}"
            )
            if (source.get("target") or {}).get("averageValue") is not None:
                error = f"failed to get {name} external metric: {inner}"
            else:
                error = f"failed to get external metric {name}: {inner}"
            raise _MetricFailure(
                "FailedGetExternalMetric",
                error,
                f"failed to get {name} external metric value: {error}",
            )
        error = f'unknown metric source type "{kind}"'
        raise _MetricFailure("InvalidMetricSourceType", error, error)

    async def _resource_metric(
        self,
        run: _Sync,
        source: Mapping[str, Any],
        container: str,
        current: int,
        selector: selectors.LabelSelector,
        pods: Sequence[Mapping[str, Any]],
        source_type: str,
        failure_reason: str,
    ) -> tuple[int, str, Obj]:
        """A Resource or ContainerResource metric from ``metrics.k8s.io``:
        (proposal, the metric as the rescale reason names it, its status)."""
        resource = str(source.get("name") or "")
        target = source.get("target") or {}
        what = "container" if container else "resource"

        def fail(error: str) -> _MetricFailure:
            subject = container if container else resource
            return _MetricFailure(
                failure_reason, error, f"failed to get {subject} {what} metric value: {error}"
            )

        binary = resource == "memory"
        try:
            if target.get("averageValue") is not None:
                try:
                    metrics = await self._pod_metrics(run.namespace, selector, resource, container)
                    replicas, usage = raw_usage_replicas(
                        current,
                        milli_value(target["averageValue"]),
                        resource,
                        pods,
                        metrics,
                        run.now,
                        tolerance=self.tolerance,
                        cpu_initialization_period=self.cpu_initialization_period,
                        initial_readiness_delay=self.initial_readiness_delay,
                    )
                except (MetricError, quantities.QuantityError) as err:
                    raise MetricError(f"failed to get {resource} usage: {err}") from None
                name = f"{resource} resource"
                current_value: Obj = {"averageValue": format_milli(usage, binary=binary)}
            elif target.get("averageUtilization") is not None:
                try:
                    metrics = await self._pod_metrics(run.namespace, selector, resource, container)
                    replicas, utilization, raw = resource_utilization_replicas(
                        current,
                        int(target["averageUtilization"]),
                        resource,
                        pods,
                        metrics,
                        run.now,
                        container=container,
                        tolerance=self.tolerance,
                        cpu_initialization_period=self.cpu_initialization_period,
                        initial_readiness_delay=self.initial_readiness_delay,
                    )
                except (MetricError, quantities.QuantityError) as err:
                    raise MetricError(f"failed to get {resource} utilization: {err}") from None
                kind = "container resource" if container else "resource"
                name = f"{resource} {kind} utilization (percentage of request)"
                current_value = {
                    "averageUtilization": utilization,
                    "averageValue": format_milli(raw, binary=binary),
                }
            else:
                raise MetricError(
                    "invalid resource metric source: neither an average utilization target "
                    "nor an average value (usage) target was set"
                )
        except MetricError as err:
            raise fail(str(err)) from None
        body: Obj = {"name": resource, "current": current_value}
        if container:
            body["container"] = container
            return replicas, name, {"type": source_type, "containerResource": body}
        return replicas, name, {"type": source_type, "resource": body}

    async def _pod_metrics(
        self, namespace: str, selector: selectors.LabelSelector, resource: str, container: str
    ) -> dict[str, PodMetric]:
        """Samples from the resource metrics API (upstream's
        ``GetResourceMetric``), errors in its words."""
        prefix = f"unable to get metrics for resource {resource}"
        try:
            listed = await self.client.list(POD_METRICS, namespace, label_selector=str(selector))
        except errors.StatusError as err:
            raise MetricError(
                f"{prefix}: unable to fetch metrics from resource metrics API: {err.message}"
            ) from None
        if not listed.items:
            raise MetricError(f"{prefix}: no metrics returned from resource metrics API")
        try:
            return pod_metrics(listed.items, resource, container)
        except MetricError as err:
            raise MetricError(f"{prefix}: {err}") from None

    # --- normalisation ---------------------------------------------------------------------

    def _normalize(
        self, run: _Sync, current: int, desired: int, min_replicas: int, max_replicas: int
    ) -> int:
        """Without behaviour: the highest recommendation of the stabilisation
        window, then the bounds and the default scale-up limit."""
        stabilized = self._stabilize(run.key, desired)
        if stabilized != desired:
            run.set(
                ABLE_TO_SCALE,
                "True",
                "ScaleDownStabilized",
                "recent recommendations were higher than current one, applying the highest "
                "recent recommendation",
            )
        else:
            run.set(
                ABLE_TO_SCALE, "True", "ReadyForNewScale", "recommended size matches current size"
            )
        limited, reason, message = limits_without_behavior(
            current, stabilized, min_replicas, max_replicas
        )
        run.set(SCALING_LIMITED, "False" if limited == stabilized else "True", reason, message)
        return limited

    def _stabilize(self, key: str, desired: int) -> int:
        now = self.clock.monotonic()
        cutoff = now - self.downscale_stabilization
        history = self.recommendations.setdefault(key, [])
        highest = desired
        old: int | None = None
        for i, rec in enumerate(history):
            if rec.at < cutoff:
                old = i
            elif rec.replicas > highest:
                highest = rec.replicas
        if old is not None:
            history[old] = _Recommendation(desired, now)
        else:
            history.append(_Recommendation(desired, now))
        return highest

    def _normalize_with_behavior(
        self,
        run: _Sync,
        behavior: Mapping[str, Any],
        current: int,
        desired: int,
        min_replicas: int,
        max_replicas: int,
    ) -> int:
        """With behaviour: stabilise within both windows, then the rate
        policies and the bounds (upstream's ``normalizeDesiredReplicasWithBehaviors``)."""
        stabilized, reason, message = self._stabilize_with_behavior(
            run.key, behavior, current, desired
        )
        if stabilized != desired:
            run.set(ABLE_TO_SCALE, "True", reason, message)
        else:
            run.set(
                ABLE_TO_SCALE, "True", "ReadyForNewScale", "recommended size matches current size"
            )
        limited, reason, message = self._behavior_rate(
            run.key, behavior, current, stabilized, min_replicas, max_replicas
        )
        run.set(SCALING_LIMITED, "False" if limited == stabilized else "True", reason, message)
        return limited

    def _stabilize_with_behavior(
        self, key: str, behavior: Mapping[str, Any], current: int, desired: int
    ) -> tuple[int, str, str]:
        now = self.clock.monotonic()
        up_cutoff = now - float(behavior["scaleUp"].get("stabilizationWindowSeconds") or 0)
        down_cutoff = now - float(behavior["scaleDown"].get("stabilizationWindowSeconds") or 0)
        up = down = desired
        history = self.recommendations.setdefault(key, [])
        old: int | None = None
        for i, rec in enumerate(history):
            if rec.at > up_cutoff:
                up = min(rec.replicas, up)
            if rec.at > down_cutoff:
                down = max(rec.replicas, down)
            if rec.at < up_cutoff and rec.at < down_cutoff:
                old = i
        recommendation = min(max(current, up), down)
        if old is not None:
            history[old] = _Recommendation(desired, now)
        else:
            history.append(_Recommendation(desired, now))
        if desired >= current:
            return (
                recommendation,
                "ScaleUpStabilized",
                "recent recommendations were lower than current one, applying the lowest "
                "recent recommendation",
            )
        return (
            recommendation,
            "ScaleDownStabilized",
            "recent recommendations were higher than current one, applying the highest "
            "recent recommendation",
        )

    def _behavior_rate(
        self,
        key: str,
        behavior: Mapping[str, Any],
        current: int,
        desired: int,
        min_replicas: int,
        max_replicas: int,
    ) -> tuple[int, str, str]:
        now = self.clock.monotonic()
        ups = self.scale_up_events.get(key, [])
        downs = self.scale_down_events.get(key, [])
        if desired > current:
            limit = max(scale_up_limit(current, ups, downs, behavior["scaleUp"], now), current)
            if max_replicas > limit:
                maximum, reason, message = (
                    limit,
                    "ScaleUpLimit",
                    "the desired replica count is increasing faster than the maximum scale rate",
                )
            else:
                maximum, reason, message = (
                    max_replicas,
                    "TooManyReplicas",
                    "the desired replica count is more than the maximum replica count",
                )
            if desired > maximum:
                return maximum, reason, message
        elif desired < current:
            limit = min(scale_down_limit(current, ups, downs, behavior["scaleDown"], now), current)
            if min_replicas < limit:
                minimum, reason, message = (
                    limit,
                    "ScaleDownLimit",
                    "the desired replica count is decreasing faster than the maximum scale rate",
                )
            else:
                minimum, reason, message = (
                    min_replicas,
                    "TooFewReplicas",
                    "the desired replica count is less than the minimum replica count",
                )
            if desired < minimum:
                return minimum, reason, message
        return desired, "DesiredWithinRange", "the desired count is within the acceptable range"

    def _store_scale_event(
        self, key: str, behavior: Mapping[str, Any], previous: int, new: int
    ) -> None:
        """Remember a scale for the policies' periods, re-using an entry older
        than the longest period (upstream's ``storeScaleEvent``)."""
        now = self.clock.monotonic()
        if new > previous:
            rules, history, change = behavior["scaleUp"], self.scale_up_events, new - previous
        else:
            rules, history, change = behavior["scaleDown"], self.scale_down_events, previous - new
        longest = max(
            (float(p.get("periodSeconds") or 0) for p in rules.get("policies") or []), default=0.0
        )
        entries = history.setdefault(key, [])
        old: int | None = None
        for i, event in enumerate(entries):
            if event.at < now - longest:
                event.outdated = True
            if event.outdated:
                old = i
        if old is not None:
            entries[old] = _ScaleEvent(change, now)
        else:
            entries.append(_ScaleEvent(change, now))

    # --- writing -----------------------------------------------------------------------------

    def _status(
        self,
        run: _Sync,
        previous: Mapping[str, Any],
        current: int | None,
        desired: int | None,
        metric_statuses: list[Obj],
    ) -> Obj:
        """The status upstream's ``setStatus`` rebuilds: counts, metrics,
        the kept lastScaleTime, the conditions and the observed generation."""
        status: Obj = {}
        generation = run.hpa["metadata"].get("generation")
        if generation is not None:
            status["observedGeneration"] = generation
        if previous.get("lastScaleTime"):
            status["lastScaleTime"] = previous["lastScaleTime"]
        current_replicas = current if current is not None else previous.get("currentReplicas")
        if current_replicas:  # omitempty upstream, unlike desiredReplicas
            status["currentReplicas"] = int(current_replicas)
        desired_replicas = desired if desired is not None else previous.get("desiredReplicas")
        status["desiredReplicas"] = int(desired_replicas or 0)
        if metric_statuses:
            status["currentMetrics"] = metric_statuses
        if run.conditions:
            status["conditions"] = run.conditions
        return status

    async def _write_status(self, run: _Sync, original: Mapping[str, Any], status: Obj) -> None:
        """Write the status through its subresource, only when it changed. A
        merge patch that nulls what went away, so that a concurrent spec
        change cannot fail it."""
        if values.equal(dict(original), status):
            return
        patch: Obj = {k: None for k in original if k not in status}
        patch.update(status)
        name = str(run.hpa["metadata"].get("name") or "")
        try:
            await self.client.patch(
                HPAS, run.namespace, name, {"status": patch}, subresource="status"
            )
        except errors.StatusError as err:
            if err.code == 404:
                return
            self._event(run.hpa, "Warning", "FailedUpdateStatus", err.message)
            raise

    def _event(self, hpa: Obj, event_type: str, reason: str, message: str) -> None:
        if self.recorder is not None:
            self.recorder.record(hpa, event_type, reason, message)
