# -*- coding: utf-8 -*-
# Copyright: (c) 2026, tmi.migration maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
name: run_owner
short_description: Who runs this playbook on the controller, and whether a recorded runner still runs
version_added: 0.1.0
description:
  - Without terms, returns the controller's host name, the process id and start time of the C(ansible-playbook)
    process, and the user - what M(tmi.migration.pg_run_lock) records about the run holding the lock.
  - With a recorded owner as the term, returns whether that runner is still alive - V(true) when it ran on another
    host (nothing here can tell), V(false) when it ran on this host and its process is gone or is another process
    that reuses the id (a different start time).
  - Written for this collection; no lookup of ansible-core or community.general tells this.
options:
  _terms:
    description: A recorded owner (a dict with host, pid and started) to test, or nothing.
    required: false
author:
  - tmi.migration maintainers (@tmi-migration)
"""

EXAMPLES = r"""
- name: Record who runs this playbook
  ansible.builtin.set_fact:
    tmi_run_owner: "{{ lookup('tmi.migration.run_owner') }}"

- name: Tell whether the run that holds the lock still runs
  ansible.builtin.debug:
    msg: "{{ lookup('tmi.migration.run_owner', holder) }}"
"""

RETURN = r"""
_raw:
  description: The owner (host, pid, started, user), or whether the given owner is alive.
  type: raw
"""

import getpass
import os
import socket

from ansible.plugins.lookup import LookupBase
from ansible_collections.tmi.migration.plugins.module_utils.processes import alive as process_alive
from ansible_collections.tmi.migration.plugins.module_utils.processes import process_start


def owner():
    # Lookups run in a worker forked from the ansible-playbook process, which lives as long as the run.
    pid = os.getppid()
    return dict(host=socket.gethostname(), pid=pid, started=process_start(pid), user=getpass.getuser())


def alive(recorded):
    if not recorded or recorded.get("host") != socket.gethostname() or not recorded.get("pid"):
        return True
    return process_alive(recorded["pid"], recorded.get("started"))


class LookupModule(LookupBase):

    def run(self, terms, variables=None, **kwargs):
        if not terms:
            return [owner()]
        return [alive(term) for term in terms]
