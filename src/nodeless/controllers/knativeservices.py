"""The Knative Service controller: a ``serving.knative.dev/v1`` Service
makes a new Revision for every change of its template and publishes, in its
status, where its traffic goes. The ingress gateway serves the routes from
that status (``networking.servingroutes``); the Revision controller runs
each Revision.

One sync, level-triggered on the Service and its Revisions:

1. the Service's Revisions are the ones it controls; the newest (by
   ``configurationGeneration``) is the latest created. When the template's
   hash differs from the latest created Revision's, a new Revision is made,
   named ``<service>-<generation:05d>`` or the template's ``metadata.name``
   (a name already taken by another template is the Service's error, as in
   Knative). Going back to an older template makes a new Revision too;
2. the latest Ready Revision is the newest one with ``Ready=True``;
3. ``spec.traffic`` (default: 100 % to the latest Ready) is resolved to
   Revision names. Only when every target is a Ready Revision is the
   resolved traffic published; until then the previous one stays served
   (``RoutesReady`` says what is missing), so a bad new Revision never takes
   traffic from a good one;
4. each Revision is labelled ``routingState=active`` or ``reserve`` (the
   Revision controller lets reserve ones scale to zero whatever their
   min-scale);
5. status: ``url`` (``http://<name>.<namespace>.<domain>``), tagged URLs,
   ``latestCreatedRevisionName``, ``latestReadyRevisionName``, ``traffic``
   and the conditions ``ConfigurationsReady``, ``RoutesReady`` and ``Ready``.

The domain is Knative's ``config-domain`` default, ``example.com``, unless
``nodeless up --serving-domain`` says otherwise. Old Revisions are kept, as
Knative keeps them until its garbage collector's limits; an unrouted one
costs nothing once scaled to zero.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from nodeless import clocks
from nodeless.api import errors, knativeserving
from nodeless.client import clients, controllers, events, informers
from nodeless.controllers import knativerevisions, ownership, podcontrol

log = logging.getLogger(__name__)

SERVICES = clients.ResourceRef(
    knativeserving.GROUP, knativeserving.VERSION, "services", True, "Service"
)
REVISIONS = knativerevisions.REVISIONS
FIELD_MANAGER = "nodeless-knative-services"
ROUTING_STATE_LABEL = knativerevisions.ROUTING_STATE_LABEL
ACTIVE = "active"
RESERVE = knativerevisions.RESERVE

Obj = dict[str, Any]


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


def generation_of(revision: Mapping[str, Any]) -> int:
    text = str((_meta(revision).get("labels") or {}).get(knativeserving.GENERATION_LABEL, "0"))
    return int(text) if text.isdigit() else 0


def new_revision(service: Mapping[str, Any], generation: int) -> Obj:
    """The Revision for the Service's current template."""
    meta = _meta(service)
    name = str(meta["name"])
    template = service["spec"]["template"]
    template_meta = template.get("metadata") or {}
    labels = {str(k): str(v) for k, v in (template_meta.get("labels") or {}).items()}
    labels.update(
        {
            knativeserving.SERVICE_LABEL: name,
            knativeserving.CONFIGURATION_LABEL: name,
            knativeserving.GENERATION_LABEL: str(generation),
            ROUTING_STATE_LABEL: RESERVE,
        }
    )
    annotations = {str(k): str(v) for k, v in (template_meta.get("annotations") or {}).items()}
    annotations[knativeserving.TEMPLATE_HASH_ANNOTATION] = knativeserving.template_hash(template)
    return {
        "apiVersion": knativeserving.API_VERSION,
        "kind": "Revision",
        "metadata": {
            "name": template_meta.get("name") or knativeserving.revision_name(name, generation),
            "namespace": meta.get("namespace"),
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [ownership.owner_reference(dict(service))],
        },
        "spec": dict(template.get("spec") or {}),
    }


def resolve_traffic(
    service: Mapping[str, Any],
    revisions: Mapping[str, Mapping[str, Any]],
    latest_ready: str | None,
    domain: str,
) -> tuple[list[Obj] | None, Obj]:
    """The traffic to publish (None: keep the previous) and ``RoutesReady``."""
    meta = _meta(service)
    name, namespace = str(meta["name"]), str(meta.get("namespace") or "")
    resolved: list[Obj] = []
    targets = knativeserving.traffic(service.get("spec") or {})
    for target in targets:
        latest = knativeserving.follows_latest(target)
        if latest:
            if latest_ready is None:
                return None, knativeserving.condition_entry(
                    "RoutesReady",
                    "Unknown",
                    "RevisionMissing",
                    f'Configuration "{name}" is waiting for a Revision to become ready.',
                )
            revision_name = latest_ready
        else:
            revision_name = str(target.get("revisionName"))
            revision = revisions.get(revision_name)
            if revision is None:
                return None, knativeserving.condition_entry(
                    "RoutesReady",
                    "False",
                    "RevisionMissing",
                    f'Revision "{revision_name}" referenced in traffic not found.',
                )
            if not knativeserving.is_ready(revision):
                ready = knativeserving.condition(revision, "Ready")
                status = "False" if ready.get("status") == "False" else "Unknown"
                return None, knativeserving.condition_entry(
                    "RoutesReady",
                    status,
                    "RevisionMissing",
                    f'Revision "{revision_name}" referenced in traffic is not ready.',
                )
        percent = target.get("percent")
        if percent is None:  # Knative's default: a lone target takes it all
            percent = 100 if len(targets) == 1 else 0
        entry: Obj = {"revisionName": revision_name, "latestRevision": latest, "percent": percent}
        tag = target.get("tag")
        if tag:
            entry["tag"] = tag
            entry["url"] = f"http://{knativeserving.host(name, namespace, domain, str(tag))}"
        resolved.append(entry)
    return resolved, knativeserving.condition_entry("RoutesReady", "True")


def configurations_ready(latest_created: Mapping[str, Any] | None, name: str) -> Obj:
    if latest_created is None:
        return knativeserving.condition_entry(
            "ConfigurationsReady", "Unknown", "RevisionMissing", ""
        )
    ready = knativeserving.condition(latest_created, "Ready")
    revision = _meta(latest_created).get("name")
    if ready.get("status") == "True":
        return knativeserving.condition_entry("ConfigurationsReady", "True")
    if ready.get("status") == "False":
        return knativeserving.condition_entry(
            "ConfigurationsReady",
            "False",
            "RevisionFailed",
            f'Revision "{revision}" failed with message: {ready.get("message") or ready.get("reason") or ""}.',
        )
    return knativeserving.condition_entry(
        "ConfigurationsReady",
        "Unknown",
        "RevisionMissing",
        f'Configuration "{name}" is waiting for a Revision to become ready.',
    )


def overall(configuration: Mapping[str, Any], routes: Mapping[str, Any]) -> Obj:
    """Ready: False if either is False, True if both are, else Unknown; the
    reason and message of the first that is not True."""
    for part in (configuration, routes):
        if part.get("status") == "False":
            return knativeserving.condition_entry(
                "Ready", "False", str(part.get("reason") or ""), str(part.get("message") or "")
            )
    for part in (configuration, routes):
        if part.get("status") != "True":
            return knativeserving.condition_entry(
                "Ready", "Unknown", str(part.get("reason") or ""), str(part.get("message") or "")
            )
    return knativeserving.condition_entry("Ready", "True")


class KnativeServiceController:
    """Makes Revisions for Services' templates and routes their traffic."""

    def __init__(
        self,
        client: clients.ApiClient,
        factory: informers.InformerFactory,
        *,
        clock: clocks.Clock | None = None,
        recorder: events.EventRecorder | None = None,
        domain: str = knativeserving.DEFAULT_DOMAIN,
        workers: int = 2,
    ) -> None:
        self.client = client
        self.factory = factory
        self.clock = clock or factory.clock or clocks.SystemClock()
        self.recorder = recorder
        self.domain = domain
        self.services = factory.informer(SERVICES)
        self.revisions = factory.informer(REVISIONS)
        self.controller = controllers.Controller(
            "knative-services", self.sync, workers=workers, clock=self.clock
        )

    async def start(self) -> None:
        self.controller.enqueue_changes(self.services)
        self.controller.enqueue_changes(
            self.revisions, knativerevisions.key_by_label(knativeserving.SERVICE_LABEL)
        )
        self.factory.start()
        self.controller.start([self.services, self.revisions])

    async def stop(self) -> None:
        await self.controller.stop()

    def _owned(self, service: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
        namespace = str(_meta(service).get("namespace") or "")
        return {
            str(_meta(r)["name"]): r
            for r in self.revisions.objects(namespace)
            if ownership.is_owned_by(dict(r), dict(service))
        }

    async def sync(self, key: str) -> None:
        service = self.services.get(key)
        if service is None or _meta(service).get("deletionTimestamp"):
            return
        namespace, name = key.split("/", 1)
        owned = self._owned(service)
        latest = max(owned.values(), key=generation_of, default=None)
        template = (service.get("spec") or {}).get("template") or {}
        wanted_hash = knativeserving.template_hash(template)
        failure: Obj | None = None
        if latest is None or (
            (_meta(latest).get("annotations") or {}).get(knativeserving.TEMPLATE_HASH_ANNOTATION)
            != wanted_hash
        ):
            created, failure = await self._create_revision(
                service, generation_of(latest) + 1 if latest else 1, wanted_hash
            )
            if created is not None:
                owned[str(_meta(created)["name"])] = created
                latest = created
        ready = [r for r in owned.values() if knativeserving.is_ready(r)]
        latest_ready = max(ready, key=generation_of, default=None)
        latest_ready_name = str(_meta(latest_ready)["name"]) if latest_ready else None
        traffic, routes = resolve_traffic(service, owned, latest_ready_name, self.domain)
        previous = service.get("status") or {}
        published = traffic if traffic is not None else previous.get("traffic")
        await self._label_routing(owned, {t["revisionName"] for t in published or ()})
        configuration = failure or configurations_ready(latest, name)
        status: Obj = {
            "observedGeneration": _meta(service).get("generation", 1),
            "url": f"http://{knativeserving.host(name, namespace, self.domain)}",
            "conditions": [configuration, overall(configuration, routes), routes],
        }
        if latest is not None:
            status["latestCreatedRevisionName"] = _meta(latest)["name"]
        if latest_ready_name:
            status["latestReadyRevisionName"] = latest_ready_name
        if published is not None:
            status["traffic"] = published
        if knativeserving.without_times(status) == knativeserving.without_times(previous):
            return
        knativeserving.stamp(
            status["conditions"],
            previous.get("conditions") or [],
            podcontrol.format_time(self.clock.now()),
        )
        body = {**{k: None for k in previous if k not in status}, **status}
        try:
            await self.client.patch(
                SERVICES,
                namespace,
                name,
                {"status": body},
                patch_type="merge",
                subresource="status",
            )
        except errors.StatusError as err:
            if err.code != 404:
                raise

    async def _create_revision(
        self, service: Mapping[str, Any], generation: int, wanted_hash: str
    ) -> tuple[Mapping[str, Any] | None, Obj | None]:
        """The new Revision, or the ConfigurationsReady failure that stops it."""
        body = new_revision(service, generation)
        meta = body["metadata"]
        try:
            created = await self.client.create(
                REVISIONS, body, clients.WriteOptions(field_manager=FIELD_MANAGER)
            )
        except errors.StatusError as err:
            if err.reason != "AlreadyExists":
                if err.code in (400, 403, 422):
                    return None, knativeserving.condition_entry(
                        "ConfigurationsReady", "False", "RevisionFailed", err.message
                    )
                raise
            # Made by an earlier sync the informer has not shown yet, or a
            # name someone else holds.
            existing = await self.client.get(REVISIONS, str(meta["namespace"]), str(meta["name"]))
            same = (
                ownership.is_owned_by(existing, dict(service))
                and (_meta(existing).get("annotations") or {}).get(
                    knativeserving.TEMPLATE_HASH_ANNOTATION
                )
                == wanted_hash
            )
            if same:
                return existing, None
            return None, knativeserving.condition_entry(
                "ConfigurationsReady",
                "False",
                "RevisionFailed",
                f'Revision "{meta["name"]}" already exists with a different template; '
                "give the template a new metadata.name",
            )
        if self.recorder is not None:
            self.recorder.record(
                dict(service), "Normal", "Created", f'Created Revision "{meta["name"]}"'
            )
        return created, None

    async def _label_routing(
        self, owned: Mapping[str, Mapping[str, Any]], routed: set[str]
    ) -> None:
        for name, revision in owned.items():
            state = ACTIVE if name in routed else RESERVE
            if (_meta(revision).get("labels") or {}).get(ROUTING_STATE_LABEL) == state:
                continue
            try:
                await self.client.patch(
                    REVISIONS,
                    str(_meta(revision)["namespace"]),
                    name,
                    {"metadata": {"labels": {ROUTING_STATE_LABEL: state}}},
                    patch_type="merge",
                )
            except errors.StatusError as err:
                if err.code != 404:
                    raise
