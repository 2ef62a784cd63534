"""The table-level locks module_utils/analysis.py predicts per statement, by PostgreSQL's documentation.

Each mode below is the one the documentation gives (explicit-locking.html, the command's own page); the
ones no page states were read from pg_locks on PostgreSQL 18 (noted "observed"). The statements are
written against SCHEMA, on which tests/integration/test_predicted_locks_observed.py runs them and reads
pg_locks.
"""

from __future__ import annotations

import pytest
from ansible_collections.tmi.migration.plugins.module_utils import analysis, locks

AS, RS, RE, SUE, SHARE, SRE, EXCL, AE = locks.MODES
# The catalog the statements are written against: t references u (t_u_fk), c references t (c_t_fk).
SCHEMA = """
CREATE SCHEMA s;
CREATE SCHEMA other;
CREATE TABLE u (id int PRIMARY KEY, x int);
CREATE TABLE t (id int NOT NULL, x int, y int, u_id int, p int, a int);
CREATE UNIQUE INDEX ux ON t (id);
CREATE INDEX ix ON t (x);
CREATE TABLE c (id int PRIMARY KEY, t_id int CONSTRAINT c_t_fk REFERENCES t (id) ON DELETE CASCADE);
ALTER TABLE t ADD CONSTRAINT ck CHECK (x > 0) NOT VALID;
ALTER TABLE t ADD CONSTRAINT t_u_fk FOREIGN KEY (u_id) REFERENCES u (id) NOT VALID;
CREATE TABLE s.w (id int PRIMARY KEY, x int);
CREATE INDEX jx ON s.w (x);
CREATE MATERIALIZED VIEW mv AS SELECT g AS id FROM generate_series(1, 3) g;
CREATE UNIQUE INDEX mv_id ON mv (id);
CREATE VIEW v AS SELECT id FROM u;
CREATE FUNCTION trg() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NEW; END$$;
CREATE TRIGGER tg BEFORE UPDATE ON t FOR EACH ROW EXECUTE FUNCTION trg();
CREATE POLICY pol ON t USING (true);
CREATE RULE r AS ON INSERT TO u DO ALSO NOTIFY u;
CREATE TABLE p (id int, k int) PARTITION BY RANGE (k);
CREATE TABLE p1 (id int, k int);
CREATE TABLE p2 PARTITION OF p FOR VALUES FROM (100) TO (200);
"""
FOREIGN_KEYS = [dict(name="t_u_fk", table="public.t", ref_table="public.u", on_delete="a", on_update="a"),
                dict(name="c_t_fk", table="public.c", ref_table="public.t", on_delete="c", on_update="a")]
INDEX_TABLES = {"public.ix": "public.t", "public.ux": "public.t", "s.jx": "s.w", "public.mv_id": "public.mv",
                "public.u_pkey": "public.u", "public.c_pkey": "public.c", "s.w_pkey": "s.w"}


def predicted(sql):
    result = analysis.analyse_plan([(1, "f", "up", sql)], foreign_keys=FOREIGN_KEYS, index_tables=INDEX_TABLES)
    statements = result["files"][0]["statements"]
    assert len(statements) == 1
    return statements[0]


def t(mode, **others):
    return {"public.t": mode, **{"public." + k: v for k, v in others.items()}}


# (statement, {table: mode})
STATEMENTS = [
    # ALTER TABLE: the strongest mode over its subcommands (sql-altertable.html).
    ("ALTER TABLE t ADD COLUMN z int", t(AE)),
    ("ALTER TABLE t ADD COLUMN z int REFERENCES u (id)", t(AE, u=SRE)),
    ("ALTER TABLE t DROP COLUMN y", t(AE)),
    ("ALTER TABLE t ALTER COLUMN y TYPE bigint", t(AE)),
    ("ALTER TABLE t ALTER COLUMN y SET DEFAULT 1", t(AE)),
    ("ALTER TABLE t ALTER COLUMN y DROP DEFAULT", t(AE)),
    ("ALTER TABLE t ALTER COLUMN y SET NOT NULL", t(AE)),
    ("ALTER TABLE t ALTER COLUMN y DROP NOT NULL", t(AE)),
    ("ALTER TABLE t ALTER COLUMN y SET STATISTICS 100", t(SUE)),
    ("ALTER TABLE t ALTER COLUMN y SET (n_distinct = 5)", t(SUE)),
    ("ALTER TABLE t ALTER COLUMN y SET STORAGE PLAIN", t(AE)),
    ("ALTER TABLE t ADD CONSTRAINT ck2 CHECK (y > 0)", t(AE)),
    ("ALTER TABLE t ADD CONSTRAINT ck2 CHECK (y > 0) NOT VALID", t(AE)),
    ("ALTER TABLE t ADD CONSTRAINT uq UNIQUE (y)", t(AE)),
    ("ALTER TABLE t ADD CONSTRAINT uq UNIQUE USING INDEX ux", t(AE)),
    ("ALTER TABLE t ADD PRIMARY KEY (id)", t(AE)),
    ("ALTER TABLE t ADD CONSTRAINT ex EXCLUDE USING btree (y WITH =)", t(AE)),
    ("ALTER TABLE t ADD CONSTRAINT fk FOREIGN KEY (u_id) REFERENCES u (id)", t(SRE, u=SRE)),
    ("ALTER TABLE t ADD CONSTRAINT fk FOREIGN KEY (u_id) REFERENCES u (id) NOT VALID", t(SRE, u=SRE)),
    ("ALTER TABLE t ADD CONSTRAINT fk FOREIGN KEY (p) REFERENCES t (id)", t(SRE)),
    ("ALTER TABLE t VALIDATE CONSTRAINT ck", t(SUE)),
    ("ALTER TABLE t VALIDATE CONSTRAINT t_u_fk", t(SUE, u=RS)),
    ("ALTER TABLE t DROP CONSTRAINT ck", t(AE)),
    ("ALTER TABLE t DROP CONSTRAINT t_u_fk", t(AE, u=AE)),  # observed: its triggers on u go too
    ("ALTER TABLE t DISABLE TRIGGER tg", t(SRE)),
    ("ALTER TABLE t ENABLE TRIGGER ALL", t(SRE)),
    ("ALTER TABLE t ENABLE REPLICA TRIGGER tg", t(SRE)),
    ("ALTER TABLE u DISABLE RULE r", {"public.u": AE}),
    ("ALTER TABLE t SET (fillfactor = 70)", t(SUE)),
    ("ALTER TABLE t SET (autovacuum_enabled = false, toast.autovacuum_enabled = false)", t(SUE)),
    ("ALTER TABLE t SET (user_catalog_table = true)", t(AE)),
    ("ALTER TABLE t RESET (fillfactor)", t(SUE)),
    ("ALTER TABLE t CLUSTER ON ix", t(SUE)),
    ("ALTER TABLE t SET WITHOUT CLUSTER", t(SUE)),
    ("ALTER TABLE t SET LOGGED", t(AE)),
    ("ALTER TABLE t SET TABLESPACE pg_default", t(AE)),
    ("ALTER TABLE t OWNER TO CURRENT_USER", t(AE)),
    ("ALTER TABLE t REPLICA IDENTITY FULL", t(AE)),
    ("ALTER TABLE t ENABLE ROW LEVEL SECURITY", t(AE)),
    ("ALTER TABLE t ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY", t(AE)),
    ("ALTER TABLE t INHERIT u", t(AE, u=SUE)),
    ("ALTER TABLE p ATTACH PARTITION p1 FOR VALUES FROM (0) TO (10)", {"public.p": SUE, "public.p1": AE}),
    ("ALTER TABLE p DETACH PARTITION p2", {"public.p": AE, "public.p2": AE}),
    ("ALTER TABLE p DETACH PARTITION p2 CONCURRENTLY", {"public.p": SUE, "public.p2": SUE}),
    ("ALTER TABLE t ADD COLUMN z int DEFAULT 0, ALTER COLUMN y SET STATISTICS 5", t(AE)),
    ("ALTER TABLE t ALTER COLUMN y SET STATISTICS 5, ADD CONSTRAINT f FOREIGN KEY (u_id) REFERENCES u (id)",
     t(SRE, u=SRE)),
    ("ALTER TABLE s.w ADD COLUMN z int", {"s.w": AE}),
    ("ALTER TABLE IF EXISTS t ADD COLUMN z int", t(AE)),
    ("ALTER MATERIALIZED VIEW mv SET (fillfactor = 50)", {"public.mv": SUE}),
    ("ALTER INDEX ix SET (fillfactor = 50)", {}),
    ("ALTER TABLE t SET SCHEMA other", t(AE)),
    # Renames.
    ("ALTER TABLE t RENAME TO t2", t(AE)),
    ("ALTER TABLE t RENAME COLUMN x TO x2", t(AE)),
    ("ALTER TABLE t RENAME CONSTRAINT ck TO ck2", t(AE)),
    ("ALTER TRIGGER tg ON t RENAME TO tg2", t(AE)),  # observed
    ("ALTER INDEX ix RENAME TO ix2", {}),  # SHARE UPDATE EXCLUSIVE on the index alone
    ("ALTER VIEW v RENAME TO v2", {}),
    # Indexes (sql-createindex.html, sql-dropindex.html, sql-reindex.html).
    ("CREATE INDEX ix3 ON t (y)", t(SHARE)),
    ("CREATE UNIQUE INDEX IF NOT EXISTS ix3 ON t (y) WHERE y > 0", t(SHARE)),
    ("CREATE INDEX CONCURRENTLY ix3 ON t (y)", t(SUE)),
    ("CREATE INDEX ON mv (id)", {"public.mv": SHARE}),
    ("DROP INDEX ix", t(AE)),
    ("DROP INDEX CONCURRENTLY ix", t(SUE)),
    ("DROP INDEX s.jx", {"s.w": AE}),
    ("REINDEX TABLE t", t(SHARE)),
    ("REINDEX TABLE CONCURRENTLY t", t(SUE)),
    ("REINDEX INDEX ix", t(SHARE)),
    ("REINDEX (CONCURRENTLY) INDEX ix", t(SUE)),
    # Triggers, policies, rules, statistics, comments, grants.
    ("CREATE TRIGGER tg2 AFTER INSERT ON t FOR EACH ROW EXECUTE FUNCTION trg()", t(SRE)),
    ("DROP TRIGGER tg ON t", t(AE)),  # observed
    ("DROP TRIGGER IF EXISTS tg ON t", t(AE)),
    ("CREATE POLICY p2 ON t USING (true)", t(AE)),
    ("ALTER POLICY pol ON t USING (false)", t(AE)),
    ("DROP POLICY pol ON t", t(AE)),
    ("CREATE RULE r2 AS ON UPDATE TO u DO ALSO NOTIFY u", {"public.u": AE}),
    ("DROP RULE r ON u", {"public.u": AE}),
    ("CREATE STATISTICS st ON x, y FROM t", t(SUE)),
    ("COMMENT ON TABLE t IS 'x'", t(SUE)),
    ("COMMENT ON COLUMN s.w.x IS 'x'", {"s.w": SUE}),
    ("COMMENT ON CONSTRAINT ck ON t IS 'x'", t(AS)),  # observed
    ("COMMENT ON TRIGGER tg ON t IS 'x'", t(AS)),  # observed
    ("COMMENT ON INDEX ix IS 'x'", {}),
    ("GRANT SELECT ON t, s.w TO PUBLIC", {"public.t": AS, "s.w": AS}),  # observed
    ("REVOKE SELECT ON t FROM PUBLIC", t(AS)),
    # Data (explicit-locking.html): ROW EXCLUSIVE on the target, ACCESS SHARE on what is read.
    ("INSERT INTO t (id) VALUES (1)", t(RE)),
    ("INSERT INTO t (id) SELECT id FROM u", t(RE, u=AS)),
    ("UPDATE t SET x = u.x FROM u WHERE u.id = t.id", t(RE, u=AS)),
    ("UPDATE t SET x = 1 WHERE id IN (SELECT id FROM u)", t(RE, u=AS)),
    ("DELETE FROM t USING u WHERE u.id = t.id", t(RE, u=AS)),
    ("MERGE INTO t USING u ON t.id = u.id WHEN MATCHED THEN UPDATE SET x = u.x", t(RE, u=AS)),
    ("WITH d AS (DELETE FROM u RETURNING id) INSERT INTO t (id) SELECT id FROM d", t(RE, u=RE)),
    ("WITH w AS (SELECT id FROM u) SELECT * FROM w", {"public.u": AS}),
    ("SELECT * FROM t", t(AS)),
    ("SELECT * FROM t JOIN u ON true FOR UPDATE", t(RS, u=RS)),
    ("SELECT * FROM t JOIN u ON true FOR UPDATE OF t", t(RS, u=AS)),
    ("COPY t FROM STDIN", t(RE)),
    ("COPY t TO STDOUT", t(AS)),
    ("EXPLAIN UPDATE t SET x = 1", t(RE)),
    ("EXPLAIN ANALYZE UPDATE t SET x = 1", t(RE)),
    # Whole tables.
    ("TRUNCATE c", {"public.c": AE}),
    ("TRUNCATE u CASCADE", {"public.u": AE, "public.t": AE, "public.c": AE}),  # c references t, t references u
    ("DROP TABLE c", {"public.c": AE, "public.t": AE}),  # observed: c's foreign key's triggers on t go too
    ("DROP TABLE t CASCADE", {"public.t": AE, "public.u": AE, "public.c": AE}),
    ("DROP TABLE IF EXISTS t, c CASCADE", {"public.t": AE, "public.u": AE, "public.c": AE}),
    ("DROP MATERIALIZED VIEW mv", {"public.mv": AE}),
    ("DROP VIEW v", {}),
    ("LOCK TABLE t", t(AE)),
    ("LOCK TABLE t IN SHARE MODE", t(SHARE)),
    ("LOCK TABLE t, u IN ROW EXCLUSIVE MODE", t(RE, u=RE)),
    ("LOCK t IN ACCESS SHARE MODE", t(AS)),
    ("REFRESH MATERIALIZED VIEW mv", {"public.mv": AE}),
    ("REFRESH MATERIALIZED VIEW CONCURRENTLY mv", {"public.mv": EXCL}),
    ("CLUSTER t USING ix", t(AE)),
    ("VACUUM FULL t", t(AE)),
    ("VACUUM (ANALYZE) t, u", t(SUE, u=SUE)),
    ("ANALYZE t", t(SUE)),
    # CREATE TABLE: nothing on the new table (nobody else sees it before commit), the documented mode on the rest.
    ("CREATE TABLE n (id int REFERENCES u (id))", {"public.u": SRE}),
    ("CREATE TABLE n (id int, CONSTRAINT f FOREIGN KEY (id) REFERENCES s.w (id))", {"s.w": SRE}),
    ("CREATE TABLE n (LIKE t INCLUDING ALL)", t(AS)),
    ("CREATE TABLE n () INHERITS (t)", t(SUE)),
    ("CREATE TABLE n PARTITION OF p FOR VALUES FROM (10) TO (20)", {"public.p": AE}),
    ("CREATE TABLE n (id int PRIMARY KEY)", {}),
    ("CREATE TABLE n AS SELECT * FROM t", t(AS)),
    ("SELECT * INTO n FROM t", t(AS)),
    ("CREATE VIEW v2 AS SELECT t.id FROM t JOIN u ON true", t(AS, u=AS)),
    ("CREATE MATERIALIZED VIEW mv2 AS SELECT * FROM t", t(AS)),
    ("CREATE SEQUENCE sq OWNED BY t.id", t(AS)),  # observed
    # No table.
    ("CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'", {}),
    ("CREATE TYPE mood AS ENUM ('a')", {}),
    ("SET lock_timeout = '1s'", {}),
    ("DO $$ BEGIN ALTER TABLE u ADD COLUMN z int; END $$", {"public.u": AE}),
]


@pytest.mark.parametrize("sql,expected", STATEMENTS, ids=[s[0][:60] for s in STATEMENTS])
def test_predicted_locks(sql, expected):
    statement = predicted(sql)
    assert statement["locks"] == expected
    assert statement["locks_unknown"] is False


@pytest.mark.parametrize("sql", [
    "CALL p()",
    "SELECT f_user()",  # a function of the database's own may lock anything
    "DO $$ BEGIN EXECUTE 'DROP TABLE t'; END $$",
    "DROP INDEX nobody_knows",
    "REINDEX INDEX nobody_knows",
    "REINDEX SCHEMA public",
    "VACUUM",
    "CLUSTER",
    "GRANT SELECT ON ALL TABLES IN SCHEMA public TO bob",
    "ALTER DOMAIN d ADD CONSTRAINT c CHECK (VALUE > 0)",
    "ALTER SYSTEM SET work_mem = '1MB'",
])
def test_locks_unknown(sql):
    result = analysis.analyse_plan([(1, "f", "up", sql)], user_functions={"f_user"}, index_tables=INDEX_TABLES)
    assert result["files"][0]["statements"][0]["locks_unknown"] is True


def test_every_mode_is_a_documented_name():
    for _sql, expected in STATEMENTS:
        assert set(expected.values()) <= set(locks.MODES)


def plan_locks(*sqls, **kwargs):
    result = analysis.analyse_plan([(i, f"f{i}", "up", sql) for i, sql in enumerate(sqls, 1)], **kwargs)
    return [statement["locks"] for f in result["files"] for statement in f["statements"]]


def test_the_plan_teaches_later_statements_which_table_an_index_and_a_foreign_key_belong_to():
    assert plan_locks("CREATE INDEX jx ON s.w (x);", "ALTER INDEX s.jx RENAME TO kx; DROP INDEX s.kx;",
                      "ALTER TABLE a ADD CONSTRAINT a_b FOREIGN KEY (b) REFERENCES b (id) NOT VALID;",
                      "ALTER TABLE a VALIDATE CONSTRAINT a_b; ALTER TABLE a DROP CONSTRAINT a_b;") == [
        {"s.w": SHARE}, {}, {"s.w": AE},
        {"public.a": SRE, "public.b": SRE},
        {"public.a": SUE, "public.b": RS}, {"public.a": AE, "public.b": AE}]


def test_a_renamed_table_keeps_its_indexes_and_foreign_keys():
    assert plan_locks("ALTER TABLE t RENAME TO t2;", "DROP INDEX ix; DROP TABLE t2;", foreign_keys=FOREIGN_KEYS,
                      index_tables=INDEX_TABLES)[1:] == [
        {"public.t2": AE}, {"public.t2": AE, "public.u": AE}]


def test_a_dropped_table_takes_its_indexes_and_foreign_keys_along():
    assert plan_locks("DROP TABLE c;", "TRUNCATE t CASCADE; DROP INDEX ix;", "DROP INDEX ix;",
                      foreign_keys=FOREIGN_KEYS, index_tables=INDEX_TABLES) == [
        {"public.c": AE, "public.t": AE}, {"public.t": AE}, {"public.t": AE}, {}]


def test_a_statement_with_an_unknown_effect_keeps_the_locks_it_names():
    statement = analysis.analyse_sql("UPDATE t SET x = f_user(x)", user_functions={"f_user"})[0]
    assert statement["locks"] == {"public.t": RE}
    assert statement["locks_unknown"] is True


def test_locks_only_name_tables_qualified():
    for _sql, expected in STATEMENTS:
        assert all(table.count(".") == 1 for table in expected)
