"""Routes an external worker calls: progress of its step, and its completion."""

from __future__ import annotations

from aiohttp import web

from workflowd import answers as A
from workflowd.api.auth import identity_of, step_token
from workflowd.api.idempotency import IDEMPOTENCY_KEY, Answer, answer_once
from workflowd.api.keys import SCHEDULER, SETTINGS
from workflowd.api.parsing import json_response, parse_body
from workflowd.api.routing import Routes
from workflowd.codec import dumps
from workflowd.context import ProgressReport
from workflowd.models import CompleteBody, ProgressBody
from workflowd.records import API_PREFIX, ExecutionRecord

__all__ = ["routes"]

routes = Routes()
BASE = f"{API_PREFIX}/executions/{{execution_id}}/steps/{{step}}"


@routes.post(f"{BASE}/progress", role="worker", step_token=True, body=ProgressBody,
             answers={202: A.ProgressAccepted, 403: A.Problem, 409: A.Problem},
             summary="Report progress of the step running or waited on")
async def step_progress(request: web.Request) -> web.Response:
    body = await parse_body(request, ProgressBody)
    report = ProgressReport(body.percentage, body.message, body.current_task,
                            body.estimated_remaining_seconds, body.custom_data)
    # Checked after the execution and step are known, so an unknown id is still 404.
    token = step_token(request)
    identity = identity_of(request)
    # With auth off a report without a token is taken (API.md §3); a wrong one is still 403.
    trusted = identity.any_step or (identity.via == "anonymous" and not token
                                    and not request.app[SETTINGS].auth.enabled)
    rec = await request.app[SCHEDULER].step_progress(
        request.match_info["execution_id"], request.match_info["step"], token, report,
        trusted=trusted)
    return json_response({"execution_id": rec.execution_id, "step": request.match_info["step"],
                          "accepted": True}, 202)


def _completed(rec: ExecutionRecord) -> Answer:
    return 202, dumps({"execution_id": rec.execution_id, "accepted": True,
                       "status": rec.status}), None


@routes.post(f"{BASE}/complete", role="worker", step_token=True, body=CompleteBody,
             answers={202: A.Completion, 403: A.Problem, 409: A.Problem}, headers=IDEMPOTENCY_KEY,
             summary="An outside worker finishes its step")
async def step_complete(request: web.Request) -> web.Response:
    body = await parse_body(request, CompleteBody)
    execution_id, step = request.match_info["execution_id"], request.match_info["step"]
    token = step_token(request)
    trusted = identity_of(request).any_step  # a worker's or admin's bearer token
    scheduler = request.app[SCHEDULER]
    return await answer_once(
        request, f"complete:{execution_id}:{step}", _completed,
        lambda remember: scheduler.step_complete(
            execution_id, step, token, success=body.success, output=body.output,
            error=body.error_info(), remember=remember, trusted=trusted))
