#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, tmi.migration maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: pg_index_check
short_description: Read-only checks that expected indexes exist, are valid and are used by the planner
version_added: 0.1.0
description:
  - Expected indexes (name and table, with key columns, C(INCLUDE) columns, predicate and uniqueness to match) are
    present, valid and ready (C(indisvalid), C(indisready)); every INVALID index of the schema (the leftover of a
    failed C(CREATE INDEX CONCURRENTLY)); duplicate indexes (same table, keys, operator classes and predicate) - the
    runbook's "conflicting indexes" troubleshooting.
  - For a list of queries with sample parameters, the plan and whether the planner uses one of the expected
    indexes. Tables smaller than O(min_rows) are skipped, because the
    planner rightly prefers a sequential scan there.
  - Returns index usage (C(pg_stat_user_indexes)) and table sizes (C(pg_total_relation_size)) as data - the runbook's
    monitoring queries.
  - Every finding goes into RV(failed_checks); the module never fails for a finding and changes nothing. With
    O(analyze=true) it refreshes planner statistics (C(ANALYZE)) first, as the runbook's troubleshooting does; that
    touches no data or schema and is not reported as a change.
  - The module knows no application's indexes or queries - they are options (the validate role passes the indexes
    the applied migration files create and its profile's queries); by default it reports INVALID and duplicate
    indexes, usage and sizes only.
  - Written for this collection because M(community.postgresql.postgresql_idx) manages one index and
    M(community.postgresql.postgresql_info) does not check validity, duplicates or plans; the checks are this
    collection's own SQL and parsing of C(pg_get_indexdef) (C(module_utils/indexes.py)).
options:
  schema:
    description: Schema of the tables and indexes.
    type: str
    default: public
    version_added: 0.1.0
  expected:
    description:
      - Indexes that must exist. Each has C(name) and C(table), and optionally C(columns) (key columns as written in
        C(CREATE INDEX), for example C(created_at DESC)), C(include), C(where) (compared without casts and
        parentheses) and C(unique).
    type: list
    elements: dict
    default: []
    version_added: 0.1.0
  queries:
    description:
      - Queries whose plan to check. Each has C(name), C(sql) (with C(%s) placeholders), C(params) or C(params_sql)
        (a query returning one row of sample parameters), C(table) (whose size decides whether the check applies; a
        query on a table that does not exist is skipped) and
        C(expect_index) (a name or a list of acceptable names).
    type: list
    elements: dict
    default: []
    version_added: 0.1.0
  min_rows:
    description: Plans are judged only on tables with at least this many rows (per the planner's statistics).
    type: int
    default: 1000
    version_added: 0.1.0
  analyze:
    description: Run C(ANALYZE) on the queried tables first (not in check mode).
    type: bool
    default: false
    version_added: 0.1.0
  explain_analyze:
    description: Use C(EXPLAIN ANALYZE) (runs the queries) instead of C(EXPLAIN).
    type: bool
    default: false
    version_added: 0.1.0
  introduced:
    description:
      - Names of the indexes the applied files create; a duplicate among them is marked C(introduced) (this run's
        files made it), so an operator can tell new findings from old ones.
    type: list
    elements: str
    default: []
    version_added: 0.1.0
  check_duplicates:
    description: Report duplicate indexes.
    type: bool
    default: true
    version_added: 0.1.0
attributes:
  check_mode:
    support: full
    description: The module only reads; in check mode O(analyze) is skipped.
extends_documentation_fragment:
  - community.postgresql.postgres
  - tmi.migration.postgres
author:
  - tmi.migration maintainers (@tmi-migration)
"""

EXAMPLES = r"""
- name: Check the granular API indexes and the planner's use of them
  tmi.migration.pg_index_check:
    login_db: tmi
    analyze: true
    expected:
      - {name: idx_threats_threat_model_id_created_at, table: threats, columns: [threat_model_id, created_at DESC]}
      - {name: idx_metadata_threat_entity, table: metadata, columns: [entity_id, key], where: "entity_type = 'threat'"}
    queries:
      - name: threats of a threat model, newest first
        table: threats
        sql: SELECT * FROM threats WHERE threat_model_id = %s ORDER BY created_at DESC LIMIT 10
        params_sql: SELECT threat_model_id FROM threats LIMIT 1
        expect_index: idx_threats_threat_model_id_created_at
  register: indexes
"""

RETURN = r"""
indexes:
  description: Every index of the schema with its table, definition, validity and readiness.
  returned: always
  type: list
  elements: dict
expected:
  description: Each expected index with C(present), C(valid), C(ready), C(matches) and the actual C(definition).
  returned: always
  type: list
  elements: dict
invalid:
  description: Indexes that are not valid or not ready.
  returned: always
  type: list
  elements: dict
duplicates:
  description: Groups of indexes with the same table, keys and predicate.
  returned: always
  type: list
  elements: list
plans:
  description:
    - Per query, C(verdict) (V(uses_expected_index), V(other_plan) or V(skipped)), the indexes used and the plan.
  returned: always
  type: list
  elements: dict
usage:
  description: Per index, C(idx_scan), C(idx_tup_read), C(idx_tup_fetch) from C(pg_stat_user_indexes).
  returned: always
  type: list
  elements: dict
table_sizes:
  description: Per table, total size in bytes including indexes and TOAST.
  returned: always
  type: dict
failed_checks:
  description: Every finding, each with C(check) and C(message).
  returned: always
  type: list
  elements: dict
"""
from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_native
from ansible_collections.tmi.migration.plugins.module_utils.indexes import check
from ansible_collections.tmi.migration.plugins.module_utils.postgres import argument_spec, connector

try:
    import psycopg2
except ImportError:  # connect() reports it
    psycopg2 = None

APPLICATION_NAME = "tmi.migration.pg_index_check"


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(
            schema=dict(type="str", default="public"),
            expected=dict(type="list", elements="dict", default=[]),
            queries=dict(type="list", elements="dict", default=[]),
            min_rows=dict(type="int", default=1000),
            analyze=dict(type="bool", default=False),
            explain_analyze=dict(type="bool", default=False),
            check_duplicates=dict(type="bool", default=True),
            introduced=dict(type="list", elements="str", default=[]),
        ),
        supports_check_mode=True,
    )
    try:
        result = check(connector(module, APPLICATION_NAME), module.params,
                       analyze=module.params["analyze"] and not module.check_mode)
    except (psycopg2.Error, KeyError) as error:
        module.fail_json(msg="Index check could not run: %s. Check the index, table and query options."
                             % to_native(error).strip())
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
