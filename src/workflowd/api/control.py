"""Routes that steer an execution by hand: pause, resume, and one step at a time (API.md §12)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from workflowd import answers as A
from workflowd.api.executions import live_answer
from workflowd.api.idempotency import IDEMPOTENCY_KEY, answer_once
from workflowd.api.keys import SCHEDULER
from workflowd.api.routing import Routes
from workflowd.engine import Remember
from workflowd.records import API_PREFIX, ExecutionRecord

__all__ = ["routes"]

routes = Routes()
BASE = f"{API_PREFIX}/executions/{{execution_id}}"
Act = Callable[[str, Remember | None], Awaitable[ExecutionRecord]]


async def _steer(request: web.Request, action: str, act: Act, **extra: Any) -> web.Response:
    execution_id = request.match_info["execution_id"]
    return await answer_once(request, f"{action}:{execution_id}", live_answer(202, **extra),
                             lambda remember: act(execution_id, remember))


@routes.post(f"{BASE}/pause", role="submitter", answers={202: A.Paused, 409: A.Problem},
             headers=IDEMPOTENCY_KEY,
             summary="Pause an execution after the cycle under way commits")
async def pause(request: web.Request) -> web.Response:
    return await _steer(request, "pause", request.app[SCHEDULER].pause, pause_requested=True)


@routes.post(f"{BASE}/resume", role="submitter",
             answers={202: A.Resumed, 409: A.Problem, 429: A.Problem}, headers=IDEMPOTENCY_KEY,
             summary="Let a paused or manual execution run on by itself")
async def resume(request: web.Request) -> web.Response:
    return await _steer(request, "resume", request.app[SCHEDULER].resume, resumed=True)


@routes.post(f"{BASE}/step", role="submitter",
             answers={202: A.Stepped, 409: A.Problem, 429: A.Problem}, headers=IDEMPOTENCY_KEY,
             summary="Run the next step of a paused execution, then pause again")
async def step(request: web.Request) -> web.Response:
    return await _steer(request, "step", request.app[SCHEDULER].step, stepped=True)
