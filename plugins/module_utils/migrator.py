# -*- coding: utf-8 -*-
# Copyright: (c) 2026, tmi.migration maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""golang-migrate's postgres driver on a live database: the engine of the pg_migrate module.

Written here because no Ansible module or Python library applies golang-migrate directories:
the state table and its dirty flag, the advisory lock (the same id as golang-migrate v4), each
file as one batch, retries on lock timeouts, online index builds, the history of applied files,
and the plan's analysis and catalog hazards read before anything runs. The files themselves are
read by ``migrations.py``, their statements by ``analysis.py``, the catalog around them by
``hazards.py``. ``Migrator`` takes a connection, the module's options and a ``warn`` callable, so
it runs without Ansible too.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import json
import time
import traceback

from ansible.module_utils.common.text.converters import to_native
from ansible_collections.tmi.migration.plugins.module_utils import analysis, bookkeeping, hazards, rewrite, watchdog
from ansible_collections.tmi.migration.plugins.module_utils.progress import NONE as NO_PROGRESS
from ansible_collections.tmi.migration.plugins.module_utils import migrations as files

try:
    import psycopg2
    from psycopg2 import sql
except ImportError:  # the module reports it when it connects
    psycopg2 = sql = None

LOCK_NOT_AVAILABLE = "55P03"
FOREIGN_KEYS_SQL = (
    "SELECT con.conname, cn.nspname || '.' || cc.relname, pn.nspname || '.' || pc.relname, con.confdeltype::text, "
    "con.confupdtype::text FROM pg_constraint con JOIN pg_class cc ON cc.oid = con.conrelid "
    "JOIN pg_namespace cn ON cn.oid = cc.relnamespace JOIN pg_class pc ON pc.oid = con.confrelid "
    "JOIN pg_namespace pn ON pn.oid = pc.relnamespace WHERE con.contype = 'f'")
# Functions that are not PostgreSQL's own nor an extension's: a call of one may change any table.
USER_FUNCTIONS_SQL = (
    "SELECT DISTINCT p.proname::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
    "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND NOT EXISTS (SELECT 1 FROM pg_depend d "
    "WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e')")
TABLES_SQL = (
    "SELECT n.nspname || '.' || c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')")
# The tables of a schema that are not an extension's, not partitions and not the collection's own.
UNRECORDED_TABLES_SQL = (
    "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE n.nspname = %s AND c.relkind IN ('r', 'p') AND NOT c.relispartition AND c.relname <> ALL(%s::name[]) "
    "AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid "
    "AND d.deptype = 'e') ORDER BY c.relname")
# The argument spec of the options every module that runs migration files has (doc fragment migration_files).
FILE_OPTIONS = dict(
    target_version=dict(type="str", default="latest"),
    state_table=dict(type="str", default=bookkeeping.STATE_TABLE, aliases=["migrations_table"]),
    state_schema=dict(type="str", aliases=["migrations_schema"]),
    lock_timeout=dict(type="str", default="5s"),
    statement_timeout=dict(type="str", default="0"),
    lock_retries=dict(type="int", default=5),
    lock_retry_delay=dict(type="float", default=2),
    online_index_builds=dict(type="bool", default=False),
    lock_queue_timeout=dict(type="float", default=1.0),
    history_table=dict(type="str", default=bookkeeping.HISTORY_TABLE),
    run_lock_table=dict(type="str", default=bookkeeping.RUN_LOCK_TABLE),
)
# The options of Migrator, with the module's defaults.
DEFAULTS = dict(operation="migrate", allow_down=False, state_table=bookkeeping.STATE_TABLE, state_schema=None,
                history_table=bookkeeping.HISTORY_TABLE, run_lock_table=bookkeeping.RUN_LOCK_TABLE,
                lock_wait_timeout=60, lock_timeout="5s", statement_timeout="0", lock_retries=5, lock_retry_delay=2,
                online_index_builds=False, lock_queue_timeout=1.0, rewrites=[], recover_rewrite=False)
# History modes of a rewritten file: its first step committed and the others running, or stopped by a failure.
REWRITING, INTERRUPTED, REWRITTEN = "rewriting", "rewrite-interrupted", "rewritten"
# An interrupted rewrite recorded clean by recover_rewrite so that its down file can run, until it has (its history
# row then follows); set to FINISHED_BY_HAND by a plain force at its version, after its steps were run by hand.
RECOVERED, FINISHED_BY_HAND = "rewrite-recovered", "rewrite-finished-by-hand"
# The columns of a rewritten file's history row that rewrite_row reads (``steps`` through to_jsonb: an older history
# table has no such column).
REWRITE_ROW = "version, title, mode, to_jsonb(h) ->> 'steps', applied_at::text, id"


class Refused(Exception):
    """What stops the operation, with what the module returns beside the message (``details``)."""

    def __init__(self, message, **details):
        super(Refused, self).__init__(message)
        self.details = details


class MigrationFailed(Exception):
    """A step failed; ``lock_waits`` are its attempts' lock waits (watchdog.Window.entry)."""

    def __init__(self, message, lock_waits=()):
        super(MigrationFailed, self).__init__(message)
        self.lock_waits = list(lock_waits)


class OnlineBuildFailed(Exception):
    """An online index build failed; its leftovers and this migration's other builds were dropped."""

    def __init__(self, error):
        super(OnlineBuildFailed, self).__init__(to_native(error))
        self.error = error


class Migrator(object):
    """golang-migrate's postgres driver semantics on one autocommit psycopg2 connection.

    ``options`` are the module's (see DEFAULTS); ``warn(message)`` reports warnings (the module's ``warn``).
    ``watch``, a second autocommit connection to the same database, switches the lock-queue watchdog on
    (``options["lock_queue_timeout"]`` > 0); the caller closes it. A module that reports its progress sets
    ``progress`` (``module_utils/progress.py``), told of each file and online index build as it starts.
    """

    progress = NO_PROGRESS

    def __init__(self, conn, options, warn=None, watch=None):
        self.conn = conn
        self.options = dict(DEFAULTS, **options)
        self.warn = warn or (lambda message: None)
        with conn.cursor() as cur:
            cur.execute("SELECT current_database(), current_schema()")
            self.database, current_schema = cur.fetchone()
        self.schema = self.options["state_schema"] or current_schema
        if self.schema is None:
            raise Refused("No current schema: the search_path names no existing schema. Set state_schema.")
        self.table = self.options["state_table"]
        self.history = self.options["history_table"] or None
        self.lock_id = files.advisory_lock_id(self.database, self.schema, self.table)
        self.locked = False
        self.hazards = []
        self.warned = False
        bound = self.options["lock_queue_timeout"] or 0
        self.watchdog = watchdog.Watchdog(watch, bound, self.warn) if watch is not None and bound > 0 else None
        self.lock_waits = []  # the lock waits of the step being applied

    def _ident(self, name):
        return sql.SQL("{}.{}").format(sql.Identifier(self.schema), sql.Identifier(name))

    def execute(self, query, args=None):
        with self.conn.cursor() as cur:
            cur.execute(query, args)
            return cur.fetchall() if cur.description else None

    # --- state -------------------------------------------------------------------------
    def table_exists(self, name):
        return bool(self.execute("SELECT to_regclass(%s) IS NOT NULL",
                                 (sql.SQL("{}.{}").format(sql.Identifier(self.schema), sql.Identifier(name))
                                  .as_string(self.conn),))[0][0])

    def unrecorded_tables(self):
        """The tables of a schema that has no state table, but the collection's own: a database that is not new.

        Tables of extensions (for example PostGIS's spatial_ref_sys) and partitions do not count.
        """
        if self.table_exists(self.table):
            return []
        own = [self.table, self.options["run_lock_table"]] + ([self.history] if self.history else [])
        return [row[0] for row in self.execute(UNRECORDED_TABLES_SQL, (self.schema, own))]

    def read_state(self):
        if not self.table_exists(self.table):
            return files.NIL_VERSION, False
        rows = self.execute(sql.SQL("SELECT version, dirty FROM {} LIMIT 1").format(self._ident(self.table)))
        if not rows:
            return files.NIL_VERSION, False
        version, dirty = int(rows[0][0]), bool(rows[0][1])
        return (files.NIL_VERSION if version < 0 else version), dirty

    def ensure_state_table(self):
        self.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} (version bigint not null primary key, "
                             "dirty boolean not null)").format(self._ident(self.table)))

    def set_version(self, version, dirty, then=None):
        """golang-migrate's SetVersion: TRUNCATE and INSERT in one transaction; nil + dirty is stored as -1.

        ``then``, (query, args), runs in the same transaction."""
        with self.conn.cursor() as cur:
            cur.execute("BEGIN")
            try:
                cur.execute(sql.SQL("TRUNCATE {}").format(self._ident(self.table)))
                if version != files.NIL_VERSION or dirty:
                    cur.execute(sql.SQL("INSERT INTO {} (version, dirty) VALUES (%s, %s)").format(
                        self._ident(self.table)), (version if version != files.NIL_VERSION else -1, dirty))
                if then is not None:
                    cur.execute(*then)
                cur.execute("COMMIT")
            except Exception:
                cur.execute("ROLLBACK")
                raise

    # --- lock --------------------------------------------------------------------------
    def acquire_lock(self, wait_seconds):
        deadline = time.monotonic() + wait_seconds
        while True:
            if self.execute("SELECT pg_try_advisory_lock(%s)", (self.lock_id,))[0][0]:
                self.locked = True
                return
            if time.monotonic() >= deadline:
                holder = self.lock_holder()
                who = ("pid %(pid)s (application_name '%(application_name)s', user %(user)s from %(client)s, "
                       "connected since %(backend_start)s, state %(state)s)" % holder) if holder else "another session"
                raise Refused(
                    "Another migration holds the lock (advisory lock %d on database %s, %s.%s): %s. Waited %ss. "
                    "Wait for it to finish, or if it is stuck, end that session (SELECT pg_terminate_backend(pid)) "
                    "and run again." % (self.lock_id, self.database, self.schema, self.table, who, wait_seconds),
                    lock_id=self.lock_id, lock_holder=holder)
            time.sleep(0.2)

    def lock_holder(self):
        rows = self.execute(
            "SELECT a.pid, a.application_name, a.usename, coalesce(a.client_addr::text, 'local socket'), "
            "a.backend_start::text, a.state FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.classid::bigint = %s AND l.objid::bigint = %s "
            "AND l.objsubid = 1 AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
            "AND a.pid <> pg_backend_pid()", (self.lock_id >> 32, self.lock_id & 0xFFFFFFFF))
        if not rows:
            return None
        keys = ("pid", "application_name", "user", "client", "backend_start", "state")
        return dict(zip(keys, rows[0]))

    def release_lock(self):
        if self.locked and not self.conn.closed:
            self.execute("SELECT pg_advisory_unlock(%s)", (self.lock_id,))
            self.locked = False

    # --- what the planned files do ------------------------------------------------------
    def analyse(self, steps):
        """analysis.analyse_plan of the planned steps, with the catalog facts it needs, and the tables the
        files act on that neither exist nor are created by an earlier planned statement (``missing``); then
        analysis.review: the sizes of the tables the plan names, the lint findings graded by them and the
        lines showing each file's predicted locks and the findings."""
        foreign_keys = [dict(name=r[0], table=r[1], ref_table=r[2], on_delete=r[3], on_update=r[4])
                        for r in self.execute(FOREIGN_KEYS_SQL)]
        user_functions = set(r[0] for r in self.execute(USER_FUNCTIONS_SQL))
        existing = set(r[0] for r in self.execute(TABLES_SQL))
        index_tables = dict(self.execute(analysis.INDEX_TABLES_SQL)) if steps else {}
        planned = []
        for migration, direction, _after in steps:
            with open(migration.path(direction)) as handle:
                planned.append((migration.version, migration.title, direction, handle.read()))
        result = analysis.analyse_plan(planned, self.schema, user_functions, foreign_keys, index_tables)
        result["missing"] = [table for table in result["requires"] if table not in existing]
        analysis.review(result, planned, self.execute, self.options["online_index_builds"], user_functions,
                        default_schema=self.schema)
        self.find_hazards(steps, result, user_functions, foreign_keys)
        return result

    def find_hazards(self, steps, planned, user_functions, foreign_keys):
        """What the planned files (and, not planned, the same versions' files the other way) break in the catalog,
        into ``self.hazards`` (the list main() returns); warns, and refuses a migration whose steps have an error."""
        catalog = hazards.read_catalog(self.execute)
        found = hazards.find(planned["files"], catalog)
        back = []
        for migration, direction in hazards.reverse_steps(steps):
            with open(migration.path(direction)) as handle:
                back.append((migration.version, migration.title, direction, handle.read()))
        if back:
            found.extend(hazards.find(analysis.analyse_plan(back, self.schema, user_functions, foreign_keys)["files"],
                                      catalog, planned=False))
        self.hazards[:] = found
        for hazard in found if not self.warned else ():
            if hazard["planned"] or hazard["severity"] == "error":
                self.warn("%s%s: %s" % (hazard["severity"].capitalize(), "" if hazard["planned"] else
                                        " (not run now: the %s file of a planned version)"
                                        % hazard["direction"], hazard["message"]))
        self.warned = True
        refused = [h["message"] for h in hazards.errors(found)]
        options = self.options
        if refused and options["operation"] == "migrate" and (options["allow_down"] or all(
                direction == "up" for _m, direction, _a in steps)):
            raise Refused("Refusing to migrate: %s Nothing was changed." % " ".join(refused),
                          hazards=found, analysis=planned, plan=plan_dicts(steps))

    # --- history -----------------------------------------------------------------------
    def ensure_history_table(self):
        if self.history:
            self.execute(sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (id bigserial PRIMARY KEY, version bigint NOT NULL, "
                "title text NOT NULL, direction text NOT NULL, sha256 text NOT NULL, "
                "applied_at timestamptz NOT NULL DEFAULT now(), duration_ms bigint NOT NULL, "
                "applied_by text NOT NULL DEFAULT current_user, mode text NOT NULL)").format(self._ident(self.history)))

    def record_history(self, migration, direction, path, duration, mode):
        if self.history:
            self.execute(sql.SQL("INSERT INTO {} (version, title, direction, sha256, duration_ms, mode) "
                                 "VALUES (%s, %s, %s, %s, %s, %s)").format(self._ident(self.history)),
                         (migration.version, migration.title, direction, files.file_sha256(path),
                          int(duration * 1000), mode))

    def interrupted_rewrite(self, version):
        """The history row of a rewritten file at ``version`` whose first step committed and whose other steps did
        not all finish (the dirty flag alone cannot tell that from a file that failed part-way), or None."""
        if not self.history or not self.table_exists(self.history):
            return None
        rows = self.execute(sql.SQL("SELECT %s FROM {} h ORDER BY id DESC LIMIT 1" % REWRITE_ROW).format(
            self._ident(self.history)))
        # REWRITTEN too: the runner stopped after the last step committed and before the version was cleared.
        if not rows or int(rows[0][0]) != version or rows[0][2] not in (REWRITING, INTERRUPTED, REWRITTEN) \
                or not rows[0][3]:
            return None
        return rewrite_row(rows[0])

    def recovered_rewrite(self, version):
        """The history row of a rewritten file at ``version`` that recover_rewrite recorded clean and whose down file
        has not run since (its latest row has mode RECOVERED), or None: its deferred steps never ran."""
        if not self.history or not self.table_exists(self.history):
            return None
        rows = self.execute(sql.SQL("SELECT %s FROM {} h WHERE version = %%s ORDER BY id DESC LIMIT 1" % REWRITE_ROW)
                            .format(self._ident(self.history)), (version,))
        if not rows or rows[0][2] != RECOVERED or not rows[0][3]:
            return None
        return rewrite_row(rows[0])

    def _set_mode(self, row, mode):
        """(query, args) setting the mode of history row ``row``: for set_version's ``then``."""
        return (sql.SQL("UPDATE {} SET mode = %s WHERE id = %s").format(self._ident(self.history)), (mode, row))

    def proven_rewrite(self, migration, direction, path, body):
        """The steps of a file's online-equivalent rewrite when the rehearsal proved it (its version and sha256 are
        in the ``rewrites`` option), else None: the file runs as written."""
        if direction != "up":
            return None
        proven = [item for item in self.options["rewrites"] or ()
                  if int(item.get("version", -1)) == migration.version]
        if not proven:
            return None
        digest = files.file_sha256(path)
        if not any(item.get("sha256") == digest for item in proven):
            self.warn("Migration %06d %s changed since the rehearsal proved its rewrite (sha256 %s, proven %s): it "
                      "runs as written." % (migration.version, migration.title, digest,
                                            ", ".join(str(item.get("sha256")) for item in proven)))
            return None
        try:
            return rewrite.plan(body, self.schema, set(r[0] for r in self.execute(USER_FUNCTIONS_SQL)))
        except rewrite.Declined as declined:
            self.warn("Migration %06d %s has a proven rewrite, but it is declined now (%s): it runs as written."
                      % (migration.version, migration.title, declined))
            return None

    def _run_step(self, step, then=None):
        """One step of a rewritten file: a batch in one implicit transaction, or a CONCURRENTLY statement.

        ``then`` (SQL text) runs after it - in the same batch, so in the same transaction, when the step is one - and
        its rows are returned."""
        if then is not None and step["transaction"]:
            return self.execute(step["sql"] + "\n;\n" + then)
        self._run_file(step["sql"], "transaction" if step["transaction"] else "autocommit")
        return self.execute(then) if then is not None else None

    def edited_files(self, migrations, current):
        if not self.history or not self.table_exists(self.history):
            return []
        rows = self.execute(sql.SQL(
            "SELECT DISTINCT ON (version) version, direction, sha256, applied_at::text FROM {} "
            "ORDER BY version, id DESC").format(self._ident(self.history)))
        edited = []
        for version, direction, digest, applied_at in rows:
            migration = migrations.get(int(version))
            if direction != "up" or version > current or migration is None or migration.up is None:
                continue
            now = files.file_sha256(migration.up)
            if now != digest:
                edited.append(dict(version=int(version), file=migration.up, applied_at=applied_at,
                                   sha256_applied=digest, sha256_now=now))
        return edited

    # --- running -----------------------------------------------------------------------
    def _session_timeouts(self):
        self.execute("SELECT set_config('lock_timeout', %s, false), set_config('statement_timeout', %s, false)",
                     (self.options["lock_timeout"], self.options["statement_timeout"]))

    def _reset_timeouts(self):
        self.execute("RESET lock_timeout; RESET statement_timeout")

    def _watched(self, attempt, may_cancel=True, index=None, step=None):
        """The watchdog around one attempt (a context yielding its window), or nothing when it is off; ``index`` (an
        online build's) and ``step`` (a rewritten file's step number) label its lock waits."""
        if self.watchdog is None:
            return contextlib.nullcontext()
        return self.watchdog.watching(self.conn.get_backend_pid(), attempt, self.lock_waits, may_cancel, index, step)

    def apply(self, migration, direction, version_after, version_before):
        """Run one step with retries on lock timeouts; return its result dict or raise MigrationFailed."""
        path = migration.path(direction)
        self.progress.item("%06d %s %s" % (migration.version, migration.title, direction))
        with open(path, "r") as handle:
            body = handle.read()
        steps = self.proven_rewrite(migration, direction, path, body)
        if steps is not None:
            return RewrittenFile(self, migration, path, steps).apply(version_after, version_before)
        online = (self.options["online_index_builds"] and direction == "up" and files.is_index_only(body))
        mode = "online" if online else ("autocommit" if files.needs_autocommit(body) else "transaction")
        statements = len(files.split_statements(body))
        retries, delay = self.options["lock_retries"], self.options["lock_retry_delay"]
        attempt = 0
        started = time.monotonic()
        self.lock_waits = []
        while True:
            attempt += 1
            self.set_version(version_after, True)
            self._session_timeouts()
            window = None
            try:
                if online:
                    attempt = self._run_online(body, retries, delay)
                else:
                    # A cancel inside an autocommit file would leave its earlier statements applied: watched only.
                    with self._watched(attempt, may_cancel=mode == "transaction") as window:
                        self._run_file(body, mode)
            except (psycopg2.Error, OnlineBuildFailed) as failure:
                self._reset_timeouts()
                error = failure.error if isinstance(failure, OnlineBuildFailed) else failure
                # A lock timeout, or the watchdog's cancel of a lock wait, rolls the whole batch back; a failed
                # online build was undone: nothing remains.
                retryable = (error.pgcode == LOCK_NOT_AVAILABLE or watchdog.cancelled(window, error)) \
                    and mode == "transaction"
                clean = retryable or online
                if clean:
                    self.set_version(version_before, False)
                if retryable and attempt <= retries:
                    time.sleep(delay * (2 ** (attempt - 1)))
                    continue
                raise MigrationFailed(self._failure_message(migration, direction, path, body, error, attempt, clean,
                                                            version_before, version_after, mode),
                                      self.lock_waits) from failure
            self._reset_timeouts()
            duration = time.monotonic() - started
            self.set_version(version_after, False)
            self.record_history(migration, direction, path, duration, mode)
            return dict(version=migration.version, title=migration.title, direction=direction, file=path, mode=mode,
                        statements=statements, attempts=attempt, duration=round(duration, 3),
                        lock_waits=self.lock_waits, lock_wait_summary=watchdog.describe(self.lock_waits))

    def _run_file(self, body, mode):
        """Run a file as golang-migrate does: one batch (one implicit transaction), or, for a file that cannot
        run in a transaction block, statement by statement (the rehearsal runs it observed instead)."""
        if mode == "autocommit":
            for statement in files.split_statements(body):
                self.execute(statement)
        else:
            self.execute(body)

    def _index_state(self, schema, name):
        rows = self.execute(
            "SELECT i.indisvalid FROM pg_class c JOIN pg_index i ON i.indexrelid = c.oid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relname = %s AND n.nspname = %s",
            (name, schema or self.schema))
        return None if not rows else ("valid" if rows[0][0] else "invalid")

    def _index_owner(self, schema, name):
        """(valid, attached) of an index - attached when a constraint uses it - or None when there is none."""
        rows = self.execute(
            "SELECT i.indisvalid, EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = c.oid) FROM pg_class c "
            "JOIN pg_index i ON i.indexrelid = c.oid JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relname = %s AND n.nspname = %s", (name, schema or self.schema))
        return None if not rows else (bool(rows[0][0]), bool(rows[0][1]))

    def clean_rewrite(self, steps):
        """Remove what the unfinished steps of a rewritten file left that its down file does not know (``leftovers``),
        under the session's lock_timeout: ([what was dropped], [what could not be, with why])."""
        dropped, problems = [], []
        self._session_timeouts()
        try:
            for item in leftovers(steps):
                try:
                    if item["kind"] == "index":
                        state = self._index_owner(item["schema"], item["name"])
                        if state is None or state[1] or (state[0] and item["only_invalid"]):
                            continue  # gone, owned by a constraint that committed, or a valid index not ours
                        self._drop_index(item["schema"], item["name"])
                        dropped.append("the %s index %s" % ("valid" if state[0] else "INVALID", item["name"]))
                    else:
                        self.execute(item["sql"])
                        dropped.append("the helper CHECK %s" % item["name"])
                except psycopg2.Error as error:
                    what = "the %s %s" % ("index" if item["kind"] == "index" else "helper CHECK", item["name"])
                    if error.pgcode == LOCK_NOT_AVAILABLE:
                        problems.append("%s could not be dropped: its lock was not granted within lock_timeout "
                                        "%s (a long transaction holds the table); the recovery drops it - "
                                        "playbooks/rollback.yml, or pg_migrate operation=force with "
                                        "recover_rewrite" % (what, self.options["lock_timeout"]))
                    else:
                        problems.append("%s could not be dropped (%s [SQLSTATE %s])"
                                        % (what, server_reason(error), error.pgcode))
        finally:
            self._reset_timeouts()
        return dropped, problems

    def _drop_index(self, schema, name):
        self.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}.{}").format(
            sql.Identifier(schema or self.schema), sql.Identifier(name)))

    def _run_online(self, body, retries, delay):
        """Build each index CONCURRENTLY, retrying one build on lock timeouts; undo everything on failure.

        Returns the largest number of attempts any build needed.
        """
        built, most_attempts = [], 1
        try:
            builds = list(files.concurrent_index_builds(body))
            for number, (name, schema, statement) in enumerate(builds, 1):
                self.progress.part("online build %d of %d" % (number, len(builds)))
                existed = self._index_state(schema, name)
                if existed == "invalid":  # leftover of an earlier failed build of the same index
                    self._drop_index(schema, name)
                    existed = None
                attempt = 0
                while True:
                    attempt += 1
                    window = None
                    try:
                        with self._watched(attempt, index=name) as window:
                            self.execute(statement)
                        break
                    except psycopg2.Error as error:
                        # A failed CONCURRENTLY build leaves an INVALID index behind.
                        if self._index_state(schema, name) == "invalid":
                            self._drop_index(schema, name)
                        retryable = error.pgcode == LOCK_NOT_AVAILABLE or watchdog.cancelled(window, error)
                        if not retryable or attempt > retries:
                            raise
                        time.sleep(delay * (2 ** (attempt - 1)))
                most_attempts = max(most_attempts, attempt)
                if existed is None:
                    built.append((schema, name))
        except psycopg2.Error as error:
            self._reset_timeouts()
            for schema, name in built:
                self._drop_index(schema, name)
            raise OnlineBuildFailed(error) from error
        return most_attempts

    def _failure_message(self, migration, direction, path, body, error, attempts, clean, version_before,
                         version_after, mode):
        line, statement = files.locate_error(body, getattr(error.diag, "statement_position", None))
        reason = server_reason(error)
        where = "%s failed%s" % (path, " at line %d" % line if line else "")
        text = "Migration %d %s (%s) %s: %s [SQLSTATE %s]." % (
            migration.version, migration.title, direction, where, reason, error.pgcode)
        if statement:
            text += " Statement: %s" % (statement if len(statement) < 600 else statement[:600] + " ...")
        cancelled = bool(self.lock_waits) and self.lock_waits[-1]["cancelled"]
        waited = error.pgcode == LOCK_NOT_AVAILABLE or (error.pgcode == watchdog.QUERY_CANCELED and cancelled)
        if clean:
            if waited:
                cancels = sum(1 for wait in self.lock_waits if wait["cancelled"])
                text += (" It could not get its locks within lock_timeout after %d attempts%s: a long transaction "
                         "holds a lock on the table. Nothing was changed; the version stays %d.%s Retry when the "
                         "blocking session is gone (see pg_stat_activity), or raise lock_retries." % (
                             attempts, " (%d of them cancelled by the watchdog: application sessions queued behind "
                                       "its lock request for longer than lock_queue_timeout, %s s)"
                             % (cancels, self.options["lock_queue_timeout"]) if cancels else "",
                             version_before, " " + watchdog.blockers_text(self.lock_waits) if self.lock_waits else ""))
            else:
                text += " Nothing of it remains; the version stays %d. Fix the cause and run again." % version_before
            return text
        undone = ("The whole file was rolled back, so the schema is still at version %d." % version_before
                  if mode == "transaction" else
                  "The file ran statement by statement, so the statements before the failing one are applied.")
        return text + (" %s The database is now marked dirty at version %d, as golang-migrate marks it. To recover: "
                       "fix the migration or the data, then run operation=force with target_version=%d (the version "
                       "the schema is really at; changes no schema) and migrate again; or run playbooks/rollback.yml "
                       "to restore the backup." % (undone, version_after,
                                                   version_before if mode == "transaction" else version_after))

    def run(self, migrations, target, latest, check_mode=False):
        """The module's whole operation (``options["operation"]``) towards version ``target``: its result dict.

        Raises Refused (with the result so far in ``details``) for anything that stops it, a failed migration
        included. The caller releases the lock (``release_lock``) and closes the connection.
        """
        result = dict(changed=False, lock_id=self.lock_id, target_version=target, latest_version=latest,
                      applied=[], plan=[], edited_files=[])
        try:
            steps = self._read(migrations, target, result)
            if self.options["operation"] == "status":
                holder = self.lock_holder()
                if holder:
                    result["lock_holder"] = holder
            elif self.options["operation"] == "force":
                self._force(target, result, check_mode)
            else:
                self._migrate(migrations, target, steps, result, check_mode)
            return result
        except psycopg2.Error as error:
            raise Refused("PostgreSQL error while managing migration state: %s" % to_native(error).strip(),
                          exception=traceback.format_exc(), **result) from error

    def _read(self, migrations, target, result):
        """The state, the plan and what it does, into ``result``; returns the planned steps."""
        operation = self.options["operation"]
        if operation != "force":
            unrecorded = self.unrecorded_tables()
            if unrecorded:
                raise Refused(unrecorded_message(self, unrecorded), unrecorded_tables=unrecorded, **result)
        before, dirty = self.read_state()
        result.update(version_before=before, version_after=before, dirty=dirty)
        steps = []
        # Without migration files (status of the state alone) there is no plan and nothing to compare with.
        if operation != "force" and migrations:
            try:
                steps = files.plan(migrations, before, target)
            except files.MigrationError as error:
                if operation == "migrate":
                    raise Refused(to_native(error), **result) from error
                result["plan_error"] = to_native(error)
        result["plan"] = plan_dicts(steps)
        if dirty:
            result["interrupted_rewrite"] = self.interrupted_rewrite(before)
        else:
            recovered = self.recovered_rewrite(before)
            if recovered:
                result["recovered_rewrite"] = recovered
        warn_missing_down(self.warn, steps, result)
        result["analysis"] = self.analyse(steps)
        result["hazards"] = self.hazards
        result["edited_files"] = self.edited_files(migrations, before) if migrations else []
        for edited in result["edited_files"]:
            self.warn("Migration %(version)d (%(file)s) changed since it was applied on %(applied_at)s; "
                      "the database holds what the old file did." % edited)
        return steps

    def _force(self, target, result, check_mode):
        result["changed"] = (result["version_before"], result["dirty"]) != (target, False)
        if self.options["recover_rewrite"] and result["changed"]:
            return self._recover_rewrite(target, result, check_mode)
        # Forced at the version of a recovered rewrite whose down file has not run: the operator finished its steps
        # by hand, as the refusal in _migrate says; the history row records it and migrations go on from there.
        finished = result.get("recovered_rewrite") if target == result["version_before"] else None
        result.update(version_after=target, dirty=False)
        if finished:
            result["changed"] = True
        if result["changed"] and not check_mode:
            self.acquire_lock(self.options["lock_wait_timeout"])
            self.ensure_state_table()
            if finished and self.recovered_rewrite(target):
                self.set_version(target, False, self._set_mode(finished["id"], FINISHED_BY_HAND))
            else:
                self.set_version(target, False)

    def _recover_rewrite(self, target, result, check_mode):
        """force with recover_rewrite: only from an interrupted rewrite at ``target``, whose leftovers the down file
        does not know are dropped first (``clean_rewrite``); refused, the dirty flag as it was, when they cannot be."""
        if not check_mode:
            self.acquire_lock(self.options["lock_wait_timeout"])
            before, dirty = self.read_state()
            result.update(version_before=before, version_after=before, dirty=dirty)
        before, dirty = result["version_before"], result["dirty"]
        interrupted = self.interrupted_rewrite(before) if dirty else None
        if not dirty or before != target or not interrupted:
            raise Refused("recover_rewrite records version %d only when the database is dirty at it because a "
                          "rewritten file stopped between its steps, and it is %s at version %d%s. Nothing was "
                          "changed. Check the state with operation=status; force without recover_rewrite records a "
                          "version as it is."
                          % (target, "dirty" if dirty else "clean", before,
                             "" if not dirty or interrupted else " with no interrupted rewrite in the history table"),
                          **dict(result, changed=False))
        result["interrupted_rewrite"] = interrupted
        result["recovered"] = [item["name"] for item in leftovers(interrupted["steps"])]
        if check_mode:
            result.update(version_after=target, dirty=False)
            return
        dropped, problems = self.clean_rewrite(interrupted["steps"])
        result["recovered"] = dropped
        if problems:
            raise Refused("The leftovers of migration %06d %s, rewritten and interrupted, were not all dropped: %s. "
                          "The version stays %d, dirty, so that the recovery runs again; its down file would not "
                          "remove them. Retry when the blocking session is gone (see pg_stat_activity)%s."
                          % (target, interrupted["title"], "; ".join(problems), target,
                             ("; dropped meanwhile: %s" % ", ".join(dropped)) if dropped else ""),
                          **dict(result, changed=bool(dropped)))
        self.ensure_state_table()
        # In one transaction with the clean version: the row says the deferred steps did not run, so that nothing but
        # the file's down file runs on top of it (_migrate) even if the rollback stops before that down file.
        self.set_version(target, False, self._set_mode(interrupted["id"], RECOVERED))
        result.update(version_after=target, dirty=False)

    def _migrate(self, migrations, target, steps, result, check_mode):
        before, dirty = result["version_before"], result["dirty"]
        if not check_mode:
            # Decide only while holding the lock: a run in progress shows its version as dirty until it ends.
            self.acquire_lock(self.options["lock_wait_timeout"])
            before, dirty = self.read_state()
            try:
                steps = files.plan(migrations, before, target)
            except files.MigrationError as error:
                raise Refused(to_native(error), **result) from error
            if plan_dicts(steps) != result["plan"]:  # another run moved the version meanwhile
                result["analysis"] = self.analyse(steps)
                warn_missing_down(self.warn, steps, result)
            result.update(version_before=before, version_after=before, dirty=dirty, plan=plan_dicts(steps))
        if dirty:
            holder = None if self.locked else self.lock_holder()
            if holder:
                raise Refused("Version %d is marked dirty because another migration is running right now (pid %s, "
                              "application_name '%s'); wait for it to finish."
                              % (before, holder["pid"], holder["application_name"]), lock_holder=holder, **result)
            interrupted = self.interrupted_rewrite(before)
            if interrupted:
                raise Refused(interrupted_message(interrupted), **dict(result, interrupted_rewrite=interrupted))
            raise Refused(
                "The database is dirty at version %d: a migration failed part-way and nothing will run on top of it. "
                "Inspect the schema, then either run operation=force with target_version set to the version the "
                "schema is really at (this changes no schema, like 'migrate force V'; with the playbooks: "
                "playbooks/force_version.yml -e tmi_force_version=<version>) and migrate again, or run "
                "playbooks/rollback.yml to restore the backup." % before, **result)
        recovered = self.recovered_rewrite(before)
        if recovered and not (steps and steps[0][0].version == before and steps[0][1] == "down"):
            raise Refused(recovered_message(recovered, plan_dicts(steps)),
                          **dict(result, recovered_rewrite=recovered))
        if target < before and not self.options["allow_down"]:
            raise Refused("target_version %d is below the database's version %d: going down runs down migrations "
                          "that drop schema and data. Set allow_down: true to confirm, or check target_version."
                          % (target, before), **result)
        if not steps:
            return
        missing = result["analysis"]["missing"]
        if missing:
            raise Refused("The planned migrations act on %s, which %s not exist in database %s (and no earlier "
                          "planned statement creates %s). Point the module at the database these migrations belong "
                          "to, or check the files. Nothing was changed."
                          % (", ".join(missing), "does" if len(missing) == 1 else "do", self.database,
                             "it" if len(missing) == 1 else "them"), **result)
        result["changed"] = True
        if check_mode:
            result["version_after"] = target
            return

        self.ensure_state_table()
        self.ensure_history_table()
        current = before
        self.progress.expect(len(steps))
        for migration, direction, after in steps:
            # Wall-clock time, beside the phases' own: the HTML report places each file on the run's timeline.
            started = time.time()
            try:
                result["applied"].append(dict(self.apply(migration, direction, after, current),
                                              started=round(started, 3)))
            except MigrationFailed as failure:
                result["version_after"], result["dirty"] = self.read_state()
                if result["dirty"]:
                    result["interrupted_rewrite"] = self.interrupted_rewrite(result["version_after"])
                result["changed"] = True
                result["failed_migration"] = dict(plan_dicts([(migration, direction, after)])[0],
                                                  lock_waits=failure.lock_waits, started=round(started, 3),
                                                  duration=round(time.time() - started, 3))
                raise Refused(to_native(failure), **result) from failure
            current = after
        result["version_after"], result["dirty"] = self.read_state()


class RewrittenFile(object):
    """A file run as its proven online-equivalent steps (``rewrite.plan``) on a Migrator's connection.

    The version is dirty from before the first step until the last one committed. A lock timeout, or the watchdog's
    cancel of a lock wait, retries the step that hit it, never an earlier one. Once the first step committed, the
    history row (mode REWRITING, then REWRITTEN or INTERRUPTED) holds the steps and which committed, so that a
    rollback can tell "the file's transaction committed, its deferred steps did not finish" from a dirty state nobody
    knows.
    """

    def __init__(self, engine, migration, path, steps):
        self.engine = engine
        self.migration = migration
        self.path = path
        self.steps = [dict(step, status="pending") for step in steps]
        self.row = None

    def apply(self, version_after, version_before):
        engine, options = self.engine, self.engine.options
        retries, delay = options["lock_retries"], options["lock_retry_delay"]
        started = time.monotonic()
        attempts = 1
        engine.lock_waits = []
        if engine.history:
            engine.execute(sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS steps text").format(
                engine._ident(engine.history)))
        for index, step in enumerate(self.steps):
            attempt = 0
            step_started = time.monotonic()
            while True:
                attempt += 1
                if index == 0:
                    engine.set_version(version_after, True)
                    if not step["transaction"]:
                        # A first step outside a transaction (a file whose own transaction is empty) leaves an index
                        # even when the runner is killed in it: the row says so before it starts.
                        self._record(REWRITING, started)
                engine._session_timeouts()
                window = None
                try:
                    self._drop_invalid(step)  # the leftover of an earlier failed or killed build of the same index
                    # The history row is written in step 1's transaction: it exists exactly when step 1 committed.
                    # Each step is one transaction or one CONCURRENTLY build: a cancel leaves nothing of it (an
                    # INVALID index at most, dropped below), so the watchdog may cancel either.
                    with engine._watched(attempt, step=step["step"]) as window:
                        rows = engine._run_step(step, self._insert(REWRITING if len(self.steps) > 1 else REWRITTEN,
                                                                   started, "committed")
                                                if index == 0 and step["transaction"] and engine.history else None)
                    if rows:
                        self.row = rows[0][0]
                    break
                except psycopg2.Error as error:
                    retryable = error.pgcode == LOCK_NOT_AVAILABLE or watchdog.cancelled(window, error)
                    step.update(status="failed", error=step_error(error), attempts=attempt)
                    if index == 0:
                        # Under lock_timeout still: a cleanup waiting behind the transaction that made the step fail
                        # would queue every query of the application behind it.
                        left = self._drop_invalid_quietly(step)
                        engine._reset_timeouts()
                        clean = retryable or not step["transaction"]
                        if clean:
                            engine.set_version(version_before, False)  # nothing of the file remains
                            self._unrecord()
                        if retryable and attempt <= retries:
                            step.update(status="pending", error=None)
                            time.sleep(delay * (2 ** (attempt - 1)))
                            continue
                        raise MigrationFailed(self._first_failed(error, attempt, version_before, version_after, clean,
                                                                 left), engine.lock_waits) from error
                    if retryable and attempt <= retries:
                        self._drop_invalid_quietly(step)
                        engine._reset_timeouts()
                        step.update(status="pending", error=None)
                        time.sleep(delay * (2 ** (attempt - 1)))
                        continue
                    if retryable:  # the history row says why, as the message does
                        step["error"] = self._locks_not_granted(step, error, attempt)
                    self._record(INTERRUPTED, started)
                    dropped, problems = engine.clean_rewrite(self.steps)  # under lock_timeout; resets it after
                    raise MigrationFailed(self._interrupted(step, error, dropped, problems, version_after),
                                          engine.lock_waits) from error
            engine._reset_timeouts()
            attempts = max(attempts, attempt)
            step.update(status="committed", attempts=attempt, duration=round(time.monotonic() - step_started, 3))
            self._record(REWRITING if index + 1 < len(self.steps) else REWRITTEN, started)
        duration = time.monotonic() - started
        engine.set_version(version_after, False)
        return dict(version=self.migration.version, title=self.migration.title, direction="up", file=self.path,
                    mode=REWRITTEN, statements=sum(len(files.split_statements(s["sql"])) for s in self.steps),
                    attempts=attempts, duration=round(duration, 3), steps=self.steps, lock_waits=engine.lock_waits,
                    lock_wait_summary=watchdog.describe(engine.lock_waits))

    def _drop_invalid(self, step):
        """A failed CONCURRENTLY build leaves an INVALID index: drop it (as the online builds do)."""
        if step["kind"] == rewrite.BUILD_INDEX and \
                self.engine._index_state(step.get("schema"), step["index"]) == "invalid":
            self.engine._drop_index(step.get("schema"), step["index"])

    def _drop_invalid_quietly(self, step):
        """``_drop_invalid`` after a failure: what could not be cleaned up, or ''."""
        try:
            self._drop_invalid(step)
        except psycopg2.Error as error:
            if error.pgcode == LOCK_NOT_AVAILABLE:
                return ("the INVALID index %s its failed build left was not dropped: its lock was not granted within "
                        "lock_timeout; the next run of the file drops it before building, or drop it by hand (DROP "
                        "INDEX CONCURRENTLY)" % step["index"])
            return "the INVALID index %s its failed build left could not be dropped (%s)" % (
                step["index"], server_reason(error))
        return ""

    def _insert(self, mode, started, status=None):
        """The INSERT of this file's history row (RETURNING its id), as SQL text; ``status``: the first step's, as it
        will be once the statement commits."""
        engine = self.engine
        steps = [dict(step, status=status) if status and number == 0 else step
                 for number, step in enumerate(self.steps)]
        with engine.conn.cursor() as cur:
            return to_native(cur.mogrify(sql.SQL(
                "INSERT INTO {} (version, title, direction, sha256, duration_ms, mode, steps) "
                "VALUES (%s, %s, 'up', %s, %s, %s, %s) RETURNING id").format(engine._ident(engine.history)),
                (self.migration.version, self.migration.title, files.file_sha256(self.path),
                 int((time.monotonic() - started) * 1000), mode, json.dumps(steps))))

    def _record(self, mode, started):
        engine = self.engine
        if not engine.history:
            return
        if self.row is None:
            self.row = engine.execute(self._insert(mode, started))[0][0]
        else:
            engine.execute(sql.SQL("UPDATE {} SET mode = %s, steps = %s, duration_ms = %s WHERE id = %s").format(
                engine._ident(engine.history)), (mode, json.dumps(self.steps),
                                                 int((time.monotonic() - started) * 1000), self.row))

    def _unrecord(self):
        """The first step left nothing: neither does its history row."""
        if self.row is not None:
            self.engine.execute(sql.SQL("DELETE FROM {} WHERE id = %s").format(
                self.engine._ident(self.engine.history)), (self.row,))
            self.row = None

    def _first_failed(self, error, attempts, version_before, version_after, clean, left):
        step = self.steps[0]
        text = ("%s The file ran rewritten for online use (proven in the rehearsal); its first step failed: %s."
                % (self.engine._failure_message(self.migration, "up", self.path, step["sql"], error, attempts, clean,
                                                version_before, version_after, "transaction"), step["description"]))
        return text + (" Note: %s." % left if left else "")

    def _locks_not_granted(self, step, error, attempts):
        """Why a later step whose lock timeouts or watchdog cancels used up its retries failed, as ``_failure_message``
        says it of a file: its attempts, the watchdog's cancels and the blockers of its last wait."""
        engine = self.engine
        waits = [wait for wait in engine.lock_waits if wait.get("step") == step["step"]]
        cancels = sum(1 for wait in waits if wait["cancelled"])
        blockers = watchdog.blockers_text(waits)
        return ("it could not get its locks within lock_timeout after %d attempts%s: %s. A long transaction holds a "
                "lock on the table.%s" % (
                    attempts, " (%d of them cancelled by the watchdog: application sessions queued behind its lock "
                              "request for longer than lock_queue_timeout, %s s)"
                    % (cancels, engine.options["lock_queue_timeout"]) if cancels else "",
                    step_error(error), " " + blockers if blockers else ""))

    def _interrupted(self, failed, error, dropped, problems, version):
        committed = [s for s in self.steps if s["status"] == "committed"]
        pending = [s for s in self.steps if s["status"] == "pending"]
        reason = failed["error"] if failed["error"].startswith("it could not get its locks") else \
            "%s [SQLSTATE %s]" % (server_reason(error), error.pgcode)
        text = ("Migration %d %s (up) ran rewritten for online use (proven in the rehearsal) and stopped between its "
                "steps: step %d (%s) failed: %s%s Steps %s committed (%s); %s. The database is marked "
                "dirty at version %d and the history table records the interrupted rewrite." % (
                    self.migration.version, self.migration.title, failed["step"], failed["sql"],
                    reason, "" if reason.endswith(".") else ".",
                    ", ".join(str(s["step"]) for s in committed), "; ".join(s["description"] for s in committed),
                    ("steps %s did not run" % ", ".join(str(s["step"]) for s in pending)) if pending
                    else "no step is left after it", version))
        if dropped:
            text += (" Dropped what the unfinished steps left and the down file does not remove: %s."
                     % ", ".join(dropped))
        if problems:
            text += " Not cleaned up: %s." % "; ".join(problems)
        return text + " " + recovery_text(version, self.steps)


def leftovers(steps):
    """What the unfinished steps of a rewritten file (``steps`` with their status, as the history row holds them)
    leave that its down file does not remove, in order; each a dict with ``kind``:

    * ``index`` (``schema``, ``name``, ``only_invalid``): the index of a unique build whose attach did not commit -
      the down file drops the constraint, which does not exist, not the index; the caller skips it when a constraint
      owns it (the attach committed but was not recorded). A plain index build that did not commit, or a failed
      build: only its INVALID leftover (a valid index of that name is a committed build, which the down file drops,
      or was there before).
    * ``helper`` (``sql``, ``name``): the helper CHECK of a SET NOT NULL whose helper was not dropped; the down file
      does not know it (``DROP CONSTRAINT IF EXISTS``)."""
    attached = dict((step["object"], step.get("status") == "committed")
                    for step in steps if step["kind"] == rewrite.ATTACH)
    found = []
    for step in steps:
        status = step.get("status")
        if step["kind"] == rewrite.BUILD_INDEX:
            name = step.get("index") or step["object"]
            if name in attached and not attached[name] and status != "failed":
                found.append(dict(kind="index", schema=step.get("schema"), name=name, only_invalid=False))
            elif status != "committed":
                found.append(dict(kind="index", schema=step.get("schema"), name=name, only_invalid=True))
        elif step["kind"] == rewrite.DROP_HELPER and status != "committed":
            found.append(dict(kind="helper", name=step["object"],
                              sql=step["sql"].replace(" DROP CONSTRAINT ", " DROP CONSTRAINT IF EXISTS ", 1)))
    return found


def step_error(error):
    """What the history row keeps of a step's error: the server's main message and SQLSTATE, never its detail
    ("Failing row contains (...)" holds the row's values)."""
    diag = getattr(error, "diag", None)
    message = to_native(getattr(diag, "message_primary", None) or error).strip().splitlines()[0]
    return "%s [SQLSTATE %s]" % (message, getattr(error, "pgcode", None))


def by_hand(steps):
    """The statements that finish an interrupted rewritten file: the steps not committed, a SET NOT NULL whose
    helper CHECK was dropped from its start (the helper added again)."""
    unfinished = set(step["helper"] for step in steps if step["kind"] == rewrite.DROP_HELPER
                     and step.get("status") != "committed")
    statements = []
    for step in steps:
        if step.get("helper") in unfinished:
            if step.get("helper_add"):
                statements.append(step["helper_add"])
            statements.append(step["sql"])
        elif step.get("status") != "committed":
            statements.append(step["sql"])
    return statements


def recovery_text(version, steps):
    """How to recover from a rewritten file interrupted at ``version`` (``steps``: all of them, with their status)."""
    return ("To recover keeping every write: run playbooks/rollback.yml (it recognises the interrupted rewrite, "
            "records version %d and runs its down file, which the rehearsal ran, then the earlier down files as "
            "planned), fix the data and migrate again; or fix the data and finish the file by hand - %s - then run "
            "operation=force with target_version=%d." % (version, "; ".join(by_hand(steps)), version))


def rewrite_row(row):
    """The dict of a rewritten file's history row (version, title, mode, steps as JSON text, applied_at, id)."""
    steps = json.loads(row[3])
    return dict(version=int(row[0]), title=row[1], mode=row[2], started_at=row[4], steps=steps, id=row[5],
                committed=[step["step"] for step in steps if step.get("status") == "committed"],
                failed=[step["step"] for step in steps if step.get("status") == "failed"])


def recovered_message(recovered, plan):
    """The refusal of a plan that does not start with the down file of a recovered rewrite whose down file never ran."""
    version = recovered["version"]
    pending = [str(s["step"]) for s in recovered["steps"] if s.get("status") != "committed"]
    return ("Version %d is recorded clean, but migration %06d %s ran rewritten for online use and did not finish: "
            "steps %s committed, steps %s never ran. A rollback recorded the version clean so that its down file could "
            "run next (pg_migrate recover_rewrite), and that down file has not run - the rollback stopped before it or "
            "it failed. The schema lacks what those steps add (constraints still NOT VALID, unique constraints, "
            "NOT NULL, indexes), so %s. Nothing was changed. To recover: run playbooks/rollback.yml again (it runs "
            "the down file of version %d first; if it failed on a lock, when the blocking session is gone), or finish "
            "the file by hand - %s - then run operation=force with target_version=%d, which records that its steps "
            "ran." % (version, version, recovered["title"], ", ".join(str(n) for n in recovered["committed"]) or "none",
                      ", ".join(pending) or "none",
                      "nothing but its down file runs on top of it" if not plan else
                      "the plan (%s) does not run on top of it" % ", ".join(
                          "%06d %s" % (step["version"], step["direction"]) for step in plan),
                      version, "; ".join(by_hand(recovered["steps"])), version))


def interrupted_message(interrupted):
    committed = interrupted["committed"]
    failed = [s for s in interrupted["steps"] if s["step"] in interrupted["failed"]]
    return ("The database is dirty at version %d because migration %06d %s ran rewritten for online use and did not "
            "finish: steps %s committed, %s. Nothing will run on top of it. %s" % (
                interrupted["version"], interrupted["version"], interrupted["title"],
                ", ".join(str(n) for n in committed) or "none",
                ("step %d failed: %s" % (failed[0]["step"], failed[0].get("error"))) if failed else
                "the run stopped before the others finished" if interrupted["mode"] != REWRITTEN else
                "every step committed but the run stopped before it cleared the dirty flag",
                recovery_text(interrupted["version"], interrupted["steps"])))


def server_reason(error):
    """The server's message of a psycopg2 error, with its detail: 'division by zero' or '... (Key ...)'."""
    diag = getattr(error, "diag", None)
    reason = to_native(getattr(diag, "message_primary", None) or error).strip()
    if getattr(diag, "message_detail", None):
        reason += " (%s)" % diag.message_detail.strip()
    return reason


def plan_dicts(steps):
    return [dict(version=m.version, title=m.title, direction=d) for m, d, _after in steps]


def warn_missing_down(warn, steps, result):
    """Set ``missing_down`` (the planned up migrations without a down file) and warn about them."""
    missing = [m.version for m, direction, _after in steps if direction == "up" and m.down is None]
    result["missing_down"] = missing
    if missing:
        warn("Migration%s %s ha%s no down file: a planned rollback past version %d is impossible once %s "
             "applied; a rollback would restore the backup instead. Add the down file%s before migrating if "
             "the rollback must keep the writes made after the migration."
             % ("s" if len(missing) > 1 else "", ", ".join("%06d" % v for v in missing),
                "ve" if len(missing) > 1 else "s", max(missing), "they are" if len(missing) > 1 else "it is",
                "s" if len(missing) > 1 else ""))


def unrecorded_message(migrator, tables):
    shown = ", ".join(tables[:5]) + (", ..." if len(tables) > 5 else "")
    return ("Database %s has %d table%s in schema %s (%s) but no %s.%s state table, so its version is unknown: "
            "migrating would run every migration from the first one again on top of the existing schema. Nothing "
            "was changed. If these migrations built the schema, record the version it is at: run pg_migrate with "
            "operation=force and target_version set to that version, which creates the state table and changes no "
            "schema (with the playbooks: ansible-playbook -i <inventory> playbooks/force_version.yml "
            "-e tmi_force_version=<version>), then run again. If the state table exists under another name or in "
            "another schema, set state_table and state_schema to it (with migrate.yml: "
            "-e tmi_state_table=<name>, which every role reads it from)."
            % (migrator.database, len(tables), "" if len(tables) == 1 else "s", migrator.schema, shown,
               migrator.schema, migrator.table))
