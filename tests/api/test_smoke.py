"""The audit-plan flow end to end through HTTP."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from tests.helpers import API, assert_gapless, events, get_json, submit, wait_for_status


async def test_audit_plan_submit_gate_approve_complete(client: TestClient[Any, Any]) -> None:
    """Submit runs to the gate, approve runs it to completion with progress at 100."""
    summary = await submit(client, "audit-plan", input={})
    execution_id = summary["execution_id"]
    assert summary["status"] == "queued"
    status = await wait_for_status(client, execution_id, "awaiting_approval")
    assert status["current_step"]["name"] == "approve_plan"
    resp = await client.post(f"{API}/executions/{execution_id}/approve", json={"comment": "ok"})
    assert resp.status == 202
    assert (await resp.json())["approved"] is True
    status = await wait_for_status(client, execution_id, "completed")
    assert status["progress"]["percentage"] == 100
    result = await get_json(client, f"{API}/executions/{execution_id}/result")
    assert result["status"] == "completed"
    assert result["result"]["issues"] == 0
    items = await events(client, execution_id)
    assert_gapless(items)
    assert [e["type"] for e in items].count("workflow_completed") == 1
