"""Version 2 of the workflows of `versions_v1`, as deployed after a restart."""

from __future__ import annotations

from workflowd import Context, Workflow

evolving = Workflow("evolving", title="Gains a step in version 2", version=2)


@evolving.step
async def first(ctx: Context) -> None:
    ctx.state["first"] = 2


evolving.approval("check")


@evolving.step
async def last(ctx: Context) -> None:
    ctx.state["last"] = 2


@evolving.step
async def added(ctx: Context) -> None:
    ctx.state["added"] = 2


shrinking = Workflow("shrinking", title="Loses the step after its gate in version 2",
                     version=2)


@shrinking.step
async def start(ctx: Context) -> None:
    ctx.state["start"] = 2


shrinking.approval("review")
