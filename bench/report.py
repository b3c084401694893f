"""The table: figures of a run, their ratios, and DESIGN.md's bars with a verdict each."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["Row", "build_rows", "render"]

# DESIGN.md "Performance"
SUBMIT_RATIO = 0.5
SUBMIT_P99_MS = 25.0
EXECUTIONS_PER_S = 3_000.0
REFERENCE_SHARE = 0.25
LIVE_RATIO = 0.7
IN_FLIGHT_MB = 100.0
RESUME_S = 5.0
WS_COMMIT_P99_MS = 100.0
WS_CALL_P99_MS = 250.0


@dataclass(slots=True)
class Row:
    section: str
    measure: str
    value: str
    p50: str = ""
    p99: str = ""
    ratio: str = ""
    bar: str = ""
    verdict: str = ""  # PASS, FAIL, or empty when no bar applies
    cpu: str = ""  # the server's CPU over the measurement, as a share of one core

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def _rate(value: float | None, unit: str = "/s") -> str:
    return "n/a" if value is None else f"{value:,.0f}{unit}"


def _ms(value: float | None) -> str:
    return "" if value is None else f"{value:.1f}"


def _x(value: float | None, against: str) -> str:
    return "" if value is None else f"{value:.2f}x {against}"


def _verdict(ok: bool | None) -> str:
    return "" if ok is None else ("PASS" if ok else "FAIL")


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def _lat(run: dict[str, Any], key: str) -> float | None:
    value = run.get("latency_ms", {}).get(key)
    return None if value is None else float(value)


def _cpu(value: float | None) -> str:
    return "" if value is None else f"{100.0 * value:.0f}%"


def _med_run(runs: list[dict[str, Any]]) -> dict[str, float | None]:
    return {"rps": _median([r["rps"] for r in runs]),
            "cpu": _median([r.get("server_cpu") for r in runs]),
            "p50": _median([_lat(r, "p50") for r in runs]),
            "p99": _median([_lat(r, "p99") for r in runs])}


def _ratio(rounds: list[dict[str, Any]], top: str, bottom: str) -> float | None:
    return _median([r[top]["rps"] / r[bottom]["rps"] for r in rounds if r[bottom]["rps"]])


def _http_rows(http: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    rounds: list[dict[str, Any]] = http.get("rounds", [])
    if rounds:
        n = len(rounds)
        for key, label in (("bare_get", "bare aiohttp GET /json"),
                           ("bare_post", "bare aiohttp POST /json")):
            med = _med_run([r[key] for r in rounds])
            rows.append(Row("a", label, _rate(med["rps"]), _ms(med["p50"]), _ms(med["p99"]),
                            cpu=_cpu(med["cpu"])))
        sub = _med_run([r["submit"] for r in rounds])
        ratio = _ratio(rounds, "submit", "bare_post")
        ok = None if ratio is None or sub["p99"] is None else (
            ratio >= SUBMIT_RATIO and sub["p99"] < SUBMIT_P99_MS)
        rows.append(Row("a", f"submit POST .../executions (202), median of {n}",
                        _rate(sub["rps"]), _ms(sub["p50"]), _ms(sub["p99"]),
                        _x(ratio, "bare POST"),
                        f">= {SUBMIT_RATIO}x, p99 < {SUBMIT_P99_MS:.0f} ms", _verdict(ok),
                        _cpu(sub["cpu"])))
    bare = http.get("approve_bare_post")
    for key, label in (("submit_gated", "submit require_approval (201), N once"),
                       ("approve", "approve POST .../approve (202), N once")):
        run = http.get(key)
        if run is None or bare is None:
            continue
        ratio = run["rps"] / bare["rps"] if bare["rps"] else None
        p99 = _lat(run, "p99")
        ok = None if ratio is None or p99 is None else (
            ratio >= SUBMIT_RATIO and p99 < SUBMIT_P99_MS)
        statuses = ",".join(f"{k}:{v}" for k, v in run["statuses"].items())
        rows.append(Row("a", f"{label} [{statuses}]", _rate(run["rps"]), _ms(_lat(run, "p50")),
                        _ms(p99), _x(ratio, "bare POST"),
                        f">= {SUBMIT_RATIO}x, p99 < {SUBMIT_P99_MS:.0f} ms" if key == "approve"
                        else "", _verdict(ok) if key == "approve" else "",
                        _cpu(run.get("server_cpu"))))
    live_rounds: list[dict[str, Any]] = http.get("live_rounds", [])
    if live_rounds:
        med = _med_run([r["bare_get"] for r in live_rounds])
        rows.append(Row("c", "bare aiohttp GET /json", _rate(med["rps"]), _ms(med["p50"]),
                        _ms(med["p99"]), cpu=_cpu(med["cpu"])))
        for key, label in (("live", "GET .../status/live (200)"),
                           ("live_304", "GET .../status/live, If-None-Match (304)")):
            med = _med_run([r[key] for r in live_rounds])
            ratio = _ratio(live_rounds, key, "bare_get")
            rows.append(Row("c", label, _rate(med["rps"]), _ms(med["p50"]), _ms(med["p99"]),
                            _x(ratio, "bare GET"), f">= {LIVE_RATIO}x",
                            _verdict(None if ratio is None else ratio >= LIVE_RATIO),
                            _cpu(med["cpu"])))
        finished = http.get("live_finished")
        if finished is not None:
            bare_get = _median([r["bare_get"]["rps"] for r in live_rounds])
            ratio = finished["rps"] / bare_get if bare_get else None
            rows.append(Row("c", "GET .../status/live of a just-finished execution",
                            _rate(finished["rps"]), _ms(_lat(finished, "p50")),
                            _ms(_lat(finished, "p99")), _x(ratio, "bare GET"),
                            cpu=_cpu(finished.get("server_cpu"))))
    runs = http.get("wrk")
    if runs:
        for key, label, base, bar, limit in (
                ("bare_get", "wrk: bare GET /json", None, "", 0.0),
                ("bare_post", "wrk: bare POST /json", None, "", 0.0),
                ("submit", "wrk: submit (202)", "bare_post", "bare POST", SUBMIT_RATIO),
                ("live", "wrk: status/live (200)", "bare_get", "bare GET", LIVE_RATIO),
                ("live_304", "wrk: status/live (304)", "bare_get", "bare GET", LIVE_RATIO)):
            run = runs.get(key)
            if run is None:
                continue
            ratio = run["rps"] / runs[base]["rps"] if base else None
            extra = f" [{run['non_2xx_3xx']} non-2xx/3xx]" if run.get("non_2xx_3xx") else ""
            rows.append(Row("a/c", label + extra, _rate(run["rps"]), _ms(_lat(run, "p50")),
                            _ms(_lat(run, "p99")), _x(ratio, bar),
                            f">= {limit}x" if base else "",
                            _verdict(None if ratio is None else ratio >= limit)))
    return rows


def _throughput_rows(tp: dict[str, Any], peers: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    ref = tp.get("reference")
    ref_rate: float | None = ref["executions_per_s"] if ref else None

    def detail(run: dict[str, Any]) -> str:
        cpc = run.get("cycles_per_commit")
        return (f"{run['cycles_per_s']:,.0f} cycles/s, {run['commits_per_s']:,.0f} commits/s, "
                f"{cpc:.1f} cycles/commit" if cpc else "")

    n = tp.get("executions")
    for key, label in (("e2e", f"workflowd, {n} submitted over HTTP (end to end)"),
                       ("e2e_await", "  the same, with steps that await (asyncio.sleep(0))"),
                       ("engine", f"workflowd, {n} queued then a restart (engine only)")):
        run = tp.get(key)
        if run is None:
            continue
        rate = run["executions_per_s"]
        share = rate / ref_rate if ref_rate else None
        ok = rate >= EXECUTIONS_PER_S and (share is None or share >= REFERENCE_SHARE)
        rows.append(Row("b", label, _rate(rate), ratio=_x(share, "reference"),
                        bar=f">= {EXECUTIONS_PER_S:,.0f}/s, >= {REFERENCE_SHARE}x ref",
                        verdict=_verdict(ok), cpu=_cpu(run.get("server_cpu"))))
        rows.append(Row("b", "  " + detail(run), ""))
    if ref:
        rows.append(Row("b", "plain asyncio reference (group commit, 1 row/step)",
                        _rate(ref_rate), ratio=f"runs {ref.get('runs')}"))
        rows.append(Row("b", "  " + detail(ref), ""))
    e2e = tp.get("e2e", {}).get("executions_per_s")
    for name, peer in peers.items():
        if peer.get("executions_per_s"):
            ratio = e2e / peer["executions_per_s"] if e2e else None
            rows.append(Row("b", f"peer {name}: {peer.get('completed')} of "
                            f"{peer.get('executions')} completed",
                            _rate(peer["executions_per_s"]),
                            ratio=f"workflowd {ratio:.1f}x" if ratio else ""))
        else:
            rows.append(Row("b", f"peer {name}: not measured: {peer.get('error', '?')}"[:160],
                            "n/a"))
    return rows


def _memory_rows(mem: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    k = mem.get("in_flight", 0)
    if "delta_kib" in mem:
        mb = mem["delta_kib"] / 1024.0
        rows.append(Row("d", f"idle service RSS {mem['idle_rss_kib'] / 1024:.1f} MB; "
                        f"{k:,} in flight: RSS {mem['loaded_rss_kib'] / 1024:.1f} MB",
                        f"+{mb:.1f} MB", ratio=f"{mem['kib_each']:.1f} KiB each",
                        bar=f"< {IN_FLIGHT_MB:.0f} MB (for 10,000)",
                        verdict=_verdict(mb * (10_000 / k) < IN_FLIGHT_MB if k else None)))
        rows.append(Row("d", f"  all {k:,} in their step after submit",
                        f"{mem['all_running_after_s']:.1f} s"))
    if "sigterm" in mem:
        term = mem["sigterm"]
        rows.append(Row("d", "SIGTERM with all in flight: exit", f"{term['exit_seconds']:.1f} s",
                        ratio=f"exit code {term['exit_code']}"))
    for how, label in (("sigterm", "after SIGTERM"), ("sigkill", "after SIGKILL")):
        run = mem.get(how, {})
        if "spawn_to_all_running_s" not in run:
            continue
        seconds = run["spawn_to_all_running_s"]
        all_back = run["running"] >= k and run["step_started"] >= k
        rows.append(Row("d", f"restart {label}: spawn to all {k:,} running again "
                        f"(ready at {run['spawn_to_ready_s']:.1f} s)", f"{seconds:.2f} s",
                        ratio=f"RSS {run['rss_kib'] / 1024:.0f} MB",
                        bar=f"< {RESUME_S:.0f} s", verdict=_verdict(seconds < RESUME_S
                                                                    and all_back)))
    return rows


def _ws_rows(ws: dict[str, Any]) -> list[Row]:
    if "since_commit_ts_ms" not in ws:
        return []
    commit = ws["since_commit_ts_ms"]
    call = ws["since_progress_call_ms"]
    spread = ws["fanout_spread_ms"]
    n = ws["followers"]
    return [
        Row("e", f"{n:,} followers: event ts (commit side) to receipt",
            f"{ws['deliveries']:,} deliveries", _ms(commit.get("p50")), _ms(commit.get("p99")),
            bar=f"p99 < {WS_COMMIT_P99_MS:.0f} ms",
            verdict=_verdict(commit.get("p99", 1e9) < WS_COMMIT_P99_MS),
            cpu=_cpu(ws.get("server_cpu"))),
        Row("e", f"{n:,} followers: ctx.progress call to receipt", "",
            _ms(call.get("p50")), _ms(call.get("p99")), bar=f"p99 < {WS_CALL_P99_MS:.0f} ms",
            verdict=_verdict(call.get("p99", 1e9) < WS_CALL_P99_MS)),
        Row("e", "  first to last follower of one event (fan-out spread)", "",
            _ms(spread.get("p50")), _ms(spread.get("p99"))),
        Row("e", f"  followers with every progress event, gapless: "
            f"{ws['followers_with_every_event']}/{n}; closes {ws['close_codes']}",
            f"{ws['progress_events']} events"),
    ]


def _cluster_rows(cluster: dict[str, Any]) -> list[Row]:
    from bench.cluster import cluster_rows

    return cluster_rows(cluster)


def build_rows(results: dict[str, Any]) -> list[Row]:
    builders: list[tuple[str, Callable[[dict[str, Any]], list[Row]]]] = [
        ("http", _http_rows),
        ("throughput", lambda tp: _throughput_rows(tp, results.get("peers", {}))),
        ("memory", _memory_rows),
        ("ws", _ws_rows),
        ("cluster", _cluster_rows),
    ]
    rows: list[Row] = []
    for key, build in builders:
        if key in results:
            rows.extend(build(results[key]))
    return rows


def render(rows: list[Row], header: list[str]) -> str:
    cols = [("section", ""), ("measure", "measure"), ("value", "value"), ("p50", "p50 ms"),
            ("p99", "p99 ms"), ("cpu", "srv CPU"), ("ratio", "ratio"),
            ("bar", "DESIGN.md bar"), ("verdict", "")]
    table = [[title for _, title in cols]]
    table += [[getattr(row, name) for name, _ in cols] for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(cols))]
    right = {2, 3, 4, 5}
    lines = list(header)
    for n, line in enumerate(table):
        cells = [cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
                 for i, cell in enumerate(line)]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    passed = sum(1 for r in rows if r.verdict == "PASS")
    failed = sum(1 for r in rows if r.verdict == "FAIL")
    lines.append(f"bars: {passed} PASS, {failed} FAIL")
    return "\n".join(lines)
