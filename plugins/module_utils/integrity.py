# -*- coding: utf-8 -*-
# Copyright: (c) 2026, tmi.migration maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Read-only data integrity checks of one schema: the engine of the pg_integrity_check module.

Written here because no module of community.postgresql checks data integrity: orphans of every
foreign key (one set-based anti-join each) and of relations without one, value and uniqueness
rules, NOT VALID and missing constraints, expected columns, value distributions, a data snapshot
and its comparison. Nothing here knows an application's schema: the rules come in ``options``
(the validate role passes its profile's). The scans run on a ``readonly.SnapshotPool``, so every
figure describes the same moment and nothing can be written.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.tmi.migration.plugins.module_utils import analysis, bookkeeping, datacheck, snapshot
from ansible_collections.tmi.migration.plugins.module_utils.readonly import figures_job, table_sizes

try:
    from psycopg2 import sql
except ImportError:  # the module reports it when it connects
    sql = None

# The options of Checker, with the module's defaults: nothing to check but what is asked for.
DEFAULTS = dict(schema="public", tables=[], expected_columns={}, require_tables=True, state_table="",
                history_table=bookkeeping.HISTORY_TABLE, run_lock_table=bookkeeping.RUN_LOCK_TABLE,
                foreign_keys=True, logical_relations=[], value_rules=[], unique_rules=[], expected_constraints=[],
                distribution=[], snapshot=False, snapshot_tables=None, compare_to=None, changes=None, unknown=[],
                allow_changes=[], compare_ignore=[], samples=5)

FOREIGN_KEYS_SQL = """
SELECT con.conname, cc.relname, pc.relname, pn.nspname,
       ARRAY(SELECT a.attname::text FROM unnest(con.conkey) WITH ORDINALITY AS k(n, i)
             JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.n ORDER BY k.i),
       ARRAY(SELECT a.attname::text FROM unnest(con.confkey) WITH ORDINALITY AS k(n, i)
             JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.n ORDER BY k.i)
FROM pg_constraint con
JOIN pg_class cc ON cc.oid = con.conrelid JOIN pg_namespace cn ON cn.oid = cc.relnamespace
JOIN pg_class pc ON pc.oid = con.confrelid JOIN pg_namespace pn ON pn.oid = pc.relnamespace
WHERE con.contype = 'f' AND cn.nspname = %s ORDER BY cc.relname, con.conname
"""


class Checker(object):
    """``run()`` checks what ``options`` (see DEFAULTS; the module's options) ask for, over ``pool``.

    Findings go into the result's ``failed_checks``; the checker never raises for a finding.
    """

    def __init__(self, pool, options):
        self.params = dict(DEFAULTS, **options)
        self.schema = self.params["schema"]
        self.pool = pool
        self.failed = []
        with pool.cursor as cur:
            self.sizes = table_sizes(cur)
        self.existing = set(name for schema, name in self.sizes if schema == self.schema)

    def cost(self, *tables, **kwargs):
        """The bytes the scans of a job read, weighted by how much work each row takes (``factor``)."""
        return kwargs.get("factor", 1) * sum(self.sizes.get(t if isinstance(t, tuple) else (self.schema, t), 0)
                                             for t in tables)

    def table(self, name, schema=None):
        return sql.SQL("{}.{}").format(sql.Identifier(schema or self.schema), sql.Identifier(name))

    def fail(self, check, message, **details):
        self.failed.append(datacheck.finding(check, message, **details))

    def sample_column(self, cur, table):
        """The single-column primary key of a table, for sample ids; ctid where there is none."""
        cur.execute("SELECT array_agg(a.attname::text) FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
                    "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = %s::regclass AND i.indisprimary",
                    (self.table(table).as_string(cur),))
        columns = cur.fetchone()[0] or []
        return sql.Identifier(columns[0]) if len(columns) == 1 else sql.SQL("ctid")

    def count_and_samples(self, cur, table, condition, args):
        """count(*) of table rows matching condition, and sample ids when there are any."""
        cur.execute(sql.SQL("SELECT count(*) FROM {} AS c WHERE {}").format(self.table(table), condition), args)
        count = cur.fetchone()[0]
        samples = []
        if count:
            cur.execute(sql.SQL("SELECT c.{}::text FROM {} AS c WHERE {} LIMIT %s").format(
                self.sample_column(cur, table), self.table(table), condition), [*args, self.params["samples"]])
            samples = [row[0] for row in cur.fetchall()]
        return count, samples

    # --- jobs (each runs on a pool cursor) ---------------------------------------------
    def foreign_key_job(self, name, child, parent, parent_schema, columns, ref_columns):
        def job(cur):
            not_null = sql.SQL(" AND ").join(sql.SQL("c.{} IS NOT NULL").format(sql.Identifier(c)) for c in columns)
            match = sql.SQL(" AND ").join(sql.SQL("p.{} = c.{}").format(sql.Identifier(r), sql.Identifier(c))
                                          for c, r in zip(columns, ref_columns))
            condition = sql.SQL("{} AND NOT EXISTS (SELECT 1 FROM {} AS p WHERE {})").format(
                not_null, self.table(parent, parent_schema), match)
            count, samples = self.count_and_samples(cur, child, condition, [])
            return dict(relation=name, kind="foreign key", table=child, columns=columns, ref_table=parent,
                        count=count, samples=samples)
        return job

    def logical_job(self, relation):
        def job(cur):
            column = sql.Identifier(relation["column"])
            ref_column = sql.Identifier(relation.get("ref_column") or "id")
            conditions, args = [sql.SQL("c.{} IS NOT NULL").format(column)], []
            if relation.get("filter_column"):
                conditions.append(sql.SQL("c.{} = %s").format(sql.Identifier(relation["filter_column"])))
                args.append(relation["filter_value"])
            if relation.get("ref_jsonb_array"):
                # ids inside a JSON array of the referenced rows. NOT EXISTS over the lateral array lets the
                # planner hash-anti-join; NOT IN (subquery) degrades to a nested scan once it outgrows work_mem.
                conditions.append(sql.SQL(
                    "NOT EXISTS (SELECT 1 FROM {} AS p CROSS JOIN LATERAL jsonb_array_elements(p.{}) AS e "
                    "WHERE e ->> %s = c.{}::text)").format(
                        self.table(relation["ref_table"]), sql.Identifier(relation["ref_jsonb_array"]), column))
                args.append(relation.get("ref_jsonb_key") or "id")
            else:
                conditions.append(sql.SQL("NOT EXISTS (SELECT 1 FROM {} AS p WHERE p.{} = c.{})").format(
                    self.table(relation["ref_table"]), ref_column, column))
            count, samples = self.count_and_samples(cur, relation["table"], sql.SQL(" AND ").join(conditions), args)
            return dict(relation=relation.get("name") or "%s.%s" % (relation["table"], relation["column"]),
                        kind="logical", table=relation["table"], columns=[relation["column"]],
                        ref_table=relation["ref_table"], count=count, samples=samples)
        return job

    @staticmethod
    def rule_condition(rule):
        """(SQL condition on alias c, its arguments, a description) of one value rule."""
        column = sql.Identifier(rule["column"])
        if "allowed" in rule:
            return (sql.SQL("c.{} IS NOT NULL AND NOT (c.{}::text = ANY(%s))").format(column, column),
                    [list(map(str, rule["allowed"]))], "outside %s" % ", ".join(rule["allowed"]))
        if "pattern" in rule:
            return sql.SQL("c.{}::text !~ %s").format(column), [rule["pattern"]], "not matching %s" % rule["pattern"]
        if "max_length" in rule:
            return (sql.SQL("length(c.{}::text) > %s").format(column), [int(rule["max_length"])],
                    "longer than %s" % rule["max_length"])
        raise ValueError("value rule for %s.%s needs allowed, pattern or max_length" % (rule["table"], rule["column"]))

    def value_job(self, table, rules):
        """All value rules of one table in one scan (count(*) FILTER per rule); samples only for breaches."""
        def job(cur):
            conditions = [self.rule_condition(rule) for rule in rules]
            counts = sql.SQL(", ").join(sql.SQL("count(*) FILTER (WHERE {})").format(c) for c, _a, _d in conditions)
            cur.execute(sql.SQL("SELECT {} FROM {} AS c").format(counts, self.table(table)),
                        [arg for _c, args, _d in conditions for arg in args])
            outcomes = []
            for rule, (condition, args, what), count in zip(rules, conditions, cur.fetchone()):
                samples = self.count_and_samples(cur, table, condition, args)[1] if count else []
                outcomes.append(dict(rule=what, table=table, columns=[rule["column"]], count=int(count),
                                     samples=samples))
            return outcomes
        return job

    def unique_job(self, rule):
        def job(cur):
            columns = sql.SQL(", ").join(sql.Identifier(c) for c in rule["columns"])
            cur.execute(sql.SQL("SELECT count(*), coalesce(sum(n), 0) FROM (SELECT count(*) AS n FROM {} "
                                "GROUP BY {} HAVING count(*) > 1) AS d").format(self.table(rule["table"]), columns))
            groups, rows = cur.fetchone()
            return dict(rule="unique (%s)" % ", ".join(rule["columns"]), table=rule["table"], columns=rule["columns"],
                        count=int(rows), groups=int(groups), samples=[])
        return job

    def distribution_job(self, spec):
        def job(cur):
            cur.execute(sql.SQL("SELECT {}::text, count(*) FROM {} GROUP BY 1 ORDER BY 1").format(
                sql.Identifier(spec["column"]), self.table(spec["table"])))
            return ("%s.%s" % (spec["table"], spec["column"]), dict((str(v), int(n)) for v, n in cur.fetchall()))
        return job

    # --- the whole check ---------------------------------------------------------------
    def run(self):
        params = self.params
        result = dict(row_counts={}, orphans=[], invalid_values=[], not_valid_constraints=[], distribution={})
        for table in params["tables"]:
            if table not in self.existing:
                self.fail("missing_table", "table %s.%s does not exist" % (self.schema, table), table=table)
        self.columns(params["expected_columns"])
        if params["state_table"]:
            result["schema_state"] = self.state(params["state_table"])

        jobs = []  # (kind, job, cost): the costs order the jobs, the most expensive first
        if params["foreign_keys"]:
            with self.pool.cursor as cur:
                cur.execute(FOREIGN_KEYS_SQL, (self.schema,))
                for name, child, parent, parent_schema, columns, ref_columns in cur.fetchall():
                    jobs.append(("orphans", self.foreign_key_job(name, child, parent, parent_schema, columns,
                                                                 ref_columns),
                                 self.cost(child, (parent_schema, parent))))
        for relation in params["logical_relations"]:
            if relation["table"] in self.existing and relation["ref_table"] in self.existing:
                jobs.append(("orphans", self.logical_job(relation),
                             self.cost(relation["table"], relation["ref_table"])))
        by_table = {}
        for rule in params["value_rules"]:
            if rule["table"] in self.existing:
                by_table.setdefault(rule["table"], []).append(rule)
        jobs += [("value_rules", self.value_job(table, table_rules), self.cost(table))
                 for table, table_rules in by_table.items()]
        jobs += [("invalid_values", self.unique_job(r), self.cost(r["table"], factor=2))
                 for r in params["unique_rules"] if r["table"] in self.existing]
        jobs += [("distribution", self.distribution_job(d), self.cost(d["table"]))
                 for d in params["distribution"] if d["table"] in self.existing]

        snapshot_tables = None
        if params["snapshot"] or params["compare_to"] is not None:
            with self.pool.cursor as cur:
                snapshot_tables = snapshot.user_tables(cur)
                projected = self.projected_columns(cur, snapshot_tables)
                if params["snapshot_tables"] is not None:
                    wanted = set(params["snapshot_tables"])
                    snapshot_tables = [t for t in snapshot_tables if "%s.%s" % t in wanted]
                hashing = snapshot.hashings(cur, snapshot_tables)
            # A row hash costs more per byte than a plain scan, which the cost factor orders by (md5 of the row's
            # text costs 3-6 times the row hash: docs/benchmarks.md, section 7).
            # Compared with a baseline, each table is figured by the baseline's algorithm.
            like = params["compare_to"] or {}
            jobs += [("snapshot", figures_job(s, t, projected.get("%s.%s" % (s, t)), like.get("%s.%s" % (s, t)),
                                              hashing[(s, t)]), self.cost((s, t), factor=2))
                     for s, t in snapshot_tables]
        counted = set(t for s, t in snapshot_tables or () if s == self.schema)
        jobs += [("row_count", self.count_job(t), self.cost(t)) for t in params["tables"]
                 if t in self.existing and t not in counted]

        outcomes = self.pool.run([job for _kind, job, _cost in jobs], costs=[cost for _kind, _job, cost in jobs])
        figures = {}
        for (kind, _job, _cost), outcome in zip(jobs, outcomes):
            if kind == "value_rules":
                for each in outcome:
                    self.record_invalid(result, each)
            elif kind == "orphans":
                result["orphans"].append(outcome)
                if outcome["count"]:
                    self.fail("orphans", "%s.%s: %s no %s row (%s; e.g. %s)" % (
                        outcome["table"], ", ".join(outcome["columns"]),
                        "1 row references" if outcome["count"] == 1 else "%d rows reference" % outcome["count"],
                        outcome["ref_table"],
                        outcome["relation"], ", ".join(outcome["samples"])), **outcome)
            elif kind == "invalid_values":
                self.record_invalid(result, outcome)
            elif kind == "distribution":
                result["distribution"][outcome[0]] = outcome[1]
            elif kind == "snapshot":
                figures[outcome[0]] = outcome[1]
            else:
                result["row_counts"][outcome[0]] = outcome[1]
        for table in params["tables"]:
            key = "%s.%s" % (self.schema, table)
            if key in figures:
                result["row_counts"][table] = figures[key]["rows"]

        self.constraints(result)
        if params["snapshot"]:
            result["snapshot"] = figures
        ignore = self.ignored()
        if params["compare_to"] is not None and params["changes"] is not None:
            expected = datacheck.rehearsed_results(params["compare_to"], params["rehearsed"],
                                                   params["rehearsed_from"])
            rows, findings = datacheck.judge(params["compare_to"], figures, params["changes"], params["unknown"],
                                             params["allow_changes"], ignore, expected)
            result["data_check"] = rows
            result["differences"] = findings
            self.failed.extend(findings)
        elif params["compare_to"] is not None:
            differences = snapshot.compare(params["compare_to"], figures, ignore=ignore)
            result["differences"] = differences
            for diff in differences:
                self.fail("data_changed", "data changed since the baseline: %s" % snapshot.describe([diff]), **diff)
        result["failed_checks"] = self.failed
        return result

    def ignored(self):
        """The tables left out of a comparison: the bookkeeping tables (always) and ``compare_ignore``."""
        return set(bookkeeping.from_options(self.params, self.schema)) | set(self.params["compare_ignore"])

    def projected_columns(self, cur, tables):
        """{table: columns} of the tables figured over some columns only.

        Compared with a baseline: the columns the baseline was figured over (those of them still
        there; a missing one is lost data). As a baseline for O(changes): every column but those the
        files drop, retype or rename, so the figures after the migration can be compared."""
        projected = {}
        existing = dict(("%s.%s" % t, t) for t in tables)
        if self.params["compare_to"] is not None:
            for name, entry in self.params["compare_to"].items():
                if entry.get("columns") is not None and name in existing:
                    now = snapshot.table_columns(cur, *existing[name])
                    projected[name] = [c for c in entry["columns"] if c in now]
        elif self.params["changes"]:
            for name, leave_out in analysis.projections(self.params["changes"]).items():
                if name in existing:
                    projected[name] = [c for c in snapshot.table_columns(cur, *existing[name]) if c not in leave_out]
        return projected

    def record_invalid(self, result, outcome):
        result["invalid_values"].append(outcome)
        if outcome["count"]:
            self.fail("invalid_values", "%s.%s: %s %s%s" % (
                outcome["table"], ", ".join(outcome["columns"]),
                "1 row" if outcome["count"] == 1 else "%d rows" % outcome["count"],
                "break " + outcome["rule"] if outcome["rule"].startswith("unique") else outcome["rule"],
                " (e.g. %s)" % ", ".join(outcome["samples"]) if outcome["samples"] else ""), **outcome)

    def state(self, table):
        """golang-migrate's (version, dirty) from its state table; (None, False) without one."""
        if table not in self.existing:
            return dict(version=None, dirty=False)
        with self.pool.cursor as cur:
            cur.execute(sql.SQL("SELECT version, dirty FROM {} LIMIT 1").format(self.table(table)))
            row = cur.fetchone()
        return dict(version=int(row[0]) if row and row[0] >= 0 else None, dirty=bool(row and row[1]))

    def columns(self, expected):
        """Missing tables and columns, from one catalog query (the runbook's step 2)."""
        if not expected:
            return
        with self.pool.cursor as cur:
            cur.execute("SELECT c.relname, a.attname::text FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
                        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = ANY(%s) "
                        "AND a.attnum > 0 AND NOT a.attisdropped", (self.schema, list(expected)))
            found = set(cur.fetchall())
        for table, columns in expected.items():
            if table not in self.existing:
                if table not in self.params["tables"] and self.params["require_tables"]:
                    self.fail("missing_table", "table %s.%s does not exist" % (self.schema, table), table=table)
                continue
            for column in columns:
                if (table, column) not in found:
                    self.fail("missing_column", "column %s.%s is missing" % (table, column), table=table,
                              column=column)

    def count_job(self, table):
        def job(cur):
            cur.execute(sql.SQL("SELECT count(*) FROM {}").format(self.table(table)))
            return table, cur.fetchone()[0]
        return job

    def constraints(self, result):
        with self.pool.cursor as cur:
            cur.execute("SELECT c.conrelid::regclass::text, c.conname, c.contype FROM pg_constraint c "
                        "JOIN pg_namespace n ON n.oid = c.connamespace WHERE n.nspname = %s AND NOT c.convalidated "
                        "ORDER BY 1, 2", (self.schema,))
            for table, name, kind in cur.fetchall():
                result["not_valid_constraints"].append(dict(table=table, name=name, type=kind))
                self.fail("not_valid_constraint", "constraint %s on %s is NOT VALID: existing rows were never "
                                                  "checked (ALTER TABLE ... VALIDATE CONSTRAINT)" % (name, table),
                          table=table, name=name)
            for expected in self.params["expected_constraints"]:
                table = expected["table"].split(".")[-1]  # the files' analysis names tables with their schema
                cur.execute("SELECT c.convalidated FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid "
                            "JOIN pg_namespace n ON n.oid = t.relnamespace WHERE n.nspname = %s AND t.relname = %s "
                            "AND c.conname = %s", (self.schema, table, expected["name"]))
                row = cur.fetchone()
                if row is None:
                    message = "constraint %s on %s is missing" % (expected["name"], table)
                    self.fail("missing_constraint", message, **expected)
