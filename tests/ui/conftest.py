"""The dashboard in a real browser: Debian's headless Chromium driven by playwright, against the
real app served on a loopback port in the test process (so a test can also act on the engine).

One browser for the session (its launch is the slow part); each test gets a new app on a fresh
SQLite file and a new browser context (its own sessionStorage and cookies).
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer

from workflowd.api import create_app
from workflowd.config import Settings

try:
    from playwright.async_api import Browser, ConsoleMessage, Page, async_playwright, expect
except ImportError:  # the test extra is not installed
    pytest.skip("playwright is not installed: pip install -e '.[test]'", allow_module_level=True)

CHROMIUM = Path(os.environ.get("WORKFLOWD_CHROMIUM", "/usr/bin/chromium"))
# As root, in a sandbox with no network but loopback: no sandboxing of its own, nothing
# fetched in the background (which this machine's closed network refuses, many at a time).
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
API = "/api/v1"
EXPECTED = re.compile(r"Failed to load resource: the server responded with a status of 4\d\d")

# Waits on page state, never on the clock: this only bounds how long a state may take to show
# on a busy two-core machine.
expect.set_options(timeout=15_000)


@dataclass
class Dashboard:
    """The app on a loopback port, and an HTTP client for arranging what the page shows."""

    app: web.Application
    url: str
    http: aiohttp.ClientSession
    headers: dict[str, str] = field(default_factory=dict)

    async def call(self, method: str, path: str, expect: int | None = None,
                   **kwargs: Any) -> Any:
        async with self.http.request(method, self.url + path, headers=self.headers,
                                     **kwargs) as resp:
            body = await resp.json(content_type=None)
            if expect is not None:
                assert resp.status == expect, body
            return body

    async def submit(self, workflow: str, **body: Any) -> str:
        answer = await self.call("POST", f"{API}/workflows/{workflow}/executions", json=body)
        execution_id: str = answer["execution_id"]
        return execution_id

    async def events(self, execution_id: str) -> list[dict[str, Any]]:
        page = await self.call("GET", f"{API}/executions/{execution_id}/events?limit=500",
                               expect=200)
        items: list[dict[str, Any]] = page["items"]
        return items


MakeDashboard = Callable[..., Awaitable[Dashboard]]


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browser() -> AsyncIterator[Browser]:
    if not os.path.exists(CHROMIUM):  # noqa: ASYNC240  (once per session, before any I/O)
        reason = f"no Chromium at {CHROMIUM}: apt-get install chromium (.ci/run does)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS,
                                           headless=True)
        yield browser
        await browser.close()


@pytest_asyncio.fixture(loop_scope="session")
async def make_dashboard(settings: Settings) -> AsyncIterator[MakeDashboard]:
    """Start the app with `settings`, changed by sections given as keyword arguments."""
    servers: list[TestServer] = []
    sessions: list[aiohttp.ClientSession] = []

    async def make(**sections: dict[str, Any]) -> Dashboard:
        data = settings.model_dump()
        for name, values in sections.items():
            data.setdefault(name, {}).update(values)
        app = create_app(Settings.model_validate(data))
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        http = aiohttp.ClientSession()
        sessions.append(http)
        return Dashboard(app, str(server.make_url("")).rstrip("/"), http)

    yield make
    for http in sessions:
        await http.close()
    for server in reversed(servers):
        await server.close()


@pytest_asyncio.fixture(loop_scope="session")
async def dashboard(make_dashboard: MakeDashboard) -> Dashboard:
    return await make_dashboard()


@dataclass
class Pages:
    """New pages in their own browser contexts; what they log as errors fails the test."""

    browser: Browser
    errors: list[str] = field(default_factory=list)
    contexts: list[Any] = field(default_factory=list)

    async def open(self, base_url: str, *, width: int = 1280, height: int = 800,
                   token: str | None = None) -> Page:
        context = await self.browser.new_context(base_url=base_url,
                                                 viewport={"width": width, "height": height})
        self.contexts.append(context)
        if token is not None:
            await context.add_init_script(
                f"sessionStorage.setItem('workflowd.token', {token!r});")
        page = await context.new_page()
        page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))
        page.on("console", self._console)
        return page

    def _console(self, msg: ConsoleMessage) -> None:
        # A problem answer (4xx) is logged by the browser as a failed load; the page shows it.
        if msg.type == "error" and not EXPECTED.match(msg.text):
            self.errors.append(f"console: {msg.text}")


@pytest_asyncio.fixture(loop_scope="session")
async def pages(browser: Browser, make_dashboard: MakeDashboard) -> AsyncIterator[Pages]:
    # Set up after the servers, so closed before them: a page never sees its server go away.
    opened = Pages(browser)
    yield opened
    for context in opened.contexts:
        await context.close()
    assert not opened.errors, opened.errors


@pytest_asyncio.fixture(loop_scope="session")
async def page(dashboard: Dashboard, pages: Pages) -> Page:
    return await pages.open(dashboard.url)


