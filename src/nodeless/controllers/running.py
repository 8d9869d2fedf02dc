"""Running every controller together, as kube-controller-manager does: one
shared informer factory, one event recorder, one start and one stop."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any, Protocol

from nodeless import clocks
from nodeless.api import knativeserving
from nodeless.client import clients, events, informers
from nodeless.controllers import (
    cronjobs,
    deployments,
    disruption,
    elasticworkloads,
    endpointslices,
    garbagecollection,
    horizontalpodautoscalers,
    jobs,
    knativerevisions,
    knativeservices,
    namespaces,
    persistentvolumes,
    replicasets,
    serviceaccounts,
    statefulsets,
    volumeprotection,
)

log = logging.getLogger(__name__)


class Runnable(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


# Every controller, in start order; each takes (client, factory, *, clock, recorder).
# The KnativeServiceController (which also takes the serving domain) and the
# PersistentVolumeController (the volumes root) come after them.
CONTROLLERS: tuple[type[Any], ...] = (
    garbagecollection.GarbageCollectorController,
    namespaces.NamespaceController,
    serviceaccounts.ServiceAccountsController,
    replicasets.ReplicaSetController,
    replicasets.ReplicationManager,
    deployments.DeploymentController,
    statefulsets.StatefulSetController,
    jobs.JobController,
    jobs.TTLAfterFinishedController,
    cronjobs.CronJobController,
    endpointslices.EndpointSliceController,
    endpointslices.EndpointsController,
    disruption.DisruptionController,
    horizontalpodautoscalers.HorizontalPodAutoscalerController,
    volumeprotection.PVCProtectionController,
    volumeprotection.PVProtectionController,
    knativerevisions.RevisionController,
    elasticworkloads.ElasticWorkloadController,
)


class ControllerManager:
    def __init__(
        self,
        client: clients.ApiClient,
        *,
        clock: clocks.Clock | None = None,
        recorder: events.EventRecorder | None = None,
        enabled: set[str] | None = None,
        volumes_root: Path | None = persistentvolumes.DEFAULT_VOLUMES_ROOT,
        serving_domain: str = knativeserving.DEFAULT_DOMAIN,
        factory: informers.InformerFactory | None = None,
    ) -> None:
        """``volumes_root`` is where the local-path provisioner makes volume
        directories (``nodeless up`` is to pass ``<data-dir>/volumes``); None
        provisions nothing and only binds PersistentVolumes that exist.
        ``serving_domain`` is the domain of Knative Services' URLs.
        ``factory``: informers shared with other components, which its owner
        stops; without it the controllers have their own."""
        self.client = client
        self.clock = clock or clocks.SystemClock()
        self.recorder = recorder
        self._owns_factory = factory is None
        self.factory = factory or informers.InformerFactory(client, clock=self.clock)
        self.controllers: list[Runnable] = [
            cls(client, self.factory, clock=self.clock, recorder=recorder)
            for cls in CONTROLLERS
            if enabled is None or cls.__name__ in enabled
        ]
        serving = knativeservices.KnativeServiceController
        if enabled is None or serving.__name__ in enabled:
            self.controllers.append(
                serving(
                    client, self.factory, clock=self.clock, recorder=recorder, domain=serving_domain
                )
            )
        volumes = persistentvolumes.PersistentVolumeController
        if enabled is None or volumes.__name__ in enabled:
            self.controllers.append(
                volumes(
                    client,
                    self.factory,
                    clock=self.clock,
                    recorder=recorder,
                    volumes_root=volumes_root,
                )
            )

    async def start(self) -> None:
        for controller in self.controllers:
            await controller.start()
        self.factory.start()
        await self.factory.wait_synced()

    async def stop(self) -> None:
        for controller in reversed(self.controllers):
            with contextlib.suppress(Exception):
                await controller.stop()
        if self._owns_factory:
            await self.factory.stop()
