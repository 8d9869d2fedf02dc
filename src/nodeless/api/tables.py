"""Server-side Tables (``Accept: application/json;as=Table;v=v1;g=meta.k8s.io``).

kubectl asks the server for a ``meta.k8s.io/v1`` Table and prints whatever
columns come back; a server that only offers the default convertor makes
``kubectl get pods`` show NAME and AGE alone. So every built-in kind gets the
columns and cell values of upstream's ``pkg/printers/internalversion/printers.go``,
reproduced rule for rule (pod status reasons, ``3 (5m ago)`` restarts, service
port strings, ...), and custom resources get the CRD ``additionalPrinterColumns``
evaluated the way ``apiextensions-apiserver``'s table convertor does.

The upstream server always prints with ``Wide: true`` and lets the client drop
``priority: 1`` columns, so :func:`cells_for` always returns one cell per
column, wide ones included. Everything here is pure: objects in, cells out,
with ``now`` passed in so ages are deterministic.
"""

from __future__ import annotations

import datetime
import decimal
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nodeless.api import times

__all__ = [
    "Column",
    "cells_for",
    "columns_for",
    "custom_cells",
    "custom_columns",
    "human_duration",
    "table",
]


@dataclass(frozen=True)
class Column:
    """One ``TableColumnDefinition``; ``priority`` 1 marks an ``-o wide`` column."""

    name: str
    type: str
    format: str = ""
    description: str = ""
    priority: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "format": self.format,
            "description": self.description,
            "priority": self.priority,
        }


# --------------------------------------------------------------------------
# Durations and timestamps
# --------------------------------------------------------------------------

_RFC3339 = re.compile(
    r"^(\d{4}-\d{2}-\d{2})[Tt](\d{2}:\d{2}:\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:\d{2})$"
)


def _parse_time(value: Any) -> datetime.datetime | None:
    """An RFC 3339 (or MicroTime) string as an aware datetime; None for empty or bad.

    Go's ``time.Parse(time.RFC3339, ...)`` is stricter than ``fromisoformat``
    (it wants the ``T`` and a zone), so the shape is checked first.
    """
    if not isinstance(value, str) or not value:
        return None
    match = _RFC3339.match(value)
    if match is None:
        return None
    date, clock, fraction, zone = match.groups()
    micros = (fraction or "").ljust(6, "0")[:6]
    offset = "+00:00" if zone in ("Z", "z") else zone
    try:
        return datetime.datetime.fromisoformat(f"{date}T{clock}.{micros}{offset}")
    except ValueError:
        return None


def _aware(now: datetime.datetime) -> datetime.datetime:
    """Treat a naive ``now`` as UTC so it can be subtracted from stored timestamps."""
    return now if now.tzinfo is not None else now.replace(tzinfo=datetime.UTC)


def _micros(delta: datetime.timedelta) -> int:
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def _trunc_div(a: int, b: int) -> int:
    """Integer division truncating toward zero, as Go's ``int(...)`` conversions do."""
    q = abs(a) // b
    return q if a >= 0 else -q


def human_duration(delta: datetime.timedelta) -> str:
    """``k8s.io/apimachinery/pkg/util/duration.HumanDuration``, digit for digit.

    ~2-3 significant figures: ``90s``, ``5m30s``, ``15m``, ``3h20m``, ``2d5h``,
    ``400d``, ``3y20d``; anything more than a second in the future is
    ``<invalid>``, slight clock skew is ``0s``.
    """
    seconds = _trunc_div(_micros(delta), 1_000_000)
    if seconds < -1:
        return "<invalid>"
    if seconds < 0:
        return "0s"
    if seconds < 60 * 2:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 10:
        s = seconds % 60
        return f"{minutes}m" if s == 0 else f"{minutes}m{s}s"
    if minutes < 60 * 3:
        return f"{minutes}m"
    hours = seconds // 3600
    if hours < 8:
        m = minutes % 60
        return f"{hours}h" if m == 0 else f"{hours}h{m}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        h = hours % 24
        return f"{hours // 24}d" if h == 0 else f"{hours // 24}d{h}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        return f"{hours // 24 // 365}y{(hours // 24) % 365}d"
    return f"{hours // 24 // 365}y"


def _since(timestamp: Any, now: datetime.datetime) -> str:
    """upstream ``translateTimestampSince``: ``<unknown>`` for a zero time."""
    when = _parse_time(timestamp)
    if when is None:
        return "<unknown>"
    return human_duration(_aware(now) - when)


def _created_at(obj: dict[str, Any]) -> str:
    """The default convertor's ``Created At`` cell: UTC RFC 3339, Go's zero time if unset."""
    when = _parse_time(_get(obj, "metadata", "creationTimestamp"))
    if when is None:
        return "0001-01-01T00:00:00Z"
    return times.rfc3339(when)


# --------------------------------------------------------------------------
# Loose accessors: stored objects are JSON, any field may be absent or null
# --------------------------------------------------------------------------


def _get(obj: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _map(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _maps(value: Any) -> list[dict[str, Any]]:
    return [item for item in _list(value) if isinstance(item, dict)]


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _int(value: Any, default: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return default
    return int(value)


def _name(obj: dict[str, Any]) -> str:
    return _str(_get(obj, "metadata", "name"))


def _age(obj: dict[str, Any], now: datetime.datetime) -> str:
    return _since(_get(obj, "metadata", "creationTimestamp"), now)


def _deleting(obj: dict[str, Any]) -> bool:
    return _get(obj, "metadata", "deletionTimestamp") is not None


def _qty(value: Any) -> str:
    """A ``resource.Quantity`` as text; a nil pointer prints ``<nil>`` in Go."""
    if value is None:
        return "<nil>"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _qty_or_zero(value: Any) -> str:
    """A map-looked-up Quantity: a missing key is Go's zero Quantity, ``0``."""
    return "0" if value is None else _qty(value)


def _int_or_string(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return str(int(value))
    return _str(value)


def _bool_ptr(value: Any) -> str:
    """upstream ``printBoolPtr``: ``True``/``False``/``<unset>``."""
    if isinstance(value, bool):
        return "True" if value else "False"
    return "<unset>"


# --------------------------------------------------------------------------
# Labels and selectors (k8s.io/apimachinery/pkg/labels)
# --------------------------------------------------------------------------


def _format_labels(labels: Any) -> str:
    """``labels.FormatLabels``: sorted ``k=v`` pairs, ``<none>`` when empty."""
    pairs = _map(labels)
    text = ",".join(f"{k}={pairs[k]}" for k in sorted(pairs))
    return text or "<none>"


def _selector_string(selector: Any) -> str | None:
    """``LabelSelectorAsSelector(sel).String()``; None where upstream would error.

    A nil selector selects nothing and an empty one everything, and both print
    as the empty string; requirements are sorted by key and set values sorted.
    """
    if selector is None:
        return ""
    if not isinstance(selector, dict):
        return None
    requirements: list[tuple[str, str]] = []
    match_labels = _map(selector.get("matchLabels"))
    for key, value in match_labels.items():
        requirements.append((key, f"{key}={_str(value)}"))
    for expr in _maps(selector.get("matchExpressions")):
        key = _str(expr.get("key"))
        op = expr.get("operator")
        values = [_str(v) for v in _list(expr.get("values"))]
        if op in ("In", "NotIn"):
            if not values:
                return None
            joined = values[0] if len(values) == 1 else ",".join(sorted(values))
            word = "in" if op == "In" else "notin"
            requirements.append((key, f"{key} {word} ({joined})"))
        elif op in ("Exists", "DoesNotExist"):
            if values:
                return None
            requirements.append((key, key if op == "Exists" else f"!{key}"))
        else:
            return None
    requirements.sort(key=lambda r: r[0])
    return ",".join(text for _, text in requirements)


def _format_selector(selector: Any) -> str:
    """``metav1.FormatLabelSelector``: ``<none>`` when empty, ``<error>`` when invalid."""
    text = _selector_string(selector)
    if text is None:
        return "<error>"
    return text or "<none>"


def _containers(pod_spec: Any) -> tuple[str, str]:
    """upstream ``layoutContainerCells``: container names and images, comma-joined."""
    containers = _maps(_get(pod_spec, "containers"))
    names = ",".join(_str(c.get("name")) for c in containers)
    images = ",".join(_str(c.get("image")) for c in containers)
    return names, images


# --------------------------------------------------------------------------
# Column definitions
# --------------------------------------------------------------------------

_NAME_DESC = "Name must be unique within a namespace."
_AGE_DESC = (
    "CreationTimestamp is a timestamp representing the server time when this object was created."
)
_CONTAINERS_DESC = "Names of each container in the template."
_IMAGES_DESC = "Images referenced by each container in the template."

_NAME = Column("Name", "string", "name", _NAME_DESC)
_AGE = Column("Age", "string", "", _AGE_DESC)
_CREATED_AT = Column("Created At", "date", "", _AGE_DESC)
_W_CONTAINERS = Column("Containers", "string", "", _CONTAINERS_DESC, 1)
_W_IMAGES = Column("Images", "string", "", _IMAGES_DESC, 1)


def _c(name: str, type_: str = "string", description: str = "", priority: int = 0) -> Column:
    return Column(name, type_, "", description or name, priority)


def _w(name: str, type_: str = "string", description: str = "") -> Column:
    return _c(name, type_, description, 1)


_DEFAULT_COLUMNS = (_NAME, _CREATED_AT)

_POD_COLUMNS = (
    _NAME,
    _c("Ready", description="The aggregate readiness state of this pod for accepting traffic."),
    _c("Status", description="The aggregate status of the containers in this pod."),
    _c(
        "Restarts",
        description="The number of times the containers in this pod have been restarted "
        "and when the last container in this pod has restarted.",
    ),
    _AGE,
    _w("IP", description="IP address allocated to the pod."),
    _w("Node", description="NodeName is the node the pod is scheduled onto."),
    _w("Nominated Node", description="The node the scheduler nominated for preemption."),
    _w("Readiness Gates", description="Pod conditions evaluated for pod readiness."),
)
_POD_TEMPLATE_COLUMNS = (
    _NAME,
    _c("Containers", description=_CONTAINERS_DESC),
    _c("Images", description=_IMAGES_DESC),
    _c("Pod Labels", description="The labels for the pod template."),
)
_PDB_COLUMNS = (
    _NAME,
    _c("Min Available", description="The minimum number of pods that must be available."),
    _c("Max Unavailable", description="The maximum number of pods that may be unavailable."),
    _c(
        "Allowed Disruptions",
        "integer",
        "Calculated number of pods that may be disrupted at this time.",
    ),
    _AGE,
)
_REPLICA_COLUMNS = (
    _NAME,
    _c("Desired", "integer", "Replicas is the number of desired replicas."),
    _c("Current", "integer", "Replicas is the most recently observed number of replicas."),
    _c("Ready", "integer", "The number of ready replicas."),
    _AGE,
    _W_CONTAINERS,
    _W_IMAGES,
    _w("Selector", description="Label query over pods that should match the replica count."),
)
_DAEMON_SET_COLUMNS = (
    _NAME,
    _c("Desired", "integer", "The total number of nodes that should be running the daemon pod."),
    _c("Current", "integer", "The number of nodes running at least one daemon pod."),
    _c("Ready", "integer", "The number of nodes with a ready daemon pod."),
    _c("Up-to-date", "integer", "The number of nodes running the updated daemon pod."),
    _c("Available", "integer", "The number of nodes with an available daemon pod."),
    _c("Node Selector", description="NodeSelector of the pod template."),
    _AGE,
    _W_CONTAINERS,
    _W_IMAGES,
    _w("Selector", description="Label query over pods that are managed by the daemon set."),
)
_JOB_COLUMNS = (
    _NAME,
    _c("Status", description="Status of the job."),
    _c("Completions", description="The number of pods which reached phase Succeeded."),
    _c("Duration", description="Time required to complete the job."),
    _AGE,
    _W_CONTAINERS,
    _W_IMAGES,
    _w("Selector", description="A label query over pods that should match the pod count."),
)
_CRON_JOB_COLUMNS = (
    _NAME,
    _c("Schedule", description="The schedule in Cron format."),
    _c("Timezone", description="The time zone name for the given schedule."),
    _c("Suspend", "boolean", "Whether subsequent executions are suspended."),
    _c("Active", "integer", "The number of currently running jobs."),
    _c("Last Schedule", description="When the job was last successfully scheduled."),
    _AGE,
    _W_CONTAINERS,
    _W_IMAGES,
    _w("Selector", description="A label query over pods that should match the pod count."),
)
_SERVICE_COLUMNS = (
    _NAME,
    _c("Type", description="Type determines how the Service is exposed."),
    _c("Cluster-IP", description="The IP address of the service."),
    _c("External-IP", description="IP addresses for which nodes accept traffic for this service."),
    _c("Port(s)", description="The list of ports that are exposed by this service."),
    _AGE,
    _w(
        "Selector",
        description="Route service traffic to pods with label keys and values matching this selector.",
    ),
)
_INGRESS_COLUMNS = (
    _NAME,
    _c(
        "Class",
        description="The name of the IngressClass resource that should be used for additional configuration",
    ),
    _c(
        "Hosts",
        description="Hosts that incoming requests are matched against before the ingress rule",
    ),
    _c("Address", description="Address is a list containing ingress points for the load-balancer"),
    _c("Ports", description="Ports of TLS configurations that open"),
    _AGE,
)
_INGRESS_CLASS_COLUMNS = (
    _NAME,
    _c("Controller", description="Controller that is responsible for handling this class"),
    _c("Parameters", description="A reference to a resource with additional parameters"),
    _AGE,
)
_IP_ADDRESS_COLUMNS = (
    _NAME,
    _c(
        "ParentRef",
        description="ParentRef references the resource (usually a Service) this IP address is for",
    ),
)
_SERVICE_CIDR_COLUMNS = (
    _NAME,
    _c("CIDRs", description="Service CIDRs the cluster allocates Service ClusterIPs from"),
    _AGE,
)
_STATEFUL_SET_COLUMNS = (
    _NAME,
    _c("Ready", description="Number of the pod with ready state"),
    _AGE,
    _W_CONTAINERS,
    _W_IMAGES,
)
_ENDPOINTS_COLUMNS = (
    _NAME,
    _c("Endpoints", description="The set of all endpoints is the union of all subsets."),
    _AGE,
)
_NODE_COLUMNS = (
    _NAME,
    _c("Status", description="The status of the node"),
    _c("Roles", description="The roles of the node"),
    _AGE,
    _c("Version", description="Kubelet Version reported by the node."),
    _w("Internal-IP", description="List of addresses reachable to the node."),
    _w("External-IP", description="List of addresses reachable to the node."),
    _w("OS-Image", description="OS Image reported by the node."),
    _w("Kernel-Version", description="Kernel Version reported by the node."),
    _w("Container-Runtime", description="ContainerRuntime Version reported by the node."),
)
_EVENT_COLUMNS = (
    _c(
        "Last Seen",
        description="The time at which the most recent occurrence of this event was recorded.",
    ),
    _c("Type", description="Type of this event (Normal, Warning)."),
    _c(
        "Reason",
        description="Short, machine understandable string that gives the reason for the transition.",
    ),
    _c("Object", description="The object that this event is about."),
    _w("Subobject", description="The field of the object this event is about."),
    _w("Source", description="The component reporting this event."),
    _c("Message", description="A human-readable description of the status of this operation."),
    _w("First Seen", description="The time at which the event was first recorded."),
    _w("Count", description="The number of times this event has occurred."),
    Column("Name", "string", "name", _NAME_DESC, 1),
)
_NAMESPACE_COLUMNS = (_NAME, _c("Status", description="The status of the namespace"), _AGE)
_SECRET_COLUMNS = (
    _NAME,
    _c("Type", description="Used to facilitate programmatic handling of secret data."),
    _c("Data", description="The number of keys in the secret's data."),
    _AGE,
)
_SERVICE_ACCOUNT_COLUMNS = (
    _NAME,
    _c("Secrets", description="The number of secrets the service account references."),
    _AGE,
)
_PV_COLUMNS = (
    _NAME,
    _c("Capacity", description="The storage capacity of the volume."),
    _c("Access Modes", description="All ways the volume can be mounted."),
    _c("Reclaim Policy", description="What happens to the volume when released from its claim."),
    _c(
        "Status",
        description="Phase indicates if a volume is available, bound to a claim, or released.",
    ),
    _c("Claim", description="The bound PersistentVolumeClaim."),
    _c("StorageClass", description="StorageClass of the pv"),
    _c("VolumeAttributesClass", description="VolumeAttributesClass of the pv"),
    _c("Reason", description="A brief CamelCase string that describes any failure."),
    _AGE,
    _w(
        "VolumeMode",
        description="Whether the volume is a formatted filesystem or a raw block device.",
    ),
)
_PVC_COLUMNS = (
    _NAME,
    _c("Status", description="The current phase of PersistentVolumeClaim."),
    _c("Volume", description="The binding reference to the PersistentVolume backing this claim."),
    _c("Capacity", description="The actual resources of the underlying volume."),
    _c("Access Modes", description="The actual access modes the volume backing the PVC has."),
    _c("StorageClass", description="StorageClass of the pvc"),
    _c("VolumeAttributesClass", description="VolumeAttributesClass of the pvc"),
    _AGE,
    _w(
        "VolumeMode",
        description="Whether the volume is a formatted filesystem or a raw block device.",
    ),
)
_DEPLOYMENT_COLUMNS = (
    _NAME,
    _c("Ready", description="Number of the pod with ready state"),
    _c(
        "Up-to-date",
        description="Total number of non-terminated pods with the desired template spec.",
    ),
    _c("Available", description="Total number of available pods targeted by this deployment."),
    _AGE,
    _W_CONTAINERS,
    _W_IMAGES,
    _w("Selector", description="Label selector for pods."),
)
_HPA_COLUMNS = (
    _NAME,
    _c("Reference", description="The target resource to scale."),
    _c("Targets", description="The metrics used to calculate the desired replica count."),
    _c("MinPods", description="The lower limit for the number of replicas."),
    _c("MaxPods", description="The upper limit for the number of replicas."),
    _c("Replicas", description="Current number of replicas of pods managed by this autoscaler."),
    _AGE,
)
_CONFIG_MAP_COLUMNS = (
    _NAME,
    _c("Data", description="The number of keys in the config map's data and binaryData."),
    _AGE,
)
_NETWORK_POLICY_COLUMNS = (
    _NAME,
    _c("Pod-Selector", description="Selects the pods to which this NetworkPolicy object applies."),
    _AGE,
)
_ROLE_BINDING_COLUMNS = (
    _NAME,
    _c(
        "Role",
        description="RoleRef can reference a Role in the current namespace or a ClusterRole.",
    ),
    _AGE,
    _w("Users", description="Users in the roleBinding"),
    _w("Groups", description="Groups in the roleBinding"),
    _w("ServiceAccounts", description="ServiceAccounts in the roleBinding"),
)
_CLUSTER_ROLE_BINDING_COLUMNS = (
    _NAME,
    _c("Role", description="RoleRef can only reference a ClusterRole in the global namespace."),
    _AGE,
    _w("Users", description="Users in the clusterRoleBinding"),
    _w("Groups", description="Groups in the clusterRoleBinding"),
    _w("ServiceAccounts", description="ServiceAccounts in the clusterRoleBinding"),
)
_CSR_COLUMNS = (
    _NAME,
    _AGE,
    _c("SignerName", description="The requested signer."),
    _c("Requestor", description="The user that created the request."),
    _c("RequestedDuration", description="The requested duration of validity of the certificate."),
    _c("Condition", description="The approval state of the request."),
)
_LEASE_COLUMNS = (
    _NAME,
    _c("Holder", description="The identity of the holder of a current lease."),
    _AGE,
)
_STORAGE_CLASS_COLUMNS = (
    _NAME,
    _c("Provisioner", description="The type of the provisioner."),
    _c("ReclaimPolicy", description="The reclaim policy of dynamically provisioned volumes."),
    _c(
        "VolumeBindingMode",
        description="How PersistentVolumeClaims should be provisioned and bound.",
    ),
    _c("AllowVolumeExpansion", description="Whether the storage class allows volume expansion."),
    _AGE,
)
_CONTROLLER_REVISION_COLUMNS = (
    _NAME,
    _c("Controller", description="Controller of the object"),
    _c("Revision", description="The revision of the state represented by Data."),
    _AGE,
)
_RESOURCE_QUOTA_COLUMNS = (
    _NAME,
    _c(
        "Request",
        description="Request represents a minimum amount of cpu/memory that a container may consume.",
    ),
    _c(
        "Limit",
        description="Limits control the maximum amount of cpu/memory that a container may use "
        "independent of contention on the node.",
    ),
    _AGE,
)
_PRIORITY_CLASS_COLUMNS = (
    _NAME,
    _c("Value", "integer", "The value of this priority class."),
    _c("Global-Default", "boolean", "Whether this priority class is the default."),
    _AGE,
    _c("PreemptionPolicy", description="The policy for preempting pods with lower priority."),
)
_RUNTIME_CLASS_COLUMNS = (_NAME, _c("Handler", description="The underlying runtime handler."), _AGE)
_VOLUME_ATTACHMENT_COLUMNS = (
    _NAME,
    Column("Attacher", "string", "name", "The name of the volume driver that handles the request."),
    _c("PV", description="Name of the persistent volume to attach."),
    _c("Node", description="The node that the volume should be attached to."),
    _c("Attached", "boolean", "Whether the volume is successfully attached."),
    _AGE,
)
_ENDPOINT_SLICE_COLUMNS = (
    _NAME,
    _c("AddressType", description="The type of address carried by this EndpointSlice."),
    _c("Ports", description="The network ports exposed by each endpoint."),
    _c("Endpoints", description="The unique endpoints in this slice."),
    _AGE,
)
_CSI_NODE_COLUMNS = (
    _NAME,
    _c("Drivers", "integer", "Drivers indicates the number of CSI drivers registered on the node"),
    _AGE,
)
_CSI_DRIVER_COLUMNS = (
    _NAME,
    _c("AttachRequired", "boolean", "Whether the driver requires an attach operation."),
    _c("PodInfoOnMount", "boolean", "Whether the driver requires pod information on mount."),
    _c("StorageCapacity", "boolean", "Whether the driver reports storage capacity."),
    _c(
        "TokenRequests", description="Audiences of the service account tokens passed to the driver."
    ),
    _c("RequiresRepublish", "boolean", "Whether NodePublishVolume is called periodically."),
    _c("Modes", description="Volume modes the driver supports."),
    _AGE,
)
_WEBHOOK_COLUMNS = (
    _NAME,
    _c(
        "Webhooks",
        "integer",
        "Webhooks indicates the number of webhooks registered in this configuration",
    ),
    _AGE,
)
_VAP_COLUMNS = (
    _NAME,
    _c(
        "Validations",
        "integer",
        "Validations indicates the number of validation rules defined in this configuration",
    ),
    _c(
        "ParamKind",
        description="ParamKind specifies the kind of resources used to parameterize this policy",
    ),
    _AGE,
)
_VAP_BINDING_COLUMNS = (
    _NAME,
    _c(
        "PolicyName",
        description="PolicyName indicates the policy definition which the policy binding binded to",
    ),
    _c(
        "ParamRef",
        description="ParamRef indicates the param resource which sets the configration param",
    ),
    _AGE,
)
_FLOW_SCHEMA_COLUMNS = (
    _NAME,
    _c("PriorityLevel", description="The priority level configuration this schema refers to."),
    _c("MatchingPrecedence", description="The order in which flow schemas are evaluated."),
    _c("DistinguisherMethod", description="How flows are distinguished."),
    _AGE,
    _c("MissingPL", description="references a broken or non-existent PriorityLevelConfiguration"),
)
_PRIORITY_LEVEL_COLUMNS = (
    _NAME,
    _c("Type", description="Whether the priority level is Exempt or Limited."),
    _c("NominalConcurrencyShares", description="The nominal share of concurrency."),
    _c("Queues", description="The number of queues."),
    _c("HandSize", description="The number of queues assigned to each flow."),
    _c("QueueLengthLimit", description="The maximum number of requests waiting in a queue."),
    _AGE,
)


# --------------------------------------------------------------------------
# Cells, kind by kind (order and wording follow printers.go)
# --------------------------------------------------------------------------

_Cells = Callable[[dict[str, Any], datetime.datetime], list[Any]]


def _default_cells(obj: dict[str, Any], now: datetime.datetime) -> list[Any]:
    return [_name(obj), _created_at(obj)]


def _restartable_init(container: dict[str, Any] | None) -> bool:
    """A sidecar: an init container with ``restartPolicy: Always``."""
    return container is not None and container.get("restartPolicy") == "Always"


def _later(current: datetime.datetime | None, status: dict[str, Any]) -> datetime.datetime | None:
    """The later of ``current`` and the container's last termination (``Time.Before``)."""
    finished = _parse_time(_get(status, "lastState", "terminated", "finishedAt"))
    if finished is not None and (current is None or current < finished):
        return finished
    return current


def _condition_true(conditions: Any, type_: str) -> bool:
    """The first condition of ``type_`` decides, as upstream's loops do."""
    for condition in _maps(conditions):
        if condition.get("type") == type_:
            return condition.get("status") == "True"
    return False


def _terminated_reason(terminated: dict[str, Any], prefix: str) -> str:
    reason = _str(terminated.get("reason"))
    if reason:
        return prefix + reason
    signal = _int(terminated.get("signal"))
    if signal != 0:
        return f"{prefix}Signal:{signal}"
    return f"{prefix}ExitCode:{_int(terminated.get('exitCode'))}"


def _pod_cells(pod: dict[str, Any], now: datetime.datetime) -> list[Any]:
    """upstream ``printPod``: the STATUS column is a reason, not just the phase."""
    spec = _map(pod.get("spec"))
    status = _map(pod.get("status"))
    init_specs = _maps(spec.get("initContainers"))
    conditions = status.get("conditions")

    restarts = 0
    sidecar_restarts = 0
    total = len(_list(spec.get("containers")))
    ready = 0
    last_restart: datetime.datetime | None = None
    last_sidecar_restart: datetime.datetime | None = None

    phase = _str(status.get("phase"))
    reason = _str(status.get("reason")) or phase
    for condition in _maps(conditions):
        if condition.get("type") == "PodScheduled" and condition.get("reason") == "SchedulingGated":
            reason = "SchedulingGated"

    init_by_name: dict[str, dict[str, Any]] = {}
    for container in init_specs:
        init_by_name[_str(container.get("name"))] = container
        if _restartable_init(container):
            total += 1

    initializing = False
    for i, cs in enumerate(_maps(status.get("initContainerStatuses"))):
        restarts += _int(cs.get("restartCount"))
        last_restart = _later(last_restart, cs)
        sidecar = _restartable_init(init_by_name.get(_str(cs.get("name"))))
        if sidecar:
            sidecar_restarts += _int(cs.get("restartCount"))
            last_sidecar_restart = _later(last_sidecar_restart, cs)
        state = _map(cs.get("state"))
        terminated = state.get("terminated")
        waiting = state.get("waiting")
        if isinstance(terminated, dict) and _int(terminated.get("exitCode")) == 0:
            continue
        if sidecar and cs.get("started") is True:
            if cs.get("ready") is True:
                ready += 1
            continue
        if isinstance(terminated, dict):
            reason = _terminated_reason(terminated, "Init:")
        elif (
            isinstance(waiting, dict)
            and _str(waiting.get("reason"))
            and waiting.get("reason") != "PodInitializing"
        ):
            reason = "Init:" + _str(waiting.get("reason"))
        else:
            reason = f"Init:{i}/{len(init_specs)}"
        initializing = True
        break

    if not initializing or _condition_true(conditions, "Initialized"):
        restarts = sidecar_restarts
        last_restart = last_sidecar_restart
        has_running = False
        for cs in reversed(_maps(status.get("containerStatuses"))):
            restarts += _int(cs.get("restartCount"))
            last_restart = _later(last_restart, cs)
            state = _map(cs.get("state"))
            terminated = state.get("terminated")
            waiting = state.get("waiting")
            if isinstance(waiting, dict) and _str(waiting.get("reason")):
                reason = _str(waiting.get("reason"))
            elif isinstance(terminated, dict):
                reason = _terminated_reason(terminated, "")
            elif cs.get("ready") is True and isinstance(state.get("running"), dict):
                has_running = True
                ready += 1
        # A pod whose main containers finished but a sidecar still runs is not "Completed".
        if reason == "Completed" and has_running:
            reason = "Running" if _condition_true(conditions, "Ready") else "NotReady"

    if _deleting(pod) and status.get("reason") == "NodeLost":
        reason = "Unknown"
    elif _deleting(pod) and phase not in ("Failed", "Succeeded"):
        reason = "Terminating"

    restarts_text = str(restarts)
    if restarts != 0 and last_restart is not None:
        restarts_text = f"{restarts} ({human_duration(_aware(now) - last_restart)} ago)"

    pod_ips = _maps(status.get("podIPs"))
    pod_ip = _str(pod_ips[0].get("ip")) if pod_ips else _str(status.get("podIP"))
    gates = _maps(spec.get("readinessGates"))
    gates_text = "<none>"
    if gates:
        true_count = sum(
            1 for gate in gates if _condition_true(conditions, _str(gate.get("conditionType")))
        )
        gates_text = f"{true_count}/{len(gates)}"
    return [
        _name(pod),
        f"{ready}/{total}",
        reason,
        restarts_text,
        _age(pod, now),
        pod_ip or "<none>",
        _str(spec.get("nodeName")) or "<none>",
        _str(status.get("nominatedNodeName")) or "<none>",
        gates_text,
    ]


def _pod_template_cells(obj: dict[str, Any], now: datetime.datetime) -> list[Any]:
    template = _map(obj.get("template"))
    names, images = _containers(template.get("spec"))
    return [_name(obj), names, images, _format_labels(_get(template, "metadata", "labels"))]


def _pdb_cells(obj: dict[str, Any], now: datetime.datetime) -> list[Any]:
    spec = _map(obj.get("spec"))
    min_available = spec.get("minAvailable")
    max_unavailable = spec.get("maxUnavailable")
    return [
        _name(obj),
        "N/A" if min_available is None else _int_or_string(min_available),
        "N/A" if max_unavailable is None else _int_or_string(max_unavailable),
        _int(_get(obj, "status", "disruptionsAllowed")),
        _age(obj, now),
    ]


def _replication_controller_cells(obj: dict[str, Any], now: datetime.datetime) -> list[Any]:
    spec = _map(obj.get("spec"))
    status = _map(obj.get("status"))
    names, images = _containers(_get(spec, "template", "spec"))
    return [
        _name(obj),
        _int(spec.get("replicas"), 1),
        _int(status.get("replicas")),
        _int(status.get("readyReplicas")),
        _age(obj, now),
        names,
        images,
        _format_labels(spec.get("selector")),
    ]


def _replica_set_cells(obj: dict[str, Any], now: datetime.datetime) -> list[Any]:
    spec = _map(obj.get("spec"))
    status = _map(obj.get("status"))
    names, images = _containers(_get(spec, "template", "spec"))
    return [
        _name(obj),
        _int(spec.get("replicas"), 1),
        _int(status.get("replicas")),
        _int(status.get("readyReplicas")),
        _age(obj, now),
        names,
        images,
        _format_selector(spec.get("selector")),
    ]


def _daemon_set_cells(obj: dict[str, Any], now: datetime.datetime) -> list[Any]:
    spec = _map(obj.get("spec"))
    status = _map(obj.get("status"))
    pod_spec = _get(spec, "template", "spec")
    names, images = _containers(pod_spec)
    return [
        _name(obj),
        _int(status.get("desiredNumberScheduled")),
        _int(status.get("currentNumberScheduled")),
        _int(status.get("numberReady")),
        _int(status.get("updatedNumberScheduled")),
        _int(status.get("numberAvailable")),
        _format_labels(_get(pod_spec, "nodeSelector")),
        _age(obj, now),
        names,
        images,
        _format_selector(spec.get("selector")),
    ]


def _job_cells(obj: dict[str, Any], now: datetime.datetime) -> list[Any]:
    spec = _map(obj.get("spec"))
    status = _map(obj.get("status"))
    succeeded = _int(status.get("succeeded"))
    if spec.get("completions") is not None:
        completions = f"{succeeded}/{_int(spec.get('completions'))}"
    else:
        parallelism = _int(spec.get("parallelism"))
        completions = f"{succeeded}/1 of {parallelism}" if parallelism > 1 else f"{succeeded}/1"
    start = _parse_time(status.get("startTime"))
    end = _parse_time(status.get("completionTime"))
    if start is None:
        duration = ""
    elif end is None:
        duration = human_duration(_aware(now) - start)
    else:
        duration = human_duration(end - start)
    conditions = status.get("conditions")
    if _condition_true(conditions, "Complete"):
        state = "Complete"
    elif _condition_true(conditions, "Failed"):
        state = "Failed"
    elif _deleting(obj):
        state = "Terminating"
    elif _condition_true(conditions, "Suspended"):
        state = "Suspended"
    elif _condition_true(conditions, "FailureTarget"):
        state = "FailureTarget"
    else:
        state = "Running"
    names, images = _containers(_get(spec, "template", "spec"))
    return [
        _name(obj),
        state,
        completions,
        duration,
        _age(obj, now),
        names,
        images,
        _format_selector(spec.get("selector")),
    ]


def _cron_job_cells(obj: dict[str, Any], now: datetime.datetime) -> list[Any]:
    spec = _map(obj.get("spec"))
    status = _map(obj.get("status"))
    last = status.get("lastScheduleTime")
    job_spec = _get(spec, "jobTemplate", "spec")
    names, images = _containers(_get(job_spec, "template", "spec"))
    return [
        _name(obj),
        _str(spec.get("schedule")),
        _str(spec.get("timeZone")) if spec.get("timeZone") is not None else "<none>",
        _bool_ptr(spec.get("suspend")),
        len(_list(status.get("active"))),
        "<none>" if last is None else _since(last, now),
        _age(obj, now),
        names,
        images,
        _format_selector(_get(job_spec, "selector")),
    ]


def _lb_ingress(status: Any) -> str:
    """upstream ``loadBalancerStatusStringer`` (wide, so never clipped): sorted, unique."""
    found: set[str] = set()
    for ingress in _maps(_get(status, "ingress")):
        if _str(ingress.get("ip")):
            found.add(_str(ingress.get("ip")))
        elif _str(ingress.get("hostname")):
            found.add(_str(ingress.get("hostname")))
    return ",".join(sorted(found))


def _service_external_ip(spec: dict[str, Any], status: dict[str, Any]) -> str:
    external = [_str(ip) for ip in _list(spec.get("externalIPs"))]
    kind = _str(spec.get("type")) or "ClusterIP"
    if kind in ("ClusterIP", "NodePort"):
        return ",".join(external) if external else "<none>"
    if kind == "LoadBalancer":
        lb = _lb_ingress(status.get("loadBalancer"))
        if external:
            return ",".join((lb.split(",") if lb else []) + external)
        return lb or "<pending>"
    if kind == "ExternalName":
        return _str(spec.get("externalName"))
    return "<unknown>"


def _service_ports(ports: Any) -> str:
    """upstream ``makePortString``: ``80/TCP,443:30443/TCP``."""
    pieces = []
    for port in _maps(ports):
        protocol = _str(port.get("protocol")) or "TCP"
        node_port = _int(port.get("nodePort"))
        if node_port > 0:
            pieces.append(f"{_int(port.get('port'))}:{node_port}/{protocol}")
        else:
            pieces.append(f"{_int(port.get('port'))}/{protocol}")
    return ",".join(pieces)


def _service_cells(obj: dict[str, Any], now: datetime.datetime) -> list[Any]:
    spec = _map(obj.get("spec"))
    cluster_ips = _list(spec.get("clusterIPs"))
    cluster_ip = _str(cluster_ips[0]) if cluster_ips else _str(spec.get("clusterIP"))
    return [
        _name(obj),
        _str(spec.get("type")) or "ClusterIP",
        cluster_ip or "<none>",
        _service_external_ip(spec, _map(obj.get("status"))),
        _service_ports(spec.get("ports")) or "<none>",
        _age(obj, now),
        _format_labels(spec.get("selector")),
    ]


def _ingress_hosts(rules: list[dict[str, Any]]) -> str:
    """upstream ``formatHosts``: up to three hosts, ``*`` when none is named."""
    hosts: list[str] = []
    more = False
    for rule in rules:
        if len(hosts) == 3:
            more = True
        if not more and _str(rule.get("host")):
            hosts.append(_str(rule.get("host")))
    if not hosts:
        return "*"
    text = ",".join(hosts)
    return f"{text} + {len(rules) - 3} more..." if more else text


def _ingress_cells(obj: dict[str, Any], now: datetime.datetime) -> list[Any]:
    spec = _map(obj.get("spec"))
    class_name = spec.get("ingressClassName")
    return [
        _name(obj),
        _str(class_name) if class_name is not None else "<none>",
        _ingress_hosts(_maps(spec.get("rules"))),
        _lb_ingress(_get(obj, "status", "loadBalancer")),
        "80, 443" if _list(spec.get("tls")) else "80",
        _age(obj, now),
    ]


def _ingress_class_cells(obj: dict[str, Any], now: datetime.datetime) -> list[Any]:
    spec = _map(obj.get("spec"))
    params = spec.get("parameters")
    text = "<none>"
    if isinstance(params, dict):
        text = _str(params.get("kind"))
        if params.get("apiGroup") is not None:
            text += "." + _str(params.get("apiGroup"))
        text += "/" + _str(params.get("name"))
    return [_name(obj), _str(spec.get("controller")), text, _age(obj, now)]


def _ip_address_cells(obj: dict[str, Any], now: datetime.datetime) -> list[Any]:
    ref = _get(obj, "spec", "parentRef")
    parent = "<none>"
    if isinstance(ref, dict):
        # upstream's GroupResource string, lower-cased: "services" or "things.example.com"
        resource = _str(ref.get("resource"))
        group = _str(ref.get("group"))
        parent = (f"{resource}.{group}" if group else resource).lower()
        if ref.get("namespace"):
            parent += "/" + _str(ref.get("namespace"))
        parent += "/" + _str(ref.get("name"))
    return [_name(obj), parent]


def _service_cidr_cells(obj: dict[str, Any], now: datetime.datetime) -> list[Any]:
    cidrs = _get(obj, "spec", "cidrs")
    return [_name(obj), ",".join(_str(c) for c in cidrs or []) or "<none>", _age(obj, now)]


def _stateful_set_cells(obj: dict[str, Any], now: datetime.datetime) -> list[Any]:
    spec = _map(obj.get("spec"))
    names, images = _containers(_get(spec, "template", "spec"))
    ready = _int(_get(obj, "status", "readyReplicas"))
    return [
        _name(obj),
        f"{ready}/{_int(spec.get('replicas'), 1)}",
        _age(obj, now),
        names,
        images,
    ]


def _join_host_port(host: str, port: int) -> str:
    """Go's ``net.JoinHostPort``: brackets around hosts containing a colon."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _format_endpoints(subsets: list[dict[str, Any]]) -> str:
    """upstream ``formatEndpoints``: the first three ``ip:port`` pairs, then a count."""
    if not subsets:
        return "<none>"
    found: list[str] = []
    limit = 3
    more = False
    count = 0
    for subset in subsets:
        addresses = _maps(subset.get("addresses"))
        ports = _maps(subset.get("ports"))
        if not ports:
            # Headless services may have no ports at all.
            count += len(addresses)
            for address in addresses:
                if len(found) == limit:
                    more = True
                    break
                found.append(_str(address.get("ip")))
            continue
        for port in ports:
            count += len(addresses)
            for address in addresses:
                if len(found) == limit:
                    more = True
                    break
                found.append(_join_host_port(_str(address.get("ip")), _int(port.get("port"))))
    text = ",".join(found)
    return f"{text} + {count - limit} more..." if more else text


def _endpoints_cells(obj: dict[str, Any], now: datetime.datetime) -> list[Any]:
    return [_name(obj), _format_endpoints(_maps(obj.get("subsets"))), _age(obj, now)]


def _list_with_more(items: list[str], more: bool, count: int, limit: int) -> str:
    text = ",".join(items)
    if more:
        return f"{text} + {count - limit} more..."
    return text or "<unset>"


def _endpoint_slice_cells(obj: dict[str, Any], now: datetime.datetime) -> list[Any]:
    limit = 3
    ports: list[str] = []
    ports_more = False
    ports_count = 0
    for port in _maps(obj.get("ports")):
        if len(ports) < limit:
            if port.get("port") is not None:
                ports.append(str(_int(port.get("port"))))
            elif port.get("name") is not None:
                ports.append(_str(port.get("name")))
            else:
                ports.append("*")
        elif len(ports) == limit:
            ports_more = True
        ports_count += 1
    addresses: list[str] = []
    addresses_more = False
    addresses_count = 0
    for endpoint in _maps(obj.get("endpoints")):
        for address in _list(endpoint.get("addresses")):
            if len(addresses) < limit:
                addresses.append(_str(address))
            elif len(addresses) == limit:
                addresses_more = True
            addresses_count += 1
    return [
        _name(obj),
        _str(obj.get("addressType")),
        _list_with_more(ports, ports_more, ports_count, limit),
        _list_with_more(addresses, addresses_more, addresses_count, limit),
        _age(obj, now),
    ]


def _node_address(status: dict[str, Any], kind: str) -> str:
    for address in _maps(status.get("addresses")):
        if address.get("type") == kind:
            return _str(address.get("address"))
    return "<none>"


def _node_roles(labels: dict[str, Any]) -> list[str]:
    """Roles from ``node-role.kubernetes.io/<role>`` keys and ``kubernetes.io/role`` values."""
    roles: set[str] = set()
    for key, value in labels.items():
        if key.startswith("node-role.kubernetes.io/"):
            role = key[len("node-role.kubernetes.io/") :]
            if role:
                roles.add(role)
        elif key == "kubernetes.io/role" and _str(value):
            roles.add(_str(value))
    return sorted(roles)


def _node_cells(obj: dict[str, Any], now: datetime.datetime) -> list[Any]:
    status = _map(obj.get("status"))
    info = _map(status.get("nodeInfo"))
    ready: dict[str, Any] | None = None
    for condition in _maps(status.get("conditions")):
        if condition.get("type") == "Ready":
            ready = condition  # the last one wins, as with upstream's condition map
    states = []
    if ready is not None:
        states.append("Ready" if ready.get("status") == "True" else "NotReady")
    else:
        states.append("Unknown")
    if _get(obj, "spec", "unschedulable") is True:
        states.append("SchedulingDisabled")
    roles = ",".join(_node_roles(_map(_get(obj, "metadata", "labels"))))
    return [
        _name(obj),
        ",".join(states),
        roles or "<none>",
        _age(obj, now),
        _str(info.get("kubeletVersion")),
        _node_address(status, "InternalIP"),
        _node_address(status, "ExternalIP"),
        _str(info.get("osImage")) or "<unknown>",
        _str(info.get("kernelVersion")) or "<unknown>",
        _str(info.get("containerRuntimeVersion")) or "<unknown>",
    ]


def _event_cells(obj: dict[str, Any], now: datetime.datetime) -> list[Any]:
    """upstream ``printEvent`` for ``v1`` Events."""
    return _event_row(
        obj,
        now,
        involved=_map(obj.get("involvedObject")),
        message=_str(obj.get("message")),
        source=_map(obj.get("source")),
        reporting_controller=_str(obj.get("reportingComponent")),
        first=obj.get("firstTimestamp"),
        last=obj.get("lastTimestamp"),
        count=_int(obj.get("count")),
    )


def _events_v1_cells(obj: dict[str, Any], now: datetime.datetime) -> list[Any]:
    """``events.k8s.io`` Events share core's storage and printer; map their fields back."""
    return _event_row(
        obj,
        now,
        involved=_map(obj.get("regarding")),
        message=_str(obj.get("note")),
        source=_map(obj.get("deprecatedSource")),
        reporting_controller=_str(obj.get("reportingController")),
        first=obj.get("deprecatedFirstTimestamp"),
        last=obj.get("deprecatedLastTimestamp"),
        count=_int(obj.get("deprecatedCount")),
    )


def _event_row(
    obj: dict[str, Any],
    now: datetime.datetime,
    *,
    involved: dict[str, Any],
    message: str,
    source: dict[str, Any],
    reporting_controller: str,
    first: Any,
    last: Any,
    count: int,
) -> list[Any]:
    first_seen = (
        _since(first, now) if _parse_time(first) is not None else _since(obj.get("eventTime"), now)
    )
    last_seen = _since(last, now) if _parse_time(last) is not None else first_seen
    series = obj.get("series")
    if isinstance(series, dict):
        last_seen = _since(series.get("lastObservedTime"), now)
        count = _int(series.get("count"))
    elif count == 0:
        count = 1  # singleton events carry no count in the new API
    kind = _str(involved.get("kind")).lower()
    target = f"{kind}/{_str(involved.get('name'))}" if _str(involved.get("name")) else kind
    component = _str(source.get("component")) or reporting_controller
    instance = _str(source.get("host")) or _str(obj.get("reportingInstance"))
    source_text = f"{component}, {instance}" if instance else component
    return [
        last_seen,
        _str(obj.get("type")),
        _str(obj.get("reason")),
        target,
        _str(involved.get("fieldPath")),
        source_text,
        message.strip(),
        first_seen,
        count,
        _name(obj),
    ]


def _namespace_cells(obj: dict[str, Any], now: datetime.datetime) -> list[Any]:
    return [_name(obj), _str(_get(obj, "status", "phase")), _age(obj, now)]


def _secret_cells(obj: dict[str, Any], now: datetime.datetime) -> list[Any]:
    # The API folds stringData into data on write; count both in case it was not.
    keys = set(_map(obj.get("data"))) | set(_map(obj.get("stringData")))
    return [_name(obj), _str(obj.get("type")), len(keys), _age(obj, now)]


def _config_map_cells(obj: dict[str, Any], now: datetime.datetime) -> list[Any]:
    count = len(_map(obj.get("data"))) + len(_map(obj.get("binaryData")))
    return [_name(obj), count, _age(obj, now)]


def _service_account_cells(obj: dict[str, Any], now: datetime.datetime) -> list[Any]:
    return [_name(obj), len(_list(obj.get("secrets"))), _age(obj, now)]


def _access_modes(modes: Any) -> str:
    """``helper.GetAccessModesAsString``: fixed order, duplicates dropped."""
    present = set(_list(modes))
    short = (
        ("ReadWriteOnce", "RWO"),
        ("ReadOnlyMany", "ROX"),
        ("ReadWriteMany", "RWX"),
        ("ReadWriteOncePod", "RWOP"),
    )
    return ",".join(abbrev for mode, abbrev in short if mode in present)


_BETA_STORAGE_CLASS = "volume.beta.kubernetes.io/storage-class"


def _storage_class_of(obj: dict[str, Any]) -> str:
    """The beta annotation still overrides ``spec.storageClassName``, as upstream's helper has it."""
    annotations = _map(_get(obj, "metadata", "annotations"))
    if _BETA_STORAGE_CLASS in annotations:
        return _str(annotations[_BETA_STORAGE_CLASS])
    return _str(_get(obj, "spec", "storageClassName"))


def _pv_cells(obj: dict[str, Any], now: datetime.datetime) -> list[Any]:
    spec = _map(obj.get("spec"))
    status = _map(obj.get("status"))
    claim = spec.get("claimRef")
    claim_text = ""
    if isinstance(claim, dict):
        claim_text = f"{_str(claim.get('namespace'))}/{_str(claim.get('name'))}"
    phase = "Terminating" if _deleting(obj) else _str(status.get("phase"))
    mode = spec.get("volumeMode")
    vac = spec.get("volumeAttributesClassName")
    return [
        _name(obj),
        _qty_or_zero(_map(spec.get("capacity")).get("storage")),
        _access_modes(spec.get("accessModes")),
        _str(spec.get("persistentVolumeReclaimPolicy")),
        phase,
        claim_text,
        _storage_class_of(obj),
        _str(vac) if vac is not None else "<unset>",
        _str(status.get("reason")),
        _age(obj, now),
        _str(mode) if mode is not None else "<unset>",
    ]


def _pvc_cells(obj: dict[str, Any], now: datetime.datetime) -> list[Any]:
    spec = _map(obj.get("spec"))
    status = _map(obj.get("status"))
    phase = "Terminating" if _deleting(obj) else _str(status.get("phase"))
    capacity = ""
    access = ""
    if _str(spec.get("volumeName")):
        access = _access_modes(status.get("accessModes"))
        capacity = _qty_or_zero(_map(status.get("capacity")).get("storage"))
    mode = spec.get("volumeMode")
    vac = spec.get("volumeAttributesClassName")
    return [
        _name(obj),
        phase,
        _str(spec.get("volumeName")),
        capacity,
        access,
        _storage_class_of(obj),
        _str(vac) if vac is not None else "<unset>",
        _age(obj, now),
        _str(mode) if mode is not None else "<unset>",
    ]


def _resource_quota_cells(obj: dict[str, Any], now: datetime.datetime) -> list[Any]:
    status = _map(obj.get("status"))
    hard = _map(status.get("hard"))
    used = _map(status.get("used"))
    requests: list[str] = []
    limits: list[str] = []
    for resource in sorted(hard):
        pieces = resource.split(".")
        column = limits if len(pieces) > 1 and pieces[0] == "limits" else requests
        column.append(f"{resource}: {_qty_or_zero(used.get(resource))}/{_qty(hard[resource])}")
    return [_name(obj), ", ".join(requests), ", ".join(limits), _age(obj, now)]


def _deployment_cells(obj: dict[str, Any], now: datetime.datetime) -> list[Any]:
    spec = _map(obj.get("spec"))
    status = _map(obj.get("status"))
    names, images = _containers(_get(spec, "template", "spec"))
    selector = _selector_string(spec.get("selector"))
    return [
        _name(obj),
        f"{_int(status.get('readyReplicas'))}/{_int(spec.get('replicas'), 1)}",
        _int(status.get("updatedReplicas")),
        _int(status.get("availableReplicas")),
        _age(obj, now),
        names,
        images,
        "<invalid>" if selector is None else selector,
    ]


def _hpa_metric(spec: dict[str, Any], status: dict[str, Any] | None) -> str:
    """One entry of upstream ``formatHPAMetrics``."""
    kind = spec.get("type")

    def current_of(source: str) -> dict[str, Any] | None:
        found = status.get(source) if status is not None else None
        return _map(found.get("current")) if isinstance(found, dict) else None

    if kind in ("External", "Object"):
        source = "external" if kind == "External" else "object"
        target = _map(_get(spec, source, "target"))
        current = current_of(source)
        if target.get("averageValue") is not None:
            text = "<unknown>"
            if current is not None and current.get("averageValue") is not None:
                text = _qty(current.get("averageValue"))
            return f"{text}/{_qty(target.get('averageValue'))} (avg)"
        text = "<unknown>" if current is None else _qty(current.get("value"))
        return f"{text}/{_qty(target.get('value'))}"
    if kind == "Pods":
        current = current_of("pods")
        text = "<unknown>" if current is None else _qty(current.get("averageValue"))
        return f"{text}/{_qty(_get(spec, 'pods', 'target', 'averageValue'))}"
    if kind in ("Resource", "ContainerResource"):
        source = "resource" if kind == "Resource" else "containerResource"
        name = _str(_get(spec, source, "name"))
        target = _map(_get(spec, source, "target"))
        current = current_of(source)
        if target.get("averageValue") is not None:
            text = "<unknown>" if current is None else _qty(current.get("averageValue"))
            return f"{name}: {text}/{_qty(target.get('averageValue'))}"
        text = "<unknown>"
        if current is not None and current.get("averageUtilization") is not None:
            text = f"{_int(current.get('averageUtilization'))}%"
        goal = "<auto>"
        if target.get("averageUtilization") is not None:
            goal = f"{_int(target.get('averageUtilization'))}%"
        return f"{name}: {text}/{goal}"
    return "<unknown type>"


def _hpa_metrics(spec: dict[str, Any], status: dict[str, Any]) -> str:
    metrics = _maps(spec.get("metrics"))
    statuses = _list(status.get("currentMetrics"))
    if not metrics and spec.get("targetCPUUtilizationPercentage") is not None:
        # autoscaling/v1 shape: the internal version carries it as a cpu Resource metric.
        metrics = [
            {
                "type": "Resource",
                "resource": {
                    "name": "cpu",
                    "target": {
                        "type": "Utilization",
                        "averageUtilization": spec["targetCPUUtilizationPercentage"],
                    },
                },
            }
        ]
        current = status.get("currentCPUUtilizationPercentage")
        if current is not None:
            statuses = [
                {
                    "type": "Resource",
                    "resource": {"name": "cpu", "current": {"averageUtilization": current}},
                }
            ]
    if not metrics:
        return "<none>"
    entries = []
    for i, metric in enumerate(metrics):
        metric_status = statuses[i] if i < len(statuses) and isinstance(statuses[i], dict) else None
        entries.append(_hpa_metric(metric, metric_status))
    limit = 2
    if len(entries) > limit:
        return f"{', '.join(entries[:limit])} + {len(entries) - limit} more..."
    return ", ".join(entries)


def _hpa_cells(obj: dict[str, Any], now: datetime.datetime) -> list[Any]:
    spec = _map(obj.get("spec"))
    status = _map(obj.get("status"))
    ref = _map(spec.get("scaleTargetRef"))
    min_replicas = spec.get("minReplicas")
    return [
        _name(obj),
        f"{_str(ref.get('kind'))}/{_str(ref.get('name'))}",
        _hpa_metrics(spec, status),
        "<unset>" if min_replicas is None else str(_int(min_replicas)),
        _int(spec.get("maxReplicas")),
        _int(status.get("currentReplicas")),
        _age(obj, now),
    ]


def _network_policy_cells(obj: dict[str, Any], now: datetime.datetime) -> list[Any]:
    # podSelector is a value, not a pointer, upstream: absent means "everything".
    selector = _get(obj, "spec", "podSelector")
    return [_name(obj), _format_selector(selector if selector is not None else {}), _age(obj, now)]


def _subjects(subjects: Any) -> tuple[str, str, str]:
    """``rbac.SubjectsStrings``: users, groups and ``namespace/name`` service accounts."""
    users: list[str] = []
    groups: list[str] = []
    accounts: list[str] = []
    for subject in _maps(subjects):
        kind = subject.get("kind")
        if kind == "ServiceAccount":
            accounts.append(f"{_str(subject.get('namespace'))}/{_str(subject.get('name'))}")
        elif kind == "User":
            users.append(_str(subject.get("name")))
        elif kind == "Group":
            groups.append(_str(subject.get("name")))
    return ", ".join(users), ", ".join(groups), ", ".join(accounts)


def _binding_cells(obj: dict[str, Any], now: datetime.datetime) -> list[Any]:
    ref = _map(obj.get("roleRef"))
    users, groups, accounts = _subjects(obj.get("subjects"))
    return [
        _name(obj),
        f"{_str(ref.get('kind'))}/{_str(ref.get('name'))}",
        _age(obj, now),
        users,
        groups,
        accounts,
    ]


def _csr_status(status: dict[str, Any]) -> str:
    types = {c.get("type") for c in _maps(status.get("conditions"))}
    if "Denied" in types:
        text = "Denied"
    elif "Approved" in types:
        text = "Approved"
    else:
        text = "Pending"
    if "Failed" in types:
        text += ",Failed"
    if _str(status.get("certificate")):
        text += ",Issued"
    return text


def _csr_cells(obj: dict[str, Any], now: datetime.datetime) -> list[Any]:
    spec = _map(obj.get("spec"))
    expiration = spec.get("expirationSeconds")
    return [
        _name(obj),
        _age(obj, now),
        _str(spec.get("signerName")) or "<none>",
        _str(spec.get("username")),
        "<none>"
        if expiration is None
        else human_duration(datetime.timedelta(seconds=_int(expiration))),
        _csr_status(_map(obj.get("status"))),
    ]


_INSTANCE_COLUMNS = (
    _NAME,
    _c("Instance", description="Instance ID at the provider."),
    _c("Spec", description="Catalogue spec the pod was rounded up to."),
    _c("Zone", description="Zone the instance runs in."),
    _c("Capacity", description="on-demand or spot."),
    _c("State", description="Instance state."),
    _c("Price/h", description="Hourly price in force."),
    _AGE,
    _c("IP", description="Pod IP.", priority=1),
    _c("Provider", description="Provider running the instance.", priority=1),
)


def _instance_cells(obj: dict[str, Any], now: datetime.datetime) -> list[Any]:
    """nodeless.dev Instance records: what a pod runs on and what it costs."""
    return [
        _name(obj),
        _str(_get(obj, "spec", "instanceID")),
        _str(_get(obj, "spec", "instanceSpec")),
        _str(_get(obj, "spec", "zone")),
        _str(_get(obj, "spec", "capacityType")),
        _str(_get(obj, "status", "state")),
        _str(_get(obj, "spec", "hourlyPrice")),
        _age(obj, now),
        _str(_get(obj, "status", "ip")) or "<none>",
        _str(_get(obj, "spec", "provider")),
    ]


_IMAGE_CACHE_COLUMNS = (
    _NAME,
    _c("Phase", description="Pending, Creating, Ready, Failed or Expired."),
    _c("Progress", description="Images pulled of those listed."),
    _AGE,
    _c("Expire", description="When the cache expires (retentionDays)."),
)


def _image_cache_cells(obj: dict[str, Any], now: datetime.datetime) -> list[Any]:
    return [
        _name(obj),
        _str(_get(obj, "status", "phase")) or "Pending",
        _str(_get(obj, "status", "progress")) or "<none>",
        _age(obj, now),
        _str(_get(obj, "status", "expireDateTime")) or "<none>",
    ]


_BILLING_RECORD_COLUMNS = (
    _NAME,
    _c("Namespace", description="Namespace of the pod the instance ran."),
    _c("Pod", description="The pod."),
    _c("Workload", description="Top of the pod's owner chain."),
    _c("Spec", description="Catalogue spec billed."),
    _c("Capacity", description="on-demand or spot."),
    _c("Seconds", "integer", description="Instance-seconds billed."),
    _c("Cost", description="What they cost, in the catalogue's currency."),
    _AGE,
)


def _billing_record_cells(obj: dict[str, Any], now: datetime.datetime) -> list[Any]:
    """nodeless.dev BillingRecords: one ended instance's bill."""
    labels = _map(_get(obj, "metadata", "labels"))
    return [
        _name(obj),
        _str(labels.get("nodeless.dev/namespace")),
        _str(labels.get("nodeless.dev/pod")),
        _str(labels.get("nodeless.dev/workload")) or "<none>",
        _str(_get(obj, "spec", "instanceSpec")),
        _str(_get(obj, "spec", "capacityType")),
        _int(_get(obj, "status", "seconds")),
        f"{_str(_get(obj, 'status', 'cost'))} {_str(_get(obj, 'spec', 'currency'))}".strip(),
        _age(obj, now),
    ]


def _lease_cells(obj: dict[str, Any], now: datetime.datetime) -> list[Any]:
    return [_name(obj), _str(_get(obj, "spec", "holderIdentity")), _age(obj, now)]


def _storage_class_cells(obj: dict[str, Any], now: datetime.datetime) -> list[Any]:
    annotations = _map(_get(obj, "metadata", "annotations"))
    default = (
        annotations.get("storageclass.kubernetes.io/is-default-class") == "true"
        or annotations.get("storageclass.beta.kubernetes.io/is-default-class") == "true"
    )
    name = _name(obj) + (" (default)" if default else "")
    reclaim = obj.get("reclaimPolicy")
    binding = obj.get("volumeBindingMode")
    return [
        name,
        _str(obj.get("provisioner")),
        _str(reclaim) if reclaim is not None else "Delete",
        _str(binding) if binding is not None else "Immediate",
        obj.get("allowVolumeExpansion") is True,
        _age(obj, now),
    ]


def _controller_revision_cells(obj: dict[str, Any], now: datetime.datetime) -> list[Any]:
    controller = "<none>"
    for ref in _maps(_get(obj, "metadata", "ownerReferences")):
        if ref.get("controller") is True:
            api_version = _str(ref.get("apiVersion"))
            group = api_version.split("/", 1)[0] if "/" in api_version else ""
            kind = _str(ref.get("kind"))
            group_kind = f"{kind}.{group}" if group else kind
            controller = _str(ref.get("name"))
            if group_kind:
                controller = f"{group_kind.lower()}/{controller}"
            break
    return [_name(obj), controller, _int(obj.get("revision")), _age(obj, now)]


def _priority_class_cells(obj: dict[str, Any], now: datetime.datetime) -> list[Any]:
    return [
        _name(obj),
        _int(obj.get("value")),
        obj.get("globalDefault") is True,
        _age(obj, now),
        _str(obj.get("preemptionPolicy")),
    ]


def _runtime_class_cells(obj: dict[str, Any], now: datetime.datetime) -> list[Any]:
    return [_name(obj), _str(obj.get("handler")), _age(obj, now)]


def _volume_attachment_cells(obj: dict[str, Any], now: datetime.datetime) -> list[Any]:
    spec = _map(obj.get("spec"))
    return [
        _name(obj),
        _str(spec.get("attacher")),
        _str(_get(spec, "source", "persistentVolumeName")),
        _str(spec.get("nodeName")),
        _get(obj, "status", "attached") is True,
        _age(obj, now),
    ]


def _csi_node_cells(obj: dict[str, Any], now: datetime.datetime) -> list[Any]:
    return [_name(obj), len(_list(_get(obj, "spec", "drivers"))), _age(obj, now)]


def _csi_driver_cells(obj: dict[str, Any], now: datetime.datetime) -> list[Any]:
    spec = _map(obj.get("spec"))
    tokens = spec.get("tokenRequests")
    token_text = "<unset>"
    if tokens is not None:
        token_text = ",".join(_str(t.get("audience")) for t in _maps(tokens))
    modes = ",".join(_str(m) for m in _list(spec.get("volumeLifecycleModes")))
    return [
        _name(obj),
        spec.get("attachRequired") is not False,
        spec.get("podInfoOnMount") is True,
        spec.get("storageCapacity") is True,
        token_text,
        spec.get("requiresRepublish") is True,
        modes or "<none>",
        _age(obj, now),
    ]


def _webhook_cells(obj: dict[str, Any], now: datetime.datetime) -> list[Any]:
    return [_name(obj), len(_list(obj.get("webhooks"))), _age(obj, now)]


def _vap_cells(obj: dict[str, Any], now: datetime.datetime) -> list[Any]:
    spec = _map(obj.get("spec"))
    param_kind = spec.get("paramKind")
    text = "<unset>"
    if isinstance(param_kind, dict):
        text = f"{_str(param_kind.get('apiVersion'))}/{_str(param_kind.get('kind'))}"
    return [_name(obj), len(_list(spec.get("validations"))), text, _age(obj, now)]


def _vap_binding_cells(obj: dict[str, Any], now: datetime.datetime) -> list[Any]:
    spec = _map(obj.get("spec"))
    ref = spec.get("paramRef")
    text = "<unset>"
    if isinstance(ref, dict):
        if _str(ref.get("name")):
            namespace = _str(ref.get("namespace"))
            # Cluster-scoped params cannot be told apart here, so nameless namespaces print "*".
            text = f"{namespace or '*'}/{_str(ref.get('name'))}"
        elif isinstance(ref.get("selector"), dict):
            text = _gogo_selector(ref["selector"])
    return [_name(obj), _str(spec.get("policyName")), text, _age(obj, now)]


def _gogo_selector(selector: dict[str, Any]) -> str:
    """The generated ``(*metav1.LabelSelector).String()`` upstream prints for a ParamRef selector."""
    labels = _map(selector.get("matchLabels"))
    label_text = "".join(f"{k}: {_go_text(labels[k])}," for k in sorted(labels))
    expressions = "".join(
        f"LabelSelectorRequirement{{Key:{_str(e.get('key'))},Operator:{_str(e.get('operator'))},"
        f"Values:[{' '.join(_str(v) for v in _list(e.get('values')))}],}},"
        for e in _maps(selector.get("matchExpressions"))
    )
    return (
        f"&LabelSelector{{MatchLabels:map[string]string{{{label_text}}},"
        f"MatchExpressions:[]LabelSelectorRequirement{{{expressions}}},}}"
    )


def _flow_schema_cells(obj: dict[str, Any], now: datetime.datetime) -> list[Any]:
    spec = _map(obj.get("spec"))
    method = spec.get("distinguisherMethod")
    missing = "?"
    for condition in _maps(_get(obj, "status", "conditions")):
        if condition.get("type") == "Dangling":
            missing = _str(condition.get("status"))
            break
    return [
        _name(obj),
        _str(_get(spec, "priorityLevelConfiguration", "name")),
        _int(spec.get("matchingPrecedence")),
        _str(_get(method, "type")) if isinstance(method, dict) else "<none>",
        _age(obj, now),
        missing,
    ]


def _priority_level_cells(obj: dict[str, Any], now: datetime.datetime) -> list[Any]:
    spec = _map(obj.get("spec"))
    limited = spec.get("limited")
    shares: Any = "<none>"
    queues: Any = "<none>"
    hand_size: Any = "<none>"
    queue_length: Any = "<none>"
    if isinstance(limited, dict):
        shares = _int(
            limited.get("nominalConcurrencyShares", limited.get("assuredConcurrencyShares"))
        )
        queuing = _get(limited, "limitResponse", "queuing")
        if isinstance(queuing, dict):
            queues = _int(queuing.get("queues"))
            hand_size = _int(queuing.get("handSize"))
            queue_length = _int(queuing.get("queueLengthLimit"))
    return [
        _name(obj),
        _str(spec.get("type")),
        shares,
        queues,
        hand_size,
        queue_length,
        _age(obj, now),
    ]


@dataclass(frozen=True)
class _Printer:
    columns: tuple[Column, ...]
    cells: _Cells


_DEFAULT = _Printer(_DEFAULT_COLUMNS, _default_cells)

_PRINTERS: dict[tuple[str, str], _Printer] = {
    ("", "Pod"): _Printer(_POD_COLUMNS, _pod_cells),
    ("", "PodTemplate"): _Printer(_POD_TEMPLATE_COLUMNS, _pod_template_cells),
    ("", "ReplicationController"): _Printer(_REPLICA_COLUMNS, _replication_controller_cells),
    ("", "Service"): _Printer(_SERVICE_COLUMNS, _service_cells),
    ("", "Endpoints"): _Printer(_ENDPOINTS_COLUMNS, _endpoints_cells),
    ("", "Node"): _Printer(_NODE_COLUMNS, _node_cells),
    ("", "Namespace"): _Printer(_NAMESPACE_COLUMNS, _namespace_cells),
    ("", "Event"): _Printer(_EVENT_COLUMNS, _event_cells),
    ("", "Secret"): _Printer(_SECRET_COLUMNS, _secret_cells),
    ("", "ConfigMap"): _Printer(_CONFIG_MAP_COLUMNS, _config_map_cells),
    ("", "ServiceAccount"): _Printer(_SERVICE_ACCOUNT_COLUMNS, _service_account_cells),
    ("", "PersistentVolume"): _Printer(_PV_COLUMNS, _pv_cells),
    ("", "PersistentVolumeClaim"): _Printer(_PVC_COLUMNS, _pvc_cells),
    ("", "ResourceQuota"): _Printer(_RESOURCE_QUOTA_COLUMNS, _resource_quota_cells),
    ("apps", "Deployment"): _Printer(_DEPLOYMENT_COLUMNS, _deployment_cells),
    ("apps", "ReplicaSet"): _Printer(_REPLICA_COLUMNS, _replica_set_cells),
    ("apps", "StatefulSet"): _Printer(_STATEFUL_SET_COLUMNS, _stateful_set_cells),
    ("apps", "DaemonSet"): _Printer(_DAEMON_SET_COLUMNS, _daemon_set_cells),
    ("apps", "ControllerRevision"): _Printer(
        _CONTROLLER_REVISION_COLUMNS, _controller_revision_cells
    ),
    ("batch", "Job"): _Printer(_JOB_COLUMNS, _job_cells),
    ("batch", "CronJob"): _Printer(_CRON_JOB_COLUMNS, _cron_job_cells),
    ("autoscaling", "HorizontalPodAutoscaler"): _Printer(_HPA_COLUMNS, _hpa_cells),
    ("networking.k8s.io", "Ingress"): _Printer(_INGRESS_COLUMNS, _ingress_cells),
    ("networking.k8s.io", "IngressClass"): _Printer(_INGRESS_CLASS_COLUMNS, _ingress_class_cells),
    ("networking.k8s.io", "IPAddress"): _Printer(_IP_ADDRESS_COLUMNS, _ip_address_cells),
    ("networking.k8s.io", "ServiceCIDR"): _Printer(_SERVICE_CIDR_COLUMNS, _service_cidr_cells),
    ("networking.k8s.io", "NetworkPolicy"): _Printer(
        _NETWORK_POLICY_COLUMNS, _network_policy_cells
    ),
    ("policy", "PodDisruptionBudget"): _Printer(_PDB_COLUMNS, _pdb_cells),
    ("coordination.k8s.io", "Lease"): _Printer(_LEASE_COLUMNS, _lease_cells),
    ("nodeless.dev", "Instance"): _Printer(_INSTANCE_COLUMNS, _instance_cells),
    ("nodeless.dev", "BillingRecord"): _Printer(_BILLING_RECORD_COLUMNS, _billing_record_cells),
    ("nodeless.dev", "ImageCache"): _Printer(_IMAGE_CACHE_COLUMNS, _image_cache_cells),
    ("events.k8s.io", "Event"): _Printer(_EVENT_COLUMNS, _events_v1_cells),
    ("discovery.k8s.io", "EndpointSlice"): _Printer(_ENDPOINT_SLICE_COLUMNS, _endpoint_slice_cells),
    ("rbac.authorization.k8s.io", "RoleBinding"): _Printer(_ROLE_BINDING_COLUMNS, _binding_cells),
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"): _Printer(
        _CLUSTER_ROLE_BINDING_COLUMNS, _binding_cells
    ),
    ("storage.k8s.io", "StorageClass"): _Printer(_STORAGE_CLASS_COLUMNS, _storage_class_cells),
    ("storage.k8s.io", "VolumeAttachment"): _Printer(
        _VOLUME_ATTACHMENT_COLUMNS, _volume_attachment_cells
    ),
    ("storage.k8s.io", "CSINode"): _Printer(_CSI_NODE_COLUMNS, _csi_node_cells),
    ("storage.k8s.io", "CSIDriver"): _Printer(_CSI_DRIVER_COLUMNS, _csi_driver_cells),
    ("scheduling.k8s.io", "PriorityClass"): _Printer(
        _PRIORITY_CLASS_COLUMNS, _priority_class_cells
    ),
    ("node.k8s.io", "RuntimeClass"): _Printer(_RUNTIME_CLASS_COLUMNS, _runtime_class_cells),
    ("certificates.k8s.io", "CertificateSigningRequest"): _Printer(_CSR_COLUMNS, _csr_cells),
    ("admissionregistration.k8s.io", "MutatingWebhookConfiguration"): _Printer(
        _WEBHOOK_COLUMNS, _webhook_cells
    ),
    ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration"): _Printer(
        _WEBHOOK_COLUMNS, _webhook_cells
    ),
    ("admissionregistration.k8s.io", "ValidatingAdmissionPolicy"): _Printer(
        _VAP_COLUMNS, _vap_cells
    ),
    ("admissionregistration.k8s.io", "ValidatingAdmissionPolicyBinding"): _Printer(
        _VAP_BINDING_COLUMNS, _vap_binding_cells
    ),
    ("flowcontrol.apiserver.k8s.io", "FlowSchema"): _Printer(
        _FLOW_SCHEMA_COLUMNS, _flow_schema_cells
    ),
    ("flowcontrol.apiserver.k8s.io", "PriorityLevelConfiguration"): _Printer(
        _PRIORITY_LEVEL_COLUMNS, _priority_level_cells
    ),
}
"""Kinds with an upstream printer. Role, ClusterRole, LimitRange and
CustomResourceDefinition are deliberately absent: upstream serves them with the
default convertor (Name, Created At), and so do we."""


def columns_for(group: str, kind: str) -> list[Column]:
    """The column definitions upstream serves for ``group``/``kind`` (``""`` is core)."""
    return list(_PRINTERS.get((group, kind), _DEFAULT).columns)


def cells_for(group: str, kind: str, obj: dict[str, Any], now: datetime.datetime) -> list[Any]:
    """One row's cells, one per :func:`columns_for` column, wide columns included."""
    return _PRINTERS.get((group, kind), _DEFAULT).cells(obj, now)


# --------------------------------------------------------------------------
# Custom resources: additionalPrinterColumns and their JSONPath
# --------------------------------------------------------------------------

_DEFAULT_PRINTER_COLUMNS: list[dict[str, Any]] = [
    {
        "name": "Age",
        "type": "date",
        "description": _AGE_DESC,
        "jsonPath": ".metadata.creationTimestamp",
    }
]


def _printer_columns(printer_columns: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """upstream ``serveDefaultColumnsIfEmpty``: no columns means a single Age column."""
    return printer_columns if printer_columns else _DEFAULT_PRINTER_COLUMNS


def custom_columns(printer_columns: list[dict[str, Any]]) -> list[Column]:
    """Columns for a CRD version: Name, then its ``additionalPrinterColumns``."""
    columns = [_NAME]
    for col in _printer_columns(printer_columns):
        json_path = _str(col.get("jsonPath"))
        description = _str(col.get("description")) or (
            f"Custom resource definition column (in JSONPath format): {json_path}"
        )
        columns.append(
            Column(
                name=_str(col.get("name")),
                type=_str(col.get("type")),
                format=_str(col.get("format")),
                description=description,
                priority=_int(col.get("priority")),
            )
        )
    return columns


def custom_cells(
    printer_columns: list[dict[str, Any]], obj: dict[str, Any], now: datetime.datetime
) -> list[Any]:
    """Cells for a custom resource, as ``apiextensions-apiserver``'s table convertor makes them.

    Only the first JSONPath match is shown. ``string`` columns print any value
    (objects and lists as compact JSON); other types must match or the cell is
    null; ``date`` columns become an age like every other Age column, because
    kubectl prints cells verbatim.
    """
    cells: list[Any] = [_name(obj)]
    for col in _printer_columns(printer_columns):
        try:
            results = _jsonpath_find(_str(col.get("jsonPath")), obj)
        except _JSONPathError:
            results = []
        if not results or results[0] is None:
            cells.append(None)
            continue
        value = results[0]
        if col.get("type") == "string":
            cells.append(_go_text(value))
        else:
            cells.append(_typed_cell(_str(col.get("type")), value, now))
    return cells


def _typed_cell(type_: str, value: Any, now: datetime.datetime) -> Any:
    """upstream ``cellForJSONValue``: the value if it fits the column type, else null."""
    if type_ == "integer":
        if isinstance(value, int | float) and not isinstance(value, bool):
            return int(value)
    elif type_ == "number":
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif type_ == "boolean":
        if isinstance(value, bool):
            return value
    elif type_ == "date":
        if isinstance(value, str):
            if value in ("", "null"):
                return "<unknown>"
            when = _parse_time(value)
            if when is None:
                return "<invalid>"
            return human_duration(_aware(now) - when)
    return None


def _go_float(value: float) -> str:
    """Go's ``%v`` for a float64 (``strconv`` ``'g'``, shortest): ``1.5``, ``1e+06``, ``1e-05``."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    sign = "-" if value < 0 else ""
    parts = decimal.Decimal(repr(abs(value))).normalize().as_tuple()
    digits = "".join(str(d) for d in parts.digits)
    exponent = int(parts.exponent)
    point = len(digits) + exponent  # position of the decimal point within digits
    exp10 = point - 1
    if exp10 < -4 or exp10 >= 6:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{sign}{mantissa}e{'-' if exp10 < 0 else '+'}{abs(exp10):02d}"
    if point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return f"{sign}{digits}{'0' * (point - len(digits))}"
    return f"{sign}{digits[:point]}.{digits[point:]}"


def _go_json(value: Any) -> str:
    """Go's ``json.Marshal``: compact, map keys sorted, HTML characters escaped."""
    text = json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    return (
        text.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def _go_text(value: Any) -> str:
    """How client-go's JSONPath ``PrintResults`` renders one value."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _go_float(value)
    return _go_json(value)


class _JSONPathError(ValueError):
    """A path the simple evaluator cannot parse; the column's cell is then null."""


@dataclass(frozen=True)
class _Field:
    name: str


@dataclass(frozen=True)
class _Wildcard:
    pass


@dataclass(frozen=True)
class _Slice:
    start: int | None
    end: int | None
    step: int | None
    single: bool


@dataclass(frozen=True)
class _Filter:
    left: tuple[_Field | _Slice | _Wildcard, ...]
    op: str
    right: Any


_Step = _Field | _Wildcard | _Slice | _Filter

_FILTER = re.compile(
    r"^\s*@((?:\.[^\s=!<>]+)*)\s*(?:(==|!=|<=|>=|<|>)\s*(.+?))?\s*$",
    re.DOTALL,
)


def _parse_literal(text: str) -> Any:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    if text in ("true", "false"):
        return text == "true"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError as exc:
        raise _JSONPathError(f"bad literal {text!r}") from exc


def _parse_jsonpath(path: str) -> list[_Step]:
    """Parse the simple JSONPath CRDs use: fields, indexes, slices, ``*`` and filters."""
    path = path.strip()
    if path.startswith("{") and path.endswith("}"):
        path = path[1:-1].strip()
    if path.startswith("$"):
        path = path[1:]
    if path and path[0] not in ".[":
        path = "." + path
    steps: list[_Step] = []
    i = 0
    while i < len(path):
        char = path[i]
        if char == ".":
            i += 1
            if i < len(path) and path[i] == ".":
                raise _JSONPathError("recursive descent is not supported")
            name = []
            while i < len(path) and path[i] not in ".[":
                if path[i] == "\\" and i + 1 < len(path):
                    i += 1
                name.append(path[i])
                i += 1
            text = "".join(name)
            if text == "*":
                steps.append(_Wildcard())
            elif text:
                steps.append(_Field(text))
        elif char == "[":
            depth = 0
            j = i
            quote = ""
            while j < len(path):
                c = path[j]
                if quote:
                    if c == quote:
                        quote = ""
                elif c in "'\"":
                    quote = c
                elif c == "[":
                    depth += 1
                elif c == "]":
                    depth -= 1
                    if depth == 0:
                        break
                j += 1
            if j >= len(path):
                raise _JSONPathError("unterminated [")
            steps.append(_parse_bracket(path[i + 1 : j].strip()))
            i = j + 1
        else:
            raise _JSONPathError(f"unexpected {char!r}")
    return steps


def _parse_bracket(inner: str) -> _Step:
    if inner == "*":
        return _Wildcard()
    if inner.startswith("?"):
        expr = inner[1:].strip()
        if not (expr.startswith("(") and expr.endswith(")")):
            raise _JSONPathError("bad filter")
        match = _FILTER.match(expr[1:-1])
        if match is None:
            raise _JSONPathError("bad filter")
        left_path, op, right = match.groups()
        left = tuple(
            step for step in _parse_jsonpath(left_path or "") if not isinstance(step, _Filter)
        )
        return _Filter(left, op or "", _parse_literal(right.strip()) if op else None)
    if len(inner) >= 2 and inner[0] == inner[-1] and inner[0] in "'\"":
        return _Field(inner[1:-1])
    parts = inner.split(":")
    if len(parts) > 3:
        raise _JSONPathError("bad slice")
    try:
        numbers = [int(p) if p.strip() else None for p in parts]
    except ValueError as exc:
        raise _JSONPathError(f"bad index {inner!r}") from exc
    if len(parts) == 1:
        return _Slice(numbers[0], None, None, single=True)
    return _Slice(numbers[0], numbers[1], numbers[2] if len(numbers) > 2 else None, single=False)


def _apply(step: _Step, value: Any) -> list[Any]:
    """One step over one value; missing keys yield nothing (``AllowMissingKeys``)."""
    if isinstance(step, _Field):
        if isinstance(value, dict) and step.name in value:
            return [value[step.name]]
        return []
    if isinstance(step, _Wildcard):
        if isinstance(value, dict):
            return [value[k] for k in sorted(value)]
        if isinstance(value, list):
            return list(value)
        return []
    if isinstance(step, _Slice):
        if not isinstance(value, list):
            raise _JSONPathError("not an array")
        if step.single:
            index = step.start if step.start is not None else 0
            if index < 0:
                index += len(value)
            if not 0 <= index < len(value):
                raise _JSONPathError("array index out of bounds")
            return [value[index]]
        return list(value[step.start : step.end : step.step])
    items = value if isinstance(value, list) else []
    return [item for item in items if _matches(step, item)]


def _matches(step: _Filter, item: Any) -> bool:
    found = [item]
    for left in step.left:
        found = [out for value in found for out in _apply(left, value)]
    if not found:
        return False
    if not step.op:
        return True
    left_value = found[0]
    right = step.right
    numeric = (
        isinstance(left_value, int | float)
        and not isinstance(left_value, bool)
        and isinstance(right, int | float)
        and not isinstance(right, bool)
    )
    if step.op == "==":
        return bool(left_value == right) and (numeric or type(left_value) is type(right))
    if step.op == "!=":
        return not (bool(left_value == right) and (numeric or type(left_value) is type(right)))
    if numeric or (isinstance(left_value, str) and isinstance(right, str)):
        if step.op == "<":
            return bool(left_value < right)
        if step.op == ">":
            return bool(left_value > right)
        if step.op == "<=":
            return bool(left_value <= right)
        return bool(left_value >= right)
    return False


def _jsonpath_find(path: str, obj: Any) -> list[Any]:
    """Every value ``path`` reaches in ``obj``, in document order."""
    found = [obj]
    for step in _parse_jsonpath(path):
        found = [out for value in found for out in _apply(step, value)]
    return found


# --------------------------------------------------------------------------
# The Table itself
# --------------------------------------------------------------------------

_POD_COMPLETED = {
    "Succeeded": {
        "type": "Completed",
        "status": "True",
        "reason": "Succeeded",
        "message": "The pod has completed successfully.",
    },
    "Failed": {
        "type": "Completed",
        "status": "True",
        "reason": "Failed",
        "message": "The pod failed.",
    },
}


def _row_conditions(obj: dict[str, Any]) -> list[dict[str, Any]]:
    """Upstream marks finished pods' rows ``Completed``; nothing else carries conditions."""
    if obj.get("kind") == "Pod" and obj.get("apiVersion") == "v1":
        condition = _POD_COMPLETED.get(_str(_get(obj, "status", "phase")))
        if condition is not None:
            return [dict(condition)]
    return []


def table(
    columns: list[Column],
    rows: list[tuple[list[Any], dict[str, Any]]],
    resource_version: str,
    continue_token: str = "",
    remaining: int | None = None,
    include_object: str = "Metadata",
) -> dict[str, Any]:
    """A ``meta.k8s.io/v1`` Table for ``rows`` of ``(cells, object)``.

    ``include_object`` follows ``TableOptions.includeObject``: ``Metadata`` (the
    default) embeds a ``PartialObjectMetadata``, ``Object`` the whole object,
    ``None`` nothing.
    """
    metadata: dict[str, Any] = {"resourceVersion": resource_version}
    if continue_token:
        metadata["continue"] = continue_token
    if remaining is not None:
        metadata["remainingItemCount"] = remaining
    out_rows: list[dict[str, Any]] = []
    for cells, obj in rows:
        row: dict[str, Any] = {"cells": list(cells)}
        conditions = _row_conditions(obj)
        if conditions:
            row["conditions"] = conditions
        if include_object == "Object":
            row["object"] = obj
        elif include_object != "None":
            row["object"] = {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": _map(obj.get("metadata")),
            }
        out_rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": [column.to_dict() for column in columns],
        "rows": out_rows,
    }
