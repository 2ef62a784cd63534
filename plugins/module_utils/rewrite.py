# -*- coding: utf-8 -*-
# Copyright: (c) 2026, tmi.migration maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Online-equivalent rewrites of a migration file: the same end state, writers blocked only for catalog changes.

Pure functions, no database access: ``plan(body)`` reads a file with PostgreSQL's own parser (pglast)
and returns the steps that reach what the file reaches without holding a write-blocking lock while a
table is scanned, or declines with the reason. Written here because no library does it: pgroll and
pg-osc rewrite their own migration formats, squawk only advises these rewrites.

The rewrites:

* ``ADD CONSTRAINT c CHECK (...)`` and ``ADD CONSTRAINT c FOREIGN KEY ...``: added ``NOT VALID`` in the
  file's transaction, then ``ALTER TABLE t VALIDATE CONSTRAINT c`` in its own transaction after it
  (SHARE UPDATE EXCLUSIVE on t; a foreign key's validation takes ROW SHARE on the referenced table);
* ``ADD CONSTRAINT c UNIQUE (cols)``: ``CREATE UNIQUE INDEX CONCURRENTLY c ON t (cols)``, then
  ``ALTER TABLE t ADD CONSTRAINT c UNIQUE USING INDEX c`` (a catalog change);
* ``ALTER COLUMN x SET NOT NULL``: a helper ``CHECK (x IS NOT NULL) NOT VALID`` in the file's transaction,
  its validation, ``SET NOT NULL`` (PostgreSQL 12+ proves it from the validated CHECK and skips the scan),
  the helper dropped;
* ``CREATE INDEX`` in a file that does more than build indexes: ``CREATE INDEX CONCURRENTLY`` after the
  file's transaction.

The file's own statements stay in one transaction (step 1), with the original text wherever a statement
is untouched; an ALTER TABLE whose subcommands change is deparsed with the deferred subcommands taken out
(so 000017's one ALTER TABLE with four CHECKs and a UNIQUE becomes one ALTER TABLE with four NOT VALID
CHECKs, four validations and the two steps of the UNIQUE). The deferred steps run after it, in the file's
order, each in its own transaction (or, CONCURRENTLY, outside one).

Moving a step after the rest of the file is safe only when nothing later in the file depends on it, so
the rewrite declines (returns the reason) a file where a later statement names the deferred object,
references the table of a deferred UNIQUE with a foreign key, changes, renames or drops the table or the
columns a deferred step covers, or writes rows of a table whose deferred constraint would have checked
them at once; a file with a statement whose effect is unknown (``analysis``); a file that already runs
outside a transaction (CONCURRENTLY, VACUUM); and what it does not reproduce exactly (a PRIMARY KEY, whose
``USING INDEX`` would set NOT NULL under ACCESS EXCLUSIVE with a scan; DEFERRABLE, INCLUDE, index
parameters or tablespace, an unnamed constraint, ALTER TABLE ONLY or IF EXISTS). Objects on a table the
file creates itself are left as written: nobody waits for a table that does not exist yet.

Equality of the end state is not assumed here: the rehearsal proves it on the copy of production
(``rehearsal.Rehearsal``) before pg_migrate may use a rewrite.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib

from ansible_collections.tmi.migration.plugins.module_utils import analysis

try:
    import pglast
    from pglast import ast as pg_ast
    from pglast import enums as pg_enums
    from pglast.stream import RawStream, maybe_double_quote_name
except ImportError:  # migrations.PGLAST_IMPORT_ERROR is what the modules report
    pglast = None

# Step kinds, in the words the reports use.
FILE = "file"  # the file's statements, in one transaction
VALIDATE = "validate"  # ALTER TABLE t VALIDATE CONSTRAINT c
BUILD_INDEX = "build_index"  # CREATE [UNIQUE] INDEX CONCURRENTLY, outside a transaction
ATTACH = "attach_constraint"  # ALTER TABLE t ADD CONSTRAINT c UNIQUE USING INDEX c
SET_NOT_NULL = "set_not_null"  # ALTER TABLE t ALTER COLUMN x SET NOT NULL, proven by a validated CHECK
DROP_HELPER = "drop_helper"  # ALTER TABLE t DROP CONSTRAINT <helper>
# The table-level lock each step takes on its table, by the documentation (the file's step: its own).
STEP_LOCKS = {VALIDATE: "SHARE UPDATE EXCLUSIVE", BUILD_INDEX: "SHARE UPDATE EXCLUSIVE",
              ATTACH: "ACCESS EXCLUSIVE", SET_NOT_NULL: "ACCESS EXCLUSIVE", DROP_HELPER: "ACCESS EXCLUSIVE"}
# Subcommands that change a column (its existence, name, type, value or nullability).
_COLUMN_SUBCOMMANDS = {"AT_DropColumn", "AT_AlterColumnType", "AT_SetExpression", "AT_DropExpression",
                       "AT_DropNotNull", "AT_SetNotNull", "AT_ColumnDefault", "AT_AddIdentity", "AT_DropIdentity",
                       "AT_SetIdentity"}
MAX_IDENTIFIER = 63


class Declined(Exception):
    """Why a file is run as written."""


def ident(name):
    """A name as SQL, double-quoted when it needs to be."""
    return maybe_double_quote_name(name)


def helper_name(table, column):
    """The name of the helper CHECK (column IS NOT NULL) of a SET NOT NULL: at most 63 bytes, stable."""
    name = "%s_%s_not_null_helper" % (table, column)
    if len(name.encode("utf-8")) <= MAX_IDENTIFIER:
        return name
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:8]
    return "%s_nn_%s" % (name.encode("utf-8")[:MAX_IDENTIFIER - 12].decode("utf-8", "ignore"), digest)


def _enum(enum, value):
    return enum(value).name


def _strings(node):
    """Every string a parse tree holds (names, identifiers, literals), for 'does it name X'."""
    found = set()

    def walk(value):
        if isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, (list, tuple)):
            for item in value:
                walk(item)
        elif isinstance(value, str):
            found.add(value)

    walk(node(skip_none=True))
    return found


def _nodes(node):
    """Every node of a parse tree, depth first (the tree itself first)."""
    stack = [node]
    while stack:
        value = stack.pop()
        if isinstance(value, pg_ast.Node):
            yield value
            stack.extend(getattr(value, attribute) for attribute in value)
        elif isinstance(value, (list, tuple)):
            stack.extend(value)


def _foreign_key_targets(node, default_schema):
    """The tables a parse tree's FOREIGN KEY constraints reference (qualified)."""
    return set(analysis.qualify(value.pktable.schemaname, value.pktable.relname, default_schema)
               for value in _nodes(node)
               if isinstance(value, pg_ast.Constraint) and value.pktable is not None
               and _enum(pg_enums.ConstrType, value.contype) == "CONSTR_FOREIGN")


def _column_refs(node):
    """The column names an expression refers to (the last part of each ColumnRef)."""
    names = set()
    for value in _nodes(node):
        if isinstance(value, pg_ast.ColumnRef):
            parts = [f.sval for f in value.fields if isinstance(f, pg_ast.String)]
            if parts:
                names.add(parts[-1])
    return names


class _Deferred(object):
    """One object whose building moves after the file's transaction: its steps and what it must not lose."""

    def __init__(self, kind, table, name, columns, steps, position, description, unique=False, checks_rows=True):
        self.kind = kind  # check, foreign key, unique, not null, index
        self.table = table  # qualified
        self.name = name
        self.columns = set(columns)
        self.steps = steps
        self.position = position  # (statement index, subcommand index)
        self.description = description
        self.unique = unique
        self.checks_rows = checks_rows
        self.names = set([name])  # what a later statement must not name


def _relation_sql(relation):
    return RawStream()(relation)


def _step(kind, table, sql, obj, description, transaction=True, **extra):
    step = dict(kind=kind, table=table, object=obj, sql=sql, transaction=transaction, description=description,
                lock=STEP_LOCKS.get(kind))
    step.update(extra)
    return step


def _constraint_steps(stmt, cmd, table, default_schema, position):
    """(_Deferred or None, the subcommand as it stays in step 1 or None) for an ADD CONSTRAINT subcommand."""
    constraint = cmd.def_
    contype = _enum(pg_enums.ConstrType, constraint.contype)
    relation = _relation_sql(stmt.relation)
    name = constraint.conname
    if contype not in ("CONSTR_CHECK", "CONSTR_FOREIGN", "CONSTR_UNIQUE", "CONSTR_PRIMARY"):
        return None, cmd
    if contype in ("CONSTR_CHECK", "CONSTR_FOREIGN"):
        if constraint.skip_validation or getattr(constraint, "is_enforced", True) is False:
            return None, cmd  # NOT VALID or NOT ENFORCED as written: nothing is scanned
        if not name:
            raise Declined("an unnamed %s constraint on %s: its validation must name it; name the constraint"
                           % ("CHECK" if contype == "CONSTR_CHECK" else "FOREIGN KEY", table))
        if constraint.deferrable or constraint.initdeferred:
            raise Declined("constraint %s is DEFERRABLE, which the rewrite does not reproduce" % name)
        lock = "SHARE UPDATE EXCLUSIVE on %s" % table
        if contype == "CONSTR_FOREIGN":
            referenced = analysis.qualify(constraint.pktable.schemaname, constraint.pktable.relname, default_schema)
            lock += ", ROW SHARE on %s" % referenced
            columns = [c.sval for c in constraint.fk_attrs or ()]
            kind = "foreign key"
        else:
            columns = _column_refs(constraint.raw_expr)
            kind = "check"
        validate = _step(VALIDATE, table, "ALTER TABLE %s VALIDATE CONSTRAINT %s" % (relation, ident(name)), name,
                         "validate %s %s under %s" % (kind.upper() if kind == "check" else "FOREIGN KEY", name, lock))
        return _Deferred(kind, table, name, columns, [validate], position,
                         "%s %s added NOT VALID, validated after the file's transaction" % (kind, name)), cmd
    if contype == "CONSTR_PRIMARY":
        raise Declined("ADD PRIMARY KEY on %s: PRIMARY KEY USING INDEX sets its columns NOT NULL under ACCESS "
                       "EXCLUSIVE, scanning the table unless they are NOT NULL already, which the file does not say; "
                       "add the columns' NOT NULL first (SET NOT NULL is rewritten) or run the file as written"
                       % table)
    # UNIQUE
    if not name:
        raise Declined("an unnamed UNIQUE constraint on %s: the index built for it must carry its name; name the "
                       "constraint" % table)
    if constraint.indexname:
        return None, cmd  # UNIQUE USING INDEX as written: a catalog change already
    unsupported = [label for label, present in (
        ("DEFERRABLE", constraint.deferrable or constraint.initdeferred),
        ("INCLUDE", constraint.including), ("index parameters (WITH)", constraint.options),
        ("USING INDEX TABLESPACE", constraint.indexspace),
        ("WITHOUT OVERLAPS", getattr(constraint, "without_overlaps", False))) if present]
    if unsupported:
        raise Declined("UNIQUE constraint %s has %s, which the rewrite does not reproduce exactly"
                       % (name, " and ".join(unsupported)))
    columns = [c.sval for c in constraint.keys]
    nulls = " NULLS NOT DISTINCT" if constraint.nulls_not_distinct else ""
    schema = stmt.relation.schemaname
    build = _step(BUILD_INDEX, table, "CREATE UNIQUE INDEX CONCURRENTLY %s ON %s (%s)%s" % (
        ident(name), relation, ", ".join(ident(c) for c in columns), nulls), name,
        "build the unique index %s CONCURRENTLY (SHARE UPDATE EXCLUSIVE on %s)" % (name, table),
        transaction=False, index=name, schema=schema)
    attach = _step(ATTACH, table, "ALTER TABLE %s ADD CONSTRAINT %s UNIQUE USING INDEX %s" % (
        relation, ident(name), ident(name)), name,
        "make the index %s constraint %s (a catalog change; ACCESS EXCLUSIVE on %s without a scan)"
        % (name, name, table))
    return _Deferred("unique", table, name, columns, [build, attach], position,
                     "UNIQUE %s built as a unique index CONCURRENTLY, then attached" % name, unique=True), None


def _not_null_steps(stmt, cmd, table, position):
    column = cmd.name
    relation = _relation_sql(stmt.relation)
    helper = helper_name(stmt.relation.relname, column)
    add = "ALTER TABLE %s ADD CONSTRAINT %s CHECK (%s IS NOT NULL) NOT VALID" % (
        relation, ident(helper), ident(column))
    steps = [
        _step(VALIDATE, table, "ALTER TABLE %s VALIDATE CONSTRAINT %s" % (relation, ident(helper)), helper,
              "validate the helper CHECK (%s IS NOT NULL) under SHARE UPDATE EXCLUSIVE on %s" % (column, table),
              helper=helper, helper_add=add),
        _step(SET_NOT_NULL, table, "ALTER TABLE %s ALTER COLUMN %s SET NOT NULL" % (relation, ident(column)), column,
              "set %s NOT NULL: the validated CHECK proves it, no scan" % column, helper=helper),
        _step(DROP_HELPER, table, "ALTER TABLE %s DROP CONSTRAINT %s" % (relation, ident(helper)), helper,
              "drop the helper CHECK %s" % helper, helper=helper),
    ]
    deferred = _Deferred("not null", table, column, [column], steps, position,
                         "SET NOT NULL on %s proven by a validated helper CHECK %s" % (column, helper))
    deferred.names = set([helper])
    return deferred, add


def _tokens(text):
    """pglast's scanner tokens of a statement's text, or Declined when they do not line up with the text."""
    tokens = pglast.parser.scan(text)
    if len(text.encode("utf-8")) != len(text):
        raise Declined("the statement holds non-ASCII text, whose positions the rewrite does not map exactly")
    return tokens


def _split_alter(text, stmt, offset):
    """(prefix, [subcommand text]) of an ALTER TABLE's original text: ``ALTER TABLE name `` and each subcommand as
    written (split at the commas outside parentheses), so that untouched subcommands and constraint expressions keep
    their text (a deparsed TRIM(key) would be stored as btrim(key), another catalog)."""
    tokens = _tokens(text)
    where = stmt.relation.location - offset
    index = next(i for i, token in enumerate(tokens) if token.start >= where)
    index += 1
    while index + 1 < len(tokens) and tokens[index].name == "ASCII_46":  # schema.name
        index += 2
    if index < len(tokens) and tokens[index].name == "ASCII_42":  # name *
        index += 1
    start = tokens[index].start
    pieces, depth, begin = [], 0, start
    for token in tokens[index:]:
        if token.name in ("ASCII_40", "ASCII_91"):
            depth += 1
        elif token.name in ("ASCII_41", "ASCII_93"):
            depth -= 1
        elif token.name == "ASCII_44" and depth == 0:
            pieces.append(text[begin:token.start].strip())
            begin = token.end + 1
    pieces.append(text[begin:tokens[-1].end + 1].strip())
    if len(pieces) != len(stmt.cmds or ()):
        raise Declined("the ALTER TABLE at %s could not be split into its %d subcommands as written"
                       % (stmt.relation.relname, len(stmt.cmds or ())))
    return text[:start], pieces


def _concurrent_text(text):
    """CREATE [UNIQUE] INDEX ... as written, with CONCURRENTLY after INDEX."""
    token = next(token for token in _tokens(text) if token.name == "INDEX")
    return "%s CONCURRENTLY%s" % (text[:token.end + 1], text[token.end + 1:])


def _index_steps(stmt, table, position, text):
    if not stmt.idxname:
        return None  # an unnamed index cannot be found again to clean up a failed build: left as written
    stmt.concurrent = True
    columns = set()
    for element in stmt.indexParams or ():
        if element.name:
            columns.add(element.name)
        if element.expr is not None:
            columns |= _column_refs(element.expr)
    if stmt.whereClause is not None:
        columns |= _column_refs(stmt.whereClause)
    name = stmt.idxname
    build = _step(BUILD_INDEX, table, _concurrent_text(text.strip()), name,
                  "build the %sindex %s CONCURRENTLY (SHARE UPDATE EXCLUSIVE on %s)"
                  % ("unique " if stmt.unique else "", name, table),
                  transaction=False, index=name, schema=stmt.relation.schemaname)
    return _Deferred("index", table, name, columns, [build], position,
                     "index %s built CONCURRENTLY after the file's transaction" % name, unique=bool(stmt.unique),
                     checks_rows=bool(stmt.unique))


def _conflict(deferred, later, later_info, line, default_schema):
    """Why ``later`` (a parse tree after the deferred object) must see it, or None."""
    stmt = later
    strings = _strings(stmt)
    if type(stmt).__name__ == "DoStmt":  # its body is one string: look inside it
        strings = set(name for name in deferred.names if any(name in text for text in strings))
    if deferred.names & strings:
        return "the statement at line %d names %s" % (line, ", ".join(sorted(deferred.names)))
    if deferred.unique and deferred.table in _foreign_key_targets(stmt, default_schema):
        return ("the statement at line %d adds a foreign key referencing %s, which may need the unique %s"
                % (line, deferred.table, deferred.name))
    kind = type(stmt).__name__
    relation = getattr(stmt, "relation", None)
    target = (analysis.qualify(relation.schemaname, relation.relname, default_schema)
              if isinstance(relation, pg_ast.RangeVar) else None)
    if kind == "AlterTableStmt" and target == deferred.table:
        for cmd in stmt.cmds or ():
            subtype = _enum(pg_enums.AlterTableType, cmd.subtype)
            if subtype in _COLUMN_SUBCOMMANDS and (cmd.name in deferred.columns or not deferred.columns):
                return "the statement at line %d changes column %s of %s, which %s covers" % (
                    line, cmd.name, deferred.table, deferred.name)
    if kind == "RenameStmt" and target == deferred.table:
        return "the statement at line %d renames %s or its columns" % (line, deferred.table)
    change = later_info.get("tables", {}).get(deferred.table, {})
    does = set(change.get("does", ()))
    if does & {"drop", "rename", "create"}:
        return "the statement at line %d %s %s" % (line, "drops, renames or creates", deferred.table)
    if deferred.checks_rows and does & {"write", "delete"}:
        return ("the statement at line %d writes rows of %s, which %s would check at once as written"
                % (line, deferred.table, deferred.name))
    return None


def plan(body, default_schema="public", user_functions=()):
    """The online-equivalent steps of a migration file: a list of step dicts, or raise Declined(reason).

    Each step: ``kind`` (FILE, VALIDATE, BUILD_INDEX, ATTACH, SET_NOT_NULL, DROP_HELPER), ``sql``,
    ``transaction`` (False: CONCURRENTLY, outside a transaction), ``table``, ``object``, ``description``,
    ``lock`` (the lock it takes on its table), ``line`` (a deferred step's: of the statement it comes from);
    BUILD_INDEX also ``index`` and ``schema`` (to drop the INVALID leftover of a failed build), the steps of a
    SET NOT NULL ``helper`` (the helper CHECK's name; its validation also ``helper_add``, the statement the FILE
    step adds it with). The FILE step comes first; it is missing when nothing of the file stays in it.
    ``user_functions``: the functions that are not PostgreSQL's own (a call of one may change any table, see
    ``analysis``).
    """
    try:
        parsed = pglast.parse_sql(body)
    except pglast.parser.ParseError as error:
        raise Declined("the file does not parse: %s" % error) from error
    if not parsed:
        raise Declined("the file has no statement")
    info = analysis.analyse_sql(body, default_schema, user_functions)
    unknown = [item for item in info if item["unknown"]]
    if unknown:
        raise Declined("the statement at line %d has an effect this analysis cannot read (%s), so moving a step "
                       "after it cannot be shown safe" % (unknown[0]["line"], unknown[0]["unknown"]))
    from ansible_collections.tmi.migration.plugins.module_utils import migrations as files
    if files.needs_autocommit(body):
        raise Declined("the file already runs outside a transaction (CONCURRENTLY, VACUUM ...), statement by "
                       "statement")
    if files.is_index_only(body):
        raise Declined("the file only builds indexes: online_index_builds builds it CONCURRENTLY")
    created = set()
    deferred = []
    kept = []  # (text of the statement in step 1 or None, is it the original text)
    for index, raw in enumerate(parsed):
        stmt = raw.stmt
        start = raw.stmt_location or 0
        length = raw.stmt_len or (len(body) - start)
        original = body[start:start + length]
        line = info[index]["line"]
        for item in info[index]["creates"].get("tables", []):
            created.add(item["table"])
        kind = type(stmt).__name__
        if kind == "IndexStmt":
            table = analysis.qualify(stmt.relation.schemaname, stmt.relation.relname, default_schema)
            found = (None if table in created or not stmt.relation.inh
                     else _index_steps(stmt, table, (index, 0), original))
            if found is not None:
                found.line = line
                deferred.append(found)
                kept.append(None)
                continue
        elif kind == "AlterTableStmt" and _enum(pg_enums.ObjectType, stmt.objtype) == "OBJECT_TABLE":
            table = analysis.qualify(stmt.relation.schemaname, stmt.relation.relname, default_schema)
            if table not in created:
                remaining, texts, extra, changed = [], [], [], False
                prefix, pieces = _split_alter(original, stmt, start)
                for position, cmd in enumerate(stmt.cmds or ()):
                    subtype = _enum(pg_enums.AlterTableType, cmd.subtype)
                    found = None
                    if subtype == "AT_AddConstraint" and isinstance(cmd.def_, pg_ast.Constraint):
                        found, stays = _constraint_steps(stmt, cmd, table, default_schema, (index, position))
                    elif subtype == "AT_SetNotNull":
                        found, helper_add = _not_null_steps(stmt, cmd, table, (index, position))
                        stays = None
                        extra.append(helper_add)
                    else:
                        stays = cmd
                    if found is not None:
                        if stmt.missing_ok or not stmt.relation.inh:
                            raise Declined("ALTER TABLE %s%s on %s: the deferred steps would act %s" % (
                                "IF EXISTS" if stmt.missing_ok else "ONLY", "", table,
                                "on a table that may not exist" if stmt.missing_ok else "on its children too"))
                        found.line = line
                        deferred.append(found)
                        changed = True
                    if stays is not None:
                        remaining.append(stays)
                        # A CHECK or FOREIGN KEY that stays and is deferred gets NOT VALID after its original text.
                        texts.append(pieces[position] + (" NOT VALID" if found is not None else ""))
                if changed:
                    stmt.cmds = tuple(remaining)
                    statements = ([prefix + ", ".join(texts)] if texts else []) + extra
                    kept.append(";\n".join(statements))
                    continue
        kept.append(original.strip())
    if not deferred:
        raise Declined("nothing in the file blocks writers in a way a rewrite avoids")
    _check_order(parsed, info, deferred, default_schema)
    file_sql = ";\n".join(text for text in kept if text)
    steps = []
    if file_sql.strip():
        steps.append(_step(FILE, None, file_sql + ";\n", None,
                           "the file's statements in one transaction: %s" % "; ".join(
                               d.description for d in deferred if d.kind != "index" and d.kind != "unique")
                           if any(d.kind not in ("index", "unique") for d in deferred) else
                           "the file's other statements in one transaction"))
    for item in deferred:
        for step in item.steps:
            step["line"] = item.line  # of the statement it comes from
        steps.extend(item.steps)
    for number, step in enumerate(steps, 1):
        step["step"] = number
    return steps


def _check_order(parsed, info, deferred, default_schema):
    """Declined when a statement after a deferred object depends on it (see the module's docstring)."""
    for item in deferred:
        index = item.position[0]
        for later in range(index + 1, len(parsed)):
            reason = _conflict(item, parsed[later].stmt, info[later], info[later]["line"], default_schema)
            if reason:
                raise Declined("%s; moving %s after the file's transaction could change what it does"
                               % (reason, item.name))
        _same_statement(item, parsed[index].stmt, default_schema)


def _same_statement(item, stmt, default_schema):
    """Declined when the subcommands that stay in step 1 beside a deferred one (the ALTER TABLE it came from, already
    filtered) change its columns or reference its table with a foreign key."""
    if type(stmt).__name__ != "AlterTableStmt":
        return
    for cmd in stmt.cmds or ():
        subtype = _enum(pg_enums.AlterTableType, cmd.subtype)
        if subtype in _COLUMN_SUBCOMMANDS and cmd.name in item.columns and subtype != "AT_SetNotNull":
            raise Declined("the same ALTER TABLE changes column %s of %s, which %s covers" % (
                cmd.name, item.table, item.name))
        if item.unique and isinstance(cmd.def_, pg_ast.Constraint) and \
                item.table in _foreign_key_targets(cmd.def_, default_schema):
            raise Declined("the same ALTER TABLE adds a foreign key referencing %s, which may need the unique %s"
                           % (item.table, item.name))


def describe(steps):
    """One line per step, for reports."""
    return ["%d. %s" % (step["step"], step["description"]) for step in steps]
