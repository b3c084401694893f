"""RFC 9457 problem documents, the shape of every error answer."""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from aiohttp import web

from workflowd.codec import dumps

__all__ = ["problem"]


def problem(status: int, detail: str, *, instance: str, code: str | None = None,
            title: str | None = None, extra: Mapping[str, Any] | None = None,
            headers: Mapping[str, str] | None = None) -> web.Response:
    phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
    body: dict[str, Any] = {
        "type": f"urn:workflowd:problem:{code}" if code else "about:blank",
        "title": title or phrase,
        "status": status,
        "detail": detail,
        "instance": instance,
    }
    if extra:
        body.update(extra)
    return web.Response(status=status, text=dumps(body), content_type="application/problem+json",
                        headers=headers)
