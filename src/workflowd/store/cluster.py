"""What a store that several nodes share offers beyond the `Store` interface: leases on
executions, the nodes' heartbeats, a leader row with a TTL, a change made under a row lock,
a lock across nodes, a mailbox of requests between nodes, and notifications.

Modelled on pgqueuer, Procrastinate and River: a claim is one statement with
`FOR UPDATE SKIP LOCKED` that also takes back expired leases; the leader is a row with an
expiry that its holder renews (not an advisory lock, which a transaction pooler breaks);
NOTIFY is only a wake-up, the tables are the truth.

Every time is the database's (`statement_timestamp()`), so the nodes' clocks need not agree.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import structlog

from workflowd.records import TERMINAL, ExecutionRecord, decode_execution
from workflowd.store.pgwriter import _BATCH, EVENTS_CHANNEL, WORK_CHANNEL, _Rows, connection
from workflowd.store.writer import Write

if TYPE_CHECKING:
    from workflowd.store.pgwriter import PgWriter

__all__ = [
    "ANSWERS_CHANNEL",
    "EVENTS_CHANNEL",
    "REQUESTS_CHANNEL",
    "WORK_CHANNEL",
    "ClusterOps",
    "ClusterStore",
    "NodeRow",
    "OwnedElsewhere",
]

log = structlog.get_logger(__name__)

REQUESTS_CHANNEL = "workflowd_requests"
ANSWERS_CHANNEL = "workflowd_answers"
_TERMINAL = sorted(TERMINAL)
_LOCK_SPACE = 0x77666C64  # "wfld": the first key of this service's advisory locks
LOCK_TIMEOUT = 60.0  # seconds a node waits for a shared lock before the caller fails

NodeRow = tuple[str, datetime, int]
Handler = Callable[[str], None]


class OwnedElsewhere(Exception):
    """The execution is leased to another live node: ask that node."""

    def __init__(self, node_id: str) -> None:
        super().__init__(node_id)
        self.node_id = node_id


# Expired leases first (a node died: its executions have waited longest), then queued ones
# nobody holds, highest priority first, in order of arrival.
_CLAIM = """
WITH expired AS (
    SELECT num FROM executions
    WHERE lease_owner IS NOT NULL AND lease_until < statement_timestamp()
        AND status <> ALL($4) AND workflow_id = ANY($3)
    ORDER BY lease_until LIMIT $2 FOR UPDATE SKIP LOCKED
), fresh AS (
    SELECT num FROM executions
    WHERE status = 'queued' AND lease_owner IS NULL AND workflow_id = ANY($3)
    ORDER BY priority DESC, num LIMIT $2 FOR UPDATE SKIP LOCKED
), picked AS (
    SELECT num FROM (SELECT num, 0 AS k FROM expired UNION ALL SELECT num, 1 FROM fresh) p
    ORDER BY k LIMIT $2
)
UPDATE executions e SET lease_owner = $1,
    lease_until = statement_timestamp() + $5 * interval '1 second'
FROM picked WHERE e.num = picked.num
RETURNING e.doc
"""


class ClusterStore(abc.ABC):
    """The interface the engine's cluster parts use (`engine.cluster`)."""

    node_id: str
    lease_seconds: float

    @abc.abstractmethod
    async def claim(self, limit: int, workflow_ids: Sequence[str]) -> list[ExecutionRecord]:
        """Lease up to `limit` executions this node can run, taking back expired leases."""

    @abc.abstractmethod
    async def backlog(self) -> int:
        """Queued executions no node has claimed yet."""

    @abc.abstractmethod
    async def renew(self) -> set[str]:
        """Extend every lease this node still holds (one statement); answer their ids."""

    @abc.abstractmethod
    async def release(self, ids: Sequence[str]) -> None:
        """Give up these leases now (a drain), so that other nodes take them at once."""

    @abc.abstractmethod
    async def holder(self, execution_id: str) -> str | None:
        """The node that holds the execution's lease now, if a live one does."""

    @abc.abstractmethod
    async def heartbeat(self, running: int) -> None: ...

    @abc.abstractmethod
    async def leave(self) -> None:
        """This node stops: its row goes."""

    @abc.abstractmethod
    async def nodes(self, within: float) -> list[NodeRow]:
        """Nodes seen in the last `within` seconds: `(node_id, last_seen, running)`."""

    @abc.abstractmethod
    async def lead(self, name: str, ttl: float) -> bool:
        """Take or keep the leader row `name` for `ttl` seconds; answer whether this node
        holds it now."""

    @abc.abstractmethod
    async def locked_change(self, execution_id: str,
                            build: Callable[[ExecutionRecord], Write | None], *,
                            own_lease: bool = False,
                            ) -> tuple[ExecutionRecord | None, Write | None]:
        """Apply a change to an execution no node runs, under its row lock, in one
        transaction: `build` gets the committed record and answers the write (or None).
        Answers `(None, None)` for an unknown id; raises `OwnedElsewhere` when a live node
        holds its lease (this one too, unless `own_lease`: the caller knows that nothing here
        holds it), and whatever `build` raises."""

    @abc.abstractmethod
    def shared_lock(self, name: str) -> contextlib.AbstractAsyncContextManager[None]:
        """Hold a lock on `name` that every node respects until the context exits (no node
        holds it for longer than its transaction, so a node that dies lets it go)."""

    @abc.abstractmethod
    async def post_request(self, to_node: str, execution_id: str, body: str) -> int: ...

    @abc.abstractmethod
    async def take_request(self, request_id: int) -> tuple[str, str, str] | None:
        """`(from_node, execution_id, body)` of a request addressed to this node."""

    @abc.abstractmethod
    async def answer_request(self, request_id: int, answer: str) -> None: ...

    @abc.abstractmethod
    async def request_answer(self, request_id: int) -> str | None: ...

    @abc.abstractmethod
    async def drop_request(self, request_id: int) -> None: ...

    @abc.abstractmethod
    async def newest_seqs(self, ids: Sequence[str]) -> dict[str, int]: ...

    @abc.abstractmethod
    async def events_after(self, after: dict[str, int], limit: int = 1000,
                           ) -> list[tuple[str, int, str, str]]:
        """`(execution_id, seq, doc, workflow_id)` of events after each `after[id]`, in order,
        at most `limit` of them (the first ones of each execution, in the order of ids)."""

    @abc.abstractmethod
    async def due_waits(self, now: str, limit: int, workflow_ids: Sequence[str]) -> list[str]:
        """Executions that no node holds whose wait or deadline is due by `now`; a sleep's only
        of `workflow_ids` (waking it needs its workflow, and one that could not be woken would
        be picked up again at every poll, hiding the timers behind it)."""

    @abc.abstractmethod
    async def sweep_requests(self, older_than: float) -> int: ...

    @abc.abstractmethod
    async def listen(self, handlers: dict[str, Handler],
                     on_connect: Callable[[], None]) -> None:
        """Keep a connection LISTENing on the channels of `handlers` (each called with the
        payload), reconnecting when it drops; `on_connect` after each (re)connect, so that
        the caller catches up on what it may have missed."""

    @abc.abstractmethod
    async def stop_listening(self) -> None: ...


class ClusterOps(ClusterStore):
    """`ClusterStore` on PostgreSQL (mixed into `PostgresStore`)."""

    writer: PgWriter  # the store's

    def __init__(self, pool: Any, node_id: str, lease_seconds: float,
                 connect: Callable[[str], Awaitable[Any]] | None = None) -> None:
        self._ops_pool = pool
        self.node_id = node_id
        self.lease_seconds = lease_seconds
        self._listen_connect = connect
        self._listener: asyncio.Task[None] | None = None
        self._lock_conn: Any = None  # the connection of `shared_lock`, opened at first use
        self._lock_turn = asyncio.Lock()

    async def _fetch(self, sql: str, *params: Any) -> list[Any]:
        async with connection(self._ops_pool) as conn:
            return list(await conn.fetch(sql, *params))

    async def _execute(self, sql: str, *params: Any) -> str:
        async with connection(self._ops_pool) as conn:
            result: str = await conn.execute(sql, *params)
            return result

    # ---- leases -----------------------------------------------------------------------------

    async def claim(self, limit: int, workflow_ids: Sequence[str]) -> list[ExecutionRecord]:
        if limit <= 0 or not workflow_ids:
            return []
        rows = await self._fetch(_CLAIM, self.node_id, limit, list(workflow_ids), _TERMINAL,
                                 self.lease_seconds)
        records = [decode_execution(row[0]) for row in rows]
        records.sort(key=lambda r: (-r.priority, r.created_at, r.execution_id))
        self.writer.rebase({r.execution_id: r.seq for r in records})
        return records

    async def backlog(self) -> int:
        rows = await self._fetch("SELECT count(*) FROM executions "
                                 "WHERE status = 'queued' AND lease_owner IS NULL")
        return int(rows[0][0])

    async def renew(self) -> set[str]:
        rows = await self._fetch(
            "UPDATE executions SET lease_until = statement_timestamp() + $2 * interval '1 second'"
            " WHERE lease_owner = $1 AND lease_until > statement_timestamp() RETURNING id",
            self.node_id, self.lease_seconds)
        return {row[0] for row in rows}

    async def release(self, ids: Sequence[str]) -> None:
        if not ids:
            return
        await self._execute(
            # Expired now rather than cleared: a claim takes expired leases whatever the
            # execution's status (a running one too), first.
            "WITH r AS (UPDATE executions SET lease_until = '-infinity' "
            "WHERE id = ANY($1) AND lease_owner = $2 RETURNING 1) "
            "SELECT pg_notify($3, $2) FROM (SELECT 1 FROM r LIMIT 1) x",
            list(ids), self.node_id, WORK_CHANNEL)

    async def holder(self, execution_id: str) -> str | None:
        rows = await self._fetch(
            "SELECT lease_owner FROM executions WHERE id = $1 "
            "AND lease_until > statement_timestamp()", execution_id)
        return rows[0][0] if rows else None

    # ---- nodes and the leader ---------------------------------------------------------------

    async def heartbeat(self, running: int) -> None:
        await self._execute(
            "INSERT INTO nodes (node_id, running) VALUES ($1, $2) ON CONFLICT (node_id) DO "
            "UPDATE SET last_seen = statement_timestamp(), running = excluded.running",
            self.node_id, running)

    async def leave(self) -> None:
        await self._execute("DELETE FROM nodes WHERE node_id = $1", self.node_id)
        await self._execute("DELETE FROM leader WHERE node_id = $1", self.node_id)

    async def nodes(self, within: float) -> list[NodeRow]:
        rows = await self._fetch(
            "SELECT node_id, last_seen, running FROM nodes "
            "WHERE last_seen > statement_timestamp() - $1 * interval '1 second' "
            "ORDER BY node_id", within)
        return [(row[0], row[1], int(row[2])) for row in rows]

    async def lead(self, name: str, ttl: float) -> bool:
        rows = await self._fetch(
            "INSERT INTO leader (name, node_id, until) "
            "VALUES ($1, $2, statement_timestamp() + $3 * interval '1 second') "
            "ON CONFLICT (name) DO UPDATE SET node_id = excluded.node_id, until = excluded.until"
            " WHERE leader.node_id = excluded.node_id OR leader.until < statement_timestamp() "
            "RETURNING node_id", name, self.node_id, ttl)
        return bool(rows)

    # ---- a change under the row lock -------------------------------------------------------

    async def locked_change(self, execution_id: str,
                            build: Callable[[ExecutionRecord], Write | None], *,
                            own_lease: bool = False,
                            ) -> tuple[ExecutionRecord | None, Write | None]:
        me = self.node_id
        async with connection(self._ops_pool) as conn, conn.transaction():
            row = await conn.fetchrow(
                "SELECT doc, lease_owner, lease_until > statement_timestamp() AS live "
                "FROM executions WHERE id = $1 FOR UPDATE", execution_id)
            if row is None:
                return None, None
            holder = row["lease_owner"]
            if holder is not None and row["live"] and (holder != me or not own_lease):
                raise OwnedElsewhere(holder)
            rec = decode_execution(row["doc"])
            write = build(rec)
            if write is None:
                return rec, None
            # Leased to this node for the length of the transaction, so the batch statement's
            # lease check passes; it releases the lease itself if the record waits or ended.
            await conn.execute(
                "UPDATE executions SET lease_owner = $2, "
                "lease_until = statement_timestamp() + $3 * interval '1 second' WHERE id = $1",
                execution_id, me, self.lease_seconds)
            rows = _Rows([write])
            await conn.fetchrow(_BATCH, *rows.args(me, self.lease_seconds))
            if not write.claim:
                await conn.execute(
                    "WITH r AS (UPDATE executions SET lease_owner = NULL, lease_until = NULL "
                    "WHERE id = $1 AND lease_owner = $2 RETURNING status) "
                    "SELECT pg_notify($3, $2) FROM r WHERE status = 'queued'",
                    execution_id, me, WORK_CHANNEL)
        if write.claim and write.execution is not None:
            self.writer.rebase({execution_id: write.seq})  # kept leased to this node
        if write.on_commit is not None:
            write.on_commit()
        return rec, write

    # ---- a lock across nodes ---------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def shared_lock(self, name: str) -> AsyncIterator[None]:
        # An advisory lock scoped to a transaction (never to the session: it works behind a
        # transaction pooler, and goes with the connection), on a connection of its own, so
        # that the holder may use the pool meanwhile (with `pool_size = 1` too); one at a time
        # on this node. The key is this service's space and a hash of the name (two names of
        # one hash only wait for each other).
        key = int.from_bytes(hashlib.blake2b(name.encode(), digest_size=4).digest(), "big",
                             signed=True)
        async with self._lock_turn:
            conn = self._lock_conn
            if conn is None or conn.is_closed():
                assert self._listen_connect is not None
                conn = self._lock_conn = await self._listen_connect(
                    f"workflowd-locks:{self.node_id}")
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", _LOCK_SPACE, key,
                                   timeout=LOCK_TIMEOUT)
                yield

    async def close_shared_locks(self) -> None:
        conn, self._lock_conn = self._lock_conn, None
        if conn is not None and not conn.is_closed():
            try:
                await asyncio.wait_for(conn.close(), 5.0)
            except Exception:  # noqa: BLE001 - gone or stuck: dropped either way
                conn.terminate()

    # ---- the mailbox between nodes ---------------------------------------------------------

    async def post_request(self, to_node: str, execution_id: str, body: str) -> int:
        rows = await self._fetch(
            "WITH r AS (INSERT INTO requests (from_node, to_node, execution_id, body) "
            "VALUES ($1, $2, $3, $4) RETURNING id) "
            "SELECT id, pg_notify($5, $2 || '|' || id) FROM r",
            self.node_id, to_node, execution_id, body, REQUESTS_CHANNEL)
        return int(rows[0][0])

    async def take_request(self, request_id: int) -> tuple[str, str, str] | None:
        rows = await self._fetch(
            "SELECT from_node, execution_id, body FROM requests "
            "WHERE id = $1 AND to_node = $2 AND answer IS NULL", request_id, self.node_id)
        return (rows[0][0], rows[0][1], rows[0][2]) if rows else None

    async def answer_request(self, request_id: int, answer: str) -> None:
        await self._execute(
            "WITH r AS (UPDATE requests SET answer = $2 WHERE id = $1 RETURNING from_node) "
            "SELECT pg_notify($3, from_node || '|' || $1) FROM r",
            request_id, answer, ANSWERS_CHANNEL)

    async def request_answer(self, request_id: int) -> str | None:
        rows = await self._fetch("SELECT answer FROM requests WHERE id = $1", request_id)
        return rows[0][0] if rows else None

    async def drop_request(self, request_id: int) -> None:
        await self._execute("DELETE FROM requests WHERE id = $1", request_id)

    async def sweep_requests(self, older_than: float) -> int:
        result = await self._execute(
            "DELETE FROM requests WHERE created_at < statement_timestamp() "
            "- $1 * interval '1 second'", older_than)
        return int(result.split()[-1])

    # ---- events of other nodes, timers ------------------------------------------------------

    async def newest_seqs(self, ids: Sequence[str]) -> dict[str, int]:
        if not ids:
            return {}
        rows = await self._fetch(
            "SELECT w.id, (SELECT max(seq) FROM events e WHERE e.execution_id = w.id) "
            "FROM unnest($1::text[]) AS w(id)", list(ids))
        return {row[0]: int(row[1]) for row in rows if row[1] is not None}

    async def events_after(self, after: dict[str, int], limit: int = 1000,
                           ) -> list[tuple[str, int, str, str]]:
        if not after:
            return []
        rows = await self._fetch(
            "SELECT e.execution_id, e.seq, e.doc, x.workflow_id "
            "FROM unnest($1::text[], $2::int[]) AS w(id, after) "
            "JOIN events e ON e.execution_id = w.id AND e.seq > w.after "
            "JOIN executions x ON x.id = w.id ORDER BY e.execution_id, e.seq LIMIT $3",
            list(after), list(after.values()), limit)
        return [(row[0], int(row[1]), row[2], row[3]) for row in rows]

    async def due_waits(self, now: str, limit: int, workflow_ids: Sequence[str]) -> list[str]:
        rows = await self._fetch(
            "SELECT id FROM executions WHERE wake_at IS NOT NULL AND wake_at <= $1 "
            "AND (lease_owner IS NULL OR lease_until < statement_timestamp()) "
            "AND (workflow_id = ANY($3) OR (doc::json -> 'wait' ->> 'kind') "
            "IS DISTINCT FROM 'sleep') ORDER BY wake_at LIMIT $2",
            now, limit, list(workflow_ids))
        return [row[0] for row in rows]

    # ---- notifications --------------------------------------------------------------------

    async def listen(self, handlers: dict[str, Handler],
                     on_connect: Callable[[], None]) -> None:
        assert self._listener is None, "one listener per store"
        self._listener = asyncio.create_task(self._listen_forever(handlers, on_connect),
                                             name="workflowd-listener")

    async def stop_listening(self) -> None:
        task, self._listener = self._listener, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _listen_forever(self, handlers: dict[str, Handler],
                              on_connect: Callable[[], None]) -> None:
        assert self._listen_connect is not None
        failures = 0
        while True:
            conn: Any = None
            try:
                conn = await self._listen_connect(f"workflowd-listen:{self.node_id}")
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _conn, lost=lost: lost.set())
                for channel, handler in handlers.items():
                    await conn.add_listener(channel, _callback(handler))
                if failures:
                    log.info("listener_reconnected", node_id=self.node_id)
                failures = 0
                on_connect()
                while not lost.is_set():
                    try:
                        await asyncio.wait_for(lost.wait(), 5.0)
                    except TimeoutError:
                        await asyncio.wait_for(conn.execute("SELECT 1"), 5.0)
                raise ConnectionError("the listening connection closed")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - reconnect after any failure
                failures += 1
                if failures == 1:
                    log.warning("listener_lost", node_id=self.node_id, error=str(exc))
            finally:
                if conn is not None and not conn.is_closed():
                    conn.terminate()
            await asyncio.sleep(min(0.2 * 2 ** min(failures, 5), 5.0))


def _callback(handler: Handler) -> Callable[[Any, int, str, str], None]:
    def on_notify(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
        try:
            handler(payload)
        except Exception:
            log.exception("notification_handler_failed")

    return on_notify
