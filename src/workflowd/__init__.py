"""workflowd: durable background workflows, one process and one SQLite file."""

from workflowd.context import Context
from workflowd.definitions import Done, Goto, Workflow, done, function, goto

__all__ = ["Context", "Done", "Goto", "Workflow", "done", "function", "goto"]
__version__ = "0.1.0"
