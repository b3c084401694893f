"""Take the README's screenshots of the dashboard: `python -m tests.ui.screenshots [DIR]`.

Starts the app on a scratch SQLite file with the bundled workflows and the tests' ones, runs a
few executions into the states a screenshot should show, and saves `ui-list.png` and
`ui-execution.png` (1280x800) into DIR (default `docs/`)."""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

import aiohttp
from aiohttp.test_utils import TestServer
from playwright.async_api import async_playwright, expect

from tests import workflows
from tests.ui.conftest import API, CHROMIUM, CHROMIUM_ARGS
from workflowd.api import create_app
from workflowd.config import LoggingSettings, Settings
from workflowd.log import configure_logging


async def submit(http: aiohttp.ClientSession, url: str, workflow: str, **body: object) -> str:
    async with http.post(f"{url}{API}/workflows/{workflow}/executions", json=body) as resp:
        execution_id: str = (await resp.json())["execution_id"]
        return execution_id


async def take(out: Path) -> None:
    configure_logging(LoggingSettings(level="warning"), cache=False)
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings.model_validate({
            "store": {"path": f"{tmp}/workflowd.db"},
            "workflows": {"modules": ["workflowd.examples", "tests.workflows"]},
            "logging": {"level": "warning"}})
        server = TestServer(create_app(settings), host="127.0.0.1")
        await server.start_server()
        url = str(server.make_url("")).rstrip("/")
        async with aiohttp.ClientSession() as http, async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            page = await browser.new_page(viewport={"width": 1280, "height": 800},
                                          reduced_motion="reduce")
            await submit(http, url, "three-steps", input={}, labels={"team": "ops"})
            await submit(http, url, "flaky", input={"fail_times": 1})
            rejected = await submit(http, url, "audit-plan", input={})
            done = await submit(http, url, "audit-plan", labels={"team": "audit"},
                                input={"areas": ["access", "change-mgmt", "backups"]})
            await page.goto(f"{url}/ui/executions/{rejected}")
            await page.get_by_label("Comment").fill("Scope is missing vendors")
            await page.get_by_role("button", name="Reject").click()
            await expect(page.locator(".verdict")).to_be_visible()
            await page.goto(f"{url}/ui/executions/{done}")
            await page.get_by_label("Comment").fill("Plan covers the scope: go ahead")
            await page.get_by_role("button", name="Approve").click()
            await expect(page.locator('[data-field="Status"] [data-status="completed"]')
                         ).to_be_visible()
            await submit(http, url, "audit-plan", input={}, labels={"team": "audit"})
            await submit(http, url, "waiter", input={"name": "shot"})
            await submit(http, url, "sleeper", input={})
            await page.goto(f"{url}/ui/")
            await expect(page.locator('tr[data-status="awaiting_approval"]')).to_have_count(1)
            await expect(page.locator('tr[data-status="running"]')).to_have_count(2)
            await expect(page.locator('.counts [data-status="running"] .count')).to_have_text("2")
            await page.locator("h1").hover()
            await page.screenshot(path=out / "ui-list.png")
            await page.set_viewport_size({"width": 1280, "height": 1060})
            await page.goto(f"{url}/ui/executions/{done}")
            await expect(page.locator('.tl-row[data-status="completed"]')).to_have_count(5)
            await page.screenshot(path=out / "ui-execution.png")
            await browser.close()
            workflows.release("shot").set()
        await server.close()


if __name__ == "__main__":
    asyncio.run(take(Path(sys.argv[1] if len(sys.argv) > 1 else "docs")))
