"""`python -m bench`: run the phases, print the table, write the JSON."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import sqlite3
import sys
import tempfile
import time
from dataclasses import asdict, replace
from importlib.metadata import version
from pathlib import Path
from typing import Any

import aiohttp

from bench import procs, wrk
from bench.common import ROOT
from bench.phases import FULL, QUICK, Bench, _log
from bench.report import build_rows, render

__all__ = ["main"]

PHASES = ("http", "throughput", "memory", "ws", "cluster")
DEFAULT_OUT = ROOT / "bench" / "results" / "latest.json"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def _meta(args: argparse.Namespace, use_wrk: bool) -> dict[str, Any]:
    return {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "cores": os.cpu_count(),
        "cpu": _cpu_model(),
        "python": platform.python_version(),
        "aiohttp": version("aiohttp"),
        "aiosqlite": version("aiosqlite"),
        "sqlite": sqlite3.sqlite_version,
        "mode": "quick" if args.quick else "full",
        "client": "python asyncio HTTP/1.1 client (bench.load), 1 separate process, "
                  "64 keep-alive connections" + ("; wrk cross-check" if use_wrk else ""),
    }


def _header(meta: dict[str, Any], sizes: Any) -> list[str]:
    return [
        f"workflowd benchmark ({meta['mode']}) - {meta['cores']} cores ({meta['cpu']}), "
        f"Python {meta['python']}, aiohttp {meta['aiohttp']}, SQLite {meta['sqlite']}",
        f"load: {meta['client']}; the load process, the server (event loop + SQLite thread) and"
        f" the bare handler share the same {meta['cores']} cores on 127.0.0.1, so every figure "
        "is a share of one machine",
        f"slices: {sizes.slice_seconds:g} s after 1 s warm-up, {sizes.rounds} interleaved "
        "round(s) of bare vs service, ratio = median of per-round ratios; (a) submitted "
        "executions stay queued (max_concurrent=1 behind one holder) so only the route is "
        "measured",
        "",
    ]


def _write_outputs(out: Path, results: dict[str, Any], document: dict[str, Any]) -> None:
    """Keep the profile of (b) beside the JSON (if one was taken), then write the JSON."""
    out.parent.mkdir(parents=True, exist_ok=True)
    e2e = results.get("throughput", {}).get("e2e", {})
    profile = e2e.get("profile")
    if profile and Path(profile).exists():
        kept = out.with_name("profile-b.txt")
        shutil.copy(profile, kept)
        e2e["profile"] = str(kept)
        sys.stdout.write(f"server profile of (b): {kept} (python -m bench.profile {kept})\n")
    out.write_text(json.dumps(document, indent=2) + "\n")


async def _run(args: argparse.Namespace) -> int:
    sizes = QUICK if args.quick else FULL
    if args.max_concurrent:
        sizes = replace(sizes, max_concurrent=args.max_concurrent)
    phases = args.phases.split(",") if args.phases else list(PHASES)
    use_wrk = not args.no_wrk and wrk.available() is not None
    meta = _meta(args, use_wrk)
    workdir = Path(tempfile.mkdtemp(prefix="workflowd-bench-"))
    began = time.perf_counter()
    _log(f"work directory {workdir}")
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        bench = Bench(sizes, workdir, session, use_wrk=use_wrk, profile=args.profile)
        try:
            for phase in phases:
                if phase not in PHASES:
                    raise SystemExit(f"unknown phase {phase!r}; choose from {', '.join(PHASES)}")
                try:
                    await getattr(bench, f"phase_{phase}")()
                except Exception as exc:  # noqa: BLE001 - one phase failing must not lose the rest
                    _log(f"phase {phase} failed: {exc!r}")
                    bench.results.setdefault("failed", {})[phase] = repr(exc)[:2000]
                    await procs.end_all()
            if args.peers:
                from bench.peers import run_peers

                bench.results["peers"] = await run_peers(sizes.peer_executions, workdir,
                                                         budget=90.0, log=_log)
        finally:
            await procs.end_all()
    meta["seconds"] = round(time.perf_counter() - began, 1)
    rows = build_rows(bench.results)
    header = _header(meta, sizes)
    table = render(rows, header)
    notes = list(bench.notes)
    shares = [run["client_cpu_s"] / (run["seconds"] + 1.0)
              for rnd in bench.results.get("http", {}).get("rounds", [])
              for run in rnd.values() if "client_cpu_s" in run]
    if shares:
        notes.append(f"the Python load process used {100 * min(shares):.0f}-"
                     f"{100 * max(shares):.0f}% of one core during the (a) slices; the server "
                     "column 'srv CPU' is its share of one core (event loop + SQLite thread)")
    for phase, error in bench.results.get("failed", {}).items():
        notes.append(f"phase {phase} FAILED: {error}")
    for name, lines in bench.server_errors.items():
        notes.append(f"server {name} logged {len(lines)} error line(s), first: {lines[0][:300]}")
    for name, peer in bench.results.get("peers", {}).items():
        if "error" in peer:
            notes.append(f"peer {name} not measured: {peer['error']}")
        else:
            notes.append(f"peer {name}: {peer.get('how', '')}; in-process, no HTTP (workflowd's "
                         "end-to-end row includes its HTTP submits)")
    sys.stdout.write(table + "\n")
    for note in notes:
        sys.stdout.write(f"note: {note}\n")
    sys.stdout.write(f"run took {meta['seconds']:.0f} s; JSON: {args.out}\n")
    _write_outputs(Path(args.out), bench.results, {
        "meta": meta, "sizes": asdict(sizes), "results": bench.results,
        "rows": [r.as_dict() for r in rows], "notes": notes,
        "server_errors": bench.server_errors, "table": table})
    if args.keep:
        sys.stdout.write(f"work directory kept: {workdir}\n")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if bench.results.get("failed") else 0


def main(argv: list[str] | None = None) -> int:
    args_in = sys.argv[1:] if argv is None else argv
    if args_in[:1] == ["chaos"]:
        # A command of its own (the reliability bar), with its own options; everything else
        # is the performance run, parsed exactly as before.
        from bench.chaos import main as chaos_main

        return chaos_main(args_in[1:])
    parser = argparse.ArgumentParser(prog="python -m bench", description=(
        "Measure workflowd against DESIGN.md's performance bars (one machine, loopback)."),
        epilog="python -m bench chaos [--executions N] [--kills K] [--seed S]: kill -9 the "
               "service during a mixed load and check the reliability bar (see --help there)")
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--peers", action="store_true",
                        help="also run workload (b) on DBOS and LangGraph (own venv)")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="where to write the JSON")
    parser.add_argument("--phases", default="",
                        help=f"comma-separated subset of {','.join(PHASES)} (default: all)")
    parser.add_argument("--max-concurrent", type=int, default=0,
                        help="[engine] max_concurrent for workload (b) (default 1000)")
    parser.add_argument("--no-wrk", action="store_true", help="skip the wrk cross-check")
    parser.add_argument("--profile", action="store_true",
                        help="py-spy the server during (b) (needs py-spy in the venv)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary work directory")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="a setting for every service of the run (value as JSON, else text)")
    args = parser.parse_args(args_in)
    for item in args.set:
        name, _, raw = item.partition("=")
        section, _, key = name.partition(".")
        if not (section and key and raw):
            parser.error(f"--set {item!r}: use SECTION.KEY=VALUE")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        procs.OVERRIDES.setdefault(section, {})[key] = value
    return asyncio.run(_run(args))
