"""The files of configMap, secret, downwardAPI and projected volumes, and the
PersistentVolume directory behind a persistentVolumeClaim volume, set up on
the host as the kubelet sets them up.

These volumes need the API (the objects they project, a service account
token, the claim and its volume), so they are read through callbacks the
provider is given; ``podconfigs`` only describes them. A volume that cannot
be set up yet (its object is missing, a required key is absent, the claim is
not bound) raises ``VolumeNotReady``: the pod waits in ``ContainerCreating``
and the provider tries again, as the kubelet does. ``optional`` objects and
keys that are missing leave their files out instead.

The files are written on the event loop, not in a thread: a volume's files
are a few small ones (on the shared tmpfs for secrets and projections), and
on a 2-core VM a hop to a thread and back costs more CPU (~0.3 ms, and GIL
hand-overs for the whole process) than writing them.

File volumes are written the kubelet's atomic way, so that a container
never reads half an update::

    <volume>/..2026_01_01_00_00_00.x7k2/   one version of every file
    <volume>/..data -> ..2026_01_01_00_00_00.x7k2
    <volume>/<key> -> ..data/<key>           what containers open

A new version is a new timestamped directory; ``..data`` is swapped to it
by one ``rename(2)``, then the old version is removed. Content that has not
changed is not written again, so a periodic refresh of a running pod (the
kubelet's resync) swaps only when something did change. A projected token is
kept until 80% of its lifetime has passed (or a day), as the kubelet's token
manager keeps it.

Modes are the items' ``mode`` or the volume's ``defaultMode`` (0644). With a
pod ``fsGroup`` every file and directory is owned by that group and group
readable, and a token is 0600 (owned by the containers' common
``runAsUser``, if they have one), as upstream's volume ownership rules say.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime
import json
import logging
import os
import shutil
import stat
import tempfile
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nodeless import clocks
from nodeless.instances.providers.cri import podconfigs

log = logging.getLogger(__name__)

Obj = dict[str, Any]

DATA_DIR = "..data"
DATA_DIR_TMP = "..data_tmp"
TOKEN_FILE_MODE = 0o600
DIRECTORY_MODE = 0o755
GROUP_READ = 0o440
GROUP_DIRECTORY = 0o2550  # setgid, and readable and searchable by owner and group
# The kubelet's token manager renews at 80% of the lifetime, and after a day at most.
TOKEN_RENEW_SHARE = 0.8
TOKEN_MAX_AGE = 24 * 3600

# (kind, namespace, name) -> the object, None if it does not exist. Kinds:
# "ConfigMap", "Secret", "PersistentVolumeClaim", "PersistentVolume" (cluster
# scoped: namespace "").
ObjectLookup = Callable[[str, str, str], Awaitable[Obj | None]]


@dataclass(frozen=True)
class TokenRequest:
    """A service account token for a pod's projected volume (what the
    kubelet asks ``serviceaccounts/<name>/token`` for, bound to the pod)."""

    namespace: str
    service_account: str
    audiences: tuple[str, ...]
    expiration_seconds: int
    pod_name: str
    pod_uid: str


# A signed token for the request; raises when none can be issued.
TokenLookup = Callable[[TokenRequest], Awaitable[str]]
# Makes sure the tmpfs that holds secret and projected volumes is mounted.
MemoryReady = Callable[[], Awaitable[None]]


class VolumeNotReady(Exception):
    """A volume cannot be set up yet; the pod waits and it is tried again."""


@dataclass(frozen=True)
class FileContent:
    data: bytes
    mode: int
    uid: int | None = None  # the owner; None leaves the writer's


Payload = dict[str, FileContent]


@dataclass(frozen=True)
class Ownership:
    """Upstream's ``fsGroup`` (the pod's) and ``fsUser`` (the run-as user
    every container shares, if they all name the same one)."""

    fs_group: int | None = None
    fs_user: int | None = None

    @classmethod
    def of(cls, pod: Mapping[str, Any]) -> Ownership:
        spec = pod.get("spec") or {}
        pod_security = spec.get("securityContext") or {}
        fs_group = pod_security.get("fsGroup")
        users = set()
        for container in podconfigs.all_containers(pod):
            user = (container.get("securityContext") or {}).get("runAsUser")
            if user is None:
                user = pod_security.get("runAsUser")
            users.add(None if user is None else int(user))
        fs_user = next(iter(users)) if len(users) == 1 else None
        return cls(None if fs_group is None else int(fs_group), fs_user)

    def file_mode(self, mode: int) -> int:
        return mode | GROUP_READ if self.fs_group is not None else mode

    def directory_mode(self) -> int:
        return DIRECTORY_MODE | (GROUP_DIRECTORY if self.fs_group is not None else 0)


# --- what a volume holds ---


async def payload(
    volume: podconfigs.FileVolume,
    context: podconfigs.PodContext,
    *,
    objects: ObjectLookup | None,
    tokens: TokenLookup | None,
    now: datetime.datetime,
    current: Path | None = None,
) -> Payload:
    """Every file of the volume, later projections winning on the same path.
    ``current`` is the volume's directory when it exists, whose token is
    kept while it is fresh. Raises ``VolumeNotReady``."""
    ownership = Ownership.of(context.request.pod)
    out: Payload = {}
    for projection in volume.projections:
        if isinstance(projection, podconfigs.ObjectFiles):
            obj = await _lookup(objects, projection.kind, context.paths.namespace, projection.name)
            out.update(object_payload(projection, obj, volume.default_mode))
        elif isinstance(projection, podconfigs.DownwardFiles):
            out.update(downward_payload(projection, context, volume.default_mode))
        else:
            out[projection.path] = await _token_payload(
                projection, context, volume.default_mode, ownership, tokens, now, current
            )
    return out


def object_payload(
    files: podconfigs.ObjectFiles, obj: Mapping[str, Any] | None, default_mode: int
) -> Payload:
    """A ConfigMap's or Secret's keys as files (``obj`` None: it does not
    exist). Raises ``VolumeNotReady`` for what is missing and not optional."""
    kind = files.kind.lower()
    if obj is None:
        if files.optional:
            return {}
        raise VolumeNotReady(f'{kind} "{files.name}" not found')
    data = object_data(files.kind, obj)
    out: Payload = {}
    if not files.items:
        for key, value in data.items():
            try:
                path = podconfigs.volume_file_path(files.name, key)
            except podconfigs.UnsupportedVolume:
                raise VolumeNotReady(
                    f'{kind} "{files.name}" key {key!r} cannot name a file'
                ) from None
            out[path] = FileContent(value, default_mode)
        return out
    for item in files.items:
        if item.key not in data:
            if files.optional:
                continue
            noun = "config" if files.kind == "ConfigMap" else "secret"
            raise VolumeNotReady(f"{kind} references non-existent {noun} key: {item.key}")
        mode = default_mode if item.mode is None else item.mode
        out[item.path] = FileContent(data[item.key], mode)
    return out


def object_data(kind: str, obj: Mapping[str, Any]) -> dict[str, bytes]:
    """A Secret's ``data`` decoded (and any ``stringData``); a ConfigMap's
    ``data`` and decoded ``binaryData``."""
    name = str((obj.get("metadata") or {}).get("name") or "")
    encoded = "data" if kind == "Secret" else "binaryData"
    plain = "stringData" if kind == "Secret" else "data"
    out: dict[str, bytes] = {}
    for key, value in (obj.get(plain) or {}).items():
        out[str(key)] = str(value).encode()
    for key, value in (obj.get(encoded) or {}).items():
        try:
            out[str(key)] = base64.b64decode(str(value), validate=True)
        except binascii.Error:
            raise VolumeNotReady(f'{kind.lower()} "{name}" key "{key}" is not base64') from None
    return out


def downward_payload(
    files: podconfigs.DownwardFiles, context: podconfigs.PodContext, default_mode: int
) -> Payload:
    """The downward API's files. Raises ``VolumeNotReady``."""
    meta = context.request.pod.get("metadata") or {}
    out: Payload = {}
    for item in files.items:
        try:
            if item.field_path in ("metadata.labels", "metadata.annotations"):
                text = format_map(meta.get(item.field_path.split(".")[1]) or {})
            elif item.field_path:
                text = podconfigs.field_value(context, item.field_path, "a downward API volume")
            else:
                ref = {
                    "resource": item.resource,
                    "containerName": item.container_name,
                    "divisor": item.divisor or None,
                }
                text = podconfigs.resource_value(context, {}, ref)
        except podconfigs.ConfigError as e:
            raise VolumeNotReady(f"downward API file {item.path!r}: {e}") from None
        mode = default_mode if item.mode is None else item.mode
        out[item.path] = FileContent(text.encode(), mode)
    return out


def format_map(values: Mapping[str, Any]) -> str:
    """Labels or annotations as the kubelet's ``fieldpath.FormatMap`` writes
    them: ``key="value"`` lines, sorted by key, values quoted as Go's ``%q``,
    no newline at the end."""
    return "\n".join(f"{k}={go_quote(str(values[k]))}" for k in sorted(values))


_GO_ESCAPES = {
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
    '"': '\\"',
    "\\": "\\\\",
}


def go_quote(text: str) -> str:
    """Go's ``strconv.Quote``: printable characters as they are, the rest escaped."""
    out = []
    for char in text:
        if char in _GO_ESCAPES:
            out.append(_GO_ESCAPES[char])
        elif char.isprintable() or char == " ":
            out.append(char)
        elif ord(char) < 0x80:
            out.append(f"\\x{ord(char):02x}")
        elif ord(char) <= 0xFFFF:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(f"\\U{ord(char):08x}")
    return '"' + "".join(out) + '"'


async def _token_payload(
    token: podconfigs.TokenFile,
    context: podconfigs.PodContext,
    default_mode: int,
    ownership: Ownership,
    tokens: TokenLookup | None,
    now: datetime.datetime,
    current: Path | None,
) -> FileContent:
    restricted = ownership.fs_user is not None or ownership.fs_group is not None
    mode = TOKEN_FILE_MODE if restricted else default_mode
    if current is not None:
        kept = _fresh_token(current / token.path, token, now)
        if kept is not None:
            return FileContent(kept.encode(), mode, ownership.fs_user)
    if tokens is None:
        raise VolumeNotReady("no service account token issuer is configured")
    pod = context.request.pod
    spec = pod.get("spec") or {}
    meta = pod.get("metadata") or {}
    request = TokenRequest(
        namespace=context.paths.namespace,
        service_account=str(
            spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
        ),
        audiences=(token.audience,) if token.audience else (),
        expiration_seconds=token.expiration_seconds,
        pod_name=str(meta.get("name") or context.paths.name),
        pod_uid=str(meta.get("uid") or context.paths.uid),
    )
    try:
        issued = await tokens(request)
    except Exception as e:
        raise VolumeNotReady(
            f"failed to fetch token for service account {request.service_account}: {e}"
        ) from None
    return FileContent(issued.encode(), mode, ownership.fs_user)


def _fresh_token(path: Path, token: podconfigs.TokenFile, now: datetime.datetime) -> str | None:
    """The token already written at ``path`` while it needs no renewing."""
    try:
        text = path.read_text()
        claims = json.loads(_unb64(text.split(".")[1]))
        issued, expires = int(claims["iat"]), int(claims["exp"])
    except (OSError, IndexError, KeyError, TypeError, ValueError):
        return None
    if expires - issued != token.expiration_seconds:
        return None
    renew_at = issued + min(TOKEN_RENEW_SHARE * (expires - issued), TOKEN_MAX_AGE)
    return text if now.timestamp() < renew_at else None


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


async def _lookup(objects: ObjectLookup | None, kind: str, namespace: str, name: str) -> Obj | None:
    if objects is None:
        return None
    try:
        return await objects(kind, namespace, name)
    except Exception as e:
        raise VolumeNotReady(f'reading {kind.lower()} "{name}": {e}') from None


# --- writing, atomically ---


def write_atomic(
    directory: Path,
    files: Mapping[str, FileContent],
    now: datetime.datetime,
    ownership: Ownership = Ownership(),
) -> bool:
    """``files`` as the volume's content in ``directory`` (which exists),
    the kubelet's atomic way; returns whether anything was written (the
    same content is left alone)."""
    old_name = _data_dir_name(directory)
    old_dir = directory / old_name if old_name else None
    old_paths = _files_under(old_dir) if old_dir is not None else None
    if old_dir is not None and old_paths == set(files) and _same(old_dir, files, ownership):
        _link_visible(directory, files)
        return False
    new_dir = Path(tempfile.mkdtemp(prefix=now.strftime("..%Y_%m_%d_%H_%M_%S."), dir=directory))
    try:
        _own_directory(new_dir, ownership)
        for path, content in sorted(files.items()):
            target = new_dir / path
            _make_parents(new_dir, target.parent, ownership)
            with open(target, "xb") as f:
                f.write(content.data)
            if content.uid is not None or ownership.fs_group is not None:
                os.chown(
                    target,
                    -1 if content.uid is None else content.uid,
                    -1 if ownership.fs_group is None else ownership.fs_group,
                )
            os.chmod(target, ownership.file_mode(content.mode))
        link = directory / DATA_DIR_TMP
        with contextlib.suppress(FileNotFoundError):
            link.unlink()
        os.symlink(new_dir.name, link)
        os.rename(link, directory / DATA_DIR)
    except BaseException:
        shutil.rmtree(new_dir, ignore_errors=True)
        raise
    _link_visible(directory, files)
    gone = {p.split("/")[0] for p in old_paths or ()} - {p.split("/")[0] for p in files}
    for name in gone:
        visible = directory / name
        if visible.is_symlink():
            visible.unlink()
    if old_dir is not None:
        shutil.rmtree(old_dir, ignore_errors=True)
    return True


def read_files(directory: Path) -> dict[str, bytes]:
    """What a container sees in the volume: every file through ``..data``."""
    name = _data_dir_name(directory)
    if name is None:
        return {}
    return {p: (directory / p).read_bytes() for p in sorted(_files_under(directory / name))}


def _data_dir_name(directory: Path) -> str | None:
    try:
        name = os.readlink(directory / DATA_DIR)
    except OSError:
        return None
    if "/" in name or not name.startswith("..") or not (directory / name).is_dir():
        return None
    return name


def _files_under(root: Path) -> set[str]:
    found = set()
    for base, _, names in os.walk(root):
        for name in names:
            found.add(os.path.relpath(os.path.join(base, name), root))
    return found


def _same(old_dir: Path, files: Mapping[str, FileContent], ownership: Ownership) -> bool:
    for path, content in files.items():
        target = old_dir / path
        try:
            info = target.lstat()
            if not stat.S_ISREG(info.st_mode):
                return False
            if stat.S_IMODE(info.st_mode) != ownership.file_mode(content.mode):
                return False
            if target.read_bytes() != content.data:
                return False
        except OSError:
            return False
    return True


def _make_parents(root: Path, parent: Path, ownership: Ownership) -> None:
    missing = []
    while parent != root and not parent.is_dir():
        missing.append(parent)
        parent = parent.parent
    for directory in reversed(missing):
        directory.mkdir()
        _own_directory(directory, ownership)


def _write_present(
    directory: Path, files: Mapping[str, FileContent], now: datetime.datetime, ownership: Ownership
) -> bool | None:
    """``write_atomic`` unless the directory is gone (None then)."""
    if not directory.is_dir():
        return None
    return write_atomic(directory, files, now, ownership)


def _make_own_directory(directory: Path, ownership: Ownership) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    _own_directory(directory, ownership)


def _own_directory(directory: Path, ownership: Ownership) -> None:
    if ownership.fs_group is not None:
        os.chown(directory, -1, ownership.fs_group)
    os.chmod(directory, ownership.directory_mode())


def _link_visible(directory: Path, files: Mapping[str, FileContent]) -> None:
    """``name -> ..data/name`` for each top-level name (what is already
    there, a link or a subPath's directory, is left as it is)."""
    for name in sorted({p.split("/")[0] for p in files}):
        visible = directory / name
        if not visible.is_symlink() and not visible.exists():
            os.symlink(f"{DATA_DIR}/{name}", visible)


# --- claims ---


@dataclass(frozen=True)
class ClaimTarget:
    """Where a claim's data lives on the host."""

    path: Path
    create: bool  # a hostPath of type "" or DirectoryOrCreate: made when missing


async def claim_target(
    volume: podconfigs.ClaimVolume, namespace: str, objects: ObjectLookup | None
) -> ClaimTarget:
    """The directory of the PersistentVolume the claim is bound to, as the
    kubelet checks it: the claim exists, is not being deleted, is Bound to a
    volume that exists and names it back. Raises ``VolumeNotReady`` (the pod
    waits), or ``UnsupportedVolume`` for a volume this provider cannot mount
    (neither ``hostPath`` nor ``local``)."""
    if objects is None:
        raise VolumeNotReady("no API to read persistentvolumeclaims from")
    claim = await _lookup(objects, "PersistentVolumeClaim", namespace, volume.claim)
    if claim is None:
        raise VolumeNotReady(f'persistentvolumeclaim "{volume.claim}" not found')
    meta = claim.get("metadata") or {}
    if meta.get("deletionTimestamp"):
        raise VolumeNotReady(f"persistentvolumeclaim {namespace}/{volume.claim} is being deleted")
    volume_name = str((claim.get("spec") or {}).get("volumeName") or "")
    phase = str((claim.get("status") or {}).get("phase") or "")
    if phase != "Bound" or not volume_name:
        raise VolumeNotReady(
            f"PVC {namespace}/{volume.claim} has non-bound phase ({phase!r}) "
            f"or empty pvc.Spec.VolumeName ({volume_name!r})"
        )
    persistent = await _lookup(objects, "PersistentVolume", "", volume_name)
    if persistent is None:
        raise VolumeNotReady(f'persistentvolume "{volume_name}" not found')
    spec = persistent.get("spec") or {}
    claim_uid = str(meta.get("uid") or "")
    bound_uid = str((spec.get("claimRef") or {}).get("uid") or "")
    if claim_uid and bound_uid and claim_uid != bound_uid:
        raise VolumeNotReady(f"pvc.UID ({claim_uid}) != pv.ClaimRef.UID ({bound_uid})")
    if spec.get("hostPath"):
        path = str(spec["hostPath"].get("path") or "")
        create = str(spec["hostPath"].get("type") or "") in ("", "DirectoryOrCreate")
    elif spec.get("local"):
        path, create = str(spec["local"].get("path") or ""), False
    else:
        raise podconfigs.UnsupportedVolume(
            f'volume "{volume.name}": persistentvolume "{volume_name}" is neither a hostPath '
            "nor a local volume, the only ones this provider mounts"
        )
    if not path.startswith("/"):
        raise podconfigs.UnsupportedVolume(
            f'volume "{volume.name}": persistentvolume "{volume_name}" path {path!r} is not absolute'
        )
    return ClaimTarget(Path(path), create)


def link_claim(link: Path, target: ClaimTarget) -> None:
    """``link`` -> the volume's directory: the pod's handle on data that is
    never its own (removing the pod's directory removes the link, never the
    data)."""
    if target.create:
        target.path.mkdir(parents=True, exist_ok=True)
    elif not target.path.is_dir():
        raise VolumeNotReady(f"{target.path} is not a directory")
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink():
        if os.readlink(link) == str(target.path):
            return
        link.unlink()
    os.symlink(target.path, link)


# --- one pod's volumes ---


class PodVolumes:
    """Sets up and refreshes one pod's configMap, secret, downwardAPI,
    projected and persistentVolumeClaim volumes (emptyDirs are the
    provider's). ``memory_ready`` is awaited before a secret or projected
    volume is set up: the provider mounts the tmpfs they live on (without it
    they are plain directories)."""

    def __init__(
        self,
        context: podconfigs.PodContext,
        clock: clocks.Clock,
        *,
        objects: ObjectLookup | None = None,
        tokens: TokenLookup | None = None,
        memory_ready: MemoryReady | None = None,
    ) -> None:
        self.context = context
        self.clock = clock
        self.objects = objects
        self.tokens = tokens
        self.memory_ready = memory_ready
        self.ownership = Ownership.of(context.request.pod)

    async def set_up(self, volumes: Sequence[podconfigs.Volume]) -> dict[str, Path]:
        """Each volume's host directory, by name. Raises ``VolumeNotReady``
        (retry later: what was set up stays) or ``UnsupportedVolume``."""
        dirs: dict[str, Path] = {}
        for volume in volumes:
            try:
                if isinstance(volume, podconfigs.FileVolume):
                    dirs[volume.name] = await self._set_up_files(volume)
                elif isinstance(volume, podconfigs.ClaimVolume):
                    dirs[volume.name] = await self._set_up_claim(volume)
            except VolumeNotReady as e:
                raise VolumeNotReady(
                    f'MountVolume.SetUp failed for volume "{volume.name}" : {e}'
                ) from None
        return dirs

    async def refresh(self, volumes: Sequence[podconfigs.Volume]) -> list[str]:
        """Rewrites the file volumes whose content changed; returns their
        names. One that cannot be read now keeps its files, as the kubelet's
        do."""
        changed = []
        for volume in volumes:
            if not isinstance(volume, podconfigs.FileVolume):
                continue
            directory = self.context.volume_dirs.get(volume.name) or podconfigs.volume_dir(
                self.context.paths, volume
            )
            try:
                if await self._write(volume, directory):
                    changed.append(volume.name)
            except (VolumeNotReady, OSError) as e:
                log.info(
                    "volume %s of %s/%s not refreshed: %s",
                    volume.name,
                    self.context.paths.namespace,
                    self.context.paths.name,
                    e,
                )
        return changed

    async def _set_up_files(self, volume: podconfigs.FileVolume) -> Path:
        directory = podconfigs.volume_dir(self.context.paths, volume)
        if volume.memory and self.memory_ready is not None:
            await self.memory_ready()
        _make_own_directory(directory, self.ownership)
        await self._write(volume, directory)
        return directory

    async def _write(self, volume: podconfigs.FileVolume, directory: Path) -> bool:
        now = self.clock.now()
        files = await payload(
            volume,
            self.context,
            objects=self.objects,
            tokens=self.tokens,
            now=now,
            current=directory,
        )
        written = _write_present(directory, files, now, self.ownership)
        if written is None:
            raise VolumeNotReady(f"{directory} is gone")
        return written

    async def _set_up_claim(self, volume: podconfigs.ClaimVolume) -> Path:
        target = await claim_target(volume, self.context.paths.namespace, self.objects)
        link = podconfigs.volume_dir(self.context.paths, volume)
        link_claim(link, target)
        return link


def needs_pod_ip(volumes: Sequence[podconfigs.Volume]) -> bool:
    """Whether a downward API file holds the pod's IP, which is known only
    once its sandbox runs (the volume is written again then)."""
    return any(
        isinstance(p, podconfigs.DownwardFiles)
        and any(i.field_path.startswith("status.") for i in p.items)
        for v in volumes
        if isinstance(v, podconfigs.FileVolume)
        for p in v.projections
    )
