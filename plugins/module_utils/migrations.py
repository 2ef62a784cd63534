# -*- coding: utf-8 -*-
# Copyright: (c) 2026, tmi.migration maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""golang-migrate migration directories: parsing, validation, planning, lock ids, statements.

Pure functions, no database access, so they are unit-tested on their own.

Written here because no library does it in Python: golang-migrate is a Go program. The
rules reproduced are golang-migrate v4's (``source/parse.go``, ``database/util.go``):

* file names ``{version}_{title}.{up|down}.{ext}``, the version a non-negative integer;
* the advisory lock id: CRC-32 (IEEE) of ``schema NUL table NUL database``, times the salt
  1486364155, modulo 2**32;
* versions are ordered numerically; "no version" is represented here as 0.

Statement splitting and classification use pglast (PostgreSQL's own parser), so comments,
quoted strings, dollar quoting and semicolons inside them are handled as the server does.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import os
import re
import zlib

PGLAST_IMPORT_ERROR = None
try:
    import pglast
    from pglast import ast as pg_ast
    from pglast.stream import RawStream
except ImportError:  # reported by the module through missing_required_lib
    import traceback

    pglast = None
    PGLAST_IMPORT_ERROR = traceback.format_exc()

ADVISORY_LOCK_SALT = 1486364155
NIL_VERSION = 0
FILE_RE = re.compile(r"^([0-9]+)_(.*)\.(down|up)\.(.*)$")
# Sets numbered 1, 2, 3 ... (not timestamps): a missing number inside the range is a missing file.
SEQUENTIAL_LIMIT = 1000000

# Statements PostgreSQL refuses inside a transaction block.
_NON_TRANSACTIONAL = {
    "VacuumStmt", "CreatedbStmt", "DropdbStmt", "AlterSystemStmt", "CreateTableSpaceStmt",
    "DropTableSpaceStmt", "ClusterStmt",
}


class MigrationError(Exception):
    """A problem with the migration files, found before anything touches the database."""


class Migration(object):
    def __init__(self, version, title):
        self.version = version
        self.title = title
        self.up = None
        self.down = None

    def path(self, direction):
        return self.up if direction == "up" else self.down


def advisory_lock_id(database, schema, table):
    """The lock id golang-migrate's postgres driver passes to pg_advisory_lock."""
    name = "\x00".join([schema, table, database]).encode("utf-8")
    return (zlib.crc32(name) & 0xFFFFFFFF) * ADVISORY_LOCK_SALT % (1 << 32)


def file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(65536), b""):
            digest.update(block)
    return digest.hexdigest()


def read_migrations(directory):
    """Return {version: Migration} for a directory, or raise MigrationError naming the bad file."""
    if not os.path.isdir(directory):
        raise MigrationError("Migrations directory %s does not exist or is not a directory; set the path to the "
                             "folder holding the {version}_{title}.up.sql / .down.sql files." % directory)
    migrations = {}
    for name in sorted(os.listdir(directory)):
        full = os.path.join(directory, name)
        match = FILE_RE.match(name)
        if not os.path.isfile(full):
            if match:
                raise MigrationError("%s is named like a migration but is not a regular file; remove or rename it."
                                     % full)
            continue
        if not match:
            if name.endswith(".sql"):
                raise MigrationError("File %s does not follow golang-migrate's naming {version}_{title}.up.sql or "
                                     "{version}_{title}.down.sql; rename it or move it out of %s."
                                     % (full, directory))
            continue
        version = int(match.group(1))
        if version == NIL_VERSION:
            raise MigrationError("File %s has version 0, which this module reserves for 'no migration applied'; "
                                 "number migrations from 1." % full)
        if not os.access(full, os.R_OK):
            raise MigrationError("File %s is not readable by the user running the module; fix its permissions."
                                 % full)
        try:
            with open(full, "rb") as handle:
                handle.read().decode("utf-8")
        except UnicodeDecodeError as error:
            raise MigrationError("File %s is not valid UTF-8 text (%s); save it as UTF-8." % (full, error)) from None
        direction = match.group(3)
        migration = migrations.setdefault(version, Migration(version, match.group(2)))
        if migration.path(direction) is not None:
            raise MigrationError("Duplicate %s migration for version %d: %s and %s; keep exactly one."
                                 % (direction, version, migration.path(direction), full))
        if direction == "up":
            migration.up = full
            migration.title = match.group(2)
        else:
            migration.down = full
    if not migrations:
        raise MigrationError("Migrations directory %s holds no {version}_{title}.up.sql / .down.sql files."
                             % directory)
    return migrations


def resolve_target(migrations, target):
    """Turn 'latest' or a number into a version that exists (0 means: no migration applied)."""
    if target is None or str(target).strip().lower() == "latest":
        return max(v for v, m in migrations.items() if m.up)
    try:
        version = int(str(target).strip())
    except ValueError:
        raise MigrationError("target_version must be 'latest' or a whole number, not %r." % (target,)) from None
    if version != NIL_VERSION and version not in migrations:
        raise MigrationError("target_version %d has no migration file; the files hold versions %s."
                             % (version, describe_versions(migrations)))
    return version


def describe_versions(migrations):
    versions = sorted(migrations)
    if versions == list(range(versions[0], versions[-1] + 1)) and len(versions) > 3:
        return "%d to %d" % (versions[0], versions[-1])
    return ", ".join(str(v) for v in versions)


def plan(migrations, current, target):
    """The ordered steps from ``current`` to ``target``: [(Migration, direction, version_after)].

    golang-migrate records the *target* of each step: the migration's own version going up,
    the previous version (0 when none) going down.
    """
    versions = sorted(migrations)
    if current != NIL_VERSION and current not in migrations:
        raise MigrationError("The database is at version %d, which no file in the directory has (files: %s); "
                             "point the module at the migrations this database was built with."
                             % (current, describe_versions(migrations)))
    steps = []
    if target > current:
        for version in versions:
            if current < version <= target:
                migration = migrations[version]
                if migration.up is None:
                    raise MigrationError("Version %d has a down file but no up file (%s); the plan to %d crosses it."
                                         % (version, migration.down, target))
                steps.append((migration, "up", version))
    elif target < current:
        crossing = [v for v in reversed(versions) if target < v <= current]
        for version in crossing:
            migration = migrations[version]
            if migration.down is None:
                raise MigrationError("Version %d has no down file (%s.down.sql expected); going down to %d needs one "
                                     "for every version above it." % (version, migration.title, target))
            index = versions.index(version)
            steps.append((migration, "down", versions[index - 1] if index > 0 else NIL_VERSION))
    _check_gaps(versions, min(current, target), max(current, target))
    return steps


def _check_gaps(versions, low, high):
    if not versions or versions[-1] >= SEQUENTIAL_LIMIT:
        return  # timestamp-numbered sets have no expected next number
    present = set(versions)
    start = max(low, versions[0])
    for version in range(start, high + 1):
        if version not in present:
            raise MigrationError("Migration %06d is missing: versions jump from %d to %d and the plan crosses the gap. "
                                 "Restore the missing file." % (version, max(v for v in versions if v < version),
                                                                min(v for v in versions if v > version)))


def check_syntax(path):
    """Raise MigrationError naming the file, line and column when a migration file does not parse."""
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    try:
        split_statements(text)
    except pglast.parser.ParseError as error:
        reason = re.sub(r",? at index \d+$", "", str(error.args[0] if error.args else error))
        index = error.args[1] if len(error.args) > 1 and isinstance(error.args[1], int) else None
        where = ""
        if index is not None and 0 <= index <= len(text):
            line = text.count("\n", 0, index) + 1
            column = index - (text.rfind("\n", 0, index) + 1) + 1
            where = " at line %d, column %d" % (line, column)
        raise MigrationError("File %s does not parse as PostgreSQL SQL%s: %s. Fix the file before migrating; "
                             "nothing was changed." % (path, where, reason)) from None


def load(path, target_version):
    """(migrations, target, latest) of a directory, every file checked to parse; raises MigrationError."""
    migrations = read_migrations(path)
    target = resolve_target(migrations, target_version)
    latest = resolve_target(migrations, "latest")
    for migration in migrations.values():
        for name in (migration.up, migration.down):
            if name:
                check_syntax(name)
    return migrations, target, latest


def split_statements(sql):
    """Statements of a migration file, as PostgreSQL's parser sees them."""
    return [s for s in pglast.split(sql, with_parser=True) if s.strip()]


def statement_kinds(sql):
    return [type(raw.stmt).__name__ for raw in pglast.parse_sql(sql)]


def is_index_only(sql):
    kinds = statement_kinds(sql)
    return bool(kinds) and all(kind == "IndexStmt" for kind in kinds)


def needs_autocommit(sql):
    """Whether the file holds a statement that cannot run inside a transaction block."""
    for raw in pglast.parse_sql(sql):
        stmt = raw.stmt
        name = type(stmt).__name__
        if name in _NON_TRANSACTIONAL or getattr(stmt, "concurrent", False):
            return True
        if name == "ReindexStmt" and any(getattr(p, "defname", "") == "concurrently" for p in (stmt.params or ())):
            return True
    return False


def concurrent_index_builds(sql):
    """For an index-only file: [(index name, schema or None, CREATE INDEX CONCURRENTLY statement)].

    Every index must be named: an unnamed one cannot be found again to clean up a failed build.
    """
    builds = []
    for raw in pglast.parse_sql(sql):
        stmt = raw.stmt
        if not isinstance(stmt, pg_ast.IndexStmt):
            raise MigrationError("online_index_builds applies only to files made of CREATE INDEX statements.")
        if not stmt.idxname:
            raise MigrationError("An unnamed CREATE INDEX on %s cannot be built online: name the index."
                                 % stmt.relation.relname)
        stmt.concurrent = True
        builds.append((stmt.idxname, stmt.relation.schemaname, RawStream()(stmt)))
    return builds


def locate_error(sql, position):
    """(line, statement text) for a 1-based character position the server reported, or (None, None)."""
    if not position:
        return None, None
    position = int(position)
    text = sql.replace("\r\n", "\n")
    if position > len(text):
        return None, None
    line = text.count("\n", 0, position - 1) + 1
    statement = None
    if pglast is not None:
        try:
            for raw in pglast.parse_sql(sql):
                start = raw.stmt_location or 0
                length = raw.stmt_len or (len(sql.encode("utf-8")) - start)
                encoded = sql.encode("utf-8")
                byte_pos = len(sql[:position - 1].encode("utf-8"))
                if start <= byte_pos < start + length:
                    statement = encoded[start:start + length].decode("utf-8").strip()
                    break
        except pglast.parser.ParseError:
            statement = None
    return line, statement
