"""Per-subject submit rate (`[limits] submits_per_minute`): a token bucket for each subject.

A subject starts with a full bucket (`submits_per_minute` submits at once), which refills at
that many a minute; a submit with the bucket empty is 429 with the seconds until the next
token in `Retry-After`, and changes nothing; a submit refused for another reason after it took
its token (a full queue, an unknown artifact) gives the token back. Subjects come from the
configured tokens (or are the one `anonymous`), so the table stays as small as the
configuration."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from workflowd.errors import RateLimitedError

__all__ = ["SubmitRate"]


class SubmitRate:
    def __init__(self, per_minute: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = float(per_minute)
        self.per_second = per_minute / 60.0
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # subject -> (tokens, when)

    def take(self, subject: str) -> None:
        """Spend one submit of `subject`'s, or raise 429 (0 per minute: no limit)."""
        if not self.capacity:
            return
        now = self.clock()
        tokens, then = self._buckets.get(subject, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - then) * self.per_second)
        if tokens < 1.0:
            self._buckets[subject] = (tokens, now)
            wait = math.ceil((1.0 - tokens) / self.per_second)
            raise RateLimitedError(
                f"{subject!r} submitted more than [limits] submits_per_minute = "
                f"{int(self.capacity)} allows: retry in {wait} s", retry_after=max(1, wait))
        self._buckets[subject] = (tokens - 1.0, now)

    def give_back(self, subject: str) -> None:
        """Return the submit `take` spent, for a submit refused after it (a full queue, an
        input naming no artifact): a refused submit changes nothing, its bucket neither."""
        if not self.capacity or subject not in self._buckets:
            return
        tokens, then = self._buckets[subject]
        self._buckets[subject] = (min(self.capacity, tokens + 1.0), then)
