"""The dashboard (`/ui/`): static files from the package, served by the service itself.

Plain HTML, CSS and JavaScript modules, no build step: the page uses only the public API
(`/api/v1`), with the token and tickets of API.md §8 when auth is on. Every path of the
dashboard's own pages answers the one `index.html` (the page routes itself from the URL, so
a view can be shared as a link); its modules and style sheet are under `/ui/assets/`.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from workflowd.api.routing import Routes

__all__ = ["ASSETS", "routes"]

routes = Routes()
STATIC = Path(__file__).parent / "static" / "ui"
INDEX = STATIC / "index.html"
# Only the files shipped beside index.html are served, looked up by name: no path from the
# request ever reaches the file system.
ASSETS: dict[str, Path] = {
    path.name: path for path in sorted(STATIC.iterdir())
    if path.is_file() and path.suffix in (".js", ".css")
}
TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
HEADERS = {
    # Revalidate every time (ETag / Last-Modified make that a 304): an upgrade of the service
    # is seen at the next reload, never a mix of old and new modules.
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Scripts and styles from these files only; the page talks to its own origin only.
    "Content-Security-Policy": ("default-src 'self'; connect-src 'self'; img-src 'self' data:; "
                                "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
                                "form-action 'self'"),
}


def _page() -> web.FileResponse:
    return web.FileResponse(INDEX, headers={**HEADERS,
                                            "Content-Type": "text/html; charset=utf-8"})


@routes.get("/ui", role="public", internal=True, answers={301: None},
            summary="The dashboard (redirects to /ui/)")
async def ui_root(request: web.Request) -> web.StreamResponse:
    raise web.HTTPMovedPermanently("/ui/")


@routes.get("/demo", role="public", internal=True, answers={301: None},
            summary="Where the demo page was: the dashboard now (redirects to /ui/)")
async def demo(request: web.Request) -> web.StreamResponse:
    raise web.HTTPMovedPermanently("/ui/")


@routes.get("/ui/", role="public", internal=True, answers={200: None},
            media_type="text/html", summary="The dashboard: the executions")
async def executions_page(request: web.Request) -> web.FileResponse:
    return _page()


@routes.get("/ui/executions/{execution_id}", role="public", internal=True, answers={200: None},
            media_type="text/html",
            summary="The dashboard: one execution")
async def execution_page(request: web.Request) -> web.FileResponse:
    return _page()


@routes.get("/ui/workflows", role="public", internal=True, answers={200: None},
            media_type="text/html",
            summary="The dashboard: the registered workflows")
async def workflows_page(request: web.Request) -> web.FileResponse:
    return _page()


@routes.get("/ui/assets/{name}", role="public", internal=True, answers={200: None, 404: None},
            summary="The dashboard's modules and style sheet")
async def asset(request: web.Request) -> web.FileResponse:
    name = request.match_info["name"]
    path = ASSETS.get(name)
    if path is None:
        raise web.HTTPNotFound
    return web.FileResponse(path, headers={**HEADERS, "Content-Type": TYPES[path.suffix]})
