"""Version 1 of two workflows, as deployed before a restart (see `versions_v2`)."""

from __future__ import annotations

from workflowd import Context, Workflow

evolving = Workflow("evolving", title="Gains a step in version 2", version=1)


@evolving.step
async def first(ctx: Context) -> None:
    ctx.state["first"] = 1


evolving.approval("check")


@evolving.step
async def last(ctx: Context) -> None:
    ctx.state["last"] = 1


shrinking = Workflow("shrinking", title="Loses the step after its gate in version 2",
                     version=1)


@shrinking.step
async def start(ctx: Context) -> None:
    ctx.state["start"] = 1


shrinking.approval("review")


@shrinking.step
async def publish(ctx: Context) -> None:
    ctx.state["published"] = 1
