"""Service virtual IPs on this host: kube-proxy's nftables mode, rendered
from Services and EndpointSlices.

One table of our own (``ip nodeless_<bridge>``) holds everything, so it
never touches anyone else's rules and goes away in one command:

- ``services``: a verdict map from (ClusterIP or externalIP, protocol, port)
  to the Service port's chain, consulted in the ``prerouting`` (pods) and
  ``output`` (the host) NAT hooks;
- one ``svc-…`` chain per Service port: ClientIP affinity look-ups first,
  then ``numgen random`` spreading new connections over the ready endpoints;
- one ``sep-…`` chain per endpoint: marks hairpin traffic (a pod reaching
  itself through its Service) for masquerade, records affinity, and DNATs;
- ``no-endpoints``: Service ports with no ready endpoint are rejected at
  once (ICMP port unreachable, as kube-proxy), not left to time out.

Updates are incremental: only the chains, sets and map elements of Services
that changed are rewritten, in one atomic ``nft -f`` transaction per sync; a
full rewrite (delete and recreate the table, also atomic) happens at start
and after a failed update. Endpoints are the ready ones; when none is ready,
serving terminating ones are used, as upstream does during a rollout's end.

UDP has no connection to end, so conntrack would keep sending a client's
datagrams to an endpoint that is gone (or keep rejecting them after the
Service gained one) for as long as the client keeps talking. As kube-proxy
does, after an update the conntrack entries of UDP Service ports are
deleted for every endpoint that left, and all of them for a port that had
no endpoint before (``conntrack -D``; without the tool, a warning).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import ipaddress
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from nodeless.networking import servicemaps

log = logging.getLogger(__name__)

MASQUERADE_MARK = 0x4000
MAX_AFFINITY_SECONDS = 86400  # upstream's validation limit
# Changes arriving together are applied together.
MIN_SYNC_INTERVAL = 0.05
RETRY_INTERVAL = 2.0
PROTOCOLS = {"TCP": "tcp", "UDP": "udp", "SCTP": "sctp"}
BRIDGE_NETFILTER = Path("/proc/sys/net/bridge/bridge-nf-call-iptables")

Runner = Callable[[str], Awaitable[None]]
# Deletes conntrack entries: the arguments after ``conntrack -D``.
ConntrackDeleter = Callable[[list[str]], Awaitable[None]]


class NftError(Exception):
    """``nft`` refused a transaction; says what it printed."""


async def delete_conntrack(arguments: list[str]) -> None:
    """``conntrack -D <arguments>``; finding nothing to delete is fine."""
    try:
        process = await asyncio.create_subprocess_exec(
            "conntrack",
            "-D",
            *arguments,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
    except FileNotFoundError:
        log.warning("conntrack is not installed: stale UDP flows to Services are not cleared")
        return
    _, err = await process.communicate()
    # Exit status 1: "0 flow entries have been deleted".
    if process.returncode not in (0, 1):
        log.warning(
            "conntrack -D %s: %s", " ".join(arguments), err.decode(errors="replace").strip()
        )


def conntrack_deletions(old: Ruleset, new: Ruleset) -> list[list[str]]:
    """What to delete after ``old`` became ``new`` (kube-proxy's rules):
    flows to endpoints a UDP Service port lost, and every flow of a port that
    had no endpoint (they were rejected, or sent nowhere)."""
    out: list[list[str]] = []
    for key in sorted(set(old.udp) | set(new.udp)):
        ip, _, port = _udp_key(key)
        before = old.udp.get(key)
        after = new.udp.get(key, frozenset())
        flow = ["-p", "udp", "--orig-dst", ip, "--orig-port-dst", port]
        if after and not before:
            out.append(flow)
            continue
        for endpoint in sorted((before or frozenset()) - after):
            out.append([*flow, "--dst-nat", endpoint])
    return out


def _udp_key(key: str) -> tuple[str, str, str]:
    """A map key ``ip . proto . port`` in its parts."""
    ip, proto, port = (part.strip() for part in key.split(" . "))
    return ip, proto, port


async def run_nft(script: str) -> None:
    """Apply one nft transaction (``nft -f -``: all or nothing)."""
    process = await asyncio.create_subprocess_exec(
        "nft",
        "-f",
        "-",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await process.communicate(script.encode())
    if process.returncode != 0:
        raise NftError(err.decode(errors="replace").strip() or f"nft exited {process.returncode}")


def table_name(bridge: str) -> str:
    """Our table's name, one per pod bridge (several clusters may share a host)."""
    return "nodeless_" + "".join(c if c.isalnum() else "_" for c in bridge)


def _chain_id(prefix: str, text: str) -> str:
    digest = hashlib.sha256(text.encode()).digest()
    return f"{prefix}-{base64.b32encode(digest).decode()[:13].lower()}"


@dataclass
class Ruleset:
    """What the table holds for some Services: chains (with their rules),
    affinity sets (with their timeouts) and map elements."""

    chains: dict[str, tuple[str, ...]] = field(default_factory=dict)
    sets: dict[str, int] = field(default_factory=dict)
    services: dict[str, str] = field(default_factory=dict)
    no_endpoints: dict[str, str] = field(default_factory=dict)
    # UDP map keys and the endpoint IPs behind them (for conntrack clean-up).
    udp: dict[str, frozenset[str]] = field(default_factory=dict)

    def update(self, other: Ruleset) -> None:
        self.chains.update(other.chains)
        self.sets.update(other.sets)
        self.services.update(other.services)
        self.no_endpoints.update(other.no_endpoints)
        self.udp.update(other.udp)


def usable_endpoints(endpoints: list[servicemaps.Endpoint]) -> list[servicemaps.Endpoint]:
    ready = [e for e in endpoints if e.ready]
    if ready:
        return ready
    return [e for e in endpoints if e.serving and e.terminating]


def service_ruleset(
    service: servicemaps.Service,
    endpoints: Callable[[servicemaps.ServicePort], list[servicemaps.Endpoint]],
    *,
    pod_cidr: str,
    masquerade_all: bool = False,
    external_ips: Iterable[str] = (),
) -> Ruleset:
    """The chains, sets and map elements one Service needs."""
    out = Ruleset()
    if service.headless or service.type == "ExternalName":
        return out
    addresses = [
        str(ipaddress.IPv4Address(ip)) for ip in (*service.cluster_ips, *external_ips) if _ipv4(ip)
    ]
    if not addresses:
        return out
    mark = f"meta mark set meta mark | {MASQUERADE_MARK:#x}"
    for port in service.ports:
        proto = PROTOCOLS.get(port.protocol)
        if proto is None or not 1 <= port.port <= 65535:
            continue
        where = f"{service.namespace}/{service.name}/{proto}/{port.name}"
        keys = [f"{ip} . {proto} . {port.port}" for ip in addresses]
        chosen = usable_endpoints(endpoints(port))
        if proto == "udp":
            for key in keys:
                out.udp[key] = frozenset(e.ip for e in chosen)
        if not chosen:
            for key in keys:
                out.no_endpoints[key] = "goto reject-no-endpoints"
            continue
        svc_chain = _chain_id("svc", where)
        svc_rules: list[str] = []
        if masquerade_all:
            svc_rules.append(mark)
        else:
            # Traffic from outside the pod network (the host itself) is
            # masqueraded so that replies come back through this host.
            svc_rules.append(f"ip saddr != {pod_cidr} {mark}")
        sep_chains = []
        for endpoint in chosen:
            sep_chain = _chain_id("sep", f"{where}/{endpoint.ip}:{endpoint.port}")
            sep_chains.append(sep_chain)
            sep_rules = [f"ip saddr {endpoint.ip} {mark}"]
            if 0 < service.affinity_seconds <= MAX_AFFINITY_SECONDS:
                # The timeout is part of the name: a set's timeout cannot
                # change in place, so a new one replaces it.
                affinity = _chain_id("aff", f"{sep_chain}/{service.affinity_seconds}")
                out.sets[affinity] = service.affinity_seconds
                svc_rules.append(f"ip saddr @{affinity} goto {sep_chain}")
                sep_rules.append(f"update @{affinity} {{ ip saddr }}")
            sep_rules.append(f"meta l4proto {proto} dnat to {endpoint.ip}:{endpoint.port}")
            out.chains[sep_chain] = tuple(sep_rules)
        spread = ", ".join(f"{i} : goto {chain}" for i, chain in enumerate(sep_chains))
        svc_rules.append(f"numgen random mod {len(sep_chains)} vmap {{ {spread} }}")
        out.chains[svc_chain] = tuple(svc_rules)
        for key in keys:
            out.services[key] = f"goto {svc_chain}"
    return out


def _ipv4(ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip).version == 4
    except ValueError:
        return False


def full_script(table: str, rules: Ruleset) -> str:
    """Replace the whole table atomically (the first two lines make the
    delete succeed whether or not the table exists)."""
    lines = [
        f"add table ip {table}",
        f"delete table ip {table}",
        f"add table ip {table}",
        f"add map ip {table} services {{ type ipv4_addr . inet_proto . inet_service : verdict ; }}",
        f"add map ip {table} no-endpoints {{ type ipv4_addr . inet_proto . inet_service : verdict ; }}",
        f"add chain ip {table} dispatch",
        f"add rule ip {table} dispatch ip daddr . meta l4proto . th dport vmap @services",
        f"add chain ip {table} prerouting {{ type nat hook prerouting priority -100 ; policy accept ; }}",
        f"add rule ip {table} prerouting jump dispatch",
        f"add chain ip {table} output {{ type nat hook output priority -100 ; policy accept ; }}",
        f"add rule ip {table} output jump dispatch",
        f"add chain ip {table} postrouting {{ type nat hook postrouting priority 100 ; policy accept ; }}",
        f"add rule ip {table} postrouting meta mark & {MASQUERADE_MARK:#x} == {MASQUERADE_MARK:#x} masquerade",
        f"add chain ip {table} reject-no-endpoints",
        f"add rule ip {table} reject-no-endpoints reject",
        f"add chain ip {table} check-endpoints",
        f"add rule ip {table} check-endpoints ip daddr . meta l4proto . th dport vmap @no-endpoints",
    ]
    # Before NAT (priority -110), while the destination is still the Service's.
    for hook in ("forward", "output"):
        lines += [
            f"add chain ip {table} filter-{hook} {{ type filter hook {hook} priority -110 ; policy accept ; }}",
            f"add rule ip {table} filter-{hook} ct state new jump check-endpoints",
        ]
    lines += _changes(table, Ruleset(), rules)
    return "\n".join(lines) + "\n"


def delta_script(table: str, old: Ruleset, new: Ruleset) -> str:
    """Only what changed from ``old`` to ``new``; empty when nothing did."""
    lines = _changes(table, old, new)
    return "\n".join(lines) + "\n" if lines else ""


def _changes(table: str, old: Ruleset, new: Ruleset) -> list[str]:
    lines: list[str] = []
    for name, timeout in new.sets.items():
        if name not in old.sets:
            lines.append(
                f"add set ip {table} {name} {{ type ipv4_addr ; flags dynamic,timeout ; timeout {timeout}s ; }}"
            )
    # Endpoint chains before the Service chains that jump to them.
    ordered = sorted(new.chains, key=lambda n: (not n.startswith("sep-"), n))
    for name in ordered:
        rules = new.chains[name]
        if name not in old.chains:
            lines.append(f"add chain ip {table} {name}")
        elif old.chains[name] == rules:
            continue
        else:
            lines.append(f"flush chain ip {table} {name}")
        lines += [f"add rule ip {table} {name} {rule}" for rule in rules]
    for map_name, before, after in (
        ("services", old.services, new.services),
        ("no-endpoints", old.no_endpoints, new.no_endpoints),
    ):
        for key, verdict in before.items():
            if after.get(key) != verdict:
                lines.append(f"delete element ip {table} {map_name} {{ {key} }}")
        for key, verdict in after.items():
            if before.get(key) != verdict:
                lines.append(f"add element ip {table} {map_name} {{ {key} : {verdict} }}")
    # Chains nothing refers to any more: Service chains first.
    gone = sorted(set(old.chains) - set(new.chains), key=lambda n: (n.startswith("sep-"), n))
    for name in gone:
        lines.append(f"flush chain ip {table} {name}")
    for name in gone:
        lines.append(f"delete chain ip {table} {name}")
    for name in old.sets:
        if name not in new.sets:
            lines.append(f"delete set ip {table} {name}")
    return lines


class ServiceProxy:
    """Keeps this host's nftables table in step with the ServiceMap."""

    def __init__(
        self,
        services: servicemaps.ServiceMap,
        *,
        bridge: str,
        pod_cidr: str,
        runner: Runner = run_nft,
        conntrack: ConntrackDeleter = delete_conntrack,
        masquerade_all: bool | None = None,
        min_sync_interval: float = MIN_SYNC_INTERVAL,
    ) -> None:
        self.services = services
        self.table = table_name(bridge)
        self.pod_cidr = str(ipaddress.ip_network(pod_cidr, strict=False))
        self.runner = runner
        self.conntrack = conntrack
        if masquerade_all is None:
            # Without br_netfilter, a reply between two pods on the bridge
            # skips conntrack and is never un-DNATed: masquerade everything.
            try:
                masquerade_all = BRIDGE_NETFILTER.read_text().strip() != "1"
            except OSError:
                masquerade_all = True
        self.masquerade_all = masquerade_all
        self.min_sync_interval = min_sync_interval
        self.applied: dict[servicemaps.Key, Ruleset] = {}
        # Which Service holds each map key (an externalIP:port two Services
        # claim goes to the first; the other's claim waits until it is free).
        self.owners: dict[str, servicemaps.Key] = {}
        self.syncs = 0
        self._dirty: set[servicemaps.Key] = set()
        self._full = True
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.synced = asyncio.Event()

    async def start(self) -> None:
        self.services.on_change(self._changed)
        self.services.start()
        await self.services.wait_synced()
        self._full = True
        self._wake.set()
        self._task = asyncio.create_task(self._run(), name="service-proxy")

    async def stop(self) -> None:
        """Stop following changes; the rules stay, as kube-proxy leaves them,
        so Services keep working while Nodeless restarts."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def remove(self) -> None:
        """Delete the table (clean-up when the pod network itself goes)."""
        with contextlib.suppress(NftError, OSError):
            await self.runner(f"add table ip {self.table}\ndelete table ip {self.table}\n")

    def _changed(self, key: servicemaps.Key) -> None:
        self._dirty.add(key)
        self._wake.set()

    def ruleset(self, key: servicemaps.Key) -> Ruleset:
        service = self.services.service(*key)
        if service is None:
            return Ruleset()
        obj = self.services.service_object(*key) or {}
        external = [str(ip) for ip in (obj.get("spec") or {}).get("externalIPs") or []]
        return service_ruleset(
            service,
            lambda port: self.services.endpoints(service.namespace, service.name, port),
            pod_cidr=self.pod_cidr,
            masquerade_all=self.masquerade_all,
            external_ips=external,
        )

    def _claimed(self, key: servicemaps.Key, rules: Ruleset) -> Ruleset:
        """``rules`` without the map keys another Service holds; records ours."""
        for mapping in (rules.services, rules.no_endpoints):
            for element in list(mapping):
                owner = self.owners.setdefault(element, key)
                if owner != key:
                    log.warning("%s/%s: %s is already %s/%s's; not routed", *key, element, *owner)
                    del mapping[element]
        return rules

    def _release(self, key: servicemaps.Key, rules: Ruleset) -> bool:
        """Give up the map keys ``key`` held but ``rules`` no longer has;
        whether any was freed (another Service may have wanted it)."""
        wanted = set(rules.services) | set(rules.no_endpoints)
        freed = [e for e, owner in self.owners.items() if owner == key and e not in wanted]
        for element in freed:
            del self.owners[element]
        return bool(freed)

    async def sync_once(self) -> None:
        """Apply what changed since the last sync (or everything)."""
        if self._full:
            self._dirty.clear()
            self.owners.clear()
            wanted = {
                key: self._claimed(key, self.ruleset(key)) for key in sorted(self.services.keys())
            }
            merged = Ruleset()
            for rules in wanted.values():
                merged.update(rules)
            await self.runner(full_script(self.table, merged))
            self.applied = {k: v for k, v in wanted.items() if v.chains or v.no_endpoints}
            self._full = False
        else:
            dirty, self._dirty = self._dirty, set()
            old, new = Ruleset(), Ruleset()
            changed = {}
            freed = False
            for key in sorted(dirty):
                before = self.applied.get(key, Ruleset())
                after = self._claimed(key, self.ruleset(key))
                freed = self._release(key, after) or freed
                old.update(before)
                new.update(after)
                changed[key] = after
            # A freed key may be wanted by another Service: look again next sync.
            if freed and (others := set(self.services.keys()) - dirty):
                self._dirty |= others
                self._wake.set()
            script = delta_script(self.table, old, new)
            if script:
                try:
                    await self.runner(script)
                except BaseException:
                    self._dirty |= dirty
                    raise
            for key, rules in changed.items():
                if rules.chains or rules.no_endpoints:
                    self.applied[key] = rules
                else:
                    self.applied.pop(key, None)
            # Only once the new rules are in: a flow deleted earlier could be
            # re-created through the old ones.
            for arguments in conntrack_deletions(old, new):
                await self.conntrack(arguments)
        self.syncs += 1
        self.synced.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(self.min_sync_interval)
            self._wake.clear()
            try:
                await self.sync_once()
            except Exception as err:  # the loop must outlive any one bad update
                log.warning("service rules update failed (rewriting the table next): %s", err)
                self._full = True
                await asyncio.sleep(RETRY_INTERVAL)
                self._wake.set()
