"""Pydantic models at the edge: the bodies clients send, validated before the engine sees them.

The engine's own records are plain data (`workflowd.records`); these models only describe and
check what comes in.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, field_validator

from workflowd.records import ErrorInfo

__all__ = [
    "LABEL_KEY",
    "ApproveBody",
    "CompleteBody",
    "ErrorBody",
    "ProgressBody",
    "RejectBody",
    "SubmitBody",
]

LABEL_KEY = r"^[A-Za-z0-9_.\-/]{1,64}$"
_LABEL = re.compile(LABEL_KEY)


class _Model(BaseModel):
    # Strict: JSON's types as they are (no "yes" for true, no true for 1, no "5" for 5), a
    # client that sends another type learns it with a 422 rather than a guess.
    model_config = ConfigDict(extra="forbid", strict=True)


class SubmitBody(_Model):
    input: dict[str, Any] = Field(default_factory=dict)
    priority: int = Field(default=0, ge=-1000, le=1000)
    require_approval: bool = False
    labels: dict[str, str] = Field(default_factory=dict, max_length=32)
    callback_url: HttpUrl | None = None
    # "manual": run one step per `POST .../step`, paused before each (API.md §12).
    mode: Literal["auto", "manual"] = "auto"

    @field_validator("labels")
    @classmethod
    def _label_keys(cls, labels: dict[str, str]) -> dict[str, str]:
        for key, value in labels.items():
            if not _LABEL.fullmatch(key):
                raise ValueError(f"label key {key!r} must match {LABEL_KEY}")
            if len(value) > 256:
                raise ValueError(f"label {key!r} is longer than 256 characters")
        return labels


class ApproveBody(_Model):
    comment: str | None = Field(default=None, max_length=10_000)


class RejectBody(_Model):
    reason: str | None = Field(default=None, max_length=10_000)


class ProgressBody(_Model):
    percentage: float = Field(ge=0.0, le=100.0)
    message: str | None = Field(default=None, max_length=10_000)
    current_task: str | None = Field(default=None, max_length=1_000)
    estimated_remaining_seconds: float | None = Field(default=None, ge=0.0, allow_inf_nan=False)
    custom_data: dict[str, Any] = Field(default_factory=dict)


class ErrorBody(_Model):
    code: str = Field(default="step_failed", min_length=1, max_length=100)
    message: str = Field(default="", max_length=10_000)


class CompleteBody(_Model):
    success: bool
    output: Any = None
    # `{"code", "message"}`; a plain string is taken as the message.
    error: ErrorBody | str | None = None

    def error_info(self) -> ErrorInfo | None:
        """The worker's error as the execution records it (None on success)."""
        if self.success:
            return None
        if isinstance(self.error, ErrorBody):
            return ErrorInfo(code=self.error.code, message=self.error.message or "failed")
        return ErrorInfo(code="step_failed", message=self.error or "the worker reported failure")
