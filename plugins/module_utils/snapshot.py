# -*- coding: utf-8 -*-
# Copyright: (c) 2026, tmi.migration maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Data snapshots: per-table row count and an order-independent content checksum, and their comparison.

Written here because no library computes them: the checksum is the sum, as an exact
numeric, of the first 64 bits of md5(row text) over every row of a table. A sum does
not depend on row order (so it equals across a dump and restore, or a VACUUM FULL), and
any change of any column of any row changes it. It is computed by the server in one
sequential pass per table, the same SQL everywhere it is used (backup, restore
verification, integrity checks), so the figures are comparable.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

try:
    from psycopg2 import sql
except ImportError:  # the modules report the missing library
    sql = None

USER_TABLES_SQL = (
    "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
    "AND n.nspname NOT LIKE 'pg_toast%%' AND n.nspname NOT LIKE 'pg_temp%%' ORDER BY 1, 2")


def user_tables(cursor):
    """[(schema, table)] of every ordinary table outside the system schemas."""
    cursor.execute(USER_TABLES_SQL)
    return [(row[0], row[1]) for row in cursor.fetchall()]


# The select list of a table's figures over the alias t (also written out by benchmarks/validation.py).
FIGURES_COLUMNS = "count(*), coalesce(sum(('x' || substr(md5(t::text), 1, 16))::bit(64)::bigint::numeric), 0)::text"
# The sum of the same 64-bit hashes over an expression {} (a ROW of some columns).
_SUM_OF_HASHES = "coalesce(sum(('x' || substr(md5({}::text), 1, 16))::bit(64)::bigint::numeric), 0)::text"


def table_columns(cursor, schema, table):
    """The table's columns in their order (attnum)."""
    cursor.execute("SELECT a.attname::text FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
                   "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s "
                   "AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum", (schema, table))
    return [row[0] for row in cursor.fetchall()]


def table_figures(cursor, schema, table, columns=None):
    """One table's figures (see ``figure``), over the given columns only if any.

    A migration that adds, drops or retypes columns still has to keep the other columns of every
    row as they were: their figures are compared over exactly those columns. The whole rows'
    checksum is taken in the same pass (``row_checksum``), for comparisons with a backup.
    """
    if columns is None:
        select = sql.SQL(FIGURES_COLUMNS)
    else:
        listed = sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(c)) for c in columns)
        row = sql.SQL("ROW({})").format(listed)
        select = sql.SQL(", ").join([sql.SQL(FIGURES_COLUMNS), sql.SQL(_SUM_OF_HASHES).format(row)])
    cursor.execute(sql.SQL("SELECT {} FROM {}.{} AS t").format(select, sql.Identifier(schema), sql.Identifier(table)))
    found = cursor.fetchone()
    if columns is None:
        return figure(int(found[0]), found[1])
    return figure(int(found[0]), found[2], columns, row_checksum=found[1])


def figure(rows, checksum, columns=None, row_checksum=None):
    """One table's entry in a snapshot: ``rows`` and ``checksum``; for figures over some columns only,
    also ``columns`` and the whole rows' ``row_checksum``."""
    entry = {"rows": rows, "checksum": checksum}
    if columns is not None:
        entry.update(columns=list(columns), row_checksum=row_checksum)
    return entry


def whole_rows(entry):
    """(rows, checksum of the whole rows) of a snapshot entry, projected or not."""
    return entry["rows"], entry.get("row_checksum") or entry["checksum"]


def take(cursor, tables=None, columns=None):
    """{'schema.table': {'rows': n, 'checksum': '...'}} for the given or all user tables
    (``columns``: {'schema.table': [column, ...]} for tables figured over some columns only)."""
    columns = columns or {}
    figures = {}
    for schema, table in (tables if tables is not None else user_tables(cursor)):
        name = "%s.%s" % (schema, table)
        figures[name] = table_figures(cursor, schema, table, columns.get(name))
    return figures


def compare(expected, actual, ignore=()):
    """Differences between two snapshots: [{'table', 'problem', 'expected', 'actual'}], empty when equal."""
    differences = []
    for name in sorted(set(expected) | set(actual)):
        if name in ignore:
            continue
        want, have = expected.get(name), actual.get(name)
        if want is None:
            differences.append(dict(table=name, problem="unexpected table", expected=None, actual=have))
        elif have is None:
            differences.append(dict(table=name, problem="missing table", expected=want, actual=None))
        elif want["rows"] != have["rows"]:
            differences.append(dict(table=name, problem="row count differs", expected=want, actual=have))
        elif want["checksum"] != have["checksum"]:
            differences.append(dict(table=name, problem="content differs", expected=want, actual=have))
    return differences


def describe(differences, limit=10):
    """One line per difference, for error messages."""
    lines = []
    for diff in differences[:limit]:
        if diff["problem"] == "row count differs":
            lines.append("%s: %d rows expected, %d found" % (diff["table"], diff["expected"]["rows"],
                                                             diff["actual"]["rows"]))
        else:
            lines.append("%s: %s" % (diff["table"], diff["problem"]))
    if len(differences) > limit:
        lines.append("... and %d more" % (len(differences) - limit))
    return "; ".join(lines)
