"""The `audit-plan` workflow: draft a plan, wait for a human, route, analyse, report.

The delays are short simulations of agents at work, so a new user sees progress move.
"""

from __future__ import annotations

import asyncio
from typing import Any

from workflowd import Context, Workflow, done, goto

__all__ = ["audit"]

audit = Workflow("audit-plan", title="Audit plan", max_cycles=15, cycle_timeout=60.0,
                 timeout=3600.0, cycle_delay=0.0, version=1,
                 description="Draft an audit plan, approve it, then run the analyses.")

DELAY = 0.2


@audit.step(kind="agent_execution", agent="PlannerAgent")
async def draft_plan(ctx: Context) -> None:
    await ctx.progress(10, "Reading scope", current_task="scope")
    await asyncio.sleep(DELAY)
    areas = ctx.input.get("areas") or ["access", "change-mgmt"]
    await ctx.progress(60, "Drafting plan", current_task="controls")
    await asyncio.sleep(DELAY)
    ctx.state["plan"] = list(areas)
    ctx.log("plan drafted", areas=len(areas))


audit.approval("approve_plan", prompt="Approve the audit plan?")


@audit.step(kind="decision_point")
async def route(ctx: Context) -> Any:
    depth = "fast" if len(ctx.state["plan"]) < 3 else "deep"
    ctx.decide("depth", depth)
    return goto("quick_check" if depth == "fast" else "deep_dive")


@audit.step(kind="agent_execution", agent="DataAgent", retries=2, timeout=30.0)
async def quick_check(ctx: Context) -> Any:
    findings = []
    for n, area in enumerate(ctx.state["plan"], start=1):
        await asyncio.sleep(DELAY)
        await ctx.progress(100 * n / len(ctx.state["plan"]), f"Checked {area}", current_task=area)
        findings.append({"area": area, "issues": 0})
    ctx.state["findings"] = findings
    return goto("report")


@audit.step(kind="agent_execution", agent="AnalysisAgent", retries=2, timeout=30.0)
async def deep_dive(ctx: Context) -> None:
    findings = []
    for n, area in enumerate(ctx.state["plan"], start=1):
        await asyncio.sleep(DELAY)
        await ctx.progress(100 * n / len(ctx.state["plan"]), f"Analysed {area}",
                           current_task=area, samples=25 * n)
        findings.append({"area": area, "issues": n % 2})
    ctx.state["findings"] = findings


@audit.step(kind="tool_call", tool="ReportWriter")
async def report(ctx: Context) -> Any:
    await ctx.progress(50, "Writing report")
    await asyncio.sleep(DELAY)
    issues = sum(f["issues"] for f in ctx.state["findings"])
    return done({"plan": ctx.state["plan"], "findings": ctx.state["findings"], "issues": issues})
