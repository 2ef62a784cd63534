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

import signal
import subprocess
import sys
import time
from pathlib import Path

from benchlib import Bench, exit_status, parser, table

# isort: split
from ansible_collections.tmi.migration.plugins.modules.api_probe import percentile  # the probe's nearest rank

SETUP = """
CREATE TABLE bench_ids AS
    SELECT row_number() OVER () AS n, threat_model_id AS tm_id, id AS threat_id
    FROM (SELECT threat_model_id, id FROM threats ORDER BY md5(id::text) LIMIT 10000) AS sample;
ALTER TABLE bench_ids ADD PRIMARY KEY (n);
"""

SCRIPTS = {
    # the granular API's list and lookup queries (the runbook's EXPLAIN queries)
    "read": """\\set i random(1, 10000)
SELECT id, name, severity FROM threats WHERE threat_model_id = (SELECT tm_id FROM bench_ids WHERE n = :i)
    ORDER BY created_at DESC LIMIT 20;
SELECT key, value FROM metadata WHERE entity_type = 'threat'
    AND entity_id = (SELECT threat_id FROM bench_ids WHERE n = :i);
""",
    # edit a threat and add one
    "threat": """\\set i random(1, 10000)
BEGIN;
UPDATE threats SET severity = 'High', modified_at = now() WHERE id = (SELECT threat_id FROM bench_ids WHERE n = :i);
INSERT INTO threats (threat_model_id, name, severity) SELECT tm_id, 'bench threat', 'Low' FROM bench_ids WHERE n = :i;
END;
""",
    # add metadata to a threat
    "metadata": """\\set i random(1, 10000)
\\set k random(1, 1000000000)
INSERT INTO metadata (entity_type, entity_id, key, value)
    SELECT 'threat', threat_id, 'bench_' || :k, 'v' FROM bench_ids WHERE n = :i;
""",
}
WEIGHTS = {"read": 6, "threat": 2, "metadata": 2}
WARMUP, SETTLE = 5.0, 5.0


def migrate_collection(bench: Bench, dbname: str, version: int) -> None:
    bench.playbook("benchmarks/playbooks/migrate_phase.yml", dbname, "-e", f"migrate_target_version={version}")


def run_way(bench: Bench, args, way: str, dbname: str, migrate) -> dict:
    """pgbench at a fixed rate throughout both migrations; the windows and the per-transaction log."""
    logdir = bench.work / way
    logdir.mkdir()
    scripts = []
    for name, text in SCRIPTS.items():
        path = logdir / f"{name}.sql"
        path.write_text(text)
        scripts += ["-f", f"{path}@{WEIGHTS[name]}"]
    argv = [bench.tool("pgbench"), "-n", "-c", str(args.clients), "-j", "2", "-R", str(args.rate), "-T", "3600",
            "-l", f"--log-prefix={logdir}/log", "--failures-detailed", *scripts]
    load = subprocess.Popen(argv, env=bench.pg_env(dbname), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    windows = []
    try:
        time.sleep(WARMUP)
        for version in (16, 17):
            started = time.time()
            migrate(bench, dbname, version)
            windows.append({"migration": version, "start": started, "end": time.time()})
        time.sleep(SETTLE)
    finally:
        # pgbench writes no summary when interrupted; everything below comes from its per-transaction log,
        # whose last buffered lines (from the settle period, after the migrations) can be lost.
        load.send_signal(signal.SIGINT)
        _out, err = load.communicate(timeout=30)
    transactions = read_log(logdir)
    aborted = [line for line in err.splitlines() if "aborted" in line]
    return {"windows": windows, "transactions": transactions, "aborted_clients": aborted}


def read_log(logdir: Path) -> list[tuple[float, float, bool]]:
    """(scheduled start, latency in seconds, failed) per transaction, from pgbench's -l files.

    A line is: client transaction_no time script_no epoch_s epoch_us [schedule_lag]; with
    --rate, time runs from the scheduled start; a failed transaction has a word there.
    """
    transactions = []
    for path in logdir.glob("log.*"):
        for line in path.read_text().splitlines():
            fields = line.split()
            if len(fields) < 6:
                continue
            finished = int(fields[4]) + int(fields[5]) / 1e6
            if fields[2].isdigit():
                latency = int(fields[2]) / 1e6
                transactions.append((finished - latency, latency, False))
            else:
                transactions.append((finished, 0.0, True))
    return sorted(transactions)


def figures(run: dict, start: float, end: float) -> dict:
    """Latency figures of the transactions that ran (at least partly) between start and end."""
    inside = [(s, lat, failed) for s, lat, failed in run["transactions"] if s <= end and s + lat >= start]
    latencies = [lat for _s, lat, failed in inside if not failed]
    return {"transactions": len(inside), "failed": sum(1 for *_x, failed in inside if failed),
            "max_ms": round(max(latencies, default=0) * 1000, 1),
            "p99_ms": round(percentile(latencies, 0.99) * 1000, 1) if latencies else 0.0,
            "p50_ms": round(percentile(latencies, 0.50) * 1000, 1) if latencies else 0.0,
            "seconds": round(end - start, 2)}


def main() -> int:
    p = parser(__doc__, scale=100000)
    p.add_argument("--rate", type=int, default=200, help="client transactions per second in all (default 200)")
    p.add_argument("--clients", type=int, default=8, help="pgbench clients (default 8)")
    args = p.parse_args()
    with Bench("online_migration", args) as bench:
        rows = bench.database("tmi_runbook", 15)
        bench.sql(SETUP, "tmi_runbook")
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
