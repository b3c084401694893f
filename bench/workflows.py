"""The benchmark's own workflows, loaded by the service under test (`[workflows] modules`)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from workflowd import Context, Workflow

__all__ = ["hold", "progress", "three", "three_await"]

# (b) three trivial steps: each cycle only touches the state, so what is measured is the
# engine's cycle (snapshot, step record, events, commit), not the steps.
three = Workflow("bench-three", title="Three trivial steps", max_cycles=10)


@three.step
async def first(ctx: Context) -> None:
    ctx.state["first"] = 1


@three.step
async def second(ctx: Context) -> None:
    ctx.state["second"] = 2


@three.step
async def third(ctx: Context) -> None:
    ctx.state["third"] = 3


# (b) the same with steps that await, as real steps always do: each cycle's start is then
# committed (and followed) on its own before the step ends, two writes per cycle.
three_await = Workflow("bench-three-await", title="Three steps that await", max_cycles=10)


@three_await.step(name="first")
async def first_await(ctx: Context) -> None:
    await asyncio.sleep(0)
    ctx.state["first"] = 1


@three_await.step(name="second")
async def second_await(ctx: Context) -> None:
    await asyncio.sleep(0)
    ctx.state["second"] = 2


@three_await.step(name="third")
async def third_await(ctx: Context) -> None:
    await asyncio.sleep(0)
    ctx.state["third"] = 3


# (a, d) one step awaiting a long sleep: an execution in flight that holds a task and no CPU.
hold = Workflow("bench-hold", title="One step awaiting a long sleep")


@hold.step(timeout=86_400.0)
async def sleep_long(ctx: Context) -> None:
    await asyncio.sleep(float(ctx.input.get("seconds", 3600.0)))


# (e) progress events for WebSocket followers; `t_call` (epoch seconds) is when the step called
# ctx.progress, carried to the followers under `custom_data`.
progress = Workflow("bench-progress", title="Paced progress reports")


@progress.step(timeout=600.0)
async def report(ctx: Context) -> Any:
    count = int(ctx.input.get("events", 20))
    interval = float(ctx.input.get("interval", 0.25))
    for n in range(1, count + 1):
        await asyncio.sleep(interval)
        await ctx.progress(100.0 * n / count, f"event {n}", n=n, t_call=time.time())
    return None
