"""The instance manager: one instance per pod bound to a zone's node.

Level-triggered like a kubelet: informers over pods and Instance records and
the provider's push channel all enqueue a pod key; ``sync(key)`` reads the
pod, its record and the provider's latest status and converges them:

- a bound pod without a record gets one (stored first, so a crash never leaks
  an instance the store does not know), then the provider creates it;
- provider status becomes pod status (phase, conditions, containerStatuses,
  podIP, hostIP, startTime) and the record's state, with an Event per state
  change;
- a deleted pod stops its instance with the pod's grace period, then the pod
  is removed (grace 0) and the record with it;
- a record whose instance the provider no longer has is adopted (providers
  that can, like the simulated one) or ends the pod Failed, reason NotFound.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import logging
from collections.abc import AsyncIterator, Mapping
from decimal import Decimal
from typing import Any

from nodeless import clocks
from nodeless.api import errors, times, values
from nodeless.client import clients, controllers, events, informers
from nodeless.instances import nodes, podstatuses
from nodeless.instances.providers import base
from nodeless.serverless import annotations as pod_annotations
from nodeless.serverless import billing, catalogue

log = logging.getLogger(__name__)

PODS = clients.ResourceRef("", "v1", "pods", True, "Pod")
INSTANCES = clients.ResourceRef("nodeless.dev", "v1", "instances", True, "Instance")
BID_FAILED = "BidFailed"
# The pod condition that carries a spot instance's reclaim notice (as ECI's).
RECLAIM_CONDITION = "ContainerInstanceCreated"
BILLING_RECORDS = clients.ResourceRef(
    "nodeless.dev", "v1", "billingrecords", False, "BillingRecord"
)
MANAGER = "nodeless-instance-manager"
# The writes whose answer the manager drops (status patches, bills) or only
# reads (an instance record, like the informer's): the in-process client
# then makes no copy of it.
DROPPED = clients.WriteOptions(field_manager=MANAGER, keep_result=False)
Obj = dict[str, Any]


def _time(clock: clocks.Clock) -> str:
    return times.rfc3339(clock.now())


def _billing_time(clock: clocks.Clock) -> str:
    return billing.format_time(clock.now())


def _status_to_record(status: base.InstanceStatus) -> Obj:
    """The parts of a provider status kept in the record, enough to adopt it later."""

    def containers(items: list[base.ContainerStatus]) -> list[Obj]:
        return [
            {
                "name": c.name,
                "image": c.image,
                "state": c.state,
                "reason": c.reason,
                "exitCode": c.exit_code,
                "startedAt": c.started_at.isoformat() if c.started_at else None,
                "finishedAt": c.finished_at.isoformat() if c.finished_at else None,
                "restartCount": c.restart_count,
                "ready": c.ready,
                "started": c.started,
            }
            for c in items
        ]

    return {
        "state": status.state.value,
        "reason": status.reason,
        "message": status.message,
        "ip": status.ip,
        "hostIP": status.host_ip,
        "createdAt": status.created_at.isoformat() if status.created_at else None,
        "startedAt": status.started_at.isoformat() if status.started_at else None,
        "finishedAt": status.finished_at.isoformat() if status.finished_at else None,
        "initialized": status.initialized,
        "initContainers": containers(status.init_containers),
        "containers": containers(status.containers),
    }


def _status_from_record(record: Obj) -> base.InstanceStatus:
    import datetime

    def when(text: Any) -> datetime.datetime | None:
        return datetime.datetime.fromisoformat(text) if isinstance(text, str) and text else None

    st = record.get("status") or {}
    spec = record.get("spec") or {}
    meta = record.get("metadata") or {}

    def containers(items: list[Obj]) -> list[base.ContainerStatus]:
        return [
            base.ContainerStatus(
                name=c.get("name", ""),
                image=c.get("image", ""),
                state=c.get("state", "waiting"),
                reason=c.get("reason", ""),
                exit_code=c.get("exitCode"),
                started_at=when(c.get("startedAt")),
                finished_at=when(c.get("finishedAt")),
                restart_count=int(c.get("restartCount") or 0),
                ready=bool(c.get("ready")),
                started=bool(c.get("started")),
            )
            for c in items or []
        ]

    return base.InstanceStatus(
        instance_id=spec.get("instanceID", ""),
        namespace=meta.get("namespace", ""),
        pod_name=spec.get("podName", meta.get("name", "")),
        pod_uid=spec.get("podUID", ""),
        zone=spec.get("zone", ""),
        state=base.InstanceState(st.get("state", base.InstanceState.SCHEDULING.value)),
        reason=st.get("reason", ""),
        message=st.get("message", ""),
        ip=st.get("ip", ""),
        host_ip=st.get("hostIP", ""),
        created_at=when(st.get("createdAt")),
        started_at=when(st.get("startedAt")),
        finished_at=when(st.get("finishedAt")),
        init_containers=containers(st.get("initContainers") or []),
        containers=containers(st.get("containers") or []),
        initialized=bool(st.get("initialized")),
    )


# Syncs in flight (each waits on the provider and on the store's commits).
DEFAULT_WORKERS = 16


class InstanceManager:
    def __init__(
        self,
        client: clients.ApiClient,
        provider: base.Provider,
        zones: list[nodes.Zone],
        specs: catalogue.Catalogue,
        *,
        clock: clocks.Clock | None = None,
        recorder: events.EventRecorder | None = None,
        workers: int = DEFAULT_WORKERS,
        factory: informers.InformerFactory | None = None,
    ) -> None:
        """``factory``: informers shared with other components (one pod watch
        and cache for all); without it the manager has its own."""
        self.client = client
        self.provider = provider
        self.specs = specs
        self.clock = clock or clocks.SystemClock()
        self.recorder = recorder
        self.node_names = {z.node_name for z in zones}
        self._owns_informers = factory is None
        factory = factory or informers.InformerFactory(client, clock=self.clock)
        self.pods = factory.informer(PODS)
        self.records = factory.informer(INSTANCES)
        self.controller = controllers.Controller(
            "instances", self.sync, workers=workers, clock=self.clock
        )
        # Latest pushed status per pod key; the provider is asked when missing.
        self.latest: dict[str, base.InstanceStatus] = {}
        self._deleting: set[str] = set()
        self._announced: dict[str, base.InstanceState] = {}
        # States pushed since the pod's last status write: each gets its Event
        # even when one write covers several (Pending and Running at once).
        self._passed: dict[str, list[base.InstanceStatus]] = {}
        # Instances started whose record is not written yet: the next sync
        # writes it with the state the instance has reached by then.
        self._unrecorded: dict[str, Obj] = {}
        self._final: dict[str, base.InstanceStatus] = {}
        # Billed intervals per instance ID, as last written to its record
        # (the informer may lag our own writes; one worker per pod writes them).
        self._billing: dict[str, list[Obj]] = {}
        # Spot instances being reclaimed (instance ID -> why), until their record goes.
        self._reclaimed: dict[str, str] = {}
        # Spot instances given notice (instance ID -> the notice), likewise.
        self._noticed: dict[str, str] = {}
        # The labels and annotations each instance was last shown
        # (``UpdateCapable`` providers only).
        self._shown: dict[str, tuple[Obj, Obj]] = {}
        # Our own writes the informers may not show yet, per (resource, key):
        # the resourceVersions known to be older than the write, and the
        # object it made (None: deleted). A sync while an informer shows one
        # of those versions reads the object made instead, so it neither
        # writes the same status again nor bills a deleted record twice.
        self._written: dict[tuple[str, str], tuple[frozenset[str], Obj | None]] = {}
        # asked once: a protocol's isinstance costs microseconds, on every sync
        self._updatable = provider if isinstance(provider, base.UpdateCapable) else None
        self._adopted = False
        self.pods.add_handlers(
            self._pod_changed, lambda old, new: self._pod_changed(new), self._pod_changed
        )
        self.records.add_handlers(
            self._record_changed, lambda old, new: self._record_changed(new), self._record_changed
        )
        if isinstance(provider, base.Notifier):
            provider.subscribe(self._pushed)
        if isinstance(provider, base.EventsCapable):
            provider.subscribe_events(self._provider_event)
        self._poller: base.PollingAdapter | None = None

    # --- feeding the queue -----------------------------------------------------

    def _ours(self, pod: Obj) -> bool:
        return (pod.get("spec") or {}).get("nodeName") in self.node_names

    def _pod_changed(self, pod: Obj) -> None:
        if self._ours(pod):
            self.controller.queue.add(clients.key_of(pod))

    def _record_changed(self, record: Obj) -> None:
        self.controller.queue.add(clients.key_of(record))

    def _pushed(self, status: base.InstanceStatus) -> None:
        key = f"{status.namespace}/{status.pod_name}"
        self.latest[key] = status
        passed = self._passed.setdefault(key, [])
        if not passed or passed[-1].state != status.state:
            passed.append(status)
        if status.state.terminal:
            # Kept for a deleted pod whose instance is removed right after its
            # final status: that status is still written before the pod goes.
            self._final[key] = status
        self.controller.queue.add(key)

    def _provider_event(self, event: base.InstanceEvent) -> None:
        """Records what the provider saw happen in a pod (pulls, probes,
        kills) on the pod, as a kubelet would; pods gone or replaced are skipped."""
        if self.recorder is None:
            return
        pod = self.pods.get(f"{event.namespace}/{event.pod_name}")
        if pod is None or (pod.get("metadata") or {}).get("uid") != event.pod_uid:
            return
        self.recorder.record(pod, event.type, event.reason, event.message)

    # --- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        await self.provider.start()
        if not isinstance(self.provider, base.Notifier):
            self._poller = base.PollingAdapter(self.provider)
            self._poller.subscribe(self._pushed)
            self._poller.start()
        self.pods.start()
        self.records.start()
        await self.pods.wait_synced()
        await self.records.wait_synced()
        await self.adopt()
        self.controller.start([self.pods, self.records])

    async def stop(self) -> None:
        await self.controller.stop()
        if self._owns_informers:
            await self.pods.stop()
            await self.records.stop()
        if self._poller is not None:
            await self._poller.stop()
        await self.provider.close()

    async def adopt(self) -> None:
        """After a restart: take back every instance the records know.

        Instances the provider still runs are simply found again; a provider
        that lost them (the in-memory simulated one) rebuilds them from the
        record when it can. Nothing is created twice: records are keyed by pod.
        """
        running = {s.instance_id: s for s in await self.provider.list()}
        adopt = getattr(self.provider, "adopt", None)
        known = {(r.get("spec") or {}).get("instanceID", "") for r in self.records.objects()}
        for instance_id in running.keys() - known:
            status = running[instance_id]
            key = f"{status.namespace}/{status.pod_name}"
            pod = self.pods.get(key)
            if (
                pod is not None
                and self._ours(pod)
                and (pod.get("metadata") or {}).get("uid") == status.pod_uid
            ):
                # Started just before a crash, before its record was written.
                self._unrecorded[key] = self._record_body(pod)
                self.latest[key] = status
                continue
            # Its pod was deleted (with its record) while we were down.
            log.info("deleting instance %s: no pod or record claims it", instance_id)
            await self.provider.delete(instance_id, 0)
        for record in self.records.objects():
            key = clients.key_of(record)
            spec = record.get("spec") or {}
            instance_id = spec.get("instanceID", "")
            if instance_id in running:
                self.latest[key] = running[instance_id]
                continue
            pod = self.pods.get(key)
            last = _status_from_record(record)
            if adopt is not None and pod is not None and not last.state.terminal:
                status = await adopt(self._request(pod, record), last)
                self.latest[key] = status
        self._adopted = True

    # --- logs ----------------------------------------------------------------------

    async def logs(
        self,
        namespace: str,
        name: str,
        container: str,
        *,
        follow: bool = False,
        previous: bool = False,
        timestamps: bool = False,
        tail_lines: int | None = None,
        since: datetime.datetime | None = None,
        limit_bytes: int | None = None,
    ) -> AsyncIterator[bytes]:
        """The log of a container of the pod's instance, read by the provider.
        What has no log is a 400 in the kubelet's words: a pod without an
        instance yet is waiting to start (ContainerCreating)."""
        if not isinstance(self.provider, base.LogsCapable):
            raise errors.bad_request(
                f"log is not available: the {self.provider.name} instance provider "
                "does not serve container logs"
            )
        instance_id = self._instance_of(namespace, name)
        if not instance_id:
            if previous:
                raise errors.bad_request(
                    f'previous terminated container "{container}" in pod "{name}" not found'
                )
            raise errors.bad_request(
                f'container "{container}" in pod "{name}" is waiting to start: ContainerCreating'
            )
        try:
            return await self.provider.logs(
                instance_id,
                container,
                follow=follow,
                previous=previous,
                tail_lines=tail_lines,
                timestamps=timestamps,
                since=since,
                limit_bytes=limit_bytes,
            )
        except base.ProviderError as err:
            raise errors.bad_request(str(err)) from None

    def _instance_of(self, namespace: str, name: str) -> str:
        """The ID of the pod's current instance, "" while it has none."""
        key = f"{namespace}/{name}"
        pod = self.pods.get(key)
        uid = ((pod or {}).get("metadata") or {}).get("uid")
        record = self.records.get(key) or self._unrecorded.get(key)
        if record is not None and (record.get("spec") or {}).get("podUID") == uid:
            instance_id = str((record.get("spec") or {}).get("instanceID", ""))
            if instance_id:
                return instance_id
        latest = self.latest.get(key)
        if latest is not None and latest.pod_uid == uid:
            return latest.instance_id
        return ""

    # --- exec and attach -----------------------------------------------------------

    async def stream_url(
        self,
        namespace: str,
        name: str,
        container: str,
        command: list[str] | None,
        *,
        stdin: bool,
        stdout: bool,
        stderr: bool,
        tty: bool,
    ) -> str:
        """The provider's streaming URL for an exec of ``command`` (or, with
        None, an attach) in a container of the pod; a 400 in the kubelet's
        words where there is nothing to stream to."""
        if not isinstance(self.provider, base.ExecCapable):
            raise errors.bad_request(
                f"unable to upgrade connection: the {self.provider.name} instance provider "
                "does not run commands in containers"
            )
        instance_id = self._instance_of(namespace, name)
        if not instance_id:
            raise errors.bad_request(
                f'unable to upgrade connection: container not found ("{container}")'
            )
        try:
            if command is None:
                return await self.provider.attach(
                    instance_id, container, stdin=stdin, stdout=stdout, stderr=stderr, tty=tty
                )
            return await self.provider.exec(
                instance_id,
                container,
                command,
                stdin=stdin,
                stdout=stdout,
                stderr=stderr,
                tty=tty,
            )
        except base.ProviderError as err:
            raise errors.bad_request(str(err)) from None

    async def port_forward(
        self, namespace: str, name: str, port: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A connection to ``port`` of the pod's instance; ``errors.StatusError``
        (400) when there is none or the port does not answer."""
        if not isinstance(self.provider, base.PortForwardCapable):
            raise errors.bad_request(
                f"unable to upgrade connection: the {self.provider.name} instance provider "
                "does not forward ports"
            )
        instance_id = self._instance_of(namespace, name)
        if not instance_id:
            raise errors.bad_request(f"unable to upgrade connection: pod {name} is not running")
        try:
            return await self.provider.port_forward(instance_id, port)
        except base.ProviderError as err:
            raise errors.bad_request(str(err)) from None

    # --- usage ---------------------------------------------------------------------

    async def usage(self) -> list[tuple[Obj, base.InstanceUsage]]:
        """What the running containers of this manager's pods use, each with
        its pod: the data ``metrics.k8s.io`` serves (``kubectl top``, the
        HPA). Only a pod's current instance counts, so a pod re-created under
        the same name never shows its predecessor's usage, and instances no
        pod claims are left out. Empty when the provider cannot measure (is
        not ``StatsCapable``); ``base.ProviderError`` when it failed to."""
        if not isinstance(self.provider, base.StatsCapable):
            return []
        measured = await self.provider.stats()
        owners: dict[str, Obj] = {}
        for pod in self.pods.objects():
            if not self._ours(pod):
                continue
            metadata = pod.get("metadata") or {}
            instance_id = self._instance_of(
                str(metadata.get("namespace", "")), str(metadata.get("name", ""))
            )
            if instance_id:
                owners[instance_id] = pod
        return [(owners[u.instance_id], u) for u in measured if u.instance_id in owners]

    # --- sync ----------------------------------------------------------------------

    def _request(self, pod: Obj, record: Obj) -> base.InstanceRequest:
        spec = record.get("spec") or {}
        return base.InstanceRequest(
            instance_id=spec.get("instanceID", ""),
            pod=pod,
            zone=spec.get("zone", ""),
            spec_name=spec.get("instanceSpec", ""),
            vcpu=float(spec.get("vcpu") or 0),
            memory_gib=float(spec.get("memoryGiB") or 0),
            gpu_count=int(spec.get("gpus") or 0),
            capacity_type=spec.get("capacityType", "on-demand"),
        )

    def _fresher(
        self, informer: informers.Informer, ref: clients.ResourceRef, key: str
    ) -> Obj | None:
        """What the informer shows of ``key``, or what our own write made of
        it while the informer still shows a version from before that write."""
        seen = informer.get(key)
        memo = self._written.get((ref.plural, key))
        if memo is None:
            return seen
        older, made = memo
        seen_version = clients.resource_version(seen) if seen is not None else ""
        made_version = clients.resource_version(made) if made is not None else ""
        if (
            seen_version != made_version
            and seen_version in older
            # An informer at or past our write is the truth: what it shows
            # instead (nothing, after someone deleted the record we created,
            # seen or missed in a relist) came later.
            and not (made is not None and informer.has_seen(made_version))
        ):
            return made
        # The informer has caught up (or moved past): it is the truth again.
        del self._written[(ref.plural, key)]
        return seen

    def _remember(
        self, ref: clients.ResourceRef, key: str, based_on: Obj | None, made: Obj | None
    ) -> None:
        """Our write to ``key``, made on ``based_on`` (None: a create), made
        ``made`` (None: deleted). A sync's writes to one key never overlap (the
        work queue hands a key to one worker at a time), so every version our
        earlier writes saw or made is older than this one's too."""
        older = {clients.resource_version(based_on) if based_on is not None else ""}
        memo = self._written.get((ref.plural, key))
        if memo is not None:
            older |= memo[0]
            if memo[1] is not None:
                older.add(clients.resource_version(memo[1]))
        self._written[(ref.plural, key)] = (frozenset(older), made)

    async def sync(self, key: str) -> None:
        pod = self._fresher(self.pods, PODS, key)
        record = self._fresher(self.records, INSTANCES, key)
        if pod is not None and not self._ours(pod):
            pod = None if record is None else pod
            if record is None:
                return
        unrecorded = self._unrecorded.get(key)
        if unrecorded is not None and record is None:
            if pod is None or (unrecorded.get("spec") or {}).get("podUID") != (
                pod.get("metadata") or {}
            ).get("uid"):
                # The pod went before its instance was recorded: no record to delete.
                self._unrecorded.pop(key, None)
                await self.provider.delete((unrecorded.get("spec") or {}).get("instanceID", ""), 0)
                self._forget(key)
                return
            record = await self._write_record(key, unrecorded)
            if record is None:
                return
            started = self.latest.get(key)
            if started is not None:
                self._announce(pod, record, started)
        if pod is None or (
            record is not None
            and (record.get("spec") or {}).get("podUID") != (pod.get("metadata") or {}).get("uid")
        ):
            if record is not None:
                await self._release(key, record)
            return
        if record is None:
            if (pod.get("metadata") or {}).get("deletionTimestamp"):
                await self._remove_pod(pod)
                return
            if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
                return
            await self._create(key, pod)
            return
        status = await self._status(key, record)
        if (pod.get("metadata") or {}).get("deletionTimestamp"):
            await self._terminate(key, pod, record, status)
            return
        if status is None:
            instance_id = str((record.get("spec") or {}).get("instanceID") or "")
            reclaimed = instance_id in self._reclaimed or (
                ((record.get("status") or {}).get("reclaim") or {}).get("started")
            )
            if reclaimed:
                # Gone because we reclaimed it: its end is the reclaim, not a loss.
                final = self._final.get(key)
                if final is None or final.instance_id != instance_id:
                    final = dataclasses.replace(
                        _status_from_record(record), state=base.InstanceState.FAILED
                    )
                await self._reflect(pod, record, final)
                return
            await self._vanished(pod, record)
            return
        await self._show_metadata(key, pod, record)
        await self._reflect(pod, record, status)

    async def _show_metadata(self, key: str, pod: Obj, record: Obj) -> None:
        """Passes the pod to its instance when its labels or annotations
        changed since the instance was last shown them (on the first sync
        after a restart too: an adopted instance may have missed a change)."""
        if self._updatable is None:
            return
        current = base.shown_metadata(pod)
        if self._shown.get(key) == current:
            return
        instance_id = str((record.get("spec") or {}).get("instanceID") or "")
        await self._updatable.update(instance_id, pod)
        self._shown[key] = current

    async def _status(self, key: str, record: Obj) -> base.InstanceStatus | None:
        # The provider is the truth (pushes may lag, and stop when an instance
        # vanishes); what was pushed is only a hint that something changed.
        instance_id = (record.get("spec") or {}).get("instanceID", "")
        status = await self.provider.get(instance_id)
        if status is None:
            self.latest.pop(key, None)
        else:
            self.latest[key] = status
        return status

    def _record_body(self, pod: Obj) -> Obj:
        """The Instance record of a pod's instance, before it is stored."""
        meta = pod.get("metadata") or {}
        notes = meta.get("annotations") or {}
        instance_id = (
            pod_annotations.read(notes, pod_annotations.INSTANCE_ID)
            or f"eci-{meta.get('uid', '')[:18]}"
        )
        spec_name = pod_annotations.read(notes, pod_annotations.INSTANCE_SPEC) or ""
        spec = self.specs.find(spec_name) if spec_name else None
        zone = nodes.zone_of_node((pod.get("spec") or {}).get("nodeName", "")) or ""
        return {
            "apiVersion": "nodeless.dev/v1",
            "kind": "Instance",
            "metadata": {
                "name": meta.get("name"),
                "namespace": meta.get("namespace"),
                "labels": {"nodeless.dev/zone": zone},
                "ownerReferences": [
                    {
                        "apiVersion": "v1",
                        "kind": "Pod",
                        "name": meta.get("name"),
                        "uid": meta.get("uid"),
                        "controller": True,
                        "blockOwnerDeletion": False,
                    }
                ],
            },
            "spec": {
                "instanceID": instance_id,
                "podName": meta.get("name"),
                "podUID": meta.get("uid"),
                "zone": zone,
                "instanceSpec": spec.name if spec else spec_name,
                "vcpu": str(spec.vcpu) if spec else "0",
                "memoryGiB": str(spec.memory_gib) if spec else "0",
                "gpus": spec.gpu_count if spec else 0,
                "capacityType": pod_annotations.read(notes, pod_annotations.CAPACITY_TYPE)
                or "on-demand",
                # The price bought at (a spot pod's market price), else the spec's.
                "hourlyPrice": pod_annotations.read(notes, pod_annotations.PRICE)
                or str(spec.hourly_price if spec else Decimal(0)),
                "currency": self.specs.currency,
                "provider": self.provider.name,
                # Who the bill belongs to, once the pod is gone.
                "podLabels": dict(meta.get("labels") or {}),
                "owner": billing.controller_ref(pod),
                **self._spot_terms(notes),
            },
            "status": {
                "state": base.InstanceState.SCHEDULING.value,
                "lastTransitionTime": _time(self.clock),
                # Billing starts when the provider is asked (the image pull).
                "createdAt": _billing_time(self.clock),
            },
        }

    def _spot_terms(self, notes: Mapping[str, Any]) -> Obj:
        """A spot instance's terms, from the pod's annotations: its strategy,
        price limit and protection period (hours; 0 = none)."""
        if pod_annotations.read(notes, pod_annotations.CAPACITY_TYPE) != "spot":
            return {}
        hours = pod_annotations.read(notes, pod_annotations.SPOT_DURATION)
        protection = (
            int(hours) if hours and hours.isdigit() else pod_annotations.DEFAULT_SPOT_DURATION_HOURS
        )
        until = self.clock.now() + datetime.timedelta(hours=protection)
        terms: Obj = {
            "spotStrategy": pod_annotations.read(notes, pod_annotations.SPOT_STRATEGY) or "",
            "protectedUntil": billing.format_time(until),
        }
        limit = pod_annotations.read(notes, pod_annotations.SPOT_PRICE_LIMIT)
        if limit:
            terms["spotPriceLimit"] = limit
        return terms

    # --- spot reclaim (driven by instances.reclaiming) ---------------------------------

    def _record_key(self, record: Obj) -> str:
        meta = record.get("metadata") or {}
        return f"{meta.get('namespace', '')}/{meta.get('name', '')}"

    async def reprice(self, record: Obj, hourly_price: str) -> None:
        """The market price changed after protection: bill on at the new one."""
        instance_id = str((record.get("spec") or {}).get("instanceID") or "")
        intervals = billing.reprice(
            self._intervals(record), hourly_price, _billing_time(self.clock)
        )
        if intervals == self._intervals(record):
            return
        self._billing[instance_id] = intervals
        await self._patch_record_status(record, {"billing": {"intervals": intervals}}, aside=True)

    async def give_notice(self, record: Obj, message: str, at: datetime.datetime) -> None:
        """Tell the pod its spot instance goes at ``at`` (a condition and a
        Warning event), and remember it in the record (restarts keep it)."""
        seconds = max(0.0, (at - self.clock.now()).total_seconds())
        when = f"{round(seconds / 60)} minutes" if seconds >= 60 else f"{seconds:.0f} seconds"
        notice = f"Spot instance will be released in {when}: {message}"
        await self._patch_record_status(
            record,
            {"reclaim": {"at": billing.format_time(at), "message": message, "notice": notice}},
            aside=True,
        )
        # The pod's condition is the sync's to write (``_reflect``): it alone
        # writes the pod's status, so no write from a staler view drops it.
        self._noticed[str((record.get("spec") or {}).get("instanceID") or "")] = notice
        key = self._record_key(record)
        self.controller.queue.add(key)
        pod = self.pods.get(key)
        if pod is not None and self.recorder is not None:
            self.recorder.record(pod, "Warning", "SpotToBeReleased", notice)

    async def reclaim(self, record: Obj) -> None:
        """The notice ran out: stop the instance as a deletion would (SIGTERM,
        the pod's grace period, SIGKILL); its end is written as Expired with
        reason BidFailed (``_reflect``), and the pod's owner replaces it."""
        reclaim = (record.get("status") or {}).get("reclaim") or {}
        if reclaim.get("started"):
            return
        await self._patch_record_status(
            record, {"reclaim": {**reclaim, "started": True}}, aside=True
        )
        key = self._record_key(record)
        pod = self.pods.get(key) or {}
        grace = (pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
        instance_id = str((record.get("spec") or {}).get("instanceID") or "")
        # Known at once: the instance may end before the informer shows the
        # record. The sync writes DisruptionTarget from it.
        self._reclaimed[instance_id] = str(reclaim.get("message") or "")
        self.controller.queue.add(key)
        await self.provider.delete(instance_id, int(grace))

    def _reclaim_of(self, record: Obj) -> Obj:
        """The record's reclaim as this manager knows it: the informer may not
        show our own notice and start yet."""
        reclaim = dict((record.get("status") or {}).get("reclaim") or {})
        instance_id = str((record.get("spec") or {}).get("instanceID") or "")
        if instance_id in self._noticed:
            reclaim["notice"] = self._noticed[instance_id]
        if instance_id in self._reclaimed:
            reclaim["started"] = True
            reclaim["message"] = self._reclaimed[instance_id]
        return reclaim

    def _with_reclaim(self, status: Obj, reclaim: Obj) -> Obj:
        """The spot reclaim's conditions on a pod status: the notice
        (``ContainerInstanceCreated``/``SpotToBeReleased``, as ECI) and, once
        the instance is being taken, ``DisruptionTarget``."""
        now = self.clock.now()
        if reclaim.get("notice"):
            status = podstatuses.with_condition(
                status, RECLAIM_CONDITION, "SpotToBeReleased", str(reclaim["notice"]), now
            )
        if reclaim.get("started"):
            message = str(reclaim.get("message") or "spot instance reclaimed")
            status = podstatuses.with_condition(
                status, "DisruptionTarget", BID_FAILED, message, now
            )
        return status

    async def _patch_record_status(self, record: Obj, patch: Obj, *, aside: bool = False) -> None:
        """``aside``: written beside the syncs (by the reclaimer), maybe while
        one writes too, so the order of the two is unknown: the informer is
        the truth again (what those writes keep is also held in memory:
        ``_billing``, ``_noticed``, ``_reclaimed``)."""
        await self._patch_status(INSTANCES, record, patch)
        if aside:
            self._written.pop((INSTANCES.plural, clients.key_of(record)), None)

    async def _patch_status(self, ref: clients.ResourceRef, obj: Obj, status: Obj) -> None:
        """A merge patch of ``status`` (a pod's or a record's); a write that
        fails (the object went) is dropped: the next sync reads what is."""
        meta = obj.get("metadata") or {}
        try:
            made = await self.client.patch(
                ref,
                meta.get("namespace", ""),
                meta.get("name", ""),
                {"status": status},
                patch_type="merge",
                subresource="status",
                options=DROPPED,
            )
        except errors.StatusError as err:
            if err.code == 404:
                # Gone: whatever our last write made of it is no fresher.
                self._written.pop((ref.plural, clients.key_of(obj)), None)
            return
        self._remember(ref, clients.key_of(obj), obj, made)

    async def _create(self, key: str, pod: Obj) -> None:
        """Start the pod's instance; its record is written by the next sync.

        The record waits so that it is written once with the state the
        instance has reached (a busy manager finds most already Running),
        not once per state. A crash in between loses nothing: instance ids
        come from the pod, creation is idempotent, and ``adopt`` records an
        instance whose pod is still ours (and deletes one whose pod went).
        """
        body = self._record_body(pod)
        try:
            status = await self.provider.create(self._request(pod, body))
        except base.ProviderError as err:
            record = await self._write_record(key, body, started=False)
            if record is not None:
                await self._provider_failed(pod, record, str(err))
            return
        self.latest[key] = status
        self._unrecorded[key] = body
        self._shown[key] = base.shown_metadata(pod)
        self.controller.queue.add(key)

    async def _write_record(self, key: str, body: Obj, *, started: bool = True) -> Obj | None:
        """Store the record of an instance, with the state it has now."""
        record = dict(body)
        if started:
            status = self.latest.get(key)
            if status is None:
                status = await self.provider.get((body.get("spec") or {}).get("instanceID", ""))
            if status is not None:
                saved = _status_to_record(status)
                saved["lastTransitionTime"] = _time(self.clock)
                created_at = (body.get("status") or {}).get("createdAt") or _billing_time(
                    self.clock
                )
                saved["createdAt"] = created_at
                if status.state.billed:
                    spec = body.get("spec") or {}
                    saved["billing"] = {
                        "intervals": billing.advance(
                            [],
                            status.state.value,
                            True,
                            created_at,
                            str(spec.get("hourlyPrice") or "0"),
                        )
                    }
                record["status"] = saved
        try:
            stored = await self.client.create(INSTANCES, record, DROPPED)
        except errors.StatusError as err:
            if err.code != 409:
                log.warning("cannot record instance of %s: %s", key, err.message)
                return None
            stored = await self.client.get(
                INSTANCES,
                (body.get("metadata") or {}).get("namespace", ""),
                (body.get("metadata") or {}).get("name", ""),
            )
        else:
            self._remember(INSTANCES, key, None, stored)
        self._unrecorded.pop(key, None)
        instance_id = str((stored.get("spec") or {}).get("instanceID") or "")
        self._billing[instance_id] = list(
            ((stored.get("status") or {}).get("billing") or {}).get("intervals") or []
        )
        return stored

    async def _provider_failed(self, pod: Obj, record: Obj, message: str) -> None:
        if self.recorder is not None:
            self.recorder.record(pod, "Warning", "ProviderCreateFailed", message)
        now = _time(self.clock)
        status = values.clone(pod.get("status") or {})
        status.update({"phase": "Failed", "reason": "ProviderFailed", "message": message})
        await self._write_pod_status(pod, status)
        await self._write_record_state(
            record,
            {
                "state": base.InstanceState.FAILED.value,
                "reason": "ProviderFailed",
                "message": message,
                "lastTransitionTime": now,
            },
        )

    async def _reflect(self, pod: Obj, record: Obj, status: base.InstanceStatus) -> None:
        reclaim = self._reclaim_of(record)
        if (
            reclaim.get("started")
            and status.state.terminal
            and status.state is not base.InstanceState.EXPIRED
        ):
            # The market took it back: the instance's end is the reclaim's.
            status = dataclasses.replace(
                status,
                state=base.InstanceState.EXPIRED,
                reason=BID_FAILED,
                message=f"spot instance reclaimed: {reclaim.get('message') or ''}".rstrip(": "),
            )
        current = pod.get("status") or {}
        desired = podstatuses.pod_status(pod, status, current, self.clock.now())
        if reclaim:
            desired = self._with_reclaim(desired, reclaim)
        if desired != current:
            await self._write_pod_status(pod, desired)
        old_state = (record.get("status") or {}).get("state")
        saved = _status_to_record(status)
        # The record's own creation time (billing's start) stands; the
        # provider's differs by microseconds and would cost a write per pod.
        saved["createdAt"] = (record.get("status") or {}).get("createdAt") or saved["createdAt"]
        if old_state != status.state.value or _changed(record.get("status") or {}, saved):
            if old_state != status.state.value:
                saved["lastTransitionTime"] = _time(self.clock)
                self._announce(pod, record, status)
            else:
                saved["lastTransitionTime"] = (record.get("status") or {}).get("lastTransitionTime")
            await self._write_record_state(record, saved)

    def _announce(self, pod: Obj, record: Obj, status: base.InstanceStatus) -> None:
        """One Event per state the instance went through since the last one."""
        key = clients.key_of(pod)
        passed = self._passed.pop(key, [])
        if not passed or passed[-1].state != status.state:
            passed.append(status)
        for seen in passed:
            # The record informer may lag our own write: announce each state once.
            if self._announced.get(key) != seen.state:
                self._announced[key] = seen.state
                self._state_event(pod, record, seen)

    def _state_event(self, pod: Obj, record: Obj, status: base.InstanceStatus) -> None:
        if self.recorder is None:
            return
        spec = record.get("spec") or {}
        warning = status.state in (base.InstanceState.FAILED, base.InstanceState.EXPIRED)
        detail = f" ({status.reason}: {status.message})" if status.reason and warning else ""
        self.recorder.record(
            pod,
            "Warning" if warning else "Normal",
            f"Instance{status.state.value}",
            f"instance {spec.get('instanceID')} ({spec.get('instanceSpec')}, zone {spec.get('zone')}) is {status.state.value}{detail}",
        )

    async def _write_pod_status(self, pod: Obj, status: Obj) -> None:
        """Only the fields that changed from what the informer shows: a field
        another writer set since (a condition list, say) is not written back
        from an older view unless this write changes it too."""
        current = pod.get("status") or {}
        changed = {k: v for k, v in status.items() if current.get(k) != v}
        if changed:
            await self._patch_status(PODS, pod, changed)

    def _intervals(self, record: Obj) -> list[Obj]:
        instance_id = str((record.get("spec") or {}).get("instanceID") or "")
        known = self._billing.get(instance_id)
        if known is None:
            known = list(((record.get("status") or {}).get("billing") or {}).get("intervals") or [])
        return known

    async def _write_record_state(self, record: Obj, state: Obj) -> None:
        """The record's new state, with its billed intervals moved on (the
        open one closes when the state changes; a billed state opens one)."""
        spec = record.get("spec") or {}
        instance_id = str(spec.get("instanceID") or "")
        try:
            entered = base.InstanceState(str(state.get("state")))
        except ValueError:
            entered = None
        if entered is not None:
            known = self._intervals(record)
            # The price in force: the last one billed (a spot price moves), else the bought one.
            price = (
                str(known[-1].get("hourlyPrice")) if known else str(spec.get("hourlyPrice") or "0")
            )
            intervals = billing.advance(
                known, entered.value, entered.billed, _billing_time(self.clock), price
            )
            state = {**state, "billing": {"intervals": intervals}}
            self._billing[instance_id] = intervals
        await self._patch_record_status(record, state)

    async def _terminate(
        self, key: str, pod: Obj, record: Obj, status: base.InstanceStatus | None
    ) -> None:
        instance_id = (record.get("spec") or {}).get("instanceID", "")
        if status is not None and not status.state.terminal:
            if key not in self._deleting:
                self._deleting.add(key)
                grace = (pod.get("metadata") or {}).get("deletionGracePeriodSeconds")
                if grace is None:
                    grace = (pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
                await self.provider.delete(instance_id, int(grace))
            await self._reflect(pod, record, status)
            return
        # The instance has ended (or is gone): its final status is written (a
        # kubelet reports containers stopped and Ready=False before the pod
        # goes), then the pod goes, then its record.
        final = status or self._final.get(key)
        if final is not None and final.instance_id == instance_id:
            await self._reflect(pod, record, final)
        self._final.pop(key, None)
        if status is not None:
            await self.provider.delete(instance_id, 0)
        self._deleting.discard(key)
        await self._remove_pod(pod)
        await self._delete_record(record)
        self.latest.pop(key, None)

    async def _remove_pod(self, pod: Obj) -> None:
        meta = pod.get("metadata") or {}
        options = clients.DeleteOptions(
            grace_period_seconds=0, preconditions=clients.Preconditions(uid=meta.get("uid", ""))
        )
        with contextlib.suppress(errors.StatusError):
            await self.client.delete(PODS, meta.get("namespace", ""), meta.get("name", ""), options)

    async def _delete_record(self, record: Obj) -> None:
        """The instance is gone: its bill is kept as a BillingRecord, then the
        record goes (a crash in between leaves the record, and the next try
        finds the bill already written)."""
        meta = record.get("metadata") or {}
        await self._write_bill(record)
        try:
            gone = await self.client.delete(
                INSTANCES, meta.get("namespace", ""), meta.get("name", "")
            )
        except errors.StatusError as err:
            if err.code == 404:  # gone already (the garbage collector, after its pod)
                self._remember(INSTANCES, clients.key_of(record), record, None)
        else:
            # Still there while a finalizer (someone else's) holds it.
            left = gone if (gone.get("metadata") or {}).get("finalizers") else None
            self._remember(INSTANCES, clients.key_of(record), record, left)
        self._billing.pop(str((record.get("spec") or {}).get("instanceID") or ""), None)
        self._reclaimed.pop(str((record.get("spec") or {}).get("instanceID") or ""), None)
        self._noticed.pop(str((record.get("spec") or {}).get("instanceID") or ""), None)

    async def _write_bill(self, record: Obj) -> None:
        meta = record.get("metadata") or {}
        spec = record.get("spec") or {}
        intervals = billing.close(self._intervals(record), _billing_time(self.clock))
        if not intervals:
            return  # never billed (it failed before the provider took it)
        seconds, cost = billing.totals(intervals, self.clock.now())
        namespace = str(meta.get("namespace") or "")

        async def fetch(lookup: tuple[str, str, str, str], name: str) -> Obj | None:
            group, version, plural, kind = lookup
            try:
                return await self.client.get(
                    clients.ResourceRef(group, version, plural, True, kind), namespace, name
                )
            except errors.StatusError:
                return None

        workload = billing.workload_name(await billing.top_owner(spec.get("owner"), fetch))
        labels = {str(k): str(v) for k, v in (spec.get("podLabels") or {}).items()}
        labels.update(
            {
                billing.NAMESPACE_LABEL: str(meta.get("namespace") or ""),
                billing.POD_LABEL: str(spec.get("podName") or meta.get("name") or ""),
            }
        )
        if workload:
            labels[billing.WORKLOAD_LABEL] = workload.replace("/", ".")
        body = {
            "apiVersion": "nodeless.dev/v1",
            "kind": "BillingRecord",
            "metadata": {"name": spec.get("instanceID"), "labels": labels},
            "spec": {
                key: spec.get(key)
                for key in (
                    "instanceID",
                    "podName",
                    "podUID",
                    "zone",
                    "instanceSpec",
                    "capacityType",
                    "hourlyPrice",
                    "currency",
                    "provider",
                )
            }
            | {"namespace": meta.get("namespace"), "workload": workload},
            "status": {
                "intervals": intervals,
                "seconds": seconds,
                "cost": billing.money(cost),
            },
        }
        try:
            await self.client.create(BILLING_RECORDS, body, DROPPED)
        except errors.StatusError as err:
            if err.code != 409:
                log.warning("cannot keep the bill of %s: %s", spec.get("instanceID"), err.message)
            return
        if self.recorder is not None:
            involved = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": spec.get("podName") or meta.get("name"),
                    "namespace": meta.get("namespace"),
                    "uid": spec.get("podUID"),
                },
            }
            self.recorder.record(
                involved,
                "Normal",
                "InstanceBilled",
                f"instance {spec.get('instanceID')} ({spec.get('instanceSpec')}, "
                f"{spec.get('capacityType')}) billed {seconds} s at {spec.get('hourlyPrice')}/h: "
                f"{billing.money(cost)} {spec.get('currency') or ''}".rstrip(),
            )

    async def _release(self, key: str, record: Obj) -> None:
        """The pod is gone (or replaced by a new pod of the same name)."""
        instance_id = (record.get("spec") or {}).get("instanceID", "")
        await self.provider.delete(instance_id, 0)
        self._forget(key)
        await self._delete_record(record)

    def _forget(self, key: str) -> None:
        self._deleting.discard(key)
        self._written.pop((PODS.plural, key), None)
        self.latest.pop(key, None)
        self._final.pop(key, None)
        self._announced.pop(key, None)
        self._passed.pop(key, None)
        self._shown.pop(key, None)

    async def _vanished(self, pod: Obj, record: Obj) -> None:
        state = (record.get("status") or {}).get("state")
        if state in (
            base.InstanceState.SUCCEEDED.value,
            base.InstanceState.FAILED.value,
            base.InstanceState.EXPIRED.value,
        ):
            return
        if state == base.InstanceState.SCHEDULING.value and not self._adopted:
            return
        if state == base.InstanceState.SCHEDULING.value:
            # Stored but never handed to the provider (a crash in between): create it now.
            try:
                status = await self.provider.create(self._request(pod, record))
            except base.ProviderError as err:
                await self._provider_failed(pod, record, str(err))
                return
            self.latest[clients.key_of(pod)] = status
            await self._reflect(pod, record, status)
            return
        message = f"instance {(record.get('spec') or {}).get('instanceID')} no longer exists at the provider"
        if self.recorder is not None:
            self.recorder.record(pod, "Warning", "InstanceNotFound", message)
        failed = values.clone(pod.get("status") or {})
        failed.update({"phase": "Failed", "reason": "NotFound", "message": message})
        for c in failed.get("containerStatuses") or []:
            c["ready"] = False
        await self._write_pod_status(pod, failed)
        await self._write_record_state(
            record,
            {
                "state": base.InstanceState.FAILED.value,
                "reason": "NotFound",
                "message": message,
                "lastTransitionTime": _time(self.clock),
            },
        )


def _changed(old: Obj, new: Obj) -> bool:
    return any(old.get(k) != v for k, v in new.items())


async def wait_idle(manager: InstanceManager, timeout: float = 5.0) -> None:
    """Until the manager's queue is empty (for tests)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if len(manager.controller.queue) == 0 and not manager.controller.queue.processing:
            return
        await asyncio.sleep(0.01)
