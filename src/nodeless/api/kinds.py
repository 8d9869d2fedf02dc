"""The kind registry: every resource the API serves, with what discovery says of it.

One table drives routing, discovery (legacy and aggregated), OpenAPI, storage
keys and the generic write rules, so a resource is added in one place. Custom
resources from CRDs are added at run time as further ``Resource`` values.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
READ_ONLY = ("get", "list", "watch")
CREATE_ONLY = ("create",)


@dataclass(frozen=True)
class Subresource:
    """A subresource as discovery lists it (``pods/log``, ``deployments/scale``)."""

    name: str
    kind: str
    verbs: tuple[str, ...]
    group: str = ""
    version: str = ""


@dataclass(frozen=True)
class Resource:
    """One served resource at one version."""

    group: str
    version: str
    kind: str
    plural: str
    singular: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ALL_VERBS
    subresources: tuple[Subresource, ...] = ()
    # The version objects are stored in; other versions are converted.
    storage_version: str = ""
    # Virtual resources (reviews) are answered, never stored.
    virtual: bool = False
    # Custom resources are validated by their CRD's schema, not upstream's.
    custom: bool = False
    # Cluster-scoped kinds without a namespace in the URL.
    list_kind: str = ""
    storage_group: str = ""
    storage_plural: str = ""

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def api_version(self) -> str:
        return self.group_version

    @property
    def key_group(self) -> str:
        return self.storage_group or self.group or "core"

    @property
    def key_plural(self) -> str:
        return self.storage_plural or self.plural

    @property
    def effective_storage_version(self) -> str:
        return self.storage_version or self.version

    @property
    def effective_list_kind(self) -> str:
        return self.list_kind or f"{self.kind}List"

    def subresource(self, name: str) -> Subresource | None:
        for sub in self.subresources:
            if sub.name == name:
                return sub
        return None

    @property
    def has_status(self) -> bool:
        return self.subresource("status") is not None

    @property
    def qualified(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural


def _status(kind: str) -> Subresource:
    return Subresource("status", kind, ("get", "patch", "update"))


_SCALE = Subresource("scale", "Scale", ("get", "patch", "update"), "autoscaling", "v1")


def _r(
    group: str,
    version: str,
    kind: str,
    plural: str,
    *,
    namespaced: bool = True,
    short: Iterable[str] = (),
    cats: Iterable[str] = (),
    verbs: Iterable[str] = ALL_VERBS,
    subs: Iterable[Subresource] = (),
    status: bool = False,
    scale: bool = False,
    storage_version: str = "",
    virtual: bool = False,
    storage_group: str = "",
) -> Resource:
    subresources = list(subs)
    if status:
        subresources.append(_status(kind))
    if scale:
        subresources.append(_SCALE)
    return Resource(
        group=group,
        version=version,
        kind=kind,
        plural=plural,
        singular=kind.lower(),
        namespaced=namespaced,
        short_names=tuple(short),
        categories=tuple(cats),
        verbs=tuple(verbs),
        subresources=tuple(sorted(subresources, key=lambda s: s.name)),
        storage_version=storage_version,
        virtual=virtual,
        storage_group=storage_group,
    )


_ALL = ("all",)
_POD_SUBS = (
    Subresource("attach", "PodAttachOptions", ("create", "get")),
    Subresource("binding", "Binding", ("create",)),
    Subresource("ephemeralcontainers", "Pod", ("get", "patch", "update")),
    Subresource("eviction", "Eviction", ("create",), "policy", "v1"),
    Subresource("exec", "PodExecOptions", ("create", "get")),
    Subresource("log", "Pod", ("get",)),
    Subresource("portforward", "PodPortForwardOptions", ("create", "get")),
    Subresource(
        "proxy", "PodProxyOptions", ("create", "delete", "get", "head", "options", "patch", "put")
    ),
    Subresource("resize", "Pod", ("get", "patch", "update")),
)
_EVENT_VERBS = ALL_VERBS

BUILTIN: tuple[Resource, ...] = (
    # core/v1
    _r("", "v1", "Binding", "bindings", verbs=CREATE_ONLY, virtual=True),
    _r(
        "",
        "v1",
        "ComponentStatus",
        "componentstatuses",
        namespaced=False,
        short=("cs",),
        verbs=("get", "list"),
        virtual=True,
    ),
    _r("", "v1", "ConfigMap", "configmaps", short=("cm",)),
    _r("", "v1", "Endpoints", "endpoints", short=("ep",)),
    _r("", "v1", "Event", "events", short=("ev",), verbs=_EVENT_VERBS),
    _r("", "v1", "LimitRange", "limitranges", short=("limits",)),
    _r(
        "",
        "v1",
        "Namespace",
        "namespaces",
        namespaced=False,
        short=("ns",),
        verbs=("create", "delete", "get", "list", "patch", "update", "watch"),
        subs=(Subresource("finalize", "Namespace", ("update",)),),
        status=True,
    ),
    _r(
        "",
        "v1",
        "Node",
        "nodes",
        namespaced=False,
        short=("no",),
        subs=(
            Subresource(
                "proxy",
                "NodeProxyOptions",
                ("create", "delete", "get", "head", "options", "patch", "put"),
            ),
        ),
        status=True,
    ),
    _r("", "v1", "PersistentVolumeClaim", "persistentvolumeclaims", short=("pvc",), status=True),
    _r(
        "",
        "v1",
        "PersistentVolume",
        "persistentvolumes",
        namespaced=False,
        short=("pv",),
        status=True,
    ),
    _r("", "v1", "Pod", "pods", short=("po",), cats=_ALL, subs=_POD_SUBS, status=True),
    _r("", "v1", "PodTemplate", "podtemplates"),
    _r(
        "",
        "v1",
        "ReplicationController",
        "replicationcontrollers",
        short=("rc",),
        cats=_ALL,
        status=True,
        scale=True,
    ),
    _r("", "v1", "ResourceQuota", "resourcequotas", short=("quota",), status=True),
    _r("", "v1", "Secret", "secrets"),
    _r(
        "",
        "v1",
        "ServiceAccount",
        "serviceaccounts",
        short=("sa",),
        subs=(Subresource("token", "TokenRequest", ("create",), "authentication.k8s.io", "v1"),),
    ),
    _r(
        "",
        "v1",
        "Service",
        "services",
        short=("svc",),
        cats=_ALL,
        subs=(
            Subresource(
                "proxy",
                "ServiceProxyOptions",
                ("create", "delete", "get", "head", "options", "patch", "put"),
            ),
        ),
        status=True,
    ),
    # apps/v1
    _r("apps", "v1", "ControllerRevision", "controllerrevisions"),
    _r("apps", "v1", "DaemonSet", "daemonsets", short=("ds",), cats=_ALL, status=True),
    _r(
        "apps",
        "v1",
        "Deployment",
        "deployments",
        short=("deploy",),
        cats=_ALL,
        status=True,
        scale=True,
    ),
    _r(
        "apps", "v1", "ReplicaSet", "replicasets", short=("rs",), cats=_ALL, status=True, scale=True
    ),
    _r(
        "apps",
        "v1",
        "StatefulSet",
        "statefulsets",
        short=("sts",),
        cats=_ALL,
        status=True,
        scale=True,
    ),
    # batch/v1
    _r("batch", "v1", "CronJob", "cronjobs", short=("cj",), cats=_ALL, status=True),
    _r("batch", "v1", "Job", "jobs", cats=_ALL, status=True),
    # autoscaling: v2 is stored, v1 is converted
    _r(
        "autoscaling",
        "v2",
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
        short=("hpa",),
        cats=_ALL,
        status=True,
    ),
    _r(
        "autoscaling",
        "v1",
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
        short=("hpa",),
        cats=_ALL,
        status=True,
        storage_version="v2",
    ),
    # networking.k8s.io/v1
    _r("networking.k8s.io", "v1", "IngressClass", "ingressclasses", namespaced=False),
    _r("networking.k8s.io", "v1", "Ingress", "ingresses", short=("ing",), status=True),
    _r("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", short=("netpol",)),
    # Service ClusterIP allocations (one object per IP) and the ranges they come from.
    _r("networking.k8s.io", "v1", "IPAddress", "ipaddresses", namespaced=False, short=("ip",)),
    _r("networking.k8s.io", "v1", "ServiceCIDR", "servicecidrs", namespaced=False, status=True),
    # policy/v1
    _r("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", short=("pdb",), status=True),
    # coordination.k8s.io/v1
    _r("coordination.k8s.io", "v1", "Lease", "leases"),
    # events.k8s.io/v1: the same objects as core/v1 events, converted
    _r("events.k8s.io", "v1", "Event", "events", short=("ev",), storage_group="core"),
    # discovery.k8s.io/v1
    _r("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices"),
    # rbac.authorization.k8s.io/v1
    _r(
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRoleBinding",
        "clusterrolebindings",
        namespaced=False,
    ),
    _r("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", namespaced=False),
    _r("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings"),
    _r("rbac.authorization.k8s.io", "v1", "Role", "roles"),
    # storage, scheduling, node, certificates
    _r("storage.k8s.io", "v1", "StorageClass", "storageclasses", namespaced=False, short=("sc",)),
    _r("storage.k8s.io", "v1", "CSIDriver", "csidrivers", namespaced=False),
    _r("storage.k8s.io", "v1", "CSINode", "csinodes", namespaced=False),
    _r("storage.k8s.io", "v1", "CSIStorageCapacity", "csistoragecapacities"),
    _r(
        "storage.k8s.io",
        "v1",
        "VolumeAttachment",
        "volumeattachments",
        namespaced=False,
        status=True,
    ),
    _r(
        "certificates.k8s.io",
        "v1",
        "CertificateSigningRequest",
        "certificatesigningrequests",
        namespaced=False,
        short=("csr",),
        subs=(Subresource("approval", "CertificateSigningRequest", ("get", "patch", "update")),),
        status=True,
    ),
    _r(
        "scheduling.k8s.io",
        "v1",
        "PriorityClass",
        "priorityclasses",
        namespaced=False,
        short=("pc",),
    ),
    _r("node.k8s.io", "v1", "RuntimeClass", "runtimeclasses", namespaced=False),
    # apiextensions.k8s.io/v1
    _r(
        "apiextensions.k8s.io",
        "v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        namespaced=False,
        short=("crd", "crds"),
        cats=("api-extensions",),
        status=True,
    ),
    # nodeless.dev/v1: the instance record behind every pod on a zone's node
    _r(
        "nodeless.dev",
        "v1",
        "Instance",
        "instances",
        short=("inst",),
        cats=("nodeless",),
        status=True,
    ),
    # nodeless.dev/v1: images pre-pulled so that pods start without pulling
    _r(
        "nodeless.dev",
        "v1",
        "ImageCache",
        "imagecaches",
        namespaced=False,
        short=("ic",),
        cats=("nodeless",),
        status=True,
    ),
    # nodeless.dev/v1: what each instance was billed, kept after it is gone
    _r(
        "nodeless.dev",
        "v1",
        "BillingRecord",
        "billingrecords",
        namespaced=False,
        short=("bill", "bills"),
        cats=("nodeless",),
        status=True,
    ),
    # reviews: answered, not stored
    _r(
        "authentication.k8s.io",
        "v1",
        "SelfSubjectReview",
        "selfsubjectreviews",
        namespaced=False,
        verbs=CREATE_ONLY,
        virtual=True,
    ),
    _r(
        "authentication.k8s.io",
        "v1",
        "TokenReview",
        "tokenreviews",
        namespaced=False,
        verbs=CREATE_ONLY,
        virtual=True,
    ),
    _r(
        "authorization.k8s.io",
        "v1",
        "SelfSubjectAccessReview",
        "selfsubjectaccessreviews",
        namespaced=False,
        verbs=CREATE_ONLY,
        virtual=True,
    ),
    _r(
        "authorization.k8s.io",
        "v1",
        "SelfSubjectRulesReview",
        "selfsubjectrulesreviews",
        namespaced=False,
        verbs=CREATE_ONLY,
        virtual=True,
    ),
    _r(
        "authorization.k8s.io",
        "v1",
        "SubjectAccessReview",
        "subjectaccessreviews",
        namespaced=False,
        verbs=CREATE_ONLY,
        virtual=True,
    ),
    _r(
        "authorization.k8s.io",
        "v1",
        "LocalSubjectAccessReview",
        "localsubjectaccessreviews",
        verbs=CREATE_ONLY,
        virtual=True,
    ),
    # resource metrics (metrics-server's API): answered from the instances' usage
    _r("metrics.k8s.io", "v1beta1", "PodMetrics", "pods", verbs=("get", "list"), virtual=True),
    _r(
        "metrics.k8s.io",
        "v1beta1",
        "NodeMetrics",
        "nodes",
        namespaced=False,
        verbs=("get", "list"),
        virtual=True,
    ),
)

# Discovery lists groups in this order (kubectl's api-resources follows it).
GROUP_ORDER = (
    "",
    "apiregistration.k8s.io",
    "apps",
    "events.k8s.io",
    "authentication.k8s.io",
    "authorization.k8s.io",
    "autoscaling",
    "batch",
    "networking.k8s.io",
    "policy",
    "rbac.authorization.k8s.io",
    "storage.k8s.io",
    "certificates.k8s.io",
    "apiextensions.k8s.io",
    "scheduling.k8s.io",
    "coordination.k8s.io",
    "node.k8s.io",
    "discovery.k8s.io",
    "metrics.k8s.io",
    "nodeless.dev",
)

# Preferred version per group when several are served.
PREFERRED_VERSION = {"autoscaling": "v2"}


@dataclass
class Registry:
    """The resources served now: the built-ins plus those CRDs add."""

    resources: list[Resource] = field(default_factory=lambda: list(BUILTIN))

    def __post_init__(self) -> None:
        self._reindex()

    def _reindex(self) -> None:
        self._by_path: dict[tuple[str, str, str], Resource] = {
            (r.group, r.version, r.plural): r for r in self.resources
        }
        self._by_kind: dict[tuple[str, str, str], Resource] = {
            (r.group, r.version, r.kind): r for r in self.resources
        }

    def __iter__(self) -> Iterator[Resource]:
        return iter(self.resources)

    def lookup(self, group: str, version: str, plural: str) -> Resource | None:
        return self._by_path.get((group, version, plural))

    def by_kind(self, group: str, version: str, kind: str) -> Resource | None:
        return self._by_kind.get((group, version, kind))

    def storage_resource(self, resource: Resource) -> Resource:
        """The resource at the version its objects are stored in."""
        return (
            self.lookup(resource.group, resource.effective_storage_version, resource.plural)
            or resource
        )

    def groups(self) -> list[tuple[str, list[str]]]:
        """Served (group, versions) in discovery order, preferred version first."""
        versions: dict[str, list[str]] = {}
        for r in self.resources:
            vs = versions.setdefault(r.group, [])
            if r.version not in vs:
                vs.append(r.version)
        order = {g: i for i, g in enumerate(GROUP_ORDER)}
        out = []
        for group in sorted(versions, key=lambda g: (order.get(g, len(order)), g)):
            vs = versions[group]
            preferred = PREFERRED_VERSION.get(group, vs[0])
            vs.sort(key=lambda v: (v != preferred, _version_rank(v)))
            out.append((group, vs))
        return out

    def in_group_version(self, group: str, version: str) -> list[Resource]:
        return sorted(
            (r for r in self.resources if r.group == group and r.version == version),
            key=lambda r: r.plural,
        )

    def replace_custom(self, custom: Iterable[Resource]) -> None:
        """Swap the CRD-defined resources for a new set (a CRD changed)."""
        self.resources = [r for r in self.resources if not r.custom] + [
            dataclasses.replace(r, custom=True) for r in custom
        ]
        self._reindex()


def _version_rank(version: str) -> tuple[int, int, int]:
    """Kubernetes version priority: GA > beta > alpha, higher numbers first."""
    import re

    m = re.fullmatch(r"v(\d+)(?:(alpha|beta)(\d+))?", version)
    if not m:
        return (3, 0, 0)
    major = int(m.group(1))
    stage = {"alpha": 2, "beta": 1, None: 0}[m.group(2)]
    minor = int(m.group(3) or 0)
    return (stage, -major, -minor)
