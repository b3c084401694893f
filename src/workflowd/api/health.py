"""Liveness, readiness and Prometheus metrics (outside the API prefix)."""

from __future__ import annotations

from aiohttp import web

from workflowd.answers import Health, Problem
from workflowd.api.keys import METRICS, SCHEDULER
from workflowd.api.metrics import render
from workflowd.api.parsing import json_response
from workflowd.api.routing import Routes
from workflowd.errors import NotReadyError

__all__ = ["routes"]

routes = Routes()


@routes.get("/healthz", role="public", answers={200: Health}, summary="Liveness")
async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


@routes.get("/readyz", role="public", answers={200: Health, 503: Problem},
            summary="Readiness: 503 until the store is open and recovery has run")
async def readyz(request: web.Request) -> web.Response:
    scheduler = request.app.get(SCHEDULER)
    if scheduler is None or not scheduler.ready:
        raise NotReadyError("the store is not open or recovery has not run yet")
    return json_response({"status": "ready"})


@routes.get("/metrics", role="viewer", answers={200: None}, media_type="text/plain",
            summary="Prometheus metrics")
async def metrics(request: web.Request) -> web.Response:
    return render(request.app[METRICS])
