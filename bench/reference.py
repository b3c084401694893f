"""The plain asyncio reference of DESIGN.md: `python -m bench.reference N DB`.

N executions of three trivial steps, each an asyncio task; after every step the execution's
snapshot (one JSON row) goes through a group-committing writer to SQLite (WAL, synchronous
NORMAL, like the service) and the task waits for its commit before the next step. No HTTP, no
events, no step records: the floor a durable engine on this machine is measured against.
Runs in its own process; prints one JSON object.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

__all__ = ["run_reference"]

Row = tuple[str, int, str]


class GroupWriter:
    """Commits whatever queued up while the previous transaction ran, in one transaction."""

    def __init__(self, path: str, max_batch: int = 512) -> None:
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        for pragma in ("PRAGMA journal_mode = WAL", "PRAGMA synchronous = NORMAL"):
            self._conn.execute(pragma)
        self._conn.execute("CREATE TABLE IF NOT EXISTS snapshots (execution_id TEXT NOT NULL, "
                           "cycle INTEGER NOT NULL, doc TEXT NOT NULL, "
                           "PRIMARY KEY (execution_id, cycle)) WITHOUT ROWID")
        self._max_batch = max_batch
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="reference-writer")
        self._pending: list[tuple[Row, asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._stopping = False
        self.commits = 0
        self.writes = 0

    def write(self, row: Row) -> asyncio.Future[None]:
        future = asyncio.get_running_loop().create_future()
        self._pending.append((row, future))
        self._wake.set()
        return future

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while not (self._stopping and not self._pending):
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch = self._pending[:self._max_batch]
                del self._pending[:self._max_batch]
                await loop.run_in_executor(self._thread, self._commit, [r for r, _ in batch])
                self.commits += 1
                self.writes += len(batch)
                for _, future in batch:
                    future.set_result(None)

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    def _commit(self, rows: list[Row]) -> None:
        self._conn.execute("BEGIN IMMEDIATE")
        self._conn.executemany("INSERT OR REPLACE INTO snapshots VALUES (?, ?, ?)", rows)
        self._conn.execute("COMMIT")

    def close(self) -> None:
        self._thread.shutdown()
        self._conn.close()


async def _one(state: dict[str, Any]) -> None:
    state["first"] = 1


async def _two(state: dict[str, Any]) -> None:
    state["second"] = 2


async def _three(state: dict[str, Any]) -> None:
    state["third"] = 3


STEPS: tuple[Callable[[dict[str, Any]], Awaitable[None]], ...] = (_one, _two, _three)


async def run_reference(n: int, path: str) -> dict[str, Any]:
    writer = GroupWriter(path)
    runner = asyncio.create_task(writer.run())

    async def execution(execution_id: str) -> None:
        state: dict[str, Any] = {}
        for cycle, step in enumerate(STEPS, start=1):
            await step(state)
            status = "completed" if cycle == len(STEPS) else "running"
            doc = json.dumps({"execution_id": execution_id, "cycle": cycle, "status": status,
                              "state": state})
            await writer.write((execution_id, cycle, doc))

    began = time.perf_counter()
    await asyncio.gather(*(execution(str(uuid.uuid4())) for _ in range(n)))
    seconds = time.perf_counter() - began
    writer.stop()
    await runner
    writer.close()
    cycles = n * len(STEPS)
    return {"executions": n, "seconds": round(seconds, 3), "executions_per_s": n / seconds,
            "cycles_per_s": cycles / seconds, "commits": writer.commits,
            "commits_per_s": writer.commits / seconds,
            "cycles_per_commit": cycles / max(1, writer.commits)}


def main() -> None:
    result = asyncio.run(run_reference(int(sys.argv[1]), sys.argv[2]))
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
