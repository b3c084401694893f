"""Step functions for workflows defined as JSON (the jobs flow of the README): registered
with `@workflowd.function`, named by `call` steps.

- `count_words`: counts the words of the text artifact the input names as `text`, and keeps
  the counts in `state.count`;
- `write_report`: saves `state.count` as a JSON artifact and finishes with it.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any

import workflowd
from workflowd import Context, done

__all__ = ["count_words", "write_report"]

_WORD = re.compile(r"[A-Za-z][A-Za-z'-]*")


@workflowd.function
async def count_words(ctx: Context) -> None:
    text_ref = ctx.input.get("text")
    if text_ref is None or "artifact_id" not in text_ref:
        raise ValueError('the input needs "text": {"artifact_id": "..."}')
    data = await ctx.artifacts.read(text_ref["artifact_id"])
    words = [w.lower() for w in _WORD.findall(data.decode("utf-8", errors="replace"))]
    await ctx.progress(100, f"{len(words)} words")
    ctx.state["count"] = {"words": len(words), "lines": data.count(b"\n"),
                          "top": [[w, n] for w, n in Counter(words).most_common(5)]}


@workflowd.function
async def write_report(ctx: Context) -> Any:
    report = json.dumps(ctx.state["count"], indent=2).encode()
    saved = await ctx.artifacts.save("report.json", report, "application/json")
    return done({"count": ctx.state["count"], "report": saved})
