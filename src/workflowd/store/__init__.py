"""The store: the only package that speaks SQL."""

from workflowd.store.store import ExecutionFilter, Store
from workflowd.store.writer import Delivery, StoreClosedError, Write

__all__ = ["Delivery", "ExecutionFilter", "Store", "StoreClosedError", "Write"]
