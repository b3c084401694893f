"""The checks of `python -m bench chaos`, as plain functions of what was read back at the end
(the API's answers, the side file, the SQLite file) and of what the driver saw during the run.

No I/O but reading the side file and the store; `tests/test_bench_chaos.py` pins the re-run
check on made-up histories.
"""

from __future__ import annotations

import sqlite3
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.workflows import CHAOS_WORKFLOWS, RUN_DECISION, RUNS_KEY
from workflowd.records import TERMINAL, TERMINAL_EVENTS

__all__ = [
    "Finding",
    "Observed",
    "SideLine",
    "StoreView",
    "check_history",
    "check_observed",
    "check_tokens",
    "committed_tokens",
    "find_reruns",
    "read_side",
    "read_store",
    "signature",
]

@dataclass(frozen=True, slots=True)
class Finding:
    """One thing wrong with one execution; `cycle` is set for a re-run."""

    execution_id: str
    kind: str
    detail: str
    cycle: int | None = None


@dataclass(frozen=True, slots=True)
class SideLine:
    """One run of a step's code, as the step wrote it before returning (`pos`: line number)."""

    pos: int
    execution_id: str
    cycle: int
    token: str
    step: str
    attempt: int


@dataclass(slots=True)
class Observed:
    """What the driver saw of one execution while the service was being killed."""

    events: dict[int, str] = field(default_factory=dict)  # seq -> signature
    approves_acked: int = 0  # approves answered 2xx
    completes_acked: set[str] = field(default_factory=set)  # step-run tokens answered 2xx
    outputs_sent: list[Any] = field(default_factory=list)  # what the worker sent, any answer
    notes: list[str] = field(default_factory=list)  # e.g. a replay answered differently


def signature(event: Mapping[str, Any]) -> str:
    """What must not change about an event once a client has seen it."""
    parts = [str(event.get("type")), str(event.get("step", "")), str(event.get("cycle", ""))]
    if event.get("type") == "branch_decided":
        parts.append(str(event.get("outcome")))
    return "/".join(parts)


def read_side(path: Path) -> tuple[list[SideLine], list[str]]:
    """The side file's lines in file order, and the ones that do not parse."""
    lines: list[SideLine] = []
    bad: list[str] = []
    if not path.exists():
        return lines, bad
    for pos, text in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        parts = text.split()
        try:
            lines.append(SideLine(pos, parts[0], int(parts[1]), parts[2], parts[3],
                                  int(parts[4])))
        except (IndexError, ValueError):
            bad.append(f"line {pos}: {text[:120]!r}")
    return lines, bad


def committed_tokens(events: Iterable[Mapping[str, Any]],
                     state: Mapping[str, Any] | None) -> dict[int, set[str]]:
    """Run tokens the store holds as committed, by cycle: every `branch_decided` event of the
    run decision (events are only appended, so a commit whose state a later commit replaced
    still shows) and the final state's record of them."""
    out: dict[int, set[str]] = defaultdict(set)
    for event in events:
        if event.get("type") == "branch_decided" and event.get("name") == RUN_DECISION:
            out[int(event["cycle"])].add(str(event.get("outcome")))
    runs = (state or {}).get(RUNS_KEY)
    if isinstance(runs, dict):
        for cycle, token in runs.items():
            out[int(cycle)].add(str(token))
    return dict(out)


def find_reruns(lines: Sequence[SideLine],
                committed: Mapping[str, Mapping[int, set[str]]]) -> list[Finding]:
    """Cycles whose step code ran again after the cycle had been committed.

    The side file is a total order of step runs across every process of the run (each line is
    appended and fsynced before its step returns, and a killed process has exited before the
    next one starts). A cycle commits only after its step returned, so the run that committed
    wrote its line before the commit. Three rules, each sound under that order:

    A. A line for (execution, cycle) after the first line carrying one of that cycle's
       committed tokens: the cycle ran again after a committed run of it. Runs cut off before
       their commit come before the committed run's line, so the allowed re-runs (and the
       retry step's failed first attempt) never match; a cycle committed twice (two of its
       tokens committed) always does, whichever of the two the final state kept.
    B. A line for a cycle lower than one already written for that execution: the later cycle
       starts only after every earlier one committed, so that earlier cycle ran again after
       its commit, even when its re-run then replaced what had been committed.
    C. A step's code under two cycle numbers (no workflow of the mix loops): it ran again in
       a later cycle, after the cycle it first ran in had committed as something.
    A re-run counts once per (execution, cycle), with the first rule that found it.
    """
    by_execution: dict[str, list[SideLine]] = defaultdict(list)
    for line in lines:
        by_execution[line.execution_id].append(line)
    found: list[Finding] = []
    for execution_id, mine in by_execution.items():
        flagged: dict[int, str] = {}
        for cycle, tokens in sorted(committed.get(execution_id, {}).items()):
            first = next((ln for ln in mine if ln.cycle == cycle and ln.token in tokens), None)
            if first is None:
                continue  # no line carries it: check_tokens reports that
            again = [ln for ln in mine if ln.cycle == cycle and ln.pos > first.pos]
            if again:
                flagged.setdefault(cycle, (
                    f"cycle {cycle} ({first.step}) ran {len(again)} more time(s) after its "
                    f"committed run {first.token} (side lines {first.pos} then "
                    f"{', '.join(str(ln.pos) for ln in again[:5])})"))
        highest: SideLine | None = None
        first_cycle: dict[str, SideLine] = {}
        for ln in mine:
            if highest is not None and ln.cycle < highest.cycle:
                flagged.setdefault(ln.cycle, (
                    f"cycle {ln.cycle} ({ln.step}) ran at side line {ln.pos}, after cycle "
                    f"{highest.cycle} had started (line {highest.pos})"))
            if highest is None or ln.cycle > highest.cycle:
                highest = ln
            earlier = first_cycle.setdefault(ln.step, ln)
            if ln.cycle != earlier.cycle:
                flagged.setdefault(ln.cycle, (
                    f"step {ln.step} ran in cycle {ln.cycle} (line {ln.pos}) after running in "
                    f"cycle {earlier.cycle} (line {earlier.pos})"))
        found.extend(Finding(execution_id, "re-run", why, cycle)
                     for cycle, why in sorted(flagged.items()))
    return found


def check_tokens(execution_id: str, lines: Sequence[SideLine],
                 committed: Mapping[int, set[str]], code_cycles: Mapping[int, str],
                 ) -> list[Finding]:
    """Every committed token was written by a run of that cycle, and every committed cycle
    that ran code has one: otherwise the re-run check would have nothing to stand on."""
    by_token = {ln.token: ln for ln in lines}
    found: list[Finding] = []
    for cycle, tokens in sorted(committed.items()):
        for token in sorted(tokens):
            line = by_token.get(token)
            if line is None:
                found.append(Finding(execution_id, "token", (
                    f"committed run token {token} of cycle {cycle} is on no side line")))
            elif line.cycle != cycle:
                found.append(Finding(execution_id, "token", (
                    f"committed run token {token} of cycle {cycle} was written by a run of "
                    f"cycle {line.cycle}")))
    for cycle, step in sorted(code_cycles.items()):
        if cycle not in committed:
            found.append(Finding(execution_id, "token", (
                f"cycle {cycle} ({step}) is committed without the token of its run")))
    return found


def _seq_problem(events: Sequence[Mapping[str, Any]]) -> str | None:
    for n, event in enumerate(events, start=1):
        if event.get("seq") != n:
            around = [e.get("seq") for e in events[max(0, n - 3):n + 2]]
            return f"seq not 1..{len(events)}: position {n} holds {event.get('seq')} ({around})"
    return None


def check_history(execution_id: str, execution: Mapping[str, Any],
                  events: Sequence[Mapping[str, Any]], steps: Sequence[Mapping[str, Any]],
                  ) -> list[Finding]:
    """Events gap-free with one terminal event, last; `completed`; the step records' cycles
    those of the `cycle_completed` events, in the workflow's order."""
    found: list[Finding] = []

    def bad(kind: str, detail: str) -> None:
        found.append(Finding(execution_id, kind, detail))

    if (problem := _seq_problem(events)) is not None:
        bad("events", problem)
    status = str(execution.get("status"))
    terminal = [e for e in events if e.get("type") in TERMINAL_EVENTS]
    if status in TERMINAL:
        if len(terminal) != 1:
            bad("events", f"{len(terminal)} terminal events: "
                          f"{[(e.get('seq'), e.get('type')) for e in terminal]}")
        if terminal and events[-1] is not terminal[-1]:
            bad("events", f"terminal {terminal[-1].get('type')} at seq "
                          f"{terminal[-1].get('seq')} is followed by {events[-1].get('type')} "
                          f"at seq {events[-1].get('seq')}")
        if terminal and str(terminal[-1]["type"]) != f"workflow_{status}":
            bad("events", f"status {status} but terminal event {terminal[-1].get('type')}")
        if status != "completed":
            bad("status", f"ended {status}: {execution.get('error')}")
    elif terminal:
        bad("events", f"status {status} after {terminal[0].get('type')} at seq "
                      f"{terminal[0].get('seq')}")
    plan = CHAOS_WORKFLOWS.get(str(execution.get("workflow_id")), ())
    found.extend(_check_cycles(execution_id, execution, events, steps, plan))
    return found


def _check_cycles(execution_id: str, execution: Mapping[str, Any],
                  events: Sequence[Mapping[str, Any]], steps: Sequence[Mapping[str, Any]],
                  plan: Sequence[tuple[str, bool]]) -> list[Finding]:
    found: list[Finding] = []
    cycles = [int(e["cycle"]) for e in events if e.get("type") == "cycle_completed"]
    if cycles != list(range(1, len(cycles) + 1)):
        found.append(Finding(execution_id, "cycles", f"cycle_completed cycles {cycles}"))
    records = [s for s in steps if s.get("cycle") is not None]
    record_cycles = [int(s["cycle"]) for s in records]
    ended = {int(s["cycle"]) for s in records if s.get("status") in ("completed", "failed")}
    if sorted(ended) != sorted(set(cycles)):
        found.append(Finding(execution_id, "cycles", (
            f"step records ended in cycles {sorted(ended)}, cycle_completed for {cycles}")))
    if len(set(record_cycles)) != len(record_cycles):
        found.append(Finding(execution_id, "cycles", f"step record cycles {record_cycles}"))
    if execution.get("status") == "completed":
        names = [str(s.get("name")) for s in records]
        if names != [name for name, _ in plan] or cycles != list(range(1, len(plan) + 1)):
            found.append(Finding(execution_id, "cycles", (
                f"completed with step records {list(zip(record_cycles, names, strict=True))}"
                f" and cycles {cycles}; the workflow has {[name for name, _ in plan]}")))
        not_done = [(s.get("cycle"), s.get("name"), s.get("status")) for s in records
                    if s.get("status") != "completed"]
        if not_done:
            found.append(Finding(execution_id, "cycles", f"records not completed: {not_done}"))
        if execution.get("cycle") != len(plan):
            found.append(Finding(execution_id, "cycles", (
                f"execution cycle {execution.get('cycle')}, the workflow has {len(plan)} steps")))
    finished = {int(e["cycle"]): str(e.get("step")) for e in events
                if e.get("type") == "step_finished"}
    for record in records:
        cycle = int(record["cycle"])
        if cycle in finished and finished[cycle] != record.get("name"):
            found.append(Finding(execution_id, "cycles", (
                f"cycle {cycle}: record {record.get('name')}, step_finished {finished[cycle]}")))
    return found


def check_observed(execution_id: str, workflow_id: str, execution: Mapping[str, Any],
                   events: Sequence[Mapping[str, Any]], seen: Observed) -> list[Finding]:
    """What a client was answered or shown must still hold at the end."""
    found = [Finding(execution_id, "driver", note) for note in seen.notes]
    by_seq = {int(e["seq"]): e for e in events if isinstance(e.get("seq"), int)}
    changed = [(seq, sig, signature(by_seq[seq]) if seq in by_seq else "missing")
               for seq, sig in sorted(seen.events.items())
               if seq not in by_seq or signature(by_seq[seq]) != sig]
    if changed:
        found.append(Finding(execution_id, "seen", (
            f"{len(changed)} event(s) seen during the run differ now, first: seq "
            f"{changed[0][0]} was {changed[0][1]}, now {changed[0][2]}")))
    types = Counter(str(e.get("type")) for e in events)
    if workflow_id == "chaos-gated":
        if seen.approves_acked > 1:
            found.append(Finding(execution_id, "approval", (
                f"approve answered 2xx {seen.approves_acked} times: an acknowledged approve "
                "did not hold")))
        if execution.get("status") == "completed" and (
                types["approval_required"] != 1 or types["approval_granted"] != 1):
            found.append(Finding(execution_id, "approval", (
                f"{types['approval_required']} approval_required, "
                f"{types['approval_granted']} approval_granted")))
    if workflow_id == "chaos-external":
        if len(seen.completes_acked) > 1:
            found.append(Finding(execution_id, "external", (
                f"complete answered 2xx for {len(seen.completes_acked)} runs of the step: an "
                "acknowledged complete did not hold")))
        work = (execution.get("state") or {}).get("ce_work")
        if execution.get("status") == "completed" and work not in seen.outputs_sent:
            found.append(Finding(execution_id, "external", (
                f"state ce_work {work!r} is no output the worker sent")))
    if workflow_id == "chaos-retry" and execution.get("status") == "completed":
        flaky = [e for e in events if e.get("type") == "step_retrying"]
        if not flaky:
            found.append(Finding(execution_id, "retry", "no step_retrying event"))
    return found


@dataclass(frozen=True, slots=True)
class StoreView:
    """Read straight from the SQLite file, read-only, after the service stopped."""

    ids: frozenset[str]
    keys: Counter[str]  # the driver's key (in the input) -> executions made for it
    events: Mapping[str, int]  # execution id -> rows in the events table


def read_store(db: Path) -> StoreView:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT id, json_extract(doc, '$.input.key') FROM executions").fetchall()
        counts = dict(conn.execute(
            "SELECT execution_id, COUNT(*) FROM events GROUP BY execution_id").fetchall())
    finally:
        conn.close()
    keys: Counter[str] = Counter(str(key) for _, key in rows if key is not None)
    return StoreView(ids=frozenset(str(i) for i, _ in rows), keys=keys,
                     events={str(k): int(v) for k, v in counts.items()})

