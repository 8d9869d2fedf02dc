"""The StatefulSet controller against a whole in-process cluster: pods really
go Pending → Running → Ready (a readinessProbe's initialDelaySeconds makes
readiness observable), and a watch records the order the API saw changes in,
so ordering guarantees are checked on the API's own history."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from nodeless.client import clients, informers
from nodeless.controllers import revisions, statefulsets
from tests.unit.controllers.conftest import Stack

NS = "default"
STS = statefulsets.STATEFULSETS
PODS = statefulsets.PODS
PVCS = statefulsets.CLAIMS
EVENTS = clients.ResourceRef("", "v1", "events", True, "Event")
CRS = revisions.CONTROLLER_REVISIONS

Obj = dict[str, Any]


def container(ready_after: int | None = None) -> Obj:
    spec: Obj = {"name": "app", "image": "busybox", "command": ["sleep", "infinity"]}
    if ready_after is not None:
        spec["readinessProbe"] = {
            "exec": {"command": ["true"]},
            "initialDelaySeconds": ready_after,
            "periodSeconds": 1,
        }
    return spec


def make_set(
    *,
    replicas: int = 3,
    policy: str = "OrderedReady",
    ready_after: int | None = None,
    claims: bool = False,
    update_strategy: Obj | None = None,
    history_limit: int | None = None,
    retention: Obj | None = None,
    start: int | None = None,
) -> Obj:
    spec: Obj = {
        "serviceName": "web",
        "replicas": replicas,
        "podManagementPolicy": policy,
        "selector": {"matchLabels": {"app": "web"}},
        "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {
                "terminationGracePeriodSeconds": 1,
                "containers": [container(ready_after)],
            },
        },
    }
    if claims:
        spec["volumeClaimTemplates"] = [
            {
                "metadata": {"name": "data", "labels": {"tier": "db"}},
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": "1Gi"}},
                },
            }
        ]
    if update_strategy is not None:
        spec["updateStrategy"] = update_strategy
    if history_limit is not None:
        spec["revisionHistoryLimit"] = history_limit
    if retention is not None:
        spec["persistentVolumeClaimRetentionPolicy"] = retention
    if start is not None:
        spec["ordinals"] = {"start": start}
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "web", "namespace": NS},
        "spec": spec,
    }


@pytest.fixture
async def controller(stack: Stack) -> AsyncIterator[statefulsets.StatefulSetController]:
    factory = informers.InformerFactory(stack.client)
    ctrl = statefulsets.StatefulSetController(stack.client, factory, recorder=stack.recorder)
    await ctrl.start()
    factory.start()
    try:
        yield ctrl
    finally:
        await ctrl.stop()
        await factory.stop()


class PodHistory:
    """Every pod change in the namespace, in the order the API made them."""

    def __init__(self, client: clients.ApiClient) -> None:
        self.client = client
        self.events: list[tuple[str, Obj]] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> PodHistory:
        listed = await self.client.list(PODS, NS)
        self._task = asyncio.create_task(self._follow(listed.resource_version))
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _follow(self, resource_version: str) -> None:
        stream = self.client.watch(PODS, NS, resource_version=resource_version)
        async with contextlib.aclosing(stream):
            async for event in stream:
                if event.type != "BOOKMARK":
                    self.events.append((event.type, event.object))

    def added(self) -> list[str]:
        return [name_of(obj) for kind, obj in self.events if kind == "ADDED"]

    def deletion_starts(self) -> list[str]:
        """Pods in the order their deletion began (deletionTimestamp set, or gone
        outright)."""
        started: list[str] = []
        for kind, obj in self.events:
            deleting = kind == "DELETED" or bool(obj["metadata"].get("deletionTimestamp"))
            if deleting and uid_of(obj) not in started:
                started.append(uid_of(obj))
        names = {uid_of(obj): name_of(obj) for _, obj in self.events}
        return [names[uid] for uid in started]

    def index(self, predicate: Any) -> int:
        """Position of the first event ``predicate(kind, obj)`` accepts."""
        for i, (kind, obj) in enumerate(self.events):
            if predicate(kind, obj):
                return i
        raise AssertionError("no such pod event")

    def state_at(self, position: int) -> dict[str, Obj]:
        """The pods as the API held them just before event ``position``."""
        pods: dict[str, Obj] = {}
        for kind, obj in self.events[:position]:
            if kind == "DELETED":
                pods.pop(name_of(obj), None)
            else:
                pods[name_of(obj)] = obj
        return pods


def name_of(obj: Obj) -> str:
    return str(obj["metadata"]["name"])


def uid_of(obj: Obj) -> str:
    return str(obj["metadata"]["uid"])


def ready(pod: Obj) -> bool:
    return statefulsets.is_running_and_ready(pod)


async def get_set(stack: Stack) -> Obj:
    return await stack.client.get(STS, NS, "web")


async def pods_by_name(stack: Stack) -> dict[str, Obj]:
    return {name_of(p): p for p in await stack.pods(NS, "app=web")}


async def wait_ready(stack: Stack, names: list[str], timeout: float = 10.0) -> dict[str, Obj]:
    """Until exactly ``names`` exist, all Running and Ready and none terminating."""

    async def check() -> dict[str, Obj] | None:
        pods = await pods_by_name(stack)
        if sorted(pods) != sorted(names):
            return None
        if all(ready(p) and not statefulsets.is_terminating(p) for p in pods.values()):
            return pods
        return None

    found: dict[str, Obj] = await stack.wait_for(check, timeout=timeout)
    return found


async def wait_status(stack: Stack, timeout: float = 10.0, **expected: Any) -> Obj:
    async def check() -> Obj | None:
        got = await get_set(stack)
        status = got.get("status") or {}
        if got["metadata"].get("generation") != status.get("observedGeneration"):
            return None
        return got if all(status.get(k) == v for k, v in expected.items()) else None

    found: Obj = await stack.wait_for(check, timeout=timeout)
    return found


async def patch_spec(stack: Stack, spec: Obj) -> Obj:
    return await stack.client.patch(STS, NS, "web", {"spec": spec}, patch_type="merge")


async def change_template(stack: Stack, value: str, *, ready_after: int | None = None) -> None:
    """A new pod template: an annotation, and the readiness delay of new pods."""
    template: Obj = {"metadata": {"annotations": {"version": value}}}
    if ready_after is not None:
        template["spec"] = {"containers": [container(ready_after)]}
    await patch_spec(stack, {"template": template})


async def set_revisions(stack: Stack) -> list[Obj]:
    return revisions.sorted_revisions((await stack.client.list(CRS, NS)).items)


async def event_messages(stack: Stack, reason: str) -> list[str]:
    await stack.recorder.flush()
    items = (await stack.client.list(EVENTS, NS)).items
    return [
        e["message"]
        for e in items
        if e.get("reason") == reason and e["involvedObject"].get("kind") == "StatefulSet"
    ]


# --- ordering ----------------------------------------------------------------------


async def test_ordered_ready_creates_each_pod_only_after_the_previous_is_ready(
    stack: Stack, controller: statefulsets.StatefulSetController
) -> None:
    async with PodHistory(stack.client) as history:
        await stack.client.create(STS, make_set(replicas=3, ready_after=1))
        await wait_ready(stack, ["web-0", "web-1", "web-2"])

    assert history.added() == ["web-0", "web-1", "web-2"]
    for previous, name in (("web-0", "web-1"), ("web-1", "web-2")):
        position = history.index(lambda kind, obj, n=name: kind == "ADDED" and name_of(obj) == n)
        before = history.state_at(position)
        assert ready(before[previous]), f"{name} was created before {previous} was ready"
    await wait_status(stack, replicas=3, readyReplicas=3, availableReplicas=3)


async def test_ordered_ready_scales_down_from_the_highest_ordinal_one_at_a_time(
    stack: Stack, controller: statefulsets.StatefulSetController
) -> None:
    await stack.client.create(STS, make_set(replicas=3))
    await wait_ready(stack, ["web-0", "web-1", "web-2"])

    async with PodHistory(stack.client) as history:
        await patch_spec(stack, {"replicas": 1})
        await wait_ready(stack, ["web-0"])

    assert history.deletion_starts() == ["web-2", "web-1"]
    web2_gone = history.index(lambda kind, obj: kind == "DELETED" and name_of(obj) == "web-2")
    web1_deleting = history.index(
        lambda kind, obj: (
            name_of(obj) == "web-1"
            and (kind == "DELETED" or bool(obj["metadata"].get("deletionTimestamp")))
        )
    )
    assert web2_gone < web1_deleting, "web-1 was deleted before web-2 was gone"
    await wait_status(stack, replicas=1, readyReplicas=1)
    deletes = await event_messages(stack, "SuccessfulDelete")
    assert sorted(deletes) == [
        "delete Pod web-1 in StatefulSet web successful",
        "delete Pod web-2 in StatefulSet web successful",
    ]


async def test_parallel_creates_all_pods_without_waiting_for_readiness(
    stack: Stack, controller: statefulsets.StatefulSetController
) -> None:
    async with PodHistory(stack.client) as history:
        await stack.client.create(STS, make_set(replicas=3, policy="Parallel", ready_after=1))
        await wait_ready(stack, ["web-0", "web-1", "web-2"])

    last_created = max(
        history.index(lambda kind, obj, n=n: kind == "ADDED" and name_of(obj) == n)
        for n in ("web-0", "web-1", "web-2")
    )
    assert not any(ready(p) for p in history.state_at(last_created + 1).values())


# --- identity -------------------------------------------------------------------------


async def test_pods_get_stable_identities_from_the_start_ordinal(
    stack: Stack, controller: statefulsets.StatefulSetController
) -> None:
    created = await stack.client.create(STS, make_set(replicas=2, policy="Parallel", start=5))
    pods = await wait_ready(stack, ["web-5", "web-6"])
    got = await wait_status(stack, replicas=2, readyReplicas=2)
    revision = got["status"]["updateRevision"]

    for ordinal in (5, 6):
        pod = pods[f"web-{ordinal}"]
        labels = pod["metadata"]["labels"]
        assert labels[statefulsets.POD_NAME_LABEL] == f"web-{ordinal}"
        assert labels[statefulsets.POD_INDEX_LABEL] == str(ordinal)
        assert labels["controller-revision-hash"] == revision
        assert labels["app"] == "web"
        assert pod["spec"]["hostname"] == f"web-{ordinal}"
        assert pod["spec"]["subdomain"] == "web"
        [owner] = pod["metadata"]["ownerReferences"]
        assert owner["kind"] == "StatefulSet"
        assert owner["uid"] == created["metadata"]["uid"]
        assert owner["controller"] is True
    assert got["status"]["currentRevision"] == revision
    assert sorted(await event_messages(stack, "SuccessfulCreate")) == [
        "create Pod web-5 in StatefulSet web successful",
        "create Pod web-6 in StatefulSet web successful",
    ]


async def test_claims_are_created_per_ordinal_before_their_pods_and_mounted(
    stack: Stack, controller: statefulsets.StatefulSetController
) -> None:
    await stack.client.create(STS, make_set(replicas=2, policy="Parallel", claims=True))
    pods = await wait_ready(stack, ["web-0", "web-1"])

    claims = {name_of(c): c for c in (await stack.client.list(PVCS, NS)).items}
    assert sorted(claims) == ["data-web-0", "data-web-1"]
    for ordinal in (0, 1):
        claim = claims[f"data-web-{ordinal}"]
        pod = pods[f"web-{ordinal}"]
        assert claim["metadata"]["labels"] == {"tier": "db", "app": "web"}
        assert claim["spec"]["resources"]["requests"]["storage"] == "1Gi"
        assert not claim["metadata"].get("ownerReferences"), "Retain keeps claims unowned"
        assert int(claim["metadata"]["resourceVersion"]) < int(pod["metadata"]["resourceVersion"])
        volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
        assert volumes["data"]["persistentVolumeClaim"]["claimName"] == f"data-web-{ordinal}"
    assert sorted(await event_messages(stack, "SuccessfulCreate")) == [
        "create Claim data-web-0 Pod web-0 in StatefulSet web success",
        "create Claim data-web-1 Pod web-1 in StatefulSet web success",
        "create Pod web-0 in StatefulSet web successful",
        "create Pod web-1 in StatefulSet web successful",
    ]


async def test_retention_policy_delete_makes_the_set_then_the_scaled_down_pod_own_claims(
    stack: Stack, controller: statefulsets.StatefulSetController
) -> None:
    created = await stack.client.create(
        STS,
        make_set(
            replicas=2,
            policy="Parallel",
            claims=True,
            retention={"whenDeleted": "Delete", "whenScaled": "Delete"},
        ),
    )
    pods = await wait_ready(stack, ["web-0", "web-1"])
    set_uid = created["metadata"]["uid"]

    async def owners(claim: str) -> list[Obj]:
        got = await stack.client.get(PVCS, NS, claim)
        return list(got["metadata"].get("ownerReferences") or [])

    for claim in ("data-web-0", "data-web-1"):
        [owner] = await owners(claim)
        assert (owner["kind"], owner["uid"], owner["controller"]) == ("StatefulSet", set_uid, True)

    await patch_spec(stack, {"replicas": 1})
    await wait_ready(stack, ["web-0"])

    [owner] = await owners("data-web-1")
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
        "Pod",
        "web-1",
        uid_of(pods["web-1"]),
        True,
    )
    [owner] = await owners("data-web-0")
    assert owner["uid"] == set_uid


# --- updates ----------------------------------------------------------------------------


async def test_rolling_update_replaces_pods_from_the_highest_ordinal_one_ready_pod_at_a_time(
    stack: Stack, controller: statefulsets.StatefulSetController
) -> None:
    await stack.client.create(STS, make_set(replicas=3, policy="Parallel"))
    old_pods = await wait_ready(stack, ["web-0", "web-1", "web-2"])
    old_revision = (await wait_status(stack, readyReplicas=3))["status"]["updateRevision"]

    async with PodHistory(stack.client) as history:
        await change_template(stack, "2", ready_after=1)
        got = await wait_status(stack, timeout=20.0, updatedReplicas=3, readyReplicas=3)
        new_revision = got["status"]["updateRevision"]
        await wait_ready(stack, ["web-0", "web-1", "web-2"])

    assert new_revision != old_revision
    assert got["status"]["currentRevision"] == new_revision
    assert got["status"]["currentReplicas"] == 3
    assert history.deletion_starts() == ["web-2", "web-1", "web-0"]
    for replaced, next_victim in (("web-2", "web-1"), ("web-1", "web-0")):
        position = history.index(
            lambda kind, obj, n=next_victim: (
                name_of(obj) == n
                and uid_of(obj) == uid_of(old_pods[n])
                and (kind == "DELETED" or bool(obj["metadata"].get("deletionTimestamp")))
            )
        )
        successor = history.state_at(position)[replaced]
        assert statefulsets.revision_of(successor) == new_revision
        assert ready(successor), f"{next_victim} went before the new {replaced} was ready"
    for pod in (await pods_by_name(stack)).values():
        assert statefulsets.revision_of(pod) == new_revision
        assert pod["metadata"]["annotations"]["version"] == "2"


async def test_partition_updates_only_ordinals_at_or_above_it(
    stack: Stack, controller: statefulsets.StatefulSetController
) -> None:
    strategy = {"type": "RollingUpdate", "rollingUpdate": {"partition": 2}}
    await stack.client.create(
        STS, make_set(replicas=3, policy="Parallel", update_strategy=strategy)
    )
    old_pods = await wait_ready(stack, ["web-0", "web-1", "web-2"])
    old_revision = (await wait_status(stack, readyReplicas=3))["status"]["updateRevision"]

    await change_template(stack, "2")
    got = await wait_status(stack, updatedReplicas=1, readyReplicas=3)
    pods = await wait_ready(stack, ["web-0", "web-1", "web-2"])

    new_revision = got["status"]["updateRevision"]
    assert got["status"]["currentRevision"] == old_revision != new_revision
    assert statefulsets.revision_of(pods["web-2"]) == new_revision
    for name in ("web-0", "web-1"):
        assert uid_of(pods[name]) == uid_of(old_pods[name])
        assert statefulsets.revision_of(pods[name]) == old_revision

    # A pod below the partition that goes is recreated at the current revision.
    await stack.client.delete(PODS, NS, "web-0")

    async def recreated() -> Obj | None:
        pod = (await pods_by_name(stack)).get("web-0")
        if pod is None or uid_of(pod) == uid_of(old_pods["web-0"]) or not ready(pod):
            return None
        return pod

    pod = await stack.wait_for(recreated)
    assert statefulsets.revision_of(pod) == old_revision
    assert "version" not in (pod["metadata"].get("annotations") or {})


async def test_on_delete_recreates_only_deleted_pods_at_the_update_revision(
    stack: Stack, controller: statefulsets.StatefulSetController
) -> None:
    await stack.client.create(
        STS, make_set(replicas=3, policy="Parallel", update_strategy={"type": "OnDelete"})
    )
    old_pods = await wait_ready(stack, ["web-0", "web-1", "web-2"])
    old_revision = (await wait_status(stack, readyReplicas=3))["status"]["updateRevision"]

    await change_template(stack, "2")

    async def revised() -> Obj | None:
        got = await wait_status(stack)
        return got if got["status"]["updateRevision"] != old_revision else None

    new_revision = (await stack.wait_for(revised))["status"]["updateRevision"]
    untouched = await pods_by_name(stack)
    assert {n: uid_of(p) for n, p in untouched.items()} == {
        n: uid_of(p) for n, p in old_pods.items()
    }

    await stack.client.delete(PODS, NS, "web-1")

    async def replaced() -> dict[str, Obj] | None:
        pods = await pods_by_name(stack)
        web1 = pods.get("web-1")
        if web1 is None or uid_of(web1) == uid_of(old_pods["web-1"]) or not ready(web1):
            return None
        return pods

    pods = await stack.wait_for(replaced)
    assert statefulsets.revision_of(pods["web-1"]) == new_revision
    for name in ("web-0", "web-2"):
        assert uid_of(pods[name]) == uid_of(old_pods[name])
        assert statefulsets.revision_of(pods[name]) == old_revision
    got = await wait_status(stack, updatedReplicas=1, readyReplicas=3)
    assert got["status"]["currentRevision"] == old_revision


async def test_a_failed_pod_is_replaced_by_a_new_pod_of_the_same_name(
    stack: Stack, controller: statefulsets.StatefulSetController
) -> None:
    await stack.client.create(STS, make_set(replicas=2))
    old = (await wait_ready(stack, ["web-0", "web-1"]))["web-0"]

    [instance] = [i for i in await stack.provider.list() if i.pod_uid == uid_of(old)]
    await stack.provider.reclaim(instance.instance_id)

    async def replaced() -> Obj | None:
        pod = (await pods_by_name(stack)).get("web-0")
        if pod is None or uid_of(pod) == uid_of(old) or not ready(pod):
            return None
        return pod

    pod = await stack.wait_for(replaced)
    assert pod["metadata"]["labels"][statefulsets.POD_NAME_LABEL] == "web-0"
    await wait_ready(stack, ["web-0", "web-1"])


# --- revisions ----------------------------------------------------------------------------


async def test_revisions_record_each_template_and_are_pruned_to_the_history_limit(
    stack: Stack, controller: statefulsets.StatefulSetController
) -> None:
    created = await stack.client.create(STS, make_set(replicas=0, history_limit=1))

    async def settled(value: str | None) -> Obj:
        async def check() -> Obj | None:
            got = await wait_status(stack)
            template = got["spec"]["template"]
            want = revisions.revision_name(
                "web", revisions.hash_revision(revisions.template_patch(got), 0)
            )
            status = got["status"]
            annotations = template["metadata"].get("annotations") or {}
            if annotations.get("version") != value:
                return None
            ok = status.get("updateRevision") == want == status.get("currentRevision")
            return got if ok else None

        found: Obj = await stack.wait_for(check)
        return found

    first = (await settled(None))["status"]["updateRevision"]
    [revision] = await set_revisions(stack)
    assert revisions.name_of(revision) == first
    assert revision["revision"] == 1
    assert revision["metadata"]["labels"][revisions.HASH_LABEL] == first.removeprefix("web-")
    assert revision["metadata"]["labels"]["app"] == "web"
    assert revision["metadata"]["ownerReferences"][0]["uid"] == created["metadata"]["uid"]
    assert revision["data"] == revisions.template_patch(created)

    await change_template(stack, "2")
    second = (await settled("2"))["status"]["updateRevision"]
    await change_template(stack, "3")
    third = (await settled("3"))["status"]["updateRevision"]

    async def pruned() -> list[Obj] | None:
        found = await set_revisions(stack)
        return found if [revisions.name_of(r) for r in found] == [second, third] else None

    kept = await stack.wait_for(pruned)
    assert [r["revision"] for r in kept] == [2, 3]

    # Going back to a recorded template reuses its revision, renumbered.
    await change_template(stack, "2")
    assert (await settled("2"))["status"]["updateRevision"] == second

    async def renumbered() -> list[Obj] | None:
        found = await set_revisions(stack)
        numbers = {revisions.name_of(r): r["revision"] for r in found}
        return found if numbers == {third: 3, second: 4} else None

    await stack.wait_for(renumbered)


async def test_max_unavailable_replaces_that_many_pods_at_once(
    stack: Stack, controller: statefulsets.StatefulSetController
) -> None:
    strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 2}}
    await stack.client.create(
        STS, make_set(replicas=3, policy="Parallel", update_strategy=strategy)
    )
    old_pods = await wait_ready(stack, ["web-0", "web-1", "web-2"])
    await wait_status(stack, readyReplicas=3)

    async with PodHistory(stack.client) as history:
        await change_template(stack, "2", ready_after=1)
        await wait_status(stack, timeout=20.0, updatedReplicas=3, readyReplicas=3)

    assert history.deletion_starts() == ["web-2", "web-1", "web-0"]
    web1_going = history.index(
        lambda kind, obj: (
            uid_of(obj) == uid_of(old_pods["web-1"])
            and (kind == "DELETED" or bool(obj["metadata"].get("deletionTimestamp")))
        )
    )
    new_web2_ready = history.index(
        lambda kind, obj: (
            name_of(obj) == "web-2" and uid_of(obj) != uid_of(old_pods["web-2"]) and ready(obj)
        )
    )
    assert web1_going < new_web2_ready, "web-1 waited for the new web-2"


def test_a_template_hashes_to_the_revision_name_upstream_gives_it() -> None:
    # From kubernetes/kubernetes pkg/controller/statefulset/testdata
    # (compatibility_revision_1.34.0.json): StatefulSet "test", revision
    # "test-776999688b", collision count 0.
    template = {
        "metadata": {"annotations": {"test": "value"}, "labels": {"app": "foo"}},
        "spec": {
            "containers": [
                {
                    "image": "test",
                    "imagePullPolicy": "Always",
                    "name": "test",
                    "resources": {},
                    "terminationMessagePath": "/dev/termination-log",
                    "terminationMessagePolicy": "File",
                }
            ],
            "dnsPolicy": "ClusterFirst",
            "restartPolicy": "Always",
            "schedulerName": "default-scheduler",
            "securityContext": {},
            "terminationGracePeriodSeconds": 30,
        },
    }
    data = revisions.template_patch({"spec": {"template": template}})
    assert data["spec"]["template"]["$patch"] == "replace"
    name = revisions.revision_name("test", revisions.hash_revision(data, 0))
    assert name == "test-776999688b"
    assert revisions.hash_revision(data, 1) != revisions.hash_revision(data, 0)
