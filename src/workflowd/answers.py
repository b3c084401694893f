"""The API's answers as pydantic models: what every route sends back (API.md §3 to §5).

One description serves three readers: the OpenAPI document is generated from them
(`api.openapi`), the Python client returns them as its typed objects (`workflowd.client`), and
the tests validate the handlers' real answers against them. The handlers do not build their
answers through these models: the hot routes encode records once with msgspec
(`api.views`), and a test keeps the two in step.

Fields a model does not declare are kept (`model_extra`), so a client keeps working against a
newer server that adds some and shows them; timestamps stay the strings the server wrote
(ISO 8601 UTC with milliseconds and `Z`).
"""

from __future__ import annotations

from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from workflowd.records import TERMINAL_EVENTS

__all__ = [
    "Approval",
    "Approved",
    "Artifact",
    "Cancelled",
    "Completion",
    "CurrentStep",
    "Decision",
    "DefinedStep",
    "Definition",
    "ErrorInfo",
    "Event",
    "Execution",
    "ExecutionArtifact",
    "ExecutionItem",
    "ExecutionStatus",
    "Health",
    "Links",
    "LiveStatus",
    "LogLine",
    "Page",
    "Paused",
    "Problem",
    "ProblemError",
    "Progress",
    "ProgressAccepted",
    "Rejected",
    "Result",
    "Resumed",
    "StepRecord",
    "StepStatus",
    "Stepped",
    "Summary",
    "Timestamp",
    "Trace",
    "TraceCycle",
    "ValidationProblemDocument",
    "WorkflowInfo",
    "WorkflowStep",
    "WorkflowVersion",
]

ExecutionStatus = Literal[
    "queued", "running", "awaiting_approval", "paused", "completed", "failed", "cancelled",
    "timed_out", "rejected",
]
StepStatus = Literal["pending", "running", "waiting", "completed", "failed", "skipped"]
# As the server writes them, e.g. `2026-02-09T14:10:00.100Z`.
Timestamp = Annotated[str, WithJsonSchema({"type": "string", "format": "date-time"})]
T = TypeVar("T")


class _Answer(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class ErrorInfo(_Answer):
    code: str
    message: str


class Links(_Answer):
    self: str
    live: str
    steps: str
    trace: str
    events: str
    ws: str
    approve: str
    cancel: str


class Summary(_Answer):
    """The answer to a submit (202, or 201 when it waits for an approval first)."""

    execution_id: str
    workflow_id: str
    status: ExecutionStatus
    created_at: Timestamp
    links: Links


class ExecutionItem(Summary):
    """One execution in `GET /executions`."""

    updated_at: Timestamp
    finished_at: Timestamp | None
    priority: int
    labels: dict[str, str]
    submitted_by: str


class CurrentStep(_Answer):
    name: str
    kind: str
    index: int
    started_at: Timestamp


class Progress(_Answer):
    percentage: float
    completed_steps: int
    total_steps: int
    message: str | None


class Approval(_Answer):
    required: bool
    status: Literal["pending", "approved", "rejected"]
    decided_by: str | None
    decided_at: Timestamp | None
    comment: str | None


class Execution(ExecutionItem):
    """The whole execution (`GET /executions/{id}`, and a submit with `?wait=` that ended)."""

    workflow_version: int
    input: dict[str, Any]
    state: dict[str, Any]
    result: Any
    error: ErrorInfo | None
    cycle: int
    max_cycles: int
    current_step: CurrentStep | None
    progress: Progress
    approval: Approval | None
    started_at: Timestamp | None
    # "manual": one step per `POST .../step`, paused before each.
    mode: Literal["auto", "manual"]
    # The step the next cycle runs (None once it ended): what a `step` call would run.
    next_step: str | None


class LiveStatus(_Answer):
    """The compact status for polling (`/status/live`); the flags follow the status."""

    execution_id: str
    workflow_id: str
    status: ExecutionStatus
    is_processing: bool
    is_completed: bool
    is_failed: bool
    is_terminal: bool
    background_processing: bool
    awaiting_approval: bool
    is_paused: bool
    cycle: int
    max_cycles: int
    current_step: CurrentStep | None
    progress: Progress
    last_update: Timestamp
    seq: int


class Approved(LiveStatus):
    approved: bool


class Rejected(LiveStatus):
    rejected: bool


class Cancelled(LiveStatus):
    cancelled: bool


class StepRecord(_Answer):
    """One cycle's step, or a declared step not run (its fields null)."""

    step_id: str | None
    name: str
    kind: str
    agent_name: str | None
    tool_name: str | None
    status: StepStatus
    cycle: int | None
    attempt: int | None
    started_at: Timestamp | None
    completed_at: Timestamp | None
    duration_ms: int | None
    error: ErrorInfo | None
    progress: float | None
    output: Any
    metadata: dict[str, Any]


class Decision(_Answer):
    outcome: Any
    cycle: int
    timestamp: Timestamp


class TraceCycle(_Answer):
    cycle: int | None
    step: str
    status: StepStatus
    started_at: Timestamp | None
    completed_at: Timestamp | None
    duration_ms: int | None


class Trace(_Answer):
    execution_id: str
    workflow_id: str
    execution_path: list[str]
    branch_decisions: dict[str, Decision]
    cycles: list[TraceCycle]
    current_step_index: int | None
    total_steps: int


class Event(BaseModel):
    """One committed change; the fields beside these depend on its `type` (API.md §4) and are
    kept (`model_extra`, or `event["field"]`)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    seq: int
    type: str
    execution_id: str
    ts: Timestamp

    def __getitem__(self, name: str) -> Any:
        """Any field of the event, the declared ones and those of its type alike."""
        if name in type(self).model_fields:
            return getattr(self, name)
        extra = self.model_extra or {}
        return extra[name]

    def get(self, name: str, default: Any = None) -> Any:
        try:
            return self[name]
        except KeyError:
            return default

    @property
    def is_terminal(self) -> bool:
        return self.type in TERMINAL_EVENTS


class LogLine(_Answer):
    """A line written by `ctx.log`."""

    ts: Timestamp
    cycle: int
    step: str
    message: str
    fields: dict[str, Any]


class Page(_Answer, Generic[T]):
    """A list answer: the items, and the cursor of the next page (null on the last)."""

    items: list[T]
    next_cursor: str | None


class Result(_Answer):
    """The outcome of a finished execution."""

    status: ExecutionStatus
    result: Any
    error: ErrorInfo | None


class WorkflowStep(_Answer):
    name: str
    kind: str
    agent: str | None
    tool: str | None


class WorkflowInfo(_Answer):
    """A registered workflow."""

    id: str
    title: str
    version: int
    description: str | None
    max_cycles: int | None
    steps: list[WorkflowStep]
    # Defined in a Python module, or over the API as JSON (API.md §11).
    source: Literal["python", "json"]


class WorkflowVersion(WorkflowInfo):
    """A Python workflow in `GET /workflows/{id}/versions`: its one version, the loaded one."""

    created_at: None
    latest: bool


class DefinedStep(BaseModel):
    """A step of a workflow defined as JSON: its definition (whose fields depend on its
    `type`, API.md §11, and are kept), and how it shows in steps and trace."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str
    type: str
    kind: str
    agent: str | None
    tool: str | None


class Definition(_Answer):
    """A stored version of a workflow defined as JSON (API.md §11)."""

    id: str
    title: str
    description: str | None
    max_cycles: int | None
    timeout: float | None
    cycle_timeout: float | None
    cycle_delay: float
    steps: list[DefinedStep]
    version: int
    source: Literal["json"]
    created_at: Timestamp
    latest: bool


class Artifact(_Answer):
    """A stored file (API.md §12): the same bytes are kept once, by sha256."""

    artifact_id: str
    name: str
    media_type: str
    size: int
    sha256: str
    created_at: Timestamp


class ExecutionArtifact(Artifact):
    """An artifact an execution named in its input, read, or saved."""

    roles: list[Literal["input", "read", "output"]]


class Paused(LiveStatus):
    pause_requested: bool


class Resumed(LiveStatus):
    resumed: bool


class Stepped(LiveStatus):
    stepped: bool


class ProgressAccepted(_Answer):
    execution_id: str
    step: str
    accepted: bool


class Completion(_Answer):
    """An outside worker's completion, accepted: the execution's status after it."""

    execution_id: str
    accepted: bool
    status: ExecutionStatus


class Health(_Answer):
    status: str


class ProblemError(_Answer):
    loc: list[str | int]
    msg: str


class Problem(_Answer):
    """RFC 9457 problem document: the body of every error answer. `type` is
    `urn:workflowd:problem:<code>` for the service's own errors."""

    type: str
    title: str
    status: int = Field(ge=400, le=599)
    detail: str
    instance: str
    errors: list[ProblemError] | None = None

    @property
    def code(self) -> str | None:
        """The stable error code in `type` (None for `about:blank`)."""
        prefix = "urn:workflowd:problem:"
        return self.type[len(prefix):] if self.type.startswith(prefix) else None


class ValidationProblemDocument(Problem):
    """A 422: the problem document with where and what was wrong."""

    errors: list[ProblemError]
