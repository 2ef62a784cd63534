"""Benchmark: the cost of the table figures, md5 of each row's text against the hash64 row hash.

    .venv/bin/python benchmarks/figures.py [--scale 23000] [--repeat 3] [--out DIR]

--scale is the number of threat models; 23000 gives about 1.02 million rows. The script starts
its own throwaway PostgreSQL, builds a TMI database at version 15, then times (best of
--repeat, the two algorithms alternating):

* per table, on one connection: ``snapshot.table_figures`` with ``algorithm=md5`` (what every
  figure cost before, and what a backup made by an earlier version is still verified with) and
  with ``algorithm=hash64`` (the default on PostgreSQL 14+);
* every table, as the backup's verification and the rollback's guard compute them: over
  ``backup_jobs`` (2) connections sharing one snapshot, the largest tables first
  (``readonly.parallel_figures``).

Both algorithms read the same rows; the difference is the hashing. Results: printed as a
table, written to benchmarks/results/figures-<scale>.json with a plot (.png). The exit status
is 3 when hash64 is not cheaper than md5 over the whole database (1 when it cannot run).
"""

from __future__ import annotations

import sys
import time

from benchlib import JOBS, REPO, Bench, best, exit_status, parser, table

# isort: split
from ansible_collections.tmi.migration.plugins.module_utils import readonly, snapshot

ALGORITHMS = ("md5", "hash64")


def timed(call, *args, **kwargs) -> float:
    started = time.monotonic()
    call(*args, **kwargs)
    return time.monotonic() - started


def main() -> int:
    args = parser(__doc__, scale=23000, repeat=3).parse_args()
    with Bench("figures", args) as bench:
        rows = bench.database("tmi", 15)
        conn = bench.pg.connect("tmi")
        conn.autocommit = True
        with conn.cursor() as cur:
            tables = [t for t in snapshot.user_tables(cur) if t[1] != "schema_migrations"]
            sizes = readonly.table_sizes(cur)
        tables.sort(key=lambda t: -sizes.get(t, 0))

        def connect(dbname=None, autocommit=False):
            opened = bench.pg.connect(dbname or "tmi")
            opened.autocommit = autocommit
            return opened

        names = {t: f"{t[0]}.{t[1]}" for t in tables}
        per_table = {names[t]: {a: [] for a in ALGORITHMS} for t in tables}
        whole = {a: [] for a in ALGORITHMS}
        like = {a: {names[t]: {"algorithm": a} for t in tables} for a in ALGORITHMS}
        for _round in range(args.repeat + 1):  # the first round warms the cache and is not kept
            kept = _round > 0
            with conn.cursor() as cur:
                for schema, name in tables:
                    key = names[(schema, name)]
                    for algorithm in ALGORITHMS:
                        spent = timed(snapshot.table_figures, cur, schema, name, algorithm=algorithm)
                        if kept:
                            per_table[key][algorithm].append(spent)
            for algorithm in ALGORITHMS:
                spent = timed(readonly.parallel_figures, connect, JOBS, like=like[algorithm])
                if kept:
                    whole[algorithm].append(spent)
        conn.close()

        result = {
            "tables": {key: {k: [round(s, 3) for s in v] for k, v in times.items()}
                       for key, times in per_table.items()},
            "table_bytes": {names[t]: sizes.get(t, 0) for t in tables},
            "whole_database": {a: [round(s, 3) for s in v] for a, v in whole.items()},
            "connections": JOBS,
            "ratio_md5_to_hash64": round(best(whole["md5"]) / best(whole["hash64"]), 2),
        }

        def plot(plt):
            return bench_plot(plt, rows, per_table, whole)

        json_path, png_path = bench.save(result, plot)
    rows_out = [[key, best(t["md5"]), best(t["hash64"]), best(t["md5"]) / best(t["hash64"])]
                for key, t in per_table.items()]
    rows_out.append([f"every table, {JOBS} connections", best(whole["md5"]), best(whole["hash64"]),
                     result["ratio_md5_to_hash64"]])
    print(table(["table", "md5 (s)", "hash64 (s)", "md5 / hash64"], rows_out))
    print(f"results: {json_path.relative_to(REPO) if json_path.is_relative_to(REPO) else json_path}, {png_path.name}")
    return exit_status(best(whole["hash64"]) < best(whole["md5"]))


def bench_plot(plt, rows, per_table, whole):
    labels = [*per_table, "every table (2 connections)"]
    figure, axes = plt.subplots(figsize=(8, 0.5 * len(labels) + 1.5))
    positions = list(range(len(labels)))[::-1]
    height = 0.4
    series = [("md5 of each row's text", "md5", "#c44e52"), ("hash64 row hash", "hash64", "#4c72b0")]
    for offset, (label, key, color) in zip((height / 2, -height / 2), series, strict=True):
        values = [best(per_table[t][key]) for t in per_table] + [best(whole[key])]
        axes.barh([p + offset for p in positions], values, height=height, color=color, label=label)
    axes.set_yticks(positions, labels)
    axes.set_xlabel("seconds (best round)")
    axes.set_title(f"Table figures, {rows:,} rows")
    axes.legend(loc="lower right", fontsize=8)
    return figure


if __name__ == "__main__":
    sys.exit(main())
