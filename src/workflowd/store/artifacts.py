"""The store's rows of artifacts (API.md §12): kept apart from the core's so that another store
(PostgreSQL) ports them as one piece. The bytes are files, content-addressed by sha256
(`engine/artifacts.py`); these rows name them.

Tables (migration 6, `schema.py`):
- `artifacts`: one row per upload or save (its own id and name; many rows may share bytes).
- `artifact_uses`: which execution used which artifact, and how (`input`: named in its input,
  `read`: opened by a step, `output`: saved by a step). Retention deletes an artifact once no
  execution uses it (and it is older than `[retention] finished_after`).

`ArtifactRows` is mixed into `Store`; it needs only `_rows` (a read) and `commit` (a write
through the single writer).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from workflowd.store.writer import Write

__all__ = ["ARTIFACTS_SCHEMA", "ArtifactRow", "ArtifactRows", "Role"]

Role = Literal["input", "read", "output"]
Statement = tuple[str, tuple[Any, ...]]

ARTIFACTS_SCHEMA = """
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
"""

_COLUMNS = "id, name, media_type, size, sha256, created_at, execution_id"


@dataclass(frozen=True, slots=True)
class ArtifactRow:
    artifact_id: str
    name: str
    media_type: str
    size: int
    sha256: str
    created_at: str
    execution_id: str | None = None  # the execution whose step saved it (None: uploaded)

    def view(self) -> dict[str, Any]:
        return {"artifact_id": self.artifact_id, "name": self.name,
                "media_type": self.media_type, "size": self.size, "sha256": self.sha256,
                "created_at": self.created_at}


class ArtifactRows:
    """Reads and writes of artifact rows (a mixin of `Store`)."""

    if TYPE_CHECKING:  # given by the store this is mixed into
        async def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]: ...

        async def commit(self, write: Write) -> None: ...

    async def artifact(self, artifact_id: str) -> ArtifactRow | None:
        rows = await self._rows(f"SELECT {_COLUMNS} FROM artifacts WHERE id = ?",  # noqa: S608
                                (artifact_id,))
        return ArtifactRow(*rows[0]) if rows else None

    async def existing_artifacts(self, ids: Iterable[str]) -> set[str]:
        wanted = sorted(set(ids))
        found: set[str] = set()
        for start in range(0, len(wanted), 500):
            chunk = wanted[start:start + 500]
            marks = ", ".join("?" * len(chunk))
            rows = await self._rows(f"SELECT id FROM artifacts WHERE id IN ({marks})",  # noqa: S608
                                    chunk)
            found.update(row[0] for row in rows)
        return found

    async def artifacts_of(self, execution_id: str) -> list[tuple[ArtifactRow, list[str]]]:
        """What an execution named, read and saved, in order of first use, with how."""
        rows = await self._rows(
            "SELECT a.id, a.name, a.media_type, a.size, a.sha256, a.created_at, a.execution_id, "
            "group_concat(u.role), min(u.created_at) AS first FROM artifact_uses u "
            "JOIN artifacts a ON a.id = u.artifact_id WHERE u.execution_id = ? "
            "GROUP BY a.id ORDER BY first, a.id", (execution_id,))
        order = {"input": 0, "read": 1, "output": 2}
        return [(ArtifactRow(*row[:7]), sorted(set(row[7].split(",")), key=order.__getitem__))
                for row in rows]

    async def add_artifact(self, row: ArtifactRow, role: Role | None = None) -> None:
        """The row of bytes already in place; with `role`, its use by `row.execution_id`."""
        statements: list[Statement] = [(
            f"INSERT INTO artifacts ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",  # noqa: S608
            (row.artifact_id, row.name, row.media_type, row.size, row.sha256, row.created_at,
             row.execution_id))]
        if role is not None and row.execution_id is not None:
            statements.extend(self.artifact_use_statements(row.execution_id,
                                                           [row.artifact_id], role,
                                                           row.created_at))
        await self.commit(Write(statements=statements))

    def artifact_use_statements(self, execution_id: str, ids: Iterable[str], role: Role,
                                now: str) -> list[Statement]:
        """Statements recording uses, to commit with another write (a submit's). A use of an
        artifact that is gone meanwhile records nothing."""
        return [("INSERT OR IGNORE INTO artifact_uses (execution_id, artifact_id, role, "
                 "created_at) SELECT ?, id, ?, ? FROM artifacts WHERE id = ?",
                 (execution_id, role, now, artifact_id)) for artifact_id in sorted(set(ids))]

    async def note_artifact_use(self, execution_id: str, artifact_id: str, role: Role,
                                now: str) -> None:
        await self.commit(Write(statements=self.artifact_use_statements(
            execution_id, [artifact_id], role, now)))

    async def sweep_artifacts(self, cutoff: str, limit: int = 500) -> list[str]:
        """Forget the uses of executions that are gone, then delete up to `limit` artifacts
        no execution uses that were made before `cutoff`; answer their sha256s (whose files
        may go once no row names them)."""
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

    async def sha256_in_use(self, sha256: str) -> bool:
        rows = await self._rows("SELECT 1 FROM artifacts WHERE sha256 = ? LIMIT 1", (sha256,))
        return bool(rows)
