"""Versions that survive deploys (API.md §11): whether an execution can go on under the
definition loaded now, which may be a later version than the one it started on."""

from __future__ import annotations

from workflowd.definitions import Workflow
from workflowd.records import ErrorInfo, ExecutionRecord

__all__ = ["version_mismatch"]


def version_mismatch(rec: ExecutionRecord, wf: Workflow) -> ErrorInfo | None:
    """Why `rec` cannot go on under `wf` (the definition loaded now), or None when it can: the
    step it is in (waited on, or cut off) and the step it goes to next must exist, of the
    same nature (a gate stays a gate, an outside worker's step stays one, a sleep a sleep)."""
    needed: list[tuple[str, str | None]] = []
    if rec.step is not None and not rec.is_terminal:
        # A step waited on must still be waited on the same way; a step cut off by a crash
        # runs again, so it only has to exist.
        needed.append((rec.step.name, rec.wait.kind if rec.wait is not None else None))
    if rec.next_step is not None:
        needed.append((rec.next_step, None))
    for name, nature in needed:
        step = wf.get_step(name)
        if step is None:
            return ErrorInfo(code="workflow_version_mismatch", message=(
                f"execution started on version {rec.workflow_version} of {wf.id!r}; the "
                f"version loaded now ({wf.version}) has no step {name!r}, which it needs"))
        have = "approval" if step.is_gate else "external" if step.external \
            else "sleep" if step.sleep is not None else None
        if nature is not None and nature != have:
            return ErrorInfo(code="workflow_version_mismatch", message=(
                f"execution started on version {rec.workflow_version} of {wf.id!r} waits at "
                f"step {name!r} ({nature}); in the version loaded now ({wf.version}) that "
                "step is of another kind"))
    return None

