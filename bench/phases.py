"""The measured phases (a) to (e) of DESIGN.md's performance bars, and the (b) rows of the
plain reference. Each phase starts the processes it needs and ends them by PID.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench import procs, wrk
from bench.common import ROOT, free_port, metric

__all__ = ["FULL", "QUICK", "Bench", "Sizes"]

API = "/api/v1"
SUBMIT_BODY = json.dumps({"input": {"bench": True}})


@dataclass(frozen=True, slots=True)
class Sizes:
    slice_seconds: float  # one measured HTTP slice (after 1 s of warm-up)
    rounds: int  # interleaved rounds of bare vs service slices
    approvals: int  # executions approved under load in (a)
    executions: int  # N of (b)
    max_concurrent: int  # [engine] max_concurrent for (b)
    in_flight: int  # executions held in flight in (d)
    followers: int  # WebSocket followers in (e)
    ws_events: int  # progress events the followed execution sends
    reference_runs: int
    peer_executions: int


FULL = Sizes(slice_seconds=5.0, rounds=2, approvals=20_000, executions=5_000,
             max_concurrent=1_000, in_flight=10_000, followers=1_000, ws_events=20,
             reference_runs=3, peer_executions=1_000)
QUICK = Sizes(slice_seconds=2.0, rounds=1, approvals=2_000, executions=1_000,
              max_concurrent=1_000, in_flight=2_000, followers=200, ws_events=8,
              reference_runs=1, peer_executions=100)


def _log(message: str) -> None:
    sys.stderr.write(f"[bench {time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


def _ts_epoch(ts: str | None) -> float | None:
    if ts is None:
        return None
    from datetime import datetime

    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


class Bench:
    def __init__(self, sizes: Sizes, workdir: Path, session: aiohttp.ClientSession, *,
                 use_wrk: bool, profile: bool) -> None:
        self.sizes = sizes
        self.work = workdir
        self.session = session
        self.use_wrk = use_wrk and wrk.available() is not None
        self.profile = profile
        self.results: dict[str, Any] = {}
        self.notes: list[str] = []
        self.server_errors: dict[str, list[str]] = {}

    # ---- helpers --------------------------------------------------------------------------

    async def _slice(self, port: int, *, method: str = "GET", paths: list[str],
                     body: str = "", path_headers: list[dict[str, str]] | None = None,
                     pid: int | None = None) -> dict[str, Any]:
        """One measured slice: 64 clients for 1 s of warm-up, then `slice_seconds`."""
        spec: dict[str, Any] = {"port": port, "method": method, "paths": paths, "body": body,
                                "clients": 64, "mode": "duration", "warmup": 1.0,
                                "duration": self.sizes.slice_seconds, "max_seconds": 60.0}
        if path_headers is not None:
            spec["path_headers"] = path_headers
        return await self._measured(spec, pid)

    async def _measured(self, spec: dict[str, Any], pid: int | None) -> dict[str, Any]:
        """Run a load; add the server's CPU use over it (both threads, as a share of one core)."""
        from bench.common import cpu_seconds

        cpu0 = cpu_seconds(pid) if pid else 0.0
        began = time.perf_counter()
        result = await procs.run_load(spec)
        if pid:
            result["server_cpu"] = round((cpu_seconds(pid) - cpu0)
                                         / (time.perf_counter() - began), 3)
        return result

    async def _list(self, port: int, *, method: str, paths: list[str], count: int | None = None,
                    body: str = "", collect: str | None = None, pid: int | None = None,
                    max_seconds: float = 120.0) -> dict[str, Any]:
        """Every request of a list once (or `count` times the path), 64 clients."""
        spec: dict[str, Any] = {"port": port, "method": method, "paths": paths, "body": body,
                                "clients": 64, "mode": "list", "max_seconds": max_seconds}
        if count is not None:
            spec["count"] = count
        if collect:
            spec["collect"] = collect
        return await self._measured(spec, pid)

    async def _service(self, name: str, db: Path | None = None, **engine: Any) -> procs.Service:
        engine.setdefault("max_queued", 1_000_000)
        engine.setdefault("shutdown_grace", 1.0)
        svc = procs.Service(self.work, name, db or self.work / f"{name}.db", engine=engine)
        await svc.start(self.session)
        return svc

    async def _stop(self, svc: procs.Service, sig: int = signal.SIGTERM) -> tuple[int, float]:
        rc, seconds = await svc.stop(sig)
        self._scan_log(svc)
        return rc, seconds

    def _scan_log(self, svc: procs.Service) -> None:
        try:
            lines = svc.log.read_text(errors="replace").splitlines()
        except OSError:
            return
        bad = [line for line in lines
               if any(word in line.lower() for word in ("error", "traceback", "exception"))]
        if bad:
            self.server_errors[svc.name] = bad[:20]

    async def _get_json(self, url: str) -> Any:
        async with self.session.get(url) as resp:
            return await resp.json(content_type=None)

    async def _wait_metrics(self, svc: procs.Service, done: Any, timeout: float,
                            every: float = 0.05) -> tuple[dict[str, float], float]:
        """Poll /metrics until `done(samples)`; answer the samples and the perf_counter time."""
        deadline = time.perf_counter() + timeout
        while True:
            samples = await svc.metrics(self.session)
            now = time.perf_counter()
            if done(samples) or now > deadline:
                return samples, now
            await asyncio.sleep(every)

    # ---- (a) submit and approve, (c) live polling ------------------------------------------

    async def phase_http(self) -> None:
        sizes = self.sizes
        bare = procs.BareServer(free_port())
        await bare.start(self.session)
        out: dict[str, Any] = {"rounds": []}
        try:
            submit_path = f"{API}/workflows/bench-hold/executions"
            for n in range(sizes.rounds):
                _log(f"(a) round {n + 1}: bare GET, bare POST, submit")
                row: dict[str, Any] = {}
                row["bare_get"] = await self._slice(bare.port, paths=["/json"], pid=bare.pid)
                row["bare_post"] = await self._slice(bare.port, method="POST", paths=["/json"],
                                                     body=SUBMIT_BODY, pid=bare.pid)
                # A fresh service per slice: the first execution holds the only slot
                # (max_concurrent 1), so every later one stays queued and the figure is the
                # route (validate, commit, answer), not the running of what it submitted.
                svc = await self._service(f"a-submit-{n + 1}", max_concurrent=1)
                try:
                    row["submit"] = await self._slice(svc.port, method="POST",
                                                      paths=[submit_path], body=SUBMIT_BODY,
                                                      pid=svc.pid)
                    row["submit"]["queued_after"] = metric(
                        await svc.metrics(self.session), "workflowd_executions_queued")
                finally:
                    await self._stop(svc)
                out["rounds"].append(row)

            _log(f"(a) approve: {sizes.approvals} submitted with require_approval, "
                 "then approved under load")
            svc = await self._service("a-approve", max_concurrent=1)
            try:
                await self._list(svc.port, method="POST", paths=[submit_path], count=1,
                                 body=SUBMIT_BODY)  # the holder of the one slot
                gated = await self._list(
                    svc.port, method="POST", paths=[submit_path], count=sizes.approvals,
                    body=json.dumps({"input": {"bench": True}, "require_approval": True}),
                    collect="location", pid=svc.pid)
                locations: list[str] = gated.pop("locations")
                out["submit_gated"] = gated
                out["approve_bare_post"] = await self._slice(
                    bare.port, method="POST", paths=["/json"], body=SUBMIT_BODY, pid=bare.pid)
                out["approve"] = await self._list(
                    svc.port, method="POST", paths=[f"{loc}/approve" for loc in locations],
                    body=json.dumps({"comment": "bench"}), pid=svc.pid)
                await self._phase_live(bare, svc, locations, out)
            finally:
                await self._stop(svc)
        finally:
            await bare.stop()
        self.results["http"] = out

    async def _phase_live(self, bare: procs.BareServer, svc: procs.Service,
                          locations: list[str], out: dict[str, Any]) -> None:
        # 64 clients, each polling its own (queued, so unfinished) execution.
        live_paths = [f"{loc}/status/live" for loc in locations[:64]]
        etags: list[dict[str, str]] = []
        for path in live_paths:
            async with self.session.get(svc.url + path) as resp:
                etags.append({"If-None-Match": resp.headers["ETag"]})
        out["live_rounds"] = []
        for n in range(self.sizes.rounds):
            _log(f"(c) round {n + 1}: bare GET, live, live with If-None-Match")
            row = {
                "bare_get": await self._slice(bare.port, paths=["/json"], pid=bare.pid),
                "live": await self._slice(svc.port, paths=live_paths, pid=svc.pid),
                "live_304": await self._slice(svc.port, paths=live_paths, path_headers=etags,
                                              pid=svc.pid),
            }
            out["live_rounds"].append(row)
        # Just-finished executions: the ledger keeps the last 1,000 finished records in memory.
        finished = locations[64:128]
        for loc in finished:
            async with self.session.post(svc.url + f"{loc}/cancel") as resp:
                await resp.read()
        _log("(c) live status of finished (cancelled) executions")
        out["live_finished"] = await self._slice(
            svc.port, paths=[f"{loc}/status/live" for loc in finished], pid=svc.pid)
        if self.use_wrk:
            _log("(a, c) wrk cross-check")
            one = live_paths[0]
            async with self.session.get(svc.url + one) as resp:
                etag = resp.headers["ETag"]
            seconds = self.sizes.slice_seconds
            out["wrk"] = {
                "bare_get": await wrk.run_wrk(bare.url + "/json", seconds=seconds),
                "bare_post": await wrk.run_wrk(bare.url + "/json", seconds=seconds,
                                               method="POST", body=SUBMIT_BODY),
                "live": await wrk.run_wrk(svc.url + one, seconds=seconds),
                "live_304": await wrk.run_wrk(svc.url + one, seconds=seconds,
                                              headers={"If-None-Match": etag}),
            }
            sub = await self._service("a-submit-wrk", max_concurrent=1)
            try:
                out["wrk"]["submit"] = await wrk.run_wrk(
                    sub.url + f"{API}/workflows/bench-hold/executions", seconds=seconds,
                    method="POST", body=SUBMIT_BODY)
            finally:
                await self._stop(sub)
            for run in out["wrk"].values():
                run.pop("raw", None)

    # ---- (b) throughput of three-step executions -------------------------------------------

    async def phase_throughput(self) -> None:
        sizes = self.sizes
        n = sizes.executions
        out: dict[str, Any] = {"executions": n, "max_concurrent": sizes.max_concurrent}
        out["e2e"] = await self._end_to_end("b", "bench-three", "steps that return at once",
                                            profile=self.profile)
        out["e2e_await"] = await self._end_to_end("b-await", "bench-three-await",
                                                  "steps that await (asyncio.sleep(0))")

        _log(f"(b') the same {n}, queued before a restart: the engine alone, no HTTP")
        db = self.work / "b-engine.db"
        first = await self._service("b-engine-1", db, max_concurrent=1)
        try:
            await self._list(first.port, method="POST",
                             paths=[f"{API}/workflows/bench-hold/executions"], count=1,
                             body=SUBMIT_BODY)
            await self._list(first.port, method="POST",
                             paths=[f"{API}/workflows/bench-three/executions"], count=n,
                             body=SUBMIT_BODY)
        finally:
            await self._stop(first, signal.SIGKILL)
        second = procs.Service(self.work, "b-engine-2", db,
                               engine={"max_concurrent": sizes.max_concurrent,
                                       "max_queued": 1_000_000, "shutdown_grace": 1.0})
        try:
            to_ready = await second.start(self.session)

            def all_done(samples: dict[str, float]) -> bool:
                return metric(samples, 'workflowd_executions{status="completed"}') >= n

            m1, ended = await self._wait_metrics(second, all_done, timeout=300.0)
            cpu = second.cpu_seconds()
            window = _store_window(db, "bench-three", "workflow_started")
            engine = _throughput(n, window["seconds"] or (ended - second.spawned_at), {}, m1)
            # CPU from spawn (start-up and recovery included) over the same span.
            engine["server_cpu"] = round(cpu / (ended - second.spawned_at), 3)
            engine["spawn_to_ready_s"] = round(to_ready, 3)
            engine["spawn_to_all_completed_s"] = round(ended - second.spawned_at, 3)
            engine["store_window"] = window
            out["engine"] = engine
        finally:
            await self._stop(second)

        _log(f"(b) plain asyncio reference, {sizes.reference_runs} run(s)")
        runs = []
        for k in range(sizes.reference_runs):
            path = self.work / f"reference-{k}.db"
            proc = await procs.spawn_plain(sys.executable, "-m", "bench.reference", str(n),
                                           str(path))
            stdout, _ = await asyncio.wait_for(proc.communicate(), 120.0)
            await procs.end(proc)
            runs.append(json.loads(stdout.decode().strip().splitlines()[-1]))
        best = sorted(runs, key=lambda r: float(r["executions_per_s"]))[len(runs) // 2]
        out["reference"] = {**best, "runs": [round(r["executions_per_s"]) for r in runs]}
        self.results["throughput"] = out

    async def _end_to_end(self, name: str, workflow: str, what: str,
                          profile: bool = False) -> dict[str, Any]:
        """N executions of `workflow` submitted over HTTP by 64 clients, until all completed."""
        sizes = self.sizes
        n = sizes.executions
        _log(f"(b) {n} three-step executions ({what}), submitted over HTTP by 64 clients")
        svc = await self._service(name, max_concurrent=sizes.max_concurrent)
        spy: subprocess.Popen[bytes] | None = None
        try:
            m0 = await svc.metrics(self.session)
            cpu0 = svc.cpu_seconds()
            if profile:
                spy = _start_py_spy(svc.pid, self.work / "profile-b.txt")
            began = time.perf_counter()
            load = asyncio.create_task(self._list(
                svc.port, method="POST", paths=[f"{API}/workflows/{workflow}/executions"],
                count=n, body=SUBMIT_BODY, max_seconds=300.0))

            def finished(samples: dict[str, float]) -> bool:
                return metric(samples, 'workflowd_executions{status="completed"}') >= n

            m1, ended = await self._wait_metrics(svc, finished, timeout=300.0)
            submitted = await load
            wall = ended - began
            cpu = svc.cpu_seconds() - cpu0
            run = _throughput(n, wall, m0, m1)
            run["server_cpu"] = round(cpu / wall, 3)
            run["submit"] = {k: submitted[k] for k in
                             ("rps", "seconds", "statuses", "errors", "latency_ms")}
            run["store_window"] = _store_window(svc.db, workflow, "workflow_queued")
            if spy is not None:
                spy.send_signal(signal.SIGINT)  # py-spy writes its profile on SIGINT
                spy.wait(timeout=60)
                run["profile"] = str(self.work / "profile-b.txt")
            return run
        finally:
            if spy is not None and spy.poll() is None:
                spy.kill()
            await self._stop(svc)

    # ---- (d) memory in flight, and resuming after a restart -------------------------------

    async def phase_memory(self) -> None:
        k = self.sizes.in_flight
        db = self.work / "d.db"
        engine = {"max_concurrent": k + 1_000, "max_queued": 1_000_000, "shutdown_grace": 1.0}
        out: dict[str, Any] = {"in_flight": k}
        svc = procs.Service(self.work, "d-1", db, engine=engine)
        await svc.start(self.session)
        try:
            for _ in range(20):  # touch the routes the phase uses, then settle
                await svc.metrics(self.session)
            await asyncio.sleep(1.0)
            idle = svc.rss_kib()
            out["idle_rss_kib"] = idle
            _log(f"(d) {k} executions in flight (a step awaiting a long sleep)")
            began = time.perf_counter()
            submitted = await self._list(svc.port, method="POST",
                                         paths=[f"{API}/workflows/bench-hold/executions"],
                                         count=k, body=SUBMIT_BODY, max_seconds=180.0)
            out["submit"] = {key: submitted[key] for key in ("rps", "statuses", "errors")}

            def all_in_step(samples: dict[str, float]) -> bool:
                return (metric(samples, "workflowd_executions_running") >= k
                        and metric(samples, 'workflowd_events_total{type="step_started"}') >= k)

            m1, ended = await self._wait_metrics(svc, all_in_step, timeout=120.0)
            out["all_running_after_s"] = round(ended - began, 3)
            out["running"] = metric(m1, "workflowd_executions_running")
            await asyncio.sleep(1.0)
            loaded = svc.rss_kib()
            out["loaded_rss_kib"] = loaded
            out["delta_kib"] = loaded - idle
            out["kib_each"] = round((loaded - idle) / k, 2)
            _log("(d) SIGTERM, then restart on the same file")
            rc, exit_s = await self._stop(svc, signal.SIGTERM)
            out["sigterm"] = {"exit_code": rc, "exit_seconds": round(exit_s, 3)}
        finally:
            await self._stop(svc, signal.SIGKILL)
        # After the SIGTERM above: restart, measure, then SIGKILL; restart again, measure.
        for how, stop_with in (("sigterm", signal.SIGKILL), ("sigkill", signal.SIGTERM)):
            svc = procs.Service(self.work, f"d-{how}", db, engine=engine)
            try:
                to_ready = await svc.start(self.session)

                def resumed(samples: dict[str, float]) -> bool:
                    return (metric(samples, "workflowd_executions_running") >= k and
                            metric(samples, 'workflowd_events_total{type="step_started"}') >= k)

                m1, ended = await self._wait_metrics(svc, resumed, timeout=120.0)
                figures = out.setdefault(how, {})
                figures["spawn_to_ready_s"] = round(to_ready, 3)
                figures["spawn_to_all_running_s"] = round(ended - svc.spawned_at, 3)
                figures["running"] = metric(m1, "workflowd_executions_running")
                figures["step_started"] = metric(
                    m1, 'workflowd_events_total{type="step_started"}')
                figures["rss_kib"] = svc.rss_kib()
                if how == "sigterm":
                    _log("(d) SIGKILL, then restart on the same file")
            finally:
                await self._stop(svc, stop_with)
        self.results["memory"] = out

    # ---- (e) WebSocket followers -----------------------------------------------------------

    async def phase_ws(self) -> None:
        sizes = self.sizes
        svc = await self._service("e", max_concurrent=16)
        out: dict[str, Any] = {"followers": sizes.followers}
        try:
            body = {"input": {"events": sizes.ws_events, "interval": 0.25},
                    "require_approval": True}
            async with self.session.post(svc.url + f"{API}/workflows/bench-progress/executions",
                                         json=body) as resp:
                execution = await resp.json()
            execution_id = execution["execution_id"]
            _log(f"(e) {sizes.followers} WebSocket followers of one execution")
            followers = await procs.start_followers({
                "port": svc.port, "path": f"{API}/executions/{execution_id}/ws",
                "followers": sizes.followers, "max_seconds": 60.0 + sizes.ws_events})
            await followers.ready(60.0)
            cpu0 = svc.cpu_seconds()
            began = time.perf_counter()
            async with self.session.post(svc.url + f"{API}/executions/{execution_id}/approve",
                                         json={"comment": "go"}) as resp:
                out["approve_status"] = resp.status
            result = await followers.result(90.0 + sizes.ws_events)
            result["server_cpu"] = round((svc.cpu_seconds() - cpu0)
                                         / (time.perf_counter() - began), 3)
            live = await self._get_json(svc.url + f"{API}/executions/{execution_id}/status/live")
            result["final_status"] = live.get("status")
            out.update(result)
        finally:
            await self._stop(svc)
        self.results["ws"] = out


    # ---- (f) PostgreSQL and several nodes (bench.cluster) -----------------------------------

    async def phase_cluster(self) -> None:
        from bench.cluster import run_cluster

        self.results["cluster"] = await run_cluster(self)


def _throughput(n: int, seconds: float, m0: dict[str, float],
                m1: dict[str, float]) -> dict[str, Any]:
    def delta(name: str) -> float:
        return metric(m1, name) - metric(m0, name)

    commits = delta("workflowd_store_commits_total")
    writes = delta("workflowd_store_writes_total")
    cycles = delta('workflowd_events_total{type="cycle_completed"}')
    completed = metric(m1, 'workflowd_executions{status="completed"}')
    return {
        "completed": completed,
        "seconds": round(seconds, 3),
        "executions_per_s": n / seconds,
        "cycles_per_s": cycles / seconds,
        "commits_per_s": commits / seconds,
        "cycles_per_commit": cycles / commits if commits else None,
        "writes_per_commit": writes / commits if commits else None,
        "commits": commits,
        "writes": writes,
        "cycles": cycles,
    }


def _store_window(db: Path, workflow_id: str, first_type: str) -> dict[str, Any]:
    """From the events table: the first `first_type` event to the last `workflow_completed`,
    by the commit-side timestamps (ms) the service wrote."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        row = conn.execute(
            "SELECT MIN(CASE WHEN json_extract(e.doc, '$.type') = ? "
            "THEN json_extract(e.doc, '$.ts') END), "
            "MAX(CASE WHEN json_extract(e.doc, '$.type') = 'workflow_completed' "
            "THEN json_extract(e.doc, '$.ts') END), "
            "SUM(json_extract(e.doc, '$.type') = 'workflow_completed') "
            "FROM events e JOIN executions x ON x.id = e.execution_id "
            "WHERE x.workflow_id = ?", (first_type, workflow_id)).fetchone()
    finally:
        conn.close()
    first, last = _ts_epoch(row[0]), _ts_epoch(row[1])
    seconds = (last - first) if first is not None and last is not None else None
    return {"first": row[0], "last": row[1], "completed": row[2],
            "seconds": round(seconds, 3) if seconds else None}


def _start_py_spy(pid: int, out: Path) -> subprocess.Popen[bytes] | None:
    exe = Path(sys.executable).parent / "py-spy"
    if not exe.exists():
        return None
    return subprocess.Popen(  # noqa: S603 - our own venv's py-spy on our own server PID
        [str(exe), "record", "--gil", "--nonblocking", "--format", "raw", "-r", "200", "-d", "300",
         "-o", str(out), "--pid", str(pid)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=str(ROOT))


def median_ratio(pairs: list[tuple[float, float]]) -> float | None:
    ratios = [a / b for a, b in pairs if b]
    return statistics.median(ratios) if ratios else None
