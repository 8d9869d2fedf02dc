"""The SPDY remotecommand client against containerd's CRI streaming server.

One containerd and one pod for the module, started as ``bench/pods_real.py``
starts its baseline (its ``with_runtime``, ``sandbox_config`` and
``container_config``, loaded from the script), on a bridge and pod CIDR of
their own. Each test asks the CRI for an exec URL and drives it through
``nodeless.streaming.spdy``: stdin half-closed with a FIN, stdout and stderr
apart, the v4 status with its exit code, a TTY resized, and more than a
64 KiB window of data each way (spdystream never sends WINDOW_UPDATE, so a
client that waited for send window would stall there).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import re
import sys
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import pytest_asyncio

from nodeless.instances.providers.cri import containerd, sandboximages
from nodeless.instances.providers.cri import runtime_pb2 as pb
from nodeless.streaming import spdy

POD_CIDR = "10.249.0.0/24"
BRIDGE = "nltest7"
BENCH = Path(__file__).resolve().parents[2] / "bench" / "pods_real.py"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(180),
    pytest.mark.skipif(os.geteuid() != 0, reason="containerd needs root"),
    pytest.mark.skipif(
        bool(containerd.missing_binaries()),
        reason="missing "
        + ", ".join(containerd.missing_binaries())
        + " (scripts/install-system-packages.sh)",
    ),
    pytest.mark.skipif(
        not sandboximages.BUSYBOX_PATH.is_file(), reason="busybox-static is not installed"
    ),
    pytest.mark.asyncio(loop_scope="module"),
]


def load_bench() -> ModuleType:
    """bench/pods_real.py is a script, not a package: loaded by path, with
    its directory importable as when it runs (it imports its siblings)."""
    if str(BENCH.parent) not in sys.path:
        sys.path.append(str(BENCH.parent))
    spec = importlib.util.spec_from_file_location("bench_pods_real", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@dataclass
class Pod:
    runtime: containerd.Containerd
    container_id: str

    async def exec_url(
        self, cmd: list[str], *, stdin: bool, stdout: bool = True, stderr: bool, tty: bool = False
    ) -> str:
        request = pb.ExecRequest(
            container_id=self.container_id,
            cmd=cmd,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            tty=tty,
        )
        return await self.runtime.client.exec(request)

    async def connect(
        self, cmd: list[str], *, stdin: bool, stdout: bool = True, stderr: bool, tty: bool = False
    ) -> spdy.RemoteCommand:
        url = await self.exec_url(cmd, stdin=stdin, stdout=stdout, stderr=stderr, tty=tty)
        return await spdy.connect_remotecommand(
            url, stdin=stdin, stdout=stdout, stderr=stderr, tty=tty, timeout=20
        )


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def pod() -> AsyncIterator[Pod]:
    bench = load_bench()
    workdir = Path(tempfile.mkdtemp(prefix="nlspdy-"))
    settings = containerd.ContainerdSettings(
        workdir / "containerd", pod_cidr=POD_CIDR, bridge=BRIDGE
    )
    ready: asyncio.Future[Pod] = asyncio.get_running_loop().create_future()
    finished = asyncio.Event()

    async def work(runtime: containerd.Containerd) -> None:
        made = bench.BaselinePod("spdy-exec", f"uid-spdy-{os.getpid()}", workdir / "pods")
        await asyncio.to_thread(made.set_up)
        config = bench.sandbox_config(made)
        sandbox_id = await runtime.client.run_pod_sandbox(config)
        container_id = await runtime.client.create_container(
            sandbox_id, bench.container_config(made), config
        )
        await runtime.client.start_container(container_id)
        ready.set_result(Pod(runtime, container_id))
        await finished.wait()  # the module's tests run meanwhile

    async def run() -> None:
        try:
            await bench.with_runtime(settings, work)
        except BaseException as e:
            if not ready.done():
                ready.set_exception(e)
            raise

    task = asyncio.create_task(run())
    try:
        yield await asyncio.wait_for(asyncio.shield(ready), timeout=120)
    finally:
        finished.set()
        try:
            await asyncio.wait_for(task, timeout=120)
        finally:
            await asyncio.to_thread(containerd.remove_network, BRIDGE)
            bench.remove_tree(workdir)  # kept if anything is still mounted under it


async def collect(command: spdy.RemoteCommand) -> tuple[bytes, bytes, dict[str, Any]]:
    out, err = await asyncio.wait_for(command.read_output(), timeout=30)
    status = await asyncio.wait_for(command.status(), timeout=30)
    return out, err, status


async def test_stdin_eof_stdout_stderr_and_a_nonzero_exit_code(pod: Pod) -> None:
    command = await pod.connect(["sh", "-c", "cat; echo err >&2; exit 3"], stdin=True, stderr=True)
    async with command:
        assert command.protocol == spdy.STREAM_PROTOCOL_V4
        await command.write_stdin(b"hello")
        await command.close_stdin()
        out, err, status = await collect(command)
    assert out == b"hello"
    assert err == b"err\n"
    assert status["status"] == "Failure"
    assert status["reason"] == "NonZeroExitCode"
    assert {"reason": "ExitCode", "message": "3"} in status["details"]["causes"]
    assert spdy.exit_code(status) == 3


async def test_true_succeeds(pod: Pod) -> None:
    async with await pod.connect(["true"], stdin=False, stderr=True) as command:
        out, err, status = await collect(command)
    assert (out, err) == (b"", b"")
    assert status["status"] == "Success"
    assert spdy.exit_code(status) == 0


async def test_a_tty_is_resized(pod: Pod) -> None:
    script = 'while read x; do [ "$x" = q ] && exit 0; stty size; done'
    command = await pod.connect(["sh", "-c", script], stdin=True, stderr=False, tty=True)
    async with command:
        assert set(command.streams) == {"error", "stdin", "stdout", "resize"}
        await command.resize(100, 37)
        seen = b""
        # The resize and stdin travel apart inside containerd, and a line
        # written before the exec's terminal is attached may be lost: ask
        # again until the shell answers with the new size.
        for _ in range(40):
            await command.write_stdin(b"\n")
            seen += await read_for(command.streams["stdout"], 0.5)
            if re.search(rb"^37 100\r?$", seen, re.M):
                break
        await command.write_stdin(b"q\n")
        rest, _, status = await collect(command)
    assert re.search(rb"^37 100\r?$", seen, re.M), seen
    assert status["status"] == "Success", (status, rest)


async def read_for(stream: spdy.SpdyStream, seconds: float) -> bytes:
    """What ``stream`` gives within ``seconds`` (stopping early at its end)."""
    seen = b""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            while chunk := await stream.read():
                seen += chunk
    return seen


async def test_more_than_a_window_each_way(pod: Pod) -> None:
    size = 300_000
    command = await pod.connect(
        ["sh", "-c", "wc -c; head -c 300000 /dev/zero"], stdin=True, stderr=True
    )
    async with command:
        await command.write_stdin(b"x" * size)
        await command.close_stdin()
        out, err, status = await collect(command)
    assert err == b""
    assert out.split(b"\n", 1)[0].strip() == str(size).encode()
    assert len(out.split(b"\n", 1)[1]) == size
    assert status["status"] == "Success"


async def test_a_refused_url_raises_upgrade_error(pod: Pod) -> None:
    url = await pod.exec_url(["true"], stdin=False, stderr=False)
    with pytest.raises(spdy.UpgradeError) as caught:
        await spdy.connect_remotecommand(
            url + "x", stdin=False, stdout=True, stderr=False, tty=False
        )
    assert caught.value.status == 404
