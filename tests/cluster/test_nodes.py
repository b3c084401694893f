"""Two nodes in one process on one PostgreSQL database (two apps, each with its own store,
scheduler and hub): requests and followers across nodes, claims, chores."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from tests import workflows
from tests.conftest import MakeClient
from tests.helpers import (
    API,
    assert_gapless,
    events,
    get_json,
    live,
    problem_of,
    submit,
    wait_for_pause,
    wait_for_status,
    wait_for_step,
)
from workflowd.engine import feed

Client = TestClient[Any, Any]


@pytest.fixture
async def nodes(pg_url: str, make_client: MakeClient) -> tuple[Client, Client]:
    """Nodes a and b on one database, short leases and polls."""
    async def node(name: str) -> Client:
        return await make_client(store={"url": pg_url},
                                 cluster={"node_id": name, "lease_seconds": 3,
                                          "poll_interval": 0.2})

    return await node("a"), await node("b")


async def test_an_execution_submitted_on_one_node_completes(nodes: tuple[Client, Client]) -> None:
    """A submit on a runs there and completes; b answers for it too."""
    a, b = nodes
    execution_id = (await submit(a, "three-steps"))["execution_id"]
    await wait_for_status(a, execution_id, "completed")
    await wait_for_status(b, execution_id, "completed")
    items = await events(b, execution_id)
    assert_gapless(items)
    assert [e["type"] for e in items].count("workflow_completed") == 1


def _owner_of(execution_id: str, *clients: Client) -> Client | None:
    from workflowd.api.keys import SCHEDULER

    for client in clients:
        if execution_id in client.app[SCHEDULER].owners:
            return client
    return None


async def test_approve_on_the_other_node(nodes: tuple[Client, Client]) -> None:
    """An execution that reached its gate on a is approved on b and completes."""
    a, b = nodes
    execution_id = (await submit(a, "gated"))["execution_id"]
    await wait_for_status(a, execution_id, "awaiting_approval")
    assert _owner_of(execution_id, a, b) is None  # nobody holds a waiting execution
    resp = await b.post(f"{API}/executions/{execution_id}/approve", json={"comment": "ok"})
    assert resp.status == 202, await resp.text()
    body = await resp.json()
    assert body["approved"] is True
    await wait_for_status(a, execution_id, "completed")
    items = await events(a, execution_id)
    assert_gapless(items)
    granted = [e for e in items if e["type"] == "approval_granted"]
    assert [(e["comment"], e["decided_by"]) for e in granted] == [("ok", "anonymous")]
    again = await a.post(f"{API}/executions/{execution_id}/approve", json={})
    assert again.status == 409


async def test_reject_and_a_submission_approval_on_the_other_node(
        nodes: tuple[Client, Client]) -> None:
    """A submission waiting for approval on a is rejected on b; another is approved there."""
    a, b = nodes
    one = (await submit(a, "three-steps", expect=201, require_approval=True))["execution_id"]
    two = (await submit(a, "three-steps", expect=201, require_approval=True))["execution_id"]
    resp = await b.post(f"{API}/executions/{one}/reject", json={"reason": "no"})
    assert resp.status == 200, await resp.text()
    assert (await live(a, one))["status"] == "rejected"
    resp = await b.post(f"{API}/executions/{two}/approve", json={})
    assert resp.status == 202
    await wait_for_status(a, two, "completed")


async def test_cancel_reaches_the_node_that_runs_it(nodes: tuple[Client, Client]) -> None:
    """A cancel sent to b of a step running on a cancels the step's task there."""
    a, b = nodes
    execution_id = (await submit(a, "sleeper"))["execution_id"]
    await wait_for_step(a, execution_id)
    assert _owner_of(execution_id, a, b) is a
    resp = await b.post(f"{API}/executions/{execution_id}/cancel")
    assert resp.status == 202, await resp.text()
    status = await wait_for_status(b, execution_id, "cancelled")
    assert status["is_terminal"]
    steps = await get_json(b, f"{API}/executions/{execution_id}/steps")
    assert steps["items"][0]["error"]["code"] == "cancelled"
    full = await get_json(a, f"{API}/executions/{execution_id}")
    assert full["state"] == {}  # the cancelled cycle committed nothing of its state
    items = await events(a, execution_id)
    assert_gapless(items)
    assert Counter(e["type"] for e in items)["workflow_cancelled"] == 1
    resp = await b.post(f"{API}/executions/{execution_id}/cancel")
    assert resp.status == 409


async def test_cancel_with_an_idempotency_key_on_the_other_node(
        nodes: tuple[Client, Client]) -> None:
    """A repeat of a cancel forwarded to the holder answers what the first answered."""
    a, b = nodes
    execution_id = (await submit(a, "sleeper"))["execution_id"]
    await wait_for_step(a, execution_id)
    headers = {"Idempotency-Key": "cancel-1"}
    first = await b.post(f"{API}/executions/{execution_id}/cancel", headers=headers)
    assert first.status == 202
    again = await b.post(f"{API}/executions/{execution_id}/cancel", headers=headers)
    assert again.status == 202
    assert await again.json() == await first.json()


async def test_external_step_completed_on_the_other_node(nodes: tuple[Client, Client]) -> None:
    """An external step handed out on a is completed through b with its token."""
    a, b = nodes
    execution_id = (await submit(a, "external-job"))["execution_id"]
    async with asyncio.timeout(10):
        while True:
            started = [e for e in await events(a, execution_id)
                       if e["type"] == "step_started" and e["step"] == "work"]
            if started:
                break
            await asyncio.sleep(0.05)
    token = started[0]["callback"]["token"]
    path = f"{API}/executions/{execution_id}/steps/work"
    resp = await b.post(f"{path}/progress", json={"percentage": 40, "message": "half"},
                        headers={"X-Workflowd-Token": token})
    assert resp.status == 202, await resp.text()
    resp = await b.post(f"{path}/complete", json={"success": True, "output": {"n": 1}},
                        headers={"X-Workflowd-Token": "wrong"})
    assert resp.status == 403
    resp = await b.post(f"{path}/complete", json={"success": True, "output": {"n": 1}},
                        headers={"X-Workflowd-Token": token})
    assert resp.status == 202, await resp.text()
    await wait_for_status(a, execution_id, "completed")
    result = await get_json(a, f"{API}/executions/{execution_id}/result")
    assert result["result"] == {"work": {"n": 1}, "prepared": True}
    assert_gapless(await events(b, execution_id))


async def test_progress_for_a_step_running_on_the_other_node(
        nodes: tuple[Client, Client]) -> None:
    """A service reporting to b the progress of a step that runs on a, with the step's
    token: it reaches a, which holds the token's key."""
    a, b = nodes
    workflows.RELEASES.clear()
    execution_id = (await submit(a, "waiter", input={"name": "far"}))["execution_id"]
    await wait_for_step(a, execution_id)
    from workflowd.api.keys import SCHEDULER

    token = a.app[SCHEDULER].tokens.token(execution_id, 1)
    path = f"{API}/executions/{execution_id}/steps/recorded/progress"
    resp = await b.post(path, json={"percentage": 30, "message": "far away"},
                        headers={"X-Workflowd-Token": token})
    assert resp.status == 202, await resp.text()
    resp = await b.post(path, json={"percentage": 30}, headers={"X-Workflowd-Token": "bad"})
    assert resp.status == 403
    async with asyncio.timeout(10):
        while not [e for e in await events(b, execution_id) if e["type"] == "step_progress"]:
            await asyncio.sleep(0.05)
    workflows.release("far").set()
    await wait_for_status(b, execution_id, "completed")


async def test_a_follower_on_the_other_node(nodes: tuple[Client, Client]) -> None:
    """A WebSocket follower on b of an execution running on a gets every event, in order,
    without a gap, until the terminal one."""
    a, b = nodes
    execution_id = (await submit(a, "pulse", input={"name": "p", "beats": 3}))["execution_id"]
    await wait_for_step(a, execution_id)
    ws = await b.ws_connect(f"{API}/executions/{execution_id}/ws?after=0")
    snapshot = json.loads((await ws.receive()).data)
    assert snapshot["type"] == "snapshot"
    for i in range(3):
        workflows.release(f"p-{i}").set()
    seqs: list[int] = []
    async with asyncio.timeout(15):
        async for msg in ws:
            seqs.append(json.loads(msg.data)["seq"])
    assert ws.close_code == 1000
    assert seqs == list(range(1, len(seqs) + 1))
    stored = await events(a, execution_id)
    assert seqs == [e["seq"] for e in stored]


async def test_a_follower_on_the_other_node_gets_many_events_in_pages(
        nodes: tuple[Client, Client], monkeypatch: pytest.MonkeyPatch) -> None:
    """More events than b reads at a time (a page of 7 here): the follower on b still gets
    every one, in order, without a gap."""
    monkeypatch.setattr(feed, "EVENTS_PAGE", 7)
    a, b = nodes
    execution_id = (await submit(a, "burst", input={"name": "many", "cycles": 40}))[
        "execution_id"]
    await wait_for_step(a, execution_id)
    ws = await b.ws_connect(f"{API}/executions/{execution_id}/ws?after=0")
    assert json.loads((await ws.receive()).data)["type"] == "snapshot"
    workflows.release("many").set()
    seqs: list[int] = []
    async with asyncio.timeout(30):
        async for msg in ws:
            seqs.append(json.loads(msg.data)["seq"])
    assert ws.close_code == 1000
    stored = await events(a, execution_id)
    assert len(stored) > 7 * 3
    assert seqs == [e["seq"] for e in stored]


async def _kill_listener(pg_url: str, node: str) -> None:
    conn = await asyncpg.connect(pg_url)
    try:
        await conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                           "WHERE application_name = $1", f"workflowd-listen:{node}")
    finally:
        await conn.close()


async def test_a_missed_notification_is_caught_up(nodes: tuple[Client, Client],
                                                  pg_url: str) -> None:
    """b's listening connection is cut while a commits: the follower on b still gets every
    event, from the table, with no gap."""
    a, b = nodes
    execution_id = (await submit(a, "pulse", input={"name": "m", "beats": 4}))["execution_id"]
    await wait_for_step(a, execution_id)
    ws = await b.ws_connect(f"{API}/executions/{execution_id}/ws?after=0")
    assert json.loads((await ws.receive()).data)["type"] == "snapshot"
    seqs: list[int] = []

    async def read_until(seq: int) -> None:
        while not seqs or seqs[-1] < seq:
            seqs.append(json.loads((await ws.receive()).data)["seq"])

    async with asyncio.timeout(15):
        await read_until((await live(a, execution_id))["seq"])
        workflows.release("m-0").set()
        await read_until((await live(a, execution_id))["seq"] + 1)
        await _kill_listener(pg_url, "b")
        # Committed while b hears nothing: no notification of these reaches it.
        workflows.release("m-1").set()
        workflows.release("m-2").set()
        workflows.release("m-3").set()
        async for msg in ws:
            seqs.append(json.loads(msg.data)["seq"])
    assert seqs == list(range(1, len(seqs) + 1))
    assert seqs[-1] == (await live(a, execution_id))["seq"]


async def test_a_follower_reading_a_long_history_is_not_flooded_by_the_poll(
        pg_url: str, make_client: MakeClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """A follower replaying a finished execution's history from the store, slower than the
    node polls for missed notifications, gets all of it and 1000: the poll goes on from what
    the followers here were given, not from where the slowest one reads (it poured the history
    into that one's queue, which overflowed: 1013)."""
    from workflowd.api.keys import SCHEDULER

    a = await make_client(store={"url": pg_url}, live={"queue_size": 50},
                          cluster={"node_id": "a", "poll_interval": 0.05})
    cluster = a.app[SCHEDULER].cluster
    assert cluster is not None
    execution_id = (await submit(a, "burst", input={"name": "hist", "cycles": 300,
                                                    "blob_kb": 128}))["execution_id"]
    await wait_for_step(a, execution_id)
    workflows.release("hist").set()
    await wait_for_status(a, execution_id, "completed")
    polls = 0
    polled = asyncio.Event()
    poll_newest = cluster.remote_events._poll_newest

    async def counted() -> None:
        nonlocal polls
        await poll_newest()
        polls += 1
        if polls >= 3:
            polled.set()

    ws = await a.ws_connect(f"{API}/executions/{execution_id}/ws?after=0")
    assert json.loads((await ws.receive()).data)["type"] == "snapshot"
    seqs = [json.loads((await ws.receive()).data)["seq"]]  # the replay is under way
    # The socket's buffers fill with 128 KB events while this follower reads nothing.
    monkeypatch.setattr(cluster.remote_events, "_poll_newest", counted)
    async with asyncio.timeout(15):
        await polled.wait()
        async for msg in ws:
            seqs.append(json.loads(msg.data)["seq"])
    assert ws.close_code == 1000
    assert seqs == list(range(1, (await live(a, execution_id))["seq"] + 1))


async def test_a_follower_behind_another_gets_what_a_missed_notification_said(
        nodes: tuple[Client, Client], pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two followers on b: one opened mid-run, one after the end. The notifications of the
    end are missed (b's listener cut): b's poll catches the first one up (it went on from
    the newer follower's snapshot, so the first waited for good)."""
    from workflowd.api.keys import SCHEDULER

    a, b = nodes
    feed = b.app[SCHEDULER].cluster.remote_events
    execution_id = (await submit(a, "pulse", input={"name": "w", "beats": 3}))["execution_id"]
    await wait_for_step(a, execution_id)
    first = await b.ws_connect(f"{API}/executions/{execution_id}/ws?after=0")
    assert json.loads((await first.receive()).data)["type"] == "snapshot"
    seqs: list[int] = []
    async with asyncio.timeout(15):
        while not seqs or seqs[-1] < (await live(a, execution_id))["seq"]:
            seqs.append(json.loads((await first.receive()).data)["seq"])
        opened, poll_newest = asyncio.Event(), feed._poll_newest

        async def after_the_second_opens() -> None:
            await opened.wait()
            await poll_newest()

        monkeypatch.setattr(feed, "_poll_newest", after_the_second_opens)
        await _kill_listener(pg_url, "b")
        for beat in range(3):
            workflows.release(f"w-{beat}").set()
        await wait_for_status(a, execution_id, "completed")
        second = await b.ws_connect(f"{API}/executions/{execution_id}/ws?after=0")
        assert json.loads((await second.receive()).data)["type"] == "snapshot"
        assert json.loads((await second.receive()).data)["seq"] == 1  # its replay is under way
        opened.set()
        async for msg in first:
            seqs.append(json.loads(msg.data)["seq"])
    assert seqs == list(range(1, (await live(a, execution_id))["seq"] + 1))
    assert first.close_code == 1000
    await second.close()


async def test_long_poll_on_the_other_node(nodes: tuple[Client, Client]) -> None:
    """`/status/live?since=&wait=` on b answers when a commits something newer."""
    a, b = nodes
    execution_id = (await submit(a, "pulse", input={"name": "lp", "beats": 1}))["execution_id"]
    status = await wait_for_step(a, execution_id)
    poll = asyncio.create_task(b.get(f"{API}/executions/{execution_id}/status/live",
                                     params={"since": str(status["seq"]), "wait": "10"}))
    await asyncio.sleep(0.3)
    assert not poll.done()
    workflows.release("lp-0").set()
    async with asyncio.timeout(10):
        resp = await poll
    assert resp.status == 200
    assert (await resp.json())["seq"] > status["seq"]


async def test_work_spreads_over_the_nodes(pg_url: str, make_client: MakeClient) -> None:
    """With one slot per node, executions submitted to one node run on both."""
    a = await make_client(store={"url": pg_url}, engine={"max_concurrent": 1},
                          cluster={"node_id": "a", "poll_interval": 0.2})
    b = await make_client(store={"url": pg_url}, engine={"max_concurrent": 1},
                          cluster={"node_id": "b", "poll_interval": 0.2})
    workflows.RELEASES.clear()
    ids = [(await submit(a, "waiter", input={"name": f"w{n}"}))["execution_id"]
           for n in range(2)]
    async with asyncio.timeout(10):
        while {_owner_of(i, a, b) for i in ids} != {a, b}:
            await asyncio.sleep(0.05)
    cluster = await get_json(b, f"{API}/cluster")
    assert sorted((n["node_id"], n["running"]) for n in cluster["nodes"]) in (
        [("a", 1), ("b", 1)], [("a", 0), ("b", 0)], [("a", 1), ("b", 0)], [("a", 0), ("b", 1)])
    for n in range(2):
        workflows.release(f"w{n}").set()
    for execution_id in ids:
        await wait_for_status(a, execution_id, "completed")


async def test_a_stopping_node_hands_its_work_over(pg_url: str, make_client: MakeClient,
                                                   ) -> None:
    """A node that stops (drain) gives its leases back: the other resumes its executions
    at once, from their last committed cycle."""
    a = await make_client(store={"url": pg_url}, engine={"shutdown_grace": 0.1},
                          cluster={"node_id": "a", "poll_interval": 0.2,
                                   "lease_seconds": 60})
    b = await make_client(store={"url": pg_url},
                          cluster={"node_id": "b", "poll_interval": 0.2,
                                   "lease_seconds": 60})
    workflows.RELEASES.clear()
    execution_id = (await submit(a, "waiter", input={"name": "h"}))["execution_id"]
    await wait_for_step(a, execution_id)
    await a.close()
    async with asyncio.timeout(10):
        while _owner_of(execution_id, b) is None:
            await asyncio.sleep(0.05)
    workflows.release("h").set()
    await wait_for_status(b, execution_id, "completed")
    items = await events(b, execution_id)
    assert_gapless(items)
    assert [e["type"] for e in items].count("workflow_completed") == 1


async def test_a_gate_timeout_nobody_holds_is_enforced(nodes: tuple[Client, Client]) -> None:
    """An execution waiting at a gate past its workflow's timeout is timed out by the
    leader, though no node holds it."""
    a, b = nodes
    execution_id = (await submit(a, "gate-timeout"))["execution_id"]
    status = await wait_for_status(b, execution_id, "timed_out", timeout=15)
    assert status["is_terminal"]
    items = await events(a, execution_id)
    assert_gapless(items)


async def test_the_cluster_route_lists_the_nodes(nodes: tuple[Client, Client]) -> None:
    """`GET /api/v1/cluster` names every node with when it was last seen."""
    a, _ = nodes
    data = await get_json(a, f"{API}/cluster")
    assert sorted(n["node_id"] for n in data["nodes"]) == ["a", "b"]
    assert all(n["last_seen"].endswith("Z") for n in data["nodes"])


async def test_each_node_s_metrics_name_it_and_one_leads(nodes: tuple[Client, Client]) -> None:
    """`/metrics` of each node names the node; exactly one of them holds the leader row."""
    from bench.common import parse_metrics

    a, b = nodes
    async with asyncio.timeout(10):
        while True:
            samples = [parse_metrics(await (await c.get("/metrics")).text()) for c in (a, b)]
            if sum(s["workflowd_cluster_leader"] for s in samples) == 1:
                break
            await asyncio.sleep(0.1)
    assert samples[0]['workflowd_node_info{node_id="a"}'] == 1
    assert samples[1]['workflowd_node_info{node_id="b"}'] == 1


async def test_server_sent_events_on_the_other_node(nodes: tuple[Client, Client]) -> None:
    """The SSE stream on b of an execution running on a carries every event, ids in order,
    and ends after the terminal one."""
    a, b = nodes
    execution_id = (await submit(a, "pulse", input={"name": "s", "beats": 2}))["execution_id"]
    await wait_for_step(a, execution_id)
    resp = await b.get(f"{API}/executions/{execution_id}/events/stream?after=0")
    assert resp.status == 200
    for i in range(2):
        workflows.release(f"s-{i}").set()
    ids: list[int] = []
    async with asyncio.timeout(15):
        async for line in resp.content:
            if line.startswith(b"id: "):
                ids.append(int(line[4:]))
    assert ids == list(range(1, len(ids) + 1))
    assert ids[-1] == (await live(a, execution_id))["seq"]


async def test_a_request_during_this_node_s_claim_goes_to_the_owner_it_makes(
        pg_url: str, make_client: MakeClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cancel that reaches the node while its own claim of the execution is under way
    (committed, not yet owned) waits for the owner, which cancels it: no write from the stored
    record beside the claim, no stale run launched and then let go."""
    from workflowd.api.keys import SCHEDULER

    a = await make_client(store={"url": pg_url}, engine={"max_concurrent": 1},
                          cluster={"node_id": "a", "poll_interval": 0.1})
    cluster = a.app[SCHEDULER].cluster
    assert cluster is not None
    workflows.RELEASES.clear()
    blocker = (await submit(a, "waiter", input={"name": "c0"}))["execution_id"]
    await wait_for_step(a, blocker)
    queued = (await submit(a, "three-steps"))["execution_id"]  # no room: left unclaimed
    claiming, cancel_built = asyncio.Event(), asyncio.Event()
    definitions, locked_change = cluster._definitions, cluster.ops.locked_change

    async def held_claim(records: Any) -> Any:
        if any(rec.execution_id == queued for rec in records):
            claiming.set()
            await cancel_built.wait()  # the cancel reads the row meanwhile
        return await definitions(records)

    async def noted(execution_id: str, build: Any, **options: Any) -> Any:
        try:
            return await locked_change(execution_id, build, **options)
        finally:
            if execution_id == queued:
                cancel_built.set()

    monkeypatch.setattr(cluster, "_definitions", held_claim)
    monkeypatch.setattr(cluster.ops, "locked_change", noted)
    workflows.release("c0").set()  # the slot frees: a claims the queued one
    await claiming.wait()
    resp = await a.post(f"{API}/executions/{queued}/cancel")
    assert resp.status == 202, await resp.text()
    assert (await resp.json())["status"] == "cancelled"
    await wait_for_status(a, queued, "cancelled")
    assert cluster.lost == 0  # no run of the stale record was launched and then let go
    items = await events(a, queued)
    assert_gapless(items)
    assert [e["type"] for e in items].count("workflow_cancelled") == 1


async def test_postgresql_out_of_reach_is_503_then_served_again(pg_url: str,
                                                                make_client: MakeClient) -> None:
    """A read while PostgreSQL takes no connection (the node's were cut) is 503 with
    Retry-After, the problem of a store that is unavailable, not a 500; once it takes them
    again the same request is answered."""
    a = await make_client(store={"url": pg_url}, cluster={"node_id": "a", "poll_interval": 0.2})
    execution_id = (await submit(a, "three-steps"))["execution_id"]
    await wait_for_status(a, execution_id, "completed")
    database = urlsplit(pg_url).path.lstrip("/")
    admin = await asyncpg.connect(urlsplit(pg_url)._replace(path="/postgres").geturl())
    try:
        await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
        await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE datname = $1 AND pid <> pg_backend_pid()", database)
        async with asyncio.timeout(10):  # the sessions end a moment after they are told to
            while await admin.fetchval("SELECT count(*) FROM pg_stat_activity "
                                       "WHERE datname = $1", database):
                await asyncio.sleep(0.05)
        resp = await a.get(f"{API}/executions")
        problem = await problem_of(resp, 503)
        assert problem["type"].endswith("store_unavailable")
        assert resp.headers["Retry-After"]
    finally:
        await admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
        await admin.close()
    listed = await get_json(a, f"{API}/executions")
    assert [item["execution_id"] for item in listed["items"]] == [execution_id]


async def test_a_step_that_writes_u0000_completes_with_u_fffd_stored(
        pg_url: str, make_client: MakeClient) -> None:
    """PostgreSQL keeps no U+0000 in text, and refused the whole batch with it: the cycle of a
    step that wrote one was refused for good, and the executions committed beside it once. It
    is stored as U+FFFD; the execution and the one beside it complete."""
    a = await make_client(store={"url": pg_url}, cluster={"node_id": "a"})
    nul = (await submit(a, "nul-text"))["execution_id"]
    beside = (await submit(a, "three-steps"))["execution_id"]
    await wait_for_status(a, nul, "completed")
    await wait_for_status(a, beside, "completed")
    conn = await asyncpg.connect(pg_url)
    try:
        doc = json.loads(await conn.fetchval("SELECT doc FROM executions WHERE id = $1", nul))
        line = await conn.fetchval("SELECT doc FROM logs WHERE execution_id = $1", nul)
    finally:
        await conn.close()
    assert doc["result"] == {"text": "a\ufffdb"}
    assert "\x00" not in line


async def test_a_sync_submit_answers_200_only_once_it_ended(nodes: tuple[Client, Client],
                                                            ) -> None:
    """`?wait=` on a node: 200 with the whole execution once it ended (wherever it ran), else
    the 202. An execution that left this node's memory (waiting at a gate, or run by another
    node) was taken for ended: 200 with `awaiting_approval`, kept as the key's answer."""
    a, _b = nodes
    path = f"{API}/workflows/three-steps/executions"
    resp = await a.post(path, params={"wait": "10"}, json={})
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["status"] == "completed"
    resp = await a.post(f"{API}/workflows/gated/executions", params={"wait": "0.5"}, json={},
                        headers={"Idempotency-Key": "gated-once"})
    assert resp.status == 202, await resp.text()
    first = await resp.json()
    await wait_for_status(a, first["execution_id"], "awaiting_approval")
    again = await a.post(f"{API}/workflows/gated/executions", params={"wait": "0.5"},
                         json={}, headers={"Idempotency-Key": "gated-once"})
    assert again.status == 202
    assert (await again.json()) == first


async def test_max_queued_counts_what_no_node_claimed(pg_url: str,
                                                      make_client: MakeClient) -> None:
    """With every slot taken, executions queue in the database for any node to claim; past
    `max_queued` of them a submit is answered 429."""
    a = await make_client(store={"url": pg_url}, engine={"max_concurrent": 1, "max_queued": 2},
                          cluster={"node_id": "a", "poll_interval": 0.1})
    workflows.RELEASES.clear()
    await submit(a, "waiter", input={"name": "q0"})  # takes the one slot
    queued = [(await submit(a, "three-steps"))["execution_id"] for _ in range(2)]
    async with asyncio.timeout(10):
        while True:
            resp = await a.post(f"{API}/workflows/three-steps/executions", json={})
            if resp.status == 429:
                break
            assert resp.status == 202
            queued.append((await resp.json())["execution_id"])
            await asyncio.sleep(0.2)
    assert resp.headers["Retry-After"]
    workflows.release("q0").set()
    for execution_id in queued:
        await wait_for_status(a, execution_id, "completed")


async def test_webhooks_are_sent_once_by_the_leader(
        pg_url: str, make_client: MakeClient, aiohttp_server: Any) -> None:
    """With the same webhook on both nodes, each terminal event is delivered once, whichever
    node committed it."""
    from tests.api.test_webhooks import Receiver, serve_receiver

    receiver = Receiver()
    hook = await serve_receiver(aiohttp_server, receiver)
    hooks = [{"url": str(hook.make_url("/hook"))}]
    a, b = [await make_client(store={"url": pg_url}, webhooks=hooks,
                              delivery={"backoff": 0.05},
                              cluster={"node_id": name, "poll_interval": 0.1})
            for name in ("a", "b")]
    ids = [(await submit(node, "three-steps"))["execution_id"] for node in (a, b, a, b)]
    for execution_id in ids:
        await wait_for_status(a, execution_id, "completed")
    await receiver.wait(len(ids))
    conn = await asyncpg.connect(pg_url)
    try:
        async with asyncio.timeout(10):  # every delivery sent is deleted from the outbox
            while await conn.fetchval("SELECT count(*) FROM deliveries"):
                await asyncio.sleep(0.05)
    finally:
        await conn.close()
    delivered = [body["execution_id"] for body, _, _ in receiver.got]
    assert sorted(delivered) == sorted(ids)


async def _steer(client: Client, execution_id: str, action: str) -> dict[str, Any]:
    resp = await client.post(f"{API}/executions/{execution_id}/{action}")
    assert resp.status == 202, await resp.text()
    data: dict[str, Any] = await resp.json()
    return data


async def test_manual_mode_steered_from_either_node(nodes: tuple[Client, Client]) -> None:
    """A manual execution submitted on a is stepped on b, then on a (whichever holds it),
    and resumed on b; one running on a is paused through b after its cycle, and resumed."""
    a, b = nodes
    execution_id = (await submit(a, "three-steps", mode="manual"))["execution_id"]
    await wait_for_pause(b, execution_id, 0)
    await _steer(b, execution_id, "step")
    await wait_for_pause(a, execution_id, 1)
    await _steer(a, execution_id, "step")
    await wait_for_pause(b, execution_id, 2)
    resp = await a.post(f"{API}/executions/{execution_id}/pause")
    assert resp.status == 409  # paused already, wherever it is asked
    await _steer(b, execution_id, "resume")
    await wait_for_status(a, execution_id, "completed")
    items = await events(b, execution_id)
    assert_gapless(items)
    assert Counter(e["type"] for e in items)["workflow_paused"] == 3

    workflows.RELEASES.clear()
    held = (await submit(a, "held-two", input={"name": "p"}))["execution_id"]
    await wait_for_step(a, held)
    assert _owner_of(held, a, b) is a
    answer = await _steer(b, held, "pause")  # forwarded to a, which runs it
    assert answer["status"] == "running"
    workflows.release("p").set()
    await wait_for_pause(b, held, 1)
    await _steer(b, held, "resume")
    await wait_for_status(b, held, "completed")


async def test_a_paused_execution_nobody_holds_times_out(pg_url: str,
                                                         make_client: MakeClient) -> None:
    """Approved while every slot is taken (queued, unclaimed), then paused: no node holds it,
    and the leader ends it `timed_out` at its workflow's timeout."""
    a, b = [await make_client(store={"url": pg_url}, engine={"max_concurrent": 1},
                              cluster={"node_id": name, "poll_interval": 0.1})
            for name in ("a", "b")]
    resp = await a.post(f"{API}/workflows", json={"id": "gate-then", "timeout": 2.0, "steps": [
        {"name": "ok", "type": "approval"},
        {"name": "inc", "type": "call", "function": "add_one"}]})
    assert resp.status == 201, await resp.text()
    execution_id = (await submit(a, "gate-then"))["execution_id"]
    await wait_for_status(a, execution_id, "awaiting_approval")
    workflows.RELEASES.clear()
    blockers = [(await submit(node, "waiter", input={"name": f"full-{n}"}))["execution_id"]
                for n, node in enumerate((a, b))]
    for blocker in blockers:
        await wait_for_step(a, blocker)
    resp = await b.post(f"{API}/executions/{execution_id}/approve", json={})
    assert resp.status == 202, await resp.text()
    answer = await _steer(a, execution_id, "pause")
    assert answer["status"] == "paused"
    assert _owner_of(execution_id, a, b) is None
    status = await wait_for_status(b, execution_id, "timed_out", "completed")
    assert status["status"] == "timed_out"
    result = await get_json(a, f"{API}/executions/{execution_id}/result")
    assert "while paused" in result["error"]["message"]
    for n in range(2):
        workflows.release(f"full-{n}").set()
