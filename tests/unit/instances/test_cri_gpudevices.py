"""GPU instances on real containers: the host's NVIDIA devices found, shared
whole among instances and containers, and handed over as CRI devices,
mounts and variables (or CDI names), checked without a GPU or containerd."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from nodeless.instances.providers import base
from nodeless.instances.providers.cri import containerd, gpudevices, podconfigs


def host_tree(tmp_path: Path, gpus: int = 2) -> gpudevices.HostGpus:
    dev, lib, other_lib, bin_ = (tmp_path / d for d in ("dev", "lib", "lib64", "bin"))
    for d in (dev, lib, other_lib, bin_):
        d.mkdir()
    for name in [f"nvidia{i}" for i in range(gpus)] + ["nvidiactl", "nvidia-uvm", "null"]:
        (dev / name).touch()
    for name in ("libcuda.so.535.104", "libnvidia-ml.so.1", "libc.so.6"):
        (lib / name).write_text(name)
    (other_lib / "libcuda.so.535.104").write_text("shadowed")
    (bin_ / "nvidia-smi").write_text("#!/bin/sh\n")
    return gpudevices.discover(
        dev, library_dirs=[lib, other_lib], binary_dirs=[bin_], cdi_dirs=[tmp_path / "cdi"]
    )


def gpu_pod(*containers: dict[str, Any], init: tuple[dict[str, Any], ...] = ()) -> dict[str, Any]:
    return {
        "metadata": {"name": "train", "namespace": "ml", "uid": "uid-1"},
        "spec": {"initContainers": list(init), "containers": list(containers)},
    }


def gpus(name: str, count: int | None) -> dict[str, Any]:
    limits = {} if count is None else {"nvidia.com/gpu": str(count)}
    return {"name": name, "image": "cuda:12", "resources": {"limits": limits}}


def test_discovery_finds_gpu_nodes_control_nodes_driver_libraries_and_tools(
    tmp_path: Path,
) -> None:
    host = host_tree(tmp_path)

    assert host.indices == (0, 1)
    assert [p.name for p in host.control] == ["nvidiactl", "nvidia-uvm"]
    assert sorted(p.name for p in host.libraries) == ["libcuda.so.535.104", "libnvidia-ml.so.1"]
    # the first library directory wins for a name found twice
    assert all(p.parent.name == "lib" for p in host.libraries)
    assert [p.name for p in host.binaries] == ["nvidia-smi"]


def test_a_host_without_nvidia_devices_has_no_gpus(tmp_path: Path) -> None:
    (tmp_path / "null").touch()

    assert gpudevices.discover(tmp_path) == gpudevices.HostGpus(device_dir=tmp_path)
    assert gpudevices.discover(tmp_path / "missing").indices == ()


def test_cdi_specs_of_kind_nvidia_gpu_name_the_gpus_in_json_and_yaml(tmp_path: Path) -> None:
    etc, run = tmp_path / "etc", tmp_path / "run"
    etc.mkdir()
    run.mkdir()
    spec = {"cdiVersion": "0.5.0", "kind": "nvidia.com/gpu", "devices": [{"name": "0"}]}
    (etc / "nvidia.json").write_text(json.dumps(spec))
    (run / "nvidia.yaml").write_text("kind: nvidia.com/gpu\ndevices:\n- name: all\n- name: '1'\n")
    (run / "other.yaml").write_text("kind: vendor.com/fpga\ndevices:\n- name: '7'\n")
    (run / "broken.json").write_text("{")

    assert gpudevices.cdi_gpu_names([etc, run, tmp_path / "missing"]) == {"0", "1", "all"}


@pytest.mark.parametrize(
    ("name", "version", "supported"),
    [
        ("containerd", "1.6.20~ds1", False),
        ("containerd", "1.7.0", True),
        ("containerd", "v2.0.1", True),
        ("cri-o", "1.29.0", False),
        ("containerd", "", False),
    ],
)
def test_cdi_is_used_only_where_the_runtime_resolves_it(
    name: str, version: str, supported: bool
) -> None:
    assert gpudevices.cdi_supported(name, version) is supported


def test_gpus_are_allocated_whole_and_never_twice() -> None:
    allocator = gpudevices.GpuAllocator([0, 1, 2])

    first = allocator.allocate("i-a", 2)
    again = allocator.allocate("i-a", 2)
    with pytest.raises(gpudevices.GpuUnavailable, match="only 1 of this host's 3 GPUs are free"):
        allocator.allocate("i-b", 2)
    second = allocator.allocate("i-b", 1)
    allocator.release("i-a")

    assert (first, again, second) == ((0, 1), (0, 1), (2,))
    assert allocator.free() == [0, 1]


def test_restored_gpus_are_held_as_before_the_restart() -> None:
    allocator = gpudevices.GpuAllocator([0, 1])
    allocator.restore("i-a", gpudevices.decode_indices(gpudevices.encode_indices([1])))

    assert allocator.allocate("i-b", 1) == (0,)
    with pytest.raises(gpudevices.GpuUnavailable):
        allocator.allocate("i-c", 1)
    assert gpudevices.decode_indices("garbage") == ()


def test_a_host_without_gpus_says_so() -> None:
    with pytest.raises(gpudevices.GpuUnavailable, match="this host has no NVIDIA GPU"):
        gpudevices.GpuAllocator([]).allocate("i-a", 1)


def test_containers_share_the_instance_gpus_by_their_limits() -> None:
    pod = gpu_pod(gpus("a", 1), gpus("sidecar", None), gpus("b", 2), init=(gpus("warm", 1),))

    shares = gpudevices.container_shares(pod, (4, 5, 6))

    assert shares == {"warm": (4,), "a": (4,), "b": (5, 6)}


def test_an_instance_sized_for_gpus_without_limits_gives_every_container_all_of_them() -> None:
    pod = gpu_pod(gpus("a", None), gpus("b", None))

    assert gpudevices.container_shares(pod, (0, 1)) == {"a": (0, 1), "b": (0, 1)}
    assert gpudevices.container_shares(pod, ()) == {}


def test_exposure_hands_over_device_nodes_and_mounts_driver_files_read_only(
    tmp_path: Path,
) -> None:
    host = host_tree(tmp_path)

    exposure = gpudevices.exposure(host, (1,), use_cdi=False)

    assert [
        (d.container_path, Path(d.host_path).name, d.permissions) for d in exposure.devices
    ] == [
        ("/dev/nvidia1", "nvidia1", "rwm"),
        ("/dev/nvidiactl", "nvidiactl", "rwm"),
        ("/dev/nvidia-uvm", "nvidia-uvm", "rwm"),
    ]
    assert sorted((m.container_path, m.readonly) for m in exposure.mounts) == [
        ("/usr/local/nvidia/bin/nvidia-smi", True),
        ("/usr/local/nvidia/lib64/libcuda.so.535.104", True),
        ("/usr/local/nvidia/lib64/libnvidia-ml.so.1", True),
    ]
    assert exposure.env == {"NVIDIA_VISIBLE_DEVICES": "1"}
    assert not exposure.cdi_devices


def test_exposure_uses_cdi_names_when_the_runtime_and_a_spec_allow(tmp_path: Path) -> None:
    host = gpudevices.HostGpus(indices=(0, 1), cdi_names=frozenset({"0", "all"}))

    by_cdi = gpudevices.exposure(host, (0,), use_cdi=True)
    unnamed = gpudevices.exposure(host, (1,), use_cdi=True)
    old_runtime = gpudevices.exposure(host, (0,), use_cdi=False)

    assert [d.name for d in by_cdi.cdi_devices] == ["nvidia.com/gpu=0"]
    assert not by_cdi.devices and not by_cdi.mounts
    assert [d.container_path for d in unnamed.devices] == ["/dev/nvidia1"]
    assert [d.container_path for d in old_runtime.devices] == ["/dev/nvidia0"]


def test_container_config_carries_the_gpu_share_and_its_variable_wins(tmp_path: Path) -> None:
    host = host_tree(tmp_path)
    container = gpus("a", 1) | {"env": [{"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"}]}
    pod = gpu_pod(container, gpus("plain", None) | {"resources": {}})
    request = base.InstanceRequest("i-1", pod, "zone-a", "gpu-1xT4", 4, 15, gpu_count=1)
    paths = podconfigs.PodPaths.for_request(tmp_path / "pods", request)
    context = podconfigs.PodContext(
        request=request,
        paths=paths,
        owner="nodeless",
        gpus=gpudevices.container_exposures(host, pod, (1,), use_cdi=False),
    )

    config = podconfigs.container_config(context, container, init=False, attempt=0, image_ref="x")
    plain = podconfigs.container_config(
        context, pod["spec"]["containers"][1], init=False, attempt=0, image_ref="x"
    )

    assert [d.container_path for d in config.devices] == [
        "/dev/nvidia1",
        "/dev/nvidiactl",
        "/dev/nvidia-uvm",
    ]
    assert "/usr/local/nvidia/lib64/libcuda.so.535.104" in [m.container_path for m in config.mounts]
    assert [(e.key, e.value) for e in config.envs if e.key == "NVIDIA_VISIBLE_DEVICES"] == [
        ("NVIDIA_VISIBLE_DEVICES", "1")
    ]
    assert not plain.devices
    assert not any(m.container_path.startswith("/usr/local/nvidia") for m in plain.mounts)


def test_the_sandbox_remembers_its_gpus_for_adoption(tmp_path: Path) -> None:
    request = base.InstanceRequest("i-1", gpu_pod(gpus("a", 2)), "zone-a", "g", 8, 30, 2)
    paths = podconfigs.PodPaths.for_request(tmp_path, request)

    config = podconfigs.sandbox_config(
        request, paths, owner="nodeless", cgroup_parent="/x", gpus=(0, 3)
    )
    plain = podconfigs.sandbox_config(request, paths, owner="nodeless", cgroup_parent="/x")

    assert gpudevices.decode_indices(config.annotations[gpudevices.ANNOTATION_GPUS]) == (0, 3)
    assert gpudevices.ANNOTATION_GPUS not in plain.annotations


def test_containerd_config_enables_cdi_only_with_spec_dirs(tmp_path: Path) -> None:
    plain = containerd.ContainerdSettings(tmp_path)
    with_cdi = containerd.ContainerdSettings(tmp_path, cdi_spec_dirs=("/etc/cdi", "/var/run/cdi"))

    cri = "io.containerd.grpc.v1.cri"
    assert "enable_cdi" not in containerd.containerd_config(plain)["plugins"][cri]
    enabled = containerd.containerd_config(with_cdi)["plugins"][cri]
    assert (enabled["enable_cdi"], enabled["cdi_spec_dirs"]) == (True, ["/etc/cdi", "/var/run/cdi"])


def test_a_gpu_count_is_read_as_sizing_reads_quantities() -> None:
    written = {"name": "a", "image": "cuda:12", "resources": {"limits": {"nvidia.com/gpu": "1.0"}}}

    assert gpudevices.gpu_limit(written) == 1
    assert gpudevices.container_shares(gpu_pod(written, gpus("b", None)), (3, 4)) == {"a": (3,)}
