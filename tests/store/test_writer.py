"""The writer when the file refuses (locked by another program), an SQLite too old, the sync
mode, and failures of the writer's thread reaching its callers."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests import workflows
from tests.conftest import MakeClient
from tests.helpers import (
    API,
    LogWatch,
    all_executions,
    file_locked,
    get_json,
    problem_of,
    submit,
    wait_for_event,
    wait_for_status,
)
from tests.store.test_store import _write
from workflowd.config import Settings, StoreSettings
from workflowd.errors import StoreError
from workflowd.store import SQLiteStore, Store, StoreClosedError
from workflowd.store.schema import MIGRATIONS
from workflowd.store.writer import Writer

Client = TestClient[Any, Any]
TERMINAL = ("completed", "failed", "cancelled", "timed_out", "rejected")


@pytest.mark.sqlite_only("it holds the SQLite file's write lock to make the store refuse")
async def test_a_locked_file_fails_writes_fast_and_keeps_the_rest(
        make_client: MakeClient, settings: Settings, log_watch: LogWatch) -> None:
    """Another connection holds the write lock: submits answer 503 `store_unavailable` at once
    (not after minutes), reads go on, a running execution waits; after release all works."""
    client = await make_client()
    running = (await submit(client, "waiter", input={"name": "w"}))["execution_id"]
    await wait_for_event(client, running, "step_started")
    with file_locked(settings.store.path):
        workflows.release("w").set()  # its cycle's commit is refused: it must wait
        async with asyncio.timeout(10):
            answers = await asyncio.gather(*(
                client.post(f"{API}/workflows/three-steps/executions", json={})
                for _ in range(5)))
        for resp in answers:
            body = await problem_of(resp, 503)
            assert body["type"].endswith("store_unavailable")
            assert "locked" in body["detail"]
        entry = await log_watch.wait_for("store_unavailable")
        assert entry["reason"] == "database locked"
        assert entry["log_level"] == "error"
        assert (await get_json(client, f"{API}/executions/{running}"))["status"] == "running"
        assert (await client.get("/healthz")).status == 200
    assert (await wait_for_status(client, running, *TERMINAL))["status"] == "completed"
    after = (await submit(client, "three-steps"))["execution_id"]
    assert (await wait_for_status(client, after, *TERMINAL))["status"] == "completed"
    assert {e["execution_id"] for e in await all_executions(client)} == {running, after}
    assert log_watch.find("store_available")


async def test_an_sqlite_too_old_is_refused_with_a_clear_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An SQLite older than the store needs: `StoreError` naming both versions, no file made."""
    monkeypatch.setattr(sqlite3, "sqlite_version_info", (3, 23, 1))
    monkeypatch.setattr(sqlite3, "sqlite_version", "3.23.1")
    path = tmp_path / "old.db"
    with pytest.raises(StoreError, match=r"3\.23\.1 is too old.*3\.24"):
        await SQLiteStore.open(str(path))
    assert not path.exists()


def test_synchronous_is_full_by_default() -> None:
    """`[store] synchronous` defaults to `full`, in the settings and in the shipped config."""
    assert StoreSettings().synchronous == "full"
    root = Path(__file__).resolve().parents[2]
    assert 'synchronous = "full"' in (root / "config.toml").read_text()


async def test_the_writer_syncs_fully_unless_told(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The writer's connection runs `synchronous = FULL` (2) by default, NORMAL (1) if set."""
    conns: list[sqlite3.Connection] = []
    connect = Writer._connect

    def keep(self: Writer, prepare: Any) -> sqlite3.Connection:
        conn = connect(self, prepare)
        conns.append(conn)
        return conn

    monkeypatch.setattr(Writer, "_connect", keep)
    for n, (options, expected) in enumerate(((SQLiteStore.open, 2), (_normal, 1))):
        store = await options(str(tmp_path / f"{n}.db"))
        try:
            await store.commit(_write(1))  # the writer is idle after it: its connection free
            assert conns[-1].execute("PRAGMA synchronous").fetchone()[0] == expected
        finally:
            await store.close()


async def _normal(path: str) -> Store:
    return await SQLiteStore.open(path, synchronous="normal")


async def test_synchronous_normal_says_what_it_risks_at_start(
        make_client: MakeClient, log_watch: LogWatch) -> None:
    """`synchronous = "normal"` logs a warning at start-up; `full` does not."""
    client = await make_client()
    assert not log_watch.find("store_synchronous_normal")
    await client.close()
    await make_client(store={"synchronous": "normal"})
    entry = await log_watch.wait_for("store_synchronous_normal")
    assert entry["log_level"] == "warning"
    assert "power" in entry["risk"]


# ---- the writer's thread ---------------------------------------------------------------------


@pytest.fixture
def thread_failures(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Whatever reaches `threading.excepthook` during the test (it must be nothing)."""
    seen: list[Any] = []
    monkeypatch.setattr(threading, "excepthook", seen.append)
    return seen


async def test_a_failure_to_open_reaches_the_caller(tmp_path: Path,
                                                    thread_failures: list[Any]) -> None:
    """The writer's thread fails to migrate (a newer file): `open` raises, the hook sees none."""
    path = str(tmp_path / "new.db")
    store = await SQLiteStore.open(path)
    await store.close()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("INSERT INTO schema_version VALUES (?)", (len(MIGRATIONS) + 1,))
    conn.close()
    with pytest.raises(StoreError, match="newer"):
        await SQLiteStore.open(path)
    assert thread_failures == []
    store = await SQLiteStore.open(str(tmp_path / "other.db"))
    await store.close()
def test_a_failed_open_leaves_nothing_to_its_closed_loop(tmp_path: Path,
                                                       thread_failures: list[Any]) -> None:
    """After a failed open the writer's thread has nothing left to hand its loop: the loop
    closed at once and the thread joined, the thread's excepthook has seen nothing."""
    path = str(tmp_path / "new.db")
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    conn.execute("INSERT INTO schema_version VALUES (?)", (len(MIGRATIONS) + 1,))
    conn.close()
    before = set(threading.enumerate())
    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(StoreError, match="newer"):
            loop.run_until_complete(SQLiteStore.open(path))
    finally:
        loop.close()
    for thread in set(threading.enumerate()) - before:
        thread.join(10)
        assert not thread.is_alive(), thread
    assert thread_failures == []


async def test_a_crash_of_the_writer_fails_its_writes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, thread_failures: list[Any],
        log_watch: LogWatch) -> None:
    """A bug in the writer's thread (simulated: its bookkeeping after a commit raises) fails
    the writes in flight and those queued, instead of leaving their callers waiting forever."""
    store = await SQLiteStore.open(str(tmp_path / "s.db"))
    try:
        def broken(self: Writer, *args: Any) -> None:
            raise RuntimeError("a bug in the writer")

        monkeypatch.setattr(Writer, "_count", broken)
        async with asyncio.timeout(10):
            results = await asyncio.gather(*(store.commit(_write(n)) for n in range(3)),
                                           return_exceptions=True)
        assert all(isinstance(r, StoreClosedError) for r in results), results
        assert log_watch.find("writer_crashed")
        with pytest.raises(StoreClosedError):
            await store.commit(_write(9))
    finally:
        await store.close()
    assert thread_failures == []
