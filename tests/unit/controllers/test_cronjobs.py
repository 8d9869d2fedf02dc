"""The CronJob controller on the in-process stack, with its schedule driven by
a FakeClock that starts just before the real time the API server stamps
objects with. No Job controller runs here: a test finishes a Job by writing
its status, so that only the CronJob controller's behaviour is observed."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
from collections.abc import AsyncIterator
from typing import Any

import pytest

from nodeless import clocks
from nodeless.client import clients, informers
from nodeless.controllers import cronjobs, jobs
from tests.unit.controllers.conftest import Stack

CRONJOBS = cronjobs.CRONJOBS
JOBS = jobs.JOBS
NS = "default"
UTC = datetime.UTC
Obj = dict[str, Any]


def cronjob_manifest(name: str, schedule: str = "* * * * *", **spec: Any) -> Obj:
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "schedule": schedule,
            "jobTemplate": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "template": {
                        "spec": {
                            "restartPolicy": "Never",
                            "containers": [
                                {"name": "main", "image": "busybox", "command": ["sleep", "3600"]}
                            ],
                        }
                    }
                },
            },
            **spec,
        },
    }


def fake_clock() -> clocks.FakeClock:
    """A fake clock at the start of the current real minute: never ahead of the
    creationTimestamps the API server writes."""
    now = datetime.datetime.now(UTC)
    return clocks.FakeClock(now.replace(second=0, microsecond=0))


@contextlib.asynccontextmanager
async def cron_controller(
    stack: Stack, clock: clocks.Clock
) -> AsyncIterator[cronjobs.CronJobController]:
    factory = informers.InformerFactory(stack.client)
    controller = cronjobs.CronJobController(
        stack.client, factory, clock=clock, recorder=stack.recorder
    )
    await controller.start()
    factory.start()
    await factory.wait_synced()
    try:
        yield controller
    finally:
        await controller.stop()
        await factory.stop()


async def settle(controller: cronjobs.CronJobController) -> None:
    """Until nothing is queued or in hand and the next schedule timer is set."""
    queue = controller.controller.queue
    for _ in range(500):
        if not len(queue) and not queue.processing and queue.waiting:
            await asyncio.sleep(0.05)
            if not len(queue) and not queue.processing and queue.waiting:
                return
        await asyncio.sleep(0.01)
    raise AssertionError("cronjob controller never settled")


async def advance_to(clock: clocks.FakeClock, moment: datetime.datetime) -> None:
    await clock.advance((moment - clock.now()).total_seconds())


async def create_cronjob(stack: Stack, manifest: Obj) -> tuple[Obj, datetime.datetime]:
    """The stored CronJob and its first schedule minute after creation."""
    made = await stack.client.create(CRONJOBS, manifest)
    created = jobs.parse_time(made["metadata"]["creationTimestamp"])
    assert created is not None
    first = created.replace(second=0) + datetime.timedelta(minutes=1)
    return made, first


def name_for(cronjob: str, moment: datetime.datetime) -> str:
    return f"{cronjob}-{int(moment.timestamp()) // 60}"


async def cron_jobs(stack: Stack, owner: str) -> list[Obj]:
    found = await stack.client.list(JOBS, NS)
    return sorted(
        (
            j
            for j in found.items
            if any(r["name"] == owner for r in j["metadata"].get("ownerReferences") or [])
        ),
        key=lambda j: j["metadata"]["name"],
    )


async def wait_jobs(stack: Stack, owner: str, names: list[str]) -> list[Obj]:
    async def check() -> tuple[list[Obj]] | None:
        found = await cron_jobs(stack, owner)
        return (found,) if [j["metadata"]["name"] for j in found] == sorted(names) else None

    result: tuple[list[Obj]] = await stack.wait_for(check)
    return result[0]


async def get_cronjob(stack: Stack, name: str) -> Obj:
    return await stack.client.get(CRONJOBS, NS, name)


async def wait_cronjob(stack: Stack, name: str, check: Any) -> Obj:
    async def probe() -> Obj | None:
        cronjob = await get_cronjob(stack, name)
        return cronjob if check(cronjob) else None

    found: Obj = await stack.wait_for(probe)
    return found


def active_names(cronjob: Obj) -> list[str]:
    return sorted(ref["name"] for ref in (cronjob.get("status") or {}).get("active") or [])


async def finish(stack: Stack, name: str, kind: str, started: str, ended: str) -> None:
    job = await stack.client.get(JOBS, NS, name)
    condition = {"type": kind, "status": "True", "lastTransitionTime": ended, "reason": "Test"}
    job["status"] = {"startTime": started, "conditions": [condition]}
    if kind == "Complete":
        job["status"]["completionTime"] = ended
    await stack.client.update_status(JOBS, job)


async def event_reasons(stack: Stack, name: str) -> list[str]:
    await stack.recorder.flush()
    found = await stack.client.list(clients.ResourceRef("", "v1", "events", True, "Event"), NS)
    return [
        e["reason"]
        for e in found.items
        if e["involvedObject"]["name"] == name and e["involvedObject"]["kind"] == "CronJob"
    ]


async def owned_job(stack: Stack, cronjob: Obj, name: str, *, manual: bool = False) -> Obj:
    """A Job of the CronJob; ``manual`` makes it exactly as ``kubectl create job
    --from=cronjob/...`` does (a controller reference without blockOwnerDeletion)."""
    ref: Obj = {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "name": cronjob["metadata"]["name"],
        "uid": cronjob["metadata"]["uid"],
        "controller": True,
    }
    if not manual:
        ref["blockOwnerDeletion"] = True
    meta: Obj = {"name": name, "namespace": NS, "ownerReferences": [ref]}
    if manual:
        meta["annotations"] = {cronjobs.INSTANTIATE: "manual"}
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta,
        "spec": cronjob["spec"]["jobTemplate"]["spec"],
    }
    made: Obj = await stack.client.create(JOBS, job)
    return made


# --- schedules ------------------------------------------------------------------------

T0 = datetime.datetime(2026, 3, 4, 10, 17, 30, tzinfo=UTC)


def test_schedules_read_like_robfig_cron() -> None:
    assert cronjobs.parse_schedule("*/15 * * * *").next(T0) == T0.replace(minute=30, second=0)
    assert cronjobs.parse_schedule("@hourly").next(T0) == T0.replace(hour=11, minute=0, second=0)
    assert cronjobs.parse_schedule("@daily").next(T0) == datetime.datetime(2026, 3, 5, tzinfo=UTC)
    assert cronjobs.parse_schedule("0 0 * * MON-FRI").next(T0) == datetime.datetime(
        2026, 3, 5, tzinfo=UTC
    )
    assert cronjobs.parse_schedule("@every 1h30m").next(T0) == T0 + datetime.timedelta(minutes=90)
    tokyo = cronjobs.parse_schedule("0 9 * * *", "Asia/Tokyo")
    assert tokyo.next(T0) == datetime.datetime(2026, 3, 5, 0, 0, tzinfo=UTC)
    assert cronjobs.parse_schedule("TZ=Asia/Tokyo 0 9 * * *").next(T0) == tokyo.next(T0)
    for bad in ("61 * * * *", "* * * *", "* * * * * *", "@reboot", "0 0 * * 7", "@every x"):
        with pytest.raises(ValueError):
            cronjobs.parse_schedule(bad)
    with pytest.raises(ValueError):
        cronjobs.parse_schedule("* * * * *", "Mars/Olympus_Mons")


def test_job_names_carry_the_scheduled_minute() -> None:
    cronjob = {"metadata": {"name": "backup"}}
    assert cronjobs.job_name(cronjob, T0.replace(second=0)) == f"backup-{int(T0.timestamp()) // 60}"


def test_only_the_most_recent_missed_schedule_runs_and_too_many_misses_are_reported() -> None:
    created = T0 - datetime.timedelta(minutes=200)
    cronjob: Obj = {"metadata": {"creationTimestamp": jobs.rfc3339(created)}, "spec": {}}
    every_minute = cronjobs.parse_schedule("* * * * *")
    recent = cronjobs.most_recent_schedule_time(
        cronjob, T0, every_minute, include_starting_deadline=True
    )
    assert recent.time == T0.replace(second=0)
    assert recent.missed > cronjobs.TOO_MANY_MISSED
    # A starting deadline bounds how far back the controller looks.
    cronjob["spec"] = {"startingDeadlineSeconds": 120}
    recent = cronjobs.most_recent_schedule_time(
        cronjob, T0, every_minute, include_starting_deadline=True
    )
    assert recent.time == T0.replace(second=0)
    assert recent.missed <= cronjobs.TOO_MANY_MISSED
    # Nothing due yet: the next sync comes 100 ms after the next minute.
    cronjob = {"metadata": {"creationTimestamp": jobs.rfc3339(T0)}, "spec": {}}
    assert cronjobs.next_schedule_delay(cronjob, T0, every_minute) == pytest.approx(30.1)


# --- end to end -------------------------------------------------------------------------


async def test_cronjob_creates_a_job_at_each_schedule_time(stack: Stack) -> None:
    clock = fake_clock()
    async with cron_controller(stack, clock) as controller:
        cronjob, first = await create_cronjob(stack, cronjob_manifest("tick"))
        await settle(controller)
        await advance_to(clock, first - datetime.timedelta(seconds=1))
        await settle(controller)
        assert await cron_jobs(stack, "tick") == []

        await advance_to(clock, first + datetime.timedelta(seconds=0.2))
        [job] = await wait_jobs(stack, "tick", [name_for("tick", first)])
        meta = job["metadata"]
        assert meta["annotations"][cronjobs.SCHEDULED_TIMESTAMP] == jobs.rfc3339(first)
        assert meta["labels"]["app"] == "tick"
        ref = meta["ownerReferences"][0]
        assert (ref["kind"], ref["uid"], ref["controller"]) == (
            "CronJob",
            cronjob["metadata"]["uid"],
            True,
        )
        cronjob = await wait_cronjob(stack, "tick", lambda c: active_names(c))
        assert active_names(cronjob) == [name_for("tick", first)]
        assert cronjob["status"]["lastScheduleTime"] == jobs.rfc3339(first)

        await settle(controller)
        second = first + datetime.timedelta(minutes=1)
        await advance_to(clock, second + datetime.timedelta(seconds=0.2))
        await wait_jobs(stack, "tick", [name_for("tick", first), name_for("tick", second)])
        await wait_cronjob(stack, "tick", lambda c: len(active_names(c)) == 2)
    assert "SuccessfulCreate" in await event_reasons(stack, "tick")


async def test_forbid_skips_a_run_while_the_previous_one_is_active(stack: Stack) -> None:
    clock = fake_clock()
    async with cron_controller(stack, clock) as controller:
        _, first = await create_cronjob(stack, cronjob_manifest("solo", concurrencyPolicy="Forbid"))
        await settle(controller)
        await advance_to(clock, first + datetime.timedelta(seconds=0.2))
        await wait_jobs(stack, "solo", [name_for("solo", first)])
        await wait_cronjob(stack, "solo", lambda c: active_names(c))
        await settle(controller)

        second = first + datetime.timedelta(minutes=1)
        await advance_to(clock, second + datetime.timedelta(seconds=0.2))
        await settle(controller)
        assert len(await cron_jobs(stack, "solo")) == 1
        assert "JobAlreadyActive" in await event_reasons(stack, "solo")

        await finish(
            stack, name_for("solo", first), "Complete", jobs.rfc3339(first), jobs.rfc3339(second)
        )
        # The skipped time is still unmet: once the blocker is done it starts
        # (late, as upstream does without a startingDeadlineSeconds).
        await wait_jobs(stack, "solo", [name_for("solo", first), name_for("solo", second)])
        cronjob = await wait_cronjob(
            stack, "solo", lambda c: active_names(c) == [name_for("solo", second)]
        )
        assert cronjob["status"]["lastSuccessfulTime"] == jobs.rfc3339(second)
        assert cronjob["status"]["lastScheduleTime"] == jobs.rfc3339(second)
    assert "SawCompletedJob" in await event_reasons(stack, "solo")


async def test_replace_deletes_the_running_job_and_starts_a_new_one(stack: Stack) -> None:
    clock = fake_clock()
    async with cron_controller(stack, clock) as controller:
        _, first = await create_cronjob(
            stack, cronjob_manifest("swap", concurrencyPolicy="Replace")
        )
        await settle(controller)
        await advance_to(clock, first + datetime.timedelta(seconds=0.2))
        await wait_jobs(stack, "swap", [name_for("swap", first)])
        await wait_cronjob(stack, "swap", lambda c: active_names(c))
        await settle(controller)

        second = first + datetime.timedelta(minutes=1)
        await advance_to(clock, second + datetime.timedelta(seconds=0.2))
        await wait_jobs(stack, "swap", [name_for("swap", second)])
        cronjob = await wait_cronjob(
            stack, "swap", lambda c: active_names(c) == [name_for("swap", second)]
        )
        assert cronjob["status"]["lastScheduleTime"] == jobs.rfc3339(second)
    assert "SuccessfulDelete" in await event_reasons(stack, "swap")


async def test_history_limits_prune_the_oldest_finished_jobs(stack: Stack) -> None:
    clock = fake_clock()
    async with cron_controller(stack, clock):
        cronjob, _ = await create_cronjob(
            stack,
            cronjob_manifest(
                "keep", suspend=True, successfulJobsHistoryLimit=2, failedJobsHistoryLimit=1
            ),
        )
        for i in range(4):
            await owned_job(stack, cronjob, f"ok-{i}")
            await finish(
                stack, f"ok-{i}", "Complete", f"2026-01-01T00:0{i}:00Z", f"2026-01-01T00:0{i}:30Z"
            )
        for i in range(2):
            await owned_job(stack, cronjob, f"bad-{i}")
            await finish(
                stack, f"bad-{i}", "Failed", f"2026-01-01T00:1{i}:00Z", f"2026-01-01T00:1{i}:30Z"
            )
        await wait_jobs(stack, "keep", ["bad-1", "ok-2", "ok-3"])
        cronjob = await wait_cronjob(stack, "keep", lambda c: c["status"].get("lastSuccessfulTime"))
        assert cronjob["status"]["lastSuccessfulTime"] == "2026-01-01T00:03:30Z"
        assert "SuccessfulDelete" in await event_reasons(stack, "keep")


async def test_suspended_cronjob_starts_nothing_until_resumed(stack: Stack) -> None:
    clock = fake_clock()
    async with cron_controller(stack, clock) as controller:
        _, first = await create_cronjob(stack, cronjob_manifest("pause", suspend=True))
        later = first + datetime.timedelta(minutes=2)
        await advance_to(clock, later + datetime.timedelta(seconds=5))
        await asyncio.sleep(0.2)
        assert await cron_jobs(stack, "pause") == []
        await stack.client.patch(CRONJOBS, NS, "pause", {"spec": {"suspend": False}})
        # On resume only the most recent missed run starts, as upstream.
        await wait_jobs(stack, "pause", [name_for("pause", later)])
        await settle(controller)


async def test_time_zone_decides_when_the_schedule_fires(stack: Stack) -> None:
    clock = fake_clock()
    async with cron_controller(stack, clock) as controller:
        made, _ = await create_cronjob(
            stack, cronjob_manifest("tokyo", "0 9 * * *", timeZone="Asia/Tokyo")
        )
        created = jobs.parse_time(made["metadata"]["creationTimestamp"])
        assert created is not None
        # 09:00 in Tokyo is midnight UTC.
        due = (created + datetime.timedelta(days=1)).replace(hour=0, minute=0, second=0)
        await settle(controller)
        await advance_to(clock, due - datetime.timedelta(minutes=1))
        await settle(controller)
        assert await cron_jobs(stack, "tokyo") == []
        await advance_to(clock, due + datetime.timedelta(seconds=0.2))
        [job] = await wait_jobs(stack, "tokyo", [name_for("tokyo", due)])
    stamp = job["metadata"]["annotations"][cronjobs.SCHEDULED_TIMESTAMP]
    assert stamp == due.astimezone(datetime.timezone(datetime.timedelta(hours=9))).isoformat()
    assert stamp.endswith("T09:00:00+09:00")


async def test_a_manual_job_from_the_cronjob_is_history_not_a_scheduled_run(
    stack: Stack,
) -> None:
    clock = fake_clock()
    async with cron_controller(stack, clock) as controller:
        cronjob, first = await create_cronjob(
            stack,
            cronjob_manifest("by-hand", concurrencyPolicy="Forbid", successfulJobsHistoryLimit=0),
        )
        await owned_job(stack, cronjob, "by-hand-manual-1", manual=True)
        await settle(controller)
        cronjob = await get_cronjob(stack, "by-hand")
        assert active_names(cronjob) == []

        # Forbid is not blocked by the manual run.
        await advance_to(clock, first + datetime.timedelta(seconds=0.2))
        await wait_jobs(stack, "by-hand", ["by-hand-manual-1", name_for("by-hand", first)])
        cronjob = await wait_cronjob(stack, "by-hand", lambda c: active_names(c))
        assert active_names(cronjob) == [name_for("by-hand", first)]

        # Finished, it counts as history: lastSuccessfulTime, then pruned.
        await finish(
            stack, "by-hand-manual-1", "Complete", jobs.rfc3339(first), jobs.rfc3339(first)
        )
        await wait_jobs(stack, "by-hand", [name_for("by-hand", first)])
        cronjob = await wait_cronjob(
            stack, "by-hand", lambda c: c["status"].get("lastSuccessfulTime")
        )
        assert cronjob["status"]["lastSuccessfulTime"] == jobs.rfc3339(first)
    assert "UnexpectedJob" not in await event_reasons(stack, "by-hand")


async def test_a_missed_run_past_the_starting_deadline_is_skipped(stack: Stack) -> None:
    clock = fake_clock()
    async with cron_controller(stack, clock) as controller:
        _, first = await create_cronjob(
            stack, cronjob_manifest("late", startingDeadlineSeconds=10, suspend=True)
        )
        await advance_to(clock, first + datetime.timedelta(seconds=30))
        await stack.client.patch(CRONJOBS, NS, "late", {"spec": {"suspend": False}})
        await settle(controller)
        assert await cron_jobs(stack, "late") == []
        second = first + datetime.timedelta(minutes=1)
        await advance_to(clock, second + datetime.timedelta(seconds=0.2))
        await wait_jobs(stack, "late", [name_for("late", second)])
