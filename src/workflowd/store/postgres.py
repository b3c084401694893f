"""The PostgreSQL store: the same tables and promises as the SQLite store, on a server that
several nodes share (asyncpg; install with `pip install 'workflowd[postgres]'`).

Reads go through a small pool; writes through the writer task (`pgwriter`), one batch per
statement. The reads both stores share are in `reads`; the rest of workflows defined as
data and of artifacts is in `pgrows`. What only a
shared store has (leases, nodes, the leader row, the mailbox between
nodes, notifications) is in `ClusterOps`, which this store is: `store.cluster is store`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Literal
from urllib.parse import urlsplit

import structlog

from workflowd.errors import StoreError
from workflowd.records import (
    TERMINAL,
    ExecutionRecord,
    decode_execution,
)
from workflowd.redact import redact_text
from workflowd.store.base import ExecutionFilter, Store
from workflowd.store.cluster import ClusterOps
from workflowd.store.pgrows import PgRows
from workflowd.store.pgschema import migrate
from workflowd.store.pgwriter import PgWriter, connection
from workflowd.store.reads import SharedReads, numbered
from workflowd.store.writer import Write

__all__ = ["PostgresStore", "check_url"]

log = structlog.get_logger(__name__)

_TERMINAL = sorted(TERMINAL)


def check_url(url: str) -> None:
    """Refuse, with a message that never shows the password, a URL asyncpg cannot use."""
    shown = redact_text(url)
    try:
        parts = urlsplit(url)
        port = parts.port  # raises for a port that is not a number
    except ValueError as exc:
        raise StoreError(f"[store] url {shown} is not a valid URL ({exc})") from None
    if parts.scheme not in ("postgresql", "postgres"):
        raise StoreError(f"[store] url {shown} must start with postgresql:// "
                         "(or leave it empty for the SQLite file at [store] path)")
    if not parts.hostname and "host=" not in parts.query:
        raise StoreError(f"[store] url {shown} names no host")
    del port


async def _connect(url: str, *, name: str, synchronous: str = "full") -> Any:
    import asyncpg

    settings = {"application_name": name}
    if synchronous == "normal":
        # Commits are not waited for on the server's disk: a crash of the server may lose the
        # last ones (never half of one); a crash of a node loses nothing.
        settings["synchronous_commit"] = "off"
    return await asyncpg.connect(url, server_settings=settings, timeout=10.0,
                                 statement_cache_size=256)


class PostgresStore(PgRows, SharedReads, Store, ClusterOps):
    def __init__(self, url: str, pool: Any, writer: PgWriter, node_id: str,
                 lease_seconds: float) -> None:
        Store.__init__(self)
        ClusterOps.__init__(self, pool, node_id, lease_seconds,
                            lambda name: _connect(url, name=name))
        self.url = url
        self.where = redact_text(url)
        self._pool = pool
        self.writer: PgWriter = writer
        self.cluster = self
        self._closed = False

    @classmethod
    async def open(cls, url: str, *, node_id: str, lease_seconds: float = 15.0,
                   max_batch: int = 512, pool_size: int = 8,
                   synchronous: Literal["full", "normal"] = "full") -> PostgresStore:
        """Connect, migrate, start the writer; `StoreError` says why it cannot (never with
        the password)."""
        try:
            import asyncpg
        except ImportError:
            raise StoreError("[store] url names PostgreSQL, but asyncpg is not installed: "
                             "pip install 'workflowd[postgres]'") from None
        check_url(url)
        shown = redact_text(url)
        pool = None
        writer = None
        try:
            conn = await _connect(url, name=f"workflowd-migrate:{node_id}")
            try:
                await migrate(conn)
            finally:
                await conn.close()
            pool = await asyncpg.create_pool(
                url, min_size=1, max_size=pool_size, timeout=10.0, command_timeout=60.0,
                server_settings={"application_name": f"workflowd:{node_id}"})
            writer = PgWriter(lambda: _connect(url, name=f"workflowd-writer:{node_id}",
                                               synchronous=synchronous),
                              node_id, lease_seconds, max_batch=max_batch, where=shown)
            await writer.open()
        except BaseException as exc:
            if writer is not None:
                await writer.stop()
            if pool is not None:
                await pool.close()
            if isinstance(exc, RuntimeError | OSError | asyncpg.PostgresError
                          | asyncpg.InterfaceError | TimeoutError):
                raise StoreError(f"cannot open the store {shown}: "
                                 f"{str(exc).replace(url, shown)}") from None
            raise
        return cls(url, pool, writer, node_id, lease_seconds)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self.stop_listening()
        await self.close_shared_locks()
        await self.writer.stop()
        try:
            await asyncio.wait_for(self._pool.close(), 10.0)
        except TimeoutError:
            self._pool.terminate()

    # ---- writes ---------------------------------------------------------------------------

    def write(self, write: Write) -> asyncio.Future[None]:
        return self.writer.submit(write)

    # ---- reads ----------------------------------------------------------------------------

    async def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        async with connection(self._pool) as conn:
            return list(await conn.fetch(numbered(sql), *params))

    async def unfinished(self) -> list[ExecutionRecord]:
        rows = await self._rows(
            "SELECT doc FROM executions WHERE status <> ALL($1) ORDER BY num", (_TERMINAL,))
        return [decode_execution(row[0]) for row in rows]

    async def list_executions(self, f: ExecutionFilter,
                              ) -> tuple[list[ExecutionRecord], int | None]:
        where: list[str] = []
        params: list[Any] = []

        def param(value: Any) -> str:
            params.append(value)
            return f"${len(params)}"

        for column, value in (("workflow_id", f.workflow_id), ("status", f.status)):
            if value is not None:
                where.append(f"{column} = {param(value)}")
        if f.created_after is not None:
            where.append(f"created_at >= {param(f.created_after)}")
        if f.created_before is not None:
            where.append(f"created_at < {param(f.created_before)}")
        if f.before_num is not None:
            where.append(f"num < {param(f.before_num)}")
        for key, value in f.labels:
            where.append(f"(doc::json -> 'labels' ->> {param(key)}) = {param(value)}")
        sql = "SELECT num, doc FROM executions"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY num DESC LIMIT {param(f.limit + 1)}"
        rows = await self._rows(sql, params)
        page = rows[: f.limit]
        next_num = page[-1][0] if len(rows) > f.limit else None
        return [decode_execution(row[1]) for row in page], next_num

    async def delivery_outcome(self, delivery_id: int, *, delivered: bool, attempts: int,
                               next_at: str | None, error: str | None) -> None:
        async with connection(self._pool) as conn:
            if delivered:
                await conn.execute("DELETE FROM deliveries WHERE id = $1", delivery_id)
            else:
                await conn.execute(
                    "UPDATE deliveries SET attempts = $1, next_at = COALESCE($2, next_at), "
                    "status = CASE WHEN $2::text IS NULL THEN 'failed' ELSE 'pending' END, "
                    "last_error = $3 WHERE id = $4", attempts, next_at, error, delivery_id)

    async def count_by_workflow_status(self, ids: Sequence[str] | None = None,
                                       ) -> dict[tuple[str, str], int]:
        if ids is None:
            rows = await self._rows("SELECT workflow_id, status, COUNT(*) FROM executions "
                                    "GROUP BY workflow_id, status")
        else:
            rows = await self._rows("SELECT workflow_id, status, COUNT(*) FROM executions "
                                    "WHERE id = ANY($1) GROUP BY workflow_id, status",
                                    (list(ids),))
        return {(row[0], row[1]): int(row[2]) for row in rows}

    async def delete_executions(self, ids: Sequence[str], idempotency_before: str) -> None:
        ids = list(ids)
        # Finished executions never change: counted before the delete, they are what it removes.
        counts = await self.count_by_workflow_status(ids) if self.on_deleted_counts else {}
        async with connection(self._pool) as conn, conn.transaction():
            for table, column in (("steps", "execution_id"), ("events", "execution_id"),
                                  ("logs", "execution_id"), ("executions", "id")):
                await conn.execute(f"DELETE FROM {table} WHERE {column} = ANY($1)", ids)  # noqa: S608
            await conn.execute("DELETE FROM idempotency WHERE created_at < $1",
                               idempotency_before)
        self._deleted(ids, counts)
