"""Executions through HTTP: submit (sync wait), list with filters and pages, and every read."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Any

from aiohttp.test_utils import TestClient

from tests import workflows
from tests.helpers import (
    API,
    all_executions,
    assert_gapless,
    events,
    get_json,
    submit,
    wait_for_status,
    wait_for_step,
)

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
LINKS = {"self", "live", "steps", "trace", "events", "ws", "approve", "cancel"}
SUMMARY_FIELDS = {"execution_id", "workflow_id", "status", "created_at", "links"}
LIST_FIELDS = SUMMARY_FIELDS | {"updated_at", "finished_at", "priority", "labels"}
WHOLE_FIELDS = LIST_FIELDS | {
    "workflow_version", "input", "state", "result", "error", "cycle", "max_cycles",
    "current_step", "progress", "approval", "started_at",
}
STEP_FIELDS = {
    "step_id", "name", "kind", "agent_name", "tool_name", "status", "cycle", "attempt",
    "started_at", "completed_at", "duration_ms", "error", "progress", "output", "metadata",
}
APPROVAL_FIELDS = {"required", "status", "decided_by", "decided_at", "comment"}
THREE_RESULT = {"one": True, "two": 2, "three": True}


def _assert_summary(summary: dict[str, Any]) -> None:
    assert set(summary) >= SUMMARY_FIELDS
    assert TIMESTAMP.match(summary["created_at"])
    base = f"{API}/executions/{summary['execution_id']}"
    assert summary["links"] == {
        "self": base, "live": f"{base}/status/live", "steps": f"{base}/steps",
        "trace": f"{base}/trace", "events": f"{base}/events", "ws": f"{base}/ws",
        "approve": f"{base}/approve", "cancel": f"{base}/cancel",
    }


async def _page(client: TestClient[Any, Any], **params: str) -> dict[str, Any]:
    resp = await client.get(f"{API}/executions", params=params)
    assert resp.status == 200, await resp.text()
    data: dict[str, Any] = await resp.json()
    assert set(data) == {"items", "next_cursor"}
    return data


async def _ids(client: TestClient[Any, Any], *pairs: tuple[str, str]) -> list[str]:
    """Ids `GET /executions` lists for the query `pairs` (keys may repeat), walking pages."""
    ids: list[str] = []
    cursor: str | None = None
    while True:
        params = [*pairs, ("limit", "500")] + ([("cursor", cursor)] if cursor else [])
        resp = await client.get(f"{API}/executions", params=params)
        assert resp.status == 200, await resp.text()
        data = await resp.json()
        ids.extend(item["execution_id"] for item in data["items"])
        cursor = data["next_cursor"]
        if cursor is None:
            return ids


# ---- submit ---------------------------------------------------------------------------------


async def test_submit_answers_202_summary_with_location(client: TestClient[Any, Any]) -> None:
    """A plain submit is 202 with the summary and `Location` naming the execution."""
    resp = await client.post(f"{API}/workflows/three-steps/executions", json={"input": {}})
    assert resp.status == 202
    summary = await resp.json()
    _assert_summary(summary)
    assert summary["workflow_id"] == "three-steps"
    assert summary["status"] == "queued"
    assert resp.headers["Location"] == summary["links"]["self"]
    await wait_for_status(client, summary["execution_id"], "completed")


async def test_submit_with_empty_body_uses_defaults(client: TestClient[Any, Any]) -> None:
    """A submit without a body runs with input {}, priority 0 and no labels."""
    resp = await client.post(f"{API}/workflows/three-steps/executions")
    assert resp.status == 202, await resp.text()
    execution_id = (await resp.json())["execution_id"]
    await wait_for_status(client, execution_id, "completed")
    doc = await get_json(client, f"{API}/executions/{execution_id}")
    assert (doc["input"], doc["priority"], doc["labels"]) == ({}, 0, {})


async def test_submit_wait_answers_200_with_whole_execution(client: TestClient[Any, Any]) -> None:
    """`?wait=` that outlasts the run answers 200 with the whole, finished execution."""
    resp = await client.post(f"{API}/workflows/three-steps/executions", params={"wait": "30"},
                             json={"input": {"value": 5}})
    assert resp.status == 200, await resp.text()
    doc = await resp.json()
    assert set(doc) >= WHOLE_FIELDS
    assert doc["status"] == "completed"
    assert doc["result"] == {**THREE_RESULT, "two": 5}
    assert resp.headers["Location"] == f"{API}/executions/{doc['execution_id']}"


async def test_submit_wait_answers_200_for_a_failure_too(client: TestClient[Any, Any]) -> None:
    """A run that ends failed within `?wait=` is answered 200 with its error."""
    resp = await client.post(f"{API}/workflows/flaky/executions", params={"wait": "30"},
                             json={"input": {"fail_times": 9}})
    assert resp.status == 200, await resp.text()
    doc = await resp.json()
    assert doc["status"] == "failed"
    assert doc["error"]["code"] == "step_failed"
    assert "Location" in resp.headers


async def test_submit_wait_answers_202_when_not_ended(client: TestClient[Any, Any]) -> None:
    """`?wait=` shorter than the run answers 202 with the summary and `Location`."""
    workflows.release("w")
    resp = await client.post(f"{API}/workflows/waiter/executions", params={"wait": "0.2"},
                             json={"input": {"name": "w"}})
    assert resp.status == 202, await resp.text()
    summary = await resp.json()
    _assert_summary(summary)
    assert "input" not in summary
    assert resp.headers["Location"] == summary["links"]["self"]
    status = await wait_for_status(client, summary["execution_id"], "running")
    assert not status["is_terminal"]
    workflows.release("w").set()
    await wait_for_status(client, summary["execution_id"], "completed")


async def test_submit_require_approval_answers_201(client: TestClient[Any, Any]) -> None:
    """`require_approval` answers 201 (even with `?wait=`), awaiting approval, with `Location`."""
    for params in ({}, {"wait": "5"}):
        resp = await client.post(f"{API}/workflows/three-steps/executions", params=params,
                                 json={"require_approval": True})
        assert resp.status == 201, await resp.text()
        summary = await resp.json()
        _assert_summary(summary)
        assert summary["status"] == "awaiting_approval"
        assert resp.headers["Location"] == summary["links"]["self"]
        doc = await get_json(client, resp.headers["Location"])
        assert doc["cycle"] == 0
        assert doc["started_at"] is None
        assert doc["approval"] == {"required": True, "status": "pending", "decided_by": None,
                                   "decided_at": None, "comment": None}


# ---- the whole execution --------------------------------------------------------------------


async def test_whole_execution_fields(client: TestClient[Any, Any]) -> None:
    """`GET /executions/{id}` has every field of the whole execution with its values."""
    summary = await submit(client, "three-steps", input={"value": 3}, priority=4,
                           labels={"team": "audit"})
    execution_id = summary["execution_id"]
    await wait_for_status(client, execution_id, "completed")
    doc = await get_json(client, f"{API}/executions/{execution_id}")
    assert set(doc) >= WHOLE_FIELDS
    _assert_summary(doc)
    assert doc["created_at"] == summary["created_at"]
    assert doc["workflow_id"] == "three-steps"
    assert doc["workflow_version"] == 1
    assert doc["status"] == "completed"
    assert doc["input"] == {"value": 3}
    assert doc["state"] == {**THREE_RESULT, "two": 3}
    assert doc["result"] == doc["state"]
    assert doc["error"] is None
    assert doc["cycle"] == 3
    assert doc["max_cycles"] == 15
    assert doc["priority"] == 4
    assert doc["labels"] == {"team": "audit"}
    assert doc["current_step"] is None
    assert doc["progress"]["percentage"] == 100
    assert doc["progress"]["completed_steps"] == doc["progress"]["total_steps"] == 3
    assert doc["approval"] is None
    for key in ("created_at", "started_at", "updated_at", "finished_at"):
        assert TIMESTAMP.match(doc[key]), key
    assert doc["created_at"] <= doc["started_at"] <= doc["finished_at"] <= doc["updated_at"]


async def test_whole_execution_after_approval_and_failure(client: TestClient[Any, Any]) -> None:
    """`approval` shows the decision with `decided_by` anonymous; a failure shows `error`."""
    approved = (await submit(client, "three-steps", expect=201,
                             require_approval=True))["execution_id"]
    resp = await client.post(f"{API}/executions/{approved}/approve", json={"comment": "ok"})
    assert resp.status == 202
    await wait_for_status(client, approved, "completed")
    doc = await get_json(client, f"{API}/executions/{approved}")
    assert set(doc["approval"]) == APPROVAL_FIELDS
    assert doc["approval"]["status"] == "approved"
    assert doc["approval"]["required"] is True
    assert doc["approval"]["decided_by"] == "anonymous"
    assert doc["approval"]["comment"] == "ok"
    assert TIMESTAMP.match(doc["approval"]["decided_at"])
    assert doc["cycle"] == 3  # the submission approval takes no cycle
    granted = [e for e in await events(client, approved) if e["type"] == "approval_granted"]
    assert [(e["decided_by"], e["comment"]) for e in granted] == [("anonymous", "ok")]

    failed = (await submit(client, "flaky", input={"fail_times": 9}))["execution_id"]
    await wait_for_status(client, failed, "failed")
    doc = await get_json(client, f"{API}/executions/{failed}")
    assert set(doc["error"]) == {"code", "message"}
    assert doc["error"]["code"] == "step_failed"
    assert doc["result"] is None
    assert TIMESTAMP.match(doc["finished_at"])


async def test_running_execution_shows_current_step(client: TestClient[Any, Any]) -> None:
    """A running execution has no finished_at and its current step as in live status."""
    workflows.release("cs")
    execution_id = (await submit(client, "waiter", input={"name": "cs"}))["execution_id"]
    await wait_for_step(client, execution_id)
    doc = await get_json(client, f"{API}/executions/{execution_id}")
    assert doc["status"] == "running"
    assert doc["finished_at"] is None
    assert TIMESTAMP.match(doc["started_at"])
    live = await get_json(client, f"{API}/executions/{execution_id}/status/live")
    assert doc["current_step"] == live["current_step"]
    assert doc["current_step"]["name"] == "recorded"
    workflows.release("cs").set()
    await wait_for_status(client, execution_id, "completed")


# ---- the list -------------------------------------------------------------------------------


async def test_list_newest_first_with_item_fields(client: TestClient[Any, Any]) -> None:
    """`GET /executions` lists newest first; items are summaries plus four more fields."""
    ids = [(await submit(client, "three-steps", priority=n, labels={"n": str(n)}))["execution_id"]
           for n in range(4)]
    for execution_id in ids:
        await wait_for_status(client, execution_id, "completed")
    data = await _page(client)
    assert data["next_cursor"] is None
    assert [item["execution_id"] for item in data["items"]] == ids[::-1]
    for n, item in enumerate(reversed(data["items"])):
        assert set(item) >= LIST_FIELDS
        _assert_summary(item)
        assert item["priority"] == n
        assert item["labels"] == {"n": str(n)}
        assert item["status"] == "completed"
        assert TIMESTAMP.match(item["updated_at"])
        assert TIMESTAMP.match(item["finished_at"])
    created = [item["created_at"] for item in data["items"]]
    assert created == sorted(created, reverse=True)


async def test_list_pages_walk_everything_once(client: TestClient[Any, Any]) -> None:
    """`limit` and `cursor` walk every execution once, in order, ending with a null cursor."""
    ids = [(await submit(client, "three-steps", expect=201, require_approval=True))["execution_id"]
           for _ in range(7)]
    seen: list[str] = []
    pages = []
    cursor: str | None = None
    while True:
        params = {"limit": "3", **({"cursor": cursor} if cursor else {})}
        data = await _page(client, **params)
        pages.append(len(data["items"]))
        seen.extend(item["execution_id"] for item in data["items"])
        cursor = data["next_cursor"]
        if cursor is None:
            break
        assert isinstance(cursor, str)
    assert pages == [3, 3, 1]
    assert seen == ids[::-1]
    assert len(set(seen)) == len(seen)


async def test_list_pages_keep_the_filter(client: TestClient[Any, Any]) -> None:
    """Paging a filtered list stays within the filter and still sees each match once."""
    ids: list[str] = []
    for n in range(6):
        workflow = "three-steps" if n % 2 else "gated"
        summary = await submit(client, workflow, expect=201, require_approval=True)
        if workflow == "three-steps":
            ids.append(summary["execution_id"])
    seen: list[str] = []
    cursor: str | None = None
    while True:
        params = {"limit": "2", "workflow_id": "three-steps", **({"cursor": cursor} if cursor
                                                                 else {})}
        data = await _page(client, **params)
        seen.extend(item["execution_id"] for item in data["items"])
        cursor = data["next_cursor"]
        if cursor is None:
            break
    assert seen == ids[::-1]


async def test_list_default_limit_is_50(client: TestClient[Any, Any]) -> None:
    """Without `limit` a page holds 50 items and a cursor to the rest."""
    for _ in range(52):
        await submit(client, "three-steps", expect=201, require_approval=True)
    first = await _page(client)
    assert len(first["items"]) == 50
    assert first["next_cursor"] is not None
    rest = await _page(client, cursor=first["next_cursor"])
    assert len(rest["items"]) == 2
    assert rest["next_cursor"] is None
    big = await _page(client, limit="500")
    assert len(big["items"]) == 52


async def test_list_filters_workflow_status_and_labels(client: TestClient[Any, Any]) -> None:
    """`workflow_id`, `status` and repeated `label=k:v` filters combine with AND."""
    a_prod = (await submit(client, "three-steps", labels={"team": "a", "env": "prod"}))
    b_prod = (await submit(client, "three-steps", labels={"team": "b", "env": "prod"}))
    a_dev = (await submit(client, "three-steps", labels={"team": "a", "env": "dev"}))
    branch = (await submit(client, "brancher", labels={"team": "a", "url": "x:y"}))
    workflows.release("lf")
    running = (await submit(client, "waiter", input={"name": "lf"}, labels={"team": "a"}))
    done_ids = [s["execution_id"] for s in (a_prod, b_prod, a_dev, branch)]
    for execution_id in done_ids:
        await wait_for_status(client, execution_id, "completed")
    run_id = running["execution_id"]
    await wait_for_status(client, run_id, "running")
    a1, b1, a2, br = done_ids

    assert await _ids(client, ("workflow_id", "three-steps")) == [a2, b1, a1]
    assert await _ids(client, ("workflow_id", "nope")) == []
    assert await _ids(client, ("status", "running")) == [run_id]
    assert await _ids(client, ("status", "completed")) == [br, a2, b1, a1]
    assert await _ids(client, ("status", "failed")) == []
    assert await _ids(client, ("label", "team:a")) == [run_id, br, a2, a1]
    assert await _ids(client, ("label", "team:a"), ("label", "env:prod")) == [a1]
    assert await _ids(client, ("label", "env:prod"), ("workflow_id", "three-steps"),
                      ("status", "completed")) == [b1, a1]
    assert await _ids(client, ("label", "url:x:y")) == [br]
    assert await _ids(client, ("label", "team:z")) == []
    assert await _ids(client, ("label", "missing:a")) == []
    workflows.release("lf").set()
    await wait_for_status(client, run_id, "completed")


async def test_list_created_after_inclusive_before_exclusive(client: TestClient[Any, Any]) -> None:
    """`created_after` includes its instant, `created_before` excludes it, in any zone form."""
    for _ in range(6):
        await submit(client, "three-steps", expect=201, require_approval=True)
    items = await all_executions(client)
    pivot = items[3]["created_at"]
    after = [i["execution_id"] for i in items if i["created_at"] >= pivot]
    before = [i["execution_id"] for i in items if i["created_at"] < pivot]
    assert items[3]["execution_id"] in after
    assert items[3]["execution_id"] not in before

    moment = datetime.fromisoformat(pivot.replace("Z", "+00:00"))
    forms = [pivot, moment.isoformat(timespec="milliseconds"),
             moment.astimezone(timezone(timedelta(hours=2))).isoformat(timespec="microseconds")]
    for form in forms:
        assert await _ids(client, ("created_after", form)) == after, form
        assert await _ids(client, ("created_before", form)) == before, form
    assert await _ids(client, ("created_after", pivot), ("created_before", pivot)) == []
    later = (moment + timedelta(days=1)).isoformat()
    assert await _ids(client, ("created_after", later)) == []
    assert len(await _ids(client, ("created_before", later))) == 6


async def test_list_created_filters_before_year_1000(client: TestClient[Any, Any]) -> None:
    """A bound in years 1..999 compares as an instant: everything is created after it."""
    for _ in range(2):
        await submit(client, "three-steps", expect=201, require_approval=True)
    everything = await _ids(client)
    for early in ("0999-01-01T00:00:00Z", "0001-01-01T00:00:00Z", "0500-06-01T12:00:00+02:00"):
        assert await _ids(client, ("created_after", early)) == everything, early
        assert await _ids(client, ("created_before", early)) == [], early


# ---- workflows ------------------------------------------------------------------------------


async def test_list_and_get_workflows(client: TestClient[Any, Any]) -> None:
    """`GET /workflows` lists each registered workflow with its steps; one is got by id."""
    data = await get_json(client, f"{API}/workflows")
    by_id = {wf["id"]: wf for wf in data["items"]}
    assert {"audit-plan", "three-steps", "brancher", "gated"} <= set(by_id)
    three = by_id["three-steps"]
    assert three["title"] == "Three trivial steps"
    assert three["version"] == 1
    assert three["steps"] == [
        {"name": name, "kind": "data_processing", "agent": None, "tool": None}
        for name in ("one", "two", "three_")
    ]
    assert by_id["brancher"]["steps"][1] == {"name": "left", "kind": "agent_execution",
                                             "agent": "LeftAgent", "tool": None}
    assert [s["kind"] for s in by_id["gated"]["steps"]] == [
        "data_processing", "approval", "data_processing"]
    for workflow_id, listed in by_id.items():
        assert await get_json(client, f"{API}/workflows/{workflow_id}") == listed


# ---- steps, trace, events, logs, result -----------------------------------------------------


async def test_steps_at_a_gate_then_after_approval(client: TestClient[Any, Any]) -> None:
    """Steps: records in cycle order, the gate `waiting`, then declared steps `pending`."""
    execution_id = (await submit(client, "gated"))["execution_id"]
    await wait_for_status(client, execution_id, "awaiting_approval")
    data = await get_json(client, f"{API}/executions/{execution_id}/steps")
    items = data["items"]
    for item in items:
        assert set(item) == STEP_FIELDS
    assert [(s["name"], s["status"], s["cycle"]) for s in items] == [
        ("before", "completed", 1), ("sign_off", "waiting", 2), ("after", "pending", None)]
    assert items[1]["kind"] == "approval"
    pending = items[2]
    assert all(pending[k] is None for k in ("step_id", "attempt", "started_at", "completed_at",
                                            "duration_ms", "error", "output"))
    trace = await get_json(client, f"{API}/executions/{execution_id}/trace")
    assert trace["current_step_index"] == 1
    assert trace["total_steps"] == 3

    resp = await client.post(f"{API}/executions/{execution_id}/approve", json={})
    assert resp.status == 202
    await wait_for_status(client, execution_id, "completed")
    items = (await get_json(client, f"{API}/executions/{execution_id}/steps"))["items"]
    assert [(s["name"], s["status"], s["cycle"]) for s in items] == [
        ("before", "completed", 1), ("sign_off", "completed", 2), ("after", "completed", 3)]
    first = items[0]
    assert first["attempt"] == 1
    assert first["error"] is None
    assert isinstance(first["duration_ms"], int)
    assert TIMESTAMP.match(first["started_at"])
    assert TIMESTAMP.match(first["completed_at"])
    assert len({s["step_id"] for s in items}) == 3


async def test_steps_and_trace_of_a_branch(client: TestClient[Any, Any]) -> None:
    """A branch run shows its records, the branch not taken `skipped`, and the trace."""
    execution_id = (await submit(client, "brancher", input={"way": "right"}))["execution_id"]
    await wait_for_status(client, execution_id, "completed")
    items = (await get_json(client, f"{API}/executions/{execution_id}/steps"))["items"]
    assert [(s["name"], s["status"]) for s in items] == [
        ("choose", "completed"), ("right", "completed"), ("left", "skipped")]
    assert items[0]["kind"] == "decision_point"
    assert items[1]["agent_name"] == "RightAgent"
    assert items[1]["output"] == {"took": "right"}
    assert items[2]["agent_name"] == "LeftAgent"
    assert items[2]["cycle"] is None

    trace = await get_json(client, f"{API}/executions/{execution_id}/trace")
    assert set(trace) >= {"execution_id", "workflow_id", "execution_path", "branch_decisions",
                          "cycles", "current_step_index", "total_steps"}
    assert trace["execution_id"] == execution_id
    assert trace["workflow_id"] == "brancher"
    assert trace["execution_path"] == ["choose", "RightAgent"]
    decision = trace["branch_decisions"]["way"]
    assert decision["outcome"] == "right"
    assert decision["cycle"] == 1
    assert TIMESTAMP.match(decision["timestamp"])
    assert [(c["cycle"], c["step"], c["status"]) for c in trace["cycles"]] == [
        (1, "choose", "completed"), (2, "right", "completed")]
    for cycle in trace["cycles"]:
        assert set(cycle) == {"cycle", "step", "status", "started_at", "completed_at",
                              "duration_ms"}
    assert trace["total_steps"] == 3


async def test_events_in_seq_order_with_paging(client: TestClient[Any, Any]) -> None:
    """Events are gapless from seq 1, typed, and `after`/`limit` page through them."""
    execution_id = (await submit(client, "three-steps"))["execution_id"]
    await wait_for_status(client, execution_id, "completed")
    items = await events(client, execution_id)
    assert_gapless(items)
    types = [e["type"] for e in items]
    assert types[:2] == ["workflow_queued", "workflow_started"]
    assert types[-1] == "workflow_completed"
    assert types.count("step_started") == types.count("step_finished") == 3
    for event in items:
        assert {"seq", "type", "execution_id", "ts"} <= set(event)
        assert event["execution_id"] == execution_id
        assert TIMESTAMP.match(event["ts"])
        if event["type"].startswith("step_"):
            assert isinstance(event["step"], str)
            assert isinstance(event["cycle"], int)

    page = await get_json(client, f"{API}/executions/{execution_id}/events?after=2&limit=3")
    assert [e["seq"] for e in page["items"]] == [3, 4, 5]
    walked: list[int] = []
    after = 0
    while True:
        page = await get_json(client,
                              f"{API}/executions/{execution_id}/events?after={after}&limit=4")
        if not page["items"]:
            break
        walked.extend(e["seq"] for e in page["items"])
        after = page["items"][-1]["seq"]
    assert walked == [e["seq"] for e in items]
    assert (await get_json(client, f"{API}/executions/{execution_id}/events?after={after}")
            )["items"] == []


async def test_logs_in_order(client: TestClient[Any, Any]) -> None:
    """`/logs` has the lines `ctx.log` wrote, in order, with their fields and step."""
    execution_id = (await submit(client, "chatty"))["execution_id"]
    await wait_for_status(client, execution_id, "completed")
    data = await get_json(client, f"{API}/executions/{execution_id}/logs")
    lines = data["items"]
    assert [line["message"] for line in lines] == ["first", "second", "third"]
    assert [line["step"] for line in lines] == ["talk", "talk", "talk_more"]
    assert lines[1]["fields"] == {"n": 2}
    assert lines[2]["fields"] == {"n": 3, "tags": ["x"]}
    assert data["next_cursor"] is None

    blocking = (await submit(client, "blocking"))["execution_id"]
    await wait_for_status(client, blocking, "completed")
    lines = (await get_json(client, f"{API}/executions/{blocking}/logs"))["items"]
    assert [(line["message"], line["fields"]) for line in lines] == [("crunched", {"rows": 3})]
    quiet = (await submit(client, "three-steps"))["execution_id"]
    assert (await get_json(client, f"{API}/executions/{quiet}/logs"))["items"] == []


async def test_result_once_terminal(client: TestClient[Any, Any]) -> None:
    """`/result` is `{status, result, error}` for completed, failed and rejected executions."""
    completed = (await submit(client, "three-steps"))["execution_id"]
    await wait_for_status(client, completed, "completed")
    assert await get_json(client, f"{API}/executions/{completed}/result") == {
        "status": "completed", "result": THREE_RESULT, "error": None}

    failed = (await submit(client, "looper"))["execution_id"]
    await wait_for_status(client, failed, "failed")
    result = await get_json(client, f"{API}/executions/{failed}/result")
    assert result["status"] == "failed"
    assert result["result"] is None
    assert result["error"]["code"] == "cycle_limit_exceeded"

    rejected = (await submit(client, "three-steps", expect=201,
                             require_approval=True))["execution_id"]
    resp = await client.post(f"{API}/executions/{rejected}/reject", json={"reason": "no"})
    assert resp.status == 200
    result = await get_json(client, f"{API}/executions/{rejected}/result")
    assert result["status"] == "rejected"
    assert result["result"] is None
    rejections = [e for e in await events(client, rejected) if e["type"] == "approval_rejected"]
    assert [(e["decided_by"], e["comment"]) for e in rejections] == [("anonymous", "no")]
