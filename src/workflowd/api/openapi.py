"""`GET /openapi.json`: the OpenAPI 3.1 description of the API, built from the route
declarations (`api.routing`) and the pydantic models they name. Nothing here is a second copy
of a schema: bodies, queries and answers are the models the handlers read and the tests check.

Every operation also gets the problem answers its declaration implies (404 for a path with an
id; 400/413/422 for a body; 422 for a query; 400/413/422 for an `Idempotency-Key`, which must
be well formed, makes the body read, and must not be reused for another request; 400 for a
`Last-Event-ID`; 503 for a route that writes, when the store refuses) and a `default` problem
answer, for what any route may answer (401/403 with auth on, 405, 503 while starting).
"""

from __future__ import annotations

import re
import weakref
from http import HTTPStatus
from typing import Any

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from workflowd import __version__
from workflowd.answers import Problem, ValidationProblemDocument
from workflowd.api.auth import STEP_TOKEN
from workflowd.api.idempotency import KEY_PATTERN
from workflowd.api.parsing import json_response
from workflowd.api.routing import Routes, Spec, specs
from workflowd.codec import dumps

__all__ = ["build_document", "routes"]

routes = Routes()
REF = "#/components/schemas/{model}"
PROBLEM_MEDIA = "application/problem+json"
_PARAM = re.compile(r"\{([^}:]+)\}")
_DESCRIPTION = (
    "Durable background workflows: submit, follow, approve, reject and cancel executions.\n\n"
    "Errors are RFC 9457 problem documents; `type` is `urn:workflowd:problem:<code>`. Each "
    "operation names the role it needs in `x-workflowd-role` (with `[auth] enabled`: a bearer "
    "token of that role, or `admin`). The WebSocket routes are listed as the GET that opens "
    "them (101), and answer 426 to a GET without the upgrade."
)
_STATUS_TEXT = {
    101: "Switching to the WebSocket protocol",
    304: "Not modified since the given ETag or seq",
}
# Documents already built, one per application (its routes are fixed once it runs).
_BUILT: weakref.WeakKeyDictionary[web.Application, str] = weakref.WeakKeyDictionary()


def build_document(app: web.Application) -> dict[str, Any]:
    """The OpenAPI document of every declared route of `app` (internal ones left out)."""
    declared = [(route, spec) for route, spec in specs(app)
                if spec is not None and route.method == spec.method and not spec.internal]
    schemas = _Schemas()
    paths: dict[str, dict[str, Any]] = {}
    operations: list[tuple[Spec, dict[str, Any]]] = []
    for route, spec in declared:
        name = getattr(route.handler, "__name__", None) or spec.path
        op = paths.setdefault(spec.path, {})[spec.method.lower()] = _operation(spec, name, schemas)
        operations.append((spec, op))
    _link(operations)
    return {
        "openapi": "3.1.0",
        "info": {"title": "workflowd", "version": __version__, "description": _DESCRIPTION,
                 "license": {"name": "MIT", "identifier": "MIT"}},
        "paths": paths,
        "components": {
            "schemas": schemas.resolve(),
            "securitySchemes": {"bearer": {
                "type": "http", "scheme": "bearer",
                "description": "With `[auth] enabled`: a token configured by its SHA-256 "
                               "(`workflowd token create`)."}},
        },
    }


class _Schemas:
    """Collects the models named by the routes; their JSON schemas are made in one pass so that
    every model has one name under `components/schemas`."""

    def __init__(self) -> None:
        self._wanted: dict[tuple[type[BaseModel], JsonSchemaMode], dict[str, Any]] = {}
        self._inline: dict[str, Any] = {}

    def ref(self, model: type[BaseModel], mode: JsonSchemaMode) -> dict[str, Any]:
        """A reference to `model`, filled in by `resolve`."""
        return self._wanted.setdefault((model, mode), {})

    def properties(self, model: type[BaseModel]) -> tuple[dict[str, Any], set[str]]:
        """A query model's fields as JSON schemas, and which are required."""
        schema = model.model_json_schema(ref_template=REF)
        self._inline.update(schema.get("$defs", {}))
        return schema.get("properties", {}), set(schema.get("required", ()))

    def resolve(self) -> dict[str, Any]:
        keys = list(self._wanted)
        refs, top = models_json_schema(keys, ref_template=REF)
        for key in keys:
            self._wanted[key].update(refs[key])
        return {**self._inline, **top.get("$defs", {})}


def _operation(spec: Spec, name: str, schemas: _Schemas) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": name,
        "summary": spec.summary,
        "tags": [_tag(spec.path)],
        "x-workflowd-role": spec.role,
    }
    if spec.role != "public":
        op["security"] = [{"bearer": []}]
    parameters = [{"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
                  for p in _PARAM.findall(spec.path)]
    if spec.query is not None:
        props, required = schemas.properties(spec.query)
        for field, schema in props.items():
            parameters.append(_query_parameter(field, schema, field in required))
    for header, description in spec.headers.items():
        parameters.append({"name": header, "in": "header", "required": False,
                           "description": description, "schema": _header_schema(header)})
    if spec.step_token:
        # Where `auth.step_token` reads it, in its order.
        what = ("the step run's token (`ctx.callback.token`, or the `callback` of its "
                "`step_started` event)")
        parameters.append({"name": STEP_TOKEN, "in": "header", "required": False,
                           "description": what, "schema": {"type": "string"}})
        parameters.append({"name": "token", "in": "query", "required": False,
                           "description": f"{what}, when not sent as {STEP_TOKEN}",
                           "schema": {"type": "string"}})
    if parameters:
        op["parameters"] = parameters
    if spec.body is not None:
        op["requestBody"] = {
            "required": False,  # an empty body counts as `{}`
            "content": {"application/json": {"schema": schemas.ref(spec.body, "validation")}},
        }
    if spec.raw_body is not None:
        op["requestBody"] = {"required": True, "description": spec.raw_body, "content": {
            "*/*": {"schema": {"type": "string", "contentMediaType": "application/octet-stream"}}}}
    op["responses"] = _responses(spec, schemas, has_path=bool(_PARAM.search(spec.path)))
    if spec.stream == "websocket":
        op["description"] = "A WebSocket: open it with an `Upgrade: websocket` handshake."
    return op


def _link(operations: list[tuple[Spec, dict[str, Any]]]) -> None:
    """OpenAPI links from the answers that name an id (`Spec.links`) to every operation that
    takes it in its path: what a client (or a stateful fuzzer) can do next with the answer."""
    takers: dict[str, list[dict[str, Any]]] = {}
    for spec, op in operations:
        if spec.stream is None:
            for param in _PARAM.findall(spec.path):
                takers.setdefault(param, []).append(op)
    for spec, op in operations:
        links: dict[str, Any] = {}
        for param, pointer in spec.links.items():
            for target in takers.get(param, ()):
                if target is not op:
                    links[target["operationId"]] = {
                        "operationId": target["operationId"],
                        "parameters": {param: f"$response.body#{pointer}"}}
        if links:
            for status, response in op["responses"].items():
                if status.startswith("2"):
                    response["links"] = links


def _tag(path: str) -> str:
    parts = [p for p in path.split("/") if p and not p.startswith("{")]
    if parts[:2] == ["api", "v1"]:
        parts = parts[2:]
    if parts and parts[0] == "executions" and len(parts) > 1 and parts[1] == "steps":
        return "workers"
    return parts[0] if parts and parts[0] in ("workflows", "executions", "ws") else "service"


def _query_parameter(name: str, schema: dict[str, Any], required: bool) -> dict[str, Any]:
    schema = _without_null(schema)
    schema.pop("title", None)
    if schema.get("default", 0) is None:
        del schema["default"]
    parameter: dict[str, Any] = {"name": name, "in": "query", "required": required,
                                 "schema": schema}
    if schema.get("type") == "array":
        parameter.update(style="form", explode=True)  # `?label=a:1&label=b:2`
    return parameter


def _without_null(schema: dict[str, Any]) -> dict[str, Any]:
    """`X | None` of a query parameter is X: an absent parameter is the None."""
    options = schema.get("anyOf")
    if options is None:
        return dict(schema)
    kept = [option for option in options if option != {"type": "null"}]
    rest = {k: v for k, v in schema.items() if k != "anyOf"}
    if len(kept) == 1:
        return {**rest, **kept[0]}
    return {**rest, "anyOf": kept}


def _header_schema(header: str) -> dict[str, Any]:
    if header == "Idempotency-Key":
        return {"type": "string", "pattern": f"^{KEY_PATTERN}$"}
    if header == "Last-Event-ID":
        return {"type": "string", "pattern": "^[0-9]{1,18}$"}
    return {"type": "string"}


def _responses(spec: Spec, schemas: _Schemas, *, has_path: bool) -> dict[str, Any]:
    answers: dict[int, type[Any] | None] = dict(spec.answers)
    implied: list[int] = []
    if has_path:
        implied.append(404)
    if spec.body is not None:
        implied += [400, 413]
    if spec.body is not None or spec.query is not None:
        implied.append(422)
    if "Idempotency-Key" in spec.headers:
        implied += [400, 413, 422]
    if "Last-Event-ID" in spec.headers:
        implied.append(400)
    if spec.writes:
        implied.append(503)
    for status in implied:
        answers.setdefault(status, Problem)  # a 422 gets ValidationProblemDocument (`_response`)
    out: dict[str, Any] = {}
    for status in sorted(answers):
        out[str(status)] = _response(spec, status, answers[status], schemas)
    out["default"] = {"description": "A problem",
                      "content": {PROBLEM_MEDIA: {"schema": schemas.ref(Problem,
                                                                        "serialization")}}}
    return out


def _response(spec: Spec, status: int, model: type[Any] | None,
              schemas: _Schemas) -> dict[str, Any]:
    text = _STATUS_TEXT.get(status) or HTTPStatus(status).phrase
    if model is not None and issubclass(model, BaseModel) and (model.__doc__ or "").strip() \
            and status < 400:
        text = (model.__doc__ or "").strip().splitlines()[0]
    response: dict[str, Any] = {"description": text}
    if status >= 400:
        if status == 422:
            model = ValidationProblemDocument
        chosen = model if model is not None else Problem
        response["content"] = {PROBLEM_MEDIA: {"schema": schemas.ref(chosen, "serialization")}}
        if status in (429, 503):
            # Always on a 429; on a 503 when the store refuses writes (not while starting).
            response["headers"] = {"Retry-After": {
                "description": "seconds to wait before trying again", "required": status == 429,
                "schema": {"type": "integer"}}}
    elif model is not None:
        response["content"] = {"application/json": {"schema": schemas.ref(model,
                                                                          "serialization")}}
    elif status not in (101, 204, 304):
        schema: dict[str, Any] = ({"type": "object"} if spec.media_type == "application/json"
                                  else {"type": "string"})
        response["content"] = {spec.media_type: {"schema": schema}}
    return response


@routes.get("/openapi.json", role="viewer", answers={200: None},
            summary="This description of the API (OpenAPI 3.1)")
async def openapi(request: web.Request) -> web.Response:
    app = request.app
    text = _BUILT.get(app)
    if text is None:
        text = _BUILT[app] = dumps(build_document(app))
    return json_response(text)
