"""Transitions as plain functions: no event loop, no store, records and requests in, changes out."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from workflowd import Context, Workflow, done, goto
from workflowd.clock import format_ts, parse_ts
from workflowd.codec import loads
from workflowd.context import ProgressReport
from workflowd.definitions import StepDef
from workflowd.engine import transitions as T
from workflowd.errors import ForbiddenError, InvalidTransitionError
from workflowd.records import (
    TERMINAL_EVENTS,
    ErrorInfo,
    ExecutionRecord,
    StepRecord,
    wakes_at,
)

NOW = "2026-03-01T10:00:00.000Z"
TOKEN = "the-worker-token"

wf = Workflow("t", timeout=60.0)


@wf.step
async def first(ctx: Context) -> None:
    """A plain step."""


wf.approval("gate", prompt="ok?")
wf.external("outside", timeout=10.0)


@wf.step
async def last(ctx: Context) -> None:
    """The last declared step."""


def _at(seconds: float) -> str:
    """`NOW` moved by `seconds`."""
    return format_ts(parse_ts(NOW) + timedelta(seconds=seconds))


def _step(name: str) -> StepDef:
    step = wf.get_step(name)
    assert step is not None
    return step


def _report(pct: float, **custom: Any) -> ProgressReport:
    return ProgressReport(pct, f"at {pct}", None, None, custom)


class History:
    """Applies changes one after another and checks, at each, that events number on from the
    record's `seq` with no gap and that the record's `seq` is its last event's."""

    def __init__(self, change: T.Change) -> None:
        self.events: list[dict[str, Any]] = []
        self.steps: list[StepRecord] = []
        self.rec = self._take(0, change)

    def _take(self, before: int, change: T.Change) -> ExecutionRecord:
        seqs = [e.seq for e in change.events]
        assert seqs == list(range(before + 1, before + 1 + len(seqs)))
        assert change.record.seq == before + len(seqs)
        for event in change.events:
            body = loads(event.json)
            assert body["seq"] == event.seq
            assert body["type"] == event.type
            assert body["execution_id"] == change.record.execution_id
            self.events.append(body)
        self.steps.extend(change.steps)
        return change.record

    def then(self, change: T.Change | None) -> ExecutionRecord:
        assert change is not None
        self.rec = self._take(self.rec.seq, change)
        return self.rec

    @property
    def types(self) -> list[str]:
        return [e["type"] for e in self.events]


def _submitted(require_approval: bool = False, workflow: Workflow = wf) -> History:
    return History(T.submitted(
        execution_id="e1", wf=workflow, input={"n": 1}, priority=3, labels={},
        require_approval=require_approval, max_cycles=15, submitted_by="ana",
        callback_url=None, now=NOW))


def _running(workflow: Workflow = wf, step: str = "first") -> History:
    h = _submitted(workflow=workflow)
    h.then(T.started(h.rec, NOW, workflow.timeout))
    target = workflow.get_step(step)
    assert target is not None
    h.then(T.step_began(h.rec, target, NOW))
    return h


def _finish_cycle(h: History, value: Any = None, output: Any = None,
                  workflow: Workflow = wf, **state: Any) -> ExecutionRecord:
    return h.then(T.cycle_finished(h.rec, workflow, state={**h.rec.state, **state},
                                   decisions=(), value=value, output=output, attempt=1,
                                   duration_ms=5, now=_at(1)))


def _at_outside(h: History | None = None) -> History:
    """An execution whose external step waits for its worker."""
    h = h or _running()
    _finish_cycle(h)
    h.then(T.gate_entered(h.rec, wf, _step("gate"), NOW))
    h.then(T.approved(h.rec, "ana", None, NOW))
    h.then(T.started(h.rec, NOW, wf.timeout))
    h.then(T.handed_over(h.rec, _step("outside"), TOKEN, _at(10), {"token": TOKEN}, NOW))
    return h


# ---- numbering -----------------------------------------------------------------------------


def test_a_whole_history_numbers_its_events_from_one_without_a_gap() -> None:
    """Submit to completed through every kind of change: seq 1..N, each change on from the last."""
    h = _running()
    h.then(T.progressed(h.rec, _report(40), NOW))
    h.then(T.retrying(h.rec, 1, ErrorInfo("step_failed", "boom"), NOW))
    h.then(T.soft_timed_out(h.rec, 2, NOW))
    _finish_cycle(h)
    h.then(T.gate_entered(h.rec, wf, _step("gate"), NOW))
    h.then(T.approved(h.rec, "ana", "fine", NOW))
    h.then(T.started(h.rec, NOW, wf.timeout))
    h.then(T.handed_over(h.rec, _step("outside"), TOKEN, _at(10), {"token": TOKEN}, NOW))
    h.then(T.external_progress(h.rec, "outside", TOKEN, _report(10), NOW))
    h.then(T.external_answered(h.rec, wf, "outside", TOKEN, success=True, output={"k": 1},
                               error=None, now=_at(2)))
    h.then(T.started(h.rec, NOW, wf.timeout))
    h.then(T.step_began(h.rec, _step("last"), NOW))
    rec = _finish_cycle(h)
    assert [e["seq"] for e in h.events] == list(range(1, rec.seq + 1))
    assert rec.status == "completed"
    assert [t for t in h.types if t in TERMINAL_EVENTS] == ["workflow_completed"]
    assert h.types[-1] == "workflow_completed"
    assert rec.cycle == 4
    assert rec.progress.percentage == 100.0


def test_changes_made_on_the_queued_head_never_collide() -> None:
    """Two changes built one on the other (not on what is committed) number on, no reuse."""
    h = _at_outside()
    progress = T.external_progress(h.rec, "outside", TOKEN, _report(50), NOW)
    assert progress is not None
    answer = T.external_answered(progress.record, wf, "outside", TOKEN, success=True,
                                 output=None, error=None, now=NOW)
    assert answer.events[0].seq == progress.events[-1].seq + 1


def test_events_made_together_share_one_timestamp() -> None:
    """A change's events all carry the change's `now`."""
    h = _running()
    _finish_cycle(h)
    assert {e["ts"] for e in h.events[-2:]} == {_at(1)}


# ---- guards ----------------------------------------------------------------------------------


def test_started_needs_queued_or_running() -> None:
    """A start of an execution awaiting approval is refused (409) and changes nothing."""
    h = _submitted(require_approval=True)
    with pytest.raises(InvalidTransitionError):
        T.started(h.rec, NOW, None)
    assert h.rec.status == "awaiting_approval"


def test_approve_and_reject_need_awaiting_approval() -> None:
    """Approve and reject of a queued or running execution are 409."""
    for h in (_submitted(), _running()):
        with pytest.raises(InvalidTransitionError):
            T.approved(h.rec, "ana", None, NOW)
        with pytest.raises(InvalidTransitionError):
            T.rejected(h.rec, "ana", None, NOW)


def test_a_terminal_execution_cannot_end_again() -> None:
    """Ending (cancel, fail, time out) a terminal execution is 409."""
    h = _running()
    h.then(T.cancelled(h.rec, NOW))
    for status in ("cancelled", "failed", "timed_out"):
        with pytest.raises(InvalidTransitionError):
            T.ended(h.rec, status, T.CANCELLED, NOW)


def test_retrying_and_soft_timeout_without_a_step_in_flight_are_nothing() -> None:
    """Without a step in flight (its start lost with a refused write), a retry or a soft
    timeout records nothing (None) instead of failing the runner."""
    h = _submitted()
    assert T.retrying(h.rec, 1, ErrorInfo("x", "y"), NOW) is None
    assert T.soft_timed_out(h.rec, 1, NOW) is None


def test_progress_without_a_step_in_flight_is_nothing() -> None:
    """A progress report that arrives after its step ended changes nothing (None)."""
    h = _running()
    _finish_cycle(h)
    assert T.progressed(h.rec, _report(10), NOW) is None


def test_external_reports_need_the_waiting_step_and_its_token() -> None:
    """Wrong token: 403; another step, or no external wait: 409."""
    h = _at_outside()
    with pytest.raises(ForbiddenError):
        T.external_progress(h.rec, "outside", "wrong", _report(1), NOW)
    with pytest.raises(ForbiddenError):
        T.external_progress(h.rec, "outside", "", _report(1), NOW)
    with pytest.raises(InvalidTransitionError):
        T.external_progress(h.rec, "last", TOKEN, _report(1), NOW)
    with pytest.raises(ForbiddenError):
        T.external_answered(h.rec, wf, "outside", "wrong", success=True, output=None,
                            error=None, now=NOW)
    with pytest.raises(InvalidTransitionError):
        T.external_answered(_running().rec, wf, "outside", TOKEN, success=True, output=None,
                            error=None, now=NOW)


def test_a_stale_token_of_an_earlier_run_is_refused() -> None:
    """The token of the wait is this run's: one from an earlier hand-over is 403."""
    h = _at_outside()
    rec = h.rec
    assert rec.wait is not None
    fresh = T.handed_over(rec, _step("outside"), "new-token", _at(10), {}, NOW).record
    with pytest.raises(ForbiddenError):
        T.external_progress(fresh, "outside", TOKEN, _report(1), NOW)


# ---- progress --------------------------------------------------------------------------------


def test_progress_never_goes_down_and_reaches_100_only_when_completed() -> None:
    """Percentages of the execution: monotonic, capped at 99 until it completes."""
    solo = Workflow("solo")

    @solo.step
    async def only(ctx: Context) -> None:
        """One step."""

    h = _running(workflow=solo, step="only")
    h.then(T.progressed(h.rec, _report(100), NOW))
    assert h.rec.progress.percentage == 99.0
    h.then(T.progressed(h.rec, _report(10), NOW))
    assert h.rec.progress.percentage == 99.0
    _finish_cycle(h, workflow=solo)
    assert h.rec.progress.percentage == 100.0


# ---- cycle_finished --------------------------------------------------------------------------


def test_cycle_finished_goes_on_to_the_next_declared_step() -> None:
    """None: the next declared step; the step record is completed with its output."""
    h = _running()
    rec = _finish_cycle(h, output={"o": 1}, x=1)
    assert rec.status == "running"
    assert rec.next_step == "gate"
    assert rec.cycle == 1
    assert rec.state == {"x": 1}
    assert rec.step is None
    assert rec.current_step is None
    assert h.types[-2:] == ["step_finished", "cycle_completed"]
    assert h.steps[-1].status == "completed"
    assert h.steps[-1].output == {"o": 1}


def test_cycle_finished_with_goto_goes_there() -> None:
    """goto: next is the target, earlier steps too; the target is kept in the step's metadata."""
    h = _running()
    rec = _finish_cycle(h, value=goto("first"))
    assert rec.next_step == "first"
    assert rec.status == "running"
    assert h.steps[-1].metadata["goto"] == "first"


def test_cycle_finished_with_done_completes_with_its_result() -> None:
    """done(result): completed with that result, whatever steps remain."""
    h = _running()
    rec = _finish_cycle(h, value=done({"r": 2}), output={"r": 2}, x=1)
    assert rec.status == "completed"
    assert rec.result == {"r": 2}
    assert rec.finished_at is not None
    assert h.types[-3:] == ["step_finished", "cycle_completed", "workflow_completed"]


def test_the_last_step_completes_with_the_state() -> None:
    """None from the last declared step: completed, result = state."""
    h = _running(step="last")
    rec = _finish_cycle(h, y=3)
    assert rec.status == "completed"
    assert rec.result == {"y": 3}


def test_goto_an_unknown_step_fails_the_execution() -> None:
    """goto to a step the workflow does not declare: failed `unknown_step`, one terminal event."""
    h = _running()
    rec = _finish_cycle(h, value=goto("nowhere"))
    assert rec.status == "failed"
    assert rec.error is not None
    assert rec.error.code == "unknown_step"
    assert [t for t in h.types if t in TERMINAL_EVENTS] == ["workflow_failed"]
    assert h.steps[-1].status == "failed"


def test_cycle_finished_records_decisions() -> None:
    """Each decision is a `branch_decided` event and kept by name with its cycle."""
    h = _running()
    h.then(T.cycle_finished(h.rec, wf, state={}, decisions=[("way", "left")], value=None,
                            output=None, attempt=2, duration_ms=1, now=NOW))
    assert h.rec.decisions["way"].outcome == "left"
    assert h.rec.decisions["way"].cycle == 1
    decided = next(e for e in h.events if e["type"] == "branch_decided")
    assert (decided["name"], decided["outcome"], decided["cycle"]) == ("way", "left", 1)
    assert h.steps[-1].attempt == 2


# ---- gates -----------------------------------------------------------------------------------


def test_a_gate_takes_a_cycle_and_waits() -> None:
    """Entering a gate counts its cycle, waits for approval, and holds a `waiting` record."""
    h = _running()
    _finish_cycle(h)
    rec = h.then(T.gate_entered(h.rec, wf, _step("gate"), NOW))
    assert rec.status == "awaiting_approval"
    assert rec.cycle == 2
    assert rec.wait is not None
    assert rec.wait.kind == "approval"
    assert rec.step is not None
    assert rec.step.status == "waiting"
    assert h.types[-3:] == ["step_started", "approval_required", "cycle_completed"]


def test_approve_queues_and_reject_ends() -> None:
    """Approve: the gate completed, queued for the next step; reject: `rejected`, terminal."""
    h = _running()
    _finish_cycle(h)
    h.then(T.gate_entered(h.rec, wf, _step("gate"), NOW))
    at_gate = h.rec
    rec = h.then(T.approved(at_gate, "ana", "ok", NOW))
    assert rec.status == "queued"
    assert rec.wait is None
    assert rec.approval is not None
    assert (rec.approval.status, rec.approval.decided_by) == ("approved", "ana")
    assert "gate" in rec.done_steps
    assert h.steps[-1].status == "completed"

    r = T.rejected(at_gate, "bo", "no", NOW)
    assert r.record.status == "rejected"
    assert r.record.is_terminal
    assert r.record.approval is not None
    assert r.record.approval.comment == "no"
    assert [e.type for e in r.events][-1] == "workflow_rejected"
    assert r.steps[-1].status == "failed"


def test_a_submission_approval_has_no_gate_record() -> None:
    """require_approval: awaiting_approval at seq 1; approving it writes no step record."""
    h = _submitted(require_approval=True)
    assert h.types == ["approval_required"]
    change = T.approved(h.rec, "ana", None, NOW)
    assert change.steps == []
    assert change.record.status == "queued"


# ---- ends ------------------------------------------------------------------------------------


def test_cancel_cuts_the_step_in_flight() -> None:
    """A cancel mid-step: the step record fails `cancelled` and its cycle is completed."""
    h = _running()
    rec = h.then(T.cancelled(h.rec, NOW))
    assert rec.status == "cancelled"
    assert rec.cycle == 1
    assert rec.step is None
    assert h.steps[-1].status == "failed"
    assert h.steps[-1].error == ErrorInfo("cancelled", T.CANCELLED.message)
    assert h.types[-3:] == ["step_finished", "cycle_completed", "workflow_cancelled"]


def test_cancel_at_a_gate_does_not_count_its_cycle_twice() -> None:
    """A gate's cycle counted when entered is not completed again by a cancel."""
    h = _running()
    _finish_cycle(h)
    h.then(T.gate_entered(h.rec, wf, _step("gate"), NOW))
    h.then(T.cancelled(h.rec, NOW))
    assert h.rec.cycle == 2
    assert h.types.count("cycle_completed") == 2


# ---- waits and their deadlines ---------------------------------------------------------------


def test_wait_expired_is_nothing_before_any_deadline() -> None:
    """A timer that fires early, or on an execution no longer waiting, changes nothing."""
    h = _at_outside()
    assert T.wait_expired(h.rec, _at(5)) is None
    assert T.wait_expired(_running().rec, _at(500)) is None


def test_wait_expired_fails_an_external_step_past_its_timeout() -> None:
    """Past the external step's own deadline: failed `step_timeout`."""
    h = _at_outside()
    rec = h.then(T.wait_expired(h.rec, _at(11)))
    assert rec.status == "failed"
    assert rec.error is not None
    assert rec.error.code == "step_timeout"
    assert h.steps[-1].status == "failed"


def test_an_external_step_without_a_timeout_waits_for_the_workflow_deadline_only() -> None:
    """Handed over with no deadline of its own: its timer is the workflow's, and until then
    no expiry ends it."""
    h = _running()
    _finish_cycle(h)
    h.then(T.handed_over(h.rec, _step("outside"), TOKEN, None, {"token": TOKEN}, NOW))
    assert h.rec.wait is not None
    assert h.rec.wait.deadline is None
    assert wakes_at(h.rec) == h.rec.deadline
    assert T.wait_expired(h.rec, _at(59)) is None


def test_wait_expired_times_out_past_the_workflow_deadline() -> None:
    """Past the workflow's timeout, at a gate or an external wait: `timed_out`, record coded so."""
    h = _running()
    _finish_cycle(h)
    h.then(T.gate_entered(h.rec, wf, _step("gate"), NOW))
    rec = h.then(T.wait_expired(h.rec, _at(61)))
    assert rec.status == "timed_out"
    assert rec.error is not None
    # The timeout read back from the deadline its first start set.
    assert rec.error.message == "the execution ran past its 60s timeout at an approval"
    assert h.steps[-1].error is not None
    assert h.steps[-1].error.code == "timed_out"

    outside = _at_outside()
    late = T.wait_expired(outside.rec, _at(61))
    assert late is not None
    assert late.record.status == "timed_out"  # the workflow's deadline wins over the step's


def test_the_workflow_deadline_is_set_at_the_first_start_only() -> None:
    """`started` sets the deadline once; a resumed start keeps it and says `resumed`."""
    h = _submitted()
    h.then(T.started(h.rec, NOW, 60.0))
    assert h.rec.deadline == _at(60)
    h.then(T.started(h.rec, _at(30), 60.0))
    assert h.rec.deadline == _at(60)
    assert [e["resumed"] for e in h.events if e["type"] == "workflow_started"] == [False, True]


# ---- external answers ------------------------------------------------------------------------


def test_external_success_commits_the_cycle_and_queues() -> None:
    """Success: output is the step's output and state[step]; the execution is queued."""
    h = _at_outside()
    rec = h.then(T.external_answered(h.rec, wf, "outside", TOKEN, success=True,
                                     output={"rows": 7}, error=None, now=_at(2)))
    assert rec.status == "queued"
    assert rec.state["outside"] == {"rows": 7}
    assert rec.wait is None
    assert rec.next_step == "last"
    assert h.steps[-1].output == {"rows": 7}
    assert h.types[-3:] == ["step_finished", "cycle_completed", "workflow_queued"]


def test_external_success_on_the_last_step_completes() -> None:
    """The worker answers the last step: completed at once, no `workflow_queued` after it."""
    tail = Workflow("tail", timeout=60.0)
    tail.external("only", timeout=10.0)
    h = _submitted(workflow=tail)
    h.then(T.started(h.rec, NOW, tail.timeout))
    only = tail.get_step("only")
    assert only is not None
    h.then(T.handed_over(h.rec, only, TOKEN, _at(10), {}, NOW))
    rec = h.then(T.external_answered(h.rec, tail, "only", TOKEN, success=True, output=1,
                                     error=None, now=NOW))
    assert rec.status == "completed"
    assert h.types[-1] == "workflow_completed"


def test_external_failure_fails_with_the_workers_error() -> None:
    """Failure: failed with the worker's error, the step record failed."""
    h = _at_outside()
    error = ErrorInfo("bad_input", "no such file")
    rec = h.then(T.external_answered(h.rec, wf, "outside", TOKEN, success=False, output=None,
                                     error=error, now=_at(2)))
    assert rec.status == "failed"
    assert rec.error == error
    assert h.steps[-1].status == "failed"
    fallback = T.external_answered(_at_outside().rec, wf, "outside", TOKEN, success=False,
                                   output=None, error=None, now=_at(2))
    assert fallback.record.error is not None
    assert fallback.record.error.code == "step_failed"


def test_an_external_answer_past_the_workflow_deadline_times_out() -> None:
    """An answer that comes after the workflow's timeout: timed_out, not completed."""
    h = _at_outside()
    rec = h.then(T.external_answered(h.rec, wf, "outside", TOKEN, success=True, output={},
                                     error=None, now=_at(61)))
    assert rec.status == "timed_out"
    assert rec.error is not None
    assert rec.error.code == "timed_out"


# ---- merge -----------------------------------------------------------------------------------


def test_merge_keeps_the_last_record_every_event_and_the_latest_step_record() -> None:
    """Changes merged: last record, all events in order, one step record per cycle (the last)."""
    h = _submitted()
    a = T.started(h.rec, NOW, None)
    b = T.step_began(a.record, _step("first"), NOW)
    c = T.progressed(b.record, _report(30), NOW)
    assert c is not None
    d = T.cycle_finished(c.record, wf, state={}, decisions=(), value=None, output=None,
                         attempt=1, duration_ms=1, now=NOW)
    merged = T.merge([a, b, c, d])
    assert merged.record is d.record
    assert [e.seq for e in merged.events] == list(range(2, d.record.seq + 1))
    assert len(merged.steps) == 1
    assert merged.steps[0].status == "completed"
    assert T.merge([a]).events == a.events
