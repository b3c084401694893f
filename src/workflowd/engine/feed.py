"""Events other nodes committed, handed to the followers here (the node's part of a cluster
that `engine.cluster` leaves to this module).

A commit on another node arrives as a notification naming each execution's new seqs; the
events are read from the table (the truth) for the executions someone here follows and
published on the hub. A poll of the newest seqs every `poll_interval` catches up whatever a
missed notification would have said.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from workflowd.engine.hub import Hub
from workflowd.records import Event, event_type
from workflowd.store.cluster import ClusterStore

__all__ = ["RemoteEvents"]

# Events read at a time for the followers here of executions other nodes run.
EVENTS_PAGE = 1000


class RemoteEvents:
    def __init__(self, ops: ClusterStore, hub: Hub, owners: Mapping[str, object], node_id: str,
                 poll_interval: float) -> None:
        self.ops = ops
        self.hub = hub
        self.owners = owners  # the executions this node runs: their events are published here
        self.node_id = node_id
        self.poll_interval = poll_interval
        self._pending: dict[str, int] = {}  # execution -> read its events after this seq
        self._wake = asyncio.Event()

    def notified(self, payload: str) -> None:
        """A notification of commits: `NODE|ID FIRST LAST,...`."""
        node, _, marks = payload.partition("|")
        if node == self.node_id:
            return  # published here after the commit already
        hub = self.hub
        everything = hub.follows_all()
        watched = None if everything else set(hub.watched())
        for mark in marks.split(","):
            parts = mark.split(" ")
            if len(parts) != 3:
                continue
            execution_id, first, _last = parts
            if watched is not None and execution_id not in watched:
                continue
            # From the notified events on: a follower further behind replays from the store
            # itself when it sees the gap (`Follow.events`).
            after = int(first) - 1
            self._pending[execution_id] = min(after, self._pending.get(execution_id, after))
        if self._pending:
            self._wake.set()

    def catch_up(self) -> None:
        """(Re)connected to the notifications: look for what was missed meanwhile."""
        self._wake.set()

    async def run_forever(self) -> None:
        while True:
            polled = False
            try:
                async with asyncio.timeout(self.poll_interval):
                    await self._wake.wait()
            except TimeoutError:
                polled = True
            self._wake.clear()
            if polled or not self._pending:
                await self._poll_newest()
            pending, self._pending = self._pending, {}
            if pending:
                await self._read_and_publish(pending)

    async def _poll_newest(self) -> None:
        """What a missed notification would have said: the newest seq of each execution
        followed here that this node does not run."""
        hub = self.hub
        ids = [i for i in hub.watched() if i not in self.owners]
        if not ids:
            return
        newest = await self.ops.newest_seqs(ids)
        for execution_id, seq in newest.items():
            known = hub.delivered(execution_id)
            if known is not None and seq > known:
                self._pending[execution_id] = min(known, self._pending.get(execution_id, known))
            hub.poke(execution_id, seq)

    async def _read_and_publish(self, pending: dict[str, int]) -> None:
        """Publish the events after each `pending[id]`, a page of them at a time."""
        hub = self.hub
        while pending:
            rows = await self.ops.events_after(pending, EVENTS_PAGE)
            batch: list[Event] = []
            for execution_id, seq, doc, workflow_id in rows:
                if batch and batch[0].execution_id != execution_id:
                    hub.publish(batch)
                    batch = []
                batch.append(Event(execution_id, seq, event_type(doc), doc.encode(),
                                   workflow_id))
            if batch:
                hub.publish(batch)
            if len(rows) < EVENTS_PAGE:
                return
            # A full page: the next one goes on after what this one had of each execution.
            for execution_id, seq, _doc, _workflow_id in rows:
                pending[execution_id] = max(pending[execution_id], seq)
