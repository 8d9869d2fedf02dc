"""The Knative Revision controller: each ``serving.knative.dev/v1`` Revision
runs as one Deployment (``<revision>-deployment``) and is reached through one
ClusterIP Service of its own name, both owned by the Revision, as Knative's
revision reconciler and its serverless services arrange it.

Where Knative puts a queue-proxy sidecar in every pod and an activator in
front of idle Revisions, Nodeless has the ingress gateway count requests and
hold them while a Revision wakes (``networking.activation``); so the
Deployment carries the scaling annotations that autoscaler reads:
scale-to-zero (unless ``min-scale`` > 0), its grace (the stable window), the
target concurrency (target times utilization, as the KPA), min and max scale. A
Revision no traffic target routes to (label ``routingState=reserve``, set by
the Service controller) may always go to zero, as Knative ignores min-scale
for unreachable Revisions.

The pod template is the Revision's spec as Knative builds it: the serving
container gets ``$PORT`` and the ``K_SERVICE``/``K_CONFIGURATION``/
``K_REVISION`` variables, its port named ``user-port``, and a TCP readiness
probe on it unless it has its own; pods carry the Revision's labels.

Status, as Knative reports it: ``actualReplicas``/``desiredReplicas``, and
conditions ``ResourcesAvailable``, ``ContainerHealthy``, ``Active`` and
``Ready``. A Revision is Ready once one pod was ready, and stays Ready when
scaled to zero (``Active=False NoTraffic``). Before that, a pod that cannot
pull its image or keeps crashing makes it ``Ready=False`` with the
container's reason, so the Service says why instead of waiting forever.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from nodeless import clocks
from nodeless.api import durations, errors, knativeserving
from nodeless.client import clients, controllers, events, informers
from nodeless.controllers import ownership, podcontrol

log = logging.getLogger(__name__)

REVISIONS = clients.ResourceRef(
    knativeserving.GROUP, knativeserving.VERSION, "revisions", True, "Revision"
)
DEPLOYMENTS = clients.ResourceRef("apps", "v1", "deployments", True, "Deployment")
SERVICES = clients.ResourceRef("", "v1", "services", True, "Service")
PODS = clients.ResourceRef("", "v1", "pods", True, "Pod")

FIELD_MANAGER = "nodeless-knative-revisions"
ROUTING_STATE_LABEL = "serving.knative.dev/routingState"
RESERVE = "reserve"
PROGRESS_DEADLINE_SECONDS = 600  # Knative's progress-deadline
USER_PORT_NAME = "user-port"
# The Revision spec's own fields, which a pod spec does not have.
REVISION_ONLY_FIELDS = (
    "containerConcurrency",
    "timeoutSeconds",
    "responseStartTimeoutSeconds",
    "idleTimeoutSeconds",
)
# Waiting reasons that mean the container will not become healthy by itself.
FAILING_REASONS = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "InvalidImageName",
        "CrashLoopBackOff",
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
    }
)

Obj = dict[str, Any]


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


def revision_labels(revision: Mapping[str, Any]) -> dict[str, str]:
    """The labels a Revision's Deployment, Service and pods carry."""
    meta = _meta(revision)
    labels = {
        k: str(v)
        for k, v in (meta.get("labels") or {}).items()
        if k != ROUTING_STATE_LABEL  # changes over the Revision's life; pods need not follow
    }
    labels[knativeserving.REVISION_LABEL] = str(meta.get("name") or "")
    labels[knativeserving.REVISION_UID_LABEL] = str(meta.get("uid") or "")
    labels.setdefault("app", str(meta.get("name") or ""))
    return labels


def scaling_annotations(revision: Mapping[str, Any]) -> dict[str, str]:
    """What the Deployment tells the serving autoscaler."""
    meta = _meta(revision)
    annotations = {str(k): str(v) for k, v in (meta.get("annotations") or {}).items()}
    spec = revision.get("spec") or {}
    concurrency = spec.get("containerConcurrency")
    concurrency = concurrency if isinstance(concurrency, int) else 0
    low, high, _initial = knativeserving.scale_bounds(annotations)
    if (meta.get("labels") or {}).get(ROUTING_STATE_LABEL) == RESERVE:
        low = 0
    window = "60s"
    text = annotations.get(knativeserving.WINDOW_ANNOTATION)
    if text is not None:
        try:
            durations.seconds(text)
            window = text
        except ValueError:
            pass
    out = {
        knativeserving.SCALE_TO_ZERO: "true" if low == 0 else "false",
        # Knative scales to zero once the stable window has seen no request.
        knativeserving.SCALE_TO_ZERO_GRACE: window,
        knativeserving.SCALING_WINDOW: window,
        knativeserving.TARGET_CONCURRENCY: f"{knativeserving.target_concurrency(annotations, concurrency):g}",
        knativeserving.MIN_SCALE: str(low),
    }
    if high:
        out[knativeserving.MAX_SCALE] = str(high)
    return out


def pod_template(revision: Mapping[str, Any]) -> Obj:
    meta = _meta(revision)
    spec = copy.deepcopy(dict(revision.get("spec") or {}))
    for name in REVISION_ONLY_FIELDS:
        spec.pop(name, None)
    spec.setdefault("enableServiceLinks", False)  # Knative's default
    port = knativeserving.user_port(spec)
    serving = knativeserving.serving_container(spec)
    containers: list[Obj] = spec.get("containers") or []
    serving_index = next((i for i, c in enumerate(containers) if c is serving), -1)
    for i, container in enumerate(containers):
        if not container.get("name"):
            container["name"] = "user-container" if len(containers) == 1 else f"user-container-{i}"
        if i != serving_index:
            continue
        env = [e for e in container.get("env") or () if e.get("name") not in _KNATIVE_ENV]
        env += [
            {"name": "PORT", "value": str(port)},
            {"name": "K_REVISION", "value": str(meta.get("name") or "")},
            {
                "name": "K_CONFIGURATION",
                "value": str(
                    (meta.get("labels") or {}).get(knativeserving.CONFIGURATION_LABEL, "")
                ),
            },
            {
                "name": "K_SERVICE",
                "value": str((meta.get("labels") or {}).get(knativeserving.SERVICE_LABEL, "")),
            },
        ]
        container["env"] = env
        container["ports"] = [{"name": USER_PORT_NAME, "containerPort": port, "protocol": "TCP"}]
        probe = container.get("readinessProbe")
        if not probe:
            container["readinessProbe"] = {"tcpSocket": {"port": port}, "periodSeconds": 1}
        elif not any(k in probe for k in ("httpGet", "tcpSocket", "exec", "grpc")):
            # Knative lets a probe give only timings; the check is a TCP connect.
            container["readinessProbe"] = {**probe, "tcpSocket": {"port": port}}
        else:
            for handler in ("httpGet", "tcpSocket"):
                if handler in probe and not probe[handler].get("port"):
                    probe[handler] = {**probe[handler], "port": port}
    pod_annotations = {
        str(k): str(v)
        for k, v in (meta.get("annotations") or {}).items()
        if not k.startswith("autoscaling.knative.dev/")
        and k != knativeserving.TEMPLATE_HASH_ANNOTATION
    }
    return {
        "metadata": {"labels": revision_labels(revision), "annotations": pod_annotations},
        "spec": spec,
    }


_KNATIVE_ENV = frozenset({"PORT", "K_REVISION", "K_CONFIGURATION", "K_SERVICE"})


def desired_deployment(revision: Mapping[str, Any]) -> Obj:
    meta = _meta(revision)
    annotations = {str(k): str(v) for k, v in (meta.get("annotations") or {}).items()}
    _low, _high, initial = knativeserving.scale_bounds(annotations)
    labels = revision_labels(revision)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": knativeserving.deployment_name(str(meta.get("name") or "")),
            "namespace": meta.get("namespace"),
            "labels": labels,
            "annotations": scaling_annotations(revision),
            "ownerReferences": [ownership.owner_reference(dict(revision))],
        },
        "spec": {
            "replicas": initial,
            "selector": {
                "matchLabels": {
                    knativeserving.REVISION_UID_LABEL: labels[knativeserving.REVISION_UID_LABEL]
                }
            },
            "progressDeadlineSeconds": PROGRESS_DEADLINE_SECONDS,
            "template": pod_template(revision),
        },
    }


def desired_service(revision: Mapping[str, Any]) -> Obj:
    meta = _meta(revision)
    labels = revision_labels(revision)
    port = knativeserving.user_port(revision.get("spec") or {})
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "labels": labels,
            "ownerReferences": [ownership.owner_reference(dict(revision))],
        },
        "spec": {
            "type": "ClusterIP",
            "selector": {
                knativeserving.REVISION_UID_LABEL: labels[knativeserving.REVISION_UID_LABEL]
            },
            "ports": [
                {
                    "name": knativeserving.SERVICE_PORT_NAME,
                    "port": knativeserving.SERVICE_PORT,
                    "targetPort": port,
                    "protocol": "TCP",
                }
            ],
        },
    }


def _pod_trouble(pods: Sequence[Mapping[str, Any]]) -> tuple[str, str, str] | None:
    """(condition, reason, message) for the first pod that cannot become ready."""
    for pod in pods:
        status = pod.get("status") or {}
        for item in status.get("conditions") or ():
            if item.get("type") == "PodScheduled" and item.get("status") == "False":
                return (
                    "ResourcesAvailable",
                    str(item.get("reason") or "Unschedulable"),
                    str(item.get("message") or ""),
                )
        for container in status.get("containerStatuses") or ():
            waiting = (container.get("state") or {}).get("waiting") or {}
            reason = str(waiting.get("reason") or "")
            if reason not in FAILING_REASONS:
                continue
            message = str(waiting.get("message") or "")
            terminated = (container.get("lastState") or {}).get("terminated") or {}
            if reason == "CrashLoopBackOff" and terminated:
                code = terminated.get("exitCode", 0)
                detail = str(terminated.get("message") or terminated.get("reason") or "")
                return (
                    "ContainerHealthy",
                    f"ExitCode{code}",
                    f"Container failed with: {detail}".rstrip(": "),
                )
            return ("ContainerHealthy", reason, message)
    return None


def revision_status(
    revision: Mapping[str, Any],
    deployment: Mapping[str, Any] | None,
    pods: Sequence[Mapping[str, Any]],
) -> Obj:
    """The status the Revision should have, from its Deployment and pods."""
    previous = revision.get("status") or {}
    was_ready = knativeserving.is_ready(revision)
    status: Obj = {"observedGeneration": _meta(revision).get("generation", 1)}
    for key in ("containerStatuses",):
        if key in previous:
            status[key] = previous[key]
    desired = int(((deployment or {}).get("spec") or {}).get("replicas") or 0)
    actual = int(((deployment or {}).get("status") or {}).get("readyReplicas") or 0)
    status["actualReplicas"] = actual
    status["desiredReplicas"] = desired
    if deployment is None:
        conditions = [
            knativeserving.condition_entry("ResourcesAvailable", "Unknown", "Deploying"),
            knativeserving.condition_entry("ContainerHealthy", "Unknown", "Deploying"),
            knativeserving.condition_entry("Active", "Unknown", "Deploying"),
            knativeserving.condition_entry("Ready", "Unknown", "Deploying"),
        ]
    elif actual > 0 or was_ready:
        if actual > 0:
            active = knativeserving.condition_entry("Active", "True")
        elif desired == 0:
            active = knativeserving.condition_entry(
                "Active", "False", "NoTraffic", "The target is not receiving traffic."
            )
        else:
            active = knativeserving.condition_entry(
                "Active", "Unknown", "Activating", "The target is being activated."
            )
        conditions = [
            knativeserving.condition_entry("ResourcesAvailable", "True"),
            knativeserving.condition_entry("ContainerHealthy", "True"),
            active,
            knativeserving.condition_entry("Ready", "True"),
        ]
    else:
        trouble = _pod_trouble(pods)
        progress: Mapping[str, Any] = next(
            (
                c
                for c in ((deployment.get("status") or {}).get("conditions") or ())
                if c.get("type") == "Progressing"
            ),
            {},
        )
        if trouble is None and progress.get("reason") == "ProgressDeadlineExceeded":
            trouble = (
                "ResourcesAvailable",
                "ProgressDeadlineExceeded",
                f"Initial scale was never achieved: {progress.get('message') or ''}".rstrip(": "),
            )
        if trouble is None:
            conditions = [
                knativeserving.condition_entry("ResourcesAvailable", "Unknown", "Deploying"),
                knativeserving.condition_entry("ContainerHealthy", "Unknown", "Deploying"),
                knativeserving.condition_entry("Active", "Unknown", "Deploying"),
                knativeserving.condition_entry("Ready", "Unknown", "Deploying"),
            ]
        else:
            failed, reason, message = trouble
            conditions = [
                knativeserving.condition_entry("ResourcesAvailable", "False", reason, message)
                if failed == "ResourcesAvailable"
                else knativeserving.condition_entry("ResourcesAvailable", "Unknown", "Deploying"),
                knativeserving.condition_entry("ContainerHealthy", "False", reason, message)
                if failed == "ContainerHealthy"
                else knativeserving.condition_entry("ContainerHealthy", "Unknown", "Deploying"),
                knativeserving.condition_entry("Active", "Unknown", "Deploying"),
                knativeserving.condition_entry("Ready", "False", reason, message),
            ]
    status["conditions"] = conditions
    return status


class RevisionController:
    """Keeps every Revision's Deployment and Service in place and its status true."""

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
        self.revisions = factory.informer(REVISIONS)
        self.deployments = factory.informer(DEPLOYMENTS)
        self.services = factory.informer(SERVICES)
        self.pods = factory.informer(PODS)
        self.controller = controllers.Controller(
            "knative-revisions", self.sync, workers=workers, clock=self.clock
        )

    async def start(self) -> None:
        self.controller.enqueue_changes(self.revisions)
        for informer in (self.deployments, self.services, self.pods):
            self.controller.enqueue_changes(informer, key_by_label(knativeserving.REVISION_LABEL))
        self.factory.start()
        self.controller.start([self.revisions, self.deployments, self.services, self.pods])

    async def stop(self) -> None:
        await self.controller.stop()

    async def sync(self, key: str) -> None:
        revision = self.revisions.get(key)
        if revision is None or _meta(revision).get("deletionTimestamp"):
            return  # the garbage collector removes what it owned
        namespace, name = key.split("/", 1)
        await self._ensure_service(revision)
        deployment = await self._ensure_deployment(revision)
        pods = [
            p
            for p in self.pods.objects(namespace)
            if (_meta(p).get("labels") or {}).get(knativeserving.REVISION_LABEL) == name
        ]
        status = revision_status(revision, deployment, pods)
        previous = revision.get("status") or {}
        if knativeserving.without_times(status) == knativeserving.without_times(previous):
            return
        knativeserving.stamp(
            status["conditions"],
            previous.get("conditions") or [],
            podcontrol.format_time(self.clock.now()),
        )
        ready_before = knativeserving.condition(revision, "Ready").get("status")
        try:
            await self.client.patch(
                REVISIONS,
                namespace,
                name,
                {"status": status},
                patch_type="merge",
                subresource="status",
            )
        except errors.StatusError as err:
            if err.code != 404:
                raise
            return
        ready = knativeserving.condition({"status": status}, "Ready")
        if self.recorder is not None and ready.get("status") != ready_before:
            if ready.get("status") == "False":
                self.recorder.record(
                    dict(revision),
                    "Warning",
                    str(ready.get("reason") or "Failed"),
                    str(ready.get("message") or ""),
                )
            elif ready.get("status") == "True":
                self.recorder.record(
                    dict(revision), "Normal", "RevisionReady", f"Revision {name} is ready"
                )

    async def _ensure_service(self, revision: Mapping[str, Any]) -> None:
        meta = _meta(revision)
        key = f"{meta['namespace']}/{meta['name']}"
        current = self.services.get(key)
        wanted = desired_service(revision)
        if current is None:
            await self._create(SERVICES, wanted)
            return
        if not ownership.is_owned_by(dict(current), dict(revision)):
            log.warning("Service %s exists and is not Revision %s's; leaving it alone", key, key)
            return
        spec = current.get("spec") or {}
        if spec.get("selector") != wanted["spec"]["selector"] or [
            (p.get("port"), p.get("targetPort")) for p in spec.get("ports") or ()
        ] != [(p["port"], p["targetPort"]) for p in wanted["spec"]["ports"]]:
            await self.client.patch(
                SERVICES,
                str(meta["namespace"]),
                str(meta["name"]),
                {
                    "spec": {
                        "selector": wanted["spec"]["selector"],
                        "ports": wanted["spec"]["ports"],
                    }
                },
                patch_type="merge",
            )

    async def _ensure_deployment(self, revision: Mapping[str, Any]) -> Mapping[str, Any] | None:
        meta = _meta(revision)
        namespace = str(meta["namespace"])
        name = knativeserving.deployment_name(str(meta["name"]))
        current = self.deployments.get(f"{namespace}/{name}")
        wanted = desired_deployment(revision)
        if current is None:
            return await self._create(DEPLOYMENTS, wanted)
        if not ownership.is_owned_by(dict(current), dict(revision)):
            log.warning(
                "Deployment %s/%s is not Revision %s's; leaving it alone",
                namespace,
                name,
                meta["name"],
            )
            return current
        # Replicas belong to the autoscaler; only the scaling annotations follow
        # the Revision (its routing state changes them).
        annotations = _meta(current).get("annotations") or {}
        wanted_annotations = wanted["metadata"]["annotations"]
        stale = {k: v for k, v in wanted_annotations.items() if annotations.get(k) != v}
        gone = {
            k: None
            for k in (knativeserving.MAX_SCALE,)
            if k in annotations and k not in wanted_annotations
        }
        if stale or gone:
            return await self.client.patch(
                DEPLOYMENTS,
                namespace,
                name,
                {"metadata": {"annotations": {**stale, **gone}}},
                patch_type="merge",
            )
        return current

    async def _create(self, ref: clients.ResourceRef, obj: Obj) -> Obj | None:
        try:
            return await self.client.create(
                ref, obj, clients.WriteOptions(field_manager=FIELD_MANAGER)
            )
        except errors.StatusError as err:
            if err.reason != "AlreadyExists":
                raise
            return None  # the informer has not seen it yet; the next sync reads it


def key_by_label(label: str) -> Callable[[clients.Object], str | None]:
    """The key ``<namespace>/<label's value>`` of an object's owner named by
    a label (a Revision's for its pods, a Service's for its Revisions)."""

    def key_for(obj: clients.Object) -> str | None:
        meta = obj.get("metadata") or {}
        name = (meta.get("labels") or {}).get(label)
        return f"{meta.get('namespace') or ''}/{name}" if name else None

    return key_for
