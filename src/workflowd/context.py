"""The `Context` a step receives: its execution's input and state, and ways to report back."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

__all__ = ["Context", "ProgressReport"]


@dataclass(frozen=True, slots=True)
class ProgressReport:
    percentage: float
    message: str | None
    current_task: str | None
    estimated_remaining_seconds: float | None
    custom_data: dict[str, Any]


class _Reported:
    """What `ctx.progress` answers: already done, yet awaitable, so `await ctx.progress()` reads."""

    __slots__ = ()

    def __await__(self) -> Generator[None, None, None]:
        return
        yield  # pragma: no cover - makes this a generator


_REPORTED = _Reported()


@dataclass(eq=False, slots=True)
class Context:
    """Given to every step call; `state` is persisted at the end of each cycle."""

    execution_id: str
    workflow_id: str
    input: Mapping[str, Any]
    state: dict[str, Any]
    cycle: int
    attempt: int
    step: str
    _on_progress: Callable[[ProgressReport], None] = field(repr=False)
    _on_log: Callable[[str, dict[str, Any]], None] = field(repr=False)
    _loop: asyncio.AbstractEventLoop = field(repr=False)
    decisions: list[tuple[str, Any]] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        # A read-only view of the execution's input (shared, not copied: it never changes).
        self.input = MappingProxyType(self.input)

    @property
    def idempotency_key(self) -> str:
        """Stable across a re-run of the same cycle after a crash: use it for side effects."""
        return f"{self.execution_id}:{self.cycle}"

    def progress(
        self,
        percentage: float,
        message: str | None = None,
        current_task: str | None = None,
        estimated_remaining_seconds: float | None = None,
        **custom_data: Any,
    ) -> _Reported:
        """Report the step's progress (0-100); works from `async def` and plain `def` steps."""
        pct = float(percentage)
        if not 0.0 <= pct <= 100.0:
            raise ValueError(f"progress percentage must be within 0..100, got {percentage!r}")
        report = ProgressReport(pct, message, current_task, estimated_remaining_seconds,
                                custom_data)
        self._call_on_loop(self._on_progress, report)
        return _REPORTED

    def decide(self, name: str, outcome: Any) -> None:
        """Record a branch decision; it shows in `/trace` and as a `branch_decided` event."""
        self.decisions.append((name, outcome))

    def log(self, message: str, **fields: Any) -> None:
        """Write a line to the execution's log (`GET .../logs`)."""
        self._call_on_loop(self._on_log, str(message), fields)

    def _call_on_loop(self, fn: Callable[..., None], *args: Any) -> None:
        # A plain `def` step runs in a worker thread; the engine's state belongs to the loop.
        if _on_loop(self._loop):
            fn(*args)
        else:
            self._loop.call_soon_threadsafe(fn, *args)


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
