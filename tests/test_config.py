"""Settings: defaults, `config.toml`, `WORKFLOWD_<SECTION>_<KEY>` overrides, and bad configs."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from pydantic import ValidationError

from workflowd.cli import main
from workflowd.config import Settings, load_settings, parse_duration

ROOT = Path(__file__).resolve().parent.parent


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_defaults_without_file_or_environment() -> None:
    """Every key has a default; the ones API.md names have the values it gives."""
    settings = load_settings(None, environ={})
    assert settings.server.host == "127.0.0.1"
    assert settings.server.port == 8080
    assert settings.server.max_body_bytes == 1024 * 1024
    assert settings.store.path == "workflowd.db"
    assert settings.engine.max_concurrent == 5
    assert settings.engine.default_max_cycles == 15
    assert settings.engine.max_queued >= 1
    assert settings.workflows.modules == ["workflowd.examples"]
    assert settings.retention.finished_after == 7 * 86400
    assert settings.logging.format == "console"
    assert settings.logging.level == "info"


def test_shipped_config_toml_loads_and_shows_the_defaults() -> None:
    """The repository's config.toml is valid and its values are the defaults it claims."""
    shipped = load_settings(ROOT / "config.toml", environ={})
    defaults = Settings()
    for section in ("server", "engine", "workflows", "retention", "logging", "auth", "limits",
                    "outbound"):
        assert getattr(shipped, section) == getattr(defaults, section), section
    assert shipped.store.path == defaults.store.path
    assert shipped.store.max_batch == defaults.store.max_batch
    with open(ROOT / "config.toml", "rb") as f:
        data = tomllib.load(f)
    assert set(data) == set(Settings.model_fields)
    assert data.pop("webhooks") == []
    # Tables of tables the user adds after their section (`[[auth.tokens]]`) are shown as a
    # commented example: a `tokens = []` there would clash with the first one added.
    added_after = {"auth": {"tokens"}}
    for section, values in data.items():
        declared = set(type(getattr(defaults, section)).model_fields)
        assert set(values) == declared - added_after.get(section, set()), section


def test_file_values_override_defaults(tmp_path: Path) -> None:
    """Keys in the file override their defaults; keys left out keep them."""
    path = _write(tmp_path, """
[server]
port = 9001
max_body_bytes = 4096
[store]
path = "/var/lib/wf.db"
[engine]
max_concurrent = 2
max_queued = 7
[workflows]
modules = ["workflowd.examples", "tests.workflows"]
[retention]
finished_after = "12h"
sweep_interval = 5
[logging]
level = "debug"
format = "json"
""")
    settings = load_settings(path, environ={})
    assert settings.server.port == 9001
    assert settings.server.host == "127.0.0.1"
    assert settings.server.max_body_bytes == 4096
    assert settings.store.path == "/var/lib/wf.db"
    assert (settings.engine.max_concurrent, settings.engine.max_queued) == (2, 7)
    assert settings.engine.default_max_cycles == 15
    assert settings.workflows.modules == ["workflowd.examples", "tests.workflows"]
    assert settings.retention.finished_after == 12 * 3600
    assert settings.retention.sweep_interval == 5
    assert (settings.logging.level, settings.logging.format) == ("debug", "json")


def test_environment_overrides_file_and_defaults(tmp_path: Path) -> None:
    """`WORKFLOWD_<SECTION>_<KEY>` beats the file, numbers and lists parse, strings stay."""
    path = _write(tmp_path, "[server]\nport = 9001\n[engine]\nmax_concurrent = 2\n")
    environ = {
        "WORKFLOWD_SERVER_PORT": "9000",
        "WORKFLOWD_SERVER_HOST": "0.0.0.0",
        "WORKFLOWD_SERVER_MAX_BODY_BYTES": "2048",
        "WORKFLOWD_STORE_PATH": "/tmp/other.db",
        "WORKFLOWD_ENGINE_MAX_QUEUED": "3",
        "WORKFLOWD_WORKFLOWS_MODULES": '["myapp.flows", "workflowd.examples"]',
        "WORKFLOWD_RETENTION_FINISHED_AFTER": "30m",
        "WORKFLOWD_LOGGING_FORMAT": "json",
        "OTHER_SERVER_PORT": "1",
        "WORKFLOWD": "x",
    }
    settings = load_settings(path, environ=environ)
    assert settings.server.port == 9000
    assert settings.server.host == "0.0.0.0"
    assert settings.server.max_body_bytes == 2048
    assert settings.store.path == "/tmp/other.db"
    assert settings.engine.max_concurrent == 2  # from the file, not overridden
    assert settings.engine.max_queued == 3
    assert settings.workflows.modules == ["myapp.flows", "workflowd.examples"]
    assert settings.retention.finished_after == 1800
    assert settings.logging.format == "json"


def test_environment_is_read_from_os_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without an explicit mapping the process environment is used."""
    monkeypatch.setenv("WORKFLOWD_ENGINE_MAX_CONCURRENT", "11")
    assert load_settings(None).engine.max_concurrent == 11


@pytest.mark.parametrize(
    ("text", "durations"),
    [("90s", 90), ("30m", 1800), ("12h", 43200), ("7d", 604800), ("1.5h", 5400), ("250ms", 0.25),
     ("45", 45)],
)
def test_durations(text: str, durations: float) -> None:
    """Retention durations are seconds or a number with a unit."""
    assert parse_duration(text) == pytest.approx(durations)
    settings = load_settings(None, environ={"WORKFLOWD_RETENTION_FINISHED_AFTER": text})
    assert settings.retention.finished_after == pytest.approx(durations)


@pytest.mark.parametrize(
    "text",
    [
        '[server]\nport = "eighty"\n',
        "[server]\nport = 70000\n",
        "[server]\nprot = 8080\n",
        "[sever]\nport = 8080\n",
        "[engine]\nmax_concurrent = 0\n",
        '[retention]\nfinished_after = "7 days"\n',
        "[retention]\nfinished_after = -5\n",
        '[logging]\nformat = "xml"\n',
        '[workflows]\nmodules = "workflowd.examples"\n',
    ],
)
def test_bad_values_are_errors(tmp_path: Path, text: str) -> None:
    """Wrong types, out-of-range values and unknown keys or sections are refused."""
    with pytest.raises(ValidationError):
        load_settings(_write(tmp_path, text), environ={})


def test_bad_environment_value_is_an_error() -> None:
    """A bad value in an environment override is refused like one in the file."""
    with pytest.raises(ValidationError):
        load_settings(None, environ={"WORKFLOWD_SERVER_PORT": "abc"})


def test_malformed_toml_is_an_error(tmp_path: Path) -> None:
    """A file that is not TOML is refused."""
    with pytest.raises(tomllib.TOMLDecodeError):
        load_settings(_write(tmp_path, "[server\nport = 1\n"), environ={})


def test_missing_file_is_an_error(tmp_path: Path) -> None:
    """A config path that does not exist is refused, not silently defaulted."""
    with pytest.raises(FileNotFoundError):
        load_settings(tmp_path / "nope.toml", environ={})


@pytest.mark.parametrize("text", ["[server\n", '[logging]\nformat = "xml"\n', None])
def test_serve_with_bad_config_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                       text: str | None) -> None:
    """`workflowd serve --config` with a bad or missing file exits 2 with a message, no trace."""
    path = _write(tmp_path, text) if text is not None else tmp_path / "missing.toml"
    assert main(["serve", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "bad configuration" in err
    assert "Traceback" not in err


SECRET = "wfd-live-9f8e7d6c5b4a"


@pytest.mark.parametrize("text", [
    f'[[auth.tokens]]\nsubject = "ana"\nrole = "admin"\nsha256 = "{SECRET}"\n',
    f'[[auth.tokens]]\nsubject = "ana"\nrole = "admin"\nsha256 = "{"a" * 64}"\n'
    f'token = "{SECRET}"\n',
    f'[[auth.tokens]]\nsubject = "ana"\nrole = "root"\nsha256 = "{SECRET}"\n',
    f'[auth]\ntokens = "{SECRET}"\n',
    f"[delivery]\nsecret = [\"{SECRET}\"]\n",
    f'[[webhooks]]\nurl = "http://u:{SECRET}@169.254.169.254/"\n',
    f'[[webhooks]]\nurl = "nope://u:{SECRET}@x/"\nsecret = 1\n',
    f'[store]\nurl = ["postgresql://wf:{SECRET}@db.internal/wf"]\n',
    f'[auht]\nsha256 = "{SECRET}"\n',
])
def test_config_errors_never_show_a_secret(tmp_path: Path, text: str,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """A refused value that may be a secret (tokens, hashes, webhook secrets, a store URL's
    password) is named by its key, never shown: not in the error, not on serve's stderr."""
    path = _write(tmp_path, text)
    with pytest.raises(ValidationError) as refused:
        load_settings(path, environ={})
    assert SECRET not in str(refused.value)
    assert main(["serve", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "bad configuration" in err
    assert SECRET not in err


def test_a_store_url_refused_at_start_never_shows_its_password(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A `[store] url` that is not PostgreSQL's stops `serve` (exit 2) naming the URL with its
    password blanked."""
    path = _write(tmp_path, f'[store]\nurl = "mysql://wf:{SECRET}@db.internal/wf"\n')
    assert main(["serve", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "postgresql://" in err
    assert SECRET not in err


def test_config_errors_still_show_plain_values(tmp_path: Path) -> None:
    """Keys that hold no secret keep showing the refused value, which helps."""
    with pytest.raises(ValidationError) as refused:
        load_settings(_write(tmp_path, '[server]\nport = "eighty"\n'), environ={})
    assert "server.port" in str(refused.value)
    assert "eighty" in str(refused.value)


def test_auth_settings_are_consistent() -> None:
    """Auth on needs a token; four-eyes needs auth; two tokens cannot share a hash; a hash is
    64 lowercase hex characters."""
    token = {"subject": "ana", "role": "approver", "sha256": "a" * 64}
    Settings.model_validate({"auth": {"enabled": True, "tokens": [token], "four_eyes": True}})
    for auth in ({"enabled": True}, {"four_eyes": True},
                 {"enabled": True, "tokens": [token, {**token, "subject": "bo"}]},
                 {"enabled": True, "tokens": [{**token, "sha256": "A" * 64}]},
                 {"enabled": True, "tokens": [{**token, "role": "public"}]},
                 {"enabled": True, "tokens": [{**token, "subject": ""}]}):
        with pytest.raises(ValidationError):
            Settings.model_validate({"auth": auth})


def test_limits_and_outbound_from_the_environment() -> None:
    """The new sections take WORKFLOWD_* overrides like the others."""
    settings = load_settings(None, environ={
        "WORKFLOWD_LIMITS_SUBMITS_PER_MINUTE": "30",
        "WORKFLOWD_LIMITS_MAX_QUEUED_PER_SUBJECT": "5",
        "WORKFLOWD_OUTBOUND_ALLOW_HOSTS": '["hooks.example.com"]',
        "WORKFLOWD_AUTH_ALLOW_ANONYMOUS": "true",
    })
    assert (settings.limits.submits_per_minute, settings.limits.max_queued_per_subject) == (30, 5)
    assert settings.outbound.allow_hosts == ["hooks.example.com"]
    assert settings.auth.allow_anonymous
