"""pytest plugin: run kr8s's own test suite against a real `nodeless up`.

kr8s ships its tests (``kr8s/tests``) and their ``conftest.py`` inside the
wheel.  That conftest expects a session fixture ``k8s_cluster`` (upstream it
comes from pytest-kind's ``KindCluster``) and uses three things on it:

* ``kubeconfig_path`` -- a ``pathlib.Path`` to a kubeconfig for the cluster;
* ``kubectl_path``    -- the kubectl binary to run (``kubectl proxy``);
* ``kubectl(*args)``  -- run kubectl against the cluster, return its stdout
  as ``str`` and raise ``subprocess.CalledProcessError`` on failure.

kr8s's tests call ``kr8s.api()`` without arguments, so the fixture also
points ``KUBECONFIG`` at our kubeconfig for the whole session, like kr8s's
upstream conftest did.

It also supplies what kr8s's *repository-root* conftest (not shipped in the
wheel) gives its tests: the ``ensure_gc`` fixture, and ``k8s_cluster`` being
session-scoped and autouse.

Where kr8s's fixtures assume a kind cluster, the plugin bridges the gap
without touching what any test asserts:

* kind's ``kube-system`` always holds the control plane's pods; many API-only
  tests (list pods in ``kube-system`` or in all namespaces, then ``anext()``
  the result) need *some* pod to exist.  A nodeless cluster without an
  instance provider has none, so the fixture creates one placeholder Pod in
  ``kube-system`` through the API (it stays Pending: nothing runs it).  Tests
  that need a *running* pod still fail and are listed in
  ``expected_failures.txt``.
* kind deletes a namespace seconds after ``kubectl delete namespace``; in
  nodeless a deleted namespace stays ``Terminating`` (no namespace controller
  runs yet).  kr8s's ``ns`` fixture names each test's namespace with only four
  random hex digits, so over ~200 tests a repeated name (``AlreadyExists`` at
  setup, a random test erroring in about a third of the runs) is likely.  The
  plugin hands kr8s's conftest a ``uuid4`` whose first four hex digits count
  up, so names never repeat within a session.

Environment: ``KR8S_SUITE_PROVIDER`` (``nodeless up --provider``, default
``none``), ``KR8S_SUITE_WORKDIR`` (where to keep the server's data and log),
``KR8S_SUITE_KEEP_DATA``, ``KR8S_SUITE_DESELECT`` and ``KR8S_SUITE_REPORT``
(see the hooks at the end).

Load with ``-p tests.kr8s_suite.plugin`` (cwd = repository root); see README.md.
"""

from __future__ import annotations

import gc
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from nodeless.cli import main as cli

VENV_BIN = Path(sys.executable).parent
READY_TIMEOUT = 60.0

# nodeless up --provider: `simulated` (the default, which the expected-failure
# list is written for) runs virtual nodes, scheduler, instances and
# controllers; `none` serves the API alone.
PROVIDER = os.environ.get("KR8S_SUITE_PROVIDER", "simulated")

# The stand-in for kind's control-plane pods (see the module docstring).
PLACEHOLDER_POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {
        "name": "kr8s-suite-placeholder",
        "namespace": "kube-system",
        "labels": {"app.kubernetes.io/created-by": "nodeless-kr8s-suite"},
    },
    "spec": {"containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.10"}]},
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _find(name: str) -> Path:
    found = shutil.which(name, path=str(VENV_BIN)) or shutil.which(name)
    if not found:
        raise RuntimeError(f"{name} not found next to {sys.executable} nor on PATH")
    return Path(found)


class NodelessCluster:
    """What kr8s's conftest needs of pytest-kind's KindCluster, on `nodeless up`."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.home = workdir / "home"  # kubectl's discovery cache, kept out of ~
        self.home.mkdir(exist_ok=True)
        self.log_path = workdir / "nodeless.log"
        self.port = _free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.kubectl_path = _find("kubectl")
        self.process: subprocess.Popen[str] | None = None

    @property
    def kubeconfig_path(self) -> Path:
        return self.data_dir / "kubeconfig"

    def start(self) -> None:
        log = open(self.log_path, "a")  # lives as long as the server
        self.process = subprocess.Popen(
            [
                str(_find("nodeless")),
                "up",
                "--data-dir",
                str(self.data_dir),
                "--listen",
                f"127.0.0.1:{self.port}",
                "--provider",
                PROVIDER,
            ],
            stdout=subprocess.PIPE,
            stderr=log,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,  # signals sent to the test run's process group don't reach it
            # At exit, nodeless up checks no component wrote to shared cached objects.
            env={**os.environ, "NODELESS_CHECK_CACHE": "1"},
        )
        (self.workdir / "nodeless.pid").write_text(str(self.process.pid))
        assert self.process.stdout is not None
        # readline() blocks, so watch the deadline from a thread.
        ready = threading.Event()
        stdout = self.process.stdout

        def pump() -> None:
            # Keep draining stdout after "ready" so the server never blocks on a full pipe.
            for line in stdout:
                log.write(line)
                log.flush()
                if "ready" in line:
                    ready.set()
            ready.set()  # EOF: let the waiter see the process died

        threading.Thread(target=pump, name="nodeless-stdout", daemon=True).start()
        if not ready.wait(READY_TIMEOUT) or self.process.poll() is not None:
            self.stop()
            raise RuntimeError(
                f"nodeless up did not become ready in {READY_TIMEOUT}s; see {self.log_path}:\n"
                + self.log_path.read_text()[-4000:]
            )

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.returncode == cli.CACHE_CORRUPTED:
            raise RuntimeError(f"a component changed cached objects in place; see {self.log_path}")

    def kubectl(self, *args: str, **kwargs: object) -> str:
        """Like pytest-kind's KindCluster.kubectl: stdout as str, raise on failure."""
        return subprocess.check_output(
            [str(self.kubectl_path), *args],
            env={**os.environ, "KUBECONFIG": str(self.kubeconfig_path), "HOME": str(self.home)},
            encoding="utf-8",
            timeout=60,
            **kwargs,  # type: ignore[call-overload]
        )


class _DistinctUUIDs:
    """Stands in for the `uuid` module in kr8s's conftest: uuid4() values whose
    first four hex digits count up, so `uuid4().hex[:4]` never repeats."""

    def __init__(self) -> None:
        self._count = itertools.count(int.from_bytes(os.urandom(2), "big"))

    def uuid4(self) -> uuid.UUID:
        prefix = next(self._count) % 0x10000
        low = uuid.uuid4().int & ((1 << 112) - 1)
        return uuid.UUID(int=(prefix << 112) | low)

    def __getattr__(self, name: str) -> object:
        return getattr(uuid, name)


def _distinct_kr8s_names() -> None:
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None) or ""
        if path.endswith(os.path.join("kr8s", "conftest.py")) and hasattr(module, "uuid"):
            module.uuid = _DistinctUUIDs()


@pytest.fixture(scope="session", autouse=True)
def k8s_cluster() -> Iterator[NodelessCluster]:
    # KR8S_SUITE_WORKDIR: keep the server's data and log there (else a temp dir,
    # removed afterwards unless KR8S_SUITE_KEEP_DATA is set or the server died).
    given = os.environ.get("KR8S_SUITE_WORKDIR")
    workdir = Path(given) if given else Path(tempfile.mkdtemp(prefix="kr8s-nodeless-"))
    workdir.mkdir(parents=True, exist_ok=True)
    cluster = NodelessCluster(workdir)
    _distinct_kr8s_names()
    old_kubeconfig = os.environ.get("KUBECONFIG")
    try:
        cluster.start()
        # `kubectl create -f` sends the object as JSON (unstructured client),
        # unlike `kubectl create namespace` (typed client) in kr8s's `ns` fixture.
        cluster.kubectl("create", "-f", "-", input=json.dumps(PLACEHOLDER_POD))
        os.environ["KUBECONFIG"] = str(cluster.kubeconfig_path)
        yield cluster
    finally:
        if old_kubeconfig is None:
            os.environ.pop("KUBECONFIG", None)
        else:
            os.environ["KUBECONFIG"] = old_kubeconfig
        died = cluster.process is not None and cluster.process.poll() is not None
        cluster.stop()
        if died:
            print(
                f"\nnodeless up exited during the session (code {cluster.process.returncode});"
                f" last lines of {cluster.log_path}:\n" + cluster.log_path.read_text()[-6000:]
            )
        if given or died or os.environ.get("KR8S_SUITE_KEEP_DATA"):
            print(f"\nnodeless data and log kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def ensure_gc() -> Iterator[None]:
    """kr8s's repository-root conftest fixture (used by test_api.py, not in the wheel)."""
    gc.collect()
    yield
    gc.collect()


# --- Deselection of listed tests -------------------------------------------
# KR8S_SUITE_DESELECT=<file>: deselect the tests whose node ids (exactly, unlike
# pytest's prefix-matching --deselect) start the non-comment lines of the file,
# e.g. tests/kr8s_suite/expected_failures.txt.


def read_node_ids(path: Path) -> list[str]:
    ids = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            ids.append(line.split(None, 1)[0])
    return ids


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    path = os.environ.get("KR8S_SUITE_DESELECT")
    if not path:
        return
    listed = set(read_node_ids(Path(path)))
    keep = [item for item in items if item.nodeid not in listed]
    drop = [item for item in items if item.nodeid in listed]
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


# --- Result report for tests/integration/test_kr8s_suite.py ------------------
# With KR8S_SUITE_REPORT=<file>, write {"outcomes": {nodeid: outcome},
# "deselected": [nodeid, ...], "collect_errors": {nodeid: text}} at the end of
# the session.  Outcomes: passed, failed, error, skipped, xfailed, xpassed.

_outcomes: dict[str, str] = {}
_deselected: list[str] = []
_collect_errors: dict[str, str] = {}


def pytest_deselected(items: list[pytest.Item]) -> None:
    _deselected.extend(item.nodeid for item in items)


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if report.failed:
        _collect_errors[report.nodeid] = str(report.longrepr)[-2000:]


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    nodeid = report.nodeid
    xfail = hasattr(report, "wasxfail")
    if report.when == "setup":
        if report.failed:
            _outcomes[nodeid] = "error"
        elif report.skipped:
            _outcomes[nodeid] = "xfailed" if xfail else "skipped"
    elif report.when == "call":
        if report.passed:
            _outcomes[nodeid] = "xpassed" if xfail else "passed"
        elif report.failed:
            _outcomes[nodeid] = "failed"
        else:
            _outcomes[nodeid] = "xfailed" if xfail else "skipped"
    elif report.when == "teardown" and report.failed and _outcomes.get(nodeid) != "failed":
        _outcomes[nodeid] = "error"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    path = os.environ.get("KR8S_SUITE_REPORT")
    if path:
        Path(path).write_text(
            json.dumps(
                {
                    "exitstatus": int(exitstatus),
                    "outcomes": _outcomes,
                    "deselected": _deselected,
                    "collect_errors": _collect_errors,
                },
                indent=1,
            )
        )
