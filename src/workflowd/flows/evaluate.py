"""Templates and conditions of JSON definitions: data only, evaluated by a small walker.

No code ever runs from a definition. A template is JSON in which `{"$ref": "/input/x"}` is
replaced by the value it points at (its JSON type kept), and so is a string that is exactly
`"{{ /state/y }}"`; nothing else is interpolated. A condition is a one-key object (`==`, `!=`,
`<`, `<=`, `>`, `>=`, `in`, `all`, `any`, `not`) whose operands are JSON literals or refs.
Pointers are JSON Pointers (RFC 6901) into `/input` or `/state` only; one pointing at nothing
reads as `null`.

`check_template` and `check_condition` run when a definition is stored and answer every
problem with where it is; they bound depth and size, so evaluating a stored definition is
bounded too.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

__all__ = [
    "BINARY",
    "MAX_CONDITION_DEPTH",
    "MAX_NODES",
    "MAX_TEMPLATE_DEPTH",
    "OPERATORS",
    "Problem",
    "check_condition",
    "check_pointer",
    "check_template",
    "holds",
    "render",
    "resolve",
    "whole_pointer",
]

Loc = tuple[str | int, ...]
Problem = tuple[Loc, str]  # where (inside the checked value), and what is wrong

BINARY = frozenset({"==", "!=", "<", "<=", ">", ">="})
OPERATORS = BINARY | {"in", "all", "any", "not"}
MAX_CONDITION_DEPTH = 16
MAX_TEMPLATE_DEPTH = 32
MAX_NODES = 10_000  # values in one template or condition
ROOTS = ("input", "state")
_WHOLE = re.compile(r"^\{\{\s*(\S*?)\s*\}\}$")
_ESCAPE = re.compile(r"~(?![01])")
_MISSING = object()


# ---- pointers ---------------------------------------------------------------------------------


def whole_pointer(text: str) -> str | None:
    """The pointer of a string that is exactly `"{{ /state/y }}"` (None for any other)."""
    match = _WHOLE.match(text) if "{{" in text else None
    return match.group(1) if match is not None else None


def check_pointer(pointer: Any) -> str | None:
    """Why `pointer` is not a pointer into `/input` or `/state` (None when it is one)."""
    if not isinstance(pointer, str):
        return "a pointer is a string such as \"/input/x\""
    if pointer.split("/", 2)[1:2] not in (["input"], ["state"]):
        return f"pointer {pointer!r} must start with /input or /state"
    if _ESCAPE.search(pointer):
        return f"pointer {pointer!r}: '~' must be written '~0' ('/' as '~1')"
    return None


def resolve(pointer: str, scope: Mapping[str, Any]) -> Any:
    """The value at `pointer` in `{"input": ..., "state": ...}`, or None when there is none."""
    value: Any = scope
    for raw in pointer[1:].split("/"):
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(value, Mapping):
            value = value.get(part, _MISSING)
        elif isinstance(value, Sequence) and not isinstance(value, str) \
                and part.isdigit() and (part == "0" or not part.startswith("0")):
            index = int(part)
            value = value[index] if index < len(value) else _MISSING
        else:
            value = _MISSING
        if value is _MISSING:
            return None
    return value


def _ref(node: Any) -> str | None:
    """The pointer of a `{"$ref": ...}` node (None for any other value)."""
    if isinstance(node, Mapping) and "$ref" in node and len(node) == 1:
        ref = node["$ref"]
        return ref if isinstance(ref, str) else None
    return None


# ---- templates --------------------------------------------------------------------------------


def check_template(template: Any) -> list[Problem]:
    """Every problem of a template: bad pointers, `$ref` objects with other keys, strings that
    hold `{{ }}` without being exactly one, and too deep or too large a value."""
    problems: list[Problem] = []
    for nodes, (loc, node, depth) in enumerate(_walk(template), start=1):
        if nodes > MAX_NODES:
            problems.append(((), f"a template holds at most {MAX_NODES} values"))
            break
        if depth > MAX_TEMPLATE_DEPTH:
            problems.append((loc, f"a template nests at most {MAX_TEMPLATE_DEPTH} levels"))
            break
        if isinstance(node, Mapping) and "$ref" in node:
            if len(node) != 1:
                problems.append(((*loc, "$ref"), "a {\"$ref\": ...} object has no other keys"))
            elif (why := check_pointer(node["$ref"])) is not None:
                problems.append(((*loc, "$ref"), why))
        elif isinstance(node, str) and "{{" in node and "}}" in node:
            pointer = whole_pointer(node)
            if pointer is None:
                problems.append((loc, "only a whole string \"{{ /state/x }}\" is substituted; "
                                      "write the value with {\"$ref\": ...} or no braces"))
            elif (why := check_pointer(pointer)) is not None:
                problems.append((loc, why))
    return problems


def _walk(value: Any, loc: Loc = (), depth: int = 1) -> Iterator[tuple[Loc, Any, int]]:
    yield loc, value, depth
    if isinstance(value, Mapping) and _ref(value) is None:
        for key, item in value.items():
            yield from _walk(item, (*loc, str(key)), depth + 1)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from _walk(item, (*loc, index), depth + 1)


def render(template: Any, scope: Mapping[str, Any]) -> Any:
    """The template with every ref replaced by its value (checked templates only)."""
    ref = _ref(template)
    if ref is not None:
        return resolve(ref, scope)
    if isinstance(template, str):
        pointer = whole_pointer(template)
        return resolve(pointer, scope) if pointer is not None else template
    if isinstance(template, Mapping):
        return {key: render(item, scope) for key, item in template.items()}
    if isinstance(template, list | tuple):
        return [render(item, scope) for item in template]
    return template


# ---- conditions -------------------------------------------------------------------------------


def check_condition(condition: Any) -> list[Problem]:
    """Every problem of a condition, each with its place inside it."""
    problems: list[Problem] = []
    budget = [MAX_NODES]
    _check(condition, (), 1, problems, budget)
    return problems


def _check(node: Any, loc: Loc, depth: int, problems: list[Problem], budget: list[int]) -> None:
    budget[0] -= 1
    if budget[0] < 0:
        if budget[0] == -1:
            problems.append((loc, f"a condition holds at most {MAX_NODES} values"))
        return
    if depth > MAX_CONDITION_DEPTH:
        problems.append((loc, f"conditions nest at most {MAX_CONDITION_DEPTH} levels"))
        return
    if not isinstance(node, Mapping) or len(node) != 1:
        problems.append((loc, "a condition is an object with one operator key: "
                              + ", ".join(sorted(OPERATORS))))
        return
    op, args = next(iter(node.items()))
    here = (*loc, op)
    if op not in OPERATORS:
        problems.append((loc, f"unknown operator {op!r}; one of {', '.join(sorted(OPERATORS))}"))
    elif op in BINARY or op == "in":
        if not isinstance(args, list) or len(args) != 2:
            problems.append((here, f"{op!r} takes a list of two operands"))
            return
        for index, operand in enumerate(args):
            _check_operand(operand, (*here, index), problems, budget)
        second = args[1]
        if op == "in" and not isinstance(second, list) and _ref(second) is None:
            problems.append(((*here, 1), "'in' looks in a list (a literal list or a $ref)"))
    elif op == "not":
        _check(args, here, depth + 1, problems, budget)
    else:
        if not isinstance(args, list) or not args:
            problems.append((here, f"{op!r} takes a non-empty list of conditions"))
            return
        for index, item in enumerate(args):
            _check(item, (*here, index), depth + 1, problems, budget)


def _check_operand(operand: Any, loc: Loc, problems: list[Problem], budget: list[int]) -> None:
    if isinstance(operand, Mapping) and "$ref" in operand:
        if len(operand) != 1:
            problems.append(((*loc, "$ref"), "a {\"$ref\": ...} operand has no other keys"))
        elif (why := check_pointer(operand["$ref"])) is not None:
            problems.append(((*loc, "$ref"), why))
        return
    for _, _, depth in _walk(operand):
        budget[0] -= 1
        if depth > MAX_TEMPLATE_DEPTH or budget[0] < 0:
            problems.append((loc, "a literal operand is too deep or too large"))
            return


def holds(condition: Mapping[str, Any], scope: Mapping[str, Any]) -> bool:
    """Whether a checked condition holds. Comparisons are of JSON values: `<` and friends
    compare two numbers or two strings (anything else is false); true is not 1."""
    op, args = next(iter(condition.items()))
    if op == "all":
        return all(holds(item, scope) for item in args)
    if op == "any":
        return any(holds(item, scope) for item in args)
    if op == "not":
        return not holds(args, scope)
    left, right = (_operand(item, scope) for item in args)
    if op == "==":
        return _equal(left, right)
    if op == "!=":
        return not _equal(left, right)
    if op == "in":
        return isinstance(right, list | tuple) and any(_equal(left, item) for item in right)
    if not (_number(left) and _number(right)) and not (isinstance(left, str)
                                                       and isinstance(right, str)):
        return False
    if op == "<":
        return bool(left < right)
    if op == "<=":
        return bool(left <= right)
    if op == ">":
        return bool(left > right)
    return bool(left >= right)


def _operand(node: Any, scope: Mapping[str, Any]) -> Any:
    ref = _ref(node)
    return resolve(ref, scope) if ref is not None else node


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _equal(left: Any, right: Any) -> bool:
    """JSON equality: 1 == 1.0, but true != 1; objects and arrays compared all the way down."""
    if isinstance(left, bool) or isinstance(right, bool):
        return isinstance(left, bool) and isinstance(right, bool) and left is right
    if _number(left) and _number(right):
        return bool(left == right)
    if isinstance(left, Mapping) and isinstance(right, Mapping):
        return left.keys() == right.keys() and all(_equal(left[k], right[k]) for k in left)
    if isinstance(left, list | tuple) and isinstance(right, list | tuple):
        return len(left) == len(right) and all(_equal(a, b) for a, b in zip(left, right,
                                                                            strict=True))
    if type(left) is not type(right) and not (isinstance(left, str) and isinstance(right, str)):
        return False
    return bool(left == right)
