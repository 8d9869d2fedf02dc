"""containerd shims left running after their pod went, found and stopped.

containerd 1.6 before 1.6.23 (Debian 12 ships 1.6.20) leaks a pod's
``containerd-shim-runc-v2`` when deleting its task times out, which happens
under I/O pressure: the shim's unmount of the overlay rootfs waits for a
syncfs (containerd issues #7496 and #8931, fixed by #9004). The sandbox and
its bundle directory are removed, but the shim is never told to shut down, and
nothing will tell it later: the next containerd does not know it. 7 of 500
shims leaked this way in one `bench/pods_real.py --pods 500` run here.

A shim of ours is leaked when its bundle directory is gone and it has no
child process: containerd makes the bundle before it starts the shim and
removes it only after the task's deletion, and a shim with a task has that
task's process as its child. Such a shim has nothing left to supervise; it is
sent SIGTERM, which it exits on.

A shim whose task deletion timed out may keep its bundle, though: the pod is
removed, the runtime no longer lists a sandbox or container of the shim's id,
and the shim idles on with no child (1 of 500 after one 500-pod run's
teardown here). Such an *orphaned* shim is stopped once two looks in a row,
a reaping interval apart, found it so: a shim that containerd is still
setting up is childless and unlisted too, but only for the moment before its
pause process starts. At a stop of Nodeless, when it creates no pod any
more, the two looks are seconds apart: a 500-pod teardown left 16 such shims
that the next minute's look, after the stop, would never have seen.
"""

from __future__ import annotations

import itertools
import logging
import os
import signal
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

PROC = Path("/proc")
SHIM_PREFIX = "containerd-shim"
TASK_DIR = "io.containerd.runtime.v2.task"


@dataclass(frozen=True)
class Shim:
    """A shim process, as its command line names it."""

    pid: int
    id: str
    namespace: str
    address: str


def parse_shim(pid: int, argv: list[str]) -> Shim | None:
    """The shim ``argv`` describes (``containerd-shim-… -namespace N -id I
    -address A``), or None when it is no shim."""
    if not any(Path(arg).name.startswith(SHIM_PREFIX) for arg in argv[:2]):
        return None
    options: dict[str, str] = {}
    for flag, value in itertools.pairwise(argv):
        if flag in ("-namespace", "-id", "-address"):
            options[flag] = value
    if len(options) != 3:
        return None
    return Shim(pid, options["-id"], options["-namespace"], options["-address"])


def leaked(state_dir: Path, address: str, proc: Path = PROC) -> list[Shim]:
    """The shims of the containerd at ``address`` (state under ``state_dir``)
    whose bundle is gone and which have no child process."""
    return _split(state_dir, *_scan(address, proc))[0]


def _split(state_dir: Path, shims: list[Shim], parents: set[int]) -> tuple[list[Shim], list[Shim]]:
    """(leaked, the others) of one scan's shims."""
    gone: list[Shim] = []
    others: list[Shim] = []
    for shim in shims:
        has_bundle = (state_dir / TASK_DIR / shim.namespace / shim.id).exists()
        (others if shim.pid in parents or has_bundle else gone).append(shim)
    return gone, others


def _scan(address: str, proc: Path) -> tuple[list[Shim], set[int]]:
    """The live shims of ``address``, and the pids that have a live child."""
    shims: list[Shim] = []
    parents: set[int] = set()
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue  # gone meanwhile
        # after the command name (which may hold spaces and parentheses)
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) < 2 or fields[0] == "Z":
            continue
        parents.add(int(fields[1]))
        shim = parse_shim(pid, [os.fsdecode(a) for a in cmdline.split(b"\0") if a])
        if shim is not None and shim.address == address:
            shims.append(shim)
    return shims, parents


def childless(address: str, proc: Path = PROC) -> list[Shim]:
    """The shims of the containerd at ``address`` that have no child process,
    bundle or not."""
    return _split_by_child(*_scan(address, proc))[0]


def _split_by_child(shims: list[Shim], parents: set[int]) -> tuple[list[Shim], list[Shim]]:
    """(without a child process, with one) of one scan's shims."""
    return [s for s in shims if s.pid not in parents], [s for s in shims if s.pid in parents]


def _terminate(found: list[Shim]) -> list[Shim]:
    """SIGTERM to each shim; the ones that were still there to receive it."""
    stopped = []
    for shim in found:
        try:
            os.kill(shim.pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        stopped.append(shim)
    return stopped


@dataclass(frozen=True)
class Reaped:
    """One look at a containerd's shims: the leaked ones sent SIGTERM, and
    the ones still running for their pods."""

    stopped: list[Shim]
    running: list[Shim]


def stop_leaked(state_dir: Path, address: str, proc: Path = PROC) -> Reaped:
    """Sends each leaked shim SIGTERM (one scan of ``proc``)."""
    gone, running = _split(state_dir, *_scan(address, proc))
    return Reaped(_terminate_logged(gone, "left running after their pods went"), running)


def _terminate_logged(found: list[Shim], why: str) -> list[Shim]:
    """``_terminate``, with a warning naming the shims stopped and why."""
    stopped = _terminate(found)
    if stopped:
        log.warning(
            "stopped %d containerd shim(s) %s: %s",
            len(stopped),
            why,
            ", ".join(s.id[:12] for s in stopped),
        )
    return stopped


def stop_childless(address: str, proc: Path = PROC) -> Reaped:
    """Sends SIGTERM to each ``childless`` shim (one scan of ``proc``): for
    after every pod was removed, when a shim whose task deletion timed out
    may still have its bundle. ``running`` are the shims with a child."""
    idle, busy = _split_by_child(*_scan(address, proc))
    return Reaped(_terminate(idle), busy)


def orphaned(address: str, known: Collection[str], proc: Path = PROC) -> list[Shim]:
    """The shims of the containerd at ``address`` that have no child process
    and whose id is not in ``known`` (the ids of every sandbox and container
    the runtime lists), bundle or not."""
    idle, _ = _split_by_child(*_scan(address, proc))
    return [s for s in idle if s.id not in known]


@dataclass
class Orphans:
    """The orphaned shims of one look, kept until the next: only a shim found
    orphaned in both (the same process, the same id) is to be stopped."""

    _suspects: set[Shim] = field(default_factory=set)

    @property
    def suspected(self) -> bool:
        """Whether the last look found shims the next is to confirm."""
        return bool(self._suspects)

    def confirmed(self, found: list[Shim]) -> list[Shim]:
        """Of ``found`` (this look's orphans), those the last look found too;
        the rest are remembered for the next look."""
        sure = [s for s in found if s in self._suspects]
        self._suspects = set(found).difference(sure)
        return sure


def stop_orphaned(found: list[Shim]) -> list[Shim]:
    """Sends each of ``found`` (confirmed orphans) SIGTERM; the ones that
    were still there to receive it."""
    return _terminate_logged(found, "whose pods the runtime no longer lists")
