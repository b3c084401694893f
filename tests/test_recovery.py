"""Durability across crashes and restarts: SIGKILL mid-load, a second app on the same file,
and SIGTERM draining."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests import workflows
from tests.conftest import MakeClient
from tests.helpers import (
    API,
    LogWatch,
    assert_gapless,
    events,
    get_json,
    submit,
    wait_for_event,
    wait_for_status,
)

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Server:
    """`workflowd serve` in a subprocess on a loopback port, with its own config file."""

    def __init__(self, tmp_path: Path, **engine: Any) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = tmp_path / "config.toml"
        engine_lines = "\n".join(f"{k} = {v}" for k, v in engine.items())
        self.config.write_text(
            f'[server]\nport = {self.port}\n[store]\npath = "{tmp_path / "wd.db"}"\n'
            f"[engine]\n{engine_lines}\n"
            '[workflows]\nmodules = ["workflowd.examples", "tests.workflows"]\n'
            '[logging]\nlevel = "warning"\n'
        )
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self, session: aiohttp.ClientSession) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "workflowd", "serve", "--config", str(self.config),
            env=env, cwd=str(ROOT), stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL)
        async with asyncio.timeout(20):
            while True:
                try:
                    async with session.get(f"{self.url}/readyz") as resp:
                        if resp.status == 200:
                            return
                except aiohttp.ClientConnectionError:
                    pass
                assert self.proc.returncode is None, "the server exited while starting"
                await asyncio.sleep(0.05)

    async def signal(self, sig: int) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        async with asyncio.timeout(30):
            return await self.proc.wait()

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as http:
        yield http


async def _json(session: aiohttp.ClientSession, url: str) -> Any:
    async with session.get(url) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def _statuses(session: aiohttp.ClientSession, server: Server) -> Counter[str]:
    data = await _json(session, f"{server.url}{API}/executions?limit=500")
    return Counter(item["status"] for item in data["items"])


async def _wait_all(session: aiohttp.ClientSession, server: Server, n: int, status: str) -> None:
    async with asyncio.timeout(60):
        while (await _statuses(session, server))[status] < n:
            await asyncio.sleep(0.1)


@pytest.mark.timeout(120)
async def test_sigkill_mid_load_loses_nothing(tmp_path: Path,
                                              session: aiohttp.ClientSession) -> None:
    """Kill -9 during 20 executions; after a restart all complete, each with gap-free events,
    one workflow_completed, and no committed cycle run twice."""
    server = Server(tmp_path, max_concurrent=5)
    try:
        await server.start(session)
        ids = []
        for n in range(20):
            async with session.post(f"{server.url}{API}/workflows/slow-three/executions",
                                    json={"input": {"n": n}}) as resp:
                assert resp.status == 202
                ids.append((await resp.json())["execution_id"])
        # Wait until the load is part-way: some finished, some still to run.
        async with asyncio.timeout(30):
            while (await _statuses(session, server))["completed"] < 3:
                await asyncio.sleep(0.05)
        assert await server.signal(signal.SIGKILL) == -signal.SIGKILL
        server.proc = None
        await server.start(session)
        before = await _statuses(session, server)
        assert before["completed"] < 20, "the kill came too late to test recovery"
        await _wait_all(session, server, 20, "completed")
        for execution_id in ids:
            data = await _json(session, f"{server.url}{API}/executions/{execution_id}/events"
                                        "?limit=500")
            items = data["items"]
            assert_gapless(items)
            types = Counter(e["type"] for e in items)
            assert types["workflow_completed"] == 1
            cycles = [e["cycle"] for e in items if e["type"] == "cycle_completed"]
            assert cycles == [1, 2, 3], (execution_id, cycles)
            steps = await _json(session, f"{server.url}{API}/executions/{execution_id}/steps")
            assert [s["status"] for s in steps["items"]] == ["completed"] * 3
    finally:
        await server.stop()


@pytest.mark.timeout(60)
async def test_sigterm_drains_and_exits_zero(tmp_path: Path,
                                             session: aiohttp.ClientSession) -> None:
    """SIGTERM stops the service with exit code 0; what was running resumes at the next start."""
    server = Server(tmp_path, max_concurrent=2, shutdown_grace=0.1)
    try:
        await server.start(session)
        async with session.post(f"{server.url}{API}/workflows/sleeper/executions",
                                json={}) as resp:
            execution_id = (await resp.json())["execution_id"]
        async with asyncio.timeout(10):
            while (await _json(session, f"{server.url}{API}/executions/{execution_id}"
                                        "/status/live"))["status"] != "running":
                await asyncio.sleep(0.05)
        assert await server.signal(signal.SIGTERM) == 0
        server.proc = None
        await server.start(session)
        status = await _json(session, f"{server.url}{API}/executions/{execution_id}/status/live")
        assert status["status"] == "running", "the shutdown cancel must not end the execution"
        async with session.post(f"{server.url}{API}/executions/{execution_id}/cancel") as resp:
            assert resp.status == 202
    finally:
        await server.stop()


async def test_restart_keeps_a_waiting_gate(make_client: MakeClient) -> None:
    """An execution at a gate survives a restart of the app on the same file, then completes."""
    first = await make_client()
    summary = await submit(first, "gated")
    execution_id = summary["execution_id"]
    await wait_for_status(first, execution_id, "awaiting_approval")
    await first.close()

    second = await make_client()
    status = await wait_for_status(second, execution_id, "awaiting_approval")
    assert status["current_step"]["name"] == "sign_off"
    resp = await second.post(f"{API}/executions/{execution_id}/approve", json={})
    assert resp.status == 202
    await wait_for_status(second, execution_id, "completed")
    items = await events(second, execution_id)
    assert_gapless(items)
    assert [e["type"] for e in items].count("workflow_completed") == 1


async def test_restart_resumes_queued_work(make_client: MakeClient) -> None:
    """Queued executions left by a stopped app run when the next app starts on the file."""
    first = await make_client(engine={"max_concurrent": 1})
    blocker = await submit(first, "sleeper")
    queued = [await submit(first, "three-steps") for _ in range(3)]
    await wait_for_status(first, blocker["execution_id"], "running")
    await first.close()

    second = await make_client(engine={"max_concurrent": 1})
    resp = await second.post(f"{API}/executions/{blocker['execution_id']}/cancel")
    assert resp.status == 202
    for item in queued:
        await wait_for_status(second, item["execution_id"], "completed")


@pytest.mark.sqlite_only("a node claims executions by lease as its slots allow")
async def test_an_unregistered_workflows_executions_are_held(
        make_client: MakeClient, log_watch: LogWatch) -> None:
    """A restart without a workflow's module holds its executions as they were (a log line and
    a metric say so), cancel still works on them, and a restart with the module completes them."""
    with_module = {"modules": ["workflowd.examples", "tests.workflows", "tests.optional_workflows"]}
    first = await make_client(workflows=with_module)
    kept = (await submit(first, "optional", input={"name": "kept"}))["execution_id"]
    dropped = (await submit(first, "optional", input={"name": "dropped"}))["execution_id"]
    for execution_id in (kept, dropped):
        await wait_for_event(first, execution_id, "step_started")
    await first.close()

    second = await make_client()  # tests.optional_workflows is not loaded
    before = {i: await get_json(second, f"{API}/executions/{i}") for i in (kept, dropped)}
    assert {r["status"] for r in before.values()} == {"running"}
    entry = await log_watch.wait_for("executions_held")
    assert entry["workflows"] == ["optional"]
    assert entry["executions"] == 2
    assert entry["log_level"] == "warning"
    metrics = await (await second.get("/metrics")).text()
    assert "workflowd_executions_held 2.0" in metrics.splitlines()
    assert "workflowd_executions_running 0.0" in metrics.splitlines()
    resp = await second.post(f"{API}/executions/{dropped}/cancel")
    assert resp.status == 202, await resp.text()
    assert (await wait_for_status(second, dropped, "cancelled"))["status"] == "cancelled"
    assert await get_json(second, f"{API}/executions/{kept}") == before[kept]
    metrics = await (await second.get("/metrics")).text()
    assert "workflowd_executions_held 1.0" in metrics.splitlines()
    await second.close()

    third = await make_client(workflows=with_module)
    workflows.release("kept").set()
    assert (await wait_for_status(third, kept, "completed", "failed"))["status"] == "completed"
    result = await get_json(third, f"{API}/executions/{kept}/result")
    assert result["result"] == {"held": "kept"}
    for execution_id in (kept, dropped):
        items = await events(third, execution_id)
        assert_gapless(items)
    assert (await get_json(third, f"{API}/executions/{dropped}"))["status"] == "cancelled"


@pytest.mark.sqlite_only("a node claims executions by lease as its slots allow")
async def test_a_resumed_execution_waiting_for_a_slot_is_not_shown_running(
        make_client: MakeClient) -> None:
    """Restarted with fewer slots than running executions: those waiting for a slot show
    `queued`, not `running` with no task."""
    first = await make_client(engine={"max_concurrent": 2})
    ids = [(await submit(first, "waiter", input={"name": f"r{n}"}))["execution_id"]
           for n in range(2)]
    for execution_id in ids:
        await wait_for_event(first, execution_id, "step_started")
    await first.close()

    second = await make_client(engine={"max_concurrent": 1})
    metrics = (await (await second.get("/metrics")).text()).splitlines()
    assert "workflowd_executions_running 1.0" in metrics
    statuses = sorted([(await get_json(second, f"{API}/executions/{i}/status/live"))["status"]
                       for i in ids])
    try:
        assert statuses == ["queued", "running"], statuses
    finally:
        for n in range(2):
            workflows.release(f"r{n}").set()
        for execution_id in ids:
            await wait_for_status(second, execution_id, "completed")
