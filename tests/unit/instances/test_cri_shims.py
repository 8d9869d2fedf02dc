"""Leaked containerd shims: a shim of our containerd whose bundle is gone and
which has no child is found and stopped; every other process is left alone."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from nodeless.instances.providers.cri import containerd, shims
from nodeless.instances.providers.cri import runtime_pb2 as pb

SOCKET = "/tmp/nl-x/containerd/containerd.sock"
SHIM = "/usr/bin/containerd-shim-runc-v2"


def shim_argv(shim_id: str, address: str = SOCKET) -> list[str]:
    return [SHIM, "-namespace", "k8s.io", "-id", shim_id, "-address", address]


def fake_process(proc: Path, pid: int, ppid: int, argv: list[str], state: str = "S") -> None:
    entry = proc / str(pid)
    entry.mkdir()
    name = Path(argv[0]).name[:15]
    # a command name with ") " in it must not shift the fields after it
    (entry / "stat").write_text(f"{pid} ({name} x) y) {state} {ppid} {pid} {pid} 0 -1\n")
    (entry / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")


def bundle(state_dir: Path, shim_id: str) -> None:
    (state_dir / shims.TASK_DIR / "k8s.io" / shim_id).mkdir(parents=True)


def test_parse_shim_reads_the_namespace_id_and_address() -> None:
    assert shims.parse_shim(7, shim_argv("abc")) == shims.Shim(7, "abc", "k8s.io", SOCKET)
    assert shims.parse_shim(7, ["/usr/bin/containerd", "--config", "x"]) is None
    assert shims.parse_shim(7, [SHIM, "-namespace", "k8s.io", "-id", "abc"]) is None
    # a shim run through an interpreter still names itself second
    assert shims.parse_shim(7, ["/usr/bin/python3", *shim_argv("abc")]) is not None


def test_only_our_childless_shims_without_a_bundle_are_leaked(tmp_path: Path) -> None:
    proc, state_dir = tmp_path / "proc", tmp_path / "state"
    proc.mkdir()
    fake_process(proc, 100, 1, shim_argv("gone"))  # leaked
    fake_process(proc, 101, 1, shim_argv("running"))  # has its bundle and its pod
    bundle(state_dir, "running")
    fake_process(proc, 102, 101, ["/pause"])
    fake_process(proc, 103, 1, shim_argv("starting"))  # bundle made, no task yet
    bundle(state_dir, "starting")
    fake_process(proc, 104, 1, shim_argv("busy"))  # bundle gone, a child still there
    fake_process(proc, 105, 104, ["runc", "delete"])
    fake_process(proc, 106, 1, shim_argv("other", "/run/containerd/containerd.sock"))
    fake_process(proc, 107, 1, shim_argv("dead"), state="Z")
    (proc / "self").mkdir()

    found = shims.leaked(state_dir, SOCKET, proc)

    assert [(s.pid, s.id) for s in found] == [(100, "gone")]


@pytest.fixture
def shim_lookalikes(tmp_path: Path) -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    """Real processes whose command lines name a shim of SOCKET: one whose
    bundle is gone, one whose bundle is there."""
    script = tmp_path / "containerd-shim-runc-v2"
    script.write_text("import time\ntime.sleep(60)\n")
    started = {
        name: subprocess.Popen([sys.executable, str(script), *shim_argv(name)[1:]])
        for name in ("gone", "kept")
    }
    try:
        yield started
    finally:
        for process in started.values():
            process.kill()
            process.wait()


@pytest.mark.integration  # starts processes
def test_stop_leaked_terminates_a_leaked_shim_and_keeps_one_with_a_bundle(
    tmp_path: Path, shim_lookalikes: dict[str, subprocess.Popen[bytes]]
) -> None:
    state_dir = tmp_path / "state"
    bundle(state_dir, "kept")

    reaped = shims.stop_leaked(state_dir, SOCKET)

    assert [s.id for s in reaped.stopped] == ["gone"]
    assert [s.id for s in reaped.running] == ["kept"]
    assert shim_lookalikes["gone"].wait(timeout=10) == -15
    assert shim_lookalikes["kept"].poll() is None


@pytest.mark.integration  # starts processes
def test_stop_childless_terminates_every_shim_of_ours_with_no_pod_process(
    shim_lookalikes: dict[str, subprocess.Popen[bytes]],
) -> None:
    reaped = shims.stop_childless(SOCKET)

    assert sorted(s.id for s in reaped.stopped) == ["gone", "kept"]
    assert reaped.running == []
    assert shim_lookalikes["gone"].wait(timeout=10) == -15
    assert shim_lookalikes["kept"].wait(timeout=10) == -15


def test_childless_shims_are_ours_without_a_child_bundle_or_not(tmp_path: Path) -> None:
    proc, state_dir = tmp_path / "proc", tmp_path / "state"
    proc.mkdir()
    fake_process(proc, 100, 1, shim_argv("gone"))
    fake_process(proc, 101, 1, shim_argv("running"))
    fake_process(proc, 102, 101, ["/pause"])
    fake_process(proc, 103, 1, shim_argv("stuck"))  # its task deletion timed out
    bundle(state_dir, "stuck")
    fake_process(proc, 106, 1, shim_argv("other", "/run/containerd/containerd.sock"))
    fake_process(proc, 107, 1, shim_argv("dead"), state="Z")

    found = shims.childless(SOCKET, proc)

    assert sorted((s.pid, s.id) for s in found) == [(100, "gone"), (103, "stuck")]


def test_orphaned_shims_are_childless_and_of_no_pod_the_runtime_lists(tmp_path: Path) -> None:
    proc, state_dir = tmp_path / "proc", tmp_path / "state"
    proc.mkdir()
    fake_process(proc, 100, 1, shim_argv("stuck"))  # its task deletion timed out
    bundle(state_dir, "stuck")
    fake_process(proc, 101, 1, shim_argv("stopped"))  # a stopped sandbox the runtime lists
    fake_process(proc, 102, 1, shim_argv("running"))
    fake_process(proc, 103, 102, ["/pause"])
    fake_process(proc, 104, 1, shim_argv("gone"))  # no bundle either
    fake_process(proc, 105, 1, shim_argv("elsewhere", "/run/containerd/containerd.sock"))

    found = shims.orphaned(SOCKET, {"stopped", "running"}, proc)

    assert sorted((s.pid, s.id) for s in found) == [(100, "stuck"), (104, "gone")]


def test_an_orphan_is_confirmed_only_by_the_next_look_finding_the_same_process() -> None:
    orphans = shims.Orphans()
    stuck = shims.Shim(100, "stuck", "k8s.io", SOCKET)
    starting = shims.Shim(101, "starting", "k8s.io", SOCKET)

    first = orphans.confirmed([stuck, starting])
    # the pause process of "starting" came up: it is no orphan any more
    second = orphans.confirmed([stuck])
    # a new process with the same id is a new suspect, not a confirmed one
    third = orphans.confirmed([shims.Shim(102, "stuck", "k8s.io", SOCKET)])

    assert first == []
    assert second == [stuck]
    assert third == []


class ListingRuntime:
    """The CRI's two lists, as a runtime that knows ``known`` answers them."""

    def __init__(self, known: list[str]) -> None:
        self.known = known

    async def list_pod_sandbox(self) -> list[pb.PodSandbox]:
        return [pb.PodSandbox(id=i) for i in self.known]

    async def list_containers(self) -> list[pb.Container]:
        return []

    async def close(self) -> None:
        pass


@pytest.mark.integration  # starts processes
async def test_a_managed_containerd_stops_a_shim_orphaned_two_looks_in_a_row(
    tmp_path: Path, shim_lookalikes: dict[str, subprocess.Popen[bytes]]
) -> None:
    runtime = containerd.Containerd(containerd.ContainerdSettings(tmp_path / "containerd"))
    runtime.address = SOCKET
    runtime.client = ListingRuntime(["kept"])  # type: ignore[assignment]

    first = await runtime.stop_orphaned_shims()
    second = await runtime.stop_orphaned_shims()

    assert first == []
    assert [s.id for s in second] == ["gone"]
    assert shim_lookalikes["gone"].wait(timeout=10) == -15
    assert shim_lookalikes["kept"].poll() is None


@pytest.mark.integration  # starts processes
async def test_stopping_a_managed_containerd_stops_an_orphaned_shim_that_kept_its_bundle(
    tmp_path: Path,
    shim_lookalikes: dict[str, subprocess.Popen[bytes]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # what a large teardown leaves seconds before a stop: a childless shim
    # whose bundle is still there but whose pod the runtime no longer lists
    monkeypatch.setattr(containerd, "SHIM_SECOND_LOOK", 0.1)
    settings = containerd.ContainerdSettings(tmp_path / "containerd")
    bundle(settings.state, "gone")
    bundle(settings.state, "kept")
    runtime = containerd.Containerd(settings)
    runtime.address = SOCKET
    runtime.client = ListingRuntime(["kept"])  # type: ignore[assignment]

    await runtime.stop()

    assert shim_lookalikes["gone"].wait(timeout=10) == -15
    assert shim_lookalikes["kept"].poll() is None
