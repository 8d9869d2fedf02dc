"""What the CRI provider reads and writes on the host besides the CRI: container
log files, pod cgroups, and its back-off arithmetic (no containerd, no root)."""

from __future__ import annotations

import asyncio
import datetime
import gzip
from pathlib import Path

import pytest

from nodeless import clocks
from nodeless.instances.providers.cri import backoffs, cgroups, logfiles, oomkills

LOG = (
    b"2026-01-01T00:00:01.000000001Z stdout F hello\n"
    b"2026-01-01T00:00:02.5Z stderr F oops\n"
    b"2026-01-01T00:00:03Z stdout P a long \n"
    b"2026-01-01T00:00:03.1Z stdout F line\n"
    b"not a record\n"
    b"2026-01-01T00:00:04Z stdout F unfinished"
)


# --- logs ---


def test_records_are_parsed_and_rendered_as_kubectl_prints_them() -> None:
    records = logfiles.parse(LOG)

    assert [(r.stream, r.partial, r.content) for r in records] == [
        ("stdout", False, b"hello"),
        ("stderr", False, b"oops"),
        ("stdout", True, b"a long "),
        ("stdout", False, b"line"),
    ]
    assert logfiles.render(records) == b"hello\noops\na long line\n"
    assert logfiles.render(records[:2], timestamps=True) == (
        b"2026-01-01T00:00:01.000000001Z hello\n2026-01-01T00:00:02.5Z oops\n"
    )


def test_tail_and_since_select_records() -> None:
    records = logfiles.parse(LOG)
    since = datetime.datetime(2026, 1, 1, 0, 0, 2, tzinfo=datetime.UTC)

    assert logfiles.select(records, logfiles.LogOptions(tail_lines=1))[0].content == b"line"
    assert logfiles.select(records, logfiles.LogOptions(tail_lines=0)) == []
    assert [r.content for r in logfiles.select(records, logfiles.LogOptions(since=since))] == [
        b"oops",
        b"a long ",
        b"line",
    ]


async def test_reading_a_file_honours_the_byte_limit(tmp_path: Path) -> None:
    path = tmp_path / "0.log"
    path.write_bytes(LOG)

    whole = b"".join([c async for c in logfiles.read(path)])
    limited = b"".join([c async for c in logfiles.read(path, logfiles.LogOptions(limit_bytes=8))])
    missing = b"".join([c async for c in logfiles.read(tmp_path / "absent.log")])

    assert whole == b"hello\noops\na long line\n"
    assert limited == b"hello\noo"
    assert missing == b""


async def test_following_returns_what_is_appended_until_the_writer_stops(tmp_path: Path) -> None:
    path = tmp_path / "0.log"
    path.write_bytes(b"2026-01-01T00:00:01Z stdout F one\n")
    running = True

    async def write_more() -> None:
        nonlocal running
        await asyncio.sleep(0.05)
        with path.open("ab") as f:
            f.write(b"2026-01-01T00:00:02Z stdout F two\n2026-01-01T00:00:03Z std")
        await asyncio.sleep(0.05)
        with path.open("ab") as f:
            f.write(b"out F three\n")
        running = False

    writer = asyncio.create_task(write_more())
    chunks = [c async for c in logfiles.read(path, running=lambda: running, interval=0.01)]
    await writer

    assert b"".join(chunks) == b"one\ntwo\nthree\n"


async def test_following_carries_on_into_the_new_file_after_a_rotation(tmp_path: Path) -> None:
    path = tmp_path / "0.log"
    path.write_bytes(b"2026-01-01T00:00:01Z stdout F one\n")
    running = True

    async def rotate_and_write() -> None:
        nonlocal running
        await asyncio.sleep(0.05)
        with path.open("ab") as f:
            f.write(b"2026-01-01T00:00:02Z stdout F two\n")
        logfiles.rotate(path, datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC))
        path.write_bytes(b"2026-01-01T00:00:03Z stdout F three\n")  # the runtime reopened it
        await asyncio.sleep(0.05)
        running = False

    writer = asyncio.create_task(rotate_and_write())
    chunks = [c async for c in logfiles.read(path, running=lambda: running, interval=0.01)]
    await writer

    assert b"".join(chunks) == b"one\ntwo\nthree\n"


def test_rotation_keeps_max_files_with_all_but_the_newest_rotated_gzipped(tmp_path: Path) -> None:
    path = tmp_path / "0.log"
    start = datetime.datetime(2026, 1, 1, 12, 0, 0, tzinfo=datetime.UTC)
    for minute in range(6):
        path.write_bytes(f"generation {minute}\n".encode())
        renamed = logfiles.rotate(path, start + datetime.timedelta(minutes=minute), max_files=3)
        assert renamed.name == f"0.log.20260101-12{minute:02d}00"
    path.write_bytes(b"current\n")

    kept = logfiles.rotated(path)

    # with the current file, three files: two rotated, the older one gzipped
    assert [p.name for p in kept] == ["0.log.20260101-120400.gz", "0.log.20260101-120500"]
    assert gzip.decompress(kept[0].read_bytes()) == b"generation 4\n"
    assert kept[1].read_bytes() == b"generation 5\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0.log", *[p.name for p in kept]]


def test_a_rotation_the_runtime_could_not_follow_is_undone(tmp_path: Path) -> None:
    path = tmp_path / "1.log"
    path.write_bytes(b"x" * 100)

    assert logfiles.over_limit(path, 99) and not logfiles.over_limit(path, 100)
    renamed = logfiles.rotate(path, datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC))
    logfiles.unrotate(path, renamed)

    assert path.read_bytes() == b"x" * 100
    assert logfiles.rotated(path) == []


# --- back-off ---


def test_back_off_doubles_to_its_maximum_and_resets_after_a_long_run() -> None:
    backoff = backoffs.BackOff(backoffs.CRASH_LOOP)

    delays = [backoff.next(ran=1.0) for _ in range(7)]
    after_long_run = backoff.next(ran=600.0)

    assert delays == [10, 20, 40, 80, 160, 300, 300]
    assert after_long_run == 10
    backoff.resume(3)
    assert backoff.next() == 80


def test_image_pull_back_off_never_resets_by_run_time() -> None:
    backoff = backoffs.BackOff(backoffs.IMAGE_PULL)

    assert [backoff.next(ran=10_000) for _ in range(3)] == [10, 20, 40]
    backoff.reset()
    assert backoff.next() == 10


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(10, "10s"), (80, "1m20s"), (300, "5m0s"), (0.2, "200ms")],
)
def test_back_off_durations_print_like_the_kubelet(seconds: float, text: str) -> None:
    assert backoffs.go_duration(seconds) == text


def test_a_back_off_policy_must_make_sense() -> None:
    with pytest.raises(ValueError):
        backoffs.BackOffPolicy(initial=0)
    with pytest.raises(ValueError):
        backoffs.BackOffPolicy(initial=10, maximum=5)


async def test_a_fake_clock_drives_a_back_off_wait() -> None:
    clock = clocks.FakeClock()
    backoff = backoffs.BackOff(backoffs.CRASH_LOOP)
    waited = asyncio.create_task(clock.sleep(backoff.next()))

    await clock.advance(9)
    assert not waited.done()
    await clock.advance(1)
    assert waited.done()


# --- cgroups ---

MOUNTS_V1 = """\
tmpfs /sys/fs/cgroup tmpfs rw,relatime,mode=755 0 0
cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,nosuid,nodev,noexec,relatime,cpu,cpuacct 0 0
cgroup /sys/fs/cgroup/memory cgroup rw,nosuid,nodev,noexec,relatime,memory 0 0
cgroup /sys/fs/cgroup/systemd cgroup rw,nosuid,nodev,noexec,relatime,xattr,name=systemd 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,nosuid,nodev,noexec,relatime 0 0
"""


def test_cgroup_trees_are_read_from_the_mount_table() -> None:
    trees = cgroups.hierarchies(MOUNTS_V1)

    assert [(str(t.mount), sorted(t.controllers), t.unified) for t in trees] == [
        ("/sys/fs/cgroup/cpu,cpuacct", ["cpu", "cpuacct"], False),
        ("/sys/fs/cgroup/memory", ["memory"], False),
        ("/sys/fs/cgroup/systemd", [], False),
        ("/sys/fs/cgroup/unified", [], True),
    ]
    # on a hybrid host limits go to the v1 controllers
    assert [str(t.mount) for t in cgroups.limiting(trees)] == [
        "/sys/fs/cgroup/cpu,cpuacct",
        "/sys/fs/cgroup/memory",
    ]


def test_pod_cgroup_gets_the_instance_limits_and_is_removed(tmp_path: Path) -> None:
    # plain directories stand in for cgroupfs (where files are the kernel's)
    trees = [
        cgroups.Hierarchy(tmp_path / "cpu", frozenset({"cpu", "cpuacct"})),
        cgroups.Hierarchy(tmp_path / "memory", frozenset({"memory"})),
        cgroups.Hierarchy(tmp_path / "systemd", frozenset()),
    ]
    cgroup = cgroups.PodCgroup.for_pod("/nodeless", "uid-1")

    cgroup.create(cpus=0.5, memory_bytes=2**29, trees=trees)

    assert cgroup.path == "/nodeless/poduid-1"
    pod_cpu, pod_memory, _ = cgroup.directories(trees)
    assert (pod_cpu / "cpu.cfs_quota_us").read_text() == "50000"
    assert (pod_cpu / "cpu.cfs_period_us").read_text() == "100000"
    assert (pod_memory / "memory.limit_in_bytes").read_text() == str(2**29)
    (pod_memory / "memory.limit_in_bytes").unlink()  # cgroupfs has no real files to empty
    (pod_cpu / "cpu.cfs_quota_us").unlink()
    (pod_cpu / "cpu.cfs_period_us").unlink()
    (pod_memory / "container-1").mkdir()

    assert cgroup.remove(trees) == []
    assert not pod_cpu.exists() and not pod_memory.exists()
    assert (tmp_path / "memory" / "nodeless").is_dir()  # the root stays, as kubepods does


def test_unified_pod_cgroup_enables_controllers_down_the_path(tmp_path: Path) -> None:
    root = tmp_path / "unified"
    root.mkdir()
    (root / "cgroup.controllers").write_text("cpu memory pids\n")
    tree = cgroups.Hierarchy(root, frozenset(), unified=True)

    cgroups.PodCgroup("/nodeless/poduid-2").create(cpus=1.0, memory_bytes=2**30, trees=[tree])

    assert (root / "cgroup.subtree_control").read_text() == "+cpu +memory"
    assert (root / "nodeless" / "poduid-2" / "cpu.max").read_text() == "100000 100000"
    assert (root / "nodeless" / "poduid-2" / "memory.max").read_text() == str(2**30)


def test_cpu_quota_has_the_kubelets_minimum() -> None:
    assert cgroups.cpu_quota(0) == 0
    assert cgroups.cpu_quota(0.001) == 1_000
    assert cgroups.cpu_quota(2) == 200_000


def test_oom_kills_are_read_from_the_pod_cgroup_on_cgroup_v2(tmp_path: Path) -> None:
    v2 = cgroups.Hierarchy(tmp_path / "unified", frozenset(), unified=True)
    directory = v2.mount / "nodeless" / "poduid-3"
    directory.mkdir(parents=True)
    (directory / "memory.events").write_text("low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\n")

    assert cgroups.PodCgroup("/nodeless/poduid-3").oom_kills([v2]) == 1
    assert cgroups.PodCgroup("/nodeless/absent").oom_kills([v2]) == 0


def test_a_v1_memory_hierarchy_has_no_pod_level_oom_kill_count(tmp_path: Path) -> None:
    # v1 counts a kill in the victim's own cgroup only (a container's), so
    # the pod's "oom_kill 2" would be about no container of it
    v1 = cgroups.Hierarchy(tmp_path / "memory", frozenset({"memory"}))
    cpu = cgroups.Hierarchy(tmp_path / "cpu", frozenset({"cpu"}))
    directory = v1.mount / "nodeless" / "poduid-3"
    directory.mkdir(parents=True)
    (directory / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")

    assert cgroups.PodCgroup("/nodeless/poduid-3").oom_kills([cpu, v1]) is None
    assert cgroups.PodCgroup("/nodeless/poduid-3").oom_kills([cpu]) == 0


CONTAINER = "98bac6c4b73cfd4c647647aa80248208b67de059874d4ddfdd1aa43ea3967e54"
OTHER = "0f3e" + CONTAINER[4:]


def _kmsg(tmp_path: Path, *messages: str) -> Path:
    records = [f"6,{n},{89420666 + n},-;{m}\n" for n, m in enumerate(messages)]
    path = tmp_path / "kmsg"
    path.write_text("".join(records) + " SUBSYSTEM=memory\n")
    return path


def _oom_kill(task_memcg: str) -> str:
    return (
        "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,"
        f"oom_memcg={task_memcg},task_memcg={task_memcg},task=dd,pid=2327,uid=0"
    )


def test_an_oom_kill_is_found_in_the_kernel_log_by_the_containers_cgroup(
    tmp_path: Path,
) -> None:
    kmsg = _kmsg(
        tmp_path,
        "dd invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0, oom_score_adj=0",
        _oom_kill(f"/nodeless/podabc/{CONTAINER}"),
        "Memory cgroup out of memory: Killed process 2327 (dd) total-vm:68512kB",
    )

    assert oomkills.logged_for(CONTAINER, kmsg)
    assert not oomkills.logged_for(OTHER, kmsg)
    assert not oomkills.logged_for("", kmsg)


def test_the_kernel_log_names_a_container_under_the_systemd_cgroup_driver(
    tmp_path: Path,
) -> None:
    scope = f"/kubepods.slice/kubepods-pod17ef.slice/cri-containerd-{CONTAINER}.scope"
    kmsg = _kmsg(tmp_path, _oom_kill(scope))

    assert oomkills.logged_for(CONTAINER, kmsg)
    assert not oomkills.logged_for(OTHER, kmsg)


def test_an_oom_kill_summary_split_by_other_cpus_lines_is_joined_up(tmp_path: Path) -> None:
    # pr_cont pieces printed after another CPU's line are records of their own
    kmsg = _kmsg(
        tmp_path,
        "oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0",
        "IPv6: ADDRCONF(NETDEV_CHANGE): veth1a2b: link becomes ready",
        f",oom_memcg=/nodeless/podabc/{CONTAINER},task_memcg=",
        "nl0: port 3(veth1a2b) entered blocking state",
        f"/nodeless/podabc/{CONTAINER}",
        ",task=dd,pid=2327,uid=0",
        _oom_kill(f"/nodeless/podabc/{OTHER}"),
    )

    assert oomkills.logged_for(CONTAINER, kmsg)
    assert oomkills.logged_for(OTHER, kmsg)
    assert not oomkills.logged_for(CONTAINER[:-1] + "0", kmsg)


def test_an_oom_kill_only_mentioned_elsewhere_in_the_log_is_not_one(tmp_path: Path) -> None:
    # a line naming the container's cgroup that is not the OOM killer's summary
    kmsg = _kmsg(tmp_path, f"audit: task_memcg=/nodeless/podabc/{CONTAINER}")

    assert not oomkills.logged_for(CONTAINER, kmsg)


def test_an_unreadable_kernel_log_finds_no_oom_kill(tmp_path: Path) -> None:
    assert not oomkills.logged_for(CONTAINER, tmp_path / "absent")


def test_only_the_logs_grown_past_the_limit_are_picked_for_rotation(tmp_path: Path) -> None:
    small, big, gone = tmp_path / "0.log", tmp_path / "1.log", tmp_path / "2.log"
    small.write_bytes(b"x" * 100)
    big.write_bytes(b"x" * 101)

    picked = logfiles.over_limit_of([("a", small), ("b", big), ("c", gone)], 100)

    assert picked == [("b", big)]
