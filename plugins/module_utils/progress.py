# -*- coding: utf-8 -*-
# Copyright: (c) 2026, tmi.migration maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Live progress of a long-running module, written to a file its action plugin prints while the module runs.

A module cannot print while it runs: Ansible reads its one JSON result when it ends. So the modules whose
work can last minutes (pg_backup, pg_restore_backup, pg_migrate, pg_rehearse, pg_integrity_check) write what
they are doing to a small file on the host they run on, and the action plugin of the same name
(``plugins/plugin_utils/progress.py``) reads it there every ``progress_interval`` seconds and prints a line.

What the line says comes from two places:

* the module itself: the step it is in (``step``), the file or index it is at (``item``), how many of its
  scans are done (``begin_jobs`` / ``job_done``, which ``readonly.SnapshotPool`` calls) or a count of its own
  (``count``);
* PostgreSQL, read by a background thread over a connection of its own to the step's database: the progress
  views of the sessions doing the work (``pg_stat_progress_copy`` for the COPY of pg_dump and pg_restore,
  ``pg_stat_progress_create_index``, ``pg_stat_progress_cluster``, ``pg_stat_progress_analyze``) and
  ``pg_stat_activity`` for a session no view covers: the tables of its statement (read with pglast, never the
  statement's text) and what it waits for.

The file holds names of tables, indexes and files and figures, never a password or a statement's text; it is
0600 and removed when the module ends (one a killed module left is removed by the next module that reports
progress there). The thread first connects once a step has lasted half an interval - a step shorter than that
costs no connection at all - closes the connection as the step ends (so a DROP or RENAME of that database
right after it never meets it), and swallows its own errors: progress never fails a module nor changes its
result. Written here because PostgreSQL's progress views name objects by OID of their own database and
Ansible offers no way for a module to report while it runs.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import atexit
import contextlib
import json
import os
import re
import threading
import time

from ansible_collections.tmi.migration.plugins.module_utils import processes
from ansible_collections.tmi.migration.plugins.module_utils.postgres import connection_params

try:
    import psycopg2
except ImportError:  # the modules report the missing library
    psycopg2 = None

APPLICATION_NAME = "tmi.migration progress"
# The options of every module that reports progress (doc fragment tmi.migration.progress); its action plugin sets them.
OPTIONS = dict(progress_file=dict(type="path"), progress_interval=dict(type="float"))
FILE_PREFIX = "tmi-progress-"
# A progress file, or one being written by process <pid> (renamed into place once complete).
_FILE = re.compile(r"^%s[A-Za-z0-9_-]+\.json(?:\.(?P<pid>\d+)\.partial)?$" % re.escape(FILE_PREFIX))
# Each sample is one short transaction that must never hold up the work it watches; its settings end with it
# (behind a transaction-pooling proxy a session's SET would reach other clients' sessions).
_SAMPLE_SETTINGS = "SET LOCAL statement_timeout = '2s'; SET LOCAL lock_timeout = '500ms'"

# The name of a relation by OID, in the database the progress thread is connected to.
_NAME = ("(SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
         "WHERE c.oid = %s)")
# Progress views by the server version that has them: (version, view, alias, columns).
_VIEWS = (
    (140000, "pg_stat_progress_copy", "cp",
     "cp.tuples_processed, cp.bytes_processed, cp.bytes_total, %s, "
     "(SELECT c.reltuples FROM pg_class c WHERE c.oid = cp.relid)" % (_NAME % "cp.relid")),
    (120000, "pg_stat_progress_create_index", "ci",
     "ci.phase, ci.blocks_done, ci.blocks_total, ci.tuples_done, ci.tuples_total, %s, %s"
     % (_NAME % "ci.relid", _NAME % "ci.index_relid")),
    (120000, "pg_stat_progress_cluster", "cl",
     "cl.phase, cl.heap_blks_scanned, cl.heap_blks_total, %s" % (_NAME % "cl.relid")),
    (130000, "pg_stat_progress_analyze", "an",
     "an.phase, an.sample_blks_scanned, an.sample_blks_total, %s" % (_NAME % "an.relid")),
)
_WIDTHS = {"cp": 5, "ci": 7, "cl": 4, "an": 4}
# The tables of the database and their rows as the planner last counted them (a dump's totals).
_TABLES_SQL = ("SELECT count(*), coalesce(sum(greatest(c.reltuples, 0)), 0)::float8 FROM pg_class c "
               "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'r' "
               "AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%' "
               "AND n.nspname NOT LIKE 'pg_temp%'")
# What pglast calls a statement, as an operator reads it.
_KINDS = {"SelectStmt": "reading", "AlterTableStmt": "ALTER TABLE", "IndexStmt": "CREATE INDEX on",
          "CopyStmt": "COPY", "InsertStmt": "INSERT into", "UpdateStmt": "UPDATE", "DeleteStmt": "DELETE from",
          "VacuumStmt": "VACUUM", "ClusterStmt": "CLUSTER", "CreateTableAsStmt": "CREATE TABLE AS",
          "TruncateStmt": "TRUNCATE"}
_DATA_FILE = re.compile(r"^\d+\.dat")
_SYSTEM = re.compile(r"^(pg_catalog\.|information_schema\.|pg_)")


def activity_sql(server_version):
    """The sampling query for a server version: every watched session (``pids``, ``application_name``) with the
    progress views it has."""
    columns, joins = [], []
    for since, view, alias, selected in _VIEWS:
        if server_version >= since:
            columns.append(selected)
            joins.append("LEFT JOIN %s %s ON %s.pid = a.pid" % (view, alias, alias))
        else:
            columns.append(", ".join(["NULL"] * _WIDTHS[alias]))
    return ("SELECT a.pid, a.state, extract(epoch FROM clock_timestamp() - a.query_start)::float8, "
            "a.wait_event_type, a.wait_event, "
            # pg_blocking_pids() takes the lock manager's locks: only for a session that waits for a lock.
            "CASE WHEN a.wait_event_type = 'Lock' THEN cardinality(pg_blocking_pids(a.pid)) END, a.query, %s "
            "FROM pg_stat_activity a %s WHERE a.datname = current_database() AND a.pid <> pg_backend_pid() "
            "AND (a.pid = ANY(%%(pids)s) OR a.application_name = %%(application_name)s) ORDER BY a.pid"
            % (", ".join(columns), " ".join(joins)))


def number(value):
    return "{:,}".format(int(value))


def size(value):
    value = float(value)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return ("%d %s" % (value, unit)) if unit == "bytes" else ("%.1f %s" % (value, unit))
        value /= 1024.0
    return None  # not reached


def percent(done, total):
    """' (41%)' of done out of total, never 100% before the end; empty without a total."""
    if not total or total <= 0:
        return ""
    share = int(100.0 * done / total)
    return " (%d%%)" % (min(share, 99) if done < total else 100)


def of(done, total, unit, estimated=False):
    """'812,345 of ~1,000,000 rows (81%)' - or '812,345 rows' without a total."""
    if not total or total <= 0:
        return "%s %s" % (number(done), unit)
    return "%s of %s%s %s%s" % (number(done), "~" if estimated else "", number(total), unit, percent(done, total))


def statement_tables(text):
    """What a session's one statement does and to which tables ('reading public.threats'), or None.

    Only the names of the relations leave this function - never the statement's text, which can hold data -
    and only for a single statement: the tables of a whole migration file sent as one batch would not say
    which of its statements runs."""
    try:
        from pglast import parse_sql
        from pglast.visitors import referenced_relations
        statements = parse_sql(text or "")
    except Exception:  # noqa: BLE001 - cut short (track_activity_query_size), not SQL, or pglast missing
        return None
    if len(statements) != 1:
        return None
    try:
        tables = sorted(referenced_relations(statements[0].stmt))
    except Exception:  # noqa: BLE001 - a statement pglast cannot walk: say nothing of it
        return None
    kind = _KINDS.get(type(statements[0].stmt).__name__)
    tables = [name for name in tables if not _SYSTEM.match(name)]
    if not tables:  # the catalog, or no table at all: nothing to name
        return None
    return "%s %s" % (kind or "on", ", ".join(tables))


def describe_session(row, totals):
    """One watched session as a phrase ('public.threats 812,345 of ~1,000,000 rows (81%)'), or None when idle.

    ``row`` is a row of ``activity_sql``; ``totals`` maps 'schema.table' to the rows it will have (a restore's
    figures), else the planner's estimate is the total."""
    (_pid, state, seconds, wait_type, wait_event, blockers, query,
     tuples, copied_bytes, bytes_total, copy_table, estimate,
     index_phase, blocks_done, blocks_total, tuples_done, tuples_total, index_table, index_name,
     cluster_phase, heap_done, heap_total, cluster_table,
     analyze_phase, sample_done, sample_total, analyze_table) = row
    if copy_table is not None or tuples is not None:
        name = copy_table or "a table"
        if name in totals:
            return "%s %s" % (name, of(tuples or 0, totals[name], "rows"))
        if bytes_total:
            return "%s %s" % (name, of(copied_bytes or 0, bytes_total, "bytes"))
        if estimate and estimate > 0:
            return "%s %s" % (name, of(tuples or 0, estimate, "rows", estimated=True))
        return "%s %s rows, %s" % (name, number(tuples or 0), size(copied_bytes or 0))
    if index_phase is not None:
        what = "%s on %s: %s" % ("index %s" % index_name if index_name else "a new index", index_table or "a table",
                                 index_phase)
        if blocks_total:
            return "%s, %s" % (what, of(blocks_done or 0, blocks_total, "blocks"))
        if tuples_total:
            return "%s, %s" % (what, of(tuples_done or 0, tuples_total, "tuples"))
        return what
    if cluster_phase is not None:
        what = "rewriting %s: %s" % (cluster_table or "a table", cluster_phase)
        return "%s, %s" % (what, of(heap_done or 0, heap_total, "blocks")) if heap_total else what
    if analyze_phase is not None:
        what = "analyzing %s: %s" % (analyze_table or "a table", analyze_phase)
        return "%s, %s" % (what, of(sample_done or 0, sample_total, "sample blocks")) if sample_total else what
    # A statement that began less than a second ago is one of many short ones: not worth a phrase.
    if state != "active" or (wait_type != "Lock" and (seconds or 0) < 1):
        return None
    doing = statement_tables(query) or "running a statement"
    if wait_type == "Lock":
        return "%s, waiting for a lock (%s)%s for %d s" % (
            doing, wait_event, " behind %d session%s" % (blockers, "" if blockers == 1 else "s") if blockers else "",
            seconds or 0)
    return "%s, %d s" % (doing, seconds or 0)


def dump_files(directory):
    """(data files, bytes) written so far into a directory-format dump: one data file per table."""
    count = total = 0
    try:
        names = os.listdir(directory)
    except OSError:
        return 0, 0
    for name in names:
        try:
            total += os.path.getsize(os.path.join(directory, name))
        except OSError:
            continue
        count += 1 if _DATA_FILE.match(name) else 0
    return count, total


def remove_dead_files(directory):
    """Remove progress files in ``directory`` whose module no longer runs (a module killed before it could)."""
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        match = _FILE.match(name)
        if not match:
            continue
        path = os.path.join(directory, name)
        try:
            if match.group("pid"):
                pid = int(match.group("pid"))
            else:
                with open(path) as handle:
                    pid = int(json.load(handle)["pid"])
            if os.stat(path).st_uid != os.getuid() or processes.alive(pid):
                continue
            os.unlink(path)
        except (OSError, ValueError, KeyError, TypeError):
            continue


class Step(object):
    """What a step of a module watches in PostgreSQL (see ``Progress.step``)."""

    def __init__(self, name, params, application_name, pids, labels, totals, directory):
        self.name = name
        self.params = params
        self.application_name = application_name
        self.pids = list(pids)
        self.labels = dict(labels or {})
        self.totals = dict(totals or {})
        self.directory = directory
        self.item = None
        self.items = 0
        self.expected = None
        self.part = None
        self.counted = None
        self.jobs = None
        self.copied = {}  # tables seen being copied: their totals, for the rows of tables done
        self.tables = None  # (tables, planner's rows) of the database, read once


class Progress(object):
    """Reports a module's progress to ``path`` (see the module docstring); ``Progress(None)`` reports nothing.

    ``module`` gives the connection options of the progress thread's sessions; ``interval`` is the action
    plugin's polling interval: the file is rewritten twice per interval.
    """

    def __init__(self, path=None, interval=5.0, module=None):
        self.path = path
        self.module = module
        self.period = max(float(interval or 0), 0.25) / 2.0
        self.started = time.monotonic()
        self._state = threading.Lock()  # the step and the counters
        self._database = threading.Lock()  # the progress thread's connection
        self._stop = threading.Event()
        self._step = None
        self._conn = None
        self._conn_step = None
        self._sql = None
        self._sequence = 0
        self._thread = None
        if path:
            remove_dead_files(os.path.dirname(path) or ".")
            self._thread = threading.Thread(target=self._loop, name="tmi-progress")
            self._thread.daemon = True
            self._thread.start()
            atexit.register(self.close)

    @classmethod
    def of_module(cls, module):
        """The progress of a module run by its action plugin (options ``progress_file``, ``progress_interval``);
        nothing in check mode, where nothing runs long, or when run without the action plugin."""
        path = module.params.get("progress_file")
        interval = module.params.get("progress_interval") or 0
        if not path or interval <= 0 or module.check_mode:
            return cls()
        return cls(path, interval, module)

    # --- what the module says -------------------------------------------------------------
    @contextlib.contextmanager
    def step(self, name, dbname=None, application_name=None, pids=(), labels=None, totals=None, directory=None):
        """A step of the module (a context): its ``name`` and what of PostgreSQL it watches - the sessions of
        ``application_name`` and the ``pids`` in database ``dbname`` (``labels`` names some of them), with
        ``totals`` ({'schema.table': rows}) and the dump ``directory`` it writes. When the step ends, the
        progress thread's connection to ``dbname`` is closed before anything else happens."""
        params = None
        if self.path and dbname:
            params = connection_params(self.module, dbname, APPLICATION_NAME)
        step = Step(name, params, application_name, pids, labels, totals, directory)
        with self._state:
            previous, self._step = self._step, step
        try:
            yield step
        finally:
            # The step is over before its connection closes: a sample that starts now finds it gone.
            with self._state:
                self._step = previous
            with self._database:  # waits for a sample in flight
                self._disconnect()

    def expect(self, total):
        """The step will go through ``total`` items (``item``)."""
        with self._state:
            if self._step is not None:
                self._step.expected = total

    def item(self, label):
        """The step is at its next item, a file: '000016 add_performance_indexes up' (file 2 of 3)."""
        with self._state:
            if self._step is not None:
                self._step.items += 1
                self._step.item = (label, self._step.items, self._step.expected)
                self._step.part = None

    def part(self, label, number=None, total=None):
        """A part of the current item: 'index idx_threats_tm (3 of 13)'."""
        with self._state:
            if self._step is not None:
                self._step.part = (label, number, total)

    def count(self, done, total, unit):
        """A count of the module's own: done of total units ('bytes' are shown as sizes)."""
        with self._state:
            if self._step is not None:
                self._step.counted = (done, total, unit)

    def begin_jobs(self, costs):
        """The step runs these jobs (``readonly.SnapshotPool``), each costing what its cost says."""
        with self._state:
            if self._step is not None:
                self._step.jobs = dict(costs=list(costs), done=set())

    def job_done(self, index):
        with self._state:
            if self._step is not None and self._step.jobs is not None:
                self._step.jobs["done"].add(index)

    def close(self):
        """Stop reporting and remove the file (also at exit, whatever ended the module)."""
        if not self.path:
            return
        with self._state:
            self._stop.set()
            for path in (self.path, self._partial()):
                try:
                    os.unlink(path)
                except OSError:
                    pass

    def _partial(self):
        return "%s.%d.partial" % (self.path, os.getpid())

    # --- the progress thread --------------------------------------------------------------
    def _loop(self):
        while not self._stop.wait(self.period):
            try:
                text = self._describe()
            except Exception as error:  # noqa: BLE001 - progress must never fail the module
                text = "(progress not readable: %s)" % type(error).__name__
            self._write(text)

    def _write(self, text):
        with self._state:
            if self._stop.is_set():
                return
            self._sequence += 1
            document = dict(pid=os.getpid(), sequence=self._sequence, text=text,
                            seconds=round(time.monotonic() - self.started, 1))
            partial = self._partial()
            try:
                directory = os.path.dirname(self.path)
                if directory and not os.path.isdir(directory):
                    os.makedirs(directory, 0o700)
                descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0),
                                     0o600)
                with os.fdopen(descriptor, "w") as handle:
                    json.dump(document, handle)
                os.rename(partial, self.path)
            except OSError:
                pass

    def _describe(self):
        with self._state:
            step = self._step
            if step is None:
                return ""
            item, part, counted = step.item, step.part, step.counted
            jobs = None if step.jobs is None else (list(step.jobs["costs"]), set(step.jobs["done"]))
        head = step.name
        if item is not None:
            head += ", " + labelled(item, "file")
        if part is not None:
            head += ", " + labelled(part, None)
        phrases = []
        if counted is not None:
            done, total, unit = counted
            phrases.append(("%s of %s%s" % (size(done), size(total), percent(done, total))) if unit == "bytes"
                           else of(done, total, unit))
        if jobs is not None:
            costs, done = jobs
            weight = sum(costs)
            phrases.append("%d of %d scans done%s" % (len(done), len(costs), percent(
                sum(costs[index] for index in done), weight) if weight else ""))
        if step.params is not None:
            with self._database:
                rows = self._sample(step)
            phrases.extend(self._sessions(step, rows))
        if step.directory:
            files, written = dump_files(step.directory)
            tables = " of ~%d tables" % step.tables[0] if step.tables else ""
            phrases.append("%d%s begun, %s written" % (files, tables, size(written)))
        return "%s: %s" % (head, "; ".join(phrases) if phrases else "working")

    def _sessions(self, step, rows):
        phrases, copying = [], set()
        for row in rows:
            phrase = describe_session(row, step.totals)
            if row[10] is not None:
                copying.add(row[10])
                step.copied[row[10]] = step.totals.get(row[10], row[11] or 0)
            if phrase is not None:
                label = step.labels.get(row[0])
                phrases.append("%s: %s" % (label, phrase) if label else phrase)
        if step.totals:  # a restore: every row it will have, of the tables done and those being copied
            done = sum(rows_ for table, rows_ in step.copied.items() if table not in copying)
            done += sum(row[7] or 0 for row in rows if row[10] is not None)
            phrases.append("%s restored in all" % of(done, sum(step.totals.values()), "rows"))
        return phrases

    def _sample(self, step):
        """The watched sessions' rows, or [] when PostgreSQL cannot be read (the error is not the module's)."""
        with self._state:
            if self._stop.is_set() or self._step is not step:  # the step ended meanwhile: not its database
                return []
        try:
            if self._conn is None or self._conn_step is not step:
                self._disconnect()
                self._connect(step)
            with self._conn.cursor() as cur:
                cur.execute(_SAMPLE_SETTINGS)
                if step.directory and step.tables is None:
                    cur.execute(_TABLES_SQL)
                    step.tables = cur.fetchone()
                cur.execute(self._sql, dict(pids=step.pids, application_name=step.application_name or ""))
                rows = cur.fetchall()
            self._conn.rollback()  # the sample's transaction, and its snapshot, end here
            return rows
        except Exception:  # noqa: BLE001 - a failed sample is retried with a new connection next time
            self._disconnect()
            return []

    def _connect(self, step):
        conn = psycopg2.connect(**step.params)
        self._sql = activity_sql(conn.server_version)
        self._conn, self._conn_step = conn, step

    def _disconnect(self):
        conn, self._conn, self._conn_step = self._conn, None, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - closing a broken connection
                pass


def labelled(entry, noun):
    """'000016 add_performance_indexes up (file 1 of 2)' of (label, number, total)."""
    label, index, total = entry
    if index is None:
        return label
    count = "%d of %d" % (index, total) if total else "%d" % index
    return "%s (%s%s)" % (label, (noun + " ") if noun else "", count)


NONE = Progress()
