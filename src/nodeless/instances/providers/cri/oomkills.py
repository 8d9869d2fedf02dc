"""OOM kills as the kernel logs them: which container's process the OOM
killer took.

containerd 1.6 learns of an OOM kill from an eventfd on the container's
memory cgroup and can lose it: on a busy host the shim's OOM watcher runs
after the exit was handled and the cgroup removed, sees the cgroup gone and
drops the event, and the container reads ``Error`` for good
(containerd/containerd#8893, #8180; fixed upstream in late 2025 by #12714). On a cgroup
v2 host the pod cgroup's ``memory.events`` counts its containers' kills and
answers instead; on v1 the kill is counted only in the victim's own memory
cgroup, which the runtime removes with the task, before it reports the exit.

The kernel's record stays: before the OOM killer sends its SIGKILL it logs
``oom-kill:constraint=...,task_memcg=<cgroup of the victim>,task=...`` to
the ring buffer (``/dev/kmsg``), and the victim's cgroup path ends in the
container's ID (runc's cgroupfs path is ``<cgroup parent>/<container ID>``).
cAdvisor reads the same lines for the kubelet's OOM events. The kernel
rate-limits that line (ten in five seconds); a kill it left out reads as the
runtime says.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

KMSG = Path("/dev/kmsg")
# a /dev/kmsg read returns one record and fails on a buffer shorter than it
# (records are at most about 8 KiB with their dictionary)
RECORD_BUFFER = 16 * 1024
OOM_KILL_PREFIX = "oom-kill:"
TASK_MEMCG = "task_memcg="


def logged_for(container_id: str, kmsg: Path = KMSG) -> bool:
    """Whether the kernel's log still holds an OOM kill in the container's
    memory cgroup (False when it cannot be read, or the record has been
    overwritten by the ring buffer's newer ones)."""
    if not container_id:
        return False
    try:
        fd = os.open(kmsg, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        return any(_victim_is(summary, container_id) for summary in _summaries(_records(fd)))
    finally:
        os.close(fd)


# records to look through for the rest of a summary split by other CPUs' lines
SUMMARY_SPREAD = 16
SUMMARY_END = ",task="  # the summary's last piece: the victim's name, PID and UID


def _summaries(records: list[str]) -> list[str]:
    """The OOM killer's one-line summaries, each joined up again: the kernel
    prints it in pieces (``pr_cont``: ",oom_memcg=", the path, ...), and a
    piece printed after another CPU's line is a record of its own."""
    summaries: list[str] = []
    partial: str | None = None
    left = 0
    for record in records:
        _, _, message = record.partition(";")
        if message.startswith(OOM_KILL_PREFIX):
            if partial is not None:
                summaries.append(partial)
            partial, left = message, SUMMARY_SPREAD
        elif partial is None:
            continue
        elif message.startswith((",", "/")):
            partial += message
        else:
            left -= 1
        if partial is not None and (SUMMARY_END in partial or left <= 0):
            summaries.append(partial)
            partial = None
    if partial is not None:
        summaries.append(partial)
    return summaries


def _victim_is(summary: str, container_id: str) -> bool:
    # "oom-kill:constraint=...,task_memcg=/a/b/<id>,task=dd,..."
    for field in summary[len(OOM_KILL_PREFIX) :].split(","):
        if field.startswith(TASK_MEMCG):
            leaf = field[len(TASK_MEMCG) :].rstrip("/").rsplit("/", 1)[-1]
            # the systemd driver's leaf is "cri-containerd-<ID>.scope"
            return leaf.removesuffix(".scope").rsplit("-", 1)[-1] == container_id
    return False


def _records(fd: int) -> list[str]:
    """The log's records from its oldest kept one to now, without waiting
    for more: /dev/kmsg returns one record a read (a regular file, as in
    tests, several), EAGAIN at the end, EPIPE when the ring buffer overwrote
    the record about to be read (the next read goes on from the oldest left)."""
    chunks: list[bytes] = []
    while True:
        try:
            chunk = os.read(fd, RECORD_BUFFER)
        except BlockingIOError:
            break
        except OSError as e:
            if e.errno == errno.EPIPE:
                continue
            break
        if not chunk:
            break
        chunks.append(chunk)
    text = b"".join(chunks).decode("utf-8", "replace")
    # continuation lines (" SUBSYSTEM=memory") carry no kill
    return [line for line in text.splitlines() if line and not line.startswith(" ")]
