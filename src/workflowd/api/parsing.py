"""Reading requests: bodies and query strings through pydantic, errors as 400/422 problems."""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from typing import Any, TypeVar

import pydantic_core
from aiohttp import web
from pydantic import BaseModel, ValidationError

from workflowd.codec import dumps
from workflowd.errors import BadRequestError, ValidationProblem

__all__ = [
    "MAX_DEPTH",
    "SQL_INT_MAX",
    "json_response",
    "parse_body",
    "parse_query",
    "read_json",
    "sql_int",
]

M = TypeVar("M", bound=BaseModel)

# The largest INTEGER SQLite holds (signed 64-bit). Every number a client sends that reaches
# SQL is bounded by it: a larger one would raise OverflowError in the driver, a 500.
SQL_INT_MAX = 2**63 - 1
_DIGITS = re.compile(r"[0-9]{1,19}")  # ASCII only: `str.isdigit` takes '²', which int() refuses


def sql_int(text: str) -> int | None:
    """`text` as a non-negative integer SQLite can hold, or None when it is not one.

    The length is checked before `int()`, which refuses strings past 4,300 digits with a
    ValueError of its own."""
    if _DIGITS.fullmatch(text) is None:
        return None
    value = int(text)
    return value if value <= SQL_INT_MAX else None


def _problem_from(exc: ValidationError, where: str) -> ValidationProblem:
    errors = [{"loc": [where, *e["loc"]], "msg": e["msg"]} for e in exc.errors()]
    first = errors[0]
    detail = f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
    return ValidationProblem(detail, errors)


async def read_json(request: web.Request) -> Any:
    """The body as a JSON value, for a handler that reads it without a model; an empty body
    counts as `{}`. Malformed JSON (NaN and Infinity among it) is 400, nesting past
    `MAX_DEPTH` 422: the same checks as `parse_body`."""
    raw = await _checked_body(request)
    try:
        return pydantic_core.from_json(raw, allow_inf_nan=False)
    except ValueError as exc:
        raise BadRequestError(f"the body is not valid JSON: {exc}") from None


async def parse_body(request: web.Request, model: type[M]) -> M:
    """The body as `model`, after the checks of `read_json`; what does not fit the model is
    422. The bytes go to pydantic's own JSON parser (not `read_json`'s value): one parse, and
    its errors speak of JSON types ("an object"), not Python ones."""
    raw = await _checked_body(request)
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        if any(e["type"] == "json_invalid" for e in exc.errors()):
            raise BadRequestError(f"the body is not valid JSON: {exc.errors()[0]['msg']}") from None
        raise _problem_from(exc, "body") from None


async def _checked_body(request: web.Request) -> bytes:
    """The body's bytes (`{}` for an empty body), refused when too deep or not finite."""
    raw = await request.read()
    if not raw.strip():
        return b"{}"
    _refuse_deep(raw)
    _refuse_non_finite(raw)
    return raw


# JSON nested deeper than this is refused (422) before it is parsed: kept in an execution, a
# deep value makes every later encode, copy and read of it recurse that deep.
MAX_DEPTH = 64
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")
_NESTING = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


def _refuse_deep(raw: bytes) -> None:
    """422 for arrays and objects nested deeper than `MAX_DEPTH`. A body with fewer opening
    brackets than that cannot be (two counts in C, the common case); else the brackets outside
    strings are summed as they open and close."""
    if raw.count(b"[") + raw.count(b"{") <= MAX_DEPTH:
        return
    brackets = _STRING.sub(b"", raw).translate(None, _NOT_BRACKET)
    depth = max(itertools.accumulate(map(_NESTING.__getitem__, brackets)), default=0)
    if depth > MAX_DEPTH:
        raise ValidationProblem(f"body: JSON nested deeper than {MAX_DEPTH} levels", [
            {"loc": ["body"], "msg": f"nested deeper than {MAX_DEPTH} levels"}])


def _refuse_non_finite(raw: bytes) -> None:
    """400 for NaN and Infinity, which pydantic's parser takes but JSON has not: kept in an
    execution they would make its answers unreadable to strict clients (JSON.parse). The
    strict parse runs only when the bytes could hold one, so common bodies pay a search."""
    if b"NaN" not in raw and b"Infinity" not in raw:
        return
    try:
        pydantic_core.from_json(raw, allow_inf_nan=False)
    except ValueError as exc:
        raise BadRequestError(f"the body is not valid JSON: {exc}") from None


# Each model's answer to an empty query string (the common poll), validated once and shared:
# handlers read queries, never change them.
_EMPTY: dict[type[BaseModel], BaseModel] = {}


def parse_query(request: web.Request, model: type[M], multi: tuple[str, ...] = ()) -> M:
    """The query string as `model`; keys named in `multi` may repeat and arrive as lists."""
    if not request.query_string:
        empty = _EMPTY.get(model)
        if isinstance(empty, model):
            return empty
    data: dict[str, Any] = {}
    for key in request.query:
        if key in data:
            continue
        data[key] = request.query.getall(key) if key in multi else request.query[key]
    try:
        parsed = model.model_validate(data)
    except ValidationError as exc:
        raise _problem_from(exc, "query") from None
    if not data:
        _EMPTY[model] = parsed
    return parsed


def json_response(body: Any, status: int = 200,
                  headers: Mapping[str, str] | None = None) -> web.Response:
    text = body if isinstance(body, str) else dumps(body)
    return web.Response(text=text, status=status, content_type="application/json",
                        headers=headers)
