"""Routes of executions: reading them, and the decisions a caller makes on them."""

from __future__ import annotations

import base64
import re
from datetime import datetime
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, field_validator

from workflowd import answers as A
from workflowd.answers import Page
from workflowd.api.auth import identity_of
from workflowd.api.idempotency import IDEMPOTENCY_KEY, Answer, Render, answer_once
from workflowd.api.keys import SCHEDULER, SETTINGS, STORE
from workflowd.api.parsing import SQL_INT_MAX, json_response, parse_body, parse_query, sql_int
from workflowd.api.routing import Routes
from workflowd.api.views import execution_view, list_item, live_status, steps_view, trace_view
from workflowd.clock import format_ts, parse_ts
from workflowd.codec import dumps
from workflowd.errors import InvalidTransitionError, ValidationProblem
from workflowd.models import LABEL_KEY, ApproveBody, RejectBody
from workflowd.records import API_PREFIX, ExecutionRecord, ExecutionStatus
from workflowd.store import ExecutionFilter

__all__ = ["live_answer", "routes"]

routes = Routes()
BASE = f"{API_PREFIX}/executions/{{execution_id}}"


class _Query(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ListQuery(_Query):
    workflow_id: str | None = None
    status: ExecutionStatus | None = None
    label: list[str] = Field(default_factory=list)
    created_after: datetime | None = None
    created_before: datetime | None = None
    limit: int = Field(default=50, ge=1, le=500)
    cursor: str | None = None

    @field_validator("created_after", "created_before", mode="before")
    @classmethod
    def _timestamp(cls, value: Any) -> datetime:
        return parse_ts(str(value))

    @field_validator("label")
    @classmethod
    def _labels(cls, labels: list[str]) -> list[str]:
        for label in labels:
            if ":" not in label:
                raise ValueError(f"label filter {label!r} must be key:value")
            # The store quotes the key into a JSON path: only keys a submit accepts reach it.
            if not re.match(LABEL_KEY, label.split(":", 1)[0]):
                raise ValueError(f"label filter {label!r}: the key must match {LABEL_KEY}")
        return labels


class PageQuery(_Query):
    after: int = Field(default=0, ge=0, le=SQL_INT_MAX)
    limit: int = Field(default=100, ge=1, le=500)


def _encode_cursor(num: int) -> str:
    return base64.urlsafe_b64encode(f"n{num}".encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> int:
    # A row number the server gave out: positive and within what SQLite holds (a crafted
    # larger one would overflow in the driver).
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except ValueError:  # binascii.Error and UnicodeDecodeError among them
        text = ""
    num = sql_int(text[1:]) if text.startswith("n") else None
    if not num:
        raise ValidationProblem.from_errors(
            [{"loc": ["query", "cursor"], "msg": "not a cursor this server gave out"}])
    return num


@routes.get(f"{API_PREFIX}/executions", role="viewer", query=ListQuery,
            answers={200: Page[A.ExecutionItem]}, links={"execution_id": "/items/0/execution_id"},
            summary="List executions, newest first, filtered")
async def list_executions(request: web.Request) -> web.Response:
    q = parse_query(request, ListQuery, multi=("label",))
    f = ExecutionFilter(
        workflow_id=q.workflow_id, status=q.status,
        labels=tuple((k, v) for k, v in (label.split(":", 1) for label in q.label)),
        created_after=format_ts(q.created_after) if q.created_after else None,
        created_before=format_ts(q.created_before) if q.created_before else None,
        before_num=_decode_cursor(q.cursor) if q.cursor else None, limit=q.limit,
    )
    records, next_num = await request.app[STORE].list_executions(f)
    return json_response({"items": [list_item(r) for r in records],
                          "next_cursor": _encode_cursor(next_num) if next_num else None})


async def _execution(request: web.Request) -> ExecutionRecord:
    return await request.app[SCHEDULER].get(request.match_info["execution_id"])


@routes.get(BASE, role="viewer", answers={200: A.Execution}, summary="The whole execution")
async def get_execution(request: web.Request) -> web.Response:
    return json_response(execution_view(await _execution(request)))


@routes.get(f"{BASE}/steps", role="viewer", answers={200: Page[A.StepRecord]},
            summary="Step records in cycle order, then the steps not run yet")
async def get_steps(request: web.Request) -> web.Response:
    rec = await _execution(request)
    records = await request.app[STORE].steps(rec.execution_id)
    items = steps_view(rec, records, await request.app[SCHEDULER].definition_of(rec))
    return json_response({"items": items, "next_cursor": None})


@routes.get(f"{BASE}/trace", role="viewer", answers={200: A.Trace},
            summary="The path taken, branch decisions and cycles")
async def get_trace(request: web.Request) -> web.Response:
    rec = await _execution(request)
    records = await request.app[STORE].steps(rec.execution_id)
    return json_response(trace_view(rec, records,
                                    await request.app[SCHEDULER].definition_of(rec)))


@routes.get(f"{BASE}/events", role="viewer", query=PageQuery,
            answers={200: Page[A.Event]}, summary="The persisted events in seq order")
async def get_events(request: web.Request) -> web.Response:
    q = parse_query(request, PageQuery)
    rec = await _execution(request)
    docs = await request.app[STORE].events(rec.execution_id, q.after, q.limit)
    return _page(docs, q.limit, lambda: str(q.after + len(docs)))


@routes.get(f"{BASE}/logs", role="viewer", query=PageQuery,
            answers={200: Page[A.LogLine]}, summary="Lines written by ctx.log, in order")
async def get_logs(request: web.Request) -> web.Response:
    q = parse_query(request, PageQuery)
    rec = await _execution(request)
    rows = await request.app[STORE].logs(rec.execution_id, q.after, q.limit)
    return _page([doc for _, doc in rows], q.limit, lambda: str(rows[-1][0]))


def _page(docs: list[str], limit: int, cursor: Any) -> web.Response:
    # The stored JSON is spliced in as it is: no decode and encode per item.
    next_cursor = dumps(cursor()) if len(docs) == limit else "null"
    return json_response('{"items":[' + ",".join(docs) + '],"next_cursor":' + next_cursor + "}")


@routes.get(f"{BASE}/result", role="viewer", answers={200: A.Result, 409: A.Problem},
            summary="The result or error of a finished execution")
async def get_result(request: web.Request) -> web.Response:
    rec = await _execution(request)
    if not rec.is_terminal:
        raise InvalidTransitionError(f"execution {rec.execution_id} is {rec.status}, not finished")
    return json_response({"status": rec.status, "result": rec.result, "error": rec.error})


def live_answer(status: int, **extra: Any) -> Render:
    """How a decision answers (`answer_once`): `status` with the live status after it and
    `extra` (`approved=True`); the routes that steer an execution (`api.control`) too."""

    def render(rec: ExecutionRecord) -> Answer:
        return status, dumps({**live_status(rec), **extra}), None

    return render


@routes.post(f"{BASE}/approve", role="approver", body=ApproveBody,
             answers={202: A.Approved, 409: A.Problem, 429: A.Problem}, headers=IDEMPOTENCY_KEY,
             summary="Approve an execution awaiting approval")
async def approve(request: web.Request) -> web.Response:
    execution_id = request.match_info["execution_id"]
    body = await parse_body(request, ApproveBody)
    scheduler = request.app[SCHEDULER]
    subject = identity_of(request).subject
    four_eyes = request.app[SETTINGS].auth.four_eyes
    return await answer_once(
        request, f"approve:{execution_id}", live_answer(202, approved=True),
        lambda remember: scheduler.approve(execution_id, body.comment, subject, remember,
                                           four_eyes=four_eyes))


@routes.post(f"{BASE}/reject", role="approver", body=RejectBody,
             answers={200: A.Rejected, 409: A.Problem}, headers=IDEMPOTENCY_KEY,
             summary="Reject an execution awaiting approval")
async def reject(request: web.Request) -> web.Response:
    execution_id = request.match_info["execution_id"]
    body = await parse_body(request, RejectBody)
    scheduler = request.app[SCHEDULER]
    subject = identity_of(request).subject
    return await answer_once(
        request, f"reject:{execution_id}", live_answer(200, rejected=True),
        lambda remember: scheduler.reject(execution_id, body.reason, subject, remember))


@routes.post(f"{BASE}/cancel", role="submitter",
             answers={202: A.Cancelled, 409: A.Problem}, headers=IDEMPOTENCY_KEY,
             summary="Cancel an execution; a running step is cancelled for real")
async def cancel(request: web.Request) -> web.Response:
    execution_id = request.match_info["execution_id"]
    scheduler = request.app[SCHEDULER]
    return await answer_once(
        request, f"cancel:{execution_id}", live_answer(202, cancelled=True),
        lambda remember: scheduler.cancel(execution_id, remember))
