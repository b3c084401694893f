"""The dashboard with auth on (API.md §8): it asks for a token, keeps it for the tab only,
follows over tickets, and offers only what the token's role may do."""

from __future__ import annotations

import hashlib
import re
from typing import Any

import pytest
import pytest_asyncio
from playwright.async_api import Page, expect

from tests.ui.conftest import API, Dashboard, MakeDashboard, Pages
from tests.ui.test_accessibility import serious_violations

pytestmark = [pytest.mark.asyncio(loop_scope="session")]

# role -> (subject, token)
PEOPLE = {"viewer": ("vera", "tok-viewer-5b1c"), "approver": ("ana", "tok-approver-9e2f"),
          "submitter": ("sam", "tok-submitter-3d7a"), "admin": ("root", "tok-admin-c4d8")}


def auth_settings() -> dict[str, Any]:
    return {"enabled": True, "tokens": [
        {"subject": subject, "role": role, "sha256": hashlib.sha256(token.encode()).hexdigest()}
        for role, (subject, token) in PEOPLE.items()]}


@pytest_asyncio.fixture(loop_scope="session")
async def secured(make_dashboard: MakeDashboard) -> Dashboard:
    dashboard = await make_dashboard(auth=auth_settings())
    dashboard.headers = {"Authorization": f"Bearer {PEOPLE['admin'][1]}"}
    return dashboard


def token(role: str) -> str:
    return PEOPLE[role][1]


async def test_asks_for_a_token_and_keeps_it_for_the_tab_only(
        pages: Pages, secured: Dashboard) -> None:
    """No token: the page asks; the token given is kept in this tab's sessionStorage only."""
    page = await pages.open(secured.url)
    await page.goto("/ui/")
    dialog = page.get_by_role("dialog", name="Sign in")
    await expect(dialog).to_be_visible()
    assert await serious_violations(page) == []
    await dialog.get_by_label("Token").fill(token("viewer"))
    await dialog.get_by_role("button", name="Sign in").click()
    await expect(dialog).to_be_hidden()
    await expect(page.locator("#who")).to_contain_text("vera")
    await expect(page.locator("#who")).to_contain_text("viewer")
    await expect(page.locator("#conn")).to_have_text("Live")  # the list's socket, by ticket
    assert await page.evaluate("sessionStorage.getItem('workflowd.token')") == token("viewer")
    # A viewer may not start: no start form.
    await expect(page.get_by_role("button", name="Start", exact=True)).to_have_count(0)
    # Another tab has no token of its own.
    other = await page.context.new_page()
    await other.goto(f"{secured.url}/ui/")
    await expect(other.get_by_role("dialog", name="Sign in")).to_be_visible()
    await other.close()
    # Signing out forgets it.
    await page.get_by_role("button", name="Sign out").click()
    assert await page.evaluate("sessionStorage.getItem('workflowd.token')") is None


async def test_a_wrong_token_is_refused_and_asked_again(pages: Pages, secured: Dashboard) -> None:
    """A token the service does not know: the page says so and asks again."""
    page = await pages.open(secured.url, token="not-a-token")
    await page.goto("/ui/")
    dialog = page.get_by_role("dialog", name="Sign in")
    await expect(dialog).to_be_visible()
    await expect(dialog).to_contain_text("not accepted")


async def test_a_viewer_sees_no_approve_button_and_an_approver_does(
        pages: Pages, secured: Dashboard) -> None:
    """The viewer follows (over a ticket) but is offered no Approve, Reject or Cancel; the
    approver approves, and the viewer's page shows who approved as it happens."""
    execution_id = await secured.submit("audit-plan", input={})
    viewer = await pages.open(secured.url, token=token("viewer"))
    await viewer.goto(f"/ui/executions/{execution_id}")
    status = viewer.locator('[data-field="Status"] .status')
    await expect(status).to_have_text(re.compile("awaiting approval"))
    await expect(viewer.locator(".approval")).to_contain_text("viewer")
    await expect(viewer.get_by_role("button", name="Approve")).to_have_count(0)
    await expect(viewer.get_by_role("button", name="Reject")).to_have_count(0)
    await expect(viewer.get_by_role("button", name="Cancel")).to_have_count(0)

    approver = await pages.open(secured.url, token=token("approver"))
    await approver.goto(f"/ui/executions/{execution_id}")
    await expect(approver.get_by_role("button", name="Approve")).to_be_visible()
    await expect(approver.get_by_role("button", name="Cancel")).to_have_count(0)
    await approver.get_by_label("Comment").fill("ok by me")
    await approver.get_by_role("button", name="Approve").click()
    await expect(approver.locator(".verdict-line")).to_contain_text("Approved by ana")

    await expect(status).to_have_text(re.compile("completed"))
    await expect(viewer.locator(".verdict-line")).to_contain_text("Approved by ana")
    await expect(viewer.locator(".verdict .comment")).to_have_text("ok by me")
    execution = await secured.call("GET", f"{API}/executions/{execution_id}", expect=200)
    assert execution["approval"]["decided_by"] == "ana"


async def test_a_submitter_starts_and_cancels(pages: Pages, secured: Dashboard) -> None:
    """A submitter gets the start form and Cancel, but no Approve."""
    page: Page = await pages.open(secured.url, token=token("submitter"))
    await page.goto("/ui/")
    await page.get_by_label("Workflow", exact=True).select_option("audit-plan")
    await page.get_by_role("button", name="Start", exact=True).click()
    await page.wait_for_url(re.compile(r"/ui/executions/[^/]+$"))
    await expect(page.locator('[data-field="Status"] .status')).to_have_text(
        re.compile("awaiting approval"))
    await expect(page.get_by_role("button", name="Approve")).to_have_count(0)
    await page.get_by_role("button", name="Cancel").click()
    await expect(page.locator('[data-field="Status"] .status')).to_have_text(
        re.compile("cancelled"))
    await expect(page.locator('[data-field="Submitted by"]')).to_have_text("sam")
