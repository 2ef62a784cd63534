#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, tmi.migration maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: pg_session_check
short_description: Check that a PostgreSQL connection keeps one session (no pooler in transaction or statement mode)
version_added: 0.1.0
description:
  - Finds a connection through a pooler that shares server connections between clients - PgBouncer in
    C(pool_mode = transaction) or C(statement), and others like it - where a session advisory lock and a session
    C(SET) do not hold from one transaction to the next. M(tmi.migration.pg_migrate) relies on both
    (golang-migrate's advisory lock, C(lock_timeout) and C(statement_timeout)), and its watchdog and the rehearsal
    know the migrating session by its backend pid.
  - Takes a session advisory lock with C(pg_try_advisory_lock) in one transaction and checks from the next ones on
    the same connection that C(pg_locks) shows it held by the same backend pid (function C(pg_backend_pid)); in
    between, a second connection runs a transaction, which through a transaction pool gets the server connection the
    first one has just released (a lone client's consecutive transactions usually land on the same server
    connection, so comparing pids alone would miss the pool). A second connection whose transaction is refused is a
    pool in statement mode.
  - A direct connection and a pool in session mode (PgBouncer C(pool_mode = session)) keep the session.
  - Every finding goes into RV(failed_checks); the module never fails for a finding and changes nothing. The
    validate role's pre-flight stops on it before anything changes.
  - Written for this collection; M(community.postgresql.postgresql_ping) only connects. The probe is
    C(module_utils/session.py), which modules that rely on a session can call too.
attributes:
  check_mode:
    support: full
    details: The probe only takes and releases an advisory lock no other session uses; it writes nothing.
extends_documentation_fragment:
  - community.postgresql.postgres
  - tmi.migration.postgres
notes:
  - Through a transaction pool the probe's advisory lock may stay on one of the pooler's server connections until
    the pooler closes it (PgBouncer C(server_lifetime), C(server_idle_timeout)); the module warns when it does. Its
    keys (C(0x746D6970), the backend pid) are used by nothing else.
author:
  - tmi.migration maintainers (@tmi-migration)
"""

EXAMPLES = r"""
- name: Check that the connection keeps one database session
  tmi.migration.pg_session_check:
    login_host: db.example.com
    login_db: tmi
  register: session

- name: Stop when it goes through a pool in transaction or statement mode
  ansible.builtin.assert:
    that:
      - session.failed_checks | length == 0
    fail_msg: "{{ session.failed_checks | map(attribute='message') | join('; ') }}"
"""

RETURN = r"""
session_kept:
  description: Whether the connection kept one server session, with its advisory lock, across transactions.
  returned: always
  type: bool
  sample: true
findings:
  description: What showed that the session was not kept, one phrase each.
  returned: always
  type: list
  elements: str
  sample: ["a transaction on a second connection ran in the server session (backend pid 4242) that this
           connection's statement had just used, while this connection stayed open"]
backend_pids:
  description: The server sessions (backend pids) the probe's statements ran in, in the order first seen.
  returned: always
  type: list
  elements: int
  sample: [4242, 4243]
leftover_lock:
  description: Whether the probe's advisory lock could not be released (it stays on a pooler's server connection).
  returned: always
  type: bool
  sample: false
failed_checks:
  description: One C(session_state) error (C(check), C(severity), C(message) with the cause and the remedy) when the
    session was not kept; empty otherwise.
  returned: always
  type: list
  elements: dict
  sample: []
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.tmi.migration.plugins.module_utils.postgres import (
    argument_spec,
    connection_params,
    connector,
    endpoint,
)
from ansible_collections.tmi.migration.plugins.module_utils.session import leftover_warning, probe, refusal

APPLICATION_NAME = "tmi.migration.pg_session_check"


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    result = probe(connector(module, APPLICATION_NAME))
    warning = leftover_warning(result)
    if warning:
        module.warn(warning)
    failed = [] if result["session_kept"] else [dict(
        check="session_state", severity="error", message=refusal(endpoint(connection_params(module)), result))]
    module.exit_json(changed=False, failed_checks=failed, **result)


if __name__ == "__main__":
    main()
