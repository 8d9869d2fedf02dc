"""HttpApiClient speaks the apiserver's URL layout, verbs, patch types, watch
stream and Status errors: checked against an in-process server on the memory
backend (plain HTTP, or TLS with the kubeconfig `nodeless up` writes)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from nodeless.api import errors
from nodeless.apiserver import app, certificates
from nodeless.client import clients, httpclients, informers
from nodeless.storage import memory
from tests.unit.client.fake_apiclient import configmap

CONFIGMAPS = clients.resolve("v1", "ConfigMap")
DEPLOYMENTS = clients.resolve("apps/v1", "deployments")
PODS = clients.resolve("v1", "Pod")
NAMESPACES = clients.resolve("v1", "ns")
WAIT = 10.0  # a safety net for real I/O, not a timing assertion


@pytest.fixture
async def server() -> AsyncIterator[app.ApiServer]:
    server = app.ApiServer(memory.MemoryBackend(), port=0, tls=False)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
async def api(server: app.ApiServer) -> AsyncIterator[httpclients.HttpApiClient]:
    async with httpclients.HttpApiClient(server.url) as client:
        yield client


def deployment(name: str, replicas: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "main", "image": "busybox:1"}]},
            },
        },
    }


def pod(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"containers": [{"name": "main", "image": "busybox:1"}]},
    }


async def test_create_get_update_list_and_delete_round_trip(
    api: httpclients.HttpApiClient,
) -> None:
    created = await api.create(CONFIGMAPS, configmap("a", k="1"))
    assert created["metadata"]["uid"]

    fetched = await api.get(CONFIGMAPS, "default", "a")
    assert fetched["data"] == {"k": "1"}
    fetched["data"]["k"] = "2"
    updated = await api.update(CONFIGMAPS, fetched)
    assert updated["data"] == {"k": "2"}
    assert int(updated["metadata"]["resourceVersion"]) > int(created["metadata"]["resourceVersion"])

    listed = await api.list(CONFIGMAPS, "default")
    assert [clients.key_of(o) for o in listed.items] == ["default/a"]
    assert listed.items[0]["kind"] == "ConfigMap", "list items carry their type"
    assert int(listed.resource_version) >= int(updated["metadata"]["resourceVersion"])

    await api.delete(CONFIGMAPS, "default", "a")
    with pytest.raises(errors.StatusError) as gone:
        await api.get(CONFIGMAPS, "default", "a")
    assert gone.value.code == 404


async def test_list_pages_and_filters_by_label(api: httpclients.HttpApiClient) -> None:
    for i in range(5):
        cm = configmap(f"cm{i}")
        cm["metadata"]["labels"] = {"parity": "even" if i % 2 == 0 else "odd"}
        await api.create(CONFIGMAPS, cm)

    first = await api.list(CONFIGMAPS, "default", limit=2)
    second = await api.list(CONFIGMAPS, "default", limit=2, continue_token=first.continue_token)
    assert len(first.items) == 2 and first.continue_token
    assert first.remaining_item_count == 3
    assert {o["metadata"]["name"] for o in first.items + second.items} == {
        "cm0",
        "cm1",
        "cm2",
        "cm3",
    }
    odd = await api.list(CONFIGMAPS, "default", label_selector="parity=odd")
    assert sorted(o["metadata"]["name"] for o in odd.items) == ["cm1", "cm3"]
    by_name = await api.list(CONFIGMAPS, "", field_selector="metadata.name=cm4")
    assert [clients.key_of(o) for o in by_name.items] == ["default/cm4"]


async def test_every_patch_type_reaches_the_server(api: httpclients.HttpApiClient) -> None:
    await api.create(DEPLOYMENTS, deployment("web"))

    merged = await api.patch(DEPLOYMENTS, "default", "web", {"metadata": {"labels": {"a": "1"}}})
    assert merged["metadata"]["labels"] == {"a": "1"}
    strategic = await api.patch(
        DEPLOYMENTS,
        "default",
        "web",
        {"spec": {"template": {"spec": {"containers": [{"name": "side", "image": "busybox:2"}]}}}},
        patch_type="strategic",
    )
    names = [c["name"] for c in strategic["spec"]["template"]["spec"]["containers"]]
    assert sorted(names) == ["main", "side"], "strategic merge keys containers by name"
    json_patched = await api.patch(
        DEPLOYMENTS,
        "default",
        "web",
        [{"op": "replace", "path": "/spec/replicas", "value": 4}],
        patch_type="json",
    )
    assert json_patched["spec"]["replicas"] == 4
    applied = await api.patch(
        DEPLOYMENTS,
        "default",
        "web",
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default", "labels": {"b": "2"}},
        },
        patch_type="apply",
        options=clients.WriteOptions(field_manager="tester"),
    )
    assert applied["metadata"]["labels"] == {"a": "1", "b": "2"}
    managers = {m["manager"] for m in applied["metadata"]["managedFields"]}
    assert "tester" in managers


async def test_status_and_scale_go_through_their_subresources(
    api: httpclients.HttpApiClient,
) -> None:
    created = await api.create(DEPLOYMENTS, deployment("web", replicas=1))

    created["status"] = {"replicas": 1, "readyReplicas": 1}
    created["spec"]["replicas"] = 9
    with_status = await api.update_status(DEPLOYMENTS, created)
    assert with_status["status"]["readyReplicas"] == 1
    assert with_status["spec"]["replicas"] == 1, "a status update leaves the spec alone"

    scale = await api.get_subresource(DEPLOYMENTS, "default", "web", "scale")
    assert scale["kind"] == "Scale" and scale["spec"]["replicas"] == 1
    scale["spec"]["replicas"] = 3
    await api.update_subresource(DEPLOYMENTS, "default", "web", "scale", scale)
    patched = await api.patch(
        DEPLOYMENTS, "default", "web", {"spec": {"replicas": 5}}, subresource="scale"
    )
    assert patched["spec"]["replicas"] == 5
    assert (await api.get(DEPLOYMENTS, "default", "web"))["spec"]["replicas"] == 5


async def test_bind_assigns_a_pod_to_a_node_once(api: httpclients.HttpApiClient) -> None:
    await api.create(PODS, pod("p"))

    await api.bind("default", "p", "virtual-zone-a", annotations={"nodeless.io/spec": "small"})
    bound = await api.get(PODS, "default", "p")
    assert bound["spec"]["nodeName"] == "virtual-zone-a"
    assert bound["metadata"]["annotations"]["nodeless.io/spec"] == "small"
    with pytest.raises(errors.StatusError) as again:
        await api.bind("default", "p", "virtual-zone-b")
    assert (again.value.code, again.value.reason) == (409, "Conflict")


async def test_errors_carry_the_server_status(api: httpclients.HttpApiClient) -> None:
    with pytest.raises(errors.StatusError) as missing:
        await api.get(CONFIGMAPS, "default", "nope")
    assert (missing.value.code, missing.value.reason) == (404, "NotFound")
    assert (missing.value.name, missing.value.kind) == ("nope", "configmaps")
    assert missing.value.message == 'configmaps "nope" not found'

    first = await api.create(CONFIGMAPS, configmap("a"))
    with pytest.raises(errors.StatusError) as exists:
        await api.create(CONFIGMAPS, configmap("a"))
    assert (exists.value.code, exists.value.reason) == (409, "AlreadyExists")

    await api.update(CONFIGMAPS, {**first, "data": {"x": "1"}})
    with pytest.raises(errors.StatusError) as stale:
        await api.update(CONFIGMAPS, {**first, "data": {"x": "2"}})
    assert (stale.value.code, stale.value.reason) == (409, "Conflict")

    with pytest.raises(errors.StatusError) as invalid:
        await api.create(CONFIGMAPS, configmap("Bad_Name"))
    assert (invalid.value.code, invalid.value.reason) == (422, "Invalid")
    assert invalid.value.causes and invalid.value.causes[0].field == "metadata.name"


async def test_delete_honours_preconditions(api: httpclients.HttpApiClient) -> None:
    created = await api.create(CONFIGMAPS, configmap("a"))

    wrong = clients.DeleteOptions(preconditions=clients.Preconditions(uid="not-the-uid"))
    with pytest.raises(errors.StatusError) as refused:
        await api.delete(CONFIGMAPS, "default", "a", wrong)
    assert refused.value.code == 409
    right = clients.DeleteOptions(
        preconditions=clients.Preconditions(uid=created["metadata"]["uid"]),
        propagation_policy="Background",
    )
    await api.delete(CONFIGMAPS, "default", "a", right)
    assert (await api.list(CONFIGMAPS, "default")).items == []


async def test_dry_run_changes_nothing(api: httpclients.HttpApiClient) -> None:
    await api.create(CONFIGMAPS, configmap("a"), clients.WriteOptions(dry_run=True))

    assert (await api.list(CONFIGMAPS, "default")).items == []


async def test_cluster_scoped_resources_take_no_namespace(api: httpclients.HttpApiClient) -> None:
    ns = await api.create(
        NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}}
    )
    assert ns["metadata"]["name"] == "team-a"
    assert (await api.get(NAMESPACES, "", "team-a"))["kind"] == "Namespace"


async def test_watch_streams_changes_after_a_revision(api: httpclients.HttpApiClient) -> None:
    start = (await api.list(CONFIGMAPS, "default")).resource_version
    events = api.watch(CONFIGMAPS, "default", resource_version=start)

    await api.create(CONFIGMAPS, configmap("a"))
    await api.patch(CONFIGMAPS, "default", "a", {"data": {"k": "v"}})
    await api.delete(CONFIGMAPS, "default", "a")
    seen = []
    async with asyncio.timeout(WAIT):
        async for event in events:
            seen.append((event.type, clients.key_of(event.object)))
            if event.type == "DELETED":
                break
    await events.aclose()

    assert seen == [("ADDED", "default/a"), ("MODIFIED", "default/a"), ("DELETED", "default/a")]


async def test_watch_sends_bookmarks_when_asked(
    server: app.ApiServer, api: httpclients.HttpApiClient
) -> None:
    server.api.bookmark_interval = 0.01
    start = (await api.list(CONFIGMAPS, "default")).resource_version
    events = api.watch(CONFIGMAPS, "default", resource_version=start, allow_bookmarks=True)

    async with asyncio.timeout(WAIT):
        first = await anext(events)
    await events.aclose()

    assert first.type == "BOOKMARK"
    assert int(first.resource_version) >= int(start)


async def test_watch_from_an_expired_revision_raises_gone(
    api: httpclients.HttpApiClient,
) -> None:
    events = api.watch(CONFIGMAPS, "default", resource_version="1")

    with pytest.raises(clients.Gone) as gone:
        async with asyncio.timeout(WAIT):
            await anext(events)
    assert (gone.value.code, gone.value.reason) == (410, "Expired")
    assert clients.is_gone(gone.value)


async def test_an_informer_follows_the_server(api: httpclients.HttpApiClient) -> None:
    await api.create(CONFIGMAPS, configmap("before"))
    changes: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
    informer = informers.Informer(api, CONFIGMAPS, namespace="default")
    informer.add_handlers(
        on_add=lambda o: changes.put_nowait(("add", clients.key_of(o))),
        on_update=lambda old, new: changes.put_nowait(("update", new["data"]["k"])),
        on_delete=lambda o: changes.put_nowait(("delete", clients.key_of(o))),
    )

    async with informer, asyncio.timeout(WAIT):
        await informer.wait_synced()
        await api.create(CONFIGMAPS, configmap("after", k="1"))
        await api.patch(CONFIGMAPS, "default", "after", {"data": {"k": "2"}})
        await api.delete(CONFIGMAPS, "default", "before")
        seen = [await changes.get() for _ in range(4)]

    assert seen == [
        ("add", "default/before"),
        ("add", "default/after"),
        ("update", "2"),
        ("delete", "default/before"),
    ]
    assert list(informer.store) == ["default/after"]


async def test_from_kubeconfig_uses_the_ca_and_client_certificate(tmp_path: Path) -> None:
    server = app.ApiServer(memory.MemoryBackend(), port=0, pki_dir=tmp_path / "pki")
    await server.start()
    try:
        assert server.pki is not None
        kubeconfig = tmp_path / "kubeconfig"
        certificates.write_kubeconfig(server.pki, kubeconfig, server.url)

        async with httpclients.HttpApiClient.from_kubeconfig(kubeconfig) as api:
            assert api.namespace == "default"
            ns = await api.get(NAMESPACES, "", "default")
            assert ns["metadata"]["name"] == "default"

        anonymous = httpclients.HttpApiClient(
            server.url, kubeconfigs_ssl_without_client_cert(kubeconfig)
        )
        async with anonymous:
            with pytest.raises(errors.StatusError) as refused:
                await anonymous.get(NAMESPACES, "", "default")
            assert (refused.value.code, refused.value.reason) == (401, "Unauthorized")
    finally:
        await server.stop()


def kubeconfigs_ssl_without_client_cert(kubeconfig: Path) -> Any:
    from nodeless.client import kubeconfigs

    creds = kubeconfigs.load(kubeconfig)
    return kubeconfigs.Credentials(server=creds.server, ca_pem=creds.ca_pem).ssl_context()


async def test_a_bearer_token_is_sent(tmp_path: Path) -> None:
    seen: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization", ""))
        return web.json_response({"kind": "ConfigMap", "metadata": {"name": "a"}})

    async with running(handler) as url:
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(
            "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
            f"clusters: [{{name: k, cluster: {{server: '{url}'}}}}]\n"
            "users: [{name: u, user: {token: s3cret}}]\n"
            "contexts: [{name: c, context: {cluster: k, user: u, namespace: team}}]\n"
        )
        async with httpclients.HttpApiClient.from_kubeconfig(kubeconfig) as api:
            await api.get(CONFIGMAPS, "team", "a")
            assert api.namespace == "team"

    assert seen == ["Bearer s3cret"]


async def test_an_error_without_a_status_body_still_has_code_and_reason() -> None:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(status=503, text="<html>upstream down</html>")

    async with running(handler) as url, httpclients.HttpApiClient(url) as api:
        with pytest.raises(errors.StatusError) as failed:
            await api.get(CONFIGMAPS, "default", "a")

    assert (failed.value.code, failed.value.reason) == (503, "ServiceUnavailable")
    assert "upstream down" in failed.value.message


async def test_an_unreachable_server_raises_unreachable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with httpclients.HttpApiClient(f"http://127.0.0.1:{port}") as api:
        with pytest.raises(clients.Unreachable):
            await api.get(CONFIGMAPS, "default", "a")


class running:
    """A throwaway aiohttp server answering every request with ``handler``."""

    def __init__(self, handler: Any) -> None:
        self.app = web.Application()
        self.app.router.add_route("*", "/{tail:.*}", handler)
        self.runner = web.AppRunner(self.app)

    async def __aenter__(self) -> str:
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = self.runner.addresses[0][1]
        return f"http://127.0.0.1:{port}"

    async def __aexit__(self, *exc_info: object) -> None:
        await self.runner.cleanup()
