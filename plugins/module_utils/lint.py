# -*- coding: utf-8 -*-
# Copyright: (c) 2026, tmi.migration maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Advice on each statement of the planned files, graded by the size of the table it acts on.

The rules are squawk's best-known ones and carry squawk's names (``constraint-missing-not-valid``,
``require-concurrent-index-creation``, ...), so a reader can look them up; a test runs squawk itself
over one file per statement kind and checks that, for the rules both have, both flag the same statements.
Hand-written all the same: squawk is a Rust command-line program, not a library the modules can call,
and neither it nor any other linter knows the database being migrated. Here every finding is graded by
the size of its table, read from the catalog before anything runs (``read_sizes``: estimated rows from
``pg_class.reltuples``, bytes from ``pg_total_relation_size``, partitions summed):

* small  - under SMALL_ROWS rows and under SMALL_BYTES:       ``info`` (the lock is held for milliseconds);
* large  - LARGE_ROWS rows or more, or LARGE_BYTES or more:   ``error``;
* medium - anything between, or a table whose size is unknown: ``warning``.

The rules that break the application version still running (renames, drops, a required column) are not
about time under a lock, so they are ``warning`` whatever the size (``info`` in a down file, which undoes
its own up file). Findings never stop a run by themselves: they are advice, and the rehearsal measures.

Silent for what pg_migrate already neutralises: no rule asks for ``lock_timeout`` (pg_migrate sets it on
every migration, and retries); no ``require-concurrent-index-creation`` for an up file made only of CREATE
INDEX statements when ``online_index_builds`` is on (pg_migrate builds them CONCURRENTLY); and a table
created earlier in the plan is empty and unknown to the running application, so nothing is said about it.

Pure functions but ``read_sizes``, which reads through the caller's ``execute`` (as ``hazards.read_catalog``
does). Statements inside DO blocks are not linted (squawk does not read them either).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.tmi.migration.plugins.module_utils import migrations

try:
    import pglast
    from pglast import ast as pg_ast
    from pglast import enums as pg_enums
    from pglast.visitors import Visitor
except ImportError:  # migrations.PGLAST_IMPORT_ERROR is what the modules report
    pglast = None
    Visitor = object

SMALL_ROWS = 10000
SMALL_BYTES = 10 * 1024 * 1024
LARGE_ROWS = 1000000
LARGE_BYTES = 1024 * 1024 * 1024
SEVERITIES = ("info", "warning", "error")
_BY_GRADE = {"small": "info", "medium": "warning", "large": "error", None: "warning"}

# Rules whose harm is time under a lock or a rewrite: graded by the table's size.
GRADED = frozenset([
    "constraint-missing-not-valid", "adding-foreign-key-constraint", "disallowed-unique-constraint",
    "adding-serial-primary-key-field", "changing-column-type", "adding-not-nullable-field",
    "adding-field-with-default", "require-concurrent-index-creation", "require-concurrent-index-deletion",
    "require-concurrent-reindex"])
# Rules whose harm is to the application version still running: the same whatever the size.
COMPATIBILITY = frozenset(["adding-required-field", "renaming-column", "renaming-table", "ban-drop-column",
                           "ban-drop-table"])
RULES = GRADED | COMPATIBILITY

# PostgreSQL's (and the common extensions') volatile functions a default may call: such a default is computed
# for every row, so adding the column rewrites the table. A stable or immutable default (now(), a constant,
# lower('x')) is computed once and stored in the catalog since PostgreSQL 11: no rewrite.
VOLATILE_FUNCTIONS = frozenset([
    "random", "random_normal", "gen_random_uuid", "uuidv4", "uuidv7", "clock_timestamp", "timeofday", "nextval",
    "currval", "lastval", "setval", "setseed", "set_config", "array_shuffle", "array_sample", "txid_status",
    "uuid_generate_v1", "uuid_generate_v1mc", "uuid_generate_v4", "gen_random_bytes", "gen_salt"])
_SERIAL_TYPES = frozenset(["serial", "serial2", "serial4", "serial8", "smallserial", "bigserial"])

# The sizes of the tables the plan names (materialized views too), partitioned tables as the sum of their
# partitions. reltuples is -1 for a table never vacuumed nor analysed: its rows are unknown (None).
SIZES_SQL = (
    "SELECT n.nspname || '.' || c.relname, c.relkind::text, "
    "CASE WHEN c.relkind = 'p' THEN (SELECT sum(greatest(l.reltuples, 0))::bigint FROM pg_partition_tree(c.oid) t "
    "JOIN pg_class l ON l.oid = t.relid WHERE t.isleaf) WHEN c.reltuples < 0 THEN NULL "
    "ELSE c.reltuples::bigint END, "
    "CASE WHEN c.relkind = 'p' THEN (SELECT coalesce(sum(pg_total_relation_size(t.relid)), 0)::bigint "
    "FROM pg_partition_tree(c.oid) t) ELSE pg_total_relation_size(c.oid) END "
    "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.relkind IN ('r', 'p', 'm') AND n.nspname || '.' || c.relname = ANY(%s)")


def read_sizes(execute, tables):
    """{qualified table: {"kind", "rows" (estimate, or None), "bytes"}} of those of ``tables`` that exist."""
    tables = sorted(set(tables))
    if not tables:
        return {}
    return dict((row[0], dict(kind=row[1], rows=None if row[2] is None else int(row[2]), bytes=int(row[3] or 0)))
                for row in execute(SIZES_SQL, (tables,)))


def grade(size):
    """'small', 'medium' or 'large' for a size from read_sizes; None when the size is unknown."""
    if not size:
        return None
    rows, size_bytes = size.get("rows"), size.get("bytes") or 0
    if (rows is not None and rows >= LARGE_ROWS) or size_bytes >= LARGE_BYTES:
        return "large"
    if (rows is None or rows < SMALL_ROWS) and size_bytes < SMALL_BYTES:
        return "small"
    return "medium"


def describe_size(size):
    if not size:
        return "size unknown"
    rows = "rows unknown (never analysed)" if size.get("rows") is None else "about {:,} rows".format(size["rows"])
    return "%s, %s" % (rows, human_bytes(size.get("bytes") or 0))


def human_bytes(count):
    for unit in ("bytes", "kB", "MB", "GB"):
        if count < 1024 or unit == "GB":
            return ("%d %s" if unit == "bytes" else "%.1f %s") % (count, unit)
        count /= 1024.0
    return "%.1f TB" % count  # pragma: no cover (the loop returns)


def _qualify(node, schema):
    return "%s.%s" % (node.schemaname or schema, node.relname)


class _Calls(Visitor):
    def __init__(self):
        self.names = []

    def visit_FuncCall(self, ancestors, node):
        parts = [p.sval for p in node.funcname]
        self.names.append(((parts[-2] if len(parts) > 1 else None), parts[-1]))


def volatile_call(expression, user_functions=()):
    """The name of a volatile function the expression calls (or one whose volatility is unknown: a function of
    the database's own, which CREATE FUNCTION makes VOLATILE unless it says otherwise), or None."""
    if expression is None:
        return None
    calls = _Calls()
    calls(expression)
    for schema, name in calls.names:
        if name in VOLATILE_FUNCTIONS:
            return name + "()"
        if (schema is not None and schema != "pg_catalog") or (schema is None and name in user_functions):
            return "%s%s()" % (schema + "." if schema else "", name)
    return None


class _Finding(object):
    """One rule's finding before grading: the table, the other tables whose size counts, the message."""

    def __init__(self, rule, table, message, others=()):
        self.rule, self.table, self.message, self.others = rule, table, message, list(others)


def _column_findings(table, column, schema, user_functions):
    found = []
    constraints = list(column.constraints or ())
    kinds = [pg_enums.ConstrType(c.contype).name for c in constraints]
    default = next((c.raw_expr for c in constraints if c.contype == pg_enums.ConstrType.CONSTR_DEFAULT), None)
    serial = column.typeName is not None and column.typeName.names[-1].sval in _SERIAL_TYPES
    stored = any(c.contype == pg_enums.ConstrType.CONSTR_GENERATED and c.generated_kind == "s" for c in constraints)
    identity = "CONSTR_IDENTITY" in kinds
    volatile = volatile_call(default, user_functions)
    what = ("a volatile default (%s)" % volatile if volatile else "a serial type (nextval() for every row)" if serial
            else "an identity (a sequence value for every row)" if identity
            else "a stored generated value" if stored else None)
    if what:
        found.append(_Finding("adding-field-with-default", table, (
            "adds column %s with %s, so PostgreSQL rewrites all of %s under ACCESS EXCLUSIVE, blocking reads and "
            "writes until the rewrite ends (a constant or stable default is stored once since PostgreSQL 11 and "
            "rewrites nothing). Safer: add the column without it (or with a constant default), set the default "
            "in another statement (it applies to new rows only), and fill the existing rows in batches."
            % (column.colname, what, table))))
    if ("CONSTR_NOTNULL" in kinds or column.is_not_null) and default is None and not (
            serial or identity or "CONSTR_GENERATED" in kinds):
        found.append(_Finding("adding-required-field", table, (
            "adds column %s NOT NULL without a default: PostgreSQL refuses it on a table with rows, and on an empty "
            "one the running application's INSERTs, which do not name the column, fail. Safer: add it with a "
            "default, or nullable, fill it, then SET NOT NULL the safe way." % column.colname)))
    for constraint in constraints:
        found.extend(_constraint_findings(table, constraint, column.colname, schema))
    return found


def _constraint_findings(table, constraint, column, schema):
    """Findings of a constraint added to an existing table (``column`` when it comes with ADD COLUMN)."""
    kind = pg_enums.ConstrType(constraint.contype).name
    name = constraint.conname or ("on column %s" % column if column else "(unnamed)")
    if kind == "CONSTR_FOREIGN" and not constraint.skip_validation:
        ref = _qualify(constraint.pktable, schema)
        return [_Finding("adding-foreign-key-constraint", table, (
            "adds foreign key %s, which scans %s to check every row while holding SHARE ROW EXCLUSIVE on %s and "
            "%s: writes to both wait for the scan. Safer: add it NOT VALID (no scan, a brief lock), then "
            "ALTER TABLE ... VALIDATE CONSTRAINT in a later file (SHARE UPDATE EXCLUSIVE: writes go on)."
            % (name, table, table, ref)), others=[ref])]
    if kind in ("CONSTR_CHECK", "CONSTR_NOTNULL") and not constraint.skip_validation and column is None:
        return [_Finding("constraint-missing-not-valid", table, (
            "adds %s constraint %s, which scans all of %s under ACCESS EXCLUSIVE: reads and writes wait for the "
            "scan. Safer: add it NOT VALID (no scan, a brief lock), then ALTER TABLE ... VALIDATE CONSTRAINT in "
            "a later file (SHARE UPDATE EXCLUSIVE: reads and writes go on)."
            % ("check" if kind == "CONSTR_CHECK" else "not-null", name, table)))]
    if kind == "CONSTR_UNIQUE" and not constraint.indexname:
        return [_Finding("disallowed-unique-constraint", table, (
            "adds unique constraint %s, which builds its index under ACCESS EXCLUSIVE: reads and writes of %s wait "
            "for the whole build. Safer: CREATE UNIQUE INDEX CONCURRENTLY in a file of its own, then ALTER TABLE "
            "... ADD CONSTRAINT ... UNIQUE USING INDEX (a brief lock)." % (name, table)))]
    if kind == "CONSTR_PRIMARY" and not constraint.indexname:
        return [_Finding("adding-serial-primary-key-field", table, (
            "adds primary key %s, which builds its index (and checks NOT NULL) under ACCESS EXCLUSIVE: reads and "
            "writes of %s wait for the whole build. Safer: CREATE UNIQUE INDEX CONCURRENTLY in a file of its own, "
            "then ALTER TABLE ... ADD CONSTRAINT ... PRIMARY KEY USING INDEX." % (name, table)))]
    return []


def _alter_table(stmt, schema, user_functions, not_valid, in_transaction):
    if pg_enums.ObjectType(stmt.objtype).name != "OBJECT_TABLE" or stmt.relation is None:
        return []
    table = _qualify(stmt.relation, schema)
    found = []
    for cmd in stmt.cmds or ():
        subtype = pg_enums.AlterTableType(cmd.subtype).name
        if subtype == "AT_AddColumn" and isinstance(cmd.def_, pg_ast.ColumnDef):
            found.extend(_column_findings(table, cmd.def_, schema, user_functions))
        elif subtype == "AT_AddConstraint" and isinstance(cmd.def_, pg_ast.Constraint):
            found.extend(_constraint_findings(table, cmd.def_, None, schema))
            if cmd.def_.skip_validation and cmd.def_.conname:
                not_valid.add((table, cmd.def_.conname))
        elif subtype == "AT_ValidateConstraint" and in_transaction and (table, cmd.name) in not_valid:
            found.append(_Finding("constraint-missing-not-valid", table, (
                "validates constraint %s in the same transaction that added it NOT VALID, so the lock the ADD took "
                "is held through the validating scan of %s and NOT VALID gains nothing. Safer: VALIDATE CONSTRAINT "
                "in a later file." % (cmd.name, table))))
        elif subtype == "AT_AlterColumnType":
            found.append(_Finding("changing-column-type", table, (
                "changes the type of column %s: unless the new type is binary-coercible (varchar(n) to text or a "
                "longer varchar) PostgreSQL rewrites %s and rebuilds its indexes under ACCESS EXCLUSIVE, and the "
                "running application may still read and write the old type. Safer: add a column of the new type, "
                "fill it in batches, switch the application, then drop the old column." % (cmd.name, table))))
        elif subtype == "AT_SetNotNull":
            found.append(_Finding("adding-not-nullable-field", table, (
                "sets column %s NOT NULL, which scans all of %s under ACCESS EXCLUSIVE. Safer: ADD CONSTRAINT ... "
                "CHECK (%s IS NOT NULL) NOT VALID, VALIDATE CONSTRAINT in a later file, then SET NOT NULL, which "
                "uses the valid constraint instead of scanning (PostgreSQL 12+), and drop the check."
                % (cmd.name, table, cmd.name))))
        elif subtype == "AT_DropColumn":
            found.append(_Finding("ban-drop-column", table, (
                "drops column %s: the running application version's queries that name it (an ORM's SELECT of every "
                "column included) fail. Safer: drop it only after every running version has stopped using it."
                % cmd.name)))
    return found


def check_statement(stmt, schema="public", user_functions=(), not_valid=None, in_transaction=True, tables=()):
    """The findings of one parsed statement (``raw.stmt`` of pglast.parse_sql), not graded yet.

    ``not_valid``: the (table, constraint) added NOT VALID earlier in the same file (updated); ``in_transaction``:
    whether the file runs as one transaction; ``tables``: the tables the analysis says it locks (an index's
    table for DROP INDEX and REINDEX INDEX).
    """
    kind = type(stmt).__name__
    not_valid = set() if not_valid is None else not_valid
    table_of_index = sorted(tables)[0] if tables else None
    if kind == "AlterTableStmt":
        return _alter_table(stmt, schema, user_functions, not_valid, in_transaction)
    if kind == "IndexStmt" and not stmt.concurrent:
        table = _qualify(stmt.relation, schema)
        return [_Finding("require-concurrent-index-creation", table, (
            "builds index %s holding SHARE on %s for the whole build: INSERT, UPDATE and DELETE wait. Safer: CREATE "
            "INDEX CONCURRENTLY in a file of its own, or online_index_builds: true for files made only of CREATE "
            "INDEX statements." % (stmt.idxname or "(unnamed)", table)))]
    if kind == "DropStmt":
        removes = pg_enums.ObjectType(stmt.removeType).name
        if removes == "OBJECT_INDEX" and not stmt.concurrent:
            names = ", ".join(".".join(p.sval for p in obj) for obj in stmt.objects or ())
            return [_Finding("require-concurrent-index-deletion", table_of_index, (
                "drops index %s holding ACCESS EXCLUSIVE on %s: reads and writes wait, and so does everything "
                "queued behind it while it waits for running queries. Safer: DROP INDEX CONCURRENTLY in a file of "
                "its own." % (names, table_of_index or "its table")))]
        if removes == "OBJECT_TABLE":
            return [_Finding("ban-drop-table", "%s.%s" % ((p[-2] if len(p) > 1 else schema), p[-1]), (
                "drops table %s: the running application version's queries of it fail, and its rows are gone (only "
                "the backup has them). Safer: drop it only after every running version has stopped using it."
                % ".".join(p))) for p in ([s.sval for s in obj] for obj in stmt.objects or ())]
    if kind == "RenameStmt" and stmt.relation is not None:
        renames = pg_enums.ObjectType(stmt.renameType).name
        table = _qualify(stmt.relation, schema)
        if renames == "OBJECT_COLUMN" and pg_enums.ObjectType(stmt.relationType).name == "OBJECT_TABLE":
            return [_Finding("renaming-column", table, (
                "renames column %s to %s: the running application version still uses the old name and fails until "
                "it is replaced. Safer: add the new column, write both, move reads, then drop the old one."
                % (stmt.subname, stmt.newname)))]
        if renames == "OBJECT_TABLE":
            return [_Finding("renaming-table", table, (
                "renames table %s to %s: the running application version still uses the old name and fails until "
                "it is replaced. Safer: create the new name as a view of the table first, or rename only once no "
                "running version uses the old name." % (table, stmt.newname)))]
    if kind == "ReindexStmt" and not any(getattr(p, "defname", "") == "concurrently" for p in stmt.params or ()):
        which = pg_enums.ReindexObjectType(stmt.kind).name
        if which in ("REINDEX_OBJECT_TABLE", "REINDEX_OBJECT_INDEX"):
            table = _qualify(stmt.relation, schema) if which == "REINDEX_OBJECT_TABLE" else table_of_index
            return [_Finding("require-concurrent-reindex", table, (
                "rebuilds %s holding SHARE on %s: INSERT, UPDATE and DELETE wait for the whole rebuild. Safer: "
                "REINDEX ... CONCURRENTLY in a file of its own." % (stmt.relation.relname, table or "its table")))]
    return []


def lint_plan(files, analysed, sizes=None, online_index_builds=False, user_functions=(), schema="public"):
    """The findings of the planned files, in order: [{version, direction, title, line, rule, table, severity,
    message}].

    ``files``: [(version, title, direction, sql)] as analysis.analyse_plan takes them; ``analysed``: its result's
    ``files`` (for each statement's line, the tables it locks and creates); ``sizes``: read_sizes' answer.
    """
    sizes = sizes or {}
    defined = set(user_functions)
    created = set()  # tables created earlier in the plan: empty, and no running application version uses them
    origin = {}  # a table renamed by the plan -> the name its size is read under
    findings = []
    for (version, title, direction, sql), migration in zip(files, analysed):
        online = online_index_builds and direction == "up" and migrations.is_index_only(sql)
        in_transaction = not migrations.needs_autocommit(sql)
        not_valid = set()
        for raw, statement in zip(pglast.parse_sql(sql), migration["statements"]):
            defined.update(statement["creates"].get("functions", []))
            raw_findings = [] if online else check_statement(raw.stmt, schema, defined, not_valid, in_transaction,
                                                             statement["locks"])
            for found in raw_findings:
                item = _graded(found, created, origin, sizes, direction)
                if item:
                    item.update(version=version, direction=direction, title=title, line=statement["line"])
                    findings.append(item)
            _follow(statement, created, origin)
    return [dict((k, f[k]) for k in ("version", "direction", "title", "line", "rule", "table", "severity",
                                     "message")) for f in findings]


def _graded(found, created, origin, sizes, direction):
    if found.table in created:
        return None
    size = sizes.get(origin.get(found.table, found.table)) if found.table else None
    if found.rule in COMPATIBILITY:
        rows = (size or {}).get("rows")
        if found.rule == "adding-required-field" and rows:
            severity = "error"
        else:
            severity = "info" if direction == "down" else "warning"
        where = found.table
    else:
        grades = [grade(size) if found.table else None]
        grades += [grade(sizes.get(origin.get(t, t))) for t in found.others if t not in created]
        known = [g for g in grades if g]
        worst = max(known, key=("small", "medium", "large").index) if known else None
        severity = _BY_GRADE[worst]
        where = found.table
    return dict(rule=found.rule, table=where, severity=severity,
                message="%s (%s): %s" % (where or "its table", describe_size(size), found.message))


def _follow(statement, created, origin):
    """Keep the tables created earlier in the plan, and the plan's renames, up to date after a statement."""
    for table, entry in statement["tables"].items():
        if entry.get("renamed_to"):
            if table in created:
                created.add(entry["renamed_to"])
            origin[entry["renamed_to"]] = origin.get(table, table)
        if "drop" in entry["does"] or "rename" in entry["does"]:
            created.discard(table)
        elif "create" in entry["does"] and statement["kind"] == "CreateStmt":
            created.add(table)


def summary_lines(findings):
    """One line per finding: '000017 up enhance_metadata line 4: WARNING changing-column-type public.m (...): ...'."""
    return ["%06d %s %s line %s: %s %s %s" % (
        f["version"], f["direction"], f["title"], f["line"], f["severity"].upper(), f["rule"], f["message"])
        for f in findings]
