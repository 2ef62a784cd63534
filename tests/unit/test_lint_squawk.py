"""lint.py against squawk itself: for the rules both have, both flag the same statements.

squawk (squawk-cli on PyPI, a Rust program; requirements-dev.txt pins it, the collection never runs it)
reads one file per statement kind, as pg_migrate runs a file: in one transaction
(--assume-in-transaction). lint.py reads the same files as a plan on existing tables. Where they
differ on purpose, KNOWN_DIFFERENCES says so and why, and the test checks that the difference is still
exactly that, so a new squawk release that changes a rule shows up here.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from ansible_collections.tmi.migration.plugins.module_utils import analysis, lint

# A large existing table t (and u), so that lint reports every finding; the catalog knows index t_x on t.
SIZES = {"public.t": dict(kind="r", rows=5000000, bytes=2 * 1024 ** 3),
         "public.u": dict(kind="r", rows=5000000, bytes=2 * 1024 ** 3)}
INDEX_TABLES = {"public.t_x": "public.t"}

# name -> the file's SQL: one statement kind per file (a few need a statement before them).
CASES = {
    "check": "ALTER TABLE t ADD CONSTRAINT c CHECK (x > 0);",
    "check_not_valid": "ALTER TABLE t ADD CONSTRAINT c CHECK (x > 0) NOT VALID;",
    "two_checks": "ALTER TABLE t ADD CONSTRAINT c CHECK (x > 0), ADD CONSTRAINT d CHECK (y > 0);",
    "not_null_constraint": "ALTER TABLE t ADD CONSTRAINT n NOT NULL x;",
    "validate_alone": "ALTER TABLE t VALIDATE CONSTRAINT c;",
    "validate_same_transaction": "ALTER TABLE t ADD CONSTRAINT c CHECK (x > 0) NOT VALID;\n"
                                 "ALTER TABLE t VALIDATE CONSTRAINT c;",
    "foreign_key": "ALTER TABLE t ADD CONSTRAINT f FOREIGN KEY (u_id) REFERENCES u (id);",
    "foreign_key_not_valid": "ALTER TABLE t ADD CONSTRAINT f FOREIGN KEY (u_id) REFERENCES u (id) NOT VALID;",
    "column_references": "ALTER TABLE t ADD COLUMN u_id bigint REFERENCES u (id);",
    "unique": "ALTER TABLE t ADD CONSTRAINT uq UNIQUE (x);",
    "unique_using_index": "ALTER TABLE t ADD CONSTRAINT uq UNIQUE USING INDEX t_x;",
    "column_unique": "ALTER TABLE t ADD COLUMN a bigint UNIQUE;",
    "primary_key": "ALTER TABLE t ADD PRIMARY KEY (id);",
    "primary_key_using_index": "ALTER TABLE t ADD CONSTRAINT pk PRIMARY KEY USING INDEX t_x;",
    "column_primary_key": "ALTER TABLE t ADD COLUMN a bigint PRIMARY KEY;",
    "exclusion": "ALTER TABLE t ADD CONSTRAINT e EXCLUDE USING gist (r WITH &&);",
    "type": "ALTER TABLE t ALTER COLUMN x TYPE bigint;",
    "set_data_type": "ALTER TABLE t ALTER COLUMN x SET DATA TYPE text;",
    "set_not_null": "ALTER TABLE t ALTER COLUMN x SET NOT NULL;",
    "required": "ALTER TABLE t ADD COLUMN a bigint NOT NULL;",
    "required_with_default": "ALTER TABLE t ADD COLUMN a bigint NOT NULL DEFAULT 0;",
    "default_random": "ALTER TABLE t ADD COLUMN a float DEFAULT random();",
    "default_gen_random_uuid": "ALTER TABLE t ADD COLUMN a uuid DEFAULT gen_random_uuid();",
    "default_clock_timestamp": "ALTER TABLE t ADD COLUMN a timestamptz DEFAULT clock_timestamp();",
    "default_nextval": "ALTER TABLE t ADD COLUMN a bigint DEFAULT nextval('s');",
    "default_md5_random": "ALTER TABLE t ADD COLUMN a text DEFAULT md5(random()::text);",
    "default_user_function": "CREATE FUNCTION pick() RETURNS bigint LANGUAGE sql AS 'SELECT 1';\n"
                             "ALTER TABLE t ADD COLUMN a bigint DEFAULT pick();",
    "default_constant": "ALTER TABLE t ADD COLUMN a bigint DEFAULT 5;",
    "default_now": "ALTER TABLE t ADD COLUMN a timestamptz DEFAULT now();",
    "default_current_timestamp": "ALTER TABLE t ADD COLUMN a timestamptz DEFAULT current_timestamp;",
    "default_cast": "ALTER TABLE t ADD COLUMN a text DEFAULT 'x'::text;",
    "default_lower": "ALTER TABLE t ADD COLUMN a text DEFAULT lower('X');",
    "default_timezone_now": "ALTER TABLE t ADD COLUMN a timestamptz DEFAULT timezone('utc', now());",
    "identity": "ALTER TABLE t ADD COLUMN a bigint GENERATED ALWAYS AS IDENTITY;",
    "generated_stored": "ALTER TABLE t ADD COLUMN a bigint GENERATED ALWAYS AS (x * 2) STORED;",
    "generated_virtual": "ALTER TABLE t ADD COLUMN a bigint GENERATED ALWAYS AS (x * 2) VIRTUAL;",
    "bigserial": "ALTER TABLE t ADD COLUMN a bigserial;",
    "set_default_random": "ALTER TABLE t ALTER COLUMN a SET DEFAULT random();",
    "create_index": "CREATE INDEX t_y ON t (y);",
    "create_unique_index_if_not_exists": "CREATE UNIQUE INDEX IF NOT EXISTS t_y ON t (y);",
    "create_index_concurrently": "CREATE INDEX CONCURRENTLY t_y ON t (y);",
    "drop_index": "DROP INDEX t_x;",
    "drop_index_if_exists": "DROP INDEX IF EXISTS t_x;",
    "drop_index_concurrently": "DROP INDEX CONCURRENTLY t_x;",
    "reindex_table": "REINDEX TABLE t;",
    "reindex_index": "REINDEX INDEX t_x;",
    "reindex_concurrently": "REINDEX TABLE CONCURRENTLY t;",
    "rename_column": "ALTER TABLE t RENAME COLUMN x TO y;",
    "rename_table": "ALTER TABLE t RENAME TO t2;",
    "drop_column": "ALTER TABLE t DROP COLUMN x;",
    "drop_column_if_exists": "ALTER TABLE t DROP COLUMN IF EXISTS x;",
    "drop_table": "DROP TABLE t;",
    "drop_tables": "DROP TABLE IF EXISTS t, u;",
    "add_column": "ALTER TABLE t ADD COLUMN a bigint;",
    "set_statistics": "ALTER TABLE t ALTER COLUMN x SET STATISTICS 100;",
    "update": "UPDATE t SET x = 1;",
    "create_table": "CREATE TABLE n (id bigint PRIMARY KEY, u_id bigint REFERENCES u (id), c text UNIQUE);",
    # a table created earlier in the same file
    "new_table_check": "CREATE TABLE n (id bigint);\nALTER TABLE n ADD CONSTRAINT c CHECK (id > 0);",
    "new_table_unique": "CREATE TABLE n (id bigint);\nALTER TABLE n ADD CONSTRAINT uq UNIQUE (id);",
    "new_table_index": "CREATE TABLE n (id bigint);\nCREATE INDEX n_id ON n (id);",
    "new_table_foreign_key": "CREATE TABLE n (id bigint);\n"
                             "ALTER TABLE n ADD CONSTRAINT f FOREIGN KEY (id) REFERENCES t (id);",
    "new_table_type": "CREATE TABLE n (id bigint);\nALTER TABLE n ALTER COLUMN id TYPE text;",
    "new_table_set_not_null": "CREATE TABLE n (id bigint);\nALTER TABLE n ALTER COLUMN id SET NOT NULL;",
    "new_table_required": "CREATE TABLE n (id bigint);\nALTER TABLE n ADD COLUMN a bigint NOT NULL;",
    "new_table_volatile_default": "CREATE TABLE n (id bigint);\nALTER TABLE n ADD COLUMN a float DEFAULT random();",
    # several statements, each on its line
    "several": "ALTER TABLE t ADD COLUMN a bigint;\nALTER TABLE t ALTER COLUMN a SET NOT NULL;\n\n"
               "CREATE INDEX t_a ON t (a);\nALTER TABLE t RENAME COLUMN a TO b;",
}

# Where the two disagree on purpose: name -> ({(rule, line)} squawk alone flags, {(rule, line)} lint alone flags).
NEW_TABLE = "a table created earlier in the plan is empty and no running application version uses it"
KNOWN_DIFFERENCES = {
    # PostgreSQL 11+ computes a non-volatile default once and stores it: no rewrite (checked on PostgreSQL 18).
    "default_lower": ({("adding-field-with-default", 1)}, set()),
    "default_timezone_now": ({("adding-field-with-default", 1)}, set()),
    # A VIRTUAL generated column (PostgreSQL 18) is computed when read: nothing is written.
    "generated_virtual": ({("adding-field-with-default", 1)}, set()),
    # A serial column's default is nextval(), volatile: PostgreSQL rewrites the table (checked on PostgreSQL 18).
    "bigserial": (set(), {("adding-field-with-default", 1)}),
    # PostgreSQL accepts NOT VALID only for CHECK, NOT NULL and foreign keys, not for an exclusion constraint.
    "exclusion": ({("constraint-missing-not-valid", 1)}, set()),
    # NEW_TABLE
    "new_table_type": ({("changing-column-type", 2)}, set()),
    "new_table_set_not_null": ({("adding-not-nullable-field", 2)}, set()),
    "new_table_required": ({("adding-required-field", 2)}, set()),
    "new_table_volatile_default": ({("adding-field-with-default", 2)}, set()),
}
# lint.py reports each table of a DROP TABLE naming several (each finding names its table); squawk the statement once.
COUNTED_PER_TABLE = {"drop_tables"}
# squawk also reports constraint-missing-not-valid beside its own rule for a foreign key, a unique constraint and a
# primary key; lint.py says it once, under the specific rule (whose advice includes NOT VALID where PostgreSQL takes
# it: not for UNIQUE nor PRIMARY KEY).
SUBSUMING = {"adding-foreign-key-constraint", "disallowed-unique-constraint", "adding-serial-primary-key-field"}


def squawk_binary():
    beside = Path(sys.executable).parent / "squawk"
    found = str(beside) if beside.exists() else shutil.which("squawk")
    if not found:
        pytest.skip("squawk is not installed (pip install -r requirements-dev.txt installs squawk-cli)")
    return found


@pytest.fixture(scope="module")
def squawk_flags(tmp_path_factory):
    """{case name: sorted [(rule, 1-based line)]} as squawk reports them, for lint.py's rules."""
    directory = tmp_path_factory.mktemp("squawk")
    for name, sql in CASES.items():
        (directory / (name + ".sql")).write_text(sql + "\n")
    run = subprocess.run([squawk_binary(), "--reporter", "json", "--assume-in-transaction",
                          *sorted(str(p) for p in directory.glob("*.sql"))],
                         capture_output=True, text=True, check=False, timeout=120)
    assert run.returncode in (0, 1, 2), run.stderr
    flags = {name: [] for name in CASES}
    for violation in json.loads(run.stdout):
        name = Path(violation["file"]).stem
        if violation["rule_name"] in lint.RULES:
            flags[name].append((violation["rule_name"], violation["line"] + 1))
    for name, found in flags.items():
        lines_subsumed = {line for rule, line in found if rule in SUBSUMING}
        flags[name] = sorted((rule, line) for rule, line in found
                             if not (rule == "constraint-missing-not-valid" and line in lines_subsumed))
    return flags


def lint_flags(sql):
    files = [(1, "case", "up", sql)]
    result = analysis.analyse_plan(files, index_tables=INDEX_TABLES)
    analysis.review(result, files, sizes=SIZES)
    return sorted((finding["rule"], finding["line"]) for finding in result["lint"])


@pytest.mark.parametrize("name", sorted(CASES))
def test_lint_flags_what_squawk_flags(name, squawk_flags):
    theirs, ours = squawk_flags[name], lint_flags(CASES[name])
    squawk_alone, lint_alone = KNOWN_DIFFERENCES.get(name, (set(), set()))
    assert sorted(set(theirs) - set(ours)) == sorted(squawk_alone), "squawk alone flags these"
    assert sorted(set(ours) - set(theirs)) == sorted(lint_alone), "lint.py alone flags these"
    # and as many times (two CHECK constraints in one statement are two findings for both)
    if name not in COUNTED_PER_TABLE:
        assert [f for f in theirs if f not in squawk_alone] == [f for f in ours if f not in lint_alone]


def test_every_rule_of_lint_is_exercised_and_is_a_squawk_rule(squawk_flags):
    flagged_by_both = {rule for found in squawk_flags.values() for rule, _line in found}
    assert flagged_by_both == set(lint.RULES)


def test_squawk_is_the_pinned_version():
    pinned = [line.split("==")[1].strip() for line in
              (Path(__file__).resolve().parents[2] / "requirements-dev.txt").read_text().splitlines()
              if line.startswith("squawk-cli==")]
    version = subprocess.run([squawk_binary(), "--version"], capture_output=True, text=True, check=True).stdout
    assert pinned and version.split()[-1] == pinned[0]
