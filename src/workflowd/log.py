"""structlog configuration: contextvars merged into every line, console or JSON output."""

from __future__ import annotations

import logging
import sys

import structlog

from workflowd.config import LoggingSettings
from workflowd.redact import RedactingFilter, redact_secrets

__all__ = ["configure_logging"]

# Standard-library loggers whose lines may show a request line or a URL.
_STDLIB_LOGGERS = ("aiohttp.access", "aiohttp.client", "aiohttp.server", "aiohttp.web",
                   "aiohttp.websocket", "asyncio", "aiosqlite", "")
_FILTER = RedactingFilter()


def configure_logging(settings: LoggingSettings, *, cache: bool = True,
                      node_id: str | None = None) -> None:
    """Set up structlog; `cache=False` lets a later `structlog.configure` (tests) take effect.
    With `node_id` (a node of a cluster) every line names the node."""
    level = logging.getLevelNamesMapping()[settings.level.upper()]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if settings.format == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    named: list[structlog.types.Processor] = []
    if node_id is not None:

        def add_node(_logger: object, _name: str, event: structlog.types.EventDict,
                     ) -> structlog.types.EventDict:
            event.setdefault("node_id", node_id)
            return event

        named.append(add_node)
    structlog.configure(
        processors=[
            *named,
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            # Last before rendering, so tracebacks and bound fields are covered too.
            redact_secrets,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=cache,
    )
    logging.basicConfig(level=max(level, logging.WARNING), stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    for name in _STDLIB_LOGGERS:  # a logger's filters see only what is logged on it
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
