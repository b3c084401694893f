"""The scheduler: admits executions, runs each as a tracked task, takes every request a caller
makes of one to its owner, recovers unfinished executions at start-up and drains at stop.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import heapq
import itertools
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import structlog

from workflowd.clock import utcnow
from workflowd.codec import NotJSON, json_copy
from workflowd.config import EngineSettings
from workflowd.context import ProgressReport
from workflowd.definitions import Workflow
from workflowd.engine import transitions as T
from workflowd.engine.hub import Hub
from workflowd.engine.ledger import Ledger
from workflowd.engine.outbox import Outbox
from workflowd.engine.owner import Owner, Remember
from workflowd.engine.runner import Runner, StepTokens
from workflowd.errors import (
    ForbiddenError,
    InvalidTransitionError,
    NotReadyError,
    QueueFullError,
    StoreUnavailableError,
    UnknownExecutionError,
    UnknownStepError,
    UnknownWorkflowError,
)
from workflowd.ids import new_execution_id
from workflowd.records import ErrorInfo, ExecutionRecord
from workflowd.store import Store

__all__ = ["Remember", "Scheduler"]

log = structlog.get_logger("workflowd.scheduler")

INTERNAL_ERROR = "internal_error"


class Scheduler:
    def __init__(self, workflows: dict[str, Workflow], store: Store, hub: Hub,
                 settings: EngineSettings, progress_interval: float = 0.1,
                 outbox: Outbox | None = None, base_url: str = "") -> None:
        self.workflows = workflows
        self.store = store
        self.hub = hub
        self.settings = settings
        self.progress_interval = progress_interval
        self.base_url = base_url
        self.ledger = Ledger(store, hub, outbox)
        self.tokens = StepTokens()
        self.executor = ThreadPoolExecutor(max_workers=settings.max_threads,
                                           thread_name_prefix="workflowd-step")
        # The owner of every unfinished execution; the last few finished records (a client
        # polling one that just ended, or a list refreshing, needs no read).
        self.owners: dict[str, Owner] = {}
        self.finished: OrderedDict[str, ExecutionRecord] = OrderedDict()
        self.keep_finished = 1000
        self.runners: dict[str, Runner] = {}
        self.held: set[str] = set()  # unfinished executions of a workflow not registered now
        self.ready = False
        self._accepting = False
        self._draining = False
        self._heap: list[tuple[int, int, str]] = []
        self._queued: set[str] = set()
        self._arrival = itertools.count()
        self._reserved = 0
        self._cut_off: set[asyncio.Task[None]] = set()  # runners that ignored a cancel
        store.on_deleted.append(self._forget)

    # ---- figures --------------------------------------------------------------------------

    @property
    def queued(self) -> int:
        return len(self._queued)

    @property
    def running(self) -> int:
        return len(self.runners)

    # ---- reading ---------------------------------------------------------------------------

    def peek(self, execution_id: str) -> ExecutionRecord | None:
        """The committed record, if it is in memory (unfinished, or just finished)."""
        owner = self.owners.get(execution_id)
        if owner is not None:
            return owner.committed
        return self.finished.get(execution_id)

    async def get(self, execution_id: str) -> ExecutionRecord:
        rec = self.peek(execution_id) or await self.store.get_execution(execution_id)
        if rec is None:
            raise UnknownExecutionError(f"no execution with id {execution_id!r}")
        return rec

    # ---- start and stop -------------------------------------------------------------------

    async def recover(self) -> int:
        """Take up every unfinished execution from the store; answer how many."""
        unfinished = await self.store.unfinished()
        for rec in unfinished:
            owner = self._own(rec)
            if owner.wf is None:
                self.held.add(rec.execution_id)
            elif rec.step is not None and "answer" in rec.step.metadata:
                self._finish_legacy_answer(owner)
            elif rec.wait is None and rec.status in ("queued", "running"):
                self._enqueue(rec)
        if self.held:
            missing = sorted({self.owners[i].head.workflow_id for i in self.held})
            log.warning("executions_held", executions=len(self.held), workflows=missing,
                        why="their workflows are not registered; they wait, untouched, until "
                            "a start with those workflows")
        self._accepting = True
        self.ready = True
        log.info("recovered", executions=len(unfinished), queued=self.queued,
                 held=len(self.held))
        self._pump()
        return len(unfinished)

    async def drain(self, grace: float) -> None:
        """Stop admitting, let running cycles finish within `grace`, then cancel the rest.

        A shutdown's cancel writes nothing: those executions resume from their last committed
        cycle at the next start. Safe to call twice.
        """
        self._accepting = False
        self._draining = True
        for owner in self.owners.values():
            owner.close()
        tasks = [runner.task for runner in self.runners.values() if runner.task is not None]
        tasks.extend(self._cut_off)
        if tasks:
            log.info("draining", running=len(tasks), grace=grace)
            _, pending = await asyncio.wait(tasks, timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5.0)
                log.info("drain_cancelled", executions=len(pending))
        for owner in list(self.owners.values()):
            await owner.settled()
        self.executor.shutdown(wait=False, cancel_futures=True)

    # ---- requests --------------------------------------------------------------------------

    async def submit(self, workflow_id: str, *, input: dict[str, Any], priority: int = 0,
                     labels: dict[str, str] | None = None, require_approval: bool = False,
                     callback_url: str | None = None, submitted_by: str = "anonymous",
                     remember: Remember | None = None) -> ExecutionRecord:
        self._check_accepting()
        wf = self.workflows.get(workflow_id)
        if wf is None:
            raise UnknownWorkflowError(f"no workflow with id {workflow_id!r}")
        if not require_approval:
            self._check_room()
        change = T.submitted(
            execution_id=new_execution_id(), wf=wf, input=input, priority=priority,
            labels=labels or {}, require_approval=require_approval,
            max_cycles=wf.max_cycles or self.settings.default_max_cycles,
            submitted_by=submitted_by, callback_url=callback_url, now=utcnow())
        rec = change.record
        self._reserved += 1
        try:
            await self.ledger.write(rec, change.events, change.steps, base_seq=0,
                                    idempotency=remember(rec) if remember else None)
        finally:
            self._reserved -= 1
        log.info("execution_submitted", execution_id=rec.execution_id, workflow_id=wf.id,
                 status=rec.status, cycle=0)
        self._own(rec)
        if rec.status == "queued":
            self._enqueue(rec)
            self._pump()
        return rec

    async def approve(self, execution_id: str, comment: str | None, decided_by: str,
                      remember: Remember | None = None) -> ExecutionRecord:
        owner = await self._owner(execution_id)
        if owner.head.status == "awaiting_approval":
            self._check_room()  # approving into a full queue leaves it waiting
        return await self._apply(owner, lambda rec: T.approved(rec, decided_by, comment,
                                                               utcnow()), remember)

    async def reject(self, execution_id: str, reason: str | None, decided_by: str,
                     remember: Remember | None = None) -> ExecutionRecord:
        owner = await self._owner(execution_id)
        return await self._apply(owner, lambda rec: T.rejected(rec, decided_by, reason,
                                                               utcnow()), remember)

    async def cancel(self, execution_id: str, remember: Remember | None = None,
                     ) -> ExecutionRecord:
        """Cancel in any unfinished status. A running step's task is cancelled for real; its
        runner writes `cancelled`. A step that ignores the cancel past `[engine] cancel_grace`
        is cut off: the owner takes no more changes from it, and writes `cancelled` itself."""
        owner = await self._owner(execution_id)
        runner = owner.runner
        if runner is not None and runner.task is not None and not runner.task.done():
            runner.request_cancel(remember)
            done, _ = await asyncio.wait({runner.task}, timeout=self.settings.cancel_grace)
            if not done:
                log.warning("step_ignored_cancel", execution_id=execution_id,
                            workflow_id=owner.head.workflow_id, cycle=owner.head.cycle,
                            grace=self.settings.cancel_grace)
                self._cut(owner, runner)
            await owner.settled()
            if owner.committed.status == "cancelled" or owner.head.status == "cancelled":
                return await self.get(execution_id)
            if owner.committed.is_terminal:
                raise InvalidTransitionError(
                    f"execution {execution_id} is {owner.committed.status}")
            # It reached a gate or a wait before the cancel landed: cancel it from there.
        self._queued.discard(execution_id)
        try:
            return await self._apply(owner, lambda rec: T.cancelled(rec, utcnow()), remember)
        except StoreUnavailableError:
            # Refused (503: nothing changed): a queued execution keeps its place, and one whose
            # step was cut for this cancel runs its cycle again, as after a restart.
            self._resume_if_idle(owner)
            raise

    async def step_progress(self, execution_id: str, step: str, token: str,
                            report: ProgressReport) -> ExecutionRecord:
        """Progress reported by another service, for the step running in the process or
        waited on from an outside worker."""
        owner = await self._owner_of_step(execution_id, step)
        rec = owner.head
        if rec.wait is not None and rec.wait.kind == "external":
            T.external_progress(rec, step, token, report, utcnow())  # checks; writes nothing
        else:
            running = rec.step
            if running is None or running.name != step or running.status != "running":
                raise InvalidTransitionError(f"step {step!r} of {execution_id} is not running")
            if not token or not self.tokens.check(execution_id, running.cycle or 0, token):
                raise ForbiddenError("wrong or stale token for this step run")
        owner.report(report)
        return owner.committed

    async def step_complete(self, execution_id: str, step: str, token: str, *, success: bool,
                            output: Any, error: ErrorInfo | None,
                            remember: Remember | None = None) -> ExecutionRecord:
        """An outside worker finished its step: the cycle is committed with its output."""
        owner = await self._owner_of_step(execution_id, step)
        wf = owner.wf
        assert wf is not None
        try:
            output = json_copy(output)
        except NotJSON as exc:  # pragma: no cover - a parsed JSON body is JSON
            raise InvalidTransitionError(str(exc)) from None
        owner.flush_reports()  # held progress commits before the end
        return await self._apply(owner, lambda rec: T.external_answered(
            rec, wf, step, token, success=success, output=output, error=error, now=utcnow()),
            remember)

    # ---- internals: owners -----------------------------------------------------------------

    def _own(self, rec: ExecutionRecord) -> Owner:
        owner = Owner(rec, self.workflows.get(rec.workflow_id), self.ledger, self._committed,
                      self.progress_interval)
        self.owners[rec.execution_id] = owner
        owner.arm()  # the timer of a wait, if it waits with a deadline
        return owner

    async def _owner(self, execution_id: str) -> Owner:
        """The owner of an unfinished execution; 409 for a finished one, 404 for none."""
        self._check_accepting()
        owner = self.owners.get(execution_id)
        if owner is not None:
            return owner
        # Every unfinished execution has its owner: any other is finished, or unknown.
        rec = await self.get(execution_id)
        raise InvalidTransitionError(f"execution {execution_id} is {rec.status}")

    async def _owner_of_step(self, execution_id: str, step: str) -> Owner:
        owner = await self._owner(execution_id)
        if owner.wf is None or owner.wf.get_step(step) is None:
            raise UnknownStepError(
                f"workflow {owner.head.workflow_id!r} declares no step {step!r}")
        return owner

    async def _apply(self, owner: Owner, make: Any, remember: Remember | None,
                     ) -> ExecutionRecord:
        future = owner.apply(make, remember=remember)
        rec = owner.head  # this change's record: later ones may follow before the commit
        if future is not None:
            await future
        log.info("execution_decided", execution_id=rec.execution_id,
                 workflow_id=rec.workflow_id, cycle=rec.cycle, status=rec.status)
        return rec

    def _committed(self, owner: Owner, rec: ExecutionRecord) -> None:
        """Every commit of an execution: end of its owner, or its next place in the queue."""
        execution_id = rec.execution_id
        if rec.is_terminal:
            owner.close()
            self.owners.pop(execution_id, None)
            self._queued.discard(execution_id)
            self.held.discard(execution_id)
            finished = self.finished
            finished[execution_id] = rec
            if len(finished) > self.keep_finished:
                finished.popitem(last=False)
        elif rec.status == "queued" and owner.runner is None \
                and execution_id not in self._queued and owner.head is rec:
            self._enqueue(rec)
            self._pump()

    def _cut(self, owner: Owner, runner: Runner) -> None:
        """Take no more changes from a runner that ignored its cancel; free its slot."""
        owner.runner = None
        self.runners.pop(owner.execution_id, None)
        if runner.task is not None:
            self._cut_off.add(runner.task)
            runner.task.add_done_callback(self._cut_off.discard)

    def _forget(self, execution_ids: Sequence[str]) -> None:
        """Drop deleted executions from what is kept in memory."""
        for execution_id in execution_ids:
            self.finished.pop(execution_id, None)

    def _finish_legacy_answer(self, owner: Owner) -> None:
        """A worker's answer committed by an older version, whose cycle was never finished."""
        rec = owner.head
        assert rec.step is not None
        assert rec.wait is not None
        assert owner.wf is not None
        answer = rec.step.metadata["answer"]
        wf, step, token = owner.wf, rec.step.name, rec.wait.token or ""
        error = answer.get("error")
        future = owner.apply(lambda r: T.external_answered(
            r, wf, step, token, success=bool(answer.get("success")),
            output=answer.get("output"), now=utcnow(),
            error=ErrorInfo(code="step_failed", message=str(error)) if error else None))
        if future is not None:
            future.add_done_callback(lambda f: f.cancelled() or f.exception())

    # ---- internals: admission ----------------------------------------------------------------

    def _check_accepting(self) -> None:
        if not self._accepting:
            raise NotReadyError("the service is starting or shutting down")

    def _check_room(self) -> None:
        if self.queued + self._reserved >= self.settings.max_queued:
            raise QueueFullError(
                f"{self.settings.max_queued} executions are already queued", retry_after=1)

    def _enqueue(self, rec: ExecutionRecord) -> None:
        if rec.execution_id in self.held:
            return
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
            owner = self.owners.get(execution_id)
            if owner is not None and owner.runner is None \
                    and owner.head.status in ("queued", "running"):
                self._launch(owner)

    def _launch(self, owner: Owner) -> None:
        wf = owner.wf
        assert wf is not None
        runner = Runner(owner, wf, self.settings, self.executor, self.tokens, self.base_url)
        # A fresh context, so the request that submitted it leaks no log fields into the run.
        task = asyncio.create_task(runner.run(), name=f"execution:{owner.execution_id}",
                                   context=contextvars.Context())
        runner.task = task
        owner.runner = runner
        self.runners[owner.execution_id] = runner
        task.add_done_callback(functools.partial(self._reap, owner, runner))

    def _reap(self, owner: Owner, runner: Runner, task: asyncio.Task[None]) -> None:
        if self.runners.get(owner.execution_id) is runner:
            del self.runners[owner.execution_id]
        cut_off = owner.runner is not runner
        if not cut_off:
            owner.runner = None
        if not task.cancelled() and (exc := task.exception()) is not None and not cut_off:
            if runner.cancel_requested and isinstance(exc, StoreUnavailableError):
                pass  # its cancel was refused: `cancel` answers 503 and runs the cycle again
            else:
                log.error("runner_crashed", execution_id=owner.execution_id,
                          workflow_id=owner.head.workflow_id, cycle=owner.head.cycle,
                          exc_info=exc)
                self._fail_internal(owner, exc)
        elif not self._draining and not cut_off and owner.head.status == "queued" \
                and owner.committed is owner.head:
            self._enqueue(owner.head)  # decided while its task was ending: run it on
        self._pump()

    def _fail_internal(self, owner: Owner, exc: BaseException, retry_in: float = 0.5) -> None:
        """A task that died of a bug ends its execution `failed`, never left `running`: when
        the store refuses that write too, it is tried again until the store takes it."""
        if owner.head.is_terminal or self.owners.get(owner.execution_id) is not owner \
                or owner.runner is not None:
            return  # ended, gone, or taken up again meanwhile (a cancel, a restart)
        error = ErrorInfo(code=INTERNAL_ERROR,
                          message=f"the service failed running this execution: "
                                  f"{type(exc).__name__}: {exc}")
        try:
            future = owner.apply(lambda rec: T.ended(rec, "failed", error, utcnow()))
        except Exception:
            log.exception("internal_error_not_recorded", execution_id=owner.execution_id)
            return
        if future is not None:
            future.add_done_callback(functools.partial(self._internal_written, owner, exc,
                                                       retry_in))

    def _internal_written(self, owner: Owner, exc: BaseException, retry_in: float,
                          future: asyncio.Future[None]) -> None:
        if future.cancelled() or future.exception() is None or self._draining:
            return
        log.warning("internal_error_retry", execution_id=owner.execution_id,
                    workflow_id=owner.head.workflow_id, cycle=owner.head.cycle,
                    error=str(future.exception()), retry_in=retry_in)
        asyncio.get_running_loop().call_later(retry_in, self._fail_internal, owner, exc,
                                              min(retry_in * 2, 10.0))

    def _resume_if_idle(self, owner: Owner) -> None:
        """Queue an unfinished execution that holds no task and waits for nothing (its write
        was refused after its step was cut), so that it is never left without one."""
        rec = owner.committed
        if self._draining or owner.runner is not None or owner.head is not rec \
                or rec.wait is not None or rec.status not in ("queued", "running") \
                or rec.execution_id in self._queued:
            return
        self._enqueue(rec)
        self._pump()

