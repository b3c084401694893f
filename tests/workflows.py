"""Small workflows the tests drive; loaded beside the examples by the test settings."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import workflowd
from workflowd import Context, Workflow, done, goto

# Steps that wait for the test to let them go, keyed by a name from the input.
RELEASES: dict[str, asyncio.Event] = {}
# Names in the order their executions started a `recorded` step.
STARTED: list[str] = []


def release(name: str) -> asyncio.Event:
    return RELEASES.setdefault(name, asyncio.Event())


three = Workflow("three-steps", title="Three trivial steps")


@three.step
async def one(ctx: Context) -> None:
    ctx.state["one"] = True


@three.step
async def two(ctx: Context) -> None:
    ctx.state["two"] = ctx.input.get("value", 2)


@three.step
async def three_(ctx: Context) -> None:
    ctx.state["three"] = True


slow = Workflow("slow-three", title="Three steps of 0.3 s each")


@slow.step
async def slow_a(ctx: Context) -> None:
    await asyncio.sleep(0.3)
    ctx.state["a"] = ctx.cycle


@slow.step
async def slow_b(ctx: Context) -> None:
    await asyncio.sleep(0.3)
    ctx.state["b"] = ctx.cycle


@slow.step
async def slow_c(ctx: Context) -> None:
    await asyncio.sleep(0.3)
    ctx.state["c"] = ctx.cycle


sleeper = Workflow("sleeper", title="Sleeps a minute")


@sleeper.step
async def nap(ctx: Context) -> None:
    await ctx.progress(5, "about to sleep")
    try:
        await asyncio.sleep(60)
    except asyncio.CancelledError:
        ctx.state["saw_cancel"] = True
        raise


waiter = Workflow("waiter", title="Waits until the test releases it")


@waiter.step
async def recorded(ctx: Context) -> None:
    STARTED.append(ctx.input["name"])
    await release(ctx.input["name"]).wait()


flaky = Workflow("flaky", title="Fails a given number of times")


@flaky.step(retries=2, backoff=0.01)
async def wobble(ctx: Context) -> Any:
    if ctx.attempt <= ctx.input.get("fail_times", 0):
        raise RuntimeError(f"attempt {ctx.attempt} failed")
    return done({"attempt": ctx.attempt})


step_timeout = Workflow("step-timeout", title="A step past its timeout")


@step_timeout.step(timeout=0.2, retries=1, backoff=0.01)
async def too_slow(ctx: Context) -> None:
    await asyncio.sleep(5)


exec_timeout = Workflow("exec-timeout", title="An execution past its timeout", timeout=0.5)


@exec_timeout.step(timeout=10)
async def long_step(ctx: Context) -> None:
    await asyncio.sleep(5)


cycle_timeout = Workflow("cycle-timeout", title="A cycle past its timeout", cycle_timeout=0.3)


@cycle_timeout.step(retries=5, backoff=0.01)
async def stuck(ctx: Context) -> None:
    await asyncio.sleep(5)


looper = Workflow("looper", title="Loops until the cycle limit", max_cycles=5)


@looper.step
async def again(ctx: Context) -> Any:
    ctx.state["n"] = ctx.state.get("n", 0) + 1
    return goto("again")


brancher = Workflow("brancher", title="Takes one of two branches")


@brancher.step(kind="decision_point")
async def choose(ctx: Context) -> Any:
    way = ctx.input.get("way", "left")
    ctx.decide("way", way)
    return goto("left" if way == "left" else "right")


@brancher.step(agent="LeftAgent", kind="agent_execution")
async def left(ctx: Context) -> Any:
    return done({"took": "left"})


@brancher.step(agent="RightAgent", kind="agent_execution")
async def right(ctx: Context) -> Any:
    return done({"took": "right"})


gated = Workflow("gated", title="A gate in the middle")


@gated.step
async def before(ctx: Context) -> None:
    ctx.state["before"] = True


gated.approval("sign_off", prompt="Go on?")


@gated.step
async def after(ctx: Context) -> None:
    ctx.state["after"] = True


blocking = Workflow("blocking", title="A plain def step in a worker thread")


@blocking.step
def crunch(ctx: Context) -> None:
    ctx.progress(50, "half way")
    time.sleep(0.05)
    ctx.log("crunched", rows=3)
    ctx.state["crunched"] = 3


chatty = Workflow("chatty", title="Logs lines across two steps")


@chatty.step
async def talk(ctx: Context) -> None:
    ctx.log("first")
    ctx.log("second", n=2)


@chatty.step
async def talk_more(ctx: Context) -> None:
    ctx.log("third", n=3, tags=["x"])


external_job = Workflow("external-job", title="A step done by an outside worker")


@external_job.step
async def prepare(ctx: Context) -> None:
    ctx.state["prepared"] = True


external_job.external("work", timeout=30.0)


@external_job.step
async def wrap_up(ctx: Context) -> Any:
    return done({"work": ctx.state.get("work"), "prepared": ctx.state["prepared"]})


external_short = Workflow("external-short", title="An outside worker that never answers")
external_short.external("never", timeout=0.3)


pulse = Workflow("pulse", title="One progress report each time the test releases a beat")


@pulse.step
async def beat(ctx: Context) -> None:
    beats = ctx.input.get("beats", 3)
    for i in range(beats):
        await release(f"{ctx.input['name']}-{i}").wait()
        await ctx.progress(100 * (i + 1) / beats, f"beat {i}")


chatter = Workflow("chatter", title="Cycles with a progress report each, until released",
                   max_cycles=100_000)


@chatter.step
async def chat(ctx: Context) -> Any:
    await ctx.progress(50, "chatting")
    if release(ctx.input["name"]).is_set() and ctx.cycle >= ctx.input.get("min_cycles", 1):
        return done({"cycles": ctx.cycle})
    return goto("chat")


burst = Workflow("burst", title="Once released, `cycles` quick cycles with a progress report each",
                 max_cycles=100_000)


@burst.step
async def blast(ctx: Context) -> Any:
    if ctx.cycle == 1:
        await release(ctx.input["name"]).wait()
    blob = "x" * (1024 * ctx.input.get("blob_kb", 0))
    await ctx.progress(100 * ctx.cycle / ctx.input["cycles"], f"cycle {ctx.cycle}", blob=blob)
    if ctx.cycle >= ctx.input["cycles"]:
        return done({"cycles": ctx.cycle})
    return goto("blast")


flood = Workflow("flood", title="Reports progress `calls` times in a tight loop")


@flood.step
async def spam(ctx: Context) -> None:
    calls = ctx.input["calls"]
    for i in range(1, calls + 1):
        await ctx.progress(100 * i / calls, f"call {i}", i=i)
        await asyncio.sleep(0)


gate_timeout = Workflow("gate-timeout", title="A gate outlasting the execution's timeout",
                        timeout=0.3)


@gate_timeout.step
async def before_gate(ctx: Context) -> None:
    ctx.state["before"] = True


gate_timeout.approval("too_late")


handoff = Workflow("handoff", title="An in-process step that hands its work to another service")
CALLBACKS: dict[str, dict[str, str]] = {}


@handoff.step
async def delegate(ctx: Context) -> None:
    """Publishes `ctx.callback` for the test (the other service), then waits to be released."""
    CALLBACKS[ctx.execution_id] = ctx.callback
    release(f"callback:{ctx.execution_id}").set()
    await release(ctx.execution_id).wait()


held_two = Workflow("held-two", title="A first step held until released, then a second")


@held_two.step
async def held(ctx: Context) -> None:
    STARTED.append(ctx.input["name"])
    await release(ctx.input["name"]).wait()
    ctx.state["held"] = True


@held_two.step
async def second(ctx: Context) -> None:
    ctx.state["second"] = True


napper = Workflow("napper", title="A durable sleep step between two steps")


@napper.step
async def before_nap(ctx: Context) -> None:
    ctx.state["before"] = True


napper.sleep("nap", 0.3)


@napper.step
async def after_nap(ctx: Context) -> None:
    ctx.state["after"] = True


long_nap = Workflow("long-nap", title="A sleep step that outlasts a restart")
long_nap.sleep("wait_a_bit", 1.5)


@long_nap.step
async def woken(ctx: Context) -> Any:
    return done({"woke": True})


snoozer = Workflow("snoozer", title="A step that sleeps with ctx.sleep, then runs again")


@snoozer.step
async def snooze(ctx: Context) -> Any:
    runs = ctx.state.get("runs", 0) + 1
    ctx.state["runs"] = runs
    ctx.state.setdefault("woke", []).append(ctx.woke)
    if runs < ctx.input.get("times", 2):
        await ctx.sleep(ctx.input.get("seconds", 0.2))
        ctx.state["never"] = True  # nothing after ctx.sleep runs
    return done({"runs": runs, "woke": ctx.state["woke"]})


thread_snoozer = Workflow("thread-snoozer", title="A plain def step that sleeps once")


@thread_snoozer.step
def thread_snooze(ctx: Context) -> Any:
    if not ctx.woke:
        ctx.state["slept"] = True
        ctx.sleep(0.1)
    return done({"slept": ctx.state.get("slept"), "woke": ctx.woke})


# Step functions for the `call` steps of JSON definitions.


@workflowd.function
async def add_one(ctx: Context) -> None:
    ctx.state["n"] = ctx.state.get("n", ctx.input.get("n", 0)) + 1


@workflowd.function(name="finish-with")
def finish_with(ctx: Context) -> Any:
    ctx.progress(50, "finishing")
    return done({"n": ctx.state.get("n"), "answer": ctx.state.get("ask")})


@workflowd.function
async def hold_json(ctx: Context) -> None:
    STARTED.append(ctx.input["name"])
    await release(ctx.input["name"]).wait()


shouter = Workflow("shouter", title="Reads its input artifact, saves it upper-cased")


@shouter.step
async def shout(ctx: Context) -> None:
    async with ctx.artifacts.open(ctx.input["doc"]["artifact_id"]) as f:
        text = f.read().decode()
    ctx.state["out"] = await ctx.artifacts.save("shout.txt", text.upper(), "text/plain")


@shouter.step
def whisper(ctx: Context) -> Any:
    with ctx.artifacts.open(ctx.state["out"]["artifact_id"]) as f:
        text = f.read().decode()
    saved = ctx.artifacts.save_sync("whisper.txt", text.lower().encode(), "text/plain")
    return done({"out": ctx.state["out"], "whisper": saved})


quick_timeout = Workflow("quick-timeout", title="Two quick steps, a short overall timeout",
                         timeout=0.5)


@quick_timeout.step
async def quick_a(ctx: Context) -> None:
    ctx.state["a"] = True


@quick_timeout.step
async def quick_b(ctx: Context) -> None:
    ctx.state["b"] = True


slow_steps = Workflow("slow-steps", title="Three steps of `seconds` each, with progress")


async def _slowly(ctx: Context, name: str) -> None:
    seconds = float(ctx.input.get("seconds", 1.0))
    await ctx.progress(10, f"{name} begins")
    await asyncio.sleep(seconds)
    ctx.state[name] = ctx.cycle


@slow_steps.step
async def slow_one(ctx: Context) -> None:
    await _slowly(ctx, "one")


@slow_steps.step
async def slow_two(ctx: Context) -> None:
    await _slowly(ctx, "two")


@slow_steps.step
async def slow_three(ctx: Context) -> None:
    await _slowly(ctx, "three")


# ---- for the proofs of issue 8 -------------------------------------------------------------

# Thread events of plain `def` steps, keyed by a name from the input (cleared per test).
THREAD_EVENTS: dict[str, threading.Event] = {}
# What steps saw, keyed by a name from the input (cleared per test).
SEEN: dict[str, Any] = {}


def thread_event(name: str) -> threading.Event:
    return THREAD_EVENTS.setdefault(name, threading.Event())


stubborn = Workflow("stubborn", title="A step that swallows its cancel")


@stubborn.step
async def refuse(ctx: Context) -> None:
    try:
        await release(ctx.input["name"]).wait()
    except asyncio.CancelledError:
        SEEN[ctx.input["name"]] = "cancel swallowed"
        await release(f"{ctx.input['name']}-after").wait()  # a second cancel ends it


lingering = Workflow("lingering", title="A def step whose thread runs on past its timeout")


@lingering.step(timeout=0.2, retries=1, backoff=0.01)
def linger(ctx: Context) -> None:
    name = ctx.input["name"]
    if ctx.attempt == 1:
        thread_event(f"{name}-go").wait(10)  # set by the second attempt: the first timed out
        SEEN[name] = {"cancelled": ctx.cancelled}
        ctx.progress(77, "stale")
        ctx.log("stale line")
        ctx.state["stale"] = True
        ctx.decide("stale", True)
        thread_event(f"{name}-done").set()
        return
    thread_event(f"{name}-go").set()
    thread_event(f"{name}-done").wait(10)
    ctx.state["second"] = True


soft = Workflow("soft", title="Saves its work when told its time is nearly up")


@soft.step(soft_timeout=0.1, timeout=10)
async def careful(ctx: Context) -> None:
    expiring = ctx.expiring
    assert isinstance(expiring, asyncio.Event)
    await expiring.wait()
    ctx.state["saved"] = True


soft_def = Workflow("soft-def", title="A def step told its time is nearly up")


@soft_def.step(soft_timeout=0.1, timeout=10)
def careful_def(ctx: Context) -> None:
    expiring = ctx.expiring
    assert isinstance(expiring, threading.Event)
    ctx.state["saved"] = expiring.wait(10)


own_timeout = Workflow("own-timeout", title="A step's own timeout over the cycle_timeout",
                       cycle_timeout=0.5)


@own_timeout.step(timeout=2.0)
async def patient(ctx: Context) -> None:
    await asyncio.sleep(0.8)
    ctx.state["slept"] = True


no_limit = Workflow("no-limit", title="A step that declares no timeout anywhere")


@no_limit.step
async def unhurried(ctx: Context) -> None:
    await asyncio.sleep(1.0)
    ctx.state["slept"] = True


frozen_input = Workflow("frozen-input", title="Tries to change its input and its reports")


@frozen_input.step
async def meddle(ctx: Context) -> None:
    tried: dict[str, str] = {}
    attempts: dict[str, Any] = {
        "top": lambda: ctx.input.__setitem__("x", 1),  # type: ignore[index]
        "nested": lambda: ctx.input["nested"].__setitem__("k", 2),
        "list": lambda: ctx.input["nested"]["items"].append(3),
        "deep": lambda: ctx.input["nested"]["items"][0].__setitem__("z", 4),
    }
    for where, attempt in attempts.items():
        try:
            attempt()
            tried[where] = "changed"
        except (TypeError, AttributeError):
            tried[where] = "refused"
    ctx.state["tried"] = tried
    custom = {"items": [1], "meta": {"k": "v"}}
    await ctx.progress(50, "reported", data=custom)
    custom["items"].append(2)  # type: ignore[attr-defined]
    custom["meta"]["k"] = "changed"  # type: ignore[index]


logger = Workflow("logger", title="Logs lines while it waits, then many")


@logger.step
async def narrate(ctx: Context) -> None:
    ctx.log("first line", n=1)
    await release(ctx.input["name"]).wait()
    for n in range(ctx.input.get("lines", 0)):
        ctx.log(f"line {n}")


external_bounded = Workflow("external-bounded", title="An outside worker past the workflow's "
                            "timeout", timeout=0.5)
external_bounded.external("slow_worker", timeout=60.0)


gate_short = Workflow("gate-short", title="A gate with a short workflow timeout", timeout=1.0)


@gate_short.step
async def before_short_gate(ctx: Context) -> None:
    ctx.state["before"] = True


gate_short.approval("decide")


gate_full = Workflow("gate-full", title="A gate whose timeout falls while the disk is full",
                     timeout=2.0)


@gate_full.step
async def before_full_gate(ctx: Context) -> None:
    ctx.state["before"] = True


gate_full.approval("decide_late")


service_call = Workflow("service-call", title="Hands its work to another service that reports "
                        "progress back while the step awaits it")


@service_call.step(kind="tool_call")
async def hand_off(ctx: Context) -> Any:
    SEEN[ctx.input["name"]] = ctx.callback  # the other service gets the URLs and the token
    await release(ctx.input["name"]).wait()
    return done({"handed_off": ctx.input["name"]})


shaky_start = Workflow("shaky-start", title="Its first attempt fails while the store refuses "
                       "the cycle's start")


@shaky_start.step(retries=1, backoff=0.01)
async def shake(ctx: Context) -> None:
    name = ctx.input["name"]
    if not SEEN.get(f"{name}-shaken"):
        SEEN[f"{name}-shaken"] = True
        SEEN[name]()  # the test's hook: the store's file is locked from now on
        await release(name).wait()  # the write of this cycle's start is refused meanwhile
        raise RuntimeError("the first attempt fails")
    ctx.state["attempt"] = ctx.attempt


namesake_logger = Workflow("namesake-logger", title="Logs fields named like the engine's")


@namesake_logger.step
async def tell(ctx: Context) -> None:
    ctx.log("hello", step="download", cycle=7, message="m", execution_id="x")


nul_text = Workflow("nul-text", title="A step whose output holds U+0000")


@nul_text.step
async def nul_out(ctx: Context) -> Any:
    ctx.log("a line with \x00 in it")
    return done({"text": "a\x00b"})
