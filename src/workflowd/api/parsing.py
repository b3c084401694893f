"""Reading requests: bodies and query strings through pydantic, errors as 400/422 problems."""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterator, Mapping
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
    return ValidationProblem.from_errors(
        [{"loc": [where, *e["loc"]], "msg": e["msg"]} for e in exc.errors()])


async def read_json(request: web.Request) -> Any:
    """The body as a JSON value, for a handler that reads it without a model; an empty body
    counts as `{}`. Malformed JSON (NaN and Infinity among it) is 400; nesting past
    `MAX_DEPTH` and numbers past a float's range are 422: the same checks as `parse_body`."""
    raw = await _read_body(request)
    value = _strict_loads(raw)
    if _may_be_infinite(raw) or _NUL in raw:
        _refuse_values(value)
    return value


async def parse_body(request: web.Request, model: type[M]) -> M:
    """The body as `model`, with the checks of `read_json` first; what does not fit the model
    is 422. The bytes go to pydantic's own JSON parser (not `read_json`'s value): one parse, and
    its errors speak of JSON types ("an object"), not Python ones."""
    raw = await _read_body(request)
    # The model's parser takes NaN and Infinity, reads 1e400 as inf and "\u0000" as NUL: the
    # strict parse and the walk first, for bodies that could hold one.
    if b"NaN" in raw or b"Infinity" in raw or _NUL in raw or _may_be_infinite(raw):
        _refuse_values(_strict_loads(raw))
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        if any(e["type"] == "json_invalid" for e in exc.errors()):
            raise BadRequestError(f"the body is not valid JSON: {exc.errors()[0]['msg']}") from None
        raise _problem_from(exc, "body") from None


async def _read_body(request: web.Request) -> bytes:
    """The body's bytes (`{}` for an empty body), refused when nested too deep."""
    raw = await request.read()
    if not raw.strip():
        return b"{}"
    _refuse_deep(raw)
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
        raise ValidationProblem.from_errors(
            [{"loc": ["body"], "msg": f"JSON nested deeper than {MAX_DEPTH} levels"}])


def _strict_loads(raw: bytes) -> Any:
    """The JSON value of `raw`; 400 when it is not JSON. NaN and Infinity, which pydantic's
    parser takes by default but JSON has not, are not: kept in an execution they would make its
    answers unreadable to strict clients (JSON.parse)."""
    try:
        return pydantic_core.from_json(raw, allow_inf_nan=False)
    except ValueError as exc:
        raise BadRequestError(f"the body is not valid JSON: {exc}") from None


# Digits as 0, `E` as `e`, `+` dropped: the shape of the numbers in a body, to search in C.
_NUMBER_SHAPE = bytes.maketrans(b"123456789E", b"000000000e")


def _may_be_infinite(raw: bytes) -> bool:
    """Whether a number in `raw` could read as infinity: a float past 1.8e308 has an exponent
    of three digits or more (leading zeros count here), or, its exponent under 100, over 200
    digits before its point. A search in C (about 1 ms a MB, where the walk of the parsed
    value costs 25): a match inside a string only costs that walk."""
    shape = raw.translate(_NUMBER_SHAPE, b"+")
    return b"e000" in shape or b"0" * 200 in shape


_FINITE_MSG = "Input should be a finite number"  # pydantic's words, where a model checks
_NUL = b"\\u0000"  # how JSON writes U+0000 (a `\\u0000` that is text matches too: then the walk)
_NUL_MSG = "holds U+0000 (NUL), which no text kept here may hold (PostgreSQL cannot store it)"


def _refuse_values(value: Any) -> None:
    """422 pointing at every number of `value` that read as infinity (1e400: JSON has no such
    value, and stored it would come back as null) and every string or key that holds U+0000."""
    errors = [{"loc": ["body", *loc], "msg": msg} for loc, msg in _refused(value, ())]
    if errors:
        raise ValidationProblem.from_errors(errors)


def _refused(value: Any, loc: tuple[str | int, ...]) -> Iterator[tuple[tuple[str | int, ...], str]]:
    # Recursion is bounded: the body is no deeper than MAX_DEPTH.
    if isinstance(value, float):
        if math.isinf(value):
            yield loc, _FINITE_MSG
    elif isinstance(value, str):
        if "\x00" in value:
            yield loc, _NUL_MSG
    elif isinstance(value, dict):
        for key, item in value.items():
            if "\x00" in key:
                yield (*loc, key), f"its key {_NUL_MSG}"
            yield from _refused(item, (*loc, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _refused(item, (*loc, index))


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
