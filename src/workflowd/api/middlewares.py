"""Middlewares: request-scoped log fields, and every error turned into problem JSON."""

from __future__ import annotations

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from workflowd.api.problems import problem
from workflowd.errors import BadRequestError, WorkflowdError
from workflowd.ids import new_request_id

__all__ = ["problem_json", "request_context"]

log = structlog.get_logger("workflowd.api")


@web.middleware
async def request_context(request: web.Request, handler: Handler) -> web.StreamResponse:
    # Bound for this request only: requests on one keep-alive connection share a task, and
    # resetting the one variable set here is cheaper than clearing the whole context.
    tokens = structlog.contextvars.bind_contextvars(
        request_id=request.headers.get("X-Request-Id") or new_request_id())
    try:
        return await handler(request)
    finally:
        structlog.contextvars.reset_contextvars(**tokens)


@web.middleware
async def problem_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    instance = request.path
    try:
        if "\x00" in instance or "\x00" in request.query_string:
            # No id, name or value holds one (PostgreSQL cannot store it): refused before any
            # handler reads them.
            raise BadRequestError("the path or the query holds a NUL character (%00)")
        return await handler(request)
    except WorkflowdError as exc:
        headers = exc.headers() or None
        return problem(exc.status, exc.detail, instance=instance, code=exc.code, title=exc.title,
                       extra=exc.extra(), headers=headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {k: v for k, v in exc.headers.items()
                   if k in ("Allow", "Retry-After", "Upgrade")}
        detail = _http_detail(exc, request)
        return problem(exc.status, detail, instance=instance, title=exc.reason, headers=headers)
    except Exception:
        log.exception("unhandled_error", path=instance, method=request.method)
        return problem(500, "the server failed to answer this request", instance=instance,
                       code="internal_error")


def _http_detail(exc: web.HTTPException, request: web.Request) -> str:
    if exc.status == 404:
        return f"no route for {request.path}"
    if exc.status == 405:
        return f"{request.method} is not allowed on {request.path}"
    if exc.status == 413:
        return "the request body is larger than the server accepts (server.max_body_bytes)"
    return exc.text or exc.reason
