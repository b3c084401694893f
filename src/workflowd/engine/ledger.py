"""The ledger: commits an execution's changes and, once durable, mirrors and publishes them.

Every change to an execution, from the runner or from a caller's approve or cancel, goes
through `write`: the store commits it (group commit), then the ledger keeps the committed
record in memory while the execution is unfinished, and hands its events to the hub. What
memory and followers see is therefore always committed.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from typing import Any

from workflowd.engine.hub import Hub
from workflowd.engine.outbox import Outbox
from workflowd.models import (
    Event,
    ExecutionRecord,
    IdempotencyRecord,
    LogLine,
    Progress,
    StepRecord,
    utcnow,
)
from workflowd.store import Delivery, Store, Write

__all__ = ["Ledger", "make_events", "progress_of"]


def progress_of(rec: ExecutionRecord, total: int, done_steps: Sequence[str],
                step_pct: float = 0.0, message: str | None = None) -> Progress:
    """Completed steps plus the running one's share; never goes down, 100 only when completed."""
    done = min(len(done_steps), total)
    raw = (done + step_pct / 100.0) / total * 100.0 if total else 0.0
    pct = round(max(rec.progress.percentage, min(raw, 99.0)), 1)
    return Progress(percentage=pct, completed_steps=done, total_steps=total,
                    message=message if message is not None else rec.progress.message)


def make_events(rec: ExecutionRecord, *items: tuple[str, dict[str, Any]]) -> list[Event]:
    """Events numbered on from the record's last `seq`, without gaps; made together, they carry
    one timestamp."""
    ts = utcnow()
    return [
        Event.make(rec.execution_id, rec.seq + n, type_, fields, rec.workflow_id, ts)
        for n, (type_, fields) in enumerate(items, start=1)
    ]


class Ledger:
    def __init__(self, store: Store, hub: Hub, outbox: Outbox | None = None,
                 keep_finished: int = 1000) -> None:
        self.store = store
        self.hub = hub
        self.outbox = outbox
        # The committed record of every unfinished execution, so live status needs no query.
        self.active: dict[str, ExecutionRecord] = {}
        # The most recently finished ones too (oldest dropped first): a client polling an
        # execution that just ended, or a list refreshing, gets them without a read either.
        self.finished: dict[str, ExecutionRecord] = {}
        self.keep_finished = keep_finished
        self.events_by_type: Counter[str] = Counter()
        store.on_deleted.append(self.forget)

    def write(
        self,
        rec: ExecutionRecord,
        *,
        steps: Sequence[StepRecord] = (),
        events: Sequence[Event] = (),
        logs: Sequence[LogLine] = (),
        idempotency: IdempotencyRecord | None = None,
        deliveries: Sequence[Delivery] = (),
    ) -> asyncio.Future[None]:
        """Queue the change; the future resolves once it is committed and published.

        Webhook deliveries for the events join the same transaction, so none is lost.
        """
        outbox = self.outbox
        if outbox is not None and events:
            deliveries = [*deliveries, *outbox.for_events(rec, events)]

        def committed() -> None:
            if rec.is_terminal:
                self.active.pop(rec.execution_id, None)
                self._keep_finished(rec)
            else:
                self.active[rec.execution_id] = rec
            for event in events:
                self.events_by_type[event.type] += 1
            self.hub.publish(events)
            if deliveries and outbox is not None:
                outbox.wake()

        return self.store.writer.submit(
            Write(execution=rec, steps=steps, events=events, logs=logs,
                  idempotency=idempotency, deliveries=deliveries, on_commit=committed)
        )

    async def get(self, execution_id: str) -> ExecutionRecord | None:
        rec = self.active.get(execution_id) or self.finished.get(execution_id)
        if rec is not None:
            return rec
        return await self.store.get_execution(execution_id)

    def forget(self, execution_ids: Sequence[str]) -> None:
        """Drop deleted executions from what is kept in memory."""
        for execution_id in execution_ids:
            self.finished.pop(execution_id, None)

    def _keep_finished(self, rec: ExecutionRecord) -> None:
        finished = self.finished
        finished.pop(rec.execution_id, None)
        finished[rec.execution_id] = rec
        if len(finished) > self.keep_finished:
            del finished[next(iter(finished))]
