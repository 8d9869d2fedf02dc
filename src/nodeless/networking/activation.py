"""Scale-from-zero serving: Deployments annotated to scale to zero go to 0
replicas when no request has come through the ingress gateway for their
grace period, and the first request after that wakes them.

The gateway is the only path that sees requests (as Knative's activator and
queue-proxy are), so only traffic through it counts as activity; traffic
straight to a ClusterIP does not keep a Deployment up. A held request waits
in the gateway until a pod is Ready and is then forwarded.

Opting in, on the Deployment::

    metadata:
      annotations:
        nodeless.dev/scale-to-zero: "true"
        nodeless.dev/scale-to-zero-grace: "5m"    # default 60s

Concurrency-based autoscaling, as Knative's KPA: a Deployment annotated
with a target concurrency per pod (``nodeless.dev/target-concurrency`` or
Knative's ``autoscaling.knative.dev/target``) is sized every second to
ceil(average requests in flight / target), averaged over a stable window
(60 s, ``autoscaling.knative.dev/window``) — or over the panic window (6 s,
a tenth of it) when that asks for at least twice the ready pods, in which
case it scales up at once and does not scale down until the burst has been
over for a stable window. Scale-down is at most halving per step; bounds
come from ``min-scale``/``max-scale`` (both prefixes).

A Deployment belongs to the Services whose selector its pod template
matches. Times come from the injected clock.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
from collections.abc import Callable, Mapping
from typing import Any

from nodeless import clocks
from nodeless.api import errors, knativeserving
from nodeless.client import clients, events, informers
from nodeless.instances.providers import commands
from nodeless.networking import servicemaps

log = logging.getLogger(__name__)

DEPLOYMENTS = clients.ResourceRef("apps", "v1", "deployments", True, "Deployment")
SCALE_TO_ZERO = knativeserving.SCALE_TO_ZERO
GRACE = knativeserving.SCALE_TO_ZERO_GRACE
DEFAULT_GRACE = 60.0
CHECK_INTERVAL = 1.0
TARGETS = (knativeserving.TARGET_CONCURRENCY, knativeserving.TARGET_ANNOTATION)
WINDOWS = (knativeserving.SCALING_WINDOW, knativeserving.WINDOW_ANNOTATION)
MIN_SCALES = (knativeserving.MIN_SCALE, knativeserving.MIN_SCALE_ANNOTATION)
MAX_SCALES = (knativeserving.MAX_SCALE, knativeserving.MAX_SCALE_ANNOTATION)
DEFAULT_WINDOW = 60.0
PANIC_WINDOW_SHARE = 0.1  # Knative's panic-window-percentage 10
PANIC_THRESHOLD = 2.0  # Knative's panic-threshold-percentage 200
MAX_SCALE_DOWN_RATE = 2.0

Key = tuple[str, str]


def enabled(deployment: Mapping[str, Any]) -> bool:
    annotations = (deployment.get("metadata") or {}).get("annotations") or {}
    return str(annotations.get(SCALE_TO_ZERO, "")).lower() == "true"


def grace_seconds(deployment: Mapping[str, Any]) -> float:
    annotations = (deployment.get("metadata") or {}).get("annotations") or {}
    text = annotations.get(GRACE)
    if text is None:
        return DEFAULT_GRACE
    try:
        return commands.parse_duration(str(text))
    except ValueError:
        log.warning("%s=%r is not a duration; using %ss", GRACE, text, DEFAULT_GRACE)
        return DEFAULT_GRACE


def _annotation(deployment: Mapping[str, Any], names: tuple[str, ...]) -> str | None:
    annotations = (deployment.get("metadata") or {}).get("annotations") or {}
    for name in names:
        if name in annotations:
            return str(annotations[name])
    return None


def target_concurrency(deployment: Mapping[str, Any]) -> float | None:
    """Requests in flight per pod the Deployment is sized for; None if not autoscaled."""
    text = _annotation(deployment, TARGETS)
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        log.warning("target concurrency %r is not a number", text)
        return None
    return value if value > 0 else None


def _bound(deployment: Mapping[str, Any], names: tuple[str, ...], default: int) -> int:
    text = _annotation(deployment, names)
    try:
        return max(0, int(text)) if text is not None else default
    except ValueError:
        return default


def window_seconds(deployment: Mapping[str, Any]) -> float:
    text = _annotation(deployment, WINDOWS)
    if text is None:
        return DEFAULT_WINDOW
    try:
        return max(6.0, commands.parse_duration(text))
    except ValueError:
        return DEFAULT_WINDOW


def selects(service: Mapping[str, Any], deployment: Mapping[str, Any]) -> bool:
    """Whether the Service's selector matches the Deployment's pods."""
    selector = (service.get("spec") or {}).get("selector") or {}
    if not selector:
        return False
    template = ((deployment.get("spec") or {}).get("template") or {}).get("metadata") or {}
    labels = template.get("labels") or {}
    return all(labels.get(k) == v for k, v in selector.items())


class ServingAutoscaler:
    """The gateway's activator, the idle scaler and the concurrency
    autoscaler, one per cluster, fed by the gateway's request counts."""

    def __init__(
        self,
        client: clients.ApiClient,
        factory: informers.InformerFactory,
        services: servicemaps.ServiceMap,
        *,
        clock: clocks.Clock | None = None,
        recorder: events.EventRecorder | None = None,
        interval: float = CHECK_INTERVAL,
    ) -> None:
        self.client = client
        self.services = services
        self.deployments = factory.informer(DEPLOYMENTS)
        self.clock = clock or clocks.SystemClock()
        self.recorder = recorder
        self.interval = interval
        self._last: dict[Key, float] = {}
        self._in_flight: dict[Key, int] = {}
        # Per Deployment: (time, requests in flight) once a tick, and when a
        # panic began (None outside one) with the most pods it asked for.
        self._samples: dict[Key, collections.deque[tuple[float, int]]] = {}
        self._panic: dict[Key, tuple[float, int]] = {}
        # Replica counts last seen per Deployment, and when they last changed.
        self._seen_replicas: dict[Key, int] = {}
        self._scaled_at: dict[Key, float] = {}
        self._handlers: informers.EventHandlers | None = None
        self._started = self.clock.monotonic()
        self._task: asyncio.Task[None] | None = None

    def _deployment_seen(self, deployment: clients.Object) -> None:
        """A new Deployment or a changed replica count (kubectl scale, a
        rollout) is activity: the grace period starts again from it."""
        meta = deployment.get("metadata") or {}
        key = (str(meta.get("namespace") or ""), str(meta.get("name") or ""))
        replicas = int((deployment.get("spec") or {}).get("replicas") or 0)
        if self._seen_replicas.get(key) != replicas:
            self._seen_replicas[key] = replicas
            self._scaled_at[key] = self.clock.monotonic()

    async def start(self) -> None:
        self._handlers = self.deployments.add_handlers(
            on_add=self._deployment_seen,
            on_update=lambda _old, new: self._deployment_seen(new),
        )
        self.deployments.start()
        await self.deployments.wait_synced()
        self._started = self.clock.monotonic()
        self._task = asyncio.create_task(self._run(), name="serving-autoscaler")

    async def stop(self) -> None:
        if self._handlers is not None:
            self.deployments.remove_handlers(self._handlers)
            self._handlers = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    # --- the gateway's hooks ------------------------------------------------------------

    def note_request(self, namespace: str, service: str) -> None:
        self._last[(namespace, service)] = self.clock.monotonic()

    def request_started(self, namespace: str, service: str) -> Callable[[], None]:
        """Count a request in flight (a Deployment serving one never sleeps);
        the returned callable ends it."""
        key = (namespace, service)
        self.note_request(namespace, service)
        self._in_flight[key] = self._in_flight.get(key, 0) + 1

        def finished() -> None:
            left = self._in_flight.get(key, 1) - 1
            if left > 0:
                self._in_flight[key] = left
            else:
                self._in_flight.pop(key, None)
            self.note_request(namespace, service)

        return finished

    async def activate(self, namespace: str, service: str) -> None:
        """A request is waiting for a Service with no ready endpoint: scale its
        sleeping Deployments to one replica."""
        self.note_request(namespace, service)
        for deployment in self._targets(namespace, service):
            if int((deployment.get("spec") or {}).get("replicas") or 0) == 0:
                await self._scale(deployment, 1, "ScaledFromZero", f"request for Service {service}")

    def _targets(self, namespace: str, service: str) -> list[Mapping[str, Any]]:
        obj = self.services.service_object(namespace, service)
        if obj is None:
            return []
        return [d for d in self.deployments.objects(namespace) if enabled(d) and selects(obj, d)]

    # --- idling -------------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            await self.clock.sleep(self.interval)
            try:
                await self.autoscale()
                await self.scale_idle()
            except (errors.StatusError, OSError) as err:
                log.warning("scale-to-zero check failed: %s", err)

    def in_flight(self, deployment: Mapping[str, Any]) -> int:
        """Requests in flight through the gateway to the Deployment's Services."""
        namespace = str(deployment["metadata"].get("namespace") or "")
        total = 0
        for service in self.services.services.objects(namespace):
            if selects(service, deployment):
                total += self._in_flight.get((namespace, str(service["metadata"]["name"])), 0)
        return total

    async def autoscale(self) -> None:
        """Sample concurrency and size every autoscaled Deployment (one tick)."""
        now = self.clock.monotonic()
        seen = set()
        for deployment in self.deployments.objects():
            target = target_concurrency(deployment)
            if target is None:
                continue
            meta = deployment["metadata"]
            key = (str(meta.get("namespace") or ""), str(meta["name"]))
            seen.add(key)
            window = window_seconds(deployment)
            samples = self._samples.setdefault(key, collections.deque())
            samples.append((now, self.in_flight(deployment)))
            while samples and samples[0][0] <= now - window:
                samples.popleft()
            current = int((deployment.get("spec") or {}).get("replicas") or 0)
            if current == 0:
                continue  # asleep: waking is the activator's job
            desired = self.desired_replicas(key, deployment, target, window, now)
            if desired != current:
                try:
                    await self._scale(
                        deployment, desired, "ConcurrencyScaled", self._why(key, samples, target)
                    )
                except errors.StatusError as err:  # one Deployment's failure stops no other
                    log.warning("scaling %s/%s failed: %s", *key, err)
        for key in set(self._samples) - seen:
            self._samples.pop(key, None)
            self._panic.pop(key, None)

    def desired_replicas(
        self, key: Key, deployment: Mapping[str, Any], target: float, window: float, now: float
    ) -> int:
        samples = self._samples.get(key) or collections.deque()
        current = int((deployment.get("spec") or {}).get("replicas") or 0)
        status = deployment.get("status") or {}
        ready = max(1, int(status.get("readyReplicas") or current or 1))
        stable = _average(samples, now - window)
        panic = _average(samples, now - window * PANIC_WINDOW_SHARE)
        want_stable = math.ceil(stable / target)
        want_panic = math.ceil(panic / target)
        over = want_panic / ready >= PANIC_THRESHOLD
        began = self._panic.get(key)
        if over:
            # A burst: scale for the short window now, and hold what it asked for.
            most = max(want_panic, began[1] if began else 0, current)
            self._panic[key] = (now, most)
            desired = most
        elif began is not None and now - began[0] < window:
            # Inside a panic: never below what it asked for, nor below what
            # either window asks for now (Knative keeps the larger).
            desired = max(began[1], current, want_stable, want_panic)
            self._panic[key] = (began[0], desired)
        else:
            self._panic.pop(key, None)
            # Scale down at most by half a step (Knative's max-scale-down-rate).
            desired = max(want_stable, math.ceil(current / MAX_SCALE_DOWN_RATE))
        lowest = max(1, _bound(deployment, MIN_SCALES, 1))
        highest = _bound(deployment, MAX_SCALES, 0) or 10_000
        return max(lowest, min(highest, desired))

    def _why(self, key: Key, samples: collections.deque[tuple[float, int]], target: float) -> str:
        mode = "panic" if key in self._panic else "stable"
        latest = samples[-1][1] if samples else 0
        return f"{latest} requests in flight, target {target:g} per pod ({mode} window)"

    async def scale_idle(self) -> None:
        """Scale to zero every opted-in Deployment idle past its grace period."""
        now = self.clock.monotonic()
        for deployment in self.deployments.objects():
            if not enabled(deployment):
                continue
            if int((deployment.get("spec") or {}).get("replicas") or 0) == 0:
                continue
            namespace = str(deployment["metadata"].get("namespace") or "")
            last = self._started
            busy = False
            for service in self.services.services.objects(namespace):
                if selects(service, deployment):
                    key = (namespace, str(service["metadata"]["name"]))
                    last = max(last, self._last.get(key, self._started))
                    busy = busy or key in self._in_flight
            key = (namespace, str(deployment["metadata"]["name"]))
            last = max(last, self._scaled_at.get(key, last))
            if busy:
                continue
            idle = now - last
            grace = grace_seconds(deployment)
            if idle >= grace:
                try:
                    await self._scale(deployment, 0, "ScaledToZero", f"no requests for {idle:.0f}s")
                except errors.StatusError as err:
                    log.warning("scaling %s/%s to zero failed: %s", *key, err)

    async def _scale(
        self, deployment: Mapping[str, Any], replicas: int, reason: str, why: str
    ) -> None:
        meta = deployment["metadata"]
        try:
            await self.client.patch(
                DEPLOYMENTS,
                meta["namespace"],
                meta["name"],
                {"spec": {"replicas": replicas}},
                patch_type="merge",
            )
        except errors.StatusError as err:
            if err.code == 404:
                return
            raise
        log.info("scaled %s/%s to %d: %s", meta["namespace"], meta["name"], replicas, why)
        if self.recorder is not None:
            involved = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": dict(meta)}
            plural = "s" if replicas != 1 else ""
            self.recorder.record(
                involved, "Normal", reason, f"Scaled to {replicas} replica{plural}: {why}"
            )


def _average(samples: collections.deque[tuple[float, int]], since: float) -> float:
    values = [value for t, value in samples if t > since]
    return sum(values) / len(values) if values else 0.0
