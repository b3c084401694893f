"""`python -m bench chaos`: kill -9 the service again and again while a mix of workflows runs
(`bench.chaos_driver`), then check DESIGN.md's reliability bar (`bench.chaos_check`): none
lost, none run again past a committed cycle, every one terminal, events gap-free. It prints one
line to quote, details for anything non-zero, writes the figures as JSON, and exits 1 on any
loss or violation (2 when the run itself could not finish).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp

from bench import procs
from bench.chaos_check import (
    Finding,
    SideLine,
    check_history,
    check_observed,
    check_tokens,
    committed_tokens,
    find_reruns,
)
from bench.chaos_driver import Chaos, Options, Run
from bench.common import ROOT
from bench.workflows import CHAOS_WORKFLOWS
from workflowd.records import TERMINAL

__all__ = ["judge", "main"]

DEFAULT_OUT = ROOT / "bench" / "results" / "chaos.json"


def judge(chaos: Chaos, run: Run) -> dict[str, Any]:
    """The figures of a run, and every finding, from what it read back."""
    back, lines, store = run.back, run.lines, run.store
    acked = [t for t in chaos.items if t.execution_id is not None]
    lost = [t.execution_id for t in acked
            if back[str(t.execution_id)].execution is None
            or t.execution_id not in store.ids]
    not_terminal = [
        Finding(eid, "not terminal", _where(rb.execution, rb.events))
        for eid, rb in back.items()
        if rb.execution is not None and rb.execution.get("status") not in TERMINAL
        and eid in chaos.by_id]
    committed = {eid: committed_tokens(rb.events, (rb.execution or {}).get("state"))
                 for eid, rb in back.items()}
    reruns = find_reruns(lines, committed)
    violations = _violations(chaos, run, committed)
    violations.extend(Finding("-", "side file", bad) for bad in run.malformed)
    all_committed = {tok for per in committed.values() for toks in per.values()
                     for tok in toks}
    cut_off = [ln for ln in lines if ln.token not in all_committed
               and not (ln.step == "cr_flaky" and ln.attempt == 1)]
    statuses = Counter(str((rb.execution or {}).get("status", "missing"))
                       for eid, rb in back.items() if eid in chaos.by_id)
    return {
        "executions": len(chaos.items), "acknowledged": len(acked), "lost": len(lost),
        "not_terminal": len(not_terminal),
        "rerun_after_commit": len({(f.execution_id, f.cycle) for f in reruns}),
        "violations": len(violations), "kills": chaos.kills_done, "seed": chaos.opts.seed,
        "statuses": dict(statuses), "side_lines": len(lines),
        "runs_cut_off_after_their_line": len(cut_off),
        "orphans": len(store.ids - set(chaos.by_id)),
        "submit_attempts": sum(t.submit_attempts for t in chaos.items),
        "restart_seconds": chaos.restart_seconds, "kill_after_up_seconds":
            [round(d, 3) for d in chaos.delays], "requests": dict(chaos.counts),
        "lost_ids": lost, "not_terminal_list": [_as_dict(f) for f in not_terminal],
        "reruns": [_as_dict(f) for f in reruns],
        "violation_list": [_as_dict(f) for f in violations],
    }


def _violations(chaos: Chaos, run: Run, committed: dict[str, dict[int, set[str]]],
                ) -> list[Finding]:
    back, store = run.back, run.store
    found: list[Finding] = []
    lines_of: dict[str, list[SideLine]] = {}
    for ln in run.lines:
        lines_of.setdefault(ln.execution_id, []).append(ln)
    for eid, rb in back.items():
        if rb.execution is None:
            if eid not in chaos.by_id:
                found.append(Finding(eid, "ran but gone", "has side lines, answers 404"))
            continue
        found.extend(check_history(eid, rb.execution, rb.events, rb.steps))
        plan = CHAOS_WORKFLOWS.get(str(rb.execution.get("workflow_id")), ())
        code = {name for name, runs_code in plan if runs_code}
        code_cycles = {int(s["cycle"]): str(s["name"]) for s in rb.steps
                       if s.get("cycle") is not None and s.get("status") == "completed"
                       and str(s.get("name")) in code}
        found.extend(check_tokens(eid, lines_of.get(eid, []), committed[eid], code_cycles))
        item = chaos.by_id.get(eid)
        if item is not None:
            found.extend(check_observed(eid, item.workflow_id, rb.execution, rb.events,
                                        item.seen))
            if item.missing:
                found.append(Finding(eid, "driver", (
                    f"answered 404 {item.missing} time(s) during the run, after its 2xx")))
        last_seq = rb.events[-1].get("seq") if rb.events else 0
        if rb.live_seq != last_seq:
            found.append(Finding(eid, "live seq", (
                f"live status at seq {rb.live_seq}, the last event at {last_seq}")))
        terminal = rb.execution.get("status") in TERMINAL
        if terminal and store.events.get(eid, 0) != len(rb.events):
            found.append(Finding(eid, "store", (
                f"{len(rb.events)} events over HTTP, {store.events.get(eid, 0)} rows")))
    for key, count in store.keys.items():
        if count > 1:
            found.append(Finding(key, "duplicate", f"{count} executions for one key"))
    found.extend(Finding(t.key, "driver", note) for t in chaos.items
                 if t.execution_id is None for note in t.seen.notes)
    return found


def _where(execution: dict[str, Any] | None, events: list[dict[str, Any]]) -> str:
    execution = execution or {}
    step = (execution.get("current_step") or {}).get("name")
    last = f"{events[-1].get('type')} at seq {events[-1].get('seq')}" if events else "none"
    return (f"{execution.get('workflow_id')} {execution.get('status')}, cycle "
            f"{execution.get('cycle')}, current step {step}, last event {last}")


def _as_dict(finding: Finding) -> dict[str, Any]:
    out: dict[str, Any] = {"id": finding.execution_id, "kind": finding.kind,
                           "detail": finding.detail}
    if finding.cycle is not None:
        out["cycle"] = finding.cycle
    return out


# ---- the command ----------------------------------------------------------------------------

def summary_line(f: dict[str, Any]) -> str:
    return (f"chaos: {f['acknowledged']} acknowledged, {f['lost']} lost, {f['not_terminal']} "
            f"not terminal, {f['rerun_after_commit']} re-run after commit, {f['violations']} "
            f"violations, {f['kills']} kills, {f['seconds']:.0f} s")


def detail_lines(f: dict[str, Any], limit: int = 8) -> list[str]:
    out = [f"  seed {f['seed']}; statuses {f['statuses']}; {f['side_lines']} side lines, "
           f"{f['runs_cut_off_after_their_line']} runs cut off after their line (re-run "
           f"allowed); {f['orphans']} executions no submit was acknowledged for"]
    if f["acknowledged"] < f["executions"]:
        out.append(f"  {f['executions'] - f['acknowledged']} submits were never acknowledged")
    out.extend(f"  lost: {eid}" for eid in f["lost_ids"][:limit])
    for name, items in (("not terminal", f["not_terminal_list"]), ("re-run", f["reruns"]),
                        ("violation", f["violation_list"])):
        kinds = Counter(str(i["kind"]) for i in items)
        if name == "violation" and kinds:
            out.append("  violations by kind: " + ", ".join(f"{k} {n}"
                                                            for k, n in kinds.most_common()))
        shown: Counter[str] = Counter()
        for i in items:
            shown[i["kind"]] += 1
            if shown[i["kind"]] <= limit:
                label = name if name != "violation" else f"violation ({i['kind']})"
                out.append(f"  {label}: {i['id']} {i['detail']}")
    logged = f["server_errors"]
    if logged["first_lines"]:
        events = ", ".join(f"{n} {name}" for name, n in logged["events"].items())
        name, lines = next(iter(logged["first_lines"].items()))
        out.append(f"  the service logged {events or 'error lines'} ({len(logged['first_lines'])}"
                   f" of {logged['processes']} processes); first, in {name}: {lines[0][:200]}")
    if f["sigterm_exit"] != 0:
        out.append(f"  the last service exited {f['sigterm_exit']} on SIGTERM")
    return out


async def _run(opts: Options, work: Path) -> dict[str, Any]:
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        chaos = Chaos(opts, work, session)
        try:
            run = await chaos.run()
        finally:
            await procs.end_all()  # whatever this run started and is still up, by PID
    figures = judge(chaos, run)
    figures.update(seconds=round(run.seconds, 1), drain_seconds=round(run.drain_seconds, 1),
                   sigterm_exit=run.sigterm_exit, server_errors=run.server_errors)
    return figures


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench chaos", description=(
        "Kill -9 workflowd again and again during a mixed load; check that nothing "
        "acknowledged is lost, no committed cycle runs again, every execution ends, and "
        "events have no gap."))
    parser.add_argument("--executions", type=int, default=2_000, help="how many (default 2000)")
    parser.add_argument("--kills", type=int, default=20, help="how many SIGKILLs (default 20)")
    parser.add_argument("--seed", type=int, default=None, help="default: a random one")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="where to write the JSON")
    parser.add_argument("--keep", action="store_true", help="keep the temporary work directory")
    args = parser.parse_args(argv)
    if args.executions < 1 or args.kills < 0:
        parser.error("--executions must be at least 1 and --kills at least 0")
    seed = args.seed if args.seed is not None else secrets.randbelow(1_000_000)
    opts = Options(executions=args.executions, kills=args.kills, seed=seed)
    work = Path(tempfile.mkdtemp(prefix="workflowd-chaos-"))
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    try:
        figures = asyncio.run(_run(opts, work))
    except Exception as exc:  # noqa: BLE001 - report why the run could not finish, then fail
        sys.stdout.write(f"chaos: FAILED before its checks: {exc!r}\n  work directory {work}\n")
        return 2
    line, details = summary_line(figures), detail_lines(figures)
    sys.stdout.write("\n".join([line, *details]) + "\n")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "meta": {"started": started, "command": "chaos", "options": vars(args) | {"seed": seed}},
        "results": {"chaos": figures}, "line": line, "notes": details,
        "server_errors": figures["server_errors"]}, indent=2) + "\n")
    sys.stdout.write(f"JSON: {out}\n")
    if args.keep:
        sys.stdout.write(f"work directory kept: {work}\n")
    else:
        shutil.rmtree(work, ignore_errors=True)
    bad = (figures["lost"] or figures["not_terminal"] or figures["rerun_after_commit"]
           or figures["violations"])
    return 1 if bad else 0
