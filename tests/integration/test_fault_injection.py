"""migrate.yml failing at each phase in turn, and the environment afterwards exactly as before.

After every failure: each table's row count and checksum equal the pre-run snapshot, the
schema version is back where it was and clean, the Redis settings and the config file are as
before, maintenance mode is off, and the run's report names the failing phase. A failure
before the verified backup changes nothing; one after it is rolled back automatically.
Also: the runner killed (SIGKILL) in the middle of a migration, then rollback.yml on its own.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

# phase -> (extra vars making it fail, whether a verified backup exists by then, migration to break)
FAULTS = {
    "preflight": ({"validate_min_postgresql_version": 99}, False, None),
    "backup": ({"backup_pg_bin_dir": "/nonexistent/bin"}, False, None),
    # The scratch database of the verification already exists (created by the test).
    "backup_verification": ({"tmi_run_id": "faultverify"}, False, None),
    # (Proven elsewhere: a file that fails on the data stops the run in the rehearsal, on the backup's copy, with
    # production untouched - test_rehearsal_run's failing-on-existing-rows test.)
    # A failure in production itself (one the rehearsal could not see, such as rows written after the
    # backup that break a new constraint): the rehearsal is switched off to get there.
    "migration_16": ({"migrate_online_index_builds": False, "tmi_rehearse": False}, True, (16, "SELECT 1/0;")),
    "migration_17": ({"tmi_rehearse": False}, True, (17, "SELECT 1/0;")),
    "post_validation": ({"validate_expected_indexes": [{"name": "idx_missing_on_purpose", "table": "threats",
                                                        "columns": ["name"]}]}, True, None),
    # (Proven elsewhere: the redis phase's failure, a value the server refuses, is test_run_record's automatic
    # rollback; a config template that does not render is found by the pre-flight before anything changes, by the
    # same render task and refusal as test_hardening_run's template_does_not_parse input.)
    # The new config stops the application from starting (a TTL it cannot parse).
    "restart": ({"app_config_cache": {"enabled": True, "default_ttl": "soon"}}, True, None),
    # (An application that runs but is unhealthy fails the same app phase and is rolled back the same way; its
    # detection, the endpoint's answer in the message, is test_app_config's health test.)
}
PHASE_OF = {"preflight": "preflight", "backup": "backup", "backup_verification": "backup",
            "migration_16": "migrate", "migration_17": "migrate", "post_validation": "validate", "restart": "app"}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_failure_at_each_phase_leaves_the_environment_as_before(environment, fault):
    extra, rolls_back, broken = FAULTS[fault]
    if broken:
        extra = {**extra, "tmi_migrations_path": environment.broken_migrations(*broken)}
    if fault == "backup_verification":
        environment.db.server.create_database(f"{environment.db.name[:30]}_verify_faultverify")
    before = environment.state()

    result = environment.playbook("migrate.yml", "-e", json.dumps(extra))
    assert result.returncode != 0, result.stdout[-3000:]
    after = environment.state()
    assert after == before, f"{fault}: the environment changed\n{result.stdout[-4000:]}"

    record = environment.records()[-1]
    assert record["failed"] is True and record["failed_phase"] == PHASE_OF[fault]
    report = (environment.tmp_path / "runs" / record["run_id"] / "run.md").read_text()
    assert f"| {PHASE_OF[fault]} | failed |" in report and "— FAILED" in report
    # The HTML report too, its timeline with one bar per phase (tests/integration/test_html_report.py opens one).
    page = (environment.tmp_path / "runs" / record["run_id"] / "run.html").read_text()
    assert page.count('class="phase"') == len(record["phases"])
    assert f'data-phase="{PHASE_OF[fault]}" data-result="failed"' in page
    # The callback folds long messages: compare with the whitespace normalised.
    message = " ".join(result.stdout[result.stdout.rfind("Phase "):].split())
    assert message.startswith(f"Phase {PHASE_OF[fault]} failed at ")
    if rolls_back:
        assert record["rollback"]["succeeded"] is True, record["rollback"]
        assert "-- Rollback: " in message and " succeeded, the database is back at version 15" in message
        expected_mode = "emergency" if fault.startswith("migration_") else "planned"
        assert record["rollback"]["mode"] == expected_mode
    else:
        assert "rollback" not in record or not record["rollback"]
        assert "no verified backup was taken" in message
    if fault == "migration_17":
        # Without the rehearsal the backup drops the verified copy it does not keep: none is left, restore included.
        assert record["backup"]["scratch_db"] == ""
        assert environment.db.server.query_one(
            f"SELECT count(*) FROM pg_database WHERE datname LIKE '{environment.db.name}%\\_verify\\_%'") == 0


def test_killed_mid_migration_then_rollback_playbook_restores_a_clean_state(environment, pg_server):
    before = environment.state()
    # A migration that holds its batch open long enough to be killed in the middle of it.
    path = environment.broken_migrations(17, "SELECT pg_sleep(60);")
    # Without the rehearsal, which would sleep its minute on the backup's copy first.
    runner = environment.playbook("migrate.yml", "-e", json.dumps({"tmi_migrations_path": path, "tmi_rehearse": False,
                                                                  "migrate_statement_timeout": "0"}),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    watcher = pg_server.connect(environment.db.name)  # autocommit: every poll sees a fresh pg_stat_activity
    sleeping = ("SELECT pid FROM pg_stat_activity WHERE wait_event = 'PgSleep' AND datname = current_database() "
                "AND pid <> pg_backend_pid()")
    try:
        with watcher.cursor() as cur:
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline:
                cur.execute(sleeping)
                if cur.fetchall():
                    break
                assert runner.poll() is None, "migrate.yml ended before the migration started"
                time.sleep(0.2)
            else:
                pytest.fail("the slow migration never started")
            os.killpg(runner.pid, signal.SIGKILL)
            runner.wait()
            # The server ends the dead client's transaction once it notices; make it notice now.
            cur.execute(f"SELECT pg_terminate_backend(pid) FROM ({sleeping}) AS s")
            time.sleep(1)
            cur.execute("SELECT version, dirty FROM schema_migrations")
            assert cur.fetchall() == [(17, True)]
    finally:
        watcher.close()

    result = environment.playbook("rollback.yml", "-e", f"tmi_migrations_path={path}")
    assert result.returncode == 0, result.stdout[-4000:]
    after = environment.state()
    assert after == before
    rollback = environment.records("rollback")[-1]
    assert rollback["rollback"]["mode"] == "emergency" and rollback["rollback"]["succeeded"] is True


def test_planned_rollback_refuses_a_change_its_down_files_do_not_explain(environment):
    """Rows deleted by the application after the migration are its writes, not a difference; rows a down file
    deletes through dynamic SQL, which the analysis cannot read, are: planned refuses. (That auto then falls back to
    the backup is test_hardening_catalog's planned-refuses-and-auto-restores test.)"""
    path = environment.broken_migrations(17, "")
    down = next((environment.tmp_path / "migrations").glob("000017_*.down.sql"))
    purge = "DO $$ BEGIN EXECUTE 'DELETE FROM documents WHERE ctid IN (SELECT ctid FROM documents LIMIT 3)'; END $$;"
    down.write_text(down.read_text() + "\n" + purge + "\n")
    migrated = environment.playbook("migrate.yml", "-e", f"tmi_migrations_path={path}")
    assert migrated.returncode == 0, migrated.stdout[-4000:]

    planned = environment.playbook("rollback.yml", "-e", "tmi_rollback_mode=planned", "-e",
                                   f"tmi_migrations_path={path}")
    assert planned.returncode != 0
    message = " ".join((planned.stdout + planned.stderr).split())
    assert "public.documents" in message and "a DO block" in message
    record = environment.records("rollback")[-1]["rollback"]
    assert record["mode"] == "planned" and record["succeeded"] is False
