"""The bundled audit-plan workflow, driven by `workflowd.testing` as a user would test theirs:
approved (both branches), rejected, cancelled, and across restarts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from workflowd.examples import audit
from workflowd.testing import WorkflowEnvironment


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[WorkflowEnvironment]:
    async with WorkflowEnvironment([audit], path=tmp_path) as environment:
        yield environment


def assert_gapless(seqs: list[int]) -> None:
    assert seqs == list(range(1, len(seqs) + 1))


async def test_approved_plan_takes_the_quick_check(env: WorkflowEnvironment) -> None:
    """Two areas: drafted, approved, routed `fast`, checked, reported, completed at 100%."""
    run = await env.start("audit-plan", {"areas": ["access", "change-mgmt"]})
    waiting = await env.wait_for(run, "awaiting_approval")
    assert waiting.current_step is not None
    assert waiting.current_step.name == "approve_plan"
    assert (await env.approve(run, "looks good")).approved
    done = await env.finished(run)
    assert done.status == "completed"
    assert done.result["issues"] == 0
    assert done.progress.percentage == 100
    assert done.approval is not None
    assert (done.approval.status, done.approval.comment) == ("approved", "looks good")
    trace = await env.client.trace(run.execution_id)
    assert trace.execution_path == ["PlannerAgent", "approve_plan", "route", "DataAgent",
                                    "report"]  # agents' names, else the step's
    assert trace.branch_decisions["depth"].outcome == "fast"
    steps = {s.name: s.status for s in await env.steps(run)}
    assert steps["deep_dive"] == "skipped"
    assert [line.message for line in await env.logs(run)] == ["plan drafted"]
    assert_gapless([e.seq for e in await env.events(run)])


async def test_three_areas_take_the_deep_dive(env: WorkflowEnvironment) -> None:
    """Three areas route `deep`: the analysis finds an issue in the odd ones."""
    run = await env.start("audit-plan", {"areas": ["access", "change-mgmt", "backups"]})
    await env.wait_for(run, "awaiting_approval")
    await env.approve(run)
    done = await env.finished(run)
    assert done.status == "completed"
    assert done.result["issues"] == 2
    assert done.state["findings"][0] == {"area": "access", "issues": 1}


async def test_rejected_plan_stops_at_the_gate(env: WorkflowEnvironment) -> None:
    """A rejection ends the execution `rejected`, the gate failed and later steps skipped."""
    run = await env.start("audit-plan")
    await env.wait_for(run, "awaiting_approval")
    assert (await env.reject(run, "scope too narrow")).status == "rejected"
    done = await env.finished(run)
    assert done.status == "rejected"
    assert done.approval is not None
    assert done.approval.comment == "scope too narrow"
    steps = {s.name: s.status for s in await env.steps(run)}
    assert steps == {"draft_plan": "completed", "approve_plan": "failed", "route": "skipped",
                     "quick_check": "skipped", "deep_dive": "skipped", "report": "skipped"}
    types = await env.event_types(run)
    assert types[-1] == "workflow_rejected"
    assert "approval_rejected" in types


async def test_waiting_for_approval_survives_a_restart(env: WorkflowEnvironment) -> None:
    """Restarted at the gate, it still waits there, and an approval after the restart runs it
    to the end: nothing ran twice, the events have no gap."""
    run = await env.start("audit-plan")
    await env.wait_for(run, "awaiting_approval")
    before = await env.events(run)
    await env.restart()
    assert (await env.status(run)).status == "awaiting_approval"
    assert [e.seq for e in await env.events(run)] == [e.seq for e in before]
    await env.approve(run, "after the restart")
    done = await env.finished(run)
    assert done.status == "completed"
    assert [s.name for s in await env.steps(run)].count("draft_plan") == 1
    assert_gapless([e.seq for e in await env.events(run)])


async def test_a_step_cut_off_by_a_restart_runs_again(env: WorkflowEnvironment) -> None:
    """A restart that cuts off the running step (no grace, as a crash would) resumes the
    execution from its last committed cycle: the step runs again, then it goes on."""
    run = await env.start("audit-plan")
    await env.wait_for_event(run, "step_progress", step="draft_plan")
    await env.restart(grace=0)
    await env.wait_for(run, "awaiting_approval")
    drafts = [e for e in await env.events(run)
              if e.type == "step_started" and e["step"] == "draft_plan"]
    assert [e["cycle"] for e in drafts] == [1, 1]  # the cut-off cycle, run again
    await env.approve(run)
    assert (await env.finished(run)).status == "completed"
    assert_gapless([e.seq for e in await env.events(run)])


async def test_cancelled_while_drafting(env: WorkflowEnvironment) -> None:
    """A cancel cuts the running step: its record fails `cancelled`, the execution too."""
    run = await env.start("audit-plan")
    await env.wait_for_event(run, "step_progress", step="draft_plan")
    assert (await env.cancel(run)).cancelled
    done = await env.finished(run)
    assert done.status == "cancelled"
    draft = next(s for s in await env.steps(run) if s.name == "draft_plan")
    assert draft.status == "failed"
    assert draft.error is not None
    assert draft.error.code == "cancelled"
