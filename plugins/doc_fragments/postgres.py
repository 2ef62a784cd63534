# -*- coding: utf-8 -*-
# Copyright: (c) 2026, tmi.migration maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Connection options of every tmi.migration PostgreSQL module, documented once.

The options themselves are community.postgresql's (fragment ``community.postgresql.postgres``);
this fragment adds the database option and the requirements.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    DOCUMENTATION = r"""
options:
  login_db:
    description:
      - Name of the database to connect to.
    type: str
    aliases: [db, database]
    version_added: 0.1.0
attributes:
  diff_mode:
    description: Returns details on what has changed (or would change in check mode) in diff mode.
    support: none
requirements:
  - psycopg2 >= 2.8 on the host that runs the module
notes:
  - The modules always connect with psycopg2, also where psycopg 3 is installed.
  - Each session sets C(application_name) to the module name, so C(pg_stat_activity) shows who is connected.
  - Every connection, also those of C(pg_dump) and C(pg_restore), has a C(connect_timeout) of 10 seconds unless
    O(connect_params) sets one, so a server that accepts the connection and never answers fails the task naming the
    endpoint (C(host:port)) instead of holding the run.
  - A O(login_password) holding a line break is refused before connecting - C(pg_dump) and C(pg_restore) read the
    password from a pgpass file, one password per line.
"""
