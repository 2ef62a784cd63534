"""The app_config role against the TMI stand-in on real PostgreSQL and Redis.

Config rendering (mode, previous file kept, nothing replaced on a broken template), restart,
health with the endpoint's answer, maintenance, smoke tests, the cache hit ratio against
Redis INFO, restore, idempotence, check mode, bad inputs and secrets at -vvv.
"""

from __future__ import annotations

import hashlib
import json
import re
import stat

import pytest

from conftest import REPO, run_playbook, tmi_install
from tmi_testenv.standin import StandIn

PLAYBOOK = str(REPO / "tests" / "integration" / "playbooks" / "app_config_role.yml")


class App:
    """The stand-in serving a fresh TMI database at version 17, with the environment the inventory reads."""

    def __init__(self, standin: StandIn, env: dict[str, str], tmp_path):
        self.standin = standin
        self.env = env
        self.tmp_path = tmp_path

    def run(self, *extra: str):
        result_file = self.tmp_path / "app.json"
        result_file.unlink(missing_ok=True)
        result = run_playbook(PLAYBOOK, self.env, "-e", f"result_file={result_file}", *extra)
        record = json.loads(result_file.read_text()) if result_file.exists() else {}
        return result, record

    def config_digest(self) -> str:
        return hashlib.sha256(self.standin.config.read_bytes()).hexdigest()

    def secrets(self) -> list[str]:
        return [self.env["TMI_PG_PASSWORD"], self.env["TMI_REDIS_PASSWORD"], self.standin.token]


@pytest.fixture
def app(pg_server, redis_server, tmi_db, tmp_path):
    with tmi_install(pg_server, redis_server, tmi_db, tmp_path, version=17, threat_models=6, seed=7) as (standin, env):
        yield App(standin, env, tmp_path)


def changed_count(output: str) -> int:
    return int(re.search(r"changed=(\d+)", output.split("PLAY RECAP")[-1]).group(1))


def test_cold_cache_ratio_matches_info_and_fails_when_enforced(app, redis_server):
    redis_server.client().flushall()
    redis_server.client().config_resetstat()
    result, record = app.run("-e", "app_config_cache_warm_path=''", "-e", "app_config_samples=2",
                             "-e", '{"app_config_fail_on": ["hit_ratio"]}', "-e", "app_config_min_hit_ratio=0.9")
    assert result.returncode != 0
    info = redis_server.client().info("stats")
    cache = record["main"]["cache"]
    # Each endpoint misses once, then hits: 3 misses, 3 hits.
    assert (cache["hits"], cache["misses"]) == (info["keyspace_hits"], info["keyspace_misses"]) == (3, 3)
    assert cache["hit_ratio"] == 0.5
    assert "Success criterion 'hit_ratio' failed: cache hit ratio 0.5" in result.stdout


def test_config_rendered_previous_kept_restarted_and_measured_without_secrets_then_idempotent_and_check_mode_inert(
        app, redis_server):
    """The first run, at -vvv with --diff: the config rendered (mode 0640, new values), the previous file kept, the
    stand-in restarted on it and healthy, the smoke tests timed, the hit ratio what Redis INFO says - and no secret
    in its output. A second run changes nothing and check mode touches nothing."""
    old_text = app.standin.config.read_text()
    old_pid = app.standin.pid()
    redis_server.client().config_resetstat()

    result, record = app.run("-vvv", "--diff")
    assert result.returncode == 0, result.stdout
    output = result.stdout + result.stderr
    assert "api_probe" in output
    for secret in app.secrets():
        assert secret not in output
    main = record["main"]

    # The file: mode 0640, the new values, the previous file kept and recorded.
    assert stat.S_IMODE(app.standin.config.stat().st_mode) == 0o640
    previous = main["previous"][0]
    assert previous["existed"] is True and previous["backup_file"]
    with open(previous["backup_file"]) as kept:
        assert kept.read() == old_text

    # The stand-in restarted on it and reads the new values.
    assert main["restarted"] is True and app.standin.pid() != old_pid
    status, config = app.standin.request("GET", "/admin/config")
    ttls = {"default": 300, "threat_model": 600, "auth_data": 900}
    assert status == 200 and config["cache"] == {"enabled": True, "ttl_seconds": ttls}
    assert main["health"] == [200, 200]

    # Smoke tests: every granular endpoint, 10 samples each, timed.
    assert [entry["name"].rsplit("/", 1)[-1] for entry in main["smoke"]] == ["threats", "documents", "sources"]
    for entry in main["smoke"]:
        assert entry["statuses"] == [200] * 10 and 0 < entry["ms"]["median"] < 1000
    assert main["criteria"]["errors"]["passed"] is True
    assert main["criteria"]["response_time"]["value"] > 0

    # The hit ratio reported is what Redis INFO says (stats were reset just before the run).
    info = redis_server.client().info("stats")
    cache = main["cache"]
    assert cache["hits"] == info["keyspace_hits"] == cache["keyspace_hits"] == 30
    assert cache["misses"] == info["keyspace_misses"]
    assert cache["hit_ratio"] == round(info["keyspace_hits"] / (info["keyspace_hits"] + info["keyspace_misses"]), 4)
    assert main["criteria"]["hit_ratio"]["value"] == cache["hit_ratio"]
    assert main["criteria"]["hit_ratio"]["passed"] is True

    # A second run changes nothing; check mode touches nothing.
    pid, digest = app.standin.pid(), app.config_digest()

    again, record = app.run()
    assert again.returncode == 0 and changed_count(again.stdout) == 0, again.stdout
    assert record["main"]["restarted"] is False and app.standin.pid() == pid

    checked, _unused = app.run("--check", "-e", '{"app_config_cache": {"enabled": true, "default_ttl": "60s"}}')
    assert checked.returncode == 0, checked.stdout
    assert changed_count(checked.stdout) >= 1, "check mode reports the change it would make"
    assert app.config_digest() == digest and app.standin.pid() == pid


def test_broken_template_variable_fails_before_the_file_is_replaced(app):
    digest, pid = app.config_digest(), app.standin.pid()
    result, _unused = app.run("-e", '{"app_config_extra": {"auth": {"secret": "{{ no_such_variable }}"}}}')
    assert result.returncode != 0
    assert "no_such_variable" in result.stdout
    assert app.config_digest() == digest and app.standin.pid() == pid
    assert list(app.standin.config.parent.iterdir()) == [app.standin.config], "no backup, no temp file left"


def test_custom_template_that_is_not_yaml_fails_before_the_file_is_replaced(app, tmp_path):
    template = tmp_path / "broken.yaml.j2"
    template.write_text("database: [unclosed\n")
    digest = app.config_digest()
    result, _unused = app.run("-e", f"app_config_template={template}")
    assert result.returncode != 0
    assert "does not render to a YAML mapping" in result.stdout and "line 2, column 1" in result.stdout
    assert app.config_digest() == digest


def test_health_failing_after_restart_fails_with_the_endpoints_answer(app):
    wrong = {"app_config_database": {"host": app.env["TMI_PG_HOST"], "port": int(app.env["TMI_PG_PORT"]),
                                     "name": app.env["TMI_PG_DB"], "user": app.env["TMI_PG_USER"],
                                     "password": "not-the-password"},
             "app_config_health_retries": 2, "app_config_health_delay": 0}
    result, _unused = app.run("-e", json.dumps(wrong))
    assert result.returncode != 0
    assert re.search(r"GET http://127\.0\.0\.1:\d+/health answered 503", result.stdout), result.stdout
    assert "password authentication failed" in result.stdout
    assert "not-the-password" not in result.stdout


def test_maintenance_entry_point_switches_the_api(app):
    on, record = app.run("-e", "entry=maintenance", "-e", "app_config_maintenance=enabled")
    assert on.returncode == 0 and changed_count(on.stdout) == 1, on.stdout
    assert record["maintenance"] == "enabled"
    assert app.standin.request("GET", "/admin/maintenance") == (200, {"maintenance": True})
    assert app.standin.request("POST", "/admin/cache/warm")[0] == 503

    again, _unused = app.run("-e", "entry=maintenance", "-e", "app_config_maintenance=enabled")
    assert again.returncode == 0 and changed_count(again.stdout) == 0, "the endpoint said nothing changed"

    off, record = app.run("-e", "entry=maintenance", "-e", "app_config_maintenance=disabled")
    assert off.returncode == 0 and record["maintenance"] == "disabled"
    assert app.standin.request("POST", "/admin/cache/warm")[0] == 200


def test_restore_entry_point_puts_the_previous_file_back(app):
    old_text, digest = app.standin.config.read_text(), app.config_digest()
    result, record = app.run()
    assert result.returncode == 0 and app.config_digest() != digest
    pid = app.standin.pid()

    restored, after = app.run("-e", "entry=restore", "-e",
                              json.dumps({"app_config_restore_previous": record["main"]["previous"]}))
    assert restored.returncode == 0, restored.stdout
    assert app.standin.config.read_text() == old_text
    assert stat.S_IMODE(app.standin.config.stat().st_mode) == 0o640
    assert after["restore"]["restored"] == ["tmi_local"] and app.standin.pid() != pid
    assert app.standin.request("GET", "/admin/config")[1]["cache"]["enabled"] is False


def test_smoke_errors_fail_the_role_with_each_failing_endpoint(app):
    result, record = app.run("-e", "app_config_threat_model_id=00000000-0000-0000-0000-000000000000",
                             "-e", "app_config_samples=1")
    assert result.returncode != 0
    assert record["main"]["criteria"]["errors"]["value"] == 3
    assert "Success criterion 'errors' failed: GET /threat_models/00000000-0000-0000-0000-000000000000/threats " \
           "answered [404]" in result.stdout


@pytest.mark.parametrize("extra, cause", [
    ({"app_config_service_manager": "upstart"},
     "app_config_service_manager must be one of: systemd, command, none, got: upstart"),
    ({"app_config_url": "localhost:8080"}, "app_config_url must be an http(s) URL"),
    ({"app_config_fail_on": ["speed"]}, "app_config_fail_on must be one or more of: errors, response_time, hit_ratio"),
])
def test_bad_inputs_are_refused_before_anything_changes(app, extra, cause):
    digest, pid = app.config_digest(), app.standin.pid()
    result, _unused = app.run("-e", json.dumps(extra))
    assert result.returncode != 0
    assert cause in result.stdout
    assert app.config_digest() == digest and app.standin.pid() == pid


def test_no_secret_in_the_maintenance_output_at_vvv_with_diff(app):
    """The main entry point's run at -vvv with --diff is checked in the first test above."""
    maintenance, _unused = app.run("-vvv", "--diff", "-e", "entry=maintenance", "-e", "app_config_maintenance=enabled")
    assert maintenance.returncode == 0
    output = maintenance.stdout + maintenance.stderr
    assert "api_probe" in output and "VALUE_SPECIFIED_IN_NO_LOG_PARAMETER" in output
    for secret in app.secrets():
        assert secret not in output


def test_api_probe_reports_wrong_token_and_no_answer(app):
    from conftest import run_module
    from tmi_testenv.servers import free_port

    wrong = run_module("api_probe", {"url": app.standin.url, "token": "wrong-token",
                                     "requests": [{"path": "/admin/maintenance"}]})
    assert wrong["failed"] and wrong["failed_requests"] == ["GET /admin/maintenance"]
    assert "answered 401 (expected 200; 1 of 1 answers unexpected)" in wrong["msg"]
    assert "wrong-token" not in json.dumps(wrong)

    nobody = run_module("api_probe", {"url": f"http://127.0.0.1:{free_port()}", "requests": [{"path": "/health"}],
                                      "fail_on_error": False, "timeout": 2})
    assert not nobody.get("failed") and nobody["results"][0]["status"] == -1
    assert "Connection refused" in nobody["results"][0]["body"]

    checked = run_module("api_probe", {"url": app.standin.url, "token": app.standin.token, "state_changing": True,
                                       "requests": [{"path": "/admin/maintenance/enable", "method": "POST"}]},
                         check_mode=True)
    assert checked["results"][0]["skipped"] and not checked["changed"]
    assert app.standin.request("GET", "/admin/maintenance") == (200, {"maintenance": False})

    bad = run_module("api_probe", {"url": "localhost:8080", "requests": [{"path": "/health"}]})
    assert bad["failed"] and "url must start with http:// or https://" in bad["msg"]
