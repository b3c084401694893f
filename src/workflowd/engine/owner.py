"""The owner of one execution: the one place every change to it goes through.

Whoever asks for a change (its runner's cycle, an approve or a cancel, a timer, an outside
worker, recovery) calls `apply` with a transition; the owner computes the next record from the
latest one it has queued (`head`), not the last committed one, so changes asked for at once are
ordered and their events numbered without collision. It then hands the write to the ledger; the
writes of one execution commit in the order they were made. `committed` is what followers and
readers see.

When a write fails (the store refused it), the owner goes back to the last committed record:
what was built on the failed write is dropped (the writer refuses it too), and the waits are
armed again from that record. Nothing is half-applied.

Changes made with `flush=False` are held until the loop's next turn and then written together,
or with the next change written at once: a step that never yields has its start committed with
its end, one write per cycle.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING

import structlog

from workflowd.clock import seconds_until, utcnow
from workflowd.context import ProgressReport
from workflowd.definitions import Workflow
from workflowd.engine import transitions as T
from workflowd.engine.coalesce import Coalescer
from workflowd.engine.ledger import Ledger
from workflowd.engine.outbox import Outbox
from workflowd.engine.tally import Tally
from workflowd.errors import InvalidTransitionError
from workflowd.records import ExecutionRecord, IdempotencyRecord, wakes_at
from workflowd.store import Delivery, StoreClosedError

if TYPE_CHECKING:
    from workflowd.engine.runner import Runner

__all__ = ["Owner", "Superseded", "retrieve"]

log = structlog.get_logger("workflowd.owner")

Make = Callable[[ExecutionRecord], "T.Change | None"]
Remember = Callable[[ExecutionRecord], IdempotencyRecord]


class Superseded(Exception):
    """A runner the owner no longer takes changes from (it was cut off, e.g. it ignored a
    cancel): it must stop."""


class Owner:
    __slots__ = ("_epoch", "_failures", "_held", "_last", "_ledger", "_logs", "_on_commit",
                 "_reports", "_tick", "_timer", "_written", "committed", "head",
                 "progress_interval", "runner", "wf")

    def __init__(self, rec: ExecutionRecord, wf: Workflow | None, ledger: Ledger,
                 on_commit: Callable[[Owner, ExecutionRecord], None],
                 progress_interval: float = 0.1) -> None:
        self.committed = rec
        self.head = rec
        self.wf = wf
        self.runner: Runner | None = None
        self.progress_interval = progress_interval
        self._ledger = ledger
        self._on_commit = on_commit
        self._written = rec  # the last record handed to the writer
        self._epoch = 0  # grows each time the owner goes back to the committed record
        self._held: list[T.Change] = []
        self._logs: list[tuple[str, str]] = []
        self._tick: asyncio.Handle | None = None
        self._last: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._failures = 0
        self._reports: Coalescer[ProgressReport] | None = None

    @property
    def execution_id(self) -> str:
        return self.head.execution_id

    @property
    def epoch(self) -> int:
        return self._epoch

    @property
    def outbox(self) -> Outbox | None:
        return self._ledger.outbox

    @property
    def tally(self) -> Tally:
        return self._ledger.tally

    # ---- changing the execution ------------------------------------------------------------

    def apply(self, make: Make, *, flush: bool = True, by: Runner | None = None,
              remember: Remember | None = None, deliveries: tuple[Delivery, ...] = (),
              ) -> asyncio.Future[None] | None:
        """Apply a transition to the latest record and queue its write.

        Answers the write's future (None when the transition changed nothing, or when the
        change is held for the next turn with `flush=False`). Raises what the transition raises
        (409, 403: nothing changed), or `Superseded` for a runner that is no longer this
        execution's.
        """
        if by is not None and by is not self.runner:
            raise Superseded(self.execution_id)
        head = self.head
        if head.is_terminal:
            raise InvalidTransitionError(f"execution {head.execution_id} is {head.status}")
        change = make(head)
        if change is None:
            return None
        self.head = change.record
        self._held.append(change)
        if flush or remember is not None or deliveries:
            future = self._flush(remember, deliveries)
        else:
            if self._tick is None:
                self._tick = asyncio.get_running_loop().call_soon(self._flush)
            future = None
        if change.record.wait is not None or head.wait is not None \
                or change.record.status == "paused" or head.status == "paused":
            self.arm()
        return future

    def log(self, line: tuple[str, str]) -> None:
        """Queue a log line; it is written at the loop's next turn (with any held change)."""
        self._logs.append(line)
        if self._tick is None:
            self._tick = asyncio.get_running_loop().call_soon(self._flush)

    def report(self, report: ProgressReport) -> None:
        """Progress of the step in flight, rate-bounded: at most one a `progress_interval`
        is written, always the latest."""
        if self._reports is None:
            self._reports = Coalescer(self.progress_interval, self._store_report)
        self._reports.push(report)

    def flush_reports(self) -> None:
        """Write the held progress report now (before the step's end is written)."""
        if self._reports is not None:
            self._reports.flush()

    def _store_report(self, report: ProgressReport) -> None:
        with contextlib.suppress(InvalidTransitionError):  # ended meanwhile: nothing to report
            self.apply(lambda rec: T.progressed(rec, report, utcnow()), flush=False)

    def flush(self, by: Runner | None = None) -> asyncio.Future[None]:
        """Write what is held now; answer the future of the last write handed over, which
        commits after every earlier one of this execution."""
        if by is not None and by is not self.runner:
            raise Superseded(self.execution_id)
        if self._held or self._logs:
            self._flush()
        last = self._last
        if last is None or last.done():
            last = asyncio.get_running_loop().create_future()
            last.set_result(None)  # nothing is pending (an old failure was dealt with)
        return last

    async def settled(self) -> None:
        """Wait until everything handed to the writer so far is settled (committed or not)."""
        if self._tick is not None:
            self._flush()
        last = self._last
        if last is not None and not last.done():
            await asyncio.wait({last})

    def close(self) -> None:
        """The service is stopping (or the execution is gone): drop timers."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._reports is not None:
            self._reports.cancel()

    # ---- writing ----------------------------------------------------------------------------

    def _flush(self, remember: Remember | None = None,
               deliveries: tuple[Delivery, ...] = ()) -> asyncio.Future[None] | None:
        if self._tick is not None:
            self._tick.cancel()
            self._tick = None
        held, self._held = self._held, []
        logs, self._logs = self._logs, []
        try:
            return self._write(held, logs, remember, deliveries)
        except StoreClosedError:
            # The service is stopping: what was not handed over is not written, and the
            # execution resumes from its last commit at the next start.
            self.head = self._written = self.committed
            return None

    def _write(self, held: list[T.Change], logs: list[tuple[str, str]],
               remember: Remember | None, deliveries: tuple[Delivery, ...],
               ) -> asyncio.Future[None] | None:
        if not held:
            if logs:
                self._last = self._ledger.write_logs(logs)
                self._last.add_done_callback(retrieve)
            return self._last if logs else None
        change = held[0] if len(held) == 1 else T.merge(held)
        rec = change.record
        base = self._written
        self._written = rec
        epoch = self._epoch
        future = self._ledger.write(
            rec, change.events, change.steps, base_seq=base.seq, logs=logs,
            idempotency=remember(rec) if remember is not None else None,
            deliveries=deliveries, on_commit=lambda: self._committed(rec))
        future.add_done_callback(lambda f: self._settle(f, epoch))
        self._last = future
        return future

    def _committed(self, rec: ExecutionRecord) -> None:
        if rec.status != self.committed.status:
            self._ledger.tally.moved(rec.workflow_id, self.committed.status, rec.status)
        self.committed = rec
        self._failures = 0
        self._on_commit(self, rec)

    def _settle(self, future: asyncio.Future[None], epoch: int) -> None:
        if future.cancelled() or future.exception() is None or epoch != self._epoch:
            return
        # Refused: back to what is committed. The writes built on this one fail as stale.
        self._epoch += 1
        self._failures += 1
        self.head = self._written = self.committed
        self._held.clear()
        log.warning("execution_reset", execution_id=self.execution_id,
                    workflow_id=self.committed.workflow_id, cycle=self.committed.cycle,
                    seq=self.committed.seq, error=str(future.exception()))
        self.arm()
        # The scheduler looks again at what is committed: a queued execution whose cancel
        # was refused goes back into the queue.
        self._on_commit(self, self.committed)

    # ---- the timer of a wait -----------------------------------------------------------------

    def arm(self) -> None:
        """Arm the one timer a waiting execution needs (`wakes_at`: its wait's deadline or the
        workflow's, whichever is first; a paused one's, the workflow's). Derived from the
        record, so no deadline is ever lost."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        rec = self.head
        if rec.is_terminal:
            return
        held_sleep = self.wf is None and rec.wait is not None and rec.wait.kind == "sleep"
        # Held (no definition to wake it on): only its timeout runs.
        due = rec.deadline if held_sleep else wakes_at(rec)
        if due is None:
            return
        delay = max(0.0, seconds_until(due))
        if self._failures:  # the store refused the last try: back off
            delay = max(delay, min(2.0 ** self._failures, 30.0))
        self._timer = asyncio.get_running_loop().call_later(delay, self._expire)

    def _expire(self) -> None:
        self._timer = None
        wf = self.wf
        try:
            future = self.apply(lambda rec: T.wait_expired(rec, utcnow(), wf))
        except InvalidTransitionError:
            return
        if future is None:
            self.arm()  # woken early (a clock step): look again later
        else:
            future.add_done_callback(retrieve)


def retrieve(future: asyncio.Future[None]) -> None:
    # Writes nobody awaits still have their failure read (the writer logged it).
    if not future.cancelled():
        future.exception()
