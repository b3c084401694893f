"""A stateful property test: random interleavings of every request, timer and restart, driven
through the HTTP API of the real app on a real SQLite file, with the invariants of API.md §2-§4
checked after each step (issue 8 §6).

Hypothesis drives synchronous rules, so each example runs its own event loop and every rule
runs one coroutine on it. `HYPOTHESIS_PROFILE=long` runs many more examples (locally).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import tempfile
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    rule,
    run_state_machine_as_test,
)

from tests import workflows
from tests.helpers import API, file_locked
from workflowd.api import create_app
from workflowd.config import Settings
from workflowd.records import TERMINAL, TERMINAL_EVENTS
from workflowd.store import store as store_module

R = TypeVar("R")
Client = TestClient[Any, Any]

PROFILES = {
    "ci": settings(max_examples=15, stateful_step_count=25, deadline=None,
                   suppress_health_check=[HealthCheck.too_slow]),
    "long": settings(max_examples=300, stateful_step_count=30, deadline=None,
                     suppress_health_check=[HealthCheck.too_slow]),
}
PROFILE = PROFILES[os.environ.get("HYPOTHESIS_PROFILE", "ci")]

# Workflows submitted, by what makes them settle (stop changing without the test's help).
QUICK = ("three-steps", "flaky")  # run to their end
GATED = ("gated",)  # stop at a gate
EXTERNAL = ("external-job",)  # stop at the outside worker's step `work`
BLOCKED = {"waiter": "recorded", "service-call": "hand_off"}  # stop in a step until released
TIMED = ("gate-short", "external-short", "step-timeout")  # end by a timer

# Submitted with `require_approval` now and then (a decision before the first step).
APPROVAL = st.sampled_from((False, False, False, True))
RULE_BOUND = 30.0  # seconds a rule may take before it counts as a hang
SETTLE_BOUND = 10.0


@dataclass
class Known:
    """What the test knows of one execution it submitted."""

    execution_id: str
    workflow: str
    name: str  # the key of its release event and of what its steps record
    percentage: float = 0.0
    final: tuple[Any, list[Any]] | None = None  # record and events, once terminal


class Lifecycle(RuleBasedStateMachine):
    executions = Bundle("executions")
    externals = Bundle("externals")  # of `external-job`
    blocked = Bundle("blocked")  # in a step until the test releases it
    timed = Bundle("timed")  # ended by a timer

    def __init__(self) -> None:
        super().__init__()
        workflows.RELEASES.clear()
        workflows.STARTED.clear()
        workflows.SEEN.clear()
        self.loop = asyncio.new_event_loop()
        self.dir = Path(tempfile.mkdtemp(prefix="workflowd-property-"))
        self.settings = Settings.model_validate({
            "store": {"path": str(self.dir / "workflowd.db")},
            "workflows": {"modules": ["workflowd.examples", "tests.workflows"]},
            "engine": {"max_concurrent": 50, "shutdown_grace": 0.1, "cancel_grace": 1.0},
            "live": {"progress_interval": 0.0},
            "logging": {"level": "warning"},
        })
        self.known: dict[str, Known] = {}
        self.names = itertools.count()
        self.client: Client | None = None
        self.client = self.run(self._open())

    # ---- plumbing ----------------------------------------------------------------------------

    def run(self, coro: Coroutine[Any, Any, R]) -> R:
        async def bounded() -> R:
            async with asyncio.timeout(RULE_BOUND):
                return await coro

        return self.loop.run_until_complete(bounded())

    async def _open(self) -> Client:
        client: Client = TestClient(TestServer(create_app(self.settings)))
        await client.start_server()
        return client

    def teardown(self) -> None:
        try:
            if self.client is not None:
                self.run(self._quiescent())
        finally:
            try:
                if self.client is not None:
                    self.run(self.client.close())
                self.loop.run_until_complete(self.loop.shutdown_asyncgens())
                self.loop.run_until_complete(self.loop.shutdown_default_executor())
            finally:
                self.loop.close()
                shutil.rmtree(self.dir, ignore_errors=True)
                workflows.RELEASES.clear()
                workflows.SEEN.clear()

    @property
    def http(self) -> Client:
        assert self.client is not None
        return self.client

    async def _json(self, path: str) -> Any:
        resp = await self.http.get(path)
        assert resp.status == 200, (path, resp.status, await resp.text())
        return await resp.json()

    async def _post(self, path: str, body: Any, *, refused: bool = False,
                    token: str | None = None) -> int:
        headers = {"X-Workflowd-Token": token} if token is not None else {}
        resp = await self.http.post(path, json=body, headers=headers)
        text = await resp.text()
        if refused and resp.status == 503:  # the store refused: say so, and why
            assert "store_unavailable" in text, text
        else:
            assert resp.status < 500, (path, resp.status, text)
        if resp.status >= 400:
            assert resp.content_type == "application/problem+json", (path, text)
        return resp.status

    async def _live(self, execution_id: str) -> dict[str, Any]:
        data: dict[str, Any] = await self._json(f"{API}/executions/{execution_id}/status/live")
        return data

    def _released(self, known: Known) -> bool:
        event = workflows.RELEASES.get(known.name)
        return event is not None and event.is_set()

    def _stable(self, known: Known, live: dict[str, Any]) -> bool:
        """Whether the execution stopped changing until the test (or a timer) acts on it."""
        status = live["status"]
        if status in TERMINAL or status == "awaiting_approval":
            return True
        if status != "running":
            return False  # queued: 50 slots, so it must start
        step = (live["current_step"] or {}).get("name")
        if known.workflow in EXTERNAL:
            return step == "work"
        blocked_in = BLOCKED.get(known.workflow)
        if blocked_in is not None and step == blocked_in and not self._released(known):
            return known.name in workflows.STARTED or known.name in workflows.SEEN
        return False

    async def _settle(self) -> None:
        """Wait (bounded) until every execution is stable: nothing the engine can run is left."""
        try:
            async with asyncio.timeout(SETTLE_BOUND):
                for known in list(self.known.values()):
                    while not self._stable(known, live := await self._live(known.execution_id)):
                        await self.http.get(
                            f"{API}/executions/{known.execution_id}/status/live",
                            params={"since": str(live["seq"]), "wait": "0.5"})
        except TimeoutError:
            stuck = {k.execution_id: (k.workflow, await self._live(k.execution_id))
                     for k in self.known.values()
                     if not self._stable(k, await self._live(k.execution_id))}
            raise AssertionError(f"executions that never settled: {stuck}") from None

    async def _metric(self, name: str) -> float:
        text = await (await self.http.get("/metrics")).text()
        line = next(line for line in text.splitlines() if line.startswith(f"{name} "))
        return float(line.split()[1])

    async def _quiescent(self) -> None:
        """Once settled: a task runs exactly for each execution blocked in a step, nothing is
        queued, every `running` one is in a step, every waiting one at a gate or a worker."""
        await self._settle()
        blocked = 0
        for known in self.known.values():
            live = await self._live(known.execution_id)
            status = live["status"]
            assert status != "queued", (known, live)
            if status == "running":
                assert live["current_step"] is not None, (known, live)
                blocked += known.workflow in BLOCKED
            if status == "awaiting_approval":
                record = await self._json(f"{API}/executions/{known.execution_id}")
                assert record["approval"]["status"] == "pending", record
                step = live["current_step"]
                assert step is None or step["kind"] == "approval", live
        async with asyncio.timeout(5):  # a task that just ended is reaped on the next turns
            while (await self._metric("workflowd_executions_running"), await self._metric(
                    "workflowd_executions_queued")) != (blocked, 0):
                await asyncio.sleep(0.01)

    # ---- the invariants --------------------------------------------------------------------

    async def _check(self, known: Known) -> None:
        execution_id = known.execution_id
        # Read a moment when nothing changed between the reads. The events table may be a
        # commit ahead of the record in memory for a moment (the writer's thread commits,
        # then tells the loop): the record must catch up, and soon.
        for _ in range(50):
            before = await self._live(execution_id)
            record = await self._json(f"{API}/executions/{execution_id}")
            items = (await self._json(f"{API}/executions/{execution_id}/events?limit=500"))[
                "items"]
            after = await self._live(execution_id)
            if before == after and after["seq"] == len(items):
                break
        else:
            # A timer keeps changing it (looked at again after the next rule), or the record
            # and its events disagree for good.
            assert before != after, ("the record's seq never met its events", known, after,
                                     items[-3:])
            return
        seqs = [e["seq"] for e in items]
        assert seqs == list(range(1, len(items) + 1)), (known, seqs)
        for key in ("status", "cycle", "progress", "current_step"):
            assert after[key] == record[key], (key, after, record)
        terminal = [e["type"] for e in items if e["type"] in TERMINAL_EVENTS]
        status = record["status"]
        pct = record["progress"]["percentage"]
        assert pct >= known.percentage, (known, record)
        known.percentage = pct
        assert (pct == 100) == (status == "completed"), record
        if status in TERMINAL:
            assert terminal == [f"workflow_{status}"], (known, terminal)
            assert items[-1]["type"] == terminal[0], items[-3:]
            assert record["finished_at"] is not None
            if known.final is None:
                known.final = (record, items)
            else:
                assert (record, items) == known.final, "a terminal execution changed"
        else:
            assert terminal == [], (known, terminal)
            assert known.final is None, "a terminal execution came back"

    @invariant()
    def invariants_hold(self) -> None:
        async def check_all() -> None:
            for known in self.known.values():
                await self._check(known)
            await self._quiescent()

        self.run(check_all())

    # ---- the rules -------------------------------------------------------------------------

    def _submit(self, workflow: str, require_approval: bool, fail_times: int) -> str:
        name = f"n{next(self.names)}"

        async def go() -> str:
            body = {"input": {"name": name, "fail_times": fail_times},
                    "require_approval": require_approval}
            resp = await self.http.post(f"{API}/workflows/{workflow}/executions", json=body)
            assert resp.status == (201 if require_approval else 202), await resp.text()
            execution_id: str = (await resp.json())["execution_id"]
            self.known[execution_id] = Known(execution_id, workflow, name)
            await self._settle()
            return execution_id

        return self.run(go())

    @rule(target=executions, workflow=st.sampled_from((*QUICK, *GATED)),
          require_approval=APPROVAL, fail_times=st.integers(0, 3))
    def submit(self, workflow: str, require_approval: bool, fail_times: int) -> str:
        return self._submit(workflow, require_approval, fail_times)

    @rule(targets=(executions, externals), require_approval=APPROVAL)
    def submit_external(self, require_approval: bool) -> str:
        return self._submit("external-job", require_approval, 0)

    @rule(targets=(executions, blocked), workflow=st.sampled_from(sorted(BLOCKED)),
          require_approval=APPROVAL)
    def submit_blocked(self, workflow: str, require_approval: bool) -> str:
        return self._submit(workflow, require_approval, 0)

    @rule(targets=(executions, timed), workflow=st.sampled_from(TIMED),
          require_approval=APPROVAL)
    def submit_timed(self, workflow: str, require_approval: bool) -> str:
        return self._submit(workflow, require_approval, 0)

    def _decide(self, execution_id: str, action: str, body: dict[str, Any],
                ok: int) -> None:
        known = self.known[execution_id]

        async def go() -> None:
            was = (await self._live(execution_id))["status"]
            status = await self._post(f"{API}/executions/{execution_id}/{action}", body)
            if was in TERMINAL:
                assert status == 409, (action, was, status)
            elif was == "awaiting_approval" and known.workflow not in TIMED:
                assert status == ok, (action, was, status)
            else:
                assert status in (ok, 409), (action, was, status)
            await self._settle()

        self.run(go())

    @rule(execution=executions)
    def approve(self, execution: str) -> None:
        self._decide(execution, "approve", {"comment": "fine"}, 202)

    @rule(execution=executions)
    def reject(self, execution: str) -> None:
        self._decide(execution, "reject", {"reason": "no"}, 200)

    @rule(execution=executions)
    def cancel(self, execution: str) -> None:
        known = self.known[execution]

        async def go() -> None:
            was = (await self._live(execution))["status"]
            status = await self._post(f"{API}/executions/{execution}/cancel", {})
            if was in TERMINAL:
                assert status == 409
            elif known.workflow not in TIMED:
                assert status == 202, (was, status)
            if status == 202:
                assert (await self._live(execution))["status"] == "cancelled"
            await self._settle()

        self.run(go())

    @rule(execution=executions)
    def approve_and_cancel_at_once(self, execution: str) -> None:
        """Two callers decide at once: one order wins, nothing breaks."""

        async def go() -> None:
            approve, cancel = await asyncio.gather(
                self._post(f"{API}/executions/{execution}/approve", {}),
                self._post(f"{API}/executions/{execution}/cancel", {}))
            assert approve in (202, 409)
            assert cancel in (202, 409)
            await self._settle()

        self.run(go())

    @rule(execution=blocked)
    def release(self, execution: str) -> None:
        """The step that awaits the test goes on."""
        known = self.known[execution]

        async def go() -> None:
            workflows.release(known.name).set()
            await self._settle()

        self.run(go())

    @rule(execution=blocked, percentage=st.integers(0, 100), wrong_token=st.booleans())
    def service_progress(self, execution: str, percentage: int, wrong_token: bool) -> None:
        """Another service reports progress of an in-process step through `ctx.callback`."""
        known = self.known[execution]
        callback = workflows.SEEN.get(known.name)
        if known.workflow != "service-call" or not isinstance(callback, dict):
            return

        async def go() -> None:
            live = await self._live(execution)
            token = "wrong" if wrong_token else callback["token"]
            path = f"{API}/executions/{execution}/steps/hand_off/progress"
            status = await self._post(path, {"percentage": percentage, "message": "remote"},
                                      token=token)
            in_step = live["status"] == "running" and not self._released(known)
            if in_step:
                assert status == (403 if wrong_token else 202), (live, status)
            else:
                assert status in (403, 409), (live, status)
            await self._settle()

        self.run(go())

    async def _callback(self, known: Known) -> dict[str, str] | None:
        """The callback of the external step `work` now waited on, if it is."""
        live = await self._live(known.execution_id)
        if live["status"] != "running" or (live["current_step"] or {}).get("name") != "work":
            return None
        items = (await self._json(f"{API}/executions/{known.execution_id}/events?limit=500"))[
            "items"]
        started = [e for e in items if e["type"] == "step_started" and e["step"] == "work"]
        callback: dict[str, str] = started[-1]["callback"]
        return callback

    @rule(execution=externals, percentage=st.integers(0, 100), then_complete=st.booleans(),
          success=st.booleans())
    def external_progress(self, execution: str, percentage: int, then_complete: bool,
                          success: bool) -> None:
        """The outside worker reports progress, and maybe completes right after it."""
        known = self.known[execution]
        if known.workflow not in EXTERNAL:
            return

        async def go() -> None:
            callback = await self._callback(known)
            base = f"{API}/executions/{execution}/steps/work"
            token = callback["token"] if callback else "none"
            status = await self._post(f"{base}/progress", {"percentage": percentage},
                                      token=token)
            assert status == (202 if callback else 409), (callback, status)
            if then_complete:
                await self._complete(known, callback, success)
            await self._settle()

        self.run(go())

    async def _complete(self, known: Known, callback: dict[str, str] | None,
                        success: bool) -> None:
        body: dict[str, Any] = ({"success": True, "output": {"rows": 1}} if success else
                                {"success": False, "error": {"code": "broken",
                                                             "message": "the worker failed"}})
        token = callback["token"] if callback else "none"
        status = await self._post(f"{API}/executions/{known.execution_id}/steps/work/complete",
                                  body, token=token)
        assert status == (202 if callback else 409), (callback, status)
        if callback is not None and not success:
            live = await self._live(known.execution_id)
            assert live["status"] == "failed", live

    @rule(execution=externals, success=st.booleans())
    def external_complete(self, execution: str, success: bool) -> None:
        known = self.known[execution]
        if known.workflow not in EXTERNAL:
            return

        async def go() -> None:
            await self._complete(known, await self._callback(known), success)
            await self._settle()

        self.run(go())

    @rule(execution=externals)
    def external_wrong_token(self, execution: str) -> None:
        """A worker with a wrong token is refused (403) and changes nothing."""
        known = self.known[execution]
        if known.workflow not in EXTERNAL:
            return

        async def go() -> None:
            callback = await self._callback(known)
            before = await self._live(execution)
            status = await self._post(
                f"{API}/executions/{execution}/steps/work/complete",
                {"success": True, "output": {}}, token="not-the-token")
            assert status == (403 if callback else 409), (callback, status)
            assert await self._live(execution) == before

        self.run(go())

    @rule(execution=timed)
    def expire(self, execution: str) -> None:
        """Let a short timeout pass: wait for the end its timer brings (bounded)."""
        known = self.known[execution]
        if known.workflow not in TIMED:
            return

        async def go() -> None:
            live = await self._live(execution)
            while live["status"] not in TERMINAL:
                if live["status"] == "awaiting_approval" and live["current_step"] is None:
                    return  # the submission approval has no timer: the execution has no deadline
                resp = await self.http.get(f"{API}/executions/{execution}/status/live",
                                           params={"since": str(live["seq"]), "wait": "2"})
                if resp.status == 200:
                    live = await resp.json()
            assert live["status"] in ("timed_out", "failed", "cancelled", "rejected",
                                      "completed"), live

        self.run(go())

    @rule(execution=executions,
          action=st.sampled_from(("approve", "reject", "cancel", "submit", "release")))
    def while_the_store_refuses(self, execution: str, action: str) -> None:
        """Another program holds the file's write lock meanwhile: a request answers 503 and
        changes nothing (or 409, as it would anyway); a released step's commit waits."""
        known = self.known[execution]

        async def go() -> None:
            before = await self._live(execution)
            with file_locked(self.settings.store.path):
                if action == "release":
                    workflows.release(known.name).set()
                    status = 0
                elif action == "submit":
                    status = await self._post(f"{API}/workflows/three-steps/executions", {},
                                              refused=True)
                    assert status == 503, status
                else:
                    body = {"comment": "x"} if action == "approve" else {}
                    status = await self._post(f"{API}/executions/{execution}/{action}", body,
                                              refused=True)
                    assert status in (503, 409), (action, before, status)
                if status == 503 and action != "submit":
                    after = await self._live(execution)
                    assert (after["status"], after["seq"]) == (before["status"], before["seq"])
            await self._settle()

        self.run(go())

    @rule()
    def restart(self) -> None:
        """Close the app (a drain), open a new one on the same file."""

        async def go() -> None:
            await self.http.close()
            self.client = None
            workflows.STARTED.clear()
            workflows.SEEN.clear()  # tokens of in-process steps do not outlive the process
            self.client = await self._open()
            await self._settle()

        self.run(go())


@pytest.mark.timeout(3600 if os.environ.get("HYPOTHESIS_PROFILE") == "long" else 300)
def test_lifecycle_invariants_hold_under_any_interleaving(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Submit, decide, cancel, report, complete, expire, refuse writes and restart in any order:
    seq gap-free and equal to the stored events, one terminal event last, terminal never
    changes, live status equals the record, at rest no task-less `running` nor orphaned wait."""
    pragmas = store_module._pragmas

    def quick(synchronous: str) -> tuple[str, ...]:
        # A locked file is refused after 50 ms instead of 1 s: the same path, sooner.
        return tuple(p.replace("busy_timeout = 1000", "busy_timeout = 50")
                     for p in pragmas(synchronous))

    monkeypatch.setattr(store_module, "_pragmas", quick)
    run_state_machine_as_test(Lifecycle, settings=PROFILE)
