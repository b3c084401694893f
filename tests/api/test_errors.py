"""Every error answer is problem JSON with the contract's status, and changes nothing."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from aiohttp import WSServerHandshakeError
from aiohttp.test_utils import TestClient

from tests import workflows
from tests.conftest import MakeClient
from tests.helpers import (
    API,
    all_executions,
    get_json,
    problem_of,
    submit,
    wait_for_status,
)

UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"
# Past what SQLite's signed 64-bit INTEGER holds: such a number must be refused, not sent to SQL.
HUGE = "99999999999999999999"
JUST_OVER = str(2**63)
MANY_DIGITS = "9" * 5000  # past the 4,300 digits int() takes from a string


def _cursor(text: str) -> str:
    """A cursor built the way the server builds its own, around any text."""
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


# Every route with an {id}: (method, path after /executions/{id}).
ID_ROUTES = [
    ("GET", ""),
    ("GET", "/status/live"),
    ("GET", "/steps"),
    ("GET", "/trace"),
    ("GET", "/events"),
    ("GET", "/result"),
    ("GET", "/logs"),
    ("POST", "/approve"),
    ("POST", "/reject"),
    ("POST", "/cancel"),
    ("GET", "/ws"),
    ("GET", "/events/stream"),
    ("POST", "/steps/recorded/progress"),
]


async def _snapshot(client: TestClient[Any, Any]) -> list[tuple[str, str]]:
    return [(e["execution_id"], e["status"]) for e in await all_executions(client)]


async def test_malformed_json_body_is_400(client: TestClient[Any, Any]) -> None:
    """A body that is not JSON is 400 problem JSON, and creates nothing."""
    before = await _snapshot(client)
    path = f"{API}/workflows/three-steps/executions"
    resp = await client.post(path, data=b'{"input": {',
                             headers={"Content-Type": "application/json"})
    body = await problem_of(resp, 400)
    assert body["instance"] == path
    assert await _snapshot(client) == before


async def test_malformed_json_on_approve_is_400(client: TestClient[Any, Any]) -> None:
    """Malformed JSON on a decision route is 400 and leaves the execution waiting."""
    summary = await submit(client, "three-steps", expect=201, require_approval=True)
    execution_id = summary["execution_id"]
    resp = await client.post(f"{API}/executions/{execution_id}/approve", data=b"{nope",
                             headers={"Content-Type": "application/json"})
    await problem_of(resp, 400)
    assert (await get_json(client, f"{API}/executions/{execution_id}"))["status"] == (
        "awaiting_approval")


async def test_unknown_route_is_404(client: TestClient[Any, Any]) -> None:
    """A path no route serves is 404 problem JSON naming the path in `instance`."""
    for path in (f"{API}/nothing-here", "/nothing", f"{API}/executions/x/y/z"):
        resp = await client.get(path)
        body = await problem_of(resp, 404)
        assert body["instance"] == path


async def test_unknown_workflow_is_404(client: TestClient[Any, Any]) -> None:
    """Reading or submitting to an unknown workflow is 404, and submits nothing."""
    before = await _snapshot(client)
    await problem_of(await client.get(f"{API}/workflows/no-such-flow"), 404)
    resp = await client.post(f"{API}/workflows/no-such-flow/executions", json={"input": {}})
    body = await problem_of(resp, 404)
    assert body["instance"] == f"{API}/workflows/no-such-flow/executions"
    assert await _snapshot(client) == before


async def test_unknown_execution_is_404_on_every_id_route(client: TestClient[Any, Any]) -> None:
    """Every `{id}` route answers 404 problem JSON for an id that does not exist."""
    await submit(client, "three-steps")  # something exists, just not this id
    before = len(await all_executions(client))
    for method, suffix in ID_ROUTES:
        path = f"{API}/executions/{UNKNOWN_ID}{suffix}"
        sent = {"percentage": 10} if suffix.endswith("/progress") else {}
        resp = await client.request(method, path, json=sent if method == "POST" else None,
                                    headers={"X-Workflowd-Token": "t"})
        problem = await problem_of(resp, 404)
        assert problem["instance"] == path, (method, suffix)
    assert len(await all_executions(client)) == before


async def test_websocket_to_unknown_execution_is_404_before_upgrade(
        client: TestClient[Any, Any]) -> None:
    """Opening the WebSocket of an unknown execution fails the handshake with 404."""
    with pytest.raises(WSServerHandshakeError) as caught:
        await client.ws_connect(f"{API}/executions/{UNKNOWN_ID}/ws")
    assert caught.value.status == 404


async def test_wrong_method_is_405(client: TestClient[Any, Any]) -> None:
    """A known path with a method it does not take is 405 problem JSON with `Allow`."""
    for method, path in (("DELETE", f"{API}/workflows"), ("PUT", f"{API}/executions"),
                         ("GET", f"{API}/executions/{UNKNOWN_ID}/cancel")):
        resp = await client.request(method, path)
        await problem_of(resp, 405)
        assert resp.headers.get("Allow"), (method, path)


async def test_decisions_on_wrong_status_are_409(client: TestClient[Any, Any]) -> None:
    """approve/reject outside awaiting_approval, cancel of a terminal one, early result: 409."""
    workflows.release("a")
    running = (await submit(client, "waiter", input={"name": "a"}))["execution_id"]
    await wait_for_status(client, running, "running")
    finished = (await submit(client, "three-steps"))["execution_id"]
    await wait_for_status(client, finished, "completed")
    before = await _snapshot(client)

    for execution_id in (running, finished):
        for action, body in (("approve", {"comment": "x"}), ("reject", {"reason": "x"})):
            resp = await client.post(f"{API}/executions/{execution_id}/{action}", json=body)
            await problem_of(resp, 409)
    await problem_of(await client.post(f"{API}/executions/{finished}/cancel"), 409)
    await problem_of(await client.get(f"{API}/executions/{running}/result"), 409)

    assert await _snapshot(client) == before
    finished_doc = await get_json(client, f"{API}/executions/{finished}")
    assert finished_doc["status"] == "completed"
    assert finished_doc["approval"] is None
    workflows.release("a").set()
    await wait_for_status(client, running, "completed")


async def test_reject_twice_is_409(client: TestClient[Any, Any]) -> None:
    """A second decision on an already rejected execution is 409 and keeps the first."""
    execution_id = (await submit(client, "three-steps", expect=201,
                                 require_approval=True))["execution_id"]
    resp = await client.post(f"{API}/executions/{execution_id}/reject", json={"reason": "no"})
    assert resp.status == 200, await resp.text()
    for action in ("approve", "reject", "cancel"):
        await problem_of(await client.post(f"{API}/executions/{execution_id}/{action}"), 409)
    doc = await get_json(client, f"{API}/executions/{execution_id}")
    assert doc["status"] == "rejected"
    assert doc["approval"]["comment"] == "no"


async def test_body_over_max_body_bytes_is_413(make_client: MakeClient) -> None:
    """A body larger than [server] max_body_bytes is 413 problem JSON and submits nothing."""
    client = await make_client(server={"max_body_bytes": 2048})
    path = f"{API}/workflows/three-steps/executions"
    small = await client.post(path, json={"input": {"blob": "x" * 1000}})
    assert small.status == 202, await small.text()
    await wait_for_status(client, (await small.json())["execution_id"], "completed")
    before = await _snapshot(client)
    resp = await client.post(path, json={"input": {"blob": "x" * 4096}})
    body = await problem_of(resp, 413)
    assert body["instance"] == path
    assert await _snapshot(client) == before


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"priority": "high"}, ["body", "priority"]),
        ({"priority": 1.5}, ["body", "priority"]),
        ({"input": [1, 2]}, ["body", "input"]),
        ({"require_approval": "maybe"}, ["body", "require_approval"]),
        # JSON's types as they are: no "yes" for true, no true for 1, no "5" for 5.
        ({"require_approval": "yes"}, ["body", "require_approval"]),
        ({"require_approval": 1}, ["body", "require_approval"]),
        ({"priority": True}, ["body", "priority"]),
        ({"priority": "5"}, ["body", "priority"]),
        ({"labels": {"team": True}}, ["body", "labels", "team"]),
        ({"labels": {"team": 7}}, ["body", "labels", "team"]),
        ({"labels": ["team"]}, ["body", "labels"]),
        ({"input": {}, "colour": "red"}, ["body", "colour"]),
        ([{"input": {}}], ["body"]),
        ("just a string", ["body"]),
    ],
)
async def test_bad_submit_body_is_422(client: TestClient[Any, Any], body: Any,
                                      loc: list[str]) -> None:
    """Wrong types, unknown fields or a non-object body are 422 with `errors` [{loc, msg}]."""
    resp = await client.post(f"{API}/workflows/three-steps/executions", json=body)
    problem = await problem_of(resp, 422)
    errors = problem["errors"]
    assert errors, problem
    for error in errors:
        assert set(error) >= {"loc", "msg"}
        assert isinstance(error["loc"], list)
        assert isinstance(error["msg"], str)
    assert loc in [e["loc"] for e in errors], errors
    assert await all_executions(client) == []


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        (b'{"input": {"a": "x\\u0000y"}}', ["body", "input", "a"]),
        (b'{"input": {"k\\u0000": 1}}', ["body", "input", "k\x00"]),
        (b'{"labels": {"team": "\\u0000"}}', ["body", "labels", "team"]),
    ],
)
async def test_u0000_in_a_body_is_422(client: TestClient[Any, Any], body: bytes,
                                      loc: list[str]) -> None:
    """No text kept here may hold U+0000 (PostgreSQL cannot store it): 422 at its place,
    nothing changed; a text's own backslash before "u0000" is not one."""
    path = f"{API}/workflows/three-steps/executions"
    headers = {"Content-Type": "application/json"}
    problem = await problem_of(await client.post(path, data=body, headers=headers), 422)
    assert loc in [e["loc"] for e in problem["errors"]], problem
    assert await all_executions(client) == []
    resp = await client.post(path, data=b'{"input": {"a": "\\\\u0000"}}', headers=headers)
    assert resp.status == 202, await resp.text()


@pytest.mark.parametrize("path", ["/executions/a%00b", "/executions?workflow_id=%00",
                                  "/executions?label=team:%00", "/artifacts?name=a%00b"])
async def test_nul_in_the_path_or_query_is_400(client: TestClient[Any, Any], path: str) -> None:
    method = "POST" if path.startswith("/artifacts") else "GET"
    problem = await problem_of(await client.request(method, API + path), 400)
    assert "NUL" in problem["detail"]


async def test_validation_detail_is_the_first_error_and_a_count(
        client: TestClient[Any, Any]) -> None:
    """Every 422's `detail` has one shape, whatever found the error (the model, the cursor's
    check): the first error's place and message, and how many more there are."""
    resp = await client.post(f"{API}/workflows/three-steps/executions",
                             json={"priority": "high", "labels": ["team"]})
    problem = await problem_of(resp, 422)
    first, *rest = problem["errors"]
    assert rest, problem
    assert problem["detail"] == (f"{'.'.join(map(str, first['loc']))}: {first['msg']} "
                                 f"(and {len(rest)} more)")
    problem = await problem_of(await client.get(f"{API}/executions?cursor=x"), 422)
    assert problem["errors"] == [{"loc": ["query", "cursor"],
                                  "msg": "not a cursor this server gave out"}]
    assert problem["detail"] == "query.cursor: not a cursor this server gave out"


async def test_bad_decision_body_is_422(client: TestClient[Any, Any]) -> None:
    """approve/reject bodies with wrong types or unknown fields are 422 and decide nothing."""
    execution_id = (await submit(client, "three-steps", expect=201,
                                 require_approval=True))["execution_id"]
    for action, body in (("approve", {"comment": 5}), ("approve", {"by": "me"}),
                         ("reject", {"reason": ["no"]}), ("reject", [])):
        resp = await client.post(f"{API}/executions/{execution_id}/{action}", json=body)
        problem = await problem_of(resp, 422)
        assert problem["errors"][0]["loc"][0] == "body"
    doc = await get_json(client, f"{API}/executions/{execution_id}")
    assert doc["status"] == "awaiting_approval"
    assert doc["approval"]["status"] == "pending"


@pytest.mark.parametrize(
    ("method", "path", "param"),
    [
        ("GET", "/executions?limit=501", "limit"),
        ("GET", "/executions?limit=0", "limit"),
        ("GET", "/executions?limit=ten", "limit"),
        ("GET", "/executions?created_after=yesterday", "created_after"),
        ("GET", "/executions?created_before=2026-02-30T00:00:00Z", "created_before"),
        ("GET", "/executions?created_after=2026-02-09T14:10:00", "created_after"),
        ("GET", "/executions?cursor=not-a-cursor", "cursor"),
        ("GET", "/executions?status=sleeping", "status"),
        ("GET", "/executions?label=nocolon", "label"),
        ("POST", "/workflows/three-steps/executions?wait=301", "wait"),
        ("POST", "/workflows/three-steps/executions?wait=-1", "wait"),
        ("GET", "/executions/{id}/status/live?wait=301", "wait"),
        ("GET", "/executions/{id}/status/live?since=-1", "since"),
        ("GET", "/executions/{id}/status/live?since=abc", "since"),
        ("GET", "/executions/{id}/events?after=-1", "after"),
        ("GET", "/executions/{id}/events?limit=many", "limit"),
        ("GET", "/executions/{id}/logs?after=x", "after"),
        # Numbers past SQLite's INTEGER, timestamps whose UTC instant falls outside years
        # 1..9999, and cursors the server never gave out: all refused before SQL or datetime
        # arithmetic sees them.
        ("GET", f"/executions/{{id}}/events?after={HUGE}", "after"),
        ("GET", f"/executions/{{id}}/events?after={JUST_OVER}", "after"),
        ("GET", f"/executions/{{id}}/logs?after={HUGE}", "after"),
        pytest.param("GET", f"/executions/{{id}}/events?after={MANY_DIGITS}", "after",
                     id="events-after-5000-digits"),
        ("GET", f"/executions/{{id}}/status/live?since={HUGE}", "since"),
        ("GET", f"/executions/{{id}}/events/stream?after={HUGE}", "after"),
        ("GET", f"/executions/{{id}}/ws?after={HUGE}", "after"),
        ("GET", f"/executions?cursor={_cursor('n' + HUGE)}", "cursor"),
        ("GET", f"/executions?cursor={_cursor('n' + JUST_OVER)}", "cursor"),
        pytest.param("GET", f"/executions?cursor={_cursor('n' + MANY_DIGITS)}", "cursor",
                     id="cursor-5000-digits"),
        ("GET", f"/executions?cursor={_cursor('n-5')}", "cursor"),
        ("GET", f"/executions?cursor={_cursor('n0')}", "cursor"),
        ("GET", f"/executions?cursor={_cursor('n²')}", "cursor"),
        ("GET", "/executions?created_after=0001-01-01T00:00:00%2B01:00", "created_after"),
        ("GET", "/executions?created_before=0001-01-01T00:00:00%2B01:00", "created_before"),
        ("GET", "/executions?created_after=9999-12-31T23:59:59-01:00", "created_after"),
        ("GET", "/executions?created_before=9999-12-31T23:59:59-01:00", "created_before"),
        # Every other query parameter of every route, at and past its edges.
        ("GET", "/executions?limit=-1", "limit"),
        ("GET", "/executions?limit=1.5", "limit"),
        ("GET", "/executions?created_after=", "created_after"),
        ("GET", "/executions?label=:x", "label"),
        ("GET", "/executions?label=te%22am:x", "label"),
        ("GET", "/executions?label=te%20am:x", "label"),
        ("POST", "/workflows/three-steps/executions?wait=nan", "wait"),
        ("POST", "/workflows/three-steps/executions?wait=inf", "wait"),
        ("POST", "/workflows/three-steps/executions?wait=-inf", "wait"),
        ("POST", "/workflows/three-steps/executions?wait=soon", "wait"),
        ("GET", "/executions/{id}/status/live?since=1&wait=nan", "wait"),
        ("GET", "/executions/{id}/status/live?since=1&wait=inf", "wait"),
        ("GET", "/executions/{id}/status/live?wait=-0.5", "wait"),
        ("GET", "/executions/{id}/status/live?since=1.5", "since"),
        ("GET", "/executions/{id}/events?after=", "after"),
        ("GET", "/executions/{id}/events?limit=0", "limit"),
        ("GET", "/executions/{id}/events?limit=501", "limit"),
        ("GET", "/executions/{id}/logs?limit=0", "limit"),
        ("GET", "/executions/{id}/logs?limit=501", "limit"),
        ("GET", "/executions/{id}/logs?after=-1", "after"),
        ("GET", "/executions/{id}/events/stream?after=-1", "after"),
        ("GET", "/executions/{id}/events/stream?after=x", "after"),
        ("GET", "/executions/{id}/ws?after=-1", "after"),
    ],
)
async def test_bad_query_params_are_422(client: TestClient[Any, Any], method: str, path: str,
                                        param: str) -> None:
    """Out-of-range or malformed query parameters are 422 naming the parameter."""
    execution_id = (await submit(client, "three-steps"))["execution_id"]
    await wait_for_status(client, execution_id, "completed")
    before = await _snapshot(client)
    resp = await client.request(method, API + path.replace("{id}", execution_id), json={})
    problem = await problem_of(resp, 422)
    assert ["query", param] in [e["loc"][:2] for e in problem["errors"]], problem
    assert await _snapshot(client) == before


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"percentage": 101}', "percentage"),
        (b'{"percentage": -1}', "percentage"),
        (b'{"percentage": 1e400}', "percentage"),
        (b'{"percentage": 10, "estimated_remaining_seconds": -1}', "estimated_remaining_seconds"),
        # 1e400 parses as infinity, which an event could not carry as JSON.
        (b'{"percentage": 10, "estimated_remaining_seconds": 1e400}',
         "estimated_remaining_seconds"),
    ],
)
async def test_bad_progress_body_is_422(client: TestClient[Any, Any], body: bytes,
                                        field: str) -> None:
    """Progress reports out of range, or infinite, are 422 naming the field."""
    gated = (await submit(client, "three-steps", expect=201, require_approval=True))[
        "execution_id"]
    resp = await client.post(f"{API}/executions/{gated}/steps/one/progress", data=body,
                             headers={"Content-Type": "application/json"})
    problem = await problem_of(resp, 422)
    assert ["body", field] in [e["loc"] for e in problem["errors"]], problem


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"\xff\xfe{}", id="not-utf8"),
        pytest.param(b'{"comment": "\xff"}', id="not-utf8-in-a-string"),
        pytest.param(b"comment=ok", id="form"),
        pytest.param(b"{", id="truncated"),
        pytest.param(b'{"a": 1} {"b": 2}', id="two-documents"),
        pytest.param(b'{"input": {"x": NaN}}', id="nan"),
        pytest.param(b'{"percentage": Infinity}', id="infinity"),
        pytest.param(b'{"comment": -Infinity}', id="minus-infinity"),
    ],
)
@pytest.mark.parametrize("route", ["submit", "approve", "reject", "progress", "complete"])
async def test_body_not_utf8_or_not_json_is_400(client: TestClient[Any, Any], route: str,
                                                 body: bytes) -> None:
    """A body that is not UTF-8 JSON (NaN and Infinity are not JSON) is 400 on every route
    that reads one, and changes nothing."""
    gated = (await submit(client, "three-steps", expect=201, require_approval=True))[
        "execution_id"]
    before = await _snapshot(client)
    path = {"submit": "/workflows/three-steps/executions",
            "approve": f"/executions/{gated}/approve", "reject": f"/executions/{gated}/reject",
            "progress": f"/executions/{gated}/steps/one/progress",
            "complete": f"/executions/{gated}/steps/one/complete"}[route]
    resp = await client.post(API + path, data=body, headers={"Content-Type": "application/json"})
    await problem_of(resp, 400)
    assert await _snapshot(client) == before


@pytest.mark.parametrize(
    ("route", "body", "loc"),
    [
        ("submit", b'{"input": {"x": 1e400}}', ["body", "input", "x"]),
        ("submit", b'{"input": {"x": [1, -1E+400]}}', ["body", "input", "x", 1]),
        ("submit", b'{"input": {"x": 1' + b"0" * 400 + b'.5}}', ["body", "input", "x"]),
        ("submit", b'{"input": {"x": 0.5e0400}}', ["body", "input", "x"]),
        ("progress", b'{"percentage": 1, "custom_data": {"x": 1e999}}',
         ["body", "custom_data", "x"]),
        ("complete", b'{"success": true, "output": {"x": 1e400}}', ["body", "output", "x"]),
        ("define", b'{"id": "n", "steps": [{"name": "s", "type": "sleep", "seconds": 1e400}]}',
         ["body", "steps", 0, "seconds"]),
    ],
)
async def test_number_past_a_float_is_422(client: TestClient[Any, Any], route: str, body: bytes,
                                          loc: list[Any]) -> None:
    """A number too large for a float (1e400 reads as infinity, which JSON cannot carry and
    which was stored as null) is 422 at its place on every route, and changes nothing."""
    gated = (await submit(client, "three-steps", expect=201, require_approval=True))[
        "execution_id"]
    before = await _snapshot(client)
    path = {"submit": "/workflows/three-steps/executions",
            "progress": f"/executions/{gated}/steps/one/progress",
            "complete": f"/executions/{gated}/steps/one/complete",
            "define": "/workflows"}[route]
    resp = await client.post(API + path, data=body, headers={"Content-Type": "application/json"})
    problem = await problem_of(resp, 422)
    assert loc in [e["loc"] for e in problem["errors"]], problem
    assert await _snapshot(client) == before
    await problem_of(await client.get(f"{API}/workflows/n"), 404)


async def test_large_and_tiny_finite_numbers_are_kept(client: TestClient[Any, Any]) -> None:
    """Numbers a float holds, one that rounds to zero, a 400-digit integer and text that looks
    like a huge number are taken as they are."""
    body = (b'{"input": {"big": 1.5e308, "tiny": 1e-400, "int": 1' + b"0" * 400
            + b', "text": "9e999"}}')
    resp = await client.post(f"{API}/workflows/three-steps/executions", data=body,
                             headers={"Content-Type": "application/json"})
    assert resp.status == 202, await resp.text()
    doc = await get_json(client, f"{API}/executions/{(await resp.json())['execution_id']}")
    assert doc["input"] == {"big": 1.5e308, "tiny": 0.0, "int": 10**400, "text": "9e999"}


@pytest.mark.parametrize("last_event_id", ["abc", "-1", "1.5", "²", "\u0661", HUGE, JUST_OVER,
                                           pytest.param(MANY_DIGITS, id="5000-digits")])
async def test_bad_last_event_id_is_400(client: TestClient[Any, Any], last_event_id: str) -> None:
    """A Last-Event-ID that is not an ASCII seq SQLite can hold is a 400 problem, not a 500."""
    execution_id = (await submit(client, "three-steps"))["execution_id"]
    await wait_for_status(client, execution_id, "completed")
    resp = await client.get(f"{API}/executions/{execution_id}/events/stream",
                            headers={"Last-Event-ID": last_event_id})
    body = await problem_of(resp, 400)
    assert "Last-Event-ID" in body["detail"]


async def test_queue_full_is_429_with_retry_after(make_client: MakeClient) -> None:
    """With max_queued executions queued a submit is 429 with Retry-After and creates nothing;
    running and waiting ones do not count, and approving into a full queue is 429 too."""
    client = await make_client(engine={"max_concurrent": 1, "max_queued": 2})
    for name in "abc":
        workflows.release(name)
    running = (await submit(client, "waiter", input={"name": "a"}))["execution_id"]
    await wait_for_status(client, running, "running")
    queued = [(await submit(client, "waiter", input={"name": n}))["execution_id"] for n in "bc"]
    gated = (await submit(client, "three-steps", expect=201,
                          require_approval=True))["execution_id"]
    before = await _snapshot(client)

    path = f"{API}/workflows/waiter/executions"
    resp = await client.post(path, json={"input": {"name": "d"}})
    problem = await problem_of(resp, 429)
    assert problem["instance"] == path
    assert int(resp.headers["Retry-After"]) >= 0
    assert await _snapshot(client) == before

    resp = await client.post(f"{API}/executions/{gated}/approve", json={})
    await problem_of(resp, 429)
    assert "Retry-After" in resp.headers
    assert (await get_json(client, f"{API}/executions/{gated}"))["status"] == "awaiting_approval"

    workflows.release("a").set()
    await wait_for_status(client, queued[0], "running")
    resp = await client.post(f"{API}/executions/{gated}/approve", json={})
    assert resp.status == 202, await resp.text()
    for name in "bc":
        workflows.release(name).set()
    for execution_id in [*queued, gated]:
        await wait_for_status(client, execution_id, "completed")


async def test_problem_type_and_title_are_stable(client: TestClient[Any, Any]) -> None:
    """Problems of one kind share `type` and `title`; different kinds differ."""
    first = await problem_of(await client.get(f"{API}/executions/{UNKNOWN_ID}"), 404)
    second = await problem_of(await client.get(f"{API}/executions/{UNKNOWN_ID}/steps"), 404)
    other = await problem_of(await client.get(f"{API}/executions?limit=501"), 422)
    assert (first["type"], first["title"]) == (second["type"], second["title"])
    assert first["type"] != other["type"]
