"""Testing workflows without a server to run: the real service, in the test's own process.

    from workflowd.testing import WorkflowEnvironment
    from myapp.flows import audit

    async def test_audit_is_approved_and_completes() -> None:
        async with WorkflowEnvironment([audit]) as env:
            run = await env.start("audit-plan", {"areas": ["access"]})
            await env.wait_for(run, "awaiting_approval")
            await env.approve(run, "looks good")
            execution = await env.finished(run)
            assert execution.status == "completed"

`WorkflowEnvironment` builds the application `workflowd serve` runs (`create_app`: the same
engine, store, routes and checks) on a SQLite file of its own in a temporary directory, serves
it on a loopback port inside the process, and drives it through `workflowd.client`. So a
workflow behaves in a test exactly as in the service: each cycle committed, approvals, external
steps, cancels, and `restart()` to stop the service in the middle (optionally cutting off the
running step, as a crash would) and start it again on the same file.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from workflowd.answers import (
    Approved,
    Cancelled,
    Completion,
    Event,
    Execution,
    LiveStatus,
    LogLine,
    Rejected,
    StepRecord,
    Summary,
)
from workflowd.api import create_app
from workflowd.api.keys import SETTINGS
from workflowd.client import Client
from workflowd.config import Settings
from workflowd.definitions import Workflow

__all__ = ["Run", "WorkflowEnvironment"]

# An execution: its id, or what `start` answered.
Run = str | Summary
# Events of a step that end its run (a retry's next attempt starts a new one).
_RUN_ENDS = frozenset({"step_finished", "step_retrying"})


class WorkflowEnvironment:
    """The service in-process, on a store of its own, for tests of workflows.

    `workflows`: `Workflow` objects, or names of modules whose workflows register (as in
    `[workflows] modules`), loaded and checked when the service starts, as `workflowd serve`
    does (a duplicate id or a refused external url raises `DefinitionError`). `path`: a
    directory for the store (default: a temporary one, removed at the end). `settings`:
    sections of the configuration to change, as `{"engine": {"max_concurrent": 2}}`.
    """

    def __init__(self, workflows: Iterable[Workflow | str] = ("workflowd.examples",), *,
                 path: str | Path | None = None,
                 settings: dict[str, dict[str, Any]] | None = None,
                 timeout: float = 30.0) -> None:
        # Given to create_app, which loads and checks them as for `workflowd serve`.
        self._objects = [wf for wf in workflows if isinstance(wf, Workflow)]
        modules = [wf for wf in workflows if isinstance(wf, str)]
        self.timeout = timeout
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        if path is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="workflowd-test-")
            path = self._tmp.name
        data: dict[str, Any] = {"store": {"path": str(Path(path) / "workflowd.db")},
                                "workflows": {"modules": modules},
                                "engine": {"shutdown_grace": 1.0}}
        for section, values in (settings or {}).items():
            data[section] = {**data.get(section, {}), **values}
        self.settings = Settings.model_validate(data)
        self._server: TestServer | None = None
        self._client: Client | None = None

    # ---- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> WorkflowEnvironment:
        try:
            await self._start()
        except BaseException:
            await self.close()  # __aexit__ does not run: remove the temporary store here
            raise
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def _start(self, port: int | None = None) -> None:
        app = create_app(self.settings.model_copy(deep=True), self._objects)
        server = TestServer(app, port=port)
        # The runner takes shutdown_timeout (TestServer's constructor drops it): without it a
        # request in flight, such as a long-poll, holds a restart for up to 60 s.
        await server.start_server(shutdown_timeout=1.0)
        self._server = server
        url = str(server.make_url("")).rstrip("/")
        if self._client is None:
            self._client = Client(url, timeout=self.timeout, retry_for=self.timeout)
        else:
            self._client.url = url

    async def close(self) -> None:
        """Stop the service (it drains as on SIGTERM) and remove the temporary store."""
        if self._server is not None:
            await self._server.close()
            self._server = None
        if self._client is not None:
            await self._client.close()
            self._client = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    async def restart(self, *, grace: float | None = None) -> None:
        """Stop the service and start it again on the same store, as a restart would.

        Running cycles get `grace` seconds to finish (default `[engine] shutdown_grace`); one
        still running then is cut off without being written, as in a crash, and runs again
        after the restart from the last committed cycle. Executions waiting (an approval, an
        outside worker) wait on. Ids, events and the client stay valid across."""
        server = self._running()
        if grace is not None:
            server.app[SETTINGS].engine.shutdown_grace = grace
        port = server.port
        await server.close()
        self._server = None
        await self._start(port)

    def _running(self) -> TestServer:
        if self._server is None:
            raise RuntimeError("the environment is not running: use `async with`")
        return self._server

    @property
    def app(self) -> web.Application:
        """The running application (its engine is `app[SCHEDULER]`, its store `app[STORE]`)."""
        return self._running().app

    @property
    def client(self) -> Client:
        """A `workflowd.client.Client` of the service, for anything not wrapped here."""
        if self._client is None:
            raise RuntimeError("the environment is not running: use `async with`")
        return self._client

    @property
    def url(self) -> str:
        return self.client.url

    # ---- driving executions ----------------------------------------------------------------

    async def start(self, workflow_id: str, input: dict[str, Any] | None = None,
                    **options: Any) -> Summary:
        """Submit an execution (`priority=`, `labels=`, `require_approval=` as the API takes)."""
        return await self.client.start(workflow_id, input, **options)

    async def run(self, workflow_id: str, input: dict[str, Any] | None = None,
                  **options: Any) -> Execution:
        """Submit and wait for its end: the whole execution as it finished."""
        return await self.finished(await self.start(workflow_id, input, **options))

    async def wait_for(self, run: Run, *statuses: str,
                       timeout: float | None = None) -> LiveStatus:
        """Wait until the execution is in one of `statuses` (any terminal one when none is
        given); `AssertionError` when it finishes in another, `TimeoutError` past `timeout`."""
        execution_id = _id(run)
        # Client.wait rides out a `restart()` happening meanwhile (it retries the long-poll).
        status = await self.client.wait(execution_id, timeout or self.timeout,
                                        statuses=statuses)
        if statuses and status.status not in statuses:
            raise AssertionError(
                f"execution {execution_id} ended {status.status}, not "
                f"{' or '.join(statuses)}: {await self._why(execution_id)}")
        return status

    async def finished(self, run: Run, timeout: float | None = None) -> Execution:
        """Wait for the end (any terminal status) and answer the whole execution."""
        await self.wait_for(run, timeout=timeout)
        return await self.client.get(_id(run))

    async def wait_for_event(self, run: Run, event_type: str, *, step: str | None = None,
                             timeout: float | None = None) -> Event:
        """The first event of `event_type` (of `step`, if given), once it is committed."""
        async with asyncio.timeout(timeout or self.timeout):
            async for event in self.client.follow(_id(run)):
                if event.type == event_type and (step is None or event.get("step") == step):
                    return event
        raise AssertionError(f"execution {_id(run)} ended without a {event_type} event")

    async def approve(self, run: Run, comment: str | None = None) -> Approved:
        return await self.client.approve(_id(run), comment)

    async def reject(self, run: Run, reason: str | None = None) -> Rejected:
        return await self.client.reject(_id(run), reason)

    async def cancel(self, run: Run) -> Cancelled:
        return await self.client.cancel(_id(run))

    async def complete(self, run: Run, step: str, output: Any = None, *,
                       error: str | dict[str, str] | None = None) -> Completion:
        """Finish an external step as its worker would (waits until the step waits for one,
        and sends the token of that run's `step_started` event)."""
        started = await self._step_run(run, step)
        return await self.client.complete(_id(run), step, output, error=error,
                                          step_token=started["callback"]["token"])

    async def progress(self, run: Run, step: str, percentage: float, **report: Any) -> None:
        """Report progress of an external step as its worker would."""
        started = await self._step_run(run, step)
        await self.client.progress(_id(run), step, percentage,
                                   step_token=started["callback"]["token"], **report)

    async def _step_run(self, run: Run, step: str) -> Event:
        """The `step_started` of the run of `step` under way, waited for when none is. Not the
        first one: a step that runs again (a goto loop, a retry) has a new token each run."""
        execution_id = _id(run)
        async with asyncio.timeout(self.timeout):
            events = await self.client.all_events(execution_id)
            started = _open_run(events, step)
            if started is not None:
                return started
            async for event in self.client.follow(execution_id, events[-1].seq):
                if event.type == "step_started" and event.get("step") == step:
                    return event
        raise AssertionError(f"execution {execution_id} ended without running {step}")

    # ---- reading ---------------------------------------------------------------------------

    async def get(self, run: Run) -> Execution:
        return await self.client.get(_id(run))

    async def status(self, run: Run) -> LiveStatus:
        return await self.client.status(_id(run))

    async def events(self, run: Run) -> list[Event]:
        """Every committed event of the execution, in `seq` order."""
        return await self.client.all_events(_id(run))

    async def event_types(self, run: Run) -> list[str]:
        return [event.type for event in await self.events(run)]

    async def steps(self, run: Run) -> list[StepRecord]:
        return await self.client.steps(_id(run))

    async def logs(self, run: Run) -> list[LogLine]:
        return await self.client.all_logs(_id(run))

    async def _why(self, execution_id: str) -> str:
        execution = await self.client.get(execution_id)
        return repr(execution.error) if execution.error else "no error"


def _id(run: Run) -> str:
    return run if isinstance(run, str) else run.execution_id


def _open_run(events: list[Event], step: str) -> Event | None:
    """The latest `step_started` of `step` if no event after it ended that run."""
    for event in reversed(events):
        if event.get("step") != step:
            continue
        if event.type == "step_started":
            return event
        if event.type in _RUN_ENDS:
            return None
    return None
