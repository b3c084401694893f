"""A throwaway PostgreSQL for the tests and the benchmark: `initdb` and `pg_ctl` in a temporary
directory, on a free loopback port, as a user that is not root (PostgreSQL refuses root).

`WORKFLOWD_TEST_POSTGRES_URL=postgresql://user:pass@host:port/db` uses an existing server
instead (the user needs CREATEDB: each test gets a database of its own, dropped after).
Binaries come from `WORKFLOWD_TEST_PG_BIN`, else `PATH`, else Debian's
`/usr/lib/postgresql/<version>/bin`.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

__all__ = ["PgServer", "find_bin"]

_USER = "workflowd-test"


def find_bin() -> Path | None:
    """The directory with `initdb` and `pg_ctl`, or None when PostgreSQL is not installed."""
    configured = os.environ.get("WORKFLOWD_TEST_PG_BIN")
    if configured:
        return Path(configured)
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(found).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                      key=lambda p: int(Path(p).parent.parent.name)
                      if Path(p).parent.parent.name.isdigit() else 0)
    return Path(versions[-1]).parent if versions else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _run_as() -> str | None:
    """Who runs the server: nobody special unless we are root; then `postgres` (Debian's
    package makes it) or a system user of our own."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", _USER):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin",
                    _USER], check=True, capture_output=True)
    return _USER


class PgServer:
    """One server for a test session (or a benchmark run); `database()` makes fresh ones."""

    def __init__(self, *, durable: bool = False) -> None:
        self.external = os.environ.get("WORKFLOWD_TEST_POSTGRES_URL", "")
        self.durable = durable
        self.dir: Path | None = None
        self.port = 0
        self._count = itertools.count(1)
        self._user = _run_as()

    @property
    def base_url(self) -> str:
        if self.external:
            return self.external
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url_of(self, database: str) -> str:
        parts = urlsplit(self.base_url)
        return parts._replace(path=f"/{database}").geturl()

    def start(self) -> None:
        if self.external:
            return
        bin_dir = find_bin()
        if bin_dir is None:
            raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql), and "
                               "WORKFLOWD_TEST_POSTGRES_URL names no server")
        self.dir = Path(tempfile.mkdtemp(prefix="workflowd-pg-"))
        if self._user is not None:
            shutil.chown(self.dir, self._user)
        data = self.dir / "data"
        self._as_user([str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres",
                       "--auth=trust", "-E", "UTF8", "--no-sync"])
        self.port = _free_port()
        options = [f"-p {self.port}", "-c listen_addresses=127.0.0.1",
                   f"-c unix_socket_directories={self.dir}", "-c max_connections=300"]
        if not self.durable:
            # Tests check behaviour, not power-cut durability: skip the syncs.
            options += ["-c fsync=off", "-c synchronous_commit=off",
                        "-c full_page_writes=off"]
        self._as_user([str(bin_dir / "pg_ctl"), "-D", str(data), "-l",
                       str(self.dir / "server.log"), "-o", " ".join(options), "-w", "-t", "60",
                       "start"])

    def stop(self) -> None:
        if self.dir is None:
            return
        bin_dir = find_bin()
        assert bin_dir is not None
        with contextlib.suppress(subprocess.CalledProcessError):
            self._as_user([str(bin_dir / "pg_ctl"), "-D", str(self.dir / "data"), "-m",
                           "immediate", "-w", "-t", "30", "stop"])
        shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None

    def _as_user(self, args: list[str]) -> None:
        subprocess.run(args, check=True, capture_output=True, user=self._user, timeout=120,
                       cwd=str(self.dir))

    async def database(self) -> str:
        """A new, empty database; answers its URL."""
        import asyncpg

        name = f"wf_{os.getpid()}_{next(self._count)}"
        conn = await asyncpg.connect(self.base_url)
        try:
            await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        finally:
            await conn.close()
        return self.url_of(name)

    async def drop(self, url: str) -> None:
        import asyncpg

        name = urlsplit(url).path.lstrip("/")
        conn = await asyncpg.connect(self.base_url)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()
