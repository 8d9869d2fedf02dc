"""The Job controller (batch/v1), after upstream's ``pkg/controller/job``, and the
small TTL-after-finished controller that deletes finished Jobs.

Why it is shaped this way:

- **Nothing is counted twice or lost.** Every pod the controller creates
  carries the ``batch.kubernetes.io/job-tracking`` finalizer, so a finished pod
  cannot vanish before the Job has counted it. Counting is two-phase: a
  finished pod's uid first goes into ``status.uncountedTerminatedPods`` (or its
  index into ``completedIndexes``) with a status write that is
  optimistic-concurrency checked; only then is the finalizer removed; once the
  removal is seen the uid moves into ``succeeded``/``failed``. A crash between
  any two steps leaves enough in the API to resume without double counting.
- **Terminal conditions wait for the pods.** As in Kubernetes 1.31+, the Job
  first gets the interim ``SuccessCriteriaMet`` or ``FailureTarget`` condition,
  its remaining pods are terminated, and ``Complete``/``Failed`` follow only
  when no pod is still terminating, so a client that waits for ``Complete``
  never sees a pod of the Job still running.
- **Timers run on the injected clock**: pod re-creation back-off (10 s
  doubling, capped at 6 minutes), ``activeDeadlineSeconds`` and
  ``ttlSecondsAfterFinished`` are requeues on the work queue, which sleeps on
  the controller's clock, so tests drive them with a ``FakeClock``.
- **Platform disruptions are not the workload's failures.** A pod the platform
  took away (spot capacity reclaimed: status.reason ``BidFailed``) or one
  carrying a ``DisruptionTarget`` condition does not count against
  ``backoffLimit`` (nor ``status.failed``) unless a ``podFailurePolicy`` rule
  on that condition says otherwise. (Upstream counts them unless a rule
  ignores DisruptionTarget; here that rule is implied, since spot reclaim is
  routine on this platform.) Like upstream, every failure, ignored or
  not, still delays the replacement by the back-off, so a pod that keeps
  failing in an ignored way cannot spin.

Deliberate differences from upstream:

- the back-off counts from when the controller saw a failure (on its clock),
  not from the container's ``finishedAt``; like upstream the record lives in
  memory, so a restarted controller starts it afresh;
- a pod with status.reason ``NotFound`` (its instance vanished) is an
  ordinary failure, so a provider that keeps losing instances cannot make a
  Job retry forever;
- per-index failure counts are read from the Job's remaining pods
  (annotations), without upstream's delayed deletion of the last failed pod
  of each index;
- ``startTime`` is cleared once a suspended Job has no pods left, and set
  again on resume;
- the TTL controller deletes with Background propagation (upstream:
  Foreground), so a Job goes at once and the garbage collector takes its pods.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from nodeless import clocks
from nodeless.api import errors, selectors, times, values
from nodeless.client import clients, controllers, events, informers
from nodeless.controllers import ownership

Obj = dict[str, Any]

JOBS = clients.ResourceRef("batch", "v1", "jobs", True, "Job")
PODS = clients.ResourceRef("", "v1", "pods", True, "Pod")

TRACKING_FINALIZER = "batch.kubernetes.io/job-tracking"
COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
INDEX_FAILURE_COUNT = "batch.kubernetes.io/job-index-failure-count"
INDEX_IGNORED_FAILURE_COUNT = "batch.kubernetes.io/job-index-ignored-failure-count"
COMPLETION_INDEX_ENV = "JOB_COMPLETION_INDEX"
MANAGED_BY = "kubernetes.io/job-controller"

DEFAULT_BACKOFF = 10.0
MAX_BACKOFF = 360.0
# Upstream's bounds on the work one sync does, so that a huge Job cannot
# monopolise a worker or send an unbounded status write.
MAX_POD_CREATE_DELETE_PER_SYNC = 500
MAX_UNCOUNTED_PODS = 500
SLOW_START_INITIAL_BATCH = 1

SUCCEEDED = "Succeeded"
FAILED = "Failed"

# Condition types and reasons, spelled as upstream spells them.
COMPLETE = "Complete"
SUCCESS_CRITERIA_MET = "SuccessCriteriaMet"
FAILURE_TARGET = "FailureTarget"
SUSPENDED = "Suspended"
REASON_BACKOFF_LIMIT = "BackoffLimitExceeded"
REASON_DEADLINE = "DeadlineExceeded"
REASON_POD_FAILURE_POLICY = "PodFailurePolicy"
REASON_MAX_FAILED_INDEXES = "MaxFailedIndexesExceeded"
REASON_FAILED_INDEXES = "FailedIndexes"
REASON_COMPLETIONS_REACHED = "CompletionsReached"
REASON_SUCCESS_POLICY = "SuccessPolicy"

# Reasons a pod ends Failed that are the platform's doing, not the workload's.
DISRUPTION_REASONS = frozenset({"BidFailed"})


# --- small object helpers ----------------------------------------------------------


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, Mapping) else {}


def _uid(obj: Mapping[str, Any]) -> str:
    return str(_meta(obj).get("uid") or "")


def _deleting(obj: Mapping[str, Any]) -> bool:
    return bool(_meta(obj).get("deletionTimestamp"))


def _phase(pod: Mapping[str, Any]) -> str:
    return str((pod.get("status") or {}).get("phase") or "")


def _has_finalizer(pod: Mapping[str, Any]) -> bool:
    return TRACKING_FINALIZER in (_meta(pod).get("finalizers") or ())


def _is_active(pod: Mapping[str, Any]) -> bool:
    """Upstream's FilterActivePods: not finished and not being deleted."""
    return _phase(pod) not in (SUCCEEDED, FAILED) and not _deleting(pod)


def _is_terminating(pod: Mapping[str, Any]) -> bool:
    return _deleting(pod) and _phase(pod) not in (SUCCEEDED, FAILED)


def _pod_condition(pod: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for cond in (pod.get("status") or {}).get("conditions") or ():
        if isinstance(cond, Mapping) and cond.get("type") == kind:
            return cond
    return None


def _is_ready(pod: Mapping[str, Any]) -> bool:
    cond = _pod_condition(pod, "Ready")
    return cond is not None and cond.get("status") == "True"


def completion_index(pod: Mapping[str, Any]) -> int | None:
    """The pod's completion index from its annotation (the label as fallback),
    or None when absent or not a non-negative integer."""
    meta = _meta(pod)
    for source in (meta.get("annotations"), meta.get("labels")):
        if isinstance(source, Mapping) and COMPLETION_INDEX in source:
            text = str(source[COMPLETION_INDEX])
            return int(text) if text.isdigit() else None
    return None


def _int_annotation(pod: Mapping[str, Any], name: str) -> int:
    text = str((_meta(pod).get("annotations") or {}).get(name) or "0")
    return int(text) if text.isdigit() else 0


def rfc3339(moment: datetime.datetime) -> str:
    return times.rfc3339(moment)


def parse_time(text: Any) -> datetime.datetime | None:
    """An RFC 3339 timestamp as an aware datetime; None when absent or invalid."""
    if not isinstance(text, str) or not text:
        return None
    try:
        moment = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.UTC)


def _revision(obj: Mapping[str, Any]) -> int | None:
    try:
        return int(str(_meta(obj).get("resourceVersion") or ""))
    except ValueError:
        return None


# --- Job conditions (shared with the CronJob controller) ----------------------------


def find_condition(job: Mapping[str, Any], kind: str) -> Obj | None:
    for cond in (job.get("status") or {}).get("conditions") or ():
        if isinstance(cond, dict) and cond.get("type") == kind:
            return cond
    return None


def _true_condition(job: Mapping[str, Any], kind: str) -> Obj | None:
    cond = find_condition(job, kind)
    return cond if cond is not None and cond.get("status") == "True" else None


def finished_type(job: Mapping[str, Any]) -> str | None:
    """``"Complete"`` or ``"Failed"`` once the Job has that terminal condition."""
    for kind in (COMPLETE, FAILED):
        if _true_condition(job, kind) is not None:
            return kind
    return None


def is_finished(job: Mapping[str, Any]) -> bool:
    return finished_type(job) is not None


def finish_time(job: Mapping[str, Any]) -> datetime.datetime | None:
    """When the Job reached its terminal condition (the condition's transition
    time, as upstream's TTL controller reads it)."""
    for kind in (COMPLETE, FAILED):
        cond = _true_condition(job, kind)
        if cond is not None:
            return parse_time(cond.get("lastTransitionTime"))
    return None


def _new_condition(kind: str, status: str, reason: str, message: str, now: str) -> Obj:
    return {
        "type": kind,
        "status": status,
        "lastProbeTime": now,
        "lastTransitionTime": now,
        "reason": reason,
        "message": message,
    }


def ensure_condition(
    conditions: list[Obj], kind: str, status: str, reason: str, message: str, now: str
) -> bool:
    """Upstream's ensureJobConditionStatus: set the condition when it differs;
    a False condition is never added, only flipped. True when changed."""
    for i, cond in enumerate(conditions):
        if cond.get("type") == kind:
            if (cond.get("status"), cond.get("reason"), cond.get("message")) != (
                status,
                reason,
                message,
            ):
                conditions[i] = _new_condition(kind, status, reason, message, now)
                return True
            return False
    if status != "False":
        conditions.append(_new_condition(kind, status, reason, message, now))
        return True
    return False


# --- completion index sets ------------------------------------------------------------


def parse_indexes(text: Any, completions: int | None) -> set[int]:
    """``"0-2,4"`` → ``{0, 1, 2, 4}``; entries at or beyond ``completions`` and
    malformed entries are dropped, as upstream's parseIndexesFromString does."""
    found: set[int] = set()
    if not isinstance(text, str) or not text:
        return found
    limit = completions if completions is not None else None
    for part in text.split(","):
        first, _, last = part.strip().partition("-")
        if not first.isdigit() or (last and not last.isdigit()):
            continue
        lo = int(first)
        hi = int(last) if last else lo
        if limit is not None:
            hi = min(hi, limit - 1)
        found.update(range(lo, hi + 1))
    return found


def format_indexes(indexes: Iterable[int]) -> str:
    """Compressed, ordered ranges as upstream writes them: three or more
    consecutive indexes become ``a-b``, two stay ``a,b``."""
    out: list[str] = []
    ordered = sorted(set(indexes))
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        first, last = ordered[i], ordered[j]
        if last == first:
            out.append(str(first))
        elif last == first + 1:
            out.append(f"{first},{last}")
        else:
            out.append(f"{first}-{last}")
        i = j + 1
    return ",".join(out)


# --- failure policy -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Verdict:
    """What a failed pod means for its Job.

    ``count``: whether it counts against the back-off limits and in
    ``status.failed``; ``action``: the podFailurePolicy action of the matching
    rule ("" when none matched); ``message``: the FailJob message.
    """

    count: bool
    action: str = ""
    message: str = ""


def is_disrupted(pod: Mapping[str, Any]) -> bool:
    """Taken away by the platform rather than failed by its workload."""
    cond = _pod_condition(pod, "DisruptionTarget")
    if cond is not None and cond.get("status") == "True":
        return True
    return str((pod.get("status") or {}).get("reason") or "") in DISRUPTION_REASONS


def _container_statuses(pod: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    status = pod.get("status") or {}
    return [
        *(status.get("containerStatuses") or []),
        *(status.get("initContainerStatuses") or []),
    ]


def _exit_code_match(pod: Mapping[str, Any], req: Mapping[str, Any]) -> Mapping[str, Any] | None:
    operator = req.get("operator")
    values = {int(v) for v in req.get("values") or () if isinstance(v, int)}
    name = req.get("containerName")
    for cs in _container_statuses(pod):
        terminated = (cs.get("state") or {}).get("terminated")
        if not isinstance(terminated, Mapping):
            continue  # still terminating: no exit code to match
        if name and cs.get("name") != name:
            continue
        code = terminated.get("exitCode")
        if not isinstance(code, int) or code == 0:
            continue
        if (operator == "In" and code in values) or (operator == "NotIn" and code not in values):
            return cs
    return None


def _condition_match(
    pod: Mapping[str, Any], patterns: Sequence[Mapping[str, Any]], disrupted: bool
) -> str | None:
    conditions = [
        c for c in (pod.get("status") or {}).get("conditions") or () if isinstance(c, Mapping)
    ]
    if disrupted and not any(c.get("type") == "DisruptionTarget" for c in conditions):
        # Spot reclaim has no kubelet to add the condition: read it as one.
        conditions.append({"type": "DisruptionTarget", "status": "True"})
    for cond in conditions:
        for pattern in patterns:
            if cond.get("type") == pattern.get("type") and cond.get("status") == pattern.get(
                "status", "True"
            ):
                return str(cond.get("type"))
    return None


def judge_failure(job: Mapping[str, Any], pod: Mapping[str, Any]) -> Verdict:
    """Upstream's matchPodFailurePolicy, plus the disruption rule: a disrupted
    pod is judged only by onPodConditions rules (its exit code is the
    platform's SIGTERM, not the workload's answer) and is ignored when none
    matches."""
    policy = (job.get("spec") or {}).get("podFailurePolicy") or {}
    disrupted = is_disrupted(pod)
    meta = _meta(pod)
    where = f"{meta.get('namespace', '')}/{meta.get('name', '')}"
    for index, rule in enumerate(policy.get("rules") or ()):
        action = str(rule.get("action") or "")
        on_codes = rule.get("onExitCodes")
        on_conditions = rule.get("onPodConditions")
        if on_codes is not None:
            if disrupted:
                continue
            cs = _exit_code_match(pod, on_codes)
            if cs is None:
                continue
            code = ((cs.get("state") or {}).get("terminated") or {}).get("exitCode")
            message = (
                f"Container {cs.get('name')} for pod {where} failed with exit code {code} "
                f"matching {action} rule at index {index}"
            )
        elif on_conditions is not None:
            matched = _condition_match(pod, on_conditions, disrupted)
            if matched is None:
                continue
            message = f"Pod {where} has condition {matched} matching {action} rule at index {index}"
        else:
            continue
        if action == "Ignore":
            return Verdict(False, action)
        if action == "FailJob":
            return Verdict(True, action, message)
        if action in ("Count", "FailIndex"):
            return Verdict(True, action)
    return Verdict(not disrupted)


# --- per-job bookkeeping --------------------------------------------------------------


@dataclasses.dataclass
class Backoff:
    """Failures since the last success and when the last was seen (upstream's
    backoffRecord). Simplified: the failure time is when the controller saw it
    (its clock), not the container's finishedAt, so that a fake clock drives it."""

    failures: int = 0
    last_failure: float = 0.0

    def remaining(self, now: float) -> float:
        if self.failures <= 0:
            return 0.0
        delay = min(DEFAULT_BACKOFF * 2.0 ** min(self.failures - 1, 32), MAX_BACKOFF)
        return max(0.0, delay - (now - self.last_failure))

    def after(self, succeeded: int, failed: int, now: float) -> Backoff:
        """The record once newly seen successes and failures are taken in
        (a success resets it; failures seen together with one start afresh)."""
        if succeeded:
            return Backoff(failed, now if failed else 0.0)
        if failed:
            return Backoff(self.failures + failed, now)
        return Backoff(self.failures, self.last_failure)


@dataclasses.dataclass
class _JobState:
    uid: str
    backoff: Backoff = dataclasses.field(default_factory=Backoff)
    index_backoff: dict[int, Backoff] = dataclasses.field(default_factory=dict)
    # Pods whose finalizer removal was sent but not yet seen by the informer:
    # they are already counted (upstream's uidTrackingExpectations).
    removing: set[str] = dataclasses.field(default_factory=set)


class Freshest:
    """Our own last write per key, preferred to the informer's copy while the
    watch has not caught up with it (read-your-writes). Counting decisions made
    on a stale status would be refused by optimistic concurrency anyway; this
    spares the retries and the spurious work in between."""

    def __init__(self) -> None:
        self._written: dict[str, Obj] = {}

    def remember(self, key: str, obj: Obj) -> None:
        self._written[key] = obj

    def forget(self, key: str) -> None:
        self._written.pop(key, None)

    def pick(self, key: str, cached: Obj) -> Obj:
        written = self._written.get(key)
        if written is None:
            return cached
        mine, theirs = _revision(written), _revision(cached)
        if _uid(written) == _uid(cached) and mine is not None and theirs is not None:
            if mine > theirs:
                return written
        self._written.pop(key, None)
        return cached


@dataclasses.dataclass
class _Finish:
    """Where a finishing Job is heading: the interim condition first, then
    the terminal one (``Complete`` or ``Failed``) once no pod is left running."""

    final: str
    reason: str
    message: str
    # The interim condition is already in the status (read from it).
    recorded: bool = False

    @property
    def interim(self) -> str:
        return SUCCESS_CRITERIA_MET if self.final == COMPLETE else FAILURE_TARGET


@dataclasses.dataclass
class _Sync:
    """What one sync of one Job has worked out (upstream's syncJobCtx)."""

    key: str
    job: Obj
    pods: list[Obj]
    status: Obj
    indexed: bool
    completions: int | None
    per_index_limit: int | None
    uncounted_succeeded: list[str]
    uncounted_failed: list[str]
    active_pods: list[Obj]
    terminating: int
    ready: int
    succeeded: int
    failed: int
    new_backoff: Backoff
    new_index_backoff: dict[int, Backoff]
    succeeded_indexes: set[int] = dataclasses.field(default_factory=set)
    previous_succeeded_indexes: set[int] = dataclasses.field(default_factory=set)
    failed_indexes: set[int] = dataclasses.field(default_factory=set)
    finish: _Finish | None = None


# --- the Job controller -----------------------------------------------------------------


class JobController:
    """Runs Jobs to completion: creates their pods, counts them exactly once,
    applies back-off, failure policies, deadlines and suspension, and sets the
    conditions ``kubectl wait --for=condition=complete`` reads.

    Also runs a small second queue that frees pods whose Job is gone or
    finished from the tracking finalizer. ``TTLAfterFinishedController`` is a
    separate controller (as upstream), started on its own.
    """

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
        self.recorder = recorder or events.EventRecorder(client, "job-controller", self.clock)
        self.controller = controllers.Controller(
            "job-controller", self._sync, workers=workers, clock=self.clock
        )
        self.orphans = controllers.Controller(
            "job-orphan-pods", self._sync_orphan_pod, workers=1, clock=self.clock
        )
        self.expectations = controllers.Expectations(self.clock)
        self._fresh = Freshest()
        self._states: dict[str, _JobState] = {}
        # Indexes the pod handlers keep, so a sync looks only at its own pods
        # and the orphans of its namespace rather than every pod.
        self._owned: dict[str, set[str]] = {}
        self._orphaned: dict[str, set[str]] = {}
        self._pod_homes: dict[str, tuple[str, str]] = {}
        self._jobs: informers.Informer | None = None
        self._pods: informers.Informer | None = None

    # --- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Subscribe to the factory's Job and Pod informers and start the
        workers (they wait for the caches; the caller starts the factory)."""
        self._jobs = self.factory.informer(JOBS)
        self._pods = self.factory.informer(PODS)
        self._jobs.add_handlers(self._job_added, self._job_updated, self._job_deleted)
        self._pods.add_handlers(self._pod_added, self._pod_updated, self._pod_deleted)
        if self._own_recorder:
            self.recorder.start()
        self.controller.start([self._jobs, self._pods])
        self.orphans.start([self._jobs, self._pods])

    async def stop(self) -> None:
        await self.orphans.stop()
        await self.controller.stop()
        if self._own_recorder:
            await self.recorder.stop()

    @property
    def jobs(self) -> informers.Informer:
        if self._jobs is None:
            raise RuntimeError("JobController.start() has not been called")
        return self._jobs

    @property
    def pods(self) -> informers.Informer:
        if self._pods is None:
            raise RuntimeError("JobController.start() has not been called")
        return self._pods

    # --- informer handlers (they only index and enqueue) -------------------------------

    def _job_added(self, job: Obj) -> None:
        self.controller.enqueue(job)

    def _job_updated(self, old: Obj, new: Obj) -> None:
        self.controller.enqueue(new)
        if is_finished(new) and not is_finished(old):
            self._enqueue_tracked_pods(new)

    def _job_deleted(self, job: Obj) -> None:
        self.controller.enqueue(job)
        self._enqueue_tracked_pods(job)

    def _enqueue_tracked_pods(self, job: Obj) -> None:
        """Pods of a Job that is gone or finished still holding our finalizer
        must be let go (upstream's cleanupPodFinalizers)."""
        for pod_key in list(self._owned.get(_uid(job), ())):
            pod = self.pods.get(pod_key)
            if pod is not None and _has_finalizer(pod):
                self.orphans.queue.add(pod_key)

    @staticmethod
    def _job_ref(pod: Mapping[str, Any]) -> Obj | None:
        ref = ownership.controller_ref(dict(pod))
        if ref is None:
            return None
        if ref.get("kind") != "Job" or not str(ref.get("apiVersion", "")).startswith("batch/"):
            return None
        return ref

    def _job_key(self, pod: Mapping[str, Any]) -> str | None:
        ref = self._job_ref(pod)
        if ref is None:
            return None
        return f"{_meta(pod).get('namespace', '')}/{ref.get('name', '')}"

    def _index(self, pod: Obj) -> None:
        key = clients.key_of(pod)
        self._unindex(key)
        ref = ownership.controller_ref(pod)
        if ref is None:
            home = ("orphan", str(_meta(pod).get("namespace", "")))
            self._orphaned.setdefault(home[1], set()).add(key)
        elif self._job_ref(pod) is not None:
            home = ("owned", str(ref.get("uid", "")))
            self._owned.setdefault(home[1], set()).add(key)
        else:
            return  # someone else's pod: never ours to claim
        self._pod_homes[key] = home

    def _unindex(self, key: str) -> None:
        home = self._pod_homes.pop(key, None)
        if home is None:
            return
        table = self._orphaned if home[0] == "orphan" else self._owned
        keys = table.get(home[1])
        if keys is not None:
            keys.discard(key)
            if not keys:
                del table[home[1]]

    def _enqueue_matching_jobs(self, pod: Obj) -> None:
        """An orphan may be adopted by any Job of its namespace whose selector
        matches it."""
        labels = _meta(pod).get("labels") or {}
        if not labels:
            return
        for job in self.jobs.objects(str(_meta(pod).get("namespace", ""))):
            try:
                selector = selectors.label_selector_from_object(
                    (job.get("spec") or {}).get("selector")
                )
            except errors.StatusError:
                continue
            if selector.matches(labels):
                self.controller.enqueue(job)

    def _check_orphan(self, pod: Obj) -> None:
        if not _has_finalizer(pod):
            return
        ref = self._job_ref(pod)
        if ref is None:
            if ownership.controller_ref(pod) is None:
                self.orphans.queue.add(clients.key_of(pod))
            return
        job = self.jobs.get(f"{_meta(pod).get('namespace', '')}/{ref.get('name', '')}")
        if job is None or _uid(job) != ref.get("uid") or is_finished(job):
            self.orphans.queue.add(clients.key_of(pod))

    def _pod_added(self, pod: Obj) -> None:
        self._index(pod)
        job_key = self._job_key(pod)
        if job_key is None:
            if ownership.controller_ref(pod) is None:
                self._enqueue_matching_jobs(pod)
        else:
            self.expectations.creation_observed(job_key)
            if _deleting(pod):
                self.expectations.deletion_observed(job_key, _uid(pod))
            self.controller.queue.add(job_key)
        self._check_orphan(pod)

    def _pod_updated(self, old: Obj, new: Obj) -> None:
        self._index(new)
        old_key, new_key = self._job_key(old), self._job_key(new)
        if new_key is not None:
            if _deleting(new) and not _deleting(old):
                self.expectations.deletion_observed(new_key, _uid(new))
            if _has_finalizer(old) and not _has_finalizer(new):
                self._removal_observed(new_key, _uid(new))
            self.controller.queue.add(new_key)
        if old_key is not None and old_key != new_key:
            self.controller.queue.add(old_key)
        if new_key is None and ownership.controller_ref(new) is None:
            self._enqueue_matching_jobs(new)
        self._check_orphan(new)

    def _pod_deleted(self, pod: Obj) -> None:
        self._unindex(clients.key_of(pod))
        job_key = self._job_key(pod)
        if job_key is not None:
            self.expectations.deletion_observed(job_key, _uid(pod))
            self._removal_observed(job_key, _uid(pod))
            self.controller.queue.add(job_key)

    def _removal_observed(self, job_key: str, pod_uid: str) -> None:
        state = self._states.get(job_key)
        if state is not None:
            state.removing.discard(pod_uid)

    # --- the orphan-pod queue ----------------------------------------------------------

    async def _sync_orphan_pod(self, key: str) -> None:
        """Remove our finalizer from a pod no unfinished Job of ours controls
        (upstream's syncOrphanPod); pods controlled by other kinds keep it."""
        pod = self.pods.get(key)
        if pod is None or not _has_finalizer(pod):
            return
        controller_ref = ownership.controller_ref(pod)
        if controller_ref is not None:
            ref = self._job_ref(pod)
            if ref is None:
                return
            job = self.jobs.get(f"{_meta(pod).get('namespace', '')}/{ref.get('name', '')}")
            if job is not None and _uid(job) == ref.get("uid") and not is_finished(job):
                return  # adopted or still running: the Job's sync counts it
        await self._patch_out_finalizer(pod)

    async def _patch_out_finalizer(self, pod: Mapping[str, Any]) -> None:
        meta = _meta(pod)
        patch = {
            "metadata": {
                "$deleteFromPrimitiveList/finalizers": [TRACKING_FINALIZER],
                "uid": meta.get("uid"),
            }
        }
        try:
            await self.client.patch(
                PODS,
                str(meta.get("namespace", "")),
                str(meta.get("name", "")),
                patch,
                patch_type="strategic",
            )
        except errors.StatusError as err:
            if err.code not in (404, 409):
                raise
            if err.code == 409:
                # uid mismatch: a new pod took the name; the old one is gone.
                return

    # --- sync ---------------------------------------------------------------------------

    def _state(self, key: str, job: Obj) -> _JobState:
        state = self._states.get(key)
        if state is None or state.uid != _uid(job):
            state = _JobState(_uid(job))
            self._states[key] = state
        return state

    def _forget(self, key: str) -> None:
        self._states.pop(key, None)
        self._fresh.forget(key)
        self.expectations.forget(key)

    async def _sync(self, key: str) -> None:
        cached = self.jobs.get(key)
        if cached is None:
            self._forget(key)
            return
        job = self._fresh.pick(key, cached)
        managed_by = (job.get("spec") or {}).get("managedBy")
        if managed_by and managed_by != MANAGED_BY:
            return  # another controller runs this Job (spec.managedBy)
        state = self._state(key, job)
        if is_finished(job):
            # Upstream returns early for finished Jobs; their pods' finalizers
            # were removed on the way, but one may linger after a crash.
            state.backoff = Backoff()
            state.index_backoff.clear()
            await self._release_all(job)
            return
        satisfied = self.expectations.satisfied(key)
        pods = await self._claim_pods(job)
        ctx = self._assess(key, job, pods, state)
        finishing = ctx.finish is not None
        manage_called = False
        active = len(ctx.active_pods)
        if ctx.finish is not None:
            deleted = await self._delete_pods(key, job, ctx.active_pods, release=False)
            if deleted != len(ctx.active_pods) or not satisfied:
                # Remaining pods, or pods we have not seen yet: not finished yet.
                ctx.finish = None
            ctx.ready = 0 if deleted else ctx.ready
            active -= deleted
            ctx.terminating += deleted
        elif satisfied and not _deleting(job):
            active = await self._manage(key, job, ctx, state)
            manage_called = True
        status = ctx.status
        now = rfc3339(self.clock.now())
        if not finishing:
            complete = (
                ctx.succeeded > 0 and active == 0
                if ctx.completions is None
                else ctx.succeeded >= ctx.completions and active == 0
            )
            if complete:
                ctx.finish = _Finish(
                    COMPLETE,
                    REASON_COMPLETIONS_REACHED,
                    "Reached expected number of succeeded pods",
                )
            elif manage_called:
                self._suspension(job, status, active, ctx.terminating, now)
        status["active"] = active
        status["ready"] = max(0, ctx.ready)
        status["terminating"] = ctx.terminating
        await self._track(ctx, state, now)

    def _suspension(self, job: Obj, status: Obj, active: int, terminating: int, now: str) -> None:
        """The Suspended condition, and startTime: cleared once a suspended Job
        has no pods left, set afresh on resume so activeDeadlineSeconds counts
        only the time the Job is really active."""
        conditions: list[Obj] = status.setdefault("conditions", [])
        if (job.get("spec") or {}).get("suspend"):
            if ensure_condition(
                conditions, SUSPENDED, "True", "JobSuspended", "Job suspended", now
            ):
                self.recorder.record(job, "Normal", "Suspended", "Job suspended")
            if active == 0 and terminating == 0:
                status.pop("startTime", None)
        elif ensure_condition(conditions, SUSPENDED, "False", "JobResumed", "Job resumed", now):
            self.recorder.record(job, "Normal", "Resumed", "Job resumed")
            status["startTime"] = now
        if not conditions:
            status.pop("conditions", None)

    async def _claim_pods(self, job: Obj) -> list[Obj]:
        """The Job's pods: its own, plus orphans its selector matches (adopted,
        with the tracking finalizer so that they are counted like the rest)."""
        meta = _meta(job)
        namespace = str(meta.get("namespace", ""))
        keys = set(self._owned.get(_uid(job), ())) | set(self._orphaned.get(namespace, ()))
        candidates = [p for k in sorted(keys) if (p := self.pods.get(k)) is not None]
        try:
            selector = selectors.label_selector_from_object((job.get("spec") or {}).get("selector"))
        except errors.StatusError:
            selector = selectors.LabelSelector.nothing()
        orphans = {_uid(p) for p in candidates if ownership.controller_ref(p) is None}
        claimed = await ownership.claim(
            self.client, PODS, job, candidates, selector, can_adopt=lambda: not _deleting(job)
        )
        out: list[Obj] = []
        for pod in claimed:
            if (
                _uid(pod) in orphans
                and not _has_finalizer(pod)
                and _is_active(pod)
                and not is_finished(job)
            ):
                pod = await self._patch_in_finalizer(pod)
            out.append(pod)
        return out

    async def _patch_in_finalizer(self, pod: Obj) -> Obj:
        meta = _meta(pod)
        try:
            return await self.client.patch(
                PODS,
                str(meta.get("namespace", "")),
                str(meta.get("name", "")),
                {"metadata": {"finalizers": [TRACKING_FINALIZER], "uid": meta.get("uid")}},
                patch_type="strategic",
            )
        except errors.StatusError as err:
            if err.code in (404, 409, 422):
                return pod
            raise

    def _assess(self, key: str, job: Obj, pods: list[Obj], state: _JobState) -> _Sync:
        """Count what the pods say, and decide whether the Job is finishing."""
        spec = job.get("spec") or {}
        status = values.clone(job.get("status") or {})
        completions = spec.get("completions")
        completions = completions if isinstance(completions, int) else None
        indexed = spec.get("completionMode") == "Indexed" and completions is not None
        per_index = spec.get("backoffLimitPerIndex") if indexed else None
        per_index_limit = per_index if isinstance(per_index, int) else None
        uncounted = status.get("uncountedTerminatedPods") or {}
        unc_succeeded = [str(u) for u in uncounted.get("succeeded") or ()]
        unc_failed = [str(u) for u in uncounted.get("failed") or ()]
        known = set(unc_succeeded) | set(unc_failed)

        def valid(pod: Obj) -> bool:
            if not indexed:
                return True
            ix = completion_index(pod)
            return ix is not None and completions is not None and ix < completions

        tracked = [
            p
            for p in pods
            if _has_finalizer(p) and _uid(p) not in state.removing and _uid(p) not in known
        ]
        new_succeeded = [p for p in tracked if _phase(p) == SUCCEEDED and valid(p)]
        new_failed = [
            p for p in tracked if _phase(p) != SUCCEEDED and self._failed(job, p) and valid(p)
        ]
        counted_failed = [p for p in new_failed if judge_failure(job, p).count]
        active_pods = [p for p in pods if _is_active(p)]
        now = self.clock.monotonic()
        ctx = _Sync(
            key=key,
            job=job,
            pods=pods,
            status=status,
            indexed=indexed,
            completions=completions,
            per_index_limit=per_index_limit,
            uncounted_succeeded=unc_succeeded,
            uncounted_failed=unc_failed,
            active_pods=active_pods,
            terminating=sum(1 for p in pods if _is_terminating(p)),
            ready=sum(1 for p in active_pods if _is_ready(p)),
            succeeded=int(status.get("succeeded") or 0) + len(new_succeeded) + len(unc_succeeded),
            failed=int(status.get("failed") or 0) + len(counted_failed) + len(unc_failed),
            new_backoff=state.backoff.after(len(new_succeeded), len(new_failed), now),
            new_index_backoff=dict(state.index_backoff),
        )
        if per_index_limit is not None:
            for pod in new_failed:
                ix = completion_index(pod)
                if ix is not None:
                    failures = (
                        _int_annotation(pod, INDEX_FAILURE_COUNT)
                        + _int_annotation(pod, INDEX_IGNORED_FAILURE_COUNT)
                        + 1
                    )
                    ctx.new_index_backoff[ix] = Backoff(failures, now)
        if not status.get("startTime") and not spec.get("suspend"):
            status["startTime"] = rfc3339(self.clock.now())
        if indexed:
            self._index_sets(ctx)
        ctx.finish = self._finishing(job, pods, ctx)
        return ctx

    def _failed(self, job: Obj, pod: Obj) -> bool:
        """Upstream's isPodFailed: a terminating pod counts as failed at once,
        unless the Job replaces only Failed pods (podReplacementPolicy Failed, or
        a podFailurePolicy, which needs the final status to judge)."""
        if _only_replace_failed(job):
            return _phase(pod) == FAILED
        if _phase(pod) == FAILED:
            return True
        return _deleting(pod) and _phase(pod) != SUCCEEDED

    def _finishing(self, job: Obj, pods: list[Obj], ctx: _Sync) -> _Finish | None:
        spec = job.get("spec") or {}
        target = _true_condition(job, FAILURE_TARGET)
        if target is not None:
            return _Finish(
                FAILED, str(target.get("reason", "")), str(target.get("message", "")), True
            )
        met = _true_condition(job, SUCCESS_CRITERIA_MET)
        if met is not None:
            return _Finish(COMPLETE, str(met.get("reason", "")), str(met.get("message", "")), True)
        if spec.get("podFailurePolicy"):
            for pod in pods:
                if self._failed(job, pod):
                    verdict = judge_failure(job, pod)
                    if verdict.action == "FailJob":
                        return _Finish(FAILED, REASON_POD_FAILURE_POLICY, verdict.message)
        backoff_limit = spec.get("backoffLimit")
        backoff_limit = backoff_limit if isinstance(backoff_limit, int) else 6
        exceeds = ctx.per_index_limit is None and ctx.failed > backoff_limit
        if exceeds or _past_backoff_limit_on_failure(job, pods):
            return _Finish(
                FAILED, REASON_BACKOFF_LIMIT, "Job has reached the specified backoff limit"
            )
        deadline = spec.get("activeDeadlineSeconds")
        started = parse_time(ctx.status.get("startTime"))
        if isinstance(deadline, int) and started is not None and not spec.get("suspend"):
            left = deadline - (self.clock.now() - started).total_seconds()
            if left <= 0:
                return _Finish(
                    FAILED, REASON_DEADLINE, "Job was active longer than specified deadline"
                )
            self.controller.queue.add_after(ctx.key, left)
        if ctx.indexed:
            if ctx.per_index_limit is not None:
                max_failed = spec.get("maxFailedIndexes")
                total = len(ctx.failed_indexes)
                if isinstance(max_failed, int) and total > max_failed:
                    return _Finish(
                        FAILED,
                        REASON_MAX_FAILED_INDEXES,
                        "Job has exceeded the specified maximal number of failed indexes",
                    )
                if (
                    total
                    and ctx.completions is not None
                    and total + len(ctx.succeeded_indexes) >= ctx.completions
                ):
                    return _Finish(FAILED, REASON_FAILED_INDEXES, "Job has failed indexes")
            message = _match_success_policy(spec, ctx.completions, ctx.succeeded_indexes)
            if message is not None:
                return _Finish(COMPLETE, REASON_SUCCESS_POLICY, message)
        return None

    def _index_sets(self, ctx: _Sync) -> None:
        """completedIndexes (and failedIndexes) including pods not yet counted."""
        completions = ctx.completions
        ctx.previous_succeeded_indexes = parse_indexes(
            ctx.status.get("completedIndexes"), completions
        )
        newly = {
            ix
            for p in ctx.pods
            if _phase(p) == SUCCEEDED
            and _has_finalizer(p)
            and (ix := completion_index(p)) is not None
            and completions is not None
            and ix < completions
        }
        ctx.succeeded_indexes = ctx.previous_succeeded_indexes | newly
        ctx.succeeded = len(ctx.succeeded_indexes)
        if ctx.per_index_limit is not None:
            failed = parse_indexes(ctx.status.get("failedIndexes"), completions)
            for pod in ctx.pods:
                ix = completion_index(pod)
                if (
                    ix is not None
                    and completions is not None
                    and ix < completions
                    and _has_finalizer(pod)
                    and self._index_failed(ctx.job, pod, ctx.per_index_limit)
                ):
                    failed.add(ix)
            ctx.failed_indexes = failed

    def _index_failed(self, job: Obj, pod: Obj, limit: int) -> bool:
        """Upstream's isIndexFailed: FailIndex, or a counted failure that
        exhausts the index's back-off limit."""
        if not self._failed(job, pod):
            return False
        verdict = judge_failure(job, pod)
        if verdict.action == "FailIndex":
            return True
        return verdict.count and _int_annotation(pod, INDEX_FAILURE_COUNT) >= limit

    # --- managing pods -----------------------------------------------------------------

    async def _manage(self, key: str, job: Obj, ctx: _Sync, state: _JobState) -> int:
        """Create or delete pods so that the right number are active; returns
        how many are active after this sync's requests."""
        spec = job.get("spec") or {}
        active_pods = ctx.active_pods
        active = len(active_pods)
        if spec.get("suspend"):
            removed = await self._delete_pods(key, job, _for_removal(active_pods), release=True)
            return active - removed
        parallelism = spec.get("parallelism")
        parallelism = parallelism if isinstance(parallelism, int) else 1
        if ctx.completions is None:
            want = active if ctx.succeeded > 0 else parallelism
        else:
            want = max(0, min(parallelism, ctx.completions - ctx.succeeded))
        if ctx.indexed and ctx.per_index_limit is not None and ctx.failed_indexes:
            # Active pods of an index that has failed are terminated (counted).
            doomed = [p for p in active_pods if completion_index(p) in ctx.failed_indexes]
            if doomed:
                removed = await self._delete_pods(key, job, doomed, release=False)
                return active - removed
        to_remove = _removal_candidates(ctx, active_pods, max(0, active - want))
        if to_remove:
            to_remove = to_remove[:MAX_POD_CREATE_DELETE_PER_SYNC]
            removed = await self._delete_pods(key, job, to_remove, release=True)
            return active - removed
        blocked = ctx.terminating if _only_replace_failed(job) else 0
        diff = want - blocked - active
        if diff <= 0:
            return active
        now = self.clock.monotonic()
        if ctx.per_index_limit is None:
            wait = ctx.new_backoff.remaining(now)
            if wait > 0:
                self.controller.queue.add_after(key, wait)
                return active
        diff = min(diff, MAX_POD_CREATE_DELETE_PER_SYNC)
        indexes: list[int | None] = [None] * diff
        if ctx.indexed:
            pending = _pending_indexes(ctx, job, diff)
            if ctx.per_index_limit is not None:
                waits = {
                    ix: b.remaining(now) if (b := ctx.new_index_backoff.get(ix)) else 0.0
                    for ix in pending
                }
                ready_now = [ix for ix in pending if waits[ix] <= 0]
                if not ready_now and pending:
                    self.controller.queue.add_after(key, min(waits.values()))
                    return active
                pending = ready_now
            indexes = list(pending)
        if not indexes:
            return active
        created = await self._create_pods(key, job, ctx, indexes)
        return active + created

    async def _create_pods(self, key: str, job: Obj, ctx: _Sync, indexes: list[int | None]) -> int:
        """Create in slow-start batches (1, 2, 4, ...): a failing request
        stops the rest, so a quota or admission error costs one call, not N."""
        self.expectations.expect_creations(key, len(indexes))
        created = 0
        position = 0
        batch = min(len(indexes), SLOW_START_INITIAL_BATCH)
        failure: BaseException | None = None
        while position < len(indexes):
            chunk = indexes[position : position + batch]
            position += len(chunk)
            results = await asyncio.gather(
                *(self._create_pod(job, ctx, ix) for ix in chunk), return_exceptions=True
            )
            errors_seen = [r for r in results if isinstance(r, BaseException)]
            created += len(results) - len(errors_seen)
            if errors_seen:
                self.expectations.lower_expectations(
                    key, adds=len(errors_seen) + (len(indexes) - position)
                )
                failure = errors_seen[0]
                break
            batch = min(2 * batch, len(indexes) - position)
        if failure is not None:
            raise failure
        return created

    async def _create_pod(self, job: Obj, ctx: _Sync, index: int | None) -> None:
        pod = self._pod_from_template(job, ctx, index)
        try:
            made = await self.client.create(PODS, pod)
        except errors.StatusError as err:
            self.recorder.record(job, "Warning", "FailedCreate", f"Error creating: {err.message}")
            raise
        self.recorder.record(
            job, "Normal", "SuccessfulCreate", f"Created pod: {_meta(made).get('name', '')}"
        )

    def _pod_from_template(self, job: Obj, ctx: _Sync, index: int | None) -> Obj:
        """Upstream's GetPodFromTemplate plus the Job's additions: the tracking
        finalizer, the controller reference and, for Indexed Jobs, the index
        (annotation, label, env, hostname, name prefix)."""
        meta = _meta(job)
        name = str(meta.get("name", ""))
        template = values.clone((job.get("spec") or {}).get("template") or {})
        tmeta = template.get("metadata") or {}
        labels = dict(tmeta.get("labels") or {})
        annotations = dict(tmeta.get("annotations") or {})
        finalizers = list(tmeta.get("finalizers") or [])
        if TRACKING_FINALIZER not in finalizers:
            finalizers.append(TRACKING_FINALIZER)
        pod_spec: Obj = template.get("spec") or {}
        generate_name = f"{name}-"
        if index is not None:
            annotations[COMPLETION_INDEX] = str(index)
            labels[COMPLETION_INDEX] = str(index)
            for container in [
                *(pod_spec.get("initContainers") or []),
                *(pod_spec.get("containers") or []),
            ]:
                env = container.setdefault("env", [])
                if not any(e.get("name") == COMPLETION_INDEX_ENV for e in env):
                    env.append(
                        {
                            "name": COMPLETION_INDEX_ENV,
                            "valueFrom": {
                                "fieldRef": {
                                    "apiVersion": "v1",
                                    "fieldPath": f"metadata.annotations['{COMPLETION_INDEX}']",
                                }
                            },
                        }
                    )
            if not pod_spec.get("hostname"):
                pod_spec["hostname"] = f"{name}-{index}"
            generate_name = _indexed_generate_name(name, index)
            if ctx.per_index_limit is not None:
                failures, ignored = self._index_failure_counts(ctx, index)
                annotations[INDEX_FAILURE_COUNT] = str(failures)
                if ignored:
                    annotations[INDEX_IGNORED_FAILURE_COUNT] = str(ignored)
        pod_meta: Obj = {
            "generateName": generate_name,
            "namespace": meta.get("namespace", ""),
            "labels": labels,
            "finalizers": finalizers,
            "ownerReferences": [ownership.owner_reference(job)],
        }
        if annotations:
            pod_meta["annotations"] = annotations
        return {"apiVersion": "v1", "kind": "Pod", "metadata": pod_meta, "spec": pod_spec}

    def _index_failure_counts(self, ctx: _Sync, index: int) -> tuple[int, int]:
        """Failures so far of one index, carried from pod to replacement pod in
        annotations (upstream's getNewIndexFailureCounts)."""
        failures = ignored = 0
        for pod in ctx.pods:
            if completion_index(pod) != index:
                continue
            count = _int_annotation(pod, INDEX_FAILURE_COUNT)
            skipped = _int_annotation(pod, INDEX_IGNORED_FAILURE_COUNT)
            if self._failed(ctx.job, pod):
                if judge_failure(ctx.job, pod).count:
                    count += 1
                else:
                    skipped += 1
            failures, ignored = max(failures, count), max(ignored, skipped)
        return failures, ignored

    async def _delete_pods(self, key: str, job: Obj, pods: Sequence[Obj], *, release: bool) -> int:
        """Delete pods; with ``release`` their finalizer goes first so they are
        not counted (upstream's deleteJobPods: suspension, excess pods),
        without it they will be counted as failed (deleteActivePods: a Job
        that is finishing). Returns how many deletions succeeded."""
        if not pods:
            return 0
        state = self._states.get(key)
        self.expectations.expect_deletions_of(key, [_uid(p) for p in pods])

        async def one(pod: Obj) -> bool:
            meta = _meta(pod)
            uid = _uid(pod)
            try:
                if release and _has_finalizer(pod):
                    if state is not None:
                        state.removing.add(uid)
                    try:
                        await self._patch_out_finalizer(pod)
                    except BaseException:
                        if state is not None:
                            state.removing.discard(uid)
                        raise
                await self.client.delete(
                    PODS,
                    str(meta.get("namespace", "")),
                    str(meta.get("name", "")),
                    clients.DeleteOptions(preconditions=clients.Preconditions(uid=uid)),
                )
            except errors.StatusError as err:
                if err.code == 404:
                    self.expectations.deletion_observed(key, uid)
                    return True
                self.expectations.deletion_observed(key, uid)
                self.recorder.record(
                    job, "Warning", "FailedDelete", f"Error deleting: {err.message}"
                )
                raise
            self.recorder.record(
                job, "Normal", "SuccessfulDelete", f"Deleted pod: {meta.get('name', '')}"
            )
            return True

        results = await asyncio.gather(*(one(p) for p in pods), return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            raise failures[0]
        return len(results)

    async def _release_all(self, job: Obj) -> None:
        for pod_key in sorted(self._owned.get(_uid(job), ())):
            pod = self.pods.get(pod_key)
            if pod is not None and _has_finalizer(pod):
                await self._patch_out_finalizer(pod)

    # --- counting ---------------------------------------------------------------------

    async def _track(self, ctx: _Sync, state: _JobState, now: str) -> None:
        """Upstream's trackJobStatusAndRemoveFinalizers: record finished pods as
        uncounted, remove their finalizers, move them into the counters, and
        finish the Job when nothing is left in flight."""
        job = ctx.job
        status = ctx.status
        finish = ctx.finish
        finishing_failed = finish is not None and finish.final == FAILED
        to_release: list[Obj] = []
        new_indexes: set[int] = set()
        unc_succeeded = ctx.uncounted_succeeded
        unc_failed = ctx.uncounted_failed
        reached_max = False
        for pod in ctx.pods:
            uid = _uid(pod)
            if not _has_finalizer(pod) or uid in state.removing:
                continue
            failed = self._failed(job, pod)
            if not self._can_release(job, finish, pod, failed):
                continue
            to_release.append(pod)
            ix = completion_index(pod)
            in_range = not ctx.indexed or (
                ix is not None and ctx.completions is not None and ix < ctx.completions
            )
            if _phase(pod) == SUCCEEDED and uid not in unc_failed:
                if ctx.indexed:
                    if in_range and ix is not None and ix not in ctx.previous_succeeded_indexes:
                        new_indexes.add(ix)
                elif uid not in unc_succeeded:
                    unc_succeeded.append(uid)
            elif (failed or finishing_failed) and uid not in unc_failed and in_range:
                if judge_failure(job, pod).count:
                    unc_failed.append(uid)
            if len(unc_succeeded) + len(unc_failed) >= MAX_UNCOUNTED_PODS:
                reached_max = True
                break
        if ctx.indexed:
            indexes = ctx.previous_succeeded_indexes | new_indexes
            status["completedIndexes"] = format_indexes(indexes)
            status["succeeded"] = len(indexes)
            if ctx.per_index_limit is not None:
                status["failedIndexes"] = format_indexes(ctx.failed_indexes)
        status["uncountedTerminatedPods"] = _uncounted(unc_succeeded, unc_failed)
        if finish is not None and not finish.recorded:
            status.setdefault("conditions", []).append(
                _new_condition(finish.interim, "True", finish.reason, finish.message, now)
            )
            finish.recorded = True
        job = await self._write_status(ctx.key, job, status)
        # The failures now sit in the status: the back-off may count them.
        state.backoff = ctx.new_backoff
        state.index_backoff = ctx.new_index_backoff
        removed, release_error = await self._release(state, to_release)
        still_held = {_uid(p) for p in ctx.pods if _has_finalizer(p)} | state.removing
        still_held -= removed
        status = values.clone(job.get("status") or {})
        unc = status.get("uncountedTerminatedPods") or {}
        keep_succeeded = [u for u in unc.get("succeeded") or () if u in still_held]
        keep_failed = [u for u in unc.get("failed") or () if u in still_held]
        if not ctx.indexed:
            status["succeeded"] = (
                int(status.get("succeeded") or 0)
                + len(unc.get("succeeded") or ())
                - len(keep_succeeded)
            )
        status["failed"] = (
            int(status.get("failed") or 0) + len(unc.get("failed") or ()) - len(keep_failed)
        )
        status["uncountedTerminatedPods"] = _uncounted(keep_succeeded, keep_failed)
        finished = (
            finish is not None
            and not reached_max
            and not keep_succeeded
            and not keep_failed
            and ctx.terminating == 0
        )
        if finish is not None and finished:
            status.setdefault("conditions", []).append(
                _new_condition(finish.final, "True", finish.reason, finish.message, now)
            )
            if finish.final == COMPLETE:
                status["completionTime"] = now
        job = await self._write_status(ctx.key, job, status)
        if finish is not None and finished:
            if finish.final == COMPLETE:
                self.recorder.record(job, "Normal", "Completed", "Job completed")
            else:
                self.recorder.record(job, "Warning", finish.reason, finish.message)
        if release_error is not None:
            # Partial progress is recorded; the rest is retried with back-off.
            raise release_error
        if reached_max:
            self.controller.queue.add(ctx.key)

    @staticmethod
    def _can_release(job: Obj, finish: _Finish | None, pod: Obj, failed: bool) -> bool:
        if _deleting(job) or finish is not None or _phase(pod) == SUCCEEDED:
            return True
        if not failed:
            return False
        # A failure policy judges the final status: wait for the Failed phase.
        return not ((job.get("spec") or {}).get("podFailurePolicy") and _phase(pod) != FAILED)

    async def _release(
        self, state: _JobState, pods: list[Obj]
    ) -> tuple[set[str], BaseException | None]:
        """Remove the tracking finalizer: the uids whose removal succeeded, and
        the first failure (if any) once all were tried."""
        if not pods:
            return set(), None

        async def one(pod: Obj) -> str:
            uid = _uid(pod)
            state.removing.add(uid)
            try:
                await self._patch_out_finalizer(pod)
            except BaseException:
                state.removing.discard(uid)
                raise
            return uid

        results = await asyncio.gather(*(one(p) for p in pods), return_exceptions=True)
        done = {r for r in results if isinstance(r, str)}
        failures = [r for r in results if isinstance(r, BaseException)]
        return done, (failures[0] if failures else None)

    async def _write_status(self, key: str, job: Obj, status: Obj) -> Obj:
        if status == (job.get("status") or {}):
            return job
        body = dict(job)
        body["status"] = status
        updated = await self.client.update_status(JOBS, body)
        updated = clients.copy_with_type(JOBS, updated)
        self._fresh.remember(key, updated)
        return updated


def _uncounted(succeeded: list[str], failed: list[str]) -> Obj:
    out: Obj = {}
    if succeeded:
        out["succeeded"] = list(succeeded)
    if failed:
        out["failed"] = list(failed)
    return out


def _only_replace_failed(job: Mapping[str, Any]) -> bool:
    spec = job.get("spec") or {}
    return spec.get("podReplacementPolicy") == "Failed" or bool(spec.get("podFailurePolicy"))


def _past_backoff_limit_on_failure(job: Mapping[str, Any], pods: Iterable[Obj]) -> bool:
    """With restartPolicy OnFailure pods restart in place: their restarts count
    against backoffLimit (upstream's pastBackoffLimitOnFailure)."""
    spec = job.get("spec") or {}
    if ((spec.get("template") or {}).get("spec") or {}).get("restartPolicy") != "OnFailure":
        return False
    restarts = 0
    for pod in pods:
        if _phase(pod) in ("Running", "Pending"):
            restarts += sum(int(cs.get("restartCount") or 0) for cs in _container_statuses(pod))
    limit = spec.get("backoffLimit")
    limit = limit if isinstance(limit, int) else 6
    return restarts > 0 if limit == 0 else restarts >= limit


def _indexed_generate_name(name: str, index: int) -> str:
    suffix = f"-{index}-"
    prefix = name + suffix
    if len(prefix) > 58:  # upstream's MaxGeneratedNameLength
        prefix = prefix[: 58 - len(suffix)] + suffix
    return prefix


def _removal_order(pod: Obj) -> tuple[int, int, int, int, float]:
    """Upstream's ActivePods order (the first are removed first): unscheduled,
    then pending, not ready, more restarts, newer."""
    phase_rank = {"Pending": 0, "Unknown": 1, "Running": 2}.get(_phase(pod), 0)
    restarts = sum(int(cs.get("restartCount") or 0) for cs in _container_statuses(pod))
    created = parse_time(_meta(pod).get("creationTimestamp"))
    return (
        1 if (pod.get("spec") or {}).get("nodeName") else 0,
        phase_rank,
        1 if _is_ready(pod) else 0,
        -restarts,
        -(created.timestamp() if created else 0.0),
    )


def _for_removal(pods: Iterable[Obj]) -> list[Obj]:
    return sorted(pods, key=_removal_order)


def _removal_candidates(ctx: _Sync, active_pods: list[Obj], at_least: int) -> list[Obj]:
    """Upstream's activePodsForRemoval: for Indexed Jobs, pods with a bad or
    duplicate index first, then by ActivePods order."""
    remove: list[Obj] = []
    left = list(active_pods)
    if ctx.indexed:
        left = []
        by_index: dict[int, list[Obj]] = {}
        for pod in active_pods:
            ix = completion_index(pod)
            if ix is None or ctx.completions is None or ix >= ctx.completions:
                remove.append(pod)
            else:
                by_index.setdefault(ix, []).append(pod)
        for group in by_index.values():
            ordered = _for_removal(group)
            remove.extend(ordered[:-1])
            left.append(ordered[-1])
    if len(remove) < at_least:
        remove.extend(_for_removal(left)[: at_least - len(remove)])
    return remove


def _pending_indexes(ctx: _Sync, job: Obj, count: int) -> list[int]:
    """The lowest indexes with no success, no failure and no pod running."""
    if ctx.completions is None:
        return []
    taken = set(ctx.succeeded_indexes) | set(ctx.failed_indexes)
    for pod in ctx.active_pods:
        ix = completion_index(pod)
        if ix is not None:
            taken.add(ix)
    if _only_replace_failed(job):
        for pod in ctx.pods:
            if _is_terminating(pod) and (ix := completion_index(pod)) is not None:
                taken.add(ix)
    out: list[int] = []
    for ix in range(ctx.completions):
        if ix not in taken:
            out.append(ix)
            if len(out) >= count:
                break
    return out


def _match_success_policy(
    spec: Mapping[str, Any], completions: int | None, succeeded: set[int]
) -> str | None:
    """Upstream's matchSuccessPolicy for Indexed Jobs: the first rule whose
    indexes (all, or succeededCount of them) have succeeded."""
    policy = spec.get("successPolicy") or {}
    if not succeeded or not policy:
        return None
    for index, rule in enumerate(policy.get("rules") or ()):
        count = rule.get("succeededCount")
        wanted = rule.get("succeededIndexes")
        if wanted is not None:
            required = parse_indexes(wanted, completions)
            if not required:
                continue
            matched = len(required & succeeded)
            if (count is None and matched == len(required)) or (
                isinstance(count, int) and matched >= count
            ):
                return f"Matched rules at index {index}"
        elif isinstance(count, int) and len(succeeded) >= count:
            return f"Matched rules at index {index}"
    return None


# --- TTL after finished ---------------------------------------------------------------


class TTLAfterFinishedController:
    """Deletes Jobs ``ttlSecondsAfterFinished`` after they finished (upstream's
    ttlafterfinished controller), with Background propagation so the garbage
    collector takes their pods. Before deleting it reads the Job afresh: a TTL
    raised meanwhile must win over a stale cache."""

    def __init__(
        self,
        client: clients.ApiClient,
        factory: informers.InformerFactory,
        *,
        clock: clocks.Clock | None = None,
        recorder: events.EventRecorder | None = None,
        workers: int = 1,
    ) -> None:
        self.client = client
        self.factory = factory
        self.clock: clocks.Clock = clock or clocks.SystemClock()
        self.recorder = recorder
        self.controller = controllers.Controller(
            "ttl-after-finished-controller", self._sync, workers=workers, clock=self.clock
        )
        self._jobs: informers.Informer | None = None

    async def start(self) -> None:
        self._jobs = self.factory.informer(JOBS)

        def changed(job: Obj) -> None:
            if _needs_cleanup(job):
                self.controller.enqueue(job)

        self._jobs.add_handlers(changed, lambda _old, new: changed(new))
        self.controller.start([self._jobs])

    async def stop(self) -> None:
        await self.controller.stop()

    async def _sync(self, key: str) -> None:
        if self._jobs is None:
            return
        job = self._jobs.get(key)
        if job is None or self._wait(key, job):
            return
        namespace, name = clients.split_key(key)
        try:
            fresh = await self.client.get(JOBS, namespace, name)
        except errors.StatusError as err:
            if err.code == 404:
                return
            raise
        if self._wait(key, fresh):
            return
        options = clients.DeleteOptions(
            propagation_policy="Background",
            preconditions=clients.Preconditions(uid=_uid(fresh)),
        )
        try:
            await self.client.delete(JOBS, namespace, name, options)
        except errors.StatusError as err:
            if err.code not in (404, 409):
                raise

    def _wait(self, key: str, job: Obj) -> bool:
        """True unless the Job's TTL has run out; requeues for when it will."""
        if not _needs_cleanup(job):
            return True
        finished = finish_time(job)
        ttl = (job.get("spec") or {}).get("ttlSecondsAfterFinished")
        if finished is None or not isinstance(ttl, int):
            return True
        left = (finished + datetime.timedelta(seconds=ttl) - self.clock.now()).total_seconds()
        if left > 0:
            self.controller.queue.add_after(key, left)
            return True
        return False


def _needs_cleanup(job: Mapping[str, Any]) -> bool:
    ttl = (job.get("spec") or {}).get("ttlSecondsAfterFinished")
    return isinstance(ttl, int) and is_finished(job) and not _deleting(job)
