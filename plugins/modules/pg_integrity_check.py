#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, tmi.migration maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: pg_integrity_check
short_description: Read-only data integrity checks of the TMI database, with snapshots and their comparison
version_added: 0.1.0
description:
  - Row counts; orphaned rows for every foreign key declared in the schema (found in C(pg_constraint)) and for
    I(logical) relations that have no foreign key, such as TMI's polymorphic C(metadata(entity_type, entity_id));
    values that break rules (allowed values, a pattern, a maximum length, uniqueness), for example rows that would
    make migration 000017 fail; constraints left C(NOT VALID) and expected constraints missing; the distribution of a
    column (the runbook's C(GROUP BY entity_type)); a data snapshot (per table, row count and content checksum) and
    its comparison with an earlier one.
  - Every finding goes into RV(failed_checks), which a role asserts on; the module itself never fails for a finding.
  - Runs in REPEATABLE READ, READ ONLY transactions that share one exported snapshot, over O(parallel) connections,
    so all figures describe the same moment and nothing can be written. Each relation is one set-based anti-join.
  - Written for this collection because no module of community.postgresql checks data integrity.
options:
  schema:
    description: Schema of the tables.
    type: str
    default: public
    version_added: 0.1.0
  tables:
    description: Tables that must exist; their row counts are returned.
    type: list
    elements: str
    default: [users, threat_models, threat_model_access, diagrams, threats, documents, sources, metadata]
    version_added: 0.1.0
  expected_columns:
    description:
      - Columns each table must have (the runbook's catalog query, step 2), as a mapping of table name to column
        list. A missing table or column is a failed check.
    type: dict
    default: {}
    version_added: 0.1.0
  require_tables:
    description:
      - Whether a table of O(expected_columns) that does not exist is a failed check. V(false) checks the columns of
        the tables that exist only (an application profile applied to a database that may not be that application's).
    type: bool
    default: true
    version_added: 0.1.0
  state_table:
    description:
      - golang-migrate's state table (for example C(schema_migrations)) to read the schema version and dirty flag
        from (RV(schema_state)); empty reads none.
    type: str
    default: ""
    version_added: 0.1.0
  foreign_keys:
    description: Look for orphans of every foreign key declared in O(schema).
    type: bool
    default: true
    version_added: 0.1.0
  logical_relations:
    description:
      - Relations without a foreign key. Each has C(table), C(column), C(ref_table), optionally C(ref_column)
        (default C(id)), C(filter_column) and C(filter_value) (only rows where it equals the value), C(name), and for
        ids kept in a JSON array of the referenced table C(ref_jsonb_array) and C(ref_jsonb_key).
      - Default - TMI's polymorphic metadata, one relation per entity type (cells live in C(diagrams.cells)).
    type: list
    elements: dict
    version_added: 0.1.0
  value_rules:
    description:
      - Rules on column values. Each has C(table), C(column) and one of C(allowed) (list), C(pattern) (a POSIX
        regular expression the value must match) or C(max_length).
      - Default - the rules migration 000017 adds to C(metadata).
    type: list
    elements: dict
    version_added: 0.1.0
  unique_rules:
    description:
      - Column sets that must be unique, each C(table) and C(columns).
      - Default - metadata's (entity_type, entity_id, key).
    type: list
    elements: dict
    version_added: 0.1.0
  expected_constraints:
    description: Constraints that must exist and be validated, each C(table) and C(name).
    type: list
    elements: dict
    default: []
    version_added: 0.1.0
  distribution:
    description: Columns whose value counts are returned, each C(table) and C(column).
    type: list
    elements: dict
    version_added: 0.1.0
  snapshot:
    description: Take a data snapshot (row count and content checksum per table).
    type: bool
    default: false
    version_added: 0.1.0
  snapshot_tables:
    description: Tables (C(schema.table)) of the snapshot; default all user tables.
    type: list
    elements: str
    version_added: 0.1.0
  compare_to:
    description: An earlier snapshot (for example a backup's figures); every difference is a failed check.
    type: dict
    version_added: 0.1.0
  changes:
    description:
      - What the applied files do to each table, as M(tmi.migration.pg_migrate) returns it in C(analysis.tables).
      - With O(snapshot), the figures of a table whose columns the files add, drop, retype or rename cover only the
        columns that must keep their values (listed in the figures as C(columns)).
      - With O(compare_to), each table is judged by what its files may do to it instead of being required to equal
        the baseline (see RV(data_check)); without it every difference is a failed check.
    type: dict
    version_added: 0.1.0
  unknown:
    description:
      - Statements of the applied files whose effect the analysis cannot read (C(analysis.unknown)), named in the
        message of a change no statement explains. Such a change still fails unless declared in O(allow_changes).
    type: list
    elements: dict
    default: []
    version_added: 0.1.0
  allow_changes:
    description:
      - Tables an operator declares may change beyond what the files say, each a C(schema.table) name (any change)
        or C({table, changes}) with C(changes) a list of V(write) and V(delete). A declared change is a warning.
    type: list
    elements: raw
    default: []
    version_added: 0.1.0
  compare_ignore:
    description: Tables (C(schema.table)) left out of the comparison because the migration may change them.
    type: list
    elements: str
    default: [public.schema_migrations, public.tmi_migration_history, public.tmi_migration_lock]
    version_added: 0.1.0
  samples:
    description: How many sample ids to return per finding.
    type: int
    default: 5
    version_added: 0.1.0
  parallel:
    description:
      - Connections to spread the scans over, like C(vacuumdb --jobs). The largest scans start first.
      - Raise it to the number of cores the server can spare.
    type: int
    default: 2
    version_added: 0.1.0
  workers_per_scan:
    description:
      - PostgreSQL parallel workers each scan may use (C(max_parallel_workers_per_gather) of these sessions).
      - The O(parallel) connections are already the parallelism, and workers on top of them compete for the same
        cores, so the default is V(0); a negative value keeps the server's setting.
    type: int
    default: 0
    version_added: 0.1.0
attributes:
  check_mode:
    support: full
    description: The module only reads; check mode runs the same checks.
extends_documentation_fragment:
  - community.postgresql.postgres
  - tmi.migration.postgres
author:
  - tmi.migration maintainers (@tmi-migration)
"""

EXAMPLES = r"""
- name: Check the TMI data after the migration and compare with the backup's figures
  tmi.migration.pg_integrity_check:
    login_db: tmi
    snapshot: true
    compare_to: "{{ backup_result.figures }}"
    expected_constraints:
      - {table: metadata, name: metadata_entity_type_check}
  register: integrity

- name: Stop on any finding
  ansible.builtin.assert:
    that: integrity.failed_checks | length == 0
    fail_msg: "{{ integrity.failed_checks | map(attribute='message') | join('; ') }}"
"""

RETURN = r"""
row_counts:
  description: Rows per table of O(tables).
  returned: always
  type: dict
  sample: {"threats": 230000}
orphans:
  description: Every relation checked, with the orphan count and sample ids of orphaned rows.
  returned: always
  type: list
  elements: dict
  sample: [{"relation": "threats_threat_model_id_fkey", "table": "threats", "ref_table": "threat_models", "count": 0,
            "samples": []}]
invalid_values:
  description: Value and uniqueness rules with the rows that break them.
  returned: always
  type: list
  elements: dict
not_valid_constraints:
  description: Constraints of O(schema) that are not validated.
  returned: always
  type: list
  elements: dict
distribution:
  description: Value counts per requested column, as C({"table.column" -> {value -> count}}).
  returned: always
  type: dict
snapshot:
  description: Per table, C(rows) and C(checksum).
  returned: when O(snapshot=true)
  type: dict
data_check:
  description:
    - Per table, with O(compare_to) and O(changes) - C(rows_before), C(rows_after), C(content) (unchanged, changed,
      new, dropped), C(does) (what the files do to it), C(by) (which file and line), C(verdict) (ok, warning, error)
      and C(message).
  returned: when O(compare_to) and O(changes) are given
  type: list
  elements: dict
  sample: [{"table": "public.threats", "rows_before": 6000, "rows_after": 6000, "content": "changed",
            "does": ["write"], "by": "000018 line 1: updates rows", "verdict": "ok", "message": ""}]
differences:
  description: Differences from O(compare_to) (with O(changes), the findings of the data check).
  returned: when O(compare_to) is given
  type: list
  elements: dict
schema_state:
  description: C(version) (null without migrations) and C(dirty) from O(state_table).
  returned: when O(state_table) is set
  type: dict
  sample: {"version": 17, "dirty": false}
failed_checks:
  description:
    - Every finding, each with C(check), C(message), C(severity) (V(error) or V(warning)) and details.
  returned: always
  type: list
  elements: dict
  sample: [{"check": "orphans", "message": "threats.threat_model_id: 3 rows reference no threat_models row"}]
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_native
from ansible_collections.tmi.migration.plugins.module_utils import analysis, datacheck, snapshot
from ansible_collections.tmi.migration.plugins.module_utils.postgres import argument_spec
from ansible_collections.tmi.migration.plugins.module_utils.readonly import SnapshotPool, figures_job, table_sizes

try:
    import psycopg2
    from psycopg2 import sql
except ImportError:  # connect() reports it
    psycopg2 = None

APPLICATION_NAME = "tmi.migration.pg_integrity_check"
ENTITY_TABLES = (("threat_model", "threat_models"), ("threat", "threats"), ("diagram", "diagrams"),
                 ("document", "documents"), ("source", "sources"))
TMI_RELATIONS = [dict(name="metadata(%s)" % kind, table="metadata", column="entity_id", filter_column="entity_type",
                      filter_value=kind, ref_table=table) for kind, table in ENTITY_TABLES] + [
    dict(name="metadata(cell)", table="metadata", column="entity_id", filter_column="entity_type",
         filter_value="cell", ref_table="diagrams", ref_jsonb_array="cells", ref_jsonb_key="id")]
TMI_VALUE_RULES = [
    dict(table="metadata", column="entity_type",
         allowed=["threat_model", "threat", "diagram", "document", "source", "cell"]),
    dict(table="metadata", column="key", pattern="^[a-zA-Z0-9_-]+$"),
    dict(table="metadata", column="key", max_length=128),
    dict(table="metadata", column="value", max_length=65535),
]
TMI_UNIQUE_RULES = [dict(table="metadata", columns=["entity_type", "entity_id", "key"])]
TMI_DISTRIBUTION = [dict(table="metadata", column="entity_type")]

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
    def __init__(self, module, pool):
        self.module = module
        self.params = module.params
        self.schema = module.params["schema"]
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
        relations = TMI_RELATIONS if params["logical_relations"] is None else params["logical_relations"]
        for relation in relations:
            if relation["table"] in self.existing and relation["ref_table"] in self.existing:
                jobs.append(("orphans", self.logical_job(relation),
                             self.cost(relation["table"], relation["ref_table"])))
        rules = TMI_VALUE_RULES if params["value_rules"] is None else params["value_rules"]
        by_table = {}
        for rule in rules:
            if rule["table"] in self.existing:
                by_table.setdefault(rule["table"], []).append(rule)
        jobs += [("value_rules", self.value_job(table, table_rules), self.cost(table))
                 for table, table_rules in by_table.items()]
        uniques = TMI_UNIQUE_RULES if params["unique_rules"] is None else params["unique_rules"]
        jobs += [("invalid_values", self.unique_job(r), self.cost(r["table"], factor=2))
                 for r in uniques if r["table"] in self.existing]
        spreads = TMI_DISTRIBUTION if params["distribution"] is None else params["distribution"]
        jobs += [("distribution", self.distribution_job(d), self.cost(d["table"]))
                 for d in spreads if d["table"] in self.existing]

        snapshot_tables = None
        if params["snapshot"] or params["compare_to"] is not None:
            with self.pool.cursor as cur:
                snapshot_tables = snapshot.user_tables(cur)
                projected = self.projected_columns(cur, snapshot_tables)
            if params["snapshot_tables"] is not None:
                wanted = set(params["snapshot_tables"])
                snapshot_tables = [t for t in snapshot_tables if "%s.%s" % t in wanted]
            # md5 of every row's text: about three times the work of a plain scan per byte
            jobs += [("snapshot", figures_job(s, t, projected.get("%s.%s" % (s, t))), self.cost((s, t), factor=3))
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
        if params["compare_to"] is not None and params["changes"] is not None:
            rows, findings = datacheck.judge(params["compare_to"], figures, params["changes"], params["unknown"],
                                             params["allow_changes"], params["compare_ignore"])
            result["data_check"] = rows
            result["differences"] = findings
            self.failed.extend(findings)
        elif params["compare_to"] is not None:
            differences = snapshot.compare(params["compare_to"], figures, ignore=params["compare_ignore"])
            result["differences"] = differences
            for diff in differences:
                self.fail("data_changed", "data changed since the baseline: %s" % snapshot.describe([diff]), **diff)
        result["failed_checks"] = self.failed
        return result

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


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(
            schema=dict(type="str", default="public"),
            tables=dict(type="list", elements="str",
                        default=["users", "threat_models", "threat_model_access", "diagrams", "threats", "documents",
                                 "sources", "metadata"]),
            foreign_keys=dict(type="bool", default=True),
            logical_relations=dict(type="list", elements="dict"),
            value_rules=dict(type="list", elements="dict"),
            unique_rules=dict(type="list", elements="dict"),
            expected_constraints=dict(type="list", elements="dict", default=[]),
            expected_columns=dict(type="dict", default={}),
            require_tables=dict(type="bool", default=True),
            state_table=dict(type="str", default=""),
            distribution=dict(type="list", elements="dict"),
            snapshot=dict(type="bool", default=False),
            snapshot_tables=dict(type="list", elements="str"),
            compare_to=dict(type="dict"),
            compare_ignore=dict(type="list", elements="str",
                                default=["public.schema_migrations", "public.tmi_migration_history",
                                         "public.tmi_migration_lock"]),
            samples=dict(type="int", default=5),
            parallel=dict(type="int", default=2),
            workers_per_scan=dict(type="int", default=0),
            changes=dict(type="dict"),
            unknown=dict(type="list", elements="dict", default=[]),
            allow_changes=dict(type="list", elements="raw", default=[]),
        ),
        supports_check_mode=True,
    )
    workers = module.params["workers_per_scan"]
    pool = SnapshotPool(module, APPLICATION_NAME, module.params["parallel"], None if workers < 0 else workers)
    try:
        result = Checker(module, pool).run()
    except (psycopg2.Error, KeyError, ValueError) as error:
        module.fail_json(msg="Integrity check could not run: %s. Check the table and column names in the options."
                             % to_native(error).strip())
    finally:
        pool.close()
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
