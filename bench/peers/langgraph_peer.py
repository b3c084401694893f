"""Workload (b) on LangGraph with its SQLite checkpointer; runs in the peers' virtualenv.

`python langgraph_peer.py N DB SECONDS`: N runs (one thread each) of a graph of three trivial
nodes, 64 at a time, with `durability="sync"` so each step's checkpoint is written before the
next step (as workflowd commits each cycle); stops starting new ones after SECONDS. Prints one
JSON object.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from importlib.metadata import version
from typing import Any, TypedDict

from langgraph.checkpoint.sqlite.aio import (  # type: ignore[import-not-found, unused-ignore]
    AsyncSqliteSaver,
)
from langgraph.graph import END, START, StateGraph  # type: ignore[import-not-found, unused-ignore]


class State(TypedDict, total=False):
    n: int
    first: int
    second: int
    third: int


async def first(state: State) -> dict[str, Any]:
    return {"first": 1}


async def second(state: State) -> dict[str, Any]:
    return {"second": 2}


async def third(state: State) -> dict[str, Any]:
    return {"third": 3}


async def run(n: int, db: str, budget: float) -> dict[str, Any]:
    builder = StateGraph(State)
    builder.add_node("first", first)
    builder.add_node("second", second)
    builder.add_node("third", third)
    builder.add_edge(START, "first")
    builder.add_edge("first", "second")
    builder.add_edge("second", "third")
    builder.add_edge("third", END)
    gate = asyncio.Semaphore(64)
    completed = 0
    deadline = time.perf_counter() + budget
    async with AsyncSqliteSaver.from_conn_string(db) as saver:
        graph = builder.compile(checkpointer=saver)

        async def one(i: int) -> None:
            nonlocal completed
            async with gate:
                if time.perf_counter() > deadline:
                    return
                await graph.ainvoke({"n": i}, {"configurable": {"thread_id": f"bench-{i}"}},
                                    durability="sync")
                completed += 1

        began = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        seconds = time.perf_counter() - began
    return {"executions": n, "completed": completed, "seconds": round(seconds, 3),
            "executions_per_s": completed / seconds,
            "how": f"langgraph {version('langgraph')}, AsyncSqliteSaver, durability=sync, "
                   "64 at a time"}


def main() -> None:
    n, db, budget = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
    result = asyncio.run(run(n, db, budget))
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
