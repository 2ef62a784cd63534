#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, tmi.migration maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: pg_index_check
short_description: Read-only checks that expected indexes exist, are valid and are used by the planner
version_added: 0.1.0
description:
  - Expected indexes (name and table, with key columns, C(INCLUDE) columns, predicate and uniqueness to match) are
    present, valid and ready (C(indisvalid), C(indisready)); every INVALID index of the schema (the leftover of a
    failed C(CREATE INDEX CONCURRENTLY)); duplicate indexes (same table, keys, operator classes and predicate) - the
    runbook's "conflicting indexes" troubleshooting.
  - For a list of queries with sample parameters (default the runbook's three EXPLAIN ANALYZE queries), the plan and
    whether the planner uses one of the expected indexes. Tables smaller than O(min_rows) are skipped, because the
    planner rightly prefers a sequential scan there.
  - Returns index usage (C(pg_stat_user_indexes)) and table sizes (C(pg_total_relation_size)) as data - the runbook's
    monitoring queries.
  - Every finding goes into RV(failed_checks); the module never fails for a finding and changes nothing. With
    O(analyze=true) it refreshes planner statistics (C(ANALYZE)) first, as the runbook's troubleshooting does; that
    touches no data or schema and is not reported as a change.
  - Written for this collection because M(community.postgresql.postgresql_idx) manages one index and
    M(community.postgresql.postgresql_info) does not check validity, duplicates or plans.
options:
  schema:
    description: Schema of the tables and indexes.
    type: str
    default: public
    version_added: 0.1.0
  expected:
    description:
      - Indexes that must exist. Each has C(name) and C(table), and optionally C(columns) (key columns as written in
        C(CREATE INDEX), for example C(created_at DESC)), C(include), C(where) (compared without casts and
        parentheses) and C(unique).
      - Default - the indexes TMI's migrations 000016 and 000017 create.
    type: list
    elements: dict
    version_added: 0.1.0
  queries:
    description:
      - Queries whose plan to check. Each has C(name), C(sql) (with C(%s) placeholders), C(params) or C(params_sql)
        (a query returning one row of sample parameters), C(table) (whose size decides whether the check applies; a
        query on a table that does not exist is skipped) and
        C(expect_index) (a name or a list of acceptable names).
      - Default - the runbook's three performance queries.
    type: list
    elements: dict
    version_added: 0.1.0
  min_rows:
    description: Plans are judged only on tables with at least this many rows (per the planner's statistics).
    type: int
    default: 1000
    version_added: 0.1.0
  analyze:
    description: Run C(ANALYZE) on the queried tables first (not in check mode).
    type: bool
    default: false
    version_added: 0.1.0
  explain_analyze:
    description: Use C(EXPLAIN ANALYZE) (runs the queries) instead of C(EXPLAIN).
    type: bool
    default: false
    version_added: 0.1.0
  introduced:
    description:
      - Names of the indexes the applied files create; a duplicate among them is marked C(introduced) (this run's
        files made it), so an operator can tell new findings from old ones.
    type: list
    elements: str
    default: []
    version_added: 0.1.0
  check_duplicates:
    description: Report duplicate indexes.
    type: bool
    default: true
    version_added: 0.1.0
attributes:
  check_mode:
    support: full
    description: The module only reads; in check mode O(analyze) is skipped.
extends_documentation_fragment:
  - community.postgresql.postgres
  - tmi.migration.postgres
author:
  - tmi.migration maintainers (@tmi-migration)
"""

EXAMPLES = r"""
- name: Check the granular API indexes and the planner's use of them
  tmi.migration.pg_index_check:
    login_db: tmi
    analyze: true
  register: indexes
"""

RETURN = r"""
indexes:
  description: Every index of the schema with its table, definition, validity and readiness.
  returned: always
  type: list
  elements: dict
expected:
  description: Each expected index with C(present), C(valid), C(ready), C(matches) and the actual C(definition).
  returned: always
  type: list
  elements: dict
invalid:
  description: Indexes that are not valid or not ready.
  returned: always
  type: list
  elements: dict
duplicates:
  description: Groups of indexes with the same table, keys and predicate.
  returned: always
  type: list
  elements: list
plans:
  description:
    - Per query, C(verdict) (V(uses_expected_index), V(other_plan) or V(skipped)), the indexes used and the plan.
  returned: always
  type: list
  elements: dict
usage:
  description: Per index, C(idx_scan), C(idx_tup_read), C(idx_tup_fetch) from C(pg_stat_user_indexes).
  returned: always
  type: list
  elements: dict
table_sizes:
  description: Per table, total size in bytes including indexes and TOAST.
  returned: always
  type: dict
failed_checks:
  description: Every finding, each with C(check) and C(message).
  returned: always
  type: list
  elements: dict
"""

import json
import re

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_native
from ansible_collections.tmi.migration.plugins.module_utils.datacheck import finding
from ansible_collections.tmi.migration.plugins.module_utils.postgres import argument_spec, connect

try:
    import psycopg2
    from psycopg2 import sql
except ImportError:  # connect() reports it
    psycopg2 = None

APPLICATION_NAME = "tmi.migration.pg_index_check"


def _tm(name, table, columns, include=None, where=None, unique=False):
    spec = dict(name=name, table=table, columns=columns, unique=unique)
    if include:
        spec["include"] = include
    if where:
        spec["where"] = where
    return spec


TMI_EXPECTED = [
    _tm("idx_threats_threat_model_id_created_at", "threats", ["threat_model_id", "created_at DESC"]),
    _tm("idx_documents_threat_model_id_created_at", "documents", ["threat_model_id", "created_at DESC"]),
    _tm("idx_sources_threat_model_id_created_at", "sources", ["threat_model_id", "created_at DESC"]),
    _tm("idx_diagrams_threat_model_id_created_at", "diagrams", ["threat_model_id", "created_at DESC"]),
    _tm("idx_threats_threat_model_id_covering", "threats", ["threat_model_id"],
        include=["name", "severity", "status", "priority", "mitigated"]),
    _tm("idx_documents_threat_model_id_covering", "documents", ["threat_model_id"], include=["name", "url"]),
    _tm("idx_sources_threat_model_id_covering", "sources", ["threat_model_id"], include=["name", "url", "type"]),
    _tm("idx_threat_model_access_performance", "threat_model_access", ["threat_model_id", "role", "user_email"]),
] + [_tm("idx_metadata_%s_entity" % kind, "metadata", ["entity_id", "key"], where="entity_type = '%s'" % kind)
     for kind in ("threat_model", "threat", "diagram", "document", "source", "cell")] + [
    _tm("idx_metadata_key", "metadata", ["key"]),
    _tm("metadata_entity_key_unique", "metadata", ["entity_type", "entity_id", "key"], unique=True),
]

TMI_QUERIES = [
    dict(name="threats of a threat model, newest first", table="threats",
         sql="SELECT * FROM threats WHERE threat_model_id = %s ORDER BY created_at DESC LIMIT 10",
         params_sql="SELECT threat_model_id FROM threats LIMIT 1",
         expect_index=["idx_threats_threat_model_id_created_at", "idx_threats_threat_model_id_covering"]),
    dict(name="metadata of a threat", table="metadata",
         sql="SELECT * FROM metadata WHERE entity_type = 'threat' AND entity_id = %s",
         params_sql="SELECT entity_id FROM metadata WHERE entity_type = 'threat' LIMIT 1",
         expect_index=["idx_metadata_threat_entity", "metadata_entity_key_unique"]),
    dict(name="threat models a user can access", table="threat_model_access",
         sql="SELECT tm.*, tma.role FROM threat_models tm JOIN threat_model_access tma "
             "ON tm.id = tma.threat_model_id WHERE tma.user_email = %s",
         params_sql="SELECT user_email FROM threat_model_access LIMIT 1",
         expect_index=["idx_threat_model_access_user_email", "threat_model_access_threat_model_id_user_email_key",
                       "idx_threat_model_access_performance"]),
]

INDEXES_SQL = """
SELECT c.relname, t.relname, pg_get_indexdef(i.indexrelid), i.indisvalid, i.indisready, i.indisunique,
       i.indrelid, i.indkey::text, i.indclass::text, coalesce(pg_get_expr(i.indexprs, i.indrelid), ''),
       coalesce(pg_get_expr(i.indpred, i.indrelid), ''), i.indnkeyatts
FROM pg_index i
JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_class t ON t.oid = i.indrelid
JOIN pg_namespace n ON n.oid = t.relnamespace
WHERE n.nspname = %s ORDER BY t.relname, c.relname
"""


def _parenthesised(text, start):
    """The text inside the parentheses opening at text[start], and the index after the closing one."""
    depth, quoted = 0, False
    for index in range(start, len(text)):
        char = text[index]
        if char == "'":
            quoted = not quoted
        elif not quoted and char == "(":
            depth += 1
        elif not quoted and char == ")":
            depth -= 1
            if depth == 0:
                return text[start + 1:index], index + 1
    return text[start + 1:], len(text)


def _split(items):
    parts, depth, current = [], 0, ""
    for char in items:
        if char == "," and depth == 0:
            parts.append(current.strip())
            current = ""
            continue
        depth += char == "("
        depth -= char == ")"
        current += char
    if current.strip():
        parts.append(current.strip())
    return parts


def parse_indexdef(definition):
    """Key columns, INCLUDE columns and predicate of a pg_get_indexdef() text."""
    using = re.search(r" USING \w+ \(", definition)
    if not using:
        return dict(columns=[], include=[], where="")
    keys, rest_at = _parenthesised(definition, using.end() - 1)
    rest = definition[rest_at:]
    include = []
    match = re.match(r"\s*INCLUDE \(", rest)
    if match:
        inner, after = _parenthesised(rest, match.end() - 1)
        include, rest = _split(inner), rest[after:]
    where = rest.split(" WHERE ", 1)[1] if " WHERE " in rest else ""
    return dict(columns=_split(keys), include=include, where=where)


def normalise_expression(text):
    """Compare predicates and columns without casts, parentheses, quotes around identifiers, case or spaces."""
    text = re.sub(r"::(?:character varying|timestamp with(?:out)? time zone|double precision|[a-z_]+)(?:\[\])?",
                  "", text or "", flags=re.I)
    text = text.replace("(", "").replace(")", "").replace('"', "")
    return re.sub(r"\s+", "", text).lower()


def index_names_in_plan(node):
    names = set()
    if isinstance(node, dict):
        if "Index Name" in node:
            names.add(node["Index Name"])
        for value in node.values():
            names |= index_names_in_plan(value)
    elif isinstance(node, list):
        for value in node:
            names |= index_names_in_plan(value)
    return names


class IndexChecker(object):
    def __init__(self, module, conn):
        self.module = module
        self.params = module.params
        self.conn = conn
        self.failed = []

    def fail(self, check, message, **details):
        self.failed.append(finding(check, message, **details))

    def run(self):
        params = self.params
        with self.conn.cursor() as cur:
            cur.execute(INDEXES_SQL, (params["schema"],))
            rows = cur.fetchall()
        indexes = [dict(name=r[0], table=r[1], definition=r[2], valid=r[3], ready=r[4], unique=r[5]) for r in rows]
        by_name = dict((i["name"], i) for i in indexes)
        result = dict(indexes=indexes, expected=[], invalid=[], duplicates=[], plans=[])

        for index in indexes:
            if not (index["valid"] and index["ready"]):
                result["invalid"].append(index)
                self.fail("invalid_index", "index %s on %s is %s: a failed or unfinished CREATE INDEX CONCURRENTLY "
                                           "left it; drop it (DROP INDEX CONCURRENTLY) and build it again"
                          % (index["name"], index["table"], "INVALID" if not index["valid"] else "not ready"),
                          name=index["name"], table=index["table"])

        for spec in (TMI_EXPECTED if params["expected"] is None else params["expected"]):
            result["expected"].append(self.check_expected(spec, by_name.get(spec["name"])))

        if params["check_duplicates"]:
            groups = {}
            for r in rows:
                if r[3] and r[4]:  # invalid indexes are reported above
                    groups.setdefault((r[6], r[7], r[8], r[9], r[10], r[11], r[5]), []).append(r[0])
            for names in groups.values():
                if len(names) > 1:
                    result["duplicates"].append(names)
                    introduced = sorted(set(names) & set(params["introduced"]))
                    self.fail("duplicate_index", "indexes %s on %s are duplicates (same keys and predicate): every "
                                                 "write maintains both; drop one%s" % (
                                                     " and ".join(names), by_name[names[0]]["table"],
                                                     " (introduced by this run: %s)" % ", ".join(introduced)
                                                     if introduced else ""),
                              names=names, introduced=bool(introduced))

        for query in self.queries():
            result["plans"].append(self.check_plan(query))
        result.update(self.usage())
        result["failed_checks"] = self.failed
        return result

    def check_expected(self, spec, actual):
        table = spec["table"].split(".")[-1]  # the files' analysis names tables with their schema, O(schema)
        outcome = dict(name=spec["name"], table=table, present=actual is not None)
        if actual is None:
            self.fail("missing_index", "index %s on %s is missing" % (spec["name"], table), name=spec["name"])
            return outcome
        parsed = parse_indexdef(actual["definition"])
        mismatches = []
        if actual["table"] != table:
            mismatches.append("it is on table %s" % actual["table"])
        for key in ("columns", "include"):
            if key in spec and [normalise_expression(c) for c in spec[key]] != [normalise_expression(c)
                                                                                for c in parsed[key]]:
                mismatches.append("%s are (%s), expected (%s)" % (key, ", ".join(parsed[key]), ", ".join(spec[key])))
        if "where" in spec and normalise_expression(spec["where"]) != normalise_expression(parsed["where"]):
            mismatches.append("predicate is %r, expected %r" % (parsed["where"], spec["where"]))
        if "unique" in spec and bool(spec["unique"]) != actual["unique"]:
            mismatches.append("it is %sunique" % ("" if actual["unique"] else "not "))
        outcome.update(valid=actual["valid"], ready=actual["ready"], definition=actual["definition"],
                       matches=not mismatches)
        if mismatches:
            self.fail("index_definition", "index %s differs from what is expected: %s (definition: %s). A conflicting "
                                          "index of the same name may predate the migration"
                      % (spec["name"], "; ".join(mismatches), actual["definition"]), name=spec["name"])
        return outcome

    def queries(self):
        return TMI_QUERIES if self.params["queries"] is None else self.params["queries"]

    def analyze(self):
        """Refresh planner statistics of the queried tables; needs its own writable session."""
        tables = sorted(set(q["table"] for q in self.queries() if q.get("table")))
        conn = connect(self.module, APPLICATION_NAME, autocommit=True)
        try:
            with conn.cursor() as cur:
                for table in tables:
                    if not self.table_exists(cur, table):
                        continue  # its queries are skipped
                    statement = sql.SQL("ANALYZE {}.{}").format(sql.Identifier(self.params["schema"]),
                                                                sql.Identifier(table))
                    cur.execute(statement)
        finally:
            conn.close()

    def table_exists(self, cur, table):
        cur.execute("SELECT to_regclass(%s) IS NOT NULL",
                    (sql.SQL("{}.{}").format(sql.Identifier(self.params["schema"]), sql.Identifier(table))
                     .as_string(cur),))
        return cur.fetchone()[0]

    def check_plan(self, query):
        expected = query.get("expect_index") or []
        expected = [expected] if isinstance(expected, str) else list(expected)
        outcome = dict(name=query.get("name") or query["sql"], expected=expected, indexes_used=[])
        with self.conn.cursor() as cur:
            if query.get("table") and not self.table_exists(cur, query["table"]):
                outcome.update(verdict="skipped", reason="table %s does not exist" % query["table"])
                return outcome
            if query.get("table"):
                cur.execute("SELECT coalesce(max(c.reltuples), -1) FROM pg_class c JOIN pg_namespace n "
                            "ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s",
                            (self.params["schema"], query["table"]))
                rows = cur.fetchone()[0]
                if rows < self.params["min_rows"]:
                    outcome.update(verdict="skipped", reason="%s has about %d rows (< min_rows %d): the planner "
                                                             "rightly prefers a sequential scan"
                                   % (query["table"], max(rows, 0), self.params["min_rows"]))
                    return outcome
            args = query.get("params")
            if args is None and query.get("params_sql"):
                cur.execute(query["params_sql"])
                row = cur.fetchone()
                if row is None:
                    outcome.update(verdict="skipped", reason="params_sql returned no row")
                    return outcome
                args = list(row)
            options = "ANALYZE, FORMAT JSON" if self.params["explain_analyze"] else "FORMAT JSON"
            cur.execute("EXPLAIN (%s) %s" % (options, query["sql"]), args or None)
            plan = cur.fetchone()[0]
        plan = json.loads(plan) if isinstance(plan, str) else plan
        used = sorted(index_names_in_plan(plan))
        outcome.update(indexes_used=used, plan=plan)
        if expected and not set(used) & set(expected):
            outcome["verdict"] = "other_plan"
            self.fail("plan", "query '%s' does not use %s (it uses %s); check the index and the statistics (ANALYZE)"
                      % (outcome["name"], " or ".join(expected), ", ".join(used) or "no index"), name=outcome["name"])
        else:
            outcome["verdict"] = "uses_expected_index"
        return outcome

    def usage(self):
        with self.conn.cursor() as cur:
            cur.execute("SELECT relname, indexrelname, idx_scan, idx_tup_read, idx_tup_fetch FROM pg_stat_user_indexes "
                        "WHERE schemaname = %s ORDER BY idx_scan DESC, indexrelname", (self.params["schema"],))
            usage = [dict(table=r[0], index=r[1], idx_scan=r[2], idx_tup_read=r[3], idx_tup_fetch=r[4])
                     for r in cur.fetchall()]
            cur.execute("SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_class c JOIN pg_namespace n "
                        "ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relkind = 'r' ORDER BY 2 DESC",
                        (self.params["schema"],))
            sizes = dict((r[0], int(r[1])) for r in cur.fetchall())
        return dict(usage=usage, table_sizes=sizes)


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(
            schema=dict(type="str", default="public"),
            expected=dict(type="list", elements="dict"),
            queries=dict(type="list", elements="dict"),
            min_rows=dict(type="int", default=1000),
            analyze=dict(type="bool", default=False),
            explain_analyze=dict(type="bool", default=False),
            check_duplicates=dict(type="bool", default=True),
            introduced=dict(type="list", elements="str", default=[]),
        ),
        supports_check_mode=True,
    )
    conn = None
    try:
        checker = IndexChecker(module, None)
        if module.params["analyze"] and not module.check_mode:
            checker.analyze()  # before the read-only transaction starts
        conn = connect(module, APPLICATION_NAME)
        with conn.cursor() as cur:
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        checker.conn = conn
        result = checker.run()
    except (psycopg2.Error, KeyError) as error:
        module.fail_json(msg="Index check could not run: %s. Check the index, table and query options."
                             % to_native(error).strip())
    finally:
        if conn is not None:
            conn.rollback()
            conn.close()
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
