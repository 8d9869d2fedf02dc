"""Cluster DNS: the names the Kubernetes DNS specification promises pods
(https://github.com/kubernetes/dns/blob/master/docs/specification.md), answered
the way CoreDNS's kubernetes plugin answers them with the default Corefile
(``pods insecure``, ``fallthrough in-addr.arpa ip6.arpa``, ``forward . <host
resolvers>``), from the same ServiceMap the service proxy reads.

Records, all class IN with a 5 s TTL (CoreDNS's default) and authoritative:

- ``<svc>.<ns>.svc.<domain>``: A/AAAA of the ClusterIPs; for a headless
  Service, of every ready endpoint (every endpoint with
  ``publishNotReadyAddresses``), and NXDOMAIN while there is none, as CoreDNS;
  for an ExternalName Service a CNAME to ``externalName``.
- ``<hostname>.<svc>.<ns>.svc.<domain>``: a headless Service's endpoint by its
  hostname, or by its dashed IP when it has none (that is the name SRV targets
  and PTR records use for it). CoreDNS also names the endpoints of ClusterIP
  Services; the specification does not, and neither do we.
- ``_<port>._<proto>.<svc>.<ns>.svc.<domain>`` SRV for named ports: one record
  to the Service name for a ClusterIP Service, one per ready endpoint for a
  headless one, targets' addresses in the additional section, weights split
  from 100 as CoreDNS does. SRV on the plain Service name lists every port.
- ``a-b-c-d.<ns>.pod.<domain>``: A a.b.c.d, read from the name alone (``pods
  insecure``); no namespace check, since nothing here watches Namespaces.
- PTR for ClusterIPs (to the Service name) and for headless endpoints (to the
  endpoint name). Other reverse names are forwarded, as the default Corefile
  falls through to ``forward``: nodes and upstream hosts keep their reverse
  names that way.
- The zone apex answers SOA and NS (``ns.dns.<domain>``, whose address is the
  listen address when that is a specific one), ``dns-version.<domain>`` TXT
  the schema version, as the specification requires. ``<ns>.svc.<domain>``
  exists (NODATA) while the namespace has a Service.

A name that exists without the asked type is NODATA, a name under the domain
that does not exist NXDOMAIN, both with the SOA in authority so resolvers cache
the answer for 5 s. Names match case-insensitively and answers keep the case
of the question.

Every other name is forwarded to the host's resolvers, one at a time. The
query goes out as the client sent it except for a fresh random ID, on a fresh
socket, so an off-path forger has to guess both; the answer goes back with the
client's ID. A UDP client gets a truncated upstream answer as a TC reply (it
asks again over TCP, and then so do we); a TCP client's query is tried over UDP
first and over TCP when truncated. SERVFAIL and REFUSED from one upstream make
us try the next; silence from all of them is SERVFAIL.

An ExternalName target outside the domain is resolved through the upstreams
on the transport path and its records appended after the CNAME, as CoreDNS
does: stub resolvers (glibc, musl) do not ask again for a CNAME's target, so a
bare CNAME would leave pods without an address. ``answer()``, the pure part,
returns just the CNAME.

Over UDP an answer larger than 512 bytes, or than the query's EDNS payload
size, is cut and flagged TC. Over TCP queries on one connection are answered
in order; a connection idle for 10 s is closed (RFC 7766).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import secrets
import socket
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.CNAME
import dns.rdtypes.ANY.NS
import dns.rdtypes.ANY.PTR
import dns.rdtypes.ANY.SOA
import dns.rdtypes.ANY.TXT
import dns.rdtypes.IN.A
import dns.rdtypes.IN.AAAA
import dns.rdtypes.IN.SRV
import dns.reversename
import dns.rrset

from nodeless import clocks
from nodeless.networking import servicemaps

log = logging.getLogger(__name__)

TTL = 5
SCHEMA_VERSION = "1.1.0"
SOA_REFRESH = 7200
SOA_RETRY = 1800
SOA_EXPIRE = 86400
SOA_MINIMUM = 5
FORWARD_TIMEOUT = 2.0
TCP_IDLE_TIMEOUT = 10.0
# Queries waiting on upstreams at once; beyond this a query gets SERVFAIL
# straight away instead of another task and socket (a flood must not exhaust
# file descriptors).
MAX_PENDING = 1024
# CNAMEs followed inside the zone before giving up on an ExternalName loop.
MAX_CHAIN = 8
# The EDNS payload we advertise (the 2020 DNS flag day's size, safe from fragmentation).
OUR_PAYLOAD = 1232
UDP_DEFAULT_SIZE = 512
TCP_MAX_SIZE = 65535
IP_FREEBIND = getattr(socket, "IP_FREEBIND", 15)
PROTOCOLS = frozenset({"TCP", "UDP", "SCTP"})

IN = dns.rdataclass.IN
A = dns.rdatatype.A
AAAA = dns.rdatatype.AAAA
ANY = dns.rdatatype.ANY
CNAME = dns.rdatatype.CNAME
NS = dns.rdatatype.NS
PTR = dns.rdatatype.PTR
SOA = dns.rdatatype.SOA
SRV = dns.rdatatype.SRV
TXT = dns.rdatatype.TXT
REVERSE_ZONES = (dns.reversename.ipv4_reverse_domain, dns.reversename.ipv6_reverse_domain)

Rdata = dns.rdata.Rdata
Name = dns.name.Name
RRset = dns.rrset.RRset
Key = servicemaps.Key
Upstream = tuple[str, int]

# dnspython's rdata constructors carry no annotations: these typed handles keep
# strict mypy, and calling constructors skips the text parser (from_text costs
# twice as much per record, and a headless Service may have hundreds).
_a: Callable[[dns.rdataclass.RdataClass, dns.rdatatype.RdataType, str], Rdata] = dns.rdtypes.IN.A.A
_aaaa: Callable[[dns.rdataclass.RdataClass, dns.rdatatype.RdataType, str], Rdata] = (
    dns.rdtypes.IN.AAAA.AAAA
)
_cname: Callable[[dns.rdataclass.RdataClass, dns.rdatatype.RdataType, Name], Rdata] = (
    dns.rdtypes.ANY.CNAME.CNAME
)
_ns: Callable[[dns.rdataclass.RdataClass, dns.rdatatype.RdataType, Name], Rdata] = (
    dns.rdtypes.ANY.NS.NS
)
_ptr: Callable[[dns.rdataclass.RdataClass, dns.rdatatype.RdataType, Name], Rdata] = (
    dns.rdtypes.ANY.PTR.PTR
)
_srv: Callable[[dns.rdataclass.RdataClass, dns.rdatatype.RdataType, int, int, int, Name], Rdata] = (
    dns.rdtypes.IN.SRV.SRV
)
_soa: Callable[
    [dns.rdataclass.RdataClass, dns.rdatatype.RdataType, Name, Name, int, int, int, int, int],
    Rdata,
] = dns.rdtypes.ANY.SOA.SOA


def parse_upstream(text: str) -> Upstream:
    """``10.0.0.2``, ``10.0.0.2:5353``, ``fd00::2`` or ``[fd00::2]:5353`` as (ip, port).

    Upstreams are addresses, not host names: resolving a resolver's name would
    need a resolver."""
    text = text.strip()
    port = 53
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            port = int(rest.removeprefix(":"))
    elif text.count(":") == 1:
        host, _, number = text.partition(":")
        port = int(number)
    else:
        host = text
    ipaddress.ip_address(host)  # raises ValueError for anything but an address
    if not 0 < port < 65536:
        raise ValueError(f"upstream port out of range: {text}")
    return host, port


def nameservers(resolv_conf: str) -> list[str]:
    """The ``nameserver`` addresses of a resolv.conf text, in order: the host's
    resolvers, which are the natural upstreams for names outside the cluster."""
    found = []
    for line in resolv_conf.splitlines():
        fields = line.split("#", 1)[0].split(";", 1)[0].split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            address = fields[1].split("%", 1)[0]  # drop an IPv6 zone index
            with contextlib.suppress(ValueError):
                ipaddress.ip_address(address)
                found.append(address)
    return found


@dataclass
class _Node:
    """What one name of the zone holds for the asked type: answer records
    (none: NODATA), their glue for the additional section, or an alias."""

    answer: list[RRset] = field(default_factory=list)
    additional: list[RRset] = field(default_factory=list)
    cname: Name | None = None


@dataclass
class _Later:
    """A query whose answer needs the upstreams: the whole of it (``response``
    None), or the target of an ExternalName alias."""

    query: dns.message.Message
    wire: bytes
    response: dns.message.Message | None = None
    alias: Name | None = None


class ClusterDns:
    """The cluster's DNS server on UDP and TCP ``host``:``port``.

    ``answer()`` is the whole record logic with no I/O; ``handle()`` adds
    forwarding and wire handling; ``start()`` puts that on sockets. The
    ServiceMap is shared with the service proxy and is started by its owner.
    """

    def __init__(
        self,
        services: servicemaps.ServiceMap,
        domain: str = "cluster.local",
        upstreams: Sequence[str] = (),
        host: str = "127.0.0.1",
        port: int = 53,
        *,
        forward_timeout: float = FORWARD_TIMEOUT,
        clock: clocks.Clock | None = None,
    ) -> None:
        self.services = services
        self.origin = dns.name.from_text(domain)
        self.host = str(ipaddress.ip_address(host))
        self.port = port
        self.forward_timeout = forward_timeout
        self._configured_upstreams = [parse_upstream(u) for u in upstreams]
        self.upstreams = self._usable(self._configured_upstreams)
        self._clock = clock or clocks.SystemClock()
        self._serial = int(self._clock.now().timestamp())
        self._index = _Index(services, self._reverse_names)
        own = ipaddress.ip_address(self.host)
        self._own_ip = None if own.is_unspecified else self.host
        self._soa_names = (self._name("ns", "dns"), self._name("hostmaster"))
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._pending: set[asyncio.Task[None]] = set()
        self._connections: set[asyncio.Task[object]] = set()
        services.on_change(self._changed)

    # --- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Bind UDP and TCP on the same port (a free one when ``port`` is 0).

        The sockets are made here for IP_FREEBIND: the pod bridge's gateway
        address, where pods look for DNS, may not exist yet when this starts."""
        loop = asyncio.get_running_loop()
        udp_sock, tcp_sock = self._bind_pair()
        try:
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _UdpProtocol(self), sock=udp_sock
            )
            self._udp = transport
            self._tcp = await asyncio.start_server(self._serve_tcp, sock=tcp_sock)
        except BaseException:
            udp_sock.close()
            tcp_sock.close()
            await self.stop()
            raise
        self.upstreams = self._usable(self._configured_upstreams)
        log.info(
            "cluster DNS for %s on %s port %d, forwarding to %s",
            self.origin.to_text(omit_final_dot=True),
            self.host,
            self.port,
            ", ".join(f"{h}:{p}" for h, p in self.upstreams) or "nobody",
        )

    async def stop(self) -> None:
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        server, self._tcp = self._tcp, None
        if server is not None:
            server.close()
        tasks = [*self._pending, *self._connections]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if server is not None:
            await server.wait_closed()

    def _bind_pair(self) -> tuple[socket.socket, socket.socket]:
        """A UDP and a TCP socket on one port; with port 0, the kernel's pick
        for UDP may be taken for TCP, so a few picks are tried."""
        attempts = 16 if self.port == 0 else 1
        for attempt in range(attempts):
            udp = self._socket(socket.SOCK_DGRAM, self.port)
            port = int(udp.getsockname()[1])
            try:
                tcp = self._socket(socket.SOCK_STREAM, port)
            except OSError:
                udp.close()
                if attempt + 1 == attempts:
                    raise
                continue
            self.port = port
            return udp, tcp
        raise AssertionError("unreachable")

    def _socket(self, kind: socket.SocketKind, port: int) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, kind)
        try:
            # Only TCP reuses the address (a restart must not wait for TIME_WAIT);
            # on UDP, Linux would let a second server bind the same port without
            # an error and silently take every query from the first.
            if kind == socket.SOCK_STREAM:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if sys.platform.startswith("linux"):
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
            sock.bind((self.host, port))
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock

    def _usable(self, upstreams: Iterable[Upstream]) -> list[Upstream]:
        """The upstreams without ourselves: forwarding to our own address would
        bounce a query until every pending slot is taken. (With a wildcard
        listen address a host interface's own address still slips through.)"""
        own = ipaddress.ip_address(self.host)
        out = []
        for host, port in upstreams:
            ip = ipaddress.ip_address(host)
            if port == self.port and (
                ip == own or (own.is_unspecified and (ip.is_loopback or ip.is_unspecified))
            ):
                log.warning("cluster DNS: not forwarding to itself at %s:%d", host, port)
                continue
            out.append((host, port))
        return out

    # --- ServiceMap changes ----------------------------------------------------------

    def _changed(self, key: Key) -> None:
        self._index.changed(key)
        # The SOA serial follows the data's last change in Unix seconds, as CoreDNS's.
        self._serial = max(self._serial, int(self._clock.now().timestamp()))

    # --- answering -------------------------------------------------------------------

    def answer(self, query: dns.message.Message) -> dns.message.Message:
        """The reply to ``query`` from the cluster's records alone: no sockets,
        no upstreams. Names this server does not own get REFUSED here (the
        transport forwards them instead); an ExternalName alias leaving the
        domain is the bare CNAME."""
        response, _ = self._respond(query)
        return response if response is not None else self._error(query, dns.rcode.REFUSED)

    def _respond(
        self, query: dns.message.Message
    ) -> tuple[dns.message.Message | None, Name | None]:
        """Our reply and an alias target still to resolve upstream, or (None,
        None) when the whole query is for the upstreams."""
        if query.opcode() != dns.opcode.QUERY:
            return self._error(query, dns.rcode.NOTIMP), None
        if len(query.question) != 1:
            return self._error(query, dns.rcode.FORMERR), None
        if query.edns > 0:
            return self._error(query, dns.rcode.BADVERS), None
        question = query.question[0]
        name = question.name
        if name.is_subdomain(self.origin):
            if question.rdclass not in (IN, dns.rdataclass.ANY):
                return self._error(query, dns.rcode.REFUSED), None
            return self._zone_answer(query, question)
        if question.rdtype == PTR and any(name.is_subdomain(zone) for zone in REVERSE_ZONES):
            try:
                address = _canonical(dns.reversename.to_address(name))
            except (dns.exception.DNSException, ValueError):
                return None, None
            targets = self._index.ptr(address)
            if targets:
                response = self._reply(query)
                response.flags |= dns.flags.AA
                response.answer.append(
                    dns.rrset.from_rdata_list(name, TTL, [_ptr(IN, PTR, t) for t in targets])
                )
                return response, None
        return None, None

    def _zone_answer(
        self, query: dns.message.Message, question: RRset
    ) -> tuple[dns.message.Message, Name | None]:
        response = self._reply(query)
        response.flags |= dns.flags.AA
        rdtype = question.rdtype
        if rdtype in (dns.rdatatype.AXFR, dns.rdatatype.IXFR):
            response.set_rcode(dns.rcode.REFUSED)
            return response, None
        name = question.name
        for _ in range(MAX_CHAIN):
            node = self._lookup(name, rdtype)
            if node is None:
                response.set_rcode(dns.rcode.NXDOMAIN)
                response.authority.append(self._soa())
                return response, None
            if node.cname is not None:
                response.answer.append(
                    dns.rrset.from_rdata_list(name, TTL, [_cname(IN, CNAME, node.cname)])
                )
                if rdtype in (CNAME, ANY):
                    return response, None
                if not node.cname.is_subdomain(self.origin):
                    return response, node.cname
                name = node.cname
                continue
            if not node.answer:
                response.authority.append(self._soa())
            response.answer.extend(node.answer)
            response.additional.extend(node.additional)
            return response, None
        response.set_rcode(dns.rcode.SERVFAIL)  # ExternalName Services aliasing each other
        return response, None

    def _lookup(self, name: Name, rdtype: dns.rdatatype.RdataType) -> _Node | None:
        """The node at ``name`` (inside the domain), or None when there is no such name."""
        labels = [
            label.decode("ascii", "replace").lower()
            for label in name.relativize(self.origin).labels
        ]
        match labels:
            case []:
                return self._apex(rdtype)
            case ["dns-version"]:
                answer = []
                if _wants(rdtype, TXT):
                    txt = dns.rdtypes.ANY.TXT.TXT(IN, TXT, [SCHEMA_VERSION])
                    answer.append(dns.rrset.from_rdata_list(name, TTL, [txt]))
                return _Node(answer)
            case ["ns", "dns"]:
                return _Node(_addresses(name, [self._own_ip] if self._own_ip else [], rdtype))
            case ["dns"] | ["svc"] | ["pod"] | [_, "pod"]:
                return _Node()
            case [namespace, "svc"]:
                return _Node() if self._index.has_namespace(namespace) else None
            case [service, namespace, "svc"]:
                return self._service_node(name, namespace, service, rdtype)
            case [port, protocol, service, namespace, "svc"] if port[:1] == protocol[:1] == "_":
                return self._port_node(name, namespace, service, port[1:], protocol[1:], rdtype)
            case [label, service, namespace, "svc"]:
                return self._endpoint_node(name, namespace, service, label, rdtype)
            case [address, _, "pod"]:
                return _pod_node(name, address, rdtype)
        return None

    def _apex(self, rdtype: dns.rdatatype.RdataType) -> _Node:
        node = _Node()
        if _wants(rdtype, SOA):
            node.answer.append(self._soa())
        if _wants(rdtype, NS):
            server = self._soa_names[0]
            node.answer.append(dns.rrset.from_rdata_list(self.origin, TTL, [_ns(IN, NS, server)]))
            if self._own_ip:
                node.additional.extend(_addresses(server, [self._own_ip], ANY))
        return node

    def _service_node(
        self, name: Name, namespace: str, service: str, rdtype: dns.rdatatype.RdataType
    ) -> _Node | None:
        svc = self.services.service(namespace, service)
        if svc is None:
            return None
        if svc.type == "ExternalName":
            target = _alias_target(svc.external_name)
            return None if target is None else _Node(cname=target)
        if svc.headless:
            ready = self._ready(svc)
            if not ready:
                return None
            node = _Node(_addresses(name, [e.ip for e in ready], rdtype))
        else:
            node = _Node(_addresses(name, svc.cluster_ips, rdtype))
        if _wants(rdtype, SRV):
            _add_srv(node, name, self._srv_targets(svc, svc.ports))
        return node

    def _port_node(
        self,
        name: Name,
        namespace: str,
        service: str,
        port_name: str,
        protocol: str,
        rdtype: dns.rdatatype.RdataType,
    ) -> _Node | None:
        protocol = protocol.upper()
        svc = self.services.service(namespace, service)
        if not port_name or protocol not in PROTOCOLS or svc is None or svc.type == "ExternalName":
            return None
        ports = [p for p in svc.ports if p.name == port_name and p.protocol == protocol]
        targets = self._srv_targets(svc, ports)
        if not targets:
            return None
        node = _Node()
        if _wants(rdtype, SRV):
            _add_srv(node, name, targets)
        return node

    def _endpoint_node(
        self, name: Name, namespace: str, service: str, label: str, rdtype: dns.rdatatype.RdataType
    ) -> _Node | None:
        svc = self.services.service(namespace, service)
        if svc is None or svc.type == "ExternalName":
            return None
        if label.startswith("_"):
            # ``_tcp.<svc>``: only the parent of SRV names, which makes it exist.
            protocol = label[1:].upper()
            return _Node() if any(p.name and p.protocol == protocol for p in svc.ports) else None
        if not svc.headless:
            return None
        ips = [e.ip for e in self._ready(svc) if _endpoint_label(e) == label]
        return _Node(_addresses(name, ips, rdtype)) if ips else None

    def _srv_targets(
        self, svc: servicemaps.Service, ports: Iterable[servicemaps.ServicePort]
    ) -> list[tuple[int, Name, list[str]]]:
        """(port, target, target's addresses) for each SRV record: the Service
        name for a ClusterIP Service, each ready endpoint for a headless one."""
        found: dict[tuple[int, Name], list[str]] = {}
        if svc.headless:
            for port in ports:
                for endpoint in self.services.endpoints(svc.namespace, svc.name, port):
                    if endpoint.ready or svc.publish_not_ready:
                        target = self._name(
                            _endpoint_label(endpoint), svc.name, svc.namespace, "svc"
                        )
                        found.setdefault((endpoint.port, target), []).append(endpoint.ip)
        else:
            target = self._name(svc.name, svc.namespace, "svc")
            for port in ports:
                found.setdefault((port.port, target), list(svc.cluster_ips))
        return [(port, target, ips) for (port, target), ips in found.items()]

    def _ready(self, svc: servicemaps.Service) -> list[servicemaps.Endpoint]:
        return [
            e
            for e in self.services.addresses(svc.namespace, svc.name)
            if e.ready or svc.publish_not_ready
        ]

    def _reverse_names(self, svc: servicemaps.Service) -> list[tuple[str, Name, bool]]:
        """(address, name, is a ClusterIP) for the PTR index."""
        if svc.type == "ExternalName":
            return []
        if not svc.headless:
            name = self._name(svc.name, svc.namespace, "svc")
            return [(_canonical(ip), name, True) for ip in svc.cluster_ips]
        return [
            (
                _canonical(e.ip),
                self._name(_endpoint_label(e), svc.name, svc.namespace, "svc"),
                False,
            )
            for e in self._ready(svc)
        ]

    def _soa(self) -> RRset:
        mname, rname = self._soa_names
        record = _soa(
            IN, SOA, mname, rname, self._serial, SOA_REFRESH, SOA_RETRY, SOA_EXPIRE, SOA_MINIMUM
        )
        return dns.rrset.from_rdata_list(self.origin, TTL, [record])

    def _name(self, *labels: str) -> Name:
        return Name([*(label.encode() for label in labels), *self.origin.labels])

    @staticmethod
    def _reply(query: dns.message.Message) -> dns.message.Message:
        # RA: names outside the cluster are resolved for the client (forwarded).
        return dns.message.make_response(query, recursion_available=True, our_payload=OUR_PAYLOAD)

    def _error(self, query: dns.message.Message, rcode: dns.rcode.Rcode) -> dns.message.Message:
        response = self._reply(query)
        response.set_rcode(rcode)
        return response

    # --- the wire --------------------------------------------------------------------

    async def handle(self, wire: bytes, *, tcp: bool = False) -> bytes | None:
        """The reply to one query in wire format, as the transport sends it
        (truncated to the client's UDP size unless ``tcp``); None to drop it."""
        now = self._handle_now(wire, tcp=tcp)
        if isinstance(now, _Later):
            return await self._handle_later(now, tcp=tcp)
        return now

    def _handle_now(self, wire: bytes, *, tcp: bool) -> bytes | _Later | None:
        """What can be answered without waiting (the cluster's own names and
        every error), so that UDP needs no task for them."""
        parsed = _parse(wire)
        if not isinstance(parsed, dns.message.Message):
            return parsed
        try:
            response, alias = self._respond(parsed)
        except Exception:  # one bad object must not take the server down
            log.exception("cluster DNS failed to answer %s", parsed.question)
            return self._render(parsed, self._error(parsed, dns.rcode.SERVFAIL), tcp=tcp)
        if response is None or alias is not None:
            return _Later(parsed, wire, response, alias)
        return self._render(parsed, response, tcp=tcp)

    async def _handle_later(self, later: _Later, *, tcp: bool) -> bytes:
        query = later.query
        if later.response is None:
            forwarded = await self._forward(query, later.wire, tcp=tcp)
            if forwarded is not None:
                return forwarded
            return self._render(query, self._error(query, dns.rcode.SERVFAIL), tcp=tcp)
        if later.alias is not None:
            await self._resolve_alias(later.response, later.alias, query.question[0].rdtype)
        return self._render(query, later.response, tcp=tcp)

    def _render(
        self, query: dns.message.Message, response: dns.message.Message, *, tcp: bool
    ) -> bytes:
        limit = TCP_MAX_SIZE if tcp else _udp_limit(query)
        return response.to_wire(max_size=limit, prefer_truncation=True)

    # --- UDP and TCP -----------------------------------------------------------------

    def _udp_received(self, wire: bytes, addr: tuple[str, int]) -> None:
        now = self._handle_now(wire, tcp=False)
        if isinstance(now, _Later):
            if len(self._pending) >= MAX_PENDING:
                query = now.query
                now = self._render(query, self._error(query, dns.rcode.SERVFAIL), tcp=False)
            else:
                task = asyncio.get_running_loop().create_task(self._udp_later(now, addr))
                self._pending.add(task)
                task.add_done_callback(self._pending.discard)
                return
        if now is not None and self._udp is not None:
            self._udp.sendto(now, addr)

    async def _udp_later(self, later: _Later, addr: tuple[str, int]) -> None:
        try:
            reply = await self._handle_later(later, tcp=False)
        except Exception:
            log.exception("cluster DNS failed to answer %s", later.query.question)
            return
        if self._udp is not None:
            self._udp.sendto(reply, addr)

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            while True:
                async with asyncio.timeout(TCP_IDLE_TIMEOUT):
                    size = int.from_bytes(await reader.readexactly(2), "big")
                    wire = await reader.readexactly(size)
                reply = await self.handle(wire, tcp=True)
                if reply is None:
                    break  # not DNS: the stream cannot be trusted to be framed either
                writer.write(len(reply).to_bytes(2, "big") + reply)
                await writer.drain()
        except (TimeoutError, EOFError, ConnectionError):
            pass
        except asyncio.CancelledError:
            # stop(): end normally, since Python 3.11's stream callback reads
            # the task's exception and would log the cancellation as an error.
            pass
        except Exception:
            log.exception("cluster DNS failed on a TCP connection")
        finally:
            self._connections.discard(task)
            writer.close()

    # --- forwarding ------------------------------------------------------------------

    async def _forward(self, query: dns.message.Message, wire: bytes, *, tcp: bool) -> bytes | None:
        """The upstreams' answer for the client, or None if none answered."""
        client_id = wire[:2]
        fallback: bytes | None = None
        for upstream in self.upstreams:
            got = await self._ask(upstream, query, wire, follow_truncation=tcp)
            if got is None:
                continue
            raw, reply = got
            if reply is None:  # truncated for a UDP client: it asks again over TCP
                truncated = self._reply(query)
                truncated.flags |= dns.flags.TC
                return self._render(query, truncated, tcp=False)
            relayed = client_id + raw[2:]
            if not tcp and len(relayed) > _udp_limit(query):
                reply.id = query.id
                relayed = reply.to_wire(max_size=_udp_limit(query), prefer_truncation=True)
            if reply.rcode() in (dns.rcode.SERVFAIL, dns.rcode.REFUSED):
                fallback = fallback or relayed
                continue
            return relayed
        return fallback

    async def _resolve_alias(
        self, response: dns.message.Message, target: Name, rdtype: dns.rdatatype.RdataType
    ) -> None:
        """Append the upstreams' records for an ExternalName's target; without
        an answer the reply stays the bare CNAME."""
        query = dns.message.make_query(target, rdtype)
        wire = query.to_wire()
        for upstream in self.upstreams:
            got = await self._ask(upstream, query, wire, follow_truncation=True)
            if got is None or got[1] is None:
                continue
            reply = got[1]
            if reply.rcode() not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
                continue
            response.answer.extend(reply.answer)
            if reply.rcode() == dns.rcode.NXDOMAIN:
                response.set_rcode(dns.rcode.NXDOMAIN)
            if not reply.answer or reply.rcode() == dns.rcode.NXDOMAIN:
                response.authority.extend(reply.authority)
            return

    async def _ask(
        self,
        upstream: Upstream,
        query: dns.message.Message,
        wire: bytes,
        *,
        follow_truncation: bool,
    ) -> tuple[bytes, dns.message.Message | None] | None:
        """One upstream's raw answer (carrying our random ID) and the parsed
        answer, which is None for a truncated one not followed over TCP; None
        when the upstream failed or answered something else."""
        ident = secrets.token_bytes(2)
        out = ident + wire[2:]
        try:
            raw = await self._udp_exchange(upstream, out)
            if raw[2] & (dns.flags.TC >> 8):
                if not follow_truncation:
                    return raw, None
                raw = await self._tcp_exchange(upstream, out)
        except (OSError, EOFError, TimeoutError) as exc:
            log.debug("upstream %s:%d failed: %r", *upstream, exc)
            return None
        try:
            reply = dns.message.from_wire(raw)
        except Exception:  # whatever an upstream sends is data, not our bug
            log.debug("upstream %s:%d sent an unreadable answer", *upstream)
            return None
        if (
            reply.opcode() != dns.opcode.QUERY
            or not reply.flags & dns.flags.QR
            or reply.question != query.question
        ):
            log.debug("upstream %s:%d answered another question", *upstream)
            return None
        return raw, reply

    async def _udp_exchange(self, upstream: Upstream, wire: bytes) -> bytes:
        loop = asyncio.get_running_loop()
        replies: asyncio.Queue[bytes | Exception] = asyncio.Queue()
        family = socket.AF_INET6 if ":" in upstream[0] else socket.AF_INET
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Collector(replies), remote_addr=upstream, family=family
        )
        try:
            transport.sendto(wire)
            async with asyncio.timeout(self.forward_timeout):
                while True:
                    item = await replies.get()
                    if isinstance(item, Exception):
                        raise item
                    if len(item) >= 12 and item[:2] == wire[:2] and item[2] & 0x80:
                        return item
        finally:
            transport.close()

    async def _tcp_exchange(self, upstream: Upstream, wire: bytes) -> bytes:
        async with asyncio.timeout(self.forward_timeout):
            reader, writer = await asyncio.open_connection(*upstream)
            try:
                writer.write(len(wire).to_bytes(2, "big") + wire)
                await writer.drain()
                while True:
                    size = int.from_bytes(await reader.readexactly(2), "big")
                    raw = await reader.readexactly(size)
                    if len(raw) >= 12 and raw[:2] == wire[:2]:
                        return raw
            finally:
                writer.close()


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, server: ClusterDns) -> None:
        self.server = server

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            self.server._udp_received(data, addr)
        except Exception:  # an exception here would close the transport for everyone
            log.exception("cluster DNS failed on a datagram from %s", addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("cluster DNS socket error: %r", exc)


class _Collector(asyncio.DatagramProtocol):
    """An upstream's datagrams (and ICMP errors, for a quick move to the next one)."""

    def __init__(self, replies: asyncio.Queue[bytes | Exception]) -> None:
        self.replies = replies

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.replies.put_nowait(data)

    def error_received(self, exc: Exception) -> None:
        self.replies.put_nowait(exc)


class _Index:
    """PTR names and namespaces-with-Services, kept from the ServiceMap's change
    notes. A note only marks its Service; marked Services are re-read when a
    query needs the index, so endpoint churn costs one re-read per Service per
    query burst, and nothing while nobody asks."""

    def __init__(
        self,
        services: servicemaps.ServiceMap,
        names: Callable[[servicemaps.Service], list[tuple[str, Name, bool]]],
    ) -> None:
        self._services = services
        self._names = names
        self._stale: set[Key] | None = None  # None: not read at all yet
        self._by_ip: dict[str, dict[Key, list[tuple[Name, bool]]]] = {}
        self._ips_of: dict[Key, set[str]] = {}
        self._namespaces: dict[str, int] = {}
        self._known: set[Key] = set()

    def changed(self, key: Key) -> None:
        if self._stale is not None:
            self._stale.add(key)

    def ptr(self, address: str) -> list[Name]:
        """ClusterIP names win over endpoint names, as in CoreDNS."""
        self._refresh()
        entries = self._by_ip.get(address)
        if not entries:
            return []
        ordered = [entry for key in sorted(entries) for entry in entries[key]]
        services = [name for name, is_service in ordered if is_service]
        return services or [name for name, _ in ordered]

    def has_namespace(self, namespace: str) -> bool:
        self._refresh()
        return namespace in self._namespaces

    def _refresh(self) -> None:
        if self._stale is None:
            self._stale = set(self._services.keys())
        while self._stale:
            self._read(self._stale.pop())

    def _read(self, key: Key) -> None:
        for ip in self._ips_of.pop(key, ()):
            entries = self._by_ip[ip]
            del entries[key]
            if not entries:
                del self._by_ip[ip]
        namespace = key[0]
        if key in self._known:
            self._known.discard(key)
            self._namespaces[namespace] -= 1
            if not self._namespaces[namespace]:
                del self._namespaces[namespace]
        svc = self._services.service(*key)
        if svc is None:
            return
        self._known.add(key)
        self._namespaces[namespace] = self._namespaces.get(namespace, 0) + 1
        for ip, name, is_service in self._names(svc):
            self._by_ip.setdefault(ip, {}).setdefault(key, []).append((name, is_service))
            self._ips_of.setdefault(key, set()).add(ip)


# --- helpers of the record logic ------------------------------------------------------


def _parse(wire: bytes) -> dns.message.Message | bytes | None:
    """The query, or the error reply to send instead, or None to drop it: too
    short for a header, or a response (answering those could start a loop)."""
    if len(wire) < 12 or wire[2] & 0x80:
        return None
    try:
        return dns.message.from_wire(wire)
    except Exception:  # any parse failure of network input is the sender's FORMERR
        flags = int.from_bytes(wire[2:4], "big")
        opcode = (flags >> 11) & 0xF
        rcode = dns.rcode.NOTIMP if opcode != dns.opcode.QUERY else dns.rcode.FORMERR
        reply_flags = dns.flags.QR | (flags & (0xF << 11)) | (flags & dns.flags.RD) | rcode
        return wire[:2] + reply_flags.to_bytes(2, "big") + bytes(8)


def _udp_limit(query: dns.message.Message) -> int:
    if query.edns < 0:
        return UDP_DEFAULT_SIZE
    return min(max(UDP_DEFAULT_SIZE, query.payload), TCP_MAX_SIZE)


def _wants(asked: dns.rdatatype.RdataType, rdtype: dns.rdatatype.RdataType) -> bool:
    return asked == rdtype or asked == ANY


def _addresses(name: Name, ips: Iterable[str], rdtype: dns.rdatatype.RdataType) -> list[RRset]:
    """A and AAAA RRsets of ``ips`` at ``name``, those that ``rdtype`` asks for."""
    v4: list[str] = []
    v6: list[str] = []
    for ip in ips:
        (v6 if ":" in ip else v4).append(ip)
    out = []
    if v4 and _wants(rdtype, A):
        out.append(dns.rrset.from_rdata_list(name, TTL, [_a(IN, A, ip) for ip in v4]))
    if v6 and _wants(rdtype, AAAA):
        out.append(dns.rrset.from_rdata_list(name, TTL, [_aaaa(IN, AAAA, ip) for ip in v6]))
    return out


def _add_srv(node: _Node, name: Name, targets: list[tuple[int, Name, list[str]]]) -> None:
    """SRV records to ``targets`` with their addresses as glue; the weights
    split 100 between the records, as CoreDNS does (at least 1 each)."""
    if not targets:
        return
    weight = max(1, 100 // len(targets))
    records = [_srv(IN, SRV, 0, weight, port, target) for port, target, _ in targets]
    node.answer.append(dns.rrset.from_rdata_list(name, TTL, records))
    glue: dict[Name, list[str]] = {}
    for _, target, ips in targets:
        glue.setdefault(target, []).extend(ips)
    for target, ips in glue.items():
        node.additional.extend(_addresses(target, ips, ANY))


def _endpoint_label(endpoint: servicemaps.Endpoint) -> str:
    """An endpoint's name under its Service: its hostname, else its dashed IP."""
    return endpoint.hostname.lower() or endpoint.ip.replace(".", "-").replace(":", "-")


def _pod_node(name: Name, label: str, rdtype: dns.rdatatype.RdataType) -> _Node | None:
    """``1-2-3-4`` is 1.2.3.4 and ``fd00--1`` fd00::1, as CoreDNS reads pod names."""
    text = (
        label.replace("-", ".")
        if label.count("-") == 3 and "--" not in label
        else label.replace("-", ":")
    )
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    return _Node(_addresses(name, [str(address)], rdtype))


def _alias_target(external_name: str) -> Name | None:
    """The CNAME target of an ExternalName Service; an IP address or an
    unusable name gives no record, as in CoreDNS."""
    text = external_name.strip().rstrip(".")
    if not text:
        return None
    try:
        ipaddress.ip_address(text)
        return None
    except ValueError:
        pass
    try:
        return dns.name.from_text(text)
    except dns.exception.DNSException:
        return None


def _canonical(ip: str) -> str:
    """One spelling per address (IPv6 has many), so PTR lookups find it."""
    try:
        return str(ipaddress.ip_address(ip))
    except ValueError:
        return ip
