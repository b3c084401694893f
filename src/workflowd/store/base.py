"""The store interface: what the engine and the API call, whichever store holds the data.

Two implementations: `SQLiteStore` (one file, one node) and `PostgresStore` (a server that
several nodes share). Both keep the same tables and the same promises: a `Write` commits in
one transaction with whatever else was queued with it (group commit), its future resolves once
it is durable, a write the store refuses fails with `StoreUnavailableError` (503) and changes
nothing, and a later write of the same execution built on a refused one fails with
`StaleWriteError`, so that an execution's events never get a gap.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from workflowd.records import ExecutionRecord, IdempotencyRecord, StepRecord

if TYPE_CHECKING:
    from collections.abc import Iterable

    from workflowd.store.artifacts import ArtifactRow, Role
    from workflowd.store.cluster import ClusterStore
    from workflowd.store.definitions import DefinitionHead, StoredVersion
    from workflowd.store.writer import Delivery, Write

__all__ = ["ExecutionFilter", "Store", "WriterFigures"]


@dataclass(frozen=True, slots=True)
class ExecutionFilter:
    workflow_id: str | None = None
    status: str | None = None
    labels: tuple[tuple[str, str], ...] = ()
    created_after: str | None = None
    created_before: str | None = None
    before_num: int | None = None
    limit: int = 50


class WriterFigures(Protocol):
    """What the metrics read of a store's writer."""

    commits: int
    writes: int
    rows: int
    failures: int
    commit_seconds: float
    unavailable: str | None


class Store(abc.ABC):
    """The only code that speaks SQL, behind one interface."""

    #: The writer's counters (commits, writes, ...), for metrics.
    writer: WriterFigures
    #: Where the data is, fit for a log line (never a password).
    where: str = ""
    #: Leases, nodes, notifications: only a store that several nodes share has them.
    cluster: ClusterStore | None = None

    def __init__(self) -> None:
        # Called with the ids of deleted executions once the delete is committed, so that
        # whoever keeps copies (the ledger's recently finished records) drops them.
        self.on_deleted: list[Callable[[Sequence[str]], None]] = []
        # Called with how many of each `(workflow_id, status)` a delete removed (metrics).
        self.on_deleted_counts: list[Callable[[dict[tuple[str, str], int]], None]] = []

    @abc.abstractmethod
    async def close(self) -> None:
        """Commit what is queued, then close; safe to call twice."""

    # ---- writes ---------------------------------------------------------------------------

    @abc.abstractmethod
    def write(self, write: Write) -> asyncio.Future[None]:
        """Queue a write; the future resolves once it is durable."""

    async def commit(self, write: Write) -> None:
        """Queue a write and wait until it is durable."""
        await self.write(write)

    # ---- reads ----------------------------------------------------------------------------

    @abc.abstractmethod
    async def get_execution(self, execution_id: str) -> ExecutionRecord | None: ...

    @abc.abstractmethod
    async def unfinished(self) -> list[ExecutionRecord]:
        """Every execution not yet terminal, in order of arrival."""

    @abc.abstractmethod
    async def list_executions(self, f: ExecutionFilter,
                              ) -> tuple[list[ExecutionRecord], int | None]:
        """Newest first; answers the page and the `num` to continue below (None at the end)."""

    @abc.abstractmethod
    async def steps(self, execution_id: str) -> list[StepRecord]: ...

    @abc.abstractmethod
    async def step_at(self, execution_id: str, cycle: int) -> StepRecord | None: ...

    @abc.abstractmethod
    async def events(self, execution_id: str, after: int = 0, limit: int = 1000) -> list[str]:
        """Events as stored JSON text, in `seq` order."""

    @abc.abstractmethod
    async def event_rows(self, execution_id: str, after: int,
                         limit: int) -> list[tuple[int, str]]:
        """`(seq, event JSON)` after `after`, in `seq` order."""

    @abc.abstractmethod
    async def logs(self, execution_id: str, after: int = 0,
                   limit: int = 1000) -> list[tuple[int, str]]: ...

    @abc.abstractmethod
    async def idempotency(self, scope: str, key: str) -> IdempotencyRecord | None: ...

    @abc.abstractmethod
    async def due_deliveries(self, now: str, limit: int) -> list[tuple[int, Delivery, int]]:
        """Pending deliveries due by `now`: `(id, delivery, attempts so far)`, oldest first."""

    @abc.abstractmethod
    async def delivery_outcome(self, delivery_id: int, *, delivered: bool, attempts: int,
                               next_at: str | None, error: str | None) -> None:
        """Record an attempt: delivered rows go; others wait until `next_at`, or fail for good
        when `next_at` is None."""

    @abc.abstractmethod
    async def count_by_workflow_status(self, ids: Sequence[str] | None = None,
                                       ) -> dict[tuple[str, str], int]:
        """Executions by `(workflow_id, status)`: all of them, or those of `ids`."""

    @abc.abstractmethod
    async def pending_deliveries(self) -> int:
        """Outbox deliveries not yet sent (nor given up)."""

    @abc.abstractmethod
    async def finished_before(self, cutoff: str, limit: int = 500) -> list[str]: ...

    @abc.abstractmethod
    async def delete_executions(self, ids: Sequence[str], idempotency_before: str) -> None:
        """Remove executions with everything they own, and idempotency answers past the cutoff;
        then tell `on_deleted`."""

    def _deleted(self, ids: Sequence[str],
                 counts: dict[tuple[str, str], int] | None = None) -> None:
        for forget in self.on_deleted:
            forget(ids)
        for tell in self.on_deleted_counts:
            tell(counts or {})

    # ---- workflows defined as data (rows in store/definitions.py) -------------------------

    @abc.abstractmethod
    async def definition_head(self, workflow_id: str) -> DefinitionHead | None: ...

    @abc.abstractmethod
    async def definition_version(self, workflow_id: str, version: int,
                                 ) -> StoredVersion | None: ...

    @abc.abstractmethod
    async def definition_versions(self, workflow_id: str) -> list[StoredVersion]:
        """Every version of one workflow, oldest first (a deleted one's too)."""

    @abc.abstractmethod
    async def current_definitions(self) -> list[StoredVersion]:
        """The latest version of every JSON workflow not deleted, by id."""

    @abc.abstractmethod
    async def definition_ids(self) -> list[str]:
        """Every workflow id ever defined as JSON, deleted ones too (their executions run to
        their end), by id."""

    @abc.abstractmethod
    async def add_definition_version(self, workflow_id: str, version: int, doc: str,
                                     now: str) -> None:
        """Store `version` as the latest (undeleting the id). Two nodes storing the same
        version at once: the second gets `WorkflowConflictError` (409)."""

    @abc.abstractmethod
    async def delete_definition(self, workflow_id: str, now: str) -> None: ...

    # ---- artifacts (rows in store/artifacts.py) --------------------------------------------

    @abc.abstractmethod
    async def artifact(self, artifact_id: str) -> ArtifactRow | None: ...

    @abc.abstractmethod
    async def existing_artifacts(self, ids: Iterable[str]) -> set[str]:
        """Which of `ids` name an artifact."""

    @abc.abstractmethod
    async def artifacts_of(self, execution_id: str) -> list[tuple[ArtifactRow, list[str]]]:
        """What an execution named, read and saved, in order of first use, with how."""

    @abc.abstractmethod
    async def add_artifact(self, row: ArtifactRow, role: Role | None = None) -> None:
        """The row of bytes already in place; with `role`, its use by `row.execution_id`."""

    @abc.abstractmethod
    async def note_artifact_use(self, execution_id: str, artifact_id: str, role: Role,
                                now: str) -> None:
        """Record a use on its own (a step read an artifact). A use that must commit with an
        execution's write goes in that write (`Write.artifact_uses`)."""

    @abc.abstractmethod
    async def sweep_artifacts(self, cutoff: str, limit: int = 500) -> list[str]:
        """Forget the uses of executions that are gone, then delete up to `limit` artifacts
        no execution uses that were made before `cutoff` (checked again in the deleting
        transaction: a use committed meanwhile keeps its artifact); answer the sha256s of
        what it deleted (SQLite: of every candidate), whose files may go once
        `sha256_in_use` says that no row names them."""

    @abc.abstractmethod
    async def sha256_in_use(self, sha256: str) -> bool:
        """Whether any artifact row names these bytes."""
