"""`Client`: every route of the API from asyncio code, answers as typed objects
(`workflowd.answers`), problems raised as `ApiError`."""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import (
    AsyncIterator,
    Awaitable,
    Callable,
    Collection,
    Mapping,
    Sequence,
)
from datetime import datetime
from types import TracebackType
from typing import Any, Literal, TypeVar, overload
from urllib.parse import quote, urlsplit

import aiohttp
from pydantic import BaseModel, ConfigDict, ValidationError

from workflowd.answers import (
    Approved,
    Cancelled,
    Completion,
    Event,
    Execution,
    ExecutionItem,
    ExecutionStatus,
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
from workflowd.client._errors import ApiError, Unreachable

__all__ = ["DEFAULT_URL", "Client", "Snapshot"]

DEFAULT_URL = "http://127.0.0.1:8080"
API = "/api/v1"
M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")
P = TypeVar("P")  # the items of a page
# Seconds between reconnections of a follower or waiter, doubling up to the last.
_BACKOFF = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


class Snapshot(BaseModel):
    """The first message of an execution's WebSocket: its live status at `seq`."""

    model_config = ConfigDict(extra="allow", frozen=True)

    type: Literal["snapshot"]
    seq: int
    status: LiveStatus


class Client:
    """A client of one workflowd service.

        async with Client("http://127.0.0.1:8080", token=...) as wd:
            run = await wd.start("audit-plan", {"areas": ["access"]})
            async for event in wd.follow(run.execution_id):
                print(event.type)

    `token` is sent as `Authorization: Bearer` on every request. `timeout` bounds each request
    (long-polls get their wait on top). `retry_for` is how long `follow` and `wait` keep trying
    to reconnect to a server that went away (a restart) before they raise `Unreachable`.
    """

    def __init__(self, url: str = DEFAULT_URL, *, token: str | None = None,
                 timeout: float = 30.0, retry_for: float = 60.0,
                 session: aiohttp.ClientSession | None = None) -> None:
        self.url = _base_url(url)
        self.token = token
        self.timeout = timeout
        self.retry_for = retry_for
        self._session = session
        self._own_session = session is None

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None and self._own_session:
            await self._session.close()
        self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(headers=self._auth())
            self._own_session = True
        return self._session

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    # ---- workflows -------------------------------------------------------------------------

    async def workflows(self) -> list[WorkflowInfo]:
        """The registered workflows."""
        return (await self._get(f"{API}/workflows", Page[WorkflowInfo])).items

    async def workflow(self, workflow_id: str) -> WorkflowInfo:
        return await self._get(f"{API}/workflows/{_quote(workflow_id)}", WorkflowInfo)

    async def start(self, workflow_id: str, input: Mapping[str, Any] | None = None, *,
                    priority: int = 0, require_approval: bool = False,
                    labels: Mapping[str, str] | None = None, callback_url: str | None = None,
                    idempotency_key: str | None = None) -> Summary:
        """Submit an execution; answers once it is committed (`queued`, or
        `awaiting_approval` with `require_approval`)."""
        body: dict[str, Any] = {"input": dict(input or {}), "priority": priority,
                                "require_approval": require_approval,
                                "labels": dict(labels or {})}
        if callback_url is not None:
            body["callback_url"] = callback_url
        return await self._send("POST", f"{API}/workflows/{_quote(workflow_id)}/executions",
                                Summary, body, idempotency_key=idempotency_key)

    async def run(self, workflow_id: str, input: Mapping[str, Any] | None = None, *,
                  timeout: float | None = None, **options: Any) -> Execution:
        """Start an execution and wait for its end: the whole execution, as it finished."""
        summary = await self.start(workflow_id, input, **options)
        await self.wait(summary.execution_id, timeout)
        return await self.get(summary.execution_id)

    # ---- reading executions ----------------------------------------------------------------

    async def list_executions(self, *, workflow_id: str | None = None,
                              status: ExecutionStatus | None = None,
                              labels: Mapping[str, str] | None = None,
                              created_after: datetime | str | None = None,
                              created_before: datetime | str | None = None, limit: int = 50,
                              cursor: str | None = None) -> Page[ExecutionItem]:
        """One page of executions, newest first; `next_cursor` names the next."""
        params: list[tuple[str, str]] = [("limit", str(limit))]
        for name, value in (("workflow_id", workflow_id), ("status", status),
                            ("created_after", _ts(created_after)),
                            ("created_before", _ts(created_before)), ("cursor", cursor)):
            if value is not None:
                params.append((name, value))
        params.extend(("label", f"{k}:{v}") for k, v in (labels or {}).items())
        return await self._get(f"{API}/executions", Page[ExecutionItem], params)

    async def iter_executions(self, **filters: Any) -> AsyncIterator[ExecutionItem]:
        """Every execution the filters of `list_executions` select, page after page."""
        cursor = None
        while True:
            page = await self.list_executions(cursor=cursor, **filters)
            for item in page.items:
                yield item
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    async def get(self, execution_id: str) -> Execution:
        """The whole execution."""
        return await self._get(_path(execution_id), Execution)

    async def status(self, execution_id: str) -> LiveStatus:
        """The compact live status."""
        return await self._get(f"{_path(execution_id)}/status/live", LiveStatus)

    async def poll(self, execution_id: str, since: int, wait: float) -> LiveStatus | None:
        """Long-poll: the live status as soon as something after `since` is committed, or
        None when `wait` seconds pass first."""
        params = [("since", str(since)), ("wait", str(wait))]
        resp = await self._call("GET", f"{_path(execution_id)}/status/live", params=params,
                                extra_time=wait)
        if resp[0] == 304:
            return None
        return _parse(LiveStatus, resp[1])

    async def steps(self, execution_id: str) -> list[StepRecord]:
        """Step records in cycle order, then the declared steps not run."""
        return (await self._get(f"{_path(execution_id)}/steps", Page[StepRecord])).items

    async def trace(self, execution_id: str) -> Trace:
        return await self._get(f"{_path(execution_id)}/trace", Trace)

    async def events(self, execution_id: str, after: int = 0, limit: int = 100) -> Page[Event]:
        """Persisted events after seq `after`; `next_cursor` is the `after` of the next page."""
        return await self._get(f"{_path(execution_id)}/events", Page[Event],
                               [("after", str(after)), ("limit", str(limit))])

    async def all_events(self, execution_id: str, after: int = 0) -> list[Event]:
        """Every persisted event after seq `after`, reading page after page."""
        return await _every(functools.partial(self.events, execution_id), after)

    async def logs(self, execution_id: str, after: int = 0, limit: int = 100) -> Page[LogLine]:
        """Lines written by `ctx.log`; `next_cursor` is the `after` of the next page."""
        return await self._get(f"{_path(execution_id)}/logs", Page[LogLine],
                               [("after", str(after)), ("limit", str(limit))])

    async def all_logs(self, execution_id: str, after: int = 0) -> list[LogLine]:
        """Every log line after `after`, reading page after page."""
        return await _every(functools.partial(self.logs, execution_id), after)

    async def result(self, execution_id: str) -> Result:
        """The result or error of a finished execution (409 `ApiError` before it ends)."""
        return await self._get(f"{_path(execution_id)}/result", Result)

    # ---- deciding --------------------------------------------------------------------------

    async def approve(self, execution_id: str, comment: str | None = None, *,
                      idempotency_key: str | None = None) -> Approved:
        return await self._send("POST", f"{_path(execution_id)}/approve", Approved,
                                {"comment": comment}, idempotency_key=idempotency_key)

    async def reject(self, execution_id: str, reason: str | None = None, *,
                     idempotency_key: str | None = None) -> Rejected:
        return await self._send("POST", f"{_path(execution_id)}/reject", Rejected,
                                {"reason": reason}, idempotency_key=idempotency_key)

    async def cancel(self, execution_id: str, *,
                     idempotency_key: str | None = None) -> Cancelled:
        return await self._send("POST", f"{_path(execution_id)}/cancel", Cancelled, None,
                                idempotency_key=idempotency_key)

    # ---- an outside worker's side ------------------------------------------------------------

    async def progress(self, execution_id: str, step: str, percentage: float, *,
                       message: str | None = None, current_task: str | None = None,
                       estimated_remaining_seconds: float | None = None,
                       custom_data: Mapping[str, Any] | None = None,
                       step_token: str | None = None) -> ProgressAccepted:
        """Report progress of the step running or waited on (`step_token`: its
        `callback.token`; a `worker` bearer token does too)."""
        body = {"percentage": percentage, "message": message, "current_task": current_task,
                "estimated_remaining_seconds": estimated_remaining_seconds,
                "custom_data": dict(custom_data or {})}
        return await self._send("POST", f"{_path(execution_id)}/steps/{_quote(step)}/progress",
                                ProgressAccepted, body, step_token=step_token)

    async def complete(self, execution_id: str, step: str, output: Any = None, *,
                       error: str | Mapping[str, str] | None = None,
                       step_token: str | None = None,
                       idempotency_key: str | None = None) -> Completion:
        """Finish an external step: with its `output`, or failed with `error` (a message, or
        `{"code", "message"}`)."""
        body: dict[str, Any] = ({"success": True, "output": output} if error is None
                                else {"success": False, "error": error})
        return await self._send("POST", f"{_path(execution_id)}/steps/{_quote(step)}/complete",
                                Completion, body, step_token=step_token,
                                idempotency_key=idempotency_key)

    # ---- following -------------------------------------------------------------------------

    async def wait(self, execution_id: str, timeout: float | None = None, *,
                   statuses: Collection[str] = ()) -> LiveStatus:
        """Wait until the execution is finished, or in one of `statuses` if given, and answer
        its live status (a terminal one not among `statuses` means it ended otherwise);
        `TimeoutError` after `timeout` seconds (None: as long as it takes). Long-polls, and
        rides out a restart of the server (for `retry_for` seconds)."""
        # One status given as a plain string is that status, not its substrings.
        wanted = {statuses} if isinstance(statuses, str) else set(statuses)
        async with asyncio.timeout(timeout):
            status = await self._retrying(lambda: self.status(execution_id))
            while not (status.is_terminal or status.status in wanted):
                newer = await self._retrying(
                    functools.partial(self.poll, execution_id, status.seq, 30.0))
                if newer is not None:
                    status = newer
            return status

    @overload
    def follow(self, execution_id: str, after: int = 0, *,
               snapshots: Literal[False] = False) -> AsyncIterator[Event]: ...

    @overload
    def follow(self, execution_id: str, after: int = 0, *,
               snapshots: Literal[True]) -> AsyncIterator[Event | Snapshot]: ...

    @overload
    def follow(self, execution_id: str, after: int = 0, *,
               snapshots: bool) -> AsyncIterator[Event | Snapshot]: ...

    def follow(self, execution_id: str, after: int = 0, *,
               snapshots: bool = False) -> AsyncIterator[Any]:
        """The execution's events after seq `after`, over its WebSocket: those committed
        already, then live ones, in order, until the terminal event. A dropped connection
        (a restart, a follower that fell behind) is resumed with `after=` the last seq seen, so
        no event is missed or repeated. `snapshots=True` also yields the `Snapshot` sent at
        each (re)connection."""
        return self._follow(execution_id, after, snapshots)

    async def _follow(self, execution_id: str, after: int,
                      snapshots: bool) -> AsyncIterator[Event | Snapshot]:
        last = after
        failures = 0
        loop = asyncio.get_running_loop()
        failing_since: float | None = None
        while True:
            url = f"{self.url}{_path(execution_id)}/ws?after={last}"
            try:
                async with self.session.ws_connect(url, heartbeat=30.0, autoping=True) as ws:
                    failures, failing_since = 0, None
                    async for msg in ws:
                        if msg.type != aiohttp.WSMsgType.TEXT:
                            continue
                        message = _message(msg.data)
                        if isinstance(message, Snapshot):
                            if snapshots:
                                yield message
                            if message.status.is_terminal and last >= message.seq:
                                return
                            continue
                        event = message
                        if event.seq <= last:
                            continue  # already seen before a reconnection
                        last = event.seq
                        yield event
                        if event.is_terminal:
                            return
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                if isinstance(exc, aiohttp.WSServerHandshakeError) and 400 <= exc.status < 500:
                    await self.status(execution_id)  # raises the route's own problem (404)
                    raise ApiError(exc.status, "WebSocket refused", exc.message) from None
                failing_since = failing_since or loop.time()
                if loop.time() - failing_since > self.retry_for:
                    raise Unreachable(self.url, str(exc) or type(exc).__name__) from None
            # Closed or dropped before the end (a restart, 1013 for falling behind): resume.
            await asyncio.sleep(_BACKOFF[min(failures, len(_BACKOFF) - 1)])
            failures += 1

    async def _retrying(self, call: Callable[[], Awaitable[T]]) -> T:
        """`call()` again while the server cannot be reached, for `retry_for` seconds."""
        loop = asyncio.get_running_loop()
        began = loop.time()
        failures = 0
        while True:
            try:
                return await call()
            except Unreachable:
                if loop.time() - began > self.retry_for:
                    raise
            await asyncio.sleep(_BACKOFF[min(failures, len(_BACKOFF) - 1)])
            failures += 1

    # ---- the service -----------------------------------------------------------------------

    async def health(self) -> Health:
        return await self._get("/healthz", Health)

    async def ready(self) -> Health:
        """200 once the store is open and recovery has run; `ApiError` 503 before."""
        return await self._get("/readyz", Health)

    async def metrics(self) -> str:
        """The Prometheus text."""
        return (await self._call("GET", "/metrics"))[1].decode()

    async def openapi(self) -> dict[str, Any]:
        """The OpenAPI 3.1 document of the service."""
        doc: dict[str, Any] = json.loads((await self._call("GET", "/openapi.json"))[1])
        return doc

    # ---- plumbing --------------------------------------------------------------------------

    async def _get(self, path: str, model: type[M],
                   params: Sequence[tuple[str, str]] = ()) -> M:
        return _parse(model, (await self._call("GET", path, params=params))[1])

    async def _send(self, method: str, path: str, model: type[M], body: Any, *,
                    idempotency_key: str | None = None, step_token: str | None = None) -> M:
        headers = {"Content-Type": "application/json"}
        if idempotency_key is not None:
            headers["Idempotency-Key"] = idempotency_key
        if step_token is not None:
            headers["X-Workflowd-Token"] = step_token
        data = json.dumps(body).encode() if body is not None else b""
        return _parse(model, (await self._call(method, path, data=data, headers=headers))[1])

    async def request(self, method: str, path: str, *, params: Sequence[tuple[str, str]] = (),
                      json_body: Any = None) -> tuple[int, bytes]:
        """Any route, as it answers: `(status, body)`; a problem is raised as `ApiError`."""
        data = json.dumps(json_body).encode() if json_body is not None else None
        headers = {"Content-Type": "application/json"} if data is not None else None
        return await self._call(method, path, params=params, data=data, headers=headers)

    async def _call(self, method: str, path: str, *, params: Sequence[tuple[str, str]] = (),
                    data: bytes | None = None, headers: Mapping[str, str] | None = None,
                    extra_time: float = 0.0) -> tuple[int, bytes]:
        timeout = aiohttp.ClientTimeout(total=self.timeout + extra_time)
        try:
            async with self.session.request(method, self.url + path, params=list(params),
                                            data=data, headers=headers,
                                            timeout=timeout) as resp:
                body = await resp.read()
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, OSError,
                TimeoutError) as exc:
            raise Unreachable(self.url, str(exc) or type(exc).__name__) from None
        if resp.status >= 400:
            raise ApiError.from_answer(resp.status, resp.reason or "", body, resp.headers)
        return resp.status, body


def _base_url(url: str) -> str:
    """The service's address without a trailing slash; `ValueError` for one that is not an
    http(s) URL with a host (before any request, which would fail with less to say)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises for a port that is not a number
    except ValueError as exc:
        raise ValueError(f"{url!r} is not a URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url!r} is not an http:// or https:// URL with a host")
    return url.rstrip("/")


def _parse(model: type[M], body: bytes) -> M:
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:  # a 2xx of something else (a proxy, another service)
        raise ApiError(502, "Not a workflowd answer",
                       f"the answer is not a {model.__name__}: {exc.errors()[0]['msg']}",
                       ) from None


def _message(text: str) -> Snapshot | Event:
    """A message of an execution's WebSocket: its snapshot, or an event; `ApiError` 502 for
    one that is neither (another service, a proxy), as for an answer that is not ours."""
    try:
        data = json.loads(text)
        if isinstance(data, dict) and data.get("type") == "snapshot":
            return Snapshot.model_validate(data)
        return Event.model_validate(data)
    except ValueError as exc:  # not JSON, or not the shape (pydantic's error is one too)
        detail = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
        raise ApiError(502, "Not a workflowd answer",
                       f"a WebSocket message is not a snapshot or an event: {detail}") from None


def _path(execution_id: str) -> str:
    return f"{API}/executions/{_quote(execution_id)}"


def _quote(segment: str) -> str:
    return quote(segment, safe="")


def _ts(value: datetime | str | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return value.isoformat()


async def _every(page_of: Callable[[int, int], Awaitable[Page[P]]], after: int) -> list[P]:
    """The items of every page from `after` on (500 a page, the contract's most), following
    `next_cursor`, the `after` of the next page."""
    items: list[P] = []
    while True:
        page = await page_of(after, 500)
        items.extend(page.items)
        if page.next_cursor is None:
            return items
        after = int(page.next_cursor)
