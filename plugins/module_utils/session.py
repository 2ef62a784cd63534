# -*- coding: utf-8 -*-
# Copyright: (c) 2026, tmi.migration maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Whether a connection keeps one database session: the probe for poolers in transaction or statement mode.

The modules of this collection rely on a connection being one server session for as long as it is
open: pg_migrate holds golang-migrate's session advisory lock across files and sets ``lock_timeout``
and ``statement_timeout`` for the session, its watchdog cancels the migrating backend by its pid, and
the rehearsal reads the locks of its own pid.
A pooler in transaction mode (PgBouncer ``pool_mode = transaction``, and others like it) hands each
transaction of a client connection to whichever server connection is free: a session advisory lock
stays behind on a server connection that another client gets next, a ``SET`` reaches only that one,
and the pid changes under the module. In statement mode a transaction of more than one statement is
refused.

A lone client's consecutive statements usually land on the same server connection (PgBouncer reuses
the connection released last first), so comparing ``pg_backend_pid()`` between two statements would
pass a transaction pool in a quiet test and not in production. The probe therefore also opens a second
connection with a transaction: through a transaction pool that transaction gets the server connection
the first connection's statement has just released, or, while it holds another one, the first
connection's next statement may have to go elsewhere. Through a direct connection or a session pool,
the two connections are two sessions, and the first one keeps its pid and its lock throughout.

The probe takes a session advisory lock with keys (``PROBE_LOCK_CLASS``, its own backend pid), which
no other session uses, and releases it. Through a transaction pool the lock may stay on the pooler's
server connection until the pooler closes that connection; it blocks nothing else.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible.module_utils.common.text.converters import to_native

try:
    import psycopg2
except ImportError:  # the module reports it when it connects
    psycopg2 = None

# The first key of the probe's advisory lock ("tmip"); the second is the backend pid of the session taking it.
PROBE_LOCK_CLASS = 0x746D6970
# How often the release is tried: through a transaction pool a statement may land on another server connection.
RELEASE_ATTEMPTS = 5

_TAKE_SQL = "SELECT pg_backend_pid(), pg_try_advisory_lock(%s, pg_backend_pid())"
_HOLDS_SQL = ("SELECT pg_backend_pid(), EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted "
              "AND classid::bigint = %s AND objid::bigint = %s AND objsubid = 2 AND pid = pg_backend_pid())")
_LEFT_SQL = ("SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND classid::bigint = %s "
             "AND objid::bigint = %s AND objsubid = 2)")
# Only in the session that took it: elsewhere pg_advisory_unlock would only warn that it holds no such lock.
_RELEASE_SQL = "SELECT CASE WHEN pg_backend_pid() = %s THEN pg_advisory_unlock(%s, %s) END"


def _first_line(error):
    return to_native(error).strip().splitlines()[0] if to_native(error).strip() else type(error).__name__


class _Probe(object):
    """One run of the probe; ``result`` is what ``probe`` returns."""

    def __init__(self, open_connection):
        self.open_connection = open_connection
        self.pid = None
        self.result = dict(session_kept=True, backend_pids=[], findings=[], leftover_lock=False)

    def find(self, finding):
        self.result["session_kept"] = False
        self.result["findings"].append(finding)

    def seen(self, pid):
        if pid not in self.result["backend_pids"]:
            self.result["backend_pids"].append(pid)

    def check_held(self, cur, when):
        cur.execute(_HOLDS_SQL, (PROBE_LOCK_CLASS, self.pid))
        pid, held = cur.fetchone()
        self.seen(pid)
        if pid != self.pid:
            self.find("%s ran in another server session (backend pid %s) than its first statement (backend pid %s)"
                      % (when, pid, self.pid))
        elif not held:
            self.find("%s ran in the same server session (backend pid %s), but the session advisory lock its first "
                      "statement took was gone (the pooler reset the session between transactions)" % (when, pid))

    def second_connection(self, cur):
        """A transaction on a second connection, and the first connection's next statement while it is open."""
        other = self.open_connection(autocommit=False)
        try:
            with other.cursor() as other_cur:
                other_cur.execute("SELECT pg_backend_pid()")
                other_pid = other_cur.fetchone()[0]
                self.seen(other_pid)
                if other_pid == self.pid:
                    self.find("a transaction on a second connection ran in the server session (backend pid %s) "
                              "that this connection's statement had just used, while this connection stayed open"
                              % other_pid)
                    return
                self.check_held(cur, "its next statement, while a second connection held a transaction,")
        except psycopg2.Error as error:
            self.find("a transaction on a second connection was refused (%s): a pooler in statement mode closes a "
                      "connection that opens a transaction" % _first_line(error))
        finally:
            try:
                if not other.closed:
                    other.rollback()
            except psycopg2.Error:
                pass  # the pooler closed it: nothing to roll back
            other.close()

    def release(self, cur):
        for _attempt in range(RELEASE_ATTEMPTS):
            cur.execute(_RELEASE_SQL, (self.pid, PROBE_LOCK_CLASS, self.pid))
            if cur.fetchone()[0] is not None:
                return
            cur.execute(_LEFT_SQL, (PROBE_LOCK_CLASS, self.pid))
            if not cur.fetchone()[0]:
                return  # gone with its server session (a pooler closed it)
        self.result["leftover_lock"] = True

    def run(self):
        conn = self.open_connection(autocommit=True)
        try:
            with conn.cursor() as cur:
                cur.execute(_TAKE_SQL, (PROBE_LOCK_CLASS,))
                self.pid, taken = cur.fetchone()
                self.seen(self.pid)
                if not taken:
                    self.find("the session advisory lock (%s, %s) could not be taken" % (PROBE_LOCK_CLASS, self.pid))
                self.check_held(cur, "its second statement")
                self.second_connection(cur)
                self.release(cur)
        except psycopg2.Error as error:
            self.find("the connection failed during the probe (%s)" % _first_line(error))
            self.result["leftover_lock"] = self.pid is not None
        finally:
            conn.close()
        return self.result


def probe(open_connection):
    """Whether connections from ``open_connection(autocommit=...)`` keep one server session across transactions.

    Returns ``session_kept`` (bool), ``findings`` (what showed that a session was not kept, as phrases),
    ``backend_pids`` (the server sessions seen) and ``leftover_lock`` (the probe's advisory lock could not be
    released: it stays on a pooler's server connection until the pooler closes it).
    """
    return _Probe(open_connection).run()


def refusal(endpoint, result):
    """The message for a connection that does not keep its session: cause, consequence, remedy."""
    return ("The connection to PostgreSQL at %s does not keep one database session: %s. This is what a connection "
            "pooler in transaction or statement pooling mode does (PgBouncer with pool_mode = transaction or "
            "statement, or another pooler sharing server connections between clients). golang-migrate's session "
            "advisory lock, which pg_migrate takes, and its session settings (lock_timeout, statement_timeout) would "
            "not hold through it: a second migration could run at the same time, and a migration could wait on a "
            "table lock without a time limit. Point login_host and login_port (tmi_db_connection) at the PostgreSQL "
            "server directly, or at a pool in session mode (PgBouncer pool_mode = session). Nothing was changed."
            % (endpoint, "; ".join(result["findings"])))


def leftover_warning(result):
    """The warning for a probe lock left on a pooler's server connection, or None."""
    if not result["leftover_lock"]:
        return None
    return ("The probe's advisory lock (%s, %s) stays on the pooler's server connection of backend pid %s until the "
            "pooler closes it (PgBouncer: server_lifetime, server_idle_timeout); no other session uses that lock."
            % (PROBE_LOCK_CLASS, result["backend_pids"][0], result["backend_pids"][0]))


def require_session(module, open_connection, endpoint):
    """Fail ``module`` with ``refusal`` unless its connections keep their session; for modules that rely on one."""
    result = probe(open_connection)
    warning = leftover_warning(result)
    if warning:
        module.warn(warning)
    if not result["session_kept"]:
        module.fail_json(msg=refusal(endpoint, result), **result)
    return result
