"""What every benchmark in this directory shares: throwaway servers with a generated TMI
database, timed commands and playbook runs, and results written the same way.

Each benchmark script is one command (see docs/benchmarks.md). It starts its own
PostgreSQL and Redis on free loopback ports (tests/tmi_testenv), generates a TMI database
with the fixture generator (fixed seed) and brings it to a steady state (VACUUM ANALYZE,
so no autovacuum races the timings), times the collection and the runbook's way side by
side in the same run, prints a table, and writes benchmarks/results/<name>-<scale>.json
and a PNG plot beside it (or under --out). The exit status is 0 when the benchmark's target
is met, 3 when it ran but missed it, and 1 when it could not run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / ".build" / "collections"))

from ansible_collections.tmi.migration.plugins.modules.api_probe import percentile  # noqa: E402  # nearest rank

from tmi_testenv import fixture, standin  # noqa: E402
from tmi_testenv.servers import PostgresServer, RedisServer  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"
MISSED = 3  # exit status: the benchmark ran and wrote its results, and its target was missed
BIN = Path(sys.executable).parent
JOBS, COMPRESS = 2, 1  # the backup role's backup_jobs and backup_compress defaults, for the bare commands
# ansible.posix.profile_tasks: its environment, and the lines of its recap ("name ---- 1.23s").
PROFILE = re.compile(r"^(?P<task>.+?) -+ (?P<seconds>\d+\.\d+)s$")  # profile_tasks pads with at least one -


def profile_env(limit: int = 30) -> dict[str, str]:
    """The environment that makes ansible-playbook print its slowest ``limit`` tasks at the end."""
    return {"ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.profile_tasks", "PROFILE_TASKS_SORT_ORDER": "descending",
            "PROFILE_TASKS_TASK_OUTPUT_LIMIT": str(limit)}


def task_seconds(output: str) -> list[dict]:
    """The tasks profile_tasks printed after the play recap of ``output``, slowest first: [{task, seconds}]."""
    recap = output[output.rfind("PLAY RECAP"):]
    return [{"task": m["task"].strip(), "seconds": float(m["seconds"])} for m in map(PROFILE.match, recap.splitlines())
            if m]


TEN_MILLION_SCALE = 230000  # --scale of about ten million rows (23000: about one million)


def scaled_target(scale: int, at_one_million: float, at_ten_million: float) -> float:
    """A target given at one and at ten million rows: the ten-million one from --scale 230000 up, the other below."""
    return at_ten_million if scale >= TEN_MILLION_SCALE else at_one_million


def parser(doc: str, scale: int, repeat: int = 1) -> argparse.ArgumentParser:
    """The options every benchmark takes."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", type=int, default=scale, help=f"threat models to generate (default {scale})")
    p.add_argument("--repeat", type=int, default=repeat, help=f"timed rounds, best kept (default {repeat})")
    p.add_argument("--out", type=Path, default=RESULTS, help="where the JSON and PNG go (default benchmarks/results)")
    return p


class Bench:
    """Servers, a scratch directory and timed runs for one benchmark."""

    def __init__(self, name: str, args: argparse.Namespace):
        self.name, self.args = name, args
        self.pg = PostgresServer()
        self.redis = RedisServer()
        self.app = None
        self.rows = 0
        self.generate_seconds = 0.0
        self.output = ""  # the last playbook's standard output

    def __enter__(self) -> Bench:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the servers on a time-out too
        # A shell's background job (nohup ... &) starts with SIGINT ignored, and children inherit an
        # ignored signal: Ctrl-C would not stop this script, nor SIGINT a client load (pgbench) it starts.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        self._tmp = tempfile.TemporaryDirectory(prefix=f"tmi-bench-{self.name}-")
        self.work = Path(self._tmp.name)
        self.pg.start()
        self.redis.start()
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self.app is not None:
                self.app.stop()
        finally:
            self.redis.stop()
            self.pg.stop()
            self._tmp.cleanup()

    # --- the database ------------------------------------------------------------------
    def database(self, dbname: str, version: int, scale: int | None = None) -> int:
        """Create dbname at a schema version with generated data in a steady state; its row count."""
        scale = self.args.scale if scale is None else scale
        self.pg.create_database(dbname)
        conn = self.pg.connect(dbname)
        try:
            fixture.apply_like_golang_migrate(conn, version)
            started = time.monotonic()
            counts = fixture.generate(conn, scale) if scale else {}
            conn.commit()
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute("VACUUM (ANALYZE)")
            self.generate_seconds = time.monotonic() - started
        finally:
            conn.close()
        self.rows = sum(counts.values())
        return self.rows

    def clone(self, source: str, target: str) -> None:
        """A copy of a database (CREATE DATABASE ... TEMPLATE), so two ways start from the same data."""
        self.sql(f'DROP DATABASE IF EXISTS "{target}" WITH (FORCE)')
        self.sql(f'CREATE DATABASE "{target}" TEMPLATE "{source}"')
        conn = self.pg.connect(target)
        try:
            with conn.cursor() as cur:
                cur.execute("VACUUM (ANALYZE)")
        finally:
            conn.close()

    def sql(self, statement: str, dbname: str = "postgres"):
        """Run one statement (autocommit); its rows when it returns any."""
        conn = self.pg.connect(dbname)
        try:
            with conn.cursor() as cur:
                cur.execute(statement)
                return cur.fetchall() if cur.description else None
        finally:
            conn.close()

    # --- commands ----------------------------------------------------------------------
    def pg_env(self, dbname: str) -> dict[str, str]:
        """libpq's environment for the client tools: the password never goes on a command line."""
        return {**os.environ, "PGHOST": self.pg.host, "PGPORT": str(self.pg.port), "PGUSER": self.pg.user,
                "PGPASSWORD": self.pg.password, "PGDATABASE": dbname}

    def tool(self, name: str) -> str:
        return str(self.pg.client_bindir / name)

    def command(self, argv: list[str], dbname: str = "postgres") -> float:
        """Run a PostgreSQL client command; its wall-clock seconds. Fails loudly."""
        started = time.monotonic()
        result = subprocess.run(argv, env=self.pg_env(dbname), capture_output=True, text=True, check=False)
        elapsed = time.monotonic() - started
        if result.returncode != 0:
            raise SystemExit(f"{Path(argv[0]).name} failed ({result.returncode}):\n{result.stderr[-3000:]}")
        return elapsed

    def psql_file(self, path: Path, dbname: str, *options: str) -> float:
        """``psql -f path`` into dbname, stopping at the first error, output discarded; seconds."""
        return self.command([self.tool("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", *options, "-f", str(path),
                             "-o", "/dev/null"], dbname)

    def dump_directory(self, dbname: str, path: Path) -> float:
        """``pg_dump`` in the backup role's format (directory, JOBS jobs, COMPRESS); seconds."""
        return self.command([self.tool("pg_dump"), "--format=directory", f"--jobs={JOBS}", f"--compress={COMPRESS}",
                             "--file", str(path), "-d", dbname])

    def restore_directory(self, path: Path, dbname: str) -> float:
        """``createdb`` and ``pg_restore --jobs=JOBS`` of a directory dump into it; seconds."""
        return (self.command([self.tool("createdb"), dbname])
                + self.command([self.tool("pg_restore"), "--exit-on-error", f"--jobs={JOBS}", "--no-owner",
                                "-d", dbname, str(path)]))

    def psql_migrate(self, dbname: str, version: int) -> float:
        """The runbook's way to apply one migration: the file by psql in one transaction, then the
        state row as golang-migrate keeps it; seconds."""
        up = next(fixture.MIGRATIONS_DIR.glob(f"{version:06d}_*.up.sql"))
        seconds = self.psql_file(up, dbname, "-1")
        started = time.monotonic()
        self.sql(f"UPDATE schema_migrations SET version = {version}, dirty = false", dbname)
        return seconds + time.monotonic() - started

    def redis_rdb(self, path: Path) -> float:
        """``redis-cli --rdb path`` (the runbook's Redis backup); seconds. The password goes by REDISCLI_AUTH."""
        argv = [self.redis.env()["TMI_REDIS_CLI"], "-h", self.redis.host, "-p", str(self.redis.port), "--rdb",
                str(path)]
        started = time.monotonic()
        result = subprocess.run(argv, env={**os.environ, "REDISCLI_AUTH": self.redis.password}, capture_output=True,
                                text=True, check=False)
        if result.returncode != 0:
            raise SystemExit(f"redis-cli --rdb failed: {result.stderr[-2000:]}")
        return time.monotonic() - started

    def start_app(self, dbname: str) -> None:
        """The TMI stand-in on this run's servers, configured as before the migration (cache off).
        Called again, it stops the running one and starts it afresh on the pre-migration config."""
        if self.app is not None:
            self.app.stop()
        self.app = self.app or standin.StandIn(self.work / "app")
        env = self.playbook_env(dbname)
        standin.write_config(self.app.config, env, env)
        self.app.start()

    def reset_redis(self) -> None:
        """Redis' default values of the settings migrate.yml changes, and an empty cache: a second
        migrate.yml in the same benchmark starts where the first one did."""
        client = self.redis.client()
        try:
            client.config_set("maxmemory-policy", "noeviction")
            client.config_set("notify-keyspace-events", "")
            client.flushall()
        finally:
            client.close()

    def playbook_env(self, dbname: str) -> dict[str, str]:
        env = {**os.environ, **self.pg.env(dbname), **self.redis.env(), "PYTHONPATH": str(REPO / "tests"),
               "TMI_MIGRATIONS_PATH": str(fixture.MIGRATIONS_DIR), "TMI_WORK_DIR": str(self.work),
               "TMI_RUN_DIR": str(self.work / "runs"), "TMI_BACKUP_DIR": str(self.work / "backups")}
        if self.app is not None:
            env.update(self.app.env())
        return env

    def playbook_argv(self, playbook: str | Path, *extra: str) -> list[str]:
        return [str(BIN / "ansible-playbook"), "-i", str(REPO / "inventories" / "local"), str(REPO / playbook), *extra]

    def playbook(self, playbook: str | Path, dbname: str, *extra: str, env: dict | None = None) -> float:
        """ansible-playbook with the local inventory against dbname; wall-clock seconds, start-up included.
        Its standard output stays in self.output."""
        started = time.monotonic()
        result = subprocess.run(self.playbook_argv(playbook, *extra), env={**self.playbook_env(dbname), **(env or {})},
                                cwd=REPO, capture_output=True, text=True, check=False)
        elapsed = time.monotonic() - started
        self.output = result.stdout
        if result.returncode != 0:
            raise SystemExit(f"{playbook} failed ({result.returncode}):\n{result.stdout[-4000:]}\n"
                             f"{result.stderr[-2000:]}")
        return elapsed

    def last_run_record(self) -> dict:
        """The newest run.json the report role wrote in this benchmark's run directory."""
        records = sorted((self.work / "runs").glob("*/run.json"), key=lambda p: p.stat().st_mtime)
        return json.loads(records[-1].read_text()) if records else {}

    # --- results -----------------------------------------------------------------------
    def machine(self) -> dict:
        return {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                "postgresql": self.pg.server_version, "redis": self.redis.server_version,
                "postgresql_settings": "fsync=off, synchronous_commit=off, full_page_writes=off (throwaway)"}

    def save(self, result: dict, plot) -> tuple[Path, Path]:
        """Write <name>-<scale>.json and .png (plot(axes_figure_path) draws it); return both paths."""
        out: Path = self.args.out
        out.mkdir(parents=True, exist_ok=True)
        stem = out / f"{self.name}-{self.args.scale}"
        result = {"benchmark": self.name, "scale": self.args.scale, "rows": self.rows,
                  "generate_seconds": round(self.generate_seconds, 2), **result, "machine": self.machine(),
                  "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        json_path = stem.with_suffix(".json")
        json_path.write_text(json.dumps(result, indent=2) + "\n")
        png_path = stem.with_suffix(".png")
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figure = plot(plt)
        figure.savefig(png_path, dpi=100, bbox_inches="tight")
        plt.close(figure)
        return json_path, png_path


# --- a client load at the database: pgbench with TMI-shaped transactions -------------------
# A sample of threats with their threat models, numbered 1..10000: what the load's transactions
# (and the application benchmark's HTTP clients) pick from.
PGBENCH_IDS_SQL = """
CREATE TABLE bench_ids AS
    SELECT row_number() OVER () AS n, threat_model_id AS tm_id, id AS threat_id
    FROM (SELECT threat_model_id, id FROM threats ORDER BY md5(id::text) LIMIT 10000) AS sample;
ALTER TABLE bench_ids ADD PRIMARY KEY (n);
"""

PGBENCH_SCRIPTS = {
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
PGBENCH_WEIGHTS = {"read": 6, "threat": 2, "metadata": 2}
# The tables PGBENCH_SCRIPTS write, as the validation role's allow_changes declares them (writes, no deletes).
PGBENCH_WRITES = [{"table": "threats", "changes": ["write"]}, {"table": "metadata", "changes": ["write"]}]


class Pgbench:
    """pgbench with PGBENCH_SCRIPTS at a fixed rate and a per-transaction log, from start() to stop()."""

    def __init__(self, bench: Bench, dbname: str, logdir: Path, rate: int, clients: int):
        self.bench, self.dbname, self.logdir, self.rate, self.clients = bench, dbname, logdir, rate, clients
        self.process: subprocess.Popen | None = None

    def start(self) -> Pgbench:
        self.logdir.mkdir(parents=True, exist_ok=True)
        scripts = []
        for name, text in PGBENCH_SCRIPTS.items():
            path = self.logdir / f"{name}.sql"
            path.write_text(text)
            scripts += ["-f", f"{path}@{PGBENCH_WEIGHTS[name]}"]
        argv = [self.bench.tool("pgbench"), "-n", "-c", str(self.clients), "-j", "2", "-R", str(self.rate),
                "-T", "36000", "-l", f"--log-prefix={self.logdir}/log", "--failures-detailed", *scripts]
        self.process = subprocess.Popen(argv, env=self.bench.pg_env(self.dbname), stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True)
        return self

    def stop(self) -> dict:
        """Stop the load; its transactions (read_pgbench_log) and the clients pgbench aborted."""
        # pgbench writes no summary when interrupted; everything comes from its per-transaction log,
        # whose last buffered lines can be lost.
        self.process.send_signal(signal.SIGINT)
        _out, err = self.process.communicate(timeout=30)
        return {"transactions": read_pgbench_log(self.logdir),
                "aborted_clients": [line for line in err.splitlines() if "aborted" in line]}


def read_pgbench_log(logdir: Path) -> list[tuple[float, float, bool]]:
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


def pgbench_figures(transactions: list[tuple[float, float, bool]], start: float, end: float) -> dict:
    """Latency figures of the transactions that ran (at least partly) between start and end."""
    inside = [(s, lat, failed) for s, lat, failed in transactions if s <= end and s + lat >= start]
    latencies = [lat for _s, lat, failed in inside if not failed]
    return {"transactions": len(inside), "failed": sum(1 for *_x, failed in inside if failed),
            "max_ms": round(max(latencies, default=0) * 1000, 1),
            "p99_ms": round(percentile(latencies, 0.99) * 1000, 1) if latencies else 0.0,
            "p50_ms": round(percentile(latencies, 0.50) * 1000, 1) if latencies else 0.0,
            "seconds": round(end - start, 2)}


def exit_status(met: bool) -> int:
    """0 when the target is met, MISSED when not. A benchmark that cannot run exits 1 with a message."""
    return 0 if met else MISSED


def best(times: list[float]) -> float:
    return min(times)


def median(times: list[float]) -> float:
    return statistics.median(times)


def table(headers: list[str], rows: list[list]) -> str:
    """A plain text table, numbers right-aligned."""
    cells = [list(headers)] + [[f"{c:.2f}" if isinstance(c, float) else str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(cell.rjust(widths[i]) if i else cell.ljust(widths[i]) for i, cell in enumerate(row))
             for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def bars(plt, title: str, labels: list[str], seconds: list[float], colors: list[str] | None = None):
    """A horizontal bar chart of seconds, each bar labelled with its value."""
    figure, axes = plt.subplots(figsize=(8, 0.6 * len(labels) + 1.5))
    positions = list(range(len(labels)))[::-1]
    axes.barh(positions, seconds, color=colors or "#4c72b0")
    axes.set_yticks(positions, labels)
    axes.set_xlabel("seconds (wall clock)")
    axes.set_title(title)
    for y, value in zip(positions, seconds, strict=True):
        axes.text(value, y, f" {value:.2f}s", va="center")
    axes.set_xlim(0, max(seconds) * 1.25)
    return figure
