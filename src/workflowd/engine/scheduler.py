"""The scheduler: admits executions, runs each as a tracked task, and owns every transition a
caller asks for (submit, approve, reject, cancel), recovery at start-up and the drain at stop.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import heapq
import itertools
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import structlog

from workflowd.config import EngineSettings
from workflowd.definitions import Workflow
from workflowd.engine.external import ExternalSteps
from workflowd.engine.hub import Hub
from workflowd.engine.ledger import Ledger, make_events, progress_of
from workflowd.engine.outbox import Outbox
from workflowd.engine.runner import Runner
from workflowd.errors import (
    InvalidTransitionError,
    NotReadyError,
    QueueFullError,
    UnknownExecutionError,
    UnknownWorkflowError,
)
from workflowd.ids import new_execution_id
from workflowd.models import (
    Approval,
    ErrorInfo,
    ExecutionRecord,
    IdempotencyRecord,
    Progress,
    StepRecord,
    SubmitBody,
    ms_between,
    parse_ts,
    utcnow,
)
from workflowd.store import Store

__all__ = ["Remember", "Scheduler"]

log = structlog.get_logger("workflowd.scheduler")

# Builds the answer kept for an `Idempotency-Key`, committed with the change it answers.
Remember = Callable[[ExecutionRecord], IdempotencyRecord]


class Scheduler:
    def __init__(self, workflows: dict[str, Workflow], store: Store, hub: Hub,
                 settings: EngineSettings, progress_interval: float = 0.1,
                 outbox: Outbox | None = None, base_url: str = "") -> None:
        self.workflows = workflows
        self.progress_interval = progress_interval
        self.base_url = base_url
        self.store = store
        self.hub = hub
        self.ledger = Ledger(store, hub, outbox)
        self.external = ExternalSteps(self.ledger, workflows, self._resume, progress_interval)
        self.settings = settings
        self.runners: dict[str, tuple[Runner, asyncio.Task[None]]] = {}
        self.ready = False
        self._accepting = False
        self._draining = False
        self._heap: list[tuple[int, int, str]] = []
        self._queued: set[str] = set()
        self._arrival = itertools.count()
        self._reserved = 0
        self._busy: set[str] = set()
        self._resume_later: set[str] = set()
        self._gate_timers: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    # ---- figures --------------------------------------------------------------------------

    @property
    def queued(self) -> int:
        return len(self._queued)

    @property
    def running(self) -> int:
        return len(self.runners)

    # ---- start and stop -------------------------------------------------------------------

    async def recover(self) -> int:
        """Take up every unfinished execution from the store; answer how many."""
        unfinished = await self.store.unfinished()
        for rec in unfinished:
            self.ledger.active[rec.execution_id] = rec
            if rec.external is not None and rec.external.result is None:
                self.external.arm(rec)
            elif rec.status in ("queued", "running"):
                self._enqueue(rec)
            else:
                self._arm_gate_deadline(rec)
        self._accepting = True
        self.ready = True
        log.info("recovered", executions=len(unfinished), queued=self.queued)
        self._pump()
        return len(unfinished)

    async def drain(self, grace: float) -> None:
        """Stop admitting, let running cycles finish within `grace`, then cancel the rest.

        A shutdown's cancel writes nothing: those executions resume from their last committed
        cycle at the next start. Safe to call twice.
        """
        self._accepting = False
        self._draining = True
        self.external.close()
        for timer in self._gate_timers.values():
            timer.cancel()
        tasks = [task for _, task in self.runners.values()]
        if not tasks:
            return
        log.info("draining", running=len(tasks), grace=grace)
        _, pending = await asyncio.wait(tasks, timeout=grace)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=5.0)
            log.info("drain_cancelled", executions=len(pending))

    # ---- transitions a caller asks for ----------------------------------------------------

    async def submit(self, workflow_id: str, body: SubmitBody,
                     remember: Remember | None = None) -> ExecutionRecord:
        self._check_accepting()
        wf = self.workflows.get(workflow_id)
        if wf is None:
            raise UnknownWorkflowError(f"no workflow with id {workflow_id!r}")
        waiting = body.require_approval
        if not waiting:
            self._check_room()
        now = utcnow()
        execution_id = new_execution_id()
        rec = ExecutionRecord(
            execution_id=execution_id, workflow_id=wf.id, workflow_version=wf.version,
            status="awaiting_approval" if waiting else "queued", input=body.input,
            max_cycles=wf.max_cycles or self.settings.default_max_cycles,
            priority=body.priority, labels=body.labels,
            progress=Progress(total_steps=len(wf.steps)),
            approval=Approval() if waiting else None,
            created_at=now, updated_at=now, next_step=wf.steps[0].name,
            callback_url=str(body.callback_url) if body.callback_url else None,
        )
        items: list[tuple[str, dict[str, Any]]] = [("workflow_queued", {"priority": body.priority})]
        if waiting:
            items = [("approval_required", {"step": None, "cycle": 0, "prompt": None})]
        events = make_events(rec, *items)
        rec = rec.evolve({"seq": len(events)})
        self._reserved += 0 if waiting else 1
        try:
            await self.ledger.write(rec, events=events,
                                    idempotency=remember(rec) if remember else None)
        finally:
            self._reserved -= 0 if waiting else 1
        log.info("execution_submitted", execution_id=execution_id, workflow_id=wf.id,
                 status=rec.status, cycle=0)
        if not waiting:
            self._enqueue(rec)
            self._pump()
        return rec

    async def approve(self, execution_id: str, comment: str | None, decided_by: str,
                      remember: Remember | None = None) -> ExecutionRecord:
        async with self._deciding(execution_id) as rec:
            self._check_room()
            now = utcnow()
            gate_record = await self._gate_record(rec, "completed", now)
            items: list[tuple[str, dict[str, Any]]] = []
            if gate_record is not None:
                items.append(_gate_finished(gate_record))
            items.append(("approval_granted", {"step": rec.gate, "decided_by": decided_by,
                                               "comment": comment}))
            items.append(("workflow_queued", {"priority": rec.priority}))
            approval = Approval(status="approved", decided_by=decided_by, decided_at=now,
                                comment=comment)
            changes: dict[str, Any] = {"status": "queued", "approval": approval, "gate": None,
                                       "current_step": None}
            if rec.gate is not None and rec.gate not in rec.done_steps:
                done_steps = [*rec.done_steps, rec.gate]
                changes["done_steps"] = done_steps
                changes["progress"] = progress_of(rec, rec.progress.total_steps, done_steps)
            rec = await self._decide(rec, changes, items, gate_record, remember)
            self._enqueue(rec)
            self._pump()
        return rec

    async def reject(self, execution_id: str, reason: str | None, decided_by: str,
                     remember: Remember | None = None) -> ExecutionRecord:
        async with self._deciding(execution_id) as rec:
            now = utcnow()
            gate_record = await self._gate_record(rec, "failed", now)
            items: list[tuple[str, dict[str, Any]]] = []
            if gate_record is not None:
                items.append(_gate_finished(gate_record))
            items.append(("approval_rejected", {"step": rec.gate, "decided_by": decided_by,
                                                "comment": reason}))
            items.append(("workflow_rejected", {"reason": reason}))
            approval = Approval(status="rejected", decided_by=decided_by, decided_at=now,
                                comment=reason)
            return await self._decide(rec, {"status": "rejected", "approval": approval,
                                            "current_step": None, "finished_at": now},
                                      items, gate_record, remember)

    async def cancel(self, execution_id: str, remember: Remember | None = None) -> ExecutionRecord:
        entry = self.runners.get(execution_id)
        if entry is not None:
            runner, task = entry
            if not runner.cancel_requested:
                runner.cancel_requested = True
                runner.cancel_remember = remember
                task.cancel()
            await asyncio.wait([task])
            rec = await self._get(execution_id)
            if rec.status == "cancelled":
                return rec
            # It reached a gate or an end before the cancel landed: decide from where it is.
        allowed = ("queued", "awaiting_approval", "running")
        async with self._deciding(execution_id, allowed) as rec:
            if rec.status == "running" and rec.external is None:
                raise InvalidTransitionError(f"execution {execution_id} is being stopped")
            self._queued.discard(execution_id)
            self.external.disarm(execution_id)
            now = utcnow()
            gate_record = await self._gate_record(rec, "failed", now, code="cancelled")
            items: list[tuple[str, dict[str, Any]]] = []
            if gate_record is not None:
                items.append(_gate_finished(gate_record))
            error = ErrorInfo(code="cancelled", message="cancelled by request")
            items.append(("workflow_cancelled", {"error": error.model_dump()}))
            try:
                return await self._decide(rec, {"status": "cancelled", "error": error,
                                                "current_step": None, "finished_at": now,
                                                "external": None},
                                          items, gate_record, remember)
            except BaseException:
                if rec.status == "queued":
                    self._enqueue(rec)
                elif rec.external is not None:
                    self.external.arm(rec)
                raise

    async def get(self, execution_id: str) -> ExecutionRecord:
        return await self._get(execution_id)

    # ---- internals ------------------------------------------------------------------------

    async def _get(self, execution_id: str) -> ExecutionRecord:
        rec = await self.ledger.get(execution_id)
        if rec is None:
            raise UnknownExecutionError(f"no execution with id {execution_id!r}")
        return rec

    @asynccontextmanager
    async def _deciding(self, execution_id: str, allowed: tuple[str, ...] = ("awaiting_approval",),
                        ) -> AsyncIterator[ExecutionRecord]:
        """Hold the execution for one caller's transition; others get 409 meanwhile."""
        rec = self.ledger.active.get(execution_id)
        if rec is None:
            # Not in memory: finished (its record is in the store) or unknown.
            rec = await self._get(execution_id)
        if rec.status not in allowed or execution_id in self._busy:
            raise InvalidTransitionError(
                f"execution {execution_id} is {rec.status}; this needs {' or '.join(allowed)}")
        self._busy.add(execution_id)
        try:
            yield rec
        finally:
            self._busy.discard(execution_id)

    async def _gate_record(self, rec: ExecutionRecord, status: str, now: str,
                           code: str | None = None) -> StepRecord | None:
        """The record of the step the execution waits at (a gate or an external step), decided."""
        if rec.gate is not None:
            cycle = rec.cycle
        elif rec.external is not None:
            cycle = rec.external.cycle
        else:
            return None
        record = await self.store.step_at(rec.execution_id, cycle)
        if record is None:
            return None
        error = ErrorInfo(code=code or "rejected", message=f"approval {code or 'rejected'}")
        return record.evolve({
            "status": status, "completed_at": now,
            "progress": 100.0 if status == "completed" else record.progress,
            "error": None if status == "completed" else error,
            "duration_ms": ms_between(record.started_at, now),
        })

    async def _decide(self, rec: ExecutionRecord, changes: dict[str, Any],
                      items: list[tuple[str, dict[str, Any]]], gate_record: StepRecord | None,
                      remember: Remember | None) -> ExecutionRecord:
        events = make_events(rec, *items)
        new = rec.evolve({**changes, "seq": rec.seq + len(events),
                                     "updated_at": utcnow()})
        await self.ledger.write(new, steps=[gate_record] if gate_record else [], events=events,
                                idempotency=remember(new) if remember else None)
        log.info("execution_decided", execution_id=new.execution_id,
                 workflow_id=new.workflow_id, cycle=new.cycle, status=new.status)
        return new

    def _is_draining(self) -> bool:
        return self._draining

    def _check_accepting(self) -> None:
        if not self._accepting:
            raise NotReadyError("the service is starting or shutting down")

    def _check_room(self) -> None:
        if self.queued + self._reserved >= self.settings.max_queued:
            raise QueueFullError(
                f"{self.settings.max_queued} executions are already queued", retry_after=1)

    def _enqueue(self, rec: ExecutionRecord) -> None:
        self._queued.add(rec.execution_id)
        heapq.heappush(self._heap, (-rec.priority, next(self._arrival), rec.execution_id))

    def _pump(self) -> None:
        """Start queued executions, highest priority first, while there is room."""
        while (not self._draining and self._heap
               and len(self.runners) < self.settings.max_concurrent):
            _, _, execution_id = heapq.heappop(self._heap)
            if execution_id not in self._queued:
                continue  # cancelled while queued
            self._queued.discard(execution_id)
            rec = self.ledger.active.get(execution_id)
            if rec is not None and rec.status in ("queued", "running"):
                self._launch(rec)

    def _launch(self, rec: ExecutionRecord) -> None:
        wf = self.workflows.get(rec.workflow_id)
        if wf is None:
            log.error("workflow_missing", execution_id=rec.execution_id,
                      workflow_id=rec.workflow_id, cycle=rec.cycle)
            return
        runner = Runner(wf, rec, self.ledger, self.settings, self._is_draining,
                        self.progress_interval, self.base_url)
        # A fresh context, so the request that submitted it leaks no log fields into the run.
        task = asyncio.create_task(runner.run(), name=f"execution:{rec.execution_id}",
                                   context=contextvars.Context())
        self.runners[rec.execution_id] = (runner, task)
        task.add_done_callback(functools.partial(self._reap, rec.execution_id))

    def _reap(self, execution_id: str, task: asyncio.Task[None]) -> None:
        entry = self.runners.pop(execution_id, None)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("runner_crashed", execution_id=execution_id, exc_info=exc)
        elif entry is not None and not self._draining:
            rec = self.ledger.active.get(execution_id)
            if rec is not None and execution_id in self._resume_later:
                self._enqueue(rec)
            elif rec is not None and rec.external is not None and rec.external.result is None:
                self.external.arm(rec)  # it waits for a worker, holding no task
            elif rec is not None:
                self._arm_gate_deadline(rec)
        self._resume_later.discard(execution_id)
        self._pump()

    def _arm_gate_deadline(self, rec: ExecutionRecord) -> None:
        """An execution at a gate holds no task, so its whole-execution timeout needs a timer."""
        if rec.status != "awaiting_approval" or rec.deadline is None:
            return
        delay = (parse_ts(rec.deadline) - parse_ts(utcnow())).total_seconds()
        old = self._gate_timers.pop(rec.execution_id, None)
        if old is not None:
            old.cancel()
        self._gate_timers[rec.execution_id] = asyncio.get_running_loop().call_later(
            max(0.0, delay), self._expire_gate, rec.execution_id)

    def _expire_gate(self, execution_id: str) -> None:
        self._gate_timers.pop(execution_id, None)
        task = asyncio.get_running_loop().create_task(self._time_out_gate(execution_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _time_out_gate(self, execution_id: str) -> None:
        rec = self.ledger.active.get(execution_id)
        if (rec is None or rec.status != "awaiting_approval" or rec.deadline is None
                or parse_ts(rec.deadline) > parse_ts(utcnow())):
            return  # decided meanwhile
        try:
            async with self._deciding(execution_id) as rec:
                now = utcnow()
                gate_record = await self._gate_record(rec, "failed", now, code="timed_out")
                error = ErrorInfo(code="timed_out",
                                  message="the execution ran past its timeout at an approval")
                items: list[tuple[str, dict[str, Any]]] = []
                if gate_record is not None:
                    items.append(_gate_finished(gate_record))
                items.append(("workflow_timed_out", {"error": error.model_dump()}))
                await self._decide(rec, {"status": "timed_out", "error": error,
                                         "current_step": None, "finished_at": now},
                                   items, gate_record, None)
        except InvalidTransitionError:
            return  # someone is deciding it right now

    def _resume(self, rec: ExecutionRecord) -> None:
        """Queue an execution whose external step was answered, to finish that cycle."""
        if rec.execution_id in self.runners:
            # Answered before the task that started the wait was reaped: queue it after.
            self._resume_later.add(rec.execution_id)
            return
        self._enqueue(rec)
        self._pump()


def _gate_finished(record: StepRecord) -> tuple[str, dict[str, Any]]:
    return ("step_finished", {"step": record.name, "cycle": record.cycle,
                              "status": record.status, "duration_ms": record.duration_ms})
