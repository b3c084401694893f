"""The engine: scheduling, running cycles, and fanning out events. Knows nothing of HTTP."""

from workflowd.engine.hub import Hub, Subscription
from workflowd.engine.scheduler import Remember, Scheduler

__all__ = ["Hub", "Remember", "Scheduler", "Subscription"]
