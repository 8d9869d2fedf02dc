"""The CRI provider on real containerd, runc and CNI, pulling from real registries.

Each test runs its own containerd on a private bridge and pod CIDR (so a
Nodeless running on this machine is not disturbed) and its providers under a
cgroup root of their own; every instance is deleted through the provider
afterwards, then containerd is stopped with whatever is left removed. Images
come from local ``docker-registry`` processes (one open, one with htpasswd
authentication) started once per module and fed with images built here from
the host's busybox. Back-offs run on a ``FakeClock`` where a test follows
them step by step, or on short policies elsewhere: nothing waits 10 seconds.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import functools
import ipaddress
import json
import os
import shutil
import socket
import stat
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest

from nodeless import clocks
from nodeless.instances.providers import base
from nodeless.instances.providers.cri import (
    backoffs,
    cgroups,
    clients,
    containerd,
    gpudevices,
    localregistries,
    mounts,
    podconfigs,
    registryauth,
    registrypush,
    sandboximages,
)
from nodeless.instances.providers.cri import provider as cri
from nodeless.instances.providers.cri import runtime_pb2 as pb

POD_CIDR = "10.251.0.0/24"
BRIDGE = "nltest1"
State = base.InstanceState
SHORT = backoffs.BackOffPolicy(0.2, 1.0, reset_after=600.0)
USER, PASSWORD = "alice", "s3cret"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(120),
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
    pytest.mark.skipif(not localregistries.available(), reason="docker-registry is not installed"),
]


class Recorder:
    """Every pushed status, in order."""

    def __init__(self) -> None:
        self.statuses: list[base.InstanceStatus] = []

    def __call__(self, status: base.InstanceStatus) -> None:
        self.statuses.append(status)

    def states(self, instance_id: str) -> list[base.InstanceState]:
        """The states ``instance_id`` went through, repeats folded."""
        states: list[base.InstanceState] = []
        for status in self.statuses:
            if status.instance_id == instance_id and (not states or states[-1] != status.state):
                states.append(status.state)
        return states

    def last(self, instance_id: str) -> base.InstanceStatus:
        return [s for s in self.statuses if s.instance_id == instance_id][-1]


# --- registries ---


Registry = localregistries.LocalRegistry


@pytest.fixture(scope="module")
def applets() -> tuple[str, ...]:
    return sandboximages.all_applets()


@pytest.fixture(scope="module")
def registries(
    tmp_path_factory: pytest.TempPathFactory, applets: tuple[str, ...]
) -> Iterator[tuple[Registry, Registry]]:
    """An open registry with ``busybox:1`` and ``nonroot:1`` (user 1000), and
    one requiring a password with ``private/busybox:1``."""
    root = tmp_path_factory.mktemp("registries")
    busybox = sandboximages.read_busybox()
    open_registry = localregistries.start(root / "open")
    private = localregistries.start(root / "private", credentials=(USER, PASSWORD))
    try:
        image = sandboximages.build_image(
            sandboximages.BusyboxImage("busybox", cmd=("sh",), applets=applets), busybox
        )
        nonroot = sandboximages.build_image(
            sandboximages.BusyboxImage("nonroot", cmd=("sh",), applets=applets, user="1000"),
            busybox,
        )

        async def push() -> None:
            await registrypush.push(image, open_registry.host, "busybox", "1")
            await registrypush.push(nonroot, open_registry.host, "nonroot", "1")
            await registrypush.push(
                image, private.host, "private/busybox", "1", username=USER, password=PASSWORD
            )

        asyncio.run(push())
        yield open_registry, private
    finally:
        open_registry.stop()
        private.stop()


# --- containerd and providers ---


@dataclass
class Cri:
    """One containerd for one test, and the providers made on it."""

    runtime: containerd.Containerd
    data_dir: Path
    registry: Registry
    private: Registry
    cgroup_root: str
    providers: list[cri.CriProvider] = field(default_factory=list)

    def provider(self, clock: clocks.Clock | None = None, **options: Any) -> cri.CriProvider:
        options.setdefault("crash_backoff", SHORT)
        options.setdefault("pull_backoff", SHORT)
        options.setdefault("relist_interval", 0.1)
        made = cri.CriProvider(
            self.runtime.client,
            self.data_dir / "cri",
            clock or clocks.SystemClock(),
            cgroup_root=self.cgroup_root,
            **options,
        )
        self.providers.append(made)
        return made

    def pod_cgroup(self, controller: str, uid: str) -> Path:
        return Path("/sys/fs/cgroup") / controller / self.cgroup_root.strip("/") / f"pod{uid}"


@pytest.fixture
async def crienv(registries: tuple[Registry, Registry]) -> AsyncIterator[Cri]:
    data_dir = Path(tempfile.mkdtemp(prefix="nl-crip-"))
    settings = containerd.ContainerdSettings(
        data_dir / "containerd", pod_cidr=POD_CIDR, bridge=BRIDGE
    )
    runtime = containerd.Containerd(settings)
    open_registry, private = registries
    env = Cri(runtime, data_dir, open_registry, private, f"/nodeless-test-{uuid.uuid4().hex[:8]}")
    try:
        await runtime.start()
        for registry in registries:
            containerd.write_registry_host(
                settings, registry.host, f"http://{registry.host}", skip_verify=True
            )
        yield env
    finally:
        try:
            for made in reversed(env.providers):
                if made.closed:
                    continue
                for status in await made.list():
                    await made.delete(status.instance_id, 0)
                await until(_emptied(made), timeout=30)
                await made.close()
        finally:
            # env.runtime: a test may have restarted containerd under a new object.
            await env.runtime.stop(remove_pods=True)
            for tree in cgroups.hierarchies():
                root = tree.mount / env.cgroup_root.strip("/")
                if root.exists():
                    for sub in sorted(root.rglob("*"), key=lambda p: len(p.parts), reverse=True):
                        if sub.is_dir():
                            sub.rmdir()
                    root.rmdir()
            if not mounts.under(data_dir):
                shutil.rmtree(data_dir, ignore_errors=True)
            await asyncio.to_thread(containerd.remove_network, BRIDGE)


def _emptied(made: cri.CriProvider) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return not await made.list()

    return check


async def until(
    check: Callable[[], Awaitable[bool]], *, timeout: float = 30.0, interval: float = 0.05
) -> None:
    """Waits (real time) until ``check`` holds; fails after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


def status_is(
    made: cri.CriProvider, instance_id: str, predicate: Callable[[base.InstanceStatus], bool]
) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        status = await made.get(instance_id)
        return status is not None and predicate(status)

    return check


async def current(made: cri.CriProvider, instance_id: str) -> base.InstanceStatus:
    status = await made.get(instance_id)
    assert status is not None
    return status


def pod(
    name: str,
    containers: Sequence[dict[str, Any]],
    *,
    init: Sequence[dict[str, Any]] = (),
    restart_policy: str = "Always",
    **spec: Any,
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "default",
            "uid": f"uid-{name}-{uuid.uuid4().hex[:6]}",
            "labels": {"app": name},
        },
        "spec": {
            "restartPolicy": restart_policy,
            "nodeName": "nodeless-zone-a",
            "serviceAccountName": "default",
            "initContainers": list(init),
            "containers": list(containers),
            **spec,
        },
    }


def container(name: str, image: str, script: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": image, "command": ["sh", "-c", script], **extra}


def request(
    instance_id: str, manifest: dict[str, Any], *, vcpu: float = 0.25, memory_gib: float = 0.5
) -> base.InstanceRequest:
    return base.InstanceRequest(
        instance_id=instance_id,
        pod=manifest,
        zone="zone-a",
        spec_name=f"{vcpu}-{memory_gib}Gi",
        vcpu=vcpu,
        memory_gib=memory_gib,
    )


def cri_id(status: base.ContainerStatus) -> str:
    return status.container_id.split("://", 1)[1]


async def read_logs(made: cri.CriProvider, instance_id: str, name: str, **options: Any) -> bytes:
    return b"".join([chunk async for chunk in await made.logs(instance_id, name, **options)])


# --- running ---


async def test_pod_pulled_from_the_local_registry_runs_with_an_ip_in_the_cidr_and_logs(
    crienv: Cri,
) -> None:
    made = crienv.provider()
    recorder = Recorder()
    made.subscribe(recorder)
    image = crienv.registry.image("busybox:1")
    manifest = pod(
        "web", [container("app", image, "echo hello; sleep 0.2; echo oops >&2; sleep 1000")]
    )

    created = await made.create(request("i-web", manifest))
    await until(status_is(made, "i-web", lambda s: s.state is State.RUNNING))

    status = await current(made, "i-web")
    assert all(isinstance(made, p) for p in (base.Provider, base.Notifier, base.LogsCapable))
    assert created.state is State.PENDING
    assert recorder.states("i-web") == [State.PENDING, State.RUNNING]
    assert ipaddress.ip_address(status.ip) in ipaddress.ip_network(POD_CIDR)
    [app] = status.containers
    assert (app.state, app.ready, app.started, app.restart_count) == ("running", True, True, 0)
    assert app.container_id.startswith("containerd://")
    assert app.image_id.startswith(f"{crienv.registry.host}/busybox@sha256:")
    assert await crienv.runtime.client.image_status(image) is not None
    await until(lambda: _has_logs(made, "i-web", "app"))
    assert await read_logs(made, "i-web", "app") == b"hello\noops\n"
    assert await read_logs(made, "i-web", "app", tail_lines=1) == b"oops\n"
    timestamped = await read_logs(made, "i-web", "app", timestamps=True)
    assert [line.split(b" ", 1)[1] for line in timestamped.splitlines()] == [b"hello", b"oops"]
    [sandbox] = await crienv.runtime.client.list_pod_sandbox()
    assert sandbox.labels[podconfigs.LABEL_INSTANCE] == "i-web"
    assert sandbox.metadata.uid == status.pod_uid


async def _has_logs(made: cri.CriProvider, instance_id: str, name: str) -> bool:
    return (await read_logs(made, instance_id, name)).count(b"\n") >= 2


async def test_followed_logs_stream_until_the_container_exits(crienv: Cri) -> None:
    made = crienv.provider()
    image = crienv.registry.image("busybox:1")
    script = "for i in 1 2 3; do echo line $i; sleep 0.3; done"
    await made.create(
        request("i-logs", pod("logs", [container("app", image, script)], restart_policy="Never"))
    )
    await until(status_is(made, "i-logs", lambda s: s.containers[0].state != "waiting"))

    followed = await read_logs(made, "i-logs", "app", follow=True)

    assert followed == b"line 1\nline 2\nline 3\n"
    assert (await current(made, "i-logs")).state is State.SUCCEEDED


async def test_missing_image_goes_from_err_image_pull_to_image_pull_back_off(
    crienv: Cri,
) -> None:
    clock = clocks.FakeClock()
    made = crienv.provider(clock, pull_backoff=backoffs.IMAGE_PULL)
    recorder = Recorder()
    made.subscribe(recorder)
    missing = crienv.registry.image("missing:1")
    await made.create(request("i-pull", pod("pull", [container("app", missing, "true")])))

    def reason_is(reason: str) -> Callable[[], Awaitable[bool]]:
        return status_is(made, "i-pull", lambda s: s.containers[0].reason == reason)

    await until(reason_is(cri.ERR_IMAGE_PULL))
    failed = await current(made, "i-pull")
    await clock.advance(cri.PULL_ERROR_HOLD)
    await until(reason_is(cri.IMAGE_PULL_BACK_OFF))
    backing_off = await current(made, "i-pull")
    await clock.advance(backoffs.IMAGE_PULL.initial - cri.PULL_ERROR_HOLD)
    await until(reason_is(cri.ERR_IMAGE_PULL))
    await clock.advance(cri.PULL_ERROR_HOLD)
    await until(reason_is(cri.IMAGE_PULL_BACK_OFF))

    assert failed.state is State.PENDING
    assert failed.reason == cri.ERR_IMAGE_PULL
    assert "not found" in failed.containers[0].message
    assert backing_off.containers[0].message == f'Back-off pulling image "{missing}"'
    reasons = [s.containers[0].reason for s in recorder.statuses]
    assert reasons[-4:] == [
        cri.ERR_IMAGE_PULL,
        cri.IMAGE_PULL_BACK_OFF,
        cri.ERR_IMAGE_PULL,
        cri.IMAGE_PULL_BACK_OFF,
    ]
    assert all(s.state is State.PENDING for s in recorder.statuses)


async def test_pull_policy_never_waits_for_an_image_that_is_not_present(crienv: Cri) -> None:
    made = crienv.provider()
    image = crienv.registry.image("busybox:1")
    manifest = pod("never", [container("app", image, "true", imagePullPolicy="Never")])

    await made.create(request("i-never", manifest))
    await until(
        status_is(made, "i-never", lambda s: s.containers[0].reason == cri.ERR_IMAGE_NEVER_PULL)
    )

    status = await current(made, "i-never")
    assert status.state is State.PENDING
    assert "is not present with pull policy of Never" in status.containers[0].message
    assert await crienv.runtime.client.image_status(image) is None


async def test_private_registry_needs_the_pull_secret(crienv: Cri) -> None:
    host = crienv.private.host
    auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    secret = {
        "type": "kubernetes.io/dockerconfigjson",
        "data": {
            ".dockerconfigjson": base64.b64encode(
                json.dumps({"auths": {host: {"auth": auth}}}).encode()
            ).decode()
        },
    }
    asked: list[tuple[str, tuple[str, ...]]] = []

    async def credentials(namespace: str, names: Sequence[str]) -> list[registryauth.DockerConfig]:
        asked.append((namespace, tuple(names)))
        return [registryauth.docker_config_from_secret(secret)] if "regcred" in names else []

    made = crienv.provider(credentials=credentials)
    image = crienv.private.image("private/busybox:1")
    anonymous = pod("anon", [container("app", image, "sleep 1000")])
    with_secret = pod(
        "authed",
        [container("app", image, "sleep 1000")],
        imagePullSecrets=[{"name": "regcred"}],
    )

    recorder = Recorder()
    made.subscribe(recorder)

    await made.create(request("i-anon", anonymous))
    await made.create(request("i-authed", with_secret))
    await until(status_is(made, "i-authed", lambda s: s.state is State.RUNNING))
    await until(lambda: _pushed_reason(recorder, "i-anon", cri.ERR_IMAGE_PULL))

    [refused, *_] = [
        s.containers[0]
        for s in recorder.statuses
        if s.instance_id == "i-anon" and s.containers[0].reason == cri.ERR_IMAGE_PULL
    ]
    assert "401 Unauthorized" in refused.message
    assert asked == [("default", ("regcred",))]


async def test_an_image_cache_pull_puts_the_image_in_containerd_and_removal_waits_for_its_pods(
    crienv: Cri,
) -> None:
    made = crienv.provider()
    image = crienv.private.image("private/busybox:1")
    auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    config = {"auths": {crienv.private.host: {"auth": auth}}}
    with pytest.raises(base.ProviderError, match="401 Unauthorized"):
        await made.pull_image(image, [])
    resolved = await made.pull_image(image, [config])
    assert resolved.startswith("sha256:")
    assert await crienv.runtime.client.image_status(image) is not None
    # In the content store: a pod that may never pull runs from it.
    manifest = pod("cached", [container("app", image, "sleep 1000", imagePullPolicy="Never")])
    await made.create(request("i-cached", manifest))
    await until(status_is(made, "i-cached", lambda s: s.state is State.RUNNING))
    # Released by its cache: kept while the pod runs, removed once it is gone.
    kept = not await made.remove_image(image)
    await made.delete("i-cached", 0)
    await until(lambda: _gone(made, "i-cached"))
    assert kept and await made.remove_image(image)
    assert await crienv.runtime.client.image_status(image) is None
    assert not await made.remove_image(image)  # already gone


async def _pushed_reason(recorder: Recorder, instance_id: str, reason: str) -> bool:
    return any(
        s.instance_id == instance_id and s.containers[0].reason == reason for s in recorder.statuses
    )


async def test_init_containers_run_in_order_before_the_app_container(crienv: Cri) -> None:
    made = crienv.provider()
    recorder = Recorder()
    made.subscribe(recorder)
    image = crienv.registry.image("busybox:1")
    shared = [{"name": "work", "mountPath": "/work"}]
    manifest = pod(
        "ordered",
        [container("app", image, "cat /work/order; sleep 1000", volumeMounts=shared)],
        init=[
            container("first", image, "sleep 0.3; echo first >> /work/order", volumeMounts=shared),
            container("second", image, "echo second >> /work/order", volumeMounts=shared),
        ],
        volumes=[{"name": "work", "emptyDir": {}}],
    )

    await made.create(request("i-init", manifest))
    await until(status_is(made, "i-init", lambda s: s.state is State.RUNNING))
    await until(lambda: _has_logs(made, "i-init", "app"))

    status = await current(made, "i-init")
    assert status.initialized
    assert [(c.name, c.state, c.exit_code, c.reason, c.ready) for c in status.init_containers] == [
        ("first", "terminated", 0, "Completed", True),
        ("second", "terminated", 0, "Completed", True),
    ]
    assert await read_logs(made, "i-init", "app") == b"first\nsecond\n"
    first, second = status.init_containers
    assert first.finished_at is not None and second.started_at is not None
    assert first.finished_at <= second.started_at
    initializing = [s for s in recorder.statuses if s.ip and not s.initialized]
    assert initializing and all(s.state is State.PENDING for s in initializing)
    assert all(s.containers[0].reason == cri.POD_INITIALIZING for s in initializing)


async def test_an_app_image_removed_while_init_containers_run_is_pulled_again(
    crienv: Cri,
) -> None:
    """Image presence is asked ahead only for the containers that start with
    the sandbox: a later container asks when it starts, so an answer given
    before its image went cannot leave it failing to create."""
    made = crienv.provider()
    events: list[base.InstanceEvent] = []
    made.subscribe_events(events.append)
    init_image = crienv.registry.image("busybox:1")
    app_image = crienv.registry.image("nonroot:1")  # IfNotPresent: a tag, not latest
    for image in (init_image, app_image):
        await made.pull_image(image, [])
    manifest = pod(
        "regone",
        [container("app", app_image, "sleep 1000")],
        init=[container("wait", init_image, "sleep 2")],
    )

    await made.create(request("i-regone", manifest))
    await until(
        status_is(made, "i-regone", lambda s: s.init_containers[0].state == "running"),
    )
    await crienv.runtime.client.remove_image(app_image)
    await until(status_is(made, "i-regone", lambda s: s.state is State.RUNNING))

    pulled = [e.message for e in events if e.reason == "Pulled"]
    assert pulled[0] == f'Container image "{init_image}" already present on machine'
    assert pulled[1].startswith(f'Successfully pulled image "{app_image}"')
    assert not [e for e in events if e.reason == "Failed"]


async def test_container_exiting_3_under_never_fails_with_reason_error_and_its_message(
    crienv: Cri,
) -> None:
    made = crienv.provider()
    image = crienv.registry.image("busybox:1")
    manifest = pod(
        "job",
        [
            container("file", image, "echo 'disk full' > /dev/termination-log; exit 3"),
            container(
                "fallback",
                image,
                "echo last words; exit 1",
                terminationMessagePolicy="FallbackToLogsOnError",
            ),
        ],
        restart_policy="Never",
    )

    await made.create(request("i-job", manifest))
    await until(status_is(made, "i-job", lambda s: s.state.terminal))

    status = await current(made, "i-job")
    assert status.state is State.FAILED
    assert status.finished_at is not None
    by_name = {c.name: c for c in status.containers}
    assert (by_name["file"].state, by_name["file"].exit_code, by_name["file"].reason) == (
        "terminated",
        3,
        "Error",
    )
    assert by_name["file"].message == "disk full\n"
    assert (by_name["fallback"].exit_code, by_name["fallback"].message) == (1, "last words\n")
    assert all(c.restart_count == 0 and not c.ready for c in status.containers)
    # a finished pod's sandbox is stopped (its IP released), its containers kept for logs
    await until(lambda: _sandboxes_are(crienv, pb.SANDBOX_NOTREADY))
    assert len(await crienv.runtime.client.list_containers()) == 2


async def _sandboxes_are(env: Cri, state: int) -> bool:
    sandboxes = await env.runtime.client.list_pod_sandbox()
    return bool(sandboxes) and all(s.state == state for s in sandboxes)


async def test_restart_always_backs_off_in_crash_loop_with_a_growing_restart_count(
    crienv: Cri,
) -> None:
    clock = clocks.FakeClock()
    made = crienv.provider(clock, crash_backoff=backoffs.CRASH_LOOP)
    recorder = Recorder()
    made.subscribe(recorder)
    image = crienv.registry.image("busybox:1")
    script = 'echo "run $(cat /proc/uptime)"; exit 1'
    await made.create(request("i-crash", pod("crash", [container("app", image, script)])))

    def waiting_after(restarts: int) -> Callable[[], Awaitable[bool]]:
        return status_is(
            made,
            "i-crash",
            lambda s: (
                s.containers[0].reason == cri.CRASH_LOOP_BACK_OFF
                and s.containers[0].restart_count == restarts
            ),
        )

    await until(waiting_after(0))
    first = await current(made, "i-crash")
    await clock.advance(10)
    await until(waiting_after(1))
    second = await current(made, "i-crash")
    await clock.advance(20)
    await until(waiting_after(2))
    third = await current(made, "i-crash")

    assert first.state is State.RESTARTING
    assert first.reason == cri.CRASH_LOOP_BACK_OFF
    assert first.containers[0].message.startswith("back-off 10s restarting failed container=app")
    assert second.containers[0].message.startswith("back-off 20s")
    assert third.containers[0].message.startswith("back-off 40s")
    last = third.containers[0].last_terminated
    assert last is not None
    assert (last["exitCode"], last["reason"]) == (1, "Error")
    counts = [s.containers[0].restart_count for s in recorder.statuses]
    assert counts == sorted(counts)
    assert not any(s.state.terminal for s in recorder.statuses)
    current_log = await read_logs(made, "i-crash", "app")
    previous_log = await read_logs(made, "i-crash", "app", previous=True)
    assert current_log.startswith(b"run ") and previous_log.startswith(b"run ")
    assert current_log != previous_log
    # the kubelet keeps the latest container and the one before it
    containers = await crienv.runtime.client.list_containers()
    assert sorted(c.metadata.attempt for c in containers) == [1, 2]


async def test_delete_kills_what_ignores_sigterm_after_the_grace_period_and_removes_all(
    crienv: Cri,
) -> None:
    made = crienv.provider()
    recorder = Recorder()
    made.subscribe(recorder)
    image = crienv.registry.image("busybox:1")
    manifest = pod(
        "stubborn",
        [
            container(
                "app",
                image,
                "trap '' TERM; sleep 1000",
                volumeMounts=[
                    {"name": "scratch", "mountPath": "/scratch"},
                    {"name": "memory", "mountPath": "/memory"},
                ],
            )
        ],
        volumes=[
            {"name": "scratch", "emptyDir": {}},
            {"name": "memory", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}},
        ],
    )
    await made.create(request("i-del", manifest))
    await until(status_is(made, "i-del", lambda s: s.state is State.RUNNING))
    running = await current(made, "i-del")
    uid = running.pod_uid
    memory_dir = (
        crienv.data_dir / "cri" / "pods" / uid / "volumes" / "kubernetes.io~empty-dir" / "memory"
    )
    assert str(memory_dir) in mounts.under(crienv.data_dir)
    assert crienv.pod_cgroup("memory", uid).is_dir()

    await made.delete("i-del", 1)
    terminating = await current(made, "i-del")
    await made.delete("i-del", 1)  # idempotent
    await until(lambda: _gone(made, "i-del"))

    assert terminating.state is State.TERMINATING
    assert recorder.states("i-del")[-2:] == [State.TERMINATING, State.FAILED]
    final = recorder.last("i-del")
    [app] = final.containers
    assert (app.state, app.exit_code, app.reason) == ("terminated", 137, "Error")
    assert final.finished_at is not None
    assert [s.state for s in recorder.statuses].count(State.TERMINATING) == 1
    assert await crienv.runtime.client.list_pod_sandbox() == []
    assert await crienv.runtime.client.list_containers() == []
    for controller in ("memory", "cpu", "pids"):
        assert not crienv.pod_cgroup(controller, uid).exists()
    assert mounts.under(crienv.data_dir / "cri") == []
    assert not (crienv.data_dir / "cri" / "pods" / uid).exists()
    assert list((crienv.data_dir / "cri" / "logs").iterdir()) == []


async def test_closing_lets_a_deletion_under_way_finish_leaving_no_volume_mounted(
    crienv: Cri,
) -> None:
    made = crienv.provider()
    image = crienv.registry.image("busybox:1")
    stubborn = container(
        "app",
        image,
        "trap '' TERM; sleep 1000",
        volumeMounts=[{"name": "memory", "mountPath": "/memory"}],
    )
    manifest = pod(
        "closing",
        [stubborn],
        volumes=[{"name": "memory", "emptyDir": {"medium": "Memory"}}],
    )
    await made.create(request("i-closing", manifest))
    await until(status_is(made, "i-closing", lambda s: s.state is State.RUNNING))
    pod_dir = crienv.data_dir / "cri" / "pods" / (await current(made, "i-closing")).pod_uid
    mounted = mounts.under(pod_dir)

    await made.delete("i-closing", 2)  # the container holds out for the grace period
    await made.close()  # meanwhile, nodeless up is told to stop

    assert mounted
    assert mounts.under(pod_dir) == []
    assert not pod_dir.exists()
    assert await crienv.runtime.client.list_pod_sandbox() == []


async def _gone(made: cri.CriProvider, instance_id: str) -> bool:
    return await made.get(instance_id) is None


async def test_every_pods_stop_signal_goes_at_once_whatever_the_teardown_slots(
    crienv: Cri,
) -> None:
    # one teardown slot: were the stop signals in it, the second pod ignoring
    # SIGTERM would get its own only when the first's 60 s of grace were over
    made = crienv.provider(parallel_teardowns=1)
    image = crienv.registry.image("busybox:1")
    deaf = container("app", image, "trap 'echo TERM' TERM; while true; do sleep 1; done")
    polite = container("app", image, "trap 'exit 0' TERM; sleep 1000 & wait")
    pods = {"deaf-1": deaf, "deaf-2": deaf, "polite": polite}
    for name, app in pods.items():
        await made.create(request(f"i-{name}", pod(name, [app])))
    for name in pods:
        await until(status_is(made, f"i-{name}", lambda s: s.state is State.RUNNING))

    for name in pods:
        await made.delete(f"i-{name}", 60)

    async def told(instance_id: str) -> bool:
        return b"TERM" in await read_logs(made, instance_id, "app")

    await until(lambda: _gone(made, "i-polite"))
    for instance_id in ("i-deaf-1", "i-deaf-2"):
        await until(functools.partial(told, instance_id))
        assert (await current(made, instance_id)).state is State.TERMINATING
    for instance_id in ("i-deaf-1", "i-deaf-2"):
        await made.delete(instance_id, 0)  # a shorter grace period wins
    for instance_id in ("i-deaf-1", "i-deaf-2"):
        await until(functools.partial(_gone, made, instance_id))


async def test_delete_stops_a_process_that_exits_on_sigterm_with_its_code(crienv: Cri) -> None:
    made = crienv.provider()
    recorder = Recorder()
    made.subscribe(recorder)
    image = crienv.registry.image("busybox:1")
    script = "trap 'exit 143' TERM; sleep 1000 & wait"
    await made.create(request("i-term", pod("polite", [container("app", image, script)])))
    await until(status_is(made, "i-term", lambda s: s.state is State.RUNNING))

    await made.delete("i-term", 60)
    await until(lambda: _gone(made, "i-term"))

    [app] = recorder.last("i-term").containers
    assert app.exit_code == 143


async def test_env_values_field_refs_and_resource_refs_are_visible_in_the_container(
    crienv: Cri,
) -> None:
    made = crienv.provider()
    image = crienv.registry.image("busybox:1")

    def field(path: str) -> dict[str, Any]:
        return {"valueFrom": {"fieldRef": {"fieldPath": path}}}

    def resource(name: str, divisor: str) -> dict[str, Any]:
        return {"valueFrom": {"resourceFieldRef": {"resource": name, "divisor": divisor}}}

    env = [
        {"name": "NAME", "value": "world"},
        {"name": "GREETING", "value": "hello $(NAME) $$(NAME)"},
        {"name": "POD_NAME", **field("metadata.name")},
        {"name": "POD_NAMESPACE", **field("metadata.namespace")},
        {"name": "POD_UID", **field("metadata.uid")},
        {"name": "POD_IP", **field("status.podIP")},
        {"name": "HOST_IP", **field("status.hostIP")},
        {"name": "APP", **field("metadata.labels['app']")},
        {"name": "NODE", **field("spec.nodeName")},
        {"name": "SERVICE_ACCOUNT", **field("spec.serviceAccountName")},
        {"name": "CPU_MILLIS", **resource("limits.cpu", "1m")},
        {"name": "MEMORY_MI", **resource("limits.memory", "1Mi")},
    ]
    manifest = pod(
        "envy",
        [
            container(
                "app",
                image,
                "echo $GREETING; sleep 1000",
                env=env,
                workingDir="/tmp",
                resources={"limits": {"memory": "64Mi"}},
            )
        ],
    )
    await made.create(request("i-env", manifest))
    await until(status_is(made, "i-env", lambda s: s.state is State.RUNNING))
    status = await current(made, "i-env")

    result = await crienv.runtime.client.exec_sync(cri_id(status.containers[0]), ["env"])
    seen = dict(line.split("=", 1) for line in result.stdout.decode().splitlines())
    pwd = await crienv.runtime.client.exec_sync(cri_id(status.containers[0]), ["pwd"])

    assert {k: seen.get(k) for k in [v["name"] for v in env]} == {
        "NAME": "world",
        "GREETING": "hello world $(NAME)",
        "POD_NAME": "envy",
        "POD_NAMESPACE": "default",
        "POD_UID": status.pod_uid,
        "POD_IP": status.ip,
        "HOST_IP": status.ip,
        "APP": "envy",
        "NODE": "nodeless-zone-a",
        "SERVICE_ACCOUNT": "default",
        "CPU_MILLIS": "250",
        "MEMORY_MI": "64",
    }
    assert pwd.stdout == b"/tmp\n"


async def test_memory_and_cpu_limits_are_in_the_pod_and_container_cgroups(crienv: Cri) -> None:
    made = crienv.provider()
    image = crienv.registry.image("busybox:1")
    manifest = pod(
        "sized",
        [
            container("small", image, "sleep 1000", resources={"limits": {"memory": "64Mi"}}),
            container("big", image, "sleep 1000"),
        ],
    )
    await made.create(request("i-sized", manifest, vcpu=0.5, memory_gib=0.5))
    await until(status_is(made, "i-sized", lambda s: s.state is State.RUNNING))
    status = await current(made, "i-sized")
    small, big = status.containers
    pod_memory = crienv.pod_cgroup("memory", status.pod_uid)
    pod_cpu = crienv.pod_cgroup("cpu", status.pod_uid)

    inside = await crienv.runtime.client.exec_sync(
        cri_id(small), ["cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes"]
    )

    assert int(inside.stdout) == 64 * 2**20
    assert int((pod_memory / cri_id(small) / "memory.limit_in_bytes").read_text()) == 64 * 2**20
    assert int((pod_memory / cri_id(big) / "memory.limit_in_bytes").read_text()) == 2**29
    assert int((pod_memory / "memory.limit_in_bytes").read_text()) == 2**29
    assert int((pod_cpu / "cpu.cfs_quota_us").read_text()) == 50_000
    assert int((pod_cpu / cri_id(big) / "cpu.cfs_quota_us").read_text()) == 50_000
    assert int((pod_cpu / cri_id(big) / "cpu.cfs_period_us").read_text()) == 100_000


class _LosingOomEvents:
    """The runtime's client as containerd 1.6 answers when it has lost a
    container's OOM event (containerd#8893): the kill reads as "Error"."""

    def __init__(self, client: clients.CriClient) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def container_status(self, container_id: str, **options: Any) -> Any:
        reply = await self._client.container_status(container_id, **options)
        if reply.status.reason == "OOMKilled":
            reply.status.reason = "Error"
        return reply


async def ended_alone(made: cri.CriProvider, manifest: dict[str, Any]) -> base.ContainerStatus:
    """The final status of a one-container pod that runs once."""
    instance_id = f"i-{manifest['metadata']['name']}"
    await made.create(request(instance_id, manifest))
    await until(status_is(made, instance_id, lambda s: s.state.terminal))
    status = await current(made, instance_id)
    assert status.state is State.FAILED
    [app] = status.containers
    return app


@pytest.mark.parametrize("runtime_loses_the_event", [False, True], ids=["told", "lost"])
async def test_a_container_over_its_memory_limit_is_oom_killed(
    crienv: Cri, runtime_loses_the_event: bool
) -> None:
    made = crienv.provider()
    if runtime_loses_the_event:
        made.client = cast(clients.CriClient, _LosingOomEvents(made.client))
    image = crienv.registry.image("busybox:1")
    hungry = container(
        "hungry",
        image,
        "dd if=/dev/zero of=/dev/null bs=64M count=1",
        resources={"limits": {"memory": "16Mi"}},
    )

    app = await ended_alone(made, pod("hungry", [hungry], restart_policy="Never"))

    assert (app.state, app.reason, app.exit_code) == ("terminated", "OOMKilled", 137)


async def test_a_container_killed_by_sigkill_not_by_the_oom_killer_exits_with_error(
    crienv: Cri,
) -> None:
    made = crienv.provider()
    image = crienv.registry.image("busybox:1")
    suicidal = container(
        "suicidal",
        image,
        "kill -9 $$$$",  # "$$" is the API's escape of "$"
        resources={"limits": {"memory": "16Mi"}},
    )
    # the pause process is PID 1 then: PID 1 itself is immune to a SIGKILL from inside
    manifest = pod("kill", [suicidal], restart_policy="Never", shareProcessNamespace=True)

    app = await ended_alone(made, manifest)

    assert (app.state, app.reason, app.exit_code) == ("terminated", "Error", 137)


async def test_security_context_user_read_only_root_and_proc_masks_apply_and_non_root_is_checked(
    crienv: Cri,
) -> None:
    made = crienv.provider()
    image = crienv.registry.image("busybox:1")
    nonroot_image = crienv.registry.image("nonroot:1")
    locked = pod(
        "locked",
        [
            container(
                "app",
                image,
                "sleep 1000",
                securityContext={
                    "runAsUser": 1234,
                    "runAsGroup": 5678,
                    "readOnlyRootFilesystem": True,
                    "allowPrivilegeEscalation": False,
                },
            )
        ],
    )
    root_refused = pod(
        "rooted",
        [container("app", image, "sleep 1000")],
        securityContext={"runAsNonRoot": True},
    )
    nonroot = pod(
        "nonroot",
        [container("app", nonroot_image, "sleep 1000")],
        securityContext={"runAsNonRoot": True},
    )

    for instance_id, manifest in (
        ("i-locked", locked),
        ("i-root", root_refused),
        ("i-nonroot", nonroot),
    ):
        await made.create(request(instance_id, manifest))
    await until(status_is(made, "i-locked", lambda s: s.state is State.RUNNING))
    await until(status_is(made, "i-nonroot", lambda s: s.state is State.RUNNING))
    await until(
        status_is(
            made,
            "i-root",
            lambda s: s.containers[0].reason == podconfigs.CREATE_CONTAINER_CONFIG_ERROR,
        )
    )

    exec_sync = crienv.runtime.client.exec_sync
    locked_id = cri_id((await current(made, "i-locked")).containers[0])
    ids = await exec_sync(locked_id, ["id", "-u"])
    groups = await exec_sync(locked_id, ["id", "-g"])
    write = await exec_sync(locked_id, ["touch", "/probe"])
    no_new_privs = await exec_sync(locked_id, ["grep", "NoNewPrivs", "/proc/self/status"])
    firmware = await exec_sync(locked_id, ["ls", "-A", "/sys/firmware"])
    sysrq = await exec_sync(locked_id, ["sh", "-c", "grep ' /proc/sys ' /proc/mounts"])
    nonroot_id = cri_id((await current(made, "i-nonroot")).containers[0])
    nonroot_uid = await exec_sync(nonroot_id, ["id", "-u"])
    refused = await current(made, "i-root")

    assert (ids.stdout, groups.stdout) == (b"1234\n", b"5678\n")
    assert write.exit_code != 0 and b"Read-only file system" in write.stderr
    assert no_new_privs.stdout.split() == [b"NoNewPrivs:", b"1"]
    # masked as the kubelet asks: /sys/firmware an empty tmpfs, /proc/sys read-only
    assert (firmware.exit_code, firmware.stdout) == (0, b"")
    assert sysrq.stdout.split()[3].split(b",")[0] == b"ro"
    assert nonroot_uid.stdout == b"1000\n"
    assert refused.state is State.PENDING
    assert "runAsNonRoot and image will run as root" in refused.containers[0].message


async def test_unsupported_volume_fails_the_instance_with_volume_not_supported(
    crienv: Cri,
) -> None:
    made = crienv.provider()
    image = crienv.registry.image("busybox:1")
    manifest = pod(
        "configured",
        [container("app", image, "sleep 1000")],
        volumes=[{"name": "config", "nfs": {"server": "nfs.example", "path": "/"}}],
    )

    await made.create(request("i-vol", manifest))
    await until(status_is(made, "i-vol", lambda s: s.state.terminal))

    status = await current(made, "i-vol")
    assert status.state is State.FAILED
    assert status.reason == cri.VOLUME_NOT_SUPPORTED
    assert 'volume "config" (nfs) is not supported yet' in status.message
    assert await crienv.runtime.client.list_pod_sandbox() == []


# --- adoption ---


async def test_a_second_provider_adopts_the_running_instance_without_a_second_sandbox(
    crienv: Cri,
) -> None:
    first = crienv.provider()
    image = crienv.registry.image("busybox:1")
    script = "while [ ! -f /tmp/done ]; do sleep 0.1; done; echo finished"
    manifest = pod("durable", [container("app", image, script)], restart_policy="Never")
    created = request("i-durable", manifest)
    await first.create(created)
    await until(status_is(first, "i-durable", lambda s: s.state is State.RUNNING))
    before = await current(first, "i-durable")
    await first.close()

    second = crienv.provider()
    recorder = Recorder()
    second.subscribe(recorder)
    await second.start()
    [listed] = await second.list()
    again = await second.create(created)
    adopted = await second.adopt(created, before)
    sandboxes = await crienv.runtime.client.list_pod_sandbox()
    await crienv.runtime.client.exec_sync(cri_id(before.containers[0]), ["touch", "/tmp/done"])
    await until(status_is(second, "i-durable", lambda s: s.state.terminal))
    finished = await current(second, "i-durable")

    assert listed.state is State.RUNNING
    assert (listed.ip, listed.pod_uid, listed.created_at) == (
        before.ip,
        before.pod_uid,
        before.created_at,
    )
    assert listed.containers[0].container_id == before.containers[0].container_id
    assert listed.containers[0].started_at == before.containers[0].started_at
    assert again == listed and adopted == listed
    assert len(sandboxes) == 1
    assert finished.state is State.SUCCEEDED
    assert recorder.states("i-durable") == [State.SUCCEEDED]
    assert await read_logs(second, "i-durable", "app") == b"finished\n"


async def test_a_restarted_provider_removes_pod_files_no_instance_owns_and_keeps_its_own(
    crienv: Cri,
) -> None:
    first = crienv.provider()
    image = crienv.registry.image("busybox:1")
    manifest = pod("kept", [container("app", image, "sleep 3600")])
    await first.create(request("i-kept", manifest))
    await until(status_is(first, "i-kept", lambda s: s.state is State.RUNNING))
    kept_uid = (await current(first, "i-kept")).pod_uid
    await first.close()
    # what a provider killed mid-set-up leaves: a volume mounted, a hosts
    # file, logs and a pod cgroup with limits, but no sandbox
    root = crienv.data_dir / "cri"
    orphan = "0f0f0f0f-0000-4000-8000-000000000000"
    volume = root / "pods" / orphan / "volumes" / "kubernetes.io~empty-dir" / "cache"
    volume.mkdir(parents=True)
    mounts.mount_tmpfs(volume, "mode=0755")
    (volume / "data").write_text("left behind")
    (root / "pods" / orphan / "etc-hosts").write_text("127.0.0.1 localhost\n")
    orphan_logs = root / "logs" / f"default_gone_{orphan}"
    (orphan_logs / "app").mkdir(parents=True)
    (orphan_logs / "app" / "0.log").write_text("old\n")
    orphan_secrets = root / "memory" / orphan / "kubernetes.io~secret" / "creds"
    orphan_secrets.mkdir(parents=True)
    (orphan_secrets / "password").write_text("s3cret")
    cgroups.PodCgroup.for_pod(crienv.cgroup_root, orphan).create(memory_bytes=64 << 20)
    assert crienv.pod_cgroup("memory", orphan).is_dir()

    second = crienv.provider()
    await second.start()
    [adopted] = await second.list()

    assert adopted.instance_id == "i-kept" and adopted.state is State.RUNNING
    assert mounts.under(root / "pods" / orphan) == []
    assert not (root / "pods" / orphan).exists()
    assert not orphan_logs.exists()
    assert not (root / "memory" / orphan).exists()
    assert not crienv.pod_cgroup("memory", orphan).exists()
    assert (root / "pods" / kept_uid).is_dir()
    assert [d.name.rpartition("_")[2] for d in (root / "logs").iterdir()] == [kept_uid]
    assert crienv.pod_cgroup("memory", kept_uid).is_dir()


async def test_adopted_instances_keep_their_results_and_restart_counts(crienv: Cri) -> None:
    first = crienv.provider()
    image = crienv.registry.image("busybox:1")
    job = pod("job", [container("app", image, "echo done")], restart_policy="Never")
    crashing = pod("crashing", [container("app", image, "exit 2")])
    await first.create(request("i-job", job))
    await first.create(request("i-crashing", crashing))
    await until(status_is(first, "i-job", lambda s: s.state is State.SUCCEEDED))
    await until(status_is(first, "i-crashing", lambda s: s.containers[0].restart_count >= 1))
    await until(lambda: _sandboxes_stopped(crienv, 1))
    finished = await current(first, "i-job")
    await first.close()
    counted = (await current(first, "i-crashing")).containers[0].restart_count

    second = crienv.provider()
    job_again = await current(second, "i-job")
    crashing_again = await current(second, "i-crashing")
    await until(
        status_is(second, "i-crashing", lambda s: s.containers[0].restart_count > counted + 1)
    )

    assert (job_again.state, job_again.finished_at) == (State.SUCCEEDED, finished.finished_at)
    assert job_again.containers[0].exit_code == 0
    assert await read_logs(second, "i-job", "app") == b"done\n"
    assert crashing_again.containers[0].restart_count >= counted
    assert crashing_again.state in (State.RUNNING, State.RESTARTING)
    assert len(await crienv.runtime.client.list_pod_sandbox()) == 2


# --- GPUs ---


def _stand_in_gpu_host(root: Path) -> gpudevices.HostGpus:
    """A host with two "GPUs": character devices with /dev/null's numbers
    (no GPU here), a driver library and a tool where the driver puts them."""
    dev, lib, bin_ = root / "dev", root / "lib", root / "bin"
    for d in (dev, lib, bin_):
        d.mkdir(parents=True)
    for name, minor in (("nvidia0", 3), ("nvidia1", 3), ("nvidiactl", 5)):
        os.mknod(dev / name, stat.S_IFCHR | 0o666, os.makedev(1, minor))
    (lib / "libcuda.so.1").write_text("stand-in driver\n")
    (bin_ / "nvidia-smi").write_text("#!/bin/sh\necho stand-in nvidia-smi\n")
    (bin_ / "nvidia-smi").chmod(0o755)
    return gpudevices.discover(dev, library_dirs=[lib], binary_dirs=[bin_], cdi_dirs=[])


def _gpu_request(instance_id: str, image: str, script: str) -> base.InstanceRequest:
    app = container("app", image, script, resources={"limits": {"nvidia.com/gpu": "1"}})
    manifest = pod(instance_id.removeprefix("i-"), [app], restart_policy="Never")
    return dataclasses.replace(request(instance_id, manifest), spec_name="gpu-1xT4", gpu_count=1)


async def test_gpu_instances_get_their_own_host_gpu_and_the_driver_files_across_adoption(
    crienv: Cri,
) -> None:
    host = _stand_in_gpu_host(crienv.data_dir / "host")
    first = crienv.provider(host_gpus=host)
    image = crienv.registry.image("busybox:1")
    script = (
        "ls /dev | grep nvidia | tr '\\n' ' '; echo; test -c /dev/nvidia$NVIDIA_VISIBLE_DEVICES"
        " && echo char-device; echo x > /dev/nvidia$NVIDIA_VISIBLE_DEVICES && echo writable;"
        " cat /usr/local/nvidia/lib64/libcuda.so.1; /usr/local/nvidia/bin/nvidia-smi;"
        " (echo x > /usr/local/nvidia/lib64/libcuda.so.1) 2>/dev/null || echo read-only;"
        " while [ ! -f /tmp/done ]; do sleep 0.1; done"
    )
    await first.create(_gpu_request("i-gpu-a", image, script))
    await first.create(_gpu_request("i-gpu-b", image, script))
    with pytest.raises(base.CapacityError, match="only 0 of this host's 2 GPUs are free"):
        await first.create(_gpu_request("i-gpu-c", image, script))
    for instance_id in ("i-gpu-a", "i-gpu-b"):
        await until(status_is(first, instance_id, lambda s: s.state is State.RUNNING))
        await until(functools.partial(_logged, first, instance_id, b"read-only"))
    logs = {i: await read_logs(first, i, "app") for i in ("i-gpu-a", "i-gpu-b")}
    await first.close()

    second = crienv.provider(host_gpus=host)
    await second.start()
    with pytest.raises(base.CapacityError):  # the adopted instances still hold both
        await second.create(_gpu_request("i-gpu-c", image, script))
    running = await current(second, "i-gpu-a")
    await crienv.runtime.client.exec_sync(cri_id(running.containers[0]), ["touch", "/tmp/done"])
    await until(status_is(second, "i-gpu-a", lambda s: s.state.terminal))
    await second.delete("i-gpu-a", 0)
    await until(lambda: _gone(second, "i-gpu-a"))
    await second.create(_gpu_request("i-gpu-c", image, "echo $NVIDIA_VISIBLE_DEVICES"))
    await until(status_is(second, "i-gpu-c", lambda s: s.state.terminal))

    assert logs["i-gpu-a"] == (
        b"nvidia0 nvidiactl \nchar-device\nwritable\nstand-in driver\n"
        b"stand-in nvidia-smi\nread-only\n"
    )
    assert logs["i-gpu-b"].startswith(b"nvidia1 nvidiactl \n")
    assert await read_logs(second, "i-gpu-c", "app") == b"0\n"


async def test_a_gpu_instance_on_a_host_without_gpus_fails_before_any_container(
    crienv: Cri,
) -> None:
    made = crienv.provider(host_gpus=gpudevices.HostGpus())
    image = crienv.registry.image("busybox:1")

    with pytest.raises(base.ProviderError, match="this host has no NVIDIA GPU") as refused:
        await made.create(_gpu_request("i-gpu", image, "true"))

    assert not isinstance(refused.value, base.CapacityError)
    assert await made.list() == []
    assert await crienv.runtime.client.list_pod_sandbox() == []


async def _logged(made: cri.CriProvider, instance_id: str, text: bytes) -> bool:
    return text in await read_logs(made, instance_id, "app")


async def _sandboxes_stopped(env: Cri, count: int) -> bool:
    sandboxes = await env.runtime.client.list_pod_sandbox()
    return sum(s.state == pb.SANDBOX_NOTREADY for s in sandboxes) == count


async def test_supervision_carries_on_across_a_containerd_restart(crienv: Cri) -> None:
    made = crienv.provider()
    image = crienv.registry.image("busybox:1")
    script = "while [ ! -f /tmp/done ]; do sleep 0.1; done; exit 4"
    manifest = pod("patient", [container("app", image, script)], restart_policy="Never")
    await made.create(request("i-patient", manifest))
    await until(status_is(made, "i-patient", lambda s: s.state is State.RUNNING))
    running = await current(made, "i-patient")
    assert crienv.runtime.settings is not None

    await crienv.runtime.stop()  # pods keep running in their shims
    await asyncio.sleep(0.5)  # the provider meets an absent runtime for a while
    crienv.runtime = containerd.Containerd(crienv.runtime.settings)
    await crienv.runtime.start()
    await crienv.runtime.client.exec_sync(cri_id(running.containers[0]), ["touch", "/tmp/done"])
    await until(status_is(made, "i-patient", lambda s: s.state.terminal))

    [app] = (await current(made, "i-patient")).containers
    assert (app.state, app.exit_code, app.container_id) == (
        "terminated",
        4,
        running.containers[0].container_id,
    )


async def test_an_instance_whose_sandbox_is_gone_is_started_again_on_adopt(crienv: Cri) -> None:
    made = crienv.provider()
    image = crienv.registry.image("busybox:1")
    manifest = pod("phoenix", [container("app", image, "sleep 1000")])
    last = base.InstanceStatus(
        instance_id="i-phoenix",
        namespace="default",
        pod_name="phoenix",
        pod_uid=manifest["metadata"]["uid"],
        zone="zone-a",
        state=State.RUNNING,
        containers=[base.ContainerStatus(name="app", image=image, restart_count=2)],
    )

    adopted = await made.adopt(request("i-phoenix", manifest), last)
    await until(status_is(made, "i-phoenix", lambda s: s.state is State.RUNNING))

    assert adopted.state is State.PENDING
    assert (await current(made, "i-phoenix")).containers[0].restart_count == 2
    assert len(await crienv.runtime.client.list_pod_sandbox()) == 1


async def test_a_restarted_provider_and_containerd_adopt_the_pods_they_left_running() -> None:
    """``nodeless up --provider cri`` stopped and started again: the
    provider's ``close`` stops its containerd but not the pods, and the next
    start finds them, unchanged, without creating anything."""
    data_dir = Path(tempfile.mkdtemp(prefix="nl-up-"))
    bridge, cidr = "nltest3", "10.253.0.0/24"
    cgroup_root = f"/nodeless-test-{uuid.uuid4().hex[:8]}"
    demo_image = "registry.local/nodeless/httpd:1.0"
    options: dict[str, Any] = {"pod_cidr": cidr, "bridge": bridge, "cgroup_root": cgroup_root}
    manifest = pod("demo", [container("web", demo_image, "echo up; sleep 1000")])
    try:
        first = await cri.start_cri_provider(
            data_dir, clocks.SystemClock(), preload_images=(demo_image,), **options
        )
        await first.create(request("i-demo", manifest))
        await until(status_is(first, "i-demo", lambda s: s.state is State.RUNNING))
        before = await current(first, "i-demo")
        socket_path = data_dir / "containerd" / "containerd.sock"
        await first.close()
        containerd_gone = not socket_path.exists() or not _answers(socket_path)

        second = await cri.start_cri_provider(data_dir, clocks.SystemClock(), **options)
        try:
            [after] = await second.list()
            sandboxes = await second.client.list_pod_sandbox()
            logs = await read_logs(second, "i-demo", "web")
            await second.delete("i-demo", 0)
            await until(lambda: _gone(second, "i-demo"))
        finally:
            await second.close()
    finally:
        settings = containerd.ContainerdSettings(
            data_dir / "containerd", pod_cidr=cidr, bridge=bridge
        )
        cleaner = containerd.Containerd(settings)
        await cleaner.start()
        await cleaner.stop(remove_pods=True)
        for tree in cgroups.hierarchies():
            root = tree.mount / cgroup_root.strip("/")
            for sub in sorted(root.rglob("*"), key=lambda p: len(p.parts), reverse=True):
                if sub.is_dir():
                    sub.rmdir()
            if root.exists():
                root.rmdir()
        if not mounts.under(data_dir):
            shutil.rmtree(data_dir, ignore_errors=True)
        await asyncio.to_thread(containerd.remove_network, bridge)

    assert containerd_gone
    assert (after.state, after.ip) == (State.RUNNING, before.ip)
    assert after.containers[0].container_id == before.containers[0].container_id
    assert len(sandboxes) == 1
    assert logs == b"up\n"


def _answers(socket_path: Path) -> bool:
    with socket.socket(socket.AF_UNIX) as s:
        try:
            s.connect(str(socket_path))
        except OSError:
            return False
    return True


def test_an_adopted_pod_set_up_with_a_tmpfs_per_secret_keeps_using_it(tmp_path: Path) -> None:
    """Pods set up before secrets moved to the shared tmpfs had a tmpfs per
    secret or projected volume under their own directory; adopted, their
    volumes are refreshed there, where their containers' mounts point."""
    paths = podconfigs.PodPaths(tmp_path, "default", "old", "uid-old")
    [creds, config] = podconfigs.volumes(
        {
            "spec": {
                "volumes": [
                    {"name": "creds", "secret": {"secretName": "db"}},
                    {"name": "config", "configMap": {"name": "settings"}},
                ]
            }
        }
    )
    legacy = podconfigs.pod_volume_dir(paths, creds)
    legacy.mkdir(parents=True)

    before = cri._adopted_volume_dir(paths, creds)
    mounts.mount_tmpfs(legacy, "mode=0755")
    try:
        mounted = cri._adopted_volume_dir(paths, creds)
        unmounted_config = cri._adopted_volume_dir(paths, config)
    finally:
        mounts.unmount(legacy)

    assert before == paths.memory_dir / "kubernetes.io~secret" / "creds"
    assert mounted == legacy
    assert unmounted_config == podconfigs.volume_dir(paths, config)
