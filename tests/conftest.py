"""Shared pytest fixtures: real throwaway servers for the whole session, a fresh database per test."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from ansible_collections.tmi.migration.plugins.module_utils import snapshot
from ansible_collections.tmi.migration.plugins.module_utils.bookkeeping import OWN_TABLES

from tmi_testenv import fixture
from tmi_testenv.servers import PostgresServer, RedisServer
from tmi_testenv.standin import StandIn, write_config

REPO = Path(__file__).resolve().parent.parent
COLLECTIONS = REPO / ".build" / "collections"
_db_counter = itertools.count()


@pytest.fixture(scope="session")
def pg_server():
    with PostgresServer() as server:
        yield server


@pytest.fixture(scope="session")
def redis_server():
    with RedisServer() as server:
        yield server


class Database:
    """A database created for one test on the session server."""

    def __init__(self, server: PostgresServer, name: str):
        self.server = server
        self.name = name
        server.create_database(name)
        self.conn = server.connect(name)

    def query(self, sql: str, params=None) -> list[tuple]:
        with self.conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall() if cur.description else []

    def scalar(self, sql: str, params=None):
        rows = self.query(sql, params)
        return rows[0][0] if rows else None

    def migrate(self, version: int) -> int:
        return fixture.apply_like_golang_migrate(self.conn, version)

    def tables(self) -> set[str]:
        return {row[0] for row in self.query(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}

    def module_args(self) -> dict:
        """Connection options for a tmi.migration module, named as community.postgresql names them."""
        return {"login_host": self.server.host, "login_port": self.server.port, "login_user": self.server.user,
                "login_password": self.server.password, "login_db": self.name}

    def drop(self) -> None:
        self.conn.close()
        admin = self.server.connect()
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        admin.close()


@pytest.fixture
def tmi_db(pg_server):
    db = Database(pg_server, f"tmi_test_{os.getpid()}_{next(_db_counter)}")
    yield db
    db.drop()


@pytest.fixture
def big_db(tmi_db):
    """A TMI database at version 15 with about 110k rows."""
    tmi_db.migrate(15)
    counts = fixture.generate(tmi_db.conn, 2500)
    assert sum(counts.values()) >= 100_000
    return tmi_db


def ansible_env(pg: PostgresServer, redis_server: RedisServer | None, dbname: str,
                workdir: Path | None = None) -> dict[str, str]:
    """The environment inventories/local reads; backups and run records go under workdir when given."""
    env = {**os.environ, **pg.env(dbname), "ANSIBLE_FORCE_COLOR": "0", "PYTHONPATH": str(REPO / "tests"),
           "TMI_MIGRATIONS_PATH": str(fixture.MIGRATIONS_DIR)}
    if workdir is not None:
        env.update(TMI_BACKUP_DIR=str(workdir / "backups"), TMI_RUN_DIR=str(workdir / "runs"))
    if redis_server is not None:
        env.update(redis_server.env())
    return env


@contextlib.contextmanager
def tmi_install(pg: PostgresServer, redis_server: RedisServer, db: Database, workdir: Path, version: int,
                threat_models: int, seed: int):
    """A TMI install: the database at `version` with generated data and the stand-in running on the
    config it had before the migration. Yields (stand-in, environment for inventories/local)."""
    db.migrate(version)
    fixture.generate(db.conn, threat_models, seed=seed)
    env = ansible_env(pg, redis_server, db.name, workdir)
    standin = StandIn(workdir / "app")
    write_config(standin.config, env, env)
    # The session's Redis is shared: every install starts from, and leaves, the server defaults.
    reset_redis(redis_server)
    standin.start()
    env.update(standin.env())
    try:
        yield standin, env
    finally:
        standin.stop()
        reset_redis(redis_server)


def reset_redis(redis_server: RedisServer) -> None:
    """Redis' default values of the settings a migration run changes, and an empty cache."""
    client = redis_server.client()
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("notify-keyspace-events", "")
    client.flushall()


def playbook_argv(playbook: str, *args: str) -> list[str]:
    """ansible-playbook on a playbook of the collection against inventories/local."""
    return [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(REPO / "inventories" / "local"),
            str(REPO / "playbooks" / playbook), *args]


def run_playbook(playbook: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """Run a playbook of the collection against inventories/local, as an operator would."""
    return subprocess.run(playbook_argv(playbook, *args), cwd=REPO, env=env, capture_output=True, text=True,
                          check=False)


class ModuleRun:
    """A module process started in the background; ``result()`` waits and parses its JSON."""

    def __init__(self, process: subprocess.Popen, args_file: str):
        self.process = process
        self.args_file = args_file

    def result(self, timeout: float = 300) -> dict:
        try:
            stdout, stderr = self.process.communicate(timeout=timeout)
        finally:
            os.unlink(self.args_file)
        try:
            return json.loads(stdout)
        except json.JSONDecodeError as error:
            raise AssertionError(f"module printed no JSON (rc {self.process.returncode}): {stdout}{stderr}") from error


def start_module(name: str, args: dict, check_mode: bool = False) -> ModuleRun:
    """Run a module of this collection for real, as Ansible would run it on the target (args in a 0600 file)."""
    assert (COLLECTIONS / "ansible_collections" / "tmi" / "migration").exists(), "run scripts/bootstrap.sh first"
    handle, args_file = tempfile.mkstemp(prefix="tmi-module-args-", suffix=".json")
    with os.fdopen(handle, "w") as out:
        json.dump({"ANSIBLE_MODULE_ARGS": {**args, "_ansible_check_mode": check_mode}}, out)
    process = subprocess.Popen([sys.executable, str(REPO / "plugins" / "modules" / f"{name}.py"), args_file],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": str(COLLECTIONS)})
    return ModuleRun(process, args_file)


def run_module(name: str, args: dict, check_mode: bool = False) -> dict:
    return start_module(name, args, check_mode).result()


REDIS_SETTINGS = ("maxmemory-policy", "notify-keyspace-events")
# The collection's own tables: what a run writes besides the application's data (and golang-migrate's state,
# which the tests read as the version).
BOOKKEEPING_TABLES = OWN_TABLES


class Environment:
    """A TMI install at version 15: database, Redis, the stand-in on its pre-migration config."""

    def __init__(self, redis_server, db, tmp_path, standin, env):
        self.db = db
        self.redis = redis_server
        self.tmp_path = tmp_path
        self.standin = standin
        self.env = env

    def state(self) -> dict:
        # A fresh connection: an emergency restore swaps the database under older ones.
        conn = self.db.server.connect(self.db.name)
        try:
            with conn.cursor() as cur:
                figures = snapshot.take(cur)
                cur.execute("SELECT version, dirty FROM schema_migrations")
                version = cur.fetchone()
        finally:
            conn.close()
        for bookkeeping in BOOKKEEPING_TABLES:
            figures.pop(bookkeeping, None)
        client = self.redis.client()
        return {"figures": figures, "version": version,
                "redis": {name: client.config_get(name)[name] for name in REDIS_SETTINGS},
                "config": hashlib.sha256(self.standin.config.read_bytes()).hexdigest(),
                "maintenance": self.standin.request("GET", "/admin/maintenance")[1]["maintenance"]}

    def playbook(self, name: str, *extra: str, **popen) -> subprocess.CompletedProcess | subprocess.Popen:
        if popen:
            return subprocess.Popen(playbook_argv(name, *extra), cwd=REPO, env=self.env, text=True, **popen)
        return run_playbook(name, self.env, *extra)

    def records(self, name: str = "run") -> list[dict]:
        runs = self.tmp_path / "runs"
        return [json.loads(path.read_text()) for path in sorted(runs.glob(f"*/{name}.json"))] if runs.exists() else []

    def broken_migrations(self, version: int, sql: str) -> str:
        """A copy of the fixture whose migration `version` fails at its end."""
        target = self.tmp_path / "migrations"
        shutil.copytree(fixture.MIGRATIONS_DIR, target)
        up = next(target.glob(f"{version:06d}_*.up.sql"))
        up.write_text(up.read_text() + f"\n{sql}\n")
        return str(target)


@pytest.fixture
def environment(pg_server, redis_server, tmi_db, tmp_path):
    """A TMI install at version 15 with 8 threat models (the fault-injection and data-safety tests)."""
    with tmi_install(pg_server, redis_server, tmi_db, tmp_path, version=15, threat_models=8, seed=11) as installed:
        yield Environment(redis_server, tmi_db, tmp_path, *installed)


# The integration files with the longest single tests first (a 5-10 minute test started last leaves one worker
# finishing it alone), then the other long files, then the rest as collected, the unit tests last: pytest-xdist
# hands tests out in this order, so the workers start on the long ones and the short ones fill the end.
LONGEST_FIRST = ("test_hardening_rollback", "test_run_record", "test_awx_runner", "test_fault_injection",
                 "test_data_safety", "test_online_rewrites", "test_rehearsal_run", "test_hardening_run",
                 "test_benchmarks", "test_maintenance_window", "test_pooler", "test_app_config",
                 "test_hardening_modules", "test_hardening_catalog")


def pytest_collection_modifyitems(config, items):
    rank = {name: position for position, name in enumerate(LONGEST_FIRST)}

    def order(item):
        module = item.nodeid.split("::")[0].rsplit("/", 1)[-1].removesuffix(".py")
        unit = item.nodeid.startswith("tests/unit/")
        return (unit, rank.get(module, len(rank)))

    items.sort(key=order)  # stable: each file keeps its own order
