"""Definitions are checked when loaded: a clear error at start-up, not a failure at run time."""

from __future__ import annotations

import sys
import types
from typing import Any

import pytest

from workflowd import Context, Workflow, done, goto
from workflowd.definitions import load_workflows
from workflowd.errors import DefinitionError


def _module(name: str, **values: Any) -> str:
    module = types.ModuleType(name)
    module.__dict__.update(values)
    sys.modules[name] = module
    return name


def test_unknown_goto_target_is_refused_at_load() -> None:
    """A literal goto to a step that does not exist fails the load, naming both."""
    wf = Workflow("bad-goto")

    @wf.step
    async def start(ctx: Context) -> Any:
        return goto("nowhere" if ctx.input else "start")

    with pytest.raises(DefinitionError, match="unknown step 'nowhere'"):
        load_workflows([_module("tests._bad_goto", wf=wf)])


def test_goto_targets_through_conditionals_are_accepted() -> None:
    """Names chosen by `a if cond else b` are all checked, the condition's literals are not."""
    wf = Workflow("good-goto")

    @wf.step
    async def route(ctx: Context) -> Any:
        return goto("fast" if ctx.input.get("mode") == "quick" else "slow")

    @wf.step
    async def fast(ctx: Context) -> Any:
        return done()

    @wf.step
    async def slow(ctx: Context) -> Any:
        return done()

    assert load_workflows([_module("tests._good_goto", wf=wf)]) == {"good-goto": wf}


def test_duplicate_step_names_are_refused() -> None:
    """Two steps of one name cannot be declared."""
    wf = Workflow("dupes")

    @wf.step
    async def same(ctx: Context) -> None:
        return None

    with pytest.raises(DefinitionError, match="duplicate step name 'same'"):
        wf.approval("same")


def test_duplicate_workflow_ids_are_refused() -> None:
    """Two workflows of one id in the configured modules fail the load."""
    first, second = Workflow("twin"), Workflow("twin")
    for wf in (first, second):
        wf.approval("gate")
    with pytest.raises(DefinitionError, match="duplicate workflow id 'twin'"):
        load_workflows([_module("tests._twins_a", wf=first), _module("tests._twins_b", wf=second)])


def test_missing_module_and_empty_workflow_are_refused() -> None:
    """An unimportable module and a workflow without steps are definition errors."""
    with pytest.raises(DefinitionError, match="cannot import"):
        load_workflows(["tests.no_such_module"])
    with pytest.raises(DefinitionError, match="declares no steps"):
        load_workflows([_module("tests._empty", wf=Workflow("empty"))])


def test_bad_step_options_are_refused() -> None:
    """Unknown kinds and negative retries fail at declaration."""
    wf = Workflow("opts")
    with pytest.raises(DefinitionError, match="step kind"):
        wf.step(kind="magic")(lambda ctx: None)
    with pytest.raises(DefinitionError, match="retries"):
        wf.step(retries=-1)(lambda ctx: None)
    with pytest.raises(DefinitionError, match="max_cycles"):
        Workflow("neg", max_cycles=0)


def test_serve_refuses_a_bad_definition(capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """`workflowd serve` exits 2 with the error on stderr when a definition is wrong."""
    from workflowd.cli import main

    wf = Workflow("bad-at-start")

    @wf.step
    async def start(ctx: Context) -> Any:
        return goto("missing")

    name = _module("tests._bad_at_start", wf=wf)
    monkeypatch.setenv("WORKFLOWD_WORKFLOWS_MODULES", f'["{name}"]')
    # Logging set up onto capsys' stream would outlive this test in cached loggers.
    monkeypatch.setattr("workflowd.cli.serve.configure_logging", lambda settings: None)
    assert main(["serve"]) == 2
    assert "unknown step 'missing'" in capsys.readouterr().err
