"""Issue 21: what the planned files break in the catalog - replica identities, views, publications.

000017 adds the unique constraint metadata_entity_key_unique; an operator who publishes metadata
and makes that index its replica identity gets a planned rollback that "succeeds" (its down file
drops the constraint) and every later UPDATE of metadata failing. 000017's up file retypes
metadata.key, which PostgreSQL refuses while a view uses the column. Both are found in the catalog
before anything runs, and the run is refused with the cause and the remedy.
"""

from __future__ import annotations

import psycopg2
import pytest

from conftest import run_module
from tmi_testenv.fixture import MIGRATIONS_DIR, schema_snapshot

IDENTITY_INDEX = "metadata_entity_key_unique"
UPDATE_METADATA = "UPDATE metadata SET value = value WHERE id = (SELECT id FROM metadata LIMIT 1)"


def migrate(db, **args):
    return run_module("pg_migrate", {"path": str(MIGRATIONS_DIR), **db.module_args(), **args})


def identity(conn) -> tuple[str, list[str]]:
    """metadata's relreplident and the indexes marked as its replica identity."""
    with conn.cursor() as cur:
        cur.execute("SELECT relreplident::text FROM pg_class WHERE oid = 'metadata'::regclass")
        mode = cur.fetchone()[0]
        cur.execute("SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid = 'metadata'::regclass "
                    "AND indisreplident")
        return mode, [row[0] for row in cur.fetchall()]


def publish_metadata_with_identity_on_the_017_index(db):
    db.query("CREATE PUBLICATION tmi_pub FOR TABLE metadata")  # warns without wal_level=logical; works
    db.query(f"ALTER TABLE metadata REPLICA IDENTITY USING INDEX {IDENTITY_INDEX}")


def messages(result) -> str:
    return " ".join(f"{result.get('msg', '')} {result.get('warnings', '')}".split())


def test_the_defect_a_down_file_dropping_the_replica_identity_index_breaks_every_update(tmi_db):
    """Without the check, 000017's down file runs cleanly and the table is left with no replica identity."""
    tmi_db.migrate(17)
    tmi_db.query("INSERT INTO metadata (entity_type, entity_id, key, value) VALUES ('threat', gen_random_uuid(), "
                 "'k', 'v')")
    publish_metadata_with_identity_on_the_017_index(tmi_db)
    assert tmi_db.migrate(15) == 15  # golang-migrate's way: nothing stops it
    with pytest.raises(psycopg2.Error, match="does not have a replica identity and publishes updates"):
        tmi_db.query(UPDATE_METADATA)


def test_status_returns_the_hazards_of_the_planned_down_files(tmi_db):
    tmi_db.migrate(17)
    publish_metadata_with_identity_on_the_017_index(tmi_db)
    result = migrate(tmi_db, operation="status", target_version="15")
    assert not result.get("failed"), result
    planned = [h for h in result["hazards"] if h["planned"]]
    errors = [h for h in planned if h["severity"] == "error"]
    assert [(h["version"], h["direction"], h["table"], h["kind"], h["object"]) for h in errors] == [
        (17, "down", "public.metadata", "replica_identity", f"public.{IDENTITY_INDEX}")]
    assert "ALTER TABLE public.metadata REPLICA IDENTITY DEFAULT" in errors[0]["message"]
    assert "publication tmi_pub" in errors[0]["message"]
    warnings = [(h["version"], h["kind"]) for h in planned if h["severity"] == "warning"]
    assert (17, "publication") in warnings
    # The same findings are warned about, so an operator reading the output sees them.
    assert f"drops constraint {IDENTITY_INDEX}" in messages(result)
    # The analysis says what the down files drop.
    dropped = {(d["kind"], d["name"]) for d in result["analysis"]["dropped"]}
    assert ("constraint", IDENTITY_INDEX) in dropped and ("index", "public.idx_metadata_key") in dropped


def test_migrate_down_refuses_before_any_file_runs_and_the_remedy_lets_it_run(tmi_db):
    tmi_db.migrate(17)
    tmi_db.query("INSERT INTO metadata (entity_type, entity_id, key, value) VALUES ('threat', gen_random_uuid(), "
                 "'k', 'v')")
    publish_metadata_with_identity_on_the_017_index(tmi_db)
    schema_before = schema_snapshot(tmi_db.conn)

    refused = migrate(tmi_db, target_version="15", allow_down=True)
    assert refused.get("failed") is True
    message = " ".join(refused["msg"].split())
    assert message.startswith("Refusing to migrate: Migration 000017 enhance_metadata (down, line 4) drops "
                              f"constraint {IDENTITY_INDEX}")
    assert "every UPDATE and DELETE on it fails" in message
    assert "Run ALTER TABLE public.metadata REPLICA IDENTITY DEFAULT" in message
    assert message.endswith("Nothing was changed.")
    # Nothing changed: the version, every index and constraint, the replica identity; updates still work.
    assert tmi_db.query("SELECT version, dirty FROM schema_migrations") == [(17, False)]
    assert schema_snapshot(tmi_db.conn) == schema_before
    assert identity(tmi_db.conn) == ("i", [IDENTITY_INDEX])
    tmi_db.query(UPDATE_METADATA)

    # The remedy the message names: the rollback then runs, and the table can still be updated.
    tmi_db.query("ALTER TABLE metadata REPLICA IDENTITY DEFAULT")
    down = migrate(tmi_db, target_version="15", allow_down=True)
    assert not down.get("failed"), down.get("msg")
    assert tmi_db.query("SELECT version, dirty FROM schema_migrations") == [(15, False)]
    assert identity(tmi_db.conn) == ("d", [])
    tmi_db.query(UPDATE_METADATA)


def test_a_file_that_sets_another_identity_before_dropping_the_index_is_not_refused(tmi_db, tmp_path):
    tmi_db.migrate(17)
    publish_metadata_with_identity_on_the_017_index(tmi_db)
    directory = tmp_path / "migrations"
    directory.mkdir()
    for path in MIGRATIONS_DIR.iterdir():
        text = path.read_text()
        if path.name.startswith("000017_") and path.name.endswith(".down.sql"):
            text = "ALTER TABLE metadata REPLICA IDENTITY FULL;\n" + text
        (directory / path.name).write_text(text)
    result = run_module("pg_migrate", {"path": str(directory), **tmi_db.module_args(), "target_version": "16",
                                       "allow_down": True})
    assert not result.get("failed"), result.get("msg")
    kinds = {(h["kind"], h["severity"]) for h in result["hazards"] if h["planned"]}
    assert ("replica_identity", "warning") in kinds and ("replica_identity", "error") not in kinds
    assert identity(tmi_db.conn)[0] == "f"
    tmi_db.query(UPDATE_METADATA)


def test_an_up_file_retyping_a_column_a_view_uses_is_refused_before_it_runs(tmi_db):
    tmi_db.migrate(16)
    tmi_db.query("CREATE VIEW metadata_keys AS SELECT entity_id, key FROM metadata")
    tmi_db.query("CREATE MATERIALIZED VIEW metadata_sizes AS SELECT key, length(value) AS size FROM metadata")
    schema_before = schema_snapshot(tmi_db.conn)

    status = migrate(tmi_db, operation="status")
    errors = [h for h in status["hazards"] if h["planned"] and h["severity"] == "error"]
    assert sorted((h["version"], h["direction"], h["kind"], h["object"]) for h in errors) == [
        (17, "up", "view", "public.metadata_keys"), (17, "up", "view", "public.metadata_sizes")]

    refused = migrate(tmi_db)
    message = " ".join(refused["msg"].split())
    assert refused.get("failed") is True
    assert ("Migration 000017 enhance_metadata (up, line 4) changes the type of column public.metadata.key, which "
            "view public.metadata_keys uses") in message
    assert "materialized view public.metadata_sizes" in message
    assert "cannot alter type of a column used by a view or rule" in message
    assert "Drop public.metadata_keys before the migration and recreate it afterwards" in message
    assert message.endswith("Nothing was changed.")
    assert tmi_db.query("SELECT version, dirty FROM schema_migrations") == [(16, False)]
    assert schema_snapshot(tmi_db.conn) == schema_before
    # Check mode refuses the same way.
    checked = run_module("pg_migrate", {"path": str(MIGRATIONS_DIR), **tmi_db.module_args()}, check_mode=True)
    assert checked.get("failed") is True and "public.metadata_keys" in checked["msg"]


def test_the_playbook_preflight_refuses_a_view_on_a_retyped_column_before_the_backup(environment):
    environment.db.query("CREATE VIEW metadata_keys AS SELECT entity_id, key FROM metadata")
    before = environment.state()
    result = environment.playbook("migrate.yml")
    assert result.returncode != 0
    after = environment.state()
    assert after == before
    message = " ".join(result.stdout.split())
    assert "The planned migrations would break the database: Migration 000017 enhance_metadata (up, line 4)" in message
    assert "view public.metadata_keys uses" in message and "Nothing was changed." in message
    record = environment.records()[-1]
    assert record["failed"] is True and record["failed_phase"] == "preflight"
    assert record["backup"] == {} and "no verified backup was taken" in message
    backups = environment.tmp_path / "backups"
    assert not backups.exists() or not any(backups.rglob("manifest.json"))


def test_rollback_playbook_planned_refuses_and_auto_restores_a_working_replica_identity(environment, pg_server):
    environment.db.query("CREATE PUBLICATION tmi_pub FOR TABLE metadata")
    migrated = environment.playbook("migrate.yml")
    assert migrated.returncode == 0, migrated.stdout[-4000:]
    assert "public.metadata (changes column key), which is in publication tmi_pub" in " ".join(migrated.stdout.split())
    # The run record keeps what the files would break, for the report and a later rollback.
    hazards = environment.records()[-1]["migration"]["hazards"]
    assert (17, "up", "publication", "warning", True) in {
        (h["version"], h["direction"], h["kind"], h["severity"], h["planned"]) for h in hazards}
    environment.db.query(f"ALTER TABLE metadata REPLICA IDENTITY USING INDEX {IDENTITY_INDEX}")
    before = environment.state()
    schema_before = schema_snapshot(environment.db.conn)

    planned = environment.playbook("rollback.yml", "-e", "tmi_rollback_mode=planned")
    assert planned.returncode != 0
    message = " ".join((planned.stdout + planned.stderr).split())
    assert "The down migrations would break the database: Migration 000017 enhance_metadata (down, line 4)" in message
    assert "Run ALTER TABLE public.metadata REPLICA IDENTITY DEFAULT" in message and "Nothing was changed." in message
    record = environment.records("rollback")[-1]["rollback"]
    assert record["mode"] == "planned" and record["succeeded"] is False
    assert environment.state() == before  # version 17, data, Redis, config, maintenance off
    assert schema_snapshot(environment.db.conn) == schema_before
    assert identity(environment.db.conn) == ("i", [IDENTITY_INDEX])

    # auto: the planned rollback refuses before any down file runs, and the backup is restored instead.
    auto = environment.playbook("rollback.yml")
    assert auto.returncode == 0, auto.stdout[-4000:]
    record = environment.records("rollback")[-1]["rollback"]
    assert record["mode"] == "emergency" and record["succeeded"] is True
    assert f"drops constraint {IDENTITY_INDEX}" in record["planned_error"]
    conn = pg_server.connect(environment.db.name)  # the restore swapped the database under older connections
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT version, dirty FROM schema_migrations")
            assert cur.fetchall() == [(15, False)]
            cur.execute("SELECT tablename FROM pg_publication_tables WHERE pubname = 'tmi_pub'")
            assert cur.fetchall() == [("metadata",)]
        # The backup's replica identity: DEFAULT, through a primary key that exists; updates work.
        assert identity(conn)[0] == "d"
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM pg_index WHERE indrelid = 'metadata'::regclass AND indisprimary")
            assert cur.fetchone()[0] == 1
            cur.execute(UPDATE_METADATA)
    finally:
        conn.close()
    environment.db.conn.close()
    environment.db.conn = pg_server.connect(environment.db.name)
