#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, tmi.migration maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: pg_migrate
short_description: Apply golang-migrate migration files to PostgreSQL, compatible with golang-migrate's own state
version_added: 0.1.0
description:
  - Moves a database to an exact O(target_version) by applying a directory of golang-migrate files
    (C({version}_{title}.up.sql) / C(.down.sql)), up or down.
  - Keeps golang-migrate's state table (C(schema_migrations(version bigint, dirty boolean)), one row) and takes the
    same advisory lock as golang-migrate v4's postgres driver, so either tool can take over from the other and the
    two never run at once.
  - Each file runs as golang-migrate runs it, the whole file as one statement batch (one implicit transaction); a
    file holding statements that cannot run in a transaction (for example C(CREATE INDEX CONCURRENTLY)) runs
    statement by statement. On failure the version is left dirty, as golang-migrate leaves it.
  - Written for this collection because no Ansible module or Python library applies golang-migrate directories;
    community.postgresql's M(community.postgresql.postgresql_script) runs one file without state or locking.
  - Beyond golang-migrate, it retries on lock timeouts instead of queueing behind long transactions, can build the
    indexes of an index-only migration online (C(CREATE INDEX CONCURRENTLY)), and keeps a history of applied files
    with checksums so that an edited file is reported.
  - It also says what the planned files will do (RV(analysis)) - per statement, the tables it acts on and what it does
    to their rows - and refuses a plan whose files act on tables the database does not have, before anything changes.
    The analysis is this collection's own (C(module_utils/analysis.py)), as no library reads migration files that way.
  - It reads the catalog around what the files drop or alter (RV(hazards), C(module_utils/hazards.py)) - the
    publications a table is in, its replica identity, and the views and materialized views that use a column - and
    refuses O(operation=migrate) before anything changes when a file it is about to run would drop the index a
    table's replica identity uses, or retype or drop a column (or drop a table) a view uses. The other findings are
    warnings.
  - A database without the state table is new only when its schema holds no tables but the collection's own (and
    extensions'). Where it holds tables, the version is unknown, so O(operation=status) and O(operation=migrate) fail
    (listing them in RV(unrecorded_tables)) instead of running every migration again on the existing schema;
    O(operation=force) records the version the schema is at.
  - A plan going up through migrations without a down file is warned about and returned in RV(missing_down) - a planned
    rollback past them is impossible.
options:
  path:
    description: Directory holding the migration files, on the host that runs the module.
    type: path
    required: true
    version_added: 0.1.0
  operation:
    description:
      - V(migrate) moves the database to O(target_version).
      - V(status) reads the state and the plan without changing anything.
      - V(force) sets the recorded version to O(target_version) and clears the dirty flag without running any
        migration, like C(migrate force V), creating the state table when there is none. Use it after checking by hand
        what a failed migration left behind, or which version a database without a state table is at.
    type: str
    choices: [migrate, status, force]
    default: migrate
    version_added: 0.1.0
  target_version:
    description:
      - The version to reach, V(latest) (the highest version with an up file), or V(0) for no migration applied.
      - Unlike the runbook's C(migrate up 000016), which applies the next 16 migrations, this is the version the
        database ends at.
    type: str
    default: latest
    version_added: 0.1.0
  allow_down:
    description: Allow a plan that goes down. Down migrations drop schema and data, so this is never implied.
    type: bool
    default: false
    version_added: 0.1.0
  migrations_table:
    description: Name of golang-migrate's state table.
    type: str
    default: schema_migrations
    version_added: 0.1.0
  migrations_schema:
    description: Schema of the state table. Default is the session's C(current_schema()), as in golang-migrate.
    type: str
    version_added: 0.1.0
  lock_wait_timeout:
    description:
      - Seconds to wait for the migration advisory lock held by another run (of this module or of golang-migrate).
      - When it runs out the module fails and names the session that holds the lock.
    type: float
    default: 60
    version_added: 0.1.0
  lock_timeout:
    description:
      - PostgreSQL C(lock_timeout) for each migration, for example V(5s). A migration that cannot get a table lock
        in this time is rolled back and retried, so it never queues for long in front of the application's queries.
      - V(0) waits without limit (golang-migrate's behaviour).
    type: str
    default: 5s
    version_added: 0.1.0
  statement_timeout:
    description: PostgreSQL C(statement_timeout) for each migration; V(0) means no limit.
    type: str
    default: "0"
    version_added: 0.1.0
  lock_retries:
    description: How many times a migration that hit O(lock_timeout) is tried again before the module gives up.
    type: int
    default: 5
    version_added: 0.1.0
  lock_retry_delay:
    description: Seconds before the first retry; each further retry waits twice as long.
    type: float
    default: 2
    version_added: 0.1.0
  online_index_builds:
    description:
      - For an up migration made only of C(CREATE INDEX) statements, build each index with
        C(CREATE INDEX CONCURRENTLY) outside a transaction, so writes to the table go on during the build.
      - An INVALID index left by an earlier failed build of the same name is dropped and rebuilt. If a build fails,
        the INVALID leftover and the indexes this migration built are dropped, and the version stays where it was.
    type: bool
    default: false
    version_added: 0.1.0
  history_table:
    description:
      - Table (in O(migrations_schema)) where each applied file is recorded with its sha256, duration and time.
        Later runs warn when an applied file has changed since. Empty string switches the history off.
    type: str
    default: tmi_migration_history
    version_added: 0.1.0
  run_lock_table:
    description:
      - The run lock table of M(tmi.migration.pg_run_lock) (in O(migrations_schema)). Like the history table, it is the
        collection's own and does not make a database without a state table look migrated already.
    type: str
    default: tmi_migration_lock
    version_added: 0.1.0
attributes:
  check_mode:
    support: full
    description: Returns the plan (versions, titles, direction) and changes nothing.
extends_documentation_fragment:
  - community.postgresql.postgres
  - tmi.migration.postgres
author:
  - tmi.migration maintainers (@tmi-migration)
"""

EXAMPLES = r"""
- name: Migrate the TMI database to version 17
  tmi.migration.pg_migrate:
    path: /opt/tmi/auth/migrations
    target_version: "17"
    login_host: db.example.internal
    login_user: tmi_migrator
    login_password: "{{ vault_tmi_db_password }}"
    login_db: tmi
    online_index_builds: true

- name: Show the current version and what would run
  tmi.migration.pg_migrate:
    path: /opt/tmi/auth/migrations
    operation: status
    login_db: tmi

- name: Go back to version 15 (planned rollback)
  tmi.migration.pg_migrate:
    path: /opt/tmi/auth/migrations
    target_version: "15"
    allow_down: true
    login_db: tmi

- name: Clear a dirty state after checking the schema by hand (like migrate force 16)
  tmi.migration.pg_migrate:
    path: /opt/tmi/auth/migrations
    operation: force
    target_version: "16"
    login_db: tmi
"""

RETURN = r"""
version_before:
  description: Version recorded before the run (0 when none).
  returned: always
  type: int
  sample: 15
version_after:
  description: Version recorded after the run (in check mode, the version the plan ends at).
  returned: always
  type: int
  sample: 17
dirty:
  description: Whether the recorded version is dirty after the run.
  returned: always
  type: bool
  sample: false
target_version:
  description: The target, resolved to a number.
  returned: always
  type: int
  sample: 17
latest_version:
  description: The highest version with an up file.
  returned: always
  type: int
  sample: 17
plan:
  description: The steps from the current version to the target, in order.
  returned: always
  type: list
  elements: dict
  sample: [{"version": 16, "title": "add_performance_indexes", "direction": "up"}]
applied:
  description: The migrations applied, with timing and statement counts.
  returned: always
  type: list
  elements: dict
  sample:
    - version: 16
      title: add_performance_indexes
      direction: up
      file: /opt/tmi/auth/migrations/000016_add_performance_indexes.up.sql
      mode: online
      statements: 13
      attempts: 1
      duration: 2.41
analysis:
  description:
    - What the planned files do, read statement by statement with PostgreSQL's own parser (pglast), with the foreign
      keys and user functions of the catalog. C(files) - per file, its C(statements), each with C(line), C(kind),
      C(tables) (per table C(does) - V(none), V(alter), V(write), V(delete), V(drop), V(create), V(rename) - and
      C(what)),
      C(creates), C(drops), C(rewrites) and C(unknown) (why its effect cannot be read - a DO block, CALL, a call of a
      function that is not PostgreSQL's own). C(tables) - per table over the whole plan, C(does), the columns C(added),
      C(dropped) and C(changed), C(state) (V(created) or V(gone)) and C(by) (file, line and what, or the cascade
      through an C(ON DELETE) foreign key). C(unknown), C(expected) (indexes and constraints the files leave),
      C(requires) and C(missing) (tables acted on that do not exist), C(summary) (one line per file and table),
      C(dropped) (the tables, indexes, constraints and views the files drop, in order, with file and line).
  returned: always
  type: dict
  sample:
    tables: {"public.metadata": {"does": ["none", "alter"], "changed": ["key"], "added": [], "dropped": [],
                                 "by": [{"version": 17, "direction": "up", "line": 4, "what": "changes column key"}]}}
    unknown: []
    missing: []
    summary: ["000017 up enhance_metadata: public.metadata alter/none (changes column key; ...)"]
hazards:
  description:
    - What the files break around the objects they drop or alter, read from the catalog. C(planned) is true for the
      planned files and false for the files of the same versions the other way (what moving back would run), which
      never stop this run.
    - C(kind) V(replica_identity) - a file drops the index a table's replica identity uses (severity V(error)),
      or sets a replica identity (V(warning)); V(view) - a file retypes or drops a column, or drops a table, that a
      view or materialized view uses (V(error); V(warning) with CASCADE, which drops the view); V(publication) - a
      file changes the columns of, or drops, a table in a publication (V(warning)).
    - Each names C(version), C(title), C(direction), C(line), C(table), C(object) and says in C(message) what would
      break and the remedy.
  returned: always
  type: list
  elements: dict
  version_added: 0.1.0
  sample:
    - version: 17
      title: enhance_metadata
      direction: down
      line: 4
      table: public.metadata
      kind: replica_identity
      object: public.metadata_entity_key_unique
      severity: error
      planned: true
      message: "Migration 000017 enhance_metadata (down, line 4) drops constraint metadata_entity_key_unique ..."
lock_id:
  description: The advisory lock id (golang-migrate's) for this database, schema and table.
  returned: always
  type: int
  sample: 2815074539
lock_holder:
  description: The session holding the migration lock, when O(operation=status) finds one.
  returned: when held by another session
  type: dict
edited_files:
  description: Applied migrations whose file changed since it was applied (from the history table).
  returned: always
  type: list
  elements: dict
missing_down:
  description:
    - Versions the plan goes up through that have no down file; a planned rollback past them is impossible (the module
      warns).
  returned: when the plan was worked out
  type: list
  elements: int
  sample: [17]
  version_added: 0.1.0
unrecorded_tables:
  description:
    - The tables of a schema that has no state table, when O(operation=status) or O(operation=migrate) refuses it
      because its version is unknown.
  returned: on that failure
  type: list
  elements: str
  sample: [diagrams, threat_models, threats, users]
  version_added: 0.1.0
"""

import time
import traceback

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible.module_utils.common.text.converters import to_native
from ansible_collections.tmi.migration.plugins.module_utils import analysis, hazards
from ansible_collections.tmi.migration.plugins.module_utils import migrations as files
from ansible_collections.tmi.migration.plugins.module_utils.postgres import argument_spec, connect

try:
    import psycopg2
    from psycopg2 import sql
except ImportError:  # connect() reports it through missing_required_lib
    psycopg2 = None

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
APPLICATION_NAME = "tmi.migration.pg_migrate"


class MigrationFailed(Exception):
    pass


class OnlineBuildFailed(Exception):
    """An online index build failed; its leftovers and this migration's other builds were dropped."""

    def __init__(self, error):
        super(OnlineBuildFailed, self).__init__(to_native(error))
        self.error = error


class Migrator(object):
    """golang-migrate's postgres driver semantics on one autocommit psycopg2 connection."""

    def __init__(self, module, conn):
        self.module = module
        self.conn = conn
        params = module.params
        with conn.cursor() as cur:
            cur.execute("SELECT current_database(), current_schema()")
            self.database, current_schema = cur.fetchone()
        self.schema = params["migrations_schema"] or current_schema
        if self.schema is None:
            module.fail_json(msg="No current schema: the search_path names no existing schema. Set migrations_schema.")
        self.table = params["migrations_table"]
        self.history = params["history_table"] or None
        self.lock_id = files.advisory_lock_id(self.database, self.schema, self.table)
        self.locked = False
        self.hazards = []
        self.warned = False

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
        own = [self.table, self.module.params["run_lock_table"]] + ([self.history] if self.history else [])
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

    def set_version(self, version, dirty):
        """golang-migrate's SetVersion: TRUNCATE and INSERT in one transaction; nil + dirty is stored as -1."""
        with self.conn.cursor() as cur:
            cur.execute("BEGIN")
            try:
                cur.execute(sql.SQL("TRUNCATE {}").format(self._ident(self.table)))
                if version != files.NIL_VERSION or dirty:
                    cur.execute(sql.SQL("INSERT INTO {} (version, dirty) VALUES (%s, %s)").format(
                        self._ident(self.table)), (version if version != files.NIL_VERSION else -1, dirty))
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
                self.module.fail_json(
                    msg="Another migration holds the lock (advisory lock %d on database %s, %s.%s): %s. Waited %ss. "
                        "Wait for it to finish, or if it is stuck, end that session "
                        "(SELECT pg_terminate_backend(pid)) and run again."
                        % (self.lock_id, self.database, self.schema, self.table, who, wait_seconds),
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
        files act on that neither exist nor are created by an earlier planned statement (``missing``)."""
        foreign_keys = [dict(name=r[0], table=r[1], ref_table=r[2], on_delete=r[3], on_update=r[4])
                        for r in self.execute(FOREIGN_KEYS_SQL)]
        user_functions = set(r[0] for r in self.execute(USER_FUNCTIONS_SQL))
        existing = set(r[0] for r in self.execute(TABLES_SQL))
        planned = []
        for migration, direction, _after in steps:
            with open(migration.path(direction)) as handle:
                planned.append((migration.version, migration.title, direction, handle.read()))
        result = analysis.analyse_plan(planned, self.schema, user_functions, foreign_keys)
        result["missing"] = [table for table in result["requires"] if table not in existing]
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
                self.module.warn("%s%s: %s" % (hazard["severity"].capitalize(), "" if hazard["planned"] else
                                               " (not run now: the %s file of a planned version)"
                                               % hazard["direction"], hazard["message"]))
        self.warned = True
        refused = [h["message"] for h in hazards.errors(found)]
        params = self.module.params
        if refused and params["operation"] == "migrate" and (params["allow_down"] or all(
                direction == "up" for _m, direction, _a in steps)):
            self.module.fail_json(msg="Refusing to migrate: %s Nothing was changed." % " ".join(refused),
                                  hazards=found, analysis=planned, plan=_plan_dicts(steps))

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
                     (self.module.params["lock_timeout"], self.module.params["statement_timeout"]))

    def _reset_timeouts(self):
        self.execute("RESET lock_timeout; RESET statement_timeout")

    def apply(self, migration, direction, version_after, version_before):
        """Run one step with retries on lock timeouts; return its result dict or raise MigrationFailed."""
        path = migration.path(direction)
        with open(path, "r") as handle:
            body = handle.read()
        online = (self.module.params["online_index_builds"] and direction == "up" and files.is_index_only(body))
        mode = "online" if online else ("autocommit" if files.needs_autocommit(body) else "transaction")
        statements = len(files.split_statements(body))
        retries, delay = self.module.params["lock_retries"], self.module.params["lock_retry_delay"]
        attempt = 0
        started = time.monotonic()
        while True:
            attempt += 1
            self.set_version(version_after, True)
            self._session_timeouts()
            try:
                if online:
                    attempt = self._run_online(body, retries, delay)
                elif mode == "autocommit":
                    for statement in files.split_statements(body):
                        self.execute(statement)
                else:
                    self.execute(body)
            except (psycopg2.Error, OnlineBuildFailed) as failure:
                self._reset_timeouts()
                error = failure.error if isinstance(failure, OnlineBuildFailed) else failure
                # A lock timeout rolls the whole batch back; a failed online build was undone: nothing remains.
                retryable = error.pgcode == LOCK_NOT_AVAILABLE and mode == "transaction"
                clean = retryable or online
                if clean:
                    self.set_version(version_before, False)
                if retryable and attempt <= retries:
                    time.sleep(delay * (2 ** (attempt - 1)))
                    continue
                raise MigrationFailed(self._failure_message(migration, direction, path, body, error, attempt, clean,
                                                            version_before, version_after, mode)) from failure
            self._reset_timeouts()
            duration = time.monotonic() - started
            self.set_version(version_after, False)
            self.record_history(migration, direction, path, duration, mode)
            return dict(version=migration.version, title=migration.title, direction=direction, file=path, mode=mode,
                        statements=statements, attempts=attempt, duration=round(duration, 3))

    def _index_state(self, schema, name):
        rows = self.execute(
            "SELECT i.indisvalid FROM pg_class c JOIN pg_index i ON i.indexrelid = c.oid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relname = %s AND n.nspname = %s",
            (name, schema or self.schema))
        return None if not rows else ("valid" if rows[0][0] else "invalid")

    def _drop_index(self, schema, name):
        self.execute(sql.SQL("DROP INDEX CONCURRENTLY IF EXISTS {}.{}").format(
            sql.Identifier(schema or self.schema), sql.Identifier(name)))

    def _run_online(self, body, retries, delay):
        """Build each index CONCURRENTLY, retrying one build on lock timeouts; undo everything on failure.

        Returns the largest number of attempts any build needed.
        """
        built, most_attempts = [], 1
        try:
            for name, schema, statement in files.concurrent_index_builds(body):
                existed = self._index_state(schema, name)
                if existed == "invalid":  # leftover of an earlier failed build of the same index
                    self._drop_index(schema, name)
                    existed = None
                attempt = 0
                while True:
                    attempt += 1
                    try:
                        self.execute(statement)
                        break
                    except psycopg2.Error as error:
                        # A failed CONCURRENTLY build leaves an INVALID index behind.
                        if self._index_state(schema, name) == "invalid":
                            self._drop_index(schema, name)
                        if error.pgcode != LOCK_NOT_AVAILABLE or attempt > retries:
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
        diag = error.diag
        line, statement = files.locate_error(body, getattr(diag, "statement_position", None))
        reason = (diag.message_primary or to_native(error)).strip()
        if diag.message_detail:
            reason += " (%s)" % diag.message_detail.strip()
        where = "%s failed%s" % (path, " at line %d" % line if line else "")
        text = "Migration %d %s (%s) %s: %s [SQLSTATE %s]." % (
            migration.version, migration.title, direction, where, reason, error.pgcode)
        if statement:
            text += " Statement: %s" % (statement if len(statement) < 600 else statement[:600] + " ...")
        if clean:
            if error.pgcode == LOCK_NOT_AVAILABLE:
                text += (" It could not get its locks within lock_timeout after %d attempts: a long transaction "
                         "holds a lock on the table. Nothing was changed; the version stays %d. Retry when the "
                         "blocking session is gone (see pg_stat_activity), or raise lock_retries." %
                         (attempts, version_before))
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


def _plan_dicts(steps):
    return [dict(version=m.version, title=m.title, direction=d) for m, d, _after in steps]


def _warn_missing_down(module, steps, result):
    """Set ``missing_down`` (the planned up migrations without a down file) and warn about them."""
    missing = [m.version for m, direction, _after in steps if direction == "up" and m.down is None]
    result["missing_down"] = missing
    if missing:
        module.warn("Migration%s %s ha%s no down file: a planned rollback past version %d is impossible once %s "
                    "applied; a rollback would restore the backup instead. Add the down file%s before migrating if "
                    "the rollback must keep the writes made after the migration."
                    % ("s" if len(missing) > 1 else "", ", ".join("%06d" % v for v in missing),
                       "ve" if len(missing) > 1 else "s", max(missing), "they are" if len(missing) > 1 else "it is",
                       "s" if len(missing) > 1 else ""))


def _unrecorded_message(migrator, tables):
    shown = ", ".join(tables[:5]) + (", ..." if len(tables) > 5 else "")
    return ("Database %s has %d table%s in schema %s (%s) but no %s.%s state table, so its version is unknown: "
            "migrating would run every migration from the first one again on top of the existing schema. Nothing "
            "was changed. If these migrations built the schema, record the version it is at: run pg_migrate with "
            "operation=force and target_version set to that version, which creates the state table and changes no "
            "schema (with the playbooks: ansible-playbook -i <inventory> playbooks/force_version.yml "
            "-e tmi_force_version=<version>), then run again. If the state table exists under another name or in "
            "another schema, set migrations_table and migrations_schema to it (with migrate.yml: "
            "-e migrate_state_table=<name> -e validate_state_table=<name>)."
            % (migrator.database, len(tables), "" if len(tables) == 1 else "s", migrator.schema, shown,
               migrator.schema, migrator.table))


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(
            path=dict(type="path", required=True),
            operation=dict(type="str", choices=["migrate", "status", "force"], default="migrate"),
            target_version=dict(type="str", default="latest"),
            allow_down=dict(type="bool", default=False),
            migrations_table=dict(type="str", default="schema_migrations"),
            migrations_schema=dict(type="str"),
            lock_wait_timeout=dict(type="float", default=60),
            lock_timeout=dict(type="str", default="5s"),
            statement_timeout=dict(type="str", default="0"),
            lock_retries=dict(type="int", default=5),
            lock_retry_delay=dict(type="float", default=2),
            online_index_builds=dict(type="bool", default=False),
            history_table=dict(type="str", default="tmi_migration_history"),
            run_lock_table=dict(type="str", default="tmi_migration_lock"),
        ),
        supports_check_mode=True,
    )
    if files.pglast is None:
        module.fail_json(msg=missing_required_lib("pglast"), exception=files.PGLAST_IMPORT_ERROR)
    params = module.params
    operation = params["operation"]

    # Everything about the files is checked before the database is touched.
    try:
        migrations = files.read_migrations(params["path"])
        target = files.resolve_target(migrations, params["target_version"])
        latest = files.resolve_target(migrations, "latest")
        for migration in migrations.values():
            for path in (migration.up, migration.down):
                if path:
                    files.check_syntax(path)
    except files.MigrationError as error:
        module.fail_json(msg=to_native(error))

    conn = connect(module, APPLICATION_NAME, autocommit=True)
    migrator = Migrator(module, conn)
    result = dict(changed=False, lock_id=migrator.lock_id, target_version=target, latest_version=latest,
                  applied=[], plan=[], edited_files=[])
    try:
        if operation != "force":
            unrecorded = migrator.unrecorded_tables()
            if unrecorded:
                module.fail_json(msg=_unrecorded_message(migrator, unrecorded), unrecorded_tables=unrecorded,
                                 **result)
        before, dirty = migrator.read_state()
        result.update(version_before=before, version_after=before, dirty=dirty)
        try:
            steps = files.plan(migrations, before, target) if operation == "migrate" or operation == "status" else []
        except files.MigrationError as error:
            if operation == "migrate":
                module.fail_json(msg=to_native(error), **result)
            steps = []
            result["plan_error"] = to_native(error)
        result["plan"] = _plan_dicts(steps)
        _warn_missing_down(module, steps, result)
        result["analysis"] = migrator.analyse(steps)
        result["hazards"] = migrator.hazards
        result["edited_files"] = migrator.edited_files(migrations, before)
        for edited in result["edited_files"]:
            module.warn("Migration %(version)d (%(file)s) changed since it was applied on %(applied_at)s; "
                        "the database holds what the old file did." % edited)

        if operation == "status":
            holder = migrator.lock_holder()
            if holder:
                result["lock_holder"] = holder
            module.exit_json(**result)

        if operation == "force":
            result["changed"] = (before, dirty) != (target, False)
            result.update(version_after=target, dirty=False)
            if result["changed"] and not module.check_mode:
                migrator.acquire_lock(params["lock_wait_timeout"])
                migrator.ensure_state_table()
                migrator.set_version(target, False)
            module.exit_json(**result)

        if not module.check_mode:
            # Decide only while holding the lock: a run in progress shows its version as dirty until it ends.
            migrator.acquire_lock(params["lock_wait_timeout"])
            before, dirty = migrator.read_state()
            try:
                steps = files.plan(migrations, before, target)
            except files.MigrationError as error:
                module.fail_json(msg=to_native(error), **result)
            if _plan_dicts(steps) != result["plan"]:  # another run moved the version meanwhile
                result["analysis"] = migrator.analyse(steps)
                _warn_missing_down(module, steps, result)
            result.update(version_before=before, version_after=before, dirty=dirty, plan=_plan_dicts(steps))
        if dirty:
            holder = None if migrator.locked else migrator.lock_holder()
            if holder:
                module.fail_json(msg="Version %d is marked dirty because another migration is running right now "
                                     "(pid %s, application_name '%s'); wait for it to finish."
                                     % (before, holder["pid"], holder["application_name"]), lock_holder=holder,
                                 **result)
            module.fail_json(
                msg="The database is dirty at version %d: a migration failed part-way and nothing will run on top of "
                    "it. Inspect the schema, then either run operation=force with target_version set to the version "
                    "the schema is really at (this changes no schema, like 'migrate force V'; with the playbooks: "
                    "playbooks/force_version.yml -e tmi_force_version=<version>) and migrate again, or run "
                    "playbooks/rollback.yml to restore the backup." % before, **result)
        if target < before and not params["allow_down"]:
            module.fail_json(
                msg="target_version %d is below the database's version %d: going down runs down migrations that "
                    "drop schema and data. Set allow_down: true to confirm, or check target_version."
                    % (target, before), **result)
        if not steps:
            module.exit_json(**result)
        missing = result["analysis"]["missing"]
        if missing:
            module.fail_json(msg="The planned migrations act on %s, which %s not exist in database %s (and no earlier "
                                 "planned statement creates %s). Point the module at the database these migrations "
                                 "belong to, or check the files. Nothing was changed."
                                 % (", ".join(missing), "does" if len(missing) == 1 else "do", migrator.database,
                                    "it" if len(missing) == 1 else "them"), **result)
        result["changed"] = True
        if module.check_mode:
            result["version_after"] = target
            module.exit_json(**result)

        migrator.ensure_state_table()
        migrator.ensure_history_table()
        current = before
        for migration, direction, after in steps:
            try:
                result["applied"].append(migrator.apply(migration, direction, after, current))
            except MigrationFailed as failure:
                result["version_after"], result["dirty"] = migrator.read_state()
                result["changed"] = True
                module.fail_json(msg=to_native(failure), **result)
            current = after
        result["version_after"], result["dirty"] = migrator.read_state()
        module.exit_json(**result)
    except psycopg2.Error as error:
        module.fail_json(msg="PostgreSQL error while managing migration state: %s" % to_native(error).strip(),
                         exception=traceback.format_exc(), **result)
    finally:
        try:
            migrator.release_lock()
        finally:
            conn.close()


if __name__ == "__main__":
    main()
