"""Log lines about an execution carry its execution_id, workflow_id and cycle."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from aiohttp.test_utils import TestClient
from structlog.testing import LogCapture

from tests.helpers import API, submit, wait_for_status


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
