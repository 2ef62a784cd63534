"""Command line: ``python -m tmi_testenv run [options] -- COMMAND ...``.

Starts a throwaway PostgreSQL and Redis on free loopback ports, creates the TMI database,
migrates it (golang-migrate style) to ``--seed-version`` and fills it with generated data,
starts the TMI stand-in HTTP service on them (``standin.py``; cache off, as before the
migration), runs COMMAND with the connection facts in its environment (``TMI_PG_*``,
``TMI_REDIS_*``, ``TMI_APP_*``; passwords and the token travel only in the environment) and a
scratch directory ``TMI_WORK_DIR``, then stops the stand-in and both servers and removes
their files and the scratch directory. The exit status is COMMAND's.

``seed`` and ``inject`` work on the database named by the ``TMI_PG_*`` environment, so a
command run under ``run`` can re-seed or break its database.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import fixture, standin
from .servers import PostgresServer, RedisServer, ServerError


def _connect_from_env(dbname: str | None = None):
    import psycopg2

    try:
        conn = psycopg2.connect(host=os.environ["TMI_PG_HOST"], port=os.environ["TMI_PG_PORT"],
                                user=os.environ["TMI_PG_USER"], password=os.environ["TMI_PG_PASSWORD"],
                                dbname=dbname or os.environ["TMI_PG_DB"], application_name="tmi_testenv")
    except KeyError as missing:
        sys.exit(f"tmi_testenv: {missing} is not set; run this under 'python -m tmi_testenv run -- ...'")
    conn.autocommit = True
    return conn


def seed(conn, version: int, scale: int, seed_value: int) -> dict[str, int]:
    fixture.apply_like_golang_migrate(conn, version)
    return fixture.generate(conn, scale, seed=seed_value) if scale > 0 else {}


def _cmd_run(args: argparse.Namespace) -> int:
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        sys.exit("tmi_testenv run: give the command to run after '--'")
    pg = PostgresServer(version=args.pg_version)
    redis_server = RedisServer(version=args.redis_version)
    # Stop the servers on SIGTERM too (CI time-outs, Ctrl-C in a parent).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        pg.start()
        redis_server.start()
        pg.create_database(args.db)
        started = time.monotonic()
        conn = pg.connect(args.db)
        try:
            counts = seed(conn, args.seed_version, args.scale, args.seed)
        finally:
            conn.close()
        print(f"tmi_testenv: PostgreSQL {pg.server_version} on 127.0.0.1:{pg.port}, "
              f"Redis {redis_server.server_version} on 127.0.0.1:{redis_server.port}; "
              f"database '{args.db}' at version {args.seed_version} with {sum(counts.values())} rows "
              f"(seeded in {time.monotonic() - started:.1f}s)", flush=True)
        with tempfile.TemporaryDirectory(prefix="tmi-testenv-work-") as workdir:
            env = {**os.environ, **pg.env(args.db), **redis_server.env(),
                   "TMI_MIGRATIONS_PATH": str(fixture.MIGRATIONS_DIR), "TMI_WORK_DIR": workdir}
            app = standin.StandIn(Path(workdir) / "app")
            standin.write_config(app.config, env, env)
            app.start()
            print(f"tmi_testenv: TMI stand-in on {app.url} (config {app.config})", flush=True)
            try:
                return subprocess.run(command, env={**env, **app.env()}, check=False).returncode
            finally:
                app.stop()
    except ServerError as error:
        print(f"tmi_testenv: {error}", file=sys.stderr)
        return 2
    finally:
        redis_server.stop()
        pg.stop()


def _cmd_seed(args: argparse.Namespace) -> int:
    conn = _connect_from_env()
    try:
        counts = seed(conn, args.seed_version, args.scale, args.seed)
    finally:
        conn.close()
    print(f"tmi_testenv: seeded version {args.seed_version}, {sum(counts.values())} rows")
    return 0


def _cmd_inject(args: argparse.Namespace) -> int:
    conn = _connect_from_env()
    try:
        for defect in args.defects:
            print(f"tmi_testenv: injected {defect}: {fixture.inject(conn, defect, args.count)}")
    finally:
        conn.close()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tmi_testenv", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="action", required=True)

    def add_seed_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--seed-version", type=int, default=15, help="schema version to migrate to (default 15)")
        p.add_argument("--scale", type=int, default=200,
                       help="threat models to generate, about 44 rows each (default 200; 0 = no data)")
        p.add_argument("--seed", type=int, default=42, help="generator seed (default 42)")

    run = sub.add_parser("run", help="start servers, seed, run a command, stop")
    run.add_argument("--pg-version", default=None, help="PostgreSQL major (default $TMI_PG_VERSION or 18)")
    run.add_argument("--redis-version", default=None, help="Redis version (default $TMI_REDIS_VERSION or 6.2)")
    run.add_argument("--db", default="tmi", help="database name (default tmi)")
    add_seed_options(run)
    run.add_argument("command", nargs=argparse.REMAINDER)
    run.set_defaults(func=_cmd_run)

    seed_parser = sub.add_parser("seed", help="migrate and fill the $TMI_PG_* database")
    add_seed_options(seed_parser)
    seed_parser.set_defaults(func=_cmd_seed)

    inject_parser = sub.add_parser("inject", help="inject named defects into the $TMI_PG_* database")
    inject_parser.add_argument("defects", nargs="+", choices=fixture.DEFECTS)
    inject_parser.add_argument("--count", type=int, default=3)
    inject_parser.set_defaults(func=_cmd_inject)
    standin.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
