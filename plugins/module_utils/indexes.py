# -*- coding: utf-8 -*-
# Copyright: (c) 2026, tmi.migration maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Read-only index checks of one schema: the engine of the pg_index_check module.

Written here because community.postgresql's postgresql_idx manages one index and postgresql_info
checks neither validity, duplicates nor plans: expected indexes (keys, INCLUDE, predicate,
uniqueness, read back from ``pg_get_indexdef``), INVALID leftovers, duplicates, EXPLAIN of
queries and whether they use an expected index, usage and sizes. Nothing here knows an
application's indexes or queries: they come in ``options`` (the validate role passes those the
migration files create and its profile's queries).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import re

from ansible_collections.tmi.migration.plugins.module_utils.datacheck import finding

try:
    from psycopg2 import sql
except ImportError:  # the module reports it when it connects
    sql = None

# The options of IndexChecker, with the module's defaults: nothing expected, no query to explain.
DEFAULTS = dict(schema="public", expected=[], queries=[], min_rows=1000, explain_analyze=False, check_duplicates=True,
                introduced=[])

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
    """``run()`` checks the indexes of ``options["schema"]`` on ``conn`` (a read-only transaction), as
    ``options`` (see DEFAULTS; the module's options) ask. ``connect(autocommit=...)`` opens the writable
    session ``analyze()`` needs. Findings go into the result's ``failed_checks``."""

    def __init__(self, conn, options, connect=None):
        self.params = dict(DEFAULTS, **options)
        self.conn = conn
        self.connect = connect
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

        for spec in params["expected"]:
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
        return self.params["queries"]

    def analyze(self):
        """Refresh planner statistics of the queried tables; needs its own writable session."""
        tables = sorted(set(q["table"] for q in self.queries() if q.get("table")))
        conn = self.connect(autocommit=True)
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


def check(connect, options, analyze=False):
    """The whole check: ``ANALYZE`` of the queried tables first when asked (a writable session), then
    ``IndexChecker.run`` in one REPEATABLE READ, READ ONLY transaction. ``connect(autocommit=False)``
    opens a connection (``postgres.connector`` of a module)."""
    checker = IndexChecker(None, options, connect)
    if analyze:
        checker.analyze()  # before the read-only transaction starts
    conn = connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        checker.conn = conn
        return checker.run()
    finally:
        conn.rollback()
        conn.close()
