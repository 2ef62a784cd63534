#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, tmi.migration maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: run_record
short_description: Find the run record a rollback works from, and whether a rollback of that run already succeeded
version_added: 0.1.0
description:
  - Reads the run records migrate.yml writes (C(<run_dir>/<run id>/run.json)) newest first, by modification time, and
    stops at the first record of O(host) that took a backup (C(backup.path)); with O(run_id), reads that run's record
    only. Nightly runs with nothing to migrate write records without a backup - however many there are, only the
    records up to the first match are read.
  - Reads C(rollback.json) beside the chosen record and returns in RV(rolled_back) the rollback of the run that
    succeeded last - the one C(rollback.json) records when it started after the run record was last written (a run
    migrated again under the same run id is not rolled back yet), otherwise migrate.yml's automatic rollback kept in
    the run record itself.
  - Changes nothing. The code is module_utils/record.py's C(find), shared with the playbooks' run record filters.
options:
  run_dir:
    description: Directory of the run records (C(tmi_run_dir)).
    type: path
    required: true
    version_added: 0.1.0
  run_id:
    description: Run whose record to read; V("") reads the newest record of O(host) with a backup.
    type: str
    default: ""
    version_added: 0.1.0
  host:
    description: Inventory host whose record it must be (C(host) in the record).
    type: str
    required: true
    version_added: 0.1.0
attributes:
  check_mode:
    support: full
    description: Reads the records as in a normal run; it never changes anything.
author:
  - tmi.migration maintainers (@tmi-migration)
"""

EXAMPLES = r"""
- name: Find the newest record of this host that took a backup
  tmi.migration.run_record:
    run_dir: /var/lib/tmi-migration/runs
    host: "{{ inventory_hostname }}"
  register: found

- name: Read the record of one run
  tmi.migration.run_record:
    run_dir: /var/lib/tmi-migration/runs
    run_id: 20261124T010000Z-123456
    host: "{{ inventory_hostname }}"
"""

RETURN = r"""
found:
  description: Whether a record of O(host) with a backup was found.
  returned: always
  type: bool
record:
  description: The run record (C(run.json)); empty when none was found.
  returned: always
  type: dict
path:
  description: Path of the run record found.
  returned: when found
  type: str
read:
  description: How many run records were read to find it.
  returned: always
  type: int
rolled_back:
  description:
    - The rollback of this run that succeeded last, empty when there is none (or when the latest attempt after the
      run record was written failed) - C(by) (V(rollback.yml) or V(migrate.yml)), C(record) (the file that records
      it), C(mode), C(requested_mode), C(started), C(finished) and C(version_after).
  returned: always
  type: dict
  sample: {"by": "rollback.yml", "record": "/runs/20261124T010000Z-1/rollback.json", "mode": "emergency",
           "requested_mode": "emergency", "started": "2026-11-24T01:40:00+00:00",
           "finished": "2026-11-24T01:41:02+00:00", "version_after": "15"}
"""

import re

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.tmi.migration.plugins.module_utils.record import find

RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def main():
    module = AnsibleModule(
        argument_spec=dict(
            run_dir=dict(type="path", required=True),
            run_id=dict(type="str", default=""),
            host=dict(type="str", required=True),
        ),
        supports_check_mode=True,
    )
    run_dir, run_id, host = module.params["run_dir"], module.params["run_id"], module.params["host"]
    if run_id and not RUN_ID.match(run_id):
        module.fail_json(msg="run_id %r is not a run id (letters, digits, '.', '_' and '-'). Nothing was changed."
                             % run_id)
    module.exit_json(changed=False, **find(run_dir, host, run_id, warn=module.warn))


if __name__ == "__main__":
    main()
