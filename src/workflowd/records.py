"""The engine's records: plain, immutable, typed data (msgspec structs).

An execution's record changes only by being replaced: `msgspec.structs.replace(rec, ...)` makes
the next one, and only the transitions (`engine.transitions`) do that. Nothing in a record is
shared with user code: what a step leaves is copied in (`codec.json_copy`), and what a step
reads is a copy or a read-only view. So a record can be encoded on the loop and handed to the
writer's thread as bytes, and kept in memory while followers read it.

`gc=False`: the records hold only JSON values (trees, never cycles), so the cyclic garbage
collector need not track the thousands of them in memory.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

from workflowd.codec import decoder

__all__ = [
    "API_PREFIX",
    "TERMINAL",
    "TERMINAL_EVENTS",
    "Approval",
    "CurrentStep",
    "Decision",
    "ErrorInfo",
    "Event",
    "ExecutionRecord",
    "ExecutionStatus",
    "IdempotencyRecord",
    "Progress",
    "StepRecord",
    "StepStatus",
    "Wait",
    "decode_execution",
    "decode_step",
    "event_type",
    "wakes_at",
]

API_PREFIX = "/api/v1"

ExecutionStatus = Literal[
    "queued", "running", "awaiting_approval", "paused", "completed", "failed", "cancelled",
    "timed_out", "rejected",
]
StepStatus = Literal["pending", "running", "waiting", "completed", "failed", "skipped"]
TERMINAL: frozenset[str] = frozenset({"completed", "failed", "cancelled", "timed_out", "rejected"})
TERMINAL_EVENTS: frozenset[str] = frozenset(f"workflow_{status}" for status in TERMINAL)


class ErrorInfo(msgspec.Struct, frozen=True, gc=False):
    code: str
    message: str


class Approval(msgspec.Struct, frozen=True, gc=False):
    required: bool = True
    status: Literal["pending", "approved", "rejected"] = "pending"
    decided_by: str | None = None
    decided_at: str | None = None
    comment: str | None = None


class CurrentStep(msgspec.Struct, frozen=True, gc=False):
    name: str
    kind: str
    index: int
    started_at: str


class Progress(msgspec.Struct, frozen=True, gc=False):
    percentage: float = 0.0
    completed_steps: int = 0
    total_steps: int = 0
    message: str | None = None


class Decision(msgspec.Struct, frozen=True, gc=False):
    outcome: Any
    cycle: int
    timestamp: str


class Wait(msgspec.Struct, frozen=True, gc=False):
    """What an execution that holds no task waits for: a decision at an approval, an outside
    worker, or a moment; `deadline` is when the wait itself runs out (the workflow's own
    `deadline` bounds every wait too)."""

    kind: Literal["approval", "external", "sleep"]
    deadline: str | None = None
    token: str | None = None  # the external worker's, for this run of the step


class StepRecord(msgspec.Struct, frozen=True, gc=False):
    step_id: str | None = None
    name: str = ""
    kind: str = "data_processing"
    agent_name: str | None = None
    tool_name: str | None = None
    status: StepStatus = "pending"
    cycle: int | None = None
    attempt: int | None = None
    started_at: str | None = None
    completed_at: str | None = None
    duration_ms: int | None = None
    error: ErrorInfo | None = None
    progress: float | None = None
    output: Any = None
    metadata: dict[str, Any] = msgspec.field(default_factory=dict)


class ExecutionRecord(msgspec.Struct, frozen=True, gc=False):
    """Everything known of one execution; committed whole with every change."""

    execution_id: str
    workflow_id: str
    workflow_version: int
    status: ExecutionStatus
    input: dict[str, Any]
    created_at: str
    updated_at: str
    max_cycles: int
    progress: Progress
    state: dict[str, Any] = msgspec.field(default_factory=dict)
    result: Any = None
    error: ErrorInfo | None = None
    cycle: int = 0
    priority: int = 0
    labels: dict[str, str] = msgspec.field(default_factory=dict)
    current_step: CurrentStep | None = None
    approval: Approval | None = None
    started_at: str | None = None
    finished_at: str | None = None
    submitted_by: str = "anonymous"
    # Bookkeeping the engine needs to resume; stored, never shown as such.
    seq: int = 0
    next_step: str | None = None
    decisions: dict[str, Decision] = msgspec.field(default_factory=dict)
    done_steps: tuple[str, ...] = ()
    deadline: str | None = None  # the workflow's `timeout`, from the first start
    step: StepRecord | None = None  # the record of the step running or waited on
    wait: Wait | None = None
    callback_url: str | None = None
    # Manual mode and pause (API.md §12): `mode` as submitted ("manual" runs one step per
    # `step` call); `pause_at` is the committed cycle after which the runner stops `paused`
    # before the next step (None: it runs on); `woke` tells a step run again after its own
    # `ctx.sleep` that it was woken.
    mode: Literal["auto", "manual"] = "auto"
    pause_at: int | None = None
    woke: bool = False
    # Where the workflow's definition comes from: a Python module (its `version=`) or the
    # store (JSON, every version kept; the execution runs on `workflow_version` of it).
    source: Literal["python", "json"] = "python"

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL


class Event(msgspec.Struct, frozen=True, gc=False):
    """One committed change; `json` is the whole event, encoded once when it is made."""

    execution_id: str
    seq: int
    type: str
    json: bytes
    workflow_id: str = ""  # for filtering streams; not part of the event's JSON

    @property
    def is_terminal(self) -> bool:
        return self.type in TERMINAL_EVENTS


class IdempotencyRecord(msgspec.Struct, frozen=True, gc=False):
    """The first answer to a request made with an `Idempotency-Key`, replayed to repeats."""

    scope: str
    key: str
    fingerprint: str
    status: int
    body: str
    location: str | None = None


decode_execution = decoder(ExecutionRecord).decode
decode_step = decoder(StepRecord).decode


class _Typed(msgspec.Struct):
    type: str


_decode_typed = msgspec.json.Decoder(_Typed).decode


def event_type(doc: str | bytes) -> str:
    """The `type` of a stored event's JSON, decoding nothing else of it."""
    return _decode_typed(doc).type


def wakes_at(rec: ExecutionRecord) -> str | None:
    """When an execution that holds no task is due for its timer: its wait's deadline or the
    workflow's, whichever is first; a paused one's, the workflow's. (PostgreSQL keeps it in a
    column: the leader times out or wakes what no node holds.)"""
    if rec.wait is not None:
        due = [ts for ts in (rec.wait.deadline, rec.deadline) if ts is not None]
        return min(due) if due else None
    if rec.status == "paused":
        return rec.deadline
    return None
