"""Limits on what comes in (API.md §8): submits a minute and queued executions per subject,
429 with Retry-After and nothing changed; JSON nested too deep is 422."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests import workflows
from tests.conftest import MakeClient
from tests.helpers import (
    API,
    auth_settings,
    bearer,
    live,
    problem_of,
    submit,
    wait_for_status,
    wait_for_step,
)
from workflowd.api.limits import SubmitRate
from workflowd.errors import RateLimitedError


async def _submit(client: TestClient[Any, Any], role: str, workflow: str = "three-steps",
                  **body: Any) -> Any:
    return await client.post(f"{API}/workflows/{workflow}/executions", json=body,
                             headers=bearer(role))


async def _count(client: TestClient[Any, Any]) -> int:
    resp = await client.get(f"{API}/executions?limit=500", headers=bearer("viewer"))
    return len((await resp.json())["items"])


async def test_submit_rate_per_subject(make_client: MakeClient) -> None:
    """Past `submits_per_minute` a subject's submit is 429 with Retry-After and creates
    nothing; another subject has a bucket of its own."""
    client = await make_client(auth=auth_settings(), limits={"submits_per_minute": 2})
    for _ in range(2):
        assert (await _submit(client, "submitter")).status == 202
    resp = await _submit(client, "submitter")
    body = await problem_of(resp, 429)
    assert body["type"].endswith("rate_limited")
    assert "submits_per_minute" in body["detail"]
    assert int(resp.headers["Retry-After"]) >= 1
    assert await _count(client) == 2
    assert (await _submit(client, "admin")).status == 202


async def test_submit_rate_with_auth_off_is_for_everyone(make_client: MakeClient) -> None:
    """With auth off every caller is "anonymous", so the limit is the service's."""
    client = await make_client(limits={"submits_per_minute": 1})
    await submit(client, "three-steps")
    await problem_of(await client.post(f"{API}/workflows/three-steps/executions", json={}), 429)


async def test_a_replayed_submit_spends_no_rate(make_client: MakeClient) -> None:
    """A repeat of an Idempotency-Key answers what the first answered (202 and its body), even
    past the rate: a replay is not a new submit."""
    client = await make_client(limits={"submits_per_minute": 1})
    headers = {"Idempotency-Key": "once"}
    first = await client.post(f"{API}/workflows/three-steps/executions", json={},
                              headers=headers)
    again = await client.post(f"{API}/workflows/three-steps/executions", json={},
                              headers=headers)
    assert (first.status, again.status) == (202, 202)
    assert await first.json() == await again.json()
    await problem_of(await client.post(f"{API}/workflows/three-steps/executions", json={}), 429)


async def test_a_refused_submit_spends_no_rate(make_client: MakeClient) -> None:
    """A submit refused after the rate was checked (here a 422: its input names no artifact)
    changes nothing, its subject's bucket neither: the next good submit is taken."""
    client = await make_client(auth=auth_settings(), limits={"submits_per_minute": 1})
    for _ in range(3):
        refused = await _submit(client, "submitter", input={"doc": {"artifact_id": "nope"}})
        body = await problem_of(refused, 422)
        assert body["errors"][0]["loc"] == ["body", "input", "doc", "artifact_id"]
    assert (await _submit(client, "submitter")).status == 202
    await problem_of(await _submit(client, "submitter"), 429)
    assert await _count(client) == 1


def test_token_bucket_refills() -> None:
    """A bucket holds a minute's submits and refills at that rate; Retry-After counts the
    seconds to the next token."""
    now = [0.0]
    rate = SubmitRate(6, clock=lambda: now[0])  # one every 10 s
    for _ in range(6):
        rate.take("ana")
    with pytest.raises(RateLimitedError) as over:
        rate.take("ana")
    assert over.value.retry_after == 10
    now[0] += 4.0
    with pytest.raises(RateLimitedError) as over:
        rate.take("ana")
    assert over.value.retry_after == 6
    now[0] += 6.0
    rate.take("ana")
    rate.give_back("ana")  # a refused submit's token, back: one more may go now
    rate.take("ana")
    with pytest.raises(RateLimitedError):
        rate.take("ana")
    SubmitRate(0).take("ana")  # 0: no limit


@pytest.mark.sqlite_only("a node counts only the executions it holds")
async def test_queued_per_subject(make_client: MakeClient) -> None:
    """Past `max_queued_per_subject` queued executions a subject's submit is 429 and creates
    nothing; running ones do not count, nor do other subjects' queued ones; once one of hers
    leaves the queue she may queue another."""
    client = await make_client(auth=auth_settings(), engine={"max_concurrent": 1},
                               limits={"max_queued_per_subject": 2}, headers=bearer("viewer"))
    first = await _submit(client, "submitter", "waiter", input={"name": "first"})
    assert first.status == 202  # runs: holds the one slot
    await wait_for_step(client, (await first.json())["execution_id"])
    queued = []
    for n in range(2):
        resp = await _submit(client, "submitter", "waiter", input={"name": f"q{n}"})
        assert resp.status == 202
        queued.append((await resp.json())["execution_id"])
    before = await _count(client)
    resp = await _submit(client, "submitter", "waiter", input={"name": "over"})
    body = await problem_of(resp, 429)
    assert "max_queued_per_subject" in body["detail"]
    assert resp.headers["Retry-After"] == "1"
    assert await _count(client) == before
    assert (await _submit(client, "admin", "waiter", input={"name": "other"})).status == 202
    workflows.release("first").set()
    await wait_for_status(client, queued[0], "running")
    assert (await _submit(client, "submitter", "waiter", input={"name": "later"})).status == 202
    for name in ("q0", "q1", "other", "later"):
        workflows.release(name).set()


@pytest.mark.sqlite_only("a node counts only the executions it holds")
async def test_approving_into_her_full_queue_waits(make_client: MakeClient) -> None:
    """An approval queues the execution for its submitter: into her full share it is 429 and
    the execution keeps waiting."""
    client = await make_client(auth=auth_settings(), engine={"max_concurrent": 1},
                               limits={"max_queued_per_subject": 1}, headers=bearer("viewer"))
    first = await _submit(client, "submitter", "waiter", input={"name": "first"})
    await wait_for_step(client, (await first.json())["execution_id"])
    assert (await _submit(client, "submitter", "waiter", input={"name": "q"})).status == 202
    gated = await _submit(client, "submitter", "three-steps", require_approval=True)
    assert gated.status == 201  # waiting for approval is not queued
    execution_id = (await gated.json())["execution_id"]
    resp = await client.post(f"{API}/executions/{execution_id}/approve", json={},
                             headers=bearer("approver"))
    await problem_of(resp, 429)
    assert (await live(client, execution_id))["status"] == "awaiting_approval"
    workflows.release("first").set()
    workflows.release("q").set()


@pytest.mark.parametrize(("depth", "status"), [(64, 202), (65, 422), (5000, 422)])
async def test_json_depth(client: TestClient[Any, Any], depth: int, status: int) -> None:
    """An input nested 64 levels deep is taken; one level more is 422, however deep."""
    body = '{"input": {"deep": ' + "[" * (depth - 2) + "]" * (depth - 2) + "}}"
    resp = await client.post(f"{API}/workflows/three-steps/executions", data=body,
                             headers={"Content-Type": "application/json"})
    if status == 202:
        assert resp.status == 202, await resp.text()
    else:
        problem = await problem_of(resp, 422)
        assert problem["errors"][0]["loc"] == ["body"]


# Every route that reads a JSON body, by the path after the prefix ({id}: an execution awaiting
# approval whose first step is `one`).
BODY_ROUTES = {
    "submit": ("POST", f"{API}/workflows/three-steps/executions"),
    "approve": ("POST", f"{API}/executions/{{id}}/approve"),
    "reject": ("POST", f"{API}/executions/{{id}}/reject"),
    "progress": ("POST", f"{API}/executions/{{id}}/steps/one/progress"),
    "complete": ("POST", f"{API}/executions/{{id}}/steps/one/complete"),
    "define": ("POST", f"{API}/workflows"),
    "replace": ("PUT", f"{API}/workflows/not-defined-yet"),
    "demo-ocr": ("POST", "/demo/ocr"),
}


@pytest.mark.parametrize("depth", [65, 300])
@pytest.mark.parametrize("route", sorted(BODY_ROUTES))
async def test_json_depth_on_every_route_with_a_body(client: TestClient[Any, Any], route: str,
                                                     depth: int) -> None:
    """A body nested deeper than 64 levels is 422 at `body` on every route that reads one,
    those that read it without a model too (not 400 from the parser's recursion limit)."""
    gated = (await submit(client, "three-steps", expect=201, require_approval=True))[
        "execution_id"]
    method, path = BODY_ROUTES[route]
    body = '{"deep": ' + "[" * (depth - 1) + "]" * (depth - 1) + "}"
    resp = await client.request(method, path.replace("{id}", gated), data=body,
                                headers={"Content-Type": "application/json"})
    problem = await problem_of(resp, 422)
    assert problem["errors"][0]["loc"] == ["body"]
    assert (await live(client, gated))["status"] == "awaiting_approval"


async def test_json_depth_ignores_brackets_in_strings(client: TestClient[Any, Any]) -> None:
    """Brackets inside strings (escaped quotes too) are not nesting."""
    text = '\\"' + "[{" * 200
    resp = await client.post(f"{API}/workflows/three-steps/executions",
                             json={"input": {"text": text}})
    assert resp.status == 202, await resp.text()
