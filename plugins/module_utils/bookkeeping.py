# -*- coding: utf-8 -*-
# Copyright: (c) 2026, tmi.migration maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The tables a migration run writes besides the application's data, named once.

golang-migrate's state table and the collection's own history and run lock tables change with
every run, so every comparison of data (a baseline, a backup's figures, the live database)
leaves them out. The modules derive them from their table options; these are the defaults.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

SCHEMA = "public"
STATE_TABLE = "schema_migrations"  # golang-migrate's
HISTORY_TABLE = "tmi_migration_history"  # pg_migrate's record of applied files
RUN_LOCK_TABLE = "tmi_migration_lock"  # pg_run_lock's row


def qualified(name, schema=SCHEMA):
    """``schema.table`` of a table option: a name with a dot is taken as it is, a plain one is in ``schema``."""
    return name if "." in name else "%s.%s" % (schema or SCHEMA, name)


def tables(schema=SCHEMA, state_table=STATE_TABLE, history_table=HISTORY_TABLE, run_lock_table=RUN_LOCK_TABLE):
    """The bookkeeping tables as ``schema.table`` names; an empty name (a table switched off) is left out."""
    return [qualified(name, schema) for name in (state_table, history_table, run_lock_table) if name]


def from_options(options, schema=SCHEMA):
    """The bookkeeping tables of a module's options ``state_table``, ``history_table``, ``run_lock_table``.

    An empty or missing ``state_table`` still means golang-migrate's default one: the state table is
    left out of comparisons also where a module does not read it.
    """
    return tables(schema, options.get("state_table") or STATE_TABLE,
                  options.get("history_table", HISTORY_TABLE), options.get("run_lock_table", RUN_LOCK_TABLE))


# Every bookkeeping table under its default name, and the collection's own (not golang-migrate's) among them.
BOOKKEEPING_TABLES = tuple(tables())
OWN_TABLES = tuple(tables(state_table=""))
