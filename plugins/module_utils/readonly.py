# -*- coding: utf-8 -*-
# Copyright: (c) 2026, tmi.migration maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Read-only work spread over several connections that all see one snapshot.

The check modules run many independent scans (one per table or relation). One
connection opens a REPEATABLE READ, READ ONLY transaction and exports its snapshot;
the other connections import it (``SET TRANSACTION SNAPSHOT``), so every scan sees
exactly the same data, and PostgreSQL itself refuses any write in these transactions.
Written here because psycopg2 has no pool that shares a snapshot.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import queue
import threading

from ansible_collections.tmi.migration.plugins.module_utils.postgres import connect


class SnapshotPool(object):
    """``run(jobs)`` calls each ``job(cursor)`` on one of ``size`` connections sharing a snapshot."""

    def __init__(self, module, application_name, size):
        self.connections = [connect(module, application_name)]
        with self.connections[0].cursor() as cur:
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            cur.execute("SELECT pg_export_snapshot()")
            snapshot_id = cur.fetchone()[0]
        for _index in range(max(1, size) - 1):
            conn = connect(module, application_name)
            with conn.cursor() as cur:
                cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                cur.execute("SET TRANSACTION SNAPSHOT %s", (snapshot_id,))
            self.connections.append(conn)

    @property
    def cursor(self):
        """A cursor of the first connection, for small queries outside ``run``."""
        return self.connections[0].cursor()

    def run(self, jobs):
        """Run every job; return their results in order. The first exception is raised again."""
        work = queue.Queue()
        for index, job in enumerate(jobs):
            work.put((index, job))
        results = [None] * len(jobs)
        errors = []

        def worker(conn):
            with conn.cursor() as cur:
                while not errors:
                    try:
                        index, job = work.get_nowait()
                    except queue.Empty:
                        return
                    try:
                        results[index] = job(cur)
                    except Exception as error:  # noqa: BLE001 - handed to the caller below
                        errors.append(error)

        threads = [threading.Thread(target=worker, args=(conn,)) for conn in self.connections]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        return results

    def close(self):
        for conn in self.connections:
            try:
                conn.rollback()
            finally:
                conn.close()
