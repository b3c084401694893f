"""The rows of workflows defined as data (API.md §11), as both stores answer them.

Tables (migration 5 of `schema.py` and of `pgschema.py`, the same columns in each):
- `workflow_definitions`: one row per JSON workflow id: its latest version, and `deleted_at`
  once deleted (its versions stay: executions that started on them run to their end).
- `workflow_versions`: every version's definition (normalized JSON), never changed.

The SQL is the store's own: `rows.SQLiteRows` (SQLite) and `pgrows.PgRows` (PostgreSQL).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DefinitionHead", "StoredVersion"]


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
