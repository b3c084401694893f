"""The single writer: every change goes through one task that commits many at once (group commit).

Callers hand over a `Write` and get a future that resolves once it is durable. Whatever queued
up while the previous transaction was committing joins the next one, so under load one fsync
covers many executions' cycles; alone, a write commits at once.

The write connection lives in a thread of its own and a whole transaction (BEGIN, every
statement, COMMIT) is one call into it: one hand-over between the loop and the thread per
commit, where a statement-by-statement async driver would make one per statement.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

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

# The three tables every cycle writes take a whole batch as one JSON array parameter, expanded
# by `json_each` inside SQLite: one statement step per table and batch, where `executemany`
# takes one step per row and, between steps, the GIL back from a busy event loop (measured:
# milliseconds per row when the loop is busy, microseconds with this).
_UPSERT_EXECUTION = (
    "INSERT INTO executions (id, workflow_id, status, created_at, finished_at, doc) "
    "SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5 "
    "FROM json_each(?) WHERE true ON CONFLICT (id) DO UPDATE SET "
    "status = excluded.status, finished_at = excluded.finished_at, doc = excluded.doc"
)
_UPSERT_STEP = (
    "INSERT INTO steps (execution_id, cycle, doc) "
    "SELECT value ->> 0, value ->> 1, value ->> 2 FROM json_each(?) WHERE true "
    "ON CONFLICT (execution_id, cycle) DO UPDATE SET doc = excluded.doc"
)
_INSERT_EVENT = (
    "INSERT INTO events (execution_id, seq, doc) "
    "SELECT value ->> 0, value ->> 1, value ->> 2 FROM json_each(?)"
)
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

    # The latest snapshot of each execution in the batch: only that one is encoded and written.
    latest: dict[str, ExecutionRecord] = field(default_factory=dict)
    encoded: list[tuple[str, str]] = field(default_factory=list)

    def add(self, write: Write) -> None:
        rec = write.execution
        if rec is not None:
            self.latest[rec.execution_id] = rec
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

    def seal(self) -> _Rows:
        """Encode the hot tables' rows, each as one JSON array, before the hand-over: the
        writer's thread then needs the GIL only between statements."""
        self.executions.extend(
            (rec.execution_id, rec.workflow_id, rec.status, rec.created_at, rec.finished_at,
             rec.model_dump_json())
            for rec in self.latest.values())
        self.latest.clear()
        self.encoded = [(sql, dumps(rows)) for sql, rows in (
            (_UPSERT_EXECUTION, self.executions), (_UPSERT_STEP, self.steps),
            (_INSERT_EVENT, self.events)) if rows]
        return self


class Writer:
    """Owns the write connection; commits queued writes in batches, in the order they came."""

    def __init__(self, path: str, pragmas: Sequence[str], max_batch: int,
                 commit_interval: float) -> None:
        self._path = path
        self._pragmas = tuple(pragmas)
        self._max_batch = max_batch
        self._interval = commit_interval
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="workflowd-writer")
        self._conn: sqlite3.Connection | None = None
        # Writes waiting for the next commit, and what the idle loop waits on.
        self._queued: list[Write] = []
        self._wakeup: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.commits = 0
        self.writes = 0

    async def open(self, prepare: Callable[[sqlite3.Connection], object]) -> None:
        """Connect in the writer's thread, run `prepare` (the migrations) there, and start."""
        await self._in_thread(self._connect, prepare)
        self._task = asyncio.create_task(self._loop(), name="store-writer")

    def submit(self, write: Write) -> asyncio.Future[None]:
        """Queue a write; the future resolves after its commit (or fails with its error)."""
        if self._closed:
            raise StoreClosedError("the store is closed")
        write.future = asyncio.get_running_loop().create_future()
        self._queued.append(write)
        self._wake()
        return write.future

    async def stop(self) -> None:
        """Commit what is queued, then stop and close the connection."""
        if self._closed:
            return
        self._closed = True
        self._wake()
        if self._task is not None:
            await self._task
        if self._conn is not None:
            await self._in_thread(self._conn.close)
        self._thread.shutdown(wait=False)

    async def _in_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    def _connect(self, prepare: Callable[[sqlite3.Connection], object]) -> None:
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        try:
            for pragma in self._pragmas:
                conn.execute(pragma)
            prepare(conn)
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def _wake(self) -> None:
        wakeup = self._wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)

    async def _loop(self) -> None:
        """Commit what is queued, up to `max_batch` at a time, until closed and drained."""
        loop = asyncio.get_running_loop()
        while self._queued or not self._closed:
            if not self._queued:
                self._wakeup = loop.create_future()
                await self._wakeup
                self._wakeup = None
                continue
            if self._interval and not self._closed and len(self._queued) < self._max_batch:
                await asyncio.sleep(self._interval)  # let more join this commit
            batch = self._queued[:self._max_batch]
            del self._queued[:self._max_batch]
            try:
                await self._commit(batch)
            except Exception as exc:  # noqa: BLE001 - the writer must outlive any one failure
                for write in batch:
                    _settle(write, exc)

    async def _commit(self, batch: list[Write]) -> None:
        try:
            rows = _Rows()
            for write in batch:
                rows.add(write)
            await self._in_thread(self._transaction, rows.seal())
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

    def _transaction(self, rows: _Rows) -> None:
        """One transaction, run in the writer's thread."""
        conn = self._conn
        assert conn is not None
        conn.execute("BEGIN IMMEDIATE")
        try:
            for sql, batch in rows.encoded:
                conn.execute(sql, (batch,))
            for sql, params in ((_INSERT_LOG, rows.logs), (_INSERT_IDEMPOTENCY, rows.idempotency),
                                (_INSERT_DELIVERY, rows.deliveries)):
                if params:
                    conn.executemany(sql, params)
            for sql, one in rows.statements:
                conn.execute(sql, one)
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(Exception):
                conn.execute("ROLLBACK")
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
