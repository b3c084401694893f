"""`/healthz`, `/readyz` and `/metrics` (outside the API prefix)."""

from __future__ import annotations

import re
from typing import Any

from aiohttp.test_utils import TestClient

from tests import workflows
from tests.conftest import MakeClient
from tests.helpers import problem_of, submit, wait_for_status, wait_for_step
from workflowd.api.keys import SCHEDULER

SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$")


async def _metrics(client: TestClient[Any, Any]) -> dict[str, float]:
    """The samples of `/metrics`, keyed `name{labels}`; checks the text format on the way."""
    resp = await client.get("/metrics")
    assert resp.status == 200
    assert resp.content_type == "text/plain"
    assert "version=0.0.4" in resp.headers["Content-Type"]
    text = await resp.text()
    assert text.endswith("\n")
    samples: dict[str, float] = {}
    typed: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            name, kind = line.split()[2:4]
            assert kind in ("counter", "gauge", "histogram", "summary", "untyped")
            typed.add(name)
            continue
        if line.startswith("#") or not line:
            continue
        match = SAMPLE.match(line)
        assert match, line
        assert match.group(1) in typed, f"{match.group(1)} has no # TYPE line"
        samples[match.group(1) + (match.group(2) or "")] = float(match.group(3))
    return samples


async def test_healthz(client: TestClient[Any, Any]) -> None:
    """`/healthz` answers 200 JSON while the process lives."""
    resp = await client.get("/healthz")
    assert resp.status == 200
    assert resp.content_type == "application/json"
    assert (await resp.json())["status"] == "ok"


async def test_readyz_ready_after_start_up(client: TestClient[Any, Any]) -> None:
    """`/readyz` answers 200 once the store is open and recovery has run."""
    resp = await client.get("/readyz")
    assert resp.status == 200, await resp.text()
    assert resp.content_type == "application/json"


async def test_readyz_503_problem_while_not_ready(client: TestClient[Any, Any]) -> None:
    """`/readyz` answers 503 problem JSON while the scheduler is not ready."""
    scheduler = client.app[SCHEDULER]
    scheduler.ready = False
    try:
        body = await problem_of(await client.get("/readyz"), 503)
        assert body["instance"] == "/readyz"
    finally:
        scheduler.ready = True
    assert (await client.get("/readyz")).status == 200


async def test_health_routes_have_no_api_prefix(client: TestClient[Any, Any]) -> None:
    """The health routes live at the root, not under `/api/v1`."""
    for path in ("/api/v1/healthz", "/api/v1/readyz", "/api/v1/metrics"):
        await problem_of(await client.get(path), 404)


async def test_metrics_count_finished_executions(client: TestClient[Any, Any]) -> None:
    """Executions by status and events by type grow with what was run."""
    before = await _metrics(client)
    assert before['workflowd_executions{status="completed"}'] == 0
    for _ in range(2):
        execution_id = (await submit(client, "three-steps"))["execution_id"]
        await wait_for_status(client, execution_id, "completed")
    failed = (await submit(client, "flaky", input={"fail_times": 9}))["execution_id"]
    await wait_for_status(client, failed, "failed")
    after = await _metrics(client)
    assert after['workflowd_executions{status="completed"}'] == 2
    assert after['workflowd_executions{status="failed"}'] == 1
    assert after['workflowd_executions{status="running"}'] == 0
    assert after['workflowd_events_total{type="workflow_completed"}'] == 2
    assert after['workflowd_events_total{type="workflow_failed"}'] == 1
    assert after['workflowd_events_total{type="step_started"}'] == 7
    commits = "workflowd_store_commits_total"
    assert after[commits] > before[commits]
    assert after["workflowd_store_writes_total"] >= after[commits]


async def test_metrics_gauges_follow_running_queued_and_waiting(make_client: MakeClient) -> None:
    """The running, queued and awaiting-approval gauges show the engine's current load."""
    client = await make_client(engine={"max_concurrent": 1})
    workflows.release("m1")
    workflows.release("m2")
    first = (await submit(client, "waiter", input={"name": "m1"}))["execution_id"]
    await wait_for_step(client, first)
    second = (await submit(client, "waiter", input={"name": "m2"}))["execution_id"]
    await submit(client, "three-steps", expect=201, require_approval=True)
    now = await _metrics(client)
    assert now["workflowd_executions_running"] == 1
    assert now["workflowd_executions_queued"] == 1
    assert now["workflowd_executions_awaiting_approval"] == 1
    assert now['workflowd_executions{status="running"}'] == 1
    assert now['workflowd_executions{status="queued"}'] == 1
    assert now['workflowd_executions{status="awaiting_approval"}'] == 1

    workflows.release("m1").set()
    workflows.release("m2").set()
    await wait_for_status(client, second, "completed")
    later = await _metrics(client)
    assert later["workflowd_executions_running"] == 0
    assert later["workflowd_executions_queued"] == 0
    assert later['workflowd_executions{status="completed"}'] == 2
