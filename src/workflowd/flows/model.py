"""The JSON definition of a workflow, as clients send it (API.md §11): pydantic models.

These check the shape (types, bounds, the step `type`s); `flows.validate` adds what spans
fields (names, goto targets, pointers, conditions, functions) and answers every problem with
where it is.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from workflowd.definitions import MAX_SLEEP, StepKind

__all__ = [
    "NAME",
    "STEP_TYPES",
    "ApprovalStep",
    "BranchCase",
    "BranchStep",
    "CallStep",
    "DefinitionBody",
    "ExternalStep",
    "HttpStep",
    "SleepStep",
    "Step",
]

# Names travel in paths (`/workflows/{id}`, `/steps/{step}/complete`): a safe alphabet.
NAME = r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}$"
STEP_TYPES = ("http", "approval", "sleep", "branch", "external", "call")
_TEXT = 10_000


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class _Step(_Model):
    name: str = Field(pattern=NAME, description="Unique within the workflow")


class _Shown(_Step):
    """A step with how it is shown in steps and trace (API.md §1)."""

    kind: StepKind | None = Field(default=None, description="Default by type")
    agent: str | None = Field(default=None, max_length=200)
    tool: str | None = Field(default=None, max_length=200)


class _Retried(_Shown):
    retries: int = Field(default=0, ge=0, le=100)
    backoff: float = Field(default=0.5, ge=0.0, le=3600.0)


class HttpStep(_Retried):
    """Call a URL; the answer's JSON lands in `state[name]`; non-2xx fails the attempt."""

    type: Literal["http"]
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    url: str = Field(min_length=1, max_length=2048, description="http(s); or a whole "
                     "\"{{ /input/x }}\" template")
    headers: dict[str, Any] = Field(default_factory=dict, max_length=64)
    body: Any = Field(default=None, alias="json",
                      description="A template over input and state, sent as JSON")
    timeout: float = Field(default=30.0, gt=0.0, le=3600.0)


class ApprovalStep(_Step):
    """A human gate: the execution stops `awaiting_approval` (API.md §1)."""

    type: Literal["approval"]
    prompt: str | None = Field(default=None, max_length=_TEXT)


class SleepStep(_Shown):
    """Hold no task for `seconds`, across restarts, then go on."""

    type: Literal["sleep"]
    seconds: float = Field(gt=0.0, le=MAX_SLEEP)


class BranchCase(_Model):
    when: Any = Field(description="A condition: {\"==\": [a, b]}, ... (API.md §11)")
    goto: str = Field(pattern=NAME)


class BranchStep(_Shown):
    """Go to the step of the first case whose condition holds, else `default` (else on)."""

    type: Literal["branch"]
    cases: list[BranchCase] = Field(default_factory=list, max_length=100)
    default: str | None = Field(default=None, pattern=NAME)


class ExternalStep(_Shown):
    """Done by an outside worker, which posts `complete` (API.md §1)."""

    type: Literal["external"]
    url: str | None = Field(default=None, max_length=2048)
    timeout: float | None = Field(default=None, gt=0.0, le=MAX_SLEEP)


class CallStep(_Retried):
    """Run a step function registered from Python with `@workflowd.function`."""

    type: Literal["call"]
    function: str = Field(min_length=1, max_length=200)
    timeout: float | None = Field(default=None, gt=0.0, le=MAX_SLEEP)


Step = Annotated[HttpStep | ApprovalStep | SleepStep | BranchStep | ExternalStep | CallStep,
                 Field(discriminator="type")]


class DefinitionBody(_Model):
    """`POST /workflows` and `PUT /workflows/{id}`: a workflow as data."""

    id: str | None = Field(default=None, pattern=NAME,
                           description="Required on POST; on PUT the path's")
    title: str | None = Field(default=None, max_length=200)
    description: str | None = Field(default=None, max_length=_TEXT)
    max_cycles: int | None = Field(default=None, ge=1, le=1_000_000)
    timeout: float | None = Field(default=None, gt=0.0, le=MAX_SLEEP)
    cycle_timeout: float | None = Field(default=None, gt=0.0, le=MAX_SLEEP)
    cycle_delay: float = Field(default=0.0, ge=0.0, le=3600.0)
    steps: list[Step] = Field(min_length=1, max_length=500)
