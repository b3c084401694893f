"""Nodes as `workflowd serve` subprocesses on one PostgreSQL database: work spread over them,
a node killed in the middle of a step, a node paused past its lease, requests and a follower
on a node other than the one that runs the execution.

Every process is started here and ended by its PID; traffic goes to 127.0.0.1 only; every
wait is bounded.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from tests.helpers import API, assert_gapless

ROOT = Path(__file__).resolve().parent.parent.parent
pytestmark = pytest.mark.timeout(120)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Node:
    """One `workflowd serve` on the shared database, logging JSON lines to a file."""

    def __init__(self, tmp_path: Path, url: str, name: str, *, max_concurrent: int = 5,
                 lease_seconds: float = 2.0) -> None:
        self.name = name
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp_path / f"{name}.log"
        self.config = tmp_path / f"{name}.toml"
        self.config.write_text(
            f'[server]\nport = {self.port}\n'
            f'[store]\nurl = "{url}"\n'
            f"[engine]\nmax_concurrent = {max_concurrent}\nshutdown_grace = 0.5\n"
            f'[cluster]\nnode_id = "{name}"\nlease_seconds = {lease_seconds}\n'
            "poll_interval = 0.2\n"
            '[workflows]\nmodules = ["workflowd.examples", "tests.workflows"]\n'
            '[logging]\nlevel = "info"\nformat = "json"\n')
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self, session: aiohttp.ClientSession) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("WORKFLOWD_")}
        env["PYTHONPATH"] = str(ROOT)
        with self.log.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "workflowd", "serve", "--config", str(self.config),
                env=env, cwd=str(ROOT), stdout=asyncio.subprocess.DEVNULL, stderr=log)
        async with asyncio.timeout(30):
            while True:
                assert self.proc.returncode is None, self.log.read_text()[-3000:]
                try:
                    async with session.get(f"{self.url}/readyz") as resp:
                        if resp.status == 200:
                            return
                except aiohttp.ClientConnectionError:
                    pass
                await asyncio.sleep(0.05)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGCONT)  # a paused process cannot die otherwise
            self.proc.kill()
            await self.proc.wait()

    def logged(self, event: str) -> list[dict[str, Any]]:
        lines = []
        for line in self.log.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                entry = json.loads(line)
                if entry.get("event") == event:
                    lines.append(entry)
        return lines


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        yield http


@pytest.fixture
async def start(pg_url: str, tmp_path: Path,
                session: aiohttp.ClientSession) -> AsyncIterator[Any]:
    """Start nodes on the test's database; each is killed (by PID) at the end."""
    started: list[Node] = []

    async def start_node(name: str, **options: Any) -> Node:
        node = Node(tmp_path, pg_url, name, **options)
        started.append(node)
        await node.start(session)
        return node

    try:
        yield start_node
    finally:
        for node in started:
            await node.kill()


async def _json(session: aiohttp.ClientSession, url: str) -> Any:
    async with session.get(url) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def _post(session: aiohttp.ClientSession, url: str, body: Any = None) -> Any:
    async with session.post(url, json=body or {}) as resp:
        assert resp.status in (200, 201, 202), await resp.text()
        return await resp.json()


async def _submit(session: aiohttp.ClientSession, node: Node, workflow: str,
                  **body: Any) -> str:
    data = await _post(session, f"{node.url}{API}/workflows/{workflow}/executions", body)
    execution_id: str = data["execution_id"]
    return execution_id


async def _events(session: aiohttp.ClientSession, node: Node,
                  execution_id: str) -> list[dict[str, Any]]:
    data = await _json(session, f"{node.url}{API}/executions/{execution_id}/events?limit=500")
    items: list[dict[str, Any]] = data["items"]
    return items


async def _until(session: aiohttp.ClientSession, node: Node, execution_id: str,
                 check: Any, timeout: float = 30.0) -> list[dict[str, Any]]:
    """Poll the events (through `node`) until `check(events)` holds."""
    async with asyncio.timeout(timeout):
        while True:
            items = await _events(session, node, execution_id)
            if check(items):
                return items
            await asyncio.sleep(0.05)


def _terminal(items: list[dict[str, Any]]) -> bool:
    return any(e["type"].startswith("workflow_") and e["type"] not in (
        "workflow_queued", "workflow_started") for e in items)


def _started(cycle: int) -> Any:
    return lambda items: any(e["type"] == "step_started" and e["cycle"] == cycle
                             for e in items)


async def _holder(pg_url: str, execution_id: str) -> str | None:
    conn = await asyncpg.connect(pg_url)
    try:
        holder: str | None = await conn.fetchval(
            "SELECT lease_owner FROM executions WHERE id = $1 "
            "AND lease_until > statement_timestamp()", execution_id)
        return holder
    finally:
        await conn.close()


def _one_history(items: list[dict[str, Any]]) -> None:
    """Gap-free, one terminal event, each cycle completed once, in order."""
    assert_gapless(items)
    types = Counter(e["type"] for e in items)
    assert types["workflow_completed"] == 1, types
    assert sum(n for t, n in types.items() if t in (
        "workflow_failed", "workflow_cancelled", "workflow_timed_out")) == 0
    assert [e["cycle"] for e in items if e["type"] == "cycle_completed"] == [1, 2, 3]


async def test_work_spreads_over_three_nodes(start: Any,
                                             session: aiohttp.ClientSession) -> None:
    """Executions submitted to one node of three, one slot each, run on all three."""
    nodes = [await start(name, max_concurrent=1) for name in ("a", "b", "c")]
    ids = [await _submit(session, nodes[0], "slow-steps", input={"seconds": 0.3})
           for _ in range(9)]
    async with asyncio.timeout(60):
        for execution_id in ids:
            await _until(session, nodes[1], execution_id, _terminal)
    ran_on: set[str] = set()
    for node in nodes:
        ran_on.update(entry["node_id"] for entry in node.logged("execution_completed"))
    assert ran_on == {"a", "b", "c"}
    for execution_id in ids:
        _one_history(await _events(session, nodes[2], execution_id))


async def test_a_killed_node_s_execution_completes_on_another(
        start: Any, session: aiohttp.ClientSession, pg_url: str) -> None:
    """SIGKILL of the node running an execution in the middle of a step: another node takes
    it over after the lease and completes it from its last committed cycle, with gap-free
    events and exactly one terminal event."""
    a = await start("a")
    b = await start("b")
    execution_id = await _submit(session, a, "slow-steps", input={"seconds": 1.0})
    await _until(session, b, execution_id, _started(2))
    assert await _holder(pg_url, execution_id) == "a"
    a.signal(signal.SIGKILL)
    items = await _until(session, b, execution_id, _terminal, timeout=40)
    _one_history(items)
    # The second step ran again (its start was committed, its end was not).
    assert [e["cycle"] for e in items if e["type"] == "step_started"] == [1, 2, 2, 3]
    assert b.logged("execution_taken_over")
    status = await _json(session, f"{b.url}{API}/executions/{execution_id}/status/live")
    assert status["status"] == "completed"


async def test_a_paused_node_does_not_write_after_its_lease(
        start: Any, session: aiohttp.ClientSession, pg_url: str) -> None:
    """A node paused (SIGSTOP) past its lease loses the execution to another; resumed
    (SIGCONT), it writes nothing of it: one history, completed once."""
    a = await start("a")
    b = await start("b")
    execution_id = await _submit(session, a, "slow-steps", input={"seconds": 1.5})
    await _until(session, b, execution_id, _started(1))
    a.signal(signal.SIGSTOP)
    try:
        items = await _until(session, b, execution_id, _terminal, timeout=40)
    finally:
        a.signal(signal.SIGCONT)
    # a wakes with its step's sleep long over: it must find out it lost the lease (renewal
    # or its commit refused) and write nothing.
    async with asyncio.timeout(20):
        while not (a.logged("execution_let_go") or a.logged("write_refused_lease_lost")):
            await asyncio.sleep(0.1)
    await asyncio.sleep(1.0)  # anything a still wanted to write has been tried by now
    after = await _events(session, b, execution_id)
    assert after == items
    _one_history(after)
    assert await _holder(pg_url, execution_id) is None
    assert not [e for e in a.logged("execution_completed")
                if e.get("execution_id") == execution_id]


async def test_approve_and_cancel_on_a_node_that_does_not_run_it(
        start: Any, session: aiohttp.ClientSession, pg_url: str) -> None:
    """An approve sent to b of an execution gated on a completes it; a cancel sent to b of a
    step running on a cancels it there."""
    a = await start("a")
    b = await start("b")
    gated = await _submit(session, a, "gated")
    await _until(session, b, gated, lambda items: any(
        e["type"] == "approval_required" for e in items))
    await _post(session, f"{b.url}{API}/executions/{gated}/approve", {"comment": "go"})
    _until_done = await _until(session, a, gated, _terminal)
    assert [e["type"] for e in _until_done].count("workflow_completed") == 1
    assert_gapless(_until_done)

    running = await _submit(session, a, "sleeper")
    await _until(session, b, running, _started(1))
    assert await _holder(pg_url, running) == "a"
    await _post(session, f"{b.url}{API}/executions/{running}/cancel")
    items = await _until(session, b, running, _terminal)
    assert_gapless(items)
    assert [e["type"] for e in items].count("workflow_cancelled") == 1
    steps = await _json(session, f"{a.url}{API}/executions/{running}/steps")
    assert steps["items"][0]["error"]["code"] == "cancelled"


async def test_a_follower_on_another_node_across_a_missed_notification(
        start: Any, session: aiohttp.ClientSession, pg_url: str) -> None:
    """A WebSocket follower on b of an execution running on a: every event in order, no gap,
    although b's listening connection is cut on purpose while a commits."""
    a = await start("a")
    b = await start("b")
    execution_id = await _submit(session, a, "slow-steps", input={"seconds": 0.4})
    seqs: list[int] = []
    async with session.ws_connect(f"{b.url}{API}/executions/{execution_id}/ws?after=0") as ws:
        snapshot = json.loads((await ws.receive()).data)
        assert snapshot["type"] == "snapshot"
        cut = False
        async with asyncio.timeout(40):
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                event = json.loads(msg.data)
                seqs.append(event["seq"])
                if not cut and event["type"] == "step_started":
                    cut = True
                    conn = await asyncpg.connect(pg_url)
                    try:
                        await conn.execute(
                            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE application_name = 'workflowd-listen:b'")
                    finally:
                        await conn.close()
        assert ws.close_code == 1000
    stored = await _events(session, a, execution_id)
    assert seqs == [e["seq"] for e in stored]
    assert seqs == list(range(1, len(seqs) + 1))
    assert b.logged("listener_lost")
    assert await _holder(pg_url, execution_id) is None
