"""The retention sweeper: deletes finished executions older than `[retention] finished_after`."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import structlog

from workflowd.clock import format_ts
from workflowd.engine.artifacts import ArtifactStore
from workflowd.store import Store

__all__ = ["sweep", "sweep_forever"]

log = structlog.get_logger("workflowd.retention")


async def sweep(store: Store, finished_after: float,
                artifacts: ArtifactStore | None = None) -> int:
    """Delete what finished more than `finished_after` seconds ago, then the artifacts no
    execution uses any more (and older than that); answer how many executions went."""
    now = datetime.now(UTC)
    cutoff = format_ts(now - timedelta(seconds=finished_after))
    # Idempotency answers live at least a day, so a client's retry never makes a duplicate.
    keys_cutoff = format_ts(now - timedelta(seconds=max(finished_after, 86400.0)))
    deleted = 0
    while True:
        ids = await store.finished_before(cutoff)
        if not ids:
            break
        await store.delete_executions(ids, idempotency_before=keys_cutoff)
        deleted += len(ids)
    if deleted:
        log.info("retention_swept", deleted=deleted, cutoff=cutoff)
    if artifacts is not None:
        await artifacts.collect(cutoff)
    return deleted


async def sweep_forever(store: Store, finished_after: float, interval: float,
                        artifacts: ArtifactStore | None = None) -> None:
    while True:
        try:
            await sweep(store, finished_after, artifacts)
        except Exception:
            log.exception("retention_sweep_failed")
        await asyncio.sleep(interval)
