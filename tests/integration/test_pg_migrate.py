"""tmi.migration.pg_migrate against a real PostgreSQL: the contract of issue 3."""

from __future__ import annotations

import shutil
import threading
import time

import psycopg2
import pytest
from ansible_collections.tmi.migration.plugins.module_utils import migrations as files
from ansible_collections.tmi.migration.plugins.module_utils.migrator import Migrator, Refused

from conftest import run_module, start_module
from tmi_testenv import fixture
from tmi_testenv.fixture import MIGRATIONS_DIR, golang_lock_id, schema_snapshot

INDEXES_16 = 13


def migrate(db, **args):
    return run_module("pg_migrate", {"path": str(MIGRATIONS_DIR), **db.module_args(), **args})


def state(db):
    return db.query("SELECT version, dirty FROM schema_migrations")


def app_schema(db) -> set[str]:
    """The schema without the module's own history table (which a real run creates)."""
    return {item for item in schema_snapshot(db.conn) if "tmi_migration_history" not in item}


def copy_fixture(tmp_path, upto: int):
    """A migrations dir with the fixture's files up to ``upto``, for tests that add their own files."""
    directory = tmp_path / "migrations"
    directory.mkdir()
    for path in MIGRATIONS_DIR.iterdir():
        if int(path.name.split("_", 1)[0]) <= upto:
            shutil.copy(path, directory / path.name)
    return directory


def test_0_to_17_to_15_to_17_with_idempotent_reruns(tmi_db):
    result = migrate(tmi_db, target_version="17")
    assert not result.get("failed"), result
    outcome = (result["changed"], result["version_before"], result["version_after"], result["dirty"])
    assert outcome == (True, 0, 17, False)
    assert [a["version"] for a in result["applied"]] == list(range(1, 18))
    assert result["applied"][15]["statements"] == INDEXES_16 and result["applied"][15]["duration"] >= 0
    assert state(tmi_db) == [(17, False)]
    at_17 = schema_snapshot(tmi_db.conn)
    assert "constraint metadata metadata_entity_key_unique UNIQUE (entity_type, entity_id, key)" in at_17

    again = migrate(tmi_db, target_version="latest")
    assert (again["changed"], again["applied"], again["version_after"]) == (False, [], 17)

    down = migrate(tmi_db, target_version="15", allow_down=True)
    assert [(a["version"], a["direction"]) for a in down["applied"]] == [(17, "down"), (16, "down")]
    assert state(tmi_db) == [(15, False)]
    assert not tmi_db.scalar("SELECT count(*) FROM pg_indexes WHERE indexname = 'idx_threats_threat_model_id_covering'")
    assert migrate(tmi_db, target_version="15", allow_down=True)["changed"] is False

    up = migrate(tmi_db, target_version="17")
    assert [a["version"] for a in up["applied"]] == [16, 17]
    assert schema_snapshot(tmi_db.conn) == at_17

    history = tmi_db.query("SELECT version, direction, mode FROM tmi_migration_history ORDER BY id")
    assert history[-4:] == [(17, "down", "transaction"), (16, "down", "transaction"), (16, "up", "transaction"),
                            (17, "up", "transaction")]


def test_check_mode_returns_the_plan_and_changes_nothing(tmi_db):
    tmi_db.migrate(15)
    before = schema_snapshot(tmi_db.conn)
    result = run_module("pg_migrate", {"path": str(MIGRATIONS_DIR), **tmi_db.module_args()}, check_mode=True)
    assert result["changed"] is True
    assert result["plan"] == [{"version": 16, "title": "add_performance_indexes", "direction": "up"},
                              {"version": 17, "title": "enhance_metadata", "direction": "up"}]
    assert result["applied"] == [] and result["version_after"] == 17
    assert schema_snapshot(tmi_db.conn) == before
    assert not tmi_db.scalar("SELECT to_regclass('tmi_migration_history') IS NOT NULL")


def test_status_is_read_only(tmi_db):
    tmi_db.migrate(16)
    before = schema_snapshot(tmi_db.conn)
    result = migrate(tmi_db, operation="status")
    assert (result["changed"], result["version_before"], result["dirty"]) == (False, 16, False)
    assert [step["version"] for step in result["plan"]] == [17]
    assert schema_snapshot(tmi_db.conn) == before


def test_golang_migrate_and_the_module_take_over_from_each_other(tmi_db):
    tmi_db.migrate(14)  # as golang-migrate left it
    assert migrate(tmi_db, target_version="16")["applied"][0]["version"] == 15
    assert state(tmi_db) == [(16, False)]
    assert tmi_db.migrate(17) == 17  # golang-migrate's rules read the module's state and go on
    assert migrate(tmi_db)["changed"] is False


def slow_migration_dir(tmp_path, seconds: float):
    directory = copy_fixture(tmp_path, 15)
    (directory / "000016_slow.up.sql").write_text(f"SELECT pg_sleep({seconds});\nCREATE TABLE slow_marker (id int);\n")
    (directory / "000016_slow.down.sql").write_text("DROP TABLE slow_marker;\n")
    return directory


def test_the_module_holds_golang_migrates_advisory_lock_while_it_runs(tmi_db, tmp_path):
    tmi_db.migrate(15)
    expected_id = golang_lock_id(tmi_db.name, "public", "schema_migrations")
    run = start_module("pg_migrate", {"path": str(slow_migration_dir(tmp_path, 2)), **tmi_db.module_args()})
    holders = []
    deadline = time.monotonic() + 10
    while not holders and time.monotonic() < deadline:
        holders = tmi_db.query(
            "SELECT a.application_name, l.classid::bigint * 4294967296 + l.objid::bigint FROM pg_locks l "
            "JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted")
        time.sleep(0.05)
    result = run.result()
    assert holders == [("tmi.migration.pg_migrate", expected_id)]
    assert result["lock_id"] == expected_id and result["version_after"] == 16


def test_a_golang_migrate_lock_makes_the_module_wait_then_fail_naming_the_holder(tmi_db, tmp_path):
    tmi_db.migrate(15)
    holder = tmi_db.server.connect(tmi_db.name)
    with holder.cursor() as cur:
        cur.execute("SET application_name = 'golang-migrate'")
        cur.execute("SELECT pg_advisory_lock(%s)", (golang_lock_id(tmi_db.name, "public", "schema_migrations"),))
    try:
        started = time.monotonic()
        result = migrate(tmi_db, lock_wait_timeout=1.5)
        assert time.monotonic() - started >= 1.5
        assert result["failed"]
        assert "Another migration holds the lock" in result["msg"]
        assert "application_name 'golang-migrate'" in result["msg"]
        assert result["lock_holder"]["pid"] == holder.get_backend_pid()
        assert state(tmi_db) == [(15, False)]
    finally:
        holder.close()


def wait_for_state(db, expected, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if state(db) == expected:
            return
        time.sleep(0.02)
    raise AssertionError(f"state never became {expected}")


def test_two_concurrent_runs_apply_each_migration_once(tmi_db, tmp_path):
    tmi_db.migrate(15)
    directory = slow_migration_dir(tmp_path, 1.5)
    args = {"path": str(directory), **tmi_db.module_args()}
    first = start_module("pg_migrate", args)
    # The second run starts while the first is mid-migration, its version marked dirty (golang-migrate's way).
    wait_for_state(tmi_db, [(16, True)])
    second = start_module("pg_migrate", args)
    results = [first.result(), second.result()]
    assert not any(r.get("failed") for r in results), results
    assert [len(r["applied"]) for r in results] == [1, 0]
    assert [r["changed"] for r in results] == [True, False]
    assert tmi_db.scalar("SELECT count(*) FROM tmi_migration_history WHERE version = 16") == 1
    assert state(tmi_db) == [(16, False)]


def test_check_mode_during_a_running_migration_says_so(tmi_db, tmp_path):
    tmi_db.migrate(15)
    args = {"path": str(slow_migration_dir(tmp_path, 1.5)), **tmi_db.module_args()}
    running = start_module("pg_migrate", args)
    wait_for_state(tmi_db, [(16, True)])
    check = run_module("pg_migrate", args, check_mode=True)
    assert running.result()["version_after"] == 16
    assert check["failed"] and "another migration is running right now" in check["msg"]
    assert "tmi.migration.pg_migrate" in check["msg"]


def test_a_failing_migration_leaves_it_dirty_without_partial_changes_and_force_recovers(tmi_db, tmp_path):
    directory = copy_fixture(tmp_path, 15)
    (directory / "000016_broken.up.sql").write_text(
        "CREATE TABLE half_done (id int);\n\nALTER TABLE threats\n    ADD COLUMN broken nosuchtype;\n")
    (directory / "000016_broken.down.sql").write_text("DROP TABLE half_done;\n")
    tmi_db.migrate(15)
    before = schema_snapshot(tmi_db.conn)
    result = run_module("pg_migrate", {"path": str(directory), **tmi_db.module_args()})
    assert result["failed"] and result["dirty"] is True and result["version_after"] == 16
    assert "000016_broken.up.sql failed at line 4" in result["msg"]
    assert 'type "nosuchtype" does not exist' in result["msg"]
    assert "Statement: ALTER TABLE threats" in result["msg"]
    assert "run operation=force with target_version=15" in result["msg"]
    assert state(tmi_db) == [(16, True)]
    assert not tmi_db.scalar("SELECT to_regclass('half_done') IS NOT NULL"), "the file rolled back as a whole"
    assert app_schema(tmi_db) - before == {"state 16 true"}

    refused = run_module("pg_migrate", {"path": str(directory), **tmi_db.module_args()})
    assert refused["failed"] and "dirty at version 16" in refused["msg"]
    assert "operation=force" in refused["msg"] and "playbooks/rollback.yml" in refused["msg"]

    forced = run_module("pg_migrate", {"path": str(directory), "operation": "force", "target_version": "15",
                                       **tmi_db.module_args()})
    assert forced["changed"] and state(tmi_db) == [(15, False)]
    assert app_schema(tmi_db) == before
    fixed = migrate(tmi_db)  # the real 16 and 17
    assert fixed["version_after"] == 17


def test_force_in_check_mode_and_idempotence(tmi_db):
    tmi_db.migrate(17)
    args = {"path": str(MIGRATIONS_DIR), "operation": "force", "target_version": "16", **tmi_db.module_args()}
    assert run_module("pg_migrate", args, check_mode=True)["changed"] is True
    assert state(tmi_db) == [(17, False)]
    assert run_module("pg_migrate", {**args, "target_version": "17"})["changed"] is False


def test_going_down_needs_allow_down(tmi_db):
    tmi_db.migrate(17)
    before = schema_snapshot(tmi_db.conn)
    result = migrate(tmi_db, target_version="15")
    assert result["failed"] and "below the database's version 17" in result["msg"] and "allow_down" in result["msg"]
    assert schema_snapshot(tmi_db.conn) == before


class LatencyProbe(threading.Thread):
    """Runs one statement in a loop on its own connection and records the slowest execution."""

    def __init__(self, server, dbname, statement):
        super().__init__(daemon=True)
        self.conn = server.connect(dbname)
        self.statement = statement
        self.worst = 0.0
        self.count = 0
        self.errors = []
        self.stop = threading.Event()

    def run(self):
        with self.conn.cursor() as cur:
            while not self.stop.is_set():
                started = time.monotonic()
                try:
                    cur.execute(self.statement)
                except psycopg2.Error as error:
                    self.errors.append(error)
                self.worst = max(self.worst, time.monotonic() - started)
                self.count += 1
                time.sleep(0.01)

    def finish(self):
        self.stop.set()
        self.join(10)
        self.conn.close()


@pytest.mark.serial
def test_lock_timeout_retries_without_stalling_other_sessions(tmi_db, tmp_path):
    tmi_db.migrate(16)
    fixture.generate(tmi_db.conn, 5)
    blocker = tmi_db.server.connect(tmi_db.name, autocommit=False)
    with blocker.cursor() as cur:
        cur.execute("SELECT count(*) FROM metadata")  # holds ACCESS SHARE until the transaction ends
    reader = LatencyProbe(tmi_db.server, tmi_db.name, "SELECT count(*) FROM metadata")
    reader.start()
    run = start_module("pg_migrate", {"path": str(MIGRATIONS_DIR), **tmi_db.module_args(), "lock_timeout": "200ms",
                                      "lock_retries": 6, "lock_retry_delay": 0.3})
    time.sleep(2.0)
    blocker.commit()  # the long transaction ends
    blocker.close()
    result = run.result()
    reader.finish()
    assert not result.get("failed"), result
    assert result["applied"][0]["attempts"] > 1
    assert state(tmi_db) == [(17, False)]
    # Readers queue behind the waiting ALTER TABLE for at most one lock_timeout, never for the blocker's 2 s.
    assert reader.worst < 0.6, reader.worst
    assert reader.count > 20 and not reader.errors


def test_lock_timeout_gives_up_cleanly_when_retries_run_out(tmi_db):
    tmi_db.migrate(16)
    before = schema_snapshot(tmi_db.conn)
    blocker = tmi_db.server.connect(tmi_db.name, autocommit=False)
    with blocker.cursor() as cur:
        cur.execute("SELECT count(*) FROM metadata")
    try:
        result = migrate(tmi_db, lock_timeout="100ms", lock_retries=2, lock_retry_delay=0.1)
    finally:
        blocker.close()
    assert result["failed"] and "could not get its locks within lock_timeout after 3 attempts" in result["msg"]
    assert "Nothing was changed; the version stays 16" in result["msg"]
    assert app_schema(tmi_db) == before
    assert state(tmi_db) == [(16, False)]


class Writer(LatencyProbe):
    def __init__(self, server, dbname):
        super().__init__(server, dbname, "")
        self.tm = None

    def run(self):
        with self.conn.cursor() as cur:
            cur.execute("SELECT id FROM threat_models LIMIT 1")
            self.tm = cur.fetchone()[0]
            while not self.stop.is_set():
                started = time.monotonic()
                try:
                    cur.execute("INSERT INTO threats (threat_model_id, name, severity) VALUES (%s, 'live', 'Low')",
                                (self.tm,))
                except psycopg2.Error as error:
                    self.errors.append(error)
                self.worst = max(self.worst, time.monotonic() - started)
                self.count += 1


@pytest.mark.serial
def test_online_index_builds_do_not_block_writers(tmi_db):
    tmi_db.migrate(15)
    fixture.generate(tmi_db.conn, 4000)  # 40k threats, 92k metadata: builds take measurable time
    writer = Writer(tmi_db.server, tmi_db.name)
    writer.start()
    time.sleep(0.3)
    result = migrate(tmi_db, target_version="16", online_index_builds=True)
    writer.finish()
    assert not result.get("failed"), result
    applied = result["applied"][0]
    assert applied["mode"] == "online"
    assert not writer.errors and writer.count > 100
    # A plain CREATE INDEX holds a SHARE lock for each build: writers would wait for whole builds.
    assert writer.worst < 0.25, (writer.worst, applied["duration"])
    assert writer.worst < applied["duration"] / 4, (writer.worst, applied["duration"])
    invalid = tmi_db.scalar("SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                            "WHERE c.relname LIKE 'idx_%%' AND NOT (i.indisvalid AND i.indisready)")
    assert invalid == 0
    assert tmi_db.scalar("SELECT count(*) FROM pg_indexes WHERE indexname IN ('idx_threats_threat_model_id_covering', "
                         "'idx_metadata_source_entity', 'idx_threat_model_access_performance')") == 3


def test_a_failed_online_build_is_cleaned_up_and_leaves_the_version(tmi_db, tmp_path):
    directory = copy_fixture(tmp_path, 15)
    (directory / "000016_indexes.up.sql").write_text(
        "CREATE INDEX IF NOT EXISTS idx_ok ON threats (name);\n"
        "CREATE UNIQUE INDEX IF NOT EXISTS idx_not_unique ON threats (threat_model_id);\n")
    (directory / "000016_indexes.down.sql").write_text("DROP INDEX idx_not_unique;\nDROP INDEX idx_ok;\n")
    tmi_db.migrate(15)
    fixture.generate(tmi_db.conn, 3)
    before = schema_snapshot(tmi_db.conn)
    result = run_module("pg_migrate", {"path": str(directory), "online_index_builds": True, **tmi_db.module_args()})
    assert result["failed"] and "could not create unique index" in result["msg"]
    assert "Nothing of it remains; the version stays 15" in result["msg"]
    assert app_schema(tmi_db) == before  # no INVALID leftover, idx_ok dropped again, state clean


def test_an_invalid_leftover_is_rebuilt(tmi_db):
    tmi_db.migrate(15)
    fixture.generate(tmi_db.conn, 3)
    # A leftover of an earlier failed concurrent build with the name 000016 uses.
    with tmi_db.conn.cursor() as cur:
        with pytest.raises(psycopg2.Error):
            cur.execute("CREATE UNIQUE INDEX CONCURRENTLY idx_threats_threat_model_id_created_at "
                        "ON threats (threat_model_id)")
    result = migrate(tmi_db, target_version="16", online_index_builds=True)
    assert not result.get("failed"), result
    assert tmi_db.query("SELECT i.indisvalid, pg_get_indexdef(i.indexrelid) FROM pg_index i "
                        "WHERE i.indexrelid = 'idx_threats_threat_model_id_created_at'::regclass") == [
        (True, "CREATE INDEX idx_threats_threat_model_id_created_at ON public.threats USING btree "
               "(threat_model_id, created_at DESC)")]


def test_an_edited_applied_file_is_reported(tmi_db, tmp_path):
    directory = copy_fixture(tmp_path, 17)
    run_module("pg_migrate", {"path": str(directory), **tmi_db.module_args()})
    path = directory / "000012_add_threat_fields.up.sql"
    path.write_text(path.read_text() + "\n-- edited after it was applied\n")
    result = run_module("pg_migrate", {"path": str(directory), **tmi_db.module_args()})
    assert result["changed"] is False
    assert [e["version"] for e in result["edited_files"]] == [12]
    warnings = str(result["warnings"])  # ansible-core 2.19 returns structured warning events
    assert "Migration 12" in warnings and "changed since it was applied" in warnings
    quiet = run_module("pg_migrate", {"path": str(directory), "history_table": "", **tmi_db.module_args()})
    assert quiet["edited_files"] == []


@pytest.mark.parametrize("case, expected", [
    ("missing_dir", "does not exist or is not a directory"),
    ("bad_name", "does not follow golang-migrate's naming"),
    ("duplicate", "Duplicate up migration for version 16"),
    ("no_such_target", "target_version 40 has no migration file"),
    ("gap", "Migration 000016 is missing: versions jump from 15 to 17"),
    ("no_down", "Version 17 has no down file"),
    ("bad_sql", "does not parse as PostgreSQL SQL"),
    ("bad_target", "'latest' or a whole number"),
    ("not_text", "is not valid UTF-8 text"),
])
def test_bad_inputs_fail_before_touching_the_database(tmi_db, tmp_path, case, expected):
    tmi_db.migrate(15)
    directory = copy_fixture(tmp_path, 17)
    args = {"path": str(directory), **tmi_db.module_args()}
    if case == "missing_dir":
        args["path"] = str(tmp_path / "nope")
    elif case == "bad_name":
        (directory / "16-extra.up.sql").write_text("SELECT 1;")
    elif case == "duplicate":
        (directory / "016_again.up.sql").write_text("SELECT 1;")
    elif case == "no_such_target":
        args["target_version"] = "40"
    elif case == "gap":
        for path in directory.glob("000016_*"):
            path.unlink()
    elif case == "no_down":
        tmi_db.migrate(17)
        (directory / "000017_enhance_metadata.down.sql").unlink()
        args.update(target_version="15", allow_down=True)
    elif case == "bad_sql":
        (directory / "000017_enhance_metadata.up.sql").write_text("ALTER TABLE metadata ADD CONSTRAINT;")
    elif case == "bad_target":
        args["target_version"] = "v17"
    elif case == "not_text":
        (directory / "000016_add_performance_indexes.up.sql").write_bytes(b"CREATE INDEX \xff ON threats (name);")
    before = schema_snapshot(tmi_db.conn)
    result = run_module("pg_migrate", args)
    assert result["failed"], result
    assert expected in result["msg"]
    assert schema_snapshot(tmi_db.conn) == before


def test_status_and_check_mode_say_what_each_file_does_with_the_catalog(tmi_db, tmp_path):
    tmi_db.migrate(15)
    directory = copy_fixture(tmp_path, 17)
    (directory / "000018_purge.up.sql").write_text("DELETE FROM threat_models WHERE name = 'gone';\n"
                                                   "SELECT tmi_test_fn();\n")
    (directory / "000018_purge.down.sql").write_text("SELECT 1;\n")
    tmi_db.query("CREATE FUNCTION tmi_test_fn() RETURNS int LANGUAGE sql AS 'SELECT 1'")
    check = run_module("pg_migrate", {"path": str(directory), **tmi_db.module_args()}, check_mode=True)
    for result in (migrate(tmi_db, path=str(directory), operation="status"), check):
        tables = result["analysis"]["tables"]
        assert tables["public.metadata"]["changed"] == ["key"]
        assert tables["public.threat_models"]["does"] == ["delete"]
        # Read from the catalog: threats references threat_models ON DELETE CASCADE, diagrams' SET NULL from threats.
        assert any(b.get("cascade_from") == "public.threat_models" for b in tables["public.threats"]["by"])
        assert "delete" in tables["public.threats"]["does"] and "write" in tables["public.threats"]["does"]
        assert [(u["version"], u["line"]) for u in result["analysis"]["unknown"]] == [(18, 2)]
        assert "tmi_test_fn" in result["analysis"]["unknown"][0]["reason"]
        assert result["analysis"]["missing"] == []
    assert state(tmi_db) == [(15, False)]


def test_a_plan_whose_files_act_on_missing_tables_is_refused_before_anything_changes(tmi_db):
    tmi_db.migrate(15)
    tmi_db.query("ALTER TABLE sources RENAME TO sources_old")
    before = app_schema(tmi_db)
    status = migrate(tmi_db, operation="status")
    assert status["analysis"]["missing"] == ["public.sources"]
    result = migrate(tmi_db, target_version="17")
    assert result["failed"] and "act on public.sources, which does not exist" in result["msg"]
    assert "Nothing was changed" in result["msg"]
    assert state(tmi_db) == [(15, False)] and app_schema(tmi_db) == before


def test_the_migrator_runs_without_ansible_and_refuses_what_the_module_refuses(tmi_db):
    """Migrator takes a connection, the options and a warn function: the module is only its arguments."""
    tmi_db.migrate(15)
    migrations = files.read_migrations(str(MIGRATIONS_DIR))
    warnings = []

    def migrator(**options):
        conn = tmi_db.server.connect(tmi_db.name)
        return conn, Migrator(conn, options, warnings.append)

    conn, status = migrator(operation="status")
    try:
        result = status.run(migrations, 17, 17)
    finally:
        conn.close()
    plan = [step["version"] for step in result["plan"]]
    assert (result["changed"], result["version_before"], plan) == (False, 15, [16, 17])
    assert "public.metadata" in result["analysis"]["tables"] and state(tmi_db) == [(15, False)]

    conn, up = migrator(online_index_builds=True)
    try:
        result = up.run(migrations, 16, 17)
    finally:
        up.release_lock()
        conn.close()
    assert (result["changed"], result["version_after"], result["dirty"]) == (True, 16, False)
    assert [(a["version"], a["mode"], a["statements"]) for a in result["applied"]] == [(16, "online", INDEXES_16)]
    assert state(tmi_db) == [(16, False)]
    assert tmi_db.query("SELECT version, mode FROM tmi_migration_history") == [(16, "online")]

    conn, down = migrator()
    try:
        with pytest.raises(Refused) as refused:
            down.run(migrations, 15, 17)
    finally:
        down.release_lock()
        conn.close()
    assert "target_version 15 is below the database's version 16" in str(refused.value)
    assert refused.value.details["version_before"] == 16 and refused.value.details["applied"] == []
    assert state(tmi_db) == [(16, False)] and warnings == []
