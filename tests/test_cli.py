"""The command line against a real server: every client command, its exit codes (API.md §6),
`--json` parsed back, usage errors and an unreachable server; `init`, `token create`."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Awaitable, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.live_server import LiveServer
from tests.workflows import release
from workflowd.api.keys import METRICS
from workflowd.api.stream import close_sockets
from workflowd.cli import main, render
from workflowd.client import SyncClient

WORKFLOWD = Path(sys.executable).parent / "workflowd"  # the installed console script


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run `workflowd ARGV` in this process: exit code, stdout, stderr."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def api(server: LiveServer, path: str) -> Any:
    with SyncClient(server.url) as wd:
        status, body = wd.request("GET", path)
    assert status == 200
    return json.loads(body)


def in_thread(fn: Callable[[], None]) -> threading.Thread:
    thread = threading.Thread(target=fn, daemon=True)
    thread.start()
    return thread


def until(check: Callable[[], Any], timeout: float = 15.0) -> Any:
    """Poll `check` until it answers something true (a server's state seen from a thread)."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)
    return value


def approve_when_waiting(server: LiveServer, workflow_id: str) -> threading.Thread:
    """In a thread: approve the first execution of `workflow_id` that waits for it."""
    def run() -> None:
        with SyncClient(server.url) as wd:
            page = until(lambda: wd.list_executions(workflow_id=workflow_id,
                                                    status="awaiting_approval").items)
            wd.approve(page[0].execution_id, "from the test")

    return in_thread(run)


def test_workflows(live_server: LiveServer, capsys: pytest.CaptureFixture[str]) -> None:
    """A table for people; `--json` is the API's own body."""
    code, out, _ = cli(capsys, "workflows", "--url", live_server.url)
    assert code == 0
    assert "audit-plan" in out
    assert "draft_plan" in out
    code, out, _ = cli(capsys, "workflows", "--url", live_server.url, "--json")
    assert code == 0
    assert json.loads(out) == api(live_server, "/api/v1/workflows")


def test_start_wait(live_server: LiveServer, capsys: pytest.CaptureFixture[str]) -> None:
    """`--wait` names the status it ended in; 0 for completed, 1 for any other end."""
    code, out, _ = cli(capsys, "start", "three-steps", "--input", '{"value": 5}', "--wait",
                       "--url", live_server.url)
    assert (code, out.split()[1]) == (0, "completed")
    code, out, _ = cli(capsys, "start", "three-steps", "--wait", "--json",
                       "--label", "team=a", "--url", live_server.url)
    execution = json.loads(out)
    assert code == 0
    assert execution["status"] == "completed"
    assert execution["labels"] == {"team": "a"}
    assert execution == api(live_server, f"/api/v1/executions/{execution['execution_id']}")
    code, out, _ = cli(capsys, "start", "flaky", "--input", '{"fail_times": 9}', "--wait",
                       "--url", live_server.url)
    assert code == 1
    assert "failed" in out
    assert "step_failed" in out


def test_start_wait_past_its_timeout(live_server: LiveServer,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    """`--wait --timeout S` on one that does not end in time: 1, and stderr says it is still
    running (no traceback)."""
    code, _, err = cli(capsys, "start", "sleeper", "--wait", "--timeout", "0.2",
                       "--url", live_server.url)
    assert code == 1
    assert "still running after 0.2 s" in err
    assert "Traceback" not in err


def test_start_without_waiting(live_server: LiveServer,
                               capsys: pytest.CaptureFixture[str]) -> None:
    """A plain start prints the id and status at once; `--json` the 202 summary."""
    code, out, _ = cli(capsys, "start", "three-steps", "--require-approval", "--json",
                       "--url", live_server.url)
    summary = json.loads(out)
    assert code == 0
    assert summary["status"] == "awaiting_approval"
    assert set(summary) == {"execution_id", "workflow_id", "status", "created_at", "links"}
    code, out, _ = cli(capsys, "start", "three-steps", "--url", live_server.url)
    assert code == 0
    assert out.split()[1:] == ["three-steps", "queued"]


def test_start_follow_draws_the_steps(live_server: LiveServer,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    """`start --follow` shows the progress and the steps until the end, through a gate; the
    step list is fetched once, the events keep it up to date."""
    approver = approve_when_waiting(live_server, "gated")
    code, out, _ = cli(capsys, "start", "gated", "--follow", "--url", live_server.url)
    approver.join(15)
    assert code == 0
    assert "100%" in out
    for step in ("before", "sign_off", "after"):
        assert f"✓ {step}" in out
    assert out.rstrip().endswith("completed")
    fetched = live_server.call(lambda app: app[METRICS].requests.get(
        ("GET", "/api/v1/executions/{execution_id}/steps", 200)))
    assert fetched == 1


def test_follow_shows_the_status_of_now(live_server: LiveServer,
                                       capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """An approval queues the execution and a runner starts it a moment later: while its step
    runs, with no event to come, the live view shows `running`, not the `queued` before."""
    views: list[render.FollowView] = []

    class Kept(render.FollowView):
        def __init__(self, execution_id: str) -> None:
            super().__init__(execution_id)
            views.append(self)

    def shown() -> str | None:
        status = views[0].status if views else None
        return status.status if status is not None else None

    monkeypatch.setattr(render, "FollowView", Kept)
    with SyncClient(live_server.url) as wd:
        run = wd.start("held-two", {"name": "shown"}, require_approval=True)
        codes: list[int] = []
        follower = in_thread(lambda: codes.append(
            main(["follow", run.execution_id, "--url", live_server.url])))
        until(lambda: shown() == "awaiting_approval")
        wd.approve(run.execution_id)
        until(lambda: wd.status(run.execution_id).current_step)  # held in its step
        until(lambda: shown() == "running")
    live_server.call(lambda app: release("shown").set())
    follower.join(15)
    assert codes == [0]
    assert capsys.readouterr().out.rstrip().endswith("completed")


def test_follow_json_across_a_dropped_connection(
        live_server: LiveServer, capsys: pytest.CaptureFixture[str]) -> None:
    """The server closes the follower's socket mid-run: `follow` resumes, and its JSON lines
    are every event once, in order, to the terminal one."""
    with SyncClient(live_server.url) as wd:
        run = wd.start("gated")
        until(lambda: wd.status(run.execution_id).awaiting_approval)

    def followers() -> int:
        count: int = live_server.call(lambda app: app[METRICS].followers["websocket"])
        return count

    def drop_then_approve() -> None:
        until(lambda: followers() == 1)
        live_server.call(lambda app: asyncio.ensure_future(close_sockets(app)))
        with SyncClient(live_server.url) as wd:
            wd.approve(run.execution_id)  # likely while the follower is away

    dropper = in_thread(drop_then_approve)
    code, out, _ = cli(capsys, "follow", run.execution_id, "--json", "--url", live_server.url)
    dropper.join(15)
    assert code == 0
    events = [json.loads(line) for line in out.splitlines()]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[-1]["type"] == "workflow_completed"
    assert events == api(live_server, f"/api/v1/executions/{run.execution_id}/events")["items"]
    sockets = live_server.call(lambda app: app[METRICS].requests.get(
        ("GET", "/api/v1/executions/{execution_id}/ws", 101)))
    assert sockets == 2  # it did connect again


def test_reading_commands(live_server: LiveServer, capsys: pytest.CaptureFixture[str]) -> None:
    """`status`, `list`, `events`, `logs`, `follow` of a finished execution: tables, and the
    API's bodies with `--json`."""
    with SyncClient(live_server.url) as wd:
        run = wd.run("chatty", labels={"kind": "talk"}, timeout=15)
    execution_id = run.execution_id
    base = f"/api/v1/executions/{execution_id}"
    for argv, path, shown in (
        (["status", execution_id], f"{base}/status/live", "completed"),
        (["list", "--label", "kind:talk"], "/api/v1/executions?limit=20&label=kind:talk",
         execution_id),
        (["events", execution_id], f"{base}/events?limit=500", "workflow_completed"),
        (["logs", execution_id], f"{base}/logs?limit=500", "second"),
    ):
        code, out, _ = cli(capsys, *argv, "--url", live_server.url)
        assert code == 0, argv
        assert shown in out, argv
        code, out, _ = cli(capsys, *argv, "--url", live_server.url, "--json")
        assert code == 0
        assert json.loads(out) == api(live_server, path), argv
    code, out, _ = cli(capsys, "list", "--status", "completed", "--workflow", "chatty",
                       "--json", "--url", live_server.url)
    assert [item["execution_id"] for item in json.loads(out)["items"]] == [execution_id]
    code, out, _ = cli(capsys, "follow", execution_id, "--url", live_server.url)
    assert code == 0
    assert "✓ talk" in out
    assert "✓ talk_more" in out


def test_deciding_commands(live_server: LiveServer, capsys: pytest.CaptureFixture[str]) -> None:
    """`approve`, `reject`, `cancel`; a decision the execution does not allow is a 4xx: exit
    2 with the problem's detail on stderr (and the problem document with `--json`)."""
    url = ("--url", live_server.url)
    with SyncClient(live_server.url) as wd:
        first = wd.start("three-steps", require_approval=True).execution_id
        second = wd.start("three-steps", require_approval=True).execution_id
        sleeping = wd.start("sleeper").execution_id
        code, out, _ = cli(capsys, "approve", first, "--comment", "go", *url)
        assert (code, "queued" in out) == (0, True)
        assert wd.wait(first, 15).status == "completed"
        assert wd.get(first).approval.comment == "go"  # type: ignore[union-attr]
        code, out, _ = cli(capsys, "reject", second, "--reason", "no", "--json", *url)
        assert code == 0
        assert json.loads(out)["status"] == "rejected"
        until(lambda: wd.status(sleeping).current_step)
        code, out, _ = cli(capsys, "cancel", sleeping, *url)
        assert code == 0
        assert wd.wait(sleeping, 15).status == "cancelled"
    code, out, err = cli(capsys, "approve", first, *url)
    assert code == 2
    assert out == ""
    assert f"execution {first} is completed" in err
    code, out, err = cli(capsys, "cancel", first, "--json", *url)
    assert code == 2
    problem = json.loads(out)
    assert problem["status"] == 409
    assert problem["detail"] in err
    code, out, err = cli(capsys, "follow", second, *url)
    assert code == 1  # followed to an end other than completed
    assert "rejected" in out


def test_usage_errors_exit_2(live_server: LiveServer, capsys: pytest.CaptureFixture[str]) -> None:
    """Bad arguments and 4xx answers exit 2 with the reason on stderr."""
    url = ("--url", live_server.url)
    for argv in (["nope"], ["start"], ["start", "three-steps", "--input", "{not json", *url],
                 ["start", "three-steps", "--input", "[1]", *url], ["status", *url],
                 ["list", "--status", "weird", *url], ["token", "create", "--subject", "a"],
                 ["start", "three-steps", "--timeout", "3", *url],
                 ["status", "x", "--url", "notaurl"], ["workflows", "--url", "http://[::1"]):
        code, out, err = cli(capsys, *argv)
        assert code == 2, argv
        assert err, argv
    code, _, err = cli(capsys, "start", "no-such-workflow", *url)
    assert code == 2
    assert "no workflow with id 'no-such-workflow'" in err
    code, _, err = cli(capsys, "status", "no-such-id", *url)
    assert code == 2
    assert "no execution with id 'no-such-id'" in err
    code, _, err = cli(capsys, "start", "three-steps", "--priority", "99999", *url)
    assert code == 2
    assert "priority" in err
    assert cli(capsys, "--help")[0] == 0
    code, out, _ = cli(capsys, "--version")
    assert (code, out.split()[0]) == (0, "workflowd")


def test_unreachable_exits_3(capsys: pytest.CaptureFixture[str]) -> None:
    """No server at the address: exit 3, saying where it looked."""
    for argv in (["workflows"], ["status", "x"], ["start", "three-steps", "--wait"]):
        code, _, err = cli(capsys, *argv, "--url", "http://127.0.0.1:9")
        assert code == 3, argv
        assert "cannot reach workflowd at http://127.0.0.1:9" in err


@pytest.mark.parametrize("message", ["hello", '{"type": "step_started"}'])
async def test_a_websocket_not_workflowds_exits_3(
        aiohttp_server: Callable[[web.Application], Awaitable[TestServer]],
        capsys: pytest.CaptureFixture[str], message: str) -> None:
    """`follow` on a WebSocket that sends neither a snapshot nor an event (not JSON, or not the
    shape): exit 3 saying so, as for an HTTP answer that is not workflowd's (no traceback, and
    no complaint about --url)."""
    async def socket(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str(message)
        await ws.close()
        return ws

    app = web.Application()
    app.router.add_get("/api/v1/executions/{execution_id}/ws", socket)
    server = await aiohttp_server(app)
    url = str(server.make_url("")).rstrip("/")
    code = await asyncio.to_thread(main, ["follow", "x", "--url", url])
    err = capsys.readouterr().err
    assert code == 3
    assert "a WebSocket message is not a snapshot or an event" in err
    assert "--url" not in err


@pytest.fixture
def recorder() -> Iterator[tuple[str, list[str]]]:
    """A stand-in server that records the Authorization header of each request."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization", ""))
            body = b'{"items": [], "next_cursor": null}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = in_thread(server.serve_forever)
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    thread.join(5)
    server.server_close()


def test_url_and_token_from_flags_and_environment(
        recorder: tuple[str, list[str]], capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """`--url`/`--token`, else WORKFLOWD_URL/WORKFLOWD_TOKEN; the token goes as a bearer."""
    url, seen = recorder
    assert cli(capsys, "workflows", "--url", url, "--token", "flag-token")[0] == 0
    monkeypatch.setenv("WORKFLOWD_URL", url)
    monkeypatch.setenv("WORKFLOWD_TOKEN", "env-token")
    assert cli(capsys, "workflows")[0] == 0
    assert cli(capsys, "workflows", "--token", "flag-wins")[0] == 0
    assert seen == ["Bearer flag-token", "Bearer env-token", "Bearer flag-wins"]


def test_token_create(capsys: pytest.CaptureFixture[str]) -> None:
    """A new token, once, and config lines holding the lowercase hex SHA-256 of it."""
    code, out, _ = cli(capsys, "token", "create", "--subject", 'ana "a" ü', "--role",
                       "approver")
    assert code == 0
    token, rest = out.split("\n", 1)
    config = tomllib.loads(rest)
    assert config == {"auth": {"tokens": [{
        "subject": 'ana "a" ü', "role": "approver",
        "sha256": hashlib.sha256(token.encode("utf-8")).hexdigest()}]}}
    assert len(token) > 40
    code, out, _ = cli(capsys, "token", "create", "--subject", "bo", "--role", "admin",
                       "--json")
    created = json.loads(out)
    assert created["sha256"] == hashlib.sha256(created["token"].encode()).hexdigest()
    assert created["token"] != token
    code, out, _ = cli(capsys, "--json", "token", "create", "--subject", "cy", "--role", "viewer")
    assert json.loads(out)["subject"] == "cy"  # --json before the command holds too
    assert cli(capsys, "token", "create", "--subject", "x", "--role", "root")[0] == 2


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_init_then_serve_runs_the_new_module(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """`workflowd init x && cd x && workflowd serve` serves the new module's workflow and the
    example; the starter workflow runs to its end as written."""
    project = tmp_path / "x"
    code, out, _ = cli(capsys, "init", str(project))
    assert code == 0
    assert (project / "config.toml").is_file()
    assert (project / "flows.py").is_file()
    assert cli(capsys, "init", str(project))[0] == 2  # never overwrites by surprise
    assert cli(capsys, "init", str(project), "--force")[0] == 0
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["WORKFLOWD_SERVER_PORT"] = str(port)
    proc = subprocess.Popen([str(WORKFLOWD), "serve"], cwd=project, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        with SyncClient(url, retry_for=20) as wd:
            until(lambda: _ready(wd, proc), timeout=20)
            assert {wf.id for wf in wd.workflows()} >= {"hello", "audit-plan"}
        approver = in_thread(lambda: _approve_hello(url))
        code, out, _ = cli(capsys, "start", "hello", "--input", '{"name": "Ada"}', "--follow",
                           "--url", url)
        approver.join(15)
        assert code == 0
        assert "Hello, Ada!" in out
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()
    assert (project / "workflowd.db").exists()


def _ready(wd: SyncClient, proc: subprocess.Popen[bytes]) -> bool:
    assert proc.poll() is None, "workflowd serve exited"
    try:
        return wd.ready().status == "ready"
    except ConnectionError:
        return False


def _approve_hello(url: str) -> None:
    with SyncClient(url) as wd:
        page = until(lambda: wd.list_executions(workflow_id="hello",
                                                status="awaiting_approval").items)
        wd.approve(page[0].execution_id)


def test_serve_refuses_a_bad_configuration(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """`serve` is unchanged: a config it cannot read stops it with exit 2, naming the key."""
    bad = tmp_path / "config.toml"
    bad.write_text("[server]\nprot = 1\n")
    code, _, err = cli(capsys, "serve", "--config", str(bad))
    assert code == 2
    assert "prot" in err


def test_client_options_before_or_after_the_command(
        live_server: LiveServer, capsys: pytest.CaptureFixture[str]) -> None:
    """`--url` and `--json` may come before the command as well as after it, and labels take
    `KEY=VALUE` or `KEY:VALUE` for `start` and `list` alike."""
    code, out, _ = cli(capsys, "--url", live_server.url, "--json", "workflows")
    assert code == 0
    assert "three-steps" in {item["id"] for item in json.loads(out)["items"]}
    code, out, _ = cli(capsys, "--url", live_server.url, "start", "three-steps",
                       "--label", "side:before", "--json")
    assert code == 0
    execution_id = json.loads(out)["execution_id"]
    code, out, _ = cli(capsys, "list", "--label", "side=before", "--json",
                       "--url", live_server.url)
    assert code == 0
    assert [item["execution_id"] for item in json.loads(out)["items"]] == [execution_id]
