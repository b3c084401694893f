"""Completion webhooks: signed, retried with backoff, kept in the store across a restart."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer
from pytest_aiohttp import AiohttpServer

from tests.conftest import MakeClient
from tests.helpers import submit, wait_for_status

SECRET = "s3cret"


@dataclass
class Receiver:
    """A local webhook receiver that can be told to fail its first answers."""

    fail_first: int = 0
    calls: int = 0
    got: list[tuple[dict[str, Any], str, str]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    called: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.Response:
        self.calls += 1
        self.called.set()
        if self.calls <= self.fail_first:
            return web.Response(status=503)
        raw = await request.read()
        self.got.append((await request.json(), raw.decode(),
                         request.headers.get("X-Workflowd-Signature", "")))
        self.arrived.set()
        return web.Response(status=204)

    async def wait(self, count: int = 1) -> None:
        async with asyncio.timeout(10):
            while len(self.got) < count:
                self.arrived.clear()
                await self.arrived.wait()


async def serve_receiver(aiohttp_server: AiohttpServer, receiver: Receiver,
                         port: int | None = None) -> TestServer:
    """A receiver of webhooks at `/hook` on a server of its own (the cluster tests use it too)."""
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    server: TestServer = await aiohttp_server(app, port=port) if port else await aiohttp_server(app)
    return server


def _valid(body: str, signature: str, secret: str = SECRET) -> bool:
    expected = "sha256=" + hmac.new(secret.encode(), body.encode(), hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature)


async def test_configured_webhook_is_signed(make_client: MakeClient,
                                            aiohttp_server: AiohttpServer) -> None:
    """A [[webhooks]] receiver gets the terminal event with a valid HMAC-SHA256 signature."""
    receiver = Receiver()
    server = await serve_receiver(aiohttp_server, receiver)
    client = await make_client(webhooks=[{"url": str(server.make_url("/hook")),
                                          "secret": SECRET}])
    execution_id = (await submit(client, "three-steps"))["execution_id"]
    await wait_for_status(client, execution_id, "completed")
    await receiver.wait()
    event, raw, signature = receiver.got[0]
    assert event["type"] == "workflow_completed"
    assert event["execution_id"] == execution_id
    assert _valid(raw, signature)
    assert not _valid(raw, signature, secret="other")


async def test_webhook_retried_after_a_failure(make_client: MakeClient,
                                               aiohttp_server: AiohttpServer) -> None:
    """A receiver failing once gets the event on the retry, exactly once."""
    receiver = Receiver(fail_first=1)
    server = await serve_receiver(aiohttp_server, receiver)
    client = await make_client(
        webhooks=[{"url": str(server.make_url("/hook")), "events": ["workflow_completed"],
                   "secret": SECRET}],
        delivery={"backoff": 0.01})
    execution_id = (await submit(client, "three-steps"))["execution_id"]
    await wait_for_status(client, execution_id, "completed")
    await receiver.wait()
    assert receiver.calls == 2
    assert [g[0]["type"] for g in receiver.got] == ["workflow_completed"]


async def test_callback_url_gets_the_terminal_event(make_client: MakeClient,
                                                    aiohttp_server: AiohttpServer) -> None:
    """`callback_url` in the submit body receives the execution's terminal event, signed."""
    receiver = Receiver()
    server = await serve_receiver(aiohttp_server, receiver)
    client = await make_client(delivery={"secret": SECRET})
    execution_id = (await submit(client, "flaky", input={"fail_times": 3},
                                 callback_url=str(server.make_url("/hook"))))["execution_id"]
    await wait_for_status(client, execution_id, "failed")
    await receiver.wait()
    event, raw, signature = receiver.got[0]
    assert event["type"] == "workflow_failed"
    assert _valid(raw, signature)


async def test_webhook_delivered_after_a_restart(make_client: MakeClient,
                                                 aiohttp_server: AiohttpServer) -> None:
    """A delivery the receiver could not take before a restart is sent by the next app."""
    receiver = Receiver(fail_first=1_000_000)  # down for the first app
    server = await serve_receiver(aiohttp_server, receiver)
    hooks = [{"url": str(server.make_url("/hook")), "secret": SECRET}]
    first = await make_client(webhooks=hooks, delivery={"backoff": 0.01})
    execution_id = (await submit(first, "three-steps"))["execution_id"]
    await wait_for_status(first, execution_id, "completed")
    async with asyncio.timeout(10):
        await receiver.called.wait()  # tried, and refused
    await first.close()

    receiver.fail_first = 0
    second = await make_client(webhooks=hooks, delivery={"backoff": 0.01})
    await receiver.wait()
    assert receiver.got[0][0]["execution_id"] == execution_id
    await second.close()
