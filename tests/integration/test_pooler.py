"""Connection poolers: a real PgBouncer on loopback in front of the session's PostgreSQL.

Through a pool in transaction or statement mode a session advisory lock and a session SET do not hold from one
transaction to the next, so the pre-flight must stop before anything changes, naming the cause and the remedy. A
direct connection and a pool in session mode keep one session and are accepted.

PgBouncer comes from Debian's package ``pgbouncer``. Without it these tests are skipped, except where
``TMI_PGBOUNCER_REQUIRED`` or ``CI`` is set (``.ci/run`` installs it and sets the first): there they fail.
"""

from __future__ import annotations

import json
import os

import psutil
import pytest
from ansible_collections.tmi.migration.plugins.module_utils.session import PROBE_LOCK_CLASS

from conftest import run_module
from tmi_testenv.servers import PgBouncerServer, ServerError, find_pgbouncer

REMEDY = ("Point login_host and login_port (tmi_db_connection) at the PostgreSQL server directly, or at a pool in "
          "session mode (PgBouncer pool_mode = session). Nothing was changed.")


@pytest.fixture(scope="module")
def pgbouncer(pg_server):
    """``start(pool_mode)``: a PgBouncer in that mode in front of the session's PostgreSQL, one per mode."""
    try:
        find_pgbouncer()
    except ServerError as missing:
        if os.environ.get("TMI_PGBOUNCER_REQUIRED") or os.environ.get("CI"):
            pytest.fail(f"{missing}. CI must run the pooler tests (.ci/run installs pgbouncer).")
        pytest.skip(f"{missing}: the pooler tests need a real PgBouncer")
    started: dict[str, PgBouncerServer] = {}

    def start(pool_mode: str) -> PgBouncerServer:
        if pool_mode not in started:
            started[pool_mode] = PgBouncerServer(pg_server, pool_mode=pool_mode).start()
        return started[pool_mode]

    yield start
    for server in started.values():
        server.stop()


def said(result) -> str:
    """A playbook's output with the callback's line folding undone."""
    return " ".join((result.stdout + result.stderr).split())


def probe_locks(db) -> int:
    """Probe locks left anywhere on the server (the pooler's server connections included)."""
    return db.scalar("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid::bigint = %s",
                     (PROBE_LOCK_CLASS,))


def test_pgbouncer_runs_unprivileged_keeps_the_password_off_command_lines_and_leaves_nothing(pg_server, pgbouncer):
    server = PgBouncerServer(pg_server, pool_mode="session").start()
    process = psutil.Process(server.pid())
    base = server.base
    try:
        assert process.username() == ("nobody" if os.geteuid() == 0 else psutil.Process().username())
        assert oct((base / "userlist.txt").stat().st_mode & 0o777) == "0o600"
        lines = [" ".join(proc.info["cmdline"] or []) for proc in psutil.process_iter(["cmdline"])]
        assert not [line for line in lines if pg_server.password in line]
        server.connect().close()
    finally:
        server.stop()
    assert not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    assert not base.exists()


def test_the_session_check_accepts_one_session_and_finds_transaction_and_statement_pools(tmi_db, pgbouncer):
    direct = tmi_db.module_args()
    for where, args in (("direct", direct), ("session pool", {**direct, "login_port": pgbouncer("session").port})):
        for check_mode in (False, True):
            result = run_module("pg_session_check", args, check_mode=check_mode)
            assert result.get("failed") is not True and result["changed"] is False, (where, result)
            assert result["session_kept"] is True and result["failed_checks"] == [], (where, result)
            assert result["findings"] == [] and result["leftover_lock"] is False
            assert len(result["backend_pids"]) == 2, "two connections, two sessions"
            assert probe_locks(tmi_db) == 0, f"{where}: the probe releases its lock"

    transaction = run_module("pg_session_check", {**direct, "login_port": pgbouncer("transaction").port})
    assert transaction.get("failed") is not True and transaction["changed"] is False
    assert transaction["session_kept"] is False
    [check] = transaction["failed_checks"]
    assert check["check"] == "session_state" and check["severity"] == "error"
    port = pgbouncer("transaction").port
    assert f"The connection to PostgreSQL at 127.0.0.1:{port} does not keep one database session: " in check["message"]
    # A lone client's statements land on one server connection: the second connection is what shows the pool.
    assert "a transaction on a second connection ran in the server session (backend pid " in check["message"]
    assert "PgBouncer with pool_mode = transaction or statement" in check["message"]
    assert REMEDY in check["message"]
    assert probe_locks(tmi_db) == (1 if transaction["leftover_lock"] else 0)

    statement = run_module("pg_session_check", {**direct, "login_port": pgbouncer("statement").port}, check_mode=True)
    assert statement["session_kept"] is False
    assert "a transaction on a second connection was refused" in statement["failed_checks"][0]["message"]
    assert REMEDY in statement["failed_checks"][0]["message"]
    assert tmi_db.server.password not in json.dumps([transaction, statement])


def _unchanged(environment, before, run_id: str) -> None:
    """Nothing changed: data, version, Redis, config, maintenance; no backup, no lock table, no history."""
    assert environment.state() == before
    backups = environment.tmp_path / "backups"
    assert not backups.exists() or not any(backups.rglob("*")), "no backup starts before the pre-flight passes"
    assert environment.db.query("SELECT to_regclass('public.tmi_migration_lock'), "
                                "to_regclass('public.tmi_migration_history')") == [(None, None)]
    record = json.loads((environment.tmp_path / "runs" / run_id / "run.json").read_text())
    assert record["failed"] is True and not record["rollback"]
    assert "keeps one database session" in record["failed_task"]


def test_migrate_yml_through_a_transaction_pool_stops_in_the_preflight_and_changes_nothing(environment, pgbouncer):
    environment.env.update(pgbouncer("transaction").env(environment.db.name))
    before = environment.state()
    result = environment.playbook("migrate.yml", "-e", "tmi_run_id=through-a-pool")
    assert result.returncode != 0
    message = said(result)
    assert "does not keep one database session" in message, message[-3000:]
    assert "PgBouncer with pool_mode = transaction or statement" in message and REMEDY in message
    assert environment.db.server.password not in message
    _unchanged(environment, before, "through-a-pool")


def test_migrate_yml_through_a_session_pool_runs_to_the_end(environment, pgbouncer):
    """Backup (pg_dump, the scratch copy through the pool's catch-all entry), rehearsal, migration and the
    application's restart all through a pool in session mode: the remedy the refusal names works."""
    environment.env.update(pgbouncer("session").env(environment.db.name))
    result = environment.playbook("migrate.yml", "-e", "tmi_run_id=session-pool")
    assert result.returncode == 0, said(result)[-4000:]
    assert environment.state()["version"] == (17, False)
    [record] = environment.records()
    assert record["preflight"]["session_kept"] is True and not record["failed"]
