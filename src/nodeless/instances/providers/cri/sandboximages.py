"""Container images Nodeless builds itself, from the host's static busybox.

containerd's CRI plugin needs a sandbox ("pause") image for every pod, and
nothing can be pulled on the machines Nodeless targets. So the image is built
here, in Python: one uncompressed layer holding ``/bin/busybox`` (Debian's
``busybox-static``) and a few applet links, an OCI image config, a manifest
and an OCI image-layout archive, then imported with ``ctr images import``
into the ``k8s.io`` namespace, where the CRI plugin looks for images. The same
builder makes small busybox images for tests.

Archives are deterministic: the same busybox gives the same digests, so
importing twice changes nothing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import io
import json
import logging
import platform
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

PAUSE_IMAGE = "nodeless.local/pause:1"
BUSYBOX_IMAGE = "nodeless.local/busybox:1"
BUSYBOX_PATH = Path("/bin/busybox")
CRI_NAMESPACE = "k8s.io"

# The pause process: stays up, exits 0 on SIGTERM (busybox sh as PID 1 would
# otherwise ignore it), dies on SIGKILL like anything else.
PAUSE_ENTRYPOINT = (
    "/bin/busybox",
    "sh",
    "-c",
    "trap 'exit 0' TERM; while :; do sleep 3600 & wait; done",
)

# Applets linked in /bin so that `sh -c`, `echo`, `sleep` ... work from PATH.
DEFAULT_APPLETS = (
    "sh",
    "echo",
    "sleep",
    "cat",
    "ls",
    "true",
    "false",
    "env",
    "hostname",
    "ip",
    "wget",
    "nc",
    "ps",
    "kill",
    "mkdir",
    "rm",
    "touch",
    "test",
    "[",
)

MEDIA_TYPE_LAYER = "application/vnd.oci.image.layer.v1.tar"
MEDIA_TYPE_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_TYPE_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_TYPE_INDEX = "application/vnd.oci.image.index.v1+json"
# containerd's own annotation for the full image name; `ctr images import`
# names the image by it, so the CRI plugin finds it under exactly this ref.
ANNOTATION_IMAGE_NAME = "io.containerd.image.name"
ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"

_GOARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


class ImageBuildError(Exception):
    """The image could not be built or imported; the message says why."""


def goarch(machine: str | None = None) -> str:
    """The OCI architecture name of this machine (Go's GOARCH spelling)."""
    m = (machine or platform.machine()).lower()
    return _GOARCH.get(m, m)


@dataclass(frozen=True)
class BusyboxImage:
    """What goes into a busybox image: its name and how it runs."""

    ref: str
    entrypoint: Sequence[str] = ()
    cmd: Sequence[str] = ()
    env: Sequence[str] = ("PATH=/bin",)
    applets: Sequence[str] = DEFAULT_APPLETS
    labels: dict[str, str] = field(default_factory=dict)
    user: str = ""  # the image config's User ("1000", "1000:1000", a name); "" is root

    def with_ref(self, ref: str) -> BusyboxImage:
        return dataclasses.replace(self, ref=ref)


PAUSE = BusyboxImage(PAUSE_IMAGE, entrypoint=PAUSE_ENTRYPOINT)
BUSYBOX = BusyboxImage(BUSYBOX_IMAGE, cmd=("sh",))


@dataclass(frozen=True)
class Blob:
    media_type: str
    data: bytes

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.data).hexdigest()

    def descriptor(self, **extra: Any) -> dict[str, Any]:
        return {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": len(self.data),
            **extra,
        }


@dataclass(frozen=True)
class OciImage:
    """An image in memory: its blobs, and the index that names it."""

    ref: str
    layer: Blob
    config: Blob
    manifest: Blob
    index: bytes

    @property
    def blobs(self) -> tuple[Blob, ...]:
        return (self.layer, self.config, self.manifest)


def _tar_entry(
    tar: tarfile.TarFile,
    name: str,
    kind: bytes,
    mode: int,
    data: bytes = b"",
    link: str = "",
) -> None:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.linkname = link
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


def build_layer(busybox: bytes, applets: Sequence[str] = DEFAULT_APPLETS) -> bytes:
    """The root filesystem as a tar: the directories a container expects,
    ``bin/busybox`` (0755) and one symlink per applet."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for d in ("bin", "dev", "etc", "proc", "sys", "root", "var"):
            _tar_entry(tar, d, tarfile.DIRTYPE, 0o755)
        _tar_entry(tar, "tmp", tarfile.DIRTYPE, 0o1777)
        _tar_entry(tar, "bin/busybox", tarfile.REGTYPE, 0o755, busybox)
        for applet in sorted(set(applets) - {"busybox"}):
            _tar_entry(tar, f"bin/{applet}", tarfile.SYMTYPE, 0o777, link="busybox")
    return buf.getvalue()


def build_image(spec: BusyboxImage, busybox: bytes, arch: str | None = None) -> OciImage:
    """Layer, config, manifest and index of one single-layer image."""
    arch = arch or goarch()
    layer = Blob(MEDIA_TYPE_LAYER, build_layer(busybox, spec.applets))
    container_config: dict[str, Any] = {"Env": list(spec.env), "WorkingDir": "/"}
    if spec.entrypoint:
        container_config["Entrypoint"] = list(spec.entrypoint)
    if spec.cmd:
        container_config["Cmd"] = list(spec.cmd)
    if spec.labels:
        container_config["Labels"] = dict(spec.labels)
    if spec.user:
        container_config["User"] = spec.user
    config_doc = {
        "architecture": arch,
        "os": "linux",
        "config": container_config,
        # Uncompressed layer: its diff ID is its digest.
        "rootfs": {"type": "layers", "diff_ids": [layer.digest]},
        "history": [{"created_by": "nodeless sandboximages", "comment": "busybox-static"}],
    }
    config = Blob(MEDIA_TYPE_CONFIG, _canonical_json(config_doc))
    manifest = Blob(
        MEDIA_TYPE_MANIFEST,
        _canonical_json(
            {
                "schemaVersion": 2,
                "mediaType": MEDIA_TYPE_MANIFEST,
                "config": config.descriptor(),
                "layers": [layer.descriptor()],
            }
        ),
    )
    index = _canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": MEDIA_TYPE_INDEX,
            "manifests": [
                manifest.descriptor(
                    platform={"architecture": arch, "os": "linux"},
                    annotations={
                        ANNOTATION_IMAGE_NAME: spec.ref,
                        ANNOTATION_REF_NAME: spec.ref,
                    },
                )
            ],
        }
    )
    return OciImage(spec.ref, layer, config, manifest, index)


def write_archive(image: OciImage, path: Path) -> Path:
    """Writes ``image`` as an OCI image-layout tar archive (what
    ``ctr images import`` reads) and returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, mode="w", format=tarfile.PAX_FORMAT) as tar:
        _tar_entry(tar, "oci-layout", tarfile.REGTYPE, 0o644, b'{"imageLayoutVersion":"1.0.0"}')
        _tar_entry(tar, "index.json", tarfile.REGTYPE, 0o644, image.index)
        _tar_entry(tar, "blobs", tarfile.DIRTYPE, 0o755)
        _tar_entry(tar, "blobs/sha256", tarfile.DIRTYPE, 0o755)
        for blob in image.blobs:
            name = "blobs/sha256/" + blob.digest.removeprefix("sha256:")
            _tar_entry(tar, name, tarfile.REGTYPE, 0o644, blob.data)
    return path


def all_applets(path: Path = BUSYBOX_PATH) -> tuple[str, ...]:
    """Every applet ``path`` was built with (``busybox --list``), for images
    that should behave like a small distribution rather than a pause process."""
    try:
        listed = subprocess.run(
            [str(path), "--list"], capture_output=True, check=True, text=True, timeout=10
        ).stdout
    except (OSError, subprocess.SubprocessError) as e:
        raise ImageBuildError(f"{path} --list failed: {e}") from None
    return tuple(sorted({a for a in listed.split() if a and "/" not in a}))


def read_busybox(path: Path = BUSYBOX_PATH) -> bytes:
    """The host's busybox; it must be static, since the image has no libc."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ImageBuildError(
            f"{path} not found: install busybox-static (scripts/install-system-packages.sh)"
        ) from None
    if b"/ld-linux" in data[:4096] or b"/ld-musl" in data[:4096]:  # has an ELF interpreter
        raise ImageBuildError(f"{path} is dynamically linked: install busybox-static")
    return data


async def import_image(
    address: str,
    archive: Path,
    *,
    snapshotter: str = "",
    namespace: str = CRI_NAMESPACE,
    ctr: str = "ctr",
) -> None:
    """Imports and unpacks an OCI archive into containerd at ``address``."""
    ctr_path = shutil.which(ctr)
    if ctr_path is None:
        raise ImageBuildError(f"{ctr!r} not found: install containerd")
    args = [ctr_path, "--address", address, "--namespace", namespace, "images", "import"]
    if snapshotter:
        args += ["--snapshotter", snapshotter]
    args.append(str(archive))
    proc = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise ImageBuildError(
            f"ctr images import {archive.name} failed ({proc.returncode}): "
            f"{out.decode(errors='replace').strip()}"
        )
    log.debug("imported %s: %s", archive.name, out.decode(errors="replace").strip())


async def build_and_import(
    spec: BusyboxImage,
    address: str,
    *,
    snapshotter: str = "",
    busybox_path: Path = BUSYBOX_PATH,
) -> OciImage:
    """Builds ``spec`` from the host busybox and imports it into containerd's
    ``k8s.io`` namespace under ``spec.ref`` (through a temporary archive)."""
    image = build_image(spec, read_busybox(busybox_path))
    with tempfile.TemporaryDirectory(prefix="nodeless-image-") as tmp:
        archive = write_archive(image, Path(tmp) / "image.oci.tar")
        await import_image(address, archive, snapshotter=snapshotter)
    return image


def _canonical_json(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
