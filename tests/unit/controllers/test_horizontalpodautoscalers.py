"""The HorizontalPodAutoscaler controller: upstream's replica calculation and
normalisation as a table of pure functions, and the controller on the
in-process stack with a fake ``metrics.k8s.io`` source and a FakeClock that
drives the 15 s syncs, stabilisation windows and policy periods.

No Deployment controller runs: the target's scale is what the HPA writes and
the tests read, and the pods the metrics describe are created by hand."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
from collections.abc import AsyncIterator
from typing import Any

import pytest

from nodeless import clocks
from nodeless.api import conversions, errors, kinds
from nodeless.apiserver import metrics
from nodeless.client import clients, informers
from nodeless.controllers import horizontalpodautoscalers as hpas
from tests.unit.controllers.conftest import Stack

HPAS = hpas.HPAS
HPAS_V1 = clients.ResourceRef(
    "autoscaling", "v1", "horizontalpodautoscalers", True, "HorizontalPodAutoscaler"
)
PODS = hpas.PODS
DEPLOYMENTS = clients.ResourceRef("apps", "v1", "deployments", True, "Deployment")
CONFIGMAPS = clients.ResourceRef("", "v1", "configmaps", True, "ConfigMap")
EVENTS = clients.ResourceRef("", "v1", "events", True, "Event")
NS = "default"
UTC = datetime.UTC
Obj = dict[str, Any]
MI = 2**20

NOW = datetime.datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


# --- the algorithm table -------------------------------------------------------------------


def _stamp(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def table_pod(
    name: str,
    *,
    cpu: str | None = "500m",
    phase: str = "Running",
    ready: bool = True,
    started: datetime.datetime = NOW - datetime.timedelta(minutes=30),
    ready_since: datetime.datetime | None = None,
    deleted: bool = False,
) -> Obj:
    requests = {"cpu": cpu} if cpu is not None else {}
    meta: Obj = {"name": name, "namespace": NS, "labels": {"app": "web"}}
    if deleted:
        meta["deletionTimestamp"] = _stamp(NOW)
    since = ready_since or started + datetime.timedelta(seconds=5)
    return {
        "metadata": meta,
        "spec": {"containers": [{"name": "app", "resources": {"requests": requests}}]},
        "status": {
            "phase": phase,
            "startTime": _stamp(started),
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True" if ready else "False",
                    "lastTransitionTime": _stamp(since),
                }
            ],
        },
    }


def samples(**milli: int) -> dict[str, hpas.PodMetric]:
    return {
        name.replace("_", "-"): hpas.PodMetric(value, NOW - datetime.timedelta(seconds=10), 15.0)
        for name, value in milli.items()
    }


def test_utilization_above_target_scales_by_the_ratio_over_ready_pods() -> None:
    pods = [table_pod("a"), table_pod("b")]
    # 450m of 500m is 90 % against a 50 % target: ratio 1.8, ceil(1.8 * 2) = 4.
    replicas, utilization, raw = hpas.resource_utilization_replicas(
        2, 50, "cpu", pods, samples(a=450, b=450), NOW
    )
    assert (replicas, utilization, raw) == (4, 90, 450)


def test_utilization_within_tolerance_keeps_the_current_count() -> None:
    pods = [table_pod("a"), table_pod("b")]
    # 54 % against 50 %: ratio 1.08 is within the 0.1 tolerance.
    replicas, utilization, _ = hpas.resource_utilization_replicas(
        2, 50, "cpu", pods, samples(a=270, b=270), NOW
    )
    assert (replicas, utilization) == (2, 54)


def test_missing_metrics_count_as_full_request_on_a_scale_down() -> None:
    pods = [table_pod("a"), table_pod("b"), table_pod("c")]
    # Two pods at 10 % would say 1 replica; the missing one counted at 100 %
    # gives (10 + 10 + 100) / 3 = 40 % against 50 %: ceil(0.8 * 3) = 3 -> no change.
    replicas, utilization, _ = hpas.resource_utilization_replicas(
        3, 50, "cpu", pods, samples(a=50, b=50), NOW
    )
    assert (replicas, utilization) == (3, 10)


def test_missing_metrics_count_as_zero_on_a_scale_up() -> None:
    pods = [table_pod(n) for n in "abcd"]
    # 2 pods at 100 %: ratio 2; with 2 missing at 0 %: 50 % average... against a
    # 40 % target that is 1.25 -> ceil(1.25 * 4) = 5 (not ceil(2.5 * 2) = 5 by luck:
    # the missing pods shrink the ratio).
    replicas, utilization, _ = hpas.resource_utilization_replicas(
        4, 40, "cpu", pods, samples(a=500, b=500), NOW
    )
    assert (replicas, utilization) == (5, 100)


def test_missing_metrics_that_would_flip_the_direction_keep_the_count() -> None:
    pods = [table_pod(n) for n in "abc"]
    # One pod at 60 % against 50 % says up; two missing at 0 % say down: stay.
    replicas, _, _ = hpas.resource_utilization_replicas(3, 50, "cpu", pods, samples(a=300), NOW)
    assert replicas == 3


def test_unready_pods_count_as_zero_only_when_scaling_up() -> None:
    never_ready = table_pod("c", ready=False)
    pods = [table_pod("a"), table_pod("b"), never_ready]
    # Up: a and b at 100 % against 50 %; c (never ready) counts 0 % -> 66 %
    # over 3 pods -> ratio 1.33 -> ceil(4) = 4.
    up, _, _ = hpas.resource_utilization_replicas(
        3, 50, "cpu", pods, samples(a=500, b=500, c=500), NOW
    )
    assert up == 4
    # Down: c is ignored, a and b at 10 % say ceil(0.2 * 2) = 1.
    down, _, _ = hpas.resource_utilization_replicas(
        3, 50, "cpu", pods, samples(a=50, b=50, c=500), NOW
    )
    assert down == 1


def test_cpu_readiness_rules_follow_the_initialization_period_and_readiness_delay() -> None:
    metric = samples(x=100)
    fresh = NOW - datetime.timedelta(minutes=2)
    old = NOW - datetime.timedelta(minutes=30)

    def unready(pod: Obj, resource: str = "cpu") -> bool:
        return "x" in hpas.group_pods([pod], metric, resource, NOW).unready

    # Within the 5 minute initialisation period: not ready, or ready more
    # recently than one metric window before the sample, is unready.
    assert unready(table_pod("x", started=fresh, ready=False))
    assert unready(table_pod("x", started=fresh, ready_since=NOW - datetime.timedelta(seconds=20)))
    assert not unready(
        table_pod("x", started=fresh, ready_since=NOW - datetime.timedelta(seconds=60))
    )
    # Later: only a pod that is not ready and never was (its readiness last
    # changed within 30 s of its start) is unready.
    assert unready(table_pod("x", started=old, ready=False))
    assert not unready(
        table_pod("x", started=old, ready=False, ready_since=old + datetime.timedelta(minutes=5))
    )
    # The readiness rules are cpu's only; pending pods are unready for every resource.
    assert not unready(table_pod("x", started=fresh, ready=False), "memory")
    assert unready(table_pod("x", phase="Pending"), "memory")


def test_deleted_and_failed_pods_are_ignored() -> None:
    pods = [table_pod("a"), table_pod("b", deleted=True), table_pod("c", phase="Failed")]
    groups = hpas.group_pods(pods, samples(a=100, b=100, c=100), "cpu", NOW)
    assert (groups.ready, groups.ignored) == (1, {"b", "c"})


def test_a_missing_request_is_upstreams_error() -> None:
    pods = [table_pod("a", cpu=None)]
    with pytest.raises(hpas.MetricError, match="missing request for cpu in container app of Pod a"):
        hpas.resource_utilization_replicas(1, 50, "cpu", pods, samples(a=100), NOW)


def test_raw_average_value_uses_the_target_for_missing_pods_on_the_way_down() -> None:
    pods = [table_pod(n) for n in "abc"]
    # a, b use 10 Mi against 64 Mi; c missing counts as 64 Mi: (10+10+64)/3 = 28 Mi
    # -> ratio 0.4375 -> ceil(1.31) = 2.
    mib = 1000 * MI
    replicas, usage = hpas.raw_usage_replicas(
        3, 64 * mib, "memory", pods, samples(a=10 * mib, b=10 * mib), NOW
    )
    assert (replicas, usage) == (2, 10 * mib)


def test_scale_up_policies_count_from_the_start_of_their_period() -> None:
    rules = hpas.normalized_behavior({})["scaleUp"]
    # From 1: max(+4 pods, +100 %) = 5.
    assert hpas.scale_up_limit(1, [], [], rules, now=100.0) == 5
    # 5 now, 4 of them added 10 s ago: the period started at 1, so still 5.
    recent = [hpas._ScaleEvent(4, 90.0)]
    assert hpas.scale_up_limit(5, recent, [], rules, now=100.0) == 5
    # Once the event is older than the period: max(5 + 4, 2 * 5) = 10.
    assert hpas.scale_up_limit(5, recent, [], rules, now=106.0) == 10
    minimal = {**rules, "selectPolicy": "Min"}
    assert hpas.scale_up_limit(5, [], [], minimal, now=0.0) == 9
    assert hpas.scale_up_limit(5, [], [], {**rules, "selectPolicy": "Disabled"}, now=0.0) == 5


def test_scale_down_policies_and_defaults() -> None:
    behavior = hpas.normalized_behavior(
        {"scaleDown": {"policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}]}}
    )
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] == 300
    assert behavior["scaleDown"]["selectPolicy"] == "Max"
    assert behavior["scaleUp"]["stabilizationWindowSeconds"] == 0
    assert hpas.scale_down_limit(10, [], [], behavior["scaleDown"], now=0.0) == 9
    percent = hpas.normalized_behavior({})["scaleDown"]
    assert hpas.scale_down_limit(10, [], [], percent, now=0.0) == 0


def test_the_default_scale_up_limit_without_behavior() -> None:
    assert hpas.limits_without_behavior(1, 20, 1, 10)[:2] == (4, "ScaleUpLimit")
    assert hpas.limits_without_behavior(3, 20, 1, 10)[:2] == (6, "ScaleUpLimit")
    assert hpas.limits_without_behavior(6, 20, 1, 10)[:2] == (10, "TooManyReplicas")
    assert hpas.limits_without_behavior(6, 1, 2, 10)[:2] == (2, "TooFewReplicas")
    assert hpas.limits_without_behavior(6, 5, 2, 10)[:2] == (5, "DesiredWithinRange")


def test_quantities_read_and_print_as_upstream() -> None:
    assert hpas.milli_value("250000000n") == 250
    assert hpas.milli_value("1n") == 1  # MilliValue rounds up
    assert hpas.milli_value("65536Ki") == 64 * MI * 1000
    assert hpas.format_milli(450) == "450m"
    assert hpas.format_milli(2000) == "2"
    assert hpas.format_milli(64 * MI * 1000, binary=True) == "64Mi"
    assert hpas.format_milli(1500 * 1000, binary=True) == "1500"
    assert hpas.format_milli(1500, binary=True) == "1500m"


def test_pod_metrics_sum_containers_or_pick_one() -> None:
    item = {
        "metadata": {"name": "a", "namespace": NS},
        "timestamp": _stamp(NOW),
        "window": "15s",
        "containers": [
            {"name": "app", "usage": {"cpu": "200000000n", "memory": "1024Ki"}},
            {"name": "sidecar", "usage": {"cpu": "50000000n", "memory": "1024Ki"}},
        ],
    }
    assert hpas.pod_metrics([item], "cpu")["a"] == hpas.PodMetric(250, NOW, 15.0)
    assert hpas.pod_metrics([item], "cpu", "sidecar")["a"].value == 50
    with pytest.raises(hpas.MetricError, match="container web not present"):
        hpas.pod_metrics([item], "cpu", "web")


# --- on the stack ----------------------------------------------------------------------------


@dataclasses.dataclass
class Usage:
    """The fake metrics source: per pod, cpu in millicores and memory in
    bytes per container, sampled at the fake clock's time."""

    clock: clocks.FakeClock
    pods: dict[str, Obj] = dataclasses.field(default_factory=dict)
    containers: dict[str, list[metrics.ContainerUsage]] = dataclasses.field(default_factory=dict)

    def set(self, pod: str, cpu_milli: int, memory: int = 32 * MI) -> None:
        self.containers[pod] = [metrics.ContainerUsage("app", cpu_milli * 1_000_000, memory)]

    async def __call__(self) -> list[metrics.PodUsage]:
        return [
            metrics.PodUsage(self.pods[name], self.clock.now(), 15.0, usage)
            for name, usage in self.containers.items()
            if name in self.pods
        ]


@dataclasses.dataclass
class Autoscaling:
    stack: Stack
    clock: clocks.FakeClock
    usage: Usage
    controller: hpas.HorizontalPodAutoscalerController


@pytest.fixture
async def env(stack: Stack) -> AsyncIterator[Autoscaling]:
    # Ten minutes past the real time the pods start at: they are past cpu
    # initialisation, so only their readiness matters.
    clock = clocks.FakeClock(datetime.datetime.now(UTC) + datetime.timedelta(minutes=10))
    usage = Usage(clock)
    stack.server.api.metrics_source = usage
    factory = informers.InformerFactory(stack.client)
    controller = hpas.HorizontalPodAutoscalerController(
        stack.client, factory, clock=clock, recorder=stack.recorder
    )
    await controller.start()
    await factory.wait_synced()
    try:
        yield Autoscaling(stack, clock, usage, controller)
    finally:
        await controller.stop()
        await factory.stop()


def deployment(replicas: int) -> Obj:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "namespace": NS},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "app", "image": "busybox"}]},
            },
        },
    }


def web_pod(name: str, *, requests: Obj | None = None, ready: bool = True) -> Obj:
    container: Obj = {
        "name": "app",
        "image": "busybox",
        "command": ["sleep", "3600"],
        "resources": {
            "requests": {"cpu": "500m", "memory": "64Mi"} if requests is None else requests
        },
    }
    if not ready:
        container["readinessProbe"] = {"exec": {"command": ["true"]}, "initialDelaySeconds": 3600}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "labels": {"app": "web"}},
        "spec": {"containers": [container]},
    }


async def target(
    env: Autoscaling, replicas: int, pods: int | None = None, **pod_options: Any
) -> None:
    """The Deployment ``web`` at ``replicas`` and that many running pods (or ``pods``)."""
    await env.stack.client.create(DEPLOYMENTS, deployment(replicas))
    count = replicas if pods is None else pods
    for i in range(count):
        made = await env.stack.client.create(PODS, web_pod(f"web-{i}", **pod_options))
        env.usage.pods[made["metadata"]["name"]] = made

    async def running() -> bool:
        found = await env.stack.pods(NS, "app=web")
        return len(found) == count and all(p["status"].get("phase") == "Running" for p in found)

    await env.stack.wait_for(running)

    async def cached() -> bool:
        return len(env.controller.pods.objects(NS)) == count and all(
            (p.get("status") or {}).get("phase") == "Running"
            for p in env.controller.pods.objects(NS)
        )

    await env.stack.wait_for(cached)


def autoscaler(
    max_replicas: int = 10, min_replicas: int | None = None, *, metrics_: Any = None, **spec: Any
) -> Obj:
    body: Obj = {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
        "maxReplicas": max_replicas,
        "metrics": metrics_
        if metrics_ is not None
        else [
            {
                "type": "Resource",
                "resource": {
                    "name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": 50},
                },
            }
        ],
        **spec,
    }
    if min_replicas is not None:
        body["minReplicas"] = min_replicas
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "web", "namespace": NS},
        "spec": body,
    }


async def settle(env: Autoscaling) -> None:
    """Until nothing is queued or in hand and the next periodic sync is set."""
    queue = env.controller.controller.queue
    for _ in range(500):
        if not len(queue) and not queue.processing and queue.waiting:
            await asyncio.sleep(0.05)
            if not len(queue) and not queue.processing and queue.waiting:
                return
        await asyncio.sleep(0.01)
    raise AssertionError("autoscaler never settled")


async def tick(env: Autoscaling, seconds: float = 15.0) -> None:
    """Move the fake clock on, one sync period at a time, letting each sync finish."""
    while seconds > 0:
        step = min(seconds, 15.0)
        await env.clock.advance(step)
        await settle(env)
        seconds -= step


async def start(env: Autoscaling, hpa: Obj, resource: clients.ResourceRef = HPAS) -> None:
    await env.stack.client.create(resource, hpa)

    async def synced() -> bool:
        found = await env.stack.client.get(HPAS, NS, "web")
        return bool((found.get("status") or {}).get("conditions"))

    await env.stack.wait_for(synced)
    await settle(env)


async def scale(env: Autoscaling) -> int:
    found = await env.stack.client.get_subresource(DEPLOYMENTS, NS, "web", "scale")
    return int(found["spec"]["replicas"])


async def status(env: Autoscaling) -> Obj:
    found: Obj = (await env.stack.client.get(HPAS, NS, "web")).get("status") or {}
    return found


def conditions(found: Obj) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in found.get("conditions") or []}


def condition_message(found: Obj, kind: str) -> str:
    return next(str(c["message"]) for c in found["conditions"] if c["type"] == kind)


async def hpa_events(env: Autoscaling) -> list[tuple[str, str, str]]:
    await env.stack.recorder.flush()
    items = (await env.stack.client.list(EVENTS, NS)).items
    items.sort(key=lambda e: int(e["metadata"]["resourceVersion"]))
    return [
        (e["type"], e["reason"], e["message"])
        for e in items
        if e["involvedObject"]["kind"] == "HorizontalPodAutoscaler"
    ]


async def test_high_cpu_scales_up_with_upstreams_event_and_status(env: Autoscaling) -> None:
    await target(env, 2)
    env.usage.set("web-0", 450)
    env.usage.set("web-1", 450)

    await start(env, autoscaler())

    assert await scale(env) == 4
    found = await status(env)
    assert found["currentReplicas"] == 2
    assert found["desiredReplicas"] == 4
    assert found["observedGeneration"] == 1
    assert found["lastScaleTime"] == _stamp(env.clock.now())
    assert found["currentMetrics"] == [
        {
            "type": "Resource",
            "resource": {
                "name": "cpu",
                "current": {"averageUtilization": 90, "averageValue": "450m"},
            },
        }
    ]
    assert conditions(found) == {
        "AbleToScale": ("True", "SucceededRescale"),
        "ScalingActive": ("True", "ValidMetricFound"),
        "ScalingLimited": ("False", "DesiredWithinRange"),
    }
    assert condition_message(found, "ScalingActive") == (
        "the HPA was able to successfully calculate a replica count from "
        "cpu resource utilization (percentage of request)"
    )
    assert (
        "Normal",
        "SuccessfulRescale",
        "New size: 4; reason: cpu resource utilization (percentage of request) above target",
    ) in await hpa_events(env)


async def test_usage_within_tolerance_changes_nothing(env: Autoscaling) -> None:
    await target(env, 2)
    env.usage.set("web-0", 270)
    env.usage.set("web-1", 260)

    await start(env, autoscaler())
    await tick(env, 30)

    assert await scale(env) == 2
    found = await status(env)
    assert (found["currentReplicas"], found["desiredReplicas"]) == (2, 2)
    assert "lastScaleTime" not in found
    assert conditions(found)["AbleToScale"] == ("True", "ReadyForNewScale")
    assert found["currentMetrics"][0]["resource"]["current"]["averageUtilization"] == 53
    assert not [e for e in await hpa_events(env) if e[1] == "SuccessfulRescale"]


async def test_scale_down_waits_out_the_five_minute_stabilization_window(env: Autoscaling) -> None:
    await target(env, 4)
    for i in range(4):
        env.usage.set(f"web-{i}", 50)  # 10 % against 50 %: one replica would do

    await start(env, autoscaler())
    await tick(env, 285)

    assert await scale(env) == 4
    found = await status(env)
    assert found["desiredReplicas"] == 4
    assert conditions(found)["AbleToScale"] == ("True", "ScaleDownStabilized")

    await tick(env, 30)

    assert await scale(env) == 1
    assert ("Normal", "SuccessfulRescale", "New size: 1; reason: All metrics below target") in (
        await hpa_events(env)
    )


async def test_scale_up_is_limited_per_period_by_the_default_behavior(env: Autoscaling) -> None:
    await target(env, 1)
    env.usage.set("web-0", 5000)  # 1000 % against 50 %: twenty replicas wanted

    await start(env, autoscaler(20, behavior={}))

    # max(+100 %, +4 pods) from 1 in one 15 s period.
    assert await scale(env) == 5
    found = await status(env)
    assert conditions(found)["ScalingLimited"] == ("True", "ScaleUpLimit")
    assert condition_message(found, "ScalingLimited") == (
        "the desired replica count is increasing faster than the maximum scale rate"
    )

    # A spec change syncs at once, but the period that began at 1 is not over.
    await env.stack.client.patch(HPAS, NS, "web", {"spec": {"maxReplicas": 30}})
    await env.stack.wait_for(
        lambda: _observed(env, 2),
    )
    assert await scale(env) == 5

    await tick(env)
    assert await scale(env) == 10  # max(5 + 4, 2 * 5)


async def _observed(env: Autoscaling, generation: int) -> bool:
    return (await status(env)).get("observedGeneration") == generation


async def test_scale_up_without_behavior_goes_at_most_to_twice_or_four(env: Autoscaling) -> None:
    await target(env, 1)
    env.usage.set("web-0", 5000)

    await start(env, autoscaler(20))

    assert await scale(env) == 4
    assert conditions(await status(env))["ScalingLimited"] == ("True", "ScaleUpLimit")


async def test_max_replicas_bounds_the_recommendation(env: Autoscaling) -> None:
    await target(env, 2)
    env.usage.set("web-0", 500)
    env.usage.set("web-1", 500)

    await start(env, autoscaler(3))

    assert await scale(env) == 3
    found = await status(env)
    assert conditions(found)["ScalingLimited"] == ("True", "TooManyReplicas")
    assert condition_message(found, "ScalingLimited") == (
        "the desired replica count is more than the maximum replica count"
    )


async def test_min_replicas_bounds_the_recommendation(env: Autoscaling) -> None:
    await target(env, 3)
    for i in range(3):
        env.usage.set(f"web-{i}", 25)

    no_window = {"scaleDown": {"stabilizationWindowSeconds": 0}}
    await start(env, autoscaler(10, 2, behavior=no_window))

    assert await scale(env) == 2
    found = await status(env)
    assert conditions(found)["ScalingLimited"] == ("True", "TooFewReplicas")


async def test_a_target_below_min_replicas_is_raised_without_metrics(env: Autoscaling) -> None:
    await target(env, 1)

    await start(env, autoscaler(10, 3))

    assert await scale(env) == 3
    assert (
        "Normal",
        "SuccessfulRescale",
        "New size: 3; reason: Current number of replicas below Spec.MinReplicas",
    ) in await hpa_events(env)


async def test_unready_pods_do_not_drive_a_scale_up(env: Autoscaling) -> None:
    await target(env, 2, ready=False)
    await target_extra_ready_pod(env)
    for i in range(3):
        env.usage.set(f"web-{i}", 400)  # 80 % against 50 %: ratio 1.6

    await start(env, autoscaler(10, metrics_=None))

    # The two never-ready pods count as 0 %: (80 + 0 + 0) / 3 = 26 %, which
    # would be a scale-down: the direction flips, so the scale stays.
    assert await scale(env) == 2
    assert (await status(env))["currentMetrics"][0]["resource"]["current"][
        "averageUtilization"
    ] == 80


async def target_extra_ready_pod(env: Autoscaling) -> None:
    made = await env.stack.client.create(PODS, web_pod("web-2"))
    env.usage.pods["web-2"] = made

    async def ready() -> bool:
        pod = next(
            (p for p in env.controller.pods.objects(NS) if p["metadata"]["name"] == "web-2"), None
        )
        return pod is not None and pod.get("status", {}).get("phase") == "Running"

    await env.stack.wait_for(ready)


async def test_missing_cpu_requests_fail_with_failed_get_resource_metric(
    env: Autoscaling,
) -> None:
    await target(env, 1, requests={"memory": "64Mi"})
    env.usage.set("web-0", 400)

    await start(env, autoscaler())

    found = await status(env)
    assert conditions(found)["ScalingActive"] == ("False", "FailedGetResourceMetric")
    assert condition_message(found, "ScalingActive") == (
        "the HPA was unable to compute the replica count: failed to get cpu utilization: "
        "missing request for cpu in container app of Pod web-0"
    )
    assert await scale(env) == 1
    reasons = {(e[0], e[1]) for e in await hpa_events(env)}
    assert ("Warning", "FailedGetResourceMetric") in reasons
    assert ("Warning", "FailedComputeMetricsReplicas") in reasons


async def test_no_metrics_at_all_is_reported(env: Autoscaling) -> None:
    await target(env, 1)

    await start(env, autoscaler())

    found = await status(env)
    assert conditions(found)["ScalingActive"] == ("False", "FailedGetResourceMetric")
    assert condition_message(found, "ScalingActive") == (
        "the HPA was unable to compute the replica count: failed to get cpu utilization: "
        "unable to get metrics for resource cpu: no metrics returned from resource metrics API"
    )


async def test_memory_average_value_target(env: Autoscaling) -> None:
    await target(env, 2)
    env.usage.set("web-0", 10, memory=128 * MI)
    env.usage.set("web-1", 10, memory=128 * MI)
    memory = [
        {
            "type": "Resource",
            "resource": {
                "name": "memory",
                "target": {"type": "AverageValue", "averageValue": "64Mi"},
            },
        }
    ]

    await start(env, autoscaler(metrics_=memory))

    assert await scale(env) == 4
    found = await status(env)
    assert found["currentMetrics"] == [
        {"type": "Resource", "resource": {"name": "memory", "current": {"averageValue": "128Mi"}}}
    ]
    assert ("Normal", "SuccessfulRescale", "New size: 4; reason: memory resource above target") in (
        await hpa_events(env)
    )


async def test_container_resource_utilization_reads_one_container(env: Autoscaling) -> None:
    await target(env, 2)
    env.usage.set("web-0", 450)
    env.usage.set("web-1", 450)
    container = [
        {
            "type": "ContainerResource",
            "containerResource": {
                "name": "cpu",
                "container": "app",
                "target": {"type": "Utilization", "averageUtilization": 50},
            },
        }
    ]

    await start(env, autoscaler(metrics_=container))

    assert await scale(env) == 4
    assert (await status(env))["currentMetrics"] == [
        {
            "type": "ContainerResource",
            "containerResource": {
                "name": "cpu",
                "container": "app",
                "current": {"averageUtilization": 90, "averageValue": "450m"},
            },
        }
    ]


async def test_a_target_without_scale_cannot_be_scaled(env: Autoscaling) -> None:
    await env.stack.client.create(
        CONFIGMAPS,
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "web", "namespace": NS}},
    )
    hpa = autoscaler()
    hpa["spec"]["scaleTargetRef"] = {"apiVersion": "v1", "kind": "ConfigMap", "name": "web"}

    await start(env, hpa)

    found = await status(env)
    assert conditions(found) == {"AbleToScale": ("False", "FailedGetScale")}
    assert condition_message(found, "AbleToScale").startswith(
        "the HPA controller was unable to get the target's current scale: "
    )
    assert "FailedGetScale" in {e[1] for e in await hpa_events(env) if e[0] == "Warning"}


async def test_an_unknown_target_kind_cannot_be_scaled(env: Autoscaling) -> None:
    hpa = autoscaler()
    hpa["spec"]["scaleTargetRef"] = {"apiVersion": "example.com/v1", "kind": "Thing", "name": "x"}

    await start(env, hpa)

    found = await status(env)
    assert condition_message(found, "AbleToScale") == (
        "the HPA controller was unable to get the target's current scale: "
        'no matches for kind "Thing" in group "example.com"'
    )


async def test_zero_replicas_on_the_target_disable_scaling(env: Autoscaling) -> None:
    await target(env, 0, pods=1)
    env.usage.set("web-0", 500)

    await start(env, autoscaler())
    await tick(env)

    assert await scale(env) == 0
    found = await status(env)
    assert conditions(found)["ScalingActive"] == ("False", "ScalingDisabled")
    assert condition_message(found, "ScalingActive") == (
        "scaling is disabled since the replica count of the target is zero"
    )
    assert "currentReplicas" not in found  # omitted when zero, as upstream
    assert found["desiredReplicas"] == 0


@pytest.mark.parametrize(
    ("metric", "reason", "message"),
    [
        (
            {
                "type": "Pods",
                "pods": {
                    "metric": {"name": "requests_per_second"},
                    "target": {"type": "AverageValue", "averageValue": "10"},
                },
            },
            "FailedGetPodsMetric",
            "the HPA was unable to compute the replica count: unable to get metric "
            "requests_per_second: unable to fetch metrics from custom metrics API: "
            "no custom metrics API (custom.metrics.k8s.io) is served by this cluster",
        ),
        (
            {
                "type": "Object",
                "object": {
                    "describedObject": {"apiVersion": "v1", "kind": "Service", "name": "web"},
                    "metric": {"name": "hits"},
                    "target": {"type": "Value", "value": "10"},
                },
            },
            "FailedGetObjectMetric",
            "the HPA was unable to compute the replica count: unable to get metric hits on "
            "Service default/web: unable to fetch metrics from custom metrics API: "
            "no custom metrics API (custom.metrics.k8s.io) is served by this cluster",
        ),
        (
            {
                "type": "External",
                "external": {
                    "metric": {"name": "queue_depth", "selector": {"matchLabels": {"q": "jobs"}}},
                    "target": {"type": "AverageValue", "averageValue": "30"},
                },
            },
            "FailedGetExternalMetric",
            "the HPA was unable to compute the replica count: failed to get queue_depth "
            "external metric: unable to get external metric default/queue_depth/q=jobs: "
            "unable to fetch metrics from external metrics API: no external metrics API "
            "(external.metrics.k8s.io) is served by this cluster",
        ),
    ],
)
async def test_custom_and_external_metrics_are_not_served(
    env: Autoscaling, metric: Obj, reason: str, message: str
) -> None:
    await target(env, 1)

    await start(env, autoscaler(metrics_=[metric]))

    found = await status(env)
    assert conditions(found)["ScalingActive"] == ("False", reason)
    assert condition_message(found, "ScalingActive") == message
    assert ("Warning", reason) in {(e[0], e[1]) for e in await hpa_events(env)}


async def test_a_working_metric_still_scales_up_beside_a_failing_one(env: Autoscaling) -> None:
    await target(env, 2)
    env.usage.set("web-0", 450)
    env.usage.set("web-1", 450)
    both = [
        autoscaler()["spec"]["metrics"][0],
        {
            "type": "Pods",
            "pods": {
                "metric": {"name": "rps"},
                "target": {"type": "AverageValue", "averageValue": "10"},
            },
        },
    ]

    await start(env, autoscaler(metrics_=both))

    assert await scale(env) == 4
    assert conditions(await status(env))["ScalingActive"] == ("True", "ValidMetricFound")


async def test_select_policy_disabled_keeps_the_scale(env: Autoscaling) -> None:
    await target(env, 2)
    env.usage.set("web-0", 500)
    env.usage.set("web-1", 500)

    await start(env, autoscaler(behavior={"scaleUp": {"selectPolicy": "Disabled"}}))
    await tick(env, 30)

    assert await scale(env) == 2
    found = await status(env)
    assert found["desiredReplicas"] == 2
    assert conditions(found)["ScalingLimited"] == ("True", "ScaleUpLimit")


async def test_autoscaling_v1_objects_are_served_from_the_same_autoscaler(
    env: Autoscaling,
) -> None:
    await target(env, 2)
    env.usage.set("web-0", 450)
    env.usage.set("web-1", 450)
    v1 = {
        "apiVersion": "autoscaling/v1",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "web", "namespace": NS},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
            "maxReplicas": 5,
            "targetCPUUtilizationPercentage": 50,
        },
    }

    await start(env, v1, HPAS_V1)

    assert await scale(env) == 4
    seen = await env.stack.client.get(HPAS_V1, NS, "web")
    assert seen["spec"]["minReplicas"] == 1
    assert seen["spec"]["targetCPUUtilizationPercentage"] == 50
    assert seen["status"]["currentCPUUtilizationPercentage"] == 90
    assert (seen["status"]["currentReplicas"], seen["status"]["desiredReplicas"]) == (2, 4)


async def test_defaults_fill_metrics_min_replicas_and_a_given_behavior(env: Autoscaling) -> None:
    bare = autoscaler(behavior={"scaleDown": {"selectPolicy": "Min"}})
    del bare["spec"]["metrics"]

    made = await env.stack.client.create(HPAS, bare)

    spec = made["spec"]
    assert spec["minReplicas"] == 1
    assert spec["metrics"] == [
        {
            "type": "Resource",
            "resource": {
                "name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 80},
            },
        }
    ]
    assert spec["behavior"]["scaleUp"] == {
        "stabilizationWindowSeconds": 0,
        "selectPolicy": "Max",
        "policies": [
            {"type": "Pods", "value": 4, "periodSeconds": 15},
            {"type": "Percent", "value": 100, "periodSeconds": 15},
        ],
    }
    assert spec["behavior"]["scaleDown"] == {
        "selectPolicy": "Min",
        "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}],
    }


WORKLOADS = clients.ResourceRef("example.com", "v1", "workloads", True, "Workload")


def workload_crd() -> Obj:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "workloads.example.com"},
        "spec": {
            "group": "example.com",
            "scope": "Namespaced",
            "names": {"plural": "workloads", "singular": "workload", "kind": "Workload"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": True,
                        }
                    },
                    "subresources": {
                        "status": {},
                        "scale": {
                            "specReplicasPath": ".spec.replicas",
                            "statusReplicasPath": ".status.replicas",
                            "labelSelectorPath": ".status.selector",
                        },
                    },
                }
            ],
        },
    }


async def test_a_custom_resource_with_a_scale_subresource_is_scaled(env: Autoscaling) -> None:
    await env.stack.client.create(hpas.CRDS, workload_crd())

    async def cached() -> bool:
        # Beside the CRDs the API server installs itself (Knative Serving's).
        names = {crd["metadata"]["name"] for crd in env.controller.crds.objects()}
        return workload_crd()["metadata"]["name"] in names

    await env.stack.wait_for(cached)

    async def created() -> Obj | None:
        try:
            return await env.stack.client.create(
                WORKLOADS,
                {
                    "apiVersion": "example.com/v1",
                    "kind": "Workload",
                    "metadata": {"name": "web", "namespace": NS},
                    "spec": {"replicas": 2},
                },
            )
        except errors.StatusError:
            return None  # the CRD is not served yet

    workload = await env.stack.wait_for(created)
    workload["status"] = {"replicas": 2, "selector": "app=web"}
    await env.stack.client.update_status(WORKLOADS, workload)
    for i in range(2):
        made = await env.stack.client.create(PODS, web_pod(f"web-{i}"))
        env.usage.pods[made["metadata"]["name"]] = made
        env.usage.set(f"web-{i}", 450)

    async def running() -> bool:
        pods = [p for p in env.controller.pods.objects(NS) if p["status"].get("phase") == "Running"]
        return len(pods) == 2

    await env.stack.wait_for(running)
    hpa = autoscaler()
    hpa["spec"]["scaleTargetRef"] = {
        "apiVersion": "example.com/v1",
        "kind": "Workload",
        "name": "web",
    }

    await start(env, hpa)

    found = await env.stack.client.get(WORKLOADS, NS, "web")
    assert found["spec"]["replicas"] == 4
    assert conditions(await status(env))["AbleToScale"] == ("True", "SucceededRescale")


async def test_two_autoscalers_over_the_same_pods_are_ambiguous(env: Autoscaling) -> None:
    await target(env, 2)
    env.usage.set("web-0", 450)
    env.usage.set("web-1", 450)
    await start(env, autoscaler())
    second = autoscaler()
    second["metadata"]["name"] = "web-too"

    await env.stack.client.create(HPAS, second)

    async def ambiguous() -> Obj | None:
        found = (await env.stack.client.get(HPAS, NS, "web-too")).get("status") or {}
        return found if conditions(found).get("ScalingActive", ("", ""))[1] else None

    found = await env.stack.wait_for(ambiguous)
    assert conditions(found)["ScalingActive"] == ("False", "AmbiguousSelector")
    assert condition_message(found, "ScalingActive") == (
        "pods by selector app=web are controlled by more than one HPA "
        "(e.g. [default/web default/web-too])"
    )


def test_a_v1_round_trip_keeps_what_only_v2_can_say() -> None:
    registry = kinds.Registry()
    v1 = registry.lookup("autoscaling", "v1", "horizontalpodautoscalers")
    assert v1 is not None
    stored = autoscaler(
        metrics_=[
            autoscaler()["spec"]["metrics"][0],
            {
                "type": "Resource",
                "resource": {
                    "name": "memory",
                    "target": {"type": "AverageValue", "averageValue": "64Mi"},
                },
            },
        ],
        behavior={"scaleDown": {"stabilizationWindowSeconds": 60}},
    )
    stored["status"] = {
        "currentReplicas": 2,
        "desiredReplicas": 2,
        "currentMetrics": [
            {
                "type": "Resource",
                "resource": {"name": "cpu", "current": {"averageUtilization": 40}},
            },
            {
                "type": "Resource",
                "resource": {"name": "memory", "current": {"averageValue": "1Mi"}},
            },
        ],
        "conditions": [{"type": "AbleToScale", "status": "True", "reason": "ReadyForNewScale"}],
    }

    served = conversions.from_storage(v1, stored)

    assert served["spec"]["targetCPUUtilizationPercentage"] == 50
    assert served["status"]["currentCPUUtilizationPercentage"] == 40
    assert "metrics" not in served["spec"] and "conditions" not in served["status"]
    assert set(served["metadata"]["annotations"]) == {
        "autoscaling.alpha.kubernetes.io/metrics",
        "autoscaling.alpha.kubernetes.io/behavior",
        "autoscaling.alpha.kubernetes.io/current-metrics",
        "autoscaling.alpha.kubernetes.io/conditions",
    }
    assert conversions.to_storage(v1, served) == stored
