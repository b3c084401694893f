"""`wrk` as a second load generator, used only when it is installed (a cross-check).

wrk is written in C and spends far less of the shared CPU than the Python client, so the
server gets more of the two cores; its figures sit beside the Python client's, never instead.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from bench import procs

__all__ = ["available", "run_wrk"]

_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}
_PERCENTILE = re.compile(r"^\s*(50|75|90|99)%\s+([\d.]+)(us|ms|s|m)\s*$")


def available() -> str | None:
    return shutil.which("wrk")


def _latency(value: str, unit: str) -> float:
    return float(value) * _UNITS[unit]


async def run_wrk(url: str, *, seconds: float, clients: int = 64, method: str = "GET",
                  body: str = "", headers: dict[str, str] | None = None) -> dict[str, Any]:
    """One wrk run (one thread, `clients` connections); answer rate, latencies and statuses."""
    exe = available()
    assert exe is not None
    args = [exe, "-t1", f"-c{clients}", f"-d{max(1, round(seconds))}s", "--latency"]
    for key, value in (headers or {}).items():
        args += ["-H", f"{key}: {value}"]
    with tempfile.TemporaryDirectory(prefix="bench-wrk-") as tmp:
        if method != "GET" or body:
            script = Path(tmp) / "req.lua"
            quoted = body.replace("\\", "\\\\").replace("'", "\\'")
            script.write_text(f"wrk.method = '{method}'\nwrk.body = '{quoted}'\n"
                              "wrk.headers['Content-Type'] = 'application/json'\n")
            args += ["-s", str(script)]
        args.append(url)
        proc = await procs.spawn_plain(*args)
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), seconds + 30.0)
        finally:
            await procs.end(proc)
    text = out.decode()
    result: dict[str, Any] = {"client": "wrk", "clients": clients, "raw": text}
    latency: dict[str, float] = {}
    for line in text.splitlines():
        match = _PERCENTILE.match(line)
        if match:
            latency[f"p{match.group(1)}"] = _latency(match.group(2), match.group(3))
        elif line.startswith("Requests/sec:"):
            result["rps"] = float(line.split()[1])
        elif "requests in" in line:
            result["completed"] = int(line.split()[0])
        elif line.strip().startswith("Non-2xx or 3xx responses:"):
            result["non_2xx_3xx"] = int(line.split(":")[1])
        elif line.strip().startswith("Socket errors:"):
            result["socket_errors"] = line.split(":", 1)[1].strip()
    result["latency_ms"] = latency
    if "rps" not in result:
        raise RuntimeError(f"wrk gave no figures: {text[-1000:]}")
    return result
