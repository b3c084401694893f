"""`workflowd store copy --from PATH --to URL`: move a SQLite store to PostgreSQL.

Every execution goes with its step records, events and log lines, and so do the kept
idempotency answers, the deliveries not yet sent, the workflows defined as JSON (every
version) and the artifacts' rows with their uses, in one transaction: the target has all of
it or nothing. The artifacts' files are not in the store: the nodes' `[artifacts] dir` must
hold them (copy the directory there, or point `dir` at it). The SQLite file is locked
meanwhile (no service may run on it), and the target is migrated first. Executions the target
has already are left as they are (a second run copies only what is new). Unfinished ones are
claimed by the nodes as after a crash: they resume from their last committed cycle.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
from collections.abc import Iterator
from typing import Any

from workflowd.errors import StoreError
from workflowd.records import TERMINAL, decode_execution, wakes_at
from workflowd.redact import redact_text
from workflowd.store.pgschema import migrate
from workflowd.store.postgres import check_url
from workflowd.store.schema import migrate as migrate_sqlite
from workflowd.store.store import _lock, _unlock

__all__ = ["add_command", "copy_store"]

_CHUNK = 500  # ids per IN (...): within SQLite's oldest limit of 999 variables


def add_command(commands: Any) -> None:
    """Add `store copy` to the command line's subcommands."""
    store = commands.add_parser("store", help="manage the store")
    actions = store.add_subparsers(dest="store_command", required=True)
    copy = actions.add_parser("copy", help="copy a SQLite store to PostgreSQL")
    copy.add_argument("--from", dest="source", required=True, metavar="PATH",
                      help="the SQLite file ([store] path)")
    copy.add_argument("--to", dest="target", required=True, metavar="URL",
                      help="postgresql://user:pass@host:port/db")
    copy.set_defaults(run=_run)


def _run(args: argparse.Namespace) -> int:
    try:
        counts = asyncio.run(copy_store(args.source, args.target))
    except StoreError as exc:
        print(f"workflowd: {exc.detail}", file=sys.stderr)  # noqa: T201
        return 2
    print(f"copied to {redact_text(args.target)}: "  # noqa: T201
          + ", ".join(f"{n} {what}" for what, n in counts.items()))
    return 0


def _chunks(conn: sqlite3.Connection, sql: str, params: tuple[Any, ...] = ()) -> Iterator[
        list[tuple[Any, ...]]]:
    cur = conn.execute(sql, params)
    while rows := cur.fetchmany(_CHUNK):
        yield rows


async def copy_store(source: str, target: str) -> dict[str, int]:
    """Copy everything of the SQLite file `source` into the PostgreSQL database `target`;
    answer how many rows of each kind went in."""
    import asyncpg

    check_url(target)
    shown = redact_text(target)
    lock = _lock(source)  # raises StoreError if a service runs on it
    try:
        src = sqlite3.connect(f"file:{source}?mode=rw", uri=True, isolation_level=None)
    except sqlite3.Error as exc:
        _unlock(lock)
        raise StoreError(f"cannot open {source!r}: {exc}") from None
    try:
        migrate_sqlite(src)  # an older file is brought up to this version's schema first
        try:
            conn = await asyncpg.connect(target, timeout=10.0)
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            raise StoreError(f"cannot reach {shown}: {str(exc).replace(target, shown)}"
                             ) from None
        try:
            await migrate(conn)
            async with conn.transaction():
                return await _copy(src, conn)
        finally:
            await conn.close()
    finally:
        src.close()
        _unlock(lock)


async def _copy(src: sqlite3.Connection, conn: Any) -> dict[str, int]:
    counts = {"executions": 0, "steps": 0, "events": 0, "logs": 0, "idempotency answers": 0,
              "deliveries": 0, "already there": 0}
    for rows in _chunks(src, "SELECT id, workflow_id, status, created_at, finished_at, doc "
                             "FROM executions ORDER BY num"):
        ids = [row[0] for row in rows]
        there = {r[0] for r in await conn.fetch(
            "SELECT id FROM executions WHERE id = ANY($1)", ids)}
        new = [row for row in rows if row[0] not in there]
        counts["already there"] += len(there)
        if not new:
            continue
        records = []
        for execution_id, workflow_id, status, created_at, finished_at, doc in new:
            rec = decode_execution(doc)
            wakes = wakes_at(rec)
            # A running execution (cut off when the file's service stopped) is claimed as
            # one whose node died: an expired lease.
            orphan = status not in TERMINAL and rec.wait is None and status != "queued"
            records.append((execution_id, workflow_id, status, created_at, finished_at, doc,
                            rec.priority, wakes, "store-copy" if orphan else None,
                            "-infinity" if orphan else None))
        await conn.executemany(
            "INSERT INTO executions (id, workflow_id, status, created_at, finished_at, doc, "
            "priority, wake_at, lease_owner, lease_until) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::text::timestamptz)", records)
        counts["executions"] += len(new)
        new_ids = [row[0] for row in new]
        marks = ",".join("?" * len(new_ids))
        for table, columns in (("steps", ("execution_id", "cycle", "doc")),
                               ("events", ("execution_id", "seq", "doc")),
                               ("logs", ("execution_id", "doc"))):
            for part in _chunks(src, f"SELECT {', '.join(columns)} FROM {table} "  # noqa: S608
                                     f"WHERE execution_id IN ({marks}) ORDER BY id",
                                tuple(new_ids)):
                await conn.copy_records_to_table(table, records=part, columns=list(columns))
                counts[table] += len(part)
    for part in _chunks(src, "SELECT scope, key, fingerprint, status, body, location, "
                             "created_at FROM idempotency"):
        await conn.executemany(
            "INSERT INTO idempotency (scope, key, fingerprint, status, body, location, "
            "created_at) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING", part)
        counts["idempotency answers"] += len(part)
    for part in _chunks(src, "SELECT url, body, headers, attempts, next_at, status, "
                             "last_error, created_at FROM deliveries WHERE status = 'pending'"):
        # Deliveries have no key of their own: one already there with the same address, body
        # and time is this one, copied by an earlier run (sent twice would be a duplicate).
        for row in part:
            done = await conn.fetchval(
                "INSERT INTO deliveries (url, body, headers, attempts, next_at, status, "
                "last_error, created_at) SELECT $1, $2, $3, $4, $5, $6, $7, $8 WHERE NOT EXISTS "
                "(SELECT 1 FROM deliveries WHERE url = $1 AND body = $2 AND created_at = $8) "
                "RETURNING 1", *row)
            counts["deliveries"] += int(done or 0)
    await _copy_data(src, conn, counts)
    return counts


# Rows that belong to no one execution, by table: its columns with their PostgreSQL types.
# What the target has already (a second copy; an id defined there meanwhile) stays as it is.
_DATA: tuple[tuple[str, str, tuple[tuple[str, str], ...]], ...] = (
    ("workflow definitions", "workflow_definitions", (
        ("workflow_id", "text"), ("latest", "int"), ("created_at", "text"),
        ("updated_at", "text"), ("deleted_at", "text"))),
    ("workflow versions", "workflow_versions", (
        ("workflow_id", "text"), ("version", "int"), ("doc", "text"), ("created_at", "text"))),
    ("artifacts", "artifacts", (
        ("id", "text"), ("name", "text"), ("media_type", "text"), ("size", "bigint"),
        ("sha256", "text"), ("created_at", "text"), ("execution_id", "text"))),
    ("artifact uses", "artifact_uses", (
        ("execution_id", "text"), ("artifact_id", "text"), ("role", "text"),
        ("created_at", "text"))),
)


async def _copy_data(src: sqlite3.Connection, conn: Any, counts: dict[str, int]) -> None:
    """Workflows defined as JSON and artifacts' rows: one statement per chunk (the columns as
    arrays, unnested on the server)."""
    for what, table, columns in _DATA:
        names = ", ".join(name for name, _ in columns)
        arrays = ", ".join(f"${n}::{kind}[]" for n, (_, kind) in enumerate(columns, 1))
        insert = (f"INSERT INTO {table} ({names}) SELECT * FROM unnest({arrays}) "  # noqa: S608
                  "ON CONFLICT DO NOTHING RETURNING 1")
        counts[what] = 0
        for part in _chunks(src, f"SELECT {names} FROM {table}"):  # noqa: S608 - constants
            added = await conn.fetch(insert, *(list(column) for column in zip(*part,
                                                                              strict=True)))
            counts[what] += len(added)
