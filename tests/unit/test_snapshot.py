"""Pure functions of module_utils/snapshot.py: how each column enters the row hash, and comparisons."""

from __future__ import annotations

import pytest
from ansible_collections.tmi.migration.plugins.module_utils import snapshot


def column(name, typ, typtype="b", catalog=True, base=None, elem=None, deterministic=True):
    """A row of COLUMN_TYPES_SQL: base and elem are (name, typtype, in pg_catalog)."""
    base, elem = base or (None, None, None), elem or (None, None, None)
    return (name, typ, typtype, catalog, *base, *elem, deterministic)


@pytest.mark.parametrize("row, how", [
    (column("a", "int8"), "as_is"),
    (column("a", "uuid"), "as_is"),
    (column("a", "timestamptz"), "as_is"),
    (column("a", "text"), "as_is"),
    (column("a", "text", deterministic=False), "text"),  # a case-insensitive collation hashes 'A' like 'a'
    (column("a", "varchar", deterministic=False), "text"),
    (column("a", "bytea", deterministic=False), "as_is"),  # not collatable: the flag does not matter
    (column("a", "numeric"), "text"),  # 1.0 and 1.00 hash alike
    (column("a", "float8"), "text"),  # 0 and -0
    (column("a", "jsonb"), "text"),
    (column("a", "json"), "text"),  # no hash at all
    (column("a", "interval"), "text"),
    (column("a", "bpchar"), "bpchar"),
    (column("a", "mood", typtype="e", catalog=False), "text"),  # an enum hashes its OID
    (column("a", "int8", catalog=False), "text"),  # a type of that name outside pg_catalog is someone else's
    (column("a", "code", typtype="d", catalog=False, base=("varchar", "b", True)), "as_is"),
    (column("a", "code", typtype="d", catalog=False, base=("numeric", "b", True)), "text"),
    (column("a", "code", typtype="d", catalog=False, base=("bpchar", "b", True)), "bpchar"),
    (column("a", "code", typtype="d", catalog=False, base=("inner", "d", False)), "text"),
    (column("a", "_int4", elem=("int4", "b", True)), "text"),  # '{{1,2}}' and '{1,2}' hash alike
    (column("a", "_numeric", elem=("numeric", "b", True)), "text"),
    (column("a", "_text", elem=("text", "b", True), deterministic=False), "text"),
    (column("a", "_bpchar", elem=("bpchar", "b", True)), "text"),  # array_out keeps the blanks
])
def test_column_hashing(row, how):
    assert snapshot.column_hashing([row]) == [("a", how)]


def test_default_algorithm_follows_the_server():
    assert snapshot.default_algorithm(140000) == "hash64"
    assert snapshot.default_algorithm(180006) == "hash64"
    assert snapshot.default_algorithm(130012) == "md5"


def test_figures_without_an_algorithm_are_md5_and_compare_only_with_md5():
    old, new = {"rows": 3, "checksum": "9"}, {"rows": 3, "checksum": "9", "algorithm": "hash64"}
    assert snapshot.algorithm_of(old) == "md5" and snapshot.algorithm_of(None) == "md5"
    assert snapshot.same_content(old, dict(old, algorithm="md5")) is True
    assert snapshot.same_content(old, new) is None
    assert snapshot.whole_rows(old) != snapshot.whole_rows(new)
    assert snapshot.compare({"t": old}, {"t": new})[0]["problem"] == "figures of different algorithms (md5 and hash64)"
    assert snapshot.describe(snapshot.compare({"t": old}, {"t": new})) == \
        "t: figures of different algorithms (md5 and hash64)"
    # Row counts are compared first: a lost row is named as such whatever the algorithms.
    assert snapshot.compare({"t": old}, {"t": dict(new, rows=2)})[0]["problem"] == "row count differs"
