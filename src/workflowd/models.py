"""Pydantic models: request bodies, the stored execution record, and the views clients see."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Self

import pydantic_core
from pydantic import BaseModel, ConfigDict, Field, HttpUrl, field_validator

__all__ = [
    "LABEL_KEY",
    "TERMINAL",
    "Approval",
    "ApproveBody",
    "CompleteBody",
    "CurrentStep",
    "Decision",
    "ErrorInfo",
    "Event",
    "ExecutionRecord",
    "ExecutionStatus",
    "ExternalWait",
    "IdempotencyRecord",
    "LiveStatus",
    "LogLine",
    "Progress",
    "ProgressBody",
    "RejectBody",
    "StepRecord",
    "SubmitBody",
    "dumps",
    "format_ts",
    "json_copy",
    "ms_between",
    "parse_ts",
    "utcnow",
]

ExecutionStatus = Literal[
    "queued", "running", "awaiting_approval", "completed", "failed", "cancelled", "timed_out",
    "rejected",
]
StepStatus = Literal["pending", "running", "waiting", "completed", "failed", "skipped"]
TERMINAL: frozenset[str] = frozenset({"completed", "failed", "cancelled", "timed_out", "rejected"})
TERMINAL_EVENTS: frozenset[str] = frozenset(f"workflow_{status}" for status in TERMINAL)
API_PREFIX = "/api/v1"


def format_ts(moment: datetime) -> str:
    """ISO 8601 UTC with milliseconds and `Z`, the one form every answer uses."""
    # Not strftime("%Y"): glibc writes year 999 as "999", which sorts after "2026" in SQL's
    # text comparisons of `created_at`. isoformat pads to four digits and truncates to ms.
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").removesuffix("+00:00") + "Z"


class _Clock:
    """`utcnow` is called for every event and snapshot; the date part changes once a second, so
    it is formatted once a second and only the milliseconds are added per call."""

    __slots__ = ("cached",)

    def __init__(self) -> None:
        # (second, its formatted prefix), replaced whole so that the writer's thread and the
        # loop never see one without the other.
        self.cached = (-1, "")

    def now(self) -> str:
        moment = time.time()
        second = int(moment)
        cached = self.cached
        if cached[0] != second:
            cached = (second, time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(second)))
            self.cached = cached
        return f"{cached[1]}{int((moment - second) * 1000):03d}Z"


_clock = _Clock()
utcnow = _clock.now


def parse_ts(text: str) -> datetime:
    """Any ISO 8601 timestamp with a zone; a naive one is refused."""
    moment = datetime.fromisoformat(text.strip().replace("z", "Z"))
    if moment.tzinfo is None:
        raise ValueError("timestamp needs a time zone (e.g. 'Z')")
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        # 0001-01-01T00:00+01:00 is a valid timestamp whose UTC instant is before year 1.
        raise ValueError("timestamp is out of range once in UTC") from None


def ms_between(start: str | None, end: str) -> int | None:
    """Milliseconds from one written timestamp to another (None without a start)."""
    if start is None:
        return None
    return int((parse_ts(end) - parse_ts(start)).total_seconds() * 1000)


def dumps(value: Any) -> str:
    """JSON text of any JSON-able value (fast path through pydantic-core)."""
    return pydantic_core.to_json(value).decode()


def json_copy(value: Any) -> Any:
    """A plain-JSON deep copy of `value`; raises for what cannot be stored as JSON."""
    return pydantic_core.from_json(pydantic_core.to_json(value))


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Record(_Model):
    """A record the engine keeps and changes: every copy shares one set of field names.

    Pydantic keeps, per instance, the set of fields given explicitly (read only by
    `exclude_unset` dumps, never used here): about 700 bytes for a record, times the thousands
    of executions in flight. Records share one set naming every field instead.
    """

    def model_post_init(self, context: Any, /) -> None:
        object.__setattr__(self, "__pydantic_fields_set__", _all_fields(type(self)))

    def evolve(self, changes: Mapping[str, Any]) -> Self:
        """A copy with `changes` applied, unvalidated like `model_copy(update=...)`.

        The engine makes one for every change of a record it holds; `model_copy` would also
        copy the set of field names each time (half the time of the copy).
        """
        cls = type(self)
        new = cls.__new__(cls)
        values = self.__dict__.copy()
        values.update(changes)
        object.__setattr__(new, "__dict__", values)
        object.__setattr__(new, "__pydantic_extra__", None)
        object.__setattr__(new, "__pydantic_fields_set__", _all_fields(cls))
        object.__setattr__(new, "__pydantic_private__", None)
        return new


_FIELDS: dict[type[BaseModel], set[str]] = {}


def _all_fields(cls: type[BaseModel]) -> set[str]:
    fields = _FIELDS.get(cls)
    if fields is None:
        fields = _FIELDS[cls] = set(cls.model_fields)
    return fields


# ---- request bodies -----------------------------------------------------------------------

LABEL_KEY = r"^[A-Za-z0-9_.\-/]{1,64}$"


class SubmitBody(_Model):
    input: dict[str, Any] = Field(default_factory=dict)
    priority: int = Field(default=0, ge=-1000, le=1000)
    require_approval: bool = False
    labels: dict[str, str] = Field(default_factory=dict, max_length=32)
    callback_url: HttpUrl | None = None

    @field_validator("labels")
    @classmethod
    def _label_keys(cls, labels: dict[str, str]) -> dict[str, str]:
        import re

        for key, value in labels.items():
            if not re.match(LABEL_KEY, key):
                raise ValueError(f"label key {key!r} must match {LABEL_KEY}")
            if len(value) > 256:
                raise ValueError(f"label {key!r} is longer than 256 characters")
        return labels


class ApproveBody(_Model):
    comment: str | None = Field(default=None, max_length=10_000)


class RejectBody(_Model):
    reason: str | None = Field(default=None, max_length=10_000)


# ---- the stored record --------------------------------------------------------------------


class ProgressBody(_Model):
    percentage: float = Field(ge=0.0, le=100.0)
    message: str | None = Field(default=None, max_length=10_000)
    current_task: str | None = Field(default=None, max_length=1_000)
    estimated_remaining_seconds: float | None = Field(default=None, ge=0.0, allow_inf_nan=False)
    custom_data: dict[str, Any] = Field(default_factory=dict)


class CompleteBody(_Model):
    success: bool
    output: Any = None
    error: str | None = Field(default=None, max_length=10_000)


class ErrorInfo(_Record):
    code: str
    message: str


class Approval(_Record):
    required: bool = True
    status: Literal["pending", "approved", "rejected"] = "pending"
    decided_by: str | None = None
    decided_at: str | None = None
    comment: str | None = None


class CurrentStep(_Record):
    name: str
    kind: str
    index: int
    started_at: str


class Progress(_Record):
    percentage: float = 0.0
    completed_steps: int = 0
    total_steps: int = 0
    message: str | None = None


class ExternalWait(_Record):
    """An external step being waited for: who may report, until when, and its answer once in."""

    step: str
    cycle: int
    token: str
    deadline: str
    started_at: str
    result: CompleteBody | None = None


class Decision(_Record):
    outcome: Any
    cycle: int
    timestamp: str


class StepRecord(_Record):
    step_id: str | None = None
    name: str
    kind: str
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
    metadata: dict[str, Any] = Field(default_factory=dict)


class ExecutionRecord(_Record):
    """Everything known of one execution; committed whole with every cycle."""

    execution_id: str
    workflow_id: str
    workflow_version: int
    status: ExecutionStatus
    input: dict[str, Any]
    state: dict[str, Any] = Field(default_factory=dict)
    result: Any = None
    error: ErrorInfo | None = None
    cycle: int = 0
    max_cycles: int
    priority: int = 0
    labels: dict[str, str] = Field(default_factory=dict)
    current_step: CurrentStep | None = None
    progress: Progress
    approval: Approval | None = None
    created_at: str
    started_at: str | None = None
    updated_at: str
    finished_at: str | None = None
    # Bookkeeping the engine needs to resume; stored, never shown as such.
    seq: int = 0
    next_step: str | None = None
    gate: str | None = None
    decisions: dict[str, Decision] = Field(default_factory=dict)
    done_steps: list[str] = Field(default_factory=list)
    deadline: str | None = None
    external: ExternalWait | None = None
    callback_url: str | None = None

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL

    def links(self) -> dict[str, str]:
        base = f"{API_PREFIX}/executions/{self.execution_id}"
        return {
            "self": base,
            "live": f"{base}/status/live",
            "steps": f"{base}/steps",
            "trace": f"{base}/trace",
            "events": f"{base}/events",
            "ws": f"{base}/ws",
            "approve": f"{base}/approve",
            "cancel": f"{base}/cancel",
        }

    def summary(self) -> dict[str, Any]:
        return {
            "execution_id": self.execution_id,
            "workflow_id": self.workflow_id,
            "status": self.status,
            "created_at": self.created_at,
            "links": self.links(),
        }

    def list_item(self) -> dict[str, Any]:
        item = self.summary()
        item.update(
            updated_at=self.updated_at,
            finished_at=self.finished_at,
            priority=self.priority,
            labels=self.labels,
        )
        return item

    def view(self) -> dict[str, Any]:
        """The whole execution as `GET /executions/{id}` shows it."""
        item = self.list_item()
        item.update(
            workflow_version=self.workflow_version,
            input=self.input,
            state=self.state,
            result=self.result,
            error=self.error.model_dump() if self.error else None,
            cycle=self.cycle,
            max_cycles=self.max_cycles,
            current_step=self.current_step.model_dump() if self.current_step else None,
            progress=self.progress.model_dump(),
            approval=self.approval.model_dump() if self.approval else None,
            started_at=self.started_at,
        )
        return item

    def live(self) -> LiveStatus:
        status = self.status
        return LiveStatus(
            execution_id=self.execution_id,
            workflow_id=self.workflow_id,
            status=status,
            is_processing=status in ("queued", "running"),
            is_completed=status == "completed",
            is_failed=status in ("failed", "timed_out"),
            is_terminal=status in TERMINAL,
            background_processing=status == "running",
            awaiting_approval=status == "awaiting_approval",
            cycle=self.cycle,
            max_cycles=self.max_cycles,
            current_step=self.current_step,
            progress=self.progress,
            last_update=self.updated_at,
            seq=self.seq,
        )


class LiveStatus(_Record):
    execution_id: str
    workflow_id: str
    status: ExecutionStatus
    is_processing: bool
    is_completed: bool
    is_failed: bool
    is_terminal: bool
    background_processing: bool
    awaiting_approval: bool
    cycle: int
    max_cycles: int
    current_step: CurrentStep | None
    progress: Progress
    last_update: str
    seq: int


# ---- what the store appends ---------------------------------------------------------------


@dataclass(slots=True)
class Event:
    """One committed change; `json` is the whole event, encoded once. Never changed once made
    (not `frozen`: a frozen dataclass takes five times as long to make, a dozen per execution)."""

    execution_id: str
    seq: int
    type: str
    json: str
    workflow_id: str = ""  # for filtering streams; not part of the event's JSON

    @classmethod
    def make(cls, execution_id: str, seq: int, type_: str, fields: dict[str, Any],
             workflow_id: str = "", ts: str | None = None) -> Event:
        body = {"seq": seq, "type": type_, "execution_id": execution_id, "ts": ts or utcnow(),
                **fields}
        return cls(execution_id, seq, type_, dumps(body), workflow_id)

    @property
    def is_terminal(self) -> bool:
        return self.type in TERMINAL_EVENTS


@dataclass(slots=True, frozen=True)
class LogLine:
    execution_id: str
    json: str


@dataclass(slots=True, frozen=True)
class IdempotencyRecord:
    """The first answer to a request made with an `Idempotency-Key`, replayed to repeats."""

    scope: str
    key: str
    fingerprint: str
    status: int
    body: str
    location: str | None = None
