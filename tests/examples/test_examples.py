"""The bundled examples as a user runs them: the document pipeline stepped through by hand,
and the jobs flow of the README (a JSON workflow over an uploaded text)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient
from pytest_aiohttp import AiohttpClient

from tests.helpers import (
    API,
    assert_gapless,
    events,
    get_json,
    problem_of,
    submit,
    wait_for_event,
    wait_for_pause,
    wait_for_status,
    wait_for_step_event,
)
from tests.test_recovery import _free_port as free_port
from workflowd.api import create_app
from workflowd.config import Settings

Client = TestClient[Any, Any]
PDF = Path(__file__).resolve().parents[2] / "src" / "workflowd" / "examples" / "invoice.pdf"
TERMINAL = ("completed", "failed", "cancelled", "timed_out", "rejected")


async def _on_its_port(aiohttp_client: AiohttpClient, settings: Settings) -> Client:
    """The app listening on the port its settings name, so that what it posts to itself
    (the OCR worker's job, the worker's callbacks) arrives."""
    port = free_port()
    data = settings.model_dump()
    data["server"]["port"] = port
    return await aiohttp_client(create_app(Settings.model_validate(data)),
                                server_kwargs={"port": port})


async def test_document_pipeline_stepped_through_by_hand(aiohttp_client: AiohttpClient,
                                                         settings: Settings) -> None:
    """Upload the PDF, run in manual mode: inspect, the OCR worker's progress per page, the
    review gate, publish; the text comes back as an artifact."""
    client = await _on_its_port(aiohttp_client, settings)
    resp = await client.post(f"{API}/artifacts", params={"name": "invoice.pdf"},
                             data=PDF.read_bytes(), headers={"Content-Type": "application/pdf"})
    assert resp.status == 201
    pdf = await resp.json()
    execution_id = (await submit(client, "document-pipeline", mode="manual", input={
        "document": {"artifact_id": pdf["artifact_id"]}, "ocr_seconds_per_page": 0.01}))[
        "execution_id"]
    await wait_for_pause(client, execution_id, 0)

    assert (await client.post(f"{API}/executions/{execution_id}/step")).status == 202
    await wait_for_pause(client, execution_id, 1)
    execution = await get_json(client, f"{API}/executions/{execution_id}")
    assert execution["state"]["document"]["pages"] == 2
    assert execution["next_step"] == "ocr"

    assert (await client.post(f"{API}/executions/{execution_id}/step")).status == 202
    started = await wait_for_step_event(client, execution_id, "step_started", "ocr")
    assert started["status"] == "waiting"
    await wait_for_pause(client, execution_id, 2)
    progress = [e for e in await events(client, execution_id) if e["type"] == "step_progress"
                and e["step"] == "ocr"]
    # Reports closer than [live] progress_interval are coalesced: the last one is kept.
    assert progress[-1]["message"] == "page 2 of 2"
    assert progress[-1]["percentage"] == 100
    execution = await get_json(client, f"{API}/executions/{execution_id}")
    assert "Invoice 2026-0142" in execution["state"]["ocr"]["text"]

    assert (await client.post(f"{API}/executions/{execution_id}/step")).status == 202
    await wait_for_status(client, execution_id, "awaiting_approval")
    resp = await client.post(f"{API}/executions/{execution_id}/approve",
                             json={"comment": "text checked"})
    assert resp.status == 202
    await wait_for_pause(client, execution_id, 3)
    assert (await client.post(f"{API}/executions/{execution_id}/resume")).status == 202
    status = await wait_for_status(client, execution_id, *TERMINAL)
    assert status["status"] == "completed"

    result = (await get_json(client, f"{API}/executions/{execution_id}/result"))["result"]
    assert (result["pages"], result["document"]["name"]) == (2, "invoice.pdf")
    text = await client.get(f"{API}/artifacts/{result['text']['artifact_id']}")
    assert text.headers["Content-Type"].startswith("text/plain")
    assert "Total due 284.40" in (await text.read()).decode()
    listed = await get_json(client, f"{API}/executions/{execution_id}/artifacts")
    assert {item["name"]: item["roles"] for item in listed["items"]} == {
        "invoice.pdf": ["input", "read"], "invoice.txt": ["output"]}
    trace = await get_json(client, f"{API}/executions/{execution_id}/trace")
    assert trace["execution_path"] == ["inspect", "ocr", "review", "publish"]
    assert_gapless(await events(client, execution_id))


async def test_document_pipeline_refuses_what_is_not_a_pdf(client: Client) -> None:
    """A text artifact given as the document: `inspect` fails, saying so."""
    resp = await client.post(f"{API}/artifacts", data=b"hello", params={"name": "a.txt"})
    doc = await resp.json()
    execution_id = (await submit(client, "document-pipeline", input={
        "document": {"artifact_id": doc["artifact_id"]}}))["execution_id"]
    await wait_for_status(client, execution_id, *TERMINAL)
    result = await get_json(client, f"{API}/executions/{execution_id}/result")
    assert result["status"] == "failed"
    assert "not a PDF" in result["error"]["message"]


WORD_COUNT: dict[str, Any] = {
    "id": "word-count", "title": "Count the words of a text",
    "steps": [
        {"name": "count", "type": "call", "function": "count_words"},
        {"name": "size", "type": "branch", "default": "report", "cases": [
            {"when": {">": [{"$ref": "/state/count/words"}, 1000]}, "goto": "review"}]},
        {"name": "review", "type": "approval", "prompt": "A long text: write its report?"},
        {"name": "report", "type": "call", "function": "write_report"}]}


async def test_the_jobs_flow_of_the_readme(client: Client) -> None:
    """Define the JSON workflow, upload a text, run it in sync mode, download the report."""
    resp = await client.post(f"{API}/workflows", json=WORD_COUNT)
    assert resp.status == 201, await resp.text()
    resp = await client.post(f"{API}/artifacts", params={"name": "notes.txt"},
                             data=b"one two two three three three\n",
                             headers={"Content-Type": "text/plain"})
    text = await resp.json()
    resp = await client.post(f"{API}/workflows/word-count/executions", params={"wait": "30"},
                             json={"input": {"text": {"artifact_id": text["artifact_id"]}}})
    assert resp.status == 200, await resp.text()
    execution = await resp.json()
    assert execution["status"] == "completed"
    assert execution["result"]["count"]["words"] == 6
    report = await client.get(f"{API}/artifacts/"
                              f"{execution['result']['report']['artifact_id']}")
    assert (await report.json(content_type=None))["top"][0] == ["three", 3]
    trace = await get_json(client, f"{API}/executions/{execution['execution_id']}/trace")
    assert trace["branch_decisions"]["size"]["outcome"] == "report"
    await problem_of(await client.post(f"{API}/workflows/word-count/executions",
                                       json={"input": {"text": {"artifact_id": "gone"}}}), 422)


async def test_the_demo_ocr_worker_takes_only_jobs_of_a_waiting_step(client: Client) -> None:
    """`/demo/ocr` is open (workflowd posts to it without a bearer token): a made-up job, or
    one whose token is not that of a step waiting for its worker, is refused (403), and a
    number it cannot read is a 4xx, never a 500."""
    job = {"execution_id": "nope", "step": "ocr", "callback": {"token": "forged"},
           "input": {"document": {"artifact_id": "a"}, "ocr_seconds_per_page": 10 ** 400}}
    resp = await client.post("/demo/ocr", data=json.dumps(job))
    assert resp.status == 403, await resp.text()
    waiting = (await submit(client, "external-job"))["execution_id"]
    await wait_for_event(client, waiting, "step_started")
    resp = await client.post("/demo/ocr", data=json.dumps({**job, "execution_id": waiting,
                                                           "step": "work"}))
    assert resp.status == 403, await resp.text()
    resp = await client.post("/demo/ocr", data=b"[1]")
    assert resp.status == 400, await resp.text()
