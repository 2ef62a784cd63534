"""migrate.yml through inventories/local against the throwaway servers, as the demo runs it."""

from __future__ import annotations

import json

from conftest import ansible_env, run_playbook


def test_wrong_database_password_fails_clearly_without_showing_it(pg_server, redis_server, tmi_db, tmp_path):
    env = ansible_env(pg_server, redis_server, tmi_db.name, tmp_path)
    env["TMI_PG_PASSWORD"] = "not-the-password-x9"
    result = run_playbook("migrate.yml", env, "-e", f"tmi_run_dir={tmp_path / 'runs'}", "-e", "tmi_run_id=bad-pw",
                          "-vvv")
    assert result.returncode != 0
    assert f"PostgreSQL at {pg_server.host}:{pg_server.port} is not reachable" in result.stdout
    assert "password authentication failed" in result.stdout
    assert "not-the-password-x9" not in result.stdout + result.stderr
    assert not (tmp_path / "backups").exists(), "no backup starts before the pre-flight checks pass"
    record = json.loads((tmp_path / "runs" / "bad-pw" / "run.json").read_text())
    assert record["failed"] is True and "PostgreSQL is reachable" in record["failed_task"]
    assert "not-the-password-x9" not in json.dumps(record)


def test_servers_older_than_the_minimum_are_refused(pg_server, redis_server, tmi_db, tmp_path):
    env = ansible_env(pg_server, redis_server, tmi_db.name, tmp_path)
    result = run_playbook("migrate.yml", env, "-e", f"tmi_run_dir={tmp_path}",
                          "-e", "validate_min_postgresql_version=99")
    assert result.returncode != 0
    assert "is older than the minimum 99" in result.stdout
    result = run_playbook("migrate.yml", env, "-e", f"tmi_run_dir={tmp_path}", "-e", "validate_min_redis_version=99.0")
    assert result.returncode != 0
    assert "older than the minimum 99.0" in result.stdout
