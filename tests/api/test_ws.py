"""The WebSocket of one execution and of all executions: snapshot, replay, live, hand-over,
slow followers, resume, shutdown, filters; and progress coalescing as followers see it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from aiohttp import ClientWebSocketResponse, WSMsgType, WSServerHandshakeError
from aiohttp.test_utils import TestClient

from tests import workflows
from tests.conftest import MakeClient
from tests.helpers import (
    API,
    events,
    get_json,
    live,
    problem_of,
    submit,
    wait_for_status,
    wait_for_step,
)
from workflowd.api.keys import HUB, SCHEDULER
from workflowd.engine.hub import Hub, Subscription
from workflowd.engine.scheduler import Scheduler
from workflowd.records import ExecutionRecord
from workflowd.store import Store

WS = ClientWebSocketResponse[Any]
ENDED = (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED)
TERMINAL_TYPES = {"workflow_completed", "workflow_failed", "workflow_cancelled",
                  "workflow_timed_out", "workflow_rejected"}


@dataclass
class Followed:
    snapshot: dict[str, Any]
    events: list[dict[str, Any]]
    close_code: int | None

    @property
    def seqs(self) -> list[int]:
        return [e["seq"] for e in self.events]


def ws_path(execution_id: str, after: int | None = None) -> str:
    path = f"{API}/executions/{execution_id}/ws"
    return path if after is None else f"{path}?after={after}"


async def next_message(ws: WS) -> dict[str, Any] | None:
    """The next JSON message, or None once the server closed; an error or abort fails."""
    msg = await ws.receive()
    if msg.type == WSMsgType.TEXT:
        data: dict[str, Any] = json.loads(msg.data)
        return data
    assert msg.type in ENDED, (msg, ws.exception())
    return None


async def snapshot_of(ws: WS) -> dict[str, Any]:
    first = await next_message(ws)
    assert first is not None, "closed before the snapshot"
    assert first["type"] == "snapshot", first
    assert set(first) == {"type", "seq", "status"}
    assert first["status"]["seq"] == first["seq"]
    return first


async def read_rest(ws: WS, timeout: float = 15.0) -> tuple[list[dict[str, Any]], int | None]:
    """Every message up to the server's close (pongs left out), and the close code."""
    items: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        while (msg := await next_message(ws)) is not None:
            if msg["type"] != "pong":
                items.append(msg)
    return items, ws.close_code


async def follow(ws: WS, timeout: float = 15.0) -> Followed:
    async with asyncio.timeout(timeout):
        snapshot = await snapshot_of(ws)
        items, code = await read_rest(ws)
    return Followed(snapshot, items, code)


async def next_commit(client: TestClient[Any, Any], execution_id: str,
                      since: int | None = None) -> None:
    """Wait (long-poll) until something newer than `since` (default: what is committed now) is
    committed. Read `since` before causing the commit: it may land before this call."""
    seq = (await live(client, execution_id))["seq"] if since is None else since
    async with asyncio.timeout(10):
        while True:
            resp = await client.get(f"{API}/executions/{execution_id}/status/live",
                                    params={"since": str(seq), "wait": "5"})
            if resp.status == 200:
                return
            assert resp.status == 304, await resp.text()


async def stored_events(client: TestClient[Any, Any], execution_id: str) -> list[dict[str, Any]]:
    """Every persisted event of the execution, paging with `after=`."""
    return await events(client, execution_id)


def assert_stream(followed: Followed, stored: list[dict[str, Any]], first: int) -> None:
    """`followed` got exactly the stored events `first..N` (N the terminal one), in order."""
    assert followed.seqs == list(range(first, len(stored) + 1))
    assert followed.events == stored[first - 1:]
    assert followed.events[-1]["type"] in TERMINAL_TYPES
    assert followed.close_code == 1000


# ---- one follower ---------------------------------------------------------------------------


async def test_follower_gets_snapshot_then_every_event_and_close_1000(
        client: TestClient[Any, Any]) -> None:
    """Snapshot first, then events 1..N gap-free to the terminal one, close 1000; ping → pong."""
    execution_id = (await submit(client, "pulse", input={"name": "one", "beats": 1}))[
        "execution_id"]
    await wait_for_step(client, execution_id)
    ws = await client.ws_connect(ws_path(execution_id, after=0))
    fresh = await client.ws_connect(ws_path(execution_id))
    snapshot = await snapshot_of(ws)
    assert snapshot["status"]["status"] == "running"
    assert snapshot["status"]["current_step"]["name"] == "beat"
    fresh_snapshot = await snapshot_of(fresh)

    await ws.send_json({"type": "ping"})
    before_pong: list[dict[str, Any]] = []
    async with asyncio.timeout(10):
        while (msg := await next_message(ws)) is not None and msg["type"] != "pong":
            before_pong.append(msg)
    assert msg == {"type": "pong"}

    workflows.release("one-0").set()
    rest, code = await read_rest(ws)
    stored = await stored_events(client, execution_id)
    assert_stream(Followed(snapshot, before_pong + rest, code), stored, 1)
    assert stored[-1]["type"] == "workflow_completed"
    # Without `after=`: no history, only what follows the snapshot.
    assert_stream(Followed(fresh_snapshot, *await read_rest(fresh)), stored,
                  fresh_snapshot["seq"] + 1)


# ---- the replay / live hand-over -------------------------------------------------------------


@pytest.mark.parametrize("after", [None, 0, 2])
@pytest.mark.parametrize("order", ["commit_then_read", "read_then_commit"])
@pytest.mark.parametrize("target", ["snapshot", "replay"])
async def test_handover_with_a_commit_between_subscribing_and_reading(
        make_client: MakeClient, monkeypatch: pytest.MonkeyPatch, target: str, order: str,
        after: int | None) -> None:
    """An event committed between the subscription and the snapshot/replay read reaches the
    follower exactly once, whether the read sees it (overlap) or not (stale)."""
    client = await make_client(live={"progress_interval": 0})
    name = f"h-{target}-{order}-{after}"
    execution_id = (await submit(client, "pulse", input={"name": name, "beats": 3}))[
        "execution_id"]
    await wait_for_step(client, execution_id)
    hub: Hub = client.app[HUB]
    scheduler: Scheduler = client.app[SCHEDULER]

    def seq_now() -> int:
        rec = scheduler.peek(execution_id)
        assert rec is not None
        return rec.seq

    armed = False
    fired = 0
    # Set once the patched read has run, with one more event committed around it.
    handed_over: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def commit_one_more() -> None:
        nonlocal armed, fired
        armed = False
        seq = seq_now()
        workflows.release(f"{name}-{fired}").set()
        fired += 1
        assert await hub.wait_until(
            execution_id, lambda: seq_now() > seq, 5.0)
        handed_over.set_result(None)

    async def around(read: Callable[[], Awaitable[Any]]) -> Any:
        if order == "commit_then_read":
            await commit_one_more()
            return await read()
        result = await read()
        await commit_one_more()
        return result

    real_subscribe = hub.subscribe

    def subscribe(execution_id_: str | None, *args: Any, **kwargs: Any) -> Subscription:
        nonlocal armed
        sub = real_subscribe(execution_id_, *args, **kwargs)
        armed = armed or execution_id_ == execution_id
        return sub

    monkeypatch.setattr(hub, "subscribe", subscribe)
    if target == "snapshot":
        real_get = scheduler.get

        async def get(execution_id_: str) -> ExecutionRecord:
            if armed and execution_id_ == execution_id:
                rec: ExecutionRecord = await around(lambda: real_get(execution_id_))
                return rec
            return await real_get(execution_id_)

        monkeypatch.setattr(scheduler, "get", get)
    else:
        store: Store = scheduler.store
        real_rows = store.event_rows

        async def event_rows(execution_id_: str, after_: int, limit: int
                             ) -> list[tuple[int, str]]:
            if armed and execution_id_ == execution_id:
                rows: list[tuple[int, str]] = await around(
                    lambda: real_rows(execution_id_, after_, limit))
                return rows
            return await real_rows(execution_id_, after_, limit)

        monkeypatch.setattr(store, "event_rows", event_rows)

    ws = await client.ws_connect(ws_path(execution_id, after))
    snapshot = await snapshot_of(ws)
    async with asyncio.timeout(10):
        await handed_over
    assert fired == 1
    for i in range(1, 3):
        workflows.release(f"{name}-{i}").set()
    rest, code = await read_rest(ws)
    stored = await stored_events(client, execution_id)
    start = (snapshot["seq"] if after is None else after) + 1
    assert_stream(Followed(snapshot, rest, code), stored, start)
    if target == "snapshot" and after is None:
        # The snapshot itself was read either before or after the extra commit.
        stale = order == "read_then_commit"
        assert snapshot["seq"] == (3 if stale else 4)


async def test_followers_opening_at_different_moments_while_commits_flow(
        client: TestClient[Any, Any]) -> None:
    """Followers opened with after=0 at many points of a busy execution each get 1..N once."""
    execution_id = (await submit(client, "chatter", input={"name": "busy"}))["execution_id"]
    tasks: list[asyncio.Task[Followed]] = []
    for _ in range(16):
        ws = await client.ws_connect(ws_path(execution_id, after=0))
        tasks.append(asyncio.create_task(follow(ws)))
        await next_commit(client, execution_id)
    workflows.release("busy").set()
    results = await asyncio.gather(*tasks)
    stored = await stored_events(client, execution_id)
    assert stored[-1]["type"] == "workflow_completed"
    for followed in results:
        assert_stream(followed, stored, 1)
    snapshot_seqs_differ = len({f.snapshot["seq"] for f in results}) == len(results)
    assert snapshot_seqs_differ, "the followers did not open at different moments"


async def test_two_hundred_followers_receive_identical_sequences(
        client: TestClient[Any, Any]) -> None:
    """200 followers of one execution all get the same complete event sequence."""
    execution_id = (await submit(client, "burst", input={"name": "crowd", "cycles": 25}))[
        "execution_id"]
    await wait_for_step(client, execution_id)

    async def one(session: aiohttp.ClientSession, ready: asyncio.Future[None]) -> Followed:
        async with session.ws_connect(client.make_url(ws_path(execution_id, after=0))) as ws:
            snapshot = await snapshot_of(ws)
            ready.set_result(None)
            items, code = await read_rest(ws)
            return Followed(snapshot, items, code)

    # Its own connector: the test client's pool holds 100 connections at most.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        tasks: list[asyncio.Task[Followed]] = []
        for _ in range(4):  # in waves, to stay within the listen backlog
            wave = [asyncio.get_running_loop().create_future() for _ in range(50)]
            tasks.extend(asyncio.create_task(one(session, ready)) for ready in wave)
            async with asyncio.timeout(15):
                await asyncio.gather(*wave)
        workflows.release("crowd").set()
        results = await asyncio.gather(*tasks)
    stored = await stored_events(client, execution_id)
    assert len(stored) > 100
    assert len(results) == 200
    for followed in results:
        assert followed.events == results[0].events
        assert_stream(followed, stored, 1)


# ---- slow followers, resume --------------------------------------------------------------------


async def test_a_follower_that_stops_reading_is_closed_1013_and_never_slows_others(
        make_client: MakeClient) -> None:
    """A non-reading follower overflows its queue and is closed with 1013 (after what it was
    sent, gap-free); a reading one gets every event and 1000; the slow one resumes with after=."""
    client = await make_client(live={"queue_size": 50})
    # ~300 progress reports of 128 KB each: far more than the kernel's socket buffers hold.
    execution_id = (await submit(client, "burst", input={"name": "big", "cycles": 300,
                                                         "blob_kb": 128}))["execution_id"]
    await wait_for_step(client, execution_id)
    stalled = await client.ws_connect(ws_path(execution_id, after=0))
    reader = await client.ws_connect(ws_path(execution_id, after=0))
    workflows.release("big").set()
    reading = await follow(reader, timeout=25)
    stored = await stored_events(client, execution_id)
    assert_stream(reading, stored, 1)

    # Only now does the stalled follower read: what it was sent, then the 1013 close.
    got = await follow(stalled, timeout=25)
    assert got.close_code == 1013
    assert 0 < len(got.events) < len(stored)
    assert got.seqs == list(range(1, len(got.events) + 1))
    assert got.events == stored[:len(got.events)]
    resumed = await follow(await client.ws_connect(ws_path(execution_id, got.seqs[-1])))
    assert_stream(resumed, stored, got.seqs[-1] + 1)


async def test_resume_after_disconnect_with_after_last_seq(make_client: MakeClient) -> None:
    """Read some, disconnect, reconnect with after=last seq: the rest, no gap, no duplicate."""
    client = await make_client(live={"progress_interval": 0})
    execution_id = (await submit(client, "pulse", input={"name": "rs", "beats": 4}))[
        "execution_id"]
    await wait_for_step(client, execution_id)
    ws = await client.ws_connect(ws_path(execution_id, after=0))
    await snapshot_of(ws)
    workflows.release("rs-0").set()
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(10):
        while not seen or seen[-1]["type"] != "step_progress":
            msg = await next_message(ws)
            assert msg is not None
            seen.append(msg)
    await ws.close()
    # Something is committed while nobody follows.
    before = (await live(client, execution_id))["seq"]
    workflows.release("rs-1").set()
    await next_commit(client, execution_id, since=before)
    ws = await client.ws_connect(ws_path(execution_id, after=seen[-1]["seq"]))
    snapshot = await snapshot_of(ws)
    assert snapshot["seq"] > seen[-1]["seq"]
    workflows.release("rs-2").set()
    workflows.release("rs-3").set()
    rest, code = await read_rest(ws)
    stored = await stored_events(client, execution_id)
    assert_stream(Followed(snapshot, seen + rest, code), stored, 1)


# ---- terminal executions, bad requests, shutdown ---------------------------------------------


async def test_terminal_execution_snapshot_then_1000_and_replay_with_after(
        client: TestClient[Any, Any]) -> None:
    """On a terminal execution: the snapshot then 1000; with after= the replay comes between."""
    execution_id = (await submit(client, "three-steps"))["execution_id"]
    await wait_for_status(client, execution_id, "completed")
    stored = await stored_events(client, execution_id)

    plain = await follow(await client.ws_connect(ws_path(execution_id)))
    assert plain.snapshot["seq"] == len(stored)
    assert plain.snapshot["status"]["status"] == "completed"
    assert plain.events == []
    assert plain.close_code == 1000

    assert_stream(await follow(await client.ws_connect(ws_path(execution_id, 0))), stored, 1)
    tail = await follow(await client.ws_connect(ws_path(execution_id, len(stored) - 2)))
    assert_stream(tail, stored, len(stored) - 1)


async def test_unknown_execution_is_404_and_bad_after_is_422_before_upgrade(
        client: TestClient[Any, Any]) -> None:
    """Problem JSON over plain HTTP, before any upgrade: 404 unknown id, 422 after=-1."""
    upgrade = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
               "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
    await problem_of(await client.get(ws_path("no-such-id"), headers=upgrade), 404)
    with pytest.raises(WSServerHandshakeError) as caught:
        await client.ws_connect(ws_path("no-such-id"))
    assert caught.value.status == 404

    execution_id = (await submit(client, "three-steps"))["execution_id"]
    body = await problem_of(await client.get(ws_path(execution_id, -1), headers=upgrade), 422)
    assert body["errors"][0]["loc"][-1] == "after"
    await problem_of(await client.get(f"{ws_path(execution_id)}?after=x", headers=upgrade), 422)
    with pytest.raises(WSServerHandshakeError) as caught:
        await client.ws_connect(ws_path(execution_id, -1))
    assert caught.value.status == 422


async def test_plain_get_on_websocket_routes_is_a_problem_and_leaves_no_subscription(
        client: TestClient[Any, Any]) -> None:
    """A GET that does not upgrade is 426 problem JSON with `Upgrade: websocket` (a broken
    handshake 400), on both WebSocket routes, and leaves no subscription in the hub."""
    execution_id = (await submit(client, "three-steps"))["execution_id"]
    await wait_for_status(client, execution_id, "completed")
    hub: Hub = client.app[HUB]
    half_handshake = {"Connection": "Upgrade", "Upgrade": "websocket"}  # no key, no version
    for path in (ws_path(execution_id), ws_path(execution_id, 0), f"{API}/ws",
                 f"{API}/ws?workflow_id=three-steps&type=step_started"):
        for _ in range(3):
            resp = await client.get(path)
            await problem_of(resp, 426)
            assert resp.headers["Upgrade"] == "websocket"
            await problem_of(await client.get(path, headers=half_handshake), 400)
    assert hub.subscriber_count == 0


async def test_shutdown_closes_followers_with_1001(make_client: MakeClient) -> None:
    """Stopping the server closes execution and all-executions followers with 1001."""
    client = await make_client(engine={"shutdown_grace": 0})
    execution_id = (await submit(client, "sleeper"))["execution_id"]
    await wait_for_step(client, execution_id)
    one = await client.ws_connect(ws_path(execution_id, after=0))
    await snapshot_of(one)
    async with asyncio.timeout(10):
        while (msg := await next_message(one)) is not None and msg["type"] != "step_progress":
            pass
    every = await client.ws_connect(f"{API}/ws")
    reading = [asyncio.create_task(read_rest(ws)) for ws in (one, every)]
    async with asyncio.timeout(15):
        await client.server.close()
        (seen, one_code), (_, every_code) = await asyncio.gather(*reading)
    assert one_code == 1001
    assert every_code == 1001
    assert all(e["type"] not in TERMINAL_TYPES for e in seen)


# ---- all executions ---------------------------------------------------------------------------


async def _read_until(ws: WS, last: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    async with asyncio.timeout(10):
        while not items or not last(items[-1]):
            msg = await next_message(ws)
            assert msg is not None, "closed"
            items.append(msg)
    return items


async def test_all_executions_ws_filters_by_workflow_id_and_type(
        client: TestClient[Any, Any]) -> None:
    """`/ws` sends live events of every execution; workflow_id= and type= (repeated or
    comma-separated) filter them."""
    by_workflow_and_types = await client.ws_connect(
        f"{API}/ws?workflow_id=three-steps&type=step_finished,workflow_completed")
    by_types = await client.ws_connect(f"{API}/ws?type=workflow_started&type=workflow_completed")
    by_workflow = await client.ws_connect(f"{API}/ws?workflow_id=brancher")
    everything = await client.ws_connect(f"{API}/ws")

    first = (await submit(client, "brancher", input={"way": "left"}))["execution_id"]
    await wait_for_status(client, first, "completed")
    middle = (await submit(client, "three-steps"))["execution_id"]
    await wait_for_status(client, middle, "completed")
    last = (await submit(client, "brancher", input={"way": "right"}))["execution_id"]
    await wait_for_status(client, last, "completed")
    stored = {eid: await stored_events(client, eid) for eid in (first, middle, last)}

    def done(eid: str) -> Callable[[dict[str, Any]], bool]:
        return lambda e: e["execution_id"] == eid and e["type"] == "workflow_completed"

    got = await _read_until(by_workflow_and_types, done(middle))
    assert got == [e for e in stored[middle]
                   if e["type"] in ("step_finished", "workflow_completed")]
    assert len(got) == 4

    got = await _read_until(by_types, done(last))
    assert got == [e for eid in (first, middle, last) for e in stored[eid]
                   if e["type"] in ("workflow_started", "workflow_completed")]
    assert len(got) == 6

    assert await _read_until(by_workflow, done(last)) == stored[first] + stored[last]
    assert await _read_until(everything, done(last)) == (
        stored[first] + stored[middle] + stored[last])

    # The all-executions socket answers pings too.
    await everything.send_json({"type": "ping"})
    assert await next_message(everything) == {"type": "pong"}


# ---- progress coalescing ----------------------------------------------------------------------


async def test_progress_flood_is_coalesced_and_keeps_the_latest(
        client: TestClient[Any, Any]) -> None:
    """5000 progress calls in a tight loop store few step_progress events, the last at 100%."""
    calls = 5000
    execution_id = (await submit(client, "flood", input={"calls": calls}))["execution_id"]
    followed = await follow(await client.ws_connect(ws_path(execution_id, after=0)))
    stored = await stored_events(client, execution_id)
    assert_stream(followed, stored, 1)
    progress = [e for e in stored if e["type"] == "step_progress"]
    assert 1 <= len(progress) < 50
    assert progress[-1]["percentage"] == 100.0
    assert progress[-1]["message"] == f"call {calls}"
    assert progress[-1]["custom_data"] == {"i": calls}
    percentages = [e["percentage"] for e in progress]
    assert percentages == sorted(percentages)
    # The step's record keeps the latest report too.
    steps = await get_json(client, f"{API}/executions/{execution_id}/steps")
    assert steps["items"][0]["metadata"]["message"] == f"call {calls}"


async def test_the_socket_does_not_negotiate_compression(client: TestClient[Any, Any]) -> None:
    """A client offering permessage-deflate (as browsers do) gets plain frames: no compressor
    per follower."""
    execution_id = (await submit(client, "pulse", input={"name": "z", "beats": 1}))[
        "execution_id"]
    ws = await client.ws_connect(ws_path(execution_id), compress=15)
    try:
        assert ws.compress == 0
        assert (await snapshot_of(ws))["type"] == "snapshot"
    finally:
        await ws.close()

