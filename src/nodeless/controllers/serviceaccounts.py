"""The ``default`` ServiceAccount in every namespace (upstream's
ServiceAccountsController).

Pods that name no service account run as ``default``, and admission refuses
them when it is missing, so it must exist in every namespace that is not
being deleted. The apiserver creates it together with the namespace; this
controller puts it back when someone deletes it, and fills in namespaces that
lack it after a restart or a restore.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from nodeless import clocks
from nodeless.api import errors
from nodeless.client import clients, controllers, events, informers

log = logging.getLogger(__name__)

NAMESPACES = clients.ResourceRef("", "v1", "namespaces", False, "Namespace")
SERVICE_ACCOUNTS = clients.ResourceRef("", "v1", "serviceaccounts", True, "ServiceAccount")
DEFAULT = "default"
MANAGER = "service-account-controller"


def terminating(ns: Mapping[str, Any]) -> bool:
    return bool((ns.get("metadata") or {}).get("deletionTimestamp")) or (
        (ns.get("status") or {}).get("phase") == "Terminating"
    )


class ServiceAccountsController:
    """Keeps a ``default`` ServiceAccount in every active namespace; keyed by
    namespace name."""

    def __init__(
        self,
        client: clients.ApiClient,
        factory: informers.InformerFactory,
        *,
        clock: clocks.Clock | None = None,
        recorder: events.EventRecorder | None = None,
        workers: int = 2,
        names: tuple[str, ...] = (DEFAULT,),
    ) -> None:
        self.client = client
        self.factory = factory
        self.clock = clock or factory.clock or clocks.SystemClock()
        self.recorder = recorder
        self.names = names
        self.namespaces = factory.informer(NAMESPACES)
        self.accounts = factory.informer(SERVICE_ACCOUNTS)
        self.controller = controllers.Controller(
            "serviceaccount", self.sync, workers=workers, clock=self.clock
        )
        self._subscriptions: list[tuple[informers.Informer, informers.EventHandlers]] = []

    async def start(self) -> None:
        self._subscriptions = [
            (
                self.namespaces,
                self.namespaces.add_handlers(
                    self.controller.enqueue, lambda _old, new: self.controller.enqueue(new)
                ),
            ),
            # Only a deletion can take an account away.
            (self.accounts, self.accounts.add_handlers(on_delete=self._account_deleted)),
        ]
        self.factory.start()
        self.controller.start([self.namespaces, self.accounts])

    async def stop(self) -> None:
        await self.controller.stop()
        for informer, handlers in self._subscriptions:
            informer.remove_handlers(handlers)
        self._subscriptions = []

    def _account_deleted(self, account: Mapping[str, Any]) -> None:
        meta = account.get("metadata") or {}
        if meta.get("name") in self.names and meta.get("namespace"):
            self.controller.queue.add(str(meta["namespace"]))

    async def sync(self, namespace: str) -> None:
        ns = self.namespaces.get(namespace)
        if ns is None or terminating(ns):
            return
        for name in self.names:
            if self.accounts.get(f"{namespace}/{name}") is not None:
                continue
            account = {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": {"name": name, "namespace": namespace},
            }
            try:
                await self.client.create(
                    SERVICE_ACCOUNTS, account, clients.WriteOptions(field_manager=MANAGER)
                )
                log.info("created service account %s/%s", namespace, name)
            except errors.StatusError as err:
                # Already there (the cache lags), or the namespace is going away.
                if err.code not in (403, 404, 409):
                    raise
