"""How the CRI provider turns containerd's cumulative CPU readings into a
rate (nanocores over a window), as cAdvisor does: what containerd 1.6 gives
is 0 on a first call, so the provider keeps the previous reading itself.
Real containers are measured in tests/integration/test_cri_stats.py."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest

from nodeless import clocks
from nodeless.instances.providers.cri import clients
from nodeless.instances.providers.cri import provider as cri
from nodeless.instances.providers.cri import runtime_pb2 as pb

SECOND = 1_000_000_000  # nanoseconds
T0 = 1_800_000_000 * SECOND  # a CRI timestamp (nanoseconds since the epoch)


@pytest.fixture
def made(tmp_path: Path) -> cri.CriProvider:
    # never connects: only the rate arithmetic is used
    client = clients.CriClient(str(tmp_path / "no.sock"))
    return cri.CriProvider(client, tmp_path, clocks.FakeClock())


def reading(at_ns: int, total_ns: int | None, runtime_rate: int | None = None) -> pb.CpuUsage:
    cpu = pb.CpuUsage(timestamp=at_ns)
    if total_ns is not None:
        cpu.usage_core_nano_seconds.value = total_ns
    if runtime_rate is not None:
        cpu.usage_nano_cores.value = runtime_rate
    return cpu


def started(seconds_before_t0: float) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(T0 / SECOND - seconds_before_t0, datetime.UTC)


def test_the_rate_is_the_cpu_time_between_two_readings_over_their_interval(
    made: cri.CriProvider,
) -> None:
    made._cpu_rate("c", reading(T0, 5 * SECOND), None)

    cores, window = made._cpu_rate("c", reading(T0 + 4 * SECOND, 7 * SECOND), None)

    assert (cores, window) == (SECOND // 2, 4.0)  # 2 s of CPU in 4 s: half a core


def test_readings_closer_than_the_minimum_window_reuse_the_last_rate(
    made: cri.CriProvider,
) -> None:
    made._cpu_rate("c", reading(T0, 0), None)
    measured = made._cpu_rate("c", reading(T0 + 2 * SECOND, SECOND), None)

    assert made._cpu_rate("c", reading(T0 + 2 * SECOND + 1000, SECOND + 999), None) == measured
    # the next one is measured from the kept reading, not the skipped one
    assert made._cpu_rate("c", reading(T0 + 4 * SECOND, 3 * SECOND), None) == (SECOND, 2.0)


def test_a_first_reading_takes_the_runtimes_rate_when_it_has_one(made: cri.CriProvider) -> None:
    cores, window = made._cpu_rate("c", reading(T0, 9 * SECOND, 250_000_000), started(60))

    assert (cores, window) == (250_000_000, cri.STATS_WINDOW)


def test_a_first_reading_without_a_runtime_rate_averages_since_the_start(
    made: cri.CriProvider,
) -> None:
    cores, window = made._cpu_rate("c", reading(T0, 5 * SECOND, 0), started(20))

    assert (cores, window) == (SECOND // 4, 20.0)


def test_a_first_reading_of_a_container_just_started_is_zero(made: cri.CriProvider) -> None:
    assert made._cpu_rate("c", reading(T0, SECOND // 10), started(0.5)) == (0, cri.STATS_WINDOW)
    assert made._cpu_rate("d", reading(T0, None), None) == (0, cri.STATS_WINDOW)


def test_readings_are_kept_per_container(made: cri.CriProvider) -> None:
    made._cpu_rate("a", reading(T0, 0), None)
    made._cpu_rate("b", reading(T0, 0), None)

    assert made._cpu_rate("a", reading(T0 + SECOND, SECOND), None) == (SECOND, 1.0)
    assert made._cpu_rate("b", reading(T0 + SECOND, 0), None) == (0, 1.0)
