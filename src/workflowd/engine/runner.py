"""The runner: one execution's cycle loop, run as one tracked asyncio task.

A cycle picks the step, runs it under its timeouts with retries, then commits the snapshot, the
step record and the cycle's events in one write before the next cycle starts. A gate ends the
task (nothing waits in memory); an approve starts a new runner.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from workflowd.config import EngineSettings
from workflowd.context import Context, ProgressReport
from workflowd.definitions import Done, Goto, StepDef, Workflow
from workflowd.engine.coalesce import Coalescer
from workflowd.engine.ledger import Ledger, make_events, progress_of
from workflowd.models import (
    API_PREFIX,
    Approval,
    CurrentStep,
    Decision,
    ErrorInfo,
    Event,
    ExecutionRecord,
    ExternalWait,
    IdempotencyRecord,
    LogLine,
    Progress,
    StepRecord,
    dumps,
    format_ts,
    json_copy,
    ms_between,
    parse_ts,
    utcnow,
)
from workflowd.store import Delivery

__all__ = ["Runner"]

log = structlog.get_logger("workflowd.runner")

EventItem = tuple[str, dict[str, Any]]


@dataclass(slots=True)
class _Unwritten:
    """Events and step records made since the runner's last write, to go with its next one."""

    events: list[Event] = field(default_factory=list)
    steps: dict[int, StepRecord] = field(default_factory=dict)

    def add(self, events: Sequence[Event], steps: Sequence[StepRecord]) -> None:
        self.events.extend(events)
        for step in steps:
            self.steps[step.cycle or 0] = step  # a later record of a cycle replaces the earlier


@dataclass(slots=True)
class _Outcome:
    """How a cycle's attempt series ended."""

    attempt: int
    value: Any = None
    ctx: Context | None = None
    error: ErrorInfo | None = None
    timed_out: bool = False


class Runner:
    # Slots: thousands of runners wait at once, and a dict each costs more than their fields.
    __slots__ = ("_flush_handle", "_logs", "_pending", "_reports", "_step", "_unwritten",
                 "base_url", "cancel_remember", "cancel_requested", "ledger", "limits",
                 "progress_interval", "rec", "stopping", "wf")

    def __init__(
        self,
        wf: Workflow,
        rec: ExecutionRecord,
        ledger: Ledger,
        limits: EngineSettings,
        stopping: Callable[[], bool],
        progress_interval: float = 0.1,
        base_url: str = "",
    ) -> None:
        self.wf = wf
        self.rec = rec
        self.ledger = ledger
        self.limits = limits
        self.progress_interval = progress_interval
        self.base_url = base_url
        self._reports: Coalescer[ProgressReport] = Coalescer(progress_interval,
                                                             self._store_progress)
        self.stopping = stopping
        self.cancel_requested = False
        self.cancel_remember: Callable[[ExecutionRecord], IdempotencyRecord] | None = None
        self._pending: asyncio.Future[None] | None = None
        self._unwritten: _Unwritten | None = None  # made when something waits to be written
        self._flush_handle: asyncio.Handle | None = None
        self._step: StepRecord | None = None
        self._logs: list[LogLine] = []

    @property
    def execution_id(self) -> str:
        return self.rec.execution_id

    # ---- the loop -------------------------------------------------------------------------

    async def run(self) -> None:
        structlog.contextvars.bind_contextvars(
            execution_id=self.execution_id, workflow_id=self.wf.id, cycle=self.rec.cycle
        )
        try:
            if self.rec.status == "queued":
                self._start()
            while not self.stopping():
                if await self._cycle():
                    return
                if self.wf.cycle_delay:
                    await asyncio.sleep(self.wf.cycle_delay)
        except asyncio.CancelledError:
            if not self.cancel_requested:
                raise  # a shutdown: write nothing, the execution resumes at the next start
            await self._cancelled()

    def _start(self) -> None:
        rec = self.rec
        changes: dict[str, Any] = {"status": "running", "current_step": None}
        if rec.started_at is None:
            now = datetime.now(UTC)
            changes["started_at"] = format_ts(now)
            if self.wf.timeout is not None:
                changes["deadline"] = format_ts(now + timedelta(seconds=self.wf.timeout))
        self._commit_soon(changes,
                          [("workflow_started", {"resumed": rec.started_at is not None})])

    async def _cycle(self) -> bool:
        """Run one cycle; answer whether the task is over (terminal, or waiting at a gate)."""
        rec = self.rec
        if rec.external is not None:
            return await self._finish_external(rec.external)
        if rec.next_step is None:
            await self._complete(rec.state, [])
            return True
        step = self.wf.get_step(rec.next_step)
        if step is None:
            await self._end("failed", ErrorInfo(code="unknown_step",
                                                message=f"no step named {rec.next_step!r}"))
            return True
        if rec.cycle >= rec.max_cycles:
            await self._end("failed", ErrorInfo(
                code="cycle_limit_exceeded",
                message=f"a cycle past max_cycles={rec.max_cycles} was asked for"))
            return True
        if self._seconds_left() <= 0:
            await self._end("timed_out", _timed_out_error(self.wf))
            return True
        cycle = rec.cycle + 1
        structlog.contextvars.bind_contextvars(cycle=cycle)
        started = utcnow()
        record = StepRecord(
            step_id=f"{rec.execution_id}:{cycle}", name=step.name, kind=step.kind,
            agent_name=step.agent, tool_name=step.tool,
            status="waiting" if step.is_gate or step.external else "running",
            cycle=cycle, attempt=1, started_at=started, progress=0.0,
        )
        current = CurrentStep(name=step.name, kind=step.kind, index=step.index, started_at=started)
        if step.is_gate:
            await self._enter_gate(step, cycle, record, current)
            return True
        if step.external:
            await self._enter_external(step, cycle, record, current)
            return True
        self._step = record
        self._reports.reset()
        self._logs = []
        self._commit_soon({"current_step": current},
                          [("step_started", {"step": step.name, "cycle": cycle,
                                             "kind": step.kind, "attempt": 1})],
                          steps=[record])
        loop = asyncio.get_running_loop()
        began = loop.time()
        try:
            outcome = await self._attempts(step, cycle)
        finally:
            self._reports.flush()
        duration_ms = int((loop.time() - began) * 1000)
        return await self._finish_cycle(step, outcome, duration_ms)

    # ---- running a step -------------------------------------------------------------------

    async def _attempts(self, step: StepDef, cycle: int) -> _Outcome:
        loop = asyncio.get_running_loop()
        cycle_budget = self.wf.cycle_timeout or self.limits.default_cycle_timeout
        cycle_end = loop.time() + cycle_budget
        exec_end = loop.time() + self._seconds_left()
        attempt = 0
        while True:
            attempt += 1
            ctx = self._context(step, cycle, attempt)
            limit = min(loop.time() + (step.timeout or cycle_budget), cycle_end, exec_end)
            timer = asyncio.timeout_at(limit)
            try:
                async with timer:
                    value = await _call(step, ctx)
                if self.cancel_requested:
                    raise asyncio.CancelledError  # the step swallowed the cancel; honour it
                return _Outcome(attempt=attempt, value=value, ctx=ctx)
            except TimeoutError as exc:
                if not timer.expired():
                    error = ErrorInfo(code="step_failed", message=f"TimeoutError: {exc}")
                elif limit >= exec_end:
                    return _Outcome(attempt=attempt, ctx=ctx, timed_out=True)
                else:
                    error = ErrorInfo(code="step_timeout",
                                      message=f"step {step.name!r} ran past its timeout")
            except Exception as exc:  # noqa: BLE001 - a step's failure is data, CancelledError passes
                error = ErrorInfo(code="step_failed", message=f"{type(exc).__name__}: {exc}")
            if attempt > step.retries or loop.time() >= cycle_end:
                return _Outcome(attempt=attempt, ctx=ctx, error=error)
            await self._retry_pause(step, cycle, attempt, error, exec_end)
            if loop.time() >= exec_end:
                return _Outcome(attempt=attempt, ctx=ctx, timed_out=True)

    async def _retry_pause(self, step: StepDef, cycle: int, attempt: int, error: ErrorInfo,
                           exec_end: float) -> None:
        assert self._step is not None
        self._step = self._step.evolve({"attempt": attempt + 1, "error": error})
        log.info("step_retrying", step=step.name, attempt=attempt, error=error.message)
        self._commit({}, [("step_retrying", {"step": step.name, "cycle": cycle,
                                             "attempt": attempt, "error": error.message})],
                     steps=[self._step])
        loop = asyncio.get_running_loop()
        delay = step.backoff * (2 ** (attempt - 1))
        await asyncio.sleep(max(0.0, min(delay, exec_end - loop.time())))

    def _context(self, step: StepDef, cycle: int, attempt: int) -> Context:
        rec = self.rec
        return Context(
            execution_id=rec.execution_id, workflow_id=rec.workflow_id, input=rec.input,
            state=json_copy(rec.state), cycle=cycle, attempt=attempt, step=step.name,
            _on_progress=self._progress, _on_log=self._log_line,
            _loop=asyncio.get_running_loop(),
        )

    def _progress(self, report: ProgressReport) -> None:
        # Coalesced: a step reporting in a tight loop must not flood the store or followers.
        if self._step is not None:
            self._reports.push(report)

    def _store_progress(self, report: ProgressReport) -> None:
        step = self._step
        assert step is not None
        fields = {
            "step": step.name, "cycle": step.cycle, "percentage": report.percentage,
            "message": report.message, "current_task": report.current_task,
            "estimated_remaining_seconds": report.estimated_remaining_seconds,
            "custom_data": report.custom_data,
        }
        try:
            dumps(report.custom_data)
        except Exception:  # noqa: BLE001 - a bad custom field must not kill the run
            fields["custom_data"] = {"error": "custom_data is not JSON-able"}
        metadata = {k: fields[k] for k in ("message", "current_task", "custom_data")}
        self._step = step.evolve({"progress": report.percentage, "metadata": metadata})
        self._commit({"progress": self._overall(report.percentage, report.message)},
                     [("step_progress", fields)], steps=[self._step])

    def _log_line(self, message: str, fields: dict[str, Any]) -> None:
        step = self._step
        try:
            extra = json_copy(fields)
        except Exception:  # noqa: BLE001 - keep the line, drop what cannot be stored
            extra = {k: repr(v) for k, v in fields.items()}
        line = {"ts": utcnow(), "cycle": step.cycle if step else self.rec.cycle,
                "step": step.name if step else None, "message": message, "fields": extra}
        self._logs.append(LogLine(self.execution_id, dumps(line)))
        log.info("step_log", message=message, **extra)

    def _overall(self, step_pct: float, message: str | None,
                 done_steps: Sequence[str] | None = None) -> Progress:
        rec = self.rec
        return progress_of(rec, len(self.wf.steps),
                           rec.done_steps if done_steps is None else done_steps, step_pct, message)

    # ---- ending a cycle -------------------------------------------------------------------

    async def _finish_cycle(self, step: StepDef, outcome: _Outcome, duration_ms: int) -> bool:
        assert self._step is not None
        record = self._step.evolve({
            "attempt": outcome.attempt, "completed_at": utcnow(), "duration_ms": duration_ms,
        })
        self._step = None
        if outcome.timed_out:
            await self._end("timed_out", _timed_out_error(self.wf), record)
            return True
        if outcome.error is not None:
            await self._end("failed", outcome.error, record)
            return True
        ctx = outcome.ctx
        assert ctx is not None
        try:
            state = json_copy(ctx.state)
            decisions = [(name, json_copy(outcome_)) for name, outcome_ in ctx.decisions]
            value = outcome.value
            output = None if isinstance(value, Goto) else json_copy(
                value.result if isinstance(value, Done) else value)
        except Exception as exc:  # noqa: BLE001 - what a step leaves must be storable
            await self._end("failed", ErrorInfo(code="not_serializable", message=str(exc)), record)
            return True
        if isinstance(value, Goto) and self.wf.get_step(value.target) is None:
            error = ErrorInfo(code="unknown_step", message=f"goto to unknown step {value.target!r}")
            await self._end("failed", error, record)
            return True
        return await self._commit_cycle(step, record, state, decisions, value, output)

    async def _commit_cycle(self, step: StepDef, record: StepRecord, state: dict[str, Any],
                            decisions: list[tuple[str, Any]], value: Any, output: Any) -> bool:
        rec = self.rec
        cycle = record.cycle or rec.cycle + 1
        record = record.evolve({"status": "completed", "progress": 100.0,
                                           "error": None, "output": output})
        if isinstance(value, Goto):
            metadata = {**record.metadata, "goto": value.target}
            record = record.evolve({"metadata": metadata})
        now = utcnow()
        done_steps = rec.done_steps if step.name in rec.done_steps else [*rec.done_steps, step.name]
        all_decisions = dict(rec.decisions)
        items: list[EventItem] = []
        for name, outcome_ in decisions:
            all_decisions[name] = Decision(outcome=outcome_, cycle=cycle, timestamp=now)
            items.append(("branch_decided", {"step": step.name, "cycle": cycle, "name": name,
                                              "outcome": outcome_}))
        items.append(("step_finished", {"step": step.name, "cycle": cycle, "status": "completed",
                                        "duration_ms": record.duration_ms,
                                        "attempt": record.attempt}))
        items.append(("cycle_completed", {"cycle": cycle}))
        changes: dict[str, Any] = {"cycle": cycle, "state": state, "decisions": all_decisions,
                                   "done_steps": done_steps, "current_step": None,
                                   "external": None}
        next_step = self._next_after(step, value)
        if isinstance(value, Done) or next_step is None:
            result = output if isinstance(value, Done) else state
            await self._complete(result, items, changes, record)
            return True
        changes["next_step"] = next_step
        changes["progress"] = self._overall(0.0, None, done_steps)
        await self._commit(changes, items, steps=[record], logs=self._take_logs())
        log.debug("cycle_committed", step=step.name, next_step=next_step)
        return False

    def _next_after(self, step: StepDef, value: Any) -> str | None:
        if isinstance(value, Goto):
            return value.target
        following = step.index + 1
        return self.wf.steps[following].name if following < len(self.wf.steps) else None

    async def _complete(self, result: Any, items: list[EventItem],
                        changes: dict[str, Any] | None = None,
                        record: StepRecord | None = None) -> None:
        rec = self.rec
        total = len(self.wf.steps)
        done = len(changes["done_steps"]) if changes else len(rec.done_steps)
        changes = dict(changes or {})
        changes.update(status="completed", result=result, finished_at=utcnow(), next_step=None,
                       current_step=None,
                       progress=Progress(percentage=100.0, completed_steps=min(done, total),
                                         total_steps=total, message=rec.progress.message))
        items = [*items, ("workflow_completed", {"result": result})]
        await self._commit(changes, items, steps=[record] if record else [],
                           logs=self._take_logs())
        log.info("execution_completed", cycles=changes.get("cycle", rec.cycle))

    async def _end(self, status: str, error: ErrorInfo, record: StepRecord | None = None,
                   remember: Callable[[ExecutionRecord], IdempotencyRecord] | None = None) -> None:
        """Finish as failed, timed out or cancelled; a cut-off step's record fails with it."""
        rec = self.rec
        items: list[EventItem] = []
        changes: dict[str, Any] = {"status": status, "error": error, "finished_at": utcnow(),
                                   "current_step": None, "external": None}
        steps: list[StepRecord] = []
        if record is not None:
            step_error = (error if status == "failed"
                          else ErrorInfo(code=status, message=error.message))
            record = record.evolve({"status": "failed", "error": step_error,
                                               "completed_at": record.completed_at or utcnow()})
            steps.append(record)
            changes["cycle"] = record.cycle
            items.append(("step_finished", {"step": record.name, "cycle": record.cycle,
                                            "status": "failed", "duration_ms": record.duration_ms,
                                            "attempt": record.attempt,
                                            "error": step_error.message}))
            items.append(("cycle_completed", {"cycle": record.cycle}))
        terminal = {"failed": "workflow_failed", "timed_out": "workflow_timed_out",
                    "cancelled": "workflow_cancelled"}[status]
        items.append((terminal, {"error": error.model_dump()}))
        await self._commit(changes, items, steps=steps, logs=self._take_logs(), remember=remember)
        log.info("execution_ended", status=status, error=error.code, cycle=rec.cycle)

    async def _enter_gate(self, step: StepDef, cycle: int, record: StepRecord,
                          current: CurrentStep) -> None:
        changes = {"status": "awaiting_approval", "cycle": cycle, "current_step": current,
                   "approval": Approval(), "gate": step.name,
                   "next_step": self._next_after(step, None)}
        items: list[EventItem] = [
            ("step_started", {"step": step.name, "cycle": cycle, "kind": "approval",
                              "status": "waiting"}),
            ("approval_required", {"step": step.name, "cycle": cycle, "prompt": step.prompt}),
            ("cycle_completed", {"cycle": cycle}),
        ]
        await self._commit(changes, items, steps=[record])
        log.info("approval_required", step=step.name)

    async def _enter_external(self, step: StepDef, cycle: int, record: StepRecord,
                              current: CurrentStep) -> None:
        """Hand the step to a worker outside the process and end the task: the execution holds
        no task while it waits; the worker's complete (or the timeout) starts a new runner."""
        rec = self.rec
        timeout = step.timeout or self.wf.cycle_timeout or self.limits.default_cycle_timeout
        now = datetime.now(UTC)
        wait = ExternalWait(step=step.name, cycle=cycle, token=secrets.token_urlsafe(24),
                            deadline=format_ts(now + timedelta(seconds=timeout)),
                            started_at=record.started_at or format_ts(now))
        callback = external_callback(self.base_url, rec.execution_id, step.name, wait.token)
        deliveries = []
        outbox = self.ledger.outbox
        if step.url is not None and outbox is not None:
            body = dumps({"execution_id": rec.execution_id, "workflow_id": rec.workflow_id,
                          "step": step.name, "cycle": cycle, "input": rec.input,
                          "state": rec.state, "callback": callback, "deadline": wait.deadline})
            deliveries.append(outbox.dispatch(step.url, body))
        record = record.evolve({"metadata": {"external": True, "url": step.url}})
        await self._commit(
            {"external": wait, "current_step": current},
            [("step_started", {"step": step.name, "cycle": cycle, "kind": step.kind,
                               "status": "waiting", "attempt": 1, "callback": callback})],
            steps=[record], deliveries=deliveries)
        log.info("external_step_waiting", step=step.name, url=step.url, timeout=timeout)

    async def _finish_external(self, wait: ExternalWait) -> bool:
        """The worker answered (or the wait timed out): finish that cycle as any other."""
        step = self.wf.get_step(wait.step)
        result = wait.result
        assert step is not None
        assert result is not None
        structlog.contextvars.bind_contextvars(cycle=wait.cycle)
        record = await self.ledger.store.step_at(self.execution_id, wait.cycle)
        now = utcnow()
        if record is None:  # pragma: no cover - written with the wait, in the same commit
            record = StepRecord(name=step.name, kind=step.kind, cycle=wait.cycle, attempt=1)
        record = record.evolve({
            "completed_at": now, "duration_ms": ms_between(wait.started_at, now)})
        if self._seconds_left() <= 0:
            await self._end("timed_out", _timed_out_error(self.wf), record)
            return True
        if not result.success:
            code = "step_timeout" if result.error == EXTERNAL_TIMED_OUT else "step_failed"
            await self._end("failed", ErrorInfo(code=code, message=result.error or "failed"),
                            record)
            return True
        try:
            output = json_copy(result.output)
        except Exception as exc:  # noqa: BLE001 - what a worker sends must be storable
            await self._end("failed", ErrorInfo(code="not_serializable", message=str(exc)), record)
            return True
        # The worker's output is the step's output, and later steps find it in the state.
        state = {**self.rec.state, step.name: output}
        return await self._commit_cycle(step, record, state, [], None, output)

    async def _cancelled(self) -> None:
        """A user's cancel: once what was queued is committed, record the cancellation."""
        if self._pending is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._pending)
        if self.rec.is_terminal:
            return
        record = self._step
        if record is not None:
            # The cut-off step's record and its step_finished carry how long it ran.
            now = utcnow()
            elapsed = parse_ts(now) - parse_ts(record.started_at or now)
            record = record.evolve({
                "completed_at": now, "duration_ms": int(elapsed.total_seconds() * 1000)})
            self._step = None
        await self._end("cancelled", ErrorInfo(code="cancelled", message="cancelled by request"),
                        record, self.cancel_remember)

    # ---- helpers --------------------------------------------------------------------------

    def _commit(self, changes: dict[str, Any], items: Sequence[EventItem], *,
                steps: Sequence[StepRecord] = (), logs: Sequence[LogLine] = (),
                remember: Callable[[ExecutionRecord], IdempotencyRecord] | None = None,
                deliveries: Sequence[Delivery] = ()) -> asyncio.Future[None]:
        """Make the next snapshot and queue it; writes of one execution commit in order."""
        self._stage(changes, items, steps)
        return self._flush(remember, deliveries, logs)

    def _commit_soon(self, changes: dict[str, Any], items: Sequence[EventItem], *,
                     steps: Sequence[StepRecord] = ()) -> None:
        """Make the next snapshot; write it once the task yields to the loop.

        A step that finishes without yielding has its start committed with its end (one write
        per cycle); one that awaits anything has its start committed, and followed, at once.
        """
        self._stage(changes, items, steps)
        if self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_soon(self._flush)

    def _stage(self, changes: dict[str, Any], items: Sequence[EventItem],
               steps: Sequence[StepRecord]) -> None:
        rec = self.rec
        events = make_events(rec, *items)
        self.rec = rec.evolve({**changes, "seq": rec.seq + len(events),
                                          "updated_at": utcnow()})
        if self._unwritten is None:
            self._unwritten = _Unwritten()
        self._unwritten.add(events, steps)

    def _flush(self, remember: Callable[[ExecutionRecord], IdempotencyRecord] | None = None,
               deliveries: Sequence[Delivery] = (), logs: Sequence[LogLine] = (),
               ) -> asyncio.Future[None]:
        """Queue the latest snapshot with every event and step record made since the last."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        unwritten, self._unwritten = self._unwritten or _Unwritten(), None
        self._pending = self.ledger.write(self.rec, steps=list(unwritten.steps.values()),
                                          events=unwritten.events, logs=logs,
                                          idempotency=remember(self.rec) if remember else None,
                                          deliveries=deliveries)
        self._pending.add_done_callback(_retrieve)
        return self._pending

    def _take_logs(self) -> list[LogLine]:
        logs, self._logs = self._logs, []
        return logs

    def _seconds_left(self) -> float:
        if self.rec.deadline is None:
            return float("inf")
        return (parse_ts(self.rec.deadline) - datetime.now(UTC)).total_seconds()


EXTERNAL_TIMED_OUT = "the external step did not complete within its timeout"


def external_callback(base_url: str, execution_id: str, step: str, token: str) -> dict[str, str]:
    """Where an external worker reports, and the token that proves it was handed this run."""
    base = f"{base_url}{API_PREFIX}/executions/{execution_id}/steps/{step}"
    return {"progress_url": f"{base}/progress", "complete_url": f"{base}/complete",
            "token": token}


def _call(step: StepDef, ctx: Context) -> Awaitable[Any]:
    """The step's awaitable, awaited by the caller itself (no frame of its own in between)."""
    assert step.fn is not None
    if step.is_async:
        return step.fn(ctx)
    # A plain `def` step may block; a worker thread keeps the loop free.
    return asyncio.to_thread(step.fn, ctx)


def _retrieve(future: asyncio.Future[None]) -> None:
    # Writes the loop does not wait on still have their failure read (and logged by the writer).
    if not future.cancelled():
        future.exception()


def _timed_out_error(wf: Workflow) -> ErrorInfo:
    return ErrorInfo(code="timed_out", message=f"the execution ran past its {wf.timeout}s timeout")
