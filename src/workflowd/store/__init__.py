"""The store: the only package that speaks SQL."""

from workflowd.store.store import ExecutionFilter, Store
from workflowd.store.writer import StoreClosedError, Write

__all__ = ["ExecutionFilter", "Store", "StoreClosedError", "Write"]
