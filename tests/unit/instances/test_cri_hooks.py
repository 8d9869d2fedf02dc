"""Lifecycle hooks: which handler a container's hook names, and what running
it reports (exec and sleep here; HTTP against a real local server)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Sequence

from nodeless import clocks
from nodeless.instances.providers.cri import hooks

DESCRIBE = 'Container "app" in Pod "web_default(uid-1)"'


async def no_exec(command: Sequence[str], timeout: int) -> tuple[int, bytes]:
    raise AssertionError("no exec expected")


def test_a_hook_is_found_by_its_handler_and_absent_hooks_are_none() -> None:
    container = {
        "name": "app",
        "lifecycle": {
            "postStart": {"exec": {"command": ["touch", "/started"]}},
            "preStop": {"sleep": {"seconds": 5}},
        },
    }

    post_start = hooks.hook(container, hooks.POST_START)
    pre_stop = hooks.hook(container, hooks.PRE_STOP)

    assert post_start == hooks.Hook("postStart", "exec", {"command": ["touch", "/started"]})
    assert pre_stop == hooks.Hook("preStop", "sleep", {"seconds": 5})
    assert hooks.hook({"name": "app"}, hooks.PRE_STOP) is None
    assert hooks.hook({"lifecycle": {"preStop": {}}}, hooks.PRE_STOP) is None


async def test_a_failing_exec_hook_is_told_in_the_kubelets_words() -> None:
    seen: list[tuple[list[str], int]] = []

    async def runner(command: Sequence[str], timeout: int) -> tuple[int, bytes]:
        seen.append((list(command), timeout))
        return 2, b"no such file"

    hook = hooks.Hook(hooks.POST_START, "exec", {"command": ["cat", "/missing"]})

    result = await hooks.run(
        hook,
        pod_ip="",
        container={},
        exec_runner=runner,
        clock=clocks.FakeClock(),
        describe=DESCRIBE,
    )

    assert not result.success
    assert result.message == (
        'Exec lifecycle hook ([cat /missing]) for Container "app" in Pod '
        "\"web_default(uid-1)\" failed - error: command 'cat /missing' exited with 2: , "
        'message: "no such file"'
    )
    assert seen == [(["cat", "/missing"], hooks.NO_TIMEOUT)]


async def test_a_sleep_hook_waits_on_the_clock() -> None:
    clock = clocks.FakeClock()
    hook = hooks.Hook(hooks.PRE_STOP, "sleep", {"seconds": 3})

    running = asyncio.create_task(
        hooks.run(hook, pod_ip="", container={}, exec_runner=no_exec, clock=clock, describe="")
    )
    await clock.advance(2.9)
    assert not running.done()
    await clock.advance(0.1)

    assert (await running).success


async def test_an_http_hook_to_a_closed_port_fails_naming_its_path() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    hook = hooks.Hook(hooks.PRE_STOP, "httpGet", {"path": "/drain", "port": port})

    result = await hooks.run(
        hook,
        pod_ip="127.0.0.1",
        container={},
        exec_runner=no_exec,
        clock=clocks.FakeClock(),
        describe=DESCRIBE,
    )

    assert not result.success
    assert result.message.startswith(f"HTTP lifecycle hook (/drain) for {DESCRIBE} failed")
    assert "connection refused" in result.message
