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


def process_start(pid):
    """The start time of a process in clock ticks since boot (Linux), None where /proc cannot tell."""
    try:
        with open("/proc/%d/stat" % int(pid)) as handle:
            # The command name (field 2) may hold spaces and parentheses: count from its closing one.
            return int(handle.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def pid_alive(pid):
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        return True
    return True


def owner():
    # Lookups run in a worker forked from the ansible-playbook process, which lives as long as the run.
    pid = os.getppid()
    return dict(host=socket.gethostname(), pid=pid, started=process_start(pid), user=getpass.getuser())


def alive(recorded):
    if not recorded or recorded.get("host") != socket.gethostname() or not recorded.get("pid"):
        return True
    if not pid_alive(recorded["pid"]):
        return False
    started = recorded.get("started")
    return started is None or process_start(recorded["pid"]) in (None, int(started))


class LookupModule(LookupBase):

    def run(self, terms, variables=None, **kwargs):
        if not terms:
            return [owner()]
        return [alive(term) for term in terms]
