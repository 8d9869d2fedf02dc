"""kr8s's own test suite, shipped inside the kr8s wheel, run against `nodeless up`.

The suite runs in a subprocess (its own pytest configuration, its own
conftest.py), with tests/kr8s_suite/plugin.py supplying the `k8s_cluster`
fixture from a fresh `nodeless up`.  Every kr8s test must pass, except those
listed in tests/kr8s_suite/expected_failures.txt (they need running
containers, controllers or nodes), which are deselected up front so that the
run stays short.  See tests/kr8s_suite/README.md.

KR8S_SUITE_RUN_EXPECTED=1 runs the listed tests too and reports those that
pass now (they should leave the list); failures among them are then allowed.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SUITE_DIR = REPO / "tests" / "kr8s_suite"
EXPECTED_FILE = SUITE_DIR / "expected_failures.txt"
RUN_TIMEOUT = 540  # seconds for the whole kr8s run (it takes about a minute)
RUN_EXPECTED_TIMEOUT = 3600  # with KR8S_SUITE_RUN_EXPECTED=1: listed tests hang until their timeout
PER_TEST_TIMEOUT = int(os.environ.get("KR8S_SUITE_TEST_TIMEOUT", "60"))  # needs pytest-timeout
OK = {"passed", "skipped", "xfailed"}


def load_expected_failures(path: Path = EXPECTED_FILE) -> dict[str, str]:
    """node id -> reason, from `<node id> <reason>` lines (# comments, blank lines ignored)."""
    expected: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(None, 1)
        if len(parts) != 2:
            raise ValueError(f"{path.name}:{number}: a listed test needs a reason: {raw!r}")
        if parts[0] in expected:
            raise ValueError(f"{path.name}:{number}: listed twice: {parts[0]}")
        expected[parts[0]] = parts[1].strip()
    return expected


def kr8s_package_dir() -> Path:
    spec = importlib.util.find_spec("kr8s")
    assert spec is not None and spec.origin, "kr8s is not installed (pip install -e '.[test]')"
    return Path(spec.origin).parent


def run_kr8s_suite(
    workdir: Path, deselect: Path | None
) -> tuple[int | None, dict[str, object], str]:
    """Run kr8s's tests; return (exit code or None on timeout, the plugin's report, output)."""
    package = kr8s_package_dir()
    assert (package / "tests").is_dir() and (package / "conftest.py").is_file(), (
        f"{package} does not ship kr8s's tests"
    )
    run_timeout = RUN_TIMEOUT if deselect is not None else RUN_EXPECTED_TIMEOUT
    report_path = workdir / "kr8s-report.json"
    log_path = workdir / "kr8s-pytest.log"
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        str(package / "tests"),
        "-c",
        str(SUITE_DIR / "pytest.ini"),  # not this repository's pyproject settings
        "--rootdir",
        str(package),  # node ids `tests/test_x.py::name`; kr8s/conftest.py applies
        "-p",
        "tests.kr8s_suite.plugin",
        "-p",
        "no:cacheprovider",  # nothing written into site-packages
        "-q",
        "-rfE",
        "--durations=5",
    ]
    if importlib.util.find_spec("pytest_timeout") is not None:
        cmd += [f"--timeout={PER_TEST_TIMEOUT}"]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env["KR8S_SUITE_REPORT"] = str(report_path)
    env["KR8S_SUITE_WORKDIR"] = str(workdir / "nodeless")  # server data and log, kept
    env.pop("KR8S_SUITE_DESELECT", None)
    if deselect is not None:
        env["KR8S_SUITE_DESELECT"] = str(deselect)  # exact node ids, see plugin.py
    env.pop("KUBECONFIG", None)
    env.pop("PYTEST_ADDOPTS", None)
    with open(log_path, "w") as log:
        # Own process group: on timeout, kill pytest and its children (kubectl proxy, ...)
        # and then the `nodeless up` it started (in a session of its own, pid on file).
        proc = subprocess.Popen(
            cmd,
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        code: int | None = None
        try:
            code = proc.wait(timeout=run_timeout)
        except subprocess.TimeoutExpired:
            pass
        finally:
            if proc.poll() is None:  # timed out, or this test run was interrupted
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                pid_file = workdir / "nodeless" / "nodeless.pid"
                with contextlib.suppress(OSError, ValueError):
                    os.kill(int(pid_file.read_text()), signal.SIGKILL)
    output = log_path.read_text(errors="replace")
    report = json.loads(report_path.read_text()) if report_path.exists() else {}
    return code, report, output


def test_kr8s_suite(tmp_path: Path) -> None:
    expected = load_expected_failures()
    run_expected = os.environ.get("KR8S_SUITE_RUN_EXPECTED", "") not in ("", "0")
    code, report, output = run_kr8s_suite(tmp_path, None if run_expected else EXPECTED_FILE)
    tail = "\n".join(output.splitlines()[-150:])

    assert code is not None, f"kr8s suite did not finish in time:\n{tail}"
    assert report, f"kr8s suite wrote no report (exit code {code}):\n{tail}"
    assert not report["collect_errors"], (
        f"kr8s tests failed to collect: {report['collect_errors']}\n{tail}"
    )

    outcomes: dict[str, str] = report["outcomes"]  # type: ignore[assignment]
    deselected = set(report["deselected"])  # type: ignore[arg-type]
    stale = sorted(t for t in expected if t not in outcomes and t not in deselected)
    assert not stale, f"expected_failures.txt lists tests kr8s no longer has: {stale}"

    bad = {t: o for t, o in sorted(outcomes.items()) if t not in expected and o not in OK}
    counts = Counter(o for t, o in outcomes.items() if t not in expected)
    now_passing = sorted(t for t in expected if outcomes.get(t) == "passed")
    summary = (
        f"kr8s suite: {counts['passed']} passed, {len(expected)} expected-failures "
        f"(need running pods), {counts['skipped'] + counts['xfailed']} skipped"
    )
    print("\n" + summary)
    for t in sorted(t for t, o in outcomes.items() if t not in expected and o != "passed"):
        print(f"  {outcomes[t]}: {t}")
    if now_passing:
        print("  listed in expected_failures.txt but passing now (remove them):")
        for t in now_passing:
            print(f"    {t}")
    assert not bad, (
        f"{summary}\n{len(bad)} kr8s tests not in expected_failures.txt did not pass:\n"
        + "\n".join(f"  {o}: {t}" for t, o in bad.items())
        + f"\n\n{tail}"
    )
    assert code == 0 or run_expected, f"kr8s pytest exited {code}:\n{tail}"
