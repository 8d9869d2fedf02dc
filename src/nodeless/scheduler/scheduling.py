"""The Nodeless scheduler: sizes unbound pods, chooses zone and capacity, binds.

Informer over all pods (bound ones are the zones' usage); a queue of unbound
pod keys. A worker drains everything queued at once, decides in memory with
the zones' accounting updated as it goes, then binds the whole batch
concurrently: many decisions, no round trip between them. Pods that fit
nowhere get a ``FailedScheduling`` event and an ``Unschedulable`` condition
and are tried again when capacity frees.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import secrets
from decimal import Decimal
from typing import Any

from nodeless import clocks
from nodeless.api import errors, imagecaches, times
from nodeless.client import clients, events, informers
from nodeless.instances import nodes
from nodeless.instances.providers.cri import imagerefs
from nodeless.scheduler import placing
from nodeless.serverless import annotations as pod_annotations
from nodeless.serverless import catalogue, sizing, spotmarket

log = logging.getLogger(__name__)

PODS = clients.ResourceRef("", "v1", "pods", True, "Pod")
SCHEDULER_NAMES = ("default-scheduler", "nodeless-scheduler")
BATCH = 512
BIND_CONCURRENCY = 64


def _spec_of(pod: dict[str, Any], specs: catalogue.Catalogue) -> catalogue.Spec | None:
    value = pod_annotations.read(
        (pod.get("metadata") or {}).get("annotations") or {}, pod_annotations.INSTANCE_SPEC
    )
    return specs.find(value) if value else None


def _normalized(image: str) -> str:
    try:
        return imagerefs.normalize(image)
    except imagerefs.InvalidImageName:
        return image


def _active(pod: dict[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")


class Scheduler:
    def __init__(
        self,
        client: clients.ApiClient,
        zones: list[nodes.Zone],
        specs: catalogue.Catalogue,
        *,
        clock: clocks.Clock | None = None,
        recorder: events.EventRecorder | None = None,
        seed: int | None = None,
        market: spotmarket.PriceFeed | None = None,
        factory: informers.InformerFactory | None = None,
    ) -> None:
        """``factory``: informers shared with other components (one pod watch
        and cache for all); without it the scheduler has its own."""
        self.client = client
        self.specs = specs
        self.market = market if market is not None else spotmarket.SpotMarket.load()
        # Pods holding spot capacity, and how many per zone (the zones' spot stock).
        self._spot: dict[str, str] = {}
        self._spot_counts: dict[str, int] = {}
        self.clock = clock or clocks.SystemClock()
        self.recorder = recorder
        self.rng = random.Random(seed)
        self.zones = {
            z.name: placing.ZoneState(
                z.name,
                nodes.node_object(z, "", "")["metadata"]["labels"],
                z.max_instances,
                Decimal(z.max_vcpu),
                Decimal(z.max_memory_gib),
                max_gpus=z.max_gpus,
            )
            for z in zones
        }
        self._owns_informers = factory is None
        self.pods = (factory or informers.InformerFactory(client, clock=self.clock)).informer(PODS)
        self.image_caches = [
            informers.Informer(
                client,
                clients.ResourceRef(group, version, "imagecaches", False, imagecaches.KIND),
                clock=self.clock,
            )
            for group, version in imagecaches.GROUPS.items()
        ]
        self._queue: dict[str, None] = {}
        self._wake = asyncio.Event()
        self._unschedulable: set[str] = set()
        self._accounted: dict[str, tuple[str, catalogue.Spec | None, str, dict[str, str]]] = {}
        self._task: asyncio.Task[None] | None = None
        self._retry_task: asyncio.Task[None] | None = None
        self.pods.add_handlers(self._on_add, self._on_update, self._on_delete)

    # --- accounting from the informer ----------------------------------------

    def _account(self, pod: dict[str, Any]) -> None:
        key = clients.key_of(pod)
        meta = pod.get("metadata") or {}
        node = (pod.get("spec") or {}).get("nodeName") or ""
        zone = nodes.zone_of_node(node)
        # A pod being deleted still holds its instance (and the zone's capacity)
        # until it is gone or has finished, as kube-scheduler counts it.
        active = bool(zone) and zone in self.zones and _active(pod)
        previous = self._accounted.get(key)
        if previous is not None and (not active or previous[0] != zone):
            old_zone, spec, ns, labels = previous
            self.zones[old_zone].release(spec, ns, labels)
            del self._accounted[key]
            self._release_spot(key)
            self._retry_unschedulable()
        if active and key not in self._accounted and zone is not None:
            spec = _spec_of(pod, self.specs)
            labels = dict(meta.get("labels") or {})
            state = self.zones[zone]
            state.instances += 1
            if spec is not None:
                state.vcpu += spec.vcpu
                state.memory_gib += spec.memory_gib
                state.gpus += spec.gpu_count
            state.pods.append((meta.get("namespace", ""), labels))
            self._accounted[key] = (zone, spec, meta.get("namespace", ""), labels)
            notes = meta.get("annotations") or {}
            if pod_annotations.read(notes, pod_annotations.CAPACITY_TYPE) == "spot":
                self._take_spot(key, zone)

    def _take_spot(self, key: str, zone: str) -> None:
        if key not in self._spot:
            self._spot[key] = zone
            self._spot_counts[zone] = self._spot_counts.get(zone, 0) + 1

    def _release_spot(self, key: str) -> None:
        zone = self._spot.pop(key, None)
        if zone is not None:
            self._spot_counts[zone] = max(0, self._spot_counts.get(zone, 0) - 1)

    def _wants_scheduling(self, pod: dict[str, Any]) -> bool:
        spec = pod.get("spec") or {}
        return (
            not spec.get("nodeName")
            and spec.get("schedulerName", "default-scheduler") in SCHEDULER_NAMES
            and not (pod.get("metadata") or {}).get("deletionTimestamp")
            and _active(pod)
        )

    def _on_add(self, pod: dict[str, Any]) -> None:
        self._account(pod)
        if self._wants_scheduling(pod):
            self._enqueue(clients.key_of(pod))

    def _on_update(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        self._on_add(new)

    def _on_delete(self, pod: dict[str, Any]) -> None:
        key = clients.key_of(pod)
        previous = self._accounted.pop(key, None)
        if previous is not None:
            zone, spec, ns, labels = previous
            self.zones[zone].release(spec, ns, labels)
            self._release_spot(key)
            self._retry_unschedulable()
        self._queue.pop(key, None)
        self._unschedulable.discard(key)

    def _enqueue(self, key: str) -> None:
        self._queue[key] = None
        self._wake.set()

    def _retry_unschedulable(self) -> None:
        for key in list(self._unschedulable):
            self._enqueue(key)
        self._unschedulable.clear()

    # --- the loop ------------------------------------------------------------

    def start(self) -> None:
        self.pods.start()
        for informer in self.image_caches:
            informer.start()
        self._task = asyncio.create_task(self.run(), name="scheduler")
        self._retry_task = asyncio.create_task(self._retry_periodically(), name="scheduler-retry")

    async def stop(self) -> None:
        for task in (self._task, self._retry_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._owns_informers:
            await self.pods.stop()
        for informer in self.image_caches:
            await informer.stop()

    async def _retry_periodically(self) -> None:
        """Pods waiting for something no event announces (a spot price coming
        back under a limit) are tried again every market tick, as
        kube-scheduler flushes its unschedulable queue on a timer."""
        while True:
            await self.clock.sleep(self.market.tick_seconds())
            if self._unschedulable:
                self._retry_unschedulable()

    async def run(self) -> None:
        await self.pods.wait_synced()
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                keys = list(self._queue)[:BATCH]
                for key in keys:
                    self._queue.pop(key, None)
                try:
                    await self.schedule_batch(keys)
                except Exception:
                    log.exception("scheduling batch failed; retrying")
                    for key in keys:
                        self._queue.setdefault(key, None)
                    await self.clock.sleep(1.0)

    async def schedule_batch(self, keys: list[str]) -> None:
        """Decide every pod in memory, then bind them all concurrently."""
        decisions: list[tuple[dict[str, Any], placing.Placement]] = []
        failures: list[tuple[dict[str, Any], str]] = []
        for key in keys:
            pod = self.pods.get(key)
            if pod is None or not self._wants_scheduling(pod):
                continue
            outcome = self.decide(pod)
            if isinstance(outcome, placing.Placement):
                meta = pod.get("metadata") or {}
                labels = dict(meta.get("labels") or {})
                namespace = meta.get("namespace", "")
                self.zones[outcome.zone].take(outcome.spec, namespace, labels)
                # Counted now, so the informer's view of the bound pod is not counted again.
                self._accounted[key] = (outcome.zone, outcome.spec, namespace, labels)
                if outcome.capacity_type == "spot":
                    self._take_spot(key, outcome.zone)
                decisions.append((pod, outcome))
            else:
                failures.append((pod, outcome.message))
        limit = asyncio.Semaphore(BIND_CONCURRENCY)

        async def bind(pod: dict[str, Any], placement: placing.Placement) -> None:
            async with limit:
                await self._bind(pod, placement)

        await asyncio.gather(*(bind(p, d) for p, d in decisions))
        for pod, message in failures:
            await self._unschedulable_pod(pod, message)

    def decide(self, pod: dict[str, Any]) -> placing.Placement | placing.Unschedulable:
        meta = pod.get("metadata") or {}
        try:
            options = pod_annotations.PodOptions.from_annotations(
                meta.get("annotations") or {},
                self.specs,
                list(self.zones),
                name=meta.get("name", ""),
            )
            sized = sizing.size_pod(pod, self.specs)
        except errors.StatusError as err:
            return placing.Unschedulable([err.message])
        placement = placing.place(
            pod, sized.candidates, options, list(self.zones.values()), self.rng
        )
        if not isinstance(placement, placing.Placement):
            return placement
        if options.image_cache is not None:
            placement = dataclasses.replace(placement, image_cache=self._match_cache(pod, options))
        if not options.spot:
            return placement
        return self._buy_spot(placement, options)

    def _match_cache(self, pod: dict[str, Any], options: pod_annotations.PodOptions) -> str:
        """The Ready ImageCache with every image of the pod (the named one, or
        any for ``auto``); "" when none has them (the pod then pulls)."""
        spec = pod.get("spec") or {}
        wanted = [
            str(c.get("image") or "")
            for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]
        ]
        name = (
            None if options.image_cache == pod_annotations.AUTO_IMAGE_CACHE else options.image_cache
        )
        caches = [c for informer in self.image_caches for c in informer.objects()]
        return imagecaches.match(caches, wanted, _normalized, name) or ""

    def _buy_spot(
        self, placement: placing.Placement, options: pod_annotations.PodOptions
    ) -> placing.Placement | placing.Unschedulable:
        """Spot capacity at the market price, when the zone has stock and the
        price is within the pod's limit; else on demand if the pod falls back,
        else it waits (Pending, FailedScheduling saying why)."""
        zone, spec = placement.zone, placement.spec
        price = self.market.hourly_price(zone, spec, self.clock.now())
        why = ""
        if self._spot_counts.get(zone, 0) >= self.market.stock(zone):
            why = f"zone {zone} has no spot capacity left ({self.market.stock(zone)} in use)"
        elif (
            options.spot_strategy is pod_annotations.SpotStrategy.WITH_PRICE_LIMIT
            and options.spot_price_limit is not None
            and price > options.spot_price_limit
        ):
            why = (
                f"the spot price of {spec.name} in zone {zone} is {price}/h, above the "
                f"pod's limit of {options.spot_price_limit}/h"
            )
        if not why:
            return placing.Placement(zone, spec, "spot", price)
        if options.spot_fallback:
            return placing.Placement(zone, spec, "on-demand", spec.hourly_price, fallback=why)
        return placing.Unschedulable([f"{why}, and the pod has no spot-fallback"])

    async def _bind(self, pod: dict[str, Any], placement: placing.Placement) -> None:
        meta = pod.get("metadata") or {}
        namespace, name = meta.get("namespace", ""), meta.get("name", "")
        instance_id = f"eci-{secrets.token_hex(9)}"
        written = pod_annotations.written_back(
            {
                pod_annotations.INSTANCE_SPEC: placement.spec.annotation_value,
                pod_annotations.INSTANCE_ID: instance_id,
                pod_annotations.ZONE: placement.zone,
                pod_annotations.CAPACITY_TYPE: placement.capacity_type,
                pod_annotations.PRICE: str(placement.hourly_price),
                **(
                    {pod_annotations.MATCHED_IMAGE_CACHE: placement.image_cache}
                    if placement.image_cache
                    else {}
                ),
            }
        )
        try:
            await self.client.bind(
                namespace,
                name,
                nodes.node_name(placement.zone),
                annotations=written,
                pod_uid=meta.get("uid", ""),
            )
        except errors.StatusError as err:
            # Undo the accounting: the informer will count the pod if it was bound after all.
            if self._accounted.pop(clients.key_of(pod), None) is not None:
                labels = dict(meta.get("labels") or {})
                self.zones[placement.zone].release(placement.spec, namespace, labels)
            if err.code in (404, 409):
                return
            raise
        if self.recorder is not None:
            fallback = f"; on demand because {placement.fallback}" if placement.fallback else ""
            self.recorder.record(
                pod,
                "Normal",
                "Scheduled",
                f"Successfully assigned {namespace}/{name} to {nodes.node_name(placement.zone)} "
                f"as instance {instance_id} ({placement.spec.name}, zone {placement.zone}, "
                f"{placement.capacity_type}, {placement.hourly_price}/h){fallback}",
            )

    async def _unschedulable_pod(self, pod: dict[str, Any], message: str) -> None:
        key = clients.key_of(pod)
        self._unschedulable.add(key)
        total = len(self.zones)
        text = f"0/{total} zones are available: {message}."
        conditions = [
            c
            for c in (pod.get("status") or {}).get("conditions") or []
            if c.get("type") == "PodScheduled"
        ]
        if (
            conditions
            and conditions[0].get("status") == "False"
            and conditions[0].get("message") == text
        ):
            return  # already said; do not repeat the event on every retry
        if self.recorder is not None:
            self.recorder.record(pod, "Warning", "FailedScheduling", text)
        meta = pod.get("metadata") or {}
        patch = {
            "status": {
                "conditions": [
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": "Unschedulable",
                        "message": text,
                        "lastProbeTime": None,
                        "lastTransitionTime": times.rfc3339(self.clock.now()),
                    }
                ]
            }
        }
        with contextlib.suppress(errors.StatusError):
            await self.client.patch(
                PODS,
                meta.get("namespace", ""),
                meta.get("name", ""),
                patch,
                patch_type="strategic",
                subresource="status",
            )
