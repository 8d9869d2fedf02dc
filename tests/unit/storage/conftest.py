"""Every storage test that takes ``backend`` runs once per implementation."""

from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator, Callable

import pytest

from nodeless.storage import logstructured, memory, sqlite

BackendFactory = Callable[..., logstructured.LogStructuredBackend]


@pytest.fixture(params=["memory", "sqlite"])
async def make_backend(
    request: pytest.FixtureRequest, tmp_path: pathlib.Path
) -> AsyncIterator[BackendFactory]:
    """Builds started-on-demand backends of one kind and closes them after the test."""
    made: list[logstructured.LogStructuredBackend] = []

    def make(**options: int) -> logstructured.LogStructuredBackend:
        backend: logstructured.LogStructuredBackend
        if request.param == "memory":
            backend = memory.MemoryBackend(**options)
        else:
            backend = sqlite.SqliteBackend(tmp_path / f"db{len(made)}.sqlite", **options)
        made.append(backend)
        return backend

    yield make
    for backend in made:
        await backend.close()


@pytest.fixture
async def backend(make_backend: BackendFactory) -> logstructured.LogStructuredBackend:
    """A started backend of each kind."""
    started = make_backend()
    await started.start()
    return started
