"""WebSocket followers of one execution, for the load process (`kind: "ws"`).

Each follower is a bare RFC 6455 client on an asyncio protocol: the arrival time of every frame
is taken in `data_received`, before any decoding, so the figure is when the bytes reached this
process, not when a busy client got round to them. Frames are decoded at the end.

Protocol with the orchestrator: once every follower has its snapshot, the process writes
`READY` on standard output; it ends when every follower is closed (or `max_seconds` pass).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import resource
import sys
import time
from datetime import datetime
from typing import Any

from bench.common import percentiles

__all__ = ["run_followers"]

_OP_TEXT, _OP_CLOSE, _OP_PING, _OP_PONG = 0x1, 0x8, 0x9, 0xA


def _client_frame(opcode: int, payload: bytes) -> bytes:
    """A masked client frame (RFC 6455 5.3); short payloads only, which is all this sends."""
    assert len(payload) < 126
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked


class _Follower(asyncio.Protocol):
    def __init__(self, request: bytes) -> None:
        self.request = request
        self.transport: asyncio.Transport | None = None
        self.upgraded = False
        self.buf = bytearray()
        self.frames: list[tuple[float, bytes]] = []  # (arrival epoch seconds, text payload)
        self.snapshot: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.close_code: int | None = None
        self.error: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.snapshot.done():
            self.snapshot.set_exception(ConnectionError(f"closed before the snapshot: {exc}"))
        if not self.closed.done():
            self.closed.set_result(self.close_code if self.close_code is not None else -1)

    def data_received(self, data: bytes) -> None:
        now = time.time()
        buf = self.buf
        buf += data
        if not self.upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            status_line = bytes(buf[:buf.find(b"\r\n")])
            if b" 101 " not in status_line:
                self.error = status_line.decode(errors="replace")
                assert self.transport is not None
                self.transport.close()
                return
            del buf[:end + 4]
            self.upgraded = True
        while len(buf) >= 2:
            opcode = buf[0] & 0x0F
            length = buf[1] & 0x7F
            offset = 2
            if length == 126:
                if len(buf) < 4:
                    return
                length = int.from_bytes(buf[2:4], "big")
                offset = 4
            elif length == 127:
                if len(buf) < 10:
                    return
                length = int.from_bytes(buf[2:10], "big")
                offset = 10
            if len(buf) < offset + length:
                return
            payload = bytes(buf[offset:offset + length])
            del buf[:offset + length]
            self._frame(opcode, payload, now)

    def _frame(self, opcode: int, payload: bytes, now: float) -> None:
        transport = self.transport
        assert transport is not None
        if opcode == _OP_TEXT:
            self.frames.append((now, payload))
            if not self.snapshot.done():
                self.snapshot.set_result(None)
        elif opcode == _OP_PING:
            transport.write(_client_frame(_OP_PONG, payload[:125]))
        elif opcode == _OP_CLOSE:
            self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            if not transport.is_closing():
                transport.write(_client_frame(_OP_CLOSE, payload[:2]))
                transport.close()


def _epoch(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


async def run_followers(spec: dict[str, Any]) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    host: str = spec.get("host", "127.0.0.1")
    port: int = spec["port"]
    path: str = spec["path"]
    count: int = spec["followers"]
    max_seconds = float(spec.get("max_seconds", 120.0))
    started = loop.time()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)

    def handshake() -> bytes:
        key = base64.b64encode(os.urandom(16)).decode()
        return (f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n").encode()

    followers: list[_Follower] = []
    gate = asyncio.Semaphore(int(spec.get("connect_concurrency", 100)))

    async def connect() -> None:
        async with gate:
            _, follower = await loop.create_connection(lambda: _Follower(handshake()), host, port)
            followers.append(follower)
            await asyncio.wait_for(follower.snapshot, 30.0)

    connect_began = time.perf_counter()
    outcomes = await asyncio.gather(*(connect() for _ in range(count)), return_exceptions=True)
    connect_seconds = time.perf_counter() - connect_began
    failed = [repr(o) for o in outcomes if isinstance(o, BaseException)]
    sys.stdout.write("READY\n")
    sys.stdout.flush()
    remaining = max(1.0, max_seconds - (loop.time() - started))
    _, pending = await asyncio.wait([f.closed for f in followers], timeout=remaining)
    for follower in followers:
        if follower.transport is not None and not follower.transport.is_closing():
            follower.transport.close()
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)

    since_ts: list[float] = []
    since_call: list[float] = []
    per_event: dict[int, list[float]] = {}
    complete = 0
    expected: set[int] | None = None
    close_codes: dict[str, int] = {}
    for follower in followers:
        code = str(follower.close_code if follower.close_code is not None else "none")
        close_codes[code] = close_codes.get(code, 0) + 1
        seqs: list[int] = []
        progress_seqs: set[int] = set()
        for arrived, payload in follower.frames:
            event = json.loads(payload)
            if event.get("type") == "snapshot":
                continue
            seqs.append(int(event["seq"]))
            if event.get("type") != "step_progress":
                continue
            progress_seqs.add(int(event["seq"]))
            since_ts.append((arrived - _epoch(event["ts"])) * 1000.0)
            t_call = (event.get("custom_data") or {}).get("t_call")
            if t_call is not None:
                since_call.append((arrived - float(t_call)) * 1000.0)
            per_event.setdefault(int(event["seq"]), []).append(arrived)
        gapless = seqs == list(range(seqs[0], seqs[0] + len(seqs))) if seqs else False
        if expected is None and progress_seqs:
            expected = progress_seqs
        if gapless and progress_seqs and progress_seqs == expected:
            complete += 1
    spreads = [(max(times) - min(times)) * 1000.0 for times in per_event.values()]
    return {
        "followers": count,
        "connected": len(followers) - len(failed),
        "connect_failures": len(failed),
        "first_failure": failed[0] if failed else None,
        "connect_seconds": round(connect_seconds, 3),
        "not_closed": len(pending),
        "close_codes": close_codes,
        "progress_events": len(per_event),
        "followers_with_every_event": complete,
        "deliveries": len(since_ts),
        "since_commit_ts_ms": percentiles(since_ts),
        "since_progress_call_ms": percentiles(since_call),
        "fanout_spread_ms": percentiles(spreads),
        "client_cpu_s": round((cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime), 3),
        "pid": os.getpid(),
    }
