"""Tickets (API.md §8): single-use, short-lived stand-ins for a bearer token on the WebSocket
and server-sent events routes, which a browser cannot send headers to."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient

from tests.conftest import MakeClient
from tests.helpers import API, SUBJECTS, auth_settings, bearer, problem_of
from workflowd.api.auth import Identity, TicketStore
from workflowd.api.keys import TICKETS
from workflowd.clock import parse_ts
from workflowd.errors import RateLimitedError


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def authed(make_client: MakeClient) -> TestClient[Any, Any]:
    return await make_client(auth=auth_settings())


async def _ticket(client: TestClient[Any, Any], role: str = "viewer") -> dict[str, Any]:
    resp = await client.post(f"{API}/tickets", headers=bearer(role))
    assert resp.status == 201, await resp.text()
    assert resp.headers["Cache-Control"] == "no-store"
    body: dict[str, Any] = await resp.json()
    return body


async def _execution(client: TestClient[Any, Any]) -> str:
    resp = await client.post(f"{API}/workflows/gated/executions",
                             json={"require_approval": True}, headers=bearer("submitter"))
    assert resp.status == 201, await resp.text()
    execution_id: str = (await resp.json())["execution_id"]
    return execution_id


async def test_a_ticket_carries_subject_and_role(authed: TestClient[Any, Any]) -> None:
    """The answer names the ticket, when it expires (about 30 s on), the subject and role."""
    ticket = await _ticket(authed, "approver")
    assert set(ticket) == {"ticket", "expires_at", "subject", "role"}
    assert (ticket["subject"], ticket["role"]) == (SUBJECTS["approver"], "approver")
    assert parse_ts(ticket["expires_at"]) > datetime.now(UTC)
    assert ticket["ticket"]
    await problem_of(await authed.post(f"{API}/tickets"), 401)


async def test_websocket_by_ticket_once(authed: TestClient[Any, Any]) -> None:
    """A ticket opens the WebSocket of an execution once; used again it is 401, before the
    upgrade."""
    execution_id = await _execution(authed)
    ticket = (await _ticket(authed))["ticket"]
    path = f"{API}/executions/{execution_id}/ws?after=0&ticket={ticket}"
    ws = await authed.ws_connect(path)
    msg = await ws.receive()
    assert msg.type == WSMsgType.TEXT
    snapshot = json.loads(msg.data)
    assert snapshot["type"] == "snapshot"
    await ws.close()
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await authed.ws_connect(path)
    assert refused.value.status == 401
    # and the all-executions socket takes a fresh one
    fresh = (await _ticket(authed))["ticket"]
    ws = await authed.ws_connect(f"{API}/ws?ticket={fresh}")
    await ws.send_str('{"type": "ping"}')
    assert json.loads((await ws.receive()).data) == {"type": "pong"}
    await ws.close()


async def test_event_stream_by_ticket_once(authed: TestClient[Any, Any]) -> None:
    """A ticket opens the server-sent events of an execution once."""
    execution_id = await _execution(authed)
    ticket = (await _ticket(authed))["ticket"]
    path = f"{API}/executions/{execution_id}/events/stream?after=0&ticket={ticket}"
    async with authed.get(path) as resp:
        assert resp.status == 200, await resp.text()
        first = await resp.content.readline()
        assert first.startswith(b"retry:")
    await problem_of(await authed.get(path), 401)


async def test_tickets_only_on_stream_routes(authed: TestClient[Any, Any]) -> None:
    """A ticket is no bearer token: on a route that is not a stream it is not accepted, and
    it stays unused."""
    execution_id = await _execution(authed)
    ticket = (await _ticket(authed))["ticket"]
    await problem_of(await authed.get(f"{API}/executions/{execution_id}?ticket={ticket}"), 401)
    await problem_of(await authed.get(f"{API}/executions/{execution_id}",
                                      headers=bearer(ticket)), 401)
    async with authed.get(f"{API}/executions/{execution_id}/events/stream?ticket={ticket}"
                          ) as resp:
        assert resp.status == 200


async def test_forged_and_garbled_tickets(authed: TestClient[Any, Any]) -> None:
    """A ticket that was never issued, or one with its verifier changed, is 401."""
    execution_id = await _execution(authed)
    ticket = (await _ticket(authed))["ticket"]
    selector, _, verifier = ticket.partition(".")
    path = f"{API}/executions/{execution_id}/events/stream?ticket="
    # The verifier with its last character changed (to "x", or "y" where it was "x": one
    # ticket in 64 ends with "x", and that "forgery" was the ticket, whose stream never ends).
    changed = f"{verifier[:-1]}{'y' if verifier.endswith('x') else 'x'}"
    for bad in (f"{selector}.{changed}", selector, "x.y", "…", f"{selector}.."):
        await problem_of(await authed.get(path + bad), 401)
    async with authed.get(path + ticket) as resp:  # the near misses did not use it up
        assert resp.status == 200


async def test_an_expired_ticket_is_refused(authed: TestClient[Any, Any]) -> None:
    """Past its 30 s a ticket is refused; one issued later still works."""
    clock = Clock()
    authed.app[TICKETS].clock = clock
    execution_id = await _execution(authed)
    path = f"{API}/executions/{execution_id}/events/stream?ticket="
    old = (await _ticket(authed))["ticket"]
    clock.now += 29.9
    young = (await _ticket(authed))["ticket"]
    clock.now += 0.2  # the first is 30.1 s old
    await problem_of(await authed.get(path + old), 401)
    async with authed.get(path + young) as resp:
        assert resp.status == 200


async def test_a_viewers_ticket_is_a_viewer(authed: TestClient[Any, Any]) -> None:
    """What a ticket carries is what its holder may do: a worker cannot get one to follow
    (a worker does not read), and a ticket's role is its issuer's."""
    await problem_of(await authed.post(f"{API}/tickets", headers=bearer("worker")), 403)
    assert (await _ticket(authed, "submitter"))["role"] == "submitter"


def test_store_is_bounded_and_sweeps() -> None:
    """Open tickets are bounded per subject (429 past it); expired ones are swept away."""
    clock = Clock()
    store = TicketStore(ttl=30.0, clock=clock, max_per_subject=3, max_open=5)
    ana, bo = Identity("ana", "viewer"), Identity("bo", "viewer")
    tickets = [store.issue(ana) for _ in range(3)]
    with pytest.raises(RateLimitedError) as full:
        store.issue(ana)
    assert full.value.retry_after == 30
    store.issue(bo)
    store.issue(bo)
    with pytest.raises(RateLimitedError):
        store.issue(bo)  # five open in all
    assert store.redeem(tickets[0]) == ana
    assert store.redeem(tickets[0]) is None
    store.issue(ana)
    clock.now += 31
    assert store.redeem(tickets[1]) is None
    assert len(store) == 0
    assert store.redeem(store.issue(ana)) == ana
