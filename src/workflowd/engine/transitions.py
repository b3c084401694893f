"""Transitions: the next record of an execution and its events, from its record and a request.

Plain functions, no I/O and no event loop ("sans-I/O", like h11's state machine): each takes
the execution's latest record (what its owner has queued, committed or not), the request and
the time, and answers a `Change`: the next record, the events it adds (numbered on from the
record's `seq`, so they never collide and never leave a gap) and the step records to write.
A request the record does not allow raises the project's error (409, 403), changing nothing.

The owner (`engine.owner`) applies them one at a time; nothing else builds a record.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from msgspec.structs import replace

from workflowd.clock import format_ts, ms_between, parse_ts
from workflowd.codec import encode
from workflowd.context import ProgressReport
from workflowd.definitions import Done, Goto, Sleep, StepDef, Workflow
from workflowd.engine import guards
from workflowd.errors import InvalidTransitionError
from workflowd.records import (
    Approval,
    CurrentStep,
    Decision,
    ErrorInfo,
    Event,
    ExecutionRecord,
    Progress,
    StepRecord,
    Wait,
)

__all__ = [
    "CANCELLED",
    "Change",
    "approved",
    "cancelled",
    "completed",
    "cycle_finished",
    "ended",
    "external_answered",
    "external_progress",
    "gate_entered",
    "handed_over",
    "merge",
    "pause_requested",
    "paused",
    "progressed",
    "rejected",
    "requeued",
    "resumed",
    "retrying",
    "sleep_entered",
    "sleeping",
    "soft_timed_out",
    "started",
    "step_began",
    "stepped",
    "submitted",
    "timed_out_error",
    "wait_expired",
    "woke",
]

Item = tuple[str, dict[str, Any]]
CANCELLED = ErrorInfo(code="cancelled", message="cancelled by request")
_END_EVENTS = {"failed": "workflow_failed", "timed_out": "workflow_timed_out",
               "cancelled": "workflow_cancelled"}


@dataclass(slots=True)
class Change:
    """One step of an execution's history: its next record, with what is written beside it."""

    record: ExecutionRecord
    events: list[Event]
    steps: list[StepRecord]


def _change(rec: ExecutionRecord, now: str, items: Sequence[Item],
            steps: Sequence[StepRecord] = (), **changes: Any) -> Change:
    """The next record with `changes`, and `items` as events numbered on from `rec.seq`; events
    made together carry one timestamp."""
    seq = rec.seq
    events: list[Event] = []
    for type_, fields in items:
        seq += 1
        body = {"seq": seq, "type": type_, "execution_id": rec.execution_id, "ts": now, **fields}
        events.append(Event(rec.execution_id, seq, type_, encode(body), rec.workflow_id))
    return Change(replace(rec, seq=seq, updated_at=now, **changes), events, list(steps))


def _progress(rec: ExecutionRecord, done_steps: Sequence[str], step_pct: float = 0.0,
              message: str | None = None) -> Progress:
    """Completed steps plus the running one's share; never goes down, 100 only when completed."""
    total = rec.progress.total_steps
    done = min(len(done_steps), total)
    raw = (done + step_pct / 100.0) / total * 100.0 if total else 0.0
    pct = round(max(rec.progress.percentage, min(raw, 99.0)), 1)
    return Progress(percentage=pct, completed_steps=done, total_steps=total,
                    message=message if message is not None else rec.progress.message)


def _require(rec: ExecutionRecord, *statuses: str) -> None:
    if rec.status not in statuses:
        raise InvalidTransitionError(
            f"execution {rec.execution_id} is {rec.status}; this needs {' or '.join(statuses)}")


def timed_out_error(timeout: float | None, where: str = "") -> ErrorInfo:
    limit = f"{timeout:g}s timeout" if timeout is not None else "timeout"
    return ErrorInfo(code="timed_out", message=f"the execution ran past its {limit}{where}")


def _timeout_of(rec: ExecutionRecord) -> float | None:
    """The workflow's timeout, as its first start set the deadline from it."""
    ms = ms_between(rec.started_at, rec.deadline) if rec.deadline is not None else None
    return ms / 1000 if ms is not None else None


# ---- entering the queue, starting ----------------------------------------------------------


def submitted(*, execution_id: str, wf: Workflow, input: dict[str, Any], priority: int,
              labels: dict[str, str], require_approval: bool, max_cycles: int,
              submitted_by: str, callback_url: str | None, now: str,
              mode: Literal["auto", "manual"] = "auto") -> Change:
    """A new execution: `queued`, or `awaiting_approval` before its first step; in manual
    mode `paused` before it (after the approval, if one is required)."""
    manual = mode == "manual"
    rec = ExecutionRecord(
        execution_id=execution_id, workflow_id=wf.id, workflow_version=wf.version,
        status="awaiting_approval" if require_approval else "queued", input=input,
        created_at=now, updated_at=now, max_cycles=max_cycles,
        progress=Progress(total_steps=len(wf.steps)), priority=priority, labels=labels,
        approval=Approval() if require_approval else None, submitted_by=submitted_by,
        next_step=wf.steps[0].name, callback_url=callback_url,
        wait=Wait(kind="approval") if require_approval else None,
        mode=mode, pause_at=0 if manual else None, source=wf.source,
    )
    if require_approval:
        return _change(rec, now, [("approval_required", {"step": None, "cycle": 0,
                                                         "prompt": None})])
    if manual:
        return _change(rec, now, [("workflow_paused", {"next_step": rec.next_step, "cycle": 0,
                                                       "mode": mode})],
                       status="paused", pause_at=None)
    return _change(rec, now, [("workflow_queued", {"priority": priority})])


def started(rec: ExecutionRecord, now: str, timeout: float | None) -> Change:
    """A runner takes the execution up; the first start sets the workflow's deadline."""
    _require(rec, "queued", "running")
    changes: dict[str, Any] = {"status": "running"}
    if rec.started_at is None:
        changes["started_at"] = now
        if timeout is not None:
            changes["deadline"] = format_ts(parse_ts(now) + timedelta(seconds=timeout))
    return _change(rec, now, [("workflow_started", {"resumed": rec.started_at is not None})],
                   **changes)


def requeued(rec: ExecutionRecord, now: str) -> Change:
    """Recovered `running` but waiting for a slot (a restart with fewer slots): `queued`
    again, so that no execution shows `running` without a task."""
    _require(rec, "running")
    return _change(rec, now, [("workflow_queued", {"priority": rec.priority, "resumed": True})],
                   status="queued")


# ---- a step run in the process -------------------------------------------------------------


def _new_step(rec: ExecutionRecord, step: StepDef, cycle: int, started_at: str,
              status: str) -> StepRecord:
    return StepRecord(step_id=f"{rec.execution_id}:{cycle}", name=step.name, kind=step.kind,
                      agent_name=step.agent, tool_name=step.tool, status=status,  # type: ignore[arg-type]
                      cycle=cycle, attempt=1, started_at=started_at, progress=0.0)


def _entered(rec: ExecutionRecord, step: StepDef, now: str, status: str,
             ) -> tuple[StepRecord, CurrentStep]:
    record = _new_step(rec, step, rec.cycle + 1, now, status)
    return record, CurrentStep(name=step.name, kind=step.kind, index=step.index, started_at=now)


def step_began(rec: ExecutionRecord, step: StepDef, now: str) -> Change:
    """The next cycle starts running `step`."""
    record, current = _entered(rec, step, now, "running")
    return _change(rec, now, [("step_started", {"step": step.name, "cycle": record.cycle,
                                                "kind": step.kind, "attempt": 1})],
                   [record], step=record, current_step=current)


def progressed(rec: ExecutionRecord, report: ProgressReport, now: str) -> Change | None:
    """A progress report of the step in flight (None when no step is: it ended meanwhile)."""
    step = rec.step
    if step is None or rec.is_terminal:
        return None
    fields = {"step": step.name, "cycle": step.cycle, "percentage": report.percentage,
              "message": report.message, "current_task": report.current_task,
              "estimated_remaining_seconds": report.estimated_remaining_seconds,
              "custom_data": report.custom_data}
    metadata = {**step.metadata, "message": report.message, "current_task": report.current_task,
                "custom_data": report.custom_data}
    record = replace(step, progress=report.percentage, metadata=metadata)
    progress = _progress(rec, rec.done_steps, report.percentage, report.message)
    return _change(rec, now, [("step_progress", fields)], [record], step=record,
                   progress=progress)


def retrying(rec: ExecutionRecord, attempt: int, error: ErrorInfo, now: str) -> Change | None:
    """Attempt `attempt` of the step in flight failed; the next one follows. None when no step
    is in flight: its start was lost with a write the store refused, and the cycle runs again
    once its end is to be applied (`Runner._apply_end`), so there is nothing to record."""
    step = rec.step
    if step is None or rec.is_terminal:
        return None
    record = replace(step, attempt=attempt + 1, error=error)
    return _change(rec, now, [("step_retrying", {"step": step.name, "cycle": step.cycle,
                                                 "attempt": attempt, "error": error.message})],
                   [record], step=record)


def soft_timed_out(rec: ExecutionRecord, attempt: int, now: str) -> Change | None:
    """The step in flight passed its `soft_timeout`: it was told, and it is on record (None,
    like `retrying`, when its start was lost with a refused write)."""
    step = rec.step
    if step is None or rec.is_terminal:
        return None
    record = replace(step, metadata={**step.metadata, "soft_timeout": now})
    return _change(rec, now, [("step_soft_timeout", {"step": step.name, "cycle": step.cycle,
                                                     "attempt": attempt})],
                   [record], step=record)


def _in_flight(rec: ExecutionRecord) -> StepRecord:
    if rec.step is None:
        raise InvalidTransitionError(f"execution {rec.execution_id} has no step in flight")
    return rec.step


def cycle_finished(rec: ExecutionRecord, wf: Workflow, *, state: dict[str, Any],
                   decisions: Sequence[tuple[str, Any]], value: Any, output: Any,
                   attempt: int, duration_ms: int | None, now: str) -> Change:
    """The step in flight succeeded: commit its cycle, then go on to the next step, or finish.

    `value` is what the step returned (`None`, a `Goto` or a `Done`); `state`, `decisions` and
    `output` are already plain JSON copies.
    """
    step = _in_flight(rec)
    assert step.cycle is not None
    if isinstance(value, Goto) and wf.get_step(value.target) is None:
        error = ErrorInfo(code="unknown_step", message=f"goto to unknown step {value.target!r}")
        return ended(rec, "failed", error, now, attempt=attempt, duration_ms=duration_ms)
    cycle = step.cycle
    metadata = {**step.metadata, "goto": value.target} if isinstance(value, Goto) \
        else step.metadata
    record = replace(step, status="completed", progress=100.0, error=None, output=output,
                     attempt=attempt, completed_at=now,
                     duration_ms=ms_between(step.started_at, now) if duration_ms is None
                     else duration_ms, metadata=metadata)
    done_steps = rec.done_steps if step.name in rec.done_steps else (*rec.done_steps, step.name)
    all_decisions = dict(rec.decisions)
    items: list[Item] = []
    for name, outcome in decisions:
        all_decisions[name] = Decision(outcome=outcome, cycle=cycle, timestamp=now)
        items.append(("branch_decided", {"step": step.name, "cycle": cycle, "name": name,
                                         "outcome": outcome}))
    items.append(("step_finished", {"step": step.name, "cycle": cycle, "status": "completed",
                                    "duration_ms": record.duration_ms, "attempt": attempt}))
    items.append(("cycle_completed", {"cycle": cycle}))
    next_step = _next_after(wf, step.name, value)
    changes: dict[str, Any] = {"cycle": cycle, "state": state, "decisions": all_decisions,
                               "done_steps": done_steps, "current_step": None, "step": None,
                               "wait": None}
    if rec.woke:
        changes["woke"] = False
    if isinstance(value, Done) or next_step is None:
        result = output if isinstance(value, Done) else state
        return _finish(rec, now, items, [record], result, changes)
    changes["progress"] = _progress(rec, done_steps)
    return _change(rec, now, items, [record], next_step=next_step, **changes)


def _next_after(wf: Workflow, name: str, value: Any) -> str | None:
    if isinstance(value, Goto):
        return value.target
    step = wf.get_step(name)
    following = step.index + 1 if step is not None else len(wf.steps)
    return wf.steps[following].name if following < len(wf.steps) else None


def _finish(rec: ExecutionRecord, now: str, items: list[Item], steps: list[StepRecord],
            result: Any, changes: dict[str, Any]) -> Change:
    total = rec.progress.total_steps
    done = len(changes.get("done_steps", rec.done_steps))
    progress = Progress(percentage=100.0, completed_steps=min(done, total), total_steps=total,
                        message=rec.progress.message)
    items = [*items, ("workflow_completed", {"result": result})]
    changes.update(status="completed", result=result, finished_at=now, next_step=None,
                   current_step=None, step=None, wait=None, progress=progress)
    return _change(rec, now, items, steps, **changes)


def completed(rec: ExecutionRecord, now: str) -> Change:
    """No step is left (the last one was a gate): the result is the state."""
    return _finish(rec, now, [], [], rec.state, {})


def ended(rec: ExecutionRecord, status: str, error: ErrorInfo, now: str, *,
          attempt: int | None = None, duration_ms: int | None = None) -> Change:
    """Finish as `failed`, `timed_out` or `cancelled`. The step in flight, if any, is cut off:
    its record fails with the error (coded `cancelled`/`timed_out` when that is why), and its
    cycle is completed unless it already was (a gate's cycle counts when it is entered)."""
    if rec.is_terminal:
        raise InvalidTransitionError(f"execution {rec.execution_id} is already {rec.status}")
    items: list[Item] = []
    steps: list[StepRecord] = []
    changes: dict[str, Any] = {"status": status, "error": error, "finished_at": now,
                               "current_step": None, "step": None, "wait": None}
    step = rec.step
    if step is not None:
        step_error = error if status == "failed" else ErrorInfo(code=status,
                                                                message=error.message)
        record = replace(step, status="failed", error=step_error, completed_at=now,
                         attempt=attempt or step.attempt,
                         duration_ms=ms_between(step.started_at, now) if duration_ms is None
                         else duration_ms)
        steps.append(record)
        items.append(("step_finished", {"step": step.name, "cycle": step.cycle,
                                        "status": "failed", "duration_ms": record.duration_ms,
                                        "attempt": record.attempt,
                                        "error": step_error.message}))
        if step.cycle is not None and step.cycle > rec.cycle:
            changes["cycle"] = step.cycle
            items.append(("cycle_completed", {"cycle": step.cycle}))
    items.append((_END_EVENTS[status], {"error": error}))
    return _change(rec, now, items, steps, **changes)


def cancelled(rec: ExecutionRecord, now: str, duration_ms: int | None = None) -> Change:
    """A user's cancel, of an execution in any status but a terminal one."""
    return ended(rec, "cancelled", CANCELLED, now, duration_ms=duration_ms)


# ---- approvals -----------------------------------------------------------------------------


def gate_entered(rec: ExecutionRecord, wf: Workflow, step: StepDef, now: str) -> Change:
    """The next cycle is an approval gate: it stops `awaiting_approval`, holding no task."""
    record, current = _entered(rec, step, now, "waiting")
    items: list[Item] = [
        ("step_started", {"step": step.name, "cycle": record.cycle, "kind": "approval",
                          "status": "waiting"}),
        ("approval_required", {"step": step.name, "cycle": record.cycle,
                               "prompt": step.prompt}),
        ("cycle_completed", {"cycle": record.cycle}),
    ]
    return _change(rec, now, items, [record], status="awaiting_approval", cycle=record.cycle,
                   current_step=current, approval=Approval(), step=record,
                   wait=Wait(kind="approval"), next_step=_next_after(wf, step.name, None))


def _decided_gate(rec: ExecutionRecord, status: str, now: str, error: ErrorInfo | None,
                  ) -> tuple[list[Item], list[StepRecord]]:
    """The gate's record decided, with its `step_finished` (none for a submission approval)."""
    gate = rec.step
    if gate is None:
        return [], []
    record = replace(gate, status=status, completed_at=now, error=error,
                     progress=100.0 if status == "completed" else gate.progress,
                     duration_ms=ms_between(gate.started_at, now))
    return [("step_finished", {"step": gate.name, "cycle": gate.cycle, "status": status,
                               "duration_ms": record.duration_ms})], [record]


def approved(rec: ExecutionRecord, decided_by: str, comment: str | None, now: str) -> Change:
    _require(rec, "awaiting_approval")
    items, steps = _decided_gate(rec, "completed", now, None)
    gate = rec.step.name if rec.step else None
    items.append(("approval_granted", {"step": gate, "decided_by": decided_by,
                                       "comment": comment}))
    items.append(("workflow_queued", {"priority": rec.priority}))
    changes: dict[str, Any] = {}
    if gate is not None and gate not in rec.done_steps:
        done_steps = (*rec.done_steps, gate)
        changes.update(done_steps=done_steps, progress=_progress(rec, done_steps))
    approval = Approval(status="approved", decided_by=decided_by, decided_at=now,
                        comment=comment)
    return _change(rec, now, items, steps, status="queued", approval=approval, wait=None,
                   step=None, current_step=None, **changes)


def rejected(rec: ExecutionRecord, decided_by: str, reason: str | None, now: str) -> Change:
    _require(rec, "awaiting_approval")
    error = ErrorInfo(code="rejected", message="approval rejected")
    items, steps = _decided_gate(rec, "failed", now, error)
    items.append(("approval_rejected", {"step": rec.step.name if rec.step else None,
                                        "decided_by": decided_by, "comment": reason}))
    items.append(("workflow_rejected", {"reason": reason}))
    approval = Approval(status="rejected", decided_by=decided_by, decided_at=now,
                        comment=reason)
    return _change(rec, now, items, steps, status="rejected", approval=approval, wait=None,
                   step=None, current_step=None, finished_at=now)


# ---- waits that hold no task: their deadlines ----------------------------------------------


def wait_expired(rec: ExecutionRecord, now: str, wf: Workflow | None = None) -> Change | None:
    """A waiting execution's timer fired: time it out if a deadline has passed, wake it from
    a durable sleep that ran out (given its workflow), or None if neither (or if it stopped
    waiting meanwhile). A paused execution waits too: for its workflow's deadline."""
    wait = rec.wait
    if (wait is None and rec.status != "paused") or rec.is_terminal:
        return None
    moment = parse_ts(now)
    if rec.deadline is not None and parse_ts(rec.deadline) <= moment:
        where = " at an approval" if wait is not None and wait.kind == "approval" \
            else " while paused" if wait is None else " while waiting"
        return ended(rec, "timed_out", timed_out_error(_timeout_of(rec), where), now)
    if wait is None:
        return None
    if wait.kind == "sleep" and wait.deadline is not None and wf is not None \
            and parse_ts(wait.deadline) <= moment:
        return woke(rec, wf, now)
    if wait.kind == "external" and wait.deadline is not None \
            and parse_ts(wait.deadline) <= moment:
        step = rec.step.name if rec.step else "?"
        return ended(rec, "failed", ErrorInfo(
            code="step_timeout", message=f"external step {step!r} did not complete in time"),
            now)
    return None


# ---- external steps ------------------------------------------------------------------------


def handed_over(rec: ExecutionRecord, step: StepDef, token: str, deadline: str | None,
                callback: dict[str, str], now: str) -> Change:
    """The next cycle's step is done by an outside worker: the execution waits for it."""
    record, current = _entered(rec, step, now, "waiting")
    record = replace(record, metadata={"external": True, "url": step.url})
    return _change(rec, now, [("step_started", {"step": step.name, "cycle": record.cycle,
                                                "kind": step.kind, "status": "waiting",
                                                "attempt": 1, "callback": callback})],
                   [record], step=record, current_step=current,
                   wait=Wait(kind="external", deadline=deadline, token=token))


def external_progress(rec: ExecutionRecord, step: str, token: str, report: ProgressReport,
                      now: str, *, trusted: bool = False) -> Change | None:
    guards.external_step(rec, step, token, trusted)
    return progressed(rec, report, now)


def external_answered(rec: ExecutionRecord, wf: Workflow, step: str, token: str, *,
                      success: bool, output: Any, error: ErrorInfo | None, now: str,
                      trusted: bool = False) -> Change:
    """The worker finished: its output becomes the step's output and `state[step]`, the cycle
    is committed, and the execution is queued for its next step (or ends)."""
    record = guards.external_step(rec, step, token, trusted)
    if rec.deadline is not None and parse_ts(rec.deadline) <= parse_ts(now):
        return ended(rec, "timed_out", timed_out_error(wf.timeout), now)
    if not success:
        return ended(rec, "failed", error or ErrorInfo(code="step_failed",
                                                       message="the worker reported failure"),
                     now)
    return _queued_after(cycle_finished(
        rec, wf, state={**rec.state, step: output}, decisions=(), value=None, output=output,
        attempt=record.attempt or 1, duration_ms=None, now=now), now)


def _queued_after(change: Change, now: str) -> Change:
    """A cycle committed with no task holding the execution (a worker's answer, a sleep step's
    end): unless it ended it, the execution waits in the queue for a runner, like after an
    approval."""
    if change.record.is_terminal:
        return change
    follow = _change(change.record, now, [("workflow_queued",
                                           {"priority": change.record.priority})],
                     status="queued")
    return Change(follow.record, [*change.events, *follow.events], change.steps)


def merge(changes: Iterable[Change]) -> Change:
    """Consecutive changes as one (the last record, every event and step record in order)."""
    events: list[Event] = []
    steps: dict[int | None, StepRecord] = {}
    last: Change | None = None
    for change in changes:
        events.extend(change.events)
        for record in change.steps:
            steps[record.cycle] = record  # a later record of a cycle replaces the earlier
        last = change
    assert last is not None
    return Change(last.record, events, list(steps.values()))


# ---- manual mode and pause (API.md §2, §12) --------------------------------------------------
#
# `pause_at` is the committed cycle after which the runner, between cycles, stops the execution
# `paused` before its next step: a pause asked for while a step runs takes effect once that
# step's cycle commits, and manual mode is a pause after every step. A paused execution holds
# no task; `step` lets it run one step (and pause again), `resume` lets it run on.


def paused(rec: ExecutionRecord, now: str) -> Change:
    """Stop before the next step; `workflow_paused` says which one comes next."""
    _require(rec, "queued", "running")
    return _change(rec, now, [("workflow_paused", {"next_step": rec.next_step, "cycle": rec.cycle,
                                                   "mode": rec.mode})],
                   status="paused", pause_at=None, current_step=None)


def pause_requested(rec: ExecutionRecord, now: str, *, at_once: bool) -> Change | None:
    """A caller's pause. `at_once` (no task holds the execution and no step is in flight): it
    stops now; otherwise it stops after the cycle under way commits (None when a pause is
    already asked for by then). Refused when paused already, or finished."""
    if rec.status == "paused":
        raise InvalidTransitionError(f"execution {rec.execution_id} is paused already")
    _require(rec, "queued", "running", "awaiting_approval")
    if at_once and rec.status != "awaiting_approval" and rec.step is None and rec.wait is None:
        return paused(rec, now)
    cycle = rec.step.cycle if rec.step is not None and rec.step.cycle is not None else rec.cycle
    if rec.pause_at is not None and rec.pause_at <= cycle:
        return None
    return _change(rec, now, [], pause_at=cycle)


def resumed(rec: ExecutionRecord, now: str) -> Change:
    """Run on automatically: a paused execution is queued; one that would pause after its
    cycle under way (a manual one stepping) no longer will. Manual mode ends here."""
    if rec.is_terminal or (rec.status != "paused" and rec.pause_at is None):
        raise InvalidTransitionError(
            f"execution {rec.execution_id} is {rec.status}; resume needs it paused, or about "
            "to pause")
    fields = {"next_step": rec.next_step, "mode": "auto", "one_step": False}
    if rec.status == "paused":
        return _change(rec, now, [("workflow_resumed", fields)], status="queued", pause_at=None,
                       mode="auto")
    return _change(rec, now, [("workflow_resumed", fields)], pause_at=None, mode="auto")


def stepped(rec: ExecutionRecord, now: str) -> Change:
    """Run the next step only: queued now, paused again once that step's cycle commits."""
    _require(rec, "paused")
    return _change(rec, now, [("workflow_resumed", {"next_step": rec.next_step,
                                                    "mode": rec.mode, "one_step": True})],
                   status="queued", pause_at=rec.cycle + 1)


# ---- durable sleep -----------------------------------------------------------------------------


def sleep_entered(rec: ExecutionRecord, step: StepDef, until: str, now: str) -> Change:
    """The next cycle is a sleep step: it waits, holding no task, until `until`."""
    record, current = _entered(rec, step, now, "waiting")
    record = replace(record, metadata={"sleep": step.sleep, "until": until})
    return _change(rec, now, [("step_started", {"step": step.name, "cycle": record.cycle,
                                                "kind": step.kind, "status": "waiting",
                                                "attempt": 1, "until": until})],
                   [record], step=record, current_step=current,
                   wait=Wait(kind="sleep", deadline=until))


def sleeping(rec: ExecutionRecord, wf: Workflow, *, state: dict[str, Any],
             decisions: Sequence[tuple[str, Any]], sleep: Sleep, until: str, attempt: int,
             duration_ms: int | None, now: str) -> Change:
    """The step in flight called `ctx.sleep`: its cycle commits (with the state it left), and
    the execution waits, holding no task, until `until`; then `sleep.target` runs."""
    step = _in_flight(rec)
    change = cycle_finished(rec, wf, state=state, decisions=decisions, value=Goto(sleep.target),
                            output=None, attempt=attempt, duration_ms=duration_ms, now=now)
    if change.record.is_terminal:
        return change
    metadata = {**step.metadata, "sleep": sleep.seconds, "until": until}
    steps = [replace(record, metadata=metadata) for record in change.steps]
    return Change(replace(change.record, wait=Wait(kind="sleep", deadline=until)),
                  change.events, steps)


def woke(rec: ExecutionRecord, wf: Workflow, now: str) -> Change:
    """A durable sleep ran out. A sleep step's cycle is committed; after a `ctx.sleep` the step
    runs again (`woke`). Either way it waits in the queue for a runner, like after an approval."""
    if rec.step is not None:
        return _queued_after(cycle_finished(
            rec, wf, state=rec.state, decisions=(), value=None, output=None,
            attempt=rec.step.attempt or 1, duration_ms=None, now=now), now)
    return _change(rec, now, [("workflow_queued", {"priority": rec.priority, "woke": True})],
                   status="queued", wait=None, woke=True)
