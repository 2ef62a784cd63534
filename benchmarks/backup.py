"""Benchmark: the backup role against the runbook's backup and verification commands.

    .venv/bin/python benchmarks/backup.py [--scale 23000] [--repeat 1] [--out DIR]

--scale is the number of threat models (23000: about 1 million rows). On one generated
TMI database, alternating, best of --repeat:

* runbook (step 1): ``pg_dump > backup.sql``, then ``createdb tmi_test`` and
  ``psql tmi_test < backup.sql`` as the verification, and ``redis-cli --rdb``;
* role: benchmarks/playbooks/backup.yml, the backup role as migrate.yml runs it
  (ansible-playbook start-up included): pg_dump in directory format with parallel jobs
  inside an exported snapshot, per-table row counts and checksums in that same snapshot,
  a sha256 manifest, a parallel restore into a scratch database compared table by table
  with the figures, Redis settings and RDB. It verifies more than the runbook: the
  runbook's psql restore proves the SQL loads, not that the data equals the source.

A third line is the floor for any parallel backup on this machine: the role's own dump
and scratch restore commands run bare (``pg_dump --format=directory --jobs=2 --compress=1``,
``createdb``, ``pg_restore --jobs=2``), verifying nothing, without Ansible.

--one-figure-connection also runs the role with backup_figures_jobs=1 in each round (the
dump snapshot's figures on one connection instead of backup_jobs), to show which is faster
on this machine.

Target: the role (backup and verification) at most 1.3x the floor at one million rows, 1.15x
at ten million (--scale 230000). Results: a table, backup-<scale>.json, and backup-<scale>.png.
"""

from __future__ import annotations

import shutil
import sys

from benchlib import (
    COMPRESS,
    JOBS,
    Bench,
    bars,
    best,
    exit_status,
    parser,
    profile_env,
    scaled_target,
    table,
    task_seconds,
)


def runbook(bench: Bench, round_no: int) -> dict:
    """The runbook's three commands, timed one by one (the scratch database is dropped afterwards)."""
    dump = bench.work / f"tmi_backup_{round_no}.sql"
    rdb = bench.work / f"redis_backup_{round_no}.rdb"
    seconds = {
        "pg_dump > backup.sql": bench.command([bench.tool("pg_dump"), "-d", "tmi", "-f", str(dump)]),
        "createdb + psql < backup.sql": (
            bench.command([bench.tool("createdb"), "tmi_test"]) + bench.psql_file(dump, "tmi_test")),
        "redis-cli --rdb": bench.redis_rdb(rdb),
    }
    bench.sql('DROP DATABASE "tmi_test"')
    dump.unlink()
    return seconds


def bare_parallel(bench: Bench, round_no: int) -> float:
    """The role's dump and scratch restore commands alone; seconds."""
    dump = bench.work / f"bare_{round_no}.dump"
    seconds = bench.dump_directory("tmi", dump) + bench.restore_directory(dump, "tmi_scratch")
    bench.sql('DROP DATABASE "tmi_scratch"')
    shutil.rmtree(dump)
    return seconds


def main() -> int:
    cli = parser(__doc__, scale=23000)
    cli.add_argument("--one-figure-connection", action="store_true",
                     help="also run the role with backup_figures_jobs=1 in each round")
    args = cli.parse_args()
    target = scaled_target(args.scale, 1.3, 1.15)
    with Bench("backup", args) as bench:
        rows = bench.database("tmi", 15)
        runbook_rounds, role_times, bare_times, one_connection_times, role_tasks = [], [], [], [], []
        for round_no in range(args.repeat):
            runbook_rounds.append(runbook(bench, round_no))
            bare_times.append(bare_parallel(bench, round_no))
            role_times.append(bench.playbook("benchmarks/playbooks/backup.yml", "tmi", "-e",
                                             f"bench_run_id=bench-{round_no}", env=profile_env()))
            role_tasks.append(task_seconds(bench.output))
            if args.one_figure_connection:
                one_connection_times.append(bench.playbook("benchmarks/playbooks/backup.yml", "tmi", "-e",
                                                           f"bench_run_id=bench-one-{round_no}",
                                                           "-e", "backup_figures_jobs=1", env=profile_env()))
        runbook_times = [sum(r.values()) for r in runbook_rounds]
        fastest = runbook_rounds[runbook_times.index(best(runbook_times))]
        ratio = best(role_times) / best(bare_times)
        result = {"runbook_seconds": [round(t, 3) for t in runbook_times],
                  "runbook_steps": {k: round(v, 3) for k, v in fastest.items()},
                  "role_seconds": [round(t, 3) for t in role_times],
                  "role_tasks": role_tasks[role_times.index(best(role_times))],
                  "bare_parallel_seconds": [round(t, 3) for t in bare_times],
                  "bare_parallel_ratio": round(best(bare_times) / best(runbook_times), 3),
                  "runbook_ratio": round(best(role_times) / best(runbook_times), 3),
                  "ratio": round(ratio, 3), "target_ratio": target, "met": ratio <= target,
                  "jobs": JOBS, "compress": COMPRESS}
        if one_connection_times:
            result["one_figure_connection_seconds"] = [round(t, 3) for t in one_connection_times]

        def plot(plt):
            labels = [f"runbook: {step}" for step in fastest] + ["runbook, in all", "bare parallel dump + restore",
                                                                 "backup role, in all"]
            values = [*fastest.values(), best(runbook_times), best(bare_times), best(role_times)]
            if one_connection_times:
                labels.append("backup role, figures on 1 connection")
                values.append(best(one_connection_times))
            totals = ["#4c72b0", "#8c8c8c", "#dd8452", "#e8b08e"]
            colors = ["#c6dbef"] * len(fastest) + totals[: len(values) - len(fastest)]
            return bars(plt, f"Backup and verification, {rows:,} rows (role / floor {ratio:.2f}, target {target})",
                        labels, values, colors)

        json_path, png_path = bench.save(result, plot)
    steps = [[f"runbook: {step}", seconds] for step, seconds in fastest.items()]
    one = [["backup role, figures on one connection", best(one_connection_times)]] if one_connection_times else []
    print(table(["", "seconds"], [*steps, ["runbook, in all", best(runbook_times)],
                                  ["bare parallel dump + restore (floor, verifies nothing)", best(bare_times)],
                                  ["backup role (verified restore included)", best(role_times)], *one,
                                  ["ratio role / runbook", best(role_times) / best(runbook_times)],
                                  [f"ratio role / floor (target {target})", ratio]]))
    print(f"results: {json_path}, {png_path.name}")
    return exit_status(ratio <= target)


if __name__ == "__main__":
    sys.exit(main())
