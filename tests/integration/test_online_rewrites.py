"""Online-equivalent rewrites against real servers: proven on the rehearsal copy, used in production, recovered.

The rehearsal (pg_rehearse online_rewrites) runs each up file as written, its down file, then the rewritten steps
(module_utils/rewrite.py) and compares the normalised catalogs; pg_migrate runs a file rewritten only when its
version and checksum are among the proven ones. What the tests show: each rewrite proven equal and used, the
validations observed under SHARE UPDATE EXCLUSIVE (in the rehearsal's pg_locks observations and by sampling
production's pg_locks), a rewrite that would end elsewhere running as written and saying why, a file edited after
the rehearsal running as written, and a failure between the steps recovered by rollback.yml with nothing lost.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import pytest
from ansible_collections.tmi.migration.plugins.module_utils import migrations as files
from ansible_collections.tmi.migration.plugins.module_utils import rehearsal as rehearsal_utils
from test_lock_watchdog import App, Blocker
from test_pg_migrate import copy_fixture

from conftest import Database, run_module, start_module
from tmi_testenv import fixture

SUE, AE = "SHARE UPDATE EXCLUSIVE", "ACCESS EXCLUSIVE"


def backup_and_copy(db, tmp_path, run_id="r1"):
    """A verified backup of ``db`` and its kept scratch copy: (backup directory, scratch database)."""
    (tmp_path / "backups").mkdir(exist_ok=True)
    backup = run_module("pg_backup", {"dest": str(tmp_path / "backups"), "pg_bin_dir": str(db.server.client_bindir),
                                      "run_id": run_id, **db.module_args()})
    assert not backup.get("failed"), backup.get("msg")
    scratch = f"{db.name}_verify_{run_id}"
    restored = run_module("pg_restore_backup", {"backup": str(Path(backup["manifest"]).parent), "target_db": scratch,
                                                "scratch": True, "pg_bin_dir": str(db.server.client_bindir),
                                                **db.module_args(), "login_db": "postgres"})
    assert restored.get("verified"), restored.get("msg")
    return str(Path(backup["manifest"]).parent), scratch


def rehearse(db, backup, scratch, path=fixture.MIGRATIONS_DIR, **extra):
    return run_module("pg_rehearse", {"path": str(path), "target_db": scratch, "backup": backup,
                                      "online_index_builds": True, **db.module_args(), "login_db": "postgres",
                                      **extra})


def migrate(db, path=fixture.MIGRATIONS_DIR, **extra):
    return run_module("pg_migrate", {"path": str(path), "online_index_builds": True, **db.module_args(), **extra})


def proven(result):
    """What the playbooks pass to pg_migrate's rewrites from a rehearsal's result."""
    return [dict(version=item["version"], sha256=item["sha256"]) for item in result["rewrites"] if item["proven"]]


def catalog(db):
    return rehearsal_utils.catalog(db.query, ("public.schema_migrations", "public.tmi_migration_history",
                                              "public.tmi_migration_lock"))


def with_extra(tmp_path, files: dict[str, str]) -> Path:
    """A copy of the fixture's migrations with extra files (name -> SQL)."""
    target = tmp_path / "migrations"
    shutil.copytree(fixture.MIGRATIONS_DIR, target)
    for name, text in files.items():
        (target / name).write_text(text)
    return target


class LockSampler:
    """Samples, from another session, the table locks pg_migrate's session holds on a table while it runs each
    statement: {statement: set of pg_locks modes}."""

    SQL = ("SELECT a.query, l.mode FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
           "JOIN pg_class c ON c.oid = l.relation WHERE a.application_name = 'tmi.migration.pg_migrate' "
           "AND a.state = 'active' AND l.granted AND c.relname = %s")

    def __init__(self, db, table):
        self.conn = db.server.connect(db.name)
        self.conn.autocommit = True
        self.table = table
        self.seen: dict[str, set[str]] = {}
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)

    def loop(self):
        with self.conn.cursor() as cur:
            while not self.stopping.is_set():
                cur.execute(self.SQL, (self.table,))
                for query, mode in cur.fetchall():
                    self.seen.setdefault(" ".join(query.split()), set()).add(mode)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        self.thread.join()
        self.conn.close()


@pytest.fixture
def production(tmi_db, tmp_path):
    """Production at version 15 with data, its backup and the verified scratch copy to rehearse on."""
    tmi_db.migrate(15)
    fixture.generate(tmi_db.conn, 60, seed=7)
    backup, scratch = backup_and_copy(tmi_db, tmp_path)
    return tmi_db, backup, scratch


def test_000017_rewrite_is_proven_on_the_copy_and_used_in_production_validating_under_share_update_exclusive(
        production, pg_server):
    db, backup, scratch = production
    result = rehearse(db, backup, scratch)
    assert not result.get("failed"), result.get("msg")
    assert result["up_ok"] and result["reversible"], result.get("down_error")
    outcomes = [(item["version"], item["proven"]) for item in result["rewrites"]]
    assert outcomes == [(17, True)], result["rewrites"][0].get("reason")
    rewrite = result["rewrites"][0]
    assert [step["kind"] for step in rewrite["steps"]] == ["file"] + ["validate"] * 4 + [
        "build_index", "attach_constraint", "build_index", "build_index"]
    enhance = result["up"][1]
    assert enhance["mode"] == "rewritten" and enhance["rewrite"]["proven"]
    # The rehearsal goes on with what production will see: the validations and builds took SHARE UPDATE EXCLUSIVE
    # on metadata only, never ACCESS EXCLUSIVE; the file as written held ACCESS EXCLUSIVE while validating.
    validations = [s for s in enhance["statements"] if "VALIDATE CONSTRAINT" in s["statement"]]
    assert len(validations) == 4
    assert all(s["taken"] == {"public.metadata": SUE} for s in validations), validations
    builds = [s for s in enhance["statements"] if "CONCURRENTLY" in s["statement"]]
    assert len(builds) == 3 and all(s["taken"] == {"public.metadata": SUE} for s in builds), builds
    as_written = enhance["as_written"]
    checks = next(s for s in as_written["statements"] if "metadata_entity_key_unique" in s["statement"])
    assert checks["taken"] == {} and checks["locks"]["public.metadata"] == AE  # held since the type change
    assert any("rewritten online: 9 steps" in line for line in result["lines"]), result["lines"]

    # Production, given the proven rewrite: the same catalog as a database migrated as written.
    applied = migrate(db, rewrites=proven(result))
    assert not applied.get("failed"), applied.get("msg")
    assert (applied["version_after"], applied["dirty"]) == (17, False)
    entry = applied["applied"][1]
    assert entry["mode"] == "rewritten" and [s["status"] for s in entry["steps"]] == ["committed"] * 9
    history = db.query("SELECT mode, steps IS NOT NULL FROM tmi_migration_history WHERE version = 17")
    assert history == [("rewritten", True)]
    reference = Database(pg_server, f"{db.name}_ref")
    try:
        reference.migrate(17)  # as golang-migrate runs it: each file as written
        assert catalog(db) == catalog(reference)
    finally:
        reference.drop()


# Every kind of rewrite in one file; the CHECK sleeps a millisecond a row, so that sampling production's pg_locks
# catches its validation.
EVERY_KIND_UP = """-- Every online rewrite in one file.
ALTER TABLE threats ADD COLUMN review_note TEXT;
ALTER TABLE threats ADD CONSTRAINT threats_name_slow_check
    CHECK (length(pg_sleep(0.001)::text) = 0 AND LENGTH(TRIM(name)) > 0);
ALTER TABLE documents ADD CONSTRAINT documents_threat_model_fk
    FOREIGN KEY (threat_model_id) REFERENCES threat_models (id) ON DELETE CASCADE;
ALTER TABLE threats ALTER COLUMN description SET NOT NULL;
ALTER TABLE sources ADD CONSTRAINT sources_id_url_unique UNIQUE (id, url);
CREATE INDEX threats_review_idx ON threats (threat_model_id, review_note);
"""
EVERY_KIND_DOWN = """DROP INDEX IF EXISTS threats_review_idx;
ALTER TABLE sources DROP CONSTRAINT IF EXISTS sources_id_url_unique;
ALTER TABLE threats ALTER COLUMN description DROP NOT NULL;
ALTER TABLE documents DROP CONSTRAINT IF EXISTS documents_threat_model_fk;
ALTER TABLE threats DROP CONSTRAINT IF EXISTS threats_name_slow_check;
ALTER TABLE threats DROP COLUMN IF EXISTS review_note;
"""


def test_every_kind_of_rewrite_is_proven_and_production_validates_without_access_exclusive(
        production, pg_server, tmp_path):
    db, backup, scratch = production
    path = with_extra(tmp_path, {"000018_every_rewrite.up.sql": EVERY_KIND_UP,
                                 "000018_every_rewrite.down.sql": EVERY_KIND_DOWN})
    result = rehearse(db, backup, scratch, path)
    assert not result.get("failed"), result.get("msg")
    by_version = {item["version"]: item for item in result["rewrites"]}
    assert by_version[18]["proven"], by_version[18].get("reason")
    assert [(step["kind"], step["object"]) for step in by_version[18]["steps"]] == [
        ("file", None), ("validate", "threats_name_slow_check"), ("validate", "documents_threat_model_fk"),
        ("validate", "threats_description_not_null_helper"), ("set_not_null", "description"),
        ("drop_helper", "threats_description_not_null_helper"), ("build_index", "sources_id_url_unique"),
        ("attach_constraint", "sources_id_url_unique"), ("build_index", "threats_review_idx")]
    observed = {s["statement"]: s["taken"] for s in result["up"][-1]["statements"]}
    assert observed["ALTER TABLE documents VALIDATE CONSTRAINT documents_threat_model_fk"] == {
        "public.documents": SUE, "public.threat_models": "ROW SHARE"}
    assert observed["ALTER TABLE threats VALIDATE CONSTRAINT threats_name_slow_check"] == {"public.threats": SUE}

    with LockSampler(db, "threats") as sampler:
        applied = migrate(db, path, rewrites=proven(result))
    assert not applied.get("failed"), applied.get("msg")
    assert [entry["mode"] for entry in applied["applied"]] == ["online", "rewritten", "rewritten"]
    seen = {query: modes for query, modes in sampler.seen.items() if "VALIDATE CONSTRAINT threats_name" in query}
    assert seen, f"the validation was not sampled: {sorted(sampler.seen)}"
    assert set().union(*seen.values()) == {"ShareUpdateExclusiveLock"}, seen
    # The same check fails where the lock is ACCESS EXCLUSIVE: the file as written, sampled the same way.
    reference = Database(pg_server, f"{db.name}_ref")
    try:
        reference.migrate(17)
        fixture.generate(reference.conn, 60, seed=7)
        with LockSampler(reference, "threats") as as_written:
            plain = migrate(reference, path)
        assert not plain.get("failed"), plain.get("msg")
        assert plain["applied"][0]["mode"] == "transaction"
        modes = set().union(*[m for q, m in as_written.seen.items() if "threats_name_slow_check" in q])
        assert "AccessExclusiveLock" in modes, as_written.seen
        assert catalog(db) == catalog(reference)
    finally:
        reference.drop()


def test_a_failure_between_the_steps_is_recovered_by_rollback_yml_with_its_down_file_keeping_later_writes(
        environment):
    """A row that breaks one of 000017's CHECKs arrives after the rehearsal (here: the rehearsal and the pre-flight's
    profile are off, so neither sees it). As written, 000017 would fail whole; rewritten, its file step commits
    (NOT VALID does not check old rows), the validation fails and the version stays dirty. The application writes on;
    rollback.yml recognises the interrupted rewrite and runs the down file - no backup restore, no write lost."""
    db = environment.db
    before = environment.state()
    threat = db.scalar("SELECT id::text FROM threats LIMIT 1")
    db.query("INSERT INTO metadata (entity_type, entity_id, key, value) VALUES ('threat', %s, 'bad key!', 'x')",
             (threat,))
    sha = files.file_sha256(str(fixture.MIGRATIONS_DIR / "000017_enhance_metadata.up.sql"))
    extra = {"tmi_rehearse": False, "validate_profile": "", "tmi_auto_rollback": False,
             "migrate_rewrites": [{"version": 17, "sha256": sha}]}
    failed = environment.playbook("migrate.yml", "-e", json.dumps(extra))
    assert failed.returncode != 0
    message = " ".join(failed.stdout.split())
    assert "stopped between its steps: step 3 (ALTER TABLE metadata VALIDATE CONSTRAINT metadata_key_format_check) " \
           "failed" in message, failed.stdout[-4000:]
    assert "Steps 1, 2 committed" in message and "playbooks/rollback.yml" in message
    assert db.query("SELECT version, dirty FROM schema_migrations") == [(17, True)]
    assert db.query("SELECT mode FROM tmi_migration_history WHERE version = 17") == [("rewrite-interrupted",)]
    # The step that committed is there: the CHECKs, NOT VALID, and the new key type.
    assert db.scalar("SELECT count(*) FROM pg_constraint WHERE conrelid = 'metadata'::regclass AND contype = 'c' "
                     "AND NOT convalidated") == 3

    # The application writes on after the failure.
    db.query("INSERT INTO metadata (entity_type, entity_id, key, value) SELECT 'threat', id, 'after_failure', 'kept' "
             "FROM threats")
    written = db.scalar("SELECT count(*) FROM metadata WHERE key = 'after_failure'")
    assert written > 0

    rolled = environment.playbook("rollback.yml")
    assert rolled.returncode == 0, rolled.stdout[-4000:]
    record = environment.records("rollback")[-1]["rollback"]
    assert record["mode"] == "planned" and record["succeeded"] is True, record
    assert record["interrupted_rewrite"]["version"] == 17 and record["interrupted_rewrite"]["committed"] == [1, 2]
    assert db.query("SELECT version, dirty FROM schema_migrations") == [(15, False)]
    assert db.scalar("SELECT count(*) FROM metadata WHERE key = 'after_failure'") == written
    assert db.scalar("SELECT count(*) FROM metadata WHERE key = 'bad key!'") == 1
    after = environment.state()
    # Everything but metadata (which got the rows above) is as before; the schema is back at 15 (as 000017's down
    # file leaves it).
    assert {k: v for k, v in after["figures"].items() if k != "public.metadata"} == \
        {k: v for k, v in before["figures"].items() if k != "public.metadata"}
    assert after["figures"]["public.metadata"]["rows"] == before["figures"]["public.metadata"]["rows"] + 1 + written
    assert after["maintenance"] == before["maintenance"]


# The scratch copy gets an event trigger that creates a table when the unique index of 000018 is built by a CREATE
# INDEX statement: the rewritten steps (CREATE UNIQUE INDEX CONCURRENTLY) end in another catalog than the file as
# written (ALTER TABLE ... ADD CONSTRAINT UNIQUE), a difference injected into the proof.
MARKER = """
CREATE FUNCTION mark_unique_build() RETURNS event_trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_event_trigger_ddl_commands() WHERE object_identity = 'public.sources_id_url_unique')
    THEN
        CREATE TABLE IF NOT EXISTS rewrite_marker (id int);
    END IF;
END $$;
CREATE EVENT TRIGGER mark_unique_build ON ddl_command_end WHEN TAG IN ('CREATE INDEX')
    EXECUTE FUNCTION mark_unique_build();
"""
UNIQUE_UP = """ALTER TABLE threats ADD COLUMN review_note TEXT;
ALTER TABLE sources ADD CONSTRAINT sources_id_url_unique UNIQUE (id, url);
"""
UNIQUE_DOWN = """ALTER TABLE sources DROP CONSTRAINT IF EXISTS sources_id_url_unique;
ALTER TABLE threats DROP COLUMN IF EXISTS review_note;
"""


def test_a_rewrite_ending_in_another_catalog_is_not_proven_and_the_file_runs_as_written(
        production, pg_server, tmp_path):
    db, backup, scratch = production
    copy = pg_server.connect(scratch)
    with copy.cursor() as cur:
        cur.execute(MARKER)
    copy.close()
    path = with_extra(tmp_path, {"000018_unique.up.sql": UNIQUE_UP, "000018_unique.down.sql": UNIQUE_DOWN})
    result = rehearse(db, backup, scratch, path)
    assert not result.get("failed"), result.get("msg")
    by_version = {item["version"]: item for item in result["rewrites"]}
    assert by_version[17]["proven"] and not by_version[18]["proven"]
    reason = by_version[18]["reason"]
    assert reason.startswith("the rewritten steps end in another catalog than the file as written: ")
    assert "relation public.rewrite_marker is new" in reason
    entry = result["up"][-1]
    assert entry["mode"] == "transaction"
    assert entry["rewrite"] == dict(proven=False, reason=reason, steps=by_version[18]["steps"])
    # The copy went back to the file as written (its down file, then the file again): the rest is rehearsed on it.
    assert entry["ok"] and result["up_ok"] and result["down_ok"]
    line = next(text for text in result["lines"] if text.startswith("000018"))
    assert "runs as written: the rewritten steps end in another catalog" in line

    applied = migrate(db, path, rewrites=proven(result))
    assert not applied.get("failed"), applied.get("msg")
    assert [(e["version"], e["mode"]) for e in applied["applied"]] == [(16, "online"), (17, "rewritten"),
                                                                       (18, "transaction")]


def test_a_file_changed_after_the_rehearsal_runs_as_written(tmi_db, tmp_path):
    tmi_db.migrate(15)
    fixture.generate(tmi_db.conn, 5, seed=3)
    rehearsed = files.file_sha256(str(fixture.MIGRATIONS_DIR / "000017_enhance_metadata.up.sql"))
    path = with_extra(tmp_path, {})
    up = path / "000017_enhance_metadata.up.sql"
    up.write_text(up.read_text() + "\n-- edited after the rehearsal\n")
    applied = migrate(tmi_db, path, rewrites=[{"version": 17, "sha256": rehearsed}])
    assert not applied.get("failed"), applied.get("msg")
    assert [(e["version"], e["mode"]) for e in applied["applied"]] == [(16, "online"), (17, "transaction")]
    warnings = str(applied["warnings"])  # ansible-core 2.19 returns structured warning events
    assert "Migration 000017 enhance_metadata changed since the rehearsal proved its rewrite" in warnings
    assert "it runs as written" in warnings
    assert tmi_db.query("SELECT mode FROM tmi_migration_history WHERE version = 17") == [("transaction",)]


def test_a_failed_validation_leaves_the_version_dirty_with_the_steps_recorded_and_migrate_refuses_until_recovered(
        tmi_db):
    tmi_db.migrate(15)
    fixture.generate(tmi_db.conn, 5, seed=3)
    threat = tmi_db.scalar("SELECT id::text FROM threats LIMIT 1")
    tmi_db.query("INSERT INTO metadata (entity_type, entity_id, key, value) VALUES ('threat', %s, 'bad key!', 'x')",
                 (threat,))
    rewrites = [{"version": 17, "sha256": files.file_sha256(str(fixture.MIGRATIONS_DIR /
                                                                "000017_enhance_metadata.up.sql"))}]
    failed = migrate(tmi_db, rewrites=rewrites)
    assert failed["failed"] and (failed["version_after"], failed["dirty"]) == (17, True)
    assert "step 3 (ALTER TABLE metadata VALIDATE CONSTRAINT metadata_key_format_check) failed: check constraint " \
           "\"metadata_key_format_check\" of relation \"metadata\" is violated by some row [SQLSTATE 23514]" \
           in failed["msg"]
    assert "Steps 1, 2 committed" in failed["msg"] and "steps 4, 5, 6, 7, 8, 9 did not run" in failed["msg"]
    interrupted = failed["interrupted_rewrite"]
    assert interrupted["committed"] == [1, 2] and interrupted["failed"] == [3]
    assert interrupted["mode"] == "rewrite-interrupted"

    # A dirty version from a failed file as written says nothing of steps; this one names them, and refuses to move.
    status = migrate(tmi_db, operation="status")
    assert status["interrupted_rewrite"] == interrupted
    catalog_before = catalog(tmi_db)
    again = migrate(tmi_db, rewrites=rewrites)
    assert again["failed"] and again["msg"].startswith(
        "The database is dirty at version 17 because migration 000017 enhance_metadata ran rewritten for online use "
        "and did not finish: steps 1, 2 committed, step 3 failed")
    assert "run playbooks/rollback.yml" in again["msg"] and "operation=force with target_version=17" in again["msg"]
    assert catalog(tmi_db) == catalog_before and tmi_db.query("SELECT version, dirty FROM schema_migrations") == [
        (17, True)]

    # The history row keeps the error's main message and SQLSTATE, not the server's detail with the row's values.
    row = json.loads(tmi_db.scalar("SELECT steps FROM tmi_migration_history WHERE version = 17"))
    assert row[2]["error"] == ("check constraint \"metadata_key_format_check\" of relation \"metadata\" is violated by "
                               "some row [SQLSTATE 23514]")
    assert "Failing row" not in json.dumps(row) and "bad key!" not in json.dumps(row)

    # The recovery the rollback role runs: record 17 (recover_rewrite: nothing of 000017's is left here that its
    # down file does not know), then its down file.
    forced = migrate(tmi_db, operation="force", target_version="17", recover_rewrite=True)
    assert not forced.get("failed"), forced.get("msg")
    assert forced["recovered"] == []
    down = migrate(tmi_db, target_version="15", allow_down=True)
    assert not down.get("failed"), down.get("msg")
    assert tmi_db.query("SELECT version, dirty FROM schema_migrations") == [(15, False)]
    assert tmi_db.scalar("SELECT count(*) FROM metadata WHERE key = 'bad key!'") == 1


def test_a_lock_timeout_in_a_later_step_retries_that_step_only(tmi_db, tmp_path):
    """The deferred index build on sources waits behind a session holding sources; the file's step (on threats)
    committed once and is not run again while the build retries."""
    tmi_db.migrate(17)
    fixture.generate(tmi_db.conn, 5, seed=3)
    up = "ALTER TABLE threats ADD COLUMN review_note TEXT;\nCREATE INDEX sources_url_idx ON sources (url);\n"
    path = with_extra(tmp_path, {"000018_two_tables.up.sql": up,
                                 "000018_two_tables.down.sql": "DROP INDEX IF EXISTS sources_url_idx;\n"
                                                               "ALTER TABLE threats DROP COLUMN review_note;\n"})
    blocker = tmi_db.server.connect(tmi_db.name, autocommit=False)
    with blocker.cursor() as cur:
        cur.execute("LOCK TABLE sources IN SHARE UPDATE EXCLUSIVE MODE")
    sha = files.file_sha256(str(path / "000018_two_tables.up.sql"))
    run = start_module("pg_migrate", {"path": str(path), **tmi_db.module_args(), "lock_timeout": "200ms",
                                      "lock_retries": 6, "lock_retry_delay": 0.3,
                                      "rewrites": [{"version": 18, "sha256": sha}]})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not tmi_db.query(
            "SELECT 1 FROM information_schema.columns WHERE table_name = 'threats' AND column_name = 'review_note'"):
        time.sleep(0.05)
    time.sleep(0.5)  # the build waits behind the blocker and times out at least once
    blocker.rollback()
    blocker.close()
    result = run.result()
    assert not result.get("failed"), result.get("msg")
    steps = result["applied"][0]["steps"]
    assert [(s["kind"], s["status"]) for s in steps] == [("file", "committed"), ("build_index", "committed")]
    assert steps[0]["attempts"] == 1 and steps[1]["attempts"] > 1
    assert tmi_db.query("SELECT version, dirty FROM schema_migrations") == [(18, False)]
    assert tmi_db.scalar("SELECT indisvalid FROM pg_index WHERE indexrelid = 'sources_url_idx'::regclass") is True


TWO_TABLES_UNIQUE_UP = """ALTER TABLE threats ADD COLUMN review_note TEXT;
ALTER TABLE sources ADD CONSTRAINT sources_id_url_unique UNIQUE (id, url);
"""
TWO_TABLES_UNIQUE_DOWN = """ALTER TABLE sources DROP CONSTRAINT IF EXISTS sources_id_url_unique;
ALTER TABLE threats DROP COLUMN IF EXISTS review_note;
"""


def test_a_failed_attach_leaves_its_unique_index_to_the_recovery_which_drops_it_before_the_down_file(
        tmi_db, tmp_path):
    """The attach of a unique index (ACCESS EXCLUSIVE) waits behind a session reading sources until the retries run
    out. The cleanup after the failure runs under lock_timeout, so it does not queue behind that session (with no
    lock_timeout the module would hang here, and every query on sources behind it): it says the index is left to the
    recovery. force with recover_rewrite drops the index - the down file, which drops the constraint, would not - and
    the down file brings the catalog back to 17."""
    tmi_db.migrate(17)
    fixture.generate(tmi_db.conn, 5, seed=3)
    catalog_17 = catalog(tmi_db)
    path = with_extra(tmp_path, {"000018_unique_source.up.sql": TWO_TABLES_UNIQUE_UP,
                                 "000018_unique_source.down.sql": TWO_TABLES_UNIQUE_DOWN})
    sha = files.file_sha256(str(path / "000018_unique_source.up.sql"))
    # ACCESS SHARE, idle in a READ COMMITTED transaction (no snapshot held): the concurrent build does not wait for
    # it, the attach and DROP INDEX CONCURRENTLY do.
    blocker = tmi_db.server.connect(tmi_db.name, autocommit=False)
    with blocker.cursor() as cur:
        cur.execute("LOCK TABLE sources IN ACCESS SHARE MODE")
    try:
        failed = run_module("pg_migrate", {"path": str(path), **tmi_db.module_args(), "lock_timeout": "200ms",
                                           "lock_retries": 1, "lock_retry_delay": 0.1,
                                           "rewrites": [{"version": 18, "sha256": sha}]})
        assert failed["failed"] and (failed["version_after"], failed["dirty"]) == (18, True)
        message = " ".join(failed["msg"].split())
        assert "step 3 (ALTER TABLE sources ADD CONSTRAINT sources_id_url_unique UNIQUE USING INDEX " \
               "sources_id_url_unique) failed" in message, message
        assert "the index sources_id_url_unique could not be dropped: its lock was not granted within lock_timeout " \
               "200ms" in message and "the recovery drops it" in message, message
        interrupted = failed["interrupted_rewrite"]
        assert interrupted["committed"] == [1, 2] and interrupted["failed"] == [3]
        assert tmi_db.scalar("SELECT count(*) FROM pg_class WHERE relname = 'sources_id_url_unique'") == 1

        # The recovery cannot drop it either while the reader is there: refused, the version still dirty.
        refused = migrate(tmi_db, path=path, operation="force", target_version="18", recover_rewrite=True,
                          lock_timeout="200ms")
        assert refused["failed"] and "were not all dropped" in refused["msg"]
        assert tmi_db.query("SELECT version, dirty FROM schema_migrations") == [(18, True)]
    finally:
        blocker.rollback()
        blocker.close()

    forced = migrate(tmi_db, path=path, operation="force", target_version="18", recover_rewrite=True)
    assert not forced.get("failed"), forced.get("msg")
    assert forced["recovered"] == ["the valid index sources_id_url_unique"] or \
        forced["recovered"] == ["the INVALID index sources_id_url_unique"]  # a failed DROP CONCURRENTLY leaves it so
    assert tmi_db.query("SELECT version, dirty FROM schema_migrations") == [(18, False)]
    down = migrate(tmi_db, path=path, target_version="17", allow_down=True)
    assert not down.get("failed"), down.get("msg")
    assert catalog(tmi_db) == catalog_17


def test_a_runner_killed_in_a_set_not_null_leaves_a_row_and_a_helper_check_the_recovery_drops(tmi_db, tmp_path):
    """The runner is killed while the helper CHECK's validation waits (history mode still ``rewriting``, no cleanup
    ran): the row exists because step 1 committed with it; force with recover_rewrite drops the helper CHECK, which
    the down file (DROP NOT NULL) does not know, and the down file brings the catalog back to 17."""
    tmi_db.migrate(17)
    fixture.generate(tmi_db.conn, 5, seed=3)
    tmi_db.query("UPDATE sources SET name = coalesce(name, 'unnamed')")
    catalog_17 = catalog(tmi_db)
    up = "ALTER TABLE threats ADD COLUMN review_note TEXT;\nALTER TABLE sources ALTER COLUMN name SET NOT NULL;\n"
    down = ("ALTER TABLE sources ALTER COLUMN name DROP NOT NULL;\n"
            "ALTER TABLE threats DROP COLUMN IF EXISTS review_note;\n")
    path = with_extra(tmp_path, {"000018_named_sources.up.sql": up, "000018_named_sources.down.sql": down})
    sha = files.file_sha256(str(path / "000018_named_sources.up.sql"))
    # Step 1 takes ACCESS EXCLUSIVE on sources, so a blocker there from the start would hold up step 1 itself: a
    # reader holds sources until step 1 queues for it, the blocker's SHARE UPDATE EXCLUSIVE queues behind step 1 and
    # is granted when step 1 commits - before the validation asks.
    reader = tmi_db.server.connect(tmi_db.name, autocommit=False)
    with reader.cursor() as cur:
        cur.execute("LOCK TABLE sources IN ACCESS SHARE MODE")
    blocker = tmi_db.server.connect(tmi_db.name, autocommit=False)

    def waits(pattern):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            found = tmi_db.query("SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE %s",
                                 (pattern,))
            if found:
                return found[0][0]
            time.sleep(0.05)
        raise AssertionError(f"nothing waited running {pattern}")

    try:
        run = start_module("pg_migrate", {"path": str(path), **tmi_db.module_args(), "lock_timeout": "60s",
                                          "rewrites": [{"version": 18, "sha256": sha}]})
        waits("ALTER TABLE threats ADD COLUMN review_note%")  # step 1, queued for sources
        locking = threading.Thread(target=lambda: blocker.cursor().execute(
            "LOCK TABLE sources IN SHARE UPDATE EXCLUSIVE MODE"), daemon=True)
        locking.start()
        waits("LOCK TABLE sources IN SHARE UPDATE EXCLUSIVE MODE")
        reader.rollback()
        locking.join(60)
        waiting = waits("ALTER TABLE sources VALIDATE CONSTRAINT%")
        run.process.kill()
        run.process.wait()
        # The server notices a dead client only when it next talks to it: end the backend as the kill would.
        tmi_db.query("SELECT pg_terminate_backend(%s)", (waiting,))
    finally:
        reader.rollback()
        reader.close()
        blocker.rollback()
        blocker.close()
    assert tmi_db.query("SELECT version, dirty FROM schema_migrations") == [(18, True)]
    mode, steps = tmi_db.query("SELECT mode, steps FROM tmi_migration_history WHERE version = 18")[0]
    assert mode == "rewriting"
    assert [s["status"] for s in json.loads(steps)] == ["committed", "pending", "pending", "pending"]
    helper = "sources_name_not_null_helper"
    assert tmi_db.scalar("SELECT count(*) FROM pg_constraint WHERE conname = %s", (helper,)) == 1

    status = migrate(tmi_db, path=path, operation="status")
    assert status["interrupted_rewrite"]["mode"] == "rewriting" and status["interrupted_rewrite"]["committed"] == [1]
    forced = migrate(tmi_db, path=path, operation="force", target_version="18", recover_rewrite=True)
    assert not forced.get("failed"), forced.get("msg")
    assert forced["recovered"] == [f"the helper CHECK {helper}"]
    assert tmi_db.scalar("SELECT count(*) FROM pg_constraint WHERE conname = %s", (helper,)) == 0
    back = migrate(tmi_db, path=path, target_version="17", allow_down=True)
    assert not back.get("failed"), back.get("msg")
    assert catalog(tmi_db) == catalog_17


def test_recover_rewrite_refuses_a_dirty_state_it_cannot_explain_and_changes_nothing(tmi_db):
    """A dirty version without an interrupted rewrite in the history table (a file as written that failed part-way):
    recover_rewrite refuses, names the cause and the remedy, and leaves the dirty flag as it was."""
    tmi_db.migrate(17)
    tmi_db.query("UPDATE schema_migrations SET dirty = true")
    catalog_before = catalog(tmi_db)
    refused = migrate(tmi_db, operation="force", target_version="17", recover_rewrite=True)
    assert refused["failed"] and refused["msg"].startswith(
        "recover_rewrite records version 17 only when the database is dirty at it because a rewritten file stopped "
        "between its steps, and it is dirty at version 17 with no interrupted rewrite in the history table. Nothing "
        "was changed.")
    assert "force without recover_rewrite" in refused["msg"]
    assert tmi_db.query("SELECT version, dirty FROM schema_migrations") == [(17, True)]
    assert catalog(tmi_db) == catalog_before


def test_an_interrupted_rewrite_stays_dirty_under_a_refused_restore_and_after_a_failed_down_file_migrate_refuses_it(
        environment, tmp_path):
    """Both rollbacks follow one migrate.yml interrupted in the rewritten 000017 (a row the CHECK rejects).

    A rollback that chooses the backup for an interrupted rewrite leaves the dirty flag as it was: with the run
    record saying the down files failed in the rehearsal, auto decides before anything changes, so it picks the
    emergency restore, whose guard refuses to discard the writes made since the backup. The interrupted rewrite's
    version must still be dirty then - recorded clean, it would let a later migrate run on top of a file whose
    deferred steps never ran.

    A rollback whose down file fails after the recovery leaves a state migrate refuses until rolled back: with the
    record as the run wrote it, the recovery records version 17 clean (its history row: rewrite-recovered) and the
    down file then gives up on its lock: an application transaction holds metadata. The rollback falls back to the
    emergency restore, whose guard refuses (writes since the backup), so it fails at 17, clean - with the deferred
    steps never run. Neither migrate.yml's pg_migrate nor a newer file may run on top of that: refused, naming the
    cause and the remedy, nothing changed. Once the transaction is gone, rollback.yml again runs the down file and
    keeps every write."""
    db = environment.db
    before = environment.state()
    threat = db.scalar("SELECT id::text FROM threats LIMIT 1")
    db.query("INSERT INTO metadata (entity_type, entity_id, key, value) VALUES ('threat', %s, 'bad key!', 'x')",
             (threat,))
    sha = files.file_sha256(str(fixture.MIGRATIONS_DIR / "000017_enhance_metadata.up.sql"))
    extra = {"tmi_rehearse": False, "validate_profile": "", "tmi_auto_rollback": False,
             "migrate_rewrites": [{"version": 17, "sha256": sha}]}
    failed = environment.playbook("migrate.yml", "-e", json.dumps(extra))
    assert failed.returncode != 0
    assert db.query("SELECT version, dirty FROM schema_migrations") == [(17, True)]
    db.query("INSERT INTO metadata (entity_type, entity_id, key, value) SELECT 'threat', id, 'after_failure', 'kept' "
             "FROM threats")
    written = db.scalar("SELECT count(*) FROM metadata WHERE key = 'after_failure'")

    run_file = sorted((environment.tmp_path / "runs").glob("*/run.json"))[-1]
    as_written = run_file.read_text()
    run = json.loads(as_written)
    run["rehearsal"] = dict(run.get("rehearsal") or {}, rehearsed=True, up_ok=True, down_ok=False)
    run_file.write_text(json.dumps(run))
    catalog_before = catalog(db)
    rolled = environment.playbook("rollback.yml")
    assert rolled.returncode != 0, rolled.stdout[-4000:]
    record = environment.records("rollback")[-1]["rollback"]
    assert record["mode"] == "emergency" and record["succeeded"] is False, record
    assert db.query("SELECT version, dirty FROM schema_migrations") == [(17, True)]
    assert catalog(db) == catalog_before
    assert db.scalar("SELECT count(*) FROM metadata WHERE key = 'after_failure'") == written > 0
    run_file.write_text(as_written)

    blocker = db.server.connect(db.name, autocommit=False)
    with blocker.cursor() as cur:
        cur.execute("SET application_name = 'tmi-blocker'")
        cur.execute("LOCK TABLE metadata IN ACCESS SHARE MODE")
    try:
        rolled = environment.playbook("rollback.yml", "-e", json.dumps(
            {"migrate_lock_timeout": "300ms", "migrate_lock_retries": 0}))
        assert rolled.returncode != 0, rolled.stdout[-4000:]
        record = environment.records("rollback")[-1]["rollback"]
        assert record["succeeded"] is False, record
        assert "could not get its locks" in record["planned_error"].lower(), record
        assert db.query("SELECT version, dirty FROM schema_migrations") == [(17, False)]
        assert db.query("SELECT mode FROM tmi_migration_history WHERE version = 17 ORDER BY id DESC LIMIT 1") == [
            ("rewrite-recovered",)]
        # The deferred steps never ran: three CHECKs still NOT VALID, no UNIQUE.
        assert db.scalar("SELECT count(*) FROM pg_constraint WHERE conrelid = 'metadata'::regclass AND contype = 'c' "
                         "AND NOT convalidated") == 3
        catalog_before = catalog(db)

        status = migrate(db, operation="status")
        assert status["recovered_rewrite"]["version"] == 17 and status["recovered_rewrite"]["committed"] == [1, 2]
        newer = with_extra(tmp_path, {"000018_more.up.sql": "ALTER TABLE threats ADD COLUMN review_note TEXT;\n",
                                      "000018_more.down.sql": "ALTER TABLE threats DROP COLUMN review_note;\n"})
        for path in (fixture.MIGRATIONS_DIR, newer):
            refused = migrate(db, path=path, rewrites=[{"version": 17, "sha256": sha}])
            assert refused["failed"] and refused["msg"].startswith(
                "Version 17 is recorded clean, but migration 000017 enhance_metadata ran rewritten for online use and "
                "did not finish: steps 1, 2 committed, steps 3, 4, 5, 6, 7, 8, 9 never ran."), refused["msg"]
            assert "Nothing was changed. To recover: run playbooks/rollback.yml again" in refused["msg"]
            assert "operation=force with target_version=17" in refused["msg"]
            assert refused["recovered_rewrite"]["mode"] == "rewrite-recovered"
            assert db.query("SELECT version, dirty FROM schema_migrations") == [(17, False)]
            assert catalog(db) == catalog_before
        assert "the plan (000018 up) does not run on top of it" in refused["msg"]
    finally:
        blocker.rollback()
        blocker.close()

    again = environment.playbook("rollback.yml")
    assert again.returncode == 0, again.stdout[-4000:]
    record = environment.records("rollback")[-1]["rollback"]
    assert record["mode"] == "planned" and record["succeeded"] is True, record
    assert db.query("SELECT version, dirty FROM schema_migrations") == [(15, False)]
    assert db.scalar("SELECT count(*) FROM metadata WHERE key = 'after_failure'") == written
    assert db.scalar("SELECT count(*) FROM metadata WHERE key = 'bad key!'") == 1
    after = environment.state()
    assert {k: v for k, v in after["figures"].items() if k != "public.metadata"} == \
        {k: v for k, v in before["figures"].items() if k != "public.metadata"}
    assert after["figures"]["public.metadata"]["rows"] == before["figures"]["public.metadata"]["rows"] + 1 + written


UNIQUE_TM_UP = """ALTER TABLE threats ADD COLUMN review_note TEXT;
ALTER TABLE threat_models ADD CONSTRAINT threat_models_id_name_unique UNIQUE (id, name);
"""
UNIQUE_TM_DOWN = """ALTER TABLE threat_models DROP CONSTRAINT IF EXISTS threat_models_id_name_unique;
ALTER TABLE threats DROP COLUMN IF EXISTS review_note;
"""


def unique_threat_models(production, tmp_path):
    """Files up to 15 and a 16 whose rewrite attaches a unique index to threat_models in step 3 (ACCESS EXCLUSIVE for
    an instant), proven by pg_rehearse: (database, path, rewrites)."""
    db, backup, scratch = production
    path = copy_fixture(tmp_path, 15)
    (path / "000016_unique_threat_models.up.sql").write_text(UNIQUE_TM_UP)
    (path / "000016_unique_threat_models.down.sql").write_text(UNIQUE_TM_DOWN)
    result = rehearse(db, backup, scratch, path)
    assert not result.get("failed"), result.get("msg")
    rewrites = proven(result)
    assert [item["version"] for item in rewrites] == [16], result["rewrites"]
    assert [s["kind"] for s in result["rewrites"][0]["steps"]] == ["file", "build_index", "attach_constraint"]
    return db, path, rewrites


@pytest.mark.serial  # bounds how long a session waited
def test_the_watchdog_cancels_a_rewritten_files_step_retries_it_and_names_the_step_and_its_blocker(
        production, tmp_path):
    """The attach (step 3) waits behind a transaction reading threat_models and the application's reads queue
    behind it: the watchdog cancels that step, which is retried alone (steps 1 and 2 ran once) until the blocker
    commits; its waits are said as step 3's."""
    db, path, rewrites = unique_threat_models(production, tmp_path)
    blocker = Blocker(db)
    app = App(db)
    app.start()
    try:
        run = start_module("pg_migrate", {"path": str(path), **db.module_args(), "lock_timeout": "10s",
                                          "lock_queue_timeout": 0.5, "lock_retries": 6, "lock_retry_delay": 0.2,
                                          "rewrites": rewrites})
        timer = blocker.release_at_attempt(db, 3)
        result = run.result()
        timer.join()
    finally:
        blocker.release()
        app.finish()
    assert not result.get("failed"), result.get("msg")
    entry = result["applied"][0]
    assert entry["mode"] == "rewritten"
    assert [(s["step"], s["status"], s["attempts"] > 1) for s in entry["steps"]] == [
        (1, "committed", False), (2, "committed", False), (3, "committed", True)], entry["steps"]
    cancelled = [wait for wait in entry["lock_waits"] if wait["cancelled"]]
    assert cancelled and all(wait["step"] == 3 and "index" not in wait for wait in cancelled), entry["lock_waits"]
    assert [b["pid"] for b in cancelled[0]["blockers"]] == [blocker.pid]
    assert app.worst < 1.5, app.worst
    summary = entry["lock_wait_summary"]
    assert "step 3 waited " in summary and f"behind pid {blocker.pid} (app 'tmi-blocker', transaction " in summary
    assert "cancelled and retried" in summary and "index 3" not in summary, summary
    assert db.query("SELECT version, dirty FROM schema_migrations") == [(16, False)]


@pytest.mark.serial  # bounds how long a session waited
def test_a_later_step_the_watchdog_cancels_until_its_retries_run_out_says_so_and_names_the_blocker(
        production, tmp_path):
    db, path, rewrites = unique_threat_models(production, tmp_path)
    blocker = Blocker(db)
    app = App(db)
    app.start()
    try:
        result = run_module("pg_migrate", {"path": str(path), **db.module_args(), "lock_timeout": "10s",
                                           "lock_queue_timeout": 0.3, "lock_retries": 2, "lock_retry_delay": 0.1,
                                           "rewrites": rewrites})
    finally:
        app.finish()
        blocker.release()
    assert result["failed"] and (result["version_after"], result["dirty"]) == (16, True)
    message = " ".join(result["msg"].split())
    assert "step 3 (ALTER TABLE threat_models ADD CONSTRAINT threat_models_id_name_unique UNIQUE USING INDEX " \
           "threat_models_id_name_unique) failed: it could not get its locks within lock_timeout after 3 attempts " \
           "(3 of them cancelled by the watchdog" in message, message
    assert f"Blocked by pid {blocker.pid} (app 'tmi-blocker', transaction " in message
    assert "Steps 1, 2 committed" in message
    steps = json.loads(db.scalar("SELECT steps FROM tmi_migration_history WHERE version = 16"))
    assert steps[2]["error"].startswith("it could not get its locks within lock_timeout after 3 attempts (3 of them "
                                        "cancelled by the watchdog"), steps[2]
    assert f"Blocked by pid {blocker.pid}" in steps[2]["error"]
    assert [w["step"] for w in result["failed_migration"]["lock_waits"]] == [3, 3, 3]


def test_a_recovered_rewrite_finished_by_hand_is_recorded_by_a_plain_force_and_migrations_go_on(tmi_db):
    """The other remedy of the refusal: the steps that never ran, run by hand, then force at the version."""
    tmi_db.migrate(15)
    fixture.generate(tmi_db.conn, 5, seed=3)
    threat = tmi_db.scalar("SELECT id::text FROM threats LIMIT 1")
    tmi_db.query("INSERT INTO metadata (entity_type, entity_id, key, value) VALUES ('threat', %s, 'bad key!', 'x')",
                 (threat,))
    rewrites = [{"version": 17, "sha256": files.file_sha256(str(fixture.MIGRATIONS_DIR /
                                                                "000017_enhance_metadata.up.sql"))}]
    assert migrate(tmi_db, rewrites=rewrites)["failed"]
    forced = migrate(tmi_db, operation="force", target_version="17", recover_rewrite=True)
    assert not forced.get("failed"), forced.get("msg")
    refused = migrate(tmi_db, rewrites=rewrites)
    assert refused["failed"] and refused["msg"].startswith("Version 17 is recorded clean, but migration 000017")
    statements = refused["msg"].split("finish the file by hand - ", 1)[1].split(" - then run operation=force")[0]
    tmi_db.query("DELETE FROM metadata WHERE key = 'bad key!'")
    for statement in statements.split("; "):
        tmi_db.query(statement)
    finished = migrate(tmi_db, operation="force", target_version="17")
    assert not finished.get("failed") and finished["changed"], finished.get("msg")
    assert tmi_db.query("SELECT mode FROM tmi_migration_history WHERE version = 17") == [("rewrite-finished-by-hand",)]
    assert tmi_db.scalar("SELECT count(*) FROM pg_constraint WHERE conrelid = 'metadata'::regclass "
                         "AND NOT convalidated") == 0
    again = migrate(tmi_db, rewrites=rewrites)
    assert not again.get("failed"), again.get("msg")
    assert tmi_db.query("SELECT version, dirty FROM schema_migrations") == [(17, False)]
