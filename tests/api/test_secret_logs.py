"""No secret in any log line (API.md §8): an authenticated session logged as JSON at debug
level, with every token, hash, ticket, step token and webhook secret it used, none of which
may appear in what was written."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from pytest_aiohttp import AiohttpServer

from tests.api.test_webhooks import Receiver
from tests.conftest import MakeClient
from tests.helpers import API, TOKENS, auth_settings, bearer
from workflowd.api.auth import hash_token
from workflowd.config import LoggingSettings
from workflowd.log import configure_logging

WEBHOOK_SECRET = "whsec-0b1c2d3e4f"
DELIVERY_SECRET = "dlvsec-5a6b7c8d9e"
BAD_TOKEN = "wfd-guess-1a2b3c4d"


async def test_an_authenticated_session_logs_no_secret(
        make_client: MakeClient, aiohttp_server: AiohttpServer,
        capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> None:
    """Submit, approve, follow by ticket (SSE and WebSocket), a bad token, a worker's report
    with its step token, webhooks: the JSON log names what happened and no secret."""
    caplog.set_level(logging.DEBUG)
    configure_logging(LoggingSettings(level="debug", format="json"), cache=False)
    receiver = Receiver()
    hook_app = web.Application()
    hook_app.router.add_post("/hook", receiver.handle)
    hooks: TestServer = await aiohttp_server(hook_app, host="127.0.0.1")
    client = await make_client(
        auth=auth_settings(), delivery={"secret": DELIVERY_SECRET},
        webhooks=[{"url": str(hooks.make_url("/hook")), "secret": WEBHOOK_SECRET}])
    secrets: set[str] = {WEBHOOK_SECRET, DELIVERY_SECRET, BAD_TOKEN}
    secrets |= set(TOKENS.values()) | {hash_token(t) for t in TOKENS.values()}

    async def ticket() -> str:
        resp = await client.post(f"{API}/tickets", headers=bearer("viewer"))
        assert resp.status == 201
        value: str = (await resp.json())["ticket"]
        secrets.add(value)
        return value

    # submit and approve, followed over SSE and a WebSocket by ticket
    resp = await client.post(f"{API}/workflows/gated/executions", json={},
                             headers=bearer("submitter"))
    assert resp.status == 202
    execution_id = (await resp.json())["execution_id"]
    sse = await client.get(f"{API}/executions/{execution_id}/events/stream?after=0"
                           f"&ticket={await ticket()}")
    assert sse.status == 200
    ws = await client.ws_connect(f"{API}/executions/{execution_id}/ws?after=0"
                                 f"&ticket={await ticket()}")
    async with asyncio.timeout(15):
        async for msg in ws:
            if '"approval_required"' in msg.data:
                break
    resp = await client.post(f"{API}/executions/{execution_id}/approve",
                             json={"comment": "ok"}, headers=bearer("approver"))
    assert resp.status == 202
    async with asyncio.timeout(15):
        async for msg in ws:
            if '"workflow_completed"' in msg.data:
                break
    await ws.close()
    sse.close()

    # a bad token, a used ticket, a ticket in a header
    used = await ticket()
    await (await client.get(f"{API}/executions/{execution_id}/events/stream?ticket={used}"
                            )).release()
    for headers in (bearer(BAD_TOKEN), bearer(used), {"X-Workflowd-Token": BAD_TOKEN}):
        resp = await client.get(f"{API}/executions/{execution_id}", headers=headers)
        assert resp.status == 401
    resp = await client.get(f"{API}/executions/{execution_id}/events/stream?ticket={used}")
    assert resp.status == 401

    # an external step reported by its own token, a forged one refused
    resp = await client.post(f"{API}/workflows/external-job/executions", json={},
                             headers=bearer("submitter"))
    external_id = (await resp.json())["execution_id"]
    callback = await _callback(client, external_id)
    secrets.add(callback["token"])
    base = f"{API}/executions/{external_id}/steps/work"
    resp = await client.post(f"{base}/progress", json={"percentage": 5},
                             headers={"X-Workflowd-Token": BAD_TOKEN})
    assert resp.status == 403
    resp = await client.post(f"{base}/complete", json={"success": True},
                             headers={"X-Workflowd-Token": callback["token"]})
    assert resp.status == 202
    await receiver.wait(2)  # both terminal events delivered, signed
    await client.close()

    written = capsys.readouterr().err + "\n".join(
        f"{r.name} {r.getMessage()} {r.args}" for r in caplog.records)
    for event in ("execution_submitted", "execution_decided", "auth_refused",
                  "execution_completed"):
        assert event in written
    leaked = sorted(s for s in secrets if s in written)
    assert not leaked, f"secrets in the log: {leaked}"


async def _callback(client: Any, execution_id: str) -> dict[str, str]:
    async with asyncio.timeout(15):
        while True:
            resp = await client.get(f"{API}/executions/{execution_id}/events",
                                    headers=bearer("viewer"))
            for event in (await resp.json())["items"]:
                if event["type"] == "step_started" and event["step"] == "work":
                    callback: dict[str, str] = event["callback"]
                    return callback
            await client.get(f"{API}/executions/{execution_id}/status/live?since=0&wait=1",
                             headers=bearer("viewer"))
