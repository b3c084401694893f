"""Fixtures: a fresh SQLite file per test, and the real app (its cleanup contexts run); a
throwaway PostgreSQL server for the session and a fresh database on it per test that asks."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from tests import workflows
from tests.helpers import LogWatch
from tests.live_server import live_server, make_live_server  # noqa: F401 - fixtures
from tests.pgserver import PgServer, find_bin
from workflowd.api import create_app
from workflowd.config import LoggingSettings, Settings
from workflowd.log import configure_logging

MakeClient = Callable[..., Awaitable[TestClient[Any, Any]]]


@pytest.fixture
def settings(tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    """SQLite by default; WORKFLOWD_TEST_STORE=postgres runs the app tests on PostgreSQL (a
    fresh database each, one node)."""
    store: dict[str, Any] = {"path": str(tmp_path / "workflowd.db")}
    if os.environ.get("WORKFLOWD_TEST_STORE") == "postgres":
        store["url"] = request.getfixturevalue("pg_url")
    return Settings.model_validate({
        "store": store,
        "cluster": {"node_id": "test", "poll_interval": 0.2},
        "workflows": {"modules": ["workflowd.examples", "tests.workflows"]},
        "engine": {"shutdown_grace": 1.0},
        "logging": {"level": "warning"},
    })


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """With WORKFLOWD_TEST_STORE=postgres, skip the tests marked `sqlite_only`, saying why."""
    if os.environ.get("WORKFLOWD_TEST_STORE") != "postgres":
        return
    for item in items:
        mark = item.get_closest_marker("sqlite_only")
        if mark is not None:
            item.add_marker(pytest.mark.skip(reason=f"SQLite only: {mark.args[0]}"))


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
    workflows.CALLBACKS.clear()
    workflows.THREAD_EVENTS.clear()
    workflows.SEEN.clear()


@pytest.fixture
def make_client(settings: Settings, aiohttp_client: AiohttpClient) -> MakeClient:
    """A client on a new app; `engine=` / `store=` override those settings sections;
    `headers=` are sent with every request (a bearer token, with `auth=`)."""

    async def make(*, headers: dict[str, str] | None = None,
                   **sections: Any) -> TestClient[Any, Any]:
        data = settings.model_dump()
        for name, values in sections.items():
            if isinstance(values, dict):
                data[name].update(values)
            else:
                data[name] = values
        app = create_app(Settings.model_validate(data))
        return await aiohttp_client(app, headers=headers) if headers else \
            await aiohttp_client(app)

    return make


@pytest.fixture
async def client(make_client: MakeClient) -> TestClient[Any, Any]:
    return await make_client()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """One PostgreSQL for the session, started on first use (skipped when none is installed,
    unless WORKFLOWD_TEST_REQUIRE_POSTGRES is set, as CI does)."""
    server = PgServer()
    if not server.external and find_bin() is None:
        if os.environ.get("WORKFLOWD_TEST_REQUIRE_POSTGRES"):
            pytest.fail("PostgreSQL is required (WORKFLOWD_TEST_REQUIRE_POSTGRES) but not "
                        "installed")
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql) and "
                    "WORKFLOWD_TEST_POSTGRES_URL is not set")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def pg_url(pg_server: PgServer) -> AsyncIterator[str]:
    """A fresh, empty database, dropped after the test."""
    url = await pg_server.database()
    try:
        yield url
    finally:
        await pg_server.drop(url)
