"""Outbound calls (API.md §8): refused when the URL is given (a submit's callback_url, a
webhook in the config, an external step's url=) and again when DNS answers at send time. No
test here sends a packet off the machine: refused addresses are never connected to, and the
DNS answers come from a stub resolver."""

from __future__ import annotations

import asyncio
import socket
import sys
import types
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.test_utils import TestClient, TestServer
from pydantic import ValidationError
from pytest_aiohttp import AiohttpClient, AiohttpServer

from tests.api.test_webhooks import Receiver
from tests.conftest import MakeClient
from tests.helpers import API, problem_of, submit, wait_for_status
from workflowd import Workflow
from workflowd.api import create_app
from workflowd.api.delivery import CheckedResolver, RefusedAddress, outbound_post
from workflowd.api.keys import OUTBOX, RESOLVER
from workflowd.config import Settings, load_settings
from workflowd.errors import DefinitionError
from workflowd.outbound import OutboundPolicy, OutboundRefused


class StubResolver(AbstractResolver):
    """DNS as the test says: `answers[host]` is the list of addresses a name resolves to."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        self.asked.append(host)
        return [{"hostname": host, "host": address, "port": port,
                 "family": socket.AF_INET6 if ":" in address else socket.AF_INET,
                 "proto": 0, "flags": socket.AI_NUMERICHOST}
                for address in self.answers[host]]

    async def close(self) -> None:
        pass


@pytest.mark.parametrize("url", ["http://169.254.169.254/latest/meta-data/",
                                 "http://[fe80::1]/hook", "http://metadata.google.internal/",
                                 "http://[::ffff:169.254.169.254]/"])
async def test_callback_url_refused_at_submit(client: TestClient[Any, Any], url: str) -> None:
    """A callback_url to a link-local or metadata address is 422, and nothing is created."""
    resp = await client.post(f"{API}/workflows/three-steps/executions",
                             json={"callback_url": url})
    body = await problem_of(resp, 422)
    assert body["errors"][0]["loc"] == ["body", "callback_url"]
    listed = await (await client.get(f"{API}/executions")).json()
    assert listed["items"] == []


async def test_callback_url_only_to_allowed_hosts(make_client: MakeClient) -> None:
    """With `[outbound] allow_hosts` a callback_url elsewhere is 422; an allowed one is taken."""
    client = await make_client(outbound={"allow_hosts": ["hooks.example.test"]})
    resp = await client.post(f"{API}/workflows/three-steps/executions",
                             json={"callback_url": "https://elsewhere.example.test/x"})
    body = await problem_of(resp, 422)
    assert "allow_hosts" in body["detail"]
    await submit(client, "three-steps", callback_url="https://hooks.example.test/x",
                 require_approval=True, expect=201)


@pytest.mark.parametrize(("hooks", "outbound"), [
    ([{"url": "http://169.254.169.254/hook"}], {}),
    ([{"url": "http://metadata.google.internal/hook"}], {}),
    ([{"url": "https://ok.example.test/"}, {"url": "https://other.example.test/"}],
     {"allow_hosts": ["ok.example.test"]}),
])
def test_webhook_refused_in_the_config(tmp_path: Path, hooks: list[dict[str, str]],
                                       outbound: dict[str, Any]) -> None:
    """A [[webhooks]] url that is refused stops start-up with a config error naming it."""
    with pytest.raises(ValidationError) as refused:
        Settings.model_validate({"webhooks": hooks, "outbound": outbound})
    assert f"webhooks.{len(hooks) - 1}.url" in str(refused.value)
    environ = {"WORKFLOWD_WEBHOOKS": str(hooks).replace("'", '"'),
               "WORKFLOWD_OUTBOUND_ALLOW_HOSTS": str(outbound.get("allow_hosts", []))
               .replace("'", '"')}
    with pytest.raises(ValidationError):
        load_settings(None, environ=environ)


def test_external_url_refused_in_the_definition() -> None:
    """`wf.external(url=...)` to a link-local or metadata address is a definition error."""
    wf = Workflow("bad-external")
    for url in ("http://169.254.169.254/work", "http://[fe80::1]/", "http://metadata/"):
        with pytest.raises(DefinitionError):
            wf.external("work", url=url)


def test_external_url_outside_allow_hosts_stops_start(settings: Settings) -> None:
    """An external step's url= outside `[outbound] allow_hosts` stops create_app."""
    wf = Workflow("elsewhere")
    wf.external("work", url="https://workers.example.test/jobs")
    module = types.ModuleType("tests._elsewhere")
    module.wf = wf  # type: ignore[attr-defined]
    sys.modules[module.__name__] = module
    data = settings.model_dump()
    data["workflows"]["modules"] = [module.__name__]
    data["outbound"]["allow_hosts"] = ["hooks.example.test"]
    with pytest.raises(DefinitionError) as refused:
        create_app(Settings.model_validate(data))
    assert "workers.example.test" in refused.value.detail
    data["outbound"]["allow_hosts"] = ["*.example.test"]
    create_app(Settings.model_validate(data))


async def _local(aiohttp_server: AiohttpServer, receiver: Receiver) -> TestServer:
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    server: TestServer = await aiohttp_server(app, host="127.0.0.1")
    return server


async def test_resolved_addresses_are_checked_before_connecting(
        aiohttp_server: AiohttpServer) -> None:
    """A name that resolves to a refused address among others is refused whole, before any
    connection: the receiver on the first (allowed) address is never called."""
    receiver = Receiver()
    server = await _local(aiohttp_server, receiver)
    stub = StubResolver({"rebind.test": ["127.0.0.1", "169.254.169.254"]})
    session, post = outbound_post(OutboundPolicy(), stub)
    try:
        with pytest.raises(aiohttp.ClientConnectorError) as refused:
            await post(f"http://rebind.test:{server.port}/hook", "{}", {})
        assert isinstance(refused.value.os_error, RefusedAddress)
        assert stub.asked == ["rebind.test"]
        assert receiver.calls == 0
        stub.answers["rebind.test"] = ["127.0.0.1"]
        await post(f"http://rebind.test:{server.port}/hook", "{}", {})
        assert receiver.calls == 1
    finally:
        await session.close()


async def test_checked_resolver_alone() -> None:
    """The resolver answers only what passed; any refused address refuses the name."""
    resolver = CheckedResolver(OutboundPolicy(), StubResolver({
        "fine.test": ["10.1.2.3", "2606:2800:220:1::"], "meta.test": ["fd00:ec2::254"]}))
    assert [r["host"] for r in await resolver.resolve("fine.test", 80)] == [
        "10.1.2.3", "2606:2800:220:1::"]
    with pytest.raises(RefusedAddress, match="metadata"):
        await resolver.resolve("meta.test", 80)


async def test_literal_addresses_are_checked_at_send(aiohttp_server: AiohttpServer) -> None:
    """An address literal never reaches a resolver: the URL itself is checked when sent (the
    config may have changed since the delivery was queued)."""
    session, post = outbound_post(OutboundPolicy.of(["hooks.example.test"]),
                                  StubResolver({}))
    try:
        with pytest.raises(OutboundRefused):
            await post("http://127.0.0.1:9/hook", "{}", {})
        with pytest.raises(OutboundRefused):
            await post("http://169.254.169.254/hook", "{}", {})
    finally:
        await session.close()


async def test_redirects_are_not_followed(aiohttp_server: AiohttpServer) -> None:
    """A receiver answering with a redirect fails the delivery; the redirect is not followed."""
    target = Receiver()
    target_server = await _local(aiohttp_server, target)

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect(str(target_server.make_url("/hook")))

    app = web.Application()
    app.router.add_post("/hook", redirect)
    server: TestServer = await aiohttp_server(app, host="127.0.0.1")
    session, post = outbound_post(OutboundPolicy())
    try:
        with pytest.raises(RuntimeError, match="307"):
            await post(str(server.make_url("/hook?key=s3cret-path")), "{}", {})
    finally:
        await session.close()
    assert target.calls == 0


async def test_webhook_rebinding_refused_then_delivered(
        aiohttp_client: AiohttpClient, aiohttp_server: AiohttpServer,
        settings: Settings) -> None:
    """End to end: a webhook whose name resolves to a metadata address at send time is not
    delivered (the failure names no secret); once DNS answers a fine address it is."""
    receiver = Receiver()
    server = await _local(aiohttp_server, receiver)
    stub = StubResolver({"hooks.rebind.test": ["169.254.169.254"]})
    data = settings.model_dump()
    data["webhooks"] = [{"url": f"http://hooks.rebind.test:{server.port}/hook?sig=abc",
                         "secret": "whsec-9a8b"}]
    data["delivery"] = {**data["delivery"], "backoff": 0.01}
    app = create_app(Settings.model_validate(data))
    app[RESOLVER] = stub
    client = await aiohttp_client(app)
    execution_id = (await submit(client, "three-steps"))["execution_id"]
    await wait_for_status(client, execution_id, "completed")
    outbox = app[OUTBOX]
    async with asyncio.timeout(10):
        while outbox.failed_attempts == 0:
            await asyncio.sleep(0.01)
    assert receiver.calls == 0
    stub.answers["hooks.rebind.test"] = ["127.0.0.1"]
    await receiver.wait()
    assert receiver.got[0][0]["execution_id"] == execution_id
