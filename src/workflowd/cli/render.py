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
        self.steps_seq = 0  # the events up to this seq are in `steps` already
        self.step_progress: dict[str, float] = {}
        self.last: Event | None = None
        self.reconnections = 0

    def show(self, status: LiveStatus) -> None:
        """Show `status` unless the one shown is newer (answers may cross on the way)."""
        if self.status is None or status.seq >= self.status.seq:
            self.status = status

    def load_steps(self, steps: Sequence[StepRecord], seq: int) -> None:
        """The step list as `/steps` answered it, holding every event up to `seq`."""
        self.steps = list(steps)
        self.steps_seq = seq

    def saw(self, event: Event) -> bool:
        """Take in one event: the step list follows its step events (no `/steps` request
        needed). False when it names a step the list does not know (fetch the list again)."""
        self.last = event
        step = event.get("step")
        if event.type == "step_progress" and isinstance(step, str):
            self.step_progress[step] = float(event.get("percentage") or 0.0)
        elif event.type == "step_started" and isinstance(step, str):
            self.step_progress.pop(step, None)  # a step run again (a loop) starts from 0
        if event.seq <= self.steps_seq:
            return True
        self.steps_seq = event.seq
        return _apply(self.steps, event)

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


def _apply(steps: list[StepRecord], event: Event) -> bool:
    """Change `steps` (in the order of `/steps`: records by cycle, then the declared steps not
    run) as `event` does, in the fields the view shows; every change to them comes with a step
    event or the terminal one (API.md §4, §7). A list fetched after the event holds it already:
    applying it again is undone by the events after it, as each sets the fields it names.
    False when the event names a step or cycle the list does not hold."""
    cycle = event.get("cycle")
    at = next((i for i, r in enumerate(steps) if r.cycle is not None and r.cycle == cycle),
              None)
    if event.type == "step_started":
        fields = {"status": event.get("status") or "running", "started_at": event.ts,
                  "completed_at": None, "duration_ms": None}
        if at is not None:
            steps[at] = steps[at].model_copy(update=fields)
            return True
        name = event.get("step")
        like = next((r for r in steps if r.name == name), None)
        if like is None:
            return False
        record = like.model_copy(update={**fields, "cycle": cycle})
        steps[:] = [r for r in steps if r.cycle is not None or r.name != name]
        steps.insert(sum(r.cycle is not None for r in steps), record)
    elif event.type == "step_finished":
        if at is None:
            return False
        steps[at] = steps[at].model_copy(update={
            "status": event.get("status"), "duration_ms": event.get("duration_ms"),
            "completed_at": event.ts})
    elif event.is_terminal:
        steps[:] = [r.model_copy(update={"status": "skipped"}) if r.status == "pending" else r
                    for r in steps]
    return True


def _seconds(ms: int | None) -> str:
    return "" if ms is None else f"{ms / 1000:.1f}s"
