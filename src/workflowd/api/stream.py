"""Live events: WebSocket per execution, server-sent events, and a WebSocket of all executions."""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator

import structlog
from aiohttp import WSCloseCode, WSMsgType, web
from pydantic import BaseModel, ConfigDict, Field

from workflowd.answers import Problem
from workflowd.api.keys import HUB, METRICS, SCHEDULER, SETTINGS, SOCKETS, STREAMS
from workflowd.api.parsing import SQL_INT_MAX, parse_query, sql_int
from workflowd.api.routing import Routes
from workflowd.api.views import live_status
from workflowd.codec import dumps
from workflowd.engine.follow import Follow, Lagging, Streamed
from workflowd.errors import BadRequestError
from workflowd.records import API_PREFIX, Event, ExecutionRecord

__all__ = ["close_sockets", "routes"]

log = structlog.get_logger("workflowd.stream")
routes = Routes()
LAGGING = "fell behind: resume with after=SEQ"


class FollowQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")
    after: int | None = Field(default=None, ge=0, le=SQL_INT_MAX)


class AllQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")
    workflow_id: str | None = None
    type: list[str] = Field(default_factory=list)


def _socket(heartbeat: float) -> web.WebSocketResponse:
    # No permessage-deflate, which browsers offer: events are small, and a compressor per
    # follower would make fan-out to many followers cost a compression each.
    return web.WebSocketResponse(heartbeat=heartbeat, compress=False)


def _close(ws: web.WebSocketResponse, code: int, message: str = "") -> asyncio.Future[None]:
    """Close with `code`, once: the first caller's code wins, later callers wait for that close."""
    closing = _CLOSINGS.get(ws)
    if closing is None:
        closing = _CLOSINGS[ws] = asyncio.ensure_future(_close_now(ws, code, message))
    return asyncio.shield(closing)


async def _close_now(ws: web.WebSocketResponse, code: int, message: str) -> None:
    """Close with `code`; a peer that does not read gets its connection dropped after 2 s."""
    reader = _READERS.pop(ws, None)
    if reader is not None and reader is not asyncio.current_task():
        # With a receive() pending in another task, aiohttp's close() drops the connection
        # without waiting for the peer's close frame: stop the reader first.
        reader.cancel()
        await asyncio.wait({reader})
    try:
        async with asyncio.timeout(2.0):
            await ws.close(code=code, message=message.encode())
    except (TimeoutError, ConnectionError):
        transport = _TRANSPORTS.get(ws)
        if transport is not None:
            transport.abort()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        # Not a cancel of ours: a sender cancelled while waiting to drain leaves aiohttp's drain
        # waiter cancelled. The close frame is queued; aiohttp closes the transport after it.


# The connection under each open socket, to drop a peer that stops reading; the task reading
# it; and the close under way, if any.
_TRANSPORTS: weakref.WeakKeyDictionary[web.WebSocketResponse, asyncio.Transport] = (
    weakref.WeakKeyDictionary())
_READERS: weakref.WeakKeyDictionary[web.WebSocketResponse, asyncio.Task[None]] = (
    weakref.WeakKeyDictionary())
_CLOSINGS: weakref.WeakKeyDictionary[web.WebSocketResponse, asyncio.Future[None]] = (
    weakref.WeakKeyDictionary())


async def _answer_pings(ws: web.WebSocketResponse) -> None:
    """Read until the peer closes; answer `{"type": "ping"}` with `{"type": "pong"}`."""
    async for msg in ws:
        if msg.type == WSMsgType.TEXT and '"ping"' in msg.data:
            with contextlib.suppress(ConnectionError):
                await ws.send_str('{"type":"pong"}')


async def _serve_socket(request: web.Request, ws: web.WebSocketResponse,
                        send: asyncio.Task[None], kind: str) -> None:
    """Run `send` beside the reader until either ends; track the socket for shutdown."""
    sockets = request.app[SOCKETS]
    sockets.add(ws)
    followers = request.app[METRICS].followers
    followers[kind] += 1
    if isinstance(request.transport, asyncio.Transport):
        _TRANSPORTS[ws] = request.transport
    reader = _READERS[ws] = asyncio.create_task(_answer_pings(ws))
    try:
        await asyncio.wait({reader, send}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        followers[kind] -= 1
        sockets.discard(ws)
        for task in (reader, send):
            task.cancel()
        await asyncio.gather(reader, send, return_exceptions=True)
        await _close(ws, WSCloseCode.OK)  # or wait for the close already under way


@routes.get(f"{API_PREFIX}/executions/{{execution_id}}/ws", role="viewer", stream="websocket",
            query=FollowQuery, answers={101: None, 426: Problem},
            summary="Follow one execution: a snapshot, the replay, live events")
async def follow_ws(request: web.Request) -> web.StreamResponse:
    q = parse_query(request, FollowQuery)
    follow, rec = await _follow(request, q.after)  # 404 before the upgrade
    ws = _socket(request.app[SETTINGS].live.heartbeat)

    async def send() -> None:
        await ws.send_str(_snapshot(rec))
        try:
            async for item in follow.events():
                await ws.send_frame(item.json, WSMsgType.TEXT)
        except Lagging:
            await _close(ws, WSCloseCode.TRY_AGAIN_LATER, LAGGING)
            return
        await _close(ws, WSCloseCode.OK)

    try:  # from the subscription on: a refused upgrade must not leave it in the hub
        _require_upgrade(request)
        await ws.prepare(request)
        sender = asyncio.create_task(send())
        assert follow.sub is not None
        follow.sub.on_lag = lambda: _lagged(ws, sender)
        await _serve_socket(request, ws, sender, "websocket")
    finally:
        follow.close()
    return ws


def _require_upgrade(request: web.Request) -> None:
    """A plain GET is told to upgrade (426); aiohttp's prepare answers a broken handshake
    with 400. Both happen after the route's own checks, so an unknown id is still 404."""
    if request.headers.get("Upgrade", "").strip().lower() != "websocket":
        raise web.HTTPUpgradeRequired(
            headers={"Upgrade": "websocket"},
            text="this route speaks WebSocket only: open it with an Upgrade: websocket handshake")


async def _follow(request: web.Request, after: int | None) -> tuple[Follow, ExecutionRecord]:
    """Subscribe to the execution named in the path, then read its snapshot."""
    follow = Follow(request.app[SCHEDULER], request.app[HUB],
                    request.match_info["execution_id"], request.app[SETTINGS].live.queue_size)
    return follow, await follow.open(after)


def _snapshot(rec: ExecutionRecord) -> str:
    return dumps({"type": "snapshot", "seq": rec.seq, "status": live_status(rec)})


def _lagged(ws: web.WebSocketResponse, sender: asyncio.Task[None]) -> None:
    # The sender may be stuck writing to a peer that does not read: stop it and close here.
    sender.cancel()
    _close(ws, WSCloseCode.TRY_AGAIN_LATER, LAGGING)


@routes.get(f"{API_PREFIX}/ws", role="viewer", stream="websocket", query=AllQuery,
            answers={101: None, 426: Problem}, summary="Live events of every execution, filtered")
async def all_ws(request: web.Request) -> web.StreamResponse:
    q = parse_query(request, AllQuery, multi=("type",))
    types = {t for value in q.type for t in value.split(",") if t}

    def accept(event: Event) -> bool:
        return ((q.workflow_id is None or event.workflow_id == q.workflow_id)
                and (not types or event.type in types))

    _require_upgrade(request)
    settings = request.app[SETTINGS].live
    hub = request.app[HUB]
    sub = hub.subscribe(None, settings.queue_size, accept)
    ws = _socket(settings.heartbeat)

    async def send() -> None:
        while True:
            event = await sub.queue.get()
            await ws.send_frame(event.json, WSMsgType.TEXT)

    try:  # prepare may still refuse a broken handshake
        await ws.prepare(request)
        sender = asyncio.create_task(send())
        sub.on_lag = lambda: _lagged(ws, sender)
        await _serve_socket(request, ws, sender, "websocket_all")
    finally:
        hub.unsubscribe(sub)
    return ws


@routes.get(f"{API_PREFIX}/executions/{{execution_id}}/events/stream", role="viewer",
            stream="sse", query=FollowQuery, answers={200: None}, media_type="text/event-stream",
            headers={"Last-Event-ID": "the seq of the last event seen: resume after it"},
            summary="The events as server-sent events")
async def follow_sse(request: web.Request) -> web.StreamResponse:
    q = parse_query(request, FollowQuery)
    last_id = request.headers.get("Last-Event-ID")
    after = q.after if last_id is None else _last_event_id(last_id)
    follow, rec = await _follow(request, after)
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                       "Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    followers = request.app[METRICS].followers
    followers["sse"] += 1
    stop = asyncio.Event()
    request.app[STREAMS].add(stop)
    try:
        await resp.prepare(request)
        await resp.write(f"retry: 2000\ndata: {_snapshot(rec)}\n\n".encode())
        await _write_events(resp, follow.events(), request.app[SETTINGS].live.heartbeat, stop)
    finally:
        request.app[STREAMS].discard(stop)
        followers["sse"] -= 1
        follow.close()
    return resp


async def _write_events(resp: web.StreamResponse, events: AsyncIterator[Streamed],
                        heartbeat: float, stop: asyncio.Event) -> None:
    """Write each event as it comes, and a comment after every `heartbeat` seconds without one,
    until the last event or `stop` (a shutdown: the stream ends there, whole).

    The read of the next event is one task that outlives the heartbeats: cancelling it at a
    heartbeat (as a timeout around `anext` would) throws into the generator and ends it."""
    pending: asyncio.Task[Streamed | None] | None = None
    stopping = asyncio.ensure_future(stop.wait())
    try:
        while True:
            if pending is None:
                pending = asyncio.create_task(_next(events))
            done, _ = await asyncio.wait({pending, stopping}, timeout=heartbeat,
                                         return_when=asyncio.FIRST_COMPLETED)
            if stopping in done:
                return
            if not done:
                await resp.write(b": keep-alive\n\n")
                continue
            try:
                item = pending.result()
            except Lagging:
                return
            pending = None
            if item is None:
                return
            await resp.write(b"id: %d\ndata: %s\n\n" % (item.seq, item.json))
    finally:
        stopping.cancel()
        if pending is not None:  # the response ended (peer gone, shutdown) with a read waiting
            pending.cancel()
            await asyncio.wait({pending})


async def _next(events: AsyncIterator[Streamed]) -> Streamed | None:
    return await anext(events, None)


def _last_event_id(value: str) -> int:
    """The seq a reconnecting EventSource sends back."""
    seq = sql_int(value.strip())
    if seq is None:
        raise BadRequestError(f"Last-Event-ID must be an event seq, 0 to {SQL_INT_MAX}")
    return seq


async def close_sockets(app: web.Application) -> None:
    """On shutdown: close every WebSocket follower with 1001 (going away), and end every
    event stream (it would go on until its next heartbeat found the peer gone, and the
    shutdown waits for it)."""
    sockets: weakref.WeakSet[web.WebSocketResponse] = app[SOCKETS]
    for stop in app[STREAMS]:
        stop.set()
    await asyncio.gather(*(_close(ws, WSCloseCode.GOING_AWAY, "server shutting down")
                           for ws in list(sockets)), return_exceptions=True)
