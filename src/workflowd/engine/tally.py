"""What the engine counts as it goes, for `/metrics`: plain numbers moved on the loop, read only
when the metrics are scraped (the web layer turns them into Prometheus metrics).

Moving them costs a dict update when an execution changes status and a bucket increment per
cycle: no labels are looked up, no lock is taken and nothing is formatted on the hot path.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Mapping, Sequence

__all__ = ["DURATION_BUCKETS", "Histogram", "Tally"]

# Seconds: from a step that returns at once to one that runs for an hour.
DURATION_BUCKETS: tuple[float, ...] = (0.001, 0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                                       30.0, 60.0, 300.0, 900.0, 3600.0)


class Histogram:
    """Counts per bucket (`le` bounds, the last one +Inf) and the sum of what was observed."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float] = DURATION_BUCKETS) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def cumulative(self) -> list[tuple[str, float]]:
        """`(le, count of observations <= le)` as Prometheus writes a histogram."""
        out: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip((*map(repr, self.bounds), "+Inf"), self.counts, strict=True):
            running += count
            out.append((bound, float(running)))
        return out


class Tally:
    """The engine's counters: executions by workflow and status (seeded from the store at
    start-up, then moved by each commit that changes a status), events committed by type, and
    durations of cycles and steps by workflow."""

    __slots__ = ("cycles", "deliveries_queued", "events", "executions", "steps")

    def __init__(self) -> None:
        self.executions: Counter[tuple[str, str]] = Counter()
        self.events: Counter[str] = Counter()  # committed by this process, by type
        self.cycles: dict[str, Histogram] = {}
        self.steps: dict[str, Histogram] = {}
        self.deliveries_queued = 0  # outbox deliveries committed by this process

    def seed(self, counts: Mapping[tuple[str, str], int]) -> None:
        """The store's executions by `(workflow_id, status)`, before this process changed any."""
        self.executions.update(counts)

    def added(self, workflow_id: str, status: str) -> None:
        self.executions[(workflow_id, status)] += 1

    def moved(self, workflow_id: str, old: str, new: str) -> None:
        executions = self.executions
        executions[(workflow_id, old)] -= 1
        executions[(workflow_id, new)] += 1

    def deleted(self, counts: Mapping[tuple[str, str], int]) -> None:
        self.executions.subtract(counts)

    def cycle(self, workflow_id: str, seconds: float) -> None:
        histogram = self.cycles.get(workflow_id)
        if histogram is None:
            histogram = self.cycles[workflow_id] = Histogram()
        histogram.observe(seconds)

    def step(self, workflow_id: str, seconds: float) -> None:
        histogram = self.steps.get(workflow_id)
        if histogram is None:
            histogram = self.steps[workflow_id] = Histogram()
        histogram.observe(seconds)
