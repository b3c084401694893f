"""Workflows defined as data (API.md §11): define, version, list and delete JSON workflows;
the catalog they live in, and the HTTP client their `http` steps call with."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiohttp import web

from workflowd import answers as A
from workflowd.answers import Page
from workflowd.api.delivery import CheckedResolver
from workflowd.api.keys import CATALOG, OUTBOUND, RESOLVER, SCHEDULER, STORE, WORKFLOWS
from workflowd.api.parsing import json_response, read_json
from workflowd.api.routing import Routes
from workflowd.api.views import workflow_view
from workflowd.codec import NotJSON, dumps, loads
from workflowd.definitions import FUNCTIONS
from workflowd.engine.catalog import Catalog, Defined
from workflowd.errors import UnknownWorkflowError, WorkflowConflictError
from workflowd.flows import DefinitionBody, HttpStepError, compile_definition, validate_definition
from workflowd.outbound import OutboundRefused
from workflowd.records import API_PREFIX

__all__ = ["catalog_ctx", "definition_view", "routes"]

routes = Routes()
BASE = f"{API_PREFIX}/workflows"
MAX_ANSWER = 1024 * 1024  # an `http` step's answer lands in the state: at most 1 MiB


async def catalog_ctx(app: web.Application) -> AsyncIterator[None]:
    """The catalog of definitions (Python and stored JSON), and the client `http` steps use
    (no redirects followed: a redirect could lead past the outbound rules)."""
    policy = app[OUTBOUND]
    connector = aiohttp.TCPConnector(resolver=CheckedResolver(policy, app.get(RESOLVER)))
    session = aiohttp.ClientSession(connector=connector)

    async def fetch(method: str, url: str, headers: dict[str, str], body: Any,
                    timeout: float) -> tuple[int, Any]:
        try:
            policy.check_url(url)
        except OutboundRefused as exc:
            raise HttpStepError(f"{url!r} is refused: {exc}") from None
        data = None
        if body is not None:
            data = dumps(body).encode()
            headers = {"Content-Type": "application/json", **headers}
        async with session.request(method, url, data=data, headers=headers,
                                   allow_redirects=False,
                                   timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            raw = await resp.content.read(MAX_ANSWER + 1)
            if len(raw) > MAX_ANSWER:
                raise HttpStepError(f"{method} {url}: the answer is larger than 1 MiB")
            return resp.status, _answer(raw, resp.content_type)

    def compile_(body: DefinitionBody, version: int) -> Any:
        return compile_definition(body, version, functions=FUNCTIONS, fetch=fetch)

    app[CATALOG] = Catalog(app[WORKFLOWS], app[STORE], compile_)
    yield
    await session.close()


def _answer(raw: bytes, content_type: str) -> Any:
    """An answer as the state keeps it: its JSON, else its text (None when empty)."""
    if not raw.strip():
        return None
    if content_type == "application/json" or content_type.endswith("+json"):
        try:
            return loads(raw)
        except (ValueError, NotJSON):
            pass
    return raw.decode("utf-8", errors="replace")


def definition_view(defined: Defined) -> dict[str, Any]:
    """A stored version as the API shows it: the definition, with its version and the way
    each step shows in steps and trace (`kind`, `agent`, `tool`)."""
    wf = defined.workflow
    docs = defined.definition.get("steps")
    steps = [{**doc, "kind": step.kind, "agent": step.agent, "tool": step.tool}
             for doc, step in zip(docs if isinstance(docs, list) else [], wf.steps,
                                  strict=False)]
    return {**defined.definition, "id": wf.id, "title": wf.title or wf.id,
            "version": wf.version, "source": "json", "created_at": defined.created_at,
            "latest": defined.latest, "steps": steps}


async def _definition(request: web.Request, path_id: str | None) -> DefinitionBody:
    # Validated by the flows package, which points its errors into the definition itself.
    data = await read_json(request)
    return validate_definition(data, functions=FUNCTIONS, path_id=path_id)


def _stored(request: web.Request, defined: Defined) -> web.Response:
    request.app[SCHEDULER].adopt_held(defined.workflow)  # executions held for this id, if any
    location = f"{BASE}/{defined.workflow.id}"
    return json_response(definition_view(defined), 201, headers={"Location": location})


@routes.post(BASE, role="admin", body=DefinitionBody, answers={201: A.Definition, 409: None},
             summary="Define a workflow as JSON (version 1)")
async def create_workflow(request: web.Request) -> web.Response:
    body = await _definition(request, None)
    return _stored(request, await request.app[CATALOG].define(body, replace=False))


@routes.put(f"{BASE}/{{workflow_id}}", role="admin", body=DefinitionBody,
            answers={201: A.Definition, 404: None, 409: None},
            summary="Store the next version of a workflow defined as JSON")
async def replace_workflow(request: web.Request) -> web.Response:
    workflow_id = request.match_info["workflow_id"]
    if workflow_id in request.app[WORKFLOWS]:
        raise WorkflowConflictError(f"workflow {workflow_id!r} is defined in Python; it "
                                    "cannot be replaced over the API")
    body = await _definition(request, workflow_id)
    return _stored(request, await request.app[CATALOG].define(body, replace=True))


@routes.delete(f"{BASE}/{{workflow_id}}", role="admin", answers={204: None, 404: None,
                                                                 409: None},
               summary="Delete a workflow defined as JSON; running executions finish")
async def delete_workflow(request: web.Request) -> web.Response:
    await request.app[CATALOG].delete(request.match_info["workflow_id"])
    return web.Response(status=204)


@routes.get(f"{BASE}/{{workflow_id}}/versions", role="viewer",
            answers={200: Page[A.Definition | A.WorkflowVersion]},
            summary="Every stored version of a workflow, oldest first")
async def list_versions(request: web.Request) -> web.Response:
    workflow_id = request.match_info["workflow_id"]
    wf = request.app[WORKFLOWS].get(workflow_id)
    if wf is not None:
        items = [{**workflow_view(wf), "created_at": None, "latest": True}]
    else:
        items = [definition_view(d) for d in await request.app[CATALOG].versions(workflow_id)]
    if not items:
        raise UnknownWorkflowError(f"no workflow with id {workflow_id!r}")
    return json_response({"items": items, "next_cursor": None})
