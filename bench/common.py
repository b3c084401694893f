"""Small helpers shared by the orchestrator and the load processes."""

from __future__ import annotations

import math
import os
import re
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "ROOT",
    "cpu_seconds",
    "free_port",
    "metric",
    "parse_metrics",
    "percentiles",
    "rss_kib",
    "stat_cpu",
    "stat_fields",
]

ROOT = Path(__file__).resolve().parent.parent
_CLK_TCK = os.sysconf("SC_CLK_TCK")
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def percentiles(values: Sequence[float], points: Sequence[float] = (50, 90, 99, 99.9),
                ) -> dict[str, float]:
    """Nearest-rank percentiles (`p50`, `p99`, ...), plus `mean` and `max`; empty: {}."""
    if not values:
        return {}
    ordered = sorted(values)
    out: dict[str, float] = {}
    for point in points:
        rank = max(1, math.ceil(point / 100.0 * len(ordered)))
        label = f"p{point:g}".replace(".", "_")
        out[label] = ordered[rank - 1]
    out["mean"] = sum(ordered) / len(ordered)
    out["max"] = ordered[-1]
    return out


def rss_kib(pid: int) -> int:
    """Resident memory of a process (VmRSS from /proc/PID/status), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def stat_fields(stat: str) -> list[str]:
    """The fields of a `/proc/PID/stat` after the command's name (which may hold spaces):
    `[1]` is the parent's pid, `[11:13]` the user and system ticks."""
    return stat[stat.rindex(")") + 2:].split()


def stat_cpu(fields: Sequence[str], *, waited_children: bool = False) -> float:
    """CPU seconds in `stat_fields`: user plus system, with `waited_children` those of the
    children the process waited for (ended ones) too."""
    return sum(int(f) for f in fields[11:15 if waited_children else 13]) / _CLK_TCK


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used, including its threads."""
    return stat_cpu(stat_fields(Path(f"/proc/{pid}/stat").read_text()))


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text to `{"name{labels}": value}` (labels as written)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line.strip())
        if match:
            out[match.group(1) + (match.group(2) or "")] = float(match.group(3))
    return out


_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def _split(key: str) -> tuple[str, dict[str, str]]:
    name, _, labels = key.partition("{")
    return name, dict(_LABEL.findall(labels))


def metric(samples: dict[str, Any], name: str, default: float = 0.0) -> float:
    """The sample `name` (e.g. `workflowd_executions{status="completed"}`); the labels it gives
    select, and the samples with other labels besides (`workflow_id`) are added up."""
    if name in samples:
        return float(samples[name])
    wanted, labels = _split(name)
    found = [float(value) for key, value in samples.items()
             if (split := _split(key))[0] == wanted and labels.items() <= split[1].items()]
    return sum(found) if found else default
