"""The outbox's HTTP side: one client session that POSTs webhooks and external step work.

Every request goes only where `[outbound]` allows (`workflowd.outbound`): the URL is checked
again when it is sent (the config may have changed since it was queued, and an address literal
never reaches a resolver), and every address DNS answers for its host is checked before the
connection is opened, to that same checked address (`CheckedResolver`): a name that resolved
to a public address when the URL was given and to a metadata address now is refused.
Redirects are not followed (one could point anywhere).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from workflowd.api.keys import OUTBOUND, OUTBOX, RESOLVER, SETTINGS, STORE
from workflowd.engine.outbox import Outbox, Post, WebhookRoute
from workflowd.outbound import OutboundPolicy, OutboundRefused
from workflowd.records import TERMINAL_EVENTS

__all__ = ["CheckedResolver", "RefusedAddress", "outbound_post", "outbox_ctx"]


class RefusedAddress(OSError):
    """DNS answered an address the service does not send to (aiohttp reports it as a DNS
    error of the connection, before any packet is sent)."""


class CheckedResolver(AbstractResolver):
    """A resolver that answers only addresses the policy allows, and refuses the whole name
    if any address it resolves to is refused."""

    def __init__(self, policy: OutboundPolicy, inner: AbstractResolver | None = None) -> None:
        self.policy = policy
        self.inner = inner or aiohttp.DefaultResolver()

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        results = await self.inner.resolve(host, port, family)
        for result in results:
            try:
                self.policy.check_address(result["host"])
            except OutboundRefused as exc:
                raise RefusedAddress(f"{host!r} resolves to an address that is refused: "
                                     f"{exc}") from None
        return results

    async def close(self) -> None:
        await self.inner.close()


def outbound_post(policy: OutboundPolicy, resolver: AbstractResolver | None = None,
                  ) -> tuple[aiohttp.ClientSession, Post]:
    """A session whose connections pass the policy, and the outbox's `post` on it."""
    connector = aiohttp.TCPConnector(resolver=CheckedResolver(policy, resolver))
    session = aiohttp.ClientSession(connector=connector,
                                    timeout=aiohttp.ClientTimeout(total=10.0))

    async def post(url: str, body: str, headers: dict[str, str]) -> None:
        policy.check_url(url)
        async with session.post(url, data=body.encode(), headers=headers,
                                allow_redirects=False) as resp:
            await resp.read()
            if resp.status >= 300:
                # The host only: a URL's path or query may hold a secret (a webhook key).
                raise RuntimeError(f"{resp.url.host} answered {resp.status}")

    return session, post


async def outbox_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    session, post = outbound_post(app[OUTBOUND], app.get(RESOLVER))
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
