#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, tmi.migration maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: pg_integrity_check
short_description: Read-only data integrity checks of a PostgreSQL schema, with snapshots and their comparison
version_added: 0.1.0
description:
  - Row counts; orphaned rows for every foreign key declared in the schema (found in C(pg_constraint)) and for
    I(logical) relations that have no foreign key, such as a polymorphic C((entity_type, entity_id)) pair; values
    that break rules (allowed values, a pattern, a maximum length, uniqueness), for example rows that would make a
    migration adding a constraint fail; constraints left C(NOT VALID) and expected constraints missing; the
    distribution of a column (C(GROUP BY)); a data snapshot (per table, row count and content checksum) and its
    comparison with an earlier one.
  - The module knows no application's schema - every table, relation and rule is an option (the validate role passes
    its profile's, for example TMI's in C(roles/validate/vars/profiles/tmi.yml)); by default it checks the foreign
    keys and constraints the catalog declares and nothing else.
  - Every finding goes into RV(failed_checks), which a role asserts on; the module itself never fails for a finding.
  - Runs in REPEATABLE READ, READ ONLY transactions that share one exported snapshot, over O(parallel) connections,
    so all figures describe the same moment and nothing can be written. Each relation is one set-based anti-join.
  - Written for this collection because no module of community.postgresql checks data integrity; the checks are
    this collection's own SQL (C(module_utils/integrity.py)), the connections and the shared snapshot psycopg2's.
options:
  schema:
    description: Schema of the tables.
    type: str
    default: public
    version_added: 0.1.0
  tables:
    description: Tables that must exist; their row counts are returned.
    type: list
    elements: str
    default: []
    version_added: 0.1.0
  expected_columns:
    description:
      - Columns each table must have (one catalog query), as a mapping of table name to column
        list. A missing table or column is a failed check.
    type: dict
    default: {}
    version_added: 0.1.0
  require_tables:
    description:
      - Whether a table of O(expected_columns) that does not exist is a failed check. V(false) checks the columns of
        the tables that exist only (an application profile applied to a database that may not be that application's).
    type: bool
    default: true
    version_added: 0.1.0
  state_table:
    description:
      - golang-migrate's state table (for example C(schema_migrations)) to read the schema version and dirty flag
        from (RV(schema_state)); empty reads none.
      - Like O(history_table) and O(run_lock_table), it is always left out of the comparison with O(compare_to) (empty
        leaves out C(schema_migrations)), since every migration run writes it.
    type: str
    default: ""
    version_added: 0.1.0
  history_table:
    description:
      - The history table of M(tmi.migration.pg_migrate) (in O(schema), or C(schema.table)), always left out of the
        comparison with O(compare_to). Empty for none.
    type: str
    default: tmi_migration_history
    version_added: 0.1.0
  run_lock_table:
    description:
      - The run lock table of M(tmi.migration.pg_run_lock) (in O(schema), or C(schema.table)), always left out of the
        comparison with O(compare_to). Empty for none.
    type: str
    default: tmi_migration_lock
    version_added: 0.1.0
  foreign_keys:
    description: Look for orphans of every foreign key declared in O(schema).
    type: bool
    default: true
    version_added: 0.1.0
  logical_relations:
    description:
      - Relations without a foreign key. Each has C(table), C(column), C(ref_table), optionally C(ref_column)
        (default C(id)), C(filter_column) and C(filter_value) (only rows where it equals the value), C(name), and for
        ids kept in a JSON array of the referenced table C(ref_jsonb_array) and C(ref_jsonb_key).
      - A relation whose tables do not exist is skipped.
    type: list
    elements: dict
    default: []
    version_added: 0.1.0
  value_rules:
    description:
      - Rules on column values. Each has C(table), C(column) and one of C(allowed) (list), C(pattern) (a POSIX
        regular expression the value must match) or C(max_length). Rules of a table that does not exist are skipped.
    type: list
    elements: dict
    default: []
    version_added: 0.1.0
  unique_rules:
    description:
      - Column sets that must be unique, each C(table) and C(columns).
    type: list
    elements: dict
    default: []
    version_added: 0.1.0
  expected_constraints:
    description: Constraints that must exist and be validated, each C(table) and C(name).
    type: list
    elements: dict
    default: []
    version_added: 0.1.0
  distribution:
    description: Columns whose value counts are returned, each C(table) and C(column).
    type: list
    elements: dict
    default: []
    version_added: 0.1.0
  snapshot:
    description: Take a data snapshot (row count and content checksum per table).
    type: bool
    default: false
    version_added: 0.1.0
  snapshot_tables:
    description: Tables (C(schema.table)) of the snapshot; default all user tables.
    type: list
    elements: str
    version_added: 0.1.0
  compare_to:
    description: An earlier snapshot (for example a backup's figures); every difference is a failed check.
    type: dict
    version_added: 0.1.0
  changes:
    description:
      - What the applied files do to each table, as M(tmi.migration.pg_migrate) returns it in C(analysis.tables).
      - With O(snapshot), the figures of a table whose columns the files add, drop, retype or rename cover only the
        columns that must keep their values (listed in the figures as C(columns)).
      - With O(compare_to), each table is judged by what its files may do to it instead of being required to equal
        the baseline (see RV(data_check)); without it every difference is a failed check.
    type: dict
    version_added: 0.1.0
  unknown:
    description:
      - Statements of the applied files whose effect the analysis cannot read (C(analysis.unknown)), named in the
        message of a change no statement explains. Such a change still fails unless declared in O(allow_changes).
    type: list
    elements: dict
    default: []
    version_added: 0.1.0
  allow_changes:
    description:
      - Tables an operator declares may change beyond what the files say, each a C(schema.table) name (any change)
        or C({table, changes}) with C(changes) a list of V(write) and V(delete). A declared change is a warning.
    type: list
    elements: raw
    default: []
    version_added: 0.1.0
  rehearsed:
    description:
      - With O(changes), the figures the rehearsal on the backup's verified copy ended with after the up files
        (M(tmi.migration.pg_rehearse)'s RV(tmi.migration.pg_rehearse#module:figures_after_up)). A table whose
        O(compare_to) figures equal O(rehearsed_from)'s - production had no write to it since the backup - must end
        with as many rows; otherwise a C(differs_from_rehearsal) warning names it (content is not compared - now()
        and triggers that stamp a row make it differ by nature).
    type: dict
    default: {}
    version_added: 0.1.0
  rehearsed_from:
    description: The figures the rehearsal started from (the backup's, C(backup_result.figures)).
    type: dict
    default: {}
    version_added: 0.1.0
  compare_ignore:
    description:
      - Tables (C(schema.table)) left out of the comparison besides the bookkeeping tables (O(state_table),
        O(history_table), O(run_lock_table)), which are always left out.
    type: list
    elements: str
    default: []
    version_added: 0.1.0
  samples:
    description: How many sample ids to return per finding.
    type: int
    default: 5
    version_added: 0.1.0
  parallel:
    description:
      - Connections to spread the scans over, like C(vacuumdb --jobs). The largest scans start first.
      - Raise it to the number of cores the server can spare.
    type: int
    default: 2
    version_added: 0.1.0
  workers_per_scan:
    description:
      - PostgreSQL parallel workers each scan may use (C(max_parallel_workers_per_gather) of these sessions).
      - The O(parallel) connections are already the parallelism, and workers on top of them compete for the same
        cores, so the default is V(0); a negative value keeps the server's setting.
    type: int
    default: 0
    version_added: 0.1.0
attributes:
  check_mode:
    support: full
    description: The module only reads; check mode runs the same checks.
extends_documentation_fragment:
  - community.postgresql.postgres
  - tmi.migration.postgres
  - tmi.migration.progress
author:
  - tmi.migration maintainers (@tmi-migration)
"""

EXAMPLES = r"""
- name: Check the TMI data after the migration and compare with the backup's figures
  tmi.migration.pg_integrity_check:
    login_db: tmi
    snapshot: true
    compare_to: "{{ backup_result.figures }}"
    expected_constraints:
      - {table: metadata, name: metadata_entity_type_check}
  register: integrity

- name: Stop on any finding
  ansible.builtin.assert:
    that: integrity.failed_checks | length == 0
    fail_msg: "{{ integrity.failed_checks | map(attribute='message') | join('; ') }}"
"""

RETURN = r"""
row_counts:
  description: Rows per table of O(tables).
  returned: always
  type: dict
  sample: {"orders": 230000}
orphans:
  description: Every relation checked, with the orphan count and sample ids of orphaned rows.
  returned: always
  type: list
  elements: dict
  sample: [{"relation": "orders_customer_id_fkey", "table": "orders", "ref_table": "customers", "count": 0,
            "samples": []}]
invalid_values:
  description: Value and uniqueness rules with the rows that break them.
  returned: always
  type: list
  elements: dict
not_valid_constraints:
  description: Constraints of O(schema) that are not validated.
  returned: always
  type: list
  elements: dict
distribution:
  description: Value counts per requested column, as C({"table.column" -> {value -> count}}).
  returned: always
  type: dict
snapshot:
  description: Per table, C(rows) and C(checksum).
  returned: when O(snapshot=true)
  type: dict
data_check:
  description:
    - Per table, with O(compare_to) and O(changes) - C(rows_before), C(rows_after), C(content) (unchanged, changed,
      new, dropped), C(does) (what the files do to it), C(by) (which file and line), C(verdict) (ok, warning, error)
      and C(message).
  returned: when O(compare_to) and O(changes) are given
  type: list
  elements: dict
  sample: [{"table": "public.orders", "rows_before": 6000, "rows_after": 6000, "content": "changed",
            "does": ["write"], "by": "000018 line 1: updates rows", "verdict": "ok", "message": ""}]
differences:
  description: Differences from O(compare_to) (with O(changes), the findings of the data check).
  returned: when O(compare_to) is given
  type: list
  elements: dict
schema_state:
  description: C(version) (null without migrations) and C(dirty) from O(state_table).
  returned: when O(state_table) is set
  type: dict
  sample: {"version": 17, "dirty": false}
failed_checks:
  description:
    - Every finding, each with C(check), C(message), C(severity) (V(error) or V(warning)) and details.
  returned: always
  type: list
  elements: dict
  sample: [{"check": "orphans", "message": "orders.customer_id: 3 rows reference no customers row"}]
"""

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_native
from ansible_collections.tmi.migration.plugins.module_utils import bookkeeping, progress
from ansible_collections.tmi.migration.plugins.module_utils.integrity import Checker
from ansible_collections.tmi.migration.plugins.module_utils.postgres import argument_spec, connector
from ansible_collections.tmi.migration.plugins.module_utils.readonly import SnapshotPool

try:
    import psycopg2
except ImportError:  # connect() reports it
    psycopg2 = None

APPLICATION_NAME = "tmi.migration.pg_integrity_check"


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(
            schema=dict(type="str", default="public"),
            tables=dict(type="list", elements="str", default=[]),
            foreign_keys=dict(type="bool", default=True),
            logical_relations=dict(type="list", elements="dict", default=[]),
            value_rules=dict(type="list", elements="dict", default=[]),
            unique_rules=dict(type="list", elements="dict", default=[]),
            expected_constraints=dict(type="list", elements="dict", default=[]),
            expected_columns=dict(type="dict", default={}),
            require_tables=dict(type="bool", default=True),
            state_table=dict(type="str", default=""),
            history_table=dict(type="str", default=bookkeeping.HISTORY_TABLE),
            run_lock_table=dict(type="str", default=bookkeeping.RUN_LOCK_TABLE),
            distribution=dict(type="list", elements="dict", default=[]),
            snapshot=dict(type="bool", default=False),
            snapshot_tables=dict(type="list", elements="str"),
            compare_to=dict(type="dict"),
            compare_ignore=dict(type="list", elements="str", default=[]),
            samples=dict(type="int", default=5),
            parallel=dict(type="int", default=2),
            workers_per_scan=dict(type="int", default=0),
            changes=dict(type="dict"),
            unknown=dict(type="list", elements="dict", default=[]),
            allow_changes=dict(type="list", elements="raw", default=[]),
            rehearsed=dict(type="dict", default={}),
            rehearsed_from=dict(type="dict", default={}),
            **progress.OPTIONS
        ),
        supports_check_mode=True,
    )
    report = progress.Progress.of_module(module)
    workers = module.params["workers_per_scan"]
    pool = SnapshotPool(connector(module, APPLICATION_NAME), module.params["parallel"],
                        None if workers < 0 else workers)
    pool.progress = report
    try:
        with report.step("scans", dbname=pool.connections[0].info.dbname, application_name=APPLICATION_NAME):
            result = Checker(pool, module.params).run()
    except (psycopg2.Error, KeyError, ValueError) as error:
        module.fail_json(msg="Integrity check could not run: %s. Check the table and column names in the options."
                             % to_native(error).strip())
    finally:
        pool.close()
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
