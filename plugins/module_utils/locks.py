# -*- coding: utf-8 -*-
# Copyright: (c) 2026, tmi.migration maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""PostgreSQL's table-level lock modes, weakest first, by the names its documentation uses.

Shared by the statement analysis (the lock a statement is predicted to take) and the rehearsal
(the lock it was seen to hold in ``pg_locks``), so that both speak of locks the same way.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

# "Explicit Locking", table-level lock modes, weakest first.
MODES = ("ACCESS SHARE", "ROW SHARE", "ROW EXCLUSIVE", "SHARE UPDATE EXCLUSIVE", "SHARE", "SHARE ROW EXCLUSIVE",
         "EXCLUSIVE", "ACCESS EXCLUSIVE")
# pg_locks.mode -> the documentation's name.
FROM_PG_LOCKS = dict(("".join(word.capitalize() for word in mode.split()) + "Lock", mode) for mode in MODES)
# The modes that block plain writes (INSERT, UPDATE, DELETE take ROW EXCLUSIVE), and reads (SELECT takes ACCESS SHARE).
BLOCKS_WRITES = frozenset(MODES[MODES.index("SHARE"):])
BLOCKS_READS = frozenset(["ACCESS EXCLUSIVE"])


def mode_name(pg_locks_mode):
    """The documentation's name of a pg_locks.mode such as 'ShareUpdateExclusiveLock'."""
    return FROM_PG_LOCKS.get(pg_locks_mode, pg_locks_mode)


def strongest(modes):
    """The strongest of some lock modes (documentation names), or None for none."""
    known = [mode for mode in modes if mode in MODES]
    return max(known, key=MODES.index) if known else None


def stronger(mode, than):
    """Whether ``mode`` is stronger than ``than`` (None is weaker than every mode)."""
    return than is None or MODES.index(mode) > MODES.index(than)
