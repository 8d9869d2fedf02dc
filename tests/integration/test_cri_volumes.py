"""configMap, secret, downwardAPI, projected and persistentVolumeClaim volumes
in real pods on containerd: what a container reads in them, their modes, that
they are read-only, that a pod waits for what it needs, that a running pod
sees an updated ConfigMap, and that a claim's data outlives its pods.

Needs root and containerd (skipped otherwise, like every test that runs real
pods): one containerd per test on its own bridge and pod CIDR, the image
built here from the host's busybox. Objects come from a dict the test
changes; tokens from a real ``TokenIssuer``.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from test_cri_provider import _emptied, cri_id, current, status_is, until

from nodeless import clocks
from nodeless.apiserver import serviceaccounts
from nodeless.instances.providers import base
from nodeless.instances.providers.cri import (
    backoffs,
    cgroups,
    containerd,
    mounts,
    sandboximages,
    volumefiles,
)
from nodeless.instances.providers.cri import provider as cri

POD_CIDR = "10.253.0.0/24"
BRIDGE = "nltest6"  # its own: a bridge keeps the address of the first CIDR it served
BUSYBOX = "docker.io/library/busybox:1.36"
SHORT = backoffs.BackOffPolicy(0.2, 0.5, reset_after=600.0)
State = base.InstanceState
Obj = dict[str, Any]

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(120),
    pytest.mark.skipif(
        bool(containerd.unavailable_reason()), reason=containerd.unavailable_reason() or "-"
    ),
]


class Objects:
    """The API's objects as the provider's ``objects`` callback sees them."""

    def __init__(self) -> None:
        self.objects: dict[tuple[str, str, str], Obj] = {}

    def put(self, kind: str, name: str, namespace: str = "default", **fields: Any) -> None:
        meta = {"name": name, "namespace": namespace, "uid": f"uid-{name}"}
        self.objects[(kind, namespace, name)] = {"kind": kind, "metadata": meta, **fields}

    async def __call__(self, kind: str, namespace: str, name: str) -> Obj | None:
        return self.objects.get((kind, namespace, name))


class Env:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        settings = containerd.ContainerdSettings(
            data_dir / "containerd", pod_cidr=POD_CIDR, bridge=BRIDGE
        )
        self.containerd = containerd.Containerd(settings)
        self.cgroup_root = f"/nodeless-test-{uuid.uuid4().hex[:8]}"
        self.objects = Objects()
        self.issuer = serviceaccounts.TokenIssuer.ephemeral()
        self.token_requests: list[volumefiles.TokenRequest] = []
        self.providers: list[cri.CriProvider] = []

    async def tokens(self, request: volumefiles.TokenRequest) -> str:
        self.token_requests.append(request)
        token, _ = self.issuer.issue(
            request.namespace,
            request.service_account,
            "uid-sa",
            clocks.SystemClock().now(),
            request.expiration_seconds,
            list(request.audiences),
        )
        return token

    def provider(self, **options: Any) -> cri.CriProvider:
        made = cri.CriProvider(
            self.containerd.client,
            self.data_dir / "cri",
            clocks.SystemClock(),
            cgroup_root=self.cgroup_root,
            objects=self.objects,
            tokens=self.tokens,
            crash_backoff=SHORT,
            pull_backoff=SHORT,
            relist_interval=0.1,
            **options,
        )
        self.providers.append(made)
        return made


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    made = Env(Path(tempfile.mkdtemp(prefix="nl-vol-")))
    try:
        await made.containerd.start()
        applets = await asyncio.to_thread(sandboximages.all_applets)
        await made.containerd.ensure_image(sandboximages.BusyboxImage(BUSYBOX, applets=applets))
        yield made
    finally:
        try:
            for provider in made.providers:
                if provider.closed:
                    continue
                for status in await provider.list():
                    await provider.delete(status.instance_id, 0)
                await until(_emptied(provider), timeout=30)
                await provider.close()
        finally:
            await made.containerd.stop(remove_pods=True)
            for mount in reversed(mounts.under(made.data_dir)):
                await asyncio.to_thread(
                    subprocess.run, ["umount", mount], capture_output=True, check=False
                )
            for tree in cgroups.hierarchies():
                root = tree.mount / made.cgroup_root.strip("/")
                if root.exists():
                    for sub in sorted(root.rglob("*"), key=lambda p: len(p.parts), reverse=True):
                        if sub.is_dir():
                            sub.rmdir()
                    root.rmdir()
            if not mounts.under(made.data_dir):
                shutil.rmtree(made.data_dir, ignore_errors=True)
            await asyncio.to_thread(containerd.remove_network, BRIDGE)


def request(instance_id: str, name: str, script: str, **spec: Any) -> base.InstanceRequest:
    mounts = spec.pop("mounts", [])
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "default",
            "uid": f"uid-{name}-{uuid.uuid4().hex[:6]}",
            "labels": {"app": name, "tier": "back"},
        },
        "spec": {
            "restartPolicy": spec.pop("restart_policy", "Never"),
            "serviceAccountName": "default",
            "containers": [
                {
                    "name": "app",
                    "image": BUSYBOX,
                    "imagePullPolicy": "Never",
                    "command": ["sh", "-c", script],
                    "volumeMounts": mounts,
                }
            ],
            **spec,
        },
    }
    return base.InstanceRequest(instance_id, pod, "zone-a", "0.25-0.5Gi", 0.25, 0.5)


async def read_logs(provider: cri.CriProvider, instance_id: str) -> str:
    chunks = [chunk async for chunk in await provider.logs(instance_id, "app")]
    return b"".join(chunks).decode()


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def claim_objects(env: Env, volume_dir: Path) -> None:
    env.objects.put(
        "PersistentVolumeClaim",
        "data",
        spec={"volumeName": "pv-data"},
        status={"phase": "Bound"},
    )
    env.objects.put(
        "PersistentVolume",
        "pv-data",
        namespace="",
        spec={
            "hostPath": {"path": str(volume_dir), "type": "DirectoryOrCreate"},
            "claimRef": {"namespace": "default", "name": "data", "uid": "uid-data"},
        },
    )


ALL_VOLUMES = [
    {
        "name": "config",
        "configMap": {
            "name": "settings",
            "items": [{"key": "app.conf", "path": "conf/app.conf", "mode": 0o600}],
        },
    },
    {"name": "creds", "secret": {"secretName": "db", "defaultMode": 0o400}},
    {
        "name": "info",
        "downwardAPI": {
            "items": [
                {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}},
                {"path": "ip", "fieldRef": {"fieldPath": "status.podIP"}},
            ]
        },
    },
    {
        "name": "api",
        "projected": {
            "sources": [
                {"serviceAccountToken": {"path": "token", "audience": "vault"}},
                {"configMap": {"name": "settings", "items": [{"key": "ca", "path": "ca.crt"}]}},
                {
                    "downwardAPI": {
                        "items": [
                            {"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}
                        ]
                    }
                },
            ]
        },
    },
    {"name": "data", "persistentVolumeClaim": {"claimName": "data"}},
]
ALL_MOUNTS = [
    {"name": "config", "mountPath": "/etc/config"},
    {"name": "creds", "mountPath": "/etc/creds"},
    {"name": "info", "mountPath": "/etc/info"},
    {"name": "api", "mountPath": "/var/run/secrets/api"},
    {"name": "data", "mountPath": "/data"},
]
SCRIPT = """
echo "config=$(cat /etc/config/conf/app.conf) $(stat -L -c %a /etc/config/conf/app.conf)"
echo "secret=$(cat /etc/creds/password) $(stat -L -c %a /etc/creds/password)"
echo "labels=$(cat /etc/info/labels | tr '\\n' ',')"
echo "name=$(cat /etc/info/name) ip=$(cat /etc/info/ip)"
echo "ca=$(cat /var/run/secrets/api/ca.crt) ns=$(cat /var/run/secrets/api/namespace)"
echo "token=$(cat /var/run/secrets/api/token)"
echo "data=$(readlink /etc/config/..data)"
touch /etc/config/new 2>/dev/null && echo "config writable" || echo "config read-only"
echo "$RUN" >> /data/runs
echo "runs=$(cat /data/runs | tr '\\n' ',')"
"""


def lines_of(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        out[key if sep else line] = value
    return out


async def test_a_pod_reads_its_config_map_secret_downward_projected_and_claim_volumes(
    env: Env,
) -> None:
    volume_dir = env.data_dir / "volumes" / "pv-data"
    env.objects.put("ConfigMap", "settings", data={"app.conf": "x=1", "ca": "PEM"})
    env.objects.put("Secret", "db", data={"password": b64("s3cret")})
    claim_objects(env, volume_dir)
    provider = env.provider()

    first = request("i-first", "first", SCRIPT, volumes=ALL_VOLUMES, mounts=ALL_MOUNTS)
    first.pod["spec"]["containers"][0]["env"] = [{"name": "RUN", "value": "one"}]
    await provider.create(first)
    await until(status_is(provider, "i-first", lambda s: s.state.terminal), timeout=60)
    status = await current(provider, "i-first")
    seen = lines_of(await read_logs(provider, "i-first"))
    pod_dir = env.data_dir / "cri" / "pods" / status.pod_uid
    memory_root = env.data_dir / "cri" / "memory"
    mounted_under_pod = mounts.under(pod_dir)
    in_memory = sorted(p.name for p in (memory_root / status.pod_uid).glob("*/*"))
    await provider.delete("i-first", 0)
    await until(_emptied(provider))
    pod_dir_gone = not pod_dir.exists()
    memory_dir_gone = not (memory_root / status.pod_uid).exists()

    second = request("i-second", "second", SCRIPT, volumes=ALL_VOLUMES, mounts=ALL_MOUNTS)
    second.pod["spec"]["containers"][0]["env"] = [{"name": "RUN", "value": "two"}]
    await provider.create(second)
    await until(status_is(provider, "i-second", lambda s: s.state.terminal), timeout=60)
    again = lines_of(await read_logs(provider, "i-second"))

    assert status.state is State.SUCCEEDED, status
    assert seen["config"] == "x=1 600"
    assert seen["secret"] == "s3cret 400"
    assert seen["labels"] == 'app="first",tier="back"'  # no newline at the end
    assert seen["name"] == f"first ip={status.ip}"  # written again once the sandbox has it
    assert seen["ca"] == "PEM ns=default"
    identity = env.issuer.verify(seen["token"], clocks.SystemClock().now())
    assert identity is not None
    assert env.token_requests[0] == volumefiles.TokenRequest(
        "default", "default", ("vault",), 3600, "first", status.pod_uid
    )
    assert seen["data"].startswith("..")
    assert "config read-only" in seen
    assert seen["runs"] == "one,"
    # the secret and the projection on the one tmpfs every pod shares, none
    # mounted per pod
    assert in_memory == ["api", "creds"]
    assert str(memory_root) in mounts.under(env.data_dir)
    assert mounted_under_pod == []
    assert pod_dir_gone and memory_dir_gone
    assert again["runs"] == "one,two,"
    assert (volume_dir / "runs").read_text() == "one\ntwo\n"


async def test_a_pod_waits_in_container_creating_until_its_config_map_exists(env: Env) -> None:
    provider = env.provider()
    waiting = request(
        "i-wait",
        "wait",
        'echo "$(cat /etc/config/greeting)"; sleep 1000',
        restart_policy="Always",
        volumes=[{"name": "config", "configMap": {"name": "late"}}],
        mounts=[{"name": "config", "mountPath": "/etc/config"}],
    )

    await provider.create(waiting)
    await until(status_is(provider, "i-wait", lambda s: "not found" in s.message))
    await asyncio.sleep(1.0)  # several retries
    held = await current(provider, "i-wait")
    env.objects.put("ConfigMap", "late", data={"greeting": "finally"})
    await until(status_is(provider, "i-wait", lambda s: s.state is State.RUNNING), timeout=30)
    running = await current(provider, "i-wait")

    assert held.state is State.PENDING
    assert held.reason == cri.CONTAINER_CREATING
    assert held.message == (
        'MountVolume.SetUp failed for volume "config" : configmap "late" not found'
    )
    [app] = held.containers
    assert (app.state, app.reason) == ("waiting", cri.CONTAINER_CREATING)
    assert app.message == held.message
    assert running.message == "" and running.containers[0].message == ""
    await until(lambda: _logged(provider, "i-wait", "finally"))


async def test_pods_waiting_for_a_config_map_do_not_hold_up_the_pods_behind_them(
    env: Env,
) -> None:
    # One sandbox at a time, so two set-up slots: both taken by waiting pods
    # if a pod kept its slot through its volume back-off.
    provider = env.provider(parallel_sandboxes=1)
    for n in range(3):
        await provider.create(
            request(
                f"i-wait-{n}",
                f"wait-{n}",
                "sleep 1000",
                restart_policy="Always",
                volumes=[{"name": "config", "configMap": {"name": "never"}}],
                mounts=[{"name": "config", "mountPath": "/etc/config"}],
            )
        )
    for n in range(3):
        await until(status_is(provider, f"i-wait-{n}", lambda s: "not found" in s.message))
    await provider.create(request("i-free", "free", "sleep 1000", restart_policy="Always"))

    await until(status_is(provider, "i-free", lambda s: s.state is State.RUNNING), timeout=30)
    for n in range(3):
        assert (await current(provider, f"i-wait-{n}")).state is State.PENDING


async def _logged(provider: cri.CriProvider, instance_id: str, text: str) -> bool:
    try:
        return text in await read_logs(provider, instance_id)
    except base.ProviderError:
        return False


async def test_a_running_pod_sees_its_updated_config_map_but_not_through_a_sub_path(
    env: Env,
) -> None:
    env.objects.put("ConfigMap", "settings", data={"greeting": "hello"})
    provider = env.provider(volume_refresh_interval=0.2)
    pod = request(
        "i-live",
        "live",
        "sleep 1000",
        restart_policy="Always",
        volumes=[{"name": "config", "configMap": {"name": "settings"}}],
        mounts=[
            {"name": "config", "mountPath": "/etc/config"},
            {"name": "config", "mountPath": "/etc/greeting", "subPath": "greeting"},
        ],
    )
    await provider.create(pod)
    await until(status_is(provider, "i-live", lambda s: s.state is State.RUNNING))
    status = await current(provider, "i-live")
    container_id = status.containers[0].container_id.split("://", 1)[1]

    async def read(path: str) -> str:
        result = await env.containerd.client.exec_sync(container_id, ["cat", path])
        return result.stdout.decode()

    before = await read("/etc/config/greeting")
    env.objects.put("ConfigMap", "settings", data={"greeting": "bonjour"})

    async def updated() -> bool:
        return await read("/etc/config/greeting") == "bonjour"

    await until(updated, timeout=10)

    assert before == "hello"
    assert await read("/etc/greeting") == "hello"  # the kubelet does not update subPath mounts


def info_volume(**files: str) -> dict[str, Any]:
    """A downward API volume ``info``: one file per keyword, holding that field."""
    items = [{"path": path, "fieldRef": {"fieldPath": field}} for path, field in files.items()]
    return {"name": "info", "downwardAPI": {"items": items}}


async def test_a_running_pod_sees_its_new_labels_in_its_downward_api_volume_at_once(
    env: Env,
) -> None:
    provider = env.provider()  # the periodic refresh (a minute) is not what updates it
    pod = request(
        "i-labels",
        "labels",
        "sleep 1000",
        restart_policy="Always",
        volumes=[info_volume(labels="metadata.labels", notes="metadata.annotations")],
        mounts=[{"name": "info", "mountPath": "/etc/info"}],
    )
    tier = {"fieldRef": {"fieldPath": "metadata.labels['tier']"}}
    pod.pod["spec"]["containers"][0]["env"] = [{"name": "TIER", "valueFrom": tier}]
    await provider.create(pod)
    await until(status_is(provider, "i-labels", lambda s: s.state is State.RUNNING))
    container_id = cri_id((await current(provider, "i-labels")).containers[0])

    async def run(*command: str) -> str:
        result = await env.containerd.client.exec_sync(container_id, list(command))
        return result.stdout.decode()

    before = await run("cat", "/etc/info/labels")
    changed = copy.deepcopy(pod.pod)
    changed["metadata"]["labels"]["tier"] = "front"
    changed["metadata"]["annotations"] = {"owner": "team-a"}
    await provider.update("i-labels", changed)

    assert isinstance(provider, base.UpdateCapable)
    assert before == 'app="labels"\ntier="back"'
    assert await run("cat", "/etc/info/labels") == 'app="labels"\ntier="front"'
    assert await run("cat", "/etc/info/notes") == 'owner="team-a"'
    assert await run("sh", "-c", "echo $TIER") == "back\n"  # the environment is the start's


async def test_creating_a_running_instance_again_with_new_labels_shows_them(env: Env) -> None:
    # what the manager does after a crash between the instance's creation and its record
    provider = env.provider()
    pod = request(
        "i-again",
        "again",
        "sleep 1000",
        restart_policy="Always",
        volumes=[info_volume(labels="metadata.labels")],
        mounts=[{"name": "info", "mountPath": "/etc/info"}],
    )
    await provider.create(pod)
    await until(status_is(provider, "i-again", lambda s: s.state is State.RUNNING))
    first = await current(provider, "i-again")
    changed = copy.deepcopy(pod)
    changed.pod["metadata"]["labels"]["tier"] = "front"

    again = await provider.create(changed)
    container_id = cri_id(again.containers[0])
    result = await env.containerd.client.exec_sync(container_id, ["cat", "/etc/info/labels"])

    assert again.containers[0].container_id == first.containers[0].container_id
    assert result.stdout.decode() == 'app="again"\ntier="front"'


async def test_labels_shown_while_a_pod_waits_for_its_volumes_are_in_its_files_once_it_runs(
    env: Env,
) -> None:
    provider = env.provider()
    pod = request(
        "i-early",
        "early",
        "sleep 1000",
        restart_policy="Always",
        volumes=[
            {"name": "config", "configMap": {"name": "later"}},
            info_volume(labels="metadata.labels"),
        ],
        mounts=[
            {"name": "config", "mountPath": "/etc/config"},
            {"name": "info", "mountPath": "/etc/info"},
        ],
    )
    await provider.create(pod)
    await until(status_is(provider, "i-early", lambda s: "not found" in s.message))
    changed = copy.deepcopy(pod.pod)
    changed["metadata"]["labels"]["tier"] = "front"
    await provider.update("i-early", changed)
    env.objects.put("ConfigMap", "later", data={"greeting": "hi"})
    await until(status_is(provider, "i-early", lambda s: s.state is State.RUNNING), timeout=30)
    container_id = cri_id((await current(provider, "i-early")).containers[0])

    result = await env.containerd.client.exec_sync(container_id, ["cat", "/etc/info/labels"])

    assert result.stdout.decode() == 'app="early"\ntier="front"'


async def test_an_adopted_pod_restarts_its_container_with_the_same_volumes(env: Env) -> None:
    env.objects.put("ConfigMap", "settings", data={"greeting": "hello"})
    env.objects.put("Secret", "db", data={"pw": b64("s3cret")})
    claim_objects(env, env.data_dir / "volumes" / "pv-data")
    first = env.provider()
    pod = request(
        "i-adopt",
        "adopt",
        'echo "$(cat /etc/config/greeting) $(cat /etc/creds/pw)" >> /data/seen; sleep 0.3',
        restart_policy="Always",
        volumes=[
            {"name": "config", "configMap": {"name": "settings"}},
            {"name": "creds", "secret": {"secretName": "db"}},
            {"name": "data", "persistentVolumeClaim": {"claimName": "data"}},
        ],
        mounts=[
            {"name": "config", "mountPath": "/etc/config"},
            {"name": "creds", "mountPath": "/etc/creds"},
            {"name": "data", "mountPath": "/data"},
        ],
    )
    await first.create(pod)
    await until(status_is(first, "i-adopt", lambda s: s.containers[0].restart_count >= 1))
    await first.close()
    seen = env.data_dir / "volumes" / "pv-data" / "seen"
    before = seen.read_text().count("\n")

    second = env.provider()
    await second.start()
    await until(
        status_is(second, "i-adopt", lambda s: s.containers[0].restart_count >= 3), timeout=30
    )

    lines = seen.read_text().splitlines()
    assert len(lines) > before
    assert set(lines) == {"hello s3cret"}
