"""Workflows defined as data and artifacts on several nodes (two or three apps in one process
on one PostgreSQL database): a definition stored on one node runs on any, artifacts are
shared, and the leader's retention sweeps them."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient

from tests import workflows
from tests.conftest import MakeClient
from tests.helpers import (
    API,
    assert_gapless,
    events,
    get_json,
    store_sql,
    submit,
    wait_for_status,
    wait_for_step,
)
from workflowd.api.keys import ARTIFACTS, SCHEDULER, STORE
from workflowd.clock import format_ts

Client = TestClient[Any, Any]

RELAY = {"id": "relay", "title": "Across the nodes", "steps": [
    {"name": "inc", "type": "call", "function": "add_one"},
    {"name": "check", "type": "approval", "prompt": "Go on?"},
    {"name": "nap", "type": "sleep", "seconds": 0.2},
    {"name": "inc_again", "type": "call", "function": "add_one"},
    {"name": "end", "type": "call", "function": "finish-with"}]}


def _node(pg_url: str, name: str, **sections: Any) -> dict[str, Any]:
    cluster = {"node_id": name, "lease_seconds": 3, "poll_interval": 0.2}
    return {"store": {"url": pg_url}, "cluster": cluster, **sections}


async def _define(client: Client, body: dict[str, Any]) -> None:
    resp = await client.post(f"{API}/workflows", json=body)
    assert resp.status == 201, await resp.text()


async def test_a_json_workflow_defined_on_one_node_runs_through_the_other(
        pg_url: str, make_client: MakeClient) -> None:
    """Defined on a, listed and submitted on b, approved on a, its sleep woken by whichever
    node leads: it completes, every event in order, once."""
    a = await make_client(**_node(pg_url, "a"))
    b = await make_client(**_node(pg_url, "b"))
    await _define(a, RELAY)
    listed = await get_json(b, f"{API}/workflows")
    assert {item["id"]: item["source"] for item in listed["items"]}["relay"] == "json"
    versions = await get_json(b, f"{API}/workflows/relay/versions")
    assert [v["version"] for v in versions["items"]] == [1]
    execution_id = (await submit(b, "relay", input={"n": 1}))["execution_id"]
    await wait_for_status(a, execution_id, "awaiting_approval")
    resp = await a.post(f"{API}/executions/{execution_id}/approve", json={"comment": "go"})
    assert resp.status == 202, await resp.text()
    await wait_for_status(b, execution_id, "completed")
    result = await get_json(a, f"{API}/executions/{execution_id}/result")
    assert result["result"] == {"n": 3, "answer": None}
    execution = await get_json(b, f"{API}/executions/{execution_id}")
    assert execution["workflow_version"] == 1
    items = await events(a, execution_id)
    assert_gapless(items)
    assert Counter(e["type"] for e in items)["workflow_completed"] == 1
    steps = await get_json(a, f"{API}/executions/{execution_id}/steps")
    assert [(s["name"], s["status"]) for s in steps["items"]] == [
        ("inc", "completed"), ("check", "completed"), ("nap", "completed"),
        ("inc_again", "completed"), ("end", "completed")]


async def test_a_node_claims_a_workflow_defined_on_another(pg_url: str,
                                                          make_client: MakeClient) -> None:
    """A node that started before the definition existed learns it from the store and claims
    its execution, which the defining node has no room for; it runs it to the end."""
    c = await make_client(**_node(pg_url, "c"))
    a = await make_client(**_node(pg_url, "a", engine={"max_concurrent": 1}))
    workflows.RELEASES.clear()
    busy = (await submit(a, "waiter", input={"name": "busy"}))["execution_id"]
    await wait_for_step(a, busy)
    assert busy in a.app[SCHEDULER].owners  # a's one slot is taken
    await _define(a, {"id": "later", "steps": [
        {"name": "inc", "type": "call", "function": "add_one"},
        {"name": "end", "type": "call", "function": "finish-with"}]})
    execution_id = (await submit(a, "later", input={"n": 41}))["execution_id"]
    await wait_for_status(c, execution_id, "completed")
    result = await get_json(a, f"{API}/executions/{execution_id}/result")
    assert result["result"] == {"n": 42, "answer": None}
    assert c.app[SCHEDULER].cluster is not None
    assert c.app[SCHEDULER].cluster.claimed >= 1
    assert busy in a.app[SCHEDULER].owners  # still busy: c ran it
    workflows.release("busy").set()
    await wait_for_status(a, busy, "completed")


async def test_an_external_step_completed_on_a_node_that_never_loaded_the_workflow(
        pg_url: str, make_client: MakeClient) -> None:
    """A JSON workflow's external step, handed out on a, is completed through a node started
    afterwards, which loads the version from the store to check the step and run on."""
    a = await make_client(**_node(pg_url, "a"))
    await _define(a, {"id": "outsourced", "steps": [
        {"name": "work", "type": "external", "timeout": 60},
        {"name": "end", "type": "call", "function": "finish-with"}]})
    execution_id = (await submit(a, "outsourced"))["execution_id"]
    async with asyncio.timeout(10):
        while not (started := [e for e in await events(a, execution_id)
                               if e["type"] == "step_started" and e["step"] == "work"]):
            await asyncio.sleep(0.05)
    token = started[0]["callback"]["token"]
    late = await make_client(**_node(pg_url, "late"))
    path = f"{API}/executions/{execution_id}/steps"
    resp = await late.post(f"{path}/nope/complete", json={"success": True, "output": {}},
                           headers={"X-Workflowd-Token": token})
    assert resp.status == 404
    resp = await late.post(f"{path}/work/complete", json={"success": True, "output": {"x": 1}},
                           headers={"X-Workflowd-Token": token})
    assert resp.status == 202, await resp.text()
    await wait_for_status(a, execution_id, "completed")
    execution = await get_json(late, f"{API}/executions/{execution_id}")
    assert execution["state"]["work"] == {"x": 1}


async def test_artifacts_are_shared_and_swept_by_the_leader(pg_url: str, tmp_path: Path,
                                                            make_client: MakeClient) -> None:
    """Uploaded on a, read and written by an execution submitted on b, listed and downloaded
    on either; once the execution is old, the leader's retention deletes the artifacts and
    their files, whichever node stored them."""
    shared = {"dir": str(tmp_path / "shared-artifacts")}
    retention = {"finished_after": "1h", "sweep_interval": 0.2}
    a = await make_client(**_node(pg_url, "a", artifacts=shared, retention=retention))
    b = await make_client(**_node(pg_url, "b", artifacts=shared, retention=retention))
    resp = await a.post(f"{API}/artifacts", params={"name": "in.txt"}, data=b"Hello Nodes",
                        headers={"Content-Type": "text/plain"})
    assert resp.status == 201, await resp.text()
    doc = await resp.json()
    execution_id = (await submit(b, "shouter", input={"doc": {"artifact_id": doc["artifact_id"]}}
                                 ))["execution_id"]
    await wait_for_status(a, execution_id, "completed")
    result = (await get_json(a, f"{API}/executions/{execution_id}/result"))["result"]
    out = await a.get(f"{API}/artifacts/{result['out']['artifact_id']}")
    assert await out.read() == b"HELLO NODES"
    whisper = await b.get(f"{API}/artifacts/{result['whisper']['artifact_id']}")
    assert await whisper.read() == b"hello nodes"
    for node in (a, b):
        listed = await get_json(node, f"{API}/executions/{execution_id}/artifacts")
        assert {i["name"]: i["roles"] for i in listed["items"]} == {
            "in.txt": ["input", "read"], "shout.txt": ["read", "output"],
            "whisper.txt": ["output"]}
    blobs = tmp_path / "shared-artifacts" / "blobs"
    assert len([p for p in blobs.rglob("*") if p.is_file()]) == 3
    assert a.app[ARTIFACTS].dir == b.app[ARTIFACTS].dir

    old = format_ts(datetime.now(UTC) - timedelta(hours=2))
    await store_sql(a.app[STORE], "UPDATE artifacts SET created_at = ?", old)
    await store_sql(a.app[STORE], "UPDATE executions SET finished_at = ? WHERE id = ?", old,
                    execution_id)
    async with asyncio.timeout(10):
        while (await a.get(f"{API}/executions/{execution_id}")).status != 404:
            await asyncio.sleep(0.1)
        while [p for p in blobs.rglob("*") if p.is_file()]:
            await asyncio.sleep(0.1)
    for node in (a, b):
        for artifact_id in (doc["artifact_id"], result["out"]["artifact_id"]):
            assert (await node.get(f"{API}/artifacts/{artifact_id}")).status == 404


async def test_the_lock_of_an_artifact_s_bytes_holds_across_nodes(
        pg_url: str, make_client: MakeClient) -> None:
    """While node a holds the lock of some bytes, node b waits for it (and takes the lock of
    other bytes at once)."""
    a = await make_client(**_node(pg_url, "a"))
    b = await make_client(**_node(pg_url, "b"))
    on_a, on_b = a.app[STORE].cluster, b.app[STORE].cluster
    assert on_a is not None
    assert on_b is not None
    order: list[str] = []

    async def take(name: str) -> None:
        async with on_b.shared_lock(name):
            order.append(name)

    conn = await asyncpg.connect(pg_url)
    try:
        async with on_a.shared_lock("artifact:x"):
            await asyncio.wait_for(take("artifact:y"), 10)
            waiting = asyncio.create_task(take("artifact:x"))
            async with asyncio.timeout(10):  # b's request for the lock is waiting
                while not await conn.fetchval("SELECT count(*) FROM pg_locks "
                                              "WHERE locktype = 'advisory' AND NOT granted"):
                    await asyncio.sleep(0.02)
            order.append("released")
        await asyncio.wait_for(waiting, 10)
    finally:
        await conn.close()
    assert order == ["artifact:y", "released", "artifact:x"]
