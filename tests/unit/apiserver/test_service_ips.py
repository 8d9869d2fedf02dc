"""Service ClusterIPs: allocated from the service range as IPAddress objects,
kept across updates, released on deletion, refused when taken or out of range."""

from __future__ import annotations

import ipaddress
from typing import Any

import aiohttp

from nodeless.apiserver import app, serviceips
from nodeless.storage import memory
from tests.unit.apiserver.conftest import Client

SERVICES = "/api/v1/namespaces/default/services"
IPADDRESSES = "/apis/networking.k8s.io/v1/ipaddresses"


def service(name: str, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"selector": {"app": name}, "ports": [{"port": 80}], **spec},
    }
    return body


async def ip_owner(client: Client, ip: str) -> dict[str, Any] | None:
    code, obj, _ = await client.request("GET", f"{IPADDRESSES}/{ip}")
    return obj["spec"]["parentRef"] if code == 200 else None


async def test_a_service_gets_a_cluster_ip_from_the_range_recorded_as_an_ipaddress(
    client: Client,
) -> None:
    code, obj, _ = await client.request("POST", SERVICES, service("web"))
    assert code == 201
    ip = obj["spec"]["clusterIP"]
    assert obj["spec"]["clusterIPs"] == [ip]
    assert ipaddress.ip_address(ip) in ipaddress.ip_network(serviceips.DEFAULT_SERVICE_CIDR)
    # Dynamic addresses stay out of the static band kept for chosen ones (.10).
    offset = int(ipaddress.ip_address(ip)) - int(ipaddress.ip_address("10.96.0.0"))
    assert offset > serviceips.static_band(2**20 - 2)
    assert await ip_owner(client, ip) == {
        "group": "",
        "resource": "services",
        "namespace": "default",
        "name": "web",
    }


async def test_the_kubernetes_service_holds_the_first_address_and_the_range_is_published(
    client: Client,
) -> None:
    _, obj, _ = await client.request("GET", SERVICES + "/kubernetes")
    assert obj["spec"]["clusterIP"] == "10.96.0.1"
    assert (await ip_owner(client, "10.96.0.1") or {}).get("name") == "kubernetes"
    code, cidr, _ = await client.request(
        "GET", "/apis/networking.k8s.io/v1/servicecidrs/kubernetes"
    )
    assert code == 200
    assert cidr["spec"]["cidrs"] == ["10.96.0.0/12"]
    assert cidr["status"]["conditions"][0]["type"] == "Ready"


async def test_a_chosen_address_is_given_and_a_taken_one_refused_with_422(
    client: Client,
) -> None:
    code, obj, _ = await client.request("POST", SERVICES, service("dns", clusterIP="10.96.0.10"))
    assert code == 201 and obj["spec"]["clusterIPs"] == ["10.96.0.10"]
    code, status, _ = await client.request(
        "POST", SERVICES, service("other", clusterIP="10.96.0.10")
    )
    assert code == 422
    assert status["reason"] == "Invalid"
    cause = status["details"]["causes"][0]
    assert cause["field"] == "spec.clusterIPs"
    assert "provided IP is already allocated" in cause["message"]
    code, _, _ = await client.request("GET", SERVICES + "/other")
    assert code == 404


async def test_an_address_outside_the_range_or_malformed_is_refused(client: Client) -> None:
    code, status, _ = await client.request(
        "POST", SERVICES, service("far", clusterIP="192.168.1.1")
    )
    assert code == 422
    assert (
        "is not in the valid range. The range of valid IPs is 10.96.0.0/12" in (status["message"])
    )
    code, status, _ = await client.request("POST", SERVICES, service("bad", clusterIP="10.96.x"))
    assert code == 422
    assert status["details"]["causes"][0]["field"] == "spec.clusterIPs[0]"
    code, _, _ = await client.request("GET", IPADDRESSES + "/192.168.1.1")
    assert code == 404


async def test_headless_and_external_name_services_hold_no_address(client: Client) -> None:
    before = len((await client.request("GET", IPADDRESSES))[1]["items"])
    code, obj, _ = await client.request("POST", SERVICES, service("db", clusterIP="None"))
    assert code == 201 and obj["spec"]["clusterIPs"] == ["None"]
    body = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "ext"},
        "spec": {"type": "ExternalName", "externalName": "example.com"},
    }
    code, obj, _ = await client.request("POST", SERVICES, body)
    assert code == 201 and "clusterIP" not in obj["spec"]
    after = len((await client.request("GET", IPADDRESSES))[1]["items"])
    assert after == before


async def test_an_update_without_the_address_keeps_it_and_changing_it_is_refused(
    client: Client,
) -> None:
    _, created, _ = await client.request("POST", SERVICES, service("web"))
    ip = created["spec"]["clusterIP"]
    replacement = service("web")
    replacement["metadata"]["resourceVersion"] = created["metadata"]["resourceVersion"]
    replacement["spec"]["ports"] = [{"port": 8080}]
    code, obj, _ = await client.request("PUT", SERVICES + "/web", replacement)
    assert code == 200
    assert obj["spec"]["clusterIP"] == ip and obj["spec"]["ports"][0]["port"] == 8080
    code, status, _ = await client.request(
        "PATCH",
        SERVICES + "/web",
        {"spec": {"clusterIP": "10.96.0.77", "clusterIPs": ["10.96.0.77"]}},
        content_type="application/merge-patch+json",
    )
    assert code == 422
    assert "may not change once set" in status["message"]
    assert await ip_owner(client, "10.96.0.77") is None


async def test_deleting_a_service_releases_its_address_for_reuse(client: Client) -> None:
    await client.request("POST", SERVICES, service("a", clusterIP="10.96.0.20"))
    code, _, _ = await client.request("DELETE", SERVICES + "/a")
    assert code == 200
    assert await ip_owner(client, "10.96.0.20") is None
    code, _, _ = await client.request("POST", SERVICES, service("b", clusterIP="10.96.0.20"))
    assert code == 201


async def test_becoming_external_name_releases_the_address(client: Client) -> None:
    _, created, _ = await client.request("POST", SERVICES, service("web"))
    ip = created["spec"]["clusterIP"]
    code, obj, _ = await client.request(
        "PATCH",
        SERVICES + "/web",
        {"spec": {"type": "ExternalName", "externalName": "example.com", "selector": None}},
        content_type="application/merge-patch+json",
    )
    assert code == 200, obj
    assert "clusterIP" not in obj["spec"]
    assert await ip_owner(client, ip) is None


async def test_a_dry_run_takes_no_address(client: Client) -> None:
    code, obj, _ = await client.request("POST", SERVICES, service("web"), params={"dryRun": "All"})
    assert code == 201 and obj["spec"]["clusterIP"]
    assert await ip_owner(client, obj["spec"]["clusterIP"]) is None


async def test_a_failed_create_gives_its_address_back(client: Client) -> None:
    await client.request("POST", SERVICES, service("web", clusterIP="10.96.0.30"))
    # Same name: the Service write fails after the new address was taken.
    code, _, _ = await client.request("POST", SERVICES, service("web", clusterIP="10.96.0.31"))
    assert code == 409
    assert await ip_owner(client, "10.96.0.31") is None


async def test_a_small_range_fills_up_with_an_internal_error(clock: Any) -> None:
    server = app.ApiServer(
        memory.MemoryBackend(), port=0, tls=False, clock=clock, service_cidr="10.100.0.0/29"
    )
    await server.start()
    try:
        async with aiohttp.ClientSession() as session:
            client = Client(session, server.url, server)
            codes = [
                (await client.request("POST", SERVICES, service(f"s{i}")))[0] for i in range(6)
            ]
            # Six usable addresses, one held by the kubernetes Service.
            assert codes == [201] * 5 + [500]
            _, status, _ = await client.request("POST", SERVICES, service("late"))
            assert status["message"] == (
                "Internal error occurred: failed to allocate a serviceIP: range is full"
            )
    finally:
        await server.stop()


async def test_repair_releases_addresses_of_services_that_are_gone(client: Client) -> None:
    await client.request("POST", SERVICES, service("web", clusterIP="10.96.0.40"))
    services = client.server.registry.by_kind("", "v1", "Service")
    assert services is not None
    # A crash between the Service's deletion and the release leaves the address.
    await client.server.backend.delete(
        client.server.store.key(services, "default", "web"),
        client.server.store.cache(services)
        .objects[client.server.store.key(services, "default", "web")]
        .rev,
    )
    assert await ip_owner(client, "10.96.0.40") is not None
    await client.server.service_ips.repair()
    assert await ip_owner(client, "10.96.0.40") is None


async def test_a_headless_service_stays_headless_when_an_update_leaves_clusterip_out(
    client: Client,
) -> None:
    _, created, _ = await client.request("POST", SERVICES, service("db", clusterIP="None"))
    replacement = service("db")
    replacement["metadata"]["resourceVersion"] = created["metadata"]["resourceVersion"]
    code, obj, _ = await client.request("PUT", SERVICES + "/db", replacement)
    assert code == 200 and obj["spec"]["clusterIPs"] == ["None"]
    code, _, _ = await client.request(
        "PATCH",
        SERVICES + "/db",
        {"spec": {"clusterIP": "10.96.0.50", "clusterIPs": ["10.96.0.50"]}},
        content_type="application/merge-patch+json",
    )
    assert code == 422


async def test_endpoint_slices_with_addresses_or_ports_that_are_not_real_are_refused(
    client: Client,
) -> None:
    slices = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices"
    body = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": "bad"},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.88.0.5\nflush ruleset"]}, {"addresses": ["fd00::1"]}],
        "ports": [{"port": 99999}],
    }
    code, status, _ = await client.request("POST", slices, body)
    assert code == 422
    fields = {cause["field"] for cause in status["details"]["causes"]}
    assert fields == {"endpoints[0].addresses[0]", "endpoints[1].addresses[0]", "ports[0].port"}


async def test_a_session_affinity_timeout_past_a_day_is_refused(client: Client) -> None:
    body = service("web", sessionAffinity="ClientIP")
    body["spec"]["sessionAffinityConfig"] = {"clientIP": {"timeoutSeconds": 100000000}}
    code, status, _ = await client.request("POST", SERVICES, body)
    assert code == 422
    assert status["details"]["causes"][0]["field"] == (
        "spec.sessionAffinityConfig.clientIP.timeoutSeconds"
    )
