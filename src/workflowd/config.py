"""Settings: defaults, then `config.toml`, then `WORKFLOWD_<SECTION>_<KEY>` variables."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import socket
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails

from workflowd.outbound import OutboundPolicy, OutboundRefused
from workflowd.redact import redact_text, redact_value
from workflowd.tokens import CallerRole

__all__ = ["ConfigError", "Settings", "check_exposure", "is_loopback", "load_settings",
           "parse_duration"]

_SHA256 = re.compile(r"[0-9a-f]{64}")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_duration(value: Any) -> float:
    """Seconds from a number or a string such as `"90s"`, `"30m"`, `"7d"`."""
    if isinstance(value, bool):
        raise ValueError("a duration is a number of seconds or a string like '7d'")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(f"not a duration: {value!r} (use seconds or e.g. '30m', '7d')")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2) or "s"]
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ServerSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    # The address workers reach this service at (external step callbacks); default from
    # host and port.
    public_url: str = ""
    # Run on uvloop when it is installed (`pip install 'workflowd[speed]'`): a faster loop.
    uvloop: bool = True

    def base_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host  # noqa: S104
        return f"http://{host}:{self.port}"


class StoreSettings(_Section):
    path: str = "workflowd.db"
    # A `postgresql://user:pass@host:port/db` URL puts the store in PostgreSQL instead of the
    # SQLite file at `path`, and lets several nodes share it (API.md 9). Checked at start-up,
    # not here, so that a bad one is reported without its password.
    url: str = ""
    # PostgreSQL only: connections each node keeps for reads and row-locked changes (the
    # writer, the listener and the lock of artifacts' bytes have one each besides).
    pool_size: int = Field(default=8, ge=1, le=100)
    # "full": every commit is synced to disk (survives a power cut); "normal": may lose the
    # last commits to an OS crash or power cut (never to a crash of the process).
    synchronous: Literal["full", "normal"] = "full"
    # How long the writer waits for more work to join a commit, and the most cycles per commit.
    commit_interval: float = Field(default=0.0, ge=0.0, le=1.0)
    max_batch: int = Field(default=512, ge=1)


class EngineSettings(_Section):
    max_concurrent: int = Field(default=5, ge=1)
    max_queued: int = Field(default=10_000, ge=1)
    default_max_cycles: int = Field(default=15, ge=1)
    # Unset: a step that declares no timeout (nor its workflow a cycle_timeout) may run for
    # hours, as workflows here do.
    default_cycle_timeout: float | None = Field(default=None, gt=0)
    shutdown_grace: float = Field(default=10.0, ge=0)
    # Seconds a cancelled step gets to stop before its execution is ended `cancelled` anyway.
    cancel_grace: float = Field(default=5.0, ge=0)
    # Threads that run plain `def` steps (the engine's own pool; a step waits for a free one).
    max_threads: int = Field(default=32, ge=1, le=1024)
    # Collect garbage less often in `workflowd serve` (see `cli.tune_runtime`).
    tune_gc: bool = True

    @field_validator("default_cycle_timeout", mode="before")
    @classmethod
    def _unset(cls, value: Any) -> Any:
        return None if value in ("", 0) else value


class LiveSettings(_Section):
    # Events a follower may fall behind by before it is closed (1013) and must resume.
    queue_size: int = Field(default=1000, ge=1)
    # Seconds between WebSocket pings and SSE comments that keep idle connections alive.
    heartbeat: float = Field(default=30.0, gt=0)
    # Least seconds between two committed progress reports of one step (the latest is kept).
    progress_interval: float = Field(default=0.1, ge=0.0)


class DeliverySettings(_Section):
    # HMAC-SHA256 key for X-Workflowd-Signature on callback_url and external step posts.
    secret: str = ""
    max_attempts: int = Field(default=10, ge=1)
    # First retry after this many seconds, doubling each time (at most 5 minutes).
    backoff: float = Field(default=1.0, ge=0.0)


class WebhookSettings(_Section):
    url: HttpUrl
    # Event types to send; empty: the terminal ones.
    events: list[str] = Field(default_factory=list)
    # Signing key; empty: [delivery] secret.
    secret: str = ""


class WorkflowSettings(_Section):
    modules: list[str] = Field(default_factory=lambda: ["workflowd.examples"])


class RetentionSettings(_Section):
    finished_after: float = 7 * 86400.0
    sweep_interval: float = 60.0

    @field_validator("finished_after", "sweep_interval", mode="before")
    @classmethod
    def _duration(cls, value: Any) -> float:
        return parse_duration(value)


class ArtifactSettings(_Section):
    # Where artifacts' files live; empty: `artifacts/` beside the store file. Several nodes
    # (PostgreSQL) must share one directory, at the same path on each.
    dir: str = ""
    # The largest artifact accepted (413 past it); uploads are streamed, never held whole.
    max_bytes: int = Field(default=100 * 1024 * 1024, ge=1)

    def directory(self, store_path: str) -> str:
        if self.dir:
            return self.dir
        parent = Path(store_path).parent if store_path not in ("", ":memory:") else Path(".")
        return str(parent / "artifacts")


class ClusterSettings(_Section):
    """Several nodes on one PostgreSQL store (ignored with SQLite, where one node owns all)."""

    # This node's name in logs, metrics and GET /api/v1/cluster; empty: host and pid.
    node_id: str = ""
    # Seconds a node's claim on a running execution lasts; renewed every third of it. A node
    # that stops renewing (killed, paused, cut off) loses its executions to another after it.
    lease_seconds: float = Field(default=15.0, ge=1.0, le=3600.0)
    # Seconds between the checks that catch what a missed notification would have said (new
    # events for followers, executions to claim, expired leases).
    poll_interval: float = Field(default=1.0, gt=0.0, le=60.0)

    def name(self) -> str:
        return self.node_id or f"{socket.gethostname()}-{os.getpid()}"


class LoggingSettings(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["console", "json"] = "console"


class TokenSettings(_Section):
    """One `[[auth.tokens]]` table: who holds the token, their role, and the token's hash."""

    subject: str = Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")
    role: CallerRole
    # Lowercase hex SHA-256 of the token's UTF-8 bytes (`workflowd token create` prints it).
    sha256: str

    @field_validator("sha256")
    @classmethod
    def _hex(cls, value: str) -> str:
        # The message never repeats the value: it may be a token pasted here by mistake.
        if not _SHA256.fullmatch(value):
            raise ValueError("must be the lowercase hex SHA-256 of the token (64 characters "
                             "0-9a-f), never the token itself")
        return value


class AuthSettings(_Section):
    # Off: every route is open, as on a laptop; `serve` then refuses a host beyond loopback.
    enabled: bool = False
    tokens: list[TokenSettings] = Field(default_factory=list)
    # The subject that submitted an execution cannot approve it.
    four_eyes: bool = False
    # Serve beyond loopback with auth off (something in front authenticates callers).
    allow_anonymous: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> AuthSettings:
        hashes = [token.sha256 for token in self.tokens]
        if len(set(hashes)) != len(hashes):
            raise ValueError("auth.tokens: two tokens have the same sha256")
        if self.enabled and not self.tokens:
            raise ValueError("auth.enabled = true needs at least one [[auth.tokens]] table "
                             "(else no one could call the API)")
        if self.four_eyes and not self.enabled:
            raise ValueError("auth.four_eyes = true needs auth.enabled = true (without tokens "
                             "every approval is anonymous)")
        return self


class LimitsSettings(_Section):
    # Submits a minute per subject (token bucket; bursts up to the same number); 0: no limit.
    submits_per_minute: int = Field(default=0, ge=0)
    # Queued executions per submitting subject (running and waiting ones do not count); 0: none.
    max_queued_per_subject: int = Field(default=0, ge=0)


class OutboundSettings(_Section):
    # Hosts callback_url, webhooks and external steps may be sent to ("*.example.com" for
    # subdomains); empty: any host. Link-local and metadata addresses are refused either way.
    allow_hosts: list[str] = Field(default_factory=list)

    def policy(self) -> OutboundPolicy:
        return OutboundPolicy.of(self.allow_hosts)


class Settings(_Section):
    server: ServerSettings = Field(default_factory=ServerSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    engine: EngineSettings = Field(default_factory=EngineSettings)
    live: LiveSettings = Field(default_factory=LiveSettings)
    delivery: DeliverySettings = Field(default_factory=DeliverySettings)
    webhooks: list[WebhookSettings] = Field(default_factory=list)
    workflows: WorkflowSettings = Field(default_factory=WorkflowSettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    artifacts: ArtifactSettings = Field(default_factory=ArtifactSettings)
    cluster: ClusterSettings = Field(default_factory=ClusterSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    outbound: OutboundSettings = Field(default_factory=OutboundSettings)

    @model_validator(mode="after")
    def _webhooks_allowed(self) -> Settings:
        policy = self.outbound.policy()
        for i, hook in enumerate(self.webhooks):
            try:
                policy.check_url(str(hook.url))
            except OutboundRefused as exc:
                raise ValueError(f"webhooks.{i}.url: {exc}") from None
        return self


def _env_value(raw: str) -> Any:
    """Lists and tables as JSON; anything else as the plain string, which validation turns
    into the key's type (so `WORKFLOWD_STORE_PATH=2026` stays a path)."""
    if raw.lstrip()[:1] in ("[", "{"):
        try:
            return json.loads(raw)
        except ValueError:
            return raw
    return raw


def _apply_env(data: dict[str, Any], environ: dict[str, str]) -> None:
    sections = Settings.model_fields
    for name, raw in environ.items():
        if not name.startswith("WORKFLOWD_"):
            continue
        rest = name[len("WORKFLOWD_") :].lower()
        for section in sections:
            if rest == section:  # a whole section as JSON, e.g. WORKFLOWD_WEBHOOKS='[...]'
                data[section] = _env_value(raw)
                break
            if rest.startswith(section + "_"):
                key = rest[len(section) + 1 :]
                data.setdefault(section, {})[key] = _env_value(raw)
                break


def load_settings(path: str | Path | None = None,
                  environ: dict[str, str] | None = None) -> Settings:
    """Read the TOML file (if any) and the environment into validated settings.

    A refused value raises pydantic's `ValidationError`, naming each key and its problem; the
    value itself is shown only for keys that cannot hold a secret."""
    data: dict[str, Any] = {}
    if path is not None:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    _apply_env(data, dict(os.environ if environ is None else environ))
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise _without_secrets(exc) from None


# Sections whose values are never secrets: a refused value there is shown, to help.
_PLAIN_SECTIONS = frozenset({"server", "engine", "live", "workflows", "retention", "logging",
                             "limits", "outbound", "cluster"})
_SECRET_KEYS = frozenset({"secret", "sha256", "token", "tokens", "password", "url", "dsn"})
HIDDEN = "[hidden]"


def _shows_value(loc: tuple[int | str, ...]) -> bool:
    return (bool(loc) and loc[0] in _PLAIN_SECTIONS
            and not any(isinstance(part, str) and part.lower() in _SECRET_KEYS for part in loc))


def _without_secrets(exc: ValidationError) -> ValidationError:
    """The same errors, with the input hidden where it may be a secret (a token, a hash, a
    webhook secret, a password in a store URL) and URL passwords scrubbed from the rest."""
    details: list[InitErrorDetails] = []
    for error in exc.errors():
        detail: InitErrorDetails = {
            "type": error["type"], "loc": error["loc"],
            "input": redact_value(error["input"]) if _shows_value(error["loc"]) else HIDDEN,
        }
        ctx = error.get("ctx")
        if ctx:
            detail["ctx"] = {k: ValueError(redact_text(str(v))) if isinstance(v, Exception)
                             else v for k, v in ctx.items()}
        details.append(detail)
    try:
        return ValidationError.from_exception_data(exc.title, details)
    except (TypeError, ValueError, KeyError):  # an error type that cannot be rebuilt
        return ValidationError.from_exception_data(
            exc.title, [{"type": "value_error", "loc": d["loc"], "input": HIDDEN,
                         "ctx": {"error": ValueError("invalid value")}} for d in details])


class ConfigError(ValueError):
    """Settings that are valid one by one but may not be served as they are."""


def is_loopback(host: str) -> bool:
    """Whether `host` names only this machine (an empty host binds every interface)."""
    host = host.strip().strip("[]").lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name (or nothing): it may resolve to any interface


def check_exposure(settings: Settings) -> None:
    """Refuse to serve beyond loopback with auth off, unless `[auth] allow_anonymous` says so:
    anyone who can reach the port could approve, reject and cancel."""
    auth, host = settings.auth, settings.server.host
    if auth.enabled or auth.allow_anonymous or is_loopback(host):
        return
    raise ConfigError(
        f"refusing to serve on {host or '(every interface)'!r} with [auth] enabled = false: "
        "anyone who can reach it could submit, approve and cancel; turn on [auth] with "
        "[[auth.tokens]], or set [auth] allow_anonymous = true if something in front "
        "authenticates callers")
