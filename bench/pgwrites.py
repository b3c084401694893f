"""`python -m bench.pgwrites`: ways to commit a batch of writes to PostgreSQL, compared.

Each write is an execution's snapshot, three events and a step record, like a cycle's. The
store's own statement (JSON arrays expanded on the server, one round trip) against
`executemany` per table and against `unnest` of typed arrays, both in one transaction, at
1, 64 and 512 writes per commit, on a throwaway server with fsync on.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import asyncpg
from tests.pgserver import PgServer

from workflowd.clock import utcnow
from workflowd.codec import encode
from workflowd.records import Event, ExecutionRecord, Progress, StepRecord
from workflowd.store import Write
from workflowd.store.postgres import PostgresStore

__all__ = ["main"]

_UPDATE = ("UPDATE executions SET status = $2, doc = $3 WHERE id = $1 AND lease_owner = 'w' "
           "AND lease_until > statement_timestamp()")
_STEP = ("INSERT INTO steps (execution_id, cycle, doc) VALUES ($1, $2, $3) "
         "ON CONFLICT (execution_id, cycle) DO UPDATE SET doc = excluded.doc")


def _writes(n: int, seq: int, base: int) -> list[Write]:
    out = []
    for i in range(n):
        now = utcnow()
        rec = ExecutionRecord(execution_id=f"x{i}", workflow_id="wf", workflow_version=1,
                              status="running", input={"a": 1}, created_at=now,
                              updated_at=now, max_cycles=5, progress=Progress(total_steps=3),
                              state={"first": 1, "second": 2}, seq=seq)
        events = [Event(f"x{i}", seq - 2 + k, "step_finished", encode(
            {"seq": seq - 2 + k, "type": "step_finished", "execution_id": f"x{i}", "ts": now,
             "step": "a", "cycle": 1})) for k in range(3)]
        steps = [StepRecord(step_id=f"x{i}:{seq}", name="a", status="completed", cycle=seq)]
        out.append(Write.of(rec, events, steps, base_seq=base, claim=base == 0))
    return out


async def _other(conn: Any, method: str, writes: list[Write]) -> None:
    ex = [json.loads(w.execution or b"") for w in writes]
    evs = [json.loads(e) for w in writes for e in w.events]
    sts = [json.loads(row) for w in writes for _, row in w.steps]
    async with conn.transaction():
        if method == "executemany":
            await conn.executemany(_UPDATE, [(e[0], e[2], json.dumps(e[5])) for e in ex])
            await conn.executemany("INSERT INTO events (execution_id, seq, doc) "
                                   "VALUES ($1, $2, $3)",
                                   [(e[0], e[1], json.dumps(e[2])) for e in evs])
            await conn.executemany(_STEP, [(e[0], e[1], json.dumps(e[2])) for e in sts])
            return
        await conn.execute(
            "UPDATE executions e SET status = u.s, doc = u.d FROM unnest($1::text[], "
            "$2::text[], $3::text[]) u(i, s, d) WHERE e.id = u.i AND lease_owner = 'w' "
            "AND lease_until > statement_timestamp()",
            [e[0] for e in ex], [e[2] for e in ex], [json.dumps(e[5]) for e in ex])
        await conn.execute(
            "INSERT INTO events (execution_id, seq, doc) SELECT * FROM unnest($1::text[], "
            "$2::int[], $3::text[])",
            [e[0] for e in evs], [e[1] for e in evs], [json.dumps(e[2]) for e in evs])
        await conn.execute(
            "INSERT INTO steps (execution_id, cycle, doc) SELECT * FROM unnest($1::text[], "
            "$2::int[], $3::text[]) ON CONFLICT (execution_id, cycle) DO UPDATE "
            "SET doc = excluded.doc",
            [e[0] for e in sts], [e[1] for e in sts], [json.dumps(e[2]) for e in sts])


async def _run() -> None:
    server = PgServer(durable=True)
    server.start()
    try:
        for method in ("store statement", "executemany", "unnest"):
            for batch in (1, 64, 512):
                url = await server.database()
                store = await PostgresStore.open(url, node_id="w", lease_seconds=300,
                                                 max_batch=batch)
                conn = await asyncpg.connect(url)
                await asyncio.gather(*(store.commit(w) for w in _writes(batch, 3, 0)))
                rounds = max(5, 2000 // batch)
                began = time.perf_counter()
                for r in range(rounds):
                    seq = 6 + 3 * r
                    writes = _writes(batch, seq, seq - 3)
                    if method == "store statement":
                        await asyncio.gather(*(store.commit(w) for w in writes))
                    else:
                        await _other(conn, method, writes)
                seconds = time.perf_counter() - began
                print(f"{method:16s} {batch:4d} writes/commit: "  # noqa: T201
                      f"{rounds * batch / seconds:8.0f} writes/s "
                      f"({1000 * seconds / rounds:.1f} ms a commit)")
                await conn.close()
                await store.close()
                await server.drop(url)
    finally:
        server.stop()


def main() -> None:
    asyncio.run(_run())


if __name__ == "__main__":
    main()
