"""Manual mode and pause through HTTP: one step per `step`, `resume`, `pause` after a cycle."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests import workflows
from tests.conftest import MakeClient
from tests.helpers import (
    API,
    assert_gapless,
    events,
    get_json,
    problem_of,
    submit,
    wait_for_event,
    wait_for_pause,
    wait_for_status,
)
from workflowd.api.keys import SCHEDULER

Client = TestClient[Any, Any]


async def _post(client: Client, execution_id: str, action: str) -> dict[str, Any]:
    resp = await client.post(f"{API}/executions/{execution_id}/{action}")
    assert resp.status == 202, await resp.text()
    data: dict[str, Any] = await resp.json()
    return data


async def _steps(client: Client, execution_id: str) -> list[tuple[str, str]]:
    data = await get_json(client, f"{API}/executions/{execution_id}/steps")
    return [(s["name"], s["status"]) for s in data["items"]]


async def test_manual_mode_steps_a_pipeline_through_then_resumes(client: Client) -> None:
    """mode=manual: paused before each step, one step per `step`, `resume` runs the rest."""
    summary = await submit(client, "three-steps", input={"value": 5}, mode="manual")
    execution_id = summary["execution_id"]
    assert summary["status"] == "paused"
    status = await wait_for_pause(client, execution_id, 0)
    assert status["is_paused"]
    assert not status["is_processing"]
    assert not status["is_terminal"]
    assert status["current_step"] is None
    execution = await get_json(client, f"{API}/executions/{execution_id}")
    assert (execution["mode"], execution["next_step"]) == ("manual", "one")
    assert await _steps(client, execution_id) == [
        ("one", "pending"), ("two", "pending"), ("three_", "pending")]

    answer = await _post(client, execution_id, "step")
    assert answer["stepped"] is True
    await wait_for_pause(client, execution_id, 1)
    assert await _steps(client, execution_id) == [
        ("one", "completed"), ("two", "pending"), ("three_", "pending")]
    execution = await get_json(client, f"{API}/executions/{execution_id}")
    assert execution["state"] == {"one": True}
    assert execution["next_step"] == "two"

    await _post(client, execution_id, "step")
    await wait_for_pause(client, execution_id, 2)
    assert await _steps(client, execution_id) == [
        ("one", "completed"), ("two", "completed"), ("three_", "pending")]

    await _post(client, execution_id, "resume")
    status = await wait_for_status(client, execution_id, "completed", "failed")
    assert status["status"] == "completed"
    items = await events(client, execution_id)
    assert_gapless(items)
    types = [e["type"] for e in items]
    assert types.count("workflow_paused") == 3
    assert types.count("workflow_resumed") == 3
    assert types[0] == "workflow_paused"
    assert types[-1] == "workflow_completed"
    result = await get_json(client, f"{API}/executions/{execution_id}/result")
    assert result["result"] == {"one": True, "two": 5, "three": True}


async def test_manual_mode_pauses_before_a_gate_and_after_its_approval(client: Client) -> None:
    """A gate is a step: paused before it; after the approve it pauses before the next."""
    execution_id = (await submit(client, "gated", mode="manual"))["execution_id"]
    await _post(client, execution_id, "step")
    await wait_for_pause(client, execution_id, 1)
    await _post(client, execution_id, "step")
    await wait_for_status(client, execution_id, "awaiting_approval")
    resp = await client.post(f"{API}/executions/{execution_id}/approve", json={})
    assert resp.status == 202
    await wait_for_pause(client, execution_id, 2)
    assert await _steps(client, execution_id) == [
        ("before", "completed"), ("sign_off", "completed"), ("after", "pending")]
    await _post(client, execution_id, "step")
    status = await wait_for_status(client, execution_id, "completed", "failed")
    assert status["status"] == "completed"


async def test_pause_during_a_long_step_takes_effect_after_its_cycle(client: Client) -> None:
    """`pause` while a step runs: 202 and still running; once the cycle commits, paused."""
    execution_id = (await submit(client, "held-two", input={"name": "p"}))["execution_id"]
    await wait_for_event(client, execution_id, "step_started")
    answer = await _post(client, execution_id, "pause")
    assert answer["status"] == "running"
    assert answer["pause_requested"] is True
    assert (await _post(client, execution_id, "pause"))["status"] == "running"  # asked again
    workflows.release("p").set()
    status = await wait_for_pause(client, execution_id, 1)
    assert status["current_step"] is None
    assert await _steps(client, execution_id) == [("held", "completed"), ("second", "pending")]
    assert client.app[SCHEDULER].running == 0  # a paused execution holds no task
    items = await events(client, execution_id)
    assert [e["type"] for e in items][-3:] == ["step_finished", "cycle_completed",
                                               "workflow_paused"]
    await _post(client, execution_id, "resume")
    status = await wait_for_status(client, execution_id, "completed", "failed")
    assert status["status"] == "completed"
    result = await get_json(client, f"{API}/executions/{execution_id}/result")
    assert result["result"] == {"held": True, "second": True}


async def test_resume_before_the_pause_lands_cancels_it(client: Client) -> None:
    """A pause asked for, then a resume before the cycle ends: it never stops."""
    execution_id = (await submit(client, "held-two", input={"name": "r"}))["execution_id"]
    await wait_for_event(client, execution_id, "step_started")
    await _post(client, execution_id, "pause")
    await _post(client, execution_id, "resume")
    workflows.release("r").set()
    status = await wait_for_status(client, execution_id, "completed", "failed", "paused")
    assert status["status"] == "completed"


@pytest.mark.sqlite_only("a node counts only the executions it holds")
async def test_pause_of_a_queued_execution_is_at_once(make_client: MakeClient) -> None:
    """With the one slot taken, a queued execution pauses now; resumed, it runs when it can."""
    client = await make_client(engine={"max_concurrent": 1})
    blocker = (await submit(client, "waiter", input={"name": "b"}))["execution_id"]
    await wait_for_event(client, blocker, "step_started")
    queued = (await submit(client, "three-steps"))["execution_id"]
    answer = await _post(client, queued, "pause")
    assert answer["status"] == "paused"
    assert answer["is_paused"]
    listed = await get_json(client, f"{API}/executions?status=paused")
    assert [item["execution_id"] for item in listed["items"]] == [queued]
    metrics = await (await client.get("/metrics")).text()
    assert 'workflowd_executions{status="paused",workflow_id="three-steps"} 1.0' in metrics
    assert "workflowd_executions_paused 1.0" in metrics
    workflows.release("b").set()
    await wait_for_status(client, blocker, "completed")
    assert (await get_json(client, f"{API}/executions/{queued}/status/live"))["status"] == \
        "paused"
    await _post(client, queued, "resume")
    assert (await wait_for_status(client, queued, "completed", "failed"))["status"] == \
        "completed"


async def test_pause_resume_and_step_answer_409_where_not_allowed(client: Client) -> None:
    """Finished: all three 409. Paused: pause 409. Running: step 409, resume 409."""
    done = (await submit(client, "three-steps"))["execution_id"]
    await wait_for_status(client, done, "completed")
    for action in ("pause", "resume", "step"):
        await problem_of(await client.post(f"{API}/executions/{done}/{action}"), 409)
    paused = (await submit(client, "three-steps", mode="manual"))["execution_id"]
    await problem_of(await client.post(f"{API}/executions/{paused}/pause"), 409)
    running = (await submit(client, "waiter", input={"name": "x"}))["execution_id"]
    await wait_for_event(client, running, "step_started")
    await problem_of(await client.post(f"{API}/executions/{running}/step"), 409)
    await problem_of(await client.post(f"{API}/executions/{running}/resume"), 409)
    for action in ("pause", "resume", "step"):
        await problem_of(await client.post(f"{API}/executions/nope/{action}"), 404)
    workflows.release("x").set()


async def test_cancel_a_paused_execution(client: Client) -> None:
    """A paused execution can be cancelled: no task to cut, it ends `cancelled`."""
    execution_id = (await submit(client, "three-steps", mode="manual"))["execution_id"]
    resp = await client.post(f"{API}/executions/{execution_id}/cancel")
    assert resp.status == 202
    assert (await wait_for_status(client, execution_id, "cancelled"))["is_terminal"]


async def test_a_paused_execution_survives_a_restart(make_client: MakeClient) -> None:
    """Paused, restarted on the same file: still paused, then steps on."""
    first = await make_client()
    execution_id = (await submit(first, "three-steps", mode="manual"))["execution_id"]
    await _post(first, execution_id, "step")
    await wait_for_pause(first, execution_id, 1)
    await first.close()
    second = await make_client()
    await wait_for_pause(second, execution_id, 1)
    await _post(second, execution_id, "resume")
    assert (await wait_for_status(second, execution_id, "completed"))["cycle"] == 3


async def test_pause_is_idempotent_with_a_key(client: Client) -> None:
    """A repeated pause with the same Idempotency-Key answers what the first one did."""
    execution_id = (await submit(client, "held-two", input={"name": "k"}))["execution_id"]
    await wait_for_event(client, execution_id, "step_started")
    headers = {"Idempotency-Key": "pause-1"}
    first = await client.post(f"{API}/executions/{execution_id}/pause", headers=headers)
    again = await client.post(f"{API}/executions/{execution_id}/pause", headers=headers)
    assert (first.status, again.status) == (202, 202)
    assert await first.json() == await again.json()
    workflows.release("k").set()
    await wait_for_pause(client, execution_id, 1)


async def test_a_paused_execution_still_times_out(client: Client) -> None:
    """The workflow's timeout bounds a paused execution: it ends `timed_out` while paused,
    holding no task (its timer is the owner's)."""
    execution_id = (await submit(client, "quick-timeout", mode="manual"))["execution_id"]
    await _post(client, execution_id, "step")
    await wait_for_pause(client, execution_id, 1)
    status = await wait_for_status(client, execution_id, "timed_out", "completed")
    assert status["status"] == "timed_out"
    result = await get_json(client, f"{API}/executions/{execution_id}/result")
    assert "while paused" in result["error"]["message"]


async def test_a_manual_submit_with_wait_answers_at_once(client: Client) -> None:
    """`?wait=` on a manual submit: 202 paused at once (it cannot end by itself)."""
    resp = await client.post(f"{API}/workflows/three-steps/executions?wait=30",
                             json={"mode": "manual"})
    assert resp.status == 202
    assert (await resp.json())["status"] == "paused"
