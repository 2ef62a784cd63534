# -*- coding: utf-8 -*-
# Copyright: (c) 2026, tmi.migration maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Live progress of the long-running modules, documented once."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    DOCUMENTATION = r"""
options:
  progress_interval:
    description:
      - Seconds between two progress lines while the module runs (see the notes); C(0) prints none.
      - When the task does not set it, the host variable C(tmi_progress_interval) does, else C(5).
      - The module itself uses it only to know how often to refresh O(progress_file).
    type: float
    version_added: 0.1.0
  progress_file:
    description:
      - Where the module writes its progress for the action plugin, on the host that runs it. Set by the action
        plugin of the same name (a fresh name under the connection's C(remote_tmp)); leave it unset.
    type: path
    version_added: 0.1.0
notes:
  - >-
    While the module runs, the action plugin of the same name prints a progress line every O(progress_interval)
    seconds (without C(-v), in C(ansible-playbook)'s output and in AWX's job output), for example
    C([tmi_local] backup 25 s | dump: public.threats 812,345 of ~1,000,000 rows (81%); 6 of ~11 tables begun,
    48.2 MiB written). It names the step, the table, index or migration file and how far it is, from PostgreSQL's
    progress views (C(pg_stat_progress_copy), C(pg_stat_progress_create_index), C(pg_stat_progress_cluster),
    C(pg_stat_progress_analyze)) and C(pg_stat_activity), read over a session of its own (C(application_name)
    C(tmi.migration progress)) once a step has lasted half an interval, and from the module's own counts.
  - >-
    The progress file holds names and figures only (never a password or a statement's text), is C(0600), and is
    removed when the module ends. Check mode and C(async) tasks print no progress; failures, results and check mode
    are the module's own, unchanged.
"""
