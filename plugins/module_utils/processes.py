# -*- coding: utf-8 -*-
# Copyright: (c) 2026, tmi.migration maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Whether a process that left something behind (a run lock, a pgpass directory) still runs.

A process id alone is reused by the system; with its start time (Linux /proc) a reused id is
told from the process that recorded it. Written here because neither ansible-core nor psutil
(not a dependency of the collection) is at hand on every runner.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os


def process_start(pid):
    """The start time of a process in clock ticks since boot (Linux), None where /proc cannot tell."""
    try:
        with open("/proc/%d/stat" % int(pid)) as handle:
            # The command name (field 2) may hold spaces and parentheses: count from its closing one.
            return int(handle.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def alive(pid, started=None):
    """Whether process ``pid`` runs and, when ``started`` is known, is the one that started then."""
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        pass
    return started is None or process_start(pid) in (None, int(started))
