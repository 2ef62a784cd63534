# -*- coding: utf-8 -*-
# Copyright: (c) 2026, tmi.migration maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The run lock of a database: one row naming the migration run that holds it (module pg_run_lock).

Written here because community.postgresql has no lock that outlives a session: a run spans many
module calls and may be killed, so the lock is a row (run id, owner, since) in the collection's
lock table, changed only under an advisory transaction lock.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json

try:
    from psycopg2 import sql
except ImportError:  # the module reports it when it connects
    sql = None

# Serialises the lock table's creation and every change of its row (an arbitrary constant: "tmi-run").
ADVISORY_KEY = 0x746D6972756E
OWNER_KEYS = ("host", "pid", "started", "user", "playbook")


def describe(holder):
    """One phrase naming the run that holds the lock, for messages."""
    return "run %s (host %s, pid %s, user %s, playbook %s) since %s" % (
        holder.get("run_id"), holder.get("host") or "?", holder.get("pid") or "?", holder.get("user") or "?",
        holder.get("playbook") or "?", holder.get("since"))


class RunLock(object):
    """The lock row of one database."""

    def __init__(self, conn, schema, table):
        self.conn = conn
        self.result = {}
        with conn.cursor() as cur:
            if not schema:
                cur.execute("SELECT current_schema()")
                schema = cur.fetchone()[0]
        self.table = sql.Identifier(schema, table)
        self.name = "%s.%s" % (schema, table)

    def exists(self, cur):
        cur.execute("SELECT to_regclass(%s) IS NOT NULL", (self.name,))
        return cur.fetchone()[0]

    def holder(self, cur, for_update=False):
        if not self.exists(cur):
            return {}
        cur.execute(sql.SQL("SELECT run_id, owner, to_char(since AT TIME ZONE 'UTC', "
                            "'YYYY-MM-DD\"T\"HH24:MI:SS\"+00:00\"') FROM {} {}").format(
            self.table, sql.SQL("FOR UPDATE" if for_update else "")))
        row = cur.fetchone()
        if not row:
            return {}
        owner = row[1] if isinstance(row[1], dict) else json.loads(row[1] or "{}")
        return dict(dict((key, owner.get(key)) for key in OWNER_KEYS), run_id=row[0], since=row[2])

    def take(self, cur, run_id, owner, replace):
        cur.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} (lock_key boolean PRIMARY KEY DEFAULT true "
                            "CHECK (lock_key), run_id text NOT NULL, owner jsonb NOT NULL, "
                            "since timestamptz NOT NULL DEFAULT now())").format(self.table))
        if replace:
            cur.execute(sql.SQL("DELETE FROM {}").format(self.table))
        cur.execute(sql.SQL("INSERT INTO {} (run_id, owner) VALUES (%s, %s) ON CONFLICT (lock_key) DO NOTHING")
                    .format(self.table), (run_id, json.dumps(owner)))

    def release(self, cur, run_ids):
        cur.execute(sql.SQL("DELETE FROM {} WHERE run_id = ANY(%s)").format(self.table), (list(run_ids),))

    def handle(self, state, run_id, owner, takeover=(), check_mode=False):
        """Take (V(present)), release (V(absent)) or read (V(query)) the lock in one transaction of ``conn``.

        Returns the module's result (``changed``, ``acquired``, ``holder``, ``taken_over``; also kept in
        ``self.result`` for a failure's report); raises Held when another run holds the lock and is not named
        in ``takeover``. The caller commits or rolls back.
        """
        owner = dict((key, owner.get(key)) for key in OWNER_KEYS)
        result = self.result = dict(changed=False, acquired=False, holder={}, taken_over="")
        with self.conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (ADVISORY_KEY,))
            holder = self.holder(cur, for_update=True)
            result["holder"] = holder
            # The same run id from another process (a reused id, or the run restarted) is not this run.
            mine = holder.get("run_id") == run_id and all(
                holder.get(key) == owner[key] for key in ("host", "pid", "started") if owner[key] is not None)
            if state == "query":
                result["acquired"] = mine
            elif state == "absent":
                ours = [run_id, *takeover]
                result["changed"] = holder.get("run_id") in ours
                if result["changed"] and not check_mode:
                    self.release(cur, ours)
            elif holder and not mine and holder["run_id"] not in takeover:
                raise Held(holder, result)
            else:
                result.update(acquired=True, changed=not mine,
                              taken_over=holder["run_id"] if holder and not mine else "")
                if not mine and not check_mode:
                    self.take(cur, run_id, owner, replace=bool(holder))
        return result


class Held(Exception):
    """Another run holds the lock: ``holder`` (who), ``result`` (what the module returns)."""

    def __init__(self, holder, result):
        super(Held, self).__init__(describe(holder))
        self.holder = holder
        self.result = result
