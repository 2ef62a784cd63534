"""module_utils/rewrite.py: a table of migration files and the online-equivalent steps, or the reason declined.

Whether the steps end in the same catalog as the file is what the rehearsal proves on a real server
(tests/integration/test_online_rewrites.py); here: which steps, in which order, and what is declined.
"""

from __future__ import annotations

import os

import pytest
from ansible_collections.tmi.migration.plugins.module_utils import migrator, rewrite

from tmi_testenv.fixture import MIGRATIONS_DIR


def kinds(steps):
    return [(step["kind"], step["object"]) for step in steps]


def test_000017_becomes_not_valid_checks_validated_after_and_concurrent_index_builds():
    with open(os.path.join(MIGRATIONS_DIR, "000017_enhance_metadata.up.sql")) as handle:
        steps = rewrite.plan(handle.read())
    assert kinds(steps) == [
        ("file", None),
        ("validate", "metadata_entity_type_check"), ("validate", "metadata_key_format_check"),
        ("validate", "metadata_key_not_empty_check"), ("validate", "metadata_value_length_check"),
        ("build_index", "metadata_entity_key_unique"), ("attach_constraint", "metadata_entity_key_unique"),
        ("build_index", "idx_metadata_key"), ("build_index", "idx_metadata_cell_entity")]
    first = steps[0]["sql"]
    # The untouched statements keep their text; the ALTER TABLE keeps its four CHECKs, each NOT VALID, no UNIQUE.
    assert "ALTER TABLE metadata ALTER COLUMN key TYPE VARCHAR(128);" in first
    assert "CREATE TRIGGER update_metadata_modified_at BEFORE UPDATE ON metadata\n" in first
    assert first.count("NOT VALID") == 4 and "UNIQUE" not in first and "CREATE INDEX" not in first
    assert [s["step"] for s in steps] == list(range(1, 10))
    assert [s["transaction"] for s in steps] == [True] * 5 + [False, True, False, False]
    assert steps[5]["sql"] == ("CREATE UNIQUE INDEX CONCURRENTLY metadata_entity_key_unique ON metadata "
                               "(entity_type, entity_id, key)")
    assert steps[6]["sql"] == ("ALTER TABLE metadata ADD CONSTRAINT metadata_entity_key_unique UNIQUE USING INDEX "
                               "metadata_entity_key_unique")
    # Constraint expressions and index statements keep their text: a deparsed TRIM(key) would be stored as btrim(key).
    assert "ADD CONSTRAINT metadata_key_not_empty_check CHECK (LENGTH(TRIM(key)) > 0) NOT VALID," in first
    assert steps[7]["sql"] == "CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_metadata_key ON metadata(key)"
    assert all(s["lock"] == "SHARE UPDATE EXCLUSIVE" for s in steps[1:5])


REWRITTEN = [
    pytest.param(
        "ALTER TABLE t ADD COLUMN z int;\nALTER TABLE t ADD CONSTRAINT t_fk FOREIGN KEY (u_id) REFERENCES u (id) "
        "ON DELETE CASCADE;",
        [("file", None), ("validate", "t_fk")],
        ["ALTER TABLE t ADD COLUMN z int;\nALTER TABLE t ADD CONSTRAINT t_fk FOREIGN KEY (u_id) REFERENCES u (id) "
         "ON DELETE CASCADE NOT VALID;\n", "ALTER TABLE t VALIDATE CONSTRAINT t_fk"], id="foreign-key"),
    pytest.param(
        "ALTER TABLE s.t ADD CONSTRAINT \"Odd Name\" CHECK (x > 0);",
        [("file", None), ("validate", "Odd Name")],
        ["ALTER TABLE s.t ADD CONSTRAINT \"Odd Name\" CHECK (x > 0) NOT VALID;\n",
         "ALTER TABLE s.t VALIDATE CONSTRAINT \"Odd Name\""], id="check-quoted-schema"),
    pytest.param(
        "ALTER TABLE t ALTER COLUMN x SET NOT NULL;",
        [("file", None), ("validate", "t_x_not_null_helper"), ("set_not_null", "x"),
         ("drop_helper", "t_x_not_null_helper")],
        ["ALTER TABLE t ADD CONSTRAINT t_x_not_null_helper CHECK (x IS NOT NULL) NOT VALID;\n",
         "ALTER TABLE t VALIDATE CONSTRAINT t_x_not_null_helper", "ALTER TABLE t ALTER COLUMN x SET NOT NULL",
         "ALTER TABLE t DROP CONSTRAINT t_x_not_null_helper"], id="set-not-null"),
    pytest.param(
        "ALTER TABLE t ADD CONSTRAINT t_u UNIQUE NULLS NOT DISTINCT (a, b);",
        [("build_index", "t_u"), ("attach_constraint", "t_u")],
        ["CREATE UNIQUE INDEX CONCURRENTLY t_u ON t (a, b) NULLS NOT DISTINCT",
         "ALTER TABLE t ADD CONSTRAINT t_u UNIQUE USING INDEX t_u"], id="unique-alone-no-file-step"),
    pytest.param(
        "CREATE TABLE n (id int);\nCREATE INDEX n_id ON n (id);\nALTER TABLE n ADD CONSTRAINT n_c CHECK (id > 0);\n"
        "UPDATE t SET x = 1;\nCREATE UNIQUE INDEX t_x ON t (y) WHERE x > 0;",
        [("file", None), ("build_index", "t_x")],
        ["CREATE TABLE n (id int);\nCREATE INDEX n_id ON n (id);\nALTER TABLE n ADD CONSTRAINT n_c CHECK (id > 0);\n"
         "UPDATE t SET x = 1;\n", "CREATE UNIQUE INDEX CONCURRENTLY t_x ON t (y) WHERE x > 0"],
        id="new-table-left-as-written"),
    pytest.param(
        "ALTER TABLE t ADD CONSTRAINT ck CHECK (x > 0) NOT VALID, ADD CONSTRAINT ck2 CHECK (y > 0);",
        [("file", None), ("validate", "ck2")],
        ["ALTER TABLE t ADD CONSTRAINT ck CHECK (x > 0) NOT VALID, ADD CONSTRAINT ck2 CHECK (y > 0) NOT VALID;\n",
         "ALTER TABLE t VALIDATE CONSTRAINT ck2"], id="not-valid-as-written-stays"),
]


@pytest.mark.parametrize("body, expected, sqls", REWRITTEN)
def test_rewritten(body, expected, sqls):
    steps = rewrite.plan(body)
    assert kinds(steps) == expected
    assert [step["sql"] for step in steps] == sqls


DECLINED = [
    pytest.param("CREATE INDEX a ON t (x);\nCREATE INDEX b ON t (y);", "only builds indexes", id="index-only"),
    pytest.param("ALTER TABLE t ADD COLUMN z int;\nCOMMENT ON TABLE t IS 'x';", "nothing in the file",
                 id="nothing-to-do"),
    pytest.param("ALTER TABLE t ADD CONSTRAINT ck CHECK (x > 0);\nCALL fill_t();", "cannot read",
                 id="unknown-statement"),
    pytest.param("ALTER TABLE t ADD CONSTRAINT ck CHECK (x > 0);\nCREATE INDEX CONCURRENTLY i ON t (x);",
                 "outside a transaction", id="already-autocommit"),
    pytest.param("ALTER TABLE t ADD CONSTRAINT t_u UNIQUE (id);\nALTER TABLE c ADD CONSTRAINT c_fk FOREIGN KEY (t_id) "
                 "REFERENCES t (id);", "foreign key referencing public.t", id="fk-needs-unique"),
    pytest.param("ALTER TABLE t ADD CONSTRAINT t_u UNIQUE (id), "
                 "ADD CONSTRAINT t_self FOREIGN KEY (p) REFERENCES t (id);", "same ALTER TABLE adds a foreign key",
                 id="fk-same-statement"),
    pytest.param("ALTER TABLE t ADD CONSTRAINT ck CHECK (x > 0);\nALTER TABLE t DROP COLUMN x;",
                 "changes column x of public.t", id="drops-covered-column"),
    pytest.param("CREATE INDEX ix ON t (x);\nALTER TABLE t ADD COLUMN z int;\nALTER INDEX ix RENAME TO iy;",
                 "names ix", id="later-statement-names-index"),
    pytest.param("ALTER TABLE t ADD CONSTRAINT ck CHECK (x > 0);\nDO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_constraint "
                 "WHERE conname = 'ck' AND convalidated) THEN ALTER TABLE t ADD COLUMN z int; END IF; END $$;",
                 "names ck", id="do-block-names-constraint"),
    pytest.param("ALTER TABLE t ADD CONSTRAINT ck CHECK (x > 0);\nINSERT INTO t (x) VALUES (-1);",
                 "writes rows of public.t", id="later-write-would-be-checked"),
    pytest.param("ALTER TABLE t ADD CONSTRAINT ck CHECK (x > 0);\nALTER TABLE t RENAME TO t2;", "renames",
                 id="table-renamed"),
    pytest.param("ALTER TABLE t ADD CONSTRAINT t_pk PRIMARY KEY (id);", "PRIMARY KEY", id="primary-key"),
    pytest.param("ALTER TABLE t ADD CONSTRAINT t_u UNIQUE (id) INCLUDE (x);", "INCLUDE", id="unique-include"),
    pytest.param("ALTER TABLE t ADD CONSTRAINT t_u UNIQUE (id) DEFERRABLE;", "DEFERRABLE", id="unique-deferrable"),
    pytest.param("ALTER TABLE t ADD CONSTRAINT t_u UNIQUE (id) WITH (fillfactor = 70);", "index parameters",
                 id="unique-with"),
    pytest.param("ALTER TABLE t ADD UNIQUE (id);", "unnamed UNIQUE", id="unique-unnamed"),
    pytest.param("ALTER TABLE t ADD CHECK (x > 0);", "unnamed CHECK", id="check-unnamed"),
    pytest.param("ALTER TABLE ONLY t ADD CONSTRAINT ck CHECK (x > 0);", "ONLY", id="only"),
    pytest.param("ALTER TABLE IF EXISTS t ADD CONSTRAINT ck CHECK (x > 0);", "IF EXISTS", id="if-exists"),
    pytest.param("ALTER TABLE t ALTER COLUMN x SET NOT NULL;\nALTER TABLE t ALTER COLUMN x TYPE bigint;",
                 "changes column x", id="not-null-column-retyped"),
]


@pytest.mark.parametrize("body, reason", DECLINED)
def test_declined(body, reason):
    with pytest.raises(rewrite.Declined) as declined:
        rewrite.plan(body)
    assert reason in str(declined.value)


def test_a_call_of_a_user_function_is_unknown_so_the_file_is_declined():
    body = "ALTER TABLE t ADD CONSTRAINT ck CHECK (x > 0);\nSELECT fill_t();"
    assert kinds(rewrite.plan(body)) == [("file", None), ("validate", "ck")]
    with pytest.raises(rewrite.Declined, match="line 2 has an effect this analysis cannot read"):
        rewrite.plan(body, user_functions={"fill_t"})


def test_helper_names_fit_postgres_identifiers_and_stay_stable():
    long = rewrite.helper_name("t" * 40, "c" * 40)
    assert len(long.encode()) <= 63 and long == rewrite.helper_name("t" * 40, "c" * 40)
    assert long != rewrite.helper_name("t" * 40, "c" * 39 + "d")


def with_status(steps, **status):
    """The steps as the history row holds them: each step's status by its number (pending when not given)."""
    return [dict(step, status=status.get(f"s{step['step']}", "pending")) for step in steps]


def fixture_17():
    with open(os.path.join(MIGRATIONS_DIR, "000017_enhance_metadata.up.sql")) as handle:
        return rewrite.plan(handle.read())


def test_leftovers_of_a_failed_attach_include_the_valid_unique_index_its_down_file_does_not_drop():
    steps = fixture_17()
    assert [s["kind"] for s in steps][5:7] == ["build_index", "attach_constraint"]
    row = with_status(steps, s1="committed", s2="committed", s3="committed", s4="committed", s5="committed",
                      s6="committed", s7="failed")
    found = migrator.leftovers(row)
    assert dict(kind="index", schema=None, name="metadata_entity_key_unique", only_invalid=False) in found
    # The later plain builds did not run: only an INVALID leftover of theirs could be there.
    assert [(f["name"], f["only_invalid"]) for f in found if f["name"] != "metadata_entity_key_unique"] == [
        ("idx_metadata_key", True), ("idx_metadata_cell_entity", True)]


def test_leftovers_once_the_attach_committed_leave_the_index_to_the_down_file():
    steps = fixture_17()
    row = with_status(steps, **{f"s{n}": "committed" for n in range(1, 8)})
    assert [f["name"] for f in migrator.leftovers(row)] == ["idx_metadata_key", "idx_metadata_cell_entity"]
    everything = with_status(steps, **{f"s{n}": "committed" for n in range(1, 10)})
    assert migrator.leftovers(everything) == []


def test_leftovers_of_a_failed_unique_build_are_only_its_invalid_index():
    # A build failing on duplicates leaves an INVALID index; one failing because the name exists must not drop that.
    row = with_status(fixture_17(), s1="committed", s2="committed", s3="committed", s4="committed", s5="committed",
                      s6="failed")
    assert dict(kind="index", schema=None, name="metadata_entity_key_unique", only_invalid=True) in \
        migrator.leftovers(row)


def test_leftovers_of_a_killed_set_not_null_include_its_helper_check_whatever_step_was_running():
    steps = rewrite.plan("ALTER TABLE t ALTER COLUMN x SET NOT NULL;")
    assert [s["kind"] for s in steps] == ["file", "validate", "set_not_null", "drop_helper"]
    helper = rewrite.helper_name("t", "x")
    for status in (dict(s1="committed"), dict(s1="committed", s2="committed"),
                   dict(s1="committed", s2="failed"), dict(s1="committed", s2="committed", s3="committed")):
        found = migrator.leftovers(with_status(steps, **status))
        assert found == [dict(kind="helper", name=helper,
                              sql=f"ALTER TABLE t DROP CONSTRAINT IF EXISTS {helper}")], status
    done = with_status(steps, s1="committed", s2="committed", s3="committed", s4="committed")
    assert migrator.leftovers(done) == []
