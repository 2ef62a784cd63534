"""The fixture migrates 0 -> 17 -> 0 cleanly, and every version looks the same going up and coming down."""

from __future__ import annotations

from tmi_testenv.fixture import schema_snapshot

TABLES_ADDED = {1: "users", 2: "user_providers", 3: "threat_models", 4: "threat_model_access", 5: "diagrams",
                6: "threats", 7: "documents", 8: "sources", 9: "metadata", 10: "refresh_tokens",
                15: "collaboration_sessions"}
INDEXES_16 = {"idx_threats_threat_model_id_created_at", "idx_documents_threat_model_id_created_at",
              "idx_sources_threat_model_id_created_at", "idx_diagrams_threat_model_id_created_at",
              "idx_threats_threat_model_id_covering", "idx_documents_threat_model_id_covering",
              "idx_sources_threat_model_id_covering", "idx_threat_model_access_performance",
              "idx_metadata_threat_model_entity", "idx_metadata_threat_entity", "idx_metadata_diagram_entity",
              "idx_metadata_document_entity", "idx_metadata_source_entity"}


def expected_tables(version: int) -> set[str]:
    return {"schema_migrations"} | {table for v, table in TABLES_ADDED.items() if v <= version}


def check_version_specific_facts(db, version: int) -> None:
    columns = {f"{t}.{c}" for t, c in db.query(
        "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'public'")}
    indexes = {row[0] for row in db.query("SELECT indexname FROM pg_indexes WHERE schemaname = 'public'")}
    constraints = {row[0] for row in db.query("SELECT conname FROM pg_constraint")}
    assert ("threat_models.issue_url" in columns) == (version >= 11)
    assert ("threats.score" in columns) == (version >= 12)
    functions = db.scalar("SELECT count(*) FROM pg_proc WHERE proname = 'update_modified_at_column'")
    assert bool(functions) == (version >= 13)
    assert ("sources.parameters" in columns) == (version >= 14)
    assert (INDEXES_16 <= indexes) == (version >= 16)
    assert not (INDEXES_16 & indexes) or version >= 16
    assert ("metadata_entity_key_unique" in constraints) == (version >= 17)
    if version >= 9:
        key_length = db.scalar("SELECT character_maximum_length FROM information_schema.columns "
                               "WHERE table_name = 'metadata' AND column_name = 'key'")
        assert key_length == (128 if version >= 17 else 255)


def test_fixture_applies_up_to_17_and_down_to_0_with_the_same_schema_at_each_version(tmi_db):
    snapshots_up = {}
    for version in range(0, 18):
        assert tmi_db.migrate(version) == version
        assert tmi_db.tables() == expected_tables(version)
        check_version_specific_facts(tmi_db, version)
        state = tmi_db.query("SELECT version, dirty FROM schema_migrations")
        assert state == ([(version, False)] if version else [])
        snapshots_up[version] = schema_snapshot(tmi_db.conn)

    for version in range(16, -1, -1):
        assert tmi_db.migrate(version) == version
        assert tmi_db.tables() == expected_tables(version)
        snapshot = schema_snapshot(tmi_db.conn)
        assert snapshot == snapshots_up[version], f"version {version} differs after coming down"
        assert tmi_db.query("SELECT version, dirty FROM schema_migrations") == ([(version, False)] if version else [])


def test_migration_17_fails_on_invalid_metadata_and_leaves_the_database_dirty(tmi_db):
    # A realistic failure: rows that break 000017's rules make the whole file roll back.
    import psycopg2
    import pytest

    from tmi_testenv import fixture

    tmi_db.migrate(16)
    fixture.generate(tmi_db.conn, 3)
    fixture.inject(tmi_db.conn, "invalid_metadata")
    with pytest.raises(psycopg2.errors.CheckViolation):
        tmi_db.migrate(17)
    assert tmi_db.query("SELECT version, dirty FROM schema_migrations") == [(17, True)]
    assert not tmi_db.scalar("SELECT count(*) FROM pg_constraint WHERE conname = 'metadata_entity_key_unique'")
