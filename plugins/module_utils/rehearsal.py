# -*- coding: utf-8 -*-
# Copyright: (c) 2026, tmi.migration maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The rehearsal: the planned migration run up and back down on the backup's verified scratch copy, observed.

Written here because no tool does it: golang-migrate, Flyway and Atlas apply blind, squawk lints
without data, eugene traces locks on empty tables. The rehearsal applies the files with the same
engine as production (``Rehearsal`` is a ``migrator.Migrator``: the state table, the dirty flag,
the file modes, lock_timeout, online index builds) and, per statement, observes:

* how long it ran;
* the table-level locks the migrating session held, read from ``pg_locks`` inside the file's
  transaction after each statement (a lock is held until the transaction ends, so what a statement
  took is what appears or gets stronger after it); for the statements of a file that runs outside a
  transaction (CONCURRENTLY), a second session samples the migrating session's locks while it runs;
* whether a table got a new file (``pg_class.relfilenode`` changed: rewritten or truncated);
* how long each ACCESS EXCLUSIVE lock was held (from the start of the statement that took it to the
  end of the file's COMMIT).

Only relations that existed before the file count: a table the file creates blocks nobody.
After the up files the figures of the tables the plan changes are taken; after the down files
the normalised catalog and those tables' figures are compared with the start.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import threading
import time

from ansible.module_utils.common.text.converters import to_native
from ansible_collections.tmi.migration.plugins.module_utils import analysis, bookkeeping, locks, migrator, rewrite
from ansible_collections.tmi.migration.plugins.module_utils import snapshot
from ansible_collections.tmi.migration.plugins.module_utils import migrations as files

try:
    import psycopg2
    from psycopg2 import sql
except ImportError:  # the module reports it when it connects
    psycopg2 = sql = None

_USER = ("n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%%' "
         "AND n.nspname NOT LIKE 'pg_temp%%'")
# Tables, partitioned tables and materialized views: what the application reads and writes.
RELATIONS_SQL = ("SELECT c.oid::bigint, n.nspname || '.' || c.relname, c.relfilenode::bigint FROM pg_class c "
                 "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p', 'm') AND " + _USER)
_LOCKS_SQL = ("SELECT relation::bigint, mode FROM pg_locks WHERE locktype = 'relation' AND granted "
              "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) AND pid = ")
OWN_LOCKS_SQL = _LOCKS_SQL + "pg_backend_pid()"
SESSION_LOCKS_SQL = _LOCKS_SQL + "%s"
# The normalised catalog: what a schema is, independent of oids, physical order and statistics.
CATALOG_SQL = """
SELECT 'relation', n.nspname || '.' || c.relname, c.relkind::text,
       coalesce((SELECT tn.nspname || '.' || t.relname FROM pg_depend dep JOIN pg_class t ON t.oid = dep.refobjid
                  JOIN pg_namespace tn ON tn.oid = t.relnamespace
                 WHERE dep.classid = 'pg_class'::regclass AND dep.objid = c.oid
                   AND dep.refclassid = 'pg_class'::regclass AND dep.deptype IN ('a', 'i') LIMIT 1),
                n.nspname || '.' || c.relname)
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND {user}
UNION ALL
SELECT 'column', n.nspname || '.' || c.relname || '.' || a.attname,
       format_type(a.atttypid, a.atttypmod) || CASE WHEN a.attnotnull THEN ' NOT NULL' ELSE '' END
       || coalesce(' DEFAULT ' || pg_get_expr(d.adbin, d.adrelid), '') || coalesce(' COLLATE ' || co.collname, '')
       || CASE WHEN a.attidentity <> '' THEN ' IDENTITY ' || a.attidentity::text ELSE '' END
       || CASE WHEN a.attgenerated::text <> '' THEN ' GENERATED' ELSE '' END, n.nspname || '.' || c.relname
  FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
  LEFT JOIN pg_collation co ON co.oid = a.attcollation AND a.attcollation <> 100
 WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND a.attnum > 0 AND NOT a.attisdropped AND {user}
UNION ALL
SELECT 'constraint', n.nspname || '.' || c.relname || '.' || con.conname,
       pg_get_constraintdef(con.oid) || CASE WHEN con.convalidated THEN '' ELSE ' (not validated)' END,
       n.nspname || '.' || c.relname
  FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE {user}
UNION ALL
SELECT 'index', n.nspname || '.' || c.relname, pg_get_indexdef(i.indexrelid)
       || CASE WHEN i.indisvalid THEN '' ELSE ' (INVALID)' END, tn.nspname || '.' || t.relname
  FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_class t ON t.oid = i.indrelid JOIN pg_namespace tn ON tn.oid = t.relnamespace
 WHERE {user}
UNION ALL
SELECT 'trigger', n.nspname || '.' || c.relname || '.' || t.tgname, pg_get_triggerdef(t.oid)
       || CASE t.tgenabled WHEN 'D' THEN ' (disabled)' ELSE '' END, n.nspname || '.' || c.relname
  FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE NOT t.tgisinternal AND {user}
UNION ALL
SELECT 'view', n.nspname || '.' || c.relname, pg_get_viewdef(c.oid), n.nspname || '.' || c.relname
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('v', 'm') AND {user}
UNION ALL
SELECT 'function', n.nspname || '.' || p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')',
       md5(pg_get_functiondef(p.oid)), NULL
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE p.prokind IN ('f', 'p') AND {user} AND NOT EXISTS (SELECT 1 FROM pg_depend dep
       WHERE dep.classid = 'pg_proc'::regclass AND dep.objid = p.oid AND dep.deptype = 'e')
UNION ALL
SELECT 'schema', n.nspname, pg_get_userbyid(n.nspowner)::text, NULL
  FROM pg_namespace n WHERE {user}
UNION ALL
SELECT 'extension', e.extname, e.extversion, NULL FROM pg_extension e
UNION ALL
SELECT 'policy', n.nspname || '.' || c.relname || '.' || p.polname,
       p.polcmd::text || ' ' || coalesce(pg_get_expr(p.polqual, p.polrelid), '') || ' '
       || coalesce(pg_get_expr(p.polwithcheck, p.polrelid), ''), n.nspname || '.' || c.relname
  FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE {user}
UNION ALL
SELECT 'type', n.nspname || '.' || t.typname,
       coalesce((SELECT string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder) FROM pg_enum e
                  WHERE e.enumtypid = t.oid), t.typtype::text), NULL
  FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
 WHERE (t.typtype IN ('e', 'd', 'r') OR (t.typtype = 'c' AND EXISTS (SELECT 1 FROM pg_class tc
       WHERE tc.oid = t.typrelid AND tc.relkind = 'c'))) AND {user}
""".format(user=_USER.replace("%%", "%"))
# How often the second session samples the locks of a statement that runs outside a transaction.
SAMPLE_INTERVAL = 0.002
EXCLUSIVE = "ACCESS EXCLUSIVE"


class StatementFailed(Exception):
    """A statement of an observed transaction failed; the transaction was rolled back."""

    def __init__(self, index, error, observed):
        super(StatementFailed, self).__init__(to_native(error))
        self.index = index
        self.error = error
        self.observed = observed


def catalog(execute, leave_out=()):
    """{(kind, name): definition} of the user schemas' objects, without the tables named in ``leave_out``
    (qualified) and what belongs to them (columns, constraints, indexes, triggers, owned sequences)."""
    found = {}
    for kind, name, definition, table in execute(CATALOG_SQL):
        if table not in leave_out:
            found[(kind, name)] = definition
    return found


def catalog_differences(before, after, limit=20):
    """Lines naming what differs between two ``catalog`` results, at most ``limit`` of them."""
    lines = []
    for key in sorted(set(before) | set(after)):
        kind, name = key
        if key not in after:
            lines.append("%s %s is gone (was: %s)" % (kind, name, before[key]))
        elif key not in before:
            lines.append("%s %s is new: %s" % (kind, name, after[key]))
        elif before[key] != after[key]:
            lines.append("%s %s: %s, was %s" % (kind, name, after[key], before[key]))
    return lines[:limit] + (["... and %d more" % (len(lines) - limit)] if len(lines) > limit else [])


class Observer(object):
    """Runs statements on ``conn`` (an autocommit connection) and observes their locks and rewrites."""

    def __init__(self, conn):
        self.conn = conn
        self.names = {}  # oid -> qualified name, of every table seen (a dropped table keeps its name here)

    def query(self, text, args=None):
        with self.conn.cursor() as cur:
            cur.execute(text, args)
            return cur.fetchall() if cur.description else None

    def relations(self):
        """{oid: relfilenode} of the tables now, remembering their names."""
        found = {}
        for oid, name, filenode in self.query(RELATIONS_SQL):
            self.names[oid] = name
            found[oid] = filenode
        return found

    def _held(self, rows, existing):
        held = {}
        for oid, mode in rows:
            name = locks.mode_name(mode)
            if oid in existing and locks.stronger(name, held.get(oid)):
                held[oid] = name
        return held

    def _named(self, by_oid, names=None):
        names = self.names if names is None else names
        return dict((names.get(oid, "oid %d" % oid), value) for oid, value in by_oid.items())

    def transaction(self, statements, commit=True):
        """Run ``statements`` in one transaction, observed; COMMIT at the end (ROLLBACK without ``commit``).

        Returns per statement {statement, duration, locks, taken, held, rewritten}: ``locks`` the
        strongest mode the session held on each table after it, ``taken`` the locks that appeared or
        got stronger with it, ``held`` how long each of those was then held (to the end of the COMMIT),
        ``rewritten`` the tables that got a new file with it. Tables are named as they were before the
        statement (a table it renames or drops keeps its name). Raises StatementFailed after a ROLLBACK.
        """
        observed = []
        self.query("BEGIN")
        try:
            start = self.relations()
            before, held = dict(start), {}
            for index, text in enumerate(statements):
                names = dict(self.names)
                started = time.monotonic()
                try:
                    self.query(text)
                except psycopg2.Error as error:
                    raise StatementFailed(index, error, observed) from error
                duration = time.monotonic() - started
                now = self.relations()
                current = self._held(self.query(OWN_LOCKS_SQL), start)
                taken = dict((oid, mode) for oid, mode in current.items() if locks.stronger(mode, held.get(oid)))
                rewritten = [oid for oid, filenode in now.items() if oid in before and before[oid] != filenode]
                observed.append(dict(statement=text, started=started, duration=duration,
                                     taken=self._named(taken, names), locks=self._named(current, names),
                                     rewritten=sorted(self._named(dict.fromkeys(rewritten), names))))
                before, held = now, current
            try:
                self.query("COMMIT" if commit else "ROLLBACK")
            except psycopg2.Error as error:  # a deferred constraint checked at COMMIT
                raise StatementFailed(len(statements), error, observed) from error
        except BaseException:
            if self.conn.get_transaction_status() != psycopg2.extensions.TRANSACTION_STATUS_IDLE:
                self.query("ROLLBACK")
            raise
        ended = time.monotonic()
        for entry in observed:
            started = entry.pop("started")
            entry["held"] = dict((name, round(ended - started, 3)) for name in entry["taken"])
            entry["duration"] = round(entry["duration"], 3)
        return observed

    def sampled(self, statements, run, watch):
        """Run each statement with ``run(text)`` outside a transaction, each ``watched``; the same entries
        as ``transaction``. Raises StatementFailed."""
        observed = []
        for index, text in enumerate(statements):
            try:
                observed.append(self.watched(lambda statement=text: run(statement), text, watch))
            except psycopg2.Error as error:
                raise StatementFailed(index, error, observed) from error
        return observed

    def watched(self, call, text, watch):
        """Run ``call()`` while ``watch`` (a second autocommit connection) samples this session's locks.

        ``held`` runs from the first to the last sample that saw a lock. A CONCURRENTLY statement's lock is
        always seen (see _Sampler); another statement's lock held for less than the sampling interval may be
        missed: the entry says ``sampled``."""
        pid = self.conn.get_backend_pid()
        start = self.relations()
        names = dict(self.names)
        sampler = _Sampler(watch, pid)
        sampler.start()
        started = time.monotonic()
        try:
            call()
        finally:
            sampler.stop()
        duration = time.monotonic() - started
        now = self.relations()
        taken = self._held(list(sampler.seen), start)
        held = dict((names.get(oid, "oid %d" % oid), round(last - first, 3))
                    for (oid, mode), (first, last) in sampler.seen.items()
                    if oid in taken and locks.mode_name(mode) == taken[oid])
        rewritten = [oid for oid, filenode in now.items() if oid in start and start[oid] != filenode]
        # Outside a transaction each statement's locks end with it: what it held is what it took.
        return dict(statement=text, duration=round(duration, 3), locks=self._named(taken, names),
                    taken=self._named(taken, names), held=held, sampled=True,
                    rewritten=sorted(self._named(dict.fromkeys(rewritten), names)))


class _Sampler(object):
    """A thread that reads another session's granted table locks every SAMPLE_INTERVAL seconds.

    While it waits for the first lock it holds a snapshot open: a CONCURRENTLY statement waits for
    older snapshots to end while it holds its lock, so its lock is always seen, however short the build
    (and it waits only until then). Other statements are seen when a sample falls inside them.
    """

    # How long the snapshot is held at most when no lock shows (a statement that takes none).
    HOLD_AT_MOST = 2.0

    def __init__(self, conn, pid):
        self.conn = conn
        self.pid = pid
        self.seen = {}  # (oid, pg_locks mode) -> [first seen, last seen]
        self.stopping = threading.Event()
        self.ready = threading.Event()
        self.error = None
        self.thread = threading.Thread(target=self._loop, name="lock-sampler")
        self.thread.daemon = True

    def start(self):
        """Start sampling; returns once the snapshot is held and the first sample taken."""
        self.thread.start()
        if not self.ready.wait(5):
            self.stop()
            raise RuntimeError("the lock sampler took no first sample within 5 s")

    def stop(self):
        """Stop sampling; a sampler that failed raises its error here: its statement was not observed."""
        self.stopping.set()
        self.thread.join()
        if self.error is not None:
            raise RuntimeError("the lock sampler failed, so the statement's locks were not observed: %s"
                               % to_native(self.error).strip())

    def _loop(self):
        try:
            self._sample()
        except Exception as error:  # noqa: BLE001 - whatever stopped it, stop() reports it
            self.error = error
            self.ready.set()

    def _sample(self):
        with self.conn.cursor() as cur:
            cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
            cur.execute("SELECT 1")  # takes the snapshot
            holding, since = True, time.monotonic()
            try:
                while not self.stopping.is_set():
                    cur.execute(SESSION_LOCKS_SQL, (self.pid,))
                    now = time.monotonic()
                    for oid, mode in cur.fetchall():
                        self.seen.setdefault((oid, mode), [now, now])[1] = now
                    self.ready.set()
                    if holding and (self.seen or now - since > self.HOLD_AT_MOST):
                        cur.execute("COMMIT")
                        holding = False
                    self.stopping.wait(SAMPLE_INTERVAL)
            finally:
                if holding:
                    cur.execute("COMMIT")


def exclusive_seconds(statements):
    """{table: seconds} of the ACCESS EXCLUSIVE locks a file's statements held, the longest per table."""
    found = {}
    for statement in statements:
        for table, mode in statement.get("taken", {}).items():
            if mode == EXCLUSIVE and table in statement.get("held", {}):
                found[table] = max(found.get(table, 0), statement["held"][table])
    return found


def failure_text(entry, error):
    """What failed in a rehearsed file: file, line, statement and the server's error."""
    reason = migrator.server_reason(error)
    failed = entry.get("failed_statement") or {}
    where = " at line %s" % failed["line"] if failed.get("line") else ""
    text = "%s%s: %s" % (entry["file"], where, reason)
    if getattr(error, "pgcode", None):
        text += " [SQLSTATE %s]" % error.pgcode
    if failed.get("statement"):
        statement = " ".join(failed["statement"].split())
        text += ". Statement: %s" % (statement if len(statement) <= 300 else statement[:297] + "...")
    return text


class Rehearsal(migrator.Migrator):
    """The plan run up and back down on a scratch copy with the production engine, every file observed.

    ``conn`` is an autocommit connection to the copy, ``watch`` a second one (it samples the locks of
    statements that run outside a transaction); ``options`` are pg_migrate's.
    """

    def __init__(self, conn, options, watch, warn=None):
        super(Rehearsal, self).__init__(conn, options, warn)
        self.observer = Observer(conn)
        self.watch = watch
        self.observed = []
        self.failed_at = None
        self.warned = True  # the plan's hazards were shown when production was planned
        self.step_observed = []  # the observations of a rewritten file's steps, in order
        self.user_functions = None

    # --- how a file runs: as pg_migrate runs it, observed --------------------------------
    def _run_file(self, body, mode):
        statements = files.split_statements(body)
        try:
            if mode == "transaction":
                self.observed = self.observer.transaction(statements)
            else:
                self.observed = self.observer.sampled(statements, self.execute, self.watch)
        except StatementFailed as failure:
            self.observed, self.failed_at = failure.observed, failure.index
            raise failure.error from failure

    def _run_online(self, body, retries, delay):
        # The same CREATE INDEX CONCURRENTLY statements as pg_migrate's online builds, each observed. Nobody else
        # uses the copy, so there is no lock to wait for and no retry; a failed build is the file's failure.
        builds = [statement for _name, _schema, statement in files.concurrent_index_builds(body)]
        try:
            self.observed = self.observer.sampled(builds, self.execute, self.watch)
        except StatementFailed as failure:
            self.observed, self.failed_at = failure.observed, failure.index
            raise migrator.OnlineBuildFailed(failure.error) from failure
        return 1

    def _run_step(self, step, then=None):
        """A step of a rewritten file, observed: a step in a transaction as a file is, a CONCURRENTLY one sampled.

        ``then`` (the history row) runs after it, unobserved and in a transaction of its own: on the copy nothing
        needs the row to commit with the step."""
        self.observed, self.failed_at = [], None
        try:
            super(Rehearsal, self)._run_step(step)
        finally:
            for item in self.observed:
                item["step"] = step["step"]
            self.step_observed.extend(self.observed)
            self.observed = []
        return self.execute(then) if then is not None else None

    def step(self, migration, direction, after, before):
        """Apply one file observed: (its entry, None) or (its entry, the server's error)."""
        self.observed, self.failed_at = [], None
        path = migration.path(direction)
        with open(path) as handle:
            body = handle.read()
        entry = dict(version=migration.version, title=migration.title, direction=direction, file=path, ok=True)
        error = None
        try:
            applied = self.apply(migration, direction, after, before)
            entry.update(mode=applied["mode"], duration=applied["duration"])
        except migrator.MigrationFailed as failure:
            entry["ok"] = False
            error = failure.__cause__ or failure
            # A failed online build arrives wrapped (OnlineBuildFailed); its server error says what happened.
            error = getattr(error, "error", error)
        statements = self.observed
        # The file's statements in order, with their lines; the prediction is the analysis of what ran (an
        # online build runs CREATE INDEX CONCURRENTLY where the file says CREATE INDEX).
        in_file = analysis.analyse_sql(body, self.schema)
        for index, observed in enumerate(statements):
            if index < len(in_file):
                observed["line"] = in_file[index]["line"]
            ran = analysis.analyse_sql(observed["statement"], self.schema)
            observed["predicted"] = ran[0].get("locks", {}) if len(ran) == 1 else {}
        if self.failed_at is not None and self.failed_at < len(in_file):
            entry["failed_statement"] = dict(line=in_file[self.failed_at]["line"],
                                             statement=in_file[self.failed_at]["statement"])
        entry.update(statements=statements, exclusive=exclusive_seconds(statements),
                     rewritten=sorted(set(t for s in statements for t in s["rewritten"])))
        if error is not None:
            entry["error"] = failure_text(entry, error)
        return entry, error

    # --- the rehearsal -------------------------------------------------------------------
    def rehearse(self, migrations, target, start_figures, max_exclusive_seconds=None):
        """Up to ``target`` and back to the start, observed; the result dict (see the pg_rehearse module).

        ``start_figures`` are the backup's figures, which the verification proved the copy holds.
        """
        started = time.monotonic()
        before, dirty = self.read_state()
        result = dict(version_before=before, target_version=target, up=[], down=[], up_ok=None, down_ok=None,
                      schema_restored=None, data_restored=None, reversible=None, figures_after_up={},
                      exclusive_over=[], rehearsed=False, rewrites=[])
        if dirty:
            raise migrator.Refused("The copy is dirty at version %d, as production was when it was backed up: "
                                   "nothing can be rehearsed on it. Nothing was changed." % before, **result)
        steps = files.plan(migrations, before, target)
        if not steps or any(direction != "up" for _m, direction, _a in steps):
            result["skipped"] = ("nothing to migrate" if not steps else
                                 "the plan goes down; only a plan going up is rehearsed")
            return result
        result["rehearsed"] = True
        planned = self.analyse(steps)
        try:  # what the down files do counts too (a missing down file is the down rehearsal's to report)
            back = self.analyse(files.plan(migrations, target, before))
        except files.MigrationError:
            back = None
        own = bookkeeping.from_options(self.options, self.schema)
        figured = self._figured([planned, back], own)
        self._analyze(figured)
        catalog_before = catalog(self.execute, own)
        self.ensure_state_table()
        self.ensure_history_table()
        current = before
        rewrites = result["rewrites"]
        for migration, direction, after in steps:
            candidate = self._candidate(migration) if self.options.get("online_rewrites") else None
            # The catalog the file starts from: its down file must bring exactly this back for the proof.
            start = catalog(self.execute, own) if isinstance(candidate, list) else None
            entry, error = self.step(migration, direction, after, current)
            if error is None and candidate is not None:
                entry, error = self.prove(migration, after, current, entry, own, rewrites, candidate, start)
            result["up"].append(entry)
            if error is not None:
                result.update(up_ok=False, error=entry["error"], duration=round(time.monotonic() - started, 3))
                return result
            current = after
            for table, seconds in sorted(entry["exclusive"].items()):
                if max_exclusive_seconds is not None and seconds > max_exclusive_seconds:
                    result["exclusive_over"].append(dict(version=migration.version, title=migration.title,
                                                         table=table, seconds=seconds))
        result["up_ok"] = True
        with self.conn.cursor() as cur:
            result["figures_after_up"] = snapshot.take(cur, tables=self._existing(figured), like=start_figures)
        self._down(migrations, current, before, result)
        if result["down_ok"]:
            after_down = catalog(self.execute, own)
            result["schema_differences"] = catalog_differences(catalog_before, after_down)
            expected = dict((name, start_figures[name]) for name in figured if name in start_figures)
            with self.conn.cursor() as cur:
                now = snapshot.take(cur, tables=self._existing(figured), like=expected)
            result["data_differences"] = snapshot.compare(expected, now)
            result.update(schema_restored=not result["schema_differences"],
                          data_restored=not result["data_differences"])
            result["reversible"] = result["schema_restored"] and result["data_restored"]
            if not result["reversible"]:
                result["down_error"] = "the down files ran, but %s" % "; ".join(
                    (["the schema is not as it was: " + "; ".join(result["schema_differences"][:5])]
                     if result["schema_differences"] else []) +
                    (["the data is not as it was: " + snapshot.describe(result["data_differences"], 5)]
                     if result["data_differences"] else []))
        else:
            result["reversible"] = False
        result["duration"] = round(time.monotonic() - started, 3)
        return result

    # --- the proof of an online-equivalent rewrite ---------------------------------------
    def _candidate(self, migration):
        """The rewritten steps of an up file (a list), or why there are none (rewrite.Declined)."""
        with open(migration.path("up")) as handle:
            body = handle.read()
        if self.user_functions is None:
            self.user_functions = set(r[0] for r in self.execute(migrator.USER_FUNCTIONS_SQL))
        try:
            return rewrite.plan(body, self.schema, self.user_functions)
        except rewrite.Declined as declined:
            return declined

    def prove(self, migration, after, before, entry, own, rewrites, candidate, start):
        """Prove the rewrite (``candidate``: its steps) of an up file that just ran as written (``entry``) from the
        catalog ``start``: its down file, which must bring ``start`` back exactly (else it is rolled back), the
        rewritten steps (observed), and the normalised catalog compared with the file's as written. Returns
        (entry, error): the rewritten steps' entry when proven (what production will see), else the file's as
        written, the copy brought back to it. Appends the outcome to ``rewrites`` (nothing for a file no rewrite
        applies to and that blocked no writer)."""
        path = migration.path("up")
        if isinstance(candidate, rewrite.Declined):
            if entry["exclusive"] or any(locks.BLOCKS_WRITES & set(s["taken"].values()) for s in entry["statements"]):
                entry["rewrite"] = dict(proven=False, reason="no online rewrite applies: %s" % candidate)
                rewrites.append(dict(version=migration.version, title=migration.title, sha256=files.file_sha256(path),
                                     proven=False, steps=[], reason=entry["rewrite"]["reason"]))
            return entry, None
        steps = candidate
        outcome = dict(version=migration.version, title=migration.title, sha256=files.file_sha256(path),
                       proven=False, steps=[dict((k, v) for k, v in step.items() if k != "status") for step in steps])
        rewrites.append(outcome)
        as_written = catalog(self.execute, own)
        problem = self._down_for_proof(migration, before, start, own)
        if problem:
            return self._not_proven(entry, outcome, problem), None
        self.step_observed = []
        started = time.monotonic()
        try:
            applied = migrator.RewrittenFile(self, migration, path, steps).apply(after, before)
        except migrator.MigrationFailed as failure:
            return self._back_as_written(migration, after, before, entry, outcome,
                                         "the rewritten steps failed: %s" % to_native(failure))
        differences = catalog_differences(as_written, catalog(self.execute, own))
        if differences:
            return self._back_as_written(migration, after, before, entry, outcome,
                                         "the rewritten steps end in another catalog than the file as written: %s"
                                         % "; ".join(differences))
        outcome["proven"] = True
        outcome["steps"] = [dict((k, v) for k, v in step.items() if k not in ("status", "attempts"))
                            for step in applied["steps"]]
        statements = self.step_observed
        with open(path) as handle:
            body = handle.read()
        lines = dict((step["step"], step.get("line")) for step in steps)
        for observed in statements:
            ran = analysis.analyse_sql(observed["statement"], self.schema)
            observed["predicted"] = ran[0].get("locks", {}) if len(ran) == 1 else {}
            # A statement of the file's step as written has its line in the file; a deferred step, its source's.
            found = body.find(observed["statement"].strip())
            line = body[:found].count("\n") + 1 if found >= 0 else lines.get(observed["step"])
            if line:
                observed["line"] = line
        proven = dict(entry, mode=migrator.REWRITTEN, duration=round(time.monotonic() - started, 3),
                      statements=statements, exclusive=exclusive_seconds(statements),
                      rewritten=sorted(set(t for s in statements for t in s["rewritten"])),
                      rewrite=dict(proven=True, steps=outcome["steps"]),
                      as_written=dict(mode=entry["mode"], duration=entry["duration"], exclusive=entry["exclusive"],
                                      rewritten=entry["rewritten"], statements=entry["statements"]))
        return proven, None

    def _down_for_proof(self, migration, version, start, own):
        """Run the file's down file in one transaction and commit it only when it brings the catalog ``start`` back
        exactly (the rewritten steps then start where the file did); else roll it back, leaving the copy as the file
        as written left it. Returns why the proof cannot go on, or None."""
        if migration.down is None:
            return "the file has no down file, so the copy cannot go back to run the rewritten steps"
        with open(migration.down) as handle:
            body = handle.read()
        if files.needs_autocommit(body):
            return "its down file runs outside a transaction, so the proof could not undo it if it fell short"
        self.execute("BEGIN")
        try:
            self._session_timeouts()
            self.execute(body)
            differences = catalog_differences(start, catalog(self.execute, own))
            if differences:
                self.execute("ROLLBACK")
                return ("its down file does not bring the catalog back to where the file started (%s), so the "
                        "rewritten steps could not start there" % "; ".join(differences))
            self.execute(sql.SQL("TRUNCATE {}").format(self._ident(self.table)))
            if version != files.NIL_VERSION:
                self.execute(sql.SQL("INSERT INTO {} (version, dirty) VALUES (%s, false)").format(
                    self._ident(self.table)), (version,))
            self.execute("COMMIT")
        except psycopg2.Error as error:
            self.execute("ROLLBACK")
            return "its down file failed: %s [SQLSTATE %s]" % (migrator.server_reason(error), error.pgcode)
        finally:
            self._reset_timeouts()
        return None

    def _not_proven(self, entry, outcome, reason):
        outcome["reason"] = reason
        entry["rewrite"] = dict(proven=False, reason=reason, steps=outcome["steps"])
        return entry

    def _back_as_written(self, migration, after, before, entry, outcome, reason):
        """The rewrite is not proven and the copy is where the rewritten steps left it: the down file and the file as
        written again, so that the rest of the plan is rehearsed on what production will have."""
        self._not_proven(entry, outcome, reason)
        down, error = self.step(migration, "down", before, after)
        if error is None:
            again, error = self.step(migration, "up", after, before)
            if error is None:
                again["rewrite"] = entry["rewrite"]
                return again, None
            down = again
        entry.update(ok=False, error="the rehearsal could not bring the copy back to the file as written after its "
                                     "rewrite was not proven (%s): %s" % (reason, down["error"]))
        return entry, error

    def _down(self, migrations, current, before, result):
        try:
            steps = files.plan(migrations, current, before)
        except files.MigrationError as error:
            result.update(down_ok=False, down_error=to_native(error))
            return
        for migration, direction, after in steps:
            entry, error = self.step(migration, direction, after, current)
            result["down"].append(entry)
            if error is not None:
                result.update(down_ok=False, down_error=entry["error"])
                return
            current = after
        result["down_ok"] = True

    def _figured(self, analyses, own):
        """The tables whose figures the rehearsal takes: those the up or the down files change, every table when
        a statement's effect is unknown; never the bookkeeping tables."""
        analyses = [item for item in analyses if item]
        if any(item["unknown"] for item in analyses):
            with self.conn.cursor() as cur:
                names = ["%s.%s" % pair for pair in snapshot.user_tables(cur)]
        else:
            names = set(table for item in analyses for table, change in item["tables"].items()
                        if set(change["does"]) - set(["none"]))
        return sorted(name for name in names if name not in own)

    def _analyze(self, tables):
        """ANALYZE the copy's tables the plan changes: the statistics production has (a plan the files' queries
        get), and no autovacuum ANALYZE of the freshly restored rows competing with the files for their locks."""
        for schema, table in self._existing(tables):
            self.execute(sql.SQL("ANALYZE {}.{}").format(sql.Identifier(schema), sql.Identifier(table)))

    def _existing(self, names):
        with self.conn.cursor() as cur:
            present = set("%s.%s" % pair for pair in snapshot.user_tables(cur))
        return [tuple(name.split(".", 1)) for name in names if name in present]


def _short(table):
    return table[len("public."):] if table.startswith("public.") else table


def file_line(entry, down=None):
    """'000017 enhance_metadata: 2.1 s; metadata ACCESS EXCLUSIVE 1.9 s (rewritten); down: ok'."""
    head = "%06d %s" % (entry["version"], entry["title"])
    if not entry["ok"]:
        return "%s: FAILED: %s" % (head, entry.get("error", "failed"))
    parts = ["%s s" % entry.get("duration", 0)]
    strongest = {}
    for statement in entry["statements"]:
        for table, mode in statement["taken"].items():
            if locks.stronger(mode, strongest.get(table)):
                strongest[table] = mode
    for table in sorted(strongest):
        text = "%s %s" % (_short(table), strongest[table])
        if table in entry["exclusive"]:
            text += " %s s" % entry["exclusive"][table]
        if table in entry["rewritten"]:
            text += " (rewritten)"
        parts.append(text)
    if down is not None:
        parts.append("down: %s" % ("ok" if down["ok"] else "FAILED"))
    proof = entry.get("rewrite") or {}
    if proof.get("proven"):
        before = entry.get("as_written", {}).get("exclusive", {})
        parts.append("rewritten online: %d steps (as written: %s)" % (
            len(proof["steps"]), ", ".join("%s ACCESS EXCLUSIVE %s s" % (_short(t), before[t]) for t in sorted(before))
            or "no ACCESS EXCLUSIVE"))
    elif proof:
        parts.append("runs as written: %s" % proof.get("reason", "the rewrite was not proven"))
    return "%s: %s" % (head, "; ".join(parts))


def summary_lines(result):
    """One line per rehearsed file, then what the rehearsal says of the rollback."""
    if not result.get("rehearsed"):
        return ["rehearsal: %s" % (result.get("error") or result.get("skipped") or "nothing rehearsed")]
    downs = dict((entry["version"], entry) for entry in result.get("down", []))
    lines = [file_line(entry, downs.get(entry["version"])) for entry in result.get("up", [])]
    if result.get("up_ok"):
        if result.get("reversible"):
            verdict = "the down files bring schema and data back to version %d" % result["version_before"]
        elif result.get("down_ok"):
            verdict = "the down files run but do NOT bring the start back (%s)" % result.get("down_error", "")
        else:
            verdict = "the planned rollback would NOT work (%s)" % result.get("down_error", "")
        lines.append("rollback: %s" % verdict)
    return lines


def irreversible_text(result):
    if not result.get("down_ok"):
        return ("The planned rollback would not work: %s. A rollback of this migration will restore the backup "
                "instead of running the down files, and the writes made after the migration would be lost with it; "
                "fix the down files before migrating if the rollback must keep them." % result.get("down_error", ""))
    return ("The planned rollback would not bring the start back: %s. A planned rollback still runs them (it is "
            "judged by what they may do); make the down files undo what the up files do if it must."
            % result.get("down_error", ""))


def gate(result, require_reversible=False, max_exclusive_seconds=None):
    """Why the migration must not go ahead after this rehearsal, or None."""
    if result.get("up_ok") is False:
        return ("The migration failed in the rehearsal on the verified copy: %s. Production was not changed. Fix the "
                "migration, or the data it fails on, and run again." % result.get("error", "unknown error"))
    over = result.get("exclusive_over") or []
    if over:
        return ("In the rehearsal on the verified copy, %s: longer than max_exclusive_seconds (%s s), so writers and "
                "readers of %s would wait that long. Production was not changed. Raise the budget, or change the "
                "migration to hold the lock for less (a constraint added NOT VALID and validated after, an index "
                "built CONCURRENTLY)." % (
                    "; ".join("migration %06d %s held an ACCESS EXCLUSIVE lock on %s for %s s" % (
                        item["version"], item["title"], item["table"], item["seconds"]) for item in over),
                    max_exclusive_seconds, ", ".join(sorted(set(item["table"] for item in over)))))
    if require_reversible and result.get("rehearsed") and not result.get("reversible"):
        return ("%s require_reversible is set, so the migration stops here. Production was not changed."
                % irreversible_text(result))
    return None
