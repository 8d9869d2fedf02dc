"""The CronJob controller (batch/v1), after upstream's ``cronjob_controllerv2``.

Each CronJob key is synced when it or one of its Jobs changes, and requeued
for its next schedule time (plus upstream's 100 ms of slack) on the injected
clock, so a ``FakeClock`` drives schedules in tests.

Why it is shaped like upstream's:

- A run's Job is named ``<cronjob>-<scheduled time in minutes since the
  epoch>``: the name is the lock that keeps a restarted controller, or one
  reading a stale status, from starting the same run twice (the create
  answers AlreadyExists).
- Schedules are read the way robfig/cron's ``ParseStandard`` reads them: five
  fields, the ``@yearly`` ... ``@hourly`` descriptors, ``@every <duration>``,
  an optional ``TZ=``/``CRON_TZ=`` prefix, and ``spec.timeZone``. Without a
  time zone the controller's zone is UTC.
- Missed runs: only the most recent missed schedule is started, and only
  within ``startingDeadlineSeconds``; more than 100 missed schedules earn a
  ``TooManyMissedTimes`` warning, as upstream.
- Jobs made by hand from the CronJob (``kubectl create job --from=cronjob/x``,
  annotated ``cronjob.kubernetes.io/instantiate: manual``) are part of its
  history (history limits, lastSuccessfulTime) but are not scheduled runs:
  they are never added to ``status.active``, so they neither block a
  ``Forbid`` CronJob nor get replaced by ``Replace``.
"""

from __future__ import annotations

import dataclasses
import datetime
import re
import zoneinfo
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import croniter  # type: ignore[import-untyped]  # ships no type stubs

from nodeless import clocks
from nodeless.api import errors, values
from nodeless.client import clients, controllers, events, informers
from nodeless.controllers import jobs, ownership

Obj = dict[str, Any]

CRONJOBS = clients.ResourceRef("batch", "v1", "cronjobs", True, "CronJob")
JOBS = jobs.JOBS

SCHEDULED_TIMESTAMP = "batch.kubernetes.io/cronjob-scheduled-timestamp"
INSTANTIATE = "cronjob.kubernetes.io/instantiate"
# Upstream requeues a little after the schedule time so that a clock slightly
# behind does not wake it just before the run is due.
NEXT_SCHEDULE_DELTA = 0.1
TOO_MANY_MISSED = 100

_DESCRIPTORS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTHS = frozenset(
    {"jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"}
)
_DAYS = frozenset({"sun", "mon", "tue", "wed", "thu", "fri", "sat"})
_FIELD_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 6))
_FIELD_NAMES: tuple[frozenset[str], ...] = (frozenset(), frozenset(), frozenset(), _MONTHS, _DAYS)
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_DURATION_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}


# --- schedules ------------------------------------------------------------------------


class Schedule(Protocol):
    def next(self, after: datetime.datetime) -> datetime.datetime:
        """The first activation strictly after ``after`` (aware, UTC)."""
        ...


@dataclasses.dataclass(frozen=True)
class CronSchedule:
    """A five-field cron expression evaluated in a time zone."""

    expression: str
    zone: datetime.tzinfo

    def next(self, after: datetime.datetime) -> datetime.datetime:
        start = after.astimezone(self.zone)
        found = croniter.croniter(self.expression, start).get_next(datetime.datetime)
        if not isinstance(found, datetime.datetime):  # pragma: no cover - croniter contract
            raise ValueError("croniter returned no datetime")
        return found.astimezone(datetime.UTC)


@dataclasses.dataclass(frozen=True)
class EverySchedule:
    """``@every <duration>``: robfig's ConstantDelaySchedule, whole seconds from
    the previous activation (at least one second)."""

    seconds: int

    def next(self, after: datetime.datetime) -> datetime.datetime:
        return after.replace(microsecond=0) + datetime.timedelta(seconds=self.seconds)


def _go_duration(text: str) -> float:
    """Seconds in a Go duration such as ``1h30m`` or ``90s``."""
    text = text.strip()
    sign = -1.0 if text.startswith("-") else 1.0
    body = text.lstrip("+-")
    if body == "0":
        return 0.0
    total = 0.0
    position = 0
    while position < len(body):
        match = _DURATION_PART.match(body, position)
        if match is None:
            raise ValueError(f'time: invalid duration "{text}"')
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        position = match.end()
    if not body:
        raise ValueError(f'time: invalid duration "{text}"')
    return sign * total


def _check_field(text: str, index: int) -> None:
    low, high = _FIELD_RANGES[index]
    names = _FIELD_NAMES[index]
    for part in text.split(","):
        values, _, step = part.partition("/")
        if step and (not step.isdigit() or int(step) == 0):
            raise ValueError(f"invalid step in {part!r}")
        if values in ("*", "?"):
            continue
        for bound in values.split("-", 1):
            if bound.isdigit():
                if not low <= int(bound) <= high:
                    raise ValueError(f"{bound} is out of range [{low}, {high}]")
            elif bound.lower() not in names:
                raise ValueError(f"failed to parse {bound!r} in {part!r}")


def parse_schedule(schedule: str, time_zone: str | None = None) -> Schedule:
    """Read a schedule as robfig/cron's ParseStandard does; ``ValueError`` when
    it cannot be read (upstream's UnparseableSchedule)."""
    spec = schedule.strip()
    zone_name = time_zone or "UTC"
    if spec.startswith(("TZ=", "CRON_TZ=")):
        prefix, _, spec = spec.partition(" ")
        zone_name = prefix.split("=", 1)[1]
        spec = spec.strip()
    try:
        zone: datetime.tzinfo = zoneinfo.ZoneInfo(zone_name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as err:
        raise ValueError(f"provided bad location {zone_name}: {err}") from None
    if spec.startswith("@every "):
        seconds = int(_go_duration(spec[len("@every ") :]))
        return EverySchedule(max(1, seconds))
    if spec.startswith("@"):
        expanded = _DESCRIPTORS.get(spec.lower())
        if expanded is None:
            raise ValueError(f"unrecognized descriptor: {spec}")
        spec = expanded
    fields = spec.split()
    if len(fields) != 5:
        raise ValueError(f"expected exactly 5 fields, found {len(fields)}: {spec}")
    for index, field in enumerate(fields):
        _check_field(field, index)
    expression = " ".join(f.replace("?", "*") for f in fields)
    if not croniter.croniter.is_valid(expression):
        raise ValueError(f"invalid cron expression: {spec}")
    return CronSchedule(expression, zone)


def job_name(cronjob: Mapping[str, Any], scheduled: datetime.datetime) -> str:
    """Upstream's getJobName: the name plus the scheduled time in minutes."""
    name = str((cronjob.get("metadata") or {}).get("name", ""))
    return f"{name}-{int(scheduled.timestamp()) // 60}"


@dataclasses.dataclass(frozen=True)
class _MostRecent:
    earliest: datetime.datetime
    time: datetime.datetime | None
    missed: int


def most_recent_schedule_time(
    cronjob: Mapping[str, Any],
    now: datetime.datetime,
    schedule: Schedule,
    *,
    include_starting_deadline: bool,
) -> _MostRecent:
    """Upstream's mostRecentScheduleTime: the latest schedule time not after
    ``now`` that has not been run yet (None if none), and roughly how many were
    missed. ``ValueError`` for a schedule that never advances (Feb 31st)."""
    meta = cronjob.get("metadata") or {}
    status = cronjob.get("status") or {}
    spec = cronjob.get("spec") or {}
    earliest = (
        jobs.parse_time(status.get("lastScheduleTime"))
        or jobs.parse_time(meta.get("creationTimestamp"))
        or now
    )
    deadline = spec.get("startingDeadlineSeconds")
    if include_starting_deadline and isinstance(deadline, int):
        not_before = now - datetime.timedelta(seconds=deadline)
        earliest = max(earliest, not_before)
    t1 = _next(schedule, earliest)
    if now < t1:
        return _MostRecent(earliest, None, 0)
    t2 = _next(schedule, t1)
    if now < t2:
        return _MostRecent(earliest, t1, 1)
    between = round((t2 - t1).total_seconds())
    if between < 1:
        raise ValueError("time difference between two schedules is less than 1 second")
    missed = int((now - t1).total_seconds()) // between + 1
    moment = _next(schedule, t1 + datetime.timedelta(seconds=(missed - 2) * between))
    latest: datetime.datetime | None = None
    while moment <= now:
        latest = moment
        moment = _next(schedule, moment)
    if latest is None:
        return _MostRecent(earliest, None, 0)
    return _MostRecent(earliest, latest, missed)


def _next(schedule: Schedule, after: datetime.datetime) -> datetime.datetime:
    try:
        return schedule.next(after)
    except croniter.CroniterBadDateError as err:
        raise ValueError(str(err)) from None


def next_schedule_delay(
    cronjob: Mapping[str, Any], now: datetime.datetime, schedule: Schedule
) -> float:
    """Seconds until the sync after the next schedule time (upstream's
    nextScheduleTimeDuration)."""
    try:
        recent = most_recent_schedule_time(cronjob, now, schedule, include_starting_deadline=False)
        base = recent.time or recent.earliest
        upcoming = _next(schedule, base)
    except ValueError:
        try:
            upcoming = _next(schedule, now)
        except ValueError:
            return 3600.0
    return (upcoming - now).total_seconds() + NEXT_SCHEDULE_DELTA


# --- the controller ------------------------------------------------------------------


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def _uid(obj: Mapping[str, Any]) -> str:
    return str(_meta(obj).get("uid") or "")


def is_manual(job: Mapping[str, Any]) -> bool:
    """Made by ``kubectl create job --from=cronjob/...``, not by a schedule."""
    return (_meta(job).get("annotations") or {}).get(INSTANTIATE) == "manual"


def _job_ref(job: Mapping[str, Any]) -> Obj:
    meta = _meta(job)
    return {
        "kind": "Job",
        "namespace": meta.get("namespace", ""),
        "name": meta.get("name", ""),
        "uid": meta.get("uid", ""),
        "apiVersion": "batch/v1",
        "resourceVersion": meta.get("resourceVersion", ""),
    }


def _start_order(job: Mapping[str, Any]) -> tuple[int, float, str]:
    """Upstream's byJobStartTime: Jobs without a start time last, then by time, then name."""
    started = jobs.parse_time((job.get("status") or {}).get("startTime"))
    name = str(_meta(job).get("name", ""))
    if started is None:
        return (1, 0.0, name)
    return (0, started.timestamp(), name)


def _rfc1123z(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).strftime("%a, %d %b %Y %H:%M:%S +0000")


class CronJobController:
    """Creates a Job for each schedule time of each CronJob, applies its
    concurrency policy, and prunes its finished Jobs to the history limits."""

    def __init__(
        self,
        client: clients.ApiClient,
        factory: informers.InformerFactory,
        *,
        clock: clocks.Clock | None = None,
        recorder: events.EventRecorder | None = None,
        workers: int = 4,
    ) -> None:
        self.client = client
        self.factory = factory
        self.clock: clocks.Clock = clock or clocks.SystemClock()
        self._own_recorder = recorder is None
        self.recorder = recorder or events.EventRecorder(client, "cronjob-controller", self.clock)
        self.controller = controllers.Controller(
            "cronjob-controller", self._sync, workers=workers, clock=self.clock
        )
        self._fresh = jobs.Freshest()
        self._cronjobs: informers.Informer | None = None
        self._jobs: informers.Informer | None = None
        # CronJob uid → keys of its Jobs, kept by the Job handlers.
        self._children: dict[str, set[str]] = {}
        self._parents: dict[str, str] = {}

    async def start(self) -> None:
        """Subscribe to the factory's CronJob and Job informers and start the
        workers (they wait for the caches; the caller starts the factory)."""
        self._cronjobs = self.factory.informer(CRONJOBS)
        self._jobs = self.factory.informer(JOBS)
        self._cronjobs.add_handlers(
            self.controller.enqueue,
            lambda _old, new: self.controller.enqueue(new),
            self.controller.enqueue,
        )
        self._jobs.add_handlers(self._job_added, self._job_updated, self._job_deleted)
        if self._own_recorder:
            self.recorder.start()
        self.controller.start([self._cronjobs, self._jobs])

    async def stop(self) -> None:
        await self.controller.stop()
        if self._own_recorder:
            await self.recorder.stop()

    @property
    def cronjobs(self) -> informers.Informer:
        if self._cronjobs is None:
            raise RuntimeError("CronJobController.start() has not been called")
        return self._cronjobs

    @property
    def jobs(self) -> informers.Informer:
        if self._jobs is None:
            raise RuntimeError("CronJobController.start() has not been called")
        return self._jobs

    # --- handlers --------------------------------------------------------------------

    @staticmethod
    def _owner(job: Mapping[str, Any]) -> Obj | None:
        ref = ownership.controller_ref(dict(job))
        if ref is None or ref.get("kind") != "CronJob":
            return None
        if not str(ref.get("apiVersion", "")).startswith("batch/"):
            return None
        return ref

    def _index(self, job: Obj) -> str | None:
        key = clients.key_of(job)
        old = self._parents.pop(key, None)
        if old is not None:
            siblings = self._children.get(old)
            if siblings is not None:
                siblings.discard(key)
                if not siblings:
                    del self._children[old]
        ref = self._owner(job)
        if ref is None:
            return None
        self._parents[key] = str(ref.get("uid", ""))
        self._children.setdefault(str(ref.get("uid", "")), set()).add(key)
        return f"{_meta(job).get('namespace', '')}/{ref.get('name', '')}"

    def _job_added(self, job: Obj) -> None:
        parent = self._index(job)
        if parent is not None:
            self.controller.queue.add(parent)

    def _job_updated(self, old: Obj, new: Obj) -> None:
        old_ref = self._owner(old)
        parent = self._index(new)
        if parent is not None:
            self.controller.queue.add(parent)
        if old_ref is not None:
            old_parent = f"{_meta(old).get('namespace', '')}/{old_ref.get('name', '')}"
            if old_parent != parent:
                self.controller.queue.add(old_parent)

    def _job_deleted(self, job: Obj) -> None:
        ref = self._owner(job)
        key = clients.key_of(job)
        uid = self._parents.pop(key, None)
        if uid is not None:
            siblings = self._children.get(uid)
            if siblings is not None:
                siblings.discard(key)
                if not siblings:
                    del self._children[uid]
        if ref is not None:
            self.controller.queue.add(f"{_meta(job).get('namespace', '')}/{ref.get('name', '')}")

    # --- sync ------------------------------------------------------------------------

    async def _sync(self, key: str) -> None:
        cached = self.cronjobs.get(key)
        if cached is None:
            self._fresh.forget(key)
            return
        cronjob = self._fresh.pick(key, cached)
        children = [
            job
            for job_key in sorted(self._children.get(_uid(cronjob), ()))
            if (job := self.jobs.get(job_key)) is not None
        ]
        working = values.clone(cronjob)
        working.setdefault("status", {})
        changed = await self._cleanup_finished(working, children)
        delay, synced = await self._sync_cronjob(working, children)
        if changed or synced:
            if working["status"] != (cronjob.get("status") or {}):
                updated = await self.client.update_status(CRONJOBS, working)
                self._fresh.remember(key, clients.copy_with_type(CRONJOBS, updated))
        if delay is not None:
            self.controller.queue.add_after(key, max(0.0, delay))

    async def _sync_cronjob(
        self, cronjob: Obj, children: Sequence[Obj]
    ) -> tuple[float | None, bool]:
        """Upstream's syncCronJob: reconcile status.active with the Jobs, then
        start the run that is due, if any. Returns (requeue delay, changed)."""
        status: Obj = cronjob["status"]
        spec = cronjob.get("spec") or {}
        now = self.clock.now()
        changed = False
        active: list[Obj] = list(status.get("active") or [])
        active_uids = {str(ref.get("uid", "")) for ref in active}
        seen: set[str] = set()
        for job in children:
            uid = _uid(job)
            seen.add(uid)
            finished = jobs.finished_type(job)
            if uid not in active_uids and finished is None:
                if not is_manual(job) and not _meta(job).get("deletionTimestamp"):
                    self.recorder.record(
                        cronjob,
                        "Warning",
                        "UnexpectedJob",
                        "Saw a job that the controller did not create or forgot: "
                        f"{_meta(job).get('name', '')}",
                    )
            elif uid in active_uids and finished is not None:
                active = [ref for ref in active if ref.get("uid") != uid]
                active_uids.discard(uid)
                self.recorder.record(
                    cronjob,
                    "Normal",
                    "SawCompletedJob",
                    f"Saw completed job: {_meta(job).get('name', '')}, condition: {finished}",
                )
                changed = True
            if finished == jobs.COMPLETE:
                completed = (job.get("status") or {}).get("completionTime")
                last = jobs.parse_time(status.get("lastSuccessfulTime"))
                done = jobs.parse_time(completed)
                if done is not None and (last is None or done > last):
                    status["lastSuccessfulTime"] = completed
                    changed = True
        for ref in list(active):
            if str(ref.get("uid", "")) in seen:
                continue
            # Not in our cache: ask the API before declaring it gone.
            try:
                found = await self.client.get(
                    JOBS, str(ref.get("namespace", "")), str(ref.get("name", ""))
                )
            except errors.StatusError as err:
                if err.code != 404:
                    raise
                found = None
            if found is None or _uid(found) != ref.get("uid"):
                self.recorder.record(
                    cronjob, "Normal", "MissingJob", f"Active job went missing: {ref.get('name')}"
                )
                active = [r for r in active if r is not ref]
                changed = True
        self._set_active(status, active)

        if _meta(cronjob).get("deletionTimestamp"):
            return None, changed
        time_zone = spec.get("timeZone")
        if time_zone:
            try:
                zoneinfo.ZoneInfo(str(time_zone))
            except (zoneinfo.ZoneInfoNotFoundError, ValueError) as err:
                self.recorder.record(
                    cronjob, "Warning", "UnknownTimeZone", f'invalid timeZone: "{time_zone}": {err}'
                )
                return None, changed
        if spec.get("suspend"):
            return None, changed
        text = str(spec.get("schedule") or "")
        if "TZ" in text:
            self.recorder.record(
                cronjob,
                "Warning",
                "UnsupportedSchedule",
                f'CRON_TZ or TZ used in schedule "{text}" is not officially supported, see '
                "https://kubernetes.io/docs/concepts/workloads/controllers/cron-jobs/ "
                "for more details",
            )
        try:
            schedule = parse_schedule(text, str(time_zone) if time_zone else None)
        except ValueError as err:
            self.recorder.record(
                cronjob, "Warning", "UnparseableSchedule", f'unparseable schedule: "{text}" : {err}'
            )
            return None, changed
        try:
            recent = most_recent_schedule_time(
                cronjob, now, schedule, include_starting_deadline=True
            )
        except ValueError as err:
            self.recorder.record(
                cronjob, "Warning", "InvalidSchedule", f"invalid schedule: {text} : {err}"
            )
            return None, changed
        if recent.missed > TOO_MANY_MISSED:
            self.recorder.record(
                cronjob,
                "Warning",
                "TooManyMissedTimes",
                "too many missed start times. Set or decrease .spec.startingDeadlineSeconds "
                "or check clock skew",
            )
        scheduled = recent.time
        if scheduled is None:
            return next_schedule_delay(cronjob, now, schedule), changed
        deadline = spec.get("startingDeadlineSeconds")
        if isinstance(deadline, int) and scheduled + datetime.timedelta(seconds=deadline) < now:
            self.recorder.record(
                cronjob,
                "Warning",
                "MissSchedule",
                f"Missed scheduled time to start a job: {_rfc1123z(scheduled)}",
            )
            return next_schedule_delay(cronjob, now, schedule), changed
        name = job_name(cronjob, scheduled)
        last = jobs.parse_time(status.get("lastScheduleTime"))
        if any(ref.get("name") == name for ref in active) or last == scheduled:
            return next_schedule_delay(cronjob, now, schedule), changed
        policy = spec.get("concurrencyPolicy") or "Allow"
        if policy == "Forbid" and active:
            self.recorder.record(
                cronjob,
                "Normal",
                "JobAlreadyActive",
                "Not starting job because prior execution is running and concurrency policy "
                "is Forbid",
            )
            return next_schedule_delay(cronjob, now, schedule), changed
        if policy == "Replace":
            for ref in list(active):
                await self._delete_job(
                    cronjob, str(ref.get("namespace", "")), str(ref.get("name", ""))
                )
                active = [r for r in active if r is not ref]
                changed = True
            self._set_active(status, active)

        job = self._job_from_template(cronjob, scheduled)
        try:
            made = await self.client.create(JOBS, job)
        except errors.StatusError as err:
            if err.code != 409 or err.reason != "AlreadyExists":
                self.recorder.record(
                    cronjob, "Warning", "FailedCreate", f"Error creating job: {err.message}"
                )
                raise
            namespace = str(_meta(cronjob).get("namespace", ""))
            made = await self.client.get(JOBS, namespace, name)
            owned = ownership.is_owned_by(made, cronjob)
            if not owned or any(ref.get("uid") == _uid(made) for ref in active):
                return next_schedule_delay(cronjob, now, schedule), changed
        else:
            self.recorder.record(
                cronjob, "Normal", "SuccessfulCreate", f"Created job {_meta(made).get('name', '')}"
            )
        active.append(_job_ref(made))
        self._set_active(status, active)
        status["lastScheduleTime"] = jobs.rfc3339(scheduled)
        return next_schedule_delay(cronjob, now, schedule), True

    @staticmethod
    def _set_active(status: Obj, active: list[Obj]) -> None:
        if active:
            status["active"] = active
        else:
            status.pop("active", None)

    def _job_from_template(self, cronjob: Obj, scheduled: datetime.datetime) -> Obj:
        """Upstream's getJobFromTemplate2: the template's labels, annotations and
        spec, the deterministic name, the scheduled time in the CronJob's zone."""
        spec = cronjob.get("spec") or {}
        template = spec.get("jobTemplate") or {}
        tmeta = template.get("metadata") or {}
        zone_name = spec.get("timeZone") or "UTC"
        try:
            zone: datetime.tzinfo = zoneinfo.ZoneInfo(str(zone_name))
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            zone = datetime.UTC
        local = scheduled.astimezone(zone)
        stamp = local.isoformat(timespec="seconds")
        if local.utcoffset() == datetime.timedelta(0):
            stamp = local.strftime("%Y-%m-%dT%H:%M:%SZ")
        annotations = dict(tmeta.get("annotations") or {})
        annotations[SCHEDULED_TIMESTAMP] = stamp
        return {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {
                "name": job_name(cronjob, scheduled),
                "namespace": _meta(cronjob).get("namespace", ""),
                "labels": dict(tmeta.get("labels") or {}),
                "annotations": annotations,
                "ownerReferences": [ownership.owner_reference(cronjob)],
            },
            "spec": values.clone(template.get("spec") or {}),
        }

    async def _delete_job(self, cronjob: Obj, namespace: str, name: str) -> bool:
        """Delete a Job and its pods (Background propagation), as upstream's
        deleteJob; a Job already gone counts as deleted, silently."""
        try:
            await self.client.delete(
                JOBS, namespace, name, clients.DeleteOptions(propagation_policy="Background")
            )
        except errors.StatusError as err:
            if err.code == 404:
                return True
            self.recorder.record(cronjob, "Warning", "FailedDelete", f"Deleted job: {err.message}")
            raise
        self.recorder.record(cronjob, "Normal", "SuccessfulDelete", f"Deleted job {name}")
        return True

    async def _cleanup_finished(self, cronjob: Obj, children: Sequence[Obj]) -> bool:
        """Delete the oldest finished Jobs beyond the history limits."""
        spec = cronjob.get("spec") or {}
        succeeded_limit = spec.get("successfulJobsHistoryLimit")
        failed_limit = spec.get("failedJobsHistoryLimit")
        if succeeded_limit is None and failed_limit is None:
            return False
        succeeded = [
            j
            for j in children
            if jobs.finished_type(j) == jobs.COMPLETE and not _meta(j).get("deletionTimestamp")
        ]
        failed = [
            j
            for j in children
            if jobs.finished_type(j) == "Failed" and not _meta(j).get("deletionTimestamp")
        ]
        changed = False
        for group, limit in ((succeeded, succeeded_limit), (failed, failed_limit)):
            if not isinstance(limit, int) or len(group) <= limit:
                continue
            for job in sorted(group, key=_start_order)[: len(group) - limit]:
                meta = _meta(job)
                await self._delete_job(
                    cronjob, str(meta.get("namespace", "")), str(meta.get("name", ""))
                )
                status = cronjob["status"]
                remaining = [r for r in status.get("active") or [] if r.get("uid") != _uid(job)]
                self._set_active(status, remaining)
                changed = True
        return changed
