"""The containerd Nodeless runs for real pods, configured by the project.

DESIGN.md: pods run on containerd's CRI plugin with runc and the CNI
``bridge`` + ``host-local`` + ``portmap`` (+ ``loopback``) plugins, and the
files that make this work on our machines are written by the project, never by
hand. This module writes them under one data directory:

- ``config.toml`` (containerd config version 2): its own root, state and
  socket, so it never touches a system containerd; the CRI plugin with
  ``restrict_oom_score_adj`` (no CAP_SYS_RESOURCE here), the locally built
  sandbox image, the overlayfs snapshotter (native where overlay mounts fail),
  the CNI directories and a ``certs.d`` for registry ``hosts.toml`` files;
- ``net.d/10-nodeless.conflist``: a bridge with its own name, host-local
  IPAM on a configurable pod CIDR, and portmap for hostPorts. The CRI plugin
  brings up each pod's ``lo`` itself with the ``loopback`` plugin, so it is
  not in the chain but must be in the bin dir.

Pod traffic leaving the pod CIDR is masqueraded by one nftables rule for the
whole CIDR (table ``nodeless_masq_<bridge>``, written at every start), not by
the bridge plugin's ``ipMasq``: that adds an iptables chain and jump per pod,
several iptables runs per sandbox set-up and teardown, each serialised on the
xtables lock and each slower as the NAT table grows (measured: ~80 ms of a
sandbox's start at 5 pods/s). Where nftables cannot be used, the bridge's
per-pod masquerade is kept.

``Containerd`` starts ``containerd --config`` as a child process in its own
session (so a Ctrl-C meant for Nodeless does not kill the pods' runtime
first), waits until the CRI answers ready, imports the pause image, and stops
it with SIGTERM then SIGKILL. Pods survive a containerd restart (their shims
keep running); ``stop(remove_pods=True)`` removes them first. A containerd
left running by an earlier Nodeless on the same data directory is adopted
rather than started twice, and ``Containerd.external`` uses any running CRI
runtime's socket without managing it. Shims of a managed containerd that
outlive their pods (a containerd 1.6 bug, see ``shims``) are stopped at
start, every ``SHIM_REAP_INTERVAL`` seconds and at stop (after
``remove_pods``, once every shim has exited or leaked); one that kept its
bundle, once two looks a reaping interval apart found it childless and of no
pod the runtime lists (at stop, two looks ``SHIM_SECOND_LOOK`` apart).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import json
import logging
import os
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nodeless.instances.providers.cri import cgroups, clients, gpudevices, sandboximages, shims

log = logging.getLogger(__name__)

DEFAULT_POD_CIDR = "10.88.0.0/16"
DEFAULT_BRIDGE = "nodeless0"
DEFAULT_NETWORK = "nodeless"
DEFAULT_CNI_BIN_DIR = Path("/usr/lib/cni")
CNI_PLUGINS = ("bridge", "host-local", "portmap", "loopback")
CNI_VERSION = "1.0.0"
CONFLIST_NAME = "10-nodeless.conflist"
SNAPSHOTTER_OVERLAY = "overlayfs"
SNAPSHOTTER_NATIVE = "native"
# Unix socket paths are at most 107 bytes; containerd adds ".ttrpc" for its
# second socket.
MAX_SOCKET_PATH = 107 - len(".ttrpc")
# How often a managed containerd's leaked shims (``shims``) are looked for,
# and how long removing every pod waits for the shims to exit.
SHIM_REAP_INTERVAL = 60.0
SHIM_EXIT_TIMEOUT = 15.0
# Pods removed at once by ``remove_all_pods`` (each is mostly runc and CNI
# processes: more at once than this only queues them on two cores).
REMOVALS_AT_ONCE = 8
# At stop, the second look at shims the first found orphaned comes this much
# later (the next reaping interval would come only after the next start).
SHIM_SECOND_LOOK = 2.0
SHIM_LOOK_TIMEOUT = 10.0  # for both looks' runtime calls together
# Where a root shell finds every binary containerd and CNI need (runc, shims,
# iptables), whatever PATH Nodeless itself was started with.
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
BINARIES = ("containerd", "containerd-shim-runc-v2", "runc", "ctr")


class ContainerdError(Exception):
    """containerd could not be configured, started or reached; says why."""


@dataclass(frozen=True)
class ContainerdSettings:
    """Where a managed containerd keeps its files, and how pods are networked."""

    data_dir: Path
    pod_cidr: str = DEFAULT_POD_CIDR
    bridge: str = DEFAULT_BRIDGE
    network_name: str = DEFAULT_NETWORK
    snapshotter: str = SNAPSHOTTER_OVERLAY
    sandbox_image: str = sandboximages.PAUSE_IMAGE
    cni_bin_dir: Path = DEFAULT_CNI_BIN_DIR
    runc_binary: str = "runc"
    # cgroupfs on cgroup v1 and on hosts without systemd as init; the systemd
    # driver only where systemd manages the cgroup tree.
    systemd_cgroup: bool = False
    stream_server_address: str = "127.0.0.1"
    log_level: str = "info"
    # Where CDI specs live; set (with enable_cdi) only for containerd 1.7+,
    # which knows the options.
    cdi_spec_dirs: tuple[str, ...] = ()
    # The bridge plugin's masquerade chain per pod instead of one nftables
    # rule for the CIDR: only where that rule cannot be installed.
    per_pod_masquerade: bool = False

    def __post_init__(self) -> None:
        network = ipaddress.ip_network(self.pod_cidr, strict=False)
        if network.max_prefixlen - network.prefixlen < 2:
            raise ValueError(f"pod CIDR {self.pod_cidr} leaves no room for pods")
        if not 0 < len(self.bridge) <= 15 or "/" in self.bridge or " " in self.bridge:
            raise ValueError(f"bridge name {self.bridge!r} is not a Linux interface name")

    @property
    def root(self) -> Path:
        return self.data_dir / "root"

    @property
    def state(self) -> Path:
        return self.data_dir / "state"

    @property
    def socket(self) -> Path:
        return self.data_dir / "containerd.sock"

    @property
    def config_file(self) -> Path:
        return self.data_dir / "config.toml"

    @property
    def cni_conf_dir(self) -> Path:
        return self.data_dir / "net.d"

    @property
    def conflist_file(self) -> Path:
        return self.cni_conf_dir / CONFLIST_NAME

    @property
    def ipam_dir(self) -> Path:
        """host-local's leases, kept with this containerd rather than in
        /var/lib/cni, so two Nodeless data directories never share them."""
        return self.data_dir / "ipam"

    @property
    def registry_config_dir(self) -> Path:
        """containerd's ``config_path``: one ``HOST/hosts.toml`` per registry."""
        return self.data_dir / "certs.d"

    @property
    def opt_dir(self) -> Path:
        return self.data_dir / "opt"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "containerd.log"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "containerd.pid"


# --- rendering (pure: unit-tested without root) ---


def containerd_config(settings: ContainerdSettings) -> dict[str, Any]:
    """containerd's config.toml (version 2) as a dict."""
    cri = "io.containerd.grpc.v1.cri"
    return {
        "version": 2,
        "root": str(settings.root),
        "state": str(settings.state),
        # Snapshotters this host cannot use only add noise and start-up time.
        "disabled_plugins": [
            "io.containerd.snapshotter.v1.aufs",
            "io.containerd.snapshotter.v1.btrfs",
            "io.containerd.snapshotter.v1.devmapper",
            "io.containerd.snapshotter.v1.zfs",
        ],
        "grpc": {"address": str(settings.socket), "uid": 0, "gid": 0},
        "debug": {"level": settings.log_level},
        "plugins": {
            "io.containerd.internal.v1.opt": {"path": str(settings.opt_dir)},
            cri: {
                "sandbox_image": settings.sandbox_image,
                # No CAP_SYS_RESOURCE on these machines: never lower a score.
                "restrict_oom_score_adj": True,
                "stream_server_address": settings.stream_server_address,
                "stream_server_port": "0",
                "enable_selinux": False,
                "max_container_log_line_size": 16384,
                "containerd": {
                    "snapshotter": settings.snapshotter,
                    "default_runtime_name": "runc",
                    "runtimes": {
                        "runc": {
                            "runtime_type": "io.containerd.runc.v2",
                            "options": {
                                "BinaryName": settings.runc_binary,
                                "SystemdCgroup": settings.systemd_cgroup,
                            },
                        }
                    },
                },
                "cni": {
                    "bin_dir": str(settings.cni_bin_dir),
                    "conf_dir": str(settings.cni_conf_dir),
                    "max_conf_num": 1,
                },
                "registry": {"config_path": str(settings.registry_config_dir)},
                **(
                    {"enable_cdi": True, "cdi_spec_dirs": list(settings.cdi_spec_dirs)}
                    if settings.cdi_spec_dirs
                    else {}
                ),
            },
        },
    }


def render_config(settings: ContainerdSettings) -> str:
    return "# Written by Nodeless; edits are overwritten at start.\n" + to_toml(
        containerd_config(settings)
    )


def cni_conflist(settings: ContainerdSettings) -> dict[str, Any]:
    """The pod network: bridge + host-local IPAM, then portmap for hostPorts;
    NAT by ``masquerade_script``'s rule unless ``per_pod_masquerade``."""
    network = ipaddress.ip_network(settings.pod_cidr, strict=False)
    default_route = "0.0.0.0/0" if network.version == 4 else "::/0"
    return {
        "cniVersion": CNI_VERSION,
        "name": settings.network_name,
        "plugins": [
            {
                "type": "bridge",
                "bridge": settings.bridge,
                "isGateway": True,
                "ipMasq": settings.per_pod_masquerade,
                # A pod reaching itself through a Service VIP comes back in
                # on the port it left by.
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": str(network)}]],
                    "routes": [{"dst": default_route}],
                    "dataDir": str(settings.ipam_dir),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def render_conflist(settings: ContainerdSettings) -> str:
    return json.dumps(cni_conflist(settings), indent=2) + "\n"


def masquerade_table(bridge: str) -> str:
    """The nftables table of the pod network's NAT, one per pod bridge."""
    return "nodeless_masq_" + "".join(c if c.isalnum() else "_" for c in bridge)


def masquerade_script(settings: ContainerdSettings) -> str:
    """An ``nft -f`` script that (re)creates the pod network's NAT table at
    once: what leaves the pod CIDR for anywhere but the CIDR and multicast is
    masqueraded, the rule the bridge plugin's ``ipMasq`` writes per pod."""
    network = ipaddress.ip_network(settings.pod_cidr, strict=False)
    family, multicast = ("ip", "224.0.0.0/4") if network.version == 4 else ("ip6", "ff00::/8")
    table = f"{family} {masquerade_table(settings.bridge)}"
    lines = [
        f"add table {table}",
        f"delete table {table}",
        f"add table {table}",
        f"add chain {table} postrouting {{ type nat hook postrouting priority srcnat ; policy accept ; }}",
        f"add rule {table} postrouting {family} saddr {network} {family} daddr != {network} "
        f"{family} daddr != {multicast} masquerade",
    ]
    return "\n".join(lines) + "\n"


def registry_hosts(server: str, *, skip_verify: bool = False) -> dict[str, Any]:
    """A registry's ``hosts.toml``: pull and resolve from ``server``
    (``http://HOST:PORT`` for a registry without TLS, as local ones are)."""
    return {
        "server": server,
        "host": {server: {"capabilities": ["pull", "resolve"], "skip_verify": skip_verify}},
    }


def write_registry_host(
    settings: ContainerdSettings, host: str, server: str, *, skip_verify: bool = False
) -> Path:
    """Writes ``certs.d/HOST/hosts.toml`` so that images named ``HOST/...`` are
    pulled from ``server``; containerd reads it at every pull, no restart
    needed. Returns the file."""
    if not host or "/" in host or host in (".", ".."):
        raise ValueError(f"registry host {host!r} is not a host[:port]")
    path = settings.registry_config_dir / host / "hosts.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_if_changed(path, to_toml(registry_hosts(server, skip_verify=skip_verify)))
    return path


def write_files(settings: ContainerdSettings) -> None:
    """Creates the data directory tree and (re)writes config.toml and the
    CNI conflist. Existing ``certs.d`` host files are left alone."""
    for d in (
        settings.data_dir,
        settings.root,
        settings.state,
        settings.cni_conf_dir,
        settings.ipam_dir,
        settings.registry_config_dir,
        settings.opt_dir,
    ):
        d.mkdir(parents=True, exist_ok=True)
    settings.data_dir.chmod(0o711)
    _write_if_changed(settings.config_file, render_config(settings))
    _write_if_changed(settings.conflist_file, render_conflist(settings))


def _write_if_changed(path: Path, text: str) -> None:
    if path.exists() and path.read_text() == text:
        return
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def to_toml(doc: Mapping[str, Any]) -> str:
    """A TOML document from nested dicts of strings, booleans, integers and
    lists of those: the little TOML containerd's config needs."""
    lines: list[str] = []
    _toml_table(doc, [], lines)
    return "\n".join(lines) + "\n"


def _toml_table(table: Mapping[str, Any], path: list[str], lines: list[str]) -> None:
    scalars = {k: v for k, v in table.items() if not isinstance(v, Mapping)}
    tables = {k: v for k, v in table.items() if isinstance(v, Mapping)}
    if path and (scalars or not tables):
        if lines:
            lines.append("")
        lines.append("[" + ".".join(_toml_key(p) for p in path) + "]")
    for key, value in scalars.items():
        lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    for key, sub in tables.items():
        _toml_table(sub, [*path, key], lines)


def _toml_key(key: str) -> str:
    if key and all(c.isalnum() or c in "-_" for c in key):
        return key
    return json.dumps(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        # A JSON string is a valid TOML basic string.
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML for {value!r}")


# --- checks of the host ---


def missing_binaries(settings: ContainerdSettings | None = None) -> list[str]:
    """containerd, runc, shim, ctr and CNI plugins this host lacks."""
    path = _process_env()["PATH"]
    missing = [b for b in BINARIES if shutil.which(b, path=path) is None]
    if settings is not None and shutil.which(settings.runc_binary, path=path) is None:
        missing.append(settings.runc_binary)
    bin_dir = settings.cni_bin_dir if settings is not None else DEFAULT_CNI_BIN_DIR
    missing += [str(bin_dir / p) for p in CNI_PLUGINS if not (bin_dir / p).is_file()]
    return sorted(set(missing))


def unavailable_reason(settings: ContainerdSettings | None = None) -> str:
    """Why Nodeless cannot run its containerd on this host, in words for the
    user ("" when it can): ``nodeless up`` says this when it falls back to
    the simulated provider."""
    if os.geteuid() != 0:
        return "containerd needs root: run as root (or with sudo)"
    if missing := missing_binaries(settings):
        return "missing " + ", ".join(missing) + ": run scripts/install-system-packages.sh"
    if not sandboximages.BUSYBOX_PATH.is_file():
        return f"{sandboximages.BUSYBOX_PATH} not found: install busybox-static"
    return ""


async def overlay_supported(work_dir: Path) -> bool:
    """Whether an overlay mount works on ``work_dir``'s filesystem (it does
    not on some nested or exotic ones), by trying one."""
    probe = work_dir / "overlay-probe"
    dirs = [probe / d for d in ("lower", "upper", "work", "merged")]
    try:
        for d in dirs:
            d.mkdir(parents=True, exist_ok=True)
        lower, upper, work, merged = dirs
        options = f"lowerdir={lower},upperdir={upper},workdir={work}"
        if await _run("mount", "-t", "overlay", "overlay", "-o", options, str(merged)) != 0:
            return False
        await _run("umount", str(merged))
        return True
    finally:
        shutil.rmtree(probe, ignore_errors=True)


async def binary_version() -> str:
    """The containerd binary's version ("1.6.20~ds1"), "" when unknown."""
    try:
        proc = await asyncio.create_subprocess_exec(
            "containerd",
            "--version",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            env=_process_env(),
        )
    except FileNotFoundError:
        return ""
    out, _ = await proc.communicate()
    # "containerd github.com/containerd/containerd 1.6.20~ds1 <revision>"
    words = out.decode(errors="replace").split()
    return words[2].removeprefix("v") if len(words) > 2 else ""


def _release_leases(directory: Path, live: set[str]) -> int:
    """Removes host-local's lease files (named by IP, holding the container
    ID) of containers not in ``live``; returns how many."""
    released = 0
    try:
        entries = list(directory.iterdir())
    except FileNotFoundError:
        return 0
    for entry in entries:
        try:
            ipaddress.ip_address(entry.name)
            holder = entry.read_text().split(maxsplit=1)
        except (ValueError, OSError):
            continue  # last_reserved_ip.0, the lock and anything else
        if holder and holder[0] not in live:
            entry.unlink(missing_ok=True)
            released += 1
    return released


@dataclass(frozen=True)
class StaleMasquerade:
    """What the bridge plugin set up for sandboxes that are gone: the
    POSTROUTING jumps to delete (each as its arguments after ``-A``) and the
    per-pod chains to flush and delete, including chains whose jump a
    half-done CNI DEL already removed."""

    jumps: tuple[tuple[str, ...], ...]
    chains: frozenset[str]


def stale_masquerade(dump: str, settings: ContainerdSettings, live: set[str]) -> StaleMasquerade:
    """From ``iptables-save -t nat``: the bridge plugin's rules of this
    network (``--comment 'name: "NET" id: "ID"'``) for this pod CIDR whose
    sandbox ``ID`` is not in ``live``. A jump is ``-s IP/32 ... -j CNI-x``
    from POSTROUTING; its chain holds ``-d CIDR ... -j ACCEPT`` and the
    masquerade."""
    network = ipaddress.ip_network(settings.pod_cidr, strict=False)
    marker = f'name: "{settings.network_name}" id: "'
    jumps: list[tuple[str, ...]] = []
    chains: set[str] = set()
    for line in dump.splitlines():
        if not line.startswith("-A CNI-") and not line.startswith("-A POSTROUTING "):
            continue
        try:
            args = shlex.split(line)[1:]
        except ValueError:
            continue
        options = _rule_options(args[1:])
        comment = options.get("--comment", "")
        if not comment.startswith(marker) or comment[len(marker) :].rstrip('"') in live:
            continue
        jump = args[0] == "POSTROUTING"
        try:
            if jump:
                inside = ipaddress.ip_address(options.get("-s", "").split("/", 1)[0]) in network
            else:
                inside = ipaddress.ip_network(options.get("-d", ""), strict=False) == network
        except ValueError:
            continue
        chain = options.get("-j", "") if jump else args[0]
        if inside and chain.startswith("CNI-"):
            chains.add(chain)
            if jump:
                jumps.append(tuple(args))
    return StaleMasquerade(tuple(jumps), frozenset(chains))


def _rule_options(words: list[str]) -> dict[str, str]:
    """An iptables rule's ``-option value`` pairs (a ``!`` before one is skipped)."""
    options: dict[str, str] = {}
    index = 0
    while index < len(words):
        word = words[index]
        if word.startswith("-") and index + 1 < len(words):
            options[word] = words[index + 1]
            index += 2
        else:
            index += 1
    return options


def remove_network(bridge: str) -> None:
    """Deletes the pod bridge and its NAT table. Both outlive containerd and
    its pods, as a node's network outlives its kubelet, until whoever made
    the network takes it down (tests, benchmarks)."""
    subprocess.run(["ip", "link", "delete", bridge], capture_output=True, check=False)
    for family in ("ip", "ip6"):
        subprocess.run(
            ["nft", "delete", "table", family, masquerade_table(bridge)],
            capture_output=True,
            check=False,
        )


async def install_masquerade(settings: ContainerdSettings) -> bool:
    """Writes the pod CIDR's NAT table; False (and why, logged) where nft fails."""
    code, _, err = await _exec(("nft", "-f", "-"), stdin=masquerade_script(settings).encode())
    if code != 0:
        reason = err.decode(errors="replace").strip() or f"exit code {code}"
        log.warning("nft cannot set up pod NAT (%s): masquerading per pod instead", reason)
        return False
    return True


async def _output(*args: str) -> str:
    """What the command printed; "" when it is missing or failed."""
    code, out, _ = await _exec(args, capture=True)
    return out.decode(errors="replace") if code == 0 else ""


async def _run(*args: str) -> int:
    return (await _exec(args))[0]


async def _exec(
    args: tuple[str, ...], *, capture: bool = False, stdin: bytes | None = None
) -> tuple[int, bytes, bytes]:
    """The command's exit code (127: not found), its output when captured,
    and its errors."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *args,
            stdin=asyncio.subprocess.DEVNULL if stdin is None else asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE if capture else asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env=_process_env(),
        )
    except FileNotFoundError:
        return 127, b"", f"{args[0]}: not found".encode()
    out, err = await proc.communicate(stdin)
    return proc.returncode or 0, out or b"", err or b""


def _process_env() -> dict[str, str]:
    env = dict(os.environ)
    parts = [p for p in env.get("PATH", "").split(":") if p]
    env["PATH"] = ":".join(parts + [p for p in SYSTEM_PATH.split(":") if p not in parts])
    return env


# --- the process ---


class Containerd:
    """A containerd Nodeless manages (``Containerd(settings)``) or a CRI runtime
    that is already running (``Containerd.external(address)``).

    ``start`` returns once the CRI answers ready and the sandbox image is
    present; ``client`` is then a ``CriClient`` on its socket.
    """

    def __init__(self, settings: ContainerdSettings) -> None:
        self.settings: ContainerdSettings | None = settings
        self.address = str(settings.socket)
        self.sandbox_image = settings.sandbox_image
        self.client = clients.CriClient(self.address)
        self._process: asyncio.subprocess.Process | None = None
        self._pid: int | None = None  # ours or adopted
        self._reaper: asyncio.Task[None] | None = None
        self._orphans = shims.Orphans()

    @classmethod
    def external(
        cls, address: str, *, sandbox_image: str = sandboximages.PAUSE_IMAGE
    ) -> Containerd:
        """A CRI runtime Nodeless neither configures, starts nor stops; only its
        socket is used (and ``sandbox_image`` imported, should it be missing)."""
        self = cls.__new__(cls)
        self.settings = None
        self.address = address.removeprefix("unix://")
        self.sandbox_image = sandbox_image
        self.client = clients.CriClient(self.address)
        self._process = None
        self._pid = None
        self._reaper = None
        return self

    @property
    def managed(self) -> bool:
        return self.settings is not None

    @property
    def pid(self) -> int | None:
        """The managed containerd's process ID while it runs."""
        return self._pid

    @property
    def snapshotter(self) -> str:
        """The snapshotter images are unpacked with ("" for the runtime's default)."""
        return self.settings.snapshotter if self.settings is not None else ""

    async def start(self, timeout: float = 60.0) -> None:
        """Configures and starts containerd (or adopts the one already serving
        this data directory), waits until it is ready and imports the pause
        image. Raises ``ContainerdError`` with the reason and the log's tail."""
        if self.settings is not None:
            await self._start_managed(self.settings, timeout)
        else:
            await self._wait_ready(timeout)
        await self.ensure_image(sandboximages.PAUSE.with_ref(self.sandbox_image))

    async def _start_managed(self, settings: ContainerdSettings, timeout: float) -> None:
        if len(str(settings.socket)) > MAX_SOCKET_PATH:
            raise ContainerdError(
                f"socket path {settings.socket} is longer than {MAX_SOCKET_PATH} bytes: "
                "use a shorter data directory"
            )
        if os.geteuid() != 0:
            raise ContainerdError("containerd needs root (or use an external CRI socket)")
        if missing := missing_binaries(settings):
            raise ContainerdError(
                "missing " + ", ".join(missing) + ": run scripts/install-system-packages.sh"
            )
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        if not settings.cdi_spec_dirs and gpudevices.cdi_supported(
            "containerd", await binary_version()
        ):
            settings = dataclasses.replace(
                settings, cdi_spec_dirs=tuple(str(d) for d in gpudevices.CDI_SPEC_DIRS)
            )
            self.settings = settings
        if settings.snapshotter == SNAPSHOTTER_OVERLAY and not await overlay_supported(
            settings.data_dir
        ):
            log.warning(
                "overlay mounts fail under %s: using the native snapshotter", settings.data_dir
            )
            settings = dataclasses.replace(settings, snapshotter=SNAPSHOTTER_NATIVE)
            self.settings = settings
        if not settings.per_pod_masquerade and not await install_masquerade(settings):
            settings = dataclasses.replace(settings, per_pod_masquerade=True)
            self.settings = settings
        write_files(settings)

        adopted = await self._answers()
        if adopted:
            self._pid = _read_pid(settings)
            log.info("adopting containerd already serving %s (pid %s)", self.address, self._pid)
        else:
            await self._spawn(settings)
        try:
            await self._wait_ready(timeout)
        except BaseException:
            await self.stop()
            raise
        if not adopted:
            # a containerd that kept running may still be setting a sandbox
            # up for a client that died: its lease is not a leftover yet
            await self.sweep_network_leftovers()
        await self.stop_leaked_shims()
        self._reaper = asyncio.create_task(self._reap_shims(), name="containerd-shim-reaper")

    async def stop_leaked_shims(self) -> shims.Reaped:
        """Stops this containerd's shims that outlived their pods (see ``shims``)."""
        if self.settings is None:
            return shims.Reaped([], [])
        return await asyncio.to_thread(shims.stop_leaked, self.settings.state, self.address)

    async def stop_orphaned_shims(self) -> list[shims.Shim]:
        """Stops this containerd's shims that two looks in a row (this one and
        the last) found orphaned: childless, of no sandbox or container the
        runtime lists (see ``shims``). Returns the ones stopped."""
        if self.settings is None:
            return []
        # Listed before /proc is read: a pod made in between is only a suspect.
        known = {s.id for s in await self.client.list_pod_sandbox()}
        known.update(c.id for c in await self.client.list_containers())
        found = await asyncio.to_thread(shims.orphaned, self.address, known)
        sure = self._orphans.confirmed(found)
        return await asyncio.to_thread(shims.stop_orphaned, sure) if sure else []

    async def _reap_shims(self) -> None:
        while True:
            await asyncio.sleep(SHIM_REAP_INTERVAL)
            try:
                await self.stop_leaked_shims()
                await self.stop_orphaned_shims()
            except Exception:
                log.exception("looking for leaked shims failed")

    async def sweep_network_leftovers(self) -> None:
        """Releases what the CNI plugins still hold for sandboxes this
        containerd no longer has: host-local's IP leases and the bridge
        plugin's masquerade chain per pod. A containerd killed with pods on
        it, and whose data directory was then cleaned, never ran their CNI
        DEL; left alone, the leases fill the pod CIDR and every rule makes
        each later CNI call slower. Only this network's rules for addresses
        in this pod CIDR are touched (other data directories have their own)."""
        assert self.settings is not None
        settings = self.settings
        live = {sandbox.id for sandbox in await self.client.list_pod_sandbox()}
        leases = settings.ipam_dir / settings.network_name
        released = await asyncio.to_thread(_release_leases, leases, live)
        dump = await _output("iptables-save", "-t", "nat")
        stale = stale_masquerade(dump, settings, live)
        for jump in stale.jumps:
            await _run("iptables", "-t", "nat", "-D", *jump)
        removed = 0
        for chain in sorted(stale.chains):
            await _run("iptables", "-t", "nat", "-F", chain)
            if await _run("iptables", "-t", "nat", "-X", chain) == 0:
                removed += 1
        if released or removed:
            log.info(
                "released %d IP lease(s) and %d masquerade chain(s) of sandboxes that are gone",
                released,
                removed,
            )

    async def _answers(self) -> bool:
        if not Path(self.address).exists():
            return False
        try:
            await self.client.version(timeout=2.0)
        except clients.CriError:
            return False
        return True

    async def _spawn(self, settings: ContainerdSettings) -> None:
        with contextlib.suppress(FileNotFoundError):
            settings.socket.unlink()  # stale, from a containerd that died
        env = _process_env()
        binary = shutil.which("containerd", path=env["PATH"]) or "containerd"
        with settings.log_file.open("ab") as out:
            self._process = await asyncio.create_subprocess_exec(
                binary,
                "--config",
                str(settings.config_file),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                env=env,
                start_new_session=True,
            )
        self._pid = self._process.pid
        settings.pid_file.write_text(f"{self._pid}\n")
        log.info("started containerd (pid %s) on %s", self._pid, self.address)

    async def _wait_ready(self, timeout: float) -> None:
        ready = asyncio.ensure_future(self.client.wait_ready(timeout))
        died = asyncio.ensure_future(
            self._process.wait() if self._process is not None else asyncio.Event().wait()
        )
        try:
            done, _ = await asyncio.wait({ready, died}, return_when=asyncio.FIRST_COMPLETED)
            if ready in done:
                ready.result()
                return
            raise ContainerdError(
                f"containerd exited with {died.result()} while starting\n{self.log_tail()}"
            )
        except clients.CriError as e:
            # Serving, but without a CRI: its plugin failed to load.
            raise ContainerdError(
                f"{self.address} has no working CRI plugin ({e})\n{self.log_tail()}"
            ) from None
        except TimeoutError as e:
            raise ContainerdError(f"{e}\n{self.log_tail()}") from None
        finally:
            for task in (ready, died):
                task.cancel()
            await asyncio.gather(ready, died, return_exceptions=True)

    async def ensure_image(self, image: sandboximages.BusyboxImage) -> None:
        """Builds and imports ``image`` unless the runtime already has it."""
        if await self.client.image_status(image.ref) is not None:
            return
        await sandboximages.build_and_import(image, self.address, snapshotter=self.snapshotter)
        if await self.client.image_status(image.ref) is None:
            raise ContainerdError(f"{image.ref} was imported but the CRI does not see it")

    async def remove_all_pods(self, grace_period: int = 0) -> None:
        """Stops and removes every sandbox (and so every container) of the
        CRI, and the pod cgroup each sandbox was put in: runc removes only
        the containers' own, and the provider that made it is not there to
        (left, they piled up on the host run after run: 360 found once).
        ``REMOVALS_AT_ONCE`` pods at a time: one after the other, starting
        a containerd, 200 pods and removing them took 37 s here, 18 s this
        way. The first failure is raised once all are tried."""
        slots = asyncio.Semaphore(REMOVALS_AT_ONCE)

        async def remove(sandbox_id: str) -> None:
            async with slots:
                await self._remove_pod(sandbox_id, grace_period)

        sandboxes = await self.client.list_pod_sandbox()
        results = await asyncio.gather(*(remove(s.id) for s in sandboxes), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def _remove_pod(self, sandbox_id: str, grace_period: int) -> None:
        parent = await self._pod_cgroup(sandbox_id)
        for container in await self.client.list_containers(pod_sandbox_id=sandbox_id):
            with contextlib.suppress(clients.CriError):
                await self.client.stop_container(container.id, grace_period)
        await self.client.stop_and_remove_pod_sandbox(sandbox_id)
        if parent and (busy := await asyncio.to_thread(parent.remove, attempts=20)):
            log.warning("pod cgroup still busy after its sandbox: %s", busy)

    async def _pod_cgroup(self, sandbox_id: str) -> cgroups.PodCgroup | None:
        """The pod-level cgroup (``.../pod<uid>``) the sandbox was given, from
        the config in its verbose status; None for none or a shared parent."""
        try:
            reply = await self.client.pod_sandbox_status(sandbox_id, verbose=True)
            info = json.loads(reply.info.get("info") or "{}")
        except (clients.CriError, ValueError):
            return None
        config = info.get("config") if isinstance(info, dict) else None
        parent = str(((config or {}).get("linux") or {}).get("cgroup_parent") or "")
        return cgroups.PodCgroup(parent) if Path(parent).name.startswith("pod") else None

    async def stop(self, *, remove_pods: bool = False, grace: float = 10.0) -> None:
        """Stops a managed containerd: SIGTERM, then SIGKILL after ``grace``
        seconds. Pods keep running in their shims unless ``remove_pods``, and
        are found again by the next containerd on this data directory. An
        external runtime is only disconnected from."""
        if self._reaper is not None:
            self._reaper.cancel()
            await asyncio.gather(self._reaper, return_exceptions=True)
            self._reaper = None
        try:
            if remove_pods:
                try:
                    await self.remove_all_pods()
                except clients.CriError as e:
                    if not e.unavailable:
                        raise
                    log.warning("containerd at %s is gone: pods not removed", self.address)
                await self._reap_after_removal()
            else:
                await self.stop_leaked_shims()
                await self._stop_orphans_at_stop()
        finally:
            await self.client.close()
            await self._terminate(grace)

    async def _stop_orphans_at_stop(self) -> None:
        """Two looks for orphaned shims, ``SHIM_SECOND_LOOK`` apart, rather
        than the reaper's minute: a large teardown's orphans (16 of 500 pods
        once here) show only as it ends, often seconds before a stop, and
        the stopped Nodeless would leave them idling until its next start.
        Whoever stops the runtime has stopped creating pods first, so a
        childless shim of no listed pod is not one being set up for long."""
        if self.settings is None:
            return
        try:
            # a runtime that hangs must not hold up the stop
            async with asyncio.timeout(SHIM_SECOND_LOOK + SHIM_LOOK_TIMEOUT):
                await self.stop_orphaned_shims()
                if self._orphans.suspected:
                    await asyncio.sleep(SHIM_SECOND_LOOK)
                    await self.stop_orphaned_shims()
        except (clients.CriError, TimeoutError) as e:
            log.warning("looking for orphaned shims at stop: %r", e)

    async def _reap_after_removal(self, timeout: float = SHIM_EXIT_TIMEOUT) -> None:
        """Waits for the removed pods' shims to exit, stopping those that
        leaked: a leak shows only once containerd has deleted the bundle,
        which can be a moment after the removal call returned."""
        deadline = time.monotonic() + timeout
        while True:
            reaped = await self.stop_leaked_shims()
            if not reaped.stopped and not reaped.running:
                return
            if time.monotonic() >= deadline:
                # Every pod is gone: a shim with no process of a pod left has
                # nothing to supervise, even if containerd has not got as far
                # as deleting its bundle (a task deletion that timed out).
                last = await asyncio.to_thread(shims.stop_childless, self.address)
                if last.stopped:
                    log.warning(
                        "stopped %d shim(s) of %s with no pod process left after removing its pods",
                        len(last.stopped),
                        self.address,
                    )
                if last.running:
                    log.warning(
                        "%d shim(s) of %s still running after removing its pods",
                        len(last.running),
                        self.address,
                    )
                return
            await asyncio.sleep(0.5)

    async def _terminate(self, grace: float) -> None:
        pid = self._pid
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        if not await self._wait_exit(pid, grace):
            log.warning("containerd (pid %s) ignored SIGTERM for %ss: killing it", pid, grace)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            await self._wait_exit(pid, None)
        self._pid = None
        self._process = None
        if self.settings is not None:
            with contextlib.suppress(FileNotFoundError):
                self.settings.pid_file.unlink()

    async def _wait_exit(self, pid: int, timeout: float | None) -> bool:
        if self._process is not None:
            try:
                async with asyncio.timeout(timeout):
                    await self._process.wait()
            except TimeoutError:
                return False
            return True
        # Adopted: not our child, so poll.
        deadline = None if timeout is None else time.monotonic() + timeout
        while _alive(pid):
            if deadline is not None and time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    def log_tail(self, lines: int = 10) -> str:
        """For error messages: the last warnings and errors of the managed
        containerd's log (where a failed plugin says why), else its last lines."""
        if self.settings is None:
            return ""
        try:
            text = self.settings.log_file.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return ""
        problems = [
            line
            for line in text
            if any(f"level={lvl}" in line for lvl in ("warning", "error", "fatal", "panic"))
        ]
        return "\n".join((problems or text)[-lines:])


def _read_pid(settings: ContainerdSettings) -> int | None:
    """The pid in the pid file if it is a containerd running our config."""
    try:
        pid = int(settings.pid_file.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (FileNotFoundError, ValueError):
        return None
    if os.fsencode(str(settings.config_file)) in cmdline:
        return pid
    return None


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"
