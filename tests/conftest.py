"""Fixtures: a fresh SQLite file per test, and the real app (its cleanup contexts run)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from tests import workflows
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


@pytest.fixture(autouse=True)
def _fresh_test_state() -> None:
    workflows.RELEASES.clear()
    workflows.STARTED.clear()
    workflows.CALLBACKS.clear()


@pytest.fixture
def make_client(aiohttp_client: AiohttpClient, settings: Settings) -> MakeClient:
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
