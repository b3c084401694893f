"""The events hub: fans committed events out to followers and wakes long-polls.

Events reach the hub only after their commit, so whatever a follower sees is already in the
events table; history comes from the store.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from workflowd.records import Event

__all__ = ["Hub", "Subscription"]


class Subscription:
    """A follower's bounded queue. Overflowing marks it lagging and calls `on_lag` once, instead
    of growing memory or making the publisher wait: a slow follower never slows the others."""

    def __init__(self, execution_id: str | None, maxsize: int,
                 accept: Callable[[Event], bool] | None = None) -> None:
        self.execution_id = execution_id
        self.queue: asyncio.Queue[Event] = asyncio.Queue(maxsize)
        self.lagging = False
        self.accept = accept
        self.on_lag: Callable[[], None] | None = None
        # The seq of the snapshot the follower read when it opened, once it did: what it has up
        # to there it reads from the store itself; the rest comes through the queue.
        self.base: int | None = None

    def put(self, event: Event) -> None:
        if self.lagging or (self.accept is not None and not self.accept(event)):
            return
        if self.base is not None and event.seq <= self.base:
            return  # the follower reads it from the store itself
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.lagging = True
            if self.on_lag is not None:
                self.on_lag()


class Hub:
    def __init__(self) -> None:
        self._subs: dict[str | None, set[Subscription]] = {}
        self._changed: dict[str, asyncio.Future[None]] = {}
        # Long-polls waiting on each execution, and the newest seq heard of it while they
        # wait (for executions another node runs, which `Scheduler.peek` does not know).
        self._waiting: dict[str, int] = {}
        self._seen: dict[str, int] = {}
        # The newest seq published of each execution someone here follows.
        self._published: dict[str, int] = {}

    @property
    def subscriber_count(self) -> int:
        """Subscriptions open now, of one execution or of all."""
        return sum(len(subs) for subs in self._subs.values())

    def subscribe(self, execution_id: str | None, maxsize: int = 1000,
                  accept: Callable[[Event], bool] | None = None) -> Subscription:
        """Follow one execution, or every execution with `None` (filtered by `accept`)."""
        sub = Subscription(execution_id, maxsize, accept)
        self._subs.setdefault(execution_id, set()).add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        subs = self._subs.get(sub.execution_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subs[sub.execution_id]
                if sub.execution_id is not None:
                    self._published.pop(sub.execution_id, None)

    def publish(self, events: Sequence[Event]) -> None:
        """Called once the events are committed, in commit order."""
        if not events:
            return
        execution_id = events[0].execution_id
        if execution_id in self._subs:
            self._published[execution_id] = events[-1].seq
        for key in (execution_id, None):
            for sub in self._subs.get(key, ()):
                for event in events:
                    sub.put(event)
        self.poke(execution_id, events[-1].seq)

    def poke(self, execution_id: str, seq: int) -> None:
        """Events up to `seq` are committed: wake the long-polls of the execution."""
        if execution_id in self._waiting:
            self._seen[execution_id] = max(seq, self._seen.get(execution_id, 0))
        changed = self._changed.pop(execution_id, None)
        if changed is not None and not changed.done():
            changed.set_result(None)

    # ---- what a node that hears of other nodes' commits feeds ----------------------------------

    def watched(self) -> list[str]:
        """Executions someone here follows or long-polls."""
        return [key for key in self._subs if key is not None] + [
            key for key in self._waiting if key not in self._subs]

    def follows_all(self) -> bool:
        """Whether a follower of every execution is connected."""
        return bool(self._subs.get(None))

    def delivered(self, execution_id: str) -> int | None:
        """The seq up to which every follower of an execution here has had its events its way:
        read from the store (up to the snapshot it opened on) or published to it. None: none
        has opened yet. A feed of other nodes' events goes on from here. From the place a
        follower reads at instead, it poured into its queue the history that follower was
        still reading from the store itself (`Follow.events`), and the queue overflowed; a
        follower reads nothing published at or below its snapshot (`Subscription.put`)."""
        bases = [sub.base for sub in self._subs.get(execution_id, ()) if sub.base is not None]
        if not bases:
            return None
        published = self._published.get(execution_id)
        return max(min(bases), published) if published is not None else min(bases)

    def seen(self, execution_id: str) -> int:
        """The newest seq published or poked while a long-poll waits on the execution."""
        return self._seen.get(execution_id, 0)

    async def wait_until(self, execution_id: str, ready: Callable[[], bool],
                         timeout: float) -> bool:
        """Wait until `ready()` holds, checking after each commit of the execution's events."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        self._waiting[execution_id] = self._waiting.get(execution_id, 0) + 1
        try:
            while not ready():
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return False
                changed = self._changed.get(execution_id)
                if changed is None:
                    changed = self._changed[execution_id] = loop.create_future()
                try:
                    await asyncio.wait_for(asyncio.shield(changed), remaining)
                except TimeoutError:
                    return ready()
            return True
        finally:
            left = self._waiting[execution_id] - 1
            if left:
                self._waiting[execution_id] = left
            else:
                del self._waiting[execution_id]
                self._seen.pop(execution_id, None)
