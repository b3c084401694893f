"""The store's rows of workflows defined as data (API.md §11): kept apart from the core's so
that another store (PostgreSQL) ports them as one piece.

Tables (migration 5, `schema.py`):
- `workflow_definitions`: one row per JSON workflow id: its latest version, and `deleted_at`
  once deleted (its versions stay: executions that started on them run to their end).
- `workflow_versions`: every version's definition (normalized JSON), never changed.

`DefinitionRows` is mixed into `Store`; it needs only `_rows` (a read) and `commit` (a write
through the single writer).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from workflowd.errors import WorkflowConflictError
from workflowd.store.writer import Write

__all__ = ["DEFINITIONS_SCHEMA", "DefinitionHead", "DefinitionRows", "StoredVersion"]

DEFINITIONS_SCHEMA = """
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
"""


@dataclass(frozen=True, slots=True)
class DefinitionHead:
    workflow_id: str
    latest: int
    created_at: str
    updated_at: str
    deleted_at: str | None


@dataclass(frozen=True, slots=True)
class StoredVersion:
    workflow_id: str
    version: int
    doc: str  # the definition's JSON
    created_at: str


class DefinitionRows:
    """Reads and writes of stored definitions (a mixin of `Store`)."""

    if TYPE_CHECKING:  # given by the store this is mixed into
        async def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]: ...

        async def commit(self, write: Write) -> None: ...

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
        """The latest version of every JSON workflow not deleted, by id."""
        rows = await self._rows(
            "SELECT v.workflow_id, v.version, v.doc, v.created_at FROM workflow_definitions d "
            "JOIN workflow_versions v ON v.workflow_id = d.workflow_id AND v.version = d.latest "
            "WHERE d.deleted_at IS NULL ORDER BY d.workflow_id")
        return [StoredVersion(*row) for row in rows]

    async def add_definition_version(self, workflow_id: str, version: int, doc: str,
                                     now: str) -> None:
        """Store `version` as the latest (undeleting the id). Two nodes storing the same
        version at once: the second gets `WorkflowConflictError` (409)."""
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
        except sqlite3.IntegrityError:
            raise WorkflowConflictError(
                f"version {version} of workflow {workflow_id!r} was stored meanwhile; "
                "try again") from None

    async def delete_definition(self, workflow_id: str, now: str) -> None:
        await self.commit(Write(statements=[(
            "UPDATE workflow_definitions SET deleted_at = ?, updated_at = ? "
            "WHERE workflow_id = ?", (now, now, workflow_id))]))
