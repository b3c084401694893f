"""Durable sleep: a sleep step and `ctx.sleep` hold no task, wake on the owner's timer, and
survive a restart."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from tests.conftest import MakeClient
from tests.helpers import (
    API,
    assert_gapless,
    events,
    get_json,
    submit,
    wait_for_event,
    wait_for_status,
    wait_for_step_event,
)
from workflowd.api.keys import SCHEDULER

Client = TestClient[Any, Any]


async def _steps(client: Client, execution_id: str) -> list[dict[str, Any]]:
    data = await get_json(client, f"{API}/executions/{execution_id}/steps")
    items: list[dict[str, Any]] = data["items"]
    return items


async def test_a_sleep_step_holds_no_task_then_goes_on(client: Client) -> None:
    """While the sleep step waits: record `waiting`, no runner; then the next step runs."""
    execution_id = (await submit(client, "napper"))["execution_id"]
    started = await wait_for_step_event(client, execution_id, "step_started", "nap")
    assert started["status"] == "waiting"
    assert "until" in started
    owner = client.app[SCHEDULER].owners.get(execution_id)
    if owner is not None and owner.committed.wait is not None:
        assert owner.runner is None  # waiting on its timer, not on a task
    status = await wait_for_status(client, execution_id, "completed", "failed")
    assert status["status"] == "completed"
    steps = await _steps(client, execution_id)
    assert [(s["name"], s["kind"], s["status"], s["cycle"]) for s in steps] == [
        ("before_nap", "data_processing", "completed", 1),
        ("nap", "data_processing", "completed", 2),
        ("after_nap", "data_processing", "completed", 3)]
    assert steps[1]["metadata"]["sleep"] == 0.3
    items = await events(client, execution_id)
    assert_gapless(items)
    nap = [e["type"] for e in items if e.get("step") == "nap"]
    assert nap == ["step_started", "step_finished"]
    result = await get_json(client, f"{API}/executions/{execution_id}/result")
    assert result["result"] == {"before": True, "after": True}


async def test_ctx_sleep_runs_the_step_again_woken(client: Client) -> None:
    """`await ctx.sleep()` ends the run there (state kept), and the step runs again, woken."""
    execution_id = (await submit(client, "snoozer", input={"times": 3}))["execution_id"]
    status = await wait_for_status(client, execution_id, "completed", "failed")
    assert status["status"] == "completed", status
    result = await get_json(client, f"{API}/executions/{execution_id}/result")
    assert result["result"] == {"runs": 3, "woke": [False, True, True]}
    steps = await _steps(client, execution_id)
    assert [(s["name"], s["cycle"], s["status"]) for s in steps] == [
        ("snooze", 1, "completed"), ("snooze", 2, "completed"), ("snooze", 3, "completed")]
    assert [s["metadata"].get("sleep") for s in steps] == [0.2, 0.2, None]
    execution = await get_json(client, f"{API}/executions/{execution_id}")
    assert "never" not in execution["state"]


async def test_ctx_sleep_in_a_def_step(client: Client) -> None:
    """A plain `def` step sleeps with `ctx.sleep(seconds)` just the same."""
    execution_id = (await submit(client, "thread-snoozer"))["execution_id"]
    status = await wait_for_status(client, execution_id, "completed", "failed")
    assert status["status"] == "completed", status
    result = await get_json(client, f"{API}/executions/{execution_id}/result")
    assert result["result"] == {"slept": True, "woke": True}


async def test_a_sleep_step_survives_a_restart(make_client: MakeClient) -> None:
    """Stopped while it sleeps, started again on the file: it wakes and completes."""
    first = await make_client()
    execution_id = (await submit(first, "long-nap"))["execution_id"]
    started = await wait_for_event(first, execution_id, "step_started")
    assert started["status"] == "waiting"
    await first.close()
    second = await make_client()
    status = await wait_for_status(second, execution_id, "completed", "failed")
    assert status["status"] == "completed"
    items = await events(second, execution_id)
    assert_gapless(items)
    assert [e["step"] for e in items if e["type"] == "step_started"] == ["wait_a_bit", "woken"]


async def test_ctx_sleep_survives_a_restart(make_client: MakeClient) -> None:
    """A step sleeping with `ctx.sleep` across a restart runs again, woken, after it."""
    first = await make_client()
    execution_id = (await submit(first, "snoozer", input={"seconds": 1.0}))["execution_id"]
    await wait_for_event(first, execution_id, "cycle_completed")
    await first.close()
    second = await make_client()
    status = await wait_for_status(second, execution_id, "completed", "failed")
    assert status["status"] == "completed"
    result = await get_json(second, f"{API}/executions/{execution_id}/result")
    assert result["result"] == {"runs": 2, "woke": [False, True]}


async def test_cancel_and_pause_during_a_sleep(client: Client) -> None:
    """A sleeping execution can be cancelled; one paused while it sleeps stops after it."""
    sleeping = (await submit(client, "long-nap"))["execution_id"]
    await wait_for_event(client, sleeping, "step_started")
    resp = await client.post(f"{API}/executions/{sleeping}/cancel")
    assert resp.status == 202
    await wait_for_status(client, sleeping, "cancelled")
    steps = await _steps(client, sleeping)
    assert (steps[0]["status"], steps[0]["error"]["code"]) == ("failed", "cancelled")

    napping = (await submit(client, "napper"))["execution_id"]
    await wait_for_step_event(client, napping, "step_started", "nap")
    resp = await client.post(f"{API}/executions/{napping}/pause")
    assert resp.status == 202
    status = await wait_for_status(client, napping, "paused", "completed")
    assert status["status"] == "paused"
    assert status["cycle"] == 2  # the sleep's cycle committed, `after_nap` not run
    resp = await client.post(f"{API}/executions/{napping}/resume")
    assert resp.status == 202
    await wait_for_status(client, napping, "completed")
