"""Decode Kubernetes protobuf request bodies into the JSON-shaped objects the API works with.

kubectl's typed clients (``kubectl create configmap``, ``run``, ``auth can-i``,
``drain``, ``create token`` ...) send built-in kinds as
``application/vnd.kubernetes.protobuf``. The server speaks JSON everywhere else,
so a protobuf body is turned into exactly the dict its JSON encoding would have
parsed to and goes down the same path; responses stay JSON, which client-go
accepts.

The wire format: the 4-byte magic ``k8s\\x00`` and a ``runtime.Unknown`` message
whose ``typeMeta`` names the apiVersion and kind and whose ``raw`` holds the
object. Field numbers come from upstream's ``generated.proto`` files, compiled
by ``scripts/generate_protobuf_messages.py`` into ``protobuf_messages.json``;
no protobuf library is involved.

Zero values. Go's gogo-proto marshaller writes every non-pointer scalar even
when it is zero (``selfLink: ""``, ``generation: 0``, ``hostNetwork: false``)
while the JSON encoding omits them (``omitempty``). Protobuf cannot tell such a
zero from an explicit one, so the decoder follows what JSON would have said:

* a singular string, number, boolean or bytes field that is empty, zero or
  false is dropped, unless the Go field is a pointer (or lacks ``omitempty``)
  and its zero means something - ``replicas: 0``, ``automountServiceAccountToken:
  false``, ``gracePeriodSeconds: 0``, ``runAsUser: 0``; those are listed in
  ``_KEEP_ZERO``;
* a ``Time``/``MicroTime`` that is empty (Go's zero time, JSON ``null``) is
  dropped, as are an empty ``Quantity``, ``RawExtension`` and ``FieldsV1``;
* an ``IntOrString`` holding the integer 0 is dropped unless the Go field is a
  pointer (``maxUnavailable: 0`` is meaningful), listed in ``_KEEP_ZERO`` too;
* any other sub-message that is present becomes a dict even when empty, just
  as encoding/json always writes struct fields (``status: {}``,
  ``resources: {}``, ``emptyDir: {}``);
* list elements and map values are never dropped (``labels: {"a": ""}``).

Unknown field numbers are skipped, as protobuf requires, so newer clients that
send fields this table predates still decode.
"""

from __future__ import annotations

import base64
import json
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from importlib import resources
from typing import Any

from nodeless.api import errors

CONTENT_TYPE = "application/vnd.kubernetes.protobuf"
MAGIC = b"k8s\x00"

_META = "k8s.io.apimachinery.pkg.apis.meta.v1"
_APIEXT = "k8s.io.apiextensions_apiserver.pkg.apis.apiextensions.v1"
_MAX_DEPTH = 200
_INT_OR_STRING = "k8s.io.apimachinery.pkg.util.intstr.IntOrString"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_GO_ZERO_TIME_SECONDS = -62135596800  # 0001-01-01T00:00:00Z, Go's time.Time{}

_VARINT, _FIXED64, _LEN, _FIXED32 = 0, 1, 2, 5
_WIRE_TYPES = {
    "int32": _VARINT,
    "int64": _VARINT,
    "uint32": _VARINT,
    "uint64": _VARINT,
    "sint32": _VARINT,
    "sint64": _VARINT,
    "bool": _VARINT,
    "double": _FIXED64,
    "fixed64": _FIXED64,
    "sfixed64": _FIXED64,
    "float": _FIXED32,
    "fixed32": _FIXED32,
    "sfixed32": _FIXED32,
    "string": _LEN,
    "bytes": _LEN,
}

# "Message.field" (message short name) of scalars whose zero value is kept: Go pointers
# where nil and zero differ, and fields serialized without omitempty where zero is data.
_KEEP_ZERO = frozenset(
    {
        # core/v1
        "PodSpec.terminationGracePeriodSeconds",
        "PodSpec.activeDeadlineSeconds",
        "PodSpec.automountServiceAccountToken",
        "PodSpec.shareProcessNamespace",
        "PodSpec.priority",
        "PodSpec.enableServiceLinks",
        "PodSpec.setHostnameAsFQDN",
        "PodSpec.hostUsers",
        "SecurityContext.privileged",
        "SecurityContext.runAsUser",
        "SecurityContext.runAsGroup",
        "SecurityContext.runAsNonRoot",
        "SecurityContext.readOnlyRootFilesystem",
        "SecurityContext.allowPrivilegeEscalation",
        "PodSecurityContext.runAsUser",
        "PodSecurityContext.runAsGroup",
        "PodSecurityContext.runAsNonRoot",
        "PodSecurityContext.fsGroup",
        "WindowsSecurityContextOptions.hostProcess",
        "Probe.terminationGracePeriodSeconds",
        "ConfigMap.immutable",
        "Secret.immutable",
        "ConfigMapEnvSource.optional",
        "ConfigMapKeySelector.optional",
        "ConfigMapProjection.optional",
        "ConfigMapVolumeSource.optional",
        "SecretEnvSource.optional",
        "SecretKeySelector.optional",
        "SecretProjection.optional",
        "SecretVolumeSource.optional",
        "ClusterTrustBundleProjection.optional",
        "FileKeySelector.optional",
        "ConfigMapVolumeSource.defaultMode",
        "SecretVolumeSource.defaultMode",
        "DownwardAPIVolumeSource.defaultMode",
        "ProjectedVolumeSource.defaultMode",
        "KeyToPath.mode",
        "DownwardAPIVolumeFile.mode",
        "ServiceAccount.automountServiceAccountToken",
        "ServiceSpec.allocateLoadBalancerNodePorts",
        "ClientIPConfig.timeoutSeconds",
        "Toleration.tolerationSeconds",
        "ReplicationControllerSpec.replicas",
        "ServiceAccountTokenProjection.expirationSeconds",
        "PodCertificateProjection.maxExpirationSeconds",
        "TopologySpreadConstraint.minDomains",
        "CSIVolumeSource.readOnly",
        "AzureDiskVolumeSource.readOnly",
        "ContainerStatus.started",
        "ContainerStatus.ready",
        "ContainerStatus.restartCount",
        "ContainerStateTerminated.exitCode",
        "LinuxContainerUser.uid",
        "LinuxContainerUser.gid",
        "NodeFeatures.supplementalGroupsPolicy",
        "NodeRuntimeHandlerFeatures.recursiveReadOnlyMounts",
        "NodeRuntimeHandlerFeatures.userNamespaces",
        "DaemonEndpoint.Port",
        # apps/v1
        "DeploymentSpec.replicas",
        "DeploymentSpec.revisionHistoryLimit",
        "DeploymentSpec.progressDeadlineSeconds",
        "ReplicaSetSpec.replicas",
        "StatefulSetSpec.replicas",
        "StatefulSetSpec.revisionHistoryLimit",
        "DaemonSetSpec.revisionHistoryLimit",
        "RollingUpdateStatefulSetStrategy.partition",
        "RollingUpdateStatefulSetStrategy.maxUnavailable",
        "RollingUpdateDeployment.maxUnavailable",
        "RollingUpdateDeployment.maxSurge",
        "RollingUpdateDaemonSet.maxUnavailable",
        "RollingUpdateDaemonSet.maxSurge",
        "DeploymentStatus.collisionCount",
        "DaemonSetStatus.collisionCount",
        "StatefulSetStatus.collisionCount",
        # batch/v1
        "JobSpec.parallelism",
        "JobSpec.completions",
        "JobSpec.activeDeadlineSeconds",
        "JobSpec.backoffLimit",
        "JobSpec.backoffLimitPerIndex",
        "JobSpec.maxFailedIndexes",
        "JobSpec.manualSelector",
        "JobSpec.ttlSecondsAfterFinished",
        "JobSpec.suspend",
        "JobStatus.ready",
        "JobStatus.terminating",
        "SuccessPolicyRule.succeededCount",
        "CronJobSpec.startingDeadlineSeconds",
        "CronJobSpec.suspend",
        "CronJobSpec.successfulJobsHistoryLimit",
        "CronJobSpec.failedJobsHistoryLimit",
        # autoscaling
        "ScaleSpec.replicas",
        "HorizontalPodAutoscalerSpec.minReplicas",
        "HorizontalPodAutoscalerSpec.maxReplicas",
        "HorizontalPodAutoscalerSpec.targetCPUUtilizationPercentage",
        "HorizontalPodAutoscalerStatus.desiredReplicas",
        "HPAScalingRules.stabilizationWindowSeconds",
        "HPAScalingPolicy.value",
        "MetricTarget.averageUtilization",
        # policy/v1
        "PodDisruptionBudgetSpec.minAvailable",
        "PodDisruptionBudgetSpec.maxUnavailable",
        "PodDisruptionBudgetStatus.disruptionsAllowed",
        "PodDisruptionBudgetStatus.currentHealthy",
        "PodDisruptionBudgetStatus.desiredHealthy",
        "PodDisruptionBudgetStatus.expectedPods",
        # networking, coordination, discovery
        "NetworkPolicyPort.port",
        "NetworkPolicyPort.endPort",
        "LeaseSpec.leaseDurationSeconds",
        "LeaseSpec.leaseTransitions",
        "EndpointConditions.ready",
        "EndpointConditions.serving",
        "EndpointConditions.terminating",
        "EndpointPort.port",
        # storage, scheduling, authentication, authorization
        "CSIDriverSpec.attachRequired",
        "CSIDriverSpec.podInfoOnMount",
        "CSIDriverSpec.storageCapacity",
        "CSIDriverSpec.requiresRepublish",
        "CSIDriverSpec.seLinuxMount",
        "CSIDriverSpec.nodeAllocatableUpdatePeriodSeconds",
        "CSIDriverSpec.serviceAccountTokenInSecrets",
        "CSIDriverSpec.preventPodSchedulingIfMissing",
        "StorageClass.allowVolumeExpansion",
        "TokenRequest.expirationSeconds",
        "VolumeNodeResources.count",
        "VolumeAttachmentStatus.attached",
        "VolumeError.errorCode",
        "PriorityClass.value",
        "TokenRequestSpec.expirationSeconds",
        "SubjectAccessReviewStatus.allowed",
        # meta/v1
        "DeleteOptions.gracePeriodSeconds",
        "DeleteOptions.orphanDependents",
        "DeleteOptions.ignoreStoreReadErrorWithClusterBreakingPotential",
        "OwnerReference.controller",
        "OwnerReference.blockOwnerDeletion",
        "ObjectMeta.deletionGracePeriodSeconds",
        "ListMeta.remainingItemCount",
        "PatchOptions.force",
        "ListOptions.timeoutSeconds",
        "ListOptions.sendInitialEvents",
        # apiextensions.k8s.io/v1
        "CustomResourceDefinitionVersion.served",
        "CustomResourceDefinitionVersion.storage",
        "JSONSchemaProps.maximum",
        "JSONSchemaProps.minimum",
        "JSONSchemaProps.maxLength",
        "JSONSchemaProps.minLength",
        "JSONSchemaProps.maxItems",
        "JSONSchemaProps.minItems",
        "JSONSchemaProps.multipleOf",
        "JSONSchemaProps.maxProperties",
        "JSONSchemaProps.minProperties",
        "JSONSchemaProps.x-kubernetes-preserve-unknown-fields",
        "ServiceReference.port",
        "ValidationRule.optionalOldSelf",
    }
)

# Wrappers go-to-protobuf generates for Go `[]string` types; JSON shows the bare list.
_STRING_LISTS = frozenset(
    {
        f"{_META}.Verbs",
        "k8s.io.api.authentication.v1.ExtraValue",
        "k8s.io.api.authorization.v1.ExtraValue",
    }
)


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    type: str
    label: str  # "o" singular, "r" repeated, "m" map<string, type>, "i" inline struct

    @property
    def scalar(self) -> bool:
        return self.type in _WIRE_TYPES


@dataclass(frozen=True)
class _Schema:
    messages: dict[str, dict[int, _Field]]
    kinds: dict[str, dict[str, str]]


@cache
def _schema() -> _Schema:
    text = resources.files("nodeless.api").joinpath("protobuf_messages.json").read_text()
    raw = json.loads(text)
    messages = {
        name: {int(num): _Field(*spec) for num, spec in fields.items()}
        for name, fields in raw["messages"].items()
    }
    return _Schema(messages=messages, kinds=raw["kinds"])


def is_protobuf(content_type: str | None) -> bool:
    """Whether a Content-Type header names the Kubernetes protobuf encoding."""
    if not content_type:
        return False
    return content_type.split(";", 1)[0].strip().lower() == CONTENT_TYPE


def message_for(api_version: str, kind: str) -> str | None:
    """The protobuf message that encodes ``kind`` in ``api_version``, if one is known.

    meta.k8s.io kinds such as DeleteOptions are registered in every group version,
    so they are found whatever apiVersion the client stamped on them.
    """
    kinds = _schema().kinds
    found = kinds.get(api_version, {}).get(kind)
    return found or kinds.get("meta.k8s.io/v1", {}).get(kind)


def decode(body: bytes) -> dict[str, Any]:
    """Turn a Kubernetes protobuf request body into the object its JSON would be.

    Raises a 400 ``StatusError`` for malformed bytes and a 415 one for kinds that
    have no protobuf definition here (the client can resend them as JSON).
    """
    if not body.startswith(MAGIC):
        raise errors.bad_request(
            "the protobuf request body does not start with the Kubernetes magic prefix k8s\\x00"
        )
    api_version, kind, raw = _envelope(memoryview(body)[len(MAGIC) :])
    name = message_for(api_version, kind)
    if name is None:
        raise errors.StatusError(
            415,
            "UnsupportedMediaType",
            f"no protobuf definition for {kind} in {api_version}; "
            "send the request body as application/json",
        )
    obj = decode_message(name, raw)
    return {"apiVersion": api_version, "kind": kind, **obj}


def decode_message(message: str, data: bytes) -> dict[str, Any]:
    """Decode one message (full proto name, e.g. ``k8s.io.api.core.v1.Pod``) to a dict."""
    if message not in _schema().messages:
        raise errors.bad_request(f"unknown protobuf message {message}")
    try:
        value = _decode(message, memoryview(data), 0)
    except RecursionError:
        raise errors.bad_request("the protobuf request body is nested too deeply") from None
    if not isinstance(value, dict):
        raise errors.bad_request(f"protobuf message {message} does not decode to an object")
    return value


def _envelope(data: memoryview) -> tuple[str, str, bytes]:
    """apiVersion, kind and object bytes of a ``runtime.Unknown``."""
    type_meta: dict[str, str] = {}
    raw = b""
    for number, wire, value in _fields(data):
        if number == 1:
            if not isinstance(value, memoryview):
                raise _malformed("typeMeta has the wrong wire type")
            for sub_number, sub_wire, sub_value in _fields(value):
                if sub_number in (1, 2):
                    key = "apiVersion" if sub_number == 1 else "kind"
                    type_meta[key] = _scalar("string", sub_wire, sub_value)
        elif number == 2:
            if not isinstance(value, memoryview):
                raise _malformed("raw has the wrong wire type")
            raw = bytes(value)
        elif number == 3:
            encoding = _scalar("string", wire, value)
            if encoding:
                raise errors.bad_request(f"unsupported protobuf contentEncoding {encoding!r}")
    api_version = type_meta.get("apiVersion", "")
    kind = type_meta.get("kind", "")
    if not api_version or not kind:
        raise errors.bad_request("the protobuf request body does not name its apiVersion and kind")
    return api_version, kind, raw


# --- wire format -----------------------------------------------------------------


def _malformed(what: str) -> errors.StatusError:
    return errors.bad_request(f"malformed protobuf request body: {what}")


def _varint(data: memoryview, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= len(data):
            raise _malformed("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise _malformed("varint longer than 10 bytes")


def _fields(data: memoryview) -> list[tuple[int, int, int | memoryview]]:
    """Split a message into (field number, wire type, value) in wire order."""
    out: list[tuple[int, int, int | memoryview]] = []
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise _malformed("field number 0")
        value: int | memoryview
        if wire == _VARINT:
            value, pos = _varint(data, pos)
        elif wire == _LEN:
            length, pos = _varint(data, pos)
            if pos + length > len(data):
                raise _malformed(f"field {number} runs past the end of its message")
            value = data[pos : pos + length]
            pos += length
        elif wire in (_FIXED64, _FIXED32):
            size = 8 if wire == _FIXED64 else 4
            if pos + size > len(data):
                raise _malformed(f"truncated fixed-width field {number}")
            value = int.from_bytes(data[pos : pos + size], "little")
            pos += size
        else:
            raise _malformed(f"unsupported wire type {wire} for field {number}")
        out.append((number, wire, value))
    return out


def _scalar(typ: str, wire: int, value: int | memoryview) -> Any:
    if wire != _WIRE_TYPES[typ]:
        raise _malformed(f"{typ} value has wire type {wire}")
    if isinstance(value, memoryview):
        if typ == "string":
            try:
                return str(value, "utf-8")
            except UnicodeDecodeError:
                raise _malformed("string is not UTF-8") from None
        return base64.b64encode(value).decode("ascii")
    if typ == "bool":
        return value != 0
    if typ in ("int32", "int64", "sfixed64", "sfixed32"):
        bits = 32 if typ in ("int32", "sfixed32") else 64
        value &= (1 << bits) - 1
        return value - (1 << bits) if value >> (bits - 1) else value
    if typ in ("sint32", "sint64"):
        return (value >> 1) ^ -(value & 1)
    if typ == "double":
        return _float(value.to_bytes(8, "little"), "<d")
    if typ == "float":
        return _float(value.to_bytes(4, "little"), "<f")
    return value  # uint32, uint64, fixed32, fixed64


def _float(raw: bytes, fmt: str) -> float | int:
    number: float = struct.unpack(fmt, raw)[0]
    if not math.isfinite(number):
        raise _malformed("number is not finite, which JSON cannot carry")
    # JSON has one number type; Go writes integral float64 values without a fraction.
    return int(number) if number.is_integer() else number


def _packed(typ: str, data: memoryview) -> list[Any]:
    """Elements of a packed repeated numeric field."""
    wire = _WIRE_TYPES[typ]
    out: list[Any] = []
    pos = 0
    while pos < len(data):
        if wire == _VARINT:
            raw, pos = _varint(data, pos)
        else:
            size = 8 if wire == _FIXED64 else 4
            if pos + size > len(data):
                raise _malformed("truncated packed field")
            raw = int.from_bytes(data[pos : pos + size], "little")
            pos += size
        out.append(_scalar(typ, wire, raw))
    return out


def _is_zero(value: Any) -> bool:
    return value in ("", 0, False)


# --- messages --------------------------------------------------------------------


def _decode(message: str, data: memoryview, depth: int) -> Any:
    """A message as its JSON value: a dict, or for well-known types a string/number/list."""
    if depth > _MAX_DEPTH:
        raise errors.bad_request("the protobuf request body is nested too deeply")
    special = _SPECIAL.get(message)
    if special is not None:
        return special(data, depth)
    schema = _schema().messages[message]
    short = message.rsplit(".", 1)[1]
    out: dict[str, Any] = {}
    for number, wire, value in _fields(data):
        field = schema.get(number)
        if field is None:
            continue  # a field newer than this table: skip, as protobuf decoders do
        if field.label == "m":
            key, item = _map_entry(field, wire, value, depth)
            out.setdefault(field.name, {})[key] = item
        elif field.label == "r":
            packed = field.scalar and _WIRE_TYPES[field.type] != _LEN
            if packed and isinstance(value, memoryview):
                out.setdefault(field.name, []).extend(_packed(field.type, value))
            else:
                out.setdefault(field.name, []).append(_value(field, wire, value, depth))
        elif field.label == "i":
            inline = _value(field, wire, value, depth)
            if isinstance(inline, dict):
                out.update(inline)
        else:
            item = _value(field, wire, value, depth)
            droppable = field.scalar or field.type == _INT_OR_STRING
            if item is None or (
                droppable and _is_zero(item) and f"{short}.{field.name}" not in _KEEP_ZERO
            ):
                out.pop(field.name, None)
            else:
                out[field.name] = item
    return out


def _value(field: _Field, wire: int, value: int | memoryview, depth: int) -> Any:
    if field.scalar:
        return _scalar(field.type, wire, value)
    if not isinstance(value, memoryview):
        raise _malformed(f"message field {field.name} has wire type {wire}")
    return _decode(field.type, value, depth + 1)


def _map_entry(field: _Field, wire: int, value: int | memoryview, depth: int) -> tuple[str, Any]:
    if not isinstance(value, memoryview):
        raise _malformed(f"map field {field.name} has wire type {wire}")
    key = ""
    item: Any = None
    seen_value = False
    for number, entry_wire, entry in _fields(value):
        if number == 1:
            key = _scalar("string", entry_wire, entry)
        elif number == 2:
            item = _value(field, entry_wire, entry, depth)
            seen_value = True
    if not seen_value:
        item = _value(field, _WIRE_TYPES.get(field.type, _LEN), _default(field.type), depth)
    return key, item


def _default(typ: str) -> int | memoryview:
    return memoryview(b"") if _WIRE_TYPES.get(typ, _LEN) == _LEN else 0


def _sub(data: memoryview) -> dict[int, tuple[int, int | memoryview]]:
    """Last value of each field of a small well-known message."""
    return {number: (wire, value) for number, wire, value in _fields(data)}


def _time(data: memoryview, _depth: int, *, micro: bool = False) -> str | None:
    fields = _sub(data)
    seconds = _scalar("int64", *fields[1]) if 1 in fields else 0
    nanos = _scalar("int32", *fields[2]) if 2 in fields else 0
    if not fields or seconds == _GO_ZERO_TIME_SECONDS:
        return None  # Go's zero time: JSON null, omitted
    if not 0 <= nanos < 1_000_000_000:
        raise _malformed(f"timestamp nanos {nanos} out of range")
    try:
        moment = _EPOCH + timedelta(seconds=seconds)
    except OverflowError:
        raise _malformed(f"timestamp {seconds} out of range") from None
    text = (
        f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}"
        f"T{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}"
    )
    return f"{text}.{nanos // 1000:06d}Z" if micro else f"{text}Z"


def _micro_time(data: memoryview, depth: int) -> str | None:
    return _time(data, depth, micro=True)


def _duration(data: memoryview, _depth: int) -> str:
    fields = _sub(data)
    return go_duration(_scalar("int64", *fields[1]) if 1 in fields else 0)


def go_duration(ns: int) -> str:
    """Format nanoseconds as Go's ``time.Duration.String`` does (``1h0m0s``, ``1.5s``)."""
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    u = abs(ns)
    if u < 1_000_000_000:
        if u < 1_000:
            return f"{sign}{u}ns"
        unit, div, digits = ("µs", 1_000, 3) if u < 1_000_000 else ("ms", 1_000_000, 6)
        whole, frac = divmod(u, div)
        fraction = f"{frac:0{digits}d}".rstrip("0")
        return f"{sign}{whole}{'.' + fraction if fraction else ''}{unit}"
    secs, frac = divmod(u, 1_000_000_000)
    hours, rest = divmod(secs, 3600)
    minutes, seconds = divmod(rest, 60)
    fraction = f"{frac:09d}".rstrip("0")
    text = f"{seconds}{'.' + fraction if fraction else ''}s"
    if hours:
        return f"{sign}{hours}h{minutes}m{text}"
    if minutes:
        return f"{sign}{minutes}m{text}"
    return sign + text


def _quantity(data: memoryview, _depth: int) -> str | None:
    fields = _sub(data)
    text = _scalar("string", *fields[1]) if 1 in fields else ""
    return text or None


def _int_or_string(data: memoryview, _depth: int) -> int | str:
    fields = _sub(data)
    kind = _scalar("int64", *fields[1]) if 1 in fields else 0
    if kind == 1:
        return _scalar("string", *fields[3]) if 3 in fields else ""
    return _scalar("int32", *fields[2]) if 2 in fields else 0


def _json_bytes(raw: bytes) -> Any:
    if not raw:
        return None
    if raw.startswith(MAGIC):
        return decode(raw)
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise _malformed("embedded raw object is not JSON") from None


def _raw_field(data: memoryview, _depth: int) -> Any:
    """RawExtension, FieldsV1 and apiextensions JSON: field 1 holds JSON bytes."""
    fields = _sub(data)
    if 1 not in fields:
        return None
    wire, value = fields[1]
    if wire != _LEN or not isinstance(value, memoryview):
        raise _malformed("raw bytes field has the wrong wire type")
    return _json_bytes(bytes(value))


def _string_list(data: memoryview, _depth: int) -> list[str]:
    return [_scalar("string", wire, value) for number, wire, value in _fields(data) if number == 1]


def _schema_or_array(data: memoryview, depth: int) -> Any:
    schema: Any = None
    many: list[Any] = []
    for number, wire, value in _fields(data):
        if wire != _LEN or not isinstance(value, memoryview):
            raise _malformed("JSONSchemaPropsOrArray field has the wrong wire type")
        if number == 1:
            schema = _decode(f"{_APIEXT}.JSONSchemaProps", value, depth + 1)
        elif number == 2:
            many.append(_decode(f"{_APIEXT}.JSONSchemaProps", value, depth + 1))
    return many if many else schema


def _schema_or_bool(data: memoryview, depth: int) -> Any:
    allows = False
    schema: Any = None
    for number, wire, value in _fields(data):
        if number == 1:
            allows = _scalar("bool", wire, value)
        elif number == 2:
            if not isinstance(value, memoryview):
                raise _malformed("JSONSchemaPropsOrBool schema has the wrong wire type")
            schema = _decode(f"{_APIEXT}.JSONSchemaProps", value, depth + 1)
    return schema if schema is not None else allows


def _schema_or_strings(data: memoryview, depth: int) -> Any:
    schema: Any = None
    strings: list[str] = []
    for number, wire, value in _fields(data):
        if number == 1:
            if not isinstance(value, memoryview):
                raise _malformed("JSONSchemaPropsOrStringArray schema has the wrong wire type")
            schema = _decode(f"{_APIEXT}.JSONSchemaProps", value, depth + 1)
        elif number == 2:
            strings.append(_scalar("string", wire, value))
    return strings if strings else schema


_SPECIAL: dict[str, Callable[[memoryview, int], Any]] = {
    f"{_META}.Time": _time,
    f"{_META}.Timestamp": _time,
    f"{_META}.MicroTime": _micro_time,
    f"{_META}.Duration": _duration,
    f"{_META}.FieldsV1": _raw_field,
    "k8s.io.apimachinery.pkg.api.resource.Quantity": _quantity,
    "k8s.io.apimachinery.pkg.api.resource.QuantityValue": _quantity,
    _INT_OR_STRING: _int_or_string,
    "k8s.io.apimachinery.pkg.runtime.RawExtension": _raw_field,
    f"{_APIEXT}.JSON": _raw_field,
    f"{_APIEXT}.JSONSchemaPropsOrArray": _schema_or_array,
    f"{_APIEXT}.JSONSchemaPropsOrBool": _schema_or_bool,
    f"{_APIEXT}.JSONSchemaPropsOrStringArray": _schema_or_strings,
    **dict.fromkeys(_STRING_LISTS, _string_list),
}
