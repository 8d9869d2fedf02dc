"""Shared by the networking tests: an in-process API server and a loopback
client to it (no sockets, the same admission and validation as HTTP)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from nodeless.apiserver import app, loopback
from nodeless.client import clients
from nodeless.storage import memory


@pytest.fixture
async def client() -> AsyncIterator[clients.ApiClient]:
    server = app.ApiServer(memory.MemoryBackend(), port=0, tls=False)
    await server.start()
    try:
        yield loopback.LoopbackApiClient(server.api)
    finally:
        await server.stop()
