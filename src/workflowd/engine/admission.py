"""Admission: the queue of executions waiting for a slot, in priority order, and the limits
on how many may wait (`[engine] max_queued`, `[limits] max_queued_per_subject`).

Plain bookkeeping, no tasks: the scheduler pushes what is queued, pops the next to launch,
and asks for room before it lets one more in.
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

from workflowd.errors import QueueFullError

__all__ = ["Admission"]


class Admission:
    def __init__(self, max_queued: int, max_queued_per_subject: int = 0) -> None:
        self.max_queued = max_queued
        self.max_queued_per_subject = max_queued_per_subject  # 0: no limit
        self._heap: list[tuple[int, int, str]] = []
        self._arrival = itertools.count()
        # Queued executions, each with the subject that submitted it, counted by subject.
        self._queued: dict[str, str] = {}
        self._queued_by: Counter[str] = Counter()
        # Submits under way (queued once their write commits), counted in the limits too.
        self._reserved = 0
        self._reserved_by: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._queued)

    def __contains__(self, execution_id: object) -> bool:
        return execution_id in self._queued

    def ids(self) -> list[str]:
        return list(self._queued)

    @property
    def submitting(self) -> int:
        """Submits under way (their writes not committed yet)."""
        return self._reserved

    def check_room(self, subject: str, backlog: int = 0) -> None:
        """Refuse (429) one more queued execution of `subject`; `backlog`: queued ones that
        are elsewhere (in a cluster, those no node has claimed yet)."""
        if len(self._queued) + self._reserved + backlog >= self.max_queued:
            raise QueueFullError(f"{self.max_queued} executions are already queued",
                                 retry_after=1)
        limit = self.max_queued_per_subject
        if limit and self._queued_by[subject] + self._reserved_by[subject] >= limit:
            raise QueueFullError(
                f"{subject!r} already has {limit} executions queued "
                "([limits] max_queued_per_subject)", retry_after=1)

    @contextmanager
    def reserved(self, subject: str) -> Iterator[None]:
        """A submit of `subject` under way: it counts against the limits until it is queued
        (or failed)."""
        self._reserved += 1
        self._reserved_by[subject] += 1
        try:
            yield
        finally:
            self._reserved -= 1
            _decrement(self._reserved_by, subject)

    def push(self, execution_id: str, priority: int, subject: str) -> None:
        """Queue it (again: a second push of a queued one only takes a later place too)."""
        if execution_id not in self._queued:
            self._queued[execution_id] = subject
            self._queued_by[subject] += 1
        heapq.heappush(self._heap, (-priority, next(self._arrival), execution_id))

    def remove(self, execution_id: str) -> None:
        subject = self._queued.pop(execution_id, None)
        if subject is not None:
            _decrement(self._queued_by, subject)

    def pop(self) -> str | None:
        """The next to launch, highest priority first, in order of arrival within one (None
        when none waits)."""
        while self._heap:
            _, _, execution_id = heapq.heappop(self._heap)
            if execution_id in self._queued:  # else taken out meanwhile (cancelled, paused)
                self.remove(execution_id)
                return execution_id
        return None


def _decrement(counter: Counter[str], key: str) -> None:
    """One less of `key`, dropping it at zero (the counters stay as small as what they count)."""
    left = counter[key] - 1
    if left > 0:
        counter[key] = left
    else:
        del counter[key]
