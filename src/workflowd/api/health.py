"""Liveness, readiness and Prometheus metrics (outside the API prefix)."""

from __future__ import annotations

from collections import Counter

from aiohttp import web

from workflowd.api.keys import SCHEDULER, STORE
from workflowd.api.parsing import json_response
from workflowd.api.routing import Routes
from workflowd.errors import NotReadyError
from workflowd.records import ExecutionStatus

__all__ = ["routes"]

routes = Routes()
STATUSES: tuple[str, ...] = ExecutionStatus.__args__  # type: ignore[attr-defined]


@routes.get("/healthz", role="public", summary="Liveness")
async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


@routes.get("/readyz", role="public",
            summary="Readiness: 503 until the store is open and recovery has run")
async def readyz(request: web.Request) -> web.Response:
    scheduler = request.app.get(SCHEDULER)
    if scheduler is None or not scheduler.ready:
        raise NotReadyError("the store is not open or recovery has not run yet")
    return json_response({"status": "ready"})


def _metric(lines: list[str], name: str, kind: str, help_: str,
            samples: list[tuple[str, float]]) -> None:
    lines.append(f"# HELP {name} {help_}")
    lines.append(f"# TYPE {name} {kind}")
    lines.extend(f"{name}{labels} {value:g}" for labels, value in samples)


@routes.get("/metrics", role="viewer", summary="Prometheus metrics")
async def metrics(request: web.Request) -> web.Response:
    scheduler = request.app[SCHEDULER]
    store = request.app[STORE]
    by_status = await store.count_by_status()
    awaiting = sum(1 for owner in scheduler.owners.values()
                   if owner.committed.status == "awaiting_approval")
    events: Counter[str] = scheduler.ledger.events_by_type
    lines: list[str] = []
    _metric(lines, "workflowd_executions", "gauge", "Executions in the store by status.",
            [(f'{{status="{s}"}}', by_status.get(s, 0)) for s in STATUSES])
    _metric(lines, "workflowd_executions_running", "gauge", "Executions with a running task.",
            [("", scheduler.running)])
    _metric(lines, "workflowd_executions_queued", "gauge", "Executions waiting for a slot.",
            [("", scheduler.queued)])
    _metric(lines, "workflowd_executions_awaiting_approval", "gauge",
            "Executions stopped at an approval.", [("", awaiting)])
    _metric(lines, "workflowd_executions_held", "gauge",
            "Unfinished executions of a workflow not registered now, held until it is.",
            [("", len(scheduler.held))])
    _metric(lines, "workflowd_events_total", "counter", "Events committed since start, by type.",
            [(f'{{type="{t}"}}', n) for t, n in sorted(events.items())])
    _metric(lines, "workflowd_store_commits_total", "counter", "Transactions committed.",
            [("", store.writer.commits)])
    _metric(lines, "workflowd_store_writes_total", "counter",
            "Writes committed (a commit holds one or more).", [("", store.writer.writes)])
    return web.Response(text="\n".join(lines) + "\n",
                        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})
