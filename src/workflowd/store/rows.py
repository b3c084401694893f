"""The SQLite store's SQL of workflows defined as data and of artifacts, where it differs
from PostgreSQL's `pgrows.py`: their writes, and reads of lists (the reads both say alike are
in `reads.py`; the row types in `definitions.py` and `artifacts.py`).

`SQLiteRows` is mixed into `SQLiteStore`; it needs only `_rows` (a read) and `commit` (a
write through the single writer, which serializes every write: a check made inside a write's
statements is exact). An artifact's use is inserted by the writer (`Write.artifact_uses`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from workflowd.errors import WorkflowConflictError
from workflowd.store.artifacts import ArtifactRow, Role, in_role_order
from workflowd.store.reads import ARTIFACT_COLUMNS
from workflowd.store.writer import Write

__all__ = ["SQLiteRows"]

Statement = tuple[str, tuple[Any, ...]]


class SQLiteRows:
    """Reads and writes of stored definitions and artifacts (a mixin of `SQLiteStore`)."""

    if TYPE_CHECKING:  # given by the store this is mixed into
        async def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]: ...

        async def commit(self, write: Write) -> None: ...

    # ---- workflows defined as data ---------------------------------------------------------

    async def add_definition_version(self, workflow_id: str, version: int, doc: str,
                                     now: str) -> None:
        write = Write(statements=[
            ("INSERT INTO workflow_versions (workflow_id, version, doc, created_at) "
             "VALUES (?, ?, ?, ?)", (workflow_id, version, doc, now)),
            ("INSERT INTO workflow_definitions "
             "(workflow_id, latest, created_at, updated_at, deleted_at) "
             "VALUES (?, ?, ?, ?, NULL) ON CONFLICT (workflow_id) DO UPDATE SET "
             "latest = excluded.latest, updated_at = excluded.updated_at, deleted_at = NULL",
             (workflow_id, version, now, now)),
        ])
        try:
            await self.commit(write)
        except sqlite3.IntegrityError:  # the version's primary key: stored meanwhile
            raise WorkflowConflictError(
                f"version {version} of workflow {workflow_id!r} was stored meanwhile; "
                "try again") from None

    async def delete_definition(self, workflow_id: str, now: str) -> None:
        await self.commit(Write(statements=[(
            "UPDATE workflow_definitions SET deleted_at = ?, updated_at = ? "
            "WHERE workflow_id = ?", (now, now, workflow_id))]))

    # ---- artifacts -------------------------------------------------------------------------

    async def existing_artifacts(self, ids: Iterable[str]) -> set[str]:
        wanted = sorted(set(ids))
        found: set[str] = set()
        for start in range(0, len(wanted), 500):  # within SQLite's oldest limit of variables
            chunk = wanted[start:start + 500]
            marks = ", ".join("?" * len(chunk))
            rows = await self._rows(f"SELECT id FROM artifacts WHERE id IN ({marks})",  # noqa: S608
                                    chunk)
            found.update(row[0] for row in rows)
        return found

    async def artifacts_of(self, execution_id: str) -> list[tuple[ArtifactRow, list[str]]]:
        rows = await self._rows(
            "SELECT a.id, a.name, a.media_type, a.size, a.sha256, a.created_at, a.execution_id, "
            "group_concat(u.role), min(u.created_at) AS first FROM artifact_uses u "
            "JOIN artifacts a ON a.id = u.artifact_id WHERE u.execution_id = ? "
            "GROUP BY a.id ORDER BY first, a.id", (execution_id,))
        return [(ArtifactRow(*row[:7]), in_role_order(row[7].split(","))) for row in rows]

    async def add_artifact(self, row: ArtifactRow, role: Role | None = None) -> None:
        uses = [(row.execution_id, row.artifact_id, role, row.created_at)] \
            if role is not None and row.execution_id is not None else []
        await self.commit(Write(statements=[(
            f"INSERT INTO artifacts ({ARTIFACT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",  # noqa: S608
            (row.artifact_id, row.name, row.media_type, row.size, row.sha256, row.created_at,
             row.execution_id))], artifact_uses=uses))

    async def sweep_artifacts(self, cutoff: str, limit: int = 500) -> list[str]:
        rows = await self._rows(
            "SELECT id, sha256 FROM artifacts a WHERE created_at < ? AND NOT EXISTS "
            "(SELECT 1 FROM artifact_uses u WHERE u.artifact_id = a.id AND EXISTS "
            "(SELECT 1 FROM executions e WHERE e.id = u.execution_id)) LIMIT ?",
            (cutoff, limit))
        dangling = await self._rows(
            "SELECT 1 FROM artifact_uses u WHERE NOT EXISTS "
            "(SELECT 1 FROM executions e WHERE e.id = u.execution_id) LIMIT 1")
        if not rows and not dangling:
            return []  # nothing to do: no write
        statements: list[Statement] = [(
            "DELETE FROM artifact_uses WHERE NOT EXISTS "
            "(SELECT 1 FROM executions e WHERE e.id = artifact_uses.execution_id)", ())]
        # Checked again inside the transaction: a use committed since the read keeps it.
        statements.extend((
            "DELETE FROM artifacts WHERE id = ? AND NOT EXISTS "
            "(SELECT 1 FROM artifact_uses u WHERE u.artifact_id = artifacts.id)", (row[0],))
            for row in rows)
        await self.commit(Write(statements=statements))
        return sorted({row[1] for row in rows})
