"""The checks of `python -m bench chaos` on made-up histories: the re-run check flags every
re-run of a committed cycle and none of the re-runs a kill before the commit allows."""

from __future__ import annotations

from typing import Any

from bench.chaos_check import (
    SideLine,
    check_history,
    check_tokens,
    committed_tokens,
    find_reruns,
)
from bench.workflows import RUN_DECISION, RUNS_KEY


def _lines(*rows: tuple[str, int, str, str, int]) -> list[SideLine]:
    return [SideLine(pos, *row) for pos, row in enumerate(rows, start=1)]


def _cycles(found: list[Any]) -> list[tuple[str, int | None]]:
    return [(f.execution_id, f.cycle) for f in found]


def test_cut_off_runs_before_the_commit_are_allowed() -> None:
    """Runs cut off before their commit, and the retry's failed attempt, precede the committed
    run's line: none is a re-run after commit."""
    lines = _lines(("e", 1, "t1", "a", 1), ("e", 1, "t2", "a", 1), ("e", 2, "u1", "b", 1),
                   ("e", 2, "u2", "b", 2), ("e", 3, "v1", "c", 1))
    committed = {"e": {1: {"t2"}, 2: {"u2"}, 3: {"v1"}}}
    assert find_reruns(lines, committed) == []


def test_a_run_after_the_committed_one_is_a_rerun() -> None:
    """A line for a cycle after the line of its committed token: the cycle ran again."""
    lines = _lines(("e", 1, "t1", "a", 1), ("e", 1, "t2", "a", 1))
    assert _cycles(find_reruns(lines, {"e": {1: {"t1"}}})) == [("e", 1)]


def test_a_cycle_committed_twice_is_a_rerun_whichever_the_state_kept() -> None:
    """Two committed tokens of one cycle (one from an event, one from the final state)."""
    lines = _lines(("e", 1, "t1", "a", 1), ("e", 1, "t2", "a", 1))
    assert _cycles(find_reruns(lines, {"e": {1: {"t1", "t2"}}})) == [("e", 1)]


def test_an_earlier_cycle_after_a_later_one_is_a_rerun() -> None:
    """Cycle 2 started, so cycle 1 had committed: a later line for cycle 1 is a re-run, even
    when the re-run's token replaced the committed one in the store."""
    lines = _lines(("e", 1, "t1", "a", 1), ("e", 2, "u1", "b", 1), ("e", 1, "t2", "a", 1))
    assert _cycles(find_reruns(lines, {"e": {1: {"t2"}, 2: {"u1"}}})) == [("e", 1)]


def test_a_step_under_two_cycle_numbers_is_a_rerun() -> None:
    """No workflow of the mix loops: its step's code running in a later cycle ran again."""
    lines = _lines(("e", 1, "t1", "a", 1), ("e", 2, "t2", "a", 1))
    assert _cycles(find_reruns(lines, {"e": {2: {"t2"}}})) == [("e", 2)]


def test_executions_are_judged_apart() -> None:
    """Interleaved lines of two executions do not order each other."""
    lines = _lines(("e", 2, "u1", "b", 1), ("f", 1, "x1", "a", 1), ("e", 2, "u2", "b", 1),
                   ("f", 1, "x2", "a", 1))
    found = find_reruns(lines, {"e": {2: {"u2"}}, "f": {1: {"x1"}}})
    assert _cycles(found) == [("f", 1)]


def test_committed_tokens_come_from_events_and_state() -> None:
    """Both the append-only events and the final state count as committed."""
    events = [{"type": "branch_decided", "name": RUN_DECISION, "cycle": 1, "outcome": "t1"},
              {"type": "branch_decided", "name": "other", "cycle": 1, "outcome": "no"}]
    assert committed_tokens(events, {RUNS_KEY: {"1": "t2", "2": "u1"}}) == {
        1: {"t1", "t2"}, 2: {"u1"}}


def test_tokens_must_stand_on_side_lines() -> None:
    """A committed token nobody wrote, or a committed code cycle without one, is reported."""
    lines = _lines(("e", 1, "t1", "a", 1))
    found = check_tokens("e", lines, {1: {"t1"}, 3: {"zz"}}, {1: "a", 2: "b"})
    assert [f.detail.split(" is ")[0] for f in found] == [
        "committed run token zz of cycle 3", "cycle 2 (b)"]


def _event(seq: int, type_: str, **fields: Any) -> dict[str, Any]:
    return {"seq": seq, "type": type_, **fields}


def _three(*, gap: bool = False, late_terminal: bool = False) -> list[dict[str, Any]]:
    events = [_event(1, "workflow_queued"), _event(2, "workflow_started")]
    for cycle, step in ((1, "c3_first"), (2, "c3_second"), (3, "c3_third")):
        events += [_event(0, "step_started", step=step, cycle=cycle),
                   _event(0, "step_finished", step=step, cycle=cycle),
                   _event(0, "cycle_completed", cycle=cycle)]
    events.append(_event(0, "workflow_completed"))
    if late_terminal:
        events.append(_event(0, "step_progress", step="c3_third", cycle=3))
    for n, event in enumerate(events, start=1):
        event["seq"] = n + (1 if gap and n > 4 else 0)
    return events


def _records() -> list[dict[str, Any]]:
    return [{"name": name, "cycle": n, "status": "completed"}
            for n, name in enumerate(("c3_first", "c3_second", "c3_third"), start=1)]


def test_a_clean_history_passes() -> None:
    """Gap-free, one terminal event last, records matching the cycle_completed events."""
    execution = {"workflow_id": "chaos-three", "status": "completed", "cycle": 3}
    assert check_history("e", execution, _three(), _records()) == []


def test_gaps_late_events_and_missing_records_are_violations() -> None:
    """Each fault of a history shows as its own finding."""
    execution = {"workflow_id": "chaos-three", "status": "completed", "cycle": 3}
    assert [f.kind for f in check_history("e", execution, _three(gap=True), _records())] == [
        "events"]
    late = check_history("e", execution, _three(late_terminal=True), _records())
    assert [f.kind for f in late] == ["events"]
    short = check_history("e", execution, _three(), _records()[:2])
    assert {f.kind for f in short} == {"cycles"}
    failed = check_history("e", {**execution, "status": "failed"}, _three(), _records())
    assert "status" in {f.kind for f in failed}
    assert ("events", "status failed but terminal event workflow_completed") in {
        (f.kind, f.detail) for f in failed}
