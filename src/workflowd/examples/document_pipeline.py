"""The `document-pipeline` workflow: a PDF artifact in, its text out as an artifact.

1. `inspect`: checks the input names a PDF artifact and counts its pages.
2. `ocr`: an external step. workflowd posts the job to an OCR service, here the bundled
   OCR-like worker at `POST /demo/ocr` on this same service, which reads the PDF, reports
   progress page by page (`.../steps/ocr/progress`) and completes the step with the text.
3. `review`: a person checks the text (an approval gate).
4. `publish`: the text is saved as a new artifact; the result names it.

Submit it with `"mode": "manual"` to step through it by hand (`POST .../step`), checking each
step's result before the next. Input: `{"document": {"artifact_id": "..."}}`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from workflowd import Context, Workflow, done
from workflowd.examples.pdftext import page_count

__all__ = ["pipeline"]

pipeline = Workflow("document-pipeline", title="Document pipeline", max_cycles=20,
                    timeout=86400.0, version=1,
                    description="OCR a PDF artifact, review its text, publish it as an "
                                "artifact.")


def _document_id(ctx: Context) -> str:
    document = ctx.input.get("document")
    if not isinstance(document, Mapping) or "artifact_id" not in document:
        raise ValueError('the input needs "document": {"artifact_id": "..."} (upload the PDF '
                         "with POST /api/v1/artifacts first)")
    return str(document["artifact_id"])


@pipeline.step(kind="data_processing", tool="PdfInspector")
async def inspect(ctx: Context) -> None:
    artifact_id = _document_id(ctx)
    info = await ctx.artifacts.info(artifact_id)
    data = await ctx.artifacts.read(artifact_id)
    if not data.startswith(b"%PDF-"):
        raise ValueError(f"artifact {info['name']!r} is not a PDF")
    pages = page_count(data)
    await ctx.progress(100, f"{pages} page(s), {info['size']} bytes", current_task="inspect")
    ctx.state["document"] = {"artifact_id": artifact_id, "name": info["name"],
                             "size": info["size"], "sha256": info["sha256"], "pages": pages}


pipeline.external("ocr", url="/demo/ocr", timeout=600.0, tool="OcrService")

pipeline.approval("review", prompt="Check the OCR text (state.ocr.text) before it is published")


@pipeline.step(kind="tool_call", tool="Publisher")
async def publish(ctx: Context) -> Any:
    ocr = ctx.state["ocr"]
    name = ctx.state["document"]["name"].rsplit(".", 1)[0] + ".txt"
    saved = await ctx.artifacts.save(name, ocr["text"], "text/plain; charset=utf-8")
    ctx.log("published", artifact_id=saved["artifact_id"], words=ocr["words"])
    return done({"document": ctx.state["document"], "pages": ocr["pages"],
                 "words": ocr["words"], "text": saved})
