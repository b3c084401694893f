"""Routes declared with what they are: their role, what they read and what they answer.

Each route module makes one `Routes` and declares its handlers on it:

    routes = Routes()

    @routes.post(f"{API_PREFIX}/executions/{{execution_id}}/approve", role="approver",
                 summary="Approve an execution waiting at an approval", body=ApproveBody)
    async def approve(request: web.Request) -> web.Response: ...

The declaration (`Spec`) rides on the handler, so whatever walks the application's router
finds it: the authorization middleware reads the role from it, the OpenAPI document is built
from the models named in it, and a test checks that no route goes without one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from aiohttp import web
from aiohttp.abc import AbstractView
from pydantic import BaseModel

__all__ = ["ROLES", "Role", "Routes", "Spec", "spec_of", "specs"]

# Who may call a route. `public`: anyone, also with auth on (health, the dashboard's files).
Role = Literal["public", "viewer", "submitter", "approver", "worker", "admin"]
ROLES: tuple[Role, ...] = ("public", "viewer", "submitter", "approver", "worker", "admin")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
H = TypeVar("H", bound=Handler)
_SPEC = "__workflowd_spec__"


@dataclass(frozen=True, slots=True)
class Spec:
    """One route: its method and path, the role it needs, and what it reads and answers."""

    method: str
    path: str
    role: Role
    summary: str
    body: type[BaseModel] | None = None
    # A body read as raw bytes, not JSON (an artifact's upload): what it may be, for OpenAPI.
    raw_body: str | None = None
    query: type[BaseModel] | None = None
    # Status code to the model of the answer's body (None: no body, or not JSON).
    answers: Mapping[int, type[Any] | None] = field(default_factory=dict)
    # The media type of the answers that have a body but no model (`/metrics`: text).
    media_type: str = "application/json"
    # Request headers the route reads, with what they mean (`Idempotency-Key`, ...).
    headers: Mapping[str, str] = field(default_factory=dict)
    # Path parameters its success answers name, as JSON pointers into the body
    # (`{"execution_id": "/execution_id"}`): OpenAPI links to every route that takes them.
    links: Mapping[str, str] = field(default_factory=dict)
    # The step's own token (`X-Workflowd-Token`) stands for `worker` here.
    step_token: bool = False
    # A WebSocket or server-sent events route (a ticket may stand for the bearer token).
    stream: Literal["websocket", "sse"] | None = None
    # A path outside the API's own (`/ui/`), for the OpenAPI document to leave out.
    internal: bool = False
    # It writes to the store, which may refuse for now (503 `store_unavailable`): by default
    # (`Routes`) every route but a GET.
    writes: bool = False


class Routes:
    """A route module's table: aiohttp's `RouteTableDef`, with a `Spec` for every route."""

    def __init__(self) -> None:
        self.table = web.RouteTableDef()

    def route(self, method: str, path: str, *, role: Role, summary: str,
              **details: Any) -> Callable[[H], H]:
        details.setdefault("writes", method != "GET")

        def declare(handler: H) -> H:
            setattr(handler, _SPEC, Spec(method, path, role, summary, **details))
            self.table.route(method, path)(handler)
            return handler

        return declare

    def get(self, path: str, *, role: Role, summary: str, **details: Any) -> Callable[[H], H]:
        return self.route("GET", path, role=role, summary=summary, **details)

    def post(self, path: str, *, role: Role, summary: str, **details: Any) -> Callable[[H], H]:
        return self.route("POST", path, role=role, summary=summary, **details)

    def put(self, path: str, *, role: Role, summary: str, **details: Any) -> Callable[[H], H]:
        return self.route("PUT", path, role=role, summary=summary, **details)

    def delete(self, path: str, *, role: Role, summary: str,
               **details: Any) -> Callable[[H], H]:
        return self.route("DELETE", path, role=role, summary=summary, **details)


def spec_of(handler: Handler | type[AbstractView]) -> Spec | None:
    """The declaration of a route's handler (None for one declared without: aiohttp's own
    HEAD twins of GET routes carry the GET handler, so they have one too)."""
    spec: Spec | None = getattr(handler, _SPEC, None)
    return spec


def specs(app: web.Application) -> Iterator[tuple[web.AbstractRoute, Spec | None]]:
    """Every route of the application with its declaration."""
    for route in app.router.routes():
        yield route, spec_of(route.handler)
