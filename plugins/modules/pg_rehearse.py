#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, tmi.migration maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: pg_rehearse
short_description: Rehearse a migration up and back down on the verified scratch copy of a backup, observing its locks
version_added: 0.1.0
description:
  - Runs the planned up files on O(target_db) - the scratch copy M(tmi.migration.pg_restore_backup) restored and
    verified (O(tmi.migration.pg_restore_backup#module:scratch)) - with the engine of M(tmi.migration.pg_migrate) and
    the same options, then the down files back to the starting version, and drops the copy (O(drop_after)).
    Production is never touched - the module refuses a database that is not marked as the verification restore of
    the backup's database.
  - For each file and statement it returns the duration, the table-level locks the migrating session held (observed
    in C(pg_locks), not predicted), the tables that got a new file (C(pg_class.relfilenode) changed - rewritten or
    truncated) and how long each ACCESS EXCLUSIVE lock was held. After the up files, the figures of the tables the
    plan changes; after the down files, whether the normalised catalog and those tables' data equal the start.
  - Fails, after dropping the copy, when an up file fails (RV(error) names file, line, statement and the server's
    error), when O(require_reversible) is set and the down files fail or do not restore the start, and when a file
    held an ACCESS EXCLUSIVE lock longer than O(max_exclusive_seconds).
  - Written for this collection because no tool rehearses on a copy of the data (C(module_utils/rehearsal.py)).
    Statements of a file that runs outside a transaction (CONCURRENTLY) are observed by a second session sampling
    C(pg_locks) every 2 ms while it holds a snapshot open, which a CONCURRENTLY statement waits for with its lock
    held, so that lock is always seen; another such statement's lock held for less than 2 ms may be missed (those
    statements say C(sampled)).
options:
  path:
    description: Directory holding the migration files, on the host that runs the module.
    type: path
    required: true
    version_added: 0.1.0
  target_db:
    description: The verified scratch copy to rehearse on (RV(tmi.migration.pg_restore_backup#module:scratch_db)).
    type: str
    required: true
    version_added: 0.1.0
  backup:
    description:
      - Directory of the backup the copy was restored from. Its manifest names the production database (the copy must
        carry the mark of a verification restore of it) and holds the figures the down files must restore.
    type: path
    required: true
    version_added: 0.1.0
  drop_after:
    description: Drop O(target_db) when the rehearsal ends, whatever its outcome.
    type: bool
    default: true
    version_added: 0.1.0
  require_reversible:
    description:
      - Fail when the down files fail or do not bring the schema and the data back to the start (the planned rollback
        would not work, and a rollback would restore the backup instead).
    type: bool
    default: false
    version_added: 0.1.0
  max_exclusive_seconds:
    description:
      - Fail when an up file held an ACCESS EXCLUSIVE lock on a table that existed before it for longer than this
        many seconds (writers and readers of that table wait that long in production). Unset, no limit.
    type: float
    version_added: 0.1.0
  online_rewrites:
    description:
      - Try the online-equivalent rewrite of each up file (C(module_utils/rewrite.py) - constraints added C(NOT VALID)
        and validated after, UNIQUE through C(CREATE UNIQUE INDEX CONCURRENTLY), C(SET NOT NULL) after a validated
        CHECK, C(CREATE INDEX CONCURRENTLY) after the file's transaction) and prove it - after the file ran as
        written, its down file, then the rewritten steps, observed, and the normalised catalog compared with the
        file's as written (constraint and index names and definitions, validated or not, column types, defaults,
        NOT NULL).
      - A proven rewrite is listed in RV(rewrites) (pass those with C(proven) true to
        O(tmi.migration.pg_migrate#module:rewrites)) and the rehearsal goes on with the rewritten steps'
        observations, which are what production will see. A rewrite that is not proven (the catalogs differ, the
        rewritten steps or the down file fail) is listed with the reason and the file is rehearsed as written.
    type: bool
    default: true
    version_added: 0.1.0
attributes:
  check_mode:
    support: full
    description: Checks the files and the copy and rehearses nothing.
extends_documentation_fragment:
  - community.postgresql.postgres
  - tmi.migration.postgres
  - tmi.migration.migration_files
  - tmi.migration.progress
author:
  - tmi.migration maintainers (@tmi-migration)
"""

EXAMPLES = r"""
- name: Verify the backup and keep the verified copy
  tmi.migration.pg_restore_backup:
    backup: /var/backups/tmi/20261124T010000Z-1
    target_db: tmi_verify_20261124t010000z_1
    scratch: true
    login_db: postgres
  register: verified

- name: Rehearse the migration to version 17 on it, then drop it
  tmi.migration.pg_rehearse:
    path: /opt/tmi/auth/migrations
    target_version: "17"
    target_db: "{{ verified.scratch_db }}"
    backup: /var/backups/tmi/20261124T010000Z-1
    online_index_builds: true
    max_exclusive_seconds: 5
    login_db: postgres
"""

RETURN = r"""
rehearsed:
  description: Whether anything was rehearsed (false when the plan is empty or goes down, see RV(skipped)).
  returned: unless the files or the backup cannot be read
  type: bool
skipped:
  description: Why nothing was rehearsed.
  returned: when nothing was
  type: str
  sample: nothing to migrate
version_before:
  description: The copy's (and production's at the backup) version.
  returned: once the copy and the files were checked
  type: int
target_version:
  description: The version the plan goes to.
  returned: once the copy and the files were checked
  type: int
up:
  description:
    - One entry per up file - C(version), C(title), C(file), C(ok), C(mode), C(duration) (seconds), C(exclusive)
      (table to seconds an ACCESS EXCLUSIVE lock was held), C(rewritten) (tables), C(error) when it failed - and
      C(statements), one per statement - C(line), C(statement), C(duration), C(locks) (the strongest mode the session
      held on each table after it), C(taken) (the locks it took), C(held) (seconds each of those was held),
      C(predicted) (the statement analysis's prediction), C(rewritten), C(sampled).
  returned: once the copy and the files were checked
  type: list
  elements: dict
down:
  description: The same for the down files, back to RV(version_before).
  returned: once the copy and the files were checked
  type: list
  elements: dict
up_ok:
  description: Whether every up file ran.
  returned: once the copy and the files were checked
  type: bool
down_ok:
  description: Whether every down file ran (null when the up files failed).
  returned: once the copy and the files were checked
  type: bool
schema_restored:
  description: Whether the normalised catalog after the down files equals the start (the bookkeeping tables aside).
  returned: once the copy and the files were checked
  type: bool
data_restored:
  description: Whether the figures of the tables the plan changes equal the backup's after the down files.
  returned: once the copy and the files were checked
  type: bool
reversible:
  description: Whether the planned rollback works - the down files ran and restored schema and data.
  returned: once the copy and the files were checked
  type: bool
schema_differences:
  description: What the down files left different in the catalog.
  returned: when the down files ran
  type: list
  elements: str
data_differences:
  description: The tables whose figures the down files left different (as in M(tmi.migration.pg_integrity_check)).
  returned: when the down files ran
  type: list
  elements: dict
figures_after_up:
  description: The figures (rows, checksum) of the tables the plan changes, after the up files.
  returned: once the copy and the files were checked
  type: dict
exclusive_over:
  description: The files and tables whose ACCESS EXCLUSIVE lock outlasted O(max_exclusive_seconds).
  returned: once the copy and the files were checked
  type: list
  elements: dict
rewrites:
  description:
    - Per up file that has an online-equivalent rewrite (or would need one - it blocked writers - but none applies),
      C(version), C(title), C(sha256) (of the up file, what O(tmi.migration.pg_migrate#module:rewrites) checks),
      C(proven), C(steps) (each C(step), C(kind), C(sql), C(transaction), C(description), C(lock), C(duration)) and,
      when not proven, C(reason).
    - A proven file's entry in RV(up) has C(mode) V(rewritten), the observations of the steps (each statement with
      its C(step)), C(rewrite) and C(as_written) (the observations of the file as written); a file whose rewrite was
      not proven has C(rewrite) with C(proven) false and C(reason).
  returned: once the copy and the files were checked
  type: list
  elements: dict
  version_added: 0.1.0
error:
  description: What failed in an up file - file, line, statement and the server's error.
  returned: when an up file failed
  type: str
down_error:
  description: Why the planned rollback would not work.
  returned: when it would not
  type: str
lines:
  description: "One line per file for people, such as C(000017 enhance_metadata: 2.1 s; metadata ACCESS EXCLUSIVE 1.9 s
    (rewritten); down: ok)."
  returned: always
  type: list
  elements: str
duration:
  description: Seconds the rehearsal took.
  returned: when it ran
  type: float
stopped:
  description: Set when the rehearsal says the migration must not go ahead (the module fails with the reason).
  returned: on that failure
  type: bool
dropped:
  description: Whether O(target_db) was dropped.
  returned: always
  type: bool
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible.module_utils.common.text.converters import to_native
from ansible_collections.tmi.migration.plugins.module_utils import migrator, progress, rehearsal
from ansible_collections.tmi.migration.plugins.module_utils import migrations as files
from ansible_collections.tmi.migration.plugins.module_utils.postgres import argument_spec, connector
from ansible_collections.tmi.migration.plugins.module_utils.restore import (
    Restorer,
    RestoreError,
    load_manifest,
)

try:
    import psycopg2
except ImportError:  # connect() reports it
    psycopg2 = None

APPLICATION_NAME = "tmi.migration.pg_rehearse"


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(
            path=dict(type="path", required=True),
            target_db=dict(type="str", required=True),
            backup=dict(type="path", required=True),
            drop_after=dict(type="bool", default=True),
            require_reversible=dict(type="bool", default=False),
            max_exclusive_seconds=dict(type="float"),
            online_rewrites=dict(type="bool", default=True),
            **dict(migrator.FILE_OPTIONS, **progress.OPTIONS)
        ),
        supports_check_mode=True,
    )
    if files.pglast is None:
        module.fail_json(msg=missing_required_lib("pglast"), exception=files.PGLAST_IMPORT_ERROR)
    params = module.params
    target_db = params["target_db"]
    try:
        migrations, target, _latest = files.load(params["path"], params["target_version"])
        manifest, _dump = load_manifest(params["backup"])
    except (files.MigrationError, RestoreError) as error:
        module.fail_json(msg="%s Nothing was rehearsed." % to_native(error).rstrip("."))
    connect = connector(module, APPLICATION_NAME)
    report = progress.Progress.of_module(module)
    restorer = Restorer(connect, params, module.warn)
    result = dict(changed=False, rehearsed=False, dropped=False, up=[], down=[], lines=[])
    try:
        login_db = restorer.execute("SELECT current_database()")[0][0]
        if target_db == login_db or not restorer.is_scratch_of(target_db, manifest["database"]):
            module.fail_json(msg="Database %s is not the verified scratch copy of database %s (pg_restore_backup with "
                                 "scratch: true marks it so): the rehearsal runs migrations only on such a copy. "
                                 "Nothing was changed." % (target_db, manifest["database"]), stopped=True, **result)
        if module.check_mode:
            module.exit_json(**result)
        problem = None
        try:
            result.update(rehearse(connect, target_db, params, migrations, target, manifest, module.warn, report))
        except psycopg2.Error as error:
            problem = ("The rehearsal could not run on %s: %s. Production was not changed."
                       % (target_db, to_native(error).strip()))
        finally:
            if params["drop_after"]:
                restorer.drop(target_db)
                result["dropped"] = True
        result["changed"] = result["rehearsed"] and not result["dropped"]
    finally:
        restorer.admin.close()
    result["lines"] = rehearsal.summary_lines(result)
    problem = problem or rehearsal.gate(result, params["require_reversible"], params["max_exclusive_seconds"])
    if problem:
        module.fail_json(msg=problem, stopped=True, **result)
    if result["rehearsed"] and not result["reversible"]:
        module.warn(rehearsal.irreversible_text(result))
    module.exit_json(**result)


def rehearse(connect, target_db, params, migrations, target, manifest, warn, report):
    conn = connect(dbname=target_db, autocommit=True)
    watch = connect(dbname=target_db, autocommit=True)
    try:
        engine = rehearsal.Rehearsal(conn, params, watch, warn)
        engine.progress = report
        # Watched on the copy until the files are back down; the step ends (and its session with it) before the
        # copy is dropped.
        with report.step("rehearsal on %s" % target_db, dbname=target_db, pids=[conn.get_backend_pid()]):
            return engine.rehearse(migrations, target, manifest["figures"], params["max_exclusive_seconds"])
    except migrator.Refused as refusal:
        return dict(refusal.details, up_ok=False, error=to_native(refusal))
    finally:
        watch.close()
        conn.close()


if __name__ == "__main__":
    main()
