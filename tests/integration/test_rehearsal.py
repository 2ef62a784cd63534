"""pg_rehearse against a real PostgreSQL: the plan run up and down on the verified scratch copy of a backup.

Each test takes a backup of a TMI database at version 15, restores it as the kept scratch copy
(pg_restore_backup scratch: true) and rehearses on it; production must never change.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import run_module
from tmi_testenv import fixture


def production(db) -> dict:
    """What a rehearsal must leave as it was: version, dirty flag, tables and row counts."""
    return {"version": fixture.current_version(db.conn), "schema": fixture.schema_snapshot(db.conn),
            "rows": fixture.row_counts(db.conn)}


def databases(db) -> set[str]:
    return {row[0] for row in db.query("SELECT datname FROM pg_database")}


@pytest.fixture
def copy(tmi_db, tmp_path):
    """(production at version 15 with data, backup directory, name of its verified scratch copy)."""
    tmi_db.migrate(15)
    fixture.generate(tmi_db.conn, 12, seed=5)
    (tmp_path / "backups").mkdir()
    backup = run_module("pg_backup", {"dest": str(tmp_path / "backups"), "pg_bin_dir": str(tmi_db.server.client_bindir),
                                      "run_id": "r1", **tmi_db.module_args()})
    assert not backup.get("failed"), backup.get("msg")
    scratch = f"{tmi_db.name}_verify_r1"
    restored = run_module("pg_restore_backup", {"backup": str(Path(backup["manifest"]).parent), "target_db": scratch,
                                                "scratch": True, "pg_bin_dir": str(tmi_db.server.client_bindir),
                                                **tmi_db.module_args(), "login_db": "postgres"})
    assert restored.get("verified") and restored["scratch_db"] == scratch, restored.get("msg")
    return tmi_db, str(Path(backup["manifest"]).parent), scratch


def rehearse(db, backup, scratch, path=fixture.MIGRATIONS_DIR, **extra):
    return run_module("pg_rehearse", {"path": str(path), "target_db": scratch, "backup": backup,
                                      "online_index_builds": True, **db.module_args(), "login_db": "postgres",
                                      **extra})


def migrations_with(tmp_path, version: int, direction: str, sql: str):
    """A copy of the fixture's files whose file `version`.`direction` gets `sql` at its end."""
    target = tmp_path / "migrations"
    shutil.copytree(fixture.MIGRATIONS_DIR, target)
    path = next(target.glob(f"{version:06d}_*.{direction}.sql"))
    path.write_text(path.read_text() + f"\n{sql}\n")
    return target


def test_the_rehearsal_of_000017_reports_metadata_rewritten_under_access_exclusive_and_the_rollback_working(copy):
    db, backup, scratch = copy
    before = production(db)
    result = rehearse(db, backup, scratch)
    assert not result.get("failed"), result.get("msg")
    assert result["rehearsed"] and result["up_ok"] and result["down_ok"]
    assert [entry["version"] for entry in result["up"]] == [16, 17]
    assert [entry["version"] for entry in result["down"]] == [17, 16]
    enhance = result["up"][1]
    assert enhance["rewritten"] == ["public.metadata"]
    assert enhance["exclusive"]["public.metadata"] > 0
    retype = next(s for s in enhance["statements"] if "TYPE VARCHAR(128)" in s["statement"])
    assert retype["taken"] == {"public.metadata": "ACCESS EXCLUSIVE"} and retype["rewritten"] == ["public.metadata"]
    assert retype["line"] == 4
    # 000016 builds its indexes CONCURRENTLY (online_index_builds): writers are never blocked.
    indexes = result["up"][0]
    assert indexes["mode"] == "online" and indexes["exclusive"] == {}
    assert [list(s["taken"].values()) for s in indexes["statements"]] == [["SHARE UPDATE EXCLUSIVE"]] * 13
    assert indexes["statements"][0]["taken"] == {"public.threats": "SHARE UPDATE EXCLUSIVE"}
    assert result["reversible"] and result["schema_restored"] and result["data_restored"], result.get("down_error")
    assert set(result["figures_after_up"]) == {"public.metadata"}
    assert result["lines"][1].startswith("000017 enhance_metadata: ")
    assert "metadata ACCESS EXCLUSIVE" in result["lines"][1] and "(rewritten); down: ok" in result["lines"][1]
    assert result["dropped"] and scratch not in databases(db)
    assert production(db) == before


def test_an_access_exclusive_lock_over_the_budget_stops_before_production(copy):
    db, backup, scratch = copy
    before = production(db)
    result = rehearse(db, backup, scratch, max_exclusive_seconds=0.001)
    assert result["failed"]
    assert "migration 000017 enhance_metadata held an ACCESS EXCLUSIVE lock on public.metadata" in result["msg"]
    assert "longer than max_exclusive_seconds (0.001 s)" in result["msg"]
    assert "Production was not changed" in result["msg"]
    assert [item["table"] for item in result["exclusive_over"]] == ["public.metadata"]
    assert scratch not in databases(db) and production(db) == before


def test_a_migration_that_fails_on_existing_rows_fails_in_the_rehearsal_naming_file_line_statement_and_error(
        copy, tmp_path):
    db, backup, scratch = copy
    path = migrations_with(tmp_path, 17, "up", "ALTER TABLE threats ADD CONSTRAINT no_threats CHECK (false);")
    before = production(db)
    result = rehearse(db, backup, scratch, path=path)
    assert result["failed"] and result["up_ok"] is False
    message = result["msg"]
    assert "The migration failed in the rehearsal on the verified copy" in message
    line = next(number for number, text in enumerate(next(path.glob("000017_*.up.sql")).read_text().splitlines(), 1)
                if "no_threats" in text)
    assert f"000017_enhance_metadata.up.sql at line {line}:" in message, message
    assert 'check constraint "no_threats" of relation "threats" is violated by some row' in message
    assert "[SQLSTATE 23514]" in message and "Statement: ALTER TABLE threats ADD CONSTRAINT no_threats" in message
    assert result["up"][1]["ok"] is False and result["down"] == []
    assert scratch not in databases(db) and production(db) == before


def test_a_failing_down_file_says_the_planned_rollback_will_not_work_and_require_reversible_stops(copy, tmp_path):
    db, backup, scratch = copy
    path = migrations_with(tmp_path, 16, "down", "SELECT 1/0;")
    before = production(db)
    result = rehearse(db, backup, scratch, path=path)
    assert not result.get("failed"), result.get("msg")
    assert result["up_ok"] and result["down_ok"] is False and result["reversible"] is False
    assert "000016_add_performance_indexes.down.sql" in result["down_error"]
    assert "division by zero" in result["down_error"]
    assert "The planned rollback would not work" in str(result.get("warnings"))
    assert result["lines"][-1].startswith("rollback: the planned rollback would NOT work")

    restored = run_module("pg_restore_backup", {"backup": backup, "target_db": scratch, "scratch": True,
                                                "pg_bin_dir": str(db.server.client_bindir),
                                                **db.module_args(), "login_db": "postgres"})
    assert restored.get("verified"), restored.get("msg")
    refused = rehearse(db, backup, scratch, path=path, require_reversible=True)
    assert refused["failed"] and "The planned rollback would not work" in refused["msg"]
    assert "require_reversible is set" in refused["msg"] and "division by zero" in refused["msg"]
    assert scratch not in databases(db) and production(db) == before


def test_a_down_file_that_leaves_the_schema_different_is_not_a_working_rollback(copy, tmp_path):
    db, backup, scratch = copy
    path = migrations_with(tmp_path, 17, "down", "CREATE INDEX left_behind ON metadata (value);")
    result = rehearse(db, backup, scratch, path=path)
    assert result["down_ok"] and result["schema_restored"] is False and result["reversible"] is False
    assert "index public.left_behind is new" in result["down_error"]


def test_the_rehearsal_refuses_a_database_that_is_not_the_verified_scratch_copy(copy):
    db, backup, scratch = copy
    before = production(db)
    result = rehearse(db, backup, db.name)
    assert result["failed"] and f"Database {db.name} is not the verified scratch copy" in result["msg"]
    assert "Nothing was changed" in result["msg"]
    # Not even when production itself carries the mark of a copy.
    db.query(f"COMMENT ON DATABASE \"{db.name}\" IS 'tmi.migration verification restore of database {db.name}'")
    result = rehearse(db, backup, db.name)
    assert result["failed"] and f"Database {db.name} is not the verified scratch copy" in result["msg"]
    assert production(db) == before
    admin = db.server.connect()
    with admin.cursor() as cur:
        cur.execute(f'DROP DATABASE "{scratch}"')
    admin.close()


def test_drop_scratch_drops_only_the_marked_copy(copy):
    db, backup, scratch = copy
    before = production(db)
    args = {"backup": backup, "drop_scratch": True, **db.module_args(), "login_db": "postgres"}
    assert run_module("pg_restore_backup", {**args, "target_db": db.name})["changed"] is False
    assert run_module("pg_restore_backup", {**args, "target_db": "no_such_database"})["changed"] is False
    dropped = run_module("pg_restore_backup", {**args, "target_db": scratch})
    assert dropped["changed"] is True and scratch not in databases(db)
    assert production(db) == before


def test_an_online_build_that_fails_on_the_data_names_the_servers_error(copy, tmp_path):
    db, backup, scratch = copy
    path = migrations_with(tmp_path, 16, "up", "CREATE UNIQUE INDEX uq_one_threat ON threats (threat_model_id);")
    result = rehearse(db, backup, scratch, path=path)
    assert result["failed"] and result["up"][0]["ok"] is False and result["up"][0]["statements"][-1]["sampled"]
    assert 'could not create unique index "uq_one_threat"' in result["msg"] and "[SQLSTATE 23505]" in result["msg"]
    assert scratch not in databases(db)
