"""The reads whose SQL is the same on both stores, written once.

`SharedReads` is mixed into `SQLiteStore` and `PostgresStore`; it needs only `_rows` (a read)
and `commit` (a write). Its SQL marks parameters with `?`: PostgreSQL's `_rows` numbers them
(`numbered`). What the two dialects say differently (lists of values, JSON, upserts, the
writes that do not go through the writer) stays in each store's own module.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from workflowd.records import (
    ExecutionRecord,
    IdempotencyRecord,
    StepRecord,
    decode_execution,
    decode_step,
)
from workflowd.store.artifacts import ArtifactRow, Role
from workflowd.store.definitions import DefinitionHead, StoredVersion
from workflowd.store.writer import Delivery, Write

__all__ = ["ARTIFACT_COLUMNS", "SharedReads", "numbered"]

ARTIFACT_COLUMNS = "id, name, media_type, size, sha256, created_at, execution_id"

_MARK = re.compile(r"\?")


@functools.lru_cache(maxsize=256)
def numbered(sql: str) -> str:
    """`sql` with its `?` marks as PostgreSQL's `$1, $2, ...` (none of our SQL has a `?` in
    a literal); SQL already numbered comes back as it is."""
    if "?" not in sql:
        return sql
    count = iter(range(1, sql.count("?") + 1))
    return _MARK.sub(lambda _: f"${next(count)}", sql)


class SharedReads:
    """Reads of executions, their steps, events and logs, idempotency answers, deliveries,
    definitions and artifacts (a mixin of both stores)."""

    if TYPE_CHECKING:  # given by the store this is mixed into
        async def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]: ...

        async def commit(self, write: Write) -> None: ...

    # ---- executions -------------------------------------------------------------------------

    async def get_execution(self, execution_id: str) -> ExecutionRecord | None:
        rows = await self._rows("SELECT doc FROM executions WHERE id = ?", (execution_id,))
        return decode_execution(rows[0][0]) if rows else None

    async def steps(self, execution_id: str) -> list[StepRecord]:
        rows = await self._rows(
            "SELECT doc FROM steps WHERE execution_id = ? ORDER BY cycle", (execution_id,))
        return [decode_step(row[0]) for row in rows]

    async def step_at(self, execution_id: str, cycle: int) -> StepRecord | None:
        rows = await self._rows(
            "SELECT doc FROM steps WHERE execution_id = ? AND cycle = ?", (execution_id, cycle))
        return decode_step(rows[0][0]) if rows else None

    async def events(self, execution_id: str, after: int = 0, limit: int = 1000) -> list[str]:
        """Events as stored JSON text, in `seq` order."""
        return [doc for _, doc in await self.event_rows(execution_id, after, limit)]

    async def event_rows(self, execution_id: str, after: int, limit: int) -> list[tuple[int, str]]:
        """`(seq, event JSON)` after `after`, in `seq` order."""
        rows = await self._rows(
            "SELECT seq, doc FROM events WHERE execution_id = ? AND seq > ? ORDER BY seq LIMIT ?",
            (execution_id, after, limit))
        return [(int(row[0]), row[1]) for row in rows]

    async def logs(self, execution_id: str, after: int = 0,
                   limit: int = 1000) -> list[tuple[int, str]]:
        rows = await self._rows(
            "SELECT id, doc FROM logs WHERE execution_id = ? AND id > ? ORDER BY id LIMIT ?",
            (execution_id, after, limit))
        return [(int(row[0]), row[1]) for row in rows]

    async def finished_before(self, cutoff: str, limit: int = 500) -> list[str]:
        rows = await self._rows(
            "SELECT id FROM executions WHERE finished_at IS NOT NULL AND finished_at < ? LIMIT ?",
            (cutoff, limit))
        return [row[0] for row in rows]

    # ---- idempotency answers and deliveries -------------------------------------------------

    async def idempotency(self, scope: str, key: str) -> IdempotencyRecord | None:
        rows = await self._rows(
            "SELECT fingerprint, status, body, location FROM idempotency "
            "WHERE scope = ? AND key = ?", (scope, key))
        if not rows:
            return None
        fingerprint, status, body, location = rows[0]
        return IdempotencyRecord(scope, key, fingerprint, int(status), body, location)

    async def due_deliveries(self, now: str, limit: int) -> list[tuple[int, Delivery, int]]:
        """Pending deliveries due by `now`: `(id, delivery, attempts so far)`, oldest first."""
        rows = await self._rows(
            "SELECT id, url, body, headers, attempts FROM deliveries "
            "WHERE status = 'pending' AND next_at <= ? ORDER BY next_at, id LIMIT ?",
            (now, limit))
        return [(int(r[0]), Delivery(r[1], r[2], json.loads(r[3])), int(r[4])) for r in rows]

    async def pending_deliveries(self) -> int:
        """Outbox deliveries not yet sent (nor given up)."""
        rows = await self._rows("SELECT COUNT(*) FROM deliveries WHERE status = 'pending'")
        return int(rows[0][0])

    # ---- workflows defined as data ------------------------------------------------------------

    async def definition_head(self, workflow_id: str) -> DefinitionHead | None:
        rows = await self._rows(
            "SELECT workflow_id, latest, created_at, updated_at, deleted_at "
            "FROM workflow_definitions WHERE workflow_id = ?", (workflow_id,))
        return DefinitionHead(*rows[0]) if rows else None

    async def definition_version(self, workflow_id: str, version: int) -> StoredVersion | None:
        rows = await self._rows(
            "SELECT workflow_id, version, doc, created_at FROM workflow_versions "
            "WHERE workflow_id = ? AND version = ?", (workflow_id, version))
        return StoredVersion(*rows[0]) if rows else None

    async def definition_versions(self, workflow_id: str) -> list[StoredVersion]:
        rows = await self._rows(
            "SELECT workflow_id, version, doc, created_at FROM workflow_versions "
            "WHERE workflow_id = ? ORDER BY version", (workflow_id,))
        return [StoredVersion(*row) for row in rows]

    async def current_definitions(self) -> list[StoredVersion]:
        rows = await self._rows(
            "SELECT v.workflow_id, v.version, v.doc, v.created_at FROM workflow_definitions d "
            "JOIN workflow_versions v ON v.workflow_id = d.workflow_id AND v.version = d.latest "
            "WHERE d.deleted_at IS NULL ORDER BY d.workflow_id")
        return [StoredVersion(*row) for row in rows]

    async def definition_ids(self) -> list[str]:
        rows = await self._rows("SELECT workflow_id FROM workflow_definitions "
                                "ORDER BY workflow_id")
        return [row[0] for row in rows]

    # ---- artifacts ----------------------------------------------------------------------------

    async def artifact(self, artifact_id: str) -> ArtifactRow | None:
        rows = await self._rows(
            f"SELECT {ARTIFACT_COLUMNS} FROM artifacts WHERE id = ?",  # noqa: S608 - constant
            (artifact_id,))
        return ArtifactRow(*rows[0]) if rows else None

    async def sha256_in_use(self, sha256: str) -> bool:
        rows = await self._rows("SELECT 1 FROM artifacts WHERE sha256 = ? LIMIT 1", (sha256,))
        return bool(rows)

    async def note_artifact_use(self, execution_id: str, artifact_id: str, role: Role,
                                now: str) -> None:
        # Inserted by the writer with the uses a write carries (`Write.artifact_uses`).
        await self.commit(Write(artifact_uses=[(execution_id, artifact_id, role, now)]))
