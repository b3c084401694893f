"""The node's part in a cluster: what the scheduler does differently on a store that several
nodes share (PostgreSQL). On SQLite there is none, and one node owns every execution.

- **Leases.** The node owns (has an `Owner` for) only the executions it holds a lease on: the
  ones it claimed, or submitted or decided with room to run them at once. A claim takes as
  many as it has free slots (`max_concurrent` counts per node), woken by a notification or
  every `poll_interval`; the lease is renewed every third of `lease_seconds` by one
  statement. An execution whose lease the node lost (renewal found it gone, or the writer's
  lease check refused a commit) is let go at once: its task is cancelled like at a shutdown,
  writing nothing, and the node that took it over resumes it from its last committed cycle.
  A commit that leaves an execution waiting (approval, external worker) gives the lease up:
  nobody holds a waiting execution.
- **Requests.** An approve, reject, cancel, pause, resume, step, progress or complete for an
  execution the node does not own is applied here under the row's lock when no node holds it
  (the transitions are plain functions of the record), or sent to the node that holds it
  through the mailbox (a row in `requests` and a NOTIFY carrying its id; the answer comes
  back the same way).
- **Events.** Commits of other nodes arrive as notifications; the events are read from the
  table for the followers here (`engine.feed`).
- **Chores** (`engine.chores`) run on the node that holds the leader row.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any

import structlog

from workflowd.clock import utcnow
from workflowd.codec import dumps, loads
from workflowd.config import ClusterSettings, RetentionSettings
from workflowd.context import ProgressReport
from workflowd.definitions import Workflow
from workflowd.engine import guards
from workflowd.engine import transitions as T
from workflowd.engine.chores import Chores
from workflowd.engine.feed import RemoteEvents
from workflowd.engine.outbox import Outbox
from workflowd.engine.owner import Make, Owner, Remember
from workflowd.errors import (
    QueueFullError,
    StoreUnavailableError,
    UnknownExecutionError,
    UnknownStepError,
    ValidationProblem,
    WorkflowdError,
)
from workflowd.records import ErrorInfo, ExecutionRecord, decode_execution
from workflowd.store import Write
from workflowd.store.cluster import (
    ANSWERS_CHANNEL,
    EVENTS_CHANNEL,
    REQUESTS_CHANNEL,
    WORK_CHANNEL,
    ClusterStore,
    OwnedElsewhere,
)

if TYPE_CHECKING:
    from workflowd.engine.scheduler import Scheduler

__all__ = ["Cluster"]

log = structlog.get_logger("workflowd.cluster")

class _Unloaded(Exception):
    """A change needs the definition of a JSON workflow's version that is not in memory."""

    def __init__(self, record: ExecutionRecord) -> None:
        super().__init__(record.execution_id)
        self.record = record


def _all_errors() -> dict[str, type[WorkflowdError]]:
    found: dict[str, type[WorkflowdError]] = {}
    todo: list[type[WorkflowdError]] = [WorkflowdError]
    while todo:
        cls = todo.pop()
        found.setdefault(cls.code, cls)
        todo.extend(cls.__subclasses__())
    return found


class Cluster:
    def __init__(self, scheduler: Scheduler, ops: ClusterStore, settings: ClusterSettings,
                 retention: RetentionSettings | None = None,
                 outbox: Outbox | None = None) -> None:
        self.scheduler = scheduler
        self.ops = ops
        self.settings = settings
        self.node_id = ops.node_id
        self.chores = Chores(self, retention, outbox)
        self._tasks: list[asyncio.Task[None]] = []
        self._work = asyncio.Event()
        self.remote_events = RemoteEvents(ops, scheduler.hub, scheduler.owners, self.node_id,
                                          settings.poll_interval)
        self._answers: dict[int, asyncio.Future[None]] = {}
        self._serving: set[asyncio.Task[None]] = set()
        self._stopping = False
        # Whether queued work may wait for a node (a notification said so, or the last claim
        # filled every free slot): then a slot freed here is worth a claim at once.
        self._more = True
        # Queued executions no node has claimed, as last counted (max_queued counts them).
        self.backlog = 0
        self._counted = 0.0
        self._errors = _all_errors()
        self.claimed = 0
        self.taken_over = 0
        self.lost = 0
        # Clear while a claim of this node is under way: from its commit to the owners it
        # makes, the executions it took are leased here yet owned by nobody.
        self._no_claim = asyncio.Event()
        self._no_claim.set()
        # Executions a change under the row lock claimed here, set once they are owned: from
        # its commit to then, they too are leased here yet owned by nobody.
        self._adopting: dict[str, asyncio.Event] = {}

    # ---- start and stop ---------------------------------------------------------------------

    async def start(self) -> None:
        await self.ops.heartbeat(0)
        writer = getattr(self.scheduler.store, "writer", None)
        if writer is not None and hasattr(writer, "on_lease_lost"):
            writer.on_lease_lost.append(self._lease_lost)
            writer.on_unsure.append(self._unsure)
        await self.ops.listen({EVENTS_CHANNEL: self.remote_events.notified,
                               WORK_CHANNEL: self._on_work,
                               REQUESTS_CHANNEL: self._on_request,
                               ANSWERS_CHANNEL: self._on_answer}, self._caught_up)
        for name, job in (("claims", self._claim_forever), ("leases", self._renew_forever),
                          ("remote-events", self.remote_events.run_forever),
                          ("chores", self.chores.run_forever)):
            self._tasks.append(asyncio.create_task(self._guard(name, job),
                                                   name=f"cluster-{name}"))
        log.info("cluster_joined", node_id=self.node_id,
                 lease_seconds=self.settings.lease_seconds)

    async def stop(self) -> None:
        """After the drain: give back the leases of what this node still owns (other nodes
        take them at once), stop the loops, leave the nodes table."""
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for task in list(self._serving):
            task.cancel()
        await asyncio.gather(*self._serving, return_exceptions=True)
        await self.chores.stop()
        ids = list(self.scheduler.owners)
        try:
            await self.ops.release(ids)
            await self.ops.leave()
        except Exception as exc:  # noqa: BLE001 - the leases then run out by themselves
            log.warning("cluster_leave_failed", error=str(exc), executions=len(ids))
        else:
            log.info("cluster_left", released=len(ids))

    async def _guard(self, name: str, job: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run a loop forever: a failure (the server gone a while) is logged, then it goes on."""
        while True:
            try:
                await job()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a loop of the node must not die
                log.warning("cluster_loop_failed", loop=name, error=str(exc))
                await asyncio.sleep(self.settings.poll_interval)

    def _caught_up(self) -> None:
        """(Re)connected to the notifications: look for what was missed meanwhile."""
        self.remote_events.catch_up()
        self._work.set()

    # ---- claims and leases --------------------------------------------------------------------

    def room(self) -> int:
        """Free slots: `max_concurrent` less what runs, waits for a slot or is being
        submitted here."""
        s = self.scheduler
        return s.settings.max_concurrent - len(s.runners) - s.queued - s.submitting

    def wake(self) -> None:
        self._work.set()

    def slot_freed(self) -> None:
        """A runner here ended: claim at once if work may be waiting."""
        if self._more:
            self._work.set()

    def _on_work(self, payload: str) -> None:
        self._more = True
        if payload != self.node_id or self.room() > 0:
            self._work.set()

    async def _claim_forever(self) -> None:
        scheduler = self.scheduler
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.poll_interval):
                    await self._work.wait()
            self._work.clear()
            while not self._stopping and scheduler.accepting and (room := self.room()) > 0:
                runnable = await self.runnable()
                self._no_claim.clear()
                try:
                    records = await self.ops.claim(room, runnable)
                    self._adopt(records, await self._definitions(records))
                finally:
                    self._no_claim.set()
                if len(records) < room:
                    self._more = False
                    break
            now = asyncio.get_running_loop().time()
            if now - self._counted >= self.settings.poll_interval:
                self._counted = now
                self.backlog = await self.ops.backlog()

    def _adopt(self, records: Sequence[ExecutionRecord],
               definitions: dict[str, Workflow]) -> None:
        self.backlog = max(0, self.backlog - len(records))
        for rec in records:
            self.claimed += 1
            if rec.status == "running":
                self.taken_over += 1
                log.info("execution_taken_over", execution_id=rec.execution_id,
                         workflow_id=rec.workflow_id, cycle=rec.cycle, node_id=self.node_id)
            self.scheduler.adopt(rec, definitions.get(rec.execution_id))

    async def runnable(self) -> list[str]:
        """The workflows this node claims executions of: Python ones and those defined as
        JSON, stored here or on any node (read again at most every `poll_interval`)."""
        catalog = self.scheduler.catalog
        if catalog is None:
            return sorted(self.scheduler.workflows)
        return await catalog.runnable(self.settings.poll_interval)

    async def _definitions(self, records: Sequence[ExecutionRecord]) -> dict[str, Workflow]:
        """What claimed executions run on, loaded before they are owned: each one's own
        version (a JSON one read from the store); for one whose Python workflow is not loaded
        here, the JSON workflow defined under its id since, if any (as held executions are
        taken up on one node). If the store fails meanwhile, their leases go back (whoever
        claims them next loads)."""
        catalog = self.scheduler.catalog
        if catalog is None or not records:
            return {}
        found: dict[str, Workflow] = {}
        try:
            await catalog.preload(records)
            for rec in records:
                wf = self.scheduler.workflow_of(rec)
                if wf is None and rec.source == "python":
                    wf = await catalog.current(rec.workflow_id)
                if wf is not None:
                    found[rec.execution_id] = wf
        except BaseException:
            with contextlib.suppress(Exception):
                await self.ops.release([rec.execution_id for rec in records])
            raise
        return found

    async def _renew_forever(self) -> None:
        every = self.settings.lease_seconds / 3
        while True:
            await asyncio.sleep(every)
            owned = dict(self.scheduler.owners)
            held = await self.ops.renew()
            gone = [owner for execution_id, owner in owned.items() if execution_id not in held]
            if gone:
                self._let_go(gone, why="lease not renewed")
            await self.ops.heartbeat(self.scheduler.running)

    def _lease_lost(self, ids: Sequence[str]) -> None:
        owners = self.scheduler.owners
        self._let_go([owners[i] for i in ids if i in owners], why="commit refused: lease lost")

    def _unsure(self, ids: Sequence[str]) -> None:
        """The connection broke during a commit of these: reload them from the store (give
        the leases back so that whoever claims them reads what really committed)."""
        owners = self.scheduler.owners
        gone = [owners[i] for i in ids if i in owners]
        self._let_go(gone, why="commit outcome unknown")
        if gone:
            self._spawn(self.ops.release([o.execution_id for o in gone]))

    def _let_go(self, owners: Sequence[Owner], *, why: str) -> None:
        """Stop owning these: their tasks are cancelled as at a shutdown (writing nothing)."""
        scheduler = self.scheduler
        for owner in owners:
            execution_id = owner.execution_id
            if scheduler.owners.get(execution_id) is not owner:
                continue
            self.lost += 1
            log.warning("execution_let_go", execution_id=execution_id, why=why,
                        node_id=self.node_id)
            scheduler.release(owner)
        self.wake()

    # ---- requests for executions this node does not own -----------------------------------------

    async def approve(self, execution_id: str, comment: str | None, decided_by: str,
                      remember: Remember | None, *, four_eyes: bool = False,
                      ) -> ExecutionRecord:
        def make(rec: ExecutionRecord) -> T.Change:
            guards.check_approver(rec, decided_by, four_eyes)
            self.scheduler.check_room_to_leave(rec, "awaiting_approval")
            return T.approved(rec, decided_by, comment, utcnow())

        return await self._decide(execution_id, make, remember, {
            "kind": "approve", "comment": comment, "decided_by": decided_by,
            "four_eyes": four_eyes})

    async def reject(self, execution_id: str, reason: str | None, decided_by: str,
                     remember: Remember | None) -> ExecutionRecord:
        return await self._decide(
            execution_id, lambda rec: T.rejected(rec, decided_by, reason, utcnow()), remember,
            {"kind": "reject", "reason": reason, "decided_by": decided_by})

    async def cancel(self, execution_id: str, remember: Remember | None) -> ExecutionRecord:
        return await self._decide(execution_id, lambda rec: T.cancelled(rec, utcnow()),
                                  remember, {"kind": "cancel"})

    async def pause(self, execution_id: str, remember: Remember | None) -> ExecutionRecord:
        # No node runs it: nothing is in flight, so it stops at once unless it waits (then
        # after the cycle it waits in, as on one node).
        return await self._decide(
            execution_id, lambda rec: T.pause_requested(rec, utcnow(), at_once=True),
            remember, {"kind": "pause"})

    async def resume(self, execution_id: str, remember: Remember | None) -> ExecutionRecord:
        return await self._decide(execution_id, self._room_first(T.resumed), remember,
                                  {"kind": "resume"})

    async def step(self, execution_id: str, remember: Remember | None) -> ExecutionRecord:
        return await self._decide(execution_id, self._room_first(T.stepped), remember,
                                  {"kind": "step"})

    def _room_first(self, transition: Callable[[ExecutionRecord, str], T.Change]) -> Make:
        """Like an approve: a paused execution let go into a full queue stays paused (429)."""
        def make(rec: ExecutionRecord) -> T.Change:
            self.scheduler.check_room_to_leave(rec, "paused")
            return transition(rec, utcnow())

        return make

    async def step_progress(self, execution_id: str, step: str, token: str,
                            report: ProgressReport, *, trusted: bool = False,
                            ) -> ExecutionRecord:
        def make(rec: ExecutionRecord) -> T.Change | None:
            self._check_step(rec, step)
            # Not running anywhere: only an external step's worker may report.
            return T.external_progress(rec, step, token, report, utcnow(), trusted=trusted)

        return await self._decide(execution_id, make, None, {
            "kind": "progress", "step": step, "token": token, "trusted": trusted,
            "report": [report.percentage, report.message, report.current_task,
                       report.estimated_remaining_seconds, report.custom_data]})

    async def step_complete(self, execution_id: str, step: str, token: str, *, success: bool,
                            output: Any, error: ErrorInfo | None,
                            remember: Remember | None, trusted: bool = False,
                            ) -> ExecutionRecord:
        output = guards.worker_output(output)

        def make(rec: ExecutionRecord) -> T.Change:
            wf = self._check_step(rec, step)
            return T.external_answered(rec, wf, step, token, success=success, output=output,
                                       error=error, now=utcnow(), trusted=trusted)

        return await self._decide(execution_id, make, remember, {
            "kind": "complete", "step": step, "token": token, "trusted": trusted,
            "success": success,
            "output": output, "error": error})

    def _check_step(self, rec: ExecutionRecord, step: str) -> Any:
        wf = self.scheduler.workflow_of(rec)
        if wf is None or wf.get_step(step) is None:
            raise UnknownStepError(f"workflow {rec.workflow_id!r} declares no step {step!r}")
        return wf

    async def _decide(self, execution_id: str, make: Make, remember: Remember | None,
                      request: dict[str, Any]) -> ExecutionRecord:
        """Under the row lock where no node holds the execution, else by its holder."""
        for _ in range(5):
            try:
                return await self.change_unheld(execution_id, make, remember)
            except OwnedElsewhere as held:
                answer: ExecutionRecord | None
                if held.node_id == self.node_id:
                    answer = await self._leased_here(execution_id, make, remember, request)
                else:
                    answer = await self._forward(held.node_id, execution_id, request)
                if answer is None:
                    continue  # it let the execution go meanwhile: look again
                if remember is not None:
                    # The holder committed the change; its answer is kept beside it.
                    await self.scheduler.store.commit(Write(idempotency=remember(answer)))
                return answer
        raise StoreUnavailableError(f"execution {execution_id} kept moving between nodes")

    async def _leased_here(self, execution_id: str, make: Make, remember: Remember | None,
                           request: dict[str, Any]) -> ExecutionRecord:
        """The store says this node holds the lease, yet no owner here had it: a claim of this
        node took it (committed, its owner not made yet), and once made the owner decides; or
        the lease outlived its owner here (let go, or a process before this one under the
        same node id), and the change is made under the row lock after all."""
        await self._no_claim.wait()
        adopting = self._adopting.get(execution_id)
        if adopting is not None:
            await adopting.wait()
        if execution_id in self.scheduler.owners:
            return await self._apply_here(execution_id, request)
        return await self.change_unheld(execution_id, make, remember, own_lease=True)

    async def change_unheld(self, execution_id: str, make: Make,
                            remember: Remember | None, *,
                            own_lease: bool = False) -> ExecutionRecord:
        """Change an execution no node runs, under its row lock. A JSON workflow's version
        that is not in memory here is loaded first (out of the transaction, which is tried
        again): `make` and the claim need the definition, and a node other than the one that
        defined or last ran it may be the one asked."""
        scheduler = self.scheduler
        made: list[ExecutionRecord] = []
        loaded: set[str] = set()
        claiming: list[asyncio.Event] = []  # this change's mark in `_adopting`, if it claims

        def build(rec: ExecutionRecord) -> Write | None:
            if rec.source == "json" and execution_id not in loaded \
                    and scheduler.workflow_of(rec) is None:
                raise _Unloaded(rec)
            change = make(rec)
            if change is None:
                return None
            new = change.record
            claim = (new.status == "queued" and scheduler.workflow_of(new) is not None
                     and scheduler.accepting and self.room() > 0)
            if claim and not claiming:
                claiming.append(self._adopting.setdefault(execution_id, asyncio.Event()))
            made.append(new)
            return scheduler.ledger.prepare(
                new, change.events, change.steps, base_seq=rec.seq, claim=claim,
                idempotency=remember(new) if remember is not None else None)

        try:
            return await self._commit_under_lock(execution_id, build, made, loaded, own_lease)
        finally:
            if claiming and self._adopting.get(execution_id) is claiming[0]:
                del self._adopting[execution_id]
                claiming[0].set()

    async def _commit_under_lock(self, execution_id: str,
                                 build: Callable[[ExecutionRecord], Write | None],
                                 made: list[ExecutionRecord], loaded: set[str],
                                 own_lease: bool) -> ExecutionRecord:
        scheduler = self.scheduler
        try:
            rec, write = await self.ops.locked_change(execution_id, build, own_lease=own_lease)
        except _Unloaded as unloaded:
            if scheduler.catalog is not None:
                await scheduler.catalog.preload([unloaded.record])
            loaded.add(execution_id)  # loaded, or not to be: `make` decides without it
            rec, write = await self.ops.locked_change(execution_id, build, own_lease=own_lease)
        if rec is None:
            raise UnknownExecutionError(f"no execution with id {execution_id!r}")
        if write is None or not made:
            return rec
        new = made[-1]
        log.info("execution_decided", execution_id=execution_id, workflow_id=new.workflow_id,
                 cycle=new.cycle, status=new.status, node_id=self.node_id)
        if write.claim:
            scheduler.adopt(new)
        elif new.is_terminal:
            scheduler.remember_finished(new)
        return new

    async def _forward(self, node_id: str, execution_id: str,
                       request: dict[str, Any]) -> ExecutionRecord | None:
        """Ask the holder; answer its record, raise its error, or None when it no longer
        holds the execution."""
        ops = self.ops
        request_id = await ops.post_request(node_id, execution_id, dumps(request))
        arrived = self._answers[request_id] = asyncio.get_running_loop().create_future()
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self.scheduler.settings.cancel_grace \
            + self.settings.lease_seconds + 5.0
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.settings.poll_interval):
                        await asyncio.shield(arrived)
                answer = await ops.request_answer(request_id)
                if answer is not None:
                    break
                if await ops.holder(execution_id) != node_id:
                    return None
                if loop.time() > give_up:
                    raise StoreUnavailableError(f"node {node_id} holds {execution_id} but did "
                                                "not answer; try again")
        finally:
            self._answers.pop(request_id, None)
            with contextlib.suppress(Exception):
                await ops.drop_request(request_id)
        reply = loads(answer)
        if "record" in reply:
            return decode_execution(dumps(reply["record"]))
        if "error" in reply:
            raise self._error(reply["error"])
        return None

    def _error(self, data: dict[str, Any]) -> WorkflowdError:
        cls = self._errors.get(data.get("code", ""), StoreUnavailableError)
        detail = str(data.get("detail", ""))
        if cls is QueueFullError:
            return QueueFullError(detail, retry_after=int(data.get("retry_after", 1)))
        if cls is ValidationProblem:
            return ValidationProblem(detail, list(data.get("errors", [])))
        return cls(detail)

    def _on_answer(self, payload: str) -> None:
        node, _, request_id = payload.partition("|")
        if node == self.node_id and request_id.isdigit():
            arrived = self._answers.get(int(request_id))
            if arrived is not None and not arrived.done():
                arrived.set_result(None)

    def _on_request(self, payload: str) -> None:
        node, _, request_id = payload.partition("|")
        if node == self.node_id and request_id.isdigit():
            self._spawn(self._serve(int(request_id)))

    async def _serve(self, request_id: int) -> None:
        """A request another node sent to this one, as the holder of its execution."""
        taken = await self.ops.take_request(request_id)
        if taken is None:
            return
        _, execution_id, body = taken
        request = loads(body)
        answer: dict[str, Any]
        if execution_id not in self.scheduler.owners:
            answer = {"not_owner": True}
        else:
            try:
                rec = await self._apply_here(execution_id, request)
                answer = {"record": rec}
            except WorkflowdError as exc:
                answer = {"error": {"code": exc.code, "detail": exc.detail,
                                    "retry_after": getattr(exc, "retry_after", None),
                                    **exc.extra()}}
        await self.ops.answer_request(request_id, dumps(answer))

    async def _apply_here(self, execution_id: str, r: dict[str, Any]) -> ExecutionRecord:
        s = self.scheduler
        kind = r["kind"]
        if kind == "approve":
            return await s.approve(execution_id, r["comment"], r["decided_by"],
                                   four_eyes=bool(r.get("four_eyes")))
        if kind == "reject":
            return await s.reject(execution_id, r["reason"], r["decided_by"])
        if kind == "cancel":
            return await s.cancel(execution_id)
        if kind == "pause":
            return await s.pause(execution_id)
        if kind == "resume":
            return await s.resume(execution_id)
        if kind == "step":
            return await s.step(execution_id)
        if kind == "progress":
            return await s.step_progress(execution_id, r["step"], r["token"],
                                         ProgressReport(*r["report"]),
                                         trusted=bool(r.get("trusted")))
        if kind == "complete":
            error = r.get("error")
            return await s.step_complete(
                execution_id, r["step"], r["token"], success=r["success"],
                output=r["output"], trusted=bool(r.get("trusted")),
                error=ErrorInfo(**error) if isinstance(error, dict) else None)
        raise ValidationProblem(f"unknown request {kind!r}", [])

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coro)
        self._serving.add(task)
        task.add_done_callback(self._served)

    def _served(self, task: asyncio.Task[Any]) -> None:
        self._serving.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.warning("cluster_request_failed", error=str(exc))
