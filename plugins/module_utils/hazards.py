# -*- coding: utf-8 -*-
# Copyright: (c) 2026, tmi.migration maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the planned files would break in the catalog around the tables they drop or alter.

A migration file can succeed and still break the database for everyone after it, or fail
half-way for a reason the catalog shows before it runs:

* a file that drops the index a table uses as its replica identity (``REPLICA IDENTITY USING
  INDEX``, or the primary key under ``DEFAULT`` on a published table) leaves the table without
  one: while the table is in a publication, every later UPDATE and DELETE on it fails;
* a file that retypes or drops a column a view or materialized view uses fails (``cannot alter
  type of a column used by a view or rule``), or with CASCADE drops the view with it;
* a table in a publication whose columns change needs the same change on the subscribers.

``read_catalog`` reads those facts (the SQL is here); ``find`` is pure: catalog rows plus the
analysis of the files (module_utils/analysis.py) in, findings out, unit-tested over a table of
cases. A finding is {version, title, direction, line, table, kind, object, severity, message}.
Severity ``error`` is what the migration must not start with; ``warning`` is reported.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

_USER_SCHEMAS = "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%%'"
PUBLICATIONS_SQL = (
    "SELECT pt.schemaname || '.' || pt.tablename, p.pubname::text, p.pubupdate, p.pubdelete "
    "FROM pg_publication_tables pt JOIN pg_publication p ON p.pubname = pt.pubname")
IDENTITIES_SQL = (
    "SELECT n.nspname || '.' || c.relname, c.relreplident::text FROM pg_class c "
    "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p') AND " + _USER_SCHEMAS)
INDEXES_SQL = (
    "SELECT ni.nspname || '.' || ic.relname, n.nspname || '.' || c.relname, i.indisreplident, i.indisprimary, "
    "ARRAY(SELECT a.attname::text FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum = ANY(i.indkey) "
    "ORDER BY a.attnum), con.conname::text "
    "FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_namespace ni ON ni.oid = ic.relnamespace "
    "JOIN pg_class c ON c.oid = i.indrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
    "LEFT JOIN pg_constraint con ON con.conindid = i.indexrelid AND con.conrelid = c.oid "
    "AND con.contype IN ('p', 'u', 'x') WHERE " + _USER_SCHEMAS)
# Views and materialized views by the columns of other relations their rules read.
VIEWS_SQL = (
    "SELECT DISTINCT vn.nspname || '.' || v.relname, v.relkind::text, n.nspname || '.' || c.relname, "
    "a.attname::text FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid "
    "JOIN pg_class v ON v.oid = r.ev_class JOIN pg_namespace vn ON vn.oid = v.relnamespace "
    "JOIN pg_class c ON c.oid = d.refobjid JOIN pg_namespace n ON n.oid = c.relnamespace "
    "JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid "
    "WHERE d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass AND d.deptype = 'n' "
    "AND d.refobjsubid > 0 AND v.oid <> c.oid AND v.relkind IN ('v', 'm') AND " + _USER_SCHEMAS)
_IDENTITY_NAMES = {"d": "default", "f": "full", "n": "nothing", "i": "index"}
_VIEW_KINDS = {"v": "view", "m": "materialized view"}


def read_catalog(execute):
    """The catalog facts ``find`` needs; ``execute(sql)`` returns rows."""
    publications = {}
    for table, name, update, delete in execute(PUBLICATIONS_SQL):
        publications.setdefault(table, []).append(dict(name=name, update=bool(update), delete=bool(delete)))
    indexes = dict((row[0], dict(table=row[1], replident=bool(row[2]), primary=bool(row[3]), columns=list(row[4]),
                                 constraint=row[5])) for row in execute(INDEXES_SQL))
    return dict(publications=publications,
                identities=dict((table, _IDENTITY_NAMES.get(mode, mode)) for table, mode in execute(IDENTITIES_SQL)),
                indexes=indexes,
                views=[dict(view=row[0], kind=_VIEW_KINDS.get(row[1], row[1]), table=row[2], column=row[3])
                       for row in execute(VIEWS_SQL)])


def reverse_steps(steps):
    """The files of the same versions the other way, in the order a move back would run them."""
    return [(migration, "down" if direction == "up" else "up") for migration, direction, _after in reversed(steps)
            if migration.path("down" if direction == "up" else "up")]


class _Tables(object):
    """The replica identity of each table as the files change it, starting from the catalog."""

    def __init__(self, catalog):
        self.catalog = catalog
        self.identity = dict(catalog.get("identities", {}))
        self.identity_index = {}
        for name, index in catalog.get("indexes", {}).items():
            if index["replident"]:
                self.identity_index[index["table"]] = name
        self.primary = dict((index["table"], name) for name, index in catalog.get("indexes", {}).items()
                            if index["primary"])
        self.gone_indexes = set()
        self.gone_tables = set()
        self.gone_views = set()

    def publications(self, table):
        return self.catalog.get("publications", {}).get(table, [])

    def identity_of(self, table):
        """(how the table is identified, the index that does it) - None when nothing can be lost."""
        mode = self.identity.get(table)
        if mode == "index":
            index = self.identity_index.get(table)
        elif mode == "default":
            index = self.primary.get(table)
        else:
            return mode, None
        return mode, (index if index not in self.gone_indexes else None)

    def views_of(self, table, column=None):
        """The views (once each) that use the table, or one column of it, and no earlier statement dropped."""
        seen, found = set(), []
        for view in self.catalog.get("views", []):
            if (view["table"] == table and (column is None or view["column"] == column)
                    and view["view"] not in self.gone_views and view["view"] not in seen):
                seen.add(view["view"])
                found.append(view)
        return found


def _label(migration, line):
    return "Migration %06d %s (%s, line %s)" % (
        migration["version"], migration["title"], migration["direction"], line)


def _finding(migration, line, kind, severity, table, obj, message):
    return dict(version=migration["version"], title=migration["title"], direction=migration["direction"],
                line=line, table=table, kind=kind, object=obj, severity=severity, message=message)


def _publication_names(publications):
    return ", ".join(p["name"] for p in publications)


def _identity_lost(tables, migration, line, table, mode, index, how):
    publications = tables.publications(table)
    breaking = [p for p in publications if p["update"] or p["delete"]]
    if mode == "default" and not breaking:
        return None  # an unpublished table's primary key is an ordinary schema change
    if breaking:
        consequence = ("every UPDATE and DELETE on it fails from then on, as it is in publication %s (\"cannot "
                       "update table ... because it does not have a replica identity and publishes updates\")"
                       % _publication_names(breaking))
    else:
        consequence = ("logical replication of it stops working, and every UPDATE and DELETE on it fails as soon as "
                       "a publication includes it")
    if mode == "index":
        what = "REPLICA IDENTITY USING INDEX %s" % index
        remedy = ("Run ALTER TABLE %s REPLICA IDENTITY DEFAULT (or USING INDEX an index the files keep) before the "
                  "migration, or make the file set another replica identity before it drops the index" % table)
    else:
        what = "REPLICA IDENTITY DEFAULT, its primary key %s" % index
        remedy = ("Make the file add another primary key after dropping this one, or give the table another "
                  "replica identity (ALTER TABLE %s REPLICA IDENTITY USING INDEX ... or FULL) first" % table)
    message = "%s %s, the replica identity of %s (%s): afterwards %s has none, so %s. %s." % (
        _label(migration, line), how, table, what, table, consequence, remedy)
    return _finding(migration, line, "replica_identity", "error", table, index, message)


def _column_view_findings(tables, migration, line, table, column, dropped, cascade):
    """Views using a column the statement retypes or drops."""
    findings = []
    for view in tables.views_of(table, column):
        if dropped and cascade:
            tables.gone_views.add(view["view"])
            message = "%s drops column %s.%s with CASCADE, which drops %s %s with it: recreate it afterwards." % (
                _label(migration, line), table, column, view["kind"], view["view"])
            findings.append(_finding(migration, line, "view", "warning", table, view["view"], message))
            continue
        if dropped:
            failure = "cannot drop column %s of table %s because other objects depend on it" % (column, table)
            change = "drops column %s.%s" % (table, column)
        else:
            failure = "cannot alter type of a column used by a view or rule"
            change = "changes the type of column %s.%s" % (table, column)
        message = ("%s %s, which %s %s uses: PostgreSQL refuses it (\"%s\") and the migration would fail part-way. "
                   "Drop %s before the migration and recreate it afterwards (or make the file drop and recreate it "
                   "around the change)." % (_label(migration, line), change, view["kind"], view["view"], failure,
                                            view["view"]))
        findings.append(_finding(migration, line, "view", "error", table, view["view"], message))
    return findings


def _table_view_findings(tables, migration, line, table, cascade):
    """Views using a table the statement drops."""
    findings = []
    for view in tables.views_of(table):
        if cascade:
            tables.gone_views.add(view["view"])
            message = "%s drops %s with CASCADE, which drops %s %s with it." % (
                _label(migration, line), table, view["kind"], view["view"])
            findings.append(_finding(migration, line, "view", "warning", table, view["view"], message))
        else:
            message = ("%s drops %s, which %s %s uses: PostgreSQL refuses it (\"cannot drop table %s because other "
                       "objects depend on it\") and the migration would fail part-way. Drop %s first (or make the "
                       "file drop it)." % (_label(migration, line), table, view["kind"], view["view"], table,
                                           view["view"]))
            findings.append(_finding(migration, line, "view", "error", table, view["view"], message))
    return findings


def _identity_set(tables, migration, line, table, identity):
    before = tables.identity.get(table, "default")
    tables.identity[table] = identity["identity"]
    if identity["index"]:
        tables.identity_index[table] = identity["index"]
    published = tables.publications(table)
    message = "%s sets the replica identity of %s to %s (it was %s)%s." % (
        _label(migration, line), table,
        "USING INDEX %s" % identity["index"] if identity["index"] else identity["identity"].upper(), before.upper(),
        (": it is in publication %s, whose subscribers then identify its rows differently"
         % _publication_names(published)) if published else "")
    return _finding(migration, line, "replica_identity", "warning", table, identity["index"], message)


def _table_findings(tables, migration, statement, table, entry, pending):
    """Findings of one statement's effect on one table; replica identities it drops go to ``pending``."""
    findings = []
    line = statement["line"]
    if table in tables.gone_tables:
        return findings
    for column in entry.get("retyped", []):
        findings.extend(_column_view_findings(tables, migration, line, table, column, False, False))
    mode, index = tables.identity_of(table)
    for column in entry.get("dropped", []):
        findings.extend(_column_view_findings(tables, migration, line, table, column, True,
                                              column in entry.get("dropped_cascade", [])))
        if index and column in tables.catalog["indexes"][index]["columns"]:
            tables.gone_indexes.add(index)
            pending[table] = (line, mode, index, "drops column %s (and with it index %s)" % (column, index))
    if "drop" in entry["does"]:
        findings.extend(_table_view_findings(tables, migration, line, table, entry.get("drop_cascade", False)))
        tables.gone_tables.add(table)
        pending.pop(table, None)
    if entry.get("replica_identity"):
        findings.append(_identity_set(tables, migration, line, table, entry["replica_identity"]))
        pending.pop(table, None)
    if entry.get("adds_primary_key") and pending.get(table, (None, None))[1] == "default":
        pending.pop(table)
    return findings


def _publication_finding(tables, migration, table, change, line):
    published = tables.publications(table)
    if not published:
        return None
    names = _publication_names(published)
    if change == "drop":
        message = ("%s drops %s, which is in publication %s: it leaves the publication and the subscribers stop "
                   "receiving its changes." % (_label(migration, line), table, names))
    else:
        message = ("%s changes the columns of %s (%s), which is in publication %s: logical replication does not "
                   "carry schema changes, so the subscribers' table needs the same change (columns added there "
                   "first, dropped there after), or replication stops." % (_label(migration, line), table, change,
                                                                           names))
    return _finding(migration, line, "publication", "warning", table, names, message)


def _note_change(changes, table, entry, line):
    """What the file does to the table's columns, or that it drops it, for the publication warning."""
    if "drop" in entry["does"]:
        changes[table] = ("drop", line)
        return
    verbs = (("added", "adds"), ("dropped", "drops"), ("changed", "changes"))
    what = ["%s column %s" % (verb, column) for key, verb in verbs for column in entry.get(key, [])]
    previous, first = changes.get(table, ("", line))
    if what and previous != "drop":
        changes[table] = ("; ".join(filter(None, [previous, *what])), first)


def _drop_findings(tables, migration, statement, pending):
    """Indexes and constraints the statement drops that a table's replica identity uses."""
    if statement["kind"] == "RenameStmt":  # a renamed index or constraint stays what it was
        return
    dropped = [(name, "drops index %s" % name) for name in statement["drops"].get("indexes", [])]
    for constraint in statement["drops"].get("constraints", []):
        for name, index in tables.catalog.get("indexes", {}).items():
            if index["table"] == constraint["table"] and index["constraint"] == constraint["name"]:
                dropped.append((name, "drops constraint %s (index %s)" % (constraint["name"], name)))
    for name, how in dropped:
        index = tables.catalog.get("indexes", {}).get(name)
        if index is None or index["table"] in tables.gone_tables:
            continue
        mode, identity_index = tables.identity_of(index["table"])
        tables.gone_indexes.add(name)
        if identity_index == name:
            pending[index["table"]] = (statement["line"], mode, name, how)


def find(files, catalog, planned=True):
    """Findings of the files (analysis_plan's ``files``, in the order they run) against the catalog."""
    tables = _Tables(catalog)
    findings = []
    for migration in files:
        found = []
        pending = {}  # replica identities the file drops and does not replace before it ends
        changes = {}
        for statement in migration["statements"]:
            for name in statement["drops"].get("views", []):
                tables.gone_views.add(name)
            _drop_findings(tables, migration, statement, pending)
            for table, entry in sorted(statement["tables"].items()):
                found.extend(_table_findings(tables, migration, statement, table, entry, pending))
                _note_change(changes, table, entry, statement["line"])
        for table, (line, mode, index, how) in sorted(pending.items()):
            found.append(_identity_lost(tables, migration, line, table, mode, index, how))
        for table, (change, line) in sorted(changes.items()):
            found.append(_publication_finding(tables, migration, table, change, line))
        findings.extend(sorted((f for f in found if f), key=lambda f: f["line"]))
    for finding in findings:
        finding["planned"] = planned
    return findings


def errors(findings):
    return [f for f in findings if f["severity"] == "error" and f.get("planned", True)]
