"""The store: the only package that speaks SQL, behind one interface (`Store`) with two
implementations, `SQLiteStore` (the default, one node) and `PostgresStore` (several nodes)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from workflowd.store.base import ExecutionFilter, Store
from workflowd.store.store import SQLiteStore
from workflowd.store.writer import Delivery, StaleWriteError, StoreClosedError, Write

if TYPE_CHECKING:
    from workflowd.config import Settings

__all__ = ["Delivery", "ExecutionFilter", "SQLiteStore", "StaleWriteError", "Store",
           "StoreClosedError", "Write", "open_store"]


async def open_store(settings: Settings) -> Store:
    """The store `settings` name: PostgreSQL when `[store] url` is set, else the SQLite file."""
    store = settings.store
    if store.url:
        from workflowd.store.postgres import PostgresStore

        return await PostgresStore.open(
            store.url, node_id=settings.cluster.name(),
            lease_seconds=settings.cluster.lease_seconds, max_batch=store.max_batch,
            pool_size=store.pool_size, synchronous=store.synchronous)
    return await SQLiteStore.open(store.path, max_batch=store.max_batch,
                                  commit_interval=store.commit_interval,
                                  synchronous=store.synchronous)
