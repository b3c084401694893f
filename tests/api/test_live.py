"""`/status/live`: its fields and flags, ETag and 304, long-polling, and progress."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from aiohttp.test_utils import TestClient

from tests import workflows
from tests.conftest import MakeClient
from tests.helpers import API, live, submit, wait_for_status, wait_for_step

LIVE_FIELDS = {
    "execution_id", "workflow_id", "status", "is_processing", "is_completed", "is_failed",
    "is_terminal", "background_processing", "awaiting_approval", "cycle", "max_cycles",
    "current_step", "progress", "last_update", "seq", "is_paused",
}
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
TERMINAL = {"completed", "failed", "cancelled", "timed_out", "rejected"}


def _expected_flags(status: str) -> dict[str, bool]:
    """The flags of API.md section 2, written out from the status."""
    return {
        "is_processing": status in ("queued", "running"),
        "background_processing": status == "running",
        "awaiting_approval": status == "awaiting_approval",
        "is_completed": status == "completed",
        "is_failed": status in ("failed", "timed_out"),
        "is_terminal": status in TERMINAL,
    }


def _live_path(execution_id: str) -> str:
    return f"{API}/executions/{execution_id}/status/live"


async def test_live_status_fields_while_running(client: TestClient[Any, Any]) -> None:
    """A running execution's live status has every field of the contract, typed as written."""
    workflows.release("f")
    execution_id = (await submit(client, "waiter", input={"name": "f"}))["execution_id"]
    status = await wait_for_step(client, execution_id)
    assert set(status) == LIVE_FIELDS
    assert status["execution_id"] == execution_id
    assert status["workflow_id"] == "waiter"
    assert status["cycle"] == 0
    assert status["max_cycles"] == 15
    assert set(status["current_step"]) == {"name", "kind", "index", "started_at"}
    assert status["current_step"]["name"] == "recorded"
    assert status["current_step"]["kind"] == "data_processing"
    assert status["current_step"]["index"] == 0
    assert TIMESTAMP.match(status["current_step"]["started_at"])
    assert set(status["progress"]) == {"percentage", "completed_steps", "total_steps", "message"}
    assert status["progress"]["total_steps"] == 1
    assert status["progress"]["completed_steps"] == 0
    assert TIMESTAMP.match(status["last_update"])
    assert isinstance(status["seq"], int)
    assert status["seq"] >= 1
    workflows.release("f").set()
    done = await wait_for_status(client, execution_id, "completed")
    assert done["cycle"] == 1
    assert done["current_step"] is None
    assert done["progress"]["completed_steps"] == 1
    assert done["seq"] > status["seq"]


async def test_live_flags_follow_every_status(make_client: MakeClient) -> None:
    """Each status has the flags API.md section 2 gives it."""
    client = await make_client(engine={"max_concurrent": 1})
    ids: dict[str, str] = {}
    ids["completed"] = (await submit(client, "three-steps"))["execution_id"]
    await wait_for_status(client, ids["completed"], "completed")
    ids["failed"] = (await submit(client, "flaky", input={"fail_times": 9}))["execution_id"]
    await wait_for_status(client, ids["failed"], "failed")
    ids["timed_out"] = (await submit(client, "exec-timeout"))["execution_id"]
    await wait_for_status(client, ids["timed_out"], "timed_out")
    ids["rejected"] = (await submit(client, "three-steps", expect=201,
                                    require_approval=True))["execution_id"]
    resp = await client.post(f"{API}/executions/{ids['rejected']}/reject", json={})
    assert resp.status == 200
    ids["awaiting_approval"] = (await submit(client, "three-steps", expect=201,
                                             require_approval=True))["execution_id"]
    workflows.release("run")
    ids["running"] = (await submit(client, "waiter", input={"name": "run"}))["execution_id"]
    await wait_for_status(client, ids["running"], "running")
    ids["queued"] = (await submit(client, "waiter", input={"name": "queue"}))["execution_id"]
    ids["cancelled"] = (await submit(client, "waiter", input={"name": "gone"}))["execution_id"]
    resp = await client.post(f"{API}/executions/{ids['cancelled']}/cancel")
    assert resp.status == 202

    for status, execution_id in ids.items():
        got = await live(client, execution_id)
        assert got["status"] == status
        flags = {name: got[name] for name in _expected_flags(status)}
        assert flags == _expected_flags(status), status
    workflows.release("run").set()
    workflows.release("queue").set()
    await wait_for_status(client, ids["queued"], "completed")


async def test_etag_and_if_none_match(client: TestClient[Any, Any]) -> None:
    """Live status carries an ETag; sending it back (alone, weak, in a list, or `*`) is 304
    until the execution changes; another tag is 200."""
    workflows.release("e")
    execution_id = (await submit(client, "waiter", input={"name": "e"}))["execution_id"]
    await wait_for_step(client, execution_id)
    resp = await client.get(_live_path(execution_id))
    assert resp.status == 200
    etag = resp.headers["ETag"]
    status = await resp.json()
    resp = await client.get(_live_path(execution_id), headers={"If-None-Match": etag})
    assert resp.status == 304
    assert resp.headers["ETag"] == etag
    assert await resp.read() == b""
    resp = await client.get(_live_path(execution_id), headers={"If-None-Match": '"nope"'})
    assert resp.status == 200
    for matching in ("*", f"W/{etag}", f'"nope", {etag}'):
        resp = await client.get(_live_path(execution_id), headers={"If-None-Match": matching})
        assert resp.status == 304, matching
    for other in (f'"{status["seq"]}0"', f'"1{status["seq"]}"'):
        resp = await client.get(_live_path(execution_id), headers={"If-None-Match": other})
        assert resp.status == 200, other

    workflows.release("e").set()
    await wait_for_status(client, execution_id, "completed")
    resp = await client.get(_live_path(execution_id), headers={"If-None-Match": etag})
    assert resp.status == 200
    assert resp.headers["ETag"] != etag
    assert (await resp.json())["seq"] > status["seq"]


async def test_long_poll_answers_when_something_newer_commits(
        client: TestClient[Any, Any]) -> None:
    """`?since=SEQ&wait=S` holds while nothing changes and answers 200 once a change commits."""
    workflows.release("lp")
    execution_id = (await submit(client, "waiter", input={"name": "lp"}))["execution_id"]
    status = await wait_for_step(client, execution_id)
    since = status["seq"]
    poll = asyncio.create_task(client.get(_live_path(execution_id),
                                          params={"since": str(since), "wait": "60"}))
    done, _ = await asyncio.wait({poll}, timeout=0.3)
    assert not done, "the long-poll answered although nothing changed"
    workflows.release("lp").set()
    async with asyncio.timeout(10):  # far less than the 60 s the poll may wait
        resp = await poll
    assert resp.status == 200, await resp.text()
    newer = await resp.json()
    assert newer["seq"] > since
    assert resp.headers["ETag"]


async def test_long_poll_is_304_when_the_wait_runs_out(client: TestClient[Any, Any]) -> None:
    """With nothing newer than SEQ within `wait`, the long-poll answers 304 with the ETag."""
    workflows.release("idle")
    execution_id = (await submit(client, "waiter", input={"name": "idle"}))["execution_id"]
    status = await wait_for_step(client, execution_id)
    resp = await client.get(_live_path(execution_id),
                            params={"since": str(status["seq"]), "wait": "0.2"})
    assert resp.status == 304
    assert resp.headers["ETag"]
    older = await client.get(_live_path(execution_id),
                             params={"since": str(status["seq"] - 1), "wait": "0.2"})
    assert older.status == 200
    assert (await older.json())["seq"] == status["seq"]
    workflows.release("idle").set()
    await wait_for_status(client, execution_id, "completed")


async def test_long_poll_on_terminal_execution_does_not_wait(
        client: TestClient[Any, Any]) -> None:
    """A long-poll on a finished execution with a current SEQ answers at once (304)."""
    execution_id = (await submit(client, "three-steps"))["execution_id"]
    status = await wait_for_status(client, execution_id, "completed")
    async with asyncio.timeout(10):
        resp = await client.get(_live_path(execution_id),
                                params={"since": str(status["seq"]), "wait": "60"})
    assert resp.status == 304


async def test_percentage_never_goes_down_and_is_100_only_when_completed(
        client: TestClient[Any, Any]) -> None:
    """Followed through a run, percentage only rises and is 100 exactly at completion."""
    execution_id = (await submit(client, "slow-three"))["execution_id"]
    seen: list[dict[str, Any]] = [await live(client, execution_id)]
    async with asyncio.timeout(15):
        while seen[-1]["status"] != "completed":
            resp = await client.get(_live_path(execution_id),
                                    params={"since": str(seen[-1]["seq"]), "wait": "5"})
            if resp.status == 200:
                seen.append(await resp.json())
    percentages = [s["progress"]["percentage"] for s in seen]
    assert percentages == sorted(percentages)
    assert len(set(percentages)) >= 3, percentages  # intermediate values were seen
    for status in seen:
        assert (status["progress"]["percentage"] == 100) == (status["status"] == "completed")
    assert seen[-1]["progress"]["completed_steps"] == 3


async def test_percentage_below_100_when_not_completed(client: TestClient[Any, Any]) -> None:
    """A failed or cancelled execution never shows 100 percent."""
    failed = (await submit(client, "flaky", input={"fail_times": 9}))["execution_id"]
    status = await wait_for_status(client, failed, "failed")
    assert status["progress"]["percentage"] < 100
    sleeping = (await submit(client, "sleeper"))["execution_id"]
    await wait_for_status(client, sleeping, "running")
    resp = await client.post(f"{API}/executions/{sleeping}/cancel")
    assert resp.status == 202
    status = await live(client, sleeping)
    assert status["status"] == "cancelled"
    assert status["progress"]["percentage"] < 100
