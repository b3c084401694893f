"""Waits and checks shared by the tests: poll under a timeout, never a bare sleep."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Iterator, MutableMapping
from typing import Any

import structlog
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

API = "/api/v1"


async def submit(client: TestClient[Any, Any], workflow: str, expect: int = 202,
                 **body: Any) -> dict[str, Any]:
    resp = await client.post(f"{API}/workflows/{workflow}/executions", json=body)
    assert resp.status == expect, await resp.text()
    data: dict[str, Any] = await resp.json()
    return data


async def get_json(client: TestClient[Any, Any], path: str) -> Any:
    resp = await client.get(path)
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def live(client: TestClient[Any, Any], execution_id: str) -> dict[str, Any]:
    data: dict[str, Any] = await get_json(client, f"{API}/executions/{execution_id}/status/live")
    return data


async def wait_for_status(client: TestClient[Any, Any], execution_id: str, *statuses: str,
                          timeout: float = 15.0) -> dict[str, Any]:
    """Long-poll `/status/live` until the execution reaches one of `statuses`."""
    async with asyncio.timeout(timeout):
        seq = -1
        while True:
            resp = await client.get(f"{API}/executions/{execution_id}/status/live",
                                    params={"since": str(seq), "wait": "5"} if seq >= 0 else {})
            if resp.status == 304:
                continue
            assert resp.status == 200, await resp.text()
            status: dict[str, Any] = await resp.json()
            if status["status"] in statuses:
                return status
            seq = status["seq"]


async def wait_for_event(client: TestClient[Any, Any], execution_id: str, event_type: str,
                         timeout: float = 15.0) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        seq = 0
        while True:
            for event in await events(client, execution_id):
                if event["type"] == event_type:
                    return event
            status = await live(client, execution_id)
            if status["seq"] == seq:
                await client.get(f"{API}/executions/{execution_id}/status/live",
                                 params={"since": str(seq), "wait": "5"})
            seq = status["seq"]


async def events(client: TestClient[Any, Any], execution_id: str) -> list[dict[str, Any]]:
    """Every persisted event of the execution, page after page."""
    return await pages(client, f"{API}/executions/{execution_id}/events")


async def pages(client: TestClient[Any, Any], path: str) -> list[dict[str, Any]]:
    """Every item of a paged route that continues with `after=` (events, logs)."""
    items: list[dict[str, Any]] = []
    after = "0"
    while True:
        data = await get_json(client, f"{path}?after={after}&limit=500")
        items.extend(data["items"])
        if data["next_cursor"] is None:
            return items
        after = data["next_cursor"]


def assert_gapless(items: list[dict[str, Any]]) -> None:
    assert [e["seq"] for e in items] == list(range(1, len(items) + 1))


async def problem_of(resp: ClientResponse, status: int) -> dict[str, Any]:
    """Check `resp` is an RFC 9457 problem answer with `status`; answer its body."""
    text = await resp.text()
    assert resp.status == status, text
    assert resp.content_type == "application/problem+json", resp.content_type
    assert "Traceback" not in text
    body: dict[str, Any] = await resp.json(content_type=None)
    assert {"type", "title", "status", "detail", "instance"} <= set(body), body
    assert body["status"] == status
    assert isinstance(body["title"], str)
    assert isinstance(body["detail"], str)
    assert body["detail"]
    return body


async def all_executions(client: TestClient[Any, Any]) -> list[dict[str, Any]]:
    """Every execution `GET /executions` lists, newest first, walking all pages."""
    items: list[dict[str, Any]] = []
    params: dict[str, str] = {"limit": "500"}
    while True:
        page = await get_json(client, f"{API}/executions?" + "&".join(
            f"{k}={v}" for k, v in params.items()))
        items.extend(page["items"])
        if page["next_cursor"] is None:
            return items
        params["cursor"] = page["next_cursor"]


async def wait_for_step(client: TestClient[Any, Any], execution_id: str,
                        timeout: float = 15.0) -> dict[str, Any]:
    """Long-poll `/status/live` until the execution is inside a step (has a `current_step`)."""
    path = f"{API}/executions/{execution_id}/status/live"
    async with asyncio.timeout(timeout):
        status = await live(client, execution_id)
        while status["current_step"] is None:
            resp = await client.get(path, params={"since": str(status["seq"]), "wait": "5"})
            if resp.status == 200:
                status = await resp.json()
        return status


# Auth on (API.md §8): one token per role, plus a second token of the approver's subject with
# the submitter role (four-eyes is about subjects, not tokens).
SUBJECTS = {"viewer": "vera", "submitter": "sam", "approver": "ana", "worker": "walt",
            "admin": "ada"}
TOKENS = {role: f"wfd-test-token-{role}-5f1c0a9e" for role in SUBJECTS}
ANA_SUBMITS = "wfd-test-token-ana-submits-77d2"


def auth_settings(**extra: Any) -> dict[str, Any]:
    """An `[auth]` section with the tokens above (only their hashes, as a config holds)."""
    from workflowd.api.auth import hash_token

    tokens = [{"subject": SUBJECTS[role], "role": role, "sha256": hash_token(token)}
              for role, token in TOKENS.items()]
    tokens.append({"subject": "ana", "role": "submitter", "sha256": hash_token(ANA_SUBMITS)})
    return {"enabled": True, "tokens": tokens, **extra}


def bearer(role_or_token: str) -> dict[str, str]:
    """The Authorization header for a role's token (or for a token given as it is)."""
    return {"Authorization": f"Bearer {TOKENS.get(role_or_token, role_or_token)}"}


async def wait_for_step_event(client: TestClient[Any, Any], execution_id: str, event_type: str,
                              step: str, timeout: float = 15.0) -> dict[str, Any]:
    """The first event of `event_type` for `step`, waiting (long-poll) until it is committed."""
    path = f"{API}/executions/{execution_id}/status/live"
    async with asyncio.timeout(timeout):
        while True:
            status = await live(client, execution_id)
            for event in await events(client, execution_id):
                if event["type"] == event_type and event.get("step") == step:
                    return event
            await client.get(path, params={"since": str(status["seq"]), "wait": "5"})


async def external_waiting(client: TestClient[Any, Any], workflow: str = "external-job",
                           **body: Any) -> tuple[str, dict[str, Any]]:
    """Submit and wait until the external step `work` waits; answer the id and its callback."""
    execution_id = (await submit(client, workflow, **body))["execution_id"]
    started = await step_started(client, execution_id, "work")
    return execution_id, started["callback"]


async def step_started(client: TestClient[Any, Any], execution_id: str,
                       step: str) -> dict[str, Any]:
    """The `step_started` event of `step`, waiting until it is committed."""
    await wait_for_event(client, execution_id, "step_started")
    while True:
        for event in await events(client, execution_id):
            if event["type"] == "step_started" and event["step"] == step:
                return event
        await wait_for_event(client, execution_id, "cycle_completed")


async def post_callback(client: TestClient[Any, Any], url: str, token: str | None,
                        body: dict[str, Any]) -> ClientResponse:
    """POST `body` to a callback URL (`progress_url`, `complete_url`) with the step's token."""
    path = url.split("://", 1)[-1]
    path = path[path.index("/"):]
    headers = {"X-Workflowd-Token": token} if token else {}
    return await client.post(path, json=body, headers=headers)


async def raw_request(client: TestClient[Any, Any], method: str, path: str, headers: bytes,
                      body: bytes = b"") -> tuple[int, bytes, bytes]:
    """Send a request as bytes, for headers aiohttp's client would not send (bytes that are
    not UTF-8); answer its status, head and body."""
    assert client.server.host is not None
    assert client.server.port is not None
    head = (f"{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n").encode()
    async with asyncio.timeout(10):
        reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
        writer.write(head + headers + b"\r\n" + body)
        answer = await reader.read()
        writer.close()
        await writer.wait_closed()
    status_line, _, rest = answer.partition(b"\r\n")
    answer_head, _, answer_body = rest.partition(b"\r\n\r\n")
    return int(status_line.split()[1]), answer_head, answer_body


async def wait_for_pause(client: TestClient[Any, Any], execution_id: str, cycle: int,
                         timeout: float = 15.0) -> dict[str, Any]:
    """Long-poll until the execution is `paused` with `cycle` committed cycles; fails if it
    ends instead."""
    path = f"{API}/executions/{execution_id}/status/live"
    async with asyncio.timeout(timeout):
        while True:
            status = await wait_for_status(client, execution_id, "paused", "completed",
                                           "failed", "cancelled", "timed_out", "rejected")
            assert status["status"] == "paused", status
            if status["cycle"] == cycle:
                return status
            await client.get(path, params={"since": str(status["seq"]), "wait": "5"})


class LogWatch:
    """A structlog processor that keeps every entry (from the loop or the writer's thread) and
    lets a test wait for one: `await watch.wait_for("store_unavailable", reason=...)`."""

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Event | None = None

    def __call__(self, logger: Any, method: str,
                 event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        self.entries.append({**event_dict, "log_level": method})
        loop, changed = self._loop, self._changed
        if loop is not None and changed is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                loop.call_soon_threadsafe(changed.set)
        raise structlog.DropEvent

    def find(self, event: str, **fields: Any) -> list[dict[str, Any]]:
        return [e for e in list(self.entries) if e.get("event") == event
                and all(e.get(k) == v for k, v in fields.items())]

    async def wait_for(self, event: str, timeout: float = 15.0,
                       **fields: Any) -> dict[str, Any]:
        """The first entry named `event` with `fields`, waiting for it if need be."""
        self._loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            while True:
                self._changed = asyncio.Event()
                found = self.find(event, **fields)
                if found:
                    return found[0]
                await self._changed.wait()

    async def wait_for_count(self, event: str, count: int, timeout: float = 15.0,
                             **fields: Any) -> list[dict[str, Any]]:
        """Wait until `count` entries named `event` with `fields` were logged."""
        self._loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            while True:
                self._changed = asyncio.Event()
                found = self.find(event, **fields)
                if len(found) >= count:
                    return found
                await self._changed.wait()


@contextlib.contextmanager
def file_locked(path: str) -> Iterator[sqlite3.Connection]:
    """Hold the SQLite file's write lock from another connection (as another program would)."""
    conn = sqlite3.connect(path, isolation_level=None, timeout=10)
    try:
        conn.execute("BEGIN IMMEDIATE")
        yield conn
        conn.execute("ROLLBACK")
    finally:
        conn.close()


async def store_sql(store: Any, sql: str, *params: Any) -> None:
    """Run one statement on the app's store, whichever it is (`?` placeholders): a test's way
    to age rows. SQLite: through its writer; PostgreSQL: on its pool (no lease needed)."""
    from workflowd.store import SQLiteStore, Write

    if isinstance(store, SQLiteStore):
        await store.commit(Write(statements=[(sql, params)]))
        return
    parts = sql.split("?")
    numbered = parts[0] + "".join(f"${n}{part}" for n, part in enumerate(parts[1:], 1))
    async with store._pool.acquire() as conn:
        await conn.execute(numbered, *params)
