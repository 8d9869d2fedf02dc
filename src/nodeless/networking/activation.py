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

A Deployment belongs to the Services whose selector its pod template
matches. Times come from the injected clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import Any

from nodeless import clocks
from nodeless.api import errors
from nodeless.client import clients, events, informers
from nodeless.instances.providers import commands
from nodeless.networking import servicemaps

log = logging.getLogger(__name__)

DEPLOYMENTS = clients.ResourceRef("apps", "v1", "deployments", True, "Deployment")
SCALE_TO_ZERO = "nodeless.dev/scale-to-zero"
GRACE = "nodeless.dev/scale-to-zero-grace"
DEFAULT_GRACE = 60.0
CHECK_INTERVAL = 1.0

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


def selects(service: Mapping[str, Any], deployment: Mapping[str, Any]) -> bool:
    """Whether the Service's selector matches the Deployment's pods."""
    selector = (service.get("spec") or {}).get("selector") or {}
    if not selector:
        return False
    template = ((deployment.get("spec") or {}).get("template") or {}).get("metadata") or {}
    labels = template.get("labels") or {}
    return all(labels.get(k) == v for k, v in selector.items())


class ScaleToZero:
    """The gateway's activator and the idle scaler, one per cluster."""

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
        self._started = self.clock.monotonic()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.deployments.start()
        await self.deployments.wait_synced()
        self._started = self.clock.monotonic()
        self._task = asyncio.create_task(self._run(), name="scale-to-zero")

    async def stop(self) -> None:
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
                await self.scale_idle()
            except (errors.StatusError, OSError) as err:
                log.warning("scale-to-zero check failed: %s", err)

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
            if busy:
                continue
            idle = now - last
            grace = grace_seconds(deployment)
            if idle >= grace:
                await self._scale(deployment, 0, "ScaledToZero", f"no requests for {idle:.0f}s")

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
