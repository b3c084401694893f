"""The rows of artifacts (API.md §12), as both stores answer them. The bytes are files,
content-addressed by sha256 (`engine/artifacts.py`); these rows name them.

Tables (migration 6 of `schema.py` and of `pgschema.py`, the same columns in each):
- `artifacts`: one row per upload or save (its own id and name; many rows may share bytes).
- `artifact_uses`: which execution used which artifact, and how (`input`: named in its input,
  `read`: opened by a step, `output`: saved by a step). Retention deletes an artifact once no
  execution uses it (and it is older than `[retention] finished_after`).

The SQL is the store's own: `rows.SQLiteRows` (SQLite) and `pgrows.PgRows` (PostgreSQL). A use
that commits with another write (a submit's input) travels as `Write.artifact_uses`, which
each store's writer inserts in that write's transaction.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["ArtifactRow", "ArtifactUse", "Role", "in_role_order"]

Role = Literal["input", "read", "output"]
# (execution_id, artifact_id, role, created_at): a use of an artifact that is gone by the
# time it commits records nothing.
ArtifactUse = tuple[str, str, Role, str]

_ROLE_ORDER = {"input": 0, "read": 1, "output": 2}


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


def in_role_order(roles: Iterable[str]) -> list[str]:
    """An artifact's roles in one execution, each once: input, read, output."""
    return sorted(set(roles), key=_ROLE_ORDER.__getitem__)
