"""The pure parts of the engines the modules became thin around: bookkeeping, migrator, restore, integrity."""

from __future__ import annotations

import hashlib
import json

import pytest
from ansible_collections.tmi.migration.plugins.module_utils import bookkeeping, integrity, migrator, restore
from ansible_collections.tmi.migration.plugins.module_utils.migrations import Migration


def test_the_bookkeeping_tables_are_named_once():
    assert bookkeeping.BOOKKEEPING_TABLES == (
        "public.schema_migrations", "public.tmi_migration_history", "public.tmi_migration_lock")
    assert bookkeeping.OWN_TABLES == ("public.tmi_migration_history", "public.tmi_migration_lock")


@pytest.mark.parametrize(("options", "schema", "tables"), [
    ({}, "public", ["public.schema_migrations", "public.tmi_migration_history", "public.tmi_migration_lock"]),
    ({"state_table": ""}, "app", ["app.schema_migrations", "app.tmi_migration_history", "app.tmi_migration_lock"]),
    ({"state_table": "migs", "history_table": "", "run_lock_table": "ops.lock"}, "app", ["app.migs", "ops.lock"]),
])
def test_bookkeeping_tables_follow_the_table_options(options, schema, tables):
    assert bookkeeping.from_options(options, schema) == tables


def test_the_integrity_checker_leaves_out_the_bookkeeping_tables_and_the_given_ones():
    checker = integrity.Checker.__new__(integrity.Checker)
    checker.params = dict(integrity.DEFAULTS, compare_ignore=["public.audit"])
    checker.schema = "public"
    assert checker.ignored() == {"public.audit", *bookkeeping.BOOKKEEPING_TABLES}
    assert integrity.DEFAULTS["logical_relations"] == [] and integrity.DEFAULTS["tables"] == []


@pytest.mark.parametrize(("rule", "args", "what"), [
    ({"table": "t", "column": "kind", "allowed": ["a", "b"]}, [["a", "b"]], "outside a, b"),
    ({"table": "t", "column": "key", "pattern": "^[a-z]+$"}, ["^[a-z]+$"], "not matching ^[a-z]+$"),
    ({"table": "t", "column": "value", "max_length": "12"}, [12], "longer than 12"),
])
def test_value_rules_become_one_condition_each(rule, args, what):
    _condition, got_args, got_what = integrity.Checker.rule_condition(rule)
    assert (got_args, got_what) == (args, what)


def test_a_value_rule_without_a_kind_is_refused():
    with pytest.raises(ValueError, match=r"t\.c needs allowed, pattern or max_length"):
        integrity.Checker.rule_condition({"table": "t", "column": "c"})


def migration(version, down=True):
    found = Migration(version, f"step_{version}")
    found.up = f"/m/{version:06d}_step.up.sql"
    found.down = found.up.replace(".up.", ".down.") if down else None
    return found


def test_the_plan_and_the_missing_down_files_are_reported():
    steps = [(migration(16), "up", 16), (migration(17, down=False), "up", 17), (migration(18, down=False), "up", 18)]
    assert migrator.plan_dicts(steps[:1]) == [{"version": 16, "title": "step_16", "direction": "up"}]
    warnings, result = [], {}
    migrator.warn_missing_down(warnings.append, steps, result)
    assert result == {"missing_down": [17, 18]}
    assert warnings == ["Migrations 000017, 000018 have no down file: a planned rollback past version 18 is "
                        "impossible once they are applied; a rollback would restore the backup instead. Add the "
                        "down files before migrating if the rollback must keep the writes made after the migration."]
    migrator.warn_missing_down(warnings.append, steps[:1], result)
    assert result == {"missing_down": []} and len(warnings) == 1


def test_the_unrecorded_message_names_the_tables_and_the_options():
    class Found:
        database, schema, table = "app", "public", "schema_migrations"
    message = migrator.unrecorded_message(Found(), ["a", "b", "c", "d", "e", "f"])
    assert message.startswith("Database app has 6 tables in schema public (a, b, c, d, e, ...) but no "
                              "public.schema_migrations state table")
    assert "set state_table and state_schema" in message


@pytest.mark.parametrize(("options", "problem"), [
    ({"target_db": "x" * 64}, "longer than PostgreSQL's 63 bytes"),
    ({"target_db": "é" * 32}, "longer than PostgreSQL's 63 bytes"),
    ({"target_db": "t", "keep_old_count": -1}, "keep_old_count must be 0"),
    ({"target_db": "t", "keep_old_count": 2}, "needs replace and keep_old_pattern"),
    ({"target_db": "t", "keep_old_count": 2, "replace": "db", "keep_old_as": "db_old", "keep_old_pattern": "("},
     "keep_old_pattern is not a regular expression"),
    ({"target_db": "t", "keep_old_count": 2, "replace": "db", "keep_old_as": "db_old", "keep_old_pattern": "db_.*",
      "drop_old": True}, "exclude each other"),
    ({"target_db": "t", "keep_old_count": 2, "replace": "db", "keep_old_as": "other", "keep_old_pattern": "db_.*"},
     "keep_old_as other does not match keep_old_pattern db_.*"),
])
def test_restore_options_are_checked_before_anything(options, problem):
    assert problem in restore.options_problem(options)


def test_good_restore_options_pass():
    assert restore.options_problem({"target_db": "é" * 31}) is None
    assert restore.options_problem({"target_db": "t", "keep_old_count": 2, "replace": "db", "keep_old_as": "db_old",
                                    "keep_old_pattern": "db_.*"}) is None


def test_a_backup_is_loaded_only_when_every_file_matches_its_manifest(tmp_path):
    with pytest.raises(restore.RestoreError, match=r"has no manifest\.json"):
        restore.load_manifest(str(tmp_path))
    (tmp_path / "db.dump").mkdir()
    (tmp_path / "db.dump" / "toc.dat").write_bytes(b"toc")
    entry = {"size": 3, "sha256": hashlib.sha256(b"toc").hexdigest()}
    (tmp_path / "manifest.json").write_text(json.dumps({"dump": "db.dump", "files": {"toc.dat": entry}}))
    manifest, dump = restore.load_manifest(str(tmp_path))
    assert dump == str(tmp_path / "db.dump") and manifest["files"]["toc.dat"] == entry
    (tmp_path / "db.dump" / "toc.dat").write_bytes(b"TOC")
    with pytest.raises(restore.RestoreError, match="does not match the sha256"):
        restore.load_manifest(str(tmp_path))
    (tmp_path / "db.dump" / "toc.dat").unlink()
    with pytest.raises(restore.RestoreError, match="is missing"):
        restore.load_manifest(str(tmp_path))
