"""Container lifecycle hooks (postStart, preStop) as the kubelet runs them.

A hook's handler is an exec (through CRI ``ExecSync``), an httpGet from the
host to the pod, a tcpSocket (deprecated upstream, accepted: a connect), or
a ``sleep``. The handlers are the probes' (``probing``); what differs is the
time they get and what a failure means, which the provider decides: a failed
postStart kills the container, a preStop only delays the stop and is cut
short by the grace period.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from nodeless import clocks
from nodeless.instances.providers.cri import probing

POST_START = "postStart"
PRE_STOP = "preStop"
# exec hooks without a deadline run until done; the runtime needs a number
NO_TIMEOUT = 0
HTTP_TIMEOUT = 10  # seconds; the kubelet's HTTP hook client has no deadline of its own


@dataclasses.dataclass(frozen=True)
class Hook:
    name: str  # POST_START | PRE_STOP
    handler: str  # "exec" | "httpGet" | "tcpSocket" | "sleep"
    action: Mapping[str, Any]


def hook(container: Mapping[str, Any], name: str) -> Hook | None:
    """The container's ``lifecycle.<name>`` hook, None when it has none."""
    spec = (container.get("lifecycle") or {}).get(name)
    if not isinstance(spec, Mapping):
        return None
    for handler in ("exec", "httpGet", "tcpSocket", "sleep"):
        if isinstance(spec.get(handler), Mapping):
            return Hook(name, handler, spec[handler])
    return None


async def run(
    hook: Hook,
    *,
    pod_ip: str,
    container: Mapping[str, Any],
    exec_runner: probing.ExecRunner,
    clock: clocks.Clock,
    describe: str,
) -> probing.Result:
    """Runs ``hook`` once; a failure's message is the kubelet's
    (``Exec lifecycle hook ([...]) for Container "c" in Pod "p_ns(uid)"
    failed - error: ..., message: "..."``). ``describe`` names the container
    and pod that way. Cancelling (the grace period ran out) stops it."""
    if hook.handler == "sleep":
        await clock.sleep(max(0, int(hook.action.get("seconds") or 0)))
        return probing.Result(True)
    if hook.handler == "exec":
        command = [str(c) for c in hook.action.get("command") or []]
        try:
            code, output = await exec_runner(command, NO_TIMEOUT)
        except TimeoutError:
            code, output = -1, b"timed out"
        if code == 0:
            return probing.Result(True)
        return probing.Result(
            False,
            f"Exec lifecycle hook ([{' '.join(command)}]) for {describe} failed - error: "
            f"command '{' '.join(command)}' exited with {code}: , "
            f'message: "{output.decode(errors="replace")}"',
        )
    as_probe = probing.Probe(hook.name, hook.handler, hook.action, timeout=HTTP_TIMEOUT)
    result = await probing.check(
        as_probe, pod_ip=pod_ip, container=container, exec_runner=exec_runner
    )
    if result.success:
        return result
    path = hook.action.get("path") or "/"
    kind = "HTTP" if hook.handler == "httpGet" else "TCP"
    what = path if hook.handler == "httpGet" else hook.action.get("port")
    return probing.Result(
        False,
        f"{kind} lifecycle hook ({what}) for {describe} failed - error: {result.message}, "
        'message: ""',
    )
