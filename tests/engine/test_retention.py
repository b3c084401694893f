"""The retention sweeper: finished executions past `finished_after` go, the rest stay."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp.test_utils import TestClient

from tests import workflows
from tests.helpers import (
    API,
    get_json,
    problem_of,
    store_sql,
    submit,
    wait_for_status,
    wait_for_step,
)
from workflowd.api.keys import STORE
from workflowd.clock import format_ts, utcnow
from workflowd.engine.retention import sweep
from workflowd.store import Store


async def _finish(client: TestClient[Any, Any], workflow: str, status: str = "completed",
                  **body: Any) -> str:
    execution_id: str = (await submit(client, workflow, **body))["execution_id"]
    await wait_for_status(client, execution_id, status)
    return execution_id


async def _after_last_finish(client: TestClient[Any, Any], ids: list[str]) -> None:
    """Wait until the clock (at millisecond resolution) is past every `finished_at`."""
    latest = max([(await get_json(client, f"{API}/executions/{i}"))["finished_at"]
                  for i in ids])
    async with asyncio.timeout(5):
        while utcnow() <= latest:
            await asyncio.sleep(0.001)


async def _exists(client: TestClient[Any, Any], execution_id: str) -> bool:
    resp = await client.get(f"{API}/executions/{execution_id}")
    if resp.status == 404:
        await problem_of(resp, 404)
        return False
    assert resp.status == 200, await resp.text()
    return True


async def _age(store: Store, execution_id: str, hours: float) -> None:
    """Make an execution look as if it had finished `hours` ago."""
    rec = await store.get_execution(execution_id)
    assert rec is not None
    assert rec.finished_at is not None
    old = format_ts(datetime.now(UTC) - timedelta(hours=hours))
    # The column retention reads (a write of the record would need its lease on PostgreSQL).
    await store_sql(store, "UPDATE executions SET finished_at = ? WHERE id = ?", old,
                    execution_id)


async def test_sweep_deletes_only_finished_older_than_finished_after(
        client: TestClient[Any, Any]) -> None:
    """With `finished_after` of an hour, only what finished over an hour ago is deleted."""
    store = client.app[STORE]
    old = await _finish(client, "chatty")
    recent = await _finish(client, "three-steps")
    await _age(store, old, hours=2)
    assert await sweep(store, 3600) == 1
    assert not await _exists(client, old)
    assert await _exists(client, recent)
    assert await store.events(old) == []
    assert await store.steps(old) == []
    assert await store.logs(old) == []
    assert await store.events(recent) != []
    assert await sweep(store, 3600) == 0


async def test_sweep_with_zero_keeps_unfinished_executions(client: TestClient[Any, Any]) -> None:
    """`finished_after=0` deletes every finished execution and keeps unfinished ones."""
    store = client.app[STORE]
    finished = [
        await _finish(client, "three-steps"),
        await _finish(client, "chatty"),
        await _finish(client, "flaky", "failed", input={"fail_times": 9}),
    ]
    rejected = (await submit(client, "three-steps", expect=201,
                             require_approval=True))["execution_id"]
    resp = await client.post(f"{API}/executions/{rejected}/reject", json={"reason": "no"})
    assert resp.status == 200
    finished.append(rejected)
    waiting = (await submit(client, "three-steps", expect=201,
                            require_approval=True))["execution_id"]
    gated = await _finish(client, "gated", "awaiting_approval")
    workflows.release("keep")
    running = (await submit(client, "waiter", input={"name": "keep"}))["execution_id"]
    await wait_for_step(client, running)
    await _after_last_finish(client, finished)

    assert await sweep(store, 0) == len(finished)
    for execution_id in finished:
        assert not await _exists(client, execution_id)
        assert await store.events(execution_id) == []
    for execution_id in (waiting, gated, running):
        assert await _exists(client, execution_id)
        assert await store.events(execution_id) != []
    listed = await get_json(client, f"{API}/executions")
    assert {item["execution_id"] for item in listed["items"]} == {waiting, gated, running}
    assert await sweep(store, 0) == 0

    workflows.release("keep").set()
    await wait_for_status(client, running, "completed")
    resp = await client.post(f"{API}/executions/{gated}/approve", json={})
    assert resp.status == 202
    await wait_for_status(client, gated, "completed")
    await _after_last_finish(client, [running, gated])
    assert await sweep(store, 0) == 2
    assert not await _exists(client, running)
    assert await _exists(client, waiting)


async def test_sweep_of_an_empty_store(client: TestClient[Any, Any]) -> None:
    """Sweeping with nothing to delete answers 0."""
    assert await sweep(client.app[STORE], 0) == 0
