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

# The handler this module added to the standard library's root logger (none when something
# else, such as pytest, had handlers there first).
_STDLIB: list[logging.Handler] = []


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
    _configure_stdlib(max(level, logging.WARNING), json=settings.format == "json")
    for name in _STDLIB_LOGGERS:  # a logger's filters see only what is logged on it
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


def _configure_stdlib(level: int, *, json: bool) -> None:
    """Lines of libraries that log through `logging` (aiohttp, asyncio, a step's own
    libraries) go to stderr as well; with `format = "json"` as JSON objects like ours, so that
    every line of the output parses."""
    root = logging.getLogger()
    if not _STDLIB and not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        # On the handler, the filter sees every record it writes, whichever logger made it
        # (a logger's own filters see only what is logged on that logger).
        handler.addFilter(_FILTER)
        root.addHandler(handler)
        root.setLevel(level)
        _STDLIB.append(handler)
    for own in _STDLIB:
        own.setFormatter(_json_formatter() if json else
                             logging.Formatter("%(levelname)s %(name)s: %(message)s"))


def _json_formatter() -> logging.Formatter:
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.stdlib.add_logger_name,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact_secrets,
        ],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.JSONRenderer()],
    )
