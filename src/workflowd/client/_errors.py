"""What the client raises: `ApiError` for every problem answer, `Unreachable` when no answer
came at all."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from workflowd.answers import Problem, ProblemError

__all__ = ["ApiError", "Unreachable"]


class ApiError(Exception):
    """The server answered with a problem (RFC 9457): a 4xx for what was asked, a 5xx for what
    it could not do. `code` is the stable error code of the problem's `type`
    (`urn:workflowd:problem:<code>`, e.g. `invalid_transition`), None for a bare one."""

    def __init__(self, status: int, title: str, detail: str, *, code: str | None = None,
                 errors: list[ProblemError] | None = None, problem: Problem | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(f"{status} {title}: {detail}")
        self.status = status
        self.code = code
        self.title = title
        self.detail = detail
        self.errors = errors or []
        self.problem = problem
        self.retry_after = retry_after

    @classmethod
    def from_answer(cls, status: int, reason: str, body: bytes,
                    headers: Any = None) -> ApiError:
        """The error of an answer: its problem document, or what there is of one."""
        retry_after = _seconds((headers or {}).get("Retry-After"))
        try:
            problem = Problem.model_validate_json(body)
        except ValidationError:
            text = body.decode(errors="replace").strip()[:500]
            return cls(status, reason or "Error", text or reason or f"HTTP {status}",
                       retry_after=retry_after)
        return cls(problem.status, problem.title, problem.detail, code=problem.code,
                   errors=problem.errors, problem=problem, retry_after=retry_after)


class Unreachable(ConnectionError):
    """No answer from the server: it is not listening there, or the connection failed or timed
    out before an answer came."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot reach workflowd at {url}: {reason}")
        self.url = url
        self.reason = reason


def _seconds(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
