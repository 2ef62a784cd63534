#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, tmi.migration maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: pg_restore_backup
short_description: Restore a tmi.migration backup into a new database, verify it, and optionally swap it into place
version_added: 0.1.0
description:
  - Checks every file of a backup made by M(tmi.migration.pg_backup) against the sha256 in its manifest, creates
    O(target_db) (which must not exist), restores with parallel C(pg_restore --exit-on-error), and compares every
    table's row count and content checksum with the figures the manifest recorded in the dump's snapshot (over
    O(jobs) connections sharing one snapshot, the largest tables first).
  - Any failure drops O(target_db) again; an existing database is never touched before the restore is verified.
  - With O(replace), swaps the verified database into place - connections to the live database are refused and
    ended, the live database is renamed to O(keep_old_as), and O(target_db) takes its name. The old database is kept
    for an operator to drop (or dropped with O(drop_old)). This replaces the runbook's C(dropdb && createdb && psql <),
    which leaves no database at all when the restore fails halfway.
  - With O(verify_only), compares an existing O(target_db) with the manifest and changes nothing.
  - Written for this collection because M(community.postgresql.postgresql_db) (C(state=restore)) neither verifies
    a restore nor swaps databases (C(module_utils/restore.py)); the restore itself is C(pg_restore)'s. The password
    reaches pg_restore through a temporary C(0600) pgpass file.
  - The connecting user needs C(CREATEDB) (and ownership of, or superuser over, the live database for O(replace)).
options:
  backup:
    description: Directory of the backup (holding C(manifest.json)).
    type: path
    required: true
    version_added: 0.1.0
  target_db:
    description: Database to restore into; must not exist (except with O(verify_only)). With O(guard_only), the live
      database a swap would replace.
    type: str
    required: true
    version_added: 0.1.0
  pg_bin_dir:
    description: Directory of C(pg_restore); empty uses C(PATH).
    type: path
    default: ""
    version_added: 0.1.0
  jobs:
    description: Parallel pg_restore jobs, and connections that compute the restored tables' figures.
    type: int
    default: 2
    version_added: 0.1.0
  verify:
    description: Compare the restored data with the manifest's figures (a difference fails and drops O(target_db)).
    type: bool
    default: true
    version_added: 0.1.0
  verify_only:
    description: Only compare the existing O(target_db) with the manifest.
    type: bool
    default: false
    version_added: 0.1.0
  drop_after:
    description: Drop O(target_db) after a successful verification (a scratch restore that proves the backup).
    type: bool
    default: false
    version_added: 0.1.0
  scratch:
    description:
      - Restore a scratch copy as O(drop_after) does (marked as a verification restore, the leftovers of earlier ones
        removed), but keep it after a successful verification, for M(tmi.migration.pg_rehearse) to rehearse the
        migration on and drop. O(drop_after) implies it.
    type: bool
    default: false
    version_added: 0.1.0
  drop_scratch:
    description:
      - Only drop O(target_db) if it is a scratch copy a verification restore of this backup's database made (the
        mark O(scratch) and O(drop_after) leave); any other database, and a missing one, is left alone. For the copy
        a run kept for a rehearsal that did not run (a failure or C(--tags) between them). Changes nothing else.
    type: bool
    default: false
    version_added: 0.1.0
  replace:
    description: Name of the live database to replace with the verified O(target_db).
    type: str
    version_added: 0.1.0
  keep_old_as:
    description: New name of the replaced database. Required with O(replace).
    type: str
    version_added: 0.1.0
  drop_old:
    description: Drop the replaced database after the swap instead of keeping it.
    type: bool
    default: false
    version_added: 0.1.0
  keep_old_count:
    description:
      - With O(replace), how many of the databases that swaps of O(replace) kept to keep after this swap, O(keep_old_as)
        included (it always counts as the newest); the older ones are dropped and named in RV(dropped_old). V(0) keeps
        them all.
      - Every swap writes on the database it keeps a comment saying which database it was and when it was replaced. A
        database counts only when its whole name matches O(keep_old_pattern) and that comment says it was O(replace);
        any other database is never dropped (those whose name matches but whose comment does not say so are listed in
        RV(unattributed_old)), nor is one somebody is connected to (a warning says so).
    type: int
    default: 0
    version_added: 0.1.0
  keep_old_pattern:
    description:
      - Regular expression (Python syntax) the whole name of every database a swap of O(replace) keeps matches, such as
        the backup role's C(<db>_before_restore_<run>) names. Required when O(keep_old_count) is above 0; O(keep_old_as)
        must match it.
    type: str
    version_added: 0.1.0
  drop_leftover:
    description:
      - Drop O(target_db) first if it exists, as a copy an earlier restore of the same backup left (for example one
        an emergency rollback restored beside the live database and did not swap). Never use it with a name another
        database may have.
    type: bool
    default: false
    version_added: 0.1.0
  remove_leftovers:
    description:
      - With O(drop_after) or O(scratch) (a scratch restore that proves a backup), first drop the scratch databases
        that earlier verification restores of the same database left behind because their run was killed before it
        could drop them - databases named as O(target_db) up to its last C(_verify_), followed by another run's id,
        which this module marked (C(COMMENT ON DATABASE)) as a verification restore of the database the backup was
        taken of.
        O(target_db) itself and databases without that mark are never dropped. Returns them in RV(leftovers_removed).
      - This is safe only because one run at a time works on a database (the run lock of the playbooks); a
        verification restore of another run of the same database that is still under way would be dropped. Switch
        it off when runs of one database can overlap.
    type: bool
    default: true
    version_added: 0.1.0
  guard_only:
    description:
      - Change nothing; compare the live database O(target_db) with the backup and return in RV(discards) what a swap
        would throw away - every table the run did not change (O(changes)) that differs from the backup's figures,
        every table created since; for the tables the run changed, what O(baseline) says was written before the
        migration started and what differs from O(after), the figures after the migration.
      - Run it with the application's writes stopped (maintenance mode), so the answer still holds at the swap.
    type: bool
    default: false
    version_added: 0.1.0
  changes:
    description: What the run's migration files do to each table (M(tmi.migration.pg_migrate)'s C(analysis.tables)).
    type: dict
    default: {}
    version_added: 0.1.0
  baseline:
    description: The figures of the data when the run's migration started (the validate role's baseline).
    type: dict
    default: {}
    version_added: 0.1.0
  after:
    description:
      - The figures the post-migration check took (the validate role's C(figures)). A table the run changed must
        still have them for the swap to lose nothing; one the run changed with no figures after it cannot be
        vouched for and counts as a discard.
    type: dict
    default: {}
    version_added: 0.1.0
  writes_stopped:
    description:
      - The application has not written since O(baseline) was taken (the run's maintenance window never ended), so
        every difference between the live database and O(baseline) is the run's own doing and is not measured; only
        O(baseline) is compared with the backup, table by table, and the live database is not read.
    type: bool
    default: false
    version_added: 0.1.0
  ignore:
    description:
      - Tables (C(schema.table)) left out of O(guard_only)'s comparison besides the bookkeeping tables (O(state_table),
        O(history_table), O(run_lock_table)), which are always left out.
    type: list
    elements: str
    default: []
    version_added: 0.1.0
  state_table:
    description:
      - golang-migrate's state table (C(schema.table), or a table of C(public)), always left out of O(guard_only)'s
        comparison - every migration run writes it.
    type: str
    default: schema_migrations
    version_added: 0.1.0
  history_table:
    description:
      - The history table of M(tmi.migration.pg_migrate) (C(schema.table), or a table of C(public)), always left out of
        O(guard_only)'s comparison. Empty for none.
    type: str
    default: tmi_migration_history
    version_added: 0.1.0
  run_lock_table:
    description:
      - The run lock table of M(tmi.migration.pg_run_lock) (C(schema.table), or a table of C(public)), always left out
        of O(guard_only)'s comparison. Empty for none.
    type: str
    default: tmi_migration_lock
    version_added: 0.1.0
attributes:
  check_mode:
    support: full
    description: Checks the manifest checksums, the tools and the names; restores nothing.
notes:
  - O(login_db) names the database to connect to for C(CREATE DATABASE) and the swap, for example C(postgres).
extends_documentation_fragment:
  - community.postgresql.postgres
  - tmi.migration.postgres
  - tmi.migration.progress
author:
  - tmi.migration maintainers (@tmi-migration)
"""

EXAMPLES = r"""
- name: Prove a backup by restoring it into a scratch database
  tmi.migration.pg_restore_backup:
    backup: /var/backups/tmi-migration/tmi/20261124T010000Z-1
    target_db: tmi_verify_20261124t010000z_1
    drop_after: true
    login_db: postgres

- name: Emergency restore beside the live database, then swap
  tmi.migration.pg_restore_backup:
    backup: /var/backups/tmi-migration/tmi/20261124T010000Z-1
    target_db: tmi_restore_20261124t010000z_1
    replace: tmi
    keep_old_as: tmi_before_restore_20261124t010000z_1
    login_db: postgres
"""

RETURN = r"""
target_db:
  description: The database restored into (after a swap, its name is O(replace)).
  returned: always
  type: str
verified:
  description: Whether every table's figures equal the manifest's.
  returned: always
  type: bool
differences:
  description: Tables whose figures differ from the manifest.
  returned: when verification ran
  type: list
  elements: dict
old_db:
  description: The name the replaced database now has (absent if O(drop_old)).
  returned: when O(replace) was done
  type: str
dropped_old:
  description: Databases earlier swaps of O(replace) kept that O(keep_old_count) dropped, oldest last.
  returned: when O(replace) was done
  type: list
  elements: str
kept_old:
  description: Databases swaps of O(replace) kept that are still there, newest first (O(keep_old_as) first).
  returned: when O(replace) was done with O(keep_old_count) above 0
  type: list
  elements: str
unattributed_old:
  description:
    - Databases whose name matches O(keep_old_pattern) but whose comment does not say a swap of O(replace) kept them
      (kept by an older version of this module, or by hand); never dropped.
  returned: when O(replace) was done with O(keep_old_count) above 0
  type: list
  elements: str
discards:
  description:
    - With O(guard_only), per table what a swap would throw away - C(table), C(backup_rows), C(live_rows) and
      C(message). Empty when the swap loses nothing the application wrote.
  returned: with O(guard_only)
  type: list
  elements: dict
  sample: [{"table": "public.documents", "backup_rows": 6059, "live_rows": 6079,
            "message": "public.documents: 6059 rows in the backup, 6079 now: 20 rows written after the backup would
                        be lost"}]
leftovers_removed:
  description:
    - Scratch databases of earlier, killed verification restores of the same database that were dropped first (see
      O(remove_leftovers)); in check mode, those that would be.
  returned: with O(drop_after) or O(scratch)
  type: list
  elements: str
  sample: [tmi_verify_20261124t010000z_1]
  version_added: 0.1.0
scratch_db:
  description: The verified scratch copy kept for a rehearsal (O(scratch)); M(tmi.migration.pg_rehearse) drops it.
  returned: with O(scratch) (which needs O(verify)), once the copy is verified
  type: str
  sample: tmi_verify_20261124t010000z_1
  version_added: 0.1.0
duration:
  description: Seconds spent restoring and verifying.
  returned: when a restore ran
  type: float
"""

import time
import traceback

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_native
from ansible_collections.tmi.migration.plugins.module_utils import bookkeeping, pgtools, progress, snapshot
from ansible_collections.tmi.migration.plugins.module_utils.postgres import argument_spec, connector
from ansible_collections.tmi.migration.plugins.module_utils.restore import (
    Restorer,
    RestoreError,
    load_manifest,
    options_problem,
)

try:
    import psycopg2
except ImportError:  # connect() reports it
    psycopg2 = None

APPLICATION_NAME = "tmi.migration.pg_restore_backup"


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(
            backup=dict(type="path", required=True),
            target_db=dict(type="str", required=True),
            pg_bin_dir=dict(type="path", default=""),
            jobs=dict(type="int", default=2),
            verify=dict(type="bool", default=True),
            verify_only=dict(type="bool", default=False),
            drop_after=dict(type="bool", default=False),
            scratch=dict(type="bool", default=False),
            drop_scratch=dict(type="bool", default=False),
            replace=dict(type="str"),
            keep_old_as=dict(type="str"),
            drop_old=dict(type="bool", default=False),
            keep_old_count=dict(type="int", default=0),
            keep_old_pattern=dict(type="str"),
            drop_leftover=dict(type="bool", default=False),
            remove_leftovers=dict(type="bool", default=True),
            guard_only=dict(type="bool", default=False),
            changes=dict(type="dict", default={}),
            baseline=dict(type="dict", default={}),
            writes_stopped=dict(type="bool", default=False),
            after=dict(type="dict", default={}),
            ignore=dict(type="list", elements="str", default=[]),
            state_table=dict(type="str", default=bookkeeping.STATE_TABLE),
            history_table=dict(type="str", default=bookkeeping.HISTORY_TABLE),
            run_lock_table=dict(type="str", default=bookkeeping.RUN_LOCK_TABLE),
            **progress.OPTIONS
        ),
        required_by=dict(replace="keep_old_as"),
        mutually_exclusive=[("replace", "drop_after"), ("verify_only", "replace"), ("verify_only", "drop_after"),
                            ("guard_only", "verify_only"), ("guard_only", "drop_after"), ("guard_only", "replace"),
                            ("scratch", "replace"), ("scratch", "verify_only"), ("scratch", "guard_only"),
                            ("drop_scratch", "scratch"), ("drop_scratch", "drop_after"), ("drop_scratch", "replace"),
                            ("drop_scratch", "verify_only"), ("drop_scratch", "guard_only")],
        supports_check_mode=True,
    )
    params = module.params
    target, live, old = params["target_db"], params["replace"], params["keep_old_as"]
    problem = options_problem(params)
    if problem:
        module.fail_json(msg=problem + " Nothing was changed.")
    report = progress.Progress.of_module(module)
    try:
        with report.step("sha256 check of the backup's files"):
            manifest, dump = load_manifest(params["backup"])
    except RestoreError as error:
        module.fail_json(msg=to_native(error))
    result = dict(changed=False, target_db=target, verified=False, backup=params["backup"])
    restorer = Restorer(connector(module, APPLICATION_NAME), params, module.warn)
    restorer.progress = report

    def scans(what, database):
        """A step whose work is the restorer's parallel scans of ``database``."""
        return report.step("%s %s" % (what, database), dbname=database, application_name=APPLICATION_NAME)

    try:
        if params["drop_scratch"]:
            if restorer.is_scratch_of(target, manifest["database"]):
                result["changed"] = True
                if not module.check_mode:
                    restorer.drop(target)
            module.exit_json(**result)
        if params["scratch"] and not params["verify"]:
            module.fail_json(msg="scratch keeps a verified copy for a rehearsal: it needs verify. Nothing was "
                                 "changed.", **result)
        if params["guard_only"]:
            if not restorer.exists(target):
                module.fail_json(msg="The live database %s does not exist. Nothing was changed." % target, **result)
            with scans("measuring what a swap would discard in", target):
                result["discards"] = restorer.guard(target, manifest, params["changes"], params["baseline"],
                                                    params["after"], params["writes_stopped"])
            module.exit_json(**result)
        if params["verify_only"]:
            if not restorer.exists(target):
                module.fail_json(msg="Database %s does not exist; nothing to verify." % target, **result)
            with scans("verify", target):
                differences = restorer.verify(target, manifest)
            result.update(differences=differences, verified=not differences)
            if differences:
                module.fail_json(msg="Database %s differs from backup %s: %s" % (
                    target, params["backup"], snapshot.describe(differences)), **result)
            module.exit_json(**result)

        pg_restore = pgtools.find_binary(module, params["pg_bin_dir"], "pg_restore")
        pgtools.check_client_version(module, pg_restore, restorer.execute("SHOW server_version_num")[0][0])
        leftover = restorer.exists(target)
        if leftover and not params["drop_leftover"]:
            module.fail_json(msg="Database %s already exists; the restore needs a new database. Drop it or choose "
                                 "another name. Nothing was changed." % target, **result)
        if live and not restorer.exists(live):
            module.fail_json(msg="The database to replace, %s, does not exist. Nothing was changed." % live, **result)
        if old and restorer.exists(old):
            module.fail_json(msg="Database %s (keep_old_as) already exists; choose another name. Nothing was changed."
                                 % old, **result)
        scratch = params["drop_after"] or params["scratch"]
        if scratch:
            result["leftovers_removed"] = (restorer.scratch_leftovers(target, manifest["database"])
                                           if params["remove_leftovers"] else [])
        result["changed"] = True
        if module.check_mode:
            module.exit_json(**result)

        started = time.monotonic()
        for name in result.get("leftovers_removed", []):
            restorer.drop(name)
            module.warn("Dropped database %s, the scratch database of an earlier verification restore of %s that its "
                        "run left behind (it was killed before it could drop it)." % (name, manifest["database"]))
        if leftover:
            restorer.drop(target)
        restorer.create(target, manifest, scratch=scratch)
        try:
            # pg_restore's sessions are watched: each table's COPY against the rows the backup's figures give it.
            totals = dict((name, figures["rows"]) for name, figures in manifest["figures"].items())
            with pgtools.PasswordFile(module) as env, report.step(
                    "restore into %s" % target, dbname=target, application_name=APPLICATION_NAME, totals=totals):
                error = pgtools.run([pg_restore, "--exit-on-error", "--jobs=%d" % params["jobs"],
                                     "--dbname", pgtools.conninfo(module, target, APPLICATION_NAME), dump], env)
            if error:
                raise RuntimeError("pg_restore failed: %s" % error)
            if params["verify"]:
                with scans("verify", target):
                    differences = restorer.verify(target, manifest)
                result["differences"] = differences
                if differences:
                    raise RuntimeError("the restored data differs from the backup's figures: %s"
                                       % snapshot.describe(differences))
                result["verified"] = True
        except Exception as error:  # noqa: BLE001 - whatever failed, the new database goes and nothing else changes
            restorer.drop(target)
            result["changed"] = False
            module.fail_json(msg="Restore of %s into %s failed and %s was dropped again; no other database was "
                                 "touched: %s" % (params["backup"], target, target, to_native(error)), **result)
        if params["drop_after"]:
            restorer.drop(target)
        elif scratch:
            result["scratch_db"] = target
        if live:
            restorer.swap(live, target, old)
            result.update(target_db=live, old_db=old, dropped_old=[])
            if params["drop_old"]:
                restorer.drop(old)
                result.pop("old_db")
            if params["keep_old_count"] > 0:
                restorer.prune_old(live, old, params["keep_old_pattern"], params["keep_old_count"], result)
        result["duration"] = round(time.monotonic() - started, 3)
        module.exit_json(**result)
    except psycopg2.Error as error:
        module.fail_json(msg="PostgreSQL error during the restore: %s" % to_native(error).strip(),
                         exception=traceback.format_exc(), **result)
    finally:
        restorer.admin.close()


if __name__ == "__main__":
    main()
