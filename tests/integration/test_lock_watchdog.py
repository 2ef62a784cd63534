"""The lock-queue watchdog of pg_migrate against a real PostgreSQL (issue 17, item 5).

A blocker holds ACCESS SHARE on threat_models in an open transaction; the migration's ALTER TABLE then
waits for ACCESS EXCLUSIVE, and an application session's SELECT on the table queues behind that request.
"""

from __future__ import annotations

import json
import re
import threading
import time

import psycopg2
import pytest
from test_pg_migrate import copy_fixture, state

from conftest import REPO, ansible_env, run_playbook, start_module
from tmi_testenv.fixture import schema_snapshot

TABLE = "threat_models"
ROLE_PLAYBOOK = str(REPO / "tests" / "integration" / "playbooks" / "migrate_role.yml")


def alter_dir(tmp_path):
    """The fixture's files up to 15 and a 16 that takes ACCESS EXCLUSIVE on threat_models for an instant."""
    directory = copy_fixture(tmp_path, 15)
    (directory / "000016_watchdog_probe.up.sql").write_text(f"ALTER TABLE {TABLE} ADD COLUMN watchdog_probe int;\n")
    (directory / "000016_watchdog_probe.down.sql").write_text(f"ALTER TABLE {TABLE} DROP COLUMN watchdog_probe;\n")
    return directory


class Blocker:
    """A session holding a lock on the table (ACCESS SHARE: a read) in an open transaction, as a long application
    transaction does."""

    def __init__(self, db, mode="ACCESS SHARE"):
        self.conn = db.server.connect(db.name, autocommit=False)
        with self.conn.cursor() as cur:
            cur.execute("SET application_name = 'tmi-blocker'")
            cur.execute(f"LOCK TABLE {TABLE} IN {mode} MODE")
        self.pid = self.conn.get_backend_pid()

    def release(self):
        if not self.conn.closed:
            self.conn.commit()
            self.conn.close()

    def release_at_attempt(self, db, attempt, timeout=60.0):
        """Commit once the migration's ``attempt``-th lock wait shows (the earlier ones ended), from a thread."""
        def watch():
            seen = set()
            conn = db.server.connect(db.name)
            deadline = time.monotonic() + timeout
            try:
                with conn.cursor() as cur:
                    while len(seen) < attempt and time.monotonic() < deadline:
                        cur.execute("SELECT query_start FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                    "AND application_name = 'tmi.migration.pg_migrate'")
                        seen.update(row[0] for row in cur.fetchall())
                        time.sleep(0.02)
            finally:
                conn.close()
                self.release()
        thread = threading.Thread(target=watch, daemon=True)
        thread.start()
        return thread


class App(threading.Thread):
    """An application session ('tmi-app') reading the table in a loop; records its slowest query."""

    def __init__(self, db):
        super().__init__(daemon=True)
        self.conn = db.server.connect(db.name)
        with self.conn.cursor() as cur:
            cur.execute("SET application_name = 'tmi-app'")
        self.worst = 0.0
        self.count = 0
        self.errors = []
        self.stop = threading.Event()

    def run(self):
        with self.conn.cursor() as cur:
            while not self.stop.is_set():
                started = time.monotonic()
                try:
                    cur.execute(f"SELECT count(*) FROM {TABLE}")
                except psycopg2.Error as error:
                    self.errors.append(error)
                self.worst = max(self.worst, time.monotonic() - started)
                self.count += 1
                time.sleep(0.02)

    def finish(self):
        self.stop.set()
        self.join(30)
        self.conn.close()


def migration_waits(db, timeout=60.0):
    """Return once pg_migrate's session waits for a lock."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if db.scalar("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                     "AND application_name = 'tmi.migration.pg_migrate'"):
            return
        time.sleep(0.02)
    raise AssertionError("pg_migrate never waited for a lock")


def migrate(db, directory, **args):
    return start_module("pg_migrate", {"path": str(directory), "target_version": "16", **db.module_args(), **args})


@pytest.mark.serial  # bounds how long a session waited
def test_the_watchdog_cancels_early_retries_and_succeeds_once_the_blocker_commits(tmi_db, tmp_path):
    tmi_db.migrate(15)
    directory = alter_dir(tmp_path)
    blocker = Blocker(tmi_db)
    app = App(tmi_db)
    app.start()
    try:
        run = migrate(tmi_db, directory, lock_timeout="10s", lock_queue_timeout=0.5, lock_retries=6,
                      lock_retry_delay=0.2)
        timer = blocker.release_at_attempt(tmi_db, 3)  # after two cancelled attempts
        result = run.result()
        timer.join()
    finally:
        blocker.release()
        app.finish()
    assert not result.get("failed"), result
    applied = result["applied"][0]
    assert applied["attempts"] >= 3 and state(tmi_db) == [(16, False)]
    # The application waited about the bound each time, never the 10 s lock_timeout.
    assert app.worst < 1.5, app.worst
    assert app.count > 20 and not app.errors
    cancelled = [wait for wait in applied["lock_waits"] if wait["cancelled"]]
    assert len(cancelled) == applied["attempts"] - 1, applied["lock_waits"]
    assert [wait["attempt"] for wait in cancelled] == list(range(1, applied["attempts"]))
    for wait in cancelled:
        assert 0.4 < wait["waited_seconds"] < 1.5 and wait["queued"] >= 1 and wait["queued_seconds"] > 0.5, wait
        (named,) = wait["blockers"]
        assert (named["pid"], named["application_name"], named["backend_type"]) == (
            blocker.pid, "tmi-blocker", "client backend")
        assert named["state"] == "idle in transaction" and named["xact_age_seconds"] > 0
        assert "query" not in named and set(named) == {"pid", "application_name", "state", "xact_age_seconds",
                                                       "backend_type", "wait_event"}
    summary = applied["lock_wait_summary"]
    assert summary.startswith("waited ") and "(attempts 1-" in summary, summary
    assert f"behind pid {blocker.pid} (app 'tmi-blocker', transaction " in summary
    assert f"cancelled and retried {len(cancelled)} times" in summary


@pytest.mark.serial  # bounds how long a session waited
def test_without_queued_sessions_the_watchdog_does_not_cancel_and_lock_timeout_governs(tmi_db, tmp_path):
    tmi_db.migrate(15)
    directory = alter_dir(tmp_path)
    blocker = Blocker(tmi_db)
    try:
        run = migrate(tmi_db, directory, lock_timeout="1s", lock_queue_timeout=0.2, lock_retries=3,
                      lock_retry_delay=0.2)
        timer = blocker.release_at_attempt(tmi_db, 2)  # after one whole lock_timeout
        result = run.result()
        timer.join()
    finally:
        blocker.release()
    assert not result.get("failed"), result
    applied = result["applied"][0]
    assert applied["attempts"] == 2 and state(tmi_db) == [(16, False)]
    first = applied["lock_waits"][0]
    # The first attempt waited the whole lock_timeout: nobody queued behind it, so nothing was cancelled.
    assert (first["attempt"], first["cancelled"], first["queued"]) == (1, False, 0)
    assert 0.8 < first["waited_seconds"] < 1.5, first
    assert [b["pid"] for b in first["blockers"]] == [blocker.pid]
    assert not any(wait["cancelled"] for wait in applied["lock_waits"])


@pytest.mark.serial  # bounds how long a session waited
def test_when_retries_run_out_the_failure_names_the_blocker_and_nothing_changed(tmi_db, tmp_path):
    tmi_db.migrate(15)
    directory = alter_dir(tmp_path)
    before = schema_snapshot(tmi_db.conn)
    blocker = Blocker(tmi_db)
    app = App(tmi_db)
    app.start()
    try:
        result = migrate(tmi_db, directory, lock_timeout="10s", lock_queue_timeout=0.3, lock_retries=2,
                         lock_retry_delay=0.1).result()
    finally:
        app.finish()
        blocker.release()
    assert result["failed"]
    message = result["msg"]
    assert "after 3 attempts (3 of them cancelled by the watchdog" in message, message
    assert "Nothing was changed; the version stays 15" in message
    assert f"Blocked by pid {blocker.pid} (app 'tmi-blocker', transaction " in message
    assert f"SELECT pg_terminate_backend({blocker.pid})" in message
    assert app.worst < 1.3, app.worst
    failed = result["failed_migration"]
    assert (failed["version"], failed["title"]) == (16, "watchdog_probe")
    assert [(w["attempt"], w["cancelled"]) for w in failed["lock_waits"]] == [(1, True), (2, True), (3, True)]
    assert state(tmi_db) == [(15, False)] and result["dirty"] is False
    assert {item for item in schema_snapshot(tmi_db.conn) if "tmi_migration_history" not in item} == before


def test_lock_queue_timeout_0_switches_the_watchdog_off(tmi_db, tmp_path):
    tmi_db.migrate(15)
    directory = alter_dir(tmp_path)
    blocker = Blocker(tmi_db)
    app = App(tmi_db)
    app.start()
    try:
        result = migrate(tmi_db, directory, lock_timeout="1500ms", lock_queue_timeout=0, lock_retries=0).result()
        watchdogs = tmi_db.scalar("SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE '%watchdog%'")
    finally:
        app.finish()
        blocker.release()
    assert result["failed"] and "could not get its locks within lock_timeout after 1 attempts" in result["msg"]
    # The application session waited the whole lock_timeout behind the migration's request.
    assert app.worst > 1.3, app.worst
    assert result["failed_migration"]["lock_waits"] == [] and watchdogs == 0
    assert state(tmi_db) == [(15, False)]


def test_a_statement_timeout_during_a_lock_wait_is_not_retried_as_a_watchdog_cancel(tmi_db, tmp_path):
    tmi_db.migrate(15)
    directory = alter_dir(tmp_path)
    blocker = Blocker(tmi_db)
    app = App(tmi_db)
    app.start()
    try:
        # statement_timeout ends the lock wait (SQLSTATE 57014, as the watchdog's cancel) before the bound.
        result = migrate(tmi_db, directory, lock_timeout="10s", statement_timeout="700ms", lock_queue_timeout=3,
                         lock_retries=3, lock_retry_delay=0.1).result()
    finally:
        app.finish()
        blocker.release()
    assert result["failed"]
    assert "canceling statement due to statement timeout [SQLSTATE 57014]" in result["msg"], result["msg"]
    waits = result["failed_migration"]["lock_waits"]
    assert [(w["attempt"], w["cancelled"]) for w in waits] == [(1, False)], waits
    assert waits[0]["queued"] >= 1 and waits[0]["blockers"][0]["pid"] == blocker.pid
    # Not retried: the file failed as any statement_timeout fails it (golang-migrate's dirty state).
    assert state(tmi_db) == [(16, True)] and "marked dirty at version 16" in result["msg"]


def test_the_migrate_role_says_the_waits_and_records_them(pg_server, tmi_db, tmp_path):
    tmi_db.migrate(15)
    directory = alter_dir(tmp_path)
    result_file = tmp_path / "result.json"
    blocker = Blocker(tmi_db)
    app = App(tmi_db)
    app.start()
    timer = blocker.release_at_attempt(tmi_db, 2)
    try:
        played = run_playbook(ROLE_PLAYBOOK, ansible_env(pg_server, None, tmi_db.name), "-e",
                              f"result_file={result_file}", "-e", f"migrate_migrations_path={directory}",
                              "-e", "migrate_lock_timeout=10s", "-e", "migrate_lock_queue_timeout=0.5",
                              "-e", "migrate_lock_retry_delay=0.2")
        timer.join()
    finally:
        blocker.release()
        app.finish()
    assert played.returncode == 0, played.stdout
    shown = " ".join(played.stdout.split())
    assert "000016 watchdog_probe up: 1 statements in" in shown
    # The YAML callback doubles the quotes around the application's name.
    assert re.search(r"\(transaction, [2-9] attempts\); waited [0-9.]+ s.* \(attempts? 1[-)].* "
                     rf"behind pid {blocker.pid} \(app ''tmi-blocker'', transaction [0-9.]+ s old, idle in "
                     r"transaction\)", shown), shown
    assert "cancelled and retried" in shown
    record = json.loads(result_file.read_text())
    waits = record["applied"][0]["lock_waits"]
    assert waits and waits[0]["cancelled"] and waits[0]["blockers"][0]["application_name"] == "tmi-blocker"


def test_a_file_that_waits_for_nothing_reports_no_wait_and_the_watchdog_session_ends_with_the_run(tmi_db, tmp_path):
    tmi_db.migrate(15)
    result = migrate(tmi_db, alter_dir(tmp_path)).result()
    applied = result["applied"][0]
    assert not result.get("failed") and (applied["lock_waits"], applied["lock_wait_summary"]) == ([], "")
    # A backend leaves pg_stat_activity once its process has exited, a moment after the client closed it: a session
    # the module left open would still be there after the 5 s.
    deadline = time.monotonic() + 5
    while True:
        left = tmi_db.scalar("SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'tmi.migration%'")
        if left == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert left == 0


def test_an_online_build_is_cancelled_and_rebuilt_when_sessions_queue_behind_it(tmi_db, tmp_path):
    """CREATE INDEX CONCURRENTLY waits for SHARE UPDATE EXCLUSIVE behind a SHARE lock; a session asking for SHARE
    (another index build, say) queues behind that request."""
    tmi_db.migrate(15)
    directory = copy_fixture(tmp_path, 15)
    (directory / "000016_watchdog_index.up.sql").write_text(f"CREATE INDEX watchdog_idx ON {TABLE} (name);\n")
    (directory / "000016_watchdog_index.down.sql").write_text("DROP INDEX watchdog_idx;\n")
    blocker = Blocker(tmi_db, "SHARE")
    queued = tmi_db.server.connect(tmi_db.name, autocommit=False)

    def queue_behind():
        migration_waits(tmi_db)
        with queued.cursor() as cur:
            cur.execute("SET application_name = 'tmi-app'")
            cur.execute(f"LOCK TABLE {TABLE} IN SHARE MODE")  # waits behind the build's request, then holds
        queued.rollback()

    queuer = threading.Thread(target=queue_behind, daemon=True)
    try:
        run = migrate(tmi_db, directory, online_index_builds=True, lock_timeout="10s", lock_queue_timeout=0.3,
                      lock_retries=5, lock_retry_delay=0.1)
        release = blocker.release_at_attempt(tmi_db, 2)
        queuer.start()
        result = run.result()
        release.join()
        queuer.join()
    finally:
        blocker.release()
        queued.close()
    assert not result.get("failed"), result
    applied = result["applied"][0]
    assert applied["mode"] == "online" and applied["attempts"] >= 2 and state(tmi_db) == [(16, False)]
    first = applied["lock_waits"][0]
    assert (first["index"], first["attempt"], first["cancelled"]) == ("watchdog_idx", 1, True), applied["lock_waits"]
    assert first["blockers"][0]["pid"] == blocker.pid
    assert tmi_db.query("SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                        "WHERE c.relname = 'watchdog_idx'") == [(True,)]
    assert applied["lock_wait_summary"].startswith("index watchdog_idx waited ")


def test_a_file_run_statement_by_statement_is_watched_but_not_cancelled(tmi_db, tmp_path):
    """Its statements before the waiting one are applied already: a cancel would leave it dirty, as a lock timeout
    does, so only lock_timeout ends its wait."""
    tmi_db.migrate(15)
    directory = copy_fixture(tmp_path, 15)
    (directory / "000016_watchdog_mixed.up.sql").write_text(
        "CREATE INDEX CONCURRENTLY watchdog_mixed_idx ON users (name);\n"
        f"ALTER TABLE {TABLE} ADD COLUMN watchdog_probe int;\n")
    (directory / "000016_watchdog_mixed.down.sql").write_text(
        f"ALTER TABLE {TABLE} DROP COLUMN watchdog_probe;\nDROP INDEX watchdog_mixed_idx;\n")
    blocker = Blocker(tmi_db)
    app = App(tmi_db)
    app.start()
    try:
        result = migrate(tmi_db, directory, lock_timeout="1500ms", lock_queue_timeout=0.3, lock_retries=3).result()
    finally:
        app.finish()
        blocker.release()
    assert result["failed"] and "[SQLSTATE 55P03]" in result["msg"]
    (waited,) = result["failed_migration"]["lock_waits"]
    assert (waited["cancelled"], waited["queued"]) == (False, 1) and waited["waited_seconds"] > 1.3, waited
    assert app.worst > 1.3, app.worst
    assert state(tmi_db) == [(16, True)]
