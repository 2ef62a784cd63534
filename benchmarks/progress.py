"""Benchmark: what the progress lines cost a step - the fixed cost of the action plugin and the module's thread.

    .venv/bin/python benchmarks/progress.py [--scale 200] [--repeat 3] [--steps 20] [--sleep 7]

Two measurements:

* end to end: benchmarks/playbooks/progress_overhead.yml runs --steps short steps (pg_integrity_check counting the
  threats of a TMI database of --scale threat models: well under a polling interval each) and one step longer than
  an interval (pg_migrate applying a file that sleeps --sleep seconds, on a fresh empty database), each once with
  progress lines every 5 seconds (the default) and once with progress_interval 0 (the action plugin then runs the
  module as ansible.builtin.normal does), in the same playbook run after a warm-up; task times from
  ansible.posix.profile_tasks; the median over --repeat runs of each run's difference;
* the mechanism's own work, in process (median of many): what a module does for progress on a step that ends
  before the first poll (the progress object, its thread, a step, the file removed), what the action plugin does
  then (a thread started and joined), and, for a longer step, one poll (``sh -c 'cat ...'``, what the local
  connection runs), the progress session's connection and one sample.

Target: the mechanism's own work on a short step (module side and action side) at most 5 ms. The end-to-end
differences are reported beside it; on a loaded machine they are within the noise of a playbook's task times.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import threading
import time

from benchlib import Bench, exit_status, parser, profile_env, table, task_seconds

# isort: split
from ansible_collections.tmi.migration.plugins.module_utils import progress

INTERVAL = 5
TARGET_OWN_MS = 5


def run(bench: Bench, args, round_no: int) -> dict[str, float]:
    """One playbook run: seconds of one short step (the loop's mean) and of the longer step, with and without
    progress, and the progress lines printed."""
    migrations = bench.work / f"sleep-{round_no}"
    migrations.mkdir()
    (migrations / "000001_sleep.up.sql").write_text(f"SELECT pg_sleep({args.sleep});\n")
    (migrations / "000001_sleep.down.sql").write_text("SELECT 1;\n")
    for name in ("tmi_sleep_on", "tmi_sleep_off"):
        bench.sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        bench.sql(f'CREATE DATABASE "{name}"')
    bench.playbook("benchmarks/playbooks/progress_overhead.yml", "tmi", "-e", f"short_steps={args.steps}",
                   "-e", f"sleep_migrations={migrations}", "-e", "sleep_db_on=tmi_sleep_on",
                   "-e", "sleep_db_off=tmi_sleep_off", "-e", f"interval={INTERVAL}",
                   env=profile_env(10))
    shutil.rmtree(migrations)
    seconds = {t["task"]: t["seconds"] for t in task_seconds(bench.output)}

    def task(start):
        return next(value for name, value in seconds.items() if name.startswith(start))

    lines = [line for line in bench.output.splitlines() if line.startswith("[tmi_local] ")]
    return {"short_on": task("Count the threats with progress") / args.steps,
            "short_off": task("Count the threats without progress") / args.steps,
            "long_on": task("Apply a file that sleeps with progress"),
            "long_off": task("Apply a file that sleeps without progress"), "progress_lines": len(lines)}


def milliseconds(call, times: int = 200) -> float:
    """The median wall-clock milliseconds of call()."""
    spent = []
    for _round in range(times):
        started = time.perf_counter()
        call()
        spent.append(time.perf_counter() - started)
    return statistics.median(spent) * 1000


def own_work(bench: Bench) -> dict[str, float]:
    """What the mechanism itself costs, in process, in milliseconds."""
    path = bench.work / "tmi-progress-bench.json"

    def module_side():
        reporter = progress.Progress(str(path), INTERVAL)
        with reporter.step("dump"):
            reporter.item("000016 add_performance_indexes up")
        reporter.close()

    def action_side():
        worker = threading.Thread(target=lambda: None)
        worker.daemon = True
        worker.start()
        worker.join(INTERVAL)

    path.write_text('{"pid": 1, "text": "dump: public.threats 1 of 2 rows"}')
    command = ["/bin/sh", "-c", f"cat -- {path}"]
    poll = milliseconds(lambda: subprocess.run(command, capture_output=True, check=True), 50)
    path.unlink()
    started = time.perf_counter()
    conn = bench.pg.connect("tmi", autocommit=False)
    connect = (time.perf_counter() - started) * 1000
    query = progress.activity_sql(conn.server_version)

    def sample():
        with conn.cursor() as cur:
            cur.execute("SET LOCAL statement_timeout = '2s'; SET LOCAL lock_timeout = '500ms'")
            cur.execute(query, {"pids": [], "application_name": "tmi.migration.pg_backup"})
            cur.fetchall()
        conn.rollback()

    try:
        sampled = milliseconds(sample, 100)
    finally:
        conn.close()
    return {"module_side_short_step": milliseconds(module_side), "action_side_short_step": milliseconds(action_side),
            "one_poll_local": poll, "progress_session_connect": connect, "one_sample": sampled}


def main() -> int:
    cli = parser(__doc__, scale=200, repeat=3)
    cli.add_argument("--steps", type=int, default=20, help="short steps per run (default 20)")
    cli.add_argument("--sleep", type=float, default=7.0, help="seconds the longer step sleeps (default 7)")
    args = cli.parse_args()
    with Bench("progress", args) as bench:
        bench.database("tmi", 15)
        runs = [run(bench, args, round_no) for round_no in range(args.repeat)]
        short_cost = statistics.median(r["short_on"] - r["short_off"] for r in runs) * 1000
        long_cost = statistics.median(r["long_on"] - r["long_off"] for r in runs) * 1000
        own = own_work(bench)
        own_short = own["module_side_short_step"] + own["action_side_short_step"]
        polls = min(r["progress_lines"] for r in runs)
        met = own_short <= TARGET_OWN_MS
        result = {"interval": INTERVAL, "steps": args.steps, "sleep": args.sleep,
                  "runs": [{name: round(value, 4) for name, value in r.items()} for r in runs],
                  "short_step_cost_ms": round(short_cost, 1), "long_step_cost_ms": round(long_cost, 1),
                  "short_step_spread_ms": round((max(max(r["short_on"], r["short_off"]) for r in runs)
                                                 - min(min(r["short_on"], r["short_off"]) for r in runs)) * 1000, 1),
                  "own_work_ms": {name: round(value, 3) for name, value in own.items()},
                  "progress_lines": polls,
                  "targets": {"own_work_short_step_ms": TARGET_OWN_MS}, "met": met}

        def plot(plt):
            figure, axes = plt.subplots(figsize=(7, 3))
            names = list(own)
            axes.barh(names, [own[name] for name in names], color="#4c72b0")
            axes.set_xlabel("milliseconds (median)")
            axes.set_title(f"the progress mechanism's own work; end to end: short step {short_cost:+.0f} ms, "
                           f"{args.sleep:g} s step {long_cost:+.0f} ms", fontsize=8)
            return figure

        json_path, png_path = bench.save(result, plot)
    print(table(["", "milliseconds"], [
        ["end to end: a short step, progress every 5 s against none (median difference)", f"{short_cost:+.0f}"],
        [f"end to end: a {args.sleep:g} s step (median difference)", f"{long_cost:+.0f}"],
        *[[f"own work: {name.replace('_', ' ')}", f"{value:.3f}"] for name, value in own.items()]]))
    print(f"progress lines in a run (the longer step's, and any short step's over {INTERVAL} s): {polls}")
    print(f"short step times spread over {result['short_step_spread_ms']:.0f} ms between runs (the noise)")
    print(f"target: the mechanism's own work on a short step at most {TARGET_OWN_MS} ms ({own_short:.3f} ms): "
          f"{'met' if met else 'MISSED'}")
    print(f"results: {json_path}, {png_path.name}")
    return exit_status(met)


if __name__ == "__main__":
    raise SystemExit(main())
