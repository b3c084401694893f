"""Checks of a request against an execution's record, made before any change: they raise the
project's error (403, 409, 422) and change nothing. The transitions call those they need; the
scheduler and the cluster call them first where a check must come before another (four eyes
before a full queue's 429)."""

from __future__ import annotations

import hmac
from typing import Any

from workflowd.codec import NotJSON, json_copy
from workflowd.errors import ForbiddenError, InvalidTransitionError, ValidationProblem
from workflowd.records import ExecutionRecord, StepRecord

__all__ = ["check_approver", "external_step", "worker_output"]


def check_approver(rec: ExecutionRecord, decided_by: str, four_eyes: bool) -> None:
    """`[auth] four_eyes`: the subject that submitted an execution may not approve it (403)."""
    if four_eyes and rec.submitted_by == decided_by:
        raise ForbiddenError(f"{decided_by!r} submitted execution {rec.execution_id} and may "
                             "not approve it too ([auth] four_eyes)")


def worker_output(output: Any) -> Any:
    """A worker's output, copied as plain JSON (owned by the engine from now on); 422 for a
    value that is not JSON."""
    try:
        return json_copy(output)
    except NotJSON as exc:  # pragma: no cover - a parsed JSON body is JSON
        raise ValidationProblem(str(exc), []) from None


def external_step(rec: ExecutionRecord, step: str, token: str,
                  trusted: bool = False) -> StepRecord:
    """The record of `step` if the execution waits for its worker and `token` is this run's
    (`trusted`: the caller proved a role that may report for any step; no token needed)."""
    wait = rec.wait
    record = rec.step
    if wait is None or wait.kind != "external" or record is None or record.name != step:
        raise InvalidTransitionError(f"step {step!r} of {rec.execution_id} is not waiting")
    if trusted:
        return record
    if not token or not hmac.compare_digest(token.encode(), (wait.token or "").encode()):
        raise ForbiddenError("wrong or stale token for this step run")
    return record
