"""Views of records, as the API shows them: summaries, the whole execution, live status, the
steps list, the trace and workflows. Plain dicts (records inside encode as JSON objects)."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from workflowd.codec import dumps
from workflowd.definitions import Workflow
from workflowd.records import API_PREFIX, TERMINAL, ExecutionRecord, StepRecord, StepStatus

__all__ = [
    "LiveBodies",
    "execution_view",
    "links",
    "list_item",
    "live_status",
    "steps_view",
    "summary",
    "trace_view",
    "workflow_view",
]


def links(execution_id: str) -> dict[str, str]:
    base = f"{API_PREFIX}/executions/{execution_id}"
    return {"self": base, "live": f"{base}/status/live", "steps": f"{base}/steps",
            "trace": f"{base}/trace", "events": f"{base}/events", "ws": f"{base}/ws",
            "approve": f"{base}/approve", "cancel": f"{base}/cancel"}


def summary(rec: ExecutionRecord) -> dict[str, Any]:
    """The answer to a submit (202/201)."""
    return {"execution_id": rec.execution_id, "workflow_id": rec.workflow_id,
            "status": rec.status, "created_at": rec.created_at,
            "links": links(rec.execution_id)}


def list_item(rec: ExecutionRecord) -> dict[str, Any]:
    item = summary(rec)
    item.update(updated_at=rec.updated_at, finished_at=rec.finished_at, priority=rec.priority,
                labels=rec.labels, submitted_by=rec.submitted_by)
    return item


def execution_view(rec: ExecutionRecord) -> dict[str, Any]:
    """The whole execution, as `GET /executions/{id}` shows it."""
    item = list_item(rec)
    item.update(workflow_version=rec.workflow_version, input=rec.input, state=rec.state,
                result=rec.result, error=rec.error, cycle=rec.cycle, max_cycles=rec.max_cycles,
                current_step=rec.current_step, progress=rec.progress, approval=rec.approval,
                started_at=rec.started_at, mode=rec.mode,
                next_step=None if rec.is_terminal else rec.next_step)
    return item


def live_status(rec: ExecutionRecord) -> dict[str, Any]:
    """The compact status for polling; its flags follow the status (API.md §2)."""
    status = rec.status
    return {
        "execution_id": rec.execution_id, "workflow_id": rec.workflow_id, "status": status,
        "is_processing": status in ("queued", "running"),
        "is_completed": status == "completed",
        "is_failed": status in ("failed", "timed_out"),
        "is_terminal": status in TERMINAL,
        "background_processing": status == "running",
        "awaiting_approval": status == "awaiting_approval",
        "is_paused": status == "paused",
        "cycle": rec.cycle, "max_cycles": rec.max_cycles, "current_step": rec.current_step,
        "progress": rec.progress, "last_update": rec.updated_at, "seq": rec.seq,
    }


class LiveBodies:
    """The live status JSON of each execution at its last `seq`, encoded once for every poller
    (a record's `seq` names its state, as the ETag says). The least recently polled go first
    when it is full, so a load of many executions keeps the ones being polled."""

    def __init__(self, size: int = 25_000) -> None:
        self.size = size
        self._bodies: OrderedDict[str, tuple[int, str]] = OrderedDict()

    def body(self, rec: ExecutionRecord) -> str:
        bodies = self._bodies
        kept = bodies.get(rec.execution_id)
        if kept is not None and kept[0] == rec.seq:
            bodies.move_to_end(rec.execution_id)
            return kept[1]
        body = dumps(live_status(rec))
        bodies[rec.execution_id] = (rec.seq, body)
        bodies.move_to_end(rec.execution_id)
        if len(bodies) > self.size:
            bodies.popitem(last=False)
        return body


def workflow_view(wf: Workflow) -> dict[str, Any]:
    return {
        "id": wf.id,
        "title": wf.title or wf.id,
        "version": wf.version,
        "description": wf.description,
        "max_cycles": wf.max_cycles,
        "source": wf.source,
        "steps": [{"name": s.name, "kind": s.kind, "agent": s.agent, "tool": s.tool}
                  for s in wf.steps],
    }


def steps_view(rec: ExecutionRecord, records: list[StepRecord],
               wf: Workflow | None) -> list[Any]:
    """Records in cycle order, then declared steps never run: pending, or skipped once ended."""
    items: list[Any] = list(records)
    if wf is None:
        return items
    ran = {r.name for r in records}
    status: StepStatus = "skipped" if rec.is_terminal else "pending"
    items.extend(
        StepRecord(name=step.name, kind=step.kind, agent_name=step.agent, tool_name=step.tool,
                   status=status)
        for step in wf.steps if step.name not in ran
    )
    return items


def trace_view(rec: ExecutionRecord, records: list[StepRecord],
               wf: Workflow | None) -> dict[str, Any]:
    return {
        "execution_id": rec.execution_id,
        "workflow_id": rec.workflow_id,
        "execution_path": [r.agent_name or r.name for r in records],
        "branch_decisions": rec.decisions,
        "cycles": [{"cycle": r.cycle, "step": r.name, "status": r.status,
                    "started_at": r.started_at, "completed_at": r.completed_at,
                    "duration_ms": r.duration_ms} for r in records],
        "current_step_index": _current_index(rec, records, wf),
        "total_steps": len(wf.steps) if wf else rec.progress.total_steps,
    }


def _current_index(rec: ExecutionRecord, records: list[StepRecord],
                   wf: Workflow | None) -> int | None:
    if rec.current_step is not None:
        return rec.current_step.index
    if wf is None:
        return None
    name = rec.next_step if not rec.is_terminal else (records[-1].name if records else None)
    step = wf.get_step(name) if name else None
    return step.index if step else None
