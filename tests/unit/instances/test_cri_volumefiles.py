"""configMap, secret, downwardAPI, projected and persistentVolumeClaim volumes
as the CRI provider sets them up on the host: what their files hold, the
kubelet's atomic layout and modes, waiting for what is missing, tokens and
claims (no containerd, no root)."""

from __future__ import annotations

import base64
import datetime
import json
import os
import shutil
import stat
from pathlib import Path
from typing import Any

import pytest

from nodeless import clocks
from nodeless.instances.providers import base
from nodeless.instances.providers.cri import podconfigs, volumefiles

NOW = datetime.datetime(2026, 1, 1, 12, 30, 45, tzinfo=datetime.UTC)
Obj = dict[str, Any]


def make_pod(*volumes: Obj, app: Obj | None = None, **spec: Any) -> Obj:
    return {
        "metadata": {
            "name": "web",
            "namespace": "shop",
            "uid": "uid-1",
            "labels": {"tier": "front", "app": "web"},
            "annotations": {"note": 'say "hi"\nbye'},
        },
        "spec": {
            "containers": [
                {
                    "name": "app",
                    "image": "busybox",
                    "resources": {"limits": {"memory": "64Mi"}},
                    **(app or {}),
                }
            ],
            "nodeName": "nodeless-zone-a",
            "serviceAccountName": "builder",
            "volumes": list(volumes),
            **spec,
        },
    }


def make_context(pod: Obj, data_dir: Path, *, pod_ip: str = "10.88.0.7") -> podconfigs.PodContext:
    request = base.InstanceRequest("i-1", pod, "zone-a", "0.5-1Gi", 0.5, 1.0)
    return podconfigs.PodContext(
        request=request,
        paths=podconfigs.PodPaths.for_request(data_dir, request),
        owner="nodeless",
        pod_ip=pod_ip,
    )


class Objects:
    """An ``ObjectLookup`` over a dict, counting reads."""

    def __init__(self, *objects: Obj) -> None:
        self.objects: dict[tuple[str, str, str], Obj] = {}
        self.reads = 0
        for obj in objects:
            self.put(obj)

    def put(self, obj: Obj) -> None:
        meta = obj["metadata"]
        self.objects[(obj["kind"], meta.get("namespace", ""), meta["name"])] = obj

    def remove(self, kind: str, namespace: str, name: str) -> None:
        del self.objects[(kind, namespace, name)]

    async def __call__(self, kind: str, namespace: str, name: str) -> Obj | None:
        self.reads += 1
        return self.objects.get((kind, namespace, name))


class Tokens:
    """A ``TokenLookup`` handing out JWT-shaped tokens issued at the clock's time."""

    def __init__(self, clock: clocks.Clock) -> None:
        self.clock = clock
        self.requests: list[volumefiles.TokenRequest] = []

    async def __call__(self, request: volumefiles.TokenRequest) -> str:
        self.requests.append(request)
        issued = int(self.clock.now().timestamp())
        claims = {
            "iat": issued,
            "exp": issued + request.expiration_seconds,
            "n": len(self.requests),
        }
        body = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
        return f"eyJhbGciOiJIUzI1NiJ9.{body}.c2ln"


def config_map(name: str, data: dict[str, str], binary: dict[str, bytes] | None = None) -> Obj:
    obj: Obj = {"kind": "ConfigMap", "metadata": {"name": name, "namespace": "shop"}, "data": data}
    if binary:
        obj["binaryData"] = {k: base64.b64encode(v).decode() for k, v in binary.items()}
    return obj


def secret(name: str, data: dict[str, bytes]) -> Obj:
    return {
        "kind": "Secret",
        "metadata": {"name": name, "namespace": "shop"},
        "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
    }


def the_volume(pod: Obj) -> podconfigs.FileVolume:
    [volume] = podconfigs.volumes(pod)
    assert isinstance(volume, podconfigs.FileVolume)
    return volume


async def payload_of(
    pod: Obj,
    tmp_path: Path,
    objects: Objects | None = None,
    tokens: volumefiles.TokenLookup | None = None,
) -> dict[str, tuple[bytes, int]]:
    files = await volumefiles.payload(
        the_volume(pod),
        make_context(pod, tmp_path),
        objects=objects or Objects(),
        tokens=tokens,
        now=NOW,
    )
    return {path: (f.data, f.mode) for path, f in files.items()}


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- the atomic layout ---


def test_files_are_written_in_a_timestamped_directory_behind_data_and_key_links(
    tmp_path: Path,
) -> None:
    files = {
        "a.txt": volumefiles.FileContent(b"alpha", 0o644),
        "nested/b.txt": volumefiles.FileContent(b"beta", 0o400),
    }

    changed = volumefiles.write_atomic(tmp_path, files, NOW)

    data = os.readlink(tmp_path / "..data")
    assert changed
    assert data.startswith("..2026_01_01_12_30_45.")
    assert (tmp_path / data).is_dir() and "/" not in data
    assert os.readlink(tmp_path / "a.txt") == "..data/a.txt"
    assert os.readlink(tmp_path / "nested") == "..data/nested"
    assert (tmp_path / "nested" / "b.txt").read_bytes() == b"beta"
    assert mode_of(tmp_path / data / "a.txt") == 0o644
    assert mode_of(tmp_path / data / "nested" / "b.txt") == 0o400
    assert mode_of(tmp_path / data) == 0o755
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["..data", data, "a.txt", "nested"])
    assert volumefiles.read_files(tmp_path) == {"a.txt": b"alpha", "nested/b.txt": b"beta"}


def test_the_same_content_is_not_written_again(tmp_path: Path) -> None:
    files = {"a": volumefiles.FileContent(b"1", 0o644)}
    volumefiles.write_atomic(tmp_path, files, NOW)
    before = os.readlink(tmp_path / "..data")

    changed = volumefiles.write_atomic(tmp_path, files, NOW + datetime.timedelta(minutes=1))

    assert not changed
    assert os.readlink(tmp_path / "..data") == before


def test_an_update_swaps_data_to_a_new_version_and_drops_the_old_one_and_gone_keys(
    tmp_path: Path,
) -> None:
    volumefiles.write_atomic(
        tmp_path,
        {"a": volumefiles.FileContent(b"1", 0o644), "b": volumefiles.FileContent(b"2", 0o644)},
        NOW,
    )
    old = os.readlink(tmp_path / "..data")
    opened = (tmp_path / "a").resolve()

    changed = volumefiles.write_atomic(
        tmp_path,
        {"a": volumefiles.FileContent(b"one", 0o644), "c": volumefiles.FileContent(b"3", 0o644)},
        NOW + datetime.timedelta(seconds=61),
    )

    new = os.readlink(tmp_path / "..data")
    assert changed
    assert new != old and new.startswith("..2026_01_01_12_31_46.")
    assert not (tmp_path / old).exists() and not opened.exists()
    assert volumefiles.read_files(tmp_path) == {"a": b"one", "c": b"3"}
    assert not (tmp_path / "b").is_symlink()
    assert not (tmp_path / "..data_tmp").exists()


def test_a_mode_change_alone_is_an_update(tmp_path: Path) -> None:
    volumefiles.write_atomic(tmp_path, {"a": volumefiles.FileContent(b"1", 0o644)}, NOW)

    assert volumefiles.write_atomic(tmp_path, {"a": volumefiles.FileContent(b"1", 0o600)}, NOW)
    assert mode_of(tmp_path / "a") == 0o600


def test_an_fs_group_owns_every_file_and_directory_and_can_read_them(tmp_path: Path) -> None:
    group = os.getgid()
    ownership = volumefiles.Ownership(fs_group=group)

    volumefiles.write_atomic(
        tmp_path, {"dir/a": volumefiles.FileContent(b"1", 0o400)}, NOW, ownership
    )

    data = tmp_path / os.readlink(tmp_path / "..data")
    for path in (data, data / "dir", data / "dir" / "a"):
        assert path.stat().st_gid == group
    assert mode_of(data / "dir" / "a") == 0o440
    assert stat.S_IMODE(data.stat().st_mode) == 0o2755


def test_an_empty_payload_is_an_empty_volume(tmp_path: Path) -> None:
    assert volumefiles.write_atomic(tmp_path, {}, NOW)

    assert (tmp_path / "..data").is_symlink()
    assert volumefiles.read_files(tmp_path) == {}


# --- configMaps and secrets ---


async def test_a_config_map_volume_holds_every_key_and_binary_data_with_the_default_mode(
    tmp_path: Path,
) -> None:
    pod = make_pod({"name": "config", "configMap": {"name": "settings", "defaultMode": 0o640}})
    objects = Objects(config_map("settings", {"app.conf": "x=1\n"}, {"logo.png": b"\x89PNG\x00"}))

    assert await payload_of(pod, tmp_path, objects) == {
        "app.conf": (b"x=1\n", 0o640),
        "logo.png": (b"\x89PNG\x00", 0o640),
    }


async def test_items_choose_keys_paths_and_modes(tmp_path: Path) -> None:
    items = [
        {"key": "app.conf", "path": "conf/app.conf", "mode": 0o600},
        {"key": "other", "path": "other.txt"},
    ]
    pod = make_pod({"name": "config", "configMap": {"name": "settings", "items": items}})
    objects = Objects(config_map("settings", {"app.conf": "x", "other": "y", "unused": "z"}))

    assert await payload_of(pod, tmp_path, objects) == {
        "conf/app.conf": (b"x", 0o600),
        "other.txt": (b"y", 0o644),
    }


async def test_secret_data_is_decoded(tmp_path: Path) -> None:
    pod = make_pod({"name": "creds", "secret": {"secretName": "db", "defaultMode": 0o400}})
    objects = Objects(secret("db", {"password": b"s3cret\xff"}))

    assert await payload_of(pod, tmp_path, objects) == {"password": (b"s3cret\xff", 0o400)}


async def test_secret_data_that_is_not_base64_waits(tmp_path: Path) -> None:
    pod = make_pod({"name": "creds", "secret": {"secretName": "db"}})
    broken = {"kind": "Secret", "metadata": {"name": "db", "namespace": "shop"}}
    broken["data"] = {"password": "not base64!"}

    with pytest.raises(volumefiles.VolumeNotReady, match="is not base64"):
        await payload_of(pod, tmp_path, Objects(broken))


@pytest.mark.parametrize(
    ("volume", "error"),
    [
        ({"configMap": {"name": "settings"}}, 'configmap "settings" not found'),
        ({"secret": {"secretName": "db"}}, 'secret "db" not found'),
        (
            {"configMap": {"name": "present", "items": [{"key": "nope", "path": "x"}]}},
            "configmap references non-existent config key: nope",
        ),
    ],
)
async def test_a_missing_object_or_key_that_is_not_optional_waits(
    tmp_path: Path, volume: Obj, error: str
) -> None:
    pod = make_pod({"name": "v", **volume})

    with pytest.raises(volumefiles.VolumeNotReady, match=error):
        await payload_of(pod, tmp_path, Objects(config_map("present", {"k": "v"})))


async def test_a_missing_optional_object_is_empty_and_a_missing_optional_key_is_left_out(
    tmp_path: Path,
) -> None:
    missing = make_pod({"name": "v", "secret": {"secretName": "db", "optional": True}})
    items = [{"key": "k", "path": "k"}, {"key": "nope", "path": "nope"}]
    partial = make_pod(
        {"name": "v", "configMap": {"name": "present", "items": items, "optional": True}}
    )
    objects = Objects(config_map("present", {"k": "v"}))

    assert await payload_of(missing, tmp_path, objects) == {}
    assert await payload_of(partial, tmp_path, objects) == {"k": (b"v", 0o644)}


async def test_a_failing_lookup_waits_with_its_error(tmp_path: Path) -> None:
    async def failing(kind: str, namespace: str, name: str) -> Obj | None:
        raise RuntimeError("API unavailable")

    pod = make_pod({"name": "v", "configMap": {"name": "settings"}})
    with pytest.raises(volumefiles.VolumeNotReady, match="API unavailable"):
        await volumefiles.payload(
            the_volume(pod), make_context(pod, tmp_path), objects=failing, tokens=None, now=NOW
        )


# --- the downward API ---


async def test_downward_api_files_hold_fields_and_resources(tmp_path: Path) -> None:
    def field(path: str, field_path: str) -> Obj:
        return {"path": path, "fieldRef": {"fieldPath": field_path}}

    items = [
        field("name", "metadata.name"),
        field("namespace", "metadata.namespace"),
        field("uid", "metadata.uid"),
        field("labels", "metadata.labels"),
        field("annotations", "metadata.annotations"),
        field("tier", "metadata.labels['tier']"),
        field("node", "spec.nodeName"),
        field("account", "spec.serviceAccountName"),
        field("ip", "status.podIP"),
        {
            "path": "memory",
            "resourceFieldRef": {
                "containerName": "app",
                "resource": "limits.memory",
                "divisor": "1Mi",
            },
            "mode": 0o400,
        },
        {"path": "cpu", "resourceFieldRef": {"containerName": "app", "resource": "limits.cpu"}},
    ]
    pod = make_pod({"name": "info", "downwardAPI": {"items": items}})

    files = await payload_of(pod, tmp_path)

    assert {path: data.decode() for path, (data, _) in files.items()} == {
        "name": "web",
        "namespace": "shop",
        "uid": "uid-1",
        "labels": 'app="web"\ntier="front"',
        "annotations": 'note="say \\"hi\\"\\nbye"',
        "tier": "front",
        "node": "nodeless-zone-a",
        "account": "builder",
        "ip": "10.88.0.7",
        "memory": "64",
        "cpu": "1",  # the instance's 0.5 vCPU, rounded up to the default divisor
    }
    assert files["memory"][1] == 0o400


def test_maps_are_formatted_as_go_quotes_them() -> None:
    assert volumefiles.format_map({"b": "2", "a": "tab\there", "c": "é\x00\x7f"}) == (
        'a="tab\\there"\nb="2"\nc="é\\x00\\x7f"'
    )
    assert volumefiles.format_map({}) == ""


def test_only_downward_files_of_status_fields_need_the_pod_ip() -> None:
    def pod_with(field_path: str) -> Obj:
        item = {"path": "x", "fieldRef": {"fieldPath": field_path}}
        return make_pod({"name": "info", "downwardAPI": {"items": [item]}})

    assert volumefiles.needs_pod_ip(podconfigs.volumes(pod_with("status.podIP")))
    assert not volumefiles.needs_pod_ip(podconfigs.volumes(pod_with("metadata.name")))


# --- projected volumes and tokens ---


async def test_a_projected_volume_merges_its_sources_and_asks_for_a_bound_token(
    tmp_path: Path,
) -> None:
    clock = clocks.FakeClock(NOW)
    tokens = Tokens(clock)
    sources = [
        {
            "serviceAccountToken": {
                "path": "token",
                "audience": "vault",
                "expirationSeconds": 7200,
            }
        },
        {"configMap": {"name": "ca", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"secret": {"name": "db", "items": [{"key": "password", "path": "db/password"}]}},
        {
            "downwardAPI": {
                "items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]
            }
        },
    ]
    pod = make_pod({"name": "api", "projected": {"sources": sources, "defaultMode": 0o444}})
    objects = Objects(config_map("ca", {"ca.crt": "PEM"}), secret("db", {"password": b"pw"}))

    files = await payload_of(pod, tmp_path, objects, tokens)

    assert sorted(files) == ["ca.crt", "db/password", "namespace", "token"]
    assert files["ca.crt"] == (b"PEM", 0o444)
    assert files["db/password"] == (b"pw", 0o444)
    assert files["namespace"] == (b"shop", 0o444)
    assert files["token"][0].startswith(b"eyJ") and files["token"][1] == 0o444
    assert tokens.requests == [
        volumefiles.TokenRequest("shop", "builder", ("vault",), 7200, "web", "uid-1")
    ]


async def test_a_token_is_kept_until_80_percent_of_its_life_then_renewed(tmp_path: Path) -> None:
    clock = clocks.FakeClock(NOW)
    tokens = Tokens(clock)
    pod = make_pod(
        {"name": "api", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}}
    )
    context = make_context(pod, tmp_path)
    volumes = volumefiles.PodVolumes(context, clock, objects=Objects(), tokens=tokens)
    [volume] = podconfigs.volumes(pod)
    directory = podconfigs.volume_dir(context.paths, volume)

    await volumes.set_up([volume])
    first = (directory / "token").read_text()
    await clock.advance(2000)
    kept = await volumes.refresh([volume])
    await clock.advance(900)  # 2900 s of 3600: past 80%
    renewed = await volumes.refresh([volume])

    assert kept == [] and renewed == ["api"]
    assert len(tokens.requests) == 2
    assert (directory / "token").read_text() != first
    assert tokens.requests[0].audiences == () and tokens.requests[0].expiration_seconds == 3600


async def test_a_token_is_private_to_the_pods_user_when_it_has_one(tmp_path: Path) -> None:
    clock = clocks.FakeClock(NOW)
    pod = make_pod(
        {"name": "api", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}},
        securityContext={"runAsUser": os.getuid()},
    )

    files = await volumefiles.payload(
        the_volume(pod), make_context(pod, tmp_path), objects=None, tokens=Tokens(clock), now=NOW
    )

    assert files["token"].mode == 0o600
    assert files["token"].uid == os.getuid()


async def test_without_a_token_issuer_a_token_volume_waits(tmp_path: Path) -> None:
    pod = make_pod(
        {"name": "api", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}}
    )

    with pytest.raises(volumefiles.VolumeNotReady, match="no service account token issuer"):
        await payload_of(pod, tmp_path)


def test_the_fs_user_is_the_run_as_user_every_container_shares() -> None:
    shared = make_pod(securityContext={"runAsUser": 1000, "fsGroup": 2000})
    mixed = make_pod(
        app={"securityContext": {"runAsUser": 1001}},
        initContainers=[{"name": "init", "image": "busybox"}],
        securityContext={"runAsUser": 1000},
    )

    assert volumefiles.Ownership.of(shared) == volumefiles.Ownership(2000, 1000)
    assert volumefiles.Ownership.of(mixed) == volumefiles.Ownership(None, None)
    assert volumefiles.Ownership.of(make_pod()) == volumefiles.Ownership()


# --- setting up and refreshing a pod's volumes ---


async def test_set_up_writes_file_volumes_putting_secrets_in_memory_and_refresh_swaps_changes(
    tmp_path: Path,
) -> None:
    clock = clocks.FakeClock(NOW)
    pod = make_pod(
        {"name": "config", "configMap": {"name": "settings"}},
        {"name": "creds", "secret": {"secretName": "db"}},
    )
    objects = Objects(config_map("settings", {"greeting": "hello"}), secret("db", {"pw": b"1"}))
    readied: list[bool] = []

    async def memory_ready() -> None:
        readied.append(True)

    context = make_context(pod, tmp_path)
    volumes = volumefiles.PodVolumes(context, clock, objects=objects, memory_ready=memory_ready)
    found = podconfigs.volumes(pod)

    dirs = await volumes.set_up(found)
    config = dirs["config"]
    before = os.readlink(config / "..data")
    unchanged = await volumes.refresh(found)
    objects.put(config_map("settings", {"greeting": "bonjour"}))
    await clock.advance(60)
    changed = await volumes.refresh(found)
    objects.remove("ConfigMap", "shop", "settings")
    kept = await volumes.refresh(found)

    pod_dir = tmp_path / "pods" / "uid-1" / "volumes"
    assert dirs == {
        "config": pod_dir / "kubernetes.io~configmap" / "config",
        "creds": tmp_path / "memory" / "uid-1" / "kubernetes.io~secret" / "creds",
    }
    assert readied == [True]  # once, for the secret
    assert (dirs["creds"] / "pw").read_bytes() == b"1"
    assert unchanged == [] and changed == ["config"] and kept == []
    assert os.readlink(config / "..data") != before
    assert (config / "greeting").read_text() == "bonjour"  # a failed read keeps the files
    assert mode_of(config) == 0o755


async def test_set_up_names_the_volume_that_is_not_ready(tmp_path: Path) -> None:
    pod = make_pod({"name": "config", "configMap": {"name": "settings"}})
    volumes = volumefiles.PodVolumes(
        make_context(pod, tmp_path), clocks.FakeClock(NOW), objects=Objects()
    )

    with pytest.raises(volumefiles.VolumeNotReady) as raised:
        await volumes.set_up(podconfigs.volumes(pod))

    assert str(raised.value) == (
        'MountVolume.SetUp failed for volume "config" : configmap "settings" not found'
    )


async def test_file_volumes_mount_read_only_and_a_sub_path_pins_the_current_file(
    tmp_path: Path,
) -> None:
    pod = make_pod(
        {"name": "config", "configMap": {"name": "settings"}},
        {"name": "scratch", "emptyDir": {}},
        app={
            "volumeMounts": [
                {"name": "config", "mountPath": "/etc/app"},
                {"name": "config", "mountPath": "/etc/greeting", "subPath": "greeting"},
                {"name": "scratch", "mountPath": "/scratch"},
            ]
        },
    )
    objects = Objects(config_map("settings", {"greeting": "hello"}))
    found = podconfigs.volumes(pod)
    context = make_context(pod, tmp_path)
    dirs = await volumefiles.PodVolumes(context, clocks.FakeClock(NOW), objects=objects).set_up(
        found
    )
    dirs["scratch"] = context.paths.empty_dir("scratch")
    mounting = podconfigs.PodContext(
        request=context.request,
        paths=context.paths,
        owner="nodeless",
        volume_dirs=dirs,
        read_only_volumes=podconfigs.read_only_volumes(found),
    )

    mounts = podconfigs.container_mounts(mounting, pod["spec"]["containers"][0], {})

    config = dirs["config"]
    version = config / os.readlink(config / "..data")
    assert [(m.container_path, m.host_path, m.readonly) for m in mounts] == [
        ("/etc/app", str(config), True),
        ("/etc/greeting", str(version / "greeting"), True),
        ("/scratch", str(dirs["scratch"]), False),
    ]


def test_a_sub_path_that_a_symlink_leads_out_of_its_volume_is_refused(tmp_path: Path) -> None:
    pod = make_pod(
        {"name": "scratch", "emptyDir": {}},
        app={"volumeMounts": [{"name": "scratch", "mountPath": "/x", "subPath": "escape"}]},
    )
    context = make_context(pod, tmp_path)
    scratch = context.paths.empty_dir("scratch")
    scratch.mkdir(parents=True)
    (scratch / "escape").symlink_to("/etc")
    mounting = podconfigs.PodContext(
        request=context.request, paths=context.paths, owner="n", volume_dirs={"scratch": scratch}
    )

    with pytest.raises(podconfigs.ConfigError, match="leads out of its volume"):
        podconfigs.container_mounts(mounting, pod["spec"]["containers"][0], {})


# --- claims ---


def claim(
    name: str = "data", *, phase: str = "Bound", volume: str = "pv-1", uid: str = "c1"
) -> Obj:
    return {
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": "shop", "uid": uid},
        "spec": {"volumeName": volume},
        "status": {"phase": phase},
    }


def persistent_volume(name: str = "pv-1", claim_uid: str = "c1", **source: Any) -> Obj:
    return {
        "kind": "PersistentVolume",
        "metadata": {"name": name},
        "spec": {"claimRef": {"name": "data", "namespace": "shop", "uid": claim_uid}, **source},
    }


CLAIM = podconfigs.ClaimVolume("data", "data")


async def test_a_bound_claim_is_its_volume_host_path(tmp_path: Path) -> None:
    host = persistent_volume(hostPath={"path": str(tmp_path / "pv"), "type": "DirectoryOrCreate"})
    local = persistent_volume(local={"path": str(tmp_path / "local")})

    by_host_path = await volumefiles.claim_target(CLAIM, "shop", Objects(claim(), host))
    by_local = await volumefiles.claim_target(CLAIM, "shop", Objects(claim(), local))

    assert by_host_path == volumefiles.ClaimTarget(tmp_path / "pv", create=True)
    assert by_local == volumefiles.ClaimTarget(tmp_path / "local", create=False)


@pytest.mark.parametrize(
    ("objects", "error"),
    [
        ([], 'persistentvolumeclaim "data" not found'),
        ([claim(phase="Pending", volume="")], "non-bound phase \\('Pending'\\)"),
        ([claim()], 'persistentvolume "pv-1" not found'),
        ([claim(), persistent_volume(claim_uid="other", hostPath={"path": "/x"})], "!="),
    ],
)
async def test_a_claim_that_is_missing_unbound_or_not_ours_waits(
    objects: list[Obj], error: str
) -> None:
    with pytest.raises(volumefiles.VolumeNotReady, match=error):
        await volumefiles.claim_target(CLAIM, "shop", Objects(*objects))


async def test_a_claim_bound_to_a_volume_type_that_cannot_be_mounted_is_unsupported() -> None:
    objects = Objects(claim(), persistent_volume(nfs={"server": "x", "path": "/"}))

    with pytest.raises(podconfigs.UnsupportedVolume, match="neither a hostPath nor a local"):
        await volumefiles.claim_target(CLAIM, "shop", objects)


async def test_a_claim_volume_links_the_data_which_outlives_the_pod_directory(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "pv"
    pod = make_pod({"name": "data", "persistentVolumeClaim": {"claimName": "data"}})
    objects = Objects(
        claim(), persistent_volume(hostPath={"path": str(data_dir), "type": "DirectoryOrCreate"})
    )
    context = make_context(pod, tmp_path / "cri")
    volumes = volumefiles.PodVolumes(context, clocks.FakeClock(NOW), objects=objects)

    dirs = await volumes.set_up(podconfigs.volumes(pod))
    (dirs["data"] / "kept.txt").write_text("still here")
    again = await volumes.set_up(podconfigs.volumes(pod))
    shutil.rmtree(context.paths.pod_dir)

    assert dirs == again
    assert dirs["data"] == context.paths.pod_dir / "volumes" / "kubernetes.io~local-volume" / "data"
    assert (data_dir / "kept.txt").read_text() == "still here"


async def test_a_local_volume_directory_that_does_not_exist_waits(tmp_path: Path) -> None:
    pod = make_pod({"name": "data", "persistentVolumeClaim": {"claimName": "data"}})
    objects = Objects(claim(), persistent_volume(local={"path": str(tmp_path / "nowhere")}))
    volumes = volumefiles.PodVolumes(
        make_context(pod, tmp_path), clocks.FakeClock(NOW), objects=objects
    )

    with pytest.raises(volumefiles.VolumeNotReady, match="is not a directory"):
        await volumes.set_up(podconfigs.volumes(pod))
