"""The single writer: every change goes through one thread that commits many at once (group
commit).

Callers hand over a `Write` and get a future that resolves once it is durable. Whatever queued
up while the previous transaction was committing joins the next one, so under load one commit
covers many executions' cycles; alone, a write commits at once.

The write connection lives in a thread of its own, which takes queued writes in batches and
runs each batch's transaction (BEGIN, every statement, COMMIT) by itself: one hand-over back to
the loop per commit, where a statement-by-statement async driver would make one per statement.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
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
        """Encode the hot tables' rows, each table's as one JSON array (one statement)."""
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
    """Owns the write connection; commits queued writes in batches, in the order they came.

    The thread takes the next batch as soon as a commit ends, without waiting for the event
    loop to get round to it: under load the loop is busy, and a commit that waited for a turn
    of the loop would make every caller wait that much longer.
    """

    def __init__(self, path: str, pragmas: Sequence[str], max_batch: int,
                 commit_interval: float) -> None:
        self._path = path
        self._pragmas = tuple(pragmas)
        self._max_batch = max_batch
        self._interval = commit_interval
        self._inbox: queue.SimpleQueue[Write | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._stopped: asyncio.Future[None] | None = None
        self._closed = False
        self.commits = 0
        self.writes = 0

    async def open(self, prepare: Callable[[sqlite3.Connection], object]) -> None:
        """Start the writer's thread: it connects, runs `prepare` (the migrations), then
        commits what it is handed until `stop`."""
        loop = asyncio.get_running_loop()
        opened: asyncio.Future[None] = loop.create_future()
        self._stopped = loop.create_future()
        self._thread = threading.Thread(target=self._run, args=(loop, prepare, opened),
                                        name="workflowd-writer", daemon=True)
        self._thread.start()
        await opened

    def submit(self, write: Write) -> asyncio.Future[None]:
        """Queue a write; the future resolves after its commit (or fails with its error)."""
        if self._closed:
            raise StoreClosedError("the store is closed")
        write.future = asyncio.get_running_loop().create_future()
        self._inbox.put(write)
        return write.future

    async def stop(self) -> None:
        """Commit what is queued, then stop and close the connection."""
        if self._closed:
            return
        self._closed = True
        self._inbox.put(None)
        if self._stopped is not None:
            await asyncio.shield(self._stopped)

    # ---- in the writer's thread ------------------------------------------------------------

    def _run(self, loop: asyncio.AbstractEventLoop,
             prepare: Callable[[sqlite3.Connection], object],
             opened: asyncio.Future[None]) -> None:
        try:
            conn = self._connect(prepare)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller of open()
            loop.call_soon_threadsafe(_resolve, opened, exc)
            loop.call_soon_threadsafe(_resolve, self._stopped, None)
            return
        loop.call_soon_threadsafe(_resolve, opened, None)
        try:
            stopping = False
            while not stopping:
                first = self._inbox.get()
                if first is None:
                    break
                batch = [first]
                stopping = self._drain_into(batch)
                if self._interval and not stopping and len(batch) < self._max_batch:
                    time.sleep(self._interval)  # let more join this commit
                    stopping = self._drain_into(batch)
                errors = self._commit(conn, batch)
                loop.call_soon_threadsafe(_settle_all, batch, errors)
        finally:
            conn.close()
            loop.call_soon_threadsafe(_resolve, self._stopped, None)

    def _connect(self, prepare: Callable[[sqlite3.Connection], object]) -> sqlite3.Connection:
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        try:
            for pragma in self._pragmas:
                conn.execute(pragma)
            prepare(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _drain_into(self, batch: list[Write]) -> bool:
        """Take what is queued now, up to the batch size; answer whether the stop mark came."""
        while len(batch) < self._max_batch:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                return False
            if item is None:
                return True
            batch.append(item)
        return False

    def _commit(self, conn: sqlite3.Connection,
                batch: list[Write]) -> list[BaseException | None]:
        """Commit the batch in one transaction; if it fails, each write alone, so that one bad
        write fails only itself. Answers each write's error (None: committed)."""
        try:
            rows = _Rows()
            for write in batch:
                rows.add(write)
            _transaction(conn, rows.seal())
        except Exception as exc:  # noqa: BLE001 - one bad write must not fail its neighbours
            if len(batch) == 1:
                log.warning("write_failed", error=str(exc))
                return [exc]
            return [self._commit(conn, [write])[0] for write in batch]
        self.commits += 1
        self.writes += len(batch)
        return [None] * len(batch)


def _transaction(conn: sqlite3.Connection, rows: _Rows) -> None:
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


def _resolve(future: asyncio.Future[None] | None, error: BaseException | None) -> None:
    if future is None or future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


def _settle_all(batch: list[Write], errors: list[BaseException | None]) -> None:
    for write, error in zip(batch, errors, strict=True):
        _settle(write, error)


def _settle(write: Write, error: BaseException | None) -> None:
    if error is None and write.on_commit is not None:
        try:
            write.on_commit()
        except Exception:
            log.exception("on_commit_failed")
    _resolve(write.future, error)
