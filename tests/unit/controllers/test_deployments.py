"""The Deployment controller rolls templates out through ReplicaSets on the
in-process cluster stack; the surge, proportion, hash and condition
arithmetic is checked as pure functions."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
from collections.abc import AsyncIterator
from typing import Any

import pytest

from nodeless import clocks
from nodeless.client import clients, informers
from nodeless.controllers import deployments, podcontrol, replicasets
from tests.unit.controllers.conftest import Stack

DEPLOYMENTS = deployments.DEPLOYMENTS
RS = replicasets.REPLICASETS
PODS = podcontrol.PODS
EVENTS = clients.ResourceRef("", "v1", "events", True, "Event")
NS = "default"


def deployment(
    name: str = "web", replicas: int = 3, image: str = "busybox:1", **spec: Any
) -> dict[str, Any]:
    labels = {"app": name}
    container: dict[str, Any] = {"name": "c", "image": image, "command": ["sleep", "infinity"]}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [container]}},
            **spec,
        },
    }


@contextlib.asynccontextmanager
async def running_controllers(
    stack: Stack, clock: clocks.Clock | None = None
) -> AsyncIterator[deployments.DeploymentController]:
    factory = informers.InformerFactory(stack.client)
    rsc = replicasets.ReplicaSetController(stack.client, factory, recorder=stack.recorder)
    dc = deployments.DeploymentController(
        stack.client, factory, clock=clock, recorder=stack.recorder
    )
    await rsc.start()
    await dc.start()
    factory.start()
    await factory.wait_synced()
    try:
        yield dc
    finally:
        await dc.stop()
        await rsc.stop()
        await factory.stop()


@pytest.fixture
async def controller(stack: Stack) -> AsyncIterator[deployments.DeploymentController]:
    async with running_controllers(stack) as dc:
        yield dc


async def patch(
    stack: Stack,
    ref: clients.ResourceRef,
    name: str,
    body: Any,
    patch_type: clients.PatchType = "merge",
) -> None:
    """A patch as kubectl sends it (``rollout undo``, ``pause``, ``scale``...)."""
    await stack.client.patch(ref, NS, name, body, patch_type=patch_type)


async def set_image(stack: Stack, name: str, image: str) -> None:
    await patch(
        stack,
        DEPLOYMENTS,
        name,
        [{"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": image}],
        "json",
    )


async def rolled_out(stack: Stack, name: str) -> dict[str, Any] | None:
    """What ``kubectl rollout status`` waits for."""
    d = await stack.client.get(DEPLOYMENTS, NS, name)
    status = d.get("status") or {}
    progressing: dict[str, Any] = next(
        (c for c in status.get("conditions") or [] if c["type"] == "Progressing"), {}
    )
    replicas = d["spec"]["replicas"]
    updated = status.get("updatedReplicas") or 0
    done = (
        d["metadata"]["generation"] <= (status.get("observedGeneration") or 0)
        and progressing.get("reason") != "ProgressDeadlineExceeded"
        and updated >= replicas
        and (status.get("replicas") or 0) <= updated
        and (status.get("availableReplicas") or 0) >= updated
    )
    return d if done else None


async def wait_rolled_out(stack: Stack, name: str = "web") -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        return await rolled_out(stack, name)

    result: dict[str, Any] = await stack.wait_for(check)
    return result


async def sets_of(stack: Stack, d: dict[str, Any]) -> list[dict[str, Any]]:
    uid = d["metadata"]["uid"]
    found = [
        rs
        for rs in (await stack.client.list(RS, NS)).items
        if any(r.get("uid") == uid for r in rs["metadata"].get("ownerReferences") or [])
    ]
    return sorted(found, key=deployments.revision_of)


def revision(obj: dict[str, Any]) -> str | None:
    annotations: dict[str, str] = obj["metadata"].get("annotations") or {}
    return annotations.get(deployments.REVISION)


def alive(pod: dict[str, Any]) -> bool:
    return not pod["metadata"].get("deletionTimestamp") and (pod.get("status") or {}).get(
        "phase"
    ) not in ("Succeeded", "Failed")


async def scaling_messages(stack: Stack, name: str) -> list[str]:
    await stack.recorder.flush()
    items = (await stack.client.list(EVENTS, NS)).items
    items.sort(key=lambda e: int(e["metadata"]["resourceVersion"]))
    return [
        e["message"]
        for e in items
        if e["involvedObject"]["name"] == name and e["reason"] == "ScalingReplicaSet"
    ]


# --- on the stack --------------------------------------------------------------------


async def test_deployment_creates_a_hashed_replica_set_and_reports_rollout_status(
    stack: Stack, controller: deployments.DeploymentController
) -> None:
    created = await stack.client.create(DEPLOYMENTS, deployment("web", 3))
    d = await wait_rolled_out(stack)

    [rs] = await sets_of(stack, created)
    hash_ = rs["metadata"]["labels"][deployments.HASH_LABEL]
    assert rs["metadata"]["name"] == f"web-{hash_}"
    assert hash_ == deployments.pod_template_hash(created["spec"]["template"])
    assert rs["spec"]["selector"]["matchLabels"] == {"app": "web", "pod-template-hash": hash_}
    assert rs["spec"]["template"]["metadata"]["labels"] == {
        "app": "web",
        "pod-template-hash": hash_,
    }
    assert rs["spec"]["replicas"] == 3
    annotations = rs["metadata"]["annotations"]
    assert annotations[deployments.REVISION] == "1"
    assert annotations[deployments.DESIRED_REPLICAS] == "3"
    assert annotations[deployments.MAX_REPLICAS] == "4"  # 25% of 3 rounds up to 1
    [ref] = rs["metadata"]["ownerReferences"]
    assert ref["kind"] == "Deployment" and ref["uid"] == created["metadata"]["uid"]
    assert ref["controller"] is True and ref["blockOwnerDeletion"] is True

    pods = [p for p in await stack.pods(NS, "app=web") if alive(p)]
    assert len(pods) == 3
    assert {p["metadata"]["labels"]["pod-template-hash"] for p in pods} == {hash_}

    assert revision(d) == "1"
    status = d["status"]
    assert {k: v for k, v in status.items() if k != "conditions"} == {
        "observedGeneration": 1,
        "replicas": 3,
        "updatedReplicas": 3,
        "readyReplicas": 3,
        "availableReplicas": 3,
    }
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Available"]["status"] == "True"
    assert conditions["Available"]["reason"] == "MinimumReplicasAvailable"
    assert conditions["Progressing"]["status"] == "True"
    assert conditions["Progressing"]["reason"] == "NewReplicaSetAvailable"
    assert (
        conditions["Progressing"]["message"]
        == f'ReplicaSet "web-{hash_}" has successfully progressed.'
    )
    assert await scaling_messages(stack, "web") == [
        f"Scaled up replica set web-{hash_} to 3 from 0"
    ]


async def test_rolling_update_replaces_the_old_set_without_exceeding_the_surge(
    stack: Stack, controller: deployments.DeploymentController
) -> None:
    strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 1}}
    created = await stack.client.create(DEPLOYMENTS, deployment("web", 3, strategy=strategy))
    await wait_rolled_out(stack)
    most_alive = 0

    async def sample() -> None:
        nonlocal most_alive
        while True:
            pods = await stack.pods(NS, "app=web")
            most_alive = max(most_alive, sum(1 for p in pods if alive(p)))
            await asyncio.sleep(0.005)

    sampler = asyncio.create_task(sample())
    try:
        await set_image(stack, "web", "busybox:2")

        async def done() -> dict[str, Any] | None:
            d = await rolled_out(stack, "web")
            return d if d is not None and d["metadata"]["generation"] == 2 else None

        await stack.wait_for(done)
    finally:
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler

    assert 3 <= most_alive <= 4  # replicas + maxSurge

    async def settled() -> list[dict[str, Any]] | None:
        sets = await sets_of(stack, created)
        statuses = [(rs["spec"]["replicas"], rs["status"].get("replicas", 0)) for rs in sets]
        return sets if statuses == [(0, 0), (3, 3)] else None

    old, new = await stack.wait_for(settled)
    assert (revision(old), revision(new)) == ("1", "2")
    images = {
        p["spec"]["containers"][0]["image"] for p in await stack.pods(NS, "app=web") if alive(p)
    }
    assert images == {"busybox:2"}


async def test_recreate_removes_every_old_pod_before_creating_new_ones(
    stack: Stack, controller: deployments.DeploymentController
) -> None:
    created = await stack.client.create(
        DEPLOYMENTS, deployment("web", 2, strategy={"type": "Recreate"})
    )
    await wait_rolled_out(stack)
    [old] = await sets_of(stack, created)
    old_hash = old["metadata"]["labels"][deployments.HASH_LABEL]
    overlaps = 0

    async def sample() -> None:
        nonlocal overlaps
        while True:
            pods = await stack.pods(NS, "app=web")
            old_left = any(
                p["metadata"]["labels"]["pod-template-hash"] == old_hash
                and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
                for p in pods
            )
            new_exist = any(p["metadata"]["labels"]["pod-template-hash"] != old_hash for p in pods)
            overlaps += old_left and new_exist
            await asyncio.sleep(0.005)

    sampler = asyncio.create_task(sample())
    try:
        await set_image(stack, "web", "busybox:2")

        async def done() -> dict[str, Any] | None:
            d = await rolled_out(stack, "web")
            return d if d is not None and d["metadata"]["generation"] == 2 else None

        await stack.wait_for(done)
    finally:
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler

    assert overlaps == 0
    new = (await sets_of(stack, created))[-1]
    assert await scaling_messages(stack, "web") == [
        f"Scaled up replica set {old['metadata']['name']} to 2 from 0",
        f"Scaled down replica set {old['metadata']['name']} to 0 from 2",
        f"Scaled up replica set {new['metadata']['name']} to 2 from 0",
    ]


async def test_revisions_increment_and_rollback_reuses_the_first_replica_set(
    stack: Stack, controller: deployments.DeploymentController
) -> None:
    created = await stack.client.create(DEPLOYMENTS, deployment("web", 1))
    await wait_rolled_out(stack)
    await set_image(stack, "web", "busybox:2")

    async def second_revision() -> dict[str, Any] | None:
        d = await rolled_out(stack, "web")
        return d if d is not None and revision(d) == "2" else None

    await stack.wait_for(second_revision)
    first, second = await sets_of(stack, created)
    assert (revision(first), revision(second)) == ("1", "2")

    # What `kubectl rollout undo --to-revision=1` sends: the revision's
    # template without its hash label.
    template = first["spec"]["template"]
    del template["metadata"]["labels"][deployments.HASH_LABEL]
    await patch(
        stack,
        DEPLOYMENTS,
        "web",
        [{"op": "replace", "path": "/spec/template", "value": template}],
        "json",
    )

    async def third_revision() -> dict[str, Any] | None:
        d = await rolled_out(stack, "web")
        return d if d is not None and revision(d) == "3" else None

    await stack.wait_for(third_revision)

    async def reused() -> list[dict[str, Any]] | None:
        sets = await sets_of(stack, created)
        return sets if [revision(rs) for rs in sets] == ["2", "3"] else None

    second_now, reused_set = await stack.wait_for(reused)
    assert reused_set["metadata"]["uid"] == first["metadata"]["uid"]
    assert reused_set["metadata"]["annotations"][deployments.REVISION_HISTORY] == "1"
    assert reused_set["spec"]["replicas"] == 1
    assert second_now["metadata"]["uid"] == second["metadata"]["uid"]


async def test_paused_deployment_scales_but_does_not_roll_until_resumed(
    stack: Stack, controller: deployments.DeploymentController
) -> None:
    created = await stack.client.create(DEPLOYMENTS, deployment("web", 1))
    await wait_rolled_out(stack)
    await patch(stack, DEPLOYMENTS, "web", {"spec": {"paused": True}})
    await set_image(stack, "web", "busybox:2")
    await patch(stack, DEPLOYMENTS, "web", {"spec": {"replicas": 2}})

    async def paused_seen() -> dict[str, Any] | None:
        d = await stack.client.get(DEPLOYMENTS, NS, "web")
        status = d.get("status") or {}
        progressing = next(c for c in status["conditions"] if c["type"] == "Progressing")
        seen = status.get("observedGeneration") == d["metadata"]["generation"]
        return d if seen and progressing["reason"] == "DeploymentPaused" else None

    paused = await stack.wait_for(paused_seen)
    assert (
        next(c for c in paused["status"]["conditions"] if c["type"] == "Progressing")["status"]
        == "Unknown"
    )

    async def scaled() -> list[dict[str, Any]] | None:
        sets = await sets_of(stack, created)
        return sets if [rs["spec"]["replicas"] for rs in sets] == [2] else None

    [only] = await stack.wait_for(scaled)
    assert only["spec"]["template"]["spec"]["containers"][0]["image"] == "busybox:1"

    await patch(stack, DEPLOYMENTS, "web", {"spec": {"paused": False}})
    await wait_rolled_out(stack)
    _old, new = await sets_of(stack, created)
    assert new["spec"]["template"]["spec"]["containers"][0]["image"] == "busybox:2"
    assert new["spec"]["replicas"] == 2


async def test_scaling_mid_rollout_spreads_replicas_over_old_and_new_sets(
    stack: Stack, controller: deployments.DeploymentController
) -> None:
    strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 1}}
    created = await stack.client.create(DEPLOYMENTS, deployment("web", 4, strategy=strategy))
    await wait_rolled_out(stack)
    # New pods that never become ready: the rollout stops with 3 old and 2
    # new replicas (4 + 1 surge in all, 3 available).
    never_ready = {"exec": {"command": ["true"]}, "initialDelaySeconds": 3600}
    await patch(
        stack,
        DEPLOYMENTS,
        "web",
        [
            {
                "op": "replace",
                "path": "/spec/template/spec/containers/0/image",
                "value": "busybox:2",
            },
            {
                "op": "add",
                "path": "/spec/template/spec/containers/0/readinessProbe",
                "value": never_ready,
            },
        ],
        "json",
    )

    async def sizes(expected: list[int]) -> bool:
        return [rs["spec"]["replicas"] for rs in await sets_of(stack, created)] == expected

    await stack.wait_for(lambda: sizes([3, 2]))
    await patch(stack, DEPLOYMENTS, "web", {"spec": {"replicas": 8}})
    # 8 + 1 surge = 9 = 5 + 4: each set grows by round(size * 9 / 5) - size.
    await stack.wait_for(lambda: sizes([5, 4]))
    old, new = await sets_of(stack, created)
    for rs in (old, new):
        assert rs["metadata"]["annotations"][deployments.DESIRED_REPLICAS] == "8"
        assert rs["metadata"]["annotations"][deployments.MAX_REPLICAS] == "9"
    messages = await scaling_messages(stack, "web")
    assert messages[-2:] == [
        f"Scaled up replica set {old['metadata']['name']} to 5 from 3",
        f"Scaled up replica set {new['metadata']['name']} to 4 from 2",
    ]


async def test_revision_history_limit_prunes_the_oldest_empty_sets(
    stack: Stack, controller: deployments.DeploymentController
) -> None:
    created = await stack.client.create(DEPLOYMENTS, deployment("web", 1, revisionHistoryLimit=1))
    await wait_rolled_out(stack)
    for generation, image in ((2, "busybox:2"), (3, "busybox:3")):
        await set_image(stack, "web", image)

        async def done(generation: int = generation) -> dict[str, Any] | None:
            d = await rolled_out(stack, "web")
            return d if d is not None and d["metadata"]["generation"] == generation else None

        await stack.wait_for(done)

    async def pruned() -> list[dict[str, Any]] | None:
        sets = await sets_of(stack, created)
        return sets if len(sets) == 2 else None

    kept = await stack.wait_for(pruned)
    assert [revision(rs) for rs in kept] == ["2", "3"]


async def test_progress_deadline_exceeded_when_pods_never_become_ready(stack: Stack) -> None:
    clock = clocks.FakeClock(datetime.datetime.now(datetime.UTC))
    d = deployment("slow", 1, progressDeadlineSeconds=60)
    d["spec"]["template"]["spec"]["containers"][0]["readinessProbe"] = {
        "exec": {"command": ["true"]},
        "initialDelaySeconds": 3600,
    }
    async with running_controllers(stack, clock):
        await stack.client.create(DEPLOYMENTS, d)

        async def progressing() -> bool:
            # The controller's retries wait on its clock: let them fall due,
            # far from the deadline (at most 10 s in 500 polls).
            await clock.advance(0.02)
            got = await stack.client.get(DEPLOYMENTS, NS, "slow")
            status = got.get("status") or {}
            return status.get("updatedReplicas") == 1 and any(
                c["type"] == "Progressing" and c["status"] == "True"
                for c in status.get("conditions") or []
            )

        await stack.wait_for(progressing)

        async def timed_out() -> dict[str, Any] | None:
            await clock.advance(10)
            got = await stack.client.get(DEPLOYMENTS, NS, "slow")
            conditions = {c["type"]: c for c in (got.get("status") or {}).get("conditions") or []}
            condition = conditions.get("Progressing") or {}
            return conditions if condition.get("reason") == "ProgressDeadlineExceeded" else None

        conditions = await stack.wait_for(timed_out)
    slow_set = (await sets_of(stack, await stack.client.get(DEPLOYMENTS, NS, "slow")))[0]
    assert conditions["Progressing"]["status"] == "False"
    assert conditions["Progressing"]["message"] == (
        f'ReplicaSet "{slow_set["metadata"]["name"]}" has timed out progressing.'
    )
    assert conditions["Available"]["status"] == "False"
    assert conditions["Available"]["reason"] == "MinimumReplicasUnavailable"
    assert await rolled_out(stack, "slow") is None


# --- pure functions ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("surge", "unavailable", "desired", "expected"),
    [
        ("25%", "25%", 10, (3, 2)),
        ("25%", "25%", 1, (1, 0)),
        ("25%", "25%", 4, (1, 1)),
        (0, "10%", 5, (0, 1)),  # both zero after rounding down: one may be unavailable
        (2, 1, 3, (2, 1)),
        ("100%", "0%", 3, (3, 0)),
        (None, None, 3, (0, 1)),
    ],
)
def test_surge_rounds_up_and_unavailability_rounds_down(
    surge: int | str | None, unavailable: int | str | None, desired: int, expected: tuple[int, int]
) -> None:
    assert deployments.resolve_fenceposts(surge, unavailable, desired) == expected


def test_a_percentage_without_a_percent_sign_is_refused() -> None:
    with pytest.raises(ValueError, match="not a percentage"):
        deployments.scaled_value("25", 10, True)


@pytest.mark.parametrize(
    ("spec", "surge", "unavailable"),
    [
        ({"strategy": {"type": "Recreate"}}, 0, 0),
        ({"replicas": 0}, 0, 0),
        (
            {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "200%"}}},
            0,
            2,
        ),
    ],
)
def test_recreate_and_empty_deployments_have_no_surge_and_unavailability_caps_at_replicas(
    spec: dict[str, Any], surge: int, unavailable: int
) -> None:
    d = deployment("web", 2)
    d["spec"].update(spec)
    assert deployments.max_surge(d) == surge
    assert deployments.max_unavailable(d) == unavailable


def _rs(
    name: str,
    replicas: int,
    *,
    actual: int | None = None,
    created: int = 0,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "uid": name,
            "creationTimestamp": podcontrol.format_time(
                datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
                + datetime.timedelta(seconds=created)
            ),
            "annotations": dict(annotations or {}),
        },
        "spec": {"replicas": replicas},
        "status": {"replicas": replicas if actual is None else actual},
    }


@pytest.mark.parametrize(
    ("old", "old_actual", "new", "strategy", "expected"),
    [
        (3, 3, 0, "RollingUpdate", 1),  # 3 + 1 surge allows one new pod
        (3, 3, 1, "RollingUpdate", 1),  # at the surge limit already
        (2, 2, 1, "RollingUpdate", 2),
        (2, 3, 1, "RollingUpdate", 1),  # the old set still holds the pod it was told to drop
        (0, 0, 2, "RollingUpdate", 3),  # never beyond the replicas
        (3, 3, 0, "Recreate", 3),
    ],
)
def test_new_replica_set_grows_within_the_surge(
    old: int, old_actual: int, new: int, strategy: str, expected: int
) -> None:
    d = deployment("web", 3, strategy={"type": strategy})
    if strategy == "RollingUpdate":
        d["spec"]["strategy"]["rollingUpdate"] = {"maxSurge": 1, "maxUnavailable": 0}
    old_rs, new_rs = _rs("old", old, actual=old_actual), _rs("new", new)
    assert deployments.new_rs_new_replicas(d, [old_rs, new_rs], new_rs) == expected


@pytest.mark.parametrize(
    ("replicas", "expected"),
    [
        (15, {"old": 14, "new": 4}),  # 5 more, spread 10:3 over the two sets
        (5, {"old": 6, "new": 2}),  # 5 fewer
        (0, {"old": 0, "new": 0}),
    ],
)
def test_replica_changes_mid_rollout_are_spread_proportionally(
    replicas: int, expected: dict[str, int]
) -> None:
    d = deployment(
        "web",
        replicas,
        strategy={"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 3, "maxUnavailable": 0}},
    )
    sets = [
        _rs("old", 10, created=0, annotations={deployments.MAX_REPLICAS: "13"}),
        _rs("new", 3, created=10, annotations={deployments.MAX_REPLICAS: "13"}),
    ]
    sizes = {rs["metadata"]["name"]: size for rs, size in deployments.proportional_sizes(d, sets)}
    assert sizes == expected


def test_template_hash_is_stable_and_ignores_empty_fields() -> None:
    template = deployment()["spec"]["template"]
    hash_ = deployments.pod_template_hash(template)
    # Frozen: a hash that changed between versions would restart every
    # Deployment when the controller is upgraded.
    assert hash_ == "66bb8b98c7"
    padded = {**template, "metadata": {**template["metadata"], "annotations": {}}}
    assert deployments.pod_template_hash(padded) == hash_
    assert deployments.pod_template_hash(template, 1) != hash_
    assert all(c in "bcdfghjklmnpqrstvwxz2456789" for c in hash_)


def test_templates_equal_apart_from_the_hash_label() -> None:
    template = deployment()["spec"]["template"]
    labelled = {**template, "metadata": {"labels": {"app": "web", "pod-template-hash": "abc"}}}
    assert deployments.equal_ignore_hash(template, labelled)
    changed = deployment(image="busybox:2")["spec"]["template"]
    assert not deployments.equal_ignore_hash(template, changed)


def test_reused_set_gets_the_new_revision_and_remembers_the_old_one() -> None:
    d = deployment()
    d["metadata"]["annotations"] = {
        "kubernetes.io/change-cause": "undo",
        deployments.REVISION: "5",
        deployments.LAST_APPLIED: "{}",
    }
    rs = _rs("web-1", 0, annotations={deployments.REVISION: "2", deployments.REVISION_HISTORY: "1"})
    assert deployments.set_new_replica_set_annotations(d, rs, "4", exists=True)
    assert rs["metadata"]["annotations"] == {
        deployments.REVISION: "4",
        deployments.REVISION_HISTORY: "1,2",
        "kubernetes.io/change-cause": "undo",
    }
    assert not deployments.set_new_replica_set_annotations(d, rs, "4", exists=True)


def test_status_counts_and_availability_condition() -> None:
    d = deployment("web", 4)
    d["metadata"]["generation"] = 3
    old = _rs("old", 1)
    old["status"].update(readyReplicas=1, availableReplicas=1)
    new = _rs("new", 3)
    new["status"].update(readyReplicas=2, availableReplicas=2)
    now = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    status = deployments.calculate_status([old, new], new, d, now)
    conditions = status.pop("conditions")
    assert status == {
        "observedGeneration": 3,
        "replicas": 4,
        "updatedReplicas": 3,
        "readyReplicas": 3,
        "availableReplicas": 3,
        "unavailableReplicas": 1,
    }
    # 25% of 4 may be unavailable: 3 available is enough.
    assert [(c["type"], c["status"], c["reason"]) for c in conditions] == [
        ("Available", "True", "MinimumReplicasAvailable")
    ]


@pytest.mark.parametrize(
    ("reason", "updated_seconds_ago", "timed_out"),
    [
        ("ReplicaSetUpdated", 20, False),
        ("ReplicaSetUpdated", 31, True),
        ("NewReplicaSetAvailable", 100, False),
        ("ProgressDeadlineExceeded", 0, True),
    ],
)
def test_progress_deadline_counts_from_the_last_progress(
    reason: str, updated_seconds_ago: int, timed_out: bool
) -> None:
    now = datetime.datetime(2026, 1, 1, 12, tzinfo=datetime.UTC)
    d = deployment(progressDeadlineSeconds=30)
    condition = deployments.new_condition(
        "Progressing", "True", reason, "", now - datetime.timedelta(seconds=updated_seconds_ago)
    )
    assert deployments.deployment_timed_out(d, {"conditions": [condition]}, now) is timed_out
