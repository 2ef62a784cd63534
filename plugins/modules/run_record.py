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
  - Changes nothing.
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

import json
import os
import re
from datetime import datetime

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_native

RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def load(path):
    """The JSON document at ``path``, or None when it is missing or unreadable (with the reason)."""
    try:
        with open(path) as handle:
            document = json.load(handle)
    except (IOError, OSError, ValueError) as error:
        return None, to_native(error)
    if not isinstance(document, dict):
        return None, "not a JSON object"
    return document, None


def true(value):
    return value is True or to_native(value).strip().lower() == "true"


def moment(value):
    """An ISO 8601 time as the records write it, or None."""
    try:
        return datetime.fromisoformat(to_native(value))
    except (TypeError, ValueError):
        return None


def not_before(first, second):
    """Whether the time ``first`` is not before ``second`` (False when either is unknown)."""
    if first is None or second is None:
        return False
    try:
        return first >= second
    except TypeError:  # one with a time zone, one without: the records write UTC
        return first.replace(tzinfo=None) >= second.replace(tzinfo=None)


def matches(record, host):
    backup = record.get("backup")
    return record.get("host") == host and isinstance(backup, dict) and bool(backup.get("path"))


def candidates(run_dir):
    """The run records under run_dir, newest first (modification time, then name)."""
    found = []
    try:
        entries = os.listdir(run_dir)
    except OSError:
        return found
    for name in entries:
        path = os.path.join(run_dir, name, "run.json")
        try:
            found.append((os.stat(path).st_mtime, name, path))
        except OSError:
            continue
    return [path for _mtime, _name, path in sorted(found, reverse=True)]


def rolled_back(record, path, rollback, rollback_path):
    """The rollback of the run that succeeded last, or {}."""
    finished = moment(record.get("finished"))
    started = moment((rollback or {}).get("started"))
    if rollback and not_before(started, finished):
        # rollback.yml ran after the run record was last written: its outcome is the latest word.
        result = rollback.get("rollback") or {}
        if not isinstance(result, dict) or not true(result.get("succeeded")):
            return {}
        return dict(by="rollback.yml", record=rollback_path, mode=result.get("mode", ""),
                    requested_mode=result.get("requested_mode", ""), started=rollback.get("started", ""),
                    finished=rollback.get("finished", ""), version_after=to_native(result.get("version_after", "")))
    result = record.get("rollback") or {}
    if isinstance(result, dict) and true(result.get("succeeded")):
        return dict(by="migrate.yml", record=path, mode=result.get("mode", ""),
                    requested_mode=result.get("requested_mode", ""), started=record.get("started", ""),
                    finished=record.get("finished", ""), version_after=to_native(result.get("version_after", "")))
    return {}


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
    paths = [os.path.join(run_dir, run_id, "run.json")] if run_id else candidates(run_dir)
    result = dict(changed=False, found=False, record={}, read=0, rolled_back={})
    for path in paths:
        if not os.path.isfile(path):
            continue
        record, error = load(path)
        result["read"] += 1
        if record is None:
            module.warn("Run record %s is unreadable (%s); it was skipped." % (path, error))
            continue
        if not matches(record, host):
            continue
        rollback_path = os.path.join(os.path.dirname(path), "rollback.json")
        rollback = None
        if os.path.isfile(rollback_path):
            rollback, error = load(rollback_path)
            if rollback is None:
                module.warn("Rollback record %s is unreadable (%s); it was not taken into account." % (
                    rollback_path, error))
        result.update(found=True, record=record, path=path,
                      rolled_back=rolled_back(record, path, rollback, rollback_path))
        break
    module.exit_json(**result)


if __name__ == "__main__":
    main()
