"""Pod-level cgroups: the instance's size enforced around all of its containers.

A kubelet gives each pod a cgroup (``/kubepods/burstable/pod<uid>``) whose
limits bound the pod as a whole, and passes it to the runtime as the
sandbox's ``cgroup_parent``; runc then creates each container's cgroup
inside it. Nodeless does the same with the instance's spec (vCPUs, memory),
under its own root (``/nodeless`` by default), for the cgroupfs driver on
cgroup v1 (one tree per controller) and v2 (one unified tree).

runc removes a container's cgroup with the container but never the parent
it did not create, so the pod's directories are removed here once the
sandbox is gone.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")
CPU_PERIOD_US = 100_000
MIN_CPU_QUOTA_US = 1_000  # the kubelet's minimum quota: 1 ms per period


@dataclass(frozen=True)
class Hierarchy:
    """One mounted cgroup tree: ``controllers`` is empty for a v1 named
    hierarchy (``name=systemd``); ``unified`` for the v2 tree."""

    mount: Path
    controllers: frozenset[str]
    unified: bool = False


def hierarchies(mounts: str | None = None) -> list[Hierarchy]:
    """The cgroup trees mounted on this host, from ``/proc/self/mounts``."""
    if mounts is None:
        try:
            mounts = Path("/proc/self/mounts").read_text()
        except OSError:
            return []
    known = controllers()
    v1: list[Hierarchy] = []
    v2: list[Hierarchy] = []
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        mount, kind, options = Path(fields[1]), fields[2], fields[3].split(",")
        if kind == "cgroup":
            v1.append(Hierarchy(mount, frozenset(o for o in options if o in known)))
        elif kind == "cgroup2":
            v2.append(Hierarchy(mount, frozenset(), unified=True))
    return v1 + v2


@functools.cache
def host_hierarchies() -> list[Hierarchy]:
    """``hierarchies()`` read once: cgroup trees are mounted at boot, while
    the mount table grows with every container (reading it per pod costs
    time in proportion to the pods running)."""
    return hierarchies()


def limiting(trees: list[Hierarchy]) -> list[Hierarchy]:
    """The trees limits are written to: on a hybrid host (v1 controllers and a
    v2 tree) runc enforces through the v1 ones."""
    v1 = [t for t in trees if not t.unified and t.controllers]
    return v1 or [t for t in trees if t.unified]


def controllers() -> frozenset[str]:
    """The controllers this kernel has (``/proc/cgroups``), to tell them
    apart from ordinary mount options."""
    try:
        lines = Path("/proc/cgroups").read_text().splitlines()
    except OSError:
        lines = []
    found = {line.split()[0] for line in lines if line and not line.startswith("#")}
    return frozenset(found | {"cpu", "cpuacct", "memory", "pids", "cpuset", "blkio"})


@dataclass(frozen=True)
class PodCgroup:
    """The cgroup of one pod: ``path`` (``/nodeless/pod<uid>``) in every tree."""

    path: str

    @classmethod
    def for_pod(cls, root: str, pod_uid: str) -> PodCgroup:
        return cls(f"/{root.strip('/')}/pod{pod_uid}")

    def directories(self, trees: list[Hierarchy] | None = None) -> list[Path]:
        """The pod's directory in every tree (existing or not)."""
        return [h.mount / self.path.lstrip("/") for h in trees or host_hierarchies()]

    def create(
        self,
        *,
        cpus: float = 0.0,
        memory_bytes: int = 0,
        trees: list[Hierarchy] | None = None,
    ) -> None:
        """Creates the pod's cgroup with the instance's limits (0: none).
        Raises ``OSError`` when the limits cannot be written."""
        trees = limiting(trees if trees is not None else host_hierarchies())
        quota = cpu_quota(cpus)
        for tree in trees:
            if tree.unified:
                self._create_unified(tree, quota, memory_bytes)
                continue
            directory = tree.mount / self.path.lstrip("/")
            if "memory" in tree.controllers and memory_bytes:
                directory.mkdir(parents=True, exist_ok=True)
                _write(directory / "memory.limit_in_bytes", str(memory_bytes))
            if "cpu" in tree.controllers and quota:
                directory.mkdir(parents=True, exist_ok=True)
                _write(directory / "cpu.cfs_period_us", str(CPU_PERIOD_US))
                _write(directory / "cpu.cfs_quota_us", str(quota))

    def _create_unified(self, tree: Hierarchy, quota: int, memory_bytes: int) -> None:
        directory = tree.mount / self.path.lstrip("/")
        # controllers must be enabled in every ancestor for the leaf to have them
        wanted = [c for c, on in (("cpu", quota), ("memory", memory_bytes)) if on]
        current = tree.mount
        for part in Path(self.path.lstrip("/")).parts:
            available = set(_read(current / "cgroup.controllers").split())
            enable = " ".join(f"+{c}" for c in wanted if c in available)
            if enable:
                with contextlib.suppress(OSError):
                    _write(current / "cgroup.subtree_control", enable)
            current = current / part
            current.mkdir(exist_ok=True)
        if memory_bytes:
            _write(directory / "memory.max", str(memory_bytes))
        if quota:
            _write(directory / "cpu.max", f"{quota} {CPU_PERIOD_US}")

    def oom_kills(self, trees: list[Hierarchy] | None = None) -> int | None:
        """How many processes the kernel's OOM killer has killed in the pod,
        its containers included (v2's ``memory.events`` is hierarchical);
        None on a v1 memory hierarchy, where a kill is counted only in the
        victim's own cgroup (a container's, removed with its task)."""
        for tree in limiting(trees if trees is not None else host_hierarchies()):
            if not tree.unified:
                if "memory" in tree.controllers:
                    return None
                continue
            text = _read(tree.mount / self.path.lstrip("/") / "memory.events")
            for line in text.splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill" and value.strip().isdigit():
                    return int(value)
        return 0

    def remove(self, trees: list[Hierarchy] | None = None, *, attempts: int = 100) -> list[Path]:
        """Removes the pod's directories (deepest first) from every tree;
        returns those that could not be removed (still busy)."""
        left: list[Path] = []
        for directory in self.directories(trees):
            if not directory.exists():
                continue
            for sub in sorted(
                (p for p in directory.rglob("*") if p.is_dir()),
                key=lambda p: len(p.parts),
                reverse=True,
            ):
                _rmdir(sub, attempts)
            if not _rmdir(directory, attempts):
                left.append(directory)
        return left


def cpu_quota(cpus: float) -> int:
    """The CFS quota (µs per ``CPU_PERIOD_US``) for ``cpus`` CPUs; 0 for no limit."""
    if cpus <= 0:
        return 0
    return max(MIN_CPU_QUOTA_US, round(cpus * CPU_PERIOD_US))


def _write(path: Path, value: str) -> None:
    path.write_text(value)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _rmdir(path: Path, attempts: int) -> bool:
    """rmdir, retried while the cgroup's last processes are still exiting."""
    for attempt in range(attempts):
        try:
            os.rmdir(path)
            return True
        except FileNotFoundError:
            return True
        except OSError as e:
            if e.errno not in (errno.EBUSY, errno.ENOTEMPTY) or attempt == attempts - 1:
                log.warning("cannot remove cgroup %s: %s", path, e)
                return False
            time.sleep(0.05)
    return False
