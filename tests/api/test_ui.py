"""The dashboard's files as the service serves them (the browser tests are in tests/ui)."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from tests.helpers import problem_of
from workflowd.api.ui import ASSETS, STATIC

ROOT = Path(__file__).parents[2]


async def test_the_dashboard_page_is_served_with_its_headers(client: TestClient[Any, Any]) -> None:
    """`/ui/` answers the page as HTML, not cached without revalidation, under a strict CSP."""
    resp = await client.get("/ui/")
    assert resp.status == 200
    assert resp.content_type == "text/html"
    assert resp.headers["Cache-Control"] == "no-cache"
    assert "default-src 'self'" in resp.headers["Content-Security-Policy"]
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    text = await resp.text()
    assert '<script type="module" src="/ui/assets/app.js"></script>' in text


async def test_every_page_of_the_dashboard_is_the_one_page(client: TestClient[Any, Any]) -> None:
    """The dashboard's own paths (one execution, the workflows) answer the same page, which
    routes itself from the URL: a link to any view can be shared."""
    index = await (await client.get("/ui/")).text()
    for path in ("/ui/executions/some-id", "/ui/workflows", "/ui/?status=running"):
        resp = await client.get(path)
        assert resp.status == 200, path
        assert await resp.text() == index


async def test_ui_and_the_old_demo_redirect_to_the_dashboard(
        client: TestClient[Any, Any]) -> None:
    """`/ui` and `/demo` (where the demo page was) redirect to `/ui/`."""
    for path in ("/ui", "/demo"):
        resp = await client.get(path, allow_redirects=False)
        assert resp.status == 301, path
        assert resp.headers["Location"] == "/ui/"


async def test_assets_are_served_with_their_types(client: TestClient[Any, Any]) -> None:
    """Every module and the style sheet, with a type a browser accepts for it."""
    assert {"app.js", "api.js", "live.js", "style.css"} <= set(ASSETS)
    for name in ASSETS:
        resp = await client.get(f"/ui/assets/{name}")
        assert resp.status == 200, name
        expected = "text/javascript" if name.endswith(".js") else "text/css"
        assert resp.content_type == expected, name
        assert resp.headers["Cache-Control"] == "no-cache"


async def test_only_shipped_files_are_served(client: TestClient[Any, Any]) -> None:
    """An unknown name, the page itself or a path outside the folder is a 404 problem."""
    for name in ("nope.js", "index.html", "..%2Fui.py", "%2E%2E%2F%2E%2E%2Fapp.py"):
        await problem_of(await client.get(f"/ui/assets/{name}"), 404)


def test_every_import_of_a_module_is_shipped() -> None:
    """Each `import ... from "./x.js"` names a file that is served."""
    for path in STATIC.glob("*.js"):
        for name in re.findall(r'from "\./([^"]+)"', path.read_text()):
            assert name in ASSETS, f"{path.name} imports {name}, which is not served"


def test_nothing_is_fetched_from_elsewhere() -> None:
    """The page loads nothing from another origin (no CDN): every URL in it is the service's."""
    for path in STATIC.iterdir():
        assert not re.search(r"https?://", path.read_text()), path.name


def test_an_installed_package_carries_the_files() -> None:
    """`[tool.setuptools.package-data]` covers every file of the dashboard."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["workflowd"]
    package = STATIC.parents[2]
    for path in STATIC.iterdir():
        relative = path.relative_to(package).as_posix()
        assert any(fnmatch.fnmatch(relative, p) for p in patterns), relative
