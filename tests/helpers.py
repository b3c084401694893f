"""Waits and checks shared by the tests: poll under a timeout, never a bare sleep."""

from __future__ import annotations

import asyncio
from typing import Any

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
    data = await get_json(client, f"{API}/executions/{execution_id}/events?limit=1000")
    items: list[dict[str, Any]] = data["items"]
    return items


def assert_gapless(items: list[dict[str, Any]]) -> None:
    assert [e["seq"] for e in items] == list(range(1, len(items) + 1))
