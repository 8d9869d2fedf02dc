"""Workload controllers end to end through the pinned kubectl, on a
`nodeless up --provider simulated --zones zone-a,zone-b` cluster: Deployment
rollouts (set image, history, undo, restart, pause/resume, scale), Jobs
(failed, parallel, Indexed), a CronJob's manual run, an OrderedReady
StatefulSet, namespace deletion, foreground and orphan cascades,
EndpointSlices/Endpoints and evictions against a PodDisruptionBudget.

The simulated provider runs each container per its `command`: `sleep
infinity` runs forever, `sh -c "exit N"` ends with N, and a readinessProbe's
initialDelaySeconds delays readiness. Every wait is a bounded "eventually" or
a kubectl `--timeout` (liveness), never a timing assertion; orders are read
from a watch replayed from a resourceVersion taken before the action.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
from conftest import Cluster, stop_cluster
from test_simulated_cluster import dump, eventually, rows, start_simulated

pytestmark = pytest.mark.integration

ZONES = ("zone-a", "zone-b")
REVISION = "deployment.kubernetes.io/revision"


# --- the cluster ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    data_dir = tmp_path_factory.mktemp("workloads") / "data"
    data_dir.mkdir()
    cluster = start_simulated(data_dir, ZONES)
    yield cluster
    stop_cluster(cluster)


@pytest.fixture
def ns(sim: Cluster, request: pytest.FixtureRequest) -> str:
    """A fresh namespace per test, named after it."""
    name = "w-" + request.node.name.lower().replace("_", "-")[:50]
    name = "".join(c if c.isalnum() or c == "-" else "-" for c in name).strip("-")
    sim.kubectl(
        "apply",
        "-f",
        "-",
        input=dump({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}),
    )
    return name


# --- helpers --------------------------------------------------------------------------

Kubectl = Callable[..., subprocess.CompletedProcess[str]]


def in_ns(sim: Cluster, ns: str) -> Kubectl:
    """kubectl with `-n ns` (and a process timeout above kubectl's own)."""

    def run(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        kwargs.setdefault("timeout", 90)
        return sim.kubectl("-n", ns, *args, **kwargs)

    return run


def get_json(k: Kubectl, *args: str) -> Any:
    return json.loads(k("get", *args, "-o", "json").stdout)


def apply(k: Kubectl, *objects: dict[str, Any]) -> None:
    k("apply", "-f", "-", input="".join(f"---\n{dump(o)}" for o in objects))


def rolled_out(k: Kubectl, resource: str) -> str:
    out = k("rollout", "status", resource, "--timeout=60s").stdout
    return out.strip().splitlines()[-1]


def history(k: Kubectl, deployment: str) -> list[str]:
    """The REVISION column of `kubectl rollout history`."""
    out = k("rollout", "history", f"deployment/{deployment}").stdout
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("REVISION"))
    return [m.group(1) for line in lines[header + 1 :] if (m := re.match(r"^(\d+)\s", line))]


def replicasets(k: Kubectl, selector: str) -> dict[str, dict[str, Any]]:
    return {rs["metadata"]["name"]: rs for rs in get_json(k, "rs", "-l", selector)["items"]}


def by_revision(k: Kubectl, selector: str) -> dict[str, dict[str, Any]]:
    """The ReplicaSets of a Deployment keyed by their revision annotation."""
    sets = replicasets(k, selector).values()
    return {rs["metadata"]["annotations"][REVISION]: rs for rs in sets}


def image_of(obj: dict[str, Any]) -> str:
    spec = obj["spec"]["template"]["spec"] if "template" in obj["spec"] else obj["spec"]
    image: str = spec["containers"][0]["image"]
    return image


def pods(k: Kubectl, selector: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = get_json(k, "pods", "-l", selector)["items"]
    return items


def owner_names(obj: dict[str, Any]) -> list[str]:
    return [ref["name"] for ref in obj["metadata"].get("ownerReferences") or []]


def running_pods(k: Kubectl, selector: str) -> list[dict[str, Any]]:
    return [
        p
        for p in pods(k, selector)
        if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")
    ]


def settled(k: Kubectl, selector: str, count: int) -> Callable[[], list[dict[str, Any]] | None]:
    """A probe: exactly `count` pods match, all Running, none terminating."""

    def probe() -> list[dict[str, Any]] | None:
        listed = pods(k, selector)
        live = running_pods(k, selector)
        return live if len(listed) == count and len(live) == count else None

    return probe


def list_revision(k: Kubectl, ns: str, path: str = "pods") -> str:
    body = json.loads(k("get", "--raw", f"/api/v1/namespaces/{ns}/{path}").stdout)
    return str(body["metadata"]["resourceVersion"])


def replay(
    k: Kubectl, ns: str, since: str, selector: str = "", collection: str = "api/v1/pods"
) -> list[tuple[str, dict[str, Any]]]:
    """Every watch event on `collection` ("api/v1/pods", "apis/apps/v1/replicasets",
    ...) in `ns` matching `selector` after revision `since`: the server replays
    them, then ends the stream after one idle second."""
    group_version, plural = collection.rsplit("/", 1)
    query = urlencode(
        {"watch": "1", "resourceVersion": since, "labelSelector": selector, "timeoutSeconds": "1"}
    )
    out = k("get", "--raw", f"/{group_version}/namespaces/{ns}/{plural}?{query}").stdout
    events = [json.loads(line) for line in out.splitlines() if line.strip()]
    return [(e["type"], e["object"]) for e in events if e["type"] != "BOOKMARK"]


def is_ready(pod: dict[str, Any]) -> bool:
    return any(
        c["type"] == "Ready" and c["status"] == "True"
        for c in pod.get("status", {}).get("conditions") or []
    )


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    found = [c for c in obj.get("status", {}).get("conditions") or [] if c["type"] == kind]
    return found[0] if found else {}


def observed(obj: dict[str, Any]) -> bool:
    return bool(obj.get("status", {}).get("observedGeneration") == obj["metadata"]["generation"])


def absent(k: Kubectl, *args: str) -> bool:
    result = k("get", *args, check=False)
    return result.returncode != 0 and "NotFound" in result.stderr


def job(name: str, command: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            **spec,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {"name": "app", "image": "busybox:1.36", "command": ["sh", "-c", command]}
                    ],
                }
            },
        },
    }


def eviction(ns: str, pod: str) -> str:
    return dump(
        {
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": pod, "namespace": ns},
        }
    )


# --- Deployment rollouts --------------------------------------------------------------


def test_deployment_rollout_history_undo_restart_pause_and_scale(sim: Cluster, ns: str) -> None:
    k = in_ns(sim, ns)
    created = k(
        "create",
        "deployment",
        "web",
        "--image=busybox:1.36",
        "--replicas=3",
        "--",
        "sleep",
        "infinity",
    )
    assert created.stdout.strip() == "deployment.apps/web created"
    assert rolled_out(k, "deployment/web") == 'deployment "web" successfully rolled out'
    first = by_revision(k, "app=web")
    assert list(first) == ["1"], first
    rs1 = first["1"]["metadata"]["name"]
    assert image_of(first["1"]) == "busybox:1.36"
    live = eventually(settled(k, "app=web", 3), "3 Running pods of revision 1")
    assert {owner_names(p)[0] for p in live} == {rs1}
    row = rows(k("get", "deployment", "web").stdout)[0]
    assert (row["READY"], row["UP-TO-DATE"], row["AVAILABLE"]) == ("3/3", "3", "3"), row

    # set image: a second ReplicaSet, revision 2, takes over
    out = k("set", "image", "deployment/web", "busybox=busybox:1.37").stdout
    assert out.strip() == "deployment.apps/web image updated"
    assert rolled_out(k, "deployment/web") == 'deployment "web" successfully rolled out'
    assert history(k, "web") == ["1", "2"]
    second = by_revision(k, "app=web")
    assert sorted(second) == ["1", "2"], second
    rs2 = second["2"]["metadata"]["name"]
    assert rs2 != rs1 and image_of(second["2"]) == "busybox:1.37"
    assert (second["1"]["spec"]["replicas"], second["2"]["spec"]["replicas"]) == (0, 3)
    live = eventually(settled(k, "app=web", 3), "3 Running pods of revision 2")
    assert {owner_names(p)[0] for p in live} == {rs2}
    assert {image_of(p) for p in live} == {"busybox:1.37"}

    # undo: revision 1's ReplicaSet comes back under the next revision number
    assert (
        k("rollout", "undo", "deployment/web").stdout.strip() == "deployment.apps/web rolled back"
    )
    assert rolled_out(k, "deployment/web") == 'deployment "web" successfully rolled out'
    assert history(k, "web") == ["2", "3"]
    third = by_revision(k, "app=web")
    assert sorted(third) == ["2", "3"], third
    assert third["3"]["metadata"]["name"] == rs1, "undo must reuse revision 1's ReplicaSet"
    notes = third["3"]["metadata"]["annotations"]
    assert notes.get("deployment.kubernetes.io/revision-history") == "1", notes
    assert third["3"]["spec"]["replicas"] == 3 and third["2"]["spec"]["replicas"] == 0
    assert image_of(get_json(k, "deployment", "web")) == "busybox:1.36"
    live = eventually(settled(k, "app=web", 3), "3 Running pods of the reused ReplicaSet")
    assert {owner_names(p)[0] for p in live} == {rs1}
    assert {image_of(p) for p in live} == {"busybox:1.36"}
    shown = k("rollout", "history", "deployment/web", "--revision=3").stdout
    assert "deployment.apps/web with revision #3" in shown, shown
    assert re.search(r"Image:\s+busybox:1\.36$", shown, re.M), shown

    # restart: a new template (restartedAt), so a new ReplicaSet and revision 4
    assert (
        k("rollout", "restart", "deployment/web").stdout.strip() == "deployment.apps/web restarted"
    )
    assert rolled_out(k, "deployment/web") == 'deployment "web" successfully rolled out'
    assert history(k, "web") == ["2", "3", "4"]
    fourth = by_revision(k, "app=web")
    rs4 = fourth["4"]["metadata"]["name"]
    assert rs4 not in (rs1, rs2)
    notes = fourth["4"]["spec"]["template"]["metadata"].get("annotations") or {}
    assert "kubectl.kubernetes.io/restartedAt" in notes, notes
    live = eventually(settled(k, "app=web", 3), "3 Running pods after the restart")
    assert {owner_names(p)[0] for p in live} == {rs4}

    # pause: a template change is recorded but not rolled out until resume
    assert k("rollout", "pause", "deployment/web").stdout.strip() == "deployment.apps/web paused"

    def paused() -> dict[str, Any] | None:
        d = get_json(k, "deployment", "web")
        return d if observed(d) and condition(d, "Progressing").get("reason") else None

    d = eventually(paused, "the controller to see the pause")
    assert d["spec"]["paused"] is True
    progressing = condition(d, "Progressing")
    assert (progressing["status"], progressing["reason"]) == ("Unknown", "DeploymentPaused"), d
    k("set", "image", "deployment/web", "busybox=busybox:1.35")

    def seen() -> dict[str, Any] | None:
        d = get_json(k, "deployment", "web")
        return d if observed(d) else None

    d = eventually(seen, "the controller to observe the paused template change")
    assert image_of(d) == "busybox:1.35"
    assert {image_of(rs) for rs in replicasets(k, "app=web").values()} == {
        "busybox:1.36",
        "busybox:1.37",
    }, "a paused Deployment must not roll out"
    assert history(k, "web") == ["2", "3", "4"]
    assert {image_of(p) for p in running_pods(k, "app=web")} == {"busybox:1.36"}

    assert k("rollout", "resume", "deployment/web").stdout.strip() == "deployment.apps/web resumed"
    assert rolled_out(k, "deployment/web") == 'deployment "web" successfully rolled out'
    assert history(k, "web") == ["2", "3", "4", "5"]
    fifth = by_revision(k, "app=web")
    assert image_of(fifth["5"]) == "busybox:1.35" and fifth["5"]["spec"]["replicas"] == 3
    d = get_json(k, "deployment", "web")
    assert not d["spec"].get("paused")
    assert condition(d, "Progressing").get("reason") == "NewReplicaSetAvailable", d["status"]

    # scale
    assert k("scale", "deployment", "web", "--replicas=5").stdout.strip() == (
        "deployment.apps/web scaled"
    )
    assert rolled_out(k, "deployment/web") == 'deployment "web" successfully rolled out'
    live = eventually(settled(k, "app=web", 5), "5 Running pods")
    assert {owner_names(p)[0] for p in live} == {fifth["5"]["metadata"]["name"]}
    listed = rows(k("get", "pods", "-l", "app=web", "--field-selector=status.phase=Running").stdout)
    assert len(listed) == 5 and {r["STATUS"] for r in listed} == {"Running"}, listed
    assert {r["READY"] for r in listed} == {"1/1"}, listed
    row = rows(k("get", "deployment", "web").stdout)[0]
    assert (row["READY"], row["UP-TO-DATE"], row["AVAILABLE"]) == ("5/5", "5", "5"), row


# --- Jobs and CronJobs ----------------------------------------------------------------


def test_job_whose_pods_fail_ends_failed_at_the_backoff_limit(sim: Cluster, ns: str) -> None:
    k = in_ns(sim, ns)
    apply(k, job("x", "exit 1", backoffLimit=1))
    out = k("wait", "--for=condition=failed", "job/x", "--timeout=60s").stdout
    assert out.strip() == "job.batch/x condition met"
    obj = get_json(k, "job", "x")
    failed = condition(obj, "Failed")
    assert (failed["status"], failed["reason"]) == ("True", "BackoffLimitExceeded"), obj["status"]
    assert not condition(obj, "Complete"), obj["status"]
    assert obj["status"].get("failed") == 2, obj["status"]  # backoffLimit 1: two tries
    assert not obj["status"].get("succeeded") and not obj["status"].get("active")
    row = rows(k("get", "job", "x").stdout)[0]
    assert (row["STATUS"], row["COMPLETIONS"]) == ("Failed", "0/1"), row
    listed = rows(k("get", "pods", "-l", "job-name=x").stdout)
    assert len(listed) == 2 and {r["STATUS"] for r in listed} == {"Error"}, listed


def test_parallel_job_completes_never_running_more_than_parallelism(sim: Cluster, ns: str) -> None:
    k = in_ns(sim, ns)
    since = list_revision(k, ns)
    apply(k, job("par", "exit 0", completions=3, parallelism=2))
    out = k("wait", "--for=condition=complete", "job/par", "--timeout=60s").stdout
    assert out.strip() == "job.batch/par condition met"
    obj = get_json(k, "job", "par")
    assert (obj["status"].get("succeeded"), obj["status"].get("failed", 0)) == (3, 0)
    assert condition(obj, "Complete")["status"] == "True"
    assert obj["status"].get("completionTime")
    row = rows(k("get", "job", "par").stdout)[0]
    assert (row["STATUS"], row["COMPLETIONS"]) == ("Complete", "3/3"), row
    listed = rows(k("get", "pods", "-l", "job-name=par").stdout)
    assert len(listed) == 3 and {r["STATUS"] for r in listed} == {"Completed"}, listed

    active: set[str] = set()
    most = 0
    for kind, pod in replay(k, ns, since, "job-name=par"):
        name = pod["metadata"]["name"]
        if kind == "DELETED" or pod["status"].get("phase") in ("Succeeded", "Failed"):
            active.discard(name)
        else:
            active.add(name)
        most = max(most, len(active))
    assert most == 2, f"at most parallelism=2 pods active at once, saw {most}"


def test_indexed_job_completes_every_index(sim: Cluster, ns: str) -> None:
    k = in_ns(sim, ns)
    apply(k, job("idx", "exit 0", completions=3, parallelism=3, completionMode="Indexed"))
    k("wait", "--for=condition=complete", "job/idx", "--timeout=60s")
    obj = get_json(k, "job", "idx")
    assert obj["status"].get("completedIndexes") == "0-2", obj["status"]
    assert obj["status"].get("succeeded") == 3, obj["status"]
    listed = sorted(
        pods(k, "job-name=idx"),
        key=lambda p: p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"],
    )
    assert len(listed) == 3, [p["metadata"]["name"] for p in listed]
    for index, p in enumerate(listed):
        meta = p["metadata"]
        assert meta["annotations"]["batch.kubernetes.io/job-completion-index"] == str(index)
        assert meta["labels"].get("batch.kubernetes.io/job-completion-index") == str(index)
        assert meta["name"].startswith(f"idx-{index}-"), meta["name"]
        assert p["spec"].get("hostname") == f"idx-{index}", p["spec"].get("hostname")
        env = {e["name"]: e for e in p["spec"]["containers"][0].get("env") or []}
        path = env["JOB_COMPLETION_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"]
        assert path == "metadata.annotations['batch.kubernetes.io/job-completion-index']"
        assert p["status"]["phase"] == "Succeeded"
        assert "batch.kubernetes.io/job-tracking" not in (meta.get("finalizers") or [])


def test_job_created_from_a_cronjob_is_owned_by_it_and_completes(sim: Cluster, ns: str) -> None:
    k = in_ns(sim, ns)
    out = k(
        "create",
        "cronjob",
        "nightly",
        "--image=busybox:1.36",
        "--schedule=0 3 * * *",
        "--",
        "sh",
        "-c",
        "exit 0",
    ).stdout
    assert out.strip() == "cronjob.batch/nightly created"
    table = k("get", "cronjob", "nightly").stdout
    header = re.split(r"\s{2,}", table.splitlines()[0].strip())
    for column in ("NAME", "SCHEDULE", "SUSPEND", "ACTIVE", "LAST SCHEDULE", "AGE"):
        assert column in header, table
    row = rows(table)[0]
    assert (row["NAME"], row["SCHEDULE"], row["SUSPEND"], row["ACTIVE"]) == (
        "nightly",
        "0 3 * * *",
        "False",
        "0",
    ), row
    assert row["LAST SCHEDULE"] == "<none>", row

    cron = get_json(k, "cronjob", "nightly")
    out = k("create", "job", "--from=cronjob/nightly", "manual-1").stdout
    assert out.strip() == "job.batch/manual-1 created"
    made = get_json(k, "job", "manual-1")
    assert made["metadata"]["ownerReferences"] == [
        {
            "apiVersion": "batch/v1",
            "kind": "CronJob",
            "name": "nightly",
            "uid": cron["metadata"]["uid"],
            "controller": True,
        }
    ], made["metadata"]
    assert made["metadata"]["annotations"].get("cronjob.kubernetes.io/instantiate") == "manual"
    k("wait", "--for=condition=complete", "job/manual-1", "--timeout=60s")
    row = rows(k("get", "job", "manual-1").stdout)[0]
    assert (row["STATUS"], row["COMPLETIONS"]) == ("Complete", "1/1"), row
    # the CronJob neither adopts nor removes a Job it did not schedule
    assert get_json(k, "job", "manual-1")["metadata"]["uid"] == made["metadata"]["uid"]
    assert not get_json(k, "cronjob", "nightly")["status"].get("lastScheduleTime")


# --- StatefulSets ---------------------------------------------------------------------


def test_ordered_ready_statefulset_starts_in_order_and_scales_down_in_reverse(
    sim: Cluster, ns: str
) -> None:
    k = in_ns(sim, ns)
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web"},
        "spec": {"clusterIP": "None", "selector": {"app": "web"}, "ports": [{"port": 80}]},
    }
    statefulset = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "web"},
        "spec": {
            "serviceName": "web",
            "replicas": 3,
            "podManagementPolicy": "OrderedReady",
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": "busybox:1.36",
                            "command": ["sleep", "infinity"],
                            "readinessProbe": {
                                "exec": {"command": ["true"]},
                                "initialDelaySeconds": 1,
                            },
                        }
                    ]
                },
            },
        },
    }
    since = list_revision(k, ns)
    apply(k, service, statefulset)
    k("rollout", "status", "statefulset/web", "--timeout=60s")
    row = rows(k("get", "statefulset", "web").stdout)[0]
    assert row["READY"] == "3/3", row
    listed = pods(k, "app=web")
    assert sorted(p["metadata"]["name"] for p in listed) == ["web-0", "web-1", "web-2"]
    assert all(is_ready(p) for p in listed)
    for p in listed:
        assert (p["spec"].get("hostname"), p["spec"].get("subdomain")) == (
            p["metadata"]["name"],
            "web",
        ), p["spec"]
    created = sorted(
        listed, key=lambda p: (p["metadata"]["creationTimestamp"], p["metadata"]["name"])
    )
    assert [p["metadata"]["name"] for p in created] == ["web-0", "web-1", "web-2"]

    # OrderedReady: web-N is created only once web-(N-1) is Ready
    ready: set[str] = set()
    added: list[str] = []
    for kind, pod in replay(k, ns, since, "app=web"):
        name = pod["metadata"]["name"]
        if kind == "ADDED":
            ordinal = int(name.rsplit("-", 1)[1])
            assert all(f"web-{i}" in ready for i in range(ordinal)), (
                f"{name} created before its predecessors were Ready (ready: {sorted(ready)})"
            )
            added.append(name)
        if is_ready(pod):
            ready.add(name)
    assert added == ["web-0", "web-1", "web-2"]

    # scale down: web-2 goes entirely before web-1 is touched
    since = list_revision(k, ns)
    out = k("scale", "statefulset", "web", "--replicas=1").stdout
    assert out.strip() == "statefulset.apps/web scaled"
    k("wait", "--for=delete", "pod/web-2", "pod/web-1", "--timeout=60s", check=False)
    eventually(lambda: [p["metadata"]["name"] for p in pods(k, "app=web")] == ["web-0"], "web-0")
    started: dict[str, int] = {}  # first event with a deletionTimestamp (or DELETED)
    deleted: dict[str, int] = {}
    for i, (kind, pod) in enumerate(replay(k, ns, since, "app=web")):
        name = pod["metadata"]["name"]
        if kind == "DELETED" or pod["metadata"].get("deletionTimestamp"):
            started.setdefault(name, i)
        if kind == "DELETED":
            deleted[name] = i
    assert sorted(deleted) == ["web-1", "web-2"], deleted
    assert "web-0" not in started, started
    assert deleted["web-2"] < started["web-1"], (
        f"web-1 was deleted before web-2 was gone: {started=} {deleted=}"
    )
    row = rows(k("get", "statefulset", "web").stdout)[0]
    assert row["READY"] == "1/1", row


# --- deletion -------------------------------------------------------------------------


def test_deleting_a_namespace_removes_it_and_everything_in_it(sim: Cluster, ns: str) -> None:
    k = in_ns(sim, ns)
    k("create", "deployment", "web", "--image=busybox:1.36", "--replicas=2", "--", "sleep", "inf")
    k("create", "configmap", "settings", "--from-literal=mode=test")
    k("create", "service", "clusterip", "web", "--tcp=80:8080")
    rolled_out(k, "deployment/web")

    result = sim.kubectl("delete", "namespace", ns, "--timeout=60s", timeout=90)
    assert result.stdout.strip() == f'namespace "{ns}" deleted', result.stdout
    gone = sim.kubectl("get", "namespace", ns, check=False)
    assert gone.returncode != 0, gone.stdout
    assert f'namespaces "{ns}" not found' in gone.stderr, gone.stderr
    for resource in ("deployments", "replicasets", "pods", "configmaps", "services"):
        items = get_json(k, resource)["items"]
        assert items == [], (resource, [i["metadata"]["name"] for i in items])
    eventually(lambda: get_json(k, "instances")["items"] == [], "the instances to be released")


def test_foreground_deletion_removes_the_replicasets_and_pods_first(sim: Cluster, ns: str) -> None:
    k = in_ns(sim, ns)
    k("create", "deployment", "web", "--image=busybox:1.36", "--replicas=2", "--", "sleep", "inf")
    rolled_out(k, "deployment/web")
    assert len(replicasets(k, "app=web")) == 1 and len(pods(k, "app=web")) == 2

    since = list_revision(k, ns)
    out = k("delete", "deployment", "web", "--cascade=foreground", "--timeout=60s").stdout
    assert 'deployment.apps "web" deleted' in out, out
    assert absent(k, "deployment", "web")
    assert replicasets(k, "app=web") == {}
    assert pods(k, "app=web") == []

    # The order, from the three watches merged by resourceVersion (the store's
    # revisions are one sequence, as etcd's are): the Deployment is marked
    # with the foregroundDeletion finalizer first and goes last, after every
    # ReplicaSet and pod is gone.
    events = sorted(
        (int(obj["metadata"]["resourceVersion"]), kind, obj)
        for collection in ("api/v1/pods", "apis/apps/v1/replicasets", "apis/apps/v1/deployments")
        for kind, obj in replay(k, ns, since, collection=collection)
    )
    story = [(kind, obj["kind"], obj["metadata"]["name"]) for _, kind, obj in events]
    first = events[0][2]
    assert (first["kind"], first["metadata"].get("finalizers")) == (
        "Deployment",
        ["foregroundDeletion"],
    ), story
    assert first["metadata"].get("deletionTimestamp"), story
    gone = [(o, n) for kind, o, n in story if kind == "DELETED"]
    assert len(gone) == 4 and gone[-1] == ("Deployment", "web"), story
    assert sorted(o for o, _ in gone[:-1]) == ["Pod", "Pod", "ReplicaSet"], story


def test_orphan_deletion_leaves_the_replicaset_and_its_pods_running(sim: Cluster, ns: str) -> None:
    k = in_ns(sim, ns)
    k("create", "deployment", "web", "--image=busybox:1.36", "--replicas=2", "--", "sleep", "inf")
    rolled_out(k, "deployment/web")
    (rs,) = replicasets(k, "app=web").values()
    assert owner_names(rs) == ["web"]
    before = {p["metadata"]["uid"] for p in running_pods(k, "app=web")}
    assert len(before) == 2

    out = k("delete", "deployment", "web", "--cascade=orphan", "--timeout=60s").stdout
    assert 'deployment.apps "web" deleted' in out, out
    assert absent(k, "deployment", "web")
    left = replicasets(k, "app=web")
    assert list(left) == [rs["metadata"]["name"]], left
    orphan = left[rs["metadata"]["name"]]
    assert orphan["metadata"]["uid"] == rs["metadata"]["uid"]
    assert not orphan["metadata"].get("ownerReferences"), orphan["metadata"]
    assert not orphan["metadata"].get("finalizers"), orphan["metadata"]
    assert orphan["spec"]["replicas"] == 2
    live = running_pods(k, "app=web")
    assert {p["metadata"]["uid"] for p in live} == before, "the pods must be left untouched"
    # only the Deployment's direct dependents are orphaned: pods keep their ReplicaSet
    for p in live:
        refs = p["metadata"]["ownerReferences"]
        assert [(r["kind"], r["uid"]) for r in refs] == [("ReplicaSet", rs["metadata"]["uid"])]


# --- Services, EndpointSlices and Endpoints -------------------------------------------


def test_service_gets_endpointslice_and_endpoints_with_the_pod_ips(sim: Cluster, ns: str) -> None:
    k = in_ns(sim, ns)
    k(
        "create",
        "deployment",
        "web",
        "--image=busybox:1.36",
        "--replicas=2",
        "--port=8080",
        "--",
        "sleep",
        "infinity",
    )
    out = k("expose", "deployment", "web", "--port=80", "--target-port=8080").stdout
    assert out.strip() == "service/web exposed"
    rolled_out(k, "deployment/web")
    service = get_json(k, "service", "web")

    def sliced(count: int) -> Callable[[], tuple[set[str], list[dict[str, Any]]] | None]:
        def probe() -> tuple[set[str], list[dict[str, Any]]] | None:
            live = running_pods(k, "app=web")
            ips = {p["status"]["podIP"] for p in live if p["status"].get("podIP")}
            slices = get_json(k, "endpointslices", "-l", "kubernetes.io/service-name=web")["items"]
            addresses = {
                a for s in slices for e in s.get("endpoints") or [] for a in e["addresses"]
            }
            if len(ips) == count and addresses == ips:
                return ips, slices
            return None

        return probe

    ips, slices = eventually(sliced(2), "an EndpointSlice with both pods' IPs")
    assert len(slices) == 1, slices
    (slice_,) = slices
    assert slice_["addressType"] == "IPv4"
    assert slice_["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"] == (
        "endpointslice-controller.k8s.io"
    )
    owner = slice_["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"]) == (
        "Service",
        "web",
        service["metadata"]["uid"],
    )
    assert [(p.get("port"), p.get("protocol")) for p in slice_["ports"]] == [(8080, "TCP")]
    by_ip = {p["status"]["podIP"]: p for p in running_pods(k, "app=web")}
    for endpoint in slice_["endpoints"]:
        assert endpoint["conditions"]["ready"] is True, endpoint
        pod = by_ip[endpoint["addresses"][0]]
        assert endpoint["targetRef"]["kind"] == "Pod"
        assert endpoint["targetRef"]["name"] == pod["metadata"]["name"]
        assert endpoint.get("nodeName") == pod["spec"]["nodeName"]

    def listed() -> set[str] | None:
        row = rows(k("get", "endpoints", "web").stdout)[0]
        got = set(row["ENDPOINTS"].split(","))
        return got if got == {f"{ip}:8080" for ip in ips} else None

    eventually(listed, "`kubectl get endpoints web` to list both pods")
    endpoints = get_json(k, "endpoints", "web")
    (subset,) = endpoints["subsets"]
    assert {a["ip"] for a in subset["addresses"]} == ips
    assert [(p["port"], p["protocol"]) for p in subset["ports"]] == [(8080, "TCP")]

    # a third replica joins the slice
    k("scale", "deployment", "web", "--replicas=3")
    ips, _ = eventually(sliced(3), "the EndpointSlice to list the third pod")
    eventually(
        lambda: (
            {a["ip"] for s in get_json(k, "endpoints", "web")["subsets"] for a in s["addresses"]}
            == ips
        ),
        "Endpoints to list the third pod",
    )


# --- evictions and disruption budgets -------------------------------------------------


def test_eviction_respects_the_pod_disruption_budget(sim: Cluster, ns: str) -> None:
    k = in_ns(sim, ns)
    k("create", "deployment", "web", "--image=busybox:1.36", "--replicas=2", "--", "sleep", "inf")
    rolled_out(k, "deployment/web")
    out = k("create", "pdb", "web", "--selector=app=web", "--min-available=2").stdout
    assert out.strip() == "poddisruptionbudget.policy/web created"

    def budget(allowed: int) -> Callable[[], dict[str, Any] | None]:
        def probe() -> dict[str, Any] | None:
            pdb = get_json(k, "pdb", "web")
            status = pdb.get("status") or {}
            ok = (
                observed(pdb)
                and status.get("expectedPods") == 2
                and status.get("currentHealthy") == 2
                and status.get("disruptionsAllowed") == allowed
            )
            return pdb if ok else None

        return probe

    pdb = eventually(budget(0), "the budget to allow no disruption")
    assert condition(pdb, "DisruptionAllowed").get("status") == "False", pdb["status"]
    row = rows(k("get", "pdb", "web").stdout)[0]
    assert (row["MIN AVAILABLE"], row["MAX UNAVAILABLE"], row["ALLOWED DISRUPTIONS"]) == (
        "2",
        "N/A",
        "0",
    ), row

    victim = sorted(p["metadata"]["name"] for p in running_pods(k, "app=web"))[0]
    path = f"/api/v1/namespaces/{ns}/pods/{victim}/eviction"
    refused = k("create", "--raw", path, "-f", "-", input=eviction(ns, victim), check=False)
    assert refused.returncode != 0, refused.stdout
    assert (
        "Error from server (TooManyRequests): Cannot evict pod as it would violate the pod's "
        "disruption budget." in refused.stderr
    ), refused.stderr
    still = get_json(k, "pod", victim)
    assert not still["metadata"].get("deletionTimestamp"), still["metadata"]

    k("patch", "pdb", "web", "--type=merge", "-p", '{"spec":{"minAvailable":1}}')
    eventually(budget(1), "the budget to allow one disruption")
    since = list_revision(k, ns)
    granted = k("create", "--raw", path, "-f", "-", input=eviction(ns, victim))
    status = json.loads(granted.stdout)
    assert (status["kind"], status["status"]) == ("Status", "Success"), status

    def replaced() -> list[dict[str, Any]] | None:
        live = settled(k, "app=web", 2)()
        if live and victim not in {p["metadata"]["name"] for p in live}:
            return live
        return None

    eventually(replaced, "the Deployment to replace the evicted pod")
    assert absent(k, "pod", victim)
    rolled_out(k, "deployment/web")
    eventually(budget(1), "the budget to count the replacement")

    # the eviction charged the budget (disruptedPods) ...
    charged = [
        pdb["status"]
        for _, pdb in replay(k, ns, since, collection="apis/policy/v1/poddisruptionbudgets")
        if victim in ((pdb.get("status") or {}).get("disruptedPods") or {})
    ]
    assert charged, "the eviction must record the pod in the budget's status.disruptedPods"
    assert charged[0]["disruptionsAllowed"] == 0, charged[0]
    # ... and marked the pod DisruptionTarget before deleting it
    marks = [
        c
        for _, pod in replay(k, ns, since, "app=web")
        if pod["metadata"]["name"] == victim
        for c in pod["status"].get("conditions") or []
        if c["type"] == "DisruptionTarget"
    ]
    assert marks, (
        f"the evicted pod {victim} never carried the DisruptionTarget condition "
        "(upstream: True, reason EvictionByEvictionAPI, set before the delete)"
    )
    assert (marks[0]["status"], marks[0]["reason"], marks[0].get("message")) == (
        "True",
        "EvictionByEvictionAPI",
        "Eviction API: evicting",
    ), marks[0]
