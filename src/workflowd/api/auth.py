"""Who is calling, and whether their role may call the route (API.md §8).

With `[auth] enabled`, the `authorize` middleware reads the matched route's declaration
(`api.routing`): a `public` route needs nothing; any other needs `Authorization: Bearer TOKEN`
whose SHA-256 is a configured token's, or, on WebSocket and SSE routes, `?ticket=` from
`POST /api/v1/tickets`, or, on a step's two routes, that step run's own token
(`step_token`: the one reader of it, for the routes too), which stands for `worker` there
only and which the engine checks. The caller's `Identity` is put on the request for handlers
(`identity_of`). With auth off there is no middleware at all and every caller is `anonymous`.
"""

from __future__ import annotations

import hmac
import math
import secrets
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from workflowd.api.routing import ROLES, Role, Spec, spec_of
from workflowd.config import TokenSettings
from workflowd.errors import ForbiddenError, RateLimitedError, UnauthorizedError
from workflowd.tokens import CALLER_ROLES, CallerRole, hash_token, new_token

__all__ = [
    "ANONYMOUS",
    "CALLER_ROLES",
    "IDENTITY",
    "STEP_TOKEN",
    "CallerRole",
    "Identity",
    "TicketStore",
    "TokenTable",
    "authorization",
    "hash_token",
    "identity_of",
    "new_token",
    "step_token",
]

log = structlog.get_logger("workflowd.auth")

# The route roles each caller role may call.
MAY: dict[CallerRole, frozenset[Role]] = {
    "viewer": frozenset({"public", "viewer"}),
    "submitter": frozenset({"public", "viewer", "submitter"}),
    "approver": frozenset({"public", "viewer", "approver"}),
    "worker": frozenset({"public", "worker"}),
    "admin": frozenset(ROLES),
}
STEP_TOKEN = "X-Workflowd-Token"  # noqa: S105 - a header's name


@dataclass(frozen=True, slots=True)
class Identity:
    """The caller: a subject (who decided, who submitted), a role, and what proved it."""

    subject: str
    role: CallerRole
    via: Literal["anonymous", "bearer", "ticket", "step_token"] = "bearer"

    def may(self, role: Role) -> bool:
        return role in MAY[self.role]

    @property
    def any_step(self) -> bool:
        """A worker's or admin's bearer token: both routes of any step, without the step's
        own token (the engine then skips its token check)."""
        return self.via == "bearer" and self.role in ("worker", "admin")


ANONYMOUS = Identity("anonymous", "admin", "anonymous")
IDENTITY = web.RequestKey("identity", Identity)


def identity_of(request: web.Request) -> Identity:
    """The caller of `request`: set by `authorize`; `anonymous` with auth off or on a public
    route."""
    identity: Identity = request.get(IDENTITY, ANONYMOUS)
    return identity


class TokenTable:
    """The configured tokens, by hash.

    The token is hashed once per request and the hash looked up: what is compared is the hash,
    never the token, so how long a lookup takes says nothing an attacker could use to build a
    token (that would take a preimage of SHA-256)."""

    def __init__(self, tokens: Iterable[TokenSettings]) -> None:
        self._by_hash = {t.sha256: Identity(t.subject, t.role) for t in tokens}

    def bearer(self, header: str) -> Identity | None:
        scheme, _, token = header.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return None
        try:
            digest = hash_token(token)
        except UnicodeEncodeError:  # bytes that are not UTF-8, read as surrogates: no one's
            return None
        return self._by_hash.get(digest)


class TicketStore:
    """Single-use tickets for a browser's WebSocket or EventSource (which cannot send headers).

    A ticket is `SELECTOR.VERIFIER`: the selector finds it, the verifier is compared in constant
    time, and a redeemed ticket is gone. Kept in memory only (a restart voids them; they live
    30 s), in the order issued, which is the order they expire in: expired ones are swept from
    the front on every issue and redeem. Bounded, in all and per subject."""

    def __init__(self, ttl: float = 30.0, *, clock: Callable[[], float] = time.monotonic,
                 max_open: int = 10_000, max_per_subject: int = 100) -> None:
        self.ttl = ttl
        self.clock = clock
        self.max_open = max_open
        self.max_per_subject = max_per_subject
        self._open: OrderedDict[str, tuple[str, Identity, float]] = OrderedDict()
        self._per_subject: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._open)

    def issue(self, identity: Identity) -> str:
        self.sweep()
        if len(self._open) >= self.max_open \
                or self._per_subject[identity.subject] >= self.max_per_subject:
            raise RateLimitedError("too many open tickets: use one, or wait for them to expire",
                                   retry_after=math.ceil(self.ttl))
        selector, verifier = secrets.token_urlsafe(12), secrets.token_urlsafe(24)
        self._open[selector] = (verifier, identity, self.clock() + self.ttl)
        self._per_subject[identity.subject] += 1
        return f"{selector}.{verifier}"

    def redeem(self, ticket: str) -> Identity | None:
        """The identity a ticket carries, once; None for an unknown, expired or used one."""
        self.sweep()
        selector, _, verifier = ticket.partition(".")
        entry = self._open.get(selector)
        if entry is None or not hmac.compare_digest(verifier.encode(), entry[0].encode()):
            return None
        self._drop(selector, entry[1])
        return entry[1]

    def sweep(self) -> None:
        now = self.clock()
        while self._open:
            selector, (_, identity, deadline) = next(iter(self._open.items()))
            if deadline > now:
                return
            self._drop(selector, identity)

    def _drop(self, selector: str, identity: Identity) -> None:
        del self._open[selector]
        left = self._per_subject[identity.subject] - 1
        if left > 0:
            self._per_subject[identity.subject] = left
        else:
            del self._per_subject[identity.subject]


def authorization(tokens: TokenTable, tickets: TicketStore) -> Middleware:
    """The middleware that lets a request through only with a role its route allows."""

    @web.middleware
    async def authorize(request: web.Request, handler: Handler) -> web.StreamResponse:
        match = request.match_info
        if match.http_exception is not None:
            return await handler(request)  # no such route or method: 404 / 405 as without auth
        spec = spec_of(match.route.handler)
        # A route declared without a role is closed to all but admin (the router test refuses
        # one anyway).
        required: Role = spec.role if spec is not None else "admin"
        if required == "public":
            return await handler(request)
        identity = _identify(request, spec, tokens, tickets)
        if identity is None:
            log.info("auth_refused", method=request.method, path=request.path,
                     reason="no valid credentials")
            raise UnauthorizedError(
                "this route needs a valid token: Authorization: Bearer TOKEN"
                + (", or ?ticket= from POST /api/v1/tickets" if spec and spec.stream else "")
                + (f", or the step's own token as {STEP_TOKEN}" if spec and spec.step_token
                   else ""))
        if not identity.may(required):
            log.info("auth_refused", method=request.method, path=request.path,
                     subject=identity.subject, role=identity.role, needs=required)
            raise ForbiddenError(f"the role {identity.role!r} may not call this route "
                                 f"(it needs {required!r})")
        request[IDENTITY] = identity
        return await handler(request)

    return authorize


def step_token(request: web.Request) -> str:
    """The step run's token a request carries ("" for none): `X-Workflowd-Token`, else
    `?token=`. The one reader of it: the middleware lets a request through on it, and the
    step's routes hand the same one to the engine to check. Never `Authorization`: that is a
    configured token's, and one that names no one is 401 (API.md §8)."""
    token = request.headers.get(STEP_TOKEN) or request.query.get("token", "")
    if not token.isascii():
        # Step tokens are ASCII (`secrets.token_urlsafe`), so this one is wrong (403). Bytes
        # that are not UTF-8 arrive as surrogates, which no encoder takes: passed on as the
        # bytes read as Latin-1 instead, the engine's check refuses it rather than failing.
        token = token.encode("utf-8", "surrogateescape").decode("latin-1")
    return token


def _identify(request: web.Request, spec: Spec | None, tokens: TokenTable,
              tickets: TicketStore) -> Identity | None:
    header = request.headers.get("Authorization")
    has_step_token = spec is not None and spec.step_token and bool(step_token(request))
    if header is not None:
        identity = tokens.bearer(header)
        if identity is not None and (identity.may("worker") or not has_step_token):
            return identity
        # A bearer token that names no one, or whose role may not report for steps, beside the
        # step's own token: the step token speaks (and the engine checks it).
        return _step_identity(request) if has_step_token else identity
    if has_step_token:
        return _step_identity(request)
    if spec is not None and spec.stream is not None:
        ticket = request.query.get("ticket")
        if ticket:
            return tickets.redeem(ticket)
    return None


def _step_identity(request: web.Request) -> Identity:
    """A step run's own token: `worker` on that step's two routes, which check the token."""
    step = request.match_info.get("step", "")
    return Identity(f"step:{request.match_info.get('execution_id', '')}/{step}", "worker",
                    "step_token")
