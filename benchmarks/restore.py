"""Benchmark: emergency restore against bare pg_restore, and the planned rollback, on one database.

    .venv/bin/python benchmarks/restore.py [--scale 23000] [--repeat 1] [--out DIR]

--scale is the number of threat models (23000: about 1 million rows). The script generates
a TMI database at version 15 and runs migrate.yml on it (application phase off), which
takes the verified backup and migrates to 17. Then, on that database and that backup:

* planned rollback: rollback.yml with tmi_rollback_mode=planned (down migrations to 15,
  every table compared with the backup's figures, Redis settings restored);
* emergency restore: benchmarks/playbooks/restore.yml, the backup role's restore entry
  point (restore beside the live database, compare every table with the backup's figures,
  swap names, keep the old database), ansible-playbook start-up included;
* bare: ``createdb`` and ``pg_restore --jobs`` of the same dump directory with the same job
  count, which verifies nothing and leaves the swap to the operator.

Target: the emergency restore at most 1.10x bare pg_restore. Results: a table,
restore-<scale>.json, and restore-<scale>.png.
"""

from __future__ import annotations

import sys

from benchlib import JOBS, Bench, bars, best, exit_status, parser, profile_env, table, task_seconds


def main() -> int:
    args = parser(__doc__, scale=23000).parse_args()
    with Bench("restore", args) as bench:
        rows = bench.database("tmi", 15)
        migrate_seconds = bench.playbook("playbooks/migrate.yml", "tmi", "-e", "tmi_app_enabled=false",
                                         "-e", "tmi_run_id=bench")
        dump = bench.work / "backups" / "tmi" / "bench" / "db.dump"
        planned = bench.playbook("playbooks/rollback.yml", "tmi", "-e", "tmi_app_enabled=false",
                                 "-e", "tmi_rollback_of=bench", "-e", "tmi_rollback_mode=planned")
        version = bench.sql("SELECT version FROM schema_migrations", "tmi")[0][0]
        if version != 15:
            raise SystemExit(f"the planned rollback left the database at version {version}, not 15")
        restore_times, bare_times, restore_tasks = [], [], []
        for round_no in range(args.repeat):
            restore_times.append(bench.playbook("benchmarks/playbooks/restore.yml", "tmi",
                                                "-e", "backup_restore_run_id=bench",
                                                "-e", f"bench_run_id=restore{round_no}",
                                                "-e", "backup_restore_drop_old=true", env=profile_env()))
            restore_tasks.append(task_seconds(bench.output))
            bench.sql('DROP DATABASE IF EXISTS "tmi_bare"')
            bare_times.append(bench.restore_directory(dump, "tmi_bare"))
        overhead = best(restore_times) / best(bare_times)
        result = {"migrate_seconds": round(migrate_seconds, 3), "planned_rollback_seconds": round(planned, 3),
                  "restore_seconds": [round(t, 3) for t in restore_times],
                  "restore_tasks": restore_tasks[restore_times.index(best(restore_times))],
                  "bare_pg_restore_seconds": [round(t, 3) for t in bare_times], "jobs": JOBS,
                  "ratio": round(overhead, 3), "target_ratio": 1.1, "met": overhead <= 1.1}

        def plot(plt):
            return bars(plt, f"Restore of one backup, {rows:,} rows (emergency / bare = {overhead:.2f}, target 1.10)",
                        [f"bare createdb + pg_restore --jobs={JOBS}", "emergency restore entry point",
                         "planned rollback (rollback.yml)"],
                        [best(bare_times), best(restore_times), planned], ["#4c72b0", "#dd8452", "#55a868"])

        json_path, png_path = bench.save(result, plot)
    print(table(["", "seconds"], [
        [f"bare createdb + pg_restore --jobs={JOBS}", best(bare_times)],
        ["emergency restore (restore, verify, swap)", best(restore_times)],
        ["ratio emergency / bare (target 1.10)", overhead],
        ["planned rollback (down to 15, data compared)", planned]]))
    print(f"results: {json_path}, {png_path.name}")
    return exit_status(overhead <= 1.1)


if __name__ == "__main__":
    sys.exit(main())
