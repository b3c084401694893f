"""`workflowd store copy`: a SQLite store moved to PostgreSQL, where its executions go on."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests import workflows
from tests.conftest import MakeClient
from tests.helpers import API, assert_gapless, events, get_json, submit, wait_for_status
from workflowd.cli import main


async def test_copy_moves_every_execution_and_they_go_on(
        pg_url: str, make_client: MakeClient, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Finished executions arrive with their events, steps and logs; one at a gate is
    approved on PostgreSQL and completes; one left queued runs there; a second copy adds
    nothing."""
    path = str(tmp_path / "workflowd.db")
    first = await make_client(engine={"max_concurrent": 1}, store={"url": ""})
    done = (await submit(first, "chatty"))["execution_id"]
    await wait_for_status(first, done, "completed")
    gated = (await submit(first, "gated"))["execution_id"]
    await wait_for_status(first, gated, "awaiting_approval")
    workflows.RELEASES.clear()
    holder = (await submit(first, "waiter", input={"name": "copy"}))["execution_id"]
    await wait_for_status(first, holder, "running")
    queued = (await submit(first, "three-steps"))["execution_id"]
    before = {i: await events(first, i) for i in (done, gated)}
    logs = await get_json(first, f"{API}/executions/{done}/logs")
    await first.close()

    assert await asyncio.to_thread(main, ["store", "copy", "--from", path, "--to", pg_url]) == 0
    out = capsys.readouterr().out
    assert "4 executions" in out

    second = await make_client(store={"url": pg_url},
                               cluster={"node_id": "after-copy", "poll_interval": 0.2})
    for execution_id, items in before.items():
        assert await events(second, execution_id) == items
    assert await get_json(second, f"{API}/executions/{done}/logs") == logs
    steps = await get_json(second, f"{API}/executions/{done}/steps")
    assert [s["status"] for s in steps["items"]] == ["completed", "completed"]
    resp = await second.post(f"{API}/executions/{gated}/approve", json={})
    assert resp.status == 202, await resp.text()
    await wait_for_status(second, gated, "completed")
    await wait_for_status(second, queued, "completed")
    workflows.release("copy").set()  # the one cut off mid-step resumes there
    await wait_for_status(second, holder, "completed")
    for execution_id in (gated, queued, holder):
        assert_gapless(await events(second, execution_id))
    await second.close()

    assert await asyncio.to_thread(main, ["store", "copy", "--from", path, "--to", pg_url]) == 0
    assert "0 executions" in capsys.readouterr().out


async def test_copy_refuses_a_store_in_use(pg_url: str, make_client: MakeClient,
                                           capsys: pytest.CaptureFixture[str],
                                           tmp_path: Path) -> None:
    """A file a service runs on is not copied (it could change under the copy)."""
    await make_client(store={"url": ""})
    code = await asyncio.to_thread(main, ["store", "copy", "--from",
                                          str(tmp_path / "workflowd.db"), "--to", pg_url])
    assert code == 2
    assert "in use" in capsys.readouterr().err


async def test_copy_takes_json_workflows_and_artifacts_along(
        pg_url: str, make_client: MakeClient, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Workflows defined as JSON (every version, a deleted one too) and artifacts' rows with
    their uses arrive: a JSON execution at its gate is approved on PostgreSQL and completes on
    its version; the artifact it names is listed with it and downloads (same `dir`)."""
    path = str(tmp_path / "workflowd.db")
    first = await make_client(store={"url": ""})
    gated = {"id": "copied", "steps": [
        {"name": "ok", "type": "approval"},
        {"name": "end", "type": "call", "function": "finish-with"}]}
    for method, url in (("POST", f"{API}/workflows"), ("PUT", f"{API}/workflows/copied")):
        resp = await first.request(method, url, json=gated)
        assert resp.status == 201, await resp.text()
    resp = await first.post(f"{API}/workflows", json={"id": "gone", "steps": gated["steps"]})
    assert resp.status == 201
    assert (await first.delete(f"{API}/workflows/gone")).status == 204
    resp = await first.post(f"{API}/artifacts", params={"name": "a.txt"}, data=b"copied bytes")
    assert resp.status == 201
    artifact = await resp.json()
    execution_id = (await submit(first, "copied", input={
        "doc": {"artifact_id": artifact["artifact_id"]}}))["execution_id"]
    await wait_for_status(first, execution_id, "awaiting_approval")
    await first.close()

    assert await asyncio.to_thread(main, ["store", "copy", "--from", path, "--to", pg_url]) == 0
    out = capsys.readouterr().out
    assert "2 workflow definitions, 3 workflow versions, 1 artifacts, 1 artifact uses" in out

    second = await make_client(store={"url": pg_url},
                               cluster={"node_id": "after-copy", "poll_interval": 0.2})
    listed = await get_json(second, f"{API}/workflows")
    assert "copied" in {item["id"] for item in listed["items"]}
    assert "gone" not in {item["id"] for item in listed["items"]}
    versions = await get_json(second, f"{API}/workflows/copied/versions")
    assert [v["version"] for v in versions["items"]] == [1, 2]
    resp = await second.post(f"{API}/executions/{execution_id}/approve", json={})
    assert resp.status == 202, await resp.text()
    await wait_for_status(second, execution_id, "completed")
    execution = await get_json(second, f"{API}/executions/{execution_id}")
    assert execution["workflow_version"] == 2
    uses = await get_json(second, f"{API}/executions/{execution_id}/artifacts")
    assert [(i["artifact_id"], i["roles"]) for i in uses["items"]] == [
        (artifact["artifact_id"], ["input"])]
    download = await second.get(f"{API}/artifacts/{artifact['artifact_id']}")
    assert await download.read() == b"copied bytes"
    await second.close()

    assert await asyncio.to_thread(main, ["store", "copy", "--from", path, "--to", pg_url]) == 0
    assert "0 workflow definitions, 0 workflow versions, 0 artifacts" in capsys.readouterr().out


async def test_a_second_copy_does_not_send_a_delivery_twice(pg_url: str, tmp_path: Path) -> None:
    """A pending webhook delivery is copied once: a second run finds it there (deliveries
    have no key of their own) and adds nothing, so it is not sent twice."""
    import asyncpg

    from workflowd.store import Delivery, SQLiteStore, Write

    path = str(tmp_path / "workflowd.db")
    store = await SQLiteStore.open(path)
    await store.commit(Write(deliveries=[Delivery("http://127.0.0.1:9/hook", '{"n": 1}', {})]))
    await store.close()
    for _ in range(2):
        assert await asyncio.to_thread(main, ["store", "copy", "--from", path,
                                               "--to", pg_url]) == 0
    conn = await asyncpg.connect(pg_url)
    try:
        assert await conn.fetchval(
            "SELECT count(*) FROM deliveries WHERE url = 'http://127.0.0.1:9/hook'") == 1
    finally:
        await conn.close()
