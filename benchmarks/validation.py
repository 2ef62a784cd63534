"""Benchmark: the validate role's post phase against the same checks as hand-written SQL run with psql.

    PYTHONPATH=tests .venv/bin/python benchmarks/validation.py [--scale 23000] [--repeat 3]

--scale is the number of threat models; 23000 gives about 1.02 million rows. The script
starts its own throwaway PostgreSQL and Redis, builds a TMI database at version 17, takes
the baseline snapshot, then times (best of --repeat, alternating):

* psql: one SQL file holding every check the post phase makes, written out as a DBA would:
  row counts, an anti-join per foreign key and per polymorphic metadata relation, the
  000017 value rules, NOT VALID and expected constraints, the entity-type distribution,
  the per-table count and checksum, index validity and duplicates, the three EXPLAINs;
* the role: ansible-playbook running tmi.migration.validate with validate_phase=post,
  including Ansible's start-up, argument validation and module round trips.

Results: printed as a table, written to benchmarks/results/validation-<scale>.json, and
the generated SQL to benchmarks/results/validation-equivalent.sql.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / ".build" / "collections"))

from ansible_collections.tmi.migration.plugins.modules import pg_index_check, pg_integrity_check  # noqa: E402

from tmi_testenv import fixture  # noqa: E402
from tmi_testenv.servers import PostgresServer, RedisServer  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
CHECKSUM = "SELECT count(*), sum(('x' || substr(md5(t::text), 1, 16))::bit(64)::bigint::numeric) FROM {} t;"


def q(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def equivalent_sql(conn) -> str:
    """Every post-phase check as plain SQL, built from the catalog the way a DBA would write it out."""
    lines = ["\\set QUIET on", "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;"]
    with conn.cursor() as cur:
        for table in ("users", "threat_models", "threat_model_access", "diagrams", "threats", "documents", "sources",
                      "metadata"):
            lines.append(f"SELECT count(*) FROM {q(table)};")
        cur.execute(pg_integrity_check.FOREIGN_KEYS_SQL, ("public",))
        for _name, child, parent, _schema, columns, refs in cur.fetchall():
            not_null = " AND ".join(f"c.{q(c)} IS NOT NULL" for c in columns)
            match = " AND ".join(f"p.{q(r)} = c.{q(c)}" for c, r in zip(columns, refs, strict=True))
            lines.append(f"SELECT count(*) FROM {q(child)} c WHERE {not_null} "
                         f"AND NOT EXISTS (SELECT 1 FROM {q(parent)} p WHERE {match});")
        for kind, table in pg_integrity_check.ENTITY_TABLES:
            lines.append(f"SELECT count(*) FROM metadata c WHERE c.entity_type = '{kind}' AND NOT EXISTS "
                         f"(SELECT 1 FROM {table} p WHERE p.id = c.entity_id);")
        lines.append("SELECT count(*) FROM metadata c WHERE c.entity_type = 'cell' AND NOT EXISTS (SELECT 1 "
                     "FROM diagrams p CROSS JOIN LATERAL jsonb_array_elements(p.cells) e "
                     "WHERE e ->> 'id' = c.entity_id::text);")
        lines += [
            "SELECT count(*) FROM metadata WHERE entity_type NOT IN "
            "('threat_model', 'threat', 'diagram', 'document', 'source', 'cell');",
            "SELECT count(*) FROM metadata WHERE key !~ '^[a-zA-Z0-9_-]+$';",
            "SELECT count(*) FROM metadata WHERE length(key) > 128;",
            "SELECT count(*) FROM metadata WHERE length(value) > 65535;",
            "SELECT count(*) FROM (SELECT 1 FROM metadata GROUP BY entity_type, entity_id, key HAVING count(*) > 1) d;",
            "SELECT entity_type, count(*) FROM metadata GROUP BY entity_type ORDER BY entity_type;",
            "SELECT conrelid::regclass, conname FROM pg_constraint WHERE NOT convalidated;",
            "SELECT conname, convalidated FROM pg_constraint WHERE conrelid = 'metadata'::regclass;",
            "SELECT indexrelid::regclass, indisvalid, indisready FROM pg_index WHERE NOT (indisvalid AND indisready);",
            "SELECT indrelid::regclass, array_agg(indexrelid::regclass) FROM pg_index "
            "GROUP BY indrelid, indkey::text, indclass::text, pg_get_expr(indexprs, indrelid), "
            "pg_get_expr(indpred, indrelid) HAVING count(*) > 1;",
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' AND indexname LIKE 'idx_%';",
        ]
        cur.execute("SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE c.relkind = 'r' AND n.nspname = 'public' ORDER BY 2")
        lines += [CHECKSUM.format(f"{q(s)}.{q(t)}") for s, t in cur.fetchall()]
        for query in pg_index_check.TMI_QUERIES:
            cur.execute(query["params_sql"])
            value = cur.fetchone()[0]
            lines.append("EXPLAIN " + query["sql"].replace("%s", "'" + str(value).replace("'", "''") + "'") + ";")
        lines.append("SELECT relname, indexrelname, idx_scan FROM pg_stat_user_indexes;")
        lines.append("COMMIT;")
    return "\n".join(lines) + "\n"


def time_psql(pg: PostgresServer, dbname: str, sql_file: Path) -> float:
    env = {**os.environ, "PGPASSWORD": pg.password}
    started = time.monotonic()
    subprocess.run([str(pg.client_bindir / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", pg.host,
                    "-p", str(pg.port), "-U", pg.user, "-d", dbname, "-f", str(sql_file), "-o", os.devnull],
                   env=env, check=True)
    return time.monotonic() - started


def time_role(pg: PostgresServer, redis_server: RedisServer, dbname: str, baseline_file: Path, work: Path) -> float:
    env = {**os.environ, **pg.env(dbname), **redis_server.env(), "PYTHONPATH": str(REPO / "tests"),
           "TMI_RUN_DIR": str(work / "runs"), "TMI_BACKUP_DIR": str(work / "backups")}
    argv = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(REPO / "inventories" / "local"),
            str(REPO / "benchmarks" / "validate_post.yml"),
            "-e", "validate_analyze=false", "-e", f"@{baseline_file}"]
    started = time.monotonic()
    result = subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True, check=False)
    elapsed = time.monotonic() - started
    if result.returncode != 0:
        raise SystemExit("the validate role failed:\n" + result.stdout[-3000:])
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, default=23000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the servers on a time-out too
    RESULTS.mkdir(parents=True, exist_ok=True)
    with PostgresServer() as pg, RedisServer() as redis_server, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        pg.create_database("tmi")
        conn = pg.connect("tmi")
        fixture.apply_like_golang_migrate(conn, 17)
        started = time.monotonic()
        counts = fixture.generate(conn, args.scale)
        generate_seconds = time.monotonic() - started
        rows = sum(counts.values())
        sql_file = RESULTS / "validation-equivalent.sql"
        sql_file.write_text(equivalent_sql(conn))
        from ansible_collections.tmi.migration.plugins.module_utils import snapshot

        with conn.cursor() as cur:
            baseline = snapshot.take(cur)
        conn.close()
        baseline_file = work / "baseline.json"
        baseline_file.write_text(json.dumps({"validate_baseline": baseline}))
        time_psql(pg, "tmi", sql_file)  # warm the cache for both
        psql_times, role_times = [], []
        for _round in range(args.repeat):
            psql_times.append(time_psql(pg, "tmi", sql_file))
            role_times.append(time_role(pg, redis_server, "tmi", baseline_file, work))
        server_version = pg.server_version
    best_psql, best_role = min(psql_times), min(role_times)
    result = {
        "benchmark": "validation", "scale": args.scale, "rows": rows, "generate_seconds": round(generate_seconds, 2),
        "psql_seconds": [round(t, 3) for t in psql_times], "role_seconds": [round(t, 3) for t in role_times],
        "best_psql_seconds": round(best_psql, 3), "best_role_seconds": round(best_role, 3),
        "ratio": round(best_role / best_psql, 3), "target_ratio": 1.5,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "postgresql": server_version},
    }
    (RESULTS / f"validation-{args.scale}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'rows':>10} {'psql (s)':>10} {'role (s)':>10} {'ratio':>7} {'target':>7}")
    print(f"{rows:>10} {best_psql:>10.2f} {best_role:>10.2f} {result['ratio']:>7.2f} {1.5:>7.2f}")
    return 0 if result["ratio"] <= 1.5 else 1


if __name__ == "__main__":
    sys.exit(main())
