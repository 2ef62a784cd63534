"""Issue 21, connections and modules: every failure found in the red-team pass, against real servers.

* A database whose state table is missing while its schema holds tables is not taken for a new one.
* No connection waits for ever: a listener that accepts and never answers fails PostgreSQL modules, the
  pre-flight and the Redis modules within their timeout, naming the endpoint; a wrong Redis password is
  named as such.
* A migration file that does not parse is named with its line; a plan through files without a down file
  is warned about; a password with a line break is refused before it breaks pg_dump; a backup
  directory that cannot be created says why.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import psycopg2
import pytest
from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.testing import patch_module_args
from ansible_collections.tmi.migration.plugins.module_utils import pgtools, postgres, snapshot
from ansible_collections.tmi.migration.plugins.module_utils.runlock import Held, RunLock

from conftest import BOOKKEEPING_TABLES, run_module, start_module
from tmi_testenv.fixture import MIGRATIONS_DIR, schema_snapshot

RENAMED = "schema_migrations_renamed"


class SilentListener:
    """A TCP listener on a free loopback port that accepts every connection and never sends a byte."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)

    def _accept(self):
        while True:
            try:
                conn, _address = self.sock.accept()
            except OSError:  # closed
                return
            self.accepted.append(conn)

    def __enter__(self) -> SilentListener:
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.sock.close()
        for conn in self.accepted:
            conn.close()


def migrate(db, **args):
    return run_module("pg_migrate", {"path": str(MIGRATIONS_DIR), **db.module_args(), **args})


def copy_fixture(tmp_path, upto: int = 17) -> Path:
    directory = tmp_path / "migrations"
    directory.mkdir()
    for path in MIGRATIONS_DIR.iterdir():
        if int(path.name.split("_", 1)[0]) <= upto:
            shutil.copy(path, directory / path.name)
    return directory


def timed(call, *args, **kwargs):
    started = time.monotonic()
    result = call(*args, **kwargs)
    return result, time.monotonic() - started


def bounded_module(name: str, args: dict, limit: float = 60) -> dict:
    """run_module that fails the test instead of hanging with it when the module hangs."""
    run = start_module(name, args)
    try:
        return run.result(timeout=limit)
    except subprocess.TimeoutExpired:
        run.process.kill()
        run.process.communicate()
        pytest.fail(f"{name} still ran after {limit} s: it hangs on an endpoint that never answers")


def bounded_playbook(environment, name: str, *args: str, limit: float = 150) -> subprocess.CompletedProcess:
    """environment.playbook that fails the test instead of hanging with it when the run hangs."""
    process = environment.playbook(name, *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        pytest.fail(f"{name} still ran after {limit} s: it hangs on an endpoint that never answers")
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def preflight_seconds(environment) -> float:
    """How long the last run's pre-flight phase took (from its run record)."""
    return next(p["duration"] for p in environment.records()[-1]["phases"] if p["phase"] == "preflight")


def flat(text: str) -> str:
    """Output with whitespace normalised (the callback folds long messages)."""
    return " ".join(text.split())


def figures_and_services(environment, state_table: str = "schema_migrations") -> dict:
    """environment.state() with the version read from ``state_table`` (which may be renamed)."""
    conn = environment.db.server.connect(environment.db.name)
    try:
        with conn.cursor() as cur:
            figures = snapshot.take(cur)
            cur.execute(f"SELECT version, dirty FROM {state_table}")  # a fixed name of this module
            version = cur.fetchone()
            cur.execute("SELECT to_regclass('public.schema_migrations') IS NOT NULL")
            has_state_table = cur.fetchone()[0]
    finally:
        conn.close()
    for bookkeeping in BOOKKEEPING_TABLES:
        figures.pop(bookkeeping, None)
    client = environment.redis.client()
    return {"figures": figures, "version": version, "has_schema_migrations": has_state_table,
            "redis": {name: client.config_get(name)[name] for name in ("maxmemory-policy", "notify-keyspace-events")},
            "config": hashlib.sha256(environment.standin.config.read_bytes()).hexdigest(),
            "maintenance": environment.standin.request("GET", "/admin/maintenance")[1]["maintenance"]}


def no_backup_taken(environment) -> bool:
    backups = environment.tmp_path / "backups"
    return not backups.exists() or not any(path.is_dir() for path in backups.rglob("*") if path.parent != backups)


# --- 1. A missing state table is not a new database -------------------------------------------------------


def test_status_and_migrate_refuse_a_schema_without_its_state_table_and_force_records_it(tmi_db):
    tmi_db.migrate(15)
    tmi_db.query(f"ALTER TABLE schema_migrations RENAME TO {RENAMED}")
    before = schema_snapshot(tmi_db.conn)
    tables = len(tmi_db.tables())

    for args, check_mode in (({"operation": "status"}, False), ({}, False), ({}, True)):
        result = run_module("pg_migrate", {"path": str(MIGRATIONS_DIR), **tmi_db.module_args(), **args},
                            check_mode=check_mode)
        assert result["failed"], result
        message = result["msg"]
        assert f"has {tables} tables in schema public" in message
        assert "but no public.schema_migrations state table, so its version is unknown" in message
        assert "operation=force and target_version" in message and "-e tmi_force_version=" in message
        assert "set state_table and state_schema" in message and "-e tmi_state_table=" in message
        assert "Nothing was changed" in message
        assert RENAMED in result["unrecorded_tables"] and "threats" in result["unrecorded_tables"]
        assert result["applied"] == []
    assert schema_snapshot(tmi_db.conn) == before
    assert not tmi_db.scalar("SELECT to_regclass('public.schema_migrations') IS NOT NULL")
    assert not tmi_db.scalar("SELECT to_regclass('public.tmi_migration_history') IS NOT NULL")

    forced = migrate(tmi_db, operation="force", target_version="15")
    assert not forced.get("failed"), forced
    assert forced["changed"] and tmi_db.query("SELECT version, dirty FROM schema_migrations") == [(15, False)]
    status = migrate(tmi_db, operation="status")
    assert status["version_before"] == 15 and [step["version"] for step in status["plan"]] == [16, 17]


def test_a_schema_with_only_the_collections_own_tables_or_other_schemas_tables_is_new(tmi_db):
    """The history table, tables of another schema and an extension's tables do not make a database old."""
    tmi_db.query("CREATE TABLE tmi_migration_history (id bigserial PRIMARY KEY, version bigint NOT NULL, "
                 "title text NOT NULL, direction text NOT NULL, sha256 text NOT NULL, applied_at timestamptz NOT NULL "
                 "DEFAULT now(), duration_ms bigint NOT NULL, applied_by text NOT NULL DEFAULT current_user, "
                 "mode text NOT NULL)")
    tmi_db.query("CREATE SCHEMA other")
    tmi_db.query("CREATE TABLE other.unrelated (id int)")
    status = migrate(tmi_db, operation="status")
    assert not status.get("failed"), status["msg"]
    assert status["version_before"] == 0 and len(status["plan"]) == 17


def test_migrate_playbook_stops_in_the_preflight_when_the_state_table_is_missing(environment):
    environment.db.query(f"ALTER TABLE schema_migrations RENAME TO {RENAMED}")
    before = figures_and_services(environment, RENAMED)

    result = environment.playbook("migrate.yml")
    assert result.returncode != 0, result.stdout[-3000:]
    message = flat(result.stdout)
    assert "but no public.schema_migrations state table, so its version is unknown" in message
    assert "playbooks/force_version.yml -e tmi_force_version=<version>" in message
    record = environment.records()[-1]
    assert record["failed_phase"] == "preflight" and "Read the current schema version" in record["failed_task"]
    assert "no verified backup was taken" in message
    assert no_backup_taken(environment)
    assert figures_and_services(environment, RENAMED) == before

    # The remedy the message names: record the version the schema is at, then the plan starts there.
    forced = environment.playbook("force_version.yml", "-e", "tmi_force_version=15")
    assert forced.returncode == 0, forced.stdout[-3000:]
    assert "Schema version 0 -> 15, clean: recorded without running any migration" in flat(forced.stdout)
    assert environment.db.query("SELECT version, dirty FROM schema_migrations") == [(15, False)]
    after = figures_and_services(environment, RENAMED)["figures"]
    assert after.pop("public.schema_migrations")["rows"] == 1
    assert after == before["figures"]  # no migration ran: only the state table is new


# --- 2. No connection waits for ever ----------------------------------------------------------------------


def test_a_postgresql_endpoint_that_never_answers_fails_a_module_fast_naming_it(tmi_db):
    with SilentListener() as silent:
        result, elapsed = timed(bounded_module, "pg_migrate", {"path": str(MIGRATIONS_DIR), **tmi_db.module_args(),
                                                               "operation": "status", "login_port": silent.port})
        assert silent.accepted, "the module never reached the listener"
    assert result["failed"] and elapsed < 15, (elapsed, result)
    assert f"PostgreSQL at 127.0.0.1:{silent.port} did not answer within 10 s (connect_timeout)" in result["msg"]
    assert "raise connect_timeout in connect_params" in result["msg"]
    assert tmi_db.server.password not in json.dumps(result)

    # The user's connect_timeout wins.
    with SilentListener() as silent:
        result, elapsed = timed(bounded_module, "pg_migrate", {"path": str(MIGRATIONS_DIR), **tmi_db.module_args(),
                                                               "operation": "status", "login_port": silent.port,
                                                               "connect_params": {"connect_timeout": 3}})
    assert result["failed"] and elapsed < 8, (elapsed, result)
    assert f"127.0.0.1:{silent.port} did not answer within 3 s" in result["msg"]


def test_pg_dump_and_pg_restore_get_the_connect_timeout_too(tmi_db):
    """pgtools.conninfo (the connection string of pg_dump and pg_restore) with the module's real options."""
    with SilentListener() as silent:
        args = {**tmi_db.module_args(), "login_port": silent.port}
        with patch_module_args(args):
            module = AnsibleModule(argument_spec=postgres.argument_spec())
        conninfo = pgtools.conninfo(module, tmi_db.name, "test")
        assert "connect_timeout='10'" in conninfo and tmi_db.server.password not in conninfo
        with pgtools.PasswordFile(module) as env:
            (error, elapsed) = timed(subprocess.run, [str(tmi_db.server.client_bindir / "pg_dump"), "--schema-only",
                                                      "--dbname", conninfo], env=env, capture_output=True, text=True,
                                     timeout=60)
    assert error.returncode != 0 and elapsed < 15, elapsed
    assert f'connection to server at "127.0.0.1", port {silent.port} failed: timeout expired' in error.stderr


def test_the_preflight_fails_fast_naming_a_postgresql_endpoint_that_never_answers(environment):
    before = environment.state()
    with SilentListener() as silent:
        environment.env["TMI_PG_PORT"] = str(silent.port)
        result = bounded_playbook(environment, "migrate.yml")
        del environment.env["TMI_PG_PORT"]
    assert result.returncode != 0
    assert preflight_seconds(environment) < 30  # the hang this replaces lasted more than 420 s
    message = flat(result.stdout)
    assert f"PostgreSQL at 127.0.0.1:{silent.port} is not reachable" in message
    assert "It did not answer within 10 s (connect_timeout)" in message
    assert environment.records()[-1]["failed_phase"] == "preflight"
    assert no_backup_taken(environment)
    assert environment.state() == before


def test_the_preflight_fails_fast_naming_a_redis_endpoint_that_never_answers(environment):
    before = environment.state()
    with SilentListener() as silent:
        environment.env["TMI_REDIS_PORT"] = str(silent.port)
        result = bounded_playbook(environment, "migrate.yml")
        del environment.env["TMI_REDIS_PORT"]
        assert silent.accepted, "the pre-flight never reached the listener"
    assert result.returncode != 0
    assert preflight_seconds(environment) < 40  # with redis-py 8's retries it took more than a minute
    message = flat(result.stdout)
    assert f"Redis at 127.0.0.1:{silent.port} did not answer within 10 s" in message
    assert "Connect to Redis and read its version" in environment.records()[-1]["failed_task"]
    assert no_backup_taken(environment)
    assert environment.state() == before


@pytest.mark.parametrize("module, args", [
    ("redis_server_info", {}),
    ("redis_settings", {"settings": {"maxmemory-policy": "allkeys-lru"}}),
])
def test_redis_modules_time_out_on_a_silent_listener(redis_server, module, args):
    before = redis_server.client().config_get("maxmemory-policy")
    with SilentListener() as silent:
        result, elapsed = timed(bounded_module, module, {"login_host": "127.0.0.1", "login_port": silent.port,
                                                         "login_password": redis_server.password, "timeout": 2,
                                                         **args})
    assert result["failed"] and elapsed < 8, (elapsed, result)
    assert f"Redis at 127.0.0.1:{silent.port} did not answer within 2 s" in result["msg"]
    assert redis_server.password not in json.dumps(result)
    assert redis_server.client().config_get("maxmemory-policy") == before


@pytest.mark.parametrize("module", ["redis_server_info", "redis_settings"])
def test_a_wrong_redis_password_is_named_as_such(redis_server, module):
    result = run_module(module, {"login_host": redis_server.host, "login_port": redis_server.port,
                                 "login_password": "not-the-redis-password-7q"})
    assert result["failed"]
    assert f"Redis at {redis_server.host}:{redis_server.port} refused authentication" in result["msg"]
    assert "tmi_redis_connection.login_password" in result["msg"]
    assert "not-the-redis-password-7q" not in json.dumps(result)


def test_the_preflight_names_a_wrong_redis_password_without_showing_it(environment):
    before = environment.state()
    environment.env["TMI_REDIS_PASSWORD"] = "not-the-redis-password-7q"
    result = environment.playbook("migrate.yml", "-vvv")
    assert result.returncode != 0
    message = flat(result.stdout)
    assert (f"Redis at 127.0.0.1:{environment.redis.port} refused authentication (invalid username-password pair"
            in message)
    assert "Set login_password (tmi_redis_connection.login_password)" in message
    assert "unable to connect to database" not in message
    assert "not-the-redis-password-7q" not in result.stdout + result.stderr
    assert "not-the-redis-password-7q" not in json.dumps(environment.records())
    assert no_backup_taken(environment)
    assert environment.state() == before


def test_a_redis_password_with_a_line_break_is_refused_before_connecting(redis_server):
    result = run_module("redis_server_info", {"login_host": redis_server.host, "login_port": redis_server.port,
                                              "login_password": redis_server.password + "\n"})
    assert result["failed"] and "login_password (tmi_redis_connection.login_password) contains a line break" in \
        result["msg"]
    assert redis_server.password not in json.dumps(result)


# --- 3. Smaller findings ----------------------------------------------------------------------------------


def test_a_file_that_does_not_parse_is_named_with_its_line(tmi_db, tmp_path):
    tmi_db.migrate(15)
    directory = copy_fixture(tmp_path)
    bad = directory / "000017_enhance_metadata.up.sql"
    bad.write_text("-- the constraint has no name\nSELECT 1;\n\nALTER TABLE metadata\n    ADD CONSTRAINT;\n")
    before = schema_snapshot(tmi_db.conn)
    result = migrate(tmi_db, path=str(directory))
    assert result["failed"]
    assert f"File {bad} does not parse as PostgreSQL SQL at line 5, column 19: syntax error at or near" in \
        result["msg"]
    assert schema_snapshot(tmi_db.conn) == before


@pytest.mark.parametrize("without, past", [(17, 17), (16, 16)])
def test_a_plan_through_files_without_a_down_file_warns_and_names_them(tmi_db, tmp_path, without, past):
    tmi_db.migrate(15)
    directory = copy_fixture(tmp_path)
    next(directory.glob(f"{without:06d}_*.down.sql")).unlink()
    expected = f"Migration {without:06d} has no down file: a planned rollback past version {past} is impossible"
    status = migrate(tmi_db, path=str(directory), operation="status")
    check = run_module("pg_migrate", {"path": str(directory), **tmi_db.module_args()}, check_mode=True)
    applied = migrate(tmi_db, path=str(directory))
    for result in (status, check, applied):
        assert not result.get("failed"), result
        assert result["missing_down"] == [without]
        assert expected in str(result["warnings"]) and "would restore the backup" in str(result["warnings"])
    assert applied["version_after"] == 17
    nothing_planned = migrate(tmi_db, path=str(directory), operation="status")
    assert nothing_planned["missing_down"] == [] and not nothing_planned.get("warnings")


def test_a_database_password_with_a_line_break_is_refused_before_pg_dump_gets_half_of_it(tmi_db, tmp_path):
    """psycopg2 logs in with such a password, pg_dump (reading a pgpass file) does not: the backup used to fail
    with 'password authentication failed' after the pre-flight passed."""
    tmi_db.migrate(15)
    password = "line-one\nline-two"
    tmi_db.query("CREATE ROLE tmi_newline LOGIN SUPERUSER PASSWORD %s", (password,))
    try:
        psycopg2.connect(host=tmi_db.server.host, port=tmi_db.server.port, user="tmi_newline", password=password,
                         dbname=tmi_db.name).close()  # libpq itself takes it
        args = {**tmi_db.module_args(), "login_user": "tmi_newline", "login_password": password}
        dest = tmp_path / "backup"
        dest.mkdir()
        results = [run_module("pg_backup", {**args, "dest": str(dest), "pg_bin_dir": str(tmi_db.server.client_bindir)}),
                   run_module("pg_migrate", {**args, "path": str(MIGRATIONS_DIR), "operation": "status"})]
    finally:
        tmi_db.query("DROP ROLE tmi_newline")
    for result in results:
        assert result["failed"]
        assert result["msg"].startswith("login_password (tmi_db_connection.login_password) contains a line break.")
        assert "line-one" not in json.dumps(result) and "line-two" not in json.dumps(result)
    assert list(dest.iterdir()) == []


def test_the_preflight_refuses_a_database_password_with_a_line_break(environment):
    before = environment.state()
    environment.env["TMI_PG_PASSWORD"] = environment.db.server.password + "\n"
    result = environment.playbook("migrate.yml")
    assert result.returncode != 0
    message = flat(result.stdout)
    assert "tmi_db_connection.login_password contains a line break" in message
    assert "Assert that the PostgreSQL password can be handed to pg_dump" in environment.records()[-1]["failed_task"]
    assert environment.db.server.password not in result.stdout + result.stderr
    assert environment.records()[-1]["failed_phase"] == "preflight"
    assert no_backup_taken(environment)
    assert environment.state() == before


def test_a_backup_directory_that_cannot_be_created_names_it_and_the_os_error(environment):
    blocker = environment.tmp_path / "a-file"
    blocker.write_text("a regular file where a directory is expected\n")
    backup_dir = blocker / "backups"
    before = environment.state()
    result = environment.playbook("migrate.yml", "-e", f"tmi_backup_dir={backup_dir}")
    assert result.returncode != 0
    message = flat(result.stdout)
    assert f"Cannot create the backup directory {backup_dir}: Not a directory" in message, message[-3000:]
    assert "Choose a backup_dir (tmi_backup_dir)" in message and "Nothing was written" in message
    # The backup's own pre-flight runs in the run's pre-flight phase, before anything changes.
    record = environment.records()[-1]
    assert record["failed_phase"] == "preflight" and not record.get("rollback")
    assert record["error"].startswith(f"Cannot create the backup directory {backup_dir}: Not a directory (")
    assert "One or more items failed" not in record["error"]
    assert blocker.read_text().startswith("a regular file")
    assert environment.state() == before


def test_the_run_lock_holds_one_run_without_ansible(tmi_db):
    """RunLock takes a connection: the second run is refused naming the first, the named dead one is taken over."""
    def handle(state, run_id, takeover=(), pid=1):
        conn = tmi_db.server.connect(tmi_db.name, autocommit=False)
        try:
            result = RunLock(conn, None, "tmi_migration_lock").handle(
                state, run_id, {"host": "runner", "pid": pid, "started": "t0"}, takeover)
            conn.commit()
            return result
        finally:
            conn.close()

    assert handle("present", "a") == {"changed": True, "acquired": True, "holder": {}, "taken_over": ""}
    assert handle("present", "a")["changed"] is False
    with pytest.raises(Held) as held:
        handle("present", "b", pid=2)
    assert held.value.holder["run_id"] == "a" and "run a (host runner, pid 1" in str(held.value)
    assert tmi_db.query("SELECT run_id FROM tmi_migration_lock") == [("a",)]
    taken = handle("present", "b", takeover=["a"], pid=2)
    assert (taken["acquired"], taken["taken_over"]) == (True, "a")
    assert handle("absent", "b", pid=2)["changed"] and tmi_db.scalar("SELECT count(*) FROM tmi_migration_lock") == 0
