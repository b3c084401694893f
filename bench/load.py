"""The load generator, run in its own process: `python -m bench.load < SPEC.json`.

It reads one JSON spec on standard input and writes one JSON result on standard output (and,
for WebSocket followers, a `READY` line first). Two kinds of load:

- `http`: closed-loop HTTP/1.1 keep-alive clients (one connection each) on a small asyncio
  protocol of their own, so the client spends as little of the shared CPU as it can. In
  `duration` mode each client repeats its request for `warmup + duration` seconds and only the
  last `duration` count; in `list` mode every request of the list is sent once.
- `ws`: WebSocket followers of one execution (see `bench.followers`).

Every load stops by itself: `max_seconds` bounds it whatever happens.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from bench.common import percentiles

__all__ = ["main", "run_http"]


class ConnectionLost(Exception):
    """The server closed the connection (or it broke) before answering."""


@dataclass(slots=True)
class Response:
    status: int
    head: bytes
    body: bytes

    def header(self, name: str) -> str | None:
        key = b"\r\n" + name.lower().encode() + b":"
        lower = self.head.lower()
        start = lower.find(key)
        if start < 0:
            return None
        end = lower.find(b"\r\n", start + 2)
        return self.head[start + len(key):end if end >= 0 else None].decode().strip()


class _HttpConn(asyncio.Protocol):
    """One keep-alive connection answering one request at a time (Content-Length bodies)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self._waiter: asyncio.Future[Response] | None = None
        self._head: bytes | None = None
        self._status = 0
        self._need = 0
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(ConnectionLost(str(exc)))

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        while True:
            if self._head is None:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = bytes(buf[:end])
                del buf[:end + 4]
                self._status = int(head[9:12])
                self._head = head
                self._need = _body_length(self._status, head)
            if len(buf) < self._need:
                return
            body = bytes(buf[:self._need])
            del buf[:self._need]
            response = Response(self._status, self._head, body)
            self._head = None
            waiter, self._waiter = self._waiter, None
            if waiter is not None and not waiter.done():
                waiter.set_result(response)

    def request(self, raw: bytes) -> asyncio.Future[Response]:
        assert self.transport is not None
        waiter = asyncio.get_running_loop().create_future()
        if self.closed:
            waiter.set_exception(ConnectionLost("closed"))
            return waiter
        self._waiter = waiter
        self.transport.write(raw)
        return waiter

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def _body_length(status: int, head: bytes) -> int:
    if status in (204, 304) or 100 <= status < 200:
        return 0
    lower = head.lower()
    start = lower.find(b"\r\ncontent-length:")
    if start < 0:
        if b"\r\ntransfer-encoding:" in lower:
            raise ConnectionLost("chunked answers are not supported by this client")
        return 0
    end = lower.find(b"\r\n", start + 2)
    return int(lower[start + 17:end if end >= 0 else None])


def build_request(host: str, port: int, method: str, path: str, body: str = "",
                  headers: dict[str, str] | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}"]
    for key, value in (headers or {}).items():
        lines.append(f"{key}: {value}")
    payload = body.encode()
    if method in ("POST", "PUT", "PATCH") or payload:
        lines.append("Content-Type: application/json")
        lines.append(f"Content-Length: {len(payload)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


@dataclass
class _Tally:
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: int = 0
    locations: list[str] = field(default_factory=list)
    first_error: str | None = None


async def run_http(spec: dict[str, Any]) -> dict[str, Any]:
    """Run an HTTP load described by `spec` (see the module docstring); answer its figures."""
    loop = asyncio.get_running_loop()
    host: str = spec.get("host", "127.0.0.1")
    port: int = spec["port"]
    method: str = spec.get("method", "GET")
    body: str = spec.get("body", "")
    base_headers: dict[str, str] = spec.get("headers", {})
    paths: list[str] = spec["paths"]
    per_path_headers: list[dict[str, str]] | None = spec.get("path_headers")
    clients: int = spec.get("clients", 64)
    mode: str = spec.get("mode", "duration")
    duration: float = float(spec.get("duration", 10.0))
    warmup: float = float(spec.get("warmup", 1.0)) if mode == "duration" else 0.0
    max_seconds: float = float(spec.get("max_seconds", 120.0))
    collect: str | None = spec.get("collect")
    total = int(spec.get("count", len(paths)))
    raws = [
        build_request(host, port, method, path, body,
                      {**base_headers, **(per_path_headers[i] if per_path_headers else {})})
        for i, path in enumerate(paths)
    ]
    tally = _Tally()
    next_index = 0
    begin = loop.time()
    record_from = begin + warmup
    stop_at = min(begin + warmup + duration, begin + max_seconds) if mode == "duration" \
        else begin + max_seconds
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    first_send: float | None = None
    last_done = begin

    async def connect() -> _HttpConn:
        _, conn = await loop.create_connection(_HttpConn, host, port)
        return conn

    async def client(n: int) -> None:
        nonlocal next_index, first_send, last_done
        conn = await connect()
        try:
            while True:
                now = loop.time()
                if now >= stop_at:
                    return
                if mode == "list":
                    if next_index >= total:
                        return
                    raw = raws[next_index % len(raws)]
                    next_index += 1
                else:
                    raw = raws[n % len(raws)]
                if first_send is None:
                    first_send = now
                sent = time.perf_counter()
                try:
                    response = await conn.request(raw)
                except ConnectionLost as exc:
                    tally.errors += 1
                    tally.first_error = tally.first_error or f"connection lost: {exc}"
                    conn.close()
                    conn = await connect()
                    continue
                took = time.perf_counter() - sent
                done = loop.time()
                last_done = done
                if done < record_from:
                    continue
                tally.latencies.append(took * 1000.0)
                tally.statuses[response.status] = tally.statuses.get(response.status, 0) + 1
                if collect == "location":
                    location = response.header("Location")
                    if location is not None and response.status < 300:
                        tally.locations.append(location)
                if response.status >= 400 and tally.first_error is None:
                    tally.first_error = f"{response.status}: {response.body[:300]!r}"
        finally:
            conn.close()

    results = await asyncio.gather(*(client(n) for n in range(clients)), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            tally.errors += 1
            tally.first_error = tally.first_error or f"client failed: {result!r}"
    end = loop.time()
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    if mode == "duration":
        measured = max(1e-9, min(end, stop_at) - record_from)
    else:
        measured = max(1e-9, last_done - (first_send if first_send is not None else begin))
    completed = len(tally.latencies)
    out: dict[str, Any] = {
        "mode": mode,
        "clients": clients,
        "completed": completed,
        "seconds": round(measured, 3),
        "rps": completed / measured,
        "statuses": {str(k): v for k, v in sorted(tally.statuses.items())},
        "errors": tally.errors,
        "first_error": tally.first_error,
        "latency_ms": percentiles(tally.latencies),
        "client_cpu_s": round((cpu1.ru_utime + cpu1.ru_stime)
                              - (cpu0.ru_utime + cpu0.ru_stime), 3),
        "client": "python-asyncio",
        "first_send_epoch": time.time() - (loop.time() - (first_send or begin)),
        "pid": os.getpid(),
    }
    if collect == "location":
        out["locations"] = tally.locations
    return out


async def _amain(spec: dict[str, Any]) -> dict[str, Any]:
    kind = spec.get("kind", "http")
    if kind == "http":
        return await run_http(spec)
    if kind == "ws":
        from bench.followers import run_followers

        return await run_followers(spec)
    raise SystemExit(f"unknown load kind {kind!r}")


def main() -> None:
    spec = json.loads(sys.stdin.read())
    result = asyncio.run(_amain(spec))
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
