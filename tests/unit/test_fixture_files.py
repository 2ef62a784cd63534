"""The fixture migration set is well formed: pure file checks, no server."""

from __future__ import annotations

import pglast
import pytest

from tmi_testenv import fixture

FILES = fixture.migration_files()


def test_versions_are_1_to_17_without_gaps():
    assert sorted(FILES) == list(range(1, 18))


@pytest.mark.parametrize("version", sorted(FILES))
def test_every_version_has_up_and_down_that_parse(version):
    assert set(FILES[version]) == {"up", "down"}
    for direction in ("up", "down"):
        statements = pglast.split(FILES[version][direction].path.read_text())
        assert statements, f"{version} {direction} is empty"


def test_migration_16_only_creates_indexes():
    statements = pglast.parse_sql(FILES[16]["up"].path.read_text())
    kinds = {type(raw.stmt).__name__ for raw in statements}
    assert kinds == {"IndexStmt"}
    assert not any(raw.stmt.concurrent for raw in statements), "the runbook's 000016 has no CONCURRENTLY"


def test_no_file_manages_its_own_transaction():
    # golang-migrate wraps nothing itself: a BEGIN/COMMIT in a file would break its batch semantics.
    for versions in FILES.values():
        for migration in versions.values():
            kinds = {type(raw.stmt).__name__ for raw in pglast.parse_sql(migration.path.read_text())}
            assert "TransactionStmt" not in kinds, migration.path.name


def test_migration_17_adds_the_metadata_rules():
    text = FILES[17]["up"].path.read_text()
    for name in ("metadata_entity_type_check", "metadata_key_format_check", "metadata_value_length_check",
                 "metadata_entity_key_unique"):
        assert name in text
