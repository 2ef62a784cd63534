"""The data generator: shape, determinism, relations, and each injectable defect shown by a query."""

from __future__ import annotations

import pytest

from tmi_testenv import fixture

SCALE = 20
ORPHAN_SQL = ("SELECT count(*) FROM {table} x LEFT JOIN threat_models tm ON x.threat_model_id = tm.id "
              "WHERE tm.id IS NULL")
METADATA_ORPHAN_SQL = """
SELECT count(*) FROM metadata m WHERE NOT CASE m.entity_type
    WHEN 'threat_model' THEN EXISTS (SELECT 1 FROM threat_models t WHERE t.id = m.entity_id)
    WHEN 'threat' THEN EXISTS (SELECT 1 FROM threats t WHERE t.id = m.entity_id)
    WHEN 'diagram' THEN EXISTS (SELECT 1 FROM diagrams t WHERE t.id = m.entity_id)
    WHEN 'document' THEN EXISTS (SELECT 1 FROM documents t WHERE t.id = m.entity_id)
    WHEN 'source' THEN EXISTS (SELECT 1 FROM sources t WHERE t.id = m.entity_id)
    WHEN 'cell' THEN EXISTS (SELECT 1 FROM diagrams d, jsonb_array_elements(d.cells) c
                             WHERE (c ->> 'id')::uuid = m.entity_id)
    ELSE false END
"""
CONTENT_SQL = "SELECT md5(string_agg(md5(t::text), '' ORDER BY md5(t::text))) FROM {table} t"


@pytest.fixture
def generated(tmi_db):
    tmi_db.migrate(17)
    counts = fixture.generate(tmi_db.conn, SCALE)
    return tmi_db, counts


def test_row_counts_follow_the_documented_shape(generated):
    _db, counts = generated
    per = fixture.PER_THREAT_MODEL
    assert counts["threat_models"] == SCALE
    for table, rows in per.items():
        assert counts[table] == SCALE * rows
    cells = SCALE * per["diagrams"] * fixture.CELLS_PER_DIAGRAM
    entities = {"threat_model": SCALE, "threat": SCALE * per["threats"], "diagram": SCALE * per["diagrams"],
                "document": SCALE * per["documents"], "source": SCALE * per["sources"], "cell": cells}
    assert counts["metadata"] == sum(n * fixture.METADATA_KEYS[kind] for kind, n in entities.items())


def test_generated_data_has_every_metadata_entity_type_and_no_orphans(generated):
    db, _counts = generated
    types = {row[0] for row in db.query("SELECT DISTINCT entity_type FROM metadata")}
    assert types == {"threat_model", "threat", "diagram", "document", "source", "cell"}
    for table in ("threats", "documents", "sources", "diagrams", "threat_model_access"):
        assert db.scalar(ORPHAN_SQL.format(table=table)) == 0
    assert db.scalar(METADATA_ORPHAN_SQL) == 0


def test_same_seed_gives_the_same_data(pg_server, generated):
    from conftest import Database

    db, _counts = generated
    other = Database(pg_server, db.name + "_twin")
    try:
        other.migrate(17)
        fixture.generate(other.conn, SCALE)
        for table in ("threat_models", "threats", "documents", "sources", "metadata"):
            assert db.scalar(CONTENT_SQL.format(table=table)) == other.scalar(CONTENT_SQL.format(table=table))
    finally:
        other.drop()


def test_generator_works_at_version_15(tmi_db):
    tmi_db.migrate(15)
    counts = fixture.generate(tmi_db.conn, 5)
    assert counts["threats"] == 5 * fixture.PER_THREAT_MODEL["threats"]


@pytest.mark.parametrize("table", ["threats", "documents", "sources"])
def test_inject_orphaned_sub_resources(generated, table):
    db, _counts = generated
    fixture.inject(db.conn, f"orphaned_{table}", count=4)
    assert db.scalar(ORPHAN_SQL.format(table=table)) == 4
    # the foreign key is still declared: the orphans violate it
    assert db.scalar("SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND conrelid = %s::regclass "
                     "AND confrelid = 'threat_models'::regclass", (table,)) == 1


def test_inject_orphaned_metadata(generated):
    db, _counts = generated
    fixture.inject(db.conn, "orphaned_metadata", count=5)
    assert db.scalar(METADATA_ORPHAN_SQL) == 5


@pytest.mark.parametrize("version", [15, 17])
def test_inject_invalid_metadata(tmi_db, version):
    tmi_db.migrate(version)
    fixture.generate(tmi_db.conn, 2)
    fixture.inject(tmi_db.conn, "invalid_metadata", count=2)
    assert tmi_db.scalar("SELECT count(*) FROM metadata WHERE entity_type NOT IN "
                         "('threat_model', 'threat', 'diagram', 'document', 'source', 'cell')") == 2
    if version == 17:
        assert tmi_db.scalar("SELECT convalidated FROM pg_constraint "
                             "WHERE conname = 'metadata_entity_type_check'") is False


def test_inject_invalid_index(generated):
    db, _counts = generated
    fixture.inject(db.conn, "invalid_index")
    assert db.query("SELECT i.indisvalid FROM pg_index i WHERE i.indexrelid = 'idx_defect_invalid'::regclass") == [
        (False,)]


def test_inject_not_valid_constraint(generated):
    db, _counts = generated
    fixture.inject(db.conn, "not_valid_constraint")
    assert db.query("SELECT conname FROM pg_constraint WHERE NOT convalidated") == [("threats_defect_name_check",)]


def test_inject_duplicate_index(generated):
    db, _counts = generated
    fixture.inject(db.conn, "duplicate_index")
    keys = db.query("SELECT indkey::text, count(*) FROM pg_index WHERE indrelid = 'threats'::regclass "
                    "GROUP BY indkey::text, indoption::text, coalesce(pg_get_expr(indpred, indrelid), '') "
                    "HAVING count(*) > 1")
    assert len(keys) == 1 and keys[0][1] == 2


def test_unknown_defect_is_refused(generated):
    db, _counts = generated
    with pytest.raises(ValueError, match="unknown defect"):
        fixture.inject(db.conn, "everything_broken")
