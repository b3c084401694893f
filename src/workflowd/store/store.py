"""The SQLite store: opens the file (WAL), migrates it, reads, and hands writes to the writer."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import aiosqlite

from workflowd.errors import StoreError
from workflowd.records import (
    TERMINAL,
    ExecutionRecord,
    decode_execution,
)
from workflowd.store.base import ExecutionFilter, Store
from workflowd.store.reads import SharedReads
from workflowd.store.rows import SQLiteRows
from workflowd.store.schema import migrate
from workflowd.store.writer import Write, Writer

__all__ = ["MIN_SQLITE", "ExecutionFilter", "SQLiteStore"]

# Upserts (`ON CONFLICT ... DO UPDATE`) came in 3.24; `json_each` and `json_extract` are the
# JSON functions every build since has.
MIN_SQLITE = (3, 24, 0)


def _pragmas(synchronous: str) -> tuple[str, ...]:
    return (
        "PRAGMA journal_mode = WAL",
        # FULL syncs the WAL at every commit, so a commit survives a power cut, not only a
        # crash of the process; group commit keeps that to one sync per batch. NORMAL (a
        # setting) may lose the last commits to an OS crash or power cut, never to a kill.
        f"PRAGMA synchronous = {synchronous.upper()}",
        # Short: nothing but another program takes this file's write lock, and a writer that
        # waited longer would stall every caller behind it. Past it the batch fails at once.
        "PRAGMA busy_timeout = 1000",
        "PRAGMA foreign_keys = ON",
    )


_TERMINAL_SQL = ", ".join(f"'{status}'" for status in sorted(TERMINAL))


class SQLiteStore(SQLiteRows, SharedReads, Store):
    """One file: a write connection for the writer thread, a read connection for the rest.

    The reads both stores share are in `reads.SharedReads`; the rest of the SQL of workflows
    defined as data and of artifacts is in `rows.SQLiteRows`."""

    def __init__(self, path: str, reader: aiosqlite.Connection, writer: Writer,
                 lock: int | None) -> None:
        super().__init__()
        self.path = path
        self.where = path
        self._reader = reader
        self.writer: Writer = writer
        self._lock = lock

    @classmethod
    async def open(cls, path: str, *, max_batch: int = 512, commit_interval: float = 0.0,
                   synchronous: Literal["full", "normal"] = "full") -> SQLiteStore:
        """Open (creating and migrating) the file; `StoreError` says why it cannot be."""
        if sqlite3.sqlite_version_info < MIN_SQLITE:
            raise StoreError(f"SQLite {sqlite3.sqlite_version} is too old: workflowd needs "
                             f"{'.'.join(map(str, MIN_SQLITE))} or later")
        lock = None
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            lock = _lock(path)
        pragmas = _pragmas(synchronous)
        writer = Writer(path, pragmas, max_batch=max_batch, commit_interval=commit_interval)
        try:
            await writer.open(migrate)
            reader = await aiosqlite.connect(path, isolation_level=None)
            try:
                for pragma in pragmas[1:]:
                    await reader.execute(pragma)
            except BaseException:
                await reader.close()
                raise
        except BaseException as exc:
            await writer.stop()
            _unlock(lock)
            if isinstance(exc, sqlite3.Error | RuntimeError):
                raise StoreError(f"cannot open the store {path!r}: {exc}{_space_note(path)}"
                                 ) from exc
            raise
        return cls(path, reader, writer, lock)

    async def close(self) -> None:
        await self.writer.stop()
        await self._reader.close()
        _unlock(self._lock)
        self._lock = None

    # ---- writes ---------------------------------------------------------------------------

    def write(self, write: Write) -> asyncio.Future[None]:
        """Queue a write; the future resolves once it is durable."""
        return self.writer.submit(write)

    # ---- reads ----------------------------------------------------------------------------

    async def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        async with self._reader.execute(sql, tuple(params)) as cur:
            return list(await cur.fetchall())

    async def unfinished(self) -> list[ExecutionRecord]:
        """Every execution not yet terminal, in order of arrival."""
        rows = await self._rows(
            f"SELECT doc FROM executions WHERE status NOT IN ({_TERMINAL_SQL}) ORDER BY num"  # noqa: S608 - a constant
        )
        return [decode_execution(row[0]) for row in rows]

    async def list_executions(self, f: ExecutionFilter) -> tuple[list[ExecutionRecord], int | None]:
        """Newest first; answers the page and the `num` to continue below (None at the end)."""
        where: list[str] = []
        params: list[Any] = []
        for column, value in (("workflow_id", f.workflow_id), ("status", f.status)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if f.created_after is not None:
            where.append("created_at >= ?")
            params.append(f.created_after)
        if f.created_before is not None:
            where.append("created_at < ?")
            params.append(f.created_before)
        if f.before_num is not None:
            where.append("num < ?")
            params.append(f.before_num)
        for key, value in f.labels:
            # Label keys are validated to a safe alphabet, so quoting them in the path is exact.
            where.append("json_extract(doc, ?) = ?")
            params.extend((f'$.labels."{key}"', value))
        sql = "SELECT num, doc FROM executions"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY num DESC LIMIT ?"
        params.append(f.limit + 1)
        rows = await self._rows(sql, params)
        page = rows[: f.limit]
        next_num = page[-1][0] if len(rows) > f.limit else None
        return [decode_execution(row[1]) for row in page], next_num

    async def delivery_outcome(self, delivery_id: int, *, delivered: bool, attempts: int,
                               next_at: str | None, error: str | None) -> None:
        """Record an attempt: delivered rows go; others wait until `next_at`, or fail for good
        when `next_at` is None."""
        statement: tuple[str, tuple[Any, ...]]
        if delivered:
            statement = ("DELETE FROM deliveries WHERE id = ?", (delivery_id,))
        else:
            statement = (
                "UPDATE deliveries SET attempts = ?, next_at = COALESCE(?, next_at), "
                "status = CASE WHEN ? IS NULL THEN 'failed' ELSE 'pending' END, last_error = ? "
                "WHERE id = ?",
                (attempts, next_at, next_at, error, delivery_id),
            )
        await self.commit(Write(statements=[statement]))

    async def count_by_workflow_status(self, ids: Sequence[str] | None = None,
                                       ) -> dict[tuple[str, str], int]:
        """Executions by `(workflow_id, status)`: all of them, or those of `ids`."""
        sql = "SELECT workflow_id, status, COUNT(*) FROM executions"
        if ids is not None:
            sql += f" WHERE id IN ({', '.join('?' * len(ids))})"
        rows = await self._rows(sql + " GROUP BY workflow_id, status", ids or ())
        return {(row[0], row[1]): int(row[2]) for row in rows}

    async def delete_executions(self, ids: Sequence[str], idempotency_before: str) -> None:
        """Remove executions with everything they own, and idempotency answers past the cutoff."""
        statements: list[tuple[str, tuple[Any, ...]]] = []
        for table, column in (("steps", "execution_id"), ("events", "execution_id"),
                              ("logs", "execution_id"), ("executions", "id")):
            statements.extend((f"DELETE FROM {table} WHERE {column} = ?", (i,)) for i in ids)  # noqa: S608
        statements.append(("DELETE FROM idempotency WHERE created_at < ?", (idempotency_before,)))
        # Finished executions never change: counted before the delete, they are what it removes.
        counts = await self.count_by_workflow_status(ids) if self.on_deleted_counts else {}
        await self.commit(Write(statements=statements))
        self._deleted(ids, counts)


def _space_note(path: str) -> str:
    """Why an open may have failed when the file's disk is full: SQLite says only "disk I/O
    error" when it cannot make its WAL index there."""
    if path == ":memory:":
        return ""
    try:
        stat = os.statvfs(Path(path).parent)
    except OSError:
        return ""
    if stat.f_bavail * stat.f_frsize >= 64 * 1024:
        return ""
    return " (no space left on its disk: free some and start again)"


def _lock(path: str) -> int:
    """Hold `PATH.lock` while the store is open: two services on one file would both run the
    same executions."""
    fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise StoreError(f"the store {path!r} is in use by another workflowd (it holds "
                         f"{path}.lock); run one service per file, or PostgreSQL for several"
                         ) from None
    return fd


def _unlock(fd: int | None) -> None:
    if fd is not None:
        with contextlib.suppress(OSError):
            os.close(fd)  # closing the descriptor releases the lock
