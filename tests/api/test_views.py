"""Views of records: the live-status cache keeps the most recently polled executions."""

from __future__ import annotations

from msgspec.structs import replace

from workflowd.api.views import LiveBodies
from workflowd.clock import utcnow
from workflowd.codec import loads
from workflowd.records import ExecutionRecord, Progress


def _record(n: int, seq: int = 1) -> ExecutionRecord:
    now = utcnow()
    return ExecutionRecord(execution_id=f"e{n}", workflow_id="wf", workflow_version=1,
                           status="queued", input={}, created_at=now, updated_at=now,
                           max_cycles=5, progress=Progress(total_steps=1), seq=seq)


def test_a_full_cache_drops_the_least_recently_polled() -> None:
    """At its size, the cache drops the one polled longest ago, not everything."""
    bodies = LiveBodies(size=3)
    records = [_record(n) for n in range(4)]
    first = {n: bodies.body(records[n]) for n in range(3)}
    assert bodies.body(records[0]) is first[0]  # polled again: now the most recent
    bodies.body(records[3])  # one too many: e1, polled longest ago, goes
    assert bodies.body(records[0]) is first[0]
    assert bodies.body(records[2]) is first[2]
    again = bodies.body(records[1])
    assert again is not first[1]
    assert again == first[1]


def test_a_new_seq_replaces_the_kept_body() -> None:
    """A record at a later seq gets a fresh body; the same seq answers the kept one."""
    bodies = LiveBodies(size=10)
    rec = _record(1)
    kept = bodies.body(rec)
    assert bodies.body(rec) is kept
    later = replace(rec, seq=2, status="running")
    body = bodies.body(later)
    assert loads(body)["seq"] == 2
    assert loads(body)["status"] == "running"
    assert bodies.body(later) is body


def test_many_executions_keep_the_cache_at_its_size() -> None:
    """Far more executions than the size: the cache never empties whole, the latest stay."""
    bodies = LiveBodies(size=100)
    records = [_record(n) for n in range(1000)]
    kept = [bodies.body(rec) for rec in records]
    assert all(bodies.body(records[n]) is kept[n] for n in range(900, 1000))
