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

Load with ``-p tests.kr8s_suite.plugin`` (cwd = repository root).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

VENV_BIN = Path(sys.executable).parent
READY_TIMEOUT = 60.0


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
        log = open(self.log_path, "a")  # noqa: SIM115 - lives as long as the server
        self.process = subprocess.Popen(
            [
                str(_find("nodeless")), "up",
                "--data-dir", str(self.data_dir),
                "--listen", f"127.0.0.1:{self.port}",
                "--provider", "none",
            ],
            stdout=subprocess.PIPE,
            stderr=log,
            stdin=subprocess.DEVNULL,
            text=True,
        )
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

    def kubectl(self, *args: str, **kwargs: object) -> str:
        """Like pytest-kind's KindCluster.kubectl: stdout as str, raise on failure."""
        return subprocess.check_output(
            [str(self.kubectl_path), *args],
            env={**os.environ, "KUBECONFIG": str(self.kubeconfig_path), "HOME": str(self.home)},
            encoding="utf-8",
            timeout=60,
            **kwargs,  # type: ignore[call-overload]
        )


@pytest.fixture(scope="session")
def k8s_cluster() -> Iterator[NodelessCluster]:
    workdir = Path(tempfile.mkdtemp(prefix="kr8s-nodeless-"))
    cluster = NodelessCluster(workdir)
    cluster.start()
    old = os.environ.get("KUBECONFIG")
    os.environ["KUBECONFIG"] = str(cluster.kubeconfig_path)
    try:
        yield cluster
    finally:
        if old is None:
            os.environ.pop("KUBECONFIG", None)
        else:
            os.environ["KUBECONFIG"] = old
        cluster.stop()
        if os.environ.get("KR8S_SUITE_KEEP_DATA") is None:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"\nnodeless data and log kept in {workdir}")
