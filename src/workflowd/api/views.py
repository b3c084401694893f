"""Views built from stored records: the steps list, the trace, and live status bodies."""

from __future__ import annotations

from typing import Any

from workflowd.definitions import Workflow
from workflowd.models import ExecutionRecord, StepRecord

__all__ = ["LiveBodies", "steps_view", "trace_view", "workflow_view"]


class LiveBodies:
    """The live status JSON of each execution at its last `seq`, encoded once for every poller
    (a record's `seq` names its state, as the ETag says). Bounded: emptied when full."""

    def __init__(self, size: int = 10_000) -> None:
        self.size = size
        self._bodies: dict[str, tuple[int, str]] = {}

    def body(self, rec: ExecutionRecord) -> str:
        kept = self._bodies.get(rec.execution_id)
        if kept is not None and kept[0] == rec.seq:
            return kept[1]
        body = rec.live().model_dump_json()
        if len(self._bodies) >= self.size:
            self._bodies.clear()
        self._bodies[rec.execution_id] = (rec.seq, body)
        return body


def workflow_view(wf: Workflow) -> dict[str, Any]:
    return {
        "id": wf.id,
        "title": wf.title or wf.id,
        "version": wf.version,
        "description": wf.description,
        "max_cycles": wf.max_cycles,
        "steps": [{"name": s.name, "kind": s.kind, "agent": s.agent, "tool": s.tool}
                  for s in wf.steps],
    }


def steps_view(rec: ExecutionRecord, records: list[StepRecord],
               wf: Workflow | None) -> list[dict[str, Any]]:
    """Records in cycle order, then declared steps never run: pending, or skipped once ended."""
    items = [r.model_dump() for r in records]
    if wf is None:
        return items
    ran = {r.name for r in records}
    status = "skipped" if rec.is_terminal else "pending"
    items.extend(
        StepRecord(name=step.name, kind=step.kind, agent_name=step.agent, tool_name=step.tool,
                   status=status).model_dump()
        for step in wf.steps if step.name not in ran
    )
    return items


def trace_view(rec: ExecutionRecord, records: list[StepRecord],
               wf: Workflow | None) -> dict[str, Any]:
    return {
        "execution_id": rec.execution_id,
        "workflow_id": rec.workflow_id,
        "execution_path": [r.agent_name or r.name for r in records],
        "branch_decisions": {name: d.model_dump() for name, d in rec.decisions.items()},
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
