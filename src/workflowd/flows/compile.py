"""A JSON definition checked whole (`validate_definition`) and compiled to the `Workflow` and
`StepDef` objects the engine runs (`compile_definition`): the same steps, trace, events and
live status as a workflow written in Python."""

from __future__ import annotations

import inspect
import re
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from workflowd.definitions import StepDef, StepFn, Workflow
from workflowd.errors import DefinitionError, ValidationProblem
from workflowd.flows.evaluate import (
    Problem,
    check_condition,
    check_pointer,
    check_template,
    whole_pointer,
)
from workflowd.flows.model import (
    STEP_TYPES,
    ApprovalStep,
    BranchStep,
    CallStep,
    DefinitionBody,
    ExternalStep,
    HttpStep,
    SleepStep,
    Step,
)
from workflowd.flows.steps import Fetch, branch_step, http_step, missing_function
from workflowd.outbound import OutboundRefused, check_outbound_literal

__all__ = ["compile_definition", "validate_definition"]

_DEFAULT_KIND = {"http": "tool_call", "sleep": "data_processing", "branch": "decision_point",
                 "external": "tool_call", "call": "data_processing"}
_HEADER = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,128}$")


def validate_definition(data: Any, *, functions: Mapping[str, StepFn],
                        path_id: str | None = None) -> DefinitionBody:
    """The definition in `data` (parsed JSON), checked whole: a `ValidationProblem` (422)
    lists every problem with its `loc` in the body (`["body", "steps", 2, "cases", 0,
    "when"]`). `path_id` is the id of a PUT's path, which the body's must match if given."""
    try:
        body = DefinitionBody.model_validate(data)
    except ValidationError as exc:
        raise _problem([(_clean(e["loc"], e["type"]), e["msg"]) for e in exc.errors()]
                       ) from None
    problems = _check(body, functions, path_id)
    if body.id is None and path_id is not None:
        body = body.model_copy(update={"id": path_id})
    if not problems:
        try:
            compile_definition(body, 1, functions=functions, fetch=None).check()
        except DefinitionError as exc:
            problems.append((("steps",), exc.detail))
    if problems:
        raise _problem(problems)
    return body


def compile_definition(body: DefinitionBody, version: int, *, functions: Mapping[str, StepFn],
                       fetch: Fetch | None) -> Workflow:
    """The `Workflow` that runs version `version` of a checked definition. A `call` step
    whose function is not registered here compiles to a step that fails when it runs."""
    assert body.id is not None
    wf = Workflow(body.id, title=body.title, max_cycles=body.max_cycles,
                  cycle_timeout=body.cycle_timeout, timeout=body.timeout,
                  cycle_delay=body.cycle_delay, version=version,
                  description=body.description, source="json")
    names = [step.name for step in body.steps]
    for index, step in enumerate(body.steps):
        following = names[index + 1] if index + 1 < len(names) else None
        wf.steps.append(_step_def(step, index, following, functions, fetch))
    return wf


def _step_def(step: Step, index: int, following: str | None, functions: Mapping[str, StepFn],
              fetch: Fetch | None) -> StepDef:
    if isinstance(step, ApprovalStep):
        return StepDef(name=step.name, kind="approval", index=index, prompt=step.prompt,
                       type=step.type)
    kind = step.kind or _DEFAULT_KIND[step.type]
    shown: dict[str, Any] = {"name": step.name, "kind": kind, "index": index,
                             "agent": step.agent, "tool": step.tool, "type": step.type}
    if isinstance(step, SleepStep):
        return StepDef(sleep=step.seconds, **shown)
    if isinstance(step, ExternalStep):
        return StepDef(external=True, url=step.url, timeout=step.timeout, **shown)
    if isinstance(step, BranchStep):
        return StepDef(fn=branch_step(step, following), is_async=True, **shown)
    if isinstance(step, HttpStep):
        return StepDef(fn=http_step(step, fetch), is_async=True, retries=step.retries,
                       backoff=step.backoff, timeout=step.timeout, **shown)
    fn = functions.get(step.function) or missing_function(step.function)
    return StepDef(fn=fn, is_async=inspect.iscoroutinefunction(fn), retries=step.retries,
                   backoff=step.backoff, timeout=step.timeout, **shown)


# ---- checks that span fields ------------------------------------------------------------------


def _check(body: DefinitionBody, functions: Mapping[str, StepFn],
           path_id: str | None) -> list[Problem]:
    problems: list[Problem] = []
    if body.id is None and path_id is None:
        problems.append((("id",), "a definition needs an id"))
    elif body.id is not None and path_id is not None and body.id != path_id:
        problems.append((("id",), f"the id {body.id!r} is not the path's {path_id!r}"))
    names: set[str] = set()
    for index, step in enumerate(body.steps):
        if step.name in names:
            problems.append((("steps", index, "name"), f"duplicate step name {step.name!r}"))
        names.add(step.name)
    for index, step in enumerate(body.steps):
        here: tuple[str | int, ...] = ("steps", index)
        if isinstance(step, BranchStep):
            for n, case in enumerate(step.cases):
                problems.extend(((*here, "cases", n, "when", *loc), msg)
                                for loc, msg in check_condition(case.when))
                if case.goto not in names:
                    problems.append(((*here, "cases", n, "goto"),
                                     f"no step named {case.goto!r}"))
            if step.default is not None and step.default not in names:
                problems.append(((*here, "default"), f"no step named {step.default!r}"))
        elif isinstance(step, HttpStep):
            problems.extend(_check_url(step.url, (*here, "url"), template=True))
            problems.extend(((*here, "headers", key), "not a header name")
                            for key in step.headers if not _HEADER.match(key))
            problems.extend(((*here, "headers", *loc), msg)
                            for loc, msg in check_template(step.headers))
            problems.extend(((*here, "json", *loc), msg)
                            for loc, msg in check_template(step.body))
        elif isinstance(step, ExternalStep) and step.url is not None \
                and not step.url.startswith("/"):  # a path: a route of this service
            problems.extend(_check_url(step.url, (*here, "url"), template=False))
        elif isinstance(step, CallStep) and step.function not in functions:
            problems.append(((*here, "function"), (
                f"no step function is registered as {step.function!r} (register it with "
                "@workflowd.function in a module of [workflows] modules)")))
    return problems


def _check_url(url: str, loc: tuple[str | int, ...], *, template: bool) -> list[Problem]:
    pointer = whole_pointer(url) if template else None
    if pointer is not None:
        why = check_pointer(pointer)
        return [] if why is None else [(loc, why)]
    if "{{" in url:
        return [(loc, "only a whole string \"{{ /input/x }}\" is substituted")]
    try:
        check_outbound_literal(url)
    except OutboundRefused as exc:
        return [(loc, str(exc))]
    return []


def _clean(loc: tuple[int | str, ...], kind: str) -> tuple[int | str, ...]:
    """pydantic's loc without the tag it adds for a step's `type` (`steps.2.branch.cases`
    is `steps.2.cases`); a missing or unknown `type` points at `type`."""
    out: list[int | str] = []
    for n, part in enumerate(loc):
        if n >= 2 and loc[n - 2] == "steps" and isinstance(loc[n - 1], int) \
                and part in STEP_TYPES:
            continue
        out.append(part)
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        out.append("type")
    return tuple(out)


def _problem(problems: list[Problem]) -> ValidationProblem:
    return ValidationProblem.from_errors([{"loc": ["body", *loc], "msg": msg}
                                          for loc, msg in problems])
