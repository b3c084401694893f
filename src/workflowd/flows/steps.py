"""The step functions of the built-in step types that run in the process (`http`, `branch`).

They are plain step functions, run by the engine like any Python step (timeouts, retries,
progress, trace); what they do comes from the definition's data through `flows.evaluate`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from workflowd.codec import dumps, json_copy
from workflowd.context import Context
from workflowd.definitions import Goto, goto
from workflowd.flows.evaluate import holds, render
from workflowd.flows.model import BranchStep, HttpStep

__all__ = ["Fetch", "HttpStepError", "branch_step", "http_step", "missing_function"]

# (method, url, headers, JSON body or None, timeout) -> (status, the answer's JSON or text)
Fetch = Callable[[str, str, dict[str, str], Any, float], Awaitable[tuple[int, Any]]]
StepFunction = Callable[[Context], Awaitable[Any]]


class HttpStepError(RuntimeError):
    """An `http` step's call failed (non-2xx, refused URL): the attempt fails, retries apply."""


def _scope(ctx: Context) -> Mapping[str, Any]:
    return {"input": ctx.input, "state": ctx.state}


def http_step(spec: HttpStep, fetch: Fetch | None) -> StepFunction:
    method, name = spec.method, spec.name

    async def http(ctx: Context) -> Any:
        if fetch is None:
            raise HttpStepError("http steps need the service's HTTP client")
        scope = _scope(ctx)
        url = render(spec.url, scope)
        if not isinstance(url, str):
            raise HttpStepError(f"the url template gave {type(url).__name__}, not a string")
        headers = {"Idempotency-Key": ctx.idempotency_key}
        for key, value in json_copy(render(spec.headers, scope)).items():
            headers[key] = value if isinstance(value, str) else dumps(value)
        body = json_copy(render(spec.body, scope)) if spec.body is not None else None
        # `fetch` sends only where `[outbound]` allows, to addresses checked when resolved.
        status, answer = await fetch(method, url, headers, body, spec.timeout)
        if not 200 <= status < 300:
            raise HttpStepError(f"{method} {url} answered {status}")
        ctx.state[name] = answer
        return answer  # the step's output, too

    http.__name__ = f"http_{name}"
    return http


def branch_step(spec: BranchStep, following: str | None) -> StepFunction:
    """Go to the first case whose condition holds, else `default`, else the next step; the
    choice is a branch decision named after the step, its outcome the target's name."""
    cases = [(case.when, case.goto) for case in spec.cases]
    fallback = spec.default or following
    name = spec.name

    async def branch(ctx: Context) -> Goto | None:
        scope = _scope(ctx)
        target = next((target for when, target in cases if holds(when, scope)), fallback)
        ctx.decide(name, target)
        return goto(target) if target is not None else None

    branch.__name__ = f"branch_{name}"
    return branch


def missing_function(function: str) -> StepFunction:
    """What a `call` step runs when its function is not registered (any more): it fails."""

    async def missing(ctx: Context) -> None:
        raise LookupError(f"no step function is registered as {function!r} (register it "
                          "with @workflowd.function in a module of [workflows] modules)")

    return missing
