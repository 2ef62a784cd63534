"""pg_migrate's analysis on a real database: the sizes it reads, the lint graded by them, the predicted locks."""

from __future__ import annotations

from conftest import run_module

SETUP = """CREATE TABLE small (id bigint PRIMARY KEY, x int, y int);
CREATE TABLE big (id bigint PRIMARY KEY, x int, y int);
CREATE INDEX big_x ON big (x);
CREATE TABLE huge (id bigint PRIMARY KEY);
"""
FILES = {
    "000001_setup": (SETUP, "DROP TABLE huge, big, small;"),
    "000002_indexes": ("CREATE INDEX big_y ON big (y);\nCREATE INDEX small_y ON small (y);\n",
                       "DROP INDEX big_y;\nDROP INDEX small_y;\n"),
    "000003_changes": ("ALTER TABLE big ALTER COLUMN x SET NOT NULL;\n"
                       "DROP INDEX big_x;\n"
                       "ALTER TABLE small ADD CONSTRAINT small_x CHECK (x > 0);\n"
                       "ALTER TABLE huge ADD COLUMN token uuid DEFAULT gen_random_uuid();\n"
                       "CREATE TABLE fresh (id bigint, x int);\n"
                       "CREATE INDEX fresh_x ON fresh (x);\n"
                       "ALTER TABLE fresh ALTER COLUMN x SET NOT NULL;\n",
                       "DROP TABLE fresh;\nALTER TABLE huge DROP COLUMN token;\n"
                       "ALTER TABLE small DROP CONSTRAINT small_x;\nCREATE INDEX big_x ON big (x);\n"
                       "ALTER TABLE big ALTER COLUMN x DROP NOT NULL;\n"),
}


def migrations(tmp_path):
    directory = tmp_path / "migrations"
    directory.mkdir()
    for name, (up, down) in FILES.items():
        (directory / f"{name}.up.sql").write_text(up)
        (directory / f"{name}.down.sql").write_text(down)
    return directory


def install(db):
    """Version 1 applied, by hand: 20,000 rows in big, 10 in small, and huge a million rows by its statistics."""
    db.query(SETUP)
    db.query("INSERT INTO big SELECT g, g, g FROM generate_series(1, 20000) g")
    db.query("INSERT INTO small SELECT g, g, g FROM generate_series(1, 10) g")
    db.query("INSERT INTO huge SELECT g FROM generate_series(1, 1000) g")
    db.query("ANALYZE big, small, huge")
    # A million rows would take seconds to write; lint reads the planner's estimate, which says a million here
    # (and autovacuum does not analyse huge again meanwhile).
    db.query("ALTER TABLE huge SET (autovacuum_enabled = false)")
    db.query("UPDATE pg_class SET reltuples = 1500000 WHERE oid = 'huge'::regclass")
    db.query("CREATE TABLE schema_migrations (version bigint NOT NULL PRIMARY KEY, dirty boolean NOT NULL); "
             "INSERT INTO schema_migrations VALUES (1, false)")


def lint_of(result):
    return [(f["version"], f["line"], f["rule"], f["table"], f["severity"]) for f in result["analysis"]["lint"]]


def test_status_grades_the_lint_by_the_sizes_of_the_tables_and_predicts_the_locks(tmi_db, tmp_path):
    install(tmi_db)
    path = str(migrations(tmp_path))
    result = run_module("pg_migrate", {"path": path, "operation": "status", "online_index_builds": False,
                                       **tmi_db.module_args()})
    assert not result.get("failed"), result
    analysis = result["analysis"]
    sizes = analysis["sizes"]
    assert sorted(sizes) == ["public.big", "public.huge", "public.small"]  # fresh does not exist yet
    assert (sizes["public.big"]["rows"], sizes["public.small"]["rows"], sizes["public.huge"]["rows"]) == (
        20000, 10, 1500000)
    assert sizes["public.big"]["bytes"] > 500 * 1024 and sizes["public.big"]["kind"] == "r"
    assert lint_of(result) == [
        (2, 1, "require-concurrent-index-creation", "public.big", "warning"),
        (2, 2, "require-concurrent-index-creation", "public.small", "info"),
        (3, 1, "adding-not-nullable-field", "public.big", "warning"),
        # DROP INDEX names no table: the catalog says big_x is big's
        (3, 2, "require-concurrent-index-deletion", "public.big", "warning"),
        (3, 3, "constraint-missing-not-valid", "public.small", "info"),
        (3, 4, "adding-field-with-default", "public.huge", "error"),
        # and nothing about fresh, created by the plan
    ]
    assert analysis["lint_summary"][2].startswith(
        "000003 up changes line 1: WARNING adding-not-nullable-field public.big (about 20,000 rows, ")
    changes = analysis["files"][1]["statements"]
    assert [s["locks"] for s in changes] == [
        {"public.big": "ACCESS EXCLUSIVE"}, {"public.big": "ACCESS EXCLUSIVE"}, {"public.small": "ACCESS EXCLUSIVE"},
        {"public.huge": "ACCESS EXCLUSIVE"}, {}, {"public.fresh": "SHARE"}, {"public.fresh": "ACCESS EXCLUSIVE"}]
    assert not any(s["locks_unknown"] for s in changes)
    assert analysis["lock_summary"] == [
        "000002 up indexes: public.big SHARE (line 1) - blocks writes",
        "000002 up indexes: public.small SHARE (line 2) - blocks writes",
        "000003 up changes: public.big ACCESS EXCLUSIVE (line 1) - blocks reads and writes",
        "000003 up changes: public.fresh ACCESS EXCLUSIVE (line 7) - blocks reads and writes",
        "000003 up changes: public.huge ACCESS EXCLUSIVE (line 4) - blocks reads and writes",
        "000003 up changes: public.small ACCESS EXCLUSIVE (line 3) - blocks reads and writes"]


def test_online_builds_silence_the_index_advice_and_the_lint_stops_nothing(tmi_db, tmp_path):
    install(tmi_db)
    path = str(migrations(tmp_path))
    args = {"path": path, "online_index_builds": True, **tmi_db.module_args()}
    checked = run_module("pg_migrate", args, check_mode=True)
    assert checked["changed"] is True and not checked.get("failed"), checked
    assert [f[:3] for f in lint_of(checked)] == [
        (3, 1, "adding-not-nullable-field"), (3, 2, "require-concurrent-index-deletion"),
        (3, 3, "constraint-missing-not-valid"), (3, 4, "adding-field-with-default")]
    assert checked["analysis"]["lock_summary"][:2] == [
        "000002 up indexes: public.big SHARE UPDATE EXCLUSIVE (line 1, built CONCURRENTLY: online_index_builds)",
        "000002 up indexes: public.small SHARE UPDATE EXCLUSIVE (line 2, built CONCURRENTLY: online_index_builds)"]
    assert tmi_db.scalar("SELECT version FROM schema_migrations") == 1

    applied = run_module("pg_migrate", args)
    assert not applied.get("failed"), applied
    assert [(a["version"], a["mode"]) for a in applied["applied"]] == [(2, "online"), (3, "transaction")]
    assert applied["analysis"]["lint"] == checked["analysis"]["lint"]
