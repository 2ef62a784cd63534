"""The locks analysis.py predicts, against the locks the rehearsal observes PostgreSQL take.

Each statement of tests/unit/test_predicted_locks.py runs in a transaction on that file's SCHEMA, observed by
the rehearsal's own Observer (pg_locks after the statement) and rolled back; the tables are named as before the
statement ran (so a renamed, moved or dropped table keeps its name, and a table the statement created is not one
of them). The statements that cannot run in a transaction are sampled by the rehearsal instead (000016's online
builds in test_rehearsal.py); their modes here are the documentation's.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from ansible_collections.tmi.migration.plugins.module_utils import analysis, rehearsal

_UNIT = Path(__file__).resolve().parents[1] / "unit" / "test_predicted_locks.py"
_spec = importlib.util.spec_from_file_location("predicted_locks_cases", _UNIT)
cases = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cases)

# Statements that cannot run inside a transaction block (or that psycopg2 runs only through its copy methods):
# their modes are the documentation's alone.
NOT_IN_A_TRANSACTION = {
    "ALTER TABLE p DETACH PARTITION p2 CONCURRENTLY", "CREATE INDEX CONCURRENTLY ix3 ON t (y)",
    "DROP INDEX CONCURRENTLY ix", "REINDEX TABLE CONCURRENTLY t", "REINDEX (CONCURRENTLY) INDEX ix", "VACUUM FULL t",
    "VACUUM (ANALYZE) t, u", "COPY t FROM STDIN", "COPY t TO STDOUT"}
# What an older server takes instead (major version below which it differs: the locks it takes).
OLDER_SERVERS = {
    # GRANT and REVOKE lock the table (ACCESS SHARE) since PostgreSQL 18; the prediction is 18's, the stronger.
    "GRANT SELECT ON t, s.w TO PUBLIC": (18, {}),
    "REVOKE SELECT ON t FROM PUBLIC": (18, {}),
}


def observe(conn, sql):
    """{table: the strongest mode} the statement took, as the rehearsal observes it (rolled back after)."""
    return rehearsal.Observer(conn).transaction([sql], commit=False)[0]["taken"]


@pytest.fixture(scope="module")
def schema_db(pg_server):
    name = "tmi_locks_observed"
    pg_server.create_database(name)
    conn = pg_server.connect(name)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(cases.SCHEMA)
    yield conn
    conn.close()
    admin = pg_server.connect()
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.close()


RUNNABLE = [(sql, expected) for sql, expected in cases.STATEMENTS if sql not in NOT_IN_A_TRANSACTION]


@pytest.mark.parametrize("sql,expected", RUNNABLE, ids=[s[0][:60] for s in RUNNABLE])
def test_predicted_locks_are_the_locks_postgresql_takes(schema_db, sql, expected):
    below, older = OLDER_SERVERS.get(sql, (0, None))
    assert observe(schema_db, sql) == (older if schema_db.server_version < below * 10000 else expected)
    # the analysis with the database's own catalog facts says the same
    with schema_db.cursor() as cur:
        cur.execute(analysis.INDEX_TABLES_SQL)
        index_tables = dict(cur.fetchall())
    result = analysis.analyse_plan([(1, "f", "up", sql)], foreign_keys=cases.FOREIGN_KEYS, index_tables=index_tables)
    assert result["files"][0]["statements"][0]["locks"] == expected


def test_the_unit_catalog_is_the_schema_s_catalog(schema_db):
    with schema_db.cursor() as cur:
        cur.execute(analysis.INDEX_TABLES_SQL)
        assert dict(cur.fetchall()) == cases.INDEX_TABLES
