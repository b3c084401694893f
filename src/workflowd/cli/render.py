"""What the client commands show people: tables, a status card, and the live view of a
followed execution (rich draws them; `--json` bypasses all of this)."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Group, RenderableType
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from workflowd.answers import (
    Event,
    ExecutionItem,
    LiveStatus,
    LogLine,
    StepRecord,
    WorkflowInfo,
)

__all__ = [
    "FollowView",
    "events_table",
    "executions_table",
    "log_lines",
    "status_card",
    "status_text",
    "when",
    "workflows_table",
]

STATUS_STYLE = {
    "queued": "cyan", "running": "blue", "awaiting_approval": "yellow", "paused": "yellow",
    "completed": "green", "failed": "red", "cancelled": "magenta", "timed_out": "red",
    "rejected": "red",
}
STEP_MARK = {
    "pending": ("·", "dim"), "running": ("▶", "blue"), "waiting": ("⏸", "yellow"),
    "completed": ("✓", "green"), "failed": ("✗", "red"), "skipped": ("-", "dim"),
}


def status_text(status: str) -> Text:
    return Text(status, style=STATUS_STYLE.get(status, ""))


def when(ts: str | None) -> str:
    """A written timestamp for people: `2026-02-09 14:10:00.100` (UTC)."""
    return "" if ts is None else ts.replace("T", " ").removesuffix("Z")


def _table(*columns: str) -> Table:
    """A borderless table whose ids and times never wrap."""
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in columns:
        keep = column in ("ID", "CREATED (UTC)", "UPDATED (UTC)", "TIME (UTC)", "SEQ")
        table.add_column(column, no_wrap=keep, overflow="fold")
    return table


def workflows_table(items: Sequence[WorkflowInfo]) -> Table:
    table = _table("ID", "TITLE", "VERSION", "STEPS")
    for wf in items:
        table.add_row(wf.id, wf.title, str(wf.version),
                      ", ".join(step.name for step in wf.steps))
    return table


def executions_table(items: Sequence[ExecutionItem]) -> Table:
    table = _table("ID", "WORKFLOW", "STATUS", "CREATED (UTC)", "LABELS")
    for item in items:
        labels = ",".join(f"{k}={v}" for k, v in item.labels.items())
        table.add_row(item.execution_id, item.workflow_id, status_text(item.status),
                      when(item.created_at), labels)
    return table


def status_card(status: LiveStatus) -> RenderableType:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    table.add_row("execution", status.execution_id)
    table.add_row("workflow", status.workflow_id)
    table.add_row("status", status_text(status.status))
    table.add_row("cycle", f"{status.cycle} of at most {status.max_cycles}")
    step = status.current_step
    table.add_row("current step", f"{step.name} ({step.kind}, since {when(step.started_at)})"
                  if step else "-")
    table.add_row("progress", _progress_line(status))
    table.add_row("updated (UTC)", when(status.last_update))
    return table


def _progress_line(status: LiveStatus) -> RenderableType:
    p = status.progress
    line = Table.grid(padding=(0, 1))
    line.add_row(ProgressBar(total=100, completed=p.percentage, width=30),
                 f"{p.percentage:.0f}%", f"{p.completed_steps}/{p.total_steps} steps",
                 p.message or "")
    return line


def events_table(items: Sequence[Event]) -> Table:
    table = _table("SEQ", "TIME (UTC)", "TYPE", "STEP", "DETAIL")
    for event in items:
        table.add_row(str(event.seq), when(event.ts), event.type, str(event.get("step") or ""),
                      _detail(event))
    return table


def _detail(event: Event) -> str:
    extra = dict(event.model_extra or {})
    for name in ("step", "callback", "workflow_id"):
        extra.pop(name, None)
    return " ".join(f"{k}={v}" for k, v in extra.items() if v is not None)


def log_lines(items: Sequence[LogLine]) -> Group:
    lines: list[RenderableType] = []
    for line in items:
        fields = " ".join(f"{k}={v}" for k, v in line.fields.items())
        text = Text.assemble((when(line.ts), "dim"), " ", (f"[{line.step} #{line.cycle}]", "cyan"),
                             " ", line.message, (" " + fields if fields else "", "dim"))
        lines.append(text)
    return Group(*lines)


class FollowView:
    """The live view of one execution: its status, a progress bar, the steps with their
    marks and times, and the last event; redrawn as events come."""

    def __init__(self, execution_id: str) -> None:
        self.execution_id = execution_id
        self.status: LiveStatus | None = None
        self.steps: list[StepRecord] = []
        self.step_progress: dict[str, float] = {}
        self.last: Event | None = None
        self.reconnections = 0

    def saw(self, event: Event) -> None:
        self.last = event
        step = event.get("step")
        if event.type == "step_progress" and isinstance(step, str):
            self.step_progress[step] = float(event.get("percentage") or 0.0)

    def __rich__(self) -> RenderableType:
        status = self.status
        head = Text.assemble(("execution ", "bold"), self.execution_id, "  ")
        if status is not None:
            head.append_text(status_text(status.status))
            head.append(f"  cycle {status.cycle}")
        parts: list[RenderableType] = [head]
        if status is not None:
            parts.append(_progress_line(status))
        parts.append(self._steps())
        if status is not None and status.awaiting_approval:
            parts.append(Text(f"waiting for a decision: workflowd approve {self.execution_id}"
                              f" (or reject)", style="yellow"))
        if self.last is not None:
            parts.append(Text(f"#{self.last.seq} {self.last.type} {_detail(self.last)}".rstrip(),
                              style="dim", no_wrap=True, overflow="ellipsis"))
        if self.reconnections:
            parts.append(Text(f"(connection resumed {self.reconnections}x, no event missed)",
                              style="dim"))
        return Group(*parts)

    def _steps(self) -> Table:
        table = Table.grid(padding=(0, 1))
        for record in self.steps:
            mark, style = STEP_MARK.get(record.status, ("?", ""))
            times = _seconds(record.duration_ms)
            if record.status == "running" and record.name in self.step_progress:
                times = f"{self.step_progress[record.name]:.0f}%"
            who = record.agent_name or record.tool_name or ""
            table.add_row(Text(mark, style=style), Text(record.name, style=style),
                          Text(record.kind, style="dim"), Text(who, style="dim"),
                          Text(times, style="dim"))
        return table


def _seconds(ms: int | None) -> str:
    return "" if ms is None else f"{ms / 1000:.1f}s"
