"""Chores of a cluster, done by one node at a time: the one holding the leader row.

The leader row (`leader`, name `chores`) has an expiry its holder renews every
`poll_interval`; when the holder stops (killed, paused, cut off), another node takes the row
once it expired. A row, not an advisory lock: a lock held by a session breaks behind a
transaction pooler (PgBouncer), and the row also says who leads, for operators.

The leader: times out waits of executions that no node holds (an approval past the workflow's
timeout, an external worker past its step's) and wakes their durable sleeps, sends the webhook
outbox, sweeps retention (executions, then the artifacts no execution uses, whose files are in
`[artifacts] dir`, shared by the nodes) and drops mailbox requests nobody collected.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

import structlog

from workflowd.clock import utcnow
from workflowd.config import RetentionSettings
from workflowd.engine import transitions as T
from workflowd.engine.outbox import Outbox
from workflowd.engine.retention import sweep
from workflowd.errors import InvalidTransitionError, WorkflowdError
from workflowd.records import ExecutionRecord
from workflowd.store.cluster import OwnedElsewhere

if TYPE_CHECKING:
    from workflowd.engine.cluster import Cluster

__all__ = ["LEADER", "Chores"]

log = structlog.get_logger("workflowd.chores")

LEADER = "chores"
_BATCH = 100


class Chores:
    def __init__(self, cluster: Cluster, retention: RetentionSettings | None,
                 outbox: Outbox | None) -> None:
        self.cluster = cluster
        self.retention = retention
        self.outbox = outbox
        self.leading = False
        self._outbox_task: asyncio.Task[None] | None = None
        self._next_sweep = 0.0

    async def run_forever(self) -> None:
        cluster = self.cluster
        poll = cluster.settings.poll_interval
        # The row outlives a few missed renewals, not much more: a dead leader's chores
        # wait at most this long.
        ttl = max(3 * poll, 2.0)
        loop = asyncio.get_running_loop()
        while True:
            leading = await cluster.ops.lead(LEADER, ttl)
            if leading != self.leading:
                self.leading = leading
                log.info("leader_taken" if leading else "leader_lost",
                         node_id=cluster.node_id)
                self._outbox(leading)
            if leading:
                await self._expire_waits()
                if self.retention is not None and loop.time() >= self._next_sweep:
                    self._next_sweep = loop.time() + self.retention.sweep_interval
                    await sweep(cluster.scheduler.store, self.retention.finished_after,
                                cluster.scheduler.artifacts)
                    await cluster.ops.sweep_requests(3600.0)
            await asyncio.sleep(poll)

    async def stop(self) -> None:
        self._outbox(False)
        task, self._outbox_task = self._outbox_task, None
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _outbox(self, leading: bool) -> None:
        """The outbox runs on the leader only, so that a delivery is sent by one node."""
        if self.outbox is None:
            return
        if leading and self._outbox_task is None:
            self._outbox_task = asyncio.create_task(self.outbox.run(), name="outbox")
        elif not leading and self._outbox_task is not None:
            self._outbox_task.cancel()
            self._outbox_task = None

    async def _expire_waits(self) -> None:
        """Time out the waits that are due of executions nobody holds (a node holding one arms
        its own timer)."""
        cluster = self.cluster
        runnable = await cluster.runnable()
        for execution_id in await cluster.ops.due_waits(utcnow(), _BATCH, runnable):
            if execution_id in cluster.scheduler.owners:
                continue

            def make(rec: ExecutionRecord) -> T.Change | None:
                # Its definition (loaded by `change_unheld`, a JSON one's too) wakes a sleep.
                return T.wait_expired(rec, utcnow(), cluster.scheduler.workflow_of(rec))

            try:
                await cluster.change_unheld(execution_id, make, None)
            except (OwnedElsewhere, InvalidTransitionError):
                continue
            except WorkflowdError as exc:
                log.warning("wait_expiry_failed", execution_id=execution_id, error=exc.detail)
