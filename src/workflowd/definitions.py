"""Workflow definitions: `Workflow`, its steps and gates, `goto`/`done`, and the registry.

Pure data and checks; nothing here does I/O beyond importing the configured modules.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import textwrap
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeVar, get_args, overload

from workflowd.errors import DefinitionError
from workflowd.outbound import OutboundPolicy, OutboundRefused

if TYPE_CHECKING:
    from workflowd.context import Context

__all__ = [
    "FUNCTIONS",
    "MAX_SLEEP",
    "Done",
    "Goto",
    "Sleep",
    "StepDef",
    "StepKind",
    "Workflow",
    "done",
    "function",
    "goto",
    "load_workflows",
]

StepKind = Literal["agent_execution", "tool_call", "decision_point", "data_processing"]
STEP_KINDS: tuple[str, ...] = get_args(StepKind)
StepFn = Callable[["Context"], Any] | Callable[["Context"], Awaitable[Any]]
F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True, slots=True)
class Goto:
    """A step's answer: run the named step next."""

    target: str


@dataclass(frozen=True, slots=True)
class Done:
    """A step's answer: finish the execution with this result."""

    result: Any = None


@dataclass(frozen=True, slots=True)
class Sleep:
    """How a step ended when it called `ctx.sleep`: commit the cycle, hold no task for
    `seconds`, then run `target` (the same step, run again from its start)."""

    seconds: float
    target: str


# The longest durable sleep (ten years): past it a deadline would not be a date any more.
MAX_SLEEP = 10 * 366 * 86400.0


def goto(name: str) -> Goto:
    """Continue with the step called `name` (any step, earlier ones too)."""
    return Goto(name)


def done(result: Any = None) -> Done:
    """Finish the execution now with `result`."""
    return Done(result)


@dataclass(frozen=True, slots=True)
class StepDef:
    """One declared step (or approval gate) of a workflow."""

    name: str
    kind: str
    index: int
    fn: StepFn | None = None
    agent: str | None = None
    tool: str | None = None
    retries: int = 0
    backoff: float = 0.5
    timeout: float | None = None
    soft_timeout: float | None = None
    prompt: str | None = None
    is_async: bool = False
    external: bool = False
    url: str | None = None
    sleep: float | None = None  # a durable sleep step: seconds it holds no task
    type: str | None = None  # the step's `type` in a JSON definition (None: Python)

    @property
    def is_gate(self) -> bool:
        return self.kind == "approval"


@dataclass(eq=False)
class Workflow:
    """A named, ordered list of steps; module-level instances in configured modules register."""

    id: str
    title: str | None = None
    max_cycles: int | None = None
    cycle_timeout: float | None = None
    timeout: float | None = None
    cycle_delay: float = 0.0
    version: int = 1
    description: str | None = None
    steps: list[StepDef] = field(default_factory=list)
    # "json" for a workflow compiled from a stored definition (`workflowd.flows`).
    source: Literal["python", "json"] = "python"

    def __post_init__(self) -> None:
        if not self.id or not isinstance(self.id, str):
            raise DefinitionError("a workflow needs a non-empty string id")
        for name in ("max_cycles", "cycle_timeout", "timeout"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise DefinitionError(f"workflow {self.id!r}: {name} must be positive")
        if self.cycle_delay < 0:
            raise DefinitionError(f"workflow {self.id!r}: cycle_delay cannot be negative")

    @overload
    def step(self, fn: F) -> F: ...

    @overload
    def step(
        self,
        fn: None = None,
        *,
        name: str | None = None,
        kind: str = "data_processing",
        agent: str | None = None,
        tool: str | None = None,
        retries: int = 0,
        backoff: float = 0.5,
        timeout: float | None = None,
        soft_timeout: float | None = None,
    ) -> Callable[[F], F]: ...

    def step(
        self,
        fn: F | None = None,
        *,
        name: str | None = None,
        kind: str = "data_processing",
        agent: str | None = None,
        tool: str | None = None,
        retries: int = 0,
        backoff: float = 0.5,
        timeout: float | None = None,
        soft_timeout: float | None = None,
    ) -> Any:
        """Declare a step; usable as `@wf.step` or `@wf.step(kind=..., retries=...)`.

        `timeout` bounds each attempt (it overrides the workflow's `cycle_timeout`);
        `soft_timeout` sets `ctx.expiring` and records `step_soft_timeout` at that point, so
        the step can save its work before the hard timeout.
        """

        def register(func: F) -> F:
            if kind not in STEP_KINDS:
                raise DefinitionError(
                    f"workflow {self.id!r}: step kind {kind!r} is not one of "
                    f"{', '.join(STEP_KINDS)}"
                )
            if retries < 0 or backoff < 0 or (timeout is not None and timeout <= 0):
                raise DefinitionError(
                    f"workflow {self.id!r}: retries and backoff must be >= 0, timeout > 0"
                )
            if soft_timeout is not None and (
                    soft_timeout <= 0 or (timeout is not None and soft_timeout >= timeout)):
                raise DefinitionError(f"workflow {self.id!r}: soft_timeout must be > 0 and "
                                      "below the step's timeout")
            self._add(
                StepDef(
                    name=name or func.__name__,
                    kind=kind,
                    index=len(self.steps),
                    fn=func,
                    agent=agent,
                    tool=tool,
                    retries=retries,
                    backoff=backoff,
                    timeout=timeout,
                    soft_timeout=soft_timeout,
                    is_async=inspect.iscoroutinefunction(func),
                )
            )
            return func

        return register(fn) if fn is not None else register

    def external(self, name: str, url: str | None = None, timeout: float | None = None, *,
                 kind: str = "tool_call", agent: str | None = None,
                 tool: str | None = None) -> StepDef:
        """Declare a step done by a worker outside the process.

        When it starts, its `step_started` event carries a `callback` (progress and complete
        URLs, and a token for that run); with `url=`, workflowd POSTs the step's input and the
        callback there (a path, `/demo/ocr`, is one of this service's routes). The execution
        holds no task while it waits; `timeout` (else the workflow's `cycle_timeout`) bounds
        the wait.
        """
        if kind not in STEP_KINDS:
            raise DefinitionError(f"workflow {self.id!r}: step kind {kind!r} is not one of "
                                  f"{', '.join(STEP_KINDS)}")
        if timeout is not None and timeout <= 0:
            raise DefinitionError(f"workflow {self.id!r}: timeout must be > 0")
        if url is not None and not url.startswith(("http://", "https://", "/")):
            raise DefinitionError(f"workflow {self.id!r}: external url must be http(s), or "
                                  "a path on this service")
        if url is not None and not url.startswith("/"):
            try:  # link-local and metadata hosts; `[outbound] allow_hosts` is checked at start
                OutboundPolicy().check_url(url)
            except OutboundRefused as exc:
                raise DefinitionError(
                    f"workflow {self.id!r}: external step {name!r}: url refused: {exc}",
                ) from None
        step = StepDef(name=name, kind=kind, index=len(self.steps), agent=agent, tool=tool,
                       timeout=timeout, external=True, url=url)
        self._add(step)
        return step

    def sleep(self, name: str, seconds: float, *, kind: str = "data_processing") -> StepDef:
        """Declare a durable sleep: the execution holds no task for `seconds`, across
        restarts, then goes on with the next step."""
        if kind not in STEP_KINDS:
            raise DefinitionError(f"workflow {self.id!r}: step kind {kind!r} is not one of "
                                  f"{', '.join(STEP_KINDS)}")
        if not 0 < seconds <= MAX_SLEEP:
            raise DefinitionError(f"workflow {self.id!r}: sleep {name!r} needs seconds in "
                                  f"(0, {MAX_SLEEP:.0f}]")
        step = StepDef(name=name, kind=kind, index=len(self.steps), sleep=float(seconds))
        self._add(step)
        return step

    def approval(self, name: str, prompt: str | None = None) -> StepDef:
        """Declare a human approval gate at this point of the step list."""
        gate = StepDef(name=name, kind="approval", index=len(self.steps), prompt=prompt)
        self._add(gate)
        return gate

    def _add(self, step: StepDef) -> None:
        if any(s.name == step.name for s in self.steps):
            raise DefinitionError(f"workflow {self.id!r}: duplicate step name {step.name!r}")
        self.steps.append(step)

    def get_step(self, name: str) -> StepDef | None:
        return next((s for s in self.steps if s.name == name), None)

    def check(self) -> None:
        """Raise `DefinitionError` for a workflow that cannot run as written."""
        if not self.steps:
            raise DefinitionError(f"workflow {self.id!r} declares no steps")
        names = {s.name for s in self.steps}
        for step in self.steps:
            if step.fn is None:
                continue
            for target in _literal_goto_targets(step.fn):
                if target not in names:
                    raise DefinitionError(
                        f"workflow {self.id!r}: step {step.name!r} may goto unknown step {target!r}"
                    )


def _literal_goto_targets(fn: Callable[..., Any]) -> set[str]:
    """Literal names passed to `goto(...)` in a step's source (others are checked at run time)."""
    try:
        source = textwrap.dedent(inspect.getsource(fn))
        tree = ast.parse(source)
    except (OSError, TypeError, SyntaxError):
        return set()
    targets: set[str] = set()
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and node.args):
            continue
        func = node.func
        called = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
        if called != "goto":
            continue
        targets |= _names_in(node.args[0])
    return targets


def _names_in(expr: ast.expr) -> set[str]:
    """The step names an argument can evaluate to: literals, through `a if c else b` and `or`."""
    if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
        return {expr.value}
    if isinstance(expr, ast.IfExp):
        return _names_in(expr.body) | _names_in(expr.orelse)
    if isinstance(expr, ast.BoolOp):
        return set().union(*(_names_in(value) for value in expr.values))
    return set()


# Step functions registered with `@workflowd.function`, by name: what a JSON definition's
# `call` steps run.
FUNCTIONS: dict[str, StepFn] = {}


@overload
def function(fn: F) -> F: ...


@overload
def function(fn: None = None, *, name: str | None = None) -> Callable[[F], F]: ...


def function(fn: F | None = None, *, name: str | None = None) -> Any:
    """Register a step function for the `call` steps of JSON definitions (API.md §11):
    `@workflowd.function` or `@workflowd.function(name="ocr")`. It receives a `Context` and
    answers like any step (None, `goto`, `done`); a `def` one runs in a worker thread."""

    def register(func: F) -> F:
        key = name or func.__name__
        existing = FUNCTIONS.get(key)
        if existing is not None and _origin(existing) != _origin(func):
            raise DefinitionError(f"two step functions are registered as {key!r}")
        FUNCTIONS[key] = func
        return func

    return register(fn) if fn is not None else register


def _origin(fn: Callable[..., Any]) -> tuple[str, str]:
    # A module imported again (a test reloading it) registers the same function anew.
    return getattr(fn, "__module__", ""), getattr(fn, "__qualname__", repr(fn))


def load_workflows(modules: list[str], workflows: Iterable[Workflow] = ()) -> dict[str, Workflow]:
    """Import each module and register every module-level `Workflow`, then the `workflows`
    given as objects (a test's), checking each one."""
    registry: dict[str, Workflow] = {}
    for module_name in modules:
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise DefinitionError(f"cannot import workflow module {module_name!r}: {exc}") from exc
        for value in vars(module).values():
            if isinstance(value, Workflow):
                _register(registry, value, f"in {module_name!r}")
    for wf in workflows:
        _register(registry, wf, "among the workflows given")
    return registry


def _register(registry: dict[str, Workflow], wf: Workflow, where: str) -> None:
    existing = registry.get(wf.id)
    if existing is wf:
        return  # the same object imported by two modules
    if existing is not None:
        raise DefinitionError(f"duplicate workflow id {wf.id!r} {where}")
    wf.check()
    registry[wf.id] = wf
