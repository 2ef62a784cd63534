"""The pure parts of the lock-queue watchdog: who queues behind the migration, when to cancel, what to say."""

from __future__ import annotations

import pytest
from ansible_collections.tmi.migration.plugins.module_utils import record, watchdog

MIGRATION = 100
CLIENT = "client backend"


def test_a_session_blocked_only_by_the_migration_queues_behind_it():
    waiting = [(200, CLIENT, 0.7, [MIGRATION])]
    assert watchdog.queued_behind(MIGRATION, waiting) == {200: 0.7}


def test_a_session_also_queued_behind_another_waiting_session_still_counts():
    # 201 waits behind the migration; 202 waits behind both (it queued after 201).
    waiting = [(201, CLIENT, 0.9, [MIGRATION]), (202, CLIENT, 0.4, [MIGRATION, 201])]
    assert watchdog.queued_behind(MIGRATION, waiting) == {201: 0.9, 202: 0.4}


@pytest.mark.parametrize(("row", "why"), [
    ((300, CLIENT, 5.0, [999]), "blocked by a holder, not by the migration"),
    ((301, CLIENT, 5.0, [MIGRATION, 999]), "a granted lock blocks it anyway: it would not move if the migration went"),
    ((302, "autovacuum worker", 5.0, [MIGRATION]), "not an application session"),
])
def test_sessions_the_migration_does_not_hold_up_do_not_count(row, why):
    assert watchdog.queued_behind(MIGRATION, [row]) == {}, why


def test_a_missing_wait_time_counts_as_zero():
    assert watchdog.queued_behind(MIGRATION, [(200, CLIENT, None, [MIGRATION])]) == {200: 0.0}


@pytest.mark.parametrize(("waiting", "queued", "attempt_age", "bound", "expected"), [
    (True, {200: 1.2}, 5.0, 1.0, True),
    (True, {200: 0.9}, 5.0, 1.0, False),  # not yet past the bound
    (True, {200: 1.0}, 5.0, 1.0, False),  # at the bound is not past it
    (True, {}, 5.0, 1.0, False),  # nobody queued: lock_timeout governs
    (False, {200: 9.0}, 5.0, 1.0, False),  # the migration does not wait (its lock was granted): never cancelled
    (True, {200: 30.0}, 0.5, 1.0, False),  # a wait older than the attempt counts only from the attempt's start
    (True, {200: 30.0}, 5.0, 0, False),  # 0: off
])
def test_cancel_only_a_waiting_migration_with_sessions_queued_longer_than_the_bound(
        waiting, queued, attempt_age, bound, expected):
    assert watchdog.should_cancel(waiting, queued, attempt_age, bound) is expected


class _Window:
    def __init__(self, cancelled):
        self.cancelled = cancelled


class _Error(Exception):
    def __init__(self, pgcode):
        super().__init__(pgcode)
        self.pgcode = pgcode


def test_only_the_watchdogs_own_cancel_is_its_cancel():
    assert watchdog.cancelled(_Window(True), _Error("57014"))
    assert not watchdog.cancelled(_Window(False), _Error("57014"))  # statement_timeout, an operator
    assert not watchdog.cancelled(_Window(True), _Error("55P03"))  # the lock timeout is retried by itself
    assert not watchdog.cancelled(None, _Error("57014"))  # watchdog off


BLOCKER = {"pid": 4242, "application_name": "tmi", "state": "idle in transaction", "xact_age_seconds": 40.2,
           "backend_type": CLIENT, "wait_event": "Client:ClientRead"}


def wait(attempt, cancelled=True, **extra):
    return dict(dict(attempt=attempt, waited_seconds=1.06, cancelled=cancelled, queued=1, queued_seconds=1.02,
                     blockers=[BLOCKER]), **extra)


def test_a_blocker_row_becomes_a_dict_without_query_text():
    row = (4242, "tmi", "idle in transaction", 40.23, CLIENT, "Client", "ClientRead")
    assert watchdog.blocker_dict(row) == BLOCKER
    prepared = watchdog.blocker_dict((0, None, None, None, None, None, None))
    assert prepared["backend_type"] == "prepared transaction"
    assert watchdog.describe_blocker(prepared) == "a prepared transaction (pg_prepared_xacts)"


def test_the_summary_says_the_waits_the_blocker_and_the_cancels_in_one_line():
    older = dict(BLOCKER, xact_age_seconds=38.1)
    assert watchdog.describe([wait(1, blockers=[older]), wait(2)]) == (
        "waited 1.06 s and 1.06 s (attempts 1-2) behind pid 4242 (app 'tmi', transaction 40.2 s old, idle in "
        "transaction), up to 1 session queued behind it for at most 1.02 s, cancelled and retried 2 times")
    assert watchdog.describe([wait(1, cancelled=False, queued=0, queued_seconds=0.0)]) == (
        "waited 1.06 s (attempt 1) behind pid 4242 (app 'tmi', transaction 40.2 s old, idle in transaction)")
    assert watchdog.describe([]) == ""


def test_an_online_builds_waits_are_said_per_index():
    text = watchdog.describe([wait(1, index="idx_a"), wait(1, index="idx_b"), wait(2, index="idx_b")])
    assert text.startswith("index idx_a waited 1.06 s (attempt 1) behind pid 4242")
    assert "; index idx_b waited 1.06 s and 1.06 s (attempts 1-2) behind" in text


def test_a_rewritten_files_waits_are_said_per_step_not_as_an_index():
    text = watchdog.describe([wait(1, step=5), wait(2, step=5), wait(1, step=7)])
    assert text.startswith("step 5 waited 1.06 s and 1.06 s (attempts 1-2) behind pid 4242"), text
    assert "; step 7 waited 1.06 s (attempt 1) behind" in text and "index" not in text


def test_the_failure_names_the_last_blockers_and_the_remedy():
    text = watchdog.blockers_text([wait(1), wait(2, blockers=[])])
    assert text == ("Blocked by pid 4242 (app 'tmi', transaction 40.2 s old, idle in transaction). Let that "
                    "transaction finish, or end it (SELECT pg_terminate_backend(4242)) if it is stuck, then run again.")
    assert watchdog.blockers_text([]) == ""
    prepared = watchdog.blocker_dict((0, None, None, None, None, None, None))
    assert watchdog.blockers_text([wait(1, blockers=[prepared])]) == (
        "Blocked by a prepared transaction (pg_prepared_xacts). A prepared transaction ends with COMMIT PREPARED or "
        "ROLLBACK PREPARED (its gid is in pg_prepared_xacts).")


def test_the_lock_waits_reach_the_run_record_with_the_applied_files():
    run = record.start_phase(record.new("r1", "db1"), "migrate", clock=1.0)
    applied = [{"version": 17, "attempts": 2, "lock_waits": [wait(1)], "lock_wait_summary": "waited ..."}]
    run = record.update(run, {"migrate_result": {"version_after": 17, "applied": applied}})
    assert run["migration"]["applied"][0]["lock_waits"][0]["blockers"][0]["pid"] == 4242
