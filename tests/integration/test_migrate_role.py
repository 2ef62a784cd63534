"""The migrate role through ansible-playbook: summary lines, run record, failures, bad inputs."""

from __future__ import annotations

import json
import shutil

from conftest import REPO, ansible_env, run_playbook
from tmi_testenv.fixture import MIGRATIONS_DIR, schema_snapshot

PLAYBOOK = str(REPO / "tests" / "integration" / "playbooks" / "migrate_role.yml")


def run_role(pg_server, db, tmp_path, *extra):
    result_file = tmp_path / "result.json"
    result = run_playbook(PLAYBOOK, ansible_env(pg_server, None, db.name), "-e", f"result_file={result_file}", *extra)
    record = json.loads(result_file.read_text()) if result_file.exists() else None
    return result, record


def test_role_migrates_prints_a_line_per_migration_and_records_it(pg_server, tmi_db, tmp_path):
    tmi_db.migrate(15)
    result, record = run_role(pg_server, tmi_db, tmp_path, "-e", f"migrate_migrations_path={MIGRATIONS_DIR}")
    assert result.returncode == 0, result.stdout
    assert "000016 add_performance_indexes up: 13 statements in" in result.stdout
    assert "(online, 1 attempt)" in result.stdout
    assert "000017 enhance_metadata up: 5 statements in" in result.stdout
    assert (record["version_before"], record["version_after"], record["dirty"], record["failed"]) == (15, 17, False,
                                                                                                      False)
    assert [a["version"] for a in record["applied"]] == [16, 17]


def test_role_failure_keeps_the_modules_message_and_records_the_dirty_state(pg_server, tmi_db, tmp_path):
    directory = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, directory)
    (directory / "000017_enhance_metadata.up.sql").write_text("ALTER TABLE metadata ADD COLUMN x nosuchtype;\n")
    tmi_db.migrate(16)
    result, record = run_role(pg_server, tmi_db, tmp_path, "-e", f"migrate_migrations_path={directory}")
    assert result.returncode != 0
    assert "nosuchtype" in result.stdout and "does not exist" in result.stdout
    assert record["failed"] is True and record["dirty"] is True and record["version_after"] == 17
    assert "marked dirty at version 17" in record["error"]


def test_role_refuses_bad_inputs_before_anything_changes(pg_server, tmi_db, tmp_path):
    tmi_db.migrate(15)
    before = schema_snapshot(tmi_db.conn)
    result, _unused = run_role(pg_server, tmi_db, tmp_path, "-e", f"migrate_migrations_path={MIGRATIONS_DIR}",
                               "-e", "migrate_target_version=seventeen")
    assert result.returncode != 0 and "migrate role inputs are invalid" in result.stdout
    result, _unused = run_role(pg_server, tmi_db, tmp_path, "-e", f"migrate_migrations_path={tmp_path}/absent")
    assert result.returncode != 0 and "does not exist on the Ansible controller" in result.stdout
    assert schema_snapshot(tmi_db.conn) == before


def test_role_plan_only_changes_nothing(pg_server, tmi_db, tmp_path):
    tmi_db.migrate(15)
    before = schema_snapshot(tmi_db.conn)
    result, record = run_role(pg_server, tmi_db, tmp_path, "-e", f"migrate_migrations_path={MIGRATIONS_DIR}",
                              "-e", "migrate_plan_only=true")
    assert result.returncode == 0, result.stdout
    assert "Schema version 15, target 17: up through 16, 17 (plan only)" in result.stdout
    # the predicted locks, index-only 16 built online; the lint graded by the (empty, so small) tables
    shown = " ".join(result.stdout.split())  # the YAML callback wraps long lines
    assert ("000016 up add_performance_indexes: public.threats SHARE UPDATE EXCLUSIVE (line 4, built CONCURRENTLY: "
            "online_index_builds)") in shown
    assert "000017 up enhance_metadata: public.metadata ACCESS EXCLUSIVE (line 4) - blocks reads and writes" in shown
    assert "000017 up enhance_metadata line 4: INFO changing-column-type public.metadata (" in shown
    assert "require-concurrent-index-creation public.threats" not in shown
    assert record["applied"] == [] and record["version_after"] == 15
    assert schema_snapshot(tmi_db.conn) == before

    checked, _unused = run_role(pg_server, tmi_db, tmp_path, "--check", "-e",
                                f"migrate_migrations_path={MIGRATIONS_DIR}")
    assert checked.returncode == 0, checked.stdout
    assert ("000017 up enhance_metadata line 6: INFO disallowed-unique-constraint public.metadata ("
            in " ".join(checked.stdout.split()))
    assert schema_snapshot(tmi_db.conn) == before


def test_role_stages_files_from_a_controller_and_reads_them_in_place_on_a_local_runner(pg_server, tmi_db, tmp_path):
    """controller: one archive, unpacked into a private directory removed afterwards; auto on a
    local connection: the directory is read where it is, with no staging tasks."""
    tmi_db.migrate(15)
    staging = tmp_path / "tmp"
    staging.mkdir()
    env = {**ansible_env(pg_server, None, tmi_db.name), "TMPDIR": str(staging)}
    result = run_playbook(PLAYBOOK, env, "-e", f"result_file={tmp_path}/r.json", "-e",
                          f"migrate_migrations_path={MIGRATIONS_DIR}", "-e", "migrate_migrations_source=controller",
                          "-e", "migrate_target_version=16")
    assert result.returncode == 0, result.stdout
    assert "TASK [tmi.migration.migrate : Unpack them into the private directory on the runner]" in result.stdout
    assert "000016 add_performance_indexes up" in result.stdout
    assert list(staging.glob("tmi-migrations-*")) == [], "the staged copy and the archive are removed"
    result = run_playbook(PLAYBOOK, {**env, "ANSIBLE_DISPLAY_SKIPPED_HOSTS": "false"}, "-e",
                          f"result_file={tmp_path}/r.json", "-e", f"migrate_migrations_path={MIGRATIONS_DIR}")
    assert result.returncode == 0, result.stdout
    assert "private directory" not in result.stdout and "Pack the migration files" not in result.stdout
    assert "000017 enhance_metadata up" in result.stdout
