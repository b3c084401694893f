"""Server-sent events of one execution: snapshot, `id:` = seq, resuming, live events, 404."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

from tests import workflows
from tests.conftest import MakeClient
from tests.helpers import API, events, problem_of, submit, wait_for_status, wait_for_step

TERMINAL_TYPES = {"workflow_completed", "workflow_failed", "workflow_cancelled",
                  "workflow_timed_out", "workflow_rejected"}


def stream_path(execution_id: str) -> str:
    return f"{API}/executions/{execution_id}/events/stream"


async def parts(resp: ClientResponse) -> AsyncIterator[str | dict[str, str]]:
    """The stream's comments (their text) and messages (`{field: value}`), until it ends."""
    fields: dict[str, str] = {}
    async for raw in resp.content:
        line = raw.decode().rstrip("\r\n")
        if not line:
            if fields:
                yield fields
            fields = {}
        elif line.startswith(":"):
            yield line[1:].strip()
        else:
            key, _, value = line.partition(":")
            value = value.removeprefix(" ")
            fields[key] = f"{fields[key]}\n{value}" if key in fields else value
    assert not fields, f"the stream ended inside a message: {fields}"


async def messages(resp: ClientResponse) -> AsyncIterator[dict[str, str]]:
    """The stream's messages as `{field: value}` (comments left out), until it ends."""
    async for part in parts(resp):
        if isinstance(part, dict):
            yield part


async def open_stream(client: TestClient[Any, Any], execution_id: str, query: str = "",
                      **headers: str) -> ClientResponse:
    resp = await client.get(stream_path(execution_id) + query,
                            headers={k.replace("_", "-"): v for k, v in headers.items()})
    assert resp.status == 200, await resp.text()
    assert resp.content_type == "text/event-stream"
    return resp


async def read_all(resp: ClientResponse) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The snapshot (a `data:` message without id), then every event to the stream's end;
    checks that each event's `id:` is its seq."""
    items: list[dict[str, Any]] = []
    snapshot: dict[str, Any] | None = None
    async with asyncio.timeout(15):
        async for msg in messages(resp):
            if snapshot is None:
                assert "id" not in msg, msg
                snapshot = json.loads(msg["data"])
                continue
            event = json.loads(msg["data"])
            assert msg["id"] == str(event["seq"])
            items.append(event)
    assert snapshot is not None, "no snapshot"
    assert snapshot["type"] == "snapshot"
    assert snapshot["status"]["seq"] == snapshot["seq"]
    return snapshot, items


async def completed_three_steps(client: TestClient[Any, Any]) -> tuple[str, list[dict[str, Any]]]:
    execution_id = (await submit(client, "three-steps"))["execution_id"]
    await wait_for_status(client, execution_id, "completed")
    stored = await events(client, execution_id)
    assert stored[-1]["type"] == "workflow_completed"
    return execution_id, stored


async def test_completed_execution_resumes_after_last_event_id(
        client: TestClient[Any, Any]) -> None:
    """On a completed execution, Last-Event-ID: 3 gives the snapshot, then seq 4..N, then the
    stream ends; without a starting point only the snapshot comes."""
    execution_id, stored = await completed_three_steps(client)
    snapshot, items = await read_all(await open_stream(client, execution_id,
                                                       Last_Event_ID="3"))
    assert snapshot["seq"] == len(stored)
    assert snapshot["status"]["status"] == "completed"
    assert items == stored[3:]

    snapshot, items = await read_all(await open_stream(client, execution_id))
    assert snapshot["seq"] == len(stored)
    assert items == []


async def test_after_query_and_last_event_id_taking_precedence(
        client: TestClient[Any, Any]) -> None:
    """`?after=` replays from there; a reconnecting browser's Last-Event-ID wins over it."""
    execution_id, stored = await completed_three_steps(client)
    _, items = await read_all(await open_stream(client, execution_id, "?after=0"))
    assert items == stored
    _, items = await read_all(await open_stream(client, execution_id, "?after=2"))
    assert items == stored[2:]
    _, items = await read_all(await open_stream(client, execution_id, "?after=1",
                                                Last_Event_ID=str(len(stored) - 1)))
    assert items == stored[-1:]


async def test_live_events_of_a_running_execution(make_client: MakeClient) -> None:
    """A stream opened on a running execution gets each event as it is committed, to the
    terminal one, then ends."""
    client = await make_client(live={"progress_interval": 0})
    execution_id = (await submit(client, "pulse", input={"name": "sse", "beats": 3}))[
        "execution_id"]
    await wait_for_step(client, execution_id)
    resp = await open_stream(client, execution_id)
    stream = messages(resp)
    async with asyncio.timeout(10):
        snapshot = json.loads((await anext(stream))["data"])
        assert snapshot["type"] == "snapshot"
        assert snapshot["status"]["status"] == "running"
        received: list[dict[str, Any]] = []
        for beat in range(3):
            # Each beat's report arrives before the next beat is let go: it is live.
            workflows.release(f"sse-{beat}").set()
            msg = await anext(stream)
            event = json.loads(msg["data"])
            assert msg["id"] == str(event["seq"])
            assert event["type"] == "step_progress"
            assert event["message"] == f"beat {beat}"
            received.append(event)
        received.extend([json.loads(msg["data"]) async for msg in stream])
    stored = await events(client, execution_id)
    assert [e["seq"] for e in received] == list(range(snapshot["seq"] + 1, len(stored) + 1))
    assert received == stored[snapshot["seq"]:]
    assert received[-1]["type"] in TERMINAL_TYPES


async def test_keep_alives_keep_the_stream_open_for_later_events(
        make_client: MakeClient) -> None:
    """Keep-alive comments while a step waits do not end the stream: the events committed
    after them, to the terminal one, come over the same stream."""
    client = await make_client(live={"heartbeat": 0.2})
    execution_id = (await submit(client, "waiter", input={"name": "idle"}))["execution_id"]
    await wait_for_step(client, execution_id)
    resp = await open_stream(client, execution_id)
    snapshot: dict[str, Any] | None = None
    keep_alives = 0
    received: list[dict[str, Any]] = []
    async with asyncio.timeout(15):
        async for part in parts(resp):
            if isinstance(part, str):
                assert part == "keep-alive"
                keep_alives += 1
                if keep_alives == 2:  # idle long enough: now let the step finish
                    workflows.release("idle").set()
            elif snapshot is None:
                snapshot = json.loads(part["data"])
            else:
                assert keep_alives >= 2, "an event came before the step was released"
                received.append(json.loads(part["data"]))
    assert keep_alives >= 2
    assert snapshot is not None
    assert snapshot["status"]["status"] == "running"
    stored = await events(client, execution_id)
    assert received == stored[snapshot["seq"]:]
    assert [e["type"] for e in received][-1] == "workflow_completed"
    assert "step_finished" in [e["type"] for e in received]


async def test_unknown_execution_and_bad_starting_points(client: TestClient[Any, Any]) -> None:
    """404 problem for an unknown id; a malformed Last-Event-ID or after= is a 4xx problem."""
    await problem_of(await client.get(stream_path("no-such-id")), 404)
    execution_id, _ = await completed_three_steps(client)
    await problem_of(await client.get(stream_path(execution_id) + "?after=-1"), 422)
    await problem_of(await client.get(stream_path(execution_id),
                                      headers={"Last-Event-ID": "abc"}), 400)


async def test_shutdown_ends_an_open_stream(make_client: MakeClient) -> None:
    """Stopping the server ends an event stream at once: it went on until its next heartbeat
    (30 s here) found the peer gone, and the shutdown waited for it."""
    client = await make_client(engine={"shutdown_grace": 0})
    execution_id = (await submit(client, "sleeper"))["execution_id"]
    await wait_for_step(client, execution_id)
    resp = await client.get(stream_path(execution_id))
    assert resp.status == 200
    await resp.content.readuntil(b"\n\n")  # the snapshot: the stream is open
    async with asyncio.timeout(15):
        await client.server.close()
        assert await resp.content.read() is not None  # the rest, to its end
