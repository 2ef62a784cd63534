"""Benchmark: write availability while migrations 000016 and 000017 run under a client load.

    .venv/bin/python benchmarks/online_migration.py [--scale 23000] [--rate 200] [--clients 8] [--out DIR]

--scale is the number of threat models (10 threats each: 100000 gives 1 million threats
and about 4.4 million rows in all). The script generates a TMI database at version 15,
copies it, and on each copy in turn runs pgbench with TMI-shaped transactions at a fixed
rate (reads of a threat model's threats and of a threat's metadata, a threat update with a
new threat, a metadata insert) while the database goes to version 16 and then 17:

* runbook: the migration files as written, each applied by psql in one transaction (what
  golang-migrate does): plain CREATE INDEX, which blocks writes to the table it indexes;
* collection: benchmarks/playbooks/migrate_phase.yml, the migrate role as migrate.yml runs it
  (online index builds, lock_timeout with retries).

From pgbench's per-transaction log it reports, per way and per migration window: the
longest latency any client transaction saw (measured from its scheduled start, so waiting
behind a lock counts in full), p99 and median latency, transactions and failed
transactions. Targets for the collection: longest stall under 1 s, no failed transaction.
Results: a table, online_migration-<scale>.json, and online_migration-<scale>.png (the
latency timeline of both ways, migration windows shaded).
"""

from __future__ import annotations

import sys
import time

from benchlib import PGBENCH_IDS_SQL, Bench, Pgbench, exit_status, parser, pgbench_figures, table

WARMUP, SETTLE = 5.0, 5.0


def migrate_collection(bench: Bench, dbname: str, version: int) -> None:
    bench.playbook("benchmarks/playbooks/migrate_phase.yml", dbname, "-e", f"migrate_target_version={version}")


def run_way(bench: Bench, args, way: str, dbname: str, migrate) -> dict:
    """pgbench at a fixed rate throughout both migrations; the windows and the per-transaction log."""
    load = Pgbench(bench, dbname, bench.work / way, args.rate, args.clients).start()
    windows = []
    try:
        time.sleep(WARMUP)
        for version in (16, 17):
            started = time.time()
            migrate(bench, dbname, version)
            windows.append({"migration": version, "start": started, "end": time.time()})
        time.sleep(SETTLE)
    finally:
        done = load.stop()
    return {"windows": windows, **done}


def figures(run: dict, start: float, end: float) -> dict:
    return pgbench_figures(run["transactions"], start, end)


def main() -> int:
    p = parser(__doc__, scale=100000)
    p.add_argument("--rate", type=int, default=200, help="client transactions per second in all (default 200)")
    p.add_argument("--clients", type=int, default=8, help="pgbench clients (default 8)")
    args = p.parse_args()
    with Bench("online_migration", args) as bench:
        rows = bench.database("tmi_runbook", 15)
        bench.sql(PGBENCH_IDS_SQL, "tmi_runbook")
        threats = bench.sql("SELECT count(*) FROM threats", "tmi_runbook")[0][0]
        bench.clone("tmi_runbook", "tmi_collection")
        runs = {"runbook": run_way(bench, args, "runbook", "tmi_runbook", Bench.psql_migrate),
                "collection": run_way(bench, args, "collection", "tmi_collection", migrate_collection)}
        result = {"threats": threats, "rate": args.rate, "clients": args.clients, "ways": {}}
        for way, run in runs.items():
            windows = run["windows"]
            result["ways"][way] = {
                "whole_migration": figures(run, windows[0]["start"], windows[-1]["end"]),
                **{f"migration_{w['migration']}": figures(run, w["start"], w["end"]) for w in windows},
                "aborted_clients": run["aborted_clients"],
            }
        collection = result["ways"]["collection"]["whole_migration"]
        met = (collection["max_ms"] < 1000 and collection["failed"] == 0
               and not result["ways"]["collection"]["aborted_clients"])
        result["target"] = {"max_stall_ms": 1000, "failed": 0, "met": met}

        def plot(plt):
            return timeline(plt, runs, threats)

        json_path, png_path = bench.save(result, plot)
    lines = []
    for way, data in result["ways"].items():
        for window in ("migration_16", "migration_17", "whole_migration"):
            f = data[window]
            lines.append([way, window.replace("_", " "), f["seconds"], f["transactions"], f["failed"],
                          f["max_ms"], f["p99_ms"], f["p50_ms"]])
        lines.append([way, "aborted clients", "", "", len(data["aborted_clients"]), "", "", ""])
    print(f"{rows:,} rows, {threats:,} threats; pgbench {args.clients} clients at {args.rate} tx/s")
    print(table(["way", "window", "seconds", "transactions", "failed", "max (ms)", "p99 (ms)", "p50 (ms)"], lines))
    print(f"target (collection: longest stall < 1 s, no failed transaction): {'met' if met else 'missed'}")
    print(f"results: {json_path}, {png_path.name}")
    return exit_status(met)


def timeline(plt, runs: dict, threats: int):
    figure, axes = plt.subplots(len(runs), 1, figsize=(10, 3.2 * len(runs)), sharey=True)
    for ax, (way, run) in zip(axes, runs.items(), strict=True):
        origin = run["windows"][0]["start"]
        ok = [(s - origin, lat * 1000) for s, lat, failed in run["transactions"] if not failed]
        bad = [s - origin for s, _lat, failed in run["transactions"] if failed]
        ax.scatter([x for x, _y in ok], [y for _x, y in ok], s=2, alpha=0.5, label="transaction latency")
        if bad:
            ax.scatter(bad, [1] * len(bad), s=12, marker="x", color="red", label="failed")
        for w, color in zip(run["windows"], ("#f6d7a7", "#c7e9c0"), strict=True):
            ax.axvspan(w["start"] - origin, w["end"] - origin, color=color, alpha=0.6,
                       label=f"migration {w['migration']:06d}")
        ax.axhline(1000, color="grey", linestyle="--", linewidth=1, label="1 s")
        ax.set_yscale("log")
        ax.set_ylabel("latency (ms)")
        ax.set_title(f"{way}: pgbench latency while migrating ({threats:,} threats)")
        ax.legend(loc="upper right", fontsize=7)
    axes[-1].set_xlabel("seconds since the first migration started")
    figure.tight_layout()
    return figure


if __name__ == "__main__":
    sys.exit(main())
