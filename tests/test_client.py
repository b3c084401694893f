"""`workflowd.client`: every route from Python as typed objects, problems as `ApiError`,
`follow` resuming across a dropped connection, and the blocking `SyncClient`."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpServer

from tests.conftest import MakeClient
from tests.live_server import LiveServer
from workflowd import answers as A
from workflowd.api.stream import close_sockets
from workflowd.client import ApiError, Client, Snapshot, SyncClient, Unreachable

ROOT = Path(__file__).resolve().parent.parent


def url_of(test_client: TestClient[Any, Any]) -> str:
    return str(test_client.make_url("")).rstrip("/")


@pytest.fixture
async def wd(client: TestClient[Any, Any]) -> AsyncIterator[Client]:
    async with Client(url_of(client)) as api:
        yield api


async def _external_token(wd: Client, execution_id: str) -> str:
    async for event in wd.follow(execution_id):
        if event.type == "step_started" and event["step"] == "work":
            token: str = event["callback"]["token"]
            return token
    raise AssertionError("the external step never started")


async def test_every_operation_answers_typed_objects(wd: Client) -> None:
    """Each route has a method, and each answers the model of its route."""
    flows = await wd.workflows()
    assert "audit-plan" in {wf.id for wf in flows}
    assert isinstance(await wd.workflow("audit-plan"), A.WorkflowInfo)
    run = await wd.start("gated", {"x": 1}, labels={"team": "a"}, idempotency_key="k-1")
    assert isinstance(run, A.Summary)
    assert run.links.self.endswith(run.execution_id)
    assert (await wd.start("gated", {"x": 1}, labels={"team": "a"},
                           idempotency_key="k-1")).execution_id == run.execution_id
    status = await wd.status(run.execution_id)
    assert isinstance(status, A.LiveStatus)
    while status.status != "awaiting_approval":
        status = await wd.poll(run.execution_id, status.seq, 5) or status
    assert await wd.poll(run.execution_id, status.seq, 0.01) is None
    with pytest.raises(ApiError) as not_yet:
        await wd.result(run.execution_id)
    assert not_yet.value.status == 409
    approved = await wd.approve(run.execution_id, "fine")
    assert isinstance(approved, A.Approved)
    assert approved.approved
    final = await wd.wait(run.execution_id, 15)
    assert final.status == "completed"
    assert final.is_terminal
    whole = await wd.get(run.execution_id)
    assert isinstance(whole, A.Execution)
    assert whole.approval is not None
    assert whole.approval.comment == "fine"
    assert [s.name for s in await wd.steps(run.execution_id)] == ["before", "sign_off", "after"]
    assert (await wd.trace(run.execution_id)).execution_path == ["before", "sign_off", "after"]
    page = await wd.events(run.execution_id, after=0, limit=2)
    assert [e.seq for e in page.items] == [1, 2]
    assert page.next_cursor == "2"
    every = await wd.all_events(run.execution_id)
    assert [e.seq for e in every] == list(range(1, len(every) + 1))
    assert every[-1].is_terminal
    result = await wd.result(run.execution_id)
    assert result.status == "completed"
    assert result.result == {"before": True, "after": True}

    chatty = await wd.run("chatty", timeout=15)
    assert chatty.status == "completed"
    lines = await wd.logs(chatty.execution_id)
    assert [line.message for line in lines.items] == ["first", "second", "third"]
    assert lines.items[1].fields == {"n": 2}

    rejected = await wd.start("three-steps", require_approval=True)
    assert rejected.status == "awaiting_approval"
    assert (await wd.reject(rejected.execution_id, "no")).status == "rejected"
    sleeping = await wd.start("sleeper")
    async for event in wd.follow(sleeping.execution_id):
        if event.type == "step_progress":
            break
    cancelled = await wd.cancel(sleeping.execution_id)
    assert cancelled.cancelled

    external = await wd.start("external-job")
    token = await _external_token(wd, external.execution_id)
    accepted = await wd.progress(external.execution_id, "work", 40, message="half",
                                 step_token=token)
    assert accepted.accepted
    done = await wd.complete(external.execution_id, "work", {"pages": 3}, step_token=token)
    assert isinstance(done, A.Completion)
    assert (await wd.wait(external.execution_id, 15)).status == "completed"
    assert (await wd.result(external.execution_id)).result["work"] == {"pages": 3}

    listed = await wd.list_executions(workflow_id="gated", labels={"team": "a"})
    assert [item.execution_id for item in listed.items] == [run.execution_id]
    assert len([item async for item in wd.iter_executions(limit=2)]) == 5
    assert (await wd.list_executions(status="rejected")).items[0].execution_id == \
        rejected.execution_id
    assert (await wd.health()).status == "ok"
    assert (await wd.ready()).status == "ready"
    assert "workflowd_executions" in await wd.metrics()
    assert (await wd.openapi())["openapi"] == "3.1.0"


async def test_problems_are_raised_as_api_error(wd: Client, make_client: MakeClient,
                                                tmp_path: Path) -> None:
    """A problem answer is one exception, with its status, code, title, detail and errors."""
    with pytest.raises(ApiError) as unknown:
        await wd.get("nope")
    assert unknown.value.status == 404
    assert unknown.value.code == "unknown_execution"
    assert unknown.value.title
    assert "nope" in unknown.value.detail
    with pytest.raises(ApiError) as invalid:
        await wd.start("three-steps", priority=5000)
    assert invalid.value.status == 422
    assert invalid.value.code == "validation_error"
    assert invalid.value.errors[0].loc == ["body", "priority"]
    with pytest.raises(ApiError) as no_route:
        await wd.request("GET", "/api/v1/nothing")
    assert no_route.value.status == 404
    assert no_route.value.code is None
    full = await make_client(engine={"max_queued": 1, "max_concurrent": 1},
                             store={"path": str(tmp_path / "small.db")})
    async with Client(url_of(full)) as small:
        await small.start("sleeper")
        await small.start("sleeper")
        with pytest.raises(ApiError) as too_many:
            await small.start("sleeper")
    assert too_many.value.status == 429
    assert too_many.value.retry_after is not None


async def test_no_server_is_unreachable() -> None:
    """Nothing listening: `Unreachable`, a ConnectionError."""
    async with Client("http://127.0.0.1:9", timeout=5) as api:
        with pytest.raises(Unreachable):
            await api.workflows()
        with pytest.raises(ConnectionError):
            await api.status("x")


async def test_token_is_sent_as_bearer(aiohttp_server: AiohttpServer) -> None:
    """`token=` goes as `Authorization: Bearer` on requests and on the WebSocket."""
    seen: list[str] = []

    async def record(request: web.Request) -> web.StreamResponse:
        seen.append(request.headers.get("Authorization", ""))
        if request.path.endswith("/ws"):
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            await ws.send_json({"seq": 1, "type": "workflow_completed", "execution_id": "e",
                                "ts": "2026-01-01T00:00:00.000Z"})
            await ws.close()
            return ws
        return web.json_response({"items": [], "next_cursor": None})

    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", record)
    server = await aiohttp_server(app)
    async with Client(str(server.make_url("")).rstrip("/"), token="t0ken") as api:
        await api.workflows()
        assert [event.type async for event in api.follow("e")] == ["workflow_completed"]
    assert seen == ["Bearer t0ken", "Bearer t0ken"]


async def test_follow_replays_then_ends_at_the_terminal_event(wd: Client) -> None:
    """`follow` after 0 gives every event in order, ending with the terminal one; a later
    `after=` gives the rest only, and `snapshots=True` adds the snapshot first."""
    run = await wd.run("three-steps", timeout=15)
    events = [event async for event in wd.follow(run.execution_id)]
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert events[-1].type == "workflow_completed"
    rest = [event async for event in wd.follow(run.execution_id, after=len(events) - 2)]
    assert [e.seq for e in rest] == [len(events) - 1, len(events)]
    items = [item async for item in wd.follow(run.execution_id, len(events), snapshots=True)]
    assert len(items) == 1
    assert isinstance(items[0], Snapshot)
    assert items[0].status.status == "completed"
    with pytest.raises(ApiError) as unknown:
        [event async for event in wd.follow("nope")]
    assert unknown.value.status == 404


async def test_follow_resumes_after_the_server_closes_the_socket(
        client: TestClient[Any, Any], wd: Client) -> None:
    """The server closes every follower mid-run: `follow` reconnects with `after=` and goes
    on, with no gap and no duplicate."""
    run = await wd.start("gated")
    seen: list[A.Event] = []
    snapshots: list[Snapshot] = []

    async def drop_then_approve() -> None:
        await close_sockets(client.app)  # the server side closes the connection (1001)
        await wd.approve(run.execution_id)  # committed while the follower is away

    dropped: list[asyncio.Task[None]] = []
    async for item in wd.follow(run.execution_id, snapshots=True):
        if isinstance(item, Snapshot):
            snapshots.append(item)
            continue
        seen.append(item)
        if item.type == "approval_required" and not dropped:
            dropped.append(asyncio.create_task(drop_then_approve()))
    await dropped[0]
    assert len(snapshots) == 2
    assert [e.seq for e in seen] == list(range(1, len(seen) + 1))
    assert [e.model_dump() for e in seen] == [
        e.model_dump() for e in await wd.all_events(run.execution_id)]
    assert seen[-1].type == "workflow_completed"


async def test_follow_and_wait_ride_out_a_restart(
        make_live_server: Callable[..., LiveServer]) -> None:
    """The service restarts while an execution waits: a follower and a waiter resume against
    the new process (same port, same store) and see it to the end, without gap or repeat."""
    first = make_live_server()
    async with Client(first.url) as api:
        run = await api.start("gated")
        seen: list[A.Event] = []

        async def restart_then_approve() -> None:
            await asyncio.to_thread(first.stop)
            await asyncio.to_thread(make_live_server, first.port)
            await api.approve(run.execution_id, "after the restart")

        restarted: list[asyncio.Task[None]] = []
        waiter = asyncio.create_task(api.wait(run.execution_id, 30))
        async for event in api.follow(run.execution_id):
            seen.append(event)
            if event.type == "approval_required" and not restarted:
                restarted.append(asyncio.create_task(restart_then_approve()))
        await restarted[0]
        assert (await waiter).status == "completed"
        assert [e.seq for e in seen] == list(range(1, len(seen) + 1))
        assert seen[-1].type == "workflow_completed"
        assert len(seen) == len(await api.all_events(run.execution_id))


def test_sync_client_without_a_running_loop(live_server: LiveServer) -> None:
    """`SyncClient` in plain blocking code: start, follow, approve, wait, iterate."""
    with SyncClient(live_server.url) as wd:
        run = wd.start("gated")
        for event in wd.follow(run.execution_id):
            if event.type == "approval_required":
                wd.approve(run.execution_id, "ok")
        assert wd.wait(run.execution_id, 15).status == "completed"
        assert wd.get(run.execution_id).state == {"before": True, "after": True}
        assert [item.execution_id for item in wd.iter_executions()] == [run.execution_id]
        with pytest.raises(ApiError):
            wd.status("nope")
    with SyncClient(live_server.url) as again:  # a new thread, a new loop
        assert again.status(run.execution_id).is_completed


def test_wait_for_given_statuses(live_server: LiveServer) -> None:
    """`wait(statuses=...)` answers once the execution is in one of them, or at its end when
    it finished in another (async and blocking alike)."""
    with SyncClient(live_server.url) as wd:
        run = wd.start("gated")
        paused = wd.wait(run.execution_id, 15, statuses=["awaiting_approval"])
        assert paused.status == "awaiting_approval"
        wd.approve(run.execution_id, "ok")
        assert wd.wait(run.execution_id, 15, statuses=["rejected"]).status == "completed"


async def test_sync_client_inside_a_running_loop(live_server: LiveServer) -> None:
    """Called from a thread whose loop runs (a notebook, an async test), it still answers."""
    wd = SyncClient(live_server.url)
    try:
        assert wd.health().status == "ok"
        assert wd.run("three-steps", timeout=15).status == "completed"
    finally:
        wd.close()


def test_sync_client_from_a_plain_script(live_server: LiveServer, tmp_path: Path) -> None:
    """A script that imports `SyncClient` and runs a workflow to its end."""
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(f"""
        from workflowd.client import SyncClient

        wd = SyncClient({live_server.url!r})
        run = wd.run("three-steps", {{"value": 7}}, timeout=15)
        print(run.status, run.state["two"])
    """))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=60, cwd=ROOT, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["completed", "7"]
