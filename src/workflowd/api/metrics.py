"""`/metrics` and the access line: Prometheus metrics of one application, and one log line per
request.

Nothing is counted through prometheus-client's own metric objects on the hot paths: the engine
moves plain numbers (`engine.tally.Tally`), the store's writer counts its commits, and each
request bumps a dict entry and a histogram bucket here. A collector reads them all when the
metrics are scraped, into a registry of this application's own (several apps live in one test
process, each with its own numbers).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.registry import Collector

from workflowd import __version__
from workflowd.api.keys import METRICS, OUTBOX, SCHEDULER, STORE
from workflowd.engine.tally import Histogram, Tally

__all__ = ["FOLLOWER_KINDS", "HTTP_BUCKETS", "Metrics", "observe", "render"]

access_log = structlog.get_logger("workflowd.access")

HTTP_BUCKETS: tuple[float, ...] = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                   0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
FOLLOWER_KINDS = ("websocket", "websocket_all", "sse")
# Probes polled every few seconds by an orchestrator: counted, but not logged line by line.
UNLOGGED = frozenset({"/healthz", "/readyz"})
UNMATCHED = "unmatched"  # a path no route matched: never the raw path (unbounded labels)


class Metrics:
    """One application's numbers; the engine's share (`tally`) is handed to its scheduler."""

    def __init__(self, access_log: bool = True) -> None:
        # Write an access line per request (off below `info`: the check is cheaper than
        # structlog's filtering, a few microseconds on every request).
        self.access_log = access_log
        self.tally = Tally()
        # (method, route template, status) -> requests answered; route -> seconds to answer.
        self.requests: dict[tuple[str, str, int], int] = {}
        self.latency: dict[str, Histogram] = {}
        self.followers: dict[str, int] = dict.fromkeys(FOLLOWER_KINDS, 0)
        self.deliveries_at_start = 0  # the outbox's backlog in the store at start-up
        self.app: web.Application | None = None
        self.registry = CollectorRegistry()
        self.registry.register(_Collector(self))

    async def seed(self, app: web.Application) -> None:
        """Read the store's counts once, before this process changes anything."""
        store = app[STORE]
        self.app = app
        self.tally.seed(await store.count_by_workflow_status())
        self.deliveries_at_start = await store.pending_deliveries()
        store.on_deleted_counts.append(self.tally.deleted)

    async def recount_forever(self, interval: float) -> None:
        """Several nodes share the store and each counts only its own commits: read the
        store's counts every `interval` seconds instead (a node's moves in between are kept
        until the next read)."""
        assert self.app is not None
        store = self.app[STORE]
        while True:
            await asyncio.sleep(interval)
            try:
                counts = await store.count_by_workflow_status()
            except Exception as exc:  # noqa: BLE001 - a passing outage: again at the next turn
                structlog.get_logger("workflowd.metrics").warning("recount_failed",
                                                                  error=str(exc))
                continue
            executions = self.tally.executions
            executions.clear()
            executions.update(counts)

    def observed(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        requests = self.requests
        requests[key] = requests.get(key, 0) + 1
        histogram = self.latency.get(route)
        if histogram is None:
            histogram = self.latency[route] = Histogram(HTTP_BUCKETS)
        histogram.observe(seconds)


def render(metrics: Metrics) -> web.Response:
    return web.Response(body=generate_latest(metrics.registry),
                        headers={"Content-Type": CONTENT_TYPE_PLAIN_0_0_4})


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count the request by its route template and status, and write its access line."""
    began = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:  # a redirect or 304 raised past the problem middleware
        status = exc.status
        raise
    except asyncio.CancelledError:
        status = 499  # the client went away before the answer
        raise
    finally:
        seconds = time.perf_counter() - began
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else UNMATCHED
        metrics = request.app[METRICS]
        metrics.observed(request.method, route, status, seconds)
        if metrics.access_log and route not in UNLOGGED:
            # The template, not the path: no ids or query strings (tickets, step tokens).
            access_log.info("request", method=request.method, route=route, status=status,
                            duration_ms=round(seconds * 1000, 2))


class _Collector(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        yield from _engine(m)
        yield from _http(m)
        app = m.app
        if app is not None:
            yield from _store(app)
            yield from _outbox(m, app)
            yield from _cluster(app)
        info = GaugeMetricFamily("workflowd_info", "The running version.", labels=["version"])
        info.add_metric([__version__], 1)
        yield info


def _engine(m: Metrics) -> Iterator[Metric]:
    tally = m.tally
    executions = GaugeMetricFamily(
        "workflowd_executions", "Executions in the store by workflow and status.",
        labels=["workflow_id", "status"])
    totals: dict[str, float] = {}
    for (workflow_id, status), count in sorted(tally.executions.items()):
        executions.add_metric([workflow_id, status], count)
        totals[status] = totals.get(status, 0) + count
    yield executions
    app = m.app
    scheduler = app.get(SCHEDULER) if app is not None else None
    for name, what, value in (
        ("running", "Executions with a running task.", scheduler.running if scheduler else 0),
        ("queued", "Executions waiting for a slot.", scheduler.queued if scheduler else 0),
        ("awaiting_approval", "Executions stopped at an approval.",
         totals.get("awaiting_approval", 0)),
        ("paused", "Executions paused (by a pause, or before each step in manual mode).",
         totals.get("paused", 0)),
        ("held", "Unfinished executions of a workflow not registered now, held until it is.",
         len(scheduler.held) if scheduler else 0),
    ):
        yield GaugeMetricFamily(f"workflowd_executions_{name}", what, value=value)
    events = CounterMetricFamily("workflowd_events", "Events committed since start, by type.",
                                 labels=["type"])
    for event_type, n in sorted(tally.events.items()):
        events.add_metric([event_type], n)
    yield events
    for name, what, histograms in (
        ("workflowd_cycle_duration_seconds",
         "Seconds a cycle's step ran, all its attempts and retries, by workflow (steps run in "
         "the process).",
         tally.cycles),
        ("workflowd_step_duration_seconds",
         "Seconds a step's attempts took, by workflow (approvals left out).", tally.steps),
    ):
        family = HistogramMetricFamily(name, what, labels=["workflow_id"])
        for workflow_id, histogram in sorted(histograms.items()):
            family.add_metric([workflow_id], histogram.cumulative(), histogram.total)
        yield family
    followers = GaugeMetricFamily("workflowd_followers",
                                  "Open followers: WebSockets of one execution or of all, SSE.",
                                  labels=["kind"])
    for kind, n in m.followers.items():
        followers.add_metric([kind], n)
    yield followers


def _http(m: Metrics) -> Iterator[Metric]:
    requests = CounterMetricFamily("workflowd_http_requests",
                                   "Requests answered, by method, route template and status.",
                                   labels=["method", "route", "status"])
    for (method, route, status), n in sorted(m.requests.items()):
        requests.add_metric([method, route, str(status)], n)
    yield requests
    latency = HistogramMetricFamily("workflowd_http_request_duration_seconds",
                                    "Seconds to answer, by route template.", labels=["route"])
    for route, histogram in sorted(m.latency.items()):
        latency.add_metric([route], histogram.cumulative(), histogram.total)
    yield latency


def _store(app: web.Application) -> Iterator[Metric]:
    store = app.get(STORE)
    if store is None:
        return
    writer = store.writer
    yield CounterMetricFamily("workflowd_store_commits", "Transactions committed.",
                              value=writer.commits)
    yield CounterMetricFamily("workflowd_store_writes",
                              "Writes committed (a commit holds one or more).",
                              value=writer.writes)
    yield CounterMetricFamily("workflowd_store_write_failures",
                              "Writes the store refused (disk full, locked, a constraint).",
                              value=writer.failures)
    yield SummaryMetricFamily("workflowd_store_commit_seconds",
                              "Seconds each transaction took to commit (synced to disk).",
                              count_value=writer.commits, sum_value=writer.commit_seconds)
    yield SummaryMetricFamily("workflowd_store_rows_per_commit",
                              "Rows (snapshots, step records, events) each transaction wrote.",
                              count_value=writer.commits, sum_value=writer.rows)


def _cluster(app: web.Application) -> Iterator[Metric]:
    """This node's part in a cluster on PostgreSQL (each node serves its own)."""
    scheduler = app.get(SCHEDULER)
    if scheduler is None or scheduler.cluster is None:
        return
    cluster = scheduler.cluster
    info = GaugeMetricFamily("workflowd_node_info", "This node of the cluster.",
                             labels=["node_id"])
    info.add_metric([cluster.node_id], 1)
    yield info
    yield GaugeMetricFamily("workflowd_cluster_leases", "Executions this node holds a lease on.",
                            value=len(scheduler.owners))
    yield GaugeMetricFamily(
        "workflowd_cluster_backlog",
        "Queued executions no node has claimed yet (the cluster's, as last counted).",
        value=cluster.backlog)
    yield GaugeMetricFamily("workflowd_cluster_leader",
                            "1 while this node holds the leader row (does the chores).",
                            value=int(cluster.chores.leading))
    for name, value, what in (
            ("claimed", cluster.claimed, "Executions this node claimed."),
            ("taken_over", cluster.taken_over,
             "Claimed executions that were running on a node that stopped renewing."),
            ("let_go", cluster.lost, "Executions this node lost the lease of and let go.")):
        yield CounterMetricFamily(f"workflowd_cluster_{name}", what, value=value)


def _outbox(m: Metrics, app: web.Application) -> Iterator[Metric]:
    outbox = app.get(OUTBOX)
    if outbox is None:
        return
    backlog = (m.deliveries_at_start + m.tally.deliveries_queued - outbox.delivered
               - outbox.given_up)
    yield GaugeMetricFamily("workflowd_outbox_backlog",
                            "Webhook and external-step deliveries waiting to be sent.",
                            value=max(backlog, 0))
    yield CounterMetricFamily("workflowd_outbox_delivered", "Deliveries sent.",
                              value=outbox.delivered)
    yield CounterMetricFamily("workflowd_outbox_failed_attempts",
                              "Delivery attempts that failed (each is retried).",
                              value=outbox.failed_attempts)
