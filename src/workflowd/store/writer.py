"""The single writer: every change goes through one thread that commits many at once (group
commit).

Callers hand over a `Write` (rows already encoded as JSON on the loop, so nothing user code can
still change crosses the thread) and get a future that resolves once it is durable. Whatever
queued up while the previous transaction was committing joins the next one, so under load one
commit covers many executions' changes; alone, a write commits at once.

Failures: when the file itself refuses (full, locked, unreadable), the whole batch fails at once
with `StoreUnavailableError` and nothing of it is kept; the writer goes on with the next batch,
so the service recovers by itself when the cause goes. When one write is at fault (a constraint),
the batch is retried write by write so that only that one fails. Either way a later write of
the same execution that was built on a failed one is refused (`StaleWriteError`) instead of
committed, so an execution's events never get a gap.
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

import msgspec
import structlog

from workflowd.clock import utcnow
from workflowd.codec import dumps, encode
from workflowd.errors import StoreUnavailableError
from workflowd.records import Event, ExecutionRecord, IdempotencyRecord, StepRecord, wakes_at
from workflowd.store.artifacts import ArtifactUse

__all__ = ["Delivery", "Gate", "StaleWriteError", "StoreClosedError", "Write", "Writer"]

log = structlog.get_logger(__name__)

# The three tables every change writes take a whole batch as one JSON array parameter, expanded
# by `json_each` inside SQLite: one statement step per table and batch, where `executemany`
# takes one step per row and, between steps, the GIL back from a busy event loop (measured:
# milliseconds per row when the loop is busy, microseconds with this). `json_extract`, not
# `->>`, so that SQLite 3.24 and later do.
_UPSERT_EXECUTION = (
    "INSERT INTO executions (id, workflow_id, status, created_at, finished_at, doc) "
    "SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), "
    "json_extract(value, '$[2]'), json_extract(value, '$[3]'), json_extract(value, '$[4]'), "
    "json_extract(value, '$[5]') FROM json_each(?) WHERE true ON CONFLICT (id) DO UPDATE SET "
    "status = excluded.status, finished_at = excluded.finished_at, doc = excluded.doc"
)
_UPSERT_STEP = (
    "INSERT INTO steps (execution_id, cycle, doc) "
    "SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), "
    "json_extract(value, '$[2]') FROM json_each(?) WHERE true "
    "ON CONFLICT (execution_id, cycle) DO UPDATE SET doc = excluded.doc"
)
_INSERT_EVENT = (
    "INSERT INTO events (execution_id, seq, doc) "
    "SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), "
    "json_extract(value, '$[2]') FROM json_each(?)"
)
_INSERT_LOG = "INSERT INTO logs (execution_id, doc) VALUES (?, ?)"
_INSERT_DELIVERY = (
    "INSERT INTO deliveries (url, body, headers, next_at, created_at) VALUES (?, ?, ?, ?, ?)"
)
# A use of an artifact that is gone meanwhile records nothing (the row is read in the same
# transaction, so retention's delete and this insert never cross).
_INSERT_ARTIFACT_USE = (
    "INSERT OR IGNORE INTO artifact_uses (execution_id, artifact_id, role, created_at) "
    "SELECT ?, id, ?, ? FROM artifacts WHERE id = ?"
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


class StaleWriteError(StoreUnavailableError):
    """A write built on an earlier write of the same execution that failed: refused, so that
    nothing commits after a gap. Its owner has gone back to the last committed record."""


@dataclass(slots=True)
class Write:
    """One atomic change, its rows encoded: an execution's snapshot with its step records,
    events and log lines, the artifacts it used, or (inside `SQLiteStore` only: the PostgreSQL
    writer refuses them) plain SQLite statements.

    `execution_id`, `base_seq` (the `seq` of the record this change was built on) and `seq`
    (its own record's) let the writer refuse a write built on one that failed.
    """

    execution_id: str | None = None
    base_seq: int = 0
    seq: int = 0
    # [id, workflow_id, status, created_at, finished_at, doc, priority, wait kind, wakes at];
    # the last three are for PostgreSQL (claims in priority order, leases, timers).
    execution: bytes | None = None
    steps: Sequence[tuple[int, bytes]] = ()  # (cycle, [execution_id, cycle, doc])
    events: Sequence[bytes] = ()  # [execution_id, seq, doc]
    logs: Sequence[tuple[str, str]] = ()  # (execution_id, doc)
    idempotency: IdempotencyRecord | None = None
    # Uses of artifacts (a submit's input names them), committed only with the execution's
    # write when there is one; each records nothing if its artifact is gone.
    artifact_uses: Sequence[ArtifactUse] = ()
    # SQLite statements, for `SQLiteStore`'s own writes: nothing outside it may depend on them.
    statements: Sequence[tuple[str, tuple[Any, ...]]] = ()
    deliveries: Sequence[Delivery] = ()
    # PostgreSQL: a new execution leased to this node at once (it has room to run it now).
    claim: bool = False
    on_commit: Callable[[], None] | None = None
    future: asyncio.Future[None] | None = field(default=None, repr=False)

    @classmethod
    def of(cls, rec: ExecutionRecord, events: Sequence[Event] = (),
           steps: Sequence[StepRecord] = (), *, base_seq: int, **extra: Any) -> Write:
        """The write of an execution's record with its events and step records, the rows
        encoded here, on the caller's thread."""
        execution_id = rec.execution_id
        wait = rec.wait
        return cls(
            execution_id=execution_id, base_seq=base_seq, seq=rec.seq,
            execution=encode((execution_id, rec.workflow_id, rec.status, rec.created_at,
                              rec.finished_at, rec, rec.priority,
                              wait.kind if wait is not None else None, wakes_at(rec))),
            steps=[(s.cycle or 0, encode((execution_id, s.cycle or 0, s))) for s in steps],
            events=[encode((execution_id, e.seq, msgspec.Raw(e.json))) for e in events],
            **extra)


@dataclass(slots=True)
class _Rows:
    """A batch's rows, gathered in the writer's thread."""

    executions: dict[str, bytes] = field(default_factory=dict)  # the latest snapshot of each
    steps: dict[tuple[str, int], bytes] = field(default_factory=dict)
    events: list[bytes] = field(default_factory=list)
    logs: list[tuple[str, str]] = field(default_factory=list)
    idempotency: list[tuple[Any, ...]] = field(default_factory=list)
    deliveries: list[tuple[Any, ...]] = field(default_factory=list)
    statements: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)
    artifact_uses: list[tuple[str, str, str, str]] = field(default_factory=list)

    def add(self, write: Write) -> None:
        execution_id = write.execution_id
        if write.execution is not None and execution_id is not None:
            self.executions[execution_id] = write.execution
        if execution_id is not None:
            for cycle, row in write.steps:
                self.steps[(execution_id, cycle)] = row  # a later record of a cycle wins
        self.events.extend(write.events)
        self.logs.extend(write.logs)
        idem = write.idempotency
        if idem is not None:
            self.idempotency.append((idem.scope, idem.key, idem.fingerprint, idem.status,
                                     idem.body, idem.location, utcnow()))
        if write.deliveries:
            now = utcnow()
            self.deliveries.extend((d.url, d.body, dumps(d.headers), now, now)
                                   for d in write.deliveries)
        self.statements.extend(write.statements)
        self.artifact_uses.extend((user, role, created_at, artifact_id)
                                  for user, artifact_id, role, created_at
                                  in write.artifact_uses)


def _array(rows: Sequence[bytes]) -> str:
    return (b"[" + b",".join(rows) + b"]").decode()


class Gate:
    """What every writer keeps besides its connection: which executions' writes it must refuse
    after a failure, and its counters.

    An execution whose write failed is blocked at the seq of its last committed record: only
    a write built on that record (its owner went back to it) may commit next; one built on the
    failed write is stale. Touched by the writer alone (its thread, or its task).
    """

    def __init__(self, where: str) -> None:
        self._where = where  # where the data is, for log lines (never a password)
        self._blocked: dict[str, int] = {}
        self.commits = 0
        self.writes = 0
        self.rows = 0
        self.failures = 0
        self.commit_seconds = 0.0
        self.unavailable: str | None = None  # why the store refuses writes, while it does

    def _admit(self, batch: list[Write]) -> list[BaseException | None]:
        """Refuse the writes of a blocked execution that are not built on its last committed
        record, following the batch's own chain (a write may build on one before it here)."""
        expect: dict[str, int] = {}
        errors: list[BaseException | None] = []
        for write in batch:
            execution_id = write.execution_id
            error = None
            if execution_id is not None and execution_id in self._blocked:
                if write.base_seq != expect.get(execution_id, self._blocked[execution_id]):
                    error = _stale_error(execution_id)
                else:
                    expect[execution_id] = write.seq
            errors.append(error)
        return errors

    def _block(self, writes: Sequence[Write]) -> None:
        """These writes failed: block their executions at what each was built on."""
        self.failures += len(writes)
        for write in writes:
            if write.execution_id is not None:
                self._blocked.setdefault(write.execution_id, write.base_seq)

    def _unavailable(self, reason: str, exc: Exception) -> StoreUnavailableError:
        """The store refuses writes for `reason`: said in the log once, until it recovers."""
        if self.unavailable != reason:
            log.error("store_unavailable", reason=reason, error=str(exc), where=self._where)
            self.unavailable = reason
        return StoreUnavailableError(f"the store cannot write now ({reason}); nothing of this "
                                     "request was changed, try again later")

    def rebase(self, heads: dict[str, int]) -> None:
        """These executions were read at these seqs under a lease this node holds again (a
        claim): a write built on that head may commit, one built on a write refused before
        may not. Without this, a node that lost a lease and took it back would refuse its
        own writes for good. PostgreSQL only: there the writer is a task on the loop."""
        for execution_id, seq in heads.items():
            if execution_id in self._blocked:
                self._blocked[execution_id] = seq

    def _count(self, writes: Sequence[Write], seconds: float) -> None:
        """These writes committed together: unblock their executions, count them, and say
        once that the store is available again if it was not."""
        if self.unavailable is not None:
            log.info("store_available", where=self._where)
            self.unavailable = None
        for write in writes:
            if write.execution_id is not None:
                self._blocked.pop(write.execution_id, None)
            self.rows += len(write.events) + len(write.steps) + (write.execution is not None)
        self.commits += 1
        self.writes += len(writes)
        self.commit_seconds += seconds


class Writer(Gate):
    """Owns the write connection; commits queued writes in batches, in the order they came.

    The thread takes the next batch as soon as a commit ends, without waiting for the event
    loop to get round to it: under load the loop is busy, and a commit that waited for a turn
    of the loop would make every caller wait that much longer.
    """

    def __init__(self, path: str, pragmas: Sequence[str], max_batch: int,
                 commit_interval: float) -> None:
        super().__init__(path)
        self._path = path
        self._pragmas = tuple(pragmas)
        self._max_batch = max_batch
        self._interval = commit_interval
        self._inbox: queue.SimpleQueue[Write | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopped: asyncio.Future[None] | None = None
        self._closed = False

    async def open(self, prepare: Callable[[sqlite3.Connection], object]) -> None:
        """Start the writer's thread: it connects, runs `prepare` (the migrations), then
        commits what it is handed until `stop`. A failure to open is raised here."""
        loop = self._loop = asyncio.get_running_loop()
        opened: asyncio.Future[None] = loop.create_future()
        self._stopped = loop.create_future()
        self._thread = threading.Thread(target=self._run, args=(prepare, opened),
                                        name="workflowd-writer", daemon=True)
        self._thread.start()
        try:
            await opened
        except BaseException:
            self._closed = True
            await asyncio.shield(self._stopped)
            raise

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
            if self._stopped is not None:
                await asyncio.shield(self._stopped)
            return
        self._closed = True
        self._inbox.put(None)
        if self._stopped is not None:
            await asyncio.shield(self._stopped)

    # ---- in the writer's thread ------------------------------------------------------------

    def _run(self, prepare: Callable[[sqlite3.Connection], object],
             opened: asyncio.Future[None]) -> None:
        # Nothing may escape this function: a failure reaches the caller through a future,
        # never the thread's excepthook.
        conn: sqlite3.Connection | None = None
        try:
            conn = self._connect(prepare)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller of open()
            self._to_loop(_resolve, opened, exc)
        else:
            self._to_loop(_resolve, opened, None)
            try:
                self._serve(conn)
            except BaseException as exc:  # noqa: BLE001 - a bug here must not hang callers
                error = StoreClosedError(f"the writer stopped: {exc!r}")
                self._closed = True  # later submits are refused at once
                self._fail_queued(error)
                # Once more on the loop: a submit that was under way there when this thread
                # set `_closed` has put its write in by then.
                self._to_loop(self._fail_queued, error)
        finally:
            if conn is not None:
                with contextlib.suppress(Exception):
                    conn.close()
            self._to_loop(_resolve, self._stopped, None)

    def _to_loop(self, fn: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        assert loop is not None
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(fn, *args)

    def _serve(self, conn: sqlite3.Connection) -> None:
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
            try:
                errors = self._commit(conn, batch)
            except BaseException as exc:
                # A bug, not the file refusing: this batch's callers must hear of it too (the
                # queued ones are failed by `_run`), or they would wait forever. Logged first,
                # so that the line is out before any caller hears of it.
                log.error("writer_crashed", error=repr(exc))
                failure = StoreClosedError(f"the writer stopped: {exc!r}")
                self._to_loop(_settle_all, batch, [failure] * len(batch))
                raise
            self._to_loop(_settle_all, batch, errors)
        self._closed = True
        self._fail_queued(StoreClosedError("the store is closed"))

    def _fail_queued(self, error: BaseException) -> None:
        """Fail whatever is still queued (after the stop mark, or after a crash)."""
        left: list[Write] = []
        while True:
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                left.append(item)
        if left:
            self._to_loop(_settle_all, left, [error] * len(left))

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
        """Commit the batch in one transaction; answer each write's error (None: committed)."""
        errors = self._admit(batch)
        live = [write for write, error in zip(batch, errors, strict=True) if error is None]
        if not live:
            return errors
        began = time.perf_counter()
        try:
            _transaction(conn, live)
        except sqlite3.IntegrityError:
            # One write is at fault: commit the others, each alone, in order.
            return self._one_by_one(conn, batch, errors)
        except Exception as exc:  # noqa: BLE001 - the file refuses: every write of it fails
            failure = self._refused(exc, live)
            return [failure if error is None else error for error in errors]
        self._count(live, time.perf_counter() - began)
        return errors

    def _one_by_one(self, conn: sqlite3.Connection, batch: list[Write],
                    errors: list[BaseException | None]) -> list[BaseException | None]:
        for n, write in enumerate(batch):
            if errors[n] is None:
                errors[n] = self._admit([write])[0]
            if errors[n] is not None:
                continue
            began = time.perf_counter()
            try:
                _transaction(conn, [write])
            except Exception as exc:  # noqa: BLE001 - this write's own failure
                errors[n] = self._refused(exc, [write])
                continue
            self._count([write], time.perf_counter() - began)
        return errors

    def _refused(self, exc: Exception, writes: list[Write]) -> BaseException:
        self._block(writes)
        if isinstance(exc, sqlite3.IntegrityError):
            log.error("write_refused", error=str(exc), writes=len(writes))
            return exc
        return self._unavailable(_reason(exc), exc)


def _stale_error(execution_id: str) -> StaleWriteError:
    return StaleWriteError(f"a write of {execution_id} before this one failed")


def _reason(exc: Exception) -> str:
    text = str(exc).lower()
    for words, reason in ((("full",), "disk full"), (("locked", "busy"), "database locked"),
                          (("disk i/o", "ioerr"), "disk I/O error"),
                          (("readonly", "read-only"), "read-only file")):
        if any(word in text for word in words):
            return reason
    return type(exc).__name__


def _transaction(conn: sqlite3.Connection, writes: list[Write]) -> None:
    rows = _Rows()
    for write in writes:
        rows.add(write)
    conn.execute("BEGIN IMMEDIATE")
    try:
        for sql, table in ((_UPSERT_EXECUTION, list(rows.executions.values())),
                           (_UPSERT_STEP, list(rows.steps.values())),
                           (_INSERT_EVENT, rows.events)):
            if table:
                conn.execute(sql, (_array(table),))
        for sql, params in ((_INSERT_LOG, rows.logs), (_INSERT_IDEMPOTENCY, rows.idempotency),
                            (_INSERT_DELIVERY, rows.deliveries)):
            if params:
                conn.executemany(sql, params)
        for sql, one in rows.statements:
            conn.execute(sql, one)
        if rows.artifact_uses:  # after the statements: they may insert the artifact
            conn.executemany(_INSERT_ARTIFACT_USE, rows.artifact_uses)
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
        if error is None and write.on_commit is not None:
            try:
                write.on_commit()
            except Exception:
                log.exception("on_commit_failed")
        _resolve(write.future, error)
