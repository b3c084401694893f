"""Requests and ends while the store refuses writes (its file locked by another program): a 503
changes nothing, and no execution is left without a task or a place in the queue."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests import workflows
from tests.conftest import MakeClient
from tests.helpers import (
    API,
    LogWatch,
    assert_gapless,
    events,
    file_locked,
    get_json,
    problem_of,
    submit,
    wait_for_event,
    wait_for_status,
)
from workflowd.config import Settings

Client = TestClient[Any, Any]
TERMINAL = ("completed", "failed", "cancelled", "timed_out", "rejected")


@pytest.mark.sqlite_only("it holds the SQLite file's write lock to make the store refuse")
async def test_a_refused_cancel_of_a_queued_execution_leaves_it_queued(
        make_client: MakeClient, settings: Settings) -> None:
    """A cancel of a queued execution answered 503 changed nothing: it still runs later."""
    client = await make_client(engine={"max_concurrent": 1})
    blocker = (await submit(client, "waiter", input={"name": "b"}))["execution_id"]
    await wait_for_event(client, blocker, "step_started")
    queued = (await submit(client, "three-steps"))["execution_id"]
    with file_locked(settings.store.path):
        async with asyncio.timeout(10):
            resp = await client.post(f"{API}/executions/{queued}/cancel")
        await problem_of(resp, 503)
    assert (await get_json(client, f"{API}/executions/{queued}"))["status"] == "queued"
    workflows.release("b").set()
    assert (await wait_for_status(client, blocker, *TERMINAL))["status"] == "completed"
    assert (await wait_for_status(client, queued, *TERMINAL))["status"] == "completed"


@pytest.mark.sqlite_only("it holds the SQLite file's write lock to make the store refuse")
async def test_a_refused_cancel_of_a_running_step_is_not_an_internal_error(
        make_client: MakeClient, settings: Settings, log_watch: LogWatch) -> None:
    """A cancel of a running step while the store refuses: 503, no runner crash; the execution
    is not left `running` without a task, and a cancel once the store writes again ends it."""
    client = await make_client()
    execution_id = (await submit(client, "waiter", input={"name": "w"}))["execution_id"]
    await wait_for_event(client, execution_id, "step_started")
    with file_locked(settings.store.path):
        async with asyncio.timeout(10):
            resp = await client.post(f"{API}/executions/{execution_id}/cancel")
        await problem_of(resp, 503)
    assert not log_watch.find("runner_crashed")
    live = await get_json(client, f"{API}/executions/{execution_id}/status/live")
    if live["status"] == "running":  # the step was cut: it must run again, not be stranded
        metrics = await (await client.get("/metrics")).text()
        assert "workflowd_executions_running 1.0" in metrics.splitlines()
    resp = await client.post(f"{API}/executions/{execution_id}/cancel")
    assert resp.status == 202, await resp.text()
    assert (await wait_for_status(client, execution_id, *TERMINAL))["status"] == "cancelled"
    record = await get_json(client, f"{API}/executions/{execution_id}")
    assert record["error"]["code"] == "cancelled"
    assert_gapless(await events(client, execution_id))


@pytest.mark.sqlite_only("it holds the SQLite file's write lock to make the store refuse")
async def test_an_internal_error_while_the_store_refuses_is_recorded_later(
        make_client: MakeClient, settings: Settings, monkeypatch: pytest.MonkeyPatch,
        log_watch: LogWatch) -> None:
    """A runner that dies of a bug (simulated: `transitions.cycle_finished` raises) while the
    store refuses writes: its `failed`/`internal_error` is written once the store writes again,
    never left `running` without a task."""
    from workflowd.engine import transitions

    client = await make_client()
    execution_id = (await submit(client, "waiter", input={"name": "x"}))["execution_id"]
    await wait_for_event(client, execution_id, "step_started")

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug in the engine")

    monkeypatch.setattr(transitions, "cycle_finished", broken)
    with file_locked(settings.store.path):
        workflows.release("x").set()
        await log_watch.wait_for("runner_crashed", execution_id=execution_id)
        await log_watch.wait_for("execution_reset", execution_id=execution_id)
    status = await wait_for_status(client, execution_id, *TERMINAL)
    assert status["status"] == "failed"
    record = await get_json(client, f"{API}/executions/{execution_id}")
    assert record["error"]["code"] == "internal_error"
