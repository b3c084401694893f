"""The ledger: commits an execution's changes and, once they are durable, publishes them.

It turns a record with its events and step records into a store `Write` (the rows encoded as
JSON on the loop), adds the webhook deliveries its events cause (in the same
transaction, so none is lost), and after the commit hands the events to the hub: whatever a
follower sees is already in the events table.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from workflowd.engine.hub import Hub
from workflowd.engine.outbox import Outbox
from workflowd.engine.tally import Tally
from workflowd.records import Event, ExecutionRecord, IdempotencyRecord, StepRecord
from workflowd.store import Delivery, Store, Write
from workflowd.store.artifacts import ArtifactUse

__all__ = ["Ledger"]


class Ledger:
    def __init__(self, store: Store, hub: Hub, outbox: Outbox | None = None,
                 tally: Tally | None = None) -> None:
        self.store = store
        self.hub = hub
        self.outbox = outbox
        self.tally = tally if tally is not None else Tally()

    def write(
        self,
        rec: ExecutionRecord,
        events: Sequence[Event],
        steps: Sequence[StepRecord],
        *,
        base_seq: int,
        logs: Sequence[tuple[str, str]] = (),
        idempotency: IdempotencyRecord | None = None,
        deliveries: Sequence[Delivery] = (),
        on_commit: Callable[[], None] | None = None,
        artifact_uses: Sequence[ArtifactUse] = (),
        claim: bool = False,
    ) -> asyncio.Future[None]:
        """Queue the change; the future resolves once it is committed and published.
        `artifact_uses` (the artifacts a submit's input names) commit with it."""
        return self.store.write(self.prepare(
            rec, events, steps, base_seq=base_seq, logs=logs, idempotency=idempotency,
            deliveries=deliveries, on_commit=on_commit, artifact_uses=artifact_uses,
            claim=claim))

    def prepare(
        self,
        rec: ExecutionRecord,
        events: Sequence[Event],
        steps: Sequence[StepRecord],
        *,
        base_seq: int,
        logs: Sequence[tuple[str, str]] = (),
        idempotency: IdempotencyRecord | None = None,
        deliveries: Sequence[Delivery] = (),
        on_commit: Callable[[], None] | None = None,
        artifact_uses: Sequence[ArtifactUse] = (),
        claim: bool = False,
    ) -> Write:
        """The change as a store write that publishes its events once committed (a change
        made under a row lock commits it itself: `ClusterStore.locked_change`)."""
        outbox = self.outbox
        if outbox is not None and events:
            deliveries = [*deliveries, *outbox.for_events(rec, events)]

        def committed() -> None:
            if on_commit is not None:
                on_commit()
            counts = self.tally.events
            for event in events:
                counts[event.type] += 1
            for step in steps:  # finished steps' durations (a gate's is a person's wait)
                if step.duration_ms is not None and step.kind != "approval" \
                        and step.status in ("completed", "failed"):
                    self.tally.step(rec.workflow_id, step.duration_ms / 1000)
            self.hub.publish(events)
            if deliveries and outbox is not None:
                self.tally.deliveries_queued += len(deliveries)
                outbox.wake()

        return Write.of(rec, events, steps, base_seq=base_seq, logs=logs,
                        idempotency=idempotency, deliveries=deliveries, on_commit=committed,
                        artifact_uses=artifact_uses, claim=claim)

    def write_logs(self, logs: Sequence[tuple[str, str]]) -> asyncio.Future[None]:
        """Log lines alone (a step writing them as it runs)."""
        return self.store.write(Write(logs=logs))
