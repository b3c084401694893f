"""`workflowd serve`: runs the service."""

from __future__ import annotations

import asyncio
import gc
import sys
from pathlib import Path

import structlog
from aiohttp import web
from pydantic import ValidationError

from workflowd.api import create_app
from workflowd.api.keys import WORKFLOWS
from workflowd.config import Settings, check_exposure, load_settings
from workflowd.errors import DefinitionError, StoreError
from workflowd.log import configure_logging
from workflowd.redact import redact_text
from workflowd.store.postgres import check_url

__all__ = ["new_loop", "serve", "tune_runtime"]


def _settings(path: str | None) -> Settings:
    if path is None and Path("config.toml").is_file():
        path = "config.toml"
    if path is not None:
        # Workflow modules beside the config file import as they are named there (what
        # `workflowd init` writes), wherever `workflowd` itself is installed.
        here = str(Path(path).resolve().parent)
        if here not in sys.path:
            sys.path.insert(0, here)
    return load_settings(path)


def new_loop(use_uvloop: bool) -> asyncio.AbstractEventLoop:
    """uvloop's loop when asked for and installed (the `speed` extra), else asyncio's."""
    if use_uvloop:
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def tune_runtime() -> None:
    """Collect young objects less often, leave start-up objects out of every collection, and
    hand the GIL over sooner.

    Each cycle makes many short-lived objects and the default threshold (700) ran a collection
    every few cycles, the largest single cost in a profile of the engine; almost nothing the
    engine makes is cyclic, so reference counting frees it and a rarer collection loses nothing.
    The writer thread needs the GIL a few times per commit; with the default 5 ms switch
    interval each of those waited on the busy loop for up to 5 ms, which made commits slow.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    sys.setswitchinterval(0.001)


def serve(config: str | None) -> int:
    try:
        settings = _settings(config)
        check_exposure(settings)  # no auth beyond loopback: refuse, saying why
    except (OSError, ValueError, ValidationError) as exc:
        print(f"workflowd: bad configuration: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    if settings.store.url:
        try:
            check_url(settings.store.url)
        except StoreError as exc:
            print(f"workflowd: {exc.detail}", file=sys.stderr)  # noqa: T201
            return 2
    if settings.store.url:  # a node of a cluster: every line names it
        configure_logging(settings.logging, node_id=settings.cluster.name())
    else:
        configure_logging(settings.logging)
    try:
        app = create_app(settings)
    except DefinitionError as exc:
        print(f"workflowd: {exc.detail}", file=sys.stderr)  # noqa: T201
        return 2
    log = structlog.get_logger("workflowd")
    names: list[str] = sorted(app[WORKFLOWS].keys())
    log.info("starting", host=settings.server.host, port=settings.server.port,
             store=redact_text(settings.store.url) if settings.store.url else settings.store.path,
             workflows=names)
    if settings.engine.tune_gc:
        tune_runtime()
    try:
        web.run_app(app, host=settings.server.host, port=settings.server.port,
                    access_log=None, print=None, loop=new_loop(settings.server.uvloop),
                    shutdown_timeout=min(settings.engine.shutdown_grace, 5.0) or 0.1)
    except StoreError as exc:  # the store cannot be opened: say why, without a traceback
        print(f"workflowd: {exc.detail}", file=sys.stderr)  # noqa: T201
        return 2
    log.info("stopped")
    return 0
