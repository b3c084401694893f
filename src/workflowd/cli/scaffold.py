"""Commands that need no server: `workflowd init` (a starter project) and `workflowd token
create` (a bearer token and the config lines that hold its hash)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from workflowd.tokens import hash_token, new_token

__all__ = ["FLOWS", "config_text", "init", "token_create"]

MODULE = "flows"

CONFIG = """\
# workflowd configuration (written by `workflowd init`). Every key has a default; see the
# README for all of them. Any key can be overridden by an environment variable
# WORKFLOWD_<SECTION>_<KEY>, e.g. WORKFLOWD_SERVER_PORT=9000.

[server]
# Keep it on loopback unless something in front authenticates callers.
host = "127.0.0.1"
port = {port}

[store]
# The SQLite file holding everything (relative to where `workflowd serve` runs).
path = "workflowd.db"

[workflows]
# Modules whose module-level Workflow objects are registered. `{module}` is the file beside
# this config (`{module}.py`); `workflowd.examples` holds the bundled audit-plan workflow.
modules = ["{module}", "workflowd.examples"]

[logging]
# debug | info | warning | error; console | json
level = "info"
format = "console"
"""

FLOWS = '''\
"""Your workflows (written by `workflowd init`): every module-level `Workflow` is registered.

Start one with `workflowd start hello --input '{"name": "Ada"}' --follow`.
"""

from __future__ import annotations

import asyncio
from typing import Any

from workflowd import Context, Workflow, done

hello = Workflow("hello", title="Say hello, after a human agrees", max_cycles=10,
                 timeout=3600.0)


@hello.step(kind="data_processing")
async def prepare(ctx: Context) -> None:
    """One cycle: its state is committed before the next step starts."""
    await ctx.progress(30, "Looking up the name", current_task="lookup")
    await asyncio.sleep(0.5)  # stands for real work; a plain `def` step runs in a thread
    ctx.state["name"] = ctx.input.get("name", "world")
    ctx.log("prepared", name=ctx.state["name"])


hello.approval("confirm", prompt="Send the greeting?")


@hello.step(kind="tool_call", tool="Greeter", retries=2, timeout=30.0)
async def greet(ctx: Context) -> Any:
    await ctx.progress(50, "Writing the greeting")
    await asyncio.sleep(0.5)
    return done({"greeting": f"Hello, {ctx.state['name']}!"})
'''


def config_text(port: int = 8080) -> str:
    return CONFIG.format(port=port, module=MODULE)


def init(directory: str, *, force: bool = False) -> int:
    """Write `config.toml` and `flows.py` into `directory` (made if missing)."""
    target = Path(directory)
    files = {target / "config.toml": config_text(), target / f"{MODULE}.py": FLOWS}
    existing = [str(path) for path in files if path.exists()]
    if existing and not force:
        print(f"workflowd: {', '.join(existing)} exists already; --force overwrites",  # noqa: T201
              file=sys.stderr)
        return 2
    target.mkdir(parents=True, exist_ok=True)
    for path, text in files.items():
        path.write_text(text)
    where = "" if target.resolve() == Path.cwd().resolve() else f"cd {directory} && "
    print(f"wrote {', '.join(str(p) for p in files)}\n"  # noqa: T201
          f"run the service:   {where}workflowd serve\n"
          f"then, elsewhere:   workflowd start hello --input '{{\"name\": \"Ada\"}}' --follow")
    return 0


def token_create(subject: str, role: str, *, as_json: bool = False) -> int:
    """Print a new random token once, and the `[[auth.tokens]]` lines that hold its hash."""
    if not subject.strip():
        print("workflowd: --subject must not be empty", file=sys.stderr)  # noqa: T201
        return 2
    token = new_token()
    digest = hash_token(token)
    if as_json:
        print(json.dumps({"token": token, "subject": subject, "role": role,  # noqa: T201
                          "sha256": digest}))
        return 0
    # A JSON string is a TOML basic string (quotes and control characters escaped alike;
    # not ASCII-only, since TOML has no escapes for the halves of a surrogate pair).
    quoted = json.dumps(subject, ensure_ascii=False)
    print(f"{token}\n\n"  # noqa: T201
          f"# the token above is shown once; add these lines to config.toml:\n"
          f"[[auth.tokens]]\nsubject = {quoted}\nrole = \"{role}\"\nsha256 = \"{digest}\"")
    return 0
