"""`SyncClient`: the same operations for scripts and blocking code.

It runs a `Client` on an event loop of its own, in a daemon thread, and waits for each call:
so it works the same from a plain script, a REPL, a Jupyter cell or a test whose thread already
runs a loop (which `asyncio.run` per call would refuse).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Collection, Coroutine, Iterator, Mapping
from types import TracebackType
from typing import Any, Literal, TypeVar, overload

from workflowd.answers import (
    Approved,
    Cancelled,
    Completion,
    Event,
    Execution,
    ExecutionItem,
    Health,
    LiveStatus,
    LogLine,
    Page,
    ProgressAccepted,
    Rejected,
    Result,
    StepRecord,
    Summary,
    Trace,
    WorkflowInfo,
)
from workflowd.client._async import DEFAULT_URL, Client, Snapshot

__all__ = ["SyncClient"]

T = TypeVar("T")


class SyncClient:
    """A blocking client: `SyncClient(url, token=...)` takes the arguments of `Client`, and
    each method answers what the `Client` method of the same name does.

        with SyncClient() as wd:
            run = wd.start("audit-plan", {"areas": ["access"]})
            for event in wd.follow(run.execution_id):
                print(event.seq, event.type)
    """

    def __init__(self, url: str = DEFAULT_URL, **options: Any) -> None:
        self.client = Client(url, **options)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections and stop the client's thread (it may be used again after)."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return
        asyncio.run_coroutine_threadsafe(self.client.close(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.close()

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(target=self._loop.run_forever,
                                                name="workflowd-client", daemon=True)
                self._thread.start()
            loop = self._loop
        future = asyncio.run_coroutine_threadsafe(coro, loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()  # Ctrl-C in the caller: stop the call too
            raise

    def _iterate(self, items: AsyncIterator[T]) -> Iterator[T]:
        async def step() -> tuple[bool, T | None]:
            try:
                return True, await anext(items)
            except StopAsyncIteration:
                return False, None

        try:
            while True:
                more, item = self._run(step())
                if not more:
                    return
                yield item  # type: ignore[misc]
        finally:
            aclose = getattr(items, "aclose", None)
            if aclose is not None and self._loop is not None:
                self._run(aclose())

    # ---- the operations (see `Client` for each) ---------------------------------------------

    def workflows(self) -> list[WorkflowInfo]:
        return self._run(self.client.workflows())

    def workflow(self, workflow_id: str) -> WorkflowInfo:
        return self._run(self.client.workflow(workflow_id))

    def start(self, workflow_id: str, input: Mapping[str, Any] | None = None,
              **options: Any) -> Summary:
        return self._run(self.client.start(workflow_id, input, **options))

    def run(self, workflow_id: str, input: Mapping[str, Any] | None = None, *,
            timeout: float | None = None, **options: Any) -> Execution:
        return self._run(self.client.run(workflow_id, input, timeout=timeout, **options))

    def list_executions(self, **filters: Any) -> Page[ExecutionItem]:
        return self._run(self.client.list_executions(**filters))

    def iter_executions(self, **filters: Any) -> Iterator[ExecutionItem]:
        return self._iterate(self.client.iter_executions(**filters))

    def get(self, execution_id: str) -> Execution:
        return self._run(self.client.get(execution_id))

    def status(self, execution_id: str) -> LiveStatus:
        return self._run(self.client.status(execution_id))

    def poll(self, execution_id: str, since: int, wait: float) -> LiveStatus | None:
        return self._run(self.client.poll(execution_id, since, wait))

    def steps(self, execution_id: str) -> list[StepRecord]:
        return self._run(self.client.steps(execution_id))

    def trace(self, execution_id: str) -> Trace:
        return self._run(self.client.trace(execution_id))

    def events(self, execution_id: str, after: int = 0, limit: int = 100) -> Page[Event]:
        return self._run(self.client.events(execution_id, after, limit))

    def all_events(self, execution_id: str, after: int = 0) -> list[Event]:
        return self._run(self.client.all_events(execution_id, after))

    def logs(self, execution_id: str, after: int = 0, limit: int = 100) -> Page[LogLine]:
        return self._run(self.client.logs(execution_id, after, limit))

    def result(self, execution_id: str) -> Result:
        return self._run(self.client.result(execution_id))

    def approve(self, execution_id: str, comment: str | None = None, **options: Any,
                ) -> Approved:
        return self._run(self.client.approve(execution_id, comment, **options))

    def reject(self, execution_id: str, reason: str | None = None, **options: Any) -> Rejected:
        return self._run(self.client.reject(execution_id, reason, **options))

    def cancel(self, execution_id: str, **options: Any) -> Cancelled:
        return self._run(self.client.cancel(execution_id, **options))

    def progress(self, execution_id: str, step: str, percentage: float,
                 **options: Any) -> ProgressAccepted:
        return self._run(self.client.progress(execution_id, step, percentage, **options))

    def complete(self, execution_id: str, step: str, output: Any = None,
                 **options: Any) -> Completion:
        return self._run(self.client.complete(execution_id, step, output, **options))

    def wait(self, execution_id: str, timeout: float | None = None, *,
             statuses: Collection[str] = ()) -> LiveStatus:
        return self._run(self.client.wait(execution_id, timeout, statuses=statuses))

    @overload
    def follow(self, execution_id: str, after: int = 0, *,
               snapshots: Literal[False] = False) -> Iterator[Event]: ...

    @overload
    def follow(self, execution_id: str, after: int = 0, *,
               snapshots: Literal[True]) -> Iterator[Event | Snapshot]: ...

    @overload
    def follow(self, execution_id: str, after: int = 0, *,
               snapshots: bool) -> Iterator[Event | Snapshot]: ...

    def follow(self, execution_id: str, after: int = 0, *,
               snapshots: bool = False) -> Iterator[Any]:
        return self._iterate(self.client.follow(execution_id, after, snapshots=snapshots))

    def health(self) -> Health:
        return self._run(self.client.health())

    def ready(self) -> Health:
        return self._run(self.client.ready())

    def metrics(self) -> str:
        return self._run(self.client.metrics())

    def openapi(self) -> dict[str, Any]:
        return self._run(self.client.openapi())

    def request(self, method: str, path: str, **options: Any) -> tuple[int, bytes]:
        return self._run(self.client.request(method, path, **options))
