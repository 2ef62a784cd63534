"""Pure functions of module_utils/analysis.py: what each statement of a migration file does to each table."""

from __future__ import annotations

import re

import pytest
from ansible_collections.tmi.migration.plugins.module_utils import analysis

from tmi_testenv.fixture import MIGRATIONS_DIR


def one(sql, **kwargs):
    statements = analysis.analyse_sql(sql, **kwargs)
    assert len(statements) == 1
    return statements[0]


def effects(statement):
    return {table: entry["does"] for table, entry in statement["tables"].items()}


def fk(table, ref, on_delete="a", on_update="a"):
    return dict(table="public." + table, ref_table="public." + ref, on_delete=on_delete, on_update=on_update,
                name=f"{table}_{ref}_fkey")


def plan(*sqls, **kwargs):
    return analysis.analyse_plan([(i, f"f{i}", "up", sql) for i, sql in enumerate(sqls, 1)], **kwargs)


MERGE = ("MERGE INTO a USING b ON a.id = b.id WHEN MATCHED THEN UPDATE SET x = b.x "
         "WHEN NOT MATCHED THEN INSERT VALUES (b.id, b.x)")

# (sql, {table: does}, unknown)
STATEMENTS = [
    ("INSERT INTO a VALUES (1)", {"public.a": ["write"]}, False),
    ("INSERT INTO a SELECT * FROM b", {"public.a": ["write"]}, False),
    ("INSERT INTO a VALUES (1) ON CONFLICT (id) DO UPDATE SET x = 2", {"public.a": ["write"]}, False),
    ("UPDATE a SET x = b.x FROM b WHERE a.id = b.id", {"public.a": ["write"]}, False),
    ("DELETE FROM a USING b WHERE a.id = b.id", {"public.a": ["delete"]}, False),
    ("WITH d AS (DELETE FROM a RETURNING *) INSERT INTO b SELECT * FROM d",
     {"public.a": ["delete"], "public.b": ["write"]}, False),
    ("WITH d AS (DELETE FROM a RETURNING *) SELECT count(*) FROM d", {"public.a": ["delete"]}, False),
    (MERGE, {"public.a": ["delete", "write"]}, False),
    ("TRUNCATE a", {"public.a": ["delete"]}, False),
    ("TRUNCATE a, b CASCADE", {"public.a": ["delete"], "public.b": ["delete"]}, False),
    ("COPY a FROM STDIN", {"public.a": ["write"]}, False),
    ("COPY a TO STDOUT", {}, False),
    ("COPY (SELECT * FROM a) TO STDOUT", {}, False),
    ("CREATE TABLE a (id int)", {"public.a": ["create"]}, False),
    ("CREATE TABLE IF NOT EXISTS a (id int)", {"public.a": ["create"]}, False),
    ("CREATE TABLE c AS SELECT * FROM a", {"public.c": ["create"]}, False),
    ("SELECT * INTO c FROM a", {"public.c": ["create"]}, False),
    ("DROP TABLE a", {"public.a": ["drop"]}, False),
    ("DROP TABLE a, b", {"public.a": ["drop"], "public.b": ["drop"]}, False),
    ("ALTER TABLE a ADD COLUMN x int", {"public.a": ["alter"]}, False),
    ("ALTER TABLE a DROP COLUMN x", {"public.a": ["alter"]}, False),
    ("ALTER TABLE a ALTER COLUMN x TYPE bigint", {"public.a": ["alter"]}, False),
    ("ALTER TABLE a RENAME COLUMN x TO y", {"public.a": ["alter"]}, False),
    ("ALTER TABLE a RENAME TO b", {"public.a": ["rename"], "public.b": ["create"]}, False),
    ("ALTER TABLE a ADD CONSTRAINT a_x_check CHECK (x > 0)", {"public.a": ["none"]}, False),
    ("ALTER TABLE a DROP CONSTRAINT a_x_check", {"public.a": ["none"]}, False),
    ("ALTER TABLE a ALTER COLUMN x SET NOT NULL", {"public.a": ["none"]}, False),
    ("ALTER TABLE a ALTER COLUMN x SET DEFAULT 0", {"public.a": ["none"]}, False),
    ("CREATE INDEX ix ON a (x)", {"public.a": ["none"]}, False),
    ("CREATE UNIQUE INDEX ux ON a (x) INCLUDE (y) WHERE x > 0", {"public.a": ["none"]}, False),
    ("DROP INDEX ix", {}, False),
    ("CREATE TRIGGER t BEFORE UPDATE ON a FOR EACH ROW EXECUTE FUNCTION f()", {"public.a": ["none"]}, False),
    ("CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'", {}, False),
    ("COMMENT ON TABLE a IS 'x'", {}, False),
    ("GRANT SELECT ON a TO bob", {}, False),
    ("CREATE SEQUENCE s", {}, False),
    # A PL/pgSQL DO block is read statement by statement; dynamic SQL or another language is unknown.
    ("DO $$ BEGIN DELETE FROM a; END $$", {"public.a": ["delete"]}, False),
    ("DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'c') THEN "
     "ALTER TABLE a ADD CONSTRAINT c CHECK (x > 0); END IF; END $$", {"public.a": ["none"]}, False),
    ("DO $$ DECLARE r record; BEGIN FOR r IN SELECT id FROM a LOOP UPDATE b SET x = r.id; END LOOP; END $$",
     {"public.b": ["write"]}, False),
    ("DO $$ BEGIN EXECUTE 'DELETE FROM a'; END $$", {}, True),
    ("DO $$ BEGIN PERFORM other.f(); END $$", {}, True),
    ("DO LANGUAGE plpython3u $$ pass $$", {}, True),
    ("CALL p()", {}, True),
    ("SELECT now()", {}, False),
    ("SELECT setval('s', 1)", {}, False),
    ("SELECT pg_catalog.setval('s', 1)", {}, False),
    ("SELECT other.f()", {}, True),
    ("UPDATE a SET x = other.f(x)", {"public.a": ["write"]}, True),
    ("CREATE DATABASE x", {}, True),
    ("ALTER SYSTEM SET work_mem = '1MB'", {}, True),
    ("UPDATE other.t SET x = 1", {"other.t": ["write"]}, False),
    ("DROP TABLE a, other.b", {"public.a": ["drop"], "other.b": ["drop"]}, False),
]


@pytest.mark.parametrize("sql, does, unknown", STATEMENTS, ids=[s[0][:50] for s in STATEMENTS])
def test_statement_kinds(sql, does, unknown):
    statement = one(sql)
    assert effects(statement) == does
    assert bool(statement["unknown"]) is unknown


def test_explain_analyze_runs_its_statement():
    statement = one("EXPLAIN ANALYZE DELETE FROM a")
    assert effects(statement) == {"public.a": ["delete"]} or statement["unknown"]
    assert effects(one("EXPLAIN DELETE FROM a")) == {}


def test_default_schema_qualifies_unqualified_tables_only():
    statement = one("INSERT INTO a SELECT * FROM other.t; ", default_schema="app")
    assert effects(statement) == {"app.a": ["write"]}
    assert effects(one("DELETE FROM other.t", default_schema="app")) == {"other.t": ["delete"]}


@pytest.mark.parametrize("sql, key, column", [
    ("ALTER TABLE a ADD COLUMN x int", "added", "x"),
    ("ALTER TABLE a DROP COLUMN x", "dropped", "x"),
    ("ALTER TABLE a ALTER COLUMN x TYPE bigint", "changed", "x"),
    ("ALTER TABLE a RENAME COLUMN x TO y", "changed", "x"),
])
def test_column_changes(sql, key, column):
    entry = one(sql)["tables"]["public.a"]
    assert entry[key] == [column]
    assert not ({"added", "dropped", "changed"} - {key}) & set(entry)


def test_only_a_type_change_rewrites():
    assert one("ALTER TABLE a ALTER COLUMN x TYPE bigint")["rewrites"] == ["public.a"]
    assert one("ALTER TABLE a ADD COLUMN x int")["rewrites"] == []


def test_rename_table_links_both_names():
    tables = one("ALTER TABLE a RENAME TO b")["tables"]
    assert tables["public.a"]["renamed_to"] == "public.b"
    assert tables["public.b"]["renamed_from"] == "public.a"


def test_creates_and_drops():
    assert one("CREATE TABLE IF NOT EXISTS a (id int)")["creates"]["tables"] == [
        dict(table="public.a", if_not_exists=True)]
    assert one("CREATE TABLE a (id int)")["tables"]["public.a"]["if_not_exists"] is False
    assert one("SELECT 1 INTO c")["creates"]["tables"] == [dict(table="public.c", if_not_exists=False)]
    assert one("ALTER TABLE a ADD CONSTRAINT a_x_check CHECK (x > 0)")["creates"] == {
        "constraints": [dict(table="public.a", name="a_x_check")]}
    assert one("ALTER TABLE a DROP CONSTRAINT a_x_check")["drops"] == {
        "constraints": [dict(table="public.a", name="a_x_check")]}
    assert one("DROP INDEX other.ix")["drops"] == {"indexes": ["other.ix"]}
    assert one("DROP TABLE a, other.b")["drops"] == {"tables": ["public.a", "other.b"]}
    assert one("CREATE FUNCTION g() RETURNS int LANGUAGE sql AS 'SELECT 1'")["creates"] == {"functions": ["g"]}
    created = one("CREATE TABLE a (id int CONSTRAINT a_pk PRIMARY KEY, CONSTRAINT a_chk CHECK (id > 0))")
    assert created["creates"]["constraints"] == [dict(table="public.a", name="a_pk"),
                                                 dict(table="public.a", name="a_chk")]


def test_what_the_catalog_around_a_table_cares_about():
    """Retyped and CASCADE-dropped columns, replica identities, dropped views, a new primary key (hazards.py)."""
    retyped = one("ALTER TABLE a ALTER COLUMN x TYPE bigint")["tables"]["public.a"]
    assert (retyped["changed"], retyped["retyped"]) == (["x"], ["x"])
    assert "retyped" not in one("ALTER TABLE a RENAME COLUMN x TO y")["tables"]["public.a"]
    cascade = one("ALTER TABLE a DROP COLUMN x CASCADE, DROP COLUMN y")["tables"]["public.a"]
    assert (cascade["dropped"], cascade["dropped_cascade"]) == (["x", "y"], ["x"])
    assert one("DROP TABLE a CASCADE")["tables"]["public.a"]["drop_cascade"] is True
    assert "drop_cascade" not in one("DROP TABLE a")["tables"]["public.a"]
    assert one("ALTER TABLE a REPLICA IDENTITY USING INDEX a_x_key")["tables"]["public.a"]["replica_identity"] == \
        dict(identity="index", index="public.a_x_key")
    assert one("ALTER TABLE a REPLICA IDENTITY FULL")["tables"]["public.a"]["replica_identity"] == \
        dict(identity="full", index=None)
    assert one("DROP VIEW IF EXISTS v, other.w")["drops"] == {"views": ["public.v", "other.w"]}
    assert one("DROP MATERIALIZED VIEW mv CASCADE")["drops"] == {"views": ["public.mv"]}
    assert one("ALTER TABLE a ADD PRIMARY KEY (x)")["tables"]["public.a"]["adds_primary_key"] is True


def test_plan_lists_what_the_files_drop_in_order():
    result = plan("DROP INDEX ix; ALTER TABLE a DROP CONSTRAINT a_x_check", "DROP VIEW v; DROP TABLE a",
                  "ALTER INDEX iy RENAME TO iz")
    assert [(d["version"], d["line"], d["kind"], d["name"], d["table"]) for d in result["dropped"]] == [
        (1, 1, "index", "public.ix", None), (1, 1, "constraint", "a_x_check", "public.a"),
        (2, 1, "view", "public.v", None), (2, 1, "table", "public.a", None)]


@pytest.mark.parametrize("sql, spec", [
    ("CREATE INDEX ix ON a (x, y DESC)",
     dict(name="ix", table="public.a", unique=False, columns=["x", "y DESC"], include=[])),
    ("CREATE UNIQUE INDEX ux ON other.a (x) INCLUDE (y, z) WHERE x > 0",
     dict(name="ux", table="other.a", unique=True, columns=["x"], include=["y", "z"], where="x > 0")),
])
def test_index_specs(sql, spec):
    assert one(sql)["creates"]["indexes"] == [spec]


def test_unnamed_index_is_not_expected():
    assert one("CREATE INDEX ON a (x)")["creates"] == {}


@pytest.mark.parametrize("sql, user_functions", [("SELECT f()", ["f"]), ("SELECT * FROM a WHERE f(x)", ("f",))])
def test_user_functions_are_unknown(sql, user_functions):
    assert one(sql)["unknown"] is None
    assert "f" in one(sql, user_functions=user_functions)["unknown"]


def test_a_function_created_earlier_in_the_file_is_unknown_when_called():
    statements = analysis.analyse_sql("CREATE FUNCTION fix() RETURNS void LANGUAGE sql AS 'DELETE FROM a';\n"
                                      "SELECT fix();\nSELECT now();")
    assert [bool(s["unknown"]) for s in statements] == [False, True, False]
    assert "fix" in statements[1]["unknown"]


def test_unknown_reasons_name_the_statement():
    assert "dynamic SQL" in one("DO $$ BEGIN EXECUTE 'SELECT 1'; END $$")["unknown"]
    assert "CALL" in one("CALL p()")["unknown"]
    assert "other.f" in one("SELECT other.f()")["unknown"]
    assert "AlterSystemStmt" in one("ALTER SYSTEM SET work_mem = '1MB'")["unknown"]


def test_lines_are_those_of_the_first_token():
    sql = ("-- header\n\n-- more\nSELECT 1;\n-- c\n\n-- d\nSELECT 2;   SELECT 3;\n\n/* block\n comment */\n"
           "INSERT INTO t\nVALUES (1);\n")
    statements = analysis.analyse_sql(sql)
    assert [s["line"] for s in statements] == [4, 8, 8, 12]
    assert [s["statement"] for s in statements] == ["SELECT 1", "SELECT 2", "SELECT 3", "INSERT INTO t VALUES (1)"]


def test_non_ascii_text_before_a_statement():
    sql = "COMMENT ON TABLE a IS 'résumé, naïve';\nINSERT INTO b VALUES (1);\n\nDELETE FROM c;\n"
    statements = analysis.analyse_sql(sql)
    assert [s["line"] for s in statements] == [1, 2, 4]
    assert [s["statement"] for s in statements] == ["COMMENT ON TABLE a IS 'résumé, naïve'",
                                                    "INSERT INTO b VALUES (1)", "DELETE FROM c"]


def test_non_ascii_text_does_not_crash():
    assert len(analysis.analyse_sql("SELECT 'éé';SELECT 1;")) == 2


def test_requires_tables_no_earlier_statement_creates():
    result = plan("CREATE TABLE t (id int); INSERT INTO u SELECT * FROM t;",
                  "INSERT INTO t VALUES (1); CREATE INDEX ix ON v (x); ALTER TABLE t RENAME TO w; UPDATE w SET id = 2;")
    assert result["requires"] == ["public.u", "public.v"]


def test_drop_if_exists_does_not_require_the_table():
    assert plan("DROP TABLE IF EXISTS legacy;")["requires"] == []


def test_delete_cascades_by_on_delete():
    keys = [fk("child", "parent", "c"), fk("grandchild", "child", "c"), fk("nulled", "parent", "n"),
            fk("defaulted", "parent", "d"), fk("noaction", "parent", "a"), fk("restricted", "parent", "r")]
    tables = plan("DELETE FROM parent WHERE id = 1;", foreign_keys=keys)["tables"]
    assert tables["public.parent"]["does"] == ["delete"]
    assert tables["public.child"]["does"] == ["delete"]
    assert tables["public.grandchild"]["does"] == ["delete"]
    assert tables["public.nulled"]["does"] == ["write"]
    assert tables["public.defaulted"]["does"] == ["write"]
    assert "public.noaction" not in tables and "public.restricted" not in tables
    assert tables["public.child"]["by"][0]["cascade_from"] == "public.parent"
    assert tables["public.grandchild"]["by"][0]["cascade_from"] == "public.child"
    assert "ON DELETE CASCADE" in tables["public.child"]["by"][0]["what"]
    assert "cascade_from" not in tables["public.parent"]["by"][0]


def test_update_cascades_by_on_update():
    keys = [fk("child", "parent", on_update="c"), fk("other", "parent", on_update="a")]
    tables = plan("UPDATE parent SET id = id + 1;", foreign_keys=keys)["tables"]
    assert tables["public.child"]["does"] == ["write"]
    assert "public.other" not in tables


def test_truncate_cascade_reaches_children_whatever_on_delete():
    keys = [fk("child", "parent", "a"), fk("restricted", "parent", "r")]
    assert "public.child" not in plan("TRUNCATE parent;", foreign_keys=keys)["tables"]
    tables = plan("TRUNCATE parent CASCADE;", foreign_keys=keys)["tables"]
    assert tables["public.child"]["does"] == ["delete"] and tables["public.restricted"]["does"] == ["delete"]
    assert "TRUNCATE ... CASCADE" in tables["public.child"]["by"][0]["what"]


def test_truncate_cascade_is_transitive():
    tables = plan("TRUNCATE parent CASCADE;", foreign_keys=[fk("child", "parent"), fk("grandchild", "child")])["tables"]
    assert tables["public.grandchild"]["does"] == ["delete"]


def test_cascade_cycles_end():
    tables = plan("DELETE FROM a;", foreign_keys=[fk("b", "a", "c"), fk("a", "b", "c")])["tables"]
    assert tables["public.b"]["does"] == ["delete"] and tables["public.a"]["does"] == ["delete"]


@pytest.mark.parametrize("sqls, table, state", [
    (["CREATE TABLE t (id int);"], "public.t", "created"),
    (["DROP TABLE t;"], "public.t", "gone"),
    (["CREATE TABLE t (id int);", "INSERT INTO t VALUES (1); DROP TABLE t;"], "public.t", "gone"),
    (["DROP TABLE t;", "CREATE TABLE t (id int);"], "public.t", "created"),
    (["ALTER TABLE t RENAME TO u;"], "public.t", "gone"),
    (["ALTER TABLE t RENAME TO u;"], "public.u", "created"),
    (["UPDATE t SET x = 1;"], "public.t", None),
])
def test_table_state(sqls, table, state):
    assert plan(*sqls)["tables"][table].get("state") == state


def test_plan_merges_per_table_and_records_unknown():
    result = plan("ALTER TABLE t ADD COLUMN a int; UPDATE t SET a = 1;",
                  "-- x\nALTER TABLE t DROP COLUMN b;\nCALL p();")
    change = result["tables"]["public.t"]
    assert change["does"] == ["alter", "write"] and change["added"] == ["a"] and change["dropped"] == ["b"]
    assert [(b["version"], b["line"]) for b in change["by"]] == [(1, 1), (1, 1), (2, 2)]
    assert [(u["version"], u["line"], u["statement"]) for u in result["unknown"]] == [(2, 3, "CALL p()")]


def test_a_function_created_in_an_earlier_file_is_unknown():
    result = plan("CREATE FUNCTION fix() RETURNS void LANGUAGE sql AS 'SELECT 1';", "SELECT fix();")
    assert [u["version"] for u in result["unknown"]] == [2]


def test_expectations_follow_the_files():
    result = plan("CREATE TABLE t (id int); CREATE INDEX keep ON t (id); CREATE INDEX gone ON t (id);"
                  "CREATE TABLE d (id int CONSTRAINT d_pk PRIMARY KEY); CREATE INDEX d_ix ON d (id);"
                  "ALTER TABLE t ADD CONSTRAINT t_keep CHECK (id > 0), ADD CONSTRAINT t_gone CHECK (id < 9);",
                  "DROP INDEX gone; ALTER TABLE t DROP CONSTRAINT t_gone; DROP TABLE d;")
    assert [i["name"] for i in result["expected"]["indexes"]] == ["keep"]
    assert result["expected"]["constraints"] == [dict(table="public.t", name="t_keep")]


def test_expected_index_follows_a_table_rename():
    result = plan("CREATE TABLE t (id int); CREATE INDEX ix ON t (id);", "ALTER TABLE t RENAME TO u;")
    assert [(i["name"], i["table"]) for i in result["expected"]["indexes"]] == [("ix", "public.u")]


def test_projections():
    changes = plan("ALTER TABLE a ADD COLUMN n int; ALTER TABLE b DROP COLUMN x, ALTER COLUMN y TYPE text;"
                   "ALTER TABLE c RENAME COLUMN old TO new; UPDATE d SET x = 1; CREATE INDEX ix ON e (x);")["tables"]
    assert analysis.projections(changes) == {"public.a": [], "public.b": ["x", "y"], "public.c": ["old"]}


def test_summary_lines():
    result = plan("UPDATE t SET x = 1;\nALTER TABLE t ADD COLUMN y int;", "SELECT 1;",
                  "DELETE FROM p;\nDO $$ BEGIN EXECUTE 'SELECT 1'; END $$;", foreign_keys=[fk("c", "p", "c")])
    lines = result["summary"]
    assert lines == analysis.summary_lines(result)
    assert "000001 up f1: public.t write/alter (updates rows; adds column y)" in lines
    assert "000002 up f2: no table" in lines
    assert "000003 up f3: public.p delete (deletes rows)" in lines
    assert any(line.startswith("cascade: public.c rows deleted") for line in lines)
    assert ("000003 up line 2: UNKNOWN effect - a DO block that runs dynamic SQL (EXECUTE), whose effect cannot be "
            "read statically") in lines


def fixture_sql(version):
    (path,) = MIGRATIONS_DIR.glob(f"{version:06d}_*.up.sql")
    return path.read_text()


def test_fixture_000017_changes_metadata_key_and_adds_constraints():
    result = analysis.analyse_plan([(17, "enhance_metadata", "up", fixture_sql(17))])
    metadata = result["tables"]["public.metadata"]
    assert metadata["changed"] == ["key"] and metadata["added"] == [] and metadata["dropped"] == []
    assert "alter" in metadata["does"] and not {"write", "delete"} & set(metadata["does"])
    assert result["unknown"] == [] and result["requires"] == ["public.metadata"]
    assert sorted(c["name"] for c in result["expected"]["constraints"]) == sorted([
        "metadata_entity_type_check", "metadata_key_format_check", "metadata_key_not_empty_check",
        "metadata_value_length_check", "metadata_entity_key_unique"])
    assert analysis.projections(result["tables"]) == {"public.metadata": ["key"]}


def test_fixture_000016_and_000017_expect_every_index():
    files = [(v, "f", "up", fixture_sql(v)) for v in (16, 17)]
    names = set(re.findall(r"CREATE INDEX IF NOT EXISTS (\w+)", files[0][3] + files[1][3]))
    result = analysis.analyse_plan(files)
    assert len(names) == 15
    assert {i["name"] for i in result["expected"]["indexes"]} == names
    covering = [i for i in result["expected"]["indexes"] if i["name"] == "idx_threats_threat_model_id_covering"]
    assert covering[0]["include"] == ["name", "severity", "status", "priority", "mitigated"]
    cell = [i for i in result["expected"]["indexes"] if i["name"] == "idx_metadata_cell_entity"]
    assert cell[0]["where"] == "entity_type = 'cell'" and cell[0]["columns"] == ["entity_id", "key"]
    assert all(set(change["does"]) <= {"none", "alter"} for change in result["tables"].values())


@pytest.mark.parametrize("sql", ["ALTER ROLE app PASSWORD 'hunter2'", "CREATE ROLE x LOGIN PASSWORD 'hunter2'",
                                 "CREATE USER MAPPING FOR app SERVER s OPTIONS (password 'hunter2')"])
def test_statements_that_may_hold_a_password_are_never_returned_as_text(sql):
    result = analysis.analyse_plan([(18, "roles", "up", sql + ";")])
    assert "hunter2" not in repr(result)


def test_a_do_block_assignment_is_read_as_the_expression_it_computes():
    statement = one("DO $$ DECLARE n int; BEGIN n := (SELECT count(*) FROM a); DELETE FROM b; END $$")
    assert statement["unknown"] is None and effects(statement) == {"public.b": ["delete"]}
    assert "my_fn" in one("DO $$ DECLARE n int; BEGIN n := my_fn(); END $$", user_functions={"my_fn"})["unknown"]
