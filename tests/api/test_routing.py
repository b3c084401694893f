"""Every route of the application is declared with its role (`api.routing`)."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from workflowd.api.routing import ROLES, specs


async def test_every_route_declares_its_role(client: TestClient[Any, Any]) -> None:
    """No route can be added without a declaration: its method, path and one of the roles."""
    seen = 0
    for route, spec in specs(client.app):
        assert spec is not None, f"{route.method} {route.resource} has no declared role"
        assert spec.role in ROLES
        assert route.method in (spec.method, "HEAD")
        assert route.resource is not None
        assert route.resource.canonical == spec.path
        assert spec.summary
        seen += 1
    assert seen > 10
