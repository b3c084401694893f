"""`GET /openapi.json`: a valid OpenAPI 3.1 document of every route, generated from the route
declarations; and schemathesis fuzzing the live app from it (no 5xx, every answer as
documented)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import schemathesis
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient
from openapi_spec_validator import OpenAPIV31SpecValidator
from schemathesis import checks as st_checks
from schemathesis.generation.case import Case as _Case
from schemathesis.specs.openapi import checks as oa_checks

from tests.conftest import MakeClient
from tests.helpers import API, file_locked, problem_of, submit
from tests.live_server import LiveServer, settings_at
from workflowd.api import create_app
from workflowd.api.openapi import build_document
from workflowd.api.routing import specs
from workflowd.config import Settings

Case = _Case[Any]


async def test_document_is_openapi_31(client: TestClient[Any, Any]) -> None:
    """The served document validates as OpenAPI 3.1 and is the one built from the routes."""
    resp = await client.get("/openapi.json")
    assert resp.status == 200
    assert resp.content_type == "application/json"
    doc = await resp.json()
    OpenAPIV31SpecValidator(doc).validate()
    assert doc["openapi"] == "3.1.0"
    assert doc == build_document(client.app)
    again = await client.get("/openapi.json")
    assert await again.json() == doc


async def test_document_names_every_route(client: TestClient[Any, Any]) -> None:
    """Every declared route but the internal ones is an operation, with its role and answers."""
    doc = (await (await client.get("/openapi.json")).json())
    seen = 0
    for route, spec in specs(client.app):
        assert spec is not None
        if route.method == "HEAD":
            continue
        operation = doc["paths"].get(spec.path, {}).get(spec.method.lower())
        if spec.internal:
            assert operation is None
            continue
        assert operation is not None, f"{spec.method} {spec.path} is missing"
        assert operation["x-workflowd-role"] == spec.role
        assert operation["summary"] == spec.summary
        assert "default" in operation["responses"]
        seen += 1
    for path in (f"{API}/workflows/{{workflow_id}}/executions",
                 f"{API}/executions/{{execution_id}}",
                 f"{API}/executions/{{execution_id}}/status/live", "/openapi.json", "/metrics"):
        assert path in doc["paths"]
    assert seen >= 23


async def test_document_describes_bodies_and_errors(client: TestClient[Any, Any]) -> None:
    """The submit operation reads its body model, answers 201/202/200 and its problems."""
    doc = (await (await client.get("/openapi.json")).json())
    submit = doc["paths"][f"{API}/workflows/{{workflow_id}}/executions"]["post"]
    body = submit["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/SubmitBody"}
    assert {"200", "201", "202", "400", "404", "413", "422", "429"} <= set(submit["responses"])
    invalid = submit["responses"]["422"]["content"]["application/problem+json"]["schema"]
    assert invalid == {"$ref": "#/components/schemas/ValidationProblemDocument"}
    assert "errors" in doc["components"]["schemas"]["ValidationProblemDocument"]["required"]
    assert {p["name"] for p in submit["parameters"]} == {"workflow_id", "wait", "Idempotency-Key"}
    listing = doc["paths"][f"{API}/executions"]["get"]
    label = next(p for p in listing["parameters"] if p["name"] == "label")
    assert label["schema"]["type"] == "array"
    assert doc["components"]["schemas"]["SubmitBody"]["additionalProperties"] is False
    # An artifact's upload: the body is the file's bytes, of any media type.
    upload = doc["paths"][f"{API}/artifacts"]["post"]["requestBody"]
    assert upload["required"] is True
    assert upload["content"]["*/*"]["schema"]["contentMediaType"] == "application/octet-stream"


@pytest.mark.sqlite_only("it holds the SQLite file's write lock to make the store refuse")
async def test_problems_the_routes_answer_are_declared(make_client: MakeClient,
                                                       settings: Settings) -> None:
    """The problems a route answers for a bad header, a body too large, a reused key, a rate
    or a store that refuses writes are declared on that route, 429 and 503 with their
    Retry-After."""
    client = await make_client(server={"max_body_bytes": 1024})
    doc = await (await client.get("/openapi.json")).json()
    gated = (await submit(client, "three-steps", expect=201,
                          require_approval=True))["execution_id"]
    other = (await submit(client, "three-steps", expect=201,
                          require_approval=True))["execution_id"]
    one = f"{API}/executions/{{execution_id}}"
    answered: list[tuple[str, str, ClientResponse]] = []

    async def call(method: str, template: str, body: bytes = b"{}",
                   headers: dict[str, str] | None = None, **params: str) -> ClientResponse:
        resp = await client.request(method, template.format(**params), data=body, headers={
            "Content-Type": "application/json", **(headers or {})})
        answered.append((method.lower(), template, resp))
        return resp

    for action in ("cancel", "pause", "resume", "step"):
        await problem_of(await call("POST", f"{one}/{action}", execution_id=gated,
                                    headers={"Idempotency-Key": "a\tb"}), 400)
        await problem_of(await call("POST", f"{one}/{action}", b"[" + b" " * 2048 + b"]",
                                    {"Idempotency-Key": "k"}, execution_id=gated), 413)
    once = {"Idempotency-Key": "once"}
    assert (await call("POST", f"{one}/cancel", b"{}", once, execution_id=other)).status == 202
    await problem_of(await call("POST", f"{one}/cancel", b'{"again": 1}', once,
                                execution_id=other), 422)
    await problem_of(await call("GET", f"{one}/events/stream", b"", {"Last-Event-ID": "x"},
                                execution_id=gated), 400)
    for _ in range(100):  # the open tickets one subject may hold
        assert (await call("POST", f"{API}/tickets")).status == 201
    await problem_of(await call("POST", f"{API}/tickets"), 429)
    with file_locked(settings.store.path):
        async with asyncio.timeout(10):
            await problem_of(await call("POST", f"{API}/workflows/{{workflow_id}}/executions",
                                        workflow_id="three-steps"), 503)
            await problem_of(await call("POST", f"{one}/cancel", execution_id=gated), 503)

    for method, template, resp in answered:
        responses = doc["paths"][template][method]["responses"]
        assert str(resp.status) in responses, (method, template, resp.status)
        if resp.status in (429, 503):
            assert "Retry-After" in resp.headers
            assert "Retry-After" in responses[str(resp.status)]["headers"], template


async def test_openapi_is_not_under_the_prefix(client: TestClient[Any, Any]) -> None:
    """The document is at the root, like the health routes."""
    await problem_of(await client.get(f"{API}/openapi.json"), 404)


# ---- schemathesis against the live app ------------------------------------------------------

# The document as the app builds it; the test's app serves the same routes.
document = build_document(create_app(settings_at(Path("unused"))))
# Streams are not request/answer routes: an SSE or WebSocket answer does not end by itself.
schema = schemathesis.openapi.from_dict(document).exclude(path_regex=r"(/ws$|/events/stream$)")
schema.config.generation.update(max_examples=12, deterministic=True, database="none")
CHECKS = [st_checks.not_a_server_error, oa_checks.status_code_conformance,
          oa_checks.content_type_conformance, oa_checks.response_schema_conformance,
          oa_checks.response_headers_conformance]


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    server = LiveServer(settings_at(tmp_path_factory.mktemp("fuzz"))).start()
    yield server
    server.stop()


@schema.parametrize()
@hypothesis.settings(deadline=None, derandomize=True, database=None,
                     suppress_health_check=list(hypothesis.HealthCheck))
def test_fuzzed_requests_get_documented_answers(case: Case,
                                                fuzzed: LiveServer) -> None:
    """Generated requests, valid and not: never a 5xx, every answer as the document says."""
    _short_waits(case)
    case.call_and_validate(base_url=fuzzed.url, checks=CHECKS, timeout=10)


def _short_waits(case: Case) -> None:
    """Keep a valid `wait=` (a submit's sync mode, a long-poll) short: waiting up to 300 s is
    what the route promises, not something to sit through per example."""
    wait = (case.query or {}).get("wait")
    if isinstance(wait, int | float) and not isinstance(wait, bool) and 0 < wait <= 300:
        case.query["wait"] = min(wait, 0.1)


@pytest.fixture
def sequenced(tmp_path: Path) -> Iterator[LiveServer]:
    """A server of its own: the executions the other fuzz test left would change what the
    sequences find as they go."""
    server = LiveServer(settings_at(tmp_path)).start()
    yield server
    server.stop()


def test_fuzzed_sequences_follow_links(sequenced: LiveServer) -> None:
    """Sequences along the document's links (list workflows, submit one, then act on the
    execution): never a 5xx, every answer as documented."""

    class Sequences(schema.as_state_machine()):  # type: ignore[misc]
        def before_call(self, case: Case) -> None:
            _short_waits(case)

        def get_call_kwargs(self, case: Case) -> dict[str, Any]:
            return {"base_url": sequenced.url, "timeout": 10}

        def validate_response(self, response: schemathesis.Response, case: Case,
                              additional_checks: Any = None, **kwargs: Any) -> None:
            case.validate_response(response, checks=CHECKS, transport_kwargs=kwargs)

    try:
        Sequences.run(settings=hypothesis.settings(
            max_examples=20, stateful_step_count=8, deadline=None, derandomize=True,
            database=None, suppress_health_check=list(hypothesis.HealthCheck)))
    except hypothesis.errors.FlakyStrategyDefinition as exc:
        # The live server's state moves on between sequences (executions finish in the
        # background), so a sequence tried again can find bundles of another size and draw
        # otherwise: the generator's complaint, not a wrong answer (a 5xx or an answer off the
        # document fails the test as it comes). Reported as skipped, not passed.
        pytest.skip(f"hypothesis could not try a sequence again on a server whose state moved "
                    f"on ({type(exc).__name__})")
