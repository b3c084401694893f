"""`POST /api/v1/tickets`: a single-use, 30-second ticket for a browser's WebSocket or
EventSource, which cannot send an `Authorization` header (`?ticket=` on those routes)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from aiohttp import web
from pydantic import BaseModel

from workflowd.answers import Problem
from workflowd.api.auth import CallerRole, identity_of
from workflowd.api.keys import TICKETS
from workflowd.api.parsing import json_response
from workflowd.api.routing import Routes
from workflowd.clock import format_ts
from workflowd.records import API_PREFIX

__all__ = ["Ticket", "routes"]

routes = Routes()


class Ticket(BaseModel):
    """A ticket and what it carries: the caller's subject and role, until `expires_at`."""

    ticket: str
    expires_at: str
    subject: str
    role: CallerRole


@routes.post(f"{API_PREFIX}/tickets", role="viewer", answers={201: Ticket, 429: Problem},
             writes=False,  # kept in memory only
             summary="A single-use ticket (30 s) for a WebSocket or EventSource: ?ticket=")
async def create_ticket(request: web.Request) -> web.Response:
    identity = identity_of(request)
    store = request.app[TICKETS]
    ticket = store.issue(identity)
    expires_at = format_ts(datetime.now(UTC) + timedelta(seconds=store.ttl))
    return json_response({"ticket": ticket, "expires_at": expires_at,
                          "subject": identity.subject, "role": identity.role}, 201,
                         headers={"Cache-Control": "no-store"})
