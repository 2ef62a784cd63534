"""Benchmark: the validate role's post phase against the same checks as hand-written SQL run with psql.

    .venv/bin/python benchmarks/validation.py [--scale 23000] [--repeat 3] [--out DIR]

--scale is the number of threat models; 23000 gives about 1.02 million rows. The script
starts its own throwaway PostgreSQL and Redis, builds a TMI database at version 17, takes
the baseline as migrate.yml takes it (per table; metadata, whose `key` 000017 retypes, over
the columns that keep their values) with the analysis of 000016 and 000017, then times (best
of --repeat, alternating):

* psql: one SQL file holding every check the post phase makes, written out as a DBA would:
  row counts, an anti-join per foreign key and per polymorphic metadata relation, the
  000017 value rules, NOT VALID and expected constraints, the entity-type distribution,
  the per-table count and checksum, index validity and duplicates, the three EXPLAINs;
* the role: ansible-playbook running tmi.migration.validate with validate_phase=post and
  that analysis (each table judged by what the files do to it, the expected indexes and
  constraints read from the files), including Ansible's start-up, argument validation and
  module round trips.

Results: printed as a table, written to benchmarks/results/validation-<scale>.json with a
plot of every round (.png), and the generated SQL to benchmarks/results/validation-equivalent.sql.
The exit status is 3 when the best ratio misses the 1.5x target (1 when it cannot run).
"""

from __future__ import annotations

import json
import sys

from benchlib import REPO, Bench, best, exit_status, median, parser, table

# isort: split
import yaml
from ansible_collections.tmi.migration.plugins.module_utils import analysis, integrity, snapshot

from tmi_testenv import fixture

CHECKSUM = "SELECT " + snapshot.FIGURES_COLUMNS + " FROM {} t;"


# TMI's profile: the one place the collection keeps TMI's schema knowledge.
PROFILE_FILE = REPO / "roles" / "validate" / "vars" / "profiles" / "tmi.yml"
PROFILE = yaml.safe_load(PROFILE_FILE.read_text())["__validate_profile"]
# The polymorphic relations checked by a plain lookup (the cell relation, into a JSON array, is written out below).
ENTITY_TABLES = [(rel["filter_value"], rel["ref_table"]) for rel in PROFILE["logical_relations"]
                 if "ref_jsonb_array" not in rel]


def q(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def equivalent_sql(conn) -> str:
    """Every post-phase check as plain SQL, built from the catalog the way a DBA would write it out."""
    lines = ["\\set QUIET on", "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;"]
    with conn.cursor() as cur:
        for table in ("users", "threat_models", "threat_model_access", "diagrams", "threats", "documents", "sources",
                      "metadata"):
            lines.append(f"SELECT count(*) FROM {q(table)};")
        cur.execute(integrity.FOREIGN_KEYS_SQL, ("public",))
        for _name, child, parent, _schema, columns, refs in cur.fetchall():
            not_null = " AND ".join(f"c.{q(c)} IS NOT NULL" for c in columns)
            match = " AND ".join(f"p.{q(r)} = c.{q(c)}" for c, r in zip(columns, refs, strict=True))
            lines.append(f"SELECT count(*) FROM {q(child)} c WHERE {not_null} "
                         f"AND NOT EXISTS (SELECT 1 FROM {q(parent)} p WHERE {match});")
        for kind, table in ENTITY_TABLES:
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
        for query in PROFILE["queries"]:
            cur.execute(query["params_sql"])
            value = cur.fetchone()[0]
            lines.append("EXPLAIN " + query["sql"].replace("%s", "'" + str(value).replace("'", "''") + "'") + ";")
        lines.append("SELECT relname, indexrelname, idx_scan FROM pg_stat_user_indexes;")
        lines.append("COMMIT;")
    return "\n".join(lines) + "\n"


def analysis_and_baseline(conn) -> tuple[dict, dict]:
    """pg_migrate's analysis of 000016 and 000017, and the baseline migrate.yml would take with it."""
    plan = fixture.planned_analysis(conn, (16, 17))
    with conn.cursor() as cur:
        columns = {}
        for name, leave_out in analysis.projections(plan["tables"]).items():
            columns[name] = [c for c in snapshot.table_columns(cur, *name.split(".")) if c not in leave_out]
        baseline = snapshot.take(cur, columns=columns)
    return plan, baseline


def main() -> int:
    args = parser(__doc__, scale=23000, repeat=3).parse_args()
    with Bench("validation", args) as bench:
        rows = bench.database("tmi", 17)
        sql_file = args.out / "validation-equivalent.sql"
        args.out.mkdir(parents=True, exist_ok=True)
        conn = bench.pg.connect("tmi")
        try:
            sql_file.write_text(equivalent_sql(conn))
            plan, baseline = analysis_and_baseline(conn)
        finally:
            conn.close()
        baseline_file = bench.work / "baseline.json"
        baseline_file.write_text(json.dumps({"validate_baseline": baseline, "validate_analysis": plan}))
        bench.psql_file(sql_file, "tmi")  # warm the cache for both
        psql_times, role_times = [], []
        for _round in range(args.repeat):
            psql_times.append(bench.psql_file(sql_file, "tmi"))
            role_times.append(bench.playbook("benchmarks/playbooks/validate_post.yml", "tmi",
                                             "-e", "validate_analyze=false", "-e", f"@{baseline_file}"))
        ratio, median_ratio = best(role_times) / best(psql_times), median(role_times) / median(psql_times)
        result = {
            "psql_seconds": [round(t, 3) for t in psql_times], "role_seconds": [round(t, 3) for t in role_times],
            "best_psql_seconds": round(best(psql_times), 3), "best_role_seconds": round(best(role_times), 3),
            "ratio": round(ratio, 3), "median_ratio": round(median_ratio, 3), "target_ratio": 1.5,
        }

        def plot(plt):
            return bench_plot(plt, rows, psql_times, role_times)

        json_path, png_path = bench.save(result, plot)
    print(table(["rows", "psql (s)", "role (s)", "ratio", "median ratio", "target"],
                [[rows, best(psql_times), best(role_times), ratio, median_ratio, 1.5]]))
    print(f"results: {json_path.relative_to(REPO) if json_path.is_relative_to(REPO) else json_path}, {png_path.name}")
    return exit_status(ratio <= 1.5)


def bench_plot(plt, rows, psql_times, role_times):
    figure, axes = plt.subplots(figsize=(7, 3.5))
    rounds = range(1, len(psql_times) + 1)
    axes.plot(rounds, psql_times, "o-", label="hand-written SQL with psql")
    axes.plot(rounds, role_times, "s-", label="validate role (post), ansible-playbook start-up included")
    axes.plot(rounds, [1.5 * best(psql_times)] * len(psql_times), "--", color="grey", label="1.5 x best psql")
    axes.set_xticks(list(rounds))
    axes.set_xlabel("round")
    axes.set_ylabel("seconds")
    axes.set_ylim(0, max(role_times + psql_times) * 1.3)
    axes.set_title(f"Post-migration validation, {rows:,} rows")
    axes.legend(loc="lower right", fontsize=8)
    return figure


if __name__ == "__main__":
    sys.exit(main())
