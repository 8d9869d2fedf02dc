"""GET pods/{name}/log on the in-process API: options parsed and validated as
upstream, the container chosen as upstream, errors as Statuses, and the log
from the registered source as text (streamed with follow)."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import AsyncIterator
from typing import Any

import pytest
from multidict import MultiDict

from nodeless.api import errors
from nodeless.apiserver import endpoints
from tests.unit.apiserver.conftest import Client, FakeClock

PODS = "/api/v1/namespaces/default/pods"
NOW = datetime.datetime(2026, 11, 26, 12, 0, 0, tzinfo=datetime.UTC)


def pod(name: str, *containers: str, node: str = "zone-a", init: tuple[str, ...] = ()) -> Any:
    spec: dict[str, Any] = {"containers": [{"name": c, "image": "busybox:1"} for c in containers]}
    if init:
        spec["initContainers"] = [{"name": c, "image": "busybox:1"} for c in init]
    if node:
        spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def parse(**query: str) -> endpoints.PodLogOptions:
    return endpoints.parse_log_options(MultiDict(query), "p", NOW)


def test_options_are_parsed() -> None:
    options = parse(
        container="c",
        follow="true",
        previous="1",
        timestamps="true",
        tailLines="5",
        limitBytes="100",
        sinceSeconds="60",
    )
    assert options == endpoints.PodLogOptions(
        container="c",
        follow=True,
        previous=True,
        timestamps=True,
        tail_lines=5,
        since=NOW - datetime.timedelta(seconds=60),
        limit_bytes=100,
    )
    assert parse(sinceTime="2026-11-26T11:00:00Z").since == NOW - datetime.timedelta(hours=1)
    assert parse() == endpoints.PodLogOptions()


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"tailLines": "-1"}, "tailLines: Invalid value: -1: must be greater than or equal to 0"),
        ({"limitBytes": "0"}, "limitBytes: Invalid value: 0: must be greater than 0"),
        ({"sinceSeconds": "0"}, "sinceSeconds: Invalid value: 0: must be greater than 0"),
        (
            {"sinceSeconds": "5", "sinceTime": "2026-11-26T11:00:00Z"},
            "at most one of `sinceTime` or `sinceSeconds` may be specified",
        ),
    ],
)
def test_invalid_options_are_422(query: dict[str, str], message: str) -> None:
    with pytest.raises(errors.StatusError) as caught:
        parse(**query)
    assert caught.value.code == 422
    assert caught.value.message.startswith('PodLogOptions "p" is invalid: ')
    assert message in caught.value.message


@pytest.mark.parametrize("query", [{"tailLines": "x"}, {"sinceTime": "yesterday"}])
def test_malformed_options_are_400(query: dict[str, str]) -> None:
    with pytest.raises(errors.StatusError) as caught:
        parse(**query)
    assert caught.value.code == 400


def test_the_container_is_chosen_as_upstream() -> None:
    assert endpoints.log_container(pod("p", "main"), "") == "main"
    assert endpoints.log_container(pod("p", "a", "b", init=("i",)), "i") == "i"
    with pytest.raises(errors.StatusError) as caught:
        endpoints.log_container(pod("p", "a", "b", init=("i",)), "")
    assert caught.value.code == 400
    assert caught.value.message == (
        "a container name must be specified for pod p, choose one of: [i a b]"
    )
    with pytest.raises(errors.StatusError) as caught:
        endpoints.log_container(pod("p", "main"), "wrong")
    assert caught.value.message == "container wrong is not valid for pod p"


class FakeSource:
    """A registered log source: records its calls, serves ``chunks``."""

    def __init__(self, *chunks: bytes, error: errors.StatusError | None = None) -> None:
        self.chunks = chunks
        self.error = error
        self.calls: list[tuple[str, str, endpoints.PodLogOptions]] = []
        self.release = asyncio.Event()
        self.closed = asyncio.Event()

    async def __call__(
        self, namespace: str, name: str, options: endpoints.PodLogOptions
    ) -> AsyncIterator[bytes]:
        self.calls.append((namespace, name, options))
        if self.error is not None:
            raise self.error
        return self._stream(options.follow)

    async def _stream(self, follow: bool) -> AsyncIterator[bytes]:
        try:
            for chunk in self.chunks:
                yield chunk
            if follow:
                await self.release.wait()
                yield b"later\n"
        finally:
            self.closed.set()


async def test_logs_are_text_from_the_source(client: Client, clock: FakeClock) -> None:
    source = FakeSource(b"one\n", b"two\n")
    client.server.api.logs_source = source
    await client.request("POST", PODS, pod("p", "main"))
    status, body, resp = await client.request(
        "GET", f"{PODS}/p/log", params={"tailLines": "2", "timestamps": "true"}
    )
    assert status == 200, body
    assert body == "one\ntwo\n"
    assert resp.headers["Content-Type"].startswith("text/plain")
    [(namespace, name, options)] = source.calls
    assert (namespace, name) == ("default", "p")
    assert options.container == "main"
    assert options.tail_lines == 2 and options.timestamps


async def test_follow_streams_until_the_source_ends(client: Client) -> None:
    source = FakeSource(b"one\n")
    client.server.api.logs_source = source
    await client.request("POST", PODS, pod("p", "main"))
    url = f"{client.base}{PODS}/p/log"
    async with client.session.get(url, params={"follow": "true"}) as resp:
        assert resp.status == 200
        assert resp.headers.get("Transfer-Encoding") == "chunked"
        assert await resp.content.readline() == b"one\n"
        source.release.set()
        assert await resp.content.readline() == b"later\n"
        assert await resp.content.read() == b""
    await asyncio.wait_for(source.closed.wait(), 5)


async def test_a_client_that_goes_ends_the_follow(client: Client) -> None:
    source = FakeSource(b"one\n")
    client.server.api.logs_source = source
    await client.request("POST", PODS, pod("p", "main"))
    url = f"{client.base}{PODS}/p/log"
    async with client.session.get(url, params={"follow": "true"}) as resp:
        assert await resp.content.readline() == b"one\n"
        resp.close()
    await asyncio.wait_for(source.closed.wait(), 5)


async def test_errors_are_statuses(client: Client) -> None:
    waiting = errors.bad_request(
        'container "main" in pod "p" is waiting to start: ContainerCreating'
    )
    client.server.api.logs_source = FakeSource(error=waiting)
    status, body, _ = await client.request("GET", f"{PODS}/missing/log")
    assert status == 404
    assert body["message"] == 'pods "missing" not found'
    await client.request("POST", PODS, pod("p", "main"))
    await client.request("POST", PODS, pod("pair", "a", "b"))
    status, body, _ = await client.request("GET", f"{PODS}/p/log")
    assert (status, body["reason"], body["message"]) == (400, "BadRequest", waiting.message)
    status, body, _ = await client.request("GET", f"{PODS}/pair/log")
    assert status == 400
    assert (
        body["message"] == "a container name must be specified for pod pair, choose one of: [a b]"
    )
    status, body, _ = await client.request("GET", f"{PODS}/p/log", params={"container": "x"})
    assert (status, body["message"]) == (400, "container x is not valid for pod p")
    status, body, _ = await client.request("GET", f"{PODS}/p/log", params={"tailLines": "-1"})
    assert (status, body["reason"]) == (422, "Invalid")
    status, _, _ = await client.request("POST", f"{PODS}/p/log", {})
    assert status == 405


async def test_without_a_source_logs_are_unavailable(client: Client) -> None:
    await client.request("POST", PODS, pod("p", "main"))
    status, body, _ = await client.request("GET", f"{PODS}/p/log")
    assert status == 400
    assert "without an instance provider" in body["message"]


async def test_a_pod_not_on_a_node_has_an_empty_log(client: Client) -> None:
    source = FakeSource(b"never\n")
    client.server.api.logs_source = source
    await client.request("POST", PODS, pod("p", "main", node=""))
    status, body, _ = await client.request("GET", f"{PODS}/p/log")
    assert (status, body) == (200, None)
    assert source.calls == []
