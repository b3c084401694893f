"""Peers for workload (b): DBOS (SQLite) and LangGraph (SQLite checkpointer).

They live in a virtualenv of their own (`bench/.peers-venv`, gitignored), made and filled by
the bench when missing, so nothing of theirs reaches the project's environment. Each peer runs
as a script in that venv and prints one JSON object; a peer that cannot be installed or run
is reported with the reason, and the run goes on.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from bench import procs

__all__ = ["PEERS", "VENV", "ensure_venv", "run_peers"]

HERE = Path(__file__).resolve().parent
VENV = HERE.parent / ".peers-venv"
PACKAGES = ("dbos", "langgraph", "langgraph-checkpoint-sqlite")
# name: (script, modules the script imports)
PEERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "DBOS (SQLite)": ("dbos_peer.py", ("dbos",)),
    "LangGraph (SqliteSaver)": ("langgraph_peer.py", ("langgraph", "langgraph.checkpoint.sqlite")),
}


def _python() -> Path:
    return VENV / "bin" / "python"


async def _run(*args: str, timeout: float) -> tuple[int, str]:
    proc = await procs.spawn_plain(*args, merge_stderr=True)
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        await procs.end(proc)
        return -1, f"timed out after {timeout:.0f} s"
    await procs.end(proc)
    return proc.returncode if proc.returncode is not None else -1, out.decode(errors="replace")


async def _importable(modules: tuple[str, ...]) -> bool:
    code = "; ".join(f"import {m}" for m in modules)
    rc, _ = await _run(str(_python()), "-c", code, timeout=120.0)
    return rc == 0


async def ensure_venv(log: Any) -> str | None:
    """Make the peers' venv and install the peers when missing; answer an error, or None."""
    needed = {m for _, modules in PEERS.values() for m in modules}
    if _python().exists() and await _importable(tuple(sorted(needed))):
        return None
    if not _python().exists():
        log(f"peers: creating {VENV}")
        rc, out = await _run(sys.executable, "-m", "venv", str(VENV), timeout=120.0)
        if rc != 0:
            return f"cannot create the venv: {out.strip()[-300:]}"
    log(f"peers: pip install {' '.join(PACKAGES)} (into {VENV.name})")
    began = time.perf_counter()
    rc, out = await _run(str(_python()), "-m", "pip", "install", "-q",
                         "--disable-pip-version-check", *PACKAGES, timeout=900.0)
    if rc != 0:
        lines = [line for line in out.splitlines() if "is ignored" not in line]
        return f"pip install failed ({rc}): {' '.join(lines)[-300:]}"
    log(f"peers: installed in {time.perf_counter() - began:.0f} s")
    return None


async def run_peers(n: int, workdir: Path, budget: float, log: Any) -> dict[str, Any]:
    """Run every peer on workload (b); answer {name: figures or {"error": why}}."""
    out: dict[str, Any] = {}
    error = await ensure_venv(log)
    for name, (script, modules) in PEERS.items():
        if error is not None:
            out[name] = {"error": error}
            continue
        if not await _importable(modules):
            out[name] = {"error": f"cannot import {', '.join(modules)} in {VENV.name}"}
            continue
        log(f"(b) peer {name}: {n} three-step executions")
        db = workdir / f"peer-{script.removesuffix('.py')}.sqlite"
        rc, text = await _run(str(_python()), str(HERE / script), str(n), str(db), str(budget),
                              timeout=budget + 120.0)
        lines = [line for line in text.strip().splitlines() if line.startswith("{")]
        try:
            if rc != 0 or not lines:
                raise ValueError(text.strip()[-400:])
            out[name] = json.loads(lines[-1])
        except (ValueError, IndexError) as exc:
            out[name] = {"error": f"exit {rc}: {str(exc)[-300:]}"}
    return out
