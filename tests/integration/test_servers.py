"""The throwaway servers are real, keep secrets off command lines, and leave nothing behind."""

from __future__ import annotations

import os
import subprocess

import psutil
import pytest

from tmi_testenv.servers import PostgresServer, RedisServer


def _cmdlines() -> list[str]:
    lines = []
    for proc in psutil.process_iter(["cmdline"]):
        lines.append(" ".join(proc.info["cmdline"] or []))
    return lines


def _alive(pid: int) -> bool:
    """A zombie has exited; only the init process of a sandbox may be slow to reap it."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_postgres_is_a_real_server(pg_server):
    assert pg_server.query_one("SELECT 6 * 7") == 42
    assert int(pg_server.server_version.split(".")[0]) >= 12
    assert pg_server.query_one("SHOW listen_addresses") == "127.0.0.1"


def test_redis_is_a_real_server(redis_server):
    client = redis_server.client()
    client.set("tmi:test:roundtrip", "ok", ex=30)
    assert client.get("tmi:test:roundtrip") == "ok"
    assert 0 < client.ttl("tmi:test:roundtrip") <= 30
    assert client.delete("tmi:test:roundtrip") == 1
    assert client.info("server")["redis_version"] == redis_server.server_version


def test_postgres_requires_the_password(pg_server):
    import psycopg2

    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        psycopg2.connect(host="127.0.0.1", port=pg_server.port, user="postgres", password="wrong", dbname="postgres")


def test_redis_requires_the_password(redis_server):
    import redis

    client = redis.Redis(host="127.0.0.1", port=redis_server.port)
    with pytest.raises(redis.exceptions.AuthenticationError):
        client.ping()


def test_passwords_never_appear_on_command_lines(pg_server, redis_server):
    lines = _cmdlines()
    assert not [line for line in lines if pg_server.password in line]
    assert not [line for line in lines if redis_server.password in line]


def test_servers_stop_and_leave_no_process_or_directory():
    pg = PostgresServer().start()
    redis_server = RedisServer().start()
    postmaster = psutil.Process(pg.pid())
    pids = [postmaster.pid, redis_server.pid()] + [child.pid for child in postmaster.children(recursive=True)]
    assert len(pids) > 2, "a running postgres has background workers"
    bases = [pg.base, redis_server.base]
    assert all(base.exists() for base in bases)

    pg.stop()
    redis_server.stop()

    assert [pid for pid in pids if _alive(pid)] == []
    assert [base for base in bases if base.exists()] == []


def test_postgres_runs_unprivileged_when_started_as_root(pg_server):
    owner = psutil.Process(pg_server.pid()).username()
    assert owner == ("nobody" if os.geteuid() == 0 else psutil.Process().username())


def test_cli_run_seeds_and_passes_connection_in_the_environment(tmp_path):
    probe = ("import os, psycopg2; c = psycopg2.connect(host=os.environ['TMI_PG_HOST'], port=os.environ['TMI_PG_PORT'],"
             " user=os.environ['TMI_PG_USER'], password=os.environ['TMI_PG_PASSWORD'], dbname=os.environ['TMI_PG_DB']);"
             " cur = c.cursor(); cur.execute('SELECT version, dirty FROM schema_migrations'); print(cur.fetchone());"
             " cur.execute('SELECT count(*) FROM threat_models'); print(cur.fetchone()[0])")
    import sys

    result = subprocess.run([sys.executable, "-m", "tmi_testenv", "run", "--seed-version", "15", "--scale", "5",
                             "--", sys.executable, "-c", probe], capture_output=True, text=True, check=False,
                            env={**os.environ, "PYTHONPATH": str(__import__("pathlib").Path(__file__).parents[1])})
    assert result.returncode == 0, result.stderr
    assert "(15, False)" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == "5"
