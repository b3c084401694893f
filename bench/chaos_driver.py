"""The driver of `python -m bench chaos`: it starts `workflowd serve`, kills it with SIGKILL at
random moments and starts it again on the same file, while it submits the mix over HTTP,
approves what waits at a gate, and acts as the outside worker of external steps; then it reads
every execution back. It talks to the service only over HTTP; the service is started and
ended through `bench.procs`, by PID.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench import procs
from bench.chaos_check import (
    Observed,
    SideLine,
    StoreView,
    read_side,
    read_store,
    signature,
)
from bench.common import free_port
from bench.workflows import CHAOS_WORKFLOWS
from workflowd.records import TERMINAL_EVENTS

__all__ = ["Chaos", "Options", "ReadBack", "Run", "Tracked"]

API = "/api/v1"
# Enough slots that nothing of the mix waits for one; the queue never refuses a submit.
ENGINE = {"max_concurrent": 200, "max_queued": 1_000_000, "shutdown_grace": 1.0}
JSON_HEADERS = {"Content-Type": "application/json"}
FOLLOW_CONCURRENCY = 8
SUBMIT_CONCURRENCY = 8
# A console log line of a warning or worse: `<ts> [warning  ] <event> ...`.
_LOG_LINE = re.compile(r"^\S+ \[(?:warning|error|critical)\s*\] (\S+)")


def _log(message: str) -> None:
    sys.stderr.write(f"[chaos {time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


@dataclass(frozen=True, slots=True)
class Options:
    executions: int = 2_000
    kills: int = 20
    seed: int = 0
    min_up: float = 0.4  # seconds the service is up (after /readyz) before a kill, at least
    max_up: float = 2.5  # and at most
    submit_timeout: float = 180.0  # every submit acknowledged by then, or given up
    drain_timeout: float = 150.0  # after the last restart, every execution terminal by then
    read_timeout: float = 120.0  # reading every execution back
    stall_timeout: float = 45.0  # or give up sooner when no execution has moved for this long


@dataclass(slots=True)
class Tracked:
    """One execution the driver submits, and what it saw of it."""

    key: str  # Idempotency-Key, also in the input
    workflow_id: str
    body: bytes  # sent byte for byte on every retry, so a replay matches the first
    execution_id: str | None = None
    submit_status: int | None = None
    submit_attempts: int = 0
    terminal: bool = False
    after: int = 0  # the last event seq seen
    gate_seq: int = 0  # seq of the open approval_required, 0 when none is open
    approved_seq: int = 0  # the gate the driver last got an answer for
    last_approve: float = 0.0
    callback: dict[str, str] | None = None  # the latest external run's, not yet answered
    missing: int = 0  # answers of 404 during the run
    seen: Observed = field(default_factory=Observed)


@dataclass(slots=True)
class ReadBack:
    execution: dict[str, Any] | None
    events: list[dict[str, Any]]
    steps: list[dict[str, Any]]
    live_seq: int | None = None


@dataclass(slots=True)
class Run:
    """What a run leaves to be judged."""

    back: dict[str, ReadBack]  # every acknowledged execution, and any other with side lines
    lines: list[SideLine]
    malformed: list[str]
    store: StoreView
    seconds: float
    drain_seconds: float
    sigterm_exit: int
    server_errors: dict[str, Any]


class Chaos:
    def __init__(self, opts: Options, work: Path, session: aiohttp.ClientSession) -> None:
        self.opts = opts
        self.work = work
        self.session = session
        self.rng = random.Random(opts.seed)  # noqa: S311 - a repeatable schedule, not a secret
        self.db = work / "chaos.db"
        self.side = work / "side.log"
        self.port = free_port()
        self.svc: procs.Service | None = None
        self.services: list[procs.Service] = []
        self.up = asyncio.Event()
        self.kills_done = 0
        self.window_began = 0.0
        self.delays = [self.rng.uniform(opts.min_up, opts.max_up) for _ in range(opts.kills)]
        self.restart_seconds: list[float] = []
        self.counts: Counter[str] = Counter()
        self.items = self._plan()
        self.by_id: dict[str, Tracked] = {}
        self.next_index = 0
        self.moved_at = time.monotonic()  # when the driver last saw a new event

    def _plan(self) -> list[Tracked]:
        mix = list(CHAOS_WORKFLOWS)
        workflows = [mix[i % len(mix)] for i in range(self.opts.executions)]
        self.rng.shuffle(workflows)
        items = []
        for n, workflow_id in enumerate(workflows):
            key = f"chaos-{self.opts.seed}-{n}"
            body = {"input": {"key": key, "side": str(self.side),
                              "sleep_ms": round(self.rng.uniform(2.0, 8.0), 1)},
                    "labels": {"chaos": str(self.opts.seed)}}
            items.append(Tracked(key, workflow_id, json.dumps(body).encode()))
        return items

    # ---- HTTP -----------------------------------------------------------------------------

    async def call(self, method: str, path: str, body: bytes | None = None,
                   headers: dict[str, str] | None = None) -> tuple[int, Any] | None:
        """One request to the service that is up; None if it failed on the way (a kill).
        An answer counts only once its body has been read whole."""
        try:
            await asyncio.wait_for(self.up.wait(), 120.0)
        except TimeoutError:
            return None
        url = f"http://127.0.0.1:{self.port}{path}"
        try:
            async with self.session.request(method, url, data=body,
                                            headers=headers or JSON_HEADERS) as resp:
                raw = await resp.read()
                return resp.status, json.loads(raw) if raw else None
        except (aiohttp.ClientError, TimeoutError, ValueError):
            self.counts["failed_requests"] += 1
            return None

    # ---- the service: start, kill, restart ------------------------------------------------

    async def start(self) -> None:
        name = f"chaos-{len(self.services)}"
        try:
            svc = procs.Service(self.work, name, self.db, engine=ENGINE, port=self.port)
            self.services.append(svc)
            seconds = await svc.start(self.session)
        except RuntimeError as exc:
            if "exited" not in str(exc):
                raise
            # Most likely the port was taken while the service was down: once more on another.
            _log(f"{name} did not start on port {self.port} ({str(exc)[:200]}); another port")
            self.port = free_port()
            svc = procs.Service(self.work, name + "b", self.db, engine=ENGINE, port=self.port)
            self.services.append(svc)
            seconds = await svc.start(self.session)
        self.svc = svc
        self.restart_seconds.append(round(seconds, 3))
        self.window_began = time.monotonic()
        self.up.set()

    async def kill(self) -> None:
        """SIGKILL the service this run started, by its PID (`procs.end`)."""
        assert self.svc is not None
        self.up.clear()
        svc, self.svc = self.svc, None
        await svc.stop(signal.SIGKILL, 5.0)
        self.kills_done += 1

    async def chaos(self) -> None:
        for n, delay in enumerate(self.delays, start=1):
            await asyncio.sleep(delay)
            await self.kill()
            await self.start()
            _log(f"kill {n}/{self.opts.kills} after {delay:.2f} s up; ready again in "
                 f"{self.restart_seconds[-1]:.2f} s; {len(self.by_id)} acknowledged")
            await self.replay_some()

    # ---- submitting -----------------------------------------------------------------------

    def allowance(self) -> int:
        """How many may have been submitted by now: an equal share per stretch between two
        kills, spread over that stretch, so kills land while executions are in every stage."""
        n, kills = len(self.items), self.opts.kills
        if self.kills_done >= kills:
            return n
        share = 1.0
        if self.up.is_set():
            elapsed = time.monotonic() - self.window_began
            share = min(1.0, elapsed / self.delays[self.kills_done])
        return int(n * (self.kills_done + share) / (kills + 1))

    async def submit_all(self) -> None:
        deadline = time.monotonic() + self.opts.submit_timeout
        await asyncio.gather(*(self._submitter(deadline) for _ in range(SUBMIT_CONCURRENCY)))

    async def _submitter(self, deadline: float) -> None:
        while self.next_index < len(self.items):
            index = self.next_index
            self.next_index += 1
            while index >= self.allowance():  # noqa: ASYNC110 - it grows with the clock
                await asyncio.sleep(0.01)
            await self._submit(self.items[index], deadline)

    async def _submit(self, item: Tracked, deadline: float) -> None:
        path = f"{API}/workflows/{item.workflow_id}/executions"
        headers = {**JSON_HEADERS, "Idempotency-Key": item.key}
        while time.monotonic() < deadline:
            item.submit_attempts += 1
            answer = await self.call("POST", path, item.body, headers)
            if answer is None:
                await asyncio.sleep(0.05)
                continue
            status, doc = answer
            if 200 <= status < 300 and isinstance(doc, dict) and "execution_id" in doc:
                item.execution_id = str(doc["execution_id"])
                item.submit_status = status
                self.by_id[item.execution_id] = item
                return
            if status == 429 or status >= 500:
                self.counts[f"submit_{status}"] += 1
                await asyncio.sleep(0.1)
                continue
            item.seen.notes.append(f"submit of {item.key} answered {status}: {doc}")
            return

    async def replay_some(self) -> None:
        """After a restart, repeat a few acknowledged submits: a replay of an Idempotency-Key
        must answer what the first answer was, and make nothing new."""
        done = [t for t in self.items if t.execution_id is not None]
        for item in self.rng.sample(done, min(10, len(done))):
            answer = await self.call("POST", f"{API}/workflows/{item.workflow_id}/executions",
                                     item.body, {**JSON_HEADERS, "Idempotency-Key": item.key})
            if answer is None:
                continue
            self.counts["replays"] += 1
            status, doc = answer
            got = doc.get("execution_id") if isinstance(doc, dict) else None
            if (status, got) != (item.submit_status, item.execution_id):
                item.seen.notes.append(
                    f"replay of {item.key} answered {status} {got}, first {item.submit_status}"
                    f" {item.execution_id}")

    # ---- following, approving, acting as the external worker -------------------------------

    async def follow(self, stop: asyncio.Event) -> None:
        gate = asyncio.Semaphore(FOLLOW_CONCURRENCY)
        listed = 0.0
        while not stop.is_set():
            todo = [t for t in self.by_id.values() if not t.terminal]
            await asyncio.gather(*(self._follow_one(t, gate) for t in todo))
            if time.monotonic() - listed > 1.0:
                listed = time.monotonic()
                await self._approve_listed(listed)
            await asyncio.sleep(0.2)

    async def _follow_one(self, item: Tracked, gate: asyncio.Semaphore) -> None:
        assert item.execution_id is not None
        async with gate:
            answer = await self.call(
                "GET", f"{API}/executions/{item.execution_id}/events?after={item.after}"
                       "&limit=500")
            if answer is None:
                return
            status, doc = answer
            if status == 404:
                item.missing += 1
                return
            if status != 200 or not isinstance(doc, dict):
                return
            for event in doc.get("items", []):
                self._saw(item, event)
            await self._act(item)

    def _saw(self, item: Tracked, event: dict[str, Any]) -> None:
        seq = int(event.get("seq", 0))
        item.seen.events[seq] = signature(event)
        item.after = max(item.after, seq)
        self.moved_at = time.monotonic()
        kind = event.get("type")
        if kind == "approval_required":
            item.gate_seq = seq
        elif kind in ("approval_granted", "approval_rejected"):
            item.gate_seq = 0
        elif kind == "step_started" and isinstance(event.get("callback"), dict):
            item.callback = event["callback"]
        elif kind in TERMINAL_EVENTS:
            item.terminal = True

    async def _act(self, item: Tracked) -> None:
        if item.terminal:
            return
        if item.gate_seq and item.approved_seq != item.gate_seq:
            await self._approve(item)
        if item.callback is not None:
            await self._complete(item, item.callback)

    async def _approve(self, item: Tracked) -> None:
        item.last_approve = time.monotonic()
        answer = await self.call("POST", f"{API}/executions/{item.execution_id}/approve",
                                 b'{"comment": "chaos"}')
        if answer is None:
            return
        status, _ = answer
        self.counts[f"approve_{status}"] += 1
        if 200 <= status < 300:
            item.seen.approves_acked += 1
            item.approved_seq = item.gate_seq
        elif status == 409:
            # Not awaiting approval: an approve whose answer a kill cut off went through.
            item.approved_seq = item.gate_seq

    async def _approve_listed(self, asked: float) -> None:
        """A safety net under the events: approve what the service lists as awaiting approval
        and the driver has not tried for 2 s (a second 2xx then means the first did not hold)."""
        answer = await self.call("GET", f"{API}/executions?status=awaiting_approval&limit=500"
                                        f"&label=chaos:{self.opts.seed}")
        if answer is None or answer[0] != 200 or not isinstance(answer[1], dict):
            return
        for summary in answer[1].get("items", []):
            item = self.by_id.get(str(summary.get("execution_id")))
            if item is not None and not item.terminal and asked - item.last_approve > 2.0:
                await self._approve(item)

    async def _complete(self, item: Tracked, callback: dict[str, str]) -> None:
        token = callback["token"]
        headers = {**JSON_HEADERS, "X-Workflowd-Token": token}
        if token not in item.seen.completes_acked:
            # A worker reports progress, then finishes: both land on the same waiting step.
            await self.call("POST", _path(callback["progress_url"]),
                            b'{"percentage": 50, "message": "chaos worker"}', headers)
        output = {"worker": "chaos", "token": token}
        if output not in item.seen.outputs_sent:
            item.seen.outputs_sent.append(output)
        body = json.dumps({"success": True, "output": output}).encode()
        answer = await self.call("POST", _path(callback["complete_url"]), body,
                                 {**headers, "Idempotency-Key": f"chaos-complete-{token}"})
        if answer is None:
            return
        status, _ = answer
        self.counts[f"complete_{status}"] += 1
        if 200 <= status < 300:
            item.seen.completes_acked.add(token)
            item.callback = None
        elif status in (403, 409):
            item.callback = None  # answered already, or a later run of the step holds it

    async def drain(self, follower: asyncio.Task[None]) -> float:
        """Wait until every acknowledged execution is terminal, or the bounds; answer seconds."""
        began = time.monotonic()
        while time.monotonic() - began < self.opts.drain_timeout:
            if follower.done():
                follower.result()  # the follower died of a bug: say so
                raise RuntimeError("the follower stopped")
            if all(t.terminal for t in self.by_id.values()):
                break
            if time.monotonic() - self.moved_at > self.opts.stall_timeout:
                left = sum(not t.terminal for t in self.by_id.values())
                _log(f"no event for {self.opts.stall_timeout:.0f} s; {left} not terminal")
                break
            await asyncio.sleep(0.5)
        return time.monotonic() - began

    # ---- reading everything back -----------------------------------------------------------

    async def read_back(self, ids: list[str]) -> dict[str, ReadBack]:
        gate = asyncio.Semaphore(16)

        async def one(execution_id: str) -> tuple[str, ReadBack]:
            async with gate:
                return execution_id, await self._read_one(execution_id)

        return dict(await asyncio.gather(*(one(i) for i in ids)))

    async def _get(self, path: str) -> tuple[int, Any]:
        for _ in range(20):
            answer = await self.call("GET", path)
            if answer is not None:
                return answer
            await asyncio.sleep(0.2)
        raise RuntimeError(f"GET {path} failed 20 times")

    async def _read_one(self, execution_id: str) -> ReadBack:
        base = f"{API}/executions/{execution_id}"
        status, execution = await self._get(base)
        if status == 404:
            return ReadBack(None, [], [])
        if status != 200:
            raise RuntimeError(f"GET {base} answered {status}: {execution}")
        events: list[dict[str, Any]] = []
        while True:  # pages after the last seq read, not after a count: a gap must not hide
            after = int(events[-1]["seq"]) if events else 0
            _, page = await self._get(f"{base}/events?after={after}&limit=500")
            events.extend(page["items"])
            if len(page["items"]) < 500:
                break
        _, steps = await self._get(f"{base}/steps")
        _, live = await self._get(f"{base}/status/live")
        return ReadBack(execution, events, steps["items"], live.get("seq"))

    # ---- the run ----------------------------------------------------------------------------

    async def run(self) -> Run:
        began = time.monotonic()
        _log(f"{self.opts.executions} executions, {self.opts.kills} kills, seed "
             f"{self.opts.seed}; work directory {self.work}")
        await self.start()
        stop = asyncio.Event()
        follower = asyncio.create_task(self.follow(stop), name="chaos-follower")
        submitter = asyncio.create_task(self.submit_all(), name="chaos-submitter")
        try:
            await self.chaos()
            await submitter
            _log(f"last restart done; {len(self.by_id)} acknowledged; draining")
            drained = await self.drain(follower)
        finally:
            stop.set()
            submitter.cancel()
            await asyncio.gather(follower, submitter, return_exceptions=True)
        _log(f"drained in {drained:.1f} s; reading every execution back")
        lines, malformed = read_side(self.side)
        ids = sorted(set(self.by_id) | {ln.execution_id for ln in lines})
        async with asyncio.timeout(self.opts.read_timeout):
            back = await self.read_back(ids)
        assert self.svc is not None
        svc, self.svc = self.svc, None
        sigterm_rc, _ = await svc.stop(signal.SIGTERM, 30.0)
        return Run(back=back, lines=lines, malformed=malformed, store=read_store(self.db),
                   seconds=time.monotonic() - began, drain_seconds=drained,
                   sigterm_exit=sigterm_rc, server_errors=self.server_errors())

    def server_errors(self) -> dict[str, Any]:
        """Warnings and errors the services logged: how many of each event, and the first
        lines of each process that logged any."""
        events: Counter[str] = Counter()
        first: dict[str, list[str]] = {}
        for svc in self.services:
            try:
                text = svc.log.read_text(errors="replace")
            except OSError:
                continue
            bad = [ln for ln in text.splitlines()
                   if any(w in ln.lower() for w in ("error", "traceback", "exception"))
                   or _LOG_LINE.match(ln)]
            for ln in bad:
                match = _LOG_LINE.match(ln)
                if match:
                    events[match.group(1)] += 1
            if bad:
                first[svc.name] = bad[:20]
        return {"events": dict(events.most_common()), "processes": len(self.services),
                "first_lines": first}

def _path(url: str) -> str:
    """The path of a callback URL: the driver sends it to whichever service is up."""
    rest = url.split("://", 1)[-1]
    return rest[rest.index("/"):]
