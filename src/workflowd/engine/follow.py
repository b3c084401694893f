"""Following one execution: a snapshot, the history after a point, then live events, in order,
with no gap and no duplicate.

The hand-over cannot lose an event: the subscription is made *before* the snapshot and the
history are read. An event committed before that is in the store (the hub hears of an event
only after its commit); one committed after it reaches the subscription's queue. Events that
arrive both ways are dropped by `seq`, and a hole in the live stream (which the ordering above
rules out) would be filled from the store rather than skipped.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from workflowd.engine.hub import Hub, Subscription
from workflowd.engine.scheduler import Scheduler
from workflowd.errors import UnknownExecutionError
from workflowd.records import TERMINAL_EVENTS, ExecutionRecord, event_type

__all__ = ["Follow", "Lagging", "Streamed"]

_PAGE = 500


class Lagging(Exception):
    """The follower fell behind by more than its queue holds; it must resume with `after=`."""


@dataclass(frozen=True, slots=True)
class Streamed:
    seq: int
    json: bytes
    terminal: bool


class Follow:
    def __init__(self, scheduler: Scheduler, hub: Hub, execution_id: str, maxsize: int) -> None:
        self.scheduler = scheduler
        self.hub = hub
        self.execution_id = execution_id
        self.maxsize = maxsize
        self.sub: Subscription | None = None
        self.last = 0

    async def open(self, after: int | None) -> ExecutionRecord:
        """Subscribe, then read the snapshot; events after `after` (default: the snapshot's seq)
        come from `events()`."""
        self.sub = self.hub.subscribe(self.execution_id, self.maxsize)
        try:
            rec = await self.scheduler.get(self.execution_id)
        except UnknownExecutionError:
            self.close()
            raise
        self.last = rec.seq if after is None else min(after, rec.seq)
        self._done = rec.is_terminal and self.last >= rec.seq
        self.sub.base = rec.seq
        return rec

    @property
    def done(self) -> bool:
        """True when nothing more will come (terminal, and everything was sent)."""
        return self._done

    async def events(self) -> AsyncIterator[Streamed]:
        assert self.sub is not None
        async for item in self._replay():
            yield item
        while not self._done:
            if self.sub.lagging and self.sub.queue.empty():
                raise Lagging(f"follower fell more than {self.maxsize} events behind")
            event = await self.sub.queue.get()
            if event.seq <= self.last:
                continue
            if event.seq > self.last + 1:
                async for item in self._replay(until=event.seq - 1):
                    yield item
            yield self._sent(event.seq, event.json, event.is_terminal)

    async def _replay(self, until: int | None = None) -> AsyncIterator[Streamed]:
        store = self.scheduler.store
        while not self._done:
            rows = await store.event_rows(self.execution_id, self.last, _PAGE)
            for seq, doc in rows:
                if until is not None and seq > until:
                    return
                yield self._sent(seq, doc.encode(), event_type(doc) in TERMINAL_EVENTS)
            if len(rows) < _PAGE:
                return

    def _sent(self, seq: int, doc: bytes, terminal: bool) -> Streamed:
        self.last = seq
        self._done = terminal
        return Streamed(seq, doc, terminal)

    def close(self) -> None:
        if self.sub is not None:
            self.hub.unsubscribe(self.sub)
            self.sub = None
