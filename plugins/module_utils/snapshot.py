# -*- coding: utf-8 -*-
# Copyright: (c) 2026, tmi.migration maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Data snapshots: per-table row count and an order-independent content checksum, and their comparison.

Written here because no library computes them. A table's checksum is the sum, as an exact
numeric, of one 64-bit hash per row. A sum does not depend on row order (so it equals across a
dump and restore, or a VACUUM FULL), and any change of any column of any row changes it. It is
computed by the server in one sequential pass per table, the same SQL everywhere it is used
(backup, restore verification, rehearsal, integrity checks, rollback guards).

Each figure names the algorithm of its hash (``algorithm``), and two figures are compared only
when it is the same; a figure is always computed with the algorithm of the figure it will be
compared with (``like``), so a backup made by an older version still verifies:

* ``hash64`` (PostgreSQL 14+, the default): ``hash_record_extended`` over the row, mixed once more by
  ``hashint8extended`` (the record hash is linear in its columns' hashes: summed alone, it would not see
  values swapped between two rows), where each
  column whose type's own extended hash tells apart every two values that differ (integers,
  booleans, text and varchar of a deterministic collation, bytea, uuid, dates and times, network
  addresses) is hashed by it, and every other column by the hash of its text
  (``hashtextextended``): numeric, floats, jsonb and interval hash equal values alike (1.0 and
  1.00, 0 and -0, '1 day' and '24 hours'), arrays hash their elements but not their dimensions or
  bounds, enums hash their OIDs (not the same after a restore), json has no hash. About three to
  six times cheaper than md5 of the row's text.
* ``md5`` (every server; the figures of backups made by earlier versions, which name no algorithm):
  the first 64 bits of md5 of the row's text.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

try:
    from psycopg2 import sql
except ImportError:  # the modules report the missing library
    sql = None

HASH64 = "hash64"
MD5 = "md5"
ALGORITHMS = (HASH64, MD5)

USER_TABLES_SQL = (
    "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
    "AND n.nspname NOT LIKE 'pg_toast%%' AND n.nspname NOT LIKE 'pg_temp%%' ORDER BY 1, 2")

# Per column of the tables named by two arrays (schemas, tables), in attnum order: schema, table, name, type,
# the domain's base type and the array's element type (each as name, typtype, whether in pg_catalog), and
# whether its collation is deterministic (PostgreSQL 12+).
COLUMN_TYPES_SQL = (
    "SELECT n.nspname::text, c.relname::text, a.attname::text, "
    "ty.typname::text, ty.typtype::text, ty.typnamespace = 'pg_catalog'::regnamespace, "
    "bt.typname::text, bt.typtype::text, bt.typnamespace = 'pg_catalog'::regnamespace, "
    "el.typname::text, el.typtype::text, el.typnamespace = 'pg_catalog'::regnamespace, "
    "coalesce(co.collisdeterministic, true) "
    "FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
    "JOIN pg_type ty ON ty.oid = a.atttypid "
    "LEFT JOIN pg_type bt ON ty.typtype = 'd' AND bt.oid = ty.typbasetype "
    "LEFT JOIN pg_type el ON ty.typcategory = 'A' AND ty.typelem <> 0 AND el.oid = ty.typelem "
    "LEFT JOIN pg_collation co ON co.oid = a.attcollation "
    "WHERE (n.nspname, c.relname) IN (SELECT * FROM unnest(%s::text[], %s::text[])) "
    "AND a.attnum > 0 AND NOT a.attisdropped ORDER BY n.nspname, c.relname, a.attnum")

# Types whose extended hash function is exact: two values hash alike only if they are the same value as
# their text shows it (for the text types: under a deterministic collation, where equal means equal bytes).
EXACT_HASH_TYPES = frozenset(["int2", "int4", "int8", "bool", "text", "varchar", "bytea", "uuid", "date", "time",
                              "timestamp", "timestamptz", "inet", "cidr", "macaddr", "macaddr8"])
COLLATED_TYPES = frozenset(["text", "varchar"])
# How a column enters the row hash.
AS_IS = "as_is"      # its type's own hash
TEXT = "text"        # the hash of col::text
BPCHAR = "bpchar"    # the hash of its output text: bpchar::text drops trailing blanks, which unbounded bpchar keeps
HASH64_SINCE = 140000  # hash_record_extended


class FigureError(Exception):
    """Figures of an algorithm this server cannot compute."""


def user_tables(cursor):
    """[(schema, table)] of every ordinary table outside the system schemas."""
    cursor.execute(USER_TABLES_SQL)
    return [(row[0], row[1]) for row in cursor.fetchall()]


# The select list of a table's md5 figures over the alias t: what a DBA writes by hand (benchmarks/validation.py).
FIGURES_COLUMNS = "count(*), coalesce(sum(('x' || substr(md5(t::text), 1, 16))::bit(64)::bigint::numeric), 0)::text"


def table_columns(cursor, schema, table):
    """The table's columns in their order (attnum)."""
    cursor.execute("SELECT a.attname::text FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
                   "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s "
                   "AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum", (schema, table))
    return [row[0] for row in cursor.fetchall()]


def algorithm_of(entry):
    """The algorithm of a figure; a figure without one was made before figures named theirs: md5."""
    return (entry or {}).get("algorithm") or MD5


def default_algorithm(server_version):
    """The algorithm of new figures on a server of this version (``server_version_num``)."""
    return HASH64 if server_version >= HASH64_SINCE else MD5


def _exact(typ, typtype, in_catalog, deterministic):
    return (typtype == "b" and bool(in_catalog) and typ in EXACT_HASH_TYPES
            and (deterministic or typ not in COLLATED_TYPES))


def hashings(cursor, tables):
    """{(schema, table): column_hashing} of the given tables, in one catalog query."""
    tables = list(tables)
    found = dict((table, []) for table in tables)
    if tables:
        cursor.execute(COLUMN_TYPES_SQL, ([s for s, _t in tables], [t for _s, t in tables]))
        for row in cursor.fetchall():
            found[(row[0], row[1])].append(row[2:])
    return dict((table, column_hashing(rows)) for table, rows in found.items())


def column_hashing(rows):
    """[(column, how)] from COLUMN_TYPES_SQL's rows (less schema and table): how each column enters the hash64
    row hash."""
    plan = []
    for name, typ, typtype, catalog, base, base_typtype, base_catalog, elem, _elem_typtype, _elem_catalog, \
            deterministic in rows:
        if elem is not None:  # an array's hash is its elements' alone: '{{1,2}}', '{1,2}' and '[0:1]={1,2}' alike
            how = TEXT
        else:
            if typtype == "d":  # a domain hashes and casts as its base type (a domain over a domain: as text)
                typ, typtype, catalog = base, base_typtype, base_catalog
            if _exact(typ, typtype, catalog, deterministic):
                how = AS_IS
            elif typtype == "b" and catalog and typ == "bpchar":
                how = BPCHAR
            else:
                how = TEXT
        plan.append((name, how))
    return plan


def _column_hash(column, how):
    value = sql.SQL("t.{}").format(sql.Identifier(column))
    if how == AS_IS:
        return value
    if how == BPCHAR:
        return sql.SQL('hashtextextended(textin(bpcharout({})) COLLATE "C", 0)').format(value)
    return sql.SQL('hashtextextended({}::text COLLATE "C", 0)').format(value)


def sum_of_hashes(algorithm, hashing, columns=None):
    """The select item of a table's checksum (alias t) over ``columns`` (every column when None).
    ``hashing``: ``column_hashing`` of the table (hash64 only)."""
    if algorithm == MD5:
        row = sql.SQL("t") if columns is None else sql.SQL("ROW({})").format(
            sql.SQL(", ").join(sql.SQL("t.{}").format(sql.Identifier(c)) for c in columns))
        return sql.SQL("coalesce(sum(('x' || substr(md5({}::text), 1, 16))::bit(64)::bigint::numeric), 0)::text"
                       ).format(row)
    how = dict(hashing)
    chosen = [name for name, _how in hashing] if columns is None else columns
    # hash_record_extended combines its columns' hashes linearly, so a plain sum of it would not see values
    # swapped between rows; hashing its result once more (a non-linear mix) does.
    return sql.SQL("coalesce(sum(hashint8extended(hash_record_extended(ROW({}), 0), 0)), 0)::text").format(
        sql.SQL(", ").join(_column_hash(c, how[c]) for c in chosen))


def table_figures(cursor, schema, table, columns=None, algorithm=None, hashing=None):
    """One table's figures (see ``figure``) by ``algorithm`` (None: ``default_algorithm``), over the given
    columns only if any (``hashing``: the table's ``column_hashing``, read from the catalog when None).

    A migration that adds, drops or retypes columns still has to keep the other columns of every
    row as they were: their figures are compared over exactly those columns. The whole rows'
    checksum is taken in the same pass (``row_checksum``), for comparisons with a backup.
    """
    version = cursor.connection.server_version
    algorithm = algorithm or default_algorithm(version)
    if algorithm not in ALGORITHMS:
        raise FigureError("%s.%s: figures of the unknown algorithm %r cannot be computed (this version knows %s)"
                          % (schema, table, algorithm, ", ".join(ALGORITHMS)))
    if algorithm == HASH64:
        if version < HASH64_SINCE:
            raise FigureError("%s.%s: the figures to compare with are %s figures, which need PostgreSQL 14 or later; "
                              "this server is %d" % (schema, table, algorithm, version))
        if hashing is None:
            hashing = hashings(cursor, [(schema, table)])[(schema, table)]
    else:
        hashing = []
    items = [sql.SQL("count(*)"), sum_of_hashes(algorithm, hashing)]
    if columns is not None:
        items.append(sum_of_hashes(algorithm, hashing, columns))
    cursor.execute(sql.SQL("SELECT {} FROM {}.{} AS t").format(sql.SQL(", ").join(items), sql.Identifier(schema),
                                                               sql.Identifier(table)))
    found = cursor.fetchone()
    if columns is None:
        return figure(int(found[0]), found[1], algorithm=algorithm)
    return figure(int(found[0]), found[2], columns, row_checksum=found[1], algorithm=algorithm)


def figure(rows, checksum, columns=None, row_checksum=None, algorithm=MD5):
    """One table's entry in a snapshot: ``rows``, ``checksum`` and its ``algorithm``; for figures over some
    columns only, also ``columns`` and the whole rows' ``row_checksum``."""
    entry = {"rows": rows, "checksum": checksum, "algorithm": algorithm}
    if columns is not None:
        entry.update(columns=list(columns), row_checksum=row_checksum)
    return entry


def whole_rows(entry):
    """(rows, algorithm, checksum of the whole rows) of a snapshot entry, projected or not: equal only for the
    same rows figured the same way."""
    return entry["rows"], algorithm_of(entry), entry.get("row_checksum") or entry["checksum"]


def same_content(before, now):
    """Whether two figures show the same rows (of the same columns); None when their algorithms differ and
    nothing can be told."""
    if algorithm_of(before) != algorithm_of(now):
        return None
    return (before["rows"], before["checksum"]) == (now["rows"], now["checksum"])


def incomparable(table, before, now):
    """The message for two figures of one table computed by different algorithms."""
    return ("%s: its figures were computed by different algorithms (%s and %s) and cannot be compared; figures "
            "are computed with the algorithm of those they are compared with, so one of them comes from elsewhere"
            % (table, algorithm_of(before), algorithm_of(now)))


def take(cursor, tables=None, columns=None, like=None):
    """{'schema.table': {'rows': n, 'checksum': '...', 'algorithm': '...'}} for the given or all user tables
    (``columns``: {'schema.table': [column, ...]} for tables figured over some columns only; ``like``: figures
    these will be compared with, whose algorithm each table's figures then use)."""
    columns, like = columns or {}, like or {}
    tables = tables if tables is not None else user_tables(cursor)
    hashing = hashings(cursor, tables) if cursor.connection.server_version >= HASH64_SINCE else {}
    figures = {}
    for schema, table in tables:
        name = "%s.%s" % (schema, table)
        algorithm = algorithm_of(like[name]) if name in like else None
        figures[name] = table_figures(cursor, schema, table, columns.get(name), algorithm, hashing.get((schema, table)))
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
        elif same_content(want, have) is None:
            differences.append(dict(table=name, problem="figures of different algorithms (%s and %s)" % (
                algorithm_of(want), algorithm_of(have)), expected=want, actual=have))
        elif not same_content(want, have):
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
