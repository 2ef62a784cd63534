# -*- coding: utf-8 -*-
# Copyright: (c) 2026, tmi.migration maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The options of the modules that run migration files with the collection's engine (pg_migrate, pg_rehearse),
documented once: the rehearsal runs the files exactly as the migration will."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    DOCUMENTATION = r"""
options:
  target_version:
    description:
      - The version to reach, V(latest) (the highest version with an up file), or V(0) for no migration applied.
      - Unlike golang-migrate's C(migrate up 16), which applies the next 16 migrations, this is the version the
        database ends at.
    type: str
    default: latest
    version_added: 0.1.0
  state_table:
    description:
      - Name of golang-migrate's state table (the name every module of the collection gives this option).
    type: str
    default: schema_migrations
    aliases: [migrations_table]
    version_added: 0.1.0
  state_schema:
    description: Schema of the state table. Default is the session's C(current_schema()), as in golang-migrate.
    type: str
    aliases: [migrations_schema]
    version_added: 0.1.0
  lock_timeout:
    description:
      - PostgreSQL C(lock_timeout) for each migration, for example V(5s). A migration that cannot get a table lock
        in this time is rolled back and retried, so it never queues for long in front of the application's queries.
      - V(0) waits without limit (golang-migrate's behaviour).
    type: str
    default: 5s
    version_added: 0.1.0
  statement_timeout:
    description: PostgreSQL C(statement_timeout) for each migration; V(0) means no limit.
    type: str
    default: "0"
    version_added: 0.1.0
  lock_retries:
    description: How many times a migration that hit O(lock_timeout) is tried again before the module gives up.
    type: int
    default: 5
    version_added: 0.1.0
  lock_retry_delay:
    description: Seconds before the first retry; each further retry waits twice as long.
    type: float
    default: 2
    version_added: 0.1.0
  online_index_builds:
    description:
      - For an up migration made only of C(CREATE INDEX) statements, build each index with
        C(CREATE INDEX CONCURRENTLY) outside a transaction, so writes to the table go on during the build.
      - An INVALID index left by an earlier failed build of the same name is dropped and rebuilt. If a build fails,
        the INVALID leftover and the indexes this migration built are dropped, and the version stays where it was.
    type: bool
    default: false
    version_added: 0.1.0
  lock_queue_timeout:
    description:
      - Seconds that application sessions may queue behind a migration waiting for a lock before the lock-queue
        watchdog cancels the attempt. The cancelled attempt is rolled back and retried like one that hit
        O(lock_timeout) (O(lock_retries), O(lock_retry_delay)); a cancel from anything else (O(statement_timeout),
        an operator) is not retried.
      - A statement waiting for a table lock makes every later conflicting query on that table queue behind it, so
        users stall although the migration has not started; this bounds that stall below O(lock_timeout).
      - Only a migration that still waits for its lock is cancelled, never one that got it and is working. A file
        that runs statement by statement is watched (its lock waits are reported) but not cancelled, since its
        earlier statements are applied already; an online index build is cancelled and rebuilt.
      - V(0) switches the watchdog off. M(tmi.migration.pg_rehearse) runs on a private copy without the
        application and has no watchdog.
    type: float
    default: 1.0
    version_added: 0.1.0
  history_table:
    description:
      - Table (in O(state_schema)) where each applied file is recorded with its sha256, duration and time.
        Later runs warn when an applied file has changed since. Empty string switches the history off.
    type: str
    default: tmi_migration_history
    version_added: 0.1.0
  run_lock_table:
    description:
      - The run lock table of M(tmi.migration.pg_run_lock) (in O(state_schema)). Like the history table, it is the
        collection's own and does not make a database without a state table look migrated already.
    type: str
    default: tmi_migration_lock
    version_added: 0.1.0
"""
