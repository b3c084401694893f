"""The store on a real file: migrations, group commit, isolation of a bad write."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import aiosqlite
import pytest

from workflowd.clock import utcnow
from workflowd.codec import dumps, encode
from workflowd.errors import StoreError
from workflowd.records import Event, ExecutionRecord, Progress
from workflowd.store import SQLiteStore, StoreClosedError, Write
from workflowd.store.schema import MIGRATIONS


def _record(n: int, seq: int = 1) -> ExecutionRecord:
    now = utcnow()
    return ExecutionRecord(execution_id=f"e{n}", workflow_id="wf", workflow_version=1,
                           status="queued", input={}, max_cycles=5,
                           progress=Progress(total_steps=1), created_at=now, updated_at=now,
                           seq=seq)


def _write(n: int, seq: int = 1) -> Write:
    event = Event(f"e{n}", seq, "workflow_queued",
                  encode({"seq": seq, "type": "workflow_queued", "execution_id": f"e{n}"}))
    return Write.of(_record(n, seq), [event], base_seq=seq - 1)


async def test_open_twice_migrates_once(tmp_path: Path) -> None:
    """Reopening a file keeps its data and does not run migrations again."""
    path = str(tmp_path / "s.db")
    store = await SQLiteStore.open(path)
    await store.commit(_write(1))
    await store.close()
    store = await SQLiteStore.open(path)
    try:
        assert (await store.get_execution("e1")) is not None
        async with aiosqlite.connect(path) as conn, conn.execute(
                "SELECT version FROM schema_version") as cur:
            assert [row[0] for row in await cur.fetchall()] == list(range(1, len(MIGRATIONS) + 1))
        async with aiosqlite.connect(path) as conn, conn.execute("PRAGMA journal_mode") as cur:
            assert (await cur.fetchone()) == ("wal",)
    finally:
        await store.close()


async def test_a_version_2_file_keeps_its_events_and_steps(tmp_path: Path) -> None:
    """Migration 3 rebuilds the events and steps tables without losing a row."""
    path = str(tmp_path / "old.db")
    conn = sqlite3.connect(path, isolation_level=None)
    for version, script in enumerate(MIGRATIONS[:2], start=1):
        conn.executescript(f"{script}\nCREATE TABLE IF NOT EXISTS schema_version "
                           f"(version INTEGER NOT NULL);\n"
                           f"INSERT INTO schema_version VALUES ({version});")
    doc = dumps(_record(1))
    conn.execute("INSERT INTO executions (id, workflow_id, status, created_at, doc) "
                 "VALUES ('e1', 'wf', 'queued', '2026', ?)", (doc,))
    conn.execute("INSERT INTO events VALUES ('e1', 1, '{\"seq\": 1}')")
    conn.execute("INSERT INTO steps VALUES ('e1', 1, ?)",
                 ('{"name": "a", "kind": "step", "cycle": 1}',))
    conn.close()
    store = await SQLiteStore.open(path)
    try:
        assert await store.events("e1") == ['{"seq": 1}']
        assert [s.name for s in await store.steps("e1")] == ["a"]
        await store.commit(_write(1, seq=2))
        assert len(await store.events("e1")) == 2
    finally:
        await store.close()


async def test_concurrent_writes_share_commits(tmp_path: Path) -> None:
    """Writes queued together are committed in fewer transactions than writes (group commit)."""
    store = await SQLiteStore.open(str(tmp_path / "s.db"))
    try:
        await asyncio.gather(*(store.commit(_write(n)) for n in range(200)))
        assert store.writer.writes == 200
        assert store.writer.commits < 200
        assert len(await store.events("e199")) == 1
    finally:
        await store.close()


async def test_a_bad_write_fails_alone(tmp_path: Path) -> None:
    """A write that breaks a constraint fails its own future; its batch neighbours commit."""
    store = await SQLiteStore.open(str(tmp_path / "s.db"))
    try:
        await store.commit(_write(1))
        results = await asyncio.gather(
            store.commit(_write(2)), store.commit(_write(1)),  # seq 1 of e1 exists already
            store.commit(_write(3)), return_exceptions=True)
        assert results[0] is None
        assert results[2] is None
        assert isinstance(results[1], Exception)
        assert await store.get_execution("e2") is not None
        assert await store.get_execution("e3") is not None
    finally:
        await store.close()


async def test_closed_store_refuses_writes(tmp_path: Path) -> None:
    """After close, a write is refused at once instead of hanging."""
    store = await SQLiteStore.open(str(tmp_path / "s.db"))
    await store.close()
    with pytest.raises(StoreClosedError):
        store.writer.submit(_write(1))


async def test_a_file_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    """Opening a file whose schema is newer than this code fails at open, changing nothing."""
    path = str(tmp_path / "new.db")
    store = await SQLiteStore.open(path)
    await store.close()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("INSERT INTO schema_version VALUES (?)", (len(MIGRATIONS) + 1,))
    conn.close()
    with pytest.raises(StoreError, match="newer"):
        await SQLiteStore.open(path)
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT MAX(version) FROM schema_version").fetchone() == (
        len(MIGRATIONS) + 1,)
    conn.close()
