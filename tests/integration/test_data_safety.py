"""Never lose a write: migrate.yml and rollback.yml with a live application and with real migrations.

A writer inserts into a table the migration files do not touch while migrate.yml runs, until
maintenance mode goes on: every row it wrote must be in the live database at the end, whether the
run succeeds, rolls back with the down files, or stops before an emergency swap that would
discard them. Data migrations, new tables and cascades are attributed to their files; a change no
statement explains fails the run; a migration set that is not TMI's runs with no validation
variable set.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
import uuid

import pytest
from ansible_collections.tmi.migration.plugins.module_utils.restore import Restorer, load_manifest

from conftest import ansible_env, run_module, run_playbook, tmi_install
from tmi_testenv import fixture

OTHER_APP = fixture.MIGRATIONS_DIR.parent / "other_app"


class Writer(threading.Thread):
    """Inserts a document every 0.05 s until the stand-in is in maintenance mode (or ``stop``)."""

    def __init__(self, environment):
        super().__init__(daemon=True)
        self.environment = environment
        self.ids: list[str] = []
        self.stop = threading.Event()
        self.error: Exception | None = None

    def run(self):
        conn = self.environment.db.server.connect(self.environment.db.name)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT id FROM threat_models LIMIT 1")
                threat_model = cur.fetchone()[0]
                while not self.stop.is_set():
                    if self.environment.standin.request("GET", "/admin/maintenance")[1]["maintenance"]:
                        return
                    new = str(uuid.uuid4())
                    cur.execute("INSERT INTO documents (id, threat_model_id, name, url) VALUES (%s, %s, %s, %s)",
                                (new, threat_model, "written live", "https://example.invalid/" + new))
                    self.ids.append(new)
                    self.stop.wait(0.05)
        except Exception as error:  # noqa: BLE001 - reported by finish()
            self.error = error
        finally:
            conn.close()

    def finish(self) -> list[str]:
        self.stop.set()
        self.join(30)
        assert self.error is None, self.error
        assert self.ids, "the writer wrote nothing before maintenance mode"
        return self.ids


def present(environment, ids: list[str], dbname: str | None = None) -> int:
    conn = environment.db.server.connect(dbname or environment.db.name)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM documents WHERE id = ANY(%s::uuid[])", (ids,))
            return cur.fetchone()[0]
    finally:
        conn.close()


def database_exists(environment, name: str) -> bool:
    return environment.db.server.query_one(f"SELECT count(*) FROM pg_database WHERE datname = '{name}'") == 1


def written_after_backup(record: dict) -> int:
    """Rows of documents written between the backup's snapshot and the baseline."""
    return (record["baseline"]["figures"]["public.documents"]["rows"]
            - record["backup"]["figures"]["public.documents"]["rows"])


def message_of(result) -> str:
    return " ".join((result.stdout + result.stderr).split())


def test_planned_rollback_after_a_failure_keeps_every_write(environment):
    writer = Writer(environment)
    writer.start()
    # Fails after the migration and its validation, in the Redis phase.
    result = environment.playbook("migrate.yml", "-e", json.dumps(
        {"redis_config_settings": {"maxmemory-policy": "not-a-policy"}}))
    ids = writer.finish()
    assert result.returncode != 0
    record = environment.records()[-1]
    assert record["rollback"]["mode"] == "planned" and record["rollback"]["succeeded"] is True, record["rollback"]
    assert written_after_backup(record) > 0
    assert present(environment, ids) == len(ids)
    assert environment.state()["version"] == (15, False)


def test_emergency_rollback_refuses_to_discard_writes_unless_allowed(environment):
    broken = environment.broken_migrations(17, "SELECT 1/0;")
    writer = Writer(environment)
    writer.start()
    # The file fails in production (the rehearsal, which would stop it on the backup's copy, is off).
    result = environment.playbook("migrate.yml", "-e", json.dumps({"tmi_migrations_path": broken,
                                                                  "tmi_rehearse": False}))
    ids = writer.finish()
    assert result.returncode != 0
    record = environment.records()[-1]
    rollback = record["rollback"]
    assert rollback["mode"] == "emergency" and rollback["succeeded"] is False, rollback
    discarded = [d for d in rollback["discards"] if d["table"] == "public.documents"]
    assert discarded and discarded[0]["live_rows"] > discarded[0]["backup_rows"]
    message = message_of(result)
    assert "did not swap the backup in" in message and "public.documents" in message
    kept = rollback["kept_restore"]
    assert kept and database_exists(environment, kept)
    # The live database still holds every write; the restored copy beside it does not.
    assert present(environment, ids) == len(ids)
    assert present(environment, ids, kept) < len(ids)
    report = (environment.tmp_path / "runs" / record["run_id"] / "run.md").read_text()
    assert "the swap would discard: public.documents" in report

    # The operator allows the loss: the restored copy is replaced, the swap happens and the old database keeps the rows.
    allowed = environment.playbook("rollback.yml", "-e", json.dumps(
        {"tmi_migrations_path": broken, "tmi_rollback_mode": "emergency", "tmi_rollback_allow_data_loss": True}))
    assert allowed.returncode == 0, allowed.stdout[-4000:]
    restore = environment.records("rollback")[-1]["rollback"]["restore"]
    assert present(environment, ids) < len(ids)
    assert present(environment, ids, restore["old_database"]) == len(ids)


def without_threats(state: dict) -> dict:
    """A state with the figures of threats left out (the table the test writes to after the migration)."""
    return {**state, "figures": {table: figures for table, figures in state["figures"].items()
                                 if table != "public.threats"}}


def test_rows_written_after_the_migration_survive_a_later_rollback_that_finds_the_run_behind_many_nightly_runs(
        environment, pg_server):
    """migrate.yml, rows written after it, then rollback.yml without naming the run, which proves:
    - the rows written after the migration survive the (planned) rollback, and everything else is as before;
    - the rollback finds this host's run behind many newer nightly no-op runs without a backup, and does not
      take a newer run of another host for it.
    """
    before = environment.state()
    migrated = environment.playbook("migrate.yml")
    assert migrated.returncode == 0, migrated.stdout[-4000:]
    run = environment.records()[-1]
    conn = pg_server.connect(environment.db.name)
    with conn.cursor() as cur:
        cur.execute("SELECT id FROM threat_models LIMIT 1")
        threat_model = cur.fetchone()[0]
        ids = [str(uuid.uuid4()) for _n in range(5)]
        for new in ids:
            cur.execute("INSERT INTO threats (id, threat_model_id, name, severity) VALUES (%s, %s, 'later', 'High')",
                        (new, threat_model))
    conn.close()
    # Nightly runs with nothing to do since, each newer than the run, none with a backup.
    runs = environment.tmp_path / "runs"
    newer = time.time() + 10
    for number in range(25):
        noop = runs / f"20261124T02{number:02d}00Z-{number}"
        noop.mkdir()
        (noop / "run.json").write_text(json.dumps({"run_id": noop.name, "host": "tmi_local", "failed": False,
                                                   "backup": {}, "migration": {"plan": []}}))
        os.utime(noop / "run.json", (newer + number, newer + number))
    # Another host's run with a backup is newer still, and is not this host's to roll back.
    other = runs / "20261124T030000Z-other"
    other.mkdir()
    (other / "run.json").write_text(json.dumps({"run_id": other.name, "host": "another_host",
                                                "backup": {"path": "/elsewhere", "verified": True}}))
    os.utime(other / "run.json", (newer + 60, newer + 60))

    result = environment.playbook("rollback.yml")
    assert result.returncode == 0, result.stdout[-4000:]
    rollback = json.loads((runs / run["run_id"] / "rollback.json").read_text())["rollback"]
    assert rollback["run_id"] == run["run_id"]
    assert rollback["mode"] == "planned" and rollback["succeeded"] is True
    assert not (other / "rollback.json").exists()
    assert environment.state()["version"] == (15, False)
    assert without_threats(environment.state()) == without_threats(before)
    with pg_server.connect(environment.db.name).cursor() as cur:
        cur.execute("SELECT count(*) FROM threats WHERE id = ANY(%s::uuid[])", (ids,))
        assert cur.fetchone()[0] == 5


def extended_migrations(environment, sql: str, down: str = "SELECT 1;") -> str:
    """The fixture plus a migration 000018 with the given up file."""
    target = environment.tmp_path / "migrations18"
    shutil.copytree(fixture.MIGRATIONS_DIR, target)
    (target / "000018_data_migration.up.sql").write_text(sql)
    (target / "000018_data_migration.down.sql").write_text(down)
    return str(target)


def test_a_data_migration_succeeds_and_each_change_is_attributed(environment):
    path = extended_migrations(environment, """
UPDATE threats SET severity = 'Unknown' WHERE severity = 'None';
CREATE TABLE threat_tags (threat_id uuid PRIMARY KEY, tag text NOT NULL);
INSERT INTO threat_tags SELECT id, lower(severity) FROM threats;
CREATE TABLE threat_notes (id bigserial PRIMARY KEY, note text);
""", "DROP TABLE threat_notes; DROP TABLE threat_tags;")
    result = environment.playbook("migrate.yml", "-e", json.dumps({"tmi_migrations_path": path}))
    assert result.returncode == 0, result.stdout[-4000:]
    record = environment.records()[-1]
    rows = {r["table"]: r for r in record["validation"]["data_check"]}
    assert rows["public.threats"]["verdict"] == "ok" and "000018 line 2: updates rows" in rows["public.threats"]["by"]
    assert rows["public.threat_tags"]["content"] == "new" and rows["public.threat_tags"]["rows_after"] > 0
    assert rows["public.threat_notes"]["content"] == "new" and rows["public.threat_notes"]["rows_after"] == 0
    report = (environment.tmp_path / "runs" / record["run_id"] / "run.md").read_text()
    assert "| 000018 up data_migration | public.threats | write | updates rows |" in report
    assert "| public.threat_tags |" in report


def test_a_cascade_is_attributed_and_an_unexplained_loss_fails_the_run(environment, pg_server):
    # A trigger the analysis cannot see: deleting a threat model also deletes rows of a table no file names.
    conn = pg_server.connect(environment.db.name)
    with conn.cursor() as cur:
        cur.execute("""
CREATE TABLE audit_keep (id int PRIMARY KEY);
INSERT INTO audit_keep SELECT generate_series(1, 10);
CREATE FUNCTION tmi_test_purge() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN DELETE FROM audit_keep WHERE id > 5; RETURN OLD; END $$;
CREATE TRIGGER tmi_test_purge AFTER DELETE ON threat_models FOR EACH ROW EXECUTE FUNCTION tmi_test_purge();
""")
        cur.execute("SELECT id FROM threat_models ORDER BY id LIMIT 1")
        victim = cur.fetchone()[0]
    conn.close()
    path = extended_migrations(environment, f"DELETE FROM threat_models WHERE id = '{victim}';")
    before = environment.state()
    result = environment.playbook("migrate.yml", "-e", json.dumps({"tmi_migrations_path": path}))
    assert result.returncode != 0
    record = environment.records()[-1]
    # Down files cannot bring back what the migration lost: auto goes to the backup, and since nobody wrote
    # after the baseline (maintenance mode on), the swap discards nothing the application wrote.
    assert record["rollback"]["mode"] == "emergency" and record["rollback"]["succeeded"] is True
    # The data check ran at the end of 000018's maintenance window (tmi_maintenance=auto), while writes were stopped.
    assert record["failed_phase"] == "release" and not record["validation"]
    checks = {f["table"]: f for f in record["release"]["failed_checks"] if "table" in f}
    # audit_keep lost rows through the trigger, which no statement of the files explains.
    assert checks["public.audit_keep"]["check"] == "data_lost"
    assert "5 rows disappeared" in checks["public.audit_keep"]["message"]
    # threats lost rows through ON DELETE CASCADE: attributed to the cascade, not a finding.
    assert "public.threats" not in checks
    threats = next(r for r in record["release"]["data_check"] if r["table"] == "public.threats")
    assert "cascade" in threats["by"] and threats["verdict"] == "ok"
    assert "public.audit_keep" in message_of(result)
    assert environment.state()["figures"] == before["figures"]


def test_a_migration_set_that_is_not_tmi_runs_with_no_validation_variable(pg_server, redis_server, tmi_db,
                                                                          tmp_path):
    fixture.apply_like_golang_migrate(tmi_db.conn, 1, OTHER_APP)
    env = ansible_env(pg_server, redis_server, tmi_db.name, tmp_path)
    env.update(TMI_MIGRATIONS_PATH=str(OTHER_APP), TMI_REDIS_PORT="1")  # Redis must not be contacted at all
    disabled = ("-e", "tmi_app_enabled=false", "-e", "tmi_redis_enabled=false")
    result = run_playbook("migrate.yml", env, *disabled)
    assert result.returncode == 0, result.stdout[-5000:]
    assert fixture.current_version(tmi_db.conn) == (3, False)
    runs = sorted((tmp_path / "runs").glob("*/run.json"))
    record = json.loads(runs[-1].read_text())
    warnings = record["validation"]["warnings"]
    assert [w["check"] for w in warnings] == ["duplicate_index"] and warnings[0]["introduced"] is True
    rows = {r["table"]: r for r in record["validation"]["data_check"]}
    assert rows["public.reviews"]["content"] == "new"
    assert rows["public.books"]["compared_columns"] == ["id", "author_id", "title", "published"]
    assert rows["public.books"]["content"] == "unchanged" and rows["public.loans"]["does"] == ["write"]
    assert not record["backup"]["redis_settings"] and not record["redis"]

    rolled = run_playbook("rollback.yml", env, *disabled)
    assert rolled.returncode == 0, rolled.stdout[-5000:]
    assert fixture.current_version(tmi_db.conn) == (1, False)


@pytest.mark.parametrize("scale", [pytest.param(23000, marks=pytest.mark.slow)])
def test_a_clean_run_succeeds_whatever_plan_the_planner_picks(pg_server, redis_server, tmi_db, tmp_path, scale):
    with tmi_install(pg_server, redis_server, tmi_db, tmp_path, version=15, threat_models=scale, seed=3) as (_s, env):
        result = run_playbook("migrate.yml", env)
    assert result.returncode == 0, result.stdout[-4000:]
    record = json.loads(sorted((tmp_path / "runs").glob("*/run.json"))[-1].read_text())
    assert not record["validation"]["failed_checks"]
    assert all(w["severity"] == "warning" for w in record["validation"]["warnings"])


def test_the_restorers_guard_names_the_writes_a_swap_would_discard_but_never_the_bookkeeping(tmi_db, tmp_path):
    """Restorer takes a connection function and the options: what the emergency rollback asks, without Ansible."""
    tmi_db.migrate(15)
    fixture.generate(tmi_db.conn, 20)
    (tmp_path / "b").mkdir()
    backup = run_module("pg_backup", {"dest": str(tmp_path / "b"), "pg_bin_dir": str(tmi_db.server.client_bindir),
                                      **tmi_db.module_args()})
    assert not backup.get("failed"), backup
    manifest, _dump = load_manifest(str(tmp_path / "b"))

    def connect(dbname=None, autocommit=False):
        return tmi_db.server.connect(dbname or tmi_db.name, autocommit)

    restorer = Restorer(connect, {"jobs": 2, "backup": str(tmp_path / "b")})
    try:
        assert restorer.guard(tmi_db.name, manifest, {}, {}, {}, writes_stopped=False) == []
        assert restorer.verify(tmi_db.name, manifest) == []
        tmi_db.query("UPDATE schema_migrations SET version = 17")
        tmi_db.query("CREATE TABLE tmi_migration_history (id int)")
        tmi_db.query("INSERT INTO documents (threat_model_id, name, url) SELECT id, 'late', 'https://x.invalid' "
                     "FROM threat_models LIMIT 2")
        discards = restorer.guard(tmi_db.name, manifest, {}, {}, {}, writes_stopped=False)
        assert [(d["table"], d["backup_rows"], d["live_rows"]) for d in discards] == [("public.documents", 60, 62)]
        assert "2 rows written since would be lost" in discards[0]["message"]
        # The database as a whole differs from the backup, bookkeeping included: verify compares everything.
        assert sorted(d["table"] for d in restorer.verify(tmi_db.name, manifest)) == [
            "public.documents", "public.schema_migrations", "public.tmi_migration_history"]
    finally:
        restorer.admin.close()
