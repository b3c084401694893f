"""`workflowd.testing.WorkflowEnvironment`: the service in-process on a store of its own, for
tests of workflows (the audit-plan example's tests are in tests/examples)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests import workflows
from workflowd import Context, Workflow, done, goto
from workflowd.api.keys import SCHEDULER
from workflowd.errors import DefinitionError
from workflowd.testing import WorkflowEnvironment

doubler = Workflow("doubler", title="Doubles its input")


@doubler.step
async def double(ctx: Context) -> Any:
    return done({"value": ctx.input["value"] * 2})


twice = Workflow("external-twice", title="An outside worker's step, run again by a goto")
twice.external("work", timeout=30.0)


@twice.step
async def tally(ctx: Context) -> Any:
    ctx.state["rounds"] = ctx.state.get("rounds", 0) + 1
    if ctx.state["rounds"] < 2:
        return goto("work")
    return done({"work": ctx.state["work"], "rounds": ctx.state["rounds"]})


async def test_workflow_objects_run_without_a_module() -> None:
    """A `Workflow` object given directly is registered alone, and runs to its result."""
    async with WorkflowEnvironment([doubler]) as env:
        execution = await env.run("doubler", {"value": 21})
        assert execution.result == {"value": 42}
        assert [wf.id for wf in await env.client.workflows()] == ["doubler"]
        assert env.url.startswith("http://127.0.0.1:")


async def test_the_service_checks_apply_to_the_workflows_given() -> None:
    """The checks `workflowd serve` makes at start-up run on the test's workflows too: an
    external step sending to a host `[outbound] allow_hosts` does not allow is refused."""
    remote = Workflow("remote-worker", title="Sends its step to a worker elsewhere")
    remote.external("work", url="https://worker.example.com/run")
    env = WorkflowEnvironment([remote],
                              settings={"outbound": {"allow_hosts": ["hooks.example.org"]}})
    with pytest.raises(DefinitionError, match="external step 'work': url refused"):
        async with env:
            pass
    same_id = Workflow("three-steps", title="Takes an id tests.workflows has")
    with pytest.raises(DefinitionError, match="duplicate workflow id 'three-steps'"):
        async with WorkflowEnvironment(["tests.workflows", same_id]):
            pass


async def test_external_step_completed_and_failed() -> None:
    """`complete` finishes an external step as its worker would (the token found for it)."""
    async with WorkflowEnvironment(["tests.workflows"]) as env:
        ok = await env.start("external-job")
        await env.progress(ok, "work", 50, message="half")
        await env.complete(ok, "work", {"pages": 2})
        assert (await env.finished(ok)).result == {"work": {"pages": 2}, "prepared": True}
        bad = await env.start("external-job")
        await env.complete(bad, "work", error={"code": "ocr_failed", "message": "blurry"})
        failed = await env.finished(bad)
        assert failed.status == "failed"
        assert failed.error is not None
        assert failed.error.code == "ocr_failed"


async def test_external_step_run_again_is_completed_again() -> None:
    """A step that runs again (a goto loop) is completed with the token of its latest run,
    each time once it waits again."""
    async with WorkflowEnvironment([twice]) as env:
        run = await env.start("external-twice")
        await env.complete(run, "work", {"round": 1})
        await env.progress(run, "work", 50)
        await env.complete(run, "work", {"round": 2})
        execution = await env.finished(run)
        assert execution.result == {"work": {"round": 2}, "rounds": 2}


async def test_external_wait_survives_a_restart(tmp_path: Path) -> None:
    """An external step waited on across a restart is completed after it."""
    async with WorkflowEnvironment(["tests.workflows"], path=tmp_path) as env:
        run = await env.start("external-job")
        await env.wait_for_event(run, "step_started", step="work")
        await env.restart()
        await env.complete(run, "work", {"after": "restart"})
        assert (await env.finished(run)).status == "completed"
    assert (tmp_path / "workflowd.db").exists()  # a given path is kept


async def test_wait_for_says_how_an_execution_ended_otherwise() -> None:
    """Waiting for a status an execution never reaches fails with how it ended instead."""
    async with WorkflowEnvironment(["tests.workflows"]) as env:
        run = await env.start("flaky", {"fail_times": 9})
        with pytest.raises(AssertionError, match=r"ended failed.*step_failed"):
            await env.wait_for(run, "completed")
        with pytest.raises(TimeoutError):
            await env.wait_for(await env.start("sleeper"), "completed", timeout=0.2)


async def test_settings_sections_and_cancel() -> None:
    """Settings sections apply to the app; a cancel ends a running execution."""
    async with WorkflowEnvironment(["tests.workflows"],
                                   settings={"engine": {"max_concurrent": 1}}) as env:
        assert env.app[SCHEDULER].settings.max_concurrent == 1
        workflows.release("t1")
        first = await env.start("waiter", {"name": "t1"})
        second = await env.start("waiter", {"name": "t2"})
        await env.wait_for(first, "running")
        assert (await env.status(second)).status == "queued"
        await env.cancel(first)
        assert (await env.finished(first)).status == "cancelled"
        await env.wait_for(second, "running")
        await env.cancel(second)
        assert (await env.finished(second)).status == "cancelled"
        types = await env.event_types(second)
        assert types[0] == "workflow_queued"
        assert types[-1] == "workflow_cancelled"


async def test_not_running_outside_the_context() -> None:
    """Outside `async with` there is no service to drive."""
    env = WorkflowEnvironment([doubler])
    with pytest.raises(RuntimeError):
        env.app  # noqa: B018
    await env.close()  # closing what never started is fine


async def test_restart_does_not_wait_for_a_long_poll(tmp_path: Path) -> None:
    """A long-poll in flight is cut off at the restart, not waited on for its whole wait."""
    async with WorkflowEnvironment(["tests.workflows"], path=tmp_path) as env:
        run = await env.start("external-job")
        await env.wait_for_event(run, "step_started", step="work")
        status = await env.status(run)
        poll = asyncio.create_task(env.client.poll(run.execution_id, status.seq, 20.0))
        await asyncio.sleep(0.2)  # the long-poll is under way
        async with asyncio.timeout(5.0):
            await env.restart()
        poll.cancel()
        await asyncio.gather(poll, return_exceptions=True)


async def test_wait_for_rides_out_a_restart(tmp_path: Path) -> None:
    """A `wait_for` under way while the service restarts keeps waiting, then sees the end."""
    async with WorkflowEnvironment(["tests.workflows"], path=tmp_path) as env:
        run = await env.start("external-job")
        await env.wait_for_event(run, "step_started", step="work")
        waiting = asyncio.create_task(env.wait_for(run, "completed"))
        await asyncio.sleep(0.2)  # the long-poll is under way
        await env.restart()
        await env.complete(run, "work", {"after": "restart"})
        assert (await waiting).status == "completed"
