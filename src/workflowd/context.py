"""The `Context` a step receives: its execution's input and state, and ways to report back.

A context lives as long as one attempt of a step. When the attempt ends (it returned, failed,
ran past its timeout, was cancelled, or the service is stopping), the context is closed: from
then on whatever still holds it (a `def` step's thread that cannot be interrupted, a task the
step left behind) can no longer report progress, log or decide anything, and `cancelled`
tells it to stop. So a step that runs on never writes under the next one.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Generator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from workflowd.codec import NotJSON, json_copy
from workflowd.definitions import MAX_SLEEP

__all__ = ["Context", "ContextLink", "ProgressReport", "SleepRequested", "freeze"]

_MAX_MESSAGE = 10_000


@dataclass(frozen=True, slots=True)
class ProgressReport:
    percentage: float
    message: str | None
    current_task: str | None
    estimated_remaining_seconds: float | None
    custom_data: dict[str, Any]


class SleepRequested(BaseException):
    """Raised by `ctx.sleep` to end the step's run where it stands. A BaseException, so that a
    step's own `except Exception` does not swallow it; the runner catches it."""

    def __init__(self, seconds: float) -> None:
        super().__init__(seconds)
        self.seconds = seconds


class ContextLink:
    """What a context reports to (the runner of its execution), on the event loop."""

    __slots__ = ()

    def on_progress(self, ctx: Context, report: ProgressReport) -> None:
        raise NotImplementedError

    def on_log(self, ctx: Context, message: str, fields: dict[str, Any]) -> None:
        raise NotImplementedError

    def callback(self, ctx: Context) -> dict[str, str]:
        raise NotImplementedError

    def artifacts(self, ctx: Context) -> Any:
        raise NotImplementedError


class _Reported:
    """What `ctx.progress` answers: already done, yet awaitable, so `await ctx.progress()` reads."""

    __slots__ = ()

    def __await__(self) -> Generator[None, None, None]:
        return
        yield  # pragma: no cover - makes this a generator


_REPORTED = _Reported()


def freeze(value: Any) -> Any:
    """A read-only view of a JSON value, all the way down (objects as mappings, arrays as
    tuples): a step cannot change the input its execution was submitted with."""
    if isinstance(value, dict):
        return MappingProxyType({key: freeze(item) for key, item in value.items()})
    if isinstance(value, list):
        return tuple(freeze(item) for item in value)
    return value


class Context:
    """Given to every attempt of a step; `state` is kept at the end of each cycle."""

    __slots__ = ("_artifacts", "_expiring", "_link", "_loop", "_open", "_threaded", "attempt",
                 "cycle", "decisions", "execution_id", "input", "sleep_for", "state", "step",
                 "woke", "workflow_id")

    def __init__(self, *, execution_id: str, workflow_id: str, input: Mapping[str, Any],
                 state: dict[str, Any], cycle: int, attempt: int, step: str, link: ContextLink,
                 loop: asyncio.AbstractEventLoop, threaded: bool = False,
                 woke: bool = False) -> None:
        self.execution_id = execution_id
        self.workflow_id = workflow_id
        self.input = input
        self.state = state
        self.cycle = cycle
        self.attempt = attempt
        self.step = step
        self.decisions: list[tuple[str, Any]] = []
        # True when this run of the step follows its own `ctx.sleep` (it was woken).
        self.woke = woke
        self.sleep_for: float | None = None  # set by `sleep`
        self._artifacts: Any = None  # made on first use
        self._link = link
        self._loop = loop
        self._open = True
        self._threaded = threaded
        # A `def` step polls a threading.Event; an async step awaits an asyncio.Event, made
        # only if asked for (most steps never look).
        self._expiring: asyncio.Event | threading.Event | None = (
            threading.Event() if threaded else None)

    @property
    def idempotency_key(self) -> str:
        """Stable across a re-run of the same cycle after a crash: use it for side effects."""
        return f"{self.execution_id}:{self.cycle}"

    @property
    def cancelled(self) -> bool:
        """True once this attempt is over (timed out, cancelled, the service stopping): a step
        that cannot be interrupted (a `def` step) should stop when it sees it."""
        return not self._open

    @property
    def expiring(self) -> asyncio.Event | threading.Event:
        """Set when the step's `soft_timeout` passes: save what you have, the hard timeout is
        near (a `threading.Event` in a `def` step)."""
        if self._expiring is None:
            self._expiring = asyncio.Event()
        return self._expiring

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop the engine runs on (a `def` step runs in a thread beside it)."""
        return self._loop

    @property
    def artifacts(self) -> Any:
        """Open and save artifacts (`workflowd.engine.artifacts.StepArtifacts`, API.md §12)."""
        if self._artifacts is None:
            self._artifacts = self._link.artifacts(self)
        return self._artifacts

    @property
    def callback(self) -> dict[str, str]:
        """`progress_url`, `complete_url` and `token` of this step's run, for a service this
        step hands work to and that reports progress back while the step awaits it."""
        return self._link.callback(self)

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
        if self._open:
            try:
                custom = json_copy(custom_data)  # copied now: the caller may change its objects
            except NotJSON:
                custom = {"error": "custom_data is not JSON-able"}
            report = ProgressReport(pct, _text(message), _text(current_task),
                                    _seconds(estimated_remaining_seconds), custom)
            self._on_loop(self._link.on_progress, report)
        return _REPORTED

    def sleep(self, seconds: float) -> Awaitable[None]:
        """Sleep durably: end this run of the step here, holding no task, and run the step
        again from its start after `seconds` (across restarts), with `ctx.woke` True.

        What the step left in `ctx.state` (and its decisions) is committed with the cycle
        before it sleeps; nothing after the call runs in this run. Each run is a cycle (it
        counts against `max_cycles`). Written `await ctx.sleep(60)` in an `async def` step,
        `ctx.sleep(60)` in a plain `def` one: either way it does not return.
        """
        value = float(seconds)
        if not 0 < value <= MAX_SLEEP:  # NaN too: it compares false
            raise ValueError(f"ctx.sleep needs seconds in (0, {MAX_SLEEP:.0f}], got {seconds!r}")
        if self._open:
            self.sleep_for = value
        raise SleepRequested(value)

    def decide(self, name: str, outcome: Any) -> None:
        """Record a branch decision; it shows in `/trace` and as a `branch_decided` event."""
        if self._open:
            self.decisions.append((str(name), outcome))

    def log(self, message: str, /, **fields: Any) -> None:
        """Write a line to the execution's log (`GET .../logs`), kept as it comes."""
        if not self._open:
            return
        try:
            extra = json_copy(fields)
        except NotJSON:  # keep the line, with what cannot be stored shown as text
            extra = {key: repr(value) for key, value in fields.items()}
        self._on_loop(self._link.on_log, str(message)[:_MAX_MESSAGE], extra)

    def close(self) -> None:
        """End this attempt: later reports through this context are dropped."""
        self._open = False

    def _on_loop(self, fn: Callable[..., None], *args: Any) -> None:
        # A plain `def` step runs in a worker thread; the engine's state belongs to the loop,
        # and a report that reaches it after the attempt ended is dropped there.
        if self._threaded:
            self._loop.call_soon_threadsafe(self._deliver, fn, args)
        else:
            fn(self, *args)

    def _deliver(self, fn: Callable[..., None], args: tuple[Any, ...]) -> None:
        if self._open:
            fn(self, *args)


def _text(value: str | None) -> str | None:
    return None if value is None else str(value)[:_MAX_MESSAGE]


def _seconds(value: float | None) -> float | None:
    if value is None:
        return None
    seconds = float(value)
    return seconds if seconds >= 0 else None
