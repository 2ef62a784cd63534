"""Shared pytest fixtures: real throwaway servers for the whole session, a fresh database per test."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tmi_testenv import fixture
from tmi_testenv.servers import PostgresServer, RedisServer

REPO = Path(__file__).resolve().parent.parent
_db_counter = itertools.count()


@pytest.fixture(scope="session")
def pg_server():
    with PostgresServer() as server:
        yield server


@pytest.fixture(scope="session")
def redis_server():
    with RedisServer() as server:
        yield server


class Database:
    """A database created for one test on the session server."""

    def __init__(self, server: PostgresServer, name: str):
        self.server = server
        self.name = name
        server.create_database(name)
        self.conn = server.connect(name)

    def query(self, sql: str, params=None) -> list[tuple]:
        with self.conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall() if cur.description else []

    def scalar(self, sql: str, params=None):
        rows = self.query(sql, params)
        return rows[0][0] if rows else None

    def migrate(self, version: int) -> int:
        return fixture.apply_like_golang_migrate(self.conn, version)

    def tables(self) -> set[str]:
        return {row[0] for row in self.query(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}

    def drop(self) -> None:
        self.conn.close()
        admin = self.server.connect()
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        admin.close()


@pytest.fixture
def tmi_db(pg_server):
    db = Database(pg_server, f"tmi_test_{os.getpid()}_{next(_db_counter)}")
    yield db
    db.drop()


def ansible_env(pg: PostgresServer, redis_server: RedisServer | None, dbname: str) -> dict[str, str]:
    env = {**os.environ, **pg.env(dbname), "ANSIBLE_FORCE_COLOR": "0", "PYTHONPATH": str(REPO / "tests")}
    if redis_server is not None:
        env.update(redis_server.env())
    return env


def run_playbook(playbook: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    """Run a playbook of the collection against inventories/local, as an operator would."""
    ansible_playbook = str(Path(sys.executable).parent / "ansible-playbook")
    return subprocess.run([ansible_playbook, "-i", str(REPO / "inventories" / "local"),
                           str(REPO / "playbooks" / playbook), *args],
                          cwd=REPO, env=env, capture_output=True, text=True, check=False)
