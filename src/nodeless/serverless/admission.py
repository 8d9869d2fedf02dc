"""Admission of what a serverless pod may not do, like GKE Autopilot's.

Nodeless has no nodes: every pod is its own isolated instance. Whatever needs
a host (privileged mode, the host's network, process or IPC namespaces, host
ports and paths, extra kernel capabilities, a pod per node) cannot be served,
and silently dropping it would run something other than what the user wrote.
So such objects are refused when they are created, and the refusal names
*every* offending field at once (one 422 with a cause per field), so a user
fixes a manifest in one round trip instead of one error at a time.

Workloads are checked through their pod template, so a bad Deployment is
refused at ``kubectl apply`` rather than leaving a ReplicaSet that can never
create its pods.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, Final

import orjson

from nodeless.api import errors
from nodeless.serverless import annotations as annotations_
from nodeless.serverless import catalogue as catalogue_
from nodeless.serverless import sizing

MAX_CONTAINERS: Final = 20
MAX_VOLUMES: Final = 20

#: The capabilities Docker and containerd grant a container by default; adding
#: one of these changes nothing a host could be hurt by.
DEFAULT_CAPABILITIES: Final = frozenset(
    {
        "AUDIT_WRITE",
        "CHOWN",
        "DAC_OVERRIDE",
        "FOWNER",
        "FSETID",
        "KILL",
        "MKNOD",
        "NET_BIND_SERVICE",
        "NET_RAW",
        "SETFCAP",
        "SETGID",
        "SETPCAP",
        "SETUID",
        "SYS_CHROOT",
    }
)

_CONTAINER_LISTS: Final = ("initContainers", "containers", "ephemeralContainers")

#: Workloads whose pod template becomes pods: (group, kind) -> path to the template.
TEMPLATE_PATHS: Final[dict[tuple[str, str], tuple[str, ...]]] = {
    ("apps", "Deployment"): ("spec", "template"),
    ("apps", "ReplicaSet"): ("spec", "template"),
    ("apps", "StatefulSet"): ("spec", "template"),
    ("batch", "Job"): ("spec", "template"),
    ("batch", "CronJob"): ("spec", "jobTemplate", "spec", "template"),
    ("", "ReplicationController"): ("spec", "template"),
    ("", "PodTemplate"): ("template",),
    # Knative Serving's Service: each Revision runs its template as pods.
    ("serving.knative.dev", "Service"): ("spec", "template"),
}

DAEMONSET_MESSAGE: Final = (
    "DaemonSets are not supported: Nodeless has no nodes to run them on; every pod is "
    "its own isolated instance. Run per-pod agents as sidecar containers in the pods "
    "that need them, or run the workload as a Deployment"
)


#: Pod-level switches into a host namespace, and why each cannot be honoured.
_HOST_NAMESPACES: Final = {
    "hostNetwork": "hostNetwork is not allowed in Nodeless: a serverless pod has no host "
    "network to join; remove it, and reach the pod through a Service",
    "hostPID": "hostPID is not allowed in Nodeless: a serverless pod has no host process "
    "namespace to share; remove it",
    "hostIPC": "hostIPC is not allowed in Nodeless: a serverless pod has no host IPC "
    "namespace to share; remove it",
}


def _forbidden(field: str, detail: str) -> errors.Cause:
    return errors.Cause("FieldValueForbidden", f"Forbidden: {detail}", field)


def _normalised_capability(name: str) -> str:
    upper = name.strip().upper()
    return upper.removeprefix("CAP_")


def _container_causes(container: Mapping[str, Any], at: str) -> list[errors.Cause]:
    causes: list[errors.Cause] = []
    who = f'container "{container.get("name", "")}"'
    security = container.get("securityContext") or {}
    if security.get("privileged") is True:
        causes.append(
            _forbidden(
                f"{at}.securityContext.privileged",
                f"{who} is privileged, which is not allowed in Nodeless: a serverless pod "
                "runs in an isolated instance with no host to grant privileges on; remove "
                "securityContext.privileged or set it to false",
            )
        )
    capabilities = security.get("capabilities") or {}
    for j, added in enumerate(capabilities.get("add") or []):
        capability = _normalised_capability(str(added))
        if capability in DEFAULT_CAPABILITIES:
            continue
        causes.append(
            _forbidden(
                f"{at}.securityContext.capabilities.add[{j}]",
                f'{who} adds capability "{added}", which is not allowed in Nodeless: a '
                "container may add only capabilities of the container runtime's default "
                f"set ({', '.join(sorted(DEFAULT_CAPABILITIES))}); remove it",
            )
        )
    for j, port in enumerate(container.get("ports") or []):
        host_port = port.get("hostPort") if isinstance(port, Mapping) else None
        if host_port:
            causes.append(
                _forbidden(
                    f"{at}.ports[{j}].hostPort",
                    f"{who} uses hostPort {host_port}, which is not allowed in Nodeless: a "
                    "serverless pod has no host to open a port on; remove hostPort and "
                    "expose the containerPort through a Service",
                )
            )
    return causes


def forbidden_pod_features(pod_spec: Mapping[str, Any], path: str = "spec") -> list[errors.Cause]:
    """A cause for every field of the pod spec at ``path`` a serverless pod may not use.

    Counts toward the 20-container limit: app containers and init containers
    (each needs room in the instance); ephemeral debug containers are checked
    for forbidden features but not counted, as they come and go with
    ``kubectl debug``. The 64-vCPU limit is reported here too, so that every
    reason a pod can never run appears together.
    """
    causes: list[errors.Cause] = []
    for key, detail in _HOST_NAMESPACES.items():
        if pod_spec.get(key) is True:
            causes.append(_forbidden(f"{path}.{key}", detail))

    for key in _CONTAINER_LISTS:
        for i, container in enumerate(pod_spec.get(key) or []):
            if isinstance(container, Mapping):
                causes.extend(_container_causes(container, f"{path}.{key}[{i}]"))

    volumes = pod_spec.get("volumes") or []
    for i, volume in enumerate(volumes):
        if isinstance(volume, Mapping) and "hostPath" in volume:
            causes.append(
                _forbidden(
                    f"{path}.volumes[{i}].hostPath",
                    f'volume "{volume.get("name", "")}" is a hostPath volume, which is not '
                    "allowed in Nodeless: a serverless pod has no host filesystem; use an "
                    "emptyDir, configMap, secret or persistentVolumeClaim volume instead",
                )
            )

    apps = len(pod_spec.get("containers") or [])
    inits = len(pod_spec.get("initContainers") or [])
    if apps + inits > MAX_CONTAINERS:
        causes.append(
            errors.Cause(
                "FieldValueTooMany",
                f"Too many: {apps + inits}: must have at most {MAX_CONTAINERS} items: a "
                f"serverless pod may have at most {MAX_CONTAINERS} containers, counting "
                f"containers ({apps}) and initContainers ({inits})",
                f"{path}.containers",
            )
        )
    if len(volumes) > MAX_VOLUMES:
        causes.append(
            errors.Cause(
                "FieldValueTooMany",
                f"Too many: {len(volumes)}: must have at most {MAX_VOLUMES} items: a "
                f"serverless pod may have at most {MAX_VOLUMES} volumes",
                f"{path}.volumes",
            )
        )

    too_many_vcpu = sizing.vcpu_limit_cause(sizing.pod_resources(pod_spec, path), path)
    if too_many_vcpu is not None:
        causes.append(too_many_vcpu)
    return causes


def pod_causes(
    pod: Mapping[str, Any],
    catalogue: catalogue_.Catalogue,
    zones: Collection[str],
    *,
    path: str = "spec",
    annotations_path: str = "metadata.annotations",
) -> list[errors.Cause]:
    """Every reason the pod (or pod template) could never run, each cause once.

    Sizing contributes only when the pod cannot be sized at all (an unknown
    spec, more than 64 vCPU, a size no spec covers): a pod that merely rounds
    up is fine.
    """
    spec = pod.get("spec") or {}
    metadata = pod.get("metadata") or {}
    try:
        content = orjson.dumps([spec, metadata.get("annotations")])
    except TypeError:
        return _pod_causes(pod, catalogue, zones, path, annotations_path)
    key = (id(catalogue), tuple(zones), path, annotations_path, content)
    if _PASSED.get(key) is catalogue:
        return []
    found = _pod_causes(pod, catalogue, zones, path, annotations_path)
    if not found:  # refusals name the pod, so only passes are remembered
        if len(_PASSED) >= _MAX_PASSED:
            _PASSED.clear()
        _PASSED[key] = catalogue
    return found


# Pods that passed, by what the verdict depends on: every pod of a workload
# is checked alike, at its creation and at its binding.
_PASSED: dict[tuple[int, tuple[str, ...], str, str, bytes], catalogue_.Catalogue] = {}
_MAX_PASSED = 4096


def _pod_causes(
    pod: Mapping[str, Any],
    catalogue: catalogue_.Catalogue,
    zones: Collection[str],
    path: str,
    annotations_path: str,
) -> list[errors.Cause]:
    spec = pod.get("spec") or {}
    metadata = pod.get("metadata") or {}
    causes = forbidden_pod_features(spec, path)
    try:
        annotations_.PodOptions.from_annotations(
            metadata.get("annotations"), catalogue, zones, path=annotations_path
        )
    except errors.StatusError as exc:
        causes.extend(exc.causes)
    try:
        sizing.size_pod(pod, catalogue, path=path, annotations_path=annotations_path)
    except errors.StatusError as exc:
        causes.extend(exc.causes)
    unique: list[errors.Cause] = []
    for cause in causes:
        if cause not in unique:
            unique.append(cause)
    return unique


def _dig(obj: Mapping[str, Any], keys: tuple[str, ...]) -> Mapping[str, Any] | None:
    current: Any = obj
    for key in keys:
        if not isinstance(current, Mapping):
            return None
        current = current.get(key)
    return current if isinstance(current, Mapping) else None


def admit(
    group: str,
    kind: str,
    obj: Mapping[str, Any],
    catalogue: catalogue_.Catalogue,
    zones: Collection[str],
) -> None:
    """Refuse an object a serverless cluster cannot serve; return if it is fine.

    Pods and pod-producing workloads: one 422 Invalid listing every cause.
    DaemonSets: 403 Forbidden. Services of type NodePort: 422 naming
    ``spec.type``. Everything else passes.
    """
    group = "" if group == "core" else group
    metadata = obj.get("metadata") or {}
    name = str(metadata.get("name") or metadata.get("generateName") or "")

    if (group, kind) == ("", "Pod"):
        causes = pod_causes(obj, catalogue, zones)
        if causes:
            raise errors.invalid("Pod", "", name, causes)
        return

    if (group, kind) == ("apps", "DaemonSet"):
        raise errors.forbidden("daemonsets", "apps", name, DAEMONSET_MESSAGE)

    if (group, kind) == ("", "Service"):
        spec = obj.get("spec") or {}
        if spec.get("type") == "NodePort":
            raise errors.invalid(
                "Service",
                "",
                name,
                [
                    errors.Cause(
                        "FieldValueNotSupported",
                        'Unsupported value: "NodePort": supported values: "ClusterIP", '
                        '"ExternalName", "LoadBalancer": Nodeless has no nodes to open a '
                        "node port on; use type LoadBalancer to expose the Service outside "
                        "the cluster, or ClusterIP inside it",
                        "spec.type",
                    )
                ],
            )
        return

    keys = TEMPLATE_PATHS.get((group, kind))
    if keys is None:
        return
    template = _dig(obj, keys)
    if template is None:
        return
    prefix = ".".join(keys)
    causes = pod_causes(
        template,
        catalogue,
        zones,
        path=f"{prefix}.spec",
        annotations_path=f"{prefix}.metadata.annotations",
    )
    if causes:
        raise errors.invalid(kind, group, name, causes)
