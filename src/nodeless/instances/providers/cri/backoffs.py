"""The kubelet's back-off: how long a crashed container or a failed image pull waits.

Both wait 10 s after the first failure, then twice as long after each next
one, up to 5 minutes; a container that ran for 10 minutes before crashing is
forgiven its earlier crashes. The durations are a policy a provider is built
with, so tests (and demos) can use short ones; the waiting itself goes
through the provider's injected clock.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BackOffPolicy:
    """``initial`` seconds after the first failure, doubling up to ``maximum``;
    a run of at least ``reset_after`` seconds starts over (None: never)."""

    initial: float = 10.0
    maximum: float = 300.0
    reset_after: float | None = None

    def __post_init__(self) -> None:
        if not 0 < self.initial <= self.maximum:
            raise ValueError(f"back-off needs 0 < initial <= maximum, got {self}")


CRASH_LOOP = BackOffPolicy(10.0, 300.0, reset_after=600.0)
IMAGE_PULL = BackOffPolicy(10.0, 300.0)


class BackOff:
    """One container's back-off state under a policy."""

    def __init__(self, policy: BackOffPolicy) -> None:
        self.policy = policy
        self.current = 0.0  # the latest wait; 0 before the first failure

    def next(self, ran: float | None = None) -> float:
        """The wait after another failure; ``ran`` is how long the failed
        attempt had run (a long run resets the back-off first)."""
        reset_after = self.policy.reset_after
        if ran is not None and reset_after is not None and ran >= reset_after:
            self.current = 0.0
        if self.current:
            self.current = min(self.current * 2, self.policy.maximum)
        else:
            self.current = self.policy.initial
        return self.current

    def reset(self) -> None:
        self.current = 0.0

    def resume(self, failures: int) -> None:
        """Restores the state after ``failures`` consecutive failures (an
        adopted container whose restart count is all that is known)."""
        self.current = 0.0
        for _ in range(max(0, failures)):
            self.next()


def go_duration(seconds: float) -> str:
    """How the kubelet prints a back-off: ``10s``, ``2m40s``, ``5m0s``,
    ``500ms`` for the short ones of tests."""
    if 0 < seconds < 1:
        return f"{round(seconds * 1000)}ms"
    whole = round(seconds)
    minutes, rest = divmod(whole, 60)
    return f"{minutes}m{rest}s" if minutes else f"{rest}s"
