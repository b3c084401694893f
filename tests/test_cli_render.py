"""The live view's step list, kept by the events alone (`FollowView.saw`): after a whole run it
is the list `/steps` answers, however late in the run that list was first fetched."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.helpers import API, events, get_json, submit, wait_for_status, wait_for_step
from workflowd.answers import Event, StepRecord
from workflowd.cli.render import FollowView

TERMINAL = ("completed", "failed", "cancelled", "timed_out", "rejected")
SHOWN = ("name", "kind", "agent_name", "tool_name", "status", "cycle", "duration_ms")


async def steps(client: TestClient[Any, Any], execution_id: str) -> list[StepRecord]:
    page = await get_json(client, f"{API}/executions/{execution_id}/steps")
    return [StepRecord.model_validate(item) for item in page["items"]]


def shown(records: list[StepRecord]) -> list[tuple[Any, ...]]:
    return [tuple(getattr(r, name) for name in SHOWN) for r in records]


async def declared(client: TestClient[Any, Any], workflow_id: str) -> list[StepRecord]:
    """The list before anything ran: each declared step, pending, its record fields null."""
    info = await get_json(client, f"{API}/workflows/{workflow_id}")
    return [StepRecord(step_id=None, name=s["name"], kind=s["kind"], agent_name=s["agent"],
                       tool_name=s["tool"], status="pending", cycle=None, attempt=None,
                       started_at=None, completed_at=None, duration_ms=None, error=None,
                       progress=None, output=None, metadata={}) for s in info["steps"]]


def folded(view: FollowView, items: list[dict[str, Any]]) -> list[StepRecord]:
    for item in items:
        assert view.saw(Event.model_validate(item)), item
    return view.steps


@pytest.mark.parametrize(("workflow", "body", "decide"), [
    ("three-steps", {}, None),
    ("brancher", {"input": {"way": "right"}}, None),       # a declared step skipped
    ("looper", {}, None),                                  # one step in five cycles, failed
    ("gated", {}, "approve"),                              # a gate: waiting, then completed
    ("gated", {}, "reject"),                               # the gate failed, `after` skipped
    ("sleeper", {}, "cancel"),                             # the running step cut off
])
async def test_steps_kept_by_events(client: TestClient[Any, Any], workflow: str,
                                    body: dict[str, Any], decide: str | None) -> None:
    """Folded over every event, the declared steps become what `/steps` answers at the end."""
    execution_id = (await submit(client, workflow, **body))["execution_id"]
    if decide == "cancel":
        await wait_for_step(client, execution_id)
    elif decide is not None:
        await wait_for_status(client, execution_id, "awaiting_approval")
    if decide is not None:
        resp = await client.post(f"{API}/executions/{execution_id}/{decide}", json={})
        assert resp.status in (200, 202), await resp.text()
    await wait_for_status(client, execution_id, *TERMINAL)
    view = FollowView(execution_id)
    view.load_steps(await declared(client, workflow), 0)
    assert shown(folded(view, await events(client, execution_id))) == \
        shown(await steps(client, execution_id))


async def test_a_list_fetched_later_than_its_snapshot(client: TestClient[Any, Any]) -> None:
    """The list is fetched after the snapshot, so it may hold events the view applies again:
    those come out as the events after them leave them."""
    execution_id = (await submit(client, "gated"))["execution_id"]
    await wait_for_status(client, execution_id, "awaiting_approval")
    at_gate = await steps(client, execution_id)
    assert [r.status for r in at_gate] == ["completed", "waiting", "pending"]
    resp = await client.post(f"{API}/executions/{execution_id}/approve", json={})
    assert resp.status == 202
    await wait_for_status(client, execution_id, *TERMINAL)
    view = FollowView(execution_id)
    view.load_steps(at_gate, 1)  # a snapshot at seq 1, the list as of the gate
    items = await events(client, execution_id)
    assert shown(folded(view, items)) == shown(await steps(client, execution_id))
    assert view.steps_seq == items[-1]["seq"]


def test_an_unknown_step_asks_for_the_list() -> None:
    """An event naming a step or cycle the list does not hold answers False: the caller
    fetches `/steps` again."""
    view = FollowView("x")
    started = Event.model_validate({"seq": 1, "type": "step_started", "execution_id": "x",
                                    "ts": "2026-02-09T14:10:00.100Z", "step": "a", "cycle": 1})
    finished = Event.model_validate({"seq": 2, "type": "step_finished", "execution_id": "x",
                                     "ts": "2026-02-09T14:10:00.200Z", "step": "a", "cycle": 1,
                                     "status": "completed", "duration_ms": 100})
    assert not view.saw(started)
    assert not view.saw(finished)
    assert view.saw(started)  # seen already (seq 1 <= 2): nothing to do
