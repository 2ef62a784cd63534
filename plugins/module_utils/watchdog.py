# -*- coding: utf-8 -*-
# Copyright: (c) 2026, tmi.migration maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The lock-queue watchdog: a second session that cancels a migration's lock wait once users queue behind it.

A statement that waits for a table lock (an application transaction holds a conflicting one) puts its
request in the lock's queue, and every later request that conflicts with it - a plain SELECT against
ACCESS EXCLUSIVE - queues behind it: users stall although the migration has not started. ``lock_timeout``
bounds that stall, but users wait the whole timeout each attempt. While pg_migrate runs an attempt, the
watchdog polls from a second connection every ``POLL_INTERVAL`` seconds:

* whether the migrating session waits for a lock (``pg_stat_activity.wait_event_type = 'Lock'``), and
  since when (``pg_locks.waitstart``, PostgreSQL 14+);
* which sessions block it (``pg_blocking_pids``), described without their query text (it can carry data
  or secrets): pid, application_name, state, transaction age, backend type, wait event;
* which client sessions queue behind it - its pid among theirs ``pg_blocking_pids`` and every other session
  there itself waiting (a session a granted lock blocks anyway would not move if the migration gave up) -
  and since when.

Once such a session has waited longer than the bound (``lock_queue_timeout``), it cancels the attempt
with ``pg_cancel_backend`` in the same query that checks the migrating session is still waiting for a
lock, so a statement that got its lock and works is not cancelled (the few microseconds between the
check and the signal remain: a cancel landing there fails the attempt the same way, rolled back). The
engine (``migrator.Migrator``) retries a cancel of the watchdog's own as it retries a lock timeout; any
other ``query_canceled`` (statement_timeout, an operator) is not retried.

Written here because neither PostgreSQL nor psycopg2 nor golang-migrate has it; pgroll and pg-osc rely
on ``lock_timeout`` alone. The watchdog never decides a migration's outcome by itself: if its own
session fails, it warns and the attempt goes on under ``lock_timeout``, as without it.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import threading
import time

from ansible.module_utils.common.text.converters import to_native

QUERY_CANCELED = "57014"
# How often the second session looks; the cancel comes at most this late after the bound.
POLL_INTERVAL = 0.05
# Application sessions: the collection counts what users wait for, not autovacuum or replication.
CLIENT = "client backend"

MIGRATION_SQL = "SELECT wait_event_type, wait_event, %s FROM pg_stat_activity WHERE pid = %%s"
# How long the migrating session has waited for its lock (PostgreSQL 14 has pg_locks.waitstart).
# Read only while it waits: pg_locks takes the lock manager's locks for a moment, so not on every poll.
WAIT_AGE_SQL = ("CASE WHEN wait_event_type = 'Lock' THEN (SELECT extract(epoch FROM now() - min(l.waitstart))::float8 "
                "FROM pg_locks l WHERE l.pid = pg_stat_activity.pid AND NOT l.granted) END")
# The other sessions waiting for a lock, with what blocks each and how long it has waited (without
# pg_locks.waitstart, since its statement started: an overestimate the caller bounds by the attempt's age).
WAITING_SQL = (
    "SELECT a.pid, a.backend_type, extract(epoch FROM now() - coalesce(%s, a.query_start))::float8, "
    "pg_blocking_pids(a.pid) FROM pg_stat_activity a WHERE a.wait_event_type = 'Lock' "
    "AND a.pid <> %%s AND a.pid <> pg_backend_pid()")
WAITSTART = "(SELECT min(l.waitstart) FROM pg_locks l WHERE l.pid = a.pid AND NOT l.granted)"
# Who blocks the migrating session: never the query text. A prepared transaction shows as pid 0.
BLOCKERS_SQL = (
    "SELECT b.pid, a.application_name, a.state, extract(epoch FROM now() - a.xact_start)::float8, "
    "a.backend_type, a.wait_event_type, a.wait_event FROM unnest(pg_blocking_pids(%s)) AS b(pid) "
    "LEFT JOIN pg_stat_activity a ON a.pid = b.pid ORDER BY b.pid")
# The check and the cancel in one query: only a session still waiting for a lock is cancelled.
CANCEL_SQL = "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE pid = %s AND wait_event_type = 'Lock'"


def queued_behind(pid, waiting):
    """The client sessions of ``waiting`` (rows pid, backend_type, seconds, blocking pids) that queue behind
    session ``pid``: it blocks them and everything else that does is itself waiting (queued ahead of them, not
    holding a lock), so they would move on if ``pid`` gave up its request. {pid: seconds waited}."""
    waiting_pids = set(row[0] for row in waiting) | set([pid])
    queued = {}
    for other, backend_type, seconds, blockers in waiting:
        blockers = set(blockers or ())
        if backend_type == CLIENT and pid in blockers and blockers <= waiting_pids:
            queued[other] = max(0.0, seconds or 0.0)
    return queued


def should_cancel(waiting_for_lock, queued, attempt_age, bound):
    """Cancel now? The migration waits for a lock and a session has queued behind it for longer than ``bound``.

    A session's wait counts at most from the attempt's start: nobody queued behind a request not yet made.
    """
    if not waiting_for_lock or bound <= 0:
        return False
    return any(min(seconds, attempt_age) > bound for seconds in queued.values())


def blocker_dict(row):
    pid, application_name, state, xact_age, backend_type, wait_event_type, wait_event = row
    return dict(pid=pid, application_name=application_name, state=state,
                xact_age_seconds=None if xact_age is None else round(xact_age, 1),
                backend_type=backend_type if pid else "prepared transaction",
                wait_event=("%s:%s" % (wait_event_type, wait_event)) if wait_event_type else None)


def describe_blocker(blocker):
    """"pid 123 (app 'tmi', transaction 40.2 s old, idle in transaction)"."""
    if not blocker["pid"]:
        return "a prepared transaction (pg_prepared_xacts)"
    parts = ["app '%s'" % (blocker["application_name"] or "")]
    if blocker["xact_age_seconds"] is not None:
        parts.append("transaction %s s old" % blocker["xact_age_seconds"])
    if blocker["state"]:
        parts.append(blocker["state"])
    return "pid %s (%s)" % (blocker["pid"], ", ".join(parts))


def describe(lock_waits):
    """The lock waits of a file that succeeded, in one line: "waited 1.2 s and 1.1 s (attempts 1-2) behind pid 123
    (app 'tmi', transaction 40.2 s old, idle in transaction), up to 2 sessions queued behind it for at most 1.0 s,
    cancelled and retried 2 times"; '' when none waited. An online build's waits are said per index, a rewritten
    file's per step ("step 5 waited ...")."""
    groups = []
    for wait in lock_waits:
        key = (wait.get("index"), wait.get("step"))
        if not groups or groups[-1][0] != key:
            groups.append((key, []))
        groups[-1][1].append(wait)
    return "; ".join(_describe_group(key, waits) for key, waits in groups)


def _describe_group(key, waits):
    index, step = key
    seconds = ["%s s" % wait["waited_seconds"] for wait in waits]
    text = ("step %s " % step if step else "") + ("index %s " % index if index else "")
    text += "waited %s" % (seconds[0] if len(seconds) == 1 else ", ".join(seconds[:-1]) + " and " + seconds[-1])
    attempts = [wait["attempt"] for wait in waits]
    text += " (attempt%s %s)" % ("" if len(attempts) == 1 else "s", "%d-%d" % (attempts[0], attempts[-1])
                                 if attempts == list(range(attempts[0], attempts[-1] + 1)) and len(attempts) > 1
                                 else ", ".join(str(a) for a in attempts))
    blockers = {}
    for wait in waits:  # the latest description of each blocker: its transaction's age then
        blockers.update((blocker["pid"], blocker) for blocker in wait["blockers"])
    if blockers:
        text += " behind " + ", ".join(describe_blocker(blockers[pid]) for pid in sorted(blockers))
    queued = max(wait["queued"] for wait in waits)
    if queued:
        text += ", up to %d session%s queued behind it for at most %s s" % (
            queued, "" if queued == 1 else "s", max(wait["queued_seconds"] for wait in waits))
    cancels = sum(1 for wait in waits if wait["cancelled"])
    if cancels:
        text += ", cancelled and retried" + (" %d times" % cancels if cancels > 1 else "")
    errors = [wait["watchdog_error"] for wait in waits if wait.get("watchdog_error")]
    if errors:
        text += " (the watchdog failed: %s)" % errors[-1]
    return text


def blockers_text(lock_waits):
    """The blockers of the last attempt that saw any, for a failure message; '' when none was seen."""
    for wait in reversed(lock_waits):
        if wait["blockers"]:
            pids = [b["pid"] for b in wait["blockers"] if b["pid"]]
            text = "Blocked by %s." % ", ".join(describe_blocker(b) for b in wait["blockers"])
            if pids:
                text += (" Let that transaction finish, or end it (SELECT pg_terminate_backend(%s)) if it is stuck, "
                         "then run again." % ", ".join(str(pid) for pid in pids))
            if len(pids) < len(wait["blockers"]):
                text += " A prepared transaction ends with COMMIT PREPARED or ROLLBACK PREPARED (its gid is in " \
                        "pg_prepared_xacts)."
            return text
    return ""


class Window(object):
    """One watched attempt: polls on a thread from ``start`` to ``stop``; ``entry()`` is its report."""

    def __init__(self, conn, pid, attempt, bound, may_cancel, waitstart, interval, index=None, step=None):
        self.conn, self.pid, self.attempt, self.bound = conn, pid, attempt, bound
        self.may_cancel, self.waitstart, self.interval, self.index = may_cancel, waitstart, interval, index
        self.step = step
        self.cancelled = False
        self.error = None
        self.waits = []  # [began, last seen waiting] per lock wait of the attempt (a batch may wait more than once)
        self.waiting = False
        self.queued, self.queued_seconds, self.blockers = 0, 0.0, {}
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="lock-queue-watchdog")
        self.thread.daemon = True
        self.started = self.stopped = None

    def start(self):
        self.started = time.monotonic()
        self.thread.start()

    def stop(self):
        self.stopping.set()
        self.thread.join()
        self.stopped = time.monotonic()

    def _loop(self):
        try:
            with self.conn.cursor() as cur:
                while not self.stopping.is_set():
                    self.poll(cur)
                    self.stopping.wait(self.interval)
        except Exception as error:  # noqa: BLE001 - the attempt goes on under lock_timeout; stop() reports it
            self.error = to_native(error).strip()

    def poll(self, cur):
        cur.execute(MIGRATION_SQL % (WAIT_AGE_SQL if self.waitstart else "NULL::float8"), (self.pid,))
        row = cur.fetchone()
        now = time.monotonic()
        if row is None or row[0] != "Lock":
            self.waiting = False
            return
        if not self.waiting:
            self.waits.append([max(self.started, now - (row[2] or 0.0)), now])
            self.waiting = True
        self.waits[-1][1] = now
        cur.execute(WAITING_SQL % (WAITSTART if self.waitstart else "NULL::timestamptz"), (self.pid,))
        queued = queued_behind(self.pid, cur.fetchall())
        cur.execute(BLOCKERS_SQL, (self.pid,))
        for blocker in cur.fetchall():
            self.blockers[blocker[0]] = blocker_dict(blocker)
        age = now - self.started
        self.queued = max(self.queued, len(queued))
        self.queued_seconds = max([self.queued_seconds] + [min(s, age) for s in queued.values()])
        if self.may_cancel and not self.cancelled and should_cancel(True, queued, age, self.bound):
            cur.execute(CANCEL_SQL, (self.pid,))
            self.cancelled = bool(cur.fetchall())

    def entry(self):
        """The attempt's report, or None when it never waited for a lock (and the watchdog did not fail)."""
        if not self.waits and self.error is None:
            return None
        if self.waiting:  # seen waiting at the last poll: the wait lasted until the attempt ended
            self.waits[-1][1] = self.stopped
        waited = sum(max(0.0, last - began) for began, last in self.waits)
        found = dict(attempt=self.attempt, waited_seconds=round(waited, 3), cancelled=self.cancelled,
                     queued=self.queued, queued_seconds=round(self.queued_seconds, 3),
                     blockers=[self.blockers[pid] for pid in sorted(self.blockers)])
        if self.index:
            found["index"] = self.index
        if self.step:
            found["step"] = self.step
        if self.error is not None:
            found["watchdog_error"] = self.error
        return found


class Watchdog(object):
    """Watches the attempts of one migrating session from ``conn``, a second autocommit connection.

    ``bound`` is lock_queue_timeout in seconds; ``warn(message)`` reports the watchdog's own failure once.
    """

    def __init__(self, conn, bound, warn=None, interval=POLL_INTERVAL):
        self.conn, self.bound, self.interval = conn, float(bound), interval
        self.warn = warn or (lambda message: None)
        self.broken = None
        with conn.cursor() as cur:
            # Its own queries never wait: they read the statistics views only, and a stuck poll must not hang.
            cur.execute("SELECT set_config('statement_timeout', '5s', false), set_config('lock_timeout', '1s', false),"
                        " current_setting('server_version_num')::int")
            self.waitstart = cur.fetchone()[2] >= 140000

    @contextlib.contextmanager
    def watching(self, pid, attempt, into, may_cancel=True, index=None, step=None):
        """Watch session ``pid`` during the block; appends the attempt's report to ``into`` if it waited for a
        lock (with ``index``, the online build's index, and ``step``, the rewritten file's step number, when
        given). Yields the Window (``cancelled(window, error)`` tells whether the watchdog cancelled it)."""
        if self.broken is not None:
            yield None
            return
        window = Window(self.conn, pid, attempt, self.bound, may_cancel, self.waitstart, self.interval, index, step)
        window.start()
        try:
            yield window
        finally:
            window.stop()
            if window.error is not None:
                self.broken = window.error
                self.warn("The lock-queue watchdog failed and watches no more in this run: %s. lock_timeout still "
                          "bounds each wait." % window.error)
            entry = window.entry()
            if entry is not None:
                into.append(entry)


def cancelled(window, error):
    """Whether ``error`` is the watchdog's own cancel of that attempt (and not statement_timeout's or an
    operator's, which are not retried)."""
    return window is not None and window.cancelled and getattr(error, "pgcode", None) == QUERY_CANCELED
