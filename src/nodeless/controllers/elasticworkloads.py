"""The ElasticWorkload controller: shares an ElasticWorkload's replicas
between its source workload and clones of it, one per elastic unit
(``api.elasticworkloads.share``), as Alibaba's elastic-workload controller.

A sync sets the source's ``spec.replicas`` to its share, creates or updates
each unit's clone ``<source>-unit-<unit>`` (the source's spec with the
unit's replicas, labels, annotations, nodeSelector and tolerations; its
selector and pods carry the unit's label so that each clone owns only its
own pods, while the source's selector, and Services, still match them all),
deletes clones of units no longer listed, and writes the status: total
replicas, the selector an HPA reads through the ``scale`` subresource, and
desired and actual replicas of the source and of each unit. Changes to the
source's template reach the clones at the next sync (the source's changes
queue its ElasticWorkloads). Clones are owned by the ElasticWorkload, so
deleting it deletes them; the source is left at its last share.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Mapping
from typing import Any

from nodeless import clocks
from nodeless.api import elasticworkloads, errors, selectors
from nodeless.client import clients, controllers, events, informers
from nodeless.controllers import ownership

log = logging.getLogger(__name__)

FIELD_MANAGER = "nodeless-elasticworkload-controller"
Obj = dict[str, Any]

WORKLOADS = {
    kind: clients.ResourceRef(api_version.split("/")[0], "v1", plural, True, kind)
    for (api_version, kind), plural in elasticworkloads.SOURCE_KINDS.items()
}
ELASTIC_WORKLOADS = [
    clients.ResourceRef(group, version, "elasticworkloads", True, elasticworkloads.KIND)
    for group, version in elasticworkloads.GROUPS.items()
]


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


def desired_clone(
    ew: Mapping[str, Any], source: Mapping[str, Any], unit: Mapping[str, Any], replicas: int
) -> Obj:
    """The clone of ``source`` for one elastic unit."""
    unit_name = str(unit.get("name") or "")
    source_meta = _meta(source)
    name = elasticworkloads.clone_name(str(source_meta.get("name") or ""), unit_name)
    spec = copy.deepcopy(dict(source.get("spec") or {}))
    spec["replicas"] = replicas
    unit_labels = {
        elasticworkloads.UNIT_LABEL: unit_name,
        **{str(k): str(v) for k, v in (unit.get("labels") or {}).items()},
    }
    selector = dict(spec.get("selector") or {})
    selector["matchLabels"] = {
        **(selector.get("matchLabels") or {}),
        elasticworkloads.UNIT_LABEL: unit_name,
    }
    spec["selector"] = selector
    template = dict(spec.get("template") or {})
    template_meta = dict(template.get("metadata") or {})
    template_meta["labels"] = {**(template_meta.get("labels") or {}), **unit_labels}
    template_meta["annotations"] = {
        **(template_meta.get("annotations") or {}),
        **{str(k): str(v) for k, v in (unit.get("annotations") or {}).items()},
    }
    template["metadata"] = template_meta
    pod_spec = dict(template.get("spec") or {})
    if unit.get("nodeSelector"):
        pod_spec["nodeSelector"] = {**(pod_spec.get("nodeSelector") or {}), **unit["nodeSelector"]}
    if unit.get("tolerations"):
        pod_spec["tolerations"] = [*(pod_spec.get("tolerations") or []), *unit["tolerations"]]
    template["spec"] = pod_spec
    spec["template"] = template
    return {
        "apiVersion": source.get("apiVersion") or "apps/v1",
        "kind": source.get("kind"),
        "metadata": {
            "name": name,
            "namespace": source_meta.get("namespace"),
            "labels": {
                **(source_meta.get("labels") or {}),
                elasticworkloads.OWNER_LABEL: str(_meta(ew).get("name") or ""),
                **unit_labels,
            },
            "ownerReferences": [ownership.owner_reference(dict(ew))],
        },
        "spec": spec,
    }


class ElasticWorkloadController:
    """Keeps every ElasticWorkload's source and unit clones at their shares."""

    def __init__(
        self,
        client: clients.ApiClient,
        factory: informers.InformerFactory,
        *,
        clock: clocks.Clock | None = None,
        recorder: events.EventRecorder | None = None,
        workers: int = 2,
    ) -> None:
        self.client = client
        self.factory = factory
        self.clock = clock or factory.clock or clocks.SystemClock()
        self.recorder = recorder
        self.elastic = {ref.group: factory.informer(ref) for ref in ELASTIC_WORKLOADS}
        self.workloads = {kind: factory.informer(ref) for kind, ref in WORKLOADS.items()}
        self.controller = controllers.Controller(
            "elasticworkloads", self.sync, workers=workers, clock=self.clock
        )

    async def start(self) -> None:
        for group, informer in self.elastic.items():

            def key_for(obj: clients.Object, group: str = group) -> str | None:
                return f"{group}/{clients.key_of(obj)}"

            self.controller.enqueue_changes(informer, key_for)
        for informer in self.workloads.values():
            for handler in (self._enqueue_owners_of_clone, self._enqueue_users_of_source):
                self.controller.enqueue_changes(informer, handler)
        self.factory.start()
        self.controller.start([*self.elastic.values(), *self.workloads.values()])

    async def stop(self) -> None:
        await self.controller.stop()

    def _enqueue_owners_of_clone(self, obj: clients.Object) -> str | None:
        ref = ownership.controller_ref(dict(obj))
        if ref is None or ref.get("kind") != elasticworkloads.KIND:
            return None
        group = str(ref.get("apiVersion") or "").split("/")[0]
        return f"{group}/{_meta(obj).get('namespace', '')}/{ref.get('name')}"

    def _enqueue_users_of_source(self, obj: clients.Object) -> str | None:
        namespace = str(_meta(obj).get("namespace") or "")
        for group, informer in self.elastic.items():
            for ew in informer.objects(namespace):
                ref = elasticworkloads.source_ref(ew.get("spec") or {})
                if (
                    ref is not None
                    and ref[1] == obj.get("kind")
                    and ref[2] == _meta(obj).get("name")
                ):
                    return f"{group}/{clients.key_of(ew)}"
        return None

    async def sync(self, key: str) -> None:
        group, _, object_key = key.partition("/")
        informer = self.elastic.get(group)
        ew = informer.get(object_key) if informer is not None else None
        if ew is None or _meta(ew).get("deletionTimestamp"):
            return
        namespace = str(_meta(ew).get("namespace") or "")
        spec = ew.get("spec") or {}
        ref = elasticworkloads.source_ref(spec)
        if ref is None:
            return
        _, kind, source_name = ref
        source = self.workloads[kind].get(f"{namespace}/{source_name}")
        if source is None:
            await self._write_status(ew, {"conditions": [_missing(kind, source_name)]})
            return
        shared = elasticworkloads.share(spec)
        await self._scale(WORKLOADS[kind], source, shared.source)
        units = {str(u.get("name")): u for u in spec.get("elasticUnit") or ()}
        unit_status: list[Obj] = []
        for unit_name, replicas in shared.units:
            clone = await self._ensure_clone(kind, ew, source, units[unit_name], replicas)
            unit_status.append(
                {
                    "name": unit_name,
                    "desiredReplicas": replicas,
                    "replicas": int(((clone or {}).get("status") or {}).get("replicas") or 0),
                }
            )
        await self._prune(kind, ew, source_name, set(units))
        source_status = (self.workloads[kind].get(f"{namespace}/{source_name}") or source).get(
            "status"
        ) or {}
        actual = int(source_status.get("replicas") or 0) + sum(
            int(u["replicas"]) for u in unit_status
        )
        selector = (source.get("spec") or {}).get("selector") or {}
        status: Obj = {
            "observedGeneration": _meta(ew).get("generation", 1),
            "replicas": actual,
            "selector": str(selectors.label_selector_from_object(selector)) if selector else "",
            "sourceTarget": {
                "name": source_name,
                "desiredReplicas": shared.source,
                "replicas": int(source_status.get("replicas") or 0),
            },
            "elasticUnitsStatus": unit_status,
            "unplacedReplicas": shared.unplaced,
            "conditions": [],
        }
        await self._write_status(ew, status)

    async def _scale(self, ref: clients.ResourceRef, obj: Mapping[str, Any], replicas: int) -> None:
        if (obj.get("spec") or {}).get("replicas") == replicas:
            return
        meta = _meta(obj)
        await self.client.patch(
            ref,
            str(meta.get("namespace") or ""),
            str(meta.get("name") or ""),
            {"spec": {"replicas": replicas}},
            patch_type="merge",
            options=clients.WriteOptions(field_manager=FIELD_MANAGER),
        )

    async def _ensure_clone(
        self,
        kind: str,
        ew: Mapping[str, Any],
        source: Mapping[str, Any],
        unit: Mapping[str, Any],
        replicas: int,
    ) -> Mapping[str, Any] | None:
        wanted = desired_clone(ew, source, unit, replicas)
        meta = wanted["metadata"]
        current = self.workloads[kind].get(f"{meta['namespace']}/{meta['name']}")
        ref = WORKLOADS[kind]
        if current is None:
            try:
                return await self.client.create(
                    ref, wanted, clients.WriteOptions(field_manager=FIELD_MANAGER)
                )
            except errors.StatusError as err:
                if err.reason != "AlreadyExists":
                    raise
                return None  # the informer will show it; its event syncs again
        if not ownership.is_owned_by(dict(current), dict(ew)):
            log.warning("%s %s exists and is not this ElasticWorkload's", kind, meta["name"])
            return current
        spec = current.get("spec") or {}
        if spec.get("replicas") == replicas and spec.get("template") == wanted["spec"]["template"]:
            return current
        updated = {
            **current,
            "spec": {**spec, "replicas": replicas, "template": wanted["spec"]["template"]},
        }
        return await self.client.update(
            ref, updated, clients.WriteOptions(field_manager=FIELD_MANAGER)
        )

    async def _prune(
        self, kind: str, ew: Mapping[str, Any], source_name: str, units: set[str]
    ) -> None:
        namespace = str(_meta(ew).get("namespace") or "")
        for obj in self.workloads[kind].objects(namespace):
            labels = _meta(obj).get("labels") or {}
            if not ownership.is_owned_by(dict(obj), dict(ew)):
                continue
            if labels.get(elasticworkloads.UNIT_LABEL) in units:
                continue
            try:
                await self.client.delete(WORKLOADS[kind], namespace, str(_meta(obj).get("name")))
            except errors.StatusError as err:
                if err.code != 404:
                    raise

    async def _write_status(self, ew: Mapping[str, Any], status: Obj) -> None:
        if ew.get("status") == status:
            return
        meta = _meta(ew)
        group, _, version = str(ew.get("apiVersion") or "").partition("/")
        ref = clients.ResourceRef(group, version, "elasticworkloads", True, elasticworkloads.KIND)
        try:
            await self.client.patch(
                ref,
                str(meta.get("namespace") or ""),
                str(meta.get("name") or ""),
                {"status": status},
                patch_type="merge",
                subresource="status",
            )
        except errors.StatusError as err:
            if err.code != 404:
                raise


def _missing(kind: str, name: str) -> Obj:
    return {
        "type": "Ready",
        "status": "False",
        "reason": "SourceNotFound",
        "message": f"{kind} {name} not found",
    }
