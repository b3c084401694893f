"""The runner: one execution's cycle loop, run as one tracked asyncio task.

A cycle picks the step, runs it under its timeouts with retries, and has its owner commit the
snapshot, the step record and the cycle's events in one write before the next step runs.
A wait ends the task (a gate, an outside worker, a durable sleep, a pause: nothing waits in
memory); what ends the wait starts a new runner. Every record is made by a transition, applied
by the owner.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import secrets
from collections.abc import Awaitable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import structlog

from workflowd.clock import seconds_until, ts_after, utcnow
from workflowd.codec import NotJSON, dumps, json_copy
from workflowd.config import EngineSettings
from workflowd.context import Context, ContextLink, ProgressReport, SleepRequested, freeze
from workflowd.definitions import Done, Goto, Sleep, StepDef, Workflow
from workflowd.engine import transitions as T
from workflowd.engine.artifacts import ArtifactStore, StepArtifacts
from workflowd.engine.owner import Make, Owner, Remember, Superseded, retrieve
from workflowd.errors import InvalidTransitionError, StoreUnavailableError
from workflowd.records import API_PREFIX, ErrorInfo, ExecutionRecord
from workflowd.store import Delivery

__all__ = ["Runner", "StepTokens", "external_callback"]

log = structlog.get_logger("workflowd.runner")

# Lines one cycle may write with `ctx.log`; one more line then says that the rest is dropped.
MAX_LOG_LINES = 1000
_INF = float("inf")


class StepTokens:
    """Tokens of in-process step runs (`ctx.callback`): an HMAC of the run under a key of this
    process, so they need no table, and a restart (which runs the step again) retires them."""

    __slots__ = ("_key",)

    def __init__(self) -> None:
        self._key = secrets.token_bytes(32)

    def token(self, execution_id: str, cycle: int) -> str:
        return hmac.new(self._key, f"{execution_id}:{cycle}".encode(),
                        hashlib.sha256).hexdigest()[:32]

    def check(self, execution_id: str, cycle: int, token: str) -> bool:
        return hmac.compare_digest(token.encode(), self.token(execution_id, cycle).encode())


@dataclass(slots=True)
class _Outcome:
    """How a cycle's attempt series ended: a value, an error, or the workflow's timeout."""

    attempt: int
    ctx: Context
    value: Any = None
    error: ErrorInfo | None = None
    timed_out: bool = False


class Runner(ContextLink):
    # Slots: thousands of runners wait at once, and a dict each costs more than their fields.
    __slots__ = ("_end_at", "_input", "_lines", "artifact_store", "base_url", "cancel_remember",
                 "cancel_requested", "executor", "limits", "owner", "task", "tokens", "wf")

    def __init__(self, owner: Owner, wf: Workflow, limits: EngineSettings, executor: Executor,
                 tokens: StepTokens, base_url: str = "",
                 artifact_store: ArtifactStore | None = None) -> None:
        self.owner = owner
        self.artifact_store = artifact_store
        self.wf = wf
        self.limits = limits
        self.executor = executor
        self.tokens = tokens
        self.base_url = base_url
        self.task: asyncio.Task[None] | None = None
        self.cancel_requested = False
        self.cancel_remember: Remember | None = None
        self._input: Any = None  # the input as steps see it: read-only all the way down
        self._lines = 0
        self._end_at = _INF  # the workflow's deadline on the loop's clock

    @property
    def execution_id(self) -> str:
        return self.owner.execution_id

    def request_cancel(self, remember: Remember | None) -> None:
        """A user's cancel: cut the running step; the runner writes `cancelled` itself."""
        if not self.cancel_requested:
            self.cancel_requested = True
            self.cancel_remember = remember
            if self.task is not None:
                self.task.cancel()

    # ---- the loop -------------------------------------------------------------------------

    async def run(self) -> None:
        owner = self.owner
        structlog.contextvars.bind_contextvars(
            execution_id=self.execution_id, workflow_id=self.wf.id, cycle=owner.head.cycle)
        try:
            if owner.head.status == "queued":
                self._apply(lambda rec: T.started(rec, utcnow(), self.wf.timeout))
            deadline = owner.head.deadline
            if deadline is not None:
                self._end_at = asyncio.get_running_loop().time() + seconds_until(deadline)
            await self._loop()
        except asyncio.CancelledError:
            if not self.cancel_requested:
                raise  # a shutdown: write nothing, the execution resumes at the next start
            await self._cancelled()
        except Superseded:
            log.info("runner_superseded")

    async def _loop(self) -> None:
        """Cycles until the execution ends or waits.

        How a cycle ended and how the next one starts are written together, and that write is
        committed before the next step runs: one write per cycle, and no step ever runs on
        a state that is not durable. When the store refuses the write, the execution waits and
        makes the same change again from its committed record (if the cycle's own start was
        lost with a refused write, the cycle runs again: at least once per cycle).
        """
        owner = self.owner
        ended: tuple[int, Make] | None = None  # how the last cycle ended, until committed
        backoff = 0.5
        while True:
            if ended is not None and not self._apply_end(*ended):
                ended = None  # the cycle's start was never committed: run it again
            step = self._next()
            if ended is not None or step is None:
                try:
                    await owner.flush(by=self)
                except StoreUnavailableError as exc:
                    log.warning("commit_waiting", error=str(exc), retry_in=backoff)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 10.0)
                    continue
                backoff = 0.5
                if ended is not None and self.wf.cycle_delay and step is not None:
                    await asyncio.sleep(self.wf.cycle_delay)
                ended = None
            if step is None:
                self._log_end(owner.head)
                return
            ended = await self._run_step(step)

    def _apply_end(self, cycle: int, ended: Make) -> bool:
        """Apply how cycle `cycle` ended, if its start is still the step in flight."""
        head = self.owner.head
        if head.step is None or head.step.cycle != cycle:
            return False
        self._apply(ended)
        return True

    def _next(self) -> StepDef | None:
        """Start the next cycle: answer the step to run, or apply how the execution ends or
        waits (None)."""
        rec = self.owner.head
        if rec.is_terminal or rec.wait is not None or rec.status != "running":
            return None
        if rec.next_step is None:  # after a last gate
            self._apply(lambda r: T.completed(r, utcnow()))
            return None
        step = self.wf.get_step(rec.next_step)
        error = None
        if step is None:
            error = ErrorInfo(code="unknown_step", message=f"no step named {rec.next_step!r}")
        elif rec.cycle >= rec.max_cycles:
            error = ErrorInfo(code="cycle_limit_exceeded",
                              message=f"a cycle past max_cycles={rec.max_cycles} was asked for")
        if error is not None or self._seconds_left() <= 0:
            status = "failed" if error is not None else "timed_out"
            why = error or T.timed_out_error(self.wf.timeout)
            self._apply(lambda r: T.ended(r, status, why, utcnow()))
            return None
        assert step is not None
        if rec.pause_at is not None and rec.cycle >= rec.pause_at:
            # A pause asked for (or manual mode): stop before this step, holding no task.
            log.info("execution_paused", next_step=step.name)
            self._apply(lambda r: T.paused(r, utcnow()))
            return None
        structlog.contextvars.bind_contextvars(cycle=rec.cycle + 1)
        if step.is_gate:
            self._apply(lambda r: T.gate_entered(r, self.wf, step, utcnow()))
            return None
        if step.external:
            self._hand_over(step)
            return None
        if step.sleep is not None:
            # A durable sleep: it waits holding no task (the owner's timer, armed from the
            # record, wakes it).
            until = ts_after(step.sleep)
            log.info("sleep_step_waiting", step=step.name, seconds=step.sleep, until=until)
            self._apply(lambda r: T.sleep_entered(r, step, until, utcnow()))
            return None
        self._apply(lambda r: T.step_began(r, step, utcnow()))
        return step

    def _log_end(self, rec: ExecutionRecord) -> None:
        if rec.status == "completed":
            log.info("execution_completed", cycles=rec.cycle)
        elif rec.is_terminal:
            log.info("execution_ended", status=rec.status,
                     error=rec.error.code if rec.error else None)
        elif rec.status == "awaiting_approval":
            log.info("approval_required", step=rec.step.name if rec.step else None)

    # ---- running a step -------------------------------------------------------------------

    async def _run_step(self, step: StepDef) -> tuple[int, Make]:
        """Run the cycle's step; answer the cycle and the change that ends it (not applied
        yet)."""
        owner = self.owner
        assert owner.head.step is not None
        cycle = owner.head.step.cycle or 0
        self._lines = 0
        loop = asyncio.get_running_loop()
        began = loop.time()
        try:
            outcome = await self._attempts(step, cycle)
        finally:
            owner.flush_reports()
        seconds = loop.time() - began
        owner.tally.cycle(self.wf.id, seconds)
        duration_ms = int(seconds * 1000)
        attempt = outcome.attempt
        if outcome.timed_out:
            return cycle, _ending("timed_out", T.timed_out_error(self.wf.timeout), attempt,
                                  duration_ms)
        if outcome.error is not None:
            return cycle, _ending("failed", outcome.error, attempt, duration_ms)
        try:
            state = json_copy(outcome.ctx.state)
            decisions = [(name, json_copy(value)) for name, value in outcome.ctx.decisions]
            value = outcome.value
            output = None if isinstance(value, Goto | Sleep) else json_copy(
                value.result if isinstance(value, Done) else value)
        except NotJSON as exc:  # what a step leaves must be storable
            return cycle, _ending("failed", ErrorInfo(code="not_serializable", message=str(exc)),
                                  attempt, duration_ms)
        wf = self.wf
        if isinstance(value, Sleep):
            until = ts_after(value.seconds)
            log.info("step_sleeping", step=step.name, seconds=value.seconds, until=until)
            sleep = value
            return cycle, lambda rec: T.sleeping(
                rec, wf, state=state, decisions=decisions, sleep=sleep, until=until,
                attempt=attempt, duration_ms=duration_ms, now=utcnow())
        return cycle, lambda rec: T.cycle_finished(
            rec, wf, state=state, decisions=decisions, value=value, output=output,
            attempt=attempt, duration_ms=duration_ms, now=utcnow())

    async def _attempts(self, step: StepDef, cycle: int) -> _Outcome:
        """Attempts of the step, each under its timeout, until one succeeds or none are left.

        A step's `timeout=` bounds each attempt; without one, the workflow's `cycle_timeout`
        (else `[engine] default_cycle_timeout`) bounds each attempt and the whole series; the
        workflow's deadline bounds everything.
        """
        loop = asyncio.get_running_loop()
        budget = self.wf.cycle_timeout or self.limits.default_cycle_timeout
        per_attempt = step.timeout or budget
        cycle_end = loop.time() + budget if step.timeout is None and budget else _INF
        exec_end = self._end_at
        attempt = 0
        while True:
            attempt += 1
            ctx = self._context(step, cycle, attempt)
            limit = min(loop.time() + per_attempt if per_attempt else _INF, cycle_end, exec_end)
            soft = self._arm_soft(step, ctx, attempt) if step.soft_timeout else None
            timer = asyncio.timeout_at(limit) if limit != _INF else None
            try:
                if timer is None:
                    value = await self._call(step, ctx)
                else:
                    async with timer:
                        value = await self._call(step, ctx)
                if self.cancel_requested:
                    raise asyncio.CancelledError  # the step swallowed the cancel; honour it
                if ctx.sleep_for is not None and not isinstance(value, Done):
                    # It caught the sleep's signal and returned: it still sleeps, then goes on
                    # where it said (itself again, unless a goto).
                    target = value.target if isinstance(value, Goto) else step.name
                    value = Sleep(ctx.sleep_for, target)
                return _Outcome(attempt=attempt, ctx=ctx, value=value)
            except SleepRequested as request:
                if self.cancel_requested:
                    raise asyncio.CancelledError from None
                return _Outcome(attempt=attempt, ctx=ctx,
                                value=Sleep(request.seconds, step.name))
            except TimeoutError as exc:
                if timer is None or not timer.expired():
                    error = ErrorInfo(code="step_failed", message=f"TimeoutError: {exc}")
                elif limit >= exec_end:
                    return _Outcome(attempt=attempt, ctx=ctx, timed_out=True)
                else:
                    error = ErrorInfo(code="step_timeout",
                                      message=f"step {step.name!r} ran past its timeout")
            except Exception as exc:  # noqa: BLE001 - a step's failure is data; CancelledError passes
                error = ErrorInfo(code="step_failed", message=f"{type(exc).__name__}: {exc}")
            finally:
                ctx.close()
                if soft is not None:
                    soft.cancel()
            if attempt > step.retries or loop.time() >= cycle_end:
                return _Outcome(attempt=attempt, ctx=ctx, error=error)
            log.info("step_retrying", step=step.name, attempt=attempt, error=error.message)
            self._apply(functools.partial(_retrying, attempt=attempt, error=error))
            delay = step.backoff * (2 ** (attempt - 1))
            await asyncio.sleep(max(0.0, min(delay, exec_end - loop.time())))
            if loop.time() >= exec_end:
                return _Outcome(attempt=attempt, ctx=ctx, timed_out=True)

    def _call(self, step: StepDef, ctx: Context) -> Awaitable[Any]:
        """The step's awaitable, awaited by the caller itself (no frame of its own between)."""
        assert step.fn is not None
        if step.is_async:
            result: Awaitable[Any] = step.fn(ctx)
            return result
        # A plain `def` step may block: it runs on the engine's own bounded pool of threads.
        return asyncio.get_running_loop().run_in_executor(self.executor, step.fn, ctx)

    def _arm_soft(self, step: StepDef, ctx: Context, attempt: int) -> asyncio.TimerHandle:
        assert step.soft_timeout is not None

        def expiring() -> None:
            if ctx.cancelled:
                return
            ctx.expiring.set()
            self._apply(lambda rec: T.soft_timed_out(rec, attempt, utcnow()))

        return asyncio.get_running_loop().call_later(step.soft_timeout, expiring)

    def _context(self, step: StepDef, cycle: int, attempt: int) -> Context:
        rec = self.owner.head
        if self._input is None:
            self._input = freeze(rec.input)
        return Context(execution_id=rec.execution_id, workflow_id=rec.workflow_id,
                       input=self._input, state=json_copy(rec.state), cycle=cycle,
                       attempt=attempt, step=step.name, link=self,
                       loop=asyncio.get_running_loop(), threaded=not step.is_async,
                       woke=rec.woke)

    # ---- what a step reports (ContextLink), on the loop -----------------------------------

    def on_progress(self, ctx: Context, report: ProgressReport) -> None:
        self.owner.report(report)

    def on_log(self, ctx: Context, message: str, fields: dict[str, Any]) -> None:
        self._lines += 1
        if self._lines > MAX_LOG_LINES + 1:
            return
        if self._lines == MAX_LOG_LINES + 1:  # one line more says that the rest is dropped
            message, fields = f"later lines of cycle {ctx.cycle} dropped (at most " \
                f"{MAX_LOG_LINES} a cycle)", {}
        line = {"ts": utcnow(), "cycle": ctx.cycle, "step": ctx.step, "message": message,
                "fields": fields}
        self.owner.log((ctx.execution_id, dumps(line)))
        # The step's own fields under `fields`: they may be named like ours (`step`, `cycle`).
        log.info("step_log", execution_id=ctx.execution_id, workflow_id=ctx.workflow_id,
                 cycle=ctx.cycle, step=ctx.step, message=message, fields=fields)

    def callback(self, ctx: Context) -> dict[str, str]:
        return external_callback(self.base_url, ctx.execution_id, ctx.step,
                                 self.tokens.token(ctx.execution_id, ctx.cycle))

    def artifacts(self, ctx: Context) -> StepArtifacts:
        if self.artifact_store is None:
            raise RuntimeError("artifacts need the service's artifact store")
        return StepArtifacts(self.artifact_store, ctx, ctx.loop)

    # ---- waits and ends -------------------------------------------------------------------

    def _hand_over(self, step: StepDef) -> None:
        """Hand the step to a worker outside the process; the task ends once that is
        committed: the execution holds no task while it waits, and the worker's complete (or
        the timeout) decides the cycle."""
        rec = self.owner.head
        token = secrets.token_urlsafe(24)
        timeout = step.timeout or self.wf.cycle_timeout or self.limits.default_cycle_timeout
        deadline = ts_after(timeout) if timeout else None  # None: it waits as long as it takes
        callback = external_callback(self.base_url, rec.execution_id, step.name, token)
        deliveries: tuple[Delivery, ...] = ()
        outbox = self.owner.outbox
        if step.url is not None and outbox is not None:
            body = dumps({"execution_id": rec.execution_id, "workflow_id": rec.workflow_id,
                          "step": step.name, "cycle": rec.cycle + 1, "input": rec.input,
                          "state": rec.state, "callback": callback, "deadline": deadline})
            # A path names a worker route of this service (`[server] public_url`).
            url = f"{self.base_url}{step.url}" if step.url.startswith("/") else step.url
            deliveries = (outbox.dispatch(url, body),)
        log.info("external_step_waiting", step=step.name, url=step.url, timeout=timeout)
        self._apply(lambda r: T.handed_over(r, step, token, deadline, callback, utcnow()),
                    deliveries=deliveries)

    async def _cancelled(self) -> None:
        """A user's cancel: the cut-off step's record fails `cancelled`, with how long it ran."""
        owner = self.owner
        if owner.head.is_terminal:
            return
        try:
            future = owner.apply(lambda rec: T.cancelled(rec, utcnow()), by=self,
                                 remember=self.cancel_remember)
        except (InvalidTransitionError, Superseded):
            return
        if future is not None:
            await asyncio.shield(future)

    # ---- applying ---------------------------------------------------------------------------

    def _apply(self, make: Make, deliveries: tuple[Delivery, ...] = ()) -> None:
        """Apply a change, held for the loop's next turn (or the next write made at once)."""
        future = self.owner.apply(make, flush=bool(deliveries), by=self, deliveries=deliveries)
        if future is not None:
            future.add_done_callback(retrieve)

    def _seconds_left(self) -> float:
        if self._end_at == _INF:
            return _INF
        return self._end_at - asyncio.get_running_loop().time()


def _retrying(rec: ExecutionRecord, *, attempt: int, error: ErrorInfo) -> T.Change | None:
    return T.retrying(rec, attempt, error, utcnow())


def _ending(status: str, error: ErrorInfo, attempt: int, duration_ms: int) -> Make:
    return lambda rec: T.ended(rec, status, error, utcnow(), attempt=attempt,
                               duration_ms=duration_ms)


def external_callback(base_url: str, execution_id: str, step: str, token: str) -> dict[str, str]:
    """Where an outside worker (or service) reports, and the token that proves it was handed
    this run."""
    base = f"{base_url}{API_PREFIX}/executions/{execution_id}/steps/{step}"
    return {"progress_url": f"{base}/progress", "complete_url": f"{base}/complete",
            "token": token}
