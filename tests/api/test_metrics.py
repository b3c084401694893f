"""`/metrics`: Prometheus text that moves as executions run, kept in memory per application."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families
from pytest_aiohttp import AiohttpServer

from tests import workflows
from tests.conftest import MakeClient
from tests.helpers import API, submit, wait_for_status, wait_for_step
from workflowd.api.keys import STORE
from workflowd.engine.retention import sweep

Samples = dict[str, float]


def _key(name: str, labels: dict[str, str]) -> str:
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return f"{name}{{{inner}}}" if inner else name


async def scrape(client: TestClient[Any, Any]) -> Samples:
    """The samples of `/metrics`, keyed `name{label="value",...}` (labels sorted), read with
    prometheus-client's own parser of the text format."""
    resp = await client.get("/metrics")
    assert resp.status == 200
    assert resp.content_type == "text/plain"
    assert "version=0.0.4" in resp.headers["Content-Type"]
    text = await resp.text()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[_key(sample.name, sample.labels)] = sample.value
    return samples


def executions(workflow_id: str, status: str) -> str:
    return _key("workflowd_executions", {"status": status, "workflow_id": workflow_id})


async def eventually(client: TestClient[Any, Any], check: Callable[[Samples], bool],
                     timeout: float = 10.0) -> Samples:
    """Scrape until `check` holds (what moves after an answer, e.g. a socket's close)."""
    async with asyncio.timeout(timeout):
        while not check(samples := await scrape(client)):
            await asyncio.sleep(0.02)
        return samples


async def test_executions_by_workflow_and_status_move_with_commits(
        client: TestClient[Any, Any]) -> None:
    """Finished executions are counted by workflow and status, with events, cycles and steps."""
    before = await scrape(client)
    assert executions("three-steps", "completed") not in before
    for _ in range(2):
        execution_id = (await submit(client, "three-steps"))["execution_id"]
        await wait_for_status(client, execution_id, "completed")
    failed = (await submit(client, "flaky", input={"fail_times": 9}))["execution_id"]
    await wait_for_status(client, failed, "failed")
    after = await scrape(client)
    assert after[executions("three-steps", "completed")] == 2
    assert after[executions("three-steps", "queued")] == 0
    assert after[executions("three-steps", "running")] == 0
    assert after[executions("flaky", "failed")] == 1
    assert after['workflowd_events_total{type="workflow_completed"}'] == 2
    assert after['workflowd_events_total{type="step_started"}'] == 7
    for name in ("workflowd_cycle_duration_seconds", "workflowd_step_duration_seconds"):
        assert after[f'{name}_count{{workflow_id="three-steps"}}'] == 6
        assert after[f'{name}_count{{workflow_id="flaky"}}'] == 1
        assert after[f'{name}_bucket{{le="+Inf",workflow_id="three-steps"}}'] == 6
        assert after[f'{name}_sum{{workflow_id="three-steps"}}'] >= 0
    assert after["workflowd_store_commits_total"] > before["workflowd_store_commits_total"]
    assert after["workflowd_store_writes_total"] >= after["workflowd_store_commits_total"]
    assert after["workflowd_store_commit_seconds_count"] == after["workflowd_store_commits_total"]
    assert after["workflowd_store_rows_per_commit_sum"] >= after["workflowd_store_commits_total"]
    assert after["workflowd_store_write_failures_total"] == 0


@pytest.mark.sqlite_only("a node counts only the executions it holds")
async def test_running_queued_and_waiting(make_client: MakeClient) -> None:
    """The running, queued and awaiting-approval gauges show the engine's current load."""
    client = await make_client(engine={"max_concurrent": 1})
    workflows.release("m1")
    workflows.release("m2")
    first = (await submit(client, "waiter", input={"name": "m1"}))["execution_id"]
    await wait_for_step(client, first)
    second = (await submit(client, "waiter", input={"name": "m2"}))["execution_id"]
    await submit(client, "three-steps", expect=201, require_approval=True)
    now = await scrape(client)
    assert now["workflowd_executions_running"] == 1
    assert now["workflowd_executions_queued"] == 1
    assert now["workflowd_executions_awaiting_approval"] == 1
    assert now[executions("waiter", "running")] == 1
    assert now[executions("waiter", "queued")] == 1
    assert now[executions("three-steps", "awaiting_approval")] == 1

    workflows.release("m1").set()
    workflows.release("m2").set()
    await wait_for_status(client, second, "completed")
    later = await scrape(client)
    assert later["workflowd_executions_running"] == 0
    assert later["workflowd_executions_queued"] == 0
    assert later[executions("waiter", "completed")] == 2
    assert later[executions("waiter", "running")] == 0


async def test_gauges_are_seeded_from_the_store_at_start_up(make_client: MakeClient) -> None:
    """A restarted service counts what the store holds, and goes on moving from there."""
    first = await make_client()
    done = (await submit(first, "three-steps"))["execution_id"]
    await wait_for_status(first, done, "completed")
    await submit(first, "three-steps", expect=201, require_approval=True)
    await first.close()
    second = await make_client()
    seeded = await scrape(second)
    assert seeded[executions("three-steps", "completed")] == 1
    assert seeded[executions("three-steps", "awaiting_approval")] == 1
    again = (await submit(second, "three-steps"))["execution_id"]
    await wait_for_status(second, again, "completed")
    assert (await scrape(second))[executions("three-steps", "completed")] == 2


async def test_retention_removes_what_it_deletes(client: TestClient[Any, Any]) -> None:
    """Executions deleted by retention leave the gauges."""
    for _ in range(2):
        execution_id = (await submit(client, "three-steps"))["execution_id"]
        await wait_for_status(client, execution_id, "completed")
    assert (await scrape(client))[executions("three-steps", "completed")] == 2
    assert await sweep(client.app[STORE], finished_after=0.0) == 2
    assert (await scrape(client))[executions("three-steps", "completed")] == 0


async def test_requests_by_route_template_and_status(client: TestClient[Any, Any]) -> None:
    """Requests are counted by their route's template (never the raw path) and status."""
    for _ in range(2):
        await client.get(f"{API}/executions/nope-{_}")
    await client.get("/no/such/path")
    samples = await scrape(client)
    route = f"{API}/executions/{{execution_id}}"
    labels = {"method": "GET", "route": route, "status": "404"}
    assert samples[_key("workflowd_http_requests_total", labels)] == 2
    unmatched = {"method": "GET", "route": "unmatched", "status": "404"}
    assert samples[_key("workflowd_http_requests_total", unmatched)] == 1
    assert samples[_key("workflowd_http_request_duration_seconds_count", {"route": route})] == 2
    assert not any("nope-" in key or "/no/such" in key for key in samples)


async def test_followers_are_counted_while_open(client: TestClient[Any, Any]) -> None:
    """WebSocket and SSE followers show while they are connected, and leave when closed."""
    workflows.release("f1")
    execution_id = (await submit(client, "waiter", input={"name": "f1"}))["execution_id"]
    ws = await client.ws_connect(f"{API}/executions/{execution_id}/ws")
    assert (await ws.receive_json())["type"] == "snapshot"
    everything = await client.ws_connect(f"{API}/ws")
    sse = await client.get(f"{API}/executions/{execution_id}/events/stream")
    await sse.content.readline()  # the stream has begun
    samples = await scrape(client)
    for kind in ("websocket", "websocket_all", "sse"):
        assert samples[f'workflowd_followers{{kind="{kind}"}}'] == 1, kind
    await ws.close()
    await everything.close()
    sse.close()
    await eventually(client, lambda s: all(
        s[f'workflowd_followers{{kind="{kind}"}}'] == 0
        for kind in ("websocket", "websocket_all", "sse")))
    workflows.release("f1").set()
    await wait_for_status(client, execution_id, "completed")


async def test_outbox_backlog(make_client: MakeClient, aiohttp_server: AiohttpServer) -> None:
    """A webhook waiting to be delivered is in the backlog until its receiver answers."""
    answer = asyncio.Event()
    arrived = asyncio.Event()

    async def hook(request: web.Request) -> web.Response:
        arrived.set()
        await answer.wait()
        return web.Response(status=204)

    receiver = web.Application()
    receiver.router.add_post("/hook", hook)
    server = await aiohttp_server(receiver)
    client = await make_client(webhooks=[{"url": str(server.make_url("/hook"))}])
    assert (await scrape(client))["workflowd_outbox_backlog"] == 0
    execution_id = (await submit(client, "three-steps"))["execution_id"]
    await wait_for_status(client, execution_id, "completed")
    await arrived.wait()
    assert (await scrape(client))["workflowd_outbox_backlog"] == 1
    answer.set()
    done = await eventually(client, lambda s: s["workflowd_outbox_delivered_total"] == 1)
    assert done["workflowd_outbox_backlog"] == 0


async def test_each_app_has_its_own_metrics(make_client: MakeClient, tmp_path: Path) -> None:
    """Two apps in one process count apart (a registry each)."""
    one = await make_client()
    other = await make_client(store={"path": str(tmp_path / "other.db")})
    execution_id = (await submit(one, "three-steps"))["execution_id"]
    await wait_for_status(one, execution_id, "completed")
    assert (await scrape(one))[executions("three-steps", "completed")] == 1
    assert executions("three-steps", "completed") not in await scrape(other)
