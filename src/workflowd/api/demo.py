"""An OCR-like worker for the `document-pipeline` example's external `ocr` step, served by the
service itself so that the example runs with nothing else installed."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import aiohttp
import structlog
from aiohttp import web

from workflowd.api.keys import ARTIFACTS, SCHEDULER, SETTINGS
from workflowd.api.parsing import json_response, read_json
from workflowd.api.routing import Routes
from workflowd.errors import BadRequestError, ForbiddenError, UnknownExecutionError
from workflowd.examples.pdftext import page_texts
from workflowd.records import API_PREFIX

__all__ = ["demo_ctx", "routes"]

log = structlog.get_logger("workflowd.demo")
routes = Routes()
JOBS = web.AppKey("demo_ocr_jobs", set[asyncio.Task[None]])


async def demo_ctx(app: web.Application) -> AsyncIterator[None]:
    """OCR jobs under way; cancelled at shutdown (their steps wait, and time out, as for any
    worker that goes away)."""
    jobs: set[asyncio.Task[None]] = set()
    app[JOBS] = jobs
    yield
    for task in list(jobs):
        task.cancel()
    if jobs:
        await asyncio.wait(jobs, timeout=5.0)


@routes.post("/demo/ocr", role="public", internal=True, answers={202: None, 403: None},
             summary="An OCR-like worker for the document-pipeline example")
async def ocr(request: web.Request) -> web.Response:
    """Takes the job workflowd posts for an external step and does it in the background, as
    an outside service would: it reports progress page by page and completes the step over
    the API, with the step's token. It calls back only this service (whatever the job says)
    and reads the PDF from this service's artifacts."""
    job = await read_json(request)
    try:
        execution_id, step = str(job["execution_id"]), str(job["step"])
        token = str(job["callback"]["token"])
        document = job["input"]["document"]["artifact_id"]
    except (KeyError, TypeError) as exc:
        raise BadRequestError(f"not a job of an external step: {exc!r}") from None
    # Open to anyone (workflowd posts it without a bearer token), so only a job whose token
    # is the one of a step waiting for its worker is taken.
    await _check_waiting(request, execution_id, step, token)
    delay = _seconds(job["input"].get("ocr_seconds_per_page", 0.5))
    base = (f"{request.app[SETTINGS].server.base_url()}{API_PREFIX}/executions/"
            f"{quote(execution_id, safe='')}/steps/{quote(step, safe='')}")
    task = asyncio.create_task(_ocr(request.app, base, token, str(document), delay),
                               name=f"demo-ocr:{execution_id}")
    jobs = request.app[JOBS]
    jobs.add(task)
    task.add_done_callback(jobs.discard)
    return json_response({"accepted": True}, 202)


async def _check_waiting(request: web.Request, execution_id: str, step: str,
                         token: str) -> None:
    try:
        rec = await request.app[SCHEDULER].get(execution_id)
    except UnknownExecutionError:
        raise ForbiddenError("not a job of a step waiting for its worker") from None
    wait, record = rec.wait, rec.step
    if wait is None or wait.kind != "external" or record is None or record.name != step \
            or not hmac.compare_digest(token.encode(), (wait.token or "").encode()):
        raise ForbiddenError("not a job of a step waiting for its worker")


def _seconds(value: Any) -> float:
    """Seconds a page takes, within 0 to 5 (0.5 for anything that is not a number)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.5
    try:
        return min(max(float(value), 0.0), 5.0)
    except (OverflowError, ValueError):
        return 0.5


async def _ocr(app: web.Application, base: str, token: str, artifact_id: str,
               delay: float) -> None:
    headers = {"X-Workflowd-Token": token}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:

        async def post(what: str, body: dict[str, Any]) -> None:
            async with session.post(f"{base}/{what}", json=body, headers=headers) as resp:
                if resp.status >= 300:
                    log.warning("demo_ocr_refused", what=what, status=resp.status,
                                detail=(await resp.text())[:200])

        try:
            row = await app[ARTIFACTS].get(artifact_id)
            if row is None:
                raise LookupError(f"no artifact {artifact_id!r}")
            data = await asyncio.to_thread(app[ARTIFACTS].path(row.sha256).read_bytes)
            pages = page_texts(data) or [""]
            for n in range(1, len(pages) + 1):
                await asyncio.sleep(delay)
                await post("progress", {"percentage": round(100 * n / len(pages), 1),
                                        "message": f"page {n} of {len(pages)}",
                                        "current_task": f"page {n}", "custom_data": {
                                            "characters": len(pages[n - 1])}})
            text = "\n\n".join(pages)
            await post("complete", {"success": True, "output": {
                "pages": len(pages), "text": text, "words": len(text.split())}})
        except (OSError, LookupError, aiohttp.ClientError) as exc:
            log.warning("demo_ocr_failed", artifact_id=artifact_id, error=str(exc))
            with contextlib.suppress(aiohttp.ClientError):
                await post("complete", {"success": False, "error": {
                    "code": "ocr_failed", "message": str(exc)}})
