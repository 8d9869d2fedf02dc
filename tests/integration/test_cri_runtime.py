"""containerd as Nodeless runs it: real containerd, runc and CNI, through the CRI.

Each test starts its own containerd on a fresh data directory (a short path
under /tmp: the socket path must fit a unix address), on a test bridge and pod
CIDR of its own so that a Nodeless running on this machine is not disturbed,
and removes every pod, containerd and the bridge afterwards, failed or not.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from nodeless.instances.providers.cri import cgroups, clients, containerd, mounts, sandboximages
from nodeless.instances.providers.cri import runtime_pb2 as pb

POD_CIDR = "10.250.0.0/24"
BRIDGE = "nltest0"
NETWORK_TOOLS = sandboximages.BusyboxImage(
    "nodeless.local/busybox-net:1", cmd=("sh",), applets=("sh", "echo", "nc")
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(120),
    pytest.mark.skipif(os.geteuid() != 0, reason="containerd needs root"),
    pytest.mark.skipif(
        bool(containerd.missing_binaries()),
        reason="missing "
        + ", ".join(containerd.missing_binaries())
        + " (scripts/install-system-packages.sh)",
    ),
    pytest.mark.skipif(
        not sandboximages.BUSYBOX_PATH.is_file(), reason="busybox-static is not installed"
    ),
]


def _processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes that name ``text`` (shims name their
    containerd's socket)."""
    found = []
    needle = text.encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if needle in cmdline:
            found.append(cmdline.replace(b"\0", b" ").decode(errors="replace"))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


@pytest.fixture
def data_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="nl-cri-"))
    try:
        yield path
    finally:
        # Never delete through a mount a failed test may have left behind.
        if not mounts.under(path):
            shutil.rmtree(path, ignore_errors=True)
        containerd.remove_network(BRIDGE)


@pytest.fixture
def settings(data_dir: Path) -> containerd.ContainerdSettings:
    return containerd.ContainerdSettings(data_dir, pod_cidr=POD_CIDR, bridge=BRIDGE)


@pytest.fixture
async def runtime(settings: containerd.ContainerdSettings) -> AsyncIterator[containerd.Containerd]:
    rt = containerd.Containerd(settings)
    try:
        await rt.start()
        yield rt
    finally:
        await rt.stop(remove_pods=True)


def sandbox_config(name: str, data_dir: Path) -> pb.PodSandboxConfig:
    uid = f"uid-{name}"
    return pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name=name, uid=uid, namespace="default"),
        hostname=name,
        log_directory=str(data_dir / "pods" / f"default_{name}_{uid}"),
        labels={"io.kubernetes.pod.name": name, "io.kubernetes.pod.namespace": "default"},
        linux=pb.LinuxPodSandboxConfig(
            security_context=pb.LinuxSandboxSecurityContext(
                namespace_options=pb.NamespaceOption(pid=pb.CONTAINER)
            )
        ),
    )


def busybox_container(name: str, script: str) -> pb.ContainerConfig:
    return pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name=name),
        image=pb.ImageSpec(image=sandboximages.BUSYBOX_IMAGE),
        command=["sh", "-c", script],
        log_path=f"{name}/0.log",
    )


async def run_container(
    rt: containerd.Containerd, sandbox_id: str, config: pb.PodSandboxConfig, script: str
) -> str:
    await rt.ensure_image(sandboximages.BUSYBOX)
    container_id = await rt.client.create_container(
        sandbox_id, busybox_container("main", script), config
    )
    await rt.client.start_container(container_id)
    return container_id


async def test_version_reports_containerd_speaking_cri_v1(
    runtime: containerd.Containerd,
) -> None:
    version = await runtime.client.version()

    assert version.runtime_name == "containerd"
    assert version.runtime_api_version == "v1"
    assert version.runtime_version
    assert await runtime.client.conditions() == {
        clients.RUNTIME_READY: True,
        clients.NETWORK_READY: True,
    }


async def test_pause_image_is_present_under_its_name(runtime: containerd.Containerd) -> None:
    image = await runtime.client.image_status(sandboximages.PAUSE_IMAGE)

    assert image is not None
    assert sandboximages.PAUSE_IMAGE in image.repo_tags
    listed = {tag for i in await runtime.client.list_images() for tag in i.repo_tags}
    assert sandboximages.PAUSE_IMAGE in listed


async def test_sandbox_gets_an_ip_from_the_pod_cidr(
    runtime: containerd.Containerd, data_dir: Path
) -> None:
    config = sandbox_config("web", data_dir)

    sandbox_id = await runtime.client.run_pod_sandbox(config)
    status = (await runtime.client.pod_sandbox_status(sandbox_id)).status

    assert status.state == pb.SANDBOX_READY
    assert status.metadata.name == "web"
    assert ipaddress.ip_address(status.network.ip) in ipaddress.ip_network(POD_CIDR)
    [listed] = await runtime.client.list_pod_sandbox(labels={"io.kubernetes.pod.name": "web"})
    assert listed.id == sandbox_id


async def test_container_runs_logs_and_execs_in_its_sandbox(
    runtime: containerd.Containerd, data_dir: Path
) -> None:
    config = sandbox_config("app", data_dir)
    sandbox_id = await runtime.client.run_pod_sandbox(config)

    container_id = await run_container(runtime, sandbox_id, config, "echo hello; sleep 1000")
    status = (await runtime.client.container_status(container_id)).status
    result = await runtime.client.exec_sync(container_id, ["echo", "hi"], exec_timeout=30)

    assert status.state == pb.CONTAINER_RUNNING
    assert status.metadata.name == "main"
    assert status.image_ref.startswith("sha256:")
    assert result.exit_code == 0
    assert result.stdout == b"hi\n"
    # The CRI log format: "<time> stdout F hello".
    log = Path(config.log_directory, "main", "0.log").read_text()
    assert log.splitlines()[0].split(" ", 3)[1:] == ["stdout", "F", "hello"]
    [listed] = await runtime.client.list_containers(pod_sandbox_id=sandbox_id)
    assert listed.id == container_id


async def test_exec_reports_the_command_exit_code(
    runtime: containerd.Containerd, data_dir: Path
) -> None:
    config = sandbox_config("exit", data_dir)
    sandbox_id = await runtime.client.run_pod_sandbox(config)
    container_id = await run_container(runtime, sandbox_id, config, "sleep 1000")

    result = await runtime.client.exec_sync(container_id, ["sh", "-c", "echo oops >&2; exit 3"])

    assert (result.exit_code, result.stdout, result.stderr) == (3, b"", b"oops\n")


async def test_stopped_and_removed_pod_is_gone(
    runtime: containerd.Containerd, data_dir: Path
) -> None:
    config = sandbox_config("gone", data_dir)
    sandbox_id = await runtime.client.run_pod_sandbox(config)
    container_id = await run_container(runtime, sandbox_id, config, "sleep 1000")

    await runtime.client.stop_container(container_id, grace_period=5)
    stopped = (await runtime.client.container_status(container_id)).status
    await runtime.client.remove_container(container_id)
    await runtime.client.stop_pod_sandbox(sandbox_id)
    sandbox = (await runtime.client.pod_sandbox_status(sandbox_id)).status
    await runtime.client.remove_pod_sandbox(sandbox_id)

    assert stopped.state == pb.CONTAINER_EXITED
    assert stopped.finished_at > 0
    assert sandbox.state == pb.SANDBOX_NOTREADY
    assert await runtime.client.list_containers() == []
    assert await runtime.client.list_pod_sandbox() == []
    with pytest.raises(clients.CriError) as missing:
        await runtime.client.container_status(container_id)
    assert missing.value.not_found


async def test_pause_process_exits_cleanly_on_sigterm(
    runtime: containerd.Containerd, data_dir: Path
) -> None:
    config = sandbox_config("pause", data_dir)
    sandbox_id = await runtime.client.run_pod_sandbox(config)
    container_id = await runtime.client.create_container(
        sandbox_id,
        pb.ContainerConfig(
            metadata=pb.ContainerMetadata(name="pause"),
            image=pb.ImageSpec(image=sandboximages.PAUSE_IMAGE),
        ),
        config,
    )
    await runtime.client.start_container(container_id)

    # A long grace period: only SIGTERM can end it with code 0 (SIGKILL: 137).
    await runtime.client.stop_container(container_id, grace_period=60)

    status = (await runtime.client.container_status(container_id)).status
    assert (status.state, status.exit_code) == (pb.CONTAINER_EXITED, 0)


async def test_container_that_exits_reports_its_exit_code(
    runtime: containerd.Containerd, data_dir: Path
) -> None:
    config = sandbox_config("job", data_dir)
    sandbox_id = await runtime.client.run_pod_sandbox(config)
    container_id = await run_container(runtime, sandbox_id, config, "exit 7")

    status = (await runtime.client.container_status(container_id)).status
    while status.state != pb.CONTAINER_EXITED:
        await asyncio.sleep(0.05)
        status = (await runtime.client.container_status(container_id)).status

    assert status.exit_code == 7
    assert status.reason == "Error"


async def test_two_sandboxes_get_different_ips(
    runtime: containerd.Containerd, data_dir: Path
) -> None:
    first = await runtime.client.run_pod_sandbox(sandbox_config("one", data_dir))
    second = await runtime.client.run_pod_sandbox(sandbox_config("two", data_dir))

    ips = [(await runtime.client.pod_sandbox_status(s)).status.network.ip for s in (first, second)]

    assert ips[0] != ips[1]
    assert all(ipaddress.ip_address(ip) in ipaddress.ip_network(POD_CIDR) for ip in ips)


async def test_unknown_ids_are_not_found(runtime: containerd.Containerd) -> None:
    with pytest.raises(clients.CriError) as sandbox:
        await runtime.client.pod_sandbox_status("0" * 64)
    with pytest.raises(clients.CriError) as container:
        await runtime.client.start_container("0" * 64)

    assert sandbox.value.not_found
    assert container.value.not_found
    assert await runtime.client.image_status("nodeless.local/absent:1") is None


async def test_removed_image_is_gone(runtime: containerd.Containerd) -> None:
    await runtime.ensure_image(sandboximages.BUSYBOX)
    assert await runtime.client.image_status(sandboximages.BUSYBOX_IMAGE) is not None

    await runtime.client.remove_image(sandboximages.BUSYBOX_IMAGE)

    assert await runtime.client.image_status(sandboximages.BUSYBOX_IMAGE) is None


async def test_stopping_containerd_leaves_no_process(
    settings: containerd.ContainerdSettings, data_dir: Path
) -> None:
    rt = containerd.Containerd(settings)
    await rt.start()
    try:
        config = sandbox_config("short", data_dir)
        sandbox_id = await rt.client.run_pod_sandbox(config)
        container_id = await run_container(rt, sandbox_id, config, "sleep 1000")
        info = (await rt.client.container_status(container_id, verbose=True)).info
        container_pid = json.loads(info["info"])["pid"]
        containerd_pid = rt.pid
        assert containerd_pid is not None and _alive(containerd_pid) and _alive(container_pid)
    finally:
        await rt.stop(remove_pods=True)

    assert not _alive(containerd_pid)
    assert not _alive(container_pid)
    assert _processes_mentioning(str(data_dir)) == []
    assert mounts.under(data_dir) == []
    assert not settings.pid_file.exists()


async def test_removing_all_pods_removes_the_pod_cgroup_each_sandbox_was_put_in(
    settings: containerd.ContainerdSettings, data_dir: Path
) -> None:
    # the provider makes a pod's cgroup and removes it after the sandbox; a
    # containerd stopped with its pods removed (tests, benches, clean-ups)
    # has no provider to, and left them on the host
    root = cgroups.PodCgroup(f"/nodeless-test-{os.getpid()}")
    pod_cgroup = cgroups.PodCgroup.for_pod(root.path, "uid-1")
    shared = cgroups.PodCgroup(f"{root.path}/shared")
    rt = containerd.Containerd(settings)
    await rt.start()
    try:
        await asyncio.to_thread(pod_cgroup.create, cpus=0.5, memory_bytes=64 << 20)
        await asyncio.to_thread(shared.create, cpus=0.5, memory_bytes=64 << 20)
        config = sandbox_config("grouped", data_dir)
        config.linux.cgroup_parent = pod_cgroup.path
        sandbox_id = await rt.client.run_pod_sandbox(config)
        await run_container(rt, sandbox_id, config, "sleep 1000")
        other = sandbox_config("shared", data_dir)
        other.linux.cgroup_parent = shared.path
        await rt.client.run_pod_sandbox(other)
        assert any(d.is_dir() for d in pod_cgroup.directories())
    finally:
        await rt.stop(remove_pods=True)
        left = [d for d in pod_cgroup.directories() if d.is_dir()]
        kept = [d for d in shared.directories() if d.is_dir()]
        await asyncio.to_thread(root.remove)  # the whole tree, deepest first

    assert not left
    # a parent that is not a pod's own (no "pod" name) is not the runtime's to remove
    assert kept


async def test_pods_survive_a_containerd_restart(
    settings: containerd.ContainerdSettings, data_dir: Path
) -> None:
    first = containerd.Containerd(settings)
    await first.start()
    config = sandbox_config("durable", data_dir)
    try:
        sandbox_id = await first.client.run_pod_sandbox(config)
        container_id = await run_container(first, sandbox_id, config, "sleep 1000")
    finally:
        await first.stop()

    second = containerd.Containerd(settings)
    try:
        await second.start()
        sandboxes = await second.client.list_pod_sandbox()
        status = (await second.client.container_status(container_id)).status
        result = await second.client.exec_sync(container_id, ["echo", "still here"])
    finally:
        await second.stop(remove_pods=True)

    assert [(s.id, s.state) for s in sandboxes] == [(sandbox_id, pb.SANDBOX_READY)]
    assert status.state == pb.CONTAINER_RUNNING
    assert result.stdout == b"still here\n"


async def test_a_running_containerd_on_the_data_dir_is_adopted(
    runtime: containerd.Containerd, settings: containerd.ContainerdSettings
) -> None:
    original_pid = runtime.pid

    adopter = containerd.Containerd(settings)
    await adopter.start()
    version = await adopter.client.version()
    await adopter.stop()

    assert adopter.pid is None
    assert version.runtime_name == "containerd"
    assert original_pid is not None and not _alive(original_pid)


async def test_an_external_runtime_is_used_but_not_stopped(
    runtime: containerd.Containerd,
) -> None:
    external = containerd.Containerd.external("unix://" + runtime.address)
    await external.start()
    version = await external.client.version()
    await external.stop()

    assert version.runtime_api_version == "v1"
    assert runtime.pid is not None and _alive(runtime.pid)
    assert (await runtime.client.version()).runtime_name == "containerd"


async def test_a_containerd_without_cri_fails_to_start_with_the_reason(
    data_dir: Path,
) -> None:
    settings = containerd.ContainerdSettings(
        data_dir, pod_cidr=POD_CIDR, bridge=BRIDGE, snapshotter="nosuch"
    )
    rt = containerd.Containerd(settings)

    with pytest.raises(containerd.ContainerdError) as failed:
        await rt.start()

    assert "no working CRI plugin" in str(failed.value)
    assert 'failed to find snapshotter \\"nosuch\\"' in str(failed.value)
    assert rt.pid is None
    assert _processes_mentioning(str(data_dir)) == []


OUTSIDE_NETNS = "nltest-out"
OUTSIDE_VETH = "nltout0"
OUTSIDE_IP, OUTSIDE_HOST_IP = "10.251.7.1", "10.251.7.2"
_PEER_PRINTER = """
import socket
server = socket.create_server((%r, 7777))
server.settimeout(60)
print("listening", flush=True)
conn, peer = server.accept()
print(peer[0], flush=True)
"""


def _sh(*command: str) -> None:
    subprocess.run(command, capture_output=True, check=True)


@pytest.fixture
def outside_host() -> Iterator[None]:
    """A host outside the pod CIDR: a network namespace at OUTSIDE_IP, behind
    a veth pair whose host end is OUTSIDE_HOST_IP, with no route to the pods
    (so it can answer only what is masqueraded)."""
    subprocess.run(["ip", "netns", "del", OUTSIDE_NETNS], capture_output=True)
    subprocess.run(["ip", "link", "del", OUTSIDE_VETH], capture_output=True)
    try:
        _sh("ip", "netns", "add", OUTSIDE_NETNS)
        _sh("ip", "link", "add", OUTSIDE_VETH, "type", "veth", "peer", "name", "nltout1")
        _sh("ip", "link", "set", "nltout1", "netns", OUTSIDE_NETNS)
        _sh("ip", "addr", "add", f"{OUTSIDE_HOST_IP}/24", "dev", OUTSIDE_VETH)
        _sh("ip", "link", "set", OUTSIDE_VETH, "up")
        inside = ("ip", "netns", "exec", OUTSIDE_NETNS, "ip")
        _sh(*inside, "addr", "add", f"{OUTSIDE_IP}/24", "dev", "nltout1")
        _sh(*inside, "link", "set", "nltout1", "up")
        _sh(*inside, "link", "set", "lo", "up")
        yield
    finally:
        subprocess.run(["ip", "link", "del", OUTSIDE_VETH], capture_output=True)
        subprocess.run(["ip", "netns", "del", OUTSIDE_NETNS], capture_output=True)


async def test_pod_traffic_leaving_the_pod_cidr_is_masqueraded_to_the_host_address(
    runtime: containerd.Containerd, data_dir: Path, outside_host: None
) -> None:
    server = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", OUTSIDE_NETNS, sys.executable, "-c", _PEER_PRINTER % OUTSIDE_IP,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert server.stdout is not None
    try:
        assert await asyncio.wait_for(server.stdout.readline(), 30) == b"listening\n"
        config = sandbox_config("egress", data_dir)
        sandbox_id = await runtime.client.run_pod_sandbox(config)
        pod_ip = (await runtime.client.pod_sandbox_status(sandbox_id)).status.network.ip
        await runtime.ensure_image(NETWORK_TOOLS)
        container_id = await runtime.client.create_container(
            sandbox_id,
            pb.ContainerConfig(
                metadata=pb.ContainerMetadata(name="main"),
                image=pb.ImageSpec(image=NETWORK_TOOLS.ref),
                command=["sh", "-c", f"echo hello | nc -w 5 {OUTSIDE_IP} 7777"],
                log_path="main/0.log",
            ),
            config,
        )
        await runtime.client.start_container(container_id)
        peer = (await asyncio.wait_for(server.stdout.readline(), 60)).decode().strip()
    finally:
        if server.returncode is None:
            server.kill()
        await server.wait()

    assert peer == OUTSIDE_HOST_IP != pod_ip
    assert f"table ip {containerd.masquerade_table(BRIDGE)}" in _nft_tables()
    assert sandbox_id not in _nat_rules()  # no chain of this pod's own


async def test_stopping_with_its_pods_removed_stops_a_shim_a_pod_left_behind(
    settings: containerd.ContainerdSettings, tmp_path: Path
) -> None:
    runtime = containerd.Containerd(settings)
    await runtime.start()
    # what containerd 1.6.20 leaves when a task delete times out: a shim of
    # this containerd whose bundle is gone and which has no child
    script = tmp_path / "containerd-shim-runc-v2"
    script.write_text("import time\ntime.sleep(120)\n")
    leaked = await asyncio.create_subprocess_exec(
        sys.executable, str(script), "-namespace", "k8s.io", "-id", "f" * 64,
        "-address", runtime.address,
    )  # fmt: skip
    try:
        await runtime.stop(remove_pods=True)
        code = await asyncio.wait_for(leaked.wait(), 30)
    finally:
        if leaked.returncode is None:
            leaked.kill()
            await leaked.wait()

    assert code == -15  # SIGTERM


def _nft_tables() -> str:
    return subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout


def _nat_rules() -> str:
    return subprocess.run(
        ["iptables-save", "-t", "nat"], capture_output=True, text=True, check=True
    ).stdout


def _nat(*args: str, check: bool = True) -> None:
    subprocess.run(["iptables", "-t", "nat", *args], capture_output=True, check=check)


def _masquerade(source: str, sandbox_id: str, chain: str) -> list[str]:
    comment = f'name: "{containerd.DEFAULT_NETWORK}" id: "{sandbox_id}"'
    return ["POSTROUTING", "-s", source, "-m", "comment", "--comment", comment, "-j", chain]


async def test_a_restarted_containerd_releases_the_network_of_sandboxes_it_no_longer_has(
    settings: containerd.ContainerdSettings, data_dir: Path
) -> None:
    # the bridge's per-pod masquerade (where nftables cannot be used, and
    # what sandboxes of earlier versions have): a live pod keeps its chain
    settings = dataclasses.replace(settings, per_pod_masquerade=True)
    first = containerd.Containerd(settings)
    await first.start()
    config = sandbox_config("kept", data_dir)
    try:
        sandbox_id = await first.client.run_pod_sandbox(config)
        ip = (await first.client.pod_sandbox_status(sandbox_id)).status.network.ip
    finally:
        await first.stop()
    # what a killed containerd's pods leave once their sandboxes are gone:
    # an IP lease and a masquerade chain, here for an address of this CIDR
    # and, to be left alone, one of another data directory's CIDR
    leases = settings.ipam_dir / settings.network_name
    (leases / "10.250.0.200").write_text("f" * 64 + "\neth0")
    stale = _masquerade("10.250.0.200/32", "f" * 64, "CNI-nltestgone")
    foreign = _masquerade("10.249.0.9/32", "e" * 64, "CNI-nltestforeign")
    for chain, rule in (("CNI-nltestgone", stale), ("CNI-nltestforeign", foreign)):
        await asyncio.to_thread(_nat, "-N", chain)
        await asyncio.to_thread(_nat, "-A", chain, "-j", "ACCEPT")
        await asyncio.to_thread(_nat, "-A", *rule)
    # and a chain whose jump a half-done CNI DEL already removed
    comment = f'name: "{containerd.DEFAULT_NETWORK}" id: "{"d" * 64}"'
    await asyncio.to_thread(_nat, "-N", "CNI-nltestheadless")
    await asyncio.to_thread(
        _nat, "-A", "CNI-nltestheadless", "-d", POD_CIDR, "-m", "comment", "--comment", comment,
        "-j", "ACCEPT",
    )  # fmt: skip

    second = containerd.Containerd(settings)
    try:
        await second.start()
        rules = _nat_rules()
        sandboxes = await second.client.list_pod_sandbox()
        held = {lease.name: lease.read_text().split()[0] for lease in leases.glob("10.*")}
    finally:
        await second.stop(remove_pods=True)
        for args in (("-D", *foreign), ("-F", "CNI-nltestforeign"), ("-X", "CNI-nltestforeign")):
            await asyncio.to_thread(_nat, *args, check=False)

    assert [s.id for s in sandboxes] == [sandbox_id]
    assert held == {ip: sandbox_id}
    assert "CNI-nltestgone" not in rules and "CNI-nltestheadless" not in rules
    assert "CNI-nltestforeign" in rules and "10.249.0.9/32" in rules
    assert f'id: \\"{sandbox_id}\\"' in rules  # the live pod keeps its masquerade
