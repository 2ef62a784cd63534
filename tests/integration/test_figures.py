"""Table figures (issue 20): the hash64 figure sees every changed value of every column type family, equals
across a dump and restore, and a backup made with the md5 figures of earlier versions still verifies."""

from __future__ import annotations

import json

import pytest
from ansible_collections.tmi.migration.plugins.module_utils import snapshot
from test_backup import backup, restore

# One table with a column of each type family; every change below keeps the row count and changes one value
# of one row, often to a value its type's own hash (or its equality) does not tell apart.
FAMILIES_TABLE = """
CREATE TYPE mood AS ENUM ('calm', 'busy');
CREATE DOMAIN short_code AS varchar(8);
CREATE TABLE families (
  id int PRIMARY KEY, t text, vc varchar(20), code short_code, ch char(4), bp bpchar, n numeric, f float8,
  j json, jb jsonb, ts timestamptz, iv interval, arr int[], narr numeric[], tarr text[], b bytea, u uuid,
  m mood, addr inet, ok boolean);
INSERT INTO families VALUES
  (1, 'text', 'varchar', 'c0de', 'ab', 'x', 1.0, 0, '{"a": 1}', '{"a": 1.0}', '2026-01-01 00:00:00+00', '1 day',
   '{1,2}', '{1.0}', '{a,b}', '\\x00ff', '7b3c1a5e-0000-4000-8000-000000000001', 'calm', '10.0.0.1', true),
  (2, 'other', 'v2', 'c0de2', 'cd', 'y', 2, 1.5, '[]', '{}', '2026-01-02 00:00:00+00', '2 hours',
   '{3}', '{}', '{}', '\\x', '7b3c1a5e-0000-4000-8000-000000000002', 'busy', '10.0.0.2', false);
"""

CHANGES = {
    "text": "UPDATE families SET t = 'texT' WHERE id = 1",
    "varchar": "UPDATE families SET vc = 'varchar ' WHERE id = 1",
    "domain": "UPDATE families SET code = 'C0DE' WHERE id = 1",
    "char_n": "UPDATE families SET ch = 'ba' WHERE id = 1",
    "bpchar_trailing_blank": "UPDATE families SET bp = 'x ' WHERE id = 1",
    "numeric_scale": "UPDATE families SET n = 1.00 WHERE id = 1",
    "float_negative_zero": "UPDATE families SET f = '-0' WHERE id = 1",
    "json_whitespace": """UPDATE families SET j = '{"a":1}' WHERE id = 1""",
    "jsonb_number_scale": """UPDATE families SET jb = '{"a": 1.00}' WHERE id = 1""",
    "timestamptz_microsecond": "UPDATE families SET ts = ts + interval '1 microsecond' WHERE id = 1",
    "interval_same_span": "UPDATE families SET iv = '24 hours' WHERE id = 1",
    "array_element": "UPDATE families SET arr = '{1,3}' WHERE id = 1",
    "array_dimensions": "UPDATE families SET arr = '{{1,2}}' WHERE id = 1",
    "array_bounds": "UPDATE families SET arr = '[0:1]={1,2}' WHERE id = 1",
    "numeric_array_scale": "UPDATE families SET narr = '{1.00}' WHERE id = 1",
    "text_array": "UPDATE families SET tarr = '{a,B}' WHERE id = 1",
    "bytea": "UPDATE families SET b = '\\x01ff' WHERE id = 1",
    "uuid": "UPDATE families SET u = '7b3c1a5e-0000-4000-8000-000000000003' WHERE id = 1",
    "enum": "UPDATE families SET m = 'busy' WHERE id = 1",
    "inet_mask": "UPDATE families SET addr = '10.0.0.1/8' WHERE id = 1",
    "boolean": "UPDATE families SET ok = false WHERE id = 1",
    "null": "UPDATE families SET t = NULL WHERE id = 1",
    "two_values_swapped": "UPDATE families SET t = CASE id WHEN 1 THEN 'other' ELSE 'text' END",
}


def families_figures(db, **options):
    with db.conn.cursor() as cur:
        return snapshot.table_figures(cur, "public", "families", **options)


@pytest.fixture
def families(tmi_db):
    tmi_db.query(FAMILIES_TABLE)
    return tmi_db


@pytest.mark.parametrize("change", sorted(CHANGES))
def test_a_changed_value_of_each_type_family_changes_the_figure(families, change):
    before = families_figures(families)
    assert before["algorithm"] == "hash64" and before["rows"] == 2
    families.query(CHANGES[change])
    after = families_figures(families)
    assert after["rows"] == 2
    assert after["checksum"] != before["checksum"], change
    assert snapshot.compare({"public.families": before}, {"public.families": after}) == [dict(
        table="public.families", problem="content differs", expected=before, actual=after)]


def test_the_figure_is_the_same_for_the_same_rows_in_any_order_and_over_projected_columns(families):
    before = families_figures(families, columns=["id", "n", "jb"])
    assert [row[0] for row in families.query("SELECT id FROM families")] == [1, 2]
    families.query("UPDATE families SET ok = ok WHERE id = 1")  # row 1 moves behind row 2
    families.query("VACUUM FULL families")
    assert [row[0] for row in families.query("SELECT id FROM families")] == [2, 1]
    after = families_figures(families, columns=["id", "n", "jb"])
    assert (after["checksum"], after["row_checksum"]) == (before["checksum"], before["row_checksum"])
    assert after["checksum"] != after["row_checksum"]
    families.query("UPDATE families SET t = 'changed outside the projection' WHERE id = 1")
    changed = families_figures(families, columns=["id", "n", "jb"])
    assert changed["checksum"] == before["checksum"] and changed["row_checksum"] != before["row_checksum"]


def test_md5_figures_are_computed_on_request_and_never_compared_with_hash64_ones(families):
    hashed, legacy = families_figures(families), families_figures(families, algorithm="md5")
    assert legacy["algorithm"] == "md5" and legacy["rows"] == hashed["rows"]
    with families.conn.cursor() as cur:  # the md5 figure is the one every earlier version took
        cur.execute("SELECT " + snapshot.FIGURES_COLUMNS + " FROM families t")
        assert list(cur.fetchone()) == [2, legacy["checksum"]]
    old = {key: value for key, value in legacy.items() if key != "algorithm"}  # as earlier versions wrote it
    with families.conn.cursor() as cur:
        assert snapshot.take(cur, tables=[("public", "families")], like={"public.families": old}) == {
            "public.families": legacy}
    assert snapshot.compare({"public.families": old}, {"public.families": hashed}) == [dict(
        table="public.families", problem="figures of different algorithms (md5 and hash64)", expected=old,
        actual=hashed)]
    with pytest.raises(snapshot.FigureError, match="unknown algorithm 'sha3'"):
        families_figures(families, algorithm="sha3")


def test_equal_data_across_dump_and_restore_gives_equal_figures(big_db, tmp_path):
    big_db.query(FAMILIES_TABLE)  # an enum hashes its OID, which a restore changes: it must be figured by its text
    done = backup(big_db, tmp_path / "b")
    assert done["figures"]["public.families"]["algorithm"] == "hash64"
    assert {entry["algorithm"] for entry in done["figures"].values()} == {"hash64"}
    result = restore(big_db, tmp_path / "b", "scratch_families")
    assert result["verified"] is True, result.get("msg")
    assert result["differences"] == []
    restored = big_db.server.connect("scratch_families")
    try:
        with restored.cursor() as cur:
            cur.execute("SELECT oid FROM pg_type WHERE typname = 'mood'")
            restored_oid = cur.fetchone()[0]
            assert snapshot.table_figures(cur, "public", "families") == done["figures"]["public.families"]
    finally:
        restored.close()
    assert restored_oid != big_db.scalar("SELECT oid FROM pg_type WHERE typname = 'mood'")
    big_db.server.connect().cursor().execute("DROP DATABASE scratch_families")


def test_a_backup_made_with_md5_figures_still_verifies_and_its_figures_still_catch_a_change(big_db, tmp_path):
    backup(big_db, tmp_path / "b")
    manifest_path = tmp_path / "b" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    with big_db.conn.cursor() as cur:  # the figures an earlier version wrote: md5, and no algorithm named
        legacy = snapshot.take(cur, like=dict((name, {}) for name in manifest["figures"]))
    manifest["figures"] = dict((name, {"rows": entry["rows"], "checksum": entry["checksum"]})
                               for name, entry in legacy.items())
    manifest_path.write_text(json.dumps(manifest))
    result = restore(big_db, tmp_path / "b", "scratch_legacy", drop_after=True)
    assert result["verified"] is True and result["differences"] == [], result.get("msg")

    # The md5 figures are really compared: one changed checksum in the manifest fails the verification.
    manifest["figures"]["public.documents"]["checksum"] = "12345"
    manifest_path.write_text(json.dumps(manifest))
    result = restore(big_db, tmp_path / "b", "scratch_legacy", drop_after=True)
    assert result["failed"] and result["verified"] is False
    assert "public.documents: content differs" in result["msg"]
