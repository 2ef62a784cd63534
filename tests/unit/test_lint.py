"""Pure functions of module_utils/lint.py: squawk-like findings per statement, graded by the table's size."""

from __future__ import annotations

import pytest
from ansible_collections.tmi.migration.plugins.module_utils import analysis, lint

SMALL = dict(kind="r", rows=120, bytes=64 * 1024)
MEDIUM = dict(kind="r", rows=250000, bytes=60 * 1024 * 1024)
LARGE = dict(kind="r", rows=5000000, bytes=900 * 1024 * 1024)
SIZES = {"public.t": LARGE, "public.u": SMALL, "public.m": MEDIUM}
INDEX_TABLES = {"public.t_x": "public.t", "public.u_x": "public.u"}


def run(*sqls, sizes=None, online=False, direction="up", user_functions=(), **kwargs):
    sizes = SIZES if sizes is None else sizes
    files = [(i, f"f{i}", direction, sql) for i, sql in enumerate(sqls, 1)]
    result = analysis.analyse_plan(files, index_tables=INDEX_TABLES, user_functions=user_functions, **kwargs)
    analysis.review(result, files, online_index_builds=online, user_functions=user_functions, sizes=sizes)
    return result["lint"]


def rules(*sqls, **kwargs):
    return [(f["rule"], f["table"], f["severity"]) for f in run(*sqls, **kwargs)]


# (statement on an existing table, [(rule, table)]) - the large table t, so each graded finding is an error.
STATEMENTS = [
    # constraint-missing-not-valid
    ("ALTER TABLE t ADD CONSTRAINT c CHECK (x > 0)", [("constraint-missing-not-valid", "public.t")]),
    ("ALTER TABLE t ADD CONSTRAINT c CHECK (x > 0) NOT VALID", []),
    ("ALTER TABLE t ADD CONSTRAINT n NOT NULL x", [("constraint-missing-not-valid", "public.t")]),
    ("ALTER TABLE t ADD CONSTRAINT c CHECK (x > 0), ADD CONSTRAINT d CHECK (y > 0)",
     [("constraint-missing-not-valid", "public.t")] * 2),
    ("ALTER TABLE t VALIDATE CONSTRAINT c", []),
    ("ALTER TABLE t ADD COLUMN a int CHECK (a > 0)", []),
    # adding-foreign-key-constraint
    ("ALTER TABLE t ADD CONSTRAINT f FOREIGN KEY (u_id) REFERENCES u (id)",
     [("adding-foreign-key-constraint", "public.t")]),
    ("ALTER TABLE t ADD CONSTRAINT f FOREIGN KEY (u_id) REFERENCES u (id) NOT VALID", []),
    ("ALTER TABLE t ADD COLUMN u_id int REFERENCES u (id)", [("adding-foreign-key-constraint", "public.t")]),
    # disallowed-unique-constraint, adding-serial-primary-key-field
    ("ALTER TABLE t ADD CONSTRAINT uq UNIQUE (x)", [("disallowed-unique-constraint", "public.t")]),
    ("ALTER TABLE t ADD COLUMN a int UNIQUE", [("disallowed-unique-constraint", "public.t")]),
    ("ALTER TABLE t ADD CONSTRAINT uq UNIQUE USING INDEX t_x", []),
    ("ALTER TABLE t ADD PRIMARY KEY (id)", [("adding-serial-primary-key-field", "public.t")]),
    ("ALTER TABLE t ADD CONSTRAINT pk PRIMARY KEY USING INDEX t_x", []),
    # changing-column-type
    ("ALTER TABLE t ALTER COLUMN x TYPE bigint", [("changing-column-type", "public.t")]),
    ("ALTER TABLE t ALTER COLUMN x SET DATA TYPE text USING x::text", [("changing-column-type", "public.t")]),
    # adding-not-nullable-field, adding-required-field
    ("ALTER TABLE t ALTER COLUMN x SET NOT NULL", [("adding-not-nullable-field", "public.t")]),
    ("ALTER TABLE t ALTER COLUMN x DROP NOT NULL", []),
    ("ALTER TABLE t ADD COLUMN a int NOT NULL", [("adding-required-field", "public.t")]),
    ("ALTER TABLE t ADD COLUMN a int NOT NULL DEFAULT 0", []),
    ("ALTER TABLE IF EXISTS t ADD COLUMN IF NOT EXISTS a int NOT NULL", [("adding-required-field", "public.t")]),
    # adding-field-with-default: volatile only (PostgreSQL 11+ stores a non-volatile default once)
    ("ALTER TABLE t ADD COLUMN a float DEFAULT random()", [("adding-field-with-default", "public.t")]),
    ("ALTER TABLE t ADD COLUMN a uuid DEFAULT gen_random_uuid()", [("adding-field-with-default", "public.t")]),
    ("ALTER TABLE t ADD COLUMN a text DEFAULT md5(random()::text)", [("adding-field-with-default", "public.t")]),
    ("ALTER TABLE t ADD COLUMN a timestamptz DEFAULT clock_timestamp()", [("adding-field-with-default", "public.t")]),
    ("ALTER TABLE t ADD COLUMN a bigint DEFAULT nextval('s')", [("adding-field-with-default", "public.t")]),
    ("ALTER TABLE t ADD COLUMN a uuid DEFAULT ext.uuid_make()", [("adding-field-with-default", "public.t")]),
    ("ALTER TABLE t ADD COLUMN a bigserial", [("adding-field-with-default", "public.t")]),
    ("ALTER TABLE t ADD COLUMN a bigint GENERATED ALWAYS AS IDENTITY", [("adding-field-with-default", "public.t")]),
    ("ALTER TABLE t ADD COLUMN a int GENERATED ALWAYS AS (x * 2) STORED", [("adding-field-with-default", "public.t")]),
    ("ALTER TABLE t ADD COLUMN a int GENERATED ALWAYS AS (x * 2) VIRTUAL", []),
    ("ALTER TABLE t ADD COLUMN a int NOT NULL DEFAULT random()", [("adding-field-with-default", "public.t")]),
    ("ALTER TABLE t ADD COLUMN a int DEFAULT 5", []),
    ("ALTER TABLE t ADD COLUMN a timestamptz DEFAULT now()", []),
    ("ALTER TABLE t ADD COLUMN a timestamp DEFAULT timezone('utc', now())", []),
    ("ALTER TABLE t ADD COLUMN a timestamptz DEFAULT current_timestamp", []),
    ("ALTER TABLE t ADD COLUMN a text DEFAULT lower('X')", []),
    ("ALTER TABLE t ADD COLUMN a jsonb DEFAULT '{}'::jsonb", []),
    ("ALTER TABLE t ALTER COLUMN a SET DEFAULT random()", []),  # new rows only: no rewrite
    # require-concurrent-index-creation / -deletion, require-concurrent-reindex
    ("CREATE INDEX t_y ON t (y)", [("require-concurrent-index-creation", "public.t")]),
    ("CREATE UNIQUE INDEX IF NOT EXISTS t_y ON t (y)", [("require-concurrent-index-creation", "public.t")]),
    ("CREATE INDEX CONCURRENTLY t_y ON t (y)", []),
    ("DROP INDEX t_x", [("require-concurrent-index-deletion", "public.t")]),
    ("DROP INDEX IF EXISTS t_x", [("require-concurrent-index-deletion", "public.t")]),
    ("DROP INDEX CONCURRENTLY t_x", []),
    ("REINDEX TABLE t", [("require-concurrent-reindex", "public.t")]),
    ("REINDEX INDEX t_x", [("require-concurrent-reindex", "public.t")]),
    ("REINDEX TABLE CONCURRENTLY t", []),
    # what breaks the running application version
    ("ALTER TABLE t RENAME COLUMN x TO y", [("renaming-column", "public.t")]),
    ("ALTER TABLE t RENAME TO t2", [("renaming-table", "public.t")]),
    ("ALTER TABLE t DROP COLUMN x", [("ban-drop-column", "public.t")]),
    ("ALTER TABLE t DROP COLUMN IF EXISTS x", [("ban-drop-column", "public.t")]),
    ("DROP TABLE t", [("ban-drop-table", "public.t")]),
    ("DROP TABLE IF EXISTS t, u", [("ban-drop-table", "public.t"), ("ban-drop-table", "public.u")]),
    # nothing to say
    ("ALTER TABLE t ALTER COLUMN x SET STATISTICS 100", []),
    ("ALTER TABLE t ADD COLUMN a int", []),
    ("ALTER TABLE t ALTER COLUMN x SET DEFAULT 0", []),
    ("ALTER INDEX t_x RENAME TO t_y", []),
    ("ALTER TABLE t RENAME CONSTRAINT a TO b", []),
    ("CREATE TABLE n (id int PRIMARY KEY, u_id int REFERENCES u (id), c text UNIQUE)", []),
    ("UPDATE t SET x = 1", []),
    ("TRUNCATE t", []),
    ("SET lock_timeout = '1s'", []),
    ("DO $$ BEGIN ALTER TABLE t ADD CONSTRAINT c CHECK (x > 0); END $$", []),
]


@pytest.mark.parametrize("sql,expected", STATEMENTS, ids=[s[0][:60] for s in STATEMENTS])
def test_findings(sql, expected):
    found = run(sql)
    assert [(f["rule"], f["table"]) for f in found] == expected
    for finding in found:
        assert finding["rule"] in lint.RULES
        # a required column fails on any table with rows
        graded = finding["rule"] in lint.GRADED or finding["rule"] == "adding-required-field"
        assert finding["severity"] == ("error" if graded else "warning")
        assert set(finding) == {"version", "direction", "title", "line", "rule", "table", "severity", "message"}
        assert finding["message"].startswith(finding["table"] + " (" + lint.describe_size(SIZES[finding["table"]]))
        assert "Safer" in finding["message"]


@pytest.mark.parametrize("table,severity", [("public.u", "info"), ("public.m", "warning"), ("public.t", "error"),
                                            ("public.nowhere", "warning")])
def test_graded_rules_follow_the_size_of_the_table(table, severity):
    assert rules(f"CREATE INDEX ix ON {table} (x)") == [("require-concurrent-index-creation", table, severity)]


@pytest.mark.parametrize("size,grade", [
    (None, None), ({}, None),
    (dict(rows=9999, bytes=lint.SMALL_BYTES - 1), "small"),
    (dict(rows=None, bytes=1024), "small"),  # never analysed: its bytes say it
    (dict(rows=10000, bytes=1024), "medium"),
    (dict(rows=5, bytes=lint.SMALL_BYTES), "medium"),
    (dict(rows=999999, bytes=lint.LARGE_BYTES - 1), "medium"),
    (dict(rows=lint.LARGE_ROWS, bytes=0), "large"),
    (dict(rows=None, bytes=lint.LARGE_BYTES), "large"),
])
def test_grade(size, grade):
    assert lint.grade(size) == grade


def test_a_foreign_key_is_graded_by_the_larger_of_its_two_tables():
    assert rules("ALTER TABLE u ADD CONSTRAINT f FOREIGN KEY (t_id) REFERENCES t (id)") == [
        ("adding-foreign-key-constraint", "public.u", "error")]
    assert rules("ALTER TABLE u ADD CONSTRAINT f FOREIGN KEY (m_id) REFERENCES m (id)") == [
        ("adding-foreign-key-constraint", "public.u", "warning")]


def test_what_breaks_the_running_application_is_a_warning_whatever_the_size():
    assert rules("ALTER TABLE u RENAME COLUMN x TO y") == [("renaming-column", "public.u", "warning")]
    assert rules("ALTER TABLE u DROP COLUMN x", direction="down") == [("ban-drop-column", "public.u", "info")]


def test_a_required_column_on_a_table_with_rows_is_an_error():
    assert rules("ALTER TABLE u ADD COLUMN a int NOT NULL") == [("adding-required-field", "public.u", "error")]
    assert rules("ALTER TABLE e ADD COLUMN a int NOT NULL", sizes={"public.e": dict(kind="r", rows=0, bytes=8192)}) == [
        ("adding-required-field", "public.e", "warning")]


def test_silent_about_a_table_created_earlier_in_the_plan():
    assert run("CREATE TABLE n (id int, x int);",
               "CREATE INDEX n_x ON n (x); ALTER TABLE n ADD CONSTRAINT c CHECK (x > 0); ALTER TABLE n ALTER COLUMN x "
               "TYPE bigint; ALTER TABLE n ADD COLUMN a int NOT NULL; ALTER TABLE n RENAME COLUMN x TO y;",
               "ALTER TABLE n RENAME TO n2; ALTER TABLE n2 ALTER COLUMN y SET NOT NULL; DROP INDEX n_x; DROP TABLE n2;"
               ) == []
    # in the same file too; and once dropped, a table of that name is not new any more
    assert run("CREATE TABLE n (id int); CREATE INDEX n_id ON n (id);") == []
    assert rules("DROP TABLE n; CREATE TABLE n (id int);", "CREATE INDEX n_id ON n (id);",
                 sizes={"public.n": SMALL}) == [("ban-drop-table", "public.n", "warning")]


def test_a_table_created_from_a_query_is_not_empty():
    assert rules("CREATE TABLE n AS SELECT * FROM t;", "CREATE INDEX n_x ON n (x);") == [
        ("require-concurrent-index-creation", "public.n", "warning")]


def test_a_renamed_table_is_graded_by_its_old_size():
    assert rules("ALTER TABLE t RENAME TO t2;", "CREATE INDEX t2_x ON t2 (x);") == [
        ("renaming-table", "public.t", "warning"), ("require-concurrent-index-creation", "public.t2", "error")]


def test_silent_about_index_only_up_files_that_pg_migrate_builds_online():
    files = ("CREATE INDEX t_y ON t (y);\nCREATE INDEX t_z ON t (z);", "CREATE INDEX t_w ON t (w); SELECT 1;")
    assert [f["version"] for f in run(*files, online=True)] == [2]
    assert [f["version"] for f in run(*files, online=False)] == [1, 1, 2]
    # down files run in a transaction whatever the option
    assert len(run(files[0], online=True, direction="down")) == 2


def test_validate_in_the_same_transaction_as_not_valid():
    found = run("ALTER TABLE t ADD CONSTRAINT c CHECK (x > 0) NOT VALID;\n\nALTER TABLE t VALIDATE CONSTRAINT c;")
    assert [(f["rule"], f["line"]) for f in found] == [("constraint-missing-not-valid", 3)]
    assert "same transaction" in found[0]["message"]
    assert run("ALTER TABLE t ADD CONSTRAINT c CHECK (x > 0) NOT VALID;", "ALTER TABLE t VALIDATE CONSTRAINT c;") == []
    # a file pg_migrate runs statement by statement (it holds CONCURRENTLY) commits the ADD first
    assert run("ALTER TABLE t ADD CONSTRAINT c CHECK (x > 0) NOT VALID; ALTER TABLE t VALIDATE CONSTRAINT c; "
               "CREATE INDEX CONCURRENTLY t_y ON t (y);") == []


def test_a_user_function_in_a_default_counts_as_volatile():
    sql = "ALTER TABLE t ADD COLUMN a int DEFAULT pick()"
    assert run(sql) == []
    assert rules(sql, user_functions={"pick"}) == [("adding-field-with-default", "public.t", "error")]
    assert rules("CREATE FUNCTION pick() RETURNS int LANGUAGE sql AS 'SELECT 1';", sql) == [
        ("adding-field-with-default", "public.t", "error")]


def test_findings_name_their_file_and_line():
    found = run("SELECT 1;", "-- widen\nSELECT 1;\n\nALTER TABLE m ALTER COLUMN x TYPE bigint;\n")
    assert [(f["version"], f["direction"], f["title"], f["line"], f["severity"]) for f in found] == [
        (2, "up", "f2", 4, "warning")]
    assert found[0]["message"].startswith("public.m (about 250,000 rows, 60.0 MB): changes the type of column x")


def test_an_index_of_unknown_table():
    found = run("DROP INDEX nobody_knows;")
    assert [(f["rule"], f["table"], f["severity"]) for f in found] == [
        ("require-concurrent-index-deletion", None, "warning")]
    assert found[0]["message"].startswith("its table (size unknown): drops index nobody_knows")


def test_review_reads_the_sizes_of_the_tables_the_plan_names_in_one_query():
    files = [(3, "three", "up", "CREATE INDEX t_y ON t (y); DROP INDEX u_x; INSERT INTO m SELECT * FROM s.w;")]
    result = analysis.analyse_plan(files, index_tables=INDEX_TABLES)
    queries = []

    def execute(sql, args=None):
        queries.append((sql, args))
        return [("public.t", "r", 2000000, 3 * 1024 ** 3), ("public.u", "r", None, 8192)]

    analysis.review(result, files, execute)
    assert queries == [(lint.SIZES_SQL, (["public.m", "public.t", "public.u", "s.w"],))]
    assert result["sizes"] == {"public.t": dict(kind="r", rows=2000000, bytes=3 * 1024 ** 3),
                               "public.u": dict(kind="r", rows=None, bytes=8192)}
    assert [(f["rule"], f["severity"]) for f in result["lint"]] == [
        ("require-concurrent-index-creation", "error"), ("require-concurrent-index-deletion", "info")]
    assert result["lint_summary"][0].startswith(
        "000003 up three line 1: ERROR require-concurrent-index-creation public.t (about 2,000,000 rows, 3.0 GB): ")
    assert result["lock_summary"] == [
        "000003 up three: public.m ROW EXCLUSIVE (line 1)",
        "000003 up three: public.t SHARE (line 1) - blocks writes",
        "000003 up three: public.u ACCESS EXCLUSIVE (line 1) - blocks reads and writes",
        "000003 up three: s.w ACCESS SHARE (line 1)"]
    # nothing planned, nothing read
    empty = analysis.analyse_plan([])
    analysis.review(empty, [], execute)
    assert len(queries) == 1 and empty["lint"] == [] and empty["sizes"] == {}


def test_lock_summary():
    files = [(1, "one", "up", "SELECT 1;\nALTER TABLE t ADD COLUMN a int;\nCREATE INDEX t_a ON t (a);\n"
                              "ALTER TABLE t ADD CONSTRAINT f FOREIGN KEY (u_id) REFERENCES u (id);"),
             (2, "two", "up", "CREATE INDEX t_b ON t (b);"),
             (3, "three", "up", "SET lock_timeout = '1s';\nCALL p();"),
             (4, "four", "up", "COMMENT ON TABLE t IS 'x';")]
    result = analysis.analyse_plan(files)
    analysis.review(result, files, online_index_builds=True, sizes={})
    assert result["lock_summary"] == [
        "000001 up one: public.t ACCESS EXCLUSIVE (line 2) - blocks reads and writes",
        "000001 up one: public.u SHARE ROW EXCLUSIVE (line 4) - blocks writes",
        "000002 up two: public.t SHARE UPDATE EXCLUSIVE (line 1, built CONCURRENTLY: online_index_builds)",
        "000003 up three line 2: locks UNKNOWN - a CALL of a procedure, whose effect cannot be read statically",
        "000004 up four: public.t SHARE UPDATE EXCLUSIVE (line 1)"]
    analysis.review(result, files, online_index_builds=False, sizes={})
    assert result["lock_summary"][2] == "000002 up two: public.t SHARE (line 1) - blocks writes"
    nothing = analysis.analyse_plan([(5, "five", "up", "SELECT 1;")])
    assert analysis.lock_lines(nothing) == ["000005 up five: no table lock"]


def test_describe_size():
    assert lint.describe_size(None) == "size unknown"
    assert lint.describe_size(dict(rows=None, bytes=100)) == "rows unknown (never analysed), 100 bytes"
    assert lint.describe_size(dict(rows=1234567, bytes=5 * 1024 ** 4)) == "about 1,234,567 rows, 5120.0 GB"


def test_volatile_call():
    import pglast

    def default(expr):
        return pglast.parse_sql(f"SELECT {expr}")[0].stmt.targetList[0].val

    assert lint.volatile_call(default("random() * 2")) == "random()"
    assert lint.volatile_call(default("coalesce(now(), clock_timestamp())")) == "clock_timestamp()"
    assert lint.volatile_call(default("pg_catalog.lower('X')")) is None
    assert lint.volatile_call(default("app.next_id()")) == "app.next_id()"
    assert lint.volatile_call(default("next_id()"), {"next_id"}) == "next_id()"
    assert lint.volatile_call(None) is None
