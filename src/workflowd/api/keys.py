"""Everything kept on the application, under typed keys."""

from __future__ import annotations

import asyncio
import weakref

from aiohttp import web

from workflowd.api.metrics import METRICS
from workflowd.api.views import LiveBodies
from workflowd.config import Settings
from workflowd.definitions import Workflow
from workflowd.engine import Hub, Scheduler
from workflowd.engine.outbox import Outbox
from workflowd.store import Store

__all__ = [
    "HUB", "INFLIGHT", "LIVE_BODIES", "METRICS", "OUTBOX", "SCHEDULER", "SETTINGS", "SOCKETS",
    "STORE", "WORKFLOWS",
]

SETTINGS = web.AppKey("settings", Settings)
WORKFLOWS = web.AppKey("workflows", dict[str, Workflow])
HUB = web.AppKey("hub", Hub)
STORE = web.AppKey("store", Store)
SCHEDULER = web.AppKey("scheduler", Scheduler)
OUTBOX = web.AppKey("outbox", Outbox)
LIVE_BODIES = web.AppKey("live_bodies", LiveBodies)
# Requests carrying an Idempotency-Key that are being answered now: repeats wait for them.
INFLIGHT = web.AppKey("inflight", dict[tuple[str, str], asyncio.Future[None]])
# Open WebSockets, closed with 1001 at shutdown.
SOCKETS = web.AppKey("sockets", weakref.WeakSet[web.WebSocketResponse])
