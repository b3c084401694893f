"""A demo page: follow an audit-plan execution over the WebSocket, as a front end would."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

__all__ = ["routes"]

routes = web.RouteTableDef()
PAGE = Path(__file__).parent / "static" / "follow.html"


@routes.get("/demo")
async def demo(request: web.Request) -> web.FileResponse:
    return web.FileResponse(PAGE, headers={"Content-Type": "text/html; charset=utf-8"})
