"""External steps: a worker outside the process reports progress and completes the step."""

from __future__ import annotations

import asyncio
import sys
import types
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pytest_aiohttp import AiohttpServer

from tests.conftest import MakeClient
from tests.helpers import (
    API,
    assert_gapless,
    events,
    external_waiting,
    get_json,
    live,
    post_callback,
    problem_of,
    submit,
    wait_for_event,
    wait_for_status,
)
from workflowd import Workflow

UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"


async def test_external_step_completed(client: TestClient[Any, Any]) -> None:
    """The worker reports progress and completes; the output reaches later steps and the record."""
    execution_id, callback = await external_waiting(client)
    assert set(callback) == {"progress_url", "complete_url", "token"}
    steps = await get_json(client, f"{API}/executions/{execution_id}/steps")
    work = next(s for s in steps["items"] if s["name"] == "work")
    assert work["status"] == "waiting"
    metrics = await (await client.get("/metrics")).text()
    assert "workflowd_executions_running 0" in metrics  # no task held while it waits

    resp = await post_callback(client, callback["progress_url"], callback["token"],
                               {"percentage": 40, "message": "crunching"})
    assert resp.status == 202
    progress = await wait_for_event(client, execution_id, "step_progress")
    assert progress["percentage"] == 40
    assert progress["step"] == "work"

    resp = await post_callback(client, callback["complete_url"], callback["token"],
                               {"success": True, "output": {"rows": 7}, "error": None})
    assert resp.status == 202
    await wait_for_status(client, execution_id, "completed")
    result = await get_json(client, f"{API}/executions/{execution_id}/result")
    assert result["result"] == {"work": {"rows": 7}, "prepared": True}
    steps = await get_json(client, f"{API}/executions/{execution_id}/steps")
    work = next(s for s in steps["items"] if s["name"] == "work")
    assert work["status"] == "completed"
    assert work["output"] == {"rows": 7}
    assert_gapless(await events(client, execution_id))


async def test_external_step_failed(client: TestClient[Any, Any]) -> None:
    """A worker reporting failure fails the execution with its error."""
    execution_id, callback = await external_waiting(client)
    resp = await post_callback(client, callback["complete_url"], callback["token"],
                               {"success": False, "error": "disk on fire"})
    assert resp.status == 202
    await wait_for_status(client, execution_id, "failed")
    result = await get_json(client, f"{API}/executions/{execution_id}/result")
    assert result["error"]["code"] == "step_failed"
    assert "disk on fire" in result["error"]["message"]


async def test_external_step_times_out(client: TestClient[Any, Any]) -> None:
    """A worker that never answers fails the step by its timeout."""
    execution_id = (await submit(client, "external-short"))["execution_id"]
    await wait_for_status(client, execution_id, "failed")
    result = await get_json(client, f"{API}/executions/{execution_id}/result")
    assert result["error"]["code"] == "step_timeout"


async def test_wrong_token_stale_step_and_unknown_step(client: TestClient[Any, Any]) -> None:
    """403 for a wrong token (and for a complete without one), 409 for a step not running,
    404 for a step not declared; with auth off, progress without a token is taken."""
    execution_id, callback = await external_waiting(client)
    base = f"{API}/executions/{execution_id}/steps"
    resp = await client.post(f"{base}/work/complete", json={"success": True},
                             headers={"X-Workflowd-Token": "forged"})
    assert resp.status == 403
    assert resp.content_type == "application/problem+json"
    resp = await client.post(f"{base}/work/complete", json={"success": True})
    assert resp.status == 403
    resp = await client.post(f"{base}/work/progress", json={"percentage": 5},
                             headers={"X-Workflowd-Token": "forged"})
    assert resp.status == 403
    resp = await client.post(f"{base}/work/progress", json={"percentage": 5})
    assert resp.status == 202
    resp = await client.post(f"{base}/prepare/complete", json={"success": True},
                             headers={"X-Workflowd-Token": callback["token"]})
    assert resp.status == 409
    resp = await client.post(f"{base}/nope/progress", json={"percentage": 5},
                             headers={"X-Workflowd-Token": callback["token"]})
    assert resp.status == 404
    resp = await client.post(f"{base}/work/progress", json={"percentage": 101},
                             headers={"X-Workflowd-Token": callback["token"]})
    assert resp.status == 422
    resp = await post_callback(client, callback["complete_url"], callback["token"],
                               {"success": True})
    assert resp.status == 202
    resp = await post_callback(client, callback["complete_url"], callback["token"],
                               {"success": True})
    assert resp.status == 409  # answered already: the token is stale
    await wait_for_status(client, execution_id, "completed")


async def _unchanged(client: TestClient[Any, Any], execution_id: str,
                     seq: int) -> None:
    """Nothing was committed since `seq`, and the external step still waits."""
    assert (await live(client, execution_id))["seq"] == seq
    steps = await get_json(client, f"{API}/executions/{execution_id}/steps")
    assert next(s for s in steps["items"] if s["name"] == "work")["status"] == "waiting"


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({}, ["body", "success"]),
        ({"output": 1}, ["body", "success"]),
        ({"success": "maybe"}, ["body", "success"]),
        ({"success": [True]}, ["body", "success"]),
        ({"success": None}, ["body", "success"]),
        ({"success": True, "colour": "red"}, ["body", "colour"]),
        ({"success": False, "error": 5}, ["body", "error"]),
        ({"success": False, "error": {"code": ""}}, ["body", "error"]),
        ({"success": False, "error": {"code": "x", "why": "y"}}, ["body", "error"]),
        ([{"success": True}], ["body"]),
        ("done", ["body"]),
    ],
)
async def test_bad_complete_body_is_422_and_changes_nothing(
        client: TestClient[Any, Any], body: Any, loc: list[str]) -> None:
    """A completion whose body has wrong types, unknown fields or is not an object is 422
    pointing at the field; the step still waits, and a good completion then goes through."""
    execution_id, callback = await external_waiting(client)
    seq = (await live(client, execution_id))["seq"]
    resp = await post_callback(client, callback["complete_url"], callback["token"], body)
    problem = await problem_of(resp, 422)
    assert any(e["loc"][:len(loc)] == loc for e in problem["errors"]), problem
    await _unchanged(client, execution_id, seq)
    resp = await post_callback(client, callback["complete_url"], callback["token"],
                               {"success": True})
    assert resp.status == 202, await resp.text()
    await wait_for_status(client, execution_id, "completed")


async def test_refused_completions_change_nothing(client: TestClient[Any, Any]) -> None:
    """A completion for an unknown execution or step (404), with a wrong or no token (403), or
    for a step that is not waiting (409) is a problem, commits nothing and does not spend its
    Idempotency-Key: the worker's right completion with that key then goes through."""
    execution_id, callback = await external_waiting(client)
    seq = (await live(client, execution_id))["seq"]
    base = f"{API}/executions/{execution_id}/steps"
    key = {"Idempotency-Key": "done-1"}
    token = {"X-Workflowd-Token": callback["token"]}
    for path, headers, status in [
            (f"{API}/executions/{UNKNOWN_ID}/steps/work/complete", token, 404),
            (f"{base}/nope/complete", token, 404),
            (f"{base}/work/complete", {"X-Workflowd-Token": "forged"}, 403),
            (f"{base}/work/complete", {}, 403),
            (f"{base}/prepare/complete", token, 409)]:
        resp = await client.post(path, json={"success": True}, headers={**key, **headers})
        problem = await problem_of(resp, status)
        assert problem["instance"] == path
        await _unchanged(client, execution_id, seq)
    resp = await client.post(f"{base}/work/complete", json={"success": True},
                             headers={**key, **token})
    assert resp.status == 202, await resp.text()
    await wait_for_status(client, execution_id, "completed")


async def test_external_step_completed_after_restart(make_client: MakeClient) -> None:
    """A wait survives a restart: the worker completes it on the new app."""
    first = await make_client()
    execution_id, callback = await external_waiting(first)
    await first.close()
    second = await make_client()
    resp = await post_callback(second, callback["complete_url"], callback["token"],
                               {"success": True, "output": "ok"})
    assert resp.status == 202
    await wait_for_status(second, execution_id, "completed")


async def test_cancel_while_waiting_for_a_worker(client: TestClient[Any, Any]) -> None:
    """Cancel ends a waiting external step: the record fails with code cancelled."""
    execution_id, callback = await external_waiting(client)
    resp = await client.post(f"{API}/executions/{execution_id}/cancel")
    assert resp.status == 202
    await wait_for_status(client, execution_id, "cancelled")
    steps = await get_json(client, f"{API}/executions/{execution_id}/steps")
    work = next(s for s in steps["items"] if s["name"] == "work")
    assert work["status"] == "failed"
    assert work["error"]["code"] == "cancelled"
    resp = await post_callback(client, callback["complete_url"], callback["token"],
                               {"success": True})
    assert resp.status == 409


async def test_dispatch_posts_input_and_callback(make_client: MakeClient,
                                                 aiohttp_server: AiohttpServer) -> None:
    """With url=, the step's input and callback are POSTed to the worker, retried on failure."""
    received: list[dict[str, Any]] = []
    second = asyncio.Event()

    async def worker(request: web.Request) -> web.Response:
        received.append(await request.json())
        if len(received) == 2:
            second.set()
        return web.Response(status=500 if len(received) == 1 else 200)

    app = web.Application()
    app.router.add_post("/work", worker)
    server: TestServer = await aiohttp_server(app)
    wf = Workflow("dispatched")
    wf.external("work", url=str(server.make_url("/work")), timeout=30.0)
    module = types.ModuleType("tests._dispatched")
    module.wf = wf  # type: ignore[attr-defined]
    sys.modules[module.__name__] = module
    client = await make_client(workflows={"modules": [module.__name__]},
                               delivery={"backoff": 0.01})
    execution_id = (await submit(client, "dispatched", input={"doc": 42}))["execution_id"]
    async with asyncio.timeout(10):
        await second.wait()  # the first POST failed; the outbox retried it
    body = received[-1]
    assert body["input"] == {"doc": 42}
    assert body["step"] == "work"
    resp = await post_callback(client, body["callback"]["complete_url"], body["callback"]["token"],
                               {"success": True, "output": 1})
    assert resp.status == 202
    await wait_for_status(client, execution_id, "completed")
