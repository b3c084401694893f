"""Pause, resume, step, durable sleep and version checks as plain transitions: no loop, no I/O."""

from __future__ import annotations

from typing import Any

import pytest
from msgspec.structs import replace

from workflowd.codec import loads
from workflowd.definitions import Sleep, Workflow
from workflowd.engine import transitions as T
from workflowd.engine.versions import version_mismatch
from workflowd.errors import InvalidTransitionError
from workflowd.records import ExecutionRecord, Wait

NOW = "2026-02-09T14:10:00.100Z"
LATER = "2026-02-09T14:10:05.000Z"


def _wf() -> Workflow:
    wf = Workflow("t", version=2)

    @wf.step
    async def a(ctx: Any) -> None: ...

    wf.sleep("nap", 5.0)
    wf.approval("gate")

    @wf.step
    async def b(ctx: Any) -> None: ...

    return wf


def _submitted(wf: Workflow, **options: Any) -> ExecutionRecord:
    return T.submitted(execution_id="e1", wf=wf, input={}, priority=0, labels={},
                       require_approval=options.pop("require_approval", False), max_cycles=15,
                       submitted_by="anonymous", callback_url=None, now=NOW, **options).record


def _types(change: T.Change) -> list[str]:
    return [event.type for event in change.events]


def _running(wf: Workflow) -> ExecutionRecord:
    rec = T.started(_submitted(wf), NOW, None).record
    return T.step_began(rec, wf.steps[0], NOW).record


def test_manual_submit_waits_paused_before_the_first_step() -> None:
    """mode=manual: the new execution is `paused`, with one `workflow_paused` naming step a."""
    wf = _wf()
    change = T.submitted(execution_id="e1", wf=wf, input={}, priority=0, labels={},
                         require_approval=False, max_cycles=15, submitted_by="anonymous",
                         callback_url=None, now=NOW, mode="manual")
    assert change.record.status == "paused"
    assert change.record.mode == "manual"
    assert _types(change) == ["workflow_paused"]
    assert loads(change.events[0].json)["next_step"] == "a"


def test_manual_submit_with_approval_pauses_after_the_approval() -> None:
    """Manual with require_approval: awaiting approval first, and pause_at=0 kept for after."""
    rec = _submitted(_wf(), require_approval=True, mode="manual")
    assert rec.status == "awaiting_approval"
    assert rec.pause_at == 0


def test_pause_of_a_queued_execution_without_a_task_is_at_once() -> None:
    """No task holds it: paused now, with its event."""
    change = T.pause_requested(_submitted(_wf()), NOW, at_once=True)
    assert change is not None
    assert change.record.status == "paused"
    assert _types(change) == ["workflow_paused"]


def test_pause_of_a_running_step_waits_for_its_cycle() -> None:
    """A step in flight (cycle 1): the pause is asked for after cycle 1, nothing shows yet."""
    rec = _running(_wf())
    change = T.pause_requested(rec, NOW, at_once=False)
    assert change is not None
    assert change.record.status == "running"
    assert change.record.pause_at == 1
    assert change.events == []
    assert T.pause_requested(change.record, NOW, at_once=False) is None  # asked already


def test_pause_with_a_task_but_no_step_waits_for_the_runner() -> None:
    """Queued with its runner starting: the runner pauses it before the first step."""
    change = T.pause_requested(_submitted(_wf()), NOW, at_once=False)
    assert change is not None
    assert (change.record.status, change.record.pause_at) == ("queued", 0)


@pytest.mark.parametrize("status", ["paused", "completed", "failed", "cancelled", "timed_out",
                                    "rejected"])
def test_pause_refused_when_paused_or_finished(status: str) -> None:
    """409 for an execution already paused or finished."""
    rec = replace(_submitted(_wf()), status=status)
    with pytest.raises(InvalidTransitionError):
        T.pause_requested(rec, NOW, at_once=True)


def test_paused_then_step_runs_one_step_then_resume_runs_on() -> None:
    """step: queued with pause_at = next cycle; resume: queued, no pause, mode auto."""
    rec = _submitted(_wf(), mode="manual")
    step = T.stepped(rec, NOW)
    assert (step.record.status, step.record.pause_at) == ("queued", 1)
    assert _types(step) == ["workflow_resumed"]
    assert loads(step.events[0].json)["one_step"] is True
    resume = T.resumed(rec, NOW)
    assert (resume.record.status, resume.record.pause_at, resume.record.mode) == (
        "queued", None, "auto")
    assert loads(resume.events[0].json)["one_step"] is False


def test_resume_while_a_manual_step_runs_lets_it_run_on() -> None:
    """Resume of a running manual step: no pause after it, manual mode ends."""
    rec = replace(_running(_wf()), mode="manual", pause_at=1)
    change = T.resumed(rec, NOW)
    assert (change.record.status, change.record.pause_at, change.record.mode) == (
        "running", None, "auto")
    assert _types(change) == ["workflow_resumed"]


def test_step_and_resume_refused_otherwise() -> None:
    """step needs paused; resume needs paused or a pause to come."""
    rec = _running(_wf())
    with pytest.raises(InvalidTransitionError):
        T.stepped(rec, NOW)
    with pytest.raises(InvalidTransitionError):
        T.resumed(rec, NOW)
    with pytest.raises(InvalidTransitionError):
        T.resumed(replace(rec, status="completed", pause_at=3), NOW)


def test_paused_needs_queued_or_running() -> None:
    """The runner's pause between cycles: `paused`, current step cleared, pause_at spent."""
    rec = replace(_running(_wf()), pause_at=0, current_step=None, step=None)
    change = T.paused(rec, NOW)
    assert (change.record.status, change.record.pause_at) == ("paused", None)
    with pytest.raises(InvalidTransitionError):
        T.paused(change.record, NOW)


def test_a_sleep_step_waits_then_wakes_queued_for_the_next_step() -> None:
    """A sleep step: record `waiting` with its deadline; woken: cycle committed, queued."""
    wf = _wf()
    rec = T.cycle_finished(_running(wf), wf, state={"x": 1}, decisions=(), value=None,
                           output=None, attempt=1, duration_ms=1, now=NOW).record
    assert rec.next_step == "nap"
    change = T.sleep_entered(rec, wf.steps[1], LATER, NOW)
    assert change.record.wait == Wait(kind="sleep", deadline=LATER)
    assert change.steps[0].status == "waiting"
    assert T.wait_expired(change.record, NOW, wf) is None  # not yet
    woke = T.wait_expired(change.record, LATER, wf)
    assert woke is not None
    assert woke.record.status == "queued"
    assert woke.record.cycle == 2
    assert woke.record.next_step == "gate"
    assert woke.record.wait is None
    assert _types(woke) == ["step_finished", "cycle_completed", "workflow_queued"]


def test_ctx_sleep_commits_the_cycle_then_runs_the_step_again_woken() -> None:
    """`ctx.sleep`: the cycle commits with its state, then the same step again, `woke`."""
    wf = _wf()
    rec = _running(wf)
    change = T.sleeping(rec, wf, state={"half": True}, decisions=(), sleep=Sleep(5.0, "a"),
                        until=LATER, attempt=1, duration_ms=3, now=NOW)
    assert change.record.cycle == 1
    assert change.record.state == {"half": True}
    assert change.record.next_step == "a"
    assert change.record.wait == Wait(kind="sleep", deadline=LATER)
    assert change.steps[0].metadata["sleep"] == 5.0
    assert "goto" not in change.steps[0].metadata
    woke = T.wait_expired(change.record, LATER, wf)
    assert woke is not None
    assert (woke.record.status, woke.record.woke, woke.record.wait) == ("queued", True, None)
    again = T.step_began(T.started(woke.record, LATER, None).record, wf.steps[0], LATER)
    done = T.cycle_finished(again.record, wf, state={}, decisions=(), value=None, output=None,
                            attempt=1, duration_ms=1, now=LATER)
    assert done.record.woke is False


def test_a_paused_execution_times_out_at_its_deadline() -> None:
    """The workflow's timeout bounds a paused execution too."""
    rec = replace(_submitted(_wf(), mode="manual"), deadline=LATER)
    assert T.wait_expired(rec, NOW) is None
    change = T.wait_expired(rec, LATER)
    assert change is not None
    assert change.record.status == "timed_out"
    assert "while paused" in change.record.error.message  # type: ignore[union-attr]


def test_version_mismatch_names_the_missing_step() -> None:
    """An execution needing a step the loaded version lacks, or one of another kind."""
    old, new = _wf(), Workflow("t", version=3)

    @new.step
    async def a(ctx: Any) -> None: ...

    rec = T.cycle_finished(_running(old), old, state={}, decisions=(), value=None,
                           output=None, attempt=1, duration_ms=1, now=NOW).record
    assert version_mismatch(rec, old) is None
    error = version_mismatch(rec, new)
    assert error is not None
    assert error.code == "workflow_version_mismatch"
    assert "'nap'" in error.message
    assert "version 2" in error.message

    waiting = T.sleep_entered(rec, old.steps[1], LATER, NOW).record
    other = Workflow("t", version=3)

    @other.step
    async def nap(ctx: Any) -> None: ...

    other.approval("gate")
    error = version_mismatch(waiting, other)
    assert error is not None
    assert "another kind" in error.message
    assert version_mismatch(_running(old), new) is None  # a cut-off step `a` still exists
