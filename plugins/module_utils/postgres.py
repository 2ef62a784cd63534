# -*- coding: utf-8 -*-
# Copyright: (c) 2026, tmi.migration maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one PostgreSQL connection helper every tmi.migration module uses.

Connection options and their translation to libpq keywords come from
community.postgresql (``postgres_common_argument_spec``, ``get_conn_params``), so the
options are named, defaulted and documented exactly as there. What this adds, and why
it is written here: community.postgresql connects with psycopg 3 when it is installed
and psycopg2 otherwise; the modules of this collection rely on psycopg2's semantics
(``psycopg2.sql`` composition, tuple rows, ``pgcode`` on errors), so they always connect
with psycopg2, tag the session with an ``application_name`` that names the module (so
an operator sees who holds a lock), and never put the password in an error message.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import traceback

from ansible.module_utils.basic import missing_required_lib
from ansible.module_utils.common.text.converters import to_native
from ansible_collections.community.postgresql.plugins.module_utils.postgres import (
    get_conn_params,
    postgres_common_argument_spec,
)

PSYCOPG2_IMPORT_ERROR = None
try:
    import psycopg2
    import psycopg2.extensions
    import psycopg2.sql
except ImportError:
    psycopg2 = None
    PSYCOPG2_IMPORT_ERROR = traceback.format_exc()


def argument_spec(**extra):
    """Connection options (community.postgresql's, plus ``login_db``) merged with a module's own."""
    spec = postgres_common_argument_spec()
    spec["login_db"] = dict(type="str", aliases=["db", "database"])
    spec.update(extra)
    return spec


def ensure_psycopg2(module):
    if psycopg2 is None:
        module.fail_json(msg=missing_required_lib("psycopg2"), exception=PSYCOPG2_IMPORT_ERROR)


def connect(module, application_name, autocommit=False, dbname=None):
    """Open a psycopg2 connection from the module's connection options, or fail with a clear message.

    ``dbname`` connects to another database than ``login_db`` with the same credentials.
    """
    ensure_psycopg2(module)
    params = get_conn_params(module, module.params, warn_db_default=False)
    if dbname:
        params["dbname"] = dbname
    params.setdefault("application_name", application_name)
    try:
        conn = psycopg2.connect(**params)
    except psycopg2.Error as error:
        module.fail_json(msg="Unable to connect to PostgreSQL at %s:%s as %s: %s Check login_host, login_port, "
                             "login_user and login_password (or ssl options) and that the server accepts "
                             "connections from this host." % (params.get("host", "local socket"),
                                                              params.get("port", 5432), params.get("user", ""),
                                                              to_native(error).strip()))
    conn.autocommit = autocommit
    return conn
