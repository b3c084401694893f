"""Routes of registered workflows, and submitting an execution of one."""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from workflowd import answers as A
from workflowd.answers import Page
from workflowd.api.idempotency import IDEMPOTENCY_KEY, Answer, answer_once
from workflowd.api.keys import HUB, SCHEDULER, WORKFLOWS
from workflowd.api.parsing import json_response, parse_body, parse_query
from workflowd.api.routing import Routes
from workflowd.api.views import execution_view, links, summary, workflow_view
from workflowd.codec import dumps
from workflowd.errors import UnknownWorkflowError
from workflowd.models import SubmitBody
from workflowd.records import API_PREFIX, ExecutionRecord

__all__ = ["routes"]

routes = Routes()
ANONYMOUS = "anonymous"


class SubmitQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")
    wait: float = Field(default=0.0, ge=0.0, le=300.0)


@routes.get(f"{API_PREFIX}/workflows", role="viewer", answers={200: Page[A.WorkflowInfo]},
            links={"workflow_id": "/items/0/id"},
            summary="The registered workflows")
async def list_workflows(request: web.Request) -> web.Response:
    items = [workflow_view(wf) for wf in request.app[WORKFLOWS].values()]
    return json_response({"items": items, "next_cursor": None})


@routes.get(f"{API_PREFIX}/workflows/{{workflow_id}}", role="viewer",
            answers={200: A.WorkflowInfo}, summary="One registered workflow")
async def get_workflow(request: web.Request) -> web.Response:
    workflow_id = request.match_info["workflow_id"]
    wf = request.app[WORKFLOWS].get(workflow_id)
    if wf is None:
        raise UnknownWorkflowError(f"no workflow with id {workflow_id!r}")
    return json_response(workflow_view(wf))


def _submitted(rec: ExecutionRecord) -> Answer:
    status = 201 if rec.status == "awaiting_approval" else 202
    return status, dumps(summary(rec)), links(rec.execution_id)["self"]


@routes.post(f"{API_PREFIX}/workflows/{{workflow_id}}/executions", role="submitter",
             body=SubmitBody, query=SubmitQuery, summary="Submit an execution",
             answers={202: A.Summary, 201: A.Summary, 200: A.Execution, 429: A.Problem},
             links={"execution_id": "/execution_id"},
             headers=IDEMPOTENCY_KEY)
async def submit(request: web.Request) -> web.Response:
    workflow_id = request.match_info["workflow_id"]
    query = parse_query(request, SubmitQuery)
    if workflow_id not in request.app[WORKFLOWS]:
        raise UnknownWorkflowError(f"no workflow with id {workflow_id!r}")
    body = await parse_body(request, SubmitBody)
    scheduler = request.app[SCHEDULER]
    response = await answer_once(
        request, f"submit:{workflow_id}", _submitted,
        lambda remember: scheduler.submit(
            workflow_id, input=body.input, priority=body.priority, labels=body.labels,
            require_approval=body.require_approval,
            callback_url=str(body.callback_url) if body.callback_url else None,
            submitted_by=ANONYMOUS, remember=remember),
    )
    if query.wait <= 0 or response.status != 202:
        return response
    location = response.headers["Location"]
    exec_id = location.rsplit("/", 1)[-1]
    finished = await request.app[HUB].wait_until(
        exec_id, lambda: (r := scheduler.peek(exec_id)) is None or r.is_terminal, query.wait)
    if not finished:
        return response
    rec = await scheduler.get(exec_id)
    return json_response(execution_view(rec), 200, headers={"Location": location})
