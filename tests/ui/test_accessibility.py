"""axe-core on every page of the dashboard: no serious or critical violation.

axe runs from the copy that axe-playwright-python carries (nothing is fetched)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from axe_playwright_python.async_playwright import Axe
from playwright.async_api import Page, expect

from tests.ui.conftest import Dashboard, Pages

pytestmark = pytest.mark.asyncio(loop_scope="session")
AXE = Axe()


async def serious_violations(page: Page) -> list[str]:
    """What axe finds that is serious or critical, one line per rule with its elements."""
    results = await AXE.run(page)
    violations: list[dict[str, Any]] = results.response["violations"]
    return [f"{v['id']} ({v['impact']}): {v['help']} at "
            + ", ".join(str(node["target"]) for node in v["nodes"])
            for v in violations if v["impact"] in ("serious", "critical")]


async def test_executions_page(page: Page, dashboard: Dashboard) -> None:
    """The executions list, with rows in several statuses and the start form."""
    waiting = await dashboard.submit("audit-plan", input={}, labels={"team": "audit"})
    await dashboard.submit("three-steps", input={})
    await page.goto("/ui/")
    await expect(page.locator(f'tr[data-id="{waiting}"]')).to_have_attribute(
        "data-status", "awaiting_approval")
    await expect(page.locator('tr[data-status="completed"]')).to_have_count(1)
    assert await serious_violations(page) == []


async def test_execution_page_at_the_gate_and_finished(page: Page, dashboard: Dashboard) -> None:
    """One execution while it awaits approval (the form shown), and after it finished."""
    execution_id = await dashboard.submit("audit-plan", input={})
    await page.goto(f"/ui/executions/{execution_id}")
    await expect(page.get_by_role("button", name="Approve")).to_be_visible()
    assert await serious_violations(page) == []
    await page.get_by_label("Comment").fill("fine")
    await page.get_by_role("button", name="Approve").click()
    await expect(page.locator('[data-field="Status"] .status')).to_have_text(
        re.compile("completed"))
    await expect(page.locator(".verdict")).to_be_visible()
    await page.locator("details.json summary").first.click()
    assert await serious_violations(page) == []


async def test_workflows_page(page: Page) -> None:
    """The registered workflows and their steps."""
    await page.goto("/ui/workflows")
    await expect(page.locator('[data-workflow="audit-plan"]')).to_be_visible()
    assert await serious_violations(page) == []


async def test_pages_at_a_phones_width(pages: Pages, dashboard: Dashboard) -> None:
    """The list (as cards) and an execution (one column) at 390 px."""
    execution_id = await dashboard.submit("audit-plan", input={})
    page = await pages.open(dashboard.url, width=390, height=844)
    await page.goto("/ui/")
    await expect(page.locator(f'tr[data-id="{execution_id}"]')).to_be_visible()
    assert await serious_violations(page) == []
    await page.goto(f"/ui/executions/{execution_id}")
    await expect(page.get_by_role("button", name="Approve")).to_be_visible()
    assert await serious_violations(page) == []
