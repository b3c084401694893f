"""The bare aiohttp JSON handler the service is compared with: `python -m bench.bare PORT`.

`GET /json` answers a small JSON object; `POST /json` reads and parses the JSON body first, so
the POST routes of workflowd are compared with a handler that does the same HTTP work and no
more. Runs in its own process, like the service.
"""

from __future__ import annotations

import json
import sys

from aiohttp import web

from workflowd.cli import new_loop

PAYLOAD = {"status": "ok", "service": "bare"}


async def get_json(request: web.Request) -> web.Response:
    return web.json_response(PAYLOAD)


async def post_json(request: web.Request) -> web.Response:
    body = json.loads(await request.read() or b"{}")
    return web.json_response({**PAYLOAD, "keys": len(body)}, status=202)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def make_app() -> web.Application:
    app = web.Application()
    app.router.add_get("/json", get_json)
    app.router.add_post("/json", post_json)
    app.router.add_get("/healthz", healthz)
    return app


def main() -> None:
    port = int(sys.argv[1])
    # The same event loop as the service under test (uvloop when installed), so the ratios
    # compare the routes, not the loops.
    web.run_app(make_app(), host="127.0.0.1", port=port, access_log=None, print=None,
                loop=new_loop(True))


if __name__ == "__main__":
    main()
