"""A workflow module some tests load and some restarts leave out (its executions are held)."""

from __future__ import annotations

from tests.workflows import release
from workflowd import Context, Workflow

optional = Workflow("optional", title="Registered only when its module is loaded")


@optional.step
async def hold(ctx: Context) -> None:
    await release(ctx.input["name"]).wait()
    ctx.state["held"] = ctx.input["name"]
