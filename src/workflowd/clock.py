"""Timestamps as every answer writes them: ISO 8601 UTC with milliseconds and `Z`."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

__all__ = ["format_ts", "ms_between", "parse_ts", "seconds_until", "ts_after", "utcnow"]


def format_ts(moment: datetime) -> str:
    """The one written form: `2026-02-09T14:10:00.100Z`."""
    # Not strftime("%Y"): glibc writes year 999 as "999", which sorts after "2026" in SQL's
    # text comparisons of `created_at`. isoformat pads to four digits and truncates to ms.
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").removesuffix("+00:00") + "Z"


class _Clock:
    """`utcnow` is called for every event and snapshot; the date part changes once a second, so
    it is formatted once a second and only the milliseconds are added per call."""

    __slots__ = ("cached",)

    def __init__(self) -> None:
        # (second, its formatted prefix), replaced whole so that another thread and the loop
        # never see one without the other.
        self.cached = (-1, "")

    def now(self) -> str:
        moment = time.time()
        second = int(moment)
        cached = self.cached
        if cached[0] != second:
            cached = (second, time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(second)))
            self.cached = cached
        return f"{cached[1]}{int((moment - second) * 1000):03d}Z"


utcnow = _Clock().now


def parse_ts(text: str) -> datetime:
    """Any ISO 8601 timestamp with a zone, in UTC; a naive one, or one that UTC cannot hold
    (`0001-01-01T00:00:00+01:00`), is a `ValueError`."""
    moment = datetime.fromisoformat(text.strip().replace("z", "Z"))
    if moment.tzinfo is None:
        raise ValueError("timestamp needs a time zone (e.g. 'Z')")
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise ValueError("timestamp is outside the years 1 to 9999 in UTC") from None


def ms_between(start: str | None, end: str) -> int | None:
    """Milliseconds from one written timestamp to another (None without a start)."""
    if start is None:
        return None
    return int((parse_ts(end) - parse_ts(start)).total_seconds() * 1000)


def ts_after(seconds: float) -> str:
    """The written timestamp `seconds` from now."""
    return format_ts(datetime.now(UTC) + timedelta(seconds=seconds))


def seconds_until(ts: str) -> float:
    """Seconds from now until a written timestamp (negative once it has passed)."""
    return (parse_ts(ts) - datetime.now(UTC)).total_seconds()
