"""The admission chain: checks that run on every create and update after
defaulting and before the object is stored.

Four plug-ins: ElasticWorkload's checks (its source must exist); upstream's ServiceAccount plug-in (the account and its
token volume on every pod); serverless admission, which refuses what an elastic container
instance cannot do (privileged, host namespaces, DaemonSets, ...) when the
object is written, not later when its pods fail; and the checks Knative
Serving's validating webhook makes on its Services and Revisions.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Collection
from typing import Any

from nodeless.api import elasticworkloads, errors, imagecaches, kinds, knativeserving
from nodeless.serverless import admission, catalogue

Admitter = Callable[[kinds.Resource, dict[str, Any], dict[str, Any] | None], None]


def serverless(specs: catalogue.Catalogue, zones: Collection[str]) -> Admitter:
    """An admitter for the serverless rules. On update, only a changed spec is
    checked again, so objects admitted under older rules stay writable."""

    def admit(resource: kinds.Resource, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        if (
            old is not None
            and old.get("spec") == obj.get("spec")
            and _annotations(old) == _annotations(obj)
        ):
            return
        admission.admit(resource.group, resource.kind, obj, specs, zones)

    return admit


def _annotations(obj: dict[str, Any]) -> Any:
    return (obj.get("metadata") or {}).get("annotations")


def knative_serving(
    resource: kinds.Resource, obj: dict[str, Any], old: dict[str, Any] | None
) -> None:
    """Knative's webhook: a Service's template and traffic, a Revision's spec
    (immutable once created). Status writes leave the spec alone and pass."""
    if resource.group != knativeserving.GROUP:
        return
    if (
        old is not None
        and old.get("spec") == obj.get("spec")
        and _annotations(old) == _annotations(obj)
    ):
        return
    if resource.kind == "Service":
        causes = knativeserving.service_problems(obj)
    elif resource.kind == "Revision":
        causes = knativeserving.revision_problems(obj)
        if old is not None:
            causes += knativeserving.immutable_revision_problems(old, obj)
    else:
        return
    if causes:
        name = str((obj.get("metadata") or {}).get("name") or "")
        raise errors.invalid(resource.kind, resource.group, name, causes)


SERVICE_ACCOUNT_MOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
ROOT_CA_CONFIG_MAP = "kube-root-ca.crt"
TOKEN_EXPIRATION_SECONDS = 3607  # upstream's: an hour, plus seven seconds to tell it apart


def service_accounts(
    lookup: Callable[[str, str], dict[str, Any] | None],
    mounting: Callable[[], bool],
) -> Admitter:
    """Upstream's ServiceAccount admission plug-in, on pod creation: the pod
    runs as ``default`` unless it names an account, and unless the pod or its
    account opts out (``automountServiceAccountToken: false``) every container
    gets the ``kube-api-access-*`` projected volume at
    ``/var/run/secrets/kubernetes.io/serviceaccount``: a bound token, the
    cluster CA (``kube-root-ca.crt``) and the namespace, which is what
    in-cluster clients read. ``lookup(namespace, name)`` reads an account from
    the cache; ``mounting()`` says whether there is a CA to publish."""

    def admit(resource: kinds.Resource, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        if old is not None or resource.group != "" or resource.kind != "Pod":
            return
        spec = obj.get("spec")
        if not isinstance(spec, dict):
            return
        name = str(spec.get("serviceAccountName") or "default")
        spec["serviceAccountName"] = name
        spec["serviceAccount"] = name
        if not mounting():
            return
        automount = spec.get("automountServiceAccountToken")
        if automount is None:
            account = lookup(str((obj.get("metadata") or {}).get("namespace") or ""), name)
            automount = (account or {}).get("automountServiceAccountToken")
        if automount is False:
            return
        containers = [
            c
            for key in ("initContainers", "containers", "ephemeralContainers")
            for c in spec.get(key) or ()
            if isinstance(c, dict)
        ]
        if any(
            m.get("mountPath") == SERVICE_ACCOUNT_MOUNT
            for c in containers
            for m in c.get("volumeMounts") or ()
        ):
            return  # the pod mounts its own
        volumes = spec.setdefault("volumes", [])
        taken = {v.get("name") for v in volumes if isinstance(v, dict)}
        volume_name = next(
            n
            for n in (f"kube-api-access-{secrets.token_hex(3)[:5]}" for _ in range(100))
            if n not in taken
        )
        volumes.append(
            {
                "name": volume_name,
                "projected": {
                    "defaultMode": 420,
                    "sources": [
                        {
                            "serviceAccountToken": {
                                "expirationSeconds": TOKEN_EXPIRATION_SECONDS,
                                "path": "token",
                            }
                        },
                        {
                            "configMap": {
                                "name": ROOT_CA_CONFIG_MAP,
                                "items": [{"key": "ca.crt", "path": "ca.crt"}],
                            }
                        },
                        {
                            "downwardAPI": {
                                "items": [
                                    {
                                        "path": "namespace",
                                        "fieldRef": {
                                            "apiVersion": "v1",
                                            "fieldPath": "metadata.namespace",
                                        },
                                    }
                                ]
                            }
                        },
                    ],
                },
            }
        )
        for container in containers:
            container.setdefault("volumeMounts", []).append(
                {"name": volume_name, "mountPath": SERVICE_ACCOUNT_MOUNT, "readOnly": True}
            )

    return admit


Lookup = Callable[[str, str, str, str, str], dict[str, Any] | None]


def elastic_workloads(lookup: Lookup) -> Admitter:
    """An ElasticWorkload must name a scalable source that exists (422 on
    ``spec.sourceTarget``), with sane bounds and unit names. ``lookup(group,
    version, kind, namespace, name)`` reads the cache."""

    def admit(resource: kinds.Resource, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        if resource.group not in elasticworkloads.GROUPS or resource.kind != elasticworkloads.KIND:
            return
        if old is not None and old.get("spec") == obj.get("spec"):
            return
        causes = elasticworkloads.problems(obj)
        meta = obj.get("metadata") or {}
        ref = elasticworkloads.source_ref(obj.get("spec") or {})
        if not causes and ref is not None:
            api_version, kind, name = ref
            group, _, version = api_version.rpartition("/")
            namespace = str(meta.get("namespace") or "")
            if lookup(group, version, kind, namespace, name) is None:
                causes.append(
                    errors.Cause(
                        "FieldValueNotFound",
                        f'Not found: "{name}": no {kind} {name} in namespace {namespace}',
                        "spec.sourceTarget.name",
                    )
                )
        if causes:
            raise errors.invalid(resource.kind, resource.group, str(meta.get("name") or ""), causes)

    return admit


def image_caches(valid_reference: Callable[[str], str | None]) -> Admitter:
    """An ImageCache needs images with valid references, ``namespace:secret``
    pull secrets and a positive retention (422 naming the field)."""

    def admit(resource: kinds.Resource, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        if resource.group not in imagecaches.GROUPS or resource.kind != imagecaches.KIND:
            return
        if old is not None and old.get("spec") == obj.get("spec"):
            return
        causes = imagecaches.problems(obj, valid_reference)
        if causes:
            name = str((obj.get("metadata") or {}).get("name") or "")
            raise errors.invalid(resource.kind, resource.group, name, causes)

    return admit
