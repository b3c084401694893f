"""The single writer: every change goes through one task that commits many at once (group commit).

Callers hand over a `Write` and get a future that resolves once it is durable. Whatever queued
up while the previous transaction was committing joins the next one, so under load one fsync
covers many executions' cycles; alone, a write commits at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiosqlite
import structlog

from workflowd.models import (
    Event,
    ExecutionRecord,
    IdempotencyRecord,
    LogLine,
    StepRecord,
    dumps,
    utcnow,
)

__all__ = ["Delivery", "StoreClosedError", "Write", "Writer"]

log = structlog.get_logger(__name__)

_UPSERT_EXECUTION = (
    "INSERT INTO executions (id, workflow_id, status, created_at, finished_at, doc) "
    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
    "status = excluded.status, finished_at = excluded.finished_at, doc = excluded.doc"
)
_UPSERT_STEP = (
    "INSERT INTO steps (execution_id, cycle, doc) VALUES (?, ?, ?) "
    "ON CONFLICT (execution_id, cycle) DO UPDATE SET doc = excluded.doc"
)
_INSERT_EVENT = "INSERT INTO events (execution_id, seq, doc) VALUES (?, ?, ?)"
_INSERT_LOG = "INSERT INTO logs (execution_id, doc) VALUES (?, ?)"
_INSERT_DELIVERY = (
    "INSERT INTO deliveries (url, body, headers, next_at, created_at) VALUES (?, ?, ?, ?, ?)"
)
_INSERT_IDEMPOTENCY = (
    "INSERT OR REPLACE INTO idempotency "
    "(scope, key, fingerprint, status, body, location, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
)


@dataclass(frozen=True, slots=True)
class Delivery:
    """An HTTP POST to make once the write commits (kept in the outbox until it succeeds)."""

    url: str
    body: str
    headers: dict[str, str]


class StoreClosedError(RuntimeError):
    """A write was handed to a writer that has stopped."""


@dataclass(slots=True)
class Write:
    """One atomic change: an execution's snapshot with its step records, events and log lines."""

    execution: ExecutionRecord | None = None
    steps: Sequence[StepRecord] = ()
    events: Sequence[Event] = ()
    logs: Sequence[LogLine] = ()
    idempotency: IdempotencyRecord | None = None
    statements: Sequence[tuple[str, tuple[Any, ...]]] = ()
    deliveries: Sequence[Delivery] = ()
    on_commit: Callable[[], None] | None = None
    future: asyncio.Future[None] | None = field(default=None, repr=False)


@dataclass(slots=True)
class _Rows:
    executions: list[tuple[Any, ...]] = field(default_factory=list)
    steps: list[tuple[Any, ...]] = field(default_factory=list)
    events: list[tuple[Any, ...]] = field(default_factory=list)
    logs: list[tuple[Any, ...]] = field(default_factory=list)
    idempotency: list[tuple[Any, ...]] = field(default_factory=list)
    deliveries: list[tuple[Any, ...]] = field(default_factory=list)
    statements: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)

    def add(self, write: Write) -> None:
        rec = write.execution
        if rec is not None:
            self.executions.append(
                (rec.execution_id, rec.workflow_id, rec.status, rec.created_at,
                 rec.finished_at, rec.model_dump_json())
            )
            execution_id = rec.execution_id
            self.steps.extend((execution_id, s.cycle, s.model_dump_json()) for s in write.steps)
        self.events.extend((e.execution_id, e.seq, e.json) for e in write.events)
        self.logs.extend((line.execution_id, line.json) for line in write.logs)
        idem = write.idempotency
        if idem is not None:
            self.idempotency.append(
                (idem.scope, idem.key, idem.fingerprint, idem.status, idem.body, idem.location,
                 utcnow())
            )
        if write.deliveries:
            now = utcnow()
            self.deliveries.extend((d.url, d.body, dumps(d.headers), now, now)
                                   for d in write.deliveries)
        self.statements.extend(write.statements)


class Writer:
    """Owns the write connection; commits queued writes in batches, in the order they came."""

    def __init__(self, conn: aiosqlite.Connection, max_batch: int, commit_interval: float) -> None:
        self._conn = conn
        self._max_batch = max_batch
        self._interval = commit_interval
        self._queue: asyncio.Queue[Write | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.commits = 0
        self.writes = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="store-writer")

    def submit(self, write: Write) -> asyncio.Future[None]:
        """Queue a write; the future resolves after its commit (or fails with its error)."""
        if self._closed:
            raise StoreClosedError("the store is closed")
        write.future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(write)
        return write.future

    async def stop(self) -> None:
        """Commit what is queued, then stop."""
        if self._closed:
            return
        self._closed = True
        self._queue.put_nowait(None)
        if self._task is not None:
            await self._task

    async def _loop(self) -> None:
        stopping = False
        while not stopping:
            first = await self._queue.get()
            if first is None:
                break
            batch = [first]
            stopping = self._drain_into(batch)
            if self._interval and not stopping and len(batch) < self._max_batch:
                await asyncio.sleep(self._interval)
                stopping = self._drain_into(batch)
            try:
                await self._commit(batch)
            except Exception as exc:  # noqa: BLE001 - the writer must outlive any one failure
                for write in batch:
                    _settle(write, exc)

    def _drain_into(self, batch: list[Write]) -> bool:
        """Take what is queued now, up to the batch size; answer whether the stop mark came."""
        while len(batch) < self._max_batch and not self._queue.empty():
            item = self._queue.get_nowait()
            if item is None:
                return True
            batch.append(item)
        return False

    async def _commit(self, batch: list[Write]) -> None:
        try:
            await self._transaction(batch)
        except Exception as exc:  # noqa: BLE001 - one bad write must not fail its neighbours
            if len(batch) == 1:
                log.warning("write_failed", error=str(exc))
                _settle(batch[0], exc)
                return
            for write in batch:
                await self._commit([write])
            return
        self.commits += 1
        self.writes += len(batch)
        for write in batch:
            _settle(write, None)

    async def _transaction(self, batch: list[Write]) -> None:
        rows = _Rows()
        for write in batch:
            rows.add(write)
        conn = self._conn
        await conn.execute("BEGIN IMMEDIATE")
        try:
            if rows.executions:
                await conn.executemany(_UPSERT_EXECUTION, rows.executions)
            if rows.steps:
                await conn.executemany(_UPSERT_STEP, rows.steps)
            if rows.events:
                await conn.executemany(_INSERT_EVENT, rows.events)
            if rows.logs:
                await conn.executemany(_INSERT_LOG, rows.logs)
            if rows.idempotency:
                await conn.executemany(_INSERT_IDEMPOTENCY, rows.idempotency)
            if rows.deliveries:
                await conn.executemany(_INSERT_DELIVERY, rows.deliveries)
            for sql, params in rows.statements:
                await conn.execute(sql, params)
            await conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(Exception):
                await conn.execute("ROLLBACK")
            raise


def _settle(write: Write, error: BaseException | None) -> None:
    if error is None and write.on_commit is not None:
        try:
            write.on_commit()
        except Exception:
            log.exception("on_commit_failed")
    future = write.future
    if future is None or future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
