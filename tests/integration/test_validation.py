"""pg_integrity_check, pg_index_check and the validate role (issue 5) against real databases with real defects."""

from __future__ import annotations

import json

import pytest
import yaml
from ansible_collections.tmi.migration.plugins.module_utils import indexes
from ansible_collections.tmi.migration.plugins.module_utils.integrity import Checker
from ansible_collections.tmi.migration.plugins.module_utils.readonly import SnapshotPool

from conftest import REPO, ansible_env, run_module, run_playbook
from tmi_testenv import fixture
from tmi_testenv.fixture import schema_snapshot

PLAYBOOK = str(REPO / "tests" / "integration" / "playbooks" / "validate_role.yml")
# The modules know no application: TMI's tables, relations, rules and queries are the validate role's profile.
PROFILE = yaml.safe_load((REPO / "roles" / "validate" / "vars" / "profiles" / "tmi.yml").read_text())[
    "__validate_profile"]
TMI_INTEGRITY = {"tables": list(PROFILE["columns"]), "logical_relations": PROFILE["logical_relations"],
                 "value_rules": PROFILE["value_rules"], "unique_rules": PROFILE["unique_rules"],
                 "distribution": PROFILE["distribution"]}


def _index(name, table, columns, include=None, where=None, unique=False):
    spec = dict(name=name, table=table, columns=columns, unique=unique)
    if include:
        spec["include"] = include
    if where:
        spec["where"] = where
    return spec


# The indexes TMI's migrations 000016 and 000017 create, as the runbook lists them (the role derives them from the
# files instead).
TMI_EXPECTED = [
    _index("idx_threats_threat_model_id_created_at", "threats", ["threat_model_id", "created_at DESC"]),
    _index("idx_documents_threat_model_id_created_at", "documents", ["threat_model_id", "created_at DESC"]),
    _index("idx_sources_threat_model_id_created_at", "sources", ["threat_model_id", "created_at DESC"]),
    _index("idx_diagrams_threat_model_id_created_at", "diagrams", ["threat_model_id", "created_at DESC"]),
    _index("idx_threats_threat_model_id_covering", "threats", ["threat_model_id"],
           include=["name", "severity", "status", "priority", "mitigated"]),
    _index("idx_documents_threat_model_id_covering", "documents", ["threat_model_id"], include=["name", "url"]),
    _index("idx_sources_threat_model_id_covering", "sources", ["threat_model_id"], include=["name", "url", "type"]),
    _index("idx_threat_model_access_performance", "threat_model_access", ["threat_model_id", "role", "user_email"]),
    *[_index(f"idx_metadata_{kind}_entity", "metadata", ["entity_id", "key"], where=f"entity_type = '{kind}'")
      for kind in ("threat_model", "threat", "diagram", "document", "source", "cell")],
    _index("idx_metadata_key", "metadata", ["key"]),
    _index("metadata_entity_key_unique", "metadata", ["entity_type", "entity_id", "key"], unique=True),
]
TMI_INDEXES = {"expected": TMI_EXPECTED, "queries": PROFILE["queries"]}


@pytest.fixture
def v17(tmi_db):
    """A clean TMI database at version 17 with enough rows for the planner to use indexes."""
    tmi_db.migrate(17)
    fixture.generate(tmi_db.conn, 300)
    return tmi_db


def integrity(db, check_mode=False, **args):
    """pg_integrity_check with TMI's profile, as the validate role passes it."""
    return run_module("pg_integrity_check", {**db.module_args(), **TMI_INTEGRITY, **args}, check_mode=check_mode)


def index_check(db, check_mode=False, **args):
    """pg_index_check with TMI's expected indexes and the profile's queries."""
    return run_module("pg_index_check", {**db.module_args(), **TMI_INDEXES, **args}, check_mode=check_mode)


def connector(db):
    """What ``postgres.connector`` hands the module_utils classes in a module: a function opening a connection."""
    def open_connection(dbname=None, autocommit=False):
        return db.server.connect(dbname or db.name, autocommit)
    return open_connection


def checks(result, kind):
    return [c for c in result["failed_checks"] if c["check"] == kind]


def data_figures(db):
    conn = db.server.connect(db.name)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT string_agg(relname || ':' || n_tup_ins || ':' || n_tup_upd || ':' || n_tup_del, ',' "
                        "ORDER BY relname) FROM pg_stat_user_tables")
            return cur.fetchone()[0], {t: db.scalar(f"SELECT md5(string_agg(md5(x::text), '' ORDER BY md5(x::text))) "
                                                    f"FROM {t} x") for t in ("threats", "metadata", "documents")}
    finally:
        conn.close()


def test_a_clean_database_passes_every_check(v17):
    result = integrity(v17, snapshot=True, expected_columns={"threats": ["id", "score"]},
                       expected_constraints=[{"table": "metadata", "name": "metadata_entity_key_unique"}])
    assert result["failed_checks"] == [] and result["changed"] is False
    assert result["row_counts"]["threats"] == 3000
    assert result["distribution"]["metadata.entity_type"]["cell"] == 1200
    assert all(o["count"] == 0 for o in result["orphans"]) and len(result["orphans"]) >= 15
    relations = {o["relation"] for o in result["orphans"]}
    assert {"threats_threat_model_id_fkey", "metadata(cell)", "metadata(threat)"} <= relations
    indexes = index_check(v17, analyze=True, min_rows=500)
    assert indexes["failed_checks"] == [], indexes["failed_checks"]
    assert [p["verdict"] for p in indexes["plans"]] == ["uses_expected_index"] * 3
    assert all(e["present"] and e["valid"] and e["matches"] for e in indexes["expected"])
    assert indexes["table_sizes"]["threats"] > 0 and indexes["usage"]


@pytest.mark.parametrize("table", ["threats", "documents", "sources"])
def test_orphaned_sub_resources_are_found_with_their_figures(v17, table):
    fixture.inject(v17.conn, f"orphaned_{table}", count=4)
    found = checks(integrity(v17), "orphans")
    assert len(found) == 1
    assert (found[0]["table"], found[0]["ref_table"], found[0]["count"]) == (table, "threat_models", 4)
    assert len(found[0]["samples"]) == 4
    assert f"{table}.threat_model_id: 4 rows reference no threat_models row" in found[0]["message"]


def test_orphaned_metadata_is_found_per_entity_type(v17):
    fixture.inject(v17.conn, "orphaned_metadata", count=8)
    found = {c["relation"]: c["count"] for c in checks(integrity(v17), "orphans")}
    assert found == {"metadata(threat_model)": 2, "metadata(threat)": 2, "metadata(document)": 2,
                     "metadata(source)": 2}


def test_orphaned_cell_metadata_is_found_through_the_diagrams_json(v17):
    v17.query("UPDATE diagrams SET cells = '[]' WHERE id = (SELECT id FROM diagrams ORDER BY id LIMIT 1)")
    found = checks(integrity(v17), "orphans")
    assert [(c["relation"], c["count"]) for c in found] == [("metadata(cell)", 2)]


def test_invalid_metadata_before_000017_is_found(tmi_db):
    tmi_db.migrate(15)
    fixture.generate(tmi_db.conn, 20)
    fixture.inject(tmi_db.conn, "invalid_metadata", count=3)
    tmi_db.query("INSERT INTO metadata (entity_type, entity_id, key, value) "
                 "SELECT 'threat', entity_id, 'bad key!', 'x' FROM metadata WHERE entity_type = 'threat' LIMIT 2")
    tmi_db.query("INSERT INTO metadata (entity_type, entity_id, key, value) "
                 "SELECT entity_type, entity_id, key, 'duplicate' FROM metadata WHERE entity_type = 'source' LIMIT 1")
    found = {c["message"].split(" (e.g.")[0] for c in checks(integrity(tmi_db), "invalid_values")}
    assert found == {"metadata.entity_type: 3 rows outside threat_model, threat, diagram, document, source, cell",
                     "metadata.key: 2 rows not matching ^[a-zA-Z0-9_-]+$",
                     "metadata.entity_type, entity_id, key: 2 rows break unique (entity_type, entity_id, key)"}


def test_invalid_metadata_at_17_shows_as_values_and_a_not_valid_constraint(v17):
    fixture.inject(v17.conn, "invalid_metadata", count=2)
    result = integrity(v17)
    assert [c["count"] for c in checks(result, "invalid_values")] == [2]
    assert [c["name"] for c in checks(result, "not_valid_constraint")] == ["metadata_entity_type_check"]


def test_not_valid_constraint(v17):
    fixture.inject(v17.conn, "not_valid_constraint")
    result = integrity(v17)
    assert [(c["table"], c["name"]) for c in checks(result, "not_valid_constraint")] == [
        ("threats", "threats_defect_name_check")]
    assert result["not_valid_constraints"] == [{"table": "threats", "name": "threats_defect_name_check", "type": "c"}]


def test_invalid_index(v17):
    fixture.inject(v17.conn, "invalid_index")
    result = index_check(v17)
    assert [c["name"] for c in checks(result, "invalid_index")] == ["idx_defect_invalid"]
    assert [i["name"] for i in result["invalid"]] == ["idx_defect_invalid"]


def test_duplicate_index(v17):
    fixture.inject(v17.conn, "duplicate_index")
    result = index_check(v17)
    assert [sorted(c["names"]) for c in checks(result, "duplicate_index")] == [
        ["idx_defect_duplicate", "idx_threats_threat_model_id_created_at"]]


def test_missing_and_conflicting_expected_indexes(v17):
    v17.query("DROP INDEX idx_sources_threat_model_id_covering")
    v17.query("DROP INDEX idx_metadata_source_entity")
    v17.query("CREATE INDEX idx_metadata_source_entity ON metadata (entity_id) WHERE entity_type = 'document'")
    result = index_check(v17)
    assert [c["name"] for c in checks(result, "missing_index")] == ["idx_sources_threat_model_id_covering"]
    mismatch = checks(result, "index_definition")
    assert [c["name"] for c in mismatch] == ["idx_metadata_source_entity"]
    assert "columns are (entity_id), expected (entity_id, key)" in mismatch[0]["message"]
    assert "predicate is" in mismatch[0]["message"]


def test_a_plan_without_the_expected_index_fails(v17):
    v17.query("DROP INDEX idx_threats_threat_model_id_created_at")
    v17.query("DROP INDEX idx_threats_threat_model_id_covering")
    result = index_check(v17, expected=[])
    plan = checks(result, "plan")
    assert [c["name"] for c in plan] == ["threats of a threat model, newest first"]
    assert "does not use idx_threats_threat_model_id_created_at or idx_threats_threat_model_id_covering" in plan[0][
        "message"]


def test_data_changes_against_a_baseline_are_reported_per_table(v17):
    baseline = integrity(v17, snapshot=True)["snapshot"]
    v17.query("UPDATE documents SET url = url || '?v=2' WHERE id = (SELECT id FROM documents LIMIT 1)")
    v17.query("DELETE FROM sources WHERE id IN (SELECT id FROM sources LIMIT 3)")
    found = checks(integrity(v17, compare_to=baseline), "data_changed")
    assert sorted(c["message"] for c in found) == [
        "data changed since the baseline: public.documents: content differs",
        "data changed since the baseline: public.sources: 600 rows expected, 597 found"]


def test_the_snapshot_equals_the_backups_figures(v17, tmp_path):
    (tmp_path / "b").mkdir()
    backup = run_module("pg_backup", {"dest": str(tmp_path / "b"), "pg_bin_dir": str(v17.server.client_bindir),
                                      **v17.module_args()})
    assert integrity(v17, compare_to=backup["figures"])["failed_checks"] == []


def comparable(result):
    return {k: v for k, v in result.items() if k not in ("elapsed", "invocation")}


def test_parallel_scans_and_workers_do_not_change_the_figures(v17):
    """The scheduling options (connections, longest-first order, workers per scan) change speed only."""
    fixture.inject(v17.conn, "orphaned_threats")
    results = [comparable(integrity(v17, snapshot=True, parallel=p, workers_per_scan=w))
               for p, w in ((1, 0), (3, 0), (3, 2), (2, -1))]
    assert checks(results[0], "orphans"), "the injected orphans must be found"
    assert all(r == results[0] for r in results[1:])


def test_the_snapshot_pool_shares_one_snapshot_and_runs_longest_first(v17):
    pool = SnapshotPool(connector(v17), 2, workers_per_scan=3)
    try:
        v17.query("INSERT INTO users (email, name) VALUES ('late@example.org', 'late')")
        v17.conn.commit()
        started = []

        def job(name):
            def run(cur):
                started.append(name)
                cur.execute("SELECT count(*) FROM users WHERE email = 'late@example.org'")
                late = cur.fetchone()[0]
                cur.execute("SELECT current_setting('max_parallel_workers_per_gather')")
                return name, late, cur.fetchone()[0]
            return run

        names = ["small", "large", "medium", "tiny"]
        results = pool.run([job(n) for n in names], costs=[10, 1000, 100, 1])
        assert [r[0] for r in results] == names, "results come back in the jobs' order"
        assert started[:2] == ["large", "medium"], "the two most expensive jobs start first"
        assert all(late == 0 for _n, late, _w in results), "every connection reads the snapshot taken at the start"
        assert {workers for _n, _l, workers in results} == {"3"}
    finally:
        pool.close()


@pytest.mark.parametrize("check_mode", [False, True])
def test_neither_module_changes_anything(v17, check_mode):
    for defect in ("orphaned_threats", "invalid_index", "not_valid_constraint"):
        fixture.inject(v17.conn, defect)
    # An idle session publishes its table counters only now and then: publish the injection's now, or they
    # would appear in the middle of the modules' run and look like their writes.
    v17.query("SELECT pg_stat_force_next_flush()")
    before_schema, before_data = schema_snapshot(v17.conn), data_figures(v17)
    assert integrity(v17, check_mode=check_mode, snapshot=True)["changed"] is False
    assert index_check(v17, check_mode=check_mode)["changed"] is False
    assert schema_snapshot(v17.conn) == before_schema
    assert data_figures(v17) == before_data


def test_bad_option_names_fail_clearly(v17):
    result = integrity(v17, value_rules=[{"table": "metadata", "column": "no_such_column", "max_length": 3}])
    assert result["failed"] and "no_such_column" in result["msg"]


def test_the_modules_know_no_schema_of_their_own(v17):
    """Without the profile only what the catalog declares is checked: TMI's metadata relations are options."""
    fixture.inject(v17.conn, "orphaned_metadata", count=8)
    bare = run_module("pg_integrity_check", v17.module_args())
    assert checks(bare, "orphans") == [] and bare["row_counts"] == {} and bare["distribution"] == {}
    assert {o["kind"] for o in bare["orphans"]} == {"foreign key"}
    assert checks(integrity(v17), "orphans"), "with the profile's relations the orphans are found"
    v17.query("DROP INDEX idx_metadata_key")
    bare = run_module("pg_index_check", v17.module_args())
    assert bare["failed_checks"] == [] and bare["expected"] == [] and bare["plans"] == []


# --- the classes of module_utils, called directly ----------------------------------------------------------------


def run_checker(db, options):
    pool = SnapshotPool(connector(db), 2)
    try:
        return Checker(pool, options).run()
    finally:
        pool.close()


def test_the_integrity_checker_finds_an_injected_orphan(v17):
    fixture.inject(v17.conn, "orphaned_metadata", count=8)
    fixture.inject(v17.conn, "orphaned_documents", count=3)
    result = run_checker(v17, TMI_INTEGRITY)
    found = {c["relation"]: c["count"] for c in checks(result, "orphans")}
    assert found == {"documents_threat_model_id_fkey": 3, "metadata(threat_model)": 2, "metadata(threat)": 2,
                     "metadata(document)": 2, "metadata(source)": 2}
    assert result["row_counts"]["documents"] == 903
    generic = {c["relation"] for c in checks(run_checker(v17, {}), "orphans")}
    assert generic == {"documents_threat_model_id_fkey"}, "the relations without a foreign key are the profile's"


def test_the_integrity_checker_always_leaves_out_the_bookkeeping_tables(v17):
    baseline = run_checker(v17, {"snapshot": True})["snapshot"]
    assert "public.schema_migrations" in baseline
    v17.query("UPDATE schema_migrations SET version = 18")
    v17.query("CREATE TABLE tmi_migration_lock (run_id text)")
    v17.query("INSERT INTO tmi_migration_lock VALUES ('a run')")
    v17.query("DELETE FROM sources WHERE id IN (SELECT id FROM sources LIMIT 2)")
    result = run_checker(v17, {"compare_to": baseline, "compare_ignore": []})
    assert [(d["table"], d["problem"]) for d in result["differences"]] == [("public.sources", "row count differs")]
    renamed = run_checker(v17, {"compare_to": baseline, "state_table": "other_state", "run_lock_table": ""})
    assert sorted(d["table"] for d in renamed["differences"]) == [
        "public.schema_migrations", "public.sources", "public.tmi_migration_lock"]


def test_the_index_checker_finds_a_missing_index_and_a_plan_without_it(v17):
    v17.query("DROP INDEX idx_threats_threat_model_id_created_at")
    v17.query("DROP INDEX idx_threats_threat_model_id_covering")
    result = indexes.check(connector(v17), {**TMI_INDEXES, "min_rows": 500}, analyze=True)
    assert [c["name"] for c in checks(result, "missing_index")] == [
        "idx_threats_threat_model_id_created_at", "idx_threats_threat_model_id_covering"]
    assert [p["verdict"] for p in result["plans"]] == ["other_plan", "uses_expected_index", "uses_expected_index"]
    assert indexes.check(connector(v17), {})["failed_checks"] == []


# --- the validate role ----------------------------------------------------------------------------------------------


def run_role(db, redis_server, tmp_path, *extra):
    result_file = tmp_path / "validate.json"
    result = run_playbook(PLAYBOOK, ansible_env(db.server, redis_server, db.name, tmp_path),
                          "-e", f"result_file={result_file}", *extra)
    record = json.loads(result_file.read_text()) if result_file.exists() else {}
    return result, record


def test_pre_phase_passes_and_records_a_baseline(tmi_db, redis_server, tmp_path):
    tmi_db.migrate(15)
    fixture.generate(tmi_db.conn, 20)
    result, record = run_role(tmi_db, redis_server, tmp_path, "-e", "validate_phase=pre")
    assert result.returncode == 0, result.stdout
    assert "All pre-migration checks passed" in result.stdout
    assert record["schema_version"] == 15 and record["dirty"] is False
    assert record["snapshot"]["public.threats"]["rows"] == 200


def test_pre_phase_lists_every_failure_at_once(tmi_db, redis_server, tmp_path):
    tmi_db.migrate(15)
    fixture.generate(tmi_db.conn, 20)
    fixture.inject(tmi_db.conn, "orphaned_documents")
    fixture.inject(tmi_db.conn, "invalid_metadata")
    tmi_db.query("ALTER TABLE sources RENAME TO sources_old")
    tmi_db.query("UPDATE schema_migrations SET dirty = true")
    # Tables named explicitly must exist (the profile's are checked where they exist; the plan requires the
    # tables its files act on, tested in test_pg_migrate).
    result, _unused = run_role(tmi_db, redis_server, tmp_path, "-e", "validate_phase=pre",
                               "-e", json.dumps({"validate_expected_tables": {"sources": ["id", "url"]}}))
    assert result.returncode != 0
    for expected in ("[dirty_schema] the schema is dirty at version 15", "[missing_table] table public.sources",
                     "[orphans] documents.threat_model_id: 3 rows reference",
                     "[invalid_values] metadata.entity_type: 3 rows"):
        assert expected in result.stdout, expected
    assert "check(s) failed" in result.stdout


def test_pre_phase_stops_on_an_unreachable_server(tmi_db, redis_server, tmp_path):
    env = ansible_env(tmi_db.server, redis_server, tmi_db.name, tmp_path)
    env["TMI_PG_PORT"] = "1"
    result = run_playbook(PLAYBOOK, env, "-e", f"result_file={tmp_path / 'x.json'}", "-e", "validate_phase=pre")
    assert result.returncode != 0 and f"PostgreSQL at {tmi_db.server.host}:1 is not reachable" in result.stdout


def test_post_phase_fails_on_version_indexes_constraints_and_data(v17, redis_server, tmp_path):
    baseline = integrity(v17, snapshot=True)["snapshot"]
    v17.query("DROP INDEX idx_threat_model_access_performance")
    v17.query("ALTER TABLE metadata DROP CONSTRAINT metadata_key_format_check")
    v17.query("DELETE FROM documents WHERE id IN (SELECT id FROM documents LIMIT 1)")
    # What migrate.yml passes after applying 000016 and 000017: the expectations come from those files.
    plan = fixture.planned_analysis(v17.conn, (16, 17))
    result, record = run_role(v17, redis_server, tmp_path, "-e", "validate_phase=post",
                              "-e", "validate_expected_version=18",
                              "-e", json.dumps({"validate_baseline": baseline, "validate_analysis": plan}))
    assert result.returncode != 0
    for expected in ("[schema_version] the schema is at version 17, expected 18",
                     "[missing_index] index idx_threat_model_access_performance on threat_model_access is missing",
                     "[missing_constraint] constraint metadata_key_format_check on metadata is missing",
                     "[orphans] metadata.entity_id: 1 row references no documents row",
                     "[data_lost] public.documents: 900 rows expected, 899 found: 1 rows disappeared"):
        assert expected in result.stdout, expected
    assert len(record["failed_checks"]) == 5


def test_post_phase_can_ignore_a_kind_of_finding(v17, redis_server, tmp_path):
    v17.query("DROP INDEX idx_threats_threat_model_id_created_at")
    v17.query("DROP INDEX idx_threats_threat_model_id_covering")
    result, _unused = run_role(v17, redis_server, tmp_path, "-e", "validate_phase=post",
                               "-e", '{"validate_ignore_checks": ["plan", "missing_index"]}')
    assert result.returncode == 0, result.stdout
    assert "ignored:" in result.stdout and "does not use idx_threats_threat_model_id_created_at" in result.stdout
