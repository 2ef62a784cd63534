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

Every connection has a time limit: libpq waits for ever on a server that accepts the TCP
connection and never answers (a hung server, a proxy with nothing behind it, the wrong port),
so ``connect_timeout`` is set to ``CONNECT_TIMEOUT`` seconds unless the user's
``connect_params`` sets it. ``connection_params`` is the one place that builds the parameters,
for psycopg2 (``connect``) and for the client programs (``pgtools.conninfo``) alike.
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


CONNECT_TIMEOUT = 10
# pg_dump and pg_restore read the password from a pgpass file, one line per entry.
_LINE_BREAKS = ("\n", "\r")


def connection_params(module, dbname=None, application_name=None):
    """libpq keywords from the module's connection options, with a connect_timeout, or fail before connecting.

    ``dbname`` replaces ``login_db``. A password holding a line break is refused here: psycopg2 would
    log in with it but pg_dump and pg_restore, which read it from a pgpass file (one password per
    line), would not, so the backup would fail with a misleading "password authentication failed".
    """
    password = module.params.get("login_password") or ""
    if any(char in password for char in _LINE_BREAKS):
        module.fail_json(msg="login_password (tmi_db_connection.login_password) contains a line break. pg_dump and "
                             "pg_restore read the password from a pgpass file, which holds one password per line, so "
                             "they would log in with only part of it. Remove the line break (a password read from a "
                             "file often ends with one: trim it), or give the database user a password without one. "
                             "Nothing was changed.")
    params = get_conn_params(module, module.params, warn_db_default=False)
    if dbname:
        params["dbname"] = dbname
    if application_name:
        params.setdefault("application_name", application_name)
    params.setdefault("connect_timeout", CONNECT_TIMEOUT)
    return params


def endpoint(params):
    """host:port of libpq parameters, for messages."""
    return "%s:%s" % (params.get("host") or "local socket", params.get("port") or 5432)


def ensure_psycopg2(module):
    if psycopg2 is None:
        module.fail_json(msg=missing_required_lib("psycopg2"), exception=PSYCOPG2_IMPORT_ERROR)


def connect(module, application_name, autocommit=False, dbname=None):
    """Open a psycopg2 connection from the module's connection options, or fail with a clear message.

    ``dbname`` connects to another database than ``login_db`` with the same credentials.
    """
    ensure_psycopg2(module)
    params = connection_params(module, dbname, application_name)
    try:
        conn = psycopg2.connect(**params)
    except psycopg2.Error as error:
        reason = to_native(error).strip()
        if "timeout expired" in reason:
            module.fail_json(msg="PostgreSQL at %s did not answer within %s s (connect_timeout): %s. Check that "
                                 "login_host and login_port (tmi_db_connection) point at the PostgreSQL server and "
                                 "not at another service or a proxy with nothing behind it, and that no firewall "
                                 "drops the traffic; if the server is only slow to answer, raise connect_timeout "
                                 "in connect_params."
                                 % (endpoint(params), params["connect_timeout"], reason))
        module.fail_json(msg="Unable to connect to PostgreSQL at %s as %s: %s Check login_host, login_port, "
                             "login_user and login_password (or ssl options) and that the server accepts "
                             "connections from this host." % (endpoint(params), params.get("user", ""), reason))
    conn.autocommit = autocommit
    return conn


def connector(module, application_name):
    """``open(dbname=None, autocommit=False)``: a new connection with the module's options, as ``connect`` opens it.

    The classes of module_utils take such a function instead of the module, so tests hand them any
    function that returns a psycopg2 connection.
    """
    def open_connection(dbname=None, autocommit=False):
        return connect(module, application_name, autocommit=autocommit, dbname=dbname)
    return open_connection
