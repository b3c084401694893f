"""`Idempotency-Key`: a replay answers what the first request answered, and acts once."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests import workflows
from tests.helpers import (
    API,
    all_executions,
    external_waiting,
    get_json,
    live,
    problem_of,
    raw_request,
    submit,
    wait_for_status,
)

SUBMIT = f"{API}/workflows/three-steps/executions"


async def _post(client: TestClient[Any, Any], path: str, key: str,
                body: Any = None) -> tuple[int, str, str | None]:
    resp = await client.post(path, json=body if body is not None else {},
                             headers={"Idempotency-Key": key})
    return resp.status, await resp.text(), resp.headers.get("Location")


async def test_submit_replay_answers_the_same(client: TestClient[Any, Any]) -> None:
    """Same key and body: same status, body and Location, and only one execution exists."""
    body = {"input": {"value": 7}, "labels": {"team": "audit"}}
    first = await _post(client, SUBMIT, "key-1", body)
    assert first[0] == 202, first
    await wait_for_status(client, json.loads(first[1])["execution_id"], "completed")
    second = await _post(client, SUBMIT, "key-1", body)
    assert second == first
    assert first[2] is not None
    assert first[2].startswith(f"{API}/executions/")
    items = await all_executions(client)
    assert len(items) == 1
    assert first[2] == items[0]["links"]["self"]


async def test_submit_different_keys_make_different_executions(
        client: TestClient[Any, Any]) -> None:
    """Two keys with the same body are two requests: two executions."""
    body: dict[str, Any] = {"input": {}}
    first = await _post(client, SUBMIT, "key-a", body)
    second = await _post(client, SUBMIT, "key-b", body)
    assert first[0] == second[0] == 202
    assert first[2] != second[2]
    assert len(await all_executions(client)) == 2


async def test_submit_same_key_different_body_is_422(client: TestClient[Any, Any]) -> None:
    """The same key with a different body is 422 problem JSON and creates nothing more."""
    first = await _post(client, SUBMIT, "key-2", {"input": {"value": 1}})
    assert first[0] == 202
    resp = await client.post(SUBMIT, json={"input": {"value": 2}},
                             headers={"Idempotency-Key": "key-2"})
    await problem_of(resp, 422)
    items = await all_executions(client)
    assert len(items) == 1
    assert (await get_json(client, items[0]["links"]["self"]))["input"] == {"value": 1}


async def test_submit_concurrent_same_key_makes_one_execution(
        client: TestClient[Any, Any]) -> None:
    """Concurrent submits with one key create one execution and all get the same answer."""
    body = {"input": {"name": "c"}}
    workflows.release("c")
    answers = await asyncio.gather(*(
        _post(client, f"{API}/workflows/waiter/executions", "key-3", body) for _ in range(8)))
    assert {a[0] for a in answers} == {202}
    assert len(set(answers)) == 1
    items = await all_executions(client)
    assert len(items) == 1
    workflows.release("c").set()
    await wait_for_status(client, items[0]["execution_id"], "completed")
    assert workflows.STARTED == ["c"]


async def test_submit_replay_with_require_approval_keeps_201(client: TestClient[Any, Any]) -> None:
    """A replay of a submit first answered 201 answers 201 again, even after approval."""
    body = {"input": {}, "require_approval": True}
    first = await _post(client, SUBMIT, "key-4", body)
    assert first[0] == 201, first
    [item] = await all_executions(client)
    resp = await client.post(f"{API}/executions/{item['execution_id']}/approve", json={})
    assert resp.status == 202
    assert await _post(client, SUBMIT, "key-4", body) == first
    assert len(await all_executions(client)) == 1


async def test_approve_replay_answers_the_same(client: TestClient[Any, Any]) -> None:
    """A repeated approve with its key gets the first 202 and body, not a 409."""
    execution_id = (await submit(client, "three-steps", expect=201,
                                 require_approval=True))["execution_id"]
    path = f"{API}/executions/{execution_id}/approve"
    first = await _post(client, path, "approve-1", {"comment": "fine"})
    assert first[0] == 202, first
    await wait_for_status(client, execution_id, "completed")
    assert await _post(client, path, "approve-1", {"comment": "fine"}) == first
    await problem_of(await client.post(path, json={"comment": "fine"}), 409)
    events = await get_json(client, f"{API}/executions/{execution_id}/events")
    assert [e["type"] for e in events["items"]].count("approval_granted") == 1


async def test_reject_replay_answers_the_same(client: TestClient[Any, Any]) -> None:
    """A repeated reject with its key gets the first 200 and body, not a 409."""
    execution_id = (await submit(client, "three-steps", expect=201,
                                 require_approval=True))["execution_id"]
    path = f"{API}/executions/{execution_id}/reject"
    first = await _post(client, path, "reject-1", {"reason": "no"})
    assert first[0] == 200, first
    assert '"status":"rejected"' in first[1].replace(" ", "")
    assert await _post(client, path, "reject-1", {"reason": "no"}) == first
    await problem_of(await client.post(path, json={"reason": "no"}), 409)


async def test_cancel_replay_answers_the_same(client: TestClient[Any, Any]) -> None:
    """A repeated cancel of a running execution with its key gets the first 202 and body."""
    workflows.release("r")
    execution_id = (await submit(client, "waiter", input={"name": "r"}))["execution_id"]
    await wait_for_status(client, execution_id, "running")
    path = f"{API}/executions/{execution_id}/cancel"
    first = await _post(client, path, "cancel-1")
    assert first[0] == 202, first
    assert (await get_json(client, f"{API}/executions/{execution_id}"))["status"] == "cancelled"
    assert await _post(client, path, "cancel-1") == first
    await problem_of(await client.post(path), 409)


async def test_cancel_replay_of_waiting_execution(client: TestClient[Any, Any]) -> None:
    """A cancel of a waiting execution replays the same answer after it became terminal."""
    execution_id = (await submit(client, "three-steps", expect=201,
                                 require_approval=True))["execution_id"]
    path = f"{API}/executions/{execution_id}/cancel"
    first = await _post(client, path, "cancel-2")
    assert first[0] == 202, first
    assert await _post(client, path, "cancel-2") == first
    await problem_of(await client.post(path), 409)



async def test_submit_replay_with_wait_answers_the_same(client: TestClient[Any, Any]) -> None:
    """A sync submit (`?wait=`) that ended in time replays as the same 200 whole execution."""
    path = f"{SUBMIT}?wait=30"
    first = await _post(client, path, "key-5", {"input": {"value": 9}})
    assert first[0] == 200, first
    assert json.loads(first[1])["status"] == "completed"
    assert await _post(client, path, "key-5", {"input": {"value": 9}}) == first
    assert len(await all_executions(client)) == 1


async def test_submit_replay_without_wait_of_a_sync_200_answers_the_200(
        client: TestClient[Any, Any]) -> None:
    """A sync submit answered 200: a repeat without `?wait=` gets that 200 and body, not the
    202 summary the submit committed."""
    body = {"input": {"value": 3}}
    first = await _post(client, f"{SUBMIT}?wait=30", "key-6", body)
    assert first[0] == 200, first
    assert await _post(client, SUBMIT, "key-6", body) == first


async def test_submit_replay_of_a_wait_that_ran_out_answers_the_202(
        client: TestClient[Any, Any]) -> None:
    """A sync submit whose wait ran out answered 202: a repeat after the execution ended gets
    that 202 and body again, not a 200 with the whole execution."""
    workflows.release("late")
    path = f"{API}/workflows/waiter/executions?wait=0.05"
    body = {"input": {"name": "late"}}
    first = await _post(client, path, "key-7", body)
    assert first[0] == 202, first
    workflows.release("late").set()
    await wait_for_status(client, json.loads(first[1])["execution_id"], "completed")
    assert await _post(client, path, "key-7", body) == first
    assert len(await all_executions(client)) == 1


@pytest.mark.parametrize("key", [
    pytest.param("", id="empty"),
    pytest.param("k" * 256, id="256-characters"),
    pytest.param("ключ", id="not-ascii"),
    pytest.param("a\tb", id="a-tab"),
])
async def test_bad_key_is_400_on_every_route_and_changes_nothing(
        client: TestClient[Any, Any], key: str) -> None:
    """A key that is empty, past 255 characters or not printable ASCII is a 400 problem on
    every route that takes one, the request otherwise good, and nothing changes."""
    gated = (await submit(client, "three-steps", expect=201,
                          require_approval=True))["execution_id"]
    external, callback = await external_waiting(client)
    before = [await live(client, execution_id) for execution_id in (gated, external)]
    requests = [(SUBMIT, {}), (f"{SUBMIT}?wait=1", {}),
                (f"{API}/executions/{external}/steps/work/complete", {"success": True})]
    requests += [(f"{API}/executions/{gated}/{action}", {})
                 for action in ("approve", "reject", "cancel", "pause", "resume", "step")]
    for path, body in requests:
        resp = await client.post(path, json=body, headers={
            "Idempotency-Key": key, "X-Workflowd-Token": callback["token"]})
        problem = await problem_of(resp, 400)
        assert "Idempotency-Key" in problem["detail"], (path, problem)
    assert [await live(client, execution_id) for execution_id in (gated, external)] == before
    assert len(await all_executions(client)) == 2


async def test_key_not_utf8_is_400_not_500(client: TestClient[Any, Any]) -> None:
    """A key of bytes that are not UTF-8 (sent raw: aiohttp's client would not) is a 400
    problem and submits nothing; the server read them as surrogates, which the store could not
    encode: a 500."""
    status, head, body = await raw_request(client, "POST", SUBMIT,
                                           b"Idempotency-Key: \xff\xfe\r\n", b"{}")
    assert status == 400, body
    assert b"application/problem+json" in head
    assert "Idempotency-Key" in json.loads(body)["detail"]
    assert await all_executions(client) == []
