"""The schema as an ordered list of migrations; each runs once, recorded in `schema_version`.

A migration is SQL, or a function of the connection for one that must read and rewrite
documents; each runs in its own transaction with the version it brings.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from typing import Any

__all__ = ["MIGRATIONS", "migrate"]


def _waits_as_records(conn: sqlite3.Connection) -> None:
    """4: an unfinished execution's wait moves from `gate` / `external` into `wait` and `step`
    (the record of the step waited on), which the engine now keeps in the execution itself."""
    rows = conn.execute(
        "SELECT id, doc FROM executions WHERE status IN ('awaiting_approval', 'running')"
    ).fetchall()
    for execution_id, text in rows:
        doc: dict[str, Any] = json.loads(text)
        gate, external = doc.pop("gate", None), doc.pop("external", None)
        if doc["status"] == "awaiting_approval":
            doc["wait"] = {"kind": "approval", "deadline": None, "token": None}
            cycle = doc.get("cycle") if gate is not None else None
        elif external is not None:
            doc["wait"] = {"kind": "external", "deadline": external["deadline"],
                           "token": external["token"]}
            cycle = external["cycle"]
        else:
            cycle = None
        if cycle is not None:
            step = conn.execute("SELECT doc FROM steps WHERE execution_id = ? AND cycle = ?",
                                (execution_id, cycle)).fetchone()
            if step is not None:
                doc["step"] = json.loads(step[0])
                if external is not None and external.get("result") is not None:
                    # Answered, not yet finished: recovery finishes it from this answer.
                    doc["step"]["metadata"]["answer"] = external["result"]
        conn.execute("UPDATE executions SET doc = ? WHERE id = ?", (json.dumps(doc), execution_id))


MIGRATIONS: list[str | Callable[[sqlite3.Connection], None]] = [
    # 1: executions, their step records, events, log lines and idempotency answers.
    """
    CREATE TABLE executions (
        num INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        workflow_id TEXT NOT NULL,
        status TEXT NOT NULL,
        created_at TEXT NOT NULL,
        finished_at TEXT,
        doc TEXT NOT NULL
    );
    CREATE INDEX executions_status ON executions (status, num);
    CREATE INDEX executions_workflow ON executions (workflow_id, num);
    CREATE INDEX executions_finished ON executions (finished_at) WHERE finished_at IS NOT NULL;
    CREATE TABLE steps (
        execution_id TEXT NOT NULL,
        cycle INTEGER NOT NULL,
        doc TEXT NOT NULL,
        PRIMARY KEY (execution_id, cycle)
    ) WITHOUT ROWID;
    CREATE TABLE events (
        execution_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        doc TEXT NOT NULL,
        PRIMARY KEY (execution_id, seq)
    ) WITHOUT ROWID;
    CREATE TABLE logs (
        id INTEGER PRIMARY KEY,
        execution_id TEXT NOT NULL,
        doc TEXT NOT NULL
    );
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
    ) WITHOUT ROWID;
    CREATE INDEX idempotency_created ON idempotency (created_at);
    """,
    # 2: the outbox of HTTP deliveries (webhooks, external step dispatch), kept until sent.
    """
    CREATE TABLE deliveries (
        id INTEGER PRIMARY KEY,
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
    # 3: events and step records as rowid tables with a unique index on their key. Rows go in
    # at the end of the table and only the small index entry lands by execution id, where the
    # clustered WITHOUT ROWID tables put each row at a random page: about 4x less written per
    # commit under load.
    """
    CREATE TABLE events_v3 (
        id INTEGER PRIMARY KEY,
        execution_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        doc TEXT NOT NULL
    );
    INSERT INTO events_v3 (execution_id, seq, doc)
        SELECT execution_id, seq, doc FROM events ORDER BY execution_id, seq;
    DROP TABLE events;
    ALTER TABLE events_v3 RENAME TO events;
    CREATE UNIQUE INDEX events_key ON events (execution_id, seq);
    CREATE TABLE steps_v3 (
        id INTEGER PRIMARY KEY,
        execution_id TEXT NOT NULL,
        cycle INTEGER NOT NULL,
        doc TEXT NOT NULL
    );
    INSERT INTO steps_v3 (execution_id, cycle, doc)
        SELECT execution_id, cycle, doc FROM steps ORDER BY execution_id, cycle;
    DROP TABLE steps;
    ALTER TABLE steps_v3 RENAME TO steps;
    CREATE UNIQUE INDEX steps_key ON steps (execution_id, cycle);
    """,
    _waits_as_records,
    # 5: workflows defined as data, every version kept (`store/definitions.py`).
    """
    CREATE TABLE workflow_definitions (
        workflow_id TEXT PRIMARY KEY,
        latest INTEGER NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        deleted_at TEXT
    ) WITHOUT ROWID;
    CREATE TABLE workflow_versions (
        workflow_id TEXT NOT NULL,
        version INTEGER NOT NULL,
        doc TEXT NOT NULL,
        created_at TEXT NOT NULL,
        PRIMARY KEY (workflow_id, version)
    ) WITHOUT ROWID;
    """,
    # 6: artifacts and the executions that use them (`store/artifacts.py`).
    """
    CREATE TABLE artifacts (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        media_type TEXT NOT NULL,
        size INTEGER NOT NULL,
        sha256 TEXT NOT NULL,
        created_at TEXT NOT NULL,
        execution_id TEXT
    ) WITHOUT ROWID;
    CREATE INDEX artifacts_sha256 ON artifacts (sha256);
    CREATE INDEX artifacts_created ON artifacts (created_at);
    CREATE TABLE artifact_uses (
        execution_id TEXT NOT NULL,
        artifact_id TEXT NOT NULL,
        role TEXT NOT NULL,
        created_at TEXT NOT NULL,
        PRIMARY KEY (execution_id, artifact_id, role)
    ) WITHOUT ROWID;
    CREATE INDEX artifact_uses_artifact ON artifact_uses (artifact_id);
    """,
]


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the schema up to date; answer the version it is at."""
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
    current = int(row[0]) if row and row[0] is not None else 0
    if current > len(MIGRATIONS):
        raise RuntimeError(
            f"database schema version {current} is newer than this workflowd ({len(MIGRATIONS)})"
        )
    for version in range(current + 1, len(MIGRATIONS) + 1):
        step = MIGRATIONS[version - 1]
        if isinstance(step, str):
            conn.executescript(
                "BEGIN IMMEDIATE;\n" + step
                + f"\nINSERT INTO schema_version (version) VALUES ({version});\nCOMMIT;"
            )
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            step(conn)
            conn.execute("INSERT INTO schema_version (version) VALUES (?)", (version,))
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    return len(MIGRATIONS)
