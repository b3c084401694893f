"""Workflows as data over HTTP (API.md §11): define, validate, run every step type, version,
delete; and versions of Python workflows across a deploy."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

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
    wait_for_status,
    wait_for_step_event,
)
from workflowd.api.keys import STORE

Client = TestClient[Any, Any]
TERMINAL = ("completed", "failed", "cancelled", "timed_out", "rejected")


async def define(client: Client, body: dict[str, Any], expect: int = 201) -> dict[str, Any]:
    resp = await client.post(f"{API}/workflows", json=body)
    assert resp.status == expect, await resp.text()
    data: dict[str, Any] = await resp.json(content_type=None)
    return data


async def run(client: Client, workflow: str, **body: Any) -> tuple[str, dict[str, Any]]:
    """Submit and wait until it ends; answer the id and `/result`."""
    execution_id = (await submit(client, workflow, **body))["execution_id"]
    await wait_for_status(client, execution_id, *TERMINAL)
    result: dict[str, Any] = await get_json(client, f"{API}/executions/{execution_id}/result")
    return execution_id, result


async def errors_of(client: Client, body: Any, *, method: str = "POST",
                    path: str = f"{API}/workflows") -> list[dict[str, Any]]:
    resp = await client.request(method, path, json=body)
    problem = await problem_of(resp, 422)
    errors: list[dict[str, Any]] = problem["errors"]
    return errors


# ---- defining, listing --------------------------------------------------------------------


async def test_define_list_get_and_submit(client: Client) -> None:
    """201 with version 1 and Location; listed beside Python ones; submitted like them."""
    body = {"id": "calc", "title": "Calc", "steps": [
        {"name": "inc", "type": "call", "function": "add_one"},
        {"name": "end", "type": "call", "function": "finish-with", "agent": "Closer"}]}
    resp = await client.post(f"{API}/workflows", json=body)
    assert resp.status == 201
    assert resp.headers["Location"] == f"{API}/workflows/calc"
    stored = await resp.json()
    assert (stored["id"], stored["version"], stored["source"]) == ("calc", 1, "json")
    assert [(s["name"], s["type"], s["kind"], s["agent"]) for s in stored["steps"]] == [
        ("inc", "call", "data_processing", None), ("end", "call", "data_processing", "Closer")]
    listed = await get_json(client, f"{API}/workflows")
    sources = {item["id"]: item["source"] for item in listed["items"]}
    assert sources["calc"] == "json"
    assert sources["audit-plan"] == "python"
    one = await get_json(client, f"{API}/workflows/calc")
    assert one["version"] == 1
    execution_id, result = await run(client, "calc", input={"n": 41})
    assert result == {"status": "completed", "result": {"n": 42, "answer": None},
                      "error": None}
    execution = await get_json(client, f"{API}/executions/{execution_id}")
    assert execution["workflow_version"] == 1
    trace = await get_json(client, f"{API}/executions/{execution_id}/trace")
    assert trace["execution_path"] == ["inc", "Closer"]
    assert trace["total_steps"] == 2


async def test_a_json_workflow_runs_like_the_python_one(client: Client) -> None:
    """The same steps as `three-steps` defined as JSON: the same events, steps and live
    status, field for field but for ids and times."""
    body = {"id": "three-json", "steps": [
        {"name": "one", "type": "call", "function": "add_one"},
        {"name": "two", "type": "call", "function": "add_one"},
        {"name": "three_", "type": "call", "function": "add_one"}]}
    await define(client, body)
    python_id, _ = await run(client, "three-steps")
    json_id, result = await run(client, "three-json", input={"n": 0})
    assert result["result"] == {"n": 3}

    def shape(items: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        return [(e["seq"], e["type"], e.get("step"), e.get("cycle"), e.get("status"))
                for e in items]

    assert shape(await events(client, json_id)) == shape(await events(client, python_id))
    keys = ("name", "kind", "status", "cycle", "attempt", "agent_name", "tool_name")
    python_steps = (await get_json(client, f"{API}/executions/{python_id}/steps"))["items"]
    json_steps = (await get_json(client, f"{API}/executions/{json_id}/steps"))["items"]
    assert [[s[k] for k in keys] for s in json_steps] == [[s[k] for k in keys]
                                                          for s in python_steps]
    ignore = {"execution_id", "workflow_id", "last_update"}
    python_live = await get_json(client, f"{API}/executions/{python_id}/status/live")
    json_live = await get_json(client, f"{API}/executions/{json_id}/status/live")
    assert {k: v for k, v in json_live.items() if k not in ignore} == \
        {k: v for k, v in python_live.items() if k not in ignore}


# ---- every step type -----------------------------------------------------------------------


@pytest.fixture
async def service() -> AsyncIterator[tuple[str, list[dict[str, Any]]]]:
    """A local HTTP service on 127.0.0.1 that `http` steps call: it echoes what it got, and
    answers /fail with 503 the first `fails` times."""
    seen: list[dict[str, Any]] = []
    fails = {"left": 1}

    async def echo(request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else None
        seen.append({"method": request.method, "path": request.path, "body": body,
                     "headers": dict(request.headers)})
        return web.json_response({"got": body, "path": request.path})

    async def fail(request: web.Request) -> web.Response:
        seen.append({"method": request.method, "path": request.path})
        if fails["left"] > 0:
            fails["left"] -= 1
            return web.json_response({"error": "busy"}, status=503)
        return web.json_response({"ok": True})

    async def always_fail(request: web.Request) -> web.Response:
        return web.Response(status=404, text="nope")

    app = web.Application()
    app.router.add_route("*", "/echo", echo)
    app.router.add_get("/fail", fail)
    app.router.add_get("/missing", always_fail)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield f"http://127.0.0.1:{server.port}", seen
    finally:
        await server.close()


async def test_http_step_sends_its_template_and_keeps_the_answer(
        client: Client, service: tuple[str, list[dict[str, Any]]]) -> None:
    """The JSON template is rendered over input and state; the JSON answer lands in
    `state[name]` and is the step's output."""
    base, seen = service
    await define(client, {"id": "caller", "steps": [
        {"name": "inc", "type": "call", "function": "add_one"},
        {"name": "ask", "type": "http", "method": "POST", "url": f"{base}/echo",
         "headers": {"X-Who": {"$ref": "/input/who"}},
         "json": {"n": {"$ref": "/state/n"}, "who": "{{ /input/who }}", "fixed": [1, "two"],
                  "missing": {"$ref": "/state/none"}}},
        {"name": "end", "type": "call", "function": "finish-with"}]})
    execution_id, result = await run(client, "caller", input={"n": 1, "who": "ada"})
    assert result["status"] == "completed", result
    sent = {"n": 2, "who": "ada", "fixed": [1, "two"], "missing": None}
    assert result["result"] == {"n": 2, "answer": {"got": sent, "path": "/echo"}}
    assert seen[0]["headers"]["X-Who"] == "ada"
    assert seen[0]["headers"]["Idempotency-Key"] == f"{execution_id}:2"
    steps = (await get_json(client, f"{API}/executions/{execution_id}/steps"))["items"]
    assert steps[1]["output"] == {"got": sent, "path": "/echo"}
    assert (steps[1]["kind"], steps[1]["name"]) == ("tool_call", "ask")


async def test_http_step_non_2xx_fails_the_attempt_and_retries(
        client: Client, service: tuple[str, list[dict[str, Any]]]) -> None:
    """503 once then 200: one retry and success; 404 each time: failed after its retries."""
    base, _ = service
    await define(client, {"id": "retrier", "steps": [
        {"name": "get", "type": "http", "method": "GET", "url": f"{base}/fail", "retries": 2,
         "backoff": 0.01}]})
    execution_id, result = await run(client, "retrier")
    assert result["status"] == "completed"
    assert result["result"] == {"get": {"ok": True}}
    retrying = [e for e in await events(client, execution_id) if e["type"] == "step_retrying"]
    assert len(retrying) == 1
    assert "503" in retrying[0]["error"]

    await define(client, {"id": "lost", "steps": [
        {"name": "get", "type": "http", "method": "GET", "url": f"{base}/missing",
         "retries": 1, "backoff": 0.01}]})
    _, result = await run(client, "lost")
    assert result["status"] == "failed"
    assert result["error"]["code"] == "step_failed"
    assert "answered 404" in result["error"]["message"]


async def test_http_step_refuses_a_metadata_address_given_at_run_time(client: Client) -> None:
    """A url from the input pointing at a metadata address fails the step, never called."""
    await define(client, {"id": "fetcher", "steps": [
        {"name": "get", "type": "http", "method": "GET", "url": "{{ /input/url }}"}]})
    _, result = await run(client, "fetcher",
                          input={"url": "http://169.254.169.254/latest/meta-data/"})
    assert result["status"] == "failed"
    assert "refused" in result["error"]["message"]


async def test_approval_sleep_and_external_steps(client: Client) -> None:
    """A gate waits for approve; a sleep holds no task; an external step waits for its worker."""
    await define(client, {"id": "mixed", "steps": [
        {"name": "ok", "type": "approval", "prompt": "Go?"},
        {"name": "rest", "type": "sleep", "seconds": 0.1},
        {"name": "work", "type": "external", "timeout": 30},
        {"name": "end", "type": "call", "function": "finish-with"}]})
    execution_id = (await submit(client, "mixed"))["execution_id"]
    status = await wait_for_status(client, execution_id, "awaiting_approval")
    assert status["current_step"]["kind"] == "approval"
    resp = await client.post(f"{API}/executions/{execution_id}/approve", json={})
    assert resp.status == 202
    started = await wait_for_step_event(client, execution_id, "step_started", "work")
    token = started["callback"]["token"]
    resp = await client.post(f"{API}/executions/{execution_id}/steps/work/complete",
                             json={"success": True, "output": {"pages": 3}},
                             headers={"X-Workflowd-Token": token})
    assert resp.status == 202, await resp.text()
    await wait_for_status(client, execution_id, "completed")
    steps = (await get_json(client, f"{API}/executions/{execution_id}/steps"))["items"]
    assert [(s["name"], s["kind"], s["status"]) for s in steps] == [
        ("ok", "approval", "completed"), ("rest", "data_processing", "completed"),
        ("work", "tool_call", "completed"), ("end", "data_processing", "completed")]
    execution = await get_json(client, f"{API}/executions/{execution_id}")
    assert execution["state"]["work"] == {"pages": 3}


BRANCHES: list[tuple[str, dict[str, Any], str]] = [
    ("==", {"==": [{"$ref": "/input/n"}, 5]}, "yes"),
    ("!=", {"!=": [{"$ref": "/input/n"}, 5]}, "no"),
    ("<", {"<": [{"$ref": "/input/n"}, 10]}, "yes"),
    ("<=", {"<=": [{"$ref": "/input/n"}, 4]}, "no"),
    (">", {">": [{"$ref": "/input/n"}, 1]}, "yes"),
    (">=", {">=": [{"$ref": "/state/n"}, 6]}, "yes"),
    ("in", {"in": [{"$ref": "/input/color"}, ["red", "blue"]]}, "yes"),
    ("all", {"all": [{"==": [{"$ref": "/input/color"}, "red"]}, {">": [{"$ref": "/input/n"}, 9]}]},
     "no"),
    ("any", {"any": [{"==": [{"$ref": "/input/color"}, "green"]},
                     {"==": [{"$ref": "/input/n"}, 5]}]}, "yes"),
    ("not", {"not": {"in": [{"$ref": "/input/color"}, ["red"]]}}, "no"),
]


@pytest.mark.parametrize(("op", "when", "expected"), BRANCHES, ids=[b[0] for b in BRANCHES])
async def test_a_branch_per_operator(client: Client, op: str, when: dict[str, Any],
                                     expected: str) -> None:
    """The first case that holds is taken, else the default; the choice is a branch decision
    named after the branch step, its outcome the target step's name."""
    workflow_id = f"branch-{'x'.join(str(ord(c)) for c in op)}"
    await define(client, {"id": workflow_id, "steps": [
        {"name": "inc", "type": "call", "function": "add_one"},
        {"name": "route", "type": "branch", "cases": [{"when": when, "goto": "yes"}],
         "default": "no"},
        {"name": "yes", "type": "call", "function": "finish-with"},
        {"name": "no", "type": "call", "function": "finish-with"}]})
    execution_id, result = await run(client, workflow_id, input={"n": 5, "color": "red"})
    assert result["status"] == "completed", result
    trace = await get_json(client, f"{API}/executions/{execution_id}/trace")
    assert trace["branch_decisions"]["route"]["outcome"] == expected
    assert trace["execution_path"] == ["inc", "route", expected]
    decided = [e for e in await events(client, execution_id) if e["type"] == "branch_decided"]
    assert [(e["name"], e["outcome"]) for e in decided] == [("route", expected)]


async def test_a_branch_without_default_goes_on_to_the_next_step(client: Client) -> None:
    """No case holds and no default: the next declared step."""
    await define(client, {"id": "fallthrough", "steps": [
        {"name": "route", "type": "branch", "cases": [
            {"when": {"==": [{"$ref": "/input/x"}, 1]}, "goto": "end"}]},
        {"name": "middle", "type": "call", "function": "add_one"},
        {"name": "end", "type": "call", "function": "finish-with"}]})
    execution_id, result = await run(client, "fallthrough", input={"n": 0})
    assert result["result"] == {"n": 1, "answer": None}
    trace = await get_json(client, f"{API}/executions/{execution_id}/trace")
    assert trace["branch_decisions"]["route"]["outcome"] == "middle"


# ---- validation ----------------------------------------------------------------------------


async def test_malformed_json_is_400(client: Client) -> None:
    """Not JSON at all: 400, as for every body."""
    resp = await client.post(f"{API}/workflows", data=b"{not json",
                             headers={"Content-Type": "application/json"})
    await problem_of(resp, 400)


STEP = {"name": "s", "type": "call", "function": "add_one"}
INVALID: list[tuple[str, Any, list[Any]]] = [
    ("not an object", [1, 2], ["body"]),
    ("no steps", {"id": "w", "steps": []}, ["body", "steps"]),
    ("no id", {"steps": [STEP]}, ["body", "id"]),
    ("bad id", {"id": "a b", "steps": [STEP]}, ["body", "id"]),
    ("unknown field", {"id": "w", "steps": [STEP], "color": 1}, ["body", "color"]),
    ("unknown type", {"id": "w", "steps": [{"name": "s", "type": "magic"}]},
     ["body", "steps", 0, "type"]),
    ("no type", {"id": "w", "steps": [{"name": "s"}]}, ["body", "steps", 0, "type"]),
    ("a field of a type", {"id": "w", "steps": [{"name": "s", "type": "sleep", "seconds": -1}]},
     ["body", "steps", 0, "seconds"]),
    ("field not of that type", {"id": "w", "steps": [{"name": "s", "type": "sleep",
                                                      "seconds": 1, "url": "x"}]},
     ["body", "steps", 0, "url"]),
    ("bad step name", {"id": "w", "steps": [{"name": "a/b", "type": "sleep", "seconds": 1}]},
     ["body", "steps", 0, "name"]),
    ("duplicate name", {"id": "w", "steps": [STEP, STEP]}, ["body", "steps", 1, "name"]),
    ("unknown goto", {"id": "w", "steps": [
        {"name": "b", "type": "branch", "cases": [{"when": {"==": [1, 1]}, "goto": "x"}]}]},
     ["body", "steps", 0, "cases", 0, "goto"]),
    ("unknown default", {"id": "w", "steps": [{"name": "b", "type": "branch", "default": "x"}]},
     ["body", "steps", 0, "default"]),
    ("bad condition", {"id": "w", "steps": [STEP, STEP | {"name": "t"}, {
        "name": "b", "type": "branch", "cases": [{"when": {"~=": [1, 1]}, "goto": "s"}]}]},
     ["body", "steps", 2, "cases", 0, "when"]),
    ("bad nested condition", {"id": "w", "steps": [{
        "name": "b", "type": "branch", "cases": [
            {"when": {"all": [{"==": [1, 1]}, {"<": [1]}]}, "goto": "b"}]}]},
     ["body", "steps", 0, "cases", 0, "when", "all", 1, "<"]),
    ("pointer outside", {"id": "w", "steps": [{
        "name": "b", "type": "branch", "cases": [
            {"when": {"==": [{"$ref": "/env/HOME"}, 1]}, "goto": "b"}]}]},
     ["body", "steps", 0, "cases", 0, "when", "==", 0, "$ref"]),
    ("template pointer outside", {"id": "w", "steps": [{
        "name": "h", "type": "http", "url": "http://127.0.0.1:1/x",
        "json": {"a": {"$ref": "/secrets/key"}}}]}, ["body", "steps", 0, "json", "a", "$ref"]),
    ("template braces inside", {"id": "w", "steps": [{
        "name": "h", "type": "http", "url": "http://127.0.0.1:1/x",
        "json": {"a": "id={{ /input/id }}"}}]}, ["body", "steps", 0, "json", "a"]),
    ("url template outside", {"id": "w", "steps": [{
        "name": "h", "type": "http", "url": "{{ /config/url }}"}]}, ["body", "steps", 0, "url"]),
    ("metadata url", {"id": "w", "steps": [{
        "name": "h", "type": "http", "url": "http://169.254.169.254/latest"}]},
     ["body", "steps", 0, "url"]),
    ("not http", {"id": "w", "steps": [{"name": "h", "type": "http", "url": "file:///etc"}]},
     ["body", "steps", 0, "url"]),
    ("external metadata url", {"id": "w", "steps": [{
        "name": "e", "type": "external", "url": "http://[fe80::1]/work"}]},
     ["body", "steps", 0, "url"]),
    ("bad header", {"id": "w", "steps": [{
        "name": "h", "type": "http", "url": "http://127.0.0.1:1/", "headers": {"a b": "x"}}]},
     ["body", "steps", 0, "headers", "a b"]),
    ("unknown function", {"id": "w", "steps": [{"name": "c", "type": "call",
                                                "function": "nowhere"}]},
     ["body", "steps", 0, "function"]),
    ("bad method", {"id": "w", "steps": [{"name": "h", "type": "http", "url": "http://a/",
                                          "method": "TRACE"}]}, ["body", "steps", 0, "method"]),
]


@pytest.mark.parametrize(("case", "body", "loc"), INVALID, ids=[c[0] for c in INVALID])
async def test_every_validation_error_points_into_the_definition(
        client: Client, case: str, body: Any, loc: list[Any]) -> None:
    """422 with an error whose `loc` is the place in the definition; nothing stored."""
    errors = await errors_of(client, body)
    assert loc in [e["loc"] for e in errors], errors
    listed = await get_json(client, f"{API}/workflows")
    assert all(item["source"] == "python" for item in listed["items"])


async def test_every_problem_is_reported_at_once(client: Client) -> None:
    """A definition with several problems gets them all in one answer."""
    errors = await errors_of(client, {"id": "w", "steps": [
        {"name": "a", "type": "branch", "default": "x",
         "cases": [{"when": {"?": 1}, "goto": "y"}]},
        {"name": "a", "type": "call", "function": "nowhere"}]})
    assert {tuple(e["loc"]) for e in errors} == {
        ("body", "steps", 1, "name"), ("body", "steps", 0, "default"),
        ("body", "steps", 0, "cases", 0, "when"), ("body", "steps", 0, "cases", 0, "goto"),
        ("body", "steps", 1, "function")}


async def test_a_condition_nested_too_deep_is_422(client: Client) -> None:
    """The evaluator's depth bound is checked when the definition is stored."""
    condition: Any = {"==": [1, 1]}
    for _ in range(20):
        condition = {"not": condition}
    errors = await errors_of(client, {"id": "deep", "steps": [
        {"name": "b", "type": "branch", "cases": [{"when": condition, "goto": "b"}]}]})
    assert any("nest" in e["msg"] for e in errors)


# ---- versions, conflicts, deletion ----------------------------------------------------------


def _gated(version_tag: str, *, extra: bool = False) -> dict[str, Any]:
    steps: list[dict[str, Any]] = [
        {"name": "inc", "type": "call", "function": "add_one"},
        {"name": "check", "type": "approval", "prompt": f"v{version_tag}?"},
        {"name": "end", "type": "call", "function": "finish-with"}]
    if extra:
        steps.insert(2, {"name": "more", "type": "call", "function": "add_one"})
    return {"id": "versioned", "title": f"Versioned {version_tag}", "steps": steps}


async def test_an_execution_on_v1_finishes_on_v1_after_v2(make_client: MakeClient) -> None:
    """v1 waiting at its gate; v2 stored (one more step); approve: it ends as v1 would. A new
    submit runs v2. After a restart the v1 execution still runs on v1."""
    client = await make_client()
    await define(client, _gated("1"))
    first = (await submit(client, "versioned", input={"n": 0}))["execution_id"]
    second = (await submit(client, "versioned", input={"n": 0}))["execution_id"]
    await wait_for_status(client, first, "awaiting_approval")
    await wait_for_status(client, second, "awaiting_approval")
    resp = await client.put(f"{API}/workflows/versioned", json=_gated("2", extra=True))
    assert resp.status == 201, await resp.text()
    assert (await resp.json())["version"] == 2
    versions = await get_json(client, f"{API}/workflows/versioned/versions")
    assert [(v["version"], v["latest"], v["title"]) for v in versions["items"]] == [
        (1, False, "Versioned 1"), (2, True, "Versioned 2")]
    assert all(v["created_at"] for v in versions["items"])
    assert (await get_json(client, f"{API}/workflows/versioned"))["version"] == 2

    newer = (await submit(client, "versioned", input={"n": 0}))["execution_id"]
    await wait_for_status(client, newer, "awaiting_approval")
    for execution_id in (first, newer):
        resp = await client.post(f"{API}/executions/{execution_id}/approve", json={})
        assert resp.status == 202
    for execution_id, version, n in ((first, 1, 1), (newer, 2, 2)):
        await wait_for_status(client, execution_id, "completed")
        execution = await get_json(client, f"{API}/executions/{execution_id}")
        assert execution["workflow_version"] == version
        assert execution["result"] == {"n": n, "answer": None}
        steps = (await get_json(client, f"{API}/executions/{execution_id}/steps"))["items"]
        assert len(steps) == 2 + version
    await client.close()

    restarted = await make_client()
    status = await wait_for_status(restarted, second, "awaiting_approval")
    assert status["progress"]["total_steps"] == 3
    steps = (await get_json(restarted, f"{API}/executions/{second}/steps"))["items"]
    assert [s["name"] for s in steps] == ["inc", "check", "end"]  # v1's, not v2's
    resp = await restarted.post(f"{API}/executions/{second}/approve", json={})
    assert resp.status == 202
    await wait_for_status(restarted, second, "completed")
    execution = await get_json(restarted, f"{API}/executions/{second}")
    assert (execution["workflow_version"], execution["result"]) == (1, {"n": 1, "answer": None})
    assert_gapless(await events(restarted, second))


async def test_conflicts_with_python_workflows_and_taken_ids(client: Client) -> None:
    """A Python workflow cannot be replaced or deleted (409); POST of a taken id is 409, PUT
    of an unknown one 404, a PUT body's id must be the path's (422)."""
    python = {"id": "three-steps", "steps": [STEP]}
    await problem_of(await client.post(f"{API}/workflows", json=python), 409)
    await problem_of(await client.put(f"{API}/workflows/three-steps", json=python), 409)
    await problem_of(await client.delete(f"{API}/workflows/three-steps"), 409)
    await define(client, {"id": "taken", "steps": [STEP]})
    await problem_of(await client.post(f"{API}/workflows", json={"id": "taken",
                                                                 "steps": [STEP]}), 409)
    await problem_of(await client.put(f"{API}/workflows/unknown", json={"steps": [STEP]}), 404)
    errors = await errors_of(client, {"id": "other", "steps": [STEP]}, method="PUT",
                             path=f"{API}/workflows/taken")
    assert errors[0]["loc"] == ["body", "id"]
    resp = await client.put(f"{API}/workflows/taken", json={"steps": [STEP]})
    assert resp.status == 201
    assert (await resp.json())["version"] == 2
    versions = await get_json(client, f"{API}/workflows/three-steps/versions")
    assert [(v["version"], v["source"]) for v in versions["items"]] == [(1, "python")]


async def test_delete_hides_it_while_running_ones_finish(client: Client) -> None:
    """204; gone from the list, GET and submits (404); a running one finishes on it; a new
    POST of the id goes on from its last version."""
    await define(client, {"id": "doomed", "steps": [
        {"name": "hold", "type": "call", "function": "hold_json"},
        {"name": "end", "type": "call", "function": "finish-with"}]})
    execution_id = (await submit(client, "doomed", input={"name": "d"}))["execution_id"]
    await wait_for_event(client, execution_id, "step_started")
    resp = await client.delete(f"{API}/workflows/doomed")
    assert resp.status == 204
    await problem_of(await client.delete(f"{API}/workflows/doomed"), 404)
    listed = await get_json(client, f"{API}/workflows")
    assert "doomed" not in {item["id"] for item in listed["items"]}
    await problem_of(await client.get(f"{API}/workflows/doomed"), 404)
    await problem_of(await client.get(f"{API}/workflows/doomed/versions"), 404)
    resp = await client.post(f"{API}/workflows/doomed/executions", json={})
    await problem_of(resp, 404)
    workflows.release("d").set()
    status = await wait_for_status(client, execution_id, *TERMINAL)
    assert status["status"] == "completed"
    steps = (await get_json(client, f"{API}/executions/{execution_id}/steps"))["items"]
    assert [s["name"] for s in steps] == ["hold", "end"]
    again = await define(client, {"id": "doomed", "steps": [STEP]})
    assert again["version"] == 2


async def test_a_python_deploy_resumes_or_fails_with_version_mismatch(
        make_client: MakeClient) -> None:
    """Executions of version 1 waiting at a gate, restarted with version 2 of the module:
    one whose next step still exists resumes (keeping workflow_version 1); one whose next
    step is gone fails with `workflow_version_mismatch` naming it: at once on one node; in a
    cluster (PostgreSQL), where no node holds an execution at its gate, when a node takes it
    up (here: once it is approved)."""
    base = ["workflowd.examples", "tests.workflows"]
    v1 = await make_client(workflows={"modules": [*base, "tests.versions_v1"]})
    evolving = (await submit(v1, "evolving"))["execution_id"]
    shrinking = (await submit(v1, "shrinking"))["execution_id"]
    await wait_for_status(v1, evolving, "awaiting_approval")
    await wait_for_status(v1, shrinking, "awaiting_approval")
    await v1.close()

    v2 = await make_client(workflows={"modules": [*base, "tests.versions_v2"]})
    if v2.app[STORE].cluster is not None:
        resp = await v2.post(f"{API}/executions/{shrinking}/approve", json={})
        assert resp.status == 202, await resp.text()
    failed = await wait_for_status(v2, shrinking, *TERMINAL)
    assert failed["status"] == "failed"
    result = await get_json(v2, f"{API}/executions/{shrinking}/result")
    assert result["error"]["code"] == "workflow_version_mismatch"
    assert "'publish'" in result["error"]["message"]
    assert "version 1" in result["error"]["message"]
    resp = await v2.post(f"{API}/executions/{evolving}/approve", json={})
    assert resp.status == 202
    await wait_for_status(v2, evolving, "completed")
    execution = await get_json(v2, f"{API}/executions/{evolving}")
    assert execution["workflow_version"] == 1
    assert execution["result"] == {"first": 1, "last": 2, "added": 2}


async def test_a_held_execution_is_taken_up_by_a_json_workflow_of_its_id(
        make_client: MakeClient) -> None:
    """Its Python workflow gone, an execution is held; a JSON workflow with the steps it
    needs, defined later under that id, runs it on."""
    base = ["workflowd.examples", "tests.workflows"]
    v1 = await make_client(workflows={"modules": [*base, "tests.versions_v1"]})
    execution_id = (await submit(v1, "evolving"))["execution_id"]
    await wait_for_status(v1, execution_id, "awaiting_approval")
    await v1.close()
    bare = await make_client(workflows={"modules": base})
    resp = await bare.post(f"{API}/executions/{execution_id}/approve", json={})
    assert resp.status == 202  # approved while held: it waits, queued, untouched
    await define(bare, {"id": "evolving", "steps": [
        {"name": "first", "type": "call", "function": "add_one"},
        {"name": "check", "type": "approval"},
        {"name": "last", "type": "call", "function": "finish-with"}]})
    await wait_for_status(bare, execution_id, "completed")
    result = await get_json(bare, f"{API}/executions/{execution_id}/result")
    assert result["result"] == {"n": None, "answer": None}
