"""(f) PostgreSQL and several nodes, side by side in one run (`--phases cluster`):

- throughput of three-step executions submitted over HTTP: one node on SQLite, one node on
  PostgreSQL, two nodes on PostgreSQL (the submits split between them); with the CPU each
  execution cost the nodes and the PostgreSQL server;
- a follower on one node of an execution running on another: event timestamp (made on the
  running node, before its commit) to receipt (p99);
- take-over: SIGKILL of the node running an execution, to its step started again elsewhere.

PostgreSQL is a throwaway server of the run's own (`tests.pgserver`), with its default
durability (fsync, synchronous_commit on), as SQLite runs with `synchronous = "full"`. Every
process shares the machine's cores: two nodes on one machine compete with each other and with
the server, so the two-node figure says what the store carries, not what two machines would.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import procs
from bench.common import cpu_seconds, metric, stat_cpu, stat_fields

if TYPE_CHECKING:
    from bench.phases import Bench
    from bench.report import Row

__all__ = ["cluster_rows", "run_cluster"]

API = "/api/v1"
BODY = '{"input": {"bench": true}}'
PG_HALF_OF_SQLITE = 0.5
TAKEOVER_SLACK_S = 5.0
FOLLOWER_P99_MS = 100.0


def _pg_cpu(data: Path) -> float:
    """CPU seconds of the PostgreSQL server: the postmaster, the backends that exited (its
    waited-for children) and those alive now."""
    try:
        postmaster = int((data / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_fields(stat.read_text())
        except OSError:
            continue
        if int(stat.parent.name) == postmaster:
            total += stat_cpu(fields, waited_children=True)
        elif int(fields[1]) == postmaster:
            total += stat_cpu(fields)
    return total


async def _completed(services: list[procs.Service], session: Any) -> float:
    """Executions completed by these nodes since they started: each counts the
    `workflow_completed` events it committed (the executions gauge of a node of a cluster is
    the store's, read every few seconds, too coarse to time a run by)."""
    name = 'workflowd_events_total{type="workflow_completed"}'
    total = 0.0
    for svc in services:
        total += metric(await svc.metrics(session), name)
    return total


async def _three(bench: Bench, services: list[procs.Service], n: int,
                 pg_data: Path | None) -> dict[str, Any]:
    """`n` bench-three executions, the submits split over `services`; until all completed."""
    session = bench.session
    base = await _completed(services, session)
    cpu0 = [svc.cpu_seconds() for svc in services]
    pg0 = _pg_cpu(pg_data) if pg_data else 0.0
    began = time.perf_counter()
    share = n // len(services)
    loads = [asyncio.create_task(bench._list(
        svc.port, method="POST", paths=[f"{API}/workflows/bench-three/executions"],
        count=share, body=BODY, max_seconds=300.0)) for svc in services]
    total = share * len(services)
    deadline = began + 300.0
    while await _completed(services, session) - base < total:
        if time.perf_counter() > deadline:
            raise RuntimeError(f"only {await _completed(services, session) - base:.0f} of "
                               f"{total} completed in 300 s")
        await asyncio.sleep(0.05)
    wall = time.perf_counter() - began
    submitted = await asyncio.gather(*loads)
    node_cpu = sum(svc.cpu_seconds() - c for svc, c in zip(services, cpu0, strict=True))
    pg_cpu = (_pg_cpu(pg_data) - pg0) if pg_data else 0.0
    return {
        "executions": total, "seconds": round(wall, 3),
        "executions_per_s": total / wall,
        "node_cpu_ms_per_execution": round(1000 * node_cpu / total, 3),
        "pg_cpu_ms_per_execution": round(1000 * pg_cpu / total, 3),
        "node_cpu_share": round(node_cpu / wall, 3), "pg_cpu_share": round(pg_cpu / wall, 3),
        "submit_rps": [round(s["rps"]) for s in submitted],
        "submit_errors": sum(s["errors"] for s in submitted),
    }


async def run_cluster(bench: Bench) -> dict[str, Any]:
    from tests.pgserver import PgServer

    sizes = bench.sizes
    quick = sizes.rounds == 1
    n = sizes.executions
    lease = 5.0 if quick else 15.0
    engine = {"max_concurrent": sizes.max_concurrent, "max_queued": 1_000_000,
              "shutdown_grace": 1.0}
    out: dict[str, Any] = {"executions": n, "lease_seconds": lease}
    server = PgServer(durable=True)
    await asyncio.to_thread(server.start)
    assert server.dir is not None
    data = server.dir / "data"
    try:
        from bench.phases import _log

        # Followers and take-over first, on a quiet server: after the throughput runs its
        # checkpoints would be flushing their writes, and a commit waiting on the disk is
        # not what the cross-node path costs.
        url = await server.database()
        await _checkpoint(url)
        a, b = (_pg_service(bench, f"f-{x}", url, {**engine, "max_concurrent": 16}, lease)
                for x in "ab")
        for node in (a, b):
            await node.start(bench.session)
        try:
            _log("(f) followers on node b of an execution running on node a")
            out["follower"] = await _follower(bench, a, b, sizes)
            _log(f"(f) SIGKILL of the node running an execution (lease {lease:g} s)")
            out["takeover"] = await _takeover(bench, a, b)
        finally:
            for node in (a, b):
                await bench._stop(node, signal.SIGKILL)

        _log(f"(f) {n} three-step executions, one node on SQLite")
        svc = procs.Service(bench.work, "f-sqlite", bench.work / "f.db", engine=engine)
        await svc.start(bench.session)
        try:
            out["sqlite_1"] = await _three(bench, [svc], n, None)
        finally:
            await bench._stop(svc)

        _log(f"(f) {n} three-step executions, one node on PostgreSQL")
        url = await server.database()
        await _checkpoint(url)
        one = _pg_service(bench, "f-pg-1", url, engine, lease)
        await one.start(bench.session)
        try:
            out["pg_1"] = await _three(bench, [one], n, data)
        finally:
            await bench._stop(one)

        _log(f"(f) {n} three-step executions, two nodes on PostgreSQL")
        url = await server.database()
        await _checkpoint(url)
        pair = [_pg_service(bench, f"f-pg-2{x}", url, engine, lease) for x in "ab"]
        for node in pair:
            await node.start(bench.session)
        try:
            out["pg_2"] = await _three(bench, pair, n, data)
        finally:
            for node in pair:
                await bench._stop(node)
    finally:
        await asyncio.to_thread(server.stop)
    bench.notes.extend(_notes(out))
    return out


def _notes(out: dict[str, Any]) -> list[str]:
    """What a machine per node would give, from what each execution cost here."""
    two = out.get("pg_2")
    if not two or not two["node_cpu_ms_per_execution"] or not two["pg_cpu_ms_per_execution"]:
        return []
    cores = os.cpu_count() or 1
    node = 1000.0 / two["node_cpu_ms_per_execution"]
    pg = cores * 1000.0 / two["pg_cpu_ms_per_execution"]
    return [f"(f) every process shared {cores} cores here; from the CPU each execution cost, a "
            f"node with a core of its own carries about {node:,.0f}/s (its event loop is one "
            f"core) and the PostgreSQL server on {cores} cores of its own about {pg:,.0f}/s, "
            f"so with a machine per node N nodes would give about min(N x {node:,.0f}, "
            f"{pg:,.0f})/s (an estimate from CPU, not a measurement)"]


async def _checkpoint(url: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()


def _pg_service(bench: Bench, name: str, url: str, engine: dict[str, Any],
                lease: float) -> procs.Service:
    return procs.Service(bench.work, name, bench.work / f"{name}.db", engine=engine,
                         store={"url": url}, cluster={"lease_seconds": lease})


async def _follower(bench: Bench, a: procs.Service, b: procs.Service,
                    sizes: Any) -> dict[str, Any]:
    session = bench.session
    followers = max(10, sizes.followers // 10)
    count = max(20, sizes.ws_events * 4)
    body = {"input": {"events": count, "interval": 0.05}, "require_approval": True}
    async with session.post(a.url + f"{API}/workflows/bench-progress/executions",
                            json=body) as resp:
        execution_id = (await resp.json())["execution_id"]
    watchers = await procs.start_followers({
        "port": b.port, "path": f"{API}/executions/{execution_id}/ws",
        "followers": followers, "max_seconds": 60.0 + count})
    await watchers.ready(60.0)
    async with session.post(a.url + f"{API}/executions/{execution_id}/approve",
                            json={}) as resp:
        await resp.read()  # on a, which has room: it runs there
    result = await watchers.result(90.0 + count)
    ran_on_a = metric(await a.metrics(session), 'workflowd_events_total{type="step_progress"}')
    ran_on_b = metric(await b.metrics(session), 'workflowd_events_total{type="step_progress"}')
    return {"followers": followers, "events": count, "progress_committed_by_a": ran_on_a,
            "progress_committed_by_b": ran_on_b,
            **{k: result[k] for k in ("since_commit_ts_ms", "followers_with_every_event",
                                      "close_codes", "deliveries")}}


async def _takeover(bench: Bench, a: procs.Service, b: procs.Service) -> dict[str, Any]:
    session = bench.session
    async with session.post(a.url + f"{API}/workflows/bench-hold/executions",
                            json={"input": {"seconds": 3600}}) as resp:
        execution_id = (await resp.json())["execution_id"]
    events_url = f"{b.url}{API}/executions/{execution_id}/events"

    async def started() -> int:
        async with session.get(events_url) as resp:
            items = (await resp.json())["items"]
        return sum(1 for e in items if e["type"] == "step_started")

    deadline = time.perf_counter() + 30.0
    while await started() < 1:
        if time.perf_counter() > deadline:
            raise RuntimeError("the held execution never started")
        await asyncio.sleep(0.02)
    assert a.proc is not None
    killed = time.perf_counter()
    a.proc.send_signal(signal.SIGKILL)
    cpu = cpu_seconds(b.pid)
    while await started() < 2:
        if time.perf_counter() > killed + 120.0:
            raise RuntimeError("no node took the execution over in 120 s")
        await asyncio.sleep(0.02)
    return {"seconds": round(time.perf_counter() - killed, 3),
            "b_cpu_s": round(cpu_seconds(b.pid) - cpu, 3)}


def cluster_rows(c: dict[str, Any]) -> list[Row]:
    from bench.report import Row, _ms, _rate, _verdict

    rows: list[Row] = []
    sqlite = c.get("sqlite_1", {}).get("executions_per_s")
    for key, label in (("sqlite_1", "1 node, SQLite"), ("pg_1", "1 node, PostgreSQL"),
                       ("pg_2", "2 nodes, PostgreSQL")):
        run = c.get(key)
        if not run:
            continue
        ratio = run["executions_per_s"] / sqlite if sqlite else None
        cpu = (f"{run['node_cpu_ms_per_execution']:.2f} ms node"
               + (f" + {run['pg_cpu_ms_per_execution']:.2f} ms pg" if key != "sqlite_1"
                  else "") + " CPU/exec")
        row = Row("f", f"three-step executions, {label} ({cpu})",
                  _rate(run["executions_per_s"]),
                  ratio=f"{ratio:.2f}x SQLite" if ratio and key != "sqlite_1" else "")
        if key == "pg_1" and ratio is not None:
            row.bar = f">= {PG_HALF_OF_SQLITE:.1f}x SQLite"
            row.verdict = _verdict(ratio >= PG_HALF_OF_SQLITE)
        rows.append(row)
    follower = c.get("follower")
    if follower:
        lat = follower["since_commit_ts_ms"]
        rows.append(Row(
            "f", f"follower on node b of an execution on node a ({follower['followers']} "
            f"followers, {follower['followers_with_every_event']} with every event)",
            f"{follower['deliveries']:,} deliveries", _ms(lat.get("p50")), _ms(lat.get("p99")),
            bar=f"p99 < {FOLLOWER_P99_MS:.0f} ms",
            verdict=_verdict(lat.get("p99", 1e9) < FOLLOWER_P99_MS)))
    takeover = c.get("takeover")
    if takeover:
        bar = c["lease_seconds"] + TAKEOVER_SLACK_S
        rows.append(Row("f", f"take-over after SIGKILL (lease_seconds {c['lease_seconds']:g})",
                        f"{takeover['seconds']:.1f} s", bar=f"<= {bar:g} s",
                        verdict=_verdict(takeover["seconds"] <= bar)))
    return rows
