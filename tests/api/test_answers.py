"""The handlers' real answers match the pydantic models their routes declare (`answers=`).

A middleware put outside the app's own checks every JSON answer against its route's model
(strict, and dumped back equal to what was sent, so a field the model lacks is caught too)
while the test walks every route through the states that give each of its answers.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from aiohttp.typedefs import Handler
from pydantic import BaseModel, ValidationError
from pytest_aiohttp import AiohttpClient

from tests import workflows
from tests.helpers import API, events, submit, wait_for_event, wait_for_status
from workflowd.answers import DefinedStep, Event, Problem, ValidationProblemDocument
from workflowd.api import create_app
from workflowd.api.routing import Spec, spec_of, specs
from workflowd.config import Settings


def model_for(spec: Spec, status: int) -> type[BaseModel] | None:
    """The model an answer with `status` must match (problems for every error)."""
    model = spec.answers.get(status)
    if model is None and status >= 400:
        return ValidationProblemDocument if status == 422 else Problem
    return model


def mismatch(model: type[BaseModel], body: bytes) -> str | None:
    """Why `body` does not match `model` (None when it does, field for field)."""
    try:
        parsed = model.model_validate_json(body, strict=True)
    except ValidationError as exc:
        return str(exc)
    if (extra := _undeclared(parsed)) is not None:
        return f"a field the model does not declare: {extra}"
    sent = json.loads(body)
    back = parsed.model_dump(mode="json")
    if model is Problem or model is ValidationProblemDocument:
        back = {k: v for k, v in back.items() if k in sent}
    if back != sent:
        return f"fields differ: sent {sent!r}, model has {back!r}"
    return None


def _undeclared(value: Any) -> str | None:
    """The first field kept as extra anywhere in a parsed answer (events may have them)."""
    if isinstance(value, Event | DefinedStep):  # their fields depend on their type
        return None
    if isinstance(value, BaseModel):
        if value.model_extra:
            return f"{type(value).__name__}.{next(iter(value.model_extra))}"
        values: Any = [getattr(value, name) for name in type(value).model_fields]
    elif isinstance(value, dict):
        values = list(value.values())
    elif isinstance(value, list):
        values = value
    else:
        return None
    for item in values:
        if (found := _undeclared(item)) is not None:
            return found
    return None


class Checker:
    def __init__(self) -> None:
        self.seen: set[tuple[str, str, int]] = set()
        self.failures: list[str] = []

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        resp = await handler(request)
        spec = spec_of(request.match_info.handler)
        if spec is None or not isinstance(resp, web.Response):
            return resp
        self.seen.add((spec.method, spec.path, resp.status))
        if resp.content_type not in ("application/json", "application/problem+json"):
            return resp
        model = model_for(spec, resp.status)
        assert isinstance(resp.body, bytes)
        if model is None:
            self.failures.append(f"{spec.method} {spec.path} {resp.status}: no model declared")
        elif (why := mismatch(model, resp.body)) is not None:
            self.failures.append(f"{spec.method} {spec.path} {resp.status}: {why}")
        return resp


@pytest.fixture
def checker() -> Iterator[Checker]:
    checker = Checker()
    yield checker
    assert not checker.failures, "\n".join(checker.failures)


@pytest.fixture
async def checked(aiohttp_client: AiohttpClient, settings: Settings,
                  checker: Checker) -> TestClient[Any, Any]:
    app = create_app(settings)
    app.middlewares.insert(0, checker.middleware)
    return await aiohttp_client(app)


async def _ok(resp: Any, status: int) -> Any:
    assert resp.status == status, await resp.text()
    return await resp.json(content_type=None)


async def test_every_route_answers_as_declared(checked: TestClient[Any, Any],
                                               checker: Checker) -> None:
    """Each route's success answers (and its problems) match their models, field for field."""
    c = checked
    await _ok(await c.get(f"{API}/workflows"), 200)
    await _ok(await c.get(f"{API}/workflows/audit-plan"), 200)
    await _ok(await c.get(f"{API}/workflows/nope"), 404)
    await _ok(await c.get("/healthz"), 200)
    await _ok(await c.get("/readyz"), 200)
    await _ok(await c.get(f"{API}/cluster"), 200)
    await _ok(await c.post(f"{API}/tickets"), 201)

    # Finished at once (sync mode, 200 with the whole execution), with logs and a branch.
    done = await _ok(await c.post(f"{API}/workflows/chatty/executions?wait=10", json={}), 200)
    branched = await _ok(await c.post(f"{API}/workflows/brancher/executions?wait=10",
                                      json={"input": {"way": "right"}}), 200)
    for execution_id in (done["execution_id"], branched["execution_id"]):
        base = f"{API}/executions/{execution_id}"
        for path in ("", "/status/live", "/steps", "/trace", "/events", "/logs", "/result",
                     "/events?limit=1", "/logs?limit=1"):
            await _ok(await c.get(base + path), 200)
        await _ok(await c.post(f"{base}/cancel"), 409)
    live = await _ok(await c.get(f"{API}/executions/{done['execution_id']}/status/live"), 200)
    resp = await c.get(f"{API}/executions/{done['execution_id']}/status/live",
                       headers={"If-None-Match": f'"{live["seq"]}"'})
    assert resp.status == 304

    # A gate: waiting (result 409, the pending steps), approved; one rejected; one at submit.
    gated = await submit(c, "gated")
    await wait_for_status(c, gated["execution_id"], "awaiting_approval")
    base = f"{API}/executions/{gated['execution_id']}"
    for path in ("", "/steps", "/trace"):
        await _ok(await c.get(base + path), 200)
    await _ok(await c.get(f"{base}/result"), 409)
    await _ok(await c.post(f"{base}/approve", json={"comment": "ok"}), 202)
    await wait_for_status(c, gated["execution_id"], "completed")
    first = await submit(c, "three-steps", expect=201, require_approval=True)
    await _ok(await c.get(f"{API}/executions/{first['execution_id']}"), 200)
    await _ok(await c.post(f"{API}/executions/{first['execution_id']}/reject",
                           json={"reason": "no"}), 200)
    await _ok(await c.post(f"{API}/executions/{first['execution_id']}/approve", json={}), 409)

    # Running, then cancelled; an outside worker's progress and completion.
    sleeping = await submit(c, "sleeper")
    await wait_for_event(c, sleeping["execution_id"], "step_progress")
    await _ok(await c.get(f"{API}/executions/{sleeping['execution_id']}"), 200)
    await _ok(await c.post(f"{API}/executions/{sleeping['execution_id']}/cancel"), 202)
    external = await submit(c, "external-job", labels={"team": "x"})
    await wait_for_status(c, external["execution_id"], "running")
    callback = await _callback(c, external["execution_id"])
    headers = {"X-Workflowd-Token": callback["token"]}
    work = f"{API}/executions/{external['execution_id']}/steps/work"
    await _ok(await c.post(f"{work}/progress", json={"percentage": 50}, headers=headers), 202)
    await _ok(await c.post(f"{work}/progress", json={"percentage": 50},
                           headers={"X-Workflowd-Token": "forged"}), 403)
    await _ok(await c.post(f"{work}/complete", json={"success": True, "output": {"n": 1}},
                           headers=headers), 202)
    await wait_for_status(c, external["execution_id"], "completed")

    # Lists and problems of every kind.
    await _ok(await c.get(f"{API}/executions?limit=2"), 200)
    await _ok(await c.get(f"{API}/executions?label=team:x&status=completed"), 200)
    await _ok(await c.get(f"{API}/executions?limit=9999"), 422)
    await _ok(await c.post(f"{API}/workflows/three-steps/executions", data=b"{"), 400)
    await _ok(await c.post(f"{API}/workflows/three-steps/executions", json={"x": 1}), 422)
    await _ok(await c.get(f"{API}/executions/nope"), 404)
    for value in (1, 2):
        resp = await c.post(f"{API}/workflows/three-steps/executions", json={"priority": value},
                            headers={"Idempotency-Key": "k1"})
        await _ok(resp, 202 if value == 1 else 422)

    # Workflows as data: define, the next version, versions (JSON and Python), delete.
    definition = {"id": "answered", "title": "Answered", "steps": [
        {"name": "count", "type": "call", "function": "add_one"},
        {"name": "nap", "type": "sleep", "seconds": 0.01}]}
    await _ok(await c.post(f"{API}/workflows", json=definition), 201)
    await _ok(await c.put(f"{API}/workflows/answered", json=definition), 201)
    await _ok(await c.get(f"{API}/workflows/answered/versions"), 200)
    await _ok(await c.get(f"{API}/workflows/three-steps/versions"), 200)
    assert (await c.delete(f"{API}/workflows/answered")).status == 204

    # Artifacts: an upload, read back, named by an execution's input.
    uploaded = await _ok(await c.post(f"{API}/artifacts?name=a.txt", data=b"hello",
                                      headers={"Content-Type": "text/plain"}), 201)
    assert (await c.get(f"{API}/artifacts/{uploaded['artifact_id']}")).status == 200
    shouted = await _ok(await c.post(f"{API}/workflows/shouter/executions?wait=10", json={
        "input": {"doc": {"artifact_id": uploaded["artifact_id"]}}}), 200)
    await _ok(await c.get(f"{API}/executions/{shouted['execution_id']}/artifacts"), 200)

    # By hand: a manual execution stepped, paused and resumed.
    manual = await submit(c, "three-steps", mode="manual")
    await wait_for_status(c, manual["execution_id"], "paused")
    base = f"{API}/executions/{manual['execution_id']}"
    await _ok(await c.post(f"{base}/step"), 202)
    await wait_for_status(c, manual["execution_id"], "paused")
    await _ok(await c.post(f"{base}/pause"), 409)
    held = await submit(c, "held-two", input={"name": "answers-held"})
    await wait_for_status(c, held["execution_id"], "running")
    base = f"{API}/executions/{held['execution_id']}"
    await _ok(await c.post(f"{base}/pause"), 202)
    workflows.release("answers-held").set()
    await wait_for_status(c, held["execution_id"], "paused")
    await _ok(await c.post(f"{base}/resume"), 202)
    await wait_for_status(c, held["execution_id"], "completed")

    declared = {(spec.method, spec.path, status)
                for _, spec in specs(c.app) if spec is not None and not spec.internal
                for status, model in spec.answers.items()
                if model is not None and status < 300}
    assert declared - checker.seen == set(), "success answers never exercised"


async def _callback(c: TestClient[Any, Any], execution_id: str) -> dict[str, Any]:
    while True:
        for event in await events(c, execution_id):
            if event["type"] == "step_started" and event["step"] == "work":
                callback: dict[str, Any] = event["callback"]
                return callback
        await wait_for_event(c, execution_id, "cycle_completed")


async def test_every_route_declares_its_success_answer(client: TestClient[Any, Any]) -> None:
    """No route goes without a declared success answer (the OpenAPI document needs it)."""
    for route, spec in specs(client.app):
        assert spec is not None
        assert any(status < 400 for status in spec.answers), \
            f"{route.method} {spec.path} declares no answer"
