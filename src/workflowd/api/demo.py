"""A demo page: follow an audit-plan execution over the WebSocket, as a front end would."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from workflowd.api.routing import Routes

__all__ = ["routes"]

routes = Routes()
PAGE = Path(__file__).parent / "static" / "follow.html"


@routes.get("/demo", role="public", internal=True, answers={200: None},
            media_type="text/html",
            summary="A demo page following an execution over the WebSocket")
async def demo(request: web.Request) -> web.FileResponse:
    return web.FileResponse(PAGE, headers={"Content-Type": "text/html; charset=utf-8"})
