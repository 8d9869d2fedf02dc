"""Expectations hold a controller back until it has seen its own writes, and
give up after five minutes on the injected clock."""

from __future__ import annotations

import pytest

from nodeless import clocks
from nodeless.client import controllers


@pytest.fixture
def clock() -> clocks.FakeClock:
    return clocks.FakeClock()


@pytest.fixture
def expectations(clock: clocks.FakeClock) -> controllers.Expectations:
    return controllers.Expectations(clock)


def test_a_key_with_no_expectations_is_satisfied(expectations: controllers.Expectations) -> None:
    assert expectations.satisfied("default/web")
    assert expectations.pending("default/web") is None


def test_creations_are_satisfied_once_all_are_observed(
    expectations: controllers.Expectations,
) -> None:
    expectations.expect_creations("default/web", 2)
    assert not expectations.satisfied("default/web")

    expectations.creation_observed("default/web")
    assert not expectations.satisfied("default/web")
    expectations.creation_observed("default/web")
    assert expectations.satisfied("default/web")


def test_adds_and_deletes_must_both_be_observed(expectations: controllers.Expectations) -> None:
    expectations.expect("k", adds=1, dels=1)
    expectations.creation_observed("k")
    assert not expectations.satisfied("k")

    expectations.deletion_observed("k")
    assert expectations.satisfied("k")
    assert expectations.pending("k") == (0, 0)


def test_observations_beyond_expectations_keep_the_key_satisfied(
    expectations: controllers.Expectations,
) -> None:
    expectations.expect_creations("k", 1)
    expectations.creation_observed("k")
    expectations.creation_observed("k")

    assert expectations.satisfied("k")
    assert expectations.pending("k") == (-1, 0)


async def test_expectations_expire_after_five_minutes(
    clock: clocks.FakeClock, expectations: controllers.Expectations
) -> None:
    expectations.expect_creations("k", 3)

    await clock.advance(300.0)
    assert not expectations.satisfied("k")
    await clock.advance(0.001)
    assert expectations.satisfied("k")


async def test_setting_expectations_again_restarts_the_timeout(
    clock: clocks.FakeClock, expectations: controllers.Expectations
) -> None:
    expectations.expect_creations("k", 1)
    await clock.advance(299.0)
    expectations.expect_creations("k", 1)
    await clock.advance(299.0)

    assert not expectations.satisfied("k")


def test_raise_adds_to_what_is_expected(expectations: controllers.Expectations) -> None:
    expectations.expect_creations("k", 1)
    expectations.raise_expectations("k", adds=2, dels=1)

    assert expectations.pending("k") == (3, 1)
    expectations.lower_expectations("k", adds=3, dels=1)
    assert expectations.satisfied("k")


def test_a_deletion_tracked_by_uid_counts_once(expectations: controllers.Expectations) -> None:
    expectations.expect_deletions_of("default/web", ["uid-1", "uid-2"])

    expectations.deletion_observed("default/web", "uid-1")
    expectations.deletion_observed("default/web", "uid-1")
    expectations.deletion_observed("default/web", "uid-unrelated")
    assert not expectations.satisfied("default/web")
    expectations.deletion_observed("default/web", "uid-2")
    assert expectations.satisfied("default/web")


def test_forgetting_a_key_drops_its_expectations(expectations: controllers.Expectations) -> None:
    expectations.expect_deletions("k", 4)
    expectations.forget("k")

    assert expectations.satisfied("k")
    expectations.deletion_observed("k")
    assert expectations.pending("k") is None
