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
    community.postgresql's M(community.postgresql.postgresql_script) runs one file without state or locking. The
    state, lock, runs and history are this collection's own (C(module_utils/migrator.py)); the connection is
    psycopg2's.
  - Beyond golang-migrate, it retries on lock timeouts instead of queueing behind long transactions, can build the
    indexes of an index-only migration online (C(CREATE INDEX CONCURRENTLY)), and keeps a history of applied files
    with checksums so that an edited file is reported.
  - While a file runs, a second session (the lock-queue watchdog, C(module_utils/watchdog.py), application_name
    C(tmi.migration.pg_migrate watchdog)) watches whether the migration waits for a lock, who blocks it and who
    queues behind it, and cancels the attempt once application sessions have queued behind it for longer than
    O(lock_queue_timeout); the cancelled attempt is rolled back and retried like a lock timeout. Each applied file
    reports its lock waits (RV(applied)).
  - It also says what the planned files will do (RV(analysis)) - per statement, the tables it acts on and what it does
    to their rows - and refuses a plan whose files act on tables the database does not have, before anything changes.
    The analysis is this collection's own (C(module_utils/analysis.py)), as no library reads migration files that way.
  - It predicts the table-level lock each planned statement takes on each table, by PostgreSQL's documentation
    (C(lock_summary) of RV(analysis)), and lints the statements with squawk's best-known rules, grading each finding
    by the size of its table (C(lint) of RV(analysis), C(module_utils/lint.py)). The findings are advice and never
    stop a run; with O(online_index_builds) the index-only up files are not told to build CONCURRENTLY, as they are.
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
    description:
      - Directory holding the migration files, on the host that runs the module.
      - Required for O(operation=migrate) and O(operation=force). Without it O(operation=status) reads the state alone
        (RV(version_before), RV(dirty)) - no plan, no analysis - which needs no files on the host.
    type: path
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
  allow_down:
    description: Allow a plan that goes down. Down migrations drop schema and data, so this is never implied.
    type: bool
    default: false
    version_added: 0.1.0
  lock_wait_timeout:
    description:
      - Seconds to wait for the migration advisory lock held by another run (of this module or of golang-migrate).
      - When it runs out the module fails and names the session that holds the lock.
    type: float
    default: 60
    version_added: 0.1.0
  rewrites:
    description:
      - The online-equivalent rewrites the rehearsal proved (RV(tmi.migration.pg_rehearse#module:rewrites) with
        C(proven) true), each a dict with C(version) and C(sha256) (of the up file). An up file runs rewritten only
        when its version and its checksum are in this list; a file edited since the rehearsal runs as written (and
        the module warns). Empty runs every file as written, as golang-migrate does.
      - A rewritten file runs as several steps (C(module_utils/rewrite.py)) - the file's transaction with its CHECK
        and FOREIGN KEY constraints added C(NOT VALID), then each validation, C(CREATE UNIQUE INDEX CONCURRENTLY) and
        C(ADD CONSTRAINT ... USING INDEX), C(SET NOT NULL) after a validated helper CHECK, C(CREATE INDEX
        CONCURRENTLY) - each in its own transaction. The version is dirty from before the first step until the last
        one committed; a lock timeout retries the step that hit it. A failure after the first step leaves the version
        dirty and the history table saying which steps committed (RV(interrupted_rewrite)), which the rollback role
        recovers from with the file's down file instead of restoring the backup.
    type: list
    elements: dict
    default: []
    version_added: 0.1.0
  recover_rewrite:
    description:
      - With O(operation=force), recover a rewritten file that stopped between its steps (RV(interrupted_rewrite)). It
        first drops what its unfinished steps left that its down file does not remove - the unique index of a
        C(CREATE UNIQUE INDEX CONCURRENTLY) whose C(ADD CONSTRAINT ... USING INDEX) did not commit (the down file
        drops the constraint, which does not exist), the INVALID index of a build that did not finish, the helper
        CHECK of an unfinished C(SET NOT NULL) - each under O(lock_timeout), then records O(target_version) clean so
        that its down file can run. The steps come from the history table's row, whether the run failed
        (V(rewrite-interrupted)) or was killed (V(rewriting)).
      - In the transaction that records the version clean, that row's mode becomes V(rewrite-recovered) - until the
        file's down file runs (and writes its own row), O(operation=migrate) refuses any plan that does not start
        with that down file (RV(recovered_rewrite)), so a rollback that stops after the recovery never leaves the
        half-applied file to be migrated on top of. A plain O(operation=force) at that version (after its steps
        were run by hand) sets the mode to V(rewrite-finished-by-hand) and lifts the refusal.
      - Refused, changing nothing, unless the database is dirty at O(target_version) with an interrupted rewrite
        there; when a leftover cannot be dropped (its lock not granted within O(lock_timeout)) the version stays
        dirty and the module fails, naming it. The rollback role uses it right before the down files run.
    type: bool
    default: false
    version_added: 0.1.0
attributes:
  check_mode:
    support: full
    description: Returns the plan (versions, titles, direction) and changes nothing.
extends_documentation_fragment:
  - community.postgresql.postgres
  - tmi.migration.postgres
  - tmi.migration.migration_files
  - tmi.migration.progress
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
  returned: always (null without O(path))
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
  description:
    - The migrations applied, with timing and statement counts - C(started) (when the file began, in seconds since
      the epoch on the host the module runs on) and C(duration) (seconds). C(mode) is V(transaction), V(autocommit),
      V(online) or V(rewritten) (O(rewrites)); a rewritten file also has C(steps), each with C(step), C(kind), C(sql),
      C(description), C(lock) (the lock it takes on its table), C(status), C(attempts) and C(duration).
    - C(lock_waits) - one entry per attempt that waited for a lock (empty when none did), with C(attempt),
      C(waited_seconds), C(cancelled) (the watchdog cancelled it), C(queued) (the most client sessions seen queued
      behind it at once), C(queued_seconds) (the longest one of them waited), C(blockers) (the sessions that
      blocked it, each with C(pid), C(application_name), C(state), C(xact_age_seconds), C(backend_type),
      C(wait_event); never their query text, which can carry data), C(index) for an online build or a rewritten
      file's step, and C(watchdog_error) when the watchdog failed. C(lock_wait_summary) says the same in one line.
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
      started: 1796610383.874
      duration: 2.41
      lock_waits: []
      lock_wait_summary: ""
    - version: 17
      title: enhance_metadata
      direction: up
      file: /opt/tmi/auth/migrations/000017_enhance_metadata.up.sql
      mode: transaction
      statements: 5
      attempts: 2
      duration: 3.87
      lock_waits:
        - attempt: 1
          waited_seconds: 1.06
          cancelled: true
          queued: 1
          queued_seconds: 1.02
          blockers: [{"pid": 4242, "application_name": "tmi", "state": "idle in transaction",
                      "xact_age_seconds": 40.2, "backend_type": "client backend", "wait_event": "Client:ClientRead"}]
      lock_wait_summary: "waited 1.06 s (attempt 1) behind pid 4242 (app 'tmi', transaction 40.2 s old, idle in
        transaction), up to 1 session queued behind it for at most 1.02 s, cancelled and retried"
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
    - Each statement also has C(locks) - per table it names (C(schema.table)), the strongest table-level lock
      PostgreSQL's documentation says it takes, by the documentation's names (V(ACCESS SHARE) to
      V(ACCESS EXCLUSIVE)), the referenced table of a foreign key included; a table the statement creates is left
      out - and C(locks_unknown), true when the locks cannot be known (an unknown effect, the table of an index the
      catalog does not know, VACUUM or REINDEX of every table).
    - C(lock_summary) - per file and table, the strongest predicted lock and the first line taking it, and what it
      blocks (with O(online_index_builds), an index-only up file's SHARE UPDATE EXCLUSIVE).
    - C(sizes) - per table the plan names that exists, C(kind) (pg_class.relkind), C(rows) (the estimate of
      pg_class.reltuples, null when never analysed) and C(bytes) (pg_total_relation_size; a partitioned table sums
      its partitions).
    - C(lint) - findings on the statements, named after squawk's rules (V(constraint-missing-not-valid),
      V(adding-foreign-key-constraint), V(disallowed-unique-constraint), V(adding-serial-primary-key-field),
      V(changing-column-type), V(adding-not-nullable-field), V(adding-field-with-default),
      V(require-concurrent-index-creation), V(require-concurrent-index-deletion), V(require-concurrent-reindex),
      V(adding-required-field), V(renaming-column), V(renaming-table), V(ban-drop-column), V(ban-drop-table)), each
      with C(version), C(direction), C(title), C(line), C(rule), C(table), C(severity) and a C(message) saying what
      happens and the safer way. C(severity) follows the table's size - V(info) under 10,000 rows and 10 MB,
      V(error) from 1,000,000 rows or 1 GB, V(warning) between or when unknown; the rules about the running
      application (renames, drops, a required column) are V(warning) whatever the size (V(info) in a down file).
      Nothing is said about a table created earlier in the plan. C(lint_summary) - one line per finding.
  returned: always
  type: dict
  sample:
    tables: {"public.orders": {"does": ["none", "alter"], "changed": ["status"], "added": [], "dropped": [],
                               "by": [{"version": 17, "direction": "up", "line": 4, "what": "changes column status"}]}}
    unknown: []
    missing: []
    summary: ["000017 up order_status: public.orders alter/none (changes column status; ...)"]
    lock_summary: ["000017 up order_status: public.orders ACCESS EXCLUSIVE (line 4) - blocks reads and writes"]
    sizes: {"public.orders": {"kind": "r", "rows": 1200000, "bytes": 356515840}}
    lint:
      - version: 17
        direction: up
        title: order_status
        line: 4
        rule: changing-column-type
        table: public.orders
        severity: error
        message: "public.orders (about 1,200,000 rows, 340.0 MB): changes the type of column status: ..."
    lint_summary: ["000017 up order_status line 4: ERROR changing-column-type public.orders (...): ..."]
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
      title: order_status
      direction: down
      line: 4
      table: public.orders
      kind: replica_identity
      object: public.orders_number_key
      severity: error
      planned: true
      message: "Migration 000017 order_status (down, line 4) drops constraint orders_number_key ..."
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
failed_migration:
  description:
    - The file that failed, with the lock waits of its attempts (C(lock_waits), as in RV(applied)), when it began
      (C(started), seconds since the epoch) and how long it ran until it failed (C(duration), seconds).
  returned: when a migration failed
  type: dict
  version_added: 0.1.0
  sample: {"version": 17, "title": "enhance_metadata", "direction": "up", "lock_waits": []}
interrupted_rewrite:
  description:
    - When the version is dirty because a rewritten file (O(rewrites)) stopped between its steps - its first step
      (the file's transaction) committed - the history table's record of it - C(version), C(title), C(mode)
      (V(rewriting) while it ran or was killed, V(rewrite-interrupted) after a failure), C(started_at), C(steps) (each
      with C(step), C(kind), C(sql), C(description), C(status) - V(committed), V(failed) or V(pending) - and
      C(error)), C(committed) and C(failed) (step numbers), C(id) (the history row's). Null when the dirty state has
      another cause.
  returned: when the version is dirty
  type: dict
  version_added: 0.1.0
recovered_rewrite:
  description:
    - When the version is clean but is that of a rewritten file that O(recover_rewrite) recorded clean and whose down
      file has not run since (its history row's mode V(rewrite-recovered)) - its deferred steps never ran - that row,
      with the keys of RV(interrupted_rewrite). O(operation=migrate) then refuses any plan that does not start with
      its down file.
  returned: when such a row is the latest of the version
  type: dict
  version_added: 0.1.0
recovered:
  description:
    - With O(recover_rewrite), the leftovers of the interrupted rewrite that were dropped (in check mode, the names
      of those it would look for).
  returned: with O(recover_rewrite)
  type: list
  elements: str
  sample: [the valid index metadata_entity_key_unique]
  version_added: 0.1.0
unrecorded_tables:
  description:
    - The tables of a schema that has no state table, when O(operation=status) or O(operation=migrate) refuses it
      because its version is unknown.
  returned: on that failure
  type: list
  elements: str
  sample: [customers, orders]
  version_added: 0.1.0
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible.module_utils.common.text.converters import to_native
from ansible_collections.tmi.migration.plugins.module_utils import migrator, progress
from ansible_collections.tmi.migration.plugins.module_utils import migrations as files
from ansible_collections.tmi.migration.plugins.module_utils.postgres import argument_spec, connect

APPLICATION_NAME = "tmi.migration.pg_migrate"
WATCHDOG_NAME = "tmi.migration.pg_migrate watchdog"


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(
            path=dict(type="path"),
            operation=dict(type="str", choices=["migrate", "status", "force"], default="migrate"),
            allow_down=dict(type="bool", default=False),
            lock_wait_timeout=dict(type="float", default=60),
            rewrites=dict(type="list", elements="dict", default=[]),
            recover_rewrite=dict(type="bool", default=False),
            **dict(migrator.FILE_OPTIONS, **progress.OPTIONS)
        ),
        supports_check_mode=True,
    )
    if files.pglast is None:
        module.fail_json(msg=missing_required_lib("pglast"), exception=files.PGLAST_IMPORT_ERROR)
    params = module.params

    # Everything about the files is checked before the database is touched.
    if params["path"] is None and params["operation"] != "status":
        module.fail_json(msg="path is required for operation=%s: the directory of the migration files. Nothing was "
                             "changed." % params["operation"])
    try:
        if params["path"] is None:
            migrations, target, latest = {}, None, None
        else:
            migrations, target, latest = files.load(params["path"], params["target_version"])
    except files.MigrationError as error:
        module.fail_json(msg=to_native(error))

    conn = connect(module, APPLICATION_NAME, autocommit=True)
    # The watchdog's session is opened before anything changes: a failure to connect stops the run here.
    watching = params["operation"] == "migrate" and not module.check_mode and (params["lock_queue_timeout"] or 0) > 0
    watch = connect(module, WATCHDOG_NAME, autocommit=True) if watching else None
    engine = None
    report = progress.Progress.of_module(module)
    try:
        engine = migrator.Migrator(conn, params, module.warn, watch)
        engine.progress = report
        # The migrating session is watched: what PostgreSQL says of its index builds, rewrites and lock waits.
        with report.step("migration", dbname=conn.info.dbname, pids=[conn.get_backend_pid()]):
            result = engine.run(migrations, target, latest, module.check_mode)
    except migrator.Refused as refusal:
        module.fail_json(msg=to_native(refusal), **refusal.details)
    finally:
        try:
            if engine is not None:
                engine.release_lock()
        finally:
            conn.close()
            if watch is not None:
                watch.close()
    module.exit_json(**result)


if __name__ == "__main__":
    main()
