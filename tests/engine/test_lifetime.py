"""Steps with a real lifetime (issue 8 §3, §4): timeouts, soft timeouts, cancels that are
swallowed, threads that run on, read-only input, copied reports, logs as they come."""

from __future__ import annotations

import asyncio
import tomllib
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from tests import workflows
from tests.conftest import MakeClient
from tests.helpers import (
    API,
    LogWatch,
    assert_gapless,
    events,
    get_json,
    pages,
    submit,
    wait_for_event,
    wait_for_status,
)
from workflowd.config import EngineSettings, Settings
from workflowd.engine.runner import MAX_LOG_LINES

Client = TestClient[Any, Any]
TERMINAL = ("completed", "failed", "cancelled", "timed_out", "rejected")
ROOT = Path(__file__).resolve().parents[2]


async def _execution(client: Client, execution_id: str) -> dict[str, Any]:
    data: dict[str, Any] = await get_json(client, f"{API}/executions/{execution_id}")
    return data


async def _steps(client: Client, execution_id: str) -> list[dict[str, Any]]:
    data = await get_json(client, f"{API}/executions/{execution_id}/steps")
    items: list[dict[str, Any]] = data["items"]
    return items


async def _logs(client: Client, execution_id: str) -> list[dict[str, Any]]:
    return await pages(client, f"{API}/executions/{execution_id}/logs")


async def _metric(client: Client, name: str) -> float:
    text = await (await client.get("/metrics")).text()
    line = next(line for line in text.splitlines() if line.startswith(f"{name} "))
    return float(line.split()[1])


def _one_terminal(items: list[dict[str, Any]], expected: str) -> None:
    terminal = [e["type"] for e in items if e["type"].startswith("workflow_")
                and e["type"] not in ("workflow_queued", "workflow_started",
                                      "workflow_paused", "workflow_resumed")]
    assert terminal == [expected]
    assert items[-1]["type"] == expected


# ---- cancel ----------------------------------------------------------------------------------


async def test_cancel_of_a_step_that_swallows_it_answers_within_the_grace(
        make_client: MakeClient) -> None:
    """A step that swallows CancelledError: cancel answers 202 within cancel_grace, the
    execution ends `cancelled`, and its slot runs the next execution."""
    client = await make_client(engine={"cancel_grace": 0.3, "max_concurrent": 1})
    execution_id = (await submit(client, "stubborn", input={"name": "s"}))["execution_id"]
    await wait_for_event(client, execution_id, "step_started")
    async with asyncio.timeout(0.3 + 2.0):
        resp = await client.post(f"{API}/executions/{execution_id}/cancel")
    assert resp.status == 202, await resp.text()
    assert (await resp.json())["status"] == "cancelled"
    assert workflows.SEEN["s"] == "cancel swallowed"
    status = await wait_for_status(client, execution_id, *TERMINAL)
    assert status["status"] == "cancelled"
    items = await events(client, execution_id)
    assert_gapless(items)
    _one_terminal(items, "workflow_cancelled")
    step = (await _steps(client, execution_id))[0]
    assert step["status"] == "failed"
    assert step["error"]["code"] == "cancelled"
    # The slot is free although the cut-off task still runs: the next execution runs.
    nxt = (await submit(client, "three-steps"))["execution_id"]
    assert (await wait_for_status(client, nxt, *TERMINAL))["status"] == "completed"
    workflows.release("s-after").set()  # the cut-off step ends; nothing more is written
    record = await _execution(client, execution_id)
    assert record["status"] == "cancelled"
    assert await events(client, execution_id) == items


# ---- timeouts --------------------------------------------------------------------------------


async def test_a_def_step_past_its_timeout_cannot_report_afterwards(client: Client) -> None:
    """A `def` step's thread that runs past its timeout sees `ctx.cancelled`; its progress,
    log lines, state and decisions are discarded, the next attempt's are kept."""
    execution_id = (await submit(client, "lingering", input={"name": "l"}))["execution_id"]
    status = await wait_for_status(client, execution_id, *TERMINAL)
    assert status["status"] == "completed", await _execution(client, execution_id)
    done = workflows.thread_event("l-done")
    assert await asyncio.to_thread(done.wait, 10)
    assert workflows.SEEN["l"] == {"cancelled": True}
    # Anything the first thread sent was handed to the loop before `done`: let it arrive.
    await client.get(f"{API}/executions/{execution_id}")
    items = await events(client, execution_id)
    assert_gapless(items)
    assert not [e for e in items if e["type"] == "step_progress"]
    assert not [e for e in items if e["type"] == "branch_decided"]
    retry = next(e for e in items if e["type"] == "step_retrying")
    assert retry["attempt"] == 1
    assert "timeout" in retry["error"]
    assert await _logs(client, execution_id) == []
    record = await _execution(client, execution_id)
    assert record["result"] == {"second": True}
    assert record["progress"]["message"] is None


async def test_soft_timeout_sets_expiring_and_is_recorded(client: Client) -> None:
    """`soft_timeout=`: `ctx.expiring` is set (asyncio and threading) and `step_soft_timeout`
    recorded, before the hard timeout; the step saves its work and completes."""
    for workflow in ("soft", "soft-def"):
        execution_id = (await submit(client, workflow))["execution_id"]
        status = await wait_for_status(client, execution_id, *TERMINAL)
        assert status["status"] == "completed", workflow
        record = await _execution(client, execution_id)
        assert record["result"] == {"saved": True}
        items = await events(client, execution_id)
        assert_gapless(items)
        soft = [e for e in items if e["type"] == "step_soft_timeout"]
        assert len(soft) == 1
        assert soft[0]["attempt"] == 1
        assert soft[0]["cycle"] == 1
        step = (await _steps(client, execution_id))[0]
        assert step["status"] == "completed"
        assert "soft_timeout" in step["metadata"]


async def test_a_steps_timeout_overrides_the_workflows_cycle_timeout(client: Client) -> None:
    """A step with timeout 2 s in a workflow with cycle_timeout 0.5 s runs 0.8 s and completes."""
    execution_id = (await submit(client, "own-timeout"))["execution_id"]
    status = await wait_for_status(client, execution_id, *TERMINAL)
    assert status["status"] == "completed", await _execution(client, execution_id)
    assert (await _execution(client, execution_id))["result"] == {"slept": True}


async def test_no_default_cycle_timeout(make_client: MakeClient) -> None:
    """No cycle timeout by default (settings and config.toml): a step declaring none runs on."""
    assert EngineSettings().default_cycle_timeout is None
    shipped = Settings.model_validate(tomllib.loads((ROOT / "config.toml").read_text()))
    assert shipped.engine.default_cycle_timeout is None
    client = await make_client(engine=shipped.engine.model_dump() | {"shutdown_grace": 1.0})
    execution_id = (await submit(client, "no-limit"))["execution_id"]
    status = await wait_for_status(client, execution_id, *TERMINAL)
    assert status["status"] == "completed", await _execution(client, execution_id)


async def test_an_external_wait_is_bounded_by_the_workflows_timeout(client: Client) -> None:
    """An external step with a 60 s timeout in a workflow of 0.5 s ends `timed_out`."""
    execution_id = (await submit(client, "external-bounded"))["execution_id"]
    status = await wait_for_status(client, execution_id, *TERMINAL, timeout=10)
    assert status["status"] == "timed_out"
    record = await _execution(client, execution_id)
    assert record["error"]["code"] == "timed_out"
    step = (await _steps(client, execution_id))[0]
    assert (step["status"], step["error"]["code"]) == ("failed", "timed_out")
    items = await events(client, execution_id)
    assert_gapless(items)
    _one_terminal(items, "workflow_timed_out")


# ---- what a step holds -----------------------------------------------------------------------


async def test_input_is_read_only_and_custom_data_is_copied(client: Client) -> None:
    """`ctx.input` refuses changes all the way down; custom_data changed after `ctx.progress`
    leaves the stored report as it was."""
    given = {"nested": {"items": [{"a": 1}]}}
    execution_id = (await submit(client, "frozen-input", input=given))["execution_id"]
    status = await wait_for_status(client, execution_id, *TERMINAL)
    assert status["status"] == "completed"
    record = await _execution(client, execution_id)
    assert record["input"] == given
    assert record["result"]["tried"] == {"top": "refused", "nested": "refused",
                                         "list": "refused", "deep": "refused"}
    progress = [e for e in await events(client, execution_id) if e["type"] == "step_progress"]
    assert [e["custom_data"] for e in progress] == [{"data": {"items": [1],
                                                              "meta": {"k": "v"}}}]
    step = (await _steps(client, execution_id))[0]
    assert step["metadata"]["custom_data"] == {"data": {"items": [1], "meta": {"k": "v"}}}


# ---- logs ------------------------------------------------------------------------------------


async def test_log_lines_are_visible_while_the_step_runs(client: Client) -> None:
    """A `ctx.log` line is at `/logs` while its step still runs (not at the cycle's end)."""
    execution_id = (await submit(client, "logger", input={"name": "g"}))["execution_id"]
    await wait_for_event(client, execution_id, "step_started")
    async with asyncio.timeout(10):
        while not (lines := await _logs(client, execution_id)):
            await asyncio.sleep(0.02)
    assert [(line["message"], line["fields"]) for line in lines] == [("first line", {"n": 1})]
    assert (await _execution(client, execution_id))["status"] == "running"
    workflows.release("g").set()
    assert (await wait_for_status(client, execution_id, *TERMINAL))["status"] == "completed"


async def test_log_lines_are_bounded_per_cycle(client: Client, log_watch: LogWatch) -> None:
    """Past MAX_LOG_LINES a cycle's lines are dropped, and one line more says so."""
    execution_id = (await submit(client, "logger", input={"name": "b",
                                                          "lines": MAX_LOG_LINES + 50})
                    )["execution_id"]
    workflows.release("b").set()
    assert (await wait_for_status(client, execution_id, *TERMINAL))["status"] == "completed"
    lines = await _logs(client, execution_id)
    assert len(lines) == MAX_LOG_LINES + 1
    assert "dropped" in lines[-1]["message"]
    assert lines[-2]["message"] == f"line {MAX_LOG_LINES - 2}"
    assert len(log_watch.find("step_log", execution_id=execution_id)) == MAX_LOG_LINES + 1


# ---- a task that dies of a bug ---------------------------------------------------------------


async def test_a_runner_that_dies_of_a_bug_ends_failed_internal_error(
        client: Client, monkeypatch: Any, log_watch: LogWatch) -> None:
    """The bug is simulated: `transitions.cycle_finished` is monkeypatched to raise inside the
    runner. The execution ends `failed` (`internal_error`), never left `running` without a task."""
    from workflowd.engine import transitions

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug in the engine")

    monkeypatch.setattr(transitions, "cycle_finished", broken)
    execution_id = (await submit(client, "three-steps"))["execution_id"]
    status = await wait_for_status(client, execution_id, *TERMINAL)
    assert status["status"] == "failed"
    record = await _execution(client, execution_id)
    assert record["error"]["code"] == "internal_error"
    assert "a bug in the engine" in record["error"]["message"]
    items = await events(client, execution_id)
    assert_gapless(items)
    _one_terminal(items, "workflow_failed")
    assert await _metric(client, "workflowd_executions_running") == 0
    assert log_watch.find("runner_crashed", execution_id=execution_id)


async def test_log_fields_may_be_named_like_the_engines(client: Client) -> None:
    """`ctx.log(..., step=..., cycle=...)`: the step's own fields are kept as given, and the
    step does not fail for naming them like the engine's."""
    execution_id = (await submit(client, "namesake-logger"))["execution_id"]
    assert (await wait_for_status(client, execution_id, *TERMINAL))["status"] == "completed"
    lines = await _logs(client, execution_id)
    assert [(line["step"], line["fields"]) for line in lines] == [
        ("tell", {"step": "download", "cycle": 7, "message": "m", "execution_id": "x"})]
