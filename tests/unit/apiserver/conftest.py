"""An in-process API server on the memory backend, plain HTTP, no authentication."""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest

from nodeless.apiserver import app
from nodeless.storage import memory


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime.datetime(2026, 11, 26, 12, 0, 0, tzinfo=datetime.UTC)

    def __call__(self) -> datetime.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += datetime.timedelta(seconds=seconds)


class Client:
    def __init__(self, session: aiohttp.ClientSession, base: str, server: app.ApiServer) -> None:
        self.session = session
        self.base = base
        self.server = server

    async def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str = "application/json",
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
    ) -> tuple[int, Any, aiohttp.ClientResponse]:
        data = raw if raw is not None else (orjson.dumps(body) if body is not None else None)
        hdrs = {"Content-Type": content_type, **(headers or {})}
        async with self.session.request(
            method, self.base + path, data=data, headers=hdrs, params=params
        ) as resp:
            text = await resp.read()
            try:
                parsed = orjson.loads(text) if text else None
            except orjson.JSONDecodeError:
                parsed = text.decode()
            return resp.status, parsed, resp

    async def revision(self) -> int:
        return await self.server.backend.current_revision()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def client(clock: FakeClock) -> AsyncIterator[Client]:
    server = app.ApiServer(memory.MemoryBackend(), port=0, tls=False, clock=clock)
    await server.start()
    async with aiohttp.ClientSession() as session:
        yield Client(session, server.url, server)
    await server.stop()


def configmap(name: str, namespace: str = "default", **data: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
        "data": dict(data),
    }


def deployment(name: str, replicas: int = 1, image: str = "busybox:1") -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "main", "image": image}]},
            },
        },
    }
