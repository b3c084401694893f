"""Fixtures: a fresh SQLite file per test, and the real app (its cleanup contexts run)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from tests import workflows
from tests.helpers import LogWatch
from workflowd.api import create_app
from workflowd.config import LoggingSettings, Settings
from workflowd.log import configure_logging

MakeClient = Callable[..., Awaitable[TestClient[Any, Any]]]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.model_validate({
        "store": {"path": str(tmp_path / "workflowd.db")},
        "workflows": {"modules": ["workflowd.examples", "tests.workflows"]},
        "engine": {"shutdown_grace": 1.0},
        "logging": {"level": "warning"},
    })


@pytest.fixture(autouse=True)
def _quiet_logs() -> None:
    configure_logging(LoggingSettings(level="warning"), cache=False)


@pytest.fixture
def log_watch() -> Iterator[LogWatch]:
    """Every log line of the test, kept to look at or wait for (none is printed)."""
    watch = LogWatch()
    structlog.reset_defaults()
    structlog.configure(processors=[structlog.contextvars.merge_contextvars,
                                    structlog.processors.add_log_level, watch],
                        cache_logger_on_first_use=False)
    try:
        yield watch
    finally:
        configure_logging(LoggingSettings(level="warning"), cache=False)


@pytest.fixture(autouse=True)
def _fresh_test_state() -> None:
    workflows.RELEASES.clear()
    workflows.STARTED.clear()
    workflows.THREAD_EVENTS.clear()
    workflows.SEEN.clear()


@pytest.fixture
def make_client(aiohttp_client: AiohttpClient, settings: Settings) -> MakeClient:
    """A client on a new app; `engine=` / `store=` override those settings sections."""

    async def make(**sections: Any) -> TestClient[Any, Any]:
        data = settings.model_dump()
        for name, values in sections.items():
            if isinstance(values, dict):
                data[name].update(values)
            else:
                data[name] = values
        return await aiohttp_client(create_app(Settings.model_validate(data)))

    return make


@pytest.fixture
async def client(make_client: MakeClient) -> TestClient[Any, Any]:
    return await make_client()
