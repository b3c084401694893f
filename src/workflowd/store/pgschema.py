"""The PostgreSQL schema as an ordered list of migrations, one for each of SQLite's.

Version N here brings the same tables as version N of `store.schema`, so a store of either kind
at one version holds the same data in the same shape (`workflowd store copy` relies on it);
a migration added to one list gets its counterpart in the other (a test checks the lengths).
PostgreSQL has a few more columns and tables, for the nodes that share it: the lease of each
execution, the nodes, the leader row and the mailbox of requests between nodes.

All pending migrations run in one transaction under a lock on `schema_version`, so nodes that
start together on an empty database migrate it once.

Indexes and autovacuum settings of the hot tables, and why (DESIGN.md asks for them written
down; README's "PostgreSQL and several nodes" section repeats the operational part):

- `executions` is updated by every cycle (its snapshot `doc`), so it is kept with
  `fillfactor = 80`: the new version of a row fits on its page and, since a cycle changes no
  indexed column, the update is HOT (no index entry written). Its dead versions pile up at the
  rate of cycles, so autovacuum starts after 2% of the table changed (default 20%), and
  analyzes as often, so the planner keeps seeing how few rows are `queued`.
- `executions_claimable` (partial: queued and unleased) makes a claim read only the
  executions it may take, in priority order; `executions_leased` (partial: leased) serves
  renewals (by owner) and take-overs (expired `lease_until`); `executions_wake` the timers of
  waiting executions. Partial, so the many finished rows are in none of them.
- `events`, `steps`, `logs` only grow between retention sweeps: their ids come from identity
  columns so that rows go in at the end of the heap and the `(execution_id, seq)` unique index
  is the only random write. Insert-triggered autovacuum (PostgreSQL 13+) keeps their
  visibility maps current, so follower reads (`seq > N` on that index) stay index-only.
- `nodes`, `leader` and `requests` are a few rows rewritten every second or so: vacuumed after
  50 changed rows whatever their size, or their dead versions would outnumber the live ones.
- Definitions and artifacts (5, 6) have SQLite's columns and indexes; their timestamps are
  TEXT (ISO 8601 UTC, ordered as strings) like every other table's, so that retention's cutoff
  compares the same way in both stores, and an artifact's `size` is a BIGINT (past 2 GiB with
  a large `[artifacts] max_bytes`). `artifacts_sha256` answers whether any row still names a
  file before retention deletes it; `artifacts_created` finds the sweep's candidates (older
  than the cutoff) without reading every row; `artifact_uses_artifact` answers "does anyone
  use this artifact" for each candidate (the primary key leads with the execution, for
  `GET /executions/{id}/artifacts`). Neither table is rewritten in place, so they keep the
  default storage settings.
"""

from __future__ import annotations

from typing import Any

__all__ = ["MIGRATIONS", "migrate"]

_NOTHING = "SELECT 1"

MIGRATIONS: list[str] = [
    # 1: executions, their step records, events, log lines and idempotency answers; and for
    # the nodes: leases on executions, the nodes, the leader row, the mailbox.
    """
    CREATE TABLE executions (
        num BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        workflow_id TEXT NOT NULL,
        status TEXT NOT NULL,
        created_at TEXT NOT NULL,
        finished_at TEXT,
        doc TEXT NOT NULL,
        priority INTEGER NOT NULL DEFAULT 0,
        wake_at TEXT,
        lease_owner TEXT,
        lease_until TIMESTAMPTZ
    ) WITH (fillfactor = 80, autovacuum_vacuum_scale_factor = 0.02,
            autovacuum_analyze_scale_factor = 0.02);
    CREATE INDEX executions_status ON executions (status, num);
    CREATE INDEX executions_workflow ON executions (workflow_id, num);
    CREATE INDEX executions_finished ON executions (finished_at) WHERE finished_at IS NOT NULL;
    CREATE INDEX executions_claimable ON executions (priority DESC, num)
        WHERE status = 'queued' AND lease_owner IS NULL;
    CREATE INDEX executions_leased ON executions (lease_until) WHERE lease_owner IS NOT NULL;
    CREATE INDEX executions_wake ON executions (wake_at) WHERE wake_at IS NOT NULL;
    CREATE TABLE steps (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        execution_id TEXT NOT NULL,
        cycle INTEGER NOT NULL,
        doc TEXT NOT NULL,
        UNIQUE (execution_id, cycle)
    ) WITH (autovacuum_vacuum_insert_scale_factor = 0.05);
    CREATE TABLE events (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        execution_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        doc TEXT NOT NULL,
        UNIQUE (execution_id, seq)
    ) WITH (autovacuum_vacuum_insert_scale_factor = 0.05);
    CREATE TABLE logs (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        execution_id TEXT NOT NULL,
        doc TEXT NOT NULL
    ) WITH (autovacuum_vacuum_insert_scale_factor = 0.05);
    CREATE INDEX logs_execution ON logs (execution_id, id);
    CREATE TABLE idempotency (
        scope TEXT NOT NULL,
        key TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        status INTEGER NOT NULL,
        body TEXT NOT NULL,
        location TEXT,
        created_at TEXT NOT NULL,
        PRIMARY KEY (scope, key)
    );
    CREATE INDEX idempotency_created ON idempotency (created_at);
    CREATE TABLE nodes (
        node_id TEXT PRIMARY KEY,
        started_at TIMESTAMPTZ NOT NULL DEFAULT statement_timestamp(),
        last_seen TIMESTAMPTZ NOT NULL DEFAULT statement_timestamp(),
        running INTEGER NOT NULL DEFAULT 0
    ) WITH (autovacuum_vacuum_threshold = 50, autovacuum_vacuum_scale_factor = 0);
    CREATE TABLE leader (
        name TEXT PRIMARY KEY,
        node_id TEXT NOT NULL,
        until TIMESTAMPTZ NOT NULL
    ) WITH (autovacuum_vacuum_threshold = 50, autovacuum_vacuum_scale_factor = 0);
    CREATE TABLE requests (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        from_node TEXT NOT NULL,
        to_node TEXT NOT NULL,
        execution_id TEXT NOT NULL,
        body TEXT NOT NULL,
        answer TEXT,
        created_at TIMESTAMPTZ NOT NULL DEFAULT statement_timestamp()
    ) WITH (autovacuum_vacuum_threshold = 50, autovacuum_vacuum_scale_factor = 0);
    """,
    # 2: the outbox of HTTP deliveries (webhooks, external step dispatch), kept until sent.
    """
    CREATE TABLE deliveries (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        url TEXT NOT NULL,
        body TEXT NOT NULL,
        headers TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_at TEXT NOT NULL,
        status TEXT NOT NULL DEFAULT 'pending',
        last_error TEXT,
        created_at TEXT NOT NULL
    );
    CREATE INDEX deliveries_due ON deliveries (status, next_at);
    """,
    # 3: SQLite rebuilt events and steps as rowid tables; PostgreSQL's are heaps already.
    _NOTHING,
    # 4: SQLite moved waits into the records of older files; no PostgreSQL store is older.
    _NOTHING,
    # 5: workflows defined as data, every version kept (`store/definitions.py`). The primary
    # keys are the only indexes: every read is by workflow id (and version).
    """
    CREATE TABLE workflow_definitions (
        workflow_id TEXT PRIMARY KEY,
        latest INTEGER NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        deleted_at TEXT
    );
    CREATE TABLE workflow_versions (
        workflow_id TEXT NOT NULL,
        version INTEGER NOT NULL,
        doc TEXT NOT NULL,
        created_at TEXT NOT NULL,
        PRIMARY KEY (workflow_id, version)
    );
    """,
    # 6: artifacts and the executions that use them (`store/artifacts.py`).
    """
    CREATE TABLE artifacts (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        media_type TEXT NOT NULL,
        size BIGINT NOT NULL,
        sha256 TEXT NOT NULL,
        created_at TEXT NOT NULL,
        execution_id TEXT
    );
    CREATE INDEX artifacts_sha256 ON artifacts (sha256);
    CREATE INDEX artifacts_created ON artifacts (created_at);
    CREATE TABLE artifact_uses (
        execution_id TEXT NOT NULL,
        artifact_id TEXT NOT NULL,
        role TEXT NOT NULL,
        created_at TEXT NOT NULL,
        PRIMARY KEY (execution_id, artifact_id, role)
    );
    CREATE INDEX artifact_uses_artifact ON artifact_uses (artifact_id);
    """,
]


async def migrate(conn: Any) -> int:
    """Bring the schema up to date in one transaction; answer the version it is at.

    `conn` is an asyncpg connection. A database at a newer version than this code is refused
    (`RuntimeError`), changing nothing.
    """
    import asyncpg

    for attempt in range(3):
        try:
            async with conn.transaction():
                await conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
                await conn.execute("LOCK TABLE schema_version IN ACCESS EXCLUSIVE MODE")
                current = await conn.fetchval("SELECT MAX(version) FROM schema_version") or 0
                if current > len(MIGRATIONS):
                    raise RuntimeError(f"database schema version {current} is newer than this "
                                       f"workflowd ({len(MIGRATIONS)})")
                for version in range(current + 1, len(MIGRATIONS) + 1):
                    await conn.execute(MIGRATIONS[version - 1])
                    await conn.execute("INSERT INTO schema_version (version) VALUES ($1)",
                                       version)
            return len(MIGRATIONS)
        except asyncpg.UniqueViolationError:
            # Two nodes created `schema_version` at once: the loser looks again.
            if attempt == 2:
                raise
    raise AssertionError("unreachable")  # pragma: no cover
