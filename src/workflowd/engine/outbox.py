"""The outbox: HTTP deliveries (webhooks, external step dispatch) committed with the events that
cause them, then sent, retried with backoff, and kept across restarts until they succeed."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog

from workflowd.clock import format_ts, utcnow
from workflowd.records import Event, ExecutionRecord
from workflowd.store import Delivery, Store

__all__ = ["Outbox", "Post", "WebhookRoute", "sign"]

log = structlog.get_logger("workflowd.outbox")

# POST `body` with `headers` to `url`; raises on anything but a 2xx answer.
Post = Callable[[str, str, dict[str, str]], Awaitable[None]]
SIGNATURE = "X-Workflowd-Signature"
_BATCH = 50


def sign(secret: str, body: str) -> str:
    """The signature header value: `sha256=` and the hex HMAC-SHA256 of the body."""
    return "sha256=" + hmac.new(secret.encode(), body.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True, slots=True)
class WebhookRoute:
    url: str
    events: frozenset[str]  # empty: every event
    secret: str


class Outbox:
    def __init__(self, store: Store, post: Post, routes: Sequence[WebhookRoute], *,
                 callback_events: frozenset[str], secret: str, max_attempts: int = 10,
                 backoff: float = 1.0) -> None:
        self.store = store
        self.post = post
        self.routes = tuple(routes)
        self.callback_events = callback_events
        self.secret = secret
        self.max_attempts = max_attempts
        self.backoff = backoff
        self._wake = asyncio.Event()
        self.delivered = 0
        self.failed_attempts = 0
        self.given_up = 0

    # ---- what to send (called before the write that causes it) ----------------------------

    def for_events(self, rec: ExecutionRecord, events: Sequence[Event]) -> list[Delivery]:
        out: list[Delivery] = []
        if not self.routes and not rec.callback_url:
            return out  # the common case, on every write
        for event in events:
            body = event.json.decode()
            out.extend(self._signed(route.url, body, route.secret, event.type)
                       for route in self.routes
                       if not route.events or event.type in route.events)
            if rec.callback_url and event.type in self.callback_events:
                out.append(self._signed(rec.callback_url, body, self.secret, event.type))
        return out

    def dispatch(self, url: str, body: str) -> Delivery:
        return self._signed(url, body, self.secret, "step_dispatch")

    def _signed(self, url: str, body: str, secret: str, kind: str) -> Delivery:
        headers = {"Content-Type": "application/json", "X-Workflowd-Event": kind}
        if secret:
            headers[SIGNATURE] = sign(secret, body)
        return Delivery(url, body, headers)

    def wake(self) -> None:
        self._wake.set()

    # ---- sending ---------------------------------------------------------------------------

    async def run(self, poll: float = 1.0) -> None:
        """Send what is due, forever; woken by new deliveries, else looks every `poll` s."""
        while True:
            self._wake.clear()
            try:
                due = await self.store.due_deliveries(utcnow(), _BATCH)
                if due:
                    await asyncio.gather(*(self._attempt(*row) for row in due))
                    if len(due) == _BATCH:
                        continue
            except Exception:
                log.exception("outbox_failed")
            try:
                async with asyncio.timeout(poll):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def _attempt(self, delivery_id: int, delivery: Delivery, attempts: int) -> None:
        attempts += 1
        try:
            async with asyncio.timeout(10.0):
                await self.post(delivery.url, delivery.body, delivery.headers)
        except Exception as exc:  # noqa: BLE001 - any failure is retried later
            self.failed_attempts += 1
            error = f"{type(exc).__name__}: {exc}"[:500]
            next_at = None
            if attempts < self.max_attempts:
                delay = min(self.backoff * 2 ** (attempts - 1), 300.0)
                next_at = format_ts(datetime.now(UTC) + timedelta(seconds=delay))
            log.info("delivery_failed", url=delivery.url, attempts=attempts, error=error,
                     gave_up=next_at is None)
            self.given_up += next_at is None
            await self.store.delivery_outcome(delivery_id, delivered=False, attempts=attempts,
                                              next_at=next_at, error=error)
            return
        self.delivered += 1
        await self.store.delivery_outcome(delivery_id, delivered=True, attempts=attempts,
                                          next_at=None, error=None)
