"""The catalog: every workflow definition the service runs, Python and JSON, by version.

Python workflows are the ones loaded from `[workflows] modules` at start (one version each:
the module's). JSON ones live in the store, every version kept, so any node sees them and an
execution runs on the version it started with, across restarts and later versions; their
compiled `Workflow`s are kept in memory once used. The current version of a JSON workflow is
read from the store at each lookup, so a version stored on another node is the one a submit
here starts. What a node claims in a cluster (`runnable`) is the Python ids and the JSON ids
read from the store at most a poll ago, so a workflow defined on another node is claimed here
too; one defined or looked up here is known at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import structlog

from workflowd.clock import utcnow
from workflowd.codec import dumps, loads
from workflowd.definitions import Workflow
from workflowd.errors import DefinitionError, UnknownWorkflowError, WorkflowConflictError
from workflowd.flows import DefinitionBody
from workflowd.records import ExecutionRecord
from workflowd.store import Store

__all__ = ["Catalog", "Compile", "Defined"]

log = structlog.get_logger("workflowd.catalog")

# A stored definition (its JSON, parsed) and its version -> the workflow that runs it.
Compile = Callable[[DefinitionBody, int], Workflow]


@dataclass(frozen=True, slots=True)
class Defined:
    """One stored version of a JSON workflow: its definition, compiled, and when."""

    workflow: Workflow
    definition: dict[str, object]
    created_at: str
    latest: bool = True


class Catalog:
    def __init__(self, python: dict[str, Workflow], store: Store, compile: Compile) -> None:
        self.python = python
        self.store = store
        self._compile = compile
        self._versions: dict[tuple[str, int], Defined] = {}
        self._lock = asyncio.Lock()  # one definition change at a time on this node
        self._json_ids: set[str] = set()  # every JSON workflow id known here
        self._ids_read = -float("inf")  # when they were last read from the store (monotonic)

    # ---- lookups ---------------------------------------------------------------------------

    def resolve(self, rec: ExecutionRecord) -> Workflow | None:
        """The definition `rec` runs on, if it is in memory (JSON: its own version)."""
        if rec.source == "json":
            kept = self._versions.get((rec.workflow_id, rec.workflow_version))
            return kept.workflow if kept is not None else None
        return self.python.get(rec.workflow_id)

    async def for_record(self, rec: ExecutionRecord) -> Workflow | None:
        """Like `resolve`, loading a JSON version from the store when needed."""
        if rec.source != "json":
            return self.python.get(rec.workflow_id)
        defined = await self.version(rec.workflow_id, rec.workflow_version)  # memory first
        return defined.workflow if defined is not None else None

    async def preload(self, records: Iterable[ExecutionRecord]) -> None:
        """Load the JSON versions these executions run on (recovery and claims do, before
        they own them: an owner is made without waiting). A version that does not load (its
        stored JSON no longer validates) is logged and left out: its executions are held, as
        for a Python workflow not loaded."""
        wanted = {(r.workflow_id, r.workflow_version) for r in records if r.source == "json"}
        for workflow_id, version in sorted(wanted - self._versions.keys()):
            try:
                await self.version(workflow_id, version)
            except (DefinitionError, ValueError) as exc:  # not the store's errors: those raise
                log.warning("workflow_version_not_loaded", workflow_id=workflow_id,
                            version=version, error=str(exc))

    async def runnable(self, max_age: float) -> list[str]:
        """The ids of the workflows this node can run, for its claims in a cluster: the
        Python ones, and every one defined as JSON (deleted ones too: their executions run to
        their end), read from the store again once the last read is `max_age` seconds old."""
        now = time.monotonic()
        if now - self._ids_read >= max_age:
            self._json_ids.update(await self.store.definition_ids())
            self._ids_read = now
        return sorted(self.python.keys() | self._json_ids)

    async def version(self, workflow_id: str, version: int) -> Defined | None:
        """One stored version of a JSON workflow (deleted ones too)."""
        kept = self._versions.get((workflow_id, version))
        if kept is not None:
            return kept
        row = await self.store.definition_version(workflow_id, version)
        if row is None:
            return None
        return self._keep(row.doc, version, row.created_at)

    async def current(self, workflow_id: str) -> Workflow | None:
        """What a new execution of `workflow_id` starts on: the Python workflow, else the
        latest version of the JSON one (None when there is neither, or it was deleted)."""
        wf = self.python.get(workflow_id)
        if wf is not None:
            return wf
        defined = await self.current_json(workflow_id)
        return defined.workflow if defined is not None else None

    async def current_json(self, workflow_id: str) -> Defined | None:
        head = await self.store.definition_head(workflow_id)
        if head is None or head.deleted_at is not None:
            return None
        return await self.version(workflow_id, head.latest)

    async def listing(self) -> list[Defined]:
        """The current version of every JSON workflow (not those a Python one shadows)."""
        out = []
        for row in await self.store.current_definitions():
            if row.workflow_id in self.python:
                continue
            kept = self._versions.get((row.workflow_id, row.version))
            out.append(kept or self._keep(row.doc, row.version, row.created_at))
        return out

    async def versions(self, workflow_id: str) -> list[Defined]:
        """Every version of a JSON workflow, oldest first; 404 when deleted or unknown."""
        head = await self.store.definition_head(workflow_id)
        if head is None or head.deleted_at is not None:
            raise UnknownWorkflowError(f"no workflow with id {workflow_id!r}")
        out = []
        for row in await self.store.definition_versions(workflow_id):
            kept = self._versions.get((workflow_id, row.version)) \
                or self._keep(row.doc, row.version, row.created_at)
            out.append(Defined(kept.workflow, kept.definition, kept.created_at,
                               latest=row.version == head.latest))
        return out

    # ---- changes ---------------------------------------------------------------------------

    async def define(self, body: DefinitionBody, *, replace: bool) -> Defined:
        """Store a checked definition: version 1 of a new id (`replace=False`, POST; an id
        deleted before goes on from its last version), or the next version of an existing
        one (`replace=True`, PUT). 409 for a Python workflow's id, or a POST of an id in use;
        404 for a PUT of an id that is not defined."""
        workflow_id = body.id
        assert workflow_id is not None
        if workflow_id in self.python:
            raise WorkflowConflictError(f"workflow {workflow_id!r} is defined in Python; it "
                                        "cannot be replaced over the API")
        doc = body.model_dump(mode="json", by_alias=True)
        async with self._lock:
            head = await self.store.definition_head(workflow_id)
            live = head is not None and head.deleted_at is None
            if replace and not live:
                raise UnknownWorkflowError(f"no workflow with id {workflow_id!r} (POST "
                                           "/api/v1/workflows defines a new one)")
            if not replace and live:
                raise WorkflowConflictError(f"workflow {workflow_id!r} exists; PUT "
                                            f"/api/v1/workflows/{workflow_id} stores a new version")
            version = head.latest + 1 if head is not None else 1
            text = dumps(doc)
            now = utcnow()
            defined = self._keep(text, version, now)  # compiles: nothing stored if it fails
            await self.store.add_definition_version(workflow_id, version, text, now)
        log.info("workflow_defined", workflow_id=workflow_id, version=version)
        return defined

    async def delete(self, workflow_id: str) -> None:
        """Remove a JSON workflow from the list and from new submits; its executions run on."""
        if workflow_id in self.python:
            raise WorkflowConflictError(f"workflow {workflow_id!r} is defined in Python; it "
                                        "cannot be deleted over the API")
        async with self._lock:
            head = await self.store.definition_head(workflow_id)
            if head is None or head.deleted_at is not None:
                raise UnknownWorkflowError(f"no workflow with id {workflow_id!r}")
            await self.store.delete_definition(workflow_id, utcnow())
        log.info("workflow_deleted", workflow_id=workflow_id, version=head.latest)

    def _keep(self, text: str, version: int, created_at: str) -> Defined:
        definition = loads(text)
        body = DefinitionBody.model_validate(definition)
        assert body.id is not None
        defined = Defined(self._compile(body, version), definition, created_at)
        self._versions[(body.id, version)] = defined
        self._json_ids.add(body.id)
        return defined
