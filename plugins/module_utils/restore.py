# -*- coding: utf-8 -*-
# Copyright: (c) 2026, tmi.migration maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Restoring a tmi.migration backup beside the live database, verifying it and swapping it in.

The database-level half of the pg_restore_backup module (pg_restore itself runs through
``pgtools``). Written here because community.postgresql's postgresql_db (state=restore) neither
verifies a restore nor swaps databases: the manifest's sha256 check, the scratch databases'
marks, the comparison with the backup's figures, what a swap would discard, the swap under
refused connections and the retention of the databases swaps kept.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import re
import time

from ansible.module_utils.common.text.converters import to_native
from ansible_collections.tmi.migration.plugins.module_utils import bookkeeping, datacheck, snapshot
from ansible_collections.tmi.migration.plugins.module_utils.migrations import file_sha256
from ansible_collections.tmi.migration.plugins.module_utils.readonly import parallel_figures

try:
    import psycopg2
    from psycopg2 import sql
except ImportError:  # the module reports it when it connects
    psycopg2 = sql = None

MAX_IDENTIFIER = 63
SCRATCH_INFIX = "_verify_"
# The mark of a scratch restore, on the database itself: what tells a leftover from a database of that name.
SCRATCH_MARK = "tmi.migration verification restore of database %s"
KEPT_BY = "tmi.migration.pg_restore_backup"


def kept_comment(live, backup, when):
    """The comment a swap writes on the database it keeps: which database it was, when, for which backup."""
    return json.dumps({"kept_by": KEPT_BY, "was": live, "replaced_at": when, "backup": backup}, sort_keys=True)


def kept_from(comment):
    """What a swap's comment says (a dict with ``was`` and ``replaced_at``), or None for any other comment."""
    try:
        document = json.loads(comment or "")
    except ValueError:
        return None
    if isinstance(document, dict) and document.get("kept_by") == KEPT_BY and document.get("was"):
        return document
    return None


def old_to_drop(databases, live, pattern, keep, newest):
    """Which databases swaps of ``live`` kept go, beyond the newest ``keep`` (``newest`` always stays).

    ``databases`` holds (name, oid, comment) of every database. Only names matching ``pattern`` whose comment says
    they were ``live`` count; they are ordered by when they were replaced, then by oid. Returns (drop, kept,
    unattributed) - unattributed: names that match but carry no such comment.
    """
    regex = re.compile(pattern)
    mine, unattributed = [], []
    for name, oid, comment in databases:
        if name in (live, newest) or not regex.fullmatch(name):
            continue
        document = kept_from(comment)
        if document is None or document["was"] != live:
            unattributed.append(name)
            continue
        mine.append((str(document.get("replaced_at", "")), int(oid), name))
    mine.sort(reverse=True)
    slots = max(keep - 1, 0)
    return ([name for _when, _oid, name in mine[slots:]], [newest] + [name for _when, _oid, name in mine[:slots]],
            sorted(unattributed))


def options_problem(options):
    """What is wrong with the names and the keep_old options of a restore (a sentence), or None."""
    live, old = options.get("replace"), options.get("keep_old_as")
    for name in (options["target_db"], live, old):
        if name and len(name.encode("utf-8")) > MAX_IDENTIFIER:
            return ("Database name %r is longer than PostgreSQL's %d bytes and would be cut short; choose a shorter "
                    "name." % (name, MAX_IDENTIFIER))
    keep = options.get("keep_old_count") or 0
    if keep < 0:
        return "keep_old_count must be 0 (keep them all) or more."
    if keep == 0:
        return None
    if not (live and options.get("keep_old_pattern")):
        return "keep_old_count needs replace and keep_old_pattern."
    try:
        pattern = re.compile(options["keep_old_pattern"])
    except re.error as error:
        return "keep_old_pattern is not a regular expression (%s)." % error
    if options.get("drop_old"):
        return "keep_old_count and drop_old exclude each other: drop_old keeps no database at all."
    if not pattern.fullmatch(old or ""):
        return ("keep_old_as %s does not match keep_old_pattern %s, so keep_old_count would not count it."
                % (old, options["keep_old_pattern"]))
    return None


class RestoreError(Exception):
    """Something that stops the restore before it changes anything; the message says what and why."""


def load_manifest(backup):
    """The manifest of a backup and the path of its dump, once every file matches its recorded sha256."""
    path = os.path.join(backup, "manifest.json")
    if not os.path.isfile(path):
        raise RestoreError("%s has no manifest.json: it is not a complete tmi.migration backup. Nothing was changed."
                           % backup)
    with open(path) as handle:
        manifest = json.load(handle)
    dump = os.path.join(backup, manifest["dump"])
    for name, expected in sorted(manifest["files"].items()):
        path = os.path.join(dump, name)
        if not os.path.isfile(path):
            raise RestoreError("Backup file %s is missing; the backup cannot be restored. Nothing was changed."
                               % path)
        if os.path.getsize(path) != expected["size"] or file_sha256(path) != expected["sha256"]:
            raise RestoreError("Backup file %s does not match the sha256 recorded in its manifest: the backup is "
                               "damaged. Use another backup. Nothing was changed." % path)
    return manifest, dump


class Restorer(object):
    """Database-level work of a restore on one autocommit admin session.

    ``connect(dbname=None, autocommit=False)`` opens connections (``postgres.connector`` of a module); ``options``
    are the module's (``backup``, ``jobs`` and the bookkeeping table names); ``warn(message)`` reports warnings.
    A module that reports its progress sets ``progress`` (``module_utils/progress.py``) for the scans.
    """

    progress = None

    def __init__(self, connect, options, warn=None):
        self.connect = connect
        self.options = options
        self.warn = warn or (lambda message: None)
        self.admin = connect(autocommit=True)

    def execute(self, query, args=None):
        with self.admin.cursor() as cur:
            cur.execute(query, args)
            return cur.fetchall() if cur.description else None

    def exists(self, name):
        return bool(self.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)))

    def create(self, name, manifest, scratch=False):
        self.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0 ENCODING %s LC_COLLATE %s LC_CTYPE %s").format(
            sql.Identifier(name)), (manifest["encoding"], manifest["lc_collate"], manifest["lc_ctype"]))
        if scratch:
            self.execute(sql.SQL("COMMENT ON DATABASE {} IS %s").format(sql.Identifier(name)),
                         (SCRATCH_MARK % manifest["database"],))

    def is_scratch_of(self, name, database):
        """Whether database ``name`` exists and is marked as a verification restore of ``database`` - never
        ``database`` itself, whatever its comment says."""
        if name == database:
            return False
        rows = self.execute("SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
                            (name,))
        return bool(rows) and rows[0][0] == SCRATCH_MARK % database

    def scratch_leftovers(self, target, database):
        """Scratch databases of earlier verification restores of ``database``, named like ``target``."""
        if SCRATCH_INFIX not in target:
            return []
        pattern = "^%s[a-z0-9_]+$" % re.escape(target[:target.rindex(SCRATCH_INFIX) + len(SCRATCH_INFIX)])
        rows = self.execute("SELECT datname FROM pg_database WHERE datname ~ %s AND datname <> %s "
                            "AND shobj_description(oid, 'pg_database') = %s ORDER BY datname",
                            (pattern, target, SCRATCH_MARK % database))
        return [row[0] for row in rows]

    def drop(self, name):
        self.end_sessions(name)
        self.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))

    def end_sessions(self, name):
        self.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
                     "AND pid <> pg_backend_pid()", (name,))

    def figures(self, name, like):
        """The restored tables' figures, computed like ``like``'s, over as many connections as pg_restore had
        jobs."""
        return parallel_figures(self.connect, self.options.get("jobs", 2), dbname=name, like=like,
                                progress=self.progress)

    def verify(self, name, manifest):
        """The differences between database ``name`` and the backup's figures (none: the same data)."""
        return snapshot.compare(manifest["figures"], self.figures(name, manifest["figures"]))

    def ignored(self):
        """The tables a guard leaves out: the bookkeeping tables (always) and the option ``ignore``."""
        return set(bookkeeping.from_options(self.options)) | set(self.options.get("ignore") or ())

    def guard(self, live, manifest, changes, baseline, after, writes_stopped):
        """What swapping the backup in place of ``live`` would discard (``datacheck.discards``); changes nothing.

        With ``writes_stopped`` and a ``baseline``, nothing but the migration wrote since the baseline, so the
        live database is not read: what differs from the baseline is the run's own doing."""
        ignore = self.ignored()
        figures = None
        if not (writes_stopped and baseline):
            # Each table figured as the figures it is compared with: the backup's, else the run's own.
            like = dict(after or {})
            like.update(baseline or {})
            like.update(manifest["figures"])
            figures = parallel_figures(self.connect, self.options.get("jobs", 2), dbname=live, skip=ignore,
                                       like=like, progress=self.progress)
        return datacheck.discards(manifest["figures"], figures, changes, baseline, after, ignore)

    def swap(self, live, new, old):
        """Put ``new`` in place of ``live``, keeping ``live`` as ``old``; refuse connections meanwhile."""
        ident = sql.Identifier
        self.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(ident(live)))
        try:
            for _attempt in range(20):  # sessions may take a moment to end after pg_terminate_backend
                self.end_sessions(live)
                try:
                    self.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(ident(live), ident(old)))
                    break
                except psycopg2.errors.ObjectInUse:
                    time.sleep(0.25)
            else:
                raise RuntimeError("sessions to %s kept reconnecting; the swap was not done" % live)
        finally:
            current = old if self.exists(old) else live
            self.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true").format(ident(current)))
        self.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(ident(new), ident(live)))
        try:
            when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            self.execute(sql.SQL("COMMENT ON DATABASE {} IS %s").format(ident(old)),
                         (kept_comment(live, self.options.get("backup"), when),))
        except psycopg2.Error as error:
            self.warn("The swap is done, but %s could not be marked as the database %s was before it (%s): "
                      "keep_old_count will never drop it." % (old, live, to_native(error).strip()))

    def prune_old(self, live, newest, pattern, keep, result):
        """Drop what keep_old_count says goes; a failure is a warning (the swap is done)."""
        try:
            databases = self.execute("SELECT datname, oid::bigint, shobj_description(oid, 'pg_database') "
                                     "FROM pg_database")
            drop, kept, unattributed = old_to_drop(databases, live, pattern, keep, newest)
            result.update(kept_old=kept, unattributed_old=unattributed)
            for name in drop:
                try:
                    self.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(name)))
                    result["dropped_old"].append(name)
                except psycopg2.errors.ObjectInUse:
                    result["kept_old"].append(name)
                    self.warn("%s, kept by an earlier swap of %s, was not dropped: somebody is connected to "
                              "it." % (name, live))
        except psycopg2.Error as error:
            self.warn("The swap is done, but the databases earlier swaps of %s kept could not be pruned: %s"
                      % (live, to_native(error).strip()))
