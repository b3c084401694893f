"""Rate-bounding a stream of reports: at most one per interval goes out, always the latest."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["Coalescer"]

T = TypeVar("T")


class Coalescer(Generic[T]):
    """`push` emits at once when the interval has passed since the last emit; otherwise it holds
    the item (replacing any held one) and emits it when the interval is up, or at `flush`."""

    def __init__(self, interval: float, emit: Callable[[T], None]) -> None:
        self.interval = interval
        self._emit = emit
        self._last = float("-inf")
        self._held: T | None = None
        self._timer: asyncio.TimerHandle | None = None

    def push(self, item: T) -> None:
        loop = asyncio.get_running_loop()
        due = self._last + self.interval
        if loop.time() >= due and self._timer is None:
            self._send(item)
            return
        self._held = item
        if self._timer is None:
            self._timer = loop.call_at(due, self.flush)

    def flush(self) -> None:
        """Emit the held item now, if any."""
        self.cancel()
        item, self._held = self._held, None
        if item is not None:
            self._send(item)

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _send(self, item: T) -> None:
        self._last = asyncio.get_running_loop().time()
        self._emit(item)
