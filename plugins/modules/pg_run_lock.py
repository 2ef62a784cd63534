#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, tmi.migration maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: pg_run_lock
short_description: Hold one migration run per database, from before the backup to after the report
version_added: 0.1.0
description:
  - Takes, reads and releases the run lock of a database - one row in a table of the collection
    (C(tmi_migration_lock)) naming the run that holds it, its controller host, process and user, and since when.
  - A migration run spans many module calls (backup, migration, checks, restart, report) and may outlive any one
    database session, so the advisory lock that M(tmi.migration.pg_migrate) takes like golang-migrate, which covers
    only the files being applied, cannot keep a second run out of the backup, the checks or an automatic rollback.
    A row survives the runner being killed; the playbooks decide from the holder's process whether it is stale
    (lookup P(tmi.migration.run_owner#lookup)) and take it over only then, or when the operator names the holder
    in O(takeover).
  - The table is created on first use, under an advisory lock so that two first runs cannot both create it.
    Its rows are the collection's bookkeeping, like the history table, and the data checks leave the table out.
  - Written for this collection; community.postgresql has no lock of this kind. The lock is this collection's own
    SQL (C(module_utils/runlock.py)).
attributes:
  check_mode:
    support: full
    details: Reads the holder and says whether the lock would be taken; writes nothing.
options:
  run_id:
    description: The run taking or releasing the lock.
    type: str
    required: true
  state:
    description:
      - V(present) takes the lock (or keeps it, when this run holds it already) and fails, changing nothing,
        when another run holds it and is not named in O(takeover).
      - V(absent) releases it when this run (or a run named in O(takeover)) holds it, and does nothing otherwise.
      - V(query) only reads the holder.
    type: str
    choices: [present, absent, query]
    default: present
  owner:
    description: Who takes the lock, recorded for whoever finds it held (host, pid, start, user, playbook).
    type: dict
    default: {}
  takeover:
    description:
      - Run ids whose lock this run may take over (a dead run found stale, or one the operator named); with
        O(state=absent), run ids whose lock is cleared too (the row a restored backup brought back).
    type: list
    elements: str
    default: []
  lock_table:
    description: The lock table.
    type: str
    default: tmi_migration_lock
  lock_schema:
    description: Schema of the lock table; the connection's current schema when not set.
    type: str
extends_documentation_fragment:
  - community.postgresql.postgres
  - tmi.migration.postgres
author:
  - tmi.migration maintainers (@tmi-migration)
"""

EXAMPLES = r"""
- name: Take the run lock of the TMI database
  tmi.migration.pg_run_lock:
    run_id: "{{ tmi_run_id }}"
    owner: "{{ lookup('tmi.migration.run_owner') | combine({'playbook': 'migrate.yml'}) }}"
    login_db: tmi

- name: Release it at the end of the run
  tmi.migration.pg_run_lock:
    run_id: "{{ tmi_run_id }}"
    state: absent
    login_db: tmi
"""

RETURN = r"""
acquired:
  description: Whether this run holds the lock after the call (in check mode, whether it would).
  returned: always
  type: bool
holder:
  description: The run holding the lock before the call (empty when free) - run_id, host, pid, started, user,
    playbook and since (UTC, ISO 8601).
  returned: always
  type: dict
  sample: {"run_id": "20261124T010000Z-1", "host": "awx-1", "pid": 4242, "user": "awx", "playbook": "migrate.yml",
           "since": "2026-11-24T01:00:00+00:00"}
taken_over:
  description: The run id whose lock this call took over, if any.
  returned: always
  type: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_native
from ansible_collections.tmi.migration.plugins.module_utils import bookkeeping
from ansible_collections.tmi.migration.plugins.module_utils.postgres import argument_spec, connect
from ansible_collections.tmi.migration.plugins.module_utils.runlock import Held, RunLock, describe

try:
    import psycopg2
except ImportError:  # connect() reports it through missing_required_lib
    psycopg2 = None

APPLICATION_NAME = "tmi.migration.pg_run_lock"


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(
            run_id=dict(type="str", required=True),
            state=dict(type="str", choices=["present", "absent", "query"], default="present"),
            owner=dict(type="dict", default={}),
            takeover=dict(type="list", elements="str", default=[]),
            lock_table=dict(type="str", default=bookkeeping.RUN_LOCK_TABLE),
            lock_schema=dict(type="str"),
        ),
        supports_check_mode=True,
    )
    params = module.params
    run_id = params["run_id"]
    if not run_id.strip():
        module.fail_json(msg="run_id is empty: name the run that takes the lock.")
    conn = connect(module, APPLICATION_NAME)
    lock = RunLock(conn, params["lock_schema"], params["lock_table"])
    try:
        result = lock.handle(params["state"], run_id, params["owner"], params["takeover"], module.check_mode)
        conn.commit()
    except Held as held:
        conn.rollback()
        holder = held.holder
        module.fail_json(
            msg="Another migration run holds the run lock of database %s: %s. This run changed nothing. Wait "
                "for that run to finish. If it is dead (its runner was killed) and ran elsewhere, make sure it "
                "no longer runs, then roll it back (playbooks/rollback.yml -e tmi_rollback_of=%s "
                "-e tmi_break_lock=%s) or start this run again with -e tmi_break_lock=%s."
                % (conn.info.dbname, describe(holder), holder["run_id"], holder["run_id"], holder["run_id"]),
            **held.result)
    except psycopg2.Error as error:
        conn.rollback()
        module.fail_json(msg="PostgreSQL error while handling the run lock %s: %s" % (lock.name, to_native(error)),
                         **dict(dict(changed=False, acquired=False, holder={}, taken_over=""), **lock.result))
    finally:
        conn.close()
    if result["taken_over"]:
        module.warn("Took over the run lock of %s." % describe(result["holder"]))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
