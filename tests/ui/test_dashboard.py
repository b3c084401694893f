"""The dashboard as its users drive it, in a real browser against the real service."""

from __future__ import annotations

import asyncio
import re
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.async_api import Locator, Page, Route, expect

from tests import workflows
from tests.ui.conftest import API, Dashboard, Pages

pytestmark = pytest.mark.asyncio(loop_scope="session")


def status_of(page: Page) -> Locator:
    """The execution page's status, as words."""
    return page.locator('[data-field="Status"] .status')


def gets(page: Page, dashboard: Dashboard) -> list[str]:
    """The paths (and queries) the page GETs from now on, in order."""
    paths: list[str] = []
    page.on("request", lambda r: paths.append(r.url.removeprefix(dashboard.url))
            if r.method == "GET" else None)
    return paths


async def open_execution(page: Page, execution_id: str) -> None:
    await page.goto(f"/ui/executions/{execution_id}")
    await expect(page.get_by_role("heading", level=1)).not_to_have_text("Execution")


async def test_start_an_audit_plan_approve_it_with_a_comment_and_watch_it_finish(
        page: Page, dashboard: Dashboard) -> None:
    """Start from the page, stop at the gate with its prompt, approve by keyboard with a comment:
    the bar reaches 100, the timeline fills, the approver and the comment are shown."""
    await page.goto("/ui/")
    await expect(page.get_by_role("heading", name="Executions", level=1)).to_be_visible()
    await page.get_by_label("Workflow", exact=True).select_option("audit-plan")
    await page.get_by_label("Input", exact=True).fill('{"areas": ["access", "change-mgmt"]}')
    await page.get_by_role("button", name="Start", exact=True).click()
    await page.wait_for_url(re.compile(r"/ui/executions/[^/]+$"))
    execution_id = page.url.rsplit("/", 1)[-1]

    await expect(status_of(page)).to_have_text(re.compile("awaiting approval"))
    await expect(page.locator(".approval .prompt")).to_have_text("Approve the audit plan?")
    await expect(page.locator('.tl-row[data-step="approve_plan"]')).to_have_attribute(
        "data-status", "waiting")
    bar = page.get_by_role("progressbar", name="Progress")
    assert 0 < float(await bar.get_attribute("aria-valuenow") or 0) < 100

    # By keyboard: type the comment, Tab to Approve, press Enter.
    await page.get_by_label("Comment").fill("looks good")
    await page.keyboard.press("Tab")
    await expect(page.get_by_role("button", name="Approve")).to_be_focused()
    await page.keyboard.press("Enter")

    await expect(status_of(page)).to_have_text(re.compile("completed"))
    await expect(bar).to_have_attribute("aria-valuenow", "100")
    for step in ("draft_plan", "approve_plan", "route", "quick_check", "report"):
        await expect(page.locator(f'.tl-row[data-step="{step}"]')).to_have_attribute(
            "data-status", "completed")
    await expect(page.locator('.tl-row[data-step="deep_dive"]')).to_have_attribute(
        "data-status", "skipped")
    await expect(page.locator(".verdict-line")).to_contain_text("Approved by anonymous")
    await expect(page.locator(".verdict .comment")).to_have_text("looks good")
    await expect(page.locator('[data-decision="depth"]')).to_contain_text("fast")
    await expect(page.get_by_role("button", name="Approve")).to_have_count(0)
    await expect(page.get_by_role("button", name="Cancel")).to_have_count(0)
    result = page.locator("details.json[data-key^='Result'] pre")
    await expect(result).to_contain_text('"issues": 0')
    await expect(page.locator(".logs")).to_contain_text("plan drafted")

    execution = await dashboard.call("GET", f"{API}/executions/{execution_id}", expect=200)
    assert execution["approval"]["comment"] == "looks good"
    # Every event once, in order, as the store has them.
    stored = [e["seq"] for e in await dashboard.events(execution_id)]
    await expect(page.locator(".events li").last).to_have_attribute(
        "data-seq", str(stored[-1]))
    shown = [int(s) for s in await page.locator(".events li").evaluate_all(
        "items => items.map(li => li.dataset.seq)")]
    assert shown == stored


async def test_reject_with_a_comment(page: Page, dashboard: Dashboard) -> None:
    """Reject at the gate: the execution ends rejected, who rejected and why are shown."""
    execution_id = await dashboard.submit("audit-plan", input={})
    await open_execution(page, execution_id)
    await page.get_by_label("Comment").fill("scope is wrong")
    await page.get_by_role("button", name="Reject").click()
    await expect(status_of(page)).to_have_text(re.compile("rejected"))
    await expect(page.locator(".verdict-line")).to_contain_text("Rejected by anonymous")
    await expect(page.locator(".verdict .comment")).to_have_text("scope is wrong")
    await expect(page.locator('.tl-row[data-step="approve_plan"]')).to_have_attribute(
        "data-status", "failed")
    await expect(page.locator('.tl-row[data-step="report"]')).to_have_attribute(
        "data-status", "skipped")


async def test_a_refused_approve_shows_the_problem(page: Page, dashboard: Dashboard) -> None:
    """Someone else decides first: the page's Approve is answered 409, shown as the problem's
    title and detail (and still shown once the page has caught up)."""
    execution_id = await dashboard.submit("audit-plan", input={})
    await open_execution(page, execution_id)
    approve = f"{API}/executions/{execution_id}/approve"

    async def someone_else_first(route: Route) -> None:
        await dashboard.call("POST", approve, json={"comment": "me first"}, expect=202)
        await route.continue_()

    await page.route(f"**{approve}", someone_else_first)
    await page.get_by_role("button", name="Approve").click()
    answer = await dashboard.call("POST", approve, json={}, expect=409)
    problem = page.locator(".problem")
    await expect(problem.locator(".problem-title")).to_have_text(answer["title"])
    await expect(problem.locator(".problem-detail")).to_contain_text("this needs awaiting_approval")
    await expect(status_of(page)).to_have_text(re.compile("completed"))
    await expect(page.locator(".verdict .comment")).to_have_text("me first")
    await expect(problem).to_be_visible()


async def test_cancel_a_long_execution(page: Page, dashboard: Dashboard) -> None:
    """Cancel while a minute-long step runs: the step is cut off and the execution cancelled."""
    execution_id = await dashboard.submit("sleeper", input={})
    await open_execution(page, execution_id)
    await expect(page.locator('.tl-row[data-step="nap"]')).to_have_attribute(
        "data-status", "running")
    await page.get_by_role("button", name="Cancel").click()
    await expect(status_of(page)).to_have_text(re.compile("cancelled"))
    row = page.locator('.tl-row[data-step="nap"]')
    await expect(row).to_have_attribute("data-status", "failed")
    await expect(row.locator(".step-error")).to_contain_text("cancelled")
    await expect(page.get_by_role("button", name="Cancel")).to_have_count(0)


async def test_retries_show_on_the_timeline(page: Page, dashboard: Dashboard) -> None:
    """A step that failed once and was retried shows its attempt and the failure."""
    execution_id = await dashboard.submit("flaky", input={"fail_times": 1})
    await open_execution(page, execution_id)
    row = page.locator('.tl-row[data-step="wobble"]')
    await expect(row).to_have_attribute("data-status", "completed")
    await expect(row.locator(".attempts")).to_have_text(", attempt 2")
    await expect(row.locator(".retries li")).to_have_text(
        "attempt 1 failed: RuntimeError: attempt 1 failed; retried")


async def test_a_dropped_websocket_resumes_without_gap_or_duplicate(
        page: Page, dashboard: Dashboard) -> None:
    """The socket drops while the step runs; what is committed meanwhile comes with the
    resumed follow (`after=`): every event shown once, in order."""
    execution_id = await dashboard.submit("waiter", input={"name": "drop"})
    await open_execution(page, execution_id)
    await expect(page.locator('.tl-row[data-step="recorded"]')).to_have_attribute(
        "data-status", "running")
    assert await page.evaluate("workflowd.dropConnections()") == 1
    workflows.release("drop").set()  # the rest of the run is committed while it reconnects
    await expect(status_of(page)).to_have_text(re.compile("completed"))
    await expect(page.locator(".connects")).to_have_attribute("data-connects", "2")
    stored = [e["seq"] for e in await dashboard.events(execution_id)]
    await expect(page.locator(".events li")).to_have_count(len(stored))
    shown = [int(s) for s in await page.locator(".events li").evaluate_all(
        "items => items.map(li => li.dataset.seq)")]
    assert shown == stored == list(range(1, len(stored) + 1))


async def test_the_execution_is_read_once_and_logs_from_their_last_line(
        page: Page, dashboard: Dashboard) -> None:
    """Opened on an execution at its gate, the page reads the execution once (the follow's
    replay of the events it holds reads nothing again); after the approval the logs are read
    on from the last line read (`after=` its cursor, never from the start), each shown once."""
    execution_id = await dashboard.submit("audit-plan", input={})
    base = f"{API}/executions/{execution_id}"
    async with asyncio.timeout(15):
        status = await dashboard.call("GET", f"{base}/status/live", expect=200)
        while status["status"] != "awaiting_approval":
            newer = await dashboard.call("GET", f"{base}/status/live?since={status['seq']}&wait=5")
            status = newer or status  # a 304 has no body
    reads = gets(page, dashboard)
    await open_execution(page, execution_id)
    await expect(page.locator("#conn")).to_have_text("Live")
    stored = [e["seq"] for e in await dashboard.events(execution_id)]
    await expect(page.locator(".events li").last).to_have_attribute("data-seq", str(stored[-1]))
    await expect(page.locator(".logs li")).to_have_count(1)
    await expect(page.locator(".logs li")).to_contain_text("plan drafted")
    await expect(page.locator(".approval .prompt")).to_have_text("Approve the audit plan?")
    assert reads.count(base) == 1, reads

    reads.clear()
    await page.get_by_role("button", name="Approve").click()
    await expect(status_of(page)).to_have_text(re.compile("completed"))
    log_reads = [url for url in reads if url.startswith(f"{base}/logs?")]
    assert log_reads
    assert all(parse_qs(urlsplit(url).query)["after"] != ["0"] for url in log_reads), log_reads
    await expect(page.locator(".logs li")).to_have_count(1)


async def test_the_list_updates_while_executions_run(page: Page, dashboard: Dashboard) -> None:
    """New executions appear at the top and their status changes in place, without a reload;
    the counts follow."""
    await page.goto("/ui/")
    await expect(page.locator("#conn")).to_have_text("Live")
    await expect(page.locator(".empty")).to_be_visible()
    first = await dashboard.submit("waiter", input={"name": "list-1"})
    row = page.locator(f'tr[data-id="{first}"]')
    await expect(row).to_have_attribute("data-status", "running")
    second = await dashboard.submit("audit-plan", input={})
    await expect(page.locator("tbody tr").first).to_have_attribute("data-id", second)
    await expect(page.locator(f'tr[data-id="{second}"]')).to_have_attribute(
        "data-status", "awaiting_approval")
    workflows.release("list-1").set()
    await expect(row).to_have_attribute("data-status", "completed")
    await expect(row.get_by_role("progressbar")).to_have_attribute("aria-valuenow", "100")
    await expect(page.locator('.counts [data-status="completed"] .count')).to_have_text("1")
    await expect(page.locator('.counts [data-status="awaiting_approval"] .count')).to_have_text("1")
    # Still the same page: no reload happened.
    assert await page.evaluate("performance.getEntriesByType('navigation').length") == 1


async def test_a_burst_of_new_executions_all_appear(page: Page, dashboard: Dashboard) -> None:
    """Many executions at once (read as one page, not one request each) all show, newest
    first, each with its final status."""
    await page.goto("/ui/")
    await expect(page.locator("#conn")).to_have_text("Live")
    await expect(page.locator(".empty")).to_be_visible()
    ids = [await dashboard.submit("three-steps", input={}) for _ in range(15)]
    await expect(page.locator("tbody tr")).to_have_count(15)
    await expect(page.locator('tbody tr[data-status="completed"]')).to_have_count(15)
    shown = await page.locator("tbody tr").evaluate_all("rows => rows.map(r => r.dataset.id)")
    assert shown == ids[::-1]


async def test_filters_are_kept_in_the_url(page: Page, dashboard: Dashboard) -> None:
    """Filters by workflow, status and label show in the URL, so the view can be shared."""
    audit = await dashboard.submit("audit-plan", input={}, labels={"team": "audit"})
    other = await dashboard.submit("three-steps", input={}, labels={"team": "ops"})
    await page.goto("/ui/?label=team:audit")
    await expect(page.locator(f'tr[data-id="{audit}"]')).to_be_visible()
    await expect(page.locator(f'tr[data-id="{other}"]')).to_have_count(0)

    await page.goto("/ui/")
    await expect(page.locator("tbody tr")).to_have_count(2)
    await page.get_by_label("Filter by workflow").select_option("three-steps")
    await page.wait_for_url(re.compile(r"workflow_id=three-steps"))
    await expect(page.locator("tbody tr")).to_have_count(1)
    await expect(page.locator(f'tr[data-id="{other}"]')).to_be_visible()
    await page.get_by_label("Filter by status").select_option("completed")
    await page.wait_for_url(re.compile(r"workflow_id=three-steps&status=completed"))
    await expect(page.locator(f'tr[data-id="{other}"]')).to_have_attribute(
        "data-status", "completed")
    # Shared: a new tab opened on that URL shows the same view.
    shared = await page.context.new_page()
    await shared.goto(page.url)
    await expect(shared.get_by_label("Filter by status")).to_have_value("completed")
    await expect(shared.locator("tbody tr")).to_have_count(1)
    await shared.close()
    await page.go_back()
    await expect(page.get_by_label("Filter by status")).to_have_value("")


async def test_a_status_filter_reads_an_execution_once_it_enters_that_status(
        page: Page, dashboard: Dashboard) -> None:
    """Filtered on `completed`, the list reads an execution it does not show when it completes,
    not at each change of status on the way (queued, running)."""
    reads = gets(page, dashboard)
    await page.goto("/ui/?status=completed")
    await expect(page.locator("#conn")).to_have_text("Live")
    await expect(page.locator(".empty")).to_be_visible()
    held = await dashboard.submit("waiter", input={"name": "filtered"})
    quick = await dashboard.submit("three-steps", input={})  # its events come after held's
    await expect(page.locator(f'tr[data-id="{quick}"]')).to_be_visible()
    assert reads.count(f"{API}/executions/{held}") == 0
    workflows.release("filtered").set()
    await expect(page.locator(f'tr[data-id="{held}"]')).to_have_attribute(
        "data-status", "completed")
    assert reads.count(f"{API}/executions/{held}") == 1
    await expect(page.locator("tbody tr")).to_have_count(2)


async def test_start_checks_the_json_and_shows_problems(page: Page, dashboard: Dashboard) -> None:
    """Input that is not a JSON object is refused before sending; a problem answer is shown
    as its title and detail."""
    await page.goto("/ui/")
    field = page.get_by_label("Input", exact=True)
    await field.fill('{"areas": [')
    await page.get_by_role("button", name="Start", exact=True).click()
    await expect(page.locator("#start-input-error")).to_contain_text("not valid JSON")
    await expect(field).to_have_attribute("aria-invalid", "true")
    await field.fill("[1, 2]")
    await page.get_by_role("button", name="Start", exact=True).click()
    await expect(page.locator("#start-input-error")).to_contain_text("JSON object")
    listed = await dashboard.call("GET", f"{API}/executions", expect=200)
    assert listed["items"] == []  # nothing was sent

    await field.fill("{}")
    await page.get_by_label("Labels").fill("bad!key:x")
    await page.get_by_role("button", name="Start", exact=True).click()
    answer = await dashboard.call("POST", f"{API}/workflows/audit-plan/executions", expect=422,
                                  json={"input": {}, "labels": {"bad!key": "x"}})
    problem = page.locator(".start .problem")
    await expect(problem.locator(".problem-title")).to_have_text(answer["title"])
    await expect(problem.locator(".problem-detail")).to_have_text(" " + answer["detail"])
    await expect(field).not_to_have_attribute("aria-invalid", "true")


async def test_workflows_with_their_steps_in_order(page: Page) -> None:
    """The workflows page lists each workflow's steps in order, kind and agent, gates marked."""
    await page.goto("/ui/")
    await page.get_by_role("link", name="Workflows").click()
    await page.wait_for_url("**/ui/workflows")
    audit = page.locator('[data-workflow="audit-plan"]')
    await expect(audit.get_by_role("heading")).to_have_text("Audit plan")
    await expect(audit.locator("li")).to_have_count(6)
    names = await audit.locator("li").evaluate_all("items => items.map(li => li.dataset.step)")
    assert names == ["draft_plan", "approve_plan", "route", "quick_check", "deep_dive", "report"]
    await expect(audit.locator('li[data-step="approve_plan"] .gate-tag')).to_have_text("Gate")
    await expect(audit.locator('li[data-step="draft_plan"]')).to_contain_text("agent PlannerAgent")
    await expect(audit.locator('li[data-step="report"]')).to_contain_text("tool ReportWriter")
    await expect(audit.locator(".gate-tag")).to_have_count(1)
    # From here, straight to a start of it.
    await audit.get_by_role("link", name="Start Audit plan").click()
    await expect(page.get_by_label("Workflow", exact=True)).to_have_value("audit-plan")


async def test_usable_at_a_phones_width(pages: Pages, dashboard: Dashboard) -> None:
    """At 390 px wide nothing scrolls sideways, and an execution can still be approved."""
    execution_id = await dashboard.submit("audit-plan", input={})
    page = await pages.open(dashboard.url, width=390, height=844)
    await page.goto("/ui/")
    await expect(page.locator(f'tr[data-id="{execution_id}"]')).to_be_visible()
    assert await page.evaluate("document.documentElement.scrollWidth <= innerWidth")
    await page.locator(f'tr[data-id="{execution_id}"] a').click()
    approve = page.get_by_role("button", name="Approve")
    await expect(approve).to_be_visible()
    assert await page.evaluate("document.documentElement.scrollWidth <= innerWidth")
    await approve.click()
    await expect(status_of(page)).to_have_text(re.compile("completed"))


async def test_with_auth_off_no_token_is_asked(page: Page, dashboard: Dashboard) -> None:
    """With auth off the page never asks for a token and offers every action."""
    execution_id = await dashboard.submit("audit-plan", input={})
    await open_execution(page, execution_id)
    await expect(page.get_by_role("button", name="Approve")).to_be_visible()
    await expect(page.get_by_role("button", name="Cancel")).to_be_visible()
    await expect(page.get_by_role("dialog")).to_have_count(0)
    await expect(page.locator("#who")).to_be_hidden()
    assert await page.evaluate("sessionStorage.getItem('workflowd.token')") is None


async def test_old_demo_address_leads_to_the_dashboard(page: Page) -> None:
    """`/demo` and `/ui` lead to `/ui/`."""
    for path in ("/demo", "/ui"):
        await page.goto(path)
        await page.wait_for_url("**/ui/")
        await expect(page.get_by_role("heading", name="Executions", level=1)).to_be_visible()
