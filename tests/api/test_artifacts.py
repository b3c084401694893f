"""Artifacts over HTTP (API.md §12): upload, download with ETag and ranges, the size limit,
dedupe, references from input, steps reading and writing, retention, interrupted uploads."""

from __future__ import annotations

import asyncio
import hashlib
import json
import signal
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import MakeClient
from tests.helpers import API, get_json, problem_of, store_sql, submit, wait_for_status
from tests.test_recovery import Server
from workflowd.api.keys import ARTIFACTS, STORE
from workflowd.clock import format_ts
from workflowd.engine.retention import sweep

Client = TestClient[Any, Any]


async def upload(client: Client, data: bytes, name: str = "data.bin",
                 media_type: str = "application/octet-stream") -> dict[str, Any]:
    resp = await client.post(f"{API}/artifacts", params={"name": name}, data=data,
                             headers={"Content-Type": media_type})
    assert resp.status == 201, await resp.text()
    body: dict[str, Any] = await resp.json()
    assert resp.headers["Location"] == f"{API}/artifacts/{body['artifact_id']}"
    return body


def blobs(client: Client) -> list[Path]:
    root = client.app[ARTIFACTS].dir
    return sorted(p for p in (root / "blobs").rglob("*") if p.is_file())


def temps(client: Client) -> list[Path]:
    return sorted((client.app[ARTIFACTS].dir / "tmp").iterdir())


async def test_upload_then_download_with_etag(client: Client) -> None:
    """201 with its fields; streamed back with the media type and ETag = sha256; 304 after,
    and an If-Match naming another version is a 412 problem."""
    data = b"%PDF-1.4 hello artifacts\n" * 100
    meta = await upload(client, data, name="report.pdf", media_type="application/pdf")
    sha = hashlib.sha256(data).hexdigest()
    assert meta["name"] == "report.pdf"
    assert meta["media_type"] == "application/pdf"
    assert (meta["size"], meta["sha256"]) == (len(data), sha)
    assert meta["created_at"].endswith("Z")
    resp = await client.get(f"{API}/artifacts/{meta['artifact_id']}")
    assert resp.status == 200
    assert await resp.read() == data
    assert resp.headers["ETag"] == f'"{sha}"'
    assert resp.headers["Content-Type"] == "application/pdf"
    assert resp.headers["Accept-Ranges"] == "bytes"
    assert 'filename="report.pdf"' in resp.headers["Content-Disposition"]
    again = await client.get(f"{API}/artifacts/{meta['artifact_id']}",
                             headers={"If-None-Match": f'"{sha}"'})
    assert again.status == 304
    assert again.headers["ETag"] == f'"{sha}"'
    matched = await client.get(f"{API}/artifacts/{meta['artifact_id']}",
                               headers={"If-Match": f'"{sha}"'})
    assert (matched.status, await matched.read()) == (200, data)
    stale = await client.get(f"{API}/artifacts/{meta['artifact_id']}",
                             headers={"If-Match": '"stale"'})
    await problem_of(stale, 412)
    assert stale.headers["ETag"] == f'"{sha}"'
    head = await client.head(f"{API}/artifacts/{meta['artifact_id']}")
    assert (head.status, head.headers["Content-Length"]) == (200, str(len(data)))
    await problem_of(await client.get(f"{API}/artifacts/nope"), 404)


async def test_range_download(client: Client) -> None:
    """Range gives 206 and the bytes asked for; If-Range with another ETag gives it whole."""
    data = bytes(range(256)) * 40
    meta = await upload(client, data)
    path = f"{API}/artifacts/{meta['artifact_id']}"
    resp = await client.get(path, headers={"Range": "bytes=10-19"})
    assert resp.status == 206
    assert await resp.read() == data[10:20]
    assert resp.headers["Content-Range"] == f"bytes 10-19/{len(data)}"
    tail = await client.get(path, headers={"Range": "bytes=-5"})
    assert (tail.status, await tail.read()) == (206, data[-5:])
    same = await client.get(path, headers={"Range": "bytes=0-3",
                                           "If-Range": f'"{meta["sha256"]}"'})
    assert (same.status, await same.read()) == (206, data[:4])
    other = await client.get(path, headers={"Range": "bytes=0-3", "If-Range": '"stale"'})
    assert (other.status, await other.read()) == (200, data)
    bad = await client.get(path, headers={"Range": f"bytes={len(data) + 10}-"})
    assert bad.status == 416


@pytest.mark.parametrize("rng", ["bytes=999999-", "bytes=10240-10300", "bytes=0-1,5-6",
                                 "bytes=x-y"])
async def test_unsatisfiable_range_is_a_problem(client: Client, rng: str) -> None:
    """A Range past the end, of several ranges or malformed is a 416 problem document (not
    an empty body) with `Content-Range: bytes */SIZE`; the artifact itself is still served."""
    data = bytes(range(256)) * 40
    meta = await upload(client, data)
    path = f"{API}/artifacts/{meta['artifact_id']}"
    resp = await client.get(path, headers={"Range": rng})
    await problem_of(resp, 416)
    assert resp.headers["Content-Range"] == f"bytes */{len(data)}"
    whole = await client.get(path, headers={"Range": rng, "If-Range": '"stale"'})
    assert (whole.status, await whole.read()) == (200, data)


async def test_same_bytes_are_stored_once(client: Client) -> None:
    """Two uploads of the same bytes: two artifacts, one sha256, one file on disk."""
    first = await upload(client, b"same bytes", name="a.txt")
    second = await upload(client, b"same bytes", name="b.txt")
    assert first["artifact_id"] != second["artifact_id"]
    assert first["sha256"] == second["sha256"]
    assert len(blobs(client)) == 1
    for meta in (first, second):
        resp = await client.get(f"{API}/artifacts/{meta['artifact_id']}")
        assert await resp.read() == b"same bytes"


async def test_the_size_limit(make_client: MakeClient) -> None:
    """Past `[artifacts] max_bytes`: 413 (declared length or streamed), nothing kept;
    `[server] max_body_bytes` does not bound uploads."""
    client = await make_client(artifacts={"max_bytes": 4096},
                               server={"max_body_bytes": 1024})
    await upload(client, b"x" * 4096)  # four times max_body_bytes: fine
    resp = await client.post(f"{API}/artifacts", data=b"y" * 4097)
    body = await problem_of(resp, 413)
    assert "max_bytes" in body["detail"]

    async def chunked() -> AsyncIterator[bytes]:
        for _ in range(5):
            yield b"z" * 1000

    resp = await client.post(f"{API}/artifacts", data=chunked())
    await problem_of(resp, 413)
    assert len(blobs(client)) == 1
    assert temps(client) == []
    rows = await client.app[STORE]._rows("SELECT count(*) FROM artifacts")
    assert rows[0][0] == 1


async def test_an_aborted_upload_leaves_nothing(client: Client) -> None:
    """A client that drops the connection mid-upload: no artifact, no file, no temp file."""
    sent = asyncio.Event()

    async def broken() -> AsyncIterator[bytes]:
        yield b"a" * 100_000
        sent.set()
        raise ConnectionResetError("the client went away")

    with pytest.raises(aiohttp.ClientError):
        await client.post(f"{API}/artifacts", data=broken())
    assert sent.is_set()
    async with asyncio.timeout(10):
        while temps(client):  # the server notices the drop on its side
            await asyncio.sleep(0.01)
    assert blobs(client) == []
    rows = await client.app[STORE]._rows("SELECT count(*) FROM artifacts")
    assert rows[0][0] == 0


@pytest.mark.timeout(60)
async def test_a_crash_mid_upload_leaves_nothing_visible(tmp_path: Path) -> None:
    """`workflowd serve` killed with SIGKILL while an upload streams in: after a restart
    there is no artifact row, no stored file, and the temp file is gone."""
    server = Server(tmp_path)
    gate = asyncio.Event()
    async with aiohttp.ClientSession() as session:
        try:
            await server.start(session)

            async def slow() -> AsyncIterator[bytes]:
                yield b"b" * 200_000
                gate.set()
                await asyncio.sleep(30)  # the server dies meanwhile
                yield b"never"

            upload_task = asyncio.create_task(session.post(
                f"{server.url}{API}/artifacts", data=slow(), params={"name": "big"}))
            await gate.wait()
            temp_dir = tmp_path / "artifacts" / "tmp"
            async with asyncio.timeout(10):
                while not any(temp_dir.iterdir()):
                    await asyncio.sleep(0.01)
            assert await server.signal(signal.SIGKILL) == -signal.SIGKILL
            server.proc = None
            upload_task.cancel()
            with pytest.raises((asyncio.CancelledError, aiohttp.ClientError)):
                await upload_task
            assert any(temp_dir.iterdir())  # left by the crash, never visible
            await server.start(session)
            assert list(temp_dir.iterdir()) == []
            assert [p for p in (tmp_path / "artifacts" / "blobs").rglob("*")
                    if p.is_file()] == []
            async with session.get(f"{server.url}{API}/executions") as resp:
                assert resp.status == 200
        finally:
            await server.stop()
    with sqlite3.connect(tmp_path / "wd.db") as conn:
        assert conn.execute("SELECT count(*) FROM artifacts").fetchone()[0] == 0


async def test_input_references_are_checked_and_steps_read_and_write(client: Client) -> None:
    """An input naming a missing artifact is 422 at its place; a step reads the named one
    and saves outputs (async and `def`), all listed with the execution."""
    resp = await client.post(f"{API}/workflows/shouter/executions",
                             json={"input": {"doc": {"artifact_id": "missing"}}})
    problem = await problem_of(resp, 422)
    assert problem["errors"][0]["loc"] == ["body", "input", "doc", "artifact_id"]
    doc = await upload(client, b"Hello Artifacts", name="in.txt", media_type="text/plain")
    execution_id = (await submit(client, "shouter",
                                 input={"doc": {"artifact_id": doc["artifact_id"]}}))[
        "execution_id"]
    status = await wait_for_status(client, execution_id, "completed", "failed")
    assert status["status"] == "completed", status
    result = (await get_json(client, f"{API}/executions/{execution_id}/result"))["result"]
    out = await client.get(f"{API}/artifacts/{result['out']['artifact_id']}")
    assert (await out.read(), out.headers["Content-Type"]) == (b"HELLO ARTIFACTS",
                                                               "text/plain")
    whisper = await client.get(f"{API}/artifacts/{result['whisper']['artifact_id']}")
    assert await whisper.read() == b"hello artifacts"
    listed = await get_json(client, f"{API}/executions/{execution_id}/artifacts")
    roles = {item["name"]: item["roles"] for item in listed["items"]}
    assert roles == {"in.txt": ["input", "read"], "shout.txt": ["read", "output"],
                     "whisper.txt": ["output"]}
    await problem_of(await client.get(f"{API}/executions/nope/artifacts"), 404)


async def _age_artifacts(client: Client, hours: float) -> None:
    old = format_ts(datetime.now(UTC) - timedelta(hours=hours))
    await store_sql(client.app[STORE], "UPDATE artifacts SET created_at = ?", old)


async def _there(client: Client, meta: dict[str, Any]) -> bool:
    resp = await client.get(f"{API}/artifacts/{meta['artifact_id']}")
    assert resp.status in (200, 404)
    return resp.status == 200


async def test_retention_deletes_artifacts_no_execution_uses(client: Client) -> None:
    """An artifact goes with the last execution that used it, an old unused upload goes, a
    recent one stays; a file goes once no artifact names it."""
    store, artifacts = client.app[STORE], client.app[ARTIFACTS]
    shared = await upload(client, b"shared", name="shared.txt")
    alone = await upload(client, b"alone", name="alone.txt")
    unused = await upload(client, b"unused", name="unused.txt")
    done = (await submit(client, "three-steps", input={
        "a": {"artifact_id": shared["artifact_id"]},
        "b": [{"artifact_id": alone["artifact_id"]}]}))["execution_id"]
    kept = (await submit(client, "waiter", input={
        "name": "keep", "doc": {"artifact_id": shared["artifact_id"]}}))["execution_id"]
    await wait_for_status(client, done, "completed")
    await _age_artifacts(client, hours=2)
    fresh = await upload(client, b"fresh", name="fresh.txt")

    assert await sweep(store, 3600.0, artifacts) == 0  # nothing finished an hour ago
    assert [await _there(client, m) for m in (shared, alone, unused, fresh)] == [
        True, True, False, True]  # only the old upload no execution used
    listed = await get_json(client, f"{API}/executions/{done}/artifacts")
    assert {item["name"] for item in listed["items"]} == {"shared.txt", "alone.txt"}

    await _age_execution(client, done, hours=2)
    assert await sweep(store, 3600.0, artifacts) == 1  # `done` goes, `kept` still runs
    assert [await _there(client, m) for m in (shared, alone, fresh)] == [True, False, True]
    assert len(blobs(client)) == 2

    await client.post(f"{API}/executions/{kept}/cancel")
    await wait_for_status(client, kept, "cancelled")
    await _age_execution(client, kept, hours=2)
    assert await sweep(store, 3600.0, artifacts) == 1
    assert [await _there(client, m) for m in (shared, fresh)] == [False, True]
    assert blobs(client) == [artifacts.path(fresh["sha256"])]


async def _age_execution(client: Client, execution_id: str, hours: float) -> None:
    old = format_ts(datetime.now(UTC) - timedelta(hours=hours))
    await store_sql(client.app[STORE], "UPDATE executions SET finished_at = ? WHERE id = ?",
                    old, execution_id)


async def test_bad_input_to_the_new_routes_is_a_4xx_problem(client: Client) -> None:
    """Bad names, modes and bodies on the routes of issue 13: 4xx problem answers, never 500."""
    for name in ("", "x" * 256):
        resp = await client.post(f"{API}/artifacts", params={"name": name}, data=b"x")
        await problem_of(resp, 422)
    resp = await client.post(f"{API}/workflows/three-steps/executions", json={"mode": "turbo"})
    assert (await problem_of(resp, 422))["errors"][0]["loc"] == ["body", "mode"]
    resp = await client.post(f"{API}/workflows", data=b'{"id": "n", "timeout": NaN}',
                             headers={"Content-Type": "application/json"})
    await problem_of(resp, 400)
    await problem_of(await client.put(f"{API}/workflows/anything", data=b""), 422)
    await problem_of(await client.get(f"{API}/workflows/unknown/versions"), 404)
    await problem_of(await client.delete(f"{API}/workflows/unknown"), 404)
    deep: Any = 1
    for _ in range(40):
        deep = [deep]
    resp = await client.post(f"{API}/workflows", json={"id": "deep", "steps": [{
        "name": "h", "type": "http", "url": "http://127.0.0.1:1/", "json": {"a": deep}}]})
    assert "nests at most" in (await problem_of(resp, 422))["errors"][0]["msg"]


async def test_input_references_are_found_however_the_key_is_written(client: Client) -> None:
    """`artifact_id` written with a JSON escape is the same key: a missing artifact is 422 and a
    present one is recorded as the execution's input."""
    path = f"{API}/workflows/three-steps/executions"
    headers = {"Content-Type": "application/json"}

    def escaped(artifact_id: str) -> bytes:
        body = json.dumps({"input": {"doc": {"artifact_id": artifact_id}}})
        return body.replace('"artifact_id"', '"artifact\\u005fid"').encode()

    assert b"artifact_id" not in escaped("nope")
    resp = await client.post(path, data=escaped("nope"), headers=headers)
    problem = await problem_of(resp, 422)
    assert problem["errors"][0]["loc"] == ["body", "input", "doc", "artifact_id"]
    doc = await upload(client, b"escaped", name="escaped.txt")
    resp = await client.post(path, data=escaped(doc["artifact_id"]), headers=headers)
    assert resp.status == 202, await resp.text()
    execution_id = (await resp.json())["execution_id"]
    listed = await get_json(client, f"{API}/executions/{execution_id}/artifacts")
    assert [(item["name"], item["roles"]) for item in listed["items"]] == [
        ("escaped.txt", ["input"])]
