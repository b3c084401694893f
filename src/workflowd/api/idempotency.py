"""`Idempotency-Key`: the first answer is committed with its change and replayed to repeats."""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Awaitable, Callable

from aiohttp import web

from workflowd.api.keys import INFLIGHT, STORE
from workflowd.api.parsing import json_response
from workflowd.engine import Remember
from workflowd.errors import BadRequestError, IdempotencyMismatchError
from workflowd.records import ExecutionRecord, IdempotencyRecord
from workflowd.store import Write

__all__ = ["IDEMPOTENCY_KEY", "KEY_PATTERN", "Answer", "Render", "Settle", "answer_once"]

# How routes that answer through `answer_once` declare the header (`Routes(headers=...)`).
IDEMPOTENCY_KEY = {"Idempotency-Key": "1 to 255 printable ASCII characters: a repeat of the "
                                      "request with the same key answers what the first one "
                                      "answered"}
# What a key may be (the OpenAPI document says so too): printable ASCII, as the header's
# draft standard has it. Not UTF-8 would reach the store as surrogates it cannot encode.
KEY_PATTERN = "[ -~]{1,255}"
_KEY = re.compile(KEY_PATTERN)

# status, body, Location
Answer = tuple[int, str, str | None]
Render = Callable[[ExecutionRecord], Answer]
Act = Callable[[Remember | None], Awaitable[ExecutionRecord]]
# What a first request finally answers, from its answer as committed (a sync submit's wait).
Settle = Callable[[Answer], Awaitable[Answer]]


def _response(status: int, body: str, location: str | None) -> web.Response:
    return json_response(body, status, headers={"Location": location} if location else None)


async def answer_once(request: web.Request, scope: str, render: Render, act: Act,
                      settle: Settle | None = None) -> web.Response:
    """Run `act` once per key; a repeat gets the first answer, a different request with the
    same key gets 422, and a repeat arriving while the first is in flight waits for it.

    `settle` turns the committed answer into the one the first request gets (a sync submit's
    200 once it ended in time); that one is then kept for repeats, which are never settled."""
    key = request.headers.get("Idempotency-Key")
    if key is None:
        answer = render(await act(None))
        return _response(*(await settle(answer) if settle is not None else answer))
    if _KEY.fullmatch(key) is None:
        raise BadRequestError("Idempotency-Key must be 1 to 255 printable ASCII characters")
    body = await request.read()
    fingerprint = hashlib.sha256(request.method.encode() + request.path.encode() + b"\0" + body
                                 ).hexdigest()
    inflight = request.app[INFLIGHT]
    while (pending := inflight.get((scope, key))) is not None:
        await asyncio.shield(pending)
    # Claim the key before the next await, so a concurrent repeat waits instead of acting too.
    done = asyncio.get_running_loop().create_future()
    inflight[(scope, key)] = done
    try:
        kept = await request.app[STORE].idempotency(scope, key)
        if kept is not None:
            if kept.fingerprint != fingerprint:
                raise IdempotencyMismatchError(
                    f"Idempotency-Key {key!r} was used for a different request")
            return _response(kept.status, kept.body, kept.location)

        def remember(rec: ExecutionRecord) -> IdempotencyRecord:
            return IdempotencyRecord(scope, key, fingerprint, *render(rec))

        first = render(await act(remember))
        answer = await settle(first) if settle is not None else first
        if answer != first:
            await request.app[STORE].commit(
                Write(idempotency=IdempotencyRecord(scope, key, fingerprint, *answer)))
        return _response(*answer)
    finally:
        del inflight[(scope, key)]
        done.set_result(None)
