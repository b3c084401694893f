"""Summaries of a py-spy profile of the server (`py-spy record --format raw`, collapsed stacks).

`python -m bench.profile FILE [TOP]` prints the functions with the most samples, inclusive
(anywhere on the stack) and self (on top), per thread kind (the event loop, the SQLite thread,
idle), which is enough to see where a workload's time goes without a flame-graph viewer.
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

__all__ = ["summarize"]

_FRAME = re.compile(r"^(.*) \(([^:()]+):?(\d+)?\)$")
_IDLE = ("select (selectors.py", "EpollSelector.select", "Condition.wait", "Event.wait",
         "_worker (concurrent/futures", "Thread._bootstrap_inner")


def _name(frame: str) -> str:
    match = _FRAME.match(frame)
    if not match:
        return frame
    return f"{match.group(1)} ({match.group(2)})"


def summarize(path: Path, top: int = 25) -> dict[str, Any]:
    """Samples by function, inclusive and self; stacks on the SQLite thread apart."""
    inclusive: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    total = loop_samples = sqlite_samples = idle = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        top_frame = frames[-1]
        if "select (selectors.py" in top_frame or "EpollSelector.select" in top_frame:
            idle += count
            continue
        if any("aiosqlite" in f and "run" in f for f in frames) or "connection.py" in stack:
            sqlite_samples += count
        else:
            loop_samples += count
        for name in {_name(f) for f in frames}:
            inclusive[name] += count
        self_time[_name(top_frame)] += count
    return {
        "samples": total,
        "idle_samples": idle,
        "loop_samples": loop_samples,
        "sqlite_thread_samples": sqlite_samples,
        "inclusive": inclusive.most_common(top),
        "self": self_time.most_common(top),
    }


def render(summary: dict[str, Any]) -> str:
    total = max(1, summary["samples"])
    out = [f"samples {summary['samples']}: event loop busy {summary['loop_samples']}, "
           f"sqlite thread busy {summary['sqlite_thread_samples']}, "
           f"idle in select {summary['idle_samples']}"]
    for title in ("inclusive", "self"):
        out.append(f"-- {title} (share of all samples)")
        out.extend(f"{100.0 * n / total:5.1f}%  {name}" for name, n in summary[title])
    return "\n".join(out)


def main() -> None:
    path = Path(sys.argv[1])
    top = int(sys.argv[2]) if len(sys.argv) > 2 else 25
    sys.stdout.write(render(summarize(path, top)) + "\n")


if __name__ == "__main__":
    main()
