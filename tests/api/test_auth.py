"""Tokens and roles (API.md §8): the 401/403 matrix over every route, step tokens, who decided,
four-eyes, and auth off staying as it was."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests import workflows
from tests.conftest import MakeClient
from tests.helpers import (
    ANA_SUBMITS,
    API,
    SUBJECTS,
    TOKENS,
    auth_settings,
    bearer,
    problem_of,
    raw_request,
)
from workflowd.api.routing import Spec, specs

# What each caller role may call, written out here rather than read from the code under test.
ALLOWED = {
    "viewer": {"viewer"},
    "submitter": {"viewer", "submitter"},
    "approver": {"viewer", "approver"},
    "worker": {"worker"},
    "admin": {"viewer", "submitter", "approver", "worker", "admin"},
}
_PARAM = re.compile(r"\{[^}]+\}")


@pytest.fixture
async def authed(make_client: MakeClient) -> TestClient[Any, Any]:
    return await make_client(auth=auth_settings())


def _routes(client: TestClient[Any, Any]) -> list[tuple[str, str, Spec]]:
    """Every declared route as (method, a concrete path, its declaration)."""
    out = []
    for route, spec in specs(client.app):
        assert spec is not None, f"{route.method} {route.resource} has no declaration"
        assert route.resource is not None
        out.append((route.method, _PARAM.sub("nope", route.resource.canonical), spec))
    return out


async def _call(client: TestClient[Any, Any], method: str, path: str,
                headers: dict[str, str]) -> tuple[int, dict[str, str], str]:
    async with client.request(method, path, headers=headers, json=None) as resp:
        return resp.status, dict(resp.headers), await resp.text()


async def test_matrix_of_every_route_and_role(authed: TestClient[Any, Any]) -> None:
    """Walking the router: no token or a bad one is 401 with WWW-Authenticate: Bearer, a role
    the route does not allow is 403, an allowed one gets past (whatever the route answers),
    and public routes need nothing. A route added later is covered without a change here."""
    routes = _routes(authed)
    assert len(routes) > 15
    for method, path, spec in routes:
        where = f"{method} {path} ({spec.role})"
        for headers in ({}, bearer("not-a-token"), {"Authorization": "Basic dXNlcjpwYXNz"},
                        {"Authorization": "Bearer "}):
            status, got, text = await _call(authed, method, path, headers)
            if spec.role == "public":
                assert status not in (401, 403), where
                continue
            assert status == 401, f"{where} {headers}: {status} {text}"
            assert got.get("WWW-Authenticate") == "Bearer", where
            if method != "HEAD":
                assert got["Content-Type"].startswith("application/problem+json"), where
        for role in ALLOWED:
            status, _, text = await _call(authed, method, path, bearer(role))
            if spec.role == "public" or spec.role in ALLOWED[role]:
                assert status not in (401, 403), f"{where} as {role}: {status} {text}"
            else:
                assert status == 403, f"{where} as {role}: {status} {text}"


async def test_refusals_are_problems(authed: TestClient[Any, Any]) -> None:
    """401 and 403 are problem documents that never repeat the token."""
    resp = await authed.get(f"{API}/executions", headers=bearer("wrong-token-1234"))
    body = await problem_of(resp, 401)
    assert "wrong-token-1234" not in await resp.text()
    assert body["type"].endswith("unauthorized")
    resp = await authed.post(f"{API}/workflows/three-steps/executions", json={},
                             headers=bearer("viewer"))
    body = await problem_of(resp, 403)
    assert "viewer" in body["detail"]
    assert TOKENS["viewer"] not in await resp.text()


async def test_unknown_routes_stay_404_and_405(authed: TestClient[Any, Any]) -> None:
    """With auth on, a path or method that no route has is still 404 / 405, not 401."""
    await problem_of(await authed.get("/api/v1/nothing-here"), 404)
    resp = await authed.delete(f"{API}/workflows")
    await problem_of(resp, 405)


async def test_public_routes_need_nothing(authed: TestClient[Any, Any]) -> None:
    """Health and readiness answer without a token."""
    assert (await authed.get("/healthz")).status == 200
    assert (await authed.get("/readyz")).status == 200
    assert (await authed.get("/demo")).status == 200


async def _submit(client: TestClient[Any, Any], role_or_token: str, workflow: str = "gated",
                  expect: int = 202, **body: Any) -> str:
    resp = await client.post(f"{API}/workflows/{workflow}/executions", json=body,
                             headers=bearer(role_or_token))
    assert resp.status == expect, await resp.text()
    execution_id: str = (await resp.json())["execution_id"]
    return execution_id


async def _wait_status(client: TestClient[Any, Any], execution_id: str, status: str,
                       role: str = "viewer") -> dict[str, Any]:
    path = f"{API}/executions/{execution_id}/status/live"
    async with asyncio.timeout(15):
        seq = -1
        while True:
            params = {"since": str(seq), "wait": "5"} if seq >= 0 else {}
            resp = await client.get(path, params=params, headers=bearer(role))
            if resp.status == 304:
                continue
            assert resp.status == 200, await resp.text()
            live: dict[str, Any] = await resp.json()
            if live["status"] == status:
                return live
            seq = live["seq"]


async def _get(client: TestClient[Any, Any], path: str, role: str = "viewer") -> Any:
    resp = await client.get(path, headers=bearer(role))
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def test_viewer_follows_but_cannot_approve_an_approver_can(
        authed: TestClient[Any, Any]) -> None:
    """The new user's path: a viewer reads, is refused the approve; the approver's approve is
    recorded with who submitted, who approved and when, in the view and the event."""
    execution_id = await _submit(authed, "submitter")
    await _wait_status(authed, execution_id, "awaiting_approval")
    approve = f"{API}/executions/{execution_id}/approve"
    resp = await authed.post(approve, json={"comment": "me?"}, headers=bearer("viewer"))
    await problem_of(resp, 403)
    resp = await authed.post(approve, json={"comment": "fine"}, headers=bearer("approver"))
    assert resp.status == 202, await resp.text()
    await _wait_status(authed, execution_id, "completed")
    view = await _get(authed, f"{API}/executions/{execution_id}")
    assert view["submitted_by"] == SUBJECTS["submitter"]
    approval = view["approval"]
    assert approval["status"] == "approved"
    assert approval["decided_by"] == SUBJECTS["approver"]
    assert approval["decided_at"]
    assert approval["comment"] == "fine"
    events = (await _get(authed, f"{API}/executions/{execution_id}/events"))["items"]
    granted = next(e for e in events if e["type"] == "approval_granted")
    assert granted["decided_by"] == SUBJECTS["approver"]
    assert granted["comment"] == "fine"
    listed = (await _get(authed, f"{API}/executions"))["items"]
    assert listed[0]["submitted_by"] == SUBJECTS["submitter"]


async def test_reject_records_the_subject(authed: TestClient[Any, Any]) -> None:
    """A reject carries the approver's subject in the approval and the event."""
    execution_id = await _submit(authed, "admin", require_approval=True, expect=201)
    resp = await authed.post(f"{API}/executions/{execution_id}/reject", json={"reason": "no"},
                             headers=bearer("approver"))
    assert resp.status == 200, await resp.text()
    view = await _get(authed, f"{API}/executions/{execution_id}")
    assert view["submitted_by"] == SUBJECTS["admin"]
    assert view["approval"]["decided_by"] == SUBJECTS["approver"]
    events = (await _get(authed, f"{API}/executions/{execution_id}/events"))["items"]
    rejected = next(e for e in events if e["type"] == "approval_rejected")
    assert (rejected["decided_by"], rejected["comment"]) == (SUBJECTS["approver"], "no")


async def test_four_eyes_refuses_the_submitters_own_approval(make_client: MakeClient) -> None:
    """`four_eyes = true`: the subject that submitted (here with another token of hers)
    cannot approve (403, nothing changed); another subject can."""
    client = await make_client(auth=auth_settings(four_eyes=True))
    execution_id = await _submit(client, ANA_SUBMITS, require_approval=True, expect=201)
    before = await _get(client, f"{API}/executions/{execution_id}")
    resp = await client.post(f"{API}/executions/{execution_id}/approve", json={},
                             headers=bearer("approver"))
    body = await problem_of(resp, 403)
    assert "four_eyes" in body["detail"]
    after = await _get(client, f"{API}/executions/{execution_id}")
    assert after == before
    # an admin who submitted is refused too; someone else approves
    own = await _submit(client, "admin", require_approval=True, expect=201)
    resp = await client.post(f"{API}/executions/{own}/approve", json={}, headers=bearer("admin"))
    await problem_of(resp, 403)
    resp = await client.post(f"{API}/executions/{execution_id}/approve", json={},
                             headers=bearer("admin"))
    assert resp.status == 202, await resp.text()
    view = await _get(client, f"{API}/executions/{execution_id}")
    # The approval is read from its event: `gated` may reach its gate (a new approval) by now.
    events = (await _get(client, f"{API}/executions/{execution_id}/events"))["items"]
    granted = next(e for e in events if e["type"] == "approval_granted")
    assert (view["submitted_by"], granted["decided_by"]) == ("ana", "ada")


async def test_four_eyes_still_lets_the_submitter_reject(make_client: MakeClient) -> None:
    """Four-eyes is about approving: the submitter may still reject (withdraw) her own."""
    client = await make_client(auth=auth_settings(four_eyes=True))
    execution_id = await _submit(client, "admin", require_approval=True, expect=201)
    resp = await client.post(f"{API}/executions/{execution_id}/reject", json={},
                             headers=bearer("admin"))
    assert resp.status == 200


async def _external_waiting(client: TestClient[Any, Any]) -> tuple[str, dict[str, str]]:
    execution_id = await _submit(client, "submitter", "external-job")
    async with asyncio.timeout(15):
        while True:
            events = (await _get(client, f"{API}/executions/{execution_id}/events"))["items"]
            started = [e for e in events if e["type"] == "step_started" and e["step"] == "work"]
            if started:
                return execution_id, started[0]["callback"]
            await _wait_status(client, execution_id, "running")


async def test_step_token_stands_for_worker_on_its_step_only(
        authed: TestClient[Any, Any]) -> None:
    """An external step's token is `worker` on that step's two routes and nothing else: not
    on other routes (401), not for another execution's step (403)."""
    execution_id, callback = await _external_waiting(authed)
    other_id, _ = await _external_waiting(authed)
    token = {"X-Workflowd-Token": callback["token"]}
    base = f"{API}/executions/{execution_id}"
    await problem_of(await authed.get(base, headers=token), 401)
    await problem_of(await authed.post(f"{base}/cancel", headers=token), 401)
    resp = await authed.post(f"{API}/executions/{other_id}/steps/work/progress",
                             json={"percentage": 1}, headers=token)
    await problem_of(resp, 403)
    resp = await authed.post(f"{base}/steps/work/progress", json={"percentage": 30},
                             headers=token)
    assert resp.status == 202, await resp.text()
    resp = await authed.post(f"{base}/steps/work/complete", json={"success": True, "output": 1},
                             headers=token)
    assert resp.status == 202, await resp.text()
    await _wait_status(authed, execution_id, "completed")


async def test_a_wrong_step_token_is_refused_with_auth_on(authed: TestClient[Any, Any]) -> None:
    """A forged step token gets past the middleware as `worker` but not the engine's check."""
    execution_id, _ = await _external_waiting(authed)
    resp = await authed.post(f"{API}/executions/{execution_id}/steps/work/complete",
                             json={"success": True}, headers={"X-Workflowd-Token": "forged"})
    await problem_of(resp, 403)


@pytest.mark.parametrize("auth_on", [True, False], ids=["auth-on", "auth-off"])
async def test_step_token_is_read_alike_with_auth_on_and_off(make_client: MakeClient,
                                                             auth_on: bool) -> None:
    """The middleware and the step's routes read the step token in one place: from
    `X-Workflowd-Token`, else `?token=` (the header wins), never from `Authorization` (a
    configured token's: 401 with auth on, no step token with auth off)."""
    client = await make_client(auth=auth_settings() if auth_on else {})
    execution_id, callback = await _external_waiting(client)
    base = f"{API}/executions/{execution_id}/steps/work"
    token = callback["token"]
    resp = await client.post(f"{base}/progress", json={"percentage": 10},
                             params={"token": token})
    assert resp.status == 202, await resp.text()
    resp = await client.post(f"{base}/complete", json={"success": True}, params={"token": token},
                             headers={"X-Workflowd-Token": "forged"})
    await problem_of(resp, 403)
    resp = await client.post(f"{base}/complete", json={"success": True}, headers=bearer(token))
    await problem_of(resp, 401 if auth_on else 403)
    resp = await client.post(f"{base}/complete", json={"success": True, "output": 1},
                             params={"token": token})
    assert resp.status == 202, await resp.text()
    await _wait_status(client, execution_id, "completed")


@pytest.mark.parametrize("auth_on", [True, False], ids=["auth-on", "auth-off"])
async def test_tokens_of_bytes_not_utf8_are_refused_not_500(make_client: MakeClient,
                                                            auth_on: bool) -> None:
    """A bearer or step token of bytes that are not UTF-8 (read as surrogates, which hashing
    and the token check could not encode: a 500) is a token that names no one: 401 for the
    bearer with auth on, 403 for the step's token, and the step still waits."""
    client = await make_client(auth=auth_settings() if auth_on else {})
    execution_id, _ = await _external_waiting(client)
    if auth_on:
        status, head, _ = await raw_request(client, "GET", f"{API}/executions",
                                            b"Authorization: Bearer \xff\xfe\r\n")
        assert status == 401
        assert b"WWW-Authenticate: Bearer" in head
    base = f"{API}/executions/{execution_id}/steps/work"
    for path, body in ((f"{base}/progress", b'{"percentage": 5}'),
                       (f"{base}/complete", b'{"success": true}')):
        status, head, text = await raw_request(client, "POST", path,
                                               b"X-Workflowd-Token: \xff\xfe\r\n", body)
        assert status == 403, text
        assert b"application/problem+json" in head
    steps = await _get(client, f"{API}/executions/{execution_id}/steps")
    assert next(s for s in steps["items"] if s["name"] == "work")["status"] == "waiting"


@pytest.mark.parametrize("role", ["worker", "admin"])
async def test_worker_or_admin_bearer_reports_for_any_step(authed: TestClient[Any, Any],
                                                           role: str) -> None:
    """A worker's or admin's bearer token may use both routes of any step, without the step's
    own token."""
    execution_id, _ = await _external_waiting(authed)
    base = f"{API}/executions/{execution_id}/steps/work"
    resp = await authed.post(f"{base}/progress", json={"percentage": 50}, headers=bearer(role))
    assert resp.status == 202, await resp.text()
    resp = await authed.post(f"{base}/complete", json={"success": True, "output": {"n": 1}},
                             headers=bearer(role))
    assert resp.status == 202, await resp.text()
    await _wait_status(authed, execution_id, "completed")


async def test_worker_bearer_reports_for_an_in_process_step(authed: TestClient[Any, Any]) -> None:
    """`ctx.callback` of an in-process step: its token, or a worker's bearer token, reports
    progress; a viewer's bearer token does not."""
    execution_id = await _submit(authed, "submitter", "handoff")
    async with asyncio.timeout(10):
        await workflows.release(f"callback:{execution_id}").wait()
    callback = workflows.CALLBACKS[execution_id]
    path = callback["progress_url"].split("://", 1)[1]
    path = path[path.index("/"):]
    resp = await authed.post(path, json={"percentage": 10},
                             headers={"X-Workflowd-Token": callback["token"]})
    assert resp.status == 202, await resp.text()
    resp = await authed.post(path, json={"percentage": 20}, headers=bearer("worker"))
    assert resp.status == 202, await resp.text()
    await problem_of(await authed.post(path, json={"percentage": 30},
                                       headers=bearer("viewer")), 403)
    workflows.release(execution_id).set()
    await _wait_status(authed, execution_id, "completed")


async def test_auth_off_is_anonymous_and_open(client: TestClient[Any, Any]) -> None:
    """With auth off nothing needs a token, a token sent is ignored, and every execution is
    submitted and decided by "anonymous"."""
    resp = await client.post(f"{API}/workflows/gated/executions", json={"require_approval": True},
                             headers=bearer("not-configured"))
    assert resp.status == 201
    execution_id = (await resp.json())["execution_id"]
    resp = await client.post(f"{API}/executions/{execution_id}/reject", json={})
    assert resp.status == 200
    view = await (await client.get(f"{API}/executions/{execution_id}")).json()
    assert view["submitted_by"] == "anonymous"
    assert view["approval"]["decided_by"] == "anonymous"


async def test_hash_only_tokens_and_constant_lookups() -> None:
    """The table holds hashes: a token matches by its SHA-256, a hash given as a token does not."""
    from workflowd.api.auth import TokenTable, hash_token
    from workflowd.config import TokenSettings

    table = TokenTable([TokenSettings(subject="ana", role="approver",
                                      sha256=hash_token("s3cret-token"))])
    ana = table.bearer("Bearer s3cret-token")
    assert ana is not None
    assert (ana.subject, ana.role) == ("ana", "approver")
    assert table.bearer("bearer   s3cret-token ") == ana
    assert table.bearer(f"Bearer {hash_token('s3cret-token')}") is None
    assert table.bearer("Bearer s3cret-tokem") is None
    assert table.bearer("s3cret-token") is None
