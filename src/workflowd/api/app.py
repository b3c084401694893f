"""The application factory and the lifecycle of what it holds (store, then scheduler)."""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator, Iterable

import structlog
from aiohttp import web
from aiohttp.typedefs import Middleware

from workflowd.api import (
    artifacts,
    cluster,
    control,
    definitions,
    delivery,
    demo,
    executions,
    health,
    live,
    openapi,
    steps,
    stream,
    tickets,
    ui,
)
from workflowd.api import workflows as workflow_routes  # the name `workflows` is create_app's
from workflowd.api.auth import TicketStore, TokenTable, authorization
from workflowd.api.keys import (
    ARTIFACTS,
    CATALOG,
    HUB,
    INFLIGHT,
    LIVE_BODIES,
    METRICS,
    OUTBOUND,
    OUTBOX,
    SCHEDULER,
    SETTINGS,
    SOCKETS,
    STORE,
    STREAMS,
    SUBMIT_RATE,
    TICKETS,
    WORKFLOWS,
)
from workflowd.api.limits import SubmitRate
from workflowd.api.metrics import Metrics, observe
from workflowd.api.middlewares import problem_json, request_context
from workflowd.api.views import LiveBodies
from workflowd.config import Settings
from workflowd.definitions import Workflow, load_workflows
from workflowd.engine import Hub, Scheduler
from workflowd.engine.cluster import Cluster
from workflowd.engine.retention import sweep_forever
from workflowd.errors import DefinitionError
from workflowd.outbound import OutboundPolicy, OutboundRefused
from workflowd.store import open_store

__all__ = ["create_app"]

log = structlog.get_logger("workflowd.app")


async def store_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS].store
    store = await open_store(app[SETTINGS])
    if settings.synchronous == "normal":
        log.warning("store_synchronous_normal", store=store.where,
                    risk="commits are not synced to disk one by one: an OS crash or a power "
                         "cut may lose the last ones (a crash of the process loses nothing)")
    app[STORE] = store
    yield
    await store.close()


async def scheduler_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    store = app[STORE]
    scheduler = Scheduler(app[WORKFLOWS], store, app[HUB], settings.engine,
                          settings.live.progress_interval, app[OUTBOX],
                          settings.server.base_url(),
                          max_queued_per_subject=settings.limits.max_queued_per_subject,
                          catalog=app[CATALOG], artifacts=app[ARTIFACTS],
                          tally=app[METRICS].tally)
    if store.cluster is not None:
        # Several nodes: leases, requests and events across nodes; the leader does the chores.
        scheduler.cluster = Cluster(scheduler, store.cluster, settings.cluster,
                                    settings.retention, app[OUTBOX])
    app[SCHEDULER] = scheduler
    await scheduler.recover()
    sweeper = None
    if store.cluster is None:
        sweeper = asyncio.create_task(
            sweep_forever(store, settings.retention.finished_after,
                          settings.retention.sweep_interval, app[ARTIFACTS]),
            name="retention-sweeper")
    yield
    if sweeper is not None:
        sweeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sweeper
    await scheduler.drain(settings.engine.shutdown_grace)


async def metrics_ctx(app: web.Application) -> AsyncIterator[None]:
    metrics = app[METRICS]
    await metrics.seed(app)  # before the outbox and the scheduler change anything
    recount = None
    if app[STORE].cluster is not None:
        recount = asyncio.create_task(
            metrics.recount_forever(app[SETTINGS].cluster.poll_interval * 5),
            name="metrics-recount")
    yield
    if recount is not None:
        recount.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await recount


def create_app(settings: Settings, workflows: Iterable[Workflow] = ()) -> web.Application:
    """Build the app; workflow definitions are loaded and checked here, before anything runs:
    those of `[workflows] modules`, and `workflows` given as objects (as tests do)."""
    ticket_store = TicketStore()
    # With auth off there is no authorization middleware at all: every caller is anonymous.
    middlewares: list[Middleware] = [request_context, observe, problem_json]
    if settings.auth.enabled:
        middlewares.append(authorization(TokenTable(settings.auth.tokens), ticket_store))
    app = web.Application(middlewares=middlewares,
                          client_max_size=settings.server.max_body_bytes)
    app[SETTINGS] = settings
    app[TICKETS] = ticket_store
    app[WORKFLOWS] = load_workflows(settings.workflows.modules, workflows)
    app[OUTBOUND] = settings.outbound.policy()
    _check_external_urls(app[WORKFLOWS].values(), app[OUTBOUND])
    app[SUBMIT_RATE] = SubmitRate(settings.limits.submits_per_minute)
    app[HUB] = Hub()
    app[INFLIGHT] = {}
    app[LIVE_BODIES] = LiveBodies()
    app[SOCKETS] = weakref.WeakSet()
    app[STREAMS] = set()
    app[METRICS] = Metrics(access_log=settings.logging.level in ("debug", "info"))
    app.on_shutdown.append(stream.close_sockets)
    app.cleanup_ctx.extend([store_ctx, metrics_ctx, artifacts.artifacts_ctx,
                            delivery.outbox_ctx, definitions.catalog_ctx, scheduler_ctx,
                            demo.demo_ctx])
    # Routes under one prefix are tried in the order they were added: the most polled first.
    for module in (live, workflow_routes, executions, steps, stream, tickets, health, ui, demo,
                   control, definitions, artifacts, cluster, openapi):
        app.add_routes(module.routes.table)
    return app


def _check_external_urls(registered: Iterable[Workflow], policy: OutboundPolicy) -> None:
    """Every external step's `url=` is one the service may send to (`[outbound]`); a path
    names a route of this service."""
    for wf in registered:
        for step in wf.steps:
            if step.url is None or step.url.startswith("/"):
                continue
            try:
                policy.check_url(step.url)
            except OutboundRefused as exc:
                raise DefinitionError(
                    f"workflow {wf.id!r}: external step {step.name!r}: url refused: {exc}",
                ) from None
