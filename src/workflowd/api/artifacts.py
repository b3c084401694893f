"""Artifacts over HTTP (API.md §12): upload (streamed to disk, never held whole), download
(ETag = sha256, range requests), and what an execution read and wrote."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import structlog
from aiohttp import hdrs, web
from aiohttp.abc import AbstractStreamWriter
from pydantic import BaseModel, ConfigDict, Field

from workflowd import answers as A
from workflowd.answers import Page
from workflowd.api.keys import ARTIFACTS, SCHEDULER, SETTINGS, STORE
from workflowd.api.parsing import json_response, parse_query
from workflowd.api.routing import Routes
from workflowd.codec import encode
from workflowd.engine.artifacts import CHUNK, ArtifactStore, artifact_refs
from workflowd.errors import (
    PayloadTooLargeError,
    PreconditionFailedError,
    RangeNotSatisfiableError,
    UnknownArtifactError,
    ValidationProblem,
)
from workflowd.records import API_PREFIX

__all__ = ["artifacts_ctx", "check_input_artifacts", "routes"]

log = structlog.get_logger("workflowd.artifacts")
routes = Routes()
BASE = f"{API_PREFIX}/artifacts"


async def artifacts_ctx(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    store = ArtifactStore(settings.artifacts.directory(settings.store.path), app[STORE],
                          settings.artifacts.max_bytes)
    await store.open()
    if app[STORE].cluster is not None and not settings.artifacts.dir:
        log.warning("artifacts_dir_not_shared", dir=str(store.dir),
                    why="[artifacts] dir is unset: with several nodes it must name one "
                        "directory every node shares, or an artifact stored on one node is "
                        "missing on the others")
    app[ARTIFACTS] = store
    yield


class UploadQuery(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str = Field(default="upload", min_length=1, max_length=255)


@routes.post(BASE, role="submitter", query=UploadQuery, answers={201: A.Artifact, 413: None},
             raw_body="the file's bytes as they are; Content-Type names its media type",
             summary="Upload an artifact: the body is the file, Content-Type its media type")
async def upload(request: web.Request) -> web.Response:
    query = parse_query(request, UploadQuery)
    store = request.app[ARTIFACTS]
    length = request.content_length
    if length is not None and length > store.max_bytes:
        raise PayloadTooLargeError(f"the artifact is larger than {store.max_bytes} bytes "
                                   "([artifacts] max_bytes)")
    media_type = request.headers.get(hdrs.CONTENT_TYPE) or "application/octet-stream"
    row = await store.put(request.content.iter_chunked(CHUNK), name=query.name,
                          media_type=media_type[:255])
    return json_response(row.view(), 201, headers={"Location": f"{BASE}/{row.artifact_id}"})


class _Blob(web.FileResponse):
    """A stored file with its sha256 as ETag. aiohttp's FileResponse does the ranges; it
    would make its own ETag of the file's time and size, and judge `If-None-Match`,
    `If-Match` and `If-Range` by that one, so those are judged here first."""

    def __init__(self, path: Path, sha256: str, view: web.BaseRequest | None,
                 headers: dict[str, str]) -> None:
        super().__init__(path, chunk_size=CHUNK, headers=headers)
        self._sha256 = sha256
        self._view = view

    @property
    def etag(self) -> Any:
        return web.StreamResponse.etag.fget(self)  # type: ignore[attr-defined]

    @etag.setter
    def etag(self, value: Any) -> None:
        web.StreamResponse.etag.fset(self, self._sha256)  # type: ignore[attr-defined]

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        return await super().prepare(self._view or request)


@routes.get(f"{BASE}/{{artifact_id}}", role="viewer",
            answers={200: None, 206: None, 304: None, 404: None, 412: None, 416: None},
            media_type="*/*",
            summary="Download an artifact (ETag is its sha256; Range requests work)")
async def download(request: web.Request) -> web.StreamResponse:
    store = request.app[ARTIFACTS]
    row = await store.get(request.match_info["artifact_id"])
    if row is None:
        raise UnknownArtifactError(f"no artifact {request.match_info['artifact_id']!r}")
    path = store.path(row.sha256)
    etag = f'"{row.sha256}"'
    if (match := request.if_none_match) is not None and any(
            tag.value in (row.sha256, "*") for tag in match):
        return web.Response(status=304, headers={"ETag": etag})
    if (match := request.if_match) is not None and not any(
            tag.value in (row.sha256, "*") and not tag.is_weak for tag in match):
        raise PreconditionFailedError(f"If-Match does not name this artifact's version, {etag}",
                                      etag)
    view = None
    conditional = (hdrs.IF_NONE_MATCH, hdrs.IF_MATCH, hdrs.IF_RANGE, hdrs.IF_MODIFIED_SINCE,
                   hdrs.IF_UNMODIFIED_SINCE)
    if any(name in request.headers for name in conditional):
        headers = {k: v for k, v in request.headers.items() if k not in conditional}
        if_range = request.headers.get(hdrs.IF_RANGE)
        if if_range is not None and if_range.strip() != etag:
            headers.pop(hdrs.RANGE, None)  # the client's copy is another: send it whole
        view = request.clone(headers=headers)
    _check_range(view or request, row.size)
    filename = quote(row.name, safe="")
    ascii_name = "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_"
                         for c in row.name)
    return _Blob(path, row.sha256, view, {
        hdrs.CONTENT_TYPE: row.media_type,
        hdrs.CONTENT_DISPOSITION: f"attachment; filename=\"{ascii_name}\"; "
                                  f"filename*=UTF-8''{filename}",
        hdrs.CACHE_CONTROL: "private, max-age=31536000, immutable",
        "X-Content-Type-Options": "nosniff",
    })


def _check_range(request: web.BaseRequest, size: int) -> None:
    """A 416 problem for a `Range` that aiohttp's FileResponse would answer 416 with an empty
    body (malformed, several ranges, or starting past the end), judged the way it does."""
    if hdrs.RANGE not in request.headers:
        return
    try:
        rng = request.http_range
    except ValueError:
        raise RangeNotSatisfiableError(
            f"Range {request.headers[hdrs.RANGE]!r} is not one byte range this server reads "
            "(bytes=FIRST-LAST, bytes=FIRST- or bytes=-SUFFIX)", size) from None
    start = rng.start
    if start is None:
        return
    if start < 0 and rng.stop is None:  # a suffix: the last -start bytes
        start = max(0, start + size)
    if start >= size:
        raise RangeNotSatisfiableError(
            f"Range {request.headers[hdrs.RANGE]!r} names no byte of this artifact "
            f"({size} bytes)", size)


@routes.get(f"{API_PREFIX}/executions/{{execution_id}}/artifacts", role="viewer",
            answers={200: Page[A.ExecutionArtifact]},
            summary="The artifacts an execution named in its input, read and wrote")
async def execution_artifacts(request: web.Request) -> web.Response:
    rec = await request.app[SCHEDULER].get(request.match_info["execution_id"])
    items = [{**row.view(), "roles": roles}
             for row, roles in await request.app[STORE].artifacts_of(rec.execution_id)]
    return json_response({"items": items, "next_cursor": None})


async def check_input_artifacts(request: web.Request, value: Any) -> list[str]:
    """The artifact ids an execution's input names (`{"artifact_id": ...}` anywhere);
    422 pointing at each one that does not exist.

    The walk is Python (25 ms for an input of 850 kB), so the parsed input is first encoded
    again (in C, 1.8 ms) and searched for the key: an encoder writes the key `artifact_id` as
    it is, however the client escaped it, so an input without the key is passed at once and
    no reference is missed (the raw body cannot tell: `artifact\u005fid` is the same key)."""
    if b'"artifact_id"' not in encode(value):
        return []
    refs = artifact_refs(value)
    if not refs:
        return []
    found = await request.app[STORE].existing_artifacts(ref for ref, _ in refs)
    errors = [{"loc": ["body", "input", *loc], "msg": f"no artifact {ref!r}"}
              for ref, loc in refs if ref not in found]
    if errors:
        raise ValidationProblem.from_errors(errors)
    return sorted({ref for ref, _ in refs})
