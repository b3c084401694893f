"""The scheduler: admits executions, runs each as a tracked task, takes every request a caller
makes of one to its owner, recovers unfinished executions at start-up and drains at stop.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Literal

import structlog

from workflowd.clock import utcnow
from workflowd.config import EngineSettings
from workflowd.context import ProgressReport
from workflowd.definitions import Workflow
from workflowd.engine import guards
from workflowd.engine import transitions as T
from workflowd.engine.admission import Admission
from workflowd.engine.artifacts import ArtifactStore
from workflowd.engine.catalog import Catalog
from workflowd.engine.hub import Hub
from workflowd.engine.ledger import Ledger
from workflowd.engine.outbox import Outbox
from workflowd.engine.owner import Owner, Remember, retrieve
from workflowd.engine.runner import Runner, StepTokens
from workflowd.engine.tally import Tally
from workflowd.engine.versions import version_mismatch
from workflowd.errors import (
    ForbiddenError,
    InvalidTransitionError,
    NotReadyError,
    StoreUnavailableError,
    UnknownExecutionError,
    UnknownStepError,
    UnknownWorkflowError,
)
from workflowd.ids import new_execution_id
from workflowd.records import ErrorInfo, ExecutionRecord
from workflowd.store import Store
from workflowd.store.artifacts import ArtifactUse

if TYPE_CHECKING:
    from workflowd.engine.cluster import Cluster

__all__ = ["Remember", "Scheduler"]

log = structlog.get_logger("workflowd.scheduler")

INTERNAL_ERROR = "internal_error"


class Scheduler:
    def __init__(self, workflows: dict[str, Workflow], store: Store, hub: Hub,
                 settings: EngineSettings, progress_interval: float = 0.1,
                 outbox: Outbox | None = None, base_url: str = "", *,
                 max_queued_per_subject: int = 0, catalog: Catalog | None = None,
                 artifacts: ArtifactStore | None = None, tally: Tally | None = None) -> None:
        self.workflows = workflows
        self.catalog = catalog  # JSON definitions by version (None: Python ones only)
        self.artifacts = artifacts  # what `ctx.artifacts` reads and writes
        self.store = store
        self.hub = hub
        self.settings = settings
        self.progress_interval = progress_interval
        self.base_url = base_url
        self.ledger = Ledger(store, hub, outbox, tally)
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
        self._queue = Admission(settings.max_queued, max_queued_per_subject)
        self._cut_off: set[asyncio.Task[None]] = set()  # runners that ignored a cancel
        # On a store that several nodes share: leases, requests and events across nodes
        # (engine.cluster). None on SQLite, where this node owns every execution.
        self.cluster: Cluster | None = None
        store.on_deleted.append(self._forget)

    # ---- figures --------------------------------------------------------------------------

    @property
    def queued(self) -> int:
        return len(self._queue)

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
        """Take up every unfinished execution from the store; answer how many. In a cluster,
        claim instead what this node has room for (and go on claiming)."""
        if self.cluster is not None:
            self._accepting = True
            await self.cluster.start()
            self.ready = True
            self.cluster.wake()
            return 0
        unfinished = await self.store.unfinished()
        if self.catalog is not None:
            await self.catalog.preload(unfinished)
        for rec in unfinished:
            owner = self._own(rec)
            if owner.wf is None:
                self.held.add(rec.execution_id)
            else:
                self._take_up(owner)
        if self.held and self.catalog is not None:
            # A Python workflow gone whose id is now defined as JSON may take them back.
            for workflow_id in sorted({self.owners[i].head.workflow_id for i in self.held}):
                wf = await self.catalog.current(workflow_id)
                if wf is not None:
                    self.adopt_held(wf)
        if self.held:
            missing = sorted({self.owners[i].head.workflow_id for i in self.held})
            log.warning("executions_held", executions=len(self.held), workflows=missing,
                        why="their workflows are not registered; they wait, untouched, until "
                            "a start with those workflows")
        self._pump()
        await self._requeue_waiting()
        self._accepting = True
        self.ready = True
        log.info("recovered", executions=len(unfinished), queued=self.queued,
                 held=len(self.held))
        return len(unfinished)

    async def _requeue_waiting(self) -> None:
        """Executions committed `running` that found no slot at recovery show `queued` until
        one frees (committed before the service is ready)."""
        now = utcnow()
        futures = []
        for execution_id in self._queue.ids():
            owner = self.owners.get(execution_id)
            if owner is not None and owner.runner is None \
                    and owner.committed.status == "running" and owner.head is owner.committed:
                future = owner.apply(lambda rec: T.requeued(rec, now))
                if future is not None:
                    futures.append(future)
        if futures:
            await asyncio.gather(*futures, return_exceptions=True)

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
        if self.cluster is not None:
            await self.cluster.stop()
        self.executor.shutdown(wait=False, cancel_futures=True)

    # ---- requests --------------------------------------------------------------------------

    async def submit(self, workflow_id: str, *, input: dict[str, Any], priority: int = 0,
                     labels: dict[str, str] | None = None, require_approval: bool = False,
                     callback_url: str | None = None, submitted_by: str = "anonymous",
                     remember: Remember | None = None, mode: Literal["auto", "manual"] = "auto",
                     workflow: Workflow | None = None, artifacts: Sequence[str] = (),
                     ) -> ExecutionRecord:
        """A new execution of `workflow_id` (or of `workflow`, a definition the caller looked
        up: a JSON one's current version). `artifacts`: ids its input names (checked by the
        caller), whose use commits with it."""
        self._check_accepting()
        wf = workflow or self.workflows.get(workflow_id)
        if wf is None:
            raise UnknownWorkflowError(f"no workflow with id {workflow_id!r}")
        if not require_approval and mode != "manual":
            self._check_room(submitted_by)
        change = T.submitted(
            execution_id=new_execution_id(), wf=wf, input=input, priority=priority,
            labels=labels or {}, require_approval=require_approval,
            max_cycles=wf.max_cycles or self.settings.default_max_cycles,
            submitted_by=submitted_by, callback_url=callback_url, now=utcnow(), mode=mode)
        rec = change.record
        uses: list[ArtifactUse] = [(rec.execution_id, artifact_id, "input", rec.created_at)
                                   for artifact_id in sorted(set(artifacts))]
        # In a cluster a new execution is this node's at once only if it can run it now;
        # else any node with room claims it.
        claim = self.cluster is None or (rec.status == "queued" and self.cluster.room() > 0)
        with self._queue.reserved(submitted_by):
            await self.ledger.write(rec, change.events, change.steps, base_seq=0,
                                    idempotency=remember(rec) if remember else None,
                                    artifact_uses=uses,
                                    claim=claim and self.cluster is not None)
        self.ledger.tally.added(wf.id, rec.status)
        log.info("execution_submitted", execution_id=rec.execution_id, workflow_id=wf.id,
                 status=rec.status, cycle=0)
        if not claim:
            if self.cluster is not None and rec.status == "queued":
                self.cluster.backlog += 1  # counted again at the next poll
            return rec
        self._own(rec, wf)
        if rec.status == "queued":
            self._enqueue(rec)
            self._pump()
        return rec

    async def approve(self, execution_id: str, comment: str | None, decided_by: str,
                      remember: Remember | None = None, *,
                      four_eyes: bool = False) -> ExecutionRecord:
        """`four_eyes`: the subject that submitted the execution may not approve it."""
        if (cluster := await self._elsewhere(execution_id)) is not None:
            return await cluster.approve(execution_id, comment, decided_by, remember,
                                         four_eyes=four_eyes)
        owner = await self._owner(execution_id)
        guards.check_approver(owner.head, decided_by, four_eyes)
        self.check_room_to_leave(owner.head, "awaiting_approval")
        return await self._apply(owner, lambda rec: T.approved(rec, decided_by, comment,
                                                               utcnow()), remember)

    async def reject(self, execution_id: str, reason: str | None, decided_by: str,
                     remember: Remember | None = None) -> ExecutionRecord:
        if (cluster := await self._elsewhere(execution_id)) is not None:
            return await cluster.reject(execution_id, reason, decided_by, remember)
        owner = await self._owner(execution_id)
        return await self._apply(owner, lambda rec: T.rejected(rec, decided_by, reason,
                                                               utcnow()), remember)

    async def cancel(self, execution_id: str, remember: Remember | None = None,
                     ) -> ExecutionRecord:
        """Cancel in any unfinished status. A running step's task is cancelled for real; its
        runner writes `cancelled`. A step that ignores the cancel past `[engine] cancel_grace`
        is cut off: the owner takes no more changes from it, and writes `cancelled` itself."""
        if (cluster := await self._elsewhere(execution_id)) is not None:
            return await cluster.cancel(execution_id, remember)
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
        # A queued one stays in the queue until the cancel commits (nothing launches a
        # cancelled head), so a refused write leaves it queued as it was.
        try:
            return await self._apply(owner, lambda rec: T.cancelled(rec, utcnow()), remember)
        except StoreUnavailableError:
            # Refused (503: nothing changed): one whose step was cut for this cancel runs its
            # cycle again, as after a restart.
            self._resume_if_idle(owner)
            raise

    async def pause(self, execution_id: str, remember: Remember | None = None,
                    ) -> ExecutionRecord:
        """Pause: at once when no task holds the execution and no step is in flight, else
        after the cycle under way commits (the runner looks between cycles)."""
        if (cluster := await self._elsewhere(execution_id)) is not None:
            return await cluster.pause(execution_id, remember)
        owner = await self._owner(execution_id)
        at_once = owner.runner is None
        return await self._apply(owner, lambda rec: T.pause_requested(rec, utcnow(),
                                                                      at_once=at_once),
                                 remember)

    async def resume(self, execution_id: str, remember: Remember | None = None,
                     ) -> ExecutionRecord:
        """Let a paused (or manual) execution run on by itself."""
        if (cluster := await self._elsewhere(execution_id)) is not None:
            return await cluster.resume(execution_id, remember)
        owner = await self._owner(execution_id)
        self.check_room_to_leave(owner.head, "paused")
        return await self._apply(owner, lambda rec: T.resumed(rec, utcnow()), remember)

    async def step(self, execution_id: str, remember: Remember | None = None,
                   ) -> ExecutionRecord:
        """Run the next step of a paused execution, then pause again."""
        if (cluster := await self._elsewhere(execution_id)) is not None:
            return await cluster.step(execution_id, remember)
        owner = await self._owner(execution_id)
        self.check_room_to_leave(owner.head, "paused")
        return await self._apply(owner, lambda rec: T.stepped(rec, utcnow()), remember)

    async def step_progress(self, execution_id: str, step: str, token: str,
                            report: ProgressReport, *, trusted: bool = False,
                            ) -> ExecutionRecord:
        """Progress reported by another service, for the step running in the process or
        waited on from an outside worker. `trusted`: the caller proved a role that may report
        for any step (a worker's or admin's bearer token), so the step's token is not checked."""
        if (cluster := await self._elsewhere(execution_id)) is not None:
            return await cluster.step_progress(execution_id, step, token, report,
                                               trusted=trusted)
        owner = await self._owner_of_step(execution_id, step)
        rec = owner.head
        if rec.wait is not None and rec.wait.kind == "external":
            guards.external_step(rec, step, token, trusted)  # the checks (the owner applies it)
        else:
            running = rec.step
            if running is None or running.name != step or running.status != "running":
                raise InvalidTransitionError(f"step {step!r} of {execution_id} is not running")
            if not trusted and (
                    not token or not self.tokens.check(execution_id, running.cycle or 0, token)):
                raise ForbiddenError("wrong or stale token for this step run")
        owner.report(report)
        return owner.committed

    async def step_complete(self, execution_id: str, step: str, token: str, *, success: bool,
                            output: Any, error: ErrorInfo | None,
                            remember: Remember | None = None,
                            trusted: bool = False) -> ExecutionRecord:
        """An outside worker finished its step: the cycle is committed with its output."""
        if (cluster := await self._elsewhere(execution_id)) is not None:
            return await cluster.step_complete(execution_id, step, token, success=success,
                                               output=output, error=error, remember=remember,
                                               trusted=trusted)
        owner = await self._owner_of_step(execution_id, step)
        wf = owner.wf
        assert wf is not None
        output = guards.worker_output(output)
        owner.flush_reports()  # held progress commits before the end
        return await self._apply(owner, lambda rec: T.external_answered(
            rec, wf, step, token, success=success, output=output, error=error, now=utcnow(),
            trusted=trusted), remember)

    # ---- internals: owners -----------------------------------------------------------------

    def _own(self, rec: ExecutionRecord, wf: Workflow | None = None) -> Owner:
        owner = Owner(rec, wf or self.workflow_of(rec), self.ledger, self._committed,
                      self.progress_interval)
        self.owners[rec.execution_id] = owner
        owner.arm()  # the timer of a wait, if it waits with a deadline
        return owner

    def workflow_of(self, rec: ExecutionRecord) -> Workflow | None:
        """The definition an execution runs on, if it is in memory (None: not loaded here)."""
        owner = self.owners.get(rec.execution_id)
        if owner is not None and owner.wf is not None:
            return owner.wf
        if self.catalog is not None:
            return self.catalog.resolve(rec)
        return self.workflows.get(rec.workflow_id)

    async def definition_of(self, rec: ExecutionRecord) -> Workflow | None:
        """Like `workflow_of`, loading a stored JSON version when needed (views of steps)."""
        wf = self.workflow_of(rec)
        if wf is None and self.catalog is not None:
            wf = await self.catalog.for_record(rec)
        return wf

    def adopt_held(self, wf: Workflow) -> int:
        """Executions held for want of their workflow that `wf` (just defined) can run: they
        are taken up on it; the others stay held. Answers how many were taken up."""
        taken = 0
        for execution_id in sorted(self.held):
            owner = self.owners.get(execution_id)
            if owner is None or owner.head.workflow_id != wf.id:
                continue
            mismatch = version_mismatch(owner.head, wf)
            if mismatch is not None:
                log.warning("held_execution_not_adopted", execution_id=execution_id,
                            workflow_id=wf.id, version=wf.version, why=mismatch.message)
                continue
            owner.wf = wf
            self.held.discard(execution_id)
            taken += 1
            log.info("held_execution_adopted", execution_id=execution_id, workflow_id=wf.id,
                     version=wf.version, started_on=owner.head.workflow_version)
            owner.arm()
            self._take_up(owner)
        if taken:
            self._pump()
        return taken

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

    def _take_up(self, owner: Owner) -> None:
        """An unfinished execution just owned, with its definition (a recovery, a claim, a
        workflow defined at last): failed at once when that definition lacks a step it needs
        (`workflow_version_mismatch`), else queued if it waits for nothing."""
        rec, wf = owner.head, owner.wf
        assert wf is not None
        mismatch = version_mismatch(rec, wf)
        if mismatch is not None:
            self._fail_mismatch(owner, mismatch)
            return
        if wf.version != rec.workflow_version:
            # A deploy changed the definition: every step it still needs is there.
            log.info("execution_on_new_version", execution_id=rec.execution_id,
                     workflow_id=rec.workflow_id, started_on=rec.workflow_version,
                     loaded=wf.version)
        if rec.step is not None and "answer" in rec.step.metadata:
            self._finish_legacy_answer(owner)
        elif rec.wait is None and rec.status in ("queued", "running"):
            self._enqueue(rec)

    def _drop(self, owner: Owner) -> None:
        """Owner no more: out of the registry, the queue and the held."""
        execution_id = owner.execution_id
        owner.close()
        if self.owners.get(execution_id) is owner:
            del self.owners[execution_id]
        self._queue.remove(execution_id)
        self.held.discard(execution_id)

    def _committed(self, owner: Owner, rec: ExecutionRecord) -> None:
        """Every commit of an execution: end of its owner, or its next place in the queue."""
        execution_id = rec.execution_id
        if rec.is_terminal:
            self._drop(owner)
            self.remember_finished(rec)
        elif self.cluster is not None and rec.wait is not None:
            # The commit gave the lease up (nobody holds a waiting execution); its task ends.
            self.release(owner, cancel=False)
        elif rec.status == "paused":
            self._queue.remove(execution_id)  # queued when paused: it waits for a resume
        elif rec.status == "queued" and owner.runner is None \
                and execution_id not in self._queue and owner.head is rec:
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
            future.add_done_callback(retrieve)

    # ---- in a cluster (engine.cluster) ----------------------------------------------------------

    @property
    def accepting(self) -> bool:
        return self._accepting

    @property
    def submitting(self) -> int:
        """Submits being committed now (each may take a slot here)."""
        return self._queue.submitting

    async def _elsewhere(self, execution_id: str) -> Cluster | None:
        """The cluster, when this node does not own the execution (another node may)."""
        if self.cluster is None:
            return None
        owner = self.owners.get(execution_id)
        if owner is not None and owner.head.wait is not None:
            # Its last change makes it wait, and that commit gives the lease up (nobody holds
            # a waiting execution): once it settled the owner is gone, and a change is made
            # under the row lock. Through the owner it would be refused, the lease lost.
            await owner.settled()
        if execution_id in self.owners:
            return None
        self._check_accepting()
        return self.cluster

    def adopt(self, rec: ExecutionRecord, wf: Workflow | None = None) -> None:
        """Own an execution this node has just leased, and queue it to run: as a recovery
        takes one up, on `wf` if given (the JSON workflow that took over its id), else on its
        own definition. Held when there is none here; failed at once when the definition
        loaded here lacks a step it needs (`workflow_version_mismatch`)."""
        if rec.execution_id in self.owners or rec.is_terminal:
            return
        owner = self._own(rec, wf)
        if owner.wf is None:
            # Never launched without a definition: it waits, owned, as at a recovery.
            self.held.add(rec.execution_id)
            log.warning("execution_held", execution_id=rec.execution_id,
                        workflow_id=rec.workflow_id, version=rec.workflow_version,
                        why="its workflow is not loaded on this node")
        else:
            self._take_up(owner)
            self._pump()

    def release(self, owner: Owner, *, cancel: bool = True) -> None:
        """Stop owning an execution (its lease is gone or given up): its task, if any, is
        cancelled as at a shutdown, writing nothing."""
        self._drop(owner)
        runner = owner.runner
        if cancel and runner is not None and runner.task is not None \
                and not runner.task.done() and not runner.cancel_requested:
            runner.task.cancel()
            self._cut(owner, runner)
        self._pump()

    def remember_finished(self, rec: ExecutionRecord) -> None:
        """Keep a finished record for reads (the last `keep_finished` of them)."""
        finished = self.finished
        finished[rec.execution_id] = rec
        if len(finished) > self.keep_finished:
            finished.popitem(last=False)

    def check_room_to_leave(self, rec: ExecutionRecord, status: str) -> None:
        """An approve, resume or step queues an execution that is `status` (awaiting approval,
        paused): into a full queue it stays as it is (429, nothing changed)."""
        if rec.status == status:
            self._check_room(rec.submitted_by)

    # ---- internals: admission ----------------------------------------------------------------

    def _check_accepting(self) -> None:
        if not self._accepting:
            raise NotReadyError("the service is starting or shutting down")

    def _check_room(self, subject: str) -> None:
        # In a cluster the queue is the database's too: what no node has claimed yet.
        self._queue.check_room(subject, self.cluster.backlog if self.cluster is not None else 0)

    def _enqueue(self, rec: ExecutionRecord) -> None:
        if rec.execution_id not in self.held:
            self._queue.push(rec.execution_id, rec.priority, rec.submitted_by)

    def _pump(self) -> None:
        """Start queued executions, highest priority first, while there is room."""
        while not self._draining and len(self.runners) < self.settings.max_concurrent:
            execution_id = self._queue.pop()
            if execution_id is None:
                return
            owner = self.owners.get(execution_id)
            if owner is not None and owner.runner is None \
                    and owner.head.status in ("queued", "running"):
                self._launch(owner)

    def _launch(self, owner: Owner) -> None:
        wf = owner.wf
        assert wf is not None
        runner = Runner(owner, wf, self.settings, self.executor, self.tokens, self.base_url,
                        self.artifacts)
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
        if self.cluster is not None:
            self.cluster.slot_freed()

    def _fail_mismatch(self, owner: Owner, error: ErrorInfo) -> None:
        """An execution that the workflow loaded now cannot run (a step it needs is gone):
        it fails at once, saying which, instead of meeting the gap deep in its run."""
        rec = owner.head
        log.warning("workflow_version_mismatch", execution_id=rec.execution_id,
                    workflow_id=rec.workflow_id, version=rec.workflow_version,
                    loaded=owner.wf.version if owner.wf else None, why=error.message)
        future = owner.apply(lambda r: T.ended(r, "failed", error, utcnow()))
        if future is not None:
            future.add_done_callback(retrieve)

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
            log.exception("internal_error_not_recorded", execution_id=owner.execution_id,
                          workflow_id=owner.head.workflow_id, cycle=owner.head.cycle)
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
                or rec.execution_id in self._queue:
            return
        self._enqueue(rec)
        self._pump()
