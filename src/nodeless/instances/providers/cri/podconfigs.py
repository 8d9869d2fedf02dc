"""Pod specs turned into CRI sandbox and container configs, as the kubelet turns them.

Pure translation, so that every rule is unit-tested without containerd: the
sandbox's hostname, DNS, labels and cgroup parent; each container's command
and args (containerd applies the Kubernetes rules over the image's
entrypoint and cmd itself when given them unchanged), working directory,
environment (plain values, ``$(VAR)`` expansion, ``fieldRef``,
``resourceFieldRef``, and ConfigMap/Secret references resolved from objects
the provider fetched beforehand), security context, resources bounded by the
instance's size, and mounts (``/etc/hosts``, the termination-message file,
and the pod's volumes: emptyDir, configMap, secret, downwardAPI, projected
and persistentVolumeClaim, the four that hold files always read-only, as the
kubelet mounts them; ``subPath`` resolved and kept inside its volume).

``volumes`` reads a pod's volumes into descriptors, checking what the
kubelet's atomic writer would refuse (item paths absolute, with ``..`` or
starting with ``..``, modes over 0777) before anything runs; writing their
files is ``volumefiles``'s work, which needs the API.

Where a pod cannot run as written the functions raise ``ConfigError`` with
the kubelet's reason (``CreateContainerConfigError``) and a message in its
words, or ``UnsupportedVolume`` for volume types this provider cannot mount
(nfs, hostPath, ...) and volumes it could never set up as written. The
labels and annotations written here are also how a restarted provider finds
its instances again: the instance's request rides along as a sandbox
annotation.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar

import orjson

from nodeless.instances.providers import base
from nodeless.instances.providers.cri import cgroups, gpudevices
from nodeless.instances.providers.cri import runtime_pb2 as pb
from nodeless.serverless import quantities

Obj = dict[str, Any]

# The kubelet's labels and annotations, which tools like crictl read.
LABEL_POD_NAME = "io.kubernetes.pod.name"
LABEL_POD_NAMESPACE = "io.kubernetes.pod.namespace"
LABEL_POD_UID = "io.kubernetes.pod.uid"
LABEL_CONTAINER_NAME = "io.kubernetes.container.name"
ANNOTATION_RESTART_COUNT = "io.kubernetes.container.restartCount"
ANNOTATION_TERMINATION_MESSAGE_PATH = "io.kubernetes.container.terminationMessagePath"
ANNOTATION_GRACE_PERIOD = "io.kubernetes.pod.terminationGracePeriod"
# Nodeless' own: which instance, which provider, and enough to adopt it.
LABEL_INSTANCE = "nodeless.dev/instance-id"
LABEL_OWNER = "nodeless.dev/owner"
LABEL_CONTAINER_TYPE = "nodeless.dev/container-type"
CONTAINER_TYPE_INIT = "init"
CONTAINER_TYPE_APP = "app"
ANNOTATION_REQUEST = "nodeless.dev/instance-request"
ANNOTATION_CREATED_AT = "nodeless.dev/created-at"
ANNOTATION_TERMINATION_FILE = "nodeless.dev/termination-message-file"

CREATE_CONTAINER_CONFIG_ERROR = "CreateContainerConfigError"
DEFAULT_TERMINATION_MESSAGE_PATH = "/dev/termination-log"
MAX_HOSTNAME = 63
MAX_DNS_SERVERS = 3
MAX_DNS_SEARCHES = 32
GIB = Decimal(2**30)
HOSTS_FILE = "/etc/hosts"
_SAFE_PATH_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_FIELD_SUBSCRIPT = re.compile(r"metadata\.(labels|annotations)\['(.+)'\]")


class ConfigError(Exception):
    """The container cannot be configured as its spec says; it waits with
    ``reason`` (the kubelet's ``CreateContainerConfigError``)."""

    def __init__(self, message: str, reason: str = CREATE_CONTAINER_CONFIG_ERROR) -> None:
        super().__init__(message)
        self.reason = reason


class UnsupportedVolume(Exception):
    """A volume type this provider cannot mount (yet)."""


# --- the instance request, carried on the sandbox ---


def encode_request(request: base.InstanceRequest) -> str:
    # The fields are plain values and the pod's JSON: serialised as they are,
    # without the deep copy ``dataclasses.asdict`` would make of the pod.
    fields = {f.name: getattr(request, f.name) for f in dataclasses.fields(request)}
    return orjson.dumps(fields, option=orjson.OPT_SORT_KEYS).decode()


def decode_request(text: str) -> base.InstanceRequest:
    """The request ``encode_request`` wrote; raises ``ValueError``."""
    doc = json.loads(text)
    if not isinstance(doc, dict):
        raise ValueError("instance request is not a JSON object")
    names = {f.name for f in dataclasses.fields(base.InstanceRequest)}
    return base.InstanceRequest(**{k: v for k, v in doc.items() if k in names})


# --- where a pod's files live ---


@dataclass(frozen=True)
class PodPaths:
    """A pod's files under the provider's data directory: ``pods/<uid>`` for
    volumes, hosts file and termination messages (the kubelet's
    ``/var/lib/kubelet/pods``), ``logs/<ns>_<name>_<uid>`` for container logs
    (``/var/log/pods``)."""

    data_dir: Path
    namespace: str
    name: str
    uid: str

    def __post_init__(self) -> None:
        for part in (self.namespace, self.name, self.uid):
            if not _SAFE_PATH_PART.fullmatch(part):
                raise ValueError(f"{part!r} cannot name a pod directory")

    @classmethod
    def for_request(cls, data_dir: Path, request: base.InstanceRequest) -> PodPaths:
        uid = str((request.pod.get("metadata") or {}).get("uid") or request.instance_id)
        return cls(data_dir, request.namespace, request.pod_name, uid)

    @property
    def pod_dir(self) -> Path:
        return self.data_dir / "pods" / self.uid

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "logs" / f"{self.namespace}_{self.name}_{self.uid}"

    @property
    def memory_dir(self) -> Path:
        """The pod's secret and projected volumes, on the provider's tmpfs."""
        return self.data_dir / MEMORY_DIR / self.uid

    @property
    def etc_hosts(self) -> Path:
        return self.pod_dir / "etc-hosts"

    def log_path(self, container: str, attempt: int) -> str:
        """The container's log, relative to the sandbox's log directory."""
        return f"{container}/{attempt}.log"

    def log_file(self, container: str, attempt: int) -> Path:
        return self.log_dir / self.log_path(container, attempt)

    def empty_dir(self, volume: str) -> Path:
        return self.pod_dir / "volumes" / EMPTY_DIR_PLUGIN / volume

    def termination_file(self, container: str, attempt: int) -> Path:
        return self.pod_dir / "containers" / container / str(attempt)


# --- volumes ---

# Every pod's secret and projected volumes live on one tmpfs the provider
# mounts at ``<data dir>/memory``, a directory per pod. The kubelet mounts a
# tmpfs per volume; here one in all keeps the mount table from growing by a
# mount per pod, and every runc call and container start reads or copies that
# table whole.
MEMORY_DIR = "memory"

# The kubelet's volume plugin directories, under ``pods/<uid>/volumes``.
EMPTY_DIR_PLUGIN = "kubernetes.io~empty-dir"
CONFIG_MAP_PLUGIN = "kubernetes.io~configmap"
SECRET_PLUGIN = "kubernetes.io~secret"
DOWNWARD_API_PLUGIN = "kubernetes.io~downward-api"
PROJECTED_PLUGIN = "kubernetes.io~projected"
# A claim's volume is a link to its PersistentVolume's directory.
CLAIM_PLUGIN = "kubernetes.io~local-volume"
DEFAULT_FILE_MODE = 0o644
MAX_FILE_MODE = 0o777
DEFAULT_TOKEN_EXPIRATION = 3600
MAX_VOLUME_PATH = 4096
MAX_VOLUME_PATH_PART = 255
_FILE_VOLUME_PLUGINS = {
    "configMap": CONFIG_MAP_PLUGIN,
    "secret": SECRET_PLUGIN,
    "downwardAPI": DOWNWARD_API_PLUGIN,
    "projected": PROJECTED_PLUGIN,
}
# The downward API's fields a file may hold (upstream allows the metadata
# ones; the spec and status ones are the environment's, given here too).
_DOWNWARD_FIELDS = frozenset(
    {
        "metadata.name",
        "metadata.namespace",
        "metadata.uid",
        "metadata.labels",
        "metadata.annotations",
        "spec.nodeName",
        "spec.serviceAccountName",
        "status.hostIP",
        "status.hostIPs",
        "status.podIP",
        "status.podIPs",
    }
)


@dataclass(frozen=True)
class EmptyDir:
    name: str
    medium: str = ""  # "" (disk) or "Memory" (tmpfs)
    size_limit: int | None = None  # bytes

    plugin: ClassVar[str] = EMPTY_DIR_PLUGIN


@dataclass(frozen=True)
class KeyPath:
    """One ``items`` entry: an object's key written at ``path``."""

    key: str
    path: str
    mode: int | None = None


@dataclass(frozen=True)
class ObjectFiles:
    """A ConfigMap's or a Secret's keys as files (``items``, or every key)."""

    kind: str  # "ConfigMap" | "Secret"
    name: str
    items: tuple[KeyPath, ...] = ()
    optional: bool = False


@dataclass(frozen=True)
class FieldFile:
    """One downward API file: a ``fieldRef`` or a ``resourceFieldRef``."""

    path: str
    mode: int | None = None
    field_path: str = ""
    resource: str = ""
    container_name: str = ""
    divisor: str = ""


@dataclass(frozen=True)
class DownwardFiles:
    items: tuple[FieldFile, ...] = ()


@dataclass(frozen=True)
class TokenFile:
    """A projected service account token."""

    path: str
    audience: str = ""
    expiration_seconds: int = DEFAULT_TOKEN_EXPIRATION


Projection = ObjectFiles | DownwardFiles | TokenFile


@dataclass(frozen=True)
class FileVolume:
    """A configMap, secret, downwardAPI or projected volume: files the
    provider writes, one projection after the other (a configMap volume is a
    projected volume of one ConfigMap)."""

    name: str
    source: str  # "configMap" | "secret" | "downwardAPI" | "projected"
    projections: tuple[Projection, ...]
    default_mode: int = DEFAULT_FILE_MODE

    @property
    def plugin(self) -> str:
        return _FILE_VOLUME_PLUGINS[self.source]

    @property
    def memory(self) -> bool:
        """Secrets (and projections, which may hold tokens) never touch the
        disk: the kubelet keeps them on tmpfs."""
        return self.source in ("secret", "projected")


@dataclass(frozen=True)
class ClaimVolume:
    """A persistentVolumeClaim volume: the bound PersistentVolume's directory."""

    name: str
    claim: str
    read_only: bool = False

    plugin: ClassVar[str] = CLAIM_PLUGIN


Volume = EmptyDir | FileVolume | ClaimVolume


def volumes(pod: Mapping[str, Any]) -> list[Volume]:
    """The pod's volumes; raises ``UnsupportedVolume`` for a type this
    provider cannot mount, and for one it could never set up as written."""
    found: list[Volume] = []
    seen: set[str] = set()
    for volume in (pod.get("spec") or {}).get("volumes") or []:
        name = str(volume.get("name") or "")
        if not _SAFE_PATH_PART.fullmatch(name):
            raise UnsupportedVolume(f"volume name {name!r} is not valid")
        if name in seen:
            raise UnsupportedVolume(f'volume name "{name}" is used twice')
        seen.add(name)
        kinds = [k for k, v in volume.items() if k != "name" and v is not None]
        if len(kinds) != 1 or kinds[0] not in _VOLUME_READERS:
            kind = ", ".join(kinds) if kinds else "no source"
            raise UnsupportedVolume(
                f'volume "{name}" ({kind}) is not supported yet: this provider mounts '
                "emptyDir, configMap, secret, downwardAPI, projected and "
                "persistentVolumeClaim volumes"
            )
        source = volume[kinds[0]]
        if not isinstance(source, Mapping):
            raise UnsupportedVolume(f'volume "{name}": {kinds[0]} must be an object')
        found.append(_VOLUME_READERS[kinds[0]](name, source))
    return found


def volume_dir(paths: PodPaths, volume: Volume) -> Path:
    """Where a volume lives on the host (for a claim, the link to its PV's
    directory; for a secret or projection, a directory on the tmpfs)."""
    if isinstance(volume, FileVolume) and volume.memory:
        return paths.memory_dir / volume.plugin / volume.name
    return pod_volume_dir(paths, volume)


def pod_volume_dir(paths: PodPaths, volume: Volume) -> Path:
    """A volume's directory under the pod's own: every volume but secrets
    and projections, which lived here too (a tmpfs each) before they moved
    to the shared tmpfs; a pod set up then keeps them here."""
    return paths.pod_dir / "volumes" / volume.plugin / volume.name


def read_only_volumes(found: Sequence[Volume]) -> frozenset[str]:
    """The volumes every container mounts read-only whatever its mount says:
    the file volumes (the kubelet's ``ReadOnly`` attribute) and claims marked
    ``readOnly``."""
    return frozenset(
        v.name
        for v in found
        if isinstance(v, FileVolume) or (isinstance(v, ClaimVolume) and v.read_only)
    )


def _empty_dir(name: str, source: Mapping[str, Any]) -> EmptyDir:
    medium = str(source.get("medium") or "")
    if medium not in ("", "Memory"):
        raise UnsupportedVolume(f'volume "{name}": emptyDir medium {medium!r} is not supported')
    limit = source.get("sizeLimit")
    size = None
    if limit is not None:
        try:
            size = int(quantities.parse(limit))
        except quantities.QuantityError as e:
            raise UnsupportedVolume(f'volume "{name}": sizeLimit: {e}') from None
    return EmptyDir(name, medium, size)


def _config_map_volume(name: str, source: Mapping[str, Any]) -> FileVolume:
    files = _object_files(name, "ConfigMap", source)
    return FileVolume(name, "configMap", (files,), _default_mode(name, source))


def _secret_volume(name: str, source: Mapping[str, Any]) -> FileVolume:
    files = _object_files(name, "Secret", source, name_key="secretName")
    return FileVolume(name, "secret", (files,), _default_mode(name, source))


def _downward_api_volume(name: str, source: Mapping[str, Any]) -> FileVolume:
    files = _downward_files(name, source)
    return FileVolume(name, "downwardAPI", (files,), _default_mode(name, source))


def _projected_volume(name: str, source: Mapping[str, Any]) -> FileVolume:
    projections: list[Projection] = []
    for entry in source.get("sources") or []:
        kinds = [k for k, v in (entry or {}).items() if v is not None]
        if len(kinds) != 1:
            raise UnsupportedVolume(f'volume "{name}": each projected source needs one type')
        kind, spec = kinds[0], entry[kinds[0]]
        if kind == "configMap":
            projections.append(_object_files(name, "ConfigMap", spec))
        elif kind == "secret":
            projections.append(_object_files(name, "Secret", spec))
        elif kind == "downwardAPI":
            projections.append(_downward_files(name, spec))
        elif kind == "serviceAccountToken":
            projections.append(_token_file(name, spec))
        else:
            raise UnsupportedVolume(f'volume "{name}": projected source {kind} is not supported')
    return FileVolume(name, "projected", tuple(projections), _default_mode(name, source))


def _claim_volume(name: str, source: Mapping[str, Any]) -> ClaimVolume:
    claim = str(source.get("claimName") or "")
    if not claim:
        raise UnsupportedVolume(f'volume "{name}": persistentVolumeClaim needs a claimName')
    return ClaimVolume(name, claim, bool(source.get("readOnly")))


_VOLUME_READERS: dict[str, Callable[[str, Mapping[str, Any]], Volume]] = {
    "emptyDir": _empty_dir,
    "configMap": _config_map_volume,
    "secret": _secret_volume,
    "downwardAPI": _downward_api_volume,
    "projected": _projected_volume,
    "persistentVolumeClaim": _claim_volume,
}


def _object_files(
    volume: str, kind: str, source: Mapping[str, Any], *, name_key: str = "name"
) -> ObjectFiles:
    items = []
    for item in source.get("items") or []:
        key = str(item.get("key") or "")
        if not key:
            raise UnsupportedVolume(f'volume "{volume}": every item needs a key')
        path = volume_file_path(volume, item.get("path"))
        items.append(KeyPath(key, path, _mode(volume, item.get("mode"), f"item {key!r} mode")))
    return ObjectFiles(
        kind, str(source.get(name_key) or ""), tuple(items), bool(source.get("optional"))
    )


def _downward_files(volume: str, source: Mapping[str, Any]) -> DownwardFiles:
    items = []
    for item in source.get("items") or []:
        path = volume_file_path(volume, item.get("path"))
        mode = _mode(volume, item.get("mode"), f"item {path!r} mode")
        field_ref, resource_ref = item.get("fieldRef"), item.get("resourceFieldRef")
        if (field_ref is None) == (resource_ref is None):
            raise UnsupportedVolume(
                f'volume "{volume}": item {path!r} needs one of fieldRef and resourceFieldRef'
            )
        if field_ref is not None:
            field_path = str(field_ref.get("fieldPath") or "")
            if field_path not in _DOWNWARD_FIELDS and not _FIELD_SUBSCRIPT.fullmatch(field_path):
                raise UnsupportedVolume(
                    f'volume "{volume}": item {path!r}: unsupported fieldPath {field_path!r}'
                )
            items.append(FieldFile(path, mode, field_path=field_path))
            continue
        items.append(
            FieldFile(
                path,
                mode,
                resource=str(resource_ref.get("resource") or ""),
                container_name=str(resource_ref.get("containerName") or ""),
                divisor=str(resource_ref.get("divisor") or ""),
            )
        )
    return DownwardFiles(tuple(items))


def _token_file(volume: str, source: Mapping[str, Any]) -> TokenFile:
    path = volume_file_path(volume, source.get("path"))
    expiration = source.get("expirationSeconds")
    if expiration is None:
        expiration = DEFAULT_TOKEN_EXPIRATION
    if isinstance(expiration, bool) or not isinstance(expiration, int) or expiration <= 0:
        raise UnsupportedVolume(
            f'volume "{volume}": serviceAccountToken expirationSeconds {expiration!r} '
            "is not a positive number of seconds"
        )
    return TokenFile(path, str(source.get("audience") or ""), expiration)


def _default_mode(volume: str, source: Mapping[str, Any]) -> int:
    mode = _mode(volume, source.get("defaultMode"), "defaultMode")
    return DEFAULT_FILE_MODE if mode is None else mode


def _mode(volume: str, value: object, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_FILE_MODE:
        raise UnsupportedVolume(
            f'volume "{volume}": {what} {value!r} must be a file mode between 0 and 0777'
        )
    return value


def volume_file_path(volume: str, value: object) -> str:
    """A file's path inside a volume, checked as the kubelet's atomic writer
    checks it: relative, without ``..`` parts, not starting with ``..`` (its
    own names), within path-length limits. Raises ``UnsupportedVolume``."""
    path = str(value or "")
    parts = path.split("/")
    if (
        not path
        or path.startswith("/")
        or path.startswith("..")
        or ".." in parts
        or len(path) > MAX_VOLUME_PATH
        or any(len(p) > MAX_VOLUME_PATH_PART for p in parts)
    ):
        raise UnsupportedVolume(
            f'volume "{volume}": file path {path!r} must be a relative path without ".." '
            'that does not start with ".."'
        )
    clean = str(PurePosixPath(path))
    if clean == ".":
        raise UnsupportedVolume(f'volume "{volume}": file path {path!r} names no file')
    return clean


# --- the sandbox ---


@dataclass(frozen=True)
class DnsSettings:
    """Cluster DNS as the kubelet's ``--cluster-dns`` and ``--cluster-domain``;
    without servers, ``ClusterFirst`` pods use the host's resolver (as the
    kubelet does when it has no cluster DNS)."""

    servers: tuple[str, ...] = ()
    domain: str = "cluster.local"
    host_resolv_conf: Path = Path("/etc/resolv.conf")


def hostname(pod: Mapping[str, Any]) -> str:
    spec = pod.get("spec") or {}
    name = str(spec.get("hostname") or (pod.get("metadata") or {}).get("name") or "")
    # the kubelet's truncatePodHostnameIfNeeded
    return name[:MAX_HOSTNAME].rstrip("-.")


def sandbox_config(
    request: base.InstanceRequest,
    paths: PodPaths,
    *,
    owner: str,
    cgroup_parent: str,
    dns: DnsSettings = DnsSettings(),
    created_at: datetime.datetime | None = None,
    attempt: int = 0,
    gpus: Sequence[int] = (),
) -> pb.PodSandboxConfig:
    pod = request.pod
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    labels = {k: str(v) for k, v in (meta.get("labels") or {}).items()}
    labels.update(
        {
            LABEL_POD_NAME: paths.name,
            LABEL_POD_NAMESPACE: paths.namespace,
            LABEL_POD_UID: paths.uid,
            LABEL_INSTANCE: request.instance_id,
            LABEL_OWNER: owner,
        }
    )
    annotations = {k: str(v) for k, v in (meta.get("annotations") or {}).items()}
    annotations[ANNOTATION_REQUEST] = encode_request(request)
    if created_at is not None:
        annotations[ANNOTATION_CREATED_AT] = created_at.isoformat()
    if gpus:
        annotations[gpudevices.ANNOTATION_GPUS] = gpudevices.encode_indices(gpus)
    config = pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(
            name=paths.name, uid=paths.uid, namespace=paths.namespace, attempt=attempt
        ),
        hostname=hostname(pod),
        log_directory=str(paths.log_dir),
        port_mappings=port_mappings(pod),
        labels=labels,
        annotations=annotations,
        linux=pb.LinuxPodSandboxConfig(
            cgroup_parent=cgroup_parent,
            security_context=pb.LinuxSandboxSecurityContext(
                namespace_options=namespace_options(pod),
                supplemental_groups=supplemental_groups(pod),
            ),
            sysctls={
                str(s.get("name")): str(s.get("value"))
                for s in (spec.get("securityContext") or {}).get("sysctls") or []
            },
        ),
    )
    dns_config = pod_dns_config(pod, dns)
    if dns_config is not None:
        config.dns_config.CopyFrom(dns_config)
    return config


def namespace_options(pod: Mapping[str, Any]) -> pb.NamespaceOption:
    shared = bool((pod.get("spec") or {}).get("shareProcessNamespace"))
    return pb.NamespaceOption(pid=pb.POD if shared else pb.CONTAINER)


def supplemental_groups(pod: Mapping[str, Any]) -> list[int]:
    security = (pod.get("spec") or {}).get("securityContext") or {}
    groups = [int(g) for g in security.get("supplementalGroups") or []]
    fs_group = security.get("fsGroup")
    if fs_group is not None and int(fs_group) not in groups:
        groups.append(int(fs_group))
    return groups


def port_mappings(pod: Mapping[str, Any]) -> list[pb.PortMapping]:
    """Only ports with a hostPort are mapped (admission refuses those for
    serverless pods; they stay supported for other callers)."""
    protocols = {"TCP": pb.TCP, "UDP": pb.UDP, "SCTP": pb.SCTP}
    mappings = []
    for container in (pod.get("spec") or {}).get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("hostPort"):
                mappings.append(
                    pb.PortMapping(
                        protocol=protocols.get(str(port.get("protocol") or "TCP"), pb.TCP),
                        container_port=int(port.get("containerPort") or 0),
                        host_port=int(port["hostPort"]),
                        host_ip=str(port.get("hostIP") or ""),
                    )
                )
    return mappings


def read_resolv_conf(path: Path) -> tuple[list[str], list[str], list[str]]:
    """(nameservers, searches, options) of a resolv.conf; empty if unreadable."""
    servers: list[str] = []
    searches: list[str] = []
    options: list[str] = []
    try:
        text = path.read_text()
    except OSError:
        return servers, searches, options
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        if fields[0] == "nameserver" and len(fields) > 1:
            servers.append(fields[1])
        elif fields[0] in ("search", "domain"):
            searches = fields[1:]
        elif fields[0] == "options":
            options.extend(fields[1:])
    return servers, searches, options


def pod_dns_config(pod: Mapping[str, Any], dns: DnsSettings) -> pb.DNSConfig | None:
    """The kubelet's DNS rules by ``dnsPolicy``, merged with ``dnsConfig``;
    None leaves the runtime to copy the host's resolv.conf."""
    spec = pod.get("spec") or {}
    policy = str(spec.get("dnsPolicy") or "ClusterFirst")
    extra = spec.get("dnsConfig") or {}
    namespace = str((pod.get("metadata") or {}).get("namespace") or "default")
    if policy in ("ClusterFirst", "ClusterFirstWithHostNet") and not dns.servers:
        policy = "Default"
    if policy == "Default" and not extra:
        return None
    servers: list[str]
    searches: list[str]
    options: list[str]
    if policy == "None":
        servers, searches, options = [], [], []
    elif policy == "Default":
        servers, searches, options = read_resolv_conf(dns.host_resolv_conf)
    else:
        _, host_searches, _ = read_resolv_conf(dns.host_resolv_conf)
        servers = list(dns.servers)
        domain = dns.domain
        searches = [f"{namespace}.svc.{domain}", f"svc.{domain}", domain, *host_searches]
        options = ["ndots:5"]
    servers = _unique(servers + [str(s) for s in extra.get("nameservers") or []])
    searches = _unique(searches + [str(s) for s in extra.get("searches") or []])
    merged: dict[str, str | None] = {}
    for option in options:
        name, sep, value = option.partition(":")
        merged[name] = value if sep else None
    for option in extra.get("options") or []:
        merged[str(option.get("name"))] = (
            None if option.get("value") is None else str(option.get("value"))
        )
    return pb.DNSConfig(
        servers=servers[:MAX_DNS_SERVERS],
        searches=searches[:MAX_DNS_SEARCHES],
        options=[name if value is None else f"{name}:{value}" for name, value in merged.items()],
    )


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def etc_hosts(pod: Mapping[str, Any], ip: str, *, domain: str = "cluster.local") -> str:
    """The pod's /etc/hosts, as the kubelet writes it (with hostAliases)."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    name = hostname(pod)
    lines = [
        "# Kubernetes-managed hosts file.",
        "127.0.0.1\tlocalhost",
        "::1\tlocalhost ip6-localhost ip6-loopback",
        "fe00::0\tip6-localnet",
        "fe00::0\tip6-mcastprefix",
        "fe00::1\tip6-allnodes",
        "fe00::2\tip6-allrouters",
    ]
    if ip:
        subdomain = spec.get("subdomain")
        if subdomain:
            fqdn = f"{name}.{subdomain}.{meta.get('namespace', 'default')}.svc.{domain}"
            lines.append(f"{ip}\t{fqdn}\t{name}")
        else:
            lines.append(f"{ip}\t{name}")
    aliases = spec.get("hostAliases") or []
    if aliases:
        lines += ["", "# Entries added by HostAliases."]
        for alias in aliases:
            names = "\t".join(str(h) for h in alias.get("hostnames") or [])
            lines.append(f"{alias.get('ip')}\t{names}")
    return "\n".join(lines) + "\n"


# --- containers ---


@dataclass(frozen=True)
class PodContext:
    """What every container config of one pod needs besides its own spec."""

    request: base.InstanceRequest
    paths: PodPaths
    owner: str
    pod_ip: str = ""
    volume_dirs: Mapping[str, Path] = field(default_factory=dict)
    # volumes mounted read-only whatever the mount says (``read_only_volumes``)
    read_only_volumes: frozenset[str] = frozenset()
    etc_hosts: Path | None = None
    # ("ConfigMap" | "Secret", name) -> the object, or None where it does not exist
    objects: Mapping[tuple[str, str], Obj | None] = field(default_factory=dict)
    # The Services' variables (``service_env``), under every container's own.
    service_env: Mapping[str, str] = field(default_factory=dict)
    # container name -> its share of the instance's GPUs
    gpus: Mapping[str, gpudevices.Exposure] = field(default_factory=dict)


def all_containers(pod: Mapping[str, Any]) -> list[Obj]:
    spec = pod.get("spec") or {}
    return list(spec.get("initContainers") or []) + list(spec.get("containers") or [])


def referenced_objects(container: Mapping[str, Any]) -> set[tuple[str, str]]:
    """The ConfigMaps and Secrets a container's environment names."""
    found: set[tuple[str, str]] = set()
    for source in container.get("envFrom") or []:
        if source.get("configMapRef"):
            found.add(("ConfigMap", str(source["configMapRef"].get("name") or "")))
        if source.get("secretRef"):
            found.add(("Secret", str(source["secretRef"].get("name") or "")))
    for var in container.get("env") or []:
        value_from = var.get("valueFrom") or {}
        if value_from.get("configMapKeyRef"):
            found.add(("ConfigMap", str(value_from["configMapKeyRef"].get("name") or "")))
        if value_from.get("secretKeyRef"):
            found.add(("Secret", str(value_from["secretKeyRef"].get("name") or "")))
    return found


def termination_message_path(container: Mapping[str, Any]) -> str:
    return str(container.get("terminationMessagePath") or DEFAULT_TERMINATION_MESSAGE_PATH)


def container_config(
    context: PodContext,
    container: Mapping[str, Any],
    *,
    init: bool,
    attempt: int,
    image_ref: str,
    image: pb.Image | None = None,
    termination_file: Path | None = None,
) -> pb.ContainerConfig:
    """The CRI config of one container (attempt ``attempt``, image already
    pulled as ``image_ref``). Raises ``ConfigError``."""
    request = context.request
    name = str(container.get("name") or "")
    env = container_env(context, container)
    lookup = dict(env)
    labels = {
        LABEL_POD_NAME: context.paths.name,
        LABEL_POD_NAMESPACE: context.paths.namespace,
        LABEL_POD_UID: context.paths.uid,
        LABEL_CONTAINER_NAME: name,
        LABEL_INSTANCE: request.instance_id,
        LABEL_OWNER: context.owner,
        LABEL_CONTAINER_TYPE: CONTAINER_TYPE_INIT if init else CONTAINER_TYPE_APP,
    }
    grace = (request.pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
    annotations = {
        ANNOTATION_RESTART_COUNT: str(attempt),
        ANNOTATION_TERMINATION_MESSAGE_PATH: termination_message_path(container),
        ANNOTATION_GRACE_PERIOD: str(grace),
    }
    mounts = container_mounts(context, container, lookup)
    gpus = context.gpus.get(name, gpudevices.Exposure())
    mounts.extend(gpus.mounts)
    if gpus.env:
        # The device plugin's variables win over the pod's, as the kubelet applies them.
        env = [(k, v) for k, v in env if k not in gpus.env] + list(gpus.env.items())
    if termination_file is not None:
        annotations[ANNOTATION_TERMINATION_FILE] = str(termination_file)
        mounts.append(
            pb.Mount(
                container_path=termination_message_path(container),
                host_path=str(termination_file),
            )
        )
    return pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name=name, attempt=attempt),
        image=pb.ImageSpec(image=image_ref, user_specified_image=str(container.get("image"))),
        command=[expand(str(c), lookup) for c in container.get("command") or []],
        args=[expand(str(a), lookup) for a in container.get("args") or []],
        working_dir=str(container.get("workingDir") or ""),
        envs=[pb.KeyValue(key=k, value=v) for k, v in env],
        mounts=mounts,
        devices=gpus.devices,
        CDI_devices=gpus.cdi_devices,
        labels=labels,
        annotations=annotations,
        log_path=context.paths.log_path(name, attempt),
        stdin=bool(container.get("stdin")),
        stdin_once=bool(container.get("stdinOnce")),
        tty=bool(container.get("tty")),
        linux=pb.LinuxContainerConfig(
            resources=linux_resources(container, request.vcpu, request.memory_gib),
            security_context=security_context(request.pod, container, image),
        ),
    )


def container_mounts(
    context: PodContext, container: Mapping[str, Any], env: Mapping[str, str]
) -> list[pb.Mount]:
    name = container.get("name")
    mounts = []
    mounted_paths = set()
    for mount in container.get("volumeMounts") or []:
        volume = str(mount.get("name") or "")
        host = context.volume_dirs.get(volume)
        if host is None:
            raise ConfigError(f'cannot find volume "{volume}" to mount into container "{name}"')
        sub_path = str(mount.get("subPath") or "")
        if not sub_path and mount.get("subPathExpr"):
            sub_path = expand(str(mount["subPathExpr"]), env)
        if sub_path:
            relative = PurePosixPath(sub_path)
            if relative.is_absolute() or ".." in relative.parts:
                raise ConfigError(f"subPath {sub_path!r} must be a relative path within the volume")
            host = _sub_path(host, relative, sub_path)
        container_path = str(mount.get("mountPath") or "")
        mounted_paths.add(container_path)
        mounts.append(
            pb.Mount(
                container_path=container_path,
                host_path=str(host),
                readonly=bool(mount.get("readOnly")) or volume in context.read_only_volumes,
            )
        )
    if context.etc_hosts is not None and HOSTS_FILE not in mounted_paths:
        mounts.append(pb.Mount(container_path=HOSTS_FILE, host_path=str(context.etc_hosts)))
    return mounts


def _sub_path(volume_dir: Path, relative: PurePosixPath, written: str) -> Path:
    """A subPath's host path, made a directory when missing. Resolved, so
    that a symlink cannot lead out of the volume and a configMap key is
    mounted as the file it is now (which is why the kubelet does not update
    subPath mounts)."""
    host = volume_dir / relative
    if not host.exists() and not host.is_symlink():
        host.mkdir(parents=True, exist_ok=True)
    root = volume_dir.resolve()
    resolved = host.resolve()
    if resolved != root and root not in resolved.parents:
        raise ConfigError(f"subPath {written!r} leads out of its volume")
    return resolved


# --- environment ---


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: defined variables are replaced,
    undefined ones left as written, ``$$`` is a literal ``$``."""
    out: list[str] = []
    checkpoint = 0
    cursor = 0
    while cursor < len(text):
        if text[cursor] == "$" and cursor + 1 < len(text):
            out.append(text[checkpoint:cursor])
            following = text[cursor + 1]
            if following == "$":
                out.append("$")
                advance = 1
            elif following == "(":
                close = text.find(")", cursor + 2)
                if close == -1:
                    out.append("$(")
                    advance = 1
                else:
                    var = text[cursor + 2 : close]
                    out.append(env[var] if var in env else f"$({var})")
                    advance = close - cursor
            else:
                out.append("$" + following)
                advance = 1
            cursor += advance
            checkpoint = cursor + 1
        cursor += 1
    out.append(text[checkpoint:])
    return "".join(out)


MASTER_SERVICES = frozenset({"kubernetes"})


def _env_name(text: str) -> str:
    return text.replace("-", "_").upper()


def service_env(
    services: Sequence[Mapping[str, Any]], namespace: str, enable_service_links: bool = True
) -> dict[str, str]:
    """The variables the kubelet gives every container for Services
    (``getServiceEnvVarMap`` and ``envvars.FromServices``): the ``kubernetes``
    Service of ``default`` always, and every Service of the pod's namespace
    when ``enableServiceLinks`` (the default); only Services with a ClusterIP.
    ``services`` are those of both namespaces."""
    chosen: dict[str, Mapping[str, Any]] = {}
    for service in services:
        meta = service.get("metadata") or {}
        spec = service.get("spec") or {}
        ip = str(spec.get("clusterIP") or "")
        if not ip or ip == "None" or not spec.get("ports"):
            continue
        name = str(meta.get("name") or "")
        service_namespace = str(meta.get("namespace") or "")
        if service_namespace == "default" and name in MASTER_SERVICES:
            chosen.setdefault(name, service)
        elif service_namespace == namespace and enable_service_links:
            chosen[name] = service
    env: dict[str, str] = {}
    for name, service in chosen.items():
        spec = service.get("spec") or {}
        ip = str(spec["clusterIP"])
        prefix = _env_name(name)
        ports = [p for p in spec.get("ports") or () if isinstance(p, Mapping)]
        env[f"{prefix}_SERVICE_HOST"] = ip
        env[f"{prefix}_SERVICE_PORT"] = str(ports[0].get("port"))
        for port in ports:
            if port.get("name"):
                env[f"{prefix}_SERVICE_PORT_{_env_name(str(port['name']))}"] = str(port.get("port"))
        host = f"[{ip}]" if ":" in ip else ip
        for i, port in enumerate(ports):
            protocol = str(port.get("protocol") or "TCP")
            address = f"{protocol.lower()}://{host}:{port.get('port')}"
            if i == 0:
                env[f"{prefix}_PORT"] = address
            port_prefix = f"{prefix}_PORT_{port.get('port')}_{protocol.upper()}"
            env[port_prefix] = address
            env[f"{port_prefix}_PROTO"] = protocol.lower()
            env[f"{port_prefix}_PORT"] = str(port.get("port"))
            env[f"{port_prefix}_ADDR"] = ip
    return env


def container_env(context: PodContext, container: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The container's environment in the kubelet's order: the Services'
    variables, then ``envFrom`` sources, then ``env`` (later names win; each
    value may refer to the variables before it). Raises ``ConfigError``."""
    env: dict[str, str] = dict(context.service_env)
    for source in container.get("envFrom") or []:
        prefix = str(source.get("prefix") or "")
        for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
            ref = source.get(key)
            if not ref:
                continue
            data = _object_data(context, kind, ref)
            if data is None:
                continue
            for k, v in data.items():
                env[prefix + k] = v
    for var in container.get("env") or []:
        name = str(var.get("name") or "")
        value_from = var.get("valueFrom")
        if value_from is None:
            env[name] = expand(str(var.get("value") or ""), env)
            continue
        value = _value_from(context, container, value_from)
        if value is not None:
            env[name] = value
    return list(env.items())


def _object_data(
    context: PodContext, kind: str, ref: Mapping[str, Any], key: str | None = None
) -> dict[str, str] | None:
    """An object's data (decoded for Secrets), None when it is missing and
    ``optional``; raises ``ConfigError`` when it is missing and required."""
    name = str(ref.get("name") or "")
    optional = bool(ref.get("optional"))
    obj = context.objects.get((kind, name))
    if obj is None:
        if optional:
            return None
        raise ConfigError(f'{kind.lower()} "{name}" not found')
    data: dict[str, str] = {}
    if kind == "Secret":
        for k, v in (obj.get("data") or {}).items():
            try:
                data[k] = base64.b64decode(str(v)).decode(errors="replace")
            except binascii.Error:
                raise ConfigError(f'secret "{name}" key "{k}" is not base64') from None
        data.update({k: str(v) for k, v in (obj.get("stringData") or {}).items()})
    else:
        data.update({k: str(v) for k, v in (obj.get("data") or {}).items()})
    if key is not None and key not in data:
        if optional:
            return None
        raise ConfigError(f"couldn't find key {key} in {kind} {context.paths.namespace}/{name}")
    return data


def _value_from(
    context: PodContext, container: Mapping[str, Any], value_from: Mapping[str, Any]
) -> str | None:
    if "fieldRef" in value_from:
        return field_value(context, str((value_from["fieldRef"] or {}).get("fieldPath") or ""))
    if "resourceFieldRef" in value_from:
        return resource_value(context, container, value_from["resourceFieldRef"] or {})
    for kind, ref_key in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
        if ref_key in value_from:
            ref = value_from[ref_key] or {}
            key = str(ref.get("key") or "")
            data = _object_data(context, kind, ref, key)
            return None if data is None else data[key]
    raise ConfigError(f"unsupported valueFrom: {sorted(value_from)}")


def field_value(context: PodContext, path: str, use: str = "an environment variable") -> str:
    """The downward API's ``fieldRef`` (for environment variables, and the
    single values of downward API files)."""
    pod = context.request.pod
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    match = _FIELD_SUBSCRIPT.fullmatch(path)
    if match:
        return str((meta.get(match[1]) or {}).get(match[2], ""))
    values = {
        "metadata.name": meta.get("name"),
        "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"),
        "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName"),
        # an instance is its own host: its host IP is the pod IP (as on ECI)
        "status.hostIP": context.pod_ip,
        "status.hostIPs": context.pod_ip,
        "status.podIP": context.pod_ip,
        "status.podIPs": context.pod_ip,
    }
    if path not in values:
        raise ConfigError(f"unsupported fieldRef fieldPath {path!r} for {use}")
    value = values[path]
    return "" if value is None else str(value)


def resource_value(
    context: PodContext, container: Mapping[str, Any], ref: Mapping[str, Any]
) -> str:
    """The downward API's ``resourceFieldRef``: limits default to the
    instance's size (a kubelet's node allocatable), CPU rounds up to the
    divisor."""
    target = container
    wanted = ref.get("containerName")
    if wanted:
        matches = [c for c in all_containers(context.request.pod) if c.get("name") == wanted]
        if not matches:
            raise ConfigError(f'resourceFieldRef names an unknown container "{wanted}"')
        target = matches[0]
    resource = str(ref.get("resource") or "")
    try:
        divisor = quantities.parse(ref.get("divisor") or "1")
    except quantities.QuantityError as e:
        raise ConfigError(f"resourceFieldRef divisor: {e}") from None
    if divisor <= 0:
        raise ConfigError("resourceFieldRef divisor must be positive")
    kind, _, name = resource.partition(".")
    if kind not in ("limits", "requests") or name not in ("cpu", "memory", "ephemeral-storage"):
        raise ConfigError(f"unsupported resourceFieldRef resource {resource!r}")
    resources = target.get("resources") or {}
    value = _quantity((resources.get(kind) or {}).get(name))
    request = context.request
    if kind == "limits":
        capacity = {
            "cpu": Decimal(str(request.vcpu)),
            "memory": Decimal(str(request.memory_gib)) * GIB,
            "ephemeral-storage": Decimal(0),
        }[name]
        if value is None or (capacity > 0 and value > capacity):
            value = capacity
    value = value or Decimal(0)
    if name == "cpu":
        # milli-units, as upstream's convertResourceCPUToString
        return str(math.ceil((value * 1000).to_integral_value() / (divisor * 1000)))
    return str(math.ceil(value / divisor))


def _quantity(value: object) -> Decimal | None:
    if value is None:
        return None
    try:
        return quantities.parse(value)
    except quantities.QuantityError as e:
        raise ConfigError(str(e)) from None


# --- resources and security ---


def linux_resources(
    container: Mapping[str, Any], vcpu: float, memory_gib: float
) -> pb.LinuxContainerResources:
    """CPU quota and memory limit from the instance's size, or the
    container's own limits where those are lower; CPU shares from its
    request."""
    resources = container.get("resources") or {}
    limits = resources.get("limits") or {}
    requests = resources.get("requests") or {}
    cpus = Decimal(str(vcpu)) if vcpu > 0 else None
    cpu_limit = _quantity(limits.get("cpu"))
    if cpu_limit is not None and (cpus is None or cpu_limit < cpus):
        cpus = cpu_limit
    memory = Decimal(str(memory_gib)) * GIB if memory_gib > 0 else None
    memory_limit = _quantity(limits.get("memory"))
    if memory_limit is not None and (memory is None or memory_limit < memory):
        memory = memory_limit
    share_cpus = _quantity(requests.get("cpu")) or cpus or Decimal(0)
    out = pb.LinuxContainerResources(
        cpu_shares=max(2, int(share_cpus * 1024)),
    )
    if cpus is not None and cpus > 0:
        out.cpu_period = cgroups.CPU_PERIOD_US
        out.cpu_quota = cgroups.cpu_quota(float(cpus))
    if memory is not None and memory > 0:
        out.memory_limit_in_bytes = int(memory)
    return out


def _security_value(pod: Mapping[str, Any], container: Mapping[str, Any], key: str) -> Any:
    """A container's securityContext value, else the pod's."""
    own = (container.get("securityContext") or {}).get(key)
    if own is not None:
        return own
    return ((pod.get("spec") or {}).get("securityContext") or {}).get(key)


# What the kubelet asks the runtime to hide and to make read-only in every
# container's /proc and /sys (k8s.io/kubernetes pkg/securitycontext): the
# runtime applies exactly the lists it is given, so without them a container
# could read /proc/kcore or write /proc/sysrq-trigger.
DEFAULT_MASKED_PATHS = (
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
)
DEFAULT_READONLY_PATHS = (
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
)


def security_context(
    pod: Mapping[str, Any], container: Mapping[str, Any], image: pb.Image | None
) -> pb.LinuxContainerSecurityContext:
    """The container's Linux security context; checks ``runAsNonRoot``
    against the user it will run as, as the kubelet does. Raises
    ``ConfigError``."""
    own = container.get("securityContext") or {}
    context = pb.LinuxContainerSecurityContext(
        namespace_options=namespace_options(pod),
        readonly_rootfs=bool(own.get("readOnlyRootFilesystem")),
        privileged=bool(own.get("privileged")),
        no_new_privs=own.get("allowPrivilegeEscalation") is False,
        supplemental_groups=supplemental_groups(pod),
    )
    # procMount "Unmasked" (and a privileged container) sees /proc as it is
    if own.get("procMount") != "Unmasked" and not own.get("privileged"):
        context.masked_paths.extend(DEFAULT_MASKED_PATHS)
        context.readonly_paths.extend(DEFAULT_READONLY_PATHS)
    run_as_user = _security_value(pod, container, "runAsUser")
    if run_as_user is not None:
        context.run_as_user.value = int(run_as_user)
    run_as_group = _security_value(pod, container, "runAsGroup")
    if run_as_group is not None:
        context.run_as_group.value = int(run_as_group)
    capabilities = own.get("capabilities") or {}
    if capabilities:
        context.capabilities.CopyFrom(
            pb.Capability(
                add_capabilities=[str(c) for c in capabilities.get("add") or []],
                drop_capabilities=[str(c) for c in capabilities.get("drop") or []],
            )
        )
    context.seccomp.CopyFrom(_seccomp(_security_value(pod, container, "seccompProfile")))
    if _security_value(pod, container, "runAsNonRoot"):
        _verify_non_root(pod, container, run_as_user, image)
    return context


def _seccomp(profile: Any) -> pb.SecurityProfile:
    kind = str((profile or {}).get("type") or "Unconfined")
    if kind == "RuntimeDefault":
        return pb.SecurityProfile(profile_type=pb.SecurityProfile.RuntimeDefault)
    if kind == "Localhost":
        return pb.SecurityProfile(
            profile_type=pb.SecurityProfile.Localhost,
            localhost_ref=str(profile.get("localhostProfile") or ""),
        )
    return pb.SecurityProfile(profile_type=pb.SecurityProfile.Unconfined)


def _verify_non_root(
    pod: Mapping[str, Any], container: Mapping[str, Any], run_as_user: Any, image: pb.Image | None
) -> None:
    """The kubelet's ``verifyRunAsNonRoot``: an image without a user runs as root."""
    meta = pod.get("metadata") or {}
    where = (
        f'(pod: "{meta.get("name")}_{meta.get("namespace")}({meta.get("uid")})", '
        f"container: {container.get('name')})"
    )
    if run_as_user is not None:
        if int(run_as_user) == 0:
            raise ConfigError(f"container's runAsUser breaks non-root policy {where}")
        return
    if image is not None and image.HasField("uid"):
        uid: int | None = image.uid.value
    elif image is not None and image.username:
        raise ConfigError(
            f"container has runAsNonRoot and image has non-numeric user ({image.username}), "
            f"cannot verify user is non-root {where}"
        )
    else:
        uid = 0
    if uid == 0:
        raise ConfigError(f"container has runAsNonRoot and image will run as root {where}")


def container_specs(pod: Mapping[str, Any]) -> tuple[list[Obj], list[Obj]]:
    spec = pod.get("spec") or {}
    return list(spec.get("initContainers") or []), list(spec.get("containers") or [])


def names(containers: Sequence[Mapping[str, Any]]) -> list[str]:
    return [str(c.get("name") or "") for c in containers]
