"""Running every controller together, as kube-controller-manager does: one
shared informer factory, one event recorder, one start and one stop."""

from __future__ import annotations

import contextlib
import importlib
import logging
from typing import Any, Protocol

from nodeless import clocks
from nodeless.client import clients, events, informers

log = logging.getLogger(__name__)


class Runnable(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


# (module, class) of every controller, in start order; a module that is not
# there yet (controllers land one by one) is skipped with a warning.
CONTROLLERS: tuple[tuple[str, str], ...] = (
    ("garbagecollection", "GarbageCollectorController"),
    ("namespaces", "NamespaceController"),
    ("serviceaccounts", "ServiceAccountsController"),
    ("replicasets", "ReplicaSetController"),
    ("replicasets", "ReplicationManager"),
    ("deployments", "DeploymentController"),
    ("statefulsets", "StatefulSetController"),
    ("jobs", "JobController"),
    ("jobs", "TTLAfterFinishedController"),
    ("cronjobs", "CronJobController"),
    ("endpointslices", "EndpointSliceController"),
    ("endpointslices", "EndpointsController"),
    ("disruption", "DisruptionController"),
)


class ControllerManager:
    def __init__(
        self,
        client: clients.ApiClient,
        *,
        clock: clocks.Clock | None = None,
        recorder: events.EventRecorder | None = None,
        enabled: set[str] | None = None,
    ) -> None:
        self.client = client
        self.clock = clock or clocks.SystemClock()
        self.recorder = recorder
        self.factory = informers.InformerFactory(client, clock=self.clock)
        self.controllers: list[Runnable] = []
        for module_name, class_name in CONTROLLERS:
            if enabled is not None and class_name not in enabled:
                continue
            try:
                module = importlib.import_module(f"nodeless.controllers.{module_name}")
            except ImportError:
                log.warning("controller module %s is not available", module_name)
                continue
            cls: Any = getattr(module, class_name, None)
            if cls is None:
                log.warning("controller %s.%s is not available", module_name, class_name)
                continue
            self.controllers.append(cls(client, self.factory, clock=self.clock, recorder=recorder))

    async def start(self) -> None:
        for controller in self.controllers:
            await controller.start()
        self.factory.start()
        await self.factory.wait_synced()

    async def stop(self) -> None:
        for controller in reversed(self.controllers):
            with contextlib.suppress(Exception):
                await controller.stop()
        await self.factory.stop()
