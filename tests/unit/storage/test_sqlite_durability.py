"""An acknowledged SQLite write survives the writing process being killed (SIGKILL)."""

from __future__ import annotations

import asyncio
import os
import pathlib
import signal
import sys

import pytest

from nodeless.storage import sqlite

# Writes keys one by one and prints each only after the backend acknowledged it.
WRITER = """
import asyncio, sys
from nodeless.storage import sqlite

async def main() -> None:
    backend = sqlite.SqliteBackend(sys.argv[1])
    await backend.start()
    i = 0
    while True:
        key = f"/registry/pods/default/web-{i}"
        kv = await backend.create(key, f"value-{i}".encode())
        print(key, kv.mod_revision, flush=True)
        i += 1

asyncio.run(main())
"""

ACKNOWLEDGED = 200


@pytest.mark.skipif(sys.platform == "win32", reason="needs SIGKILL")
async def test_acknowledged_writes_survive_sigkill(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "db.sqlite"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        WRITER,
        str(path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    acknowledged: list[tuple[str, int]] = []
    try:
        async with asyncio.timeout(15):
            while len(acknowledged) < ACKNOWLEDGED:
                line = await process.stdout.readline()
                if not line:
                    error = (await process.stderr.read()).decode()
                    pytest.fail(f"writer exited early: {error}")
                key, printed_revision = line.decode().split()
                acknowledged.append((key, int(printed_revision)))
    finally:
        if process.returncode is None:
            os.kill(process.pid, signal.SIGKILL)
        await process.wait()
    assert process.returncode == -signal.SIGKILL

    backend = sqlite.SqliteBackend(path)
    await backend.start()
    try:
        for i, (key, revision) in enumerate(acknowledged):
            kv = await backend.get(key)
            assert kv is not None, f"acknowledged {key} lost"
            assert (kv.value, kv.mod_revision) == (f"value-{i}".encode(), revision)
        last = acknowledged[-1][1]
        current = await backend.current_revision()
        assert current >= last
        assert (
            await backend.create("/registry/pods/default/after", b"")
        ).mod_revision == current + 1
    finally:
        await backend.close()
