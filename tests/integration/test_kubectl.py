"""The pinned kubectl against a real `nodeless up`: assertions on kubectl's own output.

Setup goes through `kubectl apply -f -` (JSON on the wire). The typed-client
commands that send protobuf bodies are collected at the end, in
``TestTypedClientCommands``.
"""

from __future__ import annotations

import json
import os
import queue
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.integration

KUBECTL = str(Path(sys.executable).parent / "kubectl")

CRD_GROUP = "kubectl.example.com"
CRD_NAME = f"widgets.{CRD_GROUP}"


# --- helpers ------------------------------------------------------------------------


def dump(obj: Any) -> str:
    """A manifest document: JSON is YAML, without YAML 1.1 surprises (`y` is a bool to kubectl)."""
    return json.dumps(obj, indent=1) + "\n"


def apply(cluster: Any, manifest: str, *args: str) -> str:
    out: str = cluster.kubectl("apply", "-f", "-", *args, input=manifest).stdout
    return out


def get_json(cluster: Any, *args: str, managed_fields: bool = False) -> dict[str, Any]:
    extra = ("--show-managed-fields",) if managed_fields else ()
    out = cluster.kubectl("get", *args, "-o", "json", *extra).stdout
    data: dict[str, Any] = json.loads(out)
    return data


def deployment_yaml(
    name: str,
    namespace: str,
    *,
    replicas: int = 2,
    image: str = "nginx:1.25",
    labels: dict[str, str] | None = None,
) -> str:
    obj = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app": name, **(labels or {})},
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "containers": [
                        {"name": "nginx", "image": image, "ports": [{"containerPort": 80}]},
                        {
                            "name": "sidecar",
                            "image": "busybox:1.36",
                            "command": ["sleep", "infinity"],
                        },
                    ]
                },
            },
        },
    }
    return dump(obj)


def configmap_yaml(
    name: str, namespace: str, labels: dict[str, str] | None = None, **data: str
) -> str:
    meta: dict[str, Any] = {"name": name, "namespace": namespace}
    if labels:
        meta["labels"] = labels
    return dump({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data})


def table(output: str) -> tuple[list[str], list[list[str]]]:
    """kubectl's column output → (header, rows), split on runs of 2+ spaces."""
    lines = [line for line in output.splitlines() if line.strip()]
    assert lines, f"no output: {output!r}"
    split = [re.split(r"\s{2,}", line.strip()) for line in lines]
    return split[0], split[1:]


def row_for(rows: list[list[str]], name: str) -> list[str]:
    for row in rows:
        if row[0] == name:
            return row
    raise AssertionError(f"no row {name!r} in {rows}")


# What every namespace holds from the start, as on upstream clusters.
PUBLISHED = frozenset({"kube-root-ca.crt"})


def names(output: str) -> set[str]:
    """`-o name` output → bare names, without what every namespace has."""
    return {line.split("/", 1)[1] for line in output.split() if "/" in line} - PUBLISHED


class Streaming:
    """A long-running kubectl (get -w) whose stdout lines arrive on a queue."""

    def __init__(self, cluster: Any, *args: str) -> None:
        env = dict(os.environ, KUBECONFIG=str(cluster.kubeconfig), HOME=str(cluster.data_dir))
        self.proc = subprocess.Popen(
            [KUBECTL, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def wait_for(self, predicate: Any, timeout: float = 15) -> str:
        deadline = time.monotonic() + timeout
        seen = []
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                if self.proc.poll() is not None and self.lines.empty():
                    stderr = self.proc.stderr.read() if self.proc.stderr else ""
                    raise AssertionError(
                        f"kubectl exited {self.proc.returncode}: {seen} {stderr}"
                    ) from None
                continue
            seen.append(line)
            if predicate(line):
                return line
        raise AssertionError(f"no matching line within {timeout}s; saw {seen}")

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)


@pytest.fixture
def web(cluster: Any, namespace: str) -> str:
    """A two-container Deployment `web` (2 replicas) in the test namespace."""
    apply(cluster, deployment_yaml("web", namespace))
    return "web"


# --- apply ----------------------------------------------------------------------------


def test_apply_multi_document(cluster: Any, namespace: str) -> None:
    manifest = "---\n".join(
        [
            deployment_yaml("web", namespace),
            configmap_yaml("cfg", namespace, a="1"),
            dump(
                {
                    "apiVersion": "v1",
                    "kind": "Service",
                    "metadata": {"name": "svc", "namespace": namespace},
                    "spec": {
                        "selector": {"app": "web"},
                        "ports": [{"port": 80, "targetPort": 8080}],
                    },
                }
            ),
        ]
    )
    first = apply(cluster, manifest)
    assert first.splitlines() == [
        "deployment.apps/web created",
        "configmap/cfg created",
        "service/svc created",
    ]
    again = apply(cluster, manifest)
    assert again.splitlines() == [
        "deployment.apps/web unchanged",
        "configmap/cfg unchanged",
        "service/svc unchanged",
    ]
    live = get_json(cluster, "deployment", "web", "-n", namespace)
    assert live["metadata"]["generation"] == 1
    annotation = live["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
    assert json.loads(annotation)["spec"]["replicas"] == 2


def test_apply_strict_rejects_unknown_field(cluster: Any, namespace: str) -> None:
    doc = yaml.safe_load(deployment_yaml("strict", namespace))
    doc["spec"]["bogus"] = 1
    result = cluster.kubectl("apply", "-f", "-", input=dump(doc), check=False)
    assert result.returncode != 0
    assert 'unknown field "spec.bogus"' in result.stderr
    missing = cluster.kubectl("get", "deployment", "strict", "-n", namespace, check=False)
    assert missing.returncode != 0
    assert "NotFound" in missing.stderr


def test_apply_changes_then_unchanged(cluster: Any, namespace: str) -> None:
    apply(cluster, configmap_yaml("cfg", namespace, a="1"))
    assert (
        apply(cluster, configmap_yaml("cfg", namespace, a="2")).strip()
        == "configmap/cfg configured"
    )
    assert (
        apply(cluster, configmap_yaml("cfg", namespace, a="2")).strip() == "configmap/cfg unchanged"
    )
    assert get_json(cluster, "configmap", "cfg", "-n", namespace)["data"] == {"a": "2"}


# --- get -------------------------------------------------------------------------------------


def test_get_deployment_columns(cluster: Any, namespace: str, web: str) -> None:
    header, rows = table(cluster.kubectl("get", "deployments", "-n", namespace).stdout)
    assert header == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    row = row_for(rows, "web")
    assert row[1:4] == ["0/2", "0", "0"]
    assert re.fullmatch(r"\d+s", row[4]), row

    header, rows = table(
        cluster.kubectl("get", "deploy", "web", "-n", namespace, "-o", "wide").stdout
    )
    assert header == [
        "NAME",
        "READY",
        "UP-TO-DATE",
        "AVAILABLE",
        "AGE",
        "CONTAINERS",
        "IMAGES",
        "SELECTOR",
    ]
    assert row_for(rows, "web")[5:] == ["nginx,sidecar", "nginx:1.25,busybox:1.36", "app=web"]


def test_get_output_formats(cluster: Any, namespace: str, web: str) -> None:
    as_yaml = yaml.safe_load(
        cluster.kubectl("get", "deploy", "web", "-n", namespace, "-o", "yaml").stdout
    )
    assert as_yaml["kind"] == "Deployment"
    assert as_yaml["apiVersion"] == "apps/v1"
    assert as_yaml["spec"]["replicas"] == 2
    assert as_yaml["metadata"]["namespace"] == namespace

    as_json = get_json(cluster, "deploy", "web", "-n", namespace)
    assert as_json["metadata"]["uid"] == as_yaml["metadata"]["uid"]
    assert [c["name"] for c in as_json["spec"]["template"]["spec"]["containers"]] == [
        "nginx",
        "sidecar",
    ]

    listed = get_json(cluster, "deployments", "-n", namespace)
    assert listed["kind"] == "List"
    assert [item["metadata"]["name"] for item in listed["items"]] == ["web"]

    jsonpath = cluster.kubectl(
        "get",
        "deploy",
        "web",
        "-n",
        namespace,
        "-o",
        "jsonpath={.spec.template.spec.containers[*].image}",
    ).stdout
    assert jsonpath == "nginx:1.25 busybox:1.36"
    assert cluster.kubectl("get", "deploy", "-n", namespace, "-o", "name").stdout.split() == [
        "deployment.apps/web"
    ]


def test_get_missing_object(cluster: Any, namespace: str) -> None:
    result = cluster.kubectl("get", "configmap", "nope", "-n", namespace, check=False)
    assert result.returncode == 1
    assert 'Error from server (NotFound): configmaps "nope" not found' in result.stderr


def test_get_watch(cluster: Any, namespace: str) -> None:
    apply(cluster, configmap_yaml("before", namespace, a="1"))
    watch = Streaming(cluster, "get", "configmaps", "-n", namespace, "-w")
    try:
        watch.wait_for(lambda line: line.split()[:1] == ["NAME"])
        watch.wait_for(lambda line: line.split()[:2] == ["before", "1"])
        apply(cluster, configmap_yaml("during", namespace, a="1"))
        watch.wait_for(lambda line: line.split()[:2] == ["during", "1"])
        cluster.kubectl("patch", "configmap", "during", "-n", namespace, "-p", '{"data":{"b":"2"}}')
        watch.wait_for(lambda line: line.split()[:2] == ["during", "2"])
    finally:
        watch.stop()


def test_get_watch_single_object_json(cluster: Any, namespace: str) -> None:
    apply(cluster, configmap_yaml("solo", namespace, a="1"))
    watch = Streaming(
        cluster, "get", "configmap", "solo", "-n", namespace, "-w", "-o", "jsonpath={.data}{'\\n'}"
    )
    try:
        watch.wait_for(lambda line: line == '{"a":"1"}')
        cluster.kubectl("patch", "configmap", "solo", "-n", namespace, "-p", '{"data":{"a":"9"}}')
        watch.wait_for(lambda line: line == '{"a":"9"}')
    finally:
        watch.stop()


# --- describe, label, annotate ------------------------------------------------------------


def test_describe_deployment(cluster: Any, namespace: str) -> None:
    apply(cluster, deployment_yaml("web", namespace, labels={"tier": "frontend"}))
    out = cluster.kubectl("describe", "deployment", "web", "-n", namespace).stdout
    assert re.search(r"^Name:\s+web$", out, re.M), out
    assert re.search(rf"^Namespace:\s+{namespace}$", out, re.M), out
    assert re.search(r"^Labels:\s+app=web$", out, re.M), out
    assert re.search(r"^\s+tier=frontend$", out, re.M), out
    assert re.search(r"^Selector:\s+app=web$", out, re.M), out
    assert re.search(
        r"^Replicas:\s+2 desired \| 0 updated \| 0 total \| 0 available \| 0 unavailable$",
        out,
        re.M,
    )
    assert re.search(r"^StrategyType:\s+RollingUpdate$", out, re.M), out
    assert "Pod Template:" in out
    assert re.search(r"^\s+Image:\s+nginx:1\.25$", out, re.M), out
    assert re.search(r"^\s+Image:\s+busybox:1\.36$", out, re.M), out
    assert re.search(r"^\s+Port:\s+80/TCP$", out, re.M), out
    assert re.search(r"^   nginx:$", out, re.M) and re.search(r"^   sidecar:$", out, re.M), out


def test_label_and_annotate(cluster: Any, namespace: str, web: str) -> None:
    k = cluster.kubectl
    assert (
        k("label", "deploy", "web", "-n", namespace, "tier=fe").stdout.strip()
        == "deployment.apps/web labeled"
    )
    assert get_json(cluster, "deploy", "web", "-n", namespace)["metadata"]["labels"] == {
        "app": "web",
        "tier": "fe",
    }

    clash = k("label", "deploy", "web", "-n", namespace, "tier=be", check=False)
    assert clash.returncode != 0
    assert "already has a value (fe)" in clash.stderr
    k("label", "deploy", "web", "-n", namespace, "tier=be", "--overwrite")
    assert get_json(cluster, "deploy", "web", "-n", namespace)["metadata"]["labels"]["tier"] == "be"

    assert (
        k("label", "deploy", "web", "-n", namespace, "tier-").stdout.strip()
        == "deployment.apps/web unlabeled"
    )
    assert get_json(cluster, "deploy", "web", "-n", namespace)["metadata"]["labels"] == {
        "app": "web"
    }

    assert (
        k("annotate", "deploy", "web", "-n", namespace, "example.com/note=hello").stdout.strip()
        == "deployment.apps/web annotated"
    )
    annotations = get_json(cluster, "deploy", "web", "-n", namespace)["metadata"]["annotations"]
    assert annotations["example.com/note"] == "hello"
    assert "kubectl.kubernetes.io/last-applied-configuration" in annotations

    k("annotate", "deploy", "web", "-n", namespace, "example.com/note-")
    annotations = get_json(cluster, "deploy", "web", "-n", namespace)["metadata"]["annotations"]
    assert "example.com/note" not in annotations
    assert "kubectl.kubernetes.io/last-applied-configuration" in annotations


def test_label_many_with_selector(cluster: Any, namespace: str) -> None:
    for name, app in (("a", "x"), ("b", "x"), ("c", "y")):
        apply(cluster, configmap_yaml(name, namespace, labels={"app": app}))
    out = cluster.kubectl(
        "label", "configmaps", "-n", namespace, "-l", "app=x", "marked=yes"
    ).stdout
    assert sorted(out.splitlines()) == ["configmap/a labeled", "configmap/b labeled"]
    marked = cluster.kubectl("get", "cm", "-n", namespace, "-l", "marked=yes", "-o", "name").stdout
    assert names(marked) == {"a", "b"}


# --- patch, replace, scale -------------------------------------------------------------------


def test_patch_strategic_merges_containers_by_name(cluster: Any, namespace: str, web: str) -> None:
    before = get_json(cluster, "deploy", "web", "-n", namespace)
    patch = {
        "spec": {"template": {"spec": {"containers": [{"name": "nginx", "image": "nginx:1.27"}]}}}
    }
    out = cluster.kubectl(
        "patch", "deploy", "web", "-n", namespace, "--type", "strategic", "-p", json.dumps(patch)
    ).stdout
    assert out.strip() == "deployment.apps/web patched"
    after = get_json(cluster, "deploy", "web", "-n", namespace)
    containers = after["spec"]["template"]["spec"]["containers"]
    assert [(c["name"], c["image"]) for c in containers] == [
        ("nginx", "nginx:1.27"),
        ("sidecar", "busybox:1.36"),
    ]
    assert containers[0]["ports"] == [{"containerPort": 80, "protocol": "TCP"}]
    assert containers[1]["command"] == ["sleep", "infinity"]
    assert after["metadata"]["generation"] == before["metadata"]["generation"] + 1


def test_patch_strategic_is_the_default(cluster: Any, namespace: str, web: str) -> None:
    patch = {
        "spec": {
            "template": {"spec": {"containers": [{"name": "sidecar", "image": "busybox:1.37"}]}}
        }
    }
    cluster.kubectl("patch", "deploy", "web", "-n", namespace, "-p", json.dumps(patch))
    containers = get_json(cluster, "deploy", "web", "-n", namespace)["spec"]["template"]["spec"][
        "containers"
    ]
    assert [c["image"] for c in containers] == ["nginx:1.25", "busybox:1.37"]


def test_patch_merge_replaces_lists(cluster: Any, namespace: str, web: str) -> None:
    patch = {
        "metadata": {"labels": {"app": None, "team": "blue"}},
        "spec": {
            "minReadySeconds": 5,
            "template": {"spec": {"containers": [{"name": "only", "image": "nginx:1.27"}]}},
        },
    }
    cluster.kubectl(
        "patch", "deploy", "web", "-n", namespace, "--type", "merge", "-p", json.dumps(patch)
    )
    after = get_json(cluster, "deploy", "web", "-n", namespace)
    assert after["metadata"]["labels"] == {"team": "blue"}
    assert after["spec"]["minReadySeconds"] == 5
    assert [c["name"] for c in after["spec"]["template"]["spec"]["containers"]] == ["only"]


def test_patch_json(cluster: Any, namespace: str, web: str) -> None:
    ops = [
        {"op": "replace", "path": "/spec/replicas", "value": 3},
        {"op": "add", "path": "/metadata/labels/extra", "value": "yes"},
        {"op": "remove", "path": "/spec/template/spec/containers/1"},
    ]
    cluster.kubectl(
        "patch", "deploy", "web", "-n", namespace, "--type", "json", "-p", json.dumps(ops)
    )
    after = get_json(cluster, "deploy", "web", "-n", namespace)
    assert after["spec"]["replicas"] == 3
    assert after["metadata"]["labels"]["extra"] == "yes"
    assert [c["name"] for c in after["spec"]["template"]["spec"]["containers"]] == ["nginx"]

    failing = [
        {"op": "test", "path": "/spec/replicas", "value": 99},
        {"op": "replace", "path": "/spec/replicas", "value": 1},
    ]
    result = cluster.kubectl(
        "patch",
        "deploy",
        "web",
        "-n",
        namespace,
        "--type",
        "json",
        "-p",
        json.dumps(failing),
        check=False,
    )
    assert result.returncode != 0
    assert get_json(cluster, "deploy", "web", "-n", namespace)["spec"]["replicas"] == 3


def test_patch_no_change(cluster: Any, namespace: str) -> None:
    apply(cluster, configmap_yaml("same", namespace, a="1"))
    rv = get_json(cluster, "cm", "same", "-n", namespace)["metadata"]["resourceVersion"]
    out = cluster.kubectl("patch", "cm", "same", "-n", namespace, "-p", '{"data":{"a":"1"}}').stdout
    assert out.strip() == "configmap/same patched (no change)"
    assert get_json(cluster, "cm", "same", "-n", namespace)["metadata"]["resourceVersion"] == rv


def test_replace(cluster: Any, namespace: str, web: str, tmp_path: Path) -> None:
    live = get_json(cluster, "deploy", "web", "-n", namespace)
    live["spec"]["minReadySeconds"] = 7
    path = tmp_path / "web.json"
    path.write_text(json.dumps(live))
    out = cluster.kubectl("replace", "-f", str(path)).stdout
    assert out.strip() == "deployment.apps/web replaced"
    after = get_json(cluster, "deploy", "web", "-n", namespace)
    assert after["spec"]["minReadySeconds"] == 7
    assert after["metadata"]["generation"] == live["metadata"]["generation"] + 1
    assert after["metadata"]["uid"] == live["metadata"]["uid"]

    # The file still carries the old resourceVersion: a second, different
    # replace from it must hit the optimistic-concurrency check.
    live["spec"]["minReadySeconds"] = 9
    path.write_text(json.dumps(live))
    stale = cluster.kubectl("replace", "-f", str(path), check=False)
    assert stale.returncode != 0
    assert "the object has been modified" in stale.stderr
    assert get_json(cluster, "deploy", "web", "-n", namespace)["spec"]["minReadySeconds"] == 7


def test_replace_missing_object_fails(cluster: Any, namespace: str) -> None:
    result = cluster.kubectl(
        "replace", "-f", "-", input=configmap_yaml("ghost", namespace), check=False
    )
    assert result.returncode != 0
    assert "not found" in result.stderr


def test_scale_deployment(cluster: Any, namespace: str, web: str) -> None:
    before = get_json(cluster, "deploy", "web", "-n", namespace)
    out = cluster.kubectl("scale", "deploy", "web", "-n", namespace, "--replicas=5").stdout
    assert out.strip() == "deployment.apps/web scaled"
    after = get_json(cluster, "deploy", "web", "-n", namespace)
    assert after["spec"]["replicas"] == 5
    assert after["metadata"]["generation"] == before["metadata"]["generation"] + 1

    wrong = cluster.kubectl(
        "scale",
        "deploy",
        "web",
        "-n",
        namespace,
        "--current-replicas=2",
        "--replicas=1",
        check=False,
    )
    assert wrong.returncode != 0
    assert get_json(cluster, "deploy", "web", "-n", namespace)["spec"]["replicas"] == 5


# --- delete ----------------------------------------------------------------------------------


def test_delete_background_default(cluster: Any, namespace: str, web: str) -> None:
    out = cluster.kubectl("delete", "deployment", "web", "-n", namespace, timeout=30).stdout
    assert out.strip() == f'deployment.apps "web" deleted from {namespace} namespace'
    missing = cluster.kubectl("get", "deployment", "web", "-n", namespace, check=False)
    assert missing.returncode != 0
    assert "NotFound" in missing.stderr


@pytest.mark.parametrize("cascade", ["foreground", "orphan", "background"])
def test_delete_cascade_wait(cluster: Any, namespace: str, web: str, cascade: str) -> None:
    started = time.monotonic()
    result = cluster.kubectl(
        "delete",
        "deployment",
        "web",
        "-n",
        namespace,
        f"--cascade={cascade}",
        "--wait=true",
        "--timeout=20s",
        timeout=40,
    )
    assert time.monotonic() - started < 20
    assert result.stdout.strip() == f'deployment.apps "web" deleted from {namespace} namespace'
    listed = get_json(cluster, "deployments", "-n", namespace)
    assert listed["items"] == []


def test_delete_by_label_and_missing(cluster: Any, namespace: str) -> None:
    for name, app in (("a", "x"), ("b", "x"), ("c", "y")):
        apply(cluster, configmap_yaml(name, namespace, labels={"app": app}))
    out = cluster.kubectl("delete", "cm", "-n", namespace, "-l", "app=x").stdout
    assert sorted(out.splitlines()) == [
        f'configmap "a" deleted from {namespace} namespace',
        f'configmap "b" deleted from {namespace} namespace',
    ]
    assert names(cluster.kubectl("get", "cm", "-n", namespace, "-o", "name").stdout) == {"c"}
    missing = cluster.kubectl("delete", "cm", "ghost", "-n", namespace, check=False)
    assert missing.returncode != 0
    assert 'configmaps "ghost" not found' in missing.stderr
    assert (
        cluster.kubectl("delete", "cm", "ghost", "-n", namespace, "--ignore-not-found").returncode
        == 0
    )


# --- server-side apply -------------------------------------------------------------------------


def test_server_side_apply(cluster: Any, namespace: str) -> None:
    manifest = configmap_yaml("ssa", namespace, key="v1")
    out = apply(cluster, manifest, "--server-side")
    assert out.strip() == "configmap/ssa serverside-applied"
    live = get_json(cluster, "cm", "ssa", "-n", namespace, managed_fields=True)
    entries = live["metadata"]["managedFields"]
    applied = [e for e in entries if e["manager"] == "kubectl"]
    assert len(applied) == 1, entries
    assert applied[0]["operation"] == "Apply"
    assert applied[0]["apiVersion"] == "v1"
    assert applied[0]["fieldsType"] == "FieldsV1"
    assert "f:key" in applied[0]["fieldsV1"]["f:data"]
    assert "kubectl.kubernetes.io/last-applied-configuration" not in (
        live["metadata"].get("annotations") or {}
    )
    assert apply(cluster, manifest, "--server-side").strip() == "configmap/ssa serverside-applied"


def test_server_side_apply_conflict_and_force(cluster: Any, namespace: str) -> None:
    apply(cluster, configmap_yaml("owned", namespace, key="v1"), "--server-side")
    changed = configmap_yaml("owned", namespace, key="v2")
    conflict = cluster.kubectl(
        "apply", "--server-side", "--field-manager=other", "-f", "-", input=changed, check=False
    )
    assert conflict.returncode != 0
    assert "conflict" in conflict.stderr.lower()
    assert '"kubectl"' in conflict.stderr
    assert ".data.key" in conflict.stderr
    assert get_json(cluster, "cm", "owned", "-n", namespace)["data"] == {"key": "v1"}

    forced = cluster.kubectl(
        "apply",
        "--server-side",
        "--field-manager=other",
        "--force-conflicts",
        "-f",
        "-",
        input=changed,
    )
    assert forced.stdout.strip() == "configmap/owned serverside-applied"
    live = get_json(cluster, "cm", "owned", "-n", namespace, managed_fields=True)
    assert live["data"] == {"key": "v2"}
    owners = {e["manager"]: e for e in live["metadata"]["managedFields"]}
    assert owners["other"]["operation"] == "Apply"
    assert "f:key" in owners["other"]["fieldsV1"]["f:data"]
    assert "kubectl" not in owners or "f:key" not in owners["kubectl"].get("fieldsV1", {}).get(
        "f:data", {}
    )


def test_server_side_apply_shared_value_no_conflict(cluster: Any, namespace: str) -> None:
    """Applying the same value as another manager co-owns the field without conflict."""
    manifest = configmap_yaml("shared", namespace, key="same")
    apply(cluster, manifest, "--server-side")
    cluster.kubectl("apply", "--server-side", "--field-manager=other", "-f", "-", input=manifest)
    managers = {
        e["manager"]
        for e in get_json(cluster, "cm", "shared", "-n", namespace, managed_fields=True)[
            "metadata"
        ]["managedFields"]
    }
    assert managers == {"kubectl", "other"}


# --- diff, explain, discovery ---------------------------------------------------------------------


def test_diff(cluster: Any, namespace: str) -> None:
    manifest = deployment_yaml("web", namespace)
    apply(cluster, manifest)
    before = get_json(cluster, "deploy", "web", "-n", namespace)

    same = cluster.kubectl("diff", "-f", "-", input=manifest, check=False)
    assert same.returncode == 0, same.stderr
    assert same.stdout == ""

    changed = cluster.kubectl(
        "diff",
        "-f",
        "-",
        input=deployment_yaml("web", namespace, replicas=3, image="nginx:1.27"),
        check=False,
    )
    assert changed.returncode == 1, changed.stderr
    assert re.search(r"^-  replicas: 2$", changed.stdout, re.M), changed.stdout
    assert re.search(r"^\+  replicas: 3$", changed.stdout, re.M), changed.stdout
    assert re.search(r"^\+      - image: nginx:1\.27$", changed.stdout, re.M), changed.stdout

    after = get_json(cluster, "deploy", "web", "-n", namespace)
    assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
    assert after["spec"] == before["spec"]


def test_diff_new_object(cluster: Any, namespace: str) -> None:
    result = cluster.kubectl(
        "diff", "-f", "-", input=configmap_yaml("fresh", namespace, a="1"), check=False
    )
    assert result.returncode == 1, result.stderr
    assert re.search(r"^\+  name: fresh$", result.stdout, re.M), result.stdout
    missing = cluster.kubectl("get", "cm", "fresh", "-n", namespace, check=False)
    assert missing.returncode != 0


def test_explain(cluster: Any) -> None:
    out = cluster.kubectl("explain", "deployment.spec.strategy").stdout
    assert re.search(r"^GROUP:\s+apps$", out, re.M), out
    assert re.search(r"^KIND:\s+Deployment$", out, re.M), out
    assert re.search(r"^VERSION:\s+v1$", out, re.M), out
    assert re.search(r"^FIELD: strategy <DeploymentStrategy>$", out, re.M), out
    assert re.search(r"^\s+rollingUpdate\s+<RollingUpdateDeployment>$", out, re.M), out
    assert re.search(r"^\s+type\s+<string>$", out, re.M), out

    top = cluster.kubectl("explain", "pods").stdout
    assert re.search(r"^KIND:\s+Pod$", top, re.M), top
    assert re.search(r"^\s+spec\s+<PodSpec>$", top, re.M), top


def test_api_resources(cluster: Any) -> None:
    header, rows = table(cluster.kubectl("api-resources").stdout)
    assert header == ["NAME", "SHORTNAMES", "APIVERSION", "NAMESPACED", "KIND"]
    by_name: dict[tuple[str, str], list[str]] = {}
    for row in rows:
        if len(row) == 4:  # no short names
            row = [row[0], "", *row[1:]]
        by_name[(row[0], row[2])] = row
    assert by_name[("deployments", "apps/v1")] == [
        "deployments",
        "deploy",
        "apps/v1",
        "true",
        "Deployment",
    ]
    assert by_name[("configmaps", "v1")] == ["configmaps", "cm", "v1", "true", "ConfigMap"]
    assert by_name[("namespaces", "v1")] == ["namespaces", "ns", "v1", "false", "Namespace"]
    assert ("customresourcedefinitions", "apiextensions.k8s.io/v1") in by_name
    assert not any("/" in name for name, _ in by_name), "subresources must not be listed"
    assert not any(name == "eviction" or name.startswith("pods/") for name, _ in by_name)

    apps = cluster.kubectl("api-resources", "--api-group=apps", "-o", "name").stdout.split()
    assert "deployments.apps" in apps
    assert all(name.endswith(".apps") for name in apps)


def test_api_versions(cluster: Any) -> None:
    versions = cluster.kubectl("api-versions").stdout.split()
    for gv in (
        "v1",
        "apps/v1",
        "apiextensions.k8s.io/v1",
        "autoscaling/v1",
        "policy/v1",
        "events.k8s.io/v1",
    ):
        assert gv in versions, versions
    assert versions == sorted(versions)


# --- selectors and chunking ----------------------------------------------------------------------


@pytest.fixture
def labelled(cluster: Any, namespace: str) -> str:
    docs = [
        configmap_yaml("l1", namespace, labels={"app": "web", "tier": "fe", "env": "a"}),
        configmap_yaml("l2", namespace, labels={"app": "web", "tier": "db", "env": "b"}),
        configmap_yaml("l3", namespace, labels={"app": "api", "env": "c"}),
        configmap_yaml("l4", namespace, labels={"app": "web", "env": "b"}),
    ]
    apply(cluster, "---\n".join(docs))
    return namespace


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("app=web,tier!=db", {"l1", "l4"}),
        ("env in (a,b)", {"l1", "l2", "l4"}),
        ("env notin (a,b)", {"l3"}),
        ("tier", {"l1", "l2"}),
        ("!tier", {"l3", "l4"}),
        ("app==web,env=b", {"l2", "l4"}),
    ],
    ids=["eq-neq", "in", "notin", "exists", "not-exists", "double-eq"],
)
def test_label_selectors(cluster: Any, labelled: str, selector: str, expected: set[str]) -> None:
    out = cluster.kubectl("get", "configmaps", "-n", labelled, "-l", selector, "-o", "name").stdout
    assert names(out) == expected


def test_field_selectors(cluster: Any, labelled: str) -> None:
    k = cluster.kubectl
    assert names(
        k("get", "cm", "-n", labelled, "--field-selector", "metadata.name=l3", "-o", "name").stdout
    ) == {"l3"}
    assert names(
        k("get", "cm", "-n", labelled, "--field-selector", "metadata.name!=l3", "-o", "name").stdout
    ) == {
        "l1",
        "l2",
        "l4",
    }
    both = k(
        "get",
        "cm",
        "-A",
        "--field-selector",
        f"metadata.namespace={labelled},metadata.name=l2",
        "-o",
        "name",
    )
    assert names(both.stdout) == {"l2"}
    bad = k("get", "cm", "-n", labelled, "--field-selector", "spec.bogus=x", check=False)
    assert bad.returncode != 0
    assert "BadRequest" in bad.stderr
    assert "field label not supported: spec.bogus" in bad.stderr


def test_field_selector_no_match(cluster: Any, labelled: str) -> None:
    result = cluster.kubectl("get", "cm", "-n", labelled, "--field-selector", "metadata.name=nope")
    assert result.stdout == ""
    assert f"No resources found in {labelled} namespace." in result.stderr


def test_chunked_list(cluster: Any, namespace: str) -> None:
    apply(
        cluster,
        "---\n".join(
            configmap_yaml(f"c{i}", namespace, labels={"batch": "chunk"}) for i in range(5)
        ),
    )
    result = cluster.kubectl(
        "get", "configmaps", "-n", namespace, "--chunk-size=2", "-o", "name", "-v=6"
    )
    assert names(result.stdout) == {f"c{i}" for i in range(5)}
    requests = re.findall(r'url="([^"]*/configmaps\?[^"]*)"', result.stderr)
    assert len(requests) == 3, requests
    assert all("limit=2" in url for url in requests), requests
    assert sum("continue=" in url for url in requests) == 2, requests

    header, rows = table(
        cluster.kubectl("get", "configmaps", "-n", namespace, "--chunk-size=2").stdout
    )
    assert header == ["NAME", "DATA", "AGE"]
    assert [row[0] for row in rows if row[0] not in PUBLISHED] == [f"c{i}" for i in range(5)]


# --- custom resources ------------------------------------------------------------------------------

CRD_MANIFEST = f"""
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: {CRD_NAME}
spec:
  group: {CRD_GROUP}
  scope: Namespaced
  names:
    plural: widgets
    singular: widget
    kind: Widget
    shortNames: [wdg]
  versions:
  - name: v1
    served: true
    storage: true
    additionalPrinterColumns:
    - name: Size
      type: integer
      jsonPath: .spec.size
    - name: Color
      type: string
      jsonPath: .spec.color
    - name: Age
      type: date
      jsonPath: .metadata.creationTimestamp
    subresources:
      status: {{}}
      scale:
        specReplicasPath: .spec.replicas
        statusReplicasPath: .status.replicas
    schema:
      openAPIV3Schema:
        type: object
        description: A widget, for testing.
        properties:
          spec:
            type: object
            description: What the widget should be.
            properties:
              size:
                type: integer
                description: How big the widget is.
              color:
                type: string
                description: What color the widget is.
              replicas:
                type: integer
          status:
            type: object
            properties:
              replicas:
                type: integer
"""


@pytest.fixture(scope="module")
def widget_crd(cluster: Any) -> str:
    apply(cluster, CRD_MANIFEST)
    waited = cluster.kubectl(
        "wait", "--for=condition=established", f"crd/{CRD_NAME}", "--timeout=30s"
    )
    assert (
        waited.stdout.strip()
        == f"customresourcedefinition.apiextensions.k8s.io/{CRD_NAME} condition met"
    )
    return CRD_NAME


def widget_yaml(name: str, namespace: str, **spec: Any) -> str:
    return dump(
        {
            "apiVersion": f"{CRD_GROUP}/v1",
            "kind": "Widget",
            "metadata": {"name": name, "namespace": namespace},
            "spec": spec,
        }
    )


def test_crd_printer_columns(cluster: Any, namespace: str, widget_crd: str) -> None:
    out = apply(cluster, widget_yaml("w1", namespace, size=3, color="red", replicas=1))
    assert out.strip() == f"widget.{CRD_GROUP}/w1 created"
    header, rows = table(cluster.kubectl("get", "widgets", "-n", namespace).stdout)
    assert header == ["NAME", "SIZE", "COLOR", "AGE"]
    assert row_for(rows, "w1")[1:3] == ["3", "red"]
    header, _ = table(cluster.kubectl("get", "wdg", "w1", "-n", namespace).stdout)
    assert header == ["NAME", "SIZE", "COLOR", "AGE"]
    resources = cluster.kubectl("api-resources", f"--api-group={CRD_GROUP}").stdout
    assert re.search(
        rf"^widgets\s+wdg\s+{re.escape(CRD_GROUP)}/v1\s+true\s+Widget$", resources, re.M
    ), resources


def test_crd_scale_and_status(cluster: Any, namespace: str, widget_crd: str) -> None:
    apply(cluster, widget_yaml("w1", namespace, size=3, replicas=1))
    out = cluster.kubectl("scale", "widget", "w1", "-n", namespace, "--replicas=4").stdout
    assert out.strip() == f"widget.{CRD_GROUP}/w1 scaled"
    assert get_json(cluster, "widget", "w1", "-n", namespace)["spec"]["replicas"] == 4
    scale = json.loads(
        cluster.kubectl(
            "get", "--raw", f"/apis/{CRD_GROUP}/v1/namespaces/{namespace}/widgets/w1/scale"
        ).stdout
    )
    assert scale["kind"] == "Scale"
    assert scale["apiVersion"] == "autoscaling/v1"
    assert scale["spec"]["replicas"] == 4

    cluster.kubectl(
        "patch",
        "widget",
        "w1",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        '{"status":{"replicas":2}}',
    )
    # The main resource ignores status; the status subresource ignores spec.
    cluster.kubectl(
        "patch", "widget", "w1", "-n", namespace, "--type=merge", "-p", '{"status":{"replicas":7}}'
    )
    cluster.kubectl(
        "patch",
        "widget",
        "w1",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        '{"spec":{"size":99}}',
    )
    live = get_json(cluster, "widget", "w1", "-n", namespace)
    assert live["status"] == {"replicas": 2}
    assert live["spec"]["size"] == 3


def test_crd_strict_unknown_field(cluster: Any, namespace: str, widget_crd: str) -> None:
    result = cluster.kubectl(
        "apply", "-f", "-", input=widget_yaml("w2", namespace, size=1, bogus=True), check=False
    )
    assert result.returncode != 0
    assert 'unknown field "spec.bogus"' in result.stderr
    missing = cluster.kubectl("get", "widget", "w2", "-n", namespace, check=False)
    assert missing.returncode != 0


def test_crd_explain(cluster: Any, widget_crd: str) -> None:
    out = cluster.kubectl("explain", "widgets").stdout
    assert re.search(rf"^GROUP:\s+{re.escape(CRD_GROUP)}$", out, re.M), out
    assert re.search(r"^KIND:\s+Widget$", out, re.M), out
    assert "A widget, for testing." in out
    assert re.search(r"^\s+spec\s+<Object>$", out, re.M), out
    spec = cluster.kubectl("explain", "widgets.spec").stdout
    assert "What the widget should be." in spec
    assert re.search(r"^\s+size\s+<integer>$", spec, re.M), spec
    assert "How big the widget is." in spec
    assert re.search(r"^\s+color\s+<string>$", spec, re.M), spec


# --- events ----------------------------------------------------------------------------------------


def event_yaml(
    name: str, namespace: str, target: str, reason: str, message: str, uid: str = ""
) -> str:
    involved = {"apiVersion": "v1", "kind": "ConfigMap", "name": target, "namespace": namespace}
    if uid:
        involved["uid"] = uid
    return dump(
        {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": namespace},
            "involvedObject": involved,
            "reason": reason,
            "message": message,
            "type": "Normal",
            "source": {"component": "integration-test"},
            "firstTimestamp": "2026-01-01T00:00:00Z",
            "lastTimestamp": "2026-01-01T00:00:00Z",
            "count": 1,
        }
    )


def test_events_field_selector(cluster: Any, namespace: str) -> None:
    apply(cluster, configmap_yaml("x", namespace) + "---\n" + configmap_yaml("y", namespace))
    uid = get_json(cluster, "cm", "x", "-n", namespace)["metadata"]["uid"]
    created = cluster.kubectl(
        "create", "-f", "-", input=event_yaml("ev-x", namespace, "x", "Poked", "poked x", uid)
    )
    assert created.stdout.strip() == "event/ev-x created"
    cluster.kubectl(
        "create", "-f", "-", input=event_yaml("ev-y", namespace, "y", "Prodded", "prodded y")
    )

    header, rows = table(
        cluster.kubectl(
            "get", "events", "-n", namespace, "--field-selector", "involvedObject.name=x"
        ).stdout
    )
    assert header == ["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    assert [row[1:] for row in rows] == [["Normal", "Poked", "configmap/x", "poked x"]]

    typed = cluster.kubectl(
        "get",
        "events",
        "-n",
        namespace,
        "--field-selector",
        "reason=Prodded,type=Normal",
        "-o",
        "name",
    ).stdout
    assert names(typed) == {"ev-y"}

    described = cluster.kubectl("describe", "configmap", "x", "-n", namespace).stdout
    events_section = described.split("Events:", 1)[1]
    assert re.search(r"Normal\s+Poked\s+\S+\s+integration-test\s+poked x", events_section), (
        described
    )


# --- raw endpoints -----------------------------------------------------------------------------------


def test_get_raw_discovery(cluster: Any) -> None:
    version = json.loads(cluster.kubectl("get", "--raw", "/version").stdout)
    assert re.match(r"^v1\.\d+\.\d+", version["gitVersion"]), version
    assert version["major"] == "1"

    api = json.loads(cluster.kubectl("get", "--raw", "/api").stdout)
    assert api["kind"] == "APIVersions"
    assert api["versions"] == ["v1"]

    apis = json.loads(cluster.kubectl("get", "--raw", "/apis").stdout)
    assert apis["kind"] == "APIGroupList"
    groups = {g["name"]: g for g in apis["groups"]}
    assert groups["apps"]["preferredVersion"] == {"groupVersion": "apps/v1", "version": "v1"}
    assert "policy" in groups

    core = json.loads(cluster.kubectl("get", "--raw", "/api/v1").stdout)
    assert core["kind"] == "APIResourceList"
    resources = {r["name"]: r for r in core["resources"]}
    assert resources["pods/eviction"]["group"] == "policy"
    assert resources["pods/eviction"]["kind"] == "Eviction"
    assert resources["configmaps"]["shortNames"] == ["cm"]


def test_get_raw_openapi_v3(cluster: Any) -> None:
    root = json.loads(cluster.kubectl("get", "--raw", "/openapi/v3").stdout)
    paths = root["paths"]
    assert "api/v1" in paths
    assert "apis/apps/v1" in paths
    url = paths["apis/apps/v1"]["serverRelativeURL"]
    assert url.startswith("/openapi/v3/apis/apps/v1")
    doc = json.loads(cluster.kubectl("get", "--raw", url).stdout)
    assert doc["openapi"].startswith("3.")
    schema = doc["components"]["schemas"]["io.k8s.api.apps.v1.Deployment"]
    assert {"group": "apps", "kind": "Deployment", "version": "v1"} in schema[
        "x-kubernetes-group-version-kind"
    ]


def test_cluster_info_and_version(cluster: Any) -> None:
    out = cluster.kubectl("version", "-o", "json").stdout
    version = json.loads(out)
    assert version["clientVersion"]["gitVersion"].startswith("v1.37.")
    assert version["serverVersion"]["gitVersion"].startswith("v1.")
    info = cluster.kubectl("cluster-info").stdout
    assert "Kubernetes control plane is running at https://127.0.0.1:" in info


# --- typed-client commands (protobuf request bodies) --------------------------------------------------


class TestTypedClientCommands:
    """kubectl commands built on the typed client, which sends protobuf bodies.

    They need `application/vnd.kubernetes.protobuf` request decoding on the
    server (without it: 415 UnsupportedMediaType), and `create token` the
    serviceaccounts/token subresource.
    """

    def test_create_configmap(self, cluster: Any, namespace: str) -> None:
        out = cluster.kubectl(
            "create",
            "configmap",
            "lit",
            "-n",
            namespace,
            "--from-literal=a=1",
            "--from-literal=b=2",
        )
        assert out.stdout.strip() == "configmap/lit created"
        assert get_json(cluster, "cm", "lit", "-n", namespace)["data"] == {"a": "1", "b": "2"}

    def test_create_secret(self, cluster: Any, namespace: str) -> None:
        out = cluster.kubectl(
            "create", "secret", "generic", "sec", "-n", namespace, "--from-literal=password=hunter2"
        )
        assert out.stdout.strip() == "secret/sec created"
        secret = get_json(cluster, "secret", "sec", "-n", namespace)
        assert secret["type"] == "Opaque"
        assert secret["data"] == {"password": "aHVudGVyMg=="}

    def test_create_deployment(self, cluster: Any, namespace: str) -> None:
        out = cluster.kubectl(
            "create", "deployment", "made", "-n", namespace, "--image=nginx:1.25", "--replicas=3"
        )
        assert out.stdout.strip() == "deployment.apps/made created"
        live = get_json(cluster, "deploy", "made", "-n", namespace)
        assert live["spec"]["replicas"] == 3
        assert live["spec"]["selector"] == {"matchLabels": {"app": "made"}}
        assert live["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.25"

    def test_create_namespace(self, cluster: Any) -> None:
        out = cluster.kubectl("create", "namespace", "t-typed-create-ns")
        assert out.stdout.strip() == "namespace/t-typed-create-ns created"
        live = get_json(cluster, "namespace", "t-typed-create-ns")
        assert live["status"]["phase"] == "Active"

    def test_run(self, cluster: Any, namespace: str) -> None:
        out = cluster.kubectl(
            "run",
            "runner",
            "-n",
            namespace,
            "--image=busybox:1.36",
            "--restart=Never",
            "--",
            "true",
        )
        assert out.stdout.strip() == "pod/runner created"
        pod = get_json(cluster, "pod", "runner", "-n", namespace)
        assert pod["spec"]["restartPolicy"] == "Never"
        assert pod["spec"]["containers"][0]["args"] == ["true"]
        assert pod["metadata"]["labels"] == {"run": "runner"}

    def test_auth_whoami(self, cluster: Any) -> None:
        out = cluster.kubectl("auth", "whoami").stdout
        assert re.search(r"^Username\s+kubernetes-admin$", out, re.M), out
        assert "system:masters" in out

    def test_auth_can_i(self, cluster: Any) -> None:
        assert cluster.kubectl("auth", "can-i", "create", "pods").stdout.strip() == "yes"
        assert (
            cluster.kubectl(
                "auth", "can-i", "delete", "deployments", "-n", "kube-system"
            ).stdout.strip()
            == "yes"
        )

    def test_create_token(self, cluster: Any, namespace: str) -> None:
        token = cluster.kubectl("create", "token", "default", "-n", namespace).stdout.strip()
        assert token.count(".") == 2, token
