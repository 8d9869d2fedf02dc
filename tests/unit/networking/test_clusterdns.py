"""Cluster DNS: the Kubernetes DNS specification's records from Services and
EndpointSlices held by a real in-process API server (loopback client), read
through answer(); then the server on real sockets on 127.0.0.1 with dnspython
as the client and tiny fake upstream resolvers for forwarding."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import dns.asyncquery
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from nodeless.apiserver import app, loopback
from nodeless.client import clients, informers
from nodeless.networking import clusterdns, servicemaps
from nodeless.storage import memory

SERVICES = clients.ResourceRef("", "v1", "services", True, "Service")
SLICES = servicemaps.ENDPOINT_SLICES
NAMESPACES = clients.ResourceRef("", "v1", "namespaces", False, "Namespace")
ZONE = "cluster.local"


def service(name: str, spec: dict[str, Any], namespace: str = "default") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def endpoint_slice(
    service_name: str,
    endpoints: list[dict[str, Any]],
    ports: list[dict[str, Any]],
    namespace: str = "default",
) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{service_name}-1",
            "namespace": namespace,
            "labels": {servicemaps.SERVICE_NAME_LABEL: service_name},
        },
        "addressType": "IPv4",
        "ports": ports,
        "endpoints": endpoints,
    }


def endpoint(ip: str, hostname: str = "", ready: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {"addresses": [ip], "conditions": {"ready": ready}}
    if hostname:
        out["hostname"] = hostname
    return out


WEB = service(
    "web",
    {
        "clusterIP": "10.96.0.10",
        "ports": [
            {"name": "http", "port": 80, "targetPort": 8080},
            {"name": "metrics", "port": 9090},
        ],
    },
)
DB = service(
    "db",
    {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]},
)
DB_SLICE = endpoint_slice(
    "db",
    [
        endpoint("10.88.0.5", "db-0"),
        endpoint("10.88.0.6", "db-1"),
        endpoint("10.88.0.7", "db-2", ready=False),
        endpoint("10.88.0.8"),
    ],
    [{"name": "pg", "protocol": "TCP", "port": 5432}],
)
EARLY = service(
    "early",
    {"clusterIP": "None", "publishNotReadyAddresses": True, "ports": [{"port": 80}]},
)
EARLY_SLICE = endpoint_slice(
    "early",
    [endpoint("10.88.1.1", ready=False)],
    [{"name": "", "protocol": "TCP", "port": 80}],
)
EXT = service("ext", {"type": "ExternalName", "externalName": "example.org"})
ALIAS = service("alias", {"type": "ExternalName", "externalName": f"web.default.svc.{ZONE}"})
BIG = service("big", {"clusterIP": "None", "ports": [{"name": "http", "port": 80}]})
BIG_SLICE = endpoint_slice(
    "big",
    [endpoint(f"10.88.2.{i}") for i in range(1, 61)],
    [{"name": "http", "protocol": "TCP", "port": 80}],
)


@dataclass
class Cluster:
    client: clients.ApiClient
    services: servicemaps.ServiceMap

    def dns(self, **kwargs: Any) -> clusterdns.ClusterDns:
        return clusterdns.ClusterDns(self.services, **kwargs)

    async def until(self, check: Callable[[], bool]) -> None:
        for _ in range(500):
            if check():
                return
            await asyncio.sleep(0.01)
        raise AssertionError("the ServiceMap did not catch up")


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    server = app.ApiServer(memory.MemoryBackend(), port=0, tls=False)
    await server.start()
    client = loopback.LoopbackApiClient(server.api)
    for obj in (WEB, DB, EARLY, EXT, ALIAS, BIG):
        await client.create(SERVICES, obj)
    for obj in (DB_SLICE, EARLY_SLICE, BIG_SLICE):
        await client.create(SLICES, obj)
    factory = informers.InformerFactory(client)
    services = servicemaps.ServiceMap(factory)
    services.start()
    try:
        await services.wait_synced()
        yield Cluster(client, services)
    finally:
        services.stop()
        await factory.stop()
        await server.stop()


@pytest.fixture
def server(cluster: Cluster) -> clusterdns.ClusterDns:
    return cluster.dns()


def ask(
    server: clusterdns.ClusterDns, name: str, rdtype: str = "A", **kwargs: Any
) -> dns.message.Message:
    return server.answer(dns.message.make_query(name, rdtype, **kwargs))


def records(section: list[dns.rrset.RRset], rdtype: str = "A") -> list[str]:
    wanted = dns.rdatatype.from_text(rdtype)
    return sorted(rd.to_text() for rrset in section if rrset.rdtype == wanted for rd in rrset)


def assert_soa(response: dns.message.Message) -> None:
    (soa,) = response.authority
    assert soa.name == dns.name.from_text(ZONE)
    assert soa.rdtype == dns.rdatatype.SOA and soa.ttl == 5
    fields = soa[0].to_text().split()
    assert fields[:2] == [f"ns.dns.{ZONE}.", f"hostmaster.{ZONE}."]
    assert fields[3:] == ["7200", "1800", "86400", "5"]


# --- records ------------------------------------------------------------------------------


def test_a_cluster_ip_service_resolves_to_its_cluster_ip(server: clusterdns.ClusterDns) -> None:
    response = ask(server, f"web.default.svc.{ZONE}")
    assert response.rcode() == dns.rcode.NOERROR
    assert response.flags & dns.flags.AA and response.flags & dns.flags.RA
    (rrset,) = response.answer
    assert rrset.ttl == 5 and rrset.rdclass == dns.rdataclass.IN
    assert records(response.answer) == ["10.96.0.10"]


def test_a_headless_service_resolves_to_its_ready_endpoints(
    server: clusterdns.ClusterDns,
) -> None:
    response = ask(server, f"db.default.svc.{ZONE}")
    assert records(response.answer) == ["10.88.0.5", "10.88.0.6", "10.88.0.8"]
    # publishNotReadyAddresses publishes every endpoint.
    assert records(ask(server, f"early.default.svc.{ZONE}").answer) == ["10.88.1.1"]


def test_headless_endpoints_have_names_by_hostname_or_dashed_ip(
    server: clusterdns.ClusterDns,
) -> None:
    assert records(ask(server, f"db-0.db.default.svc.{ZONE}").answer) == ["10.88.0.5"]
    assert records(ask(server, f"10-88-0-8.db.default.svc.{ZONE}").answer) == ["10.88.0.8"]
    not_ready = ask(server, f"db-2.db.default.svc.{ZONE}")
    assert not_ready.rcode() == dns.rcode.NXDOMAIN
    # A ClusterIP Service's endpoints are not named (the specification's rule).
    assert ask(server, f"db-0.web.default.svc.{ZONE}").rcode() == dns.rcode.NXDOMAIN


def test_srv_of_a_cluster_ip_service_points_at_the_service_name(
    server: clusterdns.ClusterDns,
) -> None:
    response = ask(server, f"_http._tcp.web.default.svc.{ZONE}", "SRV")
    assert records(response.answer, "SRV") == [f"0 100 80 web.default.svc.{ZONE}."]
    (glue,) = response.additional
    assert glue.name == dns.name.from_text(f"web.default.svc.{ZONE}")
    assert records(response.additional) == ["10.96.0.10"]
    # Every port when asked on the Service name itself; the weights split 100.
    every = ask(server, f"web.default.svc.{ZONE}", "SRV")
    assert records(every.answer, "SRV") == [
        f"0 50 80 web.default.svc.{ZONE}.",
        f"0 50 9090 web.default.svc.{ZONE}.",
    ]
    assert ask(server, f"_nope._tcp.web.default.svc.{ZONE}", "SRV").rcode() == dns.rcode.NXDOMAIN
    assert ask(server, f"_http._udp.web.default.svc.{ZONE}", "SRV").rcode() == dns.rcode.NXDOMAIN
    # ``_tcp.web`` is the parent of SRV names: it exists, with no records.
    parent = ask(server, f"_tcp.web.default.svc.{ZONE}", "SRV")
    assert parent.rcode() == dns.rcode.NOERROR and not parent.answer


def test_srv_of_a_headless_service_lists_each_ready_endpoint_with_its_address(
    server: clusterdns.ClusterDns,
) -> None:
    response = ask(server, f"_pg._tcp.db.default.svc.{ZONE}", "SRV")
    assert records(response.answer, "SRV") == [
        f"0 33 5432 10-88-0-8.db.default.svc.{ZONE}.",
        f"0 33 5432 db-0.db.default.svc.{ZONE}.",
        f"0 33 5432 db-1.db.default.svc.{ZONE}.",
    ]
    glue = {rrset.name.to_text(): records([rrset]) for rrset in response.additional}
    assert glue == {
        f"db-0.db.default.svc.{ZONE}.": ["10.88.0.5"],
        f"db-1.db.default.svc.{ZONE}.": ["10.88.0.6"],
        f"10-88-0-8.db.default.svc.{ZONE}.": ["10.88.0.8"],
    }


def test_an_external_name_service_is_a_cname(server: clusterdns.ClusterDns) -> None:
    response = ask(server, f"ext.default.svc.{ZONE}")
    assert response.rcode() == dns.rcode.NOERROR
    assert records(response.answer, "CNAME") == ["example.org."]
    assert records(response.answer) == []
    # An alias into the cluster domain is followed here.
    inside = ask(server, f"alias.default.svc.{ZONE}")
    assert records(inside.answer, "CNAME") == [f"web.default.svc.{ZONE}."]
    assert records(inside.answer) == ["10.96.0.10"]


def test_pod_names_are_read_from_the_name(server: clusterdns.ClusterDns) -> None:
    assert records(ask(server, f"10-88-0-42.default.pod.{ZONE}").answer) == ["10.88.0.42"]
    assert records(ask(server, f"fd00--1.default.pod.{ZONE}", "AAAA").answer, "AAAA") == ["fd00::1"]
    assert ask(server, f"10-88-0-300.default.pod.{ZONE}").rcode() == dns.rcode.NXDOMAIN
    assert ask(server, f"not-an-ip.default.pod.{ZONE}").rcode() == dns.rcode.NXDOMAIN


def test_ptr_names_cluster_ips_and_headless_endpoints(server: clusterdns.ClusterDns) -> None:
    response = ask(server, "10.0.96.10.in-addr.arpa.", "PTR")
    assert response.flags & dns.flags.AA
    assert records(response.answer, "PTR") == [f"web.default.svc.{ZONE}."]
    assert records(ask(server, "5.0.88.10.in-addr.arpa.", "PTR").answer, "PTR") == [
        f"db-0.db.default.svc.{ZONE}."
    ]
    assert records(ask(server, "8.0.88.10.in-addr.arpa.", "PTR").answer, "PTR") == [
        f"10-88-0-8.db.default.svc.{ZONE}."
    ]
    # Not ours (a not-ready endpoint, any other address): for the upstreams.
    assert ask(server, "7.0.88.10.in-addr.arpa.", "PTR").rcode() == dns.rcode.REFUSED
    assert ask(server, "1.2.0.192.in-addr.arpa.", "PTR").rcode() == dns.rcode.REFUSED


async def test_ptr_and_records_follow_changes(cluster: Cluster) -> None:
    server = cluster.dns()
    assert ask(server, "10.0.96.10.in-addr.arpa.", "PTR").answer  # the index is built
    await cluster.client.delete(SERVICES, "default", "web")
    await cluster.client.create(NAMESPACES, {"metadata": {"name": "other"}})
    await cluster.client.create(
        SERVICES, service("api", {"clusterIP": "10.96.0.11", "ports": [{"port": 80}]}, "other")
    )
    await cluster.until(lambda: cluster.services.service("other", "api") is not None)
    await cluster.until(lambda: cluster.services.service("default", "web") is None)
    assert ask(server, "10.0.96.10.in-addr.arpa.", "PTR").rcode() == dns.rcode.REFUSED
    assert records(ask(server, "11.0.96.10.in-addr.arpa.", "PTR").answer, "PTR") == [
        f"api.other.svc.{ZONE}."
    ]
    assert ask(server, f"web.default.svc.{ZONE}").rcode() == dns.rcode.NXDOMAIN
    assert ask(server, f"other.svc.{ZONE}").rcode() == dns.rcode.NOERROR


def test_a_name_without_the_asked_type_is_nodata_with_the_soa(
    server: clusterdns.ClusterDns,
) -> None:
    response = ask(server, f"web.default.svc.{ZONE}", "AAAA")
    assert response.rcode() == dns.rcode.NOERROR and not response.answer
    assert_soa(response)
    for name in (f"default.svc.{ZONE}", f"svc.{ZONE}", f"default.pod.{ZONE}"):
        empty = ask(server, name)
        assert empty.rcode() == dns.rcode.NOERROR and not empty.answer, name


def test_a_missing_name_in_the_zone_is_nxdomain_with_the_soa(
    server: clusterdns.ClusterDns,
) -> None:
    for name in (
        f"nope.default.svc.{ZONE}",
        f"web.nowhere.svc.{ZONE}",
        f"nowhere.svc.{ZONE}",
        f"web.default.{ZONE}",
        f"a.b.c.d.e.f.{ZONE}",
    ):
        response = ask(server, name)
        assert response.rcode() == dns.rcode.NXDOMAIN, name
        assert response.flags & dns.flags.AA
        assert_soa(response)


def test_the_zone_apex_and_the_schema_version(server: clusterdns.ClusterDns) -> None:
    soa = ask(server, ZONE, "SOA")
    assert records(soa.answer, "SOA")[0].startswith(f"ns.dns.{ZONE}. hostmaster.{ZONE}. ")
    ns = ask(server, ZONE, "NS")
    assert records(ns.answer, "NS") == [f"ns.dns.{ZONE}."]
    assert records(ns.additional) == ["127.0.0.1"]  # the listen address
    assert records(ask(server, f"dns-version.{ZONE}", "TXT").answer, "TXT") == ['"1.1.0"']


def test_names_match_in_any_case_and_answers_keep_the_question_case(
    server: clusterdns.ClusterDns,
) -> None:
    name = "Web.DEFAULT.Svc.Cluster.Local."
    response = ask(server, name)
    assert response.question[0].name.to_text() == name
    (rrset,) = response.answer
    assert rrset.name.to_text() == name  # the same labels, byte for byte
    assert records(response.answer) == ["10.96.0.10"]


def test_other_opcodes_are_not_implemented(server: clusterdns.ClusterDns) -> None:
    query = dns.message.make_query(f"web.default.svc.{ZONE}", "A")
    query.set_opcode(dns.opcode.STATUS)
    assert server.answer(query).rcode() == dns.rcode.NOTIMP


def test_upstreams_never_include_the_server_itself(cluster: Cluster) -> None:
    server = cluster.dns(
        host="10.88.0.1", port=53, upstreams=["10.88.0.1", "10.88.0.1:5353", "1.1.1.1"]
    )
    assert server.upstreams == [("10.88.0.1", 5353), ("1.1.1.1", 53)]
    # A wildcard address owns every loopback address on its port.
    wildcard = cluster.dns(host="0.0.0.0", port=53, upstreams=["127.0.0.53", "127.0.0.1:5353"])
    assert wildcard.upstreams == [("127.0.0.1", 5353)]


def test_resolv_conf_nameservers_and_upstream_spellings() -> None:
    text = "# generated\nsearch example.org\nnameserver 10.0.0.2\nnameserver fe80::1%eth0\n"
    assert clusterdns.nameservers(text) == ["10.0.0.2", "fe80::1"]
    assert clusterdns.parse_upstream("[fd00::2]:5353") == ("fd00::2", 5353)
    assert clusterdns.parse_upstream("fd00::2") == ("fd00::2", 53)
    with pytest.raises(ValueError):
        clusterdns.parse_upstream("dns.example.org")


async def test_garbage_gets_formerr_or_nothing(server: clusterdns.ClusterDns) -> None:
    reply = await server.handle(b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xff\xff")
    assert reply is not None
    parsed = dns.message.from_wire(reply)
    assert parsed.id == 0x1234 and parsed.rcode() == dns.rcode.FORMERR
    assert parsed.flags & dns.flags.QR
    assert await server.handle(b"\x12\x34\x01") is None  # no header to answer
    response = dns.message.make_response(dns.message.make_query("x.", "A"))
    assert await server.handle(response.to_wire()) is None  # never answer an answer


# --- on sockets -----------------------------------------------------------------------------


@dataclass
class FakeUpstream:
    """A resolver on 127.0.0.1: answers every A query with 192.0.2.1, or stays
    silent, or truncates over UDP what it answers in full over TCP."""

    mode: str = "answer"  # answer | silent | truncate
    port: int = 0
    ids: list[int] = field(default_factory=list)
    tcp_queries: int = 0
    _udp: asyncio.DatagramTransport | None = None
    _tcp: asyncio.Server | None = None

    def reply(self, wire: bytes, *, tcp: bool) -> bytes | None:
        query = dns.message.from_wire(wire)
        self.ids.append(query.id)
        if self.mode == "silent":
            return None
        response = dns.message.make_response(query, recursion_available=True)
        name = query.question[0].name
        count = 60 if self.mode == "truncate" else 1
        ips = [f"192.0.2.{i}" for i in range(1, count + 1)]
        response.answer.append(dns.rrset.from_text_list(name, 300, "IN", "A", ips))
        if self.mode == "truncate" and not tcp:
            response.answer = []
            response.flags |= dns.flags.TC
        return response.to_wire()

    async def start(self) -> FakeUpstream:
        loop = asyncio.get_running_loop()
        upstream = self

        class Udp(asyncio.DatagramProtocol):
            transport: Any = None

            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.transport = transport

            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                out = upstream.reply(data, tcp=False)
                if out is not None:
                    self.transport.sendto(out, addr)

        # UDP and TCP on one port: the TCP side of a free UDP port may be
        # taken by another process, so try a few.
        for attempt in range(20):
            self._udp, _ = await loop.create_datagram_endpoint(Udp, local_addr=("127.0.0.1", 0))
            self.port = self._udp.get_extra_info("sockname")[1]
            try:
                self._tcp = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
            except OSError:
                self._udp.close()
                if attempt == 19:
                    raise
                continue
            return self
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            size = int.from_bytes(await reader.readexactly(2), "big")
            self.tcp_queries += 1
            out = self.reply(await reader.readexactly(size), tcp=True)
            if out is not None:
                writer.write(len(out).to_bytes(2, "big") + out)
                await writer.drain()
        writer.close()

    async def stop(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
            await self._tcp.wait_closed()


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    fake = await FakeUpstream().start()
    try:
        yield fake
    finally:
        await fake.stop()


@pytest.fixture
async def running(cluster: Cluster, upstream: FakeUpstream) -> AsyncIterator[clusterdns.ClusterDns]:
    server = cluster.dns(
        host="127.0.0.1", port=0, upstreams=[f"127.0.0.1:{upstream.port}"], forward_timeout=0.5
    )
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def test_udp_truncates_a_large_answer_and_tcp_carries_it_whole(
    running: clusterdns.ClusterDns,
) -> None:
    assert running.port != 0
    query = dns.message.make_query(f"big.default.svc.{ZONE}", "A")
    over_udp = await dns.asyncquery.udp(query, "127.0.0.1", port=running.port, timeout=5)
    assert over_udp.flags & dns.flags.TC
    over_tcp = await dns.asyncquery.tcp(query, "127.0.0.1", port=running.port, timeout=5)
    assert not over_tcp.flags & dns.flags.TC
    assert len(records(over_tcp.answer)) == 60
    # A client announcing a larger EDNS buffer gets it whole over UDP.
    edns = dns.message.make_query(f"big.default.svc.{ZONE}", "A", use_edns=0, payload=4096)
    whole = await dns.asyncquery.udp(edns, "127.0.0.1", port=running.port, timeout=5)
    assert not whole.flags & dns.flags.TC and len(records(whole.answer)) == 60


async def test_tcp_answers_several_queries_on_one_connection(
    running: clusterdns.ClusterDns,
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", running.port)
    try:
        names = [f"web.default.svc.{ZONE}", f"db-0.db.default.svc.{ZONE}"]
        queries = [dns.message.make_query(name, "A") for name in names]
        for query in queries:
            wire = query.to_wire()
            writer.write(len(wire).to_bytes(2, "big") + wire)
        await writer.drain()
        answers = []
        for _ in queries:
            size = int.from_bytes(await reader.readexactly(2), "big")
            answers.append(dns.message.from_wire(await reader.readexactly(size)))
    finally:
        writer.close()
    assert [a.id for a in answers] == [q.id for q in queries]
    assert [records(a.answer) for a in answers] == [["10.96.0.10"], ["10.88.0.5"]]


async def test_names_outside_the_cluster_are_forwarded(
    running: clusterdns.ClusterDns, upstream: FakeUpstream
) -> None:
    query = dns.message.make_query("www.example.org", "A")
    response = await dns.asyncquery.udp(query, "127.0.0.1", port=running.port, timeout=5)
    assert response.id == query.id and response.rcode() == dns.rcode.NOERROR
    assert records(response.answer) == ["192.0.2.1"]
    assert len(upstream.ids) == 1
    # An unknown reverse name is the upstreams' too.
    ptr = dns.message.make_query("1.2.0.192.in-addr.arpa.", "PTR")
    await dns.asyncquery.udp(ptr, "127.0.0.1", port=running.port, timeout=5)
    assert len(upstream.ids) == 2


async def test_an_external_name_outside_the_cluster_is_resolved_upstream(
    running: clusterdns.ClusterDns,
) -> None:
    query = dns.message.make_query(f"ext.default.svc.{ZONE}", "A")
    response = await dns.asyncquery.udp(query, "127.0.0.1", port=running.port, timeout=5)
    assert records(response.answer, "CNAME") == ["example.org."]
    assert records(response.answer) == ["192.0.2.1"]
    assert [r.name.to_text() for r in response.answer] == [
        f"ext.default.svc.{ZONE}.",
        "example.org.",
    ]


async def test_a_truncated_upstream_answer_is_fetched_over_tcp_for_a_tcp_client(
    running: clusterdns.ClusterDns, upstream: FakeUpstream
) -> None:
    upstream.mode = "truncate"
    query = dns.message.make_query("many.example.org", "A")
    over_udp = await dns.asyncquery.udp(query, "127.0.0.1", port=running.port, timeout=5)
    assert over_udp.flags & dns.flags.TC and upstream.tcp_queries == 0
    over_tcp = await dns.asyncquery.tcp(query, "127.0.0.1", port=running.port, timeout=5)
    assert over_tcp.id == query.id and not over_tcp.flags & dns.flags.TC
    assert len(records(over_tcp.answer)) == 60 and upstream.tcp_queries == 1


async def test_silent_upstreams_give_servfail(
    running: clusterdns.ClusterDns, upstream: FakeUpstream
) -> None:
    upstream.mode = "silent"
    query = dns.message.make_query("www.example.org", "A")
    response = await dns.asyncquery.udp(query, "127.0.0.1", port=running.port, timeout=10)
    assert response.rcode() == dns.rcode.SERVFAIL
    assert upstream.ids  # it was asked


async def test_garbage_over_udp_gets_formerr(running: clusterdns.ClusterDns) -> None:
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", running.port))
        await loop.sock_sendall(
            sock, b"\xbe\xef\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07garbage"
        )
        async with asyncio.timeout(5):
            reply = await loop.sock_recv(sock, 512)
    parsed = dns.message.from_wire(reply)
    assert parsed.id == 0xBEEF and parsed.rcode() == dns.rcode.FORMERR
