"""The outbox's HTTP side: one client session that POSTs webhooks and external step work."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from workflowd.api.keys import OUTBOX, SETTINGS, STORE
from workflowd.engine.outbox import Outbox, WebhookRoute
from workflowd.records import TERMINAL_EVENTS

__all__ = ["outbox_ctx"]


async def outbox_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10.0))

    async def post(url: str, body: str, headers: dict[str, str]) -> None:
        async with session.post(url, data=body.encode(), headers=headers) as resp:
            await resp.read()
            if resp.status >= 300:
                raise RuntimeError(f"{url} answered {resp.status}")

    routes = [WebhookRoute(str(hook.url), frozenset(hook.events or TERMINAL_EVENTS),
                           hook.secret or settings.delivery.secret)
              for hook in settings.webhooks]
    outbox = Outbox(app[STORE], post, routes, callback_events=TERMINAL_EVENTS,
                    secret=settings.delivery.secret,
                    max_attempts=settings.delivery.max_attempts,
                    backoff=settings.delivery.backoff)
    app[OUTBOX] = outbox
    # In a cluster the leader sends (engine.chores), so that each delivery goes once.
    sender = None
    if app[STORE].cluster is None:
        sender = asyncio.create_task(outbox.run(), name="outbox")
    yield
    if sender is not None:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sender
    await session.close()
