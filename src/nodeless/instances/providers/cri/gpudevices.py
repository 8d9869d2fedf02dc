"""The host's NVIDIA GPUs handed to containers, the way a device plugin and
the NVIDIA container toolkit hand them to a kubelet's containers.

A GPU instance on real containers is whole GPUs of this host. ``discover``
finds what the driver put on the host: the GPU device nodes
(``/dev/nvidia0``...), the control nodes every CUDA process opens
(``/dev/nvidiactl``, ``/dev/nvidia-uvm``...), the driver's user-space
libraries and its tools, and the GPUs a CDI spec names (``nvidia-ctk cdi
generate`` writes one under ``/etc/cdi`` or ``/var/run/cdi``).

``GpuAllocator`` gives each instance GPUs by index and remembers whose they
are; the indices ride on the sandbox as an annotation, so a restarted
provider learns them again rather than handing a GPU out twice.

``container_exposures`` shares an instance's GPUs among its containers by
their ``nvidia.com/gpu`` limits, and ``Exposure`` is one container's share as
CRI sees it: CDI names where the runtime resolves CDI (containerd 1.7 and
later, with a spec naming these GPUs), else the device nodes themselves plus
read-only mounts of the libraries and tools under ``/usr/local/nvidia/lib64``
and ``/usr/local/nvidia/bin`` (where GKE puts them, and where CUDA images'
``LD_LIBRARY_PATH`` and ``PATH`` already look, so the image's own variables
stay as they are). ``NVIDIA_VISIBLE_DEVICES`` says which GPUs, as the NVIDIA
device plugin says it.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import yaml

from nodeless.instances.providers.cri import runtime_pb2 as pb
from nodeless.serverless import quantities, sizing

log = logging.getLogger(__name__)

GPU_RESOURCE: Final = sizing.GPU_RESOURCE
CDI_KIND: Final = "nvidia.com/gpu"
# The sandbox annotation holding the instance's GPU indices ("0,1").
ANNOTATION_GPUS: Final = "nodeless.dev/gpu-devices"
VISIBLE_DEVICES_ENV: Final = "NVIDIA_VISIBLE_DEVICES"

DEVICE_DIR: Final = Path("/dev")
# Opened by every CUDA process whatever GPU it uses.
CONTROL_DEVICES: Final = ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset")
LIBRARY_DIRS: Final = (
    Path("/usr/lib/x86_64-linux-gnu"),
    Path("/usr/lib/aarch64-linux-gnu"),
    Path("/usr/lib64"),
    Path("/usr/lib"),
)
# The driver's compute and utility libraries (what the toolkit's "compute,
# utility" capabilities mount).
LIBRARY_PATTERNS: Final = (
    "libcuda.so*",
    "libcudadebugger.so*",
    "libnvidia-ml.so*",
    "libnvidia-ptxjitcompiler.so*",
    "libnvidia-nvvm.so*",
    "libnvidia-cfg.so*",
    "libnvidia-opencl.so*",
    "libnvidia-allocator.so*",
    "libnvidia-gpucomp.so*",
)
BINARY_DIRS: Final = (Path("/usr/bin"), Path("/usr/local/bin"), Path("/usr/sbin"))
BINARIES: Final = (
    "nvidia-smi",
    "nvidia-debugdump",
    "nvidia-persistenced",
    "nvidia-cuda-mps-control",
    "nvidia-cuda-mps-server",
)
CDI_SPEC_DIRS: Final = (Path("/etc/cdi"), Path("/var/run/cdi"))
CONTAINER_LIBRARY_DIR: Final = "/usr/local/nvidia/lib64"
CONTAINER_BINARY_DIR: Final = "/usr/local/nvidia/bin"

_GPU_NODE = re.compile(r"nvidia([0-9]+)")


class GpuUnavailable(Exception):
    """The instance needs more GPUs than this host has free; says how many."""


@dataclass(frozen=True)
class HostGpus:
    """What the NVIDIA driver installed on this host."""

    device_dir: Path = DEVICE_DIR
    indices: tuple[int, ...] = ()
    control: tuple[Path, ...] = ()
    libraries: tuple[Path, ...] = ()
    binaries: tuple[Path, ...] = ()
    # GPU names a CDI spec of kind nvidia.com/gpu declares ("0", "GPU-<uuid>", "all")
    cdi_names: frozenset[str] = frozenset()

    def device(self, index: int) -> Path:
        return self.device_dir / f"nvidia{index}"


def discover(
    device_dir: Path = DEVICE_DIR,
    *,
    library_dirs: Sequence[Path] = LIBRARY_DIRS,
    binary_dirs: Sequence[Path] = BINARY_DIRS,
    cdi_dirs: Sequence[Path] = CDI_SPEC_DIRS,
) -> HostGpus:
    """The host's GPUs; empty where there is no NVIDIA driver."""
    try:
        entries = sorted(device_dir.iterdir())
    except OSError:
        entries = []
    indices = sorted(int(m.group(1)) for e in entries if (m := _GPU_NODE.fullmatch(e.name)))
    if not indices:
        return HostGpus(device_dir=device_dir)
    return HostGpus(
        device_dir=device_dir,
        indices=tuple(indices),
        control=tuple(device_dir / n for n in CONTROL_DEVICES if (device_dir / n).exists()),
        libraries=tuple(_first_by_name(d.glob(p) for d in library_dirs for p in LIBRARY_PATTERNS)),
        binaries=tuple(_first_by_name([d / n] for d in binary_dirs for n in BINARIES)),
        cdi_names=cdi_gpu_names(cdi_dirs),
    )


def _first_by_name(groups: Iterable[Iterable[Path]]) -> list[Path]:
    """Existing files, the first of each name (earlier directories win)."""
    found: dict[str, Path] = {}
    for group in groups:
        for path in sorted(group):
            if path.name not in found and path.is_file():
                found[path.name] = path
    return list(found.values())


def cdi_gpu_names(spec_dirs: Sequence[Path] = CDI_SPEC_DIRS) -> frozenset[str]:
    """The device names of every CDI spec of kind ``nvidia.com/gpu`` (JSON or
    YAML, as the CDI spec allows); a spec that does not parse is skipped."""
    names: set[str] = set()
    for spec_dir in spec_dirs:
        try:
            files = sorted(spec_dir.iterdir())
        except OSError:
            continue
        for path in files:
            if path.suffix not in (".json", ".yaml", ".yml"):
                continue
            try:
                text = path.read_text()
                spec = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
            except (OSError, ValueError, yaml.YAMLError) as e:
                log.warning("CDI spec %s is unreadable: %s", path, e)
                continue
            if not isinstance(spec, dict) or spec.get("kind") != CDI_KIND:
                continue
            for device in spec.get("devices") or []:
                if isinstance(device, dict) and device.get("name"):
                    names.add(str(device["name"]))
    return frozenset(names)


def cdi_supported(runtime_name: str, runtime_version: str) -> bool:
    """Whether the CRI runtime resolves ``CDI_devices``: containerd from 1.7
    (with ``enable_cdi``, which Nodeless' own containerd config sets)."""
    if runtime_name != "containerd":
        return False
    match = re.match(r"v?([0-9]+)\.([0-9]+)", runtime_version)
    return match is not None and (int(match.group(1)), int(match.group(2))) >= (1, 7)


class GpuAllocator:
    """Whole GPUs of this host, each held by at most one instance."""

    def __init__(self, indices: Sequence[int]) -> None:
        self.indices = tuple(sorted(indices))
        self._held: dict[str, tuple[int, ...]] = {}

    def held(self, instance_id: str) -> tuple[int, ...]:
        return self._held.get(instance_id, ())

    def free(self) -> list[int]:
        taken = {i for held in self._held.values() for i in held}
        return [i for i in self.indices if i not in taken]

    def allocate(self, instance_id: str, count: int) -> tuple[int, ...]:
        """``count`` free GPUs for the instance (the same ones when asked
        again); raises ``GpuUnavailable``."""
        if instance_id in self._held or count <= 0:
            return self.held(instance_id)
        free = self.free()
        if len(free) < count:
            if not self.indices:
                raise GpuUnavailable(
                    f"the instance needs {count} nvidia.com/gpu, but this host has no NVIDIA "
                    "GPU (no /dev/nvidia0)"
                )
            raise GpuUnavailable(
                f"the instance needs {count} nvidia.com/gpu, but only {len(free)} of this "
                f"host's {len(self.indices)} GPUs are free"
            )
        self._held[instance_id] = tuple(free[:count])
        return self._held[instance_id]

    def restore(self, instance_id: str, indices: Sequence[int]) -> None:
        """What an adopted sandbox already holds."""
        if indices:
            self._held[instance_id] = tuple(indices)

    def release(self, instance_id: str) -> None:
        self._held.pop(instance_id, None)


def encode_indices(indices: Sequence[int]) -> str:
    return ",".join(str(i) for i in indices)


def decode_indices(text: str) -> tuple[int, ...]:
    """The indices ``encode_indices`` wrote; nothing for text it did not."""
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        return ()


def gpu_limit(container: Mapping[str, Any]) -> int:
    """The container's ``nvidia.com/gpu`` (limit, else request), as sizing reads it."""
    resources = container.get("resources") or {}
    for kind in ("limits", "requests"):
        value = (resources.get(kind) or {}).get(GPU_RESOURCE)
        if value is not None:
            # Parsed as sizing parses it ("1", "1.0", "2e0"); admission has
            # already refused what is not a whole, non-negative count.
            try:
                return max(0, int(quantities.parse(value)))
            except quantities.QuantityError:
                return 0
    return 0


def container_shares(pod: Mapping[str, Any], indices: Sequence[int]) -> dict[str, tuple[int, ...]]:
    """Which of the instance's GPUs each container gets, by container name.

    App containers take consecutive GPUs by their limits, as a device plugin
    allocates them; init containers run before them, so each may use the
    first GPUs again. Where no container names a GPU (the instance was sized
    by an ``instance-specs`` annotation alone), every container gets all of
    them: the instance was bought for that."""
    spec = pod.get("spec") or {}
    inits = list(spec.get("initContainers") or [])
    apps = list(spec.get("containers") or [])
    everything = tuple(indices)
    if not everything:
        return {}
    if not any(gpu_limit(c) for c in inits + apps):
        return {str(c.get("name") or ""): everything for c in inits + apps}
    shares: dict[str, tuple[int, ...]] = {}
    for container in inits:
        if count := gpu_limit(container):
            shares[str(container.get("name") or "")] = everything[:count]
    start = 0
    for container in apps:
        if count := gpu_limit(container):
            shares[str(container.get("name") or "")] = everything[start : start + count]
            start += count
    return shares


@dataclass(frozen=True)
class Exposure:
    """One container's GPUs in CRI's terms."""

    devices: list[pb.Device] = field(default_factory=list)
    mounts: list[pb.Mount] = field(default_factory=list)
    cdi_devices: list[pb.CDIDevice] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)


def exposure(host: HostGpus, indices: Sequence[int], *, use_cdi: bool) -> Exposure:
    """The container's share ``indices`` of ``host``'s GPUs: by CDI name when
    ``use_cdi`` and the spec names every one of them, else by device node."""
    if not indices:
        return Exposure()
    env = {VISIBLE_DEVICES_ENV: encode_indices(indices)}
    names = [str(i) for i in indices]
    if use_cdi and all(n in host.cdi_names for n in names):
        return Exposure(cdi_devices=[pb.CDIDevice(name=f"{CDI_KIND}={n}") for n in names], env=env)
    nodes = [host.device(i) for i in indices] + list(host.control)
    return Exposure(
        devices=[
            pb.Device(container_path=f"/dev/{p.name}", host_path=str(p), permissions="rwm")
            for p in nodes
        ],
        mounts=[
            pb.Mount(
                container_path=f"{CONTAINER_LIBRARY_DIR}/{p.name}", host_path=str(p), readonly=True
            )
            for p in host.libraries
        ]
        + [
            pb.Mount(
                container_path=f"{CONTAINER_BINARY_DIR}/{p.name}", host_path=str(p), readonly=True
            )
            for p in host.binaries
        ],
        env=env,
    )


def container_exposures(
    host: HostGpus, pod: Mapping[str, Any], indices: Sequence[int], *, use_cdi: bool
) -> dict[str, Exposure]:
    """``exposure`` for every container of the pod that gets GPUs."""
    return {
        name: exposure(host, share, use_cdi=use_cdi)
        for name, share in container_shares(pod, indices).items()
    }
