"""Pure helpers of module_utils/migrations.py: naming rules, planning, lock ids, statements."""

from __future__ import annotations

import os
import shutil

import pytest
from ansible_collections.tmi.migration.plugins.module_utils import migrations as m

from tmi_testenv.fixture import MIGRATIONS_DIR, golang_lock_id


@pytest.mark.parametrize("names", [("tmi", "public", "schema_migrations"), ("other_db", "app", "migs"),
                                   ("ünïcode", "public", "schema_migrations")])
def test_advisory_lock_id_matches_golang_migrate(names):
    assert m.advisory_lock_id(*names) == golang_lock_id(*names)
    assert 0 <= m.advisory_lock_id(*names) < 2**32


def test_lock_id_depends_on_every_name():
    ids = {m.advisory_lock_id("a", "b", "c"), m.advisory_lock_id("b", "a", "c"), m.advisory_lock_id("a", "b", "d")}
    assert len(ids) == 3


def make_dir(tmp_path, names):
    for name in names:
        (tmp_path / name).write_text("SELECT 1;\n")
    return str(tmp_path)


def test_read_the_fixture():
    found = m.read_migrations(str(MIGRATIONS_DIR))
    assert sorted(found) == list(range(1, 18))
    assert found[16].title == "add_performance_indexes"
    assert found[16].up.endswith("000016_add_performance_indexes.up.sql")


def test_non_sql_files_are_ignored_but_misnamed_sql_is_an_error(tmp_path):
    directory = make_dir(tmp_path, ["1_a.up.sql", "1_a.down.sql", "README.md"])
    assert sorted(m.read_migrations(directory)) == [1]
    (tmp_path / "2-b.up.sql").write_text("SELECT 1;")
    with pytest.raises(m.MigrationError, match=r"2-b.up.sql does not follow golang-migrate's naming"):
        m.read_migrations(directory)


def test_missing_directory():
    with pytest.raises(m.MigrationError, match="does not exist or is not a directory"):
        m.read_migrations("/nonexistent/migrations")


def test_empty_directory(tmp_path):
    with pytest.raises(m.MigrationError, match="holds no"):
        m.read_migrations(str(tmp_path))


def test_duplicate_version(tmp_path):
    directory = make_dir(tmp_path, ["16_a.up.sql", "016_b.up.sql"])
    with pytest.raises(m.MigrationError, match="Duplicate up migration for version 16"):
        m.read_migrations(directory)


def test_version_zero_is_refused(tmp_path):
    with pytest.raises(m.MigrationError, match="version 0"):
        m.read_migrations(make_dir(tmp_path, ["0_init.up.sql"]))


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_unreadable_file(tmp_path):
    directory = make_dir(tmp_path, ["1_a.up.sql"])
    (tmp_path / "1_a.up.sql").chmod(0)
    with pytest.raises(m.MigrationError, match="not readable"):
        m.read_migrations(directory)


def test_a_file_that_is_not_text_is_refused(tmp_path):
    (tmp_path / "1_a.up.sql").write_bytes(b"SELECT '\xff\xfe';\n")
    with pytest.raises(m.MigrationError, match=r"1_a.up.sql is not valid UTF-8 text"):
        m.read_migrations(str(tmp_path))


def test_a_directory_named_like_a_migration_is_refused(tmp_path):
    (tmp_path / "1_a.up.sql").mkdir()
    with pytest.raises(m.MigrationError, match="is named like a migration but is not a regular file"):
        m.read_migrations(str(tmp_path))


def test_resolve_target():
    found = m.read_migrations(str(MIGRATIONS_DIR))
    assert m.resolve_target(found, "latest") == 17
    assert m.resolve_target(found, "16") == 16
    assert m.resolve_target(found, 0) == 0
    with pytest.raises(m.MigrationError, match="target_version 18 has no migration file; the files hold versions 1 to"):
        m.resolve_target(found, "18")
    with pytest.raises(m.MigrationError, match="'latest' or a whole number"):
        m.resolve_target(found, "seventeen")


def test_plan_up_and_down_record_golang_migrate_targets():
    found = m.read_migrations(str(MIGRATIONS_DIR))
    up = m.plan(found, 15, 17)
    assert [(s[0].version, s[1], s[2]) for s in up] == [(16, "up", 16), (17, "up", 17)]
    down = m.plan(found, 17, 15)
    assert [(s[0].version, s[1], s[2]) for s in down] == [(17, "down", 16), (16, "down", 15)]
    assert [(s[0].version, s[2]) for s in m.plan(found, 2, 0)] == [(2, 1), (1, 0)]
    assert m.plan(found, 17, 17) == []


def test_plan_refuses_down_without_down_file(tmp_path):
    directory = make_dir(tmp_path, ["1_a.up.sql", "1_a.down.sql", "2_b.up.sql"])
    found = m.read_migrations(directory)
    assert len(m.plan(found, 0, 2)) == 2
    with pytest.raises(m.MigrationError, match="Version 2 has no down file"):
        m.plan(found, 2, 1)


def test_plan_refuses_up_without_up_file(tmp_path):
    found = m.read_migrations(make_dir(tmp_path, ["1_a.up.sql", "2_b.down.sql", "3_c.up.sql"]))
    with pytest.raises(m.MigrationError, match="Version 2 has a down file but no up file"):
        m.plan(found, 1, 3)


def test_plan_refuses_a_gap_it_would_cross(tmp_path):
    directory = make_dir(tmp_path, ["1_a.up.sql", "2_b.up.sql", "4_d.up.sql"])
    found = m.read_migrations(directory)
    assert len(m.plan(found, 0, 2)) == 2  # the gap is not crossed
    with pytest.raises(m.MigrationError, match="Migration 000003 is missing: versions jump from 2 to 4"):
        m.plan(found, 2, 4)


def test_timestamp_versions_have_no_gaps(tmp_path):
    found = m.read_migrations(make_dir(tmp_path, ["20250101120000_a.up.sql", "20250301090000_b.up.sql"]))
    assert len(m.plan(found, 0, 20250301090000)) == 2


def test_plan_refuses_an_unknown_current_version():
    found = m.read_migrations(str(MIGRATIONS_DIR))
    with pytest.raises(m.MigrationError, match="database is at version 42, which no file"):
        m.plan(found, 42, 17)


def test_split_respects_dollar_quotes_comments_and_strings():
    body = (MIGRATIONS_DIR / "000013_create_modified_at_triggers.up.sql").read_text()
    statements = m.split_statements(body)
    assert len(statements) == 6
    assert "NEW.modified_at = CURRENT_TIMESTAMP;" in statements[0]
    assert m.split_statements("SELECT 'a;b'; -- c;d\nSELECT $x$;$x$;") == ["SELECT 'a;b'", "SELECT $x$;$x$"]


def test_index_only_and_autocommit_classification():
    index_only = (MIGRATIONS_DIR / "000016_add_performance_indexes.up.sql").read_text()
    assert m.is_index_only(index_only)
    assert not m.is_index_only((MIGRATIONS_DIR / "000017_enhance_metadata.up.sql").read_text())
    assert not m.needs_autocommit(index_only)
    assert m.needs_autocommit("CREATE INDEX CONCURRENTLY i ON t (a);")
    assert m.needs_autocommit("VACUUM t;")
    assert m.needs_autocommit("REINDEX (CONCURRENTLY) INDEX i;")
    assert not m.needs_autocommit("REINDEX INDEX i; ALTER TABLE t ADD COLUMN b int;")


def test_concurrent_builds_keep_the_whole_definition():
    body = (MIGRATIONS_DIR / "000016_add_performance_indexes.up.sql").read_text()
    builds = m.concurrent_index_builds(body)
    assert len(builds) == 13
    by_name = {name: statement for name, _schema, statement in builds}
    assert all("CONCURRENTLY IF NOT EXISTS" in s for s in by_name.values())
    assert "INCLUDE (name, severity, status, priority, mitigated)" in by_name["idx_threats_threat_model_id_covering"]
    assert "WHERE entity_type = 'threat'" in by_name["idx_metadata_threat_entity"]
    assert "created_at DESC" in by_name["idx_threats_threat_model_id_created_at"]


def test_concurrent_builds_refuse_unnamed_indexes_and_other_statements():
    with pytest.raises(m.MigrationError, match="unnamed CREATE INDEX on threats"):
        m.concurrent_index_builds("CREATE INDEX ON threats (name);")
    with pytest.raises(m.MigrationError, match="only to files made of CREATE INDEX"):
        m.concurrent_index_builds("CREATE INDEX i ON t (a); DROP TABLE t;")


def test_locate_error_gives_line_and_statement():
    body = "CREATE TABLE a (x int);\n\nALTER TABLE a\n  ADD COLUMN y nosuchtype;\n"
    position = body.index("nosuchtype") + 1
    line, statement = m.locate_error(body, position)
    assert line == 4
    assert statement == "ALTER TABLE a\n  ADD COLUMN y nosuchtype"
    assert m.locate_error(body, None) == (None, None)


def test_file_sha256(tmp_path):
    path = tmp_path / "x.sql"
    path.write_bytes(b"SELECT 1;\n")
    assert m.file_sha256(str(path)) == __import__("hashlib").sha256(b"SELECT 1;\n").hexdigest()
    shutil.rmtree(tmp_path)


@pytest.mark.parametrize("text, where", [
    ("-- header\nSELECT 1;\n\nALTER TABLE metadata\n    ADD CONSTRAINT;\n", "at line 5, column 19"),
    ("SELECT 'üü';\nSELEC x;\n", "at line 2, column 1"),  # columns count characters, not bytes
    ("SELECT 1;\nSELECT 'unterminated\n", "at line 2, column 8"),
])
def test_check_syntax_names_the_file_line_and_column(tmp_path, text, where):
    path = tmp_path / "000001_bad.up.sql"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(m.MigrationError) as error:
        m.check_syntax(str(path))
    message = str(error.value)
    assert message.startswith(f"File {path} does not parse as PostgreSQL SQL {where}: ")
    assert "at index" not in message and "nothing was changed" in message


def test_check_syntax_accepts_the_fixture():
    for path in sorted(MIGRATIONS_DIR.glob("*.sql")):
        m.check_syntax(str(path))
