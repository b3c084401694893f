"""The client commands: each is a coroutine on a `Client` that prints for people (rich) or,
with `--json`, the API's own body, and answers the exit code (API.md §6)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel
from rich.console import Console
from rich.live import Live
from rich.text import Text

from workflowd.answers import Event, Execution, LiveStatus, LogLine, Page, WorkflowInfo
from workflowd.cli import render
from workflowd.client import ApiError, Client, Snapshot, Unreachable

__all__ = ["COMMANDS", "DONE", "ENDED_OTHERWISE", "UNREACHABLE", "USAGE", "run_client"]

DONE, ENDED_OTHERWISE, USAGE, UNREACHABLE = 0, 1, 2, 3
Command = Callable[[Client, argparse.Namespace, "Out"], Awaitable[int]]


class Out:
    """Where a command writes: rich for people, plain JSON documents for `--json`."""

    def __init__(self, as_json: bool) -> None:
        self.json = as_json
        # Piped: lines as long as they are, for grep and awk (a terminal wraps at its width).
        width = None if sys.stdout.isatty() else int(os.environ.get("COLUMNS") or 200)
        self.console = Console(width=width)
        self.errors = Console(stderr=True, soft_wrap=True)

    def document(self, value: BaseModel | dict[str, Any] | list[Any]) -> None:
        """One JSON document (the API's body) on its own line of stdout."""
        text = value.model_dump_json() if isinstance(value, BaseModel) else json.dumps(value)
        sys.stdout.write(text + "\n")
        sys.stdout.flush()

    def show(self, value: BaseModel, renderable: Any) -> None:
        if self.json:
            self.document(value)
        else:
            self.console.print(renderable)


def run_client(command: Command, args: argparse.Namespace) -> int:
    """Run one client command; problems and unreachable servers become exit codes."""
    out = Out(args.json)
    try:
        client = Client(args.url, token=args.token or None)
    except ValueError as exc:  # the client refused --url
        out.errors.print(f"workflowd: --url: {exc}", markup=False, highlight=False)
        return USAGE

    async def main() -> int:
        async with client:
            return await command(client, args, out)

    try:
        return asyncio.run(main())
    except ApiError as exc:
        if out.json and exc.problem is not None:
            out.document(exc.problem)
        out.errors.print(f"workflowd: {exc.detail}", markup=False, highlight=False)
        return USAGE if exc.status < 500 else UNREACHABLE
    except Unreachable as exc:
        out.errors.print(f"workflowd: {exc}", markup=False, highlight=False)
        return UNREACHABLE
    except KeyboardInterrupt:
        return 130


# ---- the commands ---------------------------------------------------------------------------


async def workflows(client: Client, args: argparse.Namespace, out: Out) -> int:
    items = await client.workflows()
    out.show(Page[WorkflowInfo](items=items, next_cursor=None), render.workflows_table(items))
    return DONE


async def start(client: Client, args: argparse.Namespace, out: Out) -> int:
    summary = await client.start(args.workflow, args.input, priority=args.priority,
                                 require_approval=args.require_approval,
                                 labels=dict(args.label or []),
                                 idempotency_key=args.idempotency_key)
    if args.follow:
        if not out.json:
            out.console.print(f"started {summary.execution_id} ({summary.workflow_id})",
                              highlight=False)
        return await _follow(client, summary.execution_id, 0, out)
    if args.wait:
        try:
            status = await client.wait(summary.execution_id, args.timeout)
        except TimeoutError:
            # Not completed (1), as for one that ended otherwise; it runs on in the service.
            live = await client.status(summary.execution_id)
            out.errors.print(f"workflowd: {summary.execution_id} is still {live.status} after "
                             f"{args.timeout:g} s (it goes on running)", markup=False,
                             highlight=False)
            return ENDED_OTHERWISE
        return await _ended(client, status, out)
    out.show(summary, Text.assemble(
        summary.execution_id, " ", summary.workflow_id, " ", render.status_text(summary.status)))
    return DONE


async def status(client: Client, args: argparse.Namespace, out: Out) -> int:
    live = await client.status(args.id)
    out.show(live, render.status_card(live))
    return DONE


async def list_executions(client: Client, args: argparse.Namespace, out: Out) -> int:
    page = await client.list_executions(
        workflow_id=args.workflow, status=args.status, labels=dict(args.label or []),
        limit=args.limit, cursor=args.cursor)
    out.show(page, render.executions_table(page.items))
    if not out.json and page.next_cursor:
        out.console.print(f"more: workflowd list --cursor {page.next_cursor}", style="dim",
                          highlight=False)
    return DONE


async def approve(client: Client, args: argparse.Namespace, out: Out) -> int:
    answer = await client.approve(args.id, args.comment)
    out.show(answer, Text.assemble(args.id, " approved: ",
                                          render.status_text(answer.status)))
    return DONE


async def reject(client: Client, args: argparse.Namespace, out: Out) -> int:
    answer = await client.reject(args.id, args.reason)
    out.show(answer, Text.assemble(args.id, " ", render.status_text(answer.status)))
    return DONE


async def cancel(client: Client, args: argparse.Namespace, out: Out) -> int:
    answer = await client.cancel(args.id)
    out.show(answer, Text.assemble(args.id, " cancel requested: ",
                                          render.status_text(answer.status)))
    return DONE


async def events(client: Client, args: argparse.Namespace, out: Out) -> int:
    if args.limit is not None:
        page = await client.events(args.id, args.after, args.limit)
    else:
        page = Page[Event](items=await client.all_events(args.id, args.after), next_cursor=None)
    out.show(page, render.events_table(page.items))
    return DONE


async def logs(client: Client, args: argparse.Namespace, out: Out) -> int:
    if args.limit is not None:
        page = await client.logs(args.id, args.after, args.limit)
    else:
        page = Page[LogLine](items=await client.all_logs(args.id, args.after), next_cursor=None)
    out.show(page, render.log_lines(page.items))
    return DONE


async def follow(client: Client, args: argparse.Namespace, out: Out) -> int:
    return await _follow(client, args.id, args.after, out)


async def _follow(client: Client, execution_id: str, after: int, out: Out) -> int:
    """Follow to the terminal event: a live view for people, the events as JSON lines for
    `--json`; answer 0 if it completed, else 1."""
    if out.json:
        async for event in client.follow(execution_id, after):
            out.document(event)
        return await _ended(client, await client.status(execution_id), out, quiet=True)
    view = render.FollowView(execution_id)
    poller: asyncio.Task[None] | None = None
    with Live(view, console=out.console, refresh_per_second=8, transient=False,
              redirect_stdout=False, redirect_stderr=False) as live:
        try:
            async for item in client.follow(execution_id, after, snapshots=True):
                if isinstance(item, Snapshot):
                    if view.status is None:
                        # The steps once; the events after this snapshot keep them up to date
                        # (a reconnection replays those it missed, so it needs no new list).
                        view.load_steps(await client.steps(execution_id), item.seq)
                        poller = asyncio.create_task(_keep_status(client, view, live),
                                                     name=f"follow-status:{execution_id}")
                    else:
                        view.reconnections += 1
                    view.show(item.status)
                else:
                    if not view.saw(item):
                        view.load_steps(await client.steps(execution_id), item.seq)
                    if item.is_terminal:
                        view.show(await client.status(execution_id))
                live.update(view, refresh=True)
        finally:
            if poller is not None:
                poller.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await poller
    if not out.console.is_terminal:
        out.console.line()  # rich ends the last frame with a newline on terminals only
    final = view.status or await client.status(execution_id)
    return await _ended(client, final, out)


async def _keep_status(client: Client, view: render.FollowView, live: Live) -> None:
    """Keep the view's live status current: long-polled, so each answer is the newest
    committed (one request for a burst of events, and none while nothing happens), and at most
    ten a second. A restart or a failing server is waited out, as the follow waits it out."""
    while True:
        shown = view.status
        assert shown is not None
        try:
            newer = await client.poll(view.execution_id, shown.seq, 30.0)
        except (Unreachable, ApiError) as exc:
            if isinstance(exc, ApiError) and exc.status < 500:
                raise
            await asyncio.sleep(1.0)
            continue
        if newer is not None:
            view.show(newer)
            live.update(view, refresh=True)
        await asyncio.sleep(0.1)


async def _ended(client: Client, final: LiveStatus, out: Out, *, quiet: bool = False) -> int:
    """Say how the execution ended; 0 for completed, 1 for any other end."""
    if not final.is_terminal:  # pragma: no cover - follow and wait return at the end only
        final = await client.wait(final.execution_id)
    code = DONE if final.status == "completed" else ENDED_OTHERWISE
    if quiet:
        return code
    if out.json:
        out.document(await client.get(final.execution_id))
        return code
    execution: Execution = await client.get(final.execution_id)
    line = Text.assemble(final.execution_id, " ", render.status_text(final.status))
    if execution.error is not None:
        line.append(f": {execution.error.code}: {execution.error.message}")
    out.console.print(line)
    return code


COMMANDS: dict[str, Command] = {
    "workflows": workflows, "start": start, "status": status, "list": list_executions,
    "approve": approve, "reject": reject, "cancel": cancel, "events": events, "logs": logs,
    "follow": follow,
}
