"""Pod specs translated into CRI configs: every kubelet rule the CRI provider
applies, checked without containerd."""

from __future__ import annotations

import base64
import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest

from nodeless.instances.providers import base
from nodeless.instances.providers.cri import podconfigs
from nodeless.instances.providers.cri import runtime_pb2 as pb


def make_pod(container: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    app = {"name": "app", "image": "busybox:1.36", **(container or {})}
    return {
        "metadata": {
            "name": "web",
            "namespace": "shop",
            "uid": "uid-1",
            "labels": {"app": "web", "tier": "front"},
            "annotations": {"team": "blue"},
        },
        "spec": {
            "containers": [app],
            "nodeName": "nodeless-zone-a",
            "serviceAccountName": "builder",
            **spec,
        },
    }


def make_request(
    pod: dict[str, Any], *, vcpu: float = 0.5, memory_gib: float = 1.0
) -> base.InstanceRequest:
    return base.InstanceRequest("i-1", pod, "zone-a", "0.5-1Gi", vcpu, memory_gib)


def context(
    pod: dict[str, Any],
    tmp_path: Path,
    *,
    objects: dict[tuple[str, str], dict[str, Any] | None] | None = None,
    **request: Any,
) -> podconfigs.PodContext:
    req = make_request(pod, **request)
    paths = podconfigs.PodPaths.for_request(tmp_path, req)
    volumes = {v.name: paths.empty_dir(v.name) for v in podconfigs.volumes(pod)}
    return podconfigs.PodContext(
        request=req,
        paths=paths,
        owner="nodeless",
        pod_ip="10.88.0.7",
        volume_dirs=volumes,
        etc_hosts=paths.etc_hosts,
        objects=objects or {},
    )


def config(pod: dict[str, Any], tmp_path: Path, **kwargs: Any) -> pb.ContainerConfig:
    image = kwargs.pop("image", None)
    ctx = context(pod, tmp_path, **kwargs)
    return podconfigs.container_config(
        ctx,
        pod["spec"]["containers"][0],
        init=False,
        attempt=2,
        image_ref="sha256:abc",
        image=image,
        termination_file=ctx.paths.termination_file("app", 2),
    )


def env_of(cfg: pb.ContainerConfig) -> dict[str, str]:
    return {kv.key: kv.value for kv in cfg.envs}


# --- the request rides on the sandbox ---


def test_the_instance_request_round_trips_through_its_annotation() -> None:
    request = make_request(make_pod())

    assert podconfigs.decode_request(podconfigs.encode_request(request)) == request
    with pytest.raises(ValueError):
        podconfigs.decode_request("[]")


def test_pod_paths_refuse_names_that_would_escape_the_data_dir(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        podconfigs.PodPaths(tmp_path, "default", "web", "../../etc")


# --- sandbox ---


def test_sandbox_config_carries_labels_request_logs_and_cgroup(tmp_path: Path) -> None:
    request = make_request(make_pod(shareProcessNamespace=True))
    paths = podconfigs.PodPaths.for_request(tmp_path, request)

    sandbox = podconfigs.sandbox_config(
        request, paths, owner="nodeless", cgroup_parent="/nodeless/poduid-1", attempt=1
    )

    assert (sandbox.metadata.name, sandbox.metadata.namespace, sandbox.metadata.uid) == (
        "web",
        "shop",
        "uid-1",
    )
    assert sandbox.metadata.attempt == 1
    assert sandbox.hostname == "web"
    assert sandbox.log_directory == str(tmp_path / "logs" / "shop_web_uid-1")
    assert sandbox.linux.cgroup_parent == "/nodeless/poduid-1"
    assert sandbox.linux.security_context.namespace_options.pid == pb.POD
    assert dict(sandbox.labels) == {
        "app": "web",
        "tier": "front",
        podconfigs.LABEL_POD_NAME: "web",
        podconfigs.LABEL_POD_NAMESPACE: "shop",
        podconfigs.LABEL_POD_UID: "uid-1",
        podconfigs.LABEL_INSTANCE: "i-1",
        podconfigs.LABEL_OWNER: "nodeless",
    }
    assert sandbox.annotations["team"] == "blue"
    decoded = podconfigs.decode_request(sandbox.annotations[podconfigs.ANNOTATION_REQUEST])
    assert decoded == request
    assert not sandbox.HasField("dns_config")  # the host's resolver


def test_hostname_follows_spec_hostname_and_is_truncated() -> None:
    long_name = "a" * 62 + "-b"
    assert podconfigs.hostname(make_pod(hostname="db-0")) == "db-0"
    assert podconfigs.hostname({"metadata": {"name": long_name}}) == "a" * 62


def test_host_ports_become_port_mappings() -> None:
    pod = make_pod(
        {
            "ports": [
                {"containerPort": 80},
                {"containerPort": 53, "hostPort": 5353, "protocol": "UDP"},
            ]
        }
    )

    [mapping] = podconfigs.port_mappings(pod)

    assert (mapping.protocol, mapping.container_port, mapping.host_port) == (pb.UDP, 53, 5353)


def test_cluster_first_dns_uses_the_cluster_dns_with_kubernetes_searches(
    tmp_path: Path,
) -> None:
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 10.0.0.2\nsearch corp.example\noptions rotate\n")
    dns = podconfigs.DnsSettings(("10.96.0.10",), "cluster.local", resolv)
    pod = make_pod(dnsConfig={"options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]})

    config = podconfigs.pod_dns_config(pod, dns)

    assert config is not None
    assert list(config.servers) == ["10.96.0.10"]
    assert list(config.searches) == [
        "shop.svc.cluster.local",
        "svc.cluster.local",
        "cluster.local",
        "corp.example",
    ]
    assert list(config.options) == ["ndots:2", "edns0"]


def test_dns_policies_without_cluster_dns_and_none(tmp_path: Path) -> None:
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 10.0.0.2\nsearch corp.example\n")
    dns = podconfigs.DnsSettings((), "cluster.local", resolv)
    none = make_pod(
        dnsPolicy="None",
        dnsConfig={"nameservers": ["1.1.1.1", "1.1.1.1", "8.8.8.8"], "searches": ["a.example"]},
    )
    default_with_extra = make_pod(dnsPolicy="Default", dnsConfig={"searches": ["b.example"]})

    assert podconfigs.pod_dns_config(make_pod(), dns) is None
    none_config = podconfigs.pod_dns_config(none, dns)
    assert none_config is not None
    assert (list(none_config.servers), list(none_config.searches)) == (
        ["1.1.1.1", "8.8.8.8"],
        ["a.example"],
    )
    merged = podconfigs.pod_dns_config(default_with_extra, dns)
    assert merged is not None
    assert (list(merged.servers), list(merged.searches)) == (
        ["10.0.0.2"],
        ["corp.example", "b.example"],
    )


def test_etc_hosts_names_the_pod_and_its_host_aliases() -> None:
    pod = make_pod(
        hostname="db-0",
        subdomain="db",
        hostAliases=[{"ip": "10.1.2.3", "hostnames": ["foo.local", "bar.local"]}],
    )

    hosts = podconfigs.etc_hosts(pod, "10.88.0.7").splitlines()

    assert hosts[0] == "# Kubernetes-managed hosts file."
    assert "127.0.0.1\tlocalhost" in hosts
    assert "10.88.0.7\tdb-0.db.shop.svc.cluster.local\tdb-0" in hosts
    assert hosts[-2:] == ["# Entries added by HostAliases.", "10.1.2.3\tfoo.local\tbar.local"]


# --- volumes ---


def test_empty_dirs_are_read_with_their_medium_and_size() -> None:
    pod = make_pod(
        volumes=[
            {"name": "scratch", "emptyDir": {}},
            {"name": "fast", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
        ]
    )

    assert podconfigs.volumes(pod) == [
        podconfigs.EmptyDir("scratch"),
        podconfigs.EmptyDir("fast", "Memory", 64 * 2**20),
    ]


@pytest.mark.parametrize(
    "source",
    [{"hostPath": {"path": "/"}}, {"nfs": {"server": "x", "path": "/"}}, {}],
)
def test_volume_types_this_provider_cannot_mount_are_unsupported(source: dict[str, Any]) -> None:
    with pytest.raises(podconfigs.UnsupportedVolume, match="not supported yet"):
        podconfigs.volumes(make_pod(volumes=[{"name": "v", **source}]))


def test_config_map_secret_downward_projected_and_claim_volumes_are_read() -> None:
    pod = make_pod(
        volumes=[
            {
                "name": "config",
                "configMap": {
                    "name": "settings",
                    "items": [{"key": "a", "path": "dir/a.txt", "mode": 0o600}],
                    "defaultMode": 0o640,
                    "optional": True,
                },
            },
            {"name": "creds", "secret": {"secretName": "db"}},
            {
                "name": "info",
                "downwardAPI": {
                    "items": [
                        {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                        {
                            "path": "cpu",
                            "resourceFieldRef": {
                                "containerName": "app",
                                "resource": "limits.cpu",
                                "divisor": "1m",
                            },
                        },
                    ]
                },
            },
            {
                "name": "api",
                "projected": {
                    "sources": [
                        {"serviceAccountToken": {"path": "token", "audience": "vault"}},
                        {"configMap": {"name": "ca", "items": [{"key": "c", "path": "ca.crt"}]}},
                    ]
                },
            },
            {"name": "data", "persistentVolumeClaim": {"claimName": "pgdata", "readOnly": True}},
        ]
    )

    found = podconfigs.volumes(pod)

    assert found == [
        podconfigs.FileVolume(
            "config",
            "configMap",
            (
                podconfigs.ObjectFiles(
                    "ConfigMap", "settings", (podconfigs.KeyPath("a", "dir/a.txt", 0o600),), True
                ),
            ),
            0o640,
        ),
        podconfigs.FileVolume("creds", "secret", (podconfigs.ObjectFiles("Secret", "db"),)),
        podconfigs.FileVolume(
            "info",
            "downwardAPI",
            (
                podconfigs.DownwardFiles(
                    (
                        podconfigs.FieldFile("labels", field_path="metadata.labels"),
                        podconfigs.FieldFile(
                            "cpu", resource="limits.cpu", container_name="app", divisor="1m"
                        ),
                    )
                ),
            ),
        ),
        podconfigs.FileVolume(
            "api",
            "projected",
            (
                podconfigs.TokenFile("token", "vault", 3600),
                podconfigs.ObjectFiles("ConfigMap", "ca", (podconfigs.KeyPath("c", "ca.crt"),)),
            ),
        ),
        podconfigs.ClaimVolume("data", "pgdata", read_only=True),
    ]
    assert [v.plugin for v in found] == [
        "kubernetes.io~configmap",
        "kubernetes.io~secret",
        "kubernetes.io~downward-api",
        "kubernetes.io~projected",
        "kubernetes.io~local-volume",
    ]
    assert podconfigs.read_only_volumes(found) == {"config", "creds", "info", "api", "data"}
    assert [v.name for v in found if isinstance(v, podconfigs.FileVolume) and v.memory] == [
        "creds",
        "api",
    ]


@pytest.mark.parametrize(
    ("volume", "error"),
    [
        ({"configMap": {"name": "x", "items": [{"key": "k", "path": "/etc/k"}]}}, "relative"),
        ({"configMap": {"name": "x", "items": [{"key": "k", "path": "a/../../k"}]}}, "relative"),
        ({"secret": {"secretName": "x", "items": [{"key": "k", "path": "..data"}]}}, "relative"),
        ({"secret": {"secretName": "x", "items": [{"key": "", "path": "k"}]}}, "needs a key"),
        ({"configMap": {"name": "x", "defaultMode": 0o1777}}, "between 0 and 0777"),
        ({"configMap": {"name": "x", "items": [{"key": "k", "path": "k", "mode": -1}]}}, "mode"),
        (
            {"downwardAPI": {"items": [{"path": "x", "fieldRef": {"fieldPath": "spec.os"}}]}},
            "unsupported fieldPath",
        ),
        ({"downwardAPI": {"items": [{"path": "x"}]}}, "needs one of"),
        ({"projected": {"sources": [{"clusterTrustBundle": {}}]}}, "not supported"),
        ({"projected": {"sources": [{"serviceAccountToken": {"path": "/t"}}]}}, "relative"),
        ({"persistentVolumeClaim": {}}, "claimName"),
    ],
)
def test_volumes_that_could_never_be_set_up_are_refused_before_anything_runs(
    volume: dict[str, Any], error: str
) -> None:
    with pytest.raises(podconfigs.UnsupportedVolume, match=error):
        podconfigs.volumes(make_pod(volumes=[{"name": "v", **volume}]))


def test_a_volume_name_used_twice_is_refused() -> None:
    pod = make_pod(volumes=[{"name": "v", "emptyDir": {}}, {"name": "v", "emptyDir": {}}])

    with pytest.raises(podconfigs.UnsupportedVolume, match="used twice"):
        podconfigs.volumes(pod)


# --- containers ---


def test_container_config_keeps_command_args_and_names_its_attempt(tmp_path: Path) -> None:
    pod = make_pod(
        {
            "command": ["sh", "-c"],
            "args": ["echo $(GREETING) $$(GREETING)"],
            "workingDir": "/srv",
            "env": [{"name": "GREETING", "value": "hi"}],
            "tty": True,
        }
    )

    cfg = config(pod, tmp_path)

    assert (cfg.metadata.name, cfg.metadata.attempt) == ("app", 2)
    assert list(cfg.command) == ["sh", "-c"]
    assert list(cfg.args) == ["echo hi $(GREETING)"]
    assert cfg.working_dir == "/srv"
    assert cfg.tty
    assert cfg.image.image == "sha256:abc"
    assert cfg.image.user_specified_image == "busybox:1.36"
    assert cfg.log_path == "app/2.log"
    assert cfg.labels[podconfigs.LABEL_CONTAINER_NAME] == "app"
    assert cfg.labels[podconfigs.LABEL_CONTAINER_TYPE] == podconfigs.CONTAINER_TYPE_APP
    assert cfg.annotations[podconfigs.ANNOTATION_RESTART_COUNT] == "2"


def test_no_command_leaves_the_image_entrypoint_to_the_runtime(tmp_path: Path) -> None:
    cfg = config(make_pod({"args": ["--port", "80"]}), tmp_path)

    assert list(cfg.command) == []
    assert list(cfg.args) == ["--port", "80"]


def test_mounts_hold_volumes_hosts_file_and_termination_message(tmp_path: Path) -> None:
    pod = make_pod(
        {
            "volumeMounts": [
                {"name": "scratch", "mountPath": "/scratch"},
                {"name": "scratch", "mountPath": "/logs", "subPath": "logs", "readOnly": True},
            ],
            "terminationMessagePath": "/tmp/why",
        },
        volumes=[{"name": "scratch", "emptyDir": {}}],
    )

    cfg = config(pod, tmp_path)

    volume = tmp_path / "pods" / "uid-1" / "volumes" / "kubernetes.io~empty-dir" / "scratch"
    mounts = [(m.container_path, m.host_path, m.readonly) for m in cfg.mounts]
    assert mounts == [
        ("/scratch", str(volume), False),
        ("/logs", str(volume / "logs"), True),
        ("/etc/hosts", str(tmp_path / "pods" / "uid-1" / "etc-hosts"), False),
        ("/tmp/why", str(tmp_path / "pods" / "uid-1" / "containers" / "app" / "2"), False),
    ]
    assert (volume / "logs").is_dir()


@pytest.mark.parametrize(
    ("mount", "error"),
    [
        ({"name": "missing", "mountPath": "/x"}, 'cannot find volume "missing"'),
        ({"name": "scratch", "mountPath": "/x", "subPath": "../up"}, "subPath"),
        ({"name": "scratch", "mountPath": "/x", "subPath": "/abs"}, "subPath"),
    ],
)
def test_bad_mounts_are_config_errors(tmp_path: Path, mount: dict[str, Any], error: str) -> None:
    pod = make_pod({"volumeMounts": [mount]}, volumes=[{"name": "scratch", "emptyDir": {}}])

    with pytest.raises(podconfigs.ConfigError, match=error) as raised:
        config(pod, tmp_path)
    assert raised.value.reason == "CreateContainerConfigError"


# --- environment ---


@pytest.mark.parametrize(
    ("text", "expanded"),
    [
        ("$(A)", "1"),
        ("x$(A)y$(B)z", "x1y2z"),
        ("$$(A)", "$(A)"),
        ("$(MISSING)", "$(MISSING)"),
        ("$(A", "$(A"),
        ("$A", "$A"),
        ("cost: 5$", "cost: 5$"),
        ("$$$$", "$$"),
    ],
)
def test_variable_expansion_follows_kubernetes(text: str, expanded: str) -> None:
    assert podconfigs.expand(text, {"A": "1", "B": "2"}) == expanded


def test_field_refs_resolve_from_the_pod_and_its_ip(tmp_path: Path) -> None:
    paths = {
        "NAME": "metadata.name",
        "NAMESPACE": "metadata.namespace",
        "UID": "metadata.uid",
        "TIER": "metadata.labels['tier']",
        "TEAM": "metadata.annotations['team']",
        "ABSENT": "metadata.labels['absent']",
        "NODE": "spec.nodeName",
        "SA": "spec.serviceAccountName",
        "POD_IP": "status.podIP",
        "HOST_IP": "status.hostIP",
    }
    env = [{"name": k, "valueFrom": {"fieldRef": {"fieldPath": v}}} for k, v in paths.items()]

    resolved = env_of(config(make_pod({"env": env}), tmp_path))

    assert resolved == {
        "NAME": "web",
        "NAMESPACE": "shop",
        "UID": "uid-1",
        "TIER": "front",
        "TEAM": "blue",
        "ABSENT": "",
        "NODE": "nodeless-zone-a",
        "SA": "builder",
        "POD_IP": "10.88.0.7",
        "HOST_IP": "10.88.0.7",
    }


def test_resource_refs_default_limits_to_the_instance_size(tmp_path: Path) -> None:
    def ref(resource: str, divisor: str = "1", container: str = "") -> dict[str, Any]:
        field = {"resource": resource, "divisor": divisor}
        if container:
            field["containerName"] = container
        return {"valueFrom": {"resourceFieldRef": field}}

    env = [
        {"name": "CPU", **ref("limits.cpu")},
        {"name": "CPU_M", **ref("limits.cpu", "1m")},
        {"name": "MEM", **ref("limits.memory")},
        {"name": "MEM_MI", **ref("limits.memory", "1Mi")},
        {"name": "REQ_CPU_M", **ref("requests.cpu", "1m")},
        {"name": "REQ_MEM", **ref("requests.memory")},
        {"name": "SIDE_MEM_MI", **ref("limits.memory", "1Mi", "side")},
    ]
    pod = make_pod({"env": env, "resources": {"requests": {"cpu": "100m"}}})
    pod["spec"]["containers"].append(
        {"name": "side", "image": "x", "resources": {"limits": {"memory": "128Mi"}}}
    )

    resolved = env_of(config(pod, tmp_path, vcpu=0.5, memory_gib=1.0))

    assert resolved == {
        "CPU": "1",  # 0.5 CPU rounds up to whole CPUs
        "CPU_M": "500",
        "MEM": str(2**30),
        "MEM_MI": "1024",
        "REQ_CPU_M": "100",
        "REQ_MEM": "0",
        "SIDE_MEM_MI": "128",
    }


def test_config_map_and_secret_references_resolve_from_fetched_objects(tmp_path: Path) -> None:
    secret = {"data": {"password": base64.b64encode(b"hunter2").decode()}}
    settings = {"data": {"LEVEL": "debug", "MODE": "fast"}}
    env = [
        {"name": "MODE", "value": "slow"},
        {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}},
        {
            "name": "MAYBE",
            "valueFrom": {"configMapKeyRef": {"name": "gone", "key": "x", "optional": True}},
        },
    ]
    pod = make_pod(
        {
            "envFrom": [
                {"configMapRef": {"name": "settings"}, "prefix": "CFG_"},
                {"configMapRef": {"name": "settings"}},
            ],
            "env": env,
        }
    )
    objects: dict[tuple[str, str], dict[str, Any] | None] = {
        ("ConfigMap", "settings"): settings,
        ("Secret", "db"): secret,
        ("ConfigMap", "gone"): None,
    }

    resolved = env_of(config(pod, tmp_path, objects=objects))

    assert podconfigs.referenced_objects(pod["spec"]["containers"][0]) == set(objects)
    assert resolved == {
        "CFG_LEVEL": "debug",
        "CFG_MODE": "fast",
        "LEVEL": "debug",
        "MODE": "slow",
        "PASSWORD": "hunter2",
    }


@pytest.mark.parametrize(
    ("env", "message"),
    [
        (
            [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "absent", "key": "k"}}}],
            'configmap "absent" not found',
        ),
        (
            [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "db", "key": "nope"}}}],
            "couldn't find key nope in Secret shop/db",
        ),
        (
            [{"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels"}}}],
            "unsupported fieldRef",
        ),
    ],
)
def test_unresolvable_environment_is_a_config_error(
    tmp_path: Path, env: list[dict[str, Any]], message: str
) -> None:
    objects: dict[tuple[str, str], dict[str, Any] | None] = {("Secret", "db"): {"data": {}}}

    with pytest.raises(podconfigs.ConfigError, match=message):
        config(make_pod({"env": env}), tmp_path, objects=objects)


# --- resources and security ---


def test_resources_come_from_the_instance_unless_the_container_asks_for_less() -> None:
    sized = podconfigs.linux_resources({}, 0.5, 1.0)
    lower = podconfigs.linux_resources(
        {"resources": {"limits": {"cpu": "250m", "memory": "64Mi"}, "requests": {"cpu": "100m"}}},
        0.5,
        1.0,
    )
    higher = podconfigs.linux_resources(
        {"resources": {"limits": {"cpu": "4", "memory": "8Gi"}}}, 0.5, 1.0
    )
    unsized = podconfigs.linux_resources({}, 0, 0)

    assert (sized.cpu_period, sized.cpu_quota, sized.memory_limit_in_bytes) == (
        100_000,
        50_000,
        2**30,
    )
    assert sized.cpu_shares == 512
    assert (lower.cpu_quota, lower.memory_limit_in_bytes, lower.cpu_shares) == (
        25_000,
        64 * 2**20,
        102,
    )
    assert (higher.cpu_quota, higher.memory_limit_in_bytes) == (50_000, 2**30)
    assert (unsized.cpu_quota, unsized.memory_limit_in_bytes, unsized.cpu_shares) == (0, 0, 2)


def test_security_context_merges_pod_and_container_settings() -> None:
    pod = make_pod(
        {
            "securityContext": {
                "runAsUser": 1000,
                "readOnlyRootFilesystem": True,
                "allowPrivilegeEscalation": False,
                "capabilities": {"add": ["NET_ADMIN"], "drop": ["ALL"]},
            }
        },
        securityContext={
            "runAsUser": 1,
            "runAsGroup": 2000,
            "supplementalGroups": [3000],
            "fsGroup": 4000,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    )

    context = podconfigs.security_context(pod, pod["spec"]["containers"][0], None)

    assert (context.run_as_user.value, context.run_as_group.value) == (1000, 2000)
    assert context.readonly_rootfs and context.no_new_privs and not context.privileged
    assert list(context.supplemental_groups) == [3000, 4000]
    assert list(context.capabilities.add_capabilities) == ["NET_ADMIN"]
    assert list(context.capabilities.drop_capabilities) == ["ALL"]
    assert context.seccomp.profile_type == pb.SecurityProfile.RuntimeDefault
    assert context.namespace_options.pid == pb.CONTAINER
    plain = podconfigs.security_context(make_pod(), {"name": "x"}, None)
    assert not plain.HasField("run_as_user") and not plain.no_new_privs
    assert plain.seccomp.profile_type == pb.SecurityProfile.Unconfined


def test_containers_get_the_kubelets_masked_and_read_only_proc_paths_unless_unmasked() -> None:
    plain = podconfigs.security_context(make_pod(), {"name": "x"}, None)
    unmasked = podconfigs.security_context(
        make_pod(), {"name": "x", "securityContext": {"procMount": "Unmasked"}}, None
    )
    default = podconfigs.security_context(
        make_pod(), {"name": "x", "securityContext": {"procMount": "Default"}}, None
    )

    assert "/proc/kcore" in plain.masked_paths and "/sys/firmware" in plain.masked_paths
    assert list(plain.readonly_paths) == [
        "/proc/bus",
        "/proc/fs",
        "/proc/irq",
        "/proc/sys",
        "/proc/sysrq-trigger",
    ]
    assert list(default.masked_paths) == list(plain.masked_paths)
    assert not unmasked.masked_paths and not unmasked.readonly_paths


@pytest.mark.parametrize(
    ("security", "image", "error"),
    [
        ({"runAsUser": 0}, pb.Image(), "runAsUser breaks non-root policy"),
        ({}, pb.Image(), "image will run as root"),
        ({}, pb.Image(uid=pb.Int64Value(value=0)), "image will run as root"),
        ({}, pb.Image(username="daemon"), "non-numeric user (daemon)"),
        ({"runAsUser": 1000}, pb.Image(), None),
        ({}, pb.Image(uid=pb.Int64Value(value=1000)), None),
    ],
)
def test_run_as_non_root_is_verified_against_the_user_it_will_run_as(
    security: dict[str, Any], image: pb.Image, error: str | None
) -> None:
    pod = make_pod({"securityContext": {"runAsNonRoot": True, **security}})

    if error is None:
        podconfigs.security_context(pod, pod["spec"]["containers"][0], image)
    else:
        with pytest.raises(podconfigs.ConfigError, match=re.escape(error)):
            podconfigs.security_context(pod, pod["spec"]["containers"][0], image)


# --- Service variables, as the kubelet sets them ---


def _service(name: str, namespace: str, ip: str, *ports: dict[str, Any]) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"clusterIP": ip, "ports": list(ports)},
    }


SERVICES = [
    _service("kubernetes", "default", "10.96.0.1", {"name": "https", "port": 443}),
    _service(
        "redis-master",
        "shop",
        "10.96.0.11",
        {"port": 6379},
        {"name": "metrics", "port": 9121, "protocol": "TCP"},
    ),
    _service("dns", "shop", "10.96.0.12", {"name": "dns", "port": 53, "protocol": "UDP"}),
    _service("headless", "shop", "None", {"port": 80}),
    _service("other", "elsewhere", "10.96.0.13", {"port": 80}),
]


def test_service_variables_follow_the_kubelets_names() -> None:
    env = podconfigs.service_env(SERVICES, "shop")
    assert env["KUBERNETES_SERVICE_HOST"] == "10.96.0.1"
    assert env["KUBERNETES_SERVICE_PORT"] == "443"
    assert env["KUBERNETES_SERVICE_PORT_HTTPS"] == "443"
    assert env["KUBERNETES_PORT"] == "tcp://10.96.0.1:443"
    assert env["KUBERNETES_PORT_443_TCP_ADDR"] == "10.96.0.1"
    assert {k: v for k, v in env.items() if k.startswith("REDIS_MASTER_")} == {
        "REDIS_MASTER_SERVICE_HOST": "10.96.0.11",
        "REDIS_MASTER_SERVICE_PORT": "6379",
        "REDIS_MASTER_SERVICE_PORT_METRICS": "9121",
        "REDIS_MASTER_PORT": "tcp://10.96.0.11:6379",
        "REDIS_MASTER_PORT_6379_TCP": "tcp://10.96.0.11:6379",
        "REDIS_MASTER_PORT_6379_TCP_PROTO": "tcp",
        "REDIS_MASTER_PORT_6379_TCP_PORT": "6379",
        "REDIS_MASTER_PORT_6379_TCP_ADDR": "10.96.0.11",
        "REDIS_MASTER_PORT_9121_TCP": "tcp://10.96.0.11:9121",
        "REDIS_MASTER_PORT_9121_TCP_PROTO": "tcp",
        "REDIS_MASTER_PORT_9121_TCP_PORT": "9121",
        "REDIS_MASTER_PORT_9121_TCP_ADDR": "10.96.0.11",
    }
    assert env["DNS_PORT_53_UDP_PROTO"] == "udp"
    # Headless Services and other namespaces give nothing.
    assert not any(k.startswith(("HEADLESS_", "OTHER_")) for k in env)


def test_without_service_links_only_the_api_server_is_named() -> None:
    env = podconfigs.service_env(SERVICES, "shop", enable_service_links=False)
    assert {k.split("_")[0] for k in env} == {"KUBERNETES"}


def test_a_containers_own_variables_win_and_may_refer_to_service_ones(tmp_path: Path) -> None:
    pod = make_pod(
        {
            "name": "app",
            "image": "busybox",
            "env": [
                {"name": "REDIS_MASTER_SERVICE_PORT", "value": "1"},
                {"name": "REDIS_URL", "value": "redis://$(REDIS_MASTER_SERVICE_HOST):6379"},
            ],
        }
    )
    ctx = context(pod, tmp_path)
    ctx = dataclasses.replace(ctx, service_env=podconfigs.service_env(SERVICES, "shop"))
    env = env_of(
        podconfigs.container_config(
            ctx,
            pod["spec"]["containers"][0],
            init=False,
            attempt=0,
            image_ref="sha256:abc",
            image=None,
            termination_file=ctx.paths.termination_file("app", 0),
        )
    )
    assert env["REDIS_MASTER_SERVICE_PORT"] == "1"
    assert env["REDIS_URL"] == "redis://10.96.0.11:6379"
    assert env["KUBERNETES_SERVICE_HOST"] == "10.96.0.1"
