# -*- coding: utf-8 -*-
# Copyright: (c) 2026, tmi.migration maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What each statement of a migration file does to the data, read with PostgreSQL's own parser.

Pure functions, no database access (the catalog facts they need - foreign keys, user
functions - are passed in), so they are unit-tested over a table of statement kinds.

Written here because no library does it: pglast parses SQL, squawk and eugene lint or
trace locks, but none says which tables a statement may change and how. The collection
needs that to judge a migration by what its files say (a table no statement touches must
not change; a table an UPDATE writes may) instead of comparing the whole database.

What a statement does to a table is one of:

* ``none``      schema only, rows untouched (an index, a constraint, a trigger, a default);
* ``alter``     columns added, dropped, retyped or renamed: the rows stay, the other columns keep their values;
* ``write``     rows inserted or updated (INSERT, UPDATE, COPY FROM, ON DELETE SET NULL reached by a cascade);
* ``delete``    rows deleted (DELETE, TRUNCATE, MERGE, ON DELETE CASCADE reached by a cascade);
* ``drop``      the table dropped; ``create``: the table created; ``rename``: the table renamed.

A statement whose effect cannot be known statically (CALL, EXECUTE, a call of a function that
is not PostgreSQL's own, a DO block that builds SQL at run time) is ``unknown``: it could reach
any table. A DO block in PL/pgSQL without dynamic SQL is read statement by statement (pglast
parses PL/pgSQL too), so the common ``DO $$ BEGIN IF NOT EXISTS (...) THEN ALTER TABLE ...``
is understood.

Each statement also gets ``locks``: per table it names, the table-level lock PostgreSQL's
documentation says it takes (the names of ``locks.py``, the strongest per table), and
``locks_unknown`` when that cannot be known (an unknown effect, the table of an index nobody
knows, VACUUM or REINDEX of a whole schema). Hand-written too: squawk and eugene know such
rules, but both are Rust command-line programs that print advice, not libraries the modules can
call, and neither returns per statement which lock lands on which table in a form the plan, the
rehearsal's observations (``pg_locks``) and the lint (``lint.py``) can share. ``review`` adds the
tables' sizes and the lint findings, graded by those sizes, to a plan's analysis.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import re

from ansible_collections.tmi.migration.plugins.module_utils import lint, locks

try:
    import pglast
    from pglast import ast as pg_ast
    from pglast import enums as pg_enums
    from pglast.stream import RawStream
    from pglast.visitors import Visitor
except ImportError:  # migrations.PGLAST_IMPORT_ERROR is what the modules report
    pglast = None
    Visitor = object

KINDS = ("none", "alter", "write", "delete", "drop", "create", "rename")
# Statement kinds that change no table's rows (besides the objects they create or drop, which are read below).
_SCHEMA_ONLY = {
    "CommentStmt", "GrantStmt", "GrantRoleStmt", "CreateSeqStmt", "AlterSeqStmt", "CreateFunctionStmt",
    "AlterFunctionStmt", "CreateTrigStmt", "CreateEnumStmt", "AlterEnumStmt", "CreateDomainStmt",
    "AlterDomainStmt", "CompositeTypeStmt", "CreateRangeStmt", "DefineStmt", "ViewStmt", "CreateExtensionStmt",
    "AlterExtensionStmt", "CreateSchemaStmt", "VariableSetStmt", "VariableShowStmt", "TransactionStmt", "LockStmt",
    "CreatePolicyStmt", "AlterPolicyStmt", "RuleStmt", "AlterOwnerStmt", "AlterObjectSchemaStmt",
    "CreateStatsStmt", "AlterStatsStmt", "VacuumStmt", "ClusterStmt", "ReindexStmt", "CreatePublicationStmt",
    "AlterPublicationStmt", "AlterDefaultPrivilegesStmt", "CreateCastStmt", "CreateConversionStmt",
    "CreateOpClassStmt", "CreateOpFamilyStmt", "AlterOpFamilyStmt", "AlterTypeStmt", "AlterCollationStmt",
    "CreateEventTrigStmt", "AlterEventTrigStmt", "RefreshMatViewStmt", "NotifyStmt", "ListenStmt",
    "UnlistenStmt", "DeallocateStmt", "PrepareStmt", "CheckPointStmt", "DiscardStmt", "CreateRoleStmt",
    "AlterRoleStmt", "DropRoleStmt", "AlterTableSpaceOptionsStmt", "SecLabelStmt", "AlterDatabaseSetStmt",
}
_UNKNOWN = {"CallStmt": "a CALL of a procedure",
            "ExecuteStmt": "EXECUTE of a prepared statement"}
# ALTER TABLE subcommands that change columns, and what becomes of the column.
_COLUMN_CHANGES = {"AT_AddColumn": "added", "AT_DropColumn": "dropped", "AT_AlterColumnType": "changed",
                   "AT_SetExpression": "changed", "AT_DropExpression": "changed"}
# ALTER TABLE subcommands that rewrite the table without changing a value.
_REWRITES = {"AT_AlterColumnType", "AT_SetAccessMethod", "AT_SetLogged", "AT_SetUnLogged", "AT_SetTableSpace"}
# pg_constraint.confdeltype / confupdtype: what a referenced row's delete (or key update) does to the child.
_CASCADE_DOES = {"c": "delete", "n": "write", "d": "write"}
_ACTION_NAMES = {"c": "CASCADE", "n": "SET NULL", "d": "SET DEFAULT"}
# ReplicaIdentityStmt.identity_type (and pg_class.relreplident).
_REPLICA_IDENTITY = {"d": "default", "f": "full", "n": "nothing", "i": "index"}


def qualify(schema, name, default_schema):
    return "%s.%s" % (schema or default_schema, name)


def _rangevar(node, default_schema):
    return qualify(node.schemaname, node.relname, default_schema)


def _names(node):
    """A qualified name given as a list of String nodes, as (schema or None, name)."""
    parts = [p.sval for p in node]
    return (parts[-2] if len(parts) > 1 else None), parts[-1]


class _Walker(Visitor):
    """Every data-modifying statement and function call anywhere in a statement (CTEs, subqueries)."""

    def __init__(self):
        self.modifications = []
        self.functions = []

    def visit_InsertStmt(self, ancestors, node):
        self.modifications.append(("write", node.relation, "inserts rows"))

    def visit_UpdateStmt(self, ancestors, node):
        self.modifications.append(("write", node.relation, "updates rows"))

    def visit_DeleteStmt(self, ancestors, node):
        self.modifications.append(("delete", node.relation, "deletes rows"))

    def visit_MergeStmt(self, ancestors, node):
        self.modifications.append(("write", node.relation, "merges rows (may insert, update and delete)"))
        self.modifications.append(("delete", node.relation, "merges rows (may insert, update and delete)"))

    def visit_FuncCall(self, ancestors, node):
        self.functions.append(_names(node.funcname))


# Statements whose text may hold a password or a connection string: their text is never returned.
_SECRET_KINDS = {"CreateRoleStmt", "AlterRoleStmt", "CreateUserMappingStmt", "AlterUserMappingStmt",
                 "CreateSubscriptionStmt", "AlterSubscriptionStmt", "CreateForeignServerStmt",
                 "AlterForeignServerStmt", "AlterSystemStmt"}


class Statement(object):
    """What one statement does: per table the kinds of change, objects it creates and drops, or why it is unknown."""

    def __init__(self, raw, text, line):
        self.kind = type(raw.stmt).__name__
        self.line = line
        self.text = ("(%s: text withheld, it may hold a password)" % self.kind if self.kind in _SECRET_KINDS
                     else " ".join(text.split()))
        self.tables = {}  # qualified table -> {"does": set, "added"/"dropped"/"changed": [...], ...}
        self.creates = {"tables": [], "indexes": [], "constraints": [], "functions": []}
        self.drops = {"tables": [], "indexes": [], "constraints": [], "views": []}
        self.unknown = None
        self.rewrites = []
        self.locks = {}  # qualified table -> the strongest lock mode predicted (locks.MODES names)
        self.locks_unknown = False

    def lock(self, table, mode):
        """Predict ``mode`` on ``table``; a table keeps the strongest mode predicted for it."""
        if locks.stronger(mode, self.locks.get(table)):
            self.locks[table] = mode

    def touch(self, table, does, what, **extra):
        entry = self.tables.setdefault(table, {"does": set(), "what": []})
        entry["does"].add(does)
        if what not in entry["what"]:
            entry["what"].append(what)
        for key, value in extra.items():
            if isinstance(value, list):
                entry.setdefault(key, [])
                entry[key].extend(v for v in value if v not in entry[key])
            else:
                entry[key] = value

    def as_dict(self):
        return dict(line=self.line, kind=self.kind, statement=self.text if len(self.text) <= 200
                    else self.text[:197] + "...", unknown=self.unknown, rewrites=sorted(self.rewrites),
                    creates=dict((k, v) for k, v in self.creates.items() if v),
                    drops=dict((k, v) for k, v in self.drops.items() if v),
                    tables=dict((name, dict(entry, does=sorted(entry["does"])))
                                for name, entry in sorted(self.tables.items())),
                    locks=dict(sorted(self.locks.items())), locks_unknown=self.locks_unknown)


def _is_user_function(name, user_functions):
    schema, function = name
    if schema == "pg_catalog":
        return False
    if schema is not None:
        return True  # a function in another schema is not PostgreSQL's own
    return function in user_functions


def _alter_table(statement, stmt, default_schema):
    if stmt.objtype != pg_enums.ObjectType.OBJECT_TABLE or stmt.relation is None:
        return
    table = _rangevar(stmt.relation, default_schema)
    if stmt.missing_ok:
        statement.touch(table, "none", "alters it if it exists", if_exists=True)
    for cmd in stmt.cmds or ():
        subtype = pg_enums.AlterTableType(cmd.subtype).name
        column = cmd.name or (cmd.def_.colname if isinstance(cmd.def_, pg_ast.ColumnDef) else None)
        if subtype in _REWRITES:
            statement.rewrites.append(table)
        if subtype in _COLUMN_CHANGES and column:
            keeps = _COLUMN_CHANGES[subtype]
            verb = {"added": "adds", "dropped": "drops", "changed": "changes"}[keeps]
            extra = {keeps: [column]}
            # What the catalog's dependants (views, the replica identity) care about: a new type, a drop and how.
            if subtype == "AT_AlterColumnType":
                extra["retyped"] = [column]
            elif keeps == "dropped" and cmd.behavior == pg_enums.DropBehavior.DROP_CASCADE:
                extra["dropped_cascade"] = [column]
            statement.touch(table, "alter", "%s column %s" % (verb, column), **extra)
            if keeps == "added" and isinstance(cmd.def_, pg_ast.ColumnDef):
                _column_constraints(statement, table, cmd.def_)
        elif subtype == "AT_ReplicaIdentity" and isinstance(cmd.def_, pg_ast.ReplicaIdentityStmt):
            identity = _REPLICA_IDENTITY.get(cmd.def_.identity_type, "default")
            index = qualify(stmt.relation.schemaname, cmd.def_.name, default_schema) if cmd.def_.name else None
            statement.touch(table, "none", "sets replica identity %s" % (
                "USING INDEX %s" % cmd.def_.name if index else identity.upper()),
                replica_identity=dict(identity=identity, index=index))
        elif subtype == "AT_AddConstraint" and isinstance(cmd.def_, pg_ast.Constraint):
            _constraint(statement, table, cmd.def_)
        elif subtype == "AT_DropConstraint":
            statement.drops["constraints"].append(dict(table=table, name=cmd.name))
            statement.touch(table, "none", "drops constraint %s" % cmd.name)
        elif subtype in ("AT_AddInherit", "AT_DropInherit", "AT_AttachPartition", "AT_DetachPartition"):
            # Rows of another table now count (or stop counting) as this table's.
            statement.touch(table, "write", "changes its inheritance or partitions")
        else:
            statement.touch(table, "none", re.sub(r"(?<=[a-z])(?=[A-Z])", " ", subtype[3:]).lower() or "alters it")


def _column_constraints(statement, table, column_def):
    for constraint in column_def.constraints or ():
        _constraint(statement, table, constraint)


def _constraint(statement, table, constraint):
    contype = pg_enums.ConstrType(constraint.contype).name
    if constraint.conname and contype in ("CONSTR_CHECK", "CONSTR_UNIQUE", "CONSTR_PRIMARY", "CONSTR_FOREIGN",
                                          "CONSTR_EXCLUSION"):
        statement.creates["constraints"].append(dict(table=table, name=constraint.conname))
    name = " " + constraint.conname if constraint.conname else ""
    # A new primary key is what REPLICA IDENTITY DEFAULT uses from then on.
    extra = dict(adds_primary_key=True) if contype == "CONSTR_PRIMARY" else {}
    statement.touch(table, "none", "adds %s constraint%s" % (contype[7:].lower(), name), **extra)


def _create_table(statement, stmt, default_schema):
    table = _rangevar(stmt.relation, default_schema)
    statement.creates["tables"].append(dict(table=table, if_not_exists=bool(stmt.if_not_exists)))
    statement.touch(table, "create", "creates it" + (" if it does not exist" if stmt.if_not_exists else ""),
                    if_not_exists=bool(stmt.if_not_exists))
    for element in stmt.tableElts or ():
        if isinstance(element, pg_ast.ColumnDef):
            _column_constraints(statement, table, element)
        elif isinstance(element, pg_ast.Constraint):
            _constraint(statement, table, element)


def _drop(statement, stmt, default_schema):
    kind = pg_enums.ObjectType(stmt.removeType).name
    cascade = stmt.behavior == pg_enums.DropBehavior.DROP_CASCADE
    for obj in stmt.objects or ():
        if kind == "OBJECT_TABLE":
            schema, name = _names(obj)
            table = qualify(schema, name, default_schema)
            statement.drops["tables"].append(table)
            extra = dict(drop_cascade=True) if cascade else {}
            if stmt.missing_ok:
                statement.touch(table, "drop", "drops it if it exists", if_exists=True, **extra)
            else:
                statement.touch(table, "drop", "drops it", **extra)
        elif kind == "OBJECT_INDEX":
            schema, name = _names(obj)
            statement.drops["indexes"].append(qualify(schema, name, default_schema))
        elif kind in ("OBJECT_VIEW", "OBJECT_MATVIEW"):
            schema, name = _names(obj)
            statement.drops["views"].append(qualify(schema, name, default_schema))


def _rename(statement, stmt, default_schema):
    kind = pg_enums.ObjectType(stmt.renameType).name
    if stmt.relation is None:
        return
    table = _rangevar(stmt.relation, default_schema)
    if kind == "OBJECT_COLUMN":
        statement.touch(table, "alter", "renames column %s to %s" % (stmt.subname, stmt.newname),
                        changed=[stmt.subname])
    elif kind == "OBJECT_TABLE":
        new = qualify(stmt.relation.schemaname, stmt.newname, default_schema)
        statement.touch(table, "rename", "is renamed to %s" % new, renamed_to=new)
        statement.touch(new, "create", "is %s renamed" % table, renamed_from=table)
    elif kind == "OBJECT_TABCONSTRAINT":
        statement.drops["constraints"].append(dict(table=table, name=stmt.subname))
        statement.creates["constraints"].append(dict(table=table, name=stmt.newname))
        statement.touch(table, "none", "renames constraint %s" % stmt.subname)
    elif kind == "OBJECT_INDEX":
        statement.drops["indexes"].append(table)
        statement.creates["indexes"].append(dict(name=stmt.newname, table=None))


def _index(statement, stmt, default_schema):
    table = _rangevar(stmt.relation, default_schema)
    spec = dict(name=stmt.idxname, table=table, unique=bool(stmt.unique),
                columns=[RawStream()(e) for e in stmt.indexParams or ()],
                include=[RawStream()(e) for e in stmt.indexIncludingParams or ()])
    if stmt.whereClause is not None:
        spec["where"] = RawStream()(stmt.whereClause)
    if stmt.idxname:
        statement.creates["indexes"].append(spec)
    statement.touch(table, "none", "gets index %s" % (stmt.idxname or "(unnamed)"))


def _truncate(statement, stmt, default_schema):
    cascade = stmt.behavior == pg_enums.DropBehavior.DROP_CASCADE
    for relation in stmt.relations or ():
        statement.touch(_rangevar(relation, default_schema), "delete", "truncates it", truncate_cascade=cascade)


# PL/pgSQL statements that run SQL built at run time: what they do cannot be read.
_DYNAMIC = ("PLpgSQL_stmt_dynexecute", "PLpgSQL_stmt_dynfors")


def _plpgsql_queries(node, found):
    """Every SQL text of a parsed PL/pgSQL body (statements, and expressions as SELECTs); False on dynamic SQL."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _DYNAMIC or (key == "PLpgSQL_stmt_open" and "dynquery" in value):
                return False
            if key == "PLpgSQL_expr":
                query, mode = value.get("query", ""), value.get("parseMode", 0)
                if mode >= 3 and ":=" in query:  # an assignment: what it computes is an expression
                    query = query.split(":=", 1)[1]
                found.append(query if mode == 0 else "SELECT " + query)
            elif not _plpgsql_queries(value, found):
                return False
    elif isinstance(node, list):
        for value in node:
            if not _plpgsql_queries(value, found):
                return False
    return True


def _do_block(statement, stmt, default_schema, user_functions, facts):
    """A DO block in PL/pgSQL without dynamic SQL is read statement by statement; anything else is unknown."""
    options = dict((o.defname, o.arg.sval) for o in stmt.args or () if hasattr(o.arg, "sval"))
    if options.get("language", "plpgsql").lower() != "plpgsql" or "as" not in options:
        statement.unknown = "a DO block in %s, whose effect cannot be read statically" % options.get("language")
        return
    source = "CREATE FUNCTION tmi_do_block() RETURNS void LANGUAGE plpgsql AS $tmi_do$%s$tmi_do$" % options["as"]
    queries = []
    try:
        readable = _plpgsql_queries(json.loads(pglast.parser.parse_plpgsql_json(source)), queries)
    except (pglast.parser.ParseError, ValueError):
        readable = False
    if not readable:
        statement.unknown = "a DO block that runs dynamic SQL (EXECUTE), whose effect cannot be read statically"
        return
    for query in queries:
        try:
            inner = pglast.parse_sql(query)
        except pglast.parser.ParseError:
            statement.unknown = "a DO block with a statement this analysis cannot parse"
            return
        for raw in inner:
            part = analyse_statement(raw, query, statement.line, default_schema, user_functions, facts)
            if part.unknown:
                statement.unknown = "a DO block: %s" % part.unknown
            for table, mode in part.locks.items():
                statement.lock(table, mode)
            statement.locks_unknown = statement.locks_unknown or part.locks_unknown
            for table, entry in part.tables.items():
                for does in entry["does"]:
                    statement.touch(table, does, "in a DO block: " + "; ".join(entry["what"]),
                                    **dict((k, v) for k, v in entry.items() if k not in ("does", "what")))
            for key in statement.creates:
                statement.creates[key].extend(part.creates.get(key, []))
            for key in statement.drops:
                statement.drops[key].extend(part.drops.get(key, []))
            statement.rewrites.extend(part.rewrites)


def _modifications(statement, stmt, default_schema, user_functions):
    walker = _Walker()
    walker(stmt)
    for does, relation, what in walker.modifications:
        statement.touch(_rangevar(relation, default_schema), does, what)
    calls = sorted(set(".".join(p for p in name if p) for name in walker.functions
                       if _is_user_function(name, user_functions)))
    if calls:
        statement.unknown = "calls %s, which may change any table" % ", ".join(calls)


# --- predicted locks ---------------------------------------------------------------------------------------------
# The table-level lock each statement takes on each table it names, as PostgreSQL's documentation gives them:
# https://www.postgresql.org/docs/current/explicit-locking.html#LOCKING-TABLES (which command takes which mode),
# https://www.postgresql.org/docs/current/sql-altertable.html (each subcommand's mode; with several subcommands "the
# strictest lock required by any of them"; a foreign key also takes SHARE ROW EXCLUSIVE on the referenced table;
# VALIDATE CONSTRAINT of a foreign key ROW SHARE on it; ATTACH PARTITION SHARE UPDATE EXCLUSIVE on the parent and
# ACCESS EXCLUSIVE on the partition; DETACH PARTITION CONCURRENTLY SHARE UPDATE EXCLUSIVE on both),
# sql-createindex.html and sql-dropindex.html (SHARE, or with CONCURRENTLY SHARE UPDATE EXCLUSIVE; DROP INDEX ACCESS
# EXCLUSIVE on the index's table), sql-reindex.html (SHARE on the table), sql-createtrigger.html, sql-lock.html,
# sql-refreshmaterializedview.html, sql-cluster.html, sql-vacuum.html, sql-createtable.html (INHERITS, PARTITION OF).
# Checked against pg_locks on PostgreSQL 18, which also gave the modes no page states: DROP TRIGGER, DROP POLICY and
# DROP RULE (ACCESS EXCLUSIVE), COMMENT ON a table or column (SHARE UPDATE EXCLUSIVE) or on a constraint, trigger
# or policy (ACCESS SHARE), GRANT (ACCESS SHARE), DROP TABLE or DROP CONSTRAINT of a foreign key (ACCESS EXCLUSIVE
# on the other table too).
_AS, _RS, _RE, _SUE, _SHARE, _SRE, _EXCL, _AE = locks.MODES
_TRIGGER_TOGGLES = ("AT_EnableTrig", "AT_EnableAlwaysTrig", "AT_EnableReplicaTrig", "AT_DisableTrig",
                    "AT_EnableTrigAll", "AT_DisableTrigAll", "AT_EnableTrigUser", "AT_DisableTrigUser")
# ALTER TABLE subcommands weaker than ACCESS EXCLUSIVE (every other one takes ACCESS EXCLUSIVE).
_ALTER_TABLE_MODES = dict([(name, _SRE) for name in _TRIGGER_TOGGLES] + [
    (name, _SUE) for name in ("AT_SetStatistics", "AT_SetOptions", "AT_ResetOptions", "AT_ValidateConstraint",
                              "AT_ClusterOn", "AT_DropCluster", "AT_AttachPartition", "AT_DetachPartitionFinalize")])
# Storage parameters SET (...) changes under SHARE UPDATE EXCLUSIVE; any other (user_catalog_table) takes ACCESS
# EXCLUSIVE.
_LIGHT_OPTIONS = re.compile(r"^(fillfactor|toast_tuple_target|parallel_workers|log_autovacuum_min_duration"
                            r"|(toast\.)?(autovacuum_|vacuum_).*)$")
_LIGHT_COMMENTS = ("OBJECT_TABCONSTRAINT", "OBJECT_TRIGGER", "OBJECT_POLICY", "OBJECT_RULE")
# The catalog query of the facts below: each index of the database (not the system's) and its table.
INDEX_TABLES_SQL = (
    "SELECT ni.nspname || '.' || ci.relname, nt.nspname || '.' || ct.relname FROM pg_index x "
    "JOIN pg_class ci ON ci.oid = x.indexrelid JOIN pg_namespace ni ON ni.oid = ci.relnamespace "
    "JOIN pg_class ct ON ct.oid = x.indrelid JOIN pg_namespace nt ON nt.oid = ct.relnamespace "
    "WHERE ni.nspname NOT IN ('pg_catalog', 'information_schema') AND ni.nspname NOT LIKE 'pg\\_toast%'")


class Facts(object):
    """What lock prediction needs beyond the statement: each index's table and the foreign keys, from the catalog,
    kept up to date with what the planned statements before create, rename and drop."""

    def __init__(self, index_tables=None, foreign_keys=()):
        self.index_tables = dict(index_tables or {})
        self.foreign_keys = [dict(table=k["table"], ref_table=k["ref_table"], name=k.get("name"))
                             for k in foreign_keys]

    def reference(self, table, name):
        """The table a foreign key ``name`` of ``table`` references, or None when it is not a known foreign key."""
        for key in self.foreign_keys:
            if key["table"] == table and key["name"] == name:
                return key["ref_table"]
        return None

    def rename_table(self, old, new):
        for index, table in list(self.index_tables.items()):
            if table == old:
                self.index_tables[index] = new
        for key in self.foreign_keys:
            for side in ("table", "ref_table"):
                if key[side] == old:
                    key[side] = new

    def drop_table(self, table):
        self.foreign_keys = [k for k in self.foreign_keys if table not in (k["table"], k["ref_table"])]
        for index in [i for i, t in self.index_tables.items() if t == table]:
            del self.index_tables[index]


class _Relations(Visitor):
    """The relations a query names and the lock each takes: the target of INSERT, UPDATE, DELETE and MERGE ROW
    EXCLUSIVE, a table read ACCESS SHARE, a table of SELECT ... FOR UPDATE/SHARE ROW SHARE (CTE names left out)."""

    def __init__(self):
        self.ctes = set()
        self.found = []

    def visit_CommonTableExpr(self, ancestors, node):
        self.ctes.add(node.ctename)

    def visit_RangeVar(self, ancestors, node):
        self.found.append((node, _AS))

    def visit_InsertStmt(self, ancestors, node):
        self.found.append((node.relation, _RE))

    def visit_UpdateStmt(self, ancestors, node):
        self.found.append((node.relation, _RE))

    def visit_DeleteStmt(self, ancestors, node):
        self.found.append((node.relation, _RE))

    def visit_MergeStmt(self, ancestors, node):
        self.found.append((node.relation, _RE))

    def visit_SelectStmt(self, ancestors, node):
        for clause in node.lockingClause or ():
            for relation in clause.lockedRels or _from_tables(node.fromClause or ()):
                self.found.append((relation, _RS))

    def lock(self, statement, schema):
        for relation, mode in self.found:
            if relation.schemaname or relation.relname not in self.ctes:
                statement.lock(_rangevar(relation, schema), mode)


def _from_tables(items):
    """The RangeVars of a FROM list, through its joins (not into subqueries)."""
    for item in items:
        if isinstance(item, pg_ast.RangeVar):
            yield item
        elif isinstance(item, pg_ast.JoinExpr):
            yield from _from_tables([item.larg, item.rarg])


def _lock_query(statement, node, schema):
    if node is not None:
        relations = _Relations()
        relations(node)
        relations.lock(statement, schema)


def _lock_foreign_key(statement, table, constraint, schema, facts):
    """A foreign key takes SHARE ROW EXCLUSIVE on the referenced table (and on its own, which ALTER TABLE's own
    mode covers); it is remembered, for a later VALIDATE or DROP CONSTRAINT."""
    ref = _rangevar(constraint.pktable, schema)
    if ref != table:
        statement.lock(ref, _SRE)
    facts.foreign_keys.append(dict(table=table, ref_table=ref, name=constraint.conname))


def _foreign_keys(column_or_constraint):
    if isinstance(column_or_constraint, pg_ast.ColumnDef):
        return [c for c in column_or_constraint.constraints or () if c.contype == pg_enums.ConstrType.CONSTR_FOREIGN]
    if isinstance(column_or_constraint, pg_ast.Constraint):
        return [column_or_constraint] if column_or_constraint.contype == pg_enums.ConstrType.CONSTR_FOREIGN else []
    return []


def _lock_alter_table(statement, stmt, schema, facts):
    if pg_enums.ObjectType(stmt.objtype).name not in ("OBJECT_TABLE", "OBJECT_MATVIEW") or stmt.relation is None:
        return  # ALTER INDEX, VIEW, SEQUENCE: no table lock
    table = _rangevar(stmt.relation, schema)
    for cmd in stmt.cmds or ():
        subtype = pg_enums.AlterTableType(cmd.subtype).name
        mode = _ALTER_TABLE_MODES.get(subtype, _AE)
        keys = _foreign_keys(cmd.def_) if subtype in ("AT_AddColumn", "AT_AddConstraint") else []
        for key in keys:
            _lock_foreign_key(statement, table, key, schema, facts)
        if subtype == "AT_AddConstraint" and keys:
            mode = _SRE
        elif subtype in ("AT_SetRelOptions", "AT_ResetRelOptions"):
            light = all(_LIGHT_OPTIONS.match(("%s.%s" % (o.defnamespace, o.defname)) if o.defnamespace else o.defname)
                        for o in cmd.def_ or ())
            mode = _SUE if light else _AE
        elif subtype in ("AT_ValidateConstraint", "AT_DropConstraint"):
            ref = facts.reference(table, cmd.name)
            if ref and ref != table:
                statement.lock(ref, _RS if subtype == "AT_ValidateConstraint" else _AE)
        elif subtype in ("AT_AttachPartition", "AT_DetachPartition") and isinstance(cmd.def_, pg_ast.PartitionCmd):
            concurrent = subtype == "AT_DetachPartition" and cmd.def_.concurrent
            mode = _SUE if concurrent or subtype == "AT_AttachPartition" else _AE
            statement.lock(_rangevar(cmd.def_.name, schema), _SUE if concurrent else _AE)
        elif subtype in ("AT_AddInherit", "AT_DropInherit") and isinstance(cmd.def_, pg_ast.RangeVar):
            statement.lock(_rangevar(cmd.def_, schema), _SUE)
        statement.lock(table, mode)


def _lock_create_table(statement, stmt, schema, facts):
    table = _rangevar(stmt.relation, schema)
    for parent in stmt.inhRelations or ():
        # PARTITION OF takes ACCESS EXCLUSIVE on the parent, INHERITS SHARE UPDATE EXCLUSIVE.
        statement.lock(_rangevar(parent, schema), _AE if stmt.partbound is not None else _SUE)
    for element in stmt.tableElts or ():
        if isinstance(element, pg_ast.TableLikeClause):
            statement.lock(_rangevar(element.relation, schema), _AS)
        for key in _foreign_keys(element):
            _lock_foreign_key(statement, table, key, schema, facts)


def _lock_drop(statement, stmt, schema, facts):
    kind = pg_enums.ObjectType(stmt.removeType).name
    cascade = stmt.behavior == pg_enums.DropBehavior.DROP_CASCADE
    for obj in stmt.objects or ():
        if kind in ("OBJECT_TABLE", "OBJECT_MATVIEW"):
            table = qualify(*_names(obj), default_schema=schema)
            statement.lock(table, _AE)
            # Its foreign keys go, and with them their triggers on the tables at their other end.
            for key in facts.foreign_keys:
                if key["table"] == table and key["ref_table"] != table:
                    statement.lock(key["ref_table"], _AE)
                elif cascade and key["ref_table"] == table and key["table"] != table:
                    statement.lock(key["table"], _AE)
            facts.drop_table(table)
        elif kind == "OBJECT_INDEX":
            index = qualify(*_names(obj), default_schema=schema)
            table = facts.index_tables.pop(index, None)
            if table is None:
                statement.locks_unknown = True
            else:
                statement.lock(table, _SUE if stmt.concurrent else _AE)
        elif kind in ("OBJECT_TRIGGER", "OBJECT_POLICY", "OBJECT_RULE"):
            parts = [p.sval for p in obj][:-1]
            statement.lock(qualify(parts[-2] if len(parts) > 1 else None, parts[-1], schema), _AE)


def _lock_rename(statement, stmt, schema, facts):
    kind = pg_enums.ObjectType(stmt.renameType).name
    if stmt.relation is None:
        return
    relation = _rangevar(stmt.relation, schema)
    if kind == "OBJECT_INDEX":  # SHARE UPDATE EXCLUSIVE on the index alone
        table = facts.index_tables.pop(relation, None)
        if table is not None:
            facts.index_tables[qualify(stmt.relation.schemaname, stmt.newname, schema)] = table
    elif kind in ("OBJECT_TABLE", "OBJECT_MATVIEW", "OBJECT_TABCONSTRAINT", "OBJECT_TRIGGER", "OBJECT_POLICY",
                  "OBJECT_RULE") or (kind == "OBJECT_COLUMN" and pg_enums.ObjectType(stmt.relationType).name in (
                      "OBJECT_TABLE", "OBJECT_MATVIEW")):
        statement.lock(relation, _AE)
        if kind == "OBJECT_TABLE":
            facts.rename_table(relation, qualify(stmt.relation.schemaname, stmt.newname, schema))
        elif kind == "OBJECT_TABCONSTRAINT":
            for key in facts.foreign_keys:
                if key["table"] == relation and key["name"] == stmt.subname:
                    key["name"] = stmt.newname


def _lock_owned_by(statement, options, schema):
    for option in options or ():
        if option.defname == "owned_by" and option.arg and len(option.arg) > 1:
            parts = [p.sval for p in option.arg][:-1]
            statement.lock(qualify(parts[-2] if len(parts) > 1 else None, parts[-1], schema), _AS)


def _lock_maintenance(statement, stmt, schema, facts):
    """VACUUM, ANALYZE, CLUSTER, REINDEX: per table named; of every table (none named), unknown."""
    kind = type(stmt).__name__
    if kind == "VacuumStmt":
        full = any(o.defname == "full" for o in stmt.options or ())
        relations = [r.relation for r in stmt.rels or () if getattr(r, "relation", None) is not None]
        mode = _AE if full else _SUE
    elif kind == "ClusterStmt":
        relations, mode = [stmt.relation] if stmt.relation is not None else [], _AE
    else:
        concurrent = any(getattr(p, "defname", "") == "concurrently" for p in stmt.params or ())
        mode = _SUE if concurrent else _SHARE
        which = pg_enums.ReindexObjectType(stmt.kind).name
        relations = [stmt.relation] if which in ("REINDEX_OBJECT_TABLE", "REINDEX_OBJECT_INDEX") else []
        if which == "REINDEX_OBJECT_INDEX":
            table = facts.index_tables.get(_rangevar(stmt.relation, schema))
            if table is not None:
                statement.lock(table, mode)
            else:
                statement.locks_unknown = True
            return
    if not relations:
        statement.locks_unknown = True
    for relation in relations:
        statement.lock(_rangevar(relation, schema), mode)


def _lock_comment(statement, stmt, schema):
    kind = pg_enums.ObjectType(stmt.objtype).name
    if kind in ("OBJECT_TABLE", "OBJECT_MATVIEW", "OBJECT_COLUMN", *_LIGHT_COMMENTS) and stmt.object:
        parts = [p.sval for p in stmt.object]
        if kind not in ("OBJECT_TABLE", "OBJECT_MATVIEW"):
            parts = parts[:-1]
        statement.lock(qualify(parts[-2] if len(parts) > 1 else None, parts[-1], schema),
                       _AS if kind in _LIGHT_COMMENTS else _SUE)


def _predict_locks(statement, stmt, schema, facts):
    """Set ``statement.locks`` (and ``locks_unknown``) for one parsed statement."""
    kind = type(stmt).__name__
    if kind in ("SelectStmt", "InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt"):
        _lock_query(statement, stmt, schema)
    elif kind == "AlterTableStmt":
        _lock_alter_table(statement, stmt, schema, facts)
    elif kind == "CreateStmt":
        _lock_create_table(statement, stmt, schema, facts)
    elif kind in ("CreateTableAsStmt", "ViewStmt"):
        _lock_query(statement, stmt.query, schema)
    elif kind == "DropStmt":
        _lock_drop(statement, stmt, schema, facts)
    elif kind == "RenameStmt":
        _lock_rename(statement, stmt, schema, facts)
    elif kind == "IndexStmt":
        statement.lock(_rangevar(stmt.relation, schema), _SUE if stmt.concurrent else _SHARE)
        if stmt.idxname:
            facts.index_tables[qualify(stmt.relation.schemaname, stmt.idxname, schema)] = _rangevar(
                stmt.relation, schema)
    elif kind == "TruncateStmt":
        pending = [_rangevar(r, schema) for r in stmt.relations or ()]
        while pending:  # CASCADE truncates the referencing tables too, all the way down
            table = pending.pop()
            if table not in statement.locks:
                statement.lock(table, _AE)
                if stmt.behavior == pg_enums.DropBehavior.DROP_CASCADE:
                    pending.extend(k["table"] for k in facts.foreign_keys if k["ref_table"] == table)
    elif kind == "CopyStmt":
        if stmt.relation is not None:
            statement.lock(_rangevar(stmt.relation, schema), _RE if stmt.is_from else _AS)
        _lock_query(statement, stmt.query, schema)
    elif kind == "CreateTrigStmt":
        statement.lock(_rangevar(stmt.relation, schema), _SRE)
    elif kind in ("CreatePolicyStmt", "AlterPolicyStmt"):
        statement.lock(_rangevar(stmt.table, schema), _AE)
    elif kind == "RuleStmt":
        statement.lock(_rangevar(stmt.relation, schema), _AE)
    elif kind == "CreateStatsStmt":
        for relation in stmt.relations or ():
            if isinstance(relation, pg_ast.RangeVar):
                statement.lock(_rangevar(relation, schema), _SUE)
    elif kind == "CommentStmt":
        _lock_comment(statement, stmt, schema)
    elif kind == "GrantStmt" and pg_enums.ObjectType(stmt.objtype).name == "OBJECT_TABLE":
        if stmt.targtype == pg_enums.GrantTargetType.ACL_TARGET_OBJECT:
            for relation in stmt.objects or ():
                statement.lock(_rangevar(relation, schema), _AS)
        else:  # ON ALL TABLES IN SCHEMA
            statement.locks_unknown = True
    elif kind == "LockStmt":
        for relation in stmt.relations or ():
            statement.lock(_rangevar(relation, schema), locks.MODES[stmt.mode - 1])
    elif kind == "RefreshMatViewStmt":
        statement.lock(_rangevar(stmt.relation, schema), _EXCL if stmt.concurrent else _AE)
    elif kind in ("VacuumStmt", "ClusterStmt", "ReindexStmt"):
        _lock_maintenance(statement, stmt, schema, facts)
    elif kind == "AlterObjectSchemaStmt" and stmt.relation is not None and pg_enums.ObjectType(
            stmt.objectType).name in ("OBJECT_TABLE", "OBJECT_MATVIEW"):
        statement.lock(_rangevar(stmt.relation, schema), _AE)
    elif kind in ("CreateSeqStmt", "AlterSeqStmt"):
        _lock_owned_by(statement, stmt.options, schema)
    elif kind == "AlterDomainStmt" and stmt.subtype in ("C", "V", "O"):
        statement.locks_unknown = True  # checks every column of the domain's type, in tables it does not name
    elif kind == "ExplainStmt":
        _predict_locks(statement, stmt.query, schema, facts)  # parse analysis takes the statement's own locks
    # A table the statement creates is its own until it commits: nobody else can wait for it.
    for created in statement.creates["tables"]:
        statement.locks.pop(created["table"], None)
    if statement.unknown:
        statement.locks_unknown = True


def analyse_statement(raw, text, line, default_schema="public", user_functions=(), facts=None):
    """The Statement for one parsed statement (``raw`` from pglast.parse_sql).

    ``facts`` (a Facts: the tables of indexes, the foreign keys) serve its predicted locks, and learn from it.
    """
    facts = facts if facts is not None else Facts()
    statement = _read_statement(raw, text, line, default_schema, user_functions, facts)
    _predict_locks(statement, raw.stmt, default_schema, facts)
    return statement


def _read_statement(raw, text, line, default_schema, user_functions, facts):
    statement = Statement(raw, text, line)
    stmt = raw.stmt
    kind = statement.kind
    if kind == "DoStmt":
        _do_block(statement, stmt, default_schema, user_functions, facts)
        return statement
    if kind in _UNKNOWN:
        statement.unknown = "%s, whose effect cannot be read statically" % _UNKNOWN[kind]
        return statement
    if kind == "AlterTableStmt":
        _alter_table(statement, stmt, default_schema)
    elif kind == "CreateStmt":
        _create_table(statement, stmt, default_schema)
    elif kind == "CreateTableAsStmt":
        if pg_enums.ObjectType(stmt.objtype).name == "OBJECT_TABLE":
            table = _rangevar(stmt.into.rel, default_schema)
            statement.creates["tables"].append(dict(table=table, if_not_exists=bool(stmt.if_not_exists)))
            statement.touch(table, "create", "creates it from a query", if_not_exists=bool(stmt.if_not_exists))
        _modifications(statement, stmt.query, default_schema, user_functions)
    elif kind == "DropStmt":
        _drop(statement, stmt, default_schema)
    elif kind == "RenameStmt":
        _rename(statement, stmt, default_schema)
    elif kind == "IndexStmt":
        _index(statement, stmt, default_schema)
    elif kind == "TruncateStmt":
        _truncate(statement, stmt, default_schema)
    elif kind == "CopyStmt":
        if stmt.is_from and stmt.relation is not None:
            statement.touch(_rangevar(stmt.relation, default_schema), "write", "copies rows in")
    elif kind in ("InsertStmt", "UpdateStmt", "DeleteStmt", "MergeStmt", "SelectStmt"):
        if kind == "SelectStmt" and stmt.intoClause is not None:
            table = _rangevar(stmt.intoClause.rel, default_schema)
            statement.creates["tables"].append(dict(table=table, if_not_exists=False))
            statement.touch(table, "create", "creates it from a query (SELECT INTO)")
        _modifications(statement, stmt, default_schema, user_functions)
        return statement
    elif kind == "ExplainStmt":
        # EXPLAIN ANALYZE runs the statement: what it writes, it writes.
        if any(getattr(option, "defname", "") == "analyze" for option in stmt.options or ()):
            return _read_statement(pglast.ast.RawStmt(stmt=stmt.query), text, line, default_schema,
                                   user_functions, facts)
    elif kind == "CreateFunctionStmt":
        statement.creates["functions"].append(_names(stmt.funcname)[1])
    elif kind not in _SCHEMA_ONLY:
        statement.unknown = "a %s statement, which this analysis does not read" % kind
        return statement
    if kind in ("CreateTrigStmt", "RuleStmt") and getattr(stmt, "relation", None) is not None:
        statement.touch(_rangevar(stmt.relation, default_schema), "none",
                        "gets a %s" % ("trigger" if kind == "CreateTrigStmt" else "rule"))
    if kind in ("VacuumStmt", "ClusterStmt"):
        for relation in getattr(stmt, "rels", None) or ():
            table = getattr(relation, "relation", None)
            if table is not None:
                statement.rewrites.append(_rangevar(table, default_schema))
    return statement


def analyse_sql(sql, default_schema="public", user_functions=(), facts=None):
    """[Statement dict] of one migration file, in order, each with its 1-based line.

    ``facts``: a Facts for the predicted locks, which learns from each statement in turn.
    """
    statements = []
    defined = set(user_functions)
    facts = facts if facts is not None else Facts()
    for raw in pglast.parse_sql(sql):
        # pglast reports locations in characters of the str it parsed.
        start = raw.stmt_location or 0
        length = raw.stmt_len or (len(sql) - start)
        text = sql[start:start + length]
        # The line of the statement's first token, not of the comments before it.
        lead = len(text) - len(text.lstrip())
        line = sql[:start].count("\n") + text[:lead].count("\n") + 1
        statement = analyse_statement(raw, _strip_comments(text), line, default_schema, defined, facts)
        defined.update(statement.creates["functions"])
        statements.append(statement.as_dict())
    return statements


def _strip_comments(text):
    return "\n".join(line for line in text.strip().splitlines() if not line.strip().startswith("--"))


def analyse_plan(files, default_schema="public", user_functions=(), foreign_keys=(), index_tables=None):
    """The analysis of the planned files, in order.

    ``files``: [(version, title, direction, sql)]. ``foreign_keys``: [{"table", "ref_table",
    "on_delete", "on_update", "name"}] from the catalog (codes of pg_constraint.confdeltype).
    ``index_tables``: {qualified index: qualified table} from the catalog (INDEX_TABLES_SQL), for the
    locks of DROP INDEX and REINDEX INDEX.
    Returns {"files": [{version, title, direction, statements}], "tables": {table: change},
    "unknown": [{version, line, reason}], "expected": {indexes, constraints}, "dropped": [{version, direction,
    line, kind, name, table}], "requires": [...]}.
    """
    result = dict(files=[], tables={}, unknown=[], requires=[])
    defined = set(user_functions)
    created_tables = set()
    facts = Facts(index_tables, foreign_keys)
    for version, title, direction, sql in files:
        statements = analyse_sql(sql, default_schema, defined, facts)
        for statement in statements:
            defined.update(statement["creates"].get("functions", []))
            if statement["unknown"]:
                result["unknown"].append(dict(version=version, direction=direction, line=statement["line"],
                                              reason=statement["unknown"], statement=statement["statement"]))
            for table, entry in statement["tables"].items():
                if "create" not in entry["does"] and table not in created_tables and not entry.get("if_exists"):
                    if table not in result["requires"]:
                        result["requires"].append(table)
                if "create" in entry["does"]:
                    created_tables.add(table)
                _merge(result["tables"], table, entry, version, direction, statement)
        result["files"].append(dict(version=version, title=title, direction=direction, statements=statements))
    _cascade(result["tables"], foreign_keys)
    result["expected"] = expectations(result["files"])
    result["dropped"] = dropped_objects(result["files"])
    result["summary"] = summary_lines(result)
    return result


def summary_lines(result):
    """One line per file and table: '000017 up order_status: public.orders alter (changes column status)'."""
    lines = []
    for migration in result["files"]:
        per_table = {}
        for statement in migration["statements"]:
            for table, entry in statement["tables"].items():
                seen = per_table.setdefault(table, ([], []))
                seen[0].extend(d for d in entry["does"] if d not in seen[0])
                seen[1].extend(w for w in entry["what"] if w not in seen[1])
        head = "%06d %s %s" % (migration["version"], migration["direction"], migration["title"])
        if not per_table:
            lines.append("%s: no table" % head)
        for table in sorted(per_table):
            does, what = per_table[table]
            lines.append("%s: %s %s (%s)" % (head, table, "/".join(_strongest_first(does)), "; ".join(what)))
    for table, change in sorted(result["tables"].items()):
        for item in change["by"]:
            if item.get("cascade_from"):
                lines.append("cascade: %s %s" % (table, item["what"]))
    for item in result["unknown"]:
        lines.append("%06d %s line %s: UNKNOWN effect - %s" % (item["version"], item["direction"], item["line"],
                                                               item["reason"]))
    return lines


def named_tables(result):
    """The tables an analyse_plan result names: those the statements act on and those they lock."""
    tables = set(result["tables"])
    for migration in result["files"]:
        for statement in migration["statements"]:
            tables.update(statement.get("locks", {}))
    return sorted(tables)


def _online(migration, online_index_builds):
    """Whether pg_migrate builds this file's indexes CONCURRENTLY (an up file made only of CREATE INDEX)."""
    kinds = [statement["kind"] for statement in migration["statements"]]
    return bool(online_index_builds and migration["direction"] == "up" and kinds
                and all(kind == "IndexStmt" for kind in kinds))


def _blocks(mode):
    if mode in locks.BLOCKS_READS:
        return " - blocks reads and writes"
    return " - blocks writes" if mode in locks.BLOCKS_WRITES else ""


def lock_lines(result, online_index_builds=False):
    """Per file and table the strongest lock predicted and the first line taking it:
    '000017 up enhance_metadata: public.metadata ACCESS EXCLUSIVE (line 4) - blocks reads and writes'."""
    lines = []
    for migration in result["files"]:
        head = "%06d %s %s" % (migration["version"], migration["direction"], migration["title"])
        online = _online(migration, online_index_builds)
        strongest = {}
        for statement in migration["statements"]:
            for table, mode in statement.get("locks", {}).items():
                if online:
                    mode = _SUE  # pg_migrate runs the CREATE INDEX CONCURRENTLY
                if table not in strongest or locks.stronger(mode, strongest[table][0]):
                    strongest[table] = (mode, statement["line"])
        for table in sorted(strongest):
            mode, line = strongest[table]
            lines.append("%s: %s %s (line %s%s)%s" % (head, table, mode, line,
                                                      ", built CONCURRENTLY: online_index_builds" if online else "",
                                                      _blocks(mode)))
        unknown = [s for s in migration["statements"] if s.get("locks_unknown")]
        for statement in unknown:
            lines.append("%s line %s: locks UNKNOWN - %s" % (
                head, statement["line"], statement["unknown"] or "the tables it locks cannot be read from it"))
        if not strongest and not unknown:
            lines.append("%s: no table lock" % head)
    return lines


def review(result, files, execute=None, online_index_builds=False, user_functions=(), sizes=None,
           default_schema="public"):
    """Add to an analyse_plan ``result`` of ``files``: ``sizes`` (lint.read_sizes of the tables the plan names,
    read through ``execute``, or given), ``lint`` (lint.lint_plan's findings, graded by those sizes),
    ``lock_summary`` (lock_lines) and ``lint_summary`` (a line per finding), which the migrate role prints."""
    if sizes is None:
        sizes = lint.read_sizes(execute, named_tables(result)) if execute is not None else {}
    result["sizes"] = sizes
    result["lint"] = lint.lint_plan(files, result["files"], sizes, online_index_builds, user_functions,
                                    default_schema)
    result["lock_summary"] = lock_lines(result, online_index_builds)
    result["lint_summary"] = lint.summary_lines(result["lint"])
    return result


def _strongest_first(does):
    return sorted(does, key=lambda kind: -KINDS.index(kind) if kind in KINDS else 0)


def _merge(tables, table, entry, version, direction, statement):
    change = tables.setdefault(table, dict(does=[], added=[], dropped=[], changed=[], by=[]))
    for does in entry["does"]:
        if does not in change["does"]:
            change["does"].append(does)
    for key in ("added", "dropped", "changed"):
        change[key].extend(c for c in entry.get(key, []) if c not in change[key])
    for key in ("renamed_to", "renamed_from", "truncate_cascade", "if_not_exists"):
        if key in entry:
            change[key] = entry[key]
    change["by"].append(dict(version=version, direction=direction, line=statement["line"],
                             what=", ".join(entry["what"])))
    # The table's last word: created after a drop is new again; dropped after a create is gone.
    if "create" in entry["does"]:
        change["state"] = "created"
    elif "drop" in entry["does"] or "rename" in entry["does"]:
        change["state"] = "gone"


def _cascade(tables, foreign_keys):
    """Add what deletes and truncates reach through foreign keys, until nothing new is reached."""
    by_parent = {}
    for key in foreign_keys:
        by_parent.setdefault(key["ref_table"], []).append(key)
    pending = [t for t, c in tables.items() if "delete" in c["does"] or "write" in c["does"]]
    seen = set()
    while pending:
        parent = pending.pop()
        change = tables[parent]
        for key in by_parent.get(parent, ()):
            child = key["table"]
            if "delete" in change["does"] and change.get("truncate_cascade"):
                does, how = "delete", "TRUNCATE ... CASCADE"
            elif "delete" in change["does"] and key.get("on_delete") in _CASCADE_DOES:
                does, how = _CASCADE_DOES[key["on_delete"]], "ON DELETE %s" % _ACTION_NAMES[key["on_delete"]]
            elif "write" in change["does"] and key.get("on_update") in _CASCADE_DOES:
                does, how = "write", "ON UPDATE %s" % _ACTION_NAMES[key["on_update"]]
            else:
                continue
            if (child, does) in seen:
                continue
            seen.add((child, does))
            target = tables.setdefault(child, dict(does=[], added=[], dropped=[], changed=[], by=[]))
            if does not in target["does"]:
                target["does"].append(does)
            if how == "TRUNCATE ... CASCADE":
                target["truncate_cascade"] = True  # PostgreSQL truncates the referencing tables all the way down
            target["by"].append(dict(version=None, direction=None, line=None, cascade_from=parent,
                                     what="%s through %s (%s from %s)" % (
                                         "rows deleted" if does == "delete" else "rows updated", how,
                                         key.get("name", "foreign key"), parent)))
            pending.append(child)


def expectations(files):
    """Indexes and constraints that must exist once every file ran, from the files themselves."""
    indexes, constraints = {}, {}
    for migration in files:
        for statement in migration["statements"]:
            for index in statement["drops"].get("indexes", []):
                indexes.pop(index.split(".")[-1], None)
            for constraint in statement["drops"].get("constraints", []):
                constraints.pop((constraint["table"], constraint["name"]), None)
            for table in statement["drops"].get("tables", []):
                for name in [n for n, spec in indexes.items() if spec.get("table") == table]:
                    indexes.pop(name)
                for key in [k for k in constraints if k[0] == table]:
                    constraints.pop(key)
            for table, entry in statement["tables"].items():
                if entry.get("renamed_to"):  # indexes and constraints move with their table
                    for spec in indexes.values():
                        if spec.get("table") == table:
                            spec["table"] = entry["renamed_to"]
                    for key in [k for k in constraints if k[0] == table]:
                        constraints[(entry["renamed_to"], key[1])] = dict(constraints.pop(key),
                                                                          table=entry["renamed_to"])
            for index in statement["creates"].get("indexes", []):
                if index.get("table"):
                    indexes[index["name"]] = dict(index)
            for constraint in statement["creates"].get("constraints", []):
                constraints[(constraint["table"], constraint["name"])] = constraint
    return dict(indexes=[indexes[n] for n in sorted(indexes)],
                constraints=[constraints[k] for k in sorted(constraints)])


_DROPPED_KINDS = (("tables", "table"), ("indexes", "index"), ("constraints", "constraint"), ("views", "view"))


def dropped_objects(files):
    """What the files drop, in order: [{version, direction, line, kind, name, table}] (a rename keeps its object)."""
    dropped = []
    for migration in files:
        for statement in migration["statements"]:
            if statement["kind"] == "RenameStmt":
                continue
            for key, kind in _DROPPED_KINDS:
                for item in statement["drops"].get(key, []):
                    name = item["name"] if isinstance(item, dict) else item
                    dropped.append(dict(version=migration["version"], direction=migration["direction"],
                                        line=statement["line"], kind=kind, name=name,
                                        table=item["table"] if isinstance(item, dict) else None))
    return dropped


def projections(changes):
    """Per table whose columns the files change: the columns to leave out of its figures."""
    return dict((table, sorted(set(change.get("dropped", [])) | set(change.get("changed", []))))
                for table, change in changes.items()
                if change.get("added") or change.get("dropped") or change.get("changed"))
