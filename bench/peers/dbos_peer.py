"""Workload (b) on DBOS with its SQLite system database; runs in the peers' virtualenv.

`python dbos_peer.py N DB SECONDS`: N workflows of three trivial async steps, 64 at a time
(each step's result is checkpointed by DBOS before the next one runs); stops starting new ones
after SECONDS. Prints one JSON object.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from importlib.metadata import version
from typing import Any

from dbos import DBOS, DBOSConfig  # type: ignore[import-not-found, unused-ignore]


@DBOS.step()  # type: ignore[untyped-decorator, misc, unused-ignore]
async def first(state: dict[str, Any]) -> dict[str, Any]:
    return {**state, "first": 1}


@DBOS.step()  # type: ignore[untyped-decorator, misc, unused-ignore]
async def second(state: dict[str, Any]) -> dict[str, Any]:
    return {**state, "second": 2}


@DBOS.step()  # type: ignore[untyped-decorator, misc, unused-ignore]
async def third(state: dict[str, Any]) -> dict[str, Any]:
    return {**state, "third": 3}


@DBOS.workflow()  # type: ignore[untyped-decorator, misc, unused-ignore]
async def three_steps(n: int) -> dict[str, Any]:
    state: dict[str, Any] = {"n": n}
    state = await first(state)
    state = await second(state)
    return await third(state)  # type: ignore[no-any-return, unused-ignore]


async def run(n: int, budget: float) -> dict[str, Any]:
    gate = asyncio.Semaphore(64)
    completed = 0
    deadline = time.perf_counter() + budget

    async def one(i: int) -> None:
        nonlocal completed
        async with gate:
            if time.perf_counter() > deadline:
                return
            await three_steps(i)
            completed += 1

    began = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    seconds = time.perf_counter() - began
    return {"executions": n, "completed": completed, "seconds": round(seconds, 3),
            "executions_per_s": completed / seconds,
            "how": f"dbos {version('dbos')}, SQLite system database, 64 at a time"}


def main() -> None:
    n, db, budget = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
    logging.disable(logging.WARNING)
    config: DBOSConfig = {"name": "bench-dbos", "system_database_url": f"sqlite:///{db}",
                          "log_level": "ERROR"}
    DBOS(config=config)
    DBOS.launch()
    try:
        result = asyncio.run(run(n, budget))
    finally:
        DBOS.destroy()
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
