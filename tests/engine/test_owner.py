"""One owner per execution (issue 8 §1, §4): requests that overlap are ordered, not raced."""

from __future__ import annotations

import asyncio
import sqlite3
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
    external_waiting,
    file_locked,
    get_json,
    post_callback,
    problem_of,
    submit,
    wait_for_status,
)
from workflowd.config import Settings

Client = TestClient[Any, Any]
TERMINAL = ("completed", "failed", "cancelled", "timed_out", "rejected")


async def test_external_progress_then_complete_at_once(client: Client) -> None:
    """Progress for an external step followed at once by its complete (the seq collision that
    stranded executions `running`): both 202, the execution completes, events gap-free."""
    for n in range(5):
        execution_id, callback = await external_waiting(client)
        progress = await post_callback(client, callback["progress_url"], callback["token"],
                                       {"percentage": 30 + n, "message": "almost"})
        complete = await post_callback(client, callback["complete_url"], callback["token"],
                                       {"success": True, "output": {"n": n}, "error": None})
        assert (progress.status, complete.status) == (202, 202), await complete.text()
        status = await wait_for_status(client, execution_id, *TERMINAL)
        assert status["status"] == "completed"
        items = await events(client, execution_id)
        assert_gapless(items)
        types = [e["type"] for e in items]
        assert types.count("workflow_completed") == 1
        work = [e["type"] for e in items if e.get("step") == "work"]
        assert work == ["step_started", "step_progress", "step_finished"]
        result = await get_json(client, f"{API}/executions/{execution_id}/result")
        assert result["result"]["work"] == {"n": n}


async def test_progress_and_complete_sent_together(client: Client) -> None:
    """Progress and complete of an external step sent concurrently: no 500, one end."""
    execution_id, callback = await external_waiting(client)
    token = callback["token"]
    answers = await asyncio.gather(
        post_callback(client, callback["progress_url"], token, {"percentage": 10}),
        post_callback(client, callback["complete_url"], token, {"success": True, "output": {}}),
        post_callback(client, callback["progress_url"], token, {"percentage": 20}))
    assert answers[1].status == 202
    assert {a.status for a in answers} <= {202, 409}
    assert (await wait_for_status(client, execution_id, *TERMINAL))["status"] == "completed"
    assert_gapless(await events(client, execution_id))


@pytest.mark.sqlite_only("it holds the SQLite file's write lock to make the store refuse")
async def test_a_gates_timeout_is_not_lost_when_an_approve_fails(
        make_client: MakeClient, settings: Settings, log_watch: LogWatch) -> None:
    """An approve refused by a locked store (503) changes nothing; the gate's timeout, due
    while it was refused, still ends the execution `timed_out` once the store writes again."""
    client = await make_client()
    execution_id = (await submit(client, "gate-short"))["execution_id"]
    await wait_for_status(client, execution_id, "awaiting_approval")
    before = await get_json(client, f"{API}/executions/{execution_id}")
    with file_locked(settings.store.path):
        async with asyncio.timeout(10):
            resp = await client.post(f"{API}/executions/{execution_id}/approve",
                                     json={"comment": "yes"})
        body = await problem_of(resp, 503)
        assert body["type"].endswith("store_unavailable")
        assert await get_json(client, f"{API}/executions/{execution_id}") == before
        await log_watch.wait_for("execution_reset", execution_id=execution_id)
    status = await wait_for_status(client, execution_id, *TERMINAL)
    assert status["status"] == "timed_out"
    record = await get_json(client, f"{API}/executions/{execution_id}")
    assert record["approval"]["status"] == "pending"
    items = await events(client, execution_id)
    assert_gapless(items)
    assert "approval_granted" not in [e["type"] for e in items]
    assert items[-1]["type"] == "workflow_timed_out"


@pytest.mark.sqlite_only("it holds the SQLite file's write lock to make the store refuse")
async def test_a_retry_after_the_cycles_start_was_refused(
        make_client: MakeClient, settings: Settings, log_watch: LogWatch) -> None:
    """The write of a cycle's start is refused (the file locked from inside the step), then the
    attempt fails: the retry must not kill the runner; the cycle runs again and completes."""
    client = await make_client()
    held: list[sqlite3.Connection] = []

    def lock() -> None:
        conn = sqlite3.connect(settings.store.path, isolation_level=None, timeout=10)
        conn.execute("BEGIN IMMEDIATE")
        held.append(conn)

    workflows.SEEN["s"] = lock
    execution_id = (await submit(client, "shaky-start", input={"name": "s"}))["execution_id"]
    try:
        await log_watch.wait_for("execution_reset", execution_id=execution_id)
    finally:
        for conn in held:
            conn.execute("ROLLBACK")
            conn.close()
    workflows.release("s").set()
    status = await wait_for_status(client, execution_id, *TERMINAL)
    record = await get_json(client, f"{API}/executions/{execution_id}")
    assert status["status"] == "completed", record
    assert record["result"] == {"attempt": 1}
    assert not log_watch.find("runner_crashed")
    assert_gapless(await events(client, execution_id))
