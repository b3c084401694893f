"""The application factory and the lifecycle of what it holds (store, then scheduler)."""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator

import structlog
from aiohttp import web

from workflowd.api import (
    delivery,
    demo,
    executions,
    health,
    live,
    openapi,
    steps,
    stream,
    workflows,
)
from workflowd.api.keys import (
    HUB,
    INFLIGHT,
    LIVE_BODIES,
    METRICS,
    OUTBOX,
    SCHEDULER,
    SETTINGS,
    SOCKETS,
    STORE,
    WORKFLOWS,
)
from workflowd.api.metrics import Metrics, observe
from workflowd.api.middlewares import problem_json, request_context
from workflowd.api.views import LiveBodies
from workflowd.config import Settings
from workflowd.definitions import load_workflows
from workflowd.engine import Hub, Scheduler
from workflowd.engine.retention import sweep_forever
from workflowd.store import Store

__all__ = ["create_app"]

log = structlog.get_logger("workflowd.app")


async def store_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS].store
    store = await Store.open(settings.path, max_batch=settings.max_batch,
                             commit_interval=settings.commit_interval,
                             synchronous=settings.synchronous)
    if settings.synchronous == "normal":
        log.warning("store_synchronous_normal", path=settings.path,
                    risk="commits are not synced to disk one by one: an OS crash or a power "
                         "cut may lose the last ones (a crash of the process loses nothing)")
    app[STORE] = store
    yield
    await store.close()


async def scheduler_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    scheduler = Scheduler(app[WORKFLOWS], app[STORE], app[HUB], settings.engine,
                          settings.live.progress_interval, app[OUTBOX],
                          settings.server.base_url(), tally=app[METRICS].tally)
    app[SCHEDULER] = scheduler
    await scheduler.recover()
    sweeper = asyncio.create_task(
        sweep_forever(app[STORE], settings.retention.finished_after,
                      settings.retention.sweep_interval), name="retention-sweeper")
    yield
    sweeper.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sweeper
    await scheduler.drain(settings.engine.shutdown_grace)


async def metrics_ctx(app: web.Application) -> AsyncIterator[None]:
    await app[METRICS].seed(app)  # before the outbox and the scheduler change anything
    yield


def create_app(settings: Settings) -> web.Application:
    """Build the app; workflow definitions are loaded and checked here, before anything runs."""
    app = web.Application(middlewares=[request_context, observe, problem_json],
                          client_max_size=settings.server.max_body_bytes)
    app[SETTINGS] = settings
    app[WORKFLOWS] = load_workflows(settings.workflows.modules)
    app[HUB] = Hub()
    app[INFLIGHT] = {}
    app[LIVE_BODIES] = LiveBodies()
    app[SOCKETS] = weakref.WeakSet()
    app[METRICS] = Metrics(access_log=settings.logging.level in ("debug", "info"))
    app.on_shutdown.append(stream.close_sockets)
    app.cleanup_ctx.extend([store_ctx, metrics_ctx, delivery.outbox_ctx, scheduler_ctx])
    # Routes under one prefix are tried in the order they were added: the most polled first.
    for module in (live, workflows, executions, steps, stream, health, demo, openapi):
        app.add_routes(module.routes.table)
    return app
