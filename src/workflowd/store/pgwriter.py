"""The PostgreSQL writer: one task, one connection, group commit in one statement per batch.

Writes queue up while the previous batch commits and then go together: each table's rows of
the whole batch travel as one JSON array parameter, expanded by `json_array_elements` on the
server (the rows are encoded on the loop by `Write.of`, exactly as for SQLite), and every
table is written by one statement whose data-modifying CTEs run in one implicit transaction:
one round trip per batch, whatever its size. Measured (`python -m bench.pgwrites`, a
snapshot, three events and a step record per write, fsync on) against `executemany` per table
in a transaction and against `unnest` of typed arrays: within 20% of each other from 1 to 512
writes per commit (about 1,200-1,500 writes/s one by one, 10,000-12,000 batched), this one
ahead at 64; it alone also keeps the lease check, the notification and every table in the
one round trip.

The lease check is inside that statement: an execution's snapshot is updated only where
`lease_owner` is this node and `lease_until` is still ahead, and its events, step records, log
lines, idempotency answer, deliveries and artifact uses go in only if it was. A node that lost
the lease (a long pause, a partition) writes nothing of that execution; the other executions
of the batch commit. The refused writes fail with `LeaseLostError`, and `on_lease_lost` is told.

The same NOTIFY (`workflowd_events`, `NODE|ID FIRST LAST,...`) goes with the commit, naming the
events each execution got, so followers on other nodes read them; one on `workflowd_work` when
an execution was queued for anyone to claim.

Failures as in the SQLite writer: the server refuses or is gone -> the whole batch fails with
`StoreUnavailableError` and the writer reconnects for the next one; a constraint -> the batch
is retried write by write so that only the faulty one fails; either way later writes built on a
failed one are refused as stale.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import structlog

from workflowd.clock import utcnow
from workflowd.codec import dumps, encode
from workflowd.errors import StoreUnavailableError
from workflowd.records import TERMINAL
from workflowd.store.writer import (
    Gate,
    StoreClosedError,
    Write,
    _array,
    _resolve,
    _settle_all,
)

__all__ = ["LeaseLostError", "PgWriter", "connection"]

log = structlog.get_logger(__name__)

COMMIT_TIMEOUT = 60.0  # seconds one batch may take before the server counts as gone
EVENTS_CHANNEL = "workflowd_events"
WORK_CHANNEL = "workflowd_work"
_TERMINAL = sorted(TERMINAL)

# $1 updated snapshots, $2 new executions, $3 events, $4 steps, $5 logs, $6 idempotency,
# $7 deliveries (JSON arrays); $8 this node, $9 lease seconds, $10 terminal statuses;
# $11 artifact uses (a JSON array).
#
# An artifact use keys its artifact's row (FOR KEY SHARE) until the commit: retention's
# delete of an artifact locks the row first and skips one that is locked (`pgrows`), so a use
# and the delete of its artifact never cross; a use of an artifact already gone records
# nothing.
_BATCH = f"""
WITH upd AS (
    UPDATE executions e SET status = v->>2, finished_at = v->>4, doc = v->>5,
        priority = (v->>6)::int, wake_at = v->>8,
        lease_owner = CASE WHEN v->>7 IS NULL AND v->>2 <> ALL($10) THEN e.lease_owner END,
        lease_until = CASE WHEN v->>7 IS NULL AND v->>2 <> ALL($10) THEN e.lease_until END
    FROM json_array_elements($1::json) v
    WHERE e.id = v->>0 AND e.lease_owner = $8 AND e.lease_until > statement_timestamp()
    RETURNING e.id
), ins AS (
    INSERT INTO executions (id, workflow_id, status, created_at, finished_at, doc, priority,
                            wake_at, lease_owner, lease_until)
    SELECT v->>0, v->>1, v->>2, v->>3, v->>4, v->>5, (v->>6)::int, v->>8,
        CASE WHEN (v->>9)::bool THEN $8 END,
        CASE WHEN (v->>9)::bool THEN statement_timestamp() + $9 * interval '1 second' END
    FROM json_array_elements($2::json) v
    ON CONFLICT (id) DO NOTHING
    RETURNING id, status = 'queued' AND lease_owner IS NULL AS free
), ok AS (
    SELECT id FROM upd UNION ALL SELECT id FROM ins
), ev AS (
    INSERT INTO events (execution_id, seq, doc)
    SELECT v->>0, (v->>1)::int, v->>2 FROM json_array_elements($3::json) v
    WHERE v->>0 IN (SELECT id FROM ok)
    RETURNING execution_id, seq
), st AS (
    INSERT INTO steps (execution_id, cycle, doc)
    SELECT v->>0, (v->>1)::int, v->>2 FROM json_array_elements($4::json) v
    WHERE v->>0 IN (SELECT id FROM ok)
    ON CONFLICT (execution_id, cycle) DO UPDATE SET doc = excluded.doc
    RETURNING 1
), lg AS (
    INSERT INTO logs (execution_id, doc)
    SELECT v->>0, v->>1 FROM json_array_elements($5::json) WITH ORDINALITY AS t(v, n)
    WHERE v->>0 IN (SELECT id FROM ok) OR EXISTS (
        SELECT 1 FROM executions x WHERE x.id = v->>0 AND x.lease_owner = $8
        AND x.lease_until > statement_timestamp())
    ORDER BY n
    RETURNING 1
), idem AS (
    INSERT INTO idempotency (scope, key, fingerprint, status, body, location, created_at)
    SELECT v->>1, v->>2, v->>3, (v->>4)::int, v->>5, v->>6, v->>7
    FROM json_array_elements($6::json) v
    WHERE v->>0 IS NULL OR v->>0 IN (SELECT id FROM ok)
    ON CONFLICT (scope, key) DO UPDATE SET fingerprint = excluded.fingerprint,
        status = excluded.status, body = excluded.body, location = excluded.location,
        created_at = excluded.created_at
    RETURNING 1
), dl AS (
    INSERT INTO deliveries (url, body, headers, next_at, created_at)
    SELECT v->>1, v->>2, v->>3, v->>4, v->>4 FROM json_array_elements($7::json) v
    WHERE v->>0 IS NULL OR v->>0 IN (SELECT id FROM ok)
    RETURNING 1
), used AS MATERIALIZED (
    SELECT id FROM artifacts
    WHERE id IN (SELECT v->>2 FROM json_array_elements($11::json) v)
    FOR KEY SHARE
), au AS (
    INSERT INTO artifact_uses (execution_id, artifact_id, role, created_at)
    SELECT v->>1, v->>2, v->>3, v->>4 FROM json_array_elements($11::json) v
    WHERE v->>2 IN (SELECT id FROM used) AND (v->>0 IS NULL OR v->>0 IN (SELECT id FROM ok))
    ON CONFLICT DO NOTHING
    RETURNING 1
), marks AS (
    SELECT execution_id || ' ' || min(seq) || ' ' || max(seq) AS mark,
        (row_number() OVER ()) / 150 AS chunk
    FROM ev GROUP BY execution_id
)
SELECT ARRAY(SELECT id FROM ok) AS ok,
    (SELECT count(pg_notify('{EVENTS_CHANNEL}', $8 || '|' || marks)) FROM (
        SELECT string_agg(mark, ',') AS marks FROM marks GROUP BY chunk) c) AS notified,
    (SELECT count(pg_notify('{WORK_CHANNEL}', $8)) FROM (
        SELECT 1 FROM ins WHERE free LIMIT 1) w) AS work,
    (SELECT count(*) FROM st) + (SELECT count(*) FROM lg) + (SELECT count(*) FROM idem)
        + (SELECT count(*) FROM dl) + (SELECT count(*) FROM au) AS others
"""  # noqa: S608 - constants only


class LeaseLostError(StoreUnavailableError):
    """This node no longer holds the execution's lease (another node took it after this one
    stopped renewing): nothing of the write was kept."""


# U+0000 written as JSON does (`\\u0000`, after an even number of backslashes: not a text's
# own backslash followed by "u0000").
_NUL_ESCAPE = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000")


def _pg_array(rows: Sequence[bytes]) -> str:
    """`rows` as one JSON array for the statement. PostgreSQL refuses U+0000 in text, and the
    whole batch with it (so a step that wrote one would have its cycle refused for good, and
    the executions committed beside it once): it is kept as U+FFFD instead. Requests carrying
    one are refused at the API (422); this is for what steps write (state, output, logs)."""
    text = _array(rows)
    if "\\u0000" in text:  # a search in C: the rows have none but in rare cases
        text = _NUL_ESCAPE.sub(r"\1\\ufffd", text)
    return text


class _Rows:
    """A batch's rows, in the JSON arrays the statement expands."""

    __slots__ = ("artifact_uses", "deliveries", "events", "idempotency", "inserts", "logs",
                 "steps", "updates")

    def __init__(self, writes: Sequence[Write]) -> None:
        updates: dict[str, bytes] = {}
        inserts: dict[str, bytes] = {}
        claims: dict[str, bool] = {}
        steps: dict[tuple[str, int], bytes] = {}
        events: list[bytes] = []
        logs: list[bytes] = []
        idempotency: dict[tuple[str, str], bytes] = {}
        deliveries: list[bytes] = []
        uses: list[bytes] = []
        now = utcnow()
        for write in writes:
            execution_id = write.execution_id
            if write.execution is not None and execution_id is not None:
                if write.base_seq == 0 or execution_id in inserts:
                    inserts[execution_id] = write.execution
                    claims[execution_id] = claims.get(execution_id, False) or write.claim
                else:
                    updates[execution_id] = write.execution
            if execution_id is not None:
                for cycle, row in write.steps:
                    steps[(execution_id, cycle)] = row  # a later record of a cycle wins
            events.extend(write.events)
            logs.extend(encode(line) for line in write.logs)
            idem = write.idempotency
            if idem is not None:
                idempotency[(idem.scope, idem.key)] = encode(
                    (execution_id, idem.scope, idem.key, idem.fingerprint, idem.status,
                     idem.body, idem.location, now))
            deliveries.extend(encode((execution_id, d.url, d.body, dumps(d.headers), now))
                              for d in write.deliveries)
            uses.extend(encode((execution_id, *use)) for use in write.artifact_uses)
        # A new execution's row: the snapshot's fields, then whether this node leases it.
        self.inserts = _pg_array([row[:-1] + (b",true]" if claims[i] else b",false]")
                                  for i, row in inserts.items()])
        self.updates = _pg_array(list(updates.values()))
        self.steps = _pg_array(list(steps.values()))
        self.events = _pg_array(events)
        self.logs = _pg_array(logs)
        self.idempotency = _pg_array(list(idempotency.values()))
        self.deliveries = _pg_array(deliveries)
        self.artifact_uses = _pg_array(uses)

    def args(self, node_id: str, lease_seconds: float) -> tuple[Any, ...]:
        """The batch statement's parameters."""
        return (self.updates, self.inserts, self.events, self.steps, self.logs,
                self.idempotency, self.deliveries, node_id, lease_seconds, _TERMINAL,
                self.artifact_uses)


Connect = Callable[[], Awaitable[Any]]


class PgWriter(Gate):
    """Owns the write connection; commits queued writes in batches, in the order they came."""

    def __init__(self, connect: Connect, node_id: str, lease_seconds: float, *,
                 max_batch: int = 512, where: str = "") -> None:
        super().__init__(where)
        self._connect = connect
        self._node = node_id
        self._lease = lease_seconds
        self._max_batch = max_batch
        self._queue: asyncio.Queue[Write | None] = asyncio.Queue()
        self._conn: Any = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        # Told the ids of executions whose writes were refused for want of the lease.
        self.on_lease_lost: list[Callable[[Sequence[str]], None]] = []
        # Told the ids of executions whose last write may or may not have committed (the
        # connection broke during the commit): their owners must reload from the store.
        self.on_unsure: list[Callable[[Sequence[str]], None]] = []

    async def open(self) -> None:
        self._conn = await self._connect()
        self._task = asyncio.create_task(self._run(), name="workflowd-pg-writer")

    def submit(self, write: Write) -> asyncio.Future[None]:
        if self._closed:
            raise StoreClosedError("the store is closed")
        if write.statements:
            raise TypeError("a PostgreSQL write carries no SQLite statements")
        write.future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(write)
        return write.future

    async def stop(self) -> None:
        """Commit what is queued, then stop and close the connection."""
        if not self._closed:
            self._closed = True
            self._queue.put_nowait(None)
        if self._task is not None:
            await asyncio.shield(self._task)
        if self._conn is not None:
            conn, self._conn = self._conn, None
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 5.0)

    # ---- the task ---------------------------------------------------------------------------

    async def _run(self) -> None:
        stopping = False
        while not stopping:
            first = await self._queue.get()
            if first is None:
                break
            batch = [first]
            while len(batch) < self._max_batch:
                try:
                    item = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    break
                if item is None:
                    stopping = True
                    break
                batch.append(item)
            try:
                errors = await self._commit(batch)
            except BaseException as exc:  # a bug here must not hang callers
                if not isinstance(exc, Exception):
                    _settle_all(batch, [StoreClosedError("the store is closed")] * len(batch))
                    raise
                log.exception("pg_writer_failed")
                errors = [StoreUnavailableError(f"the writer failed: {exc!r}")] * len(batch)
            _settle_all(batch, errors)
        self._closed = True
        left: list[Write] = []
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if item is not None:
                left.append(item)
        for write in left:
            _resolve(write.future, StoreClosedError("the store is closed"))

    async def _commit(self, batch: list[Write]) -> list[BaseException | None]:
        import asyncpg

        errors = self._admit(batch)
        live = [write for write, error in zip(batch, errors, strict=True) if error is None]
        if not live:
            return errors
        began = time.perf_counter()
        try:
            ok = await self._statement(live)
        except asyncpg.IntegrityConstraintViolationError:
            return await self._one_by_one(batch, errors)
        except Exception as exc:  # noqa: BLE001 - the server refuses: every write of it fails
            failure = self._refused(exc, live)
            return [failure if error is None else error for error in errors]
        out = iter(self._settle(live, ok, time.perf_counter() - began))
        return [next(out) if error is None else error for error in errors]

    async def _one_by_one(self, batch: list[Write],
                          errors: list[BaseException | None]) -> list[BaseException | None]:
        for n, write in enumerate(batch):
            if errors[n] is None:
                errors[n] = self._admit([write])[0]
            if errors[n] is not None:
                continue
            began = time.perf_counter()
            try:
                ok = await self._statement([write])
            except Exception as exc:  # noqa: BLE001 - this write's own failure
                errors[n] = self._refused(exc, [write])
                continue
            errors[n] = self._settle([write], ok, time.perf_counter() - began)[0]
        return errors

    async def _statement(self, writes: list[Write]) -> set[str]:
        """Run the batch's statement; answer the executions it wrote."""
        if self._conn is None or self._conn.is_closed():
            self._conn = None
            self._conn = await self._connect()
        rows = _Rows(writes)
        # Bounded: a server that stops answering fails the batch (its outcome unknown, as for
        # a broken connection) instead of holding every write behind it.
        row = await self._conn.fetchrow(_BATCH, *rows.args(self._node, self._lease),
                                        timeout=COMMIT_TIMEOUT)
        return set(row["ok"])

    def _outcomes(self, writes: list[Write], ok: set[str]) -> list[BaseException | None]:
        return [None if w.execution_id is None or (w.execution is None and not w.events)
                or w.execution_id in ok else _lost(w.execution_id) for w in writes]

    def _settle(self, writes: list[Write], ok: set[str],
                seconds: float) -> list[BaseException | None]:
        """Count what committed; block and report what the lease check kept out. Answers
        each write's outcome."""
        outcomes = self._outcomes(writes, ok)
        done = [w for w, e in zip(writes, outcomes, strict=True) if e is None]
        lost = [w for w, e in zip(writes, outcomes, strict=True) if e is not None]
        self._count(done, seconds)
        if lost:
            self._block(lost)
            ids = sorted({w.execution_id for w in lost if w.execution_id is not None})
            log.warning("write_refused_lease_lost", executions=ids)
            for tell in self.on_lease_lost:
                tell(ids)
        return outcomes

    def _refused(self, exc: Exception, writes: list[Write]) -> BaseException:
        import asyncpg

        self._block(writes)
        if isinstance(exc, asyncpg.IntegrityConstraintViolationError):
            log.error("write_refused", error=str(exc), writes=len(writes))
            return exc
        error = self._unavailable(_reason(exc), exc)
        if self._conn is not None and (self._conn.is_closed() or _lost_connection(exc)):
            conn, self._conn = self._conn, None
            conn.terminate()
        if _lost_connection(exc):
            ids = sorted({w.execution_id for w in writes if w.execution_id is not None})
            for tell in self.on_unsure:
                tell(ids)
        return error


def _lost(execution_id: str) -> LeaseLostError:
    return LeaseLostError(f"this node no longer holds the lease of {execution_id}")


@contextlib.asynccontextmanager
async def connection(pool: Any) -> AsyncIterator[Any]:
    """A connection of `pool`. PostgreSQL out of reach (no connection to be had, or the one
    lost in the block) is `StoreUnavailableError`, 503 with Retry-After as for a store that
    refuses writes, instead of the driver's error. Then every connection of the pool is
    replaced at its next use: the others were most likely cut too (a restart, a fail-over),
    and each would fail one more request before the pool found out."""
    try:
        conn = await pool.acquire()
    except Exception as exc:
        if _lost_connection(exc):  # not so a refusal (too many connections): no reconnects
            await pool.expire_connections()
        raise StoreUnavailableError(
            f"PostgreSQL cannot be reached: {type(exc).__name__}") from exc
    try:
        yield conn
    except Exception as exc:
        if not _lost_connection(exc):
            raise
        await pool.expire_connections()
        raise StoreUnavailableError(
            f"the connection to PostgreSQL was lost: {type(exc).__name__}") from exc
    finally:
        await pool.release(conn)


def _lost_connection(exc: BaseException) -> bool:
    import asyncpg

    # InternalClientError: the protocol's state broke, as when the server ends the session of
    # an idle connection just as a query starts on it (seen with pg_terminate_backend).
    # InterfaceError itself ("the connection is closed"), not its kinds, which are the
    # client's own refusals (an argument of the wrong type), made before anything was sent.
    return type(exc) is asyncpg.InterfaceError or isinstance(
        exc, OSError | asyncpg.PostgresConnectionError | asyncpg.exceptions.AdminShutdownError
        | asyncpg.exceptions.CannotConnectNowError | asyncpg.exceptions.InternalClientError
        | ConnectionError | TimeoutError)


def _reason(exc: Exception) -> str:
    import asyncpg

    if isinstance(exc, asyncpg.exceptions.DiskFullError):
        return "disk full"
    if isinstance(exc, asyncpg.exceptions.ReadOnlySQLTransactionError):
        return "read-only server"
    if _lost_connection(exc):
        return "server unreachable"
    return type(exc).__name__
