"""The cycle loop through HTTP: transitions, gates, retries, timeouts, the cycle limit, branches."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from tests import workflows
from tests.helpers import (
    API,
    assert_gapless,
    events,
    get_json,
    live,
    submit,
    wait_for_event,
    wait_for_status,
)
from workflowd.api.keys import STORE

Client = TestClient[Any, Any]
TERMINAL_EVENTS = {"workflow_completed", "workflow_failed", "workflow_cancelled",
                   "workflow_timed_out", "workflow_rejected"}


async def _steps(client: Client, execution_id: str) -> list[dict[str, Any]]:
    data = await get_json(client, f"{API}/executions/{execution_id}/steps")
    items: list[dict[str, Any]] = data["items"]
    return items


async def _execution(client: Client, execution_id: str) -> dict[str, Any]:
    data: dict[str, Any] = await get_json(client, f"{API}/executions/{execution_id}")
    return data


async def _result(client: Client, execution_id: str) -> dict[str, Any]:
    data: dict[str, Any] = await get_json(client, f"{API}/executions/{execution_id}/result")
    return data


def _types(items: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in items]


def _one_terminal(items: list[dict[str, Any]], expected: str) -> None:
    """Exactly one terminal event, the expected one, and it is the last event."""
    terminal = [e["type"] for e in items if e["type"] in TERMINAL_EVENTS]
    assert terminal == [expected]
    assert items[-1]["type"] == expected


async def _ended(client: Client, workflow: str, status: str,
                 **body: Any) -> tuple[str, dict[str, Any]]:
    """Submit, wait for the given terminal status; answer the id and `/result`."""
    execution_id = (await submit(client, workflow, **body))["execution_id"]
    await wait_for_status(client, execution_id, *sorted({status, "completed", "failed",
                                                         "cancelled", "timed_out", "rejected"}))
    result = await _result(client, execution_id)
    assert result["status"] == status, result
    return execution_id, result


# ---- queued -> running -> completed -------------------------------------------------------


async def test_three_steps_complete_with_ordered_gapless_events(client: Client) -> None:
    """queued → completed: events queued, started, per-step started/finished/cycle, completed."""
    summary = await submit(client, "three-steps", input={"value": 7})
    assert summary["status"] == "queued"
    execution_id = summary["execution_id"]
    status = await wait_for_status(client, execution_id, "completed", "failed")
    assert status["status"] == "completed"
    assert status["is_completed"]
    assert status["is_terminal"]
    assert not status["is_processing"]
    assert not status["background_processing"]
    assert status["cycle"] == 3
    assert status["progress"]["percentage"] == 100
    items = await events(client, execution_id)
    assert_gapless(items)
    per_step = ["step_started", "step_finished", "cycle_completed"]
    assert _types(items) == ["workflow_queued", "workflow_started", *per_step * 3,
                             "workflow_completed"]
    started = [e for e in items if e["type"] == "step_started"]
    assert [(e["step"], e["cycle"]) for e in started] == [("one", 1), ("two", 2), ("three_", 3)]
    _one_terminal(items, "workflow_completed")
    result = await _result(client, execution_id)
    assert result == {"status": "completed", "result": {"one": True, "two": 7, "three": True},
                      "error": None}
    steps = await _steps(client, execution_id)
    assert [(s["name"], s["status"], s["cycle"], s["attempt"]) for s in steps] == [
        ("one", "completed", 1, 1), ("two", "completed", 2, 1), ("three_", "completed", 3, 1)]


async def test_running_status_while_a_step_runs(client: Client) -> None:
    """While its step runs the execution is `running` with the live flags and current step."""
    execution_id = (await submit(client, "waiter", input={"name": "w"}))["execution_id"]
    await wait_for_event(client, execution_id, "step_started")
    status = await wait_for_status(client, execution_id, "running")
    assert status["is_processing"]
    assert status["background_processing"]
    assert not status["is_terminal"]
    assert not status["awaiting_approval"]
    assert status["current_step"]["name"] == "recorded"
    assert status["current_step"]["index"] == 0
    assert status["cycle"] == 0
    assert workflows.STARTED == ["w"]
    steps = await _steps(client, execution_id)
    assert [(s["name"], s["status"]) for s in steps] == [("recorded", "running")]
    workflows.release("w").set()
    status = await wait_for_status(client, execution_id, "completed", "failed")
    assert status["status"] == "completed"
    assert status["current_step"] is None


async def test_result_is_409_until_terminal(client: Client) -> None:
    """`/result` answers 409 problem JSON while running, 200 once the execution completed."""
    execution_id = (await submit(client, "waiter", input={"name": "r"}))["execution_id"]
    await wait_for_event(client, execution_id, "step_started")
    resp = await client.get(f"{API}/executions/{execution_id}/result")
    assert resp.status == 409
    assert resp.content_type == "application/problem+json"
    workflows.release("r").set()
    await wait_for_status(client, execution_id, "completed", "failed")
    assert (await _result(client, execution_id))["status"] == "completed"


# ---- a gate in the middle -----------------------------------------------------------------


async def test_gate_in_the_middle_waits_then_runs_on(client: Client) -> None:
    """A gate: `before` done, gate `waiting`, `after` pending; approve completes all three."""
    execution_id = (await submit(client, "gated"))["execution_id"]
    status = await wait_for_status(client, execution_id, "awaiting_approval", "failed")
    assert status["status"] == "awaiting_approval"
    assert status["awaiting_approval"]
    assert not status["is_processing"]
    assert status["current_step"]["name"] == "sign_off"
    assert status["current_step"]["index"] == 1
    assert status["cycle"] == 2
    steps = await _steps(client, execution_id)
    assert [(s["name"], s["kind"], s["status"], s["cycle"]) for s in steps] == [
        ("before", "data_processing", "completed", 1), ("sign_off", "approval", "waiting", 2),
        ("after", "data_processing", "pending", None)]
    execution = await _execution(client, execution_id)
    assert execution["approval"]["status"] == "pending"
    assert execution["approval"]["required"] is True
    items = await events(client, execution_id)
    gate_events = [e for e in items if e.get("step") == "sign_off"]
    assert _types(gate_events) == ["step_started", "approval_required"]
    assert gate_events[0]["cycle"] == 2

    resp = await client.post(f"{API}/executions/{execution_id}/approve", json={"comment": "go"})
    assert resp.status == 202, await resp.text()
    status = await wait_for_status(client, execution_id, "completed", "failed")
    assert status["status"] == "completed"
    steps = await _steps(client, execution_id)
    assert [(s["name"], s["status"], s["cycle"]) for s in steps] == [
        ("before", "completed", 1), ("sign_off", "completed", 2), ("after", "completed", 3)]
    items = await events(client, execution_id)
    assert_gapless(items)
    gate_events = [e for e in items if e.get("step") == "sign_off"]
    assert _types(gate_events) == ["step_started", "approval_required", "step_finished",
                                   "approval_granted"]
    assert gate_events[2]["status"] == "completed"
    _one_terminal(items, "workflow_completed")
    assert (await _result(client, execution_id))["result"] == {"before": True, "after": True}


# ---- failures, retries and timeouts -------------------------------------------------------


async def test_flaky_step_retries_then_completes(client: Client) -> None:
    """One failure then success: attempt 2 on the record, one `step_retrying` for attempt 1."""
    execution_id, result = await _ended(client, "flaky", "completed", input={"fail_times": 1})
    assert result["result"] == {"attempt": 2}
    steps = await _steps(client, execution_id)
    assert [(s["name"], s["status"], s["attempt"]) for s in steps] == [
        ("wobble", "completed", 2)]
    items = await events(client, execution_id)
    retrying = [e for e in items if e["type"] == "step_retrying"]
    assert [(e["step"], e["cycle"], e["attempt"]) for e in retrying] == [("wobble", 1, 1)]
    assert "attempt 1 failed" in retrying[0]["error"]
    _one_terminal(items, "workflow_completed")


async def test_flaky_step_fails_after_its_retries(client: Client) -> None:
    """Three failures with retries=2 end `failed` with `step_failed` after three attempts."""
    execution_id, result = await _ended(client, "flaky", "failed", input={"fail_times": 3})
    assert result["error"]["code"] == "step_failed"
    assert "attempt 3 failed" in result["error"]["message"]
    status = await live(client, execution_id)
    assert status["is_failed"]
    assert status["is_terminal"]
    assert not status["is_completed"]
    steps = await _steps(client, execution_id)
    assert len(steps) == 1
    assert steps[0]["status"] == "failed"
    assert steps[0]["attempt"] == 3
    assert steps[0]["error"]["code"] == "step_failed"
    items = await events(client, execution_id)
    assert_gapless(items)
    assert [e["attempt"] for e in items if e["type"] == "step_retrying"] == [1, 2]
    finished = [e for e in items if e["type"] == "step_finished"]
    assert [(e["step"], e["status"]) for e in finished] == [("wobble", "failed")]
    _one_terminal(items, "workflow_failed")


async def test_step_timeout_fails_with_step_timeout(client: Client) -> None:
    """A step past its own timeout is retried once, then the execution fails `step_timeout`."""
    execution_id, result = await _ended(client, "step-timeout", "failed")
    assert result["error"]["code"] == "step_timeout"
    steps = await _steps(client, execution_id)
    assert [(s["name"], s["status"], s["attempt"]) for s in steps] == [("too_slow", "failed", 2)]
    assert steps[0]["error"]["code"] == "step_timeout"
    items = await events(client, execution_id)
    assert [e["attempt"] for e in items if e["type"] == "step_retrying"] == [1]
    _one_terminal(items, "workflow_failed")


async def test_execution_timeout_ends_timed_out(client: Client) -> None:
    """The workflow's timeout ends it `timed_out`; the cut-off step fails with `timed_out`."""
    execution_id, result = await _ended(client, "exec-timeout", "timed_out")
    assert result["error"]["code"] == "timed_out"
    status = await live(client, execution_id)
    assert status["is_failed"]
    assert status["is_terminal"]
    steps = await _steps(client, execution_id)
    assert [(s["name"], s["status"]) for s in steps] == [("long_step", "failed")]
    assert steps[0]["error"]["code"] == "timed_out"
    items = await events(client, execution_id)
    assert_gapless(items)
    _one_terminal(items, "workflow_timed_out")
    assert items[-1]["error"]["code"] == "timed_out"


async def test_cycle_timeout_fails_with_step_timeout(client: Client) -> None:
    """A step without its own timeout is bounded by the workflow's `cycle_timeout`."""
    execution_id, result = await _ended(client, "cycle-timeout", "failed")
    assert result["error"]["code"] == "step_timeout"
    steps = await _steps(client, execution_id)
    assert [(s["name"], s["status"]) for s in steps] == [("stuck", "failed")]
    assert steps[0]["error"]["code"] == "step_timeout"
    _one_terminal(await events(client, execution_id), "workflow_failed")


async def test_cycle_limit_ends_failed_at_max_cycles(client: Client) -> None:
    """`max_cycles=5` runs five cycles; asking for a sixth fails `cycle_limit_exceeded`."""
    execution_id, result = await _ended(client, "looper", "failed")
    assert result["error"]["code"] == "cycle_limit_exceeded"
    execution = await _execution(client, execution_id)
    assert execution["cycle"] == 5
    assert execution["max_cycles"] == 5
    assert execution["state"] == {"n": 5}
    assert (await live(client, execution_id))["cycle"] == 5
    steps = await _steps(client, execution_id)
    assert [(s["name"], s["status"], s["cycle"]) for s in steps] == [
        ("again", "completed", n) for n in range(1, 6)]
    items = await events(client, execution_id)
    assert [e["cycle"] for e in items if e["type"] == "cycle_completed"] == [1, 2, 3, 4, 5]
    _one_terminal(items, "workflow_failed")


# ---- branches and plain `def` steps -------------------------------------------------------


async def test_branch_takes_the_decided_way(client: Client) -> None:
    """`way=right`: result from `right`, `left` skipped, the decision in trace and events."""
    execution_id, result = await _ended(client, "brancher", "completed", input={"way": "right"})
    assert result["result"] == {"took": "right"}
    steps = await _steps(client, execution_id)
    assert [(s["name"], s["status"]) for s in steps] == [
        ("choose", "completed"), ("right", "completed"), ("left", "skipped")]
    assert steps[1]["agent_name"] == "RightAgent"
    assert steps[2]["cycle"] is None
    assert steps[2]["started_at"] is None
    trace = await get_json(client, f"{API}/executions/{execution_id}/trace")
    assert trace["execution_path"] == ["choose", "RightAgent"]
    assert set(trace["branch_decisions"]) == {"way"}
    assert trace["branch_decisions"]["way"]["outcome"] == "right"
    assert trace["branch_decisions"]["way"]["cycle"] == 1
    assert [c["step"] for c in trace["cycles"]] == ["choose", "right"]
    assert trace["total_steps"] == 3
    decided = [e for e in await events(client, execution_id) if e["type"] == "branch_decided"]
    assert [(e["step"], e["cycle"], e["name"], e["outcome"]) for e in decided] == [
        ("choose", 1, "way", "right")]


async def test_plain_def_step_reports_progress_and_logs(client: Client) -> None:
    """A plain `def` step completes; its progress event and its `ctx.log` line are kept."""
    execution_id, result = await _ended(client, "blocking", "completed")
    assert result["result"] == {"crunched": 3}
    items = await events(client, execution_id)
    progress = [e for e in items if e["type"] == "step_progress"]
    assert [(e["step"], e["cycle"], e["percentage"], e["message"]) for e in progress] == [
        ("crunch", 1, 50, "half way")]
    _one_terminal(items, "workflow_completed")
    logs = await get_json(client, f"{API}/executions/{execution_id}/logs")
    assert [(line["step"], line["cycle"], line["message"], line["fields"])
            for line in logs["items"]] == [("crunch", 1, "crunched", {"rows": 3})]


async def test_steps_that_do_not_yield_take_one_write_per_cycle(client: Client) -> None:
    """The start of a step that finishes without yielding goes with its end: the submit and
    one write per cycle, with every event still there, in order, without gaps."""
    writer = client.app[STORE].writer
    before = writer.writes
    execution_id = (await submit(client, "three-steps"))["execution_id"]
    await wait_for_status(client, execution_id, "completed")
    assert writer.writes - before == 4
    items = await events(client, execution_id)
    assert_gapless(items)
    assert _types(items).count("step_started") == 3
