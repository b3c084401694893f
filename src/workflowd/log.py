"""structlog configuration: contextvars merged into every line, console or JSON output."""

from __future__ import annotations

import logging
import sys

import structlog

from workflowd.config import LoggingSettings

__all__ = ["configure_logging"]

# The handler this module added to the standard library's root logger (none when something
# else, such as pytest, had handlers there first).
_STDLIB: list[logging.Handler] = []


def configure_logging(settings: LoggingSettings, *, cache: bool = True) -> None:
    """Set up structlog; `cache=False` lets a later `structlog.configure` (tests) take effect."""
    level = logging.getLevelNamesMapping()[settings.level.upper()]
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if settings.format == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=cache,
    )
    _configure_stdlib(max(level, logging.WARNING), json=settings.format == "json")


def _configure_stdlib(level: int, *, json: bool) -> None:
    """Lines of libraries that log through `logging` (aiohttp, asyncio, a step's own
    libraries) go to stderr as well; with `format = "json"` as JSON objects like ours, so that
    every line of the output parses."""
    root = logging.getLogger()
    if not _STDLIB and not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
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
        ],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.JSONRenderer()],
    )
