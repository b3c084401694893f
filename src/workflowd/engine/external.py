"""External steps: a worker outside the process reports progress and completes a step.

While it waits, the execution holds no task: only a timer for its deadline (armed again at
start-up from the committed wait). A complete is committed first, then the execution is queued
for a runner that finishes the cycle like any other.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Callable

import structlog

from workflowd.definitions import Workflow
from workflowd.engine.coalesce import Coalescer
from workflowd.engine.ledger import Ledger, make_events, progress_of
from workflowd.engine.runner import EXTERNAL_TIMED_OUT
from workflowd.errors import (
    ForbiddenError,
    InvalidTransitionError,
    UnknownExecutionError,
    UnknownStepError,
)
from workflowd.models import (
    CompleteBody,
    ExecutionRecord,
    ExternalWait,
    IdempotencyRecord,
    ProgressBody,
    StepRecord,
    parse_ts,
    utcnow,
)

__all__ = ["ExternalSteps"]

log = structlog.get_logger("workflowd.external")


class ExternalSteps:
    def __init__(self, ledger: Ledger, workflows: dict[str, Workflow],
                 resume: Callable[[ExecutionRecord], None], progress_interval: float) -> None:
        self.ledger = ledger
        self.workflows = workflows
        self.resume = resume
        self.progress_interval = progress_interval
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._reports: dict[str, Coalescer[ProgressBody]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    # ---- waiting ---------------------------------------------------------------------------

    def arm(self, rec: ExecutionRecord) -> None:
        """Start the deadline timer of a committed wait."""
        wait = rec.external
        assert wait is not None
        loop = asyncio.get_running_loop()
        delay = (parse_ts(wait.deadline) - parse_ts(utcnow())).total_seconds()
        self.disarm(rec.execution_id)
        self._timers[rec.execution_id] = loop.call_later(
            max(0.0, delay), self._expire, rec.execution_id, wait.token)

    def disarm(self, execution_id: str) -> None:
        timer = self._timers.pop(execution_id, None)
        if timer is not None:
            timer.cancel()
        reports = self._reports.pop(execution_id, None)
        if reports is not None:
            reports.flush()

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()

    def _expire(self, execution_id: str, token: str) -> None:
        self._timers.pop(execution_id, None)
        body = CompleteBody(success=False, error=EXTERNAL_TIMED_OUT)
        task = asyncio.get_running_loop().create_task(self._answer(execution_id, token, body))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, execution_id: str, token: str, body: CompleteBody) -> None:
        rec = self.ledger.active.get(execution_id)
        if rec is None or rec.external is None or rec.external.token != token:
            return  # answered meanwhile
        try:
            await self.complete(execution_id, rec.external.step, token, body)
        except Exception:
            log.exception("external_timeout_failed", execution_id=execution_id,
                          workflow_id=rec.workflow_id, cycle=rec.cycle)

    # ---- what a worker reports ------------------------------------------------------------

    async def complete(self, execution_id: str, step: str, token: str, body: CompleteBody,
                       remember: Callable[[ExecutionRecord], IdempotencyRecord] | None = None,
                       ) -> ExecutionRecord:
        rec = await self._waiting(execution_id, step, token)
        assert rec.external is not None
        self.disarm(execution_id)  # flushes held progress first, so it commits before this
        new = rec.evolve({"external": rec.external.evolve({"result": body}),
                                     "updated_at": utcnow()})
        await self.ledger.write(new, idempotency=remember(new) if remember else None)
        log.info("external_step_answered", execution_id=execution_id,
                 workflow_id=rec.workflow_id, cycle=rec.cycle, step=step, success=body.success)
        self.resume(new)
        return new

    async def progress(self, execution_id: str, step: str, token: str,
                       body: ProgressBody) -> ExecutionRecord:
        rec = await self._waiting(execution_id, step, token)
        reports = self._reports.get(execution_id)
        if reports is None:
            reports = self._reports[execution_id] = Coalescer(
                self.progress_interval, lambda b: self._store_progress(execution_id, b))
        reports.push(body)
        return rec

    def _store_progress(self, execution_id: str, body: ProgressBody) -> None:
        rec = self.ledger.active.get(execution_id)
        wf = self.workflows.get(rec.workflow_id) if rec else None
        wait = rec.external if rec else None
        step = wf.get_step(wait.step) if wf and wait else None
        if rec is None or wf is None or wait is None or step is None or wait.result is not None:
            return
        fields = {"step": step.name, "cycle": wait.cycle, **body.model_dump()}
        record = StepRecord(
            step_id=f"{execution_id}:{wait.cycle}", name=step.name, kind=step.kind,
            agent_name=step.agent, tool_name=step.tool, status="waiting", cycle=wait.cycle,
            attempt=1, started_at=wait.started_at, progress=body.percentage,
            metadata={"external": True, "url": step.url, "message": body.message,
                      "current_task": body.current_task, "custom_data": body.custom_data})
        events = make_events(rec, ("step_progress", fields))
        progress = progress_of(rec, len(wf.steps), rec.done_steps, body.percentage, body.message)
        new = rec.evolve({"progress": progress, "seq": rec.seq + len(events),
                                     "updated_at": utcnow()})
        self.ledger.write(new, steps=[record], events=events).add_done_callback(_retrieve)

    async def _waiting(self, execution_id: str, step: str, token: str) -> ExecutionRecord:
        """The execution if `step` is its waiting external step and `token` is that run's."""
        rec = await self.ledger.get(execution_id)
        if rec is None:
            raise UnknownExecutionError(f"no execution with id {execution_id!r}")
        wf = self.workflows.get(rec.workflow_id)
        if wf is None or wf.get_step(step) is None:
            raise UnknownStepError(f"workflow {rec.workflow_id!r} declares no step {step!r}")
        wait: ExternalWait | None = rec.external
        if wait is None or wait.step != step or wait.result is not None:
            raise InvalidTransitionError(f"step {step!r} of {execution_id} is not running")
        if not token or not hmac.compare_digest(token.encode(), wait.token.encode()):
            raise ForbiddenError("wrong or stale token for this step run")
        return rec


def _retrieve(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()
