"""The command line (API.md §6): `workflowd serve` runs the service; the other commands are
clients of its HTTP API, with tables for people and `--json` for scripts.

Exit codes: 0 done; 1 the execution ended other than `completed` (under `--wait`, `--follow`
and `follow`); 2 a usage error or a 4xx answer (its problem's detail on stderr); 3 the server
could not be reached, or failed (5xx).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from workflowd import __version__
from workflowd.tokens import CALLER_ROLES

__all__ = ["build_parser", "main"]

STATUSES = ("queued", "running", "awaiting_approval", "paused", "completed", "failed",
            "cancelled", "timed_out", "rejected")


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("the input must be a JSON object")
    return value


def _label(text: str) -> tuple[str, str]:
    """`KEY=VALUE` or `KEY:VALUE` alike (a label's key holds neither character)."""
    cut = min((i for i in (text.find("="), text.find(":")) if i >= 0), default=-1)
    if cut <= 0:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (or KEY:VALUE), got {text!r}")
    return text[:cut], text[cut + 1:]


DEFAULT_URL = "http://127.0.0.1:8080"


def _add_client_options(parser: argparse.ArgumentParser) -> None:
    """`--url`, `--token`, `--json`, before the command or after it alike. Not given, they are
    left unset here (a subcommand's default would overwrite what was given before it) and
    filled in by `_client_defaults`."""
    group = parser.add_argument_group("server")
    group.add_argument("--url", default=argparse.SUPPRESS,
                       help=f"the service's address (env WORKFLOWD_URL; default {DEFAULT_URL})")
    group.add_argument("--token", default=argparse.SUPPRESS,
                       help="a bearer token (env WORKFLOWD_TOKEN)")
    group.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                       help="print the API's own answer as JSON (one document) instead")


def _client_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    _add_client_options(common)
    return common


def _client_defaults(args: argparse.Namespace) -> None:
    if not hasattr(args, "url"):
        args.url = os.environ.get("WORKFLOWD_URL") or DEFAULT_URL
    if not hasattr(args, "token"):
        args.token = os.environ.get("WORKFLOWD_TOKEN")
    if not hasattr(args, "json"):
        args.json = False


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="workflowd", description="Durable background workflows.",
        epilog="exit codes: 0 done, 1 the execution ended other than completed (--wait, "
               "--follow), 2 usage or a 4xx answer, 3 server unreachable or failing")
    parser.add_argument("--version", action="version", version=f"workflowd {__version__}")
    _add_client_options(parser)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser("serve", help="run the service")
    serve.add_argument("--config", help="path to config.toml (default: ./config.toml if any)")

    common = _client_options()

    def client(name: str, help_: str, description: str | None = None,
               ) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=help_, description=description,
                                   parents=[common])

    start = client("start", "submit an execution of a workflow")
    start.add_argument("workflow", metavar="WORKFLOW")
    start.add_argument("--input", type=_json_object, default={}, metavar="JSON",
                       help="the input, a JSON object")
    start.add_argument("--priority", type=int, default=0)
    start.add_argument("--label", type=_label, action="append", metavar="KEY=VALUE")
    start.add_argument("--require-approval", action="store_true",
                       help="wait for an approval before the first step")
    start.add_argument("--idempotency-key", metavar="KEY")
    how = start.add_mutually_exclusive_group()
    how.add_argument("--wait", action="store_true",
                     help="wait for the end; exit 0 only if it completed")
    how.add_argument("--follow", action="store_true",
                     help="show live progress and the steps until the end (with --json: "
                          "each event as a JSON document on its own line)")
    start.add_argument("--timeout", type=float, metavar="SECONDS",
                       help="with --wait: give up after SECONDS")

    client("status", "the live status of an execution").add_argument("id", metavar="ID")
    listing = client("list", "executions, newest first")
    listing.add_argument("--workflow", metavar="WORKFLOW")
    listing.add_argument("--status", choices=STATUSES)
    listing.add_argument("--label", type=_label, action="append", metavar="KEY=VALUE")
    listing.add_argument("--limit", type=int, default=20)
    listing.add_argument("--cursor")
    approve = client("approve", "approve an execution waiting for it")
    approve.add_argument("id", metavar="ID")
    approve.add_argument("--comment")
    reject = client("reject", "reject an execution waiting for approval")
    reject.add_argument("id", metavar="ID")
    reject.add_argument("--reason")
    client("cancel", "cancel an execution").add_argument("id", metavar="ID")
    client("workflows", "the registered workflows")
    for name, help_ in (("events", "the events of an execution"),
                        ("logs", "the lines its steps wrote with ctx.log")):
        cmd = client(name, help_)
        cmd.add_argument("id", metavar="ID")
        cmd.add_argument("--after", type=int, default=0, metavar="SEQ")
        cmd.add_argument("--limit", type=int, default=None,
                         help="one page of at most this many (default: all of them)")
    follow = client("follow", "show an execution live until it ends",
                    "Show an execution live until it ends: its status, progress and steps; "
                    "with --json, each event as a JSON document on its own line.")
    follow.add_argument("id", metavar="ID")
    follow.add_argument("--after", type=int, default=0, metavar="SEQ",
                        help="start after this event (default: replay them all)")

    init = commands.add_parser("init", help="write a starter config.toml and workflow module")
    init.add_argument("dir", nargs="?", default=".", metavar="DIR")
    init.add_argument("--force", action="store_true", help="overwrite existing files")
    token = commands.add_parser("token", help="bearer tokens for [auth]")
    token_commands = token.add_subparsers(dest="token_command", required=True,
                                          metavar="COMMAND")
    create = token_commands.add_parser("create", help="a new token and its config lines")
    create.add_argument("--subject", required=True, metavar="NAME")
    create.add_argument("--role", required=True, choices=CALLER_ROLES)
    # Unset unless given, like the global `--json` (given before `token`, it holds too).
    create.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="print the token and its hash as one JSON document")
    from workflowd import store_copy

    store_copy.add_command(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # usage errors (2), --help and --version (0)
        return exc.code if isinstance(exc.code, int) else 2
    _client_defaults(args)
    if args.command == "serve":
        from workflowd.cli.serve import serve

        return serve(args.config)
    if args.command == "init":
        from workflowd.cli.scaffold import init

        return init(args.dir, force=args.force)
    if args.command == "token":
        from workflowd.cli.scaffold import token_create

        return token_create(args.subject, args.role, as_json=args.json)
    if args.command == "store":
        return int(args.run(args))
    if args.command == "start" and args.timeout is not None and not args.wait:
        print("workflowd: --timeout goes with --wait", file=sys.stderr)  # noqa: T201
        return 2
    from workflowd.cli.commands import COMMANDS, run_client

    return run_client(COMMANDS[args.command], args)


def __getattr__(name: str) -> Any:
    """`new_loop` and `tune_runtime` of `cli.serve`, imported when asked for: the client
    commands start without loading the service."""
    if name in ("new_loop", "tune_runtime"):
        from workflowd.cli import serve

        return getattr(serve, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
