"""The benchmark's own workflows, loaded by the service under test (`[workflows] modules`)."""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from typing import Any

from workflowd import Context, Workflow

__all__ = [
    "CHAOS_WORKFLOWS",
    "RUNS_KEY",
    "RUN_DECISION",
    "chaos_external",
    "chaos_gated",
    "chaos_retry",
    "chaos_three",
    "hold",
    "progress",
    "three",
    "three_await",
]

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


# ---- the chaos mix (`python -m bench chaos`) -----------------------------------------------
#
# Every step that runs code here ends with `_ran`: it appends one line
# `execution_id cycle run_token step attempt` to the side file named by the input (O_APPEND,
# fsync, so the line is on disk before the step returns and its cycle can commit), with a fresh
# token, and leaves that token where the cycle's commit lands it: a `branch_decided` event named
# RUN_DECISION (events are append-only, so every commit of a cycle stays visible, even one whose
# state a later commit replaced) and `state[RUNS_KEY][str(cycle)]`. `bench.chaos_check` then
# tells a re-run of a committed cycle from the allowed re-run of one cut off before its commit.
# Gates and external steps run no code in the process and write no line.

RUN_DECISION = "chaos_run"
RUNS_KEY = "chaos_runs"


def _append_line(path: str, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


async def _pause(ctx: Context) -> None:
    await asyncio.sleep(float(ctx.input.get("sleep_ms", 5.0)) / 1000.0)


async def _ran(ctx: Context) -> str:
    """Write this run's side line (in a thread: an fsync must not stall the service's loop)."""
    token = secrets.token_hex(8)
    line = f"{ctx.execution_id} {ctx.cycle} {token} {ctx.step} {ctx.attempt}\n"
    await asyncio.to_thread(_append_line, str(ctx.input["side"]), line)
    return token


def _keep(ctx: Context, token: str) -> None:
    ctx.decide(RUN_DECISION, token)
    runs = ctx.state.setdefault(RUNS_KEY, {})
    runs[str(ctx.cycle)] = token


async def _chaos_step(ctx: Context) -> None:
    # Await before and after the line: a kill can land before it (no line), or between the
    # line and the commit (a line whose token is never committed: the allowed re-run).
    await _pause(ctx)
    _keep(ctx, await _ran(ctx))
    await _pause(ctx)


chaos_three = Workflow("chaos-three", title="Chaos: three steps that await", max_cycles=10)


@chaos_three.step
async def c3_first(ctx: Context) -> None:
    await _chaos_step(ctx)


@chaos_three.step
async def c3_second(ctx: Context) -> None:
    await _chaos_step(ctx)


@chaos_three.step
async def c3_third(ctx: Context) -> None:
    await _chaos_step(ctx)


chaos_gated = Workflow("chaos-gated", title="Chaos: a gate the driver approves", max_cycles=10)


@chaos_gated.step
async def cg_before(ctx: Context) -> None:
    await _chaos_step(ctx)


chaos_gated.approval("cg_gate", prompt="Go on?")


@chaos_gated.step
async def cg_after(ctx: Context) -> None:
    await _chaos_step(ctx)


chaos_retry = Workflow("chaos-retry", title="Chaos: a step that fails its first attempt",
                       max_cycles=10)


@chaos_retry.step(retries=1, backoff=0.01)
async def cr_flaky(ctx: Context) -> None:
    await _pause(ctx)
    token = await _ran(ctx)
    if ctx.attempt == 1:
        raise RuntimeError("the first attempt fails on purpose")
    _keep(ctx, token)


@chaos_retry.step
async def cr_after(ctx: Context) -> None:
    await _chaos_step(ctx)


chaos_external = Workflow("chaos-external", title="Chaos: a step done by the driver",
                          max_cycles=10)


@chaos_external.step
async def ce_prepare(ctx: Context) -> None:
    await _chaos_step(ctx)


# Far past the run's own bounds: a wait the driver never answers shows as not terminal, not
# as a timeout the mix did not ask for.
chaos_external.external("ce_work", timeout=3600.0)


@chaos_external.step
async def ce_finish(ctx: Context) -> None:
    if not isinstance(ctx.state.get("ce_work"), dict):
        raise RuntimeError(f"the worker's output is missing: {ctx.state.get('ce_work')!r}")
    await _chaos_step(ctx)


# The mix: each workflow's steps in the order they run (none loops), with whether the step
# runs code in the process (and so writes a side line) or is a gate or an external step.
CHAOS_WORKFLOWS: dict[str, tuple[tuple[str, bool], ...]] = {
    wf.id: tuple((s.name, not (s.is_gate or s.external)) for s in wf.steps)
    for wf in (chaos_three, chaos_gated, chaos_retry, chaos_external)
}
