"""Upstream's defaulting for the fields clients read back.

kubectl diff, rollout status and controllers all expect the values the real
apiserver fills in (strategy, restartPolicy, imagePullPolicy, ...); objects
that lack them make a second apply look like a change.
"""

from __future__ import annotations

import base64
from typing import Any

from nodeless.api import autoscalingbehaviors, kinds


def _set(d: dict[str, Any], key: str, value: Any) -> None:
    if d.get(key) is None:
        d[key] = value


def _image_pull_policy(image: str) -> str:
    name = image.rsplit("/", 1)[-1]
    if "@" in name:
        return "IfNotPresent"
    tag = name.split(":", 1)[1] if ":" in name else ""
    return "Always" if tag in ("", "latest") else "IfNotPresent"


def _container(c: dict[str, Any]) -> None:
    _set(c, "terminationMessagePath", "/dev/termination-log")
    _set(c, "terminationMessagePolicy", "File")
    if c.get("image"):
        _set(c, "imagePullPolicy", _image_pull_policy(c["image"]))
    _set(c, "resources", {})
    resources = c["resources"]
    # Requests default to limits where only limits are given.
    limits = resources.get("limits") or {}
    if limits:
        requests = resources.setdefault("requests", {})
        for k, v in limits.items():
            requests.setdefault(k, v)
    for port in c.get("ports") or []:
        _set(port, "protocol", "TCP")
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        p = c.get(probe)
        if isinstance(p, dict):
            _set(p, "timeoutSeconds", 1)
            _set(p, "periodSeconds", 10)
            _set(p, "successThreshold", 1)
            _set(p, "failureThreshold", 3)
            http = p.get("httpGet")
            if isinstance(http, dict):
                _set(http, "path", "/")
                _set(http, "scheme", "HTTP")


def pod_spec(spec: dict[str, Any]) -> None:
    _set(spec, "restartPolicy", "Always")
    _set(spec, "dnsPolicy", "ClusterFirst")
    _set(spec, "schedulerName", "default-scheduler")
    _set(spec, "terminationGracePeriodSeconds", 30)
    _set(spec, "securityContext", {})
    _set(spec, "enableServiceLinks", True)
    if spec.get("serviceAccount") and not spec.get("serviceAccountName"):
        spec["serviceAccountName"] = spec["serviceAccount"]
    for c in spec.get("initContainers") or []:
        _container(c)
    for c in spec.get("containers") or []:
        _container(c)
    for v in spec.get("volumes") or []:
        for source in ("configMap", "secret"):
            if isinstance(v.get(source), dict):
                _set(v[source], "defaultMode", 420)


def _template(spec: dict[str, Any]) -> None:
    template = spec.get("template")
    if isinstance(template, dict):
        template.setdefault("metadata", {})
        pod_spec(template.setdefault("spec", {}))


def _hpa_spec(spec: dict[str, Any]) -> None:
    """autoscaling/v2 (the stored version): minReplicas 1, 80 % average cpu
    when no metric is given, and a given ``behavior`` completed with the
    scale-up and scale-down defaults (the scale-down window stays unset: the
    controller's downscale stabilisation fills it)."""
    _set(spec, "minReplicas", 1)
    if not spec.get("metrics"):
        spec["metrics"] = [
            {
                "type": "Resource",
                "resource": {
                    "name": "cpu",
                    "target": {"type": "Utilization", "averageUtilization": 80},
                },
            }
        ]
    behavior = spec.get("behavior")
    if isinstance(behavior, dict):
        behavior["scaleUp"] = autoscalingbehaviors.completed(
            behavior.get("scaleUp"), autoscalingbehaviors.scale_up_defaults()
        )
        behavior["scaleDown"] = autoscalingbehaviors.completed(
            behavior.get("scaleDown"), autoscalingbehaviors.scale_down_defaults()
        )


def apply_defaults(resource: kinds.Resource, obj: dict[str, Any]) -> None:
    """Fill upstream defaults in place (before validation, as upstream does)."""
    group, kind = resource.group, resource.kind
    spec = obj.get("spec")
    if group == "" and kind == "Pod" and isinstance(spec, dict):
        pod_spec(spec)
        if not spec.get("serviceAccountName"):
            spec["serviceAccountName"] = "default"
            spec["serviceAccount"] = "default"
        _set(spec, "priority", 0)
        _set(spec, "preemptionPolicy", "PreemptLowerPriority")
        tolerations = spec.setdefault("tolerations", [])
        for key in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"):
            if not any(t.get("key") == key for t in tolerations):
                tolerations.append(
                    {
                        "key": key,
                        "operator": "Exists",
                        "effect": "NoExecute",
                        "tolerationSeconds": 300,
                    }
                )
    elif group == "apps" and isinstance(spec, dict):
        _template(spec)
        if kind in ("Deployment", "ReplicaSet", "StatefulSet"):
            _set(spec, "replicas", 1)
        if kind == "Deployment":
            strategy = spec.setdefault("strategy", {})
            _set(strategy, "type", "RollingUpdate")
            if strategy["type"] == "RollingUpdate":
                rolling = strategy.setdefault("rollingUpdate", {})
                _set(rolling, "maxUnavailable", "25%")
                _set(rolling, "maxSurge", "25%")
            _set(spec, "revisionHistoryLimit", 10)
            _set(spec, "progressDeadlineSeconds", 600)
        elif kind == "StatefulSet":
            _set(spec, "podManagementPolicy", "OrderedReady")
            update = spec.setdefault("updateStrategy", {})
            _set(update, "type", "RollingUpdate")
            if update["type"] == "RollingUpdate":
                rolling = update.setdefault("rollingUpdate", {})
                _set(rolling, "partition", 0)
                _set(rolling, "maxUnavailable", 1)
            _set(spec, "revisionHistoryLimit", 10)
            retention = {"whenDeleted": "Retain", "whenScaled": "Retain"}
            _set(spec, "persistentVolumeClaimRetentionPolicy", retention)
            for claim in spec.get("volumeClaimTemplates") or []:
                _set(claim.setdefault("spec", {}), "volumeMode", "Filesystem")
                claim.setdefault("status", {}).setdefault("phase", "Pending")
        elif kind == "DaemonSet":
            update = spec.setdefault("updateStrategy", {})
            _set(update, "type", "RollingUpdate")
            if update["type"] == "RollingUpdate":
                _set(update, "rollingUpdate", {"maxUnavailable": 1, "maxSurge": 0})
            _set(spec, "revisionHistoryLimit", 10)
    elif group == "batch" and kind == "Job" and isinstance(spec, dict):
        _template(spec)
        if spec.get("completions") is None and spec.get("parallelism") is None:
            spec["completions"] = 1
            spec["parallelism"] = 1
        _set(spec, "parallelism", 1)
        # Per-index limits replace the global one, as upstream defaults it.
        _set(
            spec, "backoffLimit", 2147483647 if spec.get("backoffLimitPerIndex") is not None else 6
        )
        _set(spec, "completionMode", "NonIndexed")
        _set(spec, "suspend", False)
        replacement = "Failed" if spec.get("podFailurePolicy") else "TerminatingOrFailed"
        _set(spec, "podReplacementPolicy", replacement)
        _set(spec, "manualSelector", None)
        if spec.get("manualSelector") is None:
            spec.pop("manualSelector")
    elif group == "batch" and kind == "CronJob" and isinstance(spec, dict):
        _set(spec, "concurrencyPolicy", "Allow")
        _set(spec, "suspend", False)
        _set(spec, "successfulJobsHistoryLimit", 3)
        _set(spec, "failedJobsHistoryLimit", 1)
        job_template = spec.get("jobTemplate")
        if isinstance(job_template, dict):
            _template(job_template.setdefault("spec", {}))
            job_spec = job_template["spec"]
            _set(job_spec, "backoffLimit", 6)
            _set(job_spec, "completionMode", "NonIndexed")
            _set(job_spec, "suspend", False)
    elif group == "" and kind == "ReplicationController" and isinstance(spec, dict):
        _template(spec)
        _set(spec, "replicas", 1)
    elif group == "" and kind == "PodTemplate":
        template = obj.get("template")
        if isinstance(template, dict):
            pod_spec(template.setdefault("spec", {}))
    elif group == "" and kind == "Service" and isinstance(spec, dict):
        _set(spec, "type", "ClusterIP")
        _set(spec, "sessionAffinity", "None")
        _set(spec, "internalTrafficPolicy", "Cluster")
        if spec["type"] != "ExternalName":
            _set(spec, "ipFamilies", ["IPv4"])
            _set(spec, "ipFamilyPolicy", "SingleStack")
        for port in spec.get("ports") or []:
            _set(port, "protocol", "TCP")
            _set(port, "targetPort", port.get("port"))
        if spec["type"] in ("NodePort", "LoadBalancer"):
            _set(spec, "externalTrafficPolicy", "Cluster")
    elif group == "" and kind == "Namespace":
        obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
        labels = obj.setdefault("metadata", {}).setdefault("labels", {})
        labels["kubernetes.io/metadata.name"] = obj["metadata"].get("name", "")
    elif group == "" and kind == "Secret":
        _set(obj, "type", "Opaque")
        string_data = obj.pop("stringData", None)
        if isinstance(string_data, dict):
            data = obj.setdefault("data", {}) or {}
            obj["data"] = data
            for k, v in string_data.items():
                data[k] = base64.b64encode(str(v).encode()).decode()
    elif group == "" and kind == "PersistentVolumeClaim" and isinstance(spec, dict):
        _set(spec, "volumeMode", "Filesystem")
    elif group == "" and kind == "PersistentVolume" and isinstance(spec, dict):
        _set(spec, "persistentVolumeReclaimPolicy", "Retain")
        _set(spec, "volumeMode", "Filesystem")
    elif group == "autoscaling" and kind == "HorizontalPodAutoscaler" and isinstance(spec, dict):
        _hpa_spec(spec)
    elif group == "networking.k8s.io" and kind == "NetworkPolicy" and isinstance(spec, dict):
        if not spec.get("policyTypes"):
            types = ["Ingress"]
            if spec.get("egress"):
                types.append("Egress")
            spec["policyTypes"] = types


def initial_status(resource: kinds.Resource, obj: dict[str, Any]) -> None:
    """What the status of a newly created object starts as (upstream PrepareForCreate)."""
    group, kind = resource.group, resource.kind
    if group == "" and kind == "Pod":
        obj["status"] = {"phase": "Pending", "qosClass": qos_class(obj.get("spec") or {})}
    elif group == "" and kind == "Namespace":
        obj["status"] = {"phase": "Active"}
    elif group == "" and kind == "PersistentVolumeClaim":
        obj["status"] = {"phase": "Pending"}
    elif group == "" and kind == "PersistentVolume":
        obj["status"] = {"phase": "Pending"}
    elif (group == "" and kind == "Node") or group == "nodeless.dev":
        return  # agents create nodes and instance records with their status
    elif resource.has_status:
        obj.pop("status", None)
        if group == "" and kind == "Service":
            obj["status"] = {"loadBalancer": {}}
        elif group == "apps" or (group == "batch" and kind == "CronJob"):
            obj["status"] = {}
        elif group == "batch" and kind == "Job":
            obj["status"] = {}


def qos_class(spec: dict[str, Any]) -> str:
    """Guaranteed, Burstable or BestEffort, by upstream's rules (cpu and memory only)."""
    containers = list(spec.get("containers") or []) + list(spec.get("initContainers") or [])
    any_set = False
    guaranteed = True
    for c in containers:
        res = c.get("resources") or {}
        req = res.get("requests") or {}
        lim = res.get("limits") or {}
        for name in ("cpu", "memory"):
            if name in req or name in lim:
                any_set = True
            if name not in lim or str(req.get(name, lim.get(name))) != str(lim.get(name)):
                guaranteed = False
    if not any_set:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"
