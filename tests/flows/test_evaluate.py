"""Templates and conditions of JSON definitions: substitution only, every operator, bounds."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import pytest

from workflowd.flows.evaluate import (
    MAX_CONDITION_DEPTH,
    MAX_NODES,
    MAX_TEMPLATE_DEPTH,
    check_condition,
    check_pointer,
    check_template,
    holds,
    render,
    resolve,
)

SCOPE: dict[str, Any] = {
    "input": MappingProxyType({"n": 5, "name": "ada", "tags": ("a", "b"), "flag": True,
                               "a/b": 1, "t~": 2, "obj": MappingProxyType({"k": [1, 2]})}),
    "state": {"count": 2.0, "items": [{"id": 7}], "empty": None},
}


def ref(pointer: str) -> dict[str, str]:
    return {"$ref": pointer}


def test_pointers_read_input_and_state_and_miss_as_null() -> None:
    """RFC 6901 pointers, escapes included; what is not there reads as null."""
    assert resolve("/input/n", SCOPE) == 5
    assert resolve("/state/items/0/id", SCOPE) == 7
    assert resolve("/input/a~1b", SCOPE) == 1
    assert resolve("/input/t~0", SCOPE) == 2
    assert resolve("/input/tags/1", SCOPE) == "b"
    for missing in ("/input/nope", "/state/items/3", "/state/items/01", "/input/n/x",
                    "/state/items/-1"):
        assert resolve(missing, SCOPE) is None, missing


@pytest.mark.parametrize("pointer", ["/secrets/x", "input/x", "/", "", "/inputs", "/state~",
                                     "/input/~2"])
def test_pointers_outside_input_and_state_are_refused(pointer: str) -> None:
    """Only /input and /state (with valid escapes) may be read."""
    assert check_pointer(pointer) is not None
    assert check_pointer(5) is not None


def test_templates_substitute_refs_keeping_their_type() -> None:
    """`$ref` and a whole `{{ }}` string become the value itself; other strings stay."""
    template = {"n": ref("/input/n"), "tags": ref("/input/tags"), "count": "{{ /state/count }}",
                "nested": [{"obj": ref("/input/obj")}, "plain", 3, None],
                "missing": ref("/state/nope"), "text": "{{/input/name}}"}
    assert check_template(template) == []
    assert render(template, SCOPE) == {
        "n": 5, "tags": ("a", "b"), "count": 2.0, "nested": [{"obj": SCOPE["input"]["obj"]},
                                                           "plain", 3, None],
        "missing": None, "text": "ada"}


def test_template_problems_are_found_with_their_place() -> None:
    """Bad pointers, `$ref` with company, and braces inside a longer string."""
    problems = check_template({"a": ref("/env/HOME"), "b": {"$ref": "/input/x", "y": 1},
                               "c": ["hello {{ /input/name }}"], "d": "{{ /etc/passwd }}"})
    where = dict(problems)
    assert set(where) == {("a", "$ref"), ("b", "$ref"), ("c", 0), ("d",)}
    assert "/input or /state" in where[("a", "$ref")]


def test_templates_are_bounded_in_depth_and_size() -> None:
    """Too deep or too large a template is refused when stored."""
    deep: Any = 1
    for _ in range(MAX_TEMPLATE_DEPTH + 1):
        deep = [deep]
    assert check_template(deep)
    assert check_template(list(range(MAX_NODES + 1)))
    assert check_template(list(range(100))) == []


CASES: list[tuple[dict[str, Any], bool]] = [
    ({"==": [ref("/input/n"), 5]}, True),
    ({"==": [ref("/input/n"), 5.0]}, True),
    ({"==": [ref("/input/flag"), 1]}, False),
    ({"==": [ref("/input/tags"), ["a", "b"]]}, True),
    ({"==": [ref("/state/empty"), None]}, True),
    ({"==": [ref("/state/nope"), None]}, True),
    ({"!=": [ref("/input/name"), "bob"]}, True),
    ({"!=": [ref("/input/n"), 5]}, False),
    ({"<": [ref("/state/count"), 3]}, True),
    ({"<": [ref("/input/name"), "b"]}, True),
    ({"<": [ref("/input/name"), 3]}, False),
    ({"<": [ref("/input/flag"), 3]}, False),
    ({"<=": [ref("/state/count"), 2]}, True),
    ({"<=": [ref("/state/count"), 1]}, False),
    ({">": [ref("/input/n"), 4]}, True),
    ({">": [ref("/state/nope"), 4]}, False),
    ({">=": [ref("/input/n"), 5]}, True),
    ({">=": [ref("/input/n"), 6]}, False),
    ({"in": [ref("/input/name"), ["ada", "bob"]]}, True),
    ({"in": ["c", ref("/input/tags")]}, False),
    ({"in": [ref("/input/n"), ref("/input/name")]}, False),
    ({"all": [{"==": [1, 1]}, {">": [ref("/input/n"), 1]}]}, True),
    ({"all": [{"==": [1, 1]}, {">": [ref("/input/n"), 9]}]}, False),
    ({"any": [{"==": [1, 2]}, {"in": ["b", ref("/input/tags")]}]}, True),
    ({"any": [{"==": [1, 2]}, {"==": [3, 4]}]}, False),
    ({"not": {"==": [ref("/input/n"), 5]}}, False),
    ({"not": {"not": {"==": [ref("/input/obj"), {"k": [1, 2]}]}}}, True),
]


@pytest.mark.parametrize(("condition", "expected"), CASES)
def test_every_operator(condition: dict[str, Any], expected: bool) -> None:
    """Each operator, true and false, on JSON values (true is not 1; 1 is 1.0)."""
    assert check_condition(condition) == []
    assert holds(condition, SCOPE) is expected


@pytest.mark.parametrize(("condition", "where"), [
    ({"~": [1, 2]}, ()),
    ("yes", ()),
    ({"==": [1, 2], "!=": [1, 2]}, ()),
    ({"==": [1]}, ("==",)),
    ({"<": "x"}, ("<",)),
    ({"in": [1, 2]}, ("in", 1)),
    ({"all": []}, ("all",)),
    ({"any": [{"==": [1, 1]}, {"maybe": 1}]}, ("any", 1)),
    ({"not": {"==": [ref("/secret"), 1]}}, ("not", "==", 0, "$ref")),
    ({"==": [{"$ref": "/input/x", "also": 1}, 1]}, ("==", 0, "$ref")),
])
def test_condition_problems_point_into_the_condition(condition: Any,
                                                     where: tuple[Any, ...]) -> None:
    """Each malformed condition is found, at the exact place within it."""
    problems = check_condition(condition)
    assert [loc for loc, _ in problems] == [where], problems


def test_conditions_are_bounded_in_depth() -> None:
    """Nesting past the bound is refused when stored."""
    condition: Any = {"==": [1, 1]}
    for _ in range(MAX_CONDITION_DEPTH):
        condition = {"not": condition}
    assert any("nest" in msg for _, msg in check_condition(condition))
