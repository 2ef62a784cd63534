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

from ansible_collections.tmi.migration.plugins.module_utils import snapshot

# Bytes of every table (heap and TOAST): what a sequential scan of it costs, to order the jobs.
TABLE_SIZES_SQL = (
    "SELECT n.nspname, c.relname, pg_table_size(c.oid) FROM pg_class c "
    "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'p') "
    "AND n.nspname NOT IN ('pg_catalog', 'information_schema')")


def table_sizes(cursor):
    """{(schema, table): bytes} of every ordinary and partitioned table outside the system catalogs."""
    cursor.execute(TABLE_SIZES_SQL)
    return dict(((schema, name), size) for schema, name, size in cursor.fetchall())


def figures_job(schema, table, columns=None, like=None, hashing=None):
    """A pool job: ('schema.table', figures) of one table (over ``columns`` only, if given; with the algorithm
    of ``like``, the figures they will be compared with, if given; ``hashing`` as ``snapshot.table_figures``)."""
    algorithm = snapshot.algorithm_of(like) if like is not None else None

    def job(cursor):
        return "%s.%s" % (schema, table), snapshot.table_figures(cursor, schema, table, columns, algorithm, hashing)
    return job


def parallel_figures(connect, size, dbname=None, skip=(), like=None, progress=None):
    """The figures ``snapshot.take`` returns for every user table (but those named in ``skip``; ``like`` as
    there), computed over ``size`` connections that share one snapshot, the largest tables first
    (``progress``: see ``SnapshotPool.progress``)."""
    pool = SnapshotPool(connect, size, workers_per_scan=0, dbname=dbname)
    pool.progress = progress
    try:
        return pool_figures(pool, skip, like)
    finally:
        pool.close()


def pool_figures(pool, skip=(), like=None):
    """``parallel_figures`` on the connections of an open ``SnapshotPool`` (whose snapshot a pg_dump may share)."""
    like = like or {}
    with pool.cursor as cur:
        tables = [t for t in snapshot.user_tables(cur) if "%s.%s" % t not in skip]
        sizes = table_sizes(cur)
        hashing = snapshot.hashings(cur, tables)
    results = pool.run([figures_job(schema, table, like=like.get("%s.%s" % (schema, table)),
                                    hashing=hashing[(schema, table)]) for schema, table in tables],
                       costs=[sizes.get(table, 0) for table in tables])
    return dict(results)


class SnapshotPool(object):
    """``run(jobs)`` calls each ``job(cursor)`` on one of ``size`` connections sharing a snapshot
    (of ``dbname``, or of the connection's default database). ``connect(dbname=None)`` opens one
    connection (``postgres.connector`` of a module).

    ``workers_per_scan``, when given, is each connection's ``max_parallel_workers_per_gather``.
    The connections are already the parallelism; PostgreSQL's parallel workers on top of them
    compete for the same cores (measured in docs/benchmarks.md), so the modules default it to 0
    and leave raising it to servers with more cores than connections.

    ``progress``, when a module sets it (``module_utils/progress.py``), is told of the jobs ``run``
    runs and of each one done.
    """

    progress = None

    def __init__(self, connect, size, workers_per_scan=None, dbname=None):
        self.connections = []
        self.snapshot_id = snapshot_id = None
        for _index in range(max(1, size)):
            conn = connect(dbname=dbname)
            self.connections.append(conn)
            with conn.cursor() as cur:
                cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                if snapshot_id is None:
                    cur.execute("SELECT pg_export_snapshot()")
                    self.snapshot_id = snapshot_id = cur.fetchone()[0]
                else:
                    cur.execute("SET TRANSACTION SNAPSHOT %s", (snapshot_id,))
                if workers_per_scan is not None:
                    cur.execute("SELECT set_config('max_parallel_workers_per_gather', %s, true)",
                                (str(int(workers_per_scan)),))

    @property
    def cursor(self):
        """A cursor of the first connection, for small queries outside ``run``."""
        return self.connections[0].cursor()

    def run(self, jobs, costs=None):
        """Run every job; return their results in order. The first exception is raised again.

        ``costs`` (one number per job, e.g. the bytes it scans) sets the order: the most
        expensive first, so a long scan does not start last and leave the other
        connections idle at the end (longest-processing-time-first scheduling).
        """
        order = range(len(jobs))
        if costs is not None:
            order = sorted(order, key=lambda index: -costs[index])
        work = queue.Queue()
        for index in order:
            work.put((index, jobs[index]))
        results = [None] * len(jobs)
        errors = []
        if self.progress is not None:
            self.progress.begin_jobs(costs if costs is not None else [1] * len(jobs))

        def worker(conn):
            with conn.cursor() as cur:
                while not errors:
                    try:
                        index, job = work.get_nowait()
                    except queue.Empty:
                        return
                    try:
                        results[index] = job(cur)
                        if self.progress is not None:
                            self.progress.job_done(index)
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
