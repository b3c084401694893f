"""Log lines: those about an execution carry its execution_id, workflow_id and cycle; the JSON
format writes one object a line, access lines included, and no secret."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog
from aiohttp.test_utils import TestClient
from structlog.testing import LogCapture

from tests.helpers import API, submit, wait_for_status

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def captured() -> Iterator[LogCapture]:
    capture = LogCapture()
    structlog.reset_defaults()
    structlog.configure(processors=[structlog.contextvars.merge_contextvars, capture])
    try:
        yield capture
    finally:
        structlog.reset_defaults()


async def test_execution_log_lines_name_their_execution(client: TestClient[Any, Any],
                                                        captured: LogCapture) -> None:
    """Every line mentioning an execution (runner, scheduler, ctx.log) names all three fields."""
    summary = await submit(client, "gated")
    execution_id = summary["execution_id"]
    await wait_for_status(client, execution_id, "awaiting_approval")
    await client.post(f"{API}/executions/{execution_id}/approve", json={})
    await wait_for_status(client, execution_id, "completed")
    blocking = await submit(client, "blocking")
    await wait_for_status(client, blocking["execution_id"], "completed")

    about = [e for e in captured.entries if "execution_id" in e]
    names = {e["event"] for e in about}
    assert {"execution_submitted", "approval_required", "execution_decided",
            "execution_completed", "step_log"} <= names
    for entry in about:
        assert entry.get("workflow_id"), entry
        assert "cycle" in entry, entry
    step_log = next(e for e in about if e["event"] == "step_log")
    assert step_log["execution_id"] == blocking["execution_id"]
    assert step_log["cycle"] == 1


LOUD_MODULE = '''
import logging
from workflowd import Context, Workflow

loud = Workflow("loud", title="Logs through ctx.log and a library's stdlib logger")


@loud.step
async def speak(ctx: Context) -> None:
    ctx.log("from the step", n=1)
    logging.getLogger("some.library").warning("from a library")
'''


async def test_json_format_writes_one_object_a_line(tmp_path: Path) -> None:
    """`format = "json"`: every line `workflowd serve` writes parses as one JSON object: its
    own (with the ids of the execution), the access lines, and a library's stdlib lines."""
    (tmp_path / "loud_flows.py").write_text(LOUD_MODULE)
    port = _free_port()
    config = tmp_path / "config.toml"
    config.write_text(
        f'[server]\nport = {port}\n[store]\npath = "{tmp_path / "wd.db"}"\n'
        '[workflows]\nmodules = ["loud_flows"]\n[logging]\nlevel = "info"\nformat = "json"\n')
    stderr = (tmp_path / "stderr.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "workflowd", "serve", "--config", str(config),
        env={**os.environ, "PYTHONPATH": f"{ROOT}:{tmp_path}"}, cwd=str(tmp_path),
        stdout=asyncio.subprocess.DEVNULL, stderr=stderr)
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            await _until_ready(http, url, proc)
            async with http.post(f"{url}{API}/workflows/loud/executions?wait=10",
                                 json={}, headers={"Authorization": "Bearer s3cr3t-token"}) as r:
                assert r.status == 200, await r.text()
                execution_id = (await r.json())["execution_id"]
            async with http.get(f"{url}{API}/executions/{execution_id}/status/live"
                                "?token=s3cr3t-query") as r:
                assert r.status == 200
            async with http.get(f"{url}/healthz") as r:
                assert r.status == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            await proc.wait()
        stderr.close()
    text = (tmp_path / "stderr.log").read_text()
    assert "s3cr3t" not in text
    lines = [json.loads(line) for line in text.splitlines()]
    assert all(isinstance(line, dict) for line in lines)
    events = {line["event"] for line in lines}
    assert {"starting", "recovered", "execution_submitted", "step_log", "request",
            "from a library", "stopped"} <= events
    access = [line for line in lines if line["event"] == "request"]
    assert {line["route"] for line in access} == {
        f"{API}/workflows/{{workflow_id}}/executions",
        f"{API}/executions/{{execution_id}}/status/live"}  # no line for /healthz
    for line in access:
        assert line["status"] == 200
        assert isinstance(line["duration_ms"], float)
        assert line["request_id"]
    about = [line for line in lines if line.get("execution_id") == execution_id]
    assert {"execution_submitted", "step_log", "execution_completed"} <= {
        line["event"] for line in about}
    for line in about:
        assert line["workflow_id"] == "loud"
        assert "cycle" in line
    library = next(line for line in lines if line["event"] == "from a library")
    assert library["level"] == "warning"
    assert library["logger"] == "some.library"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _until_ready(http: aiohttp.ClientSession, url: str,
                       proc: asyncio.subprocess.Process) -> None:
    async with asyncio.timeout(20):
        while True:
            try:
                async with http.get(f"{url}/readyz") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            assert proc.returncode is None, "the server exited while starting"
            await asyncio.sleep(0.05)


def test_library_lines_and_tracebacks_are_scrubbed_of_secrets() -> None:
    """Lines of any standard-library logger (not only the ones named) and the text of their
    tracebacks go out without a ticket or a URL's password, in JSON (a process of its own:
    pytest holds the root logger here)."""
    import subprocess
    import sys

    script = (
        "import logging\n"
        "from workflowd.config import LoggingSettings\n"
        "from workflowd.log import configure_logging\n"
        "configure_logging(LoggingSettings(format='json'))\n"
        "logging.getLogger('aiohttp.internal').warning('GET /ws?ticket=tkt-9f done')\n"
        "logging.getLogger('asyncpg.pool').warning('postgresql://u:pw-7e@db/x failed')\n"
        "try:\n"
        "    raise RuntimeError('postgresql://u:pw-8d@db/x refused')\n"
        "except RuntimeError:\n"
        "    logging.getLogger('asyncio').exception('boom')\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=30, check=True)
    lines = [json.loads(line) for line in done.stderr.splitlines()]
    assert [line["logger"] for line in lines] == ["aiohttp.internal", "asyncpg.pool", "asyncio"]
    for secret in ("tkt-9f", "pw-7e", "pw-8d"):
        assert secret not in done.stderr
    assert "Traceback" in lines[2]["exception"]
