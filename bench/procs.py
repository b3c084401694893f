"""The processes of a run: workflowd under test, the bare handler, and the load generators.

Every process is started here, remembered by PID, and ended here by that PID (SIGTERM, then
SIGKILL after a bound); nothing is ever signalled by name.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import ROOT, cpu_seconds, free_port, parse_metrics, rss_kib

__all__ = [
    "BareServer",
    "Followers",
    "Service",
    "end",
    "end_all",
    "run_load",
    "spawn_plain",
    "start_followers",
]

_STARTED: dict[int, asyncio.subprocess.Process] = {}
# Settings every service of the run gets on top of its own (`python -m bench --set
# engine.tune_gc=false`), for comparing a setting side by side.
OVERRIDES: dict[str, dict[str, Any]] = {}


def _env() -> dict[str, str]:
    # The run's own config file decides: no WORKFLOWD_* from the caller's environment leaks in.
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORKFLOWD_")}
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH")
                                     else "")
    return env


async def _spawn(*args: str, stdout: Any = asyncio.subprocess.DEVNULL,
                 stderr: Any = asyncio.subprocess.DEVNULL,
                 stdin: Any = asyncio.subprocess.DEVNULL) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(*args, env=_env(), cwd=str(ROOT), stdin=stdin,
                                                stdout=stdout, stderr=stderr)
    _STARTED[proc.pid] = proc
    return proc


async def spawn_plain(*args: str, merge_stderr: bool = False) -> asyncio.subprocess.Process:
    """Start a helper program (e.g. wrk) with its standard output (and error) piped back."""
    return await _spawn(*args, stdout=asyncio.subprocess.PIPE,
                        stderr=asyncio.subprocess.STDOUT if merge_stderr
                        else asyncio.subprocess.DEVNULL)


async def end(proc: asyncio.subprocess.Process, sig: int = signal.SIGTERM,
              timeout: float = 15.0) -> tuple[int, float]:
    """Signal one process we started, wait for it (SIGKILL past `timeout`); answer its exit
    code and how long it took to exit."""
    began = time.perf_counter()
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
    _STARTED.pop(proc.pid, None)
    return (proc.returncode if proc.returncode is not None else -1,
            time.perf_counter() - began)


async def end_all() -> None:
    """Kill whatever this run started and is still running (on the way out, or on an error)."""
    for proc in list(_STARTED.values()):
        await end(proc, signal.SIGKILL, 5.0)


class _HttpProcess:
    """A server process on a loopback port, ready once `ready_path` answers 200."""

    ready_path = "/healthz"

    def __init__(self, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def rss_kib(self) -> int:
        return rss_kib(self.pid)

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    async def wait_ready(self, session: aiohttp.ClientSession, timeout: float = 60.0) -> None:
        assert self.proc is not None
        async with asyncio.timeout(timeout):
            while True:
                if self.proc.returncode is not None:
                    raise RuntimeError(f"{type(self).__name__} exited with {self.proc.returncode}"
                                       f" while starting{self._log_tail()}")
                try:
                    async with session.get(self.url + self.ready_path) as resp:
                        if resp.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.02)

    def _log_tail(self) -> str:
        return ""

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> tuple[int, float]:
        if self.proc is None:
            return 0, 0.0
        proc, self.proc = self.proc, None
        return await end(proc, sig, timeout)


class BareServer(_HttpProcess):
    """The bare aiohttp JSON handler (`bench.bare`) in its own process."""

    async def start(self, session: aiohttp.ClientSession) -> None:
        self.proc = await _spawn(sys.executable, "-m", "bench.bare", str(self.port))
        await self.wait_ready(session)


class Service(_HttpProcess):
    """`workflowd serve` with a config file of its own, on a database file it may share with
    the instances before it (a restart is a new `Service` on the same `db`)."""

    ready_path = "/readyz"

    def __init__(self, workdir: Path, name: str, db: Path, *, engine: dict[str, Any],
                 store: dict[str, Any] | None = None, live: dict[str, Any] | None = None,
                 port: int | None = None, cluster: dict[str, Any] | None = None) -> None:
        super().__init__(port or free_port())
        self.name = name
        self.db = db
        self.config = workdir / f"{name}.toml"
        self.log = workdir / f"{name}.log"
        sections: dict[str, dict[str, Any]] = {
            "server": {"host": "127.0.0.1", "port": self.port},
            "store": {"path": str(db), **(store or {})},
            "engine": engine,
            "live": live or {},
            "workflows": {"modules": ["bench.workflows"]},
            # Keep finished executions for the whole run.
            "retention": {"finished_after": "7d", "sweep_interval": "1h"},
            "logging": {"level": "warning", "format": "console"},
        }
        if cluster is not None:  # a node of a cluster on PostgreSQL ([store] url)
            sections["cluster"] = {"node_id": name, **cluster}
        for section, values in OVERRIDES.items():
            sections.setdefault(section, {}).update(values)
        self.config.write_text("".join(
            f"[{section}]\n" + "".join(f"{key} = {json.dumps(value)}\n"
                                       for key, value in values.items())
            for section, values in sections.items()))
        self.spawned_at = 0.0

    async def start(self, session: aiohttp.ClientSession) -> float:
        """Start and wait until ready; answer the seconds from spawn to ready."""
        self.spawned_at = time.perf_counter()
        # BENCH_SERVER_WRAPPER: a script run in place of `-m workflowd` (same arguments), for
        # experiments such as instrumenting the service without changing it.
        wrapper = os.environ.get("BENCH_SERVER_WRAPPER")
        launcher = [wrapper] if wrapper else ["-m", "workflowd"]
        with self.log.open("ab") as log:
            self.proc = await _spawn(sys.executable, *launcher, "serve", "--config",
                                     str(self.config), stderr=log)
        await self.wait_ready(session)
        return time.perf_counter() - self.spawned_at

    def _log_tail(self) -> str:
        try:
            return ":\n" + self.log.read_text()[-2000:]
        except OSError:
            return ""

    async def metrics(self, session: aiohttp.ClientSession) -> dict[str, float]:
        async with session.get(self.url + "/metrics") as resp:
            return parse_metrics(await resp.text())


async def run_load(spec: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
    """Run one load in a separate process (`bench.load`); answer its JSON result."""
    proc = await _spawn(sys.executable, "-m", "bench.load", stdin=asyncio.subprocess.PIPE,
                        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    bound = timeout or float(spec.get("max_seconds", 120.0)) + 60.0
    try:
        out, err = await asyncio.wait_for(proc.communicate(json.dumps(spec).encode()), bound)
    finally:
        await end(proc, signal.SIGKILL, 5.0)
    lines = out.decode().strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"load process failed ({proc.returncode}): {err.decode()[-2000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


class Followers:
    """A `bench.load` process holding WebSocket followers; `ready()` once all are connected."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def ready(self, timeout: float) -> None:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if line.strip() != b"READY":
            err = b""
            if self.proc.stderr is not None:
                err = await self.proc.stderr.read()
            raise RuntimeError(f"followers failed to start: {line!r} {err.decode()[-2000:]}")

    async def result(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        try:
            line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
            await asyncio.wait_for(self.proc.wait(), 10.0)
        finally:
            await end(self.proc, signal.SIGKILL, 5.0)
        if not line.strip():
            raise RuntimeError("followers ended without a result")
        result: dict[str, Any] = json.loads(line)
        return result


async def start_followers(spec: dict[str, Any]) -> Followers:
    proc = await _spawn(sys.executable, "-m", "bench.load", stdin=asyncio.subprocess.PIPE,
                        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert proc.stdin is not None
    proc.stdin.write(json.dumps({**spec, "kind": "ws"}).encode())
    await proc.stdin.drain()
    proc.stdin.close()
    return Followers(proc)
