"""Routes of registered workflows, and submitting an execution of one."""

from __future__ import annotations

import asyncio
import functools

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from workflowd import answers as A
from workflowd.answers import Page
from workflowd.api.artifacts import check_input_artifacts
from workflowd.api.auth import identity_of
from workflowd.api.definitions import definition_view
from workflowd.api.idempotency import IDEMPOTENCY_KEY, Answer, answer_once
from workflowd.api.keys import CATALOG, HUB, OUTBOUND, SCHEDULER, SUBMIT_RATE, WORKFLOWS
from workflowd.api.parsing import json_response, parse_body, parse_query
from workflowd.api.routing import Routes
from workflowd.api.views import execution_view, links, summary, workflow_view
from workflowd.codec import dumps
from workflowd.engine import Remember
from workflowd.errors import (
    NotReadyError,
    QueueFullError,
    UnknownWorkflowError,
    ValidationProblem,
)
from workflowd.models import SubmitBody
from workflowd.outbound import OutboundRefused
from workflowd.records import API_PREFIX, ExecutionRecord

__all__ = ["routes"]

routes = Routes()


class SubmitQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")
    wait: float = Field(default=0.0, ge=0.0, le=300.0)


@routes.get(f"{API_PREFIX}/workflows", role="viewer", answers={200: Page[A.WorkflowInfo]},
            links={"workflow_id": "/items/0/id"},
            summary="The workflows: those of Python modules, then those defined as JSON")
async def list_workflows(request: web.Request) -> web.Response:
    items = [workflow_view(wf) for wf in request.app[WORKFLOWS].values()]
    items.extend(definition_view(d) for d in await request.app[CATALOG].listing())
    return json_response({"items": items, "next_cursor": None})


@routes.get(f"{API_PREFIX}/workflows/{{workflow_id}}", role="viewer",
            answers={200: A.WorkflowInfo},
            summary="One workflow (a JSON one at its latest version)")
async def get_workflow(request: web.Request) -> web.Response:
    workflow_id = request.match_info["workflow_id"]
    wf = request.app[WORKFLOWS].get(workflow_id)
    if wf is not None:
        return json_response(workflow_view(wf))
    defined = await request.app[CATALOG].current_json(workflow_id)
    if defined is None:
        raise UnknownWorkflowError(f"no workflow with id {workflow_id!r}")
    return json_response(definition_view(defined))


def _submitted(rec: ExecutionRecord) -> Answer:
    status = 201 if rec.status == "awaiting_approval" else 202
    return status, dumps(summary(rec)), links(rec.execution_id)["self"]


async def _ended(request: web.Request, execution_id: str, timeout: float,
                 ) -> ExecutionRecord | None:
    """The execution once it has ended, if it does within `timeout` seconds. Read again at
    each of its commits the hub hears of: one this node does not hold (in a cluster: another
    node runs it, or it waits for someone) is read from the store, and is never taken for
    ended because it is not in memory here."""
    scheduler, hub = request.app[SCHEDULER], request.app[HUB]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        rec = await scheduler.get(execution_id)
        remaining = deadline - loop.time()
        if rec.is_terminal or remaining <= 0:
            return rec if rec.is_terminal else None
        await hub.wait_until(execution_id, functools.partial(_newer, request, execution_id,
                                                             rec.seq), remaining)


def _newer(request: web.Request, execution_id: str, seq: int) -> bool:
    """Whether something after `seq` committed: in memory if this node holds the execution,
    else as the hub heard of it."""
    held = request.app[SCHEDULER].peek(execution_id)
    return (held.seq if held is not None else request.app[HUB].seen(execution_id)) > seq


@routes.post(f"{API_PREFIX}/workflows/{{workflow_id}}/executions", role="submitter",
             body=SubmitBody, query=SubmitQuery, summary="Submit an execution",
             answers={202: A.Summary, 201: A.Summary, 200: A.Execution, 429: A.Problem},
             links={"execution_id": "/execution_id"},
             headers=IDEMPOTENCY_KEY)
async def submit(request: web.Request) -> web.Response:
    workflow_id = request.match_info["workflow_id"]
    query = parse_query(request, SubmitQuery)
    wf = await request.app[CATALOG].current(workflow_id)  # the Python one, else the JSON one
    if wf is None:
        raise UnknownWorkflowError(f"no workflow with id {workflow_id!r}")
    body = await parse_body(request, SubmitBody)
    callback_url = str(body.callback_url) if body.callback_url else None
    if callback_url is not None:
        try:
            request.app[OUTBOUND].check_url(callback_url)
        except OutboundRefused as exc:
            raise ValidationProblem.from_errors(
                [{"loc": ["body", "callback_url"], "msg": f"refused: {exc}"}]) from None
    subject = identity_of(request).subject
    scheduler = request.app[SCHEDULER]

    async def act(remember: Remember | None) -> ExecutionRecord:
        # Inside `answer_once`: a replay of an Idempotency-Key answers what the first did,
        # spending no rate and checking nothing again.
        rate = request.app[SUBMIT_RATE]
        rate.take(subject)
        try:
            named = await check_input_artifacts(request, body.input)
            return await scheduler.submit(
                workflow_id, input=body.input, priority=body.priority, labels=body.labels,
                require_approval=body.require_approval, callback_url=callback_url,
                submitted_by=subject, remember=remember, mode=body.mode, workflow=wf,
                artifacts=named)
        except (QueueFullError, ValidationProblem, UnknownWorkflowError, NotReadyError):
            # Refused, nothing committed: nothing spent. Not so a 503, whose write may have
            # committed all the same (a connection lost mid-commit).
            rate.give_back(subject)
            raise

    async def settle(first: Answer) -> Answer:
        # `?wait=`: the whole execution with 200 if it ends in time, else the first answer.
        status, _, location = first
        if query.wait <= 0 or status != 202 or body.mode == "manual" or location is None:
            return first  # a manual one waits for its `step` calls: no use waiting here
        rec = await _ended(request, location.rsplit("/", 1)[-1], query.wait)
        return first if rec is None else (200, dumps(execution_view(rec)), location)

    return await answer_once(request, f"submit:{workflow_id}", _submitted, act, settle)
