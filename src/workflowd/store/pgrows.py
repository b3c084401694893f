"""The PostgreSQL store's SQL of workflows defined as data and of artifacts, where it differs
from SQLite's `rows.py`: their writes, and reads of lists (the reads both say alike are in
`reads.py`; the row types in `definitions.py` and `artifacts.py`).

`PgRows` is mixed into `PostgresStore`; it needs `_rows` (a read on the pool) and `_pool`
(a transaction of its own). These writes do not go through the writer: they belong to no
execution, so they need no lease check, and each is one short transaction. An artifact's use
is inserted by the writer's batch statement (`Write.artifact_uses`), with its execution's
write.

Where SQLite's single writer makes a check inside a write exact, concurrent transactions here
need a lock instead:
- Two nodes storing the same version of a definition: the version's primary key refuses the
  second (it waits for the first to commit, then fails), as SQLite's does.
- Retention deleting an artifact a use is being committed for: a use keys the artifact's row
  (`FOR KEY SHARE`, in the writer's statement) until it commits, and the sweep deletes only
  rows it could lock (`FOR UPDATE SKIP LOCKED`), checking for uses after the lock, in a
  statement of its own, so that it sees every use committed before.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from workflowd.errors import WorkflowConflictError
from workflowd.store.artifacts import ArtifactRow, Role, in_role_order
from workflowd.store.pgwriter import connection
from workflowd.store.reads import ARTIFACT_COLUMNS
from workflowd.store.writer import Write

__all__ = ["PgRows"]

# Uses of executions that are gone (retention deleted them) go first; then, of the artifacts
# nobody uses that are older than the cutoff, those this transaction can lock.
_FORGET_USES = (
    "DELETE FROM artifact_uses u "
    "WHERE NOT EXISTS (SELECT 1 FROM executions e WHERE e.id = u.execution_id)"
)
_LOCK_CANDIDATES = (
    "SELECT id FROM artifacts WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE SKIP LOCKED"
)
_DELETE_UNUSED = (
    "DELETE FROM artifacts a WHERE id = ANY($1::text[]) "
    "AND NOT EXISTS (SELECT 1 FROM artifact_uses u WHERE u.artifact_id = a.id) "
    "RETURNING sha256"
)


class PgRows:
    """Reads and writes of stored definitions and artifacts (a mixin of `PostgresStore`)."""

    if TYPE_CHECKING:  # given by the store this is mixed into
        _pool: Any

        async def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]: ...

        async def commit(self, write: Write) -> None: ...

    # ---- workflows defined as data ---------------------------------------------------------

    async def add_definition_version(self, workflow_id: str, version: int, doc: str,
                                     now: str) -> None:
        import asyncpg

        try:
            async with connection(self._pool) as conn, conn.transaction():
                await conn.execute(
                    "INSERT INTO workflow_versions (workflow_id, version, doc, created_at) "
                    "VALUES ($1, $2, $3, $4)", workflow_id, version, doc, now)
                await conn.execute(
                    "INSERT INTO workflow_definitions "
                    "(workflow_id, latest, created_at, updated_at, deleted_at) "
                    "VALUES ($1, $2, $3, $3, NULL) ON CONFLICT (workflow_id) DO UPDATE SET "
                    "latest = excluded.latest, updated_at = excluded.updated_at, "
                    "deleted_at = NULL", workflow_id, version, now)
        except asyncpg.UniqueViolationError:  # the version's primary key: stored meanwhile
            raise WorkflowConflictError(
                f"version {version} of workflow {workflow_id!r} was stored meanwhile; "
                "try again") from None

    async def delete_definition(self, workflow_id: str, now: str) -> None:
        async with connection(self._pool) as conn:
            await conn.execute(
                "UPDATE workflow_definitions SET deleted_at = $1, updated_at = $1 "
                "WHERE workflow_id = $2", now, workflow_id)

    # ---- artifacts -------------------------------------------------------------------------

    async def existing_artifacts(self, ids: Iterable[str]) -> set[str]:
        wanted = sorted(set(ids))
        if not wanted:
            return set()
        rows = await self._rows("SELECT id FROM artifacts WHERE id = ANY($1::text[])", (wanted,))
        return {row[0] for row in rows}

    async def artifacts_of(self, execution_id: str) -> list[tuple[ArtifactRow, list[str]]]:
        rows = await self._rows(
            "SELECT a.id, a.name, a.media_type, a.size, a.sha256, a.created_at, a.execution_id, "
            "array_agg(u.role), min(u.created_at) AS first FROM artifact_uses u "
            "JOIN artifacts a ON a.id = u.artifact_id WHERE u.execution_id = $1 "
            "GROUP BY a.id ORDER BY first, a.id", (execution_id,))
        return [(ArtifactRow(*row[:7]), in_role_order(row[7])) for row in rows]

    async def add_artifact(self, row: ArtifactRow, role: Role | None = None) -> None:
        # One statement: the row, and with `role` its use by the execution that saved it.
        async with connection(self._pool) as conn:
            await conn.execute(
                f"WITH a AS (INSERT INTO artifacts ({ARTIFACT_COLUMNS}) "  # noqa: S608
                "VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id, execution_id) "
                "INSERT INTO artifact_uses (execution_id, artifact_id, role, created_at) "
                "SELECT execution_id, id, $8, $6 FROM a "
                "WHERE $8::text IS NOT NULL AND execution_id IS NOT NULL",
                row.artifact_id, row.name, row.media_type, row.size, row.sha256,
                row.created_at, row.execution_id, role)

    async def sweep_artifacts(self, cutoff: str, limit: int = 500) -> list[str]:
        rows = await self._rows(
            "SELECT id FROM artifacts a WHERE created_at < $1 AND NOT EXISTS "
            "(SELECT 1 FROM artifact_uses u WHERE u.artifact_id = a.id AND EXISTS "
            "(SELECT 1 FROM executions e WHERE e.id = u.execution_id)) LIMIT $2",
            (cutoff, limit))
        candidates = [row[0] for row in rows]
        async with connection(self._pool) as conn, conn.transaction():
            await conn.execute(_FORGET_USES)
            if not candidates:
                return []
            # Read committed: each statement sees what committed before it began, so the
            # check for uses (in the delete) follows the lock, which waited for nothing.
            locked = [row[0] for row in await conn.fetch(_LOCK_CANDIDATES, candidates)]
            gone = await conn.fetch(_DELETE_UNUSED, locked) if locked else []
        return sorted({row[0] for row in gone})
