"""The store on a small tmpfs that fills up: writes answer 503, nothing committed is lost,
running executions wait and go on, and the service recovers by itself when space returns."""

from __future__ import annotations

import errno
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import workflows
from tests.conftest import MakeClient
from tests.helpers import (
    API,
    LogWatch,
    assert_gapless,
    events,
    get_json,
    problem_of,
    submit,
    wait_for_event,
    wait_for_status,
)
from tests.store.test_store import _write
from workflowd.config import Settings
from workflowd.errors import StoreError
from workflowd.records import TERMINAL, TERMINAL_EVENTS
from workflowd.store import SQLiteStore

DISK_SIZE = "4m"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs of `DISK_SIZE` mounted in the test's directory (needs root, as CI runs)."""
    where = tmp_path / "disk"
    where.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs the tests as root)")
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={DISK_SIZE}", "tmpfs", str(where)],
                       check=True, capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"mounting a tmpfs is not permitted here: {exc}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False, capture_output=True,
                       timeout=10)


@pytest.fixture
def settings(small_disk: Path) -> Settings:
    """The store's file on the small disk (overrides conftest's `settings`)."""
    return Settings.model_validate({
        "store": {"path": str(small_disk / "workflowd.db")},
        "workflows": {"modules": ["workflowd.examples", "tests.workflows"]},
        "engine": {"shutdown_grace": 1.0, "max_concurrent": 20},
        "logging": {"level": "warning"},
    })


def _fill(disk: Path) -> Path:
    """Write a file until the disk has no byte left; answer it (delete it to free the space)."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as f:
        for size in (1 << 16, 1 << 12, 1 << 9, 1):
            chunk = b"\0" * size
            while True:
                try:
                    f.write(chunk)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
    return filler


async def _submit_until_refused(client: Any, tries: int = 500) -> tuple[list[str], Any]:
    """Submit until the store refuses; answer the ids acknowledged on the way and the 503."""
    acknowledged: list[str] = []
    for _ in range(tries):
        resp = await client.post(f"{API}/workflows/three-steps/executions", json={})
        if resp.status != 202:
            return acknowledged, resp
        acknowledged.append((await resp.json())["execution_id"])
    raise AssertionError(f"{tries} submits on a full disk were all acknowledged")


async def test_a_full_disk_refuses_writes_loses_nothing_and_recovers(
        small_disk: Path, settings: Settings, make_client: MakeClient,
        log_watch: LogWatch) -> None:
    """Disk full: 503 `store_unavailable` and a log line; an approve that got 503 changed
    nothing; a running execution waits; a gate's timeout due meanwhile still ends it
    `timed_out`; once space returns all goes on by itself, and a reopen finds every
    acknowledged execution whole."""
    client = await make_client()
    done = [(await submit(client, "three-steps"))["execution_id"] for _ in range(5)]
    for execution_id in done:
        await wait_for_status(client, execution_id, "completed")
    gated = (await submit(client, "gated"))["execution_id"]
    await wait_for_status(client, gated, "awaiting_approval")
    running = (await submit(client, "waiter", input={"name": "w"}))["execution_id"]
    await wait_for_event(client, running, "step_started")
    await wait_for_status(client, running, "running")
    timing = (await submit(client, "gate-full"))["execution_id"]
    await wait_for_status(client, timing, "awaiting_approval")

    filler = _fill(small_disk)
    acknowledged, refused = await _submit_until_refused(client)
    body = await problem_of(refused, 503)
    assert body["type"].endswith("store_unavailable")
    assert "disk full" in body["detail"]
    entry = await log_watch.wait_for("store_unavailable")
    assert (entry["reason"], entry["log_level"]) == ("disk full", "error")

    # Approves refused: nothing changed, the gate's timer still runs.
    for execution_id in (gated, timing):
        before = await get_json(client, f"{API}/executions/{execution_id}")
        resp = await client.post(f"{API}/executions/{execution_id}/approve", json={})
        assert (await problem_of(resp, 503))["type"].endswith("store_unavailable")
        assert await get_json(client, f"{API}/executions/{execution_id}") == before
    # The running step ends: its cycle's commit is refused, and it waits.
    workflows.release("w").set()
    await log_watch.wait_for("commit_waiting", execution_id=running)
    assert (await get_json(client, f"{API}/executions/{running}"))["status"] == "running"
    # The timer of `timing` fires past its deadline while the disk is full: refused too.
    await log_watch.wait_for_count("execution_reset", 2, execution_id=timing)
    assert (await get_json(client, f"{API}/executions/{timing}"))["status"] == \
        "awaiting_approval"

    filler.unlink()  # space returns: nothing is restarted or retried by hand
    assert (await wait_for_status(client, running, *TERMINAL))["status"] == "completed"
    assert (await wait_for_status(client, timing, *TERMINAL))["status"] == "timed_out"
    for execution_id in acknowledged:
        assert (await wait_for_status(client, execution_id, *TERMINAL))["status"] == \
            "completed"
    resp = await client.post(f"{API}/executions/{gated}/approve", json={})
    assert resp.status == 202, await resp.text()
    assert (await wait_for_status(client, gated, *TERMINAL))["status"] == "completed"
    after = (await submit(client, "three-steps"))["execution_id"]
    assert (await wait_for_status(client, after, *TERMINAL))["status"] == "completed"
    assert log_watch.find("store_available")
    await client.close()

    conn = sqlite3.connect(settings.store.path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        conn.close()
    reopened = await make_client()
    expected = {**dict.fromkeys([*done, *acknowledged, running, gated, after], "completed"),
                timing: "timed_out"}
    for execution_id, status in expected.items():
        record = await get_json(reopened, f"{API}/executions/{execution_id}")
        assert record["status"] == status, record
        items = await events(reopened, execution_id)
        assert_gapless(items)
        assert items[-1]["seq"] == (await get_json(
            reopened, f"{API}/executions/{execution_id}/status/live"))["seq"]
        assert [e["type"] for e in items if e["type"] in TERMINAL_EVENTS] == \
            [f"workflow_{status}"]
        assert items[-1]["type"] == f"workflow_{status}"
    timed = await events(reopened, timing)
    assert "approval_granted" not in [e["type"] for e in timed]


async def test_opening_the_store_on_a_full_disk_says_so(small_disk: Path) -> None:
    """A start on a disk with no space left fails with a `StoreError` that says the disk is
    full (SQLite itself says only "disk I/O error"), and the file opens once space returns."""
    path = str(small_disk / "s.db")
    store = await SQLiteStore.open(path)
    await store.commit(_write(1))
    await store.close()
    filler = _fill(small_disk)
    with pytest.raises(StoreError, match="no space left"):
        await SQLiteStore.open(path)
    filler.unlink()
    store = await SQLiteStore.open(path)
    try:
        assert await store.get_execution("e1") is not None
    finally:
        await store.close()
