#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, tmi.migration maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: pg_backup
short_description: Dump a PostgreSQL database with per-table figures taken in the dump's own snapshot
version_added: 0.1.0
description:
  - Exports a snapshot (C(pg_export_snapshot())) in a REPEATABLE READ transaction, runs C(pg_dump --snapshot) in
    directory format with parallel jobs against exactly that snapshot, and computes in the same snapshot each table's
    row count and order-independent content checksum. The figures therefore describe exactly the data in the dump,
    even while the application keeps writing.
  - Writes C(manifest.json) beside the dump with the figures, the sha256 and size of every file of the dump, the
    server and pg_dump versions and the database's encoding and locale, all files C(0600) in C(0700) directories.
  - Checks before writing anything that pg_dump exists and is not older than the server, that O(dest) is writable,
    and that it has O(min_free_space_factor) times the database size free.
  - Written for this collection because M(community.postgresql.postgresql_db) (C(state=dump)) can neither dump inside
    an exported snapshot nor compute figures of that snapshot. The password reaches pg_dump through a temporary
    C(0600) pgpass file, never through the command line or the environment.
  - Idempotent per O(dest) - when O(dest) already holds a complete backup (its manifest), nothing is dumped again.
options:
  dest:
    description: Directory of this backup (for example C(<backup_dir>/<db>/<run id>)); must exist and be writable.
    type: path
    required: true
    version_added: 0.1.0
  pg_bin_dir:
    description: Directory of C(pg_dump); empty uses C(PATH).
    type: path
    default: ""
    version_added: 0.1.0
  jobs:
    description: Parallel pg_dump jobs (directory format).
    type: int
    default: 2
    version_added: 0.1.0
  figures_jobs:
    description:
      - Connections that compute the figures while pg_dump runs, all in the dump's snapshot, the largest tables
        first. C(0) uses as many as O(jobs).
      - They share the cores with pg_dump's jobs (two connections were a little faster than one on two cores with
        two jobs, docs/benchmarks.md, section 7).
      - The dump holds O(figures_jobs) + O(jobs) + 1 connections to the database (and one more for progress lines),
        which a connection pool in front of it must allow.
    type: int
    default: 0
    version_added: 0.1.0
  compress:
    description: Compression level of the dump, 0 (none) to 9.
    type: int
    default: 1
    version_added: 0.1.0
  min_free_space_factor:
    description: Free space needed at O(dest), as a multiple of the database size (the runbook asks for 25% extra).
    type: float
    default: 1.25
    version_added: 0.1.0
  run_id:
    description: Run identifier recorded in the manifest.
    type: str
    default: ""
    version_added: 0.1.0
attributes:
  check_mode:
    support: full
    description:
      - Checks the tools, space and permissions and reports the paths; dumps nothing. A backup directory that does not
        exist yet is judged by its nearest existing parent, which the backup role would create it in.
extends_documentation_fragment:
  - community.postgresql.postgres
  - tmi.migration.postgres
  - tmi.migration.progress
author:
  - tmi.migration maintainers (@tmi-migration)
"""

EXAMPLES = r"""
- name: Back up the TMI database before migrating
  tmi.migration.pg_backup:
    dest: /var/backups/tmi-migration/tmi/20261124T010000Z-1
    pg_bin_dir: /usr/lib/postgresql/15/bin
    jobs: 4
    login_host: db.example.internal
    login_user: tmi_migrator
    login_password: "{{ vault_tmi_db_password }}"
    login_db: tmi
"""

RETURN = r"""
manifest:
  description: Path of the manifest written beside the dump.
  returned: always
  type: str
  sample: /var/backups/tmi-migration/tmi/20261124T010000Z-1/manifest.json
dump:
  description: Path of the dump directory (pg_dump directory format).
  returned: always
  type: str
database_size:
  description: Size of the database in bytes before the dump.
  returned: always
  type: int
dump_size:
  description: Total size of the dump files in bytes.
  returned: when a dump exists
  type: int
figures:
  description:
    - Per table (C(schema.table)), the row count and content checksum taken in the dump's snapshot, and the
      checksum's C(algorithm) (C(hash64) on PostgreSQL 14 and later, else C(md5)).
    - Figures that name no algorithm (written by earlier versions of this collection) are C(md5) figures, and
      M(tmi.migration.pg_restore_backup) verifies them as such.
  returned: when a dump exists
  type: dict
  sample: {"public.threats": {"rows": 230000, "checksum": "-123456789012345", "algorithm": "hash64"}}
files:
  description: Number of files in the dump.
  returned: when a dump exists
  type: int
duration:
  description: Seconds spent dumping and computing figures.
  returned: when a dump was made
  type: float
"""

import datetime
import json
import os
import pwd
import shutil
import time
import traceback

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_native
from ansible_collections.tmi.migration.plugins.module_utils import pgtools, progress
from ansible_collections.tmi.migration.plugins.module_utils.migrations import file_sha256
from ansible_collections.tmi.migration.plugins.module_utils.postgres import argument_spec, connect, connector
from ansible_collections.tmi.migration.plugins.module_utils.readonly import SnapshotPool, pool_figures

MANIFEST = "manifest.json"
DUMP_DIR = "db.dump"
APPLICATION_NAME = "tmi.migration.pg_backup"


def dump_files(dump, report=progress.NONE):
    """{relative path: {size, sha256}} of every file of a dump directory, made 0600 in 0700 directories
    (``report`` counts the bytes hashed)."""
    paths = []
    for root, dirs, names in os.walk(dump):
        os.chmod(root, 0o700)
        for name in sorted(names):
            path = os.path.join(root, name)
            os.chmod(path, 0o600)
            paths.append((path, os.path.getsize(path)))
        dirs.sort()
    files, done, total = {}, 0, sum(size for _path, size in paths)
    for path, size in paths:
        files[os.path.relpath(path, dump)] = dict(size=size, sha256=file_sha256(path))
        done += size
        report.count(done, total, "bytes")
    return files


def write_manifest(path, manifest):
    partial = path + ".partial"
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        json.dump(manifest, handle, indent=2, sort_keys=True)
    os.rename(partial, path)  # a manifest exists only for a complete backup


def nearest_directory(path):
    """path, or its nearest ancestor that exists (where check mode judges permissions and space)."""
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(
            dest=dict(type="path", required=True),
            pg_bin_dir=dict(type="path", default=""),
            jobs=dict(type="int", default=2),
            figures_jobs=dict(type="int", default=0),
            compress=dict(type="int", default=1),
            min_free_space_factor=dict(type="float", default=1.25),
            run_id=dict(type="str", default=""),
            **progress.OPTIONS
        ),
        supports_check_mode=True,
    )
    params = module.params
    report = progress.Progress.of_module(module)
    dest = params["dest"]
    manifest_path = os.path.join(dest, MANIFEST)
    dump = os.path.join(dest, DUMP_DIR)
    if not 0 <= params["compress"] <= 9 or params["jobs"] < 1 or params["figures_jobs"] < 0:
        module.fail_json(msg="compress must be 0 to 9, jobs 1 or more and figures_jobs 0 or more.")
    # Check mode creates no directory: the one the role would create must be creatable.
    writable = nearest_directory(dest) if module.check_mode else dest
    if not os.path.isdir(writable) or not os.access(writable, os.W_OK | os.X_OK):
        module.fail_json(msg="Backup directory %s does not exist or is not writable by user %s. Create it (the backup "
                             "role does) or choose another backup_dir. Nothing was written."
                             % (writable, pwd.getpwuid(os.geteuid()).pw_name))
    pg_dump = pgtools.find_binary(module, params["pg_bin_dir"], "pg_dump")

    conn = connect(module, APPLICATION_NAME)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT current_database(), current_setting('server_version_num'), "
                        "current_setting('server_version'), pg_database_size(current_database()), "
                        "pg_encoding_to_char(encoding), datcollate, datctype FROM pg_database "
                        "WHERE datname = current_database()")
            database, version_num, version, size, encoding, collate, ctype = cur.fetchone()
        conn.rollback()
        result = dict(changed=False, manifest=manifest_path, dump=dump, database_size=int(size))
        if os.path.exists(manifest_path):
            with open(manifest_path) as handle:
                existing = json.load(handle)
            result.update(figures=existing["figures"], dump_size=existing["dump_size"], files=len(existing["files"]))
            module.exit_json(**result)
        if os.path.exists(dump):
            module.fail_json(msg="%s exists but has no manifest: an earlier dump into this directory did not finish. "
                                 "Remove %s or use a new run id." % (dump, dump), **result)
        client = pgtools.check_client_version(module, pg_dump, version_num)
        free = shutil.disk_usage(writable).free
        needed = int(size * params["min_free_space_factor"])
        if free < needed:
            module.fail_json(msg="Not enough free space for the backup at %s: %d MiB free, %d MiB needed (database "
                                 "%d MiB x %.2f). Free space or choose another backup_dir. Nothing was written."
                                 % (dest, free // 2**20, needed // 2**20, size // 2**20,
                                    params["min_free_space_factor"]), **result)
        result["changed"] = True
        if module.check_mode:
            module.exit_json(**result)

        started = time.monotonic()
        conn.close()  # the dump needs the pool's connections and pg_dump's only
        # The pool's first connection exports the snapshot pg_dump reads; the others import it.
        pool = SnapshotPool(connector(module, APPLICATION_NAME), params["figures_jobs"] or params["jobs"],
                            workers_per_scan=0)
        try:
            with pgtools.PasswordFile(module) as env:
                argv = [pg_dump, "--format=directory", "--jobs=%d" % params["jobs"],
                        "--compress=%d" % params["compress"], "--snapshot=%s" % pool.snapshot_id, "--file", dump,
                        "--dbname", pgtools.conninfo(module, database, APPLICATION_NAME)]
                # pg_dump's sessions and the pool's (the figures) are watched; the dump writes one file per table.
                labels = dict((figures_conn.get_backend_pid(), "figures") for figures_conn in pool.connections)
                pool.progress = report
                with report.step("dump", dbname=database, application_name=APPLICATION_NAME, labels=labels,
                                 directory=dump):
                    process = pgtools.start(argv, env)
                    # The figures are computed while pg_dump runs, in the very snapshot it reads.
                    try:
                        figures = pool_figures(pool)
                    finally:
                        _stdout, stderr = process.communicate()
        finally:
            pool.close()  # ends the snapshot only after pg_dump is done
        if process.returncode != 0:
            shutil.rmtree(dump, ignore_errors=True)
            module.fail_json(msg="pg_dump failed: %s" % stderr.strip(), **result)
        with report.step("sha256 of the dump files"):
            files = dump_files(dump, report)
        manifest = dict(
            format=1, tool="tmi.migration.pg_backup", run_id=params["run_id"], database=database,
            server_version=version, server_version_num=int(version_num), pg_dump_major=client,
            encoding=encoding, lc_collate=collate, lc_ctype=ctype, database_size=int(size),
            created_at=datetime.datetime.now(datetime.timezone.utc).isoformat(), dump=DUMP_DIR,
            dump_format="directory", files=files, dump_size=sum(f["size"] for f in files.values()),
            figures=figures, duration=round(time.monotonic() - started, 3))
        write_manifest(manifest_path, manifest)
        result.update(figures=figures, dump_size=manifest["dump_size"], files=len(files), duration=manifest["duration"])
        module.exit_json(**result)
    except Exception as error:  # noqa: BLE001 - any failure must not leave a half backup that looks complete
        if not os.path.exists(manifest_path):
            shutil.rmtree(dump, ignore_errors=True)
        module.fail_json(msg="Backup failed: %s" % to_native(error), exception=traceback.format_exc())
    finally:
        conn.close()


if __name__ == "__main__":
    main()
