"""The real app on a real loopback port, run in a thread of the test process: for tests whose
code is blocking (the CLI, `SyncClient`, schemathesis) and so cannot share the test's loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from workflowd.api import create_app
from workflowd.config import Settings

__all__ = ["LiveServer", "live_server", "make_live_server", "settings_at"]


def settings_at(path: Path, **sections: Any) -> Settings:
    """The test suite's settings (conftest's `settings`), for a store at `path`."""
    data: dict[str, Any] = {
        "store": {"path": str(path / "workflowd.db")},
        "workflows": {"modules": ["workflowd.examples", "tests.workflows"]},
        "engine": {"shutdown_grace": 1.0},
        "logging": {"level": "warning"},
    }
    for name, values in sections.items():
        data[name] = {**data.get(name, {}), **values}
    return Settings.model_validate(data)


class LiveServer:
    """`create_app(settings)` served on 127.0.0.1 from a loop in its own thread."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self.app: web.Application | None = None
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self.loop.run_forever, name="live-server",
                                        daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, port: int = 0) -> LiveServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(port), self.loop).result(30)
        return self

    async def _start(self, port: int) -> None:
        self.app = create_app(self.settings)
        self._runner = web.AppRunner(self.app, handle_signals=False, access_log=None,
                                     shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        server = site._server
        assert isinstance(server, asyncio.base_events.Server)
        self.port = server.sockets[0].getsockname()[1]

    def call(self, fn: Callable[[web.Application], Any]) -> Any:
        """Run `fn(app)` on the server's loop (to read or poke the engine) and answer it."""
        async def run() -> Any:
            assert self.app is not None
            return fn(self.app)

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(30)

    def stop(self) -> None:
        """Stop serving (the store is closed, unfinished executions stay as they are)."""
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self.loop).result(30)
            self._runner = None
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(30)
        if not self.loop.is_closed():
            self.loop.close()


@pytest.fixture
def make_live_server(tmp_path: Path) -> Iterator[Callable[..., LiveServer]]:
    """Start servers on the test's store (`engine=` etc. override settings sections)."""
    servers: list[LiveServer] = []

    def make(port: int = 0, **sections: Any) -> LiveServer:
        server = LiveServer(settings_at(tmp_path, **sections)).start(port)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def live_server(make_live_server: Callable[..., LiveServer]) -> LiveServer:
    return make_live_server()
