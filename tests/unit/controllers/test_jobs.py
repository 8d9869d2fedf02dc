"""The Job controller, end to end on the in-process stack (pods really run on
the simulated provider), with a FakeClock wherever a timer matters: back-off,
activeDeadlineSeconds, ttlSecondsAfterFinished."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
from collections.abc import AsyncIterator
from typing import Any

from nodeless import clocks
from nodeless.api import errors
from nodeless.client import clients, informers
from nodeless.controllers import jobs
from tests.unit.controllers.conftest import Stack

PODS = jobs.PODS
JOBS = jobs.JOBS
NS = "default"
Obj = dict[str, Any]


def job_manifest(name: str, command: str, **spec: Any) -> Obj:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {"name": "main", "image": "busybox", "command": ["sh", "-c", command]}
                    ],
                }
            },
            **spec,
        },
    }


@contextlib.asynccontextmanager
async def job_controller(
    stack: Stack, clock: clocks.Clock | None = None
) -> AsyncIterator[jobs.JobController]:
    factory = informers.InformerFactory(stack.client)
    controller = jobs.JobController(stack.client, factory, clock=clock, recorder=stack.recorder)
    ttl = jobs.TTLAfterFinishedController(stack.client, factory, clock=clock)
    await controller.start()
    await ttl.start()
    factory.start()
    await factory.wait_synced()
    try:
        yield controller
    finally:
        await ttl.stop()
        await controller.stop()
        await factory.stop()


async def get_job(stack: Stack, name: str) -> Obj:
    return await stack.client.get(JOBS, NS, name)


async def job_pods(stack: Stack, name: str) -> list[Obj]:
    return await stack.pods(NS, f"batch.kubernetes.io/job-name={name}")


def condition_types(job: Obj) -> list[str]:
    return [c["type"] for c in (job.get("status") or {}).get("conditions") or []]


def condition(job: Obj, kind: str) -> Obj | None:
    return jobs.find_condition(job, kind)


async def wait_condition(stack: Stack, name: str, kind: str, timeout: float = 10.0) -> Obj:
    async def check() -> Obj | None:
        job = await get_job(stack, name)
        cond = condition(job, kind)
        return job if cond is not None and cond.get("status") == "True" else None

    found: Obj = await stack.wait_for(check, timeout=timeout)
    return found


async def wait_status(stack: Stack, name: str, **wanted: Any) -> Obj:
    async def check() -> Obj | None:
        job = await get_job(stack, name)
        status = job.get("status") or {}
        return job if all(status.get(k) == v for k, v in wanted.items()) else None

    found: Obj = await stack.wait_for(check)
    return found


async def wait_pod_count(stack: Stack, name: str, count: int) -> list[Obj]:
    async def check() -> tuple[list[Obj]] | None:
        pods = await job_pods(stack, name)
        return (pods,) if len(pods) == count else None

    found: tuple[list[Obj]] = await stack.wait_for(check)
    return found[0]


async def wait_idle(controller: jobs.JobController) -> None:
    """Until the work queue has nothing ready or in hand (timers may wait)."""
    queue = controller.controller.queue
    for _ in range(500):
        if not len(queue) and not queue.processing:
            await asyncio.sleep(0.05)
            if not len(queue) and not queue.processing:
                return
        await asyncio.sleep(0.01)
    raise AssertionError("job controller never went idle")


async def events_for(stack: Stack, name: str) -> list[tuple[str, str]]:
    await stack.recorder.flush()
    found = await stack.client.list(clients.ResourceRef("", "v1", "events", True, "Event"), NS)
    return [
        (e["reason"], e["message"])
        for e in found.items
        if e["involvedObject"]["name"] == name and e["involvedObject"]["kind"] == "Job"
    ]


# --- pure rules -------------------------------------------------------------------------


def test_completed_indexes_are_written_as_compressed_ranges() -> None:
    assert jobs.format_indexes([0, 1, 2, 4]) == "0-2,4"
    assert jobs.format_indexes([3, 1, 2]) == "1-3"
    assert jobs.format_indexes([0, 1, 5, 6]) == "0,1,5,6"
    assert jobs.format_indexes([]) == ""
    assert jobs.parse_indexes("0-2,4,9", 5) == {0, 1, 2, 4}
    assert jobs.parse_indexes("1,x,3-a", None) == {1}


def test_back_off_doubles_from_ten_seconds_and_is_capped_at_six_minutes() -> None:
    assert jobs.Backoff(1, 0.0).remaining(0.0) == 10.0
    assert jobs.Backoff(2, 0.0).remaining(5.0) == 15.0
    assert jobs.Backoff(20, 0.0).remaining(0.0) == 360.0
    assert jobs.Backoff(0, 0.0).remaining(0.0) == 0.0
    assert jobs.Backoff(3, 0.0).after(1, 0, 9.0) == jobs.Backoff(0, 0.0)


def _failed_pod(code: int, **status: Any) -> Obj:
    return {
        "metadata": {"name": "p", "namespace": NS},
        "status": {
            "phase": "Failed",
            "containerStatuses": [{"name": "main", "state": {"terminated": {"exitCode": code}}}],
            **status,
        },
    }


def test_pod_failure_policy_rules_match_in_order_and_spot_reclaim_is_not_counted() -> None:
    job = {
        "spec": {
            "podFailurePolicy": {
                "rules": [
                    {"action": "Ignore", "onExitCodes": {"operator": "In", "values": [42]}},
                    {
                        "action": "FailJob",
                        "onExitCodes": {
                            "containerName": "main",
                            "operator": "NotIn",
                            "values": [1],
                        },
                    },
                ]
            }
        }
    }
    assert jobs.judge_failure(job, _failed_pod(42)) == jobs.Verdict(False, "Ignore")
    assert jobs.judge_failure(job, _failed_pod(1)) == jobs.Verdict(True)
    verdict = jobs.judge_failure(job, _failed_pod(7))
    assert verdict.action == "FailJob"
    assert verdict.message == (
        "Container main for pod default/p failed with exit code 7 matching FailJob rule at index 1"
    )
    # A reclaimed pod's 143 is not the workload's answer: no FailJob, not counted.
    assert jobs.judge_failure(job, _failed_pod(143, reason="BidFailed")) == jobs.Verdict(False)
    assert jobs.judge_failure({"spec": {}}, _failed_pod(1, reason="BidFailed")).count is False
    # ... unless a rule on the DisruptionTarget condition says to count it.
    counting = {
        "spec": {
            "podFailurePolicy": {
                "rules": [
                    {"action": "Count", "onPodConditions": [{"type": "DisruptionTarget"}]},
                ]
            }
        }
    }
    assert jobs.judge_failure(counting, _failed_pod(143, reason="BidFailed")).count is True


# --- end to end -------------------------------------------------------------------------


async def test_job_with_three_completions_and_parallelism_two_completes(stack: Stack) -> None:
    async with job_controller(stack):
        await stack.client.create(
            JOBS, job_manifest("three", "sleep 1; exit 0", completions=3, parallelism=2)
        )
        # Never more than two at once: the first two run, the third waits.
        first = await wait_pod_count(stack, "three", 2)
        assert all(p["metadata"]["generateName"] == "three-" for p in first)
        job = await wait_status(stack, "three", active=2)
        assert len(await job_pods(stack, "three")) == 2

        job = await wait_condition(stack, "three", "Complete")
        status = job["status"]
        assert status["succeeded"] == 3
        assert status.get("failed", 0) == 0
        assert status["active"] == 0
        assert condition_types(job) == ["SuccessCriteriaMet", "Complete"]
        assert condition(job, "SuccessCriteriaMet")["reason"] == "CompletionsReached"  # type: ignore[index]
        assert status["completionTime"] and status["startTime"]
        assert status.get("uncountedTerminatedPods") == {}

        pods = await job_pods(stack, "three")
        assert len(pods) == 3
        for pod in pods:
            assert pod["status"]["phase"] == "Succeeded"
            assert jobs.TRACKING_FINALIZER not in (pod["metadata"].get("finalizers") or [])
            ref = pod["metadata"]["ownerReferences"][0]
            assert (ref["kind"], ref["name"], ref["controller"]) == ("Job", "three", True)
        reasons = [r for r, _ in await events_for(stack, "three")]
        assert reasons.count("SuccessfulCreate") == 3
        assert ("Completed", "Job completed") in await events_for(stack, "three")


async def test_failing_pods_are_retried_with_back_off_until_the_backoff_limit(
    stack: Stack,
) -> None:
    clock = clocks.FakeClock()
    async with job_controller(stack, clock) as controller:
        await stack.client.create(JOBS, job_manifest("flaky", "exit 1", backoffLimit=2))
        await wait_status(stack, "flaky", failed=1)
        await wait_idle(controller)
        # The first replacement waits 10 s on the controller's clock ...
        await clock.advance(9)
        await wait_idle(controller)
        assert len(await job_pods(stack, "flaky")) == 1
        await clock.advance(1.5)
        await wait_pod_count(stack, "flaky", 2)
        await wait_status(stack, "flaky", failed=2)
        await wait_idle(controller)
        # ... the second 20 s.
        await clock.advance(19)
        await wait_idle(controller)
        assert len(await job_pods(stack, "flaky")) == 2
        await clock.advance(1.5)
        job = await wait_condition(stack, "flaky", "Failed")

    assert job["status"]["failed"] == 3
    assert condition_types(job) == ["FailureTarget", "Failed"]
    failed = condition(job, "Failed")
    assert failed is not None
    assert failed["reason"] == "BackoffLimitExceeded"
    assert failed["message"] == "Job has reached the specified backoff limit"
    assert "completionTime" not in job["status"]
    assert len(await job_pods(stack, "flaky")) == 3
    assert ("BackoffLimitExceeded", "Job has reached the specified backoff limit") in (
        await events_for(stack, "flaky")
    )


async def test_indexed_job_gives_each_pod_its_index(stack: Stack) -> None:
    async with job_controller(stack):
        await stack.client.create(
            JOBS,
            job_manifest("idx", "exit 0", completions=3, parallelism=3, completionMode="Indexed"),
        )
        job = await wait_condition(stack, "idx", "Complete")

    assert job["status"]["completedIndexes"] == "0-2"
    assert job["status"]["succeeded"] == 3
    pods = await job_pods(stack, "idx")
    by_index = {int(p["metadata"]["annotations"][jobs.COMPLETION_INDEX]): p for p in pods}
    assert sorted(by_index) == [0, 1, 2]
    for index, pod in by_index.items():
        assert pod["metadata"]["name"].startswith(f"idx-{index}-")
        assert pod["metadata"]["labels"][jobs.COMPLETION_INDEX] == str(index)
        assert pod["spec"]["hostname"] == f"idx-{index}"
        env = {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}
        assert env["JOB_COMPLETION_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"] == (
            "metadata.annotations['batch.kubernetes.io/job-completion-index']"
        )


async def test_ignored_exit_code_is_not_counted_and_the_pod_is_replaced(stack: Stack) -> None:
    clock = clocks.FakeClock()
    policy = {"rules": [{"action": "Ignore", "onExitCodes": {"operator": "In", "values": [42]}}]}
    async with job_controller(stack, clock) as controller:
        await stack.client.create(
            JOBS, job_manifest("ignore", "exit 42", backoffLimit=0, podFailurePolicy=policy)
        )

        async def released() -> bool:
            pods = await job_pods(stack, "ignore")
            return len(pods) == 1 and not pods[0]["metadata"].get("finalizers")

        await stack.wait_for(released)
        await wait_idle(controller)
        await clock.advance(10.5)
        await wait_pod_count(stack, "ignore", 2)
        await wait_idle(controller)
        job = await get_job(stack, "ignore")
    assert job["status"].get("failed", 0) == 0
    assert not jobs.is_finished(job)
    assert "FailureTarget" not in condition_types(job)


async def test_fail_job_rule_fails_the_job_at_once(stack: Stack) -> None:
    policy = {"rules": [{"action": "FailJob", "onExitCodes": {"operator": "In", "values": [3]}}]}
    async with job_controller(stack):
        await stack.client.create(
            JOBS, job_manifest("doomed", "exit 3", backoffLimit=6, podFailurePolicy=policy)
        )
        job = await wait_condition(stack, "doomed", "Failed")
    failed = condition(job, "Failed")
    assert failed is not None and failed["reason"] == "PodFailurePolicy"
    pod = (await job_pods(stack, "doomed"))[0]
    assert failed["message"] == (
        f"Container main for pod default/{pod['metadata']['name']} failed with exit code 3 "
        "matching FailJob rule at index 0"
    )
    assert job["status"]["failed"] == 1
    assert len(await job_pods(stack, "doomed")) == 1


async def test_active_deadline_fails_the_job_and_terminates_its_pods(stack: Stack) -> None:
    clock = clocks.FakeClock()
    async with job_controller(stack, clock) as controller:
        await stack.client.create(
            JOBS, job_manifest("slow", "sleep 3600", activeDeadlineSeconds=30)
        )
        await wait_status(stack, "slow", active=1, ready=1)
        await wait_idle(controller)
        await clock.advance(29)
        await wait_idle(controller)
        assert not jobs.is_finished(await get_job(stack, "slow"))
        await clock.advance(1.5)
        job = await wait_condition(stack, "slow", "Failed")

    failed = condition(job, "Failed")
    assert failed is not None and failed["reason"] == "DeadlineExceeded"
    assert failed["message"] == "Job was active longer than specified deadline"
    assert condition_types(job) == ["FailureTarget", "Failed"]
    assert job["status"]["failed"] == 1
    assert job["status"]["active"] == 0
    assert job["status"]["terminating"] == 0
    # The Failed condition came only once the pod had stopped.
    for pod in await job_pods(stack, "slow"):
        assert pod["status"]["phase"] == "Failed"
    assert ("DeadlineExceeded", "Job was active longer than specified deadline") in (
        await events_for(stack, "slow")
    )


async def test_suspend_deletes_active_pods_without_counting_them_and_resume_restarts(
    stack: Stack,
) -> None:
    async with job_controller(stack):
        await stack.client.create(JOBS, job_manifest("nap", "sleep 3600", suspend=True))
        job = await wait_condition(stack, "nap", "Suspended")
        assert condition(job, "Suspended")["reason"] == "JobSuspended"  # type: ignore[index]
        assert "startTime" not in job["status"]
        assert await job_pods(stack, "nap") == []

        await stack.client.patch(JOBS, NS, "nap", {"spec": {"suspend": False}})
        job = await wait_status(stack, "nap", active=1)
        resumed = condition(job, "Suspended")
        assert resumed is not None
        assert (resumed["status"], resumed["reason"]) == ("False", "JobResumed")
        assert job["status"]["startTime"]

        await stack.client.patch(JOBS, NS, "nap", {"spec": {"suspend": True}})
        await wait_condition(stack, "nap", "Suspended")
        await wait_pod_count(stack, "nap", 0)
        job = await wait_status(stack, "nap", active=0)
        assert job["status"].get("failed", 0) == 0
        assert "startTime" not in job["status"]

        await stack.client.patch(JOBS, NS, "nap", {"spec": {"suspend": False}})
        await wait_pod_count(stack, "nap", 1)
    reasons = [r for r, _ in await events_for(stack, "nap")]
    assert {"Suspended", "Resumed", "SuccessfulDelete"} <= set(reasons)


async def test_ttl_after_finished_deletes_the_job(stack: Stack) -> None:
    clock = clocks.FakeClock()
    async with job_controller(stack, clock) as controller:
        await stack.client.create(
            JOBS, job_manifest("brief", "exit 0", ttlSecondsAfterFinished=100)
        )
        await wait_condition(stack, "brief", "Complete")
        await wait_idle(controller)
        await clock.advance(99)
        await asyncio.sleep(0.1)
        await get_job(stack, "brief")
        await clock.advance(2)

        async def gone() -> bool:
            try:
                await get_job(stack, "brief")
            except errors.StatusError as err:
                return err.code == 404
            return False

        await stack.wait_for(gone)


async def test_spot_reclaimed_pod_does_not_count_against_the_backoff_limit(
    stack: Stack,
) -> None:
    clock = clocks.FakeClock()
    async with job_controller(stack, clock) as controller:
        await stack.client.create(JOBS, job_manifest("spot", "sleep 3600", backoffLimit=0))
        await wait_status(stack, "spot", active=1, ready=1)
        [instance] = await stack.provider.list()
        await stack.provider.reclaim(instance.instance_id)

        async def reclaimed() -> bool:
            pods = await job_pods(stack, "spot")
            return any(p["status"].get("reason") == "BidFailed" for p in pods)

        await stack.wait_for(reclaimed)
        await wait_status(stack, "spot", active=0)
        await wait_idle(controller)
        job = await get_job(stack, "spot")
        assert not jobs.is_finished(job)
        assert job["status"].get("failed", 0) == 0
        await clock.advance(10.5)
        await wait_status(stack, "spot", active=1)
        job = await get_job(stack, "spot")
    assert not jobs.is_finished(job)
    assert len(await job_pods(stack, "spot")) == 2


async def test_pods_finished_while_the_controller_was_down_are_counted_once(
    stack: Stack,
) -> None:
    async with job_controller(stack):
        await stack.client.create(
            JOBS, job_manifest("restart", "sleep 1; exit 0", completions=2, parallelism=2)
        )
        await wait_pod_count(stack, "restart", 2)

    async def both_succeeded() -> list[Obj] | None:
        pods = await job_pods(stack, "restart")
        return pods if all(p["status"]["phase"] == "Succeeded" for p in pods) else None

    pods = await stack.wait_for(both_succeeded)
    # Deleted before anyone counted them: the finalizer keeps them around.
    for pod in pods:
        await stack.client.delete(PODS, NS, pod["metadata"]["name"])
    held = await job_pods(stack, "restart")
    assert len(held) == 2 and all(p["metadata"].get("deletionTimestamp") for p in held)

    async with job_controller(stack):
        job = await wait_condition(stack, "restart", "Complete")
        await wait_pod_count(stack, "restart", 0)
    assert job["status"]["succeeded"] == 2
    assert job["status"].get("failed", 0) == 0


async def test_backoff_limit_per_index_fails_only_the_failing_index(stack: Stack) -> None:
    clock = clocks.FakeClock()
    policy = {"rules": [{"action": "FailIndex", "onExitCodes": {"operator": "In", "values": [5]}}]}
    manifest = job_manifest(
        "perindex",
        "exit 5",
        completions=2,
        parallelism=2,
        completionMode="Indexed",
        backoffLimitPerIndex=1,
        podFailurePolicy=policy,
    )
    async with job_controller(stack, clock):
        await stack.client.create(JOBS, manifest)
        job = await wait_condition(stack, "perindex", "Failed")
    failed = condition(job, "Failed")
    assert failed is not None and failed["reason"] == "FailedIndexes"
    assert job["status"]["failedIndexes"] == "0,1"
    assert job["status"]["failed"] == 2
    pods = await job_pods(stack, "perindex")
    assert len(pods) == 2
    assert all(p["metadata"]["annotations"][jobs.INDEX_FAILURE_COUNT] == "0" for p in pods)


async def test_success_policy_completes_an_indexed_job_early(stack: Stack) -> None:
    manifest = job_manifest(
        "leader",
        "exit 0",
        completions=3,
        parallelism=1,
        completionMode="Indexed",
        successPolicy={"rules": [{"succeededIndexes": "0"}]},
    )
    async with job_controller(stack):
        await stack.client.create(JOBS, manifest)
        job = await wait_condition(stack, "leader", "Complete")
    assert condition(job, "SuccessCriteriaMet")["reason"] == "SuccessPolicy"  # type: ignore[index]
    assert job["status"]["completedIndexes"] == "0"


def test_timestamps_round_trip_through_rfc3339() -> None:
    moment = datetime.datetime(2026, 1, 1, 12, 30, 5, tzinfo=datetime.UTC)
    assert jobs.parse_time(jobs.rfc3339(moment)) == moment
    assert jobs.parse_time("not a time") is None
