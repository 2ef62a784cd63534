"""The redis_config role against real Redis servers: settings, verification, idempotence, restore, CONFIG disabled."""

from __future__ import annotations

import json
import re

import pytest

from conftest import REPO, ansible_env, run_playbook
from tmi_testenv.servers import RedisServer

PLAYBOOK = str(REPO / "tests" / "integration" / "playbooks" / "redis_config_role.yml")


@pytest.fixture
def redis_fresh():
    with RedisServer() as server:
        yield server


def run_role(pg_server, redis_server, tmp_path, *extra):
    result_file = tmp_path / "redis.json"
    result = run_playbook(PLAYBOOK, ansible_env(pg_server, redis_server, "postgres", tmp_path),
                          "-e", f"result_file={result_file}", *extra)
    record = json.loads(result_file.read_text()) if result_file.exists() else {}
    return result, record


def changed_count(output: str) -> int:
    return int(re.search(r"changed=(\d+)", output.split("PLAY RECAP")[-1]).group(1))


def settings(server):
    client = server.client()
    return {name: client.config_get(name)[name] for name in ("maxmemory-policy", "notify-keyspace-events")}


def test_settings_are_applied_verified_idempotent_and_restorable(pg_server, redis_fresh, tmp_path):
    assert settings(redis_fresh) == {"maxmemory-policy": "noeviction", "notify-keyspace-events": ""}
    result, record = run_role(pg_server, redis_fresh, tmp_path)
    assert result.returncode == 0, result.stdout
    assert settings(redis_fresh) == {"maxmemory-policy": "allkeys-lru", "notify-keyspace-events": "xE"}
    assert record["before"] == {"maxmemory-policy": "noeviction", "notify-keyspace-events": ""}
    assert sorted(record["changed_settings"]) == ["maxmemory-policy", "notify-keyspace-events"]
    assert record["test_key_round_trip"] is True and record["persisted"] is True
    assert "maxmemory-policy allkeys-lru" in redis_fresh.config_file.read_text(), "CONFIG REWRITE persisted it"
    assert redis_fresh.client().keys("cache:test:migration:*") == [], "the test key is deleted again"
    assert changed_count(result.stdout) == 1

    again, second = run_role(pg_server, redis_fresh, tmp_path)
    assert again.returncode == 0 and changed_count(again.stdout) == 0
    assert second["changed_settings"] == []

    restored, _unused = run_role(pg_server, redis_fresh, tmp_path, "-e", "entry=restore",
                                 "-e", json.dumps({"redis_config_restore_settings": record["before"]}))
    assert restored.returncode == 0, restored.stdout
    assert settings(redis_fresh) == {"maxmemory-policy": "noeviction", "notify-keyspace-events": ""}


def test_check_mode_reports_and_changes_nothing(pg_server, redis_fresh, tmp_path):
    result, record = run_role(pg_server, redis_fresh, tmp_path, "--check")
    assert result.returncode == 0, result.stdout
    assert sorted(record["changed_settings"]) == ["maxmemory-policy", "notify-keyspace-events"]
    assert settings(redis_fresh)["maxmemory-policy"] == "noeviction"


def test_maxmemory_in_any_unit_is_idempotent(pg_server, redis_fresh, tmp_path):
    result, _unused = run_role(pg_server, redis_fresh, tmp_path, "-e", "redis_config_maxmemory=64mb")
    assert result.returncode == 0, result.stdout
    assert redis_fresh.client().config_get("maxmemory")["maxmemory"] == str(64 * 1024 * 1024)
    again, _unused = run_role(pg_server, redis_fresh, tmp_path, "-e", "redis_config_maxmemory=64mb")
    assert changed_count(again.stdout) == 0


def test_a_redis_without_config_gets_the_documented_error_or_a_skip(pg_server, tmp_path):
    with RedisServer(extra_config='rename-command CONFIG ""') as managed:
        result, _unused = run_role(pg_server, managed, tmp_path)
        assert result.returncode != 0
        assert "refuses CONFIG" in result.stdout and "parameter group" in result.stdout
        skipped, record = run_role(pg_server, managed, tmp_path, "-e", "redis_config_on_config_disabled=skip")
        assert skipped.returncode == 0, skipped.stdout
        assert record["config_disabled"] is True and record["test_key_round_trip"] is True


def test_no_secret_in_vvv_output(pg_server, redis_fresh, tmp_path):
    result, _unused = run_role(pg_server, redis_fresh, tmp_path, "-vvv")
    assert result.returncode == 0
    assert redis_fresh.password not in result.stdout + result.stderr
