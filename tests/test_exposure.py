"""Safe by default (API.md §8): `workflowd serve` beyond loopback with auth off refuses to
start, saying why, unless `[auth] allow_anonymous = true`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from workflowd.config import ConfigError, Settings, check_exposure, is_loopback

ROOT = Path(__file__).resolve().parent.parent
AUTH = {"enabled": True, "tokens": [{"subject": "ana", "role": "admin", "sha256": "a" * 64}]}


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20"])
def test_serve_refuses_beyond_loopback_without_auth(tmp_path: Path, host: str) -> None:
    """Exit 2 with one line on stderr naming the problem and the ways out, before the store
    is opened (so before anything binds)."""
    db = tmp_path / "wd.db"
    config = tmp_path / "config.toml"
    config.write_text(f'[server]\nhost = "{host}"\nport = 0\n[store]\npath = "{db}"\n')
    done = subprocess.run(
        [sys.executable, "-m", "workflowd", "serve", "--config", str(config)],
        # The source tree's workflowd, whatever the environment has installed.
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])},
        cwd=str(tmp_path),
        capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert host in lines[0]
    assert "[auth]" in lines[0]
    assert "allow_anonymous" in lines[0]
    assert not db.exists()


@pytest.mark.parametrize("host", ["127.0.0.1", "127.3.4.5", "::1", "[::1]", "localhost",
                                  "LocalHost."])
def test_loopback_hosts(host: str) -> None:
    """Loopback in its spellings is served with auth off."""
    assert is_loopback(host)
    check_exposure(Settings.model_validate({"server": {"host": host}}))


@pytest.mark.parametrize("host", ["0.0.0.0", "", "::", "10.0.0.1", "myhost.internal",
                                  "localhost.example.com"])
def test_other_hosts_need_auth_or_allow_anonymous(host: str) -> None:
    """Any other host (a name may resolve anywhere) needs auth, or an explicit
    allow_anonymous."""
    assert not is_loopback(host)
    with pytest.raises(ConfigError, match="allow_anonymous"):
        check_exposure(Settings.model_validate({"server": {"host": host}}))
    check_exposure(Settings.model_validate({"server": {"host": host},
                                            "auth": {"allow_anonymous": True}}))
    check_exposure(Settings.model_validate({"server": {"host": host}, "auth": AUTH}))
