"""Admission and caller transitions through HTTP: approve, reject, cancel, priority, limits."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp.test_utils import TestClient

from tests import workflows
from tests.conftest import MakeClient
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

Client = TestClient[Any, Any]
TERMINAL = ("completed", "failed", "cancelled", "timed_out", "rejected")


async def _post(client: Client, execution_id: str, action: str,
                body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    resp = await client.post(f"{API}/executions/{execution_id}/{action}", json=body or {})
    data: dict[str, Any] = await resp.json()
    return resp.status, data


async def _steps(client: Client, execution_id: str) -> list[dict[str, Any]]:
    data = await get_json(client, f"{API}/executions/{execution_id}/steps")
    items: list[dict[str, Any]] = data["items"]
    return items


async def _execution(client: Client, execution_id: str) -> dict[str, Any]:
    data: dict[str, Any] = await get_json(client, f"{API}/executions/{execution_id}")
    return data


async def _running_ids(client: Client) -> set[str]:
    data = await get_json(client, f"{API}/executions?status=running")
    return {item["execution_id"] for item in data["items"]}


async def _start_waiter(client: Client, name: str, priority: int = 0) -> str:
    """Submit a `waiter` and wait until its step has started."""
    execution_id: str = (await submit(client, "waiter", input={"name": name},
                                      priority=priority))["execution_id"]
    await wait_for_event(client, execution_id, "step_started")
    return execution_id


def _terminal_types(items: list[dict[str, Any]]) -> list[str]:
    return [e["type"] for e in items
            if e["type"].startswith("workflow_") and e["type"] not in
            ("workflow_queued", "workflow_started")]


# ---- approvals ----------------------------------------------------------------------------


async def test_require_approval_waits_then_runs_on_approve(client: Client) -> None:
    """`require_approval`: 201 `awaiting_approval`, no step run; approve queues it and it runs."""
    summary = await submit(client, "three-steps", expect=201, require_approval=True)
    assert summary["status"] == "awaiting_approval"
    execution_id = summary["execution_id"]
    status = await live(client, execution_id)
    assert status["status"] == "awaiting_approval"
    assert status["awaiting_approval"]
    assert not status["is_processing"]
    assert status["cycle"] == 0
    assert [s["status"] for s in await _steps(client, execution_id)] == ["pending"] * 3
    execution = await _execution(client, execution_id)
    assert execution["approval"]["required"] is True
    assert execution["approval"]["status"] == "pending"

    code, body = await _post(client, execution_id, "approve", {"comment": "fine"})
    assert code == 202, body
    assert body["approved"] is True
    assert body["status"] == "queued"
    status = await wait_for_status(client, execution_id, *TERMINAL)
    assert status["status"] == "completed"
    assert status["cycle"] == 3  # the submission approval took no cycle
    execution = await _execution(client, execution_id)
    assert execution["approval"]["status"] == "approved"
    assert execution["approval"]["decided_by"] == "anonymous"
    assert execution["approval"]["comment"] == "fine"
    assert execution["approval"]["decided_at"] is not None
    steps = await _steps(client, execution_id)
    assert [(s["name"], s["cycle"]) for s in steps] == [("one", 1), ("two", 2), ("three_", 3)]
    items = await events(client, execution_id)
    assert_gapless(items)
    assert [e["type"] for e in items[:4]] == ["approval_required", "approval_granted",
                                              "workflow_queued", "workflow_started"]
    assert items[1]["decided_by"] == "anonymous"
    assert items[1]["comment"] == "fine"
    assert _terminal_types(items) == ["workflow_completed"]


async def test_reject_at_a_gate_ends_rejected(client: Client) -> None:
    """Reject: `rejected`, gate record failed, later steps skipped, the reason as the comment."""
    execution_id = (await submit(client, "gated"))["execution_id"]
    await wait_for_status(client, execution_id, "awaiting_approval", *TERMINAL)
    code, body = await _post(client, execution_id, "reject", {"reason": "not now"})
    assert code == 200, body
    assert body["status"] == "rejected"
    status = await live(client, execution_id)
    assert status["status"] == "rejected"
    assert status["is_terminal"]
    assert not status["awaiting_approval"]
    steps = await _steps(client, execution_id)
    assert [(s["name"], s["status"]) for s in steps] == [
        ("before", "completed"), ("sign_off", "failed"), ("after", "skipped")]
    assert steps[1]["error"] is not None
    execution = await _execution(client, execution_id)
    assert execution["approval"]["status"] == "rejected"
    assert execution["approval"]["comment"] == "not now"
    assert execution["approval"]["decided_by"] == "anonymous"
    assert execution["finished_at"] is not None
    result = await get_json(client, f"{API}/executions/{execution_id}/result")
    assert result["status"] == "rejected"
    items = await events(client, execution_id)
    assert_gapless(items)
    rejected = [e for e in items if e["type"] == "approval_rejected"]
    assert [(e["decided_by"], e["comment"]) for e in rejected] == [("anonymous", "not now")]
    finished = [e for e in items if e["type"] == "step_finished" and e["step"] == "sign_off"]
    assert [e["status"] for e in finished] == ["failed"]
    assert _terminal_types(items) == ["workflow_rejected"]
    assert items[-1]["type"] == "workflow_rejected"


async def test_approve_and_reject_need_awaiting_approval(client: Client) -> None:
    """Approve and reject answer 409 on a running execution and on a terminal one."""
    execution_id = await _start_waiter(client, "busy")
    for action in ("approve", "reject"):
        code, body = await _post(client, execution_id, action)
        assert code == 409, body
    workflows.release("busy").set()
    await wait_for_status(client, execution_id, *TERMINAL)
    for action in ("approve", "reject"):
        code, body = await _post(client, execution_id, action)
        assert code == 409, body
    assert (await live(client, execution_id))["status"] == "completed"


# ---- cancel -------------------------------------------------------------------------------


async def test_cancel_a_running_step_within_a_second(client: Client) -> None:
    """Cancel cuts the sleeping step at once: `cancelled`, its record failed with `cancelled`."""
    execution_id = (await submit(client, "sleeper"))["execution_id"]
    await wait_for_event(client, execution_id, "step_progress")  # the step is in its sleep
    async with asyncio.timeout(1.0):
        code, body = await _post(client, execution_id, "cancel")
        status = await wait_for_status(client, execution_id, *TERMINAL)
    assert code == 202, body
    assert status["status"] == "cancelled"
    assert status["is_terminal"]
    assert not status["is_failed"]
    steps = await _steps(client, execution_id)
    assert [(s["name"], s["status"]) for s in steps] == [("nap", "failed")]
    assert steps[0]["error"]["code"] == "cancelled"
    assert steps[0]["completed_at"] is not None
    assert isinstance(steps[0]["duration_ms"], int)
    execution = await _execution(client, execution_id)
    assert execution["error"]["code"] == "cancelled"
    items = await events(client, execution_id)
    assert_gapless(items)
    finished = [e for e in items if e["type"] == "step_finished"]
    assert [(e["step"], e["status"]) for e in finished] == [("nap", "failed")]
    assert finished[0]["duration_ms"] == steps[0]["duration_ms"]
    assert _terminal_types(items) == ["workflow_cancelled"]
    assert items[-1]["type"] == "workflow_cancelled"


async def test_cancel_a_terminal_execution_is_409(client: Client) -> None:
    """Cancel of a completed execution answers 409 problem JSON and changes nothing."""
    execution_id = (await submit(client, "three-steps"))["execution_id"]
    await wait_for_status(client, execution_id, *TERMINAL)
    before = await events(client, execution_id)
    resp = await client.post(f"{API}/executions/{execution_id}/cancel")
    assert resp.status == 409
    assert resp.content_type == "application/problem+json"
    assert (await live(client, execution_id))["status"] == "completed"
    assert await events(client, execution_id) == before


async def test_cancel_a_queued_execution(make_client: MakeClient) -> None:
    """A queued execution cancelled behind a busy slot ends `cancelled` and never starts."""
    client = await make_client(engine={"max_concurrent": 1})
    blocker = await _start_waiter(client, "blocker")
    execution_id = (await submit(client, "three-steps"))["execution_id"]
    assert (await live(client, execution_id))["status"] == "queued"
    code, body = await _post(client, execution_id, "cancel")
    assert code == 202, body
    status = await wait_for_status(client, execution_id, *TERMINAL)
    assert status["status"] == "cancelled"
    # Free the slot, and run one more execution through it: the cancelled one stays put.
    workflows.release("blocker").set()
    await wait_for_status(client, blocker, *TERMINAL)
    later = (await submit(client, "three-steps"))["execution_id"]
    assert (await wait_for_status(client, later, *TERMINAL))["status"] == "completed"
    items = await events(client, execution_id)
    assert [e["type"] for e in items] == ["workflow_queued", "workflow_cancelled"]
    assert [s["status"] for s in await _steps(client, execution_id)] == ["skipped"] * 3
    assert (await _execution(client, execution_id))["started_at"] is None


async def test_cancel_an_execution_awaiting_approval(client: Client) -> None:
    """Cancel at a gate: `cancelled`, the gate record failed with `cancelled`, approve is 409."""
    execution_id = (await submit(client, "gated"))["execution_id"]
    await wait_for_status(client, execution_id, "awaiting_approval", *TERMINAL)
    code, body = await _post(client, execution_id, "cancel")
    assert code == 202, body
    status = await wait_for_status(client, execution_id, *TERMINAL)
    assert status["status"] == "cancelled"
    steps = await _steps(client, execution_id)
    assert [(s["name"], s["status"]) for s in steps] == [
        ("before", "completed"), ("sign_off", "failed"), ("after", "skipped")]
    assert steps[1]["error"]["code"] == "cancelled"
    items = await events(client, execution_id)
    assert_gapless(items)
    finished = [e for e in items if e["type"] == "step_finished" and e["step"] == "sign_off"]
    assert [e["status"] for e in finished] == ["failed"]
    assert _terminal_types(items) == ["workflow_cancelled"]
    code, body = await _post(client, execution_id, "approve")
    assert code == 409, body


# ---- priority and the concurrency limit ---------------------------------------------------


async def test_priority_order_with_one_slot(make_client: MakeClient) -> None:
    """One slot: higher priority first, equal ones by arrival; the rest wait `queued`."""
    client = await make_client(engine={"max_concurrent": 1})
    ids = {"first": await _start_waiter(client, "first")}
    for name, priority in (("low", 0), ("high", 10), ("mid", 5), ("low2", 0)):
        ids[name] = (await submit(client, "waiter", input={"name": name},
                                  priority=priority))["execution_id"]
    expected = ["first", "high", "mid", "low", "low2"]
    for n, name in enumerate(expected):
        if n:
            await wait_for_event(client, ids[name], "step_started")
        assert expected[: n + 1] == workflows.STARTED
        assert await _running_ids(client) == {ids[name]}
        for waiting in expected[n + 1:]:
            assert (await live(client, ids[waiting]))["status"] == "queued"
        workflows.release(name).set()
        await wait_for_status(client, ids[name], *TERMINAL)
    assert expected == workflows.STARTED
    for execution_id in ids.values():
        assert (await live(client, execution_id))["status"] == "completed"


async def test_two_slots_run_two_at_once(make_client: MakeClient) -> None:
    """Two slots: two executions run together, a third waits `queued` until one ends."""
    client = await make_client(engine={"max_concurrent": 2})
    a = await _start_waiter(client, "a")
    b = await _start_waiter(client, "b")
    c = (await submit(client, "waiter", input={"name": "c"}))["execution_id"]
    assert await _running_ids(client) == {a, b}
    assert (await live(client, c))["status"] == "queued"
    assert sorted(workflows.STARTED) == ["a", "b"]
    workflows.release("a").set()
    await wait_for_event(client, c, "step_started")
    assert await _running_ids(client) == {b, c}
    workflows.release("b").set()
    workflows.release("c").set()
    for execution_id in (a, b, c):
        assert (await wait_for_status(client, execution_id, *TERMINAL))["status"] == "completed"
    assert workflows.STARTED == ["a", "b", "c"]


async def test_execution_timeout_ends_a_wait_at_a_gate(client: TestClient[Any, Any]) -> None:
    """A gate holds no task, yet the workflow's timeout still ends the execution timed_out."""
    execution_id = (await submit(client, "gate-timeout"))["execution_id"]
    await wait_for_status(client, execution_id, "timed_out")
    steps = await get_json(client, f"{API}/executions/{execution_id}/steps")
    gate = next(s for s in steps["items"] if s["name"] == "too_late")
    assert gate["status"] == "failed"
    assert gate["error"]["code"] == "timed_out"
    resp = await client.post(f"{API}/executions/{execution_id}/approve", json={})
    assert resp.status == 409
