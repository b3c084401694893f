"""`/healthz` and `/readyz` (outside the API prefix); `/metrics` is tests/api/test_metrics.py."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from tests.helpers import problem_of
from workflowd.api.keys import SCHEDULER


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
