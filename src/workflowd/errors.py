"""The exception hierarchy: one base with an HTTP status and a stable code per class.

An execution's own failure (a step raising, a timeout) is data in its `error` field, never one
of these; these are for callers who asked for something that cannot be done.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "BadRequestError",
    "DefinitionError",
    "ForbiddenError",
    "IdempotencyMismatchError",
    "InvalidTransitionError",
    "NotReadyError",
    "PayloadTooLargeError",
    "PreconditionFailedError",
    "QueueFullError",
    "RangeNotSatisfiableError",
    "RateLimitedError",
    "StoreError",
    "StoreUnavailableError",
    "UnauthorizedError",
    "UnknownArtifactError",
    "UnknownExecutionError",
    "UnknownStepError",
    "UnknownWorkflowError",
    "ValidationProblem",
    "WorkflowConflictError",
    "WorkflowdError",
]


class WorkflowdError(Exception):
    """Base of every error the service answers with a problem document."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"
    title: ClassVar[str] = "Internal error"
    # Seconds a client should wait before trying again (`Retry-After`), where that helps.
    retry_after: int | None = None

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail

    def extra(self) -> dict[str, Any]:
        """Fields added to the problem document beside the standard ones."""
        return {}

    def headers(self) -> dict[str, str]:
        """Headers the answer carries (`Retry-After`, `WWW-Authenticate`)."""
        return {"Retry-After": str(self.retry_after)} if self.retry_after is not None else {}


class DefinitionError(WorkflowdError):
    """A workflow definition is wrong (raised at load time, before the service starts)."""

    code = "invalid_definition"
    title = "Invalid workflow definition"


class BadRequestError(WorkflowdError):
    status = 400
    code = "bad_request"
    title = "Bad request"


class ValidationProblem(WorkflowdError):
    """Input that parsed but does not validate; carries pydantic-style `errors`."""

    status = 422
    code = "validation_error"
    title = "Validation error"

    def __init__(self, detail: str, errors: list[dict[str, Any]]) -> None:
        super().__init__(detail)
        self.errors = errors

    @classmethod
    def from_errors(cls, errors: list[dict[str, Any]]) -> ValidationProblem:
        """The problem of `errors` (`[{"loc": [...], "msg": ...}]`, at least one), its detail
        the first one's place and message: `body.input.x: no artifact 'a' (and 2 more)`."""
        first = errors[0]
        detail = f"{'.'.join(str(part) for part in first['loc'])}: {first['msg']}"
        if len(errors) > 1:
            detail += f" (and {len(errors) - 1} more)"
        return cls(detail, errors)

    def extra(self) -> dict[str, Any]:
        return {"errors": self.errors}


class IdempotencyMismatchError(WorkflowdError):
    status = 422
    code = "idempotency_key_reused"
    title = "Idempotency key reused with a different request"

    def extra(self) -> dict[str, Any]:
        # Every 422 says where it went wrong (API.md: a validation error adds `errors`).
        return {"errors": [{"loc": ["header", "Idempotency-Key"], "msg": self.detail}]}


class UnknownWorkflowError(WorkflowdError):
    status = 404
    code = "unknown_workflow"
    title = "Workflow not found"


class UnknownExecutionError(WorkflowdError):
    status = 404
    code = "unknown_execution"
    title = "Execution not found"


class UnknownArtifactError(WorkflowdError):
    status = 404
    code = "unknown_artifact"
    title = "Artifact not found"


class UnknownStepError(WorkflowdError):
    status = 404
    code = "unknown_step"
    title = "Step not found"


class UnauthorizedError(WorkflowdError):
    """No credentials, or ones that name no one (auth on)."""

    status = 401
    code = "unauthorized"
    title = "Unauthorized"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "Bearer"}


class ForbiddenError(WorkflowdError):
    status = 403
    code = "forbidden"
    title = "Forbidden"


class InvalidTransitionError(WorkflowdError):
    status = 409
    code = "invalid_transition"
    title = "Conflict with the execution's status"


class WorkflowConflictError(WorkflowdError):
    """A definition change that conflicts with what exists (a Python workflow's id, an id
    taken, a version stored meanwhile)."""

    status = 409
    code = "workflow_conflict"
    title = "Conflict with an existing workflow"


class PreconditionFailedError(WorkflowdError):
    """A conditional request whose condition does not hold (`If-Match` naming another
    version); the answer carries the current `ETag`."""

    status = 412
    code = "precondition_failed"
    title = "Precondition failed"

    def __init__(self, detail: str, etag: str | None = None) -> None:
        super().__init__(detail)
        self.etag = etag

    def headers(self) -> dict[str, str]:
        return {"ETag": self.etag} if self.etag is not None else {}


class PayloadTooLargeError(WorkflowdError):
    status = 413
    code = "payload_too_large"
    title = "Payload too large"


class RangeNotSatisfiableError(WorkflowdError):
    """A `Range` that names no byte of the file (or cannot be read); the answer carries
    `Content-Range: bytes */SIZE`, as RFC 9110 asks."""

    status = 416
    code = "range_not_satisfiable"
    title = "Range not satisfiable"

    def __init__(self, detail: str, size: int) -> None:
        super().__init__(detail)
        self.size = size

    def headers(self) -> dict[str, str]:
        return {"Content-Range": f"bytes */{self.size}"}


class QueueFullError(WorkflowdError):
    status = 429
    code = "queue_full"
    title = "Too many queued executions"

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}


class RateLimitedError(QueueFullError):
    """A caller over its rate (`[limits] submits_per_minute`, open tickets): nothing changed."""

    code = "rate_limited"
    title = "Too many requests"


class NotReadyError(WorkflowdError):
    status = 503
    code = "not_ready"
    title = "Service not ready"


class StoreUnavailableError(WorkflowdError):
    """The store refuses writes for now (disk full, file locked): nothing was changed."""

    status = 503
    code = "store_unavailable"
    title = "The store cannot write now"
    retry_after = 5


class StoreError(WorkflowdError):
    """The store cannot be opened (too old an SQLite, a file in use, a newer schema)."""

    code = "store_error"
    title = "The store cannot be opened"
