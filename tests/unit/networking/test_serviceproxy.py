"""The service proxy's nftables rules: what each Service renders to, what an
update rewrites (only what changed), and the proxy following the API."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from nodeless.client import clients, informers
from nodeless.networking import servicemaps, serviceproxy

POD_CIDR = "10.88.0.0/16"
TABLE = "nodeless_t"


def web(
    *, affinity: int = 0, ports: tuple[servicemaps.ServicePort, ...] = ()
) -> servicemaps.Service:
    return servicemaps.Service(
        namespace="default",
        name="web",
        type="ClusterIP",
        cluster_ips=("10.96.5.5",),
        ports=ports or (servicemaps.ServicePort("http", "TCP", 80, 8080),),
        affinity_seconds=affinity,
    )


def endpoints(*ips: str, ready: bool = True) -> list[servicemaps.Endpoint]:
    return [servicemaps.Endpoint(ip, 8080, ready=ready) for ip in ips]


def render(service: servicemaps.Service, eps: list[servicemaps.Endpoint]) -> serviceproxy.Ruleset:
    return serviceproxy.service_ruleset(service, lambda _port: eps, pod_cidr=POD_CIDR)


def test_a_service_port_spreads_new_connections_over_its_ready_endpoints() -> None:
    rules = render(web(), endpoints("10.88.0.5", "10.88.0.6") + endpoints("10.88.0.7", ready=False))
    ((element, verdict),) = rules.services.items()
    assert element == "10.96.5.5 . tcp . 80"
    svc_chain = verdict.removeprefix("goto ")
    spread = rules.chains[svc_chain][-1]
    assert spread.startswith("numgen random mod 2 vmap")
    dnats = sorted(r for rules_ in rules.chains.values() for r in rules_ if "dnat" in r)
    assert dnats == [
        "meta l4proto tcp dnat to 10.88.0.5:8080",
        "meta l4proto tcp dnat to 10.88.0.6:8080",
    ]
    # Hairpin: a pod reaching itself through its Service is masqueraded.
    sep_rules = [r for name, rs in rules.chains.items() if name.startswith("sep-") for r in rs]
    assert "ip saddr 10.88.0.5 meta mark set meta mark | 0x4000" in sep_rules
    assert not rules.no_endpoints


def test_a_service_port_without_ready_endpoints_rejects_instead_of_hanging() -> None:
    rules = render(web(), endpoints("10.88.0.7", ready=False))
    assert rules.services == {} and rules.chains == {}
    assert rules.no_endpoints == {"10.96.5.5 . tcp . 80": "goto reject-no-endpoints"}


def test_terminating_serving_endpoints_are_used_when_none_is_ready() -> None:
    draining = [
        servicemaps.Endpoint("10.88.0.9", 8080, ready=False, serving=True, terminating=True)
    ]
    rules = render(web(), draining)
    assert any("dnat to 10.88.0.9:8080" in r for rs in rules.chains.values() for r in rs)


def test_headless_and_external_name_services_render_nothing() -> None:
    headless = servicemaps.Service("default", "db", "ClusterIP", ("None",), web().ports)
    external = servicemaps.Service("default", "ext", "ExternalName", (), (), external_name="a.b")
    for service in (headless, external):
        assert render(service, endpoints("10.88.0.5")) == serviceproxy.Ruleset()


def test_client_ip_affinity_sends_a_client_back_to_its_endpoint() -> None:
    rules = render(web(affinity=300), endpoints("10.88.0.5", "10.88.0.6"))
    assert len(rules.sets) == 2 and set(rules.sets.values()) == {300}
    svc_chain = next(n for n in rules.chains if n.startswith("svc-"))
    lookups = [r for r in rules.chains[svc_chain] if r.startswith("ip saddr @")]
    assert len(lookups) == 2
    for name, chain in rules.chains.items():
        if name.startswith("sep-"):
            assert any(r.startswith("update @aff-") for r in chain)


def test_udp_and_tcp_ports_of_one_service_get_their_own_chains() -> None:
    ports = (
        servicemaps.ServicePort("dns", "UDP", 53, 53),
        servicemaps.ServicePort("dns-tcp", "TCP", 53, 53),
    )
    rules = render(web(ports=ports), endpoints("10.88.0.5"))
    assert set(rules.services) == {"10.96.5.5 . udp . 53", "10.96.5.5 . tcp . 53"}
    assert len(set(rules.services.values())) == 2


def test_an_update_rewrites_only_what_changed() -> None:
    before = render(web(), endpoints("10.88.0.5"))
    after = render(web(), endpoints("10.88.0.5", "10.88.0.6"))
    script = serviceproxy.delta_script(TABLE, before, after).splitlines()
    svc_chain = next(n for n in after.chains if n.startswith("svc-"))
    kept_sep = next(n for n in before.chains if n.startswith("sep-"))
    assert f"flush chain ip {TABLE} {svc_chain}" in script
    assert not any(line.endswith(kept_sep) for line in script), "the kept endpoint is untouched"
    assert sum(line.startswith("add chain") for line in script) == 1  # the new endpoint
    assert not any("element" in line for line in script)  # the map entry still points right
    assert serviceproxy.delta_script(TABLE, after, after) == ""


def test_a_removed_service_loses_its_map_entry_before_its_chains() -> None:
    before = render(web(affinity=60), endpoints("10.88.0.5"))
    script = serviceproxy.delta_script(TABLE, before, serviceproxy.Ruleset()).splitlines()
    element = script.index(f"delete element ip {TABLE} services {{ 10.96.5.5 . tcp . 80 }}")
    deletes = [i for i, line in enumerate(script) if line.startswith("delete chain")]
    assert deletes and min(deletes) > element
    # The Service chain goes before the endpoint chain it jumps to, sets last.
    names = [script[i].split()[-1] for i in deletes]
    assert names[0].startswith("svc-") and names[-1].startswith("sep-")
    assert script[-1].startswith(f"delete set ip {TABLE} aff-")


def test_the_full_script_replaces_the_table_atomically() -> None:
    script = serviceproxy.full_script(TABLE, render(web(), endpoints("10.88.0.5")))
    lines = script.splitlines()
    assert lines[:3] == [
        f"add table ip {TABLE}",
        f"delete table ip {TABLE}",
        f"add table ip {TABLE}",
    ]
    assert any("type nat hook output" in line for line in lines), "the host reaches Services too"
    assert any("type nat hook prerouting" in line for line in lines)


def test_the_table_is_named_after_the_bridge() -> None:
    assert serviceproxy.table_name("nltest-9") == "nodeless_nltest_9"


# --- the proxy following the API ----------------------------------------------------

SERVICES = clients.ResourceRef("", "v1", "services", True, "Service")
SLICES = clients.ResourceRef("discovery.k8s.io", "v1", "endpointslices", True, "EndpointSlice")


Following = tuple[serviceproxy.ServiceProxy, list[str]]


@pytest.fixture
async def following(client: clients.ApiClient) -> AsyncIterator[Following]:
    """A started proxy on the API, and the nft scripts it would have run."""
    scripts: list[str] = []

    async def runner(script: str) -> None:
        scripts.append(script)

    factory = informers.InformerFactory(client)
    service_map = servicemaps.ServiceMap(factory)

    async def conntrack(arguments: list[str]) -> None:
        scripts.append("conntrack -D " + " ".join(arguments))

    proxy = serviceproxy.ServiceProxy(
        service_map,
        bridge="t",
        pod_cidr=POD_CIDR,
        runner=runner,
        conntrack=conntrack,
        min_sync_interval=0,
    )
    await proxy.start()
    try:
        yield proxy, scripts
    finally:
        await proxy.stop()
        service_map.stop()
        await factory.stop()


def endpoint_slice(name: str, service: str, *ips: str) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": "default",
            "labels": {servicemaps.SERVICE_NAME_LABEL: service},
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "protocol": "TCP", "port": 8080}],
        "endpoints": [{"addresses": [ip], "conditions": {"ready": True}} for ip in ips],
    }


async def test_the_proxy_writes_the_table_then_follows_services_and_endpoints(
    client: clients.ApiClient, following: Following
) -> None:
    proxy, scripts = following
    await _settle(proxy, 1)
    assert scripts[0].startswith(f"add table ip {TABLE}\ndelete table ip {TABLE}")
    body = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
    }
    created = await client.create(SERVICES, body)
    ip = created["spec"]["clusterIP"]
    await _settle(proxy, 2)
    assert (
        f"add element ip {TABLE} no-endpoints {{ {ip} . tcp . 80 : goto reject-no-endpoints }}"
        in scripts[-1]
    )
    await client.create(SLICES, endpoint_slice("web-1", "web", "10.88.0.5"))
    await _settle(proxy, 3)
    assert "dnat to 10.88.0.5:8080" in scripts[-1]
    assert f"add element ip {TABLE} services {{ {ip} . tcp . 80 : goto svc-" in scripts[-1]
    await client.delete(SERVICES, "default", "web")
    await _settle(proxy, 4)
    assert f"delete element ip {TABLE} services {{ {ip} . tcp . 80 }}" in scripts[-1]
    assert ("default", "web") not in proxy.applied


async def _settle(proxy: serviceproxy.ServiceProxy, syncs: int) -> None:
    for _ in range(500):
        if proxy.syncs >= syncs:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{proxy.syncs} syncs, expected {syncs}")


def test_endpoint_addresses_that_are_not_ipv4_never_reach_a_rule() -> None:
    slices = [
        {
            "addressType": "IPv4",
            "ports": [{"name": "http", "protocol": "TCP", "port": 8080}],
            "endpoints": [
                {"addresses": ["10.88.0.5\nflush ruleset"]},
                {"addresses": ["10.88.0.6"]},
            ],
        }
    ]
    found = servicemaps.slice_endpoints(slices, "http", "TCP")
    assert [e.ip for e in found] == ["10.88.0.6"]


async def test_an_address_two_services_claim_goes_to_the_first_until_it_lets_go(
    client: clients.ApiClient, following: Following
) -> None:
    proxy, scripts = following
    for name in ("a", "b"):
        body = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"externalIPs": ["192.0.2.50"], "ports": [{"name": "http", "port": 80}]},
        }
        await client.create(SERVICES, body)
        await _settle(proxy, proxy.syncs + 1)
    element = "192.0.2.50 . tcp . 80"
    assert proxy.owners[element] == ("default", "a")
    await client.delete(SERVICES, "default", "a")
    for _ in range(500):
        if proxy.owners.get(element) == ("default", "b"):
            break
        await asyncio.sleep(0.01)
    assert proxy.owners.get(element) == ("default", "b")
    assert any(f"add element ip {TABLE} no-endpoints {{ {element} :" in s for s in scripts[-3:])


# --- stale UDP flows ----------------------------------------------------------------------


def dns_service() -> servicemaps.Service:
    return web(
        ports=(
            servicemaps.ServicePort("dns", "UDP", 53, 53),
            servicemaps.ServicePort("dns-tcp", "TCP", 53, 53),
        )
    )


def test_udp_flows_to_a_departed_endpoint_and_of_a_port_that_had_none_are_deleted() -> None:
    nothing = render(dns_service(), [])
    two = render(dns_service(), endpoints("10.88.0.5", "10.88.0.6"))
    one = render(dns_service(), endpoints("10.88.0.6"))
    flow = ["-p", "udp", "--orig-dst", "10.96.5.5", "--orig-port-dst", "53"]
    # No endpoint, then some: every flow of the port (they were rejected).
    assert serviceproxy.conntrack_deletions(nothing, two) == [flow]
    # An endpoint leaves: only the flows it was given.
    assert serviceproxy.conntrack_deletions(two, one) == [[*flow, "--dst-nat", "10.88.0.5"]]
    # The Service goes: its last endpoint's flows.
    assert serviceproxy.conntrack_deletions(one, serviceproxy.Ruleset()) == [
        [*flow, "--dst-nat", "10.88.0.6"]
    ]
    # Nothing UDP changed (and TCP never needs it).
    assert serviceproxy.conntrack_deletions(one, one) == []
    assert (
        serviceproxy.conntrack_deletions(render(web(), []), render(web(), endpoints("10.88.0.5")))
        == []
    )


async def test_the_proxy_clears_udp_flows_after_the_rules_that_replace_them(
    client: clients.ApiClient, following: Following
) -> None:
    proxy, scripts = following
    await _settle(proxy, 1)
    body = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "dns", "namespace": "default"},
        "spec": {"ports": [{"name": "dns", "port": 53, "targetPort": 53, "protocol": "UDP"}]},
    }
    ip = (await client.create(SERVICES, body))["spec"]["clusterIP"]
    await _settle(proxy, 2)
    udp_slice = endpoint_slice("dns-1", "dns", "10.88.0.5")
    udp_slice["ports"] = [{"name": "dns", "protocol": "UDP", "port": 53}]
    await client.create(SLICES, udp_slice)
    await _settle(proxy, 3)
    assert scripts[-1] == f"conntrack -D -p udp --orig-dst {ip} --orig-port-dst 53"
    assert "dnat to 10.88.0.5:53" in scripts[-2]
    await client.delete(SLICES, "default", "dns-1")
    await _settle(proxy, 4)
    assert (
        scripts[-1] == f"conntrack -D -p udp --orig-dst {ip} --orig-port-dst 53 --dst-nat 10.88.0.5"
    )
