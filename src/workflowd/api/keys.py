"""Everything kept on the application, under typed keys."""

from __future__ import annotations

import asyncio
import weakref
from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.abc import AbstractResolver

from workflowd.api.auth import TicketStore
from workflowd.api.limits import SubmitRate
from workflowd.api.views import LiveBodies
from workflowd.config import Settings
from workflowd.definitions import Workflow
from workflowd.engine import Hub, Scheduler
from workflowd.engine.artifacts import ArtifactStore
from workflowd.engine.catalog import Catalog
from workflowd.engine.outbox import Outbox
from workflowd.outbound import OutboundPolicy
from workflowd.store import Store

if TYPE_CHECKING:
    # For the type checker only: `api.metrics` reads the keys here (its collector looks up
    # the store, scheduler and outbox on the app), so importing it here would be a cycle.
    from workflowd.api.metrics import Metrics

__all__ = [
    "ARTIFACTS", "CATALOG", "HUB", "INFLIGHT", "LIVE_BODIES", "METRICS", "OUTBOUND", "OUTBOX",
    "RESOLVER", "SCHEDULER", "SETTINGS", "SOCKETS", "STORE", "STREAMS", "SUBMIT_RATE",
    "TICKETS",
    "WORKFLOWS",
]

SETTINGS = web.AppKey("settings", Settings)
WORKFLOWS = web.AppKey("workflows", dict[str, Workflow])  # the Python ones
# Every definition by version: the Python ones and those stored as JSON (API.md §11).
CATALOG = web.AppKey("catalog", Catalog)
ARTIFACTS = web.AppKey("artifacts", ArtifactStore)
HUB = web.AppKey("hub", Hub)
STORE = web.AppKey("store", Store)
SCHEDULER = web.AppKey("scheduler", Scheduler)
OUTBOX = web.AppKey("outbox", Outbox)
LIVE_BODIES = web.AppKey("live_bodies", LiveBodies)
# Requests carrying an Idempotency-Key that are being answered now: repeats wait for them.
INFLIGHT = web.AppKey("inflight", dict[tuple[str, str], asyncio.Future[None]])
# Open WebSockets, closed with 1001 at shutdown.
SOCKETS = web.AppKey("sockets", weakref.WeakSet[web.WebSocketResponse])
# One event per open stream of server-sent events, set at shutdown to end it.
STREAMS = web.AppKey("streams", set[asyncio.Event])
# Where outbound requests may go ([outbound]); tickets for WebSocket and SSE; submit rates.
OUTBOUND = web.AppKey("outbound", OutboundPolicy)
TICKETS = web.AppKey("tickets", TicketStore)
SUBMIT_RATE = web.AppKey("submit_rate", SubmitRate)
# The application's numbers for `/metrics` (`api.metrics.Metrics`).
METRICS: web.AppKey[Metrics] = web.AppKey("metrics")
# The DNS resolver under outbound requests, when not aiohttp's own (tests put a stub here).
RESOLVER = web.AppKey("resolver", AbstractResolver)
