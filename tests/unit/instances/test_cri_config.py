"""The files Nodeless writes for containerd, the images it builds, and the
CRI client's wiring, checked without root (no containerd is started here)."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path
from typing import Any

import grpc
import grpc.aio
import pytest

from nodeless.instances.providers.cri import clients, containerd, sandboximages
from nodeless.instances.providers.cri import runtime_pb2 as pb

CRI = "io.containerd.grpc.v1.cri"
FAKE_BUSYBOX = b"\x7fELF\x02\x01\x01" + bytes(range(256)) * 8
REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def settings(tmp_path: Path) -> containerd.ContainerdSettings:
    return containerd.ContainerdSettings(tmp_path / "containerd", pod_cidr="10.77.0.0/16")


# --- config.toml ---


def test_config_keeps_containerd_state_under_the_data_dir(
    settings: containerd.ContainerdSettings,
) -> None:
    config = tomllib.loads(containerd.render_config(settings))

    assert config["version"] == 2
    assert config["root"] == str(settings.data_dir / "root")
    assert config["state"] == str(settings.data_dir / "state")
    assert config["grpc"]["address"] == str(settings.data_dir / "containerd.sock")
    assert config["plugins"]["io.containerd.internal.v1.opt"]["path"].startswith(
        str(settings.data_dir)
    )


def test_config_sets_up_the_cri_plugin_for_these_machines(
    settings: containerd.ContainerdSettings,
) -> None:
    cri = tomllib.loads(containerd.render_config(settings))["plugins"][CRI]

    assert cri["restrict_oom_score_adj"] is True
    assert cri["sandbox_image"] == sandboximages.PAUSE_IMAGE
    assert cri["containerd"]["snapshotter"] == "overlayfs"
    runc = cri["containerd"]["runtimes"]["runc"]
    assert runc["runtime_type"] == "io.containerd.runc.v2"
    assert runc["options"]["SystemdCgroup"] is False
    assert cri["cni"] == {
        "bin_dir": "/usr/lib/cni",
        "conf_dir": str(settings.cni_conf_dir),
        "max_conf_num": 1,
    }
    assert cri["registry"] == {"config_path": str(settings.data_dir / "certs.d")}


def test_config_follows_the_settings(tmp_path: Path) -> None:
    settings = containerd.ContainerdSettings(
        tmp_path,
        snapshotter="native",
        sandbox_image="registry.local/pause:9",
        systemd_cgroup=True,
        cni_bin_dir=Path("/opt/cni/bin"),
    )

    cri = tomllib.loads(containerd.render_config(settings))["plugins"][CRI]

    assert cri["containerd"]["snapshotter"] == "native"
    assert cri["sandbox_image"] == "registry.local/pause:9"
    assert cri["containerd"]["runtimes"]["runc"]["options"]["SystemdCgroup"] is True
    assert cri["cni"]["bin_dir"] == "/opt/cni/bin"


def test_toml_round_trips_quoted_keys_and_awkward_strings() -> None:
    doc: dict[str, Any] = {
        "top": 'say "hi" \\ there',
        "n": 3,
        "flag": False,
        "list": ["a", 'b"c'],
        "plugins": {"io.containerd.x.v1": {"path": "/tmp/é x", "nested": {"deep": True}}},
        "empty": {},
    }

    assert tomllib.loads(containerd.to_toml(doc)) == doc


def test_unsupported_toml_values_are_refused() -> None:
    with pytest.raises(TypeError):
        containerd.to_toml({"x": 1.5})


# --- CNI ---


def test_conflist_is_a_bridge_on_the_pod_cidr_with_portmap(
    settings: containerd.ContainerdSettings,
) -> None:
    conflist = json.loads(containerd.render_conflist(settings))

    bridge, portmap = conflist["plugins"]
    assert conflist["name"] == "nodeless"
    assert conflist["cniVersion"] == "1.0.0"
    assert bridge["type"] == "bridge"
    assert bridge["bridge"] == "nodeless0"
    assert bridge["isGateway"] is True
    assert bridge["ipMasq"] is False  # one nftables rule for the CIDR instead
    assert bridge["ipam"]["type"] == "host-local"
    assert bridge["ipam"]["ranges"] == [[{"subnet": "10.77.0.0/16"}]]
    assert bridge["ipam"]["routes"] == [{"dst": "0.0.0.0/0"}]
    assert bridge["ipam"]["dataDir"] == str(settings.data_dir / "ipam")
    assert portmap == {"type": "portmap", "capabilities": {"portMappings": True}}


def test_the_bridge_masquerades_per_pod_only_where_the_cidr_rule_cannot_be_had(
    tmp_path: Path,
) -> None:
    fallback = containerd.ContainerdSettings(tmp_path, per_pod_masquerade=True)

    assert containerd.cni_conflist(fallback)["plugins"][0]["ipMasq"] is True


def test_one_rule_masquerades_what_leaves_the_pod_cidr_except_multicast(tmp_path: Path) -> None:
    v4 = containerd.ContainerdSettings(tmp_path, pod_cidr="10.77.3.9/16", bridge="nl-test0")
    v6 = containerd.ContainerdSettings(tmp_path, pod_cidr="fd00:77::/64", bridge="nl-test0")

    script4 = containerd.masquerade_script(v4).splitlines()
    script6 = containerd.masquerade_script(v6).splitlines()

    # replaced whole, whether or not the table was there
    assert script4[:3] == [
        "add table ip nodeless_masq_nl_test0",
        "delete table ip nodeless_masq_nl_test0",
        "add table ip nodeless_masq_nl_test0",
    ]
    assert "type nat hook postrouting priority srcnat" in script4[3]
    assert script4[4] == (
        "add rule ip nodeless_masq_nl_test0 postrouting ip saddr 10.77.0.0/16 "
        "ip daddr != 10.77.0.0/16 ip daddr != 224.0.0.0/4 masquerade"
    )
    assert script6[4] == (
        "add rule ip6 nodeless_masq_nl_test0 postrouting ip6 saddr fd00:77::/64 "
        "ip6 daddr != fd00:77::/64 ip6 daddr != ff00::/8 masquerade"
    )


def test_conflist_defaults_to_the_nodeless_bridge_and_cidr(tmp_path: Path) -> None:
    bridge = containerd.cni_conflist(containerd.ContainerdSettings(tmp_path))["plugins"][0]

    assert bridge["bridge"] == containerd.DEFAULT_BRIDGE
    assert bridge["ipam"]["ranges"] == [[{"subnet": containerd.DEFAULT_POD_CIDR}]]


def test_conflist_normalises_the_cidr_and_routes_ipv6(tmp_path: Path) -> None:
    v4 = containerd.ContainerdSettings(tmp_path, pod_cidr="10.1.2.3/16")
    v6 = containerd.ContainerdSettings(tmp_path, pod_cidr="fd00:10::/64", bridge="nl6")

    ipam4 = containerd.cni_conflist(v4)["plugins"][0]["ipam"]
    ipam6 = containerd.cni_conflist(v6)["plugins"][0]["ipam"]

    assert ipam4["ranges"] == [[{"subnet": "10.1.0.0/16"}]]
    assert ipam6["ranges"] == [[{"subnet": "fd00:10::/64"}]]
    assert ipam6["routes"] == [{"dst": "::/0"}]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"pod_cidr": "10.0.0.0/31"},
        {"pod_cidr": "not-a-cidr"},
        {"bridge": "a-bridge-name-too-long"},
        {"bridge": ""},
        {"bridge": "has space"},
    ],
)
def test_bad_network_settings_are_refused(tmp_path: Path, kwargs: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        containerd.ContainerdSettings(tmp_path, **kwargs)  # type: ignore[arg-type]


def test_files_are_written_where_containerd_reads_them(
    settings: containerd.ContainerdSettings,
) -> None:
    containerd.write_files(settings)
    containerd.write_files(settings)  # again: same files, nothing else

    assert settings.config_file.read_text() == containerd.render_config(settings)
    assert json.loads(settings.conflist_file.read_text()) == containerd.cni_conflist(settings)
    assert settings.registry_config_dir.is_dir()
    assert sorted(p.name for p in settings.cni_conf_dir.iterdir()) == ["10-nodeless.conflist"]


def test_a_registry_host_file_points_containerd_at_a_plain_http_registry(
    settings: containerd.ContainerdSettings,
) -> None:
    path = containerd.write_registry_host(
        settings, "127.0.0.1:5000", "http://127.0.0.1:5000", skip_verify=True
    )

    assert path == settings.registry_config_dir / "127.0.0.1:5000" / "hosts.toml"
    assert tomllib.loads(path.read_text()) == {
        "server": "http://127.0.0.1:5000",
        "host": {
            "http://127.0.0.1:5000": {"capabilities": ["pull", "resolve"], "skip_verify": True}
        },
    }
    with pytest.raises(ValueError):
        containerd.write_registry_host(settings, "../etc", "http://x")


def test_missing_cni_plugins_are_named(tmp_path: Path) -> None:
    settings = containerd.ContainerdSettings(tmp_path, cni_bin_dir=tmp_path / "cni")
    (tmp_path / "cni").mkdir()
    (tmp_path / "cni" / "bridge").write_text("")

    missing = containerd.missing_binaries(settings)

    assert str(tmp_path / "cni" / "portmap") in missing
    assert str(tmp_path / "cni" / "host-local") in missing
    assert str(tmp_path / "cni" / "bridge") not in missing


def test_why_containerd_cannot_run_is_said_in_words(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = containerd.ContainerdSettings(tmp_path, cni_bin_dir=tmp_path / "no-cni")

    monkeypatch.setattr(containerd.os, "geteuid", lambda: 1000)
    assert containerd.unavailable_reason(settings) == (
        "containerd needs root: run as root (or with sudo)"
    )
    monkeypatch.setattr(containerd.os, "geteuid", lambda: 0)
    reason = containerd.unavailable_reason(settings)
    assert reason.startswith("missing ") and str(tmp_path / "no-cni" / "bridge") in reason
    assert reason.endswith("run scripts/install-system-packages.sh")


async def test_a_too_long_socket_path_is_refused_before_starting(tmp_path: Path) -> None:
    settings = containerd.ContainerdSettings(tmp_path / ("d" * 120))

    with pytest.raises(containerd.ContainerdError, match="shorter data directory"):
        await containerd.Containerd(settings).start()


# --- OCI images ---


def _layer_members(layer: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        return {m.name: m for m in tar.getmembers()}


def test_image_digests_are_consistent() -> None:
    image = sandboximages.build_image(sandboximages.PAUSE, FAKE_BUSYBOX, arch="amd64")

    manifest = json.loads(image.manifest.data)
    config = json.loads(image.config.data)
    index = json.loads(image.index)
    for blob in image.blobs:
        assert blob.digest == "sha256:" + hashlib.sha256(blob.data).hexdigest()
    assert manifest["config"] == {
        "mediaType": sandboximages.MEDIA_TYPE_CONFIG,
        "digest": image.config.digest,
        "size": len(image.config.data),
    }
    assert manifest["layers"] == [
        {
            "mediaType": sandboximages.MEDIA_TYPE_LAYER,
            "digest": image.layer.digest,
            "size": len(image.layer.data),
        }
    ]
    # An uncompressed layer's diff ID is its digest.
    assert config["rootfs"] == {"type": "layers", "diff_ids": [image.layer.digest]}
    [entry] = index["manifests"]
    assert entry["digest"] == image.manifest.digest
    assert entry["size"] == len(image.manifest.data)
    assert entry["platform"] == {"architecture": "amd64", "os": "linux"}


def test_image_is_named_for_ctr_import() -> None:
    image = sandboximages.build_image(sandboximages.PAUSE, FAKE_BUSYBOX)

    [entry] = json.loads(image.index)["manifests"]

    assert entry["annotations"]["io.containerd.image.name"] == "nodeless.local/pause:1"


def test_pause_image_runs_a_process_that_stops_on_sigterm() -> None:
    image = sandboximages.build_image(sandboximages.PAUSE, FAKE_BUSYBOX, arch="arm64")

    config = json.loads(image.config.data)

    assert config["architecture"] == "arm64"
    assert config["os"] == "linux"
    entrypoint = config["config"]["Entrypoint"]
    assert entrypoint[:3] == ["/bin/busybox", "sh", "-c"]
    assert "trap 'exit 0' TERM" in entrypoint[3]
    assert config["config"]["Env"] == ["PATH=/bin"]


def test_layer_holds_busybox_executable_and_applet_links() -> None:
    layer = sandboximages.build_layer(FAKE_BUSYBOX, ["sh", "echo"])

    members = _layer_members(layer)
    busybox = members["bin/busybox"]
    assert busybox.isfile()
    assert busybox.mode == 0o755
    assert (busybox.uid, busybox.gid, busybox.mtime) == (0, 0, 0)
    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        extracted = tar.extractfile("bin/busybox")
        assert extracted is not None and extracted.read() == FAKE_BUSYBOX
    for applet in ("sh", "echo"):
        assert members[f"bin/{applet}"].issym()
        assert members[f"bin/{applet}"].linkname == "busybox"
    assert members["tmp"].mode == 0o1777
    assert {"proc", "sys", "dev", "etc"} <= set(members)


def test_images_are_reproducible() -> None:
    first = sandboximages.build_image(sandboximages.BUSYBOX, FAKE_BUSYBOX, arch="amd64")
    second = sandboximages.build_image(sandboximages.BUSYBOX, FAKE_BUSYBOX, arch="amd64")

    assert first.manifest.digest == second.manifest.digest
    assert first.index == second.index


def test_archive_is_an_oci_image_layout(tmp_path: Path) -> None:
    image = sandboximages.build_image(sandboximages.PAUSE, FAKE_BUSYBOX)

    path = sandboximages.write_archive(image, tmp_path / "pause.tar")

    with tarfile.open(path) as tar:
        files = {m.name: tar.extractfile(m) for m in tar.getmembers() if m.isfile()}
        contents = {name: f.read() for name, f in files.items() if f is not None}
    assert json.loads(contents["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    assert contents["index.json"] == image.index
    blobs = {n: data for n, data in contents.items() if n.startswith("blobs/sha256/")}
    assert len(blobs) == 3
    for name, data in blobs.items():
        assert name.removeprefix("blobs/sha256/") == hashlib.sha256(data).hexdigest()
    assert f"blobs/sha256/{image.manifest.digest.removeprefix('sha256:')}" in blobs


def test_an_image_can_name_the_user_it_runs_as() -> None:
    spec = sandboximages.BusyboxImage("nodeless.local/nonroot:1", user="1000:1000")

    config = json.loads(sandboximages.build_image(spec, FAKE_BUSYBOX).config.data)

    plain = json.loads(sandboximages.build_image(sandboximages.BUSYBOX, FAKE_BUSYBOX).config.data)
    assert config["config"]["User"] == "1000:1000"
    assert "User" not in plain["config"]


@pytest.mark.skipif(not sandboximages.BUSYBOX_PATH.is_file(), reason="busybox is not installed")
def test_all_applets_of_the_host_busybox_are_listed() -> None:
    applets = sandboximages.all_applets()

    assert {"sh", "sleep", "env", "id", "cat"} <= set(applets)
    assert list(applets) == sorted(applets)


def test_goarch_uses_go_architecture_names() -> None:
    assert sandboximages.goarch("x86_64") == "amd64"
    assert sandboximages.goarch("aarch64") == "arm64"
    assert sandboximages.goarch("riscv64") == "riscv64"


def test_a_missing_or_dynamic_busybox_is_refused(tmp_path: Path) -> None:
    dynamic = tmp_path / "busybox"
    dynamic.write_bytes(b"\x7fELF\x02\x01\x01\x00/lib64/ld-linux-x86-64.so.2\x00")

    with pytest.raises(sandboximages.ImageBuildError, match="busybox-static"):
        sandboximages.read_busybox(tmp_path / "absent")
    with pytest.raises(sandboximages.ImageBuildError, match="dynamically linked"):
        sandboximages.read_busybox(dynamic)


# --- the CRI client and runtime.proto ---


def test_every_rpc_the_client_calls_is_in_runtime_proto() -> None:
    declared = {
        f"/{service.full_name}/{method.name}": method
        for service in pb.DESCRIPTOR.services_by_name.values()
        for method in service.methods
    }

    for method in clients.METHODS:
        rpc = declared[method.path]
        assert rpc.input_type is method.request.DESCRIPTOR
        assert rpc.output_type is method.response.DESCRIPTOR
    assert set(declared) == {m.path for m in clients.METHODS}


# Field numbers copied from k8s.io/cri-api pkg/apis/runtime/v1/api.proto:
# the wire format depends on them, the names are only for us.
UPSTREAM_FIELD_NUMBERS = [
    ("VersionResponse", "runtime_api_version", 4),
    ("PodSandboxConfig", "linux", 8),
    ("PodSandboxStatus", "network", 5),
    ("PodSandboxStatus", "runtime_handler", 9),
    ("PodSandboxStatusResponse", "containers_statuses", 3),
    ("LinuxSandboxSecurityContext", "run_as_group", 8),
    ("LinuxSandboxSecurityContext", "seccomp", 9),
    ("LinuxContainerSecurityContext", "run_as_group", 12),
    ("LinuxContainerSecurityContext", "no_new_privs", 11),
    ("LinuxContainerSecurityContext", "apparmor", 16),
    ("LinuxContainerResources", "unified", 9),
    ("LinuxContainerResources", "memory_swap_limit_in_bytes", 10),
    ("ContainerConfig", "labels", 9),
    ("ContainerConfig", "linux", 15),
    ("ContainerStatus", "resources", 16),
    ("ContainerStatus", "image_id", 17),
    ("Container", "image_id", 10),
    ("ImageSpec", "user_specified_image", 18),
    ("Namespace", "options", 2),
    ("PullImageRequest", "sandbox_config", 3),
    ("Image", "pinned", 8),
]


@pytest.mark.parametrize(("message", "field", "number"), UPSTREAM_FIELD_NUMBERS)
def test_proto_field_numbers_match_upstream(message: str, field: str, number: int) -> None:
    assert pb.DESCRIPTOR.message_types_by_name[message].fields_by_name[field].number == number


def test_proto_package_is_upstreams() -> None:
    assert pb.DESCRIPTOR.package == "runtime.v1"
    assert set(pb.DESCRIPTOR.services_by_name) == {"RuntimeService", "ImageService"}


def test_generated_code_matches_runtime_proto(tmp_path: Path) -> None:
    """runtime_pb2 was regenerated after the last edit of runtime.proto
    (compared as descriptors, so any protoc version can check it)."""
    pytest.importorskip("grpc_tools")
    from google.protobuf import descriptor_pb2

    proto = "nodeless/instances/providers/cri/runtime.proto"
    out = tmp_path / "runtime.pb"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{REPO / 'src'}",
            f"--descriptor_set_out={out}",
            str(REPO / "src" / proto),
        ],
        check=True,
    )
    [from_proto] = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file
    committed = descriptor_pb2.FileDescriptorProto.FromString(pb.DESCRIPTOR.serialized_pb)

    def without_json_names(messages: Any) -> None:  # protoc adds them, gencode strips them
        for m in messages:
            for f in m.field:
                f.ClearField("json_name")
            without_json_names(m.nested_type)

    without_json_names(from_proto.message_type)
    assert from_proto == committed, "runtime_pb2.py is stale: run scripts/generate-cri.sh"


def test_runtime_endpoints_become_grpc_targets() -> None:
    assert clients.grpc_target("/run/containerd/containerd.sock") == (
        "unix:///run/containerd/containerd.sock"
    )
    assert clients.grpc_target("unix:///x.sock") == "unix:///x.sock"


async def test_grpc_failures_become_cri_errors_with_their_code(tmp_path: Path) -> None:
    """A real gRPC server on a unix socket, answering like a runtime would."""

    async def version(request: pb.VersionRequest, context: Any) -> pb.VersionResponse:
        return pb.VersionResponse(
            version=request.version, runtime_name="fake", runtime_api_version="v1"
        )

    async def container_status(request: pb.ContainerStatusRequest, context: Any) -> None:
        await context.abort(grpc.StatusCode.NOT_FOUND, f"container {request.container_id!r}")

    handlers = {
        "Version": grpc.unary_unary_rpc_method_handler(
            version,
            request_deserializer=pb.VersionRequest.FromString,
            response_serializer=pb.VersionResponse.SerializeToString,
        ),
        "ContainerStatus": grpc.unary_unary_rpc_method_handler(
            container_status,
            request_deserializer=pb.ContainerStatusRequest.FromString,
            response_serializer=pb.ContainerStatusResponse.SerializeToString,
        ),
    }
    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("runtime.v1.RuntimeService", handlers),)
    )
    socket = tmp_path / "cri.sock"
    server.add_insecure_port(f"unix://{socket}")
    await server.start()
    try:
        async with clients.CriClient(str(socket)) as client:
            version = await client.version()
            with pytest.raises(clients.CriError) as missing:
                await client.container_status("abc")
            with pytest.raises(clients.CriError) as unimplemented:
                await client.list_images()
    finally:
        await server.stop(None)

    assert (version.version, version.runtime_name) == (clients.KUBELET_API_VERSION, "fake")
    assert missing.value.not_found
    assert missing.value.method == "ContainerStatus"
    assert "abc" in missing.value.details
    assert unimplemented.value.code == grpc.StatusCode.UNIMPLEMENTED
    assert not unimplemented.value.not_found


async def test_a_closed_client_calls_again_on_a_new_channel(tmp_path: Path) -> None:
    """Calls made after ``close`` go over a fresh channel, not the closed
    one's cached callables."""
    calls = 0

    async def version(request: pb.VersionRequest, context: Any) -> pb.VersionResponse:
        nonlocal calls
        calls += 1
        return pb.VersionResponse(version=request.version, runtime_name="fake")

    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "runtime.v1.RuntimeService",
                {
                    "Version": grpc.unary_unary_rpc_method_handler(
                        version,
                        request_deserializer=pb.VersionRequest.FromString,
                        response_serializer=pb.VersionResponse.SerializeToString,
                    )
                },
            ),
        )
    )
    socket = tmp_path / "cri.sock"
    server.add_insecure_port(f"unix://{socket}")
    await server.start()
    try:
        client = clients.CriClient(str(socket))
        first = await client.version()
        again = await client.version()
        await client.close()
        after_close = await client.version()
        await client.close()
    finally:
        await server.stop(None)

    assert [v.runtime_name for v in (first, again, after_close)] == ["fake"] * 3
    assert calls == 3


async def test_an_absent_runtime_is_unavailable(tmp_path: Path) -> None:
    async with clients.CriClient(str(tmp_path / "none.sock"), timeout=5) as client:
        with pytest.raises(clients.CriError) as absent:
            await client.version()

    assert absent.value.unavailable


NAT_DUMP = """\
*nat
:POSTROUTING ACCEPT [0:0]
:CNI-aaaa - [0:0]
-A POSTROUTING -s 10.77.0.5/32 -m comment --comment "name: \\"nodeless\\" id: \\"gone1\\"" -j CNI-aaaa
-A POSTROUTING -s 10.77.0.6/32 -m comment --comment "name: \\"nodeless\\" id: \\"live1\\"" -j CNI-bbbb
-A POSTROUTING -s 10.88.0.7/32 -m comment --comment "name: \\"nodeless\\" id: \\"other\\"" -j CNI-cccc
-A POSTROUTING -s 10.77.0.8/32 -m comment --comment "name: \\"elsewhere\\" id: \\"gone2\\"" -j CNI-dddd
-A CNI-aaaa -d 10.77.0.0/16 -m comment --comment "name: \\"nodeless\\" id: \\"gone1\\"" -j ACCEPT
-A CNI-aaaa ! -d 224.0.0.0/4 -m comment --comment "name: \\"nodeless\\" id: \\"gone1\\"" -j MASQUERADE
-A CNI-bbbb -d 10.77.0.0/16 -m comment --comment "name: \\"nodeless\\" id: \\"live1\\"" -j ACCEPT
-A CNI-cccc -d 10.88.0.0/16 -m comment --comment "name: \\"nodeless\\" id: \\"other\\"" -j ACCEPT
-A CNI-eeee -d 10.77.0.0/16 -m comment --comment "name: \\"nodeless\\" id: \\"gone3\\"" -j ACCEPT
-A CNI-eeee ! -d 224.0.0.0/4 -m comment --comment "name: \\"nodeless\\" id: \\"gone3\\"" -j MASQUERADE
-A POSTROUTING -s 10.77.0.0/16 ! -o nlbr0 -j MASQUERADE
COMMIT
"""


def test_only_this_networks_masquerade_of_gone_sandboxes_in_its_cidr_is_stale(
    settings: containerd.ContainerdSettings,
) -> None:
    stale = containerd.stale_masquerade(NAT_DUMP, settings, {"live1"})

    assert stale.jumps == (
        (
            "POSTROUTING",
            "-s",
            "10.77.0.5/32",
            "-m",
            "comment",
            "--comment",
            'name: "nodeless" id: "gone1"',
            "-j",
            "CNI-aaaa",
        ),
    )
    # CNI-eeee lost its jump to a half-done DEL: still this network's, still stale
    assert stale.chains == {"CNI-aaaa", "CNI-eeee"}
