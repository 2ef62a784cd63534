"""migrate.yml with the rehearsal: the plan runs up and down on the backup's verified copy before
production is touched, and its gates stop the run there with production exactly as it was
(version and dirty flag, every table's figures, Redis settings, config file, maintenance mode).
"""

from __future__ import annotations

import json


def said(result) -> str:
    """The run's output with the callback's line folding undone."""
    return " ".join((result.stdout + result.stderr).split())


def scratch_copies(environment) -> list[str]:
    return [row[0] for row in environment.db.query(
        "SELECT datname FROM pg_database WHERE datname LIKE %s", (environment.db.name + "%_verify_%",))]


def test_a_failing_down_file_is_reported_before_maintenance_and_require_reversible_stops_with_nothing_changed(
        environment):
    """A failing down file: require_reversible stops the run in the rehearsal with nothing changed; without it the
    plan says so before maintenance mode and the run goes on. That second run also proves that a table ending
    otherwise than in the rehearsal is named in a warning (a different check, on 000017's up file)."""
    path = environment.broken_migrations(16, "")
    down = next((environment.tmp_path / "migrations").glob("000016_*.down.sql"))
    down.write_text(down.read_text() + "\nSELECT 1/0;\n")
    before = environment.state()
    result = environment.playbook("migrate.yml", "-e", json.dumps({"tmi_migrations_path": path,
                                                                  "migrate_require_reversible": True}))
    assert result.returncode != 0
    message = said(result)
    assert "Phase rehearsal failed" in message and "The planned rollback would not work" in message
    assert "000016_add_performance_indexes.down.sql" in message and "division by zero" in message
    assert "require_reversible is set" in message and "Production was not changed" in message
    assert "Rollback: none needed (production was not changed: the run stopped in phase rehearsal" in message
    assert environment.state() == before
    assert scratch_copies(environment) == []
    record = environment.records()[-1]
    assert record["rehearsal"]["reversible"] is False and record["maintenance"] != "enabled"
    assert "rollback" not in [phase["phase"] for phase in record["phases"]]

    # Without require_reversible the plan says so before maintenance mode, and the run goes on.
    # In the same copy, a statement whose outcome depends on the database it runs in: on the copy it deletes every
    # threat.
    up = next((environment.tmp_path / "migrations").glob("000017_*.up.sql"))
    up.write_text(up.read_text() + "\nDELETE FROM threats WHERE current_database() LIKE '%\\_verify\\_%';\n")
    result = environment.playbook("migrate.yml", "-e", f"tmi_migrations_path={path}")
    assert result.returncode == 0, result.stdout[-4000:]
    assert "The planned rollback would not work" in said(result)  # the module's warning
    shown = result.stdout.find("rollback: the planned rollback would NOT work")
    assert 0 <= shown < result.stdout.find("TASK [Switch the application to maintenance mode]")
    record = environment.records()[-1]
    assert record["rehearsal"]["reversible"] is False
    assert record["rehearsal"]["lines"][-1].startswith("rollback: the planned rollback would NOT work")
    assert environment.state()["version"] == (17, False)
    assert scratch_copies(environment) == []
    warnings = [w for w in record["validation"]["warnings"] if w["check"] == "differs_from_rehearsal"]
    assert [w["table"] for w in warnings] == ["public.threats"]
    assert "ends with 80 rows instead of the 0 the rehearsal" in warnings[0]["message"]


def test_a_migration_that_fails_on_existing_rows_stops_in_the_rehearsal_with_production_untouched(environment):
    path = environment.broken_migrations(17, "ALTER TABLE threats ADD CONSTRAINT no_threats CHECK (false);")
    before = environment.state()
    result = environment.playbook("migrate.yml", "-e", f"tmi_migrations_path={path}")
    assert result.returncode != 0
    message = said(result)
    assert "Phase rehearsal failed" in message
    assert "The migration failed in the rehearsal on the verified copy" in message
    assert 'check constraint "no_threats" of relation "threats" is violated by some row' in message
    assert "Statement: ALTER TABLE threats ADD CONSTRAINT no_threats CHECK (false)" in message
    assert "Production was not changed" in message and "MAINTENANCE MODE IS ON" not in message
    assert environment.state() == before
    assert scratch_copies(environment) == []
    record = environment.records()[-1]
    assert record["failed"] is True and record["failed_phase"] == "rehearsal"
    assert record["rehearsal"]["up_ok"] is False and not record.get("rollback")
    report = (environment.tmp_path / "runs" / record["run_id"] / "run.md").read_text()
    assert "**The run stopped here: The migration failed in the rehearsal" in report
    assert "| rehearsal | failed |" in report and "— FAILED" in report
    # The last message (the callback folds long messages: compare with the whitespace normalised).
    last = " ".join(result.stdout[result.stdout.rfind("Phase "):].split())
    assert last.startswith("Phase rehearsal failed at ")
    assert "Rollback: none needed (production was not changed" in last


def test_000017_holds_access_exclusive_on_metadata_and_a_tighter_budget_stops_before_production(environment):
    before = environment.state()
    result = environment.playbook("migrate.yml", "-e", "migrate_max_exclusive_seconds=0.001")
    assert result.returncode != 0
    message = said(result)
    assert "migration 000017 enhance_metadata held an ACCESS EXCLUSIVE lock on public.metadata" in message
    assert "longer than max_exclusive_seconds (0.001 s)" in message
    assert environment.state() == before
    rehearsal = environment.records()[-1]["rehearsal"]
    enhance = rehearsal["up"][1]
    assert enhance["version"] == 17 and enhance["rewritten"] == ["public.metadata"]
    assert enhance["exclusive"]["public.metadata"] > 0.001
    assert "metadata ACCESS EXCLUSIVE" in rehearsal["lines"][1] and "(rewritten)" in rehearsal["lines"][1]


def test_with_the_rehearsal_switched_off_the_run_is_as_before(environment):
    """With the rehearsal switched off the run is as before; and a copy the rehearsal did not drop is dropped when
    the run ends. (That the backup drops its own copy when it does not keep it is test_fault_injection's
    migration_17 case.)"""
    # The backup keeps its verified copy, and no rehearsal comes to drop it (as after a failure or --tags).
    result = environment.playbook("migrate.yml", "-e", "backup_keep_scratch=true", "-e", "tmi_rehearse=false")
    assert result.returncode == 0, result.stdout[-4000:]
    assert "TASK [Rehearse the migration" not in result.stdout
    record = environment.records()[-1]
    assert record["rehearsal"] == {} and "rehearsal" not in [phase["phase"] for phase in record["phases"]]
    assert record["backup"]["verified"] is True and record["backup"]["scratch_db"] != ""
    assert "TASK [tmi.migration.backup : Drop the verified copy kept for the rehearsal if it is still there]" in \
        result.stdout
    assert environment.state()["version"] == (17, False)
    assert scratch_copies(environment) == []
